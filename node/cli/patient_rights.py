"""`medledger patient request-records | requests | amend | amendments | disagree`: the patient's rights.

The right of access (ask any institution for the records it holds; a 30-day clock from the block
time, shown with each request, overdue ones marked) and the right to amend (ask a record's author
to correct it; after a refusal, attach a statement of disagreement that travels with the record).
Commands of the `patient` group (`node/cli/patient.py`), registered when this module is imported;
everything is signed on this device and checked against the chain by `health.sdk.PatientClient`.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import click

from medledger.chain.limits import UINT_MAX
from medledger.health.rights_types import AmendmentState, RecordsRequestState
from medledger.health.sdk import PatientClient
from medledger.node.cli._common import DAY_MS, fail, json_option, parse_date_ms, reports_errors
from medledger.node.cli.patient import _client, patient


def _when(time_ms: int) -> str:
    if time_ms >= UINT_MAX or time_ms > 253402300799000:  # beyond year 9999: "no end"
        return "-"
    return datetime.datetime.fromtimestamp(time_ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M")


def _resolve_institution(client: PatientClient, name_or_key: str) -> bytes:
    names = client.institution_names()
    wanted = name_or_key.lower()
    matches = [k for k, n in names.items() if n.lower() == wanted or k.hex().startswith(wanted)]
    if not wanted or len(matches) != 1:
        known = ", ".join(sorted(names.values()))
        fail(
            f"{'no' if not matches else 'more than one'} institution matches {name_or_key!r} (known: {known})"
        )
    return matches[0]


def _request_row(client: PatientClient, names: dict[bytes, str], r: RecordsRequestState) -> dict[str, Any]:
    return {
        "request_id": r.request_id.hex(),
        "institution": names.get(r.institution, r.institution.hex()),
        "status": client.records_request_status(r),
        "deadline_ms": r.deadline_ms,
        "deadline": _when(r.deadline_ms),
        "record_types": list(r.record_types),
        "from_ms": r.from_ms,
        "to_ms": r.to_ms,
        "height": r.height,
        "time_ms": r.time_ms,
        "closed_height": r.closed_height,
        "closed_late": r.status == "closed" and r.closed_time_ms > r.deadline_ms,
        "record_ids": [i.hex() for i in r.record_ids],
    }


@patient.command("request-records")
@click.argument("institution")
@click.option("--type", "record_types", multiple=True, help="A FHIR resource type to ask for (repeatable).")
@click.option("--from", "from_date", default=None, help="Records from this date on (YYYY-MM-DD, UTC).")
@click.option("--to", "to_date", default=None, help="Records up to this date (YYYY-MM-DD, UTC).")
@click.pass_context
@reports_errors
def patient_request_records(
    ctx: click.Context,
    institution: str,
    record_types: tuple[str, ...],
    from_date: str | None,
    to_date: str | None,
) -> None:
    """Ask INSTITUTION (name or signing key) for the records it holds: it has 30 days to answer."""
    client = _client(ctx)
    key = _resolve_institution(client, institution)
    from_ms = parse_date_ms(from_date, 0, "--from")
    to_ms = parse_date_ms(to_date, UINT_MAX - DAY_MS, "--to") + DAY_MS - 1  # the whole last day
    if from_ms > to_ms:
        fail("--from must not be after --to")
    done = client.request_records(key, record_types=record_types, from_ms=from_ms, to_ms=to_ms)
    request = next(r for r in client.list_records_requests() if r.request_id == done.tx_id)
    click.echo(
        f"requested records {done.tx_id.hex()} from {client.institution_names()[key]} at height "
        f"{done.height}; the answer is due by {_when(request.deadline_ms)} UTC"
    )


@patient.command("requests")
@json_option()
@click.pass_context
@reports_errors
def patient_requests(ctx: click.Context, as_json: bool) -> None:
    """List the patient's records requests: open, closed or overdue (by the chain's time)."""
    client = _client(ctx)
    names = client.institution_names()
    rows = [_request_row(client, names, r) for r in client.list_records_requests()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        late = " (late)" if row["closed_late"] else ""
        records = f", {len(row['record_ids'])} record(s) provided" if row["status"] == "closed" else ""
        click.echo(
            f"{row['request_id'][:16]}  {row['status']:<8}{late} {row['institution']:<14} "
            f"due {row['deadline']}{records}"
        )


def _amendment_row(client: PatientClient, names: dict[bytes, str], a: AmendmentState) -> dict[str, Any]:
    texts = client.amendment_texts(a)
    return {
        "amendment_id": a.amendment_id.hex(),
        "record_id": a.record_id.hex(),
        "author": names.get(a.author, a.author.hex()),
        "status": a.status,
        "text": texts.text,
        "refusal_reason": texts.refusal_reason,
        "statement": texts.statement,
        "correction_id": a.answer_id.hex() if a.status == "accepted" else "",
        "height": a.height,
        "answer_height": a.answer_height,
    }


@patient.command("amend")
@click.argument("record_id")
@click.option("--text", required=True, help="What is wrong (sealed for you and the record's author).")
@click.pass_context
@reports_errors
def patient_amend(ctx: click.Context, record_id: str, text: str) -> None:
    """Ask the author of a record (id or unique prefix) to correct it."""
    client = _client(ctx)
    records = [r for r in client.list_records() if r.record_id.hex().startswith(record_id.lower())]
    if not record_id or len(records) != 1:
        fail(f"{'no' if not records else 'more than one'} record id starts with {record_id!r}")
    done = client.request_amendment(records[0].record_id, text)
    click.echo(
        f"asked for an amendment {done.tx_id.hex()} of record {records[0].record_id.hex()} "
        f"at height {done.height}"
    )


@patient.command("amendments")
@json_option()
@click.pass_context
@reports_errors
def patient_amendments(ctx: click.Context, as_json: bool) -> None:
    """List amendment requests with the author's answer (texts opened on this device)."""
    client = _client(ctx)
    names = client.institution_names()
    rows = [_amendment_row(client, names, a) for a in client.list_amendments()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(
            f"{row['amendment_id'][:16]}  {row['status']:<9} {row['author']:<14} "
            f"record {row['record_id'][:16]}"
        )
        for label, key in (("asked", "text"), ("refused", "refusal_reason"), ("disagreed", "statement")):
            if row[key] is not None:
                click.echo(f"    {label}: {row[key]}")


@patient.command("disagree")
@click.argument("amendment_id")
@click.option(
    "--text", required=True, help="The statement of disagreement (every reader of the record sees it)."
)
@click.pass_context
@reports_errors
def patient_disagree(ctx: click.Context, amendment_id: str, text: str) -> None:
    """Attach a statement of disagreement to a refused amendment request (id or unique prefix)."""
    client = _client(ctx)
    amendment = client.find_amendment(amendment_id)
    done = client.disagree(amendment.amendment_id, text)
    click.echo(
        f"attached a statement of disagreement to record {amendment.record_id.hex()} at height {done.height}"
    )
