"""Attacks on what issue 14 added, through the real API of real node processes.

A hostile (or careless) institution's integration engine and a curious grantee try the new routes.
Each test asserts the attack fails with a 4xx problem and changes nothing. Attacks that succeeded
before their fix:

- **Deep nesting was a 500.** A record whose JSON nests 450 or 900 levels made the strict JSON
  checker recurse past the interpreter's limit (`POST /v1/health/institution/records`, and an
  amendment's correction): now a 422 like any record nesting deeper than 32.
- **An integer too large for a double** (400 digits) was accepted as a record, although readers
  that hold numbers as doubles see infinity: now a 422.
- **One upload cited for two patients.** A blob uploaded once could be cited by records of several
  patients: the node sealed its key into each, so the second patient (and everyone they grant)
  read the first patient's letter. An upload now belongs to the patient of the first record
  citing it (422 `invalid_attachment` for another).
- **The submitted text was lost on two new routes.** A bulk read (`POST
  /v1/health/institution/reads`) and an accepted amendment re-serialised the record, so `6.30`
  came back as `6.3` (defect 4 again): both keep the text as submitted now.
- **Upload keys lay in the clear** beside the blobs in the node's home (`blobs/keys/`): a copy of
  the home without the node key's passphrase opened every attachment uploaded there. They are
  sealed to the node's own key now, as record keys are.
- Downloads name the author's content type; they now also say `nosniff` and `attachment`, so a
  browser never renders a hostile author's `text/html` as a page.

Attacks that failed already, kept so they keep failing: bulk reads of one record outside the grant
(403, nothing read or receipted), of another patient's record (404), after revocation (403); an
attachment asked under a granted record it does not belong to (404) or of an ungranted record
(403, no receipt); malformed blob ids in the path (400/404); closing a records request addressed
to another institution, answering an amendment of another author's record (API and signed txs),
closing with a record another institution wrote.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from health_harness import (
    OBSERVATION,
    PASSPHRASE,
    HealthNet,
    Institution,
    Reply,
    assert_problem,
    make_patient_key,
    request,
    start_health_net,
)

from medledger.crypto import Identity, load_identity
from medledger.health.blobs import BLOB_KEY_SIZE, BlobDecryptionError, decrypt_chunk
from medledger.health.rights_seal import build_close_records_request, build_refuse_amendment
from medledger.health.sdk import PatientClient
from medledger.health.types import EVENT_READ, compute_patient_id

ROLES: Final = {"clinic": "clinic", "hospital": "hospital", "insurer": "insurer"}
#: An Observation whose value's precision matters (FHIR: `6.30` is not `6.3`), as a client wrote it.
OBSERVATION_TEXT: Final = (
    '{"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": '
    '"http://loinc.org", "code": "2339-0"}]}, "valueQuantity": {"value": 6.30, "unit": "mmol/L"}}'
)
CONDITION: Final[dict[str, Any]] = {
    "resourceType": "Condition",
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
    "subject": {"reference": "Patient/synthetic-1"},
}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HealthNet]:
    with start_health_net(tmp_path_factory.mktemp("attacks") / "net", ROLES) as started:
        yield started


def _patient(net: HealthNet, key: Path) -> tuple[PatientClient, str]:
    identity: Identity = make_patient_key(key)
    client = PatientClient(net["clinic"].url, identity)
    client.register()
    net.sync()
    return client, compute_patient_id(identity.public.sign_key).hex()


def _post_text(
    institution: Institution, path: str, text: str, headers: dict[str, str] | None = None
) -> Reply:
    all_headers = {**institution.auth, "Content-Type": "application/json", **(headers or {})}
    return request(institution.url, "POST", path, body=text.encode(), headers=all_headers)


def _add_text(institution: Institution, patient_id: str, resource_text: str) -> Reply:
    body = f'{{"patient_id": "{patient_id}", "resource": {resource_text}}}'
    return _post_text(institution, "/v1/health/institution/records", body)


def _record_ids(institution: Institution, patient_id: str) -> list[str]:
    reply = institution.get(f"/v1/health/institution/records?patient_id={patient_id}&limit=1000")
    assert reply.status == 200, reply
    return [str(r["record_id"]) for r in reply.json()["records"]]


def _reads(patient: PatientClient) -> int:
    return sum(len(e.record_ids) for e in patient.audit() if e.event == EVENT_READ)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_invalid_deep_nesting_and_huge_numbers_are_422_and_corrections_keep_their_text(
    net: HealthNet, tmp_path: Path
) -> None:
    clinic = net["clinic"]
    patient, patient_id = _patient(net, tmp_path / "patient.key")
    created = _add_text(clinic, patient_id, OBSERVATION_TEXT)
    assert created.status == 201, created
    record_id = created.json()["record_id"]
    before = _record_ids(clinic, patient_id)

    nested = [
        OBSERVATION_TEXT[:-1] + f', "extension": {_nested(450)}}}',
        OBSERVATION_TEXT[:-1] + f', "extension": {_nested(900)}}}',
    ]
    huge = OBSERVATION_TEXT.replace("6.30", "9" * 400)
    for text in nested:  # was a 500
        problem = assert_problem(_add_text(clinic, patient_id, text), 422)
        assert problem["type"].endswith("invalid_record"), problem
    # Not JSON any reader can hold, in the body already (as NaN or 1e400 are): was a 201.
    assert "too large" in assert_problem(_add_text(clinic, patient_id, huge), 400)["detail"]
    assert _record_ids(clinic, patient_id) == before

    # An amendment's correction: the same checks, and the text as submitted.
    patient.request_amendment(bytes.fromhex(record_id), "the value is 6.40, not 6.30")
    (amendment,) = clinic.get("/v1/health/institution/amendments?status=open").json()["amendments"]
    accept = f"/v1/health/institution/amendments/{amendment['amendment_id']}/accept"
    for text in nested:
        reply = _post_text(clinic, accept, f'{{"resource": {text}}}')
        # 422 as a record; one level more (the body's) may reach the parser's limit: then a 400.
        assert_problem(reply, 400 if reply.status == 400 else 422)
    assert_problem(_post_text(clinic, accept, f'{{"resource": {huge}}}'), 400)
    assert_problem(_post_text(clinic, accept, f'{{"resource": {_nested(2000)}}}'), 400)
    assert clinic.get("/v1/health/institution/amendments?status=open").json()["amendments"]
    corrected = OBSERVATION_TEXT.replace("6.30", "6.40")
    answer = _post_text(clinic, accept, f'{{"resource": {corrected}}}')
    assert answer.status == 201, answer
    read = clinic.read(answer.json()["record_id"])
    assert read.status == 200, read
    assert corrected.encode() in read.body  # not re-serialised: 6.40 stays 6.40, spacing and all
    assert not clinic.get("/v1/health/institution/amendments?status=open").json()["amendments"]


def test_invalid_bulk_reads_outside_a_grant_and_bulk_reads_keep_the_submitted_text(
    net: HealthNet, tmp_path: Path
) -> None:
    clinic, hospital = net["clinic"], net["hospital"]
    patient, patient_id = _patient(net, tmp_path / "patient.key")
    _, other_id = _patient(net, tmp_path / "other.key")
    observation = _add_text(clinic, patient_id, OBSERVATION_TEXT).json()["record_id"]
    condition = clinic.add_record(patient_id, CONDITION)
    strangers = clinic.add_record(other_id, OBSERVATION)
    inquiry = hospital.inquire(patient_id, "TREAT", ["Observation"])
    net.sync()
    granted = patient.grant(bytes.fromhex(inquiry))
    net.sync()
    reads = "/v1/health/institution/reads"

    one = hospital.post(reads, {"patient_id": patient_id, "record_ids": [observation, observation.upper()]})
    assert one.status == 200, one
    assert OBSERVATION_TEXT.encode() in one.body  # the exact text, as the one-record read gives it
    (receipt,) = one.json()["receipts"]
    assert receipt["record_count"] == 1  # one id twice (in either case) is read and receipted once
    net.sync()
    receipted = _reads(patient)

    refused = hospital.post(reads, {"patient_id": patient_id, "record_ids": [observation, condition]})
    assert "records" not in assert_problem(refused, 403)  # all or nothing
    other = hospital.post(reads, {"patient_id": patient_id, "record_ids": [observation, strangers]})
    assert_problem(other, 404)  # another patient's record under this patient's id
    forged_patient = hospital.post(reads, {"patient_id": other_id, "record_ids": [strangers]})
    assert_problem(forged_patient, 403)  # no grant of that patient covers it
    patient.revoke(granted.tx_id)
    net.sync()
    assert_problem(hospital.post(reads, {"patient_id": patient_id, "record_ids": [observation]}), 403)
    assert_problem(hospital.read(observation), 403)
    net.sync()
    assert _reads(patient) == receipted  # nothing refused was receipted


def _upload(institution: Institution, data: bytes) -> dict[str, Any]:
    headers = {**institution.auth, "Content-Type": "application/octet-stream"}
    reply = request(institution.url, "POST", "/v1/health/institution/blobs", body=data, headers=headers)
    assert reply.status == 201, reply
    answer: dict[str, Any] = reply.json()
    return answer


def _document(url: str, size: int, content_type: str = "application/pdf") -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "subject": {"reference": "Patient/synthetic-1"},
        "content": [{"attachment": {"contentType": content_type, "url": url, "size": size}}],
    }


def _download(institution: Institution, record_id: str, blob_id: str) -> tuple[Reply, dict[str, str]]:
    parsed = urllib.parse.urlsplit(institution.url)
    assert parsed.port is not None
    connection = http.client.HTTPConnection("127.0.0.1", parsed.port, timeout=60)
    try:
        path = f"/v1/health/institution/records/{record_id}/attachments/{blob_id}"
        connection.request("GET", path, headers=institution.auth)
        response = connection.getresponse()
        body = response.read()
        content_type = (response.getheader("Content-Type") or "").split(";", 1)[0].strip()
        return Reply(response.status, content_type, body), dict(response.getheaders())
    finally:
        connection.close()


def test_invalid_attachment_reuse_across_patients_records_and_paths(net: HealthNet, tmp_path: Path) -> None:
    clinic, hospital = net["clinic"], net["hospital"]
    patient, patient_id = _patient(net, tmp_path / "patient.key")
    other, other_id = _patient(net, tmp_path / "other.key")
    letter = b"%PDF-1.7\n% synthetic letter of patient one\n" + secrets.token_bytes(4000)
    blob = _upload(clinic, letter)
    document = _document(blob["url"], len(letter))
    record = clinic.add_record(patient_id, document)

    # The same upload cited for another patient: refused, nothing written for them.
    reply = clinic.post("/v1/health/institution/records", {"patient_id": other_id, "resource": document})
    assert assert_problem(reply, 422)["type"].endswith("invalid_attachment")
    assert _record_ids(clinic, other_id) == []
    assert other.list_records() == []
    # At rest, the upload's key is sealed to the node: its home without the node key's passphrase
    # (a backup, a stolen disk) holds the encrypted letter and its key side by side, and no part
    # of the key file opens it.
    staged = (clinic.home / "blobs" / "keys" / blob["blob_id"]).read_bytes()
    sealed_letter = (clinic.home / "blobs" / f"{blob['blob_id']}.blob").read_bytes()
    assert blob["chunks"] == 1
    for start in range(len(staged) - BLOB_KEY_SIZE + 1):
        with pytest.raises(BlobDecryptionError):
            decrypt_chunk(staged[start : start + BLOB_KEY_SIZE], 0, sealed_letter, last=True)
    # The patient's own records may cite it again (e.g. a second document on the same letter).
    again = clinic.add_record(patient_id, {**document, "description": "copy for the file"})
    net.sync()
    assert patient.read_attachment(bytes.fromhex(again), bytes.fromhex(blob["blob_id"])) == letter

    # A hostile author's content type is never a page in a browser.
    markup = b"<html><script>synthetic()</script></html>"
    page = _upload(clinic, markup)
    html = clinic.add_record(patient_id, _document(page["url"], len(markup), "text/html"))
    answer, headers = _download(clinic, html, page["blob_id"])
    assert answer.status == 200, answer
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Content-Disposition"] == "attachment"

    # A grantee of the Observations: not the document, nor its blob through a granted record.
    observation = _add_text(clinic, patient_id, OBSERVATION_TEXT).json()["record_id"]
    inquiry = hospital.inquire(patient_id, "TREAT", ["Observation"])
    net.sync()
    patient.grant(bytes.fromhex(inquiry))
    net.sync()
    receipted = _reads(patient)
    refused, _ = _download(hospital, record, blob["blob_id"])
    assert_problem(refused, 403)
    moved, _ = _download(hospital, observation, blob["blob_id"])
    assert_problem(moved, 404)
    for bad in ("..%2F..%2Fnode_key.json", "%2E%2E", blob["blob_id"][:-1] + "g", "0" * 65):
        malformed, _ = _download(hospital, observation, bad)
        assert malformed.status in (400, 404), malformed
        assert malformed.content_type == "application/problem+json", malformed
    net.sync()
    assert _reads(patient) == receipted
    assert json.loads(hospital.read(observation).body)["receipt"] is not None  # the grant itself works


def _submit_signed(institution: Institution, raw: bytes) -> Reply:
    body = json.dumps({"tx": base64.b64encode(raw).decode()})
    return _post_text(institution, "/v1/txs?wait_ms=5000", body)


def test_invalid_rights_answers_by_an_institution_not_asked_or_not_the_author(
    net: HealthNet, tmp_path: Path
) -> None:
    """The hospital tries to close the clinic's records request and to answer an amendment of the
    clinic's record, through its API and with transactions its node key signs; the clinic tries to
    close a request citing a record it did not write. Every one is refused, nothing changes."""
    clinic, hospital = net["clinic"], net["hospital"]
    patient, patient_id = _patient(net, tmp_path / "patient.key")
    clinic_key = bytes.fromhex(clinic.get("/v1/health/institution").json()["sign_key"])
    record = _add_text(clinic, patient_id, OBSERVATION_TEXT).json()["record_id"]
    hospitals_record = hospital.add_record(patient_id, CONDITION)
    patient.request_records(clinic_key)
    patient.request_amendment(bytes.fromhex(record), "the value is wrong")
    net.sync()
    (records_request,) = patient.list_records_requests()
    (amendment,) = patient.list_amendments()
    request_id, amendment_id = records_request.request_id.hex(), amendment.amendment_id.hex()
    hospital_identity = load_identity(hospital.home / "node_key.json", PASSPHRASE.encode())
    chain_id = patient.chain_id

    close = f"/v1/health/institution/records-requests/{request_id}/close"
    assert assert_problem(hospital.post(close, {}), 403)["type"].endswith("not_addressee")
    _, raw, _ = build_close_records_request(hospital_identity, records_request.request_id, chain_id=chain_id)
    assert assert_problem(_submit_signed(hospital, raw), 422)["rule"] == "health.not_addressee"
    cited = clinic.post(close, {"record_ids": [hospitals_record]})
    assert assert_problem(cited, 422)["rule"] == "health.records_request_records"

    answer = f"/v1/health/institution/amendments/{amendment_id}"
    refused = hospital.post(answer + "/refuse", {"reason": "no"})
    assert assert_problem(refused, 403)["type"].endswith("not_author")
    accepted = _post_text(hospital, answer + "/accept", f'{{"resource": {OBSERVATION_TEXT}}}')
    assert assert_problem(accepted, 403)["type"].endswith("not_author")
    _, raw, _ = build_refuse_amendment(
        hospital_identity, amendment, "no", patient_enc_key=patient.identity.public.enc_key, chain_id=chain_id
    )
    assert assert_problem(_submit_signed(hospital, raw), 422)["rule"] == "health.not_author"
    assert hospital.get("/v1/health/institution/amendments").json()["amendments"] == []
    assert hospital.get("/v1/health/institution/records-requests").json()["requests"] == []

    net.sync()
    (still_open,) = patient.list_records_requests()
    (unanswered,) = patient.list_amendments()
    assert (still_open.status, unanswered.status) == ("open", "open")
    assert clinic.post(close, {"record_ids": [record]}).status == 201  # the addressee may


def test_invalid_idempotency_keys_replay_nothing_across_patients(net: HealthNet, tmp_path: Path) -> None:
    """A retry handle is one request's: the same key and the very same record bytes for another
    patient is a new request, refused (422), not the first patient's answer; a key that is not
    visible ASCII (a byte above 0x7f) is a 400 before anything is read."""
    clinic = net["clinic"]
    _, patient_id = _patient(net, tmp_path / "patient.key")
    other, other_id = _patient(net, tmp_path / "other.key")
    key = {"Idempotency-Key": f"retry-{secrets.token_hex(8)}"}
    records = "/v1/health/institution/records"
    first = _post_text(
        clinic, records, f'{{"patient_id": "{patient_id}", "resource": {OBSERVATION_TEXT}}}', key
    )
    assert first.status == 201, first
    replayed = _post_text(
        clinic, records, f'{{"patient_id": "{other_id}", "resource": {OBSERVATION_TEXT}}}', key
    )
    assert assert_problem(replayed, 422)["type"].endswith("idempotency_key_reused")
    assert patient_id not in replayed.body.decode()  # nothing of the first answer is shown
    assert first.json()["record_id"] not in replayed.body.decode()
    for bad in ("caf\u00e9", "tab\there"):
        body = f'{{"patient_id": "{other_id}", "resource": {OBSERVATION_TEXT}}}'
        assert_problem(_post_text(clinic, records, body, {"Idempotency-Key": bad}), 400)
    net.sync()
    assert other.list_records() == []
