"""Time and blocking work, as the reactor receives them: injected, so the simulator can run the
real reactor on virtual time (TigerBeetle's rule: clock, network, storage and randomness are
passed in).

* `Clock`: a monotonic clock for intervals and timeouts, the node's wall clock for block and tx
  times, and timers. `LoopClock` is the node's: the asyncio loop's time (so a loop whose time is
  virtual makes the whole reactor virtual) and `time.time()`, optionally offset.
* `Offload`: how a blocking call (LevelDB batches, executing a block, a batch of signature
  checks) runs. The node passes `asyncio.to_thread`; the simulator `run_inline`, since threads
  would make a run depend on the OS scheduler.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, Protocol, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def monotonic_s(self) -> float:
        """Seconds on a clock that never goes back (intervals, timeouts, rate limits)."""
        ...

    def wall_ms(self) -> int:
        """This node's wall clock in Unix milliseconds (block times, tx freshness)."""
        ...

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        """Run `callback` after `delay_s` seconds of this clock."""
        ...


def system_wall_ms() -> int:
    return int(time.time() * 1000)


class LoopClock:
    """The running asyncio loop's clock and timers, with a wall clock (the system's by default)."""

    __slots__ = ("_wall_ms",)

    def __init__(self, wall_ms: Callable[[], int] = system_wall_ms) -> None:
        self._wall_ms = wall_ms

    def monotonic_s(self) -> float:
        return asyncio.get_running_loop().time()

    def wall_ms(self) -> int:
        return self._wall_ms()

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay_s, callback)


class TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` saved up (a peer's budget of requests),
    on whatever clock the caller reads `now` from."""

    __slots__ = ("_at", "_tokens", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: int, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._at = now

    def take(self, now: float) -> bool:
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class Offload(Protocol):
    def __call__(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Awaitable[T]: ...


async def run_inline(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """An `Offload` that runs `func` on the loop itself (deterministic; for the simulator)."""
    return func(*args, **kwargs)
