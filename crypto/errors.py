"""The typed errors of the crypto layer.

Every failure the crypto layer raises on purpose is a `CryptoError`, a child of the project's root
`MedledgerError`, so the REST API can map it to a problem+json response in one place and callers
can catch exactly the failure they can handle (a wrong passphrase is worth a retry prompt; a
corrupted key file is not). Verification predicates (`verify_signature`, `verify_merkle_proof`)
never raise: they answer `False`.
"""

from medledger.errors import MedledgerError


class CryptoError(MedledgerError):
    """A cryptographic operation was refused: bad key material, bad parameters, bad input."""

    code = "crypto_error"


class KeyFileError(CryptoError):
    """A key file could not be written or read: exists already, malformed, truncated, unknown."""

    code = "key_file"


class WrongPassphraseError(KeyFileError):
    """The key file's secrets did not decrypt: wrong passphrase (or an altered encrypted part)."""

    code = "wrong_passphrase"


class DecryptionError(CryptoError):
    """An envelope or ciphertext did not decrypt: not a reader, wrong key, or tampered data."""

    code = "decryption_failed"
