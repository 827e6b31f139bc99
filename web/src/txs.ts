/**
 * The patient's transactions, built and signed in the browser as `chain/txbuilder.py` `sign_tx`
 * and `health/client.py` build them: the body is the canonical encoding of the kind's wire type,
 * the signature covers the domain tag `medledger/tx/v1\0` and the canonical map of every tx field
 * but the signature, and the tx id is the BLAKE2b-256 of the signed tx's canonical bytes (so the
 * app knows the id of what it creates before any node has seen it).
 *
 * `nonce` defaults to 64 random bits and `timestampMs` to the device's clock, as in Python; pass
 * both to reproduce a vector.
 */

import { bytesToBigInt, compareBytes, concatBytes, uint32BigEndian } from "./bytes.js";
import { encode, type Schema, UINT_MAX } from "./codec.js";
import { digest, type Identity, randomBytes } from "./crypto.js";
import {
  DenyBodySchema,
  GRANT_PART_DOMAIN,
  GRANT_PART_RECORDS_MAX,
  GrantBodySchema,
  type GrantTerms,
  KIND_GRANT_MANIFEST_NARROWED,
  KIND_GRANT_NARROWED,
  NarrowedGrantBodySchema,
  NarrowedGrantManifestBodySchema,
  type GrantManifestBody,
  GrantManifestBodySchema,
  GrantPartBodySchema,
  KIND_GRANT_MANIFEST,
  KIND_GRANT_PART,
  KIND_ADD_REPRESENTATIVE,
  KIND_DENY,
  KIND_GRANT,
  KIND_REGISTER_PATIENT,
  KIND_REMOVE_REPRESENTATIVE,
  KIND_REQUEST_RECORDS,
  KIND_REVOKE,
  PATIENT_ID_DOMAIN,
  RegisterPatientBodySchema,
  RepresentativeBodySchema,
  RequestRecordsBodySchema,
  RevokeBodySchema,
  TX_SIGN_DOMAIN,
  type RecordKey,
  type Tx,
  TxSchema,
} from "./wire.js";

export interface SignedTx {
  readonly tx: Tx;
  /** The canonical bytes a node is sent (`POST /v1/txs`). */
  readonly raw: Uint8Array;
  readonly txId: Uint8Array;
}

export interface TxOptions {
  readonly chainId: string;
  readonly nonce?: bigint;
  readonly timestampMs?: bigint;
}

/** The pseudonymous id of the patient holding `signKey` (health/types.py `compute_patient_id`). */
export function computePatientId(signKey: Uint8Array): Uint8Array {
  return digest(concatBytes(PATIENT_ID_DOMAIN, signKey));
}

export function computeTxId(raw: Uint8Array): Uint8Array {
  return digest(raw);
}

/** The fields a tx's signature covers: every field of `Tx` but the signature, specs and all. */
const TxSigningSchema: Schema<Omit<Tx, "signature">> = {
  name: "Tx",
  fields: TxSchema.fields.filter(([name]) => name !== "signature"),
};

/** What the sender signs: the domain tag and the canonical map of the tx without its signature. */
export function computeTxSigningBytes(
  chainId: string,
  kind: string,
  sender: Uint8Array,
  nonce: bigint,
  timestampMs: bigint,
  body: Uint8Array,
): Uint8Array {
  const unsigned = { body, chain_id: chainId, kind, nonce, sender, timestamp_ms: timestampMs };
  return concatBytes(TX_SIGN_DOMAIN, encode(TxSigningSchema, unsigned));
}

/** A signed tx of `kind` with this (already encoded) body (`sign_tx`). */
export function signTx(identity: Identity, kind: string, body: Uint8Array, options: TxOptions): SignedTx {
  const sender = identity.public.signKey;
  const nonce = options.nonce ?? bytesToBigInt(randomBytes(8));
  const timestampMs = options.timestampMs ?? BigInt(Date.now());
  const signature = identity.sign(computeTxSigningBytes(options.chainId, kind, sender, nonce, timestampMs, body));
  const tx: Tx = { body, chain_id: options.chainId, kind, nonce, sender, signature, timestamp_ms: timestampMs };
  const raw = encode(TxSchema, tx);
  return { tx, raw, txId: computeTxId(raw) };
}

/** Register: self-signed by the patient; the body carries their x25519 key. */
export function buildRegisterPatient(patient: Identity, options: TxOptions): SignedTx {
  const body = encode(RegisterPatientBodySchema, { enc_key: patient.public.encKey });
  return signTx(patient, KIND_REGISTER_PATIENT, body, options);
}

export function buildAddRepresentative(
  patient: Identity,
  patientId: Uint8Array,
  representative: Uint8Array,
  options: TxOptions,
): SignedTx {
  const body = encode(RepresentativeBodySchema, { patient_id: patientId, representative });
  return signTx(patient, KIND_ADD_REPRESENTATIVE, body, options);
}

export function buildRemoveRepresentative(
  patient: Identity,
  patientId: Uint8Array,
  representative: Uint8Array,
  options: TxOptions,
): SignedTx {
  const body = encode(RepresentativeBodySchema, { patient_id: patientId, representative });
  return signTx(patient, KIND_REMOVE_REPRESENTATIVE, body, options);
}

/**
 * A grant (patient or representative) with record keys re-sealed for the requester, sorted by
 * record id. With `terms` it is `health.grant_narrowed`: the grant's own scope within the
 * inquiry's and an earlier expiry, which rule what it opens from then on (`client.build_grant`).
 */
export function buildGrant(
  signer: Identity,
  inquiryId: Uint8Array,
  recordKeys: readonly RecordKey[],
  options: TxOptions,
  terms: GrantTerms | null = null,
): SignedTx {
  const sorted = [...recordKeys].sort((a, b) => compareBytes(a.record_id, b.record_id));
  const grant = { inquiry_id: inquiryId, record_keys: sorted };
  if (terms !== null) return signTx(signer, KIND_GRANT_NARROWED, encode(NarrowedGrantBodySchema, { grant, terms }), options);
  return signTx(signer, KIND_GRANT, encode(GrantBodySchema, grant), options);
}

/** What a manifest commits to for one part: the inquiry, the part's index, its record ids (`compute_grant_part_digest`). */
export function computeGrantPartDigest(inquiryId: Uint8Array, part: number, recordIds: readonly Uint8Array[]): Uint8Array {
  return digest(concatBytes(GRANT_PART_DOMAIN, inquiryId, uint32BigEndian(part), ...recordIds));
}

/** Record ids (or keys) sorted by record id, `GRANT_PART_RECORDS_MAX` a part (`split_grant_parts`). */
export function splitGrantParts<T>(items: readonly T[], idOf: (item: T) => Uint8Array): T[][] {
  const ordered = [...items].sort((a, b) => compareBytes(idOf(a), idOf(b)));
  const parts: T[][] = [];
  for (let i = 0; i < ordered.length; i += GRANT_PART_RECORDS_MAX) parts.push(ordered.slice(i, i + GRANT_PART_RECORDS_MAX));
  return parts;
}

/** The manifest declaring exactly these records for `inquiryId` (`compute_grant_manifest`). */
export function computeGrantManifest(inquiryId: Uint8Array, recordIds: readonly Uint8Array[]): GrantManifestBody {
  const parts = splitGrantParts(recordIds, (id) => id);
  return {
    inquiry_id: inquiryId,
    part_digests: parts.map((part, index) => computeGrantPartDigest(inquiryId, index, part)),
    record_count: BigInt(recordIds.length),
  };
}

/** The decision of a grant in parts (ADR 0012); its tx id is the grant id its parts name. With `terms`, narrowed. */
export function buildGrantManifest(signer: Identity, manifest: GrantManifestBody, options: TxOptions, terms: GrantTerms | null = null): SignedTx {
  if (terms !== null) {
    return signTx(signer, KIND_GRANT_MANIFEST_NARROWED, encode(NarrowedGrantManifestBodySchema, { manifest, terms }), options);
  }
  return signTx(signer, KIND_GRANT_MANIFEST, encode(GrantManifestBodySchema, manifest), options);
}

export function buildGrantPart(signer: Identity, grantId: Uint8Array, part: number, recordKeys: readonly RecordKey[], options: TxOptions): SignedTx {
  const sorted = [...recordKeys].sort((a, b) => compareBytes(a.record_id, b.record_id));
  return signTx(signer, KIND_GRANT_PART, encode(GrantPartBodySchema, { grant_id: grantId, part: BigInt(part), record_keys: sorted }), options);
}

/** A grant of any number of records: its manifest and, after it, one tx per part (`build_grant_in_parts`). */
export function buildGrantInParts(
  signer: Identity,
  inquiryId: Uint8Array,
  recordKeys: readonly RecordKey[],
  options: TxOptions,
  terms: GrantTerms | null = null,
): { manifest: SignedTx; parts: SignedTx[] } {
  const manifest = buildGrantManifest(signer, computeGrantManifest(inquiryId, recordKeys.map((k) => k.record_id)), options, terms);
  const parts = splitGrantParts(recordKeys, (k) => k.record_id).map((part, index) => buildGrantPart(signer, manifest.txId, index, part, options));
  return { manifest, parts };
}

export function buildDeny(signer: Identity, inquiryId: Uint8Array, options: TxOptions): SignedTx {
  return signTx(signer, KIND_DENY, encode(DenyBodySchema, { inquiry_id: inquiryId }), options);
}

export function buildRevoke(signer: Identity, grantId: Uint8Array, options: TxOptions): SignedTx {
  return signTx(signer, KIND_REVOKE, encode(RevokeBodySchema, { grant_id: grantId }), options);
}

/**
 * The patient's right of access (ADR 0014): ask `institution` for the records it holds of the
 * given types (none: every type) from the clinical period [fromMs, toMs]; the tx id is the
 * request id. Types are sorted and de-duplicated, as the Python builder does.
 */
export function buildRequestRecords(
  signer: Identity,
  patientId: Uint8Array,
  institution: Uint8Array,
  request: { readonly recordTypes?: readonly string[]; readonly fromMs?: bigint; readonly toMs?: bigint },
  options: TxOptions,
): SignedTx {
  const recordTypes = [...new Set(request.recordTypes ?? [])].sort();
  const body = encode(RequestRecordsBodySchema, {
    patient_id: patientId,
    institution,
    record_types: recordTypes,
    from_ms: request.fromMs ?? 0n,
    to_ms: request.toMs ?? UINT_MAX,
  });
  return signTx(signer, KIND_REQUEST_RECORDS, body, options);
}
