"""Issue 14 [RECORDS] through the real API of real node processes (a clinic and an insurer).

- defect 2: the whole corpus (one resource of every record type, patient bundles holding their
  Patient) is accepted, read back byte for byte by its author and, under a grant, by the insurer
  (with a receipt each), and refused to the insurer before the grant;
- defect 4: decimals come back as written (`6.30`, 31 significant digits), in the exact bytes;
- defect 5: reasons in any language, kept in NFC; non-printable text is a 422;
- defect 6: the seven inputs that gave a 500 give a 4xx problem+json;
- defect 7: twenty POSTs with one Idempotency-Key make one record, one key never names two requests.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import time
import unicodedata
import urllib.parse
from pathlib import Path
from typing import Any, Final

import nacl.pwhash.argon2id
import pytest
from health_harness import (
    OBSERVATION,
    HealthNet,
    Institution,
    Reply,
    assert_problem,
    make_patient_key,
    request,
)

from medledger.health.fhir import RECORD_JSON_BYTES_MAX
from medledger.health.json_text import split_members
from medledger.health.sdk import PatientClient
from medledger.node.process import NodeProcess
from medledger.node.testnet import create_testnet

CORPUS: Final = Path(__file__).resolve().parent.parent / "health" / "fixtures" / "corpus"
RECORDS: Final = "/v1/health/institution/records"
INQUIRIES: Final = "/v1/health/institution/inquiries"


def new_patient(net: HealthNet, tmp_path: Path) -> PatientClient:
    client = PatientClient(net["clinic"].url, make_patient_key(tmp_path / "patient.key"))
    client.register()
    net.sync()
    return client


def record_body(patient_id: str, text: bytes) -> bytes:
    """The request as a clinic's engine writes it: the record's own JSON text inside the wrapper."""
    return b'{"patient_id": "' + patient_id.encode() + b'", "resource": ' + text + b"}"


def post_record(institution: Institution, body: bytes, headers: dict[str, str] | None = None) -> Reply:
    all_headers = {**institution.auth, "Content-Type": "application/json", **(headers or {})}
    return request(institution.url, "POST", RECORDS, body=body, headers=all_headers)


def resource_text(reply: Reply) -> bytes:
    """The exact bytes of the `resource` member of a read's answer."""
    assert reply.status == 200, reply
    return split_members(reply.body)["resource"][1].encode()


def test_records_2_4_the_corpus_is_accepted_and_read_back_byte_identical(
    shared_net: HealthNet, tmp_path: Path
) -> None:
    clinic, insurer = shared_net["clinic"], shared_net["insurer"]
    patient = new_patient(shared_net, tmp_path)
    pid = patient.patient_id.hex()
    files = {path.stem: path.read_bytes() for path in sorted(CORPUS.glob("*.json"))}
    assert len(files) > 60
    assert b"6.30" in files["decimals"]
    ids: dict[str, str] = {}
    for name, text in files.items():  # admitted without waiting; committed is checked below
        reply = request(
            clinic.url,
            "POST",
            f"{RECORDS}?wait_ms=0",
            body=record_body(pid, text),
            headers={**clinic.auth, "Content-Type": "application/json"},
        )
        assert reply.status in {201, 202}, (name, reply)
        ids[name] = reply.json()["record_id"]
    deadline = time.monotonic() + 30.0
    while len(patient.list_records()) < len(ids):  # a condition with a deadline, not a sleep
        assert time.monotonic() < deadline, "the corpus did not commit"
        time.sleep(0.05)
    shared_net.sync()
    for name, record_id in ids.items():
        answer = clinic.read(record_id)
        assert resource_text(answer) == files[name], name  # the author's read: what it submitted
        assert answer.json()["receipt"] is None
        problem = assert_problem(insurer.read(record_id), 403)  # anyone else: nothing
        assert "resource" not in problem
    # The patient's own device decrypts the same bytes.
    local = {r.record.record_id.hex(): r for r in patient.read_records()}
    for name, record_id in ids.items():
        decrypted = local[record_id].decrypted
        assert decrypted is not None, name
        assert decrypted.canonical_json == files[name], name
    # The insurer asks for everything, the patient grants, the insurer reads each: same bytes.
    reply = insurer.post(
        INQUIRIES, {"patient_id": pid, "purpose": "HPAYMT", "reason": "Prüfung der Rechnung"}
    )
    assert reply.status == 201, reply
    shared_net.sync()
    patient.grant(bytes.fromhex(reply.json()["inquiry_id"]))
    shared_net.sync()
    # Read in parallel: each read commits its receipt first, and receipts share blocks.
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = dict(zip(ids, pool.map(insurer.read, ids.values()), strict=True))
    for name, answer in answers.items():
        assert resource_text(answer) == files[name], name
        assert answer.json()["receipt"]["grant_id"]


def test_records_4_decimals_keep_their_precision_in_the_exact_bytes(
    shared_net: HealthNet, tmp_path: Path
) -> None:
    clinic = shared_net["clinic"]
    pid = new_patient(shared_net, tmp_path).patient_id.hex()
    text = (
        b'{"resourceType":"Observation","status":"final","code":{"text":"Glucose"},'
        b'"valueQuantity":{"value":6.30,"unit":"mmol/L"},'
        b'"component":[{"code":{"text":"exact"},"valueQuantity":{"value":3.141592653589793238462643383279}}]}'
    )
    reply = post_record(clinic, record_body(pid, text))
    assert reply.status == 201, reply
    answer = clinic.read(reply.json()["record_id"])
    assert resource_text(answer) == text
    assert b"6.30" in answer.body
    assert b"3.141592653589793238462643383279" in answer.body
    # The limit is on the record's bytes as written, not on the request that carries it: a record
    # of exactly the limit in UTF-8 is accepted however much room the wrapper takes.
    note = "Müller " * ((RECORD_JSON_BYTES_MAX - 400) // 8)
    with_note = json.loads(text)
    with_note["note"] = [{"text": note}]
    sized = json.dumps(with_note, ensure_ascii=False).encode()
    assert len(sized) <= RECORD_JSON_BYTES_MAX < len(json.dumps(with_note).encode())
    assert post_record(clinic, record_body(pid, sized)).status == 201
    too_big = json.dumps({**with_note, "note": [{"text": note * 2}]}, ensure_ascii=False).encode()
    assert_problem(post_record(clinic, record_body(pid, too_big)), 413)


def test_records_4_invalid_repeated_member_names_change_nothing(
    shared_net: HealthNet, tmp_path: Path
) -> None:
    clinic = shared_net["clinic"]
    patient = new_patient(shared_net, tmp_path)
    pid = patient.patient_id.hex()
    observation = json.dumps(OBSERVATION).encode()
    for body in (
        record_body(pid, observation.replace(b'"status": "final"', b'"status": "final", "status": "bogus"')),
        record_body(pid, observation)[:-1] + b', "resource": {"resourceType": "Observation"}}',
        record_body(pid, observation).decode().encode("utf-16"),
    ):
        assert post_record(clinic, body).status in {400, 422}
    assert patient.list_records() == []


def test_records_5_reasons_in_any_language_are_accepted_and_kept_in_nfc(
    shared_net: HealthNet, tmp_path: Path
) -> None:
    insurer = shared_net["insurer"]
    patient = new_patient(shared_net, tmp_path)
    pid = patient.patient_id.hex()
    reasons = [
        "Prüfung der Abrechnung für März",
        "Vérification de la facture de l'hôpital",
        unicodedata.normalize("NFD", "Überprüfung — Genève"),
        "請求書の確認",
    ]
    for reason in reasons:
        reply = insurer.post(INQUIRIES, {"patient_id": pid, "purpose": "HPAYMT", "reason": reason})
        assert reply.status == 201, reply
    shared_net.sync()
    seen = [i["reason"] for i in insurer.get(f"{INQUIRIES}?patient_id={pid}").json()["inquiries"]]
    assert sorted(seen) == sorted(unicodedata.normalize("NFC", r) for r in reasons)
    assert sorted(patient.inquiry_reason(i) or "" for i in patient.list_inquiries()) == sorted(seen)
    assert_problem(
        insurer.post(INQUIRIES, {"patient_id": pid, "purpose": "HPAYMT", "reason": "a" * 201}), 400
    )
    for bad in ("zwei\nZeilen", "\u202eumgekehrt", "\U0001f600\u200d" * 3):
        reply = insurer.post(INQUIRIES, {"patient_id": pid, "purpose": "HPAYMT", "reason": bad})
        assert_problem(reply, 422)
    # The document states each limit.
    document = insurer.get("/openapi.json").json()
    reason_schema = document["components"]["schemas"]["NewInquiry"]["properties"]["reason"]
    assert reason_schema["maxLength"] == 200
    assert "800 bytes" in reason_schema["description"]
    name_schema = document["components"]["schemas"]["Institution"]["properties"]["name"]
    assert name_schema["maxLength"] == 64
    assert "256 bytes" in name_schema["description"]


def _raw_request(url: str, head: bytes, body: bytes = b"") -> bytes:
    """One request written byte by byte (http.client refuses non-ASCII header bytes)."""
    port = urllib.parse.urlsplit(url).port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(head + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_records_6_a_non_ascii_authorization_byte_is_a_401_on_every_institution_route(
    shared_net: HealthNet,
) -> None:
    clinic = shared_net["clinic"]
    routes = [
        b"GET /v1/health/institution",
        b"POST " + RECORDS.encode(),
        b"GET " + RECORDS.encode() + b"?patient_id=" + b"ab" * 32,
        b"GET " + RECORDS.encode() + b"/" + b"ab" * 32,
        b"POST " + INQUIRIES.encode(),
        b"GET " + INQUIRIES.encode() + b"?patient_id=" + b"ab" * 32,
        b"GET /v1/health/institution/audit?patient_id=" + b"ab" * 32,
        b"GET /v1/health/patients/" + b"ab" * 32,
    ]
    for route in routes:
        for value in (b"Bearer \xff\xfe", b"Bearer " + clinic.token.encode() + b"\xc3\xa9", b"\x80"):
            head = route + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: " + value + b"\r\n"
            answer = _raw_request(clinic.url, head)
            status_line, _, rest = answer.partition(b"\r\n")
            assert status_line.split()[1] == b"401", (route, value, answer[:300])
            assert b"application/problem+json" in rest
    assert clinic.get("/v1/health/institution").status == 200


def test_records_6_the_inputs_that_gave_a_500_are_4xx_problems(shared_net: HealthNet, tmp_path: Path) -> None:
    clinic = shared_net["clinic"]
    patient = new_patient(shared_net, tmp_path)
    pid = patient.patient_id.hex()
    inquiry: dict[str, Any] = {"patient_id": pid, "purpose": "TREAT", "reason": "Kontrolle"}
    post = {**clinic.auth, "Content-Type": "application/json"}
    cases: list[tuple[str, bytes]] = [
        # A lone surrogate in a FHIR string and in a reason (JSON escapes: valid syntax, not text).
        (
            RECORDS,
            record_body(pid, b'{"resourceType":"Observation","status":"final","code":{"text":"\\ud800"}}'),
        ),
        (
            INQUIRIES,
            json.dumps({**inquiry, "reason": "Kontrolle"}).encode().replace(b"Kontrolle", b"K\\udfffx"),
        ),
        (INQUIRIES, json.dumps({**inquiry, "purpose": ["TREAT"]}).encode()),
        (INQUIRIES, json.dumps({**inquiry, "record_types": [{}]}).encode()),
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": {**OBSERVATION, "status": ["final"]}}],
    }
    coding = {**OBSERVATION, "code": {"coding": [{"system": "http://loinc.org", "code": {"not": "a code"}}]}}
    condition = {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/x"},
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": {"a": 1}}
            ]
        },
    }
    goal = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Goal",
                    "lifecycleStatus": ["active"],
                    "description": {"text": "x"},
                    "subject": {"reference": "Patient/x"},
                }
            }
        ],
    }
    for resource in (bundle, coding, condition, goal):
        cases.append((RECORDS, json.dumps({"patient_id": pid, "resource": resource}).encode()))
    for path, body in cases:
        reply = request(clinic.url, "POST", path, body=body, headers=post)
        problem = assert_problem(reply, reply.status)
        assert 400 <= reply.status < 500, (path, body[:200], reply)
        assert "\\ud" not in problem["detail"]
    assert patient.list_records() == []
    assert patient.list_inquiries() == []


def test_records_7_one_idempotency_key_makes_one_record(shared_net: HealthNet, tmp_path: Path) -> None:
    clinic = shared_net["clinic"]
    patient = new_patient(shared_net, tmp_path)
    pid = patient.patient_id.hex()
    body = record_body(pid, json.dumps(OBSERVATION).encode())
    key = {"Idempotency-Key": "2f1c9a0e-6a55-4c1e-9d0e-6bd3c5b1a7e1"}
    first = post_record(clinic, body, key)
    assert first.status == 201, first
    answers = [post_record(clinic, body, key) for _ in range(9)]
    # ... and ten more at once: they wait for each other and get the same answer.
    with concurrent.futures.ThreadPoolExecutor(max_workers=10) as pool:
        answers += list(pool.map(lambda _: post_record(clinic, body, key), range(10)))
    assert {a.status for a in answers} == {201}
    assert {a.json()["record_id"] for a in answers} == {first.json()["record_id"]}
    assert {a.json()["commitment"] for a in answers} == {first.json()["commitment"]}
    shared_net.sync()
    assert [r.record_id.hex() for r in patient.list_records()] == [first.json()["record_id"]]
    # The same key for another request: a 422, nothing written.
    other = record_body(pid, json.dumps({**OBSERVATION, "status": "amended"}).encode())
    problem = assert_problem(post_record(clinic, other, key), 422)
    assert problem["type"] == "urn:medledger:problem:idempotency_key_reused"
    # Without a key (or with a new one) a POST is a new record, as before.
    assert post_record(clinic, body).json()["record_id"] != first.json()["record_id"]
    assert post_record(clinic, body, {"Idempotency-Key": "another"}).status == 201
    for bad in ("", "x" * 129, "with space"):
        assert_problem(post_record(clinic, body, {"Idempotency-Key": bad}), 400)
    shared_net.sync()
    assert len(patient.list_records()) == 3


@pytest.mark.parametrize("path", [RECORDS, INQUIRIES])
def test_records_8_the_document_states_limits_and_hex_case(shared_net: HealthNet, path: str) -> None:
    document = shared_net["clinic"].get("/openapi.json").json()
    operation = document["paths"][path]["post"]
    name = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    schema = document["components"]["schemas"][name]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["patient_id"]["pattern"] == "^[0-9a-fA-F]{64}$"
    assert {p["name"]: p for p in operation["parameters"]}["wait_ms"]["schema"]["maximum"] == 30_000
    if path == INQUIRIES:
        assert "from_ms ≤ to_ms" in schema["properties"]["from_ms"]["description"]
        assert schema["properties"]["record_types"]["maxItems"] > 60
    else:
        assert "Idempotency-Key" in {p["name"] for p in operation["parameters"]}
    views = ("DecryptedRecord", "HealthWrite", "Institution", "InstitutionInquiry", "Grant", "AuditEvent")
    for view in views:
        assert document["components"]["schemas"][view]["additionalProperties"] is False, view
    blocks = {p["name"]: p for p in document["paths"]["/v1/blocks"]["get"]["parameters"]}
    assert blocks["from"]["schema"]["maximum"] == 2**63 - 1
    assert "from ≤ to" in blocks["from"]["description"]


def test_records_7_an_idempotency_key_outlives_a_kill_9(tmp_path: Path) -> None:
    """The key table is on disk, written before the tx is submitted: after kill -9 and a restart the
    retry answers with the first record, and the chain holds one."""
    nodes = create_testnet(
        tmp_path / "net",
        validators=1,
        chain_id="medledger-idempotency-test",
        block_interval_ms=50,
        passphrase=b"test-pass",
        key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
        app="health",
        names=["clinic"],
        roles=["clinic"],
    )
    (node,) = nodes
    process = NodeProcess(node.home, env={"MEDLEDGER_KEY_PASSPHRASE": "test-pass"}, use_config_ports=True)
    try:
        process.start()
        clinic = Institution("clinic", process.wait_ready(60.0), node.api_token, node.home)
        patient = PatientClient(clinic.url, make_patient_key(tmp_path / "patient.key"))
        patient.register()
        body = record_body(patient.patient_id.hex(), json.dumps(OBSERVATION).encode())
        key = {"Idempotency-Key": "retry-after-a-crash"}
        first = post_record(clinic, body, key)
        assert first.status == 201, first
        process.kill()
        process.start()
        clinic = Institution("clinic", process.wait_ready(60.0), node.api_token, node.home)
        again = post_record(clinic, body, key)
        assert again.status == 201, again
        assert again.json()["record_id"] == first.json()["record_id"]
        assert [r.record_id.hex() for r in PatientClient(clinic.url, patient.identity).list_records()] == [
            first.json()["record_id"]
        ]
        assert_problem(post_record(clinic, body.replace(b'"final"', b'"amended"'), key), 422)
        # Killed right after admitting it (committed or not, the mempool is gone): the retry
        # submits the remembered signed tx again, which commits once.
        pending_key = {**clinic.auth, "Content-Type": "application/json", "Idempotency-Key": "pending"}
        other = body.replace(b'"final"', b'"preliminary"')
        pending = request(clinic.url, "POST", f"{RECORDS}?wait_ms=0", body=other, headers=pending_key)
        assert pending.status == 202, pending
        process.kill()
        process.start()
        clinic = Institution("clinic", process.wait_ready(60.0), node.api_token, node.home)
        retried = post_record(clinic, other, {"Idempotency-Key": "pending"})
        assert retried.status == 201, retried
        assert retried.json()["record_id"] == pending.json()["record_id"]
        ids = {r.record_id.hex() for r in PatientClient(clinic.url, patient.identity).list_records()}
        assert ids == {first.json()["record_id"], pending.json()["record_id"]}
    finally:
        process.stop()
