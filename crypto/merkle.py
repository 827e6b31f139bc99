"""Binary Merkle trees over transaction ids, RFC 6962 shape (Certificate Transparency).

A block header commits to its transactions through `compute_merkle_root`; a light client proves
that one transaction is in a block with a `MerkleProof`. The shape is RFC 6962's: leaves and inner
nodes are hashed with distinct one-byte prefixes (domain separation, so a node can never be passed
off as a leaf, which defeats second-preimage tricks), and a tree of n > 1 leaves splits at the
largest power of two k < n into a complete left subtree of k leaves and the rest. Unlike Bitcoin's
tree, nothing is ever duplicated, so two different leaf lists can never share a root.

Computation is bottom-up: hash adjacent pairs, carry an unpaired last node up *unchanged* (never
duplicated, never re-hashed alone). Every level then groups nodes in aligned blocks of 2^j leaves
from the left, which is exactly the recursive split above, so the iterative root equals the RFC
one for every n; the tests check this against a recursive reference implementation.

Verification follows RFC 9162 §2.1.3.2: it walks the path using the index and the tree size,
and answers `False` for anything malformed instead of raising. As in Certificate Transparency,
the root alone does not commit to the number of leaves: the same path can verify for several
(index, leaf_count) pairs of the same shape (leaf 0 of 5 leaves and leaf 0 of 6 take the same
turns). A proof therefore locates a leaf only relative to a leaf count the verifier already
trusts, so callers must check `proof.leaf_count` against an authenticated count (the block
header's `tx_count`) before believing `proof.index`. Membership itself is always bound.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from medledger.crypto.errors import CryptoError
from medledger.crypto.hashing import HASH_SIZE, digest

#: Domain-separation prefix of a leaf hash.
LEAF_PREFIX: Final = b"\x00"
#: Domain-separation prefix of an inner-node hash.
NODE_PREFIX: Final = b"\x01"
#: Longest audit path accepted: a tree of 2^64 leaves is beyond anything we will ever build.
MERKLE_PATH_LENGTH_MAX: Final = 64

# Prefixed BLAKE2b states, copied per hash (see hashing.py: copying a prepared state is about
# twice as fast as constructing a hasher); never updated themselves, so thread-safe to share.
_LEAF_STATE: Final = hashlib.blake2b(LEAF_PREFIX, digest_size=HASH_SIZE)
_NODE_STATE: Final = hashlib.blake2b(NODE_PREFIX, digest_size=HASH_SIZE)
assert _LEAF_STATE.copy().digest() == digest(LEAF_PREFIX)


@dataclass(frozen=True, slots=True)
class MerkleProof:
    """An audit path proving that the leaf at `index` is in a tree of `leaf_count` leaves.

    `path` lists sibling hashes from the leaf level up to just below the root.
    """

    index: int
    leaf_count: int
    path: tuple[bytes, ...]


def compute_leaf_hash(leaf: bytes) -> bytes:
    """Return the hash of one leaf: `digest(0x00 || leaf)`."""
    state = _LEAF_STATE.copy()
    state.update(leaf)
    return state.digest()


def compute_node_hash(left: bytes, right: bytes) -> bytes:
    """Return the hash of an inner node: `digest(0x01 || left || right)`."""
    state = _NODE_STATE.copy()
    state.update(left)
    state.update(right)
    return state.digest()


def _compute_leaf_level(leaves: Sequence[bytes]) -> list[bytes]:
    copy = _LEAF_STATE.copy
    level: list[bytes] = []
    append = level.append
    for leaf in leaves:
        state = copy()
        state.update(leaf)
        append(state.digest())
    return level


def _compute_parent_level(level: list[bytes]) -> list[bytes]:
    """Hash adjacent pairs; an unpaired last node moves up unchanged."""
    copy = _NODE_STATE.copy
    parents: list[bytes] = []
    append = parents.append
    for i in range(0, len(level) - 1, 2):
        state = copy()
        state.update(level[i])
        state.update(level[i + 1])
        append(state.digest())
    if len(level) % 2 == 1:
        parents.append(level[-1])
    return parents


def compute_merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Return the RFC 6962 Merkle root of `leaves` (`digest(b"")` for no leaves)."""
    if not leaves:
        return digest(b"")
    level = _compute_leaf_level(leaves)
    while len(level) > 1:
        level = _compute_parent_level(level)
    return level[0]


def compute_merkle_proof(leaves: Sequence[bytes], index: int) -> MerkleProof:
    """Return the audit path of the leaf at `index` (CryptoError if out of range)."""
    leaf_count = len(leaves)
    if isinstance(index, bool) or not 0 <= index < leaf_count:
        raise CryptoError(f"merkle proof: index {index} out of range for {leaf_count} leaves")
    path: list[bytes] = []
    level = _compute_leaf_level(leaves)
    position = index
    while len(level) > 1:
        sibling = position ^ 1
        # An unpaired last node (even position, no right neighbour) has no sibling at this level.
        if sibling < len(level):
            path.append(level[sibling])
        level = _compute_parent_level(level)
        position //= 2
    return MerkleProof(index=index, leaf_count=leaf_count, path=tuple(path))


def verify_merkle_proof(root: bytes, leaf: bytes, proof: MerkleProof) -> bool:
    """Tell whether `proof` shows `leaf` at `proof.index` in the tree whose root is `root`.

    Never raises: a malformed proof (wrong types, sizes, index or path length) gives `False`.
    """
    try:
        index, leaf_count, path = proof.index, proof.leaf_count, proof.path
        if (
            type(index) is not int
            or type(leaf_count) is not int
            or not 0 <= index < leaf_count
            or not isinstance(path, tuple)
            or len(path) > MERKLE_PATH_LENGTH_MAX
            or not isinstance(root, bytes)
            or len(root) != HASH_SIZE
            or not isinstance(leaf, bytes)
        ):
            return False
        node_index = index
        last_index = leaf_count - 1
        node = compute_leaf_hash(leaf)
        for sibling in path:
            if not isinstance(sibling, bytes) or len(sibling) != HASH_SIZE or last_index == 0:
                return False
            if node_index % 2 == 1 or node_index == last_index:
                node = compute_node_hash(sibling, node)
                # A right edge that was carried up: skip the levels where it had no sibling.
                if node_index % 2 == 0:
                    while node_index % 2 == 0 and node_index != 0:
                        node_index //= 2
                        last_index //= 2
            else:
                node = compute_node_hash(node, sibling)
            node_index //= 2
            last_index //= 2
    except (AttributeError, TypeError):
        return False
    return last_index == 0 and node == root
