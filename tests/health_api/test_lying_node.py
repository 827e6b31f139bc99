"""Issue 9 defect 2: a lying node in front of a real one. The patient's client names it, signs nothing.

An aiohttp proxy (its own thread and event loop) stands in front of a real insurer node process
and rewrites its answers as a dishonest operator, or anyone on the path, could: it substitutes the
insurer's encryption key (the attack: re-sealed record keys would go to the attacker), forges an
inquiry, hides a grant or an inquiry, swaps a tx of a certified block, forges a commit signature,
serves another genesis. For each, the patient's client (SDK and CLI) must fail naming the proxy's URL, and no
transaction may reach the chain: the proxy forwards every POST, and counts them, so "nothing
signed" is checked where it matters. A proxy that rewrites nothing is the control: through it
everything works.
"""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from health_harness import PATIENT_ENV, HealthNet, make_patient_key, patient_cli
from lying_proxy import LyingProxy, Rewrite

from medledger.chain.codec import decode, encode
from medledger.chain.limits import BLOCK_BYTES_MAX
from medledger.chain.types import Block, Commit, decode_genesis, encode_genesis
from medledger.crypto import Identity
from medledger.health.sdk import NodeMisbehaviourError, PatientClient, load_genesis_pin
from medledger.health.types import InquiryState, compute_patient_id
from medledger.node.cli import main
from medledger.node.demo import make_synthetic_records


@dataclasses.dataclass
class Scene:
    """A patient with records, a grant already given to the insurer, and an open insurer inquiry."""

    net: HealthNet
    key: Path
    identity: Identity
    patient_id: str
    granted_inquiry: str
    grant_id: str
    open_inquiry: str

    def honest(self) -> PatientClient:
        return PatientClient(self.net["clinic"].url, self.identity, genesis_hash=load_genesis_pin(self.key))

    def audit_count(self) -> int:
        reply = self.net["clinic"].get(f"/v1/health/patients/{self.patient_id}/audit")
        return int(reply.json()["total"])


@pytest.fixture(scope="module")
def scene(shared_net: HealthNet, tmp_path_factory: pytest.TempPathFactory) -> Scene:
    net = shared_net
    key = tmp_path_factory.mktemp("liar") / "patient.key"
    identity = make_patient_key(key)
    patient_id = compute_patient_id(identity.public.sign_key).hex()
    patient_cli(key, net["clinic"].url, "register")  # pins the genesis beside the key
    net.sync()
    for resource in make_synthetic_records(7):
        net["clinic"].add_record(patient_id, resource)
    net.sync()

    def inquire() -> str:
        body = {
            "patient_id": patient_id,
            "purpose": "HPAYMT",
            "reason": "claim",
            "record_types": ["Immunization"],
        }
        reply = net["insurer"].post("/v1/health/institution/inquiries", body)
        assert reply.status == 201, reply
        net.sync()
        return str(reply.json()["inquiry_id"])

    granted = inquire()
    patient = PatientClient(net["clinic"].url, identity, genesis_hash=load_genesis_pin(key))
    grant_id = patient.grant(bytes.fromhex(granted)).tx_id.hex()
    net.sync()
    return Scene(net, key, identity, patient_id, granted, grant_id, inquire())


@pytest.fixture
def proxy(scene: Scene) -> Iterator[LyingProxy]:
    with LyingProxy(scene.net["insurer"].url) as lying:
        yield lying


def attempt_everything(scene: Scene, proxy: LyingProxy) -> list[NodeMisbehaviourError]:
    """Grant, deny and revoke through the proxy (SDK), and the CLI's grant and verify; all must fail."""
    errors: list[NodeMisbehaviourError] = []
    before = scene.audit_count()
    actions: list[Callable[[PatientClient], object]] = [
        lambda c: c.grant(bytes.fromhex(scene.open_inquiry)),
        lambda c: c.deny(bytes.fromhex(scene.open_inquiry)),
        lambda c: c.revoke(bytes.fromhex(scene.grant_id)),
    ]
    for action in actions:
        client = PatientClient(proxy.url, scene.identity, genesis_hash=load_genesis_pin(scene.key))
        with pytest.raises(NodeMisbehaviourError) as caught:
            action(client)
        assert caught.value.node_url == proxy.url
        errors.append(caught.value)
    runner = CliRunner()
    for args in (["grant", scene.open_inquiry, "--yes"], ["verify"]):
        result = runner.invoke(
            main, ["patient", "--key", str(scene.key), "--url", proxy.url, *args], env=dict(PATIENT_ENV)
        )
        assert result.exit_code != 0, result.output
        assert f"the node at {proxy.url}" in result.output
    assert proxy.posts == []  # nothing was signed and sent
    scene.net.sync()
    assert scene.audit_count() == before
    return errors


def test_trust_2_substituted_institution_key_is_detected(scene: Scene, proxy: LyingProxy) -> None:
    attacker = Identity.generate().public.enc_key.hex()

    def rewrite(path: str, body: Any) -> Any:
        if path == "/v1/health/institutions":
            for item in body["institutions"]:
                if item["name"] == "insurer":
                    item["enc_key"] = attacker
        return body

    proxy.rewrite = rewrite
    errors = attempt_everything(scene, proxy)
    assert {e.what for e in errors} == {"institution key"}


def test_trust_2_forged_inquiry_is_detected(scene: Scene, proxy: LyingProxy) -> None:
    forged_id = os.urandom(32)

    def rewrite(path: str, body: Any) -> Any:
        if path.endswith("/inquiries") and body["inquiries"]:
            real = decode(InquiryState, base64.b64decode(body["inquiries"][-1]["encoded"]), max_bytes=1 << 20)
            fake = dataclasses.replace(real, inquiry_id=forged_id, purpose="HPAYMT")
            body["inquiries"].append(
                {"inquiry_id": forged_id.hex(), "encoded": base64.b64encode(encode(fake)).decode()}
            )
        return body

    proxy.rewrite = rewrite
    client = PatientClient(proxy.url, scene.identity, genesis_hash=load_genesis_pin(scene.key))
    with pytest.raises(NodeMisbehaviourError) as caught:
        client.grant(forged_id)
    assert (caught.value.node_url, caught.value.what) == (proxy.url, "inquiry")
    assert "not on the chain" in caught.value.message
    errors = attempt_everything(scene, proxy)
    assert {e.what for e in errors} == {"inquiry"}


def test_trust_2_dropped_grant_is_detected(scene: Scene, proxy: LyingProxy) -> None:
    def rewrite(path: str, body: Any) -> Any:
        if path.endswith("/grants"):
            body["grants"] = [g for g in body["grants"] if g["grant_id"] != scene.grant_id]
        return body

    proxy.rewrite = rewrite
    client = PatientClient(proxy.url, scene.identity, genesis_hash=load_genesis_pin(scene.key))
    with pytest.raises(NodeMisbehaviourError) as caught:
        client.list_grants()
    assert caught.value.what == "grant"
    assert f"the node at {proxy.url} hid a grant" in caught.value.message
    attempt_everything(scene, proxy)


def test_trust_2_hidden_inquiry_is_detected(scene: Scene, proxy: LyingProxy) -> None:
    def rewrite(path: str, body: Any) -> Any:
        if path.endswith("/inquiries"):
            body["inquiries"] = [i for i in body["inquiries"] if i["inquiry_id"] != scene.open_inquiry]
        return body

    proxy.rewrite = rewrite
    client = PatientClient(proxy.url, scene.identity, genesis_hash=load_genesis_pin(scene.key))
    with pytest.raises(NodeMisbehaviourError) as caught:
        client.list_pending_inquiries()
    assert f"the node at {proxy.url} hid an inquiry that is on the chain" in caught.value.message
    errors = attempt_everything(scene, proxy)
    assert {e.what for e in errors} == {"inquiry"}


def test_trust_2_a_node_repeating_one_page_forever_is_named(scene: Scene, proxy: LyingProxy) -> None:
    first: list[Any] = []

    def rewrite(path: str, body: Any) -> Any:
        if path.endswith("/records"):  # whatever page is asked for: the first record, "of a billion"
            first[:] = first or body["records"][:1]
            body["records"], body["total"] = list(first), 10**9
        return body

    proxy.rewrite = rewrite
    client = PatientClient(proxy.url, scene.identity, genesis_hash=load_genesis_pin(scene.key))
    with pytest.raises(NodeMisbehaviourError) as caught:
        client.list_records()
    assert f"the node at {proxy.url} hid a record that is on the chain" in caught.value.message
    attempt_everything(scene, proxy)


def _rewrite_first_block_with_txs(change: Callable[[Block, Commit, dict[str, str]], None]) -> Rewrite:
    def rewrite(path: str, body: Any) -> Any:
        if path == "/v1/proofs/blocks":
            for item in body["blocks"]:
                block = decode(Block, base64.b64decode(item["block"]), max_bytes=BLOCK_BYTES_MAX)
                if block.txs:
                    commit = decode(Commit, base64.b64decode(item["commit"]), max_bytes=1 << 20)
                    change(block, commit, item)
                    break
        return body

    return rewrite


def test_trust_2_tampered_proofs_are_detected(scene: Scene, proxy: LyingProxy) -> None:
    def swap_tx(block: Block, commit: Commit, item: dict[str, str]) -> None:
        forged = Block(block.header, (*block.txs[:-1], os.urandom(200)))
        item["block"] = base64.b64encode(encode(forged)).decode()

    def forge_signature(block: Block, commit: Commit, item: dict[str, str]) -> None:
        first = dataclasses.replace(commit.signatures[0], signature=bytes(64))
        item["commit"] = base64.b64encode(
            encode(dataclasses.replace(commit, signatures=(first, *commit.signatures[1:])))
        ).decode()

    def other_genesis(path: str, body: Any) -> Any:
        if path == "/v1/proofs/genesis":
            genesis = decode_genesis(base64.b64decode(body["genesis"]), max_bytes=1 << 24)
            body["genesis"] = base64.b64encode(
                encode_genesis(dataclasses.replace(genesis, genesis_time_ms=1))
            ).decode()
        return body

    cases: list[tuple[Rewrite, str]] = [
        (_rewrite_first_block_with_txs(swap_tx), "tx root"),
        (_rewrite_first_block_with_txs(forge_signature), "commit certificate"),
        (other_genesis, "genesis"),
    ]
    for rewrite, what in cases:
        proxy.rewrite = rewrite
        errors = attempt_everything(scene, proxy)
        assert {e.what for e in errors} == {what}


def test_trust_2_a_node_that_will_not_prove_an_audited_tx_is_named(scene: Scene, proxy: LyingProxy) -> None:
    """Its blocks hold the patient's audited txs; a 404 for their inclusion proofs is a lie, named
    like every other (before, `verify` failed with a bare 404 that named no node)."""
    proxy.hide_tx_proofs = True
    client = PatientClient(proxy.url, scene.identity, genesis_hash=load_genesis_pin(scene.key))
    with pytest.raises(NodeMisbehaviourError) as caught:
        client.verify()
    assert (caught.value.node_url, caught.value.what) == (proxy.url, "tx inclusion proof")
    result = CliRunner().invoke(
        main, ["patient", "--key", str(scene.key), "--url", proxy.url, "verify"], env=dict(PATIENT_ENV)
    )
    assert result.exit_code != 0, result.output
    assert f"the node at {proxy.url}" in result.output


def test_trust_2_a_node_that_drops_a_signed_tx_and_says_committed_is_named(
    scene: Scene, proxy: LyingProxy
) -> None:
    proxy.swallow_posts = True
    client = PatientClient(proxy.url, scene.identity, genesis_hash=load_genesis_pin(scene.key))
    with pytest.raises(NodeMisbehaviourError) as caught:
        client.deny(bytes.fromhex(scene.open_inquiry))
    assert (caught.value.node_url, caught.value.what) == (proxy.url, "commit")
    assert proxy.posts == ["/v1/txs"]
    assert [
        i.status for i in scene.honest().list_inquiries() if i.inquiry_id.hex() == scene.open_inquiry
    ] == ["open"]


def test_trust_2_a_node_withholding_new_blocks_is_named_by_a_witness(scene: Scene, proxy: LyingProxy) -> None:
    net = scene.net
    net.sync()
    tip = max(net.heights())

    def rewrite(path: str, body: Any) -> Any:
        if path == "/v1/proofs/blocks":
            body["blocks"] = [
                b
                for b in body["blocks"]
                if decode(Block, base64.b64decode(b["block"]), max_bytes=BLOCK_BYTES_MAX).header.height <= tip
            ]
            body["latest_height"] = min(body["latest_height"], tip)
        return body

    proxy.rewrite = rewrite
    PatientClient(net["clinic"].url, Identity.generate()).register()  # the chain moves on
    net.sync()
    pin = load_genesis_pin(scene.key)
    # Without a witness the client sees a true but older chain: the residual risk of ADR 0008.
    assert PatientClient(proxy.url, scene.identity, genesis_hash=pin).verify().height == tip
    watched = PatientClient(proxy.url, scene.identity, genesis_hash=pin, witnesses=(net["clinic"].url,))
    with pytest.raises(NodeMisbehaviourError) as caught:
        watched.verify()
    assert (caught.value.node_url, caught.value.what) == (proxy.url, "freshness")
    with pytest.raises(NodeMisbehaviourError):
        watched.deny(bytes.fromhex(scene.open_inquiry))
    result = CliRunner().invoke(
        main,
        ["patient", "--key", str(scene.key), "--url", proxy.url, "--witness", net["clinic"].url, "verify"],
        env=dict(PATIENT_ENV),
    )
    assert result.exit_code != 0
    assert f"the node at {proxy.url} is behind the chain" in result.output
    assert proxy.posts == []
    honest = PatientClient(
        net["insurer"].url, scene.identity, genesis_hash=pin, witnesses=(net["clinic"].url,)
    )
    assert honest.verify().witnesses == 1


def test_trust_2_an_honest_node_is_not_named_behind_while_the_chain_moves_on(
    scene: Scene, proxy: LyingProxy
) -> None:
    """The witness always knows one block more than the node served a moment before (the chain
    moves on between the two answers). The client used to ask the witness again after each
    re-sync, chasing a moving tip, and named the honest node "behind the chain" after three tries;
    the witness's first proven block is the target, and an honest node reaches it."""
    net = scene.net
    pin = load_genesis_pin(scene.key)

    def advance_first(path_qs: str) -> None:
        if path_qs.startswith("/v1/proofs/blocks") and "limit=1" in path_qs:
            PatientClient(net["clinic"].url, Identity.generate()).register()  # one more block
            net.sync()

    proxy.target = net["clinic"].url
    proxy.before = advance_first
    net.sync()
    before = max(net.heights())
    watched = PatientClient(net["insurer"].url, scene.identity, genesis_hash=pin, witnesses=(proxy.url,))
    report = watched.verify()
    assert report.witnesses == 1
    assert report.height > before  # it followed the block the witness proved


def test_honest_proxy_is_believed_and_verify_reports(scene: Scene, proxy: LyingProxy) -> None:
    """The control: the same proxy, rewriting nothing, changes nothing."""
    out = patient_cli(scene.key, proxy.url, "verify")
    pinned = load_genesis_pin(scene.key)
    assert pinned is not None
    assert f"genesis {pinned.hex()} (pinned)" in out
    assert "verified" in out
    client = PatientClient(proxy.url, scene.identity, genesis_hash=pinned)
    done = client.verify()
    assert done.grants >= 1
    assert done.inclusion_proofs == len({e.event_id for e in client.audit()})
    assert done.height >= max(e.height for e in client.audit())
    assert proxy.posts == []
