/**
 * Research (issue 13, ADR 0019): every study on the ledger with what it may ask, its privacy
 * budget and its small-cell threshold; join or leave, signed here; and for each study, the queries
 * that covered the patient (recorded while they were a member), who answered them, each verified.
 * Everything comes from the session's replay of the verified chain (`research.ts`).
 */

import { toHex } from "../bytes.js";
import { fill, formatDay, formatTime, h, verifiedMark } from "../dom.js";
import { buildJoinStudy, buildLeaveStudy, isMember, type VerifiedQuery, type VerifiedStudy } from "../research.js";
import type { Session } from "../session.js";
import type { QueryParams, QueryTemplate } from "../wire.js";
import type { ConsentHooks } from "./consent.js";
import { refusalList } from "./records.js";

const GROUPING_WORDS: Readonly<Record<string, string>> = { age_band: "age band", sex: "sex", year: "year" };

/** ε in millionths, δ in 10^-12, values in thousandths, as a person reads them. */
function fixed(value: bigint, scale: bigint): string {
  const whole = value / scale;
  const fraction = (value % scale).toString().padStart(scale.toString().length - 1, "0").replace(/0+$/, "");
  return fraction ? `${whole}.${fraction}` : `${whole}`;
}

const epsilon = (micro: bigint) => fixed(micro, 1_000_000n);
const delta = (pico: bigint) => (pico === 0n ? "0" : `${fixed(pico, 1_000_000_000_000n)}`);
const value = (milli: bigint) => fixed(milli, 1_000n);

/** What a template (or a query of it, with its parameters) counts, in words. */
function askWords(kind: string, codes: string, params?: QueryParams, template?: QueryTemplate): string {
  const by = params
    ? params.grouping !== "none"
      ? `, by ${GROUPING_WORDS[params.grouping] ?? params.grouping}`
      : ""
    : template?.groupings.length
      ? `, by ${template.groupings.map((g) => GROUPING_WORDS[g] ?? g).join(" or ")}`
      : "";
  const low = params ? params.value_low_milli : (template?.value_min_milli ?? 0n);
  const high = params ? params.value_high_milli : (template?.value_max_milli ?? 0n);
  switch (kind) {
    case "count":
      return `how many patients have ${codes}`;
    case "histogram":
      return `how many patients have ${codes}${by}`;
    case "count_in_range":
      return `how many patients have ${codes} with a value between ${value(low)} and ${value(high)}`;
    case "mean":
      return `the average value of ${codes} (values between ${value(low)} and ${value(high)})`;
    default:
      return `${kind} of ${codes}`;
  }
}

function institutionName(session: Session, key: Uint8Array): string {
  const found = session.ledger.institutions.get(toHex(key));
  return found ? `${found.name} (${found.role})` : `an unknown institution ${toHex(key).slice(0, 16)}…`;
}

function queryItem(query: VerifiedQuery, session: Session): HTMLElement {
  const { body } = query;
  const asked = body.institutions.map((k) => institutionName(session, k));
  const answered = query.answeredBy.map((a) => institutionName(session, a.institution));
  return h(
    "li",
    { class: "study-query", "data-query-id": toHex(query.fact.txId) },
    h("p", {}, h("strong", {}, askWords(query.template.kind, body.params.code, body.params)), "."),
    h(
      "p",
      { class: "query-facts" },
      `Asked ${formatTime(query.fact.timeMs)} of ${asked.join(", ")}, over the ledger as of block ${body.as_of_height}; ` +
        `each answer spends ε ${epsilon(body.epsilon_micro)}${body.delta_pico ? ` and δ ${delta(body.delta_pico)}` : ""}. `,
      verifiedMark(query.fact.height),
    ),
    h(
      "p",
      { class: "query-answers" },
      answered.length === 0
        ? "No institution has answered yet."
        : `Answered by ${answered.join(", ")} (${answered.length} of ${asked.length}), each with noise added where your records are; no answer names anyone.`,
    ),
  );
}

function studyCard(study: VerifiedStudy, session: Session, hooks: ConsentHooks): HTMLElement {
  const { body } = study;
  const id = toHex(study.fact.txId);
  const member = isMember(study);
  const live = body.expires_ms > session.ledger.head.timeMs;
  const chainId = session.ledger.chainId;
  const covered = study.queries.filter((q) => q.covered);
  const others = study.queries.length - covered.length;
  let action: HTMLElement | null = null;
  if (member) {
    action = h("button", { type: "button", class: "leave-study" }, `Leave “${body.title}”`);
    action.addEventListener("click", () =>
      hooks.act(`Leaving the study “${body.title}”`, () => session.submit(buildLeaveStudy(session.identity, study.fact.txId, session.patientId, { chainId }))),
    );
  } else if (live) {
    action = h("button", { type: "button", class: "join-study" }, `Join “${body.title}”`);
    action.addEventListener("click", () =>
      hooks.act(`Joining the study “${body.title}”`, () => session.submit(buildJoinStudy(session.identity, study.fact.txId, session.patientId, { chainId }))),
    );
  }
  const since = study.spans[study.spans.length - 1];
  const status = member
    ? `You are a member since ${formatTime(since!.joined.timeMs)} (block ${since!.joined.height}).`
    : since
      ? `You left ${formatTime(since.left!.timeMs)} (block ${since.left!.height}); no query recorded since uses your data.`
      : "You are not a member.";
  return h(
    "li",
    { class: `study${member ? " member" : ""}${live ? "" : " ended"}`, "data-study-id": id },
    h("p", {}, h("strong", {}, body.title), ` — by ${study.institute.name} (${study.institute.role}), ethics approval ${body.ethics_ref}. `, verifiedMark(study.fact.height)),
    h("p", {}, "It may ask:"),
    h("ul", { class: "study-templates" }, ...body.templates.map((t) => h("li", {}, `${askWords(t.kind, t.codes.join(", "), undefined, t)}.`))),
    h(
      "p",
      { class: "study-privacy" },
      `Groups of fewer than ${body.k_min} patients are never released. Privacy budget: ε ${epsilon(study.epsilonRemainingMicro)} of ${epsilon(body.epsilon_total_micro)} left` +
        `${body.delta_total_pico ? `, δ ${delta(study.deltaRemainingPico)} of ${delta(body.delta_total_pico)}` : ""}; ` +
        `${study.memberCount} member(s); ${live ? `runs until ${formatDay(body.expires_ms)}` : `ended ${formatDay(body.expires_ms)}`}.`,
    ),
    h("p", { class: "study-status" }, status),
    action,
    h("h4", {}, "Queries that covered you"),
    covered.length ? h("ul", { class: "study-queries" }, ...covered.map((q) => queryItem(q, session))) : h("p", { class: "study-queries-none" }, "None."),
    others ? h("p", { class: "study-queries-other" }, `${others} other quer${others === 1 ? "y was" : "ies were"} recorded while you were not a member: your data was not in ${others === 1 ? "it" : "them"}.`) : null,
  );
}

export function renderResearch(root: HTMLElement, session: Session, hooks: ConsentHooks): void {
  const snapshot = session.snapshot;
  if (snapshot === null) return;
  const studies = [...snapshot.research].sort((a, b) => Number(b.fact.height - a.fact.height) || b.fact.index - a.fact.index);
  fill(
    root,
    h(
      "p",
      { class: "plain" },
      "A study you join never learns who you are. Its questions are answered inside each institution that holds your records, as counts and averages with noise added; " +
        "groups too small to hide anyone are left out, and every question spends part of the study's privacy budget, which the ledger enforces. " +
        "Leaving stops any later question from using your data; answers already given stay on the ledger.",
    ),
    refusalList(snapshot.refused, ["study"], session.nodeName),
    studies.length === 0 ? h("p", {}, "No study is registered on this network.") : null,
    h("ul", { class: "studies" }, ...studies.map((s) => studyCard(s, session, hooks))),
  );
}
