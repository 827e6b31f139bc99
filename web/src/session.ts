/**
 * One patient's session: the unlocked identity, the node that served the page, and the verified
 * ledger (`ledger.ts`). `refresh()` follows new certified blocks, then fetches the patient's
 * records, inquiries, grants and audit trail and keeps only what verifies against the chain (and,
 * for records, what opens with the patient's key); everything refused is kept with its reason, to
 * be said, never shown as if it were true. `submit()` sends a tx the page signed and believes it
 * committed only once a verified block holds it.
 */

import { type NodeApi, NodeError, fromBase64, type Signer } from "./api.js";
import { equalBytes, fromHex, toHex } from "./bytes.js";
import { decodeChecked } from "./checks.js";
import { DecryptionError, type Identity } from "./crypto.js";
import { BLOCK_BYTES_MAX, type ChainTx, UnverifiedError, VerifiedLedger } from "./ledger.js";
import { computeGenesisHash, decodeGenesis, LightClientError } from "./lightclient.js";
import { decodeManifest, openAttachment, verifyChunk } from "./attachments.js";
import { computeRecordBinding, type OpenedRecord, openRecord, RecordVerificationError } from "./records.js";
import { openReason, ReasonUnreadableError } from "./reasons.js";
import { replayResearch, type VerifiedStudy } from "./research.js";
import type { SignedTx } from "./txs.js";
import { ClaimUnreadableError, describeResponse, type OpenedClaimDocument, openClaim, openClaimResponse } from "./claims.js";
import {
  type ClaimDecision,
  ClaimDecisionSchema,
  type ClaimState,
  ClaimStateSchema,
  type GrantConsentBody,
  KIND_GRANT_CONSENT,
  KIND_JOIN_STUDY,
  type AuditEvent,
  AuditEventSchema,
  type BlobManifest,
  type GrantState,
  GrantStateSchema,
  type InquiryState,
  InquiryStateSchema,
  type PatientState,
  PatientStateSchema,
  type RecordState,
  RecordStateSchema,
  STATE_VALUE_BYTES_MAX,
} from "./wire.js";

export interface VerifiedRecord {
  readonly state: RecordState;
  readonly fact: ChainTx;
  readonly opened: OpenedRecord;
}
export interface VerifiedInquiry {
  readonly state: InquiryState;
  readonly fact: ChainTx;
  /** The reason as the patient reads it, or why it does not open. */
  readonly reason: string;
  readonly reasonOpened: boolean;
}
export interface VerifiedGrant {
  readonly state: GrantState;
  readonly fact: ChainTx;
}
/** A standing consent (ADR 0017): its grant, verified against its signed terms, and those terms. */
export interface VerifiedConsent {
  readonly state: GrantState;
  readonly fact: ChainTx;
  readonly terms: GrantConsentBody;
}
export interface VerifiedDecision {
  readonly state: ClaimDecision;
  readonly fact: ChainTx;
  /** The ClaimResponse as the patient opened it (it agrees with the outcome), and why in words. */
  readonly response: OpenedClaimDocument;
  readonly reasons: readonly string[];
}
export interface VerifiedClaimRead {
  readonly fact: ChainTx;
  readonly grantId: Uint8Array;
  readonly recordIds: readonly Uint8Array[];
}
export interface VerifiedClaim {
  readonly state: ClaimState;
  readonly fact: ChainTx;
  readonly claim: OpenedClaimDocument;
  readonly decisions: readonly VerifiedDecision[];
  /** The insurer's receipted reads for this claim, from the verified chain, each in the audit trail. */
  readonly reads: readonly VerifiedClaimRead[];
}
export interface VerifiedEvent {
  readonly state: AuditEvent;
  readonly fact: ChainTx;
}
/** Something a node served that is not shown, and why. */
export interface Refusal {
  readonly what: string;
  readonly id: string;
  readonly why: string;
}

export interface Snapshot {
  readonly patient: PatientState;
  /** As the verified chain makes them (the node's list is compared with it). */
  readonly representatives: readonly Uint8Array[];
  readonly records: readonly VerifiedRecord[];
  readonly inquiries: readonly VerifiedInquiry[];
  readonly grants: readonly VerifiedGrant[];
  readonly consents: readonly VerifiedConsent[];
  readonly claims: readonly VerifiedClaim[];
  /** Every study on the verified chain, with the patient's memberships and the queries covering them. */
  readonly research: readonly VerifiedStudy[];
  readonly events: readonly VerifiedEvent[];
  readonly refused: readonly Refusal[];
}

/** The node itself is not believed at all (its genesis or blocks do not verify). */
export class NodeNotBelievedError extends Error {
  override readonly name = "NodeNotBelievedError";
}

const GENESIS_PIN_KEY = "medledger.genesis";

/**
 * The genesis hash this page pins: from the link the patient was given (`#genesis=<hex>`, never
 * sent to a node), else the one pinned on this device before. Null: first use, nothing pinned.
 */
export function loadGenesisPin(): Uint8Array | null {
  const fromLink = /(?:^#|&)genesis=([0-9a-f]{64})(?:&|$)/.exec(location.hash)?.[1];
  if (fromLink !== undefined) {
    localStorage.setItem(GENESIS_PIN_KEY, fromLink);
    return fromHex(fromLink);
  }
  const stored = localStorage.getItem(GENESIS_PIN_KEY);
  return stored !== null && /^[0-9a-f]{64}$/.test(stored) ? fromHex(stored) : null;
}

export function saveGenesisPin(hash: Uint8Array): void {
  localStorage.setItem(GENESIS_PIN_KEY, toHex(hash));
}

function decodeItem<T>(schema: Parameters<typeof decodeChecked<T>>[0], item: unknown): T {
  const encoded = (item as { encoded?: unknown } | null)?.encoded;
  if (typeof encoded !== "string") throw new UnverifiedError("the node sent an item without its encoding", "encoding");
  try {
    return decodeChecked(schema, fromBase64(encoded), STATE_VALUE_BYTES_MAX);
  } catch {
    throw new UnverifiedError("the node sent an item that is not a canonical ledger value", "encoding");
  }
}

function why(exc: unknown): string {
  if (exc instanceof UnverifiedError || exc instanceof RecordVerificationError || exc instanceof LightClientError) return exc.message;
  if (exc instanceof DecryptionError) return "it does not open with your key";
  return `it could not be checked (${exc instanceof Error ? exc.name : "error"})`;
}

export class Session {
  readonly signer: Signer;
  snapshot: Snapshot | null = null;

  constructor(
    readonly api: NodeApi,
    readonly identity: Identity,
    readonly patientId: Uint8Array,
    readonly ledger: VerifiedLedger,
  ) {
    this.signer = { identity, patientId, chainId: ledger.chainId };
  }

  /** The page's node, named when it is caught lying. */
  get nodeName(): string {
    return location.origin;
  }

  /** Syncs run one after another: two at once would both apply the same next block. */
  #syncTail: Promise<void> = Promise.resolve();

  /** Follow the chain from the verified head to the node's latest block. */
  sync(): Promise<void> {
    const run = this.#syncTail.then(() => this.#sync());
    this.#syncTail = run.catch(() => undefined);
    return run;
  }

  async #sync(): Promise<void> {
    for (;;) {
      const { latest, items } = await this.api.getBlocks(this.signer, this.ledger.head.height + 1n);
      try {
        for (const item of items) this.ledger.applyBlock(item);
      } catch (exc) {
        if (exc instanceof LightClientError)
          throw new NodeNotBelievedError(`The node at ${this.nodeName} served a block that does not verify (${exc.what}): ${exc.message}.`);
        throw exc;
      }
      if (this.ledger.head.height >= latest || items.length === 0) return;
    }
  }

  async #list(suffix: string, member: string): Promise<unknown[]> {
    const reply = await this.api.getSigned(this.signer, this.api.patientPath(this.signer, suffix));
    const items = reply[member];
    if (!Array.isArray(items)) throw new NodeError(`the node's ${member} listing is malformed`);
    return items;
  }

  async #listAll(suffix: string, member: string): Promise<unknown[]> {
    const all: unknown[] = [];
    for (let start = 0; ; start += 1000) {
      const page = await this.#list(`${suffix}?start=${start}&limit=1000`, member);
      all.push(...page);
      if (page.length < 1000) return all;
    }
  }

  async refresh(): Promise<Snapshot> {
    await this.sync();
    const refused: Refusal[] = [];
    const patientReply = await this.api.getSigned(this.signer, this.api.patientPath(this.signer, ""));
    const patient = decodeItem(PatientStateSchema, patientReply);
    if (toHex(patient.sign_key) !== toHex(this.identity.public.signKey) || toHex(patient.patient_id) !== toHex(this.patientId))
      throw new NodeNotBelievedError(`The node at ${this.nodeName} answered with another patient than you.`);
    if (this.ledger.findRegistration(this.identity.public.signKey) === undefined)
      throw new NodeNotBelievedError(`The node at ${this.nodeName} says you are registered, and no verified block holds your registration.`);
    const representatives = this.ledger.computeRepresentatives(this.identity.public.signKey, this.patientId);
    if (
      patient.representatives.length !== representatives.length ||
      patient.representatives.some((r, i) => toHex(r) !== toHex(representatives[i]!))
    )
      refused.push({ what: "representatives", id: "list", why: "the node's list of your representatives is not the ledger's; the ledger's is shown" });

    const records: VerifiedRecord[] = [];
    const recordItems = await this.#listAll("/records", "records");
    // Always on and cheap (two marks a refresh): scripts/bench_app.py reads the first measure.
    performance.mark("medledger:records-verify:start");
    for (const item of recordItems) {
      let id = "?";
      try {
        const state = decodeItem(RecordStateSchema, item);
        id = toHex(state.record_id);
        const fact = this.ledger.verifyRecord(state);
        records.push({ state, fact, opened: openRecord(state, this.identity) });
      } catch (exc) {
        refused.push({ what: "record", id, why: why(exc) });
      }
    }
    // A record the ledger holds for this patient and the node did not list is hidden: say so.
    const listed = new Set([...records.map((r) => toHex(r.state.record_id)), ...refused.filter((r) => r.what === "record").map((r) => r.id)]);
    for (const fact of this.ledger.listRecordTxs(this.patientId))
      if (!listed.has(toHex(fact.txId)))
        refused.push({ what: "record", id: toHex(fact.txId), why: `the ledger holds this record (block ${fact.height}) and the node did not list it` });
    performance.measure("medledger:records-verify", "medledger:records-verify:start");
    const inquiries: VerifiedInquiry[] = [];
    for (const item of await this.#list("/inquiries", "inquiries")) {
      let id = "?";
      try {
        const state = decodeItem(InquiryStateSchema, item);
        id = toHex(state.inquiry_id);
        const fact = this.ledger.verifyInquiry(state);
        let reason: string;
        let reasonOpened = true;
        try {
          reason = openReason(state, this.identity);
        } catch (exc) {
          if (!(exc instanceof ReasonUnreadableError)) throw exc;
          reason = "The reason does not open with your key.";
          reasonOpened = false;
        }
        inquiries.push({ state, fact, reason, reasonOpened });
      } catch (exc) {
        refused.push({ what: "inquiry", id, why: why(exc) });
      }
    }
    const byInquiry = new Map(inquiries.map((i) => [toHex(i.state.inquiry_id), i.state]));
    const grants: VerifiedGrant[] = [];
    const consents: VerifiedConsent[] = [];
    for (const item of await this.#list("/grants", "grants")) {
      let id = "?";
      try {
        const state = decodeItem(GrantStateSchema, item);
        id = toHex(state.grant_id);
        // A standing consent is a grant that is its own inquiry, created by a consent tx (ADR 0017).
        if (this.ledger.getTx(state.grant_id)?.tx.kind === KIND_GRANT_CONSENT) {
          consents.push({ state, ...this.ledger.verifyConsent(state) });
          continue;
        }
        const inquiry = byInquiry.get(toHex(state.inquiry_id));
        if (inquiry === undefined) throw new UnverifiedError("the grant's inquiry is not among your verified inquiries", "inquiry");
        grants.push({ state, fact: this.ledger.verifyGrant(state, inquiry) });
      } catch (exc) {
        refused.push({ what: "grant", id, why: why(exc) });
      }
    }
    const events: VerifiedEvent[] = [];
    for (const item of await this.#listAll("/audit", "events")) {
      let id = "?";
      try {
        const state = decodeItem(AuditEventSchema, item);
        id = toHex(state.event_id);
        events.push({ state, fact: this.ledger.verifyAuditEvent(state) });
      } catch (exc) {
        refused.push({ what: "history event", id, why: why(exc) });
      }
    }
    const claims = await this.#verifyClaims(events, refused);
    const research = this.#verifyResearch(events, refused);
    this.snapshot = { patient, representatives, records, inquiries, grants, consents, claims, research, events, refused };
    return this.snapshot;
  }

  /**
   * The studies (issue 13), replayed from the verified chain alone (`research.ts`); the node's audit
   * trail must hold exactly the opt-ins and withdrawals the replay applied, or the difference is
   * refused: a trail that hides one, or shows one the rules refused.
   */
  #verifyResearch(events: readonly VerifiedEvent[], refused: Refusal[]): VerifiedStudy[] {
    const signKey = this.identity.public.signKey;
    const studies = replayResearch({
      txs: this.ledger.listResearchTxs(),
      institutions: this.ledger.institutions,
      patientId: this.patientId,
      actsForPatient: (sender, fact) =>
        equalBytes(sender, signKey) || this.ledger.computeRepresentatives(signKey, this.patientId, fact).some((r) => equalBytes(r, sender)),
    });
    const applied = new Map<string, ChainTx>();
    for (const study of studies)
      for (const span of study.spans) for (const fact of span.left ? [span.joined, span.left] : [span.joined]) applied.set(toHex(fact.txId), fact);
    const trail = events.filter((e) => e.state.event === "study_joined" || e.state.event === "study_left");
    for (const event of trail)
      if (!applied.delete(toHex(event.state.event_id)))
        refused.push({ what: "study", id: toHex(event.state.event_id), why: `the node's audit trail shows a study ${event.state.event === "study_joined" ? "opt-in" : "withdrawal"} (block ${event.state.height}) the ledger's rules did not apply` });
    for (const [id, fact] of applied)
      refused.push({ what: "study", id, why: `the ledger holds your study ${fact.tx.kind === KIND_JOIN_STUDY ? "opt-in" : "withdrawal"} (block ${fact.height}) and the node's audit trail does not show it` });
    return studies;
  }

  /**
   * The patient's claims (issue 12): each filed and versioned as the verified chain says, its Claim
   * opened here; each decision signed by the claim's insurer, its ClaimResponse opened and agreeing
   * with its outcome; a decision or a read the chain holds and the node leaves out is said; the
   * reads are the insurer's receipts for the claim, each one an event of the verified audit trail.
   */
  async #verifyClaims(events: readonly VerifiedEvent[], refused: Refusal[]): Promise<VerifiedClaim[]> {
    const claims: VerifiedClaim[] = [];
    const audited = new Set(events.filter((e) => e.state.event === "claim_read").map((e) => toHex(e.state.event_id)));
    for (const item of await this.#listAll("/claims", "claims")) {
      let id = "?";
      try {
        const state = decodeItem(ClaimStateSchema, item);
        id = toHex(state.claim_id);
        const fact = this.ledger.verifyClaim(state);
        let claim: OpenedClaimDocument;
        try {
          claim = openClaim(state, this.identity);
        } catch (exc) {
          throw new UnverifiedError(exc instanceof Error ? exc.message : "the claim does not open", "claim content");
        }
        const decisions: VerifiedDecision[] = [];
        const served = (item as { decisions?: unknown }).decisions;
        for (const entry of Array.isArray(served) ? served : []) {
          try {
            const decision = decodeItem(ClaimDecisionSchema, entry);
            const decisionFact = this.ledger.verifyClaimDecision(state, decision);
            const response = openClaimResponse(decision, this.identity);
            decisions.push({ state: decision, fact: decisionFact, response, reasons: describeResponse(response.resource) });
          } catch (exc) {
            refused.push({ what: "claim decision", id, why: exc instanceof ClaimUnreadableError ? exc.message : why(exc) });
          }
        }
        const shown = new Set(decisions.map((d) => toHex(d.state.decision_id)));
        for (const tx of this.ledger.listClaimDecisionTxs(state))
          if (!shown.has(toHex(tx.txId)) && !refused.some((r) => r.what === "claim decision" && r.id === id))
            refused.push({ what: "claim decision", id, why: `the ledger holds a decision on this claim (block ${tx.height}) the node did not show` });
        const last = decisions.find((d) => d.state.version === state.decided_version);
        if (state.decided_version !== 0n && (last === undefined || (state.status !== "open" && last.state.outcome !== state.status)))
          throw new UnverifiedError("the claim's status is not its verified decision's", "claim status");
        const reads: VerifiedClaimRead[] = [];
        for (const read of this.ledger.listClaimReads(state)) {
          if (audited.has(toHex(read.fact.txId))) reads.push(read);
          else refused.push({ what: "claim read", id: toHex(read.fact.txId), why: `the ledger holds the insurer's read for this claim (block ${read.fact.height}) and the node's audit trail does not show it` });
        }
        claims.push({ state, fact, claim, decisions, reads });
      } catch (exc) {
        refused.push({ what: "claim", id, why: why(exc) });
      }
    }
    return claims;
  }

  /**
   * An attachment of a verified record, fetched from the node and opened here: the attachment
   * must be one the record's tx lists on the ledger, its manifest must hash to its id and each
   * chunk to its manifest entry (`attachments.ts`), else the node is named.
   */
  async readAttachment(record: VerifiedRecord, blobId: Uint8Array): Promise<Uint8Array> {
    const ref = this.ledger.getAttachments(record.state.record_id).find((r) => toHex(r.blob_id) === toHex(blobId));
    if (ref === undefined) throw new NodeError("the record's transaction on the ledger lists no such attachment");
    const path = this.api.patientPath(this.signer, `/records/${toHex(record.state.record_id)}/attachments/${toHex(blobId)}`);
    const lie = (what: string) => new NodeNotBelievedError(`The node at ${this.nodeName} ${what}.`);
    const reply = await this.api.getSigned(this.signer, path);
    let manifest: BlobManifest;
    try {
      manifest = decodeManifest(fromBase64(String(reply["manifest"])), blobId);
    } catch {
      throw lie("sent a manifest that is not the attachment's");
    }
    const chunks: Uint8Array[] = [];
    for (let index = 0; index < manifest.chunk_hashes.length; index++) {
      const chunk = await this.api.getSigned(this.signer, `${path}/chunks/${index}`);
      const data = fromBase64(String(chunk["data"]));
      try {
        verifyChunk(manifest, index, data);
      } catch {
        throw lie(`sent a chunk ${index} that does not match its hash`);
      }
      chunks.push(data);
    }
    const binding = computeRecordBinding(record.state.patient_id, record.state.author, record.state.record_type, record.state.supersedes);
    return openAttachment(record.opened.recordKey, ref, binding, chunks);
  }

  /** Send a tx signed on this device; resolves once a verified block holds it. */
  async submit(signed: SignedTx): Promise<ChainTx> {
    const reply = await this.api.postTx(signed.raw);
    if (reply.txId !== toHex(signed.txId))
      throw new NodeNotBelievedError(`The node at ${this.nodeName} answered for another transaction than the one sent.`);
    if (reply.status !== "committed") throw new NodeError("the transaction was not committed in time; it may still be");
    await this.sync();
    const fact = this.ledger.getTx(signed.txId);
    if (fact === undefined)
      throw new NodeNotBelievedError(`The node at ${this.nodeName} says the transaction committed, and no verified block holds it.`);
    return fact;
  }
}

/** Load the verified ledger from the page's node, pinned to `pin` (or, on first use, to what it serves). */
export async function openLedger(api: NodeApi, pin: Uint8Array | null): Promise<{ ledger: VerifiedLedger; firstUse: boolean }> {
  const reply = await api.getPublic("/v1/proofs/genesis");
  if (typeof reply["genesis"] !== "string") throw new NodeError("the node's genesis answer is malformed");
  const encoded = fromBase64(reply["genesis"]);
  let served: Uint8Array;
  try {
    served = computeGenesisHash(decodeGenesis(encoded, BLOCK_BYTES_MAX));
  } catch {
    throw new NodeNotBelievedError(`The node at ${location.origin} serves a genesis that is not canonical.`);
  }
  const firstUse = pin === null;
  try {
    const ledger = VerifiedLedger.fromGenesis(encoded, pin ?? served);
    if (firstUse) saveGenesisPin(served);
    return { ledger, firstUse };
  } catch (exc) {
    if (exc instanceof LightClientError)
      throw new NodeNotBelievedError(`The node at ${location.origin} serves another network than the one this page pinned: ${exc.message}.`);
    throw exc;
  }
}
