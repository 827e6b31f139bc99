"""The reactor: its commit path when block sync and the consensus core race for one height, how
it drops peers, judges block time (PBTS) and files evidence."""

from __future__ import annotations

import dataclasses
import time

import pytest

from medledger.chain.admission import Admission
from medledger.chain.app import App
from medledger.chain.codec import decode, encode
from medledger.chain.consensus import (
    BLOCK_TIME_MESSAGE_DELAY_MS,
    BLOCK_TIME_PRECISION_MS,
    NIL,
    sign_proposal,
    sign_vote,
)
from medledger.chain.errors import BlockRule
from medledger.chain.evidence import make_duplicate_vote_evidence
from medledger.chain.execution import ExecutedBlock, build_block
from medledger.chain.executor import BlockExecutor, ForkDetectedError
from medledger.chain.governance import KIND_EVIDENCE, GovernedApp
from medledger.chain.limits import UINT_MAX
from medledger.chain.memdb import MemDB
from medledger.chain.mempool import Mempool
from medledger.chain.store import BlockStore
from medledger.chain.txbuilder import sign_commit, sign_tx
from medledger.chain.types import (
    BLOCK_BYTES_CAP_MIN,
    NO_ROUND,
    Block,
    Commit,
    ConsensusParams,
    Genesis,
    Proposal,
    Tx,
    Validator,
    ValidatorSet,
    Vote,
    VoteKind,
)
from medledger.chain.validation import check_tx
from medledger.crypto import Identity
from medledger.network.blocksync import SyncedBlock
from medledger.network.clock import LoopClock, run_inline
from medledger.network.messages import FrameKind
from medledger.network.reactor import Reactor, _Message
from medledger.node.fixture_app import KeyValueFixtureApp, encode_set_body

CHAIN = "reactor-test"
#: The local time at which test proposals arrive.
NOW_MS = 1_000_000_000


def make_store(identity: Identity, genesis: Genesis) -> BlockStore:
    store = BlockStore.open_memory(MemDB())
    store.init_genesis(genesis, KeyValueFixtureApp().init_state(genesis))
    return store


def make_block(
    store: BlockStore, identity: Identity, genesis: Genesis, key: bytes
) -> tuple[ExecutedBlock, Commit]:
    """Block 1 with one tx, certified by the (single) validator, not yet saved."""
    now = time.time_ns() // 1_000_000
    _, raw, _ = sign_tx(identity, chain_id=CHAIN, kind="kv.set", body=encode_set_body(key, b"v"))
    executed = BlockExecutor(store=store, app=KeyValueFixtureApp(), genesis=genesis).build_proposal(
        proposer=identity.public.sign_key,
        round_=0,
        time_ms=now,
        txs=[check_tx(raw, chain_id=CHAIN, now_ms=now)],
    )
    return executed, certify(identity, executed.block)


def certify(identity: Identity, block: Block) -> Commit:
    header = block.header
    return sign_commit(
        [identity], chain_id=CHAIN, height=header.height, round_=header.round, block_hash=block.hash()
    )


def make_reactor(
    store: BlockStore, identity: Identity, genesis: Genesis, *, governed: bool = False
) -> Reactor:
    mempool = Mempool()
    app: App = KeyValueFixtureApp()
    if governed:
        app = GovernedApp(app, genesis.validators)
    return Reactor(
        store=store,
        app=app,
        mempool=mempool,
        admission=Admission(store=store, mempool=mempool, app=app),
        identity=identity,
        genesis=genesis,
        block_interval_ms=10,
        max_block_txs=100,
        max_block_bytes=1 << 20,
        clock=LoopClock(),
        on_committed=lambda executed: None,
        offload=run_inline,
    )


@pytest.fixture
def chain() -> tuple[Identity, Genesis]:
    identity = Identity.generate()
    public = identity.public
    genesis = Genesis(CHAIN, 0, ValidatorSet.of([Validator("v", public.sign_key, public.enc_key)]), b"")
    return identity, genesis


async def test_a_late_decision_for_a_block_sync_already_committed_is_skipped(
    chain: tuple[Identity, Genesis],
) -> None:
    identity, genesis = chain
    store = make_store(identity, genesis)
    executed, commit = make_block(store, identity, genesis, b"k")
    reactor = make_reactor(store, identity, genesis)
    await reactor._commit(executed.block, commit)  # as block sync does
    state_root, last_hash = store.state_root, store.last_block_hash
    await reactor._commit(executed.block, commit)  # the core decides it again
    assert (store.height, store.state_root, store.last_block_hash) == (1, state_root, last_hash)


async def test_invalid_second_certified_block_at_a_committed_height_halts_as_a_fork(
    chain: tuple[Identity, Genesis],
) -> None:
    identity, genesis = chain
    ours, theirs = make_store(identity, genesis), make_store(identity, genesis)
    executed, commit = make_block(ours, identity, genesis, b"ours")
    reactor = make_reactor(ours, identity, genesis)
    await reactor._commit(executed.block, commit)
    other, other_commit = make_block(theirs, identity, genesis, b"theirs")
    with pytest.raises(ForkDetectedError):
        await reactor._commit(other.block, other_commit)
    assert ours.height == 1
    assert ours.last_block_hash == executed.block.hash()


class RecordingNetwork:
    """Stands in for `PeerNetwork`: records what the reactor sends and whom it drops."""

    def __init__(self, peer: bytes) -> None:
        self.links: dict[bytes, object] = {peer: object()}
        self.dropped: list[tuple[bytes, str]] = []
        self.sent: list[int] = []
        self.payloads: list[tuple[int, bytes]] = []

    def broadcast(self, kind: int, payload: bytes, *, exclude: bytes | None = None) -> int:
        self.sent.append(kind)
        self.payloads.append((kind, payload))
        return len(self.links)

    def send(self, peer: bytes, kind: int, payload: bytes) -> bool:
        self.sent.append(kind)
        self.payloads.append((kind, payload))
        return True

    def votes(self) -> list[Vote]:
        return [decode(Vote, p, max_bytes=1024) for k, p in self.payloads if k == FrameKind.VOTE]

    def drop_peer(self, peer_key: bytes, why: str) -> None:
        self.dropped.append((peer_key, why))


async def test_invalid_forged_vote_drops_the_peer_that_sent_it() -> None:
    members = [Identity.generate() for _ in range(4)]
    genesis = Genesis(
        CHAIN,
        0,
        ValidatorSet.of(
            [Validator(f"v{i}", m.public.sign_key, m.public.enc_key) for i, m in enumerate(members)]
        ),
        b"",
    )
    store = make_store(members[0], genesis)
    reactor = make_reactor(store, members[0], genesis)
    peer = members[1].public.sign_key
    network = RecordingNetwork(peer)
    reactor.attach(network)  # type: ignore[arg-type]
    good = sign_vote(
        members[2], chain_id=CHAIN, kind=VoteKind.PREVOTE, height=1, round_=0, block_hash=b"\x07" * 32
    )
    await reactor._on_message(_Message(good, peer, 0))
    assert network.dropped == []  # a valid vote keeps the peer
    forged = Vote(good.chain_id, good.kind, good.height, 1, good.block_hash, good.validator, bytes(64))
    await reactor._on_message(_Message(forged, peer, 0))
    assert [why for _, why in network.dropped] == ["sent a consensus message with bad vote signature"]
    assert store.height == 0


def four_validators() -> tuple[list[Identity], Genesis]:
    members = [Identity.generate() for _ in range(4)]
    validators = ValidatorSet.of(
        [Validator(f"v{i}", m.public.sign_key, m.public.enc_key) for i, m in enumerate(members)]
    )
    return members, Genesis(CHAIN, 0, validators, b"")


async def test_one_peers_height_claim_does_not_take_a_validator_out_of_consensus() -> None:
    """Sync mode needs f+1 validators to claim the height (one of them honest): a single liar, with
    a status or with a forged vote from the far future, leaves the node in consensus."""
    members, genesis = four_validators()
    store = make_store(members[0], genesis)
    reactor = make_reactor(store, members[0], genesis)
    liar, honest = members[1].public.sign_key, members[2].public.sign_key
    network = RecordingNetwork(liar)
    network.links[honest] = object()
    reactor.attach(network)  # type: ignore[arg-type]

    reactor.sync.set_height(liar, 10**12)
    forged = Vote(CHAIN, VoteKind.PREVOTE, 1_000, 0, b"\x07" * 32, liar, bytes(64))
    await reactor._on_message(_Message(forged, liar, 0))
    assert reactor.sync_lag == 0
    assert not reactor.syncer.update_mode()

    reactor.sync.set_height(honest, 50)  # a second validator: f + 1 = 2 of 4 claim at least 50
    assert reactor.backed_target == 50
    assert reactor.sync_lag == 50
    assert reactor.syncer.update_mode()
    assert reactor.syncing


# -- block time (issue 9, defect 3) ------------------------------------------------------------


def proposal_at(members: list[Identity], genesis: Genesis, time_ms: int) -> tuple[Proposal, bytes]:
    """Height 1, round 0's proposal by its proposer, its block stamped `time_ms`; and that proposer."""
    proposer_key = genesis.validators.get_proposer(1, 0).sign_key
    proposer = next(m for m in members if m.public.sign_key == proposer_key)
    block = build_block(
        store=make_store(proposer, genesis),
        validators=genesis.validators,
        proposer=proposer_key,
        round_=0,
        time_ms=time_ms,
        txs=[],
    )
    proposal = sign_proposal(proposer, chain_id=CHAIN, height=1, round_=0, pol_round=NO_ROUND, block=block)
    return proposal, proposer_key


@pytest.mark.parametrize(
    ("block_time_ms", "timely"),
    [
        (UINT_MAX, False),  # the attack of the issue: every grant would expire
        (NOW_MS + BLOCK_TIME_PRECISION_MS + 1, False),
        (NOW_MS + BLOCK_TIME_PRECISION_MS, True),
        (NOW_MS - BLOCK_TIME_MESSAGE_DELAY_MS - BLOCK_TIME_PRECISION_MS, True),
        (NOW_MS - BLOCK_TIME_MESSAGE_DELAY_MS - BLOCK_TIME_PRECISION_MS - 1, False),
    ],
)
async def test_trust_3_a_validator_prevotes_a_proposal_only_if_its_time_fits_its_clock(
    block_time_ms: int, timely: bool
) -> None:
    """The reactor hands the core the frame's arrival time; a block stamped outside the bounds of
    that clock gets a nil prevote, one inside gets the block's."""
    members, genesis = four_validators()
    me = next(m for m in members if m.public.sign_key != genesis.validators.get_proposer(1, 0).sign_key)
    store = make_store(me, genesis)
    reactor = make_reactor(store, me, genesis)
    proposal, proposer = proposal_at(members, genesis, block_time_ms)
    network = RecordingNetwork(proposer)
    reactor.attach(network)  # type: ignore[arg-type]
    await reactor._on_message(_Message(proposal, proposer, NOW_MS))
    [prevote] = [v for v in network.votes() if v.validator == me.public.sign_key]
    assert prevote.block_hash == (proposal.block.hash() if timely else NIL)


def block_at_time(store: BlockStore, identity: Identity, genesis: Genesis, time_ms: int) -> SyncedBlock:
    """Block 1 stamped `time_ms` (whatever the parent's), certified by the single validator."""
    executor = BlockExecutor(store=store, app=KeyValueFixtureApp(), genesis=genesis)
    executed = executor.build_proposal(proposer=identity.public.sign_key, round_=0, time_ms=time_ms, txs=[])
    header = dataclasses.replace(executed.block.header, time_ms=time_ms)
    block = Block(header, executed.block.txs)
    return SyncedBlock(block, encode(block), certify(identity, block), identity.public.sign_key)


def test_trust_3_block_sync_refuses_a_certified_block_not_after_its_parent(
    chain: tuple[Identity, Genesis],
) -> None:
    """Monotonic block time is a block rule: even a certified block must be after its parent."""
    identity, genesis = chain
    store = make_store(identity, genesis)
    reactor = make_reactor(store, identity, genesis)
    applied, failure = reactor.syncer._apply_run(
        [block_at_time(store, identity, genesis, genesis.genesis_time_ms)]
    )
    assert applied == []
    assert failure is not None
    assert failure[1].rule is BlockRule.TIME
    assert store.height == 0
    applied, failure = reactor.syncer._apply_run(
        [block_at_time(store, identity, genesis, genesis.genesis_time_ms + 1)]
    )
    assert failure is None
    assert store.height == 1


# -- evidence (issue 9, defect 12) ---------------------------------------------------------------


async def test_trust_12_evidence_is_filed_once_by_the_proposer_in_its_block() -> None:
    """A node that sees an equivocation keeps it in its evidence pool: no tx is gossiped or
    admitted. As proposer it files it in its own block; once committed, it is filed no more."""
    members, genesis = four_validators()
    me_key = genesis.validators.get_proposer(1, 0).sign_key
    me = next(m for m in members if m.public.sign_key == me_key)
    twin = next(m for m in members if m is not me)
    store = make_store(me, genesis)
    reactor = make_reactor(store, me, genesis, governed=True)
    peer = twin.public.sign_key
    network = RecordingNetwork(peer)
    reactor.attach(network)  # type: ignore[arg-type]
    for block_hash in (b"\x01" * 32, b"\x02" * 32):
        vote = sign_vote(
            twin, chain_id=CHAIN, kind=VoteKind.PREVOTE, height=1, round_=0, block_hash=block_hash
        )
        await reactor._on_message(_Message(vote, peer, 0))
    assert len(reactor.evidence) == 1
    assert len(reactor.evidence_pool) == 1
    assert len(reactor.mempool) == 0  # nothing for every node to file its own copy of
    assert FrameKind.TXS not in network.sent

    block = reactor.get_block_to_propose(1, 1)
    [raw] = block.txs
    tx = decode(Tx, raw, max_bytes=1 << 16)
    assert (tx.kind, tx.sender) == (KIND_EVIDENCE, me_key)
    executed = reactor._executed[block.hash()]
    assert executed.execution.results[0].ok  # the ledger takes it
    store.save_block(block, executed.raw, Commit(1, 1, block.hash(), ()), executed.tx_ids, executed.execution)
    reactor._committed(executed)
    assert len(reactor.evidence_pool) == 0  # recorded: pruned from the pool
    assert reactor.get_block_to_propose(2, 0).txs == ()


async def test_trust_12_evidence_another_proposer_recorded_is_not_filed_again() -> None:
    """Two nodes saw one equivocation. The first proposer files it; the other commits that block
    and, as the next proposer, files nothing: the offence reaches the ledger once."""
    members, genesis = four_validators()
    first_key = genesis.validators.get_proposer(1, 0).sign_key
    second_key = genesis.validators.get_proposer(2, 0).sign_key
    first = next(m for m in members if m.public.sign_key == first_key)
    second = next(m for m in members if m.public.sign_key == second_key)
    twin = next(m for m in members if m not in (first, second))
    votes = [
        sign_vote(twin, chain_id=CHAIN, kind=VoteKind.PREVOTE, height=1, round_=0, block_hash=h)
        for h in (b"\x01" * 32, b"\x02" * 32)
    ]
    evidence = make_duplicate_vote_evidence(*votes)
    proposer = make_reactor(make_store(first, genesis), first, genesis, governed=True)
    follower_store = make_store(second, genesis)
    follower = make_reactor(follower_store, second, genesis, governed=True)
    proposer.evidence_pool.add(evidence)

    block = proposer.get_block_to_propose(1, 0)
    assert len(block.txs) == 1
    executed = follower.executor.validate_proposal(block)
    assert executed.execution.results[0].ok
    commit = Commit(1, 0, block.hash(), ())
    follower_store.save_block(block, executed.raw, commit, executed.tx_ids, executed.execution)
    follower._committed(executed)
    follower.evidence_pool.add(evidence)  # it saw the votes too, late
    assert follower.get_block_to_propose(2, 0).txs == ()  # on the ledger already: not filed
    assert len(follower.evidence_pool) == 0


async def test_the_builder_fills_a_block_up_to_the_genesis_caps_never_past_them() -> None:
    identity = Identity.generate()
    public = identity.public
    validators = ValidatorSet.of([Validator("v", public.sign_key, public.enc_key)])
    caps = ConsensusParams(block_txs_max=3, block_bytes_max=BLOCK_BYTES_CAP_MIN, leader_window=12)
    genesis = Genesis(CHAIN, 0, validators, b"", caps)
    reactor = make_reactor(make_store(identity, genesis), identity, genesis)
    assert (reactor.max_block_txs, reactor.max_block_bytes) == (3, BLOCK_BYTES_CAP_MIN)
    now = time.time_ns() // 1_000_000
    for i in range(5):
        _, raw, _ = sign_tx(
            identity, chain_id=CHAIN, kind="kv.set", body=encode_set_body(b"k%d" % i, b"v"), nonce=i
        )
        reactor.mempool.add(check_tx(raw, chain_id=CHAIN, now_ms=now))
    block = reactor.get_block_to_propose(1, 0)
    assert len(block.txs) == 3
    reactor.executor.validate_proposal(block)  # within the caps the executor holds it to
    old = Genesis(CHAIN, 0, validators, b"")
    assert make_reactor(make_store(identity, old), identity, old).max_block_txs == 100  # the config's
