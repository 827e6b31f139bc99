"""A hostile patient against the MQTT publisher (issue 11, ADR 0015), with a REAL mosquitto.

On a chain made before the ledger refused low-order x25519 keys (state layout 2), Mallory
registers with the all-zero encryption key: no secret can be agreed with it, so no topic or broker
password. The publishing node (`[mqtt] url`, `acl_dir`) must neither stop publishing nor stop
keeping the broker's files: Alice, who registers after, receives her events through the broker;
Mallory's patient is counted in `medledger_mqtt_patients_without_topic_total` and has no broker
user; the node restarts with Mallory in its store (the files are written from the store at start)
and goes on publishing.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import secrets
import time
from pathlib import Path
from typing import Any

import aiomqtt
import nacl.pwhash.argon2id
from click.testing import CliRunner
from health_harness import (
    DEADLINE_S,
    NODE_ENV,
    PASSPHRASE,
    POLL_S,
    Institution,
    observation,
    request,
    wait_for,
)
from mosquitto_harness import Mosquitto, collect_raw

from medledger.chain.codec import encode
from medledger.chain.txbuilder import sign_tx
from medledger.crypto import Identity
from medledger.health.app import decode_genesis, encode_genesis
from medledger.health.event_topics import compute_patient_subscription
from medledger.health.sdk import PatientClient
from medledger.health.types import (
    KIND_REGISTER_PATIENT,
    STATE_LAYOUT_GRANT_EXPIRY,
    HealthGenesis,
    RegisterPatientBody,
    compute_patient_id,
)
from medledger.node.cli import main
from medledger.node.genesis_file import load_genesis, save_genesis
from medledger.node.mqtt_acl import get_node_username
from medledger.node.process import NodeProcess
from medledger.node.testnet import create_testnet

CHAIN_ID = "medledger-mqtt-attacks-test"


def metric(ops_url: str, name: str) -> float:
    for line in request(ops_url, "GET", "/metrics").body.decode().splitlines():
        sample, _, value = line.partition(" ")
        if sample == name:
            return float(value)
    return 0.0


def make_layout_2(genesis_file: Path) -> None:
    """Rewrite a new chain's genesis (before its first start) as a chain made before layout 3."""
    genesis = load_genesis(genesis_file)
    health = decode_genesis(genesis.app_state)
    old = HealthGenesis(health.institutions, STATE_LAYOUT_GRANT_EXPIRY)
    save_genesis(genesis_file, dataclasses.replace(genesis, app_state=encode_genesis(old)))


def register_with_enc_key(clinic: Institution, identity: Identity, enc_key: bytes) -> None:
    body = encode(RegisterPatientBody(enc_key))
    _, raw, _ = sign_tx(identity, chain_id=CHAIN_ID, kind=KIND_REGISTER_PATIENT, body=body, nonce=1)
    reply = request(
        clinic.url,
        "POST",
        "/v1/txs?wait_ms=10000",
        body=json.dumps({"tx": base64.b64encode(raw).decode()}).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert reply.status in (200, 201, 202), reply
    assert reply.json()["status"] == "committed", reply


async def test_a_patient_with_a_low_order_key_stops_no_publishing(tmp_path: Path) -> None:
    (node,) = create_testnet(
        tmp_path / "net",
        validators=1,
        chain_id=CHAIN_ID,
        block_interval_ms=50,
        passphrase=PASSPHRASE.encode(),
        key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
        app="health",
        names=["clinic"],
        roles=["clinic"],
    )
    make_layout_2(node.home / "genesis.json")
    acl_dir = node.home / "broker"
    pid_file = tmp_path / "mosquitto" / "mosquitto.pid"
    broker = Mosquitto(tmp_path / "mosquitto", acl_dir / "acl", acl_dir / "passwd", pid_file=pid_file)
    (node.home / "mqtt.password").write_text(secrets.token_urlsafe(24))
    with (node.home / "config.toml").open("a") as config:
        config.write(
            f'\n[mqtt]\nurl = "mqtt://127.0.0.1:{broker.port}"\n'
            f'username = "{get_node_username(node.identity.public.sign_key)}"\n'
            f'password_file = "mqtt.password"\nacl_dir = "broker"\nbroker_pid_file = "{pid_file}"\n'
        )
    process = NodeProcess(node.home, env=dict(NODE_ENV), use_config_ports=True)
    clients: list[aiomqtt.Client] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        result = CliRunner().invoke(
            main, ["mqtt", "acl", "--home", str(node.home), "--out", str(acl_dir)], env=dict(NODE_ENV)
        )
        assert result.exit_code == 0, (result.output, result.exception)
        broker.start()
        process.start()
        clinic = Institution("clinic", process.wait_ready(60.0), node.api_token, node.home)

        # Mallory registers with the all-zero key (layout 2 accepts it, as it always did).
        mallory = Identity.generate()
        await asyncio.to_thread(register_with_enc_key, clinic, mallory, bytes(32))
        mallory_id = compute_patient_id(mallory.public.sign_key).hex()
        assert clinic.get(f"/v1/health/patients/{mallory_id}").status == 200
        # Nothing can be sealed for her: the institution API says so (a 4xx, not a crash).
        refused = clinic.post(
            "/v1/health/institution/records", {"patient_id": mallory_id, "resource": observation(4.0)}
        )
        assert 400 <= refused.status < 500, refused
        assert refused.content_type == "application/problem+json", refused
        await wait_for(
            lambda: metric(process.ops_url, "medledger_mqtt_patients_without_topic_total") == 1,
            "Mallory counted as a patient without a topic",
        )

        # Alice registers after her; the node adds her to the broker and publishes her events.
        alice = PatientClient(clinic.url, Identity.generate())
        await asyncio.to_thread(alice.register)
        keys = node.identity.public
        user, password, topic = compute_patient_subscription(
            alice.identity, CHAIN_ID, keys.sign_key, keys.enc_key
        )
        received: list[dict[str, Any]] = []

        async def subscribe() -> None:
            deadline = time.monotonic() + DEADLINE_S
            while True:  # refused until the node's rewrite of the files is reloaded
                client = aiomqtt.Client("127.0.0.1", broker.port, username=user, password=password)
                try:
                    await client.__aenter__()
                    break
                except aiomqtt.MqttError:
                    assert time.monotonic() < deadline, "alice was never accepted by the broker"
                    await asyncio.sleep(POLL_S)  # polling a condition with a deadline
            clients.append(client)
            await client.subscribe(topic, qos=1)
            tasks.append(asyncio.create_task(collect_raw(client, received)))

        await subscribe()
        first = await asyncio.to_thread(clinic.add_record, alice.patient_id.hex(), observation(5.1))
        # Her registration's event may come before or after she subscribed: the record's must come.
        await wait_for(lambda: first in [e.get("record_id") for e in received], f"alice: {received}")
        acl = (acl_dir / "acl").read_text()
        assert acl.count("\nuser p-") == 1  # Alice's; Mallory has none

        # Restarted with Mallory in its store, the node writes the files and publishes again.
        process.stop()
        process = NodeProcess(node.home, env=dict(NODE_ENV), use_config_ports=True)
        process.start()
        clinic = Institution("clinic", process.wait_ready(60.0), node.api_token, node.home)
        second = await asyncio.to_thread(clinic.add_record, alice.patient_id.hex(), observation(6.2))
        await wait_for(lambda: second in [e.get("record_id") for e in received], f"alice: {received}")
        assert (acl_dir / "acl").read_text().count("\nuser p-") == 1
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
        for client in clients:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.__aexit__(None, None, None)
        try:
            process.stop()
        finally:
            broker.stop()
