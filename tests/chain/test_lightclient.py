"""The light client core: certified headers from a pinned genesis, set changes, tx roots, proofs."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest
from chain_testkit import CHAIN_ID, GENESIS_TIME_MS, make_genesis, make_kv_tx, make_validator_set, sign_commit

from medledger.chain.lightclient import (
    WHAT_COMMIT,
    WHAT_GENESIS,
    WHAT_INCLUSION,
    WHAT_LINK,
    WHAT_TIME,
    WHAT_TX_ROOT,
    WHAT_VALIDATORS,
    LightClientError,
    TrustedHead,
    verify_genesis,
    verify_next_block,
    verify_tx_inclusion,
)
from medledger.chain.types import Block, Commit, Header, ValidatorSet, compute_tx_id
from medledger.chain.validation import compute_tx_root
from medledger.crypto import Identity, compute_merkle_proof

VALIDATORS = [Identity.generate() for _ in range(4)]
NEW_MEMBER = Identity.generate()
GENESIS = make_genesis(VALIDATORS)
SET = GENESIS.validators


def make_block(
    head: TrustedHead,
    txs: Sequence[bytes] = (),
    *,
    next_set: ValidatorSet | None = None,
    time_ms: int | None = None,
) -> Block:
    header = Header(
        chain_id=CHAIN_ID,
        height=head.height + 1,
        round=0,
        parent_hash=head.block_hash,
        time_ms=time_ms if time_ms is not None else head.time_ms + 1000,
        proposer=head.validators.validators[0].sign_key,
        tx_count=len(txs),
        tx_root=compute_tx_root(list(txs)),
        state_root=bytes(32),
        validators_hash=head.validators.hash(),
        next_validators_hash=(next_set or head.validators).hash(),
    )
    return Block(header, tuple(txs))


def certify(block: Block, signers: Sequence[Identity]) -> Commit:
    return sign_commit(signers, height=block.header.height, round_=0, block_hash=block.hash())


def kv_txs(count: int) -> list[bytes]:
    return [make_kv_tx(VALIDATORS[0], b"k%d" % i, b"v", nonce=i).raw for i in range(count)]


def assert_refused(
    what: str, head: TrustedHead, block: Block, commit: Commit, vset: ValidatorSet | None = None
) -> None:
    with pytest.raises(LightClientError) as caught:
        verify_next_block(head, block, commit, vset)
    assert caught.value.what == what


def test_light_client_follows_a_certified_chain() -> None:
    head = verify_genesis(GENESIS, GENESIS.hash())
    assert (head.height, head.block_hash, head.validators) == (0, GENESIS.hash(), SET)
    for n in range(3):
        block = make_block(head, kv_txs(n))
        head, certified = verify_next_block(head, block, certify(block, VALIDATORS[:3]), None)
        assert certified.tx_ids == tuple(compute_tx_id(t) for t in block.txs)
    assert (head.height, head.set_changes) == (3, 0)


def test_invalid_genesis_hash_refused() -> None:
    other = make_genesis(VALIDATORS, chain_id="another-network")
    with pytest.raises(LightClientError) as caught:
        verify_genesis(other, GENESIS.hash())
    assert caught.value.what == WHAT_GENESIS


def test_invalid_commits_refused() -> None:
    head = verify_genesis(GENESIS, GENESIS.hash())
    block = make_block(head)
    assert_refused(WHAT_COMMIT, head, block, certify(block, VALIDATORS[:2]))  # 2 of 4: no quorum
    outsiders = [Identity.generate() for _ in range(3)]
    assert_refused(WHAT_COMMIT, head, block, certify(block, outsiders))
    other = make_block(head, kv_txs(1))
    assert_refused(WHAT_COMMIT, head, block, certify(other, VALIDATORS))  # certifies another block
    good = certify(block, VALIDATORS[:3])
    forged = dataclasses.replace(
        good, signatures=(*good.signatures[:2], dataclasses.replace(good.signatures[2], signature=bytes(64)))
    )
    assert_refused(WHAT_COMMIT, head, block, forged)


def test_invalid_tx_lists_refused() -> None:
    """A node cannot add, drop or swap a tx of a certified block: the tx root gives it away."""
    head = verify_genesis(GENESIS, GENESIS.hash())
    txs = kv_txs(3)
    block = make_block(head, txs)
    commit = certify(block, VALIDATORS)
    swapped = Block(block.header, (txs[0], txs[1], kv_txs(4)[3]))
    assert_refused(WHAT_TX_ROOT, head, swapped, commit)
    dropped_header = dataclasses.replace(block.header, tx_count=2)
    assert_refused(WHAT_COMMIT, head, Block(dropped_header, tuple(txs[:2])), commit)


def test_invalid_links_refused() -> None:
    head = verify_genesis(GENESIS, GENESIS.hash())
    block = make_block(head)
    orphan = Block(dataclasses.replace(block.header, parent_hash=bytes(32)), ())
    assert_refused(WHAT_LINK, head, orphan, certify(orphan, VALIDATORS))
    skipped = Block(dataclasses.replace(block.header, height=2), ())
    assert_refused(
        WHAT_LINK, head, skipped, sign_commit(VALIDATORS, height=2, round_=0, block_hash=skipped.hash())
    )
    foreign = make_validator_set([Identity.generate() for _ in range(4)])
    wrong_set = Block(dataclasses.replace(block.header, validators_hash=foreign.hash()), ())
    assert_refused(WHAT_VALIDATORS, head, wrong_set, certify(wrong_set, VALIDATORS))
    back = make_block(head, time_ms=GENESIS_TIME_MS - 1)
    assert_refused(WHAT_TIME, head, back, certify(back, VALIDATORS))


def test_validator_set_change_followed_through_next_validators_hash() -> None:
    head = verify_genesis(GENESIS, GENESIS.hash())
    new_set = make_validator_set([*VALIDATORS, NEW_MEMBER])
    announcing = make_block(head, next_set=new_set)
    commit = certify(announcing, VALIDATORS)
    assert_refused(WHAT_VALIDATORS, head, announcing, commit)  # the new set is not served
    impostor = make_validator_set([*VALIDATORS[:3], Identity.generate(), NEW_MEMBER])
    assert_refused(WHAT_VALIDATORS, head, announcing, commit, impostor)
    head, _ = verify_next_block(head, announcing, commit, new_set)
    assert (head.validators, head.set_changes) == (new_set, 1)
    governed = make_block(head)
    # The old set's quorum (3) is not the new set's (4 of 5): a commit by 3 is refused.
    assert_refused(WHAT_COMMIT, head, governed, certify(governed, VALIDATORS[:3]))
    head, _ = verify_next_block(head, governed, certify(governed, [*VALIDATORS[:3], NEW_MEMBER]), None)
    assert head.height == 2


def test_tx_inclusion_proof_against_a_verified_header() -> None:
    head = verify_genesis(GENESIS, GENESIS.hash())
    txs = kv_txs(5)
    block = make_block(head, txs)
    tx_ids = [compute_tx_id(t) for t in txs]
    proof = compute_merkle_proof(tx_ids, 3)
    assert verify_tx_inclusion(block.header, txs[3], proof) == tx_ids[3]
    with pytest.raises(LightClientError) as caught:
        verify_tx_inclusion(block.header, txs[2], proof)
    assert caught.value.what == WHAT_INCLUSION
    with pytest.raises(LightClientError):
        verify_tx_inclusion(block.header, txs[3], dataclasses.replace(proof, leaf_count=6))
    outsider = kv_txs(6)[5]
    with pytest.raises(LightClientError):
        verify_tx_inclusion(block.header, outsider, proof)
