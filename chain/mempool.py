"""The bounded pool of admitted, not yet committed transactions.

Transactions arrive here already decoded and signature-checked (`CheckedTx`), so a signature is
verified once per tx id: the block producer and, later, block validation for txs seen in gossip
skip the check for ids the pool admitted. The pool is bounded in count and bytes, deduplicates by
tx id, and hands out txs in arrival order (FIFO), which is fair and keeps latency predictable.
"""

from __future__ import annotations

from collections.abc import Iterable

from medledger.chain.errors import DuplicateTxError, MempoolFullError
from medledger.chain.limits import MEMPOOL_BYTES_MAX, MEMPOOL_TXS_MAX
from medledger.chain.validation import CheckedTx


class Mempool:
    __slots__ = ("_bytes", "_max_bytes", "_max_txs", "_txs")

    def __init__(self, *, max_txs: int = MEMPOOL_TXS_MAX, max_bytes: int = MEMPOOL_BYTES_MAX) -> None:
        if max_txs < 1 or max_bytes < 1:
            raise ValueError("mempool bounds must be positive")
        self._max_txs = max_txs
        self._max_bytes = max_bytes
        # dicts keep insertion order: iteration is arrival order, removal is O(1).
        self._txs: dict[bytes, CheckedTx] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_id: object) -> bool:
        return tx_id in self._txs

    def get(self, tx_id: bytes) -> CheckedTx | None:
        return self._txs.get(tx_id)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def capacity_txs(self) -> int:
        return self._max_txs

    def add(self, checked: CheckedTx) -> None:
        """Admit a checked tx; raises `DuplicateTxError` or `MempoolFullError` and changes nothing."""
        if checked.tx_id in self._txs:
            raise DuplicateTxError("the transaction is already pending")
        if len(self._txs) >= self._max_txs or self._bytes + len(checked.raw) > self._max_bytes:
            raise MempoolFullError(
                f"the mempool is full ({len(self._txs)} txs, {self._bytes} bytes); retry later"
            )
        self._txs[checked.tx_id] = checked
        self._bytes += len(checked.raw)

    def reap(self, *, max_txs: int, max_bytes: int) -> list[CheckedTx]:
        """The oldest pending txs that fit the bounds, in arrival order (they stay in the pool)."""
        picked: list[CheckedTx] = []
        total = 0
        for checked in self._txs.values():
            if len(picked) >= max_txs:
                break
            size = len(checked.raw)
            if total + size > max_bytes:
                break
            picked.append(checked)
            total += size
        return picked

    def remove(self, tx_ids: Iterable[bytes]) -> None:
        """Drop txs that were committed (ids not in the pool are ignored)."""
        for tx_id in tx_ids:
            checked = self._txs.pop(tx_id, None)
            if checked is not None:
                self._bytes -= len(checked.raw)
