"""Building signed things: transactions on the client side (SDKs, CLI, tests and benchmarks), and
commit certificates from a set of validator keys (local chains built for tests and benchmarks, and
the simulator's Byzantine nodes)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence

from medledger.chain.codec import encode
from medledger.chain.types import (
    Commit,
    CommitSig,
    Tx,
    TxId,
    VoteKind,
    compute_tx_id,
    compute_tx_signing_bytes,
    compute_vote_signing_bytes,
)
from medledger.crypto import Identity


def sign_tx(
    identity: Identity,
    *,
    chain_id: str,
    kind: str,
    body: bytes,
    nonce: int | None = None,
    timestamp_ms: int | None = None,
) -> tuple[Tx, bytes, TxId]:
    """A signed tx, its canonical bytes and its id. The nonce defaults to 64 random bits."""
    sender = identity.public.sign_key
    nonce = secrets.randbits(64) if nonce is None else nonce
    timestamp_ms = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
    signature = identity.sign(compute_tx_signing_bytes(chain_id, kind, sender, nonce, timestamp_ms, body))
    tx = Tx(chain_id, kind, sender, nonce, timestamp_ms, body, signature)
    raw = encode(tx)
    return tx, raw, compute_tx_id(raw)


def sign_commit(
    signers: Sequence[Identity], *, chain_id: str, height: int, round_: int, block_hash: bytes
) -> Commit:
    """A commit certificate of one precommit per signer (in the given order) for `block_hash`."""
    sigs = tuple(
        CommitSig(
            key := s.public.sign_key,
            s.sign(compute_vote_signing_bytes(chain_id, VoteKind.PRECOMMIT, height, round_, block_hash, key)),
        )
        for s in signers
    )
    return Commit(height, round_, block_hash, sigs)
