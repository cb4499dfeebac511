//! Opus encoding/decoding as EchoKit uses it (docs/protocol.md#opus), on libopus through
//! the `opus` crate (the binding echokit_server itself uses).
//!
//! Encoder: mono, application VOIP, every other setting at libopus defaults
//! (auto bitrate, VBR), packets capped at 1280 bytes, one packet per frame
//! (120 ms = 1920 samples at 16 kHz by default). Samples are buffered across
//! `push` calls and only whole frames are encoded; `flush` zero-pads a
//! non-empty remainder to a whole frame, so nothing is lost (the reference
//! server drops that tail: docs/compatibility.md#device-audio).
//!
//! Float input is converted to i16 as the inverse of `pcm16_to_float`
//! (x * 32768, rounded half to even like numpy, saturated to [-32768, 32767],
//! NaN -> 0),
//! so i16 PCM that went through `pcm16_to_float` reaches libopus unchanged,
//! exactly the i16 samples the reference encodes.
use crate::error::Result;
use crate::invalid;
use crate::vowel;

/// Sample rates libopus accepts.
pub const OPUS_RATES: [u32; 5] = [8000, 12000, 16000, 24000, 48000];
/// Frame durations libopus accepts, in milliseconds.
pub const FRAME_MS: [f64; 9] = [2.5, 5.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 120.0];
/// Largest packet the encoder may produce (the reference asks for
/// `2 * 1920 / 3` bytes).
pub const MAX_PACKET: usize = 1280;
/// Decoder output buffer, in ms: 120 ms is the longest an Opus packet can be
/// (and the most the device decodes per packet).
pub const MAX_DECODE_MS: usize = 120;

fn opus_err(what: &str, e: opus::Error) -> crate::error::Error {
    invalid!("opus {what} failed: {}", e.description())
}

fn check_rate(sample_rate: u32) -> Result<()> {
    if OPUS_RATES.contains(&sample_rate) {
        Ok(())
    } else {
        Err(invalid!(
            "sample_rate must be one of 8000, 12000, 16000, 24000, 48000 (Opus rates), got {sample_rate}"
        ))
    }
}

/// Float sample -> i16, the inverse of i16 / 32768 (rounded half to even, as
/// `np.round`, saturating, NaN -> 0).
#[inline]
pub fn f32_to_i16(x: f32) -> i16 {
    // `as` saturates out-of-range values and maps NaN to 0.
    (x * 32768.0).round_ties_even() as i16
}

/// Streaming Opus encoder producing one packet per whole frame.
pub struct Encoder {
    enc: opus::Encoder,
    sample_rate: u32,
    frame_size: usize,
    pending: Vec<i16>,
    out: Vec<u8>,
}

impl Encoder {
    /// `frame_ms` must be one of [`FRAME_MS`].
    pub fn new(sample_rate: u32, frame_ms: f64) -> Result<Self> {
        check_rate(sample_rate)?;
        if !FRAME_MS.contains(&frame_ms) {
            return Err(invalid!(
                "frame_ms must be one of 2.5, 5, 10, 20, 40, 60, 80, 100, 120 (Opus frame durations), got {frame_ms}"
            ));
        }
        // Exact for every Opus rate and duration (smallest: 8000 * 2.5 ms = 20).
        let frame_size = (sample_rate as f64 * frame_ms / 1000.0) as usize;
        let enc = opus::Encoder::new(sample_rate, opus::Channels::Mono, opus::Application::Voip)
            .map_err(|e| opus_err("encoder creation", e))?;
        Ok(Self {
            enc,
            sample_rate,
            frame_size,
            pending: Vec::with_capacity(frame_size),
            out: vec![0; MAX_PACKET],
        })
    }

    /// libopus' encoder complexity, 0 (fastest) to 10 (best; libopus 1.5's default is 9).
    pub fn set_complexity(&mut self, complexity: i64) -> Result<()> {
        if !(0..=10).contains(&complexity) {
            return Err(invalid!(
                "complexity must be from 0 to 10 (libopus), got {complexity}"
            ));
        }
        self.enc
            .set_complexity(complexity as i32)
            .map_err(|e| opus_err("set complexity", e))
    }

    pub fn complexity(&mut self) -> Result<i64> {
        self.enc
            .get_complexity()
            .map(i64::from)
            .map_err(|e| opus_err("get complexity", e))
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Samples per frame (1920 at 16 kHz / 120 ms).
    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// Samples buffered, waiting for a whole frame.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn encode_frame(&mut self, frame: &[i16]) -> Result<Vec<u8>> {
        let n = self
            .enc
            .encode(frame, &mut self.out)
            .map_err(|e| opus_err("encode", e))?;
        Ok(self.out[..n].to_vec())
    }

    /// Encode every whole frame of `pending ++ pcm`; `vowels` also computes
    /// the lip-sync vowel of each frame (from the i16 samples, as the
    /// reference does; 0 otherwise).
    fn push_impl(&mut self, pcm: &[i16], vowels: bool) -> Result<Vec<(Vec<u8>, u8)>> {
        let fs = self.frame_size;
        let mut out = Vec::with_capacity((self.pending.len() + pcm.len()) / fs);
        let mut rest = pcm;
        if !self.pending.is_empty() {
            let need = fs - self.pending.len();
            if rest.len() < need {
                self.pending.extend_from_slice(rest);
                return Ok(out);
            }
            let mut frame = std::mem::take(&mut self.pending);
            frame.extend_from_slice(&rest[..need]);
            rest = &rest[need..];
            let r = self.frame_out(&frame, vowels);
            frame.clear();
            self.pending = frame;
            out.push(r?);
        }
        let mut chunks = rest.chunks_exact(fs);
        for frame in &mut chunks {
            out.push(self.frame_out(frame, vowels)?);
        }
        self.pending.extend_from_slice(chunks.remainder());
        Ok(out)
    }

    fn frame_out(&mut self, frame: &[i16], vowels: bool) -> Result<(Vec<u8>, u8)> {
        let v = if vowels {
            vowel::vowel_of_i16(frame, self.sample_rate)
        } else {
            0
        };
        Ok((self.encode_frame(frame)?, v))
    }

    fn flush_impl(&mut self, vowels: bool) -> Result<Option<(Vec<u8>, u8)>> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let mut frame = std::mem::take(&mut self.pending);
        frame.resize(self.frame_size, 0);
        let r = self.frame_out(&frame, vowels);
        frame.clear();
        self.pending = frame;
        r.map(Some)
    }

    pub fn push_i16(&mut self, pcm: &[i16]) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .push_impl(pcm, false)?
            .into_iter()
            .map(|(p, _)| p)
            .collect())
    }

    pub fn push_f32(&mut self, pcm: &[f32]) -> Result<Vec<Vec<u8>>> {
        let pcm: Vec<i16> = pcm.iter().map(|&x| f32_to_i16(x)).collect();
        self.push_i16(&pcm)
    }

    /// Like [`Self::push_i16`], with the lip-sync vowel code of each frame.
    pub fn push_i16_with_vowels(&mut self, pcm: &[i16]) -> Result<Vec<(Vec<u8>, u8)>> {
        self.push_impl(pcm, true)
    }

    pub fn push_f32_with_vowels(&mut self, pcm: &[f32]) -> Result<Vec<(Vec<u8>, u8)>> {
        let pcm: Vec<i16> = pcm.iter().map(|&x| f32_to_i16(x)).collect();
        self.push_impl(&pcm, true)
    }

    /// Zero-pad a non-empty remainder to one frame and encode it.
    pub fn flush(&mut self) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .flush_impl(false)?
            .map(|(p, _)| p)
            .into_iter()
            .collect())
    }

    pub fn flush_with_vowels(&mut self) -> Result<Vec<(Vec<u8>, u8)>> {
        Ok(self.flush_impl(true)?.into_iter().collect())
    }

    /// Reset the codec state (as on `StartAudio`) and drop buffered samples.
    pub fn reset(&mut self) -> Result<()> {
        self.pending.clear();
        self.enc.reset_state().map_err(|e| opus_err("reset", e))
    }
}

/// Mono Opus decoder (output buffer sized for the 120 ms packet maximum).
pub struct Decoder {
    dec: opus::Decoder,
    sample_rate: u32,
    buf: Vec<i16>,
}

impl Decoder {
    pub fn new(sample_rate: u32) -> Result<Self> {
        check_rate(sample_rate)?;
        let dec = opus::Decoder::new(sample_rate, opus::Channels::Mono)
            .map_err(|e| opus_err("decoder creation", e))?;
        Ok(Self {
            dec,
            sample_rate,
            buf: vec![0; sample_rate as usize * MAX_DECODE_MS / 1000],
        })
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Decode one packet to i16 samples (libopus' i16 output, as the device
    /// plays it).
    pub fn decode_i16(&mut self, packet: &[u8]) -> Result<&[i16]> {
        if packet.is_empty() {
            return Err(invalid!("empty Opus packet"));
        }
        let n = self.dec.decode(packet, &mut self.buf, false).map_err(|e| {
            invalid!(
                "corrupt Opus packet ({} bytes): {}",
                packet.len(),
                e.description()
            )
        })?;
        Ok(&self.buf[..n])
    }

    /// Decode one packet to float samples (i16 / 32768).
    pub fn decode_f32(&mut self, packet: &[u8]) -> Result<Vec<f32>> {
        Ok(self
            .decode_i16(packet)?
            .iter()
            .map(|&s| s as f32 / 32768.0)
            .collect())
    }

    pub fn reset(&mut self) -> Result<()> {
        self.dec.reset_state().map_err(|e| opus_err("reset", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(n: usize, offset: usize) -> Vec<f32> {
        (offset..offset + n)
            .map(|i| 0.5 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 16000.0).sin())
            .collect()
    }

    #[test]
    fn complexity_is_set_and_checked() {
        let mut e = Encoder::new(16000, 120.0).unwrap();
        assert_eq!(e.complexity().unwrap(), 9); // libopus 1.5's default
        e.set_complexity(3).unwrap();
        assert_eq!(e.complexity().unwrap(), 3);
        assert!(e.set_complexity(11).is_err());
        assert!(e.set_complexity(-1).is_err());
        assert_eq!(e.complexity().unwrap(), 3);
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(Encoder::new(44100, 120.0).is_err());
        assert!(Encoder::new(16000, 30.0).is_err());
        assert!(Decoder::new(22050).is_err());
        for &r in &OPUS_RATES {
            for &ms in &FRAME_MS {
                let e = Encoder::new(r, ms).unwrap();
                assert_eq!(e.frame_size() as f64, r as f64 * ms / 1000.0);
            }
        }
    }

    #[test]
    fn length_accounting_across_pushes() {
        for sizes in [
            vec![0usize],
            vec![1],
            vec![1919],
            vec![1920],
            vec![1921],
            vec![700, 700, 700, 1000, 3],
        ] {
            let mut enc = Encoder::new(16000, 120.0).unwrap();
            let mut dec = Decoder::new(16000).unwrap();
            let total: usize = sizes.iter().sum();
            let mut packets = Vec::new();
            let mut off = 0;
            for &s in &sizes {
                packets.extend(enc.push_f32(&sine(s, off)).unwrap());
                off += s;
            }
            assert_eq!(enc.pending(), total % 1920);
            packets.extend(enc.flush().unwrap());
            assert_eq!(enc.pending(), 0);
            let decoded: usize = packets
                .iter()
                .map(|p| {
                    assert!(p.len() <= MAX_PACKET);
                    dec.decode_i16(p).unwrap().len()
                })
                .sum();
            assert_eq!(decoded, total.div_ceil(1920) * 1920, "sizes {sizes:?}");
        }
    }

    #[test]
    fn float_conversion_inverts_pcm16_to_float() {
        for s in [-32768i16, -1, 0, 1, 12345, 32767] {
            assert_eq!(f32_to_i16(s as f32 / 32768.0), s);
        }
        assert_eq!(f32_to_i16(2.0), 32767);
        assert_eq!(f32_to_i16(-2.0), -32768);
        assert_eq!(f32_to_i16(f32::NAN), 0);
        assert_eq!(f32_to_i16(2.5 / 32768.0), 2);
        assert_eq!(f32_to_i16(-3.5 / 32768.0), -4);
    }

    #[test]
    fn corrupt_packet_then_valid_packet() {
        let mut enc = Encoder::new(16000, 120.0).unwrap();
        let p = enc.push_f32(&sine(1920, 0)).unwrap().remove(0);
        let mut dec = Decoder::new(16000).unwrap();
        assert!(dec.decode_i16(&[]).is_err());
        // TOC code 3 with a frame count of zero is invalid.
        assert!(dec.decode_i16(&[0x03, 0x00]).is_err());
        assert_eq!(dec.decode_i16(&p).unwrap().len(), 1920);
    }
}
