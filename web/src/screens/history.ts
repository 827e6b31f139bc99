/**
 * Access history: every inquiry, decision and read of the patient's data, newest first, each from
 * a tx in a verified block (who, when, for what, which block). Representatives: add and remove.
 */

import { fromHex, toHex } from "../bytes.js";
import { fill, formatTime, h, verifiedMark } from "../dom.js";
import type { Session } from "../session.js";
import { buildAddRepresentative, buildRemoveRepresentative } from "../txs.js";
import { PURPOSE_WORDS } from "../wire.js";
import type { ConsentHooks } from "./consent.js";
import { refusalList } from "./records.js";

const EVENT_WORDS: Readonly<Record<string, string>> = {
  inquiry: "asked to see your records",
  grant: "approved a request",
  deny: "denied a request",
  revoke: "revoked access",
  read: "read your records",
  representative_added: "added a representative",
  representative_removed: "removed a representative",
  grant_part: "sent part of a grant",
  records_request: "asked an institution for its records",
  records_request_closed: "answered a records request",
  amendment_request: "asked for a correction",
  amendment_accepted: "accepted a correction",
  amendment_refused: "refused a correction",
  disagreement: "filed a statement of disagreement",
  consent: "gave a consent",
  claim_filed: "filed a claim",
  claim_amended: "amended a claim",
  claim_decided: "decided a claim",
  claim_read: "read a claim",
  study_joined: "joined a research study",
  study_left: "left a research study",
};

export function renderHistory(root: HTMLElement, session: Session): void {
  const snapshot = session.snapshot;
  if (snapshot === null) return;
  const purposeOf = new Map(snapshot.inquiries.map((i) => [toHex(i.state.inquiry_id), i.state.purpose]));
  for (const g of [...snapshot.grants, ...snapshot.consents]) purposeOf.set(toHex(g.state.grant_id), g.state.purpose);
  const me = toHex(session.identity.public.signKey);
  const events = [...snapshot.events].sort((a, b) => Number(b.state.height - a.state.height) || b.fact.index - a.fact.index);
  const items = events.map((e) => {
    const actorKey = toHex(e.state.actor);
    const institution = session.ledger.institutions.get(actorKey);
    const who = institution ? `${institution.name} (${institution.role})` : actorKey === me ? "You" : "Your representative";
    const purpose = purposeOf.get(toHex(e.state.subject_id));
    const records = e.state.record_ids.length ? `, ${e.state.record_ids.length} record(s)` : "";
    return h(
      "li",
      { class: `event event-${e.state.event}` },
      h("time", {}, formatTime(e.state.time_ms)),
      " ",
      h("strong", {}, who),
      ` ${EVENT_WORDS[e.state.event] ?? e.state.event}${records}${purpose ? ` (${PURPOSE_WORDS[purpose] ?? purpose})` : ""}. `,
      verifiedMark(e.fact.height),
    );
  });
  fill(
    root,
    refusalList(snapshot.refused, ["history event"], session.nodeName),
    items.length === 0 ? h("p", {}, "Nothing yet.") : null,
    h("ol", { class: "history", reversed: true }, ...items),
  );
}

export function renderRepresentatives(root: HTMLElement, session: Session, hooks: ConsentHooks): void {
  const snapshot = session.snapshot;
  if (snapshot === null) return;
  const chainId = session.ledger.chainId;
  const items = snapshot.representatives.map((key) => {
    const remove = h("button", { type: "button" }, "Remove");
    remove.addEventListener("click", () =>
      hooks.act("Removing the representative", () => session.submit(buildRemoveRepresentative(session.identity, session.patientId, key, { chainId }))),
    );
    return h("li", {}, h("code", {}, toHex(key)), " ", remove);
  });
  const input = h("input", { id: "representative-key", name: "key", required: true, pattern: "[0-9a-f]{64}", autocomplete: "off", spellcheck: "false" });
  const form = h(
    "form",
    { id: "representative-form" },
    h("label", { for: "representative-key" }, "Representative's signing key (64 hex characters, from their own medledger identity)"),
    input,
    h("button", { type: "submit" }, "Add representative"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = input.value.trim().toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(key)) return hooks.act("Adding a representative", () => Promise.reject(new Error("a signing key is 64 hex characters")));
    hooks.act("Adding the representative", () => session.submit(buildAddRepresentative(session.identity, session.patientId, fromHex(key), { chainId })));
  });
  fill(
    root,
    refusalList(snapshot.refused, ["representatives"], session.nodeName),
    h("p", {}, "A representative acts for you with their own key: they can approve, deny and revoke, and read your history."),
    items.length === 0 ? h("p", {}, "You have no representative.") : h("ul", {}, ...items),
    form,
  );
}
