"""How block sync's progress is shown: a bar on a terminal, throttled log lines otherwise.

`SyncProgressView` takes its clock as an argument, so throttling is tested by moving a fake clock,
never by sleeping.
"""

from __future__ import annotations

import io
import logging

import pytest

from medledger.network.reactor import SyncProgress
from medledger.node.progress import (
    BAR_WIDTH,
    LOG_INTERVAL_S,
    REDRAW_INTERVAL_S,
    SyncProgressView,
    describe,
    format_duration,
    render_bar,
    render_line,
    render_summary,
)

CLEAR_LINE = "\r\x1b[K"


def progress(
    height: int,
    *,
    target: int = 40,
    start_height: int = 0,
    txs: int = 0,
    elapsed_s: float = 2.0,
    done: bool = False,
) -> SyncProgress:
    return SyncProgress(
        height=height,
        target=target,
        start_height=start_height,
        blocks=height - start_height,
        txs=txs,
        elapsed_s=elapsed_s,
        done=done,
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class RecordingStream(io.StringIO):
    """A terminal stand-in that counts flushes (a bar that is not flushed is not seen)."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


# -- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.4, "0s"),
        (6, "6s"),
        (59, "59s"),
        (59.6, "1m00s"),
        (61, "1m01s"),
        (605, "10m05s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (3725, "1h02m"),
        (36_000 + 59 * 60 + 59, "10h59m"),
        (90_000, "25h00m"),
        (-3, "0s"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# -- the figures -------------------------------------------------------------------------------


def test_describe_halfway() -> None:
    fraction, tx_rate, eta = describe(progress(20, txs=32_420, elapsed_s=2.0))
    assert fraction == 0.5
    assert tx_rate == pytest.approx(16_210)
    assert eta == pytest.approx(2.0)  # 10 blocks/s, 20 to go


def test_describe_counts_from_where_the_session_started() -> None:
    fraction, _, eta = describe(progress(120, target=140, start_height=100, elapsed_s=4.0))
    assert fraction == 0.5
    assert eta == pytest.approx(4.0)  # 20 blocks in 4 s, 20 to go


def test_describe_eta_is_unknown_before_any_block() -> None:
    fraction, tx_rate, eta = describe(progress(0, elapsed_s=3.0))
    assert (fraction, tx_rate, eta) == (0.0, 0.0, None)


def test_describe_at_zero_elapsed_does_not_divide_by_zero() -> None:
    fraction, _, eta = describe(progress(0, elapsed_s=0.0))
    assert (fraction, eta) == (0.0, None)


def test_describe_when_the_target_is_already_reached() -> None:
    fraction, _, eta = describe(progress(40, target=40, start_height=40, elapsed_s=1.0))
    assert (fraction, eta) == (1.0, None)


# -- the bar, the log line and the summary -----------------------------------------------------


def test_render_bar_at_zero() -> None:
    assert render_bar(progress(0)) == "sync [" + "·" * BAR_WIDTH + "]  0/40 blocks · 0 tx/s · ETA …"


def test_render_bar_halfway() -> None:
    line = render_bar(progress(20, txs=32_420, elapsed_s=2.0))
    assert line == "sync [##########··········] 20/40 blocks · 16,210 tx/s · ETA 2s"


def test_render_bar_done() -> None:
    line = render_bar(progress(40, txs=64_840, elapsed_s=4.0))
    assert line == "sync [" + "#" * BAR_WIDTH + "] 40/40 blocks · 16,210 tx/s · ETA 0s"


@pytest.mark.parametrize(("height", "filled"), [(0, 0), (1, 0), (2, 1), (39, 19), (40, 20)])
def test_render_bar_fill(height: int, filled: int) -> None:
    bar = render_bar(progress(height)).split("[", 1)[1].split("]", 1)[0]
    assert bar == "#" * filled + "·" * (BAR_WIDTH - filled)


def test_render_bar_pads_the_height_to_the_targets_width() -> None:
    line = render_bar(progress(7, target=12_345, elapsed_s=7.0))
    assert "    7/12345 blocks" in line
    assert line.endswith("ETA 3h25m")  # 1 block/s, 12,338 s to go


def test_render_bar_long_eta() -> None:
    assert render_bar(progress(1, target=7201, elapsed_s=1.0)).endswith("ETA 2h00m")


def test_render_line() -> None:
    line = render_line(progress(20, txs=32_420, elapsed_s=2.0))
    assert line == "block sync: height 20/40 (50%), 16,210 tx/s, ETA 2s"


def test_render_line_before_any_block() -> None:
    assert render_line(progress(0)) == "block sync: height 0/40 (0%), 0 tx/s, ETA unknown"


def test_render_summary() -> None:
    summary = render_summary(
        progress(1040, target=1040, start_height=40, txs=1_234_567, elapsed_s=125.0, done=True)
    )
    assert summary == "caught up at height 1040: 1,000 blocks, 1,234,567 txs in 2m05s (9,877 tx/s)"


# -- on a terminal -----------------------------------------------------------------------------


def test_interactive_view_redraws_the_bar_in_place_at_most_every_redraw_interval() -> None:
    stream, clock = RecordingStream(), FakeClock()
    view = SyncProgressView(stream, interactive=True, clock=clock)
    first = progress(10, txs=100)
    view(first)
    assert stream.getvalue() == CLEAR_LINE + render_bar(first)
    assert stream.flushes == 1
    clock.now += REDRAW_INTERVAL_S / 2
    view(progress(11, txs=110))  # too soon: not drawn
    assert stream.getvalue() == CLEAR_LINE + render_bar(first)
    assert stream.flushes == 1
    clock.now += REDRAW_INTERVAL_S / 2
    second = progress(12, txs=120)
    view(second)
    assert stream.getvalue() == CLEAR_LINE + render_bar(first) + CLEAR_LINE + render_bar(second)
    assert stream.flushes == 2
    assert "\n" not in stream.getvalue()  # the bar stays on one line


def test_interactive_view_ends_with_a_summary_line() -> None:
    stream, clock = RecordingStream(), FakeClock()
    view = SyncProgressView(stream, interactive=True, clock=clock)
    view(progress(10))
    drawn = stream.getvalue()
    clock.now += REDRAW_INTERVAL_S / 10  # done is shown at once, however soon it comes
    done = progress(40, txs=400, elapsed_s=8.0, done=True)
    view(done)
    assert stream.getvalue() == drawn + CLEAR_LINE + render_summary(done) + "\n"
    assert stream.flushes == 2
    # A later session starts a fresh bar straight away.
    clock.now += REDRAW_INTERVAL_S / 10
    again = progress(41, target=50, start_height=40, elapsed_s=0.5)
    view(again)
    assert stream.getvalue().endswith("\n" + CLEAR_LINE + render_bar(again))


@pytest.mark.parametrize("interactive", [True, False])
def test_a_session_that_applied_nothing_prints_nothing(
    interactive: bool, caplog: pytest.LogCaptureFixture
) -> None:
    stream = RecordingStream()
    view = SyncProgressView(stream, interactive=interactive, clock=FakeClock())
    with caplog.at_level(logging.INFO, logger="medledger.sync"):
        view(progress(30, start_height=30, done=True))
    assert stream.getvalue() == ""
    assert stream.flushes == 0
    assert caplog.records == []


# -- in a log ----------------------------------------------------------------------------------


def test_log_view_logs_at_most_every_log_interval(caplog: pytest.LogCaptureFixture) -> None:
    stream, clock = RecordingStream(), FakeClock()
    view = SyncProgressView(stream, interactive=False, clock=clock)
    shown: list[SyncProgress] = []
    with caplog.at_level(logging.INFO, logger="medledger.sync"):
        for step, height in enumerate(range(1, 32)):
            clock.now = 1000.0 + step * 0.5  # a report every half second, for 15 s
            report = progress(height, txs=height * 10, elapsed_s=step * 0.5 + 0.5)
            if step % int(LOG_INTERVAL_S / 0.5) == 0:
                shown.append(report)
            view(report)
    assert [r.getMessage() for r in caplog.records] == [render_line(p) for p in shown]
    assert len(shown) == 4  # at 0, 5, 10 and 15 s
    assert all(r.levelno == logging.INFO and r.name == "medledger.sync" for r in caplog.records)
    assert stream.getvalue() == ""  # the terminal stream is not written to


def test_log_view_logs_a_summary_when_done(caplog: pytest.LogCaptureFixture) -> None:
    stream, clock = RecordingStream(), FakeClock()
    view = SyncProgressView(stream, interactive=False, clock=clock)
    with caplog.at_level(logging.INFO, logger="medledger.sync"):
        view(progress(10))
        clock.now += 0.1
        done = progress(40, txs=400, elapsed_s=8.0, done=True)
        view(done)
        clock.now += 0.1
        view(progress(41, target=50, start_height=40))  # a new session logs straight away
    assert [r.getMessage() for r in caplog.records] == [
        render_line(progress(10)),
        render_summary(done),
        render_line(progress(41, target=50, start_height=40)),
    ]
    assert stream.getvalue() == ""
