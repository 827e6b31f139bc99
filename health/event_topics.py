"""MQTT topics and broker credentials for ledger events (docs/adr/0015-ledger-events.md).

The topic tree, under a configured prefix (default `medledger`):

    <prefix>/inst/<institution sign key, hex>   the events that concern one institution
    <prefix>/pat/<topic token, hex>             one patient's events, as published by one node

A patient's topic is not their ledger id: it is a token only the patient and the publishing node
can compute, keyed BLAKE2b over the x25519 shared secret of the patient's encryption key and the
node's (both on the ledger, each side holding one private half):

    secret   = X25519(patient enc secret, node enc key) = X25519(node enc secret, patient enc key)
               (libsodium's `crypto_box_beforenm`, as `nacl.public.Box.shared_key`)
    token    = BLAKE2b-256(key=secret, TOPIC_DOMAIN   || chain id || 0x00 || node sign key)
    password = BLAKE2b-256(key=secret, PASSWORD_DOMAIN || chain id || 0x00 || node sign key)
    username = "p-" + hex(token)[:32]

So an observer of the broker who knows the patient's ledger id (or their public keys) cannot name
their topic, and the broker's ACL can give each patient their own topic and nothing else, with a
password the patient derives on their device (nothing to hand over).
"""

from __future__ import annotations

import hashlib
from typing import Final

import nacl.public

from medledger.crypto import CryptoError, Identity, is_usable_enc_key

TOPIC_DOMAIN: Final = b"medledger/events/mqtt-topic/v1\x00"
PASSWORD_DOMAIN: Final = b"medledger/events/mqtt-password/v1\x00"
DEFAULT_TOPIC_PREFIX: Final = "medledger"


def compute_shared_secret(identity: Identity, peer_enc_key: bytes) -> bytes:
    """The x25519 shared secret of `identity`'s encryption key and a peer's public one (32 bytes).

    `CryptoError` for a key no secret can be agreed with (a low-order point: older chains may
    hold one, registered before the ledger refused them): it has no topic and no password.
    """
    if not is_usable_enc_key(peer_enc_key):
        raise CryptoError("the peer's encryption key is a low-order x25519 point")
    return bytes(nacl.public.Box(identity.private_key, nacl.public.PublicKey(peer_enc_key)).shared_key())


def _keyed(secret: bytes, domain: bytes, chain_id: str, node_sign_key: bytes) -> bytes:
    message = domain + chain_id.encode() + b"\x00" + node_sign_key
    return hashlib.blake2b(message, key=secret, digest_size=32).digest()


def compute_patient_topic_token(secret: bytes, chain_id: str, node_sign_key: bytes) -> bytes:
    return _keyed(secret, TOPIC_DOMAIN, chain_id, node_sign_key)


def compute_patient_password(secret: bytes, chain_id: str, node_sign_key: bytes) -> str:
    return _keyed(secret, PASSWORD_DOMAIN, chain_id, node_sign_key).hex()


def get_patient_username(token: bytes) -> str:
    return "p-" + token.hex()[:32]


def get_institution_username(sign_key: bytes) -> str:
    return "i-" + sign_key.hex()[:32]


def get_institution_topic(prefix: str, sign_key: bytes) -> str:
    return f"{prefix}/inst/{sign_key.hex()}"


def get_patient_topic(prefix: str, token: bytes) -> str:
    return f"{prefix}/pat/{token.hex()}"


def compute_patient_subscription(
    identity: Identity,
    chain_id: str,
    node_sign_key: bytes,
    node_enc_key: bytes,
    prefix: str = DEFAULT_TOPIC_PREFIX,
) -> tuple[str, str, str]:
    """On the patient's device: (username, password, topic) of their events as a node publishes them."""
    secret = compute_shared_secret(identity, node_enc_key)
    token = compute_patient_topic_token(secret, chain_id, node_sign_key)
    return (
        get_patient_username(token),
        compute_patient_password(secret, chain_id, node_sign_key),
        get_patient_topic(prefix, token),
    )
