import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { fromHex, toHex } from "../src/bytes.js";
import { CodecError, encode } from "../src/codec.js";
import { CROSS_FIELD_CHECKS, decodeChecked } from "../src/checks.js";
import { digest, loadSodium } from "../src/crypto.js";
import {
  computeGenesisHash,
  computeValidatorSetHash,
  decodeGenesis,
  encodeGenesis,
  LightClientError,
  type TrustedHead,
  verifyGenesis,
  verifyNextBlock,
  verifyTxInclusion,
  WHAT_GENESIS,
  WHAT_INCLUSION,
} from "../src/lightclient.js";
import { computeMerkleRoot, verifyMerkleProof } from "../src/merkle.js";
import {
  type Block,
  BlockSchema,
  type Commit,
  CommitSchema,
  GenesisV1Schema,
  GenesisV2Schema,
  POST_INIT_TYPES,
  TX_BYTES_MAX,
  type ValidatorSet,
  ValidatorSetSchema,
} from "../src/wire.js";
import { vectors } from "./vectors.js";

await loadSodium();
const MAX = 32 * 1024 * 1024;
const lc = vectors.light_client;

const genesis = () => decodeChecked(GenesisV1Schema, fromHex(lc.genesis), MAX);
const parts = (b: { block: string; commit: string; next_validators: string | null }) => ({
  block: decodeChecked(BlockSchema, fromHex(b.block), MAX) as Block,
  commit: decodeChecked(CommitSchema, fromHex(b.commit), TX_BYTES_MAX) as Commit,
  next: b.next_validators === null ? null : (decodeChecked(ValidatorSetSchema, fromHex(b.next_validators), TX_BYTES_MAX) as ValidatorSet),
});

describe("Merkle trees as crypto/merkle.py", () => {
  for (const tree of vectors.merkle) {
    const leaves = tree.leaves.map(fromHex);
    it(`computes the root of ${leaves.length} leaves and judges each proof as Python does`, () => {
      assert.equal(toHex(computeMerkleRoot(leaves)), tree.root);
      for (const p of tree.proofs) {
        const leaf = p.leaf === undefined ? leaves[p.index]! : fromHex(p.leaf);
        const proof = { index: p.index, leafCount: p.leaf_count, path: p.path.map(fromHex) };
        assert.equal(verifyMerkleProof(fromHex(tree.root), leaf, proof), p.valid, JSON.stringify(p));
      }
    });
  }
});

describe("the light client as chain/lightclient.py", () => {
  it("follows the certified blocks from the pinned genesis, through a validator-set change", () => {
    let head: TrustedHead = verifyGenesis(genesis(), fromHex(lc.genesis_hash));
    for (const b of lc.blocks) {
      const { block, commit, next } = parts(b);
      const result = verifyNextBlock(head, block, commit, next);
      assert.equal(result.txIds.length, block.txs.length);
      head = result.head;
    }
    assert.equal(head.height, BigInt(lc.blocks.length));
    assert.equal(head.setChanges, 1);
    assert.equal(toHex(computeValidatorSetHash(head.validators)), lc.final_validators_hash);
  });
  it("refuses a genesis other than the pinned one", () => {
    assert.throws(() => verifyGenesis(genesis(), new Uint8Array(32)), (e: unknown) => e instanceof LightClientError && e.what === WHAT_GENESIS);
  });
  for (const r of lc.refusals) {
    it(`refuses ${r.why}, naming the check (${r.what})`, () => {
      const head = verifyGenesis(genesis(), fromHex(lc.genesis_hash));
      const { block, commit, next } = parts(r);
      assert.throws(() => verifyNextBlock(head, block, commit, next), (e: unknown) => e instanceof LightClientError && e.what === r.what);
    });
  }
  it("proves a tx in a verified block by the audit path Python made, against the header's count", () => {
    const { block } = parts(lc.blocks[lc.inclusion.block]!);
    const index = lc.inclusion.tx_index;
    const tx = block.txs[index]!;
    const proof = { index, leafCount: block.txs.length, path: lc.inclusion.path.map(fromHex) };
    assert.equal(toHex(verifyTxInclusion(block.header, tx, proof)), toHex(digest(tx)));
    const refused = (e: unknown) => e instanceof LightClientError && e.what === WHAT_INCLUSION;
    assert.throws(() => verifyTxInclusion(block.header, block.txs[0]!, proof), refused);
    assert.throws(() => verifyTxInclusion(block.header, tx, { ...proof, leafCount: proof.leafCount + 1 }), refused);
  });
});

describe("cross-field rules of the wire types", () => {
  it("has a rule for every type whose Python class has one", () => {
    assert.deepEqual(Object.keys(CROSS_FIELD_CHECKS).sort(), [...POST_INIT_TYPES].sort());
  });
  it("refuses a block whose tx count is not its header's, as Python's codec does", () => {
    const raw = fromHex(lc.refusals.find((r) => r.why.startsWith("a tx dropped"))!.block);
    const block = decodeChecked(BlockSchema, raw, MAX);
    assert.equal(block.txs.length, Number(block.header.tx_count));
    // Re-encode the same header with one tx fewer: the schema accepts it, the rule does not.
    assert.throws(() => CROSS_FIELD_CHECKS["Block"]!({ ...block, txs: block.txs.slice(1) } as never), CodecError);
  });
});

describe("cross-field rules of nested structures", () => {
  it("refuses a genesis whose validator set is not sorted, as constructing it in Python does", () => {
    const g = genesis();
    const reversed = { ...g, validators: { validators: [...g.validators.validators].reverse() } };
    const raw = encode(GenesisV1Schema, reversed); // the schema alone accepts it
    assert.throws(() => decodeChecked(GenesisV1Schema, raw, MAX), /sorted/);
    assert.throws(() => decodeGenesis(raw, MAX), /sorted/);
  });
});

describe("both genesis shapes (docs/adr/0023)", () => {
  it("decodes a genesis without params as the four-field shape, and hashes it as before", () => {
    const g = decodeGenesis(fromHex(lc.genesis), MAX);
    assert.ok(!("params" in g));
    assert.equal(toHex(computeGenesisHash(g)), lc.genesis_hash);
    assert.equal(toHex(encodeGenesis(g)), lc.genesis);
  });

  it("decodes a version-2 genesis with its consensus params, and hashes it as Python does", () => {
    const g = decodeGenesis(fromHex(lc.genesis_v2), MAX);
    assert.ok("params" in g);
    assert.equal(g.params.leader_window, 12n);
    assert.equal(g.params.block_txs_max, 5000n);
    assert.equal(toHex(computeGenesisHash(g)), lc.genesis_v2_hash);
    assert.equal(toHex(encodeGenesis(g)), lc.genesis_v2);
    verifyGenesis(g, fromHex(lc.genesis_v2_hash));
  });

  it("keeps the two shapes apart: neither schema reads the other's bytes", () => {
    assert.throws(() => decodeChecked(GenesisV1Schema, fromHex(lc.genesis_v2), MAX), CodecError);
    assert.throws(() => decodeChecked(GenesisV2Schema, fromHex(lc.genesis), MAX), CodecError);
  });
});
