//! An in-process scripted EchoKit server for the device tests: each accepted
//! WebSocket is handed to the test body, which plays the server's part.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_websockets::{Message, ServerBuilder, WebSocketStream};

use echokit_vdev::cli::{run, Cli};
use echokit_vdev::summary::Summary;

pub type Ws = WebSocketStream<TcpStream>;

/// The server's side of the enum (declaration order of the server, with the
/// variants the firmware lacks), encoded independently of the device's enum.
#[derive(Serialize)]
#[allow(clippy::upper_case_acronyms, dead_code)]
pub enum Ev {
    HelloStart,
    HelloChunk { data: Vec<u8> },
    HelloEnd,
    ASR { text: String },
    Action { action: String },
    Choices { message: String, items: Vec<String> },
    StartAudio { text: String },
    AudioChunk { data: Vec<u8> },
    DisplayText { text: String },
    AudioChunkWithVowel { data: Vec<u8>, vowel: u8 },
    EndAudio,
    StartVideo,
    EndVideo,
    EndResponse,
    EndVad,
}

pub fn msg(ev: &Ev) -> Message {
    Message::binary(rmp_serde::to_vec(ev).unwrap())
}

pub fn asr(t: &str) -> Ev {
    Ev::ASR { text: t.into() }
}

pub fn start_audio(t: &str) -> Ev {
    Ev::StartAudio { text: t.into() }
}

/// One accepted connection: the request URI, its headers and the socket.
pub struct Conn {
    pub uri: String,
    pub extensions: Option<String>,
    pub ws: Ws,
}

pub struct Server {
    pub url: String,
    pub conns: mpsc::UnboundedReceiver<Conn>,
}

/// A WebSocket server on 127.0.0.1 that hands each connection to the test.
pub async fn server() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok((req, ws)) = ServerBuilder::new().accept(tcp).await {
                    let extensions = req
                        .headers()
                        .get("sec-websocket-extensions")
                        .map(|v| v.to_str().unwrap().to_string());
                    let _ = tx.send(Conn {
                        uri: req.uri().to_string(),
                        extensions,
                        ws,
                    });
                }
            });
        }
    });
    Server {
        url: format!("ws://127.0.0.1:{port}/ws/"),
        conns: rx,
    }
}

impl Server {
    pub async fn accept(&mut self) -> Conn {
        tokio::time::timeout(std::time::Duration::from_secs(10), self.conns.recv())
            .await
            .expect("the device connects")
            .expect("server running")
    }
}

impl Conn {
    pub async fn send(&mut self, ev: &Ev) {
        self.ws.send(msg(ev)).await.unwrap();
    }

    /// Next data message from the device (None when it is gone).
    pub async fn recv(&mut self) -> Option<Message> {
        loop {
            match self.ws.next().await {
                Some(Ok(m)) if m.is_text() || m.is_binary() => return Some(m),
                Some(Ok(m)) if m.is_close() => return None,
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    }

    /// Waits for StartChat; returns the text.
    pub async fn start_chat(&mut self) -> String {
        let m = self.recv().await.expect("StartChat");
        assert!(m.is_text(), "first message is StartChat text, got binary");
        m.as_text().unwrap().to_string()
    }

    /// Counts audio frames until the device closes the connection.
    pub async fn count_frames(&mut self) -> usize {
        let mut n = 0;
        while let Some(m) = self.recv().await {
            n += usize::from(m.is_binary());
        }
        n
    }

    /// Reads audio frames until `samples` samples have arrived; the frames as i16.
    pub async fn frames_until(&mut self, samples: usize) -> Vec<Vec<i16>> {
        let mut frames = Vec::new();
        let mut total = 0;
        while total < samples {
            let m = self.recv().await.expect("audio frame");
            assert!(m.is_binary(), "unexpected text {:?}", m.as_text());
            let f: Vec<i16> = m
                .as_payload()
                .chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect();
            total += f.len();
            frames.push(f);
        }
        frames
    }
}

/// Opus packets of 120 ms (a tone), encoded as the server would.
pub fn opus_packets(n: usize) -> Vec<Vec<u8>> {
    let mut enc =
        opus::Encoder::new(16_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    (0..n)
        .map(|k| {
            let pcm: Vec<i16> = (0..1920)
                .map(|i| {
                    let t = (k * 1920 + i) as f32 / 16_000.0;
                    (6000.0 * (2.0 * std::f32::consts::PI * 300.0 * t).sin()) as i16
                })
                .collect();
            enc.encode_vec(&pcm, 1280).unwrap()
        })
        .collect()
}

/// Sends one spoken segment of `packets` Opus packets.
pub async fn segment(c: &mut Conn, text: &str, packets: usize, vowels: &[u8]) {
    c.send(&start_audio(text)).await;
    for (i, p) in opus_packets(packets).into_iter().enumerate() {
        c.send(&Ev::AudioChunkWithVowel {
            data: p,
            vowel: vowels[i % vowels.len()],
        })
        .await;
    }
    c.send(&Ev::EndAudio).await;
}

/// A 16 kHz mono speech stand-in: `n` samples, none zero (so silence after
/// it is recognisable).
pub fn speech(n: usize) -> Vec<i16> {
    (0..n).map(|i| ((i * 37) % 20000) as i16 + 100).collect()
}

pub fn write_wav(dir: &Path, name: &str, samples: &[i16], rate: u32, channels: usize) -> PathBuf {
    let f: Vec<f32> = samples.iter().map(|&s| s as f32 / 32768.0).collect();
    let bytes = echokit_native::wav::write_wav(&f, channels, rate, 16).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Runs the device in-process with these arguments.
pub fn spawn_device(args: &[&str]) -> tokio::task::JoinHandle<Summary> {
    let cli =
        Cli::try_parse_from(std::iter::once("echokit-vdev").chain(args.iter().copied())).unwrap();
    tokio::spawn(run(cli))
}

/// events.jsonl as JSON values.
pub fn events(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn names(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect()
}

pub fn first<'a>(events: &'a [Value], name: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event"] == name)
        .unwrap_or_else(|| panic!("no {name} event"))
}

/// A standard turn on `c`: StartChat, speech frames, then EndVad, ASR, one
/// segment of `packets`, EndResponse.
pub async fn serve_turn(c: &mut Conn, speech_samples: usize, text: &str, packets: usize) {
    let chat = c.start_chat().await;
    assert_eq!(chat, r#"{"event":"StartChat"}"#);
    c.frames_until(speech_samples).await;
    c.send(&Ev::EndVad).await;
    c.send(&asr(text)).await;
    segment(c, "Sure.", packets, &[1]).await;
    c.send(&Ev::EndResponse).await;
}
