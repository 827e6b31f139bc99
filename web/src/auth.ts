/**
 * A patient's signed read (health/auth.py): the node hands out a single-use challenge
 * (`POST /v1/auth/challenge`), and the page signs, with the patient's key, the chain id, the
 * challenge, the method, the exact path and query, its clock and whom it acts for. Only the
 * signature and public values leave the page, in the `Authorization` header.
 */

import { toHex } from "./bytes.js";
import { encodeTuple } from "./codec.js";
import type { Identity } from "./crypto.js";

export const SIGNATURE_SCHEME = "Medledger-Signature";
export const REQUEST_SIGNING_DOMAIN = "medledger/api-request/v1";

export interface SignedRequestParts {
  readonly chainId: string;
  readonly challenge: Uint8Array;
  readonly method: string;
  /** The path with its query string, exactly as sent. */
  readonly target: string;
  readonly timeMs: bigint;
  readonly key: Uint8Array;
  readonly patientId: Uint8Array;
}

export function computeRequestSigningInput(p: SignedRequestParts): Uint8Array {
  return encodeTuple([REQUEST_SIGNING_DOMAIN, p.chainId, p.challenge, p.method.toUpperCase(), p.target, p.timeMs, p.key, p.patientId]);
}

/** The `Authorization` header value of a request signed by `identity` for `patientId`. */
export function buildAuthorization(identity: Identity, parts: Omit<SignedRequestParts, "key">): string {
  const key = identity.public.signKey;
  const signature = identity.sign(computeRequestSigningInput({ ...parts, key }));
  return (
    `${SIGNATURE_SCHEME} key=${toHex(key)}, patient=${toHex(parts.patientId)}, challenge=${toHex(parts.challenge)}, ` +
    `time=${parts.timeMs}, signature=${toHex(signature)}`
  );
}
