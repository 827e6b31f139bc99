import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { AttachmentError, decodeManifest, openAttachment, parseBlobUrl, verifyChunk } from "../src/attachments.js";
import { fromHex, utf8Strict } from "../src/bytes.js";
import { loadSodium } from "../src/crypto.js";
import type { BlobRef } from "../src/wire.js";
import { vectors } from "./vectors.js";

await loadSodium();

describe("attachments as health/blobs.py seals them", () => {
  for (const v of vectors.attachments) {
    const ref: BlobRef = { blob_id: fromHex(v.ref.blob_id), sealed_key: fromHex(v.ref.sealed_key), size: BigInt(v.ref.size) };
    const chunks = v.chunks.map(fromHex);
    const recordKey = fromHex(v.record_key);
    const binding = fromHex(v.binding);

    it("checks the manifest and each chunk, then opens the attachment", () => {
      const manifest = decodeManifest(fromHex(v.manifest), ref.blob_id);
      chunks.forEach((c, i) => verifyChunk(manifest, i, c));
      assert.equal(utf8Strict.decode(openAttachment(recordKey, ref, binding, chunks)), v.plaintext);
    });

    it("refuses another blob's manifest, a changed chunk, reordered, dropped or foreign chunks", () => {
      assert.throws(() => decodeManifest(fromHex(v.manifest), new Uint8Array(32)), AttachmentError);
      const manifest = decodeManifest(fromHex(v.manifest), ref.blob_id);
      const flipped = chunks[0]!.slice();
      flipped[3] = flipped[3]! ^ 1;
      assert.throws(() => verifyChunk(manifest, 0, flipped), AttachmentError);
      assert.throws(() => verifyChunk(manifest, 1, chunks[0]!), AttachmentError);
      assert.throws(() => openAttachment(recordKey, ref, binding, [chunks[1]!, chunks[0]!, chunks[2]!]), AttachmentError);
      assert.throws(() => openAttachment(recordKey, ref, binding, chunks.slice(0, 2)), AttachmentError);
      assert.throws(() => openAttachment(recordKey, ref, new Uint8Array(binding.length), chunks), AttachmentError);
      assert.throws(() => openAttachment(new Uint8Array(32), ref, binding, chunks), AttachmentError);
    });
  }

  it("reads the blob id of an attachment URL, and nothing else", () => {
    assert.equal(parseBlobUrl("urn:medledger:blob:" + "ab".repeat(32))?.length, 32);
    for (const url of ["urn:medledger:blob:" + "AB".repeat(32), "urn:medledger:blob:xyz", "https://example.org/x"]) assert.equal(parseBlobUrl(url), null);
  });
});
