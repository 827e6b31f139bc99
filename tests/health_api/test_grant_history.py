"""A real history through the real API and CLI: a grant of more records than one tx carries.

Issue 14, defect 1: a grant used to stop at 256 records. Here a clinic writes 300 Observations and
two Conditions for a patient, a hospital asks for the Observations, the patient's CLI shows exactly
what would be shared (counted per type, author and year) and grants it as a manifest and its parts
(ADR 0012); the hospital reads all 300 in one bulk read, receipted in full (two receipts), and the
patient's audit trail names every record shared and read. The in-process test of 10,000 records is
`tests/health/test_grant_parts.py`; this one is about the flow through real node processes.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from health_harness import (
    DEADLINE_S,
    POLL_S,
    HealthNet,
    Institution,
    assert_problem,
    make_patient_key,
    observation,
    patient_cli,
    request,
)

from medledger.health.client import build_grant_in_parts
from medledger.health.fhir import compute_canonical_json
from medledger.health.records import reseal_record_keys
from medledger.health.sdk import PatientClient
from medledger.health.types import GRANT_PART_RECORDS_MAX, RECEIPT_RECORDS_MAX, compute_patient_id

OBSERVATIONS = 300
CONDITION: dict[str, Any] = {
    "resourceType": "Condition",
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}], "text": "Hypertension"},
    "subject": {"reference": "Patient/synthetic-1"},
}


def _write_all(clinic: Institution, patient_id: str, resources: list[dict[str, Any]]) -> None:
    """Post every record without waiting for each commit, then wait until all are committed."""
    for resource in resources:
        reply = clinic.post(
            "/v1/health/institution/records?wait_ms=0", {"patient_id": patient_id, "resource": resource}
        )
        assert reply.status == 202, reply
    deadline = time.monotonic() + DEADLINE_S
    while len(_listed(clinic, patient_id)) < len(resources):
        assert time.monotonic() < deadline, "the records were not all committed"
        time.sleep(POLL_S)  # polling a condition with a deadline


def _listed(institution: Institution, patient_id: str) -> list[dict[str, Any]]:
    reply = institution.get(f"/v1/health/institution/records?patient_id={patient_id}&limit=1000")
    assert reply.status == 200, reply
    records: list[dict[str, Any]] = reply.json()["records"]
    return records


def test_a_history_larger_than_one_tx_is_granted_read_and_receipted_in_full(
    clinic_and_hospital: HealthNet, tmp_path: Path
) -> None:
    net = clinic_and_hospital
    clinic, hospital = net["clinic"], net["hospital"]
    key = tmp_path / "patient.key"
    identity = make_patient_key(key)
    patient_id = compute_patient_id(identity.public.sign_key).hex()
    assert patient_id in patient_cli(key, clinic.url, "register")
    net.sync()
    values = [round(3.0 + n / 100, 2) for n in range(OBSERVATIONS)]
    _write_all(clinic, patient_id, [observation(v) for v in values] + [CONDITION, CONDITION])
    conditions = [r["record_id"] for r in _listed(clinic, patient_id) if r["record_type"] == "Condition"]
    q = hospital.inquire(patient_id, "TREAT", ["Observation"])
    net.sync()

    # What the patient is shown before signing: the exact count, per type and author, no cut.
    shown = patient_cli(key, hospital.url, "inquiries")
    assert f"Granting shares exactly these {OBSERVATIONS} record(s) now:" in shown
    assert f"{OBSERVATIONS}  measurements and test results (Observation)" in shown
    assert f"{OBSERVATIONS}  clinic" in shown
    assert "you sign 3" in shown  # a manifest and two parts (256 + 44 records)
    (pending,) = json.loads(patient_cli(key, hospital.url, "inquiries", "--json"))
    assert len(pending["preview"]["records"]) == OBSERVATIONS
    assert pending["preview"]["counts"]["by_type"] == [
        {"record_type": "Observation", "words": "measurements and test results", "count": OBSERVATIONS}
    ]
    previewed = sorted(r["record_id"] for r in pending["preview"]["records"])

    granted = patient_cli(key, clinic.url, "grant", q, "--yes")
    assert f"shared {OBSERVATIONS} of {OBSERVATIONS} record(s) now" in granted
    net.sync()
    (grant,) = json.loads(patient_cli(key, clinic.url, "grants", "--json"))
    assert (grant["records"], grant["keys_received"]) == (OBSERVATIONS, OBSERVATIONS)

    # The hospital sees every granted record, and reads them all at once, receipted in full.
    listed = _listed(hospital, patient_id)
    assert sorted(r["record_id"] for r in listed) == previewed
    assert {r["access"] for r in listed} == {"grant"}
    audit_before = len(json.loads(patient_cli(key, hospital.url, "audit", "--json")))
    refused = hospital.post(
        "/v1/health/institution/reads",
        {"patient_id": patient_id, "record_ids": [*previewed[:5], conditions[0]]},
    )
    assert "records" not in assert_problem(refused, 403)  # one record outside the grant: nothing read
    reply = hospital.post("/v1/health/institution/reads", {"patient_id": patient_id, "record_ids": previewed})
    assert reply.status == 200, reply
    body = reply.json()
    assert sorted(r["record_id"] for r in body["records"]) == previewed
    read_values = sorted(r["resource"]["valueQuantity"]["value"] for r in body["records"])
    assert read_values == sorted(
        json.loads(compute_canonical_json(observation(v)))["valueQuantity"]["value"] for v in values
    )
    assert [r["record_count"] for r in body["receipts"]] == [
        RECEIPT_RECORDS_MAX,
        OBSERVATIONS - RECEIPT_RECORDS_MAX,
    ]
    single = hospital.read(previewed[0])  # the one-record read finds the key a part delivered
    assert single.status == 200, single
    net.sync()

    # Replaying a part the patient signed is refused by the chain (its id is already committed).
    trail = json.loads(patient_cli(key, clinic.url, "audit", "--json"))
    parts = [e for e in trail if e["event"] == "grant_part"]
    assert [len(e["record_ids"]) for e in parts] == [
        GRANT_PART_RECORDS_MAX,
        OBSERVATIONS - GRANT_PART_RECORDS_MAX,
    ]
    proof = request(clinic.url, "GET", f"/v1/proofs/txs/{parts[0]['tx_id']}", headers=clinic.auth).json()
    replay = request(
        clinic.url,
        "POST",
        "/v1/txs",
        body=json.dumps({"tx": proof["tx"]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert_problem(replay, 409)
    assert base64.b64decode(proof["tx"])

    # The audit trail names every record shared (part by part) and read (receipt by receipt); the
    # refused bulk read left nothing; the patient's client verifies it all against the chain.
    events = [e["event"] for e in trail]
    assert events == ["inquiry", "grant", "grant_part", "grant_part", "read", "read", "read"]
    assert audit_before == 4
    shared = sorted(i for e in parts for i in e["record_ids"])
    reads = [e for e in trail if e["event"] == "read"]
    assert shared == previewed
    assert sorted(i for e in reads[:2] for i in e["record_ids"]) == previewed
    assert reads[2]["record_ids"] == [previewed[0]]
    assert "audited tx(s) proven" in patient_cli(key, hospital.url, "verify")
    table = patient_cli(key, hospital.url, "audit")  # long lists are counted, not cut silently
    assert f"{GRANT_PART_RECORDS_MAX} records (" in table
    assert "--json lists all" in table

    # A client that stops after the manifest and one part leaves a live, partial grant (shown as
    # such); `resume-grant` rebuilds the declared records on the device and sends the rest.
    q2 = hospital.inquire(patient_id, "TREAT", ["Observation"])
    net.sync()
    sdk = PatientClient(clinic.url, identity)
    preview = sdk.preview_grant(bytes.fromhex(q2))
    keys = reseal_record_keys(
        [r for r in sdk.list_records() if r.record_id in set(preview.record_ids)],
        identity,
        bytes.fromhex(hospital.get("/v1/health/institution").json()["enc_key"]),
    )
    manifest, parts_txs = build_grant_in_parts(identity, bytes.fromhex(q2), keys, chain_id=sdk.chain_id)
    sdk._submit(manifest)
    sdk._submit_batch(parts_txs[1:])
    net.sync()
    second = {g["grant_id"]: g for g in json.loads(patient_cli(key, clinic.url, "grants", "--json"))}
    partial = second[manifest[2].hex()]
    assert (partial["records"], partial["keys_received"]) == (
        OBSERVATIONS,
        OBSERVATIONS - GRANT_PART_RECORDS_MAX,
    )
    assert "(44 delivered)" in patient_cli(key, clinic.url, "grants")
    resumed = patient_cli(key, hospital.url, "resume-grant", manifest[2].hex()[:16])
    assert f"sent 1 part(s); {OBSERVATIONS} of {OBSERVATIONS} record(s) shared" in resumed
    assert "sent 0 part(s)" in patient_cli(key, hospital.url, "resume-grant", manifest[2].hex()[:16])
