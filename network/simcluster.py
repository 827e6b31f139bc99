"""The simulator's cluster: real nodes (reactor, block sync, mempool, admission, store, app) on
one virtual-time loop, over the simulated peer network, under a fault plan drawn from one seed.

Each validator (and each Byzantine twin, a second node with a validator's key) runs the node's
own `Reactor` with its `BlockSync`, `Mempool` and `Admission`, a `BlockStore` over a `SimDisk`
(an in-memory database that loses unsynced writes on a crash) and the configured app governed on
chain, as `node/run.py` wires a networked node. What the simulator adds is only what a real
node gets from its surroundings: a clock (`SimClock`: the loop's virtual time plus the node's
offset), an offload that runs inline (no threads), a transport (`network/simnet.py`), clients
that submit txs, and the faults. A Byzantine proposer whose blocks carry a skewed time is a
reactor whose clock reads that time while it builds a proposal.

Offloaded work costs virtual time (`compute_offload_ms`): a thread hop, plus CPU time per block
and per tx it handles, derived from its arguments (so a run stays a function of its seed). The
caller waits that long, then the work runs, as on a worker thread that got the CPU late (one
schedule a real thread allows): meanwhile the node's other tasks run, so frames arrive, block
sync re-plans and peers are served while a run of blocks is applied, which is the window the
real node has and where a block sync that asks again for the heights being applied shows.

A crash is abrupt: the disk drops its unsynced writes and the node's tasks are cancelled; for
`CRASH_MID` and `TORN_WRITE` it happens at a store write, from inside the node's code. A node
restarts as the node does: it opens its store and checks its tail (`chain.integrity.check_tail`);
a store it refuses (a torn write, a rotten table) is rebuilt as an operator's
`medledger rebuild` does: signing state carried, an empty chain, block sync from peers.

A node whose state a `WRONG_BACKUP` fault altered while it was down passes that check, and is
*diverged*: it runs the real code, so the checker holds it to everything a correct node must do
(it drops no correct peer, signs nothing twice) and it must never commit a block on its wrong
state; but its state is wrong, so liveness is not due from it. When the block pipeline finds the
divergence (`StateDivergedError`, from block sync or from a block consensus decided) its
consensus task ends with that error, and the node halts as `node/run.py` stops a node whose
store is corrupted: it leaves the network and stays down (an operator must rebuild it). The same
error from a node whose state no fault touched fails the run.

Everything a run does is a function of its `SimConfig`: keys, delays, losses, clients and
faults are drawn from `random.Random(seed)` in the order the loop runs callbacks, and the loop
runs them in an order fixed by virtual time and scheduling order.

This module imports only `medledger.chain`, `medledger.crypto` and `medledger.network`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import random
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Final, TypeVar

from medledger.chain.admission import Admission
from medledger.chain.codec import decode, encode_primitive
from medledger.chain.consensus import Rejection
from medledger.chain.errors import ChainError, CodecError, StateDivergedError
from medledger.chain.execution import ExecutedBlock
from medledger.chain.governance import GovernedApp
from medledger.chain.integrity import check_tail, get_validators_at
from medledger.chain.leader import LeaderSchedule
from medledger.chain.limits import BLOCK_BYTES_MAX, CONSENSUS_MESSAGE_BYTES_MAX, UINT_MAX
from medledger.chain.mempool import Mempool
from medledger.chain.store import BlockStore
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import Block, Genesis, Proposal, Validator, ValidatorSet, Vote
from medledger.chain.validation import CheckedTx
from medledger.crypto import Identity
from medledger.network.blocksync import SyncedBlock
from medledger.network.clock import Timer
from medledger.network.messages import BlockRequest, FrameKind
from medledger.network.reactor import Reactor, SyncProgress
from medledger.network.simconfig import (
    CHAIN_ID,
    CRASH_KINDS,
    DIVERGING_KINDS,
    SIM_BLOCK_TXS_MAX,
    SIM_MEMPOOL_TXS_MAX,
    Fault,
    FaultKind,
    SimConfig,
    TimeSkew,
)
from medledger.network.simhostile import HostilePeer
from medledger.network.siminvariants import Caches, InvariantChecker, InvariantViolation
from medledger.network.simloop import SimDeadlockError, SimLivelockError, VirtualTimeLoop, run_inline
from medledger.network.simnet import Conditions, SimNetwork
from medledger.network.simreport import SimTimeline, TimelineKind
from medledger.network.simstorage import SimCrashError, SimDisk, carry_signing_state

T = TypeVar("T")

#: Bytes of txs a simulated block carries at most.
SIM_BLOCK_BYTES_MAX: Final = 1024 * 1024
#: Blocks a restarting node checks at its store's tip (node/node.py's TAIL_CHECK_BLOCKS).
TAIL_CHECK_BLOCKS: Final = 16
#: A CRASH_MID or TORN_WRITE fault strikes at one of the node's next this many store writes.
CRASH_WRITES_MAX: Final = 12
#: Clients that sign the txs a run submits.
CLIENTS: Final = 3
#: Virtual time any offloaded work takes (the hop to a worker thread and back, a store write).
OFFLOAD_MS: Final = 1
#: And per block it verifies, executes or writes (a certified block: no tx signature to check).
OFFLOAD_MS_PER_BLOCK: Final = 2
#: And per this many txs it handles (executes, or checks the signatures of).
OFFLOAD_TXS_PER_MS: Final = 4
#: Decoded consensus frames remembered by their bytes (one broadcast sends one payload to all).
DECODED_FRAMES_MAX: Final = 2_048


def compute_offload_ms(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """The virtual ms a node's offloaded call takes, from what it is given: `OFFLOAD_MS`, plus
    `OFFLOAD_MS_PER_BLOCK` per block (a `Block`, an `ExecutedBlock`, a run of `SyncedBlock`s) and
    one ms per `OFFLOAD_TXS_PER_MS` txs (those blocks', or a batch of txs: raw or checked)."""
    blocks = txs = 0
    for arg in (*args, *kwargs.values()):
        value = arg.block if isinstance(arg, ExecutedBlock) else arg
        if isinstance(value, Block):
            blocks += 1
            txs += len(value.txs)
        elif isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, SyncedBlock):
                    blocks += 1
                    txs += len(item.block.txs)
                elif isinstance(item, bytes | CheckedTx):
                    txs += 1
    return OFFLOAD_MS + blocks * OFFLOAD_MS_PER_BLOCK + txs // OFFLOAD_TXS_PER_MS


class SimClock:
    """A node's clock: the loop's virtual time, its wall clock off by `offset_ms`."""

    __slots__ = ("_loop", "offset_ms", "override_ms")

    def __init__(self, loop: VirtualTimeLoop, offset_ms: int) -> None:
        self._loop = loop
        self.offset_ms = offset_ms
        #: While set, the wall clock reads this (a Byzantine proposer stamping a skewed time).
        self.override_ms: int | None = None

    def monotonic_s(self) -> float:
        return self._loop.time()

    def wall_ms(self) -> int:
        if self.override_ms is not None:
            return self.override_ms
        return max(0, self._loop.now_ms + self.offset_ms)

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        return self._loop.call_later(delay_s, callback)


class SimReactor(Reactor):
    """The node's reactor; a Byzantine proposer's builds its blocks at a skewed time."""

    def __init__(self, *, sim_clock: SimClock, skewed_time: Callable[[], int] | None, **kwargs: Any) -> None:
        super().__init__(clock=sim_clock, **kwargs)
        self._sim_clock = sim_clock
        self._skewed_time = skewed_time

    async def _prepare_proposal(self, schedule: LeaderSchedule) -> None:
        """A skewed proposer builds each block when asked, at the skewed time (never ahead)."""
        if self._skewed_time is None:
            await super()._prepare_proposal(schedule)

    def get_block_to_propose(self, height: int, round_: int) -> Block:
        if self._skewed_time is None:
            return super().get_block_to_propose(height, round_)
        self._sim_clock.override_ms = self._skewed_time()
        try:
            return super().get_block_to_propose(height, round_)
        finally:
            self._sim_clock.override_ms = None


@dataclasses.dataclass(slots=True)
class SimStats:
    """What a run exercised (a sweep asserts these paths really ran)."""

    sync_sessions: int = 0
    synced_blocks: int = 0
    crashes: int = 0
    restarts: int = 0
    mid_write_crashes: int = 0
    rebuilds: int = 0
    peers_dropped: int = 0
    hostile_dropped: int = 0
    frames_sent: int = 0
    frames_lost: int = 0
    txs_submitted: int = 0
    #: Range requests (GET_BLOCKS) correct nodes sent, all checked; those sent while their block
    #: sync applied a run (the window where asking again for its heights would show).
    block_requests: int = 0
    block_requests_while_applying: int = 0
    #: States a `WRONG_BACKUP` fault altered, and nodes that halted on finding it.
    states_diverged: int = 0
    halts: int = 0


@dataclasses.dataclass(slots=True)
class SimResult:
    config: SimConfig
    heights: dict[int, int]
    live: bool
    end_ms: int
    events: int
    commits: int
    evidence: int
    #: Offences recorded on the ledger (evidence txs committed), each once, and their tx kinds.
    evidence_recorded: int
    evidence_kinds: tuple[str, ...]
    trace_digest: str
    violations: list[str]
    timeline: SimTimeline
    stats: SimStats


def _derive_identity(rng: random.Random) -> Identity:
    return Identity.from_secrets(rng.randbytes(32), rng.randbytes(32))


class SimPeer:
    """One simulated node: its disk survives crashes; the rest is rebuilt at every start."""

    def __init__(
        self,
        sim: Simulation,
        node_id: int,
        label: str,
        identity: Identity,
        *,
        correct: bool,
        clock_offset_ms: int,
        skew: TimeSkew | None,
    ) -> None:
        self.sim = sim
        self._id = node_id
        self.label = label
        self.identity = identity
        self._key = identity.public.sign_key
        self.correct = correct
        self.clock_offset_ms = clock_offset_ms
        self.skew = skew
        self.disk = SimDisk()
        self._store: BlockStore | None = None
        self.reactor: SimReactor | None = None
        self.up = False
        self.incarnation = 0
        #: The time of the block at this node's tip (the parent of its next commit).
        self.last_time_ms = 0
        self.evidence_seen = 0
        self.in_sync_session = False
        self.rounds_seen: set[tuple[int, int]] = set()
        #: A `WRONG_BACKUP` fault altered this node's durable state (until a rebuild replaces it).
        self.diverged = False
        #: It found its state diverged and stopped for good (not restarted by later faults).
        self.halted = False

    # -- what the checker reads -------------------------------------------------------------

    @property
    def id(self) -> int:
        return self._id

    @property
    def key(self) -> bytes:
        return self._key

    @property
    def store(self) -> BlockStore:
        assert self._store is not None, "the node never started"
        return self._store

    def validators_at(self, height: int) -> ValidatorSet:
        if self.reactor is not None:
            return self.reactor.validators_for(height)
        return self.sim.genesis.validators

    # -- life cycle -------------------------------------------------------------------------

    def _open(self, app: GovernedApp) -> tuple[BlockStore | None, str | None]:
        """The node's start check: its store, and what makes it refuse the store (None: clean)."""
        genesis = self.sim.genesis
        try:
            store = BlockStore.open_memory(self.disk, self.label)
        except ChainError as exc:
            return None, f"the store does not open: {exc}"
        if self.disk.is_torn:
            return store, "the last write was torn (paranoid checks refuse the log)"
        if not store.is_initialized:
            return store, None
        try:
            tail = check_tail(
                store, genesis, blocks=TAIL_CHECK_BLOCKS, validators_at=get_validators_at(app, store, genesis)
            )
        except (ChainError, CodecError) as exc:
            return store, f"the tail check fails: {exc}"
        if not tail.is_clean:
            return store, str(tail.problems[0])
        return store, None

    async def start(self) -> None:
        sim = self.sim
        config = sim.config
        genesis = sim.genesis
        self.incarnation += 1
        self.disk.reopen()
        self.disk.on_crash = self._crashed_mid_write
        app = GovernedApp(config.app_factory(), genesis.validators)
        store, problem = self._open(app)
        rebuilt = problem is not None
        if problem is not None:
            sim.timeline.record(sim.now_ms, self.id, TimelineKind.STORAGE_FAULT, f"store refused: {problem}")
            fresh = SimDisk()
            carried = carry_signing_state(self.disk, fresh)
            new_store = BlockStore.open_memory(fresh, self.label)
            sim.timeline.record(
                sim.now_ms,
                self.id,
                TimelineKind.STORAGE_FAULT,
                f"rebuilt, carried: {', '.join(carried) or 'nothing'}",
            )
            sim.stats.rebuilds += 1
            self.disk, store = fresh, new_store
            fresh.on_crash = self._crashed_mid_write
            app = GovernedApp(config.app_factory(), genesis.validators)
            if self.diverged:  # an empty store holds no wrong state
                self.diverged = False
                sim.checker.diverged.discard(self.id)
        assert store is not None
        if not store.is_initialized:
            store.init_genesis(genesis, app.init_state(genesis))
        mempool = Mempool(max_txs=SIM_MEMPOOL_TXS_MAX, max_bytes=SIM_MEMPOOL_TXS_MAX * 4096)
        clock = SimClock(sim.loop, self.clock_offset_ms)
        incarnation = self.incarnation
        reactor = SimReactor(
            sim_clock=clock,
            skewed_time=self._skewed_time if self.skew is not None else None,
            store=store,
            app=app,
            mempool=mempool,
            admission=Admission(store=store, mempool=mempool, app=app),
            identity=self.identity,
            genesis=genesis,
            block_interval_ms=config.block_interval_ms,
            max_block_txs=SIM_BLOCK_TXS_MAX,
            max_block_bytes=SIM_BLOCK_BYTES_MAX,
            on_committed=functools.partial(self._on_committed, incarnation),
            on_sync_progress=functools.partial(self._on_sync_progress, incarnation),
            offload=self._offload,
            timeouts=config.timeouts,
            synchrony=config.synchrony,
            verify=sim.caches.verify,
        )
        reactor.on_rejected = functools.partial(self._on_rejected, incarnation)
        self._store, self.reactor = store, reactor
        self.last_time_ms = store.last_block_time_ms
        self.evidence_seen = 0
        self.in_sync_session = False
        self.up = True
        if incarnation > 1:
            sim.checker.after_restart(self, rebuilt=rebuilt)
            sim.timeline.record(sim.now_ms, self.id, TimelineKind.RESTART, height=store.height)
            sim.trace(["restart", self.id, sim.now_ms, store.height])
            sim.stats.restarts += 1
        reactor.attach(sim.network.join(self.id, self.key, reactor))
        await reactor.start()
        task = reactor.task
        assert task is not None
        task.add_done_callback(functools.partial(self._task_done, incarnation))

    async def _offload(self, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """The node's worker thread, deterministically: the caller waits the work's cost
        (`compute_offload_ms`, virtual), then the work runs on the loop, as on a thread that got
        the CPU late; other tasks run meanwhile, so the interleavings a thread allows (frames
        handled, block sync re-planning, while a run of blocks is applied) happen here too. A
        crash during the wait cancels the work, as a process death kills its thread."""
        await asyncio.sleep(compute_offload_ms(args, kwargs) / 1000)
        return await run_inline(func, *args, **kwargs)

    def _is_current(self, incarnation: int) -> bool:
        return self.up and incarnation == self.incarnation

    def crash(self, why: str) -> None:
        """Die now: unsynced writes are lost, every task and link of this node ends."""
        if not self.up:
            return
        sim = self.sim
        self.up = False
        self.disk.disarm()
        if not self.disk.closed:
            self.disk.crash()
        sim.network.leave(self.id)
        reactor = self.reactor
        if reactor is not None:
            if reactor.task is not None:
                reactor.task.cancel()
            sim.spawn(reactor.stop(), self)
        sim.stats.crashes += 1
        sim.timeline.record(sim.now_ms, self.id, TimelineKind.CRASH, why, height=self.store.height)
        sim.trace(["crash", self.id, sim.now_ms])

    def halt(self, exc: StateDivergedError) -> None:
        """Its block pipeline found its state diverged: stop for good, as `node/run.py` stops a
        node whose store is corrupted (it leaves the network; its disk keeps what it synced)."""
        sim = self.sim
        self.halted = True
        self.up = False
        sim.network.leave(self.id)
        reactor = self.reactor
        if reactor is not None:
            sim.spawn(reactor.stop(), self)
        sim.stats.halts += 1
        sim.timeline.record(
            sim.now_ms, self.id, TimelineKind.CRASH, f"halted: {exc.message}", height=self.store.height
        )
        sim.trace(["halt", self.id, sim.now_ms])

    def _crashed_mid_write(self) -> None:
        """The disk died under a write: the process dies with it, now."""
        self.sim.stats.mid_write_crashes += 1
        self.crash("in the middle of a store write")

    def _task_done(self, incarnation: int, task: asyncio.Task[None]) -> None:
        if task.cancelled() or not self._is_current(incarnation):
            return
        exc = task.exception()
        if isinstance(exc, SimCrashError):
            return  # the disk's `on_crash` took the node down already
        if isinstance(exc, StateDivergedError) and self.diverged:
            self.halt(exc)  # what it must do; on a node no fault diverged, it is a bug (below)
        elif isinstance(exc, InvariantViolation):
            self.sim.fail_with(exc)
        else:
            self.sim.node_failed(
                self.id, exc if exc is not None else RuntimeError("the consensus task ended")
            )

    def _skewed_time(self) -> int:
        """A Byzantine proposer's block time (see `TimeSkew`), relative to the virtual time."""
        config = self.sim.config
        precision = config.synchrony.precision_ms
        delay = config.synchrony.compute_message_delay_ms(0)
        offset = config.clock_offset_ms_max
        now = self.sim.now_ms
        times = {
            TimeSkew.FAR_FUTURE: UINT_MAX,
            TimeSkew.FAR_PAST: 0,
            TimeSkew.OUTSIDE_FUTURE: now + precision + offset + config.delay_ms_max + 1,
            TimeSkew.INSIDE_FUTURE: now + precision - offset,
            TimeSkew.OUTSIDE_PAST: now - delay - precision - offset - 1,
            TimeSkew.INSIDE_PAST: now - delay - precision + offset + config.delay_ms_max,
        }
        assert self.skew is not None
        return min(UINT_MAX, max(0, times[self.skew]))

    # -- the reactor's hooks ------------------------------------------------------------------

    def _on_committed(self, incarnation: int, executed: ExecutedBlock) -> None:
        if not self._is_current(incarnation):
            return
        sim = self.sim
        header = executed.block.header
        with sim.guard():
            sim.checker.on_committed(self, executed, parent_time_ms=self.last_time_ms, now_ms=sim.now_ms)
            self.scan_evidence()
        self.last_time_ms = header.time_ms
        commit = self.store.get_commit(header.height)
        round_ = commit.round if commit is not None else 0
        sim.on_commit(self, header.height, round_, sim.caches.block_hash(executed.block))

    def _on_sync_progress(self, incarnation: int, progress: SyncProgress) -> None:
        if not self._is_current(incarnation):
            return
        sim = self.sim
        if not self.in_sync_session:
            self.in_sync_session = True
            sim.stats.sync_sessions += 1
            sim.timeline.record(
                sim.now_ms,
                self.id,
                TimelineKind.SYNC_START,
                f"from {progress.start_height}",
                height=progress.start_height,
            )
        if progress.done:
            self.in_sync_session = False
            sim.stats.synced_blocks += progress.blocks
            sim.timeline.record(
                sim.now_ms,
                self.id,
                TimelineKind.SYNC_DONE,
                f"{progress.blocks} blocks",
                height=progress.height,
            )

    def _on_rejected(self, incarnation: int, peer: bytes | None, rejection: Rejection) -> None:
        if not self._is_current(incarnation):
            return
        with self.sim.guard():
            self.sim.checker.on_rejected(self, peer, rejection.is_forgery, rejection.detail)

    def scan_evidence(self) -> None:
        reactor = self.reactor
        if reactor is None or len(reactor.evidence) == self.evidence_seen:
            return
        for evidence in reactor.evidence[self.evidence_seen :]:
            self.sim.checker.on_evidence(self, evidence)
        self.evidence_seen = len(reactor.evidence)


class Simulation:
    """One run. `run()` returns a `SimResult` or raises `InvariantViolation`."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        # Not for secrets: a simulated network's keys and choices must replay from the seed.
        self.rng = random.Random(config.seed)  # noqa: S311
        self.loop = VirtualTimeLoop()
        self.caches = Caches(CHAIN_ID)
        self.stats = SimStats()
        self.events = 0
        self.commits = 0
        self._trace = hashlib.blake2b(digest_size=16)
        self._failure: InvariantViolation | None = None
        self._done: asyncio.Event | None = None

        identities = [_derive_identity(self.rng) for _ in range(config.n)]
        validators = ValidatorSet.of(
            [
                Validator(f"v{i}", ident.public.sign_key, ident.public.enc_key)
                for i, ident in enumerate(identities)
            ]
        )
        self.genesis = Genesis(CHAIN_ID, 0, validators, b"", config.consensus_params)
        faulty = {identities[i].public.sign_key for i in (*config.twins, *config.skewed)}
        skewed = {identities[i].public.sign_key for i in config.skewed}
        # Clock offsets from their own stream, so that a config without them replays as before.
        clocks = random.Random(config.seed ^ 0x5EED_C10C)  # noqa: S311
        bound = config.clock_offset_ms_max
        self.peers: list[SimPeer] = []
        for i, ident in enumerate(identities):
            key = ident.public.sign_key
            offset = clocks.randint(-bound, bound) if bound else 0
            self.peers.append(
                SimPeer(
                    self,
                    i,
                    f"v{i}",
                    ident,
                    correct=key not in faulty,
                    clock_offset_ms=offset,
                    skew=config.time_skew if key in skewed else None,
                )
            )
        for j, original in enumerate(config.twins):
            ident = identities[original]
            key = ident.public.sign_key
            # A twin's clock is 1 + j ms ahead, so its blocks differ from its original's.
            self.peers.append(
                SimPeer(
                    self,
                    config.n + j,
                    f"v{original}-twin",
                    ident,
                    correct=False,
                    clock_offset_ms=1 + j,
                    skew=config.time_skew if key in skewed else None,
                )
            )
        first_hostile = config.n + len(config.twins)
        self.hostiles = [
            HostilePeer(self, first_hostile + k, kind, _derive_identity(self.rng), self.rng.getrandbits(64))
            for k, kind in enumerate(config.hostile)
        ]
        labels = [p.label for p in self.peers] + [
            f"hostile-{k}-{h.kind.value}" for k, h in enumerate(self.hostiles)
        ]
        self.timeline = SimTimeline(
            title=f"simulation of {config.n} validators, seed {config.seed}",
            seed=config.seed,
            replay=f"run_simulation({config.describe()})",
            node_labels=labels,
        )
        self.checker = InvariantChecker(
            chain_id=CHAIN_ID,
            faulty_keys=frozenset(faulty),
            caches=self.caches,
            describe=config.describe,
            precision_ms=config.synchrony.precision_ms,
            clock_offset_ms_max=config.clock_offset_ms_max,
            message_delay_ms=config.synchrony.compute_message_delay_ms,
        )
        self.checker.on_violation = self._record_violation
        self.network = SimNetwork(
            self.rng,
            delay_ms_min=config.delay_ms_min,
            delay_ms_max=config.delay_ms_max,
            on_sent=self._on_sent,
            on_received=self._on_received,
            on_link_end=self._on_link_end,
            on_failure=self._on_network_failure,
        )
        self._clients = [_derive_identity(self.rng) for _ in range(CLIENTS)]
        self._active: list[Fault] = []
        self._gst_heights: dict[int, int] | None = None
        self._target: int | None = None
        self._decoded: dict[bytes, Proposal | Vote | None] = {}

    @property
    def now_ms(self) -> int:
        return self.loop.now_ms

    def trace(self, item: list[Any]) -> None:
        self._trace.update(encode_primitive(item))

    # -- failures ---------------------------------------------------------------------------

    def _record_violation(self, node: int | None, what: str) -> None:
        self.timeline.record(self.now_ms, node, TimelineKind.VIOLATION, what)

    def fail_with(self, exc: InvariantViolation) -> None:
        if self._failure is None:
            self._failure = exc
        if self._done is not None:
            self._done.set()

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Record the first violation a hook raises (and end the run), then let it unwind."""
        try:
            yield
        except InvariantViolation as exc:
            self.fail_with(exc)
            raise

    def node_failed(self, node_id: int, exc: BaseException) -> None:
        """A node's code raised something it should not (a bug the run found): fail the run."""
        peer = self.peers[node_id] if node_id < len(self.peers) else None
        if peer is not None and (not peer.correct or not peer.up):
            return  # a Byzantine node may fall over, and a crashed one's work dies with it
        self.violate(f"node {node_id} failed: {type(exc).__name__}: {exc}", node_id)

    def violate(self, what: str, node: int | None = None) -> None:
        """Fail the run (from a hook that must not raise into the node's code)."""
        try:
            self.checker.fail(what, node)
        except InvariantViolation as exc:
            self.fail_with(exc)

    def _on_network_failure(self, node_id: int, exc: BaseException) -> None:
        if node_id >= len(self.peers):
            return  # a hostile peer's own trouble
        if isinstance(exc, SimCrashError):
            return  # the disk's `on_crash` took the node down already
        if isinstance(exc, InvariantViolation):
            self.fail_with(exc)
        else:
            self.node_failed(node_id, exc)

    def spawn(self, work: Coroutine[Any, Any, None], peer: SimPeer | None = None) -> None:
        """Run `work` as a task; an error fails the run, unless `peer` crashed meanwhile (its
        work died with it)."""
        incarnation = peer.incarnation if peer is not None else 0

        async def run() -> None:
            try:
                await work
            except InvariantViolation as exc:
                self.fail_with(exc)
            except SimCrashError:
                return
            except Exception as exc:  # a node's bug found by the run
                if peer is None:
                    self.violate(f"the simulation failed: {type(exc).__name__}: {exc}")
                elif peer.up and peer.incarnation == incarnation:
                    self.node_failed(peer.id, exc)

        self.loop.create_task(run())

    # -- the network's hooks ----------------------------------------------------------------

    def _decode(self, kind: int, payload: bytes) -> Proposal | Vote | None:
        if payload in self._decoded:
            return self._decoded[payload]
        message: Proposal | Vote | None
        try:
            if kind == FrameKind.PROPOSAL:
                message = decode(Proposal, payload, max_bytes=BLOCK_BYTES_MAX + 4096)
            else:
                message = decode(Vote, payload, max_bytes=CONSENSUS_MESSAGE_BYTES_MAX)
        except CodecError:
            message = None
        if len(self._decoded) >= DECODED_FRAMES_MAX:
            self._decoded.clear()
        self._decoded[payload] = message
        return message

    def _on_sent(self, node_id: int, kind: int, payload: bytes, links: int) -> None:
        self.stats.frames_sent += links
        if node_id >= len(self.peers):
            return
        peer = self.peers[node_id]
        if kind == FrameKind.GET_BLOCKS:
            self._check_block_request(peer, payload)
            return
        if kind not in (FrameKind.PROPOSAL, FrameKind.VOTE):
            return
        message = self._decode(kind, payload)
        if message is None:
            with self.guard():
                self.checker.fail(f"node {node_id} sent a consensus frame that does not decode", node_id)
            return
        with self.guard():
            self.checker.on_sent(peer, message)
            if isinstance(message, Proposal) and message.proposer == peer.key:
                self.checker.on_proposal_seen(peer, self.caches.block_hash(message.block), self.now_ms)
            peer.scan_evidence()
        if message.round > 0 and (message.height, message.round) not in peer.rounds_seen:
            peer.rounds_seen.add((message.height, message.round))
            if len(peer.rounds_seen) > 64:
                peer.rounds_seen = {max(peer.rounds_seen)}
            self.timeline.record(
                self.now_ms,
                node_id,
                TimelineKind.ROUND,
                f"round {message.round}",
                height=message.height,
                round=message.round,
            )

    def _check_block_request(self, peer: SimPeer, payload: bytes) -> None:
        """A correct node's range request, read against its block sync's state as it is sent."""
        reactor = peer.reactor
        if not peer.correct or reactor is None:
            return
        try:
            request = decode(BlockRequest, payload, max_bytes=64)
        except CodecError:
            with self.guard():
                self.checker.fail(f"node {peer.id} sent a block request that does not decode", peer.id)
            return
        sync = reactor.sync
        # White-box: the last height of the run block sync applies (0: none), which no API shows,
        # and the height consensus decided and the reactor is writing (0: none).
        applying_through = sync._applying_through
        core = reactor.core
        deciding = core.height if core.decided and core.height > peer.store.height else 0
        self.stats.block_requests += 1
        self.stats.block_requests_while_applying += applying_through > 0
        with self.guard():
            self.checker.on_block_request(
                peer,
                request.from_height,
                request.to_height,
                committed=peer.store.height,
                applying_through=applying_through,
                decided=deciding,
                is_downloaded=lambda height: sync.peer_of(height) is not None,
            )

    def _on_received(self, node_id: int, kind: int, payload: bytes) -> None:
        self.events += 1
        if self.events > self.config.events_max:
            with self.guard():
                self.checker.fail(f"more than {self.config.events_max} events: a message storm or livelock")
        if kind == FrameKind.PROPOSAL and node_id < len(self.peers) and self.peers[node_id].correct:
            message = self._decode(kind, payload)
            if isinstance(message, Proposal):
                self.checker.on_proposal_seen(
                    self.peers[node_id], self.caches.block_hash(message.block), self.now_ms
                )

    def _on_link_end(self, node_id: int, peer_key: bytes, why: str, fault: bool) -> None:
        if not fault:
            return
        self.stats.peers_dropped += 1
        hostile = next((h for h in self.hostiles if h.key == peer_key), None)
        if hostile is not None:
            self.stats.hostile_dropped += 1
            hostile.dropped += 1
        elif node_id < len(self.peers) and self.peers[node_id].correct:
            sender = next((p for p in self.peers if p.key == peer_key), None)
            if sender is not None and sender.correct:
                self.violate(f"node {node_id} dropped correct peer {sender.id}: {why}", node_id)
        self.timeline.record(self.now_ms, node_id, TimelineKind.PEER_DROPPED, f"{peer_key.hex()[:12]}: {why}")

    # -- commits and liveness ---------------------------------------------------------------

    def on_commit(self, peer: SimPeer, height: int, round_: int, block_hash: bytes) -> None:
        self.commits += 1
        self.trace([peer.id, height, block_hash])
        self.timeline.record(self.now_ms, peer.id, TimelineKind.COMMIT, height=height, round=round_)
        if self._target is not None and self._is_live() and self._done is not None:
            self._live = True
            self._done.set()

    def _correct_nodes(self) -> list[SimPeer]:
        """The validators liveness is due from: all but those run twice (a twin's pair) and those
        whose state a fault made diverge (halted, or still to find out)."""
        twins = self.config.twins
        return [p for p in self.peers[: self.config.n] if p.id not in twins and not p.diverged]

    def _mark_gst(self) -> None:
        self._gst_heights = {p.id: p.store.height for p in self._correct_nodes() if p._store is not None}
        self._target = max(self._gst_heights.values(), default=0) + self.config.heights_after_gst
        if self._is_live() and self._done is not None:
            self._live = True
            self._done.set()

    def _is_live(self) -> bool:
        target = self._target
        assert target is not None
        return all(p.up and p.store.height >= target for p in self._correct_nodes())

    # -- clients and faults -----------------------------------------------------------------

    def _client_tx(self) -> None:
        rng = self.rng
        client = rng.choice(self._clients)
        kind, body = self.config.make_tx(rng)
        _, raw, _ = sign_tx(
            client,
            chain_id=CHAIN_ID,
            kind=kind,
            body=body,
            nonce=rng.getrandbits(64),
            timestamp_ms=self.now_ms,
        )
        up = [p for p in self.peers if p.up]
        if up:
            peer = rng.choice(up)
            assert peer.reactor is not None
            self.stats.txs_submitted += 1
            self.spawn(self._submit(peer.reactor, raw), peer)
        self.loop.call_later(rng.randint(1, 2 * self.config.client_tx_interval_ms) / 1000, self._client_tx)

    @staticmethod
    async def _submit(reactor: Reactor, raw: bytes) -> None:
        with contextlib.suppress(ChainError):  # refused (full, duplicate): a client would retry
            await reactor.submit([raw])

    def _conditions(self) -> Conditions:
        loss = duplicate = 0.0
        extra = 0
        partitions: list[frozenset[int]] = []
        one_way: list[frozenset[int]] = []
        for fault in self._active:
            if fault.kind is FaultKind.LOSS:
                loss = max(loss, fault.rate)
            elif fault.kind is FaultKind.DUPLICATE:
                duplicate = max(duplicate, fault.rate)
            elif fault.kind is FaultKind.DELAY:
                extra = max(extra, fault.extra_ms)
            elif fault.kind is FaultKind.PARTITION:
                partitions.append(frozenset(fault.nodes))
            elif fault.kind is FaultKind.ONE_WAY:
                one_way.append(frozenset(fault.nodes))
        return Conditions(loss, duplicate, extra, tuple(partitions), tuple(one_way))

    def _fault_label(self, fault: Fault) -> str:
        return repr(fault)

    def _fault_start(self, fault: Fault) -> None:
        self.timeline.record(self.now_ms, None, TimelineKind.FAULT_START, self._fault_label(fault))
        if fault.kind in CRASH_KINDS:
            for node_id in fault.nodes:
                peer = self.peers[node_id]
                if not peer.up:
                    continue
                if fault.kind in (FaultKind.CRASH_MID, FaultKind.TORN_WRITE):
                    peer.disk.arm_crash(
                        self.rng.randint(1, CRASH_WRITES_MAX), torn=fault.kind is FaultKind.TORN_WRITE
                    )
                else:
                    peer.crash(fault.kind.value)
        else:
            self._active.append(fault)
            self.network.conditions = self._conditions()

    def _fault_end(self, fault: Fault) -> None:
        self.timeline.record(self.now_ms, None, TimelineKind.FAULT_END, self._fault_label(fault))
        if fault.kind in CRASH_KINDS:
            for node_id in fault.nodes:
                peer = self.peers[node_id]
                if peer.up and peer.disk.is_armed:
                    peer.crash(f"{fault.kind.value} (no write in the window)")
                rots = fault.kind is FaultKind.CORRUPT and not peer.up and peer._store is not None
                if rots and peer.disk.corrupt_tip(peer.store.height):
                    self.timeline.record(
                        self.now_ms,
                        node_id,
                        TimelineKind.STORAGE_FAULT,
                        f"block {peer.store.height} rotted while down",
                    )
                if fault.kind in DIVERGING_KINDS and not peer.up and not peer.halted:
                    self._restore_wrong_backup(peer)
                if not peer.up and not peer.halted and not self._is_still_crashed(node_id):
                    self.spawn(peer.start())
        elif fault in self._active:
            self._active.remove(fault)
            self.network.conditions = self._conditions()

    def _restore_wrong_backup(self, peer: SimPeer) -> None:
        """Alter a down node's durable state consistently (`SimDisk.restore_wrong_backup`)."""
        if peer._store is None:
            return  # it never started: nothing to restore
        key = peer.disk.restore_wrong_backup()
        if key is None:
            return
        peer.diverged = True
        self.checker.diverged.add(peer.id)
        self.stats.states_diverged += 1
        self.timeline.record(
            self.now_ms,
            peer.id,
            TimelineKind.STORAGE_FAULT,
            f"state restored from a wrong backup while down (entry {key!r} and the state root differ)",
        )

    def _is_still_crashed(self, node_id: int) -> bool:
        """Another crash fault still holds this node down."""
        now = self.now_ms
        return any(
            f.kind in CRASH_KINDS and node_id in f.nodes and f.start_ms <= now < f.end_ms
            for f in self.config.faults
        )

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> SimResult:
        loop = self.loop
        loop.set_exception_handler(lambda loop, context: None)  # failures reach us through hooks
        try:
            try:
                live = loop.run_until_complete(self._main())
            except (SimLivelockError, SimDeadlockError) as exc:
                live = False
                self.violate(f"the simulated system is stuck: {exc}")
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()
        if self._failure is not None:
            self.timeline.end_ms = max(self.timeline.end_ms, self.now_ms)
            self._failure.timeline = self.timeline
            raise self._failure
        return self._result(live)

    async def _main(self) -> bool:
        config = self.config
        self._done = asyncio.Event()
        self._live = False
        loop = self.loop
        for fault in config.faults:
            loop.call_later(fault.start_ms / 1000, self._fault_start, fault)
            loop.call_later(fault.end_ms / 1000, self._fault_end, fault)
        loop.call_later(self.rng.randrange(config.client_tx_interval_ms + 1) / 1000, self._client_tx)
        for peer in self.peers:
            await peer.start()
        for hostile in self.hostiles:
            hostile.start()
        gst = config.gst_ms
        if gst == 0:
            self._mark_gst()
        else:
            loop.call_later(gst / 1000, self._mark_gst)
        deadline = gst + config.liveness_bound_ms
        if config.stop_ms is not None:
            deadline = min(deadline, config.stop_ms)
        loop.call_later(deadline / 1000, self._done.set)
        await self._done.wait()
        if self._gst_heights is None:
            self._mark_gst()
        for peer in self.peers:
            if peer.up and peer.reactor is not None:
                with contextlib.suppress(Exception):
                    await peer.reactor.stop()
        return self._live

    def _result(self, live: bool) -> SimResult:
        config = self.config
        heights = {p.id: p.store.height for p in self.peers if p.up}
        violations: list[str] = []
        if config.expect_liveness and not live:
            behind = {p.id: p.store.height for p in self._correct_nodes()}
            what = (
                f"LIVENESS: not every correct node reached height {self._target} within "
                f"{config.liveness_bound_ms} ms after GST ({config.gst_ms} ms); heights {behind}"
            )
            violations.append(what)
            self._record_violation(None, what)
        self.timeline.end_ms = max(self.timeline.end_ms, self.now_ms)
        self.stats.frames_lost = self.network.frames_lost
        self.trace([self.now_ms, self.events, sorted(heights.items())])
        return SimResult(
            config=config,
            heights=heights,
            live=live,
            end_ms=self.now_ms,
            events=self.events,
            commits=self.commits,
            evidence=self.checker.evidence,
            evidence_recorded=len(self.checker.recorded_slots),
            evidence_kinds=tuple(sorted(self.checker.recorded_kinds)),
            trace_digest=self._trace.hexdigest(),
            violations=violations,
            timeline=self.timeline,
            stats=self.stats,
        )


def run_simulation(config: SimConfig) -> SimResult:
    """Run one simulation; raises `InvariantViolation` when a safety property fails."""
    return Simulation(config).run()


__all__ = ["SimClock", "SimPeer", "SimReactor", "SimResult", "SimStats", "Simulation", "run_simulation"]
