/**
 * The cross-field rules some wire types add to their schema (a Python `__post_init__`, which the
 * Python codec applies while decoding): without them the app would accept a value a node refuses.
 * `wire.ts` lists the types that have one (POST_INIT_TYPES); a test checks each has its rule here.
 */

import { compareBytes } from "./bytes.js";
import { type AnySchema, CodecError, decode, type Schema, type Spec } from "./codec.js";
import { type Block, HASH_SIZE, type ValidatorSet, type Vote } from "./wire.js";

export const CROSS_FIELD_CHECKS: Readonly<Record<string, (value: never) => void>> = {
  Block(block: Block): void {
    if (block.txs.length !== Number(block.header.tx_count))
      throw new CodecError(`Block: header says ${block.header.tx_count} txs, block has ${block.txs.length}`);
  },
  ValidatorSet(set: ValidatorSet): void {
    const keys = set.validators.map((v) => v.sign_key);
    if (keys.length === 0) throw new CodecError("ValidatorSet: a validator set cannot be empty");
    for (let i = 1; i < keys.length; i++)
      if (compareBytes(keys[i - 1]!, keys[i]!) >= 0)
        throw new CodecError("ValidatorSet: validators must be sorted by signing key and unique");
  },
  Vote(vote: Vote): void {
    if (vote.block_hash.length !== 0 && vote.block_hash.length !== HASH_SIZE)
      throw new CodecError("Vote: block_hash must be empty (nil) or a hash");
  },
};

function checkSpec(spec: Spec, value: unknown): void {
  if (spec.kind === "struct") checkValue(spec.schema, value);
  else if (spec.kind === "seq") for (const item of value as readonly unknown[]) checkSpec(spec.item, item);
}

/** The cross-field rules of `schema`'s type and of every structure nested in it (inner first, as
 * Python constructs them while decoding). */
function checkValue(schema: AnySchema, value: unknown): void {
  const record = value as Record<string, unknown>;
  for (const [name, spec] of schema.fields) checkSpec(spec, record[name]);
  const rule = CROSS_FIELD_CHECKS[schema.name] as ((value: unknown) => void) | undefined;
  rule?.(value);
}

/** `decode`, then the cross-field rules, as the Python codec applies them. */
export function decodeChecked<T>(schema: Schema<T>, data: Uint8Array, maxBytes: number): T {
  const value = decode(schema, data, maxBytes);
  checkValue(schema, value);
  return value;
}
