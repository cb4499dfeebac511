//! The xiaozhi device's part of the summary document (firmware/README.md, "xiaozhi-vdev").

use serde::Serialize;
use serde_json::Value;

use super::mcp::Call;
use super::speaker::Pacing;
use super::wire::Mode;
use crate::summary::{DeviceOutcome, ErrorInfo};

/// A `--abort-after` abort and how fast the audio stopped (seconds after the abort was sent).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Abort {
    pub t_sent: f64,
    /// Packets that still arrived while speaking.
    pub packets_after: usize,
    /// The last of them arrived.
    pub last_audio_after: Option<f64>,
    pub tts_stop_after: Option<f64>,
    /// The loudspeaker went quiet (the held audio had played).
    pub silent_after: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Turn {
    pub turn: usize,
    pub wav: String,
    pub mode: Mode,
    /// 16 kHz samples of the WAV.
    pub speech_samples: usize,
    /// Uplink frames sent in this turn.
    pub frames: usize,
    pub stt: Vec<String>,
    /// `llm` emotions, in order.
    pub emotions: Vec<String>,
    /// `tts sentence_start` texts, in order.
    pub sentences: Vec<String>,
    /// `tts start` messages received while already speaking (the firmware ignores them).
    pub repeated_tts_start: usize,
    /// Binary frames that arrived while not speaking (dropped by the device).
    pub audio_not_speaking: usize,
    /// Reply audio played, at the downlink rate.
    pub reply_samples: usize,
    pub reply_rate: u32,
    pub reply_wav: Option<String>,
    pub t_listen_start: Option<f64>,
    /// The frame with the WAV's first sample was sent.
    pub t_speech_start: Option<f64>,
    /// The frame with the WAV's last audible sample was sent.
    pub t_audible_end: Option<f64>,
    pub t_last_speech_frame: Option<f64>,
    pub t_listen_stop: Option<f64>,
    pub t_stt: Option<f64>,
    pub t_tts_start: Option<f64>,
    pub t_first_audio: Option<f64>,
    pub t_tts_stop: Option<f64>,
    /// When the held audio had played after `tts stop`.
    pub t_playback_end: Option<f64>,
    /// `t_first_audio - t_audible_end`.
    pub first_audio_latency: Option<f64>,
    pub pacing: Pacing,
    pub abort: Option<Abort>,
}

/// One MCP request the server sent.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct McpRequest {
    pub t: f64,
    pub method: Option<String>,
    pub id: Option<i64>,
    /// Why the device sent no reply.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Downlink {
    pub sample_rate: u32,
    pub frame_duration: u32,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceSummary {
    /// The MAC (`Device-Id`).
    pub id: String,
    pub client_id: String,
    pub ok: bool,
    pub exit_code: i32,
    pub error: Option<ErrorInfo>,
    /// The OTA reply body (`null` with `--ws` or when the call failed).
    pub ota: Option<Value>,
    pub upgrade_offered: bool,
    pub websocket_url: Option<String>,
    pub protocol_version: u32,
    pub session_id: Option<String>,
    pub downlink: Option<Downlink>,
    pub mcp: Vec<McpRequest>,
    pub tool_calls: Vec<Call>,
    /// The speaker volume at the end (`self.audio_speaker.set_volume`).
    pub volume: i64,
    pub turns: Vec<Turn>,
}

impl DeviceOutcome for DeviceSummary {
    fn exit_code(&self) -> i32 {
        self.exit_code
    }
}
