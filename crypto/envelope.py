"""Envelope encryption of records for a set of readers.

A record is encrypted once, under a fresh random content key, with XChaCha20-Poly1305 (IETF AEAD:
a 24-byte random nonce is safe to draw at random for every message). The associated data binds the
ciphertext to its context (for a record: its author, patient, type and the record it supersedes);
it is a required argument everywhere, so no caller can forget to bind a ciphertext, and a
ciphertext moved to another context fails to open. The content key is then sealed to each
reader's x25519 public key with a libsodium sealed box (anonymous sender, ephemeral key), so
adding a reader later — a patient's grant — means sealing the same 32-byte key once more, never
re-encrypting the record.

What an envelope cannot prove: a sealed box is anonymous, so the reader key next to a wrapped key
is a label the sealer chose. Nobody but the holder of that reader's private key can check that the
entry really opens for it, and a dishonest sealer can seal the content key for anyone under any
label (or simply hand out the plaintext). An envelope proves who *can* read, never that nobody
else can.

`Envelope` keeps its wrapped keys sorted by reader key with no duplicates, so that its encoding is
canonical (the same envelope always hashes the same) and a reader's entry is found without
ambiguity. Everything that goes wrong while opening — not a reader, a malformed envelope, a
tampered nonce, ciphertext or wrapped key, a wrong key — is a `DecryptionError` and nothing else,
because an envelope read from the ledger is outside input and its failures must be one typed
error the caller can handle.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.utils

from medledger.crypto.errors import CryptoError, DecryptionError
from medledger.crypto.signing import PUBLIC_KEY_SIZE, Identity

#: Size of a content key, in bytes.
CONTENT_KEY_SIZE: Final = 32
#: Size of the XChaCha20-Poly1305 nonce, in bytes.
NONCE_SIZE: Final = 24
#: Size of the Poly1305 tag that every ciphertext carries, in bytes.
TAG_SIZE: Final = 16
#: Size of a content key sealed to one reader (ephemeral public key + key + tag), in bytes.
SEALED_KEY_SIZE: Final = CONTENT_KEY_SIZE + 48
#: Most readers one envelope may name: a bound on work and size per envelope.
ENVELOPE_READERS_MAX: Final = 1024

assert nacl.bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES == CONTENT_KEY_SIZE
assert nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == NONCE_SIZE
assert nacl.bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES == TAG_SIZE
assert nacl.bindings.crypto_box_SEALBYTES + CONTENT_KEY_SIZE == SEALED_KEY_SIZE

_aead_encrypt = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt
_aead_decrypt = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt


@dataclass(frozen=True, slots=True)
class Envelope:
    """A ciphertext plus its content key sealed to each reader.

    `wrapped_keys` holds `(reader x25519 public key, sealed content key)` pairs, strictly sorted
    by reader key. A malformed envelope is refused on construction with `DecryptionError`: it
    could never be opened, and construction is where a decoded envelope from outside is checked.
    """

    nonce: bytes
    ciphertext: bytes
    wrapped_keys: tuple[tuple[bytes, bytes], ...]

    def __post_init__(self) -> None:
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_SIZE:
            raise DecryptionError(f"malformed envelope: nonce must be {NONCE_SIZE} bytes")
        if not isinstance(self.ciphertext, bytes) or len(self.ciphertext) < TAG_SIZE:
            raise DecryptionError(f"malformed envelope: ciphertext must be at least {TAG_SIZE} bytes")
        if not isinstance(self.wrapped_keys, tuple) or not (
            1 <= len(self.wrapped_keys) <= ENVELOPE_READERS_MAX
        ):
            raise DecryptionError(f"malformed envelope: needs 1 to {ENVELOPE_READERS_MAX} wrapped keys")
        previous = b""
        for entry in self.wrapped_keys:
            if not isinstance(entry, tuple) or len(entry) != 2:
                raise DecryptionError("malformed envelope: a wrapped key is not a (reader, key) pair")
            reader, sealed = entry
            if not isinstance(reader, bytes) or len(reader) != PUBLIC_KEY_SIZE:
                raise DecryptionError(f"malformed envelope: reader keys must be {PUBLIC_KEY_SIZE} bytes")
            if not isinstance(sealed, bytes) or len(sealed) != SEALED_KEY_SIZE:
                raise DecryptionError(f"malformed envelope: sealed keys must be {SEALED_KEY_SIZE} bytes")
            if reader <= previous:
                raise DecryptionError("malformed envelope: readers must be sorted and unique")
            previous = reader

    @property
    def readers(self) -> tuple[bytes, ...]:
        """The readers' x25519 public keys, sorted."""
        return tuple(reader for reader, _ in self.wrapped_keys)


def _validate_content_key(content_key: bytes) -> None:
    if not isinstance(content_key, bytes) or len(content_key) != CONTENT_KEY_SIZE:
        raise CryptoError(f"content key must be {CONTENT_KEY_SIZE} bytes")


def seal_content_key(content_key: bytes, reader: bytes) -> bytes:
    """Seal `content_key` to `reader`'s x25519 public key (to add a reader, e.g. by a grant)."""
    _validate_content_key(content_key)
    if not isinstance(reader, bytes) or len(reader) != PUBLIC_KEY_SIZE:
        raise CryptoError(f"reader key must be {PUBLIC_KEY_SIZE} bytes")
    try:
        sealed = nacl.public.SealedBox(nacl.public.PublicKey(reader)).encrypt(content_key)
    except nacl.exceptions.CryptoError as exc:
        # libsodium refuses keys whose shared secret would be all zeros (small-order points).
        raise CryptoError(f"reader key {reader.hex()} is not a usable x25519 public key ({exc})") from None
    assert len(sealed) == SEALED_KEY_SIZE
    return bytes(sealed)


def encrypt_with_content_key(
    plaintext: bytes, content_key: bytes, *, associated_data: bytes
) -> tuple[bytes, bytes]:
    """Encrypt `plaintext` under `content_key` with a random nonce; return `(nonce, ciphertext)`."""
    _validate_content_key(content_key)
    if not isinstance(plaintext, bytes) or not isinstance(associated_data, bytes):
        raise CryptoError("plaintext and associated data must be bytes")
    nonce = nacl.utils.random(NONCE_SIZE)
    return nonce, _aead_encrypt(plaintext, associated_data, nonce, content_key)


def seal_envelope(
    plaintext: bytes,
    readers: Sequence[bytes],
    *,
    associated_data: bytes,
    derive_key: Callable[[bytes], bytes] | None = None,
) -> Envelope:
    """Encrypt `plaintext` under a fresh content key sealed to every reader (duplicates merged).

    `derive_key`, if given, maps the content key to the key the ciphertext is encrypted under
    (readers apply it after unwrapping); by default the content key itself is.
    """
    unique_readers = sorted(set(readers))
    if not unique_readers:
        raise CryptoError("an envelope needs at least one reader")
    if len(unique_readers) > ENVELOPE_READERS_MAX:
        raise CryptoError(f"an envelope may name at most {ENVELOPE_READERS_MAX} readers")
    content_key = nacl.utils.random(CONTENT_KEY_SIZE)
    wrapped_keys = tuple((reader, seal_content_key(content_key, reader)) for reader in unique_readers)
    aead_key = content_key if derive_key is None else derive_key(content_key)
    nonce, ciphertext = encrypt_with_content_key(plaintext, aead_key, associated_data=associated_data)
    return Envelope(nonce=nonce, ciphertext=ciphertext, wrapped_keys=wrapped_keys)


def unwrap_content_key(envelope: Envelope, identity: Identity) -> bytes:
    """Return the content key sealed to `identity` (DecryptionError if not a reader or tampered)."""
    own_key = identity.public.enc_key
    sealed = next((key for reader, key in envelope.wrapped_keys if reader == own_key), None)
    if sealed is None:
        raise DecryptionError(f"identity {identity.public.fingerprint()} is not a reader of this envelope")
    return open_content_key(sealed, identity)


def open_content_key(sealed: bytes, identity: Identity) -> bytes:
    """The content key `seal_content_key` sealed to `identity` (DecryptionError if it does not open)."""
    try:
        content_key = nacl.public.SealedBox(identity.private_key).decrypt(sealed)
    except nacl.exceptions.CryptoError:
        raise DecryptionError("the wrapped content key did not unseal (tampered?)") from None
    if len(content_key) != CONTENT_KEY_SIZE:
        raise DecryptionError("the wrapped content key has the wrong size")
    return bytes(content_key)


def decrypt_with_content_key(envelope: Envelope, content_key: bytes, *, associated_data: bytes) -> bytes:
    """Decrypt `envelope` with an already unwrapped content key (DecryptionError on failure)."""
    if not isinstance(content_key, bytes) or len(content_key) != CONTENT_KEY_SIZE:
        raise DecryptionError(f"content key must be {CONTENT_KEY_SIZE} bytes")
    if not isinstance(associated_data, bytes):
        raise DecryptionError("associated data must be bytes")
    try:
        return _aead_decrypt(envelope.ciphertext, associated_data, envelope.nonce, content_key)
    except nacl.exceptions.CryptoError:
        raise DecryptionError(
            "ciphertext did not authenticate (wrong key, associated data, or tampered)"
        ) from None


def open_envelope(envelope: Envelope, identity: Identity, *, associated_data: bytes) -> bytes:
    """Decrypt `envelope` as `identity` (DecryptionError if not a reader or anything altered)."""
    content_key = unwrap_content_key(envelope, identity)
    return decrypt_with_content_key(envelope, content_key, associated_data=associated_data)
