/**
 * The app's cryptography, all through libsodium (libsodium-wrappers-sumo), so that it interoperates
 * with PyNaCl, which wraps the same library: ed25519 signatures, sealed boxes (an anonymous
 * sender's x25519 box) for content keys, XChaCha20-Poly1305 (IETF) for records and reasons,
 * BLAKE2b-256 for every id and hash. Nothing here is home-made: only the composition mirrors
 * `crypto/` on the Python side. No DOM: the node test runner checks it against Python's vectors.
 *
 * An `Identity` is the patient's two independent key pairs (crypto/signing.py): ed25519 from a
 * 32-byte seed and x25519 from a 32-byte secret. Its secrets leave it only through `secrets()`,
 * for the passphrase-wrapped key file (keyfile.ts).
 */

import sodium from "libsodium-wrappers-sumo";

import { toHex } from "./bytes.js";
import {
  AEAD_NONCE_SIZE,
  AEAD_TAG_SIZE,
  CONTENT_KEY_SIZE,
  FINGERPRINT_HEX_CHARS,
  HASH_SIZE,
  PUBLIC_KEY_SIZE,
  SEALED_KEY_SIZE,
  SEED_SIZE,
  SIGNATURE_SIZE,
} from "./wire.js";

/** A cryptographic operation was refused: bad key material or parameters. */
export class CryptoError extends Error {
  override readonly name: string = "CryptoError";
}
/** Something did not decrypt: not a reader, wrong key, or tampered data. */
export class DecryptionError extends CryptoError {
  override readonly name = "DecryptionError";
}

let readyPromise: Promise<typeof sodium> | null = null;

/** libsodium, once its WebAssembly is loaded; every other function here needs this first. */
export function loadSodium(): Promise<typeof sodium> {
  readyPromise ??= sodium.ready.then(() => sodium);
  return readyPromise;
}

function lib(): typeof sodium {
  // `crypto_generichash` exists only once `ready` resolved: calling before is a programming error.
  if (typeof sodium.crypto_generichash !== "function") throw new CryptoError("call loadSodium() first");
  return sodium;
}

function requireLength(value: Uint8Array, size: number, what: string): void {
  if (!(value instanceof Uint8Array) || value.length !== size)
    throw new CryptoError(`${what} must be ${size} bytes`);
}

/** BLAKE2b-256, the one hash (crypto/hashing.py `digest`). */
export function digest(data: Uint8Array): Uint8Array {
  return lib().crypto_generichash(HASH_SIZE, data, null);
}

/** Keyed BLAKE2b of `size` bytes (a record key from its content key: health/records.py). */
export function keyedDigest(data: Uint8Array, key: Uint8Array, size: number): Uint8Array {
  return lib().crypto_generichash(size, data, key);
}

export function randomBytes(size: number): Uint8Array {
  return lib().randombytes_buf(size);
}

export interface PublicIdentity {
  readonly signKey: Uint8Array;
  readonly encKey: Uint8Array;
}

/** A short hex name of an identity (its signing key's digest), for the screen, never secret. */
export function fingerprint(signKey: Uint8Array): string {
  return toHex(digest(signKey)).slice(0, FINGERPRINT_HEX_CHARS);
}

export class Identity {
  readonly public: PublicIdentity;
  readonly #signSeed: Uint8Array;
  readonly #encSecret: Uint8Array;
  readonly #signSecretKey: Uint8Array;

  private constructor(signSeed: Uint8Array, encSecret: Uint8Array) {
    const s = lib();
    const signing = s.crypto_sign_seed_keypair(signSeed);
    this.#signSeed = signSeed.slice();
    this.#encSecret = encSecret.slice();
    this.#signSecretKey = signing.privateKey;
    this.public = Object.freeze({ signKey: signing.publicKey, encKey: s.crypto_scalarmult_base(encSecret) });
  }

  /** A fresh identity from the platform's CSPRNG (libsodium's randombytes). */
  static generate(): Identity {
    return new Identity(randomBytes(SEED_SIZE), randomBytes(SEED_SIZE));
  }

  /** The identity of the two 32-byte secrets `secrets()` returns (Identity.from_secrets). */
  static fromSecrets(signSeed: Uint8Array, encSecret: Uint8Array): Identity {
    requireLength(signSeed, SEED_SIZE, "sign seed");
    requireLength(encSecret, SEED_SIZE, "enc secret");
    return new Identity(signSeed, encSecret);
  }

  /** `[signSeed, encSecret]`: everything needed to rebuild this identity. Copies. */
  secrets(): [Uint8Array, Uint8Array] {
    return [this.#signSeed.slice(), this.#encSecret.slice()];
  }

  /** The detached 64-byte ed25519 signature of `message`. */
  sign(message: Uint8Array): Uint8Array {
    return lib().crypto_sign_detached(message, this.#signSecretKey);
  }

  /** Open a sealed box addressed to this identity's x25519 key. */
  openSealed(sealed: Uint8Array): Uint8Array {
    try {
      return lib().crypto_box_seal_open(sealed, this.public.encKey, this.#encSecret);
    } catch {
      throw new DecryptionError("the sealed box did not open (not ours, or tampered)");
    }
  }

  toString(): string {
    return `Identity(fingerprint=${fingerprint(this.public.signKey)})`;
  }
}

/** Whether `signature` is `publicKey`'s ed25519 signature of `message`; never throws. */
export function verifySignature(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== PUBLIC_KEY_SIZE || signature.length !== SIGNATURE_SIZE) return false;
  try {
    return lib().crypto_sign_verify_detached(signature, message, publicKey);
  } catch {
    return false;
  }
}

/** Seal a 32-byte content (or record) key to a reader's x25519 key (crypto/envelope.py). */
export function sealContentKey(contentKey: Uint8Array, reader: Uint8Array): Uint8Array {
  requireLength(contentKey, CONTENT_KEY_SIZE, "content key");
  requireLength(reader, PUBLIC_KEY_SIZE, "reader key");
  let sealed: Uint8Array;
  try {
    sealed = lib().crypto_box_seal(contentKey, reader);
  } catch {
    throw new CryptoError("the reader key is not a usable x25519 public key");
  }
  if (sealed.length !== SEALED_KEY_SIZE) throw new CryptoError("a sealed key of the wrong size");
  return sealed;
}

/** The content key sealed to `identity` (`open_content_key`). */
export function openContentKey(sealed: Uint8Array, identity: Identity): Uint8Array {
  const key = identity.openSealed(sealed);
  if (key.length !== CONTENT_KEY_SIZE) throw new DecryptionError("the wrapped content key has the wrong size");
  return key;
}

export function aeadEncrypt(
  plaintext: Uint8Array,
  key: Uint8Array,
  nonce: Uint8Array,
  associatedData: Uint8Array,
): Uint8Array {
  requireLength(key, CONTENT_KEY_SIZE, "key");
  requireLength(nonce, AEAD_NONCE_SIZE, "nonce");
  return lib().crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, associatedData, null, nonce, key);
}

export function aeadDecrypt(
  ciphertext: Uint8Array,
  key: Uint8Array,
  nonce: Uint8Array,
  associatedData: Uint8Array,
): Uint8Array {
  if (key.length !== CONTENT_KEY_SIZE || nonce.length !== AEAD_NONCE_SIZE || ciphertext.length < AEAD_TAG_SIZE)
    throw new DecryptionError("malformed ciphertext, key or nonce");
  try {
    return lib().crypto_aead_xchacha20poly1305_ietf_decrypt(null, ciphertext, associatedData, nonce, key);
  } catch {
    throw new DecryptionError("ciphertext did not authenticate (wrong key, associated data, or tampered)");
  }
}

/** An envelope as the ledger carries it (EnvelopeWire, SealedReason): readers sorted. */
export interface SealedEnvelope {
  readonly nonce: Uint8Array;
  readonly ciphertext: Uint8Array;
  readonly wrapped_keys: readonly { readonly reader: Uint8Array; readonly sealed_key: Uint8Array }[];
}

/** The content key an envelope seals for `identity` (`unwrap_content_key`). */
export function unwrapContentKey(envelope: SealedEnvelope, identity: Identity): Uint8Array {
  const own = toHex(identity.public.encKey);
  const entry = envelope.wrapped_keys.find((w) => toHex(w.reader) === own);
  if (entry === undefined)
    throw new DecryptionError(`identity ${fingerprint(identity.public.signKey)} is not a reader of this envelope`);
  return openContentKey(entry.sealed_key, identity);
}

/** ISO/IEC 7816-4 padding to a multiple of `blockSize` (sodium_pad), as reasons are padded. */
export function pad(data: Uint8Array, blockSize: number): Uint8Array {
  return lib().pad(data, blockSize);
}

export function unpad(data: Uint8Array, blockSize: number): Uint8Array {
  try {
    return lib().unpad(data, blockSize);
  } catch {
    throw new DecryptionError("not padded data");
  }
}
