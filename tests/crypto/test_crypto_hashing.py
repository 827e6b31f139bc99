"""Tests of the one named hash and of the crypto error hierarchy."""

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from medledger.crypto import (
    HASH_SIZE,
    CryptoError,
    DecryptionError,
    KeyFileError,
    WrongPassphraseError,
    digest,
)
from medledger.errors import MedledgerError


def test_digest_of_empty_input_is_the_known_blake2b_256_vector() -> None:
    assert digest(b"").hex() == "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"


@settings(database=None)
@given(st.binary(max_size=1024))
def test_digest_is_blake2b_with_32_byte_output(data: bytes) -> None:
    result = digest(data)
    assert len(result) == HASH_SIZE == 32
    assert result == hashlib.blake2b(data, digest_size=32).digest()
    assert result != hashlib.sha256(data).digest()


def test_errors_form_one_typed_hierarchy_with_stable_codes() -> None:
    assert issubclass(CryptoError, MedledgerError)
    assert issubclass(KeyFileError, CryptoError)
    assert issubclass(WrongPassphraseError, KeyFileError)
    assert issubclass(DecryptionError, CryptoError)
    assert not issubclass(DecryptionError, KeyFileError)
    assert CryptoError.code == "crypto_error"
    assert KeyFileError.code == "key_file"
    assert WrongPassphraseError.code == "wrong_passphrase"
    assert DecryptionError.code == "decryption_failed"
    error = WrongPassphraseError("bad passphrase")
    assert error.message == "bad passphrase"
    assert str(error) == "bad passphrase"
