"""medledger's crypto layer: identities, signatures, hashing, Merkle trees, envelopes, key files.

It sits at the bottom of the layer stack and imports nothing of ours but `medledger.errors`
(DESIGN.md §1), so every other layer can depend on it and it can be reviewed on its own. The
primitives are libsodium's (through PyNaCl) and hashlib's BLAKE2b; nothing here is home-made
cryptography, only the composition and the file format.
"""

from medledger.crypto.envelope import (
    CONTENT_KEY_SIZE,
    Envelope,
    decrypt_with_content_key,
    encrypt_with_content_key,
    open_content_key,
    open_envelope,
    seal_content_key,
    seal_envelope,
    unwrap_content_key,
)
from medledger.crypto.errors import CryptoError, DecryptionError, KeyFileError, WrongPassphraseError
from medledger.crypto.hashing import HASH_SIZE, digest
from medledger.crypto.keyfile import (
    decode_identity,
    decode_public_identity,
    encode_identity,
    load_identity,
    read_public_identity,
    save_identity,
)
from medledger.crypto.merkle import (
    MerkleProof,
    compute_leaf_hash,
    compute_merkle_proof,
    compute_merkle_root,
    compute_node_hash,
    verify_merkle_proof,
)
from medledger.crypto.signing import (
    PUBLIC_KEY_SIZE,
    SEED_SIZE,
    SIGNATURE_SIZE,
    Identity,
    PublicIdentity,
    is_usable_enc_key,
    verify_signature,
)

__all__ = [
    "CONTENT_KEY_SIZE",
    "HASH_SIZE",
    "PUBLIC_KEY_SIZE",
    "SEED_SIZE",
    "SIGNATURE_SIZE",
    "CryptoError",
    "DecryptionError",
    "Envelope",
    "Identity",
    "KeyFileError",
    "MerkleProof",
    "PublicIdentity",
    "WrongPassphraseError",
    "compute_leaf_hash",
    "compute_merkle_proof",
    "compute_merkle_root",
    "compute_node_hash",
    "decode_identity",
    "decode_public_identity",
    "decrypt_with_content_key",
    "digest",
    "encode_identity",
    "encrypt_with_content_key",
    "is_usable_enc_key",
    "load_identity",
    "open_content_key",
    "open_envelope",
    "read_public_identity",
    "save_identity",
    "seal_content_key",
    "seal_envelope",
    "unwrap_content_key",
    "verify_merkle_proof",
    "verify_signature",
]
