/**
 * The node's API as the page uses it: plain `fetch` to the origin that served the app, each
 * patient read signed on this device over a fresh challenge (`auth.ts`), transactions sent as the
 * canonical bytes the page signed. Nothing here decides what to believe: answers go to
 * `ledger.ts` to be verified. Errors are `NodeError`s with a sentence for the patient.
 */

import { buildAuthorization } from "./auth.js";
import { fromHex, toHex } from "./bytes.js";
import type { Identity } from "./crypto.js";
import type { BlockItem } from "./ledger.js";

export class NodeError extends Error {
  override readonly name = "NodeError";
  constructor(
    message: string,
    readonly status = 0,
    readonly code = "",
  ) {
    super(message);
  }
}

export function fromBase64(text: string): Uint8Array {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) throw new NodeError("the node sent bytes that are not base64");
  const raw = atob(text);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

export function toBase64(data: Uint8Array): string {
  let raw = "";
  for (const byte of data) raw += String.fromCharCode(byte);
  return btoa(raw);
}

async function readJson(response: Response): Promise<unknown> {
  const text = await response.text();
  let body: unknown = null;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: said below
  }
  if (!response.ok) {
    const problem = (body ?? {}) as { detail?: unknown; code?: unknown };
    const detail = typeof problem.detail === "string" ? problem.detail : `HTTP ${response.status}`;
    throw new NodeError(`the node refused: ${detail}`, response.status, typeof problem.code === "string" ? problem.code : "");
  }
  if (body === null || typeof body !== "object") throw new NodeError("the node's answer is not a JSON object");
  return body;
}

export interface Signer {
  readonly identity: Identity;
  readonly patientId: Uint8Array;
  readonly chainId: string;
}

export class NodeApi {
  constructor(readonly base = "") {}

  async getPublic(path: string): Promise<Record<string, unknown>> {
    return (await readJson(await fetch(this.base + path, { cache: "no-store" }))) as Record<string, unknown>;
  }

  /** `Authorization` for one request to `target`, over a challenge taken for it. */
  async authorize(signer: Signer, method: string, target: string): Promise<string> {
    const reply = (await readJson(await fetch(this.base + "/v1/auth/challenge", { method: "POST" }))) as { challenge?: unknown };
    if (typeof reply.challenge !== "string" || !/^[0-9a-f]{64}$/.test(reply.challenge))
      throw new NodeError("the node's challenge is malformed");
    return buildAuthorization(signer.identity, {
      chainId: signer.chainId,
      challenge: fromHex(reply.challenge),
      method,
      target,
      timeMs: BigInt(Date.now()),
      patientId: signer.patientId,
    });
  }

  async getSigned(signer: Signer, target: string): Promise<Record<string, unknown>> {
    const authorization = await this.authorize(signer, "GET", target);
    const response = await fetch(this.base + target, { headers: { Authorization: authorization }, cache: "no-store" });
    return (await readJson(response)) as Record<string, unknown>;
  }

  /** Send a tx the page signed and wait for its block; the answer is checked against the verified chain by the caller. */
  async postTx(raw: Uint8Array): Promise<{ status: string; txId: string }> {
    const response = await fetch(this.base + "/v1/txs?wait_ms=20000", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ tx: toBase64(raw) }),
    });
    const reply = (await readJson(response)) as { status?: unknown; tx_id?: unknown };
    return { status: String(reply.status), txId: String(reply.tx_id) };
  }

  /** One page of certified blocks from `from`, decoded from base64. */
  async getBlocks(signer: Signer, from: bigint): Promise<{ latest: bigint; items: BlockItem[] }> {
    const reply = await this.getSigned(signer, `/v1/proofs/blocks?from=${from}&limit=100`);
    const latest = reply["latest_height"];
    const blocks = reply["blocks"];
    if (typeof latest !== "number" || !Array.isArray(blocks)) throw new NodeError("the node's block page is malformed");
    const items = blocks.map((b: unknown): BlockItem => {
      const item = b as Record<string, unknown>;
      return {
        block: fromBase64(item["block"] as string),
        commit: fromBase64(item["commit"] as string),
        nextValidators: fromBase64(item["next_validators"] as string),
      };
    });
    return { latest: BigInt(latest), items };
  }

  /** The patient route `/v1/health/patients/{id}{suffix}`. */
  patientPath(signer: Signer, suffix: string): string {
    return `/v1/health/patients/${toHex(signer.patientId)}${suffix}`;
  }
}
