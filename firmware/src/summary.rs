//! The summary document (stdout and `DIR/summary.json`) and the error kinds
//! with their exit codes (firmware/README.md).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad option or input (exit 1).
    Usage,
    /// Local failure: output not writable … (exit 1).
    Local,
    /// Server unreachable or refused (exit 2).
    Connect,
    /// Protocol violation (exit 3).
    Protocol,
    /// `--timeout` or the no-ASR cut-off (exit 4).
    Timeout,
    /// The server closed the active connection mid-turn (exit 5).
    Closed,
}

impl ErrorKind {
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Usage | ErrorKind::Local => 1,
            ErrorKind::Connect => 2,
            ErrorKind::Protocol => 3,
            ErrorKind::Timeout => 4,
            ErrorKind::Closed => 5,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage",
            ErrorKind::Local => "local",
            ErrorKind::Connect => "connect",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Closed => "closed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.name())]
pub struct DeviceError {
    pub kind: ErrorKind,
    pub message: String,
}

impl DeviceError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> DeviceError {
        DeviceError {
            kind,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErrorInfo {
    pub kind: String,
    pub message: String,
}

impl From<&DeviceError> for ErrorInfo {
    fn from(e: &DeviceError) -> ErrorInfo {
        ErrorInfo {
            kind: e.kind.name().into(),
            message: e.message.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Segment {
    pub text: String,
    pub samples: usize,
    pub packets: usize,
    pub vowels: Vec<u8>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct TurnSummary {
    pub turn: usize,
    pub wav: String,
    pub speech_samples: usize,
    pub asr: Vec<String>,
    pub end_vad: bool,
    pub barged_in: bool,
    pub segments: Vec<Segment>,
    pub reply_samples: usize,
    pub reply_wav: Option<String>,
    pub t_start_chat: Option<f64>,
    pub t_last_speech_frame: Option<f64>,
    /// The frame with the WAV's audible end was sent, or (the upload stopped
    /// before it) the last frame of the turn was.
    pub t_audible_end: Option<f64>,
    pub t_end_vad: Option<f64>,
    pub t_first_audio: Option<f64>,
    pub t_end_response: Option<f64>,
    pub first_audio_latency: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceSummary {
    pub id: String,
    pub ok: bool,
    pub exit_code: i32,
    pub error: Option<ErrorInfo>,
    pub hello_bytes: usize,
    pub turns: Vec<TurnSummary>,
}

/// What the run summary needs of one device's summary (EchoKit's or xiaozhi's).
pub trait DeviceOutcome {
    fn exit_code(&self) -> i32;
}

impl DeviceOutcome for DeviceSummary {
    fn exit_code(&self) -> i32 {
        self.exit_code
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary<D = DeviceSummary> {
    pub ok: bool,
    pub exit_code: i32,
    pub devices: Vec<D>,
    /// Only for a failure before any device ran (usage / local errors).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

impl<D: DeviceOutcome> Summary<D> {
    /// The exit code is that of the first failing device (by id).
    pub fn of(devices: Vec<D>) -> Summary<D> {
        let exit_code = devices
            .iter()
            .map(|d| d.exit_code())
            .find(|&c| c != 0)
            .unwrap_or(0);
        Summary {
            ok: exit_code == 0,
            exit_code,
            devices,
            error: None,
        }
    }

    pub fn failed(e: &DeviceError) -> Summary<D> {
        Summary {
            ok: false,
            exit_code: e.kind.exit_code(),
            devices: Vec::new(),
            error: Some(e.into()),
        }
    }
}
