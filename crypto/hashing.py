"""The one named hash of medledger.

Everything that is hashed — transaction ids, block hashes, Merkle nodes, fingerprints, commitments —
goes through `digest`, so the choice lives in one place and cannot drift between layers.

Why BLAKE2b with a 32-byte digest: it is at least as strong as SHA-256 (no length-extension
weakness, so no HMAC dance is needed for keyed or prefixed uses), faster than SHA-256 in software
on 64-bit CPUs without SHA extensions, and `hashlib.blake2b` is implemented in C, so a call costs
one C function plus the object allocation, with no Python-level work. 32 bytes keep ids compact
and give 128-bit collision resistance.
"""

import hashlib

#: Size of every `digest` output, in bytes.
HASH_SIZE = 32

# Bound once: the attribute lookup is measurable on the Merkle hot path.
_blake2b = hashlib.blake2b


def digest(data: bytes) -> bytes:
    """Return the 32-byte BLAKE2b digest of `data`."""
    return _blake2b(data, digest_size=HASH_SIZE).digest()
