//! Convolutions: float Conv, ConvInteger and QLinearConv, N-dimensional, grouped.
//!
//! All three lower each (image, group) pair to one matrix product: the weights of the group
//! `[cout/g, cin/g * kernel]` times an im2col matrix `[cin/g * kernel, out positions]`. Padding
//! enters the im2col matrix as zero; for the integer ops that is the zero point, because the
//! zero point has already been subtracted from every real input element (ONNX pads the
//! quantized input with its zero point, so padded taps contribute nothing).

use super::kernel::{gemm, MulAcc};
use super::quant::{int_tensor, int_values, requantize};
use super::{array_from, float_tensor, float_values, op_err, row_major, R};
use crate::infer::resolve_pads;
use crate::op::ConvAttrs;
use crate::quant::{QParams, ZeroPoint};
use crate::tensor::Tensor;

/// The sizes of one convolution, resolved from attributes and input shapes.
struct ConvGeometry {
    batch: usize,
    cin: usize,
    cout: usize,
    group: usize,
    input: Vec<usize>,
    output: Vec<usize>,
    kernel: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    pads_begin: Vec<usize>,
}

impl ConvGeometry {
    fn new(attrs: &ConvAttrs, x: &[usize], w: &[usize]) -> R<ConvGeometry> {
        let input = x[2..].to_vec();
        let (pads_begin, pads_end) = resolve_pads(
            &attrs.padding,
            &input,
            &attrs.kernel,
            &attrs.strides,
            &attrs.dilations,
        )
        .map_err(super::EvalError::Op)?;
        let mut output = Vec::with_capacity(input.len());
        for d in 0..input.len() {
            let span = (attrs.kernel[d] - 1) * attrs.dilations[d] + 1;
            let padded = input[d] + pads_begin[d] + pads_end[d];
            let o = padded.checked_sub(span).ok_or_else(|| {
                op_err(format!("kernel span {span} exceeds padded input {padded}"))
            })?;
            output.push(o / attrs.strides[d] + 1);
        }
        Ok(ConvGeometry {
            batch: x[0],
            cin: x[1],
            cout: w[0],
            group: attrs.group,
            input,
            output,
            kernel: attrs.kernel.clone(),
            strides: attrs.strides.clone(),
            dilations: attrs.dilations.clone(),
            pads_begin,
        })
    }

    fn in_size(&self) -> usize {
        self.input.iter().product()
    }
    fn out_size(&self) -> usize {
        self.output.iter().product()
    }
    fn kernel_size(&self) -> usize {
        self.kernel.iter().product()
    }
    fn out_dims(&self) -> Vec<usize> {
        let mut d = vec![self.batch, self.cout];
        d.extend_from_slice(&self.output);
        d
    }

    /// A 1x1 window with unit stride and no padding: the input already is the im2col matrix.
    fn is_pointwise(&self) -> bool {
        self.kernel.iter().all(|&k| k == 1)
            && self.strides.iter().all(|&s| s == 1)
            && self.pads_begin.iter().all(|&p| p == 0)
            && self.input == self.output
    }

    /// Fills `col` (`channels * kernel_size` rows of `out_size`) from `channels` input planes.
    fn im2col<T: Copy>(&self, x: &[T], channels: usize, pad: T, col: &mut [T]) {
        let nd = self.kernel.len();
        let (in_size, out_size, ks) = (self.in_size(), self.out_size(), self.kernel_size());
        // tables[d][kd * out[d] + od]: the input coordinate a tap reads, None in the padding.
        let tables: Vec<Vec<Option<usize>>> = (0..nd)
            .map(|d| {
                let (pb, n) = (self.pads_begin[d], self.input[d]);
                (0..self.kernel[d])
                    .flat_map(|kd| {
                        (0..self.output[d]).map(move |od| {
                            (od * self.strides[d] + kd * self.dilations[d])
                                .checked_sub(pb)
                                .filter(|&p| p < n)
                        })
                    })
                    .collect()
            })
            .collect();
        let mut in_strides = vec![1; nd];
        for d in (0..nd.saturating_sub(1)).rev() {
            in_strides[d] = in_strides[d + 1] * self.input[d + 1];
        }
        let last = nd - 1;
        let row_len = self.output[last];
        let mut kidx = vec![0; nd];
        for kflat in 0..ks {
            let mut rem = kflat;
            for d in (0..nd).rev() {
                kidx[d] = rem % self.kernel[d];
                rem /= self.kernel[d];
            }
            let last_table = &tables[last][kidx[last] * row_len..][..row_len];
            for ci in 0..channels {
                let plane = &x[ci * in_size..][..in_size];
                let dst_row = &mut col[(ci * ks + kflat) * out_size..][..out_size];
                let mut oidx = vec![0; last];
                for seg in dst_row.chunks_mut(row_len) {
                    let mut base = Some(0);
                    for d in 0..last {
                        base = match (base, tables[d][kidx[d] * self.output[d] + oidx[d]]) {
                            (Some(b), Some(p)) => Some(b + p * in_strides[d]),
                            _ => None,
                        };
                    }
                    match base {
                        None => seg.fill(pad),
                        Some(b) => {
                            for (o, src) in seg.iter_mut().zip(last_table) {
                                *o = match src {
                                    Some(p) => plane[b + p],
                                    None => pad,
                                };
                            }
                        }
                    }
                    for d in (0..last).rev() {
                        oidx[d] += 1;
                        if oidx[d] < self.output[d] {
                            break;
                        }
                        oidx[d] = 0;
                    }
                }
            }
        }
    }

    /// The convolution without bias:
    /// `out[b, co, ...] = sum over ci, k of w[co, ci, k] * x[b, g * cin_g + ci, at(k)]`.
    fn run<T: MulAcc>(&self, x: &[T], w: &[T]) -> Vec<T> {
        let (cin_g, cout_g) = (self.cin / self.group, self.cout / self.group);
        let (in_size, out_size) = (self.in_size(), self.out_size());
        let rows = cin_g * self.kernel_size();
        let mut out = vec![T::default(); self.batch * self.cout * out_size];
        let pointwise = self.is_pointwise();
        let mut col = if pointwise {
            Vec::new()
        } else {
            vec![T::default(); rows * out_size]
        };
        for b in 0..self.batch {
            for g in 0..self.group {
                let xg = &x[(b * self.cin + g * cin_g) * in_size..][..cin_g * in_size];
                let wg = &w[g * cout_g * rows..][..cout_g * rows];
                let og = &mut out[(b * self.cout + g * cout_g) * out_size..][..cout_g * out_size];
                if pointwise {
                    gemm(cout_g, out_size, rows, wg, xg, og);
                } else {
                    self.im2col(xg, cin_g, T::default(), &mut col);
                    gemm(cout_g, out_size, rows, wg, &col, og);
                }
            }
        }
        out
    }
}

/// ONNX Conv on f32 or f16 (computed in f32), with optional bias.
pub(super) fn conv_float(
    attrs: &ConvAttrs,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
) -> R<Tensor> {
    let geo = ConvGeometry::new(attrs, x.dims(), w.dims())?;
    let (xv, wv) = (float_values(x)?, float_values(w)?);
    let mut out = geo.run(&row_major(&xv), &row_major(&wv));
    if let Some(bias) = bias {
        let bv = float_values(bias)?;
        let bv = row_major(&bv);
        let out_size = geo.out_size();
        for (i, plane) in out.chunks_mut(out_size.max(1)).enumerate() {
            let b = bv[i % geo.cout];
            plane.iter_mut().for_each(|v| *v += b);
        }
    }
    float_tensor(array_from(&geo.out_dims(), out)?, x.dtype())
}

/// `x - zero_point` for every element of an 8-bit tensor, the zero point per tensor or per
/// index along `zp_axis` (whose size is `zp.len()`).
pub(super) fn centered(t: &Tensor, zp: &[i32], zp_axis: Option<usize>) -> R<Vec<i32>> {
    let values = int_values(t)?;
    let dims = t.dims();
    match zp_axis {
        None => {
            let z = *zp.first().ok_or_else(|| op_err("empty zero point"))?;
            Ok(values.into_iter().map(|v| v - z).collect())
        }
        Some(axis) => {
            if axis >= dims.len() || dims[axis] != zp.len() {
                return Err(op_err(format!(
                    "{} zero points for axis {axis} of shape {dims:?}",
                    zp.len()
                )));
            }
            let inner: usize = dims[axis + 1..].iter().product();
            Ok(values
                .into_iter()
                .enumerate()
                .map(|(i, v)| v - zp[(i / inner.max(1)) % zp.len()])
                .collect())
        }
    }
}

/// ConvInteger: exact i32 convolution of `(x - x_zero_point)` and `(w - w_zero_point)`.
pub(super) fn conv_integer(
    attrs: &ConvAttrs,
    x_zp: &ZeroPoint,
    w_zp: &ZeroPoint,
    x: &Tensor,
    w: &Tensor,
) -> R<Tensor> {
    if x_zp.axis.is_some() {
        return Err(op_err("ConvInteger x_zero_point must be per tensor"));
    }
    if w_zp.axis.is_some_and(|a| a != 0) {
        return Err(op_err(
            "ConvInteger w_zero_point must be per tensor or per output channel (axis 0)",
        ));
    }
    let geo = ConvGeometry::new(attrs, x.dims(), w.dims())?;
    let xc = centered(x, &x_zp.values, None)?;
    let wc = centered(w, &w_zp.values, w_zp.axis)?;
    let out = geo.run(&xc, &wc);
    Ok(Tensor::I32(array_from(&geo.out_dims(), out)?))
}

/// The exact i32 accumulators (wrapping) of the convolution of `(x − zp_x)` and
/// `(w − zp_w[c])`, before any bias: the output dims and the row-major values. Shared by
/// ConvInteger-like ops outside this file (qcc's realized QuantizedConv).
pub(super) fn integer_accumulators(
    attrs: &ConvAttrs,
    x: &Tensor,
    x_zero_point: &[i32],
    w: &Tensor,
    w_zero_points: &[i32],
    w_axis: Option<usize>,
) -> R<(Vec<usize>, Vec<i32>)> {
    let geo = ConvGeometry::new(attrs, x.dims(), w.dims())?;
    let xc = centered(x, x_zero_point, None)?;
    let wc = centered(w, w_zero_points, w_axis)?;
    Ok((geo.out_dims(), geo.run(&xc, &wc)))
}

/// QLinearConv: the exact i32 accumulation of ConvInteger plus the i32 bias, requantized per
/// output channel with `multiplier = (x_scale * w_scale[c]) / y_scale` (see
/// [`super::quant::requantize`] for the rounding).
pub(super) fn qlinear_conv(
    attrs: &ConvAttrs,
    qx: &QParams,
    qw: &QParams,
    qy: &QParams,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
) -> R<Tensor> {
    if !qx.is_per_tensor() || !qy.is_per_tensor() {
        return Err(op_err(
            "QLinearConv x and y quantization must be per tensor",
        ));
    }
    if qw.axis().is_some_and(|a| a != 0) {
        return Err(op_err(
            "QLinearConv w quantization must be per tensor or per output channel (axis 0)",
        ));
    }
    let geo = ConvGeometry::new(attrs, x.dims(), w.dims())?;
    let xc = centered(x, qx.zero_points(), None)?;
    let wc = centered(w, qw.zero_points(), qw.axis())?;
    let mut acc = geo.run(&xc, &wc);
    let out_size = geo.out_size().max(1);
    let bias = bias
        .map(|b| b.as_i32().map(|a| row_major(a).into_owned()))
        .transpose()
        .map_err(|e| op_err(e.to_string()))?;
    let (x_scale, _) = qx.channel(0);
    let (y_scale, y_zp) = qy.channel(0);
    for (i, plane) in acc.chunks_mut(out_size).enumerate() {
        let c = i % geo.cout;
        let b = bias.as_ref().map_or(0, |b| b[c]);
        let multiplier = (x_scale * qw.channel(c).0) / y_scale;
        for v in plane.iter_mut() {
            *v = requantize(v.wrapping_add(b), multiplier, y_zp, qy.dtype());
        }
    }
    int_tensor(qy.dtype(), &geo.out_dims(), acc)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use crate::op::{ConvAttrs, Op, Padding};
    use crate::quant::{InputZeroPoint, QParams, ZeroPoint};
    use crate::{DType, Tensor};

    fn attrs(
        kernel: &[usize],
        strides: &[usize],
        dilations: &[usize],
        padding: Padding,
        group: usize,
    ) -> ConvAttrs {
        ConvAttrs {
            kernel: kernel.to_vec(),
            strides: strides.to_vec(),
            dilations: dilations.to_vec(),
            padding,
            group,
        }
    }

    fn one_to_nine() -> Tensor {
        f32s(&[1, 1, 3, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9.])
    }

    #[test]
    fn conv_2d_valid_window() {
        let w = f32s(&[1, 1, 2, 2], &[1., 1., 1., 1.]);
        let op = Op::Conv(attrs(
            &[2, 2],
            &[1, 1],
            &[1, 1],
            Padding::Explicit(vec![0; 4]),
            1,
        ));
        let y = run1(&op, &[&one_to_nine(), &w]);
        assert_eq!(y.dims(), &[1, 1, 2, 2]);
        assert_close(&y, &[12., 16., 24., 28.]);
    }

    #[test]
    fn conv_2d_padding_stride_and_bias() {
        let w = f32s(&[1, 1, 3, 3], &[1.; 9]);
        let b = f32s(&[1], &[1.]);
        let op = Op::Conv(attrs(
            &[3, 3],
            &[2, 2],
            &[1, 1],
            Padding::Explicit(vec![1; 4]),
            1,
        ));
        // Windows centred on the corners: each sees the 2x2 block of its corner.
        assert_close(&run1(&op, &[&one_to_nine(), &w, &b]), &[13., 17., 25., 29.]);
    }

    #[test]
    fn conv_1d_dilation() {
        let x = f32s(&[1, 1, 5], &[1., 2., 3., 4., 5.]);
        let w = f32s(&[1, 1, 2], &[1., 10.]);
        let op = Op::Conv(attrs(&[2], &[1], &[2], Padding::Explicit(vec![0, 0]), 1));
        assert_close(&run1(&op, &[&x, &w]), &[31., 42., 53.]);
    }

    #[test]
    fn depthwise_groups_use_their_own_weights() {
        let x = f32s(&[1, 2, 3], &[1., 2., 3., 10., 20., 30.]);
        let w = f32s(&[2, 1, 1], &[2., 3.]);
        let op = Op::Conv(attrs(&[1], &[1], &[1], Padding::Explicit(vec![0, 0]), 2));
        assert_close(&run1(&op, &[&x, &w]), &[2., 4., 6., 30., 60., 90.]);
    }

    #[test]
    fn grouped_conv_sums_only_its_group_channels() {
        // 4 input channels, 2 groups, 2 outputs: output g sums channels 2g and 2g+1.
        let x = f32s(&[1, 4, 1], &[1., 2., 4., 8.]);
        let w = f32s(&[2, 2, 1], &[1., 1., 1., 1.]);
        let op = Op::Conv(attrs(&[1], &[1], &[1], Padding::Explicit(vec![0, 0]), 2));
        assert_close(&run1(&op, &[&x, &w]), &[3., 12.]);
    }

    #[test]
    fn same_upper_and_same_lower_pad_opposite_ends() {
        let x = f32s(&[1, 1, 4], &[1., 2., 3., 4.]);
        let w = f32s(&[1, 1, 2], &[1., 10.]);
        let upper = Op::Conv(attrs(&[2], &[1], &[1], Padding::SameUpper, 1));
        assert_close(&run1(&upper, &[&x, &w]), &[21., 32., 43., 4.]);
        let lower = Op::Conv(attrs(&[2], &[1], &[1], Padding::SameLower, 1));
        assert_close(&run1(&lower, &[&x, &w]), &[10., 21., 32., 43.]);
    }

    #[test]
    fn conv_3d_and_f16() {
        let x = f32s(&[1, 1, 2, 2, 2], &[1.; 8]);
        let w = f32s(&[1, 1, 2, 2, 2], &[0.5; 8]);
        let op = Op::Conv(attrs(
            &[2, 2, 2],
            &[1, 1, 1],
            &[1, 1, 1],
            Padding::Explicit(vec![0; 6]),
            1,
        ));
        assert_close(&run1(&op, &[&x, &w]), &[4.]);
        let (xh, wh) = (
            super::super::elementwise::cast(&x, DType::F16),
            super::super::elementwise::cast(&w, DType::F16),
        );
        let y = run1(&op, &[&xh, &wh]);
        assert_eq!(y.dtype(), DType::F16);
        assert_close(&y, &[4.]);
    }

    #[test]
    fn conv_integer_pads_with_the_zero_point() {
        let x = u8s(&[1, 1, 3], &[1, 2, 3]);
        let w = u8s(&[1, 1, 2], &[3, 4]);
        let op = Op::ConvInteger {
            conv: attrs(&[2], &[1], &[1], Padding::Explicit(vec![1, 1]), 1),
            x_zero_point: InputZeroPoint::Constant(ZeroPoint {
                axis: None,
                values: vec![1],
            }),
            w_zero_point: ZeroPoint {
                axis: Some(0),
                values: vec![2],
            },
        };
        // Centered x = [0, 1, 2], padded with 0; centered w = [1, 2].
        let y = run1(&op, &[&x, &w]);
        assert_eq!(y, i32s(&[1, 1, 4], &[0, 2, 5, 2]));
        // The same zero point read at run time gives the same result; another one differs.
        let Op::ConvInteger {
            conv, w_zero_point, ..
        } = op
        else {
            unreachable!()
        };
        let run_time = Op::ConvInteger {
            conv,
            x_zero_point: InputZeroPoint::RunTime,
            w_zero_point,
        };
        assert_eq!(run1(&run_time, &[&x, &w, &u8s(&[1], &[1])]), y);
        // Centered x = [−1, 0, 1]: [−2, −1, 2, 1].
        let y2 = run1(&run_time, &[&x, &w, &u8s(&[], &[2])]);
        assert_eq!(y2, i32s(&[1, 1, 4], &[-2, -1, 2, 1]));
    }

    #[test]
    fn qlinear_conv_requantizes_per_channel_half_to_even() {
        let x = u8s(&[1, 1, 2], &[10, 20]);
        let w = i8s(&[2, 1, 1], &[2, -3]);
        let conv = attrs(&[1], &[1], &[1], Padding::Explicit(vec![0, 0]), 1);
        let op = Op::QLinearConv {
            conv,
            x: QParams::per_tensor(DType::U8, 0.5, 10).unwrap(),
            w: QParams::per_channel(DType::I8, 0, vec![0.25, 0.5], vec![0, 0]).unwrap(),
            y: QParams::per_tensor(DType::U8, 1.0, 128).unwrap(),
        };
        // acc: channel 0 [0, 20] * 0.125 = [0, 2.5] -> [0, 2];
        // channel 1 [0, -30] * 0.25 = [0, -7.5] -> [0, -8].
        assert_eq!(run1(&op, &[&x, &w]), u8s(&[1, 2, 2], &[128, 130, 128, 120]));
        let bias = i32s(&[2], &[1, 10000]);
        // Channel 0 [1, 21] * 0.125 -> [0, 3]; channel 1 saturates at 255.
        assert_eq!(
            run1(&op, &[&x, &w, &bias]),
            u8s(&[1, 2, 2], &[128, 131, 255, 255])
        );
    }
}
