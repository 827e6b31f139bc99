"""An asyncio event loop on virtual time, for the simulator: minutes of a network in seconds.

`VirtualTimeLoop` is a real asyncio loop (tasks, futures, `asyncio.Queue`, `call_later`,
`asyncio.sleep`, `wait_for` all work unchanged) whose clock is a number it owns. When nothing is
ready to run, the loop's "selector" does not wait: it moves the clock straight to the earliest
timer, the way trio's `MockClock(autojump_threshold=0)` and the `looptime` pytest plugin do. So a
run's timeline depends only on what the code schedules, never on how fast the machine is.

What makes a run a pure function of its seed:

* no I/O: the loop has no self-pipe and no sockets; `call_soon_threadsafe` has nobody to wake
  (the simulator starts no thread), and a selector registration is refused;
* no threads: `run_in_executor` (and so `asyncio.to_thread`) runs the function inline and returns
  a finished future, so work a node would offload happens at one virtual instant;
* timers due at one instant run in the order they were set (asyncio's heap alone leaves ties to
  its internal layout, so one unrelated timer more would reorder a run);
* a loop with nothing scheduled at all is a deadlock of the simulated system (`SimDeadlockError`),
  not a hang.

This module imports only the standard library.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import heapq
import itertools
import selectors
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final, TypeVar, TypeVarTuple, Unpack

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

#: The virtual clock starts here (seconds); 0 keeps a run's virtual milliseconds readable.
VIRTUAL_EPOCH_S: Final = 0.0


class SimDeadlockError(RuntimeError):
    """The loop has nothing ready and no timer: the simulated system can never move again."""


#: Loop iterations at one virtual instant beyond which the simulated system is livelocked.
SPINS_AT_ONE_INSTANT_MAX: Final = 1_000_000


class SimLivelockError(RuntimeError):
    """The loop keeps running callbacks without virtual time ever moving on."""


class _VirtualSelector(selectors.BaseSelector):
    """A selector with no file objects: `select(timeout)` advances the loop's virtual clock."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._loop = loop
        self._spins = 0

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        raise RuntimeError("a virtual-time loop does no I/O")

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        raise KeyError(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise SimDeadlockError("nothing is ready and no timer is set: the simulation is stuck")
        if timeout > 0:
            self._spins = 0
            self._loop.advance(timeout)
        else:
            self._spins += 1
            if self._spins > SPINS_AT_ONE_INSTANT_MAX:
                raise SimLivelockError(
                    f"{SPINS_AT_ONE_INSTANT_MAX} loop iterations at virtual time {self._loop.time():.3f} s"
                )
        return []

    def close(self) -> None:
        return None

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return {}


class _OrderedTimer(asyncio.TimerHandle):
    """A timer ordered by (due time, the order it was set): ties run first come, first served.

    Only this loop's heap compares them, and it holds nothing else."""

    __slots__ = ("_key",)

    def __init__(
        self,
        seq: int,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        context: contextvars.Context | None,
    ) -> None:
        super().__init__(when, callback, args, loop, context)
        self._key = (when, seq)

    def __lt__(self, other: object) -> bool:
        return self._key < other._key  # type: ignore[attr-defined, no-any-return]


class VirtualTimeLoop(asyncio.BaseEventLoop):
    """An event loop whose `time()` is virtual and jumps to the next timer when idle."""

    def __init__(self, start_s: float = VIRTUAL_EPOCH_S) -> None:
        super().__init__()
        self._virtual_s = start_s
        self._selector = _VirtualSelector(self)
        self._timer_seq = itertools.count()

    def time(self) -> float:
        return self._virtual_s

    def advance(self, seconds: float) -> None:
        """Move the clock forward (the selector does it when the loop is idle)."""
        if seconds < 0:
            raise ValueError("virtual time never goes back")
        self._virtual_s += seconds

    @property
    def now_ms(self) -> int:
        """The virtual time in whole milliseconds."""
        return round(self._virtual_s * 1000)

    def call_at(
        self,
        when: float,
        callback: Callable[[Unpack[Ts]], object],
        *args: *Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        """`BaseEventLoop.call_at` with ties broken by the order timers were set."""
        self._check_closed()  # type: ignore[attr-defined]
        timer = _OrderedTimer(next(self._timer_seq), when, callback, args, self, context)
        heapq.heappush(self._scheduled, timer)  # type: ignore[attr-defined]
        timer._scheduled = True  # type: ignore[attr-defined]
        return timer

    # -- what BaseEventLoop leaves to its subclasses -------------------------------------------

    def _process_events(self, event_list: list[Any]) -> None:
        return None

    def _write_to_self(self) -> None:
        return None  # no other thread ever waits on this loop

    def run_in_executor(
        self, executor: concurrent.futures.Executor | None, func: Callable[[Unpack[Ts]], T], *args: *Ts
    ) -> asyncio.Future[T]:
        """Run `func` now, on the loop (no threads in a simulation): a finished future."""
        future: asyncio.Future[T] = self.create_future()
        try:
            future.set_result(func(*args))
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:  # the caller awaits it and sees the error, as from a thread
            future.set_exception(exc)
        return future


def start_eager(coro: Coroutine[Any, Any, None]) -> None:
    """Start `coro` at once, running it up to its first suspension (as Python 3.12's eager task
    factory does); only a coroutine that does suspend goes on as a task. A simulated network
    hands every frame to a handler, and most handlers finish without waiting for anything: a
    task for each would be most of the simulator's scheduling work. The coroutine must not ask
    for `asyncio.current_task()` before it first suspends (`asyncio.timeout` does)."""
    try:
        awaited = coro.send(None)
    except StopIteration:
        return
    asyncio.get_running_loop().create_task(_go_on(coro, awaited))


async def _go_on(coro: Coroutine[Any, Any, None], awaited: Any) -> None:
    """Drive a coroutine `start_eager` began, from where it suspended (what a task's steps do)."""
    while True:
        try:
            if awaited is None:  # a bare yield (`asyncio.sleep(0)`): let the loop run others first
                await asyncio.sleep(0)
            else:  # an asyncio future; the coroutine reads its result (or error) itself on resuming
                await asyncio.wait([awaited])
        except asyncio.CancelledError:
            coro.close()  # the loop shuts down: the coroutine's `finally` blocks run
            raise
        try:
            awaited = coro.send(None)
        except StopIteration:
            return


async def run_inline(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """An offload that runs `func` on the loop (the simulator's stand-in for `asyncio.to_thread`)."""
    return contextvars.copy_context().run(func, *args, **kwargs)


__all__ = [
    "SPINS_AT_ONE_INSTANT_MAX",
    "SimDeadlockError",
    "SimLivelockError",
    "VirtualTimeLoop",
    "run_inline",
    "start_eager",
]
