//! QuantizedAdd and QuantizedGlobalAveragePool against scalar loops that apply the formulas
//! of their doc comments written out here (i64 arithmetic, the rounding term, zero point,
//! saturation, clamp), and the operand checks inference makes.

use super::super::test_util::*;
use super::tests::{ints, random_clamp, tensor, tt, Rng};
use crate::infer::{infer_types, MAX_POOL_WINDOW};
use crate::op::Op;
use crate::quant::QParams;
use crate::requant::{AddMultipliers, FixedPoint};
use crate::DType;

fn type_range(dtype: DType) -> (i64, i64) {
    if dtype == DType::U8 {
        (0, 255)
    } else {
        (-128, 127)
    }
}

/// `clamp(sat_y(zp_y + scaled))`, the output step both ops document.
fn place(scaled: i64, y: &QParams, clamp: Option<(i32, i32)>) -> i32 {
    let (lo, hi) = type_range(y.dtype());
    let (lo, hi) = clamp.map_or((lo, hi), |(a, b)| (lo.max(a as i64), hi.min(b as i64)));
    (y.zero_points()[0] as i64 + scaled).clamp(lo, hi) as i32
}

/// One QuantizedAdd element as the op documents it.
fn reference_add(a: i32, b: i32, qa: &QParams, qb: &QParams, qy: &QParams) -> i64 {
    let s_y = qy.scales()[0] as f64;
    let m = AddMultipliers::from_ratios(qa.scales()[0] as f64 / s_y, qb.scales()[0] as f64 / s_y)
        .unwrap();
    let (da, db) = (
        (a - qa.zero_points()[0]) as i64,
        (b - qb.zero_points()[0]) as i64,
    );
    let round = if m.shift == 0 {
        0
    } else {
        1i64 << (m.shift - 1)
    };
    (m.a as i64 * da + m.b as i64 * db + round) >> m.shift
}

/// Per-tensor parameters of `dtype` with a random scale and a zero point that is one of the
/// type's extremes a third of the time.
fn random_params(rng: &mut Rng, dtype: DType) -> QParams {
    QParams::per_tensor(dtype, rng.scale(), rng.value(dtype)).unwrap()
}

#[test]
fn quantized_add_matches_scalar_reference_on_random_cases() {
    let mut rng = Rng(0x853c_49e6_748f_ea9b);
    let (mut saturated, mut clamped) = (0, 0);
    for case in 0..400 {
        let dims: Vec<usize> = (0..1 + rng.below(4)).map(|_| 1 + rng.below(5)).collect();
        let (at, bt, yt) = (rng.dtype(), rng.dtype(), rng.dtype());
        let (qa, qb, qy) = (
            random_params(&mut rng, at),
            random_params(&mut rng, bt),
            random_params(&mut rng, yt),
        );
        // Nearby scales a third of the time, so that not every output saturates.
        let qy = if rng.below(3) == 0 {
            QParams::per_tensor(yt, qa.scales()[0] * 1.5, qy.zero_points()[0]).unwrap()
        } else {
            qy
        };
        let clamp = random_clamp(&mut rng, &qy);
        let n: usize = dims.iter().product();
        let a: Vec<i32> = (0..n).map(|_| rng.value(at)).collect();
        let b: Vec<i32> = (0..n).map(|_| rng.value(bt)).collect();
        let (lo, hi) = type_range(yt);
        let want: Vec<i32> = a
            .iter()
            .zip(&b)
            .map(|(&x, &y)| {
                let scaled = reference_add(x, y, &qa, &qb, &qy);
                let unclamped = qy.zero_points()[0] as i64 + scaled;
                saturated += (unclamped < lo || unclamped > hi) as usize;
                let sat = unclamped.clamp(lo, hi);
                clamped += clamp.is_some_and(|(l, h)| sat < l as i64 || sat > h as i64) as usize;
                place(scaled, &qy, clamp)
            })
            .collect();
        let op = Op::QuantizedAdd {
            a: qa,
            b: qb,
            y: qy,
            clamp,
        };
        let y = run1(&op, &[&tensor(at, &dims, &a), &tensor(bt, &dims, &b)]);
        assert_eq!(y.dtype(), yt, "case {case}: {op:?}");
        assert_eq!(y.dims(), &dims[..], "case {case}: {op:?}");
        assert_eq!(ints(&y), want, "case {case}: {op:?}");
    }
    // The cases reach both the saturation and the clamp.
    assert!(saturated > 100 && clamped > 100, "{saturated} {clamped}");
}

#[test]
fn quantized_add_rounds_the_sum_once_half_toward_positive_infinity() {
    // r_a = r_b = 0.5: (da + db) / 2, one rounding of the exact sum, ties going up (rounding
    // each scaled input on its own would give round(0.5) + round(0.5) = 2 for the last pair).
    let q = |zp| QParams::per_tensor(DType::I8, 0.5, zp).unwrap();
    let op = Op::QuantizedAdd {
        a: q(0),
        b: q(0),
        y: QParams::per_tensor(DType::I8, 1.0, 0).unwrap(),
        clamp: None,
    };
    let a = i8s(&[6], &[1, 0, -1, 2, -2, 1]);
    let b = i8s(&[6], &[0, -1, -2, 1, -1, 1]);
    // sums 1, −1, −3, 3, −3, 2 → halves 0.5, −0.5, −1.5, 1.5, −1.5, 1 → 1, 0, −1, 2, −1, 1.
    assert_eq!(run1(&op, &[&a, &b]), i8s(&[6], &[1, 0, -1, 2, -1, 1]));
}

#[test]
fn quantized_add_with_shift_zero_has_no_rounding_term() {
    // r_a = 2^14 needs the whole 15-bit range at shift 0; r_b = 1 is then exact.
    let qa = QParams::per_tensor(DType::U8, 16384.0, 200).unwrap();
    let qb = QParams::per_tensor(DType::I8, 1.0, -128).unwrap();
    let qy = QParams::per_tensor(DType::U8, 1.0, 0).unwrap();
    let m = crate::op::add_multipliers(&qa, &qb, &qy).unwrap();
    assert_eq!(
        m,
        AddMultipliers {
            a: 16384,
            b: 1,
            shift: 0
        }
    );
    let op = Op::QuantizedAdd {
        a: qa,
        b: qb,
        y: qy,
        clamp: None,
    };
    let a = u8s(&[5], &[200, 200, 200, 201, 199]);
    let b = i8s(&[5], &[-128, -1, 127, -128, 127]);
    // da = 0: q = db exactly (0, 127, 255); da = ±1 adds ±16384: saturates.
    assert_eq!(run1(&op, &[&a, &b]), u8s(&[5], &[0, 127, 255, 255, 0]));
}

#[test]
fn quantized_add_saturates_and_clamps_at_the_extremes() {
    // Zero points at the ends of their ranges make |a − zp| = 255.
    let qa = QParams::per_tensor(DType::U8, 1.0, 255).unwrap();
    let qb = QParams::per_tensor(DType::I8, 1.0, 127).unwrap();
    let a = u8s(&[3], &[0, 255, 0]);
    let b = i8s(&[3], &[-128, 127, 127]);
    // Sums −510, 0, −255 with s_y = 2: −255, 0, −127.5 → −127 (half up).
    let op = |yt, zp, clamp| Op::QuantizedAdd {
        a: qa.clone(),
        b: qb.clone(),
        y: QParams::per_tensor(yt, 2.0, zp).unwrap(),
        clamp,
    };
    assert_eq!(
        run1(&op(DType::I8, 127, None), &[&a, &b]),
        i8s(&[3], &[-128, 127, 0])
    );
    assert_eq!(
        run1(&op(DType::U8, 0, None), &[&a, &b]),
        u8s(&[3], &[0, 0, 0])
    );
    assert_eq!(
        run1(&op(DType::U8, 255, None), &[&a, &b]),
        u8s(&[3], &[0, 255, 128])
    );
    // A fused ReLU6-like clamp bounds the result from both sides.
    assert_eq!(
        run1(&op(DType::I8, -10, Some((-10, -5))), &[&a, &b]),
        i8s(&[3], &[-10, -10, -10])
    );
    assert_eq!(
        run1(&op(DType::I8, 127, Some((100, 120))), &[&a, &b]),
        i8s(&[3], &[100, 120, 100])
    );
}

#[test]
fn quantized_global_average_pool_matches_scalar_reference_on_random_cases() {
    let mut rng = Rng(0xda94_2042_e4dd_58b5);
    let mut saturated = 0;
    for case in 0..300 {
        let rank = 3 + rng.below(3);
        let dims: Vec<usize> = (0..rank)
            .map(|d| {
                if d < 2 {
                    1 + rng.below(3)
                } else {
                    1 + rng.below(6)
                }
            })
            .collect();
        let (xt, yt) = (rng.dtype(), rng.dtype());
        let qx = random_params(&mut rng, xt);
        let qy = if rng.below(2) == 0 {
            random_params(&mut rng, yt)
        } else {
            QParams::per_tensor(yt, qx.scales()[0] * 1.25, rng.value(yt)).unwrap()
        };
        let x: Vec<i32> = (0..dims.iter().product()).map(|_| rng.value(xt)).collect();
        let window: usize = dims[2..].iter().product();
        let m =
            FixedPoint::from_real(qx.scales()[0] as f64 / (qy.scales()[0] as f64 * window as f64))
                .unwrap();
        let (lo, hi) = type_range(yt);
        let want: Vec<i32> = x
            .chunks(window)
            .map(|plane| {
                let sum: i64 = plane
                    .iter()
                    .map(|&v| (v - qx.zero_points()[0]) as i64)
                    .sum();
                let scaled = m.apply(sum as i32);
                let unclamped = qy.zero_points()[0] as i64 + scaled;
                saturated += (unclamped < lo || unclamped > hi) as usize;
                place(scaled, &qy, None)
            })
            .collect();
        let op = Op::QuantizedGlobalAveragePool { x: qx, y: qy };
        let y = run1(&op, &[&tensor(xt, &dims, &x)]);
        let mut out_dims = dims[..2].to_vec();
        out_dims.resize(rank, 1);
        assert_eq!(y.dtype(), yt, "case {case}: {op:?}");
        assert_eq!(y.dims(), &out_dims[..], "case {case}: {op:?}");
        assert_eq!(ints(&y), want, "case {case}: {op:?}");
    }
    assert!(saturated > 20, "{saturated}");
}

#[test]
fn quantized_global_average_pool_rounds_the_mean_half_up_and_saturates() {
    // s_x = s_y, window 4: M = 1/4 exactly; planes sum to 2, 6 and 1020.
    let op = Op::QuantizedGlobalAveragePool {
        x: QParams::per_tensor(DType::U8, 0.5, 0).unwrap(),
        y: QParams::per_tensor(DType::I8, 0.5, -1).unwrap(),
    };
    let x = u8s(&[1, 3, 2, 2], &[1, 1, 0, 0, 2, 2, 1, 1, 255, 255, 255, 255]);
    // 2/4 = 0.5 → 1; 6/4 = 1.5 → 2; 1020/4 = 255 → 254 saturates to 127.
    assert_eq!(run1(&op, &[&x]), i8s(&[1, 3, 1, 1], &[0, 1, 127]));
    let op = Op::QuantizedGlobalAveragePool {
        x: QParams::per_tensor(DType::I8, 1.0, 127).unwrap(),
        y: QParams::per_tensor(DType::U8, 1.0, 0).unwrap(),
    };
    let x = i8s(&[2, 1, 2], &[-128, -128, 127, 126]);
    // Means −255 (saturates to 0) and −0.5 → 0 (half up).
    assert_eq!(run1(&op, &[&x]), u8s(&[2, 1, 1], &[0, 0]));
}

#[test]
fn inference_checks_the_quantized_add_operands() {
    let u8q = |s: f32, zp| QParams::per_tensor(DType::U8, s, zp).unwrap();
    let i8q = |s: f32, zp| QParams::per_tensor(DType::I8, s, zp).unwrap();
    let add = |a: QParams, b: QParams, y: QParams, clamp| Op::QuantizedAdd { a, b, y, clamp };
    let (ua, ib) = (tt(DType::U8, &[1, 4, 3, 3]), tt(DType::I8, &[1, 4, 3, 3]));
    let good = add(u8q(0.1, 0), i8q(0.2, 3), i8q(0.3, 0), Some((0, 127)));
    assert_eq!(
        infer_types(&good, &[&ua, &ib]).unwrap(),
        vec![tt(DType::I8, &[1, 4, 3, 3])]
    );
    let rejected = |op: &Op, inputs: &[&crate::TensorType], why: &str, says: &str| {
        let err = infer_types(op, inputs).expect_err(why);
        assert!(err.contains(says), "{why}: {err:?} does not say {says:?}");
    };
    rejected(
        &good,
        &[&ua, &tt(DType::I8, &[1, 4, 1, 1])],
        "broadcasting dims",
        "does not broadcast",
    );
    rejected(
        &good,
        &[&ua, &tt(DType::I8, &[1, 4, 3])],
        "another rank",
        "equal dims",
    );
    rejected(
        &good,
        &[&ib, &ib],
        "a not of its parameters' type",
        "a is i8",
    );
    rejected(
        &good,
        &[&ua, &ua],
        "b not of its parameters' type",
        "b is u8",
    );
    rejected(
        &good,
        &[&tt(DType::F32, &[1, 4, 3, 3]), &ib],
        "f32 a",
        "i8 or u8",
    );
    let per_channel = QParams::per_channel(DType::U8, 1, vec![0.1; 4], vec![0; 4]).unwrap();
    rejected(
        &add(per_channel.clone(), i8q(0.2, 3), i8q(0.3, 0), None),
        &[&ua, &ib],
        "per-channel a",
        "per tensor",
    );
    let per_channel_i8 = QParams::per_channel(DType::I8, 1, vec![0.1; 4], vec![0; 4]).unwrap();
    rejected(
        &add(u8q(0.1, 0), per_channel_i8.clone(), i8q(0.3, 0), None),
        &[&ua, &ib],
        "per-channel b",
        "per tensor",
    );
    rejected(
        &add(u8q(0.1, 0), i8q(0.2, 3), per_channel_i8, None),
        &[&ua, &ib],
        "per-channel y",
        "per tensor",
    );
    let y32 = QParams::per_tensor(DType::I32, 0.1, 0).unwrap();
    rejected(
        &add(u8q(0.1, 0), i8q(0.2, 3), y32, None),
        &[&ua, &ib],
        "i32 output",
        "u8 or i8",
    );
    rejected(
        &add(u8q(0.1, 0), i8q(0.2, 3), i8q(0.3, 0), Some((0, 200))),
        &[&ua, &ib],
        "clamp outside i8",
        "clamp",
    );
    rejected(
        &add(u8q(0.1, 0), i8q(0.2, 3), u8q(0.3, 0), Some((9, 8))),
        &[&ua, &ib],
        "empty clamp",
        "clamp",
    );
    // s_a / s_y = 10^5 needs more than 15 bits even at shift 0.
    rejected(
        &add(u8q(1e4, 0), i8q(0.2, 3), u8q(0.1, 0), None),
        &[&ua, &ib],
        "add multiplier out of range",
        "add multipliers",
    );
}

#[test]
fn inference_checks_the_quantized_pool_operands() {
    let u8q = |s: f32| QParams::per_tensor(DType::U8, s, 0).unwrap();
    let i8q = |s: f32| QParams::per_tensor(DType::I8, s, 0).unwrap();
    let pool = |x, y| Op::QuantizedGlobalAveragePool { x, y };
    let x5 = tt(DType::U8, &[2, 3, 4, 5, 6]);
    assert_eq!(
        infer_types(&pool(u8q(0.1), i8q(0.2)), &[&x5]).unwrap(),
        vec![tt(DType::I8, &[2, 3, 1, 1, 1])]
    );
    let rejected = |op: &Op, x: &crate::TensorType, why: &str, says: &str| {
        let err = infer_types(op, &[x]).expect_err(why);
        assert!(err.contains(says), "{why}: {err:?} does not say {says:?}");
    };
    let good = pool(u8q(0.1), u8q(0.2));
    rejected(&good, &tt(DType::U8, &[2, 3]), "rank 2", "rank 2");
    rejected(
        &good,
        &tt(DType::I8, &[1, 3, 4, 4]),
        "x not of its parameters' type",
        "x is i8",
    );
    rejected(&good, &tt(DType::F32, &[1, 3, 4, 4]), "f32 x", "i8 or u8");
    let per_channel = QParams::per_channel(DType::U8, 1, vec![0.1; 3], vec![0; 3]).unwrap();
    rejected(
        &pool(per_channel, u8q(0.2)),
        &tt(DType::U8, &[1, 3, 4, 4]),
        "per-channel x",
        "per tensor",
    );
    let y32 = QParams::per_tensor(DType::I32, 0.1, 0).unwrap();
    rejected(
        &pool(u8q(0.1), y32),
        &tt(DType::U8, &[1, 3, 4, 4]),
        "i32 output",
        "u8 or i8",
    );
    rejected(
        &pool(u8q(1e-20), u8q(1e20)),
        &tt(DType::U8, &[1, 3, 4, 4]),
        "pool multiplier out of range",
        "pool multiplier",
    );
    assert!(infer_types(&good, &[&tt(DType::U8, &[1, 1, MAX_POOL_WINDOW])]).is_ok());
    rejected(
        &good,
        &tt(DType::U8, &[1, 1, MAX_POOL_WINDOW + 1]),
        "a plane whose sum could overflow i32",
        "i32 sum",
    );
}

#[test]
fn eval_rejects_a_mismatched_add_instead_of_panicking() {
    let q = QParams::per_tensor(DType::U8, 0.1, 0).unwrap();
    let op = Op::QuantizedAdd {
        a: q.clone(),
        b: q.clone(),
        y: q,
        clamp: None,
    };
    let (a, b) = (u8s(&[2], &[1, 2]), u8s(&[1], &[1]));
    assert!(super::super::eval_op(&op, &[&a, &b]).is_err());
}
