import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { fromHex } from "../src/bytes.js";
import { decode } from "../src/codec.js";
import { loadSodium } from "../src/crypto.js";
import { AmendmentTextError, buildRequestAmendment, computeRequestTextAd, openAmendmentText } from "../src/rights.js";
import { KIND_REQUEST_AMENDMENT, type RecordState, RecordStateSchema, RequestAmendmentBodySchema, STATE_VALUE_BYTES_MAX, TX_BYTES_MAX } from "../src/wire.js";
import { identity, vectors } from "./vectors.js";

await loadSodium();
const record = decode(RecordStateSchema, fromHex(vectors.records[0]!.encoded), STATE_VALUE_BYTES_MAX) as RecordState;

describe("asking for a correction", () => {
  it("seals what is wrong for the patient and the author only, bound to the record", () => {
    const patient = identity("patient");
    const author = identity("clinic");
    const signed = buildRequestAmendment(patient, record, "  La valeur était 6,0 — pas 6,2 ", author.public.encKey, { chainId: vectors.chain_id });
    assert.equal(signed.tx.kind, KIND_REQUEST_AMENDMENT);
    const body = decode(RequestAmendmentBodySchema, signed.tx.body, TX_BYTES_MAX);
    assert.deepEqual(body.record_id, record.record_id);
    const ad = computeRequestTextAd(record.patient_id, record.record_id, record.author);
    for (const reader of [patient, author]) assert.equal(openAmendmentText(body.sealed_text, reader, ad), "La valeur était 6,0 — pas 6,2");
    assert.throws(() => openAmendmentText(body.sealed_text, identity("hospital"), ad));
    assert.throws(() => openAmendmentText(body.sealed_text, patient, computeRequestTextAd(record.patient_id, new Uint8Array(32), record.author)));
  });

  it("refuses an empty or unprintable text before signing anything", () => {
    const patient = identity("patient");
    for (const text of ["", "   ", "bell\u0007"])
      assert.throws(() => buildRequestAmendment(patient, record, text, identity("clinic").public.encKey, { chainId: vectors.chain_id }), AmendmentTextError);
  });
});
