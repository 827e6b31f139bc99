"""The patient's rights end to end (issue 14), through the real institution API and the real patient CLI.

A clinic and a hospital, each its own node process, and a patient whose key never leaves the test's
"device". Right of access: the patient asks the hospital for its records; the hospital's system
lists the open request with its 30-day deadline, uploads what it holds and closes the request on the
ledger; the patient sees it closed. Right to amend: the patient asks the clinic to correct two
records; the clinic accepts one by superseding it and refuses the other with a reason; the patient
attaches a statement of disagreement, and the hospital, granted later, reads it with the record.
Everything is in the patient's audit trail, which the CLI verifies against the chain. Hostile
requests (another institution closing or answering, another patient disagreeing, a replay, oversize
bodies) are refused with a 4xx problem and change nothing.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from health_harness import (
    PATIENT_ENV,
    HealthNet,
    assert_problem,
    make_patient_key,
    observation,
    patient_cli,
    request,
    start_health_net,
)
from lying_proxy import LyingProxy

from medledger.chain.codec import decode, encode
from medledger.health.fhir import compute_canonical_json
from medledger.health.records import get_verified_record_key
from medledger.health.rights_seal import build_disagree, seal_statement
from medledger.health.rights_types import (
    AMENDMENT_TEXT_LENGTH_MAX,
    RECORDS_REQUEST_DEADLINE_MS,
    RecordsRequestState,
)
from medledger.health.sdk import NodeMisbehaviourError, PatientClient, load_genesis_pin
from medledger.health.types import compute_patient_id
from medledger.node.cli import main

WRONG = "Der Wert 9,9 stammt von einem anderen Patienten; bitte korrigieren."
FIX = "The value is 7.2 mmol/L, not 7.0."
REFUSAL = "Checked against the laboratory report: the value stands."
STATEMENT = "Je conteste : la mesure a été prise juste après un repas."


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HealthNet]:
    with start_health_net(
        tmp_path_factory.mktemp("rights") / "net", {"clinic": "clinic", "hospital": "hospital"}
    ) as started:
        yield started


def ledger_bytes(net: HealthNet) -> bytes:
    """Every committed block as the node stores it (msgpack), to look for plaintext."""
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


def test_records_request_and_amendments_with_a_statement_a_granted_reader_sees(
    net: HealthNet, tmp_path: Path
) -> None:
    clinic, hospital = net["clinic"], net["hospital"]
    key = tmp_path / "patient.key"
    identity = make_patient_key(key)
    patient_id = compute_patient_id(identity.public.sign_key).hex()
    patient_cli(key, clinic.url, "register")
    net.sync()

    # --- right of access: ask the hospital for its records --------------------------------------
    out = patient_cli(
        key, clinic.url, "request-records", "hospital", "--type", "Observation", "--from", "2020-01-01"
    )
    assert "due by" in out
    net.sync()
    mine = [r for r in hospital.get("/v1/health/institution/records-requests?status=open").json()["requests"]]
    (pending,) = [r for r in mine if r["patient_id"] == patient_id]
    request_id = pending["request_id"]
    assert pending["record_types"] == ["Observation"]
    assert pending["deadline_ms"] == pending["time_ms"] + RECORDS_REQUEST_DEADLINE_MS
    assert (pending["status"], pending["overdue"], pending["institution_name"]) == ("open", False, "hospital")
    assert pending["from_ms"] == 1_577_836_800_000  # 2020-01-01 UTC
    shown = json.loads(patient_cli(key, hospital.url, "requests", "--json"))
    assert [(r["request_id"], r["status"], r["institution"]) for r in shown] == [
        (request_id, "open", "hospital")
    ]
    assert shown[0]["deadline_ms"] == pending["deadline_ms"]
    # Addressed to the hospital: the clinic neither lists nor closes it.
    listed = clinic.get("/v1/health/institution/records-requests").json()["requests"]
    assert request_id not in [r["request_id"] for r in listed]
    assert_problem(clinic.post(f"/v1/health/institution/records-requests/{request_id}/close", {}), 403)

    # The hospital uploads what it holds, and closes the request citing it.
    held = observation(5.1)
    uploaded = hospital.add_record(patient_id, held)
    closing = f"/v1/health/institution/records-requests/{request_id}/close"
    reply = hospital.post(closing, {"record_ids": [uploaded]})
    assert reply.status == 201, reply
    assert_problem(hospital.post(closing, {}), 409)  # closing twice
    net.sync()
    shown = json.loads(patient_cli(key, clinic.url, "requests", "--json"))
    assert [(r["status"], r["record_ids"], r["closed_late"]) for r in shown] == [
        ("closed", [uploaded], False)
    ]
    assert "closed" in patient_cli(key, clinic.url, "requests")
    closed = hospital.get("/v1/health/institution/records-requests?status=closed").json()["requests"]
    assert request_id in [r["request_id"] for r in closed]
    local = json.loads(patient_cli(key, clinic.url, "records", "--json"))
    assert [compute_canonical_json(r["resource"]) for r in local] == [compute_canonical_json(held)]

    # --- right to amend ----------------------------------------------------------------------------
    wrong = clinic.add_record(patient_id, observation(9.9))
    almost = clinic.add_record(patient_id, observation(7.0))
    net.sync()
    patient_cli(key, hospital.url, "amend", wrong[:16], "--text", WRONG)
    patient_cli(key, hospital.url, "amend", almost[:16], "--text", FIX)
    net.sync()
    asked = clinic.get("/v1/health/institution/amendments?status=open").json()["amendments"]
    by_record = {a["record_id"]: a for a in asked if a["patient_id"] == patient_id}
    assert (by_record[wrong]["text"], by_record[almost]["text"]) == (WRONG, FIX)
    refused_id, accepted_id = by_record[wrong]["amendment_id"], by_record[almost]["amendment_id"]
    # The hospital wrote neither record: it sees no request and cannot answer one.
    assert hospital.get("/v1/health/institution/amendments").json()["amendments"] == []
    refuse = f"/v1/health/institution/amendments/{refused_id}/refuse"
    assert_problem(hospital.post(refuse, {"reason": "no"}), 403)
    assert_problem(
        hospital.post(
            f"/v1/health/institution/amendments/{accepted_id}/accept", {"resource": observation(1.0)}
        ),
        403,
    )

    # The clinic accepts one by superseding the record, and refuses the other with a reason.
    corrected = observation(7.2)
    reply = clinic.post(f"/v1/health/institution/amendments/{accepted_id}/accept", {"resource": corrected})
    assert reply.status == 201, reply
    correction = reply.json()["record_id"]
    assert reply.json()["supersedes"] == almost
    assert clinic.post(refuse, {"reason": REFUSAL}).status == 201
    assert_problem(clinic.post(refuse, {"reason": REFUSAL}), 409)
    net.sync()
    answers = {a["amendment_id"]: a for a in json.loads(patient_cli(key, clinic.url, "amendments", "--json"))}
    assert (answers[accepted_id]["status"], answers[accepted_id]["correction_id"]) == ("accepted", correction)
    assert (answers[refused_id]["status"], answers[refused_id]["refusal_reason"]) == ("refused", REFUSAL)
    assert answers[refused_id]["text"] == WRONG
    records = {r["record_id"]: r for r in json.loads(patient_cli(key, clinic.url, "records", "--json"))}
    assert compute_canonical_json(records[correction]["resource"]) == compute_canonical_json(corrected)

    # The patient disagrees; the statement travels with the record.
    assert "statement of disagreement" in patient_cli(
        key, clinic.url, "disagree", refused_id[:16], "--text", STATEMENT
    )
    net.sync()
    assert clinic.read(wrong).json()["statements"][0]["statement"] == STATEMENT  # the author reads it
    (listed_amendment,) = [
        a
        for a in clinic.get("/v1/health/institution/amendments?status=refused").json()["amendments"]
        if a["amendment_id"] == refused_id
    ]
    assert listed_amendment["statement"] == STATEMENT
    # The hospital can read neither the record nor the statement until it is granted.
    assert "statements" not in assert_problem(hospital.read(wrong), 403)
    inquiry = hospital.inquire(patient_id, "TREAT", ["Observation"])
    net.sync()
    assert "granted" in patient_cli(key, hospital.url, "grant", inquiry, "--yes")
    net.sync()
    body = hospital.read(wrong).json()
    assert compute_canonical_json(body["resource"]) == compute_canonical_json(observation(9.9))
    assert [(s["amendment_id"], s["statement"], s["readable"]) for s in body["statements"]] == [
        (refused_id, STATEMENT, True)
    ]
    assert hospital.read(uploaded).json()["statements"] == []

    # No free text in the clear on the ledger.
    chain = ledger_bytes(net)
    for text in (WRONG, FIX, REFUSAL, STATEMENT):
        assert text.encode() not in chain

    # All of it in the patient's audit trail, which the client verifies against the chain.
    trail = json.loads(patient_cli(key, clinic.url, "audit", "--json"))
    story = [(e["event"], e["actor_name"]) for e in trail]
    assert story[:8] == [
        ("records_request", "patient"),
        ("records_request_closed", "hospital"),
        ("amendment_request", "patient"),
        ("amendment_request", "patient"),
        ("amendment_accepted", "clinic"),
        ("amendment_refused", "clinic"),
        ("disagreement", "patient"),
        ("inquiry", "hospital"),
    ]
    assert trail[1]["record_ids"] == [uploaded]
    assert trail[4]["record_ids"] == [correction]
    assert "verified" in patient_cli(key, hospital.url, "verify")


def test_invalid_rights_requests_are_refused_and_change_nothing(net: HealthNet, tmp_path: Path) -> None:
    clinic, hospital = net["clinic"], net["hospital"]
    key, other_key = tmp_path / "patient.key", tmp_path / "other.key"
    identity, other = make_patient_key(key), make_patient_key(other_key)
    patient_id = compute_patient_id(identity.public.sign_key).hex()
    patient_cli(key, clinic.url, "register")
    patient_cli(other_key, clinic.url, "register")
    net.sync()
    record = clinic.add_record(patient_id, observation(4.4))
    net.sync()
    patient_cli(key, clinic.url, "amend", record[:16], "--text", "wrong")
    net.sync()
    sdk = PatientClient(clinic.url, identity)
    (amendment,) = sdk.list_amendments()
    refuse = f"/v1/health/institution/amendments/{amendment.amendment_id.hex()}/refuse"

    # Oversize and malformed bodies: 4xx problems, nothing on the ledger.
    assert_problem(clinic.post(refuse, {"reason": "x" * (AMENDMENT_TEXT_LENGTH_MAX + 1)}), 400)
    assert_problem(clinic.post(refuse, {"reason": "bell\u0007"}), 422)
    assert_problem(clinic.post(refuse, {"reason": "ok", "extra": 1}), 400)
    assert_problem(clinic.post(refuse, {"reason": "\ud800"}), 422)
    too_many = {"record_ids": [f"{i:064x}" for i in range(257)]}
    assert_problem(clinic.post(f"/v1/health/institution/records-requests/{'ab' * 32}/close", too_many), 400)
    assert_problem(clinic.post(f"/v1/health/institution/records-requests/{'ab' * 32}/close", {}), 404)
    assert_problem(
        clinic.post(f"/v1/health/institution/amendments/{'cd' * 32}/accept", {"resource": observation(1)}),
        404,
    )
    assert_problem(clinic.get("/v1/health/institution/amendments?status=maybe"), 400)
    assert_problem(clinic.get("/v1/health/institution/records-requests?status=late"), 400)
    before = sdk.list_amendments()
    assert [a.status for a in before] == ["open"]

    # The clinic refuses; another patient cannot attach a statement (refused at admission), the
    # patient can, and replaying the patient's very transaction is refused as a duplicate.
    assert clinic.post(refuse, {"reason": "The value stands."}).status == 201
    net.sync()
    (refused,) = sdk.list_amendments()
    ledger = sdk.sync()
    stored = ledger.get_record(refused.record_id)
    assert stored is not None
    statement = seal_statement(
        "I disagree.", record_key=get_verified_record_key(stored, identity), amendment=refused
    )
    _, raw_other, _ = build_disagree(other, refused, statement, chain_id=sdk.chain_id)
    submit = {"Content-Type": "application/json", **clinic.auth}
    body = json.dumps({"tx": base64.b64encode(raw_other).decode()}).encode()
    problem = assert_problem(
        request(clinic.url, "POST", "/v1/txs?wait_ms=5000", body=body, headers=submit), 422
    )
    assert problem["rule"] == "health.not_authorised"
    _, raw, _ = build_disagree(identity, refused, statement, chain_id=sdk.chain_id)
    body = json.dumps({"tx": base64.b64encode(raw).decode()}).encode()
    assert request(clinic.url, "POST", "/v1/txs?wait_ms=5000", body=body, headers=submit).status == 200
    assert_problem(request(hospital.url, "POST", "/v1/txs?wait_ms=5000", body=body, headers=submit), 409)
    net.sync()
    (final,) = sdk.list_amendments()
    assert final.statement == (statement,)
    assert sdk.amendment_texts(final).statement == "I disagree."
    # The other patient's client sees no amendment of theirs.
    assert PatientClient(clinic.url, other).list_amendments() == []


def test_a_node_lying_about_a_records_request_is_named(net: HealthNet, tmp_path: Path) -> None:
    """A node that shows an unanswered request as closed (or hides an amendment) is named by the
    patient's client, which takes both from the chain it verified."""
    hospital = net["hospital"]
    key = tmp_path / "patient.key"
    identity = make_patient_key(key)
    patient_cli(key, hospital.url, "register")
    net.sync()
    patient_cli(key, hospital.url, "request-records", "clinic")
    net.sync()

    def close_it(path: str, body: Any) -> Any:
        if path.endswith("/records-requests"):
            for item in body["requests"]:
                real = decode(RecordsRequestState, base64.b64decode(item["encoded"]), max_bytes=1 << 20)
                fake = dataclasses.replace(real, status="closed", close_id=b"\x01" * 32)
                item["encoded"] = base64.b64encode(encode(fake)).decode()
        if path.endswith("/amendments"):
            body["amendments"], body["total"] = [], 0
        return body

    with LyingProxy(hospital.url) as proxy:
        proxy.rewrite = close_it
        client = PatientClient(proxy.url, identity, genesis_hash=load_genesis_pin(key))
        with pytest.raises(NodeMisbehaviourError) as caught:
            client.list_records_requests()
        assert (caught.value.node_url, caught.value.what) == (proxy.url, "records request")
        result = CliRunner().invoke(
            main, ["patient", "--key", str(key), "--url", proxy.url, "requests"], env=dict(PATIENT_ENV)
        )
        assert result.exit_code != 0
        assert f"the node at {proxy.url}" in result.output
    (honest,) = PatientClient(
        hospital.url, identity, genesis_hash=load_genesis_pin(key)
    ).list_records_requests()
    assert honest.status == "open"
