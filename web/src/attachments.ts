/**
 * A record's attachments on the patient's device (health/blobs.py, ADR 0013). The ledger's record
 * tx lists each attachment (`BlobRef`: blob id, size, and the blob key sealed under the record key,
 * bound to the blob and the record); a node serves the blob's manifest (which must hash to the
 * blob id) and its encrypted chunks (each must hash to its entry in the manifest); each chunk opens
 * with XChaCha20-Poly1305 under the blob key, its index and whether it is the last one bound in, so
 * a node cannot reorder, drop or truncate chunks unnoticed. Pure: the caller fetches.
 */

import { concatBytes, equalBytes, fromHex, toHex } from "./bytes.js";
import { decodeChecked } from "./checks.js";
import { encode } from "./codec.js";
import { aeadDecrypt, DecryptionError, digest } from "./crypto.js";
import {
  AEAD_NONCE_SIZE,
  BLOB_CHUNK_AD_DOMAIN,
  BLOB_CHUNK_DOMAIN,
  BLOB_ID_DOMAIN,
  BLOB_KEY_AD_DOMAIN,
  BLOB_MANIFEST_BYTES_MAX,
  BLOB_URL_PREFIX,
  type BlobManifest,
  BlobManifestSchema,
  type BlobRef,
} from "./wire.js";

/** An attachment the node served that is not the ledger's, or does not open. */
export class AttachmentError extends Error {
  override readonly name = "AttachmentError";
}

const u64 = (n: number): Uint8Array => {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
};

export const computeBlobId = (manifest: BlobManifest): Uint8Array => digest(concatBytes(BLOB_ID_DOMAIN, encode(BlobManifestSchema, manifest)));
export const computeChunkHash = (chunk: Uint8Array): Uint8Array => digest(concatBytes(BLOB_CHUNK_DOMAIN, chunk));

/** The blob id an `Attachment.url` names (`urn:medledger:blob:<hex>`), or null. */
export function parseBlobUrl(url: string): Uint8Array | null {
  if (!url.startsWith(BLOB_URL_PREFIX)) return null;
  const hex = url.slice(BLOB_URL_PREFIX.length);
  return /^[0-9a-f]{64}$/.test(hex) ? fromHex(hex) : null;
}

/** A manifest from a node, believed only if it is canonical, consistent and hashes to `blobId`. */
export function decodeManifest(raw: Uint8Array, blobId: Uint8Array): BlobManifest {
  let manifest: BlobManifest;
  try {
    manifest = decodeChecked(BlobManifestSchema, raw, BLOB_MANIFEST_BYTES_MAX);
  } catch {
    throw new AttachmentError("the attachment's manifest is not canonical");
  }
  const chunks = (manifest.size + manifest.chunk_bytes - 1n) / manifest.chunk_bytes;
  if (BigInt(manifest.chunk_hashes.length) !== chunks)
    throw new AttachmentError("the attachment's manifest lists another number of chunks than its size makes");
  if (!equalBytes(computeBlobId(manifest), blobId)) throw new AttachmentError(`the manifest does not hash to blob ${toHex(blobId).slice(0, 16)}…`);
  return manifest;
}

/** The length chunk `index` must have (every chunk is `chunk_bytes` of ciphertext but the last). */
export function chunkLength(manifest: BlobManifest, index: number): number {
  const count = manifest.chunk_hashes.length;
  return Number(index < count - 1 ? manifest.chunk_bytes : manifest.size - manifest.chunk_bytes * BigInt(count - 1));
}

/** That `chunk` is chunk `index` of the manifest. */
export function verifyChunk(manifest: BlobManifest, index: number, chunk: Uint8Array): void {
  const expected = manifest.chunk_hashes[index];
  if (expected === undefined || chunk.length !== chunkLength(manifest, index) || !equalBytes(computeChunkHash(chunk), expected))
    throw new AttachmentError(`chunk ${index} of the attachment is not the one its manifest names`);
}

/** The blob key, opened with the record key; bound to the blob id and the record's binding. */
export function openBlobKey(recordKey: Uint8Array, ref: BlobRef, binding: Uint8Array): Uint8Array {
  const nonce = ref.sealed_key.slice(0, AEAD_NONCE_SIZE);
  try {
    return aeadDecrypt(ref.sealed_key.slice(AEAD_NONCE_SIZE), recordKey, nonce, concatBytes(BLOB_KEY_AD_DOMAIN, ref.blob_id, binding));
  } catch (exc) {
    if (exc instanceof DecryptionError) throw new AttachmentError("the attachment's key does not open with the record's key");
    throw exc;
  }
}

/** The plaintext of verified `chunks` (all of them, in order), checked against the ledger's size. */
export function openAttachment(recordKey: Uint8Array, ref: BlobRef, binding: Uint8Array, chunks: readonly Uint8Array[]): Uint8Array {
  const blobKey = openBlobKey(recordKey, ref, binding);
  const nonce = (i: number) => concatBytes(new Uint8Array(AEAD_NONCE_SIZE - 8), u64(i));
  const parts = chunks.map((chunk, i) => {
    const ad = concatBytes(BLOB_CHUNK_AD_DOMAIN, u64(i), Uint8Array.of(i === chunks.length - 1 ? 1 : 0));
    try {
      return aeadDecrypt(chunk, blobKey, nonce(i), ad);
    } catch (exc) {
      if (exc instanceof DecryptionError) throw new AttachmentError(`chunk ${i} of the attachment does not open under its key`);
      throw exc;
    }
  });
  const plaintext = concatBytes(...parts);
  if (BigInt(plaintext.length) !== ref.size) throw new AttachmentError(`the attachment holds ${plaintext.length} bytes; its record says ${ref.size}`);
  return plaintext;
}
