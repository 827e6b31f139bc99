/**
 * What the web app makes, for Python to check (tests/web/test_web_interop.py): txs the app signs
 * with the vector keys (fresh random nonces, so nothing is copied from the vectors), a sealed box
 * and a record key re-sealed by the app, an XChaCha20-Poly1305 ciphertext, and a key file the app
 * writes under a fresh salt. Prints one JSON object; run after `tsc -p tsconfig.test.json`.
 */

import { fromHex, toHex, utf8 } from "../src/bytes.js";
import { CodecError, decode } from "../src/codec.js";
import { aeadEncrypt, loadSodium, randomBytes, sealContentKey } from "../src/crypto.js";
import { encodeIdentity } from "../src/keyfile.js";
import { resealRecordKey } from "../src/records.js";
import {
  buildAddRepresentative,
  buildDeny,
  buildGrant,
  buildRegisterPatient,
  buildRemoveRepresentative,
  buildRequestRecords,
  buildRevoke,
  computePatientId,
  type SignedTx,
  signTx,
} from "../src/txs.js";
import { KDF_MEMLIMIT_MIN, KDF_OPSLIMIT_MIN, RecordStateSchema, STATE_VALUE_BYTES_MAX, TX_BYTES_MAX } from "../src/wire.js";
import { identity, schemas, vectors } from "./vectors.js";

await loadSodium();
const patient = identity("patient");
const representative = identity("representative");
const hospital = identity("hospital");
const patientId = computePatientId(patient.public.signKey);
const options = { chainId: vectors.chain_id };
const recordVector = vectors.records[0]!;
const record = decode(RecordStateSchema, fromHex(recordVector.encoded), STATE_VALUE_BYTES_MAX);
const recordKey = resealRecordKey(record, patient, hospital.public.encKey);
const inquiryId = randomBytes(32);

const txs: Record<string, SignedTx> = {
  register_patient: buildRegisterPatient(patient, options),
  add_representative: buildAddRepresentative(patient, patientId, representative.public.signKey, options),
  remove_representative: buildRemoveRepresentative(patient, patientId, representative.public.signKey, options),
  grant: buildGrant(patient, inquiryId, [recordKey], options),
  deny: buildDeny(representative, inquiryId, options),
  revoke: buildRevoke(patient, randomBytes(32), options),
  request_records: buildRequestRecords(
    representative,
    patientId,
    identity("clinic").public.signKey,
    { recordTypes: ["Observation", "Immunization"], fromMs: 5n },
    options,
  ),
};
const aeadKey = randomBytes(32);
const aeadNonce = randomBytes(24);
const plaintext = utf8.encode("sealed by the web app ✓");
const associatedData = utf8.encode("medledger/web-interop");
const passphrase = "web app passphrase ✓";

/** A small seeded PRNG (mulberry32): the same mutations on every run, for Python to judge too. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Mutations of valid encodings (a flipped bit, a byte set, inserted or dropped, a cut) and
 * whether this codec accepts each: the Python codec must agree on every one. */
function mutations(): { schema: string; encoded: string; accepted: boolean }[] {
  const random = prng(20261202);
  const pick = (n: number) => Math.floor(random() * n);
  const valid = [
    ...vectors.encodings.map((v) => [v.schema, v.encoded] as const),
    ...vectors.txs.map((v) => ["Tx", v.tx] as const),
  ];
  const out: { schema: string; encoded: string; accepted: boolean }[] = [];
  for (const [schema, hex] of valid) {
    const original = fromHex(hex);
    for (let i = 0; i < 40; i++) {
      let data = original.slice();
      const at = pick(data.length);
      switch (pick(5)) {
        case 0:
          data[at]! ^= 1 << pick(8);
          break;
        case 1:
          data[at] = pick(256);
          break;
        case 2:
          data = new Uint8Array([...data.subarray(0, at), pick(256), ...data.subarray(at)]);
          break;
        case 3:
          data = new Uint8Array([...data.subarray(0, at), ...data.subarray(at + 1)]);
          break;
        default:
          data = data.slice(0, at);
      }
      let accepted = true;
      try {
        decode(schemas[schema]!, data, TX_BYTES_MAX);
      } catch (exc) {
        if (!(exc instanceof CodecError)) throw exc; // anything else is a bug in the codec
        accepted = false;
      }
      out.push({ schema, encoded: toHex(data), accepted });
    }
  }
  return out;
}

const out = {
  mutations: mutations(),
  // A body past 65,535 bytes: the codec's 32-bit binary form, which no vector reaches.
  large_tx: toHex(signTx(patient, "health.add_record", randomBytes(70_000), options).raw),
  txs: Object.fromEntries(Object.entries(txs).map(([name, s]) => [name, { tx: toHex(s.raw), tx_id: toHex(s.txId) }])),
  inquiry_id: toHex(inquiryId),
  grant_record_key: { record_id: toHex(recordKey.record_id), sealed_key: toHex(recordKey.sealed_key) },
  // The AEAD key, sealed for the patient: Python opens the box, then the ciphertext with it.
  sealed_box: { reader: "patient", message: toHex(aeadKey), sealed: toHex(sealContentKey(aeadKey, patient.public.encKey)) },
  aead: {
    key: toHex(aeadKey),
    nonce: toHex(aeadNonce),
    associated_data: toHex(associatedData),
    plaintext: toHex(plaintext),
    ciphertext: toHex(aeadEncrypt(plaintext, aeadKey, aeadNonce, associatedData)),
  },
  key_file: {
    identity: "representative",
    passphrase,
    file: await encodeIdentity(representative, passphrase, { cost: { opslimit: KDF_OPSLIMIT_MIN, memlimit: KDF_MEMLIMIT_MIN } }),
  },
};
process.stdout.write(JSON.stringify(out) + "\n");
