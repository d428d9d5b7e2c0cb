//! Reductions along axes: Softmax, LRN, ReduceMean.

use super::{array_from, float_tensor, float_values, row_major, R};
use crate::op::LrnAttrs;
use crate::tensor::Tensor;
use ndarray::Axis;

/// Softmax over `dims[axis]` (opset 13) or, with `coerce_2d`, over the flattened
/// `dims[axis..]` (earlier opsets). The row maximum is subtracted before `exp` for stability.
pub(super) fn softmax(axis: usize, coerce_2d: bool, x: &Tensor) -> R<Tensor> {
    let dims = x.dims();
    let outer: usize = dims[..axis].iter().product();
    let (len, inner) = if coerce_2d {
        (dims[axis..].iter().product(), 1)
    } else {
        (dims[axis], dims[axis + 1..].iter().product())
    };
    let v = float_values(x)?;
    let mut data = row_major(&v).into_owned();
    for o in 0..outer {
        for i in 0..inner {
            let at = |j: usize| (o * len + j) * inner + i;
            let max = (0..len)
                .map(|j| data[at(j)])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f32;
            for j in 0..len {
                let e = (data[at(j)] - max).exp();
                data[at(j)] = e;
                sum += e;
            }
            for j in 0..len {
                data[at(j)] /= sum;
            }
        }
    }
    float_tensor(array_from(dims, data)?, x.dtype())
}

/// LRN across channels (axis 1): `y = x / (bias + alpha / size * sum of x^2)^beta`, the sum over
/// channels `c - floor((size-1)/2) ..= c + ceil((size-1)/2)` that exist.
pub(super) fn lrn(l: &LrnAttrs, x: &Tensor) -> R<Tensor> {
    let dims = x.dims();
    let (batch, channels) = (dims[0], dims[1]);
    let plane: usize = dims[2..].iter().product();
    let v = float_values(x)?;
    let data = row_major(&v);
    // floor((size-1)/2) channels before, ceil((size-1)/2) = floor(size/2) after.
    let (before, after) = ((l.size - 1) / 2, l.size / 2);
    let alpha_over_size = l.alpha / l.size as f32;
    let mut out = vec![0.0f32; data.len()];
    for b in 0..batch {
        for c in 0..channels {
            let lo = c.saturating_sub(before);
            let hi = (c + after).min(channels - 1);
            for s in 0..plane {
                let at = |ch: usize| (b * channels + ch) * plane + s;
                let square_sum: f32 = (lo..=hi).map(|ch| data[at(ch)] * data[at(ch)]).sum();
                out[at(c)] = data[at(c)] / (l.bias + alpha_over_size * square_sum).powf(l.beta);
            }
        }
    }
    float_tensor(array_from(dims, out)?, x.dtype())
}

/// ReduceMean over `axes` (all axes when empty): the f32 sum divided by the element count.
pub(super) fn reduce_mean(axes: &[usize], keep_dims: bool, x: &Tensor) -> R<Tensor> {
    let dims = x.dims().to_vec();
    let reduced: Vec<usize> = if axes.is_empty() {
        (0..dims.len()).collect()
    } else {
        axes.to_vec()
    };
    let mut sorted = reduced.clone();
    sorted.sort_unstable();
    sorted.dedup();
    let mut acc = float_values(x)?.into_owned();
    for &a in sorted.iter().rev() {
        acc = acc.sum_axis(Axis(a));
    }
    let count: usize = sorted.iter().map(|&a| dims[a]).product();
    acc.mapv_inplace(|s| s / count as f32);
    let out_dims: Vec<usize> = if keep_dims {
        (0..dims.len())
            .map(|i| if sorted.contains(&i) { 1 } else { dims[i] })
            .collect()
    } else {
        (0..dims.len())
            .filter(|i| !sorted.contains(i))
            .map(|i| dims[i])
            .collect()
    };
    let data = row_major(&acc).into_owned();
    float_tensor(array_from(&out_dims, data)?, x.dtype())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::op::{LrnAttrs, Op};

    #[test]
    fn softmax_coerced_and_single_axis() {
        let x = f32s(&[1, 2, 2], &[0.; 4]);
        assert_close(
            &run1(
                &Op::Softmax {
                    axis: 1,
                    coerce_2d: true,
                },
                &[&x],
            ),
            &[0.25; 4],
        );
        assert_close(
            &run1(
                &Op::Softmax {
                    axis: 1,
                    coerce_2d: false,
                },
                &[&x],
            ),
            &[0.5; 4],
        );
        let y = f32s(&[1, 2, 2], &[0., 1., (3.0f32).ln(), 1.]);
        // Along axis 1: columns (0, ln 3) -> (1/4, 3/4) and (1, 1) -> (1/2, 1/2).
        assert_close(
            &run1(
                &Op::Softmax {
                    axis: 1,
                    coerce_2d: false,
                },
                &[&y],
            ),
            &[0.25, 0.5, 0.75, 0.5],
        );
        let big = f32s(&[2], &[1000., 1000.]);
        assert_close(
            &run1(
                &Op::Softmax {
                    axis: 0,
                    coerce_2d: false,
                },
                &[&big],
            ),
            &[0.5, 0.5],
        );
    }

    #[test]
    fn lrn_window_is_asymmetric_for_even_sizes() {
        let x = f32s(&[1, 3, 1, 1], &[1., 2., 3.]);
        let op = Op::Lrn(LrnAttrs {
            alpha: 2.0,
            beta: 1.0,
            bias: 1.0,
            size: 2,
        });
        // size 2: channels c..=c+1; alpha / size = 1.
        assert_close(&run1(&op, &[&x]), &[1. / 6., 2. / 14., 3. / 10.]);
        let op = Op::Lrn(LrnAttrs {
            alpha: 3.0,
            beta: 0.5,
            bias: 0.0,
            size: 3,
        });
        // size 3: channels c-1..=c+1; 3 / (1 * sum)^0.5 for the last channel: sum = 4 + 9.
        let y = run1(&op, &[&x]).to_f64_vec();
        assert!((y[2] - 3.0 / 13f64.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn reduce_mean_axes_and_keep_dims() {
        let x = f32s(&[2, 3], &[1., 2., 3., 4., 5., 6.]);
        let y = run1(
            &Op::ReduceMean {
                axes: vec![1],
                keep_dims: true,
            },
            &[&x],
        );
        assert_eq!(y.dims(), &[2, 1]);
        assert_close(&y, &[2., 5.]);
        let y = run1(
            &Op::ReduceMean {
                axes: vec![],
                keep_dims: false,
            },
            &[&x],
        );
        assert_eq!(y.dims(), &[] as &[usize]);
        assert_close(&y, &[3.5]);
        assert_close(
            &run1(
                &Op::ReduceMean {
                    axes: vec![0],
                    keep_dims: false,
                },
                &[&x],
            ),
            &[2.5, 3.5, 4.5],
        );
    }
}
