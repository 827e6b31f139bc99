/**
 * Opening a record on the patient's device, as `health/records.py` `open_record` does: the record
 * key is the content key the envelope seals for this identity, keyed to the record's binding
 * (BLAKE2b keyed by the content key over the record-key domain and the binding), or one a grant
 * re-sealed; the ciphertext's associated data is the binding, so a record re-published under
 * another author, patient, type or superseded record does not open; the salted commitment on the
 * ledger must match the plaintext. Only then is a record shown, or its key re-sealed for a grantee.
 *
 * The content must also carry no clinical resource of another type inside (`contained`, or a
 * Bundle's entries' `contained`): only context (`CONTEXT_TYPES`) or its own type, as
 * `fhir.validate_content_types` requires, since a grant is scoped, and the patient is shown, by
 * the ledger's record type.
 */

import { concatBytes, equalBytes, utf8, utf8Strict } from "./bytes.js";
import { aeadDecrypt, DecryptionError, digest, type Identity, keyedDigest, sealContentKey, unwrapContentKey } from "./crypto.js";
import {
  COMMITMENT_DOMAIN,
  CONTEXT_TYPES,
  CONTENT_KEY_SIZE,
  HASH_SIZE,
  PUBLIC_KEY_SIZE,
  RECORD_AD_DOMAIN,
  RECORD_KEY_DOMAIN,
  RECORD_SALT_SIZE,
  type RecordKey,
  type RecordState,
} from "./wire.js";

/** A record that does not verify: not bound to what the ledger says of it, or not its commitment. */
export class RecordVerificationError extends Error {
  override readonly name = "RecordVerificationError";
  constructor(
    message: string,
    readonly recordId: Uint8Array,
  ) {
    super(message);
  }
}

/** Patient id, author key, superseded id (zeros for none), then the record type length-prefixed. */
export function computeRecordBinding(
  patientId: Uint8Array,
  author: Uint8Array,
  recordType: string,
  supersedes: Uint8Array,
): Uint8Array {
  if (patientId.length !== HASH_SIZE || author.length !== PUBLIC_KEY_SIZE)
    throw new RangeError("a record binding needs a 32-byte patient id and a 32-byte author key");
  if (supersedes.length !== 0 && supersedes.length !== HASH_SIZE)
    throw new RangeError("a superseded record id is 32 bytes (or empty: none)");
  const type = utf8.encode(recordType);
  return concatBytes(patientId, author, supersedes.length ? supersedes : new Uint8Array(HASH_SIZE), Uint8Array.of(type.length), type);
}

export function computeRecordKey(contentKey: Uint8Array, binding: Uint8Array): Uint8Array {
  return keyedDigest(concatBytes(RECORD_KEY_DOMAIN, binding), contentKey, CONTENT_KEY_SIZE);
}

export function computeCommitment(binding: Uint8Array, salt: Uint8Array, plaintext: Uint8Array): Uint8Array {
  return digest(concatBytes(COMMITMENT_DOMAIN, binding, salt, plaintext));
}

export interface OpenedRecord {
  readonly recordType: string;
  readonly salt: Uint8Array;
  /** The record's JSON exactly as its author submitted it (ADR 0011). */
  readonly json: Uint8Array;
  readonly resource: Record<string, unknown>;
  /** The key the ciphertext opened under (what a grant re-seals). */
  readonly recordKey: Uint8Array;
}

function bindingOf(record: RecordState): Uint8Array {
  try {
    return computeRecordBinding(record.patient_id, record.author, record.record_type, record.supersedes);
  } catch {
    throw new RecordVerificationError("the record carries metadata no ledger stores", record.record_id);
  }
}

/**
 * Open and verify `record` as `identity`, through its envelope or, for a grantee, the key a grant
 * re-sealed for it (`sealedKey`). Throws `DecryptionError` if `identity` holds no key for it,
 * `RecordVerificationError` if it is not the record the ledger describes.
 */
export function openRecord(record: RecordState, identity: Identity, sealedKey?: Uint8Array): OpenedRecord {
  const binding = bindingOf(record);
  const recordKey =
    sealedKey === undefined
      ? computeRecordKey(unwrapContentKey(record.envelope, identity), binding)
      : identity.openSealed(sealedKey);
  let payload: Uint8Array;
  try {
    payload = aeadDecrypt(record.envelope.ciphertext, recordKey, record.envelope.nonce, concatBytes(RECORD_AD_DOMAIN, binding));
  } catch (exc) {
    if (!(exc instanceof DecryptionError)) throw exc;
    throw new RecordVerificationError(
      "the record does not authenticate as its author's record of its type for this patient",
      record.record_id,
    );
  }
  const salt = payload.slice(0, RECORD_SALT_SIZE);
  const json = payload.slice(RECORD_SALT_SIZE);
  if (salt.length !== RECORD_SALT_SIZE || !equalBytes(computeCommitment(binding, salt, json), record.commitment))
    throw new RecordVerificationError("the record does not match its commitment on the ledger", record.record_id);
  let resource: unknown;
  try {
    resource = JSON.parse(utf8Strict.decode(json));
  } catch {
    resource = null;
  }
  if (typeof resource !== "object" || resource === null || (resource as Record<string, unknown>)["resourceType"] !== record.record_type)
    throw new RecordVerificationError("the record's content is not a resource of the type the ledger names", record.record_id);
  const wrongInside = findForeignContent(resource as Record<string, unknown>, record.record_type);
  if (wrongInside !== null)
    throw new RecordVerificationError(`the record carries a resource of another type inside (${wrongInside})`, record.record_id);
  return { recordType: record.record_type, salt, json, resource: resource as Record<string, unknown>, recordKey };
}

function foreignContained(resource: Record<string, unknown>, resourceType: string, where: string): string | null {
  const contained = resource["contained"];
  if (contained === undefined || contained === null) return null;
  if (!Array.isArray(contained)) return `${where}.contained`;
  for (const [i, inner] of contained.entries()) {
    const path = `${where}.contained[${i}]`;
    if (typeof inner !== "object" || inner === null || Array.isArray(inner)) return path;
    const type = (inner as Record<string, unknown>)["resourceType"];
    if (typeof type !== "string" || (type !== resourceType && !CONTEXT_TYPES.includes(type))) return path;
    if ("contained" in inner) return `${path}.contained`;
  }
  return null;
}

/** Where a record holds a resource of another type than its label (null: nowhere), as `validate_content_types`. */
export function findForeignContent(resource: Record<string, unknown>, recordType: string): string | null {
  if (recordType !== "Bundle") return foreignContained(resource, recordType, recordType);
  const entries = resource["entry"];
  if (!Array.isArray(entries)) return null;
  for (const [i, entry] of entries.entries()) {
    const inner = typeof entry === "object" && entry !== null ? (entry as Record<string, unknown>)["resource"] : undefined;
    if (typeof inner !== "object" || inner === null || Array.isArray(inner)) continue;
    const type = (inner as Record<string, unknown>)["resourceType"];
    if (typeof type !== "string") continue;
    const found = foreignContained(inner as Record<string, unknown>, type, `Bundle.entry[${i}].resource`);
    if (found !== null) return found;
  }
  return null;
}

/** The record's key re-sealed for a grantee, only once the record opened and verified. */
export function resealRecordKey(record: RecordState, identity: Identity, granteeEncKey: Uint8Array): RecordKey {
  const opened = openRecord(record, identity);
  return { record_id: record.record_id, sealed_key: sealContentKey(opened.recordKey, granteeEncKey) };
}
