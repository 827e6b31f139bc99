"""Issue 9 defect 1: the patient sees the whole scope of a grant, and the grant signs only that.

Real node processes (a clinic that writes, an insurer that asks) and the real patient CLI and SDK.
An insurer asking for "Immunization" plus the id of a Condition record used to be shown only
"Immunization" and then get the Condition: now the preview names the Condition (its type, author
and date) and the exact list of records, and the grant carries exactly that list.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from health_harness import PATIENT_ENV, HealthNet, make_patient_key, patient_cli

from medledger.crypto import Identity
from medledger.health.preview import PROBLEM_UNKNOWN_RECORD, PreviewChangedError, ScopeNotShowableError
from medledger.health.sdk import PatientClient, load_genesis_pin
from medledger.health.types import compute_patient_id
from medledger.node.cli import main
from medledger.node.cli import patient as patient_commands
from medledger.node.demo import make_synthetic_records


def run_patient(key: Path, url: str, *args: str, stdin: str | None = None) -> Result:
    """`medledger patient …` that may fail (returns click's result)."""
    return CliRunner().invoke(
        main, ["patient", "--key", str(key), "--url", url, *args], env=dict(PATIENT_ENV), input=stdin
    )


class Patient:
    """A patient with three records by the clinic: an Observation, a Condition, an Immunization."""

    def __init__(self, net: HealthNet, tmp_path: Path, seed: int) -> None:
        self.net = net
        self.key = tmp_path / f"patient-{seed}.key"
        self.identity: Identity = make_patient_key(self.key)
        self.id = compute_patient_id(self.identity.public.sign_key).hex()
        assert self.id in patient_cli(self.key, net["clinic"].url, "register")
        net.sync()
        self.observation, self.condition, self.immunization = (
            net["clinic"].add_record(self.id, resource) for resource in make_synthetic_records(seed)
        )
        net.sync()

    def sdk(self, url: str | None = None) -> PatientClient:
        return PatientClient(
            url or self.net["insurer"].url, self.identity, genesis_hash=load_genesis_pin(self.key)
        )

    def inquire(self, record_types: list[str], record_ids: list[str]) -> str:
        body: dict[str, Any] = {
            "patient_id": self.id,
            "purpose": "HPAYMT",
            "reason": "claim 42",
            "record_types": record_types,
            "record_ids": record_ids,
        }
        reply = self.net["insurer"].post("/v1/health/institution/inquiries", body)
        assert reply.status == 201, reply
        self.net.sync()
        return str(reply.json()["inquiry_id"])

    def granted_events(self) -> list[Any]:
        return [e for e in self.sdk().audit() if e.event == "grant"]


def test_trust_1_preview_shows_named_records_and_the_grant_carries_exactly_them(
    shared_net: HealthNet, tmp_path: Path
) -> None:
    patient = Patient(shared_net, tmp_path, 1)
    inquiry = patient.inquire(["Immunization"], [patient.condition])
    rows = json.loads(patient_cli(patient.key, shared_net["clinic"].url, "inquiries", "--json"))
    (row,) = [r for r in rows if r["inquiry_id"] == inquiry]
    preview = row["preview"]
    named = preview["scope"]["record_ids"]
    assert [(n["record_id"], n["record_type"], n["author_name"]) for n in named] == [
        (patient.condition, "Condition", "clinic")
    ]
    assert named[0]["date"].endswith("UTC")
    assert [t["record_type"] for t in preview["scope"]["record_types"]] == ["Immunization"]
    shared = sorted([patient.condition, patient.immunization])
    assert [r["record_id"] for r in preview["records"]] == shared  # not the Observation
    assert (preview["purpose"], preview["reason"], preview["requester_name"]) == (
        "HPAYMT",
        "claim 42",
        "insurer",
    )
    text = patient_cli(patient.key, shared_net["clinic"].url, "inquiries")
    assert "conditions and diagnoses (Condition) written by clinic" in text
    assert "exactly these 2 record(s)" in text

    out = patient_cli(patient.key, shared_net["insurer"].url, "grant", inquiry, "--yes")
    assert "granted" in out
    assert "conditions and diagnoses (Condition)" in out  # the preview is shown even with --yes
    shared_net.sync()
    (grant,) = [g for g in patient.sdk().list_grants() if g.inquiry_id.hex() == inquiry]
    assert [k.record_id.hex() for k in grant.record_keys] == shared
    reads = shared_net["insurer"].get(f"/v1/health/institution/records?patient_id={patient.id}").json()
    assert sorted(r["record_id"] for r in reads["records"]) == shared


def test_trust_1_grant_refuses_a_scope_it_cannot_show(shared_net: HealthNet, tmp_path: Path) -> None:
    patient = Patient(shared_net, tmp_path, 2)
    other = Patient(shared_net, tmp_path, 3)
    unknown = patient.inquire(["Immunization"], [os.urandom(32).hex()])
    foreign = patient.inquire([], [other.condition])  # another patient's record, by id
    rows = {
        r["inquiry_id"]: r
        for r in json.loads(patient_cli(patient.key, shared_net["clinic"].url, "inquiries", "--json"))
    }
    for inquiry in (unknown, foreign):
        assert rows[inquiry]["preview"] is None
        assert rows[inquiry]["refused"]["problem"] == PROBLEM_UNKNOWN_RECORD
        result = run_patient(patient.key, shared_net["clinic"].url, "grant", inquiry, "--yes")
        assert result.exit_code != 0
        assert "not one of your records" in result.output
        with pytest.raises(ScopeNotShowableError):
            patient.sdk().grant(bytes.fromhex(inquiry))
    shared_net.sync()
    assert patient.granted_events() == []  # nothing was signed


def test_trust_1_grant_asks_and_refuses_without_confirmation(
    shared_net: HealthNet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    patient = Patient(shared_net, tmp_path, 4)
    inquiry = patient.inquire(["Immunization"], [])
    url = shared_net["clinic"].url
    result = run_patient(patient.key, url, "grant", inquiry)  # no terminal, no --yes
    assert result.exit_code != 0
    assert "nobody confirmed" in result.output
    monkeypatch.setattr(patient_commands, "_is_terminal", lambda: True)
    result = run_patient(patient.key, url, "grant", inquiry, stdin="n\n")
    assert result.exit_code != 0
    assert "Grant exactly this?" in result.output
    shared_net.sync()
    assert patient.granted_events() == []
    result = run_patient(patient.key, url, "grant", inquiry, stdin="y\n")
    assert result.exit_code == 0, result.output
    shared_net.sync()
    assert [e.subject_id.hex() for e in patient.granted_events()] == [inquiry]


def test_trust_1_grant_refuses_when_the_scope_grew_after_the_preview(
    shared_net: HealthNet, tmp_path: Path
) -> None:
    patient = Patient(shared_net, tmp_path, 5)
    inquiry = bytes.fromhex(patient.inquire(["Immunization"], []))
    sdk = patient.sdk()
    shown = sdk.preview_grant(inquiry)
    assert [r.record_id.hex() for r in shown.records] == [patient.immunization]
    shared_net["clinic"].add_record(patient.id, make_synthetic_records(6)[2])  # another Immunization
    shared_net.sync()
    with pytest.raises(PreviewChangedError):
        sdk.grant(inquiry, preview=shown)
    assert patient.granted_events() == []
    fresh = sdk.preview_grant(inquiry)
    assert len(fresh.records) == 2
    done = sdk.grant(inquiry, preview=fresh)
    (grant,) = [g for g in sdk.list_grants() if g.grant_id == done.tx_id]
    assert tuple(k.record_id for k in grant.record_keys) == fresh.record_ids


def test_a_representative_is_shown_what_it_cannot_share(shared_net: HealthNet, tmp_path: Path) -> None:
    patient = Patient(shared_net, tmp_path, 8)
    representative = Identity.generate()
    patient.sdk(shared_net["clinic"].url).add_representative(representative.public.sign_key)
    shared_net.sync()
    inquiry = bytes.fromhex(patient.inquire(["Immunization"], []))
    acting = PatientClient(
        shared_net["clinic"].url,
        representative,
        patient_id=bytes.fromhex(patient.id),
        genesis_hash=load_genesis_pin(patient.key),
    )
    preview = acting.preview_grant(inquiry)
    assert preview.records == ()
    assert [r.record_id.hex() for r in preview.unsealable] == [patient.immunization]
    assert any("NOT shared by this grant" in line for line in preview.lines())
    done = acting.grant(inquiry, preview=preview)
    (grant,) = [g for g in patient.sdk().list_grants() if g.grant_id == done.tx_id]
    assert grant.record_keys == ()
    assert grant.granted_by == representative.public.sign_key


def test_a_patient_narrows_an_inquiry_on_the_command_line_and_the_grant_is_on_those_terms(
    shared_net: HealthNet, tmp_path: Path
) -> None:
    """Issue 15's "narrow before approving", on the ledger: `grant --type --expires` signs a
    `health.grant_narrowed`; the preview shows the narrowed terms; the insurer reads only the
    narrowed type, and the grant ends on the narrowed day, not the inquiry's."""
    patient = Patient(shared_net, tmp_path, 7)
    inquiry = patient.inquire(["Condition", "Immunization", "Observation"], [])
    day = datetime.datetime.now(tz=datetime.UTC).date() + datetime.timedelta(days=2)
    expires = day.isoformat()  # sooner than the inquiry's (30 days)
    expires_ms = int(datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp() * 1000)
    out = patient_cli(
        patient.key,
        shared_net["clinic"].url,
        "grant",
        inquiry,
        "--type",
        "Immunization",
        "--expires",
        expires,
        "--yes",
    )
    assert "What you narrowed it to (they asked for more):" in out
    assert f"Access would last until {expires}" in out
    assert "exactly these 1 record(s)" in out
    shared_net.sync()
    (grant,) = [g for g in patient.sdk().list_grants() if g.inquiry_id.hex() == inquiry]
    assert grant.scope.record_types == ("Immunization",)
    assert grant.expires_ms == expires_ms
    assert [k.record_id.hex() for k in grant.record_keys] == [patient.immunization]
    reads = shared_net["insurer"].get(f"/v1/health/institution/records?patient_id={patient.id}").json()
    assert [r["record_id"] for r in reads["records"]] == [patient.immunization]
    # Beyond the inquiry: said in words, nothing signed.
    wider = run_patient(
        patient.key, shared_net["clinic"].url, "grant", inquiry, "--type", "Encounter", "--yes"
    )
    assert wider.exit_code != 0
