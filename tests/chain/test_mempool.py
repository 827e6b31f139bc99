"""The mempool: deduplication, count and byte bounds, FIFO reaping, removal of committed txs."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import pytest
from chain_testkit import make_kv_tx
from hypothesis import given, settings
from hypothesis import strategies as st

from medledger.chain.errors import ChainError, DuplicateTxError, MempoolFullError
from medledger.chain.mempool import Mempool
from medledger.chain.validation import CheckedTx
from medledger.crypto import Identity

SENDER = Identity.generate()
#: Signed once per module (signing is the slow part): txs of varied sizes, all distinct.
TXS: tuple[CheckedTx, ...] = tuple(
    make_kv_tx(SENDER, b"key-%d" % i, bytes(i * 37 % 500), nonce=i) for i in range(24)
)
SIZES = [len(c.raw) for c in TXS]


@dataclasses.dataclass(frozen=True, slots=True)
class PoolSnapshot:
    ids_in_order: tuple[bytes, ...]
    size_bytes: int


def snapshot_pool(pool: Mempool) -> PoolSnapshot:
    everything = pool.reap(max_txs=len(pool) + 1, max_bytes=pool.size_bytes + 1)
    assert len(everything) == len(pool)  # reap with room for all returns all
    return PoolSnapshot(tuple(c.tx_id for c in everything), pool.size_bytes)


def assert_pool_rejects(pool: Mempool, action: Callable[[], object], error: type[ChainError]) -> None:
    """Every mempool `test_invalid_*` goes through here: the error, and no change to the pool."""
    before = snapshot_pool(pool)
    with pytest.raises(error) as info:
        action()
    assert type(info.value) is error
    assert snapshot_pool(pool) == before


def filled(txs: tuple[CheckedTx, ...], **bounds: int) -> Mempool:
    pool = Mempool(**bounds)
    for checked in txs:
        pool.add(checked)
    return pool


def ids(txs: list[CheckedTx] | tuple[CheckedTx, ...]) -> list[bytes]:
    return [c.tx_id for c in txs]


def test_the_test_txs_are_distinct_and_of_varied_sizes() -> None:
    assert len(set(ids(TXS))) == len(TXS)
    assert len(set(SIZES)) > len(TXS) // 2


def test_add_admits_and_accounts() -> None:
    pool = Mempool()
    assert len(pool) == 0
    assert pool.size_bytes == 0
    for count, checked in enumerate(TXS[:5], start=1):
        pool.add(checked)
        assert len(pool) == count
        assert checked.tx_id in pool
        assert pool.size_bytes == sum(SIZES[:count])
    assert TXS[5].tx_id not in pool
    assert b"not an id" not in pool


def test_invalid_duplicate() -> None:
    pool = filled(TXS[:3])
    for checked in TXS[:3]:
        assert_pool_rejects(pool, functools.partial(pool.add, checked), DuplicateTxError)


def test_invalid_duplicate_is_reported_as_such_even_when_the_pool_is_full() -> None:
    pool = filled(TXS[:2], max_txs=2)
    assert_pool_rejects(pool, lambda: pool.add(TXS[0]), DuplicateTxError)


def test_invalid_full_by_count() -> None:
    pool = filled(TXS[:3], max_txs=3)
    assert pool.capacity_txs == 3
    assert_pool_rejects(pool, lambda: pool.add(TXS[3]), MempoolFullError)


def test_invalid_full_by_bytes() -> None:
    room = sum(SIZES[:3])
    pool = filled(TXS[:3], max_bytes=room + SIZES[3] - 1)
    assert_pool_rejects(pool, lambda: pool.add(TXS[3]), MempoolFullError)
    # A smaller tx that fits in the remaining room is still admitted.
    smaller = next(c for c in TXS[4:] if len(c.raw) < SIZES[3])
    pool.add(smaller)
    assert pool.size_bytes <= room + SIZES[3] - 1


def test_invalid_single_tx_larger_than_the_pool() -> None:
    pool = Mempool(max_bytes=SIZES[0] - 1)
    assert_pool_rejects(pool, lambda: pool.add(TXS[0]), MempoolFullError)


def test_bounds_are_inclusive() -> None:
    pool = filled(TXS[:4], max_txs=4, max_bytes=sum(SIZES[:4]))
    assert len(pool) == 4
    assert pool.size_bytes == sum(SIZES[:4])


def test_full_pool_accepts_again_after_remove() -> None:
    pool = filled(TXS[:2], max_txs=2)
    assert_pool_rejects(pool, lambda: pool.add(TXS[2]), MempoolFullError)
    pool.remove([TXS[0].tx_id])
    pool.add(TXS[2])
    assert ids(pool.reap(max_txs=10, max_bytes=10**9)) == ids([TXS[1], TXS[2]])


@pytest.mark.parametrize(("max_txs", "max_bytes"), [(0, 1), (1, 0), (-1, 10)])
def test_invalid_bounds(max_txs: int, max_bytes: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        Mempool(max_txs=max_txs, max_bytes=max_bytes)


def test_reap_is_fifo_and_leaves_txs_in_the_pool() -> None:
    order = (TXS[5], TXS[1], TXS[9], TXS[0])
    pool = filled(order)
    assert ids(pool.reap(max_txs=100, max_bytes=10**9)) == ids(order)
    assert ids(pool.reap(max_txs=100, max_bytes=10**9)) == ids(order)
    assert len(pool) == 4


def test_reap_bounds_by_count() -> None:
    pool = filled(TXS[:6])
    for k in range(8):
        assert ids(pool.reap(max_txs=k, max_bytes=10**9)) == ids(TXS[: min(k, 6)])


def test_reap_bounds_by_bytes_and_keeps_order() -> None:
    pool = filled(TXS[:6])
    for k in range(7):
        budget = sum(SIZES[:k])
        assert ids(pool.reap(max_txs=100, max_bytes=budget)) == ids(TXS[:k])
        # One byte short of the next tx: still exactly the first k (no reordering to fill the gap).
        if k < 6:
            assert ids(pool.reap(max_txs=100, max_bytes=budget + SIZES[k] - 1)) == ids(TXS[:k])
    assert pool.reap(max_txs=100, max_bytes=0) == []


def test_remove_drops_committed_txs_and_ignores_unknown_ids() -> None:
    pool = filled(TXS[:5])
    pool.remove([TXS[1].tx_id, TXS[3].tx_id, b"unknown", TXS[1].tx_id])
    assert len(pool) == 3
    assert pool.size_bytes == SIZES[0] + SIZES[2] + SIZES[4]
    assert ids(pool.reap(max_txs=10, max_bytes=10**9)) == ids([TXS[0], TXS[2], TXS[4]])
    assert TXS[1].tx_id not in pool
    pool.remove([])
    pool.add(TXS[1])  # a removed tx may come back (the node refuses committed ones before this)
    assert ids(pool.reap(max_txs=10, max_bytes=10**9)) == ids([TXS[0], TXS[2], TXS[4], TXS[1]])
    pool.remove(ids(TXS))
    assert len(pool) == 0
    assert pool.size_bytes == 0


# -- against a model ---------------------------------------------------------------------------------

operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(min_value=0, max_value=len(TXS) - 1)),
        st.tuples(st.just("remove"), st.lists(st.integers(min_value=0, max_value=len(TXS) - 1), max_size=4)),
        st.tuples(st.just("reap"), st.tuples(st.integers(0, 8), st.integers(0, 4_000))),
    ),
    max_size=40,
)


@settings(max_examples=300)
@given(ops=operations, max_txs=st.integers(1, 10), max_bytes=st.integers(1, 5_000))
def test_mempool_matches_a_fifo_model(ops: list[tuple[str, object]], max_txs: int, max_bytes: int) -> None:
    pool = Mempool(max_txs=max_txs, max_bytes=max_bytes)
    model: list[CheckedTx] = []  # arrival order
    for op, arg in ops:
        if op == "add":
            assert isinstance(arg, int)
            checked = TXS[arg]
            before = snapshot_pool(pool)
            if checked in model:
                with pytest.raises(DuplicateTxError):
                    pool.add(checked)
                assert snapshot_pool(pool) == before
            elif len(model) >= max_txs or sum(len(c.raw) for c in model) + len(checked.raw) > max_bytes:
                with pytest.raises(MempoolFullError):
                    pool.add(checked)
                assert snapshot_pool(pool) == before
            else:
                pool.add(checked)
                model.append(checked)
        elif op == "remove":
            assert isinstance(arg, list)
            gone = {TXS[i].tx_id for i in arg}
            pool.remove(TXS[i].tx_id for i in arg)
            model = [c for c in model if c.tx_id not in gone]
        else:
            assert isinstance(arg, tuple)
            reap_txs, reap_bytes = arg
            expected: list[CheckedTx] = []
            for c in model:  # the longest prefix within both bounds
                if len(expected) >= reap_txs or sum(len(e.raw) for e in expected) + len(c.raw) > reap_bytes:
                    break
                expected.append(c)
            assert ids(pool.reap(max_txs=reap_txs, max_bytes=reap_bytes)) == ids(expected)
        assert len(pool) == len(model) <= max_txs
        assert pool.size_bytes == sum(len(c.raw) for c in model) <= max_bytes
        assert snapshot_pool(pool).ids_in_order == tuple(ids(model))
