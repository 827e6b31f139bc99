"""An in-memory stand-in for `plyvel.DB` with the storage faults a simulator injects.

`BlockStore` uses a small part of plyvel's API; `MemDB` offers exactly that part (`get`, `put`,
`delete`, `write_batch`, `iterator(prefix=)`, `close`, `closed`) over two dicts: what a crash would
keep (`_durable`, written by synced writes) and what the process sees (`_visible`). Three faults,
each deterministic (explicit parameters or a `random.Random` the caller passes):

* **Lost unsynced writes** (`crash()`): the visible state becomes the durable one again, the way a
  power loss drops what was only in the OS page cache. The model is deliberately pessimistic:
  *every* unsynced write is lost, and a synced write also makes the earlier unsynced ones durable
  (LevelDB's log is sequential, so syncing it syncs all before).
* **A torn last write** (`tear_write`): the power fails *while* a write is being logged, before it
  returned to its caller. A LevelDB write batch is one record of the write-ahead log, checksummed
  (CRC32C) as a whole and applied at recovery only once complete, so recovery never applies a
  prefix of a batch. What it does with the torn tail (`leveldb/db/log_reader.cc`, `db_impl.cc
  RecoverLogFile`) gives the two outcomes of `TornWrite`:
  - `DROPPED`: the tail record was cut short (a truncated header, or fewer payload bytes than its
    length says, at the end of the file). The reader takes that for "the writer died mid-record"
    and reports end of file, not corruption, even with `paranoid_checks=True` (which
    `BlockStore.open` sets): the store reopens exactly as before the batch, at the previous tip.
  - `CORRUPT`: the tail record is whole in length but its bytes are wrong (sectors written out of
    order), so its checksum fails. With `paranoid_checks=True` that corruption fails recovery and
    `plyvel.DB(...)` raises `plyvel.CorruptionError`, which `BlockStore.open` turns into
    `StoreCorruptedError`. `MemDB` reproduces it on the same path: after `reopen()` every read
    raises `MemDBCorruptionError` (a `plyvel.CorruptionError`), and a store's first read happens
    in its constructor, so `BlockStore.open_memory(db.reopen())` raises `StoreCorruptedError`.
  In both, the writes logged before the torn one survive (they precede it in the log, which
  reached the disk up to the tail), and the database is closed: the write raises
  `MemDBCrashedError` and nothing after it in the process ever ran, so a caller (the simulator)
  must treat that node as dead from this point.
* **A corrupted table** (`corrupt_table`): a table file (a sorted run of durable keys) fails its
  block checksums. LevelDB finds that when it reads the table, not at open: a `get` of one of its
  keys (the store always passes `verify_checksums=True`) or an iterator reaching it raises
  `plyvel.CorruptionError`, which the store maps to `StoreCorruptedError`. Covering a key the
  store reads when it opens (its meta keys, the tip block) makes the corruption "found on start".
  Rewriting a key hides its bad copy from `get` (the newer value is found first, in the memtable
  or a newer table), as in LevelDB; the model keeps that and, for simplicity, lets iterators pass
  it too.

A write batch applies atomically when its `with` block ends without an exception, as plyvel's
`transaction=True` batches do; nothing of a batch whose block raised is applied.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from enum import StrEnum
from types import TracebackType
from typing import Final

import plyvel

#: Keys a corrupted table covers at most (`corrupt_table`); LevelDB's tables hold a sorted run.
TABLE_KEYS_MAX: Final = 32


class MemDBClosedError(RuntimeError):
    """Use of a closed `MemDB` (plyvel raises `RuntimeError` too)."""


class MemDBCrashedError(MemDBClosedError):
    """The simulated process died in the middle of this write (`MemDB.tear_write`)."""


class MemDBCorruptionError(plyvel.CorruptionError):  # type: ignore[misc]  # plyvel has no stubs
    """What plyvel raises for a checksum failure; the store maps it to `StoreCorruptedError`."""


class TornWrite(StrEnum):
    """What LevelDB's recovery makes of a write torn by a power loss (see the module docstring)."""

    #: The tail record was cut short: recovery drops it silently; the store reopens before it.
    DROPPED = "dropped"
    #: The tail record's checksum fails: with paranoid checks the database no longer opens.
    CORRUPT = "corrupt"


@dataclasses.dataclass(frozen=True, slots=True)
class CorruptTable:
    """The durable keys a `corrupt_table` made unreadable, in key order."""

    keys: tuple[bytes, ...]

    @property
    def first(self) -> bytes:
        return self.keys[0]

    @property
    def last(self) -> bytes:
        return self.keys[-1]


class MemWriteBatch:
    """Writes collected in order and applied at once when the `with` block ends cleanly."""

    __slots__ = ("_db", "_ops", "_sync")

    def __init__(self, db: MemDB, sync: bool) -> None:
        self._db = db
        self._sync = sync
        self._ops: list[tuple[bytes, bytes | None]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self._ops.append((bytes(key), bytes(value)))

    def delete(self, key: bytes) -> None:
        self._ops.append((bytes(key), None))

    def __enter__(self) -> MemWriteBatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._db._apply(self._ops, sync=self._sync)


class MemDB:
    """A sorted-key byte store with plyvel's interface and the storage faults of the module docstring."""

    __slots__ = (
        "_closed",
        "_corrupt_keys",
        "_durable",
        "_open_failure",
        "_tear_plan",
        "_unsynced",
        "_visible",
        "syncs",
    )

    def __init__(self) -> None:
        self._durable: dict[bytes, bytes] = {}
        self._visible: dict[bytes, bytes] = {}
        #: Writes since the last sync, in order (None: a delete); a crash loses them.
        self._unsynced: dict[bytes, bytes | None] = {}
        self._closed = False
        #: How many synced writes were made (a simulator can count fsyncs).
        self.syncs = 0
        #: An armed torn write: (writes to let through first, outcome).
        self._tear_plan: tuple[int, TornWrite] | None = None
        #: Why the database no longer opens (a torn write whose checksum fails); None: it opens.
        self._open_failure: str | None = None
        #: Durable keys whose table fails its checksums (`corrupt_table`).
        self._corrupt_keys: set[bytes] = set()

    # -- plyvel's API, the part BlockStore uses ------------------------------------------

    def get(
        self, key: bytes, default: bytes | None = None, *, verify_checksums: bool = False
    ) -> bytes | None:
        """A read; a key of a corrupted table raises `MemDBCorruptionError` (as plyvel does with
        `verify_checksums=True`, which the store always passes)."""
        self._check_readable()
        if key in self._corrupt_keys:
            raise MemDBCorruptionError("Corruption: block checksum mismatch")
        return self._visible.get(key, default)

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self._apply([(bytes(key), bytes(value))], sync=sync)

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        self._apply([(bytes(key), None)], sync=sync)

    def write_batch(self, *, transaction: bool = False, sync: bool = False) -> MemWriteBatch:
        """A batch; it is always applied atomically, whatever `transaction` says."""
        self._check_readable()
        return MemWriteBatch(self, sync)

    def iterator(
        self, *, prefix: bytes = b"", verify_checksums: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with `prefix`, in key order (a snapshot); reaching a
        key of a corrupted table raises `MemDBCorruptionError`, after the pairs before it."""
        self._check_readable()
        items = sorted((k, v) for k, v in self._visible.items() if k.startswith(prefix))
        corrupt = sorted(k for k in self._corrupt_keys if k.startswith(prefix))
        return _walk(items, corrupt[0] if corrupt else None)

    def close(self) -> None:
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the simulator's part -------------------------------------------------------------

    def crash(self) -> None:
        """Lose every write not yet synced; the database is closed, as after a process death."""
        self._visible = dict(self._durable)
        self._unsynced.clear()
        self._tear_plan = None
        self._closed = True

    def reopen(self) -> MemDB:
        """Open the database again after `close` or `crash` (same contents). A database that no
        longer opens (`TornWrite.CORRUPT`) "opens" here, but its every use then raises
        `MemDBCorruptionError`: the store's first read, in its constructor, is where plyvel's
        failed open surfaces."""
        self._closed = False
        return self

    def tear_write(self, outcome: TornWrite, *, after: int = 0) -> None:
        """Arm a torn write: the write after the next `after` ones (each `put`, `delete` or batch
        counts one) is interrupted by a power loss with `outcome`. That write raises
        `MemDBCrashedError` and leaves the database closed; the writes before it survive."""
        if after < 0:
            raise ValueError("after must be >= 0")
        self._tear_plan = (after, outcome)

    @property
    def tear_armed(self) -> bool:
        return self._tear_plan is not None

    def corrupt_table(
        self, rng: random.Random, *, containing: bytes | None = None, keys_max: int = TABLE_KEYS_MAX
    ) -> CorruptTable | None:
        """Corrupt one "table": a sorted run of 1..`keys_max` durable keys drawn with `rng`, which
        covers `containing` when given (a durable key). None when nothing is durable yet."""
        if keys_max < 1:
            raise ValueError("keys_max must be >= 1")
        keys = sorted(self._durable)
        if not keys:
            return None
        size = rng.randint(1, min(keys_max, len(keys)))
        if containing is None:
            start = rng.randrange(len(keys) - size + 1)
        else:
            if containing not in self._durable:
                raise ValueError("containing must be a durable key")
            at = keys.index(containing)
            low, high = max(0, at - size + 1), min(at, len(keys) - size)
            start = rng.randint(low, high)
        table = CorruptTable(tuple(keys[start : start + size]))
        self._corrupt_keys.update(table.keys)
        return table

    @property
    def is_corrupted(self) -> bool:
        """Whether some read would fail (a corrupted table, or a database that no longer opens)."""
        return bool(self._corrupt_keys) or self._open_failure is not None

    @property
    def has_unsynced_writes(self) -> bool:
        return bool(self._unsynced)

    def _apply(self, ops: list[tuple[bytes, bytes | None]], *, sync: bool) -> None:
        self._check_readable()
        if self._tear_plan is not None:
            after, outcome = self._tear_plan
            if after == 0:
                self._tear_now(outcome)
            self._tear_plan = (after - 1, outcome)
        for key, value in ops:
            if value is None:
                self._visible.pop(key, None)
            else:
                self._visible[key] = value
            self._unsynced[key] = value
            # The newer value is found before the bad copy (see the module docstring).
            self._corrupt_keys.discard(key)
        if sync:
            self._sync()

    def _tear_now(self, outcome: TornWrite) -> None:
        """The power fails while this write is logged: what precedes it in the log survives."""
        self._flush()
        self._visible = dict(self._durable)
        self._tear_plan = None
        self._closed = True
        if outcome is TornWrite.CORRUPT:
            self._open_failure = "Corruption: checksum mismatch in the last log record"
        raise MemDBCrashedError(f"the process died during this write (torn write: {outcome.value})")

    def _sync(self) -> None:
        # A sync flushes the whole log, including the earlier unsynced writes.
        self._flush()
        self.syncs += 1

    def _flush(self) -> None:
        """Make every write so far durable."""
        for key, value in self._unsynced.items():
            if value is None:
                self._durable.pop(key, None)
            else:
                self._durable[key] = value
        self._unsynced.clear()

    def _check_readable(self) -> None:
        if self._closed:
            raise MemDBClosedError("the database is closed")
        if self._open_failure is not None:
            raise MemDBCorruptionError(self._open_failure)


def _walk(items: list[tuple[bytes, bytes]], corrupt: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    """Yield `items` in order; raise on reaching the first corrupted key (None: there is none)."""
    for key, value in items:
        if corrupt is not None and key >= corrupt:
            raise MemDBCorruptionError("Corruption: block checksum mismatch")
        yield key, value
    if corrupt is not None:
        raise MemDBCorruptionError("Corruption: block checksum mismatch")
