"""Shared helpers of the integration tests: local testnets of real node processes, a load client,
chain comparison across nodes, and a fault-injecting TCP proxy.

Everything runs on 127.0.0.1 (or in a test's network namespaces). Every wait is a condition polled
with a deadline (`wait_until`); the only fixed-length loop is `observe`, an observation window
during which a test checks that something does *not* happen (a stalled chain must not move),
never a way to let time pass.
Deadlines are generous: CI runs this on two shared cores alongside everything else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import http.client
import ipaddress
import json
import os
import signal
import threading
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, TypeVar

import nacl.pwhash.argon2id

from medledger.chain.txbuilder import sign_tx
from medledger.crypto import Identity
from medledger.node.config import CONFIG_FILE, load_config, render_config
from medledger.node.fixture_app import KIND_SET, encode_set_body
from medledger.node.process import NodeProcess
from medledger.node.testnet import TestnetNode, create_testnet

PASSPHRASE: Final = "test-pass"
NODE_ENV: Final = {"MEDLEDGER_KEY_PASSPHRASE": PASSPHRASE}
CHAIN_ID: Final = "medledger-it"
BLOCK_INTERVAL_MS: Final = 20
#: How long a test waits for a condition that normally holds within a second or a few.
DEADLINE_S: Final = 60.0
POLL_S: Final = 0.05
#: Per-request timeout of the HTTP client (a loaded box can be slow to answer).
REQUEST_TIMEOUT_S: Final = 30.0
#: Txs per batch of the load stream, and how long each batch waits to be committed.
BATCH_TXS: Final = 20
BATCH_WAIT_MS: Final = 10_000
#: Blocks per `/v1/blocks` range request (the API's maximum).
BLOCK_RANGE: Final = 100
LOG_TAIL_LINES: Final = 40

T = TypeVar("T")


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    """Poll `condition` until it holds; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(POLL_S)


def observe(window_s: float, sample: Callable[[], T]) -> list[T]:
    """Sample repeatedly for `window_s` (an observation window: to check that nothing changes)."""
    samples = [sample()]
    end = time.monotonic() + window_s
    while time.monotonic() < end:
        time.sleep(POLL_S)
        samples.append(sample())
    return samples


# -- HTTP --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ApiClient:
    """A blocking HTTP client of one node's API (stdlib only; one connection per request).

    Every request carries the node's API token (reads need a credential).
    """

    def __init__(self, url: str, token: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        # This machine's nodes only: loopback, or a test's network namespaces (private addresses).
        assert parsed.hostname is not None, url
        assert ipaddress.ip_address(parsed.hostname).is_private, url
        assert parsed.port is not None, url
        self.url = url
        self.token = token
        self._host = parsed.hostname
        self._port = parsed.port

    def request(self, method: str, path: str, *, data: Any = None) -> Reply:
        body = None if data is None else json.dumps(data).encode()
        headers = {"Authorization": f"Bearer {self.token}"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        connection = http.client.HTTPConnection(self._host, self._port, timeout=REQUEST_TIMEOUT_S)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return Reply(response.status, response.read())
        finally:
            connection.close()

    def get_json(self, path: str) -> Any:
        reply = self.request("GET", path)
        assert reply.status == 200, (self.url, path, reply)
        return reply.json()

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = self.get_json("/status")
        return data

    def submit(self, txs: Sequence[SignedTx], *, wait_ms: int) -> list[dict[str, Any]]:
        """POST a batch; the per-tx results (`committed` with height and index, or `pending`)."""
        reply = self.request("POST", f"/v1/txs/batch?wait_ms={wait_ms}", data={"txs": [t.b64 for t in txs]})
        assert reply.status in (200, 202), (self.url, reply)
        results: list[dict[str, Any]] = reply.json()["results"]
        assert [r["tx_id"] for r in results] == [t.tx_id for t in txs]
        return results

    def get_tx(self, tx_id: str) -> Reply:
        return self.request("GET", f"/v1/txs/{tx_id}")


# -- transactions ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class SignedTx:
    raw: bytes
    tx_id: str

    @property
    def b64(self) -> str:
        return base64.b64encode(self.raw).decode()


def sign_kv(identity: Identity, key: bytes, value: bytes) -> SignedTx:
    _, raw, tx_id = sign_tx(identity, chain_id=CHAIN_ID, kind=KIND_SET, body=encode_set_body(key, value))
    return SignedTx(raw, tx_id.hex())


def make_batch(identity: Identity, label: str, count: int = BATCH_TXS) -> list[SignedTx]:
    return [sign_kv(identity, f"{label}-{i}".encode(), os.urandom(16)) for i in range(count)]


# -- nodes and clusters --------------------------------------------------------------------------


class ClusterNode:
    """One node home of a testnet and the process (if any) serving it."""

    def __init__(self, spec: TestnetNode) -> None:
        self.spec = spec
        self.process = NodeProcess(spec.home, env=dict(NODE_ENV), use_config_ports=True)
        self._api: ApiClient | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def key_hex(self) -> str:
        return self.spec.identity.public.sign_key.hex()

    @property
    def api(self) -> ApiClient:
        assert self._api is not None, f"{self.name} is not serving"
        return self._api

    @property
    def running(self) -> bool:
        return self.process.running

    def status(self) -> dict[str, Any]:
        return self.api.status()

    def height(self) -> int:
        return int(self.status()["height"])

    def tip(self) -> tuple[int, str]:
        """(height, latest block hash) from one status read."""
        status = self.status()
        return int(status["height"]), str(status["latest_block_hash"])

    def launch(self) -> None:
        """Start the process (without waiting; see `wait_serving`)."""
        self._api = None
        self.process.start()

    def wait_serving(self) -> None:
        """Wait until the API answers (ready or still catching up)."""
        self._api = ApiClient(self.process.wait_ready(DEADLINE_S, require_ready=False), self.spec.api_token)

    def send_kill(self) -> None:
        """SIGKILL without waiting for the exit (to kill several nodes at the same moment)."""
        proc = self.process.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)

    def kill(self) -> None:
        self._api = None
        self.process.kill()

    def stop(self) -> None:
        self._api = None
        self.process.stop()

    def log_tail(self) -> str:
        lines = self.process.read_log().splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:])


def has_peers(node: ClusterNode, count: int) -> bool:
    return bool(node.status()["peers"] == count)


def wait_tx_committed(node: ClusterNode, tx_id: str) -> tuple[int, int]:
    """Wait until `node` reports the tx committed; its (height, index) there."""
    found: dict[str, Any] = {}

    def committed() -> bool:
        reply = node.api.get_tx(tx_id)
        assert reply.status in (200, 404), reply  # 404: not (yet) gossiped to this node
        if reply.status == 404:
            return False
        found.update(reply.json())
        return bool(found["status"] == "committed")

    wait_until(committed, f"tx {tx_id[:12]} to be committed on {node.name}")
    return int(found["height"]), int(found["index"])


def submit_committed(node: ClusterNode, txs: Sequence[SignedTx]) -> dict[str, tuple[int, int]]:
    """Submit a batch to `node` and wait until all of it is committed there; their positions."""
    positions: dict[str, tuple[int, int]] = {}
    for result in node.api.submit(txs, wait_ms=BATCH_WAIT_MS):
        if result["status"] == "committed":
            positions[result["tx_id"]] = (result["height"], result["index"])
        else:
            positions[result["tx_id"]] = wait_tx_committed(node, result["tx_id"])
    return positions


class MakeCluster(Protocol):
    """The `cluster_factory` fixture."""

    def __call__(
        self,
        *,
        validators: int = ...,
        observers: int = ...,
        configure: Callable[[LocalCluster], None] | None = ...,
    ) -> LocalCluster: ...


class LocalCluster:
    """The nodes of one testnet, started and stopped together or one by one."""

    def __init__(self, specs: Sequence[TestnetNode]) -> None:
        self.nodes = [ClusterNode(spec) for spec in specs]

    def __getitem__(self, name: str) -> ClusterNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    @property
    def validators(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.spec.validator]

    @property
    def validator_keys(self) -> set[str]:
        return {n.key_hex for n in self.validators}

    def start(self, nodes: Iterable[ClusterNode] | None = None) -> None:
        """Launch the processes first, then wait for each, so they start up side by side."""
        chosen = list(self.nodes if nodes is None else nodes)
        for node in chosen:
            node.launch()
        for node in chosen:
            node.wait_serving()

    def wait_meshed(self, nodes: Iterable[ClusterNode] | None = None) -> None:
        """Wait until each node has a link to every other node of the testnet."""
        expected = len(self.nodes) - 1
        for node in self.nodes if nodes is None else nodes:
            wait_until(functools.partial(has_peers, node, expected), f"{node.name} to see {expected} peers")

    def kill_all_at_once(self) -> None:
        for node in self.nodes:
            node.send_kill()
        for node in self.nodes:
            node.kill()

    def stop_all(self) -> None:
        """SIGTERM every running node, then wait for each (SIGKILL if it lingers)."""
        for node in self.nodes:
            proc = node.process.proc
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        errors: list[BaseException] = []
        for node in self.nodes:
            try:
                node.stop()
            except Exception as exc:  # stop the others all the same
                errors.append(exc)
        if errors:
            raise errors[0]

    def describe_logs(self) -> str:
        return "\n".join(f"===== {n.name} (last {LOG_TAIL_LINES} lines)\n{n.log_tail()}" for n in self.nodes)

    def wait_agreed(self, nodes: Sequence[ClusterNode] | None = None) -> dict[str, Any]:
        """Wait until the nodes are idle (empty mempools) at one height, hash and state root."""
        chosen = list(self.nodes if nodes is None else nodes)
        last: list[dict[str, Any]] = []

        def agreed() -> bool:
            last[:] = [n.status() for n in chosen]
            tips = {(s["height"], s["latest_block_hash"], s["state_root"]) for s in last}
            return len(tips) == 1 and all(s["mempool"]["txs"] == 0 for s in last)

        try:
            wait_until(agreed, f"{[n.name for n in chosen]} to agree on one tip with empty mempools")
        except AssertionError as exc:
            summary = [(s["node"], s["height"], s["latest_block_hash"][:12], s["mempool"]) for s in last]
            raise AssertionError(f"{exc}; last seen: {summary}") from None
        return last[0]


def rewrite_peers(node: TestnetNode, peers: Sequence[str], *, observers: Sequence[str] = ()) -> None:
    """Replace the `[p2p] peers` of a testnet node's config (everything else as `create_testnet` wrote it)."""
    (node.home / CONFIG_FILE).write_text(
        render_config(
            node.name,
            api_port=node.api_port,
            block_interval_ms=BLOCK_INTERVAL_MS,
            p2p_port=node.p2p_port,
            peers=tuple(peers),
            observers=tuple(observers),
            ops_port=node.ops_port,
        ),
        encoding="utf-8",
    )
    assert load_config(node.home, environ={}).p2p.peers == tuple(peers)


def create_local_testnet(out: Path, *, validators: int, observers: int) -> LocalCluster:
    """Node homes for a testnet with a cheap key derivation (tests only); nothing started yet."""
    specs = create_testnet(
        out,
        validators=validators,
        observers=observers,
        chain_id=CHAIN_ID,
        block_interval_ms=BLOCK_INTERVAL_MS,
        passphrase=PASSPHRASE.encode(),
        key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
    )
    return LocalCluster(specs)


# -- load ----------------------------------------------------------------------------------------


class LoadStream:
    """A thread that submits batches back to back to one node (`wait_ms`) and records the answers.

    Use it as a context manager: the thread is stopped and joined on exit, also when a test fails.
    With `until_disconnected`, losing the node ends the stream quietly (the test killed it);
    otherwise any failed request is recorded in `failure`.
    """

    def __init__(
        self, node: ClusterNode, signer: Identity, label: str, *, until_disconnected: bool = False
    ) -> None:
        self.api = node.api
        self.signer = signer
        self.label = label
        self.until_disconnected = until_disconnected
        self.lock = threading.Lock()
        #: tx id → (height, index) of every tx the node reported committed.
        self.committed: dict[str, tuple[int, int]] = {}
        #: Every tx the node accepted (committed or pending when answered).
        self.accepted: set[str] = set()
        self.batches = 0
        self.failure: str | None = None
        self.disconnected = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"load-{label}")

    def __enter__(self) -> LoadStream:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=DEADLINE_S)
        assert not self._thread.is_alive(), "the load thread did not stop"

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def batches_acknowledged(self) -> int:
        with self.lock:
            return self.batches

    def max_committed_height(self) -> int:
        with self.lock:
            return max((height for height, _ in self.committed.values()), default=0)

    def snapshot(self) -> tuple[dict[str, tuple[int, int]], set[str]]:
        with self.lock:
            return dict(self.committed), set(self.accepted)

    def wait_committed_height(self, height: int, what: str) -> None:
        """Wait until the stream has seen a tx committed at `height` or above."""
        wait_until(lambda: self.max_committed_height() >= height or not self.alive, what)
        assert self.alive, f"the load stream ended: {self.failure}"

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            txs = make_batch(self.signer, f"{self.label}-{number}")
            try:
                reply = self.api.request(
                    "POST", f"/v1/txs/batch?wait_ms={BATCH_WAIT_MS}", data={"txs": [t.b64 for t in txs]}
                )
            except (OSError, http.client.HTTPException) as exc:
                with self.lock:
                    if self.until_disconnected:
                        self.disconnected = True
                    else:
                        self.failure = f"batch {number}: {type(exc).__name__}: {exc}"
                return
            with self.lock:
                if reply.status not in (200, 202):
                    self.failure = f"batch {number}: {reply.status} {reply.body[:300]!r}"
                    return
                for result in reply.json()["results"]:
                    self.accepted.add(result["tx_id"])
                    if result["status"] == "committed":
                        self.committed[result["tx_id"]] = (result["height"], result["index"])
                self.batches += 1
            number += 1


# -- the chain as nodes serve it -----------------------------------------------------------------


def fetch_blocks(api: ApiClient, last: int) -> dict[int, dict[str, Any]]:
    """Blocks 1..last as the API serves them (JSON), in range requests."""
    blocks: dict[int, dict[str, Any]] = {}
    for start in range(1, last + 1, BLOCK_RANGE):
        data = api.get_json(f"/v1/blocks?from={start}&to={min(start + BLOCK_RANGE - 1, last)}")
        for block in data["blocks"]:
            blocks[block["height"]] = block
    assert sorted(blocks) == list(range(1, last + 1)), api.url
    return blocks


def get_chain_view(block: Mapping[str, Any]) -> tuple[str, Any, list[str]]:
    """What every node must agree on for a block: hash, header, txs (commits may differ in signers)."""
    return block["hash"], block["header"], [tx["id"] for tx in block["txs"]]


def compute_positions(blocks: Mapping[int, Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """tx id → (height, index) over a chain."""
    return {
        tx["id"]: (height, index) for height, block in blocks.items() for index, tx in enumerate(block["txs"])
    }


def assert_same_chain(
    nodes: Sequence[ClusterNode], last: int, validator_keys: set[str]
) -> dict[int, dict[str, Any]]:
    """Blocks 1..last are the same on every node, link up, and carry a quorum certificate."""
    chains = {node.name: fetch_blocks(node.api, last) for node in nodes}
    reference_name, reference = next(iter(chains.items()))
    for name, blocks in chains.items():
        for height in range(1, last + 1):
            assert get_chain_view(blocks[height]) == get_chain_view(reference[height]), (
                f"{name} and {reference_name} differ at height {height}"
            )
    quorum = len(validator_keys) * 2 // 3 + 1
    for name, blocks in chains.items():
        for height in range(2, last + 1):
            assert blocks[height]["header"]["parent_hash"] == blocks[height - 1]["hash"], (name, height)
        for height, block in blocks.items():
            commit = block["commit"]
            signers = [s["validator"] for s in commit["signatures"]]
            assert (commit["height"], commit["block_hash"]) == (height, block["hash"]), (name, height)
            assert len(set(signers)) == len(signers) >= quorum, (name, height, signers)
            assert set(signers) <= validator_keys, (name, height, signers)
    return reference


def assert_committed_everywhere(
    nodes: Sequence[ClusterNode],
    blocks: Mapping[int, Mapping[str, Any]],
    committed: Mapping[str, tuple[int, int]],
    *,
    sample_every: int = BATCH_TXS,
) -> None:
    """Every tx a client saw committed is in the (agreed) chain at the height and index it was told;
    a sample is also looked up by id on every node."""
    positions = compute_positions(blocks)
    for tx_id, place in committed.items():
        assert positions.get(tx_id) == place, (tx_id, place, positions.get(tx_id))
    for tx_id, (height, index) in list(committed.items())[::sample_every]:
        for node in nodes:
            found = node.api.get_tx(tx_id).json()
            assert (found["status"], found["height"], found["index"]) == ("committed", height, index), (
                node.name,
                tx_id,
            )


# -- fault injection -------------------------------------------------------------------------------


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of one target port that can cut and heal its link.

    `cut()` aborts every connection through it and makes it abort each new one on arrival;
    `heal()` lets connections through again. Runs on a `ProxyHub`'s event loop; the public
    methods are called from the test's thread.
    """

    def __init__(self, hub: ProxyHub, target_port: int) -> None:
        self._hub = hub
        self.target_port = target_port
        self.port = 0
        self.is_cut = False
        self.connections_accepted = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cut(self) -> None:
        self._hub.call(self._set_cut(True))

    def heal(self) -> None:
        self._hub.call(self._set_cut(False))

    def _is_cut(self) -> bool:
        # A method (not the attribute) so type checkers do not narrow `is_cut` across awaits.
        return self.is_cut

    async def _set_cut(self, cut: bool) -> None:
        self.is_cut = cut
        if cut:
            for writer in list(self._writers):
                writer.transport.abort()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        self.connections_accepted += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            if self.is_cut:
                return  # refused: the dialler sees the connection close at once
            try:
                up_reader, upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
            except OSError:
                return  # the target is down: the dialler sees the connection close
            self._writers.add(upstream)
            if self._is_cut():  # cut while connecting
                return
            pumps = [
                asyncio.create_task(_pump(reader, upstream)),
                asyncio.create_task(_pump(up_reader, writer)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            for end in (writer, upstream):
                if end is not None:
                    end.transport.abort()
                    self._writers.discard(end)
            self._handlers.discard(task)

    async def _close(self) -> None:
        self.is_cut = True
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        handlers = list(self._handlers)
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction of a connection until EOF (then the handler closes both ends)."""
    while data := await reader.read(64 * 1024):
        writer.write(data)
        await writer.drain()


class ProxyHub:
    """One event loop, in a thread of its own, serving every `FaultProxy` of a test."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxies", daemon=True)
        self._thread.start()
        self.proxies: list[FaultProxy] = []

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the hub's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=DEADLINE_S)

    def open(self, target_port: int) -> FaultProxy:
        proxy = FaultProxy(self, target_port)
        self.call(proxy._listen())
        self.proxies.append(proxy)
        return proxy

    def close(self) -> None:
        try:
            for proxy in self.proxies:
                with contextlib.suppress(Exception):
                    self.call(proxy._close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=DEADLINE_S)
            self._loop.close()


# -- nemesis support (tests/integration/nemesis.py) ----------------------------------------------


def api_at_config_port(node: ClusterNode) -> ApiClient:
    """A client of `node`'s API at its configured port, whether or not the node runs right now
    (a client that outlives restarts: the harness starts nodes on their configured ports)."""
    return ApiClient(f"http://127.0.0.1:{node.spec.api_port}", node.spec.api_token)


def request_within(api: ApiClient, method: str, path: str, *, timeout_s: float, data: Any = None) -> Reply:
    """One request like `ApiClient.request`, but given up after `timeout_s` (a client that must
    not hang on a paused node: the kernel still accepts its connections, nobody answers)."""
    body = None if data is None else json.dumps(data).encode()
    headers = {"Authorization": f"Bearer {api.token}"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    port = urllib.parse.urlsplit(api.url).port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return Reply(response.status, response.read())
    finally:
        connection.close()


def pause_node(node: ClusterNode) -> None:
    """SIGSTOP the node's process: it keeps its sockets and memory but runs nothing (a GC pause,
    a VM hiccup), until `resume_node`."""
    proc = node.process.proc
    assert proc is not None, f"{node.name} was never started"
    assert proc.poll() is None, f"{node.name} is not running"
    proc.send_signal(signal.SIGSTOP)


def resume_node(node: ClusterNode) -> None:
    """SIGCONT a node `pause_node` stopped (harmless on a running process)."""
    proc = node.process.proc
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGCONT)


def count_log_lines(node: ClusterNode, needle: str) -> int:
    """How many lines of the node's log (all its runs) contain `needle` (for failure messages)."""
    return sum(needle in line for line in node.process.read_log().splitlines())
