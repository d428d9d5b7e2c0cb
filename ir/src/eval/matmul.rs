//! Matrix products: Gemm, MatMul, MatMulInteger, QLinearMatMul.

use super::conv::centered;
use super::kernel::{gemm as gemm_kernel, MulAcc};
use super::quant::{int_tensor, requantize};
use super::{array_from, float_tensor, float_values, op_err, row_major, EvalError, R};
use crate::infer::{broadcast, matmul_dims};
use crate::op::GemmAttrs;
use crate::quant::{QParams, ZeroPoint};
use crate::tensor::Tensor;
use ndarray::{ArrayD, Zip};

/// Numpy matmul of row-major operands: 1-D operands are promoted (and the promoted dim
/// dropped from the result), batch dims broadcast. Returns the output dims and values.
pub(super) fn batched_matmul<T: MulAcc>(
    a: &[T],
    a_dims: &[usize],
    b: &[T],
    b_dims: &[usize],
) -> R<(Vec<usize>, Vec<T>)> {
    let out_dims = matmul_dims(a_dims, b_dims).map_err(EvalError::Op)?;
    let a2: Vec<usize> = if a_dims.len() == 1 {
        vec![1, a_dims[0]]
    } else {
        a_dims.to_vec()
    };
    let b2: Vec<usize> = if b_dims.len() == 1 {
        vec![b_dims[0], 1]
    } else {
        b_dims.to_vec()
    };
    let (m, k, n) = (a2[a2.len() - 2], a2[a2.len() - 1], b2[b2.len() - 1]);
    let (a_batch, b_batch) = (&a2[..a2.len() - 2], &b2[..b2.len() - 2]);
    let batch = broadcast(a_batch, b_batch).map_err(EvalError::Op)?;
    let batches: usize = batch.iter().product();
    let mut out = vec![T::default(); batches * m * n];
    // The flat batch index of an operand for the output batch coordinates `idx`.
    let operand_index = |dims: &[usize], idx: &[usize]| {
        let skip = idx.len() - dims.len();
        dims.iter()
            .zip(&idx[skip..])
            .fold(0, |acc, (&d, &i)| acc * d + if d == 1 { 0 } else { i })
    };
    let mut idx = vec![0; batch.len()];
    for c in out.chunks_mut((m * n).max(1)).take(batches) {
        let (ai, bj) = (operand_index(a_batch, &idx), operand_index(b_batch, &idx));
        gemm_kernel(m, n, k, &a[ai * m * k..], &b[bj * k * n..], c);
        for d in (0..batch.len()).rev() {
            idx[d] += 1;
            if idx[d] < batch[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok((out_dims, out))
}

/// MatMul on f32 or f16 (computed in f32).
pub(super) fn matmul_float(a: &Tensor, b: &Tensor) -> R<Tensor> {
    let (av, bv) = (float_values(a)?, float_values(b)?);
    let (dims, out) = batched_matmul(&row_major(&av), a.dims(), &row_major(&bv), b.dims())?;
    float_tensor(array_from(&dims, out)?, a.dtype())
}

/// Gemm: `alpha * A' * B' + beta * C`, with `C` broadcast to the product's shape.
pub(super) fn gemm(g: &GemmAttrs, a: &Tensor, b: &Tensor, c: Option<&Tensor>) -> R<Tensor> {
    let oriented = |t: &Tensor, transpose: bool| -> R<ArrayD<f32>> {
        let v = float_values(t)?.into_owned();
        Ok(if transpose {
            v.reversed_axes().as_standard_layout().into_owned()
        } else {
            v
        })
    };
    let (am, bm) = (oriented(a, g.trans_a)?, oriented(b, g.trans_b)?);
    let (m, k, n) = (am.shape()[0], am.shape()[1], bm.shape()[1]);
    let mut product = vec![0.0f32; m * n];
    gemm_kernel(m, n, k, &row_major(&am), &row_major(&bm), &mut product);
    let mut y = array_from(&[m, n], product)?;
    y.mapv_inplace(|v| g.alpha * v);
    if let Some(c) = c {
        let cv = float_values(c)?;
        let cb = cv
            .broadcast(vec![m, n])
            .ok_or_else(|| op_err(format!("C {:?} does not broadcast to [{m}, {n}]", c.dims())))?;
        Zip::from(&mut y)
            .and(&cb)
            .for_each(|y, &c| *y += g.beta * c);
    }
    float_tensor(y, a.dtype())
}

/// MatMulInteger: exact i32 product of `(a - a_zero_point)` and `(b - b_zero_point)`; the
/// zero points per tensor or one per index along their axis (per row of `a`, per column of
/// `b` in ONNX's terms).
pub(super) fn matmul_integer(
    a_zp: &ZeroPoint,
    b_zp: &ZeroPoint,
    a: &Tensor,
    b: &Tensor,
) -> R<Tensor> {
    let ac = centered(a, &a_zp.values, a_zp.axis)?;
    let bc = centered(b, &b_zp.values, b_zp.axis)?;
    let (dims, out) = batched_matmul(&ac, a.dims(), &bc, b.dims())?;
    Ok(Tensor::I32(array_from(&dims, out)?))
}

/// QLinearMatMul: the exact i32 product of the centered operands, requantized with
/// `multiplier = (a_scale * b_scale) / y_scale` in f32 (see [`requantize`]). `a` may be
/// quantized per row (its second-to-last axis) and `b` per column (its last axis).
pub(super) fn qlinear_matmul(
    qa: &QParams,
    qb: &QParams,
    qy: &QParams,
    a: &Tensor,
    b: &Tensor,
) -> R<Tensor> {
    let (ar, br) = (a.dims().len(), b.dims().len());
    if qa.axis().is_some_and(|ax| ar < 2 || ax != ar - 2)
        || qb.axis().is_some_and(|ax| br < 2 || ax != br - 1)
        || !qy.is_per_tensor()
    {
        return Err(op_err(
            "QLinearMatMul takes a per tensor or per row, b per tensor or per column, y per tensor",
        ));
    }
    let ac = centered(a, qa.zero_points(), qa.axis())?;
    let bc = centered(b, qb.zero_points(), qb.axis())?;
    let (dims, mut acc) = batched_matmul(&ac, a.dims(), &bc, b.dims())?;
    let n = if br == 1 { 1 } else { b.dims()[br - 1] };
    let m = if ar == 1 { 1 } else { a.dims()[ar - 2] };
    let (y_scale, y_zp) = qy.channel(0);
    for (idx, v) in acc.iter_mut().enumerate() {
        let (row, col) = ((idx / n.max(1)) % m.max(1), idx % n.max(1));
        let multiplier = (qa.channel(row).0 * qb.channel(col).0) / y_scale;
        *v = requantize(*v, multiplier, y_zp, qy.dtype());
    }
    int_tensor(qy.dtype(), &dims, acc)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::op::{GemmAttrs, Op};
    use crate::quant::{InputZeroPoint, QParams, ZeroPoint};
    use crate::DType;

    #[test]
    fn matmul_2d_1d_and_batch_broadcast() {
        let a = f32s(&[2, 2], &[1., 2., 3., 4.]);
        let b = f32s(&[2, 2], &[5., 6., 7., 8.]);
        assert_close(&run1(&Op::MatMul, &[&a, &b]), &[19., 22., 43., 50.]);
        let v = f32s(&[2], &[1., 1.]);
        let y = run1(&Op::MatMul, &[&v, &b]);
        assert_eq!(y.dims(), &[2]);
        assert_close(&y, &[12., 14.]);
        let y = run1(&Op::MatMul, &[&a, &v]);
        assert_close(&y, &[3., 7.]);
        // Batch dims [2, 1] and [3] broadcast to [2, 3].
        let a = f32s(&[2, 1, 1, 2], &[1., 0., 0., 1.]);
        let b = f32s(&[3, 2, 1], &[1., 2., 3., 4., 5., 6.]);
        let y = run1(&Op::MatMul, &[&a, &b]);
        assert_eq!(y.dims(), &[2, 3, 1, 1]);
        assert_close(&y, &[1., 3., 5., 2., 4., 6.]);
    }

    #[test]
    fn gemm_transposes_scales_and_broadcasts_c() {
        let a = f32s(&[2, 2], &[1., 3., 2., 4.]); // A' = [[1,2],[3,4]]
        let b = f32s(&[2, 2], &[5., 7., 6., 8.]); // B' = [[5,6],[7,8]]
        let c = f32s(&[2], &[1., 2.]);
        let op = Op::Gemm(GemmAttrs {
            alpha: 2.0,
            beta: 0.5,
            trans_a: true,
            trans_b: true,
        });
        assert_close(&run1(&op, &[&a, &b, &c]), &[38.5, 45., 86.5, 101.]);
    }

    #[test]
    fn matmul_integer_per_row_and_per_column_zero_points() {
        let a = u8s(&[2, 2], &[1, 2, 3, 4]);
        let b = i8s(&[2, 2], &[1, 2, 3, 4]);
        let op = Op::MatMulInteger {
            a_zero_point: InputZeroPoint::Constant(ZeroPoint {
                axis: Some(0),
                values: vec![1, 3],
            }),
            b_zero_point: ZeroPoint {
                axis: Some(1),
                values: vec![1, 0],
            },
        };
        // [[0,1],[0,1]] x [[0,2],[2,4]]
        assert_eq!(run1(&op, &[&a, &b]), i32s(&[2, 2], &[2, 4, 2, 4]));
    }

    #[test]
    fn matmul_integer_reads_a_run_time_zero_point_from_its_third_input() {
        let a = u8s(&[1, 2], &[5, 7]);
        let b = i8s(&[2, 1], &[2, -3]);
        let op = Op::MatMulInteger {
            a_zero_point: InputZeroPoint::RunTime,
            b_zero_point: ZeroPoint::zero(),
        };
        // (5 − 4)·2 + (7 − 4)·(−3)
        assert_eq!(run1(&op, &[&a, &b, &u8s(&[], &[4])]), i32s(&[1, 1], &[-7]));
        let err = crate::eval::eval_op(&op, &[&a, &b, &u8s(&[2], &[4, 4])]).unwrap_err();
        assert!(
            err.to_string().contains("zero point must be one u8"),
            "{err}"
        );
    }

    #[test]
    fn qlinear_matmul_rounds_half_to_even() {
        let a = u8s(&[1, 2], &[1, 4]);
        let b = u8s(&[2, 1], &[1, 1]);
        let op = Op::QLinearMatMul {
            a: QParams::per_tensor(DType::U8, 1.0, 0).unwrap(),
            b: QParams::per_tensor(DType::U8, 1.0, 0).unwrap(),
            y: QParams::per_tensor(DType::U8, 2.0, 0).unwrap(),
        };
        assert_eq!(run1(&op, &[&a, &b]), u8s(&[1, 1], &[2]));
        let op = Op::QLinearMatMul {
            a: QParams::per_tensor(DType::U8, 0.5, 1).unwrap(),
            b: QParams::per_channel(DType::U8, 1, vec![1.0], vec![0]).unwrap(),
            y: QParams::per_tensor(DType::I8, 0.25, -10).unwrap(),
        };
        // (0 + 3) * 0.5 / 0.25 = 6 -> -4.
        assert_eq!(run1(&op, &[&a, &b]), i8s(&[1, 1], &[-4]));
    }
}
