"""Client mistakes on a real health network get 4xx problem+json and change nothing that matters.

Malformed FHIR, unknown patients, forged patient signatures, oversized records, missing or wrong
institution tokens, roles that may not author or ask for a purpose: each is refused with the
documented status and an RFC 9457 body.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from health_harness import (
    OBSERVATION,
    HealthNet,
    assert_problem,
    make_patient_key,
    observation,
    request,
)

from medledger.chain.codec import encode
from medledger.crypto import Identity
from medledger.health.client import build_deny, build_grant
from medledger.health.fhir import RECORD_JSON_BYTES_MAX
from medledger.health.sdk import PatientClient, PatientClientError

UNKNOWN_PATIENT = "ab" * 32


@pytest.fixture(scope="module")
def patient(shared_net: HealthNet, tmp_path_factory: pytest.TempPathFactory) -> PatientClient:
    identity = make_patient_key(tmp_path_factory.mktemp("patient") / "patient.key")
    client = PatientClient(shared_net["clinic"].url, identity)
    client.register()
    shared_net.sync()
    return client


def test_invalid_token_is_401(shared_net: HealthNet) -> None:
    clinic = shared_net["clinic"]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {clinic.token}"}):
        reply = request(clinic.url, "GET", "/v1/health/institution", headers=headers)
        assert assert_problem(reply, 401)["type"] == "urn:medledger:problem:unauthorized"
    assert clinic.get("/v1/health/institution").json()["role"] == "clinic"
    # The other node's token does not open this one.
    other = {"Authorization": f"Bearer {shared_net['insurer'].token}"}
    assert_problem(request(clinic.url, "GET", "/v1/health/institution", headers=other), 401)


def test_invalid_fhir_is_422(shared_net: HealthNet, patient: PatientClient) -> None:
    clinic = shared_net["clinic"]
    pid = patient.patient_id.hex()
    bad: list[Any] = [
        {k: v for k, v in OBSERVATION.items() if k != "status"},  # a required element missing
        {**OBSERVATION, "status": "guessed"},  # a code outside its value set
        {"resourceType": "Group", "type": "person", "actual": True},  # not a record type
        {**OBSERVATION, "valueQuantity": "high"},
    ]
    for resource in bad:
        reply = clinic.post("/v1/health/institution/records", {"patient_id": pid, "resource": resource})
        assert_problem(reply, 422)
    assert_problem(clinic.post("/v1/health/institution/records", {"patient_id": pid, "resource": []}), 400)
    assert patient.list_records() == []


def test_invalid_requests_are_400_or_415(shared_net: HealthNet, patient: PatientClient) -> None:
    clinic = shared_net["clinic"]
    pid = patient.patient_id.hex()
    path = "/v1/health/institution/records"
    cases = [
        (b"{", "application/json", 400),
        (b"[]", "application/json", 400),
        (json.dumps({"patient_id": pid}).encode(), "application/json", 400),
        (json.dumps({"patient_id": pid, "resource": OBSERVATION, "x": 1}).encode(), "application/json", 400),
        (json.dumps({"patient_id": "zz", "resource": OBSERVATION}).encode(), "application/json", 400),
        (json.dumps({"patient_id": pid, "resource": OBSERVATION}).encode(), "text/plain", 415),
    ]
    for body, content_type, status in cases:
        headers = {**clinic.auth, "Content-Type": content_type}
        assert_problem(request(clinic.url, "POST", path, body=body, headers=headers), status)
    assert_problem(clinic.get("/v1/health/institution/records"), 400)  # patient_id missing
    assert_problem(clinic.get("/v1/health/institution/records/not-hex"), 400)
    assert_problem(clinic.get(f"/v1/health/patients/{pid}/records?limit=0"), 400)
    assert_problem(clinic.get(f"/v1/health/patients/{pid}/inquiries?status=maybe"), 400)
    inquiry = {"patient_id": pid, "purpose": "TREAT", "reason": "x" * 201}
    assert_problem(clinic.post("/v1/health/institution/inquiries", inquiry), 400)
    assert_problem(
        clinic.post("/v1/health/institution/inquiries", {**inquiry, "reason": "r", "ttl_ms": 1}), 400
    )


def test_unknown_patient_is_404(shared_net: HealthNet) -> None:
    clinic = shared_net["clinic"]
    body = {"patient_id": UNKNOWN_PATIENT, "resource": OBSERVATION}
    assert_problem(clinic.post("/v1/health/institution/records", body), 404)
    inquiry = {"patient_id": UNKNOWN_PATIENT, "purpose": "TREAT", "reason": "visit"}
    assert_problem(clinic.post("/v1/health/institution/inquiries", inquiry), 404)
    for suffix in ("", "/records", "/inquiries", "/grants", "/audit"):
        assert_problem(clinic.get(f"/v1/health/patients/{UNKNOWN_PATIENT}{suffix}"), 404)
    for route in ("records", "inquiries", "audit"):
        assert_problem(clinic.get(f"/v1/health/institution/{route}?patient_id={UNKNOWN_PATIENT}"), 404)
    assert_problem(clinic.read("cd" * 32), 404)


def test_oversized_records_are_413(shared_net: HealthNet, patient: PatientClient) -> None:
    clinic = shared_net["clinic"]
    pid = patient.patient_id.hex()
    # Just over the record limit, but inside the request limit: the record itself is refused.
    note = "n" * (RECORD_JSON_BYTES_MAX - 64)
    big = {**OBSERVATION, "note": [{"text": note}]}
    reply = clinic.post("/v1/health/institution/records", {"patient_id": pid, "resource": big})
    assert_problem(reply, 413)
    # Far over: refused before the body is read.
    huge = {**OBSERVATION, "note": [{"text": "n" * (4 * RECORD_JSON_BYTES_MAX)}]}
    assert_problem(clinic.post("/v1/health/institution/records", {"patient_id": pid, "resource": huge}), 413)
    assert patient.list_records() == []


def test_invalid_roles_are_refused(shared_net: HealthNet, patient: PatientClient) -> None:
    insurer = shared_net["insurer"]
    pid = patient.patient_id.hex()
    reply = insurer.post("/v1/health/institution/records", {"patient_id": pid, "resource": observation(5.0)})
    assert_problem(reply, 403)
    treat = {"patient_id": pid, "purpose": "TREAT", "reason": "claim"}
    assert (
        assert_problem(insurer.post("/v1/health/institution/inquiries", treat), 422)["rule"]
        == "health.purpose"
    )


def _post_tx(url: str, raw: bytes) -> Any:
    body = json.dumps({"tx": base64.b64encode(raw).decode()}).encode()
    return request(
        url, "POST", "/v1/txs?wait_ms=5000", body=body, headers={"Content-Type": "application/json"}
    )


def test_forged_patient_signatures_are_422(
    shared_net: HealthNet, patient: PatientClient, tmp_path: Path
) -> None:
    clinic, insurer = shared_net["clinic"], shared_net["insurer"]
    pid = patient.patient_id.hex()
    inquiry_id = insurer.inquire(pid, "HPAYMT", ["Observation"])
    shared_net.sync()
    chain_id = patient.chain_id
    # A grant with the patient as sender but a signature that is not the patient's.
    tx, _, _ = build_grant(patient.identity, bytes.fromhex(inquiry_id), [], chain_id=chain_id)
    forged = dataclasses.replace(tx, signature=Identity.generate().sign(b"anything"))
    assert_problem(_post_tx(clinic.url, encode(forged)), 422)
    # A deny validly signed by someone who is neither the patient nor a representative.
    _, raw, _ = build_deny(Identity.generate(), bytes.fromhex(inquiry_id), chain_id=chain_id)
    assert assert_problem(_post_tx(clinic.url, raw), 422)["rule"] == "health.not_authorised"
    # The same through the SDK with a stranger's key acting "for" the patient: the node does not
    # even serve it the patient's data to check before signing (403), so nothing is signed.
    stranger = PatientClient(clinic.url, Identity.generate(), patient_id=patient.patient_id)
    with pytest.raises(PatientClientError) as caught:
        stranger.deny(bytes.fromhex(inquiry_id))
    assert caught.value.status == 403
    assert [i.status for i in patient.list_inquiries()] == ["open"]
    assert [e.event for e in patient.audit()] == ["inquiry"]
