"""Building signed transactions on the client side (SDKs, CLI, tests and benchmarks)."""

from __future__ import annotations

import secrets
import time

from medledger.chain.codec import encode
from medledger.chain.types import Tx, TxId, compute_tx_id, compute_tx_signing_bytes
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
