/**
 * The patient's verified view of the chain (DESIGN.md §7): blocks are followed from the pinned
 * genesis with the light client (`lightclient.ts`: commit certificates, validator-set hand-overs,
 * tx roots), every tx of every verified block is indexed by its id, and each fact a node serves
 * (a record, an inquiry, a grant, an audit event) is believed only when the tx that created it is
 * in a verified block and says exactly what the node says of it: the same bytes of body, the same
 * signer, block height and block time. A fact that fails is refused with the reason, and the node
 * that served it is named by the caller.
 *
 * What this does not prove (said where it is shown): a header does not commit to tx results, so a
 * tx in a block may have been refused by the rules; the checks below that the author is a genesis
 * institution and the fact's own links (a correction's superseded record, a decision's inquiry,
 * a revocation) bound what a lying node can pass off, but a refused tx dressed as applied is not
 * excluded as the Python SDK's re-execution excludes it.
 *
 * Pure: no I/O, no clock, no DOM (the caller fetches; `api.ts`).
 */

import { equalBytes, toHex } from "./bytes.js";
import { encode } from "./codec.js";
import { decodeChecked } from "./checks.js";
import { RESEARCH_KINDS } from "./research.js";
import {
  decodeGenesis,
  type Genesis,
  LightClientError,
  type TrustedHead,
  verifyGenesis,
  verifyNextBlock,
} from "./lightclient.js";
import {
  AcceptAmendmentBodySchema,
  AddDocumentBodySchema,
  AddRecordBodySchema,
  type AuditEvent,
  type Block,
  type BlobRef,
  BlockSchema,
  type Commit,
  CommitSchema,
  DenyBodySchema,
  GrantBodySchema,
  type GrantState,
  type GrantTerms,
  type HealthGenesis,
  HealthGenesisSchema,
  HealthGenesisWithPolicySchema,
  type Institution,
  type InquiryState,
  AmendClaimBodySchema,
  type ClaimDecision,
  ClaimReadReceiptBodySchema,
  type ClaimState,
  DecideClaimBodySchema,
  type EnvelopeWire,
  EnvelopeWireSchema,
  FileClaimBodySchema,
  type GrantConsentBody,
  GrantConsentBodySchema,
  KIND_AMEND_CLAIM,
  KIND_CLAIM_READ_RECEIPT,
  KIND_DECIDE_CLAIM,
  KIND_FILE_CLAIM,
  KIND_GRANT_CONSENT,
  KIND_ACCEPT_AMENDMENT,
  KIND_ACCEPT_LABELLED_AMENDMENT,
  KIND_ADD_LABELLED_DOCUMENT,
  KIND_ADD_LABELLED_RECORD,
  LabelledAmendmentBodySchema,
  LabelledDocumentBodySchema,
  LabelledRecordBodySchema,
  KIND_ADD_DOCUMENT,
  KIND_ADD_RECORD,
  KIND_ADD_REPRESENTATIVE,
  KIND_REGISTER_PATIENT,
  KIND_REMOVE_REPRESENTATIVE,
  REPRESENTATIVES_MAX,
  RepresentativeBodySchema,
  KIND_DENY,
  KIND_GRANT,
  KIND_GRANT_MANIFEST,
  KIND_GRANT_MANIFEST_NARROWED,
  KIND_GRANT_NARROWED,
  NarrowedGrantBodySchema,
  NarrowedGrantManifestBodySchema,
  KIND_GRANT_PART,
  KIND_REQUEST_ACCESS,
  KIND_REVOKE,
  KIND_SUPERSEDE_RECORD,
  GrantManifestBodySchema,
  GrantPartBodySchema,
  type RecordState,
  RequestAccessBodySchema,
  RevokeBodySchema,
  SupersedeRecordBodySchema,
  TX_BYTES_MAX,
  type Tx,
  TxSchema,
  type ValidatorSet,
  ValidatorSetSchema,
} from "./wire.js";

/** Largest block the chain makes (chain/limits.py BLOCK_BYTES_MAX). */
export const BLOCK_BYTES_MAX = 32 * 1024 * 1024;

/** A fact a node served that does not verify; `what` names the check, for the patient. */
export class UnverifiedError extends Error {
  override readonly name = "UnverifiedError";
  constructor(
    message: string,
    readonly what: string,
  ) {
    super(message);
  }
}

/** A tx of a verified block. */
export interface ChainTx {
  readonly txId: Uint8Array;
  readonly height: bigint;
  readonly index: number;
  /** The block's time (the validators', §7). */
  readonly timeMs: bigint;
  /**
   * The tx as signed, except a labelled record, document or amendment (ADR 0017), which is held as
   * its unlabelled kind and body (ruled alike; the labels only change who it is sealed for), its
   * labels in `labels`. Its signature was checked by the validators; its bytes by the tx root.
   */
  readonly tx: Tx;
  readonly labels?: readonly string[];
}

/** A labelled record-writing tx as its unlabelled kind and body, and its labels (null: not labelled). */
function unlabel(tx: Tx): { tx: Tx; labels: readonly string[] } | null {
  if (tx.kind === KIND_ADD_LABELLED_RECORD) {
    const b = decodeChecked(LabelledRecordBodySchema, tx.body, TX_BYTES_MAX);
    const body = b.supersedes.length
      ? encode(SupersedeRecordBodySchema, { record: b.record, supersedes: b.supersedes })
      : encode(AddRecordBodySchema, b.record);
    return { tx: { ...tx, kind: b.supersedes.length ? KIND_SUPERSEDE_RECORD : KIND_ADD_RECORD, body }, labels: b.labels };
  }
  if (tx.kind === KIND_ADD_LABELLED_DOCUMENT) {
    const b = decodeChecked(LabelledDocumentBodySchema, tx.body, TX_BYTES_MAX);
    return { tx: { ...tx, kind: KIND_ADD_DOCUMENT, body: encode(AddDocumentBodySchema, b.document) }, labels: b.labels };
  }
  if (tx.kind === KIND_ACCEPT_LABELLED_AMENDMENT) {
    const b = decodeChecked(LabelledAmendmentBodySchema, tx.body, TX_BYTES_MAX);
    return { tx: { ...tx, kind: KIND_ACCEPT_AMENDMENT, body: encode(AcceptAmendmentBodySchema, b.accept) }, labels: b.labels };
  }
  return null;
}

/** One item of `GET /v1/proofs/blocks`, decoded from base64. */
export interface BlockItem {
  readonly block: Uint8Array;
  readonly commit: Uint8Array;
  /** Empty unless the block announces a new validator set. */
  readonly nextValidators: Uint8Array;
}

/**
 * The health genesis: `HealthGenesis`, or `HealthGenesisWithPolicy` when the network set a policy
 * such as its research small-cell threshold (health/app.py `decode_genesis_with_policy`; the page
 * needs only the institutions and the layout).
 */
function decodeHealthGenesis(appState: Uint8Array): HealthGenesis {
  try {
    return decodeChecked(HealthGenesisSchema, appState, BLOCK_BYTES_MAX);
  } catch (plain) {
    try {
      const withPolicy = decodeChecked(HealthGenesisWithPolicySchema, appState, BLOCK_BYTES_MAX);
      return { institutions: withPolicy.institutions, layout: withPolicy.layout };
    } catch {
      throw plain;
    }
  }
}

export class VerifiedLedger {
  head: TrustedHead;
  readonly genesis: Genesis;
  /** The genesis institutions, by signing key (hex): the only authors and requesters there are. */
  readonly institutions: ReadonlyMap<string, Institution>;
  readonly #txs = new Map<string, ChainTx>();
  /** Representative txs of any patient, in chain order (few; replayed by `computeRepresentatives`). */
  readonly #representativeTxs: ChainTx[] = [];
  /** Signing key (hex) → the first registration tx it signed. */
  readonly #registrations = new Map<string, Uint8Array>();
  /** Record id (hex) → the txs that supersede it (corrections), in chain order. */
  readonly #corrections = new Map<string, ChainTx[]>();
  /** Patient id (hex) → the record-creating txs for them, in chain order. */
  readonly #recordTxs = new Map<string, ChainTx[]>();
  /** Grant id (hex) → the grant-part txs naming it. */
  readonly #grantParts = new Map<string, ChainTx[]>();
  /** Grant id (hex) → the revoke txs of it. */
  readonly #revocations = new Map<string, ChainTx[]>();
  /** Claim id (hex) → its amendments, decisions and read receipts, in chain order (any signer). */
  readonly #claimTxs = new Map<string, ChainTx[]>();
  /** Studies, opt-ins, queries and answers of any patient and study, in chain order (`research.ts`). */
  readonly #researchTxs: ChainTx[] = [];

  private constructor(genesis: Genesis, head: TrustedHead) {
    this.genesis = genesis;
    this.head = head;
    // An empty app state is a health chain without institutions (health/types.py HealthGenesis).
    const app: HealthGenesis = genesis.app_state.length
      ? decodeHealthGenesis(genesis.app_state)
      : { institutions: [], layout: 2n };
    this.institutions = new Map(app.institutions.map((i) => [toHex(i.sign_key), i]));
  }

  /** From the genesis bytes a node served, believed only if they hash to the pinned hash. */
  static fromGenesis(encoded: Uint8Array, pinnedHash: Uint8Array): VerifiedLedger {
    const genesis = decodeGenesis(encoded, BLOCK_BYTES_MAX);
    return new VerifiedLedger(genesis, verifyGenesis(genesis, pinnedHash));
  }

  get chainId(): string {
    return this.head.chainId;
  }

  /** Verify the next block (its certificate, link and tx root) and index its txs. */
  applyBlock(item: BlockItem): void {
    let block: Block;
    let commit: Commit;
    let next: ValidatorSet | null;
    try {
      block = decodeChecked(BlockSchema, item.block, BLOCK_BYTES_MAX);
      commit = decodeChecked(CommitSchema, item.commit, TX_BYTES_MAX);
      next = item.nextValidators.length ? decodeChecked(ValidatorSetSchema, item.nextValidators, TX_BYTES_MAX) : null;
    } catch (exc) {
      throw new LightClientError(`block ${this.head.height + 1n} is not a canonical block: ${String(exc)}`, "encoding");
    }
    const { head, txIds } = verifyNextBlock(this.head, block, commit, next);
    block.txs.forEach((raw, index) => {
      const txId = txIds[index]!;
      let tx: Tx;
      let labelled: { tx: Tx; labels: readonly string[] } | null;
      try {
        tx = decodeChecked(TxSchema, raw, TX_BYTES_MAX);
        labelled = unlabel(tx);
      } catch {
        return; // a certified block holds only admitted txs; an undecodable one concerns no one
      }
      const fact: ChainTx = labelled
        ? { txId, height: head.height, index, timeMs: head.timeMs, tx: labelled.tx, labels: labelled.labels }
        : { txId, height: head.height, index, timeMs: head.timeMs, tx };
      this.#txs.set(toHex(txId), fact);
      this.#index(fact);
    });
    this.head = head;
  }

  #index(fact: ChainTx): void {
    if (RESEARCH_KINDS.includes(fact.tx.kind)) return void this.#researchTxs.push(fact);
    const push = (map: Map<string, ChainTx[]>, key: Uint8Array) => {
      const key_ = toHex(key);
      map.set(key_, [...(map.get(key_) ?? []), fact]);
    };
    try {
      if (fact.tx.kind === KIND_ADD_RECORD)
        push(this.#recordTxs, decodeChecked(AddRecordBodySchema, fact.tx.body, TX_BYTES_MAX).patient_id);
      else if (fact.tx.kind === KIND_SUPERSEDE_RECORD) {
        const body = decodeChecked(SupersedeRecordBodySchema, fact.tx.body, TX_BYTES_MAX);
        push(this.#corrections, body.supersedes);
        push(this.#recordTxs, body.record.patient_id);
      } else if (fact.tx.kind === KIND_ACCEPT_AMENDMENT) {
        const body = decodeChecked(AcceptAmendmentBodySchema, fact.tx.body, TX_BYTES_MAX).correction;
        push(this.#corrections, body.supersedes);
        push(this.#recordTxs, body.record.patient_id);
      } else if (fact.tx.kind === KIND_ADD_DOCUMENT) {
        const body = decodeChecked(AddDocumentBodySchema, fact.tx.body, TX_BYTES_MAX);
        if (body.supersedes.length) push(this.#corrections, body.supersedes);
        push(this.#recordTxs, body.record.patient_id);
      } else if (fact.tx.kind === KIND_GRANT_PART) {
        push(this.#grantParts, decodeChecked(GrantPartBodySchema, fact.tx.body, TX_BYTES_MAX).grant_id);
      } else if (fact.tx.kind === KIND_REGISTER_PATIENT) {
        if (!this.#registrations.has(toHex(fact.tx.sender))) this.#registrations.set(toHex(fact.tx.sender), fact.txId);
      } else if (fact.tx.kind === KIND_ADD_REPRESENTATIVE || fact.tx.kind === KIND_REMOVE_REPRESENTATIVE) {
        this.#representativeTxs.push(fact);
      } else if (fact.tx.kind === KIND_AMEND_CLAIM)
        push(this.#claimTxs, decodeChecked(AmendClaimBodySchema, fact.tx.body, TX_BYTES_MAX).claim_id);
      else if (fact.tx.kind === KIND_DECIDE_CLAIM)
        push(this.#claimTxs, decodeChecked(DecideClaimBodySchema, fact.tx.body, TX_BYTES_MAX).claim_id);
      else if (fact.tx.kind === KIND_CLAIM_READ_RECEIPT)
        push(this.#claimTxs, decodeChecked(ClaimReadReceiptBodySchema, fact.tx.body, TX_BYTES_MAX).claim_id);
      else if (fact.tx.kind === KIND_REVOKE)
        push(this.#revocations, decodeChecked(RevokeBodySchema, fact.tx.body, TX_BYTES_MAX).grant_id);
    } catch {
      // a body its kind does not decode was refused by every node: it indexes nothing
    }
  }

  getTx(txId: Uint8Array): ChainTx | undefined {
    return this.#txs.get(toHex(txId));
  }

  /** The tx that created a fact, in a verified block at the height and time the node says. */
  #creatingTx(id: Uint8Array, what: string, height: bigint, timeMs: bigint, kinds: readonly string[]): ChainTx {
    const fact = this.getTx(id);
    if (fact === undefined)
      throw new UnverifiedError(`no verified block holds the transaction of this ${what}`, "tx inclusion proof");
    if (!kinds.includes(fact.tx.kind))
      throw new UnverifiedError(`the transaction named as this ${what} is a ${fact.tx.kind}`, "tx kind");
    if (fact.height !== height || fact.timeMs !== timeMs)
      throw new UnverifiedError(`this ${what} is said to be from another block than its transaction's`, "block");
    return fact;
  }

  #institution(key: Uint8Array, what: string): Institution {
    const found = this.institutions.get(toHex(key));
    if (found === undefined) throw new UnverifiedError(`the ${what} is not an institution of this network`, "institution");
    return found;
  }

  /**
   * A record the node served: its add-record, correction or document tx, signed by its author (a
   * genesis institution), carries exactly its type, patient, commitment, envelope and superseded
   * record; its "superseded by" is a verified correction of it (a supersede, a document, or an
   * accepted amendment). Returns the creating tx.
   */
  verifyRecord(record: RecordState): ChainTx {
    const fact = this.#creatingTx(record.record_id, "record", record.height, record.time_ms, [
      KIND_ADD_RECORD,
      KIND_SUPERSEDE_RECORD,
      KIND_ACCEPT_AMENDMENT,
      KIND_ADD_DOCUMENT,
    ]);
    if (!equalBytes(fact.tx.sender, record.author))
      throw new UnverifiedError("the record's author did not sign its transaction", "author");
    this.#institution(record.author, "record's author");
    const body = encode(AddRecordBodySchema, {
      commitment: record.commitment,
      envelope: record.envelope,
      patient_id: record.patient_id,
      record_type: record.record_type,
    });
    let signed: Uint8Array;
    let supersedes: Uint8Array = new Uint8Array(0);
    try {
      if (fact.tx.kind === KIND_ADD_RECORD) signed = fact.tx.body;
      else if (fact.tx.kind === KIND_SUPERSEDE_RECORD) {
        const s = decodeChecked(SupersedeRecordBodySchema, fact.tx.body, TX_BYTES_MAX);
        signed = encode(AddRecordBodySchema, s.record);
        supersedes = s.supersedes;
      } else if (fact.tx.kind === KIND_ACCEPT_AMENDMENT) {
        const a = decodeChecked(AcceptAmendmentBodySchema, fact.tx.body, TX_BYTES_MAX).correction;
        signed = encode(AddRecordBodySchema, a.record);
        supersedes = a.supersedes;
      } else {
        const d = decodeChecked(AddDocumentBodySchema, fact.tx.body, TX_BYTES_MAX);
        signed = encode(AddRecordBodySchema, d.record);
        supersedes = d.supersedes;
      }
    } catch {
      throw new UnverifiedError("the record's transaction has a body no node accepts", "tx body");
    }
    if (!equalBytes(signed, body) || !equalBytes(supersedes, record.supersedes))
      throw new UnverifiedError("the record differs from what its author put on the ledger", "record content");
    if (record.superseded_by.length) {
      const by = (this.#corrections.get(toHex(record.record_id)) ?? []).find((c) => equalBytes(c.txId, record.superseded_by));
      if (by === undefined)
        throw new UnverifiedError("the record is said to be corrected by a transaction that does not correct it", "correction");
    }
    return fact;
  }

  /**
   * Records for `patientId` the verified chain holds, signed by a genesis institution: what a
   * node's listing must include (one it leaves out is hidden from the patient).
   */
  listRecordTxs(patientId: Uint8Array): readonly ChainTx[] {
    return (this.#recordTxs.get(toHex(patientId)) ?? []).filter((f) => this.institutions.has(toHex(f.tx.sender)));
  }

  /** The id of the first registration `signKey` signed in a verified block, if any. */
  findRegistration(signKey: Uint8Array): Uint8Array | undefined {
    return this.#registrations.get(toHex(signKey));
  }

  /** The attachments the verified document tx `recordId` lists (none for any other record). */
  getAttachments(recordId: Uint8Array): readonly BlobRef[] {
    const fact = this.getTx(recordId);
    if (fact === undefined || fact.tx.kind !== KIND_ADD_DOCUMENT) return [];
    try {
      return decodeChecked(AddDocumentBodySchema, fact.tx.body, TX_BYTES_MAX).attachments;
    } catch {
      return [];
    }
  }

  /** Corrections of `recordId` on the verified chain (whatever the node said). */
  listCorrections(recordId: Uint8Array): readonly ChainTx[] {
    return this.#corrections.get(toHex(recordId)) ?? [];
  }

  /** An inquiry the node served: its request tx, signed by the requester (an institution), says all of it. */
  verifyInquiry(inquiry: InquiryState): ChainTx {
    const fact = this.#creatingTx(inquiry.inquiry_id, "inquiry", inquiry.height, inquiry.time_ms, [KIND_REQUEST_ACCESS]);
    if (!equalBytes(fact.tx.sender, inquiry.requester))
      throw new UnverifiedError("the inquiry's requester did not sign it", "requester");
    this.#institution(inquiry.requester, "inquiry's requester");
    const body = encode(RequestAccessBodySchema, {
      expires_ms: inquiry.expires_ms,
      patient_id: inquiry.patient_id,
      purpose: inquiry.purpose,
      scope: inquiry.scope,
      sealed_reason: inquiry.sealed_reason,
    });
    if (!equalBytes(body, fact.tx.body))
      throw new UnverifiedError("the inquiry differs from what its requester put on the ledger", "inquiry content");
    if (inquiry.decision_id.length) {
      const decision = this.getTx(inquiry.decision_id);
      if (decision === undefined || !this.#decides(decision, inquiry.inquiry_id))
        throw new UnverifiedError("the inquiry is said to be decided by a transaction that does not decide it", "decision");
    }
    return fact;
  }

  #decides(fact: ChainTx, inquiryId: Uint8Array): boolean {
    try {
      const body = fact.tx.body;
      let decided: Uint8Array | null = null;
      if (fact.tx.kind === KIND_GRANT) decided = decodeChecked(GrantBodySchema, body, TX_BYTES_MAX).inquiry_id;
      else if (fact.tx.kind === KIND_DENY) decided = decodeChecked(DenyBodySchema, body, TX_BYTES_MAX).inquiry_id;
      else if (fact.tx.kind === KIND_GRANT_MANIFEST) decided = decodeChecked(GrantManifestBodySchema, body, TX_BYTES_MAX).inquiry_id;
      else if (fact.tx.kind === KIND_GRANT_NARROWED) decided = decodeChecked(NarrowedGrantBodySchema, body, TX_BYTES_MAX).grant.inquiry_id;
      else if (fact.tx.kind === KIND_GRANT_MANIFEST_NARROWED)
        decided = decodeChecked(NarrowedGrantManifestBodySchema, body, TX_BYTES_MAX).manifest.inquiry_id;
      return decided !== null && equalBytes(decided, inquiryId);
    } catch {
      return false;
    }
  }

  /** The narrower terms a grant's tx was signed with (`health.grant_narrowed`), or null: its inquiry's. */
  #signedTerms(fact: ChainTx): GrantTerms | null {
    if (fact.tx.kind === KIND_GRANT_NARROWED) return decodeChecked(NarrowedGrantBodySchema, fact.tx.body, TX_BYTES_MAX).terms;
    if (fact.tx.kind === KIND_GRANT_MANIFEST_NARROWED) return decodeChecked(NarrowedGrantManifestBodySchema, fact.tx.body, TX_BYTES_MAX).terms;
    return null;
  }

  /**
   * A grant the node served: its grant tx, signed by `granted_by`, decides its inquiry with
   * exactly its record keys; the inquiry's terms are the grant's; a revocation it shows is a
   * verified revoke of it, and a revoke of it on the chain is not hidden.
   */
  verifyGrant(grant: GrantState, inquiry: InquiryState): ChainTx {
    const fact = this.#creatingTx(grant.grant_id, "grant", grant.height, grant.time_ms, [
      KIND_GRANT,
      KIND_GRANT_MANIFEST,
      KIND_GRANT_NARROWED,
      KIND_GRANT_MANIFEST_NARROWED,
    ]);
    if (!equalBytes(fact.tx.sender, grant.granted_by))
      throw new UnverifiedError("the grant was not signed by the key it names", "grantor");
    if (!this.#decides(fact, grant.inquiry_id) || !equalBytes(grant.inquiry_id, inquiry.inquiry_id))
      throw new UnverifiedError("the grant's transaction decides another inquiry", "grant content");
    const signed = this.#signedTerms(fact);
    if (fact.tx.kind === KIND_GRANT || fact.tx.kind === KIND_GRANT_NARROWED) {
      const own = { inquiry_id: grant.inquiry_id, record_keys: grant.record_keys };
      const body =
        signed === null ? encode(GrantBodySchema, own) : encode(NarrowedGrantBodySchema, { grant: own, terms: { scope: grant.scope, expires_ms: grant.expires_ms } });
      if (!equalBytes(body, fact.tx.body))
        throw new UnverifiedError("the grant's record keys or terms differ from the ones signed", "grant content");
    } else this.#checkKeysInParts(grant);
    // A narrowed grant's scope and expiry are the ones its patient signed; the rest is its inquiry's.
    const asked = signed === null ? inquiry : { ...inquiry, scope: signed.scope, expires_ms: signed.expires_ms };
    const terms = (g: { scope: InquiryState["scope"]; purpose: string; expires_ms: bigint; patient_id: Uint8Array }) =>
      encode(RequestAccessBodySchema, {
        expires_ms: g.expires_ms,
        patient_id: g.patient_id,
        purpose: g.purpose,
        scope: g.scope,
        sealed_reason: inquiry.sealed_reason,
      });
    if (!equalBytes(grant.grantee, inquiry.requester) || !equalBytes(terms(grant), terms(asked)))
      throw new UnverifiedError("the grant's terms are not its inquiry's", "grant content");
    this.#checkGranteeAndRevocation(grant);
    return fact;
  }

  /**
   * A grant in parts (ADR 0012), or a consent's re-sealed records: the ledger keeps its keys apart
   * from the grant (a node shows none, or some); each one shown must be in a verified part of this
   * grant, signed by its grantor.
   */
  #checkKeysInParts(grant: GrantState): void {
    const signed = new Set<string>();
    for (const part of this.#grantParts.get(toHex(grant.grant_id)) ?? []) {
      if (!equalBytes(part.tx.sender, grant.granted_by)) continue;
      for (const key of decodeChecked(GrantPartBodySchema, part.tx.body, TX_BYTES_MAX).record_keys)
        signed.add(toHex(key.record_id) + toHex(key.sealed_key));
    }
    const shown = new Set(grant.record_keys.map((k) => toHex(k.record_id) + toHex(k.sealed_key)));
    if ([...shown].some((k) => !signed.has(k)))
      throw new UnverifiedError("the grant's record keys differ from the parts signed", "grant content");
  }

  #checkGranteeAndRevocation(grant: GrantState): void {
    const grantee = this.#institution(grant.grantee, "grantee");
    if (!equalBytes(grantee.enc_key, grant.grantee_enc_key))
      throw new UnverifiedError("the grant names another encryption key than the grantee's in the genesis", "grantee key");
    const revokes = this.#revocations.get(toHex(grant.grant_id)) ?? [];
    if (grant.revoked_height !== 0n && !revokes.some((r) => r.height === grant.revoked_height && r.timeMs === grant.revoked_time_ms))
      throw new UnverifiedError("the grant is said to be revoked by no verified revocation", "revocation");
    if (grant.revoked_height === 0n && revokes.some((r) => r.height > grant.height))
      throw new UnverifiedError("the ledger holds a revocation of this grant the node does not show", "revocation");
  }

  /**
   * A standing consent the node served (ADR 0017): its `health.grant_consent` tx, signed by
   * `granted_by`, says exactly its grantee, record types, window and expiry (a grant for payment,
   * its own inquiry, no record ids), and gives the terms shown beside it (authors, labels); the
   * grantee is an insurer of the genesis with the encryption key it names; keys it shows are in
   * verified parts signed by its grantor; its revocation is as for any grant.
   */
  verifyConsent(grant: GrantState): { fact: ChainTx; terms: GrantConsentBody } {
    const fact = this.#creatingTx(grant.grant_id, "consent", grant.height, grant.time_ms, [KIND_GRANT_CONSENT]);
    if (!equalBytes(fact.tx.sender, grant.granted_by))
      throw new UnverifiedError("the consent was not signed by the key it names", "grantor");
    let terms: GrantConsentBody;
    try {
      terms = decodeChecked(GrantConsentBodySchema, fact.tx.body, TX_BYTES_MAX);
    } catch {
      throw new UnverifiedError("the consent's transaction has a body no node accepts", "tx body");
    }
    const sameTypes = terms.record_types.length === grant.scope.record_types.length && terms.record_types.every((t, i) => t === grant.scope.record_types[i]);
    if (
      !equalBytes(terms.patient_id, grant.patient_id) ||
      !equalBytes(terms.grantee, grant.grantee) ||
      !sameTypes ||
      grant.scope.record_ids.length !== 0 ||
      terms.from_ms !== grant.scope.from_ms ||
      terms.to_ms !== grant.scope.to_ms ||
      terms.expires_ms !== grant.expires_ms ||
      grant.purpose !== "HPAYMT" ||
      !equalBytes(grant.inquiry_id, grant.grant_id)
    )
      throw new UnverifiedError("the consent differs from what was signed on the ledger", "consent content");
    if (this.#institution(grant.grantee, "consent's insurer").role !== "insurer")
      throw new UnverifiedError("the consent's grantee is not an insurer of this network", "consent content");
    this.#checkKeysInParts(grant);
    this.#checkGranteeAndRevocation(grant);
    return { fact, terms };
  }

  /**
   * A claim the node served: its `health.file_claim` tx (the claim id), signed by the clinic (an
   * institution of the genesis), for this patient, insurer and encounter; its current version is
   * the filing (version 1) or the clinic's verified amendment with that version number, with
   * exactly its records and sealed Claim; and no later amendment by the clinic is hidden.
   */
  verifyClaim(claim: ClaimState): ChainTx {
    const fact = this.#creatingTx(claim.claim_id, "claim", claim.height, claim.time_ms, [KIND_FILE_CLAIM]);
    if (!equalBytes(fact.tx.sender, claim.clinic))
      throw new UnverifiedError("the claim's clinic did not sign it", "clinic");
    this.#institution(claim.clinic, "claim's clinic");
    if (this.#institution(claim.insurer, "claim's insurer").role !== "insurer")
      throw new UnverifiedError("the claim is addressed to no insurer of this network", "insurer");
    const filed = decodeChecked(FileClaimBodySchema, fact.tx.body, TX_BYTES_MAX);
    if (!equalBytes(filed.patient_id, claim.patient_id) || !equalBytes(filed.insurer, claim.insurer) || !equalBytes(filed.encounter_id, claim.encounter_id))
      throw new UnverifiedError("the claim differs from what its clinic put on the ledger", "claim content");
    const amendments = this.#byClaim(claim.claim_id, KIND_AMEND_CLAIM, claim.clinic).map((f) => ({
      fact: f,
      body: decodeChecked(AmendClaimBodySchema, f.tx.body, TX_BYTES_MAX),
    }));
    let current: { readonly record_ids: readonly Uint8Array[]; readonly sealed_claim: EnvelopeWire } = filed;
    if (claim.version > 1n) {
      const amended = amendments.find((a) => a.body.version === claim.version);
      if (amended === undefined)
        throw new UnverifiedError(`no verified amendment by the clinic makes version ${claim.version} of this claim`, "claim version");
      current = amended.body;
    }
    if (amendments.some((a) => a.body.version > claim.version && a.fact.height > fact.height))
      throw new UnverifiedError("the ledger holds a later version of this claim than the node shows", "claim version");
    const sameIds = current.record_ids.length === claim.record_ids.length && current.record_ids.every((r, i) => equalBytes(r, claim.record_ids[i]!));
    if (!sameIds || !equalBytes(encode(EnvelopeWireSchema, current.sealed_claim), encode(EnvelopeWireSchema, claim.sealed_claim)))
      throw new UnverifiedError("the claim's records or sealed Claim differ from the version signed", "claim content");
    return fact;
  }

  /**
   * A decision the node served on a verified claim: its `health.decide_claim` tx (the decision id),
   * signed by the claim's insurer, says exactly its version, outcome and sealed ClaimResponse.
   */
  verifyClaimDecision(claim: ClaimState, decision: ClaimDecision): ChainTx {
    const fact = this.#creatingTx(decision.decision_id, "decision", decision.height, decision.time_ms, [KIND_DECIDE_CLAIM]);
    if (!equalBytes(fact.tx.sender, claim.insurer) || !equalBytes(decision.insurer, claim.insurer))
      throw new UnverifiedError("the decision was not signed by the claim's insurer", "insurer");
    const signed = encode(DecideClaimBodySchema, {
      claim_id: decision.claim_id,
      outcome: decision.outcome,
      sealed_response: decision.sealed_response,
      version: decision.version,
    });
    if (!equalBytes(decision.claim_id, claim.claim_id) || !equalBytes(signed, fact.tx.body))
      throw new UnverifiedError("the decision differs from what the insurer put on the ledger", "decision content");
    return fact;
  }

  /** The claim's insurer's decision txs on the verified chain (what the node's list must hold). */
  listClaimDecisionTxs(claim: ClaimState): readonly ChainTx[] {
    return this.#byClaim(claim.claim_id, KIND_DECIDE_CLAIM, claim.insurer);
  }

  /** The claim's insurer's read receipts for it on the verified chain, each with the records it names. */
  listClaimReads(claim: ClaimState): readonly { fact: ChainTx; grantId: Uint8Array; recordIds: readonly Uint8Array[] }[] {
    return this.#byClaim(claim.claim_id, KIND_CLAIM_READ_RECEIPT, claim.insurer).map((fact) => {
      const body = decodeChecked(ClaimReadReceiptBodySchema, fact.tx.body, TX_BYTES_MAX);
      return { fact, grantId: body.grant_id, recordIds: body.record_ids };
    });
  }

  #byClaim(claimId: Uint8Array, kind: string, signer: Uint8Array): ChainTx[] {
    return (this.#claimTxs.get(toHex(claimId)) ?? []).filter((f) => f.tx.kind === kind && equalBytes(f.tx.sender, signer));
  }

  /**
   * The patient's representatives as the verified chain makes them: the rules of
   * `validate_add_representative` / `validate_remove_representative` replayed (only the patient's
   * own key names or removes one; no self, no duplicate, at most REPRESENTATIVES_MAX). With
   * `before`: as they were just before that tx ran (who could act for the patient in it).
   */
  computeRepresentatives(patientSignKey: Uint8Array, patientId: Uint8Array, before?: ChainTx): Uint8Array[] {
    let current: Uint8Array[] = [];
    for (const fact of this.#representativeTxs) {
      if (before !== undefined && (fact.height > before.height || (fact.height === before.height && fact.index >= before.index))) break;
      if (!equalBytes(fact.tx.sender, patientSignKey)) continue;
      let body: { patient_id: Uint8Array; representative: Uint8Array };
      try {
        body = decodeChecked(RepresentativeBodySchema, fact.tx.body, TX_BYTES_MAX);
      } catch {
        continue;
      }
      if (!equalBytes(body.patient_id, patientId)) continue;
      const known = current.some((r) => equalBytes(r, body.representative));
      if (fact.tx.kind === KIND_ADD_REPRESENTATIVE) {
        if (!known && !equalBytes(body.representative, patientSignKey) && current.length < REPRESENTATIVES_MAX) current = [...current, body.representative];
      } else if (known) current = current.filter((r) => !equalBytes(r, body.representative));
    }
    return current;
  }

  /** Every research tx of the verified chain, in chain order (replayed by `research.replayResearch`). */
  listResearchTxs(): readonly ChainTx[] {
    return this.#researchTxs;
  }

  /** How many record keys a verified grant hands over: its own, or its verified parts' (ADR 0012). */
  countGrantKeys(grant: GrantState): number {
    const fact = this.getTx(grant.grant_id);
    if (fact === undefined || (fact.tx.kind !== KIND_GRANT_MANIFEST && fact.tx.kind !== KIND_GRANT_MANIFEST_NARROWED)) return grant.record_keys.length;
    let count = 0;
    for (const part of this.#grantParts.get(toHex(grant.grant_id)) ?? [])
      if (equalBytes(part.tx.sender, grant.granted_by))
        count += decodeChecked(GrantPartBodySchema, part.tx.body, TX_BYTES_MAX).record_keys.length;
    return count;
  }

  /** An audit event: the tx it names is in a verified block, at its height and time, signed by its actor. */
  verifyAuditEvent(event: AuditEvent): ChainTx {
    const fact = this.getTx(event.event_id);
    if (fact === undefined)
      throw new UnverifiedError("no verified block holds the transaction of this event", "tx inclusion proof");
    if (fact.height !== event.height || fact.timeMs !== event.time_ms || !equalBytes(fact.tx.sender, event.actor))
      throw new UnverifiedError("the event differs from its transaction on the ledger", "event content");
    return fact;
  }
}
