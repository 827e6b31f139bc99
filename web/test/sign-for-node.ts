/**
 * Transactions for a real node (tests/health_api/test_web_app.py): a fresh patient, made and
 * signed here, registers and names a representative on the chain whose id is the first argument.
 * Prints one JSON object: the patient's keys and id, and each tx's bytes and id, in order.
 */

import { toHex } from "../src/bytes.js";
import { Identity, loadSodium } from "../src/crypto.js";
import { buildAddRepresentative, buildRegisterPatient, computePatientId } from "../src/txs.js";

const chainId = process.argv[2];
if (chainId === undefined) throw new Error("usage: sign-for-node.js CHAIN_ID");
await loadSodium();
const patient = Identity.generate();
const representative = Identity.generate();
const patientId = computePatientId(patient.public.signKey);
const txs = [
  buildRegisterPatient(patient, { chainId }),
  buildAddRepresentative(patient, patientId, representative.public.signKey, { chainId }),
];
const out = {
  patient_id: toHex(patientId),
  sign_key: toHex(patient.public.signKey),
  enc_key: toHex(patient.public.encKey),
  representative: toHex(representative.public.signKey),
  txs: txs.map((s) => ({ kind: s.tx.kind, tx: toHex(s.raw), tx_id: toHex(s.txId) })),
};
process.stdout.write(JSON.stringify(out) + "\n");
