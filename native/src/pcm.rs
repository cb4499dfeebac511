//! PCM sample conversion and channel mixing (pure Rust; bindings in py/pcm.rs).
//!
//! Conventions, shared with the WAV codec:
//! * 16-bit PCM is signed, little-endian on the wire (`s16le`), and maps to float
//!   as `value / 32768`, so `-32768 -> -1.0` and `32767 -> 0.999969...`.
//! * float -> 16-bit is `x * 32768` rounded half to even (the rule of
//!   `numpy.round` / IEEE `roundTiesToEven`), saturated to `[-32768, 32767]`
//!   (`+1.0 -> 32767`, `-1.0 -> -32768`, `±inf` saturate), NaN -> 0.
//!
//! The kernels write into caller-provided output slices (the bindings hand them
//! a freshly allocated NumPy array or `bytes` buffer, so nothing is copied twice)
//! and are written as straight loops over `chunks_exact` so that LLVM vectorises
//! them. Hand-written on purpose: per-sample conversion crates (e.g.
//! `dasp_sample`) fix their own float->int rule rather than this exact
//! rounding/saturation/NaN contract, and offer no slice-level channel mixing;
//! the loops are a few lines each.

use crate::error::Result;
use crate::invalid;

/// Scale from 16-bit PCM to float: exactly 2^-15.
pub const PCM16_SCALE: f32 = 1.0 / 32768.0;

/// `1.5 * 2^23`. For `|v| <= 2^22`, `v + ROUND_MAGIC` lies in `[2^23, 2^24)`
/// where the float spacing is exactly 1, so the addition rounds `v` to an
/// integer (ties to even, the default FP rounding mode) and that integer is
/// the difference of the bit patterns. Unlike `f32::round_ties_even` + `as`
/// (a libm call or SSE4.1, then a saturating conversion) this is an add and an
/// integer subtract on every x86-64, so the loop vectorises everywhere.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// One float sample to 16-bit PCM: `x * 32768` rounded half to even,
/// saturated to `[-32768, 32767]`, NaN -> 0.
#[inline(always)]
pub fn f32_to_i16(x: f32) -> i16 {
    let v = x * 32768.0;
    // NaN fails every comparison: `v == v` is false only for NaN.
    #[allow(clippy::eq_op)]
    let v = if v == v { v } else { 0.0 };
    let v = v.clamp(-32768.0, 32767.0);
    ((v + ROUND_MAGIC).to_bits() as i32 - ROUND_MAGIC.to_bits() as i32) as i16
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(invalid!(
            "{what}: output buffer holds {got} samples but {want} are needed"
        ));
    }
    Ok(())
}

/// Little-endian s16 bytes to float (`/ 32768`). An odd byte count is an error.
pub fn pcm16le_bytes_to_f32(src: &[u8], dst: &mut [f32]) -> Result<()> {
    if !src.len().is_multiple_of(2) {
        return Err(invalid!(
            "PCM16 data has an odd number of bytes ({}); 16-bit samples need 2 bytes each",
            src.len()
        ));
    }
    check_len("pcm16_to_float", dst.len(), src.len() / 2)?;
    for (o, b) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *o = f32::from(i16::from_le_bytes([b[0], b[1]])) * PCM16_SCALE;
    }
    Ok(())
}

/// Native `i16` samples to float (`/ 32768`).
pub fn i16_to_f32(src: &[i16], dst: &mut [f32]) -> Result<()> {
    check_len("pcm16_to_float", dst.len(), src.len())?;
    for (o, &s) in dst.iter_mut().zip(src) {
        *o = f32::from(s) * PCM16_SCALE;
    }
    Ok(())
}

/// Float samples to little-endian s16 bytes (see [`f32_to_i16`] for the rule).
/// `dst` must hold exactly `2 * src.len()` bytes.
pub fn f32_to_pcm16le_bytes(src: &[f32], dst: &mut [u8]) -> Result<()> {
    if dst.len() != src.len() * 2 {
        return Err(invalid!(
            "float_to_pcm16: output buffer holds {} bytes but {} are needed",
            dst.len(),
            src.len() * 2
        ));
    }
    for (o, &x) in dst.chunks_exact_mut(2).zip(src) {
        o.copy_from_slice(&f32_to_i16(x).to_le_bytes());
    }
    Ok(())
}

/// Convenience: `Vec` versions of the conversions (used by other kernels and tests).
pub fn pcm16le_to_vec(src: &[u8]) -> Result<Vec<f32>> {
    let mut out = vec![0.0; src.len() / 2];
    pcm16le_bytes_to_f32(src, &mut out)?;
    Ok(out)
}

/// Float samples to a new `s16le` byte vector.
pub fn f32_to_pcm16le_vec(src: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; src.len() * 2];
    f32_to_pcm16le_bytes(src, &mut out).expect("sized above");
    out
}

/// Checks an interleaved buffer of `len` samples against `channels` and
/// returns the number of frames.
pub fn frames_of(len: usize, channels: usize) -> Result<usize> {
    if channels < 1 {
        return Err(invalid!("channels must be >= 1, got {channels}"));
    }
    if !len.is_multiple_of(channels) {
        return Err(invalid!(
            "interleaved input of {len} samples is not a whole number of {channels}-channel frames \
             ({} samples left over)",
            len % channels
        ));
    }
    Ok(len / channels)
}

/// A sample type `to_mono` accepts, with the per-sample scale folded into the
/// final division (exact: the scale is a power of two).
trait MonoSample: Copy + Send + Sync {
    /// `1` for float, `32768` for int16.
    const DIVISOR: f32;
    fn to_f32(self) -> f32;
}

impl MonoSample for f32 {
    const DIVISOR: f32 = 1.0;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl MonoSample for i16 {
    const DIVISOR: f32 = 32768.0;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
}

/// Channel count known at compile time: the frame is a fixed array, the sum
/// is unrolled and the loop vectorises. Sums left to right, then divides by
/// `C * DIVISOR` (== numpy's `mean(axis=1)` then `/ 32768`, bit for bit, for
/// the small channel counts numpy also sums sequentially).
#[inline(always)]
fn mono_const<T: MonoSample, const C: usize>(src: &[T], dst: &mut [f32]) {
    let div = C as f32 * T::DIVISOR;
    for (o, frame) in dst.iter_mut().zip(src.chunks_exact(C)) {
        let mut acc = frame[0].to_f32();
        for s in &frame[1..] {
            acc += s.to_f32();
        }
        *o = acc / div;
    }
}

/// Stereo: `(l + r) * (0.5 / DIVISOR)`. Multiplying by a power of two is the
/// same as dividing, and cheaper.
#[inline(always)]
fn mono_stereo<T: MonoSample>(src: &[T], dst: &mut [f32]) {
    let k = 0.5 / T::DIVISOR;
    for (o, frame) in dst.iter_mut().zip(src.chunks_exact(2)) {
        *o = (frame[0].to_f32() + frame[1].to_f32()) * k;
    }
}

fn mono_any<T: MonoSample>(src: &[T], channels: usize, dst: &mut [f32]) {
    match channels {
        1 => mono_const::<T, 1>(src, dst),
        2 => mono_stereo(src, dst),
        3 => mono_const::<T, 3>(src, dst),
        4 => mono_const::<T, 4>(src, dst),
        5 => mono_const::<T, 5>(src, dst),
        6 => mono_const::<T, 6>(src, dst),
        7 => mono_const::<T, 7>(src, dst),
        8 => mono_const::<T, 8>(src, dst),
        c => {
            let div = c as f32 * T::DIVISOR;
            for (o, frame) in dst.iter_mut().zip(src.chunks_exact(c)) {
                let mut acc = frame[0].to_f32();
                for s in &frame[1..] {
                    acc += s.to_f32();
                }
                *o = acc / div;
            }
        }
    }
}

fn to_mono_impl<T: MonoSample>(src: &[T], channels: usize, dst: &mut [f32]) -> Result<()> {
    let frames = frames_of(src.len(), channels)?;
    check_len("to_mono", dst.len(), frames)?;
    mono_any(src, channels, dst);
    Ok(())
}

/// Average of the channels of interleaved float input, one output per frame.
pub fn to_mono_f32(src: &[f32], channels: usize, dst: &mut [f32]) -> Result<()> {
    to_mono_impl(src, channels, dst)
}

/// Average of the channels of interleaved int16 input, scaled by 1/32768.
pub fn to_mono_i16(src: &[i16], channels: usize, dst: &mut [f32]) -> Result<()> {
    to_mono_impl(src, channels, dst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcm16_bytes_decode() {
        let bytes = [0x00, 0x80, 0xff, 0x7f, 0x00, 0x00, 0xff, 0xff, 0x00, 0x40];
        let out = pcm16le_to_vec(&bytes).unwrap();
        assert_eq!(out, vec![-1.0, 32767.0 / 32768.0, 0.0, -1.0 / 32768.0, 0.5]);
    }

    #[test]
    fn pcm16_odd_length_is_error() {
        let err = pcm16le_to_vec(&[1, 2, 3]).unwrap_err();
        assert!(err.to_string().contains("odd number of bytes (3)"), "{err}");
    }

    #[test]
    fn float_to_i16_rounding_and_saturation() {
        assert_eq!(f32_to_i16(1.0), 32767);
        assert_eq!(f32_to_i16(-1.0), -32768);
        assert_eq!(f32_to_i16(2.5), 32767);
        assert_eq!(f32_to_i16(-7.0), -32768);
        assert_eq!(f32_to_i16(f32::INFINITY), 32767);
        assert_eq!(f32_to_i16(f32::NEG_INFINITY), -32768);
        assert_eq!(f32_to_i16(f32::NAN), 0);
        assert_eq!(f32_to_i16(-f32::NAN), 0);
        // Ties to even: 0.5 LSB -> 0, 1.5 LSB -> 2, 2.5 LSB -> 2, -0.5 -> 0.
        assert_eq!(f32_to_i16(0.5 / 32768.0), 0);
        assert_eq!(f32_to_i16(1.5 / 32768.0), 2);
        assert_eq!(f32_to_i16(2.5 / 32768.0), 2);
        assert_eq!(f32_to_i16(-0.5 / 32768.0), 0);
        assert_eq!(f32_to_i16(-1.5 / 32768.0), -2);
        assert_eq!(f32_to_i16(0.6 / 32768.0), 1);
        assert_eq!(f32_to_i16(32766.5 / 32768.0), 32766);
    }

    #[test]
    fn float_to_i16_matches_round_ties_even_everywhere_in_range() {
        // Every quarter-LSB step over the whole range.
        let mut v = -33000.0f32;
        while v <= 33000.0 {
            let want = v.round_ties_even().clamp(-32768.0, 32767.0) as i16;
            assert_eq!(f32_to_i16(v / 32768.0), want, "v={v}");
            v += 0.25;
        }
    }

    #[test]
    fn pcm16_round_trip_is_exact() {
        let all: Vec<i16> = (i16::MIN..=i16::MAX).collect();
        let mut f = vec![0.0; all.len()];
        i16_to_f32(&all, &mut f).unwrap();
        let bytes = f32_to_pcm16le_vec(&f);
        let back: Vec<i16> = bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(back, all);
    }

    #[test]
    fn to_mono_channels() {
        let x = [1.0f32, 3.0, -2.0, 4.0];
        let mut out = [0.0; 2];
        to_mono_f32(&x, 2, &mut out).unwrap();
        assert_eq!(out, [2.0, 1.0]);
        for c in 1..=12usize {
            let x: Vec<f32> = (0..c * 5).map(|i| i as f32 * 0.25 - 3.0).collect();
            let mut out = vec![0.0; 5];
            to_mono_f32(&x, c, &mut out).unwrap();
            for (f, o) in out.iter().enumerate() {
                let want = x[f * c..(f + 1) * c].iter().sum::<f32>() / c as f32;
                assert!((o - want).abs() < 1e-6, "c={c} f={f} {o} {want}");
            }
        }
    }

    #[test]
    fn to_mono_int16_scales() {
        let x = [-32768i16, -32768, 16384, 0, 100, 101];
        let mut out = [0.0; 3];
        to_mono_i16(&x, 2, &mut out).unwrap();
        assert_eq!(out, [-1.0, 0.25, 100.5 / 32768.0]);
    }

    #[test]
    fn to_mono_errors() {
        let mut out = [0.0; 1];
        let e = to_mono_f32(&[0.0; 3], 2, &mut out).unwrap_err();
        assert!(e.to_string().contains("3 samples"), "{e}");
        let e = to_mono_f32(&[0.0; 2], 0, &mut out).unwrap_err();
        assert!(
            e.to_string().contains("channels must be >= 1, got 0"),
            "{e}"
        );
        let e = to_mono_f32(&[0.0; 4], 2, &mut out).unwrap_err();
        assert!(e.to_string().contains("output buffer"), "{e}");
    }
}
