/**
 * Records: the patient's verified, decrypted records for a person to read. Lab results with value,
 * unit and reference range, a small chart for each measurement taken more than once, then
 * immunizations, conditions, documents (an inline attachment downloads) and other records. A
 * corrected record shows its current version with the earlier ones below it. Records that did not
 * verify are not shown; the screen says how many and why.
 */

import { fromBase64 } from "../api.js";
import { parseBlobUrl } from "../attachments.js";
import { toHex, utf8Strict } from "../bytes.js";
import { download, fill, formatTime, h, svg, verifiedMark } from "../dom.js";
import { computeChart, computeExportBundle, computeSeries, describeRecord, parseResourceText, formatQuantity, type RecordView, type Series } from "../fhir.js";
import type { Refusal, Snapshot, VerifiedRecord } from "../session.js";
import { RECORD_TYPE_WORDS } from "../wire.js";

const parsed = new WeakMap<VerifiedRecord, Record<string, unknown>>();

/** The record's resource parsed from its JSON as written (numbers keep their digits). */
function resourceOf(record: VerifiedRecord): Record<string, unknown> {
  let resource = parsed.get(record);
  if (resource === undefined) {
    resource = parseResourceText(utf8Strict.decode(record.opened.json));
    parsed.set(record, resource);
  }
  return resource;
}

/** A current record and its earlier versions (newest first). */
export interface RecordChain {
  readonly current: VerifiedRecord;
  readonly earlier: readonly VerifiedRecord[];
}

/** Current versions, each with the verified versions it corrects. */
export function computeChains(records: readonly VerifiedRecord[]): RecordChain[] {
  const byId = new Map(records.map((r) => [toHex(r.state.record_id), r]));
  const chains: RecordChain[] = [];
  for (const record of records) {
    if (record.state.superseded_by.length && byId.has(toHex(record.state.superseded_by))) continue;
    const earlier: VerifiedRecord[] = [];
    let at = record;
    const seen = new Set<string>();
    while (at.state.supersedes.length) {
      const previous = byId.get(toHex(at.state.supersedes));
      if (previous === undefined || seen.has(toHex(previous.state.record_id))) break;
      seen.add(toHex(previous.state.record_id));
      earlier.push(previous);
      at = previous;
    }
    chains.push({ current: record, earlier });
  }
  return chains;
}

/** What the screen asks of the session: an attachment fetched, verified and opened. */
export type ReadAttachment = (record: VerifiedRecord, blobId: Uint8Array) => Promise<Uint8Array>;
/** Ask the record's author to correct it (a tx signed in the page). */
export type AskCorrection = (record: VerifiedRecord, text: string) => void;

function correctionForm(record: VerifiedRecord, ask: AskCorrection): HTMLElement {
  const id = `amend-${toHex(record.state.record_id).slice(0, 16)}`;
  const input = h("input", { id, name: "text", required: true, maxlength: "2000", autocomplete: "off" });
  const form = h(
    "form",
    { class: "amend" },
    h("label", { for: id }, "What is wrong? (only you and the record's author can read it)"),
    input,
    h("button", { type: "submit" }, "Ask for a correction"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    ask(record, input.value);
  });
  return h("details", { class: "ask-correction", id: `${id}-details` }, h("summary", {}, "Something wrong? Ask for a correction"), form);
}

function viewItem(view: RecordView, record: VerifiedRecord, author: string, read: ReadAttachment, say: (m: string, e?: boolean) => void): HTMLElement {
  const head = h("p", { class: "record-title" }, h("strong", {}, view.title));
  const value = view.value ? h("p", { class: "record-value" }, formatQuantity(view.value)) : view.valueText ? h("p", { class: "record-value" }, view.valueText) : null;
  const range = view.range ? h("p", {}, `Reference range: ${view.range}`) : null;
  const date = view.date ? h("p", {}, `Date: ${view.date}`) : null;
  const details = view.details.map((d) => h("p", {}, d));
  const attachments = view.attachments.map((a) => {
    if (a.data !== undefined) {
      const button = h("button", { type: "button" }, `Download ${a.title}`);
      button.addEventListener("click", () => download(fromBase64(a.data ?? "").slice().buffer, a.title, a.contentType));
      return h("p", {}, button);
    }
    const blobId = a.url === undefined ? null : parseBlobUrl(a.url);
    if (blobId === null) return h("p", {}, `${a.title} (${a.contentType}): held elsewhere, not by this network`);
    const button = h("button", { type: "button" }, `Download ${a.title}`);
    button.addEventListener("click", () => {
      say(`Fetching ${a.title}: checked against the ledger and decrypted on this device…`);
      read(record, blobId)
        .then((data) => {
          download(data.slice().buffer, a.title, a.contentType);
          say(`${a.title}: verified and decrypted on this device.`);
        })
        .catch((exc: unknown) => say(exc instanceof Error ? exc.message : "The attachment could not be opened.", true));
    });
    return h("p", {}, button);
  });
  const source = h("p", { class: "note" }, `From ${author}, recorded ${formatTime(record.state.time_ms)}. `, verifiedMark(record.fact.height));
  return h("div", { class: "record-body" }, head, value, range, date, ...details, ...attachments, source);
}

function chart(series: Series): HTMLElement {
  const width = 320;
  const height = 120;
  const pad = 12;
  const geometry = computeChart(series, width, height, pad);
  const line = svg("polyline", {
    points: geometry.points.map((p) => `${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" "),
    fill: "none",
    stroke: "currentColor",
    "stroke-width": 2,
  });
  const dots = geometry.points.map((p, i) =>
    svg("circle", { cx: p.x.toFixed(1), cy: p.y.toFixed(1), r: 4, fill: "currentColor" }, svg("title", {}, series.points[i]!.label)),
  );
  const label = `${series.title} over time: ${series.points.map((p) => p.label).join("; ")}`;
  const picture = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "chart" }, svg("title", {}, label), line, ...dots);
  return h(
    "figure",
    { class: "series" },
    picture,
    h("figcaption", {}, `${series.title} (${series.unit}): ${series.points.length} measurements, from ${geometry.min} to ${geometry.max} ${series.unit}`),
  );
}

const GROUPS: readonly [RecordView["kind"], string][] = [
  ["observation", "Lab results and measurements"],
  ["immunization", "Immunizations"],
  ["condition", "Conditions"],
  ["document", "Documents"],
  ["other", "Other records"],
];

export function refusalList(refused: readonly Refusal[], kinds: readonly string[], node: string): HTMLElement | null {
  const mine = refused.filter((r) => kinds.includes(r.what));
  if (mine.length === 0) return null;
  return h(
    "div",
    { class: "refused", role: "alert" },
    h("p", {}, `Not shown: ${mine.length} item(s) the node at ${node} served could not be verified against the ledger, so they are not believed.`),
    h("ul", {}, ...mine.map((r) => h("li", {}, `${r.what} ${r.id.slice(0, 16)}…: ${r.why}`))),
  );
}

export function renderRecords(
  root: HTMLElement,
  snapshot: Snapshot,
  authorName: (key: Uint8Array) => string,
  node: string,
  read: ReadAttachment,
  say: (message: string, isError?: boolean) => void,
  ask: AskCorrection,
): void {
  const chains = computeChains(snapshot.records);
  const sections: HTMLElement[] = [];
  const current = chains.map((c) => resourceOf(c.current));
  for (const [kind, title] of GROUPS) {
    // Newest first, by the date the record gives (as written, ISO 8601), else when it was recorded.
    const when = (c: RecordChain) => describeRecord(resourceOf(c.current)).date ?? new Date(Number(c.current.state.time_ms)).toISOString();
    const mine = chains
      .filter((c) => describeRecord(resourceOf(c.current)).kind === kind)
      .sort((a, b) => (when(a) < when(b) ? 1 : when(a) > when(b) ? -1 : 0));
    if (mine.length === 0) continue;
    const items = mine.map((c) => {
      const view = describeRecord(resourceOf(c.current));
      const body = viewItem(view, c.current, authorName(c.current.state.author), read, say);
      const versions = c.earlier.length
        ? h(
            "details",
            { class: "versions", id: `versions-${toHex(c.current.state.record_id).slice(0, 16)}` },
            h("summary", {}, `Corrected: ${c.earlier.length} earlier version(s)`),
            ...c.earlier.map((e) => viewItem(describeRecord(resourceOf(e)), e, authorName(e.state.author), read, say)),
          )
        : null;
      return h(
        "li",
        { class: `record record-${kind}`, "data-record-id": toHex(c.current.state.record_id) },
        body,
        versions,
        correctionForm(c.current, ask),
      );
    });
    const charts = kind === "observation" ? computeSeries(current).map(chart) : [];
    sections.push(h("section", { "aria-label": title }, h("h3", {}, title), ...charts, h("ul", { class: "records" }, ...items)));
  }
  fill(
    root,
    refusalList(snapshot.refused, ["record"], node),
    chains.length === 0 ? h("p", {}, "No records yet.") : null,
    ...sections,
  );
}

/** The current version of each record, decrypted, as a FHIR R4 Bundle file. */
export function exportBundle(snapshot: Snapshot): void {
  const chains = computeChains(snapshot.records);
  const bundle = computeExportBundle(
    chains.map((c) => ({ id: toHex(c.current.state.record_id), json: utf8Strict.decode(c.current.opened.json) })),
    new Date().toISOString(),
  );
  download(bundle, "medledger-records.fhir.json", "application/fhir+json");
}

export const typeWords = (type: string): string => RECORD_TYPE_WORDS[type] ?? type;
