"""The simulator's storage: `MemDB` keeps plyvel's semantics and loses exactly the unsynced writes."""

from __future__ import annotations

import pytest

from medledger.chain.codec import encode
from medledger.chain.consensus import Step
from medledger.chain.memdb import MemDB, MemDBClosedError
from medledger.chain.store import BlockStore, LastSigned
from medledger.chain.types import Genesis, Validator, ValidatorSet
from medledger.node.fixture_app import KeyValueFixtureApp


def test_crash_loses_only_unsynced_writes() -> None:
    db = MemDB()
    db.put(b"a", b"1", sync=True)
    db.put(b"b", b"2")
    db.delete(b"a")
    assert (db.get(b"a"), db.get(b"b")) == (None, b"2")
    assert db.has_unsynced_writes
    db.crash()
    assert db.closed
    db.reopen()
    assert (db.get(b"a"), db.get(b"b")) == (b"1", None)
    assert not db.has_unsynced_writes


def test_a_synced_write_makes_earlier_unsynced_ones_durable() -> None:
    db = MemDB()
    db.put(b"early", b"x")
    db.delete(b"gone", sync=False)
    db.put(b"late", b"y", sync=True)
    db.crash()
    db.reopen()
    assert (db.get(b"early"), db.get(b"late")) == (b"x", b"y")


def test_write_batch_is_atomic_and_synced() -> None:
    db = MemDB()
    with db.write_batch(transaction=True, sync=True) as batch:
        batch.put(b"k1", b"v1")
        batch.put(b"k2", b"v2")
        batch.delete(b"k1")
        assert db.get(b"k2") is None  # nothing is visible before the batch ends
    db.crash()
    db.reopen()
    assert (db.get(b"k1"), db.get(b"k2")) == (None, b"v2")

    def fail_half_way() -> None:
        with db.write_batch(transaction=True, sync=True) as batch:
            batch.put(b"k3", b"v3")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fail_half_way()
    assert db.get(b"k3") is None


def test_unsynced_batch_is_lost_on_crash() -> None:
    db = MemDB()
    with db.write_batch() as batch:
        batch.put(b"k", b"v")
    assert db.get(b"k") == b"v"
    db.crash()
    db.reopen()
    assert db.get(b"k") is None


def test_iterator_walks_a_prefix_in_key_order() -> None:
    db = MemDB()
    for key in (b"s:b", b"s:a", b"t:a", b"s:c", b"r:z"):
        db.put(key, key.upper())
    assert list(db.iterator(prefix=b"s:")) == [(b"s:a", b"S:A"), (b"s:b", b"S:B"), (b"s:c", b"S:C")]
    assert [k for k, _ in db.iterator()] == [b"r:z", b"s:a", b"s:b", b"s:c", b"t:a"]


def test_closed_database_refuses_use() -> None:
    db = MemDB()
    db.close()
    with pytest.raises(MemDBClosedError):
        db.get(b"k")
    with pytest.raises(MemDBClosedError):
        db.put(b"k", b"v")


def test_block_store_on_memdb_survives_a_crash_with_its_synced_state() -> None:
    validators = ValidatorSet.of([Validator("v", b"\x01" * 32, b"\x02" * 32)])
    genesis = Genesis("memdb-test", 0, validators, b"")
    app = KeyValueFixtureApp()
    db = MemDB()
    store = BlockStore.open_memory(db, "n0")
    store.init_genesis(genesis, app.init_state(genesis))
    last = LastSigned(1, 2, int(Step.PREVOTE), b"")
    store.save_last_signed(last)
    db.put(b"x:scratch", encode(last))  # an unsynced write of some other component
    db.crash()

    reopened = BlockStore.open_memory(db.reopen(), "n0")
    assert reopened.genesis == genesis
    assert reopened.height == 0
    assert reopened.load_last_signed() == last
    assert db.get(b"x:scratch") is None
