"""`medledger patient consent grant|revoke|list` and `medledger patient claims` (issue 12).

A standing consent for payment lets an insurer's node receive, sealed by the authoring node, every
new record it covers; it is shown in full (insurer, purpose, record types, authors, window, expiry,
and the sensitive labels it names, or that it names none) and confirmed before it is signed.
`patient claims` lists the patient's claims, each decision with its reason, and exactly which
records each insurer read for which claim (`--json`: with the Claim and each ClaimResponse as
submitted, their exact text). Commands of the `patient` group, registered when this
module is imported; everything is signed on this device and checked against the chain.
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any

import click

from medledger.health.claims_types import SECURITY_LABELS
from medledger.health.json_text import JsonText, compute_spliced_json
from medledger.health.sdk import ClaimView, PatientClient
from medledger.health.types import PURPOSE_HPAYMT, RECORD_TYPES
from medledger.node.cli._common import DAY_MS, fail, json_option, parse_date_ms, reports_errors
from medledger.node.cli.patient import _client, patient
from medledger.node.cli.patient_rights import _resolve_institution, _when

#: Longest a consent the CLI signs may stay live, in days (the rules allow 366).
CONSENT_DAYS_MAX = 365


def compute_consent_lines(
    insurer: str,
    types: list[str],
    authors: list[str],
    labels: list[str],
    from_ms: int,
    to_ms: int,
    expires_ms: int,
    existing: int | None = 0,
) -> list[str]:
    """The whole scope of a standing consent, in words, as the patient confirms it; `existing`: how
    many records already on the ledger it re-seals for the insurer (None: none, on request)."""
    sensitive = (
        f"also records labelled {', '.join(labels)}"
        if labels
        else "no record labelled sensitive (HIV, mental health, substance use, ...)"
    )
    return [
        f"Standing consent for payment ({PURPOSE_HPAYMT}) to {insurer}:",
        f"  every NEW record of type {', '.join(types)}",
        f"  written by {', '.join(authors)}",
        f"  between {_when(from_ms)} and {_when(to_ms)}",
        f"  covers {sensitive}",
        f"  until {_when(expires_ms)}, or until you revoke it",
        "  is sealed for the insurer by the writing institution, without asking you again.",
        "  Records already on the ledger: "
        + (
            "none are shared (--new-only)."
            if existing is None
            else f"{existing} of this scope are shared too (their keys re-sealed for the insurer now)."
        ),
    ]


@patient.group("consent")
def consent() -> None:
    """Standing consents for payment to insurers (grant, revoke, list)."""


@consent.command("grant")
@click.argument("insurer")
@click.option("--type", "types", multiple=True, required=True, type=click.Choice(sorted(RECORD_TYPES)))
@click.option(
    "--author", "authors", multiple=True, required=True, help="Authoring institution (name or key prefix)."
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    type=click.Choice(sorted(SECURITY_LABELS)),
    help="A sensitive label to include.",
)
@click.option(
    "--from",
    "from_date",
    default=None,
    help="Records from this date on (YYYY-MM-DD, UTC; default: from the first, those already on the ledger "
    "shared too unless --new-only).",
)
@click.option(
    "--to", "to_date", default=None, help="Records up to this date (YYYY-MM-DD, UTC; default: expiry)."
)
@click.option("--days", default=365, type=click.IntRange(1, CONSENT_DAYS_MAX), help="Days until it expires.")
@click.option(
    "--new-only", is_flag=True, help="Share only records written from now on, none already on the ledger."
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation (scripts); the scope is still shown.")
@click.pass_context
@reports_errors
def consent_grant(
    ctx: click.Context,
    insurer: str,
    types: tuple[str, ...],
    authors: tuple[str, ...],
    labels: tuple[str, ...],
    from_date: str | None,
    to_date: str | None,
    days: int,
    new_only: bool,
    yes: bool,
) -> None:
    """Give INSURER (name or key prefix) a standing consent for payment."""
    client = _client(ctx)
    names = client.institution_names()
    insurer_key = _resolve_institution(client, insurer)
    author_keys = [_resolve_institution(client, a) for a in authors]
    now_ms = int(datetime.datetime.now(tz=datetime.UTC).timestamp() * 1000)
    expires_ms = now_ms + days * DAY_MS
    from_ms = parse_date_ms(from_date, 0, "--from")
    to_ms = parse_date_ms(to_date, expires_ms, "--to")
    if from_ms > to_ms:
        fail("--from must not be after --to")
    existing = (
        []
        if new_only
        else client.preview_consent_records(
            insurer_key,
            record_types=types,
            authors=author_keys,
            labels=labels,
            from_ms=from_ms,
            to_ms=to_ms,
        )
    )
    lines = compute_consent_lines(
        names[insurer_key],
        sorted(set(types)),
        sorted(names[k] for k in set(author_keys)),
        sorted(set(labels)),
        from_ms,
        to_ms,
        expires_ms,
        None if new_only else len(existing),
    )
    for line in lines:
        click.echo(line)
    if not yes:
        if not sys.stdin.isatty():
            fail("not granting: nobody confirmed (run on a terminal to be asked, or pass --yes)")
        if not click.confirm("Grant exactly this?", default=False):
            fail("not granted")
    done = client.grant_consent(
        insurer_key,
        record_types=types,
        authors=author_keys,
        labels=labels,
        from_ms=from_ms,
        to_ms=to_ms,
        expires_ms=expires_ms,
        existing=[r.record_id for r in existing],
        reseal_existing=not new_only,
    )
    click.echo(f"granted consent {done.tx_id.hex()} at height {done.height}")
    if existing:
        click.echo(f"re-sealed {len(existing)} record(s) already on the ledger for {names[insurer_key]}")


@consent.command("revoke")
@click.argument("consent_id")
@click.pass_context
@reports_errors
def consent_revoke(ctx: click.Context, consent_id: str) -> None:
    """Revoke a standing consent (id or unique prefix): nothing new is sealed for the insurer."""
    client = _client(ctx)
    grant = client.find_grant(consent_id)
    if client.sync().get_consent_terms(grant.grant_id) is None:
        fail("this grant answers an inquiry, not a standing consent; use `patient revoke`")
    done = client.revoke(grant.grant_id)
    click.echo(f"revoked consent {grant.grant_id.hex()} at height {done.height}")


@consent.command("list")
@json_option()
@click.pass_context
@reports_errors
def consent_list(ctx: click.Context, as_json: bool) -> None:
    """The patient's standing consents, live or not."""
    client = _client(ctx)
    names = client.institution_names()
    ledger = client.sync()
    rows: list[dict[str, Any]] = []
    for grant in client.list_grants():
        terms = ledger.get_consent_terms(grant.grant_id)
        if terms is None:
            continue
        rows.append(
            {
                "consent_id": grant.grant_id.hex(),
                "insurer": names.get(grant.grantee, grant.grantee.hex()),
                "record_types": list(grant.scope.record_types),
                "authors": [names.get(a, a.hex()) for a in terms.authors],
                "labels": list(terms.labels),
                "from_ms": grant.scope.from_ms,
                "to_ms": grant.scope.to_ms,
                "expires_ms": grant.expires_ms,
                "revoked": grant.is_revoked,
            }
        )
    if as_json:
        click.echo(json.dumps(rows))
        return
    for row in rows:
        state = "revoked" if row["revoked"] else f"until {_when(row['expires_ms'])}"
        labels = ", ".join(row["labels"]) or "none"
        click.echo(
            f"{row['consent_id'][:16]}  {row['insurer']}  {', '.join(row['record_types'])} by "
            f"{', '.join(row['authors'])}  labels: {labels}  {state}"
        )


def compute_decision_reason(response: dict[str, Any] | None) -> str:
    """A decision's reason in words, from its ClaimResponse (what is missing, the error codes)."""
    if response is None:
        return "(does not open for this key)"
    notes = [n.get("text", "") for n in response.get("processNote") or [] if isinstance(n, dict)]
    codes = [
        c.get("code", "")
        for e in response.get("error") or []
        if isinstance(e, dict)
        for c in (e.get("code") or {}).get("coding") or []
        if isinstance(c, dict)
    ]
    parts = [*(f"reason code {c}" for c in codes if c), *(n for n in notes if n)]
    if response.get("disposition"):
        parts.append(str(response["disposition"]))
    return "; ".join(parts) or "-"


def _submitted(text: bytes) -> JsonText | None:
    """A Claim or ClaimResponse as submitted, for `--json` to splice unchanged (None: unreadable)."""
    return JsonText(text.decode("utf-8")) if text else None


def _claim_row(names: dict[bytes, str], view: ClaimView) -> dict[str, Any]:
    claim = view.claim
    responses = view.response_texts or (b"",) * len(view.decisions)
    return {
        "claim_id": claim.claim_id.hex(),
        "clinic": names.get(claim.clinic, claim.clinic.hex()),
        "insurer": names.get(claim.insurer, claim.insurer.hex()),
        "encounter_id": claim.encounter_id.hex(),
        "version": claim.version,
        "status": claim.status,
        "record_ids": [r.hex() for r in claim.record_ids],
        "claim": _submitted(view.claim_text),
        "decisions": [
            {
                "version": d.version,
                "outcome": d.outcome,
                "reason": compute_decision_reason(response),
                "height": d.height,
                "time_ms": d.time_ms,
                "response": _submitted(text),
            }
            for (d, response), text in zip(view.decisions, responses, strict=True)
        ],
        "reads": [
            {
                "reader": names.get(e.actor, e.actor.hex()),
                "record_ids": [r.hex() for r in e.record_ids],
                "height": e.height,
                "time_ms": e.time_ms,
            }
            for e in view.reads
        ],
    }


@patient.command("claims")
@json_option()
@click.pass_context
@reports_errors
def patient_claims(ctx: click.Context, as_json: bool) -> None:
    """The patient's claims: each decision with its reason, and which records each insurer read."""
    client: PatientClient = _client(ctx)
    names = client.institution_names()
    rows = [_claim_row(names, view) for view in client.claim_views()]
    if as_json:
        # The Claim and each ClaimResponse as submitted (ADR 0011): spliced, not re-serialised.
        click.echo(compute_spliced_json(rows))
        return
    for row in rows:
        click.echo(
            f"claim {row['claim_id'][:16]}  {row['clinic']} -> {row['insurer']}  version {row['version']}  "
            f"{row['status']}  ({len(row['record_ids'])} record(s) cited)"
        )
        for d in row["decisions"]:
            click.echo(f"  v{d['version']} {d['outcome']} at {_when(d['time_ms'])}: {d['reason']}")
        for r in row["reads"]:
            ids = ", ".join(i[:16] for i in r["record_ids"])
            click.echo(f"  read by {r['reader']} at {_when(r['time_ms'])}: {ids}")
