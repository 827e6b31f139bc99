"""The block store: durability, reopening, refusals, crash safety.

A `LocalChain` (the block pipeline with `KeyValueFixtureApp`) builds blocks on a `BlockStore` in
`tmp_path`; every check reads the store back through its public API, and after a reopen it must
read back identically."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import plyvel
import pytest
from chain_testkit import (
    CHAIN_ID,
    GENESIS_TIME_MS,
    NOW_MS,
    LocalChain,
    Produced,
    dump_db,
    make_genesis,
    make_kv_tx,
    make_tx,
    snapshot_store,
)

from medledger.chain import layout
from medledger.chain.app import TxResult
from medledger.chain.codec import encode
from medledger.chain.errors import StoreCorruptedError, StoreError
from medledger.chain.integrity import check_all
from medledger.chain.store import BlockStore, TxLocation
from medledger.chain.types import Block, Genesis
from medledger.chain.validation import validate_block_shape, validate_commit
from medledger.crypto import Identity
from medledger.node.fixture_app import KeyValueFixtureApp

IDENTITY = Identity.generate()


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[LocalChain]:
    local_chain = LocalChain.create(tmp_path / "db", IDENTITY)
    try:
        yield local_chain
    finally:
        local_chain.close()


def produce_history(chain: LocalChain) -> list[Produced]:
    """Four blocks: plain sets, an empty block, an overwrite with a refused tx, a malformed body."""
    me = chain.identity
    return [
        chain.produce(
            [make_kv_tx(me, b"alpha", b"1", nonce=1), make_kv_tx(me, b"beta", b"2", nonce=2)],
            time_ms=NOW_MS + 1_000,
        ),
        chain.produce([], time_ms=NOW_MS + 2_000),
        chain.produce(
            [
                make_kv_tx(me, b"alpha", b"3", nonce=3),
                make_tx(me, kind="kv.unknown", body=b"", nonce=4),
            ],
            time_ms=NOW_MS + 3_000,
        ),
        chain.produce(
            [
                make_tx(me, kind="kv.set", body=b"\xc1not msgpack", nonce=5),
                make_kv_tx(me, b"gamma", b"", nonce=6),
            ],
            time_ms=NOW_MS + 4_000,
        ),
    ]


def assert_store_rejects(
    store: BlockStore, action: Callable[[], object], error: type[Exception], match: str
) -> None:
    """Every store `test_invalid_*` goes through here: the error, and no change to the store."""
    before = snapshot_store(store)
    with pytest.raises(error, match=match):
        action()
    assert snapshot_store(store) == before


def assert_open_refused(path: Path, error: type[Exception], match: str) -> None:
    """Opening the (closed) store at `path` fails, changes no byte of it and releases its lock."""
    before = dump_db(path)
    with pytest.raises(error, match=match):
        BlockStore.open(path)
    assert dump_db(path) == before  # dump_db could open it: the refused open released the lock


def write_raw(path: Path, key: bytes, value: bytes | None) -> None:
    """Tamper with a closed store behind its back, with plyvel directly."""
    db = plyvel.DB(str(path))
    try:
        if value is None:
            db.delete(key)
        else:
            db.put(key, value)
    finally:
        db.close()


# -- a fresh store ---------------------------------------------------------------------------------


def test_fresh_chain_tip_is_genesis(chain: LocalChain) -> None:
    store = chain.store
    assert store.is_initialized
    assert store.genesis == chain.genesis
    assert store.height == 0
    assert store.last_block_hash == chain.genesis.hash()
    assert store.last_block_time_ms == GENESIS_TIME_MS
    assert store.state_root == KeyValueFixtureApp().init_state(chain.genesis).state_root
    assert store.get_parent_hash(1) == chain.genesis.hash()
    assert store.get_block(1) is None
    assert store.get_commit(1) is None
    assert store.load_last_signed() is None


def test_uninitialized_store_has_no_genesis(tmp_path: Path) -> None:
    store = BlockStore.open(tmp_path / "empty")
    try:
        assert not store.is_initialized
        assert store.height == 0
        with pytest.raises(StoreError, match="no genesis"):
            _ = store.genesis
    finally:
        store.close()
    assert store.closed


# -- committing and reading back -------------------------------------------------------------------


def test_committed_blocks_read_back_linked_and_certified(chain: LocalChain) -> None:
    produced = produce_history(chain)
    store = chain.store
    assert store.height == len(produced)
    parent_hash = chain.genesis.hash()
    state_root = KeyValueFixtureApp().init_state(chain.genesis).state_root
    for height, item in enumerate(produced, start=1):
        block = store.get_block(height)
        assert block == item.executed.block
        assert store.get_block_raw(height) == item.executed.raw
        assert block.header.height == height
        assert block.header.chain_id == CHAIN_ID
        assert block.header.parent_hash == parent_hash
        assert block.header.state_root == state_root  # the app hash after the parent block
        assert block.header.proposer == chain.identity.public.sign_key
        assert block.header.validators_hash == chain.genesis.validators.hash()
        validate_block_shape(block, chain_id=CHAIN_ID)
        commit = store.get_commit(height)
        assert commit == item.commit
        validate_commit(
            commit,
            chain_id=CHAIN_ID,
            validators=chain.genesis.validators,
            block_hash=block.hash(),
            height=height,
        )
        assert store.get_height_by_hash(block.hash()) == height
        parent_hash, state_root = block.hash(), item.state_root
    assert store.last_block_hash == parent_hash
    assert store.state_root == state_root


def test_committed_txs_are_indexed_with_their_results(chain: LocalChain) -> None:
    produced = produce_history(chain)
    store = chain.store
    expected_results = [
        (TxResult(True), TxResult(True)),
        (),
        (TxResult(True), TxResult(False, "kv.kind")),
        (TxResult(False, "kv.body"), TxResult(True)),
    ]
    for height, (item, expected) in enumerate(zip(produced, expected_results, strict=True), start=1):
        assert tuple((r.ok, r.code) for r in item.results) == tuple((r.ok, r.code) for r in expected)
        for index, (checked, result) in enumerate(zip(item.txs, item.results, strict=True)):
            assert store.has_tx(checked.tx_id)
            assert store.get_tx_location(checked.tx_id) == TxLocation(
                height, index, int(result.ok), result.code
            )
    unknown = make_kv_tx(chain.identity, b"never", b"committed", nonce=99)
    assert not store.has_tx(unknown.tx_id)
    assert store.get_tx_location(unknown.tx_id) is None


def test_committed_app_state_is_last_writer_wins(chain: LocalChain) -> None:
    produce_history(chain)
    store = chain.store
    assert KeyValueFixtureApp.get_value(store, b"alpha") == b"3"
    assert KeyValueFixtureApp.get_value(store, b"beta") == b"2"
    assert KeyValueFixtureApp.get_value(store, b"gamma") == b""
    assert KeyValueFixtureApp.get_value(store, b"delta") is None
    assert list(store.iter_app()) == [(b"d/alpha", b"3"), (b"d/beta", b"2"), (b"d/gamma", b"")]
    assert list(store.iter_app(b"d/b")) == [(b"d/beta", b"2")]


def test_reads_beyond_the_chain_are_none(chain: LocalChain) -> None:
    produce_history(chain)
    store = chain.store
    for height in (0, store.height + 1, store.height + 100):
        assert store.get_block(height) is None
        assert store.get_block_raw(height) is None
        assert store.get_commit(height) is None
    assert store.get_height_by_hash(bytes(32)) is None


def test_reopened_store_reads_back_identically(chain: LocalChain) -> None:
    produced = produce_history(chain)
    before = snapshot_store(chain.store)
    locations = {c.tx_id: chain.store.get_tx_location(c.tx_id) for p in produced for c in p.txs}
    hashes = {
        p.executed.block.hash(): chain.store.get_height_by_hash(p.executed.block.hash()) for p in produced
    }

    chain.reopen()

    store = chain.store
    assert snapshot_store(store) == before
    assert store.height == len(produced)
    assert store.last_block_hash == produced[-1].executed.block.hash()
    assert store.last_block_time_ms == produced[-1].executed.block.header.time_ms
    assert store.state_root == produced[-1].state_root
    assert store.genesis == chain.genesis
    assert {tx_id: store.get_tx_location(tx_id) for tx_id in locations} == locations
    assert all(store.has_tx(tx_id) for tx_id in locations)
    assert {h: store.get_height_by_hash(h) for h in hashes} == hashes
    assert KeyValueFixtureApp.get_value(store, b"alpha") == b"3"
    for height in range(1, store.height + 1):
        block, commit = store.get_block(height), store.get_commit(height)
        assert block is not None
        assert commit is not None
        validate_commit(
            commit,
            chain_id=CHAIN_ID,
            validators=chain.genesis.validators,
            block_hash=block.hash(),
            height=height,
        )


def test_the_chain_continues_after_a_reopen(chain: LocalChain) -> None:
    produced = produce_history(chain)
    chain.reopen()
    more = chain.produce([make_kv_tx(chain.identity, b"alpha", b"5", nonce=7)], time_ms=NOW_MS + 5_000)
    header = more.executed.block.header
    assert header.height == len(produced) + 1
    assert header.round == 0
    assert header.parent_hash == produced[-1].executed.block.hash()
    assert header.state_root == produced[-1].state_root
    assert KeyValueFixtureApp.get_value(chain.store, b"alpha") == b"5"


def test_block_time_always_moves_on(chain: LocalChain) -> None:
    """A proposer whose clock is behind its parent's time stamps parent + 1 (time is strictly
    monotonic: `validate_block_time`)."""
    first = chain.produce([], time_ms=NOW_MS)
    second = chain.produce([], time_ms=NOW_MS - 5_000)
    assert first.executed.block.header.time_ms == NOW_MS
    assert second.executed.block.header.time_ms == NOW_MS + 1
    assert chain.produce([], time_ms=0).executed.block.header.time_ms == NOW_MS + 2
    assert chain.store.last_block_time_ms == NOW_MS + 2


def test_init_genesis_again_with_the_same_genesis_changes_nothing(chain: LocalChain) -> None:
    produce_history(chain)
    before = snapshot_store(chain.store)
    chain.store.init_genesis(chain.genesis, chain.app.init_state(chain.genesis))
    assert snapshot_store(chain.store) == before


# -- refusals ---------------------------------------------------------------------------------------


def init_genesis(chain: LocalChain, genesis: Genesis) -> Callable[[], None]:
    return lambda: chain.store.init_genesis(genesis, chain.app.init_state(genesis))


def test_invalid_genesis_mismatch(chain: LocalChain) -> None:
    produce_history(chain)
    for other in (
        make_genesis([Identity.generate()]),
        make_genesis([chain.identity], chain_id="another-chain"),
        make_genesis([chain.identity], app_state=b"other state"),
        dataclasses.replace(chain.genesis, genesis_time_ms=GENESIS_TIME_MS + 1),
    ):
        assert_store_rejects(chain.store, init_genesis(chain, other), StoreError, "another chain's genesis")


def test_invalid_genesis_mismatch_before_any_block(chain: LocalChain) -> None:
    other = make_genesis([Identity.generate()])
    assert_store_rejects(chain.store, init_genesis(chain, other), StoreError, "another chain's genesis")


def test_invalid_layout_version(chain: LocalChain) -> None:
    produce_history(chain)
    chain.close()
    for version in (0, layout.LAYOUT_VERSION + 1, 2**64 - 1):
        write_raw(chain.path, layout.META_LAYOUT, layout.encode_u64(version))
        assert_open_refused(
            chain.path, StoreError, f"layout version {version}, this medledger reads version 1"
        )


def test_invalid_layout_version_missing_from_a_store_with_blocks(chain: LocalChain) -> None:
    produce_history(chain)
    chain.close()
    write_raw(chain.path, layout.META_LAYOUT, None)
    assert_open_refused(chain.path, StoreCorruptedError, "no layout version")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (layout.META_LAYOUT, b"\x01"),
        (layout.META_HEIGHT, b"\x00\x01"),
        (layout.META_HEIGHT, b""),
    ],
    ids=["layout-1-byte", "height-2-bytes", "height-empty"],
)
def test_invalid_corrupted_meta_is_store_corrupted(chain: LocalChain, key: bytes, value: bytes) -> None:
    """A meta record of the wrong size is corruption and must surface as the typed store error."""
    produce_history(chain)
    chain.close()
    write_raw(chain.path, key, value)
    assert_open_refused(chain.path, StoreCorruptedError, re.escape(str(chain.path)))


@pytest.mark.parametrize("key", [layout.META_GENESIS, layout.META_HEIGHT, layout.META_STATE_ROOT])
def test_invalid_missing_meta(chain: LocalChain, key: bytes) -> None:
    produce_history(chain)
    chain.close()
    write_raw(chain.path, key, None)
    assert_open_refused(chain.path, StoreCorruptedError, "missing")


def test_invalid_missing_tip_block(chain: LocalChain) -> None:
    produced = produce_history(chain)
    chain.close()
    write_raw(chain.path, layout.block_key(len(produced)), None)
    assert_open_refused(chain.path, StoreCorruptedError, f"block {len(produced)} is missing")


def test_invalid_corrupted_genesis(chain: LocalChain) -> None:
    chain.close()
    write_raw(chain.path, layout.META_GENESIS, b"\x80")
    assert_open_refused(chain.path, StoreCorruptedError, "stored genesis is corrupted")


def test_invalid_corrupted_block_or_commit_below_the_tip(chain: LocalChain) -> None:
    produced = produce_history(chain)
    chain.close()
    write_raw(chain.path, layout.block_key(1), b"garbage")
    write_raw(chain.path, layout.commit_key(2), produced[0].executed.raw)
    write_raw(chain.path, layout.block_key(3), produced[1].executed.raw)  # a valid block, stored at 3
    chain.reopen()
    store = chain.store
    assert_store_rejects(
        store, lambda: store.get_block(1), StoreCorruptedError, "stored block 1 is corrupted"
    )
    assert_store_rejects(
        store, lambda: store.get_commit(2), StoreCorruptedError, "stored commit 2 is corrupted"
    )
    assert_store_rejects(store, lambda: store.get_block(3), StoreCorruptedError, "block stored at 3 says 2")
    assert store.get_block(4) == produced[3].executed.block


def test_invalid_store_opened_twice(chain: LocalChain) -> None:
    """LevelDB allows one owner; a second open is a typed error, and the first keeps working."""
    assert_store_rejects(
        chain.store, lambda: BlockStore.open(chain.path), StoreError, "cannot open the store"
    )
    chain.produce([], time_ms=NOW_MS)
    assert chain.store.height == 1


def test_invalid_open_of_a_missing_store_without_create(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open the store"):
        BlockStore.open(tmp_path / "missing", create=False)


def test_invalid_corrupted_last_signed_record(chain: LocalChain) -> None:
    chain.close()
    write_raw(chain.path, layout.META_LAST_SIGNED, b"junk")
    chain.reopen()
    store = chain.store
    assert_store_rejects(
        store, store.load_last_signed, StoreCorruptedError, "last-signed record is corrupted"
    )


def test_trust_3_verify_replay_reports_a_block_not_after_its_parent(chain: LocalChain) -> None:
    """`medledger verify` replays with the same block rule as consensus and sync: a stored block
    whose time is not after its parent's (the old rule allowed equal times) is reported."""
    chain.produce([], time_ms=NOW_MS)
    executed = chain.propose([], time_ms=NOW_MS + 10)
    block = Block(dataclasses.replace(executed.block.header, time_ms=NOW_MS), executed.block.txs)
    executed = dataclasses.replace(executed, block=block, raw=encode(block))
    chain.executor.commit(executed, chain.certify(executed))  # written past every check
    report = check_all(chain.store, chain.genesis, KeyValueFixtureApp)
    assert not report.is_clean
    assert [(p.height, "not after its parent" in p.what) for p in report.problems][:1] == [(2, True)]
