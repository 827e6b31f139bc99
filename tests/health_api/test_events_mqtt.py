"""Ledger events over a REAL mosquitto broker (issue 11, ADR 0015): ACLs, kill and restart.

The hospital's node publishes (`[mqtt] url`); the broker's ACL and password files are generated
by `medledger mqtt acl`. A scripted consent story runs; the broker is killed mid-story (the chain
goes on committing) and restarted, then the publishing node is restarted too. Then: a plain
MQTT subscriber of the patient's topic saw the events before the kill, in order; the SDK
subscriptions (MQTT live, gaps from `/v1/events`) of the patient and of the hospital end with
every event of the story exactly once, in order; a plain subscriber across the node's restart
sees no event twice (the node resumes from its cursor); the clinic's broker user receives nothing
of the hospital's or the patient's topics and its forged publish is refused; a wrong password is
refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import aiomqtt
import nacl.pwhash.argon2id
from click.testing import CliRunner
from health_harness import DEADLINE_S, NODE_ENV, PASSPHRASE, POLL_S, Institution, observation, wait_for
from mosquitto_harness import Mosquitto, collect_raw

from medledger.crypto import Identity
from medledger.health.event_subscription import EventSubscription, fetch_institution_events
from medledger.health.event_topics import (
    compute_patient_subscription,
    get_institution_topic,
    get_institution_username,
)
from medledger.health.sdk import PatientClient
from medledger.node.cli import main
from medledger.node.mqtt_acl import get_node_username
from medledger.node.process import NodeProcess
from medledger.node.testnet import create_testnet

PATIENT_STORY = [
    "record.added",
    "inquiry.filed",
    "inquiry.denied",
    "inquiry.filed",
    "inquiry.granted",
    "record.read",
    "grant.revoked",
]
BEFORE_KILL = PATIENT_STORY[:4]
HOSPITAL_STORY = PATIENT_STORY[1:]


async def collect(subscription: EventSubscription, into: list[dict[str, Any]]) -> None:
    async for event in subscription.events():
        into.append(event)


def height(institution: Institution) -> int:
    return int(institution.get("/status").json()["height"])


def sync(*institutions: Institution) -> None:
    target = max(height(i) for i in institutions)
    deadline = time.monotonic() + DEADLINE_S
    while min(height(i) for i in institutions) < target:
        assert time.monotonic() < deadline
        time.sleep(POLL_S)  # polling a condition with a deadline


async def test_events_over_mosquitto_survive_a_broker_kill_and_respect_acls(tmp_path: Path) -> None:
    nodes = create_testnet(
        tmp_path / "net",
        validators=2,
        chain_id="medledger-events-test",
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
    tasks: list[asyncio.Task[None]] = []
    clients = contextlib.AsyncExitStack()  # the plain MQTT subscribers
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

        # The broker's access files, from the (stopped) publishing node's home.
        processes[1].stop()
        out = tmp_path / "broker"
        result = CliRunner().invoke(
            main, ["mqtt", "acl", "--home", str(hospital_node.home), "--out", str(out)], env=dict(NODE_ENV)
        )
        assert result.exit_code == 0, (result.output, result.exception)
        assert "1 patients" in result.output
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
        start = (await asyncio.to_thread(alice.list_events, 0, 1000))[1]

        # Subscribers: the patient (credentials derived on the device), the hospital (its password).
        user, password, topic = compute_patient_subscription(
            alice.identity, "medledger-events-test", hospital_key.sign_key, hospital_key.enc_key
        )
        raw_events: list[dict[str, Any]] = []
        raw = await clients.enter_async_context(
            aiomqtt.Client("127.0.0.1", broker.port, username=user, password=password)
        )
        await raw.subscribe(topic, qos=1)
        tasks.append(asyncio.create_task(collect_raw(raw, raw_events)))
        patient_events: list[dict[str, Any]] = []
        # The SDK's subscription: the same credentials, derived on the device; gaps from the
        # hospital's node, which is restarted mid-story (the subscription waits for it).
        patient_sub = alice.subscribe_events(
            host="127.0.0.1",
            port=broker.port,
            node_sign_key=hospital_key.sign_key,
            node_enc_key=hospital_key.enc_key,
            after=start,
        )
        assert (patient_sub.username, patient_sub.password, patient_sub.topic) == (user, password, topic)
        tasks.append(asyncio.create_task(collect(patient_sub, patient_events)))
        hospital_events: list[dict[str, Any]] = []
        hospital_user = get_institution_username(hospital_key.sign_key)
        hospital_sub = EventSubscription(
            host="127.0.0.1",
            port=broker.port,
            username=hospital_user,
            password=credentials[hospital_user],
            topic=get_institution_topic("medledger", hospital_key.sign_key),
            fetch=fetch_institution_events(hospital.url, hospital.token),
            after=start,
        )
        tasks.append(asyncio.create_task(collect(hospital_sub, hospital_events)))
        await wait_for(lambda: patient_sub.connections == 1 and hospital_sub.connections == 1, "subscribed")

        # The story's first half, live.
        patient_id = alice.patient_id.hex()
        record_id = await asyncio.to_thread(clinic.add_record, patient_id, observation(5.4))
        q1 = await asyncio.to_thread(hospital.inquire, patient_id, "TREAT", ["Observation"])
        await asyncio.to_thread(sync, clinic, hospital)
        await asyncio.to_thread(alice.deny, bytes.fromhex(q1))
        q2 = await asyncio.to_thread(hospital.inquire, patient_id, "TREAT", ["Observation"])
        await wait_for(lambda: len(raw_events) >= 4, f"live events: {raw_events}")
        assert [e["kind"] for e in raw_events] == BEFORE_KILL
        assert [e["seq"] for e in raw_events] == sorted(e["seq"] for e in raw_events)

        # The broker dies; the chain goes on committing (the grant, the read).
        broker.kill()
        await asyncio.to_thread(sync, clinic, hospital)
        await asyncio.to_thread(alice.grant, bytes.fromhex(q2))
        await asyncio.to_thread(sync, clinic, hospital)
        read = await asyncio.to_thread(hospital.read, record_id)
        assert read.status == 200, read
        broker.start()
        # A second plain subscriber, then the publishing node is restarted mid-story: it resumes
        # from its cursor, so this subscriber sees each event once (no republishing).
        raw2_events: list[dict[str, Any]] = []
        raw2 = await clients.enter_async_context(
            aiomqtt.Client("127.0.0.1", broker.port, username=user, password=password)
        )
        await raw2.subscribe(topic, qos=1)
        tasks.append(asyncio.create_task(collect_raw(raw2, raw2_events)))
        await wait_for(
            lambda: len(patient_events) >= 6, f"patient after the broker came back: {patient_events}"
        )
        processes[1].stop()
        processes[1] = NodeProcess(hospital_node.home, env=dict(NODE_ENV), use_config_ports=True)
        processes[1].start()
        hospital = Institution(
            "hospital", processes[1].wait_ready(60.0), hospital_node.api_token, hospital_node.home
        )
        (grant,) = await asyncio.to_thread(alice.list_grants)
        await asyncio.to_thread(alice.revoke, grant.grant_id)

        # Every event exactly once, in order, for both subscriptions.
        await wait_for(lambda: len(patient_events) >= len(PATIENT_STORY), f"patient: {patient_events}")
        await wait_for(lambda: len(hospital_events) >= len(HOSPITAL_STORY), f"hospital: {hospital_events}")
        await wait_for(lambda: patient_sub.connections >= 2, "the subscription reconnected")
        ledger = (await asyncio.to_thread(alice.list_events, start, 1000))[0]
        assert [e["kind"] for e in patient_events] == PATIENT_STORY
        assert patient_events == ledger
        assert [e["kind"] for e in hospital_events] == HOSPITAL_STORY
        assert len({e["seq"] for e in patient_events}) == len(patient_events)
        await wait_for(lambda: any(e["kind"] == "grant.revoked" for e in raw2_events), f"raw2: {raw2_events}")
        # What it saw (the queued events if they were sent after it subscribed, then the rest) once.
        kinds = [e["kind"] for e in raw2_events]
        assert kinds == PATIENT_STORY[len(PATIENT_STORY) - len(kinds) :], kinds
        assert len({e["seq"] for e in raw2_events}) == len(raw2_events)

        # ACLs: the clinic's broker user subscribes to the hospital's topic, the patient's and
        # everything, and forges an event on the patient's topic; then an event for both is committed.
        clinic_user = get_institution_username(clinic_node.identity.public.sign_key)
        spied: list[dict[str, Any]] = []
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, username=clinic_user, password=credentials[clinic_user]
        ) as spy:
            for stolen in (get_institution_topic("medledger", hospital_key.sign_key), topic, "medledger/#"):
                await spy.subscribe(stolen, qos=1)
            tasks.append(asyncio.create_task(collect_raw(spy, spied)))
            forged = {**patient_events[0], "seq": 2**60, "kind": "inquiry.granted"}
            await spy.publish(topic, json.dumps([forged]).encode(), qos=1)
            q3 = await asyncio.to_thread(hospital.inquire, patient_id, "TREAT", ["Observation"])
            await wait_for(lambda: any(e.get("inquiry_id") == q3 for e in patient_events), "the new inquiry")
            await wait_for(lambda: any(e.get("inquiry_id") == q3 for e in hospital_events), "the hospital's")
            assert spied == []  # refused by the broker's ACL: nothing of theirs reached the clinic
            assert all(e["seq"] != 2**60 for e in raw_events + patient_events)  # the forgery was refused
        assert "Denied PUBLISH" in broker.log
        # A wrong password is refused at CONNECT.
        refused = False
        try:
            async with aiomqtt.Client("127.0.0.1", broker.port, username=user, password="0" * 64):
                pass
        except aiomqtt.MqttError:
            refused = True
        assert refused
    finally:
        # Every step runs whatever the others raise: nothing this test started outlives it.
        with contextlib.ExitStack() as cleanup:
            if broker is not None:
                cleanup.callback(broker.stop)
            for process in processes:
                cleanup.callback(process.stop)
            failures = await stop_tasks(tasks)
            with contextlib.suppress(aiomqtt.MqttError):
                await clients.aclose()
    assert failures == [], failures  # a collector that died of an error, not of the cancellation


async def stop_tasks(tasks: list[asyncio.Task[None]]) -> list[BaseException]:
    """Cancel the collectors and wait for them; the errors they ended with other than that."""
    for task in tasks:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return [
        r
        for r in results
        if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError | aiomqtt.MqttError)
    ]
