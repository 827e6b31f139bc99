/**
 * The page's verified ledger judged against the Python one (tests/web/test_web_ledger.py): reads a
 * JSON file of a genesis, certified blocks and the facts a node would serve (as `PatientLedger`
 * computed them, and tampered copies), follows the blocks with `VerifiedLedger`, and prints, for
 * each fact, whether it is believed and, if not, the check that refused it. Run after
 * `tsc -p tsconfig.test.json`: `node .test-build/test/verify-ledger.js FILE`.
 */

import { readFileSync } from "node:fs";

import { fromHex, toHex } from "../src/bytes.js";
import { decodeChecked } from "../src/checks.js";
import { loadSodium } from "../src/crypto.js";
import { UnverifiedError, VerifiedLedger } from "../src/ledger.js";
import {
  AuditEventSchema,
  GrantStateSchema,
  InquiryStateSchema,
  RecordStateSchema,
  STATE_VALUE_BYTES_MAX,
} from "../src/wire.js";

await loadSodium();

interface Fact {
  readonly name: string;
  readonly kind: "record" | "inquiry" | "grant" | "event";
  readonly encoded: string;
  /** For a grant: its inquiry, encoded. */
  readonly inquiry?: string;
}
interface Input {
  readonly genesis: string;
  readonly genesis_hash: string;
  readonly blocks: readonly { block: string; commit: string; next_validators: string }[];
  readonly facts: readonly Fact[];
  readonly patient_sign_key: string;
  readonly patient_id: string;
}

const input = JSON.parse(readFileSync(process.argv[2]!, "utf-8")) as Input;
const ledger = VerifiedLedger.fromGenesis(fromHex(input.genesis), fromHex(input.genesis_hash));
for (const b of input.blocks)
  ledger.applyBlock({ block: fromHex(b.block), commit: fromHex(b.commit), nextValidators: fromHex(b.next_validators) });

const judge = (fact: Fact): void => {
  const raw = fromHex(fact.encoded);
  switch (fact.kind) {
    case "record":
      ledger.verifyRecord(decodeChecked(RecordStateSchema, raw, STATE_VALUE_BYTES_MAX));
      return;
    case "inquiry":
      ledger.verifyInquiry(decodeChecked(InquiryStateSchema, raw, STATE_VALUE_BYTES_MAX));
      return;
    case "grant":
      ledger.verifyGrant(
        decodeChecked(GrantStateSchema, raw, STATE_VALUE_BYTES_MAX),
        decodeChecked(InquiryStateSchema, fromHex(fact.inquiry!), STATE_VALUE_BYTES_MAX),
      );
      return;
    case "event":
      ledger.verifyAuditEvent(decodeChecked(AuditEventSchema, raw, STATE_VALUE_BYTES_MAX));
      return;
  }
};

const results = input.facts.map((fact) => {
  try {
    judge(fact);
    return { name: fact.name, believed: true, what: "" };
  } catch (exc) {
    if (!(exc instanceof UnverifiedError)) throw exc;
    return { name: fact.name, believed: false, what: exc.what };
  }
});
const representatives = ledger.computeRepresentatives(fromHex(input.patient_sign_key), fromHex(input.patient_id)).map(toHex);
console.log(JSON.stringify({ height: Number(ledger.head.height), results, representatives }));
