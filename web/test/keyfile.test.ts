import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { toHex } from "../src/bytes.js";
import { Identity, loadSodium } from "../src/crypto.js";
import { decodeIdentity, decodePublicIdentity, encodeIdentity, KeyFileError, WrongPassphraseError } from "../src/keyfile.js";
import { KDF_MEMLIMIT_MIN, KDF_OPSLIMIT_MIN } from "../src/wire.js";
import { identity, vectors } from "./vectors.js";

await loadSodium();

describe("key files as `medledger patient keys` writes them", () => {
  for (const v of vectors.key_files) {
    const document = JSON.parse(v.file) as Record<string, unknown>;
    it(`imports ${v.identity}'s file (argon2id ${document["opslimit"]}/${document["memlimit"]})`, async () => {
      const imported = await decodeIdentity(v.file, v.passphrase);
      assert.deepEqual(imported.secrets(), identity(v.identity).secrets());
      assert.equal(toHex(decodePublicIdentity(v.file).signKey), vectors.identities[v.identity]!.sign_key);
    });
    it(`writes ${v.identity}'s file byte for byte from the same salt and nonce`, async () => {
      const b64 = (name: string) => Uint8Array.from(atob(document[name] as string), (c) => c.charCodeAt(0));
      const written = await encodeIdentity(identity(v.identity), v.passphrase, {
        cost: { opslimit: document["opslimit"] as number, memlimit: document["memlimit"] as number },
        salt: b64("salt"),
        nonce: b64("nonce"),
      });
      assert.equal(written, v.file);
    });
  }
  const cheap = vectors.key_files.find((v) => JSON.parse(v.file).memlimit === KDF_MEMLIMIT_MIN)!;
  it("refuses a wrong passphrase as such", async () => {
    await assert.rejects(decodeIdentity(cheap.file, cheap.passphrase + "x"), WrongPassphraseError);
  });
  it("refuses files whose fields or costs are not the format's", async () => {
    const edited = (change: (d: Record<string, unknown>) => void) => {
      const d = JSON.parse(cheap.file) as Record<string, unknown>;
      change(d);
      return JSON.stringify(d);
    };
    const hostile = [
      edited((d) => (d["memlimit"] = 2 ** 31)),
      edited((d) => (d["opslimit"] = 100)),
      edited((d) => (d["kdf"] = "scrypt")),
      edited((d) => (d["version"] = 2)),
      edited((d) => (d["extra"] = 1)),
      edited((d) => (d["salt"] = "!!!!")),
      edited((d) => (d["nonce"] = "AAAA")),
      edited((d) => ((d["public"] as Record<string, string>)["sign_key"] = "AB".repeat(32))),
      "not json",
      "x".repeat(70_000),
    ];
    for (const file of hostile) await assert.rejects(decodeIdentity(file, cheap.passphrase), KeyFileError);
    const swapped = edited((d) => ((d["public"] as Record<string, string>)["sign_key"] = vectors.identities["clinic"]!.sign_key));
    await assert.rejects(decodeIdentity(swapped, cheap.passphrase), /do not match/);
  });
  it("round-trips a fresh identity under a fresh salt and nonce", async () => {
    const fresh = Identity.generate();
    const cost = { opslimit: KDF_OPSLIMIT_MIN, memlimit: KDF_MEMLIMIT_MIN };
    const file = await encodeIdentity(fresh, "pässphrase", { cost });
    assert.notEqual(file, await encodeIdentity(fresh, "pässphrase", { cost }));
    assert.deepEqual((await decodeIdentity(file, "pässphrase")).secrets(), fresh.secrets());
  });
});
