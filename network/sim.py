"""A deterministic simulator of a validator network: real consensus cores, virtual time, one seed.

Each node runs a real `ConsensusCore` over a real `BlockStore` on an in-memory database (`MemDB`)
and a real application, and acts as the core's driver exactly as the node will: it builds and
validates blocks, persists what the core asks before it sends, saves committed blocks, answers
`PeerBehind` with the committed block and certificate. Everything else is simulated in one event
loop over a heap of (virtual time, sequence) events, with every random choice drawn from one
`random.Random(seed)`:

* the network: per-message delay, loss, duplication and reordering; symmetric partitions (a group
  cut off from the rest) and one-way ones (a group's messages to the rest are lost);
* crashes and restarts that lose every unsynced write (`MemDB.crash`), including crashes in the
  middle of executing one batch of the core's actions;
* Byzantine "twins": a second node holding a validator's key, so that key proposes and votes for
  different blocks (Bano et al., "Twins: BFT Systems Made Robust", 2020);
* Byzantine proposers that stamp their blocks with a skewed time (`TimeSkew`: far in the future
  or past, just outside or just inside the PBTS bounds), usually the twins themselves;
* honest clocks that are off by up to `clock_offset_ms_max` either way (each node's local time,
  which it passes to its core with every proposal, is the virtual time plus its offset);
* clients that inject signed transactions at random nodes.

An `InvariantChecker` checks, at every event that could break them: no two correct nodes commit
different blocks at one height; every commit certificate is valid (`validate_commit`); no correct
validator signs two different votes or proposals at one (height, round, step), and no correct node
accuses a correct one of equivocating; committed heights never go back, not even across a crash;
correct nodes at one height have one state root; no correct node rejects a correct node's message;
every committed block time is after its parent's and within the PBTS bounds of honest clocks
(never ahead of the virtual time by more than PRECISION plus the clock offset, never behind the
moment a correct node first saw the block by more than MSGDELAY + PRECISION plus the offset);
evidence reaches the ledger (a block filed by its proposer) once per offence, never about a
correct validator.
Liveness: once every fault has healed (the global stabilisation time, GST), every correct node must
commit new blocks within `liveness_bound_ms` of virtual time.

A run is a pure function of its `SimConfig` (the seed and the fault plan), so a failure reports the
config and replays exactly: `run_simulation(config)`. Wall-clock time, object ids, hash-ordered sets
and OS randomness never influence a run: keys are derived from the seed, and nothing iterates a set.

This module imports only `medledger.chain`, `medledger.crypto` and `medledger.errors`; the
application (and the transactions clients send) are passed in, since apps live in higher layers.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import heapq
import multiprocessing
import random
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from typing import Any, Final

from medledger.chain.app import App
from medledger.chain.codec import encode_primitive
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
    ScheduleTimeout,
    SynchronyParams,
)
from medledger.chain.errors import InvalidBlockError, InvalidCommitError, InvalidTxError
from medledger.chain.evidence import (
    DuplicateVoteEvidence,
    Evidence,
    EvidencePool,
    is_conflicting_proposals,
    is_conflicting_votes,
)
from medledger.chain.execution import ExecutedBlock, build_block, execute_block
from medledger.chain.governance import GovernedApp, decode_evidence_tx, encode_evidence_tx
from medledger.chain.limits import UINT_MAX
from medledger.chain.memdb import MemDB
from medledger.chain.store import BlockStore
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import (
    Block,
    BlockHash,
    Commit,
    Genesis,
    Header,
    Proposal,
    Tx,
    TxId,
    Validator,
    ValidatorSet,
    Vote,
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

# -- limits and defaults ---------------------------------------------------------------------

#: Blocks one catch-up message carries at most.
CATCHUP_BLOCKS_MAX: Final = 8
#: Catch-up blocks a node keeps for heights it has not reached yet.
CATCHUP_PENDING_MAX: Final = 64
#: How long a node waits after `PeerBehind` before sending the blocks (the peer may catch up alone).
CATCHUP_DELAY_MS: Final = 50
#: Transactions a simulated block carries at most.
SIM_BLOCK_TXS_MAX: Final = 16
#: Pending transactions a simulated node keeps at most.
SIM_MEMPOOL_TXS_MAX: Final = 256
#: Timeouts scaled to the simulated network (a few to tens of milliseconds per hop).
SIM_TIMEOUTS: Final = ConsensusTimeouts(
    timeout_propose_ms_base=300,
    timeout_propose_ms_delta=100,
    timeout_propose_ms_max=1_500,
    timeout_prevote_ms_base=150,
    timeout_prevote_ms_delta=100,
    timeout_prevote_ms_max=1_000,
    timeout_precommit_ms_base=150,
    timeout_precommit_ms_delta=100,
    timeout_precommit_ms_max=1_000,
    rebroadcast_ms=400,
)

#: PBTS bounds scaled to the simulated network like the timeouts (delays of 2 to 20 ms a hop).
SIM_SYNCHRONY: Final = SynchronyParams(precision_ms=50, message_delay_ms=200)

CHAIN_ID: Final = "medledger-sim"


class TimeSkew(StrEnum):
    """How a Byzantine proposer stamps its blocks, relative to the virtual time `now`.

    "Just outside" is outside the bounds for every honest validator at round 0 (whatever its
    clock offset and the message delay), "just inside" inside for all of them.
    """

    FAR_FUTURE = "far_future"  # the largest time the wire carries
    FAR_PAST = "far_past"  # 0: at or before every parent
    OUTSIDE_FUTURE = "outside_future"
    OUTSIDE_PAST = "outside_past"
    INSIDE_FUTURE = "inside_future"
    INSIDE_PAST = "inside_past"

    def __repr__(self) -> str:
        """Python that rebuilds it (for a failing run's replay line)."""
        return f"TimeSkew.{self.name}"


class FaultKind(StrEnum):
    LOSS = "loss"  # each message is lost with probability `rate`
    DELAY = "delay"  # up to `extra_ms` more delay per message (reorders heavily)
    DUPLICATE = "duplicate"  # each message is delivered twice with probability `rate`
    PARTITION = "partition"  # `nodes` and the rest cannot talk to each other
    ONE_WAY = "one_way"  # messages from `nodes` to the rest are lost; the other way works
    CRASH = "crash"  # `nodes` crash at `start_ms` and restart at `end_ms`
    CRASH_MID = "crash_mid"  # like CRASH, but part-way through executing a batch of actions


@dataclasses.dataclass(frozen=True, slots=True)
class Fault:
    """One fault of a plan, active during [start_ms, end_ms) of virtual time."""

    kind: FaultKind
    start_ms: int
    end_ms: int
    nodes: tuple[int, ...] = ()
    rate: float = 0.0
    extra_ms: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.start_ms < self.end_ms:
            raise ValueError(f"fault {self.kind.value}: needs 0 <= start_ms < end_ms")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault {self.kind.value}: rate must lie in [0, 1]")

    def is_active(self, now_ms: int) -> bool:
        return self.start_ms <= now_ms < self.end_ms

    def __repr__(self) -> str:
        """Python that rebuilds this fault (a failing run's replay line is pasted into a test)."""
        parts = [f"FaultKind.{self.kind.name}", str(self.start_ms), str(self.end_ms)]
        if self.nodes:
            parts.append(f"nodes={self.nodes!r}")
        if self.rate:
            parts.append(f"rate={self.rate!r}")
        if self.extra_ms:
            parts.append(f"extra_ms={self.extra_ms}")
        return f"Fault({', '.join(parts)})"


TxFactory = Callable[[random.Random], tuple[str, bytes]]


@dataclasses.dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything a run depends on. Equal configs give identical runs."""

    n: int
    seed: int
    app_factory: Callable[[], App]
    make_tx: TxFactory
    faults: tuple[Fault, ...] = ()
    #: Validators (by index) that also run a Byzantine second copy with the same key.
    twins: tuple[int, ...] = ()
    #: Validators (by index) whose nodes (twins included) stamp their blocks with `time_skew`.
    skewed: tuple[int, ...] = ()
    time_skew: TimeSkew = TimeSkew.FAR_FUTURE
    #: Correct nodes' clocks are off by up to this either way (drawn from the seed).
    clock_offset_ms_max: int = 0
    synchrony: SynchronyParams = SIM_SYNCHRONY
    #: Heights every correct node must reach (beyond those committed before GST) for liveness.
    heights_after_gst: int = 3
    liveness_bound_ms: int = 20_000
    #: False when more than f validators are faulty or a fault never heals: only safety is checked.
    expect_liveness: bool = True
    delay_ms_min: int = 2
    delay_ms_max: int = 20
    #: The pause between committing a block and starting the next height (a node's block interval).
    block_interval_ms: int = 100
    client_tx_interval_ms: int = 40
    timeouts: ConsensusTimeouts = SIM_TIMEOUTS
    #: A run that processes more events than this fails (a message storm or a livelock).
    events_max: int = 2_000_000
    #: Stop here at the latest (virtual ms); needed when a fault never heals.
    stop_ms: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("a simulation needs at least one validator")
        if any(not 0 <= i < self.n for i in self.twins) or len(set(self.twins)) != len(self.twins):
            raise ValueError("twins must be distinct validator indices")
        if any(not 0 <= i < self.n for i in self.skewed) or len(set(self.skewed)) != len(self.skewed):
            raise ValueError("skewed must be distinct validator indices")
        if not 0 <= self.clock_offset_ms_max <= self.synchrony.precision_ms // 2:
            raise ValueError("honest clocks must stay within PRECISION of each other")
        nodes = self.n + len(self.twins)
        for fault in self.faults:
            if any(not 0 <= i < nodes for i in fault.nodes):
                raise ValueError(f"fault {fault.kind.value} names a node that does not exist")

    @property
    def gst_ms(self) -> int:
        """The global stabilisation time: when the last fault heals."""
        return max((f.end_ms for f in self.faults), default=0)

    def describe(self) -> str:
        """Python that rebuilds this config: every field that is not at its default."""
        parts = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name not in ("n", "seed") and value == field.default:
                continue
            if field.name in ("app_factory", "make_tx"):
                shown = f"{value.__module__}.{value.__qualname__}"
            else:
                shown = repr(value)
            parts.append(f"{field.name}={shown}")
        return f"SimConfig({', '.join(parts)})"


class InvariantViolation(AssertionError):
    """A safety or liveness property failed; the message says which and how to replay the run."""


@dataclasses.dataclass(frozen=True, slots=True)
class CatchUp:
    """Committed blocks and their certificates, sent to a peer that is behind."""

    blocks: tuple[tuple[Block, Commit], ...]


Message = Proposal | Vote | CatchUp


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


# -- shared caches (pure functions, so sharing them between nodes changes nothing) -------------


class _Caches:
    def __init__(self) -> None:
        self.signatures: dict[tuple[bytes, bytes, bytes], bool] = {}
        self.block_hashes: dict[Header, BlockHash] = {}
        self.txs: dict[bytes, tuple[Tx, TxId] | None] = {}
        self.certificates: dict[tuple[Commit, bytes], bool] = {}

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        key = (public_key, message, signature)
        ok = self.signatures.get(key)
        if ok is None:
            ok = self.signatures[key] = verify_signature(public_key, message, signature)
        return ok

    def block_hash(self, block: Block) -> BlockHash:
        """A block's hash; a frozen header hashes (as a dict key) much faster than it encodes."""
        block_hash = self.block_hashes.get(block.header)
        if block_hash is None:
            block_hash = self.block_hashes[block.header] = block.hash()
        return block_hash

    def decode_tx(self, raw: bytes) -> tuple[Tx, TxId] | None:
        if raw in self.txs:
            return self.txs[raw]
        try:
            tx, tx_id = decode_tx(raw)
            validate_tx_envelope(tx, chain_id=CHAIN_ID)
            result: tuple[Tx, TxId] | None = (tx, tx_id)
        except InvalidTxError:
            result = None
        self.txs[raw] = result
        return result


# -- a node: the core's driver ---------------------------------------------------------------


class SimNode:
    """One node: a consensus core, its store, its application and its mempool."""

    def __init__(
        self,
        node_id: int,
        identity: Identity,
        *,
        is_twin: bool,
        genesis: Genesis,
        config: SimConfig,
        caches: _Caches,
        time_skew_ms: int,
        clock_offset_ms: int = 0,
        skew: TimeSkew | None = None,
    ) -> None:
        self.id = node_id
        self.identity = identity
        self.key = identity.public.sign_key
        self.is_twin = is_twin
        self.genesis = genesis
        self.validators = genesis.validators
        self._validators_hash = genesis.validators.hash()
        self._config = config
        self._caches = caches
        self.time_skew_ms = time_skew_ms
        self.clock_offset_ms = clock_offset_ms
        self.skew = skew
        self.evidence_pool = EvidencePool()
        self.db = MemDB()
        self.up = False
        self.incarnation = 0
        self.crash_pending = False
        self.now_ms = 0
        self.peer_heights: dict[bytes, int] = {}
        self.pending_catchup: dict[int, tuple[Block, Commit]] = {}
        self.mempool: dict[bytes, CheckedTx] = {}
        self._executed: dict[bytes, ExecutedBlock | None] = {}
        self.app = GovernedApp(config.app_factory(), genesis.validators)
        self.store = BlockStore.open_memory(self.db, f"node{node_id}")
        self.store.init_genesis(genesis, self.app.init_state(genesis))
        self.core = self._new_core()

    def _new_core(self) -> ConsensusCore:
        return ConsensusCore(
            chain_id=self.genesis.chain_id,
            identity=self.identity,
            driver=self,
            last_signed=self.store.load_last_signed(),
            lock=self.store.load_lock(),
            timeouts=self._config.timeouts,
            synchrony=self._config.synchrony,
            verify=self._caches.verify,
        )

    def start(self) -> list[Action]:
        self.up = True
        self.incarnation += 1
        return self.core.start_height(self.store.height + 1, self.validators)

    def crash(self) -> None:
        self.db.crash()
        self.up = False
        self.crash_pending = False
        self.mempool.clear()
        self.pending_catchup.clear()
        self.peer_heights.clear()
        self._executed.clear()
        self.evidence_pool = EvidencePool()

    def restart(self) -> list[Action]:
        self.db.reopen()
        self.app = GovernedApp(self._config.app_factory(), self.genesis.validators)
        self.store = BlockStore.open_memory(self.db, f"node{self.id}")
        self.core = self._new_core()
        return self.start()

    # -- ConsensusDriver -------------------------------------------------------------------

    @property
    def clock_ms(self) -> int:
        """This node's local clock: the virtual time, off by its clock offset."""
        return max(0, self.now_ms + self.clock_offset_ms)

    def get_block_to_propose(self, height: int, round_: int) -> Block:
        assert height == self.store.height + 1, (height, self.store.height)
        txs = self._file_evidence(height, round_)
        for checked in self.mempool.values():
            if len(txs) >= SIM_BLOCK_TXS_MAX:
                break
            if not self.store.has_tx(checked.tx_id):
                txs.append(checked)
        block = build_block(
            store=self.store,
            validators=self.validators,
            proposer=self.key,
            round_=round_,
            time_ms=self.clock_ms + self.time_skew_ms,
            txs=txs,
        )
        if self.skew is None:
            return block
        skewed = dataclasses.replace(block.header, time_ms=self._skewed_time_ms())
        return Block(skewed, block.txs)

    def _skewed_time_ms(self) -> int:
        """A Byzantine proposer's block time (see `TimeSkew`); not kept after the parent's."""
        assert self.skew is not None
        config = self._config
        precision = config.synchrony.precision_ms
        delay = config.synchrony.compute_message_delay_ms(0)
        offset = config.clock_offset_ms_max
        now = self.now_ms
        times = {
            TimeSkew.FAR_FUTURE: UINT_MAX,
            TimeSkew.FAR_PAST: 0,
            TimeSkew.OUTSIDE_FUTURE: now + precision + offset + config.delay_ms_max + 1,
            TimeSkew.INSIDE_FUTURE: now + precision - offset,
            TimeSkew.OUTSIDE_PAST: now - delay - precision - offset - 1,
            TimeSkew.INSIDE_PAST: now - delay - precision + offset + config.delay_ms_max,
        }
        return min(UINT_MAX, max(0, times[self.skew]))

    def _file_evidence(self, height: int, round_: int) -> list[CheckedTx]:
        """Pending evidence, as txs this proposer signs for its block (as the node does)."""
        filed: list[CheckedTx] = []
        for evidence in self.evidence_pool.get_pending():
            try:
                self.app.validate_new_evidence(self.store, evidence, chain_id=self.genesis.chain_id)
            except InvalidTxError:
                self.evidence_pool.remove(evidence)
                continue
            kind, body = encode_evidence_tx(evidence)
            tx, raw, tx_id = sign_tx(
                self.identity,
                chain_id=self.genesis.chain_id,
                kind=kind,
                body=body,
                nonce=height * 1_000_000 + round_ * 1_000 + len(filed),
                timestamp_ms=self.clock_ms,
            )
            filed.append(CheckedTx(tx, raw, tx_id))
        return filed

    def is_valid_block(self, block: Block) -> bool:
        block_hash = self._caches.block_hash(block)
        if block_hash not in self._executed:
            self._executed[block_hash] = self._execute(block)
        return self._executed[block_hash] is not None

    def _execute(self, block: Block) -> ExecutedBlock | None:
        store = self.store
        header = block.header
        height = store.height + 1
        try:
            validate_block_shape(block, chain_id=self.genesis.chain_id)
            validate_header_link(
                header,
                parent_hash=store.get_parent_hash(height),
                parent_time_ms=store.last_block_time_ms,
                height=height,
                state_root=store.state_root,
                validators_hash=self._validators_hash,
            )
        except InvalidBlockError:
            return None
        if (
            header.next_validators_hash != self._validators_hash
            or header.proposer != self.validators.get_proposer(height, header.round).sign_key
        ):
            return None
        txs: list[Tx] = []
        tx_ids: list[TxId] = []
        seen: set[bytes] = set()
        for raw in block.txs:
            decoded = self._caches.decode_tx(raw)
            if decoded is None:
                return None
            tx, tx_id = decoded
            if tx_id in seen or store.has_tx(tx_id):
                return None  # a replay inside the block or of a committed tx
            seen.add(tx_id)
            txs.append(tx)
            tx_ids.append(tx_id)
        return execute_block(self.app, store, block, tuple(txs), tx_ids)

    # -- what the simulator asks ---------------------------------------------------------

    def save_commit(self, block: Block, commit: Commit) -> ExecutedBlock:
        block_hash = self._caches.block_hash(block)
        executed = self._executed.get(block_hash)
        if executed is None:
            executed = self._execute(block)
            assert executed is not None, "the core decided a block its driver finds invalid"
        self.store.save_block(executed.block, executed.raw, commit, executed.tx_ids, executed.execution)
        for tx_id in executed.tx_ids:
            self.mempool.pop(tx_id, None)
        self._executed.clear()
        if len(self.evidence_pool):
            self.evidence_pool.prune(lambda slot: GovernedApp.is_evidence_recorded(self.store, slot))
        return executed

    def admit_tx(self, raw: bytes) -> None:
        decoded = self._caches.decode_tx(raw)
        if decoded is None or len(self.mempool) >= SIM_MEMPOOL_TXS_MAX:
            return
        tx, tx_id = decoded
        if tx_id in self.mempool or self.store.has_tx(tx_id):
            return
        try:
            self.app.check_tx(tx, tx_id, self.store)
        except InvalidTxError:
            return
        self.mempool[tx_id] = CheckedTx(tx, raw, tx_id)


# -- invariants ------------------------------------------------------------------------------


class InvariantChecker:
    """Safety properties, checked at the events that could break them."""

    def __init__(self, config: SimConfig, genesis: Genesis, twin_keys: frozenset[bytes], caches: _Caches):
        self._config = config
        self._genesis = genesis
        self._twin_keys = twin_keys
        self._caches = caches
        self.signed: dict[tuple[bytes, int, int, int], bytes] = {}
        #: height → (block hash, state root after it), as first committed by a correct node.
        self.committed: dict[int, tuple[bytes, bytes]] = {}
        self.max_height: dict[int, int] = {}
        self.evidence = 0
        #: Offence slots recorded on the ledger (by the first correct node to commit the block).
        self.recorded_slots: set[bytes] = set()
        self._evidence_checked: set[int] = set()
        self.recorded_kinds: set[str] = set()
        #: Block hash → the virtual time a correct node first saw a proposal carrying it.
        self.first_seen_ms: dict[bytes, int] = {}

    def fail(self, what: str) -> None:
        raise InvariantViolation(f"{what}\nreplay: run_simulation({self._config.describe()})")

    def is_correct(self, key: bytes) -> bool:
        return key not in self._twin_keys

    def on_sent(self, node: SimNode, message: Proposal | Vote) -> None:
        """No correct validator signs two different messages at one (height, round, step).

        Keyed by the signer, not the sender: a proposer forwards others' prevotes (its proof of lock).
        """
        if isinstance(message, Proposal):
            signer = message.proposer
            key = (signer, message.height, message.round, 0)
            signed = self._caches.block_hash(message.block) + encode_primitive(message.pol_round + 1)
        else:
            signer = message.validator
            key = (signer, message.height, message.round, message.kind)
            signed = message.block_hash
        if signer != node.key and not self._caches.verify(signer, message.signing_bytes(), message.signature):
            self.fail(f"node {node.id} forwarded a message with a bad signature")
        if not self.is_correct(signer):
            return
        previous = self.signed.setdefault(key, signed)
        if previous != signed:
            self.fail(
                f"validator {signer.hex()[:16]} double-signed at height {key[1]} round {key[2]} "
                f"step {key[3]}: {previous.hex()[:16]} then {signed.hex()[:16]} (sent by node {node.id})"
            )

    def on_proposal_seen(self, node: SimNode, block_hash: bytes, now_ms: int) -> None:
        if self.is_correct(node.key):
            self.first_seen_ms.setdefault(block_hash, now_ms)

    def check_block_time(self, node: SimNode, block: Block, commit: Commit, now_ms: int) -> None:
        """A committed block's time: after its parent's, and within the bounds of honest clocks."""
        config = self._config
        header = block.header
        parent_ms = node.store.last_block_time_ms
        if header.time_ms <= parent_ms:
            self.fail(
                f"node {node.id} commits block {header.height} at {header.time_ms} ms, parent {parent_ms} ms"
            )
        precision = config.synchrony.precision_ms
        offset = config.clock_offset_ms_max
        latest = now_ms + precision + offset
        if header.time_ms > latest:
            self.fail(
                f"node {node.id} commits block {header.height} at {header.time_ms} ms, ahead of every "
                f"honest clock's bound ({latest} ms at virtual time {now_ms} ms)"
            )
        seen = self.first_seen_ms.get(self._caches.block_hash(block))
        if seen is not None:
            earliest = seen - config.synchrony.compute_message_delay_ms(commit.round) - precision - offset
            if header.time_ms < earliest:
                self.fail(
                    f"node {node.id} commits block {header.height} at {header.time_ms} ms, behind the "
                    f"bound ({earliest} ms) of the honest clocks that first saw it at {seen} ms"
                )

    def on_recorded(self, node: SimNode, executed: ExecutedBlock) -> None:
        """The evidence txs of a block a correct node committed first: each a new offence, valid."""
        height = executed.block.header.height
        if not self.is_correct(node.key) or height in self._evidence_checked:
            return
        self._evidence_checked.add(height)
        for raw, result in zip(executed.block.txs, executed.execution.results, strict=True):
            decoded = self._caches.decode_tx(raw)
            if decoded is None:
                continue
            tx = decoded[0]
            evidence = decode_evidence_tx(tx)
            if evidence is None:
                continue
            if not result.ok:
                self.fail(f"block {height} files evidence the ledger refuses ({result.code}): a duplicate")
            slot = evidence.compute_slot()
            if slot in self.recorded_slots:
                self.fail(f"block {height} records an offence the ledger holds already")
            if self.is_correct(evidence.signer):
                self.fail(f"block {height} records evidence against a correct validator")
            self.recorded_slots.add(slot)
            self.recorded_kinds.add(tx.kind)

    def on_commit(self, node: SimNode, block: Block, commit: Commit) -> None:
        height = block.header.height
        block_hash = self._caches.block_hash(block)
        if commit.block_hash != block_hash or commit.height != height:
            self.fail(f"node {node.id}: the certificate at height {height} is for another block")
        cache_key = (commit, block_hash)
        if cache_key not in self._caches.certificates:
            try:
                validate_commit(
                    commit,
                    chain_id=self._genesis.chain_id,
                    validators=node.validators,
                    block_hash=block_hash,
                    height=height,
                )
                self._caches.certificates[cache_key] = True
            except InvalidCommitError as exc:
                self.fail(f"node {node.id}: invalid certificate at height {height}: {exc.message}")
        if height != node.store.height + 1:
            self.fail(f"node {node.id} commits height {height} on top of {node.store.height}")
        if not self.is_correct(node.key):
            return
        agreed = self.committed.get(height)
        if agreed is not None and agreed[0] != block_hash:
            self.fail(
                f"FORK at height {height}: node {node.id} commits {block_hash.hex()[:16]}, "
                f"another correct node committed {agreed[0].hex()[:16]}"
            )

    def after_commit(self, node: SimNode) -> None:
        height = node.store.height
        if height <= self.max_height.get(node.id, 0):
            self.fail(f"node {node.id}: height went from {self.max_height.get(node.id)} to {height}")
        self.max_height[node.id] = height
        if not self.is_correct(node.key):
            return
        block_hash = node.store.last_block_hash
        agreed = self.committed.setdefault(height, (block_hash, node.store.state_root))
        if agreed[1] != node.store.state_root:
            self.fail(f"node {node.id}: state root at height {height} differs from another correct node's")

    def after_restart(self, node: SimNode) -> None:
        height = node.store.height
        if height < self.max_height.get(node.id, 0):
            self.fail(
                f"node {node.id} restarted at height {height}, below its committed "
                f"{self.max_height[node.id]}: a synced block was lost"
            )
        agreed = self.committed.get(height)
        if (
            height
            and self.is_correct(node.key)
            and agreed is not None
            and agreed != (node.store.last_block_hash, node.store.state_root)
        ):
            self.fail(f"node {node.id} restarted with another block or state at height {height}")

    def on_evidence(self, node: SimNode, evidence: Evidence) -> None:
        if isinstance(evidence, DuplicateVoteEvidence):
            conflicting = is_conflicting_votes(evidence.vote_a, evidence.vote_b)
        else:
            conflicting = is_conflicting_proposals(evidence.proposal_a, evidence.proposal_b)
        if not conflicting:
            self.fail(f"node {node.id} recorded evidence of messages that do not conflict")
        if self.is_correct(evidence.signer):
            self.fail(f"node {node.id} holds evidence that a correct validator equivocated")
        self.evidence += 1

    def on_rejected(self, node: SimNode, sender: SimNode, signer: bytes, reason: str) -> None:
        if self.is_correct(sender.key) and self.is_correct(signer) and self.is_correct(node.key):
            self.fail(f"node {node.id} rejected a correct node {sender.id}'s message: {reason}")


# -- the simulation --------------------------------------------------------------------------

_DELIVER: Final = 0
_TIMER: Final = 1
_START_HEIGHT: Final = 2
_CATCHUP: Final = 3
_CLIENT_TX: Final = 4
_FAULT_START: Final = 5
_FAULT_END: Final = 6


def _derive_identity(rng: random.Random) -> Identity:
    return Identity.from_secrets(rng.randbytes(32), rng.randbytes(32))


class Simulation:
    """One run. `run()` returns a `SimResult` or raises `InvariantViolation`."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        # Not for secrets: a simulated network's keys and choices must replay from the seed.
        self.rng = random.Random(config.seed)  # noqa: S311
        self.now_ms = 0
        self._seq = 0
        self._events: list[tuple[int, int, int, int, Any]] = []
        self.events = 0
        self.commits = 0
        self._trace = hashlib.blake2b(digest_size=16)
        self._caches = _Caches()

        identities = [_derive_identity(self.rng) for _ in range(config.n)]
        validators = ValidatorSet.of(
            [
                Validator(f"v{i}", ident.public.sign_key, ident.public.enc_key)
                for i, ident in enumerate(identities)
            ]
        )
        self.genesis = Genesis(CHAIN_ID, 0, validators, b"")
        self.nodes: list[SimNode] = []
        # Clock offsets from their own stream, so that a config without them replays as before.
        clocks = random.Random(config.seed ^ 0x5EED_C10C)  # noqa: S311
        bound = config.clock_offset_ms_max
        for i, ident in enumerate(identities):
            offset = clocks.randint(-bound, bound) if bound else 0
            node = self._make_node(i, ident, is_twin=i in config.twins, skew=0, clock_offset_ms=offset)
            self.nodes.append(node)
        for j, original in enumerate(config.twins):
            self.nodes.append(self._make_node(config.n + j, identities[original], is_twin=True, skew=1 + j))
        self._by_key: dict[bytes, list[SimNode]] = {}
        for node in self.nodes:
            self._by_key.setdefault(node.key, []).append(node)
        twin_keys = frozenset(identities[i].public.sign_key for i in (*config.twins, *config.skewed))
        self.checker = InvariantChecker(config, self.genesis, twin_keys, self._caches)
        self._clients = [_derive_identity(self.rng) for _ in range(3)]
        self._active: list[Fault] = []
        self._gst_heights: dict[int, int] | None = None
        self._target: int | None = None

    def _make_node(
        self, node_id: int, identity: Identity, *, is_twin: bool, skew: int, clock_offset_ms: int = 0
    ) -> SimNode:
        config = self.config
        skewed = {self.genesis.validators.validators[i].sign_key for i in config.skewed}
        return SimNode(
            node_id,
            identity,
            is_twin=is_twin,
            genesis=self.genesis,
            config=config,
            caches=self._caches,
            time_skew_ms=skew,
            clock_offset_ms=clock_offset_ms,
            skew=config.time_skew if identity.public.sign_key in skewed else None,
        )

    # -- events ----------------------------------------------------------------------------

    def _push(self, at_ms: int, kind: int, node_id: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at_ms, self._seq, kind, node_id, payload))

    def run(self) -> SimResult:
        config = self.config
        for fault in config.faults:
            self._push(fault.start_ms, _FAULT_START, -1, fault)
            self._push(fault.end_ms, _FAULT_END, -1, fault)
        self._push(self.rng.randrange(config.client_tx_interval_ms + 1), _CLIENT_TX, -1, None)
        if config.gst_ms == 0:
            self._mark_gst()
        for node in self.nodes:
            node.now_ms = 0
            self._execute(node, node.start())
        gst = config.gst_ms
        deadline = gst + config.liveness_bound_ms
        if config.stop_ms is not None:
            deadline = min(deadline, config.stop_ms)
        live = False
        while self._events:
            at_ms, _, kind, node_id, payload = heapq.heappop(self._events)
            if at_ms > deadline:
                break
            self.now_ms = at_ms
            if self._gst_heights is None and at_ms >= gst:
                self._mark_gst()
            self.events += 1
            if self.events > config.events_max:
                self.checker.fail(f"more than {config.events_max} events: a message storm or livelock")
            commits = self.commits
            self._dispatch(kind, node_id, payload)
            if self.commits != commits and self._target is not None and self._is_live():
                live = True
                break
        if self._gst_heights is None:
            self._mark_gst()
        heights = {node.id: node.store.height for node in self.nodes if node.up}
        violations: list[str] = []
        if config.expect_liveness and not live:
            behind = {n.id: n.store.height for n in self._correct_nodes()}
            violations.append(
                f"LIVENESS: not every correct node reached height {self._target} within "
                f"{config.liveness_bound_ms} ms after GST ({gst} ms); heights {behind}"
            )
        self._trace.update(encode_primitive([self.now_ms, self.events, sorted(heights.items())]))
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
        )

    def _correct_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes if not n.is_twin]

    def _mark_gst(self) -> None:
        self._gst_heights = {n.id: n.store.height for n in self._correct_nodes()}
        self._target = max(self._gst_heights.values()) + self.config.heights_after_gst

    def _is_live(self) -> bool:
        target = self._target
        assert target is not None
        return all(n.up and n.store.height >= target for n in self._correct_nodes())

    def _dispatch(self, kind: int, node_id: int, payload: Any) -> None:
        if kind == _DELIVER:
            sender_id, message = payload
            self._deliver(self.nodes[node_id], self.nodes[sender_id], message)
        elif kind == _TIMER:
            node = self.nodes[node_id]
            incarnation, timeout = payload
            if node.up and node.incarnation == incarnation:
                node.now_ms = self.now_ms  # a new round's proposal is stamped with this time
                self._execute(node, node.core.on_timeout(timeout))
        elif kind == _START_HEIGHT:
            node = self.nodes[node_id]
            incarnation, height = payload
            if node.up and node.incarnation == incarnation and node.core.height < height:
                self._start_height(node)
        elif kind == _CATCHUP:
            self._send_catchup(self.nodes[node_id], payload)
        elif kind == _CLIENT_TX:
            self._client_tx()
        elif kind == _FAULT_START:
            self._fault_start(payload)
        elif kind == _FAULT_END:
            self._fault_end(payload)

    # -- actions ---------------------------------------------------------------------------

    def _execute(self, node: SimNode, actions: list[Action]) -> None:
        """Carry out the core's actions in order, as the node's consensus task will."""
        stop_after = len(actions)
        if node.crash_pending and actions:
            stop_after = self.rng.randrange(len(actions))
        for index, action in enumerate(actions):
            if index == stop_after:
                self._crash(node)
                return
            if isinstance(action, Broadcast):
                self.checker.on_sent(node, action.message)
                self._broadcast(node, action.message)
            elif isinstance(action, PersistLastSigned):
                node.store.save_last_signed(action.last)
                if action.last.step == 0:  # a proposal is signed: its block exists from now on
                    self.checker.on_proposal_seen(node, action.last.block_hash, self.now_ms)
            elif isinstance(action, PersistLock):
                node.store.save_lock(action.lock)
            elif isinstance(action, ScheduleTimeout):
                self._push(self.now_ms + action.delay_ms, _TIMER, node.id, (node.incarnation, action.timeout))
            elif isinstance(action, CommitBlock):
                self._commit(node, action.block, action.commit)
            elif isinstance(action, RecordEvidence):
                self.checker.on_evidence(node, action.evidence)
                node.evidence_pool.add(action.evidence)
            elif isinstance(action, PeerBehind):
                payload = (node.incarnation, action.validator, action.height)
                self._push(self.now_ms + CATCHUP_DELAY_MS, _CATCHUP, node.id, payload)

    def _commit(self, node: SimNode, block: Block, commit: Commit) -> None:
        self.checker.on_commit(node, block, commit)
        self.checker.check_block_time(node, block, commit, self.now_ms)
        executed = node.save_commit(block, commit)
        self.checker.after_commit(node)
        self.checker.on_recorded(node, executed)
        self.commits += 1
        self._trace.update(encode_primitive([node.id, block.header.height, commit.block_hash]))
        next_height = block.header.height + 1
        if next_height in node.pending_catchup:
            self._push(self.now_ms, _START_HEIGHT, node.id, (node.incarnation, next_height))
        else:
            self._push(
                self.now_ms + self.config.block_interval_ms,
                _START_HEIGHT,
                node.id,
                (node.incarnation, next_height),
            )

    def _start_height(self, node: SimNode) -> None:
        node.now_ms = self.now_ms
        self._execute(node, node.core.start_height(node.store.height + 1, node.validators))
        self._drain_catchup(node)

    # -- the network -----------------------------------------------------------------------

    def _broadcast(self, sender: SimNode, message: Message) -> None:
        self._send(sender, [n for n in self.nodes if n is not sender], message)

    def _send(self, sender: SimNode, targets: Iterable[SimNode], message: Message) -> None:
        rng = self.rng
        config = self.config
        loss = duplicate = 0.0
        extra_ms = 0
        cuts: list[Fault] = []
        for fault in self._active:
            if fault.kind is FaultKind.LOSS:
                loss = max(loss, fault.rate)
            elif fault.kind is FaultKind.DUPLICATE:
                duplicate = max(duplicate, fault.rate)
            elif fault.kind is FaultKind.DELAY:
                extra_ms = max(extra_ms, fault.extra_ms)
            elif fault.kind in (FaultKind.PARTITION, FaultKind.ONE_WAY):
                cuts.append(fault)
        for target in targets:
            if any(self._is_cut(fault, sender.id, target.id) for fault in cuts):
                continue
            if loss and rng.random() < loss:
                continue
            copies = 2 if duplicate and rng.random() < duplicate else 1
            for _ in range(copies):
                delay = rng.randint(config.delay_ms_min, config.delay_ms_max)
                if extra_ms:
                    delay += rng.randint(0, extra_ms)
                self._push(self.now_ms + delay, _DELIVER, target.id, (sender.id, message))

    @staticmethod
    def _is_cut(fault: Fault, sender: int, target: int) -> bool:
        inside_sender = sender in fault.nodes
        inside_target = target in fault.nodes
        if fault.kind is FaultKind.PARTITION:
            return inside_sender != inside_target
        return inside_sender and not inside_target  # ONE_WAY

    def _deliver(self, node: SimNode, sender: SimNode, message: Message) -> None:
        if not node.up:
            return
        node.now_ms = self.now_ms
        if isinstance(message, CatchUp):
            lowest = node.core.height + (1 if node.core.decided else 0)
            for block, commit in message.blocks:
                height = block.header.height
                if height >= lowest and len(node.pending_catchup) < CATCHUP_PENDING_MAX:
                    node.pending_catchup.setdefault(height, (block, commit))
            self._drain_catchup(node)
            return
        if message.height > node.peer_heights.get(sender.key, 0):
            node.peer_heights[sender.key] = message.height
        if isinstance(message, Proposal):
            self.checker.on_proposal_seen(node, self._caches.block_hash(message.block), self.now_ms)
            actions = node.core.on_proposal(message, received_ms=node.clock_ms)
        else:
            actions = node.core.on_vote(message)
        if node.core.last_rejection is not None:
            signer = message.proposer if isinstance(message, Proposal) else message.validator
            self.checker.on_rejected(node, sender, signer, str(node.core.last_rejection))
        self._execute(node, actions)

    def _drain_catchup(self, node: SimNode) -> None:
        """Feed the core the certificate of the height it is at, if a peer sent it.

        The commit then starts the next height at once (see `_commit`), which drains again.
        """
        for height in [h for h in node.pending_catchup if h < node.core.height]:
            del node.pending_catchup[height]
        if node.up and not node.core.decided:
            entry = node.pending_catchup.pop(node.core.height, None)
            if entry is not None:
                self._execute(node, node.core.on_commit(*entry))

    def _send_catchup(self, node: SimNode, payload: tuple[int, bytes, int]) -> None:
        incarnation, validator, height = payload
        if not node.up or node.incarnation != incarnation:
            return
        if node.peer_heights.get(validator, 0) > height or node.store.height < height:
            return  # the peer moved on meanwhile, or we do not have the block
        last = min(node.store.height, height + CATCHUP_BLOCKS_MAX - 1)
        blocks = []
        for h in range(height, last + 1):
            block, commit = node.store.get_block(h), node.store.get_commit(h)
            assert block is not None
            assert commit is not None
            blocks.append((block, commit))
        self._send(node, self._by_key[validator], CatchUp(tuple(blocks)))

    # -- clients and faults ----------------------------------------------------------------

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
        up = [n for n in self.nodes if n.up]
        if up:
            rng.choice(up).admit_tx(raw)
        self._push(self.now_ms + rng.randint(1, 2 * self.config.client_tx_interval_ms), _CLIENT_TX, -1, None)

    def _fault_start(self, fault: Fault) -> None:
        if fault.kind is FaultKind.CRASH:
            for node_id in fault.nodes:
                if self.nodes[node_id].up:
                    self._crash(self.nodes[node_id])
        elif fault.kind is FaultKind.CRASH_MID:
            for node_id in fault.nodes:
                if self.nodes[node_id].up:
                    self.nodes[node_id].crash_pending = True
        else:
            self._active.append(fault)

    def _fault_end(self, fault: Fault) -> None:
        if fault.kind in (FaultKind.CRASH, FaultKind.CRASH_MID):
            for node_id in fault.nodes:
                node = self.nodes[node_id]
                if node.up and node.crash_pending:
                    self._crash(node)
                if not node.up and not self._is_still_crashed(node_id):
                    self._restart(node)
        elif fault in self._active:
            self._active.remove(fault)

    def _is_still_crashed(self, node_id: int) -> bool:
        """Another crash fault still holds this node down."""
        return any(
            f.kind in (FaultKind.CRASH, FaultKind.CRASH_MID)
            and node_id in f.nodes
            and f.start_ms <= self.now_ms < f.end_ms
            for f in self.config.faults
        )

    def _crash(self, node: SimNode) -> None:
        node.crash()
        self._trace.update(encode_primitive(["crash", node.id, self.now_ms]))

    def _restart(self, node: SimNode) -> None:
        node.now_ms = self.now_ms
        actions = node.restart()
        self.checker.after_restart(node)
        self._trace.update(encode_primitive(["restart", node.id, self.now_ms, node.store.height]))
        self._execute(node, actions)


def run_simulation(config: SimConfig) -> SimResult:
    """Run one simulation; raises `InvariantViolation` when a safety property fails."""
    return Simulation(config).run()


def check_simulation(config: SimConfig) -> SimResult:
    """Run one simulation and raise `InvariantViolation` on any safety or liveness failure."""
    result = run_simulation(config)
    if result.violations:
        raise InvariantViolation(
            "\n".join(result.violations) + f"\nreplay: run_simulation({config.describe()})"
        )
    return result


@dataclasses.dataclass(frozen=True, slots=True)
class SweepOutcome:
    """One run of a sweep: its config line, and the failure (None: every property held)."""

    seed: int
    description: str
    failure: str | None
    live: bool
    events: int


def _run_one(config: SimConfig) -> SweepOutcome:
    try:
        result = check_simulation(config)
    except InvariantViolation as exc:
        return SweepOutcome(config.seed, config.describe(), str(exc), False, 0)
    return SweepOutcome(config.seed, config.describe(), None, result.live, result.events)


def run_sweep(configs: Sequence[SimConfig], *, jobs: int = 1) -> list[SweepOutcome]:
    """Run many simulations, on `jobs` processes; outcomes come back in the configs' order.

    The configs' factories must be importable module-level callables (they cross processes).
    """
    if jobs <= 1 or len(configs) <= 1:
        return [_run_one(config) for config in configs]
    context = multiprocessing.get_context("spawn")  # no fork of a possibly threaded parent
    chunk = max(1, len(configs) // (jobs * 8))
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        return list(pool.map(_run_one, configs, chunksize=chunk))


# -- fault plans -----------------------------------------------------------------------------


def generate_fault_plan(
    rng: random.Random,
    *,
    n: int,
    twins: tuple[int, ...] = (),
    kinds: tuple[FaultKind, ...] = tuple(FaultKind),
    faults_max: int = 4,
    horizon_ms: int = 4_000,
) -> tuple[Fault, ...]:
    """A random plan of faults that all heal within `horizon_ms` (so liveness after GST is due).

    Each crash takes down up to f + 1 correct validators at once (more than f: the chain halts
    until they restart); twins are Byzantine already and are not crashed.
    """
    nodes = n + len(twins)
    f = (n - 1) // 3
    plan: list[Fault] = []
    for _ in range(rng.randint(1, faults_max)):
        kind = rng.choice(kinds)
        start = rng.randrange(0, horizon_ms - 100)
        end = rng.randint(start + 50, horizon_ms)
        if kind in (FaultKind.CRASH, FaultKind.CRASH_MID):
            candidates = [i for i in range(n) if i not in twins]
            count = min(len(candidates), rng.randint(1, f + 1))
            plan.append(Fault(kind, start, end, tuple(sorted(rng.sample(candidates, count)))))
        elif kind in (FaultKind.PARTITION, FaultKind.ONE_WAY):
            if nodes < 2:
                continue
            group = tuple(sorted(rng.sample(range(nodes), rng.randint(1, nodes - 1))))
            plan.append(Fault(kind, start, end, group))
        elif kind is FaultKind.LOSS:
            plan.append(Fault(kind, start, end, rate=round(rng.uniform(0.05, 0.6), 3)))
        elif kind is FaultKind.DUPLICATE:
            plan.append(Fault(kind, start, end, rate=round(rng.uniform(0.05, 0.5), 3)))
        else:
            plan.append(Fault(kind, start, end, extra_ms=rng.randint(20, 400)))
    if twins:
        # Split each twin pair for a while, so the key really speaks with two voices.
        group = tuple(sorted({*twins, *rng.sample(range(n), n // 2)} - {n + j for j in range(len(twins))}))
        start = rng.randrange(0, horizon_ms // 2)
        plan.append(Fault(FaultKind.PARTITION, start, rng.randint(start + 200, horizon_ms), group))
    return tuple(plan)


__all__ = [
    "CATCHUP_BLOCKS_MAX",
    "CHAIN_ID",
    "SIM_SYNCHRONY",
    "SIM_TIMEOUTS",
    "CatchUp",
    "Fault",
    "FaultKind",
    "InvariantChecker",
    "InvariantViolation",
    "SimConfig",
    "SimNode",
    "SimResult",
    "Simulation",
    "SweepOutcome",
    "TimeSkew",
    "check_simulation",
    "generate_fault_plan",
    "run_simulation",
    "run_sweep",
]
