"""Tests of the RFC 6962 Merkle tree, against a straightforward recursive reference."""

import dataclasses
import hashlib
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medledger.crypto import (
    CryptoError,
    MerkleProof,
    compute_leaf_hash,
    compute_merkle_proof,
    compute_merkle_root,
    compute_node_hash,
    digest,
    verify_merkle_proof,
)

LEAVES_MAX = 70

leaf_lists = st.lists(st.binary(max_size=40), max_size=LEAVES_MAX)
nonempty_leaf_lists = st.lists(st.binary(max_size=40), min_size=1, max_size=LEAVES_MAX)
# Distinct leaves: with duplicates, moving a proof to an equal leaf's index is a genuine proof.
unique_leaf_lists = st.lists(st.binary(max_size=40), min_size=1, max_size=LEAVES_MAX, unique=True)


# --- the reference: RFC 6962 §2.1 written as literally as possible --------------------------


def ref_hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def ref_split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_root(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return ref_hash(b"")
    if n == 1:
        return ref_hash(b"\x00" + leaves[0])
    k = ref_split(n)
    return ref_hash(b"\x01" + ref_root(leaves[:k]) + ref_root(leaves[k:]))


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = ref_split(n)
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_root(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_root(leaves[:k])]


def ref_turns(m: int, n: int) -> list[bool]:
    """Bottom-up: is the node on the path a right child at each level?"""
    if n == 1:
        return []
    k = ref_split(n)
    if m < k:
        return [*ref_turns(m, k), False]
    return [*ref_turns(m - k, n - k), True]


def flip_first_bit(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


# --- properties ------------------------------------------------------------------------------


@settings(database=None, deadline=None)
@given(leaf_lists)
def test_root_matches_the_recursive_reference(leaves: list[bytes]) -> None:
    assert compute_merkle_root(leaves) == ref_root(leaves)
    assert compute_merkle_root(tuple(leaves)) == ref_root(leaves)


@pytest.mark.parametrize("n", [*range(LEAVES_MAX + 1), 127, 128, 129, 1000, 10_000])
def test_root_matches_the_reference_for_every_size(n: int) -> None:
    leaves = [i.to_bytes(4, "big") for i in range(n)]
    assert compute_merkle_root(leaves) == ref_root(leaves)


@settings(database=None, deadline=None)
@given(nonempty_leaf_lists)
def test_every_leaf_has_a_proof_that_verifies(leaves: list[bytes]) -> None:
    root = compute_merkle_root(leaves)
    for index, leaf in enumerate(leaves):
        proof = compute_merkle_proof(leaves, index)
        assert proof == MerkleProof(index, len(leaves), tuple(ref_path(index, leaves)))
        assert verify_merkle_proof(root, leaf, proof)


@settings(database=None, deadline=None)
@given(nonempty_leaf_lists)
def test_invalid_altered_leaf_or_root_fails(leaves: list[bytes]) -> None:
    root = compute_merkle_root(leaves)
    for index, leaf in enumerate(leaves):
        proof = compute_merkle_proof(leaves, index)
        assert not verify_merkle_proof(root, leaf + b"\x00", proof)
        if leaf:
            assert not verify_merkle_proof(root, flip_first_bit(leaf), proof)
        assert not verify_merkle_proof(flip_first_bit(root), leaf, proof)
        # An inner node is never accepted as a leaf (domain separation).
        assert not verify_merkle_proof(root, compute_leaf_hash(leaf), proof)


@settings(database=None, deadline=None)
@given(nonempty_leaf_lists)
def test_invalid_altered_path_element_fails(leaves: list[bytes]) -> None:
    root = compute_merkle_root(leaves)
    for index, leaf in enumerate(leaves):
        proof = compute_merkle_proof(leaves, index)
        for position in range(len(proof.path)):
            path = list(proof.path)
            path[position] = flip_first_bit(path[position])
            altered = dataclasses.replace(proof, path=tuple(path))
            assert not verify_merkle_proof(root, leaf, altered)
        if proof.path:
            shorter = dataclasses.replace(proof, path=proof.path[:-1])
            assert not verify_merkle_proof(root, leaf, shorter)
            reversed_path = dataclasses.replace(proof, path=proof.path[::-1])
            if reversed_path.path != proof.path:
                assert not verify_merkle_proof(root, leaf, reversed_path)
        longer = dataclasses.replace(proof, path=(*proof.path, root))
        assert not verify_merkle_proof(root, leaf, longer)


@settings(database=None, deadline=None)
@given(unique_leaf_lists)
def test_invalid_wrong_index_fails(leaves: list[bytes]) -> None:
    root = compute_merkle_root(leaves)
    n = len(leaves)
    for index, leaf in enumerate(leaves):
        proof = compute_merkle_proof(leaves, index)
        for other in [*range(n), -1, n, n + 1]:
            if other != index:
                moved = dataclasses.replace(proof, index=other)
                assert not verify_merkle_proof(root, leaf, moved)


@settings(database=None, deadline=None)
@given(nonempty_leaf_lists)
def test_invalid_wrong_leaf_count_fails_unless_the_tree_shape_is_the_same(
    leaves: list[bytes],
) -> None:
    """The root does not commit to the leaf count (see merkle.py): a wrong count fails exactly
    when it changes the turns the path takes, and callers must take the count from the header."""
    root = compute_merkle_root(leaves)
    n = len(leaves)
    for index, leaf in enumerate(leaves):
        proof = compute_merkle_proof(leaves, index)
        for count in range(-1, n + 4):
            if count == n:
                continue
            same_shape = index < count and ref_turns(index, count) == ref_turns(index, n)
            resized = dataclasses.replace(proof, leaf_count=count)
            assert verify_merkle_proof(root, leaf, resized) is same_shape


def test_leaf_count_is_not_bound_by_the_root_alone() -> None:
    leaves = [bytes([i]) for i in range(5)]
    proof = compute_merkle_proof(leaves, 0)
    root = compute_merkle_root(leaves)
    assert verify_merkle_proof(root, leaves[0], dataclasses.replace(proof, leaf_count=6))
    assert not verify_merkle_proof(root, leaves[0], dataclasses.replace(proof, leaf_count=4))


# --- fixed values and edge cases -------------------------------------------------------------


def test_small_trees_have_the_rfc6962_shape() -> None:
    a, b, c = b"a", b"b", b"c"
    ha, hb, hc = (digest(b"\x00" + x) for x in (a, b, c))
    assert compute_merkle_root([]) == digest(b"")
    assert compute_merkle_root([a]) == ha == compute_leaf_hash(a)
    assert compute_merkle_root([a, b]) == digest(b"\x01" + ha + hb) == compute_node_hash(ha, hb)
    assert compute_merkle_root([a, b, c]) == digest(b"\x01" + digest(b"\x01" + ha + hb) + hc)
    # Nothing is duplicated (unlike Bitcoin), so [a, b, c] and [a, b, c, c] differ.
    assert compute_merkle_root([a, b, c]) != compute_merkle_root([a, b, c, c])
    # A leaf that spells an inner node does not collide with it.
    assert compute_merkle_root([b"\x01" + ha + hb]) != compute_merkle_root([a, b])
    assert compute_merkle_proof([a], 0) == MerkleProof(index=0, leaf_count=1, path=())


@pytest.mark.parametrize(("n", "index"), [(0, 0), (1, 1), (5, 5), (5, -1), (5, 100)])
def test_invalid_proof_index_out_of_range_raises_crypto_error(n: int, index: int) -> None:
    leaves = [bytes([i]) for i in range(n)]
    with pytest.raises(CryptoError, match="out of range"):
        compute_merkle_proof(leaves, index)
    assert leaves == [bytes([i]) for i in range(n)]


def test_invalid_boolean_index_raises_crypto_error() -> None:
    with pytest.raises(CryptoError):
        compute_merkle_proof([b"a", b"b"], cast(Any, True))


LEAVES = [bytes([i]) * 3 for i in range(7)]
ROOT = compute_merkle_root(LEAVES)
GOOD = compute_merkle_proof(LEAVES, 3)


@pytest.mark.parametrize(
    ("root", "leaf", "proof"),
    [
        (ROOT[:-1], LEAVES[3], GOOD),
        (ROOT + b"\x00", LEAVES[3], GOOD),
        (cast(Any, None), LEAVES[3], GOOD),
        (ROOT, cast(Any, "leaf"), GOOD),
        (ROOT, cast(Any, None), GOOD),
        (ROOT, LEAVES[3], cast(Any, None)),
        (ROOT, LEAVES[3], cast(Any, object())),
        (ROOT, LEAVES[3], MerkleProof(cast(Any, "3"), 7, GOOD.path)),
        (ROOT, LEAVES[3], MerkleProof(cast(Any, 3.0), 7, GOOD.path)),
        (ROOT, LEAVES[3], MerkleProof(cast(Any, True), 7, GOOD.path)),
        (ROOT, LEAVES[3], MerkleProof(3, cast(Any, None), GOOD.path)),
        (ROOT, LEAVES[3], MerkleProof(3, 0, GOOD.path)),
        (ROOT, LEAVES[3], MerkleProof(3, 7, cast(Any, list(GOOD.path)))),
        (ROOT, LEAVES[3], MerkleProof(3, 7, cast(Any, None))),
        (ROOT, LEAVES[3], MerkleProof(3, 7, (*GOOD.path[:-1], cast(Any, "x" * 32)))),
        (ROOT, LEAVES[3], MerkleProof(3, 7, (*GOOD.path[:-1], GOOD.path[-1][:-1]))),
        (ROOT, LEAVES[3], MerkleProof(3, 7, (GOOD.path[0],) * 65)),
        (ROOT, LEAVES[3], MerkleProof(3, 2**80, GOOD.path)),
    ],
)
def test_invalid_malformed_proof_gives_false_without_raising(
    root: bytes, leaf: bytes, proof: MerkleProof
) -> None:
    assert verify_merkle_proof(ROOT, LEAVES[3], GOOD)
    assert verify_merkle_proof(root, leaf, proof) is False
