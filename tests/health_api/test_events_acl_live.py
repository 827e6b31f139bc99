"""The broker's ACL kept current by the RUNNING node (`[mqtt] acl_dir`, ADR 0015), real mosquitto.

The operator writes the first files with `medledger mqtt acl` (the node has never run: no
patients), starts mosquitto (which writes its pid file) and the node, which publishes and keeps
the files in its `acl_dir`, sending SIGHUP through `[mqtt] broker_pid_file`. Then, while the node
runs: a patient's derived credentials are refused before they register and accepted after; two
patients each receive their own events through the broker, and the other's credentials receive
nothing of them (an ACL refusal observed by delivery); the institution's password handed out by
the command still works after the node's rewrites; the files are mode 0600; the command refuses
the running node's store and points to `[mqtt] acl_dir`. Then the node is restarted with its `acl`
deleted and writes it again from the store, with both patients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import stat
import time
from pathlib import Path
from typing import Any

import aiomqtt
import nacl.pwhash.argon2id
from click.testing import CliRunner
from health_harness import DEADLINE_S, NODE_ENV, PASSPHRASE, POLL_S, Institution, observation, wait_for
from mosquitto_harness import Mosquitto

from medledger.crypto import Identity
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

CHAIN_ID = "medledger-acl-live-test"


async def is_accepted(port: int, username: str, password: str) -> bool:
    """Whether the broker accepts these credentials at CONNECT."""
    try:
        async with aiomqtt.Client("127.0.0.1", port, username=username, password=password):
            return True
    except aiomqtt.MqttError:
        return False


async def wait_accepted(port: int, username: str, password: str, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await is_accepted(port, username, password):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(POLL_S)  # polling a condition with a deadline


async def collect(client: aiomqtt.Client, into: list[tuple[str, dict[str, Any]]]) -> None:
    async for message in client.messages:
        assert isinstance(message.payload, bytes)
        # A message is a JSON array of a block's events for the topic.
        into.extend((str(message.topic), event) for event in json.loads(message.payload))


def acl_users(acl: Path) -> set[str]:
    return {line.split()[1] for line in acl.read_text().splitlines() if line.startswith("user ")}


async def test_a_patient_registered_while_the_node_runs_receives_their_events_only(tmp_path: Path) -> None:
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
    acl_dir = node.home / "broker"
    pid_file = tmp_path / "mosquitto" / "mosquitto.pid"
    broker = Mosquitto(tmp_path / "mosquitto", acl_dir / "acl", acl_dir / "passwd", pid_file=pid_file)
    node_user = get_node_username(node.identity.public.sign_key)
    (node.home / "mqtt.password").write_text(secrets.token_urlsafe(24))
    with (node.home / "config.toml").open("a") as config:
        config.write(
            f'\n[mqtt]\nurl = "mqtt://127.0.0.1:{broker.port}"\nusername = "{node_user}"\n'
            f'password_file = "mqtt.password"\nacl_dir = "broker"\nbroker_pid_file = "{pid_file}"\n'
        )
    process = NodeProcess(node.home, env=dict(NODE_ENV), use_config_ports=True)
    clients: list[aiomqtt.Client] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        # The operator's first files, before the broker first starts (the node never ran).
        result = CliRunner().invoke(
            main, ["mqtt", "acl", "--home", str(node.home), "--out", str(acl_dir)], env=dict(NODE_ENV)
        )
        assert result.exit_code == 0, (result.output, result.exception)
        assert "0 patients" in result.output
        handed_out = json.loads((acl_dir / "credentials.json").read_text())
        broker.start()
        process.start()
        clinic = Institution("clinic", process.wait_ready(60.0), node.api_token, node.home)

        alice = PatientClient(clinic.url, Identity.generate())
        bob = PatientClient(clinic.url, Identity.generate())
        keys = node.identity.public
        alice_user, alice_password, alice_topic = compute_patient_subscription(
            alice.identity, CHAIN_ID, keys.sign_key, keys.enc_key
        )
        bob_user, bob_password, bob_topic = compute_patient_subscription(
            bob.identity, CHAIN_ID, keys.sign_key, keys.enc_key
        )
        # The node is up and has rewritten the files (no patient yet): alice is refused.
        await wait_for(lambda: "Reloading config" in broker.log, "the node signalled the broker")
        assert not await is_accepted(broker.port, alice_user, alice_password)

        # Both register while the node runs; the node adds each to the broker's files.
        await asyncio.to_thread(alice.register)
        await wait_accepted(broker.port, alice_user, alice_password, "alice accepted after registering")
        assert bob_user not in acl_users(acl_dir / "acl")
        await asyncio.to_thread(bob.register)
        await wait_accepted(broker.port, bob_user, bob_password, "bob accepted after registering")
        assert {alice_user, bob_user} <= acl_users(acl_dir / "acl")
        for name in ("acl", "passwd", "credentials.json"):
            assert stat.S_IMODE((acl_dir / name).stat().st_mode) == 0o600, name
        assert json.loads((acl_dir / "credentials.json").read_text()) == handed_out

        # Subscribers: alice her topic; bob his own and alice's; the clinic (the command's password).
        received: dict[str, list[tuple[str, dict[str, Any]]]] = {"alice": [], "bob": [], "clinic": []}
        clinic_user = get_institution_username(keys.sign_key)
        clinic_topic = get_institution_topic("medledger", keys.sign_key)
        subscriptions = [
            ("alice", alice_user, alice_password, [alice_topic]),
            ("bob", bob_user, bob_password, [bob_topic, alice_topic, "medledger/#"]),
            ("clinic", clinic_user, handed_out[clinic_user], [clinic_topic]),
        ]
        for who, user, password, topics in subscriptions:
            client = aiomqtt.Client("127.0.0.1", broker.port, username=user, password=password)
            await client.__aenter__()
            clients.append(client)
            for topic in topics:
                await client.subscribe(topic, qos=1)
            tasks.append(asyncio.create_task(collect(client, received[who])))

        alice_record = await asyncio.to_thread(clinic.add_record, alice.patient_id.hex(), observation(5.1))
        bob_record = await asyncio.to_thread(clinic.add_record, bob.patient_id.hex(), observation(6.2))
        await wait_for(lambda: len(received["alice"]) >= 1, f"alice: {received}")
        await wait_for(lambda: len(received["bob"]) >= 1, f"bob: {received}")
        await wait_for(lambda: len(received["clinic"]) >= 2, f"clinic: {received}")
        assert [(t, e["kind"], e["record_id"]) for t, e in received["alice"]] == [
            (alice_topic, "record.added", alice_record)
        ]
        # One publisher, one subscriber connection: delivered in publishing order, so bob's own
        # event arriving means alice's (published before it) was refused to him.
        assert [(t, e["kind"], e["record_id"]) for t, e in received["bob"]] == [
            (bob_topic, "record.added", bob_record)
        ]
        assert [e["record_id"] for _, e in received["clinic"]] == [alice_record, bob_record]

        # The command refuses a running node's store and names the way the node does it itself.
        busy = CliRunner().invoke(
            main,
            ["mqtt", "acl", "--home", str(node.home), "--out", str(tmp_path / "other")],
            env=dict(NODE_ENV),
        )
        assert busy.exit_code == 1, busy.output
        assert "[mqtt] acl_dir" in busy.output

        # Restarted with its acl deleted, the node writes the files again from its store.
        process.stop()
        reloads = broker.log.count("Reloading config")
        (acl_dir / "acl").unlink()
        process = NodeProcess(node.home, env=dict(NODE_ENV), use_config_ports=True)
        process.start()
        process.wait_ready(60.0)
        acl_file = acl_dir / "acl"
        await wait_for(acl_file.exists, "the restarted node wrote the acl")
        assert {alice_user, bob_user, clinic_user, node_user} <= acl_users(acl_dir / "acl")
        assert json.loads((acl_dir / "credentials.json").read_text()) == handed_out
        await wait_for(lambda: broker.log.count("Reloading config") > reloads, "signalled again")
        assert await is_accepted(broker.port, alice_user, alice_password)
        assert await is_accepted(broker.port, clinic_user, handed_out[clinic_user])
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
