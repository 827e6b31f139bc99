"""Tests of identities, signatures and `verify_signature` (which must never raise)."""

from typing import Any, cast

import nacl.public
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medledger.crypto import (
    PUBLIC_KEY_SIZE,
    SEED_SIZE,
    SIGNATURE_SIZE,
    CryptoError,
    Identity,
    PublicIdentity,
    digest,
    verify_signature,
)

ALICE = Identity.generate()
BOB = Identity.generate()

# RFC 8032 §7.1, test 1.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065"
    "224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

messages = st.binary(max_size=512)


def flip_bit(data: bytes, bit: int) -> bytes:
    index, shift = divmod(bit % (8 * len(data)), 8)
    return data[:index] + bytes([data[index] ^ (1 << shift)]) + data[index + 1 :]


def test_sign_matches_the_rfc8032_test_vector() -> None:
    identity = Identity.from_secrets(RFC8032_SEED, bytes(32))
    assert identity.public.sign_key == RFC8032_PUBLIC
    assert identity.sign(b"") == RFC8032_SIGNATURE
    assert verify_signature(RFC8032_PUBLIC, b"", RFC8032_SIGNATURE)


@settings(database=None)
@given(messages)
def test_sign_verify_round_trip(message: bytes) -> None:
    signature = ALICE.sign(message)
    assert len(signature) == SIGNATURE_SIZE
    assert verify_signature(ALICE.public.sign_key, message, signature)
    # Interoperable with PyNaCl's own verifier (standard detached ed25519).
    nacl.signing.VerifyKey(ALICE.public.sign_key).verify(message, signature)


@settings(database=None)
@given(messages, st.integers(min_value=0))
def test_invalid_altered_message_is_rejected(message: bytes, bit: int) -> None:
    signature = ALICE.sign(message)
    altered = flip_bit(message, bit) if message else b"\x00"
    assert not verify_signature(ALICE.public.sign_key, altered, signature)
    assert not verify_signature(ALICE.public.sign_key, message + b"\x00", signature)


@settings(database=None)
@given(messages, st.integers(min_value=0))
def test_invalid_altered_signature_is_rejected(message: bytes, bit: int) -> None:
    signature = ALICE.sign(message)
    assert not verify_signature(ALICE.public.sign_key, message, flip_bit(signature, bit))


@settings(database=None)
@given(messages, st.integers(min_value=0))
def test_invalid_altered_or_other_key_is_rejected(message: bytes, bit: int) -> None:
    signature = ALICE.sign(message)
    assert not verify_signature(BOB.public.sign_key, message, signature)
    assert not verify_signature(flip_bit(ALICE.public.sign_key, bit), message, signature)
    # The x25519 key of the same identity is not its signing key.
    assert not verify_signature(ALICE.public.enc_key, message, signature)


@settings(database=None)
@given(
    st.binary(max_size=80).filter(lambda b: len(b) != PUBLIC_KEY_SIZE),
    st.binary(max_size=130).filter(lambda b: len(b) != SIGNATURE_SIZE),
    messages,
)
def test_invalid_lengths_give_false_without_raising(
    bad_key: bytes, bad_signature: bytes, message: bytes
) -> None:
    signature = ALICE.sign(message)
    key = ALICE.public.sign_key
    assert not verify_signature(bad_key, message, signature)
    assert not verify_signature(key, message, bad_signature)
    # A truncated key followed by the rest of the signature must not shift into validity.
    assert not verify_signature(key[:-1], message, signature + key[-1:])
    assert not verify_signature(key, message, signature[:-1])
    assert not verify_signature(key, message, signature + b"\x00")


@pytest.mark.parametrize(
    "bad_key",
    [
        bytes(32),  # small-order point (zero)
        b"\x01" + bytes(31),  # the neutral element
        b"\xff" * 32,  # not a canonical field element
        bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),  # p - 1
    ],
)
def test_invalid_points_give_false(bad_key: bytes) -> None:
    message = b"transaction"
    assert not verify_signature(bad_key, message, ALICE.sign(message))
    assert not verify_signature(bad_key, message, bytes(64))


@pytest.mark.parametrize(
    ("key", "message", "signature"),
    [
        (None, b"m", bytes(64)),
        ("k" * 32, b"m", bytes(64)),
        (bytes(32), None, bytes(64)),
        (bytes(32), "m", bytes(64)),
        (bytes(32), b"m", None),
        (bytes(32), b"m", 12345),
        (bytearray(32), b"m", bytes(64)),
    ],
)
def test_invalid_types_give_false_without_raising(key: object, message: object, signature: object) -> None:
    assert verify_signature(cast(Any, key), cast(Any, message), cast(Any, signature)) is False


def test_from_secrets_rebuilds_the_same_identity() -> None:
    sign_seed, enc_secret = ALICE.secrets()
    assert len(sign_seed) == len(enc_secret) == SEED_SIZE
    again = Identity.from_secrets(sign_seed, enc_secret)
    assert again.public == ALICE.public
    assert again.secrets() == (sign_seed, enc_secret)
    # ed25519 is deterministic: same key, same message, same signature.
    assert again.sign(b"vote") == ALICE.sign(b"vote")


def test_public_identity_matches_the_private_keys() -> None:
    public = ALICE.public
    assert public is ALICE.public  # computed once
    assert public.enc_key == bytes(ALICE.private_key.public_key)
    assert isinstance(ALICE.private_key, nacl.public.PrivateKey)
    assert public.sign_key == bytes(nacl.signing.SigningKey(ALICE.secrets()[0]).verify_key)
    assert public != BOB.public
    assert Identity.generate().secrets() != ALICE.secrets()


def test_fingerprint_is_16_hex_chars_of_the_signing_key_digest() -> None:
    fingerprint = ALICE.public.fingerprint()
    assert fingerprint == digest(ALICE.public.sign_key).hex()[:16]
    assert len(fingerprint) == 16
    assert fingerprint != BOB.public.fingerprint()


def test_repr_never_reveals_secrets() -> None:
    sign_seed, enc_secret = ALICE.secrets()
    for text in (repr(ALICE), str(ALICE), f"{ALICE}", f"{ALICE!r}", repr([ALICE])):
        assert ALICE.public.fingerprint() in text
        for secret in (sign_seed, enc_secret):
            assert secret.hex() not in text
            assert repr(secret)[2:-1] not in text
    assert not hasattr(ALICE, "__dict__")


@pytest.mark.parametrize(
    ("sign_seed", "enc_secret"),
    [
        (bytes(31), bytes(32)),
        (bytes(32), bytes(33)),
        (b"", b""),
        (cast(Any, "x" * 32), bytes(32)),
        (bytes(32), cast(Any, None)),
    ],
)
def test_invalid_secrets_are_refused(sign_seed: bytes, enc_secret: bytes) -> None:
    with pytest.raises(CryptoError, match="must be 32 bytes"):
        Identity.from_secrets(sign_seed, enc_secret)


@pytest.mark.parametrize(
    ("sign_key", "enc_key"),
    [(bytes(31), bytes(32)), (bytes(32), bytes(64)), (cast(Any, "a" * 32), bytes(32))],
)
def test_invalid_public_identity_is_refused(sign_key: bytes, enc_key: bytes) -> None:
    with pytest.raises(CryptoError, match="must be 32 bytes"):
        PublicIdentity(sign_key=sign_key, enc_key=enc_key)
