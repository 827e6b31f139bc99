/** The vectors `scripts/make_web_vectors.py` wrote from the Python side, and how to read them. */

import { readFileSync } from "node:fs";

import { fromHex } from "../src/bytes.js";
import type { AnySchema, Schema, Spec } from "../src/codec.js";
import { Identity } from "../src/crypto.js";
import * as wire from "../src/wire.js";

export interface IdentityVector {
  readonly name: string;
  readonly sign_seed: string;
  readonly enc_secret: string;
  readonly sign_key: string;
  readonly enc_key: string;
  readonly patient_id: string;
  readonly fingerprint: string;
}
export interface TxVector {
  readonly name: string;
  readonly signer: string;
  readonly kind: string;
  readonly nonce: string;
  readonly timestamp_ms: string;
  readonly args: Record<string, unknown>;
  readonly body: string;
  readonly signing_bytes: string;
  readonly signature: string;
  readonly tx: string;
  readonly tx_id: string;
}
export interface Vectors {
  readonly chain_id: string;
  readonly identities: Record<string, IdentityVector>;
  readonly encodings: readonly { name: string; schema: string; value: unknown; encoded: string }[];
  readonly invalid_encodings: readonly { schema: string; why: string; encoded: string }[];
  readonly txs: readonly TxVector[];
  readonly signatures: readonly { signer: string; message: string; signature: string }[];
  readonly sealed_boxes: readonly { reader: string; message: string; sealed: string }[];
  readonly aead: readonly { key: string; nonce: string; associated_data: string; plaintext: string; ciphertext: string }[];
  readonly records: readonly {
    name: string;
    record: unknown;
    encoded: string;
    binding: string;
    record_key: string;
    salt: string;
    plaintext: string;
    grantee: string;
    grantee_sealed_key: string;
    readers: readonly string[];
  }[];
  readonly reasons: readonly { name: string; inquiry: unknown; encoded: string; reason: string }[];
  readonly research: {
    readonly study: string;
    readonly queries: readonly { body: string; digest: string; charge: readonly [string, string] }[];
  };
  readonly claims: {
    readonly claim: unknown;
    readonly encoded: string;
    readonly text: string;
    readonly decisions: readonly { decision: unknown; encoded: string; text: string }[];
    readonly disagreeing: { decision: unknown; encoded: string };
  };
  readonly key_files: readonly { identity: string; passphrase: string; file: string }[];
  readonly merkle: readonly {
    leaves: readonly string[];
    root: string;
    proofs: readonly { index: number; leaf_count: number; path: readonly string[]; valid: boolean; leaf?: string }[];
  }[];
  readonly light_client: {
    inclusion: { block: number; tx_index: number; path: readonly string[] };
    genesis: string;
    genesis_hash: string;
    genesis_with_policy: string;
    genesis_with_policy_hash: string;
    genesis_v2: string;
    genesis_v2_hash: string;
    blocks: readonly { block: string; commit: string; next_validators: string | null }[];
    final_validators_hash: string;
    refusals: readonly { why: string; block: string; commit: string; next_validators: string | null; what: string }[];
  };
  readonly request_auth: readonly {
    signer: string;
    method: string;
    target: string;
    challenge: string;
    time_ms: number;
    patient_id: string;
    signing_input: string;
    authorization: string;
  }[];
  readonly attachments: readonly {
    record_key: string;
    binding: string;
    ref: { blob_id: string; sealed_key: string; size: number };
    manifest: string;
    chunks: readonly string[];
    plaintext: string;
  }[];
}

export const vectors: Vectors = JSON.parse(
  readFileSync(new URL("../../test/vectors.json", import.meta.url), "utf-8"),
) as Vectors;

/** Every schema of wire.ts by its Python class name. */
export const schemas: Record<string, AnySchema> = Object.fromEntries(
  Object.entries(wire)
    .filter(([name]) => name.endsWith("Schema"))
    .map(([name, value]) => [name.slice(0, -"Schema".length), value as AnySchema]),
);

function specFromJson(spec: Spec, value: unknown): unknown {
  switch (spec.kind) {
    case "uint":
      return BigInt(value as string);
    case "bytes":
      return fromHex(value as string);
    case "text":
    case "human":
      return value;
    case "struct":
      return fromJson(spec.schema, value);
    case "seq":
      return (value as unknown[]).map((item) => specFromJson(spec.item, item));
  }
}

/** A value from the vectors' JSON form (bytes as hex, integers as decimal strings). */
export function fromJson<T>(schema: Schema<T> | AnySchema, value: unknown): T {
  const record = value as Record<string, unknown>;
  return Object.fromEntries(schema.fields.map(([name, spec]) => [name, specFromJson(spec, record[name])])) as T;
}

export function identity(name: string): Identity {
  const v = vectors.identities[name];
  if (v === undefined) throw new Error(`no identity ${name} in the vectors`);
  return Identity.fromSecrets(fromHex(v.sign_seed), fromHex(v.enc_secret));
}
