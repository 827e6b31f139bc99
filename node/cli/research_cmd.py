"""`medledger research`: a research institute's studies, queries and results, through its node.

Each command calls the node's research routes (`node/research_api.py`) with the node's API token,
read from `--home` like `medledger events`. Privacy numbers are given as decimals (`--epsilon 0.5`)
and sent in the ledger's fixed point (millionths), so what is charged is what was typed, rounded
to a millionth. Institutions answer on their own (their nodes follow the chain, ADR 0019);
`result --wait` waits until every asked institution has.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final

import click

from medledger.health.research_results import format_result_lines
from medledger.node.cli._common import fail, home_option, json_option, reports_errors
from medledger.node.config import load_config
from medledger.node.run import api_address_path

_MICRO: Final = 1_000_000
_PICO: Final = 10**12
_MILLI: Final = 1000
DAY_MS: Final = 24 * 3600 * 1000
REQUEST_TIMEOUT_S: Final = 60.0
RESULT_POLL_S: Final = 0.25


class NodeApi:
    """The node's institution API with its token (plain HTTP on loopback, as `medledger events`)."""

    def __init__(self, home: Path) -> None:
        config = load_config(home)
        url = config.api_url
        address = api_address_path(home)
        if address.exists():
            url = str(json.loads(address.read_text(encoding="utf-8"))["url"])
        if url.startswith("https:"):
            fail("this command talks to a node over plain HTTP on loopback; TLS nodes are not supported yet")
        self.url = url.rstrip("/")
        self.token = config.api_token_file.read_text(encoding="utf-8").strip()

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:  # noqa: S310
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            try:
                problem = json.loads(exc.read())
                fail(f"{problem.get('title', 'refused')}: {problem.get('detail', '')} ({exc.code})")
            except ValueError:
                fail(f"the node answered {exc.code}")
        except OSError as exc:
            fail(f"the node at {self.url} does not answer: {exc}")

    def json(self, method: str, path: str, body: Any = None) -> Any:
        return json.loads(self.call(method, path, body)[1])


def _fixed(value: float, unit: int, what: str) -> int:
    if value < 0:
        fail(f"{what} cannot be negative")
    return round(value * unit)


@click.group("research")
@home_option
@click.pass_context
def research(ctx: click.Context, home: Path) -> None:
    """A research institute's studies, queries and combined results (through this node)."""
    ctx.obj = NodeApi(home)


@research.command("register")
@click.option("--title", required=True, help="The study's title (what patients decide on).")
@click.option("--ethics-ref", required=True, help="The ethics approval it cites, e.g. IRB-2026-0113.")
@click.option(
    "--templates",
    "templates_file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    required=True,
    help="A JSON list of query templates (name, kind, codes, groupings, value_min_milli, "
    "value_max_milli, epsilon_max_micro[, delta_max_pico]).",
)
@click.option("--epsilon", type=float, required=True, help="The study's total ε.")
@click.option("--delta", type=float, default=0.0, show_default=True, help="The study's total δ.")
@click.option(
    "--k-min", type=click.IntRange(1), default=None, help="Smallest released cell (default: the network's)."
)
@click.option(
    "--days", type=click.IntRange(1), default=365, show_default=True, help="How long the study runs."
)
@click.pass_obj
@reports_errors
def register(
    api: NodeApi,
    title: str,
    ethics_ref: str,
    templates_file: Path,
    epsilon: float,
    delta: float,
    k_min: int | None,
    days: int,
) -> None:
    """Register a study (this node must be a research institute); prints its id."""
    try:
        templates = json.loads(templates_file.read_text(encoding="utf-8"))
    except ValueError:
        fail(f"{templates_file} is not JSON")
    body: dict[str, Any] = {
        "title": title,
        "ethics_ref": ethics_ref,
        "templates": templates,
        "epsilon_total_micro": _fixed(epsilon, _MICRO, "ε"),
        "delta_total_pico": _fixed(delta, _PICO, "δ"),
        "expires_ms": int(time.time() * 1000) + days * DAY_MS,
    }
    if k_min is not None:
        body["k_min"] = k_min
    answer = api.json("POST", "/v1/health/institution/studies", body)
    click.echo(answer["study_id"])


@research.command("studies")
@json_option("Print the studies as JSON.")
@click.pass_obj
@reports_errors
def studies(api: NodeApi, as_json: bool) -> None:
    """The studies on the ledger with their remaining budgets."""
    found = api.json("GET", "/v1/health/institution/studies")["studies"]
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    for study in found:
        remaining = study["epsilon_remaining_micro"] / _MICRO
        total = study["epsilon_total_micro"] / _MICRO
        click.echo(
            f"{study['study_id']}  {study['title']}  ε {remaining:g} of {total:g} left, "
            f"{study['member_count']} members, {study['query_count']} queries"
        )


@research.command("query")
@click.argument("study_id")
@click.option("--template", required=True, help="One of the study's templates.")
@click.option("--code", required=True, help="The code asked, one of the template's (e.g. sct:44054006).")
@click.option("--grouping", default="none", show_default=True, help="age_band, sex or year (histograms).")
@click.option("--low", type=float, default=0.0, help="Lowest value (ranged templates).")
@click.option("--high", type=float, default=0.0, help="Highest value (ranged templates).")
@click.option("--epsilon", type=float, required=True, help="ε each answer spends.")
@click.option("--delta", type=float, default=0.0, show_default=True, help="δ each answer spends (Gaussian).")
@click.option(
    "--institution",
    "institutions",
    multiple=True,
    help="An institution key (default: every clinic and hospital).",
)
@click.option(
    "--as-of", type=click.IntRange(0), default=None, help="The data version (default: the current block)."
)
@click.pass_obj
@reports_errors
def query(
    api: NodeApi,
    study_id: str,
    template: str,
    code: str,
    grouping: str,
    low: float,
    high: float,
    epsilon: float,
    delta: float,
    institutions: tuple[str, ...],
    as_of: int | None,
) -> None:
    """Submit a query (charged to the study's budget); prints its id."""
    body: dict[str, Any] = {
        "template": template,
        "code": code,
        "grouping": grouping,
        "value_low_milli": _fixed(low, _MILLI, "--low"),
        "value_high_milli": _fixed(high, _MILLI, "--high"),
        "epsilon_micro": _fixed(epsilon, _MICRO, "ε"),
        "delta_pico": _fixed(delta, _PICO, "δ"),
    }
    if institutions:
        body["institutions"] = list(institutions)
    if as_of is not None:
        body["as_of_height"] = as_of
    answer = api.json("POST", f"/v1/health/institution/studies/{study_id}/queries", body)
    click.echo(answer["query_id"])


@research.command("result")
@click.argument("query_id")
@click.option(
    "--wait",
    "wait_s",
    type=click.FloatRange(0),
    default=0.0,
    help="Wait up to this many seconds for every answer.",
)
@click.option(
    "--html",
    "html_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the histogram as an HTML page.",
)
@json_option("Print the combined result as JSON.")
@click.pass_obj
@reports_errors
def result(api: NodeApi, query_id: str, wait_s: float, html_file: Path | None, as_json: bool) -> None:
    """The institutions' answers combined, suppressed cells marked."""
    deadline = time.monotonic() + wait_s
    path = f"/v1/health/institution/queries/{query_id}"
    combined = api.json("GET", path)
    while combined["pending"] and time.monotonic() < deadline:
        time.sleep(RESULT_POLL_S)  # polling the node for a condition, with a deadline
        combined = api.json("GET", path)
    if html_file is not None:
        html_file.write_bytes(api.call("GET", f"{path}/histogram")[1])
    if as_json:
        click.echo(json.dumps(combined, indent=2))
    else:
        for line in format_result_lines(combined):
            click.echo(line)
