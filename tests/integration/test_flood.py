"""Issue 9 #5 (and the peer half of #13) on real node processes: a node flooded every way keeps its
memory, its descriptors and its log bounded, and keeps committing.

Four validators run as real `medledger start` processes, on a chain preloaded with large blocks
(so a block range answer is megabytes). The test process then floods validator0, all at once:

* about 1,100 silent TCP connections to its peer port, re-opened as the node cuts them;
* websocket upgrades asking for permessage-deflate followed by deflate bombs (compressed frames
  the node never agreed to), and frames declaring 32 MB before any handshake;
* a member (an observer's key) that asks for whole block ranges again and again and never reads;
* another member that sends votes for committed heights with forged signatures (the attack that
  was answered with whole blocks).

Asserted, sampling validator0 from /proc while the flood lasts: its resident memory and its open
descriptors stay within fixed bounds of what they were before; its API answers; the chain goes
on committing (validator0 included); the forging member is dropped on its first vote and never
gets a block; the slow reader is disconnected; validator0's log gains no traceback and no line
per refused connection.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
import struct
import threading
import time
import zlib
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

import aiohttp
import pytest
from cluster_harness import (
    CHAIN_ID,
    DEADLINE_S,
    LoadStream,
    LocalCluster,
    create_local_testnet,
    sign_kv,
    submit_committed,
    wait_until,
)

from medledger.chain.codec import decode, encode
from medledger.chain.types import Vote, VoteKind
from medledger.crypto import Identity
from medledger.network.channel import (
    PROTOCOL_VERSION,
    ChunkAssembler,
    ChunkSealer,
    EphemeralKeys,
    compute_auth_bytes,
    compute_session_secrets,
)
from medledger.network.messages import (
    FRAME_WIRE_BYTES_MAX,
    BlockRequest,
    ChannelAuth,
    ChannelHello,
    ChannelVerdict,
    Frame,
    FrameKind,
    Verdict,
)
from medledger.network.peers import INBOUND_UNAUTHENTICATED_MAX, PEER_LISTEN_BACKLOG, PEER_PATH

pytestmark = pytest.mark.slow

T = TypeVar("T")

TARGET: Final = "validator0"
IDLE_SOCKETS: Final = 1_100
#: Each silent connection is opened again this long after the node cut it.
IDLE_REOPEN_S: Final = 0.5
BOMBS: Final = 40
HUGE_FRAMES: Final = 30
SLOW_READER_REQUESTS: Final = 2_000
FORGED_VOTES: Final = 349
#: How long the flood lasts (an observation window: the node must stay bounded throughout).
FLOOD_S: Final = 20.0
SAMPLE_S: Final = 0.25
#: Preloaded blocks and their size: a 100-block range answer is ~16 MB, the sync answer limit.
PRELOAD_BLOCKS: Final = 24
PRELOAD_TXS: Final = 20
PRELOAD_VALUE_BYTES: Final = 40 * 1024
#: Bounds over the node's state before the flood. Before the fixes, the same flood took a node
#: to several GB and to its descriptor limit.
RSS_GROWTH_BYTES_MAX: Final = 400 * 1024 * 1024
#: The connections the node admits unauthenticated, plus what one accept round of the listening
#: socket can hold before the guard has closed them (asyncio accepts up to a backlog per round).
FD_GROWTH_MAX: Final = INBOUND_UNAUTHENTICATED_MAX + 2 * PEER_LISTEN_BACKLOG + 64
#: Warnings validator0 may log over the whole test (the flood, its ban of the forger, the end).
LOG_WARNINGS_MAX: Final = 12


def read_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def count_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class LoopThread:
    """An event loop in a thread of its own, for the attackers (the test's thread samples)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="flood", daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=DEADLINE_S * 2)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=DEADLINE_S)
        self.loop.close()


# -- a member speaking the peer protocol by hand (so it can misbehave) ----------------------------


@dataclasses.dataclass
class MemberClient:
    """Dials a node as `identity` over the secret channel; sends frames; reads only if asked."""

    identity: Identity
    chain_id: str
    url: str
    session: aiohttp.ClientSession | None = None
    ws: aiohttp.ClientWebSocketResponse | None = None
    sealer: ChunkSealer | None = None
    assembler: ChunkAssembler | None = None

    async def connect(self) -> Verdict:
        self.session = aiohttp.ClientSession()
        ws = self.ws = await self.session.ws_connect(self.url + PEER_PATH, compress=0, max_msg_size=0)
        ephemeral = EphemeralKeys.generate()
        await ws.send_bytes(encode(ChannelHello(PROTOCOL_VERSION, self.chain_id, ephemeral.public)))
        hello = decode(ChannelHello, await ws.receive_bytes(), max_bytes=1024)
        secrets = compute_session_secrets(
            ephemeral, hello.ephemeral_key, is_dialer=True, version=PROTOCOL_VERSION, chain_id=self.chain_id
        )
        self.sealer = ChunkSealer(secrets.send_key)
        self.assembler = ChunkAssembler(secrets.receive_key, message_bytes_max=FRAME_WIRE_BYTES_MAX)
        signature = self.identity.sign(compute_auth_bytes(secrets.challenge, signer_is_dialer=True))
        await self._send(encode(ChannelAuth(self.identity.public.sign_key, signature)))
        await self.receive_message()  # the node's auth (a test attacker need not check it)
        await self._send(encode(ChannelVerdict(int(Verdict.ACCEPTED))))
        verdict = await self.receive_message()
        assert verdict is not None
        return Verdict(decode(ChannelVerdict, verdict, max_bytes=64).verdict)

    async def _send(self, message: bytes) -> None:
        assert self.ws is not None
        assert self.sealer is not None
        for chunk in self.sealer.iter_sealed(message):
            await self.ws.send_bytes(chunk)

    async def send_frame(self, kind: FrameKind, payload: bytes) -> None:
        await self._send(encode(Frame(int(kind), payload)))

    async def receive_message(self) -> bytes | None:
        """The next whole message, or None once the node has closed the link."""
        assert self.ws is not None
        assert self.assembler is not None
        while True:
            message = await self.ws.receive()
            if message.type != aiohttp.WSMsgType.BINARY:
                return None
            whole = self.assembler.open_chunk(message.data)
            if whole is not None:
                return whole

    @property
    def close_code(self) -> int | None:
        return None if self.ws is None else self.ws.close_code

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()


# -- the attackers ---------------------------------------------------------------------------------


@dataclasses.dataclass
class FloodReport:
    idle_opened: int = 0
    idle_cut: int = 0
    bombs_refused: int = 0
    huge_refused: int = 0
    slow_requests_sent: int = 0
    slow_reader_closed: bool = False
    forger_blocks_received: int = 0
    forger_close_code: int | None = None
    forger_redial_verdict: Verdict | None = None


async def hold_idle_sockets(port: int, report: FloodReport, stop: asyncio.Event) -> None:
    """Keep about `IDLE_SOCKETS` silent connections open, re-opening each one the node cuts."""

    async def one() -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)  # pacing a reconnect, not synchronisation
                continue
            report.idle_opened += 1
            read = asyncio.ensure_future(reader.read(1))
            halt = asyncio.ensure_future(stop.wait())
            try:
                done, _ = await asyncio.wait([read, halt], return_when=asyncio.FIRST_COMPLETED)
            finally:  # cancelled at the end of a failed test too: never leave a socket to the GC
                halt.cancel()
                read.cancel()
                _abort(writer)
            if read in done:
                read.exception()  # EOF or a reset: either way the node cut it
                report.idle_cut += 1
                await asyncio.sleep(IDLE_REOPEN_S)  # pacing the re-open, not synchronisation

    await asyncio.gather(*(one() for _ in range(IDLE_SOCKETS)), return_exceptions=True)


def _upgrade_request(port: int, *, deflate: bool) -> bytes:
    extension = b"Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else b""
    return (
        b"GET " + PEER_PATH.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1:" + str(port).encode() + b"\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" + extension + b"\r\n"
    )


def _client_frame_header(length: int, *, rsv1: bool) -> bytes:
    """A masked binary websocket frame header (FIN, optionally RSV1 = 'compressed')."""
    first = 0x80 | 0x02 | (0x40 if rsv1 else 0)
    return struct.pack("!BBQ", first, 0x80 | 127, length) + b"\x00\x00\x00\x00"  # mask 0: payload as is


_SQUEEZE = zlib.compressobj(9, zlib.DEFLATED, -15)
#: 32 MB of zeros, deflated (about 32 KB on the wire).
DEFLATE_BOMB: Final = _SQUEEZE.compress(bytes(32 * 1024 * 1024)) + _SQUEEZE.flush(zlib.Z_SYNC_FLUSH)


async def send_raw_frames(port: int, *, bomb: bool) -> bool:
    """One connection: upgrade, then a deflate bomb or a frame declaring 32 MB. True if the node
    ended the connection (without reading the whole thing)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_upgrade_request(port, deflate=bomb))
        response = await reader.readuntil(b"\r\n\r\n")
        assert b"permessage-deflate" not in response.lower(), response  # never negotiated
        if bomb:
            writer.write(_client_frame_header(len(DEFLATE_BOMB), rsv1=True) + DEFLATE_BOMB)
        else:
            writer.write(_client_frame_header(32 * 1024 * 1024, rsv1=False) + bytes(1024 * 1024))
        with contextlib.suppress(OSError):
            await writer.drain()
        async with asyncio.timeout(DEADLINE_S):
            while await reader.read(64 * 1024):
                pass  # the node's hello, then its close; EOF once it has cut us
        return True
    except (OSError, asyncio.IncompleteReadError):
        return True  # reset by the node
    finally:
        _abort(writer)


def _abort(writer: asyncio.StreamWriter) -> None:
    writer.transport.abort()
    writer.close()


async def bombard(port: int, report: FloodReport) -> None:
    results = await asyncio.gather(
        *(send_raw_frames(port, bomb=True) for _ in range(BOMBS)),
        *(send_raw_frames(port, bomb=False) for _ in range(HUGE_FRAMES)),
        return_exceptions=True,
    )
    report.bombs_refused = sum(r is True for r in results[:BOMBS])
    report.huge_refused = sum(r is True for r in results[BOMBS:])


async def read_slowly(client: MemberClient, report: FloodReport) -> None:
    """Ask for the whole chain again and again; read nothing (the node must give up on us)."""
    request = encode(BlockRequest(1, PRELOAD_BLOCKS + 100))
    assert client.ws is not None
    try:
        for _ in range(SLOW_READER_REQUESTS):
            if client.ws.closed:
                break
            await client.send_frame(FrameKind.GET_BLOCKS, request)
            report.slow_requests_sent += 1
    except (ConnectionError, aiohttp.ClientError):
        pass  # the node closed the link while we were still asking


async def forge_votes(client: MemberClient, victim_validator: bytes, report: FloodReport) -> None:
    reading = asyncio.ensure_future(_count_blocks(client, report))
    try:
        for index in range(FORGED_VOTES):
            forged = Vote(
                client.chain_id,
                int(VoteKind.PRECOMMIT),
                1,
                index,
                b"\x01" * 32,
                victim_validator,
                os.urandom(64),
            )
            await client.send_frame(FrameKind.VOTE, encode(forged))
    except (ConnectionError, aiohttp.ClientError):
        pass  # dropped while still sending: as it should be
    await reading
    report.forger_close_code = client.close_code
    await client.close()


async def redial(client: MemberClient) -> Verdict:
    again = MemberClient(client.identity, client.chain_id, client.url)
    try:
        return await again.connect()
    finally:
        await again.close()


async def _count_blocks(client: MemberClient, report: FloodReport) -> None:
    while (message := await client.receive_message()) is not None:
        if decode(Frame, message, max_bytes=FRAME_WIRE_BYTES_MAX).kind == FrameKind.BLOCKS:
            report.forger_blocks_received += 1


# -- the test --------------------------------------------------------------------------------------


@pytest.fixture
def testnet(tmp_path: Path) -> Iterator[tuple[LocalCluster, list[Identity]]]:
    """Four validators running (observers' keys are the attackers', their nodes never start)."""
    full = create_local_testnet(tmp_path / "net", validators=4, observers=2)
    validators = LocalCluster([n.spec for n in full.nodes if n.spec.validator])
    attackers = [n.spec.identity for n in full.nodes if not n.spec.validator]
    try:
        validators.start()
        validators.wait_meshed()
        yield validators, attackers
    finally:
        validators.stop_all()
        print(validators.describe_logs())


def test_trust_5_a_flooded_node_stays_bounded_and_keeps_committing(
    testnet: tuple[LocalCluster, list[Identity]], signer: Identity
) -> None:
    cluster, (slow_identity, forger_identity) = testnet
    target = cluster[TARGET]
    entry = cluster["validator1"]
    for block in range(PRELOAD_BLOCKS):
        submit_committed(
            entry,
            [
                sign_kv(signer, f"big-{block}-{i}".encode(), os.urandom(PRELOAD_VALUE_BYTES))
                for i in range(PRELOAD_TXS)
            ],
        )
    cluster.wait_agreed()
    assert target.process.proc is not None
    pid = target.process.proc.pid
    port = target.spec.p2p_port
    url = f"http://127.0.0.1:{port}"
    chain_id = CHAIN_ID
    rss_before, fds_before = read_rss_bytes(pid), count_fds(pid)
    log_lines_before = len(target.process.read_log().splitlines())
    report = FloodReport()
    attack = LoopThread()
    samples: list[tuple[int, int]] = []
    clients: list[MemberClient] = []
    try:
        stop = attack.run(_make_event())
        with LoadStream(entry, signer, "flood") as load:
            height_before = target.height()
            slow_name = slow_identity.public.sign_key.hex()[:12]
            slow_client = MemberClient(slow_identity, chain_id, url)
            forger = MemberClient(forger_identity, chain_id, url)
            clients += [slow_client, forger]
            # The members link first: the silent flood below comes from their address too, and
            # takes every unauthenticated slot that address has (as it should).
            assert attack.run(slow_client.connect()) is Verdict.ACCEPTED
            assert attack.run(forger.connect()) is Verdict.ACCEPTED
            idle = attack.submit(hold_idle_sockets(port, report, stop))
            bombs = attack.submit(bombard(port, report))
            slow = attack.submit(read_slowly(slow_client, report))
            victim_validator = bytes.fromhex(entry.key_hex)
            forged = attack.submit(forge_votes(forger, victim_validator, report))
            end = time.monotonic() + FLOOD_S
            while time.monotonic() < end:  # the observation window: sample, and check it holds
                samples.append((read_rss_bytes(pid), count_fds(pid)))
                rss, fds = samples[-1]
                assert rss <= rss_before + RSS_GROWTH_BYTES_MAX, (rss, rss_before, report)
                assert fds <= fds_before + FD_GROWTH_MAX, (fds, fds_before, report)
                time.sleep(SAMPLE_S)
            # Still serving and committing, the flood still on.
            assert target.height() > height_before, report
            load.wait_committed_height(target.height() + 3, "the chain to commit during the flood")
            wait_until(lambda: target.height() >= load.max_committed_height(), "validator0 to keep up")
            wait_until(
                lambda: f"peer {slow_name} disconnected" in target.process.read_log(),
                "validator0 to give up on the slow reader",
            )
            report.slow_reader_closed = True
            attack.loop.call_soon_threadsafe(stop.set)
            for future in (idle, bombs, slow, forged):
                future.result(timeout=DEADLINE_S * 2)  # an attacker's own failure shows here
            # The flood is over once the node has closed what it left behind (its per-address
            # cap would otherwise still refuse the redial before any handshake); then redial.
            wait_until(lambda: count_fds(pid) <= fds_before + 10, "validator0's descriptors to come back")
            report.forger_redial_verdict = attack.run(redial(forger))
        assert load.failure is None, load.failure
    finally:
        for client in clients:
            attack.run(client.close())
        attack.close()

    assert report.idle_opened >= IDLE_SOCKETS, report
    assert report.idle_cut > 0, report  # the node cut silent connections (at the cap, or in time)
    assert report.bombs_refused == BOMBS, report
    assert report.huge_refused == HUGE_FRAMES, report
    assert report.slow_reader_closed, report
    assert report.forger_blocks_received == 0, report
    # The node closes with 1008; a forger still writing when the close arrives may only see the
    # transport end (1006). That it was dropped for the forgery is proven by the ban on redial.
    assert report.forger_close_code in (
        aiohttp.WSCloseCode.POLICY_VIOLATION,
        aiohttp.WSCloseCode.ABNORMAL_CLOSURE,
    ), report
    assert report.forger_redial_verdict is Verdict.BANNED, report
    # Descriptors come back once the flood is over (nothing leaked).
    wait_until(lambda: count_fds(pid) <= fds_before + 10, "validator0's descriptors to come back")
    log = target.process.read_log()
    assert "Traceback" not in log
    # Thousands of refused connections, and the operator reads a summary every LOG_SUMMARY_S.
    noisy = [line for line in log.splitlines()[log_lines_before:] if " WARNING " in line or " ERROR " in line]
    assert len(noisy) <= LOG_WARNINGS_MAX, noisy
    print(
        f"validator0 over the flood: rss {rss_before >> 20} -> max {max(s[0] for s in samples) >> 20} MB, "
        f"fds {fds_before} -> max {max(s[1] for s in samples)}; {report}"
    )


async def _make_event() -> asyncio.Event:
    return asyncio.Event()
