"""The insurer's story end to end (issue 12), over real node processes and the real patient CLI.

A clinic, an insurer and a second insurer, each its own node process, and a patient whose key never
leaves the test's "device". The patient gives the insurer a standing consent for payment (shown in
full, then signed); the clinic adds an encounter's records, one labelled HIV, and files a claim;
the insurer reads what its consent covers (not the labelled record: 403, nothing decrypted) and
pends the claim asking for a lab report; the clinic adds it (sealed for the insurer under the live
consent) and answers with a second version; the insurer reads it. The patient then revokes the
consent: the next record is not sealed for the insurer, which can read nothing more; it approves
version 2. The patient sees both decisions with their reasons and exactly which records the
insurer read for the claim. Malformed claims, unknown encounters, decisions by the wrong insurer
or the clinic, and forged signatures get a 4xx problem and change nothing; no Claim or
ClaimResponse text is on the ledger in the clear.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from health_harness import (
    HealthNet,
    assert_problem,
    make_patient_key,
    observation,
    patient_cli,
    request,
    start_health_net,
)

from medledger.chain.codec import encode
from medledger.chain.txbuilder import sign_tx
from medledger.chain.validation import decode_tx
from medledger.crypto import Identity, digest
from medledger.crypto.envelope import SEALED_KEY_SIZE
from medledger.health.claims_types import DecideClaimBody
from medledger.health.sdk import PatientClient
from medledger.health.types import EnvelopeWire, WrappedKey, compute_patient_id
from medledger.node.demo_claims import run_insurer_story
from medledger.node.errors import NodeError

CLAIM_TYPE = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]
}
MISSING = "Send the HbA1c lab report"


def encounter() -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient/synthetic-1"},
    }


def hiv_condition() -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HIV"}]},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "38341003"}]},
        "subject": {"reference": "Patient/synthetic-1"},
    }


def claim(amount: float) -> dict[str, Any]:
    return {
        "resourceType": "Claim",
        "status": "active",
        "type": CLAIM_TYPE,
        "use": "claim",
        "patient": {"reference": "Patient/synthetic-1"},
        "created": "2026-12-01",
        "provider": {"reference": "Organization/clinic"},
        "priority": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]
        },
        "insurance": [{"sequence": 1, "focal": True, "coverage": {"reference": "Coverage/synthetic-1"}}],
        "item": [
            {
                "sequence": 1,
                "productOrService": {
                    "coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]
                },
                "net": {"value": amount, "currency": "EUR"},
            }
        ],
    }


def response(outcome: str) -> dict[str, Any]:
    base: dict[str, Any] = {
        "resourceType": "ClaimResponse",
        "status": "active",
        "type": CLAIM_TYPE,
        "use": "claim",
        "patient": {"reference": "Patient/synthetic-1"},
        "created": "2026-12-02",
        "insurer": {"reference": "Organization/insurer"},
    }
    if outcome == "pended":
        return {**base, "outcome": "queued", "processNote": [{"number": 1, "text": MISSING}]}
    return {**base, "outcome": "complete", "disposition": "Settled in full"}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HealthNet]:
    with start_health_net(
        tmp_path_factory.mktemp("claims") / "net",
        {"clinic": "clinic", "insurer": "insurer", "insurer-b": "insurer"},
    ) as started:
        yield started


def ledger_bytes(net: HealthNet) -> bytes:
    clinic = net["clinic"]
    height = max(net.heights())
    reply = request(
        clinic.url,
        "GET",
        f"/v1/blocks?from=1&to={height}",
        headers={**clinic.auth, "Accept": "application/msgpack"},
    )
    assert reply.status == 200, reply
    return reply.body


def key_of(net: HealthNet, name: str) -> str:
    return str(net[name].get("/v1/health/institution").json()["sign_key"])


def test_insurer_story_with_pended_then_approved_claim_and_revocation(net: HealthNet, tmp_path: Path) -> None:
    clinic, insurer, other = net["clinic"], net["insurer"], net["insurer-b"]
    key = tmp_path / "patient.key"
    identity = make_patient_key(key)
    patient_id = compute_patient_id(identity.public.sign_key).hex()
    patient_cli(key, clinic.url, "register")
    net.sync()

    # --- the standing consent, shown in full and signed -----------------------------------------
    shown = patient_cli(
        key,
        clinic.url,
        "consent",
        "grant",
        "insurer",
        "--type",
        "Encounter",
        "--type",
        "Observation",
        "--type",
        "Condition",
        "--author",
        "clinic",
        "--from",
        "2020-01-01",
        "--days",
        "30",
        "--yes",
    )
    assert "Standing consent for payment (HPAYMT) to insurer" in shown
    assert "no record labelled sensitive" in shown
    consent_id = shown.split("granted consent ")[1].split()[0]
    net.sync()
    (listed_consent,) = json.loads(patient_cli(key, insurer.url, "consent", "list", "--json"))
    assert (listed_consent["consent_id"], listed_consent["labels"], listed_consent["revoked"]) == (
        consent_id,
        [],
        False,
    )

    # --- the clinic's records: the labelled one is not sealed for the insurer -------------------
    def add(resource: dict[str, Any]) -> dict[str, Any]:
        reply = clinic.post(
            "/v1/health/institution/records", {"patient_id": patient_id, "resource": resource}
        )
        assert reply.status == 201, reply
        answer: dict[str, Any] = reply.json()
        return answer

    visit, vitals, diagnosis = add(encounter()), add(observation(6.1)), add(hiv_condition())
    assert (visit["readers"], vitals["readers"], diagnosis["readers"]) == (3, 3, 2)
    assert diagnosis["security_labels"] == ["HIV"]
    record_ids = sorted([visit["record_id"], vitals["record_id"], diagnosis["record_id"]])
    net.sync()

    # An inquiry's grant re-seals what the patient picks, labelled or not: the preview says which
    # records are labelled sensitive before the patient signs.
    inquiry_id = other.inquire(patient_id, "HPAYMT", ["Condition"])
    net.sync()
    granted = patient_cli(key, clinic.url, "grant", inquiry_id[:16], "--yes")
    assert "1 of them are labelled sensitive (HIV) and are shared too." in granted
    assert "[sensitive: HIV]" in granted
    net.sync()

    # --- refusals that change nothing ------------------------------------------------------------
    def claims_of(institution: str) -> list[dict[str, Any]]:
        return list(net[institution].get("/v1/health/institution/claims").json()["claims"])

    before = (claims_of("clinic"), claims_of("insurer"))
    filing = {
        "patient_id": patient_id,
        "insurer": key_of(net, "insurer"),
        "encounter_id": visit["record_id"],
        "record_ids": record_ids,
        "claim": claim(120.0),
    }
    assert_problem(
        clinic.post("/v1/health/institution/claims", {**filing, "claim": {"resourceType": "Claim"}}), 422
    )
    assert_problem(clinic.post("/v1/health/institution/claims", {**filing, "encounter_id": "ab" * 32}), 404)
    assert_problem(
        clinic.post("/v1/health/institution/claims", {**filing, "encounter_id": vitals["record_id"]}), 422
    )
    assert_problem(
        clinic.post("/v1/health/institution/claims", {**filing, "insurer": key_of(net, "clinic")}), 422
    )
    assert_problem(clinic.post("/v1/health/institution/claims", {**filing, "record_ids": []}), 400)
    assert_problem(insurer.post("/v1/health/institution/claims", filing), 403)  # an insurer files none
    net.sync()
    assert (claims_of("clinic"), claims_of("insurer")) == before

    # --- the claim, and what the insurer may read of it ------------------------------------------
    filed = clinic.post("/v1/health/institution/claims", filing)
    assert filed.status == 201, filed
    claim_id = filed.json()["claim_id"]
    net.sync()
    (seen,) = [c for c in claims_of("insurer") if c["claim_id"] == claim_id]
    assert seen["claim"]["item"][0]["net"]["value"] == 120.0
    assert (seen["status"], seen["version"], seen["decisions"]) == ("open", 1, [])
    assert [c["claim_id"] for c in claims_of("insurer-b")] == []  # addressed to the other insurer
    read_path = f"/v1/health/institution/claims/{claim_id}/records/"
    read = insurer.get(read_path + vitals["record_id"])
    assert read.status == 200, read
    assert read.json()["resource"]["valueQuantity"]["value"] == 6.1
    assert read.json()["receipt"]["grant_id"] == consent_id
    assert insurer.get(read_path + visit["record_id"]).status == 200
    assert (
        assert_problem(insurer.get(read_path + diagnosis["record_id"]), 403)["type"]
        == "urn:medledger:problem:no_grant"
    )
    assert_problem(other.get(read_path + vitals["record_id"]), 403)  # not its claim

    # --- pended: the wrong insurer and the clinic may not decide; the insurer decides once --------
    decision_path = f"/v1/health/institution/claims/{claim_id}/decision"
    pend = {"version": 1, "outcome": "pended", "response": response("pended")}
    assert_problem(other.post(decision_path, pend), 403)
    assert_problem(clinic.post(decision_path, pend), 403)
    assert_problem(insurer.post(decision_path, {**pend, "outcome": "approved"}), 422)  # disagrees
    assert_problem(insurer.post(decision_path, {**pend, "version": 2}), 409)
    reply = insurer.post(decision_path, pend)
    assert reply.status == 201, reply
    assert_problem(insurer.post(decision_path, pend), 409)  # once per version

    # Forged decisions, straight to the ledger: the insurer's name under another key's signature,
    # and a decision signed by a key that is not the addressed insurer's.
    net.sync()
    for raw in _forged_decisions(net, claim_id):
        posted = request(
            clinic.url,
            "POST",
            "/v1/txs",
            body=json.dumps({"tx": base64.b64encode(raw).decode()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert_problem(posted, posted.status)
        assert 400 <= posted.status < 500, posted
    net.sync()
    (seen,) = [c for c in claims_of("clinic") if c["claim_id"] == claim_id]
    assert [(d["version"], d["outcome"]) for d in seen["decisions"]] == [(1, "pended")]

    # --- more records for the pended claim, then revocation mid-story -----------------------------
    lab = add(observation(7.4))
    assert lab["readers"] == 3  # the consent is live: sealed for the insurer too
    net.sync()
    amended = clinic.post(
        f"/v1/health/institution/claims/{claim_id}/versions",
        {"record_ids": [*record_ids, lab["record_id"]], "claim": claim(120.0)},
    )
    assert amended.status == 201, amended
    assert_problem(
        insurer.post(
            f"/v1/health/institution/claims/{claim_id}/versions",
            {"record_ids": record_ids, "claim": claim(1.0)},
        ),
        403,
    )
    net.sync()
    assert insurer.get(read_path + lab["record_id"]).status == 200
    patient_cli(key, clinic.url, "consent", "revoke", consent_id[:16])
    net.sync()
    after = add(observation(8.0))
    assert after["readers"] == 2  # revoked: nothing new is sealed for the insurer
    assert (
        assert_problem(insurer.get(read_path + lab["record_id"]), 403)["type"]
        == "urn:medledger:problem:no_grant"
    )
    reply = insurer.post(
        decision_path, {"version": 2, "outcome": "approved", "response": response("approved")}
    )
    assert reply.status == 201, reply
    net.sync()

    # --- what the patient sees, checked against the chain -----------------------------------------
    (mine,) = json.loads(patient_cli(key, clinic.url, "claims", "--json"))
    assert (mine["claim_id"], mine["status"], mine["version"]) == (claim_id, "approved", 2)
    assert [(d["version"], d["outcome"]) for d in mine["decisions"]] == [(1, "pended"), (2, "approved")]
    assert MISSING in mine["decisions"][0]["reason"]
    reads = [(r["reader"], r["record_ids"]) for r in mine["reads"]]
    assert reads == [
        ("insurer", [vitals["record_id"]]),
        ("insurer", [visit["record_id"]]),
        ("insurer", [lab["record_id"]]),
    ]
    text = patient_cli(key, clinic.url, "claims")
    assert "v1 pended" in text
    assert "v2 approved" in text
    assert "read by insurer" in text

    # Nothing of the Claim or the ClaimResponse is on the ledger in the clear.
    chain = ledger_bytes(net)
    for secret in (MISSING.encode(), b"99213", b"Settled in full", b"Organization/clinic"):
        assert secret not in chain


def _forged_decisions(net: HealthNet, claim_id: str) -> list[bytes]:
    """A decision naming the addressed insurer as sender under a stranger's signature, and the
    stranger's own correctly signed decision (not addressed to it)."""
    chain_id = str(net["clinic"].get("/v1/health/institution").json()["chain_id"])
    stranger = Identity.from_secrets(digest(b"forger-sign"), digest(b"forger-enc"))
    envelope = EnvelopeWire(bytes(24), bytes(16), (WrappedKey(bytes(32), bytes(SEALED_KEY_SIZE)),))
    body = encode(DecideClaimBody(bytes.fromhex(claim_id), 1, "approved", envelope))
    _, raw, _ = sign_tx(stranger, chain_id=chain_id, kind="health.decide_claim", body=body)
    tx, _ = decode_tx(raw)
    insurer_key = bytes.fromhex(key_of(net, "insurer"))
    forged = encode(dataclasses.replace(tx, sender=insurer_key))  # the insurer's name, not its signature
    return [forged, raw]


@dataclasses.dataclass(frozen=True, slots=True)
class ApiClient:
    """What the demo's institution clients are: a name and `call`, raising on an HTTP error."""

    name: str
    url: str
    token: str

    def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        data = json.dumps(body).encode() if body is not None else None
        reply = request(self.url, method, path, body=data, headers=headers)
        if reply.status >= 400:
            raise NodeError(f"{self.name}: {method} {path}: {reply.status}")
        return reply.json()


def test_demo_insurer_story_runs_and_withholds_the_labelled_record(net: HealthNet) -> None:
    patient = PatientClient(net["clinic"].url, Identity.generate())
    patient.register()
    net.sync()
    clients = {name: ApiClient(name, i.url, i.token) for name, i in net.institutions.items()}
    roles = {"clinic": "clinic", "insurer": "insurer", "insurer-b": "insurer"}
    lines: list[str] = []
    claim_id = run_insurer_story(clients, roles, patient, lines.append)
    assert claim_id is not None
    text = "\n".join(lines)
    assert "may not read the Condition (labelled" in text
    assert "read the Observation" in text
    assert "read the Encounter" in text
    assert f"claim {claim_id[:16]} version 1: approved (Settled in full)" in text
    assert sum("for this claim" in line for line in lines) == 2
