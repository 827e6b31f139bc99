import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { equalBytes, fromHex, toHex } from "../src/bytes.js";
import { decode, encode } from "../src/codec.js";
import { loadSodium } from "../src/crypto.js";
import type { ChainTx } from "../src/ledger.js";
import { computeQueryCharge, computeQueryDigest, isMember, replayResearch, type ResearchInput } from "../src/research.js";
import {
  type Institution,
  KIND_JOIN_STUDY,
  KIND_LEAVE_STUDY,
  KIND_POST_ANSWER,
  KIND_REGISTER_STUDY,
  KIND_SUBMIT_QUERY,
  PostAnswerBodySchema,
  type RegisterStudyBody,
  RegisterStudyBodySchema,
  StudyMembershipBodySchema,
  type SubmitQueryBody,
  SubmitQueryBodySchema,
  TX_BYTES_MAX,
} from "../src/wire.js";
import { vectors } from "./vectors.js";

await loadSodium();

describe("queries, as health/research.py digests and charges them", () => {
  for (const [i, v] of vectors.research.queries.entries()) {
    it(`query ${i}: the same digest and charge`, () => {
      const body = decode(SubmitQueryBodySchema, fromHex(v.body), TX_BYTES_MAX);
      assert.equal(toHex(encode(SubmitQueryBodySchema, body)), v.body);
      assert.equal(toHex(computeQueryDigest(body)), v.digest);
      assert.deepEqual(computeQueryCharge(body).map(String), v.charge);
    });
  }
  it("decodes and re-encodes the study", () => {
    assert.equal(toHex(encode(RegisterStudyBodySchema, decode(RegisterStudyBodySchema, fromHex(vectors.research.study), TX_BYTES_MAX))), vectors.research.study);
  });
});

// A small chain of research txs, as the verified ledger hands them to the replay.
const key = (n: number) => Uint8Array.from({ length: 32 }, () => n);
const institute: Institution = { name: "institute", role: "research", sign_key: key(1), enc_key: key(11) };
const clinic: Institution = { name: "clinic", role: "clinic", sign_key: key(2), enc_key: key(12) };
const hospital: Institution = { name: "hospital", role: "hospital", sign_key: key(3), enc_key: key(13) };
const insurer: Institution = { name: "insurer", role: "insurer", sign_key: key(4), enc_key: key(14) };
const institutions = new Map([institute, clinic, hospital, insurer].map((i) => [toHex(i.sign_key), i]));
const patientKey = key(20);
const representative = key(21);
const stranger = key(22);
const patientId = key(30);
const otherPatient = key(31);

const study0: RegisterStudyBody = decode(RegisterStudyBodySchema, fromHex(vectors.research.study), TX_BYTES_MAX);
const T0 = 1_767_323_045_678n;
const study: RegisterStudyBody = { ...study0, expires_ms: T0 + 1_000_000n };

class Chain {
  readonly txs: ChainTx[] = [];
  #height = 1n;
  #count = 0;
  add(kind: string, sender: Uint8Array, body: Uint8Array, height?: bigint): ChainTx {
    if (height !== undefined) this.#height = height;
    const fact: ChainTx = {
      txId: key(100 + this.#count++),
      height: this.#height,
      index: this.txs.filter((t) => t.height === this.#height).length,
      timeMs: T0 + this.#height * 1000n,
      tx: { chain_id: "c", kind, sender, nonce: 0n, timestamp_ms: 0n, body, signature: new Uint8Array(64) },
    };
    this.txs.push(fact);
    return fact;
  }
  register(sender = institute.sign_key, body = study, height?: bigint): ChainTx {
    return this.add(KIND_REGISTER_STUDY, sender, encode(RegisterStudyBodySchema, body), height);
  }
  member(kind: string, studyId: Uint8Array, sender = patientKey, who = patientId, height?: bigint): ChainTx {
    return this.add(kind, sender, encode(StudyMembershipBodySchema, { study_id: studyId, patient_id: who }), height);
  }
  query(studyId: Uint8Array, height: bigint, changes: Partial<SubmitQueryBody> = {}, sender = institute.sign_key): ChainTx {
    const body: SubmitQueryBody = {
      study_id: studyId,
      template: "by-age",
      params: { code: "sct:44054006", grouping: "age_band", value_low_milli: 0n, value_high_milli: 0n },
      institutions: [clinic.sign_key, hospital.sign_key],
      epsilon_micro: 500_000n,
      delta_pico: 0n,
      as_of_height: height - 1n,
      ...changes,
    };
    return this.add(KIND_SUBMIT_QUERY, sender, encode(SubmitQueryBodySchema, body), height);
  }
  answer(queryId: Uint8Array, sender: Uint8Array): ChainTx {
    const cells = [{ label: "total", status: "noised", value_milli: 12_000n }];
    return this.add(KIND_POST_ANSWER, sender, encode(PostAnswerBodySchema, { query_id: queryId, cells, noise_scale_milli: 2_000n }));
  }
}

function replay(chain: Chain, representatives: (fact: ChainTx) => Uint8Array[] = () => []): ReturnType<typeof replayResearch> {
  const input: ResearchInput = {
    txs: chain.txs,
    institutions,
    patientId,
    actsForPatient: (sender, fact) => equalBytes(sender, patientKey) || representatives(fact).some((r) => equalBytes(r, sender)),
  };
  return replayResearch(input);
}

describe("the research replay of the verified chain", () => {
  it("marks the queries recorded while the patient was a member, rejoins included", () => {
    const chain = new Chain();
    const s = chain.register(undefined, undefined, 2n).txId;
    const before = chain.query(s, 3n).txId;
    chain.member(KIND_JOIN_STUDY, s, patientKey, patientId, 4n);
    const during = chain.query(s, 5n, { epsilon_micro: 400_000n }).txId;
    chain.member(KIND_LEAVE_STUDY, s, patientKey, patientId, 6n);
    const sameBlockAsLeave = chain.query(s, 6n, { epsilon_micro: 300_000n }).txId;
    chain.member(KIND_JOIN_STUDY, s, patientKey, patientId, 7n);
    const sameBlockAsJoin = chain.query(s, 7n, { epsilon_micro: 200_000n }).txId;
    const [only] = replay(chain);
    assert.ok(only);
    const covered = only.queries.filter((q) => q.covered).map((q) => toHex(q.fact.txId));
    assert.deepEqual(covered, [toHex(during), toHex(sameBlockAsJoin)]);
    assert.equal(only.queries.length, 4);
    assert.ok([before, sameBlockAsLeave].every((id) => only.queries.some((q) => equalBytes(q.fact.txId, id) && !q.covered)));
    assert.equal(only.spans.length, 2);
    assert.ok(isMember(only));
    assert.equal(only.memberCount, 1);
    // Charged: 2 institutions × (0.5 + 0.4 + 0.3 + 0.2) of the 4 the study has.
    assert.equal(only.epsilonRemainingMicro, 4_000_000n - 2n * 1_400_000n);
  });

  it("applies only the txs the rules apply", () => {
    const chain = new Chain();
    chain.register(clinic.sign_key, study, 2n); // a clinic registers no study
    chain.register(institute.sign_key, { ...study, expires_ms: T0 }, 2n); // expired before its block
    const s = chain.register(institute.sign_key, study, 2n).txId;
    chain.member(KIND_JOIN_STUDY, s, stranger, patientId, 3n); // not the patient, nor a representative
    chain.member(KIND_LEAVE_STUDY, s, patientKey, patientId, 3n); // not a member
    chain.member(KIND_JOIN_STUDY, s, patientKey, patientId, 4n);
    chain.member(KIND_JOIN_STUDY, s, patientKey, patientId, 4n); // already a member
    chain.member(KIND_JOIN_STUDY, s, key(40), otherPatient, 4n); // another patient: counted, not shown
    const q = chain.query(s, 5n).txId;
    chain.query(s, 5n); // the same query again: its digest is known
    chain.query(s, 5n, { epsilon_micro: 450_000n }, clinic.sign_key); // not the study's institute
    chain.query(s, 5n, { template: "nope" });
    chain.query(s, 5n, { params: { code: "sct:1", grouping: "age_band", value_low_milli: 0n, value_high_milli: 0n } });
    chain.query(s, 5n, { params: { code: "sct:44054006", grouping: "none", value_low_milli: 0n, value_high_milli: 0n } });
    chain.query(s, 5n, { epsilon_micro: 1_000_001n }); // over the template's per-answer ε
    chain.query(s, 5n, { epsilon_micro: 600_000n, institutions: [hospital.sign_key, clinic.sign_key] }); // unsorted
    chain.query(s, 5n, { epsilon_micro: 600_000n, institutions: [insurer.sign_key] }); // holds no records
    chain.query(s, 5n, { epsilon_micro: 600_000n, as_of_height: 9n }); // a block not yet committed
    chain.query(s, 5n, { epsilon_micro: 600_000n, as_of_height: 1n }); // older than the study
    chain.query(s, 6n, { epsilon_micro: 1_000_000n }); // 2 × 1.0 ≤ the 3.0 left
    chain.query(s, 7n, { epsilon_micro: 999_999n }); // 2 × 0.999999 > the 1.0 left: refused
    chain.answer(q, clinic.sign_key);
    chain.answer(q, clinic.sign_key); // once per institution
    chain.answer(q, insurer.sign_key); // not asked
    const studies = replay(chain);
    assert.equal(studies.length, 1);
    const [only] = studies;
    assert.equal(only!.memberCount, 2);
    assert.equal(only!.spans.length, 1);
    assert.deepEqual(
      only!.queries.map((x) => [x.fact.height, x.body.epsilon_micro, x.covered]),
      [
        [5n, 500_000n, true],
        [6n, 1_000_000n, true],
      ],
    );
    assert.deepEqual(only!.queries[0]!.answeredBy.map((a) => a.institution), [clinic.sign_key]);
    assert.equal(only!.epsilonRemainingMicro, 1_000_000n);
  });

  it("takes a representative of the moment, and a study's expiry, into account", () => {
    const chain = new Chain();
    const s = chain.register(institute.sign_key, { ...study, expires_ms: T0 + 5_500n }, 2n).txId;
    const byRepresentative = chain.member(KIND_JOIN_STUDY, s, representative, patientId, 3n);
    chain.member(KIND_LEAVE_STUDY, s, representative, patientId, 4n); // no longer a representative
    chain.member(KIND_LEAVE_STUDY, s, patientKey, patientId, 5n);
    chain.member(KIND_JOIN_STUDY, s, patientKey, patientId, 6n); // the study ended at 5.5 s
    const [only] = replay(chain, (fact) => (fact.height <= 3n ? [representative] : []));
    assert.deepEqual(
      only!.spans.map((span) => [toHex(span.joined.txId), span.left?.height]),
      [[toHex(byRepresentative.txId), 5n]],
    );
    assert.ok(!isMember(only!));
  });
});
