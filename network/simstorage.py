"""Storage faults for the simulator: a node's disk that crashes mid-write, tears, or rots.

`SimDisk` is a `MemDB` (which already loses every unsynced write on `crash()`) that can also be
armed to fail in the middle of the node's work:

* `arm_crash(writes)`: the node dies at its `writes`-th next write, before that write lands
  (`SimCrashError` unwinds the node's code from inside the store call, the way a power cut stops
  a process between two statements);
* `arm_crash(writes, torn=True)`: the same, but the write in flight is *torn*: LevelDB's log
  record is half on disk, and a store opened with paranoid checks refuses it on the next start
  (`is_torn`);
* `corrupt_tip(height)`: a stored table rots while the node is down: the block at `height` no
  longer decodes, so the node's start check (`chain.integrity.check_tail`) finds it.
* `restore_wrong_backup()`: while the node is down its application state is restored from a
  backup of another state (another node's, another chain's, a bad restore script): one app entry
  differs and the stored state root is that state's. Blocks, certificates, indexes and the tip
  meta are untouched, so the store is consistent and the start check passes: the tail check
  cannot see a state root (the root after the tip is certified by no header yet, see
  `chain/integrity.py`). Only the next certified block shows it: its header carries the network's
  root after our tip, not ours, and the block pipeline raises `StateDivergedError`: the node must
  halt (our state is wrong, not the peer who served the block).

A node whose store is refused on start is rebuilt as an operator would (`medledger rebuild`):
its signing state (last signed vote, consensus lock) carried to an empty store, the chain
fetched again from peers by block sync. This module imports only `medledger.chain`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Final

from medledger.chain import layout
from medledger.chain.memdb import MemDB

#: The app entries the governed app keeps (validator sets, evidence): a wrong backup alters the
#: application's own entries, so that the node still knows its validators and halts cleanly.
_GOVERNANCE_PREFIX: Final = layout.app_key(b"chain/")
#: The entry a wrong backup holds when the state has no application entry to alter yet.
WRONG_BACKUP_KEY: Final = layout.app_key(b"sim/restored-from-a-wrong-backup")


class SimCrashError(Exception):
    """The simulated process died in the middle of a store write (raised from the write)."""


class SimDisk(MemDB):
    """A `MemDB` that can be armed to crash (or tear a write) after a number of writes."""

    __slots__ = ("_tear", "_torn", "_writes_left", "on_crash")

    def __init__(self) -> None:
        super().__init__()
        self._writes_left: int | None = None
        self._tear = False
        self._torn = False
        #: Called the moment an armed crash strikes (before `SimCrashError` unwinds the writer), so
        #: that nothing else of the dead process runs against the closed disk.
        self.on_crash: Callable[[], None] | None = None

    def arm_crash(self, writes: int, *, torn: bool = False) -> None:
        """Crash at the `writes`-th next write (1: the next one)."""
        if writes < 1:
            raise ValueError("a crash is armed for a write still to come")
        self._writes_left = writes
        self._tear = torn

    @property
    def is_armed(self) -> bool:
        return self._writes_left is not None

    @property
    def is_torn(self) -> bool:
        """The last write before the crash was torn: paranoid checks refuse the store on open."""
        return self._torn

    def disarm(self) -> None:
        self._writes_left = None
        self._tear = False

    def corrupt_tip(self, height: int) -> bool:
        """Rot the durable record of block `height` (what a crash keeps); False if it has none."""
        key = layout.block_key(height)
        raw = self._durable.get(key)
        if raw is None:
            return False
        self._durable[key] = b"\xff" + raw[1:]
        if key in self._visible:
            self._visible[key] = self._durable[key]
        return True

    def restore_wrong_backup(self) -> bytes | None:
        """Replace the durable app state by another one, consistently (see the module docstring):
        the first application entry's value changes, or one is added, and the state root becomes
        that state's. Returns the key altered (None: the store has no state root yet)."""
        root = self._durable.get(layout.META_STATE_ROOT)
        if root is None:
            return None
        key = next(
            (
                k
                for k in sorted(self._durable)
                if k.startswith(layout.APP_PREFIX) and not k.startswith(_GOVERNANCE_PREFIX)
            ),
            WRONG_BACKUP_KEY,
        )
        value = hashlib.blake2b(b"wrong backup\x00" + self._durable.get(key, b""), digest_size=16).digest()
        other_root = hashlib.blake2b(root + key + value, digest_size=len(root)).digest()
        for k, v in ((key, value), (layout.META_STATE_ROOT, other_root)):
            self._durable[k] = v
            self._visible[k] = v
        return key

    def reopen(self) -> SimDisk:
        super().reopen()
        return self

    def _apply(self, ops: list[tuple[bytes, bytes | None]], *, sync: bool) -> None:
        if self._writes_left is not None and not self.closed:
            self._writes_left -= 1
            if self._writes_left <= 0:
                self._torn = self._tear
                self.disarm()
                self.crash()
                if self.on_crash is not None:
                    self.on_crash()
                raise SimCrashError("the node crashed in the middle of a store write")
        super()._apply(ops, sync=sync)


def carry_signing_state(old: MemDB, new: MemDB) -> list[str]:
    """What `chain.store.copy_signing_state` does for a store on disk: the last signed vote and the
    consensus lock, read as raw records from the database being moved aside (it may be too
    damaged to open as a store), written with one synced batch into its empty replacement."""
    wanted = {"last signed vote": layout.META_LAST_SIGNED, "consensus lock": layout.META_CONSENSUS_LOCK}
    old.reopen()
    found = {key: value for key in wanted.values() if (value := old.get(key)) is not None}
    old.close()
    if found:
        with new.write_batch(transaction=True, sync=True) as batch:
            for key, value in found.items():
                batch.put(key, value)
    return [name for name, key in wanted.items() if key in found]


__all__ = ["SimCrashError", "SimDisk", "carry_signing_state"]
