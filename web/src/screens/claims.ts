/**
 * Insurers (issue 12, ADR 0017): the patient's standing consents for payment, each with everything
 * it covers (insurer, record types, authors, window, expiry, and the sensitivity labels named), with
 * revoke; and their claims: who claims what from whom, each version's records, each decision with
 * its reason in the insurer's words, and exactly which records each insurer read for which claim.
 * Everything here comes from the session's verified snapshot (`session.ts`, `ledger.ts`); a
 * revocation is a `health.revoke` built and signed here.
 */

import { toHex } from "../bytes.js";
import { buildConsentInParts, buildGrantConsent, computeCurrentLabels, describeClaim, makeConsent, selectConsentRecords } from "../claims.js";
import { fill, formatDay, formatTime, h, verifiedMark } from "../dom.js";
import { describeRecord } from "../fhir.js";
import type { Session, VerifiedClaim, VerifiedConsent, VerifiedRecord } from "../session.js";
import { resealRecordKey } from "../records.js";
import { buildRevoke } from "../txs.js";
import { type GrantConsentBody, type RecordState, SECURITY_LABELS } from "../wire.js";
import type { ConsentHooks } from "./consent.js";
import { refusalList, typeWords } from "./records.js";

const UINT_OPEN = 2n ** 64n - 1n;

/** Sensitivity and confidentiality labels in words (the v3 ActCode and Confidentiality codes). */
const LABEL_WORDS: Readonly<Record<string, string>> = {
  HIV: "HIV",
  PSY: "psychiatry",
  SUD: "substance use",
  SEX: "sexuality and reproductive health",
  ETH: "substance abuse (ETH)",
  STD: "sexually transmitted disease",
  BH: "behavioural health",
  GDIS: "genetic disease",
  R: "restricted",
  V: "very restricted",
};

const OUTCOME_WORDS: Readonly<Record<string, string>> = {
  approved: "Approved",
  denied: "Denied",
  pended: "Pended: the insurer needs more",
  open: "Awaiting a decision",
};

function name(session: Session, key: Uint8Array): string {
  const found = session.ledger.institutions.get(toHex(key));
  return found ? `${found.name} (${found.role})` : `an unknown institution ${toHex(key).slice(0, 16)}…`;
}

function recordName(records: ReadonlyMap<string, VerifiedRecord>, id: Uint8Array): string {
  const record = records.get(toHex(id));
  if (record === undefined) return `a record not among yours (${toHex(id).slice(0, 16)}…)`;
  const view = describeRecord(record.opened.resource);
  return `${view.title}${view.date ? `, ${view.date}` : ""} (${typeWords(record.state.record_type)})`;
}

function consentCard(consent: VerifiedConsent, session: Session, hooks: ConsentHooks): HTMLElement {
  const { state, terms } = consent;
  const who = name(session, state.grantee);
  const window =
    terms.from_ms === 0n && terms.to_ms === UINT_OPEN
      ? "written at any time"
      : terms.from_ms === 0n
        ? `written until ${formatDay(terms.to_ms)}`
        : terms.to_ms === UINT_OPEN
          ? `written from ${formatDay(terms.from_ms)}`
          : `written between ${formatDay(terms.from_ms)} and ${formatDay(terms.to_ms)}`;
  const labels = terms.labels.length
    ? `Including records labelled sensitive: ${terms.labels.map((l) => LABEL_WORDS[l] ?? l).join(", ")}.`
    : "No record labelled sensitive (HIV, mental health, substance use, …) is covered.";
  const now = session.ledger.head.timeMs;
  const live = state.revoked_height === 0n && state.expires_ms > now;
  const status = state.revoked_height !== 0n ? `Revoked ${formatTime(state.revoked_time_ms)}.` : live ? `Live until ${formatTime(state.expires_ms)}.` : `Expired ${formatTime(state.expires_ms)}.`;
  let revoke: HTMLElement | null = null;
  if (live) {
    revoke = h("button", { type: "button", class: "revoke" }, `Revoke ${who}'s consent`);
    revoke.addEventListener("click", () =>
      hooks.act(`Revoking ${who}'s consent`, () => session.submit(buildRevoke(session.identity, state.grant_id, { chainId: session.ledger.chainId }))),
    );
  }
  return h(
    "li",
    { class: `consent${live ? "" : " ended"}`, "data-consent-id": toHex(state.grant_id) },
    h("p", {}, h("strong", {}, who), " may receive, for payment of your claims, your records:"),
    h("ul", { class: "consent-types" }, ...terms.record_types.map((t) => h("li", {}, `${typeWords(t)} (${t})`))),
    h("p", { class: "consent-authors" }, `written by ${terms.authors.map((a) => name(session, a)).join(", ")}, ${window}.`),
    h("p", { class: "consent-labels" }, labels),
    h("p", {}, `Given ${formatTime(state.time_ms)}. ${status} `, verifiedMark(consent.fact.height)),
    revoke,
  );
}

function claimCard(claim: VerifiedClaim, session: Session, records: ReadonlyMap<string, VerifiedRecord>): HTMLElement {
  const { state } = claim;
  const asked = describeClaim(claim.claim.resource);
  const insurer = name(session, state.insurer);
  const decisions = claim.decisions.map((d) =>
    h(
      "li",
      { class: `decision decision-${d.state.outcome}` },
      h("p", {}, h("strong", {}, OUTCOME_WORDS[d.state.outcome] ?? d.state.outcome), ` (version ${d.state.version}), ${formatTime(d.state.time_ms)}. `, verifiedMark(d.fact.height)),
      d.reasons.length ? h("p", { class: "decision-reason" }, "Reason: ", d.reasons.join("; ")) : null,
    ),
  );
  const reads = claim.reads.map((r) =>
    h(
      "li",
      { class: "claim-read" },
      h("p", {}, `${insurer} read, ${formatTime(r.fact.timeMs)}: `, verifiedMark(r.fact.height)),
      h("ul", {}, ...r.recordIds.map((id) => h("li", {}, recordName(records, id)))),
    ),
  );
  return h(
    "li",
    { class: "claim", "data-claim-id": toHex(state.claim_id) },
    h(
      "p",
      {},
      h("strong", {}, name(session, state.clinic)),
      " claims from ",
      h("strong", {}, insurer),
      asked.items.length ? `: ${asked.items.join("; ")}` : "",
      asked.total ? ` (total ${asked.total})` : "",
      ".",
    ),
    h("p", { class: "claim-status" }, `${OUTCOME_WORDS[state.status] ?? state.status}. Filed ${formatTime(state.time_ms)}, version ${state.version}. `, verifiedMark(claim.fact.height)),
    h("details", { id: `claim-records-${toHex(state.claim_id).slice(0, 12)}` }, h("summary", {}, `Supporting records cited (${state.record_ids.length})`), h("ul", {}, ...state.record_ids.map((id) => h("li", {}, recordName(records, id))))),
    h("h4", {}, "Decisions"),
    decisions.length ? h("ul", { class: "decisions" }, ...decisions) : h("p", {}, "No decision yet."),
    h("h4", {}, `What ${insurer} read for this claim`),
    reads.length ? h("ul", { class: "claim-reads" }, ...reads) : h("p", { class: "claim-reads-none" }, "Nothing read yet."),
  );
}

/** The record types a payment consent usually needs; the patient's own types are offered too. */
const CLAIM_TYPES = ["Condition", "DiagnosticReport", "Encounter", "Immunization", "MedicationRequest", "Observation", "Procedure"];
const DAY_MS = 86_400_000n;
/** Under the rules' 366-day bound (CONSENT_TTL_MS_MAX), with the block time's margin. */
const CONSENT_DAYS_MAX = 365;

/** What a consent with these terms would re-seal now, judged on the verified snapshot. */
function consentRecords(session: Session, consent: GrantConsentBody, insurerEncKey: Uint8Array): RecordState[] {
  const records = (session.snapshot?.records ?? []).map((r) => r.state);
  const byId = new Map(records.map((r) => [toHex(r.record_id), r]));
  const labelsOf = (id: Uint8Array) => session.ledger.getTx(id)?.labels ?? [];
  return selectConsentRecords(records, consent, insurerEncKey, session.identity.public.encKey, (r) => computeCurrentLabels(r, byId, labelsOf));
}

/**
 * Give an insurer a standing consent (ADR 0017): the whole scope is shown before signing, with
 * how many records already on the ledger it re-seals; the consent is `claims_client`'s tx byte for
 * byte, and once it is verified on the ledger, those records' keys follow in a consent manifest
 * and its parts.
 */
function consentForm(session: Session, hooks: ConsentHooks): HTMLElement | null {
  const institutions = [...session.ledger.institutions.values()];
  const insurers = institutions.filter((i) => i.role === "insurer");
  const authors = institutions.filter((i) => i.role === "clinic" || i.role === "hospital");
  if (insurers.length === 0 || authors.length === 0) return null;
  const own = (session.snapshot?.records ?? []).map((r) => r.state.record_type);
  const types = [...new Set([...CLAIM_TYPES, ...own])].sort();
  const insurer = h("select", { id: "consent-insurer", name: "insurer" }, ...insurers.map((i) => h("option", { value: toHex(i.sign_key) }, `${i.name} (${i.role})`)));
  const box = (id: string, value: string, label: string, checked: boolean) => {
    const input = h("input", { type: "checkbox", id, name: id.split("-")[1] ?? "", value, checked });
    return { input, row: h("div", { class: "check" }, input, h("label", { for: id }, label)) };
  };
  const typeBoxes = types.map((t) => box(`consent-type-${t}`, t, `${typeWords(t)} (${t})`, false));
  const authorBoxes = authors.map((a) => box(`consent-author-${toHex(a.sign_key).slice(0, 12)}`, toHex(a.sign_key), `${a.name} (${a.role})`, false));
  const labelBoxes = [...SECURITY_LABELS].sort().map((l) => box(`consent-label-${l}`, l, LABEL_WORDS[l] ? `${LABEL_WORDS[l]} (${l})` : l, false));
  const days = h("input", { type: "number", id: "consent-days", name: "days", min: "1", max: String(CONSENT_DAYS_MAX), value: "365", required: true });
  const preview = h("p", { class: "consent-preview", "aria-live": "polite" });
  const sign = h("button", { type: "submit" }, "Sign this consent");
  const chosenInsurer = () => insurers.find((i) => toHex(i.sign_key) === insurer.value) ?? insurers[0]!;
  const terms = (): GrantConsentBody | null => {
    const n = Number(days.value);
    if (!Number.isInteger(n) || n < 1 || n > CONSENT_DAYS_MAX) return null;
    const expiresMs = BigInt(Date.now()) + BigInt(n) * DAY_MS;
    return makeConsent(session.patientId, chosenInsurer().sign_key, {
      recordTypes: typeBoxes.filter((b) => b.input.checked).map((b) => b.input.value),
      authors: authorBoxes.filter((b) => b.input.checked).map((b) => chosenAuthor(b.input.value)),
      labels: labelBoxes.filter((b) => b.input.checked).map((b) => b.input.value),
      toMs: expiresMs,
      expiresMs,
    });
  };
  const chosenAuthor = (hex: string) => authors.find((a) => toHex(a.sign_key) === hex)!.sign_key;
  const update = () => {
    const consent = terms();
    sign.disabled = consent === null || consent.record_types.length === 0 || consent.authors.length === 0;
    if (consent === null) return void (preview.textContent = `Give it 1 to ${CONSENT_DAYS_MAX} days.`);
    if (consent.record_types.length === 0 || consent.authors.length === 0)
      return void (preview.textContent = "Tick at least one kind of record and one institution that writes them.");
    const existing = consentRecords(session, consent, chosenInsurer().enc_key).length;
    const labels = consent.labels.length ? `including records labelled ${consent.labels.map((l) => LABEL_WORDS[l] ?? l).join(", ")}` : "no record labelled sensitive";
    preview.textContent =
      `You sign: ${chosenInsurer().name} may receive, for payment (HPAYMT), your ${consent.record_types.map(typeWords).join(", ")} ` +
      `written by ${consent.authors.map((a) => session.ledger.institutions.get(toHex(a))?.name ?? toHex(a)).join(", ")} until ${formatDay(consent.to_ms)}, ` +
      `${labels}; live until ${formatTime(consent.expires_ms)} unless you revoke it. ` +
      `It also re-seals for the insurer the ${existing} record(s) of this scope already on the ledger.`;
  };
  const form = h(
    "form",
    { id: "consent-form", "aria-label": "Give an insurer a standing consent" },
    h("label", { for: "consent-insurer" }, "Insurer"),
    insurer,
    h("fieldset", {}, h("legend", {}, "Kinds of record"), ...typeBoxes.map((b) => b.row)),
    h("fieldset", {}, h("legend", {}, "Written by"), ...authorBoxes.map((b) => b.row)),
    h("fieldset", {}, h("legend", {}, "Records labelled sensitive to include (none unless you tick them)"), ...labelBoxes.map((b) => b.row)),
    h("label", { for: "consent-days" }, "For how many days"),
    days,
    preview,
    sign,
  );
  form.addEventListener("change", update);
  form.addEventListener("input", update);
  update();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const consent = terms();
    if (consent === null || sign.disabled) return;
    const to = chosenInsurer();
    hooks.act(`Giving ${to.name} a standing consent`, async () => {
      const options = { chainId: session.ledger.chainId };
      const done = await session.submit(buildGrantConsent(session.identity, consent, options));
      // Records committed up to the consent's block were sealed for the insurer by no node: re-sealed here.
      await session.refresh();
      const keys = consentRecords(session, consent, to.enc_key).map((r) => resealRecordKey(r, session.identity, to.enc_key));
      if (keys.length === 0) return;
      const { manifest, parts } = buildConsentInParts(session.identity, done.txId, keys, options);
      await session.submit(manifest);
      for (const part of parts) await session.submit(part);
    });
  });
  return h("details", { id: "consent-new" }, h("summary", {}, "Give an insurer a standing consent"), form);
}

export function renderClaims(root: HTMLElement, session: Session, hooks: ConsentHooks): void {
  const snapshot = session.snapshot;
  if (snapshot === null) return;
  const records = new Map(snapshot.records.map((r) => [toHex(r.state.record_id), r]));
  fill(
    root,
    h("h3", {}, "Standing consents for payment"),
    h(
      "p",
      { class: "plain" },
      "A standing consent lets an insurer receive the records it names as your clinics write them, to decide your claims. " +
        "Revoking it stops that from its block on; what the insurer already received, it may have kept.",
    ),
    refusalList(snapshot.refused, ["grant"], session.nodeName),
    snapshot.consents.length === 0 ? h("p", {}, "You have given no standing consent.") : null,
    h("ul", { class: "consents" }, ...snapshot.consents.map((c) => consentCard(c, session, hooks))),
    consentForm(session, hooks),
    h("h3", {}, "Your claims"),
    refusalList(snapshot.refused, ["claim", "claim decision", "claim read"], session.nodeName),
    snapshot.claims.length === 0 ? h("p", {}, "No claim has been filed for you.") : null,
    h("ul", { class: "claims" }, ...snapshot.claims.map((c) => claimCard(c, session, records))),
  );
}
