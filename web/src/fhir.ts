/**
 * FHIR R4 resources as a person reads them: what a record is (its code's display, or the code
 * itself), its value with its unit, its reference range, its date; a repeated measurement grouped
 * into a series over time; and the patient's records as a FHIR R4 `Bundle` (type `collection`)
 * for export. Pure functions over the decrypted JSON; nothing here touches the DOM. Every string
 * returned is shown with `textContent` only.
 */

type Json = Record<string, unknown>;

/** The text each number had in the record's JSON, by the object holding it (a value as written: "6.0", not 6). */
const numberSources = new WeakMap<object, Map<string, string>>();

/**
 * Parse a record's JSON keeping each number's text as written (FHIR decimals carry their
 * precision in their digits). Browsers give a reviver each value's source text; where one does not
 * (an older engine), the number's shortest form is used.
 */
export function parseResourceText(text: string): Json {
  const parsed: unknown = JSON.parse(text, function (this: object, key: string, value: unknown, context?: { source?: string }) {
    if (typeof value === "number" && typeof context?.source === "string") {
      const known = numberSources.get(this) ?? new Map<string, string>();
      known.set(key, context.source);
      numberSources.set(this, known);
    }
    return value;
  });
  if (!isObject(parsed)) throw new SyntaxError("a record is a JSON object");
  return parsed;
}

/** The number at `holder[key]` as the record wrote it. */
export function numberText(holder: Json, key: string): string | undefined {
  const value = holder[key];
  if (typeof value !== "number" || !Number.isFinite(value)) return undefined;
  return numberSources.get(holder)?.get(key) ?? String(value);
}

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const str = (v: unknown): string | undefined => (typeof v === "string" && v.trim() !== "" ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

/** A CodeableConcept in words: its text, else the first coding's display, else its code. */
export function conceptText(concept: unknown): string | undefined {
  if (!isObject(concept)) return undefined;
  const text = str(concept["text"]);
  if (text !== undefined) return text;
  for (const coding of list(concept["coding"])) if (isObject(coding) && str(coding["display"])) return str(coding["display"]);
  for (const coding of list(concept["coding"])) {
    if (!isObject(coding) || str(coding["code"]) === undefined) continue;
    const system = str(coding["system"]);
    // HL7's own code systems (statuses and the like) are words already: "active", not a URL.
    if (system === undefined || system.startsWith("http://terminology.hl7.org/CodeSystem/")) return String(coding["code"]);
    return `${String(coding["code"])} (${shortSystem(system)})`;
  }
  return undefined;
}

const SYSTEMS: Readonly<Record<string, string>> = {
  "http://loinc.org": "LOINC",
  "http://snomed.info/sct": "SNOMED CT",
  "http://hl7.org/fhir/sid/cvx": "CVX",
  "http://hl7.org/fhir/sid/icd-10": "ICD-10",
  "http://hl7.org/fhir/sid/icd-10-cm": "ICD-10-CM",
};
const shortSystem = (system: string): string => SYSTEMS[system] ?? system;

/** The key of a concept's first coding (`system|code`), to group a repeated measurement. */
export function conceptKey(concept: unknown): string | undefined {
  if (!isObject(concept)) return undefined;
  for (const coding of list(concept["coding"]))
    if (isObject(coding) && str(coding["code"]) !== undefined) return `${str(coding["system"]) ?? ""}|${String(coding["code"])}`;
  return str(concept["text"]);
}

export interface Quantity {
  readonly value: number;
  /** The value as the record wrote it. */
  readonly text: string;
  readonly unit: string;
}

export function quantity(q: unknown): Quantity | undefined {
  if (!isObject(q)) return undefined;
  const value = num(q["value"]);
  if (value === undefined) return undefined;
  return { value, text: numberText(q, "value") ?? String(value), unit: str(q["unit"]) ?? str(q["code"]) ?? "" };
}

export const formatQuantity = (q: Quantity): string => (q.unit ? `${q.text} ${q.unit}` : q.text);

/** An Observation's reference range in words ("4.0–6.0 mmol/L", "below 5.2 mmol/L", or its text). */
export function referenceRange(resource: Json): string | undefined {
  const range = list(resource["referenceRange"])[0];
  if (!isObject(range)) return undefined;
  const low = quantity(range["low"]);
  const high = quantity(range["high"]);
  const unit = high?.unit || low?.unit || "";
  const withUnit = (s: string) => (unit ? `${s} ${unit}` : s);
  if (low && high) return withUnit(`${low.text}–${high.text}`);
  if (high) return withUnit(`below ${high.text}`);
  if (low) return withUnit(`above ${low.text}`);
  return str(range["text"]);
}

export interface RecordView {
  readonly kind: "observation" | "immunization" | "condition" | "document" | "other";
  readonly title: string;
  /** When it happened (clinical time, ISO text as written), if the record says. */
  readonly date?: string;
  readonly value?: Quantity;
  /** A value that is not a quantity (a string, a coded answer). */
  readonly valueText?: string;
  readonly range?: string;
  /** Further lines: status, lot number, interpretation… */
  readonly details: readonly string[];
  readonly attachments: readonly Attachment[];
}

export interface Attachment {
  readonly title: string;
  readonly contentType: string;
  /** Inline content (base64), when the record carries it. */
  readonly data?: string;
  /** A reference (e.g. a ledger blob, `urn:medledger:blob:<id>`). */
  readonly url?: string;
  readonly size?: number;
}

function attachmentsOf(resource: Json): Attachment[] {
  const found: Attachment[] = [];
  for (const content of list(resource["content"])) {
    const a = isObject(content) ? content["attachment"] : undefined;
    if (!isObject(a)) continue;
    const data = str(a["data"]);
    const url = str(a["url"]);
    const size = num(a["size"]);
    found.push({
      title: str(a["title"]) ?? "attachment",
      contentType: str(a["contentType"]) ?? "application/octet-stream",
      ...(data !== undefined ? { data } : {}),
      ...(url !== undefined ? { url } : {}),
      ...(size !== undefined ? { size } : {}),
    });
  }
  return found;
}

export function describeRecord(resource: Json): RecordView {
  const type = String(resource["resourceType"]);
  const status = str(resource["status"]);
  switch (type) {
    case "Observation": {
      const details: string[] = [];
      const interpretation = conceptText(list(resource["interpretation"])[0]);
      if (interpretation) details.push(`Interpretation: ${interpretation}`);
      if (status) details.push(`Status: ${status}`);
      const valueText = str(resource["valueString"]) ?? conceptText(resource["valueCodeableConcept"]);
      const value = quantity(resource["valueQuantity"]);
      const date = str(resource["effectiveDateTime"]) ?? str(resource["issued"]);
      const range = referenceRange(resource);
      return {
        kind: "observation",
        title: conceptText(resource["code"]) ?? "Observation",
        ...(date !== undefined ? { date } : {}),
        ...(value !== undefined ? { value } : {}),
        ...(valueText !== undefined ? { valueText } : {}),
        ...(range !== undefined ? { range } : {}),
        details,
        attachments: [],
      };
    }
    case "Immunization": {
      const details: string[] = [];
      if (status) details.push(`Status: ${status}`);
      const lot = str(resource["lotNumber"]);
      if (lot) details.push(`Lot: ${lot}`);
      const date = str(resource["occurrenceDateTime"]) ?? str(resource["recorded"]);
      return {
        kind: "immunization",
        title: conceptText(resource["vaccineCode"]) ?? "Immunization",
        ...(date !== undefined ? { date } : {}),
        details,
        attachments: [],
      };
    }
    case "Condition": {
      const details: string[] = [];
      const clinical = conceptText(resource["clinicalStatus"]);
      if (clinical) details.push(`Clinical status: ${clinical}`);
      const verification = conceptText(resource["verificationStatus"]);
      if (verification) details.push(`Verification: ${verification}`);
      const date = str(resource["onsetDateTime"]) ?? str(resource["recordedDate"]);
      return {
        kind: "condition",
        title: conceptText(resource["code"]) ?? "Condition",
        ...(date !== undefined ? { date } : {}),
        details,
        attachments: [],
      };
    }
    case "DocumentReference": {
      const details: string[] = [];
      if (status) details.push(`Status: ${status}`);
      const date = str(resource["date"]);
      return {
        kind: "document",
        title: str(resource["description"]) ?? conceptText(resource["type"]) ?? "Document",
        ...(date !== undefined ? { date } : {}),
        details,
        attachments: attachmentsOf(resource),
      };
    }
    default: {
      const date = str(resource["effectiveDateTime"]) ?? str(resource["date"]) ?? str(resource["recordedDate"]);
      return {
        kind: "other",
        title: conceptText(resource["code"]) ?? type,
        ...(date !== undefined ? { date } : {}),
        details: status ? [`Status: ${status}`] : [],
        attachments: [],
      };
    }
  }
}

export interface SeriesPoint {
  readonly timeMs: number;
  readonly value: number;
  readonly label: string;
}

export interface Series {
  readonly key: string;
  readonly title: string;
  readonly unit: string;
  readonly points: readonly SeriesPoint[];
}

/**
 * Observations of one code in one unit, with a quantity and a date, two or more of them: each is a
 * series over time, oldest first. (A unit change starts another series: values are never
 * converted.)
 */
export function computeSeries(resources: readonly Json[]): Series[] {
  const groups = new Map<string, { title: string; unit: string; points: SeriesPoint[] }>();
  for (const r of resources) {
    if (r["resourceType"] !== "Observation") continue;
    const q = quantity(r["valueQuantity"]);
    const code = conceptKey(r["code"]);
    const date = str(r["effectiveDateTime"]) ?? str(r["issued"]);
    const timeMs = date === undefined ? NaN : Date.parse(date);
    if (q === undefined || code === undefined || Number.isNaN(timeMs)) continue;
    const key = `${code}\u0000${q.unit}`;
    const group = groups.get(key) ?? { title: conceptText(r["code"]) ?? code, unit: q.unit, points: [] };
    group.points.push({ timeMs, value: q.value, label: `${date}: ${formatQuantity(q)}` });
    groups.set(key, group);
  }
  return [...groups.entries()]
    .filter(([, g]) => g.points.length >= 2)
    .map(([key, g]) => ({ key, title: g.title, unit: g.unit, points: [...g.points].sort((a, b) => a.timeMs - b.timeMs) }));
}

export interface ChartGeometry {
  readonly points: readonly { x: number; y: number }[];
  readonly min: number;
  readonly max: number;
}

/** Where a series' points go in a `width`×`height` box with `pad` around (y grows downwards). */
export function computeChart(series: Series, width: number, height: number, pad: number): ChartGeometry {
  const values = series.points.map((p) => p.value);
  const times = series.points.map((p) => p.timeMs);
  const min = Math.min(...values);
  const max = Math.max(...values);
  const t0 = Math.min(...times);
  const t1 = Math.max(...times);
  const spanV = max - min || 1;
  const spanT = t1 - t0 || 1;
  const points = series.points.map((p) => ({
    x: pad + ((p.timeMs - t0) / spanT) * (width - 2 * pad),
    y: max === min ? height / 2 : pad + (1 - (p.value - min) / spanV) * (height - 2 * pad),
  }));
  return { points, min, max };
}

/**
 * The records as one FHIR R4 Bundle of type `collection`, as JSON text: each resource is spliced
 * in exactly as its author wrote it (its JSON text opened and verified on this device), so no
 * digit of a decimal is lost to a re-serialisation.
 */
export function computeExportBundle(resources: readonly { id: string; json: string }[], timestamp: string): string {
  const entries = resources.map(({ id, json }) => `{"fullUrl":${JSON.stringify(`urn:medledger:record:${id}`)},"resource":${json}}`);
  return `{"resourceType":"Bundle","type":"collection","timestamp":${JSON.stringify(timestamp)},"entry":[${entries.join(",")}]}\n`;
}
