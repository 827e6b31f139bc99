/**
 * The right to amend (health/rights_seal.py, ADR 0014), as the patient's device asks for it: what
 * is wrong with a record, as text padded to one size (no length shows on the ledger), encrypted
 * under a fresh key with XChaCha20-Poly1305 and that key sealed for the patient and the record's
 * author; the associated data binds it to this patient, this record and this author. The tx is
 * `build_request_amendment`'s.
 */

import { compareBytes, concatBytes, equalBytes, utf8, utf8Strict } from "./bytes.js";
import { encode, isHumanText } from "./codec.js";
import { aeadDecrypt, aeadEncrypt, type Identity, pad, randomBytes, sealContentKey, unpad, unwrapContentKey } from "./crypto.js";
import { type SignedTx, signTx, type TxOptions } from "./txs.js";
import {
  AEAD_NONCE_SIZE,
  AMENDMENT_TEXT_AD_DOMAIN,
  AMENDMENT_TEXT_BYTES_MAX,
  AMENDMENT_TEXT_LENGTH_MAX,
  AMENDMENT_TEXT_PADDED_BYTES,
  CONTENT_KEY_SIZE,
  KIND_REQUEST_AMENDMENT,
  type RecordState,
  RequestAmendmentBodySchema,
  type SealedText,
} from "./wire.js";

export class AmendmentTextError extends Error {
  override readonly name = "AmendmentTextError";
}

export function computeRequestTextAd(patientId: Uint8Array, recordId: Uint8Array, author: Uint8Array): Uint8Array {
  return concatBytes(AMENDMENT_TEXT_AD_DOMAIN, utf8.encode("request\u0000"), patientId, recordId, author);
}

/** The text as the rules accept it: NFC, 1 to AMENDMENT_TEXT_LENGTH_MAX printable characters (one line here). */
export function normalizeAmendmentText(text: string): string {
  const normalized = text.trim().normalize("NFC");
  if (!isHumanText(normalized, 1, AMENDMENT_TEXT_LENGTH_MAX, AMENDMENT_TEXT_BYTES_MAX))
    throw new AmendmentTextError(`say what is wrong in 1 to ${AMENDMENT_TEXT_LENGTH_MAX} printable characters`);
  return normalized;
}

export function sealAmendmentText(text: string, associatedData: Uint8Array, readers: readonly Uint8Array[]): SealedText {
  const padded = pad(utf8.encode(normalizeAmendmentText(text)), AMENDMENT_TEXT_PADDED_BYTES);
  const key = randomBytes(CONTENT_KEY_SIZE);
  const nonce = randomBytes(AEAD_NONCE_SIZE);
  const unique = [...readers].sort(compareBytes).filter((r, i, all) => i === 0 || !equalBytes(r, all[i - 1]!));
  return {
    nonce,
    ciphertext: aeadEncrypt(padded, key, nonce, associatedData),
    wrapped_keys: unique.map((reader) => ({ reader, sealed_key: sealContentKey(key, reader) })),
  };
}

/** The text as its reader (the patient or the author) opens it. */
export function openAmendmentText(sealed: SealedText, identity: Identity, associatedData: Uint8Array): string {
  const key = unwrapContentKey(sealed, identity);
  return utf8Strict.decode(unpad(aeadDecrypt(sealed.ciphertext, key, sealed.nonce, associatedData), AMENDMENT_TEXT_PADDED_BYTES));
}

/** Ask `record`'s author (whose encryption key is `authorEncKey`, from the genesis) to correct it. */
export function buildRequestAmendment(
  patient: Identity,
  record: RecordState,
  text: string,
  authorEncKey: Uint8Array,
  options: TxOptions,
): SignedTx {
  const ad = computeRequestTextAd(record.patient_id, record.record_id, record.author);
  const sealed = sealAmendmentText(text, ad, [patient.public.encKey, authorEncKey]);
  return signTx(patient, KIND_REQUEST_AMENDMENT, encode(RequestAmendmentBodySchema, { record_id: record.record_id, sealed_text: sealed }), options);
}
