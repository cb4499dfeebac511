//! An in-process xiaozhi server for the xiaozhi-vdev tests: an OTA endpoint (HTTP, hyper) whose
//! reply the test chooses, and a WebSocket endpoint that hands each connection to the test body,
//! which plays the server's part of the protocol (hello, stt, tts, paced Opus, MCP).

#![allow(dead_code)]

use std::convert::Infallible;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout, Instant};
use tokio_websockets::{Message, ServerBuilder, WebSocketStream};

use echokit_vdev::summary::Summary;
use echokit_vdev::xiaozhi::cli::{run, Cli};
use echokit_vdev::xiaozhi::summary::DeviceSummary;

pub const HELLO: &str = r#"{"type":"hello","version":1,"features":{"mcp":true,"glyph_push":false},"transport":"websocket","audio_params":{"format":"opus","sample_rate":16000,"channels":1,"frame_duration":60}}"#;

pub struct OtaRequest {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

pub struct Conn {
    pub path: String,
    pub headers: HeaderMap,
    pub ws: WebSocketStream<TcpStream>,
    /// Binary frames received so far (payload, arrival).
    pub frames: Vec<(Vec<u8>, Instant)>,
}

pub struct Server {
    pub ota_url: String,
    pub ws_url: String,
    pub ota: mpsc::UnboundedReceiver<OtaRequest>,
    pub conns: mpsc::UnboundedReceiver<Conn>,
}

/// The OTA reply of a server that speaks WebSocket protocol `version` with token `tok`.
pub fn ota_reply(ws_url: &str, version: u32) -> (u16, String) {
    let body = json!({
        "websocket": {"url": ws_url, "token": "tok", "version": version},
        "server_time": {"timestamp": 1_763_900_000_000u64, "timezone_offset": 480},
        "firmware": {"version": "2.4.2", "url": ""},
    });
    (200, body.to_string())
}

/// Both endpoints on 127.0.0.1; `reply(ws_url)` is what the OTA endpoint answers.
pub async fn server(reply: fn(&str) -> (u16, String)) -> Server {
    let ws_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_url = format!(
        "ws://127.0.0.1:{}/xiaozhi/v1/",
        ws_listener.local_addr().unwrap().port()
    );
    let (ctx, conns) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = ws_listener.accept().await {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                if let Ok((req, ws)) = ServerBuilder::new().accept(tcp).await {
                    let _ = ctx.send(Conn {
                        path: req.uri().to_string(),
                        headers: req.headers().clone(),
                        ws,
                        frames: Vec::new(),
                    });
                }
            });
        }
    });
    let ota_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ota_url = format!(
        "http://127.0.0.1:{}/xiaozhi/ota/",
        ota_listener.local_addr().unwrap().port()
    );
    let (otx, ota) = mpsc::unbounded_channel();
    let answer = reply(&ws_url);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = ota_listener.accept().await {
            let otx = otx.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let otx = otx.clone();
                    let answer = answer.clone();
                    async move {
                        let method = req.method().to_string();
                        let path = req.uri().to_string();
                        let headers = req.headers().clone();
                        let bytes = req.into_body().collect().await.unwrap().to_bytes();
                        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                        let _ = otx.send(OtaRequest {
                            method,
                            path,
                            headers,
                            body,
                        });
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(answer.0)
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(answer.1)))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    Server {
        ota_url,
        ws_url,
        ota,
        conns,
    }
}

const WAIT: Duration = Duration::from_secs(10);

impl Server {
    pub async fn accept(&mut self) -> Conn {
        timeout(WAIT, self.conns.recv())
            .await
            .expect("the device connects")
            .expect("server running")
    }

    pub async fn ota_request(&mut self) -> OtaRequest {
        timeout(WAIT, self.ota.recv())
            .await
            .expect("the device calls OTA")
            .expect("server running")
    }
}

pub fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

impl Conn {
    /// The next text message; binary frames before it are kept in `frames`. `None` when the
    /// device is gone.
    pub async fn text(&mut self) -> Option<String> {
        loop {
            let m = timeout(WAIT, self.ws.next())
                .await
                .expect("the device sends something")?
                .ok()?;
            if m.is_text() {
                return Some(m.as_text().unwrap().to_string());
            }
            if m.is_binary() {
                self.frames.push((m.as_payload().to_vec(), Instant::now()));
            }
            if m.is_close() {
                return None;
            }
        }
    }

    pub async fn json(&mut self) -> Value {
        let t = self.text().await.expect("a text message");
        serde_json::from_str(&t).unwrap()
    }

    /// Reads until `n` binary frames have arrived in all.
    pub async fn frames_until(&mut self, n: usize) {
        while self.frames.len() < n {
            let m = timeout(WAIT, self.ws.next())
                .await
                .expect("the device streams")
                .expect("open")
                .unwrap();
            assert!(m.is_binary(), "unexpected {:?}", m.as_text());
            self.frames.push((m.as_payload().to_vec(), Instant::now()));
        }
    }

    /// Reads until the device ends the connection; whether it sent a Close frame, and the
    /// binary frames that came before.
    pub async fn until_gone(&mut self) -> bool {
        loop {
            match timeout(WAIT, self.ws.next())
                .await
                .expect("the device ends")
            {
                Some(Ok(m)) if m.is_close() => return true,
                Some(Ok(m)) if m.is_binary() => {
                    self.frames.push((m.as_payload().to_vec(), Instant::now()))
                }
                Some(Ok(m)) if m.is_text() => panic!("unexpected text {:?}", m.as_text()),
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return false,
            }
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).await.unwrap();
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text.to_string())).await.unwrap();
    }

    pub async fn binary(&mut self, b: Vec<u8>) {
        self.ws.send(Message::binary(b)).await.unwrap();
    }

    /// Hello both ways; returns the `listen start` that follows.
    pub async fn hello(&mut self, session: &str, rate: u32, frame_ms: u32) -> Value {
        assert_eq!(self.text().await.unwrap(), HELLO);
        self.send(
            json!({"type": "hello", "version": 1, "transport": "websocket",
            "audio_params": {"format": "opus", "sample_rate": rate, "channels": 1,
                "frame_duration": frame_ms}, "session_id": session}),
        )
        .await;
        self.json().await
    }

    pub async fn tts(&mut self, state: &str) {
        self.send(json!({"type": "tts", "state": state, "session_id": "S"}))
            .await;
    }

    /// Sends `packets` as xz-server paces them: 5 at once, then one per frame.
    pub async fn paced(&mut self, packets: &[Vec<u8>], frame: Duration) {
        for (i, p) in packets.iter().enumerate() {
            if i >= 5 {
                sleep(frame).await;
            }
            self.binary(p.clone()).await;
        }
    }
}

/// Opus packets of `frame_ms` at `rate` (a tone), as a server encodes its TTS.
pub fn opus_packets(n: usize, rate: u32, frame_ms: u32) -> Vec<Vec<u8>> {
    let mut enc = opus::Encoder::new(rate, opus::Channels::Mono, opus::Application::Audio).unwrap();
    let len = (rate / 1000 * frame_ms) as usize;
    (0..n)
        .map(|k| {
            let pcm: Vec<i16> = (0..len)
                .map(|i| {
                    let t = (k * len + i) as f32 / rate as f32;
                    (6000.0 * (2.0 * std::f32::consts::PI * 300.0 * t).sin()) as i16
                })
                .collect();
            enc.encode_vec(&pcm, 4000).unwrap()
        })
        .collect()
}

/// Decodes uplink packets (16 kHz); the RMS of each.
pub fn uplink_rms(packets: &[Vec<u8>]) -> Vec<f64> {
    let mut dec = opus::Decoder::new(16_000, opus::Channels::Mono).unwrap();
    let mut buf = vec![0i16; 960];
    packets
        .iter()
        .map(|p| {
            let n = dec.decode(p, &mut buf, false).unwrap();
            assert_eq!(n, 960, "uplink packets are 60 ms");
            let e: f64 = buf.iter().map(|&s| f64::from(s) * f64::from(s)).sum();
            (e / 960.0).sqrt()
        })
        .collect()
}

/// A 300 Hz tone of `n` samples at 16 kHz, as a WAV.
pub fn tone_wav(dir: &Path, name: &str, n: usize) -> String {
    let f: Vec<f32> = (0..n)
        .map(|i| 0.3 * (2.0 * std::f32::consts::PI * 300.0 * i as f32 / 16_000.0).sin())
        .collect();
    let bytes = echokit_native::wav::write_wav(&f, 1, 16_000, 16).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

/// Runs the device in-process with these arguments.
pub fn spawn(args: &[&str]) -> tokio::task::JoinHandle<Summary<DeviceSummary>> {
    let cli =
        Cli::try_parse_from(std::iter::once("xiaozhi-vdev").chain(args.iter().copied())).unwrap();
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

pub fn of<'a>(events: &'a [Value], name: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == name).collect()
}
