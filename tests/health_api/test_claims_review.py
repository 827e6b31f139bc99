"""The claims review's defects (issue 12), each over real node processes through the real API.

1. A correction answering an amendment is labelled by its corrected content: a correction that
   adds an HIV diagnosis is not sealed for an insurer whose standing consent does not name HIV,
   and its label is on the ledger.
2. A labelled record with attachments is accepted (not 422), labelled, and its attachment read
   exactly by its readers.
3. Events go to their audience (docs/health.md, "Who sees which event"): the insurer's reads under
   the patient's consent are the patient's and the insurer's; the filing clinic sees the claim's
   filing and decision, not the reads nor the consent's grant id; a third institution nothing.
4. A Claim, a ClaimResponse and a supporting record are answered as submitted, byte for byte
   (`100.10` stays `100.10`, `1e2` stays `1e2`), to the insurer, the clinic and the patient.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from health_harness import (
    PASSPHRASE,
    HealthNet,
    Institution,
    assert_problem,
    make_patient_key,
    observation,
    patient_cli,
    request,
    start_health_net,
)
from test_attachments import download, make_pdf, upload

from medledger.crypto.keyfile import load_identity
from medledger.health.events import get_seq_height
from medledger.health.sdk import PatientClient
from medledger.health.types import compute_patient_id

ROLES: Final = {"clinic": "clinic", "hospital": "hospital", "insurer": "insurer"}
ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
#: A Claim as a clinic's system writes it: decimals with their digits (`100.10`, `1e2`).
CLAIM_TEXT: Final = (
    '{"resourceType": "Claim", "status": "active", "type": {"coding": [{"system": '
    '"http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]}, "use": "claim", '
    '"patient": {"reference": "Patient/synthetic-1"}, "created": "2026-12-01", '
    '"provider": {"reference": "Organization/clinic"}, "priority": {"coding": [{"system": '
    '"http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]}, '
    '"insurance": [{"sequence": 1, "focal": true, "coverage": {"reference": "Coverage/synthetic-1"}}], '
    '"item": [{"sequence": 1, "productOrService": {"coding": [{"system": '
    '"http://www.ama-assn.org/go/cpt", "code": "99213"}]}, "quantity": {"value": 1e2}, '
    '"net": {"value": 100.10, "currency": "EUR"}}]}'
)
RESPONSE_TEXT: Final = (
    '{"resourceType": "ClaimResponse", "status": "active", "type": {"coding": [{"system": '
    '"http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]}, "use": "claim", '
    '"patient": {"reference": "Patient/synthetic-1"}, "created": "2026-12-02", '
    '"insurer": {"reference": "Organization/insurer"}, "outcome": "complete", '
    '"disposition": "Settled in full", "payment": {"type": {"coding": [{"system": '
    '"http://terminology.hl7.org/CodeSystem/ex-paymenttype", "code": "complete"}]}, '
    '"amount": {"value": 100.10, "currency": "EUR"}}}'
)
RECORD_TEXT: Final = (
    '{"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": '
    '"http://loinc.org", "code": "4548-4"}]}, "subject": {"reference": "Patient/synthetic-1"}, '
    '"valueQuantity": {"value": 6.30, "unit": "%"}}'
)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HealthNet]:
    with start_health_net(tmp_path_factory.mktemp("claims-review") / "net", ROLES) as started:
        yield started


@pytest.fixture
def patient(net: HealthNet, tmp_path: Path) -> tuple[Path, str]:
    """A registered patient with a standing consent to the insurer (no label named)."""
    key = tmp_path / "patient.key"
    identity = make_patient_key(key)
    patient_cli(key, net["clinic"].url, "register")
    net.sync()
    types = ("Condition", "DocumentReference", "Encounter", "Observation")
    args = [arg for t in types for arg in ("--type", t)]
    shown = patient_cli(
        key, net["clinic"].url, "consent", "grant", "insurer", *args, "--author", "clinic", "--yes"
    )
    assert "no record labelled sensitive" in shown
    net.sync()
    return key, compute_patient_id(identity.public.sign_key).hex()


def post_text(institution: Institution, path: str, text: str) -> Any:
    headers = {**institution.auth, "Content-Type": "application/json"}
    return request(institution.url, "POST", path, body=text.encode(), headers=headers)


def add(institution: Institution, patient_id: str, resource: dict[str, Any]) -> dict[str, Any]:
    reply = institution.post(
        "/v1/health/institution/records", {"patient_id": patient_id, "resource": resource}
    )
    assert reply.status == 201, reply
    answer: dict[str, Any] = reply.json()
    return answer


def condition(system: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": "Patient/synthetic-1"},
    }


def encounter() -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": ACT_CODE, "code": "AMB"},
        "subject": {"reference": "Patient/synthetic-1"},
    }


def sdk(net: HealthNet, key: Path) -> PatientClient:
    return PatientClient(net["clinic"].url, load_identity(key, PASSPHRASE.encode()))


def all_events(institution: Institution) -> list[dict[str, Any]]:
    """Every event visible to `institution` up to the latest height, page by page."""
    height = int(request(institution.url, "GET", "/status", headers=institution.auth).json()["height"])
    events: list[dict[str, Any]] = []
    after = 0
    while get_seq_height(after) < height:
        reply = institution.get(f"/v1/events?after={after}&limit=100")
        assert reply.status == 200, reply
        page, after = reply.json()["events"], reply.json()["next"]
        events.extend(e for e in page if e["height"] <= height)
    return events


# --- 1. a correction escapes the labels ------------------------------------------------------------


def test_a_correction_adding_hiv_is_labelled_and_not_sealed_for_the_insurer(
    net: HealthNet, patient: tuple[Path, str]
) -> None:
    key, patient_id = patient
    clinic, insurer = net["clinic"], net["insurer"]
    diagnosis = add(clinic, patient_id, condition("http://snomed.info/sct", "38341003"))  # hypertension
    assert (diagnosis["readers"], diagnosis["security_labels"]) == (3, [])
    net.sync()
    assert insurer.read(diagnosis["record_id"]).status == 200  # covered by the consent
    patient_cli(key, clinic.url, "amend", diagnosis["record_id"][:16], "--text", "it is HIV disease")
    net.sync()
    (asked,) = [
        a
        for a in clinic.get("/v1/health/institution/amendments?status=open").json()["amendments"]
        if a["record_id"] == diagnosis["record_id"]
    ]
    accepted = clinic.post(
        f"/v1/health/institution/amendments/{asked['amendment_id']}/accept",
        {"resource": condition("http://hl7.org/fhir/sid/icd-10-cm", "B20")},  # HIV disease, no meta
    )
    assert accepted.status == 201, accepted
    assert accepted.json()["security_labels"] == ["HIV"]
    correction = accepted.json()["record_id"]
    net.sync()
    read = clinic.read(correction).json()
    assert read["readers"] == 2  # the patient and the clinic: not the insurer
    problem = assert_problem(insurer.read(correction), 403)
    assert problem["type"].endswith("no_grant")
    ledger = sdk(net, key).sync()
    assert ledger.get_record_labels(bytes.fromhex(correction)) == ("HIV",)


# --- 2. labelled records with attachments ---------------------------------------------------------


def test_a_labelled_document_is_accepted_labelled_and_read_exactly_by_its_readers(
    net: HealthNet, patient: tuple[Path, str]
) -> None:
    key, patient_id = patient
    clinic, insurer, hospital = net["clinic"], net["insurer"], net["hospital"]
    documents = {}
    for name, security in (("plain", []), ("labelled", [{"system": ACT_CODE, "code": "PSY"}])):
        pdf = make_pdf(4096)
        uploaded = upload(clinic, pdf)
        assert uploaded.status == 201, uploaded
        blob = uploaded.json()
        resource: dict[str, Any] = {
            "resourceType": "DocumentReference",
            "status": "current",
            "subject": {"reference": "Patient/synthetic-1"},
            "content": [{"attachment": {"contentType": "application/pdf", "url": blob["url"]}}],
        }
        if security:
            resource["meta"] = {"security": security}
        answer = add(clinic, patient_id, resource)
        documents[name] = (answer, blob["blob_id"], pdf)
    net.sync()
    plain, plain_blob, plain_pdf = documents["plain"]
    labelled, labelled_blob, labelled_pdf = documents["labelled"]
    assert (plain["readers"], plain["security_labels"]) == (3, [])
    assert (labelled["readers"], labelled["security_labels"]) == (2, ["PSY"])
    assert download(insurer, plain["record_id"], plain_blob).body == plain_pdf  # under the consent
    assert download(clinic, labelled["record_id"], labelled_blob).body == labelled_pdf
    for outsider in (insurer, hospital):
        assert_problem(download(outsider, labelled["record_id"], labelled_blob), 403)
    client = sdk(net, key)
    record_id = bytes.fromhex(labelled["record_id"])
    assert client.sync().get_record_labels(record_id) == ("PSY",)
    assert client.read_attachment(record_id, bytes.fromhex(labelled_blob)) == labelled_pdf


# --- 3 and 4. events to their audience; claims answered as submitted -------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class DecidedClaim:
    key: Path
    claim_id: str
    consent_id: str
    read_body: bytes  # the insurer's answer reading the claim's lab record


@pytest.fixture
def decided(net: HealthNet, patient: tuple[Path, str]) -> DecidedClaim:
    """A claim filed (as text with `100.10` and `1e2`), one of its records (`6.30`) read by the
    insurer under the consent, and approved with a ClaimResponse as text."""
    key, patient_id = patient
    clinic, insurer = net["clinic"], net["insurer"]
    visit = add(clinic, patient_id, encounter())
    lab = post_text(
        clinic,
        "/v1/health/institution/records",
        f'{{"patient_id": "{patient_id}", "resource": {RECORD_TEXT}}}',
    )
    assert lab.status == 201, lab
    lab_id = lab.json()["record_id"]
    net.sync()
    institutions = clinic.get("/v1/health/institutions").json()["institutions"]
    (insurer_key,) = [i["sign_key"] for i in institutions if i["name"] == "insurer"]
    record_ids = json.dumps(sorted([visit["record_id"], lab_id]))
    filed = post_text(
        clinic,
        "/v1/health/institution/claims",
        f'{{"patient_id": "{patient_id}", "insurer": "{insurer_key}", '
        f'"encounter_id": "{visit["record_id"]}", "record_ids": {record_ids}, "claim": {CLAIM_TEXT}}}',
    )
    assert filed.status == 201, filed
    claim_id = filed.json()["claim_id"]
    net.sync()
    read = insurer.get(f"/v1/health/institution/claims/{claim_id}/records/{lab_id}")
    assert read.status == 200, read
    decision = post_text(
        insurer,
        f"/v1/health/institution/claims/{claim_id}/decision",
        f'{{"version": 1, "outcome": "approved", "response": {RESPONSE_TEXT}}}',
    )
    assert decision.status == 201, decision
    net.sync()
    return DecidedClaim(key, claim_id, read.json()["receipt"]["grant_id"], read.body)


# --- 3. events to their audience -------------------------------------------------------------------


def test_claim_events_reach_exactly_their_audience(net: HealthNet, decided: DecidedClaim) -> None:
    clinic, insurer, hospital = net["clinic"], net["insurer"], net["hospital"]

    def kinds(institution: Institution) -> list[str]:
        return [e["kind"] for e in all_events(institution) if e.get("claim_id") == decided.claim_id]

    def grant_ids(institution: Institution) -> set[str]:
        return {e["grant_id"] for e in all_events(institution) if "grant_id" in e}

    # The insurer: its claim, its own reads under the consent, its decision.
    assert kinds(insurer) == ["claim.filed", "record.read", "claim.read", "claim.decided"]
    assert decided.consent_id in grant_ids(insurer)
    # The filing clinic: what it did and what was addressed to it (the filing, the decision), not
    # the insurer's reads under the patient's consent, nor that consent's grant id.
    assert kinds(clinic) == ["claim.filed", "claim.decided"]
    assert decided.consent_id not in grant_ids(clinic)
    # A third institution: nothing of either.
    assert kinds(hospital) == []
    assert decided.consent_id not in grant_ids(hospital)
    # The patient sees every step.
    client, height, after, page = sdk(net, decided.key), max(net.heights()), 0, []
    while get_seq_height(after) < height:
        events, after = client.list_events(after, 100)
        page.extend(events)
    mine = [e["kind"] for e in page if e.get("claim_id") == decided.claim_id]
    assert mine == ["claim.filed", "record.read", "claim.read", "claim.decided"]


# --- 4. claims answered as submitted ---------------------------------------------------------------


def test_claims_and_their_records_are_answered_byte_for_byte(net: HealthNet, decided: DecidedClaim) -> None:
    clinic, insurer = net["clinic"], net["insurer"]
    assert RECORD_TEXT.encode() in decided.read_body  # the supporting record, as its author wrote it
    for party in (insurer, clinic):
        listed = party.get("/v1/health/institution/claims")
        assert listed.status == 200, listed
        assert CLAIM_TEXT.encode() in listed.body, party.name
        assert RESPONSE_TEXT.encode() in listed.body, party.name
        (seen,) = [c for c in listed.json()["claims"] if c["claim_id"] == decided.claim_id]
        assert seen["claim"]["item"][0]["net"]["value"] == 100.1  # still JSON any client parses
    (view,) = [v for v in sdk(net, decided.key).claim_views() if v.claim.claim_id.hex() == decided.claim_id]
    assert view.claim_text == CLAIM_TEXT.encode()
    assert view.response_texts == (RESPONSE_TEXT.encode(),)
    shown = patient_cli(decided.key, clinic.url, "claims", "--json")
    assert CLAIM_TEXT in shown
    assert RESPONSE_TEXT in shown
    (row,) = [r for r in json.loads(shown) if r["claim_id"] == decided.claim_id]
    assert row["decisions"][0]["response"]["outcome"] == "complete"


# --- 5. a consent covers the records already in its window ----------------------------------------


def test_a_consent_shares_the_records_already_in_its_window_as_shown(net: HealthNet, tmp_path: Path) -> None:
    clinic, insurer, hospital = net["clinic"], net["insurer"], net["hospital"]
    key = tmp_path / "patient.key"
    identity = make_patient_key(key)
    patient_id = compute_patient_id(identity.public.sign_key).hex()
    patient_cli(key, clinic.url, "register")
    net.sync()
    vitals = add(clinic, patient_id, observation(5.9))
    visit = add(clinic, patient_id, encounter())
    hiv = add(clinic, patient_id, condition("http://hl7.org/fhir/sid/icd-10", "B20"))
    elsewhere = add(hospital, patient_id, observation(6.0))
    assert [r["readers"] for r in (vitals, visit, hiv, elsewhere)] == [2, 2, 2, 2]
    net.sync()
    grant = ["consent", "grant", "insurer", "--author", "clinic", "--yes"]
    types = ["--type", "Observation", "--type", "Encounter", "--type", "Condition"]
    shown = patient_cli(key, clinic.url, *grant, *types)
    # The preview says how many existing records it shares: not the labelled one, not the hospital's.
    assert "Records already on the ledger: 2 of this scope are shared too" in shown
    assert "re-sealed 2 record(s) already on the ledger for insurer" in shown
    net.sync()
    for record in (vitals, visit):
        read = insurer.read(record["record_id"])
        assert read.status == 200, read
        assert read.json()["receipt"] is not None  # read under the consent, receipted
    for record in (hiv, elsewhere):
        assert_problem(insurer.read(record["record_id"]), 403)
    # Which records were shared is on the patient's verified audit trail.
    trail = sdk(net, key).sync().list_audit_events()
    (part,) = [e for e in trail if e.event == "grant_part"]
    assert sorted(r.hex() for r in part.record_ids) == sorted([vitals["record_id"], visit["record_id"]])
    # --new-only shares nothing already written, and says so.
    other = patient_cli(key, clinic.url, *grant, "--type", "Observation", "--new-only")
    assert "Records already on the ledger: none are shared (--new-only)." in other
    assert "re-sealed" not in other
