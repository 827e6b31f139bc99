"""The reactor's commit path when block sync and the consensus core race for one height."""

from __future__ import annotations

import time

import pytest

from medledger.chain.admission import Admission
from medledger.chain.execution import ExecutedBlock
from medledger.chain.memdb import MemDB
from medledger.chain.mempool import Mempool
from medledger.chain.solo import SoloValidator
from medledger.chain.store import BlockStore
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import Commit, Genesis, Validator, ValidatorSet
from medledger.chain.validation import check_tx
from medledger.crypto import Identity
from medledger.network.reactor import ForkDetectedError, Reactor
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
