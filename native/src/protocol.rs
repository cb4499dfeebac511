//! The EchoKit wire protocol (docs/protocol.md#client-commands, #server-events): the
//! server→device `ServerEvent` MessagePack codec and the device→server JSON
//! client commands. Pure Rust; bindings in `py/protocol.rs`.
//!
//! Encoding goes through `rmp_serde::to_vec` on an enum declared exactly like
//! the reference server's, so the bytes are rmp-serde's by construction
//! (compact form: unit variant = string, struct variant = 1-entry map whose
//! value is the positional field array, `Vec<u8>` = array of ints because the
//! default `BytesMode::Normal` is kept). Decoding goes through rmp-serde's
//! deserializer too, so it accepts exactly what the firmware's `from_slice`
//! accepts (variant as string or 1-entry map, fields positional or named,
//! bytes as an int array or `bin`), plus a check that no bytes trail.
//!
//! The one hand-written piece is [`encode_audio_chunk_into`], the hot-loop
//! encoder for `AudioChunk`/`AudioChunkWithVowel`: rmp-serde serializes a
//! `Vec<u8>` element by element through the generic `Serializer` (one
//! `write_uint` call per byte), while the wire form of a byte is trivially
//! "fixint if < 0x80, else `cc XX`", which a branch-free loop writes several
//! times faster. Its output is tested to be byte-identical to rmp-serde's.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::invalid;

/// Server → device event, declared as in echokit_server (same variant names,
/// field names, field order and types; the order of variants only matters
/// for rmp-serde's integer variant indices, which decoding also accepts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum ServerEvent {
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

/// Every variant name, in declaration order.
pub const VARIANTS: [&str; 15] = [
    "HelloStart",
    "HelloChunk",
    "HelloEnd",
    "ASR",
    "Action",
    "Choices",
    "StartAudio",
    "AudioChunk",
    "DisplayText",
    "AudioChunkWithVowel",
    "EndAudio",
    "StartVideo",
    "EndVideo",
    "EndResponse",
    "EndVad",
];

/// The field names of a variant, in serialization order (empty for unit
/// variants); `None` for an unknown name.
pub fn variant_fields(name: &str) -> Option<&'static [&'static str]> {
    Some(match name {
        "HelloStart" | "HelloEnd" | "EndAudio" | "StartVideo" | "EndVideo" | "EndResponse"
        | "EndVad" => &[],
        "HelloChunk" | "AudioChunk" => &["data"],
        "ASR" | "StartAudio" | "DisplayText" => &["text"],
        "Action" => &["action"],
        "Choices" => &["message", "items"],
        "AudioChunkWithVowel" => &["data", "vowel"],
        _ => return None,
    })
}

impl ServerEvent {
    /// The variant name as written on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Self::HelloStart => "HelloStart",
            Self::HelloChunk { .. } => "HelloChunk",
            Self::HelloEnd => "HelloEnd",
            Self::ASR { .. } => "ASR",
            Self::Action { .. } => "Action",
            Self::Choices { .. } => "Choices",
            Self::StartAudio { .. } => "StartAudio",
            Self::AudioChunk { .. } => "AudioChunk",
            Self::DisplayText { .. } => "DisplayText",
            Self::AudioChunkWithVowel { .. } => "AudioChunkWithVowel",
            Self::EndAudio => "EndAudio",
            Self::StartVideo => "StartVideo",
            Self::EndVideo => "EndVideo",
            Self::EndResponse => "EndResponse",
            Self::EndVad => "EndVad",
        }
    }

    /// The unit variant called `name`, if it is one.
    pub fn unit(name: &str) -> Option<Self> {
        Some(match name {
            "HelloStart" => Self::HelloStart,
            "HelloEnd" => Self::HelloEnd,
            "EndAudio" => Self::EndAudio,
            "StartVideo" => Self::StartVideo,
            "EndVideo" => Self::EndVideo,
            "EndResponse" => Self::EndResponse,
            "EndVad" => Self::EndVad,
            _ => return None,
        })
    }
}

/// MessagePack lengths are u32: rmp-serde would silently truncate a longer
/// length (`len as u32`), so refuse it instead.
fn check_len(what: &str, len: usize) -> Result<()> {
    if len > u32::MAX as usize {
        return Err(invalid!(
            "{what} is {len} long; MessagePack allows at most {} elements/bytes",
            u32::MAX
        ));
    }
    Ok(())
}

/// Encodes one event exactly as echokit_server does (`rmp_serde::to_vec`).
pub fn encode_event(event: &ServerEvent) -> Result<Vec<u8>> {
    match event {
        ServerEvent::HelloChunk { data }
        | ServerEvent::AudioChunk { data }
        | ServerEvent::AudioChunkWithVowel { data, .. } => check_len("data", data.len())?,
        ServerEvent::ASR { text }
        | ServerEvent::StartAudio { text }
        | ServerEvent::DisplayText { text } => check_len("text", text.len())?,
        ServerEvent::Action { action } => check_len("action", action.len())?,
        ServerEvent::Choices { message, items } => {
            check_len("message", message.len())?;
            check_len("items", items.len())?;
            for item in items {
                check_len("an item", item.len())?;
            }
        }
        _ => {}
    }
    // Sized up front (names and headers < 32 bytes, a data byte <= 2 bytes)
    // so the buffer never grows while rmp-serde writes.
    let capacity = 32
        + match event {
            ServerEvent::HelloChunk { data }
            | ServerEvent::AudioChunk { data }
            | ServerEvent::AudioChunkWithVowel { data, .. } => 2 * data.len(),
            ServerEvent::ASR { text }
            | ServerEvent::StartAudio { text }
            | ServerEvent::DisplayText { text }
            | ServerEvent::Action { action: text } => 5 + text.len(),
            ServerEvent::Choices { message, items } => {
                10 + message.len() + items.iter().map(|i| 5 + i.len()).sum::<usize>()
            }
            _ => 0,
        };
    let mut out = Vec::with_capacity(capacity);
    rmp_serde::encode::write(&mut out, event)
        .map_err(|e| invalid!("cannot encode {}: {e}", event.name()))?;
    Ok(out)
}

/// Decodes one event the way the firmware's `rmp_serde::from_slice` does,
/// and additionally rejects bytes after the event.
pub fn decode_event(data: &[u8]) -> Result<ServerEvent> {
    if data.is_empty() {
        return Err(invalid!("cannot decode ServerEvent: empty input"));
    }
    let mut de = rmp_serde::Deserializer::new(data);
    let event = ServerEvent::deserialize(&mut de).map_err(|e| describe_decode_error(data, &e))?;
    let rest = de.get_ref().len();
    if rest != 0 {
        return Err(invalid!(
            "cannot decode ServerEvent: {rest} trailing byte(s) after a complete {} event \
             (input is {} bytes, the event ends at byte {})",
            event.name(),
            data.len(),
            data.len() - rest
        ));
    }
    Ok(event)
}

/// Turns an rmp-serde error into a message that says what is wrong.
fn describe_decode_error(data: &[u8], e: &rmp_serde::decode::Error) -> crate::error::Error {
    use rmp_serde::decode::Error as E;
    use std::io::ErrorKind;
    let why = match e {
        E::InvalidMarkerRead(io) | E::InvalidDataRead(io)
            if io.kind() == ErrorKind::UnexpectedEof =>
        {
            format!(
                "truncated input: the {} bytes end in the middle of an event",
                data.len()
            )
        }
        E::LengthMismatch(n) => {
            // Raised for a variant map that does not hold exactly one entry,
            // and for a positional field array with more elements than fields.
            let top = data[0];
            if matches!(top, 0x80..=0x8f | 0xde | 0xdf) && top != 0x81 {
                format!("a ServerEvent map must have exactly 1 entry (the variant), got {n}")
            } else {
                format!("field array has more elements than the variant's {n} field(s)")
            }
        }
        E::TypeMismatch(marker) => format!("unexpected MessagePack value (marker {marker:?})"),
        E::DepthLimitExceeded => "nesting too deep".to_string(),
        other => other.to_string(),
    };
    match peek_variant(data) {
        Some(name) => invalid!("cannot decode ServerEvent (variant {name:?}): {why}"),
        None => invalid!("cannot decode ServerEvent: {why}"),
    }
}

/// The variant name at the start of `data` (a string, or the string key of a
/// 1-entry map), to give decode errors some context.
fn peek_variant(data: &[u8]) -> Option<String> {
    let mut rd = data;
    let marker = rmp::decode::read_marker(&mut rd).ok()?;
    let rest = match marker {
        rmp::Marker::FixStr(_) | rmp::Marker::Str8 | rmp::Marker::Str16 | rmp::Marker::Str32 => {
            data
        }
        rmp::Marker::FixMap(1) => rd,
        rmp::Marker::Map16 | rmp::Marker::Map32 => {
            let mut rd = data;
            if rmp::decode::read_map_len(&mut rd).ok()? != 1 {
                return None;
            }
            rd
        }
        _ => return None,
    };
    let (name, _) = rmp::decode::read_str_from_slice(rest).ok()?;
    Some(name.chars().take(64).collect())
}

const AUDIO_CHUNK_KEY: &[u8] = b"AudioChunk";
const AUDIO_CHUNK_WITH_VOWEL_KEY: &[u8] = b"AudioChunkWithVowel";

/// Exact length of `AudioChunk{data}` (vowel `None`) or
/// `AudioChunkWithVowel{data, vowel}` as rmp-serde encodes it.
pub fn audio_chunk_len(data: &[u8], vowel: Option<u8>) -> Result<usize> {
    check_len("data", data.len())?;
    let n = data.len();
    let key = if vowel.is_some() {
        AUDIO_CHUNK_WITH_VOWEL_KEY
    } else {
        AUDIO_CHUNK_KEY
    };
    let array_header = match n {
        0..=15 => 1,
        16..=0xffff => 3,
        _ => 5,
    };
    // Bytes >= 0x80 take two bytes (`cc XX`). Top bits summed in u8 lanes
    // over runs of 255 bytes (cannot overflow) vectorise 16-32 bytes a step.
    let high: usize = data
        .chunks(255)
        .map(|c| usize::from(c.iter().fold(0u8, |acc, &b| acc + (b >> 7))))
        .sum();
    let vowel_len = match vowel {
        None => 0,
        Some(v) if v < 0x80 => 1,
        Some(_) => 2,
    };
    // 1-entry map + fixstr key + fields fixarray + data array + vowel.
    Ok(1 + 1 + key.len() + 1 + array_header + n + high + vowel_len)
}

/// Writes `AudioChunk{data}` / `AudioChunkWithVowel{data, vowel}` into `out`,
/// whose length must be [`audio_chunk_len`]; the bytes equal
/// `encode_event(&ServerEvent::AudioChunk..)`.
pub fn encode_audio_chunk_into(data: &[u8], vowel: Option<u8>, out: &mut [u8]) -> Result<()> {
    let expected = audio_chunk_len(data, vowel)?;
    if out.len() != expected {
        return Err(invalid!(
            "output buffer is {} bytes, the event needs {expected}",
            out.len()
        ));
    }
    let key = if vowel.is_some() {
        AUDIO_CHUNK_WITH_VOWEL_KEY
    } else {
        AUDIO_CHUNK_KEY
    };
    let mut i = 0;
    out[i] = 0x81; // map of 1 entry
    out[i + 1] = 0xa0 | key.len() as u8; // fixstr (both keys are < 32 bytes)
    i += 2;
    out[i..i + key.len()].copy_from_slice(key);
    i += key.len();
    out[i] = if vowel.is_some() { 0x92 } else { 0x91 }; // the positional fields
    i += 1;
    let n = data.len();
    match n {
        0..=15 => {
            out[i] = 0x90 | n as u8;
            i += 1;
        }
        16..=0xffff => {
            out[i] = 0xdc;
            out[i + 1..i + 3].copy_from_slice(&(n as u16).to_be_bytes());
            i += 3;
        }
        _ => {
            out[i] = 0xdd;
            out[i + 1..i + 5].copy_from_slice(&(n as u32).to_be_bytes());
            i += 5;
        }
    }
    let tail = match vowel {
        None => 0,
        Some(v) if v < 0x80 => 1,
        Some(_) => 2,
    };
    let body_end = out.len() - tail;
    write_u8_array_body(data, &mut out[i..body_end]);
    match vowel {
        None => {}
        Some(v) if v < 0x80 => out[body_end] = v,
        Some(v) => {
            out[body_end] = 0xcc;
            out[body_end + 1] = v;
        }
    }
    Ok(())
}

/// The array elements: each byte as the smallest MessagePack uint (positive
/// fixint below 0x80, `cc XX` otherwise). `out` is exactly the encoded size.
fn write_u8_array_body(data: &[u8], out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        // SAFETY: the CPU supports SSSE3 (checked just above).
        let (k, i) = unsafe { simd::write_blocks_ssse3(data, out) };
        return write_u8_array_scalar(&data[k..], &mut out[i..]);
    }
    write_u8_array_scalar(data, out)
}

fn write_u8_array_scalar(data: &[u8], out: &mut [u8]) {
    // Blocks of 8 input bytes while at least 16 output bytes remain (a block
    // writes at most 16). An all-ASCII block (silence, quiet PCM high bytes)
    // is copied as is; otherwise each byte is written branch-free as two
    // bytes (marker-or-value, value) and the cursor advances by one or two,
    // so random audio bytes cause no mispredictions.
    let mut i = 0;
    let mut k = 0;
    while k + 8 <= data.len() && out.len() - i >= 16 {
        let block: &[u8; 8] = data[k..k + 8].try_into().expect("8 bytes");
        let dst: &mut [u8; 16] = (&mut out[i..i + 16]).try_into().expect("16 bytes");
        if u64::from_ne_bytes(*block) & 0x8080_8080_8080_8080 == 0 {
            dst[..8].copy_from_slice(block);
            i += 8;
        } else {
            let mut j = 0;
            for &b in block {
                let wide = usize::from(b >> 7);
                let pair = if wide == 1 { [0xcc, b] } else { [b, b] };
                // j <= 14 here: at most 7 earlier bytes, 2 output bytes each.
                dst[j..j + 2].copy_from_slice(&pair);
                j += 1 + wide;
            }
            i += j;
        }
        k += 8;
    }
    for &b in &data[k..] {
        if b < 0x80 {
            out[i] = b;
            i += 1;
        } else {
            out[i] = 0xcc;
            out[i + 1] = b;
            i += 2;
        }
    }
    debug_assert_eq!(i, out.len());
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! SSSE3 expansion of 8 bytes per step: the block goes in the low half of
    //! a register whose high half is all 0xcc; the block's top-bit mask picks
    //! a shuffle that lays out `b` or `cc b` per byte; one 16-byte store, and
    //! the cursor advances by 8 + (number of bytes >= 0x80). About 10
    //! instructions per 8 bytes instead of ~8 per byte.
    use std::arch::x86_64::*;

    /// SHUFFLE[mask]: source lane per output byte (lane 8 holds 0xcc; 0x80
    /// writes zero, past the encoded bytes, overwritten by the next step).
    static SHUFFLE: [[u8; 16]; 256] = build_table();

    const fn build_table() -> [[u8; 16]; 256] {
        let mut table = [[0x80u8; 16]; 256];
        let mut mask = 0;
        while mask < 256 {
            let mut j = 0;
            let mut k = 0;
            while k < 8 {
                if mask & (1 << k) != 0 {
                    table[mask][j] = 8;
                    j += 1;
                }
                table[mask][j] = k as u8;
                j += 1;
                k += 1;
            }
            mask += 1;
        }
        table
    }

    /// Encodes whole 8-byte blocks while 16 output bytes remain; returns how
    /// many input bytes were consumed and output bytes written.
    ///
    /// # Safety
    /// The CPU must support SSSE3. `out` must be at least the encoded size of
    /// `data` (then every store below stays inside `out`).
    #[target_feature(enable = "ssse3")]
    pub(super) unsafe fn write_blocks_ssse3(data: &[u8], out: &mut [u8]) -> (usize, usize) {
        let markers = _mm_set_epi64x(0xcccc_cccc_cccc_cccc_u64 as i64, 0);
        let (mut k, mut i) = (0usize, 0usize);
        while k + 8 <= data.len() && out.len() - i >= 16 {
            // SAFETY: k + 8 <= data.len() and i + 16 <= out.len() (loop
            // condition); unaligned loads/stores are used.
            unsafe {
                let block = _mm_loadl_epi64(data.as_ptr().add(k) as *const __m128i);
                let mask = (_mm_movemask_epi8(block) & 0xff) as usize;
                let src = _mm_or_si128(block, markers);
                let shuffle = _mm_loadu_si128(SHUFFLE[mask].as_ptr() as *const __m128i);
                _mm_storeu_si128(
                    out.as_mut_ptr().add(i) as *mut __m128i,
                    _mm_shuffle_epi8(src, shuffle),
                );
                i += 8 + mask.count_ones() as usize;
            }
            k += 8;
        }
        (k, i)
    }
}

/// [`encode_audio_chunk_into`] into a new vector.
pub fn encode_audio_chunk(data: &[u8], vowel: Option<u8>) -> Result<Vec<u8>> {
    let mut out = vec![0u8; audio_chunk_len(data, vowel)?];
    encode_audio_chunk_into(data, vowel, &mut out)?;
    Ok(out)
}

/// Device → server JSON text command (docs/protocol.md#client-commands), internally tagged with
/// `event`, parsed with serde_json as the reference does (unknown extra keys
/// are ignored, as serde does by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event")]
pub enum ClientCommand {
    StartChat,
    StartRecord,
    Submit,
    Text { input: String },
    Select { index: usize },
}

/// Parses one JSON client command.
pub fn parse_client_command(text: &str) -> Result<ClientCommand> {
    serde_json::from_str(text).map_err(|e| invalid!("invalid client command: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    fn spec_vectors() -> Vec<(ServerEvent, &'static str)> {
        use ServerEvent::*;
        vec![
            (HelloStart, "aa 48 65 6c 6c 6f 53 74 61 72 74"),
            (HelloEnd, "a8 48 65 6c 6c 6f 45 6e 64"),
            (EndAudio, "a8 45 6e 64 41 75 64 69 6f"),
            (EndResponse, "ab 45 6e 64 52 65 73 70 6f 6e 73 65"),
            (EndVad, "a6 45 6e 64 56 61 64"),
            (ASR { text: "hi".into() }, "81 a3 41 53 52 91 a2 68 69"),
            (ASR { text: "".into() }, "81 a3 41 53 52 91 a0"),
            (
                Action {
                    action: "ByeBye".into(),
                },
                "81 a6 41 63 74 69 6f 6e 91 a6 42 79 65 42 79 65",
            ),
            (
                StartAudio {
                    text: "Hello.".into(),
                },
                "81 aa 53 74 61 72 74 41 75 64 69 6f 91 a6 48 65 6c 6c 6f 2e",
            ),
            (
                AudioChunk {
                    data: vec![1, 2, 3],
                },
                "81 aa 41 75 64 69 6f 43 68 75 6e 6b 91 93 01 02 03",
            ),
            (
                AudioChunkWithVowel {
                    data: vec![200],
                    vowel: 1,
                },
                "81 b3 41 75 64 69 6f 43 68 75 6e 6b 57 69 74 68 56 6f 77 65 6c 92 91 cc c8 01",
            ),
            (
                HelloChunk { data: vec![0, 255] },
                "81 aa 48 65 6c 6c 6f 43 68 75 6e 6b 91 92 00 cc ff",
            ),
            (
                Choices {
                    message: "m".into(),
                    items: vec!["a".into(), "b".into()],
                },
                "81 a7 43 68 6f 69 63 65 73 92 a1 6d 92 a1 61 a1 62",
            ),
            (
                DisplayText { text: "ok".into() },
                "81 ab 44 69 73 70 6c 61 79 54 65 78 74 91 a2 6f 6b",
            ),
        ]
    }

    #[test]
    fn spec_byte_vectors_encode_and_decode() {
        for (event, bytes) in spec_vectors() {
            let expected = hex(bytes);
            assert_eq!(encode_event(&event).unwrap(), expected, "{event:?}");
            assert_eq!(decode_event(&expected).unwrap(), event);
        }
    }

    #[test]
    fn spec_long_headers() {
        let hello = encode_event(&ServerEvent::HelloChunk {
            data: vec![0; 2048],
        })
        .unwrap();
        assert_eq!(
            &hello[..16],
            &hex("81 aa 48 65 6c 6c 6f 43 68 75 6e 6b 91 dc 08 00")[..]
        );
        let asr = encode_event(&ServerEvent::ASR {
            text: "x".repeat(40),
        })
        .unwrap();
        assert_eq!(&asr[..7], &hex("81 a3 41 53 52 91 d9")[..]);
        assert_eq!(asr[7], 0x28);
    }

    #[test]
    fn variant_tables_agree_with_the_enum() {
        for name in VARIANTS {
            let fields = variant_fields(name).unwrap();
            assert_eq!(
                ServerEvent::unit(name).is_some(),
                fields.is_empty(),
                "{name}"
            );
        }
        assert_eq!(variant_fields("Nope"), None);
    }

    #[test]
    fn decodes_tolerant_forms() {
        // {"ASR": {"text": "hi"}} — named fields.
        let named = hex("81 a3 41 53 52 81 a4 74 65 78 74 a2 68 69");
        assert_eq!(
            decode_event(&named).unwrap(),
            ServerEvent::ASR { text: "hi".into() }
        );
        // {"AudioChunk": [bin8 01 02 03]}
        let bin = hex("81 aa 41 75 64 69 6f 43 68 75 6e 6b 91 c4 03 01 02 03");
        assert_eq!(
            decode_event(&bin).unwrap(),
            ServerEvent::AudioChunk {
                data: vec![1, 2, 3]
            }
        );
    }

    #[test]
    fn decode_errors_are_precise() {
        let err = |b: &[u8]| decode_event(b).unwrap_err().to_string();
        assert!(err(&[]).contains("empty input"));
        let mut trailing = hex("a6 45 6e 64 56 61 64");
        trailing.push(0);
        assert!(
            err(&trailing).contains("1 trailing byte"),
            "{}",
            err(&trailing)
        );
        let full = hex("81 a3 41 53 52 91 a2 68 69");
        for cut in 1..full.len() {
            assert!(
                err(&full[..cut]).contains("truncated"),
                "{cut}: {}",
                err(&full[..cut])
            );
        }
        assert!(err(&hex("a3 46 6f 6f")).contains("unknown variant `Foo`"));
        // ASR with two positional fields.
        let extra = hex("81 a3 41 53 52 92 a2 68 69 a0");
        assert!(err(&extra).contains("more elements"), "{}", err(&extra));
        // A 2-entry map at the top.
        let two = hex("82 a3 41 53 52 91 a0 a3 41 53 52 91 a0");
        assert!(err(&two).contains("exactly 1 entry"), "{}", err(&two));
        // vowel 300 (u16) does not fit u8.
        let v =
            hex("81 b3 41 75 64 69 6f 43 68 75 6e 6b 57 69 74 68 56 6f 77 65 6c 92 90 cd 01 2c");
        assert!(err(&v).contains("300"), "{}", err(&v));
    }

    #[test]
    fn client_commands() {
        let p = |s: &str| parse_client_command(s);
        assert_eq!(
            p(r#"{"event":"StartChat"}"#).unwrap(),
            ClientCommand::StartChat
        );
        assert_eq!(p(r#"{"event":"Submit"}"#).unwrap(), ClientCommand::Submit);
        assert_eq!(
            p(r#"{"event":"StartRecord"}"#).unwrap(),
            ClientCommand::StartRecord
        );
        assert_eq!(
            p(r#"{"event":"Text","input":"hé"}"#).unwrap(),
            ClientCommand::Text {
                input: "hé".into()
            }
        );
        assert_eq!(
            p(r#"{"index":3,"event":"Select"}"#).unwrap(),
            ClientCommand::Select { index: 3 }
        );
        for bad in [
            "",
            "{",
            r#"{"event":"Nope"}"#,
            r#"{"event":"Text"}"#,
            r#"{"event":"Select","index":-1}"#,
            r#"{"event":"Select","index":1.5}"#,
            r#"{"event":"Text","input":1}"#,
            r#"{"input":"x"}"#,
            "[]",
        ] {
            let e = p(bad).unwrap_err().to_string();
            assert!(e.starts_with("invalid client command: "), "{bad}: {e}");
        }
    }

    fn reference_audio(data: &[u8], vowel: Option<u8>) -> Vec<u8> {
        let event = match vowel {
            None => ServerEvent::AudioChunk {
                data: data.to_vec(),
            },
            Some(vowel) => ServerEvent::AudioChunkWithVowel {
                data: data.to_vec(),
                vowel,
            },
        };
        rmp_serde::to_vec(&event).unwrap()
    }

    #[test]
    fn audio_fast_path_matches_rmp_serde_at_boundaries() {
        for n in [0usize, 1, 15, 16, 17, 255, 256, 65535, 65536, 70000] {
            let data: Vec<u8> = (0..n).map(|i| (i * 131 + 7) as u8).collect();
            for vowel in [None, Some(0), Some(5), Some(127), Some(128), Some(255)] {
                assert_eq!(
                    encode_audio_chunk(&data, vowel).unwrap(),
                    reference_audio(&data, vowel)
                );
            }
        }
    }

    #[test]
    fn audio_fast_path_on_all_top_bit_patterns() {
        // Every 8-byte top-bit mask (one SIMD shuffle each), at every offset.
        for mask in 0u32..256 {
            let data: Vec<u8> = (0..24)
                .map(|k| {
                    if mask & (1 << (k % 8)) != 0 {
                        0x80 | k as u8
                    } else {
                        k as u8
                    }
                })
                .collect();
            for start in 0..8 {
                let d = &data[start..];
                assert_eq!(
                    encode_audio_chunk(d, Some(3)).unwrap(),
                    reference_audio(d, Some(3))
                );
            }
        }
    }

    #[test]
    fn audio_fast_path_rejects_wrong_buffer() {
        let mut out = vec![0u8; 3];
        assert!(encode_audio_chunk_into(&[1], None, &mut out).is_err());
    }

    proptest! {
        #[test]
        fn audio_fast_path_matches_rmp_serde(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            vowel in proptest::option::of(any::<u8>()),
        ) {
            prop_assert_eq!(encode_audio_chunk(&data, vowel).unwrap(), reference_audio(&data, vowel));
        }

        #[test]
        fn scalar_body_matches_rmp_serde(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            // The portable loop (the SIMD path leaves it only the tails on x86).
            let reference = reference_audio(&data, None);
            let body_len = data.len() + data.iter().filter(|&&b| b >= 0x80).count();
            let header = reference.len() - body_len;
            let mut body = vec![0u8; body_len];
            write_u8_array_scalar(&data, &mut body);
            prop_assert_eq!(&body[..], &reference[header..]);
        }

        #[test]
        fn round_trip(text in ".{0,300}", data in proptest::collection::vec(any::<u8>(), 0..100),
                      items in proptest::collection::vec(".{0,8}", 0..20), vowel in any::<u8>()) {
            for event in [
                ServerEvent::ASR { text: text.clone() },
                ServerEvent::Choices { message: text.clone(), items: items.clone() },
                ServerEvent::AudioChunkWithVowel { data: data.clone(), vowel },
                ServerEvent::HelloChunk { data: data.clone() },
            ] {
                let bytes = encode_event(&event).unwrap();
                prop_assert_eq!(decode_event(&bytes).unwrap(), event);
            }
        }
    }
}
