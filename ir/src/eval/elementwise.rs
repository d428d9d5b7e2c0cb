//! Element-wise ops: activations, broadcasting arithmetic, Sum, BatchNormalization, Cast.

use super::{float_tensor, float_values, op_err, R};
use crate::dtype::DType;
use crate::infer::broadcast;
use crate::op::{Activation, BinaryOp};
use crate::tensor::Tensor;
use half::f16;
use ndarray::{ArrayD, Zip};

/// Applies `f` to `a` and `b` broadcast against each other (numpy rules).
fn broadcast_zip<T: Copy, U>(a: &ArrayD<T>, b: &ArrayD<T>, f: impl Fn(T, T) -> U) -> R<ArrayD<U>> {
    let dims = broadcast(a.shape(), b.shape()).map_err(super::EvalError::Op)?;
    let av = a
        .broadcast(dims.clone())
        .ok_or_else(|| op_err(format!("cannot broadcast {:?} to {dims:?}", a.shape())))?;
    let bv = b
        .broadcast(dims.clone())
        .ok_or_else(|| op_err(format!("cannot broadcast {:?} to {dims:?}", b.shape())))?;
    Ok(Zip::from(&av).and(&bv).map_collect(|&x, &y| f(x, y)))
}

fn float_binary(op: BinaryOp) -> fn(f32, f32) -> f32 {
    match op {
        BinaryOp::Add => |x, y| x + y,
        BinaryOp::Sub => |x, y| x - y,
        BinaryOp::Mul => |x, y| x * y,
        BinaryOp::Div => |x, y| x / y,
    }
}

/// Integer arithmetic wraps on overflow (numpy's and C's two's-complement behaviour) and
/// divides truncating toward zero, like C; the caller has ruled out division by zero.
macro_rules! int_binary {
    ($op:expr, $a:expr, $b:expr) => {
        match $op {
            BinaryOp::Add => broadcast_zip($a, $b, |x, y| x.wrapping_add(y)),
            BinaryOp::Sub => broadcast_zip($a, $b, |x, y| x.wrapping_sub(y)),
            BinaryOp::Mul => broadcast_zip($a, $b, |x, y| x.wrapping_mul(y)),
            BinaryOp::Div => {
                if $b.iter().any(|&y| y == 0) && $a.len() > 0 {
                    return Err(op_err("integer division by zero"));
                }
                broadcast_zip($a, $b, |x, y| x.wrapping_div(y))
            }
        }
    };
}

/// Add, Sub, Mul, Div with numpy broadcasting.
pub(super) fn binary(op: BinaryOp, a: &Tensor, b: &Tensor) -> R<Tensor> {
    Ok(match (a, b) {
        (Tensor::F32(x), Tensor::F32(y)) => Tensor::F32(broadcast_zip(x, y, float_binary(op))?),
        (Tensor::F16(_), Tensor::F16(_)) => {
            let r = broadcast_zip(&*float_values(a)?, &*float_values(b)?, float_binary(op))?;
            float_tensor(r, DType::F16)?
        }
        (Tensor::I8(x), Tensor::I8(y)) => Tensor::I8(int_binary!(op, x, y)?),
        (Tensor::U8(x), Tensor::U8(y)) => Tensor::U8(int_binary!(op, x, y)?),
        (Tensor::I32(x), Tensor::I32(y)) => Tensor::I32(int_binary!(op, x, y)?),
        (Tensor::I64(x), Tensor::I64(y)) => Tensor::I64(int_binary!(op, x, y)?),
        _ => {
            return Err(op_err(format!(
                "cannot apply {op:?} to {} and {}",
                a.dtype(),
                b.dtype()
            )))
        }
    })
}

/// Sum of one or more tensors with broadcasting; float inputs accumulate in f32 left to right
/// and f16 results are rounded once at the end.
pub(super) fn sum(inputs: &[&Tensor]) -> R<Tensor> {
    let first = *inputs
        .first()
        .ok_or_else(|| op_err("Sum needs at least one input"))?;
    if first.dtype().is_float() {
        let mut acc = float_values(first)?.into_owned();
        for t in &inputs[1..] {
            acc = broadcast_zip(&acc, &*float_values(t)?, |x, y| x + y)?;
        }
        return float_tensor(acc, first.dtype());
    }
    let mut acc = first.clone();
    for t in &inputs[1..] {
        acc = binary(BinaryOp::Add, &acc, t)?;
    }
    Ok(acc)
}

fn float_activation(a: Activation) -> Box<dyn Fn(f32) -> f32> {
    match a {
        // Written as comparisons so that NaN propagates, as numpy's maximum/clip do.
        Activation::Relu => Box::new(|x| if x < 0.0 { 0.0 } else { x }),
        Activation::LeakyRelu { alpha } => Box::new(move |x| if x < 0.0 { alpha * x } else { x }),
        Activation::Clip { min, max } => Box::new(move |x| {
            let y = if x < min { min } else { x };
            if y > max {
                max
            } else {
                y
            }
        }),
        Activation::Sigmoid => Box::new(|x| 1.0 / (1.0 + (-x).exp())),
        Activation::HardSigmoid { alpha, beta } => {
            Box::new(move |x| (alpha * x + beta).clamp(0.0, 1.0))
        }
        Activation::HardSwish => Box::new(|x| x * (x / 6.0 + 0.5).clamp(0.0, 1.0)),
        Activation::Tanh => Box::new(f32::tanh),
    }
}

/// Integer Clip bounds: the smallest integer >= min and the largest <= max, inside the type.
fn int_bounds(min: f32, max: f32, type_lo: i64, type_hi: i64) -> (i64, i64) {
    let lo = if min.is_nan() {
        type_lo
    } else {
        (min.ceil() as i64).clamp(type_lo, type_hi)
    };
    let hi = if max.is_nan() {
        type_hi
    } else {
        (max.floor() as i64).clamp(type_lo, type_hi)
    };
    (lo, hi)
}

macro_rules! int_activation {
    ($a:expr, $arr:expr, $t:ty, $variant:ident) => {{
        let (lo, hi) = match $a {
            Activation::Relu => (0, <$t>::MAX as i64),
            Activation::Clip { min, max } => {
                int_bounds(min, max, <$t>::MIN as i64, <$t>::MAX as i64)
            }
            other => return Err(op_err(format!("{other:?} needs a float input"))),
        };
        // numpy clip semantics: max(x, lo) first, then min(., hi), so hi wins when lo > hi.
        Tensor::$variant($arr.mapv(|x| (x as i64).max(lo).min(hi) as $t))
    }};
}

/// The activations; Relu and Clip also accept integer tensors, as ONNX allows.
pub(super) fn activation(a: Activation, x: &Tensor) -> R<Tensor> {
    Ok(match x {
        Tensor::F32(_) | Tensor::F16(_) => {
            let f = float_activation(a);
            float_tensor(float_values(x)?.mapv(f), x.dtype())?
        }
        Tensor::I8(v) => int_activation!(a, v, i8, I8),
        Tensor::U8(v) => int_activation!(a, v, u8, U8),
        Tensor::I32(v) => int_activation!(a, v, i32, I32),
        Tensor::I64(v) => int_activation!(a, v, i64, I64),
        Tensor::Bool(_) => return Err(op_err("activations do not take bool")),
    })
}

/// Inference BatchNormalization over axis 1: `(x - mean) / sqrt(var + eps) * scale + B`.
pub(super) fn batch_norm(epsilon: f32, inputs: &[&Tensor]) -> R<Tensor> {
    let x = inputs[0];
    let params: Vec<Vec<f32>> = inputs[1..5]
        .iter()
        .map(|t| float_values(t).map(|a| a.iter().copied().collect()))
        .collect::<R<_>>()?;
    let (scale, bias, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
    let mut out = float_values(x)?.into_owned();
    let channels = scale.len();
    for (c, mut plane) in out
        .axis_iter_mut(ndarray::Axis(1))
        .enumerate()
        .take(channels)
    {
        let denom = (var[c] + epsilon).sqrt();
        plane.mapv_inplace(|v| (v - mean[c]) / denom * scale[c] + bias[c]);
    }
    float_tensor(out, x.dtype())
}

/// The values of a tensor as the source of a cast: floats as f32, everything else as i64.
enum CastSource {
    Float(ArrayD<f32>),
    Int(ArrayD<i64>),
}

/// Cast between any two of qcc's types.
///
/// float -> int truncates toward zero and saturates at the target's range, NaN gives 0
/// (Rust's `as`; numpy leaves out-of-range conversions undefined). int -> int wraps (two's
/// complement, like numpy's astype). x -> bool is `x != 0` (NaN is true). Anything -> f16
/// rounds to nearest even.
pub(super) fn cast(x: &Tensor, to: DType) -> Tensor {
    if x.dtype() == to {
        return x.clone();
    }
    let src = match x {
        Tensor::F32(a) => CastSource::Float(a.clone()),
        Tensor::F16(a) => CastSource::Float(a.mapv(f16::to_f32)),
        Tensor::I8(a) => CastSource::Int(a.mapv(i64::from)),
        Tensor::U8(a) => CastSource::Int(a.mapv(i64::from)),
        Tensor::I32(a) => CastSource::Int(a.mapv(i64::from)),
        Tensor::I64(a) => CastSource::Int(a.clone()),
        Tensor::Bool(a) => CastSource::Int(a.mapv(i64::from)),
    };
    macro_rules! to_int {
        ($variant:ident, $t:ty) => {
            match &src {
                CastSource::Float(a) => Tensor::$variant(a.mapv(|v| v as $t)),
                CastSource::Int(a) => Tensor::$variant(a.mapv(|v| v as $t)),
            }
        };
    }
    match to {
        DType::F32 => match &src {
            CastSource::Float(a) => Tensor::F32(a.clone()),
            CastSource::Int(a) => Tensor::F32(a.mapv(|v| v as f32)),
        },
        DType::F16 => match &src {
            CastSource::Float(a) => Tensor::F16(a.mapv(f16::from_f32)),
            CastSource::Int(a) => Tensor::F16(a.mapv(|v| f16::from_f64(v as f64))),
        },
        DType::I8 => to_int!(I8, i8),
        DType::U8 => to_int!(U8, u8),
        DType::I32 => to_int!(I32, i32),
        DType::I64 => to_int!(I64, i64),
        DType::Bool => match &src {
            CastSource::Float(a) => Tensor::Bool(a.mapv(|v| v != 0.0)),
            CastSource::Int(a) => Tensor::Bool(a.mapv(|v| v != 0)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;
    use crate::op::Op;

    fn act(a: Activation, x: &Tensor) -> Tensor {
        run1(&Op::Activation(a), &[x])
    }

    #[test]
    fn binary_broadcasts_like_numpy() {
        let a = f32s(&[2, 1], &[1., 2.]);
        let b = f32s(&[3], &[10., 20., 30.]);
        let y = run1(&Op::Binary(BinaryOp::Add), &[&a, &b]);
        assert_eq!(y.dims(), &[2, 3]);
        assert_close(&y, &[11., 21., 31., 12., 22., 32.]);
        assert_close(
            &run1(&Op::Binary(BinaryOp::Sub), &[&a, &b]),
            &[-9., -19., -29., -8., -18., -28.],
        );
        let h = cast(&a, DType::F16);
        let y = run1(&Op::Binary(BinaryOp::Mul), &[&h, &h]);
        assert_eq!(y.dtype(), DType::F16);
        assert_close(&y, &[1., 4.]);
    }

    #[test]
    fn integer_division_truncates_and_refuses_zero() {
        let a = i32s(&[4], &[7, -7, 7, -7]);
        let b = i32s(&[4], &[2, 2, -2, -2]);
        assert_eq!(
            run1(&Op::Binary(BinaryOp::Div), &[&a, &b]),
            i32s(&[4], &[3, -3, -3, 3])
        );
        let z = i32s(&[1], &[0]);
        assert!(eval_op_err(&Op::Binary(BinaryOp::Div), &[&a, &z]));
        let wrap = run1(
            &Op::Binary(BinaryOp::Add),
            &[&i8s(&[1], &[127]), &i8s(&[1], &[1])],
        );
        assert_eq!(wrap, i8s(&[1], &[-128]));
    }

    fn eval_op_err(op: &Op, inputs: &[&Tensor]) -> bool {
        super::super::eval_op(op, inputs).is_err()
    }

    #[test]
    fn sum_is_variadic_with_broadcast() {
        let a = f32s(&[2], &[1., 2.]);
        let b = f32s(&[1], &[10.]);
        assert_close(&run1(&Op::Sum, &[&a, &b, &a]), &[12., 14.]);
        assert_close(&run1(&Op::Sum, &[&a]), &[1., 2.]);
        assert_eq!(
            run1(&Op::Sum, &[&i32s(&[1], &[1]), &i32s(&[2], &[2, 3])]),
            i32s(&[2], &[3, 4])
        );
    }

    #[test]
    fn float_activations() {
        let x = f32s(&[5], &[-3., -1., 0., 1., 3.]);
        assert_close(&act(Activation::Relu, &x), &[0., 0., 0., 1., 3.]);
        assert_close(
            &act(Activation::LeakyRelu { alpha: 0.1 }, &x),
            &[-0.3, -0.1, 0., 1., 3.],
        );
        assert_close(
            &act(Activation::Clip { min: -1., max: 2. }, &x),
            &[-1., -1., 0., 1., 2.],
        );
        assert_close(
            &act(
                Activation::HardSigmoid {
                    alpha: 0.2,
                    beta: 0.5,
                },
                &x,
            ),
            &[0., 0.3, 0.5, 0.7, 1.],
        );
        assert_close(
            &act(Activation::HardSwish, &x),
            &[0., -1. / 3., 0., 2. / 3., 3.],
        );
        let s = act(Activation::Sigmoid, &x).to_f64_vec();
        assert!((s[2] - 0.5).abs() < 1e-7 && (s[3] - 0.7310586).abs() < 1e-6);
        let t = act(Activation::Tanh, &x).to_f64_vec();
        assert!(t[2] == 0.0 && (t[3] - 0.7615942).abs() < 1e-6);
        // numpy's clip: when min > max everything becomes max.
        assert_close(&act(Activation::Clip { min: 2., max: 1. }, &x), &[1.; 5]);
    }

    #[test]
    fn relu_and_clip_on_integers() {
        let x = i8s(&[4], &[-128, -1, 5, 127]);
        assert_eq!(act(Activation::Relu, &x), i8s(&[4], &[0, 0, 5, 127]));
        assert_eq!(
            act(Activation::Clip { min: -2., max: 6. }, &x),
            i8s(&[4], &[-2, -1, 5, 6])
        );
        assert_eq!(
            act(
                Activation::Clip {
                    min: f32::NEG_INFINITY,
                    max: f32::INFINITY
                },
                &x
            ),
            x
        );
        let u = u8s(&[2], &[3, 200]);
        assert_eq!(
            act(Activation::Clip { min: 0., max: 100. }, &u),
            u8s(&[2], &[3, 100])
        );
        assert!(eval_op_err(&Op::Activation(Activation::Sigmoid), &[&u]));
    }

    #[test]
    fn batch_norm_inference() {
        let x = f32s(&[1, 2, 1, 1], &[3., 5.]);
        let scale = f32s(&[2], &[2., 1.]);
        let bias = f32s(&[2], &[1., 0.]);
        let mean = f32s(&[2], &[1., 5.]);
        let var = f32s(&[2], &[4., 1.]);
        let y = run1(
            &Op::BatchNorm { epsilon: 0.0 },
            &[&x, &scale, &bias, &mean, &var],
        );
        assert_close(&y, &[3., 0.]);
    }

    #[test]
    fn casts_between_all_kinds() {
        let x = f32s(&[4], &[1.7, -1.7, f32::NAN, 300.]);
        assert_eq!(cast(&x, DType::I32), i32s(&[4], &[1, -1, 0, 300]));
        assert_eq!(cast(&x, DType::U8), u8s(&[4], &[1, 0, 0, 255]));
        assert_eq!(
            cast(&x, DType::Bool),
            Tensor::Bool(ndarray::arr1(&[true, true, true, true]).into_dyn())
        );
        assert_eq!(
            cast(&i32s(&[2], &[300, -1]), DType::U8),
            u8s(&[2], &[44, 255])
        );
        // f16 has spacing 2 at 2048: 2049 ties to even 2048, 2051 rounds to 2052.
        let h = cast(&f32s(&[2], &[2049., 2051.]), DType::F16);
        assert_close(&cast(&h, DType::F32), &[2048., 2052.]);
        assert_close(
            &cast(&Tensor::from_i64(&[2], vec![2049, -3]), DType::F16),
            &[2048., -3.],
        );
        let b = Tensor::Bool(ndarray::arr1(&[true, false]).into_dyn());
        assert_close(&cast(&b, DType::F32), &[1., 0.]);
        assert_eq!(
            cast(&i32s(&[2], &[0, 7]), DType::Bool),
            Tensor::Bool(ndarray::arr1(&[false, true]).into_dyn())
        );
    }
}
