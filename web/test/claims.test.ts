import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { fromHex } from "../src/bytes.js";
import { decode } from "../src/codec.js";
import { loadSodium } from "../src/crypto.js";
import {
  ClaimUnreadableError,
  describeClaim,
  describeResponse,
  isResponseAgreeing,
  isSameEnvelope,
  computeCurrentLabels,
  makeConsent,
  openClaim,
  openClaimResponse,
  selectConsentRecords,
} from "../src/claims.js";
import { type ClaimDecision, ClaimDecisionSchema, type RecordState, RecordStateSchema, type ClaimState, ClaimStateSchema, STATE_VALUE_BYTES_MAX } from "../src/wire.js";
import { identity, vectors } from "./vectors.js";

await loadSodium();
const claim = decode(ClaimStateSchema, fromHex(vectors.claims.encoded), STATE_VALUE_BYTES_MAX) as ClaimState;
const decisions = vectors.claims.decisions.map((d) => decode(ClaimDecisionSchema, fromHex(d.encoded), STATE_VALUE_BYTES_MAX) as ClaimDecision);

describe("a claim and its decisions, opened as health/claim_seal.py opens them", () => {
  it("opens the Claim Python sealed, for the patient, the clinic and the insurer, with its text as written", () => {
    for (const reader of ["patient", "clinic", "insurer"]) assert.equal(openClaim(claim, identity(reader)).json, vectors.claims.text);
    const shown = describeClaim(openClaim(claim, identity("patient")).resource);
    // "120.0" as written where the engine gives JSON.parse's reviver the source text (browsers; Node 21+).
    assert.match(shown.total ?? "", /^120(\.0)? EUR$/);
    assert.match(shown.items.join(), /^Consultation — suivi: 120(\.0)? EUR$/);
  });

  it("does not open for another key, nor moved to another version or encounter", () => {
    assert.throws(() => openClaim(claim, identity("hospital")), ClaimUnreadableError);
    assert.throws(() => openClaim({ ...claim, version: 1n }, identity("patient")), ClaimUnreadableError);
    assert.throws(() => openClaim({ ...claim, encounter_id: new Uint8Array(32) }, identity("patient")), ClaimUnreadableError);
  });

  it("opens each decision, checks it agrees with its outcome, and says why in the insurer's words", () => {
    const reasons = decisions.map((d, i) => {
      const opened = openClaimResponse(d, identity("patient"));
      assert.equal(opened.json, vectors.claims.decisions[i]!.text);
      return [d.outcome, describeResponse(opened.resource)];
    });
    assert.deepEqual(reasons, [
      ["pended", ["Envoyez le bilan HbA1c"]],
      ["denied", ["Not covered by the policy"]],
      ["approved", ["Settled in full"]],
    ]);
  });

  it("refuses a response whose outcome on the ledger says otherwise, as Python refuses it", () => {
    const wrong = decode(ClaimDecisionSchema, fromHex(vectors.claims.disagreeing.encoded), STATE_VALUE_BYTES_MAX) as ClaimDecision;
    assert.throws(() => openClaimResponse(wrong, identity("patient")), /says otherwise/);
    assert.throws(() => openClaimResponse({ ...decisions[0]!, version: 2n }, identity("patient")), ClaimUnreadableError);
    assert.ok(!isResponseAgreeing({ outcome: "complete", error: [{}] }, "approved"));
    assert.ok(!isResponseAgreeing({ outcome: "queued" }, "pended"));
    assert.ok(!isResponseAgreeing({ outcome: "complete" }, "open"));
  });

  it("compares envelopes byte for byte", () => {
    assert.ok(isSameEnvelope(claim.sealed_claim, claim.sealed_claim));
    assert.ok(!isSameEnvelope(claim.sealed_claim, decisions[0]!.sealed_response));
  });
});

describe("the records a new consent re-seals (PatientClient.preview_consent_records)", () => {
  const base = decode(RecordStateSchema, fromHex(vectors.records[0]!.encoded), STATE_VALUE_BYTES_MAX) as RecordState;
  const id = (n: number) => Uint8Array.from({ length: 32 }, () => n);
  const patient = identity("patient");
  const insurer = identity("insurer");
  const clinic = identity("clinic");
  const v1: RecordState = { ...base, record_id: id(1), superseded_by: id(2) };
  const v2: RecordState = { ...base, record_id: id(2), supersedes: id(1) };
  const other: RecordState = { ...base, record_id: id(3), record_type: "Condition" };
  const sealedForInsurer: RecordState = {
    ...base,
    record_id: id(4),
    envelope: { ...base.envelope, wrapped_keys: [...base.envelope.wrapped_keys, { reader: insurer.public.encKey, sealed_key: new Uint8Array(80) }] },
  };
  const all = [v1, v2, other, sealedForInsurer];
  const byId = new Map(all.map((r) => [Array.from(r.record_id, (b) => b.toString(16).padStart(2, "0")).join(""), r]));
  // The correction (v2) adds HIV; the first version is judged by its latest version's labels.
  const txLabels = (rid: Uint8Array) => (rid[0] === 2 ? ["HIV"] : []);
  const labels = (r: RecordState) => computeCurrentLabels(r, byId, txLabels);

  it("gives every version the labels of its latest version, and none when a later version is unknown", () => {
    assert.deepEqual(labels(v1), ["HIV"]);
    assert.deepEqual(labels(v2), ["HIV"]);
    assert.deepEqual(labels(other), []);
    assert.equal(computeCurrentLabels(v1, new Map(), txLabels), null);
  });

  it("re-seals the types and authors named, a labelled record only with its label named, never one already sealed for the insurer", () => {
    const consent = (types: string[], named: string[] = []) =>
      makeConsent(base.patient_id, insurer.public.signKey, { recordTypes: types, authors: [clinic.public.signKey], labels: named, expiresMs: 1n });
    const pick = (c: ReturnType<typeof consent>) => selectConsentRecords(all, { ...c, to_ms: 2n ** 64n - 1n }, insurer.public.encKey, patient.public.encKey, labels).map((r) => r.record_id[0]);
    assert.deepEqual(pick(consent(["Observation"])), []);
    assert.deepEqual(pick(consent(["Observation"], ["HIV"])), [1, 2]);
    assert.deepEqual(pick(consent(["Observation", "Condition"])), [3]);
    const byAnother = makeConsent(base.patient_id, insurer.public.signKey, { recordTypes: ["Condition"], authors: [identity("hospital").public.signKey], expiresMs: 1n });
    assert.deepEqual(selectConsentRecords(all, byAnother, insurer.public.encKey, patient.public.encKey, labels), []);
    const window = { ...consent(["Condition"]), from_ms: base.time_ms + 1n, to_ms: 2n ** 64n - 1n };
    assert.deepEqual(selectConsentRecords(all, window, insurer.public.encKey, patient.public.encKey, labels), []);
  });
});
