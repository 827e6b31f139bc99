"""The consensus core's rules, one validator at a time, with hand-made peers' messages.

The core under test is validator `V0` of a set of four (f = 1, quorum 3) unless a test says
otherwise. Its proposers at height 1 are V1, V2, V3, V0 for rounds 0, 1, 2, 3 (round-robin over the
sorted set). Peers' proposals and votes are signed here with their real keys, so every check the
core makes (signature, membership, proposer, bounds) is exercised for real.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medledger.chain.codec import decode, encode
from medledger.chain.consensus import (
    FUTURE_MESSAGES_PER_VALIDATOR_MAX,
    NIL,
    ROUNDS_AHEAD_MAX,
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
    Step,
    SynchronyParams,
    Timeout,
    TimeoutStep,
    sign_proposal,
    sign_vote,
)
from medledger.chain.errors import CodecError, InvalidCommitError
from medledger.chain.evidence import (
    ConflictingProposalEvidence,
    SignedProposal,
    make_conflicting_proposal_evidence,
    make_duplicate_vote_evidence,
    validate_evidence,
)
from medledger.chain.leader import PROBE_TIMEOUT_DIVISOR, LeaderSchedule, is_probe_height
from medledger.chain.limits import BLOCK_BYTES_MAX, UINT_MAX
from medledger.chain.store import ConsensusLock, LastSigned
from medledger.chain.types import (
    NO_ROUND,
    WIRE_TYPES,
    ZERO_HASH,
    Block,
    Commit,
    CommitSig,
    Header,
    Proposal,
    Validator,
    ValidatorSet,
    Vote,
    VoteKind,
)
from medledger.chain.validation import compute_tx_root, validate_commit
from medledger.crypto import Identity

CHAIN = "consensus-test"
TIMEOUTS = ConsensusTimeouts(
    timeout_propose_ms_base=100,
    timeout_propose_ms_delta=10,
    timeout_propose_ms_max=150,
    timeout_prevote_ms_base=50,
    timeout_prevote_ms_delta=20,
    timeout_prevote_ms_max=200,
    timeout_precommit_ms_base=60,
    timeout_precommit_ms_delta=30,
    timeout_precommit_ms_max=90,
    rebroadcast_ms=500,
)


def make_identities(n: int) -> list[Identity]:
    """n fixed identities, sorted by signing key (index i is validator Vi of the sorted set)."""
    identities = [Identity.from_secrets(bytes([i + 1]) * 32, bytes([i + 101]) * 32) for i in range(n)]
    return sorted(identities, key=lambda ident: ident.public.sign_key)


def make_validator_set(identities: Sequence[Identity]) -> ValidatorSet:
    return ValidatorSet.of(
        [
            Validator(f"v{i}", ident.public.sign_key, ident.public.enc_key)
            for i, ident in enumerate(identities)
        ]
    )


IDS = make_identities(4)
VALS = make_validator_set(IDS)
KEYS = [ident.public.sign_key for ident in IDS]


def make_block(height: int, round_: int, proposer: int, marker: int = 0, vals: ValidatorSet = VALS) -> Block:
    """A block proposed by validator `proposer` at (height, round); `marker` tells blocks apart."""
    header = Header(
        chain_id=CHAIN,
        height=height,
        round=round_,
        parent_hash=ZERO_HASH,
        time_ms=marker,
        proposer=vals.validators[proposer].sign_key,
        tx_count=0,
        tx_root=compute_tx_root(()),
        state_root=ZERO_HASH,
        validators_hash=vals.hash(),
        next_validators_hash=vals.hash(),
    )
    return Block(header, ())


class FakeDriver:
    """Builds marker blocks and calls every block valid unless its hash is in `invalid`."""

    def __init__(self, me: int, vals: ValidatorSet = VALS) -> None:
        self.me = me
        self.vals = vals
        self.invalid: set[bytes] = set()
        self.proposed: list[tuple[int, int]] = []

    def get_block_to_propose(self, height: int, round_: int) -> Block:
        self.proposed.append((height, round_))
        return make_block(height, round_, self.me, marker=1000 + round_, vals=self.vals)

    def is_valid_block(self, block: Block) -> bool:
        return block.hash() not in self.invalid


def make_core(
    me: int = 0,
    *,
    last_signed: LastSigned | None = None,
    lock: ConsensusLock | None = None,
    observer: bool = False,
    ids: Sequence[Identity] = IDS,
) -> tuple[ConsensusCore, FakeDriver]:
    vals = make_validator_set(ids)
    driver = FakeDriver(me, vals)
    core = ConsensusCore(
        chain_id=CHAIN,
        identity=None if observer else ids[me],
        driver=driver,
        last_signed=last_signed,
        lock=lock,
        timeouts=TIMEOUTS,
    )
    return core, driver


def vote(
    who: int, kind: VoteKind, round_: int, block: Block | None, height: int = 1, ids: Sequence[Identity] = IDS
) -> Vote:
    block_hash = NIL if block is None else block.hash()
    return sign_vote(ids[who], chain_id=CHAIN, kind=kind, height=height, round_=round_, block_hash=block_hash)


def prevote(who: int, round_: int, block: Block | None, height: int = 1) -> Vote:
    return vote(who, VoteKind.PREVOTE, round_, block, height)


def precommit(who: int, round_: int, block: Block | None, height: int = 1) -> Vote:
    return vote(who, VoteKind.PRECOMMIT, round_, block, height)


def proposal(who: int, round_: int, block: Block, pol_round: int = NO_ROUND, height: int = 1) -> Proposal:
    return sign_proposal(
        IDS[who], chain_id=CHAIN, height=height, round_=round_, pol_round=pol_round, block=block
    )


def feed(core: ConsensusCore, *messages: Proposal | Vote) -> list[Action]:
    actions: list[Action] = []
    for message in messages:
        if isinstance(message, Proposal):
            actions += core.on_proposal(message, received_ms=message.block.header.time_ms)
        else:
            actions += core.on_vote(message)
        assert core.last_rejection is None, core.last_rejection
    return actions


def own_votes(actions: Sequence[Action], kind: VoteKind | None = None) -> list[Vote]:
    return [
        a.message
        for a in actions
        if isinstance(a, Broadcast)
        and isinstance(a.message, Vote)
        and (kind is None or a.message.kind == kind)
    ]


def own_proposals(actions: Sequence[Action]) -> list[Proposal]:
    return [a.message for a in actions if isinstance(a, Broadcast) and isinstance(a.message, Proposal)]


def commits(actions: Sequence[Action]) -> list[CommitBlock]:
    return [a for a in actions if isinstance(a, CommitBlock)]


def timeouts(actions: Sequence[Action], step: TimeoutStep) -> list[ScheduleTimeout]:
    return [a for a in actions if isinstance(a, ScheduleTimeout) and a.step is step]


def fire(core: ConsensusCore, step: TimeoutStep, round_: int | None = None) -> list[Action]:
    return core.on_timeout(Timeout(core.height, core.round if round_ is None else round_, step))


def snapshot(core: ConsensusCore) -> tuple[Any, ...]:
    """What a rejected message must leave unchanged."""
    rounds = {
        r: (core.get_proposal(r), core.get_votes(r, VoteKind.PREVOTE), core.get_votes(r, VoteKind.PRECOMMIT))
        for r in range(core.round + ROUNDS_AHEAD_MAX + 2)
    }
    return (
        core.height,
        core.round,
        core.step,
        core.decided,
        core.locked_round,
        core.locked_hash,
        core.valid_round,
        core.last_signed,
        rounds,
    )


def assert_invalid(core: ConsensusCore, message: Proposal | Vote) -> None:
    """The one helper of rejection tests: no action, a reason, and no state change."""
    before = snapshot(core)
    actions = (
        core.on_proposal(message, received_ms=message.block.header.time_ms)
        if isinstance(message, Proposal)
        else core.on_vote(message)
    )
    assert actions == []
    assert core.last_rejection is not None
    assert snapshot(core) == before


def assert_persisted_before_sent(actions: Sequence[Action]) -> None:
    """Every own vote and proposal is preceded by the LastSigned record that covers it."""
    persisted: LastSigned | None = None
    for action in actions:
        if isinstance(action, PersistLastSigned):
            persisted = action.last
        elif isinstance(action, Broadcast):
            message = action.message
            if isinstance(message, Vote) and message.validator == KEYS[0]:
                assert persisted is not None
                covers = (message.height, message.round, message.kind, message.block_hash)
                assert (persisted.height, persisted.round, persisted.step, persisted.block_hash) == covers
            elif isinstance(message, Proposal) and message.proposer == KEYS[0]:
                assert persisted is not None
                assert (persisted.height, persisted.round, persisted.step) == (
                    message.height,
                    message.round,
                    Step.PROPOSE,
                )


# -- the happy path ----------------------------------------------------------------------------


def test_single_validator_commits_a_height_on_its_own() -> None:
    ids = make_identities(1)
    core, _ = make_core(ids=ids)
    actions = core.start_height(1, make_validator_set(ids))

    assert_persisted_before_sent(actions)
    [decided] = commits(actions)
    assert decided.commit.height == 1
    validate_commit(
        decided.commit,
        chain_id=CHAIN,
        validators=make_validator_set(ids),
        block_hash=decided.block.hash(),
        height=1,
    )
    kinds = [type(a).__name__ for a in actions if not isinstance(a, ScheduleTimeout)]
    assert kinds == [
        "PersistLastSigned",
        "Broadcast",  # the proposal
        "PersistLastSigned",
        "Broadcast",  # the prevote
        "PersistLock",
        "PersistLastSigned",
        "Broadcast",  # the precommit
        "CommitBlock",
    ]


def test_four_validators_commit_with_a_valid_certificate() -> None:
    core, _ = make_core()
    core.start_height(1, VALS)
    block = make_block(1, 0, proposer=1)

    actions = feed(core, proposal(1, 0, block))
    assert [(v.kind, v.block_hash) for v in own_votes(actions)] == [(VoteKind.PREVOTE, block.hash())]

    actions = feed(core, prevote(1, 0, block), prevote(2, 0, block))
    assert [(v.kind, v.block_hash) for v in own_votes(actions)] == [(VoteKind.PRECOMMIT, block.hash())]
    lock_index = next(i for i, a in enumerate(actions) if isinstance(a, PersistLock))
    vote_index = next(i for i, a in enumerate(actions) if isinstance(a, Broadcast))
    assert lock_index < vote_index
    assert (core.locked_round, core.locked_hash) == (0, block.hash())

    assert commits(feed(core, precommit(1, 0, block))) == []
    [decided] = commits(feed(core, precommit(3, 0, block)))
    assert decided.block == block
    assert {sig.validator for sig in decided.commit.signatures} == {KEYS[0], KEYS[1], KEYS[3]}
    validate_commit(decided.commit, chain_id=CHAIN, validators=VALS, block_hash=block.hash(), height=1)
    assert core.decided
    assert feed(core, precommit(2, 0, block)) == []  # the height is over


def test_proposer_rotates_round_robin_per_height_and_round() -> None:
    for me in range(4):
        for height in (1, 2, 3):
            core, driver = make_core(me)
            actions = core.start_height(height, VALS)  # a fresh core may start at any height
            is_proposer = VALS.get_proposer(height, 0).sign_key == KEYS[me]
            assert bool(own_proposals(actions)) == is_proposer
            assert driver.proposed == ([(height, 0)] if is_proposer else [])


def test_the_core_follows_its_leader_schedule_and_waits_less_on_a_probe() -> None:
    # Window 8 (two rotations); V2 proposed none of heights 1..8, so at a height outside a probe
    # cycle its slot goes to V3 at round 0, and a proposal from V2 there is refused.
    recent = tuple(KEYS[i] for i in (0, 1, 3, 0, 1, 3, 0, 1))
    height = next(h for h in range(9, 200) if h % 4 == 2 and not is_probe_height(h, 4, 8))
    skipping = LeaderSchedule(VALS, height, 8, recent)
    assert skipping.get_proposer(0).sign_key == KEYS[3]
    core, driver = make_core(3)
    actions = core.start_height(height, VALS, skipping)
    assert driver.proposed == [(height, 0)]
    assert [t.delay_ms for t in timeouts(actions, TimeoutStep.PROPOSE)] == [TIMEOUTS.timeout_propose_ms_base]
    other, _ = make_core(0)
    other.start_height(height, VALS, skipping)
    assert_invalid(other, proposal(2, 0, make_block(height, 0, 2), height=height))
    # In a probe cycle V2 gets its slot back, with a shorter propose timeout.
    probe = next(h for h in range(9, 1000) if h % 4 == 2 and is_probe_height(h, 4, 8))
    probing = LeaderSchedule(VALS, probe, 8, recent)
    assert probing.is_probing
    core, driver = make_core(0)
    actions = core.start_height(probe, VALS, probing)
    assert driver.proposed == []
    delays = [t.delay_ms for t in timeouts(actions, TimeoutStep.PROPOSE)]
    assert delays == [TIMEOUTS.timeout_propose_ms_base // PROBE_TIMEOUT_DIVISOR]
    with pytest.raises(ValueError, match="another height"):
        make_core(0)[0].start_height(probe + 1, VALS, probing)


def test_invalid_block_gets_a_nil_prevote() -> None:
    core, driver = make_core()
    core.start_height(1, VALS)
    block = make_block(1, 0, proposer=1)
    driver.invalid.add(block.hash())
    [sent] = own_votes(feed(core, proposal(1, 0, block)))
    assert sent.block_hash == NIL


def test_propose_timeout_prevotes_nil_and_quorum_of_nil_precommits_nil() -> None:
    core, _ = make_core()
    start = core.start_height(1, VALS)
    [armed] = timeouts(start, TimeoutStep.PROPOSE)
    assert (armed.height, armed.round, armed.delay_ms) == (1, 0, 100)

    [sent] = own_votes(fire(core, TimeoutStep.PROPOSE))
    assert (sent.kind, sent.block_hash) == (VoteKind.PREVOTE, NIL)
    [sent] = own_votes(feed(core, prevote(1, 0, None), prevote(2, 0, None)))
    assert (sent.kind, sent.block_hash) == (VoteKind.PRECOMMIT, NIL)
    assert core.locked_round == NO_ROUND


def test_split_prevotes_arm_the_prevote_timeout_then_precommit_nil() -> None:
    core, _ = make_core()
    core.start_height(1, VALS)
    block = make_block(1, 0, proposer=1)
    feed(core, proposal(1, 0, block))
    actions = feed(core, prevote(1, 0, None), prevote(2, 0, block))  # 2 for the block, 1 nil
    assert own_votes(actions) == []
    [armed] = timeouts(actions, TimeoutStep.PREVOTE)
    assert armed.delay_ms == 50
    [sent] = own_votes(fire(core, TimeoutStep.PREVOTE))
    assert (sent.kind, sent.block_hash) == (VoteKind.PRECOMMIT, NIL)


def test_precommit_timeout_starts_the_next_round() -> None:
    core, _ = make_core()
    core.start_height(1, VALS)
    fire(core, TimeoutStep.PROPOSE)
    feed(core, prevote(1, 0, None), prevote(2, 0, None))
    actions = feed(core, precommit(1, 0, None), precommit(2, 0, None))
    [armed] = timeouts(actions, TimeoutStep.PRECOMMIT)
    assert armed.delay_ms == 60
    actions = fire(core, TimeoutStep.PRECOMMIT)
    assert (core.round, core.step) == (1, Step.PROPOSE)
    assert [t.round for t in timeouts(actions, TimeoutStep.PROPOSE)] == [1]
    assert fire(core, TimeoutStep.PRECOMMIT, round_=0) == []  # stale: ignored


def test_commit_on_a_quorum_of_precommits_from_an_earlier_round() -> None:
    core, _ = make_core()
    core.start_height(1, VALS)
    block = make_block(1, 0, proposer=1)
    feed(core, proposal(1, 0, block))
    fire(core, TimeoutStep.PROPOSE)  # too late: it already prevoted; ignored
    feed(core, prevote(1, 0, None), prevote(2, 0, None))  # precommits nil
    feed(core, precommit(1, 0, None), precommit(2, 0, None))
    fire(core, TimeoutStep.PRECOMMIT)
    assert core.round == 1
    # Late precommits of round 0 for the block (from validators that saw its prevotes) decide it.
    assert commits(feed(core, precommit(1, 0, block), precommit(2, 0, block))) == []
    [decided] = commits(feed(core, precommit(3, 0, block)))
    assert (decided.commit.round, decided.block) == (0, block)
    validate_commit(decided.commit, chain_id=CHAIN, validators=VALS, block_hash=block.hash(), height=1)


# -- locks ---------------------------------------------------------------------------------


def lock_on_round_0(core: ConsensusCore) -> Block:
    """Drive V0 to lock on V1's block at round 0, then move to round 1 (no decision)."""
    core.start_height(1, VALS)
    block_a = make_block(1, 0, proposer=1, marker=1)
    feed(core, proposal(1, 0, block_a), prevote(1, 0, block_a), prevote(2, 0, block_a))
    assert (core.locked_round, core.locked_hash) == (0, block_a.hash())
    feed(core, precommit(1, 0, None), precommit(2, 0, None))
    fire(core, TimeoutStep.PRECOMMIT)
    assert core.round == 1
    return block_a


def test_locked_validator_prevotes_nil_for_another_block_without_proof_of_lock() -> None:
    core, _ = make_core()
    lock_on_round_0(core)
    block_b = make_block(1, 1, proposer=2, marker=2)
    [sent] = own_votes(feed(core, proposal(2, 1, block_b)))
    assert sent.block_hash == NIL
    assert core.locked_round == 0


def test_locked_validator_prevotes_its_locked_block_again() -> None:
    core, _ = make_core()
    block_a = lock_on_round_0(core)
    [sent] = own_votes(feed(core, proposal(2, 1, block_a, pol_round=0)))
    assert sent.block_hash == block_a.hash()


def test_proof_of_lock_at_a_later_round_releases_the_lock_only_with_its_quorum() -> None:
    core, _ = make_core()
    lock_on_round_0(core)
    fire(core, TimeoutStep.PROPOSE)  # round 1: nil
    feed(core, precommit(1, 1, None), precommit(2, 1, None))
    fire(core, TimeoutStep.PRECOMMIT)
    assert core.round == 2
    block_b = make_block(1, 1, proposer=2, marker=2)
    # Round 2: V3 re-proposes B with a proof of lock from round 1 (≥ our locked round 0).
    assert own_votes(feed(core, proposal(3, 2, block_b, pol_round=1))) == []  # waits for the proof
    assert own_votes(feed(core, prevote(1, 1, block_b), prevote(2, 1, block_b))) == []  # 2 < quorum
    [sent] = own_votes(feed(core, prevote(3, 1, block_b)))
    assert sent.block_hash == block_b.hash()


def test_proof_of_lock_older_than_the_lock_does_not_release_it() -> None:
    core, _ = make_core()
    core.start_height(1, VALS)
    block_b = make_block(1, 0, proposer=1, marker=2)
    fire(core, TimeoutStep.PROPOSE)  # round 0: we prevote nil, B's proposal never reached us
    feed(core, prevote(1, 0, block_b), prevote(2, 0, block_b), prevote(3, 0, block_b))
    feed(core, precommit(1, 0, None), precommit(2, 0, None))
    fire(core, TimeoutStep.PRECOMMIT)
    block_a = make_block(1, 1, proposer=2, marker=1)
    feed(core, proposal(2, 1, block_a), prevote(2, 1, block_a), prevote(3, 1, block_a))
    assert (core.locked_round, core.locked_hash) == (1, block_a.hash())
    feed(core, precommit(2, 1, None), precommit(3, 1, None))
    fire(core, TimeoutStep.PRECOMMIT)
    # Round 2: B with its (complete) proof of lock from round 0 < locked round 1.
    [sent] = own_votes(feed(core, proposal(3, 2, block_b, pol_round=0)))
    assert sent.block_hash == NIL
    assert core.locked_hash == block_a.hash()


def test_proposer_reproposes_its_valid_block_with_the_proof_of_lock() -> None:
    core, driver = make_core()
    block_a = lock_on_round_0(core)
    for round_ in (1, 2):
        fire(core, TimeoutStep.PROPOSE)
        feed(core, precommit(1, round_, None), precommit(2, round_, None))
        actions = fire(core, TimeoutStep.PRECOMMIT)
    assert core.round == 3  # V0 proposes at round 3
    [sent] = own_proposals(actions)
    assert (sent.block, sent.pol_round) == (block_a, 0)
    assert driver.proposed == []
    forwarded = [v for v in own_votes(actions, VoteKind.PREVOTE) if v.round == 0]
    assert {v.validator for v in forwarded} == {KEYS[0], KEYS[1], KEYS[2]}


# -- block time (PBTS) -------------------------------------------------------------------------

SYNC = SynchronyParams()
PRECISION = SYNC.precision_ms
DELAY = SYNC.message_delay_ms
BLOCK_TIME = 1_000_000


def prevote_for_fresh_proposal(received_ms: int, round_: int = 0, block_time_ms: int = BLOCK_TIME) -> bytes:
    """The block hash V0 prevotes for V(round+1)'s fresh proposal received at `received_ms`."""
    core, _ = make_core()
    core.start_height(1, VALS)
    for r in range(round_):
        fire(core, TimeoutStep.PROPOSE, r)
        feed(core, precommit(1, r, None), precommit(2, r, None))
        fire(core, TimeoutStep.PRECOMMIT, r)
    assert core.round == round_
    proposer = (1 + round_) % len(IDS)
    block = make_block(1, round_, proposer=proposer, marker=block_time_ms)
    [sent] = own_votes(core.on_proposal(proposal(proposer, round_, block), received_ms=received_ms))
    assert core.last_rejection is None
    assert sent.block_hash in (NIL, block.hash())
    return sent.block_hash


def test_trust_3_a_proposal_stamped_far_in_the_future_is_prevoted_nil() -> None:
    """The attack of the issue: time_ms = 2^64 - 1 expires every grant. Honest clocks refuse it."""
    assert prevote_for_fresh_proposal(received_ms=BLOCK_TIME, block_time_ms=UINT_MAX) == NIL
    assert prevote_for_fresh_proposal(received_ms=BLOCK_TIME, block_time_ms=0) == NIL  # far past
    assert prevote_for_fresh_proposal(received_ms=BLOCK_TIME) != NIL  # on time: the block


@pytest.mark.parametrize(
    ("offset_ms", "timely"),
    [
        (-PRECISION - 1, False),  # block time more than PRECISION ahead of our clock
        (-PRECISION, True),
        (0, True),
        (DELAY + PRECISION, True),
        (DELAY + PRECISION + 1, False),  # arrived later than MSGDELAY + PRECISION after its time
    ],
)
def test_trust_3_timely_predicate_at_its_boundaries(offset_ms: int, timely: bool) -> None:
    """received - block_time must lie in [-PRECISION, MSGDELAY + PRECISION], both ends included."""
    assert SYNC.is_timely(BLOCK_TIME, BLOCK_TIME + offset_ms, 0) is timely
    assert (prevote_for_fresh_proposal(BLOCK_TIME + offset_ms) != NIL) is timely


def test_trust_3_message_delay_grows_with_the_round() -> None:
    """A bound too tight for the network costs rounds, not liveness: MSGDELAY grows 10 % a round."""
    late = BLOCK_TIME + DELAY + PRECISION + DELAY // 10
    assert prevote_for_fresh_proposal(late, round_=0) == NIL
    assert prevote_for_fresh_proposal(late, round_=1) != NIL
    assert SYNC.compute_message_delay_ms(3) == DELAY + 3 * DELAY // 10


@given(
    block_time_ms=st.integers(0, UINT_MAX),
    received_ms=st.integers(0, UINT_MAX),
    round_=st.integers(0, 10_000),
    precision_ms=st.integers(0, 10_000),
    delay_ms=st.integers(0, 100_000),
)
def test_trust_3_timely_predicate_is_the_pbts_window(
    block_time_ms: int, received_ms: int, round_: int, precision_ms: int, delay_ms: int
) -> None:
    params = SynchronyParams(precision_ms=precision_ms, message_delay_ms=delay_ms)
    delay = params.compute_message_delay_ms(round_)
    assert delay >= delay_ms  # never shrinks with the round
    expected = -precision_ms <= received_ms - block_time_ms <= delay + precision_ms
    assert params.is_timely(block_time_ms, received_ms, round_) is expected
    if expected:  # a later round never makes a timely proposal untimely
        assert params.is_timely(block_time_ms, received_ms, round_ + 1)


def test_trust_3_a_reproposed_locked_block_is_not_judged_by_its_time_again() -> None:
    """The POL exception: a block a quorum prevoted (so judged timely in its round) stays votable."""
    core, _ = make_core()
    core.start_height(1, VALS)
    block_a = make_block(1, 0, proposer=1, marker=BLOCK_TIME)
    core.on_proposal(proposal(1, 0, block_a), received_ms=BLOCK_TIME)
    feed(core, prevote(1, 0, block_a), prevote(2, 0, block_a))
    assert core.locked_hash == block_a.hash()
    feed(core, precommit(1, 0, None), precommit(2, 0, None))
    fire(core, TimeoutStep.PRECOMMIT)
    assert core.round == 1
    much_later = BLOCK_TIME + 100 * (DELAY + PRECISION)
    [sent] = own_votes(core.on_proposal(proposal(2, 1, block_a, pol_round=0), received_ms=much_later))
    assert sent.block_hash == block_a.hash()
    # A fresh block received as late is refused (the rule applies where the proposer made it).
    core2, _ = make_core()
    core2.start_height(1, VALS)
    fresh = make_block(1, 0, proposer=1, marker=BLOCK_TIME)
    [nil] = own_votes(core2.on_proposal(proposal(1, 0, fresh), received_ms=much_later))
    assert nil.block_hash == NIL


def test_trust_3_a_buffered_proposal_is_judged_by_when_it_arrived() -> None:
    """A next-height proposal waits in the buffer; its receipt time goes with it, not a later one."""
    core, _ = make_core()
    core.start_height(1, VALS)
    block2 = make_block(2, 0, proposer=2, marker=BLOCK_TIME)
    assert core.on_proposal(proposal(2, 0, block2, height=2), received_ms=BLOCK_TIME - PRECISION - 1) == []
    decide_height_1(core)
    [sent] = own_votes(core.start_height(2, VALS))
    assert sent.block_hash == NIL  # it arrived more than PRECISION before its own time


def test_trust_3_synchrony_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="precision_ms"):
        SynchronyParams(precision_ms=-1)


# -- rounds and timeouts -----------------------------------------------------------------------


def test_f_plus_one_validators_at_a_higher_round_make_it_jump() -> None:
    core, _ = make_core()
    core.start_height(1, VALS)
    block = make_block(1, 5, proposer=2)
    feed(core, prevote(2, 5, block))
    assert core.round == 0  # f = 1 validator could be lying
    feed(core, prevote(2, 5, None), precommit(2, 5, None))  # same validator: still one
    assert core.round == 0
    actions = feed(core, precommit(3, 5, None))
    assert (core.round, core.step) == (5, Step.PROPOSE)
    assert [t.round for t in timeouts(actions, TimeoutStep.PROPOSE)] == [5]


def test_round_jump_beyond_the_storage_bound_remembers_only_the_round() -> None:
    core, _ = make_core()
    core.start_height(1, VALS)
    far = ROUNDS_AHEAD_MAX + 50
    feed(core, prevote(1, far, None))
    assert core.get_votes(far, VoteKind.PREVOTE) == ()
    feed(core, prevote(2, far + 3, None))
    assert core.round == far  # the second-highest of the f + 1 = 2 senders
    assert core.get_votes(far, VoteKind.PREVOTE) == ()


def test_timeouts_grow_linearly_with_the_round_and_are_capped() -> None:
    assert [TIMEOUTS.compute_timeout_ms(TimeoutStep.PROPOSE, r) for r in (0, 1, 4, 5, 99)] == [
        100,
        110,
        140,
        150,
        150,
    ]
    assert [TIMEOUTS.compute_timeout_ms(TimeoutStep.PREVOTE, r) for r in (0, 2, 7, 8, 10**6)] == [
        50,
        90,
        190,
        200,
        200,
    ]
    assert [TIMEOUTS.compute_timeout_ms(TimeoutStep.PRECOMMIT, r) for r in (0, 1, 2)] == [60, 90, 90]
    assert TIMEOUTS.compute_timeout_ms(TimeoutStep.REBROADCAST, 7) == 500
    core, _ = make_core()
    core.start_height(1, VALS)
    delays = []
    for round_ in range(8):
        fire(core, TimeoutStep.PROPOSE)
        feed(core, precommit(1, round_, None), precommit(2, round_, None))
        delays += [t.delay_ms for t in timeouts(fire(core, TimeoutStep.PRECOMMIT), TimeoutStep.PROPOSE)]
    assert delays == [110, 120, 130, 140, 150, 150, 150, 150]


def test_invalid_timeout_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max"):
        ConsensusTimeouts(timeout_prevote_ms_base=10, timeout_prevote_ms_max=5)
    with pytest.raises(ValueError, match="negative"):
        ConsensusTimeouts(timeout_propose_ms_delta=-1)


def test_rebroadcast_resends_own_messages_of_this_and_the_previous_round() -> None:
    core, _ = make_core()
    start = core.start_height(1, VALS)
    [armed] = timeouts(start, TimeoutStep.REBROADCAST)
    fire(core, TimeoutStep.PROPOSE)
    feed(core, prevote(1, 0, None), prevote(2, 0, None))
    feed(core, precommit(1, 0, None), precommit(2, 0, None))
    fire(core, TimeoutStep.PRECOMMIT)
    fire(core, TimeoutStep.PROPOSE)  # round 1 prevote nil
    actions = core.on_timeout(armed.timeout)
    assert sorted((v.round, v.kind) for v in own_votes(actions)) == [
        (0, VoteKind.PREVOTE),
        (0, VoteKind.PRECOMMIT),
        (1, VoteKind.PREVOTE),
    ]
    assert not any(isinstance(a, PersistLastSigned) for a in actions)  # nothing newly signed
    assert [t.step for t in timeouts(actions, TimeoutStep.REBROADCAST)] == [TimeoutStep.REBROADCAST]


# -- equivocation, crash safety ----------------------------------------------------------------


def test_conflicting_votes_become_evidence_and_count_once() -> None:
    core, _ = make_core()
    core.start_height(1, VALS)
    block = make_block(1, 0, proposer=1)
    other = make_block(1, 0, proposer=1, marker=7)
    first, second = prevote(2, 0, block), prevote(2, 0, other)
    feed(core, first)
    actions = feed(core, second)
    assert actions == [RecordEvidence(make_duplicate_vote_evidence(first, second))]
    assert feed(core, second) == []  # reported once
    assert core.get_votes(0, VoteKind.PREVOTE) == (first,)


def test_trust_12_conflicting_proposals_become_evidence() -> None:
    """A proposer that signs two proposals for one round is caught: evidence, reported once."""
    core, _ = make_core()
    core.start_height(1, VALS)
    first = proposal(1, 0, make_block(1, 0, proposer=1))
    second = proposal(1, 0, make_block(1, 0, proposer=1, marker=5))
    feed(core, first)
    before = snapshot(core)
    actions = core.on_proposal(second, received_ms=5)
    assert actions == [
        RecordEvidence(
            make_conflicting_proposal_evidence(SignedProposal.of(first), SignedProposal.of(second))
        )
    ]
    [evidence] = [a.evidence for a in actions if isinstance(a, RecordEvidence)]
    assert isinstance(evidence, ConflictingProposalEvidence)
    validate_evidence(evidence, chain_id=CHAIN, validators=VALS)  # what the ledger will check
    assert core.last_rejection is not None  # the second proposal is still refused
    assert snapshot(core) == before
    assert core.on_proposal(second, received_ms=5) == []  # reported once
    third = proposal(1, 0, make_block(1, 0, proposer=1, marker=6))
    assert core.on_proposal(third, received_ms=6) == []  # one slot, one report


def test_an_equivocators_vote_for_a_known_block_counts_for_that_block() -> None:
    core, _ = make_core()
    core.start_height(1, VALS)
    block = make_block(1, 0, proposer=1)
    feed(core, prevote(2, 0, None))  # V2 first prevotes nil ...
    feed(core, proposal(1, 0, block))
    actions = feed(core, prevote(1, 0, block), prevote(2, 0, block))  # ... then the block
    assert any(isinstance(a, RecordEvidence) for a in actions)
    [sent] = own_votes(actions, VoteKind.PRECOMMIT)  # V0, V1 and V2 signed prevotes for the block
    assert sent.block_hash == block.hash()


def test_restart_resends_the_identical_last_vote_and_signs_nothing_below_it() -> None:
    block = make_block(1, 0, proposer=1)
    fresh, _ = make_core()
    fresh.start_height(1, VALS)
    [original] = own_votes(feed(fresh, proposal(1, 0, block)))

    last = LastSigned(1, 0, int(Step.PREVOTE), block.hash())
    core, _ = make_core(last_signed=last)
    actions = core.start_height(1, VALS)
    assert own_votes(actions) == [original]  # the same bytes, the same signature
    assert not any(isinstance(a, PersistLastSigned) for a in actions)
    assert core.step == Step.PREVOTE
    # The proposal it prevoted comes again: no second prevote; the precommit, a later step, is allowed.
    assert own_votes(feed(core, proposal(1, 0, block))) == []
    [sent] = own_votes(feed(core, prevote(1, 0, block), prevote(2, 0, block)))
    assert (sent.kind, sent.round) == (VoteKind.PRECOMMIT, 0)


def test_restart_after_a_nil_precommit_signs_nothing_more_at_that_round() -> None:
    core, _ = make_core(last_signed=LastSigned(1, 0, int(Step.PRECOMMIT), NIL))
    actions = core.start_height(1, VALS)
    assert [(v.kind, v.block_hash) for v in own_votes(actions)] == [(VoteKind.PRECOMMIT, NIL)]
    [armed] = timeouts(actions, TimeoutStep.PRECOMMIT)  # it will not wait for votes lost in the crash
    block = make_block(1, 0, proposer=1)
    assert own_votes(feed(core, proposal(1, 0, block), prevote(1, 0, block), prevote(2, 0, block))) == []
    assert core.locked_round == NO_ROUND  # too late to lock: it precommitted nil before the crash
    assert core.on_timeout(armed.timeout)
    assert core.round == 1


def test_restart_never_reproposes_at_the_round_it_proposed() -> None:
    # V0 proposes at round 3; it crashed right after signing that proposal.
    last = LastSigned(1, 3, int(Step.PROPOSE), make_block(1, 3, proposer=0).hash())
    core, driver = make_core(last_signed=last)
    actions = core.start_height(1, VALS)
    assert core.round == 3
    assert own_proposals(actions) == []
    assert driver.proposed == []
    [sent] = own_votes(fire(core, TimeoutStep.PROPOSE))  # it still votes at that round
    assert (sent.round, sent.block_hash) == (3, NIL)


def test_a_last_signed_at_a_later_height_blocks_all_signing() -> None:
    core, driver = make_core(me=1, last_signed=LastSigned(2, 0, int(Step.PRECOMMIT), NIL))
    actions = core.start_height(1, VALS)  # V1 is round 0's proposer
    assert own_proposals(actions) == []
    assert own_votes(fire(core, TimeoutStep.PROPOSE)) == []
    assert not any(isinstance(a, (PersistLastSigned, Broadcast)) for a in actions)
    assert driver.proposed == []


def test_restart_restores_the_lock_and_its_proof() -> None:
    block_a = make_block(1, 0, proposer=1, marker=1)
    pol = (prevote(0, 0, block_a), prevote(1, 0, block_a), prevote(2, 0, block_a))
    lock = ConsensusLock(1, 0, block_a, pol)
    assert decode(ConsensusLock, encode(lock), max_bytes=BLOCK_BYTES_MAX) == lock
    last = LastSigned(1, 2, int(Step.PREVOTE), NIL)
    core, _ = make_core(last_signed=last, lock=lock)
    core.start_height(1, VALS)
    assert (core.round, core.locked_round, core.locked_hash) == (2, 0, block_a.hash())
    feed(core, precommit(1, 2, None), precommit(2, 2, None))
    actions = fire(core, TimeoutStep.PRECOMMIT)
    assert core.round == 3  # V0's turn: it re-proposes the locked block with its proof
    [sent] = own_proposals(actions)
    assert (sent.block, sent.pol_round) == (block_a, 0)
    assert set(own_votes(actions, VoteKind.PREVOTE)) >= set(pol)


def test_a_lock_from_a_past_height_is_ignored() -> None:
    old = ConsensusLock(1, 0, make_block(1, 0, proposer=1), ())
    core, _ = make_core(lock=old)
    core.start_height(2, VALS)
    assert core.locked_round == NO_ROUND


# -- invalid input -----------------------------------------------------------------------------


def test_invalid_messages_are_ignored_without_state_change() -> None:
    core, _ = make_core()
    core.start_height(1, VALS)
    block = make_block(1, 0, proposer=1)
    outsider = Identity.from_secrets(b"\x77" * 32, b"\x78" * 32)
    good_vote = prevote(1, 0, block)

    assert_invalid(core, dataclasses.replace(good_vote, signature=bytes(64)))
    assert_invalid(core, dataclasses.replace(good_vote, block_hash=b"\x01" * 32))  # signature no longer fits
    assert_invalid(core, dataclasses.replace(good_vote, chain_id="other"))
    assert_invalid(core, dataclasses.replace(good_vote, kind=3))
    assert_invalid(
        core, sign_vote(outsider, chain_id=CHAIN, kind=VoteKind.PREVOTE, height=1, round_=0, block_hash=NIL)
    )
    assert_invalid(core, proposal(2, 0, make_block(1, 0, proposer=2)))  # V2 is not round 0's proposer
    assert_invalid(core, dataclasses.replace(proposal(1, 0, block), signature=bytes(64)))
    tampered = Block(dataclasses.replace(block.header, time_ms=99), ())
    assert_invalid(core, dataclasses.replace(proposal(1, 0, block), block=tampered))
    assert_invalid(core, proposal(1, 0, make_block(2, 0, proposer=1)))  # block of another height
    assert_invalid(core, proposal(1, 0, make_block(1, 1, proposer=1)))  # fresh block of another round
    stale = make_block(1, 0, proposer=3)  # a "re-proposal" whose header's proposer is wrong
    assert_invalid(core, proposal(2, 1, stale, pol_round=0))
    # A second, different proposal of the round's proposer is refused too; forged, it is no
    # evidence either (signed, it is: see test_trust_12_conflicting_proposals_become_evidence).
    feed(core, proposal(1, 0, block))
    second = proposal(1, 0, make_block(1, 0, proposer=1, marker=5))
    assert_invalid(core, dataclasses.replace(second, signature=bytes(64)))


def test_invalid_before_start_every_message_is_refused() -> None:
    core, _ = make_core()
    assert_invalid(core, prevote(1, 0, None))
    assert_invalid(core, proposal(1, 0, make_block(1, 0, proposer=1)))


def test_far_future_messages_are_dropped_but_not_held_against_the_sender() -> None:
    core, _ = make_core()
    core.start_height(1, VALS)
    assert core.on_vote(prevote(1, 0, None, height=3)) == []  # beyond HEIGHTS_AHEAD_MAX
    assert core.last_rejection is None
    assert core.on_vote(prevote(1, ROUNDS_AHEAD_MAX + 1, None, height=2)) == []
    assert core.last_rejection is None


def decide_height_1(core: ConsensusCore) -> None:
    block = make_block(1, 0, proposer=1)
    feed(core, proposal(1, 0, block), prevote(1, 0, block), prevote(2, 0, block))
    assert commits(feed(core, precommit(1, 0, block), precommit(2, 0, block)))
    assert core.decided


def test_next_height_messages_are_buffered_and_replayed() -> None:
    core, _ = make_core()
    core.start_height(1, VALS)
    block2 = make_block(2, 0, proposer=2)  # V2 proposes at (2, 0)
    assert feed(core, proposal(2, 0, block2, height=2)) == []
    decide_height_1(core)
    actions = core.start_height(2, VALS)
    [sent] = own_votes(actions)
    assert (sent.height, sent.block_hash) == (2, block2.hash())


def test_next_height_buffer_is_bounded_per_validator() -> None:
    core, _ = make_core()
    core.start_height(1, VALS)
    for i in range(FUTURE_MESSAGES_PER_VALIDATOR_MAX):  # an equivocator floods height 2, round 0
        flood = sign_vote(
            IDS[1], chain_id=CHAIN, kind=VoteKind.PREVOTE, height=2, round_=0, block_hash=bytes([i]) * 32
        )
        feed(core, flood)
    over_quota, other = prevote(1, 1, None, height=2), prevote(2, 1, None, height=2)
    feed(core, over_quota, other)
    decide_height_1(core)
    core.start_height(2, VALS)
    assert core.get_votes(1, VoteKind.PREVOTE) == (other,)
    assert [v.validator for v in core.get_votes(0, VoteKind.PREVOTE)] == [KEYS[1]]  # the first only


def test_an_old_height_message_says_its_sender_is_behind_once() -> None:
    core, _ = make_core()
    core.start_height(5, VALS)
    behind = prevote(2, 3, None, height=2)
    assert core.on_vote(behind) == [PeerBehind(KEYS[2], 2)]
    assert core.on_vote(behind) == []
    assert core.on_vote(dataclasses.replace(behind, signature=bytes(64))) == []


# -- certificates from block sync, observers -----------------------------------------------


def make_commit(block: Block, signers: Sequence[int], round_: int = 0) -> Commit:
    sigs = [CommitSig(KEYS[i], precommit(i, round_, block, block.header.height).signature) for i in signers]
    return Commit(block.header.height, round_, block.hash(), tuple(sorted(sigs, key=lambda s: s.validator)))


def test_a_certificate_from_a_peer_decides_the_height() -> None:
    core, _ = make_core()
    core.start_height(1, VALS)
    block = make_block(1, 4, proposer=1)
    commit = make_commit(block, [1, 2, 3], round_=4)
    [decided] = commits(core.on_commit(block, commit))
    assert core.last_rejection is None
    validate_commit(decided.commit, chain_id=CHAIN, validators=VALS, block_hash=block.hash(), height=1)


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b, c: (b, dataclasses.replace(c, signatures=c.signatures[:2])), id="too-few"),
        pytest.param(
            lambda b, c: (b, dataclasses.replace(c, signatures=(c.signatures[0],) * 3)), id="repeated-signer"
        ),
        pytest.param(lambda b, c: (make_block(1, 0, proposer=1, marker=3), c), id="other-block"),
        pytest.param(
            lambda b, c: (
                b,
                dataclasses.replace(
                    c, signatures=(CommitSig(c.signatures[0].validator, bytes(64)), *c.signatures[1:])
                ),
            ),
            id="bad-signature",
        ),
    ],
)
def test_invalid_certificate_decides_nothing(mutate: Callable[[Block, Commit], tuple[Block, Commit]]) -> None:
    core, _ = make_core()
    core.start_height(1, VALS)
    block = make_block(1, 0, proposer=1)
    bad_block, bad_commit = mutate(block, make_commit(block, [1, 2, 3]))
    with pytest.raises(InvalidCommitError):
        validate_commit(bad_commit, chain_id=CHAIN, validators=VALS, block_hash=bad_block.hash(), height=1)
    before = snapshot(core)
    assert core.on_commit(bad_block, bad_commit) == []
    assert core.last_rejection is not None
    assert snapshot(core) == before


def test_a_valid_certificate_for_a_block_the_driver_rejects_decides_nothing() -> None:
    core, driver = make_core()
    core.start_height(1, VALS)
    block = make_block(1, 0, proposer=1)
    driver.invalid.add(block.hash())
    assert commits(core.on_commit(block, make_commit(block, [1, 2, 3]))) == []
    assert core.last_rejection is not None
    assert not core.decided


def test_observer_follows_and_decides_without_signing() -> None:
    core, driver = make_core(observer=True)
    actions = core.start_height(1, VALS)
    block = make_block(1, 0, proposer=1)
    actions += feed(core, proposal(1, 0, block), prevote(1, 0, block), prevote(2, 0, block))
    actions += fire(core, TimeoutStep.PROPOSE)
    actions += feed(core, precommit(1, 0, block), precommit(2, 0, block), precommit(3, 0, block))
    assert not core.is_signing
    assert not any(isinstance(a, (PersistLastSigned, PersistLock, Broadcast)) for a in actions)
    [decided] = commits(actions)
    assert decided.block == block
    assert driver.proposed == []


def test_heights_never_go_back() -> None:
    core, _ = make_core()
    core.start_height(3, VALS)
    with pytest.raises(ValueError, match="does not follow"):
        core.start_height(3, VALS)


# -- the Proposal wire type --------------------------------------------------------------------


def test_proposal_round_trips_through_the_codec() -> None:
    assert Proposal in WIRE_TYPES
    for pol_round in (NO_ROUND, 0, 2):
        message = proposal(1, 3, make_block(1, 3 if pol_round == NO_ROUND else 0, proposer=1), pol_round)
        raw = encode(message)
        assert decode(Proposal, raw, max_bytes=BLOCK_BYTES_MAX) == message
    assert decode(
        Proposal, encode(proposal(1, 0, make_block(1, 0, 1))), max_bytes=BLOCK_BYTES_MAX
    ).pol_round == (NO_ROUND)


def test_invalid_proposal_encodings_are_refused() -> None:
    good = encode(proposal(1, 2, make_block(1, 0, proposer=1), pol_round=1))
    raw_pol_1 = b"\xa9pol_round\x02"  # wire value round + 1
    assert raw_pol_1 in good
    with pytest.raises(CodecError):  # pol_round 2 is not before round 2
        decode(Proposal, good.replace(raw_pol_1, b"\xa9pol_round\x03"), max_bytes=BLOCK_BYTES_MAX)
    with pytest.raises(ValueError, match="pol_round"):
        proposal(1, 0, make_block(1, 0, 1), pol_round=0)


def test_invalid_vote_made_of_a_proposal_signature() -> None:
    block = make_block(1, 0, proposer=1)
    message = proposal(1, 0, block)
    as_vote = Vote(CHAIN, int(VoteKind.PREVOTE), 1, 0, block.hash(), KEYS[1], message.signature)
    core, _ = make_core()
    core.start_height(1, VALS)
    assert_invalid(core, as_vote)


# -- a single validator is n = 1 ----------------------------------------------------------------


def test_a_single_validator_commits_alone_with_its_precommit_persisted_before_it_is_sent() -> None:
    """n = 1 needs no special path: the core proposes, prevotes and precommits by itself, and the
    one precommit is the commit certificate (validated like any other)."""
    solo_ids = IDS[:1]
    core, driver = make_core(0, ids=solo_ids)
    actions = core.start_height(1, make_validator_set(solo_ids))
    [decided] = [a for a in actions if isinstance(a, CommitBlock)]
    assert driver.proposed == [(1, 0)]
    persisted = [i for i, a in enumerate(actions) if isinstance(a, PersistLastSigned) and a.last.step == 2]
    sent = [i for i, a in enumerate(actions) if isinstance(a, Broadcast) and isinstance(a.message, Vote)]
    precommit_sent = [i for i in sent if actions[i].message.kind == VoteKind.PRECOMMIT]  # type: ignore[union-attr]
    assert persisted
    assert precommit_sent
    assert persisted[0] < precommit_sent[0]
    validate_commit(
        decided.commit,
        chain_id=CHAIN,
        validators=make_validator_set(solo_ids),
        block_hash=decided.block.hash(),
        height=1,
    )


def test_a_single_validator_restarted_after_signing_never_signs_another_block_at_that_round() -> None:
    """A crash between signing and writing the block: the restarted core re-signs only the vote it
    recorded (the same block) or moves on, never a second block at one (height, round)."""
    solo_ids = IDS[:1]
    core, _ = make_core(0, ids=solo_ids)
    first = core.start_height(1, make_validator_set(solo_ids))
    [decided] = [a for a in first if isinstance(a, CommitBlock)]
    last = core.last_signed
    assert last is not None
    assert last.block_hash == decided.block.hash()
    # What the driver persisted before the crash: the lock, then the signed precommit.
    [lock] = [a.lock for a in first if isinstance(a, PersistLock)]
    restarted, _ = make_core(0, ids=solo_ids, last_signed=last, lock=lock)
    again = restarted.start_height(1, make_validator_set(solo_ids))
    signed = [a.message for a in again if isinstance(a, Broadcast) and isinstance(a.message, Vote)]
    assert signed
    assert all(v.round > last.round or v.block_hash == last.block_hash for v in signed), signed
    [redecided] = [a for a in again if isinstance(a, CommitBlock)]
    assert redecided.block.hash() == decided.block.hash()


def test_a_precommit_stands_for_a_prevote_lost_in_a_crash_when_arming_the_prevote_timer() -> None:
    # V0 prevoted nil at its propose timeout, V1 too; V2 precommitted nil, then crashed before its
    # prevote reached V0 (restarted, it may not sign that prevote again); V3 is down for good.
    core, _ = make_core()
    core.start_height(1, VALS)
    fire(core, TimeoutStep.PROPOSE)
    assert timeouts(feed(core, prevote(1, 0, None)), TimeoutStep.PREVOTE) == []
    [armed] = timeouts(feed(core, precommit(2, 0, None)), TimeoutStep.PREVOTE)
    assert (armed.round, core.step) == (0, Step.PREVOTE)
    [sent] = own_votes(fire(core, TimeoutStep.PREVOTE))
    assert (sent.kind, sent.block_hash) == (VoteKind.PRECOMMIT, NIL)
    # With V2's precommit, a quorum of precommits of any kind: the round ends as it should.
    assert [t.round for t in timeouts(feed(core, precommit(1, 0, None)), TimeoutStep.PRECOMMIT)] == [0]
