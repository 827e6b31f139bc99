"""The simulator's timeline of a run and the HTML report a person reads to understand it.

A simulation run is a pure function of its seed, but a failing seed is hard to understand from an
invariant message alone: which node was behind, which partition was up, which node had just
restarted with lost writes. The simulator therefore records what happened, in virtual time, into a
`SimTimeline` (commits, rounds above 0, faults starting and ending, crashes, restarts, storage
faults, block-sync sessions, peers dropped, the invariant that broke), and `render_report` turns it
into one self-contained HTML page: a chart of each node's committed height over virtual time with
the faults shaded behind it, and a table of the events below.

The timeline is bounded (`EVENTS_MAX`): a long run keeps its first events and counts the rest, but
always keeps the events that explain a failure (violations, faults, crashes) up to a second bound.
The page is bounded too, whatever the run's size: each node's line is downsampled to at most
`LINE_POINTS_MAX` points, marks and bands are capped, and the table shows at most `TABLE_ROWS_MAX`
rows, saying so when it is cut.

The page carries no script and loads nothing: inline CSS and SVG only, so it can be attached to a
bug report and opened anywhere. Every string on it is escaped (`html.escape`): event details may
quote what a (hostile) peer sent.

This module imports only the standard library; the simulator (`network/sim.py`) records into it.
"""

from __future__ import annotations

import bisect
import dataclasses
import html
import re
from collections import deque
from enum import StrEnum
from pathlib import Path
from typing import Final, TypeVar

_T = TypeVar("_T")

#: Events a timeline stores; later ordinary events are counted in `SimTimeline.dropped`.
EVENTS_MAX: Final = 200_000
#: Extra room, beyond `EVENTS_MAX`, for the events that explain a failure (`KEPT_KINDS`).
KEPT_EVENTS_MAX: Final = 10_000


class TimelineKind(StrEnum):
    """What happened at one moment of a run."""

    #: A node reached a height (`height`, `round` of the commit).
    COMMIT = "commit"
    #: A node's core moved to a round > 0 at a height.
    ROUND = "round"
    #: A fault began (detail: its kind and nodes; `node` None for a network-wide one).
    FAULT_START = "fault_start"
    FAULT_END = "fault_end"
    CRASH = "crash"
    RESTART = "restart"
    STORAGE_FAULT = "storage_fault"
    SYNC_START = "sync_start"
    SYNC_DONE = "sync_done"
    PEER_DROPPED = "peer_dropped"
    #: An invariant broke here (detail: what).
    VIOLATION = "violation"


#: Kinds kept past `EVENTS_MAX` (up to `KEPT_EVENTS_MAX` more): without them a report misleads.
KEPT_KINDS: Final = frozenset(
    {
        TimelineKind.VIOLATION,
        TimelineKind.FAULT_START,
        TimelineKind.FAULT_END,
        TimelineKind.CRASH,
        TimelineKind.RESTART,
        TimelineKind.STORAGE_FAULT,
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class TimelineEvent:
    """One event at virtual time `at_ms` on `node` (an index into `node_labels`; None: network)."""

    at_ms: int
    node: int | None
    kind: TimelineKind
    detail: str
    height: int = 0
    round: int = 0


@dataclasses.dataclass(slots=True)
class SimTimeline:
    """What a run did, in virtual time; `record` appends within bounds."""

    title: str
    seed: int
    #: The command line (or call) that replays this run exactly.
    replay: str
    #: One label per node index, e.g. "v0", "v0-twin", "hostile-1".
    node_labels: list[str]
    events: list[TimelineEvent] = dataclasses.field(default_factory=list)
    #: Virtual time the run ended at; `record` keeps it at least the latest event's time.
    end_ms: int = 0
    #: Events not stored because the timeline was full.
    dropped: int = 0

    def record(
        self,
        at_ms: int,
        node: int | None,
        kind: TimelineKind,
        detail: str = "",
        *,
        height: int = 0,
        round: int = 0,
    ) -> None:
        """Append one event; past `EVENTS_MAX` only `KEPT_KINDS` are kept (bounded), others counted."""
        self.end_ms = max(self.end_ms, at_ms)
        stored = len(self.events)
        if stored >= EVENTS_MAX and (kind not in KEPT_KINDS or stored >= EVENTS_MAX + KEPT_EVENTS_MAX):
            self.dropped += 1
            return
        self.events.append(TimelineEvent(at_ms, node, kind, detail, height, round))

    @property
    def violations(self) -> list[TimelineEvent]:
        return [event for event in self.events if event.kind is TimelineKind.VIOLATION]


# -- the report ----------------------------------------------------------------------------------

#: Points kept per node's height line; a longer history is sampled evenly (first and last kept).
LINE_POINTS_MAX: Final = 200
#: Nodes drawn (one line each) and listed in the legend; a larger run says how many it left out.
NODES_DRAWN_MAX: Final = 128
#: Marks of one category (rounds, crashes, restarts, ...) drawn; more are sampled evenly.
MARKS_MAX: Final = 500
#: Fault bands drawn behind the chart and in the lanes under it; later ones are counted.
FAULT_BANDS_MAX: Final = 300
#: Lanes under the chart; overlapping faults stack into them.
FAULT_LANES_MAX: Final = 8
#: Rows of the event table; the most telling events are kept first (`_TABLE_PRIORITY`).
TABLE_ROWS_MAX: Final = 1_000
#: Violations spelled out at the top of the page.
VIOLATIONS_SHOWN_MAX: Final = 20
#: Characters of one violation message shown at the top (it is what the reader came for).
VIOLATION_CHARS_MAX: Final = 4_000
#: Characters of an event detail shown in the table (a hostile peer's text can be long); like
#: every text limit here, counted after escaping, so that the page's size bound holds for any text.
DETAIL_CHARS_MAX: Final = 300
#: Characters of a detail in a mark's tooltip.
TOOLTIP_CHARS_MAX: Final = 160
#: Nodes whose line is labelled at its end; with more, the legend names them.
LINE_LABELS_MAX: Final = 32
#: The size a page stays under, whatever the run (what the bounds above add up to, with room).
REPORT_BYTES_MAX: Final = 3_000_000

# Geometry of the chart, in SVG user units (pixels at 100 %).
_WIDTH: Final = 1100
_LEFT: Final = 64
_RIGHT: Final = 96
_TOP: Final = 28
_PLOT_HEIGHT: Final = 380
_AXIS_HEIGHT: Final = 34
_LANE_HEIGHT: Final = 18
_TICKS: Final = 8
_LINE_SHIFTS: Final = 7
_LINE_SHIFT_PX: Final = 0.9
#: Above every height, so that a bisect finds the commits at a time inclusive.
_HEIGHT_ABOVE_ALL: Final = 2**64

#: A fault kind and its nodes inside a dataclass repr used as a detail (the simulator's `Fault`).
#: Both `Fault(kind=<FaultKind.PARTITION: 'partition'>, ...)` and `Fault(FaultKind.PARTITION, ...)`.
_REPR_KIND: Final = re.compile(r"\b[A-Z]\w*Kind\.([A-Z][A-Z0-9_]*)\b")
_REPR_NODES: Final = re.compile(r"nodes=\(([\d,\s]*)\)")
_REPR_RATE: Final = re.compile(r"\brate=(\d+(?:\.\d+)?)")
_REPR_EXTRA_MS: Final = re.compile(r"\bextra_ms=(\d+)")

#: Fault kinds (`_fault_word` of a FAULT_START detail) drawn as partitions (hatched).
PARTITION_WORDS: Final = frozenset({"partition", "one_way"})

#: Which events a capped table keeps first (lower first), then in time order.
_TABLE_PRIORITY: Final = {
    TimelineKind.VIOLATION: 0,
    TimelineKind.FAULT_START: 1,
    TimelineKind.FAULT_END: 1,
    TimelineKind.CRASH: 1,
    TimelineKind.RESTART: 1,
    TimelineKind.STORAGE_FAULT: 1,
    TimelineKind.PEER_DROPPED: 2,
    TimelineKind.SYNC_START: 2,
    TimelineKind.SYNC_DONE: 2,
    TimelineKind.ROUND: 3,
    TimelineKind.COMMIT: 4,
}

_CSS: Final = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1d232a;background:#fff}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:28px 0 8px}
.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:0 0 12px}
.meta dt{color:#5b6570}.meta dd{margin:0}
code,pre{font:12.5px/1.4 ui-monospace,"SFMono-Regular",Menlo,Consolas,monospace}
pre{white-space:pre-wrap;word-break:break-word;margin:4px 0}
.ok{color:#17692c;font-weight:600}.broken{color:#b3141b;font-weight:700}
.alert{border:2px solid #b3141b;background:#fdecec;padding:10px 14px;margin:12px 0;border-radius:4px}
.alert h2{margin:0 0 6px;color:#b3141b}
.note{color:#5b6570}
svg{display:block;max-width:100%;height:auto;background:#fcfcfd;border:1px solid #dde1e5}
svg text{font:11px system-ui,sans-serif;fill:#1d232a}
.grid{stroke:#e6e9ec;stroke-width:1}.axis{stroke:#8a949e;stroke-width:1}
.node-line{fill:none;stroke-width:1.6;stroke-linejoin:round}
.band{fill:#f4b400;fill-opacity:.12}.band.partition{fill:url(#hatch);fill-opacity:1}
.lane{fill:#f4b400;fill-opacity:.55;stroke:#a87b00;stroke-width:.6}
.lane.partition{fill:#7b61ff;fill-opacity:.45;stroke:#4b33c4}
.round{fill:#ef6c00}.crash{stroke:#b3141b;stroke-width:2;fill:none}.restart{fill:#17692c}
.down{stroke:#fff;stroke-width:2.2;stroke-dasharray:4 4}
.storage{fill:#8e24aa}.sync{fill:#1e88e5;fill-opacity:.35}.dropped{fill:#37474f}
.violation{stroke:#d50000;stroke-width:2.5}.violation-text{fill:#d50000;font-weight:700}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;margin:10px 0;padding:0;list-style:none}
.legend li{display:flex;align-items:center;gap:6px}
.legend svg{border:0;background:none;display:inline}
table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid #e6e9ec;padding:3px 10px;text-align:left;vertical-align:top}
th{background:#f2f4f6;position:sticky;top:0}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.k-violation td{background:#fdecec;color:#b3141b;font-weight:600}
tr.k-fault_start td,tr.k-fault_end td{background:#fff8e1}
tr.k-crash td,tr.k-storage_fault td{background:#fbe9ef}
.swatch{display:inline-block;width:14px;height:4px;vertical-align:middle;margin-right:6px}
"""


@dataclasses.dataclass(frozen=True, slots=True)
class _Band:
    """A fault from its start to its end (or to the end of the run when it never ended)."""

    start_ms: int
    end_ms: int
    node: int | None
    detail: str
    partition: bool
    ended: bool


class _Chart:
    """Maps virtual time and height onto the plot area."""

    def __init__(self, span_ms: int, height_max: int) -> None:
        self.span_ms = max(1, span_ms)
        self.height_max = max(1, height_max)
        self.plot_width = _WIDTH - _LEFT - _RIGHT

    def x(self, at_ms: int) -> float:
        return _LEFT + min(max(at_ms, 0), self.span_ms) / self.span_ms * self.plot_width

    def y(self, height: int) -> float:
        return _TOP + _PLOT_HEIGHT - min(max(height, 0), self.height_max) / self.height_max * _PLOT_HEIGHT


def render_report(timeline: SimTimeline) -> str:
    """A self-contained HTML page for `timeline` (inline SVG and CSS, no script), at most
    `REPORT_BYTES_MAX` long whatever the run's size."""
    events = sorted(timeline.events, key=lambda event: event.at_ms)  # stable: record order within a ms
    span_ms = max([timeline.end_ms, *(event.at_ms for event in events)])
    commits = _commits_by_node(events)
    height_max = max((height for series in commits.values() for _, height in series), default=0)
    chart = _Chart(span_ms, height_max)
    bands = _fault_bands(events, span_ms)
    violations = [event for event in events if event.kind is TimelineKind.VIOLATION]
    title = _text(timeline.title, 200)
    parts = [
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{title}</title><style>{_CSS}</style></head><body>",
        f"<h1>{title}</h1>",
        _header(timeline, events, violations, span_ms),
        _violation_alert(timeline, violations),
        "<h2>Committed height per node over virtual time</h2>",
        _svg(timeline, events, commits, chart, bands, violations),
        _legend(timeline, bands),
        _node_table(timeline, events, commits),
        _event_table(timeline, events),
        "</body></html>\n",
    ]
    return "".join(parts)


def write_report(timeline: SimTimeline, path: Path) -> None:
    """Write `render_report(timeline)` to `path` (UTF-8)."""
    path.write_text(render_report(timeline), encoding="utf-8")


# -- the page's parts ----------------------------------------------------------------------------


def _header(
    timeline: SimTimeline, events: list[TimelineEvent], violations: list[TimelineEvent], span_ms: int
) -> str:
    if violations:
        outcome = f"<span class='broken'>INVARIANT BROKEN</span> ({len(violations)} violation(s))"
    else:
        outcome = "<span class='ok'>no invariant broke</span>"
    counts: dict[TimelineKind, int] = {}
    for event in events:
        counts[event.kind] = counts.get(event.kind, 0) + 1
    by_kind = ", ".join(f"{kind.value} {counts[kind]}" for kind in TimelineKind if kind in counts)
    recorded = f"{len(events)}" + (f" ({_text(by_kind, 1_000)})" if by_kind else "")
    if timeline.dropped:
        recorded += f"; the timeline was full, {timeline.dropped} later event(s) were not recorded"
    rows = [
        ("outcome", outcome),
        ("seed", f"<code>{timeline.seed}</code>"),
        ("replay", f"<code>{_text(timeline.replay, 2_000)}</code>"),
        ("nodes", f"{len(timeline.node_labels)}"),
        ("virtual time", _time(span_ms)),
        ("events", recorded),
    ]
    cells = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return f"<dl class='meta'>{cells}</dl>"


def _violation_alert(timeline: SimTimeline, violations: list[TimelineEvent]) -> str:
    if not violations:
        return ""
    items = [
        f"<p><strong>at {_time(event.at_ms)}, {_text(_label(timeline, event.node), 100)}:</strong></p>"
        f"<pre>{_text(event.detail, VIOLATION_CHARS_MAX)}</pre>"
        for event in violations[:VIOLATIONS_SHOWN_MAX]
    ]
    more = len(violations) - VIOLATIONS_SHOWN_MAX
    if more > 0:
        items.append(f"<p class='note'>and {more} more (in the table below)</p>")
    return f"<div class='alert' role='alert'><h2>Invariant broken</h2>{''.join(items)}</div>"


def _svg(
    timeline: SimTimeline,
    events: list[TimelineEvent],
    commits: dict[int, list[tuple[int, int]]],
    chart: _Chart,
    bands: list[_Band],
    violations: list[TimelineEvent],
) -> str:
    drawn = bands[:FAULT_BANDS_MAX]
    lanes = _assign_lanes(drawn)
    lane_count = max(lanes, default=-1) + 1
    lanes_top = _TOP + _PLOT_HEIGHT + _AXIS_HEIGHT
    total_height = lanes_top + lane_count * _LANE_HEIGHT + (10 if lane_count else 0)
    out = [
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {_WIDTH} {total_height}' "
        f"width='{_WIDTH}' height='{total_height}' role='img' aria-labelledby='chart-title'>",
        "<title id='chart-title'>Committed height of each node over virtual time, with faults</title>",
        "<defs><pattern id='hatch' width='8' height='8' patternUnits='userSpaceOnUse' "
        "patternTransform='rotate(45)'><rect width='8' height='8' fill='#7b61ff' fill-opacity='.06'/>"
        "<line x1='0' y1='0' x2='0' y2='8' stroke='#7b61ff' stroke-opacity='.35' stroke-width='3'/>"
        "</pattern></defs>",
    ]
    # Faults behind everything, over the plot's full height.
    out.append("<g class='bands'>")
    for band in drawn:
        x0, x1 = chart.x(band.start_ms), chart.x(band.end_ms)
        css = "band partition" if band.partition else "band"
        out.append(
            f"<rect class='{css}' x='{x0:.1f}' y='{_TOP}' width='{max(x1 - x0, 1.0):.1f}' "
            f"height='{_PLOT_HEIGHT}'><title>{_band_title(timeline, band)}</title></rect>"
        )
    out.append("</g>")
    out.append(_axes(chart))
    # One line per node: its committed height as a step function of virtual time.
    out.append("<g class='lines'>")
    nodes = range(min(len(timeline.node_labels), NODES_DRAWN_MAX))
    ends: list[tuple[float, int]] = []
    for node in nodes:
        series = _sample(commits.get(node, []), LINE_POINTS_MAX)
        points = [(chart.x(0), chart.y(0))]
        height = 0
        for at_ms, new_height in series:
            points.append((chart.x(at_ms), chart.y(height)))
            points.append((chart.x(at_ms), chart.y(new_height)))
            height = new_height
        points.append((chart.x(chart.span_ms), chart.y(height)))
        shift = _line_shift(node)
        coords = " ".join(f"{x:.1f},{y + shift:.1f}" for x, y in points)
        label = _text(timeline.node_labels[node], 60)
        out.append(
            f"<polyline class='node-line' stroke='{_colour(node)}' points='{coords}'>"
            f"<title>{label}: height {height}</title></polyline>"
        )
        ends.append((chart.y(height) + shift, node))
    out.append("</g>")
    if len(timeline.node_labels) <= LINE_LABELS_MAX:
        out.append(_line_labels(timeline, ends))
    out.append(_down_periods(timeline, events, commits, chart))
    out.append(_sync_sessions(timeline, events, commits, chart))
    out.append(_marks(timeline, events, commits, chart))
    for event in violations[:VIOLATIONS_SHOWN_MAX]:
        x = chart.x(event.at_ms)
        # The label reads away from the nearer edge, so it stays inside the picture.
        near_right = x > _LEFT + chart.plot_width * 0.8
        label_x, anchor = (x - 4, "end") if near_right else (x + 4, "start")
        out.append(
            f"<g><line class='violation' x1='{x:.1f}' y1='{_TOP - 14}' x2='{x:.1f}' "
            f"y2='{_TOP + _PLOT_HEIGHT}'/><text class='violation-text' x='{label_x:.1f}' y='{_TOP - 4}' "
            f"text-anchor='{anchor}'>invariant broken</text>"
            f"<title>{_text(event.detail, TOOLTIP_CHARS_MAX)}</title></g>"
        )
    # The fault lanes: each fault as a labelled bar, overlapping ones on separate rows.
    out.append("<g class='lanes'>")
    for band, lane in zip(drawn, lanes, strict=True):
        x0, x1 = chart.x(band.start_ms), chart.x(band.end_ms)
        y = lanes_top + lane * _LANE_HEIGHT
        width = max(x1 - x0, 2.0)
        css = "lane partition" if band.partition else "lane"
        out.append(
            f"<g><rect class='{css}' x='{x0:.1f}' y='{y}' width='{width:.1f}' "
            f"height='{_LANE_HEIGHT - 3}' rx='2'/>"
        )
        fits = int(width / 6.2)
        if fits >= 4:
            out.append(
                f"<text x='{x0 + 3:.1f}' y='{y + _LANE_HEIGHT - 7}'>"
                f"{_text(_band_label(timeline, band, short=True), fits)}</text>"
            )
        out.append(f"<title>{_band_title(timeline, band)}</title></g>")
    if lane_count:
        out.append(f"<text x='4' y='{lanes_top + 11}'>faults</text>")
    out.append("</g></svg>")
    return "".join(out)


def _axes(chart: _Chart) -> str:
    out = ["<g class='axes'>"]
    bottom = _TOP + _PLOT_HEIGHT
    right = _LEFT + chart.plot_width
    time_step = _nice_step(chart.span_ms, _TICKS)
    tick = 0
    while tick <= chart.span_ms:
        x = chart.x(tick)
        out.append(f"<line class='grid' x1='{x:.1f}' y1='{_TOP}' x2='{x:.1f}' y2='{bottom}'/>")
        out.append(f"<text x='{x:.1f}' y='{bottom + 15}' text-anchor='middle'>{_seconds(tick)}</text>")
        tick += time_step
    height_step = _nice_step(chart.height_max, _TICKS)
    level = 0
    while level <= chart.height_max:
        y = chart.y(level)
        out.append(f"<line class='grid' x1='{_LEFT}' y1='{y:.1f}' x2='{right}' y2='{y:.1f}'/>")
        out.append(f"<text x='{_LEFT - 6}' y='{y + 4:.1f}' text-anchor='end'>{level}</text>")
        level += height_step
    out.append(f"<line class='axis' x1='{_LEFT}' y1='{bottom}' x2='{right}' y2='{bottom}'/>")
    out.append(f"<line class='axis' x1='{_LEFT}' y1='{_TOP}' x2='{_LEFT}' y2='{bottom}'/>")
    out.append(
        f"<text x='{right}' y='{bottom + 29}' text-anchor='end'>virtual time (s)</text>"
        f"<text x='{_LEFT - 6}' y='{_TOP - 10}' text-anchor='end'>height</text></g>"
    )
    return "".join(out)


def _line_labels(timeline: SimTimeline, ends: list[tuple[float, int]]) -> str:
    """Labels at the right end of the lines, pushed apart so that none overlap."""
    out = ["<g class='line-labels'>"]
    last_y = -1e9
    for y, node in sorted(ends):
        label_y = max(y + 4, last_y + 12)
        last_y = label_y
        out.append(
            f"<text x='{_WIDTH - _RIGHT + 6}' y='{label_y:.1f}' style='fill:{_colour(node)}'>"
            f"{_text(timeline.node_labels[node], 14)}</text>"
        )
    out.append("</g>")
    return "".join(out)


def _down_periods(
    timeline: SimTimeline,
    events: list[TimelineEvent],
    commits: dict[int, list[tuple[int, int]]],
    chart: _Chart,
) -> str:
    """A node's line drawn dashed from each crash to its restart (or the end of the run)."""
    periods: list[tuple[int, int, int]] = []
    down_since: dict[int, int] = {}
    for event in events:
        if event.node is None or event.node >= NODES_DRAWN_MAX:
            continue
        if event.kind is TimelineKind.CRASH:
            down_since.setdefault(event.node, event.at_ms)
        elif event.kind is TimelineKind.RESTART and event.node in down_since:
            periods.append((event.node, down_since.pop(event.node), event.at_ms))
    periods.extend((node, since, chart.span_ms) for node, since in down_since.items())
    periods.sort(key=lambda period: (period[1], period[0]))
    out = ["<g class='downs'>"]
    for node, since, until in _sample(periods, MARKS_MAX):
        y = chart.y(_height_at(commits.get(node, []), since)) + _line_shift(node)
        out.append(
            f"<line class='down' x1='{chart.x(since):.1f}' y1='{y:.1f}' x2='{chart.x(until):.1f}' "
            f"y2='{y:.1f}'><title>{_text(_label(timeline, node), 60)}: down from {_time(since)} to "
            f"{_time(until)}</title></line>"
        )
    out.append("</g>")
    return "".join(out)


def _line_shift(node: int) -> float:
    """Nodes that commit together would draw one line over another: each is shifted a little."""
    return (node % _LINE_SHIFTS - _LINE_SHIFTS // 2) * _LINE_SHIFT_PX


def _sync_sessions(
    timeline: SimTimeline,
    events: list[TimelineEvent],
    commits: dict[int, list[tuple[int, int]]],
    chart: _Chart,
) -> str:
    """A translucent bar per block-sync session, at the node's height when it began."""
    sessions: list[tuple[TimelineEvent, int]] = []
    started: dict[int, TimelineEvent] = {}
    for event in events:
        if event.node is None:
            continue
        if event.kind is TimelineKind.SYNC_START:
            started.setdefault(event.node, event)
        elif event.kind is TimelineKind.SYNC_DONE and event.node in started:
            sessions.append((started.pop(event.node), event.at_ms))
    sessions.extend((event, chart.span_ms) for event in started.values())
    sessions.sort(key=lambda session: session[0].at_ms)
    out = ["<g class='syncs'>"]
    for start, end_ms in _sample(sessions, MARKS_MAX):
        node = start.node
        assert node is not None  # only node events were collected
        x0, x1 = chart.x(start.at_ms), chart.x(end_ms)
        y = chart.y(_height_at(commits.get(node, []), start.at_ms))
        out.append(
            f"<rect class='sync' x='{x0:.1f}' y='{y - 4:.1f}' width='{max(x1 - x0, 2.0):.1f}' height='8'>"
            f"<title>{_text(_label(timeline, node), 60)}: block sync {_time(start.at_ms)} to "
            f"{_time(end_ms)} {_text(start.detail, TOOLTIP_CHARS_MAX)}</title></rect>"
        )
    out.append("</g>")
    return "".join(out)


def _marks(
    timeline: SimTimeline,
    events: list[TimelineEvent],
    commits: dict[int, list[tuple[int, int]]],
    chart: _Chart,
) -> str:
    """Rounds above 0, crashes, restarts, storage faults and dropped peers, on the node's line."""
    shapes = {
        TimelineKind.ROUND: "<polygon class='round' points='{x},{y0} {xl},{y1} {xr},{y1}'>",
        TimelineKind.CRASH: "<path class='crash' d='M{xl},{yl}L{xr},{yr}M{xl},{yr}L{xr},{yl}'>",
        TimelineKind.RESTART: "<circle class='restart' cx='{x}' cy='{y}' r='3.5'>",
        TimelineKind.STORAGE_FAULT: "<polygon class='storage' points='{x},{yl} {xr},{y} {x},{yr} {xl},{y}'>",
        TimelineKind.PEER_DROPPED: "<rect class='dropped' x='{xl}' y='{yl}' width='6' height='6'>",
    }
    closing = {
        TimelineKind.ROUND: "</polygon>",
        TimelineKind.CRASH: "</path>",
        TimelineKind.RESTART: "</circle>",
        TimelineKind.STORAGE_FAULT: "</polygon>",
        TimelineKind.PEER_DROPPED: "</rect>",
    }
    out = ["<g class='marks'>"]
    for kind, shape in shapes.items():
        chosen = _sample([event for event in events if event.kind is kind], MARKS_MAX)
        for event in chosen:
            height = _height_at(commits.get(event.node, []), event.at_ms) if event.node is not None else 0
            x, y = chart.x(event.at_ms), chart.y(height)
            coords = {"x": x, "y": y, "xl": x - 3.5, "xr": x + 3.5, "yl": y - 3.5, "yr": y + 3.5}
            coords |= {"y0": y - 9, "y1": y - 3}
            out.append(shape.format(**{name: f"{value:.1f}" for name, value in coords.items()}))
            out.append(f"<title>{_mark_title(timeline, event)}</title>{closing[kind]}")
    out.append("</g>")
    return "".join(out)


def _legend(timeline: SimTimeline, bands: list[_Band]) -> str:
    symbols = [
        ("<polygon class='round' points='7,2 3,10 11,10'/>", "round &gt; 0 at a height (on the node's line)"),
        ("<path class='crash' d='M3,3L11,11M3,11L11,3'/>", "crash"),
        ("<circle class='restart' cx='7' cy='7' r='3.5'/>", "restart"),
        ("<polygon class='storage' points='7,2 12,7 7,12 2,7'/>", "storage fault"),
        (
            "<line x1='0' y1='7' x2='14' y2='7' stroke='#666' stroke-width='1.6'/>"
            "<line class='down' x1='0' y1='7' x2='14' y2='7'/>",
            "node down (crash to restart)",
        ),
        ("<rect class='sync' x='1' y='3' width='12' height='8'/>", "block-sync session"),
        ("<rect class='dropped' x='4' y='4' width='6' height='6'/>", "peer dropped"),
        ("<rect class='lane' x='1' y='3' width='12' height='8'/>", "fault (band and lane)"),
        ("<rect class='lane partition' x='1' y='3' width='12' height='8'/>", "partition (hatched band)"),
        ("<line class='violation' x1='7' y1='0' x2='7' y2='14'/>", "invariant broken"),
    ]
    items = "".join(
        f"<li><svg width='14' height='14' viewBox='0 0 14 14' aria-hidden='true'>{svg}</svg>{text}</li>"
        for svg, text in symbols
    )
    notes = []
    if len(bands) > FAULT_BANDS_MAX:
        notes.append(f"{len(bands) - FAULT_BANDS_MAX} later fault(s) not drawn (they are in the table)")
    if len(timeline.node_labels) > NODES_DRAWN_MAX:
        notes.append(f"only the first {NODES_DRAWN_MAX} of {len(timeline.node_labels)} nodes are drawn")
    notes.append(
        f"each line keeps at most {LINE_POINTS_MAX} commits and each kind of mark at most {MARKS_MAX}, "
        "sampled evenly; hover a line, mark or band for details"
    )
    note = "".join(f"<p class='note'>{text}</p>" for text in notes)
    return f"<ul class='legend'>{items}</ul>{note}"


def _node_table(
    timeline: SimTimeline, events: list[TimelineEvent], commits: dict[int, list[tuple[int, int]]]
) -> str:
    if not timeline.node_labels:
        return "<h2>Nodes</h2><p class='note'>no nodes</p>"
    counted = (
        TimelineKind.ROUND,
        TimelineKind.CRASH,
        TimelineKind.RESTART,
        TimelineKind.STORAGE_FAULT,
        TimelineKind.SYNC_START,
        TimelineKind.PEER_DROPPED,
    )
    counts: dict[tuple[int, TimelineKind], int] = {}
    for event in events:
        if event.node is not None:
            counts[(event.node, event.kind)] = counts.get((event.node, event.kind), 0) + 1
    rows = []
    for node in range(min(len(timeline.node_labels), NODES_DRAWN_MAX)):
        series = commits.get(node, [])
        final = series[-1][1] if series else 0
        cells = "".join(f"<td class='num'>{counts.get((node, kind), 0)}</td>" for kind in counted)
        rows.append(
            f"<tr><td><span class='swatch' style='background:{_colour(node)}'></span>"
            f"{_text(timeline.node_labels[node], 60)}</td><td class='num'>{final}</td>"
            f"<td class='num'>{counts.get((node, TimelineKind.COMMIT), 0)}</td>{cells}</tr>"
        )
    head = (
        "<tr><th>node</th><th>final height</th><th>commits</th><th>rounds &gt; 0</th><th>crashes</th>"
        "<th>restarts</th><th>storage faults</th><th>syncs</th><th>peers dropped</th></tr>"
    )
    return f"<h2>Nodes</h2><table class='nodes'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _event_table(timeline: SimTimeline, events: list[TimelineEvent]) -> str:
    if not events:
        return "<h2>Events</h2><p class='note'>no events were recorded</p>"
    shown = events
    note = ""
    if len(events) > TABLE_ROWS_MAX:
        keep = sorted(range(len(events)), key=lambda i: (_TABLE_PRIORITY[events[i].kind], i))
        shown = [events[i] for i in sorted(keep[:TABLE_ROWS_MAX])]
        note = (
            f"<p class='note'>Showing {len(shown)} of {len(events)} events: violations first, then "
            "faults, crashes, restarts and storage faults, then block sync and dropped peers, then "
            "rounds and commits, in time order.</p>"
        )
    rows = "".join(
        f"<tr class='k-{event.kind.value}'><td class='num'>{_seconds_ms(event.at_ms)}</td>"
        f"<td>{_text(_label(timeline, event.node), 60)}</td><td>{event.kind.value}</td>"
        f"<td class='num'>{event.height}</td><td class='num'>{event.round}</td>"
        f"<td><pre>{_text(event.detail, DETAIL_CHARS_MAX)}</pre></td></tr>"
        for event in shown
    )
    head = "<tr><th>time (s)</th><th>node</th><th>event</th><th>height</th><th>round</th><th>detail</th></tr>"
    return f"<h2>Events</h2>{note}<table class='events'><thead>{head}</thead><tbody>{rows}</tbody></table>"


# -- helpers -------------------------------------------------------------------------------------


def _commits_by_node(events: list[TimelineEvent]) -> dict[int, list[tuple[int, int]]]:
    """Each node's (time, committed height) steps, in time order."""
    commits: dict[int, list[tuple[int, int]]] = {}
    for event in events:
        if event.kind is TimelineKind.COMMIT and event.node is not None:
            commits.setdefault(event.node, []).append((event.at_ms, event.height))
    return commits


def _height_at(series: list[tuple[int, int]], at_ms: int) -> int:
    """The committed height a node's series shows at `at_ms` (0 before its first commit)."""
    index = bisect.bisect_right(series, (at_ms, _HEIGHT_ABOVE_ALL))
    return series[index - 1][1] if index else 0


def _fault_bands(events: list[TimelineEvent], span_ms: int) -> list[_Band]:
    """Pair each FAULT_END with its FAULT_START: the open one with the same node and detail (the
    simulator records both alike), failing that the oldest open one on that node of the same kind
    (the detail's first word). A fault that never ended lasts to the end of the run."""
    starts: list[TimelineEvent] = []
    open_exact: dict[tuple[int | None, str], deque[int]] = {}
    open_kind: dict[tuple[int | None, str], deque[int]] = {}
    closed: set[int] = set()
    bands: list[_Band] = []

    def take(queue: deque[int] | None) -> int | None:
        while queue:
            index = queue.popleft()
            if index not in closed:
                return index
        return None

    for event in events:
        if event.kind is TimelineKind.FAULT_START:
            opened = len(starts)
            starts.append(event)
            open_exact.setdefault((event.node, event.detail), deque()).append(opened)
            open_kind.setdefault((event.node, _fault_word(event.detail)), deque()).append(opened)
        elif event.kind is TimelineKind.FAULT_END:
            index = take(open_exact.get((event.node, event.detail)))
            if index is None:
                index = take(open_kind.get((event.node, _fault_word(event.detail))))
            if index is None:
                continue  # an end without a start: it stays in the table
            closed.add(index)
            start = starts[index]
            bands.append(_band(start, event.at_ms, ended=True))
    bands.extend(_band(start, span_ms, ended=False) for i, start in enumerate(starts) if i not in closed)
    bands.sort(key=lambda band: (band.start_ms, band.end_ms))
    return bands


def _band(start: TimelineEvent, end_ms: int, *, ended: bool) -> _Band:
    return _Band(
        start_ms=start.at_ms,
        end_ms=max(end_ms, start.at_ms),
        node=start.node,
        detail=start.detail,
        partition=_fault_word(start.detail) in PARTITION_WORDS,
        ended=ended,
    )


def _fault_word(detail: str) -> str:
    """A fault's kind: the first word of its detail, or the kind named in a dataclass repr
    (`Fault(kind=<FaultKind.PARTITION: 'partition'>, ...)`)."""
    named = _REPR_KIND.search(detail)
    if named is not None:
        return named.group(1).lower()
    words = detail.split(maxsplit=1)
    return words[0].lower().rstrip(":,") if words else ""


def _fault_summary(timeline: SimTimeline, detail: str) -> str:
    """A short name for a fault in its lane: "partition v0 v2" for a repr of the simulator's
    `Fault` (its kind and its nodes' labels), else the detail itself."""
    named = _REPR_KIND.search(detail)
    if named is None:
        return detail
    parts = [named.group(1).lower()]
    nodes = _REPR_NODES.search(detail)
    if nodes is not None:
        indices = [int(part) for part in nodes.group(1).replace(",", " ").split()]
        parts.extend(_label(timeline, index) for index in indices[:NODES_DRAWN_MAX])
    rate = _REPR_RATE.search(detail)
    if rate is not None and float(rate.group(1)) > 0:
        parts.append(f"rate {rate.group(1)}")
    extra = _REPR_EXTRA_MS.search(detail)
    if extra is not None and int(extra.group(1)) > 0:
        parts.append(f"+{extra.group(1)} ms")
    return " ".join(parts)


def _assign_lanes(bands: list[_Band]) -> list[int]:
    """A lane per band (bands sorted by start): the first lane free at its start, else the lane
    that frees up first (the bars then overlap; their tooltips still tell them apart)."""
    lane_ends: list[int] = []
    lanes = []
    for band in bands:
        free = next((lane for lane, end in enumerate(lane_ends) if end <= band.start_ms), None)
        if free is None and len(lane_ends) < FAULT_LANES_MAX:
            lane_ends.append(0)
            free = len(lane_ends) - 1
        if free is None:
            free = min(range(len(lane_ends)), key=lane_ends.__getitem__)
        lane_ends[free] = max(lane_ends[free], band.end_ms)
        lanes.append(free)
    return lanes


def _band_label(timeline: SimTimeline, band: _Band, *, short: bool = False) -> str:
    where = "" if band.node is None else f"{_label(timeline, band.node)}: "
    what = _fault_summary(timeline, band.detail) if short else band.detail
    return f"{where}{what or 'fault'}"


def _band_title(timeline: SimTimeline, band: _Band) -> str:
    until = _time(band.end_ms) if band.ended else "the end of the run (never healed)"
    label = _text(_band_label(timeline, band), TOOLTIP_CHARS_MAX)
    return f"{label}, {_time(band.start_ms)} to {until}"


def _mark_title(timeline: SimTimeline, event: TimelineEvent) -> str:
    words = event.kind.value.replace("_", " ")
    text = f"{_label(timeline, event.node)}: {words} at {_time(event.at_ms)}"
    if event.kind is TimelineKind.ROUND:
        text += f", round {event.round} at height {event.height}"
    if event.detail:
        text += f" ({event.detail[:TOOLTIP_CHARS_MAX]})"
    return _text(text, TOOLTIP_CHARS_MAX)


def _label(timeline: SimTimeline, node: int | None) -> str:
    if node is None:
        return "network"
    if 0 <= node < len(timeline.node_labels):
        return timeline.node_labels[node]
    return f"node {node}"


def _sample(items: list[_T], limit: int) -> list[_T]:
    """At most `limit` items, evenly spaced, the first and the last kept."""
    if len(items) <= limit:
        return items
    if limit <= 1:
        return items[-limit:] if limit else []
    last = len(items) - 1
    return [items[i * last // (limit - 1)] for i in range(limit)]


def _nice_step(span: int, ticks: int) -> int:
    """A step of 1, 2 or 5 times a power of ten giving at most about `ticks` ticks over `span`."""
    rough = max(1, span) / max(1, ticks)
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= rough:
                return step * factor
        step *= 10


def _text(value: str, limit: int) -> str:
    """`value` safe to place in HTML text or a quoted attribute: control characters and lone
    surrogates replaced, escaped, and cut to at most `limit` characters of output (plus "…"), so
    that text which escaping lengthens cannot make the page larger than its bounds."""
    pieces: list[str] = []
    used = 0
    cut = len(value) > limit
    for char in value[:limit]:  # every character escapes to at least one
        shown = char if char.isprintable() or char in "\n\t" else "\ufffd"
        piece = html.escape(shown, quote=True)
        if used + len(piece) > limit:
            cut = True
            break
        pieces.append(piece)
        used += len(piece)
    if cut:
        pieces.append("…")
    return "".join(pieces)


def _colour(node: int) -> str:
    """A distinct colour per node (golden-angle hues), the same in every report."""
    return f"hsl({node * 137.508 % 360:.0f},68%,40%)"


def _time(at_ms: int) -> str:
    return f"{_seconds_ms(at_ms)} s"


def _seconds_ms(at_ms: int) -> str:
    return f"{at_ms / 1000:.3f}"


def _seconds(at_ms: int) -> str:
    return f"{at_ms / 1000:g}"
