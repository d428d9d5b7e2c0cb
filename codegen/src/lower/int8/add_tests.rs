//! The QuantizedAdd kernel, JIT-compiled, bit for bit against the interpreter's
//! `Op::QuantizedAdd` and the op's doc formula: random lengths (vector steps and tails), zero
//! points 0, 255 and random, multipliers from `add_multipliers` over scale ratios from tiny to
//! large (saturating), and fused clamps. Hand-made multipliers the op's scales never give
//! (shift 0, the largest ones) and clamps wider than u8 are checked against the formula.

use qcc_ir::eval::eval_op;
use qcc_ir::op::add_multipliers;
use qcc_ir::quant::QParams;
use qcc_ir::requant::AddMultipliers;
use qcc_ir::{DType, Op, Tensor, TensorType};

use super::super::tests::{vnni, Bytes};
use super::lower_qadd;
use crate::model::run_node_bytes;

/// The op's doc formula, one element: requantized sum, saturated to u8, then clamped.
fn reference(a: u8, b: u8, zp: [i32; 3], m: AddMultipliers, clamp: (i32, i32)) -> u8 {
    let sum = m.apply(i32::from(a) - zp[0], i32::from(b) - zp[1]);
    let q = (i64::from(sum) + i64::from(zp[2])).clamp(0, 255) as i32;
    q.max(clamp.0).min(clamp.1) as u8
}

fn u8_tensor(values: &[u8]) -> Tensor {
    Tensor::from_le_bytes(&TensorType::new(DType::U8, vec![values.len()]), values)
        .expect("u8 bytes")
}

fn zero_point_of(rng: &mut Bytes) -> i32 {
    match rng.next() % 4 {
        0 => 0,
        1 => 255,
        _ => (rng.next() % 256) as i32,
    }
}

fn scale_of(rng: &mut Bytes) -> f32 {
    let unit = (rng.next() >> 40) as f32 / (1u64 << 24) as f32;
    (0.05 + unit) * 2f32.powi((rng.next() % 12) as i32 - 6)
}

#[test]
fn qadd_matches_the_formula_and_the_interpreter() {
    let target = vnni();
    let mut rng = Bytes(0x5851_f42d_4c95_7f2d);
    let mut interpreter_cases = 0;
    for case in 0..48 {
        let n = match rng.next() % 4 {
            0 => (rng.next() % 17) as usize,
            _ => (rng.next() % 150) as usize,
        };
        let zp = [0; 3].map(|_| zero_point_of(&mut rng));
        let qa = QParams::per_tensor(DType::U8, scale_of(&mut rng), zp[0]).expect("a");
        let qb = QParams::per_tensor(DType::U8, scale_of(&mut rng), zp[1]).expect("b");
        let qy = QParams::per_tensor(DType::U8, scale_of(&mut rng), zp[2]).expect("y");
        let Ok(m) = add_multipliers(&qa, &qb, &qy) else {
            continue;
        };
        let clamp = match rng.next() % 4 {
            0 => None,
            1 => Some((zp[2], 255)),
            2 => Some((zp[2].min(200), zp[2].min(200) + 40)),
            _ => Some((-300, 300)),
        };
        let a: Vec<u8> = (0..n).map(|_| rng.u8()).collect();
        let b: Vec<u8> = (0..n).map(|_| rng.u8()).collect();
        let bounds = clamp.unwrap_or((0, 255));
        let lowering =
            lower_qadd(target.arch(), n, zp[0], zp[1], zp[2], m, bounds).expect("lowers");
        let got = run_node_bytes(&target, &lowering, &[&a, &b], &[n]).expect("runs");
        let want: Vec<u8> = (0..n)
            .map(|i| reference(a[i], b[i], zp, m, bounds))
            .collect();
        assert_eq!(
            got[0], want,
            "case {case}: n {n}, zp {zp:?}, {m:?}, clamp {clamp:?}"
        );
        let op = Op::QuantizedAdd {
            a: qa,
            b: qb,
            y: qy,
            clamp,
        };
        let legal_clamp = clamp.is_none_or(|(lo, hi)| lo >= 0 && hi <= 255);
        match eval_op(&op, &[&u8_tensor(&a), &u8_tensor(&b)]) {
            Ok(mut outputs) => {
                let interpreted = outputs.remove(0).to_le_bytes();
                assert_eq!(got[0], interpreted, "case {case}: interpreter");
                interpreter_cases += 1;
            }
            // The op only takes clamps inside the output type; the kernel intersects.
            Err(e) => assert!(!legal_clamp, "case {case}: interpreter failed: {e}"),
        }
    }
    assert!(
        interpreter_cases >= 24,
        "only {interpreter_cases} interpreter cases"
    );
}

#[test]
fn qadd_extremes_with_hand_multipliers() {
    let target = vnni();
    // Shift 0 (no rounding term), the largest multipliers, and a one-sided zero multiplier.
    let multipliers = [
        AddMultipliers {
            a: 1,
            b: 1,
            shift: 0,
        },
        AddMultipliers {
            a: 32767,
            b: 32767,
            shift: 15,
        },
        AddMultipliers {
            a: 32767,
            b: 1,
            shift: 30,
        },
        AddMultipliers {
            a: 0,
            b: 16384,
            shift: 14,
        },
        AddMultipliers {
            a: 3,
            b: 5,
            shift: 2,
        },
    ];
    let values: Vec<u8> = [0u8, 255, 1, 254, 127, 128].repeat(4);
    let a: Vec<u8> = values.clone();
    let b: Vec<u8> = values.iter().rev().copied().collect();
    let n = a.len();
    for m in multipliers {
        for zp in [[0, 0, 0], [255, 255, 255], [0, 255, 128], [255, 0, 3]] {
            for clamp in [(0, 255), (zp[2], 255), (10, 20), (-5, 400)] {
                let lowering =
                    lower_qadd(target.arch(), n, zp[0], zp[1], zp[2], m, clamp).expect("lowers");
                let got = run_node_bytes(&target, &lowering, &[&a, &b], &[n]).expect("runs");
                let want: Vec<u8> = (0..n)
                    .map(|i| reference(a[i], b[i], zp, m, clamp))
                    .collect();
                assert_eq!(got[0], want, "{m:?}, zp {zp:?}, clamp {clamp:?}");
            }
        }
    }
}

#[test]
fn qadd_bad_parameters_are_errors() {
    let arch = vnni().arch();
    let m = AddMultipliers {
        a: 1,
        b: 1,
        shift: 1,
    };
    assert!(lower_qadd(arch, 8, 256, 0, 0, m, (0, 255)).is_err());
    assert!(lower_qadd(arch, 8, 0, -1, 0, m, (0, 255)).is_err());
    assert!(lower_qadd(arch, 8, 0, 0, 0, m, (300, 400)).is_err());
    let big = AddMultipliers {
        a: 1 << 15,
        b: 1,
        shift: 1,
    };
    assert!(lower_qadd(arch, 8, 0, 0, 0, big, (0, 255)).is_err());
    let shift = AddMultipliers {
        a: 1,
        b: 1,
        shift: 31,
    };
    assert!(lower_qadd(arch, 8, 0, 0, 0, shift, (0, 255)).is_err());
}
