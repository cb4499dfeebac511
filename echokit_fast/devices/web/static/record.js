// The talk page's Record mode: the microphone streamed to the server's record mode
// (/ws/{id}?record=true, docs/protocol.md#record-mode), which saves it as a WAV file, one per
// recording; and the list of this device's recordings (/console/api/recordings), each one
// downloadable. The list is read with the API key the status page keeps for this tab, if any
// (the console's rule: a key when the server has one, else this computer only).

import { keyHeaders } from "./console-key.js";
import { capture, micError, openMicrophone } from "./mic.js";

const SETTLE_MS = 250; // after a recording: how long between looks until its file is finished
const SETTLE_TRIES = 20;

function recordUrl(id) {
  const url = new URL("ws/" + encodeURIComponent(id), location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  const query = new URLSearchParams({ record: "true" });
  const token = new URLSearchParams(location.search).get("token");
  if (token) query.set("token", token);
  url.search = query.toString();
  return url.toString();
}

// One recording. `page`: { stats, setState(state), showError(message), stopped() }
export class Recording {
  constructor(id, page) {
    this.id = id;
    this.page = page;
    this.ws = null;
    this.ctx = null;
    this.stream = null;
    this.waiting = []; // the frames heard while the socket opens, sent once it is open
    this.stopped = false;
  }

  async start() {
    this.page.setState("connecting");
    this.ctx = new AudioContext(); // made in the click
    try {
      this.stream = await openMicrophone();
    } catch (err) {
      if (!this.stopped) this.fail(micError(err));
      return;
    }
    if (this.stopped) return;
    try {
      await capture(this.ctx, this.stream, (pcm) => this.onFrame(pcm));
    } catch (err) {
      if (!this.stopped) this.fail("The audio could not be started: " + (err && err.message ? err.message : err));
      return;
    }
    if (!this.stopped) this.connect(); // the file is made once the microphone is there
  }

  connect() {
    const ws = new WebSocket(recordUrl(this.id));
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.page.stats.sockets++;
      this.page.setState("recording");
      for (const pcm of this.waiting.splice(0)) this.send(pcm);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws || this.stopped) return;
      this.ws = null;
      if (!opened) {
        this.fail(
          "The server refused the recording: this device's recordings fill its disk quota, or " +
          "the device is refused (check [server] devices, and give the device_token as ?token=)."
        );
      } else if (e.reason) { // a cap of [limits] ended it
        this.page.showError("The server ended the recording: " + e.reason + ".");
        this.stop();
      } else {
        this.fail("Lost the connection to the server: the recording ended.");
      }
    };
  }

  onFrame(pcm) {
    if (!this.ws) return;
    if (this.ws.readyState === WebSocket.CONNECTING) this.waiting.push(pcm);
    else if (this.ws.readyState === WebSocket.OPEN) this.send(pcm);
  }

  send(pcm) {
    this.ws.send(pcm.buffer);
    this.page.stats.recordedSamples += pcm.length;
  }

  fail(message) {
    this.page.showError(message);
    this.stop("error");
  }

  stop(state = "idle") {
    if (this.stopped) return;
    this.stopped = true;
    if (this.ws) this.ws.close(1000); // the server finishes the file
    this.ws = null;
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.ctx) this.ctx.close();
    this.page.setState(state);
    this.page.stopped();
  }
}

function sizeText(bytes) {
  return bytes < 1e6 ? Math.round(bytes / 1e3) + " kB" : (bytes / 1e6).toFixed(1) + " MB";
}

// the file saved under its name, fetched with the key (a plain link could not send it)
async function download(entry, note) {
  const response = await fetch(entry.url, { headers: keyHeaders() });
  if (!response.ok) {
    note.textContent = "The recording could not be downloaded (HTTP " + response.status + ").";
    return;
  }
  const href = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = href;
  link.download = entry.name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(href), 60000);
}

// The list of this device's recordings. `ui`: { list, note }; `stats.recordings` what it shows.
export class RecordingList {
  constructor(id, ui, stats) {
    this.id = id;
    this.ui = ui;
    this.stats = stats;
    this.reading = 0; // the latest refresh: an older one's answer is not shown
  }

  // after a recording (`settle`), looked at again until its file is finished
  async refresh({ settle = false } = {}) {
    const reading = ++this.reading;
    for (let tries = 0; ; tries++) {
      const entries = await this.read();
      if (reading !== this.reading) return;
      const busy = entries && entries.some((e) => !e.finished);
      if (!settle || !busy || tries >= SETTLE_TRIES) {
        this.show(entries);
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
    }
  }

  // the device's recordings, or null (said in the note) when they may not be read
  async read() {
    const url = new URL("console/api/recordings", location.href);
    url.search = new URLSearchParams({ device: this.id }).toString();
    let response;
    try {
      response = await fetch(url, { headers: keyHeaders(), cache: "no-store" });
    } catch {
      this.ui.note.textContent = "The list of recordings could not be read: the server is not reachable.";
      return null;
    }
    if (response.status === 401 || response.status === 403) {
      this.ui.note.textContent =
        "The list of recordings needs the server's API key (give it on the Status page), " +
        "or this page opened on the server's own computer.";
      return null;
    }
    if (!response.ok) {
      this.ui.note.textContent = "The list of recordings could not be read (HTTP " + response.status + ").";
      return null;
    }
    return (await response.json()).recordings;
  }

  show(entries) {
    if (entries === null) return;
    this.stats.recordings = entries;
    this.ui.note.textContent = entries.length ? "" : "No recordings yet.";
    this.ui.list.replaceChildren(
      ...entries.map((entry) => {
        const li = document.createElement("li");
        const link = document.createElement("a");
        link.href = entry.url;
        link.download = entry.name;
        link.textContent = entry.name;
        link.addEventListener("click", (e) => {
          e.preventDefault();
          download(entry, this.ui.note);
        });
        const facts = document.createElement("span");
        facts.className = "facts";
        const when = new Date(entry.modified * 1000).toLocaleString();
        const length = entry.finished ? entry.seconds.toFixed(1) + " s" : "still recording";
        facts.textContent = `${length}, ${sizeText(entry.bytes)}, ${when}`;
        li.append(link, " ", facts);
        return li;
      }),
    );
  }
}
