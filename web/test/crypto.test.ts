import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { fromHex, toHex, utf8 } from "../src/bytes.js";
import { decode } from "../src/codec.js";
import {
  aeadDecrypt,
  aeadEncrypt,
  DecryptionError,
  loadSodium,
  openContentKey,
  sealContentKey,
  unwrapContentKey,
  verifySignature,
} from "../src/crypto.js";
import { computeRecordBinding, computeRecordKey, openRecord, RecordVerificationError, resealRecordKey } from "../src/records.js";
import { openReason, ReasonUnreadableError } from "../src/reasons.js";
import { InquiryStateSchema, type RecordState, RecordStateSchema, STATE_VALUE_BYTES_MAX } from "../src/wire.js";
import { identity, vectors } from "./vectors.js";

await loadSodium();

describe("ed25519 as PyNaCl signs", () => {
  for (const v of vectors.signatures) {
    it(`signs ${v.message.length / 2} bytes as ${v.signer} with the same signature`, () => {
      const signer = identity(v.signer);
      const message = fromHex(v.message);
      assert.equal(toHex(signer.sign(message)), v.signature);
      assert.ok(verifySignature(signer.public.signKey, message, fromHex(v.signature)));
      assert.ok(!verifySignature(identity("clinic").public.signKey, message, fromHex(v.signature)));
      assert.ok(!verifySignature(signer.public.signKey, message, new Uint8Array(63)));
    });
  }
});

describe("sealed boxes as PyNaCl seals", () => {
  for (const v of vectors.sealed_boxes) {
    it(`opens a ${v.message.length / 2}-byte box Python sealed`, () => {
      assert.equal(toHex(identity(v.reader).openSealed(fromHex(v.sealed))), v.message);
      assert.throws(() => identity("hospital").openSealed(fromHex(v.sealed)), DecryptionError);
      const tampered = fromHex(v.sealed);
      tampered[40]! ^= 1;
      assert.throws(() => identity(v.reader).openSealed(tampered), DecryptionError);
    });
  }
  it("seals a content key only its reader opens", () => {
    const key = new Uint8Array(32).fill(7);
    const sealed = sealContentKey(key, identity("patient").public.encKey);
    assert.equal(sealed.length, 80);
    assert.deepEqual(openContentKey(sealed, identity("patient")), key);
    assert.throws(() => openContentKey(sealed, identity("clinic")), DecryptionError);
  });
});

describe("XChaCha20-Poly1305 as PyNaCl encrypts", () => {
  for (const v of vectors.aead) {
    it(`encrypts ${v.plaintext.length / 2} bytes to the same ciphertext and back`, () => {
      const [key, nonce, ad] = [fromHex(v.key), fromHex(v.nonce), fromHex(v.associated_data)];
      assert.equal(toHex(aeadEncrypt(fromHex(v.plaintext), key, nonce, ad)), v.ciphertext);
      assert.equal(toHex(aeadDecrypt(fromHex(v.ciphertext), key, nonce, ad)), v.plaintext);
      assert.throws(() => aeadDecrypt(fromHex(v.ciphertext), key, nonce, utf8.encode("other")), DecryptionError);
    });
  }
});

describe("records as the ledger holds them", () => {
  for (const v of vectors.records) {
    const record = () => {
      const encoded = fromHex(v.encoded);
      return decode(RecordStateSchema, encoded, STATE_VALUE_BYTES_MAX);
    };
    for (const reader of v.readers) {
      it(`opens ${v.name} as its ${reader}, verified`, () => {
        const r = record();
        const who = identity(reader === "author" ? "clinic" : reader);
        const opened = openRecord(r, who);
        assert.equal(new TextDecoder().decode(opened.json), v.plaintext);
        assert.equal(toHex(opened.salt), v.salt);
        assert.equal(toHex(opened.recordKey), v.record_key);
        assert.equal(opened.resource["resourceType"], r.record_type);
      });
    }
    it(`derives ${v.name}'s binding and record key as Python does`, () => {
      const r = record();
      const binding = computeRecordBinding(r.patient_id, r.author, r.record_type, r.supersedes);
      assert.equal(toHex(binding), v.binding);
      const contentKey = unwrapContentKey(r.envelope, identity("patient"));
      assert.equal(toHex(computeRecordKey(contentKey, binding)), v.record_key);
    });
    it(`opens ${v.name} as the grantee through the key Python re-sealed`, () => {
      const opened = openRecord(record(), identity(v.grantee), fromHex(v.grantee_sealed_key));
      assert.equal(new TextDecoder().decode(opened.json), v.plaintext);
    });
    it(`re-seals ${v.name}'s key for a grantee who then opens it`, () => {
      const key = resealRecordKey(record(), identity("patient"), identity(v.grantee).public.encKey);
      assert.equal(new TextDecoder().decode(openRecord(record(), identity(v.grantee), key.sealed_key).json), v.plaintext);
    });
    it(`refuses ${v.name} re-labelled, re-authored or moved to another patient`, () => {
      const r = record();
      const relabelled: RecordState = { ...r, record_type: "Immunization" };
      const reauthored: RecordState = { ...r, author: identity("hospital").public.signKey };
      const moved: RecordState = { ...r, patient_id: new Uint8Array(32) };
      for (const bad of [relabelled, reauthored, moved])
        assert.throws(() => openRecord(bad, identity("patient")), RecordVerificationError);
      const commitment = r.commitment.slice();
      commitment[0]! ^= 1;
      assert.throws(() => openRecord({ ...r, commitment }, identity("patient")), /commitment/);
      assert.throws(() => openRecord(r, identity("representative")), DecryptionError);
    });
  }
});

describe("inquiry reasons", () => {
  for (const v of vectors.reasons) {
    const inquiry = () => decode(InquiryStateSchema, fromHex(v.encoded), STATE_VALUE_BYTES_MAX);
    it(`opens ${v.name} as the patient and as the requester`, () => {
      assert.equal(openReason(inquiry(), identity("patient")), v.reason);
      assert.equal(openReason(inquiry(), identity("hospital")), v.reason);
    });
    it(`refuses ${v.name} to anyone else, or copied to another patient`, () => {
      assert.throws(() => openReason(inquiry(), identity("clinic")), ReasonUnreadableError);
      assert.throws(() => openReason({ ...inquiry(), patient_id: new Uint8Array(32) }, identity("patient")), ReasonUnreadableError);
    });
  }
});
