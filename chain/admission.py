"""Admitting transactions into the mempool: one implementation for API submissions and gossip.

`check_batch` is the CPU-heavy part (decode, signature) and touches no shared state, so callers
may run it in a worker thread (libsodium releases the GIL). `Admission.admit` is the stateful
part (replays, app rules, mempool bounds); it runs on the owner's thread without suspension
points, so a batch is admitted atomically.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Container

from medledger.chain.app import App
from medledger.chain.errors import DuplicateTxError, InvalidTxError, MempoolFullError
from medledger.chain.mempool import Mempool
from medledger.chain.store import BlockStore
from medledger.chain.types import TxId, compute_tx_id
from medledger.chain.validation import CheckedTx, check_tx

Outcome = CheckedTx | InvalidTxError


def check_batch(
    raws: list[bytes], *, chain_id: str, now_ms: int, verified_ids: Container[bytes] = frozenset()
) -> list[Outcome]:
    """Decode and verify each tx (but those in `verified_ids`); each outcome is the tx or its error."""
    outcomes: list[Outcome] = []
    for raw in raws:
        try:
            verified = bool(verified_ids) and compute_tx_id(raw) in verified_ids
            outcomes.append(check_tx(raw, chain_id=chain_id, now_ms=now_ms, verified=verified))
        except InvalidTxError as exc:
            outcomes.append(exc)
    return outcomes


class BatchRejectedError(InvalidTxError):
    """A batch in which at least one tx is invalid; nothing of it was admitted."""

    code = "batch_rejected"

    def __init__(self, message: str, failures: list[tuple[int, InvalidTxError]]) -> None:
        super().__init__(message)
        self.failures = failures


@dataclasses.dataclass(frozen=True, slots=True)
class GossipAdmission:
    admitted: list[CheckedTx]
    duplicates: int
    invalid: int


class Admission:
    def __init__(self, *, store: BlockStore, mempool: Mempool, app: App) -> None:
        self.store = store
        self.mempool = mempool
        self.app = app

    def _check_state(self, checked: CheckedTx, seen: set[bytes]) -> None:
        if checked.tx_id in seen:
            raise DuplicateTxError("the transaction appears twice in this batch")
        if self.store.has_tx(checked.tx_id):
            raise DuplicateTxError("the transaction is already committed (replay)")
        if checked.tx_id in self.mempool:
            raise DuplicateTxError("the transaction is already pending")
        self.app.check_tx(checked.tx, checked.tx_id, self.store)

    def admit(self, outcomes: list[Outcome]) -> list[CheckedTx]:
        """All or nothing: raises the single tx's error, `BatchRejectedError` or `MempoolFullError`."""
        failures: list[tuple[int, InvalidTxError]] = []
        seen: set[bytes] = set()
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, InvalidTxError):
                failures.append((index, outcome))
                continue
            try:
                self._check_state(outcome, seen)
            except InvalidTxError as exc:
                failures.append((index, exc))
            seen.add(outcome.tx_id)
        if failures:
            if len(outcomes) == 1:
                raise failures[0][1]
            first_index, first = failures[0]
            raise BatchRejectedError(
                f"{len(failures)} of {len(outcomes)} transactions are invalid (first, #{first_index}: "
                f"{first.message}); none was admitted",
                failures,
            )
        checked = [o for o in outcomes if isinstance(o, CheckedTx)]
        room = self.mempool.capacity_txs - len(self.mempool)
        if len(checked) > room:
            raise MempoolFullError(f"the mempool has room for {room} more transactions; retry later")
        for item in checked:
            self.mempool.add(item)
        return checked

    def admit_gossip(self, outcomes: list[Outcome]) -> GossipAdmission:
        """Best effort for txs relayed by peers: admit what is valid and new, count the rest."""
        admitted: list[CheckedTx] = []
        duplicates = invalid = 0
        seen: set[bytes] = set()
        for outcome in outcomes:
            if isinstance(outcome, InvalidTxError):
                invalid += 1
                continue
            try:
                self._check_state(outcome, seen)
                self.mempool.add(outcome)
            except DuplicateTxError:
                duplicates += 1
            except (InvalidTxError, MempoolFullError):
                invalid += 1
            else:
                admitted.append(outcome)
            seen.add(outcome.tx_id)
        return GossipAdmission(admitted, duplicates, invalid)


__all__ = ["Admission", "BatchRejectedError", "GossipAdmission", "Outcome", "TxId", "check_batch"]
