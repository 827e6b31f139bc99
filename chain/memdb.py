"""An in-memory stand-in for `plyvel.DB` that can lose its unsynced writes, for the simulator.

`BlockStore` uses a small part of plyvel's API; `MemDB` offers exactly that part (`get`, `put`,
`delete`, `write_batch`, `iterator(prefix=)`, `close`, `closed`) over two dicts: what a crash would
keep (`_durable`, written by synced writes) and what the process sees (`_visible`). `crash()` makes
the visible state the durable one again, the way a power loss drops what was only in the OS page
cache. The model is deliberately pessimistic: *every* unsynced write is lost, and a synced write also
makes the earlier unsynced ones durable (LevelDB's log is sequential, so syncing it syncs all before).

A write batch applies atomically when its `with` block ends without an exception, as plyvel's
`transaction=True` batches do; nothing of a batch whose block raised is applied.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType


class MemDBClosedError(RuntimeError):
    """Use of a closed `MemDB` (plyvel raises `RuntimeError` too)."""


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
    """A sorted-key byte store with plyvel's interface and a `crash()` that drops unsynced writes."""

    __slots__ = ("_closed", "_durable", "_unsynced", "_visible", "syncs")

    def __init__(self) -> None:
        self._durable: dict[bytes, bytes] = {}
        self._visible: dict[bytes, bytes] = {}
        #: Writes since the last sync, in order (None: a delete); a crash loses them.
        self._unsynced: dict[bytes, bytes | None] = {}
        self._closed = False
        #: How many synced writes were made (a simulator can count fsyncs).
        self.syncs = 0

    # -- plyvel's API, the part BlockStore uses ------------------------------------------

    def get(
        self, key: bytes, default: bytes | None = None, *, verify_checksums: bool = False
    ) -> bytes | None:
        """`verify_checksums` is accepted for plyvel's signature; memory has no checksums."""
        self._check_open()
        return self._visible.get(key, default)

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self._apply([(bytes(key), bytes(value))], sync=sync)

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        self._apply([(bytes(key), None)], sync=sync)

    def write_batch(self, *, transaction: bool = False, sync: bool = False) -> MemWriteBatch:
        """A batch; it is always applied atomically, whatever `transaction` says."""
        self._check_open()
        return MemWriteBatch(self, sync)

    def iterator(
        self, *, prefix: bytes = b"", verify_checksums: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with `prefix`, in key order (a snapshot)."""
        self._check_open()
        items = sorted((k, v) for k, v in self._visible.items() if k.startswith(prefix))
        return iter(items)

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
        self._closed = True

    def reopen(self) -> MemDB:
        """Open the database again after `close` or `crash` (same contents)."""
        self._closed = False
        return self

    @property
    def has_unsynced_writes(self) -> bool:
        return bool(self._unsynced)

    def _apply(self, ops: list[tuple[bytes, bytes | None]], *, sync: bool) -> None:
        self._check_open()
        for key, value in ops:
            if value is None:
                self._visible.pop(key, None)
            else:
                self._visible[key] = value
            self._unsynced[key] = value
        if sync:
            # A sync flushes the whole log, including the earlier unsynced writes.
            for key, value in self._unsynced.items():
                if value is None:
                    self._durable.pop(key, None)
                else:
                    self._durable[key] = value
            self._unsynced.clear()
            self.syncs += 1

    def _check_open(self) -> None:
        if self._closed:
            raise MemDBClosedError("the database is closed")
