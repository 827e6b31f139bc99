"""Issue 14 [RECORDS], defect 7: the node's idempotency table (LevelDB) survives a restart, forgets
keys after their time, holds a bounded number, and refuses what it never wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from medledger.node.idempotency import (
    IdempotencyStore,
    IdempotencyStoreError,
    IdempotentWrite,
    compute_fingerprint,
    is_idempotency_key,
)

ROUTE = "POST /v1/health/institution/records"


def write(n: int, created_ms: int, raw: bytes = b"signed tx") -> IdempotentWrite:
    fingerprint = compute_fingerprint(ROUTE, bytes([n]) * 32, b'{"resourceType":"Observation"}')
    return IdempotentWrite(
        fingerprint, bytes([n]) * 32, raw, created_ms, {"record_id": bytes([n]).hex() * 32}
    )


def test_records_7_the_table_survives_a_restart(tmp_path: Path) -> None:
    store = IdempotencyStore(tmp_path / "idempotency")
    store.open()
    store.put("key-1", write(1, 1_000))
    store.close()  # the node stops (or is killed: every put is synced)
    reopened = IdempotencyStore(tmp_path / "idempotency")
    reopened.open()
    try:
        assert reopened.get("key-1", 2_000) == write(1, 1_000)
        assert len(reopened) == 1
        assert reopened.get("key-2", 2_000) is None
    finally:
        reopened.close()


def test_records_7_keys_expire_and_the_table_is_bounded(tmp_path: Path) -> None:
    store = IdempotencyStore(tmp_path / "idempotency", ttl_ms=10_000, keys_max=3)
    store.open()
    try:
        for n in range(5):
            store.put(f"key-{n}", write(n, 1_000 + n))
        assert len(store) == 3  # the oldest two went first
        assert store.get("key-0", 1_010) is None
        assert store.get("key-1", 1_010) is None
        assert store.get("key-4", 1_010) == write(4, 1_004)
        assert store.get("key-4", 1_004 + 10_001) is None  # a day later it is a new request
        assert len(store) == 2
    finally:
        store.close()


def test_records_7_fingerprints_tell_requests_apart() -> None:
    same = compute_fingerprint(ROUTE, b"p" * 32, b"6.30")
    assert same == compute_fingerprint(ROUTE, b"p" * 32, b"6.30")
    assert same != compute_fingerprint(ROUTE, b"p" * 32, b"6.3")  # other bytes: another record
    assert same != compute_fingerprint(ROUTE, b"q" * 32, b"6.30")  # another patient
    assert compute_fingerprint(ROUTE, b"ab", b"c") != compute_fingerprint(ROUTE, b"a", b"bc")  # framed
    assert is_idempotency_key("2f1c9a0e-6a55-4c1e-9d0e-6bd3c5b1a7e1")
    for bad in ("", "x" * 129, "a b", "é", "tab\t"):
        assert not is_idempotency_key(bad)


def test_records_7_invalid_entries_on_disk_are_an_error_not_a_duplicate(tmp_path: Path) -> None:
    store = IdempotencyStore(tmp_path / "idempotency")
    store.open()
    try:
        store.put("key", write(1, 1_000))
        entry_key = next(k for k, _ in store._db.iterator(prefix=b"k/"))
        store._db.put(entry_key, b"not an entry")
        with pytest.raises(IdempotencyStoreError):
            store.get("key", 1_001)
    finally:
        store.close()
