//! The xiaozhi wire: the JSON text messages the device sends (in the firmware's exact key order),
//! the server messages it reads (with the firmware's acceptance rules, and the strictness checks
//! it leaves out), and the binary audio framing of protocol versions 1, 2 and 3.

use serde_json::Value;

/// Uplink Opus: 16 kHz mono, one 60 ms packet per binary frame.
pub const UPLINK_RATE: u32 = 16_000;
pub const FRAME_MS: u32 = 60;
/// Downlink decoder defaults when the server hello announces nothing.
pub const DEFAULT_DOWNLINK_RATE: u32 = 24_000;
pub const DEFAULT_DOWNLINK_FRAME_MS: u32 = 60;
/// The decoder frame durations the device's Opus decoder accepts.
pub const DOWNLINK_FRAME_MS: [u32; 8] = [5, 10, 20, 40, 60, 80, 100, 120];
/// The rates libopus decodes at.
pub const OPUS_RATES: [u32; 5] = [8_000, 12_000, 16_000, 24_000, 48_000];

/// How the device listens (`listen start` mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Server VAD ends the utterance; the mic is off while speaking.
    Auto,
    /// Push-to-talk: `listen stop` ends the utterance; Idle after the reply.
    Manual,
    /// Server VAD; the mic stays on while speaking.
    Realtime,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Manual => "manual",
            Mode::Realtime => "realtime",
        }
    }
}

/// A JSON string literal (the firmware concatenates without escaping; a valid session id or
/// wake word never needs it).
fn lit(s: &str) -> String {
    Value::from(s).to_string()
}

/// The client hello, right after the upgrade (a board without server AEC or glyph push).
pub fn client_hello(version: u32) -> String {
    format!(
        concat!(
            r#"{{"type":"hello","version":{},"features":{{"mcp":true,"glyph_push":false}},"#,
            r#""transport":"websocket","audio_params":{{"format":"opus","sample_rate":{},"#,
            r#""channels":1,"frame_duration":{}}}}}"#
        ),
        version, UPLINK_RATE, FRAME_MS
    )
}

pub fn listen_start(session: &str, mode: Mode) -> String {
    format!(
        r#"{{"session_id":{},"type":"listen","state":"start","mode":"{}"}}"#,
        lit(session),
        mode.name()
    )
}

pub fn listen_stop(session: &str) -> String {
    format!(
        r#"{{"session_id":{},"type":"listen","state":"stop"}}"#,
        lit(session)
    )
}

/// The abort of a button press while speaking (no reason).
pub fn abort(session: &str) -> String {
    format!(r#"{{"session_id":{},"type":"abort"}}"#, lit(session))
}

pub fn mcp(session: &str, payload: &Value) -> String {
    format!(
        r#"{{"session_id":{},"type":"mcp","payload":{payload}}}"#,
        lit(session)
    )
}

/// What the server hello sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub session_id: Option<String>,
    pub sample_rate: Option<u32>,
    pub frame_duration: Option<u32>,
}

/// A server text message, as the firmware reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMsg {
    Hello(Hello),
    /// `transport` is a string other than `websocket`: the device ignores the hello.
    HelloIgnored(String),
    Stt(String),
    Llm {
        emotion: String,
    },
    TtsStart,
    SentenceStart(String),
    TtsStop,
    /// The JSON-RPC object for the device's MCP server.
    Mcp(Value),
    System(String),
    Alert {
        status: String,
        message: String,
        emotion: String,
    },
    /// Valid JSON the firmware logs and ignores (an unknown `type`, a `tts` state it no longer
    /// handles): why.
    Ignored(String),
}

fn string<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn need(v: &Value, ty: &str, key: &str) -> Result<String, String> {
    string(v, key)
        .map(str::to_string)
        .ok_or_else(|| format!("{ty} message without a string {key:?} (the firmware ignores it)"))
}

fn number(v: &Value, key: &str) -> Option<u32> {
    // cJSON's valueint: a number, truncated.
    v.get(key)
        .and_then(Value::as_f64)
        .map(|x| x.clamp(0.0, u32::MAX as f64) as u32)
}

/// Parses one text frame. `Err`: what a conforming server never sends (not JSON, no `type`, a
/// hello without `transport`, a known message without the field the device reads).
pub fn parse(text: &str) -> Result<ServerMsg, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("text frame is not JSON ({e})"))?;
    let ty = string(&v, "type").ok_or("text frame without a string \"type\"")?;
    Ok(match ty {
        "hello" => match v.get("transport") {
            Some(Value::String(t)) if t == "websocket" => {
                let params = v.get("audio_params").filter(|p| p.is_object());
                ServerMsg::Hello(Hello {
                    session_id: string(&v, "session_id").map(str::to_string),
                    sample_rate: params.and_then(|p| number(p, "sample_rate")),
                    frame_duration: params.and_then(|p| number(p, "frame_duration")),
                })
            }
            Some(Value::String(t)) => ServerMsg::HelloIgnored(t.clone()),
            _ => {
                return Err(
                    "server hello without a string \"transport\" (the firmware dereferences a null pointer here)"
                        .into(),
                )
            }
        },
        "stt" => ServerMsg::Stt(need(&v, ty, "text")?),
        "llm" => ServerMsg::Llm {
            emotion: need(&v, ty, "emotion")?,
        },
        "tts" => match need(&v, ty, "state")?.as_str() {
            "start" => ServerMsg::TtsStart,
            "stop" => ServerMsg::TtsStop,
            "sentence_start" => ServerMsg::SentenceStart(need(&v, "tts sentence_start", "text")?),
            other => ServerMsg::Ignored(format!("tts state {other:?} is not handled")),
        },
        "mcp" => match v.get("payload") {
            Some(p) if p.is_object() => ServerMsg::Mcp(p.clone()),
            _ => return Err("mcp message whose payload is not an object".into()),
        },
        "system" => ServerMsg::System(need(&v, ty, "command")?),
        "alert" => ServerMsg::Alert {
            status: need(&v, ty, "status")?,
            message: need(&v, ty, "message")?,
            emotion: need(&v, ty, "emotion")?,
        },
        other => ServerMsg::Ignored(format!("unknown message type {other:?}")),
    })
}

/// The 16-byte header of protocol version 2 and the 4-byte one of version 3.
const V2_HEADER: usize = 16;
const V3_HEADER: usize = 4;

/// One uplink binary frame for protocol `version` (1 or anything else: the bare packet).
pub fn frame(version: u32, opus: &[u8]) -> Vec<u8> {
    match version {
        2 => {
            let mut b = Vec::with_capacity(V2_HEADER + opus.len());
            b.extend_from_slice(&2u16.to_be_bytes());
            b.extend_from_slice(&0u16.to_be_bytes()); // type: Opus
            b.extend_from_slice(&0u32.to_be_bytes()); // reserved
            b.extend_from_slice(&0u32.to_be_bytes()); // timestamp (server AEC only)
            b.extend_from_slice(&(opus.len() as u32).to_be_bytes());
            b.extend_from_slice(opus);
            b
        }
        3 => {
            let mut b = Vec::with_capacity(V3_HEADER + opus.len());
            b.push(0); // type: Opus
            b.push(0);
            b.extend_from_slice(&(opus.len() as u16).to_be_bytes());
            b.extend_from_slice(opus);
            b
        }
        _ => opus.to_vec(),
    }
}

/// The Opus packet of a downlink binary frame. The firmware trusts the header's length; a frame
/// shorter than its header or its stated payload is an error here.
pub fn unframe(version: u32, frame: &[u8]) -> Result<&[u8], String> {
    let (header, len) = match version {
        2 if frame.len() >= V2_HEADER => (
            V2_HEADER,
            u32::from_be_bytes(frame[12..16].try_into().unwrap()) as usize,
        ),
        3 if frame.len() >= V3_HEADER => (
            V3_HEADER,
            u16::from_be_bytes(frame[2..4].try_into().unwrap()) as usize,
        ),
        2 | 3 => {
            return Err(format!(
                "binary frame of {} bytes is shorter than the protocol {version} header",
                frame.len()
            ))
        }
        _ => return Ok(frame),
    };
    frame.get(header..header + len).ok_or_else(|| {
        format!(
            "binary frame of {} bytes states a {len}-byte payload after its {header}-byte header",
            frame.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_messages_are_the_firmware_strings() {
        assert_eq!(
            client_hello(1),
            r#"{"type":"hello","version":1,"features":{"mcp":true,"glyph_push":false},"transport":"websocket","audio_params":{"format":"opus","sample_rate":16000,"channels":1,"frame_duration":60}}"#
        );
        let v: Value = serde_json::from_str(&client_hello(3)).unwrap();
        assert_eq!(v["version"], 3);
        assert_eq!(
            listen_start("S1", Mode::Auto),
            r#"{"session_id":"S1","type":"listen","state":"start","mode":"auto"}"#
        );
        assert_eq!(
            listen_start("", Mode::Realtime),
            r#"{"session_id":"","type":"listen","state":"start","mode":"realtime"}"#
        );
        assert_eq!(
            listen_stop("S1"),
            r#"{"session_id":"S1","type":"listen","state":"stop"}"#
        );
        assert_eq!(abort("S1"), r#"{"session_id":"S1","type":"abort"}"#);
        assert_eq!(
            mcp(
                "S1",
                &serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {}})
            ),
            r#"{"session_id":"S1","type":"mcp","payload":{"jsonrpc":"2.0","id":1,"result":{}}}"#
        );
    }

    #[test]
    fn server_messages_follow_the_firmware_rules() {
        let hello = parse(
            r#"{"type":"hello","version":1,"transport":"websocket","session_id":"abc","audio_params":{"format":"opus","sample_rate":16000,"channels":1,"frame_duration":60.0}}"#,
        )
        .unwrap();
        assert_eq!(
            hello,
            ServerMsg::Hello(Hello {
                session_id: Some("abc".into()),
                sample_rate: Some(16_000),
                frame_duration: Some(60)
            })
        );
        assert_eq!(
            parse(r#"{"type":"hello","transport":"websocket","audio_params":5}"#).unwrap(),
            ServerMsg::Hello(Hello {
                session_id: None,
                sample_rate: None,
                frame_duration: None
            })
        );
        assert_eq!(
            parse(r#"{"type":"hello","transport":"udp"}"#).unwrap(),
            ServerMsg::HelloIgnored("udp".into())
        );
        assert!(parse(r#"{"type":"hello"}"#)
            .unwrap_err()
            .contains("transport"));
        assert!(parse(r#"{"type":"hello","transport":1}"#).is_err());
        assert_eq!(
            parse(r#"{"type":"stt","text":"hi","session_id":"s"}"#).unwrap(),
            ServerMsg::Stt("hi".into())
        );
        assert_eq!(
            parse(r#"{"type":"llm","text":"🙂","emotion":"happy"}"#).unwrap(),
            ServerMsg::Llm {
                emotion: "happy".into()
            }
        );
        assert_eq!(
            parse(r#"{"type":"tts","state":"start"}"#).unwrap(),
            ServerMsg::TtsStart
        );
        assert_eq!(
            parse(r#"{"type":"tts","state":"sentence_start","text":"Hi."}"#).unwrap(),
            ServerMsg::SentenceStart("Hi.".into())
        );
        assert_eq!(
            parse(r#"{"type":"tts","state":"stop"}"#).unwrap(),
            ServerMsg::TtsStop
        );
        assert!(matches!(
            parse(r#"{"type":"tts","state":"sentence_end"}"#).unwrap(),
            ServerMsg::Ignored(_)
        ));
        assert!(matches!(
            parse(r#"{"type":"goodbye","session_id":"s"}"#).unwrap(),
            ServerMsg::Ignored(_)
        ));
        assert_eq!(
            parse(r#"{"type":"mcp","payload":{"jsonrpc":"2.0"}}"#).unwrap(),
            ServerMsg::Mcp(serde_json::json!({"jsonrpc": "2.0"}))
        );
        assert_eq!(
            parse(r#"{"type":"system","command":"reboot"}"#).unwrap(),
            ServerMsg::System("reboot".into())
        );
        for bad in [
            "not json",
            r#"{"text":"no type"}"#,
            r#"{"type":5}"#,
            r#"{"type":"stt","text":3}"#,
            r#"{"type":"llm","text":"🙂"}"#,
            r#"{"type":"tts"}"#,
            r#"{"type":"tts","state":"sentence_start"}"#,
            r#"{"type":"mcp","payload":"x"}"#,
            r#"{"type":"alert","status":"a","message":"b"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn binary_framing_of_each_version() {
        let opus = [0xf8u8, 1, 2, 3, 4];
        assert_eq!(frame(1, &opus), opus);
        let v2 = frame(2, &opus);
        assert_eq!(&v2[..16], &[0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
        assert_eq!(unframe(2, &v2).unwrap(), opus);
        let v3 = frame(3, &opus);
        assert_eq!(&v3[..4], &[0, 0, 0, 5]);
        assert_eq!(unframe(3, &v3).unwrap(), opus);
        assert_eq!(unframe(1, &opus).unwrap(), opus);
        // A longer frame: the header's length cuts the payload.
        let mut long = v3.clone();
        long.extend_from_slice(&[9, 9]);
        assert_eq!(unframe(3, &long).unwrap(), opus);
        assert!(unframe(2, &v2[..20])
            .unwrap_err()
            .contains("5-byte payload"));
        assert!(unframe(3, &[0, 0]).unwrap_err().contains("shorter"));
    }
}
