"""Idempotency keys of the institution API: a retried record POST makes no second record.

A clinic's integration engine that times out waiting for `POST /v1/health/institution/records`
cannot know whether the record was written; it retries, and before this every retry was a new
record (issue 14, defect 7). With an `Idempotency-Key` header (the IETF httpapi draft's header: a
client-chosen unique string, e.g. a UUID) the first request's answer is remembered under that key:

- the same key with the same request (same patient, same record bytes) answers with the first
  request's record id, commitment and status, and makes nothing new (`Idempotent-Replayed: true`);
- the same key with another request is a 422 problem (`idempotency_key_reused`), nothing written;
- requests with the same key wait for each other (one lock per key), so twenty concurrent copies
  make one record and twenty identical answers.

The table is node-local (only this node's institution uses this node's token) and durable: a
LevelDB of its own in the node's home (`<home>/idempotency`), written with `sync=True` *before*
the transaction is submitted, so a node killed between the two still knows the key after a
restart. It keeps the signed transaction until the transaction is seen committed, and a retry
whose transaction this node no longer holds (its mempool was lost) submits that same transaction
again: the same tx id, so it can commit at most once. Entries expire after `IDEMPOTENCY_TTL_MS`
(a retry after a day is a new request) and the table holds at most `IDEMPOTENCY_KEYS_MAX`
entries (the oldest go first). ADR 0011 records the choice.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import re
import threading
import weakref
from pathlib import Path
from typing import Any, Final

import plyvel

from medledger.node.errors import NodeError

#: The header a client sends (IETF draft-ietf-httpapi-idempotency-key-header).
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
#: The header on an answer replayed from the table.
REPLAYED_HEADER: Final = "Idempotent-Replayed"
#: A key: 1 to 128 visible ASCII characters (a UUID is 36).
IDEMPOTENCY_KEY_CHARS_MAX: Final = 128
IDEMPOTENCY_KEY_PATTERN: Final = f"^[!-~]{{1,{IDEMPOTENCY_KEY_CHARS_MAX}}}$"
#: How long a key is remembered: a day.
IDEMPOTENCY_TTL_MS: Final = 24 * 3600 * 1000
#: Most keys remembered at once (each holds at most one signed transaction until it commits).
IDEMPOTENCY_KEYS_MAX: Final = 10_000
#: Where the table lives, relative to the node's home.
IDEMPOTENCY_DIR: Final = "idempotency"

_KEY_PREFIX: Final = b"k/"
_TIME_PREFIX: Final = b"t/"
_FINGERPRINT_DOMAIN: Final = b"medledger/api/idempotency/v1\x00"


class IdempotencyStoreError(NodeError):
    """The table on disk holds what this module never writes (a bug or a damaged disk)."""

    code = "idempotency_store_corrupt"


def is_idempotency_key(value: str) -> bool:
    return re.fullmatch(IDEMPOTENCY_KEY_PATTERN, value) is not None


def compute_fingerprint(route: str, *parts: bytes) -> bytes:
    """What makes two requests "the same request": the route and its significant bytes."""
    h = hashlib.sha256(_FINGERPRINT_DOMAIN + route.encode() + b"\x00")
    for part in parts:
        h.update(len(part).to_bytes(8, "big") + part)
    return h.digest()


@dataclasses.dataclass(frozen=True, slots=True)
class IdempotentWrite:
    """A remembered write: which request it was, its transaction and the answer's fields."""

    fingerprint: bytes
    tx_id: bytes
    #: The signed transaction, until it is seen committed (then empty).
    raw: bytes
    created_ms: int
    answer: dict[str, Any]

    def encode(self) -> bytes:
        return json.dumps(
            {
                "fingerprint": self.fingerprint.hex(),
                "tx_id": self.tx_id.hex(),
                "raw": base64.b64encode(self.raw).decode(),
                "created_ms": self.created_ms,
                "answer": self.answer,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> IdempotentWrite:
        try:
            item = json.loads(data)
            write = cls(
                bytes.fromhex(item["fingerprint"]),
                bytes.fromhex(item["tx_id"]),
                base64.b64decode(item["raw"], validate=True),
                int(item["created_ms"]),
                dict(item["answer"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            what = type(exc).__name__
            raise IdempotencyStoreError(f"an idempotency entry does not decode ({what})") from None
        if len(write.fingerprint) != 32 or len(write.tx_id) != 32:
            raise IdempotencyStoreError("an idempotency entry holds a malformed fingerprint or tx id")
        return write


def _entry_key(key: str) -> bytes:
    return _KEY_PREFIX + hashlib.sha256(key.encode()).digest()


def _time_key(created_ms: int, entry_key: bytes) -> bytes:
    return _TIME_PREFIX + created_ms.to_bytes(8, "big") + entry_key[len(_KEY_PREFIX) :]


class IdempotencyStore:
    """The node's table of idempotency keys (LevelDB at `path`); open before use, close after."""

    def __init__(
        self, path: Path, *, ttl_ms: int = IDEMPOTENCY_TTL_MS, keys_max: int = IDEMPOTENCY_KEYS_MAX
    ) -> None:
        self.path = path
        self.ttl_ms = ttl_ms
        self.keys_max = keys_max
        self._db: Any = None
        self._count = 0
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        #: Writes are synced to disk, so callers run `put` in a worker thread: one writer at a time.
        self._write_lock = threading.Lock()

    def open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._db = plyvel.DB(str(self.path), create_if_missing=True)
        self._count = sum(1 for _ in self._db.iterator(prefix=_KEY_PREFIX, include_value=False))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __len__(self) -> int:
        return self._count

    def lock(self, key: str) -> asyncio.Lock:
        """The one lock of `key`: requests with the same key run one after the other."""
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    def get(self, key: str, now_ms: int) -> IdempotentWrite | None:
        """The write remembered under `key`, unless it expired (then it is forgotten)."""
        entry_key = _entry_key(key)
        data = self._db.get(entry_key)
        if data is None:
            return None
        write = IdempotentWrite.decode(data)
        if now_ms - write.created_ms > self.ttl_ms:
            with self._write_lock:
                self._delete(entry_key, write.created_ms)
            return None
        return write

    def put(self, key: str, write: IdempotentWrite) -> None:
        """Remember `write` under `key` (durably: synced before it returns; blocking, so the API
        calls it in a worker thread)."""
        with self._write_lock:
            self._put(key, write)

    def _put(self, key: str, write: IdempotentWrite) -> None:
        entry_key = _entry_key(key)
        old = self._db.get(entry_key)
        with self._db.write_batch(transaction=True, sync=True) as batch:
            if old is not None:
                batch.delete(_time_key(IdempotentWrite.decode(old).created_ms, entry_key))
            batch.put(entry_key, write.encode())
            batch.put(_time_key(write.created_ms, entry_key), b"")
        if old is None:
            self._count += 1
        self._prune(write.created_ms)

    def _delete(self, entry_key: bytes, created_ms: int) -> None:
        with self._db.write_batch(transaction=True, sync=True) as batch:
            batch.delete(entry_key)
            batch.delete(_time_key(created_ms, entry_key))
        self._count -= 1

    def _prune(self, now_ms: int) -> None:
        """Forget expired keys, and the oldest while there are more than `keys_max`."""
        for time_key in self._db.iterator(prefix=_TIME_PREFIX, include_value=False):
            created_ms = int.from_bytes(time_key[len(_TIME_PREFIX) : len(_TIME_PREFIX) + 8], "big")
            if self._count <= self.keys_max and now_ms - created_ms <= self.ttl_ms:
                break
            self._delete(_KEY_PREFIX + time_key[len(_TIME_PREFIX) + 8 :], created_ms)
