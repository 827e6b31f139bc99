"""The node service: store, mempool, block production and the hooks the API calls.

One task owns block production (and so every write to the store); API handlers only decode,
validate and enqueue into the mempool. Blocking work (signature batches, block execution and the
synced LevelDB write) runs in worker threads so the event loop keeps serving requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from aiohttp import web

from medledger.chain.admission import Admission
from medledger.chain.app import App
from medledger.chain.errors import InvalidTxError, MempoolFullError, StoreCorruptedError, StoreError
from medledger.chain.execution import ExecutedBlock
from medledger.chain.integrity import check_tail, get_validators_at
from medledger.chain.mempool import Mempool
from medledger.chain.store import BlockStore, TxLocation
from medledger.chain.types import Genesis
from medledger.crypto import Identity
from medledger.network.clock import LoopClock
from medledger.network.peers import FrameHandler, PeerLink, PeerNetwork
from medledger.network.reactor import Reactor, SyncProgress
from medledger.node.backpressure import AdmissionGate, OverloadedError
from medledger.node.config import NodeConfig
from medledger.node.membership import MembershipView
from medledger.node.metrics import NodeMetrics
from medledger.node.sites import start_site

log = logging.getLogger("medledger.node")

#: A networked node is ready when at most this many blocks behind its peers.
READY_SYNC_LAG_MAX = 2
#: Blocks under the tip whose integrity every start checks (`medledger verify` checks them all).
TAIL_CHECK_BLOCKS = 16


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def refusal_message(problem: str, home: Path, *, doing: str = "refusing to start") -> str:
    """Why the node refuses to start (or stops) on a corrupted store, and the way back."""
    return (
        f"{doing}: the store is corrupted ({problem}). "
        f"Inspect it with `medledger verify --home {home}`; move it aside and recover the chain "
        f"from peers with `medledger rebuild --home {home}`, then start again."
    )


@dataclasses.dataclass(frozen=True, slots=True)
class TxStatus:
    tx_id: bytes
    status: Literal["pending", "committed"]
    location: TxLocation | None = None


class Node:
    """A single-validator node. `start()` opens the store and starts producing; `stop()` undoes it."""

    def __init__(
        self,
        config: NodeConfig,
        *,
        identity: Identity,
        genesis: Genesis,
        app: App,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.config = config
        self.identity = identity
        self.genesis = genesis
        self.app = app
        self.clock_ms = clock_ms
        self.metrics = NodeMetrics()
        self.mempool = Mempool(max_txs=config.mempool.max_txs, max_bytes=config.mempool.max_bytes)
        self.gate = AdmissionGate(
            clock=time.monotonic,
            capacity_txs=config.mempool.max_txs,
            queue_target_ms=config.mempool.queue_target_ms,
            high_water_min_txs=config.mempool.high_water_min_txs,
            high_water_txs=config.mempool.high_water_txs,
        )
        self._store: BlockStore | None = None
        self.reactor: Reactor | None = None
        self.peers: PeerNetwork | None = None
        self._p2p_runner: web.AppRunner | None = None
        self.p2p_url = ""
        self._producer: asyncio.Task[None] | None = None
        self._stopping = False
        self._stop_requested = asyncio.Event()
        self._waiters: dict[bytes, list[asyncio.Future[TxLocation]]] = {}
        self.started_at = time.monotonic()
        self.last_commit_time_ms = 0
        self._observer_keys: frozenset[str] = frozenset()
        #: Shows block sync's progress (`medledger start` sets a bar or log lines).
        self.on_sync_progress: Callable[[SyncProgress], None] | None = None
        #: Called in the event loop after each block is written (by consensus or block sync);
        #: each must be quick (it runs on the commit path) and an error in one is logged.
        self.commit_listeners: list[Callable[[ExecutedBlock], None]] = []
        #: Peer frame kinds served by a service other than the reactor (blob transfer, ADR 0013).
        self.frame_handlers: dict[int, FrameHandler] = {}
        #: The institutions and their statuses in the committed state (ADR 0020).
        self.membership = MembershipView(lambda: self._store)

    # -- life cycle --------------------------------------------------------------------------

    @property
    def store(self) -> BlockStore:
        if self._store is None:
            raise StoreError("the node is not started")
        return self._store

    async def wait_producer_failed(self) -> BaseException:
        """Return (never normally) the error that ended block production."""
        if self._producer is None:
            raise StoreError("the node is not started")
        try:
            await asyncio.shield(self._producer)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # re-raised by the caller after an orderly stop
            return exc
        return StoreError("block production ended")

    @property
    def is_ready(self) -> bool:
        alive = self._store is not None and self._producer is not None and not self._producer.done()
        return alive and (self.reactor is None or self.reactor.sync_lag <= READY_SYNC_LAG_MAX)

    async def start(self) -> None:
        path = self.config.data_dir
        path.mkdir(parents=True, exist_ok=True)
        try:
            store = await asyncio.to_thread(BlockStore.open, path)
        except StoreCorruptedError as exc:
            raise StoreCorruptedError(refusal_message(exc.message, self.config.home)) from None
        try:
            if store.is_initialized:
                if store.genesis != self.genesis:
                    raise StoreError(f"{path} holds another chain than the genesis file describes")
                # Never serve a store we cannot vouch for: its tip must still be the chain we committed.
                tail = await asyncio.to_thread(
                    check_tail,
                    store,
                    self.genesis,
                    blocks=TAIL_CHECK_BLOCKS,
                    validators_at=get_validators_at(self.app, store, self.genesis),
                )
                if not tail.is_clean:
                    raise StoreCorruptedError(
                        refusal_message(
                            f"{path}: {tail.problems[0]} ({tail.problems_total} problem(s))", self.config.home
                        )
                    )
            else:
                store.init_genesis(self.genesis, self.app.init_state(self.genesis))
        except BaseException:
            store.close()
            raise
        self._store = store
        self.admission = Admission(store=store, mempool=self.mempool, app=self.app)
        self.metrics.height.set(store.height)
        self.last_commit_time_ms = store.last_block_time_ms
        await self._start_consensus(store)
        log.info("node %s started at height %d", self.config.node.name, store.height)

    @property
    def listens_for_peers(self) -> bool:
        """Whether the chain has other members to talk to: several validators, peers to dial, or
        observers allowed in. A single validator without them is consensus with n = 1 and no
        peer endpoint (the same reactor, with no one to send to)."""
        p2p = self.config.p2p
        return len(self.genesis.validators) > 1 or bool(p2p.peers) or bool(p2p.observers)

    def _is_member(self, key: bytes) -> bool:
        if key.hex() in self._observer_keys:
            return True
        if self.reactor is not None and self.reactor.is_known_validator(key):
            return True
        if self.reactor is None and self.genesis.validators.contains(key):
            return True
        # An institution the committed state makes a member (or whose addition is pending).
        return self.membership.is_linkable(key)

    def _drop_non_members(self) -> None:
        """End the links of peers that are no longer members (their institution was removed)."""
        if self.peers is None:
            return
        for key in list(self.peers.links):
            if not self._is_member(key):
                self.peers.drop_peer(key, "its institution is no longer an active member")

    async def _start_consensus(self, store: BlockStore) -> None:
        self._observer_keys = frozenset(k.lower() for k in self.config.p2p.observers)
        reactor = Reactor(
            store=store,
            app=self.app,
            mempool=self.mempool,
            admission=self.admission,
            identity=self.identity,
            genesis=self.genesis,
            block_interval_ms=self.config.consensus.block_interval_ms,
            max_block_txs=self.config.consensus.max_block_txs,
            max_block_bytes=self.config.consensus.max_block_bytes,
            clock=LoopClock(self.clock_ms),
            on_committed=self._on_committed,
            on_sync_progress=self._on_sync_progress,
            on_commit_latency=self.metrics.block_commit_seconds.observe,
        )
        self.reactor = reactor
        if self.listens_for_peers:
            await self._start_peers(reactor)
        await reactor.start()
        self._producer = reactor.task

    async def _start_peers(self, reactor: Reactor) -> None:
        peers = PeerNetwork(
            identity=self.identity,
            chain_id=self.genesis.chain_id,
            is_allowed=self._is_member,
            on_frame=functools.partial(self._on_frame, reactor),
            on_connect=reactor.on_connect,
            peer_urls=self.config.p2p.peers,
        )
        reactor.attach(peers)
        app = web.Application()
        peers.add_routes(app)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        # The peer endpoint's own site: it counts and caps inbound connections before aiohttp
        # parses a byte of them (network/peers.py).
        site = peers.create_site(runner, self.config.p2p.host, self.config.p2p.port)
        p2p = self.config.p2p
        await start_site(site, what="peer", host=p2p.host, port=p2p.port, hint="set [p2p] port")
        port = runner.addresses[0][1] if runner.addresses else self.config.p2p.port
        self.p2p_url = f"http://{self.config.p2p.host}:{port}"
        self.peers, self._p2p_runner = peers, runner
        await peers.start()

    async def _on_frame(self, reactor: Reactor, link: PeerLink, kind: int, payload: bytes) -> None:
        handler = self.frame_handlers.get(kind)
        if handler is not None:
            await handler(link, kind, payload)
        else:
            await reactor.on_frame(link, kind, payload)

    def stop_admitting(self) -> None:
        """Refuse new txs from now on (a stopping node): the API's in-flight and keep-alive
        requests are still answered while it stops, and a tx admitted then would be lost with the
        mempool, so it is refused (429 with Retry-After: send it to another node, or again)."""
        self._stopping = True

    async def stop(self) -> None:
        """Finish the block in flight, then close the store. Pending txs are not committed."""
        self._stopping = True
        self._stop_requested.set()
        if self.reactor is not None:
            await self.reactor.stop()
            self._producer = None
        if self.peers is not None:
            await self.peers.stop()
        if self._p2p_runner is not None:
            await self._p2p_runner.cleanup()
        if self._producer is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._producer  # its failure, if any, was reported by `serve`
            self._producer = None
        for futures in self._waiters.values():
            for future in futures:
                future.cancel()
        self._waiters.clear()
        if self._store is not None:
            self._store.close()
            log.info("node %s stopped at height %d", self.config.node.name, self._store.height)
            self._store = None

    # -- admission ---------------------------------------------------------------------------

    async def submit(self, raws: list[bytes]) -> list[bytes]:
        """Admit a batch of txs atomically: all enter the mempool, or none and an error says why."""
        if self._stopping or self._store is None:
            raise MempoolFullError("the node is shutting down")
        reactor = self.reactor
        if reactor is None:
            raise MempoolFullError("the node is not started")
        try:
            self.gate.check(len(self.mempool), len(raws))  # before anything is decoded
        except OverloadedError:
            self.metrics.txs_submitted.labels("overloaded").inc(len(raws))
            raise
        try:
            checked = await reactor.submit(raws)
        except MempoolFullError:
            self.metrics.txs_submitted.labels("mempool_full").inc(len(raws))
            raise
        except InvalidTxError:
            self.metrics.txs_submitted.labels("rejected").inc(len(raws))
            raise
        self.metrics.txs_submitted.labels("accepted").inc(len(checked))
        self._update_mempool_gauges()
        return [c.tx_id for c in checked]

    def get_tx_status(self, tx_id: bytes) -> TxStatus | None:
        location = self.store.get_tx_location(tx_id)
        if location is not None:
            return TxStatus(tx_id, "committed", location)
        if tx_id in self.mempool:
            return TxStatus(tx_id, "pending")
        return None

    async def wait_committed(self, tx_ids: list[bytes], timeout_s: float) -> dict[bytes, TxLocation]:
        """Wait (up to `timeout_s`) until the given txs are committed; returns those that are."""
        found: dict[bytes, TxLocation] = {}
        futures: list[tuple[bytes, asyncio.Future[TxLocation]]] = []
        loop = asyncio.get_running_loop()
        for tx_id in tx_ids:
            location = self.store.get_tx_location(tx_id)
            if location is not None:
                found[tx_id] = location
            elif tx_id in self.mempool:
                future: asyncio.Future[TxLocation] = loop.create_future()
                self._waiters.setdefault(tx_id, []).append(future)
                futures.append((tx_id, future))
        if futures:
            await asyncio.wait([f for _, f in futures], timeout=timeout_s)
        for tx_id, future in futures:
            if future.done() and not future.cancelled():
                found[tx_id] = future.result()
            else:
                future.cancel()
                waiting = self._waiters.get(tx_id)
                if waiting is not None:
                    with contextlib.suppress(ValueError):
                        waiting.remove(future)
                    if not waiting:
                        del self._waiters[tx_id]
        return found

    def render_metrics(self) -> bytes:
        """The Prometheus text, with the gauges read from the peer network brought up to date."""
        if self.peers is not None:
            self.metrics.peers.set(len(self.peers.links))
            self.metrics.peers_dropped.set(self.peers.dropped_peers)
        return self.metrics.render()

    def _on_sync_progress(self, progress: SyncProgress) -> None:
        self.metrics.syncing.set(0 if progress.done else 1)
        self.metrics.sync_target_height.set(progress.target)
        if self.on_sync_progress is not None:
            try:
                self.on_sync_progress(progress)
            except Exception as exc:  # a display (a closed terminal) must never stop the node
                log.warning("sync progress display failed (%s); it is turned off", exc)
                self.on_sync_progress = None

    def _on_committed(self, executed: ExecutedBlock) -> None:
        height, time_ms = executed.block.header.height, executed.block.header.time_ms
        tx_ids = executed.tx_ids
        self.mempool.remove(tx_ids)
        self.last_commit_time_ms = time_ms
        self.metrics.height.set(height)
        self.metrics.blocks_committed.inc()
        self.metrics.txs_committed.inc(len(tx_ids))
        self.gate.observe_commit(len(tx_ids))
        self.metrics.block_txs.observe(len(tx_ids))
        self._update_mempool_gauges()
        if self.membership.refresh_if_changed(executed.execution.writes):
            self._drop_non_members()
        for listener in self.commit_listeners:
            try:
                listener(executed)
            except Exception:  # a listener's bug must not stop the node committing
                log.exception("a commit listener failed")
        if self._waiters:
            results = executed.execution.results
            for index, tx_id in enumerate(tx_ids):
                futures = self._waiters.pop(tx_id, None)
                if not futures:
                    continue
                location = TxLocation(height, index, int(results[index].ok), results[index].code)
                for future in futures:
                    if not future.done():
                        future.set_result(location)

    def _update_mempool_gauges(self) -> None:
        self.metrics.mempool_txs.set(len(self.mempool))
        self.metrics.mempool_bytes.set(self.mempool.size_bytes)
