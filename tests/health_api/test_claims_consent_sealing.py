"""A record sealed before a standing consent committed, over real node processes (ADR 0017,
amendment 2); and a consent's re-sealing resumed after the client stopped midway.

The race, made deterministic: the chain is halted (two of the three validators stopped, so there
is no quorum); the patient's consent reaches the clinic's mempool; then the clinic posts a record,
which its node seals from a state without the consent (for the patient and itself) and queues
after it. When the validators resume, the consent commits first and the record's tx is refused in
its block (`health.record_consent_unsealed`); the clinic's node, still waiting for the request,
seals it again from the new state, and the one answer the clinic gets is the record sealed for the
insurer, which the insurer then reads. A retry with the same Idempotency-Key answers that record.
"""

from __future__ import annotations

import base64
import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import nacl.pwhash.argon2id
import pytest
from health_harness import (
    BLOCK_INTERVAL_MS,
    DEADLINE_S,
    NODE_ENV,
    PASSPHRASE,
    POLL_S,
    HealthNet,
    Institution,
    Reply,
    make_patient_key,
    observation,
    patient_cli,
    request,
    start_health_net,
)

from medledger.health import claims_client
from medledger.health.records import reseal_record_keys
from medledger.health.sdk import PatientClient
from medledger.health.types import compute_patient_id
from medledger.node.process import NodeProcess
from medledger.node.testnet import create_testnet

ROLES: Final = {"clinic": "clinic", "hospital": "hospital", "insurer": "insurer"}
CHAIN_ID: Final = "medledger-health-api-consent-race"
DAY_MS: Final = 24 * 3600 * 1000


@pytest.fixture
def net(tmp_path: Path) -> Iterator[tuple[HealthNet, dict[str, NodeProcess]]]:
    """The claims network, with its processes at hand (to pause validators)."""
    nodes = create_testnet(
        tmp_path / "net",
        validators=len(ROLES),
        chain_id=CHAIN_ID,
        block_interval_ms=BLOCK_INTERVAL_MS,
        passphrase=PASSPHRASE.encode(),
        key_opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        key_memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
        app="health",
        names=list(ROLES),
        roles=list(ROLES.values()),
    )
    processes = {n.name: NodeProcess(n.home, env=dict(NODE_ENV), use_config_ports=True) for n in nodes}
    try:
        for process in processes.values():
            process.start()
        urls = {name: process.wait_ready(60.0) for name, process in processes.items()}
        yield (
            HealthNet({n.name: Institution(n.name, urls[n.name], n.api_token, n.home) for n in nodes}),
            processes,
        )
    finally:
        for process in processes.values():
            with contextlib.suppress(ProcessLookupError):
                _signal(process, signal.SIGCONT)
            process.stop()


def _signal(process: NodeProcess, sig: signal.Signals) -> None:
    assert process.proc is not None
    process.proc.send_signal(sig)


def wait_for(what: str, condition: Any) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(POLL_S)  # polling a condition with a deadline


def institution_keys(clinic: Institution) -> dict[str, dict[str, str]]:
    listed = clinic.get("/v1/health/institutions").json()["institutions"]
    return {str(i["name"]): i for i in listed}


def mempool_txs(institution: Institution) -> int:
    return int(request(institution.url, "GET", "/status", headers=institution.auth).json()["mempool"]["txs"])


def post_record(clinic: Institution, patient_id: str, key: str) -> Reply:
    headers = {**clinic.auth, "Content-Type": "application/json", "Idempotency-Key": key}
    body = json.dumps({"patient_id": patient_id, "resource": observation(77.0)}).encode()
    return request(
        clinic.url, "POST", "/v1/health/institution/records?wait_ms=30000", body=body, headers=headers
    )


def test_a_record_sealed_before_a_consent_committed_is_sealed_again_for_the_insurer(
    net: tuple[HealthNet, dict[str, NodeProcess]], tmp_path: Path
) -> None:
    health, processes = net
    clinic, insurer = health["clinic"], health["insurer"]
    key_path = tmp_path / "patient.key"
    identity = make_patient_key(key_path)
    patient_id = compute_patient_id(identity.public.sign_key)
    patient_cli(key_path, clinic.url, "register")
    health.sync()
    keys = institution_keys(clinic)
    start_height = max(health.heights())

    for name in ("hospital", "insurer"):  # no quorum: nothing commits until they resume
        _signal(processes[name], signal.SIGSTOP)
    try:
        body = claims_client.make_consent(
            patient_id,
            bytes.fromhex(keys["insurer"]["sign_key"]),
            record_types=("Observation",),
            authors=[bytes.fromhex(keys["clinic"]["sign_key"])],
            expires_ms=int(time.time() * 1000) + DAY_MS,
        )
        _, raw, consent_id = claims_client.build_grant_consent(identity, body, chain_id=CHAIN_ID)
        tx = json.dumps({"tx": base64.b64encode(raw).decode()}).encode()
        queued = request(
            clinic.url, "POST", "/v1/txs?wait_ms=0", body=tx, headers={"Content-Type": "application/json"}
        )
        assert queued.status == 202, queued
        replies: list[Reply] = []
        writer = threading.Thread(
            target=lambda: replies.append(post_record(clinic, patient_id.hex(), "race-1"))
        )
        writer.start()
        # The record is sealed and queued behind the consent (the node's mempool is FIFO).
        wait_for("the record's tx in the clinic's mempool", lambda: mempool_txs(clinic) == 2)
    finally:
        for name in ("hospital", "insurer"):
            _signal(processes[name], signal.SIGCONT)
    writer.join(DEADLINE_S * 2)
    assert not writer.is_alive(), "the record request did not answer"
    (reply,) = replies
    assert reply.status == 201, reply
    answer = reply.json()
    assert answer["status"] == "committed"
    assert answer["readers"] == 3  # patient, clinic and the consent's insurer
    health.sync()

    # The first tx was refused in its block for the missing insurer; the answer is the second.
    refused: list[tuple[str, dict[str, Any]]] = []
    committed: list[tuple[str, dict[str, Any]]] = []
    for block in clinic.get(f"/v1/blocks?from={start_height + 1}").json()["blocks"]:
        for item in block["txs"]:
            if item["kind"] == "health.add_record":
                status = clinic.get(f"/v1/txs/{item['id']}").json()
                (committed if status["result"]["ok"] else refused).append((item["id"], status))
    assert [tx_id for tx_id, _ in committed] == [answer["record_id"]]
    assert [status["result"]["code"] for _, status in refused] == ["health.record_consent_unsealed"]
    assert clinic.get(f"/v1/txs/{consent_id.hex()}").json()["height"] < answer["height"]

    read = insurer.read(answer["record_id"])
    assert read.status == 200, read
    assert read.json()["resource"]["valueQuantity"]["value"] == 77.0

    again = post_record(clinic, patient_id.hex(), "race-1")  # a retry: the same one answer
    assert again.status == 201, again
    assert again.json()["record_id"] == answer["record_id"]


def test_a_consents_re_sealing_stopped_after_its_manifest_is_resumed(tmp_path: Path) -> None:
    """A patient's client that stopped between a consent's manifest and its parts: `medledger
    patient resume-grant` rebuilds the declared records on the device and sends the missing part;
    the insurer then reads the records the consent re-sealed, and a second resume sends nothing."""
    with start_health_net(tmp_path / "net", ROLES) as health:
        clinic, insurer = health["clinic"], health["insurer"]
        key_path = tmp_path / "patient.key"
        identity = make_patient_key(key_path)
        patient_id = compute_patient_id(identity.public.sign_key).hex()
        patient_cli(key_path, clinic.url, "register")
        health.sync()
        # Not the consent's (another author, and first: in every earlier state the client could
        # have previewed): in the grant's scope by type, never among its records.
        elsewhere = health["hospital"].add_record(patient_id, observation(5.3))
        health.sync()
        old = [clinic.add_record(patient_id, observation(value)) for value in (5.1, 5.2)]
        health.sync()
        keys = institution_keys(clinic)
        insurer_key = bytes.fromhex(keys["insurer"]["sign_key"])
        terms: dict[str, Any] = {
            "record_types": ("Observation",),
            "authors": [bytes.fromhex(keys["clinic"]["sign_key"])],
        }
        sdk = PatientClient(clinic.url, identity)
        consent = sdk.grant_consent(
            insurer_key, expires_ms=int(time.time() * 1000) + DAY_MS, reseal_existing=False, **terms
        )
        records = sdk.preview_consent_records(insurer_key, **terms)
        assert sorted(r.record_id.hex() for r in records) == sorted(old)
        record_keys = reseal_record_keys(records, identity, bytes.fromhex(keys["insurer"]["enc_key"]))
        manifest, _ = claims_client.build_consent_in_parts(
            identity, consent.tx_id, record_keys, chain_id=sdk.chain_id
        )
        sdk._submit(manifest)  # ...and the client stops before the part
        health.sync()
        assert insurer.read(old[0]).status == 403

        resumed = patient_cli(key_path, clinic.url, "resume-grant", consent.tx_id.hex()[:16])
        assert "sent 1 part(s); 2 of 2 record(s) shared" in resumed
        health.sync()
        for record_id, value in zip(old, (5.1, 5.2), strict=True):
            read = insurer.read(record_id)
            assert read.status == 200, read
            assert read.json()["resource"]["valueQuantity"]["value"] == value
        assert insurer.read(elsewhere).status == 403
        again = patient_cli(key_path, clinic.url, "resume-grant", consent.tx_id.hex()[:16])
        assert "sent 0 part(s)" in again
