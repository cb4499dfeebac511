//! Audio in and out: a WAV of any rate/channels/format to 16 kHz mono PCM16
//! (the project's own kernels in echokit-native), the device's Opus decoder,
//! and 16 kHz mono WAV output.

use std::path::Path;

use echokit_native::{pcm, resample, wav};

use crate::mic::RATE;

/// The firmware's Opus output buffer: 120 ms at 16 kHz.
pub const OPUS_MAX_SAMPLES: usize = 1920;

/// Converts WAV file bytes to 16 kHz mono PCM16.
pub fn wav_to_16k_mono(bytes: &[u8]) -> Result<Vec<i16>, String> {
    let (samples, info) = wav::read_wav(bytes).map_err(|e| e.to_string())?;
    let mono = if info.channels == 1 {
        samples
    } else {
        let mut m = vec![0.0f32; info.frames];
        pcm::to_mono_f32(&samples, info.channels, &mut m).map_err(|e| e.to_string())?;
        m
    };
    let out = if info.sample_rate as usize == RATE {
        mono
    } else {
        resample::resample(&mono, info.sample_rate as i64, RATE as i64).map_err(|e| {
            format!(
                "cannot resample from {} Hz to {RATE} Hz: {e}",
                info.sample_rate
            )
        })?
    };
    Ok(out.into_iter().map(pcm::f32_to_i16).collect())
}

/// Reads a WAV file for a turn; the error names the file.
pub fn load_wav(path: &Path) -> Result<Vec<i16>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read WAV {}: {e}", path.display()))?;
    let samples =
        wav_to_16k_mono(&bytes).map_err(|e| format!("bad WAV {}: {e}", path.display()))?;
    if samples.is_empty() {
        return Err(format!("WAV {} holds no audio", path.display()));
    }
    Ok(samples)
}

/// A mono PCM16 WAV file at `rate` Hz.
pub fn wav_bytes(samples: &[i16], rate: u32) -> Vec<u8> {
    let f: Vec<f32> = samples
        .iter()
        .map(|&s| s as f32 * pcm::PCM16_SCALE)
        .collect();
    // Only fails beyond 4 GiB of audio, which a turn cannot reach.
    wav::write_wav(&f, 1, rate, 16).expect("reply WAV under 4 GiB")
}

/// The device's Opus decoder (16 kHz mono, 1920-sample buffer).
pub struct OpusDecoder {
    dec: opus::Decoder,
    buf: Vec<i16>,
}

impl OpusDecoder {
    pub fn new() -> Result<OpusDecoder, String> {
        let dec = opus::Decoder::new(RATE as u32, opus::Channels::Mono)
            .map_err(|e| format!("cannot create the Opus decoder: {e}"))?;
        Ok(OpusDecoder {
            dec,
            buf: vec![0; OPUS_MAX_SAMPLES],
        })
    }

    /// `StartAudio` resets the decoder state.
    pub fn reset(&mut self) {
        // Only fails on an invalid decoder handle.
        let _ = self.dec.reset_state();
    }

    /// One packet. libopus refuses a packet longer than the 1920-sample
    /// buffer (and Opus itself caps a packet at 120 ms).
    pub fn decode(&mut self, packet: &[u8]) -> Result<Vec<i16>, String> {
        if packet.is_empty() {
            return Err("empty Opus packet".into());
        }
        let n = self
            .dec
            .decode(packet, &mut self.buf, false)
            .map_err(|e| format!("Opus packet of {} bytes does not decode: {e}", packet.len()))?;
        Ok(self.buf[..n].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stereo_44k1_becomes_16k_mono_of_the_right_length() {
        // 0.5 s of 44.1 kHz stereo: left = 440 Hz sine, right = the same.
        let frames = 22_050;
        let mut inter = Vec::with_capacity(frames * 2);
        for i in 0..frames {
            let s = 0.5 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 44_100.0).sin();
            inter.push(s);
            inter.push(s);
        }
        let bytes = wav::write_wav(&inter, 2, 44_100, 16).unwrap();
        let out = wav_to_16k_mono(&bytes).unwrap();
        assert_eq!(out.len(), 8000);
        // The tone survives: peak near 0.5 full scale.
        let peak = out[1000..7000]
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap();
        assert!((15_000..=17_500).contains(&peak), "{peak}");
    }

    #[test]
    fn opposite_channels_mix_to_silence() {
        let inter: Vec<f32> = (0..3200).flat_map(|_| [0.25f32, -0.25]).collect();
        let bytes = wav::write_wav(&inter, 2, 16_000, 16).unwrap();
        let out = wav_to_16k_mono(&bytes).unwrap();
        assert_eq!(out.len(), 3200);
        assert!(out.iter().all(|&s| s == 0));
    }

    #[test]
    fn reply_wav_round_trips() {
        let s: Vec<i16> = vec![0, 1, -1, 32767, -32768, 1234];
        let bytes = wav_bytes(&s, RATE as u32);
        assert_eq!(bytes.len(), 44 + 12);
        assert_eq!(wav_to_16k_mono(&bytes).unwrap(), s);
    }

    #[test]
    fn garbage_wav_is_an_error_not_a_panic() {
        assert!(wav_to_16k_mono(b"RIFF\x00\x00").is_err());
        assert!(wav_to_16k_mono(b"hello world, not a wav file at all....").is_err());
        let dir = std::env::temp_dir().join("echokit-vdev-no-such-file.wav");
        let err = load_wav(&dir).unwrap_err();
        assert!(err.contains("cannot read WAV"), "{err}");
    }

    #[test]
    fn opus_round_trip_and_oversized_packets() {
        let mut enc =
            opus::Encoder::new(16_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        let pcm: Vec<i16> = (0..1920)
            .map(|i| (8000.0 * (i as f32 * 0.05).sin()) as i16)
            .collect();
        let pkt = enc.encode_vec(&pcm, 1280).unwrap();
        let mut dec = OpusDecoder::new().unwrap();
        assert_eq!(dec.decode(&pkt).unwrap().len(), 1920);
        assert!(dec.decode(&[]).unwrap_err().contains("empty"));
        assert!(dec.decode(&[0xff, 0xff, 0xff]).is_err());
        // A code-3 packet of 3 x 60 ms SILK frames (180 ms > 120 ms): TOC
        // config 3 (SILK NB 60 ms), code 3, count byte 3 (CBR).
        let err = dec.decode(&[0x1b, 0x03, 0, 0, 0]).unwrap_err();
        assert!(err.contains("does not decode"), "{err}");
        // 2 x 60 ms = 120 ms still fits.
        assert_eq!(dec.decode(&[0x1b, 0x02, 0, 0]).map(|p| p.len()), Ok(1920));
    }
}
