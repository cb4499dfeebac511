//! One virtual device: boot, K0, the turn loop and the server events, as the
//! firmware does them (docs/protocol.md#what-the-firmware-does, #device-behaviour). One task;
//! `tokio::select!` over the socket reader (paused while queued audio plays after `EndAudio`) and
//! the timers (microphone blocks, next speech, playback end, turn deadline).
//! Sockets the device leaves behind are drained and logged by a background task.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::header::SEC_WEBSOCKET_EXTENSIONS;
use http::{HeaderValue, Uri};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_websockets::{ClientBuilder, CloseCode, MaybeTlsStream, Message, WebSocketStream};

use crate::audio::{wav_bytes, OpusDecoder};
use crate::events::{decode, DecodeError, ServerEvent, MAX_VOWEL};
use crate::log::{secs, Logger};
use crate::mic::{Mic, MicOut, NO_ASR_SAMPLES};
use crate::player::Player;
use crate::summary::{DeviceError, DeviceSummary, ErrorKind, Segment, TurnSummary};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the firmware offers (and a conforming server must decline, docs/protocol.md#connecting).
pub const OFFERED_EXTENSIONS: &str = "permessage-deflate; client_max_window_bits";
/// Reconnect: 3 attempts, 300 ms apart (docs/protocol.md#device-behaviour).
const RECONNECT_ATTEMPTS: u32 = 3;
const RECONNECT_PAUSE: Duration = Duration::from_millis(300);
/// Bounds a TCP connect + upgrade that never answers (not a firmware constant).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The firmware's app→socket send timeout.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// A left-behind socket is read at most this long.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// At the end of a device, its drains get this long to finish logging.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Options shared by all devices.
#[derive(Debug, Clone)]
pub struct Config {
    /// Chat endpoint prefix ending in `/`.
    pub server: String,
    pub speed: f64,
    pub gap: f64,
    pub timeout: f64,
    pub k0_after: f64,
    pub no_hello: bool,
    pub reconnect_between_turns: bool,
    pub barge_in: Option<f64>,
    pub block: usize,
    pub lenient: bool,
    pub out: Option<PathBuf>,
}

/// One turn's input.
#[derive(Debug, Clone)]
pub struct TurnInput {
    /// As given on the command line.
    pub wav: String,
    /// 16 kHz mono.
    pub speech: Arc<[i16]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FwState {
    Idle,
    Listening,
    Waiting,
    Speaking,
}

/// The microphone of a turn and when its speech started.
struct MicRun {
    mic: Mic,
    start: Instant,
    turn: usize,
}

pub struct Device {
    cfg: Arc<Config>,
    id: String,
    log: Arc<Logger>,
    inputs: Arc<[TurnInput]>,
    dir: Option<PathBuf>,

    conn_no: u32,
    ws: Option<Ws>,
    drains: Vec<JoinHandle<()>>,
    state: FwState,

    hello: Vec<u8>,
    hello_done: bool,
    hello_started: bool,

    player: Player,
    opus: OpusDecoder,

    /// The turn events are logged under (set at StartChat).
    turn: usize,
    /// StartChat of `turn` sent, no EndResponse yet.
    active: bool,
    records: Vec<TurnSummary>,
    replies: Vec<Vec<i16>>,
    /// Per turn: when its last frame was sent.
    last_frame: Vec<Option<f64>>,
    in_segment: bool,
    got_asr: bool,
    mic: Option<MicRun>,
    /// When the next turn's speech starts.
    next_speech: Option<Instant>,
    read_paused_until: Option<Instant>,
    deadline: Option<Instant>,
}

fn dev_err(kind: ErrorKind, message: impl Into<String>) -> DeviceError {
    DeviceError::new(kind, message)
}

/// Seconds scaled by the pace factor (0 = no pacing).
fn paced(seconds: f64, speed: f64) -> Duration {
    if speed > 0.0 {
        Duration::from_secs_f64(seconds / speed)
    } else {
        Duration::ZERO
    }
}

/// Fields of an event's log line (without decoding its audio).
fn event_fields(ev: &ServerEvent) -> Value {
    match ev {
        ServerEvent::HelloChunk { data } => json!({"bytes": data.len()}),
        ServerEvent::ASR { text } => json!({"text": text}),
        ServerEvent::Action { action } => json!({"text": action}),
        ServerEvent::StartAudio { text } => json!({"text": text}),
        ServerEvent::AudioChunk { data } => json!({"bytes": data.len(), "vowel": 0}),
        ServerEvent::AudioChunkWithVowel { data, vowel } => {
            json!({"bytes": data.len(), "vowel": vowel})
        }
        ServerEvent::AudioChunki16 { data, vowel } => {
            json!({"bytes": data.len() * 2, "samples": data.len(), "vowel": vowel})
        }
        _ => json!({}),
    }
}

fn close_frame() -> Message {
    Message::close(Some(CloseCode::NORMAL_CLOSURE), "")
}

/// Sends one message on the device's socket (none: the device is not connected) within the
/// firmware's send timeout; `turn` names the turn in the error.
pub(crate) async fn send_within<S>(
    ws: Option<&mut WebSocketStream<S>>,
    msg: Message,
    turn: usize,
) -> Result<(), DeviceError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let Some(ws) = ws else {
        return Err(dev_err(ErrorKind::Closed, "no connection to send on"));
    };
    match timeout(SEND_TIMEOUT, ws.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(dev_err(
            ErrorKind::Closed,
            format!("cannot send to the server in turn {turn}: {e}"),
        )),
        Err(_) => Err(dev_err(
            ErrorKind::Timeout,
            format!(
                "a send did not complete within {} s",
                SEND_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Reads a socket the device has left until the server closes it, logging
/// what arrives (a pre-empted socket gets `EndResponse`).
async fn drain(mut ws: Ws, log: Arc<Logger>, id: String, conn: u32, turn: usize) {
    let limit = sleep(DRAIN_LIMIT);
    tokio::pin!(limit);
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(msg)) if msg.is_binary() => match decode(msg.as_payload()) {
                    Ok(ev) => {
                        log.log(&id, conn, turn, ev.log_name(), event_fields(&ev));
                    }
                    Err(e) => {
                        log.log(&id, conn, turn, "dropped", json!({"reason": e.to_string()}));
                    }
                },
                Some(Ok(msg)) if msg.is_text() => {
                    log.log(&id, conn, turn, "dropped", json!({"reason": "text frame"}));
                }
                Some(Ok(msg)) if msg.is_close() => {
                    let (code, reason) = msg
                        .as_close()
                        .map(|(c, r)| (Some(u16::from(c)), r.to_string()))
                        .unwrap_or((None, String::new()));
                    log.log(&id, conn, turn, "close", json!({"code": code, "reason": reason}));
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    log.log(&id, conn, turn, "close", json!({"reason": e.to_string()}));
                    return;
                }
                None => {
                    log.log(&id, conn, turn, "close", json!({}));
                    return;
                }
            },
            _ = &mut limit => {
                log.log(&id, conn, turn, "close", json!({"reason": "drain limit reached"}));
                return;
            }
        }
    }
}

/// What woke the event loop.
enum Wake {
    Msg(Option<Result<Message, tokio_websockets::Error>>),
    Timer,
}

impl Device {
    pub fn new(
        cfg: Arc<Config>,
        id: String,
        log: Arc<Logger>,
        inputs: Arc<[TurnInput]>,
    ) -> Result<Device, DeviceError> {
        let dir = cfg.out.as_ref().map(|d| d.join(&id));
        if let Some(d) = &dir {
            std::fs::create_dir_all(d).map_err(|e| {
                dev_err(
                    ErrorKind::Local,
                    format!("cannot create {}: {e}", d.display()),
                )
            })?;
        }
        let opus = OpusDecoder::new().map_err(|e| dev_err(ErrorKind::Local, e))?;
        Ok(Device {
            player: Player::new(cfg.speed),
            cfg,
            id,
            log,
            inputs,
            dir,
            conn_no: 0,
            ws: None,
            drains: Vec::new(),
            state: FwState::Idle,
            hello: Vec::new(),
            hello_done: false,
            hello_started: false,
            opus,
            turn: 0,
            active: false,
            records: Vec::new(),
            replies: Vec::new(),
            last_frame: Vec::new(),
            in_segment: false,
            got_asr: false,
            mic: None,
            next_speech: None,
            read_paused_until: None,
            deadline: None,
        })
    }

    fn log(&self, event: &str, fields: Value) -> f64 {
        self.log
            .log(&self.id, self.conn_no, self.turn, event, fields)
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
        if let Some(mut ws) = self.ws.take() {
            // The last socket: a Close frame, then it is dropped (nothing
            // more is expected on it).
            let _ = timeout(Duration::from_secs(1), ws.send(close_frame())).await;
            self.log("close", json!({"reason": "closed by the device"}));
        }
        let grace = sleep(DRAIN_GRACE);
        tokio::pin!(grace);
        for mut h in std::mem::take(&mut self.drains) {
            tokio::select! {
                _ = &mut grace => h.abort(),
                _ = &mut h => {}
            }
        }
        let mut error = result.err();
        for (i, rec) in self.records.iter_mut().enumerate() {
            // From the audible end of the speech (the server usually ends the
            // turn before the WAV's trailing silence is sent).
            rec.t_audible_end = rec.t_audible_end.or(self.last_frame[i]);
            if let (Some(a), Some(b)) = (rec.t_first_audio, rec.t_audible_end) {
                rec.first_audio_latency = Some(secs(a - b));
            }
            if let (Some(dir), Some(_)) = (&self.dir, rec.t_start_chat) {
                let path = dir.join(format!("reply-{}.wav", rec.turn));
                match std::fs::write(&path, wav_bytes(&self.replies[i], crate::mic::RATE as u32)) {
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
        let exit_code = error.as_ref().map_or(0, |e| e.kind.exit_code());
        DeviceSummary {
            id: self.id.clone(),
            ok: error.is_none(),
            exit_code,
            error: error.as_ref().map(Into::into),
            hello_bytes: self.hello.len(),
            turns: std::mem::take(&mut self.records),
        }
    }

    async fn run_inner(&mut self) -> Result<(), DeviceError> {
        if !self.cfg.no_hello {
            self.boot().await?;
        }
        self.k0_connect().await?;
        self.next_speech = Some(Instant::now() + paced(self.cfg.gap, self.cfg.speed));
        self.event_loop().await
    }

    /// Connects (a new `conn`); on success the previous socket is drained,
    /// its events logged under `old_turn`.
    async fn connect(&mut self, reconnect: bool, old_turn: usize) -> Result<(), DeviceError> {
        let url = format!(
            "{}{}?{}opus=true&vowel=true&stream_asr=true",
            self.cfg.server,
            self.id,
            if reconnect { "reconnect=true&" } else { "" }
        );
        let uri: Uri = url
            .parse()
            .map_err(|e| dev_err(ErrorKind::Usage, format!("bad server URL {url}: {e}")))?;
        let builder = ClientBuilder::from_uri(uri)
            .add_header(
                SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_static(OFFERED_EXTENSIONS),
            )
            .map_err(|e| dev_err(ErrorKind::Local, e.to_string()))?;
        self.conn_no += 1;
        let attempts = if reconnect { RECONNECT_ATTEMPTS } else { 1 };
        let mut last_err = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                sleep(RECONNECT_PAUSE).await;
            }
            self.log("connect", json!({"url": url, "attempt": attempt}));
            match timeout(CONNECT_TIMEOUT, builder.connect()).await {
                Ok(Ok((ws, resp))) => {
                    if let Some(old) = self.ws.replace(ws) {
                        // Not closed by us: the server pre-empts it
                        // (docs/protocol.md#interruption).
                        self.leave_conn(old, self.conn_no - 1, old_turn, false)
                            .await;
                    }
                    self.log("connected", json!({}));
                    if let Some(ext) = resp.headers().get(SEC_WEBSOCKET_EXTENSIONS) {
                        self.violation(format!(
                            "the server accepted a WebSocket extension ({}); the firmware implements none",
                            String::from_utf8_lossy(ext.as_bytes())
                        ))?;
                    }
                    return Ok(());
                }
                Ok(Err(e)) => last_err = e.to_string(),
                Err(_) => last_err = format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            }
        }
        Err(dev_err(
            ErrorKind::Connect,
            format!(
                "cannot connect to {url} ({attempts} attempt{}): {last_err}",
                if attempts > 1 { "s" } else { "" }
            ),
        ))
    }

    /// Hands a socket over to a drain task (sending a Close first if `close`).
    async fn leave(&mut self, ws: Ws, close: bool) {
        self.leave_conn(ws, self.conn_no, self.turn, close).await;
    }

    async fn leave_conn(&mut self, mut ws: Ws, conn: u32, turn: usize, close: bool) {
        if close {
            // Not `ws.close()`: that would swallow what is still incoming.
            let _ = timeout(Duration::from_secs(1), ws.send(close_frame())).await;
        }
        let h = tokio::spawn(drain(ws, self.log.clone(), self.id.clone(), conn, turn));
        self.drains.push(h);
    }

    /// Boot connection: store the hello; K0 at `HelloEnd` or `--k0-after`.
    async fn boot(&mut self) -> Result<(), DeviceError> {
        self.connect(false, 0).await?;
        let k0_at = Instant::now() + Duration::from_secs_f64(self.cfg.k0_after);
        let limit = Instant::now() + Duration::from_secs_f64(self.cfg.timeout);
        loop {
            let ws = self.ws.as_mut().expect("connected");
            let m = tokio::select! {
                m = ws.next() => m,
                _ = sleep_until(k0_at), if !self.hello_started => return Ok(()),
                _ = sleep_until(limit) => return Err(dev_err(
                    ErrorKind::Timeout,
                    format!("no HelloEnd within {} s of HelloStart", self.cfg.timeout),
                )),
            };
            match m {
                Some(Ok(msg)) => {
                    if let Some(ev) = self.frame_to_event(msg)? {
                        self.handle_event(ev).await?;
                    }
                    if self.hello_done {
                        return Ok(());
                    }
                }
                // The boot socket ended before K0: K0 reconnects anyway.
                other => {
                    self.log_close(other);
                    self.ws = None;
                    return Ok(());
                }
            }
        }
    }

    /// K0 from `Idle`: reconnect with `reconnect=true`, play the hello, `Listening`.
    async fn k0_connect(&mut self) -> Result<(), DeviceError> {
        self.log("k0", json!({}));
        self.connect(true, self.turn).await?;
        // The firmware plays the stored bytes as PCM16 (header included).
        let until = self.player.play(Instant::now(), self.hello.len() / 2);
        sleep_until(until).await;
        self.state = FwState::Listening;
        Ok(())
    }

    /// K0 while `Listening`: `Idle`, socket closed.
    async fn k0_close(&mut self) {
        self.log("k0", json!({}));
        self.state = FwState::Idle;
        if let Some(ws) = self.ws.take() {
            self.leave(ws, true).await;
        }
    }

    fn log_close(&self, m: Option<Result<Message, tokio_websockets::Error>>) -> String {
        let reason = match &m {
            Some(Ok(msg)) => msg
                .as_close()
                .map(|(c, r)| format!("close frame {} {r}", u16::from(c)))
                .unwrap_or_else(|| "close frame".into()),
            Some(Err(e)) => e.to_string(),
            None => "connection ended".into(),
        };
        self.log("close", json!({"reason": reason}));
        reason
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

    /// A data frame to an event (`None`: dropped).
    fn frame_to_event(&self, msg: Message) -> Result<Option<ServerEvent>, DeviceError> {
        if msg.is_text() {
            let text = msg.as_text().unwrap_or("");
            let shown: String = text.chars().take(80).collect();
            self.violation(format!(
                "text frame from the server ({} bytes: {shown:?}); server events are binary MessagePack",
                text.len()
            ))?;
            return Ok(None);
        }
        if !msg.is_binary() {
            // Ping / Pong: handled by the WebSocket layer.
            return Ok(None);
        }
        match decode(msg.as_payload()) {
            Ok(ev) => Ok(Some(ev)),
            Err(e @ DecodeError::NotInFirmware { .. }) => {
                self.log("dropped", json!({"reason": e.to_string()}));
                Ok(None)
            }
            Err(e @ DecodeError::Invalid { .. }) => {
                self.violation(e.to_string())?;
                Ok(None)
            }
            Err(DecodeError::Trailing {
                len,
                trailing,
                event,
            }) => {
                // The firmware would act on the event and ignore the rest.
                self.violation(format!(
                    "frame of {len} bytes holds {trailing} bytes after the {} event",
                    event.log_name()
                ))?;
                Ok(Some(*event))
            }
        }
    }

    async fn send(&mut self, msg: Message) -> Result<(), DeviceError> {
        send_within(self.ws.as_mut(), msg, self.turn).await
    }

    /// The turns, until the last one ends.
    async fn event_loop(&mut self) -> Result<(), DeviceError> {
        loop {
            if self.ws.is_none() {
                return Err(dev_err(ErrorKind::Closed, "no connection"));
            }
            let mic_due = self.mic.as_ref().map(|m| m.start + m.mic.next_due());
            let next = [
                mic_due,
                self.next_speech,
                self.read_paused_until,
                self.deadline,
            ]
            .into_iter()
            .flatten()
            .min();
            let reading = self.read_paused_until.is_none();
            let ws = self.ws.as_mut().expect("checked");
            let wake = tokio::select! {
                biased;
                m = ws.next(), if reading => Wake::Msg(m),
                _ = sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => Wake::Timer,
            };
            match wake {
                Wake::Msg(Some(Ok(msg))) if !msg.is_close() => {
                    if let Some(ev) = self.frame_to_event(msg)? {
                        if self.handle_event(ev).await? {
                            return Ok(());
                        }
                    }
                }
                Wake::Msg(m) => {
                    let protocol = matches!(m, Some(Err(tokio_websockets::Error::Protocol(_))));
                    let reason = self.log_close(m);
                    self.ws = None;
                    let when = if self.active {
                        format!("in the middle of turn {}", self.turn)
                    } else {
                        format!("before turn {}", self.turn + 1)
                    };
                    let kind = if protocol {
                        ErrorKind::Protocol
                    } else {
                        ErrorKind::Closed
                    };
                    return Err(dev_err(
                        kind,
                        format!("the server closed the connection {when}: {reason}"),
                    ));
                }
                Wake::Timer => self.on_timers().await?,
            }
        }
    }

    /// Everything due now, in order; at most one microphone frame per call so
    /// that the reader gets its turn between frames (matters at speed 0).
    async fn on_timers(&mut self) -> Result<(), DeviceError> {
        let now = Instant::now();
        if self.read_paused_until.is_some_and(|t| t <= now) {
            self.read_paused_until = None;
            self.log("playback_done", json!({}));
        }
        if self.deadline.is_some_and(|t| t <= now) {
            return Err(dev_err(
                ErrorKind::Timeout,
                format!(
                    "turn {}: no EndResponse within {} s of StartChat",
                    self.turn, self.cfg.timeout
                ),
            ));
        }
        if let Some(t) = self.next_speech.filter(|&t| t <= now) {
            self.next_speech = None;
            self.start_speech(t);
        }
        while let Some(m) = self.mic.as_mut() {
            if m.start + m.mic.next_due() > now {
                break;
            }
            let turn = m.turn;
            let outs = m.mic.step();
            let mut sent_frame = false;
            for out in outs {
                match out {
                    MicOut::StartChat => self.start_chat(turn).await?,
                    MicOut::Frame(f) => {
                        self.send_frame(f).await?;
                        sent_frame = true;
                    }
                    MicOut::BargeIn => self.barge_in(turn).await?,
                }
            }
            if sent_frame {
                break;
            }
        }
        Ok(())
    }

    /// The user starts speaking the next turn's WAV.
    fn start_speech(&mut self, at: Instant) {
        let n = self.records.len() + 1;
        let input = &self.inputs[n - 1];
        let accumulate = self.cfg.barge_in.is_some() && self.state == FwState::Speaking;
        self.records.push(TurnSummary {
            turn: n,
            wav: input.wav.clone(),
            speech_samples: input.speech.len(),
            ..Default::default()
        });
        self.replies.push(Vec::new());
        self.last_frame.push(None);
        self.mic = Some(MicRun {
            mic: Mic::new(
                input.speech.clone(),
                self.cfg.block,
                self.cfg.speed,
                accumulate,
            ),
            start: at,
            turn: n,
        });
    }

    async fn start_chat(&mut self, turn: usize) -> Result<(), DeviceError> {
        self.turn = turn;
        self.send(Message::text(r#"{"event":"StartChat"}"#)).await?;
        let t = self.log("start_chat", json!({}));
        self.records[turn - 1].t_start_chat = Some(t);
        self.active = true;
        self.got_asr = false;
        self.in_segment = false;
        self.deadline = Some(Instant::now() + Duration::from_secs_f64(self.cfg.timeout));
        Ok(())
    }

    async fn send_frame(&mut self, f: crate::mic::Frame) -> Result<(), DeviceError> {
        let mut bytes = Vec::with_capacity(f.samples.len() * 2);
        for s in &f.samples {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        self.send(Message::binary(bytes)).await?;
        let t = self.log(
            "frame",
            json!({"samples": f.samples.len(), "speech": f.speech}),
        );
        self.last_frame[self.turn - 1] = Some(t);
        if f.audible_end && self.records[self.turn - 1].t_audible_end.is_none() {
            let t = self.log("audible_end", json!({}));
            self.records[self.turn - 1].t_audible_end = Some(t);
        }
        if f.last_speech {
            let t = self.log("last_speech_frame", json!({}));
            self.records[self.turn - 1].t_last_speech_frame = Some(t);
        }
        let uploaded = self.mic.as_ref().map_or(0, |m| m.mic.uploaded());
        if !self.got_asr && uploaded > NO_ASR_SAMPLES {
            return Err(dev_err(
                ErrorKind::Timeout,
                format!(
                    "turn {}: more than 10 s of audio uploaded without an ASR event (the firmware resets here)",
                    self.turn
                ),
            ));
        }
        Ok(())
    }

    /// Firmware barge-in: reconnect, StartChat, drop the playback queue.
    async fn barge_in(&mut self, turn: usize) -> Result<(), DeviceError> {
        self.turn = turn;
        self.active = false;
        self.in_segment = false;
        self.state = FwState::Listening;
        self.player.clear();
        self.read_paused_until = None;
        self.deadline = None;
        self.records[turn - 1].barged_in = true;
        self.log("barge_in", json!({}));
        self.connect(true, turn - 1).await?;
        self.start_chat(turn).await?;
        if let Some(m) = self.mic.as_mut() {
            m.mic.barged_in();
        }
        Ok(())
    }

    fn record(&mut self) -> Option<&mut TurnSummary> {
        if self.turn == 0 {
            None
        } else {
            self.records.get_mut(self.turn - 1)
        }
    }

    /// Handles one event; `true` when the last turn has ended.
    async fn handle_event(&mut self, ev: ServerEvent) -> Result<bool, DeviceError> {
        let now = Instant::now();
        match ev {
            ServerEvent::HelloStart => {
                self.log("hello_start", json!({}));
                if !self.hello_done {
                    self.hello.clear();
                    self.hello_started = true;
                }
            }
            ServerEvent::HelloChunk { data } => {
                self.log("hello_chunk", json!({"bytes": data.len()}));
                if !self.hello_done {
                    self.hello.extend_from_slice(&data);
                }
            }
            ServerEvent::HelloEnd => {
                self.log("hello_end", json!({"bytes": self.hello.len()}));
                if !self.hello_done && self.hello_started {
                    self.hello_done = true;
                    if let Some(dir) = &self.dir {
                        let p = dir.join("hello.wav");
                        std::fs::write(&p, &self.hello).map_err(|e| {
                            dev_err(
                                ErrorKind::Local,
                                format!("cannot write {}: {e}", p.display()),
                            )
                        })?;
                    }
                }
            }
            ServerEvent::ASR { text } => {
                self.log("asr", json!({"text": text}));
                self.got_asr = true;
                if self.active {
                    if let Some(r) = self.record() {
                        r.asr.push(text);
                    }
                }
            }
            ServerEvent::Action { action } => {
                self.log("action", json!({"text": action}));
            }
            ServerEvent::StartAudio { text } => {
                self.log("start_audio", json!({"text": text}));
                self.state = FwState::Speaking;
                self.opus.reset();
                self.player.start_segment();
                self.in_segment = true;
                if self.active {
                    if let Some(r) = self.record() {
                        r.segments.push(Segment {
                            text,
                            ..Default::default()
                        });
                    }
                }
            }
            ServerEvent::AudioChunk { data } => self.audio(now, Packet::Opus(data), 0)?,
            ServerEvent::AudioChunkWithVowel { data, vowel } => {
                self.audio(now, Packet::Opus(data), vowel)?
            }
            ServerEvent::AudioChunki16 { data, vowel } => {
                self.audio(now, Packet::Pcm(data), vowel)?
            }
            ServerEvent::EndAudio => {
                if !self.in_segment {
                    self.violation("EndAudio outside a StartAudio segment".into())?;
                    return Ok(false);
                }
                self.in_segment = false;
                let seg_samples = if self.active {
                    self.record()
                        .and_then(|r| r.segments.last())
                        .map_or(0, |s| s.samples)
                } else {
                    0
                };
                self.log("end_audio", json!({"samples": seg_samples}));
                if self.state != FwState::Speaking {
                    return Ok(false);
                }
                let (ratio, done) = self.player.end_segment(now);
                if let Some(r) = ratio {
                    self.log("download_speed", json!({"ratio": secs(r)}));
                }
                // Stop reading until the queued audio has played.
                self.read_paused_until = Some(done);
            }
            ServerEvent::EndVad => {
                let t = self.log("end_vad", json!({}));
                self.player.on_end_vad(now);
                if self.active {
                    if let Some(r) = self.record() {
                        r.end_vad = true;
                        r.t_end_vad.get_or_insert(t);
                    }
                }
                if matches!(self.state, FwState::Listening | FwState::Speaking) {
                    self.state = FwState::Waiting;
                    // Stop streaming; a partly filled buffer is discarded. (Not
                    // a next turn's speech that has not reached StartChat yet:
                    // a stray event must not swallow a turn.)
                    if self.active && self.mic.as_ref().is_some_and(|m| !m.mic.accumulating()) {
                        self.mic = None;
                    }
                }
            }
            ServerEvent::EndResponse => {
                let t = self.log("end_response", json!({}));
                self.state = FwState::Listening;
                self.in_segment = false;
                match self.mic.as_mut() {
                    Some(m) if m.mic.accumulating() => m.mic.listen(),
                    Some(_) if self.active => self.mic = None,
                    _ => {}
                }
                if self.active {
                    self.active = false;
                    self.deadline = None;
                    if let Some(r) = self.record() {
                        r.t_end_response = Some(t);
                    }
                    if self.turn == self.inputs.len() {
                        return Ok(true);
                    }
                    if self.mic.is_none() && self.next_speech.is_none() {
                        if self.cfg.reconnect_between_turns {
                            self.k0_close().await;
                            self.k0_connect().await?;
                        }
                        self.next_speech =
                            Some(Instant::now() + paced(self.cfg.gap, self.cfg.speed));
                    }
                }
            }
            ServerEvent::StartVideo | ServerEvent::EndVideo => {}
        }
        Ok(false)
    }

    fn audio(&mut self, now: Instant, packet: Packet, vowel: u8) -> Result<(), DeviceError> {
        if !self.in_segment {
            return self.violation("audio outside a StartAudio segment".into());
        }
        if vowel > MAX_VOWEL {
            return self.violation(format!("vowel {vowel} > {MAX_VOWEL}"));
        }
        let (bytes, pcm) = match packet {
            Packet::Opus(data) => match self.opus.decode(&data) {
                Ok(pcm) => (data.len(), pcm),
                Err(e) => return self.violation(e),
            },
            Packet::Pcm(data) => (data.len() * 2, data),
        };
        if self.state != FwState::Speaking {
            self.log(
                "dropped",
                json!({"reason": "audio while not Speaking", "bytes": bytes}),
            );
            return Ok(());
        }
        if self.active {
            let first = self.records[self.turn - 1].t_first_audio.is_none();
            if first {
                let t = self.log("first_audio", json!({}));
                self.records[self.turn - 1].t_first_audio = Some(t);
                if let Some(s) = self.cfg.barge_in {
                    if self.records.len() < self.inputs.len() && self.next_speech.is_none() {
                        self.next_speech = Some(now + paced(s, self.cfg.speed));
                    }
                }
            }
        }
        self.log(
            "audio",
            json!({"bytes": bytes, "samples": pcm.len(), "vowel": vowel}),
        );
        self.player.chunk(now, pcm.len());
        if self.active {
            let i = self.turn - 1;
            if let Some(seg) = self.records[i].segments.last_mut() {
                seg.samples += pcm.len();
                seg.packets += 1;
                seg.vowels.push(vowel);
            }
            self.records[i].reply_samples += pcm.len();
            self.replies[i].extend_from_slice(&pcm);
        }
        Ok(())
    }
}

enum Packet {
    Opus(Vec<u8>),
    Pcm(Vec<i16>),
}
