/**
 * The patient's key file, in the format `medledger patient keys` writes (crypto/keyfile.py), so
 * that one file moves between the CLI and the browser in both directions:
 *
 *   {"format": "medledger-key", "version": 1, "kdf": "argon2id", "opslimit": int,
 *    "memlimit": int, "salt": b64, "nonce": b64, "ciphertext": b64,
 *    "public": {"sign_key": hex, "enc_key": hex}}
 *
 * The two 32-byte secrets are encrypted with secretbox (XSalsa20-Poly1305) under a key argon2id
 * stretches from the passphrase (its UTF-8 bytes). A file is outside input: its size, every field
 * and the argon2id costs are checked before any work (a hostile file cannot make the page
 * allocate gigabytes), and after decryption the secrets must reproduce the public keys in clear.
 * The same document, wrapped the same way, is what the app keeps in IndexedDB.
 */

import { equalBytes, fromHex, toHex, utf8, utf8Strict } from "./bytes.js";
import { CryptoError, Identity, loadSodium, type PublicIdentity } from "./crypto.js";
import {
  KDF_MEMLIMIT_DEFAULT,
  KDF_MEMLIMIT_MAX,
  KDF_MEMLIMIT_MIN,
  KDF_OPSLIMIT_DEFAULT,
  KDF_OPSLIMIT_MAX,
  KDF_OPSLIMIT_MIN,
  KEY_FILE_CIPHERTEXT_SIZE,
  KEY_FILE_FORMAT,
  KEY_FILE_KDF,
  KEY_FILE_NONCE_SIZE,
  KEY_FILE_SALT_SIZE,
  KEY_FILE_SIZE_MAX,
  KEY_FILE_VERSION,
  SEED_SIZE,
} from "./wire.js";

export class KeyFileError extends CryptoError {
  override readonly name: string = "KeyFileError";
}
/** The secrets did not decrypt: a wrong passphrase (or an altered encrypted part). */
export class WrongPassphraseError extends KeyFileError {
  override readonly name = "WrongPassphraseError";
}

const FIELDS = ["format", "version", "kdf", "opslimit", "memlimit", "salt", "nonce", "ciphertext", "public"];
const HEX_KEY = /^[0-9a-f]{64}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export interface KdfCost {
  readonly opslimit: number;
  readonly memlimit: number;
}
export const KDF_DEFAULT: KdfCost = { opslimit: KDF_OPSLIMIT_DEFAULT, memlimit: KDF_MEMLIMIT_DEFAULT };

function checkCost(opslimit: unknown, memlimit: unknown, source: string): KdfCost {
  if (typeof opslimit !== "number" || !Number.isInteger(opslimit) || opslimit < KDF_OPSLIMIT_MIN || opslimit > KDF_OPSLIMIT_MAX)
    throw new KeyFileError(`${source}: argon2id opslimit must be an integer in [${KDF_OPSLIMIT_MIN}, ${KDF_OPSLIMIT_MAX}]`);
  if (typeof memlimit !== "number" || !Number.isInteger(memlimit) || memlimit < KDF_MEMLIMIT_MIN || memlimit > KDF_MEMLIMIT_MAX)
    throw new KeyFileError(`${source}: argon2id memlimit must be an integer in [${KDF_MEMLIMIT_MIN}, ${KDF_MEMLIMIT_MAX}] bytes`);
  return { opslimit, memlimit };
}

async function deriveKey(passphrase: string, salt: Uint8Array, cost: KdfCost): Promise<Uint8Array> {
  const s = await loadSodium();
  return s.crypto_pwhash(32, utf8.encode(passphrase), salt, cost.opslimit, cost.memlimit, s.crypto_pwhash_ALG_ARGON2ID13);
}

/**
 * The key-file text of `identity`, its secrets encrypted under `passphrase`. `salt` and `nonce`
 * default to fresh random bytes (given only to reproduce test vectors).
 */
export async function encodeIdentity(
  identity: Identity,
  passphrase: string,
  options: { cost?: KdfCost; salt?: Uint8Array; nonce?: Uint8Array } = {},
): Promise<string> {
  const s = await loadSodium();
  const cost = checkCost(options.cost?.opslimit ?? KDF_DEFAULT.opslimit, options.cost?.memlimit ?? KDF_DEFAULT.memlimit, "key file");
  const salt = options.salt ?? s.randombytes_buf(KEY_FILE_SALT_SIZE);
  const nonce = options.nonce ?? s.randombytes_buf(KEY_FILE_NONCE_SIZE);
  if (salt.length !== KEY_FILE_SALT_SIZE || nonce.length !== KEY_FILE_NONCE_SIZE)
    throw new KeyFileError(`key file: the salt must be ${KEY_FILE_SALT_SIZE} bytes and the nonce ${KEY_FILE_NONCE_SIZE}`);
  const [signSeed, encSecret] = identity.secrets();
  const plaintext = new Uint8Array(2 * SEED_SIZE);
  plaintext.set(signSeed, 0);
  plaintext.set(encSecret, SEED_SIZE);
  const ciphertext = s.crypto_secretbox_easy(plaintext, nonce, await deriveKey(passphrase, salt, cost));
  plaintext.fill(0);
  const b64 = (data: Uint8Array) => s.to_base64(data, s.base64_variants.ORIGINAL);
  // Python writes json.dumps(document, indent=2) + "\n"; JSON.stringify lays it out identically.
  const document = {
    format: KEY_FILE_FORMAT,
    version: KEY_FILE_VERSION,
    kdf: KEY_FILE_KDF,
    opslimit: cost.opslimit,
    memlimit: cost.memlimit,
    salt: b64(salt),
    nonce: b64(nonce),
    ciphertext: b64(ciphertext),
    public: { sign_key: toHex(identity.public.signKey), enc_key: toHex(identity.public.encKey) },
  };
  return JSON.stringify(document, null, 2) + "\n";
}

interface ParsedKeyFile {
  readonly cost: KdfCost;
  readonly salt: Uint8Array;
  readonly nonce: Uint8Array;
  readonly ciphertext: Uint8Array;
  readonly public: PublicIdentity;
}

function parse(data: string | Uint8Array, source: string): ParsedKeyFile {
  let textData: string;
  try {
    textData = typeof data === "string" ? data : utf8Strict.decode(data);
  } catch {
    throw new KeyFileError(`${source}: not a medledger key file (not UTF-8 text)`);
  }
  if (utf8.encode(textData).length > KEY_FILE_SIZE_MAX)
    throw new KeyFileError(`${source}: larger than ${KEY_FILE_SIZE_MAX} bytes, not a key file`);
  let document: unknown;
  try {
    document = JSON.parse(textData);
  } catch {
    throw new KeyFileError(`${source}: not a medledger key file (not valid JSON)`);
  }
  if (typeof document !== "object" || document === null || Array.isArray(document) || (document as Record<string, unknown>)["format"] !== KEY_FILE_FORMAT)
    throw new KeyFileError(`${source}: not a medledger key file (format is not "${KEY_FILE_FORMAT}")`);
  const doc = document as Record<string, unknown>;
  if (doc["version"] !== KEY_FILE_VERSION)
    throw new KeyFileError(`${source}: unsupported key file version (this build reads version ${KEY_FILE_VERSION})`);
  const keys = Object.keys(doc);
  const missing = FIELDS.filter((f) => !keys.includes(f));
  const unexpected = keys.filter((k) => !FIELDS.includes(k));
  if (missing.length > 0 || unexpected.length > 0)
    throw new KeyFileError(`${source}: malformed key file (missing fields [${missing}], unexpected [${unexpected}])`);
  if (doc["kdf"] !== KEY_FILE_KDF) throw new KeyFileError(`${source}: unsupported kdf`);
  const cost = checkCost(doc["opslimit"], doc["memlimit"], source);
  const pub = doc["public"];
  if (typeof pub !== "object" || pub === null || Array.isArray(pub) || Object.keys(pub).sort().join() !== "enc_key,sign_key")
    throw new KeyFileError(`${source}: 'public' must hold exactly 'sign_key' and 'enc_key'`);
  const hexKey = (name: "sign_key" | "enc_key"): Uint8Array => {
    const value = (pub as Record<string, unknown>)[name];
    if (typeof value !== "string" || !HEX_KEY.test(value))
      throw new KeyFileError(`${source}: public '${name}' must be 64 lowercase hex digits`);
    return fromHex(value);
  };
  const b64 = (name: string, size: number): Uint8Array => {
    const value = doc[name];
    let decoded: Uint8Array;
    try {
      if (typeof value !== "string" || !BASE64.test(value) || value.length % 4 !== 0) throw new Error();
      decoded = fromBase64(value);
    } catch {
      throw new KeyFileError(`${source}: '${name}' is not valid base64`);
    }
    if (decoded.length !== size) throw new KeyFileError(`${source}: '${name}' must be ${size} bytes, got ${decoded.length}`);
    return decoded;
  };
  return {
    cost,
    salt: b64("salt", KEY_FILE_SALT_SIZE),
    nonce: b64("nonce", KEY_FILE_NONCE_SIZE),
    ciphertext: b64("ciphertext", KEY_FILE_CIPHERTEXT_SIZE),
    public: { signKey: hexKey("sign_key"), encKey: hexKey("enc_key") },
  };
}

/** Standard base64 with padding (what Python's b64encode writes); atob needs no libsodium. */
function fromBase64(value: string): Uint8Array {
  const binary = atob(value);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** The public keys in clear in a key file (checked; nothing is decrypted, no passphrase). */
export function decodePublicIdentity(data: string | Uint8Array, source = "key data"): PublicIdentity {
  return parse(data, source).public;
}

/** Decrypt a key file with `passphrase`; `source` names it in error messages. */
export async function decodeIdentity(data: string | Uint8Array, passphrase: string, source = "key data"): Promise<Identity> {
  const parsed = parse(data, source);
  const s = await loadSodium();
  const key = await deriveKey(passphrase, parsed.salt, parsed.cost);
  let plaintext: Uint8Array;
  try {
    plaintext = s.crypto_secretbox_open_easy(parsed.ciphertext, parsed.nonce, key);
  } catch {
    throw new WrongPassphraseError(`${source}: wrong passphrase (or the encrypted part was altered)`);
  }
  if (plaintext.length !== 2 * SEED_SIZE) throw new KeyFileError(`${source}: decrypted secrets have the wrong size`);
  const identity = Identity.fromSecrets(plaintext.subarray(0, SEED_SIZE), plaintext.subarray(SEED_SIZE));
  plaintext.fill(0);
  if (!equalBytes(identity.public.signKey, parsed.public.signKey) || !equalBytes(identity.public.encKey, parsed.public.encKey))
    throw new KeyFileError(`${source}: the secrets do not match the file's public keys`);
  return identity;
}
