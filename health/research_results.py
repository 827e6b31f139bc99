"""The research institute's view of a query: the institutions' answers combined (issue 13).

Post-processing of public, noised answers only (it costs no privacy). Per cell:

- a count's combined value is the sum of the institutions' noised values; its noise is the sum of
  their independent noises, so its standard deviation is √(Σ 2b²) for Laplace scales b, √(Σ σ²)
  for Gaussian σ (the query's δ says which);
- a mean's combined value is the unweighted mean of the institutions' noised means (their counts
  are not released), its standard deviation that of the average of their noises;
- a cell suppressed at every institution that answered is `suppressed` (no value); one suppressed
  at some and noised at others is `partial`: its value covers the others only, a lower bound for
  a count. Institutions that have not answered yet are listed as pending.

`render_histogram_html` draws a histogram as a self-contained HTML page with an inline SVG (no
dependency, no script): suppressed cells are marked, not drawn as zero.
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

from medledger.health.research_types import (
    AGE_BANDS,
    CELL_NOISED,
    CELL_SUPPRESSED,
    GROUP_YEAR,
    TEMPLATE_HISTOGRAM,
    TEMPLATE_MEAN,
    AnswerState,
    QueryState,
    StudyState,
)

RESULT_NOISED: Final = CELL_NOISED
RESULT_SUPPRESSED: Final = CELL_SUPPRESSED
#: Suppressed at some answering institutions, noised at the others.
RESULT_PARTIAL: Final = "partial"
_MILLI: Final = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class ResultCell:
    label: str
    status: str
    #: The combined value in the values' unit (patients, or the observation's unit); None if suppressed.
    value: float | None
    noised_at: int
    suppressed_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class QueryResult:
    query_id: bytes
    study_id: bytes
    template: str
    kind: str
    code: str
    grouping: str
    mechanism: str
    epsilon: float
    delta: float
    as_of_height: int
    answered: tuple[bytes, ...]
    pending: tuple[bytes, ...]
    cells: tuple[ResultCell, ...]
    #: The standard deviation of a shown cell's combined noise (a noised cell's; 0 before answers).
    noise_sd: float
    noise_scales: tuple[float, ...]

    def to_json(self, names: Mapping[bytes, str] | None = None) -> dict[str, Any]:
        def who(keys: Sequence[bytes]) -> list[dict[str, Any]]:
            return [{"key": k.hex(), "name": (names or {}).get(k)} for k in keys]

        return {
            "query_id": self.query_id.hex(),
            "study_id": self.study_id.hex(),
            "template": self.template,
            "kind": self.kind,
            "code": self.code,
            "grouping": self.grouping,
            "mechanism": self.mechanism,
            "epsilon": self.epsilon,
            "delta": self.delta,
            "as_of_height": self.as_of_height,
            "answered": who(self.answered),
            "pending": who(self.pending),
            "noise_sd": self.noise_sd,
            "noise_scales": list(self.noise_scales),
            "cells": [dataclasses.asdict(cell) for cell in self.cells],
        }


def _sort_key(grouping: str, label: str) -> tuple[int, str]:
    """Age bands in age order ("90+" last), years in order, others by label."""
    if label in AGE_BANDS:
        return (int(label.split("-", maxsplit=1)[0].rstrip("+")), label)
    if grouping == GROUP_YEAR and label.isdigit():
        return (int(label), label)
    return (0, label)


def combine_answers(study: StudyState, query: QueryState, answers: Sequence[AnswerState]) -> QueryResult:
    """The answers of a query's institutions combined (module docstring)."""
    template = study.get_template(query.template)
    kind = template.kind if template is not None else ""
    gaussian = query.delta_pico > 0
    answered = tuple(a.institution for a in answers)
    pending = tuple(k for k in query.institutions if k not in answered)
    values: dict[str, list[float]] = {}
    suppressed: dict[str, int] = {}
    for answer in answers:
        for cell in answer.cells:
            values.setdefault(cell.label, [])
            suppressed.setdefault(cell.label, 0)
            if cell.status == CELL_SUPPRESSED:
                suppressed[cell.label] += 1
            else:
                values[cell.label].append(cell.value_milli / _MILLI)
    cells = []
    for label in sorted(values, key=lambda label: _sort_key(query.params.grouping, label)):
        shown = values[label]
        if not shown:
            cells.append(ResultCell(label, RESULT_SUPPRESSED, None, 0, suppressed[label]))
            continue
        value = sum(shown) / len(shown) if kind == TEMPLATE_MEAN else sum(shown)
        status = RESULT_PARTIAL if suppressed[label] else RESULT_NOISED
        cells.append(ResultCell(label, status, value, len(shown), suppressed[label]))
    scales = tuple(a.noise_scale_milli / _MILLI for a in answers)
    variances = [s * s if gaussian else 2 * s * s for s in scales]
    if kind == TEMPLATE_MEAN and answers:
        noise_sd = math.sqrt(sum(variances)) / len(answers)
    else:
        noise_sd = math.sqrt(sum(variances))
    return QueryResult(
        query_id=query.query_id,
        study_id=query.study_id,
        template=query.template,
        kind=kind,
        code=query.params.code,
        grouping=query.params.grouping,
        mechanism="discrete Gaussian" if gaussian else "discrete Laplace",
        epsilon=query.epsilon_micro / 1_000_000,
        delta=query.delta_pico / 10**12,
        as_of_height=query.as_of_height,
        answered=answered,
        pending=pending,
        cells=tuple(cells),
        noise_sd=noise_sd,
        noise_scales=scales,
    )


# --- the histogram ------------------------------------------------------------------------------

_BAR_W: Final = 28
_GAP: Final = 8
_PLOT_H: Final = 240
_MARGIN_L: Final = 56
_MARGIN_B: Final = 64


def _trimmed_year_cells(cells: Sequence[ResultCell]) -> list[ResultCell]:
    """A year histogram from its first to its last cell that is not suppressed (201 bars otherwise)."""
    shown = [i for i, c in enumerate(cells) if c.status != RESULT_SUPPRESSED]
    if not shown:
        return list(cells[:0])
    return list(cells[shown[0] : shown[-1] + 1])


def render_histogram_svg(result: QueryResult) -> str:
    """An SVG bar chart of a histogram result: noised bars, hatched partial ones, suppressed marked."""
    cells = _trimmed_year_cells(result.cells) if result.grouping == GROUP_YEAR else list(result.cells)
    top = max([c.value or 0.0 for c in cells] + [1.0])
    width = _MARGIN_L + len(cells) * (_BAR_W + _GAP) + _GAP
    height = _PLOT_H + _MARGIN_B + 16
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="histogram by {html.escape(result.grouping)}">',
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="3" height="6" fill="#4a78b5"/></pattern></defs>',
        f'<line x1="{_MARGIN_L}" y1="{_PLOT_H + 8}" x2="{width}" y2="{_PLOT_H + 8}" stroke="#333"/>',
        f'<text x="4" y="16" font-size="11">{top:.0f}</text>',
    ]
    for index, cell in enumerate(cells):
        x = _MARGIN_L + _GAP + index * (_BAR_W + _GAP)
        label = html.escape(cell.label)
        if cell.status == RESULT_SUPPRESSED or cell.value is None:
            parts.append(
                f'<text x="{x + _BAR_W / 2}" y="{_PLOT_H}" font-size="10" text-anchor="middle" '
                f'fill="#a33" class="suppressed">suppressed</text>'
            )
        else:
            bar = max(cell.value, 0.0) / top * (_PLOT_H - 16)
            fill = "url(#hatch)" if cell.status == RESULT_PARTIAL else "#4a78b5"
            parts.append(
                f'<rect x="{x}" y="{_PLOT_H + 8 - bar:.1f}" width="{_BAR_W}" height="{bar:.1f}" '
                f'fill="{fill}" class="{cell.status}"><title>{label}: {cell.value:.0f}</title></rect>'
            )
            parts.append(
                f'<text x="{x + _BAR_W / 2}" y="{_PLOT_H + 4 - bar:.1f}" font-size="10" '
                f'text-anchor="middle">{cell.value:.0f}</text>'
            )
        parts.append(
            f'<text x="{x + _BAR_W / 2}" y="{_PLOT_H + 24}" font-size="10" text-anchor="end" '
            f'transform="rotate(-45 {x + _BAR_W / 2} {_PLOT_H + 24})">{label}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render_histogram_html(result: QueryResult, title: str) -> str:
    """A self-contained page: the study's title, the query, the chart and what the marks mean."""
    if result.kind != TEMPLATE_HISTOGRAM:
        raise ValueError("only a histogram query has a histogram")
    pending = f"; {len(result.pending)} institution(s) have not answered yet" if result.pending else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(result.code)} by {html.escape(result.grouping)}, data as of block "
        f"{result.as_of_height}: {len(result.answered)} institution(s) answered{pending}.</p>"
        f"{render_histogram_svg(result)}"
        f"<p>Noise: {html.escape(result.mechanism)}, ε = {result.epsilon:g} per answer, "
        f"standard deviation {result.noise_sd:.2f} per bar. Bars marked <em>suppressed</em> are "
        "below the study's smallest cell at every institution; hatched bars were suppressed at "
        "some institutions and cover the others only.</p></body></html>"
    )


def format_result_lines(result: Mapping[str, Any]) -> list[str]:
    """A combined result as the API serves it (`GET /v1/health/institution/queries/{id}`), in
    lines for a terminal: what was asked, the noise, who answered, each cell (value or
    "suppressed"; "partial" where some institutions suppressed it). Used by `medledger research
    result` and the demo."""
    lines = [
        f"{result['code']} by {result['grouping']} ({result['kind']}), "
        f"data as of block {result['as_of_height']}",
        f"noise: {result['mechanism']}, ε {result['epsilon']:g} per answer, "
        f"sd {result['noise_sd']:.2f} per cell",
        f"answered: {', '.join(i['name'] or i['key'][:16] for i in result['answered']) or 'nobody yet'}",
    ]
    if result["pending"]:
        lines.append(f"pending: {', '.join(i['name'] or i['key'][:16] for i in result['pending'])}")
    for cell in result["cells"]:
        if result["grouping"] == "year" and cell["status"] == "suppressed":
            continue  # 201 years: only those with a value
        value = "suppressed" if cell["value"] is None else f"{cell['value']:.1f}"
        mark = " (partial: suppressed at some institutions)" if cell["status"] == "partial" else ""
        lines.append(f"  {cell['label']:>8}  {value}{mark}")
    return lines


__all__ = [
    "QueryResult",
    "ResultCell",
    "combine_answers",
    "format_result_lines",
    "render_histogram_html",
    "render_histogram_svg",
]
