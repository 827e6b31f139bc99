/**
 * Claims and standing consents on the patient's device (issue 12, ADR 0017): a consent signed as
 * `health/claims_client.py` signs it, and a claim's FHIR `Claim` and each decision's
 * `ClaimResponse` opened as `health/claim_seal.py` opens them: padded to `CLAIM_PAD_BYTES`,
 * XChaCha20-Poly1305 under a content key sealed for the patient, the clinic and the insurer, bound
 * (associated data) to the claim's patient, clinic, insurer, encounter and version, or to the
 * claim id, version and insurer. A response must agree with the outcome the ledger holds in the
 * clear (approved = complete without error; denied = error with a code; pended = queued or
 * partial with a note), which only a reader can check: the rules cannot, it is sealed.
 *
 * Pure: no I/O, no DOM.
 */

import { compareBytes, concatBytes, equalBytes, toHex, utf8Strict } from "./bytes.js";
import { encode } from "./codec.js";
import { numberText, parseResourceText } from "./fhir.js";
import { aeadDecrypt, DecryptionError, type Identity, unpad, unwrapContentKey } from "./crypto.js";
import { buildGrantPart, computeGrantManifest, type SignedTx, signTx, splitGrantParts, type TxOptions } from "./txs.js";
import {
  CLAIM_AD_DOMAIN,
  CLAIM_PAD_BYTES,
  CLAIM_RESPONSE_AD_DOMAIN,
  type ClaimDecision,
  type ClaimState,
  type EnvelopeWire,
  ConsentManifestBodySchema,
  type GrantConsentBody,
  GrantConsentBodySchema,
  KIND_CONSENT_MANIFEST,
  KIND_GRANT_CONSENT,
  type RecordKey,
  type RecordState,
} from "./wire.js";

export class ClaimUnreadableError extends Error {
  override readonly name = "ClaimUnreadableError";
}

const UINT_OPEN = 2n ** 64n - 1n;

function sortedUniqueText(items: Iterable<string>): string[] {
  return [...new Set(items)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

function sortedUniqueBytes(items: Iterable<Uint8Array>): Uint8Array[] {
  return [...items].sort(compareBytes).filter((item, i, all) => i === 0 || !equalBytes(item, all[i - 1]!));
}

export interface ConsentTermsInput {
  readonly recordTypes: Iterable<string>;
  readonly authors: Iterable<Uint8Array>;
  readonly labels?: Iterable<string>;
  readonly fromMs?: bigint;
  readonly toMs?: bigint;
  readonly expiresMs: bigint;
}

/** A standing consent's body in canonical form (`claims_client.make_consent`: lists sorted, duplicates dropped). */
export function makeConsent(patientId: Uint8Array, grantee: Uint8Array, terms: ConsentTermsInput): GrantConsentBody {
  return {
    patient_id: patientId,
    grantee,
    record_types: sortedUniqueText(terms.recordTypes),
    authors: sortedUniqueBytes(terms.authors),
    labels: sortedUniqueText(terms.labels ?? []),
    from_ms: terms.fromMs ?? 0n,
    to_ms: terms.toMs ?? UINT_OPEN,
    expires_ms: terms.expiresMs,
  };
}

/** The patient's (or a representative's) standing consent; its tx id is the grant id. */
export function buildGrantConsent(signer: Identity, consent: GrantConsentBody, options: TxOptions): SignedTx {
  return signTx(signer, KIND_GRANT_CONSENT, encode(GrantConsentBodySchema, consent), options);
}

/** The consent manifest declaring exactly these records (a consent is its own inquiry: a grant manifest's digests). */
export function buildConsentManifest(signer: Identity, consentId: Uint8Array, recordIds: readonly Uint8Array[], options: TxOptions): SignedTx {
  const declared = computeGrantManifest(consentId, recordIds);
  const body = encode(ConsentManifestBodySchema, { grant_id: consentId, part_digests: declared.part_digests, record_count: declared.record_count });
  return signTx(signer, KIND_CONSENT_MANIFEST, body, options);
}

/**
 * The re-sealing of records already in a committed consent's scope (ADR 0017, amendment): its
 * manifest (`health.consent_manifest`: the records declared part by part, bound to the consent's
 * id, as a grant manifest's) and, once it is committed, one `health.grant_part` a part
 * (`claims_client.build_consent_in_parts`).
 */
export function buildConsentInParts(
  signer: Identity,
  consentId: Uint8Array,
  recordKeys: readonly RecordKey[],
  options: TxOptions,
): { manifest: SignedTx; parts: SignedTx[] } {
  const manifest = buildConsentManifest(signer, consentId, recordKeys.map((k) => k.record_id), options);
  const parts = splitGrantParts(recordKeys, (k) => k.record_id).map((part, index) => buildGrantPart(signer, consentId, index, part, options));
  return { manifest, parts };
}

export function computeClaimAssociatedData(
  patientId: Uint8Array,
  clinic: Uint8Array,
  insurer: Uint8Array,
  encounterId: Uint8Array,
  version: bigint,
): Uint8Array {
  return concatBytes(CLAIM_AD_DOMAIN, patientId, clinic, insurer, encounterId, Uint8Array.of(Number(version)));
}

export function computeResponseAssociatedData(claimId: Uint8Array, version: bigint, insurer: Uint8Array): Uint8Array {
  return concatBytes(CLAIM_RESPONSE_AD_DOMAIN, claimId, Uint8Array.of(Number(version)), insurer);
}

/** A sealed claim document as a reader opens it: its JSON text as submitted, and parsed. */
export interface OpenedClaimDocument {
  readonly json: string;
  readonly resource: Record<string, unknown>;
}

function openSealed(envelope: EnvelopeWire, identity: Identity, associatedData: Uint8Array, what: string, resourceType: string): OpenedClaimDocument {
  let padded: Uint8Array;
  try {
    padded = aeadDecrypt(envelope.ciphertext, unwrapContentKey(envelope, identity), envelope.nonce, associatedData);
  } catch (exc) {
    if (!(exc instanceof DecryptionError)) throw exc;
    throw new ClaimUnreadableError(`${what} does not open for this key: ${exc.message}`);
  }
  let json: string;
  let resource: unknown;
  try {
    json = utf8Strict.decode(unpad(padded, CLAIM_PAD_BYTES));
    resource = parseResourceText(json); // numbers keep their digits as written
  } catch {
    throw new ClaimUnreadableError(`${what} is not padded JSON`);
  }
  if (typeof resource !== "object" || resource === null || Array.isArray(resource) || (resource as Record<string, unknown>)["resourceType"] !== resourceType)
    throw new ClaimUnreadableError(`${what} is not a FHIR ${resourceType}`);
  return { json, resource: resource as Record<string, unknown> };
}

/** The current version's Claim, as the patient (or clinic, or insurer) reads it. */
export function openClaim(claim: ClaimState, identity: Identity): OpenedClaimDocument {
  const ad = computeClaimAssociatedData(claim.patient_id, claim.clinic, claim.insurer, claim.encounter_id, claim.version);
  return openSealed(claim.sealed_claim, identity, ad, `the claim (version ${claim.version})`, "Claim");
}

function list(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

function text(value: unknown): string | undefined {
  return typeof value === "string" && value.trim() ? value : undefined;
}

/** Whether a ClaimResponse agrees with the outcome on the ledger (`claim_seal.validate_claim_response`). */
export function isResponseAgreeing(resource: Record<string, unknown>, outcome: string): boolean {
  const fhirOutcome = resource["outcome"];
  const errors = list(resource["error"]);
  const notes = list(resource["processNote"]);
  if (outcome === "approved") return fhirOutcome === "complete" && errors.length === 0;
  if (outcome === "denied") return fhirOutcome === "error" && errors.length > 0;
  if (outcome === "pended") return (fhirOutcome === "queued" || fhirOutcome === "partial") && notes.length > 0;
  return false;
}

/** A decision's ClaimResponse, checked against its outcome on the ledger. */
export function openClaimResponse(decision: ClaimDecision, identity: Identity): OpenedClaimDocument {
  const what = `the decision on version ${decision.version}`;
  const ad = computeResponseAssociatedData(decision.claim_id, decision.version, decision.insurer);
  const opened = openSealed(decision.sealed_response, identity, ad, what, "ClaimResponse");
  if (!isResponseAgreeing(opened.resource, decision.outcome))
    throw new ClaimUnreadableError(`${what} says otherwise than its outcome on the ledger (${decision.outcome})`);
  return opened;
}

function codingWords(concept: unknown): string | undefined {
  if (typeof concept !== "object" || concept === null) return undefined;
  const c = concept as Record<string, unknown>;
  const coding = list(c["coding"]).find((x) => typeof x === "object" && x !== null) as Record<string, unknown> | undefined;
  const display = text(coding?.["display"]);
  const code = text(coding?.["code"]);
  return text(c["text"]) ?? (display && code ? `${display} (${code})` : (display ?? code));
}

/** Why, in the insurer's words: the error codes of a denial, the notes of a pended claim, the disposition. */
export function describeResponse(resource: Record<string, unknown>): string[] {
  const reasons: string[] = [];
  for (const error of list(resource["error"])) {
    const words = typeof error === "object" && error !== null ? codingWords((error as Record<string, unknown>)["code"]) : undefined;
    if (words) reasons.push(words);
  }
  for (const note of list(resource["processNote"])) {
    const words = typeof note === "object" && note !== null ? text((note as Record<string, unknown>)["text"]) : undefined;
    if (words) reasons.push(words);
  }
  const disposition = text(resource["disposition"]);
  if (disposition) reasons.push(disposition);
  return reasons;
}

function money(value: unknown): string | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const amount = numberText(value as Record<string, unknown>, "value"); // as written: "120.0"
  const currency = text((value as Record<string, unknown>)["currency"]);
  return amount === undefined ? undefined : currency ? `${amount} ${currency}` : amount;
}

/** What a claim asks for: its total (as written, with its currency) and each item in words with its net amount. */
export function describeClaim(resource: Record<string, unknown>): { total?: string; items: string[] } {
  const items = list(resource["item"]).flatMap((item) => {
    if (typeof item !== "object" || item === null) return [];
    const words = codingWords((item as Record<string, unknown>)["productOrService"]) ?? "an item";
    const net = money((item as Record<string, unknown>)["net"]);
    return [net ? `${words}: ${net}` : words];
  });
  const total = money(resource["total"]);
  return total === undefined ? { items } : { total, items };
}

/** Whether two envelopes are the same bytes (a claim version against its signed tx). */
export function isSameEnvelope(a: EnvelopeWire, b: EnvelopeWire): boolean {
  return (
    equalBytes(a.nonce, b.nonce) &&
    equalBytes(a.ciphertext, b.ciphertext) &&
    a.wrapped_keys.length === b.wrapped_keys.length &&
    a.wrapped_keys.every((w, i) => equalBytes(w.reader, b.wrapped_keys[i]!.reader) && equalBytes(w.sealed_key, b.wrapped_keys[i]!.sealed_key))
  );
}

/**
 * The labels of a record's latest version (`policy.get_current_labels`): a correction carries
 * the labels of what it corrects (the rules take the union), so they are the union of every
 * version's labels, first to latest. Null: a later version is not among `byId` (not judged).
 */
export function computeCurrentLabels(
  record: RecordState,
  byId: ReadonlyMap<string, RecordState>,
  labelsOf: (recordId: Uint8Array) => readonly string[],
): string[] | null {
  const key = (r: RecordState) => toHex(r.record_id);
  const hex = toHex;
  let first = record;
  const back = new Set<string>([key(record)]);
  while (first.supersedes.length) {
    const previous = byId.get(hex(first.supersedes));
    if (previous === undefined || back.has(key(previous))) break;
    back.add(key(previous));
    first = previous;
  }
  const labels = new Set<string>();
  const seen = new Set<string>();
  for (let r: RecordState | undefined = first; r !== undefined; ) {
    if (seen.has(key(r))) break;
    seen.add(key(r));
    for (const label of labelsOf(r.record_id)) labels.add(label);
    if (!r.superseded_by.length) return sortedUniqueText(labels);
    r = byId.get(hex(r.superseded_by));
    if (r === undefined) return null;
  }
  return sortedUniqueText(labels);
}

/**
 * The records already on the ledger a consent with these terms re-seals for its insurer
 * (`PatientClient.preview_consent_records`): of its types, by its authors, written in its window,
 * whose latest version carries no label the consent does not name, readable by the patient and not
 * already sealed for the insurer. Sorted by id.
 */
export function selectConsentRecords(
  records: readonly RecordState[],
  consent: GrantConsentBody,
  insurerEncKey: Uint8Array,
  patientEncKey: Uint8Array,
  currentLabels: (record: RecordState) => readonly string[] | null,
): RecordState[] {
  const readers = (r: RecordState) => r.envelope.wrapped_keys.map((w) => w.reader);
  return records
    .filter((r) => {
      if (!consent.record_types.includes(r.record_type) || r.time_ms < consent.from_ms || r.time_ms > consent.to_ms) return false;
      if (!consent.authors.some((a) => equalBytes(a, r.author))) return false;
      const labels = currentLabels(r);
      if (labels === null || labels.some((l) => !consent.labels.includes(l))) return false;
      return !readers(r).some((k) => equalBytes(k, insurerEncKey)) && readers(r).some((k) => equalBytes(k, patientEncKey));
    })
    .sort((a, b) => compareBytes(a.record_id, b.record_id));
}
