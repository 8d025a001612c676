// The installed `resub` package in Chromium against a server written from
// PROTOCOL.md alone, not the fixture: frames in every shape the protocol
// allows (unknown fields, which clients MUST ignore, `event: null`, keys in
// any order, escapes, unknown frame types between events), over SSE and long
// polling. Events in the plain shape are read by the driver and handed over
// without their data crossing into wasm; the others are decoded by the core.
// Both kinds, mixed in one stream, must reach the application in order,
// exactly once, with their data and event types as sent.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { pageForTests } from "../lib/harness.js";

let page;
pageForTests((p) => (page = p));

const CHANNEL = "legal";

/** The channel's history: event frames as a server may send them, ids e-1..e-8. */
const EVENTS = [
  { type: "event", channel: CHANNEL, id: "e-1", data: "one" },
  { type: "event", channel: CHANNEL, id: "e-2", data: "two", extra: { nested: [1, 2] } },
  { type: "event", channel: CHANNEL, id: "e-3", event: null, data: "three" },
  { type: "event", channel: CHANNEL, id: "e-4", event: "tick", data: '{"n":4}' },
  { data: "f\u00fcnf \ud83d\ude00", id: "e-5", channel: CHANNEL, type: "event" },
  { type: "event", channel: CHANNEL, id: "e-6", data: "six", head: "not read" },
  { type: "event", channel: CHANNEL, id: "e-7", data: "" },
  { type: "event", channel: CHANNEL, id: "e-8", data: "eight", unknown: null },
];

/** What the application must see: every event, in order, as sent. */
const EXPECTED = EVENTS.map((e) => ({ id: e.id, event: e.event ?? "message", data: e.data }));

/** The frames a connection starting after `cursor` is owed, up to `until` (an index into EVENTS). */
function framesAfter(cursor, until = EVENTS.length) {
  const from = cursor ? EVENTS.findIndex((e) => e.id === cursor) + 1 : 0;
  const events = EVENTS.slice(from, Math.max(from, until));
  const frames = [
    { type: "welcome", heartbeat_ms: 0 },
    { type: "subscribed", channel: CHANNEL, outcome: "resumed", head: "e-8" },
  ];
  // An unknown frame type among the events: ignored.
  if (events.length > 1) frames.push({ type: "later", channel: CHANNEL });
  return frames.concat(events);
}

/** The cursor a request asks to resume after: `channel=legal@e-3`. */
function cursorOf(req) {
  const channel = new URL(req.url, "http://x").searchParams.get("channel") ?? "";
  return channel.split("@")[1];
}

let server, url;
before(async () => {
  server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    const cors = { "access-control-allow-origin": "*", "access-control-allow-headers": "*" };
    if (req.method === "OPTIONS") return res.writeHead(204, cors).end();
    if (path === "/sse") {
      res.writeHead(200, { ...cors, "content-type": "text/event-stream", "cache-control": "no-store" });
      for (const f of framesAfter(cursorOf(req))) res.write(`data: ${JSON.stringify(f)}\n\n`);
      return; // Left open, as a live stream is.
    }
    if (path === "/poll") {
      const cursor = cursorOf(req);
      // The first answer carries one plain event, the next all the others;
      // then the server holds the poll a while and answers with nothing new.
      const frames = framesAfter(cursor, cursor ? EVENTS.length : 1);
      const answer = () => res.writeHead(200, { ...cors, "content-type": "application/json" }).end(JSON.stringify({ frames }));
      if (cursor === "e-8") setTimeout(answer, 200);
      else answer();
      return;
    }
    res.writeHead(404, cors).end();
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${server.address().port}`;
});
after(() => {
  server.closeAllConnections();
  server.close();
});

for (const transport of ["sse", "poll"]) {
  test(`a server from PROTOCOL.md on ${transport}: every legal event shape arrives once, in order, as sent`, { timeout: 30_000 }, async () => {
    const got = await page.evaluate(
      async ({ url, transport, channel, count }) => {
        const client = new window.resub.Client(url, { transports: [transport], upgradeProbeMs: false });
        const events = [];
        try {
          await window.within(15_000, `${count} events`, (async () => {
            for await (const m of client.subscribe(channel, { from: "e-0" })) {
              if (m.type !== "event") continue;
              events.push({ id: m.id, event: m.event, data: m.data, channel: m.channel });
              if (events.length === count) break;
            }
          })());
        } finally {
          await client.close();
        }
        return events;
      },
      { url, transport, channel: CHANNEL, count: EVENTS.length },
    );
    assert.deepEqual(got.map(({ channel, ...rest }) => rest), EXPECTED);
    assert.ok(got.every((e) => e.channel === CHANNEL));
  });
}
