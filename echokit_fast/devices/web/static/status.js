// The status page: what the server is doing, live. It reads the Server-Sent Events of
// api/status/events (snapshot, then turn and status events, closing at shutdown) with fetch,
// which, unlike EventSource, can send the API key in Authorization; the key the user gives
// when the API answers 401 or 403 is kept in sessionStorage (this tab only). Nothing is
// polled: the stream ends only when the server goes away (then the page connects again).

import { el, errorLine } from "./console-ui.js";
import { keyHeaders, keyRefusal, onKeyForm } from "./console-key.js";

const RETRIES = [1000, 2000, 4000, 8000]; // delays (ms) before connecting again
const MAX_TURNS = 50; // the turns shown (the server keeps as many)

const STAGE_LABELS = {
  speech_end: "end of speech",
  end_vad: "end of VAD",
  asr_done: "ASR done",
  llm_first: "first LLM token",
  tts_first: "first TTS audio",
  first_frame: "first frame",
  last_frame: "last frame",
};
// a turn's speculative reply (none: not started, or speculation off)
const SPECULATIVE_LABELS = {
  hit: "answer started at the pause, used",
  miss: "answer started at the pause, dropped",
};
const STATE_LABELS = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  closing: "Server shutting down",
  locked: "API key needed",
};

const $ = (id) => document.getElementById(id);
const ui = {
  live: $("live"),
  error: $("error"),
  keyForm: $("key-form"),
  key: $("key"),
  health: $("health"),
  engines: $("engines"),
  devices: $("devices"),
  turns: $("turns"),
};

// What the tests read: the feed's state, the snapshots and events received, the turns shown.
const stats = { state: "connecting", snapshots: 0, events: 0, turns: [], errors: [] };
window.echokitStatus = stats;

let stages = Object.keys(STAGE_LABELS);
let failures = 0;
let retry = null;
let aborter = null;

function setState(state) {
  stats.state = state;
  ui.live.dataset.state = state;
  ui.live.textContent = STATE_LABELS[state];
}

const { show: showError, clear: clearError } = errorLine(ui.error, stats.errors);

const clock = (unix) => new Date(unix * 1000).toLocaleTimeString();
const ms = (value) => (value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${Math.round(value)} ms`);

function facts(dl, rows) {
  dl.replaceChildren();
  for (const [name, value] of rows) {
    dl.append(el("dt", "", name), el("dd", "", value));
  }
}

// -- rendering ---------------------------------------------------------------------------------

function renderHealth(status) {
  const server = status.server;
  const rows = [
    ["State", server.error ? `${server.state}: ${server.error}` : server.state],
    ["Version", server.version],
    ["Layout", server.layout],
  ];
  if (server.worker) {
    const w = server.worker;
    rows.push(["Worker", `${w.index + 1} of ${w.count}: this page shows that process's devices and turns`]);
  }
  for (const [kind, backend] of Object.entries(status.backends)) {
    let text = backend.model ? `${backend.platform} (${backend.model})` : backend.platform;
    if (backend.reachable === true) text += ", reachable at start-up";
    if (backend.reachable === false) text += ", unreachable at start-up";
    rows.push([kind.toUpperCase(), text]);
  }
  const outcomes = Object.entries(status.outcomes);
  rows.push(["Turns", outcomes.length ? outcomes.map(([k, n]) => `${k}: ${n}`).join(", ") : "none yet"]);
  facts(ui.health, rows);
}

function renderEngines(engines) {
  const rows = [];
  if (engines.tts) {
    const t = engines.tts;
    rows.push([
      `TTS (${t.engine})`,
      `${t.active} of ${t.streams} streams in use (${t.device_reserve} kept for devices), ${t.waiting} waiting`,
    ]);
  }
  if (engines.asr) {
    const a = engines.asr;
    rows.push([`ASR (${a.model})`, `${a.pending} of ${a.limit} transcriptions queued or running`]);
  }
  if (engines.llm) {
    const l = engines.llm;
    let text = `${l.pending} answers queued or being written (at most ${l.max_queue + 1})`;
    if (l.last) {
      text += `; last: ${l.last.tokens} tokens in ${l.last.total_s.toFixed(2)} s, ${l.last.outcome}`;
      if (l.last.first_token_s !== null) text += `, first token after ${l.last.first_token_s.toFixed(2)} s`;
    }
    rows.push([`LLM (${l.model})`, text]);
  }
  if (!rows.length) rows.push(["In-process engines", "none loaded (the backends are remote)"]);
  facts(ui.engines, rows);
}

function renderDevices(devices) {
  ui.devices.replaceChildren();
  if (!devices.length) {
    ui.devices.append(el("li", "empty", "No device has connected yet."));
    return;
  }
  for (const d of devices) {
    const li = el("li", "device");
    li.dataset.device = d.id;
    const head = el("p", "card-head");
    head.append(el("strong", "device-id", d.id), el("span", "badge", d.state));
    head.lastChild.dataset.state = d.state;
    const turns = d.turns === 1 ? "1 turn" : `${d.turns} turns`;
    const since = d.connected ? `connected at ${clock(d.since)}` : `left at ${clock(d.since)}`;
    const via = d.front_end ? `${d.front_end}, ` : "";
    li.append(head, el("p", "card-line", `${via}${since}, ${turns}`));
    ui.devices.append(li);
  }
}

// one turn: a table of its stages, each with its time and a bar from the stage before
function turnItem(t) {
  const li = el("li", "turn");
  li.dataset.seq = t.seq;
  const table = el("table", "waterfall");
  const caption = el("caption");
  const outcome = t.failed ? `${t.outcome} (${t.failed})` : t.outcome;
  caption.append(
    el("strong", "device-id", t.device),
    ` · turn ${t.turn} · `,
    el("span", "badge", outcome),
    ` · ${clock(t.at)}`,
  );
  caption.querySelector(".badge").dataset.outcome = t.outcome;
  table.append(caption);
  const head = el("tr");
  for (const name of ["Stage", "At", "Step"]) {
    const th = el("th", "", name);
    th.scope = "col";
    head.append(th);
  }
  table.append(el("thead"), el("tbody"));
  table.tHead.append(head);
  const present = stages.filter((s) => s in t.ms);
  const total = Math.max(1, ...present.map((s) => t.ms[s]));
  let previous = 0;
  for (const stage of present) {
    const at = t.ms[stage];
    const step = Math.max(0, at - previous);
    const row = el("tr");
    row.dataset.stage = stage;
    const name = el("th", "", STAGE_LABELS[stage] || stage);
    name.scope = "row";
    const cell = el("td", "step");
    const track = el("span", "track");
    track.setAttribute("aria-hidden", "true");
    const bar = el("span", "bar");
    bar.style.left = `${(Math.min(previous, at) / total) * 100}%`;
    bar.style.width = `${Math.max((step / total) * 100, 0.5)}%`;
    track.append(bar);
    cell.append(el("span", "value", `+${ms(step)}`), track);
    row.append(name, el("td", "at", ms(at)), cell);
    table.tBodies[0].append(row);
    previous = Math.max(previous, at);
  }
  if (!present.length) {
    const row = el("tr");
    const cell = el("td", "", "No stage reached.");
    cell.colSpan = 3;
    row.append(cell);
    table.tBodies[0].append(row);
  }
  const extra = [];
  if (t.segments !== undefined) extra.push(t.segments === 1 ? "1 segment" : `${t.segments} segments`);
  extra.push(t.ms.speech_end !== undefined ? "from the end of speech" : "from the typed message");
  if (t.speculative in SPECULATIVE_LABELS) extra.push(SPECULATIVE_LABELS[t.speculative]);
  li.append(table, el("p", "card-line", extra.join(", ")));
  return li;
}

function addTurn(t) {
  if (stats.turns.includes(t.seq)) return;
  stats.turns.push(t.seq);
  const empty = ui.turns.querySelector(".empty");
  if (empty) empty.remove();
  ui.turns.prepend(turnItem(t));
  while (ui.turns.children.length > MAX_TURNS) ui.turns.lastElementChild.remove();
}

function renderTurns(turns) {
  ui.turns.replaceChildren();
  stats.turns = [];
  if (!turns.length) ui.turns.append(el("li", "empty", "No turn yet."));
  for (const t of turns) addTurn(t);
}

function renderStatus(status) {
  renderHealth(status);
  renderEngines(status.engines);
  renderDevices(status.devices);
}

function onEvent(kind, data) {
  stats.events++;
  if (kind === "snapshot") {
    stats.snapshots++;
    stages = data.stages;
    renderStatus(data);
    renderTurns(data.turns);
  } else if (kind === "status") {
    renderStatus(data);
  } else if (kind === "turn") {
    addTurn(data);
  } else if (kind === "closing") {
    setState("closing");
  }
}

// -- the feed ------------------------------------------------------------------------------

async function refusalMessage(response) {
  try {
    return (await response.json()).error.message;
  } catch {
    return `HTTP ${response.status}`;
  }
}

function askForKey(status, message) {
  showError(`${keyRefusal(status)}: ${message}`);
  setState("locked");
  ui.keyForm.hidden = false;
  ui.key.focus();
}

// the SSE stream, parsed: blocks separated by a blank line, "event:" and "data:" lines
async function read(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) onEvent(kind, JSON.parse(data.join("\n")));
    }
  }
}

function again() {
  clearTimeout(retry);
  const delay = RETRIES[Math.min(failures, RETRIES.length - 1)];
  failures++;
  retry = setTimeout(connect, delay);
}

async function connect() {
  aborter = new AbortController();
  let response;
  try {
    response = await fetch("api/status/events", { headers: keyHeaders(), cache: "no-store", signal: aborter.signal });
  } catch {
    if (aborter.signal.aborted) return;
    setState("reconnecting");
    again();
    return;
  }
  if (response.status === 401 || response.status === 403) {
    askForKey(response.status, await refusalMessage(response));
    return;
  }
  if (!response.ok) {
    if (stats.state !== "closing") setState("reconnecting");
    showError(`The status feed answered: ${await refusalMessage(response)}`);
    again();
    return;
  }
  clearError();
  ui.keyForm.hidden = true;
  setState("live");
  failures = 0;
  try {
    await read(response.body);
  } catch {
    if (aborter.signal.aborted) return;
  }
  if (stats.state !== "closing") setState("reconnecting");
  again();
}

onKeyForm(ui.keyForm, ui.key, () => {
  clearError();
  setState("connecting");
  connect();
});

window.addEventListener("pagehide", () => {
  clearTimeout(retry);
  if (aborter) aborter.abort();
});

connect();
