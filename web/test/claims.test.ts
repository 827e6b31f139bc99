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
  openClaim,
  openClaimResponse,
} from "../src/claims.js";
import { type ClaimDecision, ClaimDecisionSchema, type ClaimState, ClaimStateSchema, STATE_VALUE_BYTES_MAX } from "../src/wire.js";
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
