//! Quantization parameters ([`QParams`]) from clip ranges and a profile, and the integer
//! requantization multipliers of a conv or gemm.
//!
//! Conventions (`real = (q - zero_point) · scale`):
//!
//! - Symmetric s8: `scale = t / 127`, zero point 0; the range is `[-127, 127]` (TensorRT's
//!   restricted range; -128 is never produced by rounding a value inside the range).
//! - Symmetric u8: `scale = t / 127`, zero point 128 (`q` in `[1, 255]` inside the range). No
//!   named profile asks for it; it is the symmetric scheme for a u8 × s8 dot product.
//! - Asymmetric: `scale = (hi - lo) / (qmax - qmin)`, zero point `round(qmin - lo / scale)`.
//!   The range contains zero, so the zero point is inside `[qmin, qmax]` and zero is exact.
//! - Power-of-two scales round the scale *up* to `2^k`, so the range still fits; an
//!   asymmetric zero point is then chosen among the integers that keep both ends inside.
//! - Degenerate ranges (all zeros) get scale 1; scales never go below `f32::MIN_POSITIVE`.
//!
//! With these rules quantize-then-dequantize of any value inside the range errs by at most
//! half a scale (tested below).

use super::profile::{Granularity, Profile, ScaleFormat, Symmetry, TensorScheme};
use super::range::{choose_range, min_max_range, ClipRange, RangeMethod};
use super::stats::{check_weight, TensorStats};
use super::QuantError;
use qcc_ir::requant::FixedPoint;
use qcc_ir::{DType, QParams};

/// The smallest power of two at least `scale`; a scale that is not finite and positive is
/// returned as is (QParams rejects it).
pub fn round_scale_up_to_power_of_two(scale: f32) -> f32 {
    if !(scale.is_finite() && scale > 0.0) {
        return scale;
    }
    let exponent = (scale as f64).log2().ceil() as i32;
    // log2 may land one off at the edge of a binade: fix it exactly.
    let mut power = 2f64.powi(exponent);
    if power < scale as f64 {
        power *= 2.0;
    } else if power / 2.0 >= scale as f64 {
        power /= 2.0;
    }
    power as f32
}

/// The exponent `k` when `x` is exactly `2^k`.
fn power_of_two_exponent(x: f32) -> Option<i32> {
    let x = x as f64;
    let bits = x.to_bits();
    let mantissa = bits & ((1u64 << 52) - 1);
    let exponent = ((bits >> 52) & 0x7ff) as i32;
    (x > 0.0 && x.is_finite() && mantissa == 0).then_some(exponent - 1023)
}

/// Scale and zero point of a per-tensor (or one channel's) quantization of `range`.
pub fn scale_and_zero_point(
    range: ClipRange,
    scheme: &TensorScheme,
    format: ScaleFormat,
) -> (f32, i32) {
    let (qmin, qmax) = scheme.dtype.range();
    let symmetric_zero_point = (qmin + qmax + 1) / 2; // 0 for s8, 128 for u8
    let (lo, hi) = (range.lo() as f64, range.hi() as f64);
    let raw_scale = match scheme.symmetry {
        Symmetry::Symmetric => range.max_abs() as f64 / (qmax - symmetric_zero_point) as f64,
        Symmetry::Asymmetric => (hi - lo) / (qmax - qmin) as f64,
    };
    let mut scale = if raw_scale > 0.0 {
        (raw_scale as f32).max(f32::MIN_POSITIVE)
    } else {
        1.0
    };
    if format == ScaleFormat::PowerOfTwo {
        scale = round_scale_up_to_power_of_two(scale);
    }
    let zero_point = match scheme.symmetry {
        Symmetry::Symmetric => symmetric_zero_point,
        Symmetry::Asymmetric => {
            let s = scale as f64;
            let ideal = qmin as f64 - lo / s;
            let mut zp = ideal.round_ties_even();
            if format == ScaleFormat::PowerOfTwo {
                // A wider scale leaves room: keep both ends inside when an integer allows it.
                let (low, high) = (
                    (qmin as f64 - lo / s).ceil(),
                    (qmax as f64 - hi / s).floor(),
                );
                if low <= high {
                    zp = zp.clamp(low, high);
                }
            }
            (zp as i32).clamp(qmin, qmax)
        }
    };
    (scale, zero_point)
}

/// Per-tensor parameters quantizing `range` by `scheme` with scales in `format`.
pub fn qparams_for_range(
    range: ClipRange,
    scheme: &TensorScheme,
    format: ScaleFormat,
) -> Result<QParams, QuantError> {
    let (scale, zero_point) = scale_and_zero_point(range, scheme, format);
    Ok(QParams::per_tensor(
        scheme.dtype.dtype(),
        scale,
        zero_point,
    )?)
}

/// Per-tensor parameters of an activation with calibration statistics `stats`.
pub fn activation_qparams(
    stats: &TensorStats,
    method: RangeMethod,
    profile: &Profile,
) -> Result<QParams, QuantError> {
    let scheme = &profile.activations;
    let range = choose_range(stats, method, scheme.symmetry, scheme.dtype.bits())?;
    qparams_for_range(range, scheme, profile.scale_format)
}

/// Parameters of a weight from its data (row-major, shape `dims`): per channel along `axis`
/// (0 for Conv and for Gemm with `transB`, 1 for Gemm without it and MatMul) when the profile
/// quantizes weights per channel, otherwise per tensor.
pub fn weight_qparams(
    data: &[f32],
    dims: &[usize],
    axis: usize,
    method: RangeMethod,
    profile: &Profile,
) -> Result<QParams, QuantError> {
    check_weight(data, dims, axis)?;
    let scheme = &profile.weights;
    let range_of = |slices: &mut dyn Iterator<Item = &[f32]>| -> Result<ClipRange, QuantError> {
        if method == RangeMethod::MinMax {
            // Only the extremes matter: no histogram (check_weight saw every value finite).
            // `+ 0.0` makes -0.0 +0.0, as TensorStats does.
            let min_max = slices.flatten().fold(None, |acc: Option<(f32, f32)>, &v| {
                let v = v + 0.0;
                Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
            });
            return Ok(min_max_range(min_max, scheme.symmetry));
        }
        let mut stats = TensorStats::new();
        for slice in slices {
            stats.observe(slice);
        }
        choose_range(&stats, method, scheme.symmetry, scheme.dtype.bits())
    };
    match scheme.granularity {
        Granularity::PerTensor => {
            let range = range_of(&mut std::iter::once(data))?;
            qparams_for_range(range, scheme, profile.scale_format)
        }
        Granularity::PerChannel => {
            let channels = dims[axis];
            let inner: usize = dims[axis + 1..].iter().product();
            let block = channels * inner;
            let mut scales = Vec::with_capacity(channels);
            let mut zero_points = Vec::with_capacity(channels);
            for c in 0..channels {
                // Channel c is the slice [c·inner, (c+1)·inner) of every outer block.
                let mut slices = (0..data.len().checked_div(block).unwrap_or(0))
                    .map(|outer| &data[outer * block + c * inner..outer * block + (c + 1) * inner]);
                let range = range_of(&mut slices)?;
                let (scale, zp) = scale_and_zero_point(range, scheme, profile.scale_format);
                scales.push(scale);
                zero_points.push(zp);
            }
            Ok(QParams::per_channel(
                scheme.dtype.dtype(),
                axis,
                scales,
                zero_points,
            )?)
        }
    }
}

fn per_tensor_scale(q: &QParams, what: &str) -> Result<f32, QuantError> {
    if q.is_per_tensor() {
        Ok(q.scales()[0])
    } else {
        Err(QuantError::Mismatch(format!(
            "the {what} must be quantized per tensor, found {q}"
        )))
    }
}

/// The int32 parameters of a conv or gemm bias: scale `s_x · s_w[c]`, zero point 0, per
/// channel along axis 0 when the weights are per channel.
pub fn bias_qparams(input: &QParams, weights: &QParams) -> Result<QParams, QuantError> {
    let input_scale = per_tensor_scale(input, "input")?;
    let scales: Vec<f32> = weights.scales().iter().map(|&s| input_scale * s).collect();
    let zero_points = vec![0; scales.len()];
    let axis = if weights.is_per_tensor() {
        None
    } else {
        Some(0)
    };
    Ok(QParams::new(DType::I32, axis, scales, zero_points)?)
}

/// The requantization multipliers `s_x · s_w[c] / s_y` of a conv or gemm, one per weight
/// channel (one for per-tensor weights), as fixed point; exact shifts when every scale is a
/// power of two.
pub fn requant_multipliers(
    input: &QParams,
    weights: &QParams,
    output: &QParams,
) -> Result<Vec<FixedPoint>, QuantError> {
    let input_scale = per_tensor_scale(input, "input")?;
    let output_scale = per_tensor_scale(output, "output")?;
    weights
        .scales()
        .iter()
        .enumerate()
        .map(|(channel, &weight_scale)| {
            let exponents = (
                power_of_two_exponent(input_scale),
                power_of_two_exponent(weight_scale),
                power_of_two_exponent(output_scale),
            );
            let fixed = match exponents {
                (Some(ex), Some(ew), Some(ey)) => FixedPoint::power_of_two(ey - ex - ew),
                _ => FixedPoint::from_real(
                    input_scale as f64 * weight_scale as f64 / output_scale as f64,
                ),
            };
            fixed.map_err(|source| QuantError::Requant { channel, source })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::profile::QuantType;
    use proptest::prelude::*;

    /// QuantizeLinear's rule: round half to even, add the zero point, saturate.
    fn quantize(x: f32, scale: f32, zero_point: i32, dtype: QuantType) -> i32 {
        let (lo, hi) = dtype.range();
        ((x / scale).round_ties_even() as i64 + zero_point as i64).clamp(lo as i64, hi as i64)
            as i32
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The minmax shortcut (no histogram) gives the parameters the statistics path gives,
        /// for every profile's weight scheme, per tensor and per channel.
        #[test]
        fn minmax_weights_without_a_histogram_match_the_statistics_path(
            values in prop::collection::vec(
                prop_oneof![Just(0.0f32), Just(-0.0f32), -3.0f32..3.0], 1..48),
            channels in 1usize..4,
        ) {
            let inner = values.len().div_ceil(channels);
            let mut data = values.clone();
            data.resize(channels * inner, 0.0);
            for profile in &Profile::all() {
                let dims = [channels, inner];
                let fast = weight_qparams(&data, &dims, 0, RangeMethod::MinMax, profile)
                    .expect("weights quantize");
                let scheme = &profile.weights;
                let slow = |slice: &[f32]| {
                    let mut stats = TensorStats::new();
                    stats.observe(slice);
                    let range =
                        choose_range(&stats, RangeMethod::MinMax, scheme.symmetry, 8).unwrap();
                    scale_and_zero_point(range, scheme, profile.scale_format)
                };
                let expected: Vec<(f32, i32)> = match scheme.granularity {
                    Granularity::PerTensor => vec![slow(&data)],
                    Granularity::PerChannel => data.chunks(inner).map(slow).collect(),
                };
                let got: Vec<(f32, i32)> = fast
                    .scales()
                    .iter()
                    .copied()
                    .zip(fast.zero_points().iter().copied())
                    .collect();
                prop_assert_eq!(got, expected, "{}", profile.name);
            }
        }
    }

    fn dequantize(q: i32, scale: f32, zero_point: i32) -> f32 {
        (q - zero_point) as f32 * scale
    }

    fn scheme(symmetry: Symmetry, dtype: QuantType) -> TensorScheme {
        TensorScheme {
            granularity: Granularity::PerTensor,
            symmetry,
            dtype,
        }
    }

    fn schemes() -> impl Strategy<Value = (TensorScheme, ScaleFormat)> {
        let symmetry = prop_oneof![Just(Symmetry::Symmetric), Just(Symmetry::Asymmetric)];
        let dtype = prop_oneof![Just(QuantType::I8), Just(QuantType::U8)];
        let format = prop_oneof![Just(ScaleFormat::Float32), Just(ScaleFormat::PowerOfTwo)];
        (symmetry, dtype, format).prop_map(|(s, d, f)| (scheme(s, d), f))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn round_trip_error_is_at_most_half_a_scale(
            (scheme, format) in schemes(),
            lo in -1.0f32..=0.0,
            hi in 0.0f32..=1.0,
            magnitude in prop_oneof![Just(1e-6f32), Just(1.0f32), Just(1e4f32)],
            samples in prop::collection::vec(0.0f32..=1.0, 32),
        ) {
            let range = ClipRange::new(lo * magnitude, hi * magnitude);
            let (scale, zp) = scale_and_zero_point(range, &scheme, format);
            let (qmin, qmax) = scheme.dtype.range();
            prop_assert!((qmin..=qmax).contains(&zp));
            prop_assert!(QParams::per_tensor(scheme.dtype.dtype(), scale, zp).is_ok());
            // Zero is exact.
            prop_assert_eq!(quantize(0.0, scale, zp, scheme.dtype), zp);
            let (a, b) = (range.lo(), range.hi());
            let points = samples.iter().map(|t| a + t * (b - a)).chain([a, b]);
            for x in points {
                let back = dequantize(quantize(x, scale, zp, scheme.dtype), scale, zp);
                // Half a scale, plus f32 rounding of x / scale and of the product.
                let bound = scale * 0.5 + 4.0 * f32::EPSILON * x.abs().max(scale);
                prop_assert!((back - x).abs() <= bound,
                    "{x} -> {back}: scale {scale}, zp {zp}, {scheme:?} {format:?}");
            }
        }

        #[test]
        fn power_of_two_scales_are_exact_powers_at_most_twice_the_float_scale(
            (scheme, _) in schemes(),
            t in 1e-6f32..1e6,
        ) {
            let range = ClipRange::new(-t * 0.3, t);
            let (float_scale, _) = scale_and_zero_point(range, &scheme, ScaleFormat::Float32);
            let (scale, _) = scale_and_zero_point(range, &scheme, ScaleFormat::PowerOfTwo);
            let k = power_of_two_exponent(scale);
            prop_assert!(k.is_some(), "{scale} is not a power of two");
            prop_assert!(scale >= float_scale && scale < 2.0 * float_scale,
                "{scale} vs {float_scale}");
        }
    }

    #[test]
    fn rounding_up_to_a_power_of_two() {
        assert_eq!(round_scale_up_to_power_of_two(0.25), 0.25);
        assert_eq!(round_scale_up_to_power_of_two(0.2500001), 0.5);
        assert_eq!(round_scale_up_to_power_of_two(0.13), 0.25);
        assert_eq!(round_scale_up_to_power_of_two(3.0), 4.0);
        assert_eq!(
            round_scale_up_to_power_of_two(f32::MIN_POSITIVE),
            f32::MIN_POSITIVE
        );
        assert_eq!(power_of_two_exponent(0.125), Some(-3));
        assert_eq!(power_of_two_exponent(0.3), None);
    }

    #[test]
    fn symmetric_zero_points_are_0_for_s8_and_128_for_u8() {
        let range = ClipRange::new(-2.0, 5.0);
        let s8 = scale_and_zero_point(
            range,
            &scheme(Symmetry::Symmetric, QuantType::I8),
            ScaleFormat::Float32,
        );
        assert_eq!(s8, (5.0 / 127.0, 0));
        let u8 = scale_and_zero_point(
            range,
            &scheme(Symmetry::Symmetric, QuantType::U8),
            ScaleFormat::Float32,
        );
        assert_eq!(u8, (5.0 / 127.0, 128));
        // Asymmetric u8 puts -2 at 0 and 5 at 255.
        let (scale, zp) = scale_and_zero_point(
            range,
            &scheme(Symmetry::Asymmetric, QuantType::U8),
            ScaleFormat::Float32,
        );
        assert_eq!(scale, 7.0 / 255.0);
        assert_eq!(zp, (2.0f64 / (7.0 / 255.0)).round() as i32);
    }

    #[test]
    fn degenerate_ranges_get_a_valid_scale() {
        for symmetry in [Symmetry::Symmetric, Symmetry::Asymmetric] {
            for dtype in [QuantType::I8, QuantType::U8] {
                let s = scheme(symmetry, dtype);
                let (scale, zp) =
                    scale_and_zero_point(ClipRange::new(0.0, 0.0), &s, ScaleFormat::Float32);
                assert_eq!(scale, 1.0);
                assert!(QParams::per_tensor(dtype.dtype(), scale, zp).is_ok());
                // A tiny range does not underflow to a zero scale.
                let (scale, _) =
                    scale_and_zero_point(ClipRange::new(0.0, 1e-44), &s, ScaleFormat::Float32);
                assert!(scale >= f32::MIN_POSITIVE);
            }
        }
        // A constant tensor: the range grows to include zero.
        let mut stats = TensorStats::new();
        stats.observe(&[5.0; 16]);
        let q = activation_qparams(&stats, RangeMethod::MinMax, &Profile::X86_VNNI).unwrap();
        assert_eq!((q.scales()[0], q.zero_points()[0]), (5.0 / 255.0, 0));
        // Nothing observed at all.
        let q =
            activation_qparams(&TensorStats::new(), RangeMethod::Kl, &Profile::TENSORRT).unwrap();
        assert_eq!((q.scales()[0], q.zero_points()[0]), (1.0, 0));
    }

    #[test]
    fn activation_parameters_follow_the_profile() {
        let mut stats = TensorStats::new();
        stats.observe(&[-1.0, 0.5, 3.0]);
        let vnni = activation_qparams(&stats, RangeMethod::MinMax, &Profile::X86_VNNI).unwrap();
        assert_eq!(vnni.dtype(), DType::U8);
        assert_eq!(vnni.scales(), &[4.0 / 255.0]);
        assert_eq!(vnni.zero_points(), &[64]); // 1 / (4/255) = 63.75
        let tvm = activation_qparams(&stats, RangeMethod::MinMax, &Profile::TVM).unwrap();
        assert_eq!(
            (tvm.dtype(), tvm.scales(), tvm.zero_points()),
            (DType::I8, &[1.0f32 / 32.0][..], &[0][..])
        );
        let trt = activation_qparams(&stats, RangeMethod::MinMax, &Profile::TENSORRT).unwrap();
        assert_eq!(trt.scales(), &[3.0 / 127.0]);
    }

    #[test]
    fn per_channel_weights_along_the_axis() {
        // Conv weight [3 out, 1 in, 2, 2]; channel 1 is all zeros.
        let data = [
            0.5, -1.0, 0.25, 0.0, // channel 0: max |w| 1
            0.0, 0.0, 0.0, 0.0, // channel 1
            2.0, -0.5, 1.0, 1.5, // channel 2: max |w| 2
        ];
        let dims = [3, 1, 2, 2];
        let q = weight_qparams(&data, &dims, 0, RangeMethod::MinMax, &Profile::X86_VNNI).unwrap();
        assert_eq!(q.axis(), Some(0));
        assert_eq!(q.scales(), &[1.0 / 127.0, 1.0, 2.0 / 127.0]);
        assert_eq!(q.zero_points(), &[0, 0, 0]);
        // fbgemm: asymmetric per channel.
        let q = weight_qparams(&data, &dims, 0, RangeMethod::MinMax, &Profile::FBGEMM).unwrap();
        assert_eq!(q.scales()[2], 2.5 / 255.0);
        assert_eq!(
            q.zero_points()[2],
            (-128.0f64 + 0.5 / (2.5 / 255.0)).round() as i32
        );
        // Gemm B without transB is [K, N]: the output channel is axis 1.
        let b = [1.0, -4.0, 2.0, 0.5]; // [[1, -4], [2, 0.5]]
        let q = weight_qparams(&b, &[2, 2], 1, RangeMethod::MinMax, &Profile::TENSORRT).unwrap();
        assert_eq!(q.scales(), &[2.0 / 127.0, 4.0 / 127.0]);
        // tvm: one power-of-two scale for the whole weight.
        let q = weight_qparams(&data, &dims, 0, RangeMethod::MinMax, &Profile::TVM).unwrap();
        assert_eq!((q.axis(), q.scales()), (None, &[1.0f32 / 32.0][..]));
        assert!(matches!(
            weight_qparams(&data, &[3, 5], 0, RangeMethod::MinMax, &Profile::TVM),
            Err(QuantError::ShapeMismatch { .. })
        ));
    }

    #[test]
    fn clipping_methods_apply_per_channel() {
        // Channel 0 has one outlier among 4000 values; channel 1 does not.
        let mut data: Vec<f32> = (0..4000).map(|i| (i as f32 / 4000.0) * 2.0 - 1.0).collect();
        data[17] = 40.0;
        data.extend((0..4000).map(|i| (i as f32 / 4000.0) * 2.0 - 1.0));
        let q = weight_qparams(
            &data,
            &[2, 4000],
            0,
            RangeMethod::Percentile(99.9),
            &Profile::TENSORRT,
        )
        .unwrap();
        assert!(q.scales()[0] < 1.1 / 127.0, "{:?}", q.scales());
        assert!(
            (q.scales()[1] - 1.0 / 127.0).abs() < 0.01 / 127.0,
            "{:?}",
            q.scales()
        );
    }

    #[test]
    fn requantization_multipliers_per_output_channel() {
        let x = QParams::per_tensor(DType::U8, 0.02, 128).unwrap();
        let w = QParams::per_channel(DType::I8, 0, vec![0.001, 0.003], vec![0, 0]).unwrap();
        let y = QParams::per_tensor(DType::U8, 0.05, 0).unwrap();
        let m = requant_multipliers(&x, &w, &y).unwrap();
        assert_eq!(m.len(), 2);
        for (fp, ws) in m.iter().zip([0.001f32, 0.003]) {
            let real = 0.02f32 as f64 * ws as f64 / 0.05f32 as f64;
            assert!(
                (fp.to_real() - real).abs() <= real * 1e-9,
                "{fp:?} vs {real}"
            );
        }
        // Powers of two: an exact shift, 2^-3 · 2^-7 / 2^-4 = 2^-6.
        let x = QParams::per_tensor(DType::I8, 0.125, 0).unwrap();
        let w = QParams::per_tensor(DType::I8, 2f32.powi(-7), 0).unwrap();
        let y = QParams::per_tensor(DType::I8, 0.0625, 0).unwrap();
        let m = requant_multipliers(&x, &w, &y).unwrap();
        assert_eq!(m, vec![FixedPoint::power_of_two(6).unwrap()]);
        assert_eq!((m[0].multiplier(), m[0].shift()), (1 << 30, 36));
        // A ratio no fixed point can hold names the channel.
        let w = QParams::per_channel(DType::I8, 0, vec![1.0, 1e12], vec![0, 0]).unwrap();
        let y = QParams::per_tensor(DType::I8, 1e-3, 0).unwrap();
        assert!(matches!(
            requant_multipliers(&x, &w, &y),
            Err(QuantError::Requant { channel: 1, .. })
        ));
        // Per-channel activations are refused.
        assert!(matches!(
            requant_multipliers(&w, &w, &y),
            Err(QuantError::Mismatch(_))
        ));
    }

    #[test]
    fn bias_scale_is_input_times_weight_scale() {
        let x = QParams::per_tensor(DType::U8, 0.5, 3).unwrap();
        let w = QParams::per_channel(DType::I8, 0, vec![0.25, 0.125], vec![0, 0]).unwrap();
        let b = bias_qparams(&x, &w).unwrap();
        assert_eq!((b.dtype(), b.axis()), (DType::I32, Some(0)));
        assert_eq!(
            (b.scales(), b.zero_points()),
            (&[0.125f32, 0.0625][..], &[0, 0][..])
        );
    }
}
