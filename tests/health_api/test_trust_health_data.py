"""Issue 9 [TRUST], defects 6, 8 and 10, on real node processes through the real institution API.

- 6: a hospital that was sealed into a clinic's record re-publishes its ciphertext and commitment
  as its own record (signed with the hospital's own node key): the ledger refuses it, and the
  patient's client sees only the clinic's record.
- 8: identifiers (a name, a date of birth, an MRN, a diagnosis) fed as element names, values, ids
  and resource types, at the top level, nested and inside bundles, and as request fields: none
  comes back in a response body or appears in either node's log.
- 10: an inquiry's free-text reason is not in the clear anywhere on the ledger (blocks, public
  patient routes, either node's log); the patient's client and the requesting institution read it.
"""

from __future__ import annotations

import base64
import json
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
    observation,
    patient_cli,
    request,
)

from medledger.chain.codec import decode
from medledger.chain.limits import API_BLOCK_RANGE_MAX
from medledger.crypto import Identity, load_identity
from medledger.health import client
from medledger.health.sdk import PatientClient
from medledger.health.types import (
    KIND_ADD_RECORD,
    KIND_REGISTER_PATIENT,
    STATE_VALUE_BYTES_MAX,
    AddRecordBody,
    RecordState,
    RegisterPatientBody,
    compute_patient_id,
)
from medledger.node.home import KEY_FILE

#: Synthetic identifiers (no real person) a client might put anywhere in a request.
PHI: Final = ("Jane Q. Doe", "1980-01-02", "MRN-4417-93", "HIV+")
PHI_TEXT: Final = " ".join(PHI)
RECORDS_PATH: Final = "/v1/health/institution/records"
INQUIRIES_PATH: Final = "/v1/health/institution/inquiries"


def node_logs(net: HealthNet) -> str:
    return "".join(
        (i.home / "node.log").read_text(encoding="utf-8", errors="replace") for i in net.institutions.values()
    )


def assert_no_phi(where: str, text: str | bytes) -> None:
    shown = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else text
    for identifier in PHI:
        assert identifier not in shown, f"{identifier!r} in {where}"


@pytest.fixture(scope="module")
def patient(shared_net: HealthNet, tmp_path_factory: pytest.TempPathFactory) -> PatientClient:
    identity = make_patient_key(tmp_path_factory.mktemp("trust-patient") / "patient.key")
    sdk = PatientClient(shared_net["clinic"].url, identity)
    sdk.register()
    shared_net.sync()
    return sdk


def bad_records() -> Iterator[dict[str, Any]]:
    """Records carrying the identifiers in every place a client controls."""
    condition: dict[str, Any] = {
        "resourceType": "Condition",
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
        "subject": {"reference": "Patient/synthetic-1"},
    }
    yield {**condition, PHI_TEXT: "x"}  # an element name
    yield {**condition, "recordedDate": PHI_TEXT}  # a value of the wrong format
    yield {**condition, "id": PHI_TEXT}  # an id
    yield {**condition, "clinicalStatus": {"coding": [{PHI_TEXT: PHI_TEXT}]}}  # nested element name
    yield {**condition, "subject": {"reference": 7, PHI_TEXT: 1}}
    yield {**OBSERVATION, "status": PHI_TEXT}  # outside a code list
    yield {**OBSERVATION, "contained": [{"resourceType": "Patient", "name": [{PHI_TEXT: 1}]}]}
    yield {**OBSERVATION, "contained": [{"resourceType": PHI_TEXT}]}
    yield {"resourceType": PHI_TEXT, "status": "final"}
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "collection"}
    yield {**bundle, "entry": [{"resource": {**condition, PHI_TEXT: 1}}]}
    yield {**bundle, "entry": [{"resource": {**OBSERVATION, "effectiveDateTime": PHI_TEXT}}]}
    yield {**bundle, "entry": [{"resource": {"resourceType": PHI_TEXT}}]}
    yield {**bundle, "entry": [{PHI_TEXT: 1, "resource": OBSERVATION}]}
    yield {**bundle, "id": PHI_TEXT, "entry": [{"fullUrl": 5, "resource": OBSERVATION}]}


def test_trust_8_identifiers_never_come_back_in_responses_or_logs(
    shared_net: HealthNet, patient: PatientClient
) -> None:
    clinic = shared_net["clinic"]
    pid = patient.patient_id.hex()
    replies: list[tuple[str, Reply, int]] = []
    for i, resource in enumerate(bad_records()):
        reply = clinic.post(RECORDS_PATH, {"patient_id": pid, "resource": resource})
        replies.append((f"record {i}", reply, 422))
    replies += [
        (
            "request field",
            clinic.post(RECORDS_PATH, {"patient_id": pid, "resource": OBSERVATION, PHI_TEXT: 1}),
            400,
        ),
        ("patient id", clinic.post(RECORDS_PATH, {"patient_id": PHI_TEXT, "resource": OBSERVATION}), 400),
        ("resource", clinic.post(RECORDS_PATH, {"patient_id": pid, "resource": PHI_TEXT}), 400),
        ("query", clinic.get(f"{RECORDS_PATH}?patient_id={urllib.parse.quote(PHI_TEXT)}"), 400),
        ("record id", clinic.read(urllib.parse.quote(PHI_TEXT)), 400),
    ]
    inquiry: dict[str, Any] = {"patient_id": pid, "purpose": "TREAT", "reason": "follow-up visit"}
    for what, body in (
        ("inquiry field", {**inquiry, PHI_TEXT: 1}),
        ("reason", {**inquiry, "reason": PHI_TEXT + "\n" + PHI_TEXT}),
        ("long reason", {**inquiry, "reason": PHI_TEXT * 20}),
        ("record types", {**inquiry, "record_types": [PHI_TEXT]}),
        ("record ids", {**inquiry, "record_ids": [PHI_TEXT]}),
        ("purpose", {**inquiry, "purpose": PHI_TEXT}),
    ):
        # A reason of the documented form that is not printable text is unprocessable (issue 14).
        replies.append((what, clinic.post(INQUIRIES_PATH, body), 422 if what == "reason" else 400))
    for what, reply, status in replies:
        problem = assert_problem(reply, status)
        assert_no_phi(f"the answer to the {what}", reply.body)
        assert problem["detail"], what
    # The errors still say what is wrong and where, by the shape of the path.
    first = replies[0][1].json()
    assert first["paths"] == ["Condition.<unknown element>"]
    assert "is not an element" in first["detail"]
    nested = replies[9][1].json()
    assert nested["paths"] == ["Bundle.entry[0].resource.<unknown element>"]
    assert patient.list_records() == []
    shared_net.sync()
    assert_no_phi("the nodes' logs", node_logs(shared_net))


def all_tx_bodies(institution: Institution) -> list[bytes]:
    """Every tx body in the node's chain (through its authenticated institution token)."""
    bodies: list[bytes] = []
    start = 1
    while True:
        reply = institution.get(f"/v1/blocks?from={start}&to={start + API_BLOCK_RANGE_MAX - 1}")
        assert reply.status == 200, reply
        data = reply.json()
        bodies += [base64.b64decode(tx["body"]) for block in data["blocks"] for tx in block["txs"]]
        start += API_BLOCK_RANGE_MAX
        if start > int(data["latest_height"]):
            return bodies


def test_trust_10_reason_is_sealed_on_every_node(
    shared_net: HealthNet, patient: PatientClient, tmp_path: Path
) -> None:
    clinic, insurer = shared_net["clinic"], shared_net["insurer"]
    pid = patient.patient_id.hex()
    reason = f"claim review for {PHI_TEXT}"
    body = {"patient_id": pid, "purpose": "HPAYMT", "reason": reason, "record_types": ["Observation"]}
    reply = insurer.post(INQUIRIES_PATH, body)
    assert reply.status == 201, reply
    inquiry_id = reply.json()["inquiry_id"]
    shared_net.sync()

    # Nowhere in the clear: the public patient routes (and their canonical encodings), every tx
    # in either node's chain, either node's log.
    for institution in (clinic, insurer):
        public = request(
            institution.url, "GET", f"/v1/health/patients/{pid}/inquiries", headers=institution.auth
        )
        assert public.status == 200, public
        assert_no_phi("the public inquiry view", public.body)
        for item in public.json()["inquiries"]:
            assert "reason" not in item
            assert_no_phi("an inquiry's encoding", base64.b64decode(item["encoded"]))
        for tx_body in all_tx_bodies(institution):
            assert_no_phi("a tx body", tx_body)

    # The patient's client opens it on the device; the requester's API shows it to the requester.
    (inquiry,) = [i for i in patient.list_inquiries() if i.inquiry_id.hex() == inquiry_id]
    assert patient.inquiry_reason(inquiry) == reason
    mine = insurer.get(f"{INQUIRIES_PATH}?patient_id={pid}").json()["inquiries"]
    assert [(i["inquiry_id"], i["reason"]) for i in mine] == [(inquiry_id, reason)]
    assert clinic.get(f"{INQUIRIES_PATH}?patient_id={pid}").json()["inquiries"] == []
    assert_no_phi("the nodes' logs", node_logs(shared_net))


def test_trust_10_patient_cli_shows_the_reason(shared_net: HealthNet, tmp_path: Path) -> None:
    key = tmp_path / "patient.key"
    identity = make_patient_key(key)
    patient_cli(key, shared_net["clinic"].url, "register")  # pins the genesis beside the key
    sdk = PatientClient(shared_net["clinic"].url, identity)
    shared_net.sync()
    insurer = shared_net["insurer"]
    reply = insurer.post(
        INQUIRIES_PATH,
        {"patient_id": sdk.patient_id.hex(), "purpose": "HPAYMT", "reason": "Überprüfung der Rechnung"},
    )
    assert reply.status == 201, reply
    shared_net.sync()
    listed = json.loads(patient_cli(key, shared_net["clinic"].url, "inquiries", "--json"))
    assert [i["reason"] for i in listed] == ["Überprüfung der Rechnung"]


def test_trust_6_republished_record_is_refused_on_real_nodes(
    clinic_and_hospital: HealthNet, tmp_path: Path
) -> None:
    net = clinic_and_hospital
    clinic, hospital = net["clinic"], net["hospital"]
    identity = make_patient_key(tmp_path / "patient.key")
    sdk = PatientClient(clinic.url, identity)
    sdk.register()
    net.sync()
    # The patient lets the hospital read observations: the clinic seals new ones for it too.
    inquiry_id = hospital.inquire(sdk.patient_id.hex(), "TREAT", ["Observation"])
    net.sync()
    sdk.grant(bytes.fromhex(inquiry_id))
    net.sync()
    record_id = clinic.add_record(sdk.patient_id.hex(), observation(9.9))
    net.sync()
    (original,) = sdk.list_records()
    assert original.record_id.hex() == record_id
    hospital_enc_key = bytes.fromhex(hospital.get("/v1/health/institution").json()["enc_key"])
    assert hospital_enc_key in original.envelope.readers

    # The hospital, with its own node key, publishes the clinic's ciphertext and commitment as its
    # own record, keeping only the wrapped keys the rules allow it (the patient's and its own).
    attacker = load_identity(hospital.home / KEY_FILE, PASSPHRASE.encode())
    kept = tuple(
        w for w in original.envelope.wrapped_keys if w.reader in {identity.public.enc_key, hospital_enc_key}
    )
    envelope = type(original.envelope)(original.envelope.nonce, original.envelope.ciphertext, kept)
    body = AddRecordBody(original.patient_id, original.record_type, original.commitment, envelope)
    _, raw, _ = client.build_tx(attacker, KIND_ADD_RECORD, body, chain_id=sdk.chain_id)
    posted = request(
        hospital.url,
        "POST",
        "/v1/txs?wait_ms=5000",
        body=json.dumps({"tx": base64.b64encode(raw).decode()}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert assert_problem(posted, 422)["rule"] == "health.record_duplicate"
    net.sync()

    # The patient sees exactly the clinic's record, verified, and nothing under the hospital's name.
    local = sdk.read_records()
    assert [(r.record.record_id.hex(), r.error) for r in local] == [(record_id, "")]
    assert local[0].decrypted is not None
    stored = decode(
        RecordState,
        base64.b64decode(
            clinic.get(f"/v1/health/patients/{sdk.patient_id.hex()}/records").json()["records"][0]["encoded"]
        ),
        max_bytes=STATE_VALUE_BYTES_MAX,
    )
    assert stored.author != attacker.public.sign_key


def test_invalid_unusable_patient_key_is_422(shared_net: HealthNet) -> None:
    """A hostile patient registers an encryption key nothing can be sealed to (a small-order point):
    the ledger refuses the registration (state layout 3; a clear 422 naming the rule) and nothing
    changes. On an older chain that holds such a key, writing a record for it is a 4xx, not a 500
    (`tests/health_api/test_events_mqtt_attacks.py`)."""
    clinic = shared_net["clinic"]
    hostile = Identity.generate()
    body = RegisterPatientBody(bytes(32))
    chain_id = str(clinic.get("/v1/health/institution").json()["chain_id"])
    _, raw, _ = client.build_tx(hostile, KIND_REGISTER_PATIENT, body, chain_id=chain_id)
    posted = request(
        clinic.url,
        "POST",
        "/v1/txs?wait_ms=5000",
        body=json.dumps({"tx": base64.b64encode(raw).decode()}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert assert_problem(posted, 422)["rule"] == "health.enc_key_unusable"
    shared_net.sync()
    pid = compute_patient_id(hostile.public.sign_key).hex()
    assert clinic.get(f"/v1/health/patients/{pid}").status == 404
    record = clinic.post(RECORDS_PATH, {"patient_id": pid, "resource": OBSERVATION})
    assert 400 <= record.status < 500, record


def test_trust_8_malformed_fields_are_4xx_and_never_echoed(
    shared_net: HealthNet, patient: PatientClient
) -> None:
    """Fields of the wrong JSON type, text that is not Unicode (an unpaired surrogate, valid JSON
    escape) and a client-chosen content type are refused with a 4xx that does not echo them, and
    no request makes the node log an unhandled error (a traceback quoting the input)."""
    clinic = shared_net["clinic"]
    pid = patient.patient_id.hex()
    inquiry: dict[str, Any] = {"patient_id": pid, "purpose": "TREAT", "reason": "follow-up visit"}

    def record(**extra: Any) -> dict[str, Any]:
        return {"patient_id": pid, "resource": {**OBSERVATION, **extra}}

    def bundle_status(status: Any) -> dict[str, Any]:
        entry = {"resource": {**OBSERVATION, "status": status}}
        return {"resourceType": "Bundle", "type": "collection", "entry": [entry]}

    cases: list[tuple[str, str, Any, int]] = [
        ("purpose list", INQUIRIES_PATH, {**inquiry, "purpose": [PHI_TEXT]}, 400),
        ("purpose object", INQUIRIES_PATH, {**inquiry, "purpose": {PHI_TEXT: 1}}, 400),
        ("record type object", INQUIRIES_PATH, {**inquiry, "record_types": [{PHI_TEXT: 1}]}, 400),
        ("record type list", INQUIRIES_PATH, {**inquiry, "record_types": [[PHI_TEXT]]}, 400),
        ("surrogate key", RECORDS_PATH, record(**{"\ud800" + PHI_TEXT: 1}), 422),
        ("surrogate id", RECORDS_PATH, record(id="\ud800"), 422),
        ("surrogate note", RECORDS_PATH, record(note=[{"text": PHI_TEXT + "\udfff"}]), 422),
        ("bundle entry code", RECORDS_PATH, {"patient_id": pid, "resource": bundle_status([PHI_TEXT])}, 422),
    ]
    for what, path, body, status in cases:
        reply = clinic.post(path, body)
        assert_problem(reply, status)
        assert_no_phi(f"the answer to the {what}", reply.body)
    content_type = "application/" + PHI_TEXT.replace(" ", "-")
    headers = {**clinic.auth, "Content-Type": content_type}
    for path in (RECORDS_PATH, INQUIRIES_PATH):
        reply = request(clinic.url, "POST", path, body=b"{}", headers=headers)
        assert_problem(reply, 415)
        assert_no_phi("the answer to a content type", reply.body.lower())
        assert content_type.lower().encode() not in reply.body.lower()
    logs = node_logs(shared_net)
    assert "unhandled error" not in logs
    assert_no_phi("the nodes' logs", logs)
