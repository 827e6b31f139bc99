import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { fromHex, toHex } from "../src/bytes.js";
import { loadSodium } from "../src/crypto.js";
import { UnverifiedError, VerifiedLedger } from "../src/ledger.js";
import { LightClientError } from "../src/lightclient.js";
import type { AuditEvent } from "../src/wire.js";
import { vectors } from "./vectors.js";

await loadSodium();
const lc = vectors.light_client;
const item = (b: { block: string; commit: string; next_validators: string | null }) => ({
  block: fromHex(b.block),
  commit: fromHex(b.commit),
  nextValidators: b.next_validators === null ? new Uint8Array(0) : fromHex(b.next_validators),
});

function followed(): VerifiedLedger {
  const ledger = VerifiedLedger.fromGenesis(fromHex(lc.genesis), fromHex(lc.genesis_hash));
  for (const b of lc.blocks) ledger.applyBlock(item(b));
  return ledger;
}

describe("the verified ledger", () => {
  it("reads the institutions of a genesis that sets a network policy (its research k)", () => {
    const ledger = VerifiedLedger.fromGenesis(fromHex(lc.genesis_with_policy), fromHex(lc.genesis_with_policy_hash));
    assert.deepEqual([...ledger.institutions.values()].map((i) => i.name), ["Clinic"]);
  });

  it("opens a version-2 genesis (consensus params) and reads its institutions", () => {
    const ledger = VerifiedLedger.fromGenesis(fromHex(lc.genesis_v2), fromHex(lc.genesis_v2_hash));
    assert.deepEqual([...ledger.institutions.values()].map((i) => i.name), ["Clinic"]);
    assert.equal(toHex(ledger.head.genesisHash), lc.genesis_v2_hash);
  });

  it("indexes every tx of the verified blocks, with its block and time", () => {
    const ledger = followed();
    assert.equal(ledger.head.height, BigInt(lc.blocks.length));
    const txIds = vectors.txs.map((t) => t.tx_id).filter((id) => ledger.getTx(fromHex(id)) !== undefined);
    assert.ok(txIds.length > 0, "the vector blocks hold the vector txs");
    for (const id of txIds) {
      const fact = ledger.getTx(fromHex(id))!;
      assert.equal(toHex(fact.txId), id);
      assert.ok(fact.height >= 1n && fact.height <= ledger.head.height);
    }
  });

  it("refuses another genesis than the pinned one, and every refused block", () => {
    assert.throws(() => VerifiedLedger.fromGenesis(fromHex(lc.genesis), new Uint8Array(32)), LightClientError);
    for (const r of lc.refusals) {
      const ledger = VerifiedLedger.fromGenesis(fromHex(lc.genesis), fromHex(lc.genesis_hash));
      assert.throws(() => ledger.applyBlock(item(r)), LightClientError, r.why);
      assert.equal(ledger.head.height, 0n, r.why); // nothing of a refused block is kept
      assert.equal(ledger.getTx(fromHex(vectors.txs[0]!.tx_id)), undefined);
    }
  });

  it("believes an audit event only as its tx in a verified block says it", () => {
    const ledger = followed();
    const id = vectors.txs.map((t) => t.tx_id).find((i) => ledger.getTx(fromHex(i)) !== undefined)!;
    const fact = ledger.getTx(fromHex(id))!;
    const event: AuditEvent = {
      actor: fact.tx.sender,
      event: "grant",
      event_id: fact.txId,
      height: fact.height,
      record_ids: [],
      subject_id: new Uint8Array(0),
      time_ms: fact.timeMs,
    };
    assert.equal(ledger.verifyAuditEvent(event), fact);
    for (const lie of [
      { ...event, height: fact.height + 1n },
      { ...event, time_ms: fact.timeMs + 1n },
      { ...event, actor: new Uint8Array(32) },
      { ...event, event_id: new Uint8Array(32).fill(7) },
    ])
      assert.throws(() => ledger.verifyAuditEvent(lie), UnverifiedError);
  });
});
