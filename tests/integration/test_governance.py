"""Validator set changes by on-chain governance on a live four-validator cluster.

An observer is voted in as a fifth validator (three of four approvals: more than two thirds), then
an original validator is voted out (four of five), while a client keeps committing transactions.
The changes take effect two heights after the block that passes them; every certificate after
that is signed by the new set and still verifies everywhere.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cluster_harness import (
    CHAIN_ID,
    ApiClient,
    LoadStream,
    MakeCluster,
    SignedTx,
    wait_until,
)

from medledger.chain.codec import decode, encode
from medledger.chain.governance import KIND_VALIDATOR_ADD, KIND_VALIDATOR_REMOVE, encode_removal
from medledger.chain.lightclient import TrustedHead, verify_genesis, verify_next_block
from medledger.chain.limits import BLOCK_BYTES_MAX
from medledger.chain.txbuilder import sign_tx
from medledger.chain.types import Block, Commit, Validator, ValidatorSet, decode_genesis
from medledger.crypto import Identity

pytestmark = pytest.mark.slow


def approve(identity: Identity, kind: str, body: bytes) -> SignedTx:
    _, raw, tx_id = sign_tx(identity, chain_id=CHAIN_ID, kind=kind, body=body)
    return SignedTx(raw, tx_id.hex())


def committed_result(api: ApiClient, tx: SignedTx) -> dict[str, Any]:
    (result,) = api.submit([tx], wait_ms=20_000)
    assert result["status"] == "committed", result
    return result


def signers(api: ApiClient, height: int) -> set[str]:
    block = api.get_json(f"/v1/blocks/{height}")
    return {s["validator"] for s in block["commit"]["signatures"]}


def follow_as_light_client(api: ApiClient) -> TrustedHead:
    """A light client's view (ADR 0008): every certificate from genesis, set changes followed."""
    genesis = decode_genesis(
        base64.b64decode(api.get_json("/v1/proofs/genesis")["genesis"]), max_bytes=1 << 24
    )
    head = verify_genesis(genesis, genesis.hash())
    while True:
        page = api.get_json(f"/v1/proofs/blocks?from={head.height + 1}")
        for item in page["blocks"]:
            block = decode(Block, base64.b64decode(item["block"]), max_bytes=BLOCK_BYTES_MAX)
            commit = decode(Commit, base64.b64decode(item["commit"]), max_bytes=1 << 20)
            raw_set = base64.b64decode(item["next_validators"])
            announced = decode(ValidatorSet, raw_set, max_bytes=1 << 20) if raw_set else None
            head, _ = verify_next_block(head, block, commit, announced)
        if not page["blocks"] or head.height >= page["latest_height"]:
            return head


def test_a_validator_is_added_and_one_removed_by_governance_while_commits_go_on(
    cluster_factory: MakeCluster, signer: Identity
) -> None:
    cluster = cluster_factory(validators=4, observers=1)
    newcomer = cluster["observer0"]
    founders = cluster.validators
    entry = founders[0]
    public = newcomer.spec.identity.public
    add_body = encode(Validator("validator4", public.sign_key, public.enc_key))

    with LoadStream(entry, signer, "governance") as load:
        load.wait_committed_height(entry.height() + 3, "commits before the change")
        # Two approvals are not more than two thirds of four: nothing changes yet.
        for founder in founders[:2]:
            assert committed_result(entry.api, approve(founder.spec.identity, KIND_VALIDATOR_ADD, add_body))[
                "result"
            ]["ok"]
        assert entry.status()["validators"] == 4
        # A stranger's approval is refused at admission with the rule that refuses it.
        stranger = approve(signer, KIND_VALIDATOR_ADD, add_body)
        reply = entry.api.request("POST", "/v1/txs", data={"tx": stranger.b64})
        assert reply.status == 422, reply
        assert reply.json()["rule"] == "chain.approver"
        # The third approval passes the change.
        passed = committed_result(entry.api, approve(founders[2].spec.identity, KIND_VALIDATOR_ADD, add_body))
        assert passed["result"]["ok"]
        active_from = passed["height"] + 2
        wait_until(lambda: entry.status()["validators"] == 5, "the five-validator set")
        wait_until(
            lambda: newcomer.status()["validator"] is True, "the newcomer to see itself as a validator"
        )
        # Commits go on, and the newcomer signs certificates once its set governs.
        load.wait_committed_height(active_from + 5, "commits with five validators")
        wait_until(
            lambda: any(
                newcomer.key_hex in signers(entry.api, h) for h in range(active_from, entry.height() + 1)
            ),
            "a certificate signed by the newcomer",
        )

        # Remove founder 3: four approvals of five are more than two thirds.
        leaving = founders[3]
        remove_body = encode_removal(leaving.spec.identity.public.sign_key)
        results = [
            committed_result(entry.api, approve(node.spec.identity, KIND_VALIDATOR_REMOVE, remove_body))
            for node in (*founders[:3], newcomer)
        ]
        assert all(r["result"]["ok"] for r in results)
        removed_from = results[-1]["height"] + 2
        wait_until(lambda: entry.status()["validators"] == 4, "the four-validator set")
        load.wait_committed_height(removed_from + 5, "commits after the removal")
        tip = entry.height()
        for height in range(removed_from, tip + 1):
            assert leaving.key_hex not in signers(entry.api, height)
    assert load.failure is None, load.failure
    agreed = cluster.wait_agreed()
    assert agreed["height"] >= tip
    # A light client that trusts only the genesis follows both changes through certified headers.
    head = follow_as_light_client(entry.api)
    assert head.set_changes == 2
    assert head.height >= tip
    assert not head.validators.contains(leaving.spec.identity.public.sign_key)
    assert head.validators.contains(public.sign_key)
