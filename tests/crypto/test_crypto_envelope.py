"""Tests of envelope encryption: readers open, everyone else and every alteration fail typed."""

import dataclasses
from typing import Any, cast

import nacl.exceptions
import nacl.public
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medledger.crypto import (
    CONTENT_KEY_SIZE,
    CryptoError,
    DecryptionError,
    Envelope,
    Identity,
    decrypt_with_content_key,
    encrypt_with_content_key,
    open_envelope,
    seal_content_key,
    seal_envelope,
    unwrap_content_key,
)

PATIENT = Identity.generate()
CLINIC = Identity.generate()
INSURER = Identity.generate()
RESEARCHER = Identity.generate()
READERS = (PATIENT, CLINIC, INSURER)
READER_KEYS = [identity.public.enc_key for identity in READERS]
RECORD = b'{"resourceType": "Observation", "status": "final"}'
ENVELOPE = seal_envelope(RECORD, READER_KEYS, associated_data=b"record-1")


def flip(data: bytes, index: int) -> bytes:
    index %= len(data)
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def assert_nobody_opens(envelope: Envelope, associated_data: bytes = b"record-1") -> None:
    """Every reader gets a DecryptionError, never another exception; the envelope is unchanged."""
    before = dataclasses.astuple(envelope)
    for identity in READERS:
        with pytest.raises(DecryptionError):
            open_envelope(envelope, identity, associated_data=associated_data)
    assert dataclasses.astuple(envelope) == before


@settings(database=None, deadline=None)
@given(st.binary(max_size=2048), st.binary(max_size=64))
def test_every_reader_opens_the_envelope(plaintext: bytes, associated_data: bytes) -> None:
    envelope = seal_envelope(plaintext, READER_KEYS, associated_data=associated_data)
    for identity in READERS:
        assert open_envelope(envelope, identity, associated_data=associated_data) == plaintext
    assert len(envelope.ciphertext) == len(plaintext) + 16
    if len(plaintext) >= 16:
        assert plaintext not in envelope.ciphertext


def test_wrapped_keys_are_sorted_unique_and_share_one_content_key() -> None:
    envelope = seal_envelope(
        RECORD, [*READER_KEYS, PATIENT.public.enc_key, CLINIC.public.enc_key], associated_data=b"r"
    )
    readers = [reader for reader, _ in envelope.wrapped_keys]
    assert readers == sorted(set(READER_KEYS))
    assert envelope.readers == tuple(readers)
    keys = {unwrap_content_key(envelope, identity) for identity in READERS}
    assert len(keys) == 1
    assert len(keys.pop()) == CONTENT_KEY_SIZE


def test_each_seal_uses_a_fresh_content_key_and_nonce() -> None:
    first = seal_envelope(RECORD, READER_KEYS, associated_data=b"r")
    second = seal_envelope(RECORD, READER_KEYS, associated_data=b"r")
    assert first.nonce != second.nonce
    assert first.ciphertext != second.ciphertext
    assert unwrap_content_key(first, PATIENT) != unwrap_content_key(second, PATIENT)


def test_invalid_non_reader_cannot_open() -> None:
    with pytest.raises(DecryptionError, match="not a reader") as info:
        open_envelope(ENVELOPE, RESEARCHER, associated_data=b"record-1")
    assert RESEARCHER.public.fingerprint() in str(info.value)
    with pytest.raises(DecryptionError, match="not a reader"):
        unwrap_content_key(ENVELOPE, RESEARCHER)


def test_invalid_wrong_associated_data() -> None:
    assert_nobody_opens(ENVELOPE, associated_data=b"record-2")
    assert_nobody_opens(ENVELOPE, associated_data=b"")


@settings(database=None)
@given(st.integers(min_value=0))
def test_invalid_tampered_ciphertext(position: int) -> None:
    assert_nobody_opens(dataclasses.replace(ENVELOPE, ciphertext=flip(ENVELOPE.ciphertext, position)))


@settings(database=None)
@given(st.integers(min_value=0))
def test_invalid_tampered_nonce(position: int) -> None:
    assert_nobody_opens(dataclasses.replace(ENVELOPE, nonce=flip(ENVELOPE.nonce, position)))


def test_invalid_truncated_or_extended_ciphertext() -> None:
    assert_nobody_opens(dataclasses.replace(ENVELOPE, ciphertext=ENVELOPE.ciphertext[:-1]))
    assert_nobody_opens(dataclasses.replace(ENVELOPE, ciphertext=ENVELOPE.ciphertext + b"\x00"))
    assert_nobody_opens(dataclasses.replace(ENVELOPE, ciphertext=ENVELOPE.ciphertext[:16]))


@settings(database=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=len(READERS) - 1))
def test_invalid_tampered_wrapped_key(position: int, victim: int) -> None:
    wrapped = list(ENVELOPE.wrapped_keys)
    reader, sealed = wrapped[victim]
    wrapped[victim] = (reader, flip(sealed, position))
    tampered = dataclasses.replace(ENVELOPE, wrapped_keys=tuple(wrapped))
    for identity in READERS:
        if identity.public.enc_key == reader:
            with pytest.raises(DecryptionError, match="did not unseal"):
                open_envelope(tampered, identity, associated_data=b"record-1")
        else:  # the other readers' entries are untouched
            assert open_envelope(tampered, identity, associated_data=b"record-1") == RECORD


def test_invalid_swapped_wrapped_keys() -> None:
    (r0, k0), (r1, k1), rest = ENVELOPE.wrapped_keys[0], ENVELOPE.wrapped_keys[1], ENVELOPE.wrapped_keys[2]
    swapped = dataclasses.replace(ENVELOPE, wrapped_keys=((r0, k1), (r1, k0), rest))
    owners = {identity.public.enc_key: identity for identity in READERS}
    for reader in (r0, r1):
        with pytest.raises(DecryptionError):
            open_envelope(swapped, owners[reader], associated_data=b"record-1")


def test_invalid_wrong_content_key() -> None:
    with pytest.raises(DecryptionError, match="did not authenticate"):
        decrypt_with_content_key(ENVELOPE, bytes(CONTENT_KEY_SIZE), associated_data=b"record-1")
    for bad in (b"", bytes(31), bytes(33), cast(Any, "k" * 32)):
        with pytest.raises(DecryptionError, match="content key must be 32 bytes"):
            decrypt_with_content_key(ENVELOPE, bad, associated_data=b"record-1")


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"nonce": bytes(23)}, "nonce must be 24 bytes"),
        ({"nonce": cast(Any, None)}, "nonce must be 24 bytes"),
        ({"ciphertext": bytes(15)}, "at least 16 bytes"),
        ({"ciphertext": cast(Any, "text")}, "at least 16 bytes"),
        ({"wrapped_keys": ()}, "needs 1 to"),
        ({"wrapped_keys": cast(Any, [])}, "needs 1 to"),
        ({"wrapped_keys": ((bytes(32), bytes(80)),) * 1025}, "needs 1 to"),
        ({"wrapped_keys": ((bytes(31), bytes(80)),)}, "reader keys must be 32 bytes"),
        ({"wrapped_keys": ((bytes(32), bytes(79)),)}, "sealed keys must be 80 bytes"),
        ({"wrapped_keys": cast(Any, ((bytes(32),),))}, "not a \\(reader, key\\) pair"),
        ({"wrapped_keys": cast(Any, ([bytes(32), bytes(80)],))}, "not a \\(reader, key\\) pair"),
        ({"wrapped_keys": ENVELOPE.wrapped_keys[::-1]}, "sorted and unique"),
        ({"wrapped_keys": ENVELOPE.wrapped_keys[:1] * 2}, "sorted and unique"),
    ],
)
def test_invalid_malformed_envelope_is_a_decryption_error(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(DecryptionError, match=match):
        dataclasses.replace(ENVELOPE, **changes)


def test_resealing_the_content_key_adds_a_new_reader() -> None:
    """What a patient's grant does: unwrap the key, seal it for the requester, nothing else."""
    content_key = unwrap_content_key(ENVELOPE, PATIENT)
    sealed = seal_content_key(content_key, RESEARCHER.public.enc_key)
    assert nacl.public.SealedBox(RESEARCHER.private_key).decrypt(sealed) == content_key
    granted = dataclasses.replace(
        ENVELOPE, wrapped_keys=tuple(sorted((*ENVELOPE.wrapped_keys, (RESEARCHER.public.enc_key, sealed))))
    )
    assert open_envelope(granted, RESEARCHER, associated_data=b"record-1") == RECORD
    assert decrypt_with_content_key(ENVELOPE, content_key, associated_data=b"record-1") == RECORD
    # The sealed key is for the researcher only.
    with pytest.raises(nacl.exceptions.CryptoError):
        nacl.public.SealedBox(PATIENT.private_key).decrypt(sealed)
    assert seal_content_key(content_key, RESEARCHER.public.enc_key) != sealed  # ephemeral keys


def test_encrypt_with_content_key_round_trip() -> None:
    content_key = bytes(range(32))
    nonce, ciphertext = encrypt_with_content_key(b"note", content_key, associated_data=b"ad")
    envelope = seal_envelope(b"other", [PATIENT.public.enc_key], associated_data=b"")
    envelope = dataclasses.replace(envelope, nonce=nonce, ciphertext=ciphertext)
    assert decrypt_with_content_key(envelope, content_key, associated_data=b"ad") == b"note"
    with pytest.raises(DecryptionError):
        decrypt_with_content_key(envelope, content_key, associated_data=b"")


@pytest.mark.parametrize(
    "readers",
    [
        [],
        [bytes(31)],
        [b"x" * 33],
        [bytes(32)],  # a small-order point: libsodium refuses to seal to it
        [PATIENT.public.enc_key, bytes(5)],
    ],
)
def test_invalid_readers_are_refused_on_seal(readers: list[bytes]) -> None:
    with pytest.raises(CryptoError) as info:
        seal_envelope(RECORD, readers, associated_data=b"r")
    assert not isinstance(info.value, DecryptionError)


def test_invalid_too_many_readers_are_refused_on_seal() -> None:
    with pytest.raises(CryptoError, match="at most 1024 readers"):
        seal_envelope(RECORD, [i.to_bytes(32, "big") for i in range(1, 1026)], associated_data=b"r")


@pytest.mark.parametrize(
    ("content_key", "reader"),
    [
        (bytes(31), PATIENT.public.enc_key),
        (cast(Any, None), PATIENT.public.enc_key),
        (bytes(32), bytes(31)),
        (bytes(32), cast(Any, "r" * 32)),
    ],
)
def test_invalid_seal_content_key_arguments(content_key: bytes, reader: bytes) -> None:
    with pytest.raises(CryptoError, match="must be 32 bytes"):
        seal_content_key(content_key, reader)


def test_invalid_encrypt_arguments() -> None:
    with pytest.raises(CryptoError, match="content key must be 32 bytes"):
        encrypt_with_content_key(b"x", bytes(16), associated_data=b"")
    with pytest.raises(CryptoError, match="must be bytes"):
        encrypt_with_content_key(cast(Any, "x"), bytes(32), associated_data=b"")


def test_seal_envelope_with_a_derived_key() -> None:
    """With `derive_key`, the ciphertext is under the derived key: the sealed content key alone
    does not open it, the derived one does."""

    def derive(content_key: bytes) -> bytes:
        return bytes(b ^ 0x5A for b in content_key)

    envelope = seal_envelope(RECORD, [PATIENT.public.enc_key], associated_data=b"ad", derive_key=derive)
    with pytest.raises(DecryptionError):
        open_envelope(envelope, PATIENT, associated_data=b"ad")
    content_key = unwrap_content_key(envelope, PATIENT)
    assert decrypt_with_content_key(envelope, derive(content_key), associated_data=b"ad") == RECORD
