//! WAV (RIFF/WAVE) reading and writing (pure Rust; bindings in py/wav.rs).
//!
//! Why hand-written rather than `hound`: hound (the usual crate) has no 64-bit
//! float, requires `fmt ` before `data`, trusts the data size (so EchoKit's
//! never-patched streaming headers with size 0xFFFFFFFF end in an I/O error
//! instead of "read to end"), reports problems as fixed strings without the
//! offending values, and decodes one sample at a time through `io::Read`. A WAV
//! header is a few dozen bytes; parsing it by hand over the in-memory buffer
//! gives precise errors and lets the sample loops below run over slices
//! (vectorised, straight into the caller's output array).
//!
//! # Reading rules
//! * Formats: PCM 8-bit (unsigned, centred at 128), 16/24/32-bit signed;
//!   IEEE float 32/64-bit; `WAVE_FORMAT_EXTENSIBLE` whose sub-format GUID is PCM
//!   or IEEE float (samples are MSB-aligned in their container, so they are
//!   scaled by the container width; `wValidBitsPerSample` only has to fit).
//!   Integer samples map to float as `value / 2^(bits-1)` (8-bit: `(b-128)/128`).
//! * Chunks: walked in order; unknown ones (`LIST`, `fact`, `cue `, ...) are
//!   skipped, odd sizes are followed by a pad byte, `data` may come before or
//!   after `fmt `. The walk stops once both are found (anything after is ignored).
//!   The RIFF size is not trusted (chunk sizes are checked instead).
//! * Data size: a `data` size larger than what remains is an error naming both
//!   sizes, except for the streaming sentinels `0xFFFFFFFF` / `0x7FFFFFFF`
//!   (written by EchoKit record mode and streaming writers that never patch the
//!   header), which mean "read to the end of the buffer".
//! * Partial frames: a *declared* data size that is not a whole number of frames
//!   (`block_align`) is a lying header -> error. Reading to the end under a
//!   streaming sentinel drops a truncated trailing partial frame (a streaming
//!   writer may be cut mid-frame).
//! * `byte_rate` is redundant and not checked; `block_align` must equal
//!   `channels * bits / 8`.
//! * Float samples must be finite: a NaN or an infinity (a 64-bit value beyond
//!   the f32 range included) is an error naming the first one, so no consumer
//!   (Whisper, the VAD, the resampler) is ever fed one.
//!
//! # Writing
//! 16-bit PCM: the canonical 44-byte header (`fmt ` size 16, format 1), as the
//! EchoKit server sends to ASR (docs/protocol.md#transcription-requests); samples are converted
//! with [`crate::pcm::f32_to_i16`] (x*32768 rounded half to even, saturated, NaN -> 0).
//! 32-bit: IEEE float (format 3) with an 18-byte `fmt ` (cbSize 0) and a `fact`
//! chunk holding the frame count, as the RIFF spec asks for non-PCM formats
//! (58-byte header); samples are stored unchanged.

use crate::error::Result;
use crate::invalid;
use crate::pcm;

/// WAVE format tags this reader knows about (names for error messages).
pub const WAVE_FORMAT_PCM: u16 = 0x0001;
pub const WAVE_FORMAT_IEEE_FLOAT: u16 = 0x0003;
pub const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// Bytes 2..16 of every `KSDATAFORMAT_SUBTYPE_*` GUID whose first two bytes
/// are a plain format tag (`XXXXXXXX-0000-0010-8000-00AA00389B71`).
const KSDATAFORMAT_GUID_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];

/// Data sizes that mean "unknown length: read to end".
pub const STREAMING_SIZES: [u32; 2] = [0xFFFF_FFFF, 0x7FFF_FFFF];

/// Sample encoding of the data chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    U8,
    I16,
    I24,
    I32,
    F32,
    F64,
}

impl SampleFormat {
    /// The format tag that decides the encoding ([`WAVE_FORMAT_PCM`] or
    /// [`WAVE_FORMAT_IEEE_FLOAT`]; for `WAVE_FORMAT_EXTENSIBLE`, its sub-format's).
    pub fn tag(self) -> u16 {
        match self {
            SampleFormat::F32 | SampleFormat::F64 => WAVE_FORMAT_IEEE_FLOAT,
            _ => WAVE_FORMAT_PCM,
        }
    }

    /// Bits per sample (the container's).
    pub fn bits(self) -> u16 {
        self.width() as u16 * 8
    }

    /// Bytes per sample.
    pub fn width(self) -> usize {
        match self {
            SampleFormat::U8 => 1,
            SampleFormat::I16 => 2,
            SampleFormat::I24 => 3,
            SampleFormat::I32 | SampleFormat::F32 => 4,
            SampleFormat::F64 => 8,
        }
    }
}

/// What the header says, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavInfo {
    pub format: SampleFormat,
    pub channels: usize,
    pub sample_rate: u32,
    /// Byte offset of the first sample in the buffer.
    pub data_offset: usize,
    /// Number of whole frames to decode.
    pub frames: usize,
    /// True when the data size was a streaming sentinel and we read to the end.
    pub streaming: bool,
}

impl WavInfo {
    /// Number of interleaved samples (`frames * channels`).
    pub fn samples(&self) -> usize {
        self.frames * self.channels
    }
}

fn format_name(tag: u16) -> &'static str {
    match tag {
        0x0001 => "PCM",
        0x0002 => "MS ADPCM",
        0x0003 => "IEEE float",
        0x0006 => "A-law",
        0x0007 => "mu-law",
        0x0011 => "IMA ADPCM",
        0x0031 => "GSM 6.10",
        0x0050 => "MPEG",
        0x0055 => "MPEG layer 3",
        0xFFFE => "WAVE_FORMAT_EXTENSIBLE",
        _ => "unknown",
    }
}

fn fourcc(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                (c as char).to_string()
            } else {
                format!("\\x{c:02x}")
            }
        })
        .collect()
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

struct Fmt {
    format: SampleFormat,
    channels: usize,
    sample_rate: u32,
    block_align: usize,
}

fn parse_fmt(body: &[u8]) -> Result<Fmt> {
    if body.len() < 16 {
        return Err(invalid!(
            "fmt chunk is {} bytes; at least 16 are needed",
            body.len()
        ));
    }
    let tag = le16(body, 0);
    let channels = le16(body, 2);
    let sample_rate = le32(body, 4);
    let block_align = le16(body, 12);
    let bits = le16(body, 14);
    // The tag that decides the sample encoding (the sub-format for EXTENSIBLE).
    let (kind, kind_desc) = match tag {
        WAVE_FORMAT_PCM | WAVE_FORMAT_IEEE_FLOAT => (tag, format_name(tag).to_string()),
        WAVE_FORMAT_EXTENSIBLE => {
            if body.len() < 40 {
                return Err(invalid!(
                    "WAVE_FORMAT_EXTENSIBLE fmt chunk is {} bytes; at least 40 are needed",
                    body.len()
                ));
            }
            let cb_size = le16(body, 16);
            if cb_size < 22 {
                return Err(invalid!(
                    "WAVE_FORMAT_EXTENSIBLE cbSize is {cb_size}; at least 22 is needed"
                ));
            }
            let valid_bits = le16(body, 18);
            let guid = &body[24..40];
            let sub = le16(guid, 0);
            if guid[2..] != KSDATAFORMAT_GUID_TAIL
                || !(sub == WAVE_FORMAT_PCM || sub == WAVE_FORMAT_IEEE_FLOAT)
            {
                let hex: String = guid.iter().map(|b| format!("{b:02x}")).collect();
                let what = if guid[2..] == KSDATAFORMAT_GUID_TAIL {
                    format!(" (format 0x{sub:04X}, {})", format_name(sub))
                } else {
                    String::new()
                };
                return Err(invalid!(
                    "unsupported WAVE_FORMAT_EXTENSIBLE sub-format GUID {hex}{what}; \
                     only PCM and IEEE float are read"
                ));
            }
            if valid_bits > bits {
                return Err(invalid!(
                    "WAVE_FORMAT_EXTENSIBLE valid bits per sample ({valid_bits}) exceed the \
                     container's {bits} bits"
                ));
            }
            (sub, format!("WAVE_FORMAT_EXTENSIBLE {}", format_name(sub)))
        }
        _ => {
            return Err(invalid!(
                "unsupported WAV format tag 0x{tag:04X} ({}); only PCM (0x0001), IEEE float \
                 (0x0003) and WAVE_FORMAT_EXTENSIBLE (0xFFFE) are read",
                format_name(tag)
            ))
        }
    };
    if channels == 0 {
        return Err(invalid!("fmt chunk says 0 channels"));
    }
    if sample_rate == 0 {
        return Err(invalid!("fmt chunk says sample rate 0"));
    }
    let format = match (kind, bits) {
        (WAVE_FORMAT_PCM, 8) => SampleFormat::U8,
        (WAVE_FORMAT_PCM, 16) => SampleFormat::I16,
        (WAVE_FORMAT_PCM, 24) => SampleFormat::I24,
        (WAVE_FORMAT_PCM, 32) => SampleFormat::I32,
        (WAVE_FORMAT_IEEE_FLOAT, 32) => SampleFormat::F32,
        (WAVE_FORMAT_IEEE_FLOAT, 64) => SampleFormat::F64,
        (WAVE_FORMAT_PCM, _) => {
            return Err(invalid!(
                "{kind_desc} with {bits} bits per sample is not supported (8, 16, 24 or 32)"
            ))
        }
        _ => {
            return Err(invalid!(
                "{kind_desc} with {bits} bits per sample is not supported (32 or 64)"
            ))
        }
    };
    let want_align = channels as usize * format.width();
    if block_align as usize != want_align {
        return Err(invalid!(
            "fmt block_align is {block_align} but {channels} channel(s) of {bits} bits need \
             {want_align}"
        ));
    }
    Ok(Fmt {
        format,
        channels: channels as usize,
        sample_rate,
        block_align: want_align,
    })
}

/// Whether `buf` starts like a WAV file (`RIFF` .. `WAVE`); says nothing of the rest.
pub fn is_wav(buf: &[u8]) -> bool {
    buf.len() >= 12 && &buf[0..4] == b"RIFF" && &buf[8..12] == b"WAVE"
}

/// The canonical 44-byte header of 16-bit PCM (`fmt ` size 16, format 1) with the given
/// RIFF and `data` size fields (a streaming writer puts a sentinel in them, see
/// [`STREAMING_SIZES`]).
pub fn pcm16_header(channels: u16, sample_rate: u32, riff_size: u32, data_size: u32) -> [u8; 44] {
    let block_align = channels.wrapping_mul(2);
    let mut h = [0u8; 44];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&riff_size.to_le_bytes());
    h[8..16].copy_from_slice(b"WAVEfmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&WAVE_FORMAT_PCM.to_le_bytes());
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(
        &sample_rate
            .wrapping_mul(u32::from(block_align))
            .to_le_bytes(),
    );
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_size.to_le_bytes());
    h
}

/// Parses and validates the header of an in-memory WAV file.
pub fn parse_header(buf: &[u8]) -> Result<WavInfo> {
    if buf.len() < 12 {
        return Err(invalid!(
            "not a WAV file: {} bytes is too short for the 12-byte RIFF header",
            buf.len()
        ));
    }
    match &buf[0..4] {
        b"RIFF" => {}
        b"RIFX" => return Err(invalid!("big-endian RIFX WAV files are not supported")),
        b"RF64" => return Err(invalid!("RF64 WAV files are not supported")),
        other => {
            return Err(invalid!(
                "not a WAV file: expected 'RIFF' at offset 0, found '{}'",
                fourcc(other)
            ))
        }
    }
    if &buf[8..12] != b"WAVE" {
        return Err(invalid!(
            "not a WAV file: RIFF form type is '{}', expected 'WAVE'",
            fourcc(&buf[8..12])
        ));
    }

    let mut fmt: Option<Fmt> = None;
    // (offset of first sample, declared size, whether it is a streaming sentinel)
    let mut data: Option<(usize, u32)> = None;
    let mut pos = 12usize;
    while fmt.is_none() || data.is_none() {
        let remaining = buf.len() - pos;
        if remaining < 8 {
            break; // no room for another chunk header (trailing pad or junk)
        }
        let id = &buf[pos..pos + 4];
        let size = le32(buf, pos + 4);
        let body = pos + 8;
        let avail = buf.len() - body;
        if id == b"data" {
            if data.is_none() {
                data = Some((body, size));
            }
            if size as usize > avail {
                // Only a streaming sentinel can legitimately overrun; it takes
                // the rest of the buffer, so nothing can follow.
                break;
            }
        } else {
            if size as usize > avail {
                return Err(invalid!(
                    "'{}' chunk at offset {pos} says {size} bytes but only {avail} remain",
                    fourcc(id)
                ));
            }
            if id == b"fmt " && fmt.is_none() {
                fmt = Some(parse_fmt(&buf[body..body + size as usize])?);
            }
        }
        // Next chunk: body + size + pad byte for odd sizes (saturating: the
        // sizes were checked against the buffer above).
        pos = body
            .saturating_add(size as usize)
            .saturating_add(size as usize & 1)
            .min(buf.len());
    }

    let fmt = fmt.ok_or_else(|| invalid!("no fmt chunk found"))?;
    let (data_offset, size) = data.ok_or_else(|| invalid!("no data chunk found"))?;
    let avail = buf.len() - data_offset;
    let (bytes, streaming) = if size as usize <= avail {
        if !(size as usize).is_multiple_of(fmt.block_align) {
            return Err(invalid!(
                "data chunk size {size} is not a multiple of block_align {} ({} channel(s) of \
                 {} bytes)",
                fmt.block_align,
                fmt.channels,
                fmt.format.width()
            ));
        }
        (size as usize, false)
    } else if STREAMING_SIZES.contains(&size) {
        // Unknown length: everything that is there, whole frames only.
        (avail - avail % fmt.block_align, true)
    } else {
        return Err(invalid!(
            "data chunk says {size} bytes but only {avail} remain"
        ));
    };
    Ok(WavInfo {
        format: fmt.format,
        channels: fmt.channels,
        sample_rate: fmt.sample_rate,
        data_offset,
        frames: bytes / fmt.block_align,
        streaming,
    })
}

/// Decodes the samples described by `info` (from [`parse_header`] on the same
/// `buf`) into `dst`, interleaved, `info.samples()` long.
pub fn decode_into(buf: &[u8], info: &WavInfo, dst: &mut [f32]) -> Result<()> {
    let n = info.samples();
    let width = info.format.width();
    let end = n
        .checked_mul(width)
        .and_then(|b| b.checked_add(info.data_offset))
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| invalid!("WAV info does not match the buffer"))?;
    if dst.len() != n {
        return Err(invalid!(
            "read_wav: output buffer holds {} samples but {n} are needed",
            dst.len()
        ));
    }
    let src = &buf[info.data_offset..end];
    match info.format {
        SampleFormat::U8 => {
            for (o, &b) in dst.iter_mut().zip(src) {
                *o = (f32::from(b) - 128.0) * (1.0 / 128.0);
            }
        }
        SampleFormat::I16 => pcm::pcm16le_bytes_to_f32(src, dst)?,
        SampleFormat::I24 => {
            for (o, b) in dst.iter_mut().zip(src.chunks_exact(3)) {
                // MSB-align into an i32 so the sign comes for free; exact in f32.
                let v = i32::from_le_bytes([0, b[0], b[1], b[2]]);
                *o = v as f32 * (1.0 / 2_147_483_648.0);
            }
        }
        SampleFormat::I32 => {
            for (o, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                *o = v as f32 * (1.0 / 2_147_483_648.0);
            }
        }
        SampleFormat::F32 => {
            for (o, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        SampleFormat::F64 => {
            for (o, b) in dst.iter_mut().zip(src.chunks_exact(8)) {
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                *o = f64::from_le_bytes(a) as f32;
            }
        }
    }
    match info.format {
        SampleFormat::F32 | SampleFormat::F64 => check_finite(dst, info.channels),
        _ => Ok(()), // integer samples always map into [-1, 1)
    }
}

/// An error naming the first sample that is NaN or infinite.
fn check_finite(samples: &[f32], channels: usize) -> Result<()> {
    // The branch-free fold vectorises; the position is only looked for on failure.
    if samples.iter().fold(true, |ok, v| ok & v.is_finite()) {
        return Ok(());
    }
    let i = samples.iter().position(|v| !v.is_finite()).unwrap_or(0);
    let what = if samples[i].is_nan() {
        "NaN"
    } else {
        "infinite"
    };
    Err(invalid!(
        "sample {} (frame {}, channel {}) is {what}: float WAV samples must be finite",
        i,
        i / channels.max(1),
        i % channels.max(1)
    ))
}

/// Reads a whole WAV file: interleaved float samples and the header info.
pub fn read_wav(buf: &[u8]) -> Result<(Vec<f32>, WavInfo)> {
    let info = parse_header(buf)?;
    let mut out = vec![0.0; info.samples()];
    decode_into(buf, &info, &mut out)?;
    Ok((out, info))
}

/// Header length written by [`write_wav_into`] for `bits` (16 or 32).
pub fn header_len(bits: u32) -> Result<usize> {
    match bits {
        16 => Ok(44),
        32 => Ok(58),
        _ => Err(invalid!(
            "bits must be 16 (PCM) or 32 (IEEE float), got {bits}"
        )),
    }
}

/// Total size of the file [`write_wav_into`] writes, after checking the
/// arguments and the 4 GiB RIFF limit.
pub fn encoded_len(samples: usize, channels: usize, sample_rate: u32, bits: u32) -> Result<usize> {
    let header = header_len(bits)?;
    if channels == 0 || channels > u16::MAX as usize {
        return Err(invalid!("channels must be 1..=65535, got {channels}"));
    }
    if sample_rate == 0 {
        return Err(invalid!("sample_rate must be > 0, got 0"));
    }
    if !samples.is_multiple_of(channels) {
        return Err(invalid!(
            "{samples} samples are not a whole number of {channels}-channel frames"
        ));
    }
    let width = bits as usize / 8;
    if (sample_rate as u64) * (channels * width) as u64 > u32::MAX as u64 {
        return Err(invalid!(
            "byte rate of {sample_rate} Hz x {channels} channel(s) x {width} bytes overflows \
             the WAV header's 32-bit field"
        ));
    }
    let data = samples as u64 * width as u64;
    if data + header as u64 - 8 > u32::MAX as u64 {
        return Err(invalid!(
            "{data} bytes of audio exceed the 4 GiB limit of a RIFF WAV file"
        ));
    }
    Ok(header + data as usize)
}

/// Writes a WAV file of interleaved `x` (`channels` per frame) into `dst`,
/// which must be exactly [`encoded_len`] bytes. `bits` 16 = PCM, 32 = IEEE float.
pub fn write_wav_into(
    x: &[f32],
    channels: usize,
    sample_rate: u32,
    bits: u32,
    dst: &mut [u8],
) -> Result<()> {
    let total = encoded_len(x.len(), channels, sample_rate, bits)?;
    if dst.len() != total {
        return Err(invalid!(
            "write_wav: output buffer holds {} bytes but {total} are needed",
            dst.len()
        ));
    }
    let header = header_len(bits)?;
    let width = bits as usize / 8;
    let block_align = (channels * width) as u16;
    let data_len = (x.len() * width) as u32;
    let (h, body) = dst.split_at_mut(header);
    if bits == 16 {
        h.copy_from_slice(&pcm16_header(
            channels as u16,
            sample_rate,
            (total - 8) as u32,
            data_len,
        ));
        return pcm::f32_to_pcm16le_bytes(x, body);
    }
    let mut w = 0usize;
    let mut put = |b: &[u8]| {
        h[w..w + b.len()].copy_from_slice(b);
        w += b.len();
    };
    put(b"RIFF");
    put(&((total - 8) as u32).to_le_bytes());
    put(b"WAVE");
    put(b"fmt ");
    put(&18u32.to_le_bytes());
    put(&WAVE_FORMAT_IEEE_FLOAT.to_le_bytes());
    put(&(channels as u16).to_le_bytes());
    put(&sample_rate.to_le_bytes());
    put(&(sample_rate * u32::from(block_align)).to_le_bytes());
    put(&block_align.to_le_bytes());
    put(&(bits as u16).to_le_bytes());
    put(&0u16.to_le_bytes()); // cbSize
    put(b"fact");
    put(&4u32.to_le_bytes());
    put(&((x.len() / channels) as u32).to_le_bytes());
    put(b"data");
    put(&data_len.to_le_bytes());
    {
        for (o, &s) in body.chunks_exact_mut(4).zip(x) {
            o.copy_from_slice(&s.to_le_bytes());
        }
        Ok(())
    }
}

/// Convenience: a new WAV file as a byte vector.
pub fn write_wav(x: &[f32], channels: usize, sample_rate: u32, bits: u32) -> Result<Vec<u8>> {
    let mut out = vec![0u8; encoded_len(x.len(), channels, sample_rate, bits)?];
    write_wav_into(x, channels, sample_rate, bits, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAV from raw parts: fmt body and a list of (id, body, declared size).
    fn riff(chunks: &[(&[u8; 4], Vec<u8>, Option<u32>)]) -> Vec<u8> {
        let mut out = b"RIFF\0\0\0\0WAVE".to_vec();
        for (id, body, size) in chunks {
            out.extend_from_slice(*id);
            out.extend_from_slice(&size.unwrap_or(body.len() as u32).to_le_bytes());
            out.extend_from_slice(body);
            if body.len() % 2 == 1 {
                out.push(0);
            }
        }
        let n = (out.len() - 8) as u32;
        out[4..8].copy_from_slice(&n.to_le_bytes());
        out
    }

    fn fmt(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let align = channels * bits / 8;
        let mut f = Vec::new();
        f.extend_from_slice(&tag.to_le_bytes());
        f.extend_from_slice(&channels.to_le_bytes());
        f.extend_from_slice(&rate.to_le_bytes());
        f.extend_from_slice(&(rate * align as u32).to_le_bytes());
        f.extend_from_slice(&align.to_le_bytes());
        f.extend_from_slice(&bits.to_le_bytes());
        f
    }

    fn err(buf: &[u8]) -> String {
        parse_header(buf).unwrap_err().to_string()
    }

    #[test]
    fn canonical_header_matches_spec() {
        let x = [0.0f32, 0.5, -1.0];
        let w = write_wav(&x, 1, 16000, 16).unwrap();
        assert_eq!(w.len(), 44 + 6);
        assert_eq!(&w[0..4], b"RIFF");
        assert_eq!(le32(&w, 4), 36 + 6);
        assert_eq!(&w[8..16], b"WAVEfmt ");
        assert_eq!(le32(&w, 16), 16);
        assert_eq!(le16(&w, 20), 1);
        assert_eq!(le16(&w, 22), 1);
        assert_eq!(le32(&w, 24), 16000);
        assert_eq!(le32(&w, 28), 32000);
        assert_eq!(le16(&w, 32), 2);
        assert_eq!(le16(&w, 34), 16);
        assert_eq!(&w[36..40], b"data");
        assert_eq!(le32(&w, 40), 6);
        assert_eq!(&w[44..], &[0, 0, 0, 0x40, 0, 0x80]);
    }

    #[test]
    fn round_trips() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 40.0).collect();
        let (y, info) = read_wav(&write_wav(&x, 2, 22050, 32).unwrap()).unwrap();
        assert_eq!(y, x);
        assert_eq!(
            (info.channels, info.sample_rate, info.frames),
            (2, 22050, 32)
        );
        let (y, _) = read_wav(&write_wav(&x, 4, 8000, 16).unwrap()).unwrap();
        for (a, b) in x.iter().zip(&y) {
            assert_eq!(*b, f32::from(pcm::f32_to_i16(*a)) / 32768.0);
        }
    }

    #[test]
    fn decodes_every_width() {
        let w = riff(&[
            (b"fmt ", fmt(1, 1, 8000, 8), None),
            (b"data", vec![0, 128, 255], None),
        ]);
        assert_eq!(read_wav(&w).unwrap().0, vec![-1.0, 0.0, 127.0 / 128.0]);
        let w = riff(&[
            (b"fmt ", fmt(1, 1, 8000, 24), None),
            (
                b"data",
                vec![0, 0, 0x80, 0xff, 0xff, 0x7f, 0x01, 0, 0],
                None,
            ),
        ]);
        assert_eq!(
            read_wav(&w).unwrap().0,
            vec![-1.0, 8_388_607.0 / 8_388_608.0, 1.0 / 8_388_608.0]
        );
        let w = riff(&[
            (b"fmt ", fmt(3, 1, 8000, 64), None),
            (b"data", 0.25f64.to_le_bytes().to_vec(), None),
        ]);
        assert_eq!(read_wav(&w).unwrap().0, vec![0.25]);
    }

    #[test]
    fn non_finite_float_samples_are_refused() {
        let f32s = |xs: &[f32]| xs.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let stereo = |data| riff(&[(b"fmt ", fmt(3, 2, 8000, 32), None), (b"data", data, None)]);
        let msg = |w: &[u8]| read_wav(w).unwrap_err().to_string();
        assert_eq!(
            msg(&stereo(f32s(&[0.0, 0.5, 0.25, f32::NAN]))),
            "sample 3 (frame 1, channel 1) is NaN: float WAV samples must be finite"
        );
        assert!(msg(&stereo(f32s(&[f32::NEG_INFINITY, 0.0])))
            .contains("sample 0 (frame 0, channel 0) is infinite"));
        // a finite f64 beyond the f32 range becomes an infinity
        let w = riff(&[
            (b"fmt ", fmt(3, 1, 8000, 64), None),
            (b"data", 1e300f64.to_le_bytes().to_vec(), None),
        ]);
        assert!(msg(&w).contains("is infinite"));
        assert_eq!(
            read_wav(&stereo(f32s(&[1.5, -2.0]))).unwrap().0,
            vec![1.5, -2.0]
        );
    }

    #[test]
    fn data_before_fmt_and_odd_chunks() {
        let w = riff(&[
            (b"LIST", vec![1, 2, 3], None),
            (b"data", vec![0, 0x40, 0, 0xc0], None),
            (b"junk", vec![9], None),
            (b"fmt ", fmt(1, 2, 44100, 16), None),
        ]);
        let (y, info) = read_wav(&w).unwrap();
        assert_eq!(y, vec![0.5, -0.5]);
        assert_eq!(info.channels, 2);
    }

    #[test]
    fn streaming_sentinel_reads_to_end_and_drops_partial_frame() {
        let mut w = riff(&[
            (b"fmt ", fmt(1, 1, 16000, 16), None),
            (b"data", vec![0, 0x40, 0, 0xc0, 7], Some(0xFFFF_FFFF)),
        ]);
        w.pop(); // riff() padded the odd body; a streaming file has no pad.
        w[4..8].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
        let (y, info) = read_wav(&w).unwrap();
        assert_eq!(y, vec![0.5, -0.5]);
        assert!(info.streaming);
    }

    #[test]
    fn malformed_headers() {
        assert!(err(b"RIFF").contains("too short"));
        assert!(err(b"RIFX\0\0\0\0WAVE").contains("RIFX"));
        assert!(err(b"OggS\0\0\0\0WAVE").contains("expected 'RIFF'"));
        assert!(err(b"RIFF\0\0\0\0AVI ").contains("'AVI '"));
        let data = (b"data", vec![0u8; 4], None);
        assert_eq!(
            err(&riff(std::slice::from_ref(&data))),
            "no fmt chunk found"
        );
        assert_eq!(
            err(&riff(&[(b"fmt ", fmt(1, 1, 8000, 16), None)])),
            "no data chunk found"
        );
        let short = fmt(1, 1, 8000, 16)[..14].to_vec();
        assert!(err(&riff(&[(b"fmt ", short, None), data.clone()])).contains("14 bytes"));
        let e = err(&riff(&[(b"fmt ", fmt(7, 1, 8000, 8), None), data.clone()]));
        assert!(e.contains("0x0007 (mu-law)"), "{e}");
        let e = err(&riff(&[(b"fmt ", fmt(1, 0, 8000, 16), None), data.clone()]));
        assert_eq!(e, "fmt chunk says 0 channels");
        let e = err(&riff(&[(b"fmt ", fmt(1, 1, 0, 16), None), data.clone()]));
        assert_eq!(e, "fmt chunk says sample rate 0");
        let e = err(&riff(&[(b"fmt ", fmt(1, 1, 8000, 12), None), data.clone()]));
        assert!(e.contains("12 bits"), "{e}");
        let e = err(&riff(&[(b"fmt ", fmt(3, 1, 8000, 16), None), data.clone()]));
        assert!(e.contains("IEEE float with 16 bits"), "{e}");
        let mut f = fmt(1, 2, 8000, 16);
        f[12] = 2;
        let e = err(&riff(&[(b"fmt ", f, None), data.clone()]));
        assert!(
            e.contains("block_align is 2") && e.contains("need 4"),
            "{e}"
        );
        let e = err(&riff(&[
            (b"fmt ", fmt(1, 1, 8000, 16), None),
            (b"data", vec![0u8; 10], Some(32000)),
        ]));
        assert_eq!(e, "data chunk says 32000 bytes but only 10 remain");
        let e = err(&riff(&[
            (b"fmt ", fmt(1, 2, 8000, 16), None),
            (b"data", vec![0u8; 6], None),
        ]));
        assert!(
            e.contains("size 6 is not a multiple of block_align 4"),
            "{e}"
        );
        let e = err(&riff(&[(b"LIST", vec![0u8; 4], Some(100)), data]));
        assert!(
            e.contains("'LIST' chunk at offset 12 says 100 bytes but only 16 remain"),
            "{e}"
        );
    }

    #[test]
    fn pcm16_header_is_the_written_header() {
        let w = write_wav(&[0.0, 0.5, -1.0, 0.25], 2, 22050, 16).unwrap();
        assert_eq!(&w[..44], &pcm16_header(2, 22050, 36 + 8, 8));
        let h = pcm16_header(1, 16000, 0x7FFF_FFFF, 0xFFFF_FFFF);
        assert_eq!(le32(&h, 4), 0x7FFF_FFFF);
        assert_eq!(le32(&h, 40), 0xFFFF_FFFF);
        let mut streaming = h.to_vec();
        streaming.extend_from_slice(&[0, 0x40, 7]);
        let info = parse_header(&streaming).unwrap();
        assert!(info.streaming && info.frames == 1);
    }

    #[test]
    fn sniffing_and_format_of_the_header() {
        assert!(is_wav(&write_wav(&[0.0], 1, 8000, 16).unwrap()));
        assert!(!is_wav(b"RIFF\0\0\0\0AVI "));
        assert!(!is_wav(b"RIFF\0\0\0\0WAV"));
        let info = parse_header(&write_wav(&[0.0], 1, 8000, 32).unwrap()).unwrap();
        assert_eq!(
            (info.format.tag(), info.format.bits()),
            (WAVE_FORMAT_IEEE_FLOAT, 32)
        );
        let w = riff(&[
            (b"fmt ", fmt(1, 1, 8000, 24), None),
            (b"data", vec![0, 0, 0], None),
        ]);
        let info = parse_header(&w).unwrap();
        assert_eq!(
            (info.format.tag(), info.format.bits()),
            (WAVE_FORMAT_PCM, 24)
        );
    }

    #[test]
    fn write_argument_errors() {
        assert!(write_wav(&[0.0], 1, 16000, 24).is_err());
        assert!(write_wav(&[0.0], 1, 0, 16).is_err());
        assert!(write_wav(&[0.0; 3], 2, 16000, 16).is_err());
        assert!(write_wav(&[0.0], 0, 16000, 16).is_err());
    }
}
