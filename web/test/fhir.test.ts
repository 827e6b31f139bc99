import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { computeChart, computeExportBundle, computeSeries, conceptText, describeRecord, parseResourceText, referenceRange } from "../src/fhir.js";
import { isCovered, selectGrantRecords } from "../src/scope.js";
import type { Scope } from "../src/wire.js";

const glucose = (value: number, day: string, extra: Record<string, unknown> = {}) => ({
  resourceType: "Observation",
  status: "final",
  code: { coding: [{ system: "http://loinc.org", code: "2339-0", display: "Glucose" }] },
  effectiveDateTime: `${day}T08:30:00Z`,
  valueQuantity: { value, unit: "mmol/L", system: "http://unitsofmeasure.org", code: "mmol/L" },
  ...extra,
});

describe("records for a person", () => {
  it("shows a lab result's value, unit, range and date as written", () => {
    const view = describeRecord(glucose(5.4, "2024-01-05", { referenceRange: [{ low: { value: 3.9, unit: "mmol/L" }, high: { value: 5.6, unit: "mmol/L" } }] }));
    assert.equal(view.kind, "observation");
    assert.equal(view.title, "Glucose");
    assert.deepEqual(view.value, { value: 5.4, text: "5.4", unit: "mmol/L" });
    assert.equal(view.range, "3.9–5.6 mmol/L");
    assert.equal(view.date, "2024-01-05T08:30:00Z");
  });

  it("keeps a value's digits as written where the engine gives a number's source text", () => {
    const resource = parseResourceText('{"resourceType":"Observation","valueQuantity":{"value":6.0,"unit":"mmol/L"}}');
    const shown = describeRecord(resource).value!;
    const hasSource = (JSON.parse as (t: string, r: (k: string, v: unknown, c?: { source?: string }) => unknown) => unknown)(
      "1.0",
      (_k, v, c) => c?.source ?? v,
    ) === "1.0";
    assert.equal(shown.text, hasSource ? "6.0" : "6");
    assert.equal(shown.value, 6);
  });

  it("says one-sided and textual ranges, and codes without a display", () => {
    assert.equal(referenceRange({ referenceRange: [{ high: { value: 5.2, unit: "mmol/L" } }] }), "below 5.2 mmol/L");
    assert.equal(referenceRange({ referenceRange: [{ text: "negative" }] }), "negative");
    assert.equal(conceptText({ coding: [{ system: "http://hl7.org/fhir/sid/cvx", code: "140" }] }), "140 (CVX)");
    assert.equal(conceptText("not a concept"), undefined);
  });

  it("describes immunizations, conditions and documents with inline attachments", () => {
    const imm = describeRecord({ resourceType: "Immunization", status: "completed", vaccineCode: { coding: [{ code: "140", display: "Influenza" }] }, occurrenceDateTime: "2024-03-01", lotNumber: "SYN-1" });
    assert.deepEqual([imm.kind, imm.title, imm.date, imm.details], ["immunization", "Influenza", "2024-03-01", ["Status: completed", "Lot: SYN-1"]]);
    const clinical = { coding: [{ system: "http://terminology.hl7.org/CodeSystem/condition-clinical", code: "active" }] };
    const cond = describeRecord({ resourceType: "Condition", code: { text: "Diabetes" }, clinicalStatus: clinical });
    assert.deepEqual([cond.kind, cond.title, cond.details], ["condition", "Diabetes", ["Clinical status: active"]]);
    const doc = describeRecord({ resourceType: "DocumentReference", status: "current", description: "Discharge letter", content: [{ attachment: { contentType: "text/plain", data: "aGk=", title: "letter.txt" } }] });
    assert.deepEqual(doc.attachments, [{ title: "letter.txt", contentType: "text/plain", data: "aGk=" }]);
  });

  it("groups a repeated measurement into a series over time, one unit per series", () => {
    const series = computeSeries([
      glucose(7.1, "2024-05-01"),
      glucose(5.4, "2024-01-05"),
      { ...glucose(99, "2024-02-01"), valueQuantity: { value: 99, unit: "mg/dL" } },
      glucose(6.0, "not a date"),
      { resourceType: "Condition" },
    ]);
    assert.equal(series.length, 1);
    assert.deepEqual(series[0]!.points.map((p) => p.value), [5.4, 7.1]);
    const chart = computeChart(series[0]!, 100, 50, 10);
    assert.deepEqual(chart.points, [{ x: 10, y: 40 }, { x: 90, y: 10 }]);
    assert.deepEqual([chart.min, chart.max], [5.4, 7.1]);
  });

  it("exports the records as a FHIR R4 collection Bundle, each resource as written", () => {
    const json = '{"resourceType":"Observation","valueQuantity":{"value":6.0,"unit":"mmol/L"}}';
    const text = computeExportBundle([{ id: "ab".repeat(32), json }], "2026-01-01T00:00:00Z");
    assert.ok(text.includes(`"resource":${json}`), "the resource as written, digits and all");
    const bundle = JSON.parse(text) as Record<string, unknown>;
    assert.equal(bundle["resourceType"], "Bundle");
    assert.equal(bundle["type"], "collection");
    assert.deepEqual(bundle["entry"], [{ fullUrl: `urn:medledger:record:${"ab".repeat(32)}`, resource: JSON.parse(json) }]);
  });
});

describe("what a grant covers, and narrowing it", () => {
  const open: Scope = { record_types: [], record_ids: [], from_ms: 0n, to_ms: 2n ** 64n - 1n };
  const rec = (id: number, type: string, time: bigint) => ({ state: { record_id: new Uint8Array(32).fill(id), record_type: type, time_ms: time } });
  const records = [rec(3, "Observation", 100n), rec(1, "Immunization", 200n), rec(2, "Observation", 300n)];

  it("covers as health/types.py is_covered does", () => {
    assert.ok(isCovered(open, records[0]!.state));
    assert.ok(!isCovered({ ...open, from_ms: 101n }, records[0]!.state));
    assert.ok(isCovered({ ...open, record_types: ["Observation"] }, records[0]!.state));
    assert.ok(!isCovered({ ...open, record_types: ["Observation"] }, records[1]!.state));
    assert.ok(isCovered({ ...open, record_types: ["Observation"], record_ids: [new Uint8Array(32).fill(1)] }, records[1]!.state));
  });

  it("re-seals only what the patient kept, sorted by record id", () => {
    assert.deepEqual(selectGrantRecords(open, records, null).map((r) => r.state.record_id[0]), [1, 2, 3]);
    const fewerTypes = { recordTypes: new Set(["Observation"]), fromMs: 0n, toMs: 2n ** 64n - 1n };
    assert.deepEqual(selectGrantRecords(open, records, fewerTypes).map((r) => r.state.record_id[0]), [2, 3]);
    const shorter = { recordTypes: null, fromMs: 150n, toMs: 250n };
    assert.deepEqual(selectGrantRecords(open, records, shorter).map((r) => r.state.record_id[0]), [1]);
    // Narrowing never widens: a type outside the inquiry's scope stays out.
    const scoped = { ...open, record_types: ["Immunization"] };
    assert.deepEqual(selectGrantRecords(scoped, records, fewerTypes), []);
  });
});

describe("no resource of another type inside a record (fhir.validate_content_types)", () => {
  it("accepts context and the record's own type, and refuses anything else, naming where", async () => {
    const { findForeignContent } = await import("../src/records.js");
    const imm = (contained: unknown) => ({ resourceType: "Immunization", contained });
    assert.equal(findForeignContent({ resourceType: "Immunization" }, "Immunization"), null);
    assert.equal(findForeignContent(imm([{ resourceType: "Practitioner" }, { resourceType: "Immunization" }]), "Immunization"), null);
    assert.equal(findForeignContent(imm([{ resourceType: "Condition" }]), "Immunization"), "Immunization.contained[0]");
    assert.equal(findForeignContent(imm({}), "Immunization"), "Immunization.contained");
    assert.equal(findForeignContent(imm([{ resourceType: "Organization", contained: [] }]), "Immunization"), "Immunization.contained[0].contained");
    const bundle = { resourceType: "Bundle", entry: [{ resource: { resourceType: "Observation", contained: [{ resourceType: "Condition" }] } }] };
    assert.equal(findForeignContent(bundle, "Bundle"), "Bundle.entry[0].resource.contained[0]");
  });
});
