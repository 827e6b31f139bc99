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

import dataclasses
import html
from enum import StrEnum
from pathlib import Path
from typing import Final

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


def render_report(timeline: SimTimeline) -> str:
    """A self-contained HTML page for `timeline` (inline SVG and CSS, no script)."""
    title = html.escape(timeline.title)
    return (
        f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body><h1>{title}</h1><p>seed {timeline.seed}</p>"
        f"<pre>{html.escape(timeline.replay)}</pre></body></html>\n"
    )


def write_report(timeline: SimTimeline, path: Path) -> None:
    """Write `render_report(timeline)` to `path` (UTF-8)."""
    path.write_text(render_report(timeline), encoding="utf-8")
