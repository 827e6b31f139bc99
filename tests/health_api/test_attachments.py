"""Issue 14, defect 3: documents as attachments, stored off the ledger as encrypted blobs (ADR 0013).

Four institutions on real node processes. The clinic uploads a 20 MB PDF (streamed), files a
DocumentReference citing it; the record on the ledger carries only the blob's id, size and key
envelope. The clinic reads the PDF back byte for byte; the hospital and the insurer are refused
(403, nothing decrypted, no receipt) until the patient grants the hospital, which then reads the
same bytes, its read receipted on the ledger first; the patient's device fetches the ciphertext
through another node, verifies and decrypts it. The blob replicates to the author's node and
at least two others, each copy verified chunk by chunk. Hostile uploads (too large, announced or
chunked; empty; wrong type) and records citing blobs this node never received are refused with a
problem and change nothing.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import http.client
import json
import secrets
import socket
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from health_harness import (
    DEADLINE_S,
    POLL_S,
    HealthNet,
    Institution,
    Reply,
    assert_problem,
    make_patient_key,
    patient_cli,
    start_health_net,
)

from medledger.health.blobs import BLOB_REPLICAS_DEFAULT, compute_blob_holders
from medledger.health.sdk import PatientClient
from medledger.health.types import ATTACHMENT_BYTES_MAX, compute_patient_id

PDF_BYTES: Final = 20 * 1000 * 1000
ROLES: Final = {"clinic": "clinic", "hospital": "hospital", "insurer": "insurer", "research": "research"}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HealthNet]:
    with start_health_net(tmp_path_factory.mktemp("attachments") / "net", ROLES) as started:
        yield started


def make_pdf(size: int) -> bytes:
    """A synthetic PDF-shaped file (a header, random bytes, a trailer): nobody's data."""
    body = secrets.token_bytes(size - 32)
    return (b"%PDF-1.7\n%synthetic\n" + body + b"\n%%EOF\n")[:size].ljust(size, b"\n")


@dataclasses.dataclass(frozen=True, slots=True)
class HeadedReply(Reply):
    """A reply with its headers (a download's receipt travels in them)."""

    headers: dict[str, str] = dataclasses.field(default_factory=dict)


def upload(
    institution: Institution, data: bytes, content_type: str = "application/octet-stream"
) -> HeadedReply:
    headers = {**institution.auth, "Content-Type": content_type}
    return raw_request(institution.url, "POST", "/v1/health/institution/blobs", body=data, headers=headers)


def raw_request(
    url: str, method: str, path: str, *, body: Any = None, headers: dict[str, str]
) -> HeadedReply:
    parsed = urllib.parse.urlsplit(url)
    assert parsed.port is not None
    connection = http.client.HTTPConnection("127.0.0.1", parsed.port, timeout=120)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        content_type = (response.getheader("Content-Type") or "").split(";", 1)[0].strip()
        return HeadedReply(response.status, content_type, data, dict(response.getheaders()))
    finally:
        connection.close()


def chunked_upload_status(institution: Institution, mebibytes: int) -> int:
    """Send an upload in chunked encoding (no length announced) over a raw socket, as far as the
    node reads it, and return the status the node answers with."""
    parsed = urllib.parse.urlsplit(institution.url)
    assert parsed.port is not None
    head = (
        "POST /v1/health/institution/blobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {institution.token}\r\nContent-Type: application/octet-stream\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"%x\r\n" % 2**20 + bytes(2**20) + b"\r\n"
    with socket.create_connection(("127.0.0.1", parsed.port), timeout=60) as sock:
        sock.sendall(head.encode())
        try:
            for _ in range(mebibytes):
                sock.sendall(piece)
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the node stopped reading once past the limit; its answer is already there
        answer = b""
        while b"\r\n" not in answer:
            data = sock.recv(4096)
            if not data:
                break
            answer += data
    return int(answer.split(b" ", 2)[1])


def download(institution: Institution, record_id: str, blob_id: str) -> HeadedReply:
    path = f"/v1/health/institution/records/{record_id}/attachments/{blob_id}"
    return raw_request(institution.url, "GET", path, headers=institution.auth)


def document_reference(url: str, size: int, digest: bytes) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {
            "coding": [{"system": "http://loinc.org", "code": "18842-5", "display": "Discharge summary"}]
        },
        "subject": {"reference": "Patient/synthetic-1"},
        "date": "2024-03-01T10:00:00Z",
        "content": [
            {
                "attachment": {
                    "contentType": "application/pdf",
                    "url": url,
                    "size": size,
                    "hash": base64.b64encode(digest).decode(),
                    "title": "Synthetic discharge letter",
                }
            }
        ],
    }


def held_blobs(institution: Institution) -> dict[str, dict[str, Any]]:
    reply = institution.get("/v1/health/institution/blobs?verify=true")
    assert reply.status == 200, reply
    return {item["blob_id"]: item for item in reply.json()["blobs"]}


def wait_until(condition: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)  # polling a condition with a deadline


def test_a_20_mb_pdf_is_stored_replicated_and_read_only_under_a_grant(net: HealthNet, tmp_path: Path) -> None:
    clinic, hospital, insurer = net["clinic"], net["hospital"], net["insurer"]
    key = tmp_path / "patient.key"
    identity = make_patient_key(key)
    patient_id = compute_patient_id(identity.public.sign_key).hex()
    assert patient_id in patient_cli(key, hospital.url, "register")
    net.sync()

    pdf = make_pdf(PDF_BYTES)
    uploaded = upload(clinic, pdf)
    assert uploaded.status == 201, uploaded
    blob = uploaded.json()
    assert blob["size"] == PDF_BYTES
    assert blob["chunks"] == -(-PDF_BYTES // 2**20)
    record_id = clinic.add_record(
        patient_id,
        document_reference(blob["url"], PDF_BYTES, hashlib.sha1(pdf).digest()),
    )
    net.sync()

    # On the ledger: the record and its blob reference, no plaintext; the author reads it back.
    listed = clinic.read(record_id).json()
    assert listed["attachments"] == [{"blob_id": blob["blob_id"], "size": PDF_BYTES, "url": blob["url"]}]
    mine = download(clinic, record_id, blob["blob_id"])
    assert mine.status == 200
    assert mine.content_type == "application/pdf"
    assert mine.body == pdf
    assert "Medledger-Receipt-Tx" not in mine.headers

    # The patient's own device fetches the ciphertext from any node (one that does not hold the
    # blob fetches it from its peers first), checks every chunk and decrypts it locally.
    keys = {
        i["name"]: bytes.fromhex(i["sign_key"])
        for i in clinic.get("/v1/health/institutions").json()["institutions"]
    }
    holders = compute_blob_holders(
        bytes.fromhex(blob["blob_id"]), keys["clinic"], keys.values(), BLOB_REPLICAS_DEFAULT
    )
    assert len(holders) == 3
    (outside,) = [net[name] for name, sign_key in keys.items() if sign_key not in holders]
    assert blob["blob_id"] not in held_blobs(outside)  # it holds nothing of this blob yet
    saved = tmp_path / "letter.pdf"
    written = patient_cli(key, outside.url, "attachment", record_id, blob["blob_id"], "--out", str(saved))
    assert f"wrote {PDF_BYTES} bytes" in written
    assert saved.read_bytes() == pdf
    patient_path = f"/v1/health/patients/{patient_id}/records/{record_id}/attachments/{blob['blob_id']}"
    assert_problem(raw_request(outside.url, "GET", patient_path, headers={}), 401)

    # Nobody else, without a grant: 403 problems, no plaintext, no receipt on the ledger.
    audit_before = clinic.get(f"/v1/health/patients/{patient_id}/audit").json()["total"]
    for outsider in (hospital, insurer):
        problem = assert_problem(download(outsider, record_id, blob["blob_id"]), 403)
        assert problem["type"].endswith("no_grant")
    assert clinic.get(f"/v1/health/patients/{patient_id}/audit").json()["total"] == audit_before

    # The patient grants the hospital DocumentReferences; its read is receipted, then decrypted.
    inquiry = hospital.inquire(patient_id, "TREAT", ["DocumentReference"])
    net.sync()
    assert "granted" in patient_cli(key, hospital.url, "grant", inquiry, "--yes")
    net.sync()
    granted = download(hospital, record_id, blob["blob_id"])
    assert granted.status == 200, granted
    assert hashlib.sha256(granted.body).digest() == hashlib.sha256(pdf).digest()
    assert granted.body == pdf
    receipt_tx = granted.headers["Medledger-Receipt-Tx"]
    net.sync()
    trail = clinic.get(f"/v1/health/patients/{patient_id}/audit").json()["events"]
    reads = [e for e in trail if e["event"] == "read"]
    assert [(e["event_id"], e["actor_name"], e["record_ids"]) for e in reads] == [
        (receipt_tx, "hospital", [record_id])
    ]
    # The insurer still may not.
    assert_problem(download(insurer, record_id, blob["blob_id"]), 403)

    # Replicated: the author's node and at least two others hold it, every chunk verified.
    def replicas() -> int:
        held = [held_blobs(i).get(blob["blob_id"]) for i in net.institutions.values()]
        return sum(1 for item in held if item is not None and item["verified"])

    wait_until(lambda: replicas() >= 3, "the blob on three nodes")
    assert blob["blob_id"] in held_blobs(clinic)
    for name, sign_key in keys.items():
        if sign_key in holders:
            assert held_blobs(net[name])[blob["blob_id"]]["verified"], name


def test_invalid_uploads_and_citations_change_nothing(net: HealthNet, tmp_path: Path) -> None:
    clinic, hospital, insurer = net["clinic"], net["hospital"], net["insurer"]
    key = tmp_path / "patient.key"
    identity = make_patient_key(key)
    patient_id = compute_patient_id(identity.public.sign_key).hex()
    assert patient_id in patient_cli(key, clinic.url, "register")
    net.sync()
    before = held_blobs(clinic)
    height = max(net.heights())

    # Too large, announced: refused before a byte of the body is read.
    parsed = urllib.parse.urlsplit(clinic.url)
    assert parsed.port is not None
    connection = http.client.HTTPConnection("127.0.0.1", parsed.port, timeout=60)
    connection.putrequest("POST", "/v1/health/institution/blobs")
    for name, value in {**clinic.auth, "Content-Type": "application/octet-stream"}.items():
        connection.putheader(name, value)
    connection.putheader("Content-Length", str(ATTACHMENT_BYTES_MAX + 1))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    assert json.loads(response.read())["type"].endswith("too_large")
    connection.close()

    # Too large, chunked (no length announced): cut off once the limit is passed, and answered.
    assert chunked_upload_status(clinic, ATTACHMENT_BYTES_MAX // 2**20 + 1) == 413
    assert_problem(upload(clinic, b""), 422)
    assert_problem(upload(clinic, b"{}", "application/json"), 415)
    # An insurer authors no records, so it uploads no attachments.
    assert_problem(upload(insurer, b"%PDF-1.7 synthetic"), 403)

    # A record citing a blob this node never received, or a malformed blob URL: 422.
    stranger = "urn:medledger:blob:" + secrets.token_hex(32)
    for url in (stranger, "urn:medledger:blob:XYZ", "urn:medledger:blob:" + "AB" * 32):
        cited = clinic.post(
            "/v1/health/institution/records",
            {"patient_id": patient_id, "resource": document_reference(url, 10, b"\x00" * 20)},
        )
        assert_problem(cited, 422)
    # A blob uploaded to the clinic cannot be cited by the hospital (it holds no key for it).
    uploaded = upload(clinic, b"%PDF-1.7 synthetic small letter\n%%EOF\n").json()
    foreign = hospital.post(
        "/v1/health/institution/records",
        {"patient_id": patient_id, "resource": document_reference(uploaded["url"], 10, b"\x00" * 20)},
    )
    assert_problem(foreign, 422)
    # An unknown attachment of a real record, and malformed ids: 404 / 400.
    record_id = clinic.add_record(patient_id, document_reference(uploaded["url"], 38, b"\x00" * 20))
    assert_problem(download(clinic, record_id, secrets.token_hex(32)), 404)
    assert_problem(download(clinic, record_id, "zz"), 400)

    after = held_blobs(clinic)
    assert set(after) - set(before) == {uploaded["blob_id"]}  # only the one good upload
    assert max(net.heights()) >= height


def test_a_bundle_carries_attachments_of_its_documents(net: HealthNet, tmp_path: Path) -> None:
    clinic = net["clinic"]
    key = tmp_path / "patient.key"
    identity = make_patient_key(key)
    patient_id = compute_patient_id(identity.public.sign_key).hex()
    assert patient_id in patient_cli(key, clinic.url, "register")
    net.sync()
    scans = [make_pdf(2**20 + 3), make_pdf(70_000)]
    blobs = [upload(clinic, scan).json() for scan in scans]
    documents = [
        document_reference(b["url"], len(s), hashlib.sha1(s).digest())
        for b, s in zip(blobs, scans, strict=True)
    ]
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": d} for d in documents]}
    record_id = clinic.add_record(patient_id, bundle)
    read = clinic.read(record_id).json()
    assert sorted(a["blob_id"] for a in read["attachments"]) == sorted(b["blob_id"] for b in blobs)
    patient = PatientClient(clinic.url, identity)
    for blob, scan in zip(blobs, scans, strict=True):
        assert download(clinic, record_id, blob["blob_id"]).body == scan
        assert patient.read_attachment(bytes.fromhex(record_id), bytes.fromhex(blob["blob_id"])) == scan
