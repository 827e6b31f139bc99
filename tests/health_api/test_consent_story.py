"""The consent story end to end, through the real institution API and the real patient CLI.

Two institutions, each on its own node process (a clinic A that authors records, a hospital B that
asks for them), and a patient whose key file never leaves the test's "device": A writes; B cannot
read (403 problem+json, nothing decrypted); B inquires, the patient denies, B still cannot; B
inquires again, the patient grants, B reads exactly what A wrote (each read leaves a receipt on the
ledger); the patient revokes, and what A adds afterwards stays unreadable to B; the patient's audit
trail lists all of it, in order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from health_harness import HealthNet, assert_problem, make_patient_key, observation, patient_cli

from medledger.health.fhir import compute_canonical_json
from medledger.health.sdk import PatientClient
from medledger.health.types import compute_patient_id


def canonical(resource: dict[str, Any]) -> bytes:
    return compute_canonical_json(resource)


def test_write_deny_grant_read_revoke_and_the_audit_trail(
    clinic_and_hospital: HealthNet, tmp_path: Path
) -> None:
    net = clinic_and_hospital
    clinic, hospital = net["clinic"], net["hospital"]
    key = tmp_path / "patient.key"
    identity = make_patient_key(key)
    patient_id = compute_patient_id(identity.public.sign_key).hex()

    # The patient registers through the hospital's node (any node will do), with the CLI.
    assert patient_id in patient_cli(key, hospital.url, "register")
    net.sync()

    # Clinic A writes; hospital B can neither read nor even list it.
    first = observation(5.4)
    r1 = clinic.add_record(patient_id, first)
    net.sync()  # a write commits on every node, but each applies the block in its own time
    problem = assert_problem(hospital.read(r1), 403)
    assert "resource" not in problem
    listed = hospital.get(f"/v1/health/institution/records?patient_id={patient_id}").json()
    assert listed["records"] == []
    assert clinic.read(r1).json()["resource"] == json.loads(canonical(first))  # the author reads its own

    # B inquires; the patient sees it pending and denies; B still cannot read.
    q1 = hospital.inquire(patient_id, "TREAT", ["Observation"])
    net.sync()
    pending = json.loads(patient_cli(key, clinic.url, "inquiries", "--json"))
    assert [(p["inquiry_id"], p["requester"], p["purpose"]) for p in pending] == [(q1, "hospital", "TREAT")]
    assert "denied" in patient_cli(key, clinic.url, "deny", q1[:16])
    net.sync()
    assert_problem(hospital.read(r1), 403)
    decisions = hospital.get(f"/v1/health/institution/inquiries?patient_id={patient_id}").json()["inquiries"]
    assert [(d["inquiry_id"], d["status"], d["grant"]) for d in decisions] == [(q1, "denied", None)]

    # B inquires again; the patient grants (keys re-sealed on the device); B reads exactly A's record.
    q2 = hospital.inquire(patient_id, "TREAT", ["Observation"])
    net.sync()
    assert "granted" in patient_cli(key, hospital.url, "grant", q2, "--yes")
    net.sync()
    read = hospital.read(r1)
    assert read.status == 200, read
    body = read.json()
    assert canonical(body["resource"]) == canonical(first)
    assert body["receipt"]["height"] >= 1
    # A record A adds while the grant is live is sealed for B too, and B may read it.
    second = observation(6.1)
    r2 = clinic.add_record(patient_id, second)
    net.sync()
    assert canonical(hospital.read(r2).json()["resource"]) == canonical(second)
    listed = hospital.get(f"/v1/health/institution/records?patient_id={patient_id}").json()["records"]
    assert [(r["record_id"], r["access"]) for r in listed] == [(r1, "grant"), (r2, "grant")]

    # The patient revokes; B can read nothing, and what A adds afterwards is not even sealed for B.
    grants = json.loads(patient_cli(key, clinic.url, "grants", "--json"))
    assert [(g["grantee"], g["revoked"]) for g in grants] == [("hospital", False)]
    grant_id = grants[0]["grant_id"]
    net.sync()
    assert "revoked" in patient_cli(key, clinic.url, "revoke", grant_id[:12])
    net.sync()
    third = observation(7.7)
    r3 = clinic.add_record(patient_id, third)
    net.sync()
    for record_id in (r1, r2, r3):
        assert "resource" not in assert_problem(hospital.read(record_id), 403)
    sdk = PatientClient(clinic.url, identity)
    hospital_enc_key = bytes.fromhex(hospital.get("/v1/health/institution").json()["enc_key"])
    sealed_for = {r.record_id.hex(): set(r.envelope.readers) for r in sdk.list_records()}
    assert hospital_enc_key in sealed_for[r2]
    assert hospital_enc_key not in sealed_for[r3]
    assert sealed_for[r3] == {
        identity.public.enc_key,
        bytes.fromhex(clinic.get("/v1/health/institution").json()["enc_key"]),
    }

    # The patient decrypts all three locally, and the audit trail tells the whole story in order.
    local = json.loads(patient_cli(key, hospital.url, "records", "--json"))
    assert [canonical(r["resource"]) for r in local] == [canonical(x) for x in (first, second, third)]
    trail = json.loads(patient_cli(key, hospital.url, "audit", "--json"))
    story = [(e["event"], e["actor_name"], e["purpose"], e["record_ids"]) for e in trail]
    assert story == [
        ("inquiry", "hospital", "TREAT", []),
        ("deny", "patient", "TREAT", []),
        ("inquiry", "hospital", "TREAT", []),
        ("grant", "patient", "TREAT", [r1]),
        ("read", "hospital", "TREAT", [r1]),
        ("read", "hospital", "TREAT", [r2]),
        ("revoke", "patient", "TREAT", []),
    ]
    heights = [e["height"] for e in trail]
    assert heights == sorted(heights)
    assert all(h >= 1 for h in heights)
    assert [e["subject_id"] for e in trail][:4] == [q1, q1, q2, q2]
    assert "read" in patient_cli(key, clinic.url, "audit")  # the human-readable table

    # The hospital's own view of the trail is the part that concerns it (here: all of it).
    seen = hospital.get(f"/v1/health/institution/audit?patient_id={patient_id}").json()["events"]
    assert [e["event"] for e in seen] == [e["event"] for e in trail]
    # The clinic never asked for anything: nothing in the trail concerns it.
    assert clinic.get(f"/v1/health/institution/audit?patient_id={patient_id}").json()["events"] == []
