/**
 * Server-Sent Events read from a `fetch` stream. The browser's `EventSource` cannot send an
 * `Authorization` header, and a patient's read of `/v1/events/stream` is authenticated by a signed
 * request (health/auth.py) like every other patient read; so the page signs the request, reads the
 * body itself, and parses it here (the WHATWG event-stream format: `id:`, `event:`, `data:` lines,
 * a blank line ends an event, `:` lines are comments, CR/LF/CRLF line ends). Pure and incremental:
 * feed it text as it arrives, it returns the events completed so far.
 */

export interface StreamEvent {
  readonly id: string;
  readonly event: string;
  readonly data: string;
}

/** Longest line kept (the node's event lines are a few hundred bytes); a longer one is dropped. */
export const SSE_LINE_CHARS_MAX = 64 * 1024;

export class EventStreamParser {
  #buffer = "";
  #id = "";
  #event = "";
  #data: string[] = [];
  #skipping = false;

  /** Feed decoded text; returns the events that `text` completed. */
  push(text: string): StreamEvent[] {
    const out: StreamEvent[] = [];
    this.#buffer += text;
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.#buffer);
      if (match === null) break;
      // A lone CR at the end may be the first half of a CRLF: wait for the next chunk.
      if (match[0] === "\r" && match.index === this.#buffer.length - 1) break;
      const line = this.#buffer.slice(0, match.index);
      this.#buffer = this.#buffer.slice(match.index + match[0].length);
      if (this.#skipping) {
        this.#skipping = false;
        continue;
      }
      const done = this.#line(line);
      if (done !== null) out.push(done);
    }
    if (this.#buffer.length > SSE_LINE_CHARS_MAX) {
      this.#buffer = "";
      this.#skipping = true; // the rest of this line is dropped too
    }
    return out;
  }

  #line(line: string): StreamEvent | null {
    if (line === "") {
      if (this.#data.length === 0) {
        this.#event = "";
        return null;
      }
      const event = { id: this.#id, event: this.#event || "message", data: this.#data.join("\n") };
      this.#event = "";
      this.#data = [];
      return event;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.#data.push(value);
    else if (field === "event") this.#event = value;
    else if (field === "id" && !value.includes("\u0000")) this.#id = value;
    return null;
  }
}
