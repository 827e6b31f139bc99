"""The reactor's commit path when block sync and the consensus core race for one height."""

from __future__ import annotations

import time

import pytest

from medledger.chain.admission import Admission
from medledger.chain.consensus import sign_vote
from medledger.chain.execution import ExecutedBlock
from medledger.chain.memdb import MemDB
from medledger.chain.mempool import Mempool
from medledger.chain.solo import SoloValidator
from medledger.chain.store import BlockStore
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import Commit, Genesis, Validator, ValidatorSet, Vote, VoteKind
from medledger.chain.validation import check_tx
from medledger.crypto import Identity
from medledger.network.reactor import ForkDetectedError, Reactor, _Message
from medledger.node.fixture_app import KeyValueFixtureApp, encode_set_body

CHAIN = "reactor-test"


def make_store(identity: Identity, genesis: Genesis) -> BlockStore:
    store = BlockStore.open_memory(MemDB())
    store.init_genesis(genesis, KeyValueFixtureApp().init_state(genesis))
    return store


def make_block(
    store: BlockStore, identity: Identity, genesis: Genesis, key: bytes
) -> tuple[ExecutedBlock, Commit]:
    """Block 1 with one tx, certified by the (single) validator, not yet saved."""
    solo = SoloValidator(
        store=store, app=KeyValueFixtureApp(), identity=identity, validators=genesis.validators
    )
    now = time.time_ns() // 1_000_000
    _, raw, _ = sign_tx(identity, chain_id=CHAIN, kind="kv.set", body=encode_set_body(key, b"v"))
    executed = solo.propose([check_tx(raw, chain_id=CHAIN, now_ms=now)], time_ms=now)
    return executed, solo.certify(executed)


def make_reactor(store: BlockStore, identity: Identity, genesis: Genesis) -> Reactor:
    mempool = Mempool()
    app = KeyValueFixtureApp()
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
        clock_ms=lambda: time.time_ns() // 1_000_000,
        on_committed=lambda executed: None,
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
    await reactor._commit(executed.block, commit, verified=False)  # as block sync does
    state_root, last_hash = store.state_root, store.last_block_hash
    await reactor._commit(executed.block, commit, verified=True)  # the core decides it again
    assert (store.height, store.state_root, store.last_block_hash) == (1, state_root, last_hash)


async def test_invalid_second_certified_block_at_a_committed_height_halts_as_a_fork(
    chain: tuple[Identity, Genesis],
) -> None:
    identity, genesis = chain
    ours, theirs = make_store(identity, genesis), make_store(identity, genesis)
    executed, commit = make_block(ours, identity, genesis, b"ours")
    reactor = make_reactor(ours, identity, genesis)
    await reactor._commit(executed.block, commit, verified=False)
    other, other_commit = make_block(theirs, identity, genesis, b"theirs")
    with pytest.raises(ForkDetectedError):
        await reactor._commit(other.block, other_commit, verified=True)
    assert ours.height == 1
    assert ours.last_block_hash == executed.block.hash()


class RecordingNetwork:
    """Stands in for `PeerNetwork`: records what the reactor sends and whom it drops."""

    def __init__(self, peer: bytes) -> None:
        self.links: dict[bytes, object] = {peer: object()}
        self.dropped: list[tuple[object, str]] = []
        self.sent: list[int] = []

    def broadcast(self, kind: int, payload: bytes, *, exclude: bytes | None = None) -> int:
        self.sent.append(kind)
        return len(self.links)

    def send(self, peer: bytes, kind: int, payload: bytes) -> bool:
        self.sent.append(kind)
        return True

    def drop(self, link: object, why: str) -> None:
        self.dropped.append((link, why))


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
    await reactor._on_message(_Message(good, peer))
    assert network.dropped == []  # a valid vote keeps the peer
    forged = Vote(good.chain_id, good.kind, good.height, 1, good.block_hash, good.validator, bytes(64))
    await reactor._on_message(_Message(forged, peer))
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
    await reactor._on_message(_Message(forged, liar))
    assert reactor.sync_lag == 0
    assert not reactor._update_mode()

    reactor.sync.set_height(honest, 50)  # a second validator: f + 1 = 2 of 4 claim at least 50
    assert reactor.backed_target == 50
    assert reactor.sync_lag == 50
    assert reactor._update_mode()
    assert reactor.syncing
