"""Backpressure at the API (issue 17 point 4): refuse early what the network cannot finalize soon.

Without it an overloaded network admits everything into its mempools, blocks grow to their cap and
every tx, old or new, waits seconds (measured: at 1,500 tx/s offered against ~1,600 of capacity p50
reached 5 s). The gate keeps the queue short instead: a node admits a submission while its mempool
holds fewer txs than its **high-water mark**, the txs the network finalizes in `queue_target_ms`
at the rate this node has seen committed over the last `RATE_WINDOW_S` seconds (never below
`high_water_min_txs`, never above the mempool's own capacity); past it the API answers 429 with a
`Retry-After` of the seconds the excess needs to drain. A client told to retry sends again later or
elsewhere; what was admitted keeps its latency.

The refusal is decided before anything is decoded or verified (the caller asks first), so it is
cheap under the very overload it answers. A fixed `high_water_txs` replaces the adaptive mark.
Only the API's submissions pass the gate: txs gossiped by peers were admitted by a node already,
and the mempool's hard bounds (`[mempool] max_txs`, `max_bytes`) still hold for them.

Every node sees about the same mempool (txs are gossiped) and the same finalized rate, so the
nodes of a network push back together.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable
from typing import Final

from medledger.chain.errors import MempoolFullError

#: Seconds of commits the finalized rate is measured over.
RATE_WINDOW_S: Final = 5.0
#: The longest `Retry-After` the gate asks for (seconds).
RETRY_AFTER_MAX_S: Final = 30


class OverloadedError(MempoolFullError):
    """The node's queue is past its high-water mark: retry after `retry_after_s` seconds."""

    code = "overloaded"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AdmissionGate:
    """Decides, before a submission is checked, whether the mempool may take it now."""

    __slots__ = ("_capacity", "_clock", "_commits", "_committed", "_fixed", "_minimum", "_target_s")

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        capacity_txs: int,
        queue_target_ms: int,
        high_water_min_txs: int,
        high_water_txs: int = 0,
    ) -> None:
        if capacity_txs < 1 or queue_target_ms < 1 or high_water_min_txs < 1 or high_water_txs < 0:
            raise ValueError("backpressure bounds must be positive")
        self._clock = clock
        self._capacity = capacity_txs
        self._target_s = queue_target_ms / 1000
        self._minimum = min(high_water_min_txs, capacity_txs)
        self._fixed = min(high_water_txs, capacity_txs)
        #: (monotonic time, txs committed) of each block in the window.
        self._commits: collections.deque[tuple[float, int]] = collections.deque()
        #: The txs of every block in the window (kept as blocks come and go: checked per submission).
        self._committed = 0

    def observe_commit(self, txs: int) -> None:
        now = self._clock()
        self._commits.append((now, txs))
        self._committed += txs
        self._forget(now)

    def _forget(self, now: float) -> None:
        while self._commits and self._commits[0][0] < now - RATE_WINDOW_S:
            self._committed -= self._commits.popleft()[1]

    @property
    def finalized_rate(self) -> float:
        """Txs per second committed from the window's first block until now (0 until two blocks
        are seen); a network that stops committing sees its rate fall as time passes."""
        now = self._clock()
        self._forget(now)
        if len(self._commits) < 2:
            return 0.0
        span = now - self._commits[0][0]
        # The first block of the window only marks its start: its txs were finalized before it.
        return (self._committed - self._commits[0][1]) / span if span > 0 else 0.0

    @property
    def high_water_txs(self) -> int:
        if self._fixed:
            return self._fixed
        adaptive = int(self.finalized_rate * self._target_s)
        return min(self._capacity, max(self._minimum, adaptive))

    def check(self, pending: int, incoming: int) -> None:
        """Raise `OverloadedError` when `incoming` txs would take the mempool (`pending` now) past
        the high-water mark. A submission is taken whole while the mark is not yet reached, so
        one batch bigger than the mark is still admitted into an empty mempool."""
        mark = self.high_water_txs
        if pending < mark:
            return
        rate = self.finalized_rate
        excess = pending + incoming - mark
        retry = RETRY_AFTER_MAX_S if rate <= 0 else max(1, min(RETRY_AFTER_MAX_S, math.ceil(excess / rate)))
        raise OverloadedError(
            f"the network is finalizing fewer txs than it is sent ({pending} pending, high-water "
            f"mark {mark}); retry in {retry} s or at another node",
            retry,
        )


__all__ = ["RATE_WINDOW_S", "RETRY_AFTER_MAX_S", "AdmissionGate", "OverloadedError"]
