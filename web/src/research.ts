/**
 * Research on the patient's device (issue 13, ADR 0019): the opt-ins signed here as
 * `health/research_client.py` signs them, and the studies, memberships and queries the page shows,
 * replayed from the txs of verified blocks alone (no node's word is needed: studies, opt-ins,
 * queries and answers are all in the clear on the ledger, by design of ADR 0019).
 *
 * A header does not commit to tx results, so a tx in a certified block may have been refused by
 * the rules (`health/research.py`). The replay applies every check a patient's view depends on, in
 * chain order, as the rules do: who may register a study (a research institute of the genesis),
 * query it (its institute) and answer (an asked institution, once); when a study is live (its
 * expiry against the block's time); what a query may ask (the template's code, grouping, range
 * and per-answer ε and δ; institutions that write records, sorted and unique; a data version no
 * older than the study and already committed); the charge against the remaining budget, a
 * repeated query (same digest) refused; and the patient's membership (a join while not a member
 * and the study live, a leave while a member, each by the patient or a representative of the
 * moment). Not replayed: the shapes of a template (codes' systems, ranges; stateless, so every
 * honest validator's admission checked them) and the cells of an answer (the page shows who
 * answered, never what).
 *
 * Pure: no I/O, no clock, no DOM.
 */

import { compareBytes, concatBytes, equalBytes, toHex } from "./bytes.js";
import { encode } from "./codec.js";
import { decodeChecked } from "./checks.js";
import { digest, type Identity } from "./crypto.js";
import type { ChainTx } from "./ledger.js";
import { type SignedTx, signTx, type TxOptions } from "./txs.js";
import {
  AUTHOR_ROLES,
  GROUP_NONE,
  type Institution,
  KIND_JOIN_STUDY,
  KIND_LEAVE_STUDY,
  KIND_POST_ANSWER,
  KIND_REGISTER_STUDY,
  KIND_SUBMIT_QUERY,
  PostAnswerBodySchema,
  QUERY_DIGEST_DOMAIN,
  type QueryTemplate,
  RANGED_TEMPLATE_KINDS,
  type RegisterStudyBody,
  RegisterStudyBodySchema,
  STUDY_QUERIES_MAX,
  StudyMembershipBodySchema,
  type SubmitQueryBody,
  SubmitQueryBodySchema,
  TEMPLATE_HISTOGRAM,
  TX_BYTES_MAX,
} from "./wire.js";

/** The research tx kinds (the ledger keeps their txs for `replayResearch`). */
export const RESEARCH_KINDS: readonly string[] = [KIND_REGISTER_STUDY, KIND_JOIN_STUDY, KIND_LEAVE_STUDY, KIND_SUBMIT_QUERY, KIND_POST_ANSWER];

/** Join a study, by the patient or a current representative (`research_client.build_join_study`). */
export function buildJoinStudy(signer: Identity, studyId: Uint8Array, patientId: Uint8Array, options: TxOptions): SignedTx {
  return signTx(signer, KIND_JOIN_STUDY, encode(StudyMembershipBodySchema, { study_id: studyId, patient_id: patientId }), options);
}

/** Leave a study: no query recorded from its block on covers the patient (`build_leave_study`). */
export function buildLeaveStudy(signer: Identity, studyId: Uint8Array, patientId: Uint8Array, options: TxOptions): SignedTx {
  return signTx(signer, KIND_LEAVE_STUDY, encode(StudyMembershipBodySchema, { study_id: studyId, patient_id: patientId }), options);
}

/** What makes two queries the same query (`research.compute_query_digest`). */
export function computeQueryDigest(body: SubmitQueryBody): Uint8Array {
  return digest(concatBytes(QUERY_DIGEST_DOMAIN, encode(SubmitQueryBodySchema, body)));
}

/** The (ε, δ) a study is charged for a query: the query's, once per institution asked. */
export function computeQueryCharge(body: SubmitQueryBody): [bigint, bigint] {
  const count = BigInt(body.institutions.length);
  return [body.epsilon_micro * count, body.delta_pico * count];
}

/** Whether a template allows a query's parameters and per-answer ε and δ (`validate_query_params`). */
export function isQueryAllowed(template: QueryTemplate, body: SubmitQueryBody): boolean {
  const p = body.params;
  if (!template.codes.includes(p.code)) return false;
  if (template.kind === TEMPLATE_HISTOGRAM ? !template.groupings.includes(p.grouping) : p.grouping !== GROUP_NONE) return false;
  if (RANGED_TEMPLATE_KINDS.includes(template.kind)) {
    if (!(template.value_min_milli <= p.value_low_milli && p.value_low_milli <= p.value_high_milli && p.value_high_milli <= template.value_max_milli)) return false;
  } else if (p.value_low_milli !== 0n || p.value_high_milli !== 0n) return false;
  return body.epsilon_micro <= template.epsilon_max_micro && body.delta_pico <= template.delta_max_pico;
}

/** A charged query of a study, as the replay found it. */
export interface VerifiedQuery {
  readonly fact: ChainTx;
  readonly body: SubmitQueryBody;
  /** The study's template it names. */
  readonly template: QueryTemplate;
  readonly epsilonChargedMicro: bigint;
  readonly deltaChargedPico: bigint;
  /** The patient was a member when it was recorded: their records may have entered its answers. */
  readonly covered: boolean;
  /** The asked institutions that answered, in the order they did. */
  readonly answeredBy: readonly { readonly institution: Uint8Array; readonly fact: ChainTx }[];
}

/** One membership: from its join's block, until its leave's (null: still a member). */
export interface MembershipSpan {
  readonly joined: ChainTx;
  readonly left: ChainTx | null;
}

export interface VerifiedStudy {
  readonly fact: ChainTx;
  readonly institute: Institution;
  readonly body: RegisterStudyBody;
  readonly epsilonRemainingMicro: bigint;
  readonly deltaRemainingPico: bigint;
  /** Members now, over every patient (public: the memberships are in the clear). */
  readonly memberCount: number;
  /** This patient's memberships, first to last. */
  readonly spans: readonly MembershipSpan[];
  readonly queries: readonly VerifiedQuery[];
}

export interface ResearchInput {
  /** Every research tx of the verified chain, in chain order. */
  readonly txs: readonly ChainTx[];
  readonly institutions: ReadonlyMap<string, Institution>;
  readonly patientId: Uint8Array;
  /** Whether `sender` acts for the patient just before `fact` (the patient, or a representative then). */
  readonly actsForPatient: (sender: Uint8Array, fact: ChainTx) => boolean;
}

interface StudyReplay {
  fact: ChainTx;
  institute: Institution;
  body: RegisterStudyBody;
  epsilonRemaining: bigint;
  deltaRemaining: bigint;
  queryCount: bigint;
  members: Set<string>;
  spans: { joined: ChainTx; left: ChainTx | null }[];
  queries: { fact: ChainTx; body: SubmitQueryBody; template: QueryTemplate; epsilon: bigint; delta: bigint; answered: { institution: Uint8Array; fact: ChainTx }[] }[];
}

function isSortedUnique(items: readonly Uint8Array[]): boolean {
  return items.every((item, i) => i === 0 || compareBytes(items[i - 1]!, item) < 0);
}

/**
 * The studies of the verified chain, each with its public accounts, this patient's memberships
 * and its charged queries, each query marked when it covers the patient (recorded while they were
 * a member: `research.is_member_at`, rejoins included). Txs the rules refused are left out.
 */
export function replayResearch(input: ResearchInput): VerifiedStudy[] {
  const studies = new Map<string, StudyReplay>();
  const queries = new Map<string, StudyReplay["queries"][number]>();
  const digests = new Set<string>();
  const me = toHex(input.patientId);
  for (const fact of input.txs) {
    const { kind, sender, body } = fact.tx;
    try {
      if (kind === KIND_REGISTER_STUDY) {
        const institute = input.institutions.get(toHex(sender));
        const study = decodeChecked(RegisterStudyBodySchema, body, TX_BYTES_MAX);
        if (institute?.role !== "research" || study.templates.length === 0) continue;
        if (study.expires_ms <= fact.timeMs || studies.has(toHex(fact.txId))) continue;
        studies.set(toHex(fact.txId), {
          fact,
          institute,
          body: study,
          epsilonRemaining: study.epsilon_total_micro,
          deltaRemaining: study.delta_total_pico,
          queryCount: 0n,
          members: new Set(),
          spans: [],
          queries: [],
        });
      } else if (kind === KIND_JOIN_STUDY || kind === KIND_LEAVE_STUDY) {
        const change = decodeChecked(StudyMembershipBodySchema, body, TX_BYTES_MAX);
        const study = studies.get(toHex(change.study_id));
        if (study === undefined) continue;
        const patient = toHex(change.patient_id);
        const mine = patient === me;
        if (mine && !input.actsForPatient(sender, fact)) continue;
        if (kind === KIND_JOIN_STUDY) {
          if (study.members.has(patient) || fact.timeMs >= study.body.expires_ms) continue;
          study.members.add(patient);
          if (mine) study.spans.push({ joined: fact, left: null });
        } else {
          if (!study.members.delete(patient)) continue;
          if (mine) study.spans[study.spans.length - 1]!.left = fact;
        }
      } else if (kind === KIND_SUBMIT_QUERY) {
        const query = decodeChecked(SubmitQueryBodySchema, body, TX_BYTES_MAX);
        const study = studies.get(toHex(query.study_id));
        if (study === undefined || !equalBytes(sender, study.institute.sign_key)) continue;
        const template = study.body.templates.find((t) => t.name === query.template);
        if (template === undefined || !isQueryAllowed(template, query)) continue;
        if (query.institutions.length === 0 || !isSortedUnique(query.institutions)) continue;
        if (!query.institutions.every((k) => AUTHOR_ROLES.includes(input.institutions.get(toHex(k))?.role ?? ""))) continue;
        const queryDigest = toHex(computeQueryDigest(query));
        if (digests.has(queryDigest) || study.queryCount >= BigInt(STUDY_QUERIES_MAX)) continue;
        const [epsilon, delta] = computeQueryCharge(query);
        if (epsilon > study.epsilonRemaining || delta > study.deltaRemaining) continue;
        if (query.as_of_height < study.fact.height || query.as_of_height > fact.height) continue;
        if (fact.timeMs >= study.body.expires_ms) continue;
        digests.add(queryDigest);
        study.epsilonRemaining -= epsilon;
        study.deltaRemaining -= delta;
        study.queryCount += 1n;
        const replayed = { fact, body: query, template, epsilon, delta, answered: [] };
        study.queries.push(replayed);
        queries.set(toHex(fact.txId), replayed);
      } else if (kind === KIND_POST_ANSWER) {
        const answer = decodeChecked(PostAnswerBodySchema, body, TX_BYTES_MAX);
        const query = queries.get(toHex(answer.query_id));
        if (query === undefined || !query.body.institutions.some((k) => equalBytes(k, sender))) continue;
        if (query.answered.some((a) => equalBytes(a.institution, sender))) continue;
        query.answered.push({ institution: sender, fact });
      }
    } catch {
      // a body its kind does not decode was refused by every node: it changes nothing
    }
  }
  return [...studies.values()].map((s) => ({
    fact: s.fact,
    institute: s.institute,
    body: s.body,
    epsilonRemainingMicro: s.epsilonRemaining,
    deltaRemainingPico: s.deltaRemaining,
    memberCount: s.members.size,
    spans: s.spans,
    queries: s.queries.map((q) => ({
      fact: q.fact,
      body: q.body,
      template: q.template,
      epsilonChargedMicro: q.epsilon,
      deltaChargedPico: q.delta,
      covered: s.spans.some((span) => span.joined.height <= q.fact.height && (span.left === null || q.fact.height < span.left.height)),
      answeredBy: q.answered,
    })),
  }));
}

/** Whether the patient is a member of the study now. */
export function isMember(study: VerifiedStudy): boolean {
  const last = study.spans[study.spans.length - 1];
  return last !== undefined && last.left === null;
}
