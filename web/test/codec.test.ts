import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { fromHex, toHex } from "../src/bytes.js";
import { CodecError, decode, encode } from "../src/codec.js";
import { TX_BYTES_MAX, type Tx, TxSchema } from "../src/wire.js";
import { fromJson, schemas, vectors } from "./vectors.js";

function schemaOf(name: string) {
  const schema = schemas[name];
  assert.ok(schema, `wire.ts has no schema ${name}`);
  return schema;
}

describe("canonical codec: the Python codec's encodings", () => {
  for (const v of vectors.encodings) {
    it(`encodes ${v.name} (${v.schema}) to the same bytes`, () => {
      const schema = schemaOf(v.schema);
      assert.equal(toHex(encode(schema, fromJson(schema, v.value))), v.encoded);
    });
    it(`decodes ${v.name} (${v.schema}) to the same value`, () => {
      const schema = schemaOf(v.schema);
      const encoded = fromHex(v.encoded);
      assert.deepEqual(decode(schema, encoded, encoded.length), fromJson(schema, v.value));
    });
  }
  for (const v of vectors.txs) {
    it(`decodes and re-encodes the tx of ${v.name}`, () => {
      const raw = fromHex(v.tx);
      assert.equal(toHex(encode(TxSchema, decode(TxSchema, raw, TX_BYTES_MAX))), v.tx);
    });
  }
});

describe("canonical codec: what the Python codec refuses", () => {
  for (const v of vectors.invalid_encodings) {
    it(`refuses ${v.why} (${v.schema})`, () => {
      assert.throws(() => decode(schemaOf(v.schema), fromHex(v.encoded), TX_BYTES_MAX), CodecError);
    });
  }
  it("refuses bytes over the caller's limit before parsing them", () => {
    const raw = fromHex(vectors.txs[0]!.tx);
    assert.throws(() => decode(TxSchema, raw, raw.length - 1), /exceed the limit/);
  });
  it("refuses to encode a value its schema refuses", () => {
    const tx = decode(TxSchema, fromHex(vectors.txs[0]!.tx), TX_BYTES_MAX);
    const bad = (changes: Partial<Record<keyof Tx, unknown>>) => ({ ...tx, ...changes }) as Tx;
    assert.throws(() => encode(TxSchema, bad({ sender: new Uint8Array(31) })), CodecError);
    assert.throws(() => encode(TxSchema, bad({ nonce: 2n ** 64n })), CodecError);
    assert.throws(() => encode(TxSchema, bad({ nonce: -1n })), CodecError);
    assert.throws(() => encode(TxSchema, bad({ nonce: 5 })), CodecError);
    assert.throws(() => encode(TxSchema, bad({ kind: "é" })), CodecError);
    assert.throws(() => encode(TxSchema, { ...tx, extra: 1n } as Tx), CodecError);
  });
});
