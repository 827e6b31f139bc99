"""Log floods from outside (issue 9, #13): what clients send must not fill the operator's log.

A real node process (plain HTTP, and one serving TLS) receives hundreds of malformed request
lines, connections reset while it reads their body, connections reset before it answers, and (TLS)
handshakes of garbage and plain HTTP. Afterwards the node still serves, its log grew by at most a
few summary lines, and it holds no traceback and no ERROR: those stay for real server errors.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Callable
from pathlib import Path

import nacl.pwhash.argon2id
from node_harness import NODE_ENV, PASSPHRASE, NodeClient, read_token, wait_until

from medledger.node.home import init_home
from medledger.node.process import NodeProcess
from medledger.node.tls import CERT_FILE

#: Of each kind of client misbehaviour, this many.
FLOOD_EACH = 150
#: How much the log may grow through the whole flood (a few one-line summaries).
LOG_GROWTH_BYTES_MAX = 2_000
MALFORMED: tuple[bytes, ...] = (
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET /\x00\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    # Over aiohttp's 8190-byte field limit, within one TLS record (so the send completes).
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 9_000 + b"\r\n\r\n",
    b"POST /v1/txs HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
)
#: Not TLS at all, to a TLS port: plain HTTP, random bytes, a truncated ClientHello (last).
GARBAGE: tuple[bytes, ...] = (
    b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n",
    bytes(range(256)),
    b"\x16\x03\x01\x02\x00\x01",
)
READ_TIMEOUT_S = 10.0

Connect = Callable[[], socket.socket]


def start(home: Path, *, tls: bool) -> tuple[NodeProcess, NodeClient, Connect]:
    init_home(
        home,
        api_port=0,
        ops_port=0,
        block_interval_ms=20,
        passphrase=PASSPHRASE.encode(),
        key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
        tls=tls,
    )
    process = NodeProcess(home, env=dict(NODE_ENV))
    process.start()
    url = process.wait_ready()
    port = int(url.rsplit(":", 1)[1])
    context = ssl.create_default_context(cafile=str(home / CERT_FILE)) if tls else None

    def connect() -> socket.socket:
        raw = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S)
        return context.wrap_socket(raw, server_hostname="127.0.0.1") if context is not None else raw

    return process, NodeClient(url.replace("https:", "http:"), "", home, ops_url=process.ops_url), connect


def read_to_end(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionError, ssl.SSLError, TimeoutError):
        pass
    return data


def reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), as a client that crashes or a middlebox does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def requests_counted(node: NodeClient, route: str) -> int:
    """API requests the node counted on `route` (any status), from its metrics."""
    total = 0.0
    for line in node.ops_get("/metrics").body.decode().splitlines():
        if line.startswith("medledger_api_requests_total{") and f'route="{route}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def flood(node: NodeClient, connect: Connect, token: str) -> None:
    for i in range(FLOOD_EACH):
        with connect() as sock:  # a malformed request: the node answers 400 and closes
            sock.sendall(MALFORMED[i % len(MALFORMED)])
            status_line = read_to_end(sock).split(b"\r\n", 1)[0]
            assert status_line.split(b" ")[1].startswith(b"4"), (
                MALFORMED[i % len(MALFORMED)][:40],
                status_line,
            )
    before = requests_counted(node, "/v1/txs")
    for _ in range(FLOOD_EACH):  # reset while the node's handler waits for the announced body
        sock = connect()
        sock.sendall(
            b"POST /v1/txs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: 100000\r\n\r\n"
        )
        # "100 Continue" comes once the request is routed to its handler: the reset hits the read.
        assert sock.recv(64).startswith(b"HTTP/1.1 100")
        sock.sendall(b"{")
        reset(sock)
    wait_until(lambda: requests_counted(node, "/v1/txs") >= before + FLOOD_EACH, "every reset handled")
    for _ in range(FLOOD_EACH):  # reset in the middle of the answer
        sock = connect()
        sock.sendall(f"GET /v1/blocks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
        assert sock.recv(12).startswith(b"HTTP/1.1 200")
        reset(sock)


def assert_quiet(process: NodeProcess, size_before: int) -> None:
    log = process.read_log()
    grown = log.encode()[size_before:].decode(errors="replace")
    assert len(grown.encode()) <= LOG_GROWTH_BYTES_MAX, grown[:3000]
    assert "Traceback" not in log, grown[:3000]
    assert " ERROR " not in log, grown[:3000]


def test_trust_13_api_malformed_requests_and_resets_leave_the_log_small_and_clean(tmp_path: Path) -> None:
    home = tmp_path / "n"
    process, node, connect = start(home, tls=False)
    try:
        size_before = len(process.read_log().encode())
        flood(node, connect, read_token(home))
        assert node.ops_get("/readyz").status == 200  # still serving
        assert node.get("/v1/blocks").status == 200
    finally:
        process.stop()
    assert_quiet(process, size_before)


def test_trust_13_api_garbage_handshakes_and_floods_over_tls_leave_the_log_clean(tmp_path: Path) -> None:
    home = tmp_path / "n"
    process, node, connect = start(home, tls=True)
    port = int(process.url.rsplit(":", 1)[1])
    try:
        size_before = len(process.read_log().encode())
        for i in range(FLOOD_EACH):  # not TLS at all: plain HTTP, random bytes, a truncated hello
            with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT_S) as raw:
                raw.sendall(GARBAGE[i % len(GARBAGE)])
                if i % len(GARBAGE) == len(GARBAGE) - 1 or i % 2:  # the node waits for the rest of a hello
                    reset(raw)
                else:
                    read_to_end(raw)
        flood(node, connect, read_token(home))
        assert node.ops_get("/readyz").status == 200
    finally:
        process.stop()
    assert_quiet(process, size_before)
