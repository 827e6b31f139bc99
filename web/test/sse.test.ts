import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { EventStreamParser, SSE_LINE_CHARS_MAX } from "../src/sse.js";

describe("the event-stream parser", () => {
  it("reads the node's events, skipping comments and heartbeats", () => {
    const p = new EventStreamParser();
    const events = p.push(': medledger events\n\nid: 42\nevent: inquiry\ndata: {"seq":42}\n\n: heartbeat\n\n');
    assert.deepEqual(events, [{ id: "42", event: "inquiry", data: '{"seq":42}' }]);
  });

  it("assembles events split across chunks anywhere, CRLF included", () => {
    const text = 'id: 1\r\nevent: read\r\ndata: {"a":1}\r\n\r\nid: 2\r\ndata: x\r\ndata: y\r\n\r\n';
    for (let cut = 0; cut <= text.length; cut++) {
      const p = new EventStreamParser();
      const events = [...p.push(text.slice(0, cut)), ...p.push(text.slice(cut))];
      assert.deepEqual(events, [
        { id: "1", event: "read", data: '{"a":1}' },
        { id: "2", event: "message", data: "x\ny" },
      ], `cut at ${cut}`);
    }
  });

  it("keeps the last id for events without one, and ignores unknown fields", () => {
    const p = new EventStreamParser();
    assert.deepEqual(p.push("id: 7\ndata: a\n\nretry: 5\nfoo\ndata: b\n\n"), [
      { id: "7", event: "message", data: "a" },
      { id: "7", event: "message", data: "b" },
    ]);
  });

  it("drops a line longer than its bound and carries on", () => {
    const p = new EventStreamParser();
    assert.deepEqual(p.push("data: " + "x".repeat(SSE_LINE_CHARS_MAX + 10)), []);
    assert.deepEqual(p.push("yyy\n\ndata: ok\n\n"), [{ id: "", event: "message", data: "ok" }]);
  });
});
