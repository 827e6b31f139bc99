/**
 * Requests and who can see my data. A pending inquiry says who asks (the institution the genesis
 * names), why (purpose in words, and the reason sealed for the patient), what exactly a grant
 * would share (every record, by name) and until when; the patient approves, narrows then
 * approves, or denies. A live grant can be revoked. Every decision is a tx built and signed here
 * (`txs.ts`), sent as bytes, and believed once a verified block holds it.
 */

import { toHex } from "../bytes.js";
import { fill, formatDay, formatTime, h, verifiedMark } from "../dom.js";
import { describeRecord } from "../fhir.js";
import { resealRecordKey } from "../records.js";
import { type Narrowing, selectGrantRecords } from "../scope.js";
import type { Session, VerifiedInquiry, VerifiedRecord } from "../session.js";
import { buildDeny, buildGrant, buildGrantInParts, buildRevoke } from "../txs.js";
import { GRANT_MANIFEST_RECORDS_MAX, GRANT_RECORDS_MAX, type GrantTerms, PURPOSE_WORDS } from "../wire.js";
import { refusalList, typeWords } from "./records.js";

export interface ConsentHooks {
  /** Run a signed action, saying what happens; refreshes the screens after. */
  act(what: string, run: () => Promise<unknown>): void;
}

const UINT_OPEN = 2n ** 64n - 1n;

function dateInput(ms: bigint): string {
  if (ms >= 2n ** 53n) return "";
  return new Date(Number(ms)).toISOString().slice(0, 10);
}

function scopeWords(inquiry: VerifiedInquiry): HTMLElement {
  const scope = inquiry.state.scope;
  const lines: HTMLElement[] = [];
  if (scope.record_types.length === 0 && scope.record_ids.length === 0) lines.push(h("li", {}, "All your records"));
  for (const type of scope.record_types) lines.push(h("li", {}, `${typeWords(type)} (${type})`));
  for (const id of scope.record_ids) lines.push(h("li", {}, `the record ${toHex(id).slice(0, 16)}…`));
  const window =
    scope.from_ms === 0n && scope.to_ms === UINT_OPEN
      ? "written at any time"
      : `written between ${formatDay(scope.from_ms)} and ${formatDay(scope.to_ms)}`;
  return h("div", {}, h("p", {}, `Asks for (${window}):`), h("ul", {}, ...lines));
}

function recordLine(r: VerifiedRecord): HTMLElement {
  const view = describeRecord(r.opened.resource);
  return h("li", {}, `${view.title}${view.date ? `, ${view.date}` : ""} (${typeWords(r.state.record_type)})`);
}

function inquiryCard(inquiry: VerifiedInquiry, session: Session, records: readonly VerifiedRecord[], hooks: ConsentHooks): HTMLElement {
  const state = inquiry.state;
  const id = toHex(state.inquiry_id);
  const requester = session.ledger.institutions.get(toHex(state.requester));
  const covered = selectGrantRecords(state.scope, records, null);
  const types = [...new Set(covered.map((r) => r.state.record_type))].sort();
  const who = requester ? `${requester.name} (${requester.role})` : "an unknown institution";

  const narrowForm = h("form", { class: "narrow", "aria-label": `Narrow the request of ${who}` });
  const typeBoxes = types.map((type) => {
    const boxId = `narrow-${id.slice(0, 12)}-${type}`;
    const box = h("input", { type: "checkbox", id: boxId, name: "type", value: type, checked: true });
    return { type, box, row: h("div", { class: "check" }, box, h("label", { for: boxId }, `${typeWords(type)} (${type})`)) };
  });
  const fromId = `narrow-${id.slice(0, 12)}-from`;
  const toId = `narrow-${id.slice(0, 12)}-to`;
  const fromInput = h("input", { type: "date", id: fromId, name: "from", value: dateInput(state.scope.from_ms) });
  const toInput = h("input", { type: "date", id: toId, name: "to", value: dateInput(state.scope.to_ms) });
  const untilId = `narrow-${id.slice(0, 12)}-until`;
  const untilInput = h("input", { type: "date", id: untilId, name: "until", value: dateInput(state.expires_ms) });
  const narrowing = (): Narrowing => {
    // Whole UTC days, kept within the inquiry's window (the rules refuse anything wider).
    const from = fromInput.value ? BigInt(Date.parse(`${fromInput.value}T00:00:00Z`)) : 0n;
    const to = toInput.value ? BigInt(Date.parse(`${toInput.value}T23:59:59.999Z`)) : UINT_OPEN;
    return {
      recordTypes: new Set(typeBoxes.filter((t) => t.box.checked).map((t) => t.type)),
      fromMs: from > state.scope.from_ms ? from : state.scope.from_ms,
      toMs: to < state.scope.to_ms ? to : state.scope.to_ms,
    };
  };
  /** The grant's own terms when the patient narrowed anything (null: the inquiry's terms). */
  const grantTerms = (chosen: readonly VerifiedRecord[]): GrantTerms | null => {
    const n = narrowing();
    const until = untilInput.value ? BigInt(Date.parse(`${untilInput.value}T23:59:59.999Z`)) : state.expires_ms;
    const expires = until < state.expires_ms ? until : state.expires_ms;
    // Unticking a kind narrows the grant to the kinds kept (with all ticked it covers what was asked).
    const typesNarrowed = typeBoxes.some((t) => !t.box.checked);
    if (!typesNarrowed && n.fromMs === state.scope.from_ms && n.toMs === state.scope.to_ms && expires === state.expires_ms) return null;
    const kept = [...(n.recordTypes ?? new Set<string>())];
    const asked = state.scope;
    const everything = asked.record_types.length === 0 && asked.record_ids.length === 0;
    const recordTypes = typesNarrowed ? kept.filter((t) => everything || asked.record_types.includes(t)).sort() : [...asked.record_types];
    // Records the inquiry named one by one stay named if the patient kept their type.
    const keptIds = new Set(chosen.map((r) => toHex(r.state.record_id)));
    const recordIds = typesNarrowed ? asked.record_ids.filter((rid) => keptIds.has(toHex(rid))) : [...asked.record_ids];
    // No kind kept would read, on the ledger, as "every kind": refuse rather than widen.
    if (recordTypes.length === 0 && recordIds.length === 0) throw new Error("tick at least one kind of record to share, or deny the request");
    return { scope: { record_types: recordTypes, record_ids: recordIds, from_ms: n.fromMs, to_ms: n.toMs }, expires_ms: expires };
  };
  const shared = h("ul", { class: "shares" });
  const count = h("p", { class: "share-count" });
  const update = () => {
    const chosen = selectGrantRecords(state.scope, records, narrowing());
    count.textContent = `Approving shares ${chosen.length} of the ${covered.length} record(s) this request covers:`;
    fill(shared, ...chosen.map(recordLine));
  };
  narrowForm.addEventListener("change", update);
  const approve = h("button", { type: "submit", class: "approve" }, "Approve what is ticked");
  fill(
    narrowForm,
    h("fieldset", {}, h("legend", {}, "Share only these kinds of record"), ...typeBoxes.map((t) => t.row)),
    h("label", { for: fromId }, "Only records written from"),
    fromInput,
    h("label", { for: toId }, "Only records written until"),
    toInput,
    h("label", { for: untilId }, "Access ends on (no later than the request asks)"),
    untilInput,
    count,
    shared,
    h(
      "p",
      { class: "note" },
      `What you narrow here is the grant itself: it shares only these kinds and dates of record, now and later, and ends on the day you chose (at the latest ${formatTime(state.expires_ms)}). You can still revoke it sooner from "Who can see my data".`,
    ),
    approve,
  );
  update();
  narrowForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = selectGrantRecords(state.scope, records, narrowing());
    if (requester === undefined) return;
    if (chosen.length > GRANT_MANIFEST_RECORDS_MAX) {
      hooks.act("Approving", () => Promise.reject(new Error(`more than ${GRANT_MANIFEST_RECORDS_MAX} records in one grant: narrow it further`)));
      return;
    }
    hooks.act(`Approving ${who}'s request for ${chosen.length} record(s)`, async () => {
      const keys = chosen.map((r) => resealRecordKey(r.state, session.identity, requester.enc_key));
      const options = { chainId: session.ledger.chainId };
      const terms = grantTerms(chosen);
      if (terms !== null && terms.expires_ms <= session.ledger.head.timeMs) throw new Error("the chosen end of access has already passed");
      if (keys.length <= GRANT_RECORDS_MAX) {
        await session.submit(buildGrant(session.identity, state.inquiry_id, keys, options, terms));
        return;
      }
      // Too many for one tx (ADR 0012): the manifest names exactly these records; its parts follow.
      const { manifest, parts } = buildGrantInParts(session.identity, state.inquiry_id, keys, options, terms);
      await session.submit(manifest);
      for (const part of parts) await session.submit(part);
    });
  });
  const deny = h("button", { type: "button", class: "deny" }, "Deny");
  deny.addEventListener("click", () =>
    hooks.act(`Denying ${who}'s request`, () => session.submit(buildDeny(session.identity, state.inquiry_id, { chainId: session.ledger.chainId }))),
  );
  return h(
    "li",
    { class: "inquiry", "data-inquiry-id": id },
    h("p", {}, h("strong", {}, who), " asks to see your records ", PURPOSE_WORDS[state.purpose] ?? state.purpose, "."),
    h("p", {}, "Their reason: ", h("q", { class: "reason" }, inquiry.reason)),
    scopeWords(inquiry),
    h("p", {}, `Until ${formatTime(state.expires_ms)} (asked ${formatTime(state.time_ms)}). `, verifiedMark(inquiry.fact.height)),
    requester === undefined ? h("p", { class: "error" }, "This request does not come from an institution of this network: it cannot be approved.") : narrowForm,
    deny,
  );
}

export function renderRequests(root: HTMLElement, session: Session, hooks: ConsentHooks): void {
  const snapshot = session.snapshot;
  if (snapshot === null) return;
  const now = session.ledger.head.timeMs;
  const open = snapshot.inquiries.filter((i) => i.state.status === "open" && i.state.expires_ms > now);
  fill(
    root,
    refusalList(snapshot.refused, ["inquiry"], session.nodeName),
    open.length === 0 ? h("p", {}, "No pending requests.") : null,
    h("ul", { class: "inquiries" }, ...open.map((i) => inquiryCard(i, session, snapshot.records, hooks))),
  );
}

export function renderGrants(root: HTMLElement, session: Session, hooks: ConsentHooks): void {
  const snapshot = session.snapshot;
  if (snapshot === null) return;
  const now = session.ledger.head.timeMs;
  const live = snapshot.grants.filter((g) => g.state.revoked_height === 0n && g.state.expires_ms > now);
  const consents = snapshot.consents.filter((c) => c.state.revoked_height === 0n && c.state.expires_ms > now).length;
  const items = live.map((g) => {
    const grantee = session.ledger.institutions.get(toHex(g.state.grantee));
    const who = grantee ? `${grantee.name} (${grantee.role})` : toHex(g.state.grantee).slice(0, 16);
    const revoke = h("button", { type: "button", class: "revoke" }, `Revoke ${who}'s access`);
    revoke.addEventListener("click", () =>
      hooks.act(`Revoking ${who}'s access`, () => session.submit(buildRevoke(session.identity, g.state.grant_id, { chainId: session.ledger.chainId }))),
    );
    return h(
      "li",
      { class: "grant", "data-grant-id": toHex(g.state.grant_id) },
      h("p", {}, h("strong", {}, who), ` may read ${session.ledger.countGrantKeys(g.state)} of your records `, PURPOSE_WORDS[g.state.purpose] ?? g.state.purpose, "."),
      h("p", {}, `Granted ${formatTime(g.state.time_ms)}, until ${formatTime(g.state.expires_ms)}. `, verifiedMark(g.fact.height)),
      revoke,
    );
  });
  fill(
    root,
    h(
      "p",
      { class: "plain" },
      "Revoking stops every future read at once: no node will hand these records to that institution again. " +
        "It cannot undo a read that already happened: what they read before you revoked, they may have kept. " +
        "Every read stays in your access history.",
    ),
    refusalList(snapshot.refused, ["grant"], session.nodeName),
    live.length === 0 && consents === 0 ? h("p", {}, "Nobody else can see your data now.") : null,
    consents ? h("p", { class: "consents-note" }, `${consents} insurer consent(s) for payment are live too: see Insurers.`) : null,
    h("ul", { class: "grants" }, ...items),
  );
}
