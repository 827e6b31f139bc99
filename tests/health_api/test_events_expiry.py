"""Grant expiry events through two REAL node processes and a REAL mosquitto (issue 11, ADR 0015).

A patient grants the hospital two short-lived inquiries and revokes one of them at once. When the
chain's time has passed both expiries, the next block yields exactly one `grant.expired` (the kept
grant's), which reaches: the patient through `GET /v1/events` of either node (both derive the
same list), the hospital's token (the grantee) but not the clinic's, the hospital's SSE stream,
and the MQTT topics the hospital's node publishes (the patient's token topic and its own).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import nacl.pwhash.argon2id
from click.testing import CliRunner
from health_harness import DEADLINE_S, NODE_ENV, PASSPHRASE, POLL_S, Institution, observation, wait_for
from mosquitto_harness import Mosquitto, collect_raw

from medledger.crypto import Identity
from medledger.health.event_topics import (
    compute_patient_subscription,
    get_institution_topic,
    get_institution_username,
)
from medledger.health.events import EVENT_GRANT_EXPIRED, EXPIRY_TX_INDEX_FIRST
from medledger.health.sdk import PatientClient
from medledger.node.cli import main
from medledger.node.mqtt_acl import get_node_username
from medledger.node.process import NodeProcess
from medledger.node.testnet import create_testnet

CHAIN_ID = "medledger-expiry-test"
#: Long enough for the patient to grant (and revoke) before the inquiries close.
TTL_MS = 6_000


def height(institution: Institution) -> int:
    return int(institution.get("/status").json()["height"])


def sync(*institutions: Institution) -> None:
    target = max(height(i) for i in institutions)
    deadline = time.monotonic() + DEADLINE_S
    while min(height(i) for i in institutions) < target:
        assert time.monotonic() < deadline
        time.sleep(POLL_S)  # polling a condition with a deadline


def all_events(fetch: Callable[[int], tuple[list[dict[str, Any]], int]]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page, after_next = fetch(after)
        events.extend(page)
        if after_next == after:
            return events
        after = after_next


def institution_fetch(institution: Institution) -> Callable[[int], tuple[list[dict[str, Any]], int]]:
    def fetch(after: int) -> tuple[list[dict[str, Any]], int]:
        reply = institution.get(f"/v1/events?after={after}&limit=1000")
        assert reply.status == 200, reply
        return reply.json()["events"], reply.json()["next"]

    return fetch


def inquire(hospital: Institution, patient_id: str) -> str:
    body = {
        "patient_id": patient_id,
        "purpose": "TREAT",
        "reason": "short check",
        "record_types": ["Observation"],
        "ttl_ms": TTL_MS,
    }
    reply = hospital.post("/v1/health/institution/inquiries", body)
    assert reply.status == 201, reply
    return str(reply.json()["inquiry_id"])


def read_one_sse(url: str, headers: dict[str, str], last_id: int) -> dict[str, Any]:
    """The first event of the stream after `last_id` (Last-Event-ID)."""
    parsed = urllib.parse.urlsplit(url)
    assert parsed.port is not None
    connection = http.client.HTTPConnection("127.0.0.1", parsed.port, timeout=DEADLINE_S)
    try:
        connection.request("GET", "/v1/events/stream", headers={**headers, "Last-Event-ID": str(last_id)})
        response = connection.getresponse()
        assert response.status == 200, response.read()
        fields: dict[str, str] = {}
        while True:
            line = response.readline().decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif fields:
                payload: dict[str, Any] = json.loads(fields["data"])
                assert (int(fields["id"]), fields["event"]) == (payload["seq"], payload["kind"])
                return payload
    finally:
        connection.close()


async def test_a_short_grant_expires_once_for_patient_and_grantee_everywhere(tmp_path: Path) -> None:
    nodes = create_testnet(
        tmp_path / "net",
        validators=2,
        chain_id=CHAIN_ID,
        block_interval_ms=50,
        passphrase=PASSPHRASE.encode(),
        key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
        app="health",
        names=["clinic", "hospital"],
        roles=["clinic", "hospital"],
    )
    clinic_node, hospital_node = nodes
    processes = [NodeProcess(n.home, env=dict(NODE_ENV), use_config_ports=True) for n in nodes]
    broker: Mosquitto | None = None
    clients: list[aiomqtt.Client] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for process in processes:
            process.start()
        urls = [process.wait_ready(60.0) for process in processes]
        clinic = Institution("clinic", urls[0], clinic_node.api_token, clinic_node.home)
        alice = PatientClient(urls[1], Identity.generate())
        await asyncio.to_thread(alice.register)
        await asyncio.to_thread(
            sync, clinic, Institution("hospital", urls[1], hospital_node.api_token, hospital_node.home)
        )

        # The hospital's node publishes to a broker whose ACL knows the patient.
        processes[1].stop()
        out = tmp_path / "broker"
        result = CliRunner().invoke(
            main, ["mqtt", "acl", "--home", str(hospital_node.home), "--out", str(out)], env=dict(NODE_ENV)
        )
        assert result.exit_code == 0, (result.output, result.exception)
        credentials = json.loads((out / "credentials.json").read_text())
        hospital_key = hospital_node.identity.public
        node_user = get_node_username(hospital_key.sign_key)
        broker = Mosquitto(tmp_path / "mosquitto", out / "acl", out / "passwd")
        broker.start()
        (hospital_node.home / "mqtt.password").write_text(credentials[node_user])
        with (hospital_node.home / "config.toml").open("a") as config:
            config.write(f'\n[mqtt]\nurl = "mqtt://127.0.0.1:{broker.port}"\nusername = "{node_user}"\n')
            config.write('password_file = "mqtt.password"\n')
        processes[1] = NodeProcess(hospital_node.home, env=dict(NODE_ENV), use_config_ports=True)
        processes[1].start()
        hospital = Institution(
            "hospital", processes[1].wait_ready(60.0), hospital_node.api_token, hospital_node.home
        )
        await asyncio.to_thread(sync, clinic, hospital)

        # Plain MQTT subscribers: the patient's token topic and the hospital's institution topic.
        user, password, patient_topic = compute_patient_subscription(
            alice.identity, CHAIN_ID, hospital_key.sign_key, hospital_key.enc_key
        )
        hospital_user = get_institution_username(hospital_key.sign_key)
        patient_mqtt: list[dict[str, Any]] = []
        hospital_mqtt: list[dict[str, Any]] = []
        for username, secret, topic, into in (
            (user, password, patient_topic, patient_mqtt),
            (
                hospital_user,
                credentials[hospital_user],
                get_institution_topic("medledger", hospital_key.sign_key),
                hospital_mqtt,
            ),
        ):
            subscriber = aiomqtt.Client("127.0.0.1", broker.port, username=username, password=secret)
            await subscriber.__aenter__()
            clients.append(subscriber)
            await subscriber.subscribe(topic, qos=1)
            tasks.append(asyncio.create_task(collect_raw(subscriber, into)))

        # Two short grants; the second is revoked at once.
        patient_id = alice.patient_id.hex()
        await asyncio.to_thread(clinic.add_record, patient_id, observation(5.4))
        kept_inquiry = await asyncio.to_thread(inquire, hospital, patient_id)
        revoked_inquiry = await asyncio.to_thread(inquire, hospital, patient_id)
        await asyncio.to_thread(sync, clinic, hospital)
        await asyncio.to_thread(alice.grant, bytes.fromhex(kept_inquiry))
        await asyncio.to_thread(alice.grant, bytes.fromhex(revoked_inquiry))
        grants = {g.inquiry_id.hex(): g for g in await asyncio.to_thread(alice.list_grants)}
        kept, revoked = grants[kept_inquiry], grants[revoked_inquiry]
        await asyncio.to_thread(alice.revoke, revoked.grant_id)
        await asyncio.to_thread(sync, clinic, hospital)

        # Blocks are made for txs: once the clock has passed both expiries, the next one (a record)
        # is the block the kept grant expires in.
        expires_ms = max(kept.expires_ms, revoked.expires_ms)
        await wait_for(lambda: time.time_ns() // 1_000_000 > expires_ms, "the grants' expiry")

        def expired_events() -> list[dict[str, Any]]:
            events = all_events(lambda after: alice.list_events(after, 1000))
            return [e for e in events if e["kind"] == EVENT_GRANT_EXPIRED]

        deadline = time.monotonic() + DEADLINE_S
        while not await asyncio.to_thread(expired_events):
            assert time.monotonic() < deadline, "no block after the expiry yielded grant.expired"
            await asyncio.to_thread(clinic.add_record, patient_id, observation(6.1))
            await asyncio.to_thread(sync, clinic, hospital)

        # Exactly one, the kept grant's, after its block's txs.
        (expired,) = await asyncio.to_thread(expired_events)
        assert expired["grant_id"] == kept.grant_id.hex()
        assert expired["inquiry_id"] == kept_inquiry
        assert expired["tx_index"] == EXPIRY_TX_INDEX_FIRST
        assert expired["time_ms"] >= kept.expires_ms
        # Both nodes derive the same events for the patient, at a later height too.
        await asyncio.to_thread(clinic.add_record, patient_id, observation(6.2))
        await asyncio.to_thread(sync, clinic, hospital)
        through_hospital = await asyncio.to_thread(all_events, lambda a: alice.list_events(a, 1000))
        other = PatientClient(clinic.url, alice.identity)
        through_clinic = await asyncio.to_thread(all_events, lambda a: other.list_events(a, 1000))
        assert through_clinic == through_hospital
        assert [e for e in through_hospital if e["kind"] == EVENT_GRANT_EXPIRED] == [expired]
        # The grantee's token sees it; the clinic's (not concerned) does not.
        hospital_events = await asyncio.to_thread(all_events, institution_fetch(hospital))
        assert [e for e in hospital_events if e["kind"] == EVENT_GRANT_EXPIRED] == [expired]
        clinic_events = await asyncio.to_thread(all_events, institution_fetch(clinic))
        assert all(e["kind"] != EVENT_GRANT_EXPIRED for e in clinic_events)
        # The hospital's SSE stream carries it (resumed from the event before it).
        before = max(e["seq"] for e in hospital_events if e["seq"] < expired["seq"])
        assert await asyncio.to_thread(read_one_sse, hospital.url, hospital.auth, before) == expired
        # MQTT: the patient's topic and the hospital's, once each.
        await wait_for(
            lambda: (
                any(e["kind"] == EVENT_GRANT_EXPIRED for e in patient_mqtt)
                and any(e["kind"] == EVENT_GRANT_EXPIRED for e in hospital_mqtt)
            ),
            f"grant.expired over MQTT: {patient_mqtt} {hospital_mqtt}",
        )
        for received in (patient_mqtt, hospital_mqtt):
            assert [e for e in received if e["kind"] == EVENT_GRANT_EXPIRED] == [expired]
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
        for subscriber in clients:
            with contextlib.suppress(aiomqtt.MqttError):
                await subscriber.__aexit__(None, None, None)
        for process in processes:
            with contextlib.suppress(Exception):
                process.stop()
        if broker is not None:
            broker.stop()
