"""The light client's core: follow a chain from a pinned genesis, believing only certified blocks.

A patient's device cannot run a full node, and must not believe one (DESIGN.md §7, ADR 0008). It
pins the hash of the network's genesis and from there follows the chain block by block:

* block h must name block h−1 (the genesis hash for h = 1) as its parent, be for this chain, and
  carry the hash of the validator set the client already trusts for h;
* a quorum of that set must have precommitted it (the block's commit certificate);
* its transactions must hash to the header's tx root (RFC 6962 Merkle root), so a node can neither
  add nor drop a transaction of a block it serves;
* when the header's `next_validators_hash` differs from the current set's hash, governance changed
  the set: the node must also serve the new set, and the client believes it only because its hash
  is in a header the trusted set certified (Tendermint's sequential verification).

A single transaction can also be proven without its whole block: `verify_tx_inclusion` checks a
Merkle audit path against the tx root of a header the client already verified.

Pure functions and one small state object, no I/O and no clock: the SDK fetches, this decides.
Every failure is a `LightClientError` whose `what` names the check that failed, so the caller can
name the node that served the bad answer without parsing a message.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from medledger.chain.errors import ChainError, InvalidBlockError, InvalidCommitError
from medledger.chain.types import Block, Commit, Genesis, Header, TxId, ValidatorSet, compute_tx_id
from medledger.chain.validation import validate_block_shape, validate_commit
from medledger.crypto import MerkleProof, verify_merkle_proof

WHAT_GENESIS: Final = "genesis"
WHAT_LINK: Final = "header link"
WHAT_VALIDATORS: Final = "validator set"
WHAT_COMMIT: Final = "commit certificate"
WHAT_TX_ROOT: Final = "tx root"
WHAT_INCLUSION: Final = "tx inclusion proof"
WHAT_TIME: Final = "block time"


class LightClientError(ChainError):
    """An answer that does not verify against the pinned genesis; `what` names the failed check."""

    code = "unverified"

    def __init__(self, message: str, *, what: str, height: int = 0) -> None:
        super().__init__(message)
        self.what = what
        self.height = height


@dataclasses.dataclass(frozen=True, slots=True)
class TrustedHead:
    """What the client has verified so far: the latest certified block and the set for the next.

    `height` 0 is genesis itself (`block_hash` is then the genesis hash).
    """

    chain_id: str
    genesis_hash: bytes
    height: int
    block_hash: bytes
    time_ms: int
    #: The validator set that must certify block `height + 1`.
    validators: ValidatorSet
    #: How many validator-set changes were followed since genesis.
    set_changes: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class CertifiedBlock:
    """A block that verified, with its certificate and its txs' ids (in block order)."""

    block: Block
    commit: Commit
    tx_ids: tuple[TxId, ...]


def verify_genesis(genesis: Genesis, pinned_hash: bytes) -> TrustedHead:
    """The starting point: a genesis whose hash is the pinned one."""
    if genesis.hash() != pinned_hash:
        raise LightClientError(
            f"the genesis served hashes to {genesis.hash().hex()}, the pinned genesis is {pinned_hash.hex()}",
            what=WHAT_GENESIS,
        )
    return TrustedHead(
        chain_id=genesis.chain_id,
        genesis_hash=pinned_hash,
        height=0,
        block_hash=pinned_hash,
        time_ms=genesis.genesis_time_ms,
        validators=genesis.validators,
    )


def verify_next_block(
    head: TrustedHead, block: Block, commit: Commit, next_validators: ValidatorSet | None
) -> tuple[TrustedHead, CertifiedBlock]:
    """Verify block `head.height + 1`; returns the new head and the certified block.

    `next_validators`: the set that governs the following height, required exactly when the
    header announces a change (its `next_validators_hash` is not the current set's hash).
    """
    header = block.header
    height = head.height + 1
    _validate_link(head, header, height)
    try:
        validate_commit(
            commit, chain_id=head.chain_id, validators=head.validators, block_hash=block.hash(), height=height
        )
    except InvalidCommitError as exc:
        raise LightClientError(exc.message, what=WHAT_COMMIT, height=height) from None
    try:
        tx_ids = validate_block_shape(block, chain_id=head.chain_id)
    except InvalidBlockError as exc:
        raise LightClientError(exc.message, what=WHAT_TX_ROOT, height=height) from None
    validators, changes = head.validators, head.set_changes
    if header.next_validators_hash != head.validators.hash():
        if next_validators is None or next_validators.hash() != header.next_validators_hash:
            raise LightClientError(
                f"block {height} announces a new validator set, and the set served does not match it",
                what=WHAT_VALIDATORS,
                height=height,
            )
        validators, changes = next_validators, changes + 1
    new_head = dataclasses.replace(
        head,
        height=height,
        block_hash=block.hash(),
        time_ms=header.time_ms,
        validators=validators,
        set_changes=changes,
    )
    return new_head, CertifiedBlock(block, commit, tuple(tx_ids))


def _validate_link(head: TrustedHead, header: Header, height: int) -> None:
    if header.chain_id != head.chain_id:
        raise LightClientError(
            f"block {height} is for chain {header.chain_id!r}, not {head.chain_id!r}",
            what=WHAT_LINK,
            height=height,
        )
    if header.height != height:
        raise LightClientError(
            f"expected block {height}, got block {header.height}", what=WHAT_LINK, height=height
        )
    if header.parent_hash != head.block_hash:
        raise LightClientError(
            f"block {height} does not extend the verified block {head.height}", what=WHAT_LINK, height=height
        )
    if header.validators_hash != head.validators.hash():
        raise LightClientError(
            f"block {height} names a validator set other than the one that governs it",
            what=WHAT_VALIDATORS,
            height=height,
        )
    if header.time_ms < head.time_ms:
        raise LightClientError(f"block {height}'s time goes back", what=WHAT_TIME, height=height)


def verify_tx_inclusion(header: Header, tx: bytes, proof: MerkleProof) -> TxId:
    """That `tx` is in the block of `header` (a header the caller has verified); returns its id.

    The proof's leaf count must be the header's `tx_count`: the root alone does not bind the
    count, so an index is only meaningful against an authenticated one (see crypto/merkle.py).
    """
    tx_id = compute_tx_id(tx)
    if proof.leaf_count != header.tx_count or not verify_merkle_proof(header.tx_root, tx_id, proof):
        raise LightClientError(
            f"the tx is not proven to be in block {header.height}", what=WHAT_INCLUSION, height=header.height
        )
    return tx_id


__all__ = [
    "CertifiedBlock",
    "LightClientError",
    "TrustedHead",
    "verify_genesis",
    "verify_next_block",
    "verify_tx_inclusion",
]
