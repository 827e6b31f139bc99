"""The consensus reactor: runs the sans-I/O `ConsensusCore` against peers, the store and the clock.

I/O only: an inbox, timers, frames, and the hops to a worker around the block pipeline. Every
decision about a block is the pipeline's (`chain/executor.BlockExecutor`), every decision about a
message the core's, every decision about catching up block sync's (`network/syncservice.py`).
Clock, transport and worker are injected (`network/clock.py`, `network/transport.py`), so the
simulator runs this same reactor on virtual time, and a single validator is just n = 1: the
same reactor with no peers.

One task owns the core, the store's writes and the mempool's removals; peer handlers only decode,
check the shape and enqueue (bounded). The reactor is also the core's `ConsensusDriver`: it builds
proposals from the mempool and validates (and pre-executes, off the event loop) proposed blocks.

Heights start on demand: after a commit, the next height begins as soon as the mempool holds a
transaction (and the block interval, 0 unless configured, has passed since the commit), or at once
when a peer already works on it, so an idle network commits no empty blocks and a lone tx waits
for no timer.

Block sync (DESIGN.md §3, `SyncService`): a node that learns of higher heights (peer status, or
messages from the future) downloads ranges of blocks with their certificates from several peers
while it applies those received. A node far behind (as f+1 validators claim) leaves consensus for
sync mode and rejoins once caught up. A consensus message of a height this node has committed gets
the block pushed to the link it came from (once per height), never to its signer: a relayed vote
must not turn into blocks sent to a validator that did not ask.

Block time (docs/adr/0007-block-time.md): a frame's arrival time on this node's clock goes with
each proposal to the core, which prevotes a fresh proposal only if its block time is timely.

Evidence (docs/adr/0003-consensus.md): equivocations the core detects wait in an `EvidencePool`;
when this node proposes, it files the pending ones as `chain.evidence*` txs it signs and puts
first in its own block. Evidence never enters a mempool, so each offence reaches the ledger once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Final

from medledger.chain.admission import Admission, check_batch
from medledger.chain.app import App
from medledger.chain.codec import decode, encode
from medledger.chain.consensus import (
    Action,
    Broadcast,
    CommitBlock,
    ConsensusCore,
    ConsensusTimeouts,
    PeerBehind,
    PersistLastSigned,
    PersistLock,
    RecordEvidence,
    Rejection,
    ScheduleTimeout,
    SynchronyParams,
    Timeout,
)
from medledger.chain.errors import InvalidBlockError
from medledger.chain.evidence import Evidence, EvidencePool
from medledger.chain.execution import ExecutedBlock
from medledger.chain.executor import BlockExecutor, ForkDetectedError
from medledger.chain.leader import LeaderSchedule
from medledger.chain.limits import BLOCK_BYTES_MAX, CONSENSUS_MESSAGE_BYTES_MAX
from medledger.chain.mempool import Mempool
from medledger.chain.store import BlockStore, ConsensusLock, LastSigned
from medledger.chain.types import Block, Commit, Genesis, Proposal, TxId, ValidatorSet, Vote, compute_tx_id
from medledger.chain.validation import CheckedTx, Verifier
from medledger.crypto import Identity, verify_signature
from medledger.network.blocksync import BlockSync
from medledger.network.clock import Clock, Offload, Timer
from medledger.network.messages import (
    FRAME_BYTES_MAX,
    GOSSIP_TXS_MAX,
    FrameKind,
    PeerStatus,
    TxBatch,
)
from medledger.network.peers import PeerError
from medledger.network.syncservice import FAR_BEHIND_BLOCKS, SYNC_TICK_S, SyncProgress, SyncService
from medledger.network.transport import Link, Transport

__all__ = ["ForkDetectedError", "Reactor", "SyncProgress"]

log = logging.getLogger("medledger.consensus")

#: Most events waiting for the consensus task; a flood from peers is shed, not buffered.
INBOX_EVENTS_MAX: Final = 20_000
#: Tx ids remembered as signature-checked outside the mempool (proposals that arrived first).
VERIFIED_IDS_MAX: Final = 200_000
#: Txs admitted within this long are gossiped in one frame (seconds; a small share of a height).
GOSSIP_COALESCE_S: Final = 0.002
#: Waits shorter than this count as elapsed (seconds; well below any block interval).
WAKE_RESOLUTION_S: Final = 0.001
#: A submitted batch this large is checked in a worker (signature checks), a smaller one inline.
THREADED_CHECK_BATCH_MIN: Final = 32


@dataclasses.dataclass(frozen=True, slots=True)
class _Message:
    message: Proposal | Vote
    peer: bytes | None
    #: This node's clock when the frame arrived (PBTS judges a proposal's time against it).
    received_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class _SyncReady:
    """Downloaded blocks may be ready to apply."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Wake:
    """Something changed (txs arrived, the block interval passed): maybe start the next height."""


Event = _Message | _SyncReady | Timeout | _Wake


class Reactor:
    def __init__(
        self,
        *,
        store: BlockStore,
        app: App,
        mempool: Mempool,
        admission: Admission,
        identity: Identity,
        genesis: Genesis,
        block_interval_ms: int,
        max_block_txs: int,
        max_block_bytes: int,
        clock: Clock,
        on_committed: Callable[[ExecutedBlock], None],
        on_sync_progress: Callable[[SyncProgress], None] | None = None,
        on_commit_latency: Callable[[float], None] | None = None,
        offload: Offload = asyncio.to_thread,
        timeouts: ConsensusTimeouts | None = None,
        synchrony: SynchronyParams | None = None,
        verify: Verifier = verify_signature,
    ) -> None:
        self.store = store
        self.app = app
        self.mempool = mempool
        self.admission = admission
        self.identity = identity
        self.genesis = genesis
        self.block_interval_s = block_interval_ms / 1000
        # The builder fills a block up to the node's own limits, never past the genesis caps.
        params = genesis.consensus_params
        self.max_block_txs = min(max_block_txs, params.block_txs_max)
        self.max_block_bytes = min(max_block_bytes, params.block_bytes_max)
        self.clock = clock
        self.on_committed = on_committed
        #: Called with the seconds from starting a height to writing its block (consensus only).
        self.on_commit_latency = on_commit_latency
        self._offload = offload
        self._verify = verify
        self.executor = BlockExecutor(store=store, app=app, genesis=genesis, verify=verify)
        self.syncer = SyncService(
            executor=self.executor, clock=clock, offload=offload, on_sync_progress=on_sync_progress
        )
        self.network: Transport | None = None
        self.core = ConsensusCore(
            chain_id=genesis.chain_id,
            identity=identity,
            driver=self,
            last_signed=store.load_last_signed(),
            lock=store.load_lock(),
            timeouts=timeouts,
            synchrony=synchrony,
            verify=verify,
        )
        #: Called with each consensus message the core refuses (the relaying peer, and why).
        self.on_rejected: Callable[[bytes | None, Rejection], None] | None = None
        self._inbox: asyncio.Queue[Event] = asyncio.Queue(maxsize=INBOX_EVENTS_MAX)
        self._executed: dict[bytes, ExecutedBlock] = {}
        #: This node's round-0 block for the height about to start, built off the loop.
        self._prepared: tuple[int, ExecutedBlock] | None = None
        self._invalid: set[bytes] = set()
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self._last_commit_at = 0.0
        self._height_started_at = 0.0
        self._wake_handle: Timer | None = None
        self._gossip_pending: list[bytes] = []
        self._gossip_handle: Timer | None = None
        self._tick_handle: Timer | None = None
        self._task: asyncio.Task[None] | None = None
        self.last_commit_time_ms = store.last_block_time_ms
        #: Every equivocation the core reported (for operators and tests).
        self.evidence: list[Evidence] = []
        self.evidence_pool = EvidencePool()

    # -- life cycle --------------------------------------------------------------------------------

    def attach(self, network: Transport) -> None:
        self.network = network
        self.syncer.transport = network

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="consensus")
        self._sync_tick()

    def _sync_tick(self) -> None:
        """While behind, re-plan: expired requests go to other peers, rested peers are asked again."""
        if self.syncer.is_behind:
            self.syncer.plan()
            self._post(_SyncReady())
        self._tick_handle = self.clock.call_later(SYNC_TICK_S, self._sync_tick)

    async def stop(self) -> None:
        self.syncer.close()
        if self._gossip_handle is not None:
            self._gossip_handle.cancel()
            self._gossip_handle = None
        if self._wake_handle is not None:
            self._wake_handle.cancel()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self._task is not None:
            if not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            # A task that failed has reported its error to whoever awaits `task` (the node).
            self._task = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    # -- views -------------------------------------------------------------------------------------

    @property
    def sync(self) -> BlockSync:
        return self.syncer.sync

    @property
    def syncing(self) -> bool:
        return self.syncer.syncing

    def validators_for(self, height: int) -> ValidatorSet:
        return self.executor.validators_for(height)

    @property
    def validators(self) -> ValidatorSet:
        """The set of the height in progress."""
        return self.executor.validators_for(self.store.height + 1)

    def is_known_validator(self, key: bytes) -> bool:
        return self.executor.is_known_validator(key)

    @property
    def is_validator(self) -> bool:
        return self.identity.public.sign_key in self.executor.get_members(self.store.height + 1)

    @property
    def backed_target(self) -> int:
        return self.syncer.backed_target

    @property
    def sync_lag(self) -> int:
        return self.syncer.lag

    @property
    def block_requests_refused(self) -> int:
        return self.syncer.block_requests_refused

    # -- intake ------------------------------------------------------------------------------------

    async def submit(self, raws: list[bytes]) -> list[CheckedTx]:
        """Admit a batch of txs atomically (all or none: the error says why), then gossip them."""
        chain_id, now_ms = self.genesis.chain_id, self.clock.wall_ms()
        if len(raws) >= THREADED_CHECK_BATCH_MIN:
            outcomes = await self._offload(check_batch, raws, chain_id=chain_id, now_ms=now_ms)
        else:
            outcomes = check_batch(raws, chain_id=chain_id, now_ms=now_ms)
        # From here to the end there is no await: the batch is admitted atomically.
        checked = self.admission.admit(outcomes)
        self.gossip_txs([c.raw for c in checked])
        self.notify_txs()
        return checked

    def notify_txs(self) -> None:
        """The mempool got txs (from the API or gossip)."""
        self._post(_Wake())

    def _post(self, event: Event) -> None:
        try:
            self._inbox.put_nowait(event)
        except asyncio.QueueFull:
            log.warning("consensus inbox full: dropping a %s", type(event).__name__)

    # -- the consensus task ------------------------------------------------------------------------

    async def _run(self) -> None:
        # No commit yet in this run: the first height starts as soon as there is a tx.
        self._height_started_at = self.clock.monotonic_s()
        self._last_commit_at = self._height_started_at - self.block_interval_s
        await self._maybe_start_height(force=False)
        while True:
            event = await self._inbox.get()
            if isinstance(event, _Message):
                await self._on_message(event)
            elif isinstance(event, Timeout):
                if not self._core_is_stale():
                    await self._execute(self.core.on_timeout(event))
            elif isinstance(event, _SyncReady):
                if await self.syncer.apply_ready(self._committed):
                    await self._after_commits()
            else:
                await self._maybe_start_height(force=False)

    def _next_height(self) -> int:
        return self.store.height + 1

    def _height_started(self) -> bool:
        return self.core.height == self._next_height()

    async def _maybe_start_height(self, *, force: bool) -> None:
        if self.syncer.update_mode() or self._height_started():
            return
        if not force:
            if len(self.mempool) == 0 and not len(self.evidence_pool):
                return
            wait_s = self._last_commit_at + self.block_interval_s - self.clock.monotonic_s()
            # Below a clock tick the interval has passed: a timer for a rounding residue would
            # fire at once (on a virtual clock, at the same instant) and wait again, forever.
            if wait_s > WAKE_RESOLUTION_S:
                if self._wake_handle is None:
                    self._wake_handle = self.clock.call_later(wait_s, self._wake)
                return
        self._height_started_at = self.clock.monotonic_s()
        height = self._next_height()
        schedule = self.executor.leader_schedule(height)
        await self._prepare_proposal(schedule)
        await self._execute(self.core.start_height(height, schedule.validators, schedule))

    def _wake(self) -> None:
        self._wake_handle = None
        self._post(_Wake())

    def _core_is_stale(self) -> bool:
        """The core still works on a height that block sync has committed meanwhile."""
        return self.core.height <= self.store.height

    async def _on_message(self, event: _Message) -> None:
        message = event.message
        next_height = self._next_height()
        if message.height <= self.store.height:
            # Committed here already: the sender lags, so help it rather than the (stale) core.
            if event.peer is not None and self._core_is_stale():
                self.syncer.push_blocks(event.peer, message.height, message.height)
                return
            if self._core_is_stale():
                return
        if message.height > next_height and event.peer is not None:
            self.syncer.note_height(event.peer, message.height - 1)
        if self.syncer.update_mode():
            return  # far behind: block sync brings us there, the core waits
        if message.height == next_height and not self._height_started():
            # A peer already works on the next height: join at once.
            await self._maybe_start_height(force=True)
        if isinstance(message, Proposal):
            if message.height == self.core.height:
                await self._prevalidate(message.block)
            actions = self.core.on_proposal(message, received_ms=event.received_ms)
        else:
            actions = self.core.on_vote(message)
        rejection = self.core.last_rejection
        if rejection is not None:
            if self.on_rejected is not None:
                self.on_rejected(event.peer, rejection)
            if rejection.is_forgery and event.peer is not None:
                # Every consensus message is signed by its author: a forged one marks the relaying
                # peer as faulty (honest peers check signatures before they relay).
                self.syncer.drop_peer(event.peer, f"sent a consensus message with {rejection}")
        await self._execute(actions, source=event.peer)

    async def _execute(self, actions: list[Action], *, source: bytes | None = None) -> None:
        """Carry out the core's actions in order (persist before broadcast).

        `source`: the peer whose message produced them. A message of a committed height shows
        that *its link* lags, not its signer: a relayed vote (or a proposer's proof of lock) is
        signed by others, and pushing the block to them would let any peer reflect whole blocks
        at validators that may be up to date. So the block goes to the source, once per height.
        """
        behind: set[tuple[bytes, int]] = set()
        # Persist-before-send, batched: what the actions ask to persist is written in one synced
        # batch before any message of the batch leaves (sends keep their order; the last record
        # of each kind is what counts, as each supersedes the one before).
        last: LastSigned | None = None
        lock: ConsensusLock | None = None
        outbox: list[Proposal | Vote] = []

        async def flush() -> None:
            nonlocal last, lock
            if last is not None or lock is not None:
                await self._offload(self.store.save_signing_state, last, lock)
                last = lock = None
            for message in outbox:
                self._broadcast(message)
            outbox.clear()

        for action in actions:
            if isinstance(action, PersistLastSigned):
                last = action.last
            elif isinstance(action, PersistLock):
                lock = action.lock
            elif isinstance(action, Broadcast):
                outbox.append(action.message)
            elif isinstance(action, ScheduleTimeout):
                self.clock.call_later(action.delay_ms / 1000, functools.partial(self._post, action.timeout))
            elif isinstance(action, CommitBlock):
                # Until it is written, block sync must not download the decided block (peers that
                # committed it say so meanwhile): its height counts as being applied.
                self.sync.start_applying(action.block.header.height)
                try:
                    await flush()  # our precommit goes out before the block is written
                    await self._commit(action.block, action.commit)
                finally:
                    self.sync.done_applying()
            elif isinstance(action, RecordEvidence):
                evidence = action.evidence
                self.evidence.append(evidence)
                self.evidence_pool.add(evidence)
                log.warning(
                    "%s by validator %s at height %d",
                    type(evidence).__name__,
                    evidence.signer.hex()[:12],
                    evidence.height,
                )
            elif isinstance(action, PeerBehind):
                target = (source if source is not None else action.validator, action.height)
                if target not in behind:
                    behind.add(target)
                    self.syncer.push_blocks(target[0], action.height, action.height)
        await flush()

    def _broadcast(self, message: Proposal | Vote) -> None:
        if self.network is not None:
            kind = FrameKind.PROPOSAL if isinstance(message, Proposal) else FrameKind.VOTE
            self.network.broadcast(kind, encode(message))

    # -- the driver --------------------------------------------------------------------------------

    async def _prepare_proposal(self, schedule: LeaderSchedule) -> None:
        """Build and execute this node's round-0 block in a worker before the height starts: the
        core asks for it synchronously (`get_block_to_propose`), which would run it on the loop."""
        me = self.identity.public.sign_key
        last = self.core.last_signed
        height = schedule.height
        if schedule.get_proposer(0).sign_key != me or (last is not None and last.height >= height):
            return
        time_ms = self.clock.wall_ms()
        txs = self._reap_for_block(time_ms)
        executed = await self._offload(
            self.executor.build_proposal, proposer=me, round_=0, time_ms=time_ms, txs=txs
        )
        self._prepared = (height, executed)

    def _reap_for_block(self, time_ms: int) -> list[CheckedTx]:
        evidence_txs = self.executor.file_evidence(self.evidence_pool, self.identity, time_ms=time_ms)
        return evidence_txs + self.mempool.reap(
            max_txs=max(0, self.max_block_txs - len(evidence_txs)),
            max_bytes=max(0, self.max_block_bytes - sum(len(c.raw) for c in evidence_txs)),
        )

    def get_block_to_propose(self, height: int, round_: int) -> Block:
        prepared, self._prepared = self._prepared, None
        if prepared is not None and prepared[0] == height and round_ == 0:
            executed = prepared[1]
        else:
            time_ms = self.clock.wall_ms()
            executed = self.executor.build_proposal(
                proposer=self.identity.public.sign_key,
                round_=round_,
                time_ms=time_ms,
                txs=self._reap_for_block(time_ms),
            )
        block = executed.block
        self._executed[block.hash()] = executed
        return block

    def is_valid_block(self, block: Block) -> bool:
        block_hash = block.hash()
        if block_hash in self._executed:
            return True
        if block_hash in self._invalid:
            return False
        try:
            self._executed[block_hash] = self._validate_proposal(block)
        except InvalidBlockError as exc:
            log.warning("invalid block %d proposed (%s): %s", block.header.height, exc.rule, exc)
            self._invalid.add(block_hash)
            return False
        return True

    async def _prevalidate(self, block: Block) -> None:
        """Validate and execute a proposed block in a worker thread, so the loop keeps serving."""
        block_hash = block.hash()
        if block_hash in self._executed or block_hash in self._invalid:
            return
        try:
            executed = await self._offload(self._validate_proposal, block)
        except InvalidBlockError as exc:
            log.warning("invalid block %d proposed (%s): %s", block.header.height, exc.rule, exc)
            self._invalid.add(block_hash)
        else:
            if block.header.height == self._next_height():
                self._executed[block_hash] = executed

    def _validate_proposal(self, block: Block) -> ExecutedBlock:
        executed = self.executor.validate_proposal(block, known=self.mempool.get, verified=self._verified)
        self._remember_verified(executed.tx_ids)
        return executed

    def _remember_verified(self, tx_ids: list[TxId]) -> None:
        """Bounded memory of ids whose signatures were checked (each is checked once)."""
        verified = self._verified
        for tx_id in tx_ids:
            verified[tx_id] = None
        while len(verified) > VERIFIED_IDS_MAX:
            verified.popitem(last=False)

    # -- committing ------------------------------------------------------------------------------

    async def _commit(self, block: Block, commit: Commit) -> None:
        """Write a block the core decided (its certificate checked by the core)."""
        if self.executor.is_committed(block):
            return  # decided by the core after block sync already committed this height
        executed = self._executed.get(block.hash())
        certified = executed is None
        if executed is None:
            # Decided before we saw the proposal (learned with its certificate): a quorum decided
            # it, so it is the network's chain; the pipeline checks it fits ours.
            executed = await self._offload(
                self.executor.validate_certified, block, commit, known=self.mempool.get
            )
        await self._offload(self.executor.commit, executed, commit)
        self._committed(executed)
        if self.on_commit_latency is not None:
            self.on_commit_latency(self._last_commit_at - self._height_started_at)
        log.info(
            "committed block %d: %d txs, round %d, %.0f ms after the height started%s",
            block.header.height,
            len(block.txs),
            commit.round,
            (self._last_commit_at - self._height_started_at) * 1000,
            " (with its certificate)" if certified else "",
        )
        await self._after_commits()

    def _committed(self, executed: ExecutedBlock) -> None:
        """Bookkeeping after a block is written (by consensus or block sync)."""
        self._executed.clear()
        self._invalid.clear()
        self._prepared = None
        self.mempool.remove(executed.tx_ids)
        self.executor.prune_evidence(self.evidence_pool)
        self._last_commit_at = self.clock.monotonic_s()
        self.syncer.note_committed()
        self.last_commit_time_ms = executed.block.header.time_ms
        self.on_committed(executed)

    async def _after_commits(self) -> None:
        if self.network is not None:
            self.network.broadcast(FrameKind.STATUS, encode(PeerStatus(self.store.height, 0)))
        # Peers are ahead: no reason to wait for the block interval.
        await self._maybe_start_height(force=self.store.height + 1 <= self.backed_target)

    # -- peers -------------------------------------------------------------------------------------

    async def on_connect(self, link: Link) -> None:
        self.syncer.relinked(link.peer_key)
        link.send(FrameKind.STATUS, encode(PeerStatus(self.store.height, self.core.round)))

    def _validate_committed_height_message(self, message: Proposal | Vote) -> None:
        """`PeerError` unless `message` (for a height committed here) is signed by a validator of
        its height: honest peers relay only messages they checked."""
        signer = message.proposer if isinstance(message, Proposal) else message.validator
        if message.chain_id != self.genesis.chain_id or signer not in self.executor.get_members(
            message.height
        ):
            raise PeerError(f"a consensus message for height {message.height} from a non-validator")
        if not self._verify(signer, message.signing_bytes(), message.signature):
            raise PeerError(f"a consensus message for height {message.height} with a bad signature")

    async def on_frame(self, link: Link, kind: int, payload: bytes) -> None:
        """Decode a peer's frame and hand it on; raising `CodecError`/`PeerError` drops the peer."""
        peer = link.peer_key
        if kind in (FrameKind.PROPOSAL, FrameKind.VOTE):
            message: Proposal | Vote = (
                decode(Proposal, payload, max_bytes=BLOCK_BYTES_MAX + 4096)
                if kind == FrameKind.PROPOSAL
                else decode(Vote, payload, max_bytes=CONSENSUS_MESSAGE_BYTES_MAX)
            )
            if message.height <= self.store.height:
                # Committed here: what it costs us is an answer with a whole block, so the
                # signature is checked first (a forgery drops the peer, before any block is read).
                self._validate_committed_height_message(message)
            if self.syncing:
                # Block sync brings us there; queueing proposals (whole blocks) for the core
                # meanwhile would only fill memory. The height still tells what the peer has.
                if message.height > self.store.height + 1:
                    self.syncer.note_height(peer, message.height - 1)
                return
            self._post(_Message(message, peer, self.clock.wall_ms()))
        elif kind == FrameKind.TXS:
            await self._on_gossip(decode(TxBatch, payload, max_bytes=FRAME_BYTES_MAX).txs)
        elif kind == FrameKind.STATUS:
            status = decode(PeerStatus, payload, max_bytes=64)
            self.syncer.on_status(peer, status.height)
            if status.height > self.store.height and self.sync_lag >= FAR_BEHIND_BLOCKS:
                self._post(_Wake())  # let the consensus task switch to sync mode
        elif kind == FrameKind.GET_BLOCKS:
            await self.syncer.on_get_blocks(peer, payload)
        elif kind == FrameKind.BLOCKS:
            if self.syncer.on_blocks(peer, payload):
                self._post(_SyncReady())
        else:
            raise PeerError(f"unexpected frame kind {kind}")

    async def _on_gossip(self, raws: tuple[bytes, ...]) -> None:
        # Txs we already hold or committed are skipped before any decoding or verification.
        fresh = [
            raw
            for raw in raws
            if (tx_id := compute_tx_id(raw)) not in self.mempool and not self.store.has_tx(tx_id)
        ]
        if not fresh:
            return
        outcomes = await self._offload(
            check_batch,
            fresh,
            chain_id=self.genesis.chain_id,
            now_ms=self.clock.wall_ms(),
            verified_ids=self._verified,
        )
        result = self.admission.admit_gossip(outcomes)
        if result.admitted:
            self.notify_txs()

    def gossip_txs(self, raws: list[bytes]) -> None:
        """Send newly admitted txs to every peer, coalesced: what is admitted within
        `GOSSIP_COALESCE_S` goes in one frame (a full frame at once), so that many small
        submissions cost each peer one decode and one check of a batch, not one per submission."""
        if self.network is None or not raws:
            return
        self._gossip_pending.extend(raws)
        if len(self._gossip_pending) >= GOSSIP_TXS_MAX:
            self._flush_gossip()
        elif self._gossip_handle is None:
            self._gossip_handle = self.clock.call_later(GOSSIP_COALESCE_S, self._flush_gossip)

    def _flush_gossip(self) -> None:
        if self._gossip_handle is not None:
            self._gossip_handle.cancel()
            self._gossip_handle = None
        pending, self._gossip_pending = self._gossip_pending, []
        if self.network is None:
            return
        for start in range(0, len(pending), GOSSIP_TXS_MAX):
            self.network.broadcast(
                FrameKind.TXS, encode(TxBatch(tuple(pending[start : start + GOSSIP_TXS_MAX])))
            )
