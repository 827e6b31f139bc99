"""Ledger events (issue 11, ADR 0015) through the real API of two real node processes.

A scripted consent story runs (register, write, inquire, deny, inquire, grant, read, revoke);
then each audience reads its events: the patient (signed request) all of theirs, each institution
(its token) those that concern it; both nodes derive the same events; a resumed read returns
exactly the rest; no payload holds the patient id or the inquiry's free text; bad cursors are
refused as problem+json; the SSE stream resumes from `Last-Event-ID` and sends heartbeats.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from health_harness import (
    DEADLINE_S,
    NODE_ENV,
    HealthNet,
    Institution,
    assert_problem,
    make_patient_key,
    observation,
    patient_cli,
    request,
)

from medledger.crypto import Identity
from medledger.health.auth import build_authorization
from medledger.health.events import get_seq_height
from medledger.health.sdk import PatientClient
from medledger.node.cli import main

STORY_PATIENT = [
    "patient.registered",
    "record.added",
    "inquiry.filed",
    "inquiry.denied",
    "inquiry.filed",
    "inquiry.granted",
    "record.read",
    "grant.revoked",
]
STORY_HOSPITAL = STORY_PATIENT[2:]


def all_events(client: PatientClient | Institution, height: int, *, limit: int = 3) -> list[dict[str, Any]]:
    """Every visible event up to block `height`, page by page (small pages: paging is exercised)."""
    events: list[dict[str, Any]] = []
    after = 0
    while get_seq_height(after) < height:
        if isinstance(client, PatientClient):
            page, after_next = client.list_events(after, limit)
        else:
            reply = client.get(f"/v1/events?after={after}&limit={limit}")
            assert reply.status == 200, reply
            page, after_next = reply.json()["events"], reply.json()["next"]
        assert after_next > after or (not page and after_next == after)
        events.extend(e for e in page if e["height"] <= height)
        after = after_next
    return events


def signed_headers(client: PatientClient, target: str) -> dict[str, str]:
    challenge = json.loads(request(client.url, "POST", "/v1/auth/challenge").body)
    header = build_authorization(
        client.identity,
        chain_id=challenge["chain_id"],
        challenge=bytes.fromhex(challenge["challenge"]),
        method="GET",
        target=target,
        time_ms=time.time_ns() // 1_000_000,
        patient_id=client.patient_id,
    )
    return {"Authorization": header}


def read_sse(
    url: str, target: str, headers: dict[str, str], want_events: int
) -> tuple[list[dict[str, Any]], int]:
    """Read the stream until `want_events` events and one heartbeat arrived; (events, heartbeats)."""
    parsed = urllib.parse.urlsplit(url)
    assert parsed.port is not None
    connection = http.client.HTTPConnection("127.0.0.1", parsed.port, timeout=DEADLINE_S)
    events: list[dict[str, Any]] = []
    heartbeats = 0
    try:
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        assert response.status == 200, response.read()
        assert response.getheader("Content-Type", "").startswith("text/event-stream")
        deadline = time.monotonic() + DEADLINE_S
        current: dict[str, str] = {}
        while len(events) < want_events or heartbeats == 0:
            assert time.monotonic() < deadline, (events, heartbeats)
            line = response.readline().decode().rstrip("\n")
            if line.startswith(": heartbeat"):
                heartbeats += 1
            elif line.startswith(":"):
                continue
            elif line:
                name, _, value = line.partition(": ")
                current[name] = value
            elif current:
                payload = json.loads(current["data"])
                assert int(current["id"]) == payload["seq"]
                assert current["event"] == payload["kind"]
                events.append(payload)
                current = {}
    finally:
        connection.close()
    return events, heartbeats


def test_events_of_a_consent_story_for_each_audience(clinic_and_hospital: HealthNet, tmp_path: Path) -> None:
    net = clinic_and_hospital
    clinic, hospital = net["clinic"], net["hospital"]
    key = tmp_path / "alice.key"
    alice = PatientClient(hospital.url, make_patient_key(key))
    patient_cli(key, hospital.url, "register")
    net.sync()
    patient_id = alice.patient_id.hex()
    record_id = clinic.add_record(patient_id, observation(5.4))
    q1 = hospital.inquire(patient_id, "TREAT", ["Observation"])
    net.sync()
    alice.deny(bytes.fromhex(q1))
    q2 = hospital.inquire(patient_id, "TREAT", ["Observation"])
    net.sync()
    alice.grant(bytes.fromhex(q2))
    net.sync()
    assert hospital.read(record_id).status == 200
    (grant,) = alice.list_grants()
    alice.revoke(grant.grant_id)
    net.sync()
    height = min(net.heights())

    # The patient sees the whole story, in chain order, numbered strictly increasing.
    mine = all_events(alice, height)
    assert [e["kind"] for e in mine] == STORY_PATIENT
    seqs = [e["seq"] for e in mine]
    assert seqs == sorted(set(seqs))
    assert [e.get("inquiry_id") for e in mine if e["kind"].startswith("inquiry.")] == [q1, q1, q2, q2]
    assert mine[1]["record_id"] == record_id
    assert mine[5]["grant_id"] == grant.grant_id.hex()
    # Any node derives the same events: the patient's view through the clinic's node is identical.
    assert all_events(PatientClient(clinic.url, alice.identity), height, limit=1000) == mine

    # Each institution sees what concerns it, and nothing else.
    assert [e["kind"] for e in all_events(hospital, height)] == STORY_HOSPITAL
    assert [e["kind"] for e in all_events(clinic, height)] == ["record.added"]
    # Another patient sees none of Alice's events.
    bob = PatientClient(clinic.url, Identity.generate())
    bob.register()
    net.sync()
    assert [e["kind"] for e in all_events(bob, min(net.heights()))] == ["patient.registered"]

    # Resume from any number: exactly the rest.
    page, _ = alice.list_events(mine[2]["seq"], 1000)
    assert page == mine[3:]
    # Ids and kinds only: no patient id, key, purpose or free text anywhere in a payload.
    text = json.dumps(mine)
    for secret in (
        patient_id,
        alice.identity.public.sign_key.hex(),
        "follow-up visit",
        "TREAT",
        "Observation",
    ):
        assert secret not in text

    # The SSE stream: resumes after Last-Event-ID, then sends heartbeats while nothing happens.
    target = "/v1/events/stream?heartbeat_s=1"
    headers = {**signed_headers(alice, target), "Last-Event-ID": str(mine[4]["seq"])}
    streamed, heartbeats = read_sse(hospital.url, target, headers, 3)
    assert streamed == mine[5:]
    assert heartbeats >= 1
    # The institution's stream, from the start, with its token.
    streamed, _ = read_sse(clinic.url, "/v1/events/stream?heartbeat_s=1", clinic.auth, 1)
    assert [e["kind"] for e in streamed] == ["record.added"]

    # `medledger events` (institution) and `medledger patient events`: stopped and run again, they
    # go on exactly where they stopped.
    def institution_cli(*args: str) -> list[dict[str, Any]]:
        result = CliRunner().invoke(main, ["events", "--home", str(hospital.home), *args], env=dict(NODE_ENV))
        assert result.exit_code == 0, (result.output, result.exception)
        return [json.loads(line) for line in result.output.splitlines()]

    first = institution_cli("--count", "2")
    rest = institution_cli()
    assert [e["kind"] for e in first + rest if e["height"] <= height] == STORY_HOSPITAL
    assert institution_cli() == []
    mine_first = [
        json.loads(line) for line in patient_cli(key, hospital.url, "events", "--count", "3").splitlines()
    ]
    mine_rest = [json.loads(line) for line in patient_cli(key, hospital.url, "events").splitlines()]
    assert [e for e in mine_first + mine_rest if e["height"] <= height] == mine


def test_invalid_event_queries_are_refused_as_problems(clinic_and_hospital: HealthNet) -> None:
    clinic = clinic_and_hospital["clinic"]
    before = clinic.get("/v1/events?after=0&limit=1000").json()
    for query in ("after=-1", "after=abc", "after=" + "9" * 21, "limit=0", "limit=1001", "limit=x"):
        assert_problem(clinic.get(f"/v1/events?{query}"), 400)
    for query in ("after=abc", "heartbeat_s=0", "heartbeat_s=301"):
        assert_problem(clinic.get(f"/v1/events/stream?{query}"), 400)
    bad_id = request(clinic.url, "GET", "/v1/events/stream", headers={**clinic.auth, "Last-Event-ID": "1e3"})
    assert_problem(bad_id, 400)
    # Without credentials: 401, on both routes.
    assert_problem(request(clinic.url, "GET", "/v1/events"), 401)
    assert_problem(request(clinic.url, "GET", "/v1/events/stream"), 401)
    assert clinic.get("/v1/events?after=0&limit=1000").json()["events"] == before["events"]
