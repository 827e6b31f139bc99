"""Tendermint-style BFT consensus (propose, prevote, precommit) as a sans-I/O state machine.

One `ConsensusCore` per validator (or per observer, which only verifies). It is fed proposals,
votes, timer expiries and certificates learned from block sync, and returns the actions its driver
must carry out, *in order*: persist a signed vote before sending it, broadcast, arm a timer, commit a
block. It never does I/O, never reads a clock and never draws a random number, so the node and the
deterministic simulator (`medledger.network.sim`) drive the very same code.

The protocol is Algorithm 1 of Buchman, Kwon and Milosevic, "The latest gossip on BFT consensus"
(arXiv:1807.04938), with the names of that paper (`locked_round`, `valid_round`, ...). See
docs/adr/0003-consensus.md for why it was chosen and how the parts fit. In short:

* Round r of height h has the proposer `LeaderSchedule.get_proposer(r)` (chain/leader.py: the
  one selection function, from the committed chain; round-robin unless the genesis turns on
  leader skipping), given with `start_height`. It proposes its valid
  block (with `pol_round` = the round of its proof of lock) or a fresh block from its driver.
* A validator prevotes the proposal if the block is valid and it is not locked on another block,
  or if the proposal carries a proof-of-lock round ≥ its locked round and it has seen that quorum of
  prevotes. Otherwise it prevotes nil.
* Block time is proposer-based (CometBFT's PBTS, docs/adr/0007-block-time.md): a fresh proposal
  (no proof-of-lock round) is prevoted only if it is *timely*, i.e. its block time lies within
  `SynchronyParams` (PRECISION, MSGDELAY) of the local time at which the proposal was received.
  That time is an input (`on_proposal(..., received_ms=...)`): the core reads no clock. A
  re-proposed block (with a proof of lock) was judged timely by a quorum in its own round and is
  not judged again. The monotonic part (strictly after the parent) is a block rule
  (`validate_header_link`), checked by every path that accepts a block.
* A quorum (⌈2n/3⌉) of prevotes for the proposal locks the validator on the block and makes it
  precommit the block; a quorum of nil prevotes makes it precommit nil.
* A quorum of precommits for a block, at any round, commits the block (`CommitBlock`).
* Timers: propose (waiting for the proposal), prevote and precommit (after a quorum of votes of any
  kind without a decision). They grow linearly with the round and are capped. For the prevote
  timer a validator's precommit of the round stands for its prevote: it went past its prevote
  step, and one that crashed after precommitting lost its prevote and may not sign it again, so
  peers waiting for "a quorum of prevotes of any kind" would wait forever once f others are down
  (found by the simulator). Arming a timer is never unsafe: its expiry only precommits nil.
* f + 1 distinct validators at a higher round make a validator jump there (one of them is correct).

Messages can be lost by a driver (a crash, a lossy link), so every validator re-broadcasts its own
messages of the current and previous round on a timer: that replaces the paper's assumption that
every message is eventually delivered. A validator that sees a signed message of a height it has
already committed emits `PeerBehind`, so its driver can send that peer the committed block and its
certificate, which the peer feeds to `on_commit`.

Crash safety: before any vote or proposal is signed, `PersistLastSigned` (and, when a precommit
locks a block, `PersistLock`) precede its `Broadcast`. On start the core takes the persisted
`LastSigned` and `ConsensusLock` and never signs at or below that (height, round, step) again,
except the identical vote (a re-broadcast).

Bounds (TIGER_STYLE): messages are stored for rounds up to `ROUNDS_AHEAD_MAX` above the current
one (beyond that only the sender's highest round is remembered, for the round jump) and for at most
`HEIGHTS_AHEAD_MAX` heights ahead, `FUTURE_MESSAGES_PER_VALIDATOR_MAX` messages per validator.
Each validator has at most one prevote and one precommit per round; a conflicting second one is
evidence of equivocation (`RecordEvidence`) and is not counted. A second, different proposal for
a round whose signature verifies is evidence too (conflicting proposals) and is refused.
"""

from __future__ import annotations

import dataclasses
from enum import IntEnum, StrEnum
from typing import Final, Protocol

from medledger.chain.errors import InvalidCommitError
from medledger.chain.evidence import (
    Evidence,
    SignedProposal,
    is_conflicting_proposals,
    is_conflicting_votes,
    make_conflicting_proposal_evidence,
    make_duplicate_vote_evidence,
)
from medledger.chain.leader import PROBE_TIMEOUT_DIVISOR, LeaderSchedule, plain_schedule
from medledger.chain.store import ConsensusLock, LastSigned
from medledger.chain.types import (
    NO_ROUND,
    Block,
    Commit,
    CommitSig,
    Proposal,
    ValidatorSet,
    Vote,
    VoteKind,
    compute_proposal_signing_bytes,
    compute_vote_signing_bytes,
)
from medledger.chain.validation import Verifier, validate_commit
from medledger.crypto import Identity, verify_signature

#: The block hash of a vote for nil.
NIL: Final = b""

# -- limits --------------------------------------------------------------------------------

#: Votes and proposals are stored for rounds up to this many above the current one.
ROUNDS_AHEAD_MAX: Final = 16
#: Messages of heights up to this many above the current one are buffered until it starts.
HEIGHTS_AHEAD_MAX: Final = 1
#: Most buffered messages of future heights, per validator.
FUTURE_MESSAGES_PER_VALIDATOR_MAX: Final = 2 * ROUNDS_AHEAD_MAX + 4

# -- timeouts (ms): base + delta × round, capped ---------------------------------------------

TIMEOUT_PROPOSE_MS_BASE: Final = 3_000
TIMEOUT_PROPOSE_MS_DELTA: Final = 500
TIMEOUT_PROPOSE_MS_MAX: Final = 30_000
TIMEOUT_PREVOTE_MS_BASE: Final = 1_000
TIMEOUT_PREVOTE_MS_DELTA: Final = 500
TIMEOUT_PREVOTE_MS_MAX: Final = 10_000
TIMEOUT_PRECOMMIT_MS_BASE: Final = 1_000
TIMEOUT_PRECOMMIT_MS_DELTA: Final = 500
TIMEOUT_PRECOMMIT_MS_MAX: Final = 10_000
#: How often a validator re-broadcasts its own messages of the current height.
REBROADCAST_MS: Final = 2_000

# -- proposer-based timestamps (ms) -----------------------------------------------------------

#: PBTS's PRECISION: how far apart two honest validators' clocks may be (NTP keeps them well
#: within this), and so how far in the future of a validator's clock a block time may be.
BLOCK_TIME_PRECISION_MS: Final = 500
#: PBTS's MSGDELAY at round 0: how long a proposal may take from its proposer to a validator
#: (a large block over a slow link included), and so how far in the past a block time may be.
BLOCK_TIME_MESSAGE_DELAY_MS: Final = 3_000
#: MSGDELAY grows by this share of itself per round (CometBFT grows it by 10 % a round too): a
#: bound set too tight for the network costs rounds, never liveness.
BLOCK_TIME_MESSAGE_DELAY_GROWTH_PERCENT: Final = 10


class Step(IntEnum):
    """A round's steps; also the `step` of `LastSigned` (a proposal, a prevote, a precommit)."""

    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


class TimeoutStep(IntEnum):
    """What a timer is for: one per round step, and the periodic re-broadcast."""

    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2
    REBROADCAST = 3


@dataclasses.dataclass(frozen=True, slots=True)
class ConsensusTimeouts:
    """Timer settings. A step's timeout at round r is min(base + delta × r, max)."""

    timeout_propose_ms_base: int = TIMEOUT_PROPOSE_MS_BASE
    timeout_propose_ms_delta: int = TIMEOUT_PROPOSE_MS_DELTA
    timeout_propose_ms_max: int = TIMEOUT_PROPOSE_MS_MAX
    timeout_prevote_ms_base: int = TIMEOUT_PREVOTE_MS_BASE
    timeout_prevote_ms_delta: int = TIMEOUT_PREVOTE_MS_DELTA
    timeout_prevote_ms_max: int = TIMEOUT_PREVOTE_MS_MAX
    timeout_precommit_ms_base: int = TIMEOUT_PRECOMMIT_MS_BASE
    timeout_precommit_ms_delta: int = TIMEOUT_PRECOMMIT_MS_DELTA
    timeout_precommit_ms_max: int = TIMEOUT_PRECOMMIT_MS_MAX
    rebroadcast_ms: int = REBROADCAST_MS

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) < 0:
                raise ValueError(f"{field.name} must not be negative")
        if self.rebroadcast_ms == 0:
            raise ValueError("rebroadcast_ms must be positive")
        for step in ("propose", "prevote", "precommit"):
            if getattr(self, f"timeout_{step}_ms_max") < getattr(self, f"timeout_{step}_ms_base"):
                raise ValueError(f"timeout_{step}_ms_max must be at least timeout_{step}_ms_base")

    def compute_timeout_ms(self, step: TimeoutStep, round_: int) -> int:
        if step is TimeoutStep.REBROADCAST:
            return self.rebroadcast_ms
        name = step.name.lower()
        base: int = getattr(self, f"timeout_{name}_ms_base")
        delta: int = getattr(self, f"timeout_{name}_ms_delta")
        cap: int = getattr(self, f"timeout_{name}_ms_max")
        return min(base + delta * round_, cap)


@dataclasses.dataclass(frozen=True, slots=True)
class SynchronyParams:
    """The synchrony PBTS assumes: clock precision and message delay (CometBFT's names)."""

    precision_ms: int = BLOCK_TIME_PRECISION_MS
    message_delay_ms: int = BLOCK_TIME_MESSAGE_DELAY_MS
    message_delay_growth_percent: int = BLOCK_TIME_MESSAGE_DELAY_GROWTH_PERCENT

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) < 0:
                raise ValueError(f"{field.name} must not be negative")

    def compute_message_delay_ms(self, round_: int) -> int:
        """MSGDELAY at `round_`: grows linearly with the round."""
        return (
            self.message_delay_ms + self.message_delay_ms * self.message_delay_growth_percent * round_ // 100
        )

    def is_timely(self, block_time_ms: int, received_ms: int, round_: int) -> bool:
        """PBTS's timely predicate: a proposal of round `round_` with block time `block_time_ms`,
        received at local time `received_ms`, satisfies
        block_time - PRECISION <= received <= block_time + MSGDELAY(round) + PRECISION."""
        return (
            block_time_ms - self.precision_ms
            <= received_ms
            <= block_time_ms + self.compute_message_delay_ms(round_) + self.precision_ms
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Timeout:
    """A timer expiry, handed back to `on_timeout` by the driver."""

    height: int
    round: int
    step: TimeoutStep


# -- actions ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class PersistLastSigned:
    """Write `last` durably (synced) before executing the actions that follow it."""

    last: LastSigned


@dataclasses.dataclass(frozen=True, slots=True)
class PersistLock:
    """Write `lock` durably (synced) before executing the actions that follow it."""

    lock: ConsensusLock


@dataclasses.dataclass(frozen=True, slots=True)
class Broadcast:
    """Send `message` to every peer."""

    message: Proposal | Vote


@dataclasses.dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    """Call `on_timeout(self.timeout)` after `delay_ms` (a stale timeout is ignored, never harmful)."""

    height: int
    round: int
    step: TimeoutStep
    delay_ms: int

    @property
    def timeout(self) -> Timeout:
        return Timeout(self.height, self.round, self.step)


@dataclasses.dataclass(frozen=True, slots=True)
class CommitBlock:
    """The block is decided: execute it and save it with `commit`, then call `start_height`."""

    block: Block
    commit: Commit


@dataclasses.dataclass(frozen=True, slots=True)
class RecordEvidence:
    """Proof that a validator equivocated: two conflicting votes, or two conflicting proposals.

    Its signatures are checked. The driver keeps it for the ledger (`EvidencePool`).
    """

    evidence: Evidence


@dataclasses.dataclass(frozen=True, slots=True)
class PeerBehind:
    """`validator` signed a message of `height`, which is committed here: send it that block and commit.

    `validator` is the message's signer. A proposer forwards others' prevotes (its proof of lock),
    so a driver that knows which connection a message came from should also consider that peer.
    """

    validator: bytes
    height: int


Action = (
    PersistLastSigned | PersistLock | Broadcast | ScheduleTimeout | CommitBlock | RecordEvidence | PeerBehind
)


class ConsensusDriver(Protocol):
    """What the core asks of its driver: things it cannot compute purely on its own."""

    def get_block_to_propose(self, height: int, round_: int) -> Block:
        """A fresh block for `height` (built from the mempool on top of the committed chain)."""
        ...

    def is_valid_block(self, block: Block) -> bool:
        """Whether `block` extends the committed chain and executes; must be deterministic."""
        ...


class RejectionKind(StrEnum):
    """Why the core refused a message; the driver decides by the kind, never by the text."""

    NOT_STARTED = "not_started"
    WRONG_CHAIN = "wrong_chain"
    MALFORMED = "malformed"
    NOT_VALIDATOR = "not_validator"
    NOT_PROPOSER = "not_proposer"
    BAD_PROPOSAL = "bad_proposal"
    SECOND_PROPOSAL = "second_proposal"
    BAD_SIGNATURE = "bad_signature"
    BAD_CERTIFICATE = "bad_certificate"
    FORGED_CERTIFICATE = "forged_certificate"
    INVALID_BLOCK = "invalid_block"


#: Kinds that prove the relaying peer faulty: every consensus message and certificate is signed
#: by its author, and honest peers check signatures before they relay.
FORGERY_KINDS: Final = frozenset({RejectionKind.BAD_SIGNATURE, RejectionKind.FORGED_CERTIFICATE})


@dataclasses.dataclass(frozen=True, slots=True)
class Rejection:
    """A refused input: its kind and words for a log line."""

    kind: RejectionKind
    detail: str

    @property
    def is_forgery(self) -> bool:
        return self.kind in FORGERY_KINDS

    def __str__(self) -> str:
        return self.detail


# -- signing helpers -------------------------------------------------------------------------


def sign_vote(
    identity: Identity, *, chain_id: str, kind: VoteKind, height: int, round_: int, block_hash: bytes
) -> Vote:
    me = identity.public.sign_key
    signature = identity.sign(compute_vote_signing_bytes(chain_id, kind, height, round_, block_hash, me))
    return Vote(chain_id, int(kind), height, round_, block_hash, me, signature)


def sign_proposal(
    identity: Identity, *, chain_id: str, height: int, round_: int, pol_round: int, block: Block
) -> Proposal:
    me = identity.public.sign_key
    signature = identity.sign(
        compute_proposal_signing_bytes(chain_id, height, round_, pol_round, block.hash(), me)
    )
    return Proposal(chain_id, height, round_, pol_round, block, me, signature)


#: Two votes of one validator at one (height, round, kind) for different blocks.
is_conflicting = is_conflicting_votes


# -- per-round state -------------------------------------------------------------------------


class _VoteSet:
    """One round's prevotes or precommits.

    `by_validator` holds each validator's first vote: it counts towards "a quorum of votes of any
    kind". `by_hash` tallies, per block hash, the distinct validators that signed a vote for it.
    An equivocator's second vote is counted for its block too, when that block is one we know (the
    caller decides): a quorum for a block is a fact about signatures, and two quorums for different
    blocks at one round would still need a correct validator to sign both. Without that, a proof
    of lock that happens to contain an equivocator's vote could never be checked by a validator
    that saw the other vote first, and the chain could stall.
    """

    __slots__ = ("by_hash", "by_validator")

    def __init__(self) -> None:
        self.by_validator: dict[bytes, Vote] = {}
        self.by_hash: dict[bytes, dict[bytes, Vote]] = {}

    def add(self, vote: Vote) -> None:
        self.by_validator.setdefault(vote.validator, vote)
        self.by_hash.setdefault(vote.block_hash, {}).setdefault(vote.validator, vote)

    def has(self, vote: Vote) -> bool:
        voters = self.by_hash.get(vote.block_hash)
        return voters is not None and voters.get(vote.validator) == vote

    def count(self, block_hash: bytes) -> int:
        voters = self.by_hash.get(block_hash)
        return 0 if voters is None else len(voters)

    def get_votes_for(self, block_hash: bytes) -> tuple[Vote, ...]:
        voters = self.by_hash.get(block_hash)
        return () if voters is None else tuple(voters.values())

    @property
    def total(self) -> int:
        return len(self.by_validator)


#: Read-only stand-in for a round nobody has voted in yet (never added to).
_EMPTY_VOTES: Final = _VoteSet()


def _count_past_prevote(state: _RoundState) -> int:
    """Distinct validators past their prevote step at a round: those that prevoted or precommitted
    there (a precommit stands for a prevote lost in a crash; see the module docstring)."""
    prevoted, precommitted = state.prevotes.by_validator, state.precommits.by_validator
    if not precommitted:
        return len(prevoted)
    return len(prevoted.keys() | precommitted.keys())


class _RoundState:
    __slots__ = ("precommits", "prevotes", "proposal", "proposal_hash", "proposal_timely", "valid_seen")

    def __init__(self) -> None:
        self.proposal: Proposal | None = None
        self.proposal_hash = NIL
        #: PBTS: the proposal's block time was within the bounds of our clock when it arrived.
        self.proposal_timely = False
        self.prevotes = _VoteSet()
        self.precommits = _VoteSet()
        #: Rule "quorum of prevotes for the proposal" already applied in this round.
        self.valid_seen = False

    def votes(self, kind: int) -> _VoteSet:
        return self.prevotes if kind == VoteKind.PREVOTE else self.precommits


# -- the core --------------------------------------------------------------------------------


class ConsensusCore:
    """The consensus state machine of one validator (or observer, with `identity=None`).

    Owned by one task. Every `on_*` method and `start_height` returns the actions to execute in
    order; invalid input changes nothing, returns no action and sets `last_rejection`.
    """

    def __init__(
        self,
        *,
        chain_id: str,
        identity: Identity | None,
        driver: ConsensusDriver,
        last_signed: LastSigned | None = None,
        lock: ConsensusLock | None = None,
        timeouts: ConsensusTimeouts | None = None,
        synchrony: SynchronyParams | None = None,
        verify: Verifier = verify_signature,
    ) -> None:
        self.chain_id = chain_id
        self._identity = identity
        self._me = identity.public.sign_key if identity is not None else None
        self._driver = driver
        self._verify = verify
        self.timeouts = timeouts if timeouts is not None else ConsensusTimeouts()
        self.synchrony = synchrony if synchrony is not None else SynchronyParams()
        self._last_signed = last_signed
        self._persisted_lock = lock
        self.last_rejection: Rejection | None = None

        self.height = 0
        self.round = 0
        self.step = Step.PROPOSE
        self.decided = False
        self._validators: ValidatorSet | None = None
        self._schedule_of_height: LeaderSchedule | None = None
        self._members: frozenset[bytes] = frozenset()
        self._signing = False
        self.locked_round = NO_ROUND
        self.locked_hash = NIL
        self._locked_block: Block | None = None
        self.valid_round = NO_ROUND
        self._valid_block: Block | None = None
        self._rounds: dict[int, _RoundState] = {}
        #: The votes this core signed at the current height, by (round, kind).
        self._own_votes: dict[tuple[int, VoteKind], Vote] = {}
        self._blocks: dict[bytes, Block] = {}
        self._validity: dict[bytes, bool] = {}
        #: Block hash → the round at which its precommits reached a quorum.
        self._precommit_quorums: dict[bytes, int] = {}
        #: Each validator's highest round seen at this height (for the f + 1 round jump).
        self._max_round_seen: dict[bytes, int] = {}
        self._scheduled: set[tuple[int, TimeoutStep]] = set()
        self._evidence_seen: set[tuple[bytes, int, int]] = set()
        self._behind_hinted: set[tuple[bytes, int]] = set()
        #: Messages of future heights, with the local time a proposal was received (PBTS).
        self._future: list[tuple[Proposal | Vote, int]] = []
        self._future_counts: dict[bytes, int] = {}

    # -- read-only views ---------------------------------------------------------------------

    @property
    def last_signed(self) -> LastSigned | None:
        return self._last_signed

    @property
    def validators(self) -> ValidatorSet:
        if self._validators is None:
            raise RuntimeError("start_height has not been called")
        return self._validators

    @property
    def is_signing(self) -> bool:
        """Whether this core signs at the current height (it holds a key of the validator set)."""
        return self._signing

    def get_proposal(self, round_: int) -> Proposal | None:
        state = self._rounds.get(round_)
        return None if state is None else state.proposal

    def get_votes(self, round_: int, kind: VoteKind) -> tuple[Vote, ...]:
        state = self._rounds.get(round_)
        return () if state is None else tuple(state.votes(kind).by_validator.values())

    # -- inputs ------------------------------------------------------------------------------

    def start_height(
        self, height: int, validators: ValidatorSet, schedule: LeaderSchedule | None = None
    ) -> list[Action]:
        """Begin `height` with `validators` (after `CommitBlock` of the previous one was saved).

        `schedule`: who proposes each round (`BlockExecutor.leader_schedule`); plain round-robin
        over `validators` when omitted.
        """
        if height <= self.height:
            raise ValueError(f"height {height} does not follow the current height {self.height}")
        if schedule is None:
            schedule = plain_schedule(validators, height)
        elif schedule.height != height or schedule.validators != validators:
            raise ValueError(f"the leader schedule is for another height or set than height {height}")
        self._schedule_of_height = schedule
        out: list[Action] = []
        self.last_rejection = None
        self.height = height
        self.round = 0
        self.step = Step.PROPOSE
        self.decided = False
        self._validators = validators
        self._members = frozenset(v.sign_key for v in validators.validators)
        self._signing = self._me is not None and self._me in self._members
        self.locked_round, self.locked_hash, self._locked_block = NO_ROUND, NIL, None
        self.valid_round, self._valid_block = NO_ROUND, None
        self._rounds = {}
        self._own_votes = {}
        self._blocks = {}
        self._validity = {}
        self._precommit_quorums = {}
        self._max_round_seen = {}
        self._scheduled = set()
        self._evidence_seen = set()
        self._behind_hinted = set()

        lock = self._persisted_lock
        if lock is not None and lock.height == height:
            self.locked_round, self.locked_hash, self._locked_block = lock.round, lock.block_hash, lock.block
            self.valid_round, self._valid_block = lock.round, lock.block
            self._blocks[lock.block_hash] = lock.block
        last = self._last_signed
        resumed = last is not None and last.height == height
        first_round = last.round if last is not None and resumed else 0
        if (
            last is not None
            and resumed
            and last.step == Step.PRECOMMIT
            and last.block_hash != NIL
            and last.round > self.locked_round
        ):
            # The precommit that set a lock is its own record of it.
            self.locked_round, self.locked_hash = last.round, last.block_hash

        if lock is not None and lock.height == height:
            for prevote in lock.prevotes:  # the proof of lock, to forward with a re-proposal
                self._handle_vote(prevote, out, any_round=True)
        self._start_round(first_round, out)
        if last is not None and resumed:
            self.step = max(self.step, Step(last.step))
            if last.step != Step.PROPOSE:
                # Re-sign and re-send the identical vote: it may never have left before the crash.
                self._send_vote(VoteKind(last.step), last.block_hash, out)
                # Our earlier messages of this round are gone with the crash, and peers may wait for
                # them to reach "a quorum of any votes": arm this step's timer now so the round ends.
                self._schedule(TimeoutStep(last.step), out)
        self._schedule(TimeoutStep.REBROADCAST, out)

        buffered, self._future, self._future_counts = self._future, [], {}
        for message, received_ms in buffered:
            if message.height == height:
                if isinstance(message, Proposal):
                    self._handle_proposal(message, out, received_ms)
                else:
                    self._handle_vote(message, out)
            elif message.height > height:
                self._buffer_future(message, received_ms)
        self.last_rejection = None
        self._evaluate(out)
        return out

    def on_proposal(self, proposal: Proposal, *, received_ms: int) -> list[Action]:
        """A proposal, received at local time `received_ms` (the driver's clock; PBTS needs it)."""
        out: list[Action] = []
        self.last_rejection = None
        self._handle_proposal(proposal, out, received_ms)
        self._evaluate(out)
        return out

    def on_vote(self, vote: Vote) -> list[Action]:
        out: list[Action] = []
        self.last_rejection = None
        self._handle_vote(vote, out)
        self._evaluate(out)
        return out

    def on_timeout(self, timeout: Timeout) -> list[Action]:
        out: list[Action] = []
        self.last_rejection = None
        if timeout.height != self.height or self.decided or self._validators is None:
            return out
        step = timeout.step
        if step is TimeoutStep.REBROADCAST:
            self._scheduled.discard((timeout.round, step))
            self._rebroadcast(out)
            self._behind_hinted.clear()
            self._schedule(TimeoutStep.REBROADCAST, out)
        elif timeout.round != self.round:
            return out
        elif step is TimeoutStep.PROPOSE and self.step == Step.PROPOSE:
            self._prevote(NIL, out)
        elif step is TimeoutStep.PREVOTE and self.step == Step.PREVOTE:
            self._precommit(NIL, out)
        elif step is TimeoutStep.PRECOMMIT:
            self._start_round(self.round + 1, out)
        self._evaluate(out)
        return out

    def on_commit(self, block: Block, commit: Commit) -> list[Action]:
        """A block and its certificate for the current height, learned from a peer or block sync."""
        out: list[Action] = []
        self.last_rejection = None
        if self._validators is None or self.decided or commit.height != self.height:
            return out
        block_hash = block.hash()
        if commit.block_hash != block_hash or block.header.height != self.height:
            self.last_rejection = Rejection(
                RejectionKind.BAD_CERTIFICATE, "the certificate is not for this block"
            )
            return out
        try:
            validate_commit(
                commit,
                chain_id=self.chain_id,
                validators=self._validators,
                block_hash=block_hash,
                height=self.height,
                verify=self._verify,
            )
        except InvalidCommitError as exc:
            kind = RejectionKind.FORGED_CERTIFICATE if exc.forged else RejectionKind.BAD_CERTIFICATE
            self.last_rejection = Rejection(kind, exc.message)
            return out
        # A quorum signed this block: it is worth keeping, and its precommits count like any others.
        self._blocks.setdefault(block_hash, block)
        for sig in commit.signatures:
            vote = Vote(
                self.chain_id,
                int(VoteKind.PRECOMMIT),
                commit.height,
                commit.round,
                commit.block_hash,
                sig.validator,
                sig.signature,
            )
            self._handle_vote(vote, out, any_round=True)
        self._evaluate(out)
        if not self.decided:
            self.last_rejection = Rejection(
                RejectionKind.INVALID_BLOCK, "the certified block is not valid here"
            )
        return out

    # -- message intake ----------------------------------------------------------------------

    def _reject(self, kind: RejectionKind, detail: str) -> None:
        self.last_rejection = Rejection(kind, detail)

    def _handle_proposal(self, proposal: Proposal, out: list[Action], received_ms: int) -> None:
        if self._validators is None:
            return self._reject(RejectionKind.NOT_STARTED, "consensus has not started")
        if proposal.chain_id != self.chain_id:
            return self._reject(RejectionKind.WRONG_CHAIN, "proposal for another chain")
        if proposal.height != self.height:
            return self._handle_other_height(proposal, out, received_ms)
        if self.decided:
            return None
        if proposal.round > self.round + ROUNDS_AHEAD_MAX:
            return self._note_far_round(proposal)
        if proposal.proposer != self._get_proposer(proposal.round):
            return self._reject(RejectionKind.NOT_PROPOSER, "proposal not from the round's proposer")
        state = self._rounds.get(proposal.round)
        if state is not None and state.proposal is not None:
            if state.proposal != proposal:
                return self._handle_second_proposal(state, proposal, out)
            return None
        reason = self._check_proposal_block(proposal)
        if reason is not None:
            return self._reject(RejectionKind.BAD_PROPOSAL, reason)
        block_hash = proposal.block.hash()
        signed = compute_proposal_signing_bytes(
            proposal.chain_id,
            proposal.height,
            proposal.round,
            proposal.pol_round,
            block_hash,
            proposal.proposer,
        )
        if not self._verify(proposal.proposer, signed, proposal.signature):
            return self._reject(RejectionKind.BAD_SIGNATURE, "bad proposal signature")
        state = self._get_round(proposal.round)
        state.proposal, state.proposal_hash = proposal, block_hash
        state.proposal_timely = self.synchrony.is_timely(
            proposal.block.header.time_ms, received_ms, proposal.round
        )
        self._blocks.setdefault(block_hash, proposal.block)
        self._note_round(proposal.proposer, proposal.round)
        return None

    def _get_proposer(self, round_: int) -> bytes:
        assert self._schedule_of_height is not None
        proposer: bytes = self._schedule_of_height.get_proposer(round_).sign_key
        return proposer

    def _handle_second_proposal(self, state: _RoundState, proposal: Proposal, out: list[Action]) -> None:
        """Another proposal for a round that has one: evidence if it is signed and signs other
        content (a block or pol_round), refused either way (the first proposal stands)."""
        assert state.proposal is not None
        first = SignedProposal.of(state.proposal, state.proposal_hash)
        key = (proposal.proposer, proposal.round, int(Step.PROPOSE))
        if key in self._evidence_seen:
            return self._reject(RejectionKind.SECOND_PROPOSAL, "a second, different proposal for the round")
        second = SignedProposal.of(proposal)
        if not is_conflicting_proposals(first, second):
            return self._reject(RejectionKind.SECOND_PROPOSAL, "a second, different proposal for the round")
        if not self._verify(second.proposer, second.signing_bytes(), second.signature):
            return self._reject(RejectionKind.BAD_SIGNATURE, "bad proposal signature")
        self._evidence_seen.add(key)
        out.append(RecordEvidence(make_conflicting_proposal_evidence(first, second)))
        return self._reject(RejectionKind.SECOND_PROPOSAL, "a second, different proposal for the round")

    def _check_proposal_block(self, proposal: Proposal) -> str | None:
        assert self._validators is not None
        header = proposal.block.header
        if header.height != proposal.height or header.chain_id != self.chain_id:
            return "proposed block is for another height or chain"
        if not NO_ROUND <= proposal.pol_round < proposal.round:
            return "pol_round is not before the proposal's round"
        if proposal.pol_round == NO_ROUND:
            if header.round != proposal.round or header.proposer != proposal.proposer:
                return "a fresh block must carry the proposal's round and proposer"
        elif header.round > proposal.pol_round or header.proposer != self._get_proposer(header.round):
            return "a re-proposed block must come from its own round's proposer, before pol_round"
        return None

    def _handle_vote(self, vote: Vote, out: list[Action], *, any_round: bool = False) -> None:
        if self._validators is None:
            return self._reject(RejectionKind.NOT_STARTED, "consensus has not started")
        if vote.chain_id != self.chain_id:
            return self._reject(RejectionKind.WRONG_CHAIN, "vote for another chain")
        if vote.kind not in (VoteKind.PREVOTE, VoteKind.PRECOMMIT):
            return self._reject(RejectionKind.MALFORMED, "unknown vote kind")
        if vote.height != self.height:
            return self._handle_other_height(vote, out, received_ms=0)  # a vote's arrival is no matter
        if self.decided:
            return None
        if vote.validator not in self._members:
            return self._reject(RejectionKind.NOT_VALIDATOR, "vote from a non-validator")
        if vote.round > self.round + ROUNDS_AHEAD_MAX and not any_round:
            return self._note_far_round(vote)
        state = self._rounds.get(vote.round)
        votes = _EMPTY_VOTES if state is None else state.votes(vote.kind)
        if votes.has(vote):
            return None  # a duplicate: nothing new
        existing = votes.by_validator.get(vote.validator)
        if existing is not None and vote.block_hash not in self._blocks:
            # A conflicting vote for a block we do not know: evidence at most (after checking it),
            # never stored, so an equivocator cannot fill our memory with votes for invented blocks.
            key = (vote.validator, vote.round, vote.kind)
            if key in self._evidence_seen:
                return None
        if not self._verify(vote.validator, vote.signing_bytes(), vote.signature):
            return self._reject(RejectionKind.BAD_SIGNATURE, "bad vote signature")
        if existing is not None:
            key = (vote.validator, vote.round, vote.kind)
            if key not in self._evidence_seen:
                self._evidence_seen.add(key)
                out.append(RecordEvidence(make_duplicate_vote_evidence(existing, vote)))
            if vote.block_hash not in self._blocks:
                return None
        self._add_vote(vote)
        return None

    def _add_vote(self, vote: Vote) -> None:
        assert self._validators is not None
        votes = self._get_round(vote.round).votes(vote.kind)
        votes.add(vote)
        if (
            vote.kind == VoteKind.PRECOMMIT
            and vote.block_hash != NIL
            and vote.block_hash not in self._precommit_quorums
            and votes.count(vote.block_hash) >= self._validators.quorum
        ):
            self._precommit_quorums[vote.block_hash] = vote.round
        self._note_round(vote.validator, vote.round)

    def _handle_other_height(self, message: Proposal | Vote, out: list[Action], received_ms: int) -> None:
        """A message for a height we are not at: a hint that its sender lags, or one to keep."""
        sender = message.proposer if isinstance(message, Proposal) else message.validator
        if sender not in self._members:
            return self._reject(RejectionKind.NOT_VALIDATOR, "message from a non-validator")
        if message.height < self.height:
            key = (sender, message.height)
            if sender != self._me and key not in self._behind_hinted and self._is_signed(message):
                self._behind_hinted.add(key)
                out.append(PeerBehind(sender, message.height))
            return None
        if message.height > self.height + HEIGHTS_AHEAD_MAX or message.round > ROUNDS_AHEAD_MAX:
            return None  # not invalid, only too far ahead to keep: block sync will bring us there
        if not self._is_signed(message):
            return self._reject(RejectionKind.BAD_SIGNATURE, "bad signature")
        self._buffer_future(message, received_ms)
        return None

    def _buffer_future(self, message: Proposal | Vote, received_ms: int) -> None:
        sender = message.proposer if isinstance(message, Proposal) else message.validator
        count = self._future_counts.get(sender, 0)
        if count >= FUTURE_MESSAGES_PER_VALIDATOR_MAX or any(m == message for m, _ in self._future):
            return
        self._future_counts[sender] = count + 1
        self._future.append((message, received_ms))

    def _note_far_round(self, message: Proposal | Vote) -> None:
        """A message too far ahead to store: remember only its sender's round, for the jump."""
        sender = message.proposer if isinstance(message, Proposal) else message.validator
        if sender not in self._members:
            return self._reject(RejectionKind.NOT_VALIDATOR, "message from a non-validator")
        if message.round <= self._max_round_seen.get(sender, NO_ROUND):
            return None
        if not self._is_signed(message):
            return self._reject(RejectionKind.BAD_SIGNATURE, "bad signature")
        self._note_round(sender, message.round)
        return None

    def _is_signed(self, message: Proposal | Vote) -> bool:
        if isinstance(message, Proposal):
            return self._verify(message.proposer, message.signing_bytes(), message.signature)
        return self._verify(message.validator, message.signing_bytes(), message.signature)

    def _note_round(self, sender: bytes, round_: int) -> None:
        if round_ > self._max_round_seen.get(sender, NO_ROUND):
            self._max_round_seen[sender] = round_

    def _get_round(self, round_: int) -> _RoundState:
        state = self._rounds.get(round_)
        if state is None:
            state = self._rounds[round_] = _RoundState()
        return state

    # -- the rules ---------------------------------------------------------------------------

    def _evaluate(self, out: list[Action]) -> None:
        """Apply the protocol's rules until none fires any more."""
        if self._validators is None:
            return
        while not self.decided:
            if self._try_decide(out):
                return
            if self._try_round_jump(out):
                continue
            if not self._apply_round_rules(out):
                return

    def _try_decide(self, out: list[Action]) -> bool:
        """A quorum of precommits for a block we hold, at any round, decides it."""
        for block_hash, round_ in self._precommit_quorums.items():
            block = self._blocks.get(block_hash)
            if block is None or not self._is_valid(block_hash, block):
                continue
            precommits = self._rounds[round_].precommits.get_votes_for(block_hash)
            signatures = tuple(
                sorted(
                    (CommitSig(v.validator, v.signature) for v in precommits), key=lambda sig: sig.validator
                )
            )
            self.decided = True
            out.append(CommitBlock(block, Commit(self.height, round_, block_hash, signatures)))
            return True
        return False

    def _try_round_jump(self, out: list[Action]) -> bool:
        """f + 1 distinct validators at rounds above ours: at least one correct one is there."""
        assert self._validators is not None
        needed = self._validators.max_faulty + 1
        if len(self._max_round_seen) < needed:
            return False
        target = sorted(self._max_round_seen.values(), reverse=True)[needed - 1]
        if target <= self.round:
            return False
        self._start_round(target, out)
        return True

    def _apply_round_rules(self, out: list[Action]) -> bool:
        """The current round's rules; True when one changed the state."""
        assert self._validators is not None
        quorum = self._validators.quorum
        state = self._get_round(self.round)
        proposal, block_hash = state.proposal, state.proposal_hash
        if self.step == Step.PROPOSE and proposal is not None:
            block = proposal.block
            if proposal.pol_round == NO_ROUND:
                # PBTS: a fresh proposal is judged in its own round, block time against our clock.
                ok = (
                    state.proposal_timely
                    and self._is_valid(block_hash, block)
                    and (self.locked_round == NO_ROUND or self.locked_hash == block_hash)
                )
                self._prevote(block_hash if ok else NIL, out)
                return True
            pol = self._rounds.get(proposal.pol_round)
            if pol is not None and pol.prevotes.count(block_hash) >= quorum:
                ok = self._is_valid(block_hash, block) and (
                    self.locked_round <= proposal.pol_round or self.locked_hash == block_hash
                )
                self._prevote(block_hash if ok else NIL, out)
                return True
        if self.step == Step.PREVOTE and _count_past_prevote(state) >= quorum:
            self._schedule(TimeoutStep.PREVOTE, out)
        if (
            self.step >= Step.PREVOTE
            and proposal is not None
            and not state.valid_seen
            and state.prevotes.count(block_hash) >= quorum
            and self._is_valid(block_hash, proposal.block)
        ):
            state.valid_seen = True
            if self.step == Step.PREVOTE:
                self.locked_round, self.locked_hash = self.round, block_hash
                self._locked_block = proposal.block
                self._precommit(block_hash, out)
            self.valid_round, self._valid_block = self.round, proposal.block
            return True
        if self.step == Step.PREVOTE and state.prevotes.count(NIL) >= quorum:
            self._precommit(NIL, out)
            return True
        if state.precommits.total >= quorum:
            self._schedule(TimeoutStep.PRECOMMIT, out)
        return False

    def _is_valid(self, block_hash: bytes, block: Block) -> bool:
        valid = self._validity.get(block_hash)
        if valid is None:
            header = block.header
            valid = (
                header.height == self.height
                and header.chain_id == self.chain_id
                and bool(self._driver.is_valid_block(block))
            )
            self._validity[block_hash] = valid
        return valid

    # -- state transitions -------------------------------------------------------------------

    def _start_round(self, round_: int, out: list[Action]) -> None:
        assert self._validators is not None
        self.round = round_
        self.step = Step.PROPOSE
        if self._signing and self._get_proposer(round_) == self._me:
            self._propose(out)
        self._schedule(TimeoutStep.PROPOSE, out)

    def _propose(self, out: list[Action]) -> None:
        assert self._identity is not None
        if not self._may_sign(self.round, Step.PROPOSE, None):
            return
        if self._valid_block is not None:
            block, pol_round = self._valid_block, self.valid_round
        else:
            block, pol_round = self._driver.get_block_to_propose(self.height, self.round), NO_ROUND
        proposal = sign_proposal(
            self._identity,
            chain_id=self.chain_id,
            height=self.height,
            round_=self.round,
            pol_round=pol_round,
            block=block,
        )
        block_hash = block.hash()
        self._persist(LastSigned(self.height, self.round, int(Step.PROPOSE), block_hash), out)
        out.append(Broadcast(proposal))
        for prevote in self._get_pol(pol_round, block_hash):
            out.append(Broadcast(prevote))
        state = self._get_round(self.round)
        state.proposal, state.proposal_hash = proposal, block_hash
        # The driver stamped the block with its own clock (or just after the parent's time).
        state.proposal_timely = True
        self._blocks.setdefault(block_hash, block)

    def _prevote(self, block_hash: bytes, out: list[Action]) -> None:
        self.step = Step.PREVOTE
        self._send_vote(VoteKind.PREVOTE, block_hash, out)

    def _precommit(self, block_hash: bytes, out: list[Action]) -> None:
        self.step = Step.PRECOMMIT
        self._send_vote(VoteKind.PRECOMMIT, block_hash, out)

    def _send_vote(self, kind: VoteKind, block_hash: bytes, out: list[Action]) -> None:
        """Sign, persist, send and count our own vote (when we sign and may sign it)."""
        if not self._signing or not self._may_sign(self.round, Step(kind), block_hash):
            return
        assert self._identity is not None
        own = self._own_votes.get((self.round, kind))
        if own is not None:
            if own.block_hash == block_hash:
                out.append(Broadcast(own))  # the identical vote, re-broadcast
            return
        vote = sign_vote(
            self._identity,
            chain_id=self.chain_id,
            kind=kind,
            height=self.height,
            round_=self.round,
            block_hash=block_hash,
        )
        if kind == VoteKind.PRECOMMIT and block_hash != NIL:
            out.append(PersistLock(self._compute_lock(block_hash)))
        self._persist(LastSigned(self.height, self.round, int(kind), block_hash), out)
        out.append(Broadcast(vote))
        self._handle_own_vote(vote)

    def _compute_lock(self, block_hash: bytes) -> ConsensusLock:
        block = self._blocks[block_hash]
        return ConsensusLock(self.height, self.round, block, self._get_pol(self.round, block_hash))

    def _get_pol(self, round_: int, block_hash: bytes) -> tuple[Vote, ...]:
        """The prevotes for `block_hash` at `round_`: the proof of lock a re-proposal carries."""
        state = self._rounds.get(round_)
        return () if state is None else state.prevotes.get_votes_for(block_hash)

    def _handle_own_vote(self, vote: Vote) -> None:
        self._own_votes[(vote.round, VoteKind(vote.kind))] = vote
        self._add_vote(vote)

    def _may_sign(self, round_: int, step: Step, block_hash: bytes | None) -> bool:
        """Never sign at or below the last signed (height, round, step), save the identical vote."""
        last = self._last_signed
        if last is None:
            return True
        here = (self.height, round_, int(step))
        before = (last.height, last.round, last.step)
        if here > before:
            return True
        return here == before and step != Step.PROPOSE and block_hash == last.block_hash

    def _persist(self, last: LastSigned, out: list[Action]) -> None:
        if self._last_signed != last:
            self._last_signed = last
            out.append(PersistLastSigned(last))

    def _schedule(self, step: TimeoutStep, out: list[Action]) -> None:
        key = (self.round, step)
        if key in self._scheduled:
            return
        self._scheduled.add(key)
        delay_ms = self.timeouts.compute_timeout_ms(step, self.round)
        schedule = self._schedule_of_height
        if step is TimeoutStep.PROPOSE and self.round == 0 and schedule is not None and schedule.is_probing:
            delay_ms //= PROBE_TIMEOUT_DIVISOR  # a probe of a validator seen down (chain/leader.py)
        out.append(ScheduleTimeout(self.height, self.round, step, delay_ms))

    def _rebroadcast(self, out: list[Action]) -> None:
        """Send again our own messages of the current and the previous round (some may be lost)."""
        if not self._signing or self._me is None:
            return
        for round_ in (self.round - 1, self.round):
            state = self._rounds.get(round_)
            if state is None:
                continue
            proposal = state.proposal
            if proposal is not None and proposal.proposer == self._me:
                out.append(Broadcast(proposal))
                for prevote in self._get_pol(proposal.pol_round, state.proposal_hash):
                    out.append(Broadcast(prevote))
            for kind in (VoteKind.PREVOTE, VoteKind.PRECOMMIT):
                own = self._own_votes.get((round_, kind))
                if own is not None:
                    out.append(Broadcast(own))


__all__ = [
    "BLOCK_TIME_MESSAGE_DELAY_GROWTH_PERCENT",
    "BLOCK_TIME_MESSAGE_DELAY_MS",
    "BLOCK_TIME_PRECISION_MS",
    "FUTURE_MESSAGES_PER_VALIDATOR_MAX",
    "HEIGHTS_AHEAD_MAX",
    "NIL",
    "REBROADCAST_MS",
    "ROUNDS_AHEAD_MAX",
    "TIMEOUT_PRECOMMIT_MS_BASE",
    "TIMEOUT_PRECOMMIT_MS_DELTA",
    "TIMEOUT_PRECOMMIT_MS_MAX",
    "TIMEOUT_PREVOTE_MS_BASE",
    "TIMEOUT_PREVOTE_MS_DELTA",
    "TIMEOUT_PREVOTE_MS_MAX",
    "TIMEOUT_PROPOSE_MS_BASE",
    "TIMEOUT_PROPOSE_MS_DELTA",
    "TIMEOUT_PROPOSE_MS_MAX",
    "Action",
    "Broadcast",
    "CommitBlock",
    "ConsensusCore",
    "ConsensusDriver",
    "ConsensusTimeouts",
    "PeerBehind",
    "PersistLastSigned",
    "PersistLock",
    "RecordEvidence",
    "ScheduleTimeout",
    "Step",
    "SynchronyParams",
    "Timeout",
    "TimeoutStep",
    "Verifier",
    "is_conflicting",
    "sign_proposal",
    "sign_vote",
]
