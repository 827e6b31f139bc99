"""Storage faults of `MemDB` under a real `BlockStore`: what the store sees after each.

A torn write (a power loss while a write is logged) must leave a store that either reopens at the
tip it had before that write, with every block it holds intact (`check_tail` clean, the database
byte for byte as before the write), or reports `StoreCorruptedError`: never a half-applied batch.
A corrupted table must surface as `StoreCorruptedError` on the read that reaches it: at open when
it holds what the store reads on start, later otherwise. Every fault is drawn from an explicit
`random.Random` or parameters, so each case replays.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from chain_testkit import make_genesis, make_kv_tx, sign_commit

from medledger.chain import layout
from medledger.chain.errors import StoreCorruptedError
from medledger.chain.executor import BlockExecutor
from medledger.chain.integrity import check_tail
from medledger.chain.memdb import (
    TABLE_KEYS_MAX,
    MemDB,
    MemDBClosedError,
    MemDBCorruptionError,
    MemDBCrashedError,
    TornWrite,
)
from medledger.chain.store import BlockStore, LastSigned
from medledger.chain.types import Genesis, VoteKind
from medledger.crypto import Identity
from medledger.node.fixture_app import KeyValueFixtureApp

#: Blocks each chain is built with before a fault.
BLOCKS = 3
BLOCK_TIME_MS = 1_000


class Chain:
    """A single-validator chain over a `BlockStore` on `MemDB`, committing through `BlockExecutor`."""

    def __init__(self) -> None:
        self.identity = Identity.generate()
        self.genesis: Genesis = make_genesis([self.identity])
        self.app = KeyValueFixtureApp()
        self.db = MemDB()
        self.store = BlockStore.open_memory(self.db, "n0")
        self.store.init_genesis(self.genesis, self.app.init_state(self.genesis))
        self.nonce = 0

    def commit_block(self) -> None:
        """Build, certify and commit the next block (one kv tx) through the block pipeline."""
        self.nonce += 1
        tx = make_kv_tx(self.identity, b"k%d" % self.nonce, b"v%d" % self.nonce, nonce=self.nonce)
        executor = BlockExecutor(store=self.store, app=self.app, genesis=self.genesis)
        executed = executor.build_proposal(
            proposer=self.identity.public.sign_key,
            round_=0,
            time_ms=self.genesis.genesis_time_ms + (self.store.height + 1) * BLOCK_TIME_MS,
            txs=[tx],
        )
        header = executed.block.header
        commit = sign_commit(
            [self.identity], height=header.height, round_=header.round, block_hash=executed.block.hash()
        )
        executor.commit(executed, commit)

    def sign(self) -> None:
        """The synced single put a validator makes before it signs a vote."""
        self.store.save_last_signed(LastSigned(self.store.height + 1, 0, VoteKind.PREVOTE, b"\x07" * 32))

    def reopen(self) -> BlockStore:
        self.store = BlockStore.open_memory(self.db.reopen(), "n0")
        return self.store

    def contents(self) -> dict[bytes, bytes]:
        return dict(self.db.iterator())


def built_chain() -> Chain:
    chain = Chain()
    for _ in range(BLOCKS):
        chain.commit_block()
    return chain


def assert_clean_at(chain: Chain, height: int) -> None:
    store = chain.store
    assert store.height == height
    report = check_tail(store, chain.genesis)
    assert report.is_clean, report.problems
    assert report.blocks_checked == height


def test_torn_write_dropped_reopens_at_the_previous_tip() -> None:
    chain = built_chain()
    before, tip_hash = chain.contents(), chain.store.last_block_hash
    chain.db.tear_write(TornWrite.DROPPED)
    with pytest.raises(MemDBCrashedError):
        chain.commit_block()
    assert chain.db.closed
    with pytest.raises(MemDBClosedError):
        chain.store.get_block(1)  # the process is gone: nothing after the torn write runs
    store = chain.reopen()
    assert_clean_at(chain, BLOCKS)
    assert store.last_block_hash == tip_hash
    assert store.get_block(BLOCKS + 1) is None
    assert chain.contents() == before
    # The node carries on from its previous tip: the lost block is simply committed again.
    chain.commit_block()
    assert_clean_at(chain, BLOCKS + 1)


def test_torn_write_corrupt_reports_store_corrupted_on_every_open() -> None:
    chain = built_chain()
    chain.db.tear_write(TornWrite.CORRUPT)
    with pytest.raises(MemDBCrashedError):
        chain.commit_block()
    for _ in range(2):  # the fault is on disk: it does not go away by retrying
        with pytest.raises(StoreCorruptedError):
            chain.reopen()
    assert chain.db.is_corrupted
    with pytest.raises(MemDBCorruptionError):
        chain.db.put(b"x", b"y")  # a database that does not open takes no writes either


def test_torn_write_keeps_the_writes_logged_before_it() -> None:
    chain = built_chain()
    chain.db.put(b"x:unsynced", b"1")  # before the torn write in the log: it reached the disk
    chain.db.tear_write(TornWrite.DROPPED, after=1)  # let the vote record through, tear the block
    chain.sign()
    signed = chain.store.load_last_signed()
    with pytest.raises(MemDBCrashedError):
        chain.commit_block()
    store = chain.reopen()
    assert store.load_last_signed() == signed
    assert chain.db.get(b"x:unsynced") == b"1"
    assert_clean_at(chain, BLOCKS)


@pytest.mark.parametrize("outcome", list(TornWrite))
@pytest.mark.parametrize("seed", range(12))
def test_torn_write_never_leaves_a_half_applied_batch(outcome: TornWrite, seed: int) -> None:
    """Tear a write drawn at random among block commits and vote records: the store reopens
    exactly as it was before that write, or refuses to open."""
    rng = random.Random(seed)
    chain = built_chain()
    steps: list[Callable[[], None]] = [rng.choice([chain.commit_block, chain.sign]) for _ in range(6)]
    torn_at = rng.randrange(len(steps))
    chain.db.tear_write(outcome, after=torn_at)
    snapshots: list[tuple[dict[bytes, bytes], int]] = []

    def run() -> None:
        for step in steps:
            snapshots.append((chain.contents(), chain.store.height))
            step()

    with pytest.raises(MemDBCrashedError):
        run()
    assert len(snapshots) == torn_at + 1
    before, height = snapshots[-1]
    if outcome is TornWrite.CORRUPT:
        with pytest.raises(StoreCorruptedError):
            chain.reopen()
        return
    chain.reopen()
    assert chain.contents() == before
    assert_clean_at(chain, height)


def test_crash_disarms_a_torn_write() -> None:
    chain = built_chain()
    chain.db.tear_write(TornWrite.CORRUPT, after=5)
    armed = [chain.db.tear_armed]
    chain.db.crash()
    chain.reopen()
    armed.append(chain.db.tear_armed)
    assert armed == [True, False]
    chain.commit_block()
    assert_clean_at(chain, BLOCKS + 1)


def test_invalid_tear_write_position() -> None:
    db = MemDB()
    with pytest.raises(ValueError, match="after"):
        db.tear_write(TornWrite.DROPPED, after=-1)
    assert not db.tear_armed


def test_corrupt_table_holding_the_meta_is_found_on_start() -> None:
    chain = built_chain()
    chain.db.close()
    table = chain.db.corrupt_table(random.Random(1), containing=layout.META_HEIGHT)
    assert table is not None
    assert table.first <= layout.META_HEIGHT <= table.last
    with pytest.raises(StoreCorruptedError):
        chain.reopen()


def test_corrupt_table_holding_a_block_is_found_by_the_read_that_reaches_it() -> None:
    chain = built_chain()
    chain.db.close()
    table = chain.db.corrupt_table(random.Random(2), containing=layout.block_key(1), keys_max=1)
    assert table is not None
    assert table.keys == (layout.block_key(1),)
    store = chain.reopen()  # block 1 is not read on start: the store opens
    assert store.height == BLOCKS
    with pytest.raises(StoreCorruptedError):
        store.get_block(1)
    report = check_tail(store, chain.genesis)
    assert not report.is_clean
    assert [problem.height for problem in report.problems] == [1]


def test_corrupt_table_of_application_state_stops_an_iteration() -> None:
    chain = built_chain()
    app_keys = [key for key in chain.contents() if key.startswith(layout.APP_PREFIX)]
    assert len(app_keys) >= 2
    chain.db.close()
    chain.db.corrupt_table(random.Random(3), containing=app_keys[-1], keys_max=1)
    store = chain.reopen()
    seen: list[bytes] = []

    def walk() -> None:
        for key, _ in store.iter_app():
            seen.append(key)

    with pytest.raises(StoreCorruptedError):
        walk()
    # LevelDB yields what precedes the bad block, then fails.
    assert seen == [key[len(layout.APP_PREFIX) :] for key in app_keys[:-1]]


def test_corrupt_table_is_drawn_from_the_rng_alone() -> None:
    def draw(seed: int) -> tuple[bytes, ...]:
        db = MemDB()
        for index in range(100):
            db.put(b"k%03d" % index, b"v", sync=True)
        table = db.corrupt_table(random.Random(seed))
        assert table is not None
        return table.keys

    assert draw(7) == draw(7)
    assert len({draw(seed) for seed in range(10)}) > 1
    assert all(1 <= len(draw(seed)) <= TABLE_KEYS_MAX for seed in range(10))


def test_rewriting_a_corrupted_key_makes_it_readable() -> None:
    db = MemDB()
    db.put(b"a", b"1", sync=True)
    db.put(b"b", b"2", sync=True)
    table = db.corrupt_table(random.Random(0), containing=b"a", keys_max=2)
    assert table is not None
    assert table.keys == (b"a", b"b")
    with pytest.raises(MemDBCorruptionError):
        db.get(b"a")
    db.put(b"a", b"3", sync=True)
    assert db.get(b"a") == b"3"
    with pytest.raises(MemDBCorruptionError):
        db.get(b"b")
    assert db.is_corrupted


def test_corrupt_table_of_an_empty_database_is_none() -> None:
    db = MemDB()
    db.put(b"a", b"1")  # unsynced: nothing is on disk yet
    assert db.corrupt_table(random.Random(0)) is None
    assert not db.is_corrupted


def test_invalid_corrupt_table_arguments() -> None:
    db = MemDB()
    db.put(b"a", b"1", sync=True)
    with pytest.raises(ValueError, match="durable"):
        db.corrupt_table(random.Random(0), containing=b"missing")
    with pytest.raises(ValueError, match="keys_max"):
        db.corrupt_table(random.Random(0), keys_max=0)
    assert not db.is_corrupted
