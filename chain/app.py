"""The interface between the chain and the application it drives.

The chain owns ordering, durability and agreement; the application owns meaning. The chain asks
the application to check a transaction before admitting it (`check_tx`) and to execute a whole
committed block (`apply_block`). Execution is deterministic and returns the state changes rather
than writing them, so that the block, its commit certificate and the state changes land in one
synced write batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Protocol

from medledger.chain.types import Block, Genesis, Tx, TxId


class StateReader(Protocol):
    """Read access to the application's committed state (keys are the application's own)."""

    def get(self, key: bytes) -> bytes | None: ...


@dataclasses.dataclass(frozen=True, slots=True)
class TxResult:
    """The outcome of one transaction in a block. A failed tx stays in the block, without effect."""

    ok: bool
    code: str = "ok"
    message: str = ""


#: The result of every tx that succeeded (one shared value: a block may hold thousands).
TX_OK = TxResult(True)


@dataclasses.dataclass(frozen=True, slots=True)
class BlockExecution:
    """What executing a block produced: state writes (None deletes), per-tx results, the new root."""

    writes: Mapping[bytes, bytes | None]
    results: tuple[TxResult, ...]
    state_root: bytes


class App(Protocol):
    """An application the chain drives. Implementations must be deterministic."""

    def init_state(self, genesis: Genesis) -> BlockExecution:
        """The state writes and root that the genesis `app_state` defines."""
        ...

    def check_tx(self, tx: Tx, tx_id: TxId, state: StateReader) -> None:
        """Raise `TxRejectedError` if `tx` can never be valid against `state`."""
        ...

    def apply_block(
        self, block: Block, txs: tuple[Tx, ...], state: StateReader, state_root: bytes
    ) -> BlockExecution:
        """Execute `block` (its txs already decoded) on `state`, whose root is `state_root`."""
        ...


class OverlayState:
    """A `StateReader` that sees pending writes over a base state (used while executing a block)."""

    __slots__ = ("_base", "_writes")

    def __init__(self, base: StateReader) -> None:
        self._base = base
        self._writes: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self._writes:
            return self._writes[key]
        return self._base.get(key)

    def put(self, key: bytes, value: bytes | None) -> None:
        self._writes[key] = value

    @property
    def writes(self) -> dict[bytes, bytes | None]:
        return self._writes
