/**
 * Live updates: the patient's events from `/v1/events/stream`, read with `fetch` because the
 * stream is a signed read (`sse.ts` says why EventSource cannot be used). An event only says
 * that something happened (its kind and ledger ids); the page then refreshes, which verifies
 * everything again. On a dropped stream it reconnects with a new challenge from the last event.
 */

import type { NodeApi, Signer } from "./api.js";
import { EventStreamParser } from "./sse.js";

export interface LiveHooks {
  onEvent(kind: string): void;
  onState(connected: boolean): void;
}

const RECONNECT_MS = 2000;

export class LiveStream {
  #after = "";
  #stopped = false;
  #controller: AbortController | null = null;

  constructor(
    readonly api: NodeApi,
    readonly signer: Signer,
    readonly hooks: LiveHooks,
    after: bigint,
  ) {
    this.#after = String(after);
  }

  start(): void {
    void this.#run();
  }

  stop(): void {
    this.#stopped = true;
    this.#controller?.abort();
  }

  async #run(): Promise<void> {
    while (!this.#stopped) {
      try {
        await this.#once();
      } catch {
        // dropped, refused or offline: said below, tried again
      }
      this.hooks.onState(false);
      if (this.#stopped) return;
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  }

  async #once(): Promise<void> {
    const target = `/v1/events/stream?after=${this.#after}&heartbeat_s=15`;
    const authorization = await this.api.authorize(this.signer, "GET", target);
    this.#controller = new AbortController();
    const response = await fetch(this.api.base + target, {
      headers: { Authorization: authorization, Accept: "text/event-stream" },
      cache: "no-store",
      signal: this.#controller.signal,
    });
    if (!response.ok || response.body === null) return;
    this.hooks.onState(true);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new EventStreamParser();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      for (const event of parser.push(value)) {
        if (/^[0-9]{1,20}$/.test(event.id)) this.#after = event.id;
        this.hooks.onEvent(event.event);
      }
    }
  }
}
