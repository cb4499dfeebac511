//! Whisper log-mel features (80 bins), as Whisper's feature extractor and
//! Smart Turn v3 compute them: 16 kHz audio, a 400-point periodic Hann
//! window every 160 samples over the reflect-padded signal (centred frames),
//! the power spectrum projected on a Slaney-normalised 80-filter mel bank
//! (0..8000 Hz), `log10` floored at 1e-10, the trailing frame dropped,
//! clamped to 8 below the maximum and scaled as `(x + 4) / 4`.
//!
//! With `normalize`, the waveform is first made zero-mean, unit-variance
//! (`(x - mean) / sqrt(var + 1e-7)`), as transformers'
//! `WhisperFeatureExtractor(do_normalize=True)` and Smart Turn v3 do.
//! The spectrum math runs in f64, as the reference does.
use std::sync::{Arc, OnceLock};

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use crate::error::Result;
use crate::invalid;

pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
pub const N_MELS: usize = 80;
pub const SAMPLE_RATE: f64 = 16000.0;
const N_BINS: usize = N_FFT / 2 + 1;
const PAD: usize = N_FFT / 2;
const MEL_FLOOR: f64 = 1e-10;
const NORM_EPS: f64 = 1e-7;

/// Frames of the features of `n` samples: `n / 160`.
pub fn frames(n: usize) -> usize {
    n / HOP
}

/// Features of `samples` (16 kHz), row-major `(80, frames(len))`. The input
/// must have more than 200 samples (the reflect padding) and be finite.
pub fn log_mel(samples: &[f32], normalize: bool) -> Result<Vec<f32>> {
    if samples.len() <= PAD {
        return Err(invalid!(
            "log-mel features need more than {PAD} samples, got {}",
            samples.len()
        ));
    }
    if samples.iter().any(|v| !v.is_finite()) {
        return Err(invalid!("samples must be finite (no NaN or infinity)"));
    }
    let x: Vec<f64> = if normalize {
        normalized(samples)
    } else {
        samples.iter().map(|&v| f64::from(v)).collect()
    };
    let n_frames = frames(x.len());
    let window = hann();
    let filters = mel_filters();
    let fft = fft_400();
    let mut buf = vec![Complex::new(0.0, 0.0); N_FFT];
    let mut scratch = vec![Complex::new(0.0, 0.0); fft.get_inplace_scratch_len()];
    let mut power = [0.0f64; N_BINS];
    let mut logs = vec![0.0f64; N_MELS * n_frames];
    for f in 0..n_frames {
        let start = f * HOP; // in the padded signal
        for (i, c) in buf.iter_mut().enumerate() {
            *c = Complex::new(reflect(&x, start + i) * window[i], 0.0);
        }
        fft.process_with_scratch(&mut buf, &mut scratch);
        for (p, c) in power.iter_mut().zip(&buf) {
            *p = c.norm_sqr();
        }
        for (m, row) in filters.iter().enumerate() {
            let e: f64 = row.iter().zip(&power).map(|(w, p)| w * p).sum();
            logs[m * n_frames + f] = e.max(MEL_FLOOR).log10();
        }
    }
    let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Ok(logs
        .into_iter()
        .map(|v| ((v.max(top - 8.0) + 4.0) / 4.0) as f32)
        .collect())
}

/// Zero-mean, unit-variance waveform, computed in f32 as the reference does.
fn normalized(samples: &[f32]) -> Vec<f64> {
    let n = samples.len() as f64;
    let mean = samples.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = samples
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    let (mean, scale) = (mean as f32, (var + NORM_EPS).sqrt() as f32);
    samples
        .iter()
        .map(|&v| f64::from((v - mean) / scale))
        .collect()
}

/// Sample `i` of `x` reflect-padded by `PAD` on both sides (numpy "reflect").
fn reflect(x: &[f64], i: usize) -> f64 {
    let n = x.len();
    let j = i as isize - PAD as isize;
    let k = if j < 0 {
        (-j) as usize
    } else if j as usize >= n {
        2 * (n - 1) - j as usize
    } else {
        j as usize
    };
    x[k]
}

fn fft_400() -> &'static Arc<dyn Fft<f64>> {
    static PLAN: OnceLock<Arc<dyn Fft<f64>>> = OnceLock::new();
    PLAN.get_or_init(|| FftPlanner::new().plan_fft_forward(N_FFT))
}

/// Periodic Hann window of `N_FFT` points.
fn hann() -> &'static [f64; N_FFT] {
    static WIN: OnceLock<[f64; N_FFT]> = OnceLock::new();
    WIN.get_or_init(|| {
        std::array::from_fn(|i| {
            0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos()
        })
    })
}

fn hz_to_mel(f: f64) -> f64 {
    if f >= 1000.0 {
        15.0 + (f / 1000.0).ln() * 27.0 / 6.4f64.ln()
    } else {
        3.0 * f / 200.0
    }
}

fn mel_to_hz(m: f64) -> f64 {
    if m >= 15.0 {
        1000.0 * (6.4f64.ln() / 27.0 * (m - 15.0)).exp()
    } else {
        200.0 * m / 3.0
    }
}

/// The Slaney mel filter bank, one row of `N_BINS` weights per mel bin.
fn mel_filters() -> &'static [[f64; N_BINS]; N_MELS] {
    static BANK: OnceLock<Box<[[f64; N_BINS]; N_MELS]>> = OnceLock::new();
    BANK.get_or_init(|| {
        let nyquist = SAMPLE_RATE / 2.0;
        let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(nyquist));
        let edges: Vec<f64> = (0..N_MELS + 2)
            .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (N_MELS + 1) as f64))
            .collect();
        let mut bank = Box::new([[0.0; N_BINS]; N_MELS]);
        for (m, row) in bank.iter_mut().enumerate() {
            let enorm = 2.0 / (edges[m + 2] - edges[m]);
            for (k, w) in row.iter_mut().enumerate() {
                let f = nyquist * k as f64 / (N_BINS - 1) as f64;
                let down = (f - edges[m]) / (edges[m + 1] - edges[m]);
                let up = (edges[m + 2] - f) / (edges[m + 2] - edges[m + 1]);
                *w = down.min(up).max(0.0) * enorm;
            }
        }
        bank
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_and_range() {
        let x: Vec<f32> = (0..16000).map(|i| (i as f32 * 0.05).sin() * 0.3).collect();
        let m = log_mel(&x, false).unwrap();
        assert_eq!(m.len(), N_MELS * 100);
        let top = m.iter().copied().fold(f32::MIN, f32::max);
        let low = m.iter().copied().fold(f32::MAX, f32::min);
        assert!(top - low <= 2.0 + 1e-6); // clamped to 8 below the maximum, / 4
    }

    #[test]
    fn rejects_short_and_non_finite() {
        assert!(log_mel(&[0.0; 200], false).is_err());
        let mut x = vec![0.1f32; 1000];
        x[3] = f32::NAN;
        assert!(log_mel(&x, true).is_err());
    }
}
