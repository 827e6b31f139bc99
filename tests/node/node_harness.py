"""Shared helpers of the node tests: node homes, signed kv txs, and small HTTP clients.

Two ways to reach a node: `NodeClient` talks to a real `medledger start` process over HTTP (crash,
CLI and fuzz tests), `InProcessClient` to a `Node` and its aiohttp apps served in the test's own
event loop (fast API tests, one fresh chain per test). Both return a `Reply`, so assertions read
the same, and both send the node's API token (from its home) unless told `token=None`; the
operations endpoints (`/livez`, `/readyz`, `/metrics`) are on their own address (`ops_get`).
Everything is on 127.0.0.1, and every wait is a condition polled with a deadline.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import http.client
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

import nacl.pwhash.argon2id
from aiohttp.test_utils import TestClient, TestServer

from medledger.chain.txbuilder import sign_tx
from medledger.crypto import Identity, load_identity
from medledger.node.api import build_app, build_ops_app
from medledger.node.config import API_TOKEN_FILE, load_config
from medledger.node.fixture_app import KIND_SET, KeyValueFixtureApp, encode_set_body
from medledger.node.genesis_file import load_genesis
from medledger.node.home import InitResult, init_home
from medledger.node.node import Node
from medledger.node.process import NodeProcess

PASSPHRASE: Final = "test-pass"
NODE_ENV: Final = {"MEDLEDGER_KEY_PASSPHRASE": PASSPHRASE}
BLOCK_INTERVAL_MS: Final = 20
MSGPACK: Final = "application/msgpack"
PROBLEM: Final = "application/problem+json"
#: How long a test waits for a condition that normally holds within milliseconds.
DEADLINE_S: Final = 30.0
POLL_S: Final = 0.02


class StartNode(Protocol):
    """The `start_node` fixture: start a node process on a home, get it and a client of it."""

    def __call__(self, home: Path) -> tuple[NodeProcess, NodeClient]: ...


def make_home(
    path: Path, *, block_interval_ms: int = BLOCK_INTERVAL_MS, chain_id: str = "medledger-test"
) -> InitResult:
    """A single-validator home with a cheap key derivation (tests only) and an OS-chosen API port."""
    return init_home(
        path,
        chain_id=chain_id,
        api_port=0,
        ops_port=0,
        block_interval_ms=block_interval_ms,
        passphrase=PASSPHRASE.encode(),
        key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
    )


def make_health_home(path: Path) -> Path:
    """A health node's home (a clinic, a single validator), cheap key derivation, OS-chosen ports."""
    init_home(
        path,
        name="clinic",
        app="health",
        role="clinic",
        api_port=0,
        ops_port=0,
        block_interval_ms=BLOCK_INTERVAL_MS,
        passphrase=PASSPHRASE.encode(),
        key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
    )
    return path


@contextlib.contextmanager
def run_health_node(
    home: Path, env: Mapping[str, str] | None = None
) -> Iterator[tuple[NodeProcess, NodeClient]]:
    """A real `medledger start` process on a health home (`env`: extra settings, e.g.
    `MEDLEDGER_API_...`); stopped on exit, even on failure."""
    process = NodeProcess(home, env={**NODE_ENV, **(env or {})})
    process.start()
    try:
        url = process.wait_ready()
        client = NodeClient(url, "", home, ops_url=process.ops_url)
        client.chain_id = str(client.status()["chain_id"])
        yield process, client
    finally:
        process.stop()


@dataclasses.dataclass(frozen=True, slots=True)
class SignedTx:
    raw: bytes
    tx_id: str

    @property
    def b64(self) -> str:
        return base64.b64encode(self.raw).decode()


def sign_kv(
    identity: Identity,
    chain_id: str,
    key: bytes,
    value: bytes = b"v",
    *,
    kind: str = KIND_SET,
    timestamp_ms: int | None = None,
) -> SignedTx:
    _, raw, tx_id = sign_tx(
        identity, chain_id=chain_id, kind=kind, body=encode_set_body(key, value), timestamp_ms=timestamp_ms
    )
    return SignedTx(raw, tx_id.hex())


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    status: int
    #: The media type without parameters (`application/json`, not `...; charset=utf-8`).
    content_type: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def read_token(home: Path) -> str:
    """The node's API token, as `medledger init` wrote it."""
    return (home / API_TOKEN_FILE).read_text(encoding="utf-8").strip()


def media_type(header: str | None) -> str:
    return (header or "").split(";", 1)[0].strip().lower()


def json_body(data: Any) -> tuple[bytes, dict[str, str]]:
    return json.dumps(data).encode(), {"Content-Type": "application/json"}


def status_snapshot(status: Mapping[str, Any]) -> dict[str, Any]:
    """What a rejected request must leave untouched."""
    return {key: status[key] for key in ("height", "state_root", "latest_block_hash", "mempool")}


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(POLL_S)


#: `token=` default: the node's own token from its home.
FROM_HOME: Final = "from-home"


class NodeClient:
    """A blocking HTTP client of one node process (stdlib only; one connection per request)."""

    def __init__(self, url: str, chain_id: str, home: Path, *, ops_url: str = "") -> None:
        parsed = urllib.parse.urlsplit(url)
        assert parsed.hostname == "127.0.0.1", url
        assert parsed.port is not None, url
        self.url = url
        self.ops_url = ops_url
        self.chain_id = chain_id
        self.home = home
        self.token = read_token(home)
        self._port = parsed.port

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = DEADLINE_S,
        token: str | None = FROM_HOME,
        port: int | None = None,
    ) -> Reply:
        """One request; with the node's token unless `token` is another one or None."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers.setdefault("Authorization", f"Bearer {self.token if token == FROM_HOME else token}")
        connection = http.client.HTTPConnection("127.0.0.1", port or self._port, timeout=timeout_s)
        try:
            connection.request(method, path, body=body, headers=all_headers)
            response = connection.getresponse()
            data = response.read()
            return Reply(
                response.status,
                media_type(response.getheader("Content-Type")),
                {k.lower(): v for k, v in response.getheaders()},
                data,
            )
        finally:
            connection.close()

    def get(self, path: str, *, accept: str | None = None, token: str | None = FROM_HOME) -> Reply:
        return self.request("GET", path, headers={"Accept": accept} if accept else None, token=token)

    def ops_get(self, path: str) -> Reply:
        """GET on the operations address (no credentials)."""
        port = urllib.parse.urlsplit(self.ops_url).port
        assert port is not None, self.ops_url
        return self.request("GET", path, token=None, port=port)

    def post_json(self, path: str, data: Any, timeout_s: float = DEADLINE_S) -> Reply:
        body, headers = json_body(data)
        return self.request("POST", path, body=body, headers=headers, timeout_s=timeout_s)

    def post_msgpack(self, path: str, body: bytes, timeout_s: float = DEADLINE_S) -> Reply:
        return self.request("POST", path, body=body, headers={"Content-Type": MSGPACK}, timeout_s=timeout_s)

    def status(self) -> dict[str, Any]:
        reply = self.get("/status")
        assert reply.status == 200, reply
        data: dict[str, Any] = reply.json()
        return data

    def wait_for_height(self, height: int) -> None:
        wait_until(lambda: self.status()["height"] >= height, f"height {height}")


class InProcessClient:
    """An HTTP client of a `Node` served in the current event loop (aiohttp's test servers)."""

    def __init__(
        self, client: TestClient[Any, Any], node: Node, ops: TestClient[Any, Any], token: str
    ) -> None:
        self._client = client
        self._ops = ops
        self.node = node
        self.token = token
        self.chain_id = node.genesis.chain_id

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        token: str | None = FROM_HOME,
        ops: bool = False,
    ) -> Reply:
        """One request; with the node's token unless `token` is another one or None."""
        all_headers = dict(headers or {})
        if token is not None and not ops:
            all_headers.setdefault("Authorization", f"Bearer {self.token if token == FROM_HOME else token}")
        client = self._ops if ops else self._client
        async with client.request(method, path, data=body, headers=all_headers) as response:
            data = await response.read()
            return Reply(
                response.status,
                media_type(response.headers.get("Content-Type")),
                {k.lower(): v for k, v in response.headers.items()},
                data,
            )

    async def get(self, path: str, *, accept: str | None = None, token: str | None = FROM_HOME) -> Reply:
        return await self.request("GET", path, headers={"Accept": accept} if accept else None, token=token)

    async def ops_get(self, path: str) -> Reply:
        """GET on the operations app (no credentials)."""
        return await self.request("GET", path, ops=True)

    async def post_json(self, path: str, data: Any) -> Reply:
        body, headers = json_body(data)
        return await self.request("POST", path, body=body, headers=headers)

    async def post_msgpack(self, path: str, body: bytes) -> Reply:
        return await self.request("POST", path, body=body, headers={"Content-Type": MSGPACK})

    async def status(self) -> dict[str, Any]:
        reply = await self.get("/status")
        assert reply.status == 200, reply
        data: dict[str, Any] = reply.json()
        return data


@contextlib.asynccontextmanager
async def serve_in_process(home: Path) -> AsyncIterator[InProcessClient]:
    """Start a `Node` on `home` and serve its API on 127.0.0.1; stop both on exit."""
    config = load_config(home, environ={})
    node = Node(
        config,
        identity=load_identity(config.key_file, PASSPHRASE.encode()),
        genesis=load_genesis(config.genesis_file),
        app=KeyValueFixtureApp(),
    )
    app = build_app(node)
    await node.start()
    try:
        async with (
            TestClient(TestServer(app, host="127.0.0.1")) as client,
            TestClient(TestServer(build_ops_app(node), host="127.0.0.1")) as ops,
        ):
            yield InProcessClient(client, node, ops, read_token(home))
    finally:
        await node.stop()
