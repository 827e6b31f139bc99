"""Issue #5: a clinic whose data directory is lost gets its patients' records and audit trails back.

Four institutions (clinic, hospital, insurer, research), each a validator on its own node process,
run the medical application. Three synthetic patients register with the SDK (their keys stay in the
test); the clinic writes records for each of them, the hospital writes some too; the patients grant
the clinic and the hospital access, deny the insurer, revoke one grant; both institutions read
under their grants, so the trails hold read receipts. Then the clinic's node is stopped, its data
directory deleted, the other three commit one more record without it, and the clinic restarts with
only its home (config, keys, genesis): it must get everything back from its peers.

What it must answer afterwards, through its own API, compared with what it answered before the loss:
the audit trails first, byte for byte (before any read, since a read under a grant commits a receipt
and so lengthens the trail); then every record, decrypted again: the answer is byte-identical up to
the new receipt (and identical in full for the clinic's own records, which it reads without one);
the patients' own decryptions of the ciphertexts it serves are identical too. Its chain is the
peers' chain: same blocks, same latest block hash, same state root. And its attachments (issue 14,
defect 3): the blob store is wiped with the data directory; the clinic's own discharge letter, the
hospital's report attached before the loss and the one attached while it was down all come back
from its peers, every chunk verified against its manifest, each decrypting to the uploaded bytes.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from health_recovery_harness import (
    DEADLINE_S,
    HealthCluster,
    Institution,
    condition,
    diagnostic_report,
    document_reference,
    encounter,
    glucose,
    immunization,
    start_health_cluster,
    wait_until,
    with_presented_form,
)

from medledger.crypto import Identity
from medledger.health.fhir import compute_canonical_json
from medledger.health.sdk import PatientClient

pytestmark = pytest.mark.slow

PATIENTS: Final = 3
#: How a read's JSON answer ends: `..., "resource": {...}, "receipt": null-or-object}`.
RECEIPT_MEMBER: Final = b', "receipt": '

Snapshot = dict[str, bytes]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[HealthCluster]:
    with start_health_cluster(tmp_path / "net") as started:
        yield started


def split_receipt(body: bytes) -> tuple[bytes, Any]:
    """A read's answer as the bytes before its receipt (metadata and plaintext) and the receipt."""
    head, member, tail = body.rpartition(RECEIPT_MEMBER)
    assert member, body
    assert tail.endswith(b"}"), body
    whole = json.loads(body)
    assert json.loads(head + b"}") == {k: v for k, v in whole.items() if k != "receipt"}
    return head, whole["receipt"]


def read_every_record(clinic: Institution, patient_id: str) -> Snapshot:
    """Decrypt every record the clinic may read (its own, and those granted): id → raw answer."""
    listed = clinic.list_records(patient_id).json()["records"]
    return {str(item["record_id"]): clinic.read(item["record_id"]).body for item in listed}


def capture_trails(clinic: Institution, patient_id: str) -> Snapshot:
    """What the clinic's API says about one patient apart from plaintext: raw answers by route.

    None of these routes writes anything, so taking them changes nothing on the chain.
    """
    paths = {
        "patient audit": f"/v1/health/patients/{patient_id}/audit",
        "clinic audit": f"/v1/health/institution/audit?patient_id={patient_id}",
        "clinic inquiries": f"/v1/health/institution/inquiries?patient_id={patient_id}",
        "grants": f"/v1/health/patients/{patient_id}/grants",
        "ciphertexts": f"/v1/health/patients/{patient_id}/records",
        "clinic records": f"/v1/health/institution/records?patient_id={patient_id}",
    }
    return {what: clinic.get(path).body for what, path in paths.items()}


def decrypt_as_patient(url: str, identity: Identity) -> dict[str, bytes]:
    """The patient's device decrypts the ciphertexts a node serves: record id → salt + plaintext."""
    decrypted: dict[str, bytes] = {}
    for local in PatientClient(url, identity).read_records():
        assert local.decrypted is not None, local.error
        decrypted[local.record.record_id.hex()] = local.decrypted.salt + local.decrypted.canonical_json
    return decrypted


def synthetic_pdf(size: int) -> bytes:
    """A PDF-shaped file of random bytes: nobody's data."""
    return (b"%PDF-1.7\n" + secrets.token_bytes(size))[:size]


def blob_of(resource: dict[str, Any]) -> str:
    """The blob id a resource's (only) attachment URL names."""
    text = json.dumps(resource)
    start = text.index("urn:medledger:blob:") + len("urn:medledger:blob:")
    return text[start : start + 64]


def test_a_wiped_clinic_returns_the_same_records_and_audit_trails(cluster: HealthCluster) -> None:
    clinic, hospital, insurer, research = (cluster[n] for n in ("clinic", "hospital", "insurer", "research"))
    identities = [Identity.generate() for _ in range(PATIENTS)]
    # The patients' devices talk to the research institute's node, which stays up throughout.
    patients = [PatientClient(research.url, identity) for identity in identities]
    ids = [p.patient_id.hex() for p in patients]
    written: dict[str, dict[str, Any]] = {}  # record id → the resource its author posted

    for patient in patients:
        patient.register()
    cluster.sync()

    # The clinic writes four records per patient, the hospital an Encounter.
    for n, patient_id in enumerate(ids):
        for resource in (glucose(n, 5.4 + n), glucose(n, 6.15 + n), condition(n), immunization(n)):
            written[clinic.add_record(patient_id, resource)] = resource
        written[hospital.add_record(patient_id, encounter(n))] = encounter(n)
    cluster.sync()

    # The clinic and the hospital ask for each other's kinds of record; the insurer asks once.
    clinic_asks = [clinic.inquire(p, "TREAT", ["Encounter", "DiagnosticReport"]) for p in ids]
    hospital_asks = [hospital.inquire(p, "TREAT", ["Observation", "Condition"]) for p in ids]
    insurer_ask = insurer.inquire(ids[2], "HPAYMT", ["Condition"])
    cluster.sync()
    for patient, clinic_ask, hospital_ask in zip(patients, clinic_asks, hospital_asks, strict=True):
        patient.grant(clinic_ask)  # the Encounter's key is re-sealed for the clinic in the grant
        patient.grant(hospital_ask)
    patients[2].deny(insurer_ask)
    cluster.sync()

    # Written under a live grant, a DiagnosticReport is sealed for the clinic directly; patient 0's
    # carries its rendered report as an attachment (a blob off the ledger).
    files: dict[str, tuple[str, bytes]] = {}  # blob id → (record id, the file's bytes)
    for n, patient_id in enumerate(ids):
        report = diagnostic_report(n, "A")
        if n == 0:
            pdf = synthetic_pdf(3 * 2**20 + 12_345)
            report = with_presented_form(report, hospital.upload(pdf))
            files[blob_of(report)] = (hospital.add_record(patient_id, report), pdf)
            written[files[blob_of(report)][0]] = report
            continue
        written[hospital.add_record(patient_id, report)] = report
    # The clinic's own document: a discharge letter of patient 0.
    letter_pdf = synthetic_pdf(2**20 + 1)
    letter = document_reference(0, clinic.upload(letter_pdf), "Synthetic discharge letter")
    files[blob_of(letter)] = (clinic.add_record(ids[0], letter), letter_pdf)
    written[files[blob_of(letter)][0]] = letter
    cluster.sync()

    # The hospital reads what it was granted (receipts); then patient 1 revokes the hospital's grant.
    for patient_id in ids:
        for item in hospital.list_records(patient_id).json()["records"]:
            if item["access"] == "grant":
                assert hospital.read(item["record_id"]).json()["receipt"] is not None
    cluster.sync()
    (hospital_grant,) = [g for g in patients[1].list_grants() if g.inquiry_id == hospital_asks[1]]
    patients[1].revoke(hospital_grant.grant_id)
    cluster.sync()

    # Before the loss: the clinic reads everything it may (its reads under grants commit receipts),
    # then its view of each patient's trails is taken, once the receipts are on every node.
    before_reads = {p: read_every_record(clinic, p) for p in ids}
    cluster.sync()
    before_trails = {p: capture_trails(clinic, p) for p in ids}
    before_decrypted = {p: decrypt_as_patient(clinic.url, i) for p, i in zip(ids, identities, strict=True)}
    height_before, _, _ = cluster.wait_agreed()

    # The capture is what the test means it to be: the plaintext the authors wrote, read receipts
    # and every kind of decision in the trails, and the trails agree with a peer's copy.
    for patient_id in ids:
        reads = before_reads[patient_id]
        # 4 of the clinic's own (and patient 0's letter), the hospital's Encounter and DiagnosticReport
        assert len(reads) == (7 if patient_id == ids[0] else 6)
        for record_id, body in reads.items():
            answer = json.loads(body)
            assert compute_canonical_json(answer["resource"]) == compute_canonical_json(written[record_id])
            assert (answer["receipt"] is None) == (answer["author_name"] == "clinic")
        trail = json.loads(before_trails[patient_id]["patient audit"])["events"]
        events = [(e["event"], e["actor_name"]) for e in trail]
        assert events.count(("read", "clinic")) == 2
        assert events.count(("read", "hospital")) == 3  # the clinic's two Observations and Condition
        assert events.count(("grant", None)) == 2  # the patient signs: no institution's name
        assert (
            before_trails[patient_id]["patient audit"]
            == hospital.get(f"/v1/health/patients/{patient_id}/audit").body
        )
    assert ("deny", None) in [
        (e["event"], e["actor_name"]) for e in json.loads(before_trails[ids[2]]["patient audit"])["events"]
    ]
    assert ("revoke", None) in [
        (e["event"], e["actor_name"]) for e in json.loads(before_trails[ids[1]]["patient audit"])["events"]
    ]

    # Every node holds every attachment (replicas = 3), verified, before the loss.
    wait_until(
        lambda: all(i.held_blobs() == dict.fromkeys(files, True) for i in cluster.running()),
        "every attachment on every node",
    )

    # The loss: the clinic's node stops and its data directory and blob store are deleted (home,
    # keys, genesis stay).
    clinic.process.stop()
    shutil.rmtree(clinic.data_dir)
    shutil.rmtree(clinic.process.home / "blobs")
    assert not clinic.data_dir.exists()
    assert (clinic.process.home / "config.toml").exists()

    # The chain goes on without it (3 of 4 validators): one more record, sealed for the clinic too.
    late_pdf = synthetic_pdf(5 * 2**20)
    late = with_presented_form(diagnostic_report(0, "B"), hospital.upload(late_pdf))
    late_id = hospital.add_record(ids[0], late)
    written[late_id] = late
    files[blob_of(late)] = (late_id, late_pdf)
    height_late, block_hash, state_root = cluster.wait_agreed()
    assert height_late > height_before

    # The clinic restarts with an empty store and catches up from its peers.
    # (It has no store to open: whatever it holds from now on came from its peers.)
    clinic.process.start()
    clinic.process.wait_ready(DEADLINE_S, require_ready=False)
    wait_until(lambda: clinic.tip()[0] >= height_late, f"the clinic to reach height {height_late}")
    assert cluster.wait_agreed() == (height_late, block_hash, state_root)
    assert clinic.tip()[:3] == hospital.tip()[:3] == (height_late, block_hash, state_root)
    assert cluster.block_hashes("clinic", height_late) == cluster.block_hashes("hospital", height_late)
    assert clinic.data_dir.is_dir()

    # Audit trails first (reads lengthen them): byte for byte what the clinic answered before.
    for patient_id in ids:
        after = capture_trails(clinic, patient_id)
        for what in ("patient audit", "clinic audit", "clinic inquiries", "grants"):
            assert after[what] == before_trails[patient_id][what], (patient_id, what)
        if patient_id != ids[0]:
            assert after == before_trails[patient_id]
            continue
        # Patient 0 has the record written while the clinic was down: one more, at the end.
        for what in ("ciphertexts", "clinic records"):
            items = json.loads(after[what])["records"]
            items_before = json.loads(before_trails[patient_id][what])["records"]
            assert items[:-1] == items_before, what
            assert items[-1]["record_id"] == late_id, what

    # The patients' devices decrypt the same bytes from what the recovered clinic serves.
    for patient_id, identity in zip(ids, identities, strict=True):
        decrypted = decrypt_as_patient(clinic.url, identity)
        if patient_id == ids[0]:
            # The record is the JSON text the hospital submitted (ADR 0011): json.dumps of it here.
            assert decrypted.pop(late_id).endswith(json.dumps(late).encode())
        assert decrypted == before_decrypted[patient_id]

    # Then the plaintext: every record read again through the clinic's API.
    for patient_id in ids:
        for record_id, body_before in before_reads[patient_id].items():
            body = clinic.read(record_id).body
            head, receipt = split_receipt(body)
            head_before, receipt_before = split_receipt(body_before)
            assert head == head_before, record_id  # metadata and plaintext, byte for byte
            if receipt_before is None:  # the clinic's own record: no receipt, the whole answer
                assert receipt is None
                assert body == body_before, record_id
            else:  # a read under a grant commits a fresh receipt, after the recovery
                assert receipt["height"] > height_late
                assert receipt["tx_id"] != receipt_before["tx_id"]
                assert receipt["grant_id"] == receipt_before["grant_id"]
    late_answer = json.loads(clinic.read(late_id).body)
    assert compute_canonical_json(late_answer["resource"]) == compute_canonical_json(late)
    assert late_answer["receipt"]["height"] > height_late

    # The recovered clinic's receipts are on every node, and it still agrees with its peers.
    height_end, _, _ = cluster.wait_agreed()
    assert height_end > height_late
    for patient_id in ids:
        trail = clinic.get(f"/v1/health/patients/{patient_id}/audit").body
        assert trail == hospital.get(f"/v1/health/patients/{patient_id}/audit").body
        events = [(e["event"], e["actor_name"]) for e in json.loads(trail)["events"]]
        assert events.count(("read", "clinic")) == (5 if patient_id == ids[0] else 4)

    # Its blobs came back from its peers like its blocks: every attachment, each chunk verified
    # against its manifest, and each decrypts to the bytes its author uploaded (the hospital's
    # under the clinic's grant: receipted, like a record).
    wait_until(lambda: clinic.held_blobs() == dict.fromkeys(files, True), "the clinic's blobs back")
    assert "blob repair:" in clinic.process.read_log()  # the repair loop reports its progress
    for blob_id, (record_id, data) in files.items():
        assert hashlib.sha256(clinic.download(record_id, blob_id)).digest() == hashlib.sha256(data).digest()
