/**
 * The light client's core, as `chain/lightclient.py` (DESIGN.md §7, ADR 0008): from a pinned
 * genesis hash, believe a block only when it names the verified block as its parent, is for this
 * chain, carries the hash of the validator set that governs it, a quorum of that set precommitted
 * it, and its txs hash to its tx root; follow a validator-set change only through a header the
 * trusted set certified. A tx is proven in a verified block by a Merkle audit path.
 *
 * Pure functions, no I/O, no clock. Every refusal is a `LightClientError` whose `what` is one of
 * the Python side's names, so the app can name the node that served it without parsing a message.
 */

import { concatBytes, equalBytes, toHex } from "./bytes.js";
import { decodeChecked } from "./checks.js";
import { CodecError, decode, encode, type Schema } from "./codec.js";
import { digest, verifySignature } from "./crypto.js";
import { computeMerkleRoot, type MerkleProof, verifyMerkleProof } from "./merkle.js";
import { computeTxId } from "./txs.js";
import {
  type Block,
  type Commit,
  type GenesisV1,
  GenesisV1Schema,
  type GenesisV2,
  GenesisV2Schema,
  type Header,
  HeaderSchema,
  type ValidatorSet,
  ValidatorSetSchema,
  type Vote,
  VoteSchema,
  VOTE_KIND_PRECOMMIT,
  VOTE_SIGN_DOMAIN,
} from "./wire.js";

export const WHAT_GENESIS = "genesis";
export const WHAT_LINK = "header link";
export const WHAT_VALIDATORS = "validator set";
export const WHAT_COMMIT = "commit certificate";
export const WHAT_TX_ROOT = "tx root";
export const WHAT_INCLUSION = "tx inclusion proof";
export const WHAT_TIME = "block time";

export class LightClientError extends Error {
  override readonly name = "LightClientError";
  constructor(
    message: string,
    readonly what: string,
    readonly height = 0,
  ) {
    super(message);
  }
}

export interface TrustedHead {
  readonly chainId: string;
  readonly genesisHash: Uint8Array;
  /** 0: genesis itself (`blockHash` is then the genesis hash). */
  readonly height: bigint;
  readonly blockHash: Uint8Array;
  readonly timeMs: bigint;
  /** The set that must certify block `height + 1`. */
  readonly validators: ValidatorSet;
  readonly setChanges: number;
}

export const computeHeaderHash = (header: Header): Uint8Array => digest(encode(HeaderSchema, header));
export const computeValidatorSetHash = (set: ValidatorSet): Uint8Array => digest(encode(ValidatorSetSchema, set));
/** A genesis of either shape (chain/types.py `Genesis`): a version-2 one carries its consensus params. */
export type Genesis = GenesisV1 | GenesisV2;

/** `decode_genesis`: a `GenesisV2` when the bytes are one, else a `GenesisV1`, cross-field rules included. */
export function decodeGenesis(data: Uint8Array, maxBytes: number): Genesis {
  try {
    decode(GenesisV2Schema, data, maxBytes);
  } catch (e) {
    if (!(e instanceof CodecError)) throw e;
    return decodeChecked(GenesisV1Schema, data, maxBytes);
  }
  return decodeChecked(GenesisV2Schema, data, maxBytes);
}

/** `encode_genesis`: a genesis without params is the four-field `GenesisV1`, as before params existed. */
export const encodeGenesis = (genesis: Genesis): Uint8Array =>
  "params" in genesis ? encode(GenesisV2Schema, genesis) : encode(GenesisV1Schema, genesis);

export const computeGenesisHash = (genesis: Genesis): Uint8Array => digest(encodeGenesis(genesis));

/** ⌈2n/3⌉ distinct validators. */
export const computeQuorum = (set: ValidatorSet): number => Math.ceil((2 * set.validators.length) / 3);

/** The fields a vote's signature covers: every field of `Vote` but the signature. */
const VoteSigningSchema: Schema<Omit<Vote, "signature">> = {
  name: "Vote",
  fields: VoteSchema.fields.filter(([name]) => name !== "signature"),
};

/** What a validator signs when it precommits a block (`compute_vote_signing_bytes`). */
export function computePrecommitSigningBytes(
  chainId: string,
  height: bigint,
  round: bigint,
  blockHash: Uint8Array,
  validator: Uint8Array,
): Uint8Array {
  const fields = { block_hash: blockHash, chain_id: chainId, height, kind: VOTE_KIND_PRECOMMIT, round, validator };
  return concatBytes(VOTE_SIGN_DOMAIN, encode(VoteSigningSchema, fields));
}

/** That a quorum of distinct members of `validators` precommitted `blockHash` at `height`. */
export function validateCommit(
  commit: Commit,
  chainId: string,
  validators: ValidatorSet,
  blockHash: Uint8Array,
  height: bigint,
): void {
  const fail = (message: string) => new LightClientError(message, WHAT_COMMIT, Number(height));
  if (commit.height !== height || !equalBytes(commit.block_hash, blockHash))
    throw fail(`commit is for another block than height ${height}'s`);
  const members = new Set(validators.validators.map((v) => toHex(v.sign_key)));
  const seen = new Set<string>();
  for (const sig of commit.signatures) {
    const key = toHex(sig.validator);
    if (!members.has(key)) throw fail(`commit ${height}: signer is not a validator`);
    if (seen.has(key)) throw fail(`commit ${height}: a validator signed twice`);
    seen.add(key);
    const message = computePrecommitSigningBytes(chainId, commit.height, commit.round, commit.block_hash, sig.validator);
    if (!verifySignature(sig.validator, message, sig.signature))
      throw fail(`commit ${height}: a precommit signature does not verify`);
  }
  const quorum = computeQuorum(validators);
  if (seen.size < quorum)
    throw fail(`commit ${height}: ${seen.size} signers, a quorum is ${quorum} of ${validators.validators.length}`);
}

/** The starting point: a genesis whose hash is the pinned one. */
export function verifyGenesis(genesis: Genesis, pinnedHash: Uint8Array): TrustedHead {
  const hash = computeGenesisHash(genesis);
  if (!equalBytes(hash, pinnedHash))
    throw new LightClientError(
      `the genesis served hashes to ${toHex(hash)}, the pinned genesis is ${toHex(pinnedHash)}`,
      WHAT_GENESIS,
    );
  return {
    chainId: genesis.chain_id,
    genesisHash: pinnedHash,
    height: 0n,
    blockHash: pinnedHash,
    timeMs: genesis.genesis_time_ms,
    validators: genesis.validators,
    setChanges: 0,
  };
}

function validateLink(head: TrustedHead, header: Header, height: bigint): void {
  const h = Number(height);
  if (header.chain_id !== head.chainId)
    throw new LightClientError(`block ${height} is for chain ${JSON.stringify(header.chain_id)}`, WHAT_LINK, h);
  if (header.height !== height) throw new LightClientError(`expected block ${height}, got block ${header.height}`, WHAT_LINK, h);
  if (!equalBytes(header.parent_hash, head.blockHash))
    throw new LightClientError(`block ${height} does not extend the verified block ${head.height}`, WHAT_LINK, h);
  if (!equalBytes(header.validators_hash, computeValidatorSetHash(head.validators)))
    throw new LightClientError(`block ${height} names a validator set other than the one that governs it`, WHAT_VALIDATORS, h);
  if (header.time_ms < head.timeMs) throw new LightClientError(`block ${height}'s time goes back`, WHAT_TIME, h);
}

/**
 * Verify block `head.height + 1`; returns the new head and the block's tx ids (in block order).
 * `nextValidators`: the set that governs the following height, required exactly when the header
 * announces a change.
 */
export function verifyNextBlock(
  head: TrustedHead,
  block: Block,
  commit: Commit,
  nextValidators: ValidatorSet | null,
): { head: TrustedHead; txIds: Uint8Array[] } {
  const header = block.header;
  const height = head.height + 1n;
  validateLink(head, header, height);
  const blockHash = computeHeaderHash(header);
  validateCommit(commit, head.chainId, head.validators, blockHash, height);
  const txIds = block.txs.map(computeTxId);
  if (header.chain_id !== head.chainId || !equalBytes(computeMerkleRoot(txIds), header.tx_root))
    throw new LightClientError(`block ${height}: transactions do not match the tx root`, WHAT_TX_ROOT, Number(height));
  let validators = head.validators;
  let setChanges = head.setChanges;
  if (!equalBytes(header.next_validators_hash, computeValidatorSetHash(head.validators))) {
    if (nextValidators === null || !equalBytes(computeValidatorSetHash(nextValidators), header.next_validators_hash))
      throw new LightClientError(
        `block ${height} announces a new validator set, and the set served does not match it`,
        WHAT_VALIDATORS,
        Number(height),
      );
    validators = nextValidators;
    setChanges += 1;
  }
  return { head: { ...head, height, blockHash, timeMs: header.time_ms, validators, setChanges }, txIds };
}

/** That `tx` is in the block of `header` (verified by the caller); returns its id. */
export function verifyTxInclusion(header: Header, tx: Uint8Array, proof: MerkleProof): Uint8Array {
  const txId = computeTxId(tx);
  if (BigInt(proof.leafCount) !== header.tx_count || !verifyMerkleProof(header.tx_root, txId, proof))
    throw new LightClientError(`the tx is not proven to be in block ${header.height}`, WHAT_INCLUSION, Number(header.height));
  return txId;
}
