//! Lip-sync vowel of one audio frame, as echokit_server computes it for
//! `AudioChunkWithVowel` (docs/protocol.md#vowels).
//!
//! The reference calls the `lip_sync` crate (git commit 0172215, not on
//! crates.io) as `recognize_vowel_from_pcm(&frame[..1024] as f32 / 32767, 16000)`.
//! That crate is not published, so this module reimplements its algorithm
//! with the same constants, float types (f32) and order of operations, so
//! that the results are identical, not merely similar:
//!
//! 1. pre-emphasis `x[i] -= 0.97 * x[i-1]` (in place, from the end);
//! 2. Hamming window `0.54 - 0.46 cos(2π i / (n-1))`;
//! 3. autocorrelation, normalised by lag 0 (zero/NaN energy -> none);
//! 4. Levinson-Durbin LPC of order `sample_rate/1000 + 4` (20 at 16 kHz);
//!    a zero prediction error at any step -> none;
//! 5. LPC spectral envelope `ln(gain) - 2 ln|A(k)|` on a 1024-point FFT
//!    (rustfft, the same library and planner the crate uses);
//! 6. formants: the local maxima of the envelope between bin 1 and the bin
//!    of 5 kHz (exclusive), in frequency order;
//! 7. the (F1, F2) point is classified by point-in-polygon tests in the
//!    order A, I, U, E, O; fewer than two formants or no polygon -> none.
//!
//! Speed-ups that do not change a single bit of the result: only the 21
//! autocorrelation lags that Levinson-Durbin reads are computed (the crate
//! computes all n lags, O(n²)), each still summed in ascending order; the
//! lags are accumulated side by side so the loop vectorises; the FFT plan and
//! the 1024-point window are built once; the envelope is evaluated only on
//! the bins the peak search reads; the search stops after two peaks (only F1
//! and F2 are used).
//!
//! Codes are EchoKit's: 0 none, 1 A, 2 E, 3 I, 4 O, 5 U (the crate's enum
//! order A, I, U, E, O is mapped by name, as the reference server does).
use std::sync::{Arc, OnceLock};

use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

/// Samples of a frame that the reference analyses (the first 1024 of each
/// 1920-sample, 120 ms frame).
pub const ANALYSIS_LEN: usize = 1024;
/// FFT size of the spectral envelope.
pub const FFT_SIZE: usize = 1024;
/// Pre-emphasis coefficient.
pub const PRE_EMPHASIS: f32 = 0.97;
/// Formants are searched below this frequency.
pub const MAX_FORMANT_HZ: f32 = 5000.0;
/// The reference scales i16 PCM by 1/i16::MAX (not 1/32768) before analysis.
pub const I16_SCALE: f32 = i16::MAX as f32;

/// EchoKit vowel codes.
pub const NONE: u8 = 0;
pub const A: u8 = 1;
pub const E: u8 = 2;
pub const I: u8 = 3;
pub const O: u8 = 4;
pub const U: u8 = 5;

/// Highest LPC order supported (sample rates up to 60 kHz).
const MAX_ORDER: usize = 64;

#[derive(Clone, Copy)]
struct Pt {
    x: f32,
    y: f32,
}

const fn p(x: f32, y: f32) -> Pt {
    Pt { x, y }
}

// Vowel regions in the (F1, F2) plane, in Hz, as defined by lip_sync.
const POLY_A: &[Pt] = &[
    p(500.0, 0.0),
    p(1500.0, 0.0),
    p(1500.0, 2800.0),
    p(700.0, 3100.0),
    p(800.0, 2800.0),
    p(580.0, 1900.0),
    p(600.0, 1900.0),
    p(600.0, 1500.0),
];
const POLY_I: &[Pt] = &[
    p(0.0, 2000.0),
    p(200.0, 2100.0),
    p(300.0, 3000.0),
    p(800.0, 2800.0),
    p(700.0, 3100.0),
    p(500.0, 3200.0),
    p(550.0, 5000.0),
    p(0.0, 5000.0),
];
const POLY_U: &[Pt] = &[
    p(0.0, 800.0),
    p(600.0, 1900.0),
    p(580.0, 1900.0),
    p(200.0, 2100.0),
    p(0.0, 2000.0),
];
const POLY_E: &[Pt] = &[
    p(200.0, 2100.0),
    p(580.0, 1900.0),
    p(800.0, 2800.0),
    p(300.0, 3000.0),
];
const POLY_O1: &[Pt] = &[
    p(0.0, 0.0),
    p(500.0, 0.0),
    p(650.0, 1500.0),
    p(600.0, 1900.0),
    p(0.0, 800.0),
];
const POLY_O2: &[Pt] = &[
    p(500.0, 3200.0),
    p(700.0, 3100.0),
    p(1500.0, 2800.0),
    p(1500.0, 5000.0),
    p(550.0, 5000.0),
];

/// Tested in this order; the first region containing the point wins.
const REGIONS: &[(&[Pt], u8)] = &[
    (POLY_A, A),
    (POLY_I, I),
    (POLY_U, U),
    (POLY_E, E),
    (POLY_O1, O),
    (POLY_O2, O),
];

/// Even-odd ray casting (a horizontal ray towards +x).
fn inside(pt: Pt, poly: &[Pt]) -> bool {
    let n = poly.len();
    if n < 3 {
        return false;
    }
    let mut result = false;
    let mut j = n - 1;
    for i in 0..n {
        let (a, b) = (poly[i], poly[j]);
        if (a.y > pt.y) != (b.y > pt.y) {
            let x_cross = (b.x - a.x) * (pt.y - a.y) / (b.y - a.y) + a.x;
            if pt.x < x_cross {
                result = !result;
            }
        }
        j = i;
    }
    result
}

/// Vowel code of an (F1, F2) pair in Hz.
pub fn classify_formants(f1: f32, f2: f32) -> u8 {
    let pt = p(f1, f2);
    REGIONS
        .iter()
        .find(|(poly, _)| inside(pt, poly))
        .map_or(NONE, |&(_, code)| code)
}

/// LPC order used at a sample rate (the crate's rule).
pub fn lpc_order(sample_rate: u32) -> usize {
    (sample_rate / 1000) as usize + 4
}

fn fft_1024() -> &'static Arc<dyn Fft<f32>> {
    static PLAN: OnceLock<Arc<dyn Fft<f32>>> = OnceLock::new();
    PLAN.get_or_init(|| FftPlanner::new().plan_fft_forward(FFT_SIZE))
}

fn hamming_coeff(i: usize, n: usize) -> f32 {
    0.54 - 0.46 * (2.0 * std::f32::consts::PI * i as f32 / (n - 1) as f32).cos()
}

fn hamming_1024() -> &'static [f32; ANALYSIS_LEN] {
    static WIN: OnceLock<Box<[f32; ANALYSIS_LEN]>> = OnceLock::new();
    WIN.get_or_init(|| {
        let mut w = Box::new([0.0f32; ANALYSIS_LEN]);
        for (i, v) in w.iter_mut().enumerate() {
            *v = hamming_coeff(i, ANALYSIS_LEN);
        }
        w
    })
}

/// Autocorrelation lags `0..=order` of `x`, each summed in ascending index
/// order (bit-identical to the straightforward double loop).
fn autocorr(x: &[f32], order: usize, acf: &mut [f32; MAX_ORDER + 1]) {
    let n = x.len();
    let lags = order + 1;
    let acc = &mut acf[..lags];
    acc.fill(0.0);
    // Rows where every lag has a partner: accumulate all lags side by side.
    let full = n.saturating_sub(order);
    for j in 0..full {
        let xj = x[j];
        let w = &x[j..j + lags];
        for (a, &xk) in acc.iter_mut().zip(w) {
            *a += xj * xk;
        }
    }
    // The last `order` rows feed only the shorter lags.
    for j in full..n {
        let xj = x[j];
        for (a, &xk) in acc.iter_mut().zip(&x[j..]) {
            *a += xj * xk;
        }
    }
}

/// Levinson-Durbin recursion on normalised autocorrelation; `None` when the
/// prediction error reaches exactly zero (the crate's failure rule).
fn levinson(acf: &[f32], order: usize, alpha: &mut [f32; MAX_ORDER + 1]) -> Option<f32> {
    let mut err = acf[0];
    if err == 0.0 {
        return None;
    }
    alpha.fill(0.0);
    alpha[0] = 1.0;
    let mut prev = [0.0f32; MAX_ORDER + 1];
    for i in 1..=order {
        let mut k = -acf[i];
        for j in 1..i {
            k -= alpha[j] * acf[i - j];
        }
        k /= err;
        prev[..i].copy_from_slice(&alpha[..i]);
        alpha[i] = k;
        for j in 1..i {
            alpha[j] = prev[j] + k * prev[i - j];
        }
        err *= 1.0 - k * k;
        if err == 0.0 {
            return None;
        }
    }
    Some(err)
}

/// Vowel code of a frame of float samples, analysed as the `lip_sync` crate
/// does (`samples` are used as given: the reference feeds i16/32767).
///
/// Only the first [`ANALYSIS_LEN`] samples are analysed, like the reference
/// server (which slices each 1920-sample frame to 1024 before the call).
/// Frames with no more samples than the LPC order (20 at 16 kHz) yield
/// [`NONE`] (the crate would index out of bounds there; the reference server
/// never calls it with fewer than 1024 samples).
pub fn vowel_of(samples: &[f32], sample_rate: u32) -> u8 {
    let order = lpc_order(sample_rate);
    let x_in = &samples[..samples.len().min(ANALYSIS_LEN)];
    let n = x_in.len();
    if n <= order || order > MAX_ORDER {
        return NONE;
    }
    let mut x = [0.0f32; ANALYSIS_LEN];
    let x = &mut x[..n];
    x.copy_from_slice(x_in);

    // 1. pre-emphasis, from the end so each step reads the original sample.
    for i in (1..n).rev() {
        x[i] -= PRE_EMPHASIS * x[i - 1];
    }
    // 2. Hamming window.
    if n == ANALYSIS_LEN {
        for (v, w) in x.iter_mut().zip(hamming_1024().iter()) {
            *v *= *w;
        }
    } else {
        for (i, v) in x.iter_mut().enumerate() {
            *v *= hamming_coeff(i, n);
        }
    }
    // 3. autocorrelation, normalised by the energy.
    let mut acf = [0.0f32; MAX_ORDER + 1];
    autocorr(x, order, &mut acf);
    let acf0 = acf[0];
    if acf0.is_nan() || acf0 <= 0.0 {
        return NONE;
    }
    for v in acf[..=order].iter_mut() {
        *v /= acf0;
    }
    // 4. LPC.
    let mut alpha = [0.0f32; MAX_ORDER + 1];
    let Some(err) = levinson(&acf, order, &mut alpha) else {
        return NONE;
    };
    let gain = err * acf0;
    // 5. spectral envelope on the bins the peak search reads.
    let mut spec = vec![
        Complex {
            re: 0.0f32,
            im: 0.0
        };
        FFT_SIZE
    ];
    for (c, &a) in spec.iter_mut().zip(&alpha[..=order]) {
        c.re = a;
    }
    let plan = fft_1024();
    let mut scratch = vec![
        Complex {
            re: 0.0f32,
            im: 0.0
        };
        plan.get_inplace_scratch_len()
    ];
    plan.process_with_scratch(&mut spec, &mut scratch);
    let log_gain = if gain > 0.0 {
        gain.ln()
    } else {
        f32::NEG_INFINITY
    };
    let bin_hz = sample_rate as f32 / FFT_SIZE as f32;
    let max_bin = ((MAX_FORMANT_HZ / bin_hz) as usize).min(FFT_SIZE / 2 - 1);
    if max_bin <= 1 {
        return NONE;
    }
    let env = |k: usize| log_gain - 2.0 * spec[k].norm().ln();
    // 6. the first two local maxima in 1..max_bin, in frequency order.
    let mut formants = [0.0f32; 2];
    let mut found = 0;
    let (mut prev, mut cur) = (env(0), env(1));
    for i in 1..max_bin {
        let next = env(i + 1);
        if cur > prev && cur > next {
            formants[found] = i as f32 * sample_rate as f32 / FFT_SIZE as f32;
            found += 1;
            if found == 2 {
                break;
            }
        }
        prev = cur;
        cur = next;
    }
    if found < 2 {
        return NONE;
    }
    // 7. classification.
    classify_formants(formants[0], formants[1])
}

/// [`vowel_of`] for i16 PCM, scaled `s / 32767` exactly as the reference
/// server does before calling the crate.
pub fn vowel_of_i16(samples: &[i16], sample_rate: u32) -> u8 {
    let n = samples.len().min(ANALYSIS_LEN);
    let mut x = [0.0f32; ANALYSIS_LEN];
    for (d, &s) in x.iter_mut().zip(&samples[..n]) {
        *d = s as f32 / I16_SCALE;
    }
    vowel_of(&x[..n], sample_rate)
}

/// Validate the sample rate accepted by the public entry point (8-48 kHz).
pub fn check_sample_rate(sample_rate: i64) -> crate::error::Result<u32> {
    if !(8000..=48000).contains(&sample_rate) {
        return Err(crate::invalid!(
            "sample_rate must be between 8000 and 48000 Hz, got {sample_rate}"
        ));
    }
    Ok(sample_rate as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Glottal pulse train through a cascade of two-pole formant resonators.
    fn synth_vowel(formants: &[(f32, f32)], f0: f32, n: usize, sr: f32) -> Vec<f32> {
        let mut x: Vec<f32> = (0..n)
            .map(|i| {
                let period = (sr / f0) as usize;
                if i % period == 0 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        for &(f, bw) in formants {
            let r = (-std::f32::consts::PI * bw / sr).exp();
            let theta = 2.0 * std::f32::consts::PI * f / sr;
            let (a1, a2) = (2.0 * r * theta.cos(), -r * r);
            let (mut y1, mut y2) = (0.0f32, 0.0f32);
            for v in x.iter_mut() {
                let y = *v + a1 * y1 + a2 * y2;
                y2 = y1;
                y1 = y;
                *v = y;
            }
        }
        let peak = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        x.iter().map(|v| 0.5 * v / peak).collect()
    }

    #[test]
    fn silence_and_tiny_inputs_are_none() {
        assert_eq!(vowel_of(&[0.0; 1920], 16000), NONE);
        assert_eq!(vowel_of(&[], 16000), NONE);
        assert_eq!(vowel_of(&[0.3; 20], 16000), NONE);
        assert_eq!(vowel_of(&[f32::NAN; 1024], 16000), NONE);
        assert_eq!(vowel_of_i16(&[0; 1920], 16000), NONE);
    }

    #[test]
    fn autocorr_matches_naive_bit_for_bit() {
        let x: Vec<f32> = (0..1024)
            .map(|i| ((i * 7919) % 113) as f32 / 57.0 - 1.0)
            .collect();
        let mut acf = [0.0f32; MAX_ORDER + 1];
        autocorr(&x, 20, &mut acf);
        for lag in 0..=20 {
            let mut s = 0.0f32;
            for j in 0..(x.len() - lag) {
                s += x[j] * x[j + lag];
            }
            assert_eq!(s.to_bits(), acf[lag].to_bits(), "lag {lag}");
        }
    }

    #[test]
    fn polygon_classification_by_region() {
        // Points well inside each region.
        assert_eq!(classify_formants(800.0, 1200.0), A);
        assert_eq!(classify_formants(200.0, 2800.0), I);
        assert_eq!(classify_formants(200.0, 1500.0), U);
        assert_eq!(classify_formants(500.0, 2300.0), E);
        assert_eq!(classify_formants(300.0, 500.0), O);
        assert_eq!(classify_formants(1000.0, 4000.0), O);
        assert_eq!(classify_formants(2000.0, 1000.0), NONE);
    }

    /// Expected codes checked against the original lip_sync crate on these
    /// exact frames (f0 = 120 Hz, 1920 samples, peak 0.5).
    #[test]
    fn synthetic_vowels() {
        let sr = 16000.0;
        let cases: &[(&[(f32, f32)], u8)] = &[
            (&[(800.0, 80.0), (1200.0, 90.0), (2500.0, 120.0)], A),
            (&[(200.0, 60.0), (3000.0, 150.0)], I),
            (&[(280.0, 60.0), (1500.0, 90.0), (2500.0, 120.0)], U),
            (&[(450.0, 70.0), (2200.0, 100.0), (2800.0, 120.0)], E),
            (&[(450.0, 70.0), (800.0, 80.0), (2600.0, 120.0)], O),
        ];
        for (formants, want) in cases {
            let x = synth_vowel(formants, 120.0, 1920, sr);
            assert_eq!(vowel_of(&x, 16000), *want, "{formants:?}");
            let pcm: Vec<i16> = x.iter().map(|&v| crate::opus::f32_to_i16(v)).collect();
            assert_eq!(vowel_of_i16(&pcm, 16000), *want, "{formants:?} (i16)");
        }
    }
}
