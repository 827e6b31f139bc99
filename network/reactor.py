"""The consensus reactor: runs the sans-I/O `ConsensusCore` against peers, the store and the clock.

One task owns the core, the store's writes and the mempool's removals; peer handlers only decode,
check the shape and enqueue (bounded). The reactor is also the core's `ConsensusDriver`: it builds
proposals from the mempool and validates (and pre-executes, off the event loop) proposed blocks.

Heights start on demand: after a commit, the next height begins once the block interval has passed
and the mempool holds a transaction, or at once when a peer already works on it, so an idle
network commits no empty blocks.

Block sync (DESIGN.md §3): a node that learns of higher heights (peer status, or messages from
the future) downloads ranges of blocks with their certificates from several peers at once
(`BlockSync` decides which heights to ask whom), while it verifies and applies the ranges already
received: each block by its certificate, tx root and header link rather than every tx signature,
its txs re-executed and the state root checked against the next header, each written with one
synced batch. A node `FAR_BEHIND_BLOCKS` or more behind (as f+1 validators claim, so one liar
cannot do it) leaves consensus for sync mode and rejoins once caught up; a peer that serves a
bad block is dropped and its heights are asked of others. A consensus message of a height this
node has committed gets the block pushed to the link it came from (once per height), never to its
signer: a relayed vote must not turn into blocks sent to a validator that did not ask.

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
import logging
import time
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
    PeerBehind,
    PersistLastSigned,
    PersistLock,
    RecordEvidence,
    ScheduleTimeout,
    Timeout,
)
from medledger.chain.errors import (
    ChainError,
    CodecError,
    InvalidBlockError,
    InvalidTxError,
    StateDivergedError,
)
from medledger.chain.evidence import Evidence, EvidencePool
from medledger.chain.execution import ExecutedBlock, build_block, execute_block
from medledger.chain.governance import GovernedApp, encode_evidence_tx
from medledger.chain.limits import BLOCK_BYTES_MAX, CONSENSUS_MESSAGE_BYTES_MAX
from medledger.chain.mempool import Mempool
from medledger.chain.store import BlockStore
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import (
    Block,
    Commit,
    Genesis,
    Proposal,
    Tx,
    TxId,
    ValidatorSet,
    Vote,
    compute_tx_id,
)
from medledger.chain.validation import (
    CheckedTx,
    decode_tx,
    validate_block_shape,
    validate_commit,
    validate_header_link,
    validate_tx_envelope,
)
from medledger.crypto import Identity, verify_signature
from medledger.network.blocksync import BlockSync, SyncedBlock
from medledger.network.messages import (
    FRAME_BYTES_MAX,
    GOSSIP_TXS_MAX,
    SYNC_BLOCKS_MAX,
    BlockRange,
    BlockRequest,
    CommittedBlock,
    FrameKind,
    PeerStatus,
    TxBatch,
)
from medledger.network.peers import PeerError, PeerLink, PeerNetwork

log = logging.getLogger("medledger.consensus")


class ForkDetectedError(ChainError):
    """Two different blocks certified at one height: more than f validators are faulty. Halt."""

    code = "fork_detected"


#: Most events waiting for the consensus task; a flood from peers is shed, not buffered.
INBOX_EVENTS_MAX: Final = 20_000
#: Tx ids remembered as signature-checked outside the mempool (proposals that arrived first).
VERIFIED_IDS_MAX: Final = 200_000
#: Bytes of blocks in one sync response (below the frame limit).
SYNC_RESPONSE_BYTES_MAX: Final = FRAME_BYTES_MAX // 2
#: How often block sync re-plans (expired requests, peers that came back) while behind.
SYNC_TICK_S: Final = 1.0
#: Block requests (and pushes of committed blocks to a lagging peer) one peer gets answered: a
#: sustained rate and a burst. An honest syncing peer keeps one range outstanding per peer.
BLOCK_REQUESTS_PER_S: Final = 10.0
BLOCK_REQUESTS_BURST: Final = 20
#: A peer with more than this queued for it (unsent) gets no further blocks until it drains.
BLOCK_ANSWER_BACKLOG_BYTES_MAX: Final = SYNC_RESPONSE_BYTES_MAX
#: A node this many heights behind its peers leaves consensus for sync mode. One behind is normal
#: (the commit is on its way); two means it missed a decision and must catch up first.
FAR_BEHIND_BLOCKS: Final = 2


@dataclasses.dataclass(frozen=True, slots=True)
class SyncProgress:
    """Where a block sync session stands (reported after every applied run, and once done)."""

    height: int
    target: int
    start_height: int
    blocks: int
    txs: int
    elapsed_s: float
    done: bool


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


class _TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` saved up."""

    __slots__ = ("_at", "_tokens", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> bool:
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


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
        clock_ms: Callable[[], int],
        on_committed: Callable[[ExecutedBlock], None],
        on_sync_progress: Callable[[SyncProgress], None] | None = None,
    ) -> None:
        self.store = store
        self.app = app
        self.mempool = mempool
        self.admission = admission
        self.identity = identity
        self.genesis = genesis
        self.genesis_validators: ValidatorSet = genesis.validators
        self.block_interval_s = block_interval_ms / 1000
        self.max_block_txs = max_block_txs
        self.max_block_bytes = max_block_bytes
        self.clock_ms = clock_ms
        self.on_committed = on_committed
        self.on_sync_progress = on_sync_progress
        self.network: PeerNetwork | None = None
        self.core = ConsensusCore(
            chain_id=genesis.chain_id,
            identity=identity,
            driver=self,
            last_signed=store.load_last_signed(),
            lock=store.load_lock(),
        )
        self._inbox: asyncio.Queue[Event] = asyncio.Queue(maxsize=INBOX_EVENTS_MAX)
        self._executed: dict[bytes, ExecutedBlock] = {}
        self._invalid: set[bytes] = set()
        self._verified: OrderedDict[bytes, None] = OrderedDict()
        self.sync = BlockSync(response_bytes_max=SYNC_RESPONSE_BYTES_MAX)
        self.syncing = False
        #: The current sync session: (started at, start height, txs applied).
        self._sync_session: tuple[float, int, int] | None = None
        self._last_commit_at = 0.0
        self._height_started_at = 0.0
        self._wake_handle: asyncio.TimerHandle | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self.last_commit_time_ms = store.last_block_time_ms
        #: Every equivocation the core reported (for operators and tests).
        self.evidence: list[Evidence] = []
        self.evidence_pool = EvidencePool()
        self._block_request_budget: dict[bytes, _TokenBucket] = {}
        #: Block requests not answered because the asker exceeded its budget.
        self.block_requests_refused = 0

    # -- life cycle --------------------------------------------------------------------------------

    def attach(self, network: PeerNetwork) -> None:
        self.network = network

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="consensus")
        self._sync_tick()

    def _sync_tick(self) -> None:
        """While behind, re-plan: expired requests go to other peers, rested peers are asked again."""
        if self.sync.target > self.store.height:
            self._plan_sync()
            self._post(_SyncReady())
        self._tick_handle = asyncio.get_running_loop().call_later(SYNC_TICK_S, self._sync_tick)

    async def stop(self) -> None:
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

    def validators_for(self, height: int) -> ValidatorSet:
        """The set governing `height`, from committed state (known up to the next height + 1)."""
        if isinstance(self.app, GovernedApp):
            return self.app.get_validators(self.store, height)
        return self.genesis_validators

    @property
    def validators(self) -> ValidatorSet:
        """The set of the height in progress."""
        return self.validators_for(self.store.height + 1)

    def is_known_validator(self, key: bytes) -> bool:
        """A member of the genesis set, the current set or the next (peer membership)."""
        height = self.store.height + 1
        return any(
            v.contains(key)
            for v in (self.genesis_validators, self.validators_for(height), self.validators_for(height + 1))
        )

    @property
    def is_validator(self) -> bool:
        return self.validators.contains(self.identity.public.sign_key)

    @property
    def backed_target(self) -> int:
        """The highest height that f+1 validators claim, so at least one honest one: a single
        peer's claim (unsigned status, a forged future vote) cannot take us out of consensus."""
        validators = self.validators
        claims = sorted(
            (height for peer, height in self.sync.peer_heights.items() if validators.contains(peer)),
            reverse=True,
        )
        needed = (len(validators) - 1) // 3 + 1  # f + 1
        return claims[needed - 1] if len(claims) >= needed else 0

    @property
    def sync_lag(self) -> int:
        return max(0, self.backed_target - self.store.height)

    def _update_mode(self) -> bool:
        """Enter sync mode when far behind, leave it when caught up; True while syncing."""
        lag = self.sync_lag
        if not self.syncing and lag >= FAR_BEHIND_BLOCKS:
            self.syncing = True
            self._sync_session = (time.monotonic(), self.store.height, 0)
            log.info(
                "%d blocks behind (height %d, peers at %d): block sync",
                lag,
                self.store.height,
                self.store.height + lag,
            )
        elif self.syncing and lag < FAR_BEHIND_BLOCKS:
            self.syncing = False
            self._report_sync_progress(done=True)
            self._sync_session = None
            log.info("caught up at height %d: taking part in consensus", self.store.height)
        return self.syncing

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
        self._last_commit_at = self._height_started_at = time.monotonic()
        await self._maybe_start_height(force=False)
        while True:
            event = await self._inbox.get()
            if isinstance(event, _Message):
                await self._on_message(event)
            elif isinstance(event, Timeout):
                if not self._core_is_stale():
                    await self._execute(self.core.on_timeout(event))
            elif isinstance(event, _SyncReady):
                await self._apply_synced()
            else:
                await self._maybe_start_height(force=False)

    def _next_height(self) -> int:
        return self.store.height + 1

    def _height_started(self) -> bool:
        return self.core.height == self._next_height()

    async def _maybe_start_height(self, *, force: bool) -> None:
        if self._update_mode() or self._height_started():
            return
        if not force:
            if len(self.mempool) == 0:
                return
            wait_s = self._last_commit_at + self.block_interval_s - time.monotonic()
            if wait_s > 0:
                if self._wake_handle is None:
                    self._wake_handle = asyncio.get_running_loop().call_later(wait_s, self._wake)
                return
        self._height_started_at = time.monotonic()
        height = self._next_height()
        await self._execute(self.core.start_height(height, self.validators_for(height)))

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
                self._send_blocks(event.peer, message.height, message.height)
                return
            if self._core_is_stale():
                return
        if message.height > next_height and event.peer is not None:
            self._request_sync(event.peer, message.height - 1)
        if self._update_mode():
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
        if rejection is not None and "signature" in rejection and event.peer is not None:
            # Every consensus message is signed by its author: a forged one marks the relaying
            # peer as faulty (honest peers check signatures before they relay).
            self._drop_peer(event.peer, f"sent a consensus message with {rejection}")
        await self._execute(actions, source=event.peer)

    def _drop_peer(self, peer: bytes, why: str) -> None:
        if self.network is not None and (link := self.network.links.get(peer)) is not None:
            self.network.drop(link, why)
        self.sync.remove_peer(peer)

    async def _execute(self, actions: list[Action], *, source: bytes | None = None) -> None:
        """Carry out the core's actions in order (persist before broadcast).

        `source`: the peer whose message produced them. A message of a committed height shows
        that *its link* lags, not its signer: a relayed vote (or a proposer's proof of lock) is
        signed by others, and pushing the block to them would let any peer reflect whole blocks
        at validators that may be up to date. So the block goes to the source, once per height.
        """
        behind: set[tuple[bytes, int]] = set()
        for action in actions:
            if isinstance(action, PersistLastSigned):
                await asyncio.to_thread(self.store.save_last_signed, action.last)
            elif isinstance(action, PersistLock):
                await asyncio.to_thread(self.store.save_lock, action.lock)
            elif isinstance(action, Broadcast):
                self._broadcast(action.message)
            elif isinstance(action, ScheduleTimeout):
                timeout = action.timeout
                asyncio.get_running_loop().call_later(action.delay_ms / 1000, self._post, timeout)
            elif isinstance(action, CommitBlock):
                await self._commit(action.block, action.commit, verified=True)
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
                    self._send_blocks(target[0], action.height, action.height)

    def _broadcast(self, message: Proposal | Vote) -> None:
        if self.network is not None:
            kind = FrameKind.PROPOSAL if isinstance(message, Proposal) else FrameKind.VOTE
            self.network.broadcast(kind, encode(message))

    # -- the driver --------------------------------------------------------------------------------

    def get_block_to_propose(self, height: int, round_: int) -> Block:
        evidence_txs = self._file_evidence()
        txs = evidence_txs + self.mempool.reap(
            max_txs=max(0, self.max_block_txs - len(evidence_txs)),
            max_bytes=max(0, self.max_block_bytes - sum(len(c.raw) for c in evidence_txs)),
        )
        block = build_block(
            store=self.store,
            validators=self.validators_for(height),
            next_validators=self.validators_for(height + 1),
            proposer=self.identity.public.sign_key,
            round_=round_,
            time_ms=self.clock_ms(),
            txs=txs,
        )
        executed = execute_block(
            self.app, self.store, block, tuple(c.tx for c in txs), [c.tx_id for c in txs]
        )
        self._executed[block.hash()] = executed
        return block

    def is_valid_block(self, block: Block) -> bool:
        block_hash = block.hash()
        if block_hash in self._executed:
            return True
        if block_hash in self._invalid:
            return False
        try:
            self._executed[block_hash] = self._validate_and_execute(block, verify_signatures=True)
        except (ChainError, InvalidTxError) as exc:
            log.warning("invalid block %d proposed: %s", block.header.height, exc)
            self._invalid.add(block_hash)
            return False
        return True

    async def _prevalidate(self, block: Block) -> None:
        """Validate and execute a proposed block in a worker thread, so the loop keeps serving."""
        block_hash = block.hash()
        if block_hash in self._executed or block_hash in self._invalid:
            return
        try:
            executed = await asyncio.to_thread(self._validate_and_execute, block, verify_signatures=True)
        except (ChainError, InvalidTxError) as exc:
            log.warning("invalid block %d proposed: %s", block.header.height, exc)
            self._invalid.add(block_hash)
        else:
            if block.header.height == self._next_height():
                self._executed[block_hash] = executed

    def _validate_and_execute(
        self, block: Block, *, verify_signatures: bool, certified: bool = False, raw: bytes | None = None
    ) -> ExecutedBlock:
        """Everything a block must satisfy to follow our chain, then its execution.

        `certified`: a quorum's certificate vouches for the block (checked by the caller), so at
        least one honest validator checked every tx in it: signatures and replays are not checked
        again (the header link and, with the next block, the state root still are).
        """
        header = block.header
        block_tx_ids = validate_block_shape(block, chain_id=self.genesis.chain_id)
        validators = self.validators_for(self.store.height + 1)
        validate_header_link(
            header,
            parent_hash=self.store.last_block_hash,
            parent_time_ms=self.store.last_block_time_ms,
            height=self.store.height + 1,
            state_root=self.store.state_root,
            validators_hash=validators.hash(),
        )
        if header.next_validators_hash != self.validators_for(header.height + 1).hash():
            raise InvalidBlockError(f"block {header.height}: unexpected next validator set")
        if header.proposer != validators.get_proposer(header.height, header.round).sign_key:
            raise InvalidBlockError(f"block {header.height}: not proposed by the round's proposer")
        txs: list[Tx] = []
        tx_ids: list[TxId] = []
        seen: set[bytes] = set()
        newly_verified: list[bytes] = []
        has_tx = self.store.has_tx
        for tx_raw, tx_id in zip(block.txs, block_tx_ids, strict=True):
            if tx_id in seen or (not certified and has_tx(tx_id)):
                raise InvalidBlockError(f"block {header.height}: a transaction is repeated")
            seen.add(tx_id)
            # A tx our mempool admitted is decoded and verified already: each signature once.
            pending = self.mempool.get(tx_id)
            if pending is not None:
                tx = pending.tx
            else:
                tx, _ = decode_tx(tx_raw, tx_id=tx_id)
                if verify_signatures and not certified and tx_id not in self._verified:
                    validate_tx_envelope(tx, chain_id=self.genesis.chain_id)
                    newly_verified.append(tx_id)
            txs.append(tx)
            tx_ids.append(tx_id)
        self._remember_verified(newly_verified)
        return execute_block(self.app, self.store, block, tuple(txs), tx_ids, raw=raw)

    def _remember_verified(self, tx_ids: list[bytes]) -> None:
        """Bounded memory of ids whose signatures were checked outside the mempool."""
        verified = self._verified
        for tx_id in tx_ids:
            verified[tx_id] = None
        while len(verified) > VERIFIED_IDS_MAX:
            verified.popitem(last=False)

    # -- committing ------------------------------------------------------------------------------

    async def _commit(self, block: Block, commit: Commit, *, verified: bool) -> None:
        block_hash = block.hash()
        if block.header.height <= self.store.height:
            # Decided by the core after block sync already committed this height.
            stored = self.store.get_block(block.header.height)
            if stored is None or stored.hash() != block_hash:
                raise ForkDetectedError(
                    f"height {block.header.height}: a quorum certified a block that differs from ours"
                )
            return
        executed = self._executed.get(block_hash)
        if executed is None:
            self._check_state_agrees(block)  # a quorum decided it, so it is the network's chain
            # Learned with its certificate (sync, or a decision before we saw the proposal): the
            # certificate vouches for the txs, the header link and state root are still checked.
            executed = await asyncio.to_thread(
                self._validate_and_execute, block, verify_signatures=False, certified=True
            )
        if not verified:
            validate_commit(
                commit,
                chain_id=self.genesis.chain_id,
                validators=self.validators_for(block.header.height),
                block_hash=block_hash,
                height=block.header.height,
            )
        await asyncio.to_thread(
            self.store.save_block, executed.block, executed.raw, commit, executed.tx_ids, executed.execution
        )
        self._committed(executed)
        log.info(
            "committed block %d: %d txs, round %d, %.0f ms after the height started%s",
            block.header.height,
            len(block.txs),
            commit.round,
            (self._last_commit_at - self._height_started_at) * 1000,
            "" if verified else " (with its certificate)",
        )
        await self._after_commits()

    def _committed(self, executed: ExecutedBlock) -> None:
        """Bookkeeping after a block is written (by consensus or block sync)."""
        self._executed.clear()
        self._invalid.clear()
        self.mempool.remove(executed.tx_ids)
        if len(self.evidence_pool) and isinstance(self.app, GovernedApp):
            self.evidence_pool.prune(lambda slot: GovernedApp.is_evidence_recorded(self.store, slot))
        self._last_commit_at = time.monotonic()
        self.last_commit_time_ms = executed.block.header.time_ms
        self.on_committed(executed)

    async def _after_commits(self) -> None:
        if self.network is not None:
            self.network.broadcast(FrameKind.STATUS, encode(PeerStatus(self.store.height, 0)))
        if self.store.height + 1 <= self.backed_target:
            await self._maybe_start_height(force=True)  # peers are ahead: no reason to wait
        else:
            await self._maybe_start_height(force=False)

    # -- block sync --------------------------------------------------------------------------------

    async def _apply_synced(self) -> None:
        """Verify and apply the downloaded blocks that follow our tip, one run (one write) at a time."""
        applied_any = False
        while run := self.sync.take_ready(self.store.height):
            started = time.monotonic()
            try:
                applied, failure = await asyncio.to_thread(self._apply_run, run)
            finally:
                self.sync.done_applying()
            for executed in applied:
                self._committed(executed)
            if applied:
                applied_any = True
                log.debug(
                    "applied blocks %d..%d from sync: %d txs in %.0f ms (%d blocks buffered, %d asked)",
                    applied[0].block.header.height,
                    self.store.height,
                    sum(len(e.tx_ids) for e in applied),
                    (time.monotonic() - started) * 1000,
                    self.sync.buffered_blocks,
                    len(self.sync.outstanding),
                )
                if self._sync_session is not None:
                    started, start_height, txs = self._sync_session
                    self._sync_session = (started, start_height, txs + sum(len(e.tx_ids) for e in applied))
                self._report_sync_progress(done=False)
            if failure is not None:
                peer, why = failure
                log.warning("peer %s served an invalid block: %s", peer.hex()[:12], why)
                self._drop_peer(peer, f"invalid block in sync: {why}")
            self._plan_sync()
        if applied_any:
            await self._after_commits()

    def _apply_run(self, run: list[SyncedBlock]) -> tuple[list[ExecutedBlock], tuple[bytes, str] | None]:
        """In a worker thread: verify and write `run`, block by block; blocks before a failing one
        stay applied."""
        applied: list[ExecutedBlock] = []
        for item in run:
            block = item.block
            height = block.header.height
            try:
                if height != self.store.height + 1:
                    raise InvalidBlockError(f"expected height {self.store.height + 1}, got {height}")
                validate_commit(
                    item.commit,
                    chain_id=self.genesis.chain_id,
                    validators=self.validators_for(height),
                    block_hash=block.hash(),
                    height=height,
                )
                self._check_state_agrees(block)
                executed = self._validate_and_execute(
                    block, verify_signatures=False, certified=True, raw=item.raw
                )
            except StateDivergedError:
                raise
            except (ChainError, InvalidTxError) as exc:
                return applied, (item.peer, str(exc))
            # Each block synced: LevelDB switches log files without syncing the old one, so
            # unsynced blocks before a synced one could be lost to a power cut, leaving a hole.
            self.store.save_block(block, item.raw, item.commit, executed.tx_ids, executed.execution)
            applied.append(executed)
        return applied, None

    def _check_state_agrees(self, block: Block) -> None:
        """`block` is certified and extends our tip: a state root other than ours means our state
        (not the block) is wrong, e.g. a store damaged where the start check cannot see."""
        header, store = block.header, self.store
        if header.height != store.height + 1:
            return
        if header.parent_hash != store.last_block_hash:
            raise StateDivergedError(
                f"a block the network certified at height {header.height} follows another block "
                f"{store.height} than this node's"
            )
        if header.state_root != store.state_root:
            raise StateDivergedError(
                f"this node's state after height {store.height} differs from the state the network "
                f"certified (root {store.state_root.hex()[:16]}…, the network's "
                f"{header.state_root.hex()[:16]}…)"
            )

    def _report_sync_progress(self, *, done: bool) -> None:
        if self._sync_session is None or self.on_sync_progress is None:
            return
        started, start_height, txs = self._sync_session
        progress = SyncProgress(
            height=self.store.height,
            target=max(self.backed_target, self.store.height),
            start_height=start_height,
            blocks=self.store.height - start_height,
            txs=txs,
            elapsed_s=time.monotonic() - started,
            done=done,
        )
        self.on_sync_progress(progress)  # the node's hook; it keeps a failing display from us

    def _plan_sync(self) -> None:
        """Send the range requests block sync wants now (to peers still linked)."""
        if self.network is None:
            return
        links = self.network.links
        for peer in [p for p in self.sync.peer_heights if p not in links]:
            self.sync.remove_peer(peer)
        timed_out = self.sync.requests_timed_out
        planned = self.sync.plan(self.store.height, time.monotonic())
        if self.sync.requests_timed_out > timed_out:
            log.warning(
                "block sync: %d range request(s) unanswered for %.0f s; asking other peers",
                self.sync.requests_timed_out - timed_out,
                self.sync.request_timeout_s,
            )
        for request in planned:
            payload = encode(BlockRequest(request.first, request.last))
            if not self.network.send(request.peer, FrameKind.GET_BLOCKS, payload):
                self.sync.cancel(request)

    # -- peers -------------------------------------------------------------------------------------

    async def on_connect(self, link: PeerLink) -> None:
        # Two nodes that dial each other keep one of the two links: a range request sent on the
        # one closed may be lost, so it is asked again rather than waited for.
        self.sync.relinked(link.peer_key)
        link.send(FrameKind.STATUS, encode(PeerStatus(self.store.height, self.core.round)))

    def _request_sync(self, peer: bytes, peer_height: int) -> None:
        """`peer` has `peer_height` (it said so, or works on the next): fetch what we lack."""
        self.sync.note_height(peer, peer_height)
        if peer_height > self.store.height:
            self._plan_sync()

    def _may_serve_blocks(self, peer: bytes) -> bool:
        """Whether to read blocks for `peer` now: it is linked, has drained what it was sent
        before, and stays within its rate of block requests (a slow or greedy reader must not
        turn our disk and memory into its buffer)."""
        link = self.network.links.get(peer) if self.network is not None else None
        if link is None or link.queued_bytes > BLOCK_ANSWER_BACKLOG_BYTES_MAX:
            return False
        bucket = self._block_request_budget.get(peer)
        if bucket is None:
            bucket = self._block_request_budget[peer] = _TokenBucket(
                BLOCK_REQUESTS_PER_S, BLOCK_REQUESTS_BURST, time.monotonic()
            )
        return bucket.take(time.monotonic())

    def _send_blocks(self, peer: bytes, start: int, end: int) -> None:
        """Push committed blocks `start`..`end` to a peer that lags (as many as fit one response)."""
        if not self._may_serve_blocks(peer):
            return
        items = self._read_blocks(start, end)
        if items and self.network is not None:
            self.network.send(peer, FrameKind.BLOCKS, encode(BlockRange(items)))

    async def _answer_blocks(self, peer: bytes, start: int, end: int) -> None:
        """Answer a range request, read and encoded off the event loop (up to 16 MB); even with
        no block, so the asker turns to other peers at once. A request over the peer's budget is
        not answered (the asker's request times out and it asks others)."""
        if not self._may_serve_blocks(peer):
            self.block_requests_refused += 1
            return
        payload = await asyncio.to_thread(lambda: encode(BlockRange(self._read_blocks(start, end))))
        if self.network is not None:
            self.network.send(peer, FrameKind.BLOCKS, payload)

    def _read_blocks(self, start: int, end: int) -> tuple[CommittedBlock, ...]:
        items: list[CommittedBlock] = []
        size = 0
        for height in range(start, min(end, self.store.height, start + SYNC_BLOCKS_MAX - 1) + 1):
            raw = self.store.get_block_raw(height)
            commit = self.store.get_commit(height)
            if raw is None or commit is None:
                break
            size += len(raw)
            if items and size > SYNC_RESPONSE_BYTES_MAX:
                break
            items.append(CommittedBlock(raw, encode(commit)))
        return tuple(items)

    def _validate_committed_height_message(self, message: Proposal | Vote) -> None:
        """`PeerError` unless `message` (for a height committed here) is signed by a validator of
        its height: honest peers relay only messages they checked."""
        signer = message.proposer if isinstance(message, Proposal) else message.validator
        if message.chain_id != self.genesis.chain_id or not self.validators_for(message.height).contains(
            signer
        ):
            raise PeerError(f"a consensus message for height {message.height} from a non-validator")
        if not verify_signature(signer, message.signing_bytes(), message.signature):
            raise PeerError(f"a consensus message for height {message.height} with a bad signature")

    async def on_frame(self, link: PeerLink, kind: int, payload: bytes) -> None:
        """Decode a peer's frame and hand it on; raising `CodecError`/`PeerError` drops the peer."""
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
                    self._request_sync(link.peer_key, message.height - 1)
                return
            self._post(_Message(message, link.peer_key, self.clock_ms()))
        elif kind == FrameKind.TXS:
            await self._on_gossip(decode(TxBatch, payload, max_bytes=FRAME_BYTES_MAX).txs)
        elif kind == FrameKind.STATUS:
            status = decode(PeerStatus, payload, max_bytes=64)
            self.sync.set_height(link.peer_key, status.height)
            if status.height > self.store.height:
                self._plan_sync()
                if self.sync_lag >= FAR_BEHIND_BLOCKS:
                    self._post(_Wake())  # let the consensus task switch to sync mode
        elif kind == FrameKind.GET_BLOCKS:
            request = decode(BlockRequest, payload, max_bytes=64)
            if request.to_height < request.from_height:
                raise PeerError("empty block range requested")
            await self._answer_blocks(link.peer_key, request.from_height, request.to_height)
        elif kind == FrameKind.BLOCKS:
            blocks = decode(BlockRange, payload, max_bytes=FRAME_BYTES_MAX).blocks
            peer = link.peer_key
            try:
                decoded = [
                    SyncedBlock(
                        decode(Block, item.block, max_bytes=BLOCK_BYTES_MAX),
                        item.block,
                        decode(Commit, item.commit, max_bytes=CONSENSUS_MESSAGE_BYTES_MAX),
                        peer,
                    )
                    for item in blocks
                ]
            except CodecError as exc:
                raise PeerError(f"malformed block in a sync response: {exc.message}") from None
            if self.sync.on_blocks(peer, decoded, self.store.height, time.monotonic()):
                self._post(_SyncReady())
            self._plan_sync()
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
        outcomes = await asyncio.to_thread(
            check_batch,
            fresh,
            chain_id=self.genesis.chain_id,
            now_ms=self.clock_ms(),
            verified_ids=self._verified,
        )
        result = self.admission.admit_gossip(outcomes)
        if result.admitted:
            self.notify_txs()

    def _file_evidence(self) -> list[CheckedTx]:
        """The pending evidence as txs signed by this node, for the block it proposes.

        Evidence the ledger would refuse (recorded meanwhile, or about a signer the set at its
        height no longer shows) leaves the pool rather than wasting a slot in every block.
        """
        app = self.app
        if not isinstance(app, GovernedApp):
            return []
        chain_id = self.genesis.chain_id
        filed: list[CheckedTx] = []
        for evidence in self.evidence_pool.get_pending():
            try:
                app.validate_new_evidence(self.store, evidence, chain_id=chain_id)
            except InvalidTxError:
                self.evidence_pool.remove(evidence)
                continue
            kind, body = encode_evidence_tx(evidence)
            tx, raw, tx_id = sign_tx(
                self.identity, chain_id=chain_id, kind=kind, body=body, timestamp_ms=self.clock_ms()
            )
            filed.append(CheckedTx(tx, raw, tx_id))
        return filed

    def gossip_txs(self, raws: list[bytes]) -> None:
        """Send newly admitted txs to every peer, in batches."""
        if self.network is None:
            return
        for start in range(0, len(raws), GOSSIP_TXS_MAX):
            self.network.broadcast(
                FrameKind.TXS, encode(TxBatch(tuple(raws[start : start + GOSSIP_TXS_MAX])))
            )
