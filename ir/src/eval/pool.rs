//! Pooling: MaxPool (float and 8-bit), AveragePool, GlobalAveragePool, GlobalMaxPool.
//!
//! Every window is the Cartesian product of per-axis tap lists, so the windows are resolved
//! once per axis: which input coordinates a window reads. Padding taps are skipped, which is
//! how MaxPool's padding behaves as -inf.
//!
//! AveragePool with `count_include_pad` divides by the full kernel size, even for a
//! `ceil_mode` window that runs past the end padding: the taps beyond it count as padding.
//! That is what the ONNX 1.15 reference (and its backend test data) and onnxruntime 1.20 do;
//! PyTorch (and onnxruntime since 2026) count only taps inside input + pads instead.

use super::{array_from, float_tensor, float_values, op_err, row_major, R};
use crate::dtype::TensorType;
use crate::infer::{pool_output_dims, resolve_pads};
use crate::op::PoolAttrs;
use crate::tensor::Tensor;

/// The resolved windows of a pooling op on one input shape.
struct PoolWindows {
    planes: usize,
    in_size: usize,
    out_dims: Vec<usize>,
    /// `axes[d][o]`: the input coordinates that the window of output coordinate `o` reads
    /// along spatial axis `d` (taps in the padding left out).
    axes: Vec<Vec<Vec<usize>>>,
    /// Taps per window, padding included: AveragePool's divisor with `count_include_pad`.
    kernel_size: usize,
    /// Row-major strides of the spatial input.
    in_strides: Vec<usize>,
}

impl PoolWindows {
    fn new(p: &PoolAttrs, x: &Tensor) -> R<PoolWindows> {
        let dims = x.dims();
        let out_dims = pool_output_dims(p, &TensorType::new(x.dtype(), dims.to_vec()))
            .map_err(super::EvalError::Op)?;
        let input = &dims[2..];
        let (pb, _) = resolve_pads(&p.padding, input, &p.kernel, &p.strides, &p.dilations)
            .map_err(super::EvalError::Op)?;
        let axes = (0..input.len())
            .map(|d| {
                (0..out_dims[2 + d])
                    .map(|o| {
                        let start = (o * p.strides[d]) as i64 - pb[d] as i64;
                        (0..p.kernel[d])
                            .map(|k| start + (k * p.dilations[d]) as i64)
                            .filter(|&q| q >= 0 && q < input[d] as i64)
                            .map(|q| q as usize)
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let mut in_strides = vec![1; input.len()];
        for d in (0..input.len().saturating_sub(1)).rev() {
            in_strides[d] = in_strides[d + 1] * input[d + 1];
        }
        Ok(PoolWindows {
            planes: dims[0] * dims[1],
            in_size: input.iter().product(),
            out_dims,
            axes,
            kernel_size: p.kernel.iter().product(),
            in_strides,
        })
    }

    /// Calls `f(plane values, window offsets)` for every output element in row-major order
    /// and collects the results.
    fn map<T: Copy, U>(&self, x: &[T], f: impl Fn(&[T], &[usize]) -> U) -> Vec<U> {
        let spatial = &self.out_dims[2..];
        let out_size: usize = spatial.iter().product();
        let mut out = Vec::with_capacity(self.planes * out_size);
        let (mut offsets, mut next) = (Vec::new(), Vec::new());
        for plane in x.chunks(self.in_size.max(1)).take(self.planes) {
            let mut oidx = vec![0; spatial.len()];
            for _ in 0..out_size {
                offsets.clear();
                offsets.push(0);
                for (d, &o) in oidx.iter().enumerate() {
                    next.clear();
                    for &base in &offsets {
                        next.extend(
                            self.axes[d][o]
                                .iter()
                                .map(|&t| base + t * self.in_strides[d]),
                        );
                    }
                    std::mem::swap(&mut offsets, &mut next);
                }
                out.push(f(plane, &offsets));
                for d in (0..spatial.len()).rev() {
                    oidx[d] += 1;
                    if oidx[d] < spatial[d] {
                        break;
                    }
                    oidx[d] = 0;
                }
            }
        }
        out
    }
}

/// The maximum over a window; an empty window (only padding) yields `lowest`.
fn window_max<T: Copy + PartialOrd>(plane: &[T], offsets: &[usize], lowest: T) -> T {
    offsets
        .iter()
        .fold(lowest, |m, &o| if plane[o] > m { plane[o] } else { m })
}

pub(super) fn max_pool(p: &PoolAttrs, x: &Tensor) -> R<Tensor> {
    let w = PoolWindows::new(p, x)?;
    match x {
        Tensor::F32(_) | Tensor::F16(_) => {
            let v = float_values(x)?;
            let out = w.map(&row_major(&v), |pl, off| {
                window_max(pl, off, f32::NEG_INFINITY)
            });
            float_tensor(array_from(&w.out_dims, out)?, x.dtype())
        }
        Tensor::U8(a) => Ok(Tensor::U8(array_from(
            &w.out_dims,
            w.map(&row_major(a), |pl, off| window_max(pl, off, u8::MIN)),
        )?)),
        Tensor::I8(a) => Ok(Tensor::I8(array_from(
            &w.out_dims,
            w.map(&row_major(a), |pl, off| window_max(pl, off, i8::MIN)),
        )?)),
        other => Err(op_err(format!("MaxPool does not take {}", other.dtype()))),
    }
}

/// AveragePool: the f32 sum of the real taps divided by their count, or by the kernel size
/// with `count_include_pad`.
pub(super) fn average_pool(p: &PoolAttrs, count_include_pad: bool, x: &Tensor) -> R<Tensor> {
    let w = PoolWindows::new(p, x)?;
    let v = float_values(x)?;
    let out = w.map(&row_major(&v), |pl, off| {
        let sum: f32 = off.iter().map(|&o| pl[o]).sum();
        sum / (if count_include_pad {
            w.kernel_size
        } else {
            off.len()
        }) as f32
    });
    float_tensor(array_from(&w.out_dims, out)?, x.dtype())
}

/// GlobalAveragePool / GlobalMaxPool over all spatial axes of each (batch, channel) plane.
pub(super) fn global_pool(max: bool, x: &Tensor) -> R<Tensor> {
    let dims = x.dims();
    let mut out_dims = dims[..2].to_vec();
    out_dims.resize(dims.len(), 1);
    let plane: usize = dims[2..].iter().product();
    let v = float_values(x)?;
    let values = row_major(&v);
    let out: Vec<f32> = (0..dims[0] * dims[1])
        .map(|i| {
            let p = &values[i * plane..][..plane];
            if max {
                window_max(p, &(0..plane).collect::<Vec<_>>(), f32::NEG_INFINITY)
            } else {
                p.iter().sum::<f32>() / plane as f32
            }
        })
        .collect();
    float_tensor(array_from(&out_dims, out)?, x.dtype())
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::op::{Op, Padding, PoolAttrs};

    fn pool(
        kernel: usize,
        stride: usize,
        dilation: usize,
        pads: [usize; 2],
        ceil_mode: bool,
    ) -> PoolAttrs {
        PoolAttrs {
            kernel: vec![kernel],
            strides: vec![stride],
            dilations: vec![dilation],
            padding: Padding::Explicit(pads.to_vec()),
            ceil_mode,
        }
    }

    #[test]
    fn max_pool_2d_stride_2() {
        let x = f32s(
            &[1, 1, 4, 4],
            &(1..=16).map(|v| v as f32).collect::<Vec<_>>(),
        );
        let p = PoolAttrs {
            kernel: vec![2, 2],
            strides: vec![2, 2],
            dilations: vec![1, 1],
            padding: Padding::Explicit(vec![0; 4]),
            ceil_mode: false,
        };
        assert_close(&run1(&Op::MaxPool(p), &[&x]), &[6., 8., 14., 16.]);
    }

    #[test]
    fn max_pool_padding_acts_as_minus_infinity() {
        let x = f32s(&[1, 1, 3], &[-5., -3., -1.]);
        assert_close(
            &run1(&Op::MaxPool(pool(2, 1, 1, [1, 1], false)), &[&x]),
            &[-5., -3., -1., -1.],
        );
        let q = i8s(&[1, 1, 3], &[-5, -3, -1]);
        assert_eq!(
            run1(&Op::MaxPool(pool(2, 1, 1, [1, 1], false)), &[&q]),
            i8s(&[1, 1, 4], &[-5, -3, -1, -1])
        );
    }

    #[test]
    fn max_pool_dilation_and_ceil_mode() {
        let x = f32s(&[1, 1, 5], &[1., 5., 2., 4., 3.]);
        assert_close(
            &run1(&Op::MaxPool(pool(2, 1, 2, [0, 0], false)), &[&x]),
            &[2., 5., 3.],
        );
        let u = u8s(&[1, 1, 5], &[1, 2, 3, 4, 5]);
        assert_eq!(
            run1(&Op::MaxPool(pool(2, 2, 1, [0, 0], true)), &[&u]),
            u8s(&[1, 1, 3], &[2, 4, 5])
        );
        assert_eq!(
            run1(&Op::MaxPool(pool(2, 2, 1, [0, 0], false)), &[&u]),
            u8s(&[1, 1, 2], &[2, 4])
        );
    }

    #[test]
    fn average_pool_count_include_pad() {
        let x = f32s(&[1, 1, 3], &[1., 2., 3.]);
        let p = pool(3, 1, 1, [1, 1], false);
        let excl = Op::AveragePool {
            pool: p.clone(),
            count_include_pad: false,
        };
        assert_close(&run1(&excl, &[&x]), &[1.5, 2., 2.5]);
        let incl = Op::AveragePool {
            pool: p,
            count_include_pad: true,
        };
        assert_close(&run1(&incl, &[&x]), &[1., 2., 5. / 3.]);
    }

    #[test]
    fn average_pool_ceil_mode_window_past_the_end() {
        let x = f32s(&[1, 1, 5], &[1., 2., 3., 4., 5.]);
        let excl = Op::AveragePool {
            pool: pool(2, 2, 1, [0, 0], true),
            count_include_pad: false,
        };
        assert_close(&run1(&excl, &[&x]), &[1.5, 3.5, 5.]);
        // The tap past the end counts as padding (ONNX reference and onnxruntime 1.20).
        let incl = Op::AveragePool {
            pool: pool(2, 2, 1, [0, 0], true),
            count_include_pad: true,
        };
        assert_close(&run1(&incl, &[&x]), &[1.5, 3.5, 2.5]);
        // With end padding 1 and kernel 3, the last window reads 5, pad, beyond: 5 / 3.
        let padded = Op::AveragePool {
            pool: pool(3, 2, 1, [0, 1], true),
            count_include_pad: true,
        };
        assert_close(&run1(&padded, &[&x]), &[2., 4., 5. / 3.]);
    }

    #[test]
    fn global_pools() {
        let x = f32s(&[1, 2, 2, 1], &[1., 2., 3., 7.]);
        let avg = run1(&Op::GlobalAveragePool, &[&x]);
        assert_eq!(avg.dims(), &[1, 2, 1, 1]);
        assert_close(&avg, &[1.5, 5.]);
        assert_close(&run1(&Op::GlobalMaxPool, &[&x]), &[2., 7.]);
    }
}
