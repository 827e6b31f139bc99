/**
 * An inquiry's reason, opened on the patient's device (health/reasons.py `open_reason`): free
 * text padded to one size, encrypted with XChaCha20-Poly1305 and sealed for the patient and the
 * requester, bound (associated data) to the inquiry's patient and requester.
 */

import { concatBytes, utf8Strict } from "./bytes.js";
import { isHumanText } from "./codec.js";
import { aeadDecrypt, DecryptionError, type Identity, unpad, unwrapContentKey } from "./crypto.js";
import { type InquiryState, REASON_AD_DOMAIN, REASON_BYTES_MAX, REASON_LENGTH_MAX, REASON_PADDED_BYTES } from "./wire.js";

export class ReasonUnreadableError extends Error {
  override readonly name = "ReasonUnreadableError";
}

export function computeReasonAssociatedData(patientId: Uint8Array, requester: Uint8Array): Uint8Array {
  return concatBytes(REASON_AD_DOMAIN, patientId, requester);
}

/** The reason as `identity` (the patient) reads it; `ReasonUnreadableError` if it does not open. */
export function openReason(inquiry: InquiryState, identity: Identity): string {
  const sealed = inquiry.sealed_reason;
  let padded: Uint8Array;
  try {
    const key = unwrapContentKey(sealed, identity);
    padded = aeadDecrypt(sealed.ciphertext, key, sealed.nonce, computeReasonAssociatedData(inquiry.patient_id, inquiry.requester));
  } catch (exc) {
    if (!(exc instanceof DecryptionError)) throw exc;
    throw new ReasonUnreadableError(`the inquiry's reason does not open for this key: ${exc.message}`);
  }
  let reason: string;
  try {
    reason = utf8Strict.decode(unpad(padded, REASON_PADDED_BYTES));
  } catch {
    throw new ReasonUnreadableError("the inquiry's reason is not padded text (a malformed reason)");
  }
  if (!isHumanText(reason, 1, REASON_LENGTH_MAX, REASON_BYTES_MAX))
    throw new ReasonUnreadableError("the inquiry's reason is not an acceptable reason (a malformed reason)");
  return reason;
}
