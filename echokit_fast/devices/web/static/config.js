// The config editor: the running config.toml as text (the source of truth), a form per
// section whose fields rewrite their own line of the text, the server's check (the one of
// `echokit-fast check-config`) with each problem at its line, and Save when the server takes
// saves. The API key the user gives when the API answers 401 (or 403: this machine only) is
// kept for this tab (console-key.js), as the status page does (the same entry).

import { el, errorLine } from "./console-ui.js";
import { keyHeaders, keyRefusal, onKeyForm } from "./console-key.js";

const SECRET = /(^|_)(api_key|token|key|secret|password)$/;
const REFORM_MS = 400; // the form follows the text this long after the last keystroke

const $ = (id) => document.getElementById(id);
const ui = {
  state: $("state"),
  error: $("error"),
  keyForm: $("key-form"),
  key: $("key"),
  source: $("source"),
  sections: $("sections"),
  text: $("text"),
  gutter: $("gutter"),
  check: $("check"),
  save: $("save"),
  saveHint: $("save-hint"),
  verdict: $("verdict"),
  problems: $("problems"),
};

// What the tests read.
const stats = { state: "loading", checks: 0, saves: 0, problems: [], selectedLine: null, errors: [] };
window.echokitConfig = stats;

const STATE_LABELS = {
  loading: "Loading…",
  ready: "Loaded",
  checking: "Checking…",
  saving: "Saving…",
  locked: "API key needed",
  failed: "Not loaded",
};

let platforms = {};
let writable = false;
let reform = null;
let badLines = new Set();

function setState(state) {
  stats.state = state;
  ui.state.dataset.state = state === "ready" ? "live" : state;
  ui.state.textContent = STATE_LABELS[state];
}

const { show: showError, clear: clearError } = errorLine(ui.error, stats.errors);

// -- the API -----------------------------------------------------------------------------------

async function errorOf(response) {
  try {
    return (await response.json()).error;
  } catch {
    return { message: `HTTP ${response.status}`, code: null };
  }
}

// 401, or 403 because the console answers this machine only: a key opens it
function needsKey(response, error) {
  return response.status === 401 || (response.status === 403 && error.code === "console_local_only");
}

function askForKey(status, message) {
  showError(`${keyRefusal(status)}: ${message}`);
  setState("locked");
  ui.keyForm.hidden = false;
  ui.key.focus();
}

async function call(method, path, body) {
  const init = { method, headers: keyHeaders(), cache: "no-store" };
  if (body !== undefined) {
    init.body = body;
    init.headers = keyHeaders({ "Content-Type": "application/toml; charset=utf-8" });
  }
  return fetch(path, init);
}

// -- the text and its lines --------------------------------------------------------------------

function lines() {
  return ui.text.value.split("\n");
}

function renderGutter() {
  const count = lines().length;
  const rows = [];
  for (let n = 1; n <= count; n++) {
    const row = el("div", badLines.has(n) ? "bad" : "", String(n));
    rows.push(row);
  }
  ui.gutter.replaceChildren(...rows);
  ui.gutter.scrollTop = ui.text.scrollTop;
}

// select line `n` of the text (1-based) and scroll it into view
function selectLine(n) {
  const all = lines();
  const line = Math.max(1, Math.min(n, all.length));
  let start = 0;
  for (let i = 0; i < line - 1; i++) start += all[i].length + 1;
  ui.text.focus();
  ui.text.setSelectionRange(start, start + all[line - 1].length);
  const height = parseFloat(getComputedStyle(ui.text).lineHeight) || 20;
  ui.text.scrollTop = Math.max(0, (line - 1) * height - ui.text.clientHeight / 3);
  ui.gutter.scrollTop = ui.text.scrollTop;
  stats.selectedLine = line;
}

// A TOML value written on one line: a string (basic or literal), a number or a boolean, and a
// comment after it; null for anything else (arrays, inline tables, multi-line strings), which
// only the text edits.
function scalar(raw) {
  let m = raw.match(/^"((?:[^"\\]|\\.)*)"(\s*#.*)?$/);
  if (m) {
    try {
      return { kind: "string", value: JSON.parse(`"${m[1]}"`), comment: m[2] || "" };
    } catch {
      return null;
    }
  }
  m = raw.match(/^'([^']*)'(\s*#.*)?$/);
  if (m) return { kind: "string", value: m[1], comment: m[2] || "" };
  m = raw.match(/^(true|false)(\s*#.*)?$/);
  if (m) return { kind: "bool", value: m[1], comment: m[2] || "" };
  m = raw.match(/^([+-]?(?:inf|nan|[0-9][0-9_]*(?:\.[0-9_]+)?(?:[eE][+-]?[0-9_]+)?))(\s*#.*)?$/);
  if (m) return { kind: "number", value: m[1], comment: m[2] || "" };
  return null;
}

// the tables of the text, each with its one-line keys: [{name, line, keys: [{key, line, ...}]}]
function outline(text) {
  const out = [{ name: "", line: 0, keys: [] }];
  let multi = null; // the closing quotes of a multi-line string being skipped
  text.split("\n").forEach((line, i) => {
    if (multi) {
      if (line.includes(multi)) multi = null;
      return;
    }
    const head = line.match(/^\s*(\[\[?)\s*([A-Za-z0-9_.-]+(?:\s*\.\s*[A-Za-z0-9_-]+)*)\s*\]\]?\s*(#.*)?$/);
    if (head) {
      out.push({ name: head[2].replace(/\s+/g, ""), array: head[1] === "[[", line: i + 1, keys: [] });
      return;
    }
    const kv = line.match(/^(\s*)([A-Za-z0-9_-]+)(\s*=\s*)(.*?)\s*$/);
    if (!kv) return;
    const opens = kv[4].match(/^("""|''')/);
    if (opens && !kv[4].slice(3).includes(opens[1])) {
      multi = opens[1];
      return;
    }
    const value = scalar(kv[4]);
    if (value) out[out.length - 1].keys.push({ key: kv[2], line: i + 1, lead: kv[1] + kv[2] + kv[3], ...value });
  });
  return out.filter((s) => s.keys.length);
}

function toml(kind, value) {
  if (kind === "string") return JSON.stringify(value).replace(/\x7f/g, "\\u007f");
  return value.trim();
}

// the form's edit of one key: its line rewritten, the rest of the text as it is
function rewrite(entry, value) {
  const all = lines();
  all[entry.line - 1] = entry.lead + toml(entry.kind, value) + entry.comment;
  const at = ui.text.scrollTop;
  ui.text.value = all.join("\n");
  ui.text.scrollTop = at;
  renderGutter();
}

// -- the form ----------------------------------------------------------------------------------

function platformSelect(kind, entry, id) {
  const select = el("select");
  select.id = id;
  const known = platforms[kind] || [];
  const names = new Set();
  for (const p of known) {
    const option = el("option", "", p.runnable ? p.name : `${p.name} (not served)`);
    option.value = p.name;
    names.add(p.name);
    for (const alias of p.aliases) if (alias === entry.value) option.value = alias;
    select.append(option);
  }
  if (![...select.options].some((o) => o.value === entry.value)) {
    const option = el("option", "", `${entry.value} (unknown)`);
    option.value = entry.value;
    select.prepend(option);
  }
  select.value = entry.value;
  select.addEventListener("change", () => {
    rewrite(entry, select.value);
    entry.value = select.value;
  });
  return select;
}

function field(section, entry, index) {
  const id = `f-${index}`;
  const row = el("div", "field");
  const label = el("label", "", entry.key);
  label.htmlFor = id;
  let input;
  const kind = section.name;
  if (entry.key === "platform" && kind in platforms) {
    input = platformSelect(kind, entry, id);
  } else if (entry.kind === "bool") {
    input = el("select");
    for (const v of ["true", "false"]) input.append(Object.assign(el("option", "", v), { value: v }));
    input.value = entry.value;
    input.addEventListener("change", () => rewrite(entry, input.value));
  } else {
    input = el("input");
    input.type = entry.kind === "string" && SECRET.test(entry.key) ? "password" : "text";
    if (entry.kind === "number") input.inputMode = "decimal";
    input.autocomplete = "off";
    input.spellcheck = false;
    input.value = entry.value;
    input.addEventListener("input", () => rewrite(entry, input.value));
  }
  input.id = id;
  input.dataset.line = entry.line;
  row.append(label, input);
  return row;
}

function renderForm() {
  const sections = outline(ui.text.value);
  const nodes = [];
  let index = 0;
  for (const section of sections) {
    const box = el("fieldset", "section");
    box.dataset.section = section.name || "(top)";
    const title = section.name ? (section.array ? `[[${section.name}]]` : `[${section.name}]`) : "top level";
    box.append(el("legend", "", title));
    for (const entry of section.keys) box.append(field(section, entry, index++));
    nodes.push(box);
  }
  if (!nodes.length) nodes.push(el("p", "hint", "No key to show: edit the text."));
  ui.sections.replaceChildren(...nodes);
}

// -- the check and the save --------------------------------------------------------------------

function renderProblems(result) {
  const items = [];
  stats.problems = [];
  badLines = new Set();
  for (const kind of ["error", "warning", "note"]) {
    for (const p of result[`${kind}s`] || []) {
      stats.problems.push({ kind, ...p });
      if (kind === "error" && p.line) badLines.add(p.line);
      const li = el("li", "problem");
      li.dataset.kind = kind;
      const where = [p.line ? `line ${p.line}` : "", p.key || ""].filter(Boolean).join(" · ");
      const text = `${kind}: ${p.message}`;
      if (p.line) {
        const button = el("button");
        button.type = "button";
        button.dataset.line = p.line;
        button.append(el("span", "where", where), document.createTextNode(` — ${text}`));
        button.setAttribute("aria-label", `${where}: ${text} (select the line)`);
        button.addEventListener("click", () => selectLine(p.line));
        li.append(button);
      } else {
        if (where) li.append(el("span", "where", where), document.createTextNode(" — "));
        li.append(document.createTextNode(text));
      }
      items.push(li);
    }
  }
  ui.problems.replaceChildren(...items);
  const errors = stats.problems.filter((p) => p.kind === "error").length;
  ui.verdict.className = result.ok ? "hint verdict-ok" : "hint";
  ui.verdict.textContent = result.ok
    ? `OK: the server can run this config${items.length ? ` (${items.length} warning or note)` : ""}.`
    : `${errors} error${errors === 1 ? "" : "s"}: the server would refuse this config.`;
  renderGutter();
}

async function check() {
  setState("checking");
  let response;
  try {
    response = await call("POST", "api/config/check", ui.text.value);
  } catch {
    showError("The server cannot be reached.");
    setState("ready");
    return;
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (needsKey(response, error)) return askForKey(response.status, error.message);
    showError(`The check answered: ${error.message}`);
    setState("ready");
    return;
  }
  clearError();
  renderProblems(await response.json());
  stats.checks++;
  setState("ready");
}

async function save() {
  setState("saving");
  let response;
  try {
    response = await call("PUT", "api/config", ui.text.value);
  } catch {
    showError("The server cannot be reached.");
    setState("ready");
    return;
  }
  const body = await response.clone().json().catch(() => ({}));
  if (response.status === 422) {
    renderProblems(body);
    showError(body.error.message);
  } else if (!response.ok) {
    const error = body.error || { message: `HTTP ${response.status}` };
    if (needsKey(response, error)) return askForKey(response.status, error.message);
    showError(`Not saved: ${error.message}`);
  } else {
    clearError();
    renderProblems(body);
    stats.saves++;
    const applied = body.applied.length ? `applied now: ${body.applied.join(", ")}` : "nothing to apply";
    const restart = body.needs_restart.length ? ` Needs a restart: ${body.needs_restart.join("; ")}.` : "";
    const kept = body.backup ? ` (the previous file is ${body.backup})` : "";
    ui.verdict.textContent = `Saved to ${body.path}${kept}; ${applied}.${restart}`;
  }
  setState("ready");
}

// -- loading -----------------------------------------------------------------------------------

async function load() {
  setState("loading");
  let response;
  try {
    response = await call("GET", "api/config");
  } catch {
    showError("The server cannot be reached.");
    setState("failed");
    return;
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (needsKey(response, error)) return askForKey(response.status, error.message);
    showError(`The config answered: ${error.message}`);
    setState("failed");
    return;
  }
  const body = await response.json();
  clearError();
  ui.keyForm.hidden = true;
  platforms = body.platforms;
  writable = body.writable;
  ui.source.textContent = body.path
    ? `The file the server was started with: ${body.path}`
    : "The server runs on the embedded default (no config file): this is it, as a file would say it.";
  if (body.text === null) showError(body.error);
  ui.text.value = body.text || "";
  ui.save.disabled = !writable;
  ui.saveHint.textContent = writable
    ? "Save writes the file (the previous one is kept as .bak) and applies it: connected devices stay connected."
    : body.write_refusal;
  renderGutter();
  renderForm();
  setState("ready");
  await check();
}

ui.text.addEventListener("input", () => {
  renderGutter();
  clearTimeout(reform);
  reform = setTimeout(renderForm, REFORM_MS);
});
ui.text.addEventListener("scroll", () => {
  ui.gutter.scrollTop = ui.text.scrollTop;
});
ui.check.addEventListener("click", check);
ui.save.addEventListener("click", () => {
  if (writable) save();
});
onKeyForm(ui.keyForm, ui.key, () => {
  clearError();
  load();
});

load();
