//! Server → device events, decoded exactly as the firmware does (rmp-serde
//! into the firmware's own enum), plus the strictness checks the firmware
//! leaves out (docs/protocol.md#server-events).

use serde::{Deserialize, Serialize};

/// The firmware's copy of the server's event enum (echokit_box 0.3.2). It has
/// no `Choices` / `DisplayText` (those fail to decode on a real device) and an
/// extra `AudioChunki16` the firmware uses internally after Opus decoding.
/// Serialize is derived only so that tests (and test servers) can encode it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum ServerEvent {
    HelloStart,
    HelloChunk { data: Vec<u8> },
    HelloEnd,
    ASR { text: String },
    Action { action: String },
    StartAudio { text: String },
    AudioChunk { data: Vec<u8> },
    AudioChunki16 { data: Vec<i16>, vowel: u8 },
    AudioChunkWithVowel { data: Vec<u8>, vowel: u8 },
    EndAudio,
    StartVideo,
    EndVideo,
    EndResponse,
    EndVad,
}

/// The server-protocol events the firmware's enum lacks (docs/protocol.md#the-events). A real
/// device fails to decode them and drops them with a warning; that is the
/// firmware's designed behaviour, not a server fault, so they are told apart
/// from garbage and dropped even in strict mode.
#[derive(Debug, Deserialize)]
enum NotInFirmware {
    Choices {
        #[allow(dead_code)]
        message: String,
        #[allow(dead_code)]
        items: Vec<String>,
    },
    DisplayText {
        #[allow(dead_code)]
        text: String,
    },
}

/// Why a binary frame is not a valid event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A valid server event that this firmware version does not know
    /// (`Choices`, `DisplayText`): dropped, as the firmware does.
    #[error(
        "{variant} ({len} bytes) is not in the firmware's event enum; dropped as echokit_box does"
    )]
    NotInFirmware { len: usize, variant: &'static str },
    /// rmp-serde rejected it: the firmware logs and drops such a frame.
    #[error("frame of {len} bytes does not decode as a ServerEvent: {reason}")]
    Invalid { len: usize, reason: String },
    /// It decoded, but bytes follow the event (one message = one event,
    /// docs/protocol.md#connecting). The firmware (rmp_serde::from_slice) ignores them; `event` is
    /// what it saw.
    #[error("frame of {len} bytes holds {trailing} bytes after the event")]
    Trailing {
        len: usize,
        trailing: usize,
        event: Box<ServerEvent>,
    },
}

/// Decodes one binary frame as the firmware would, refusing trailing bytes.
pub fn decode(frame: &[u8]) -> Result<ServerEvent, DecodeError> {
    let mut cursor = std::io::Cursor::new(frame);
    let event: ServerEvent = match rmp_serde::from_read(&mut cursor) {
        Ok(event) => event,
        Err(e) => {
            return Err(match rmp_serde::from_slice::<NotInFirmware>(frame) {
                Ok(other) => DecodeError::NotInFirmware {
                    len: frame.len(),
                    variant: match other {
                        NotInFirmware::Choices { .. } => "Choices",
                        NotInFirmware::DisplayText { .. } => "DisplayText",
                    },
                },
                Err(_) => DecodeError::Invalid {
                    len: frame.len(),
                    reason: e.to_string(),
                },
            })
        }
    };
    let used = cursor.position() as usize;
    if used != frame.len() {
        return Err(DecodeError::Trailing {
            len: frame.len(),
            trailing: frame.len() - used,
            event: Box::new(event),
        });
    }
    Ok(event)
}

/// Largest vowel code (docs/protocol.md#vowels: 0 = none, 1..=5 = A E I O U).
pub const MAX_VOWEL: u8 = 5;

impl ServerEvent {
    /// The `event` name used in events.jsonl.
    pub fn log_name(&self) -> &'static str {
        match self {
            ServerEvent::HelloStart => "hello_start",
            ServerEvent::HelloChunk { .. } => "hello_chunk",
            ServerEvent::HelloEnd => "hello_end",
            ServerEvent::ASR { .. } => "asr",
            ServerEvent::Action { .. } => "action",
            ServerEvent::StartAudio { .. } => "start_audio",
            ServerEvent::AudioChunk { .. }
            | ServerEvent::AudioChunki16 { .. }
            | ServerEvent::AudioChunkWithVowel { .. } => "audio",
            ServerEvent::EndAudio => "end_audio",
            ServerEvent::StartVideo => "start_video",
            ServerEvent::EndVideo => "end_video",
            ServerEvent::EndResponse => "end_response",
            ServerEvent::EndVad => "end_vad",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// Every example of docs/protocol.md#byte-examples that the firmware knows, byte for byte.
    #[test]
    fn decodes_spec_byte_examples() {
        let cases: Vec<(&str, ServerEvent)> = vec![
            ("aa 48 65 6c 6c 6f 53 74 61 72 74", ServerEvent::HelloStart),
            ("a8 48 65 6c 6c 6f 45 6e 64", ServerEvent::HelloEnd),
            ("a8 45 6e 64 41 75 64 69 6f", ServerEvent::EndAudio),
            (
                "ab 45 6e 64 52 65 73 70 6f 6e 73 65",
                ServerEvent::EndResponse,
            ),
            ("a6 45 6e 64 56 61 64", ServerEvent::EndVad),
            (
                "81 a3 41 53 52 91 a2 68 69",
                ServerEvent::ASR { text: "hi".into() },
            ),
            ("81 a3 41 53 52 91 a0", ServerEvent::ASR { text: "".into() }),
            (
                "81 a6 41 63 74 69 6f 6e 91 a6 42 79 65 42 79 65",
                ServerEvent::Action {
                    action: "ByeBye".into(),
                },
            ),
            (
                "81 aa 53 74 61 72 74 41 75 64 69 6f 91 a6 48 65 6c 6c 6f 2e",
                ServerEvent::StartAudio {
                    text: "Hello.".into(),
                },
            ),
            (
                "81 aa 41 75 64 69 6f 43 68 75 6e 6b 91 93 01 02 03",
                ServerEvent::AudioChunk {
                    data: vec![1, 2, 3],
                },
            ),
            (
                "81 b3 41 75 64 69 6f 43 68 75 6e 6b 57 69 74 68 56 6f 77 65 6c 92 91 cc c8 01",
                ServerEvent::AudioChunkWithVowel {
                    data: vec![200],
                    vowel: 1,
                },
            ),
            (
                "81 aa 48 65 6c 6c 6f 43 68 75 6e 6b 91 92 00 cc ff",
                ServerEvent::HelloChunk { data: vec![0, 255] },
            ),
        ];
        for (bytes, want) in cases {
            let b = hex(bytes);
            assert_eq!(decode(&b).unwrap(), want, "{bytes}");
            // And the firmware's enum encodes to the same bytes (compact form).
            assert_eq!(rmp_serde::to_vec(&want).unwrap(), b, "{want:?}");
        }
    }

    /// docs/protocol.md#the-events: Choices and DisplayText are unknown to the firmware, which
    /// drops them; they are told apart from garbage.
    #[test]
    fn variants_unknown_to_the_firmware_are_recognised() {
        for (bytes, name) in [
            (
                "81 a7 43 68 6f 69 63 65 73 92 a1 6d 92 a1 61 a1 62",
                "Choices",
            ),
            (
                "81 ab 44 69 73 70 6c 61 79 54 65 78 74 91 a2 6f 6b",
                "DisplayText",
            ),
        ] {
            let err = decode(&hex(bytes)).unwrap_err();
            assert_eq!(
                err,
                DecodeError::NotInFirmware {
                    len: 17,
                    variant: name
                }
            );
        }
        // The same names with the wrong shape are garbage.
        let err = decode(&hex("81 ab 44 69 73 70 6c 61 79 54 65 78 74 91 05")).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid { .. }), "{err:?}");
    }

    /// docs/protocol.md#encoding tolerance: `bin` for bytes, fields as a map with names.
    #[test]
    fn accepts_tolerant_forms() {
        // {"AudioChunk": [bin8 [1,2,3]]}
        let b = hex("81 aa 41 75 64 69 6f 43 68 75 6e 6b 91 c4 03 01 02 03");
        assert_eq!(
            decode(&b).unwrap(),
            ServerEvent::AudioChunk {
                data: vec![1, 2, 3]
            }
        );
        // {"AudioChunkWithVowel": {"data": [200], "vowel": 1}}
        let mut b = hex("81 b3");
        b.extend_from_slice(b"AudioChunkWithVowel");
        b.extend(hex("82 a4"));
        b.extend_from_slice(b"data");
        b.extend(hex("91 cc c8 a5"));
        b.extend_from_slice(b"vowel");
        b.push(0x01);
        assert_eq!(
            decode(&b).unwrap(),
            ServerEvent::AudioChunkWithVowel {
                data: vec![200],
                vowel: 1
            }
        );
        // A 2048-byte hello chunk with an array16 header (docs/protocol.md#byte-examples).
        let mut b = hex("81 aa 48 65 6c 6c 6f 43 68 75 6e 6b 91 dc 08 00");
        b.extend(std::iter::repeat_n(0x07u8, 2048));
        assert_eq!(
            decode(&b).unwrap(),
            ServerEvent::HelloChunk {
                data: vec![7; 2048]
            }
        );
    }

    #[test]
    fn rejects_garbage() {
        for bytes in [
            "",                                                   // empty frame
            "c1",                                                 // never-used marker
            "a7 45 6e 64 56 61 64",                               // fixstr length runs past the end
            "a5 48 65 6c 6c 6f",                                  // "Hello": no such variant
            "81 a3 41 53 52 91 cc 05",                            // ASR text is a number
            "81 aa 41 75 64 69 6f 43 68 75 6e 6b 91 91 cd 01 00", // byte 256
            "93 01 02 03",                                        // bare array
            "81 a3 41 53 52 90",                                  // ASR with no fields
        ] {
            let err = decode(&hex(bytes)).unwrap_err();
            assert!(
                matches!(err, DecodeError::Invalid { .. }),
                "{bytes}: {err:?}"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_reported_with_the_event() {
        let b = hex("a6 45 6e 64 56 61 64 a6 45 6e 64 56 61 64");
        match decode(&b).unwrap_err() {
            DecodeError::Trailing {
                len,
                trailing,
                event,
            } => {
                assert_eq!((len, trailing), (14, 7));
                assert_eq!(*event, ServerEvent::EndVad);
            }
            other => panic!("{other:?}"),
        }
    }
}
