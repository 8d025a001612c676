// The resub browser example. Served by the fixture server (`--static`), so
// the page and the server share an origin: location.origin is the server.
// The package is built into ./pkg with `bash scripts/build-npm.sh examples/browser/pkg`.

const MAX_EVENTS = 200;
const server = location.origin;

const $ = (id) => document.getElementById(id);
const ui = {
  state: $("state"),
  transport: $("transport"),
  detail: $("detail"),
  received: $("received"),
  resets: $("resets"),
  replayed: $("replayed"),
  duplicates: $("duplicates"),
  connections: $("connections"),
  channel: $("channel"),
  message: $("message"),
  currentChannel: $("current-channel"),
  events: $("events"),
  notice: $("notice"),
  drop: $("drop"),
  toggleWs: $("toggle-ws"),
};

function notify(text, isError = false) {
  ui.notice.textContent = text;
  ui.notice.classList.toggle("error", isError);
}

let resub;
try {
  resub = await import("./pkg/index.js");
} catch (e) {
  ui.state.textContent = "not loaded";
  ui.state.dataset.state = "closed";
  const wasm = e instanceof WebAssembly.CompileError || e instanceof WebAssembly.LinkError;
  notify(
    wasm
      ? `The package's WebAssembly did not load in this browser: ${e.message}`
      : `Cannot load the package from ./pkg (${e.message}). Build it with ` +
          "`bash scripts/build-npm.sh examples/browser/pkg` and reload.",
    true,
  );
  throw e;
}
const { Client, ResubError } = resub;

// upgradeProbeMs: while on a fallback, try WebSocket again every 10 s (the
// default is a minute), so that allowing it again shows within the demo.
const client = new Client(server, { upgradeProbeMs: 10_000 });

// ---- counters ---------------------------------------------------------------

let received = 0;
let resets = 0;

function showCounters() {
  const stats = client.stats;
  ui.received.textContent = received;
  ui.resets.textContent = resets;
  ui.replayed.textContent = stats.replayed;
  ui.duplicates.textContent = stats.duplicates;
  ui.connections.textContent = stats.connections;
}
// The client's stats also change between events (a reconnect): refresh them.
setInterval(showCounters, 1000);

// ---- connection state -------------------------------------------------------

function showState(s) {
  showCounters();
  ui.state.dataset.state = s.state;
  ui.state.textContent = s.state;
  ui.transport.textContent = s.transport ?? "–";
  switch (s.state) {
    case "connecting":
      ui.detail.textContent = s.attempt > 0 ? `attempt ${s.attempt + 1}` : "";
      break;
    case "connected":
      ui.detail.textContent = s.fallback ? `fell back from ${s.fallback.from}: ${s.fallback.detail}` : "";
      break;
    case "disconnected":
      ui.detail.textContent = `${s.detail}; retrying in ${(s.retryInMs / 1000).toFixed(1)} s`;
      break;
    case "closed":
      ui.detail.textContent = s.error ? `${s.error.code}: ${s.error.message}` : "";
      break;
  }
}

// onState returns a function that stops the listener; keep it referenced for
// as long as the listener should run.
const stopStates = client.onState(showState);
showState(client.state);

// ---- the event list ---------------------------------------------------------

function cell(className, text) {
  const span = document.createElement("span");
  span.className = className;
  span.textContent = text;
  return span;
}

function addRow(row) {
  const empty = ui.events.querySelector(".empty");
  if (empty) empty.remove();
  ui.events.prepend(row);
  while (ui.events.children.length > MAX_EVENTS) ui.events.lastElementChild.remove();
}

function showMessage(msg) {
  const row = document.createElement("li");
  if ("reset" in msg) {
    row.className = "reset";
    row.append(cell("event", "reset"), cell("id", msg.head), cell("data", `${msg.reset}: events may be missing`));
  } else {
    row.append(cell("event", msg.event), cell("id", msg.id), cell("data", msg.data));
    row.title = `id ${msg.id}`;
  }
  addRow(row);
}

// ---- subscribing --------------------------------------------------------------

let current = null;

// The cursor of each channel, kept in localStorage: a reload resumes after
// the last event shown, so nothing published meanwhile is missed.
const cursorKey = (channel) => `resub-example.cursor.${channel}`;

async function follow(sub) {
  try {
    for await (const msg of sub) {
      if (msg.type == "resumed" || msg.type == "presence") continue;
      if (msg.type == "reset") resets++;
      else received++;
      localStorage.setItem(cursorKey(sub.channel), msg.type == "reset" ? msg.head : msg.id);
      showMessage(msg);
      showCounters();
    }
  } catch (e) {
    notify(`subscription to ${sub.channel} ended: ${e.code ?? ""} ${e.message}`, true);
  }
}

function subscribe(channel) {
  if (current) current.close();
  ui.events.replaceChildren(Object.assign(document.createElement("li"), { className: "empty", textContent: "Nothing yet: publish a message." }));
  received = 0;
  resets = 0;
  showCounters();
  ui.currentChannel.textContent = channel;
  const from = localStorage.getItem(cursorKey(channel)) ?? undefined;
  current = client.subscribe(channel, { from });
  follow(current);
  const url = new URL(location.href);
  url.searchParams.set("channel", channel);
  history.replaceState(null, "", url);
}

$("subscribe-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const channel = ui.channel.value.trim();
  if (channel && channel !== current?.channel) subscribe(channel);
});

// ---- publishing ---------------------------------------------------------------

let sent = 0;
$("publish-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (!current) return;
  const data = ui.message.value || `hello #${++sent} at ${new Date().toLocaleTimeString()}`;
  try {
    const id = await client.publish(current.channel, data);
    notify(`published as ${id}`);
    ui.message.value = "";
  } catch (err) {
    const code = err instanceof ResubError ? err.code : "error";
    notify(`publish failed: ${code}: ${err.message}`, true);
  }
});

// ---- faults (the fixture's control routes) ----------------------------------

async function control(path) {
  const res = await fetch(`${server}/control/${path}`, { method: "POST" });
  if (!res.ok) throw new Error(`${res.status} ${await res.text()}`);
  return res.json();
}

ui.drop.addEventListener("click", async () => {
  try {
    const { dropped } = await control("drop");
    notify(`dropped ${dropped} connection${dropped === 1 ? "" : "s"}`);
  } catch (e) {
    notify(`drop failed: ${e.message}`, true);
  }
});

// The fixture does not report its switches: remember the last one set here.
const wsRefusedKey = "resub-example.ws-refused";

function showWs(refused) {
  ui.toggleWs.setAttribute("aria-pressed", String(refused));
  ui.toggleWs.textContent = refused ? "Allow WebSocket" : "Refuse WebSocket";
  localStorage.setItem(wsRefusedKey, String(refused));
}
showWs(localStorage.getItem(wsRefusedKey) === "true");

ui.toggleWs.addEventListener("click", async () => {
  const refuse = ui.toggleWs.getAttribute("aria-pressed") !== "true";
  try {
    const { websocket } = await control(`websocket?enabled=${!refuse}`);
    showWs(!websocket);
    notify(
      websocket
        ? "WebSocket upgrades allowed: the client moves back to ws at its next probe (within 10 s)"
        : "WebSocket upgrades refused: reload the page to watch a new client fall back to SSE",
    );
  } catch (e) {
    notify(`cannot switch WebSocket: ${e.message}`, true);
  }
});

// ---- start --------------------------------------------------------------------

const initial = new URL(location.href).searchParams.get("channel") || ui.channel.value || "demo";
ui.channel.value = initial;
subscribe(initial);
