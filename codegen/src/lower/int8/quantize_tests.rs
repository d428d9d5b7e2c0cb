//! QuantizeLinear / DequantizeLinear kernels, JIT-compiled, against the interpreter's ops on
//! u8 parameters, bit for bit: random lengths (vector steps and tails), random scales, zero
//! points 0, 255 and random, and the awkward floats (ties, ±0, ±inf, NaN, huge, subnormal).

use qcc_ir::eval::eval_op;
use qcc_ir::quant::QParams;
use qcc_ir::{DType, Op, Tensor, TensorType};

use super::super::tests::{vnni, Bytes};
use super::{lower_dequantize, lower_quantize};
use crate::model::run_node_bytes;

fn u8_tensor(values: &[u8]) -> Tensor {
    Tensor::from_le_bytes(&TensorType::new(DType::U8, vec![values.len()]), values)
        .expect("u8 bytes")
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A float the quantizer must get right: mostly moderate multiples of the scale (ties
/// included), sometimes an extreme.
fn awkward(rng: &mut Bytes, scale: f32) -> f32 {
    let pick = rng.next() % 16;
    let unit = (rng.next() >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
    match pick {
        0 => f32::NAN,
        1 => f32::INFINITY,
        2 => f32::NEG_INFINITY,
        3 => f32::MAX,
        4 => -f32::MAX,
        5 => 3.0e9 * (unit - 0.5),
        6 => 0.0,
        7 => -0.0,
        8 => f32::from_bits(1 + (rng.next() as u32 & 0x7f_ffff)),
        // Exact ties k + 0.5 (exact when the scale is a power of two).
        9 | 10 => ((rng.next() % 600) as f32 - 300.0 + 0.5) * scale,
        _ => (unit - 0.5) * 600.0 * scale,
    }
}

fn scale_of(rng: &mut Bytes) -> f32 {
    match rng.next() % 4 {
        // Powers of two: the ties above are exact.
        0 => 2f32.powi((rng.next() % 20) as i32 - 12),
        _ => {
            let unit = (rng.next() >> 40) as f32 / (1u64 << 24) as f32;
            (1e-4 + unit) * 2f32.powi((rng.next() % 10) as i32 - 5)
        }
    }
}

fn zero_point_of(rng: &mut Bytes) -> i32 {
    match rng.next() % 4 {
        0 => 0,
        1 => 255,
        _ => (rng.next() % 256) as i32,
    }
}

fn length_of(rng: &mut Bytes) -> usize {
    match rng.next() % 4 {
        0 => (rng.next() % 16) as usize,
        _ => (rng.next() % 200) as usize,
    }
}

#[test]
fn quantize_matches_the_interpreter() {
    let target = vnni();
    let mut rng = Bytes(0x9e37_79b9_7f4a_7c15);
    for case in 0..40 {
        let n = length_of(&mut rng);
        let scale = scale_of(&mut rng);
        let zp = zero_point_of(&mut rng);
        let x: Vec<f32> = (0..n).map(|_| awkward(&mut rng, scale)).collect();
        let params = QParams::per_tensor(DType::U8, scale, zp).expect("valid parameters");
        let want = eval_op(
            &Op::QuantizeLinear(params),
            &[&Tensor::from_f32(&[n], x.clone())],
        )
        .expect("interpreter")
        .remove(0)
        .to_le_bytes();
        let lowering = lower_quantize(target.arch(), n, scale, zp).expect("lowers");
        let got = run_node_bytes(&target, &lowering, &[&f32_bytes(&x)], &[n]).expect("runs");
        for i in 0..n {
            assert_eq!(
                got[0][i], want[i],
                "case {case}: n {n}, scale {scale:e}, zp {zp}: x[{i}] = {:e}",
                x[i]
            );
        }
    }
}

#[test]
fn quantize_extremes_saturate_and_nan_is_the_zero_point() {
    let target = vnni();
    // 16 lanes of extremes then a tail of the same values: both paths.
    let extremes = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -f32::MAX,
        1e10,
        -1e10,
        2.5,
        3.5,
        -2.5,
        -0.5,
        0.5,
        127.5,
        128.5,
        -0.0,
        4.0e9,
    ];
    let x: Vec<f32> = extremes.iter().chain(&extremes[..7]).copied().collect();
    for zp in [0, 128, 255] {
        let lowering = lower_quantize(target.arch(), x.len(), 1.0, zp).expect("lowers");
        let got = run_node_bytes(&target, &lowering, &[&f32_bytes(&x)], &[x.len()]).expect("runs");
        let z = zp as u8;
        let sat = |v: i32| (v + zp).clamp(0, 255) as u8;
        let want: Vec<u8> = vec![
            z,
            255,
            0,
            255,
            0,
            255,
            0,
            sat(2),
            sat(4),
            sat(-2),
            z,
            z,
            sat(128),
            sat(128),
            z,
            255,
        ];
        assert_eq!(&got[0][..16], &want[..], "zp {zp}: vector lanes");
        assert_eq!(&got[0][16..], &want[..7], "zp {zp}: scalar tail");
    }
}

#[test]
fn dequantize_matches_the_interpreter() {
    let target = vnni();
    let mut rng = Bytes(0x2545_f491_4f6c_dd1d);
    for case in 0..40 {
        let n = if case == 0 { 256 } else { length_of(&mut rng) };
        let scale = scale_of(&mut rng);
        let zp = zero_point_of(&mut rng);
        let x: Vec<u8> = if case == 0 {
            (0..=255).collect()
        } else {
            (0..n).map(|_| rng.u8()).collect()
        };
        let params = QParams::per_tensor(DType::U8, scale, zp).expect("valid parameters");
        let want = eval_op(&Op::DequantizeLinear(params), &[&u8_tensor(&x)])
            .expect("interpreter")
            .remove(0)
            .to_le_bytes();
        let lowering = lower_dequantize(target.arch(), n, scale, zp).expect("lowers");
        let got = run_node_bytes(&target, &lowering, &[&x], &[4 * n]).expect("runs");
        assert_eq!(got[0], want, "case {case}: n {n}, scale {scale:e}, zp {zp}");
    }
}

#[test]
fn bad_parameters_are_errors() {
    let arch = vnni().arch();
    assert!(lower_quantize(arch, 4, 1.0, 256).is_err());
    assert!(lower_quantize(arch, 4, 1.0, -1).is_err());
    assert!(lower_quantize(arch, 4, 0.0, 0).is_err());
    assert!(lower_quantize(arch, 4, f32::NAN, 0).is_err());
    assert!(lower_dequantize(arch, 4, 1.0, 300).is_err());
    assert!(lower_dequantize(arch, 4, f32::INFINITY, 0).is_err());
    // Empty tensors need no call.
    assert!(lower_quantize(arch, 0, 1.0, 0)
        .expect("lowers")
        .calls
        .is_empty());
}
