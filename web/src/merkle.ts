/**
 * RFC 6962 Merkle trees over tx ids (crypto/merkle.py): leaves hashed as BLAKE2b(0x00 ‖ leaf),
 * inner nodes as BLAKE2b(0x01 ‖ left ‖ right), an unpaired last node carried up unchanged.
 * `verifyMerkleProof` follows RFC 9162 §2.1.3.2 and answers false for anything malformed. The root
 * does not bind the leaf count: check `proof.leafCount` against an authenticated count (a verified
 * header's `tx_count`) before believing `proof.index`.
 */

import { concatBytes, equalBytes } from "./bytes.js";
import { digest } from "./crypto.js";
import { HASH_SIZE } from "./wire.js";

/** Longest audit path accepted (a tree of 2^64 leaves is beyond anything built). */
export const MERKLE_PATH_LENGTH_MAX = 64;

export interface MerkleProof {
  readonly index: number;
  readonly leafCount: number;
  readonly path: readonly Uint8Array[];
}

export function computeLeafHash(leaf: Uint8Array): Uint8Array {
  return digest(concatBytes(Uint8Array.of(0), leaf));
}

export function computeNodeHash(left: Uint8Array, right: Uint8Array): Uint8Array {
  return digest(concatBytes(Uint8Array.of(1), left, right));
}

/** The Merkle root of `leaves` (BLAKE2b of nothing for no leaves). */
export function computeMerkleRoot(leaves: readonly Uint8Array[]): Uint8Array {
  if (leaves.length === 0) return digest(new Uint8Array(0));
  let level = leaves.map(computeLeafHash);
  while (level.length > 1) {
    const parents: Uint8Array[] = [];
    for (let i = 0; i + 1 < level.length; i += 2) parents.push(computeNodeHash(level[i]!, level[i + 1]!));
    if (level.length % 2 === 1) parents.push(level[level.length - 1]!);
    level = parents;
  }
  return level[0]!;
}

/** Whether `proof` shows `leaf` at `proof.index` in the tree whose root is `root`; never throws. */
export function verifyMerkleProof(root: Uint8Array, leaf: Uint8Array, proof: MerkleProof): boolean {
  const { index, leafCount, path } = proof;
  if (
    !Number.isSafeInteger(index) ||
    !Number.isSafeInteger(leafCount) ||
    index < 0 ||
    index >= leafCount ||
    path.length > MERKLE_PATH_LENGTH_MAX ||
    root.length !== HASH_SIZE
  )
    return false;
  let nodeIndex = index;
  let lastIndex = leafCount - 1;
  let node = computeLeafHash(leaf);
  for (const sibling of path) {
    if (sibling.length !== HASH_SIZE || lastIndex === 0) return false;
    if (nodeIndex % 2 === 1 || nodeIndex === lastIndex) {
      node = computeNodeHash(sibling, node);
      // A right edge that was carried up: skip the levels where it had no sibling.
      if (nodeIndex % 2 === 0) {
        while (nodeIndex % 2 === 0 && nodeIndex !== 0) {
          nodeIndex = Math.floor(nodeIndex / 2);
          lastIndex = Math.floor(lastIndex / 2);
        }
      }
    } else {
      node = computeNodeHash(node, sibling);
    }
    nodeIndex = Math.floor(nodeIndex / 2);
    lastIndex = Math.floor(lastIndex / 2);
  }
  return lastIndex === 0 && equalBytes(node, root);
}
