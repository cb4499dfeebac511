// The talk page: this browser is an EchoKit device on the server's own WebSocket, /ws/{id}
// (docs/protocol.md). Stream mode (stream_asr=true: the server ends each utterance). The
// microphone is listened to in the page; when speech starts the
// page sends StartChat and streams 16 kHz PCM16 frames (with the half second before it) until
// EndVad; the reply's segments are shown and played back to back; EndResponse, once the reply
// has played, listens again. Pressing the button during a reply interrupts it (StartChat on
// the same socket cancels the answer and starts the next utterance), and so does speaking
// over it: the microphone is listened to while the reply plays (the browser's echo
// cancellation keeps the reply out of it), and a voice louder than the reply's echo could be
// (a higher threshold than between turns, and at least a third as loud as the user's own speech
// was: the browser's gain control raises what is left of the echo as the reply goes on; for
// several frames in a row) stops the playback and is streamed as the next utterance (its
// first half second with it).
//
// The reply is Opus with lip-sync vowels (opus=true&vowel=true), decoded by WebCodecs, one
// decoder per segment as the device resets its own; the vowels move the mouth. Without
// WebCodecs' Opus (or with ?opus=false in the page's address) it is raw PCM (opus=false).
//
// Typed text is the Text command (the server echoes it as the transcript); typed before any
// conversation, it starts one without the microphone (which a page served over plain HTTP to
// another machine cannot have).
//
// Push to talk, the second mode, is Submit mode (stream_asr=false): the microphone goes to the
// server while the button is held, its release sends Submit; pressing it during a reply
// cancels the reply first (StartChat). Changing the mode reconnects (reconnect=true, the
// history kept), the new socket opened once the old one has closed.
//
// A question of the server (Choices: the claude layout asks to confirm) shows its items as
// buttons; the one pressed is sent as Select{index}; they go when the turn ends.
//
// Record, the third mode, streams the microphone to the server's record mode (record.js).

import { errorLine } from "./console-ui.js";
import { decodeEvent } from "./msgpack.js";
import { capture, micError, openMicrophone, rms } from "./mic.js";
import { Recording, RecordingList } from "./record.js";

const RATE = 16000; // the protocol's audio rate, both ways
const PREROLL_FRAMES = 4; // the frames kept from before speech starts (512 ms)
const MIN_LEVEL = 0.02; // RMS below which a frame is never speech
const NOISE_FACTOR = 4; // speech: a frame this many times louder than the noise floor
const BARGE_LEVEL = 0.04; // during the reply: RMS below which a frame is never the user's voice
const BARGE_FACTOR = 8; // ... how many times louder than the noise floor it must be
const BARGE_SHARE = 0.35; // ... and at least this share of the level of the user's speech so far
const BARGE_FRAMES = 3; // ... in this many frames in a row (384 ms)
const LEAD_S = 0.08; // playback starts this far ahead of the clock
const OPUS_CONFIG = { codec: "opus", sampleRate: RATE, numberOfChannels: 1 };
const RECONNECTS = [500, 1000, 2000, 4000, 8000]; // delays (ms) of the attempts after a drop

const $ = (id) => document.getElementById(id);
const ui = {
  state: $("state"),
  error: $("error"),
  log: $("log"),
  interim: $("interim"),
  talk: $("talk"),
  end: $("end"),
  device: $("device"),
  mouth: $("mouth"),
  modes: document.querySelectorAll('input[name="mode"]'),
  say: $("say"),
  text: $("text"),
  hint: $("hint"),
  recordings: $("recordings"),
  recordingList: $("recording-list"),
  recordingsNote: $("recordings-note"),
};

const LABELS = {
  idle: "Ready",
  connecting: "Connecting…",
  listening: "Listening",
  thinking: "Thinking…",
  speaking: "Speaking",
  reconnecting: "Reconnecting…",
  recording: "Recording",
  error: "Stopped",
};

const HINTS = {
  "hands-free": "Hands-free: speak after you start; speak or press the button while it answers to interrupt.",
  "push-to-talk": "Push to talk: hold the button (or Space) while you speak.",
  record: "Record: what the microphone hears is saved on the server until you stop.",
};

// What the tests read: the state, the mode, the sockets opened, whether replies are Opus and
// the vowels the mouth showed, the samples sent and played, the replies cut by the user's
// voice, the transcripts and replies, the turns ended (EndResponse, the reply played), the
// question's items shown (null when none) and the indexes selected, the samples recorded and
// the recordings listed.
const stats = {
  state: "idle",
  turns: 0,
  mode: "hands-free",
  sockets: 0,
  opus: false,
  vowels: 0,
  sentSamples: 0,
  playedSamples: 0,
  bargeIns: 0,
  interim: "",
  transcripts: [],
  replies: [],
  notices: [],
  choices: null,
  selected: [],
  errors: [],
  recordedSamples: 0,
  recordings: [],
};
window.echokitStats = stats;

function deviceId() {
  const key = "echokit.deviceId";
  let id = localStorage.getItem(key);
  if (!id) {
    const bytes = crypto.getRandomValues(new Uint8Array(6));
    id = "web" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    localStorage.setItem(key, id);
  }
  return id;
}

// whether the replies can be Opus here: WebCodecs decodes it, and the address allows it
async function opusPlayable() {
  if (new URLSearchParams(location.search).get("opus") === "false") return false;
  if (!("AudioDecoder" in window)) return false;
  try {
    return (await AudioDecoder.isConfigSupported(OPUS_CONFIG)).supported === true;
  } catch {
    return false;
  }
}

function socketUrl(id, reconnect, pushToTalk, opus) {
  const url = new URL("ws/" + encodeURIComponent(id), location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  url.hash = "";
  const query = new URLSearchParams({ opus: String(opus), stream_asr: String(!pushToTalk), reconnect: String(reconnect) });
  if (opus) query.set("vowel", "true");
  const token = new URLSearchParams(location.search).get("token");
  if (token) query.set("token", token);
  url.search = query.toString();
  return url.toString();
}

const { show: showError, clear: clearError } = errorLine(ui.error, stats.errors);

function addEntry(kind, who, text) {
  const li = document.createElement("li");
  li.className = kind;
  const label = document.createElement("span");
  label.className = "who";
  label.textContent = who;
  const body = document.createElement("span");
  body.textContent = text;
  li.append(label, body);
  ui.log.append(li);
  li.scrollIntoView({ block: "end" });
  return body;
}

// the state shown, and the buttons that go with it in the mode; `holding`: push to talk's
// button is held
function setState(state, holding = false) {
  stats.state = state;
  ui.state.dataset.state = state;
  ui.state.textContent = LABELS[state];
  const running = state !== "idle" && state !== "error";
  if (stats.mode === "record") {
    ui.end.hidden = true;
    ui.talk.textContent = running ? "Stop recording" : "Start recording";
    ui.talk.setAttribute("aria-disabled", "false");
    return;
  }
  ui.end.hidden = !running;
  const interruptible = state === "thinking" || state === "speaking";
  const ptt = stats.mode === "push-to-talk" && (state === "listening" || interruptible);
  let label = !running ? "Start conversation" : interruptible ? "Interrupt" : LABELS[state];
  if (ptt) label = holding ? "Release to send" : "Hold to talk";
  ui.talk.textContent = label;
  ui.talk.setAttribute("aria-disabled", String(running && !interruptible && !ptt));
}

class Conversation {
  constructor(id, { microphone = true } = {}) {
    this.id = id;
    this.microphone = microphone; // false: typed text only
    this.pendingText = null; // typed before the socket opened
    this.ws = null;
    this.ctx = null;
    this.stream = null;
    this.stopped = false;
    this.attempt = 0;
    this.everOpened = false;
    this.uploading = false; // StartChat sent: the microphone goes to the server
    this.heardEnd = false; // EndVad of this turn seen: the next ASR is the final transcript
    this.replying = false; // final transcript seen: the turn is the server's
    this.turnOver = false; // EndResponse seen, waiting for the reply to finish playing
    this.dropReply = false; // interrupted: the cancelled answer's audio still in flight is dropped
    this.preroll = [];
    this.noise = MIN_LEVEL / NOISE_FACTOR;
    this.voice = 0; // the level of the user's speech (its frames above the threshold), 0: unheard
    this.loud = 0; // during the reply: the frames in a row loud enough to be the user's voice
    this.question = null; // the log entry whose Choices buttons are shown
    this.sources = new Set();
    this.nextTime = 0;
    this.reply = null; // the log entry of the reply being shown
    this.hello = [];
    this.opus = false; // the replies are Opus (else raw PCM)
    this.decoder = null; // the segment's Opus decoder
    this.decoding = 0; // Opus packets given to a decoder and not yet out of it
    this.generation = 0; // the playback's: each interruption starts a new one
    this.holding = false; // push to talk: the button is held
    this.reopen = false; // the socket closes to reopen with the other mode's flags
  }

  get pushToTalk() {
    return stats.mode === "push-to-talk";
  }

  setState(state) {
    setState(state, this.holding);
  }

  async start() {
    clearError();
    this.setState("connecting");
    // made in the click, so the page may play sound
    this.ctx = new AudioContext();
    this.opus = await opusPlayable();
    stats.opus = this.opus;
    this.connect(false);
    if (!this.microphone) return;
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
      if (this.stopped) return; // ended meanwhile (and said why)
      this.fail("The audio could not be started: " + (err && err.message ? err.message : err));
      return;
    }
    if (this.ws && this.ws.readyState === WebSocket.OPEN && stats.state === "connecting") {
      this.listen();
    }
  }

  connect(reconnect) {
    const ws = new WebSocket(socketUrl(this.id, reconnect, this.pushToTalk, this.opus));
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.everOpened = true;
      stats.sockets++;
      this.attempt = 0;
      clearError();
      if (this.stream || !this.microphone) this.listen();
      if (this.pendingText !== null) this.sendText(this.pendingText);
    };
    ws.onmessage = (e) => {
      if (typeof e.data === "string") return;
      let event;
      try {
        event = decodeEvent(e.data);
      } catch (err) {
        console.warn("echokit: undecodable event", err);
        return;
      }
      this.onEvent(event);
    };
    ws.onclose = (e) => {
      if (this.ws !== ws || this.stopped) return;
      this.ws = null;
      if (this.reopen) { // the mode changed: its flags on a new socket, the history kept
        this.reopen = false;
        this.setState("connecting");
        this.connect(true);
        return;
      }
      this.stopPlayback();
      if (e.code === 1000 && opened) {
        this.fail("The server ended this conversation (another window took over, or the server stopped).");
      } else if (e.code === 1013) {
        this.fail("The server is full: " + (e.reason || "try again later."));
      } else if (!this.everOpened) { // refused at once: retrying would not help
        this.fail(
          "Cannot connect to the server at " + location.host + ": it is not running, or it " +
          "refuses this device (" + this.id + "): check [server] devices, and give the " +
          "device_token as ?token= in this page's address."
        );
      } else if (this.attempt < RECONNECTS.length) {
        this.setState("reconnecting");
        showError("Lost the connection to the server; reconnecting…");
        const delay = RECONNECTS[this.attempt++];
        this.retry = setTimeout(() => this.connect(true), delay);
      } else {
        this.fail("Lost the connection to the server at " + location.host + ": it is gone.");
      }
    };
  }

  listen() {
    this.uploading = false;
    this.heardEnd = false;
    this.replying = false;
    this.turnOver = false;
    this.reply = null;
    this.preroll = [];
    this.loud = 0;
    this.clearChoices();
    this.setState("listening");
  }

  send(data) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(data);
  }

  sendAudio(pcm) {
    this.send(pcm.buffer);
    stats.sentSamples += pcm.length;
  }

  // a mode change: the socket is reopened with the new mode's flags
  changeMode() {
    this.holding = false;
    if (!this.ws) return; // (reconnecting: the next attempt has the new flags)
    this.stopPlayback();
    this.reopen = true;
    this.ws.close(1000);
  }

  // typed text: the user's utterance (during a reply, it cancels the reply)
  sendText(text) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      this.pendingText = text;
      return;
    }
    this.pendingText = null;
    if (stats.state === "thinking" || stats.state === "speaking") {
      this.stopPlayback();
      this.dropReply = true;
    }
    this.holding = false;
    this.listen();
    this.heardEnd = true; // the echo of the text is the final transcript
    this.setState("thinking");
    this.send(JSON.stringify({ event: "Text", input: text }));
  }

  // push to talk: the button pressed (during a reply: cancel it first) ...
  press() {
    const state = stats.state;
    if (state !== "listening" && state !== "thinking" && state !== "speaking") return;
    if (state !== "listening") {
      this.stopPlayback();
      this.dropReply = true;
      this.send(JSON.stringify({ event: "StartChat" })); // cancels the answer
    }
    this.holding = true;
    this.listen();
    this.uploading = true;
  }

  // ... and released: Submit ends the utterance
  release() {
    if (!this.holding) return;
    this.holding = false;
    this.uploading = false;
    this.send(JSON.stringify({ event: "Submit" }));
    this.heardEnd = true; // no EndVad in Submit mode: the next ASR is the final transcript
    this.dropReply = false;
    this.setState("thinking");
  }

  startUtterance(frames) {
    this.send(JSON.stringify({ event: "StartChat" }));
    this.uploading = true;
    const pcm = new Int16Array(frames.reduce((n, f) => n + f.length, 0));
    let at = 0;
    for (const f of frames) {
      pcm.set(f, at);
      at += f.length;
    }
    if (pcm.length) this.sendAudio(pcm);
  }

  onFrame(pcm) {
    if (stats.state === "speaking" && !this.pushToTalk) {
      this.overReply(pcm);
      return;
    }
    if (stats.state !== "listening") return;
    const level = rms(pcm);
    if (this.uploading) {
      this.sendAudio(pcm);
      if (level > Math.max(MIN_LEVEL, this.noise * NOISE_FACTOR)) {
        this.voice = this.voice ? 0.9 * this.voice + 0.1 * level : level;
      }
      return;
    }
    if (this.pushToTalk) return;
    this.preroll.push(pcm);
    if (this.preroll.length > PREROLL_FRAMES) this.preroll.shift();
    if (level > Math.max(MIN_LEVEL, this.noise * NOISE_FACTOR)) {
      this.startUtterance(this.preroll);
      this.preroll = [];
    } else {
      this.noise = 0.95 * this.noise + 0.05 * level;
    }
  }

  // a frame heard while the reply plays: the user's voice over it interrupts it, and what
  // was said from just before it began is the next utterance
  overReply(pcm) {
    this.preroll.push(pcm);
    if (this.preroll.length > PREROLL_FRAMES) this.preroll.shift();
    const threshold = Math.max(BARGE_LEVEL, this.noise * BARGE_FACTOR, this.voice * BARGE_SHARE);
    const loud = rms(pcm) > threshold;
    this.loud = loud ? this.loud + 1 : 0;
    if (this.loud < BARGE_FRAMES) return;
    const said = this.preroll;
    stats.bargeIns++;
    this.interrupt(said);
  }

  // the button (or the voice) during a reply: drop what plays, cancel the answer, stream the
  // user's utterance at once (`frames`: what of it was already heard)
  interrupt(frames = []) {
    this.stopPlayback();
    this.dropReply = true;
    this.listen();
    this.startUtterance(frames);
  }

  // the server's question: its items as buttons, the one pressed answered with Select{index}
  showChoices(message, items) {
    this.clearChoices();
    const body = addEntry("notice question", "Question", message);
    const group = document.createElement("div");
    group.className = "choices";
    group.setAttribute("role", "group");
    group.setAttribute("aria-label", message);
    items.forEach((item, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = item;
      button.addEventListener("click", () => {
        this.send(JSON.stringify({ event: "Select", index }));
        stats.selected.push(index);
        this.clearChoices();
      });
      group.append(button);
    });
    body.after(group);
    this.question = group;
    stats.choices = items;
  }

  clearChoices() {
    if (this.question) this.question.remove();
    this.question = null;
    stats.choices = null;
  }

  onEvent(ev) {
    switch (ev.type) {
      case "HelloStart":
        this.hello = [];
        break;
      case "HelloChunk":
        this.hello.push(ev.data);
        break;
      case "HelloEnd":
        this.playHello();
        break;
      case "ASR":
        this.onTranscript(ev.text || "");
        break;
      case "EndVad":
        this.uploading = false;
        this.heardEnd = true;
        this.dropReply = false;
        this.setState("thinking");
        break;
      case "StartAudio":
        if (this.dropReply) break;
        this.onSegment(ev.text || "");
        break;
      case "AudioChunk":
      case "AudioChunkWithVowel":
        if (this.dropReply) break;
        if (this.opus) this.decode(ev.data, ev.vowel || 0);
        else this.play(ev.data);
        break;
      case "EndAudio":
        this.endDecoder();
        break;
      case "DisplayText":
        if (this.dropReply) break;
        stats.notices.push(ev.text);
        addEntry("notice", "Notice", ev.text);
        break;
      case "Action":
        stats.notices.push(ev.action);
        addEntry("notice", "Notice", ev.action === "ByeBye" ? "The conversation ended." : ev.action);
        break;
      case "Choices":
        if (this.dropReply) break;
        stats.notices.push(ev.message);
        this.showChoices(ev.message || "", ev.items || []);
        break;
      case "EndResponse":
        if (this.dropReply) break;
        this.uploading = false;
        this.turnOver = true;
        this.maybeListen();
        break;
      default:
        break;
    }
  }

  onTranscript(text) {
    if (!this.heardEnd) { // interim: the server heard this much so far
      stats.interim = text;
      ui.interim.textContent = text;
      return;
    }
    if (this.replying) return;
    this.replying = true;
    this.dropReply = false; // the new turn's: what follows is its answer
    stats.interim = "";
    ui.interim.textContent = "";
    if (text) {
      stats.transcripts.push(text);
      addEntry("user", "You", text);
    }
  }

  // a segment's Opus packets, in order, through a decoder of its own
  decode(packet, vowel) {
    if (!this.decoder) {
      const vowels = [];
      const generation = this.generation;
      const decoder = new AudioDecoder({
        output: (data) => {
          if (generation !== this.generation) return data.close(); // interrupted
          this.decoding--;
          const buffer = this.ctx.createBuffer(1, data.numberOfFrames, data.sampleRate);
          data.copyTo(buffer.getChannelData(0), { planeIndex: 0, format: "f32-planar" });
          data.close();
          const at = this.schedule(buffer, Math.round(buffer.duration * RATE));
          this.mouth(vowels.shift() || 0, at);
        },
        error: (err) => {
          console.warn("echokit: Opus decoding failed", err);
          this.decoding = 0;
          this.maybeListen();
        },
      });
      decoder.configure(OPUS_CONFIG);
      decoder.vowels = vowels;
      decoder.packets = 0;
      this.decoder = decoder;
    }
    const decoder = this.decoder;
    decoder.vowels.push(vowel);
    const timestamp = decoder.packets++ * 120000; // µs: the server's packets are 120 ms
    decoder.decode(new EncodedAudioChunk({ type: "key", timestamp, data: packet }));
    this.decoding++;
  }

  // the segment ended: its decoder finishes what it holds, then is closed
  endDecoder() {
    const decoder = this.decoder;
    this.decoder = null;
    if (!decoder) return;
    decoder.flush().then(
      () => {
        decoder.close();
        this.maybeListen();
      },
      () => {},
    );
  }

  // the mouth shows `vowel` (0 closed, 1-5 A E I O U) from `at` on the audio clock
  mouth(vowel, at) {
    const show = () => {
      ui.mouth.dataset.vowel = String(vowel);
      if (vowel) stats.vowels++;
    };
    setTimeout(show, Math.max(0, (at - this.ctx.currentTime) * 1000));
  }

  onSegment(text) {
    if (!this.reply) {
      stats.replies.push("");
      this.reply = addEntry("reply", "EchoKit", "");
    }
    const last = stats.replies.length - 1;
    stats.replies[last] = stats.replies[last] ? stats.replies[last] + " " + text : text;
    this.reply.textContent = stats.replies[last];
  }

  play(bytes) {
    const n = bytes.length >> 1;
    if (!n) return;
    const view = new DataView(bytes.buffer, bytes.byteOffset, n * 2);
    const buffer = this.ctx.createBuffer(1, n, RATE);
    const samples = buffer.getChannelData(0);
    for (let i = 0; i < n; i++) samples[i] = view.getInt16(2 * i, true) / 32768;
    this.schedule(buffer, n);
  }

  schedule(buffer, samples) {
    const src = this.ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(this.ctx.destination);
    const at = Math.max(this.nextTime, this.ctx.currentTime + LEAD_S);
    src.start(at);
    this.nextTime = at + buffer.duration; // the next one starts where this one ends: no gap
    this.sources.add(src);
    src.onended = () => {
      this.sources.delete(src);
      stats.playedSamples += samples;
      if (this.sources.size === 0) ui.mouth.dataset.vowel = "0";
      this.maybeListen();
    };
    if (stats.state !== "speaking" && stats.state !== "listening") this.setState("speaking");
    return at;
  }

  async playHello() {
    const bytes = new Uint8Array(this.hello.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of this.hello) {
      bytes.set(c, at);
      at += c.length;
    }
    this.hello = [];
    try {
      const buffer = await this.ctx.decodeAudioData(bytes.buffer);
      this.schedule(buffer, Math.round(buffer.duration * RATE));
    } catch (err) {
      console.warn("echokit: the hello is not a playable WAV", err);
    }
  }

  stopPlayback() {
    this.generation++; // what the decoders still hold is dropped
    if (this.decoder) this.decoder.close();
    this.decoder = null;
    this.decoding = 0;
    ui.mouth.dataset.vowel = "0";
    for (const src of this.sources) {
      src.onended = null;
      src.stop();
    }
    this.sources.clear();
    this.nextTime = 0;
  }

  // the turn is over once EndResponse came and its audio has played
  maybeListen() {
    if (!this.turnOver || this.sources.size > 0 || this.decoding > 0 || this.stopped || !this.ws) {
      return;
    }
    stats.turns++;
    this.listen();
  }

  fail(message) {
    showError(message);
    this.stop("error");
  }

  stop(state = "idle") {
    this.stopped = true;
    clearTimeout(this.retry);
    this.stopPlayback();
    if (this.ws) this.ws.close(1000);
    this.ws = null;
    if (this.stream) this.stream.getTracks().forEach((t) => t.stop());
    if (this.ctx) this.ctx.close();
    ui.interim.textContent = "";
    this.clearChoices();
    this.setState(state);
  }
}

const id = deviceId();
ui.device.textContent = id;
let session = null; // the Conversation or the Recording running (or last run)
const recordings = new RecordingList(id, { list: ui.recordingList, note: ui.recordingsNote }, stats);
const recordingPage = {
  stats,
  setState,
  showError,
  stopped: () => recordings.refresh({ settle: true }),
};

const MODES = ["hands-free", "push-to-talk", "record"];
const running = () => session && !session.stopped;
const conversing = () => running() && session instanceof Conversation;

// the mode's controls: the typed text and the hint for talking, the recordings for Record
function showMode() {
  for (const input of ui.modes) input.checked = input.value === stats.mode;
  const record = stats.mode === "record";
  ui.say.hidden = record;
  ui.recordings.hidden = !record;
  ui.hint.textContent = HINTS[stats.mode];
  if (!running()) setState(stats.state);
  if (record) recordings.refresh();
}
const saved = localStorage.getItem("echokit.mode");
stats.mode = MODES.includes(saved) ? saved : "hands-free";
showMode();
for (const input of ui.modes) {
  input.addEventListener("change", () => {
    const was = stats.mode;
    stats.mode = input.value;
    localStorage.setItem("echokit.mode", stats.mode);
    // between the conversation's two modes the socket is reopened; into or out of Record
    // what runs ends (the button starts the new mode)
    if (conversing() && was !== "record" && stats.mode !== "record") session.changeMode();
    else if (running()) session.stop();
    showMode();
  });
}

ui.talk.addEventListener("click", () => {
  const state = stats.state;
  if (!running()) {
    clearError();
    session = stats.mode === "record" ? new Recording(id, recordingPage) : new Conversation(id);
    session.start();
  } else if (stats.mode === "record") {
    session.stop();
  } else if (!session.pushToTalk && (state === "thinking" || state === "speaking")) {
    session.interrupt();
  }
});

// push to talk: held with the pointer, or with Space / Enter
ui.talk.addEventListener("pointerdown", (e) => {
  if (!conversing() || !session.pushToTalk) return;
  ui.talk.setPointerCapture(e.pointerId); // the release comes here even off the button
  session.press();
});
for (const type of ["pointerup", "pointercancel"]) {
  ui.talk.addEventListener(type, () => {
    if (conversing()) session.release();
  });
}
ui.talk.addEventListener("keydown", (e) => {
  if ((e.key !== " " && e.key !== "Enter") || !conversing() || !session.pushToTalk) return;
  e.preventDefault(); // no click
  if (!e.repeat) session.press();
});
ui.talk.addEventListener("keyup", (e) => {
  if ((e.key !== " " && e.key !== "Enter") || !conversing() || !session.pushToTalk) return;
  e.preventDefault();
  session.release();
});

ui.say.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = ui.text.value.trim();
  if (!text) return;
  ui.text.value = "";
  if (!conversing()) {
    session = new Conversation(id, { microphone: false });
    session.start();
  }
  session.sendText(text);
});

ui.end.addEventListener("click", () => {
  if (session) session.stop();
});

window.addEventListener("pagehide", () => {
  if (session) session.stop();
});
