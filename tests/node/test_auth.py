"""Read access on the API (issue 9, #9): the token, a patient's signed request, and nothing else.

Against a real health node process (`medledger start`): every read route refuses a request without
credentials (401, problem+json, `WWW-Authenticate` naming both schemes), a patient's signed
request reads their own data and is refused another patient's (403), a replayed or re-targeted
signed request is refused, the operations endpoints answer on their own address and not on the
API's, and the patient's SDK refuses plain HTTP to a host that is not loopback. The challenge
store's bounds are checked with an injected clock (no sleeping).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import nacl.pwhash.argon2id
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from node_harness import PASSPHRASE, PROBLEM, NodeClient, Reply, read_token

from medledger.crypto import Identity, load_identity, save_identity
from medledger.health.auth import SIGNATURE_SCHEME, build_authorization
from medledger.health.sdk import PatientClient, PatientClientError
from medledger.health.types import compute_patient_id
from medledger.node.api import ClientNoiseFilter, build_app
from medledger.node.auth import AuthError, ChallengeStore
from medledger.node.cli import main
from medledger.node.config import load_config
from medledger.node.fixture_app import KeyValueFixtureApp
from medledger.node.genesis_file import load_genesis
from medledger.node.home import InitResult
from medledger.node.node import Node
from medledger.node.process import NodeProcess

#: Routes anyone may call (a signed tx is its own credential; the challenge; this document).
PUBLIC_OPERATIONS = {
    ("POST", "/v1/txs"),
    ("POST", "/v1/txs/batch"),
    ("POST", "/v1/auth/challenge"),
    ("GET", "/openapi.json"),
    ("GET", "/v1/proofs/genesis"),  # public: a patient pins it before registering
}
#: The read routes the issue names, checked even if the document forgot one.
NAMED_READS = {
    ("GET", "/v1/blocks"),
    ("GET", "/v1/blocks/{height}"),
    ("GET", "/v1/txs/{tx_id}"),
    ("GET", "/status"),
    ("GET", "/v1/health/institutions"),
    ("GET", "/v1/health/patients/{patient_id}"),
    ("GET", "/v1/health/patients/{patient_id}/records"),
    ("GET", "/v1/health/patients/{patient_id}/inquiries"),
    ("GET", "/v1/health/patients/{patient_id}/grants"),
    ("GET", "/v1/health/patients/{patient_id}/audit"),
    ("GET", "/v1/proofs/blocks"),
    ("GET", "/v1/proofs/txs/{tx_id}"),
}
OPS_PATHS = ("/livez", "/readyz", "/metrics")
#: A synthetic FHIR R4 observation (no real person behind it).
OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0", "display": "Glucose"}]},
    "valueQuantity": {"value": 5.4, "unit": "mmol/L"},
}


def assert_refused(reply: Reply, status: int, what: str) -> dict[str, Any]:
    assert reply.status == status, (what, reply)
    assert reply.content_type == PROBLEM, (what, reply)
    problem: dict[str, Any] = reply.json()
    assert problem["status"] == status, (what, problem)
    if status == 401:
        challenge = reply.headers.get("www-authenticate", "")
        assert "Bearer" in challenge, (what, reply.headers)
        assert SIGNATURE_SCHEME in challenge, (what, reply.headers)
    return problem


def concrete(path: str) -> str:
    """A documented path with its parameters filled in (well-formed values, nothing real)."""
    return (
        path.replace("{height}", "1")
        .replace("{patient_id}", "ab" * 32)
        .replace("{tx_id}", "cd" * 32)
        .replace("{record_id}", "ef" * 32)
        .replace("{blob_id}", "12" * 32)
        .replace("{index}", "0")
        .replace("{amendment_id}", "34" * 32)
        .replace("{request_id}", "56" * 32)
        .replace("{claim_id}", "78" * 32)
        .replace("{study_id}", "9a" * 32)
        .replace("{query_id}", "bc" * 32)
    )


def signed_get(
    node: NodeClient, identity: Identity, target: str, *, patient_id: bytes | None = None
) -> tuple[str, Reply]:
    """A patient's signed GET of `target` over a fresh challenge; returns the header and the reply."""
    reply = node.request("POST", "/v1/auth/challenge", token=None)
    assert reply.status == 201, reply
    challenge = reply.json()
    header = build_authorization(
        identity,
        chain_id=challenge["chain_id"],
        challenge=bytes.fromhex(challenge["challenge"]),
        method="GET",
        target=target,
        time_ms=time.time_ns() // 1_000_000,
        patient_id=patient_id or compute_patient_id(identity.public.sign_key),
    )
    return header, send_signed(node, target, header)


def send_signed(node: NodeClient, target: str, header: str) -> Reply:
    return node.request("GET", target, headers={"Authorization": header}, token=None)


def test_trust_9_every_read_route_refuses_an_unauthenticated_request(
    health_node: tuple[NodeProcess, NodeClient],
) -> None:
    _, node = health_node
    document = node.get("/openapi.json", token=None).json()
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert documented >= NAMED_READS
    guarded = (documented | NAMED_READS) - PUBLIC_OPERATIONS
    assert len(guarded) >= 17
    for method, path in sorted(guarded):
        target, what = concrete(path), f"{method} {path}"
        body = b"{}" if method == "POST" else None
        headers = {"Content-Type": "application/json"} if body else {}
        assert_refused(node.request(method, target, body=body, headers=headers, token=None), 401, what)
        assert_refused(node.request(method, target, body=body, headers=headers, token="x" * 43), 401, what)
        forged = {**headers, "Authorization": f"{SIGNATURE_SCHEME} key=00, patient=00"}
        assert_refused(node.request(method, target, body=body, headers=forged, token=None), 401, what)
    # Nothing above moved the chain, and the token still reads.
    assert node.get("/v1/blocks").status == 200


def test_trust_9_a_patient_reads_their_own_data_and_not_another_patients(
    health_node: tuple[NodeProcess, NodeClient],
) -> None:
    _, node = health_node
    alice, bob = Identity.generate(), Identity.generate()
    alice_client, bob_client = PatientClient(node.url, alice), PatientClient(node.url, bob)
    alice_client.register()
    bob_client.register()
    alice_id, bob_id = alice_client.patient_id.hex(), bob_client.patient_id.hex()
    added = node.post_json(
        "/v1/health/institution/records?wait_ms=10000", {"patient_id": alice_id, "resource": OBSERVATION}
    )
    assert added.status == 201, added

    # The SDK signs every read: Alice reads her patient record, records, inquiries, grants, audit.
    patient = alice_client.get_patient()
    assert patient is not None
    assert patient.sign_key == alice.public.sign_key
    (mine,) = alice_client.read_records()
    assert mine.decrypted is not None
    assert mine.decrypted.resource["resourceType"] == "Observation"
    assert alice_client.list_inquiries() == []
    assert alice_client.list_grants() == []
    assert alice_client.audit() == []
    # ...and what a light client needs: blocks, status, the institution list.
    for target in ("/v1/blocks?from=1&to=2", "/status", "/v1/health/institutions"):
        assert signed_get(node, alice, target)[1].status == 200, target

    # Alice's signature over Bob's routes: 403, whichever patient she claims to act for.
    for suffix in ("", "/records", "/inquiries", "/grants", "/audit"):
        target = f"/v1/health/patients/{bob_id}{suffix}"
        problem = assert_refused(signed_get(node, alice, target)[1], 403, target)
        assert bob_id not in json.dumps(problem)
        claimed = signed_get(node, alice, target, patient_id=bytes.fromhex(bob_id))[1]
        assert_refused(claimed, 403, target)
    # A key no patient registered reads nothing, not even blocks.
    stranger = Identity.generate()
    assert_refused(signed_get(node, stranger, "/v1/blocks")[1], 403, "stranger")
    # The institution API takes the token only, never a patient's signature.
    assert_refused(
        signed_get(node, alice, f"/v1/health/institution/records?patient_id={alice_id}")[1], 403, "inst"
    )
    # Bob's own reads still work.
    assert bob_client.list_records() == []

    # A representative Alice names reads Alice's data with their own key, and nobody else's.
    carol = Identity.generate()
    alice_client.add_representative(carol.public.sign_key)
    for_alice = PatientClient(node.url, carol, patient_id=bytes.fromhex(alice_id))
    assert [r.record_id for r in for_alice.list_records()] == [mine.record.record_id]
    assert [e.event for e in for_alice.audit()] == [e.event for e in alice_client.audit()]
    with pytest.raises(PatientClientError) as refused:
        PatientClient(node.url, carol, patient_id=bytes.fromhex(bob_id)).list_records()
    assert refused.value.status == 403


def test_trust_9_a_replayed_or_retargeted_signed_request_is_refused(
    health_node: tuple[NodeProcess, NodeClient],
) -> None:
    _, node = health_node
    alice = Identity.generate()
    PatientClient(node.url, alice).register()
    target = f"/v1/health/patients/{compute_patient_id(alice.public.sign_key).hex()}/audit"
    header, first = signed_get(node, alice, target)
    assert first.status == 200, first
    # The same request again (a replay of captured bytes): the challenge is spent.
    problem = assert_refused(send_signed(node, target, header), 401, "replay")
    assert problem["type"].endswith(":challenge_invalid")
    # A fresh challenge signed for one path, sent to another: the signature does not verify, and
    # that challenge is spent too (no second try).
    records = target.replace("/audit", "/records")
    header, _ = signed_get(node, alice, target)
    bounced = assert_refused(send_signed(node, records, header), 401, "retargeted")
    assert bounced["type"].endswith(":challenge_invalid")  # the first use consumed it
    retargeted = node.request("POST", "/v1/auth/challenge", token=None).json()
    moved = build_authorization(
        alice,
        chain_id=retargeted["chain_id"],
        challenge=bytes.fromhex(retargeted["challenge"]),
        method="GET",
        target=target,
        time_ms=time.time_ns() // 1_000_000,
        patient_id=compute_patient_id(alice.public.sign_key),
    )
    assert assert_refused(send_signed(node, records, moved), 401, "moved")["type"].endswith(":bad_signature")
    # A signed time far from the node's clock is refused even over a fresh challenge.
    fresh = node.request("POST", "/v1/auth/challenge", token=None).json()
    stale = build_authorization(
        alice,
        chain_id=fresh["chain_id"],
        challenge=bytes.fromhex(fresh["challenge"]),
        method="GET",
        target=target,
        time_ms=time.time_ns() // 1_000_000 - 3_600_000,
        patient_id=compute_patient_id(alice.public.sign_key),
    )
    assert assert_refused(send_signed(node, target, stale), 401, "stale")["type"].endswith(":time_skew")


def test_trust_9_ops_endpoints_answer_on_the_ops_address_and_not_on_the_api(
    health_node: tuple[NodeProcess, NodeClient],
) -> None:
    _, node = health_node
    assert node.ops_url != node.url
    for path in OPS_PATHS:
        assert node.ops_get(path).status == 200, path
        assert node.get(path).status == 404, path  # with the token: the API has no such route
        assert node.get(path, token=None).status == 404, path
    status = node.ops_get("/status")
    assert status.status == 200
    assert status.json()["chain_id"] == node.chain_id
    # The operations address serves nothing of the API.
    assert node.request("GET", "/v1/blocks", port=_port(node.ops_url), token=None).status == 404


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_trust_9_the_sdk_refuses_plain_http_to_a_host_that_is_not_loopback() -> None:
    identity = Identity.generate()
    for url in ("http://10.0.0.7:26657", "http://node.example:26657", "http://[2001:db8::1]:26657"):
        with pytest.raises(PatientClientError, match="refusing plain HTTP"):
            PatientClient(url, identity)
        PatientClient(url, identity, insecure_http=True)  # told otherwise: allowed
    for url in ("http://127.0.0.1:26657", "http://localhost:26657", "http://[::1]:26657"):
        PatientClient(url, identity)
    PatientClient("https://node.example:26657", identity)
    with pytest.raises(PatientClientError, match="not an http"):
        PatientClient("file:///etc/passwd", identity)


# -- the challenge store and the log filter, in process -----------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_trust_9_a_challenge_is_single_use_and_expires() -> None:
    clock = FakeClock()
    store = ChallengeStore(ttl_ms=30_000, clock_s=clock)
    first, second = store.issue("a"), store.issue("a")
    assert store.consume(first)
    assert not store.consume(first)  # used once
    clock.now_s += 30.001
    assert not store.consume(second)  # expired
    assert len(store) == 0
    assert not store.consume(b"\x00" * 32)  # never issued


def test_trust_9_challenges_are_bounded_per_client_and_in_total() -> None:
    clock = FakeClock()
    store = ChallengeStore(ttl_ms=30_000, capacity=4, per_address=2, clock_s=clock)
    oldest, second = store.issue("a"), store.issue("a")
    with pytest.raises(AuthError) as refused:
        store.issue("a")  # one client's share is full
    assert refused.value.status == 429
    store.issue("b")
    store.issue("b")
    newest = store.issue("c")  # over capacity: the oldest goes
    assert len(store) == 4
    assert not store.consume(oldest)
    assert store.consume(second)
    assert store.consume(newest)
    clock.now_s += 31
    store.issue("a")  # the expired ones no longer count against anyone
    store.issue("a")
    assert len(store) == 2


def test_trust_13_api_the_noise_filter_passes_server_errors_and_summarises_client_ones() -> None:
    noise = ClientNoiseFilter(interval_s=60.0)

    def record(exc: BaseException, level: int = logging.ERROR) -> logging.LogRecord:
        return logging.LogRecord("aiohttp.server", level, __file__, 1, "Error", (), (type(exc), exc, None))

    server_error = record(RuntimeError("a bug"))
    assert noise.filter(server_error)
    assert server_error.levelno == logging.ERROR
    assert server_error.exc_info is not None
    first = record(ConnectionResetError())
    assert noise.filter(first)  # the first one becomes the summary line: a warning, no traceback
    assert first.levelno == logging.WARNING
    assert first.exc_info is None
    assert not any(noise.filter(record(ConnectionResetError())) for _ in range(100))
    assert noise.suppressed == 101


def test_trust_9_the_patient_cli_refuses_plain_http_to_a_remote_node(tmp_path: Path) -> None:
    key = tmp_path / "patient.key"
    save_identity(
        key,
        Identity.generate(),
        PASSPHRASE.encode(),
        opslimit=nacl.pwhash.argon2id.OPSLIMIT_MIN,
        memlimit=nacl.pwhash.argon2id.MEMLIMIT_MIN,
    )
    args = [
        "patient",
        "--key",
        str(key),
        "--url",
        "http://192.0.2.7:26657",
        "--genesis",
        "ab" * 32,
        "records",
    ]
    env = {"MEDLEDGER_PATIENT_PASSPHRASE": PASSPHRASE}
    refused = CliRunner().invoke(main, args, env=env)
    assert refused.exit_code != 0
    assert "refusing plain HTTP to 192.0.2.7" in refused.output
    assert "Traceback" not in refused.output


async def test_trust_9_a_route_registered_without_an_access_level_needs_credentials(
    node_home: InitResult,
) -> None:
    """Closed by default: a module that adds a route with plain aiohttp gets `Access.READER`."""
    config = load_config(node_home.home, environ={})
    node = Node(
        config,
        identity=load_identity(config.key_file, PASSPHRASE.encode()),
        genesis=load_genesis(config.genesis_file),
        app=KeyValueFixtureApp(),
    )
    app = build_app(node)

    async def unlisted(request: web.Request) -> web.Response:
        return web.json_response({"secret": "kept"})

    app.router.add_get("/v1/unlisted", unlisted)
    await node.start()
    try:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            refused = await client.get("/v1/unlisted")
            assert refused.status == 401
            assert refused.content_type == PROBLEM
            assert "kept" not in await refused.text()
            allowed = await client.get(
                "/v1/unlisted", headers={"Authorization": f"Bearer {read_token(config.home)}"}
            )
            assert allowed.status == 200
    finally:
        await node.stop()
