//! One virtual xiaozhi device: the OTA call, the WebSocket with the firmware's headers, the
//! hello exchange, then one conversation of turns on that socket, as the firmware's application
//! loop runs them. One task; `tokio::select!` over the socket (always read: the device has no
//! back-pressure) and the timers (microphone frames, hello and turn deadlines, the abort, the
//! end of playback).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue, Uri};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

use super::mcp::{Call, McpServer, Tool};
use super::mic::{encoder, Mic};
use super::ota::{self, Identity, WsConfig};
use super::speaker::Speaker;
use super::summary::{Abort, DeviceSummary, Downlink, McpRequest, Turn};
use super::wire::{self, Mode, ServerMsg};
use crate::audio::wav_bytes;
use crate::device::{send_within, TurnInput};
use crate::log::{secs, Logger};
use crate::summary::{DeviceError, ErrorKind};

type Ws = WebSocketStream<TcpStream>;

/// The firmware waits this long for the upgrade and for the server hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of the device.
#[derive(Debug, Clone)]
pub struct Config {
    /// The OTA URL, unless `ws` skips the OTA call.
    pub ota: String,
    pub ws: Option<WsConfig>,
    pub identity: Identity,
    pub mode: Mode,
    pub speed: f64,
    pub gap: f64,
    pub timeout: f64,
    pub abort_after: Option<Duration>,
    pub tools: Vec<Tool>,
    pub lenient: bool,
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Socket open, waiting for the server hello.
    Connecting,
    Idle,
    Listening,
    Speaking,
}

pub struct Device {
    cfg: Arc<Config>,
    log: Arc<Logger>,
    inputs: Arc<[TurnInput]>,

    conn: u32,
    ws: Option<Ws>,
    state: State,
    version: u32,
    session: String,
    hello_seen: bool,
    downlink: Option<Downlink>,
    decoder: Option<opus::Decoder>,
    decode_buf: Vec<i16>,
    encoder: opus::Encoder,
    mic: Option<Mic>,
    speaker: Speaker,
    mcp: McpServer,

    /// The turn events are logged under (0 before the first).
    turn: usize,
    records: Vec<Turn>,
    replies: Vec<Vec<i16>>,
    mcp_log: Vec<McpRequest>,
    calls: Vec<Call>,
    ota_body: Option<Value>,
    upgrade_offered: bool,
    ws_url: Option<String>,

    hello_deadline: Option<Instant>,
    deadline: Option<Instant>,
    abort_at: Option<Instant>,
    abort_sent: Option<Instant>,
    /// When the last packet queued for playback arrived.
    last_audio: Option<Instant>,
    /// Playback of the reply ends: the next turn starts, or the device is done.
    drained_at: Option<Instant>,
    done: bool,
}

fn dev_err(kind: ErrorKind, message: impl Into<String>) -> DeviceError {
    DeviceError::new(kind, message)
}

impl Device {
    pub fn new(
        cfg: Arc<Config>,
        log: Arc<Logger>,
        inputs: Arc<[TurnInput]>,
    ) -> Result<Device, DeviceError> {
        let encoder = encoder().map_err(|e| dev_err(ErrorKind::Local, e))?;
        let id = &cfg.identity;
        let mcp = McpServer::new(&id.board, &id.version, id.system_info(), cfg.tools.clone());
        Ok(Device {
            log,
            inputs,
            conn: 0,
            ws: None,
            state: State::Idle,
            version: 1,
            session: String::new(),
            hello_seen: false,
            downlink: None,
            decoder: None,
            decode_buf: Vec::new(),
            encoder,
            mic: None,
            speaker: Speaker::new(),
            mcp,
            turn: 0,
            records: Vec::new(),
            replies: Vec::new(),
            mcp_log: Vec::new(),
            calls: Vec::new(),
            ota_body: None,
            upgrade_offered: false,
            ws_url: None,
            hello_deadline: None,
            deadline: None,
            abort_at: None,
            abort_sent: None,
            last_audio: None,
            drained_at: None,
            done: false,
            cfg,
        })
    }

    fn log(&self, event: &str, fields: Value) -> f64 {
        self.log
            .log(&self.cfg.identity.mac, self.conn, self.turn, event, fields)
    }

    fn record(&mut self) -> Option<&mut Turn> {
        self.turn
            .checked_sub(1)
            .and_then(|i| self.records.get_mut(i))
    }

    /// Runs the device to the end and returns its summary.
    pub async fn run(mut self) -> DeviceSummary {
        let result = self.run_inner().await;
        if let Err(e) = &result {
            self.log(
                "error",
                json!({"kind": e.kind.name(), "message": e.message}),
            );
        }
        if self.ws.take().is_some() {
            // The firmware ends a session by dropping TCP, without a Close frame.
            self.log("close", json!({"reason": "TCP dropped by the device"}));
        }
        let mut error = result.err();
        // The MAC's digits: no colons in a path.
        let mac_digits = self.cfg.identity.mac.replace(':', "");
        let dir = self.cfg.out.as_ref().map(|d| d.join(&mac_digits));
        if let Some(d) = &dir {
            if let Err(e) = std::fs::create_dir_all(d) {
                error.get_or_insert(dev_err(
                    ErrorKind::Local,
                    format!("cannot create {}: {e}", d.display()),
                ));
            }
        }
        for (rec, pcm) in self.records.iter_mut().zip(&self.replies) {
            if let (Some(a), Some(b)) = (rec.t_first_audio, rec.t_audible_end) {
                rec.first_audio_latency = Some(secs(a - b));
            }
            if let Some(d) = &dir {
                let path = d.join(format!("reply-{}.wav", rec.turn));
                match std::fs::write(&path, wav_bytes(pcm, rec.reply_rate)) {
                    Ok(()) => rec.reply_wav = Some(path.display().to_string()),
                    Err(e) => {
                        error.get_or_insert(dev_err(
                            ErrorKind::Local,
                            format!("cannot write {}: {e}", path.display()),
                        ));
                    }
                }
            }
        }
        DeviceSummary {
            id: self.cfg.identity.mac.clone(),
            client_id: self.cfg.identity.uuid.clone(),
            ok: error.is_none(),
            exit_code: error.as_ref().map_or(0, |e| e.kind.exit_code()),
            error: error.as_ref().map(Into::into),
            ota: self.ota_body.take(),
            upgrade_offered: self.upgrade_offered,
            websocket_url: self.ws_url.take(),
            protocol_version: self.version,
            session_id: self.hello_seen.then(|| self.session.clone()),
            downlink: self.downlink.take(),
            mcp: std::mem::take(&mut self.mcp_log),
            tool_calls: std::mem::take(&mut self.calls),
            volume: self.mcp.volume(),
            turns: std::mem::take(&mut self.records),
        }
    }

    async fn run_inner(&mut self) -> Result<(), DeviceError> {
        let ws = match self.cfg.ws.clone() {
            Some(ws) => ws,
            None => self.ota().await?,
        };
        self.version = ws.version;
        self.connect(&ws).await?;
        self.send_text(wire::client_hello(self.version)).await?;
        self.log("hello_sent", json!({"version": self.version}));
        self.state = State::Connecting;
        self.hello_deadline = Some(Instant::now() + HELLO_TIMEOUT);
        self.event_loop().await
    }

    async fn ota(&mut self) -> Result<WsConfig, DeviceError> {
        let url = self.cfg.ota.clone();
        self.log("ota_request", json!({"url": url}));
        let (status, body) = ota::post(&url, &self.cfg.identity).await?;
        self.log(
            "ota_reply",
            json!({"status": status.as_u16(), "bytes": body.len()}),
        );
        let reply = ota::read_reply(status, &body, &self.cfg.identity.version);
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            self.ota_body = Some(v);
        }
        let reply = reply?;
        self.upgrade_offered = reply.upgrade_offered;
        if reply.upgrade_offered {
            // A real board would flash it and reboot; this one carries on.
            self.log(
                "upgrade_offered",
                json!({"firmware": reply.body["firmware"]}),
            );
        }
        Ok(reply.ws)
    }

    /// The upgrade with the firmware's headers. Its WebSocket client writes `Host` without the
    /// port; the TCP connection is made here so that the request URI can drop it.
    async fn connect(&mut self, ws: &WsConfig) -> Result<(), DeviceError> {
        self.ws_url = Some(ws.url.clone());
        let fail = |m: String| dev_err(ErrorKind::Connect, format!("{}: {m}", ws.url));
        if !ws.url.starts_with("ws://") {
            return Err(fail(
                "only ws:// is supported (xiaozhi-vdev has no TLS)".into(),
            ));
        }
        let uri: Uri = ws.url.parse().map_err(|e| fail(format!("{e}")))?;
        let host = uri.host().ok_or_else(|| fail("no host".into()))?;
        let port = uri.port_u16().unwrap_or(80);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let request_uri: Uri = format!("ws://{host}{path}")
            .parse()
            .map_err(|e| fail(format!("{e}")))?;
        let mut headers: Vec<(HeaderName, String)> = Vec::new();
        if !ws.token.is_empty() {
            let auth = if ws.token.contains(' ') {
                ws.token.clone()
            } else {
                format!("Bearer {}", ws.token)
            };
            headers.push((AUTHORIZATION, auth));
        }
        headers.push((
            HeaderName::from_static("protocol-version"),
            self.version.to_string(),
        ));
        headers.push((
            HeaderName::from_static("device-id"),
            self.cfg.identity.mac.clone(),
        ));
        headers.push((
            HeaderName::from_static("client-id"),
            self.cfg.identity.uuid.clone(),
        ));
        let mut builder = ClientBuilder::from_uri(request_uri);
        for (name, value) in headers {
            let value = HeaderValue::from_str(&value).map_err(|e| fail(format!("{e}")))?;
            builder = builder
                .add_header(name, value)
                .map_err(|e| fail(e.to_string()))?;
        }
        self.conn += 1;
        self.log("connect", json!({"url": ws.url}));
        let tcp_host = host.trim_start_matches('[').trim_end_matches(']');
        let handshake = async {
            let tcp = TcpStream::connect((tcp_host, port))
                .await
                .map_err(|e| e.to_string())?;
            builder
                .connect_on(tcp)
                .await
                .map(|(ws, _)| ws)
                .map_err(|e| e.to_string())
        };
        let socket = timeout(HANDSHAKE_TIMEOUT, handshake)
            .await
            .map_err(|_| {
                fail(format!(
                    "no upgrade within {} s",
                    HANDSHAKE_TIMEOUT.as_secs()
                ))
            })?
            .map_err(fail)?;
        self.ws = Some(socket);
        self.log("connected", json!({}));
        Ok(())
    }

    async fn send(&mut self, msg: Message) -> Result<(), DeviceError> {
        send_within(self.ws.as_mut(), msg, self.turn).await
    }

    async fn send_text(&mut self, text: String) -> Result<(), DeviceError> {
        self.send(Message::text(text)).await
    }

    /// A protocol violation: fatal, or logged and dropped with `--lenient`.
    fn violation(&self, message: String) -> Result<(), DeviceError> {
        if self.cfg.lenient {
            self.log("dropped", json!({"reason": message}));
            Ok(())
        } else {
            Err(dev_err(ErrorKind::Protocol, message))
        }
    }

    async fn event_loop(&mut self) -> Result<(), DeviceError> {
        while !self.done {
            let next = [
                self.mic.as_ref().map(Mic::due),
                self.hello_deadline,
                self.deadline,
                self.abort_at,
                self.drained_at,
            ]
            .into_iter()
            .flatten()
            .min();
            let ws = self.ws.as_mut().expect("connected");
            tokio::select! {
                biased;
                m = ws.next() => match m {
                    Some(Ok(msg)) if msg.is_text() => {
                        let text = msg.as_text().unwrap_or_default().to_string();
                        self.on_text(&text).await?;
                    }
                    Some(Ok(msg)) if msg.is_binary() => self.on_audio(msg.as_payload())?,
                    Some(Ok(msg)) if !msg.is_close() => {} // Ping / Pong: the library answers.
                    other => {
                        let err = self.closed(other);
                        // After the last turn's tts stop the conversation is complete.
                        let finished = self.drained_at.is_some() && self.turn == self.inputs.len();
                        return if finished { Ok(()) } else { Err(err) };
                    }
                },
                _ = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => {
                    self.on_timers().await?;
                }
            }
        }
        Ok(())
    }

    fn closed(&mut self, m: Option<Result<Message, tokio_websockets::Error>>) -> DeviceError {
        let reason = match &m {
            Some(Ok(msg)) => msg
                .as_close()
                .map(|(c, r)| format!("close frame {} {r}", u16::from(c)))
                .unwrap_or_else(|| "close frame".into()),
            Some(Err(e)) => e.to_string(),
            None => "connection ended".into(),
        };
        self.log("close", json!({"reason": reason}));
        self.ws = None;
        let when = match self.state {
            State::Connecting => "before its hello".to_string(),
            _ => format!("in turn {}", self.turn),
        };
        let kind = if matches!(m, Some(Err(tokio_websockets::Error::Protocol(_)))) {
            ErrorKind::Protocol
        } else {
            ErrorKind::Closed
        };
        dev_err(
            kind,
            format!("the server closed the connection {when}: {reason}"),
        )
    }

    /// Everything due now; at most one microphone frame per call, so that the reader gets its
    /// turn between frames.
    async fn on_timers(&mut self) -> Result<(), DeviceError> {
        let now = Instant::now();
        if self.hello_deadline.is_some_and(|t| t <= now) {
            return Err(dev_err(
                ErrorKind::Timeout,
                format!(
                    "no server hello (with transport \"websocket\") within {} s",
                    HELLO_TIMEOUT.as_secs()
                ),
            ));
        }
        if self.deadline.is_some_and(|t| t <= now) {
            return Err(dev_err(
                ErrorKind::Timeout,
                format!(
                    "turn {}: no tts stop within {} s of the turn's start",
                    self.turn, self.cfg.timeout
                ),
            ));
        }
        if self.abort_at.is_some_and(|t| t <= now) {
            self.abort_at = None;
            if self.state == State::Speaking {
                self.send_text(wire::abort(&self.session)).await?;
                let t = self.log("abort", json!({}));
                self.abort_sent = Some(Instant::now());
                if let Some(r) = self.record() {
                    r.abort = Some(Abort {
                        t_sent: t,
                        ..Default::default()
                    });
                }
            }
        }
        if self.drained_at.is_some_and(|t| t <= now) {
            self.drained_at = None;
            self.log("playback_done", json!({}));
            if self.turn < self.inputs.len() {
                self.start_turn(now).await?;
            } else {
                self.done = true;
                return Ok(());
            }
        }
        if self.mic.as_ref().is_some_and(|m| m.due() <= now) {
            self.send_frame().await?;
        }
        Ok(())
    }

    /// The next turn: the device is Listening (auto/manual: `listen start`, the microphone on;
    /// realtime keeps its microphone), the user speaks the WAV `--gap` seconds later.
    async fn start_turn(&mut self, now: Instant) -> Result<(), DeviceError> {
        self.turn += 1;
        let input = &self.inputs[self.turn - 1];
        let speech = input.speech.clone();
        let rate = self.downlink.as_ref().map_or(0, |d| d.sample_rate);
        self.records.push(Turn {
            turn: self.turn,
            wav: input.wav.clone(),
            mode: self.cfg.mode,
            speech_samples: speech.len(),
            frames: 0,
            stt: Vec::new(),
            emotions: Vec::new(),
            sentences: Vec::new(),
            repeated_tts_start: 0,
            audio_not_speaking: 0,
            reply_samples: 0,
            reply_rate: rate,
            reply_wav: None,
            t_listen_start: None,
            t_speech_start: None,
            t_audible_end: None,
            t_last_speech_frame: None,
            t_listen_stop: None,
            t_stt: None,
            t_tts_start: None,
            t_first_audio: None,
            t_tts_stop: None,
            t_playback_end: None,
            first_audio_latency: None,
            pacing: Default::default(),
            abort: None,
        });
        self.replies.push(Vec::new());
        self.state = State::Listening;
        if self.cfg.mode != Mode::Realtime || self.mic.is_none() {
            self.send_text(wire::listen_start(&self.session, self.cfg.mode))
                .await?;
            let t = self.log("listen_start", json!({"mode": self.cfg.mode.name()}));
            if let Some(r) = self.record() {
                r.t_listen_start = Some(t);
            }
            // Enabling voice processing resets the decoder.
            self.speaker.flush(now);
            self.mic = Some(Mic::new(now, self.cfg.speed));
        }
        let at = now + Duration::from_secs_f64(self.cfg.gap / self.cfg.speed);
        if let Some(m) = self.mic.as_mut() {
            m.say(speech, at);
        }
        self.deadline = Some(now + Duration::from_secs_f64(self.cfg.timeout));
        Ok(())
    }

    async fn send_frame(&mut self) -> Result<(), DeviceError> {
        let Some(mic) = self.mic.as_mut() else {
            return Ok(());
        };
        let f = mic.take();
        let packet = self
            .encoder
            .encode_vec(&f.pcm, 4000)
            .map_err(|e| dev_err(ErrorKind::Local, format!("Opus encoding failed: {e}")))?;
        self.send(Message::binary(wire::frame(self.version, &packet)))
            .await?;
        let t = self.log("frame", json!({"bytes": packet.len(), "speech": f.speech}));
        let Some(r) = self.record() else {
            return Ok(());
        };
        r.frames += 1;
        let first_speech = f.speech && r.t_speech_start.is_none();
        if first_speech {
            r.t_speech_start = Some(t);
        }
        if f.audible_end {
            r.t_audible_end = Some(t);
        }
        if f.last_speech {
            r.t_last_speech_frame = Some(t);
        }
        if first_speech {
            self.log("speech_start", json!({}));
        }
        if f.audible_end {
            self.log("audible_end", json!({}));
        }
        if f.last_speech {
            self.log("last_speech_frame", json!({}));
            if self.cfg.mode == Mode::Manual && self.state == State::Listening {
                // Push-to-talk released with the WAV's end: Idle, the channel stays open.
                self.send_text(wire::listen_stop(&self.session)).await?;
                let t = self.log("listen_stop", json!({}));
                if let Some(r) = self.record() {
                    r.t_listen_stop = Some(t);
                }
                self.state = State::Idle;
                self.mic = None;
            }
        }
        Ok(())
    }

    async fn on_text(&mut self, text: &str) -> Result<(), DeviceError> {
        let msg = match wire::parse(text) {
            Ok(m) => m,
            Err(e) => {
                let shown: String = text.chars().take(120).collect();
                return self.violation(format!("{e}: {shown:?}"));
            }
        };
        let now = Instant::now();
        match msg {
            ServerMsg::Hello(h) => {
                self.log(
                    "hello",
                    json!({"session_id": h.session_id, "sample_rate": h.sample_rate,
                        "frame_duration": h.frame_duration}),
                );
                if let Some(s) = h.session_id {
                    self.session = s;
                }
                let rate = h.sample_rate.unwrap_or(wire::DEFAULT_DOWNLINK_RATE);
                let frame = h.frame_duration.unwrap_or(wire::DEFAULT_DOWNLINK_FRAME_MS);
                self.set_downlink(rate, frame)?;
                self.hello_seen = true;
                if self.state == State::Connecting {
                    self.hello_deadline = None;
                    self.start_turn(now).await?;
                }
            }
            ServerMsg::HelloIgnored(t) => {
                self.log(
                    "dropped",
                    json!({"reason": format!("hello with transport {t:?} ignored")}),
                );
            }
            ServerMsg::Stt(text) => {
                let t = self.log("stt", json!({"text": text}));
                if let Some(r) = self.record() {
                    r.stt.push(text);
                    r.t_stt.get_or_insert(t);
                }
            }
            ServerMsg::Llm { emotion } => {
                self.log("llm", json!({"emotion": emotion}));
                if let Some(r) = self.record() {
                    r.emotions.push(emotion);
                }
            }
            ServerMsg::TtsStart => {
                let repeated = self.state == State::Speaking;
                let t = self.log("tts_start", json!({"repeated": repeated}));
                match self.state {
                    State::Speaking => {
                        if let Some(r) = self.record() {
                            r.repeated_tts_start += 1;
                        }
                    }
                    State::Connecting => {
                        self.log(
                            "dropped",
                            json!({"reason": "tts start before the hello (no transition from Connecting)"}),
                        );
                    }
                    State::Idle | State::Listening => {
                        self.state = State::Speaking;
                        // ResetDecoder: queued audio is flushed, the decoder reset.
                        self.speaker.flush(now);
                        self.speaker.start_reply();
                        if let Some(d) = self.decoder.as_mut() {
                            let _ = d.reset_state();
                        }
                        if self.cfg.mode != Mode::Realtime {
                            self.mic = None;
                        }
                        if let Some(r) = self.record() {
                            r.t_tts_start.get_or_insert(t);
                        }
                    }
                }
            }
            ServerMsg::SentenceStart(text) => {
                self.log("sentence_start", json!({"text": text}));
                if let Some(r) = self.record() {
                    r.sentences.push(text);
                }
            }
            ServerMsg::TtsStop => {
                let t = self.log("tts_stop", json!({}));
                if self.state == State::Speaking {
                    self.end_reply(now, t);
                }
            }
            ServerMsg::Mcp(payload) => self.on_mcp(&payload).await?,
            ServerMsg::System(command) => {
                // `reboot` would restart the board; it is logged, not acted on.
                self.log("system", json!({"command": command}));
            }
            ServerMsg::Alert {
                status,
                message,
                emotion,
            } => {
                self.log(
                    "alert",
                    json!({"status": status, "message": message, "emotion": emotion}),
                );
            }
            ServerMsg::Ignored(why) => {
                self.log("dropped", json!({"reason": why}));
            }
        }
        Ok(())
    }

    /// The announced downlink rate and frame: the decoder and its buffer (rate/1000 x frame).
    fn set_downlink(&mut self, rate: u32, frame: u32) -> Result<(), DeviceError> {
        if self
            .downlink
            .as_ref()
            .is_some_and(|d| d.sample_rate == rate && d.frame_duration == frame)
        {
            return Ok(());
        }
        self.downlink = Some(Downlink {
            sample_rate: rate,
            frame_duration: frame,
        });
        self.decoder = None;
        if !wire::OPUS_RATES.contains(&rate) || !wire::DOWNLINK_FRAME_MS.contains(&frame) {
            return self.violation(format!(
                "the server hello announces {rate} Hz / {frame} ms: the device's Opus decoder cannot open (rates {:?}, frames {:?} ms)",
                wire::OPUS_RATES,
                wire::DOWNLINK_FRAME_MS
            ));
        }
        let dec = opus::Decoder::new(rate, opus::Channels::Mono).map_err(|e| {
            dev_err(
                ErrorKind::Local,
                format!("cannot open the Opus decoder: {e}"),
            )
        })?;
        self.decoder = Some(dec);
        self.decode_buf = vec![0; (rate / 1000 * frame) as usize];
        for r in &mut self.records {
            if r.reply_samples == 0 {
                r.reply_rate = rate;
            }
        }
        Ok(())
    }

    /// `tts stop` while speaking: Listening (Idle in manual mode); the held audio plays out,
    /// then the next turn starts.
    fn end_reply(&mut self, now: Instant, t: f64) {
        let drained = self.speaker.drained_at(now);
        let t_end = self.log.t(drained);
        let pacing = self.speaker.pacing();
        let abort_sent = self.abort_sent.take();
        let last_audio = self.speaker_last_audio(abort_sent);
        if let Some(r) = self.record() {
            r.t_tts_stop = Some(t);
            r.t_playback_end = Some(t_end);
            r.pacing = pacing;
            if let Some(a) = r.abort.as_mut() {
                a.tts_stop_after = Some(secs(t - a.t_sent));
                a.silent_after = Some(secs((t_end - a.t_sent).max(0.0)));
                a.last_audio_after = last_audio.map(|x| secs(x - a.t_sent));
            }
        }
        self.state = if self.cfg.mode == Mode::Manual {
            State::Idle
        } else {
            State::Listening
        };
        self.deadline = None;
        self.abort_at = None;
        self.drained_at = Some(drained);
    }

    /// When the last packet after the abort arrived (seconds since the start).
    fn speaker_last_audio(&self, abort_sent: Option<Instant>) -> Option<f64> {
        let sent = abort_sent?;
        self.last_audio
            .filter(|&t| t >= sent)
            .map(|t| self.log.t(t))
    }

    async fn on_mcp(&mut self, payload: &Value) -> Result<(), DeviceError> {
        let h = self.mcp.handle(payload);
        let t = self.log(
            "mcp",
            json!({"id": h.id, "method": h.method, "ignored": h.ignored}),
        );
        self.mcp_log.push(McpRequest {
            t,
            method: h.method.clone(),
            id: h.id,
            ignored: h.ignored.clone(),
        });
        if let Some(c) = h.call {
            self.log(
                "tool_call",
                json!({"id": c.id, "name": c.name, "arguments": c.arguments,
                    "result": c.result, "error": c.error}),
            );
            self.calls.push(c);
        }
        if let Some(reply) = h.reply {
            let ok = reply.get("result").is_some();
            self.send_text(wire::mcp(&self.session, &reply)).await?;
            self.log("mcp_reply", json!({"id": h.id, "ok": ok}));
        }
        Ok(())
    }

    /// A binary frame: queued for playback only while speaking, if the decode queue has room.
    fn on_audio(&mut self, frame: &[u8]) -> Result<(), DeviceError> {
        let now = Instant::now();
        let packet = match wire::unframe(self.version, frame) {
            Ok(p) => p.to_vec(),
            Err(e) => return self.violation(e),
        };
        if self.state != State::Speaking {
            if let Some(r) = self.record() {
                r.audio_not_speaking += 1;
            }
            return self.violation(format!(
                "audio ({} bytes) while not speaking: outside tts start ... tts stop, the device drops it",
                packet.len()
            ));
        }
        let (Some(dl), Some(_)) = (self.downlink.as_ref(), self.decoder.as_ref()) else {
            return self.violation("audio but no usable downlink decoder".into());
        };
        let (rate, frame_ms) = (dl.sample_rate, dl.frame_duration);
        let samples = match opus::packet::get_nb_samples(&packet, rate) {
            Ok(n) => n,
            Err(e) => {
                return self.violation(format!(
                    "binary frame of {} bytes is not an Opus packet ({e})",
                    packet.len()
                ))
            }
        };
        let dur = Duration::from_secs_f64(samples as f64 / rate as f64);
        if !self.speaker.arrive(now, dur) {
            self.log(
                "dropped",
                json!({"reason": "decode queue full", "bytes": packet.len()}),
            );
            return Ok(());
        }
        let decoder = self.decoder.as_mut().expect("checked above");
        let n = match decoder.decode(&packet, &mut self.decode_buf, false) {
            Ok(n) => n,
            Err(e) => {
                return self.violation(format!(
                    "Opus packet of {} bytes ({samples} samples) does not decode into the device's {frame_ms} ms buffer: {e}",
                    packet.len()
                ));
            }
        };
        let pcm = self.decode_buf[..n].to_vec();
        self.speaker
            .play(now, Duration::from_secs_f64(n as f64 / rate as f64));
        self.last_audio = Some(now);
        if self.record().is_some_and(|r| r.t_first_audio.is_none()) {
            let t = self.log("first_audio", json!({}));
            if let Some(r) = self.record() {
                r.t_first_audio = Some(t);
            }
            if let Some(a) = self.cfg.abort_after {
                self.abort_at = Some(now + a);
            }
        }
        self.log("audio", json!({"bytes": packet.len(), "samples": n}));
        let after_abort = self.abort_sent.is_some();
        if let Some(r) = self.record() {
            r.reply_samples += n;
            if let (true, Some(a)) = (after_abort, r.abort.as_mut()) {
                a.packets_after += 1;
            }
        }
        if let Some(reply) = self
            .turn
            .checked_sub(1)
            .and_then(|i| self.replies.get_mut(i))
        {
            reply.extend_from_slice(&pcm);
        }
        Ok(())
    }
}
