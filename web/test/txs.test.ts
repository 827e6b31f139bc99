import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { fromHex, toHex } from "../src/bytes.js";
import { decode } from "../src/codec.js";
import { fingerprint, loadSodium, verifySignature } from "../src/crypto.js";
import {
  buildAddRepresentative,
  buildDeny,
  buildGrant,
  buildGrantManifest,
  buildGrantPart,
  computeGrantManifest,
  buildRegisterPatient,
  buildRemoveRepresentative,
  buildRequestRecords,
  buildRevoke,
  computePatientId,
  computeTxSigningBytes,
  type SignedTx,
  type TxOptions,
} from "../src/txs.js";
import { type GrantTerms, type RecordKey, TX_BYTES_MAX, TxSchema } from "../src/wire.js";
import { buildConsentManifest, buildGrantConsent, makeConsent } from "../src/claims.js";
import { buildJoinStudy, buildLeaveStudy } from "../src/research.js";
import { identity, type TxVector, vectors } from "./vectors.js";

await loadSodium();

function terms(v: TxVector): GrantTerms {
  const t = v.args["terms"] as { record_types: string[]; record_ids: string[]; from_ms: string; to_ms: string; expires_ms: string };
  return {
    scope: { record_types: t.record_types, record_ids: t.record_ids.map(fromHex), from_ms: BigInt(t.from_ms), to_ms: BigInt(t.to_ms) },
    expires_ms: BigInt(t.expires_ms),
  };
}

function build(v: TxVector): SignedTx {
  const signer = identity(v.signer);
  const options: TxOptions = { chainId: vectors.chain_id, nonce: BigInt(v.nonce), timestampMs: BigInt(v.timestamp_ms) };
  const arg = (name: string) => fromHex(v.args[name] as string);
  switch (v.name.split(" ")[0]) {
    case "register_patient":
      return buildRegisterPatient(signer, options);
    case "add_representative":
      return buildAddRepresentative(signer, arg("patient_id"), arg("representative"), options);
    case "remove_representative":
      return buildRemoveRepresentative(signer, arg("patient_id"), arg("representative"), options);
    case "grant": {
      const keys = (v.args["record_keys"] as { record_id: string; sealed_key: string }[]).map(
        (k): RecordKey => ({ record_id: fromHex(k.record_id), sealed_key: fromHex(k.sealed_key) }),
      );
      return buildGrant(signer, arg("inquiry_id"), keys, options);
    }
    case "grant_manifest": {
      const ids = (v.args["record_ids"] as string[]).map(fromHex);
      return buildGrantManifest(signer, computeGrantManifest(arg("inquiry_id"), ids), options);
    }
    case "grant_narrowed": {
      const keys = (v.args["record_keys"] as { record_id: string; sealed_key: string }[]).map(
        (k): RecordKey => ({ record_id: fromHex(k.record_id), sealed_key: fromHex(k.sealed_key) }),
      );
      return buildGrant(signer, arg("inquiry_id"), keys, options, terms(v));
    }
    case "grant_manifest_narrowed": {
      const ids = (v.args["record_ids"] as string[]).map(fromHex);
      return buildGrantManifest(signer, computeGrantManifest(arg("inquiry_id"), ids), options, terms(v));
    }
    case "grant_part": {
      const keys = (v.args["record_keys"] as { record_id: string; sealed_key: string }[]).map(
        (k): RecordKey => ({ record_id: fromHex(k.record_id), sealed_key: fromHex(k.sealed_key) }),
      );
      return buildGrantPart(signer, arg("grant_id"), v.args["part"] as number, keys, options);
    }
    case "deny":
      return buildDeny(signer, arg("inquiry_id"), options);
    case "revoke":
      return buildRevoke(signer, arg("grant_id"), options);
    case "request_records":
      return buildRequestRecords(
        signer,
        arg("patient_id"),
        arg("institution"),
        {
          recordTypes: v.args["record_types"] as string[],
          fromMs: BigInt(v.args["from_ms"] as string),
          toMs: BigInt(v.args["to_ms"] as string),
        },
        options,
      );
    case "grant_consent":
      return buildGrantConsent(
        signer,
        makeConsent(arg("patient_id"), arg("grantee"), {
          recordTypes: v.args["record_types"] as string[],
          authors: (v.args["authors"] as string[]).map(fromHex),
          labels: v.args["labels"] as string[],
          fromMs: BigInt(v.args["from_ms"] as string),
          toMs: BigInt(v.args["to_ms"] as string),
          expiresMs: BigInt(v.args["expires_ms"] as string),
        }),
        options,
      );
    case "consent_manifest": {
      return buildConsentManifest(signer, arg("grant_id"), (v.args["record_ids"] as string[]).map(fromHex), options);
    }
    case "join_study":
      return buildJoinStudy(signer, arg("study_id"), arg("patient_id"), options);
    case "leave_study":
      return buildLeaveStudy(signer, arg("study_id"), arg("patient_id"), options);
    default:
      throw new Error(`no builder for the vector ${v.name}`);
  }
}

describe("ids", () => {
  for (const v of Object.values(vectors.identities)) {
    it(`derives ${v.name}'s keys, patient id and fingerprint as Python does`, () => {
      const id = identity(v.name);
      assert.equal(toHex(id.public.signKey), v.sign_key);
      assert.equal(toHex(id.public.encKey), v.enc_key);
      assert.equal(toHex(computePatientId(id.public.signKey)), v.patient_id);
      assert.equal(fingerprint(id.public.signKey), v.fingerprint);
    });
  }
});

describe("the patient's transactions, signed as health/client.py signs them", () => {
  for (const v of vectors.txs) {
    it(`builds ${v.name} byte for byte, with the same id`, () => {
      const signed = build(v);
      assert.equal(signed.tx.kind, v.kind);
      assert.equal(toHex(signed.tx.body), v.body);
      assert.equal(toHex(signed.tx.signature), v.signature);
      assert.equal(toHex(signed.raw), v.tx);
      assert.equal(toHex(signed.txId), v.tx_id);
    });
    it(`verifies the signature Python made on ${v.name}`, () => {
      const tx = decode(TxSchema, fromHex(v.tx), TX_BYTES_MAX);
      const signing = computeTxSigningBytes(tx.chain_id, tx.kind, tx.sender, tx.nonce, tx.timestamp_ms, tx.body);
      assert.equal(toHex(signing), v.signing_bytes);
      assert.ok(verifySignature(tx.sender, signing, tx.signature));
      const forged = signing.slice();
      forged[forged.length - 1]! ^= 1;
      assert.ok(!verifySignature(tx.sender, forged, tx.signature));
    });
  }
  it("draws a fresh 64-bit nonce and takes the clock when none is given", () => {
    const patient = identity("patient");
    const a = buildRegisterPatient(patient, { chainId: vectors.chain_id });
    const b = buildRegisterPatient(patient, { chainId: vectors.chain_id });
    assert.notEqual(toHex(a.txId), toHex(b.txId));
    assert.ok(a.tx.nonce < 2n ** 64n && a.tx.timestamp_ms > 1_700_000_000_000n);
  });
});
