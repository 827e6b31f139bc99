import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { buildAuthorization, computeRequestSigningInput } from "../src/auth.js";
import { fromHex, toHex } from "../src/bytes.js";
import { loadSodium } from "../src/crypto.js";
import { identity, vectors } from "./vectors.js";

await loadSodium();

describe("a patient's signed read is what health/auth.py builds", () => {
  for (const v of vectors.request_auth) {
    it(`${v.signer} ${v.method} ${v.target.slice(0, 40)}`, () => {
      const signer = identity(v.signer);
      const parts = {
        chainId: vectors.chain_id,
        challenge: fromHex(v.challenge),
        method: v.method,
        target: v.target,
        timeMs: BigInt(v.time_ms),
        patientId: fromHex(v.patient_id),
      };
      assert.equal(toHex(computeRequestSigningInput({ ...parts, key: signer.public.signKey })), v.signing_input);
      assert.equal(buildAuthorization(signer, parts), v.authorization);
    });
  }
});
