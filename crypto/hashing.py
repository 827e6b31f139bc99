"""The one named hash of medledger.

Everything that is hashed — transaction ids, block hashes, Merkle nodes, fingerprints, commitments —
goes through `digest`, so the choice lives in one place and cannot drift between layers.

Why BLAKE2b with a 32-byte digest: it is at least as strong as SHA-256 (no length-extension
weakness, so no HMAC dance is needed for keyed or prefixed uses), faster than SHA-256 in software
on 64-bit CPUs without SHA extensions, and `hashlib.blake2b` is implemented in C, so a call costs
a state copy, one update and one finalisation, with no Python-level work. 32 bytes keep ids compact
and give 128-bit collision resistance.
"""

import hashlib
from typing import Final

#: Size of every `digest` output, in bytes.
HASH_SIZE: Final = 32

# A fresh BLAKE2b state, copied for each call: copying is about twice as fast as constructing a
# hasher with `digest_size=` (the parameter block is set up once here, not per call). The state
# is never updated, so sharing it between threads is safe.
_EMPTY_STATE: Final = hashlib.blake2b(digest_size=HASH_SIZE)


def digest(data: bytes) -> bytes:
    """Return the 32-byte BLAKE2b digest of `data`."""
    state = _EMPTY_STATE.copy()
    state.update(data)
    return state.digest()
