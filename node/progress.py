"""How a node shows block sync's progress: a bar on a terminal, plain log lines otherwise.

A node that starts with an empty data directory (or finds itself far behind) may replay a long
chain from its peers; its operator wants to see that it moves and when it will be done:

    sync [##########··········] 20/40 blocks · 16,210 tx/s · ETA 6s

and in a log: ``block sync: height 20/40 (50%), 16,210 tx/s, ETA 6s``.

Rates and the ETA are over the whole session so far (a steady figure, not a jittery one); the ETA
assumes the blocks still to come are like those applied.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TextIO

from medledger.network.reactor import SyncProgress

log = logging.getLogger("medledger.sync")

#: Bar redraws at most this often (a terminal shows it; each redraw costs a write).
REDRAW_INTERVAL_S = 0.2
#: A log line at most this often when not on a terminal.
LOG_INTERVAL_S = 5.0
BAR_WIDTH = 20


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def describe(progress: SyncProgress) -> tuple[float, float, float | None]:
    """(fraction done, txs per second, seconds left or None while unknown)."""
    total = progress.target - progress.start_height
    fraction = 1.0 if total <= 0 else min(1.0, progress.blocks / total)
    elapsed = max(progress.elapsed_s, 1e-9)
    tx_rate = progress.txs / elapsed
    block_rate = progress.blocks / elapsed
    left = progress.target - progress.height
    eta = left / block_rate if block_rate > 0 else None
    return fraction, tx_rate, eta


def render_bar(progress: SyncProgress) -> str:
    fraction, tx_rate, eta = describe(progress)
    filled = int(fraction * BAR_WIDTH)
    bar = "#" * filled + "·" * (BAR_WIDTH - filled)
    width = len(str(progress.target))
    eta_text = "…" if eta is None else format_duration(eta)
    return (
        f"sync [{bar}] {progress.height:>{width}}/{progress.target} blocks · "
        f"{tx_rate:,.0f} tx/s · ETA {eta_text}"
    )


def render_line(progress: SyncProgress) -> str:
    """The log-line form (no bar): for log files and journals."""
    fraction, tx_rate, eta = describe(progress)
    eta_text = "unknown" if eta is None else format_duration(eta)
    return (
        f"block sync: height {progress.height}/{progress.target} ({fraction:.0%}), "
        f"{tx_rate:,.0f} tx/s, ETA {eta_text}"
    )


def render_summary(progress: SyncProgress) -> str:
    _, tx_rate, _ = describe(progress)
    return (
        f"caught up at height {progress.height}: {progress.blocks:,} blocks, {progress.txs:,} txs "
        f"in {format_duration(progress.elapsed_s)} ({tx_rate:,.0f} tx/s)"
    )


class SyncProgressView:
    """Receives `SyncProgress` reports; draws a bar on `stream` if interactive, else logs."""

    def __init__(
        self, stream: TextIO, *, interactive: bool, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream = stream
        self.interactive = interactive
        self.clock = clock
        self._last_shown: float | None = None

    def __call__(self, progress: SyncProgress) -> None:
        now = self.clock()
        if progress.done:
            if progress.blocks == 0:
                return
            if self.interactive:
                self.stream.write("\r\x1b[K" + render_summary(progress) + "\n")
                self.stream.flush()
            else:
                log.info("%s", render_summary(progress))
            self._last_shown = None
            return
        interval = REDRAW_INTERVAL_S if self.interactive else LOG_INTERVAL_S
        if self._last_shown is not None and now - self._last_shown < interval:
            return
        self._last_shown = now
        if self.interactive:
            self.stream.write("\r\x1b[K" + render_bar(progress))
            self.stream.flush()
        else:
            log.info("%s", render_line(progress))
