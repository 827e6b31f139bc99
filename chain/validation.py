"""Checks that raise: transactions on admission, blocks and commit certificates on arrival.

Every check here is a pure function of its arguments (no clock, no I/O): the caller passes the
time, the validator set and whatever the store knows, so the same checks serve the mempool, the
block producer, consensus and block sync.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from medledger.chain.codec import decode
from medledger.chain.errors import (
    BadSignatureError,
    BlockRule,
    CodecError,
    InvalidBlockError,
    InvalidCommitError,
    MalformedTxError,
    StaleTxError,
    TxTooLargeError,
    WrongChainError,
)
from medledger.chain.limits import TX_BYTES_MAX, TX_CLOCK_SKEW_MS_MAX
from medledger.chain.types import (
    Block,
    Commit,
    Header,
    Tx,
    TxId,
    ValidatorSet,
    VoteKind,
    compute_tx_id,
    compute_vote_signing_bytes,
)
from medledger.crypto import compute_merkle_root, verify_signature

#: `verify(public_key, message, signature)`: the signature check consensus and certificates use
#: (the simulator passes one that caches results across its nodes).
Verifier = Callable[[bytes, bytes, bytes], bool]


@dataclasses.dataclass(frozen=True, slots=True)
class CheckedTx:
    """A decoded transaction with its canonical bytes and id; its signature has been verified."""

    tx: Tx
    raw: bytes
    tx_id: TxId


def decode_tx(raw: bytes, *, tx_id: TxId | None = None) -> tuple[Tx, TxId]:
    """Decode a transaction (size checked first); raises `TxTooLargeError` or `MalformedTxError`.

    `tx_id`: the id of `raw` if the caller has computed it already.
    """
    if len(raw) > TX_BYTES_MAX:
        raise TxTooLargeError(f"transaction of {len(raw)} bytes exceeds {TX_BYTES_MAX}")
    try:
        tx = decode(Tx, raw, max_bytes=TX_BYTES_MAX)
    except CodecError as exc:
        raise MalformedTxError(f"malformed transaction: {exc.message}") from None
    return tx, tx_id if tx_id is not None else compute_tx_id(raw)


def validate_tx_envelope(tx: Tx, *, chain_id: str) -> None:
    """Chain id and signature; raises a typed `InvalidTxError`."""
    if tx.chain_id != chain_id:
        raise WrongChainError(f"transaction is for chain {tx.chain_id!r}, this is {chain_id!r}")
    if not verify_signature(tx.sender, tx.signing_bytes(), tx.signature):
        raise BadSignatureError("the transaction's signature does not verify under its sender key")


def validate_tx_time(tx: Tx, *, now_ms: int, skew_ms: int = TX_CLOCK_SKEW_MS_MAX) -> None:
    """Admission policy (not a block rule): the tx must be recent, which bounds replay windows."""
    if abs(tx.timestamp_ms - now_ms) > skew_ms:
        raise StaleTxError(
            f"transaction timestamp is {abs(tx.timestamp_ms - now_ms)} ms from this node's clock "
            f"(at most {skew_ms} ms allowed)"
        )


def check_tx(raw: bytes, *, chain_id: str, now_ms: int, verified: bool = False) -> CheckedTx:
    """Everything a node checks before a transaction enters its mempool, save app rules and replays.

    `verified`: this node already checked this exact tx's signature (its id is in a cache).
    """
    tx, tx_id = decode_tx(raw)
    if verified:
        if tx.chain_id != chain_id:
            raise WrongChainError(f"transaction is for chain {tx.chain_id!r}, this is {chain_id!r}")
    else:
        validate_tx_envelope(tx, chain_id=chain_id)
    validate_tx_time(tx, now_ms=now_ms)
    return CheckedTx(tx, raw, tx_id)


def compute_tx_root(txs: tuple[bytes, ...] | list[bytes]) -> bytes:
    return compute_merkle_root([compute_tx_id(raw) for raw in txs])


def validate_block_shape(block: Block, *, chain_id: str) -> list[TxId]:
    """What a block must satisfy on its own: chain id and that the txs match the header's root.

    Returns the txs' ids (computed for the root; callers need them too).
    """
    header = block.header
    if header.chain_id != chain_id:
        raise InvalidBlockError(
            f"block is for chain {header.chain_id!r}, this is {chain_id!r}", rule=BlockRule.CHAIN_ID
        )
    tx_ids = [compute_tx_id(raw) for raw in block.txs]
    if compute_merkle_root(list(tx_ids)) != header.tx_root:
        raise InvalidBlockError(
            f"block {header.height}: transactions do not match the tx root", rule=BlockRule.TX_ROOT
        )
    return tx_ids


def validate_header_link(
    header: Header,
    *,
    parent_hash: bytes,
    parent_time_ms: int,
    height: int,
    state_root: bytes,
    validators_hash: bytes,
) -> None:
    """That a header extends our chain: height, parent, time, app state and validator set agree.

    `parent_time_ms`: the parent block's time (the genesis time under block 1). Every path that
    accepts a block (consensus, block sync, `medledger verify`'s replay) goes through here, so
    they agree on it.
    """
    if header.height != height:
        raise InvalidBlockError(f"expected height {height}, got {header.height}", rule=BlockRule.HEIGHT)
    if header.parent_hash != parent_hash:
        raise InvalidBlockError(
            f"block {height}: parent hash does not match our block {height - 1}", rule=BlockRule.PARENT
        )
    validate_block_time(header, parent_time_ms=parent_time_ms)
    if header.state_root != state_root:
        raise InvalidBlockError(
            f"block {height}: state root differs from ours after {height - 1}", rule=BlockRule.STATE_ROOT
        )
    if header.validators_hash != validators_hash:
        raise InvalidBlockError(
            f"block {height}: validator set hash differs from ours", rule=BlockRule.VALIDATORS
        )


def validate_block_time(header: Header, *, parent_time_ms: int) -> None:
    """Block time is monotonic: strictly after the parent's (docs/adr/0007-block-time.md).

    The other half of the block-time rule, that a fresh proposal's time is within the bounds of
    each validator's clock, needs a clock and so lives in consensus (`SynchronyParams.is_timely`).
    """
    if header.time_ms <= parent_time_ms:
        raise InvalidBlockError(
            f"block {header.height}: time {header.time_ms} ms is not after its parent's {parent_time_ms} ms",
            rule=BlockRule.TIME,
        )


def validate_commit(
    commit: Commit,
    *,
    chain_id: str,
    validators: ValidatorSet,
    block_hash: bytes,
    height: int,
    verify: Verifier = verify_signature,
) -> None:
    """A certificate is valid when a quorum of distinct validators precommitted this block.

    The one check of certificates: consensus, block sync, the light client's peers and
    `medledger verify` all call it (with their own `verify`).
    """
    if commit.height != height or commit.block_hash != block_hash:
        raise InvalidCommitError(f"commit is for another block than height {height}'s")
    members = {v.sign_key for v in validators.validators}
    seen: set[bytes] = set()
    for sig in commit.signatures:
        if sig.validator not in members:
            raise InvalidCommitError(f"commit {height}: signer is not a validator")
        if sig.validator in seen:
            raise InvalidCommitError(f"commit {height}: a validator signed twice")
        seen.add(sig.validator)
        message = compute_vote_signing_bytes(
            chain_id, VoteKind.PRECOMMIT, commit.height, commit.round, commit.block_hash, sig.validator
        )
        if not verify(sig.validator, message, sig.signature):
            raise InvalidCommitError(f"commit {height}: a precommit signature does not verify", forged=True)
    if len(seen) < validators.quorum:
        raise InvalidCommitError(
            f"commit {height}: {len(seen)} signers, a quorum is {validators.quorum} of {len(validators)}"
        )


def decode_block(raw: bytes, *, max_bytes: int) -> Block:
    try:
        return decode(Block, raw, max_bytes=max_bytes)
    except CodecError as exc:
        raise InvalidBlockError(f"malformed block: {exc.message}", rule=BlockRule.ENCODING) from None
