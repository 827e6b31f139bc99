"""The simulator's HTML report: what a person needs is on the page, escaped, and the page stays small.

Each test renders a synthetic `SimTimeline` and reads the page back with the standard library's
`html.parser`, so the assertions are about the document (its text, tags and attributes), not about
substrings that could sit inside a tag or a comment.
"""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from medledger.network.simreport import (
    EVENTS_MAX,
    FAULT_BANDS_MAX,
    KEPT_EVENTS_MAX,
    LINE_POINTS_MAX,
    MARKS_MAX,
    NODES_DRAWN_MAX,
    REPORT_BYTES_MAX,
    TABLE_ROWS_MAX,
    VIOLATIONS_SHOWN_MAX,
    SimTimeline,
    TimelineKind,
    render_report,
    write_report,
)

#: HTML elements that have no end tag, so they enclose no text.
_VOID = frozenset({"meta", "br", "hr", "img", "input", "link", "wbr"})


class _Page(HTMLParser):
    """The parts of a page the tests look at: every tag, its attributes, the text inside each."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str]] = []
        self.texts: list[str] = []
        self.stack: list[str] = []
        #: Text per enclosing tag name (e.g. all text inside <td>, inside <title>).
        self.text_in: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend((name, value or "") for name, value in attrs)
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend((name, value or "") for name, value in attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        for tag in set(self.stack):
            self.text_in.setdefault(tag, []).append(data)

    @property
    def text(self) -> str:
        return "".join(self.texts)


class _EventRows(HTMLParser):
    """Counts the rows of the event table's body (`<table class='events'>`)."""

    def __init__(self) -> None:
        super().__init__()
        self.in_events = False
        self.in_body = False
        self.rows = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.in_events = ("class", "events") in attrs
        elif tag == "tbody" and self.in_events:
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self.in_body = False
        elif tag == "table":
            self.in_events = False


def parse(page: str) -> _Page:
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def event_rows(page: str) -> int:
    parser = _EventRows()
    parser.feed(page)
    parser.close()
    return parser.rows


AGREEMENT = "agreement: v0 and v2 committed different blocks at 5"


def small_timeline() -> SimTimeline:
    """Four validators and a twin: commits, a round 2, a partition, a crash with lost writes, a sync,
    a dropped peer and a violation."""
    timeline = SimTimeline(
        title="seed 42: 4 validators, 1 twin",
        seed=42,
        replay="medledger simulate --nodes 4 --twins 1 --seed 42",
        node_labels=["v0", "v1", "v2", "v3", "v0-twin"],
    )
    for height in range(1, 6):
        for node in range(4):
            timeline.record(height * 1_000 + node * 10, node, TimelineKind.COMMIT, height=height, round=0)
    timeline.record(2_500, None, TimelineKind.FAULT_START, "partition {0,1} | {2,3}")
    timeline.record(2_600, 2, TimelineKind.ROUND, height=3, round=2)
    timeline.record(3_800, None, TimelineKind.FAULT_END, "partition {0,1} | {2,3}")
    timeline.record(4_100, 3, TimelineKind.FAULT_START, "crash_mid")
    timeline.record(4_100, 3, TimelineKind.CRASH, "mid-batch")
    timeline.record(4_100, 3, TimelineKind.STORAGE_FAULT, "torn last write")
    timeline.record(4_600, 3, TimelineKind.RESTART, "reopened at height 3")
    timeline.record(4_600, 3, TimelineKind.FAULT_END, "crash_mid")
    timeline.record(4_700, 3, TimelineKind.SYNC_START, "from v1")
    timeline.record(4_900, 3, TimelineKind.SYNC_DONE, "at height 5")
    timeline.record(5_000, 1, TimelineKind.PEER_DROPPED, "hostile-1 sent a forged certificate")
    timeline.record(
        5_200, None, TimelineKind.VIOLATION, "agreement: v0 and v2 committed different blocks at 5"
    )
    timeline.end_ms = 6_000
    return timeline


def test_report_shows_nodes_faults_and_the_violation() -> None:
    page = parse(render_report(small_timeline()))
    assert {"svg", "polyline", "table"} <= set(page.tags)
    assert page.tags.count("polyline") == 5  # one line per node, the twin included
    for label in ("v0", "v1", "v2", "v3", "v0-twin"):
        assert label in page.text_in["td"]  # the node table names every node
    titles = " ".join(page.text_in["title"])
    assert "partition {0,1} | {2,3}" in titles  # the partition band's tooltip
    assert "v3: crash_mid" in titles  # the crash fault, on its node
    assert "round 2 at height 3" in titles
    assert "v1: peer dropped" in titles
    assert "v3: block sync" in titles
    assert "v3: down from 4.100 s to 4.600 s" in titles
    # The violation is prominent: in the alert at the top, before the chart, and in the table.
    text = page.text
    message = AGREEMENT
    assert "INVARIANT BROKEN" in text
    assert text.index(message) < text.index("Committed height per node")
    assert message in page.text_in["td"] or message in "".join(page.text_in["pre"])
    assert ("role", "alert") in page.attributes
    assert ("class", "violation") in page.attributes  # the red line on the chart
    assert "medledger simulate --nodes 4 --twins 1 --seed 42" in text  # the replay line
    assert event_rows(render_report(small_timeline())) == len(small_timeline().events)


def test_report_without_a_violation_says_so() -> None:
    timeline = small_timeline()
    timeline.events = [e for e in timeline.events if e.kind is not TimelineKind.VIOLATION]
    page = parse(render_report(timeline))
    assert "no invariant broke" in page.text
    assert "INVARIANT BROKEN" not in page.text
    assert ("role", "alert") not in page.attributes


def test_report_is_self_contained() -> None:
    raw = render_report(small_timeline())
    page = parse(raw)
    assert "script" not in page.tags
    assert not {"link", "img", "iframe", "object", "embed"} & set(page.tags)
    # Nothing is loaded: the only URL is the SVG namespace, which is a name, not a fetch.
    urls = [value for _, value in page.attributes if "://" in value]
    assert urls == ["http://www.w3.org/2000/svg"]


def test_invalid_markup_in_details_is_escaped() -> None:
    hostile = "<script>alert(1)</script>"
    timeline = SimTimeline(
        title=f"title {hostile}",
        seed=7,
        replay=f"replay {hostile}",
        node_labels=[f"v0{hostile}", "v1' onmouseover='x"],
    )
    timeline.record(100, 0, TimelineKind.COMMIT, hostile, height=1)
    timeline.record(200, 1, TimelineKind.PEER_DROPPED, f'peer said "{hostile}" \x00\ud800')
    timeline.record(300, None, TimelineKind.FAULT_START, f"partition {hostile}")
    timeline.record(400, 1, TimelineKind.VIOLATION, f"violation {hostile}")
    raw = render_report(timeline)
    page = parse(raw)
    assert "<script" not in raw.lower()
    assert "script" not in page.tags
    assert not any(name.startswith("on") for name, _ in page.attributes)
    # The text survives, as text: the reader sees exactly what the peer sent.
    assert f"violation {hostile}" in page.text
    assert f"v0{hostile}" in page.text
    raw.encode("utf-8")  # control characters and lone surrogates were replaced


def test_chart_is_well_formed_svg() -> None:
    """The chart is also valid XML (an SVG viewer, or a copy into a file, opens it on its own)."""
    for timeline in (small_timeline(), large_timeline()):
        raw = render_report(timeline)
        svg = raw[raw.index("<svg") : raw.index("</svg>") + len("</svg>")]
        root = ET.fromstring(svg)
        assert root.tag == "{http://www.w3.org/2000/svg}svg"


@pytest.mark.parametrize(
    "fault",
    [
        "Fault(kind=<FaultKind.PARTITION: 'partition'>, start_ms=100, end_ms=900, nodes=(0, 2))",
        "Fault(FaultKind.PARTITION, 100, 900, nodes=(0, 2))",
    ],
)
def test_fault_given_as_a_repr_is_named_by_its_kind_and_nodes(fault: str) -> None:
    timeline = SimTimeline(title="repr", seed=5, replay="r", node_labels=["v0", "v1", "v2"])
    timeline.record(100, None, TimelineKind.FAULT_START, fault)
    timeline.record(900, None, TimelineKind.FAULT_END, fault)
    timeline.end_ms = 2_000
    page = parse(render_report(timeline))
    classes = [value for name, value in page.attributes if name == "class"]
    assert "band partition" in classes
    assert "lane partition" in classes
    assert "partition v0 v2" in page.text_in["text"]  # the lane's short label
    assert any(fault in title for title in page.text_in["title"])  # the full detail on hover


def test_unended_fault_lasts_to_the_end_of_the_run() -> None:
    timeline = SimTimeline(title="open", seed=6, replay="r", node_labels=["v0"])
    timeline.record(500, 0, TimelineKind.FAULT_START, "loss rate 0.3")
    timeline.record(700, 0, TimelineKind.FAULT_END, "delay")  # ends another (unknown) fault
    timeline.end_ms = 4_000
    titles = " ".join(parse(render_report(timeline)).text_in["title"])
    assert "v0: loss rate 0.3, 0.500 s to the end of the run (never healed)" in titles


def test_fault_parameters_are_in_the_lane_label() -> None:
    timeline = SimTimeline(title="params", seed=8, replay="r", node_labels=["v0"])
    timeline.record(0, None, TimelineKind.FAULT_START, "Fault(FaultKind.LOSS, 0, 3000, rate=0.581)")
    timeline.record(10, None, TimelineKind.FAULT_START, "Fault(FaultKind.DELAY, 10, 3000, extra_ms=375)")
    timeline.end_ms = 3_000
    lanes = parse(render_report(timeline)).text_in["text"]
    assert "loss rate 0.581" in lanes
    assert "delay +375 ms" in lanes


def test_empty_timeline_renders(tmp_path: Path) -> None:
    timeline = SimTimeline(title="empty", seed=0, replay="medledger simulate --seed 0", node_labels=[])
    path = tmp_path / "report.html"
    write_report(timeline, path)
    page = parse(path.read_text(encoding="utf-8"))
    assert "svg" in page.tags
    assert "no events were recorded" in page.text
    assert "no invariant broke" in page.text


def test_nodes_without_events_render() -> None:
    timeline = SimTimeline(title="quiet", seed=1, replay="r", node_labels=["v0", "v1"], end_ms=5_000)
    page = parse(render_report(timeline))
    assert page.tags.count("polyline") == 2
    assert "no events were recorded" in page.text


def large_timeline() -> SimTimeline:
    """100 nodes x 100 heights with rounds, faults, crashes, syncs and dropped peers, and long
    details full of characters that escaping lengthens."""
    rng = random.Random(10)
    nodes = 100
    timeline = SimTimeline(
        title="100 nodes",
        seed=10,
        replay="medledger simulate --nodes 100 --seed 10",
        node_labels=[f"v{i}" for i in range(nodes)],
    )
    noisy = '<&"' * 400
    at_ms = 0
    for height in range(1, 101):
        at_ms += 1_000
        if height % 10 == 0:
            timeline.record(at_ms, None, TimelineKind.FAULT_START, f"partition {noisy}")
            timeline.record(at_ms + 3_000, None, TimelineKind.FAULT_END, f"partition {noisy}")
        for node in range(nodes):
            if rng.random() < 0.2:
                timeline.record(at_ms, node, TimelineKind.ROUND, noisy, height=height, round=1)
            if rng.random() < 0.02:
                timeline.record(at_ms, node, TimelineKind.CRASH, noisy)
                timeline.record(at_ms, node, TimelineKind.STORAGE_FAULT, noisy)
                timeline.record(at_ms + 500, node, TimelineKind.RESTART, noisy)
                timeline.record(at_ms + 500, node, TimelineKind.SYNC_START, noisy)
                timeline.record(at_ms + 700, node, TimelineKind.SYNC_DONE, noisy)
                timeline.record(at_ms + 700, node, TimelineKind.PEER_DROPPED, noisy)
            timeline.record(at_ms + node, node, TimelineKind.COMMIT, noisy, height=height)
    timeline.record(at_ms, 5, TimelineKind.VIOLATION, "liveness: v5 made no progress")
    return timeline


def test_large_timeline_stays_small() -> None:
    timeline = large_timeline()
    assert len(timeline.events) > TABLE_ROWS_MAX * 5
    raw = render_report(timeline)
    assert len(raw.encode("utf-8")) < REPORT_BYTES_MAX
    page = parse(raw)
    assert page.tags.count("polyline") == 100
    assert event_rows(raw) == TABLE_ROWS_MAX
    assert f"Showing {TABLE_ROWS_MAX} of {len(timeline.events)} events" in page.text
    # The capped table keeps what explains the run: the violation and every fault.
    cells = page.text_in["td"]
    assert "violation" in cells
    assert cells.count("fault_start") == 10


def test_worst_case_timeline_stays_under_the_size_bound() -> None:
    """Every cap exceeded at once, every string as long as allowed and made of characters that
    escaping lengthens: the page still stays under `REPORT_BYTES_MAX`."""
    noisy = '"<' * 3_000
    nodes = NODES_DRAWN_MAX + 20
    timeline = SimTimeline(
        title=noisy, seed=2**63, replay=noisy, node_labels=[f"{noisy}{i}" for i in range(nodes)]
    )
    per_node = (LINE_POINTS_MAX * 3, MARKS_MAX // 20)
    for node in range(nodes):
        for height in range(1, per_node[0]):
            timeline.record(height * 10 + node, node, TimelineKind.COMMIT, noisy, height=height)
        for k in range(per_node[1]):
            at_ms = k * 37 + node
            for kind in (
                TimelineKind.ROUND,
                TimelineKind.CRASH,
                TimelineKind.RESTART,
                TimelineKind.STORAGE_FAULT,
                TimelineKind.SYNC_START,
                TimelineKind.SYNC_DONE,
                TimelineKind.PEER_DROPPED,
            ):
                timeline.record(at_ms, node, kind, noisy, height=k, round=k)
    for k in range(FAULT_BANDS_MAX + 50):
        timeline.record(k * 5, None, TimelineKind.FAULT_START, f"partition {k} {noisy}")
        timeline.record(k * 5 + 400, None, TimelineKind.FAULT_END, f"partition {k} {noisy}")
    for k in range(VIOLATIONS_SHOWN_MAX + 5):
        timeline.record(k, k % nodes, TimelineKind.VIOLATION, noisy)
    raw = render_report(timeline)
    assert len(raw.encode("utf-8")) < REPORT_BYTES_MAX
    assert event_rows(raw) == TABLE_ROWS_MAX
    assert parse(raw).tags.count("polyline") == NODES_DRAWN_MAX


def test_timeline_record_is_bounded() -> None:
    timeline = SimTimeline(title="full", seed=3, replay="r", node_labels=["v0"])
    for height in range(EVENTS_MAX + 5):
        timeline.record(height, 0, TimelineKind.COMMIT, height=height)
    assert len(timeline.events) == EVENTS_MAX
    assert timeline.dropped == 5
    # What explains a failure is still kept past the bound, within a second bound.
    timeline.record(EVENTS_MAX + 10, 0, TimelineKind.VIOLATION, "agreement")
    assert timeline.events[-1].kind is TimelineKind.VIOLATION
    assert timeline.end_ms == EVENTS_MAX + 10
    for at_ms in range(KEPT_EVENTS_MAX + 3):
        timeline.record(at_ms, 0, TimelineKind.CRASH)
    assert len(timeline.events) == EVENTS_MAX + KEPT_EVENTS_MAX
    assert timeline.dropped == 5 + 4
    page = parse(render_report(timeline))
    assert "later event(s) were not recorded" in page.text
