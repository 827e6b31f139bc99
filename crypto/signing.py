"""Identities and signatures.

An `Identity` is what a participant holds privately: an ed25519 signing key (transactions, votes,
grants) and an x25519 key (envelopes are sealed to it). Its `PublicIdentity` is what everyone
else may know. The two key pairs are independent rather than one derived from the other, so an
encryption key can be rotated or escrowed without touching the signing key, and no cross-protocol
key reuse needs to be argued about.

`verify_signature` is the hot path of transaction admission (every tx and every vote passes
through it), so it is a thin predicate over libsodium: it checks lengths, calls
`crypto_sign_open` once and answers `False` for every kind of bad input instead of raising, so a
peer's garbage can never become an exception in a handler.
"""

from dataclasses import dataclass
from typing import Final

import nacl.bindings
import nacl.exceptions
import nacl.public
import nacl.signing

from medledger.crypto.errors import CryptoError
from medledger.crypto.hashing import digest

#: Size of a detached ed25519 signature, in bytes.
SIGNATURE_SIZE: Final = 64
#: Size of an ed25519 verify key and of an x25519 public key, in bytes.
PUBLIC_KEY_SIZE: Final = 32
#: Size of an ed25519 seed and of an x25519 secret scalar, in bytes.
SEED_SIZE: Final = 32

#: Hex characters of a fingerprint (8 bytes of the digest: enough to tell keys apart by eye).
FINGERPRINT_HEX_CHARS: Final = 16

assert nacl.bindings.crypto_sign_BYTES == SIGNATURE_SIZE
assert nacl.bindings.crypto_sign_PUBLICKEYBYTES == PUBLIC_KEY_SIZE
assert nacl.bindings.crypto_sign_SEEDBYTES == SEED_SIZE
assert nacl.public.PublicKey.SIZE == PUBLIC_KEY_SIZE
assert nacl.public.PrivateKey.SIZE == SEED_SIZE

# Bound once: attribute lookups are measurable on the verification hot path.
_crypto_sign = nacl.bindings.crypto_sign
_crypto_sign_open = nacl.bindings.crypto_sign_open
# BadSignatureError and PyNaCl's ValueError/TypeError all derive from nacl's CryptoError;
# the builtins cover cffi refusing an argument of the wrong type.
_VERIFY_FAILURES = (nacl.exceptions.CryptoError, ValueError, TypeError)


#: Any fixed x25519 scalar serves `is_usable_enc_key` (libsodium clamps it to a multiple of 8).
_PROBE_SCALAR: Final = bytes(range(1, 33))


def is_usable_enc_key(enc_key: bytes) -> bool:
    """Whether `enc_key` is an x25519 public key libsodium will agree a secret with.

    A low-order point (the all-zero key, 1, and the other points of order dividing 8, in canonical
    or non-canonical encoding) gives the all-zero shared secret with *every* secret key, since
    clamping makes every scalar a multiple of the cofactor; libsodium then refuses it (a box or a
    sealed box to it cannot be made). So one X25519 with a fixed scalar decides it for all: a pure
    function of the key's bytes, the same on every node (a ledger rule may use it).
    """
    if not isinstance(enc_key, bytes) or len(enc_key) != PUBLIC_KEY_SIZE:
        return False
    try:
        nacl.bindings.crypto_scalarmult(_PROBE_SCALAR, enc_key)
    except nacl.exceptions.CryptoError:  # libsodium: the result is all zeros
        return False
    return True


@dataclass(frozen=True, slots=True, repr=False)
class PublicIdentity:
    """The public half of an `Identity`: ed25519 verify key and x25519 public key."""

    sign_key: bytes
    enc_key: bytes

    def __post_init__(self) -> None:
        for name, value in (("sign_key", self.sign_key), ("enc_key", self.enc_key)):
            if not isinstance(value, bytes) or len(value) != PUBLIC_KEY_SIZE:
                raise CryptoError(f"public identity: {name} must be {PUBLIC_KEY_SIZE} bytes")

    def fingerprint(self) -> str:
        """Return a short hex name of this identity (from its signing key), for logs and UIs."""
        return digest(self.sign_key).hex()[:FINGERPRINT_HEX_CHARS]

    def __repr__(self) -> str:
        return f"PublicIdentity(sign_key={self.sign_key.hex()}, enc_key={self.enc_key.hex()})"


class Identity:
    """A participant's private keys: ed25519 for signing, x25519 for decrypting envelopes.

    Its `repr` shows only the public fingerprint; the secrets leave the object only through
    `secrets()` (for key files) and `private_key` (for unsealing).
    """

    __slots__ = ("_private_key", "_public", "_secret_key", "_signing_key")

    def __init__(self, signing_key: nacl.signing.SigningKey, private_key: nacl.public.PrivateKey) -> None:
        self._signing_key = signing_key
        self._private_key = private_key
        # libsodium's 64-byte secret key (seed || verify key), kept so `sign` is one C call.
        _, self._secret_key = nacl.bindings.crypto_sign_seed_keypair(bytes(signing_key))
        self._public = PublicIdentity(
            sign_key=bytes(signing_key.verify_key), enc_key=bytes(private_key.public_key)
        )

    @classmethod
    def generate(cls) -> "Identity":
        """Create a fresh identity from the operating system's CSPRNG."""
        return cls(nacl.signing.SigningKey.generate(), nacl.public.PrivateKey.generate())

    @classmethod
    def from_secrets(cls, sign_seed: bytes, enc_secret: bytes) -> "Identity":
        """Rebuild an identity from the two 32-byte secrets returned by `secrets()`."""
        for name, value in (("sign_seed", sign_seed), ("enc_secret", enc_secret)):
            if not isinstance(value, bytes) or len(value) != SEED_SIZE:
                raise CryptoError(f"identity: {name} must be {SEED_SIZE} bytes")
        return cls(nacl.signing.SigningKey(sign_seed), nacl.public.PrivateKey(enc_secret))

    def secrets(self) -> tuple[bytes, bytes]:
        """Return `(sign_seed, enc_secret)`: everything needed to rebuild this identity."""
        return bytes(self._signing_key), bytes(self._private_key)

    @property
    def public(self) -> PublicIdentity:
        """The public half, computed once."""
        return self._public

    @property
    def private_key(self) -> nacl.public.PrivateKey:
        """The x25519 private key, for unsealing envelopes."""
        return self._private_key

    def sign(self, message: bytes) -> bytes:
        """Return the detached 64-byte ed25519 signature of `message`."""
        return _crypto_sign(message, self._secret_key)[:SIGNATURE_SIZE]

    def __repr__(self) -> str:
        return f"Identity(fingerprint={self._public.fingerprint()})"


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Tell whether `signature` is `public_key`'s valid ed25519 signature of `message`.

    Never raises: wrong lengths, wrong types, a forged or corrupt signature, or a key that is not a
    valid curve point (libsodium rejects small-order and non-canonical encodings) all give `False`.
    """
    try:
        # The length checks are not optional: libsodium reads exactly 32 bytes of key.
        if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
            return False
        _crypto_sign_open(signature + message, public_key)
    except _VERIFY_FAILURES:
        return False
    return True
