"""`medledger patient`: the patient's client: own keys, local decryption, locally signed decisions.

It is a light client over `medledger.health.sdk.PatientClient`: it pins the network's genesis
beside the key file and believes no node. This module parses options, asks for confirmation
before a grant, and prints; what a grant shares and how answers are verified live in `health/`.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from medledger.crypto import HASH_SIZE, Identity, KeyFileError, load_identity, save_identity
from medledger.errors import MedledgerError
from medledger.health.client import compute_grant_terms
from medledger.health.preview import GrantPreview, ScopeNotShowableError
from medledger.health.sdk import (
    LocalRecord,
    PatientClient,
    describe_audit,
    format_audit,
    get_genesis_pin_path,
    load_genesis_pin,
    save_genesis_pin,
)
from medledger.health.types import RECORD_TYPES, GrantTerms, InquiryState, compute_patient_id
from medledger.node.cli._common import (
    DAY_MS,
    DEFAULT_API_PORT,
    fail,
    json_option,
    overwrite_key_option,
    parse_date_ms,
    parse_hex32,
    passphrase_file_option,
    read_secret,
    reports_errors,
)

ENV_PATIENT_PASSPHRASE = "MEDLEDGER_PATIENT_PASSPHRASE"
ENV_NODE_URL = "MEDLEDGER_NODE_URL"


def _patient_passphrase(passphrase_file: Path | None, *, confirm: bool) -> bytes:
    """From --passphrase-file, else MEDLEDGER_PATIENT_PASSPHRASE, else a prompt on a terminal."""
    return read_secret(
        passphrase_file, env=ENV_PATIENT_PASSPHRASE, prompt="Patient key passphrase", confirm=confirm
    )


@click.group("patient")
@click.option(
    "--key",
    "key_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    # Not `required`: click would demand it before `patient grant --help` (issue 14, defect 8);
    # every command that uses the key asks for it (`_key_file`).
    help="The patient's key file (stays on this device); every command needs it.",
)
@click.option(
    "--url", default=None, help=f"Any node's API URL (default: ${ENV_NODE_URL}, else http://127.0.0.1:26657)."
)
@passphrase_file_option()
@click.option("--for-patient", default=None, help="Act as a representative for this patient id (hex).")
@click.option(
    "--genesis",
    "genesis_hash",
    default=None,
    help="The network's genesis hash (hex) to pin; default: the one recorded beside the key file.",
)
@click.option(
    "--witness",
    "witnesses",
    multiple=True,
    help="Another node's URL, asked whether the chain goes on beyond what --url serves (repeatable).",
)
@click.option(
    "--ca-file",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Trust this CA (or the node's self-signed tls_cert.pem) for an https:// node.",
)
@click.option(
    "--insecure-http", is_flag=True, help="Allow plain http:// to a node that is not on this machine."
)
@click.pass_context
def patient(
    ctx: click.Context,
    key_file: Path | None,
    url: str | None,
    passphrase_file: Path | None,
    for_patient: str | None,
    genesis_hash: str | None,
    witnesses: tuple[str, ...],
    ca_file: Path | None,
    insecure_http: bool,
) -> None:
    """The patient's client: own keys, local decryption, locally signed decisions.

    It is a light client: it believes no node. It pins the network's genesis (recorded beside the
    key file by `--genesis HASH keys` or on the first `register`), verifies every block's certificate
    from there, and refuses (naming the node) any answer it cannot verify.
    """
    pinned: bytes | None = None
    if genesis_hash is not None:
        try:
            pinned = bytes.fromhex(genesis_hash)
        except ValueError:
            pinned = b""
        if len(pinned) != HASH_SIZE:
            fail("--genesis must be a 64-hex-digit genesis hash")
    ctx.obj = {
        "key_file": key_file,
        "url": (url or os.environ.get(ENV_NODE_URL) or f"http://127.0.0.1:{DEFAULT_API_PORT}").rstrip("/"),
        "passphrase_file": passphrase_file,
        "for_patient": for_patient,
        "genesis": pinned,
        "witnesses": witnesses,
        "ca_file": ca_file,
        "insecure_http": insecure_http,
    }


def _key_file(obj: dict[str, Any]) -> Path:
    """The --key file, which every command needs (a missing one is a usage error, not a traceback)."""
    key_file: Path | None = obj["key_file"]
    if key_file is None:
        raise click.UsageError("Missing option '--key' (medledger patient --key FILE COMMAND).")
    return key_file


def _genesis_pin(ctx: click.Context, *, first_use: bool) -> bytes | None:
    """The pinned genesis: --genesis, else the file beside the key; both must agree."""
    obj = ctx.obj
    recorded = load_genesis_pin(_key_file(obj))
    given: bytes | None = obj["genesis"]
    if given is not None and recorded is not None and given != recorded:
        fail(
            f"--genesis differs from the genesis pinned in {get_genesis_pin_path(obj['key_file'])} "
            f"({recorded.hex()}): refusing to talk to another network"
        )
    pinned = given or recorded
    if pinned is None and not first_use:
        fail(
            "no pinned genesis for this key: run `medledger patient register` (it records the network's "
            "genesis on first use) or pass --genesis HASH"
        )
    return pinned


def _record_pin(ctx: click.Context, client: PatientClient) -> None:
    if client.genesis_hash is not None and load_genesis_pin(_key_file(ctx.obj)) is None:
        path = save_genesis_pin(_key_file(ctx.obj), client.genesis_hash, client.chain_id)
        click.echo(f"pinned genesis {client.genesis_hash.hex()} in {path}")


def _client(ctx: click.Context, *, first_use: bool = False) -> PatientClient:
    obj = ctx.obj
    genesis_hash = _genesis_pin(ctx, first_use=first_use)
    try:
        identity = load_identity(_key_file(obj), _patient_passphrase(obj["passphrase_file"], confirm=False))
    except KeyFileError as exc:
        fail(exc.message)
    patient_id = None
    if obj["for_patient"] is not None:
        try:
            patient_id = bytes.fromhex(obj["for_patient"])
        except ValueError:
            fail("--for-patient must be a hex patient id")
    try:
        return PatientClient(
            obj["url"],
            identity,
            patient_id=patient_id,
            genesis_hash=genesis_hash,
            witnesses=obj["witnesses"],
            ca_file=obj["ca_file"],
            insecure_http=obj["insecure_http"],
        )
    except MedledgerError as exc:
        fail(exc.message)


@patient.command("keys")
@overwrite_key_option
@click.pass_context
def patient_keys(ctx: click.Context, force: bool) -> None:
    """Create the patient's key file (passphrase-protected, mode 0600) and show the patient id."""
    obj = ctx.obj
    identity = Identity.generate()
    try:
        passphrase = _patient_passphrase(obj["passphrase_file"], confirm=True)
        save_identity(_key_file(obj), identity, passphrase, overwrite=force)
    except KeyFileError as exc:
        fail(exc.message)
    click.echo(f"key file:    {obj['key_file']}")
    click.echo(f"patient id:  {compute_patient_id(identity.public.sign_key).hex()}")
    click.echo(f"sign key:    {identity.public.sign_key.hex()}")
    if obj["genesis"] is not None:
        try:
            path = save_genesis_pin(_key_file(obj), obj["genesis"])
        except MedledgerError as exc:
            fail(exc.message)
        click.echo(f"genesis:     {obj['genesis'].hex()} (pinned in {path})")


@patient.command("register")
@click.pass_context
@reports_errors
def patient_register(ctx: click.Context) -> None:
    """Register the patient on the ledger (a self-signed transaction)."""
    client = _client(ctx, first_use=True)
    client.load_genesis()  # the chain's blocks are for registered patients: genesis is public
    _record_pin(ctx, client)
    done = client.register()
    click.echo(f"registered patient {client.patient_id.hex()} at height {done.height}")


@patient.command("records")
@json_option()
@click.pass_context
@reports_errors
def patient_records(ctx: click.Context, as_json: bool) -> None:
    """List the patient's records (decrypted on this device)."""
    records = _client(ctx).read_records()
    if as_json:
        click.echo(json.dumps([_local_record_json(r) for r in records], indent=2))
        return
    click.echo(f"{'record':<16} {'type':<20} {'author':<14} {'height':>6}  status")
    for item in records:
        r = item.record
        state = "decrypted" if item.decrypted is not None else f"unreadable: {item.error}"
        author = item.author_name or r.author.hex()[:12]
        click.echo(f"{r.record_id.hex()[:16]} {r.record_type:<20} {author:<14} {r.height:>6}  {state}")


def _local_record_json(item: LocalRecord) -> dict[str, Any]:
    r = item.record
    return {
        "record_id": r.record_id.hex(),
        "record_type": r.record_type,
        "author": r.author.hex(),
        "author_name": item.author_name,
        "height": r.height,
        "time_ms": r.time_ms,
        "resource": item.decrypted.resource if item.decrypted is not None else None,
        "error": item.error,
    }


@patient.command("show")
@click.argument("record_id")
@click.pass_context
@reports_errors
def patient_show(ctx: click.Context, record_id: str) -> None:
    """Show one record (id or unique id prefix), decrypted on this device."""
    records = _client(ctx).read_records()
    matches = [r for r in records if r.record.record_id.hex().startswith(record_id.lower())]
    if not record_id or len(matches) != 1:
        fail(f"{'no' if not matches else 'more than one'} record id starts with {record_id!r}")
    click.echo(json.dumps(_local_record_json(matches[0]), indent=2))


@patient.command("inquiries")
@click.option("--all", "show_all", is_flag=True, help="Also decided inquiries.")
@json_option()
@click.pass_context
@reports_errors
def patient_inquiries(ctx: click.Context, show_all: bool, as_json: bool) -> None:
    """List inquiries; each open one with what granting it would share (the whole scope, in words)."""
    client = _client(ctx)
    names = client.institution_names()
    inquiries = client.list_inquiries() if show_all else client.list_pending_inquiries()
    rows: list[dict[str, Any]] = []
    texts: list[list[str]] = []
    for i in inquiries:
        row: dict[str, Any] = {
            "inquiry_id": i.inquiry_id.hex(),
            "requester": names.get(i.requester, i.requester.hex()),
            "purpose": i.purpose,
            "reason": client.inquiry_reason(i),  # sealed on the ledger, opened on this device
            "status": i.status,
            "expires_ms": i.expires_ms,
            "height": i.height,
            "preview": None,
            "refused": None,
        }
        text: list[str] = []
        if i.status == "open":
            try:
                preview = client.preview_grant(i.inquiry_id)
            except ScopeNotShowableError as exc:
                row["refused"] = {"problem": exc.problem, "detail": exc.message}
                text = [f"cannot be granted: {exc.message}"]
            else:
                row["preview"] = preview.to_json()
                text = preview.lines()
        rows.append(row)
        texts.append(text)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row, text in zip(rows, texts, strict=True):
        click.echo(f"inquiry {row['inquiry_id']}  [{row['status']}]  from {row['requester']}")
        for line in text:
            click.echo(f"    {line}")


@patient.command("grants")
@json_option()
@click.pass_context
@reports_errors
def patient_grants(ctx: click.Context, as_json: bool) -> None:
    """List the grants the patient gave (live or revoked)."""
    client = _client(ctx)
    names = client.institution_names()
    rows: list[dict[str, Any]] = [
        {
            "grant_id": g.grant_id.hex(),
            "grantee": names.get(g.grantee, g.grantee.hex()),
            "purpose": g.purpose,
            "records": client.get_grant_progress(g.grant_id)[1],
            "keys_received": client.get_grant_progress(g.grant_id)[0],
            "revoked": g.is_revoked,
            "height": g.height,
        }
        for g in client.list_grants()
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "revoked" if row["revoked"] else "live"
        click.echo(
            f"{row['grant_id'][:16]}  {state:<8} {row['grantee']:<14} {row['purpose']:<8} "
            f"{row['records']} record key(s)"
            + ("" if row["keys_received"] == row["records"] else f" ({row['keys_received']} delivered)")
        )


def _is_terminal() -> bool:
    """Whether a person can be asked (stdin is a terminal)."""
    return sys.stdin.isatty()


def _confirm_grant(preview: GrantPreview, yes: bool) -> None:
    """Show the preview; ask on a terminal unless --yes; with neither, refuse."""
    for line in preview.lines():
        click.echo(line)
    if yes:
        return
    if not _is_terminal():
        fail("not granting: nobody confirmed (run on a terminal to be asked, or pass --yes)")
    if not click.confirm("Grant exactly this?", default=False):
        fail("not granted")


@dataclasses.dataclass(frozen=True)
class Narrowing:
    """What the patient narrows an inquiry to on the command line (each None: as asked)."""

    types: tuple[str, ...] = ()
    from_date: str | None = None
    to_date: str | None = None
    expires_date: str | None = None

    def terms(self, inquiry: InquiryState) -> GrantTerms | None:
        return compute_grant_terms(
            inquiry.scope,
            inquiry.expires_ms,
            record_types=self.types or None,
            from_ms=None if self.from_date is None else parse_date_ms(self.from_date, 0, "--from"),
            # The whole of the last day: records written on it are inside the window.
            to_ms=None if self.to_date is None else parse_date_ms(self.to_date, 0, "--to") + DAY_MS - 1,
            expires_ms=None
            if self.expires_date is None
            else parse_date_ms(self.expires_date, 0, "--expires"),
        )


def _decide(
    ctx: click.Context, inquiry_id: str, *, grant: bool, yes: bool = False, narrowing: Narrowing | None = None
) -> None:
    client = _client(ctx)
    inquiry = client.find_inquiry(inquiry_id)
    if grant:
        terms = None if narrowing is None else narrowing.terms(inquiry)
        preview = client.preview_grant(inquiry.inquiry_id, terms)
        _confirm_grant(preview, yes)
        done = client.grant(inquiry.inquiry_id, preview=preview)
    else:
        done = client.deny(inquiry.inquiry_id)
    verb = "granted" if grant else "denied"
    click.echo(f"{verb} inquiry {inquiry.inquiry_id.hex()} at height {done.height} (tx {done.tx_id.hex()})")
    if grant:
        delivered, declared = client.get_grant_progress(done.tx_id)
        click.echo(f"shared {delivered} of {declared} record(s) now, as the preview showed")


@patient.command("grant")
@click.argument("inquiry_id")
@click.option(
    "--type",
    "types",
    multiple=True,
    type=click.Choice(sorted(RECORD_TYPES)),
    metavar="TYPE",
    help="Share only records of this FHIR type (repeat; among those asked for). Default: as asked.",
)
@click.option(
    "--from", "from_date", default=None, help="Share only records from this date (YYYY-MM-DD, UTC)."
)
@click.option("--to", "to_date", default=None, help="Share only records up to this date (YYYY-MM-DD, UTC).")
@click.option(
    "--expires",
    "expires_date",
    default=None,
    help="End the grant on this date (YYYY-MM-DD, UTC), earlier than asked.",
)
@click.option(
    "--yes", is_flag=True, help="Do not ask for confirmation (scripts); the preview is still shown."
)
@click.pass_context
@reports_errors
def patient_grant(
    ctx: click.Context,
    inquiry_id: str,
    types: tuple[str, ...],
    from_date: str | None,
    to_date: str | None,
    expires_date: str | None,
    yes: bool,
) -> None:
    """Grant an inquiry (id or unique prefix): shows exactly what is shared, asks, then signs that.

    --type, --from, --to and --expires narrow it: the grant is then on those terms, for the
    records shared now and for every record it would open later (the inquiry's own terms are the
    most it can be)."""
    _decide(
        ctx, inquiry_id, grant=True, yes=yes, narrowing=Narrowing(types, from_date, to_date, expires_date)
    )


@patient.command("resume-grant")
@click.argument("grant_id")
@click.pass_context
@reports_errors
def patient_resume_grant(ctx: click.Context, grant_id: str) -> None:
    """Send the parts of a large grant or of a consent's re-sealing (id or unique prefix) that did
    not reach the ledger."""
    client = _client(ctx)
    grant = client.find_grant(grant_id)
    sent = client.complete_grant(grant.grant_id)
    delivered, declared = client.get_grant_progress(grant.grant_id)
    click.echo(f"sent {len(sent)} part(s); {delivered} of {declared} record(s) shared")


@patient.command("deny")
@click.argument("inquiry_id")
@click.pass_context
@reports_errors
def patient_deny(ctx: click.Context, inquiry_id: str) -> None:
    """Deny an inquiry (id or unique prefix)."""
    _decide(ctx, inquiry_id, grant=False)


@patient.command("revoke")
@click.argument("grant_id")
@click.pass_context
@reports_errors
def patient_revoke(ctx: click.Context, grant_id: str) -> None:
    """Revoke a grant (id or unique prefix): no future sharing, no reads under it."""
    client = _client(ctx)
    grant = client.find_grant(grant_id)
    done = client.revoke(grant.grant_id)
    click.echo(f"revoked grant {grant.grant_id.hex()} at height {done.height}")


@patient.command("add-representative")
@click.argument("sign_key")
@click.pass_context
@reports_errors
def patient_add_representative(ctx: click.Context, sign_key: str) -> None:
    """Name a representative (their signing key, hex) who may grant, deny and revoke."""
    try:
        key = bytes.fromhex(sign_key)
    except ValueError:
        fail("the representative's signing key must be hex")
    done = _client(ctx).add_representative(key)
    click.echo(f"added representative {sign_key} at height {done.height}")


@patient.command("audit")
@json_option()
@click.pass_context
@reports_errors
def patient_audit(ctx: click.Context, as_json: bool) -> None:
    """The full audit trail: inquiries, decisions, every read (who, when, purpose, block height)."""
    entries = describe_audit(_client(ctx))
    if as_json:
        click.echo(json.dumps(entries, indent=2))
        return
    for line in format_audit(entries):
        click.echo(line)


@patient.command("verify")
@click.pass_context
@reports_errors
def patient_verify(ctx: click.Context) -> None:
    """Verify the whole audit trail against the chain, from the pinned genesis; print what was checked."""
    done = _client(ctx).verify()
    when = datetime.datetime.fromtimestamp(done.time_ms / 1000, tz=datetime.UTC)
    click.echo(f"node:            {done.node_url} (nothing it said was believed without proof)")
    click.echo(f"chain:           {done.chain_id}, genesis {done.genesis_hash.hex()} (pinned)")
    click.echo(
        f"blocks:          {done.blocks} verified (heights 1..{done.height}, latest "
        f"{when:%Y-%m-%d %H:%M:%S} UTC), {done.txs} txs checked against their tx roots"
    )
    click.echo(f"validators:      {done.validators} now, {done.validator_set_changes} set change(s) followed")
    click.echo(f"your txs:        {done.patient_txs} re-executed by the ledger's rules")
    click.echo(
        f"your facts:      {done.records} record(s), {done.inquiries} inquiry(ies), "
        f"{done.grants} grant(s), {done.audit_events} audit event(s): each identical to the node's answer"
    )
    click.echo(f"inclusion proofs: {done.inclusion_proofs} audited tx(s) proven in their blocks")
    if done.witnesses:
        click.echo(f"witnesses:       {done.witnesses} other node(s) know no later block")
    else:
        click.echo("witnesses:       none (--witness URL: a node withholding new blocks would be caught)")
    click.echo("verified")


@patient.command("attachment")
@click.argument("record_id")
@click.argument("blob_id")
@click.option(
    "--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="File to write."
)
@click.pass_context
@reports_errors
def patient_attachment(ctx: click.Context, record_id: str, blob_id: str, out: Path) -> None:
    """Save an attachment of one of your records (full ids), verified and decrypted on this device."""
    try:
        record, blob = bytes.fromhex(record_id), bytes.fromhex(blob_id)
    except ValueError:
        fail("record and blob ids are hex")
    data = _client(ctx).read_attachment(record, blob)
    out.write_bytes(data)
    click.echo(f"wrote {len(data)} bytes to {out}")


# --- research (issue 13, ADR 0019) --------------------------------------------------------------


@patient.command("studies")
@json_option("Print the studies as JSON.")
@click.pass_context
@reports_errors
def patient_studies(ctx: click.Context, as_json: bool) -> None:
    """The studies on the ledger, whether you are in them, and the queries asked while you were
    (verified from the chain)."""
    client = _client(ctx)
    rows: list[dict[str, Any]] = []
    covering = client.list_queries_covering()
    for study, membership in client.list_studies():
        member = membership is not None and membership.is_member
        rows.append(
            {
                "study_id": study.study_id.hex(),
                "title": study.title,
                "ethics_ref": study.ethics_ref,
                "institute": client.institution_names().get(study.institute),
                "member": member,
                "joined_height": membership.joined_height if membership is not None else None,
                "left_height": (membership.left_height or None) if membership is not None else None,
                "queries_while_member": [q.query_id.hex() for q in covering if q.study_id == study.study_id],
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "member" if row["member"] else "left" if row["left_height"] else "not joined"
        asked = len(row["queries_while_member"])
        state += f", {asked} quer{'y' if asked == 1 else 'ies'} while you were a member" if asked else ""
        click.echo(
            f"{row['study_id'][:16]}  {row['title']} ({row['ethics_ref']}, {row['institute']}): {state}"
        )


@patient.command("join-study")
@click.argument("study_id")
@click.pass_context
@reports_errors
def patient_join_study(ctx: click.Context, study_id: str) -> None:
    """Opt in to a study (id): its answers may count you from this block on.

    The network sees that you joined (not what your records hold)."""
    client = _client(ctx)
    done = client.join_study(_study_id(study_id))
    click.echo(f"joined study {study_id} at height {done.height}")


@patient.command("leave-study")
@click.argument("study_id")
@click.pass_context
@reports_errors
def patient_leave_study(ctx: click.Context, study_id: str) -> None:
    """Withdraw from a study (id): no answer computed from this block on counts you."""
    client = _client(ctx)
    done = client.leave_study(_study_id(study_id))
    click.echo(f"left study {study_id} at height {done.height}")


def _study_id(value: str) -> bytes:
    return parse_hex32(value, "a study id is 64 hex characters")
