//! Data movement: Concat, Split, Reshape/Flatten, Transpose, Squeeze, Unsqueeze, Pad,
//! Gather, Slice, ConstantOfShape. All work on every element type.

use super::{op_err, EvalError, R};
use crate::infer::slice_ranges;
use crate::map_tensor;
use crate::tensor::Tensor;
use half::f16;
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, Slice};

fn shape_err(e: ndarray::ShapeError) -> EvalError {
    op_err(format!("internal shape error: {e}"))
}

/// The same elements in row-major order under new dims (same element count).
pub(super) fn reshape_to(x: &Tensor, dims: &[usize]) -> R<Tensor> {
    Ok(match x {
        Tensor::F32(a) => Tensor::F32(
            a.as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(dims))
                .map_err(shape_err)?,
        ),
        Tensor::F16(a) => Tensor::F16(
            a.as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(dims))
                .map_err(shape_err)?,
        ),
        Tensor::I8(a) => Tensor::I8(
            a.as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(dims))
                .map_err(shape_err)?,
        ),
        Tensor::U8(a) => Tensor::U8(
            a.as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(dims))
                .map_err(shape_err)?,
        ),
        Tensor::I32(a) => Tensor::I32(
            a.as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(dims))
                .map_err(shape_err)?,
        ),
        Tensor::I64(a) => Tensor::I64(
            a.as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(dims))
                .map_err(shape_err)?,
        ),
        Tensor::Bool(a) => Tensor::Bool(
            a.as_standard_layout()
                .into_owned()
                .into_shape_with_order(IxDyn(dims))
                .map_err(shape_err)?,
        ),
    })
}

pub(super) fn transpose(perm: &[usize], x: &Tensor) -> Tensor {
    map_tensor!(x, a => a.view().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned())
}

pub(super) fn squeeze(axes: &[usize], x: &Tensor) -> R<Tensor> {
    let dims = x.dims();
    let removed = |i: usize| {
        if axes.is_empty() {
            dims[i] == 1
        } else {
            axes.contains(&i)
        }
    };
    let out: Vec<usize> = (0..dims.len())
        .filter(|&i| !removed(i))
        .map(|i| dims[i])
        .collect();
    reshape_to(x, &out)
}

pub(super) fn unsqueeze(axes: &[usize], x: &Tensor) -> R<Tensor> {
    let rank = x.dims().len() + axes.len();
    let mut src = x.dims().iter();
    let out: Vec<usize> = (0..rank)
        .map(|i| {
            if axes.contains(&i) {
                1
            } else {
                src.next().copied().unwrap_or(1)
            }
        })
        .collect();
    reshape_to(x, &out)
}

pub(super) fn concat(axis: usize, inputs: &[&Tensor]) -> R<Tensor> {
    macro_rules! cat {
        ($variant:ident, $acc:ident) => {{
            let views = inputs
                .iter()
                .map(|t| t.$acc().map(|a| a.view()))
                .collect::<Result<Vec<ArrayViewD<_>>, _>>()
                .map_err(|e| op_err(e.to_string()))?;
            Tensor::$variant(ndarray::concatenate(Axis(axis), &views).map_err(shape_err)?)
        }};
    }
    let first = inputs
        .first()
        .ok_or_else(|| op_err("Concat needs an input"))?;
    Ok(match first {
        Tensor::F32(_) => cat!(F32, as_f32),
        Tensor::F16(_) => cat!(F16, as_f16),
        Tensor::I8(_) => cat!(I8, as_i8),
        Tensor::U8(_) => cat!(U8, as_u8),
        Tensor::I32(_) => cat!(I32, as_i32),
        Tensor::I64(_) => cat!(I64, as_i64),
        Tensor::Bool(_) => cat!(Bool, as_bool),
    })
}

pub(super) fn split(axis: usize, sizes: &[usize], x: &Tensor) -> R<Vec<Tensor>> {
    let mut start = 0;
    let mut out = Vec::with_capacity(sizes.len());
    for &s in sizes {
        let range = Slice::from(start..start + s);
        out.push(map_tensor!(x, a => a.slice_axis(Axis(axis), range).to_owned()));
        start += s;
    }
    Ok(out)
}

/// Picks `indices[d]` along every axis `d` (a general strided/reordered selection).
fn select_all<T: Clone>(a: &ArrayD<T>, indices: &[Vec<usize>]) -> ArrayD<T> {
    let mut cur = a.clone();
    for (d, idx) in indices.iter().enumerate() {
        if idx.len() != cur.shape()[d] || idx.iter().enumerate().any(|(i, &j)| i != j) {
            cur = cur.select(Axis(d), idx);
        }
    }
    cur
}

pub(super) fn slice(
    starts: &[i64],
    ends: &[i64],
    axes: &[usize],
    steps: &[i64],
    x: &Tensor,
) -> R<Tensor> {
    let dims = x.dims();
    let mut indices: Vec<Vec<usize>> = dims.iter().map(|&n| (0..n).collect()).collect();
    for r in slice_ranges(dims, starts, ends, axes, steps).map_err(EvalError::Op)? {
        // slice_ranges clamps `start` into the axis and `len` so every index stays inside it.
        indices[r.axis] = (0..r.len as i64)
            .map(|i| (r.start + i * r.step) as usize)
            .collect();
    }
    Ok(map_tensor!(x, a => select_all(a, &indices)))
}

/// Gather along `axis`; negative indices count from the end, out-of-range ones are errors.
pub(super) fn gather(axis: usize, data: &Tensor, indices: &Tensor) -> R<Tensor> {
    let n = data.dims()[axis] as i64;
    let raw = indices
        .to_i64_vec()
        .ok_or_else(|| op_err("Gather indices must be integers"))?;
    let idx = raw
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + n } else { i };
            if (0..n).contains(&j) {
                Ok(j as usize)
            } else {
                Err(op_err(format!(
                    "Gather index {i} out of range for axis {axis} of size {n}"
                )))
            }
        })
        .collect::<R<Vec<usize>>>()?;
    let mut out_dims = data.dims()[..axis].to_vec();
    out_dims.extend_from_slice(indices.dims());
    out_dims.extend_from_slice(&data.dims()[axis + 1..]);
    let picked = map_tensor!(data, a => a.select(Axis(axis), &idx));
    reshape_to(&picked, &out_dims)
}

/// Constant-mode Pad; negative pads crop. The pad value is cast to the tensor's type.
pub(super) fn pad(pads: &[i64], value: f32, x: &Tensor) -> R<Tensor> {
    let dims = x.dims();
    let rank = dims.len();
    // Crop first (negative pads), then place the cropped block inside the padded output.
    let mut cropped = x.clone();
    for d in 0..rank {
        let (b, e) = (pads[d], pads[d + rank]);
        if b < 0 || e < 0 {
            let n = cropped.dims()[d] as i64;
            let lo = (-b).max(0).min(n);
            let hi = (n + e.min(0)).max(lo);
            let range = Slice::from(lo as usize..hi as usize);
            cropped = map_tensor!(&cropped, a => a.slice_axis(Axis(d), range).to_owned());
        }
    }
    let out_dims: Vec<usize> = (0..rank)
        .map(|d| cropped.dims()[d] + pads[d].max(0) as usize + pads[d + rank].max(0) as usize)
        .collect();
    let region: Vec<ndarray::SliceInfoElem> = (0..rank)
        .map(|d| {
            let b = pads[d].max(0) as usize;
            ndarray::SliceInfoElem::from(b..b + cropped.dims()[d])
        })
        .collect();
    macro_rules! place {
        ($variant:ident, $a:expr, $fill:expr) => {{
            let mut out = ArrayD::from_elem(IxDyn(&out_dims), $fill);
            out.slice_mut(region.as_slice()).assign($a);
            Tensor::$variant(out)
        }};
    }
    Ok(match &cropped {
        Tensor::F32(a) => place!(F32, a, value),
        Tensor::F16(a) => place!(F16, a, f16::from_f32(value)),
        Tensor::I8(a) => place!(I8, a, value as i8),
        Tensor::U8(a) => place!(U8, a, value as u8),
        Tensor::I32(a) => place!(I32, a, value as i32),
        Tensor::I64(a) => place!(I64, a, value as i64),
        Tensor::Bool(a) => place!(Bool, a, value != 0.0),
    })
}

pub(super) fn constant_of_shape(shape: &[usize], value: &Tensor) -> R<Tensor> {
    if value.numel() != 1 {
        return Err(op_err(format!(
            "ConstantOfShape value must have one element, has {}",
            value.numel()
        )));
    }
    Ok(map_tensor!(value, a => {
        let v = a.iter().next().cloned().unwrap_or_default();
        ArrayD::from_elem(IxDyn(shape), v)
    }))
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::op::Op;
    use crate::Tensor;

    fn six() -> Tensor {
        f32s(&[2, 3], &[1., 2., 3., 4., 5., 6.])
    }

    #[test]
    fn concat_and_split() {
        let y = run1(
            &Op::Concat { axis: 1 },
            &[&six(), &f32s(&[2, 1], &[7., 8.])],
        );
        assert_close(&y, &[1., 2., 3., 7., 4., 5., 6., 8.]);
        let parts = super::super::eval_op(
            &Op::Split {
                axis: 1,
                sizes: vec![1, 2],
            },
            &[&six()],
        )
        .unwrap();
        assert_close(&parts[0], &[1., 4.]);
        assert_close(&parts[1], &[2., 3., 5., 6.]);
    }

    #[test]
    fn reshape_flatten_transpose_squeeze_unsqueeze() {
        let r = run1(
            &Op::Reshape {
                shape: vec![3, -1],
                allow_zero: false,
            },
            &[&six()],
        );
        assert_eq!(r.dims(), &[3, 2]);
        assert_eq!(run1(&Op::Flatten { axis: 0 }, &[&six()]).dims(), &[1, 6]);
        let t = run1(&Op::Transpose { perm: vec![1, 0] }, &[&six()]);
        assert_eq!(t.dims(), &[3, 2]);
        assert_close(&t, &[1., 4., 2., 5., 3., 6.]);
        let u = run1(&Op::Unsqueeze { axes: vec![0, 2] }, &[&six()]);
        assert_eq!(u.dims(), &[1, 2, 1, 3]);
        assert_eq!(run1(&Op::Squeeze { axes: vec![] }, &[&u]).dims(), &[2, 3]);
        assert_eq!(
            run1(&Op::Squeeze { axes: vec![2] }, &[&u]).dims(),
            &[1, 2, 3]
        );
    }

    #[test]
    fn pad_grows_and_crops() {
        let y = run1(
            &Op::Pad {
                pads: vec![1, 0, 0, 1],
                value: 9.,
            },
            &[&six()],
        );
        assert_eq!(y.dims(), &[3, 4]);
        assert_close(&y, &[9., 9., 9., 9., 1., 2., 3., 9., 4., 5., 6., 9.]);
        let y = run1(
            &Op::Pad {
                pads: vec![0, -1, -1, 1],
                value: 0.,
            },
            &[&six()],
        );
        assert_close(&y, &[2., 3., 0.]);
        let q = run1(
            &Op::Pad {
                pads: vec![1, 1],
                value: 3.,
            },
            &[&u8s(&[1], &[7])],
        );
        assert_eq!(q, u8s(&[3], &[3, 7, 3]));
    }

    #[test]
    fn shape_gather_and_slice() {
        assert_eq!(
            run1(&Op::Shape { start: 1, end: 2 }, &[&six()]),
            Tensor::from_i64(&[1], vec![3])
        );
        let idx = Tensor::from_i64(&[2, 2], vec![0, -1, 1, 0]);
        let g = run1(&Op::Gather { axis: 1 }, &[&six(), &idx]);
        assert_eq!(g.dims(), &[2, 2, 2]);
        assert_close(&g, &[1., 3., 2., 1., 4., 6., 5., 4.]);
        let bad = Tensor::from_i64(&[1], vec![3]);
        assert!(super::super::eval_op(&Op::Gather { axis: 1 }, &[&six(), &bad]).is_err());
        let s = Op::Slice {
            starts: vec![-1],
            ends: vec![i64::MIN],
            axes: vec![1],
            steps: vec![-2],
        };
        assert_close(&run1(&s, &[&six()]), &[3., 1., 6., 4.]);
        let s = Op::Slice {
            starts: vec![1, 1],
            ends: vec![2, 100],
            axes: vec![0, 1],
            steps: vec![1, 1],
        };
        assert_close(&run1(&s, &[&six()]), &[5., 6.]);
    }

    #[test]
    fn constant_of_shape_identity_and_dropout() {
        let c = run1(
            &Op::ConstantOfShape {
                shape: vec![2, 2],
                value: i32s(&[1], &[7]),
            },
            &[],
        );
        assert_eq!(c, i32s(&[2, 2], &[7; 4]));
        assert_eq!(run1(&Op::Identity, &[&six()]), six());
        let d = super::super::eval_op(&Op::Dropout { mask_output: true }, &[&six()]).unwrap();
        assert_eq!(d[0], six());
        assert_eq!(d[1].as_bool().unwrap().iter().filter(|&&b| b).count(), 6);
    }
}
