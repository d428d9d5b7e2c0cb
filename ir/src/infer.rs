//! Shape and type inference: what each op produces from the types of its inputs.
//!
//! Errors are plain messages; [`crate::Graph`] adds the node name, op and input types.

use crate::dtype::{DType, TensorType};
use crate::op::{Activation, ConvAttrs, Op, Padding, PoolAttrs};

type R<T> = Result<T, String>;

/// Output types of `op` applied to inputs of types `inputs` (count already checked).
pub fn infer_types(op: &Op, inputs: &[&TensorType]) -> R<Vec<TensorType>> {
    let x = inputs.first().copied();
    let first = || x.ok_or_else(|| "missing input".to_string());
    let one = |t: TensorType| Ok(vec![t]);
    match op {
        Op::Conv(attrs) => {
            let (x, w) = (first()?, inputs[1]);
            expect_float(x, "X")?;
            same_dtype(x, w, "W")?;
            if let Some(b) = inputs.get(2) {
                same_dtype(x, b, "B")?;
            }
            let out = conv_output_dims(attrs, x, w, inputs.get(2).copied())?;
            one(TensorType::new(x.dtype, out))
        }
        Op::FusedConv {
            conv,
            residual,
            activation,
        } => {
            let (x, w, b) = (first()?, inputs[1], inputs[2]);
            expect_float(x, "X")?;
            same_dtype(x, w, "W")?;
            same_dtype(x, b, "B")?;
            let out = TensorType::new(x.dtype, conv_output_dims(conv, x, w, Some(b))?);
            if *residual && inputs[3] != &out {
                return Err(format!(
                    "residual input is {}, the conv produces {out}",
                    inputs[3]
                ));
            }
            if let Some(a) = activation {
                infer_types(&Op::Activation(*a), &[&out])?;
            }
            one(out)
        }
        Op::FusedGemm { gemm, activation } => {
            let out = infer_types(&Op::Gemm(*gemm), inputs)?;
            if let Some(a) = activation {
                infer_types(&Op::Activation(*a), &[&out[0]])?;
            }
            Ok(out)
        }
        Op::BatchNorm { .. } => {
            let x = first()?;
            expect_float(x, "X")?;
            if x.rank() < 2 {
                return Err(format!(
                    "input must have a channel dim, has rank {}",
                    x.rank()
                ));
            }
            let c = x.dims()[1];
            for (i, name) in ["scale", "B", "mean", "var"].iter().enumerate() {
                let t = inputs[i + 1];
                same_dtype(x, t, name)?;
                if t.dims() != [c] {
                    return Err(format!("{name} must have shape [{c}], has {}", t.shape));
                }
            }
            one(x.clone())
        }
        Op::Activation(a) => {
            let x = first()?;
            if !matches!(a, Activation::Relu | Activation::Clip { .. }) || x.dtype.is_float() {
                expect_float(x, "X")?;
            }
            if matches!(x.dtype, DType::Bool) {
                return Err("activations do not take bool".into());
            }
            one(x.clone())
        }
        Op::Binary(_) => {
            let (a, b) = (first()?, inputs[1]);
            same_dtype(a, b, "B")?;
            if a.dtype == DType::Bool {
                return Err("arithmetic on bool".into());
            }
            one(TensorType::new(a.dtype, broadcast(a.dims(), b.dims())?))
        }
        Op::Sum => {
            let a = first()?;
            let mut dims = a.dims().to_vec();
            for t in &inputs[1..] {
                same_dtype(a, t, "input")?;
                dims = broadcast(&dims, t.dims())?;
            }
            one(TensorType::new(a.dtype, dims))
        }
        Op::Concat { axis } => {
            let a = first()?;
            check_axis(*axis, a.rank())?;
            let mut dims = a.dims().to_vec();
            for t in &inputs[1..] {
                same_dtype(a, t, "input")?;
                if t.rank() != a.rank()
                    || t.dims()
                        .iter()
                        .zip(a.dims())
                        .enumerate()
                        .any(|(i, (p, q))| i != *axis && p != q)
                {
                    return Err(format!(
                        "inputs {} and {} differ outside axis {axis}",
                        a.shape, t.shape
                    ));
                }
                dims[*axis] += t.dims()[*axis];
            }
            one(TensorType::new(a.dtype, dims))
        }
        Op::Split { axis, sizes } => {
            let a = first()?;
            check_axis(*axis, a.rank())?;
            let total: usize = sizes.iter().sum();
            if total != a.dims()[*axis] {
                return Err(format!(
                    "split sizes {sizes:?} add up to {total}, axis {axis} has {}",
                    a.dims()[*axis]
                ));
            }
            Ok(sizes
                .iter()
                .map(|&s| {
                    let mut d = a.dims().to_vec();
                    d[*axis] = s;
                    TensorType::new(a.dtype, d)
                })
                .collect())
        }
        Op::MaxPool(p) => {
            let x = first()?;
            if !(x.dtype.is_float() || x.dtype.is_quantized()) {
                return Err(format!(
                    "MaxPool takes float or 8-bit input, not {}",
                    x.dtype
                ));
            }
            one(TensorType::new(x.dtype, pool_output_dims(p, x)?))
        }
        Op::AveragePool { pool, .. } => {
            let x = first()?;
            expect_float(x, "X")?;
            one(TensorType::new(x.dtype, pool_output_dims(pool, x)?))
        }
        Op::GlobalAveragePool | Op::GlobalMaxPool => {
            let x = first()?;
            expect_float(x, "X")?;
            if x.rank() < 3 {
                return Err(format!(
                    "needs N, C and spatial dims, has rank {}",
                    x.rank()
                ));
            }
            let mut d = x.dims()[..2].to_vec();
            d.resize(x.rank(), 1);
            one(TensorType::new(x.dtype, d))
        }
        Op::Gemm(g) => {
            let (a, b) = (first()?, inputs[1]);
            expect_float(a, "A")?;
            same_dtype(a, b, "B")?;
            if a.rank() != 2 || b.rank() != 2 {
                return Err(format!(
                    "A and B must be matrices, are {} and {}",
                    a.shape, b.shape
                ));
            }
            let (m, ka) = if g.trans_a {
                (a.dims()[1], a.dims()[0])
            } else {
                (a.dims()[0], a.dims()[1])
            };
            let (kb, n) = if g.trans_b {
                (b.dims()[1], b.dims()[0])
            } else {
                (b.dims()[0], b.dims()[1])
            };
            if ka != kb {
                return Err(format!("inner dimensions differ: {ka} vs {kb}"));
            }
            if let Some(c) = inputs.get(2) {
                same_dtype(a, c, "C")?;
                if broadcast(c.dims(), &[m, n]).ok().as_deref() != Some(&[m, n][..]) {
                    return Err(format!("C {} does not broadcast to [{m},{n}]", c.shape));
                }
            }
            one(TensorType::new(a.dtype, vec![m, n]))
        }
        Op::MatMul => {
            let (a, b) = (first()?, inputs[1]);
            expect_float(a, "A")?;
            same_dtype(a, b, "B")?;
            one(TensorType::new(a.dtype, matmul_dims(a.dims(), b.dims())?))
        }
        Op::MatMulInteger { .. } | Op::QLinearMatMul { .. } => {
            let (a, b) = (first()?, inputs[1]);
            expect_8bit(a, "A")?;
            expect_8bit(b, "B")?;
            let dims = matmul_dims(a.dims(), b.dims())?;
            let dtype = match op {
                Op::QLinearMatMul { a: qa, b: qb, y } => {
                    qparams_match(qa, a, "a")?;
                    qparams_match(qb, b, "b")?;
                    // Per-channel is meaningful only along rows of a and columns of b.
                    if qa.axis().is_some_and(|ax| ax + 2 != a.rank())
                        || qb.axis().is_some_and(|ax| ax + 1 != b.rank())
                        || !y.is_per_tensor()
                    {
                        return Err("a may be per-row, b per-column, y only per-tensor".into());
                    }
                    y.dtype()
                }
                Op::MatMulInteger {
                    a_zero_point,
                    b_zero_point,
                } => {
                    input_zero_point_fits(a_zero_point, inputs.get(2).copied(), a, "a")?;
                    zero_point_fits(b_zero_point, b, "b")?;
                    DType::I32
                }
                _ => unreachable!("outer match arm covers MatMulInteger and QLinearMatMul only"),
            };
            one(TensorType::new(dtype, dims))
        }
        Op::Flatten { axis } => {
            let x = first()?;
            if *axis > x.rank() {
                return Err(format!("axis {axis} out of range for rank {}", x.rank()));
            }
            let outer: usize = x.dims()[..*axis].iter().product();
            let inner: usize = x.dims()[*axis..].iter().product();
            one(TensorType::new(x.dtype, vec![outer, inner]))
        }
        Op::Reshape { shape, allow_zero } => {
            let x = first()?;
            one(TensorType::new(
                x.dtype,
                reshape_dims(x.dims(), shape, *allow_zero)?,
            ))
        }
        Op::Transpose { perm } => {
            let x = first()?;
            let mut sorted = perm.clone();
            sorted.sort_unstable();
            if sorted != (0..x.rank()).collect::<Vec<_>>() {
                return Err(format!(
                    "perm {perm:?} is not a permutation of 0..{}",
                    x.rank()
                ));
            }
            one(TensorType::new(
                x.dtype,
                perm.iter().map(|&p| x.dims()[p]).collect::<Vec<_>>(),
            ))
        }
        Op::Squeeze { axes } => {
            let x = first()?;
            let axes: Vec<usize> = if axes.is_empty() {
                (0..x.rank()).filter(|&i| x.dims()[i] == 1).collect()
            } else {
                axes.clone()
            };
            for &a in &axes {
                check_axis(a, x.rank())?;
                if x.dims()[a] != 1 {
                    return Err(format!("cannot squeeze axis {a} of size {}", x.dims()[a]));
                }
            }
            let d: Vec<usize> = (0..x.rank())
                .filter(|i| !axes.contains(i))
                .map(|i| x.dims()[i])
                .collect();
            one(TensorType::new(x.dtype, d))
        }
        Op::Unsqueeze { axes } => {
            let x = first()?;
            let rank = x.rank() + axes.len();
            let mut src = x.dims().iter();
            let mut d = Vec::with_capacity(rank);
            for i in 0..rank {
                if axes.contains(&i) {
                    d.push(1);
                } else {
                    d.push(*src.next().ok_or_else(|| {
                        format!("axes {axes:?} out of range for output rank {rank}")
                    })?);
                }
            }
            if src.next().is_some() || axes.iter().any(|&a| a >= rank) {
                return Err(format!("axes {axes:?} out of range for output rank {rank}"));
            }
            one(TensorType::new(x.dtype, d))
        }
        Op::Softmax { axis, .. } => {
            let x = first()?;
            expect_float(x, "input")?;
            check_axis(*axis, x.rank())?;
            one(x.clone())
        }
        Op::Lrn(l) => {
            let x = first()?;
            expect_float(x, "X")?;
            if x.rank() < 3 || l.size == 0 {
                return Err(format!(
                    "LRN needs rank >= 3 and size >= 1 (rank {}, size {})",
                    x.rank(),
                    l.size
                ));
            }
            one(x.clone())
        }
        Op::Dropout { mask_output } => {
            let x = first()?;
            let mut out = vec![x.clone()];
            if *mask_output {
                out.push(TensorType::new(DType::Bool, x.dims().to_vec()));
            }
            Ok(out)
        }
        Op::Identity => one(first()?.clone()),
        Op::Pad { pads, .. } => {
            let x = first()?;
            if pads.len() != 2 * x.rank() {
                return Err(format!("{} pads for rank {}", pads.len(), x.rank()));
            }
            let mut d = Vec::with_capacity(x.rank());
            for (i, &n) in x.dims().iter().enumerate() {
                let size = n as i64 + pads[i] + pads[i + x.rank()];
                if size < 0 {
                    return Err(format!("pads {pads:?} crop axis {i} below zero"));
                }
                d.push(size as usize);
            }
            one(TensorType::new(x.dtype, d))
        }
        Op::Shape { start, end } => {
            let x = first()?;
            if start > end || *end > x.rank() {
                return Err(format!("range {start}..{end} out of rank {}", x.rank()));
            }
            one(TensorType::new(DType::I64, vec![end - start]))
        }
        Op::Gather { axis } => {
            let (data, idx) = (first()?, inputs[1]);
            check_axis(*axis, data.rank())?;
            if !matches!(idx.dtype, DType::I32 | DType::I64) {
                return Err(format!("indices must be i32 or i64, are {}", idx.dtype));
            }
            let mut d = data.dims()[..*axis].to_vec();
            d.extend_from_slice(idx.dims());
            d.extend_from_slice(&data.dims()[axis + 1..]);
            one(TensorType::new(data.dtype, d))
        }
        Op::Slice {
            starts,
            ends,
            axes,
            steps,
        } => {
            let x = first()?;
            let mut d = x.dims().to_vec();
            for r in slice_ranges(x.dims(), starts, ends, axes, steps)? {
                d[r.axis] = r.len;
            }
            one(TensorType::new(x.dtype, d))
        }
        Op::Cast { to } => one(TensorType::new(*to, first()?.dims().to_vec())),
        Op::ReduceMean { axes, keep_dims } => {
            let x = first()?;
            expect_float(x, "data")?;
            for &a in axes {
                check_axis(a, x.rank())?;
            }
            let reduced = |i: usize| axes.is_empty() || axes.contains(&i);
            let d: Vec<usize> = if *keep_dims {
                (0..x.rank())
                    .map(|i| if reduced(i) { 1 } else { x.dims()[i] })
                    .collect()
            } else {
                (0..x.rank())
                    .filter(|&i| !reduced(i))
                    .map(|i| x.dims()[i])
                    .collect()
            };
            one(TensorType::new(x.dtype, d))
        }
        Op::ConstantOfShape { shape, value } => {
            if value.numel() != 1 {
                return Err(format!(
                    "value must have one element, has {}",
                    value.numel()
                ));
            }
            one(TensorType::new(value.dtype(), shape.clone()))
        }
        Op::QuantizeLinear(q) => {
            let x = first()?;
            if !matches!(x.dtype, DType::F32 | DType::F16 | DType::I32) {
                return Err(format!("x must be float or i32, is {}", x.dtype));
            }
            if !q.dtype().is_quantized() {
                return Err(format!("cannot quantize to {}", q.dtype()));
            }
            qparams_fit(q, x)?;
            one(TensorType::new(q.dtype(), x.dims().to_vec()))
        }
        Op::DequantizeLinear(q) => {
            let x = first()?;
            qparams_match(q, x, "x")?;
            one(TensorType::new(DType::F32, x.dims().to_vec()))
        }
        Op::QLinearConv {
            conv,
            x: qx,
            w: qw,
            y,
        } => {
            let (x, w) = (first()?, inputs[1]);
            qparams_match(qx, x, "x")?;
            qparams_match(qw, w, "w")?;
            if !qx.is_per_tensor() || !y.is_per_tensor() || qw.axis().is_some_and(|a| a != 0) {
                return Err(
                    "x and y must be quantized per tensor, w per tensor or per output channel"
                        .into(),
                );
            }
            if let Some(b) = inputs.get(2) {
                if b.dtype != DType::I32 {
                    return Err(format!("bias must be i32, is {}", b.dtype));
                }
            }
            let out = conv_output_dims(conv, x, w, inputs.get(2).copied())?;
            one(TensorType::new(y.dtype(), out))
        }
        Op::QuantizedConv {
            conv,
            x: qx,
            w: qw,
            y,
            residual,
            clamp,
        } => {
            let (x, w) = (first()?, inputs[1]);
            realized_operands(qx, x, "x", qw, w, "w", 0, y, *clamp)?;
            let bias = inputs.get(2).copied();
            if let Some(b) = bias {
                expect_i32_bias(b)?;
            }
            let out = TensorType::new(y.dtype(), conv_output_dims(conv, x, w, bias)?);
            if let Some(qr) = residual {
                let r = inputs[3];
                if !qr.dtype().is_quantized() || !qr.is_per_tensor() {
                    return Err(format!("residual must be u8 or i8 per tensor, is {qr}"));
                }
                qparams_match(qr, r, "residual")?;
                if r.dims() != out.dims() {
                    return Err(format!("residual is {r}, the conv produces {out}"));
                }
                crate::op::residual_multipliers(qx, qw, qr)
                    .map_err(|e| format!("residual rescaling: {e}"))?;
            }
            one(out)
        }
        Op::QuantizedMatMul {
            a: qa,
            b: qb,
            y,
            clamp,
        } => {
            let (a, b) = (first()?, inputs[1]);
            if a.rank() < 2 || b.rank() != 2 {
                return Err(format!(
                    "a must have rank >= 2 and b rank 2, are {} and {}",
                    a.shape, b.shape
                ));
            }
            realized_operands(qa, a, "a", qb, b, "b", 1, y, *clamp)?;
            let dims = matmul_dims(a.dims(), b.dims())?;
            if let Some(bias) = inputs.get(2) {
                expect_i32_bias(bias)?;
                if bias.dims() != [b.dims()[1]] {
                    return Err(format!(
                        "bias must have shape [{}], has {}",
                        b.dims()[1],
                        bias.shape
                    ));
                }
            }
            one(TensorType::new(y.dtype(), dims))
        }
        Op::QuantizedAdd {
            a: qa,
            b: qb,
            y,
            clamp,
        } => one(realized_add_operands(
            qa,
            first()?,
            qb,
            inputs[1],
            y,
            *clamp,
        )?),
        Op::QuantizedGlobalAveragePool { x: qx, y } => {
            one(realized_pool_operands(qx, first()?, y)?)
        }
        Op::ConvInteger {
            conv,
            x_zero_point,
            w_zero_point,
        } => {
            let (x, w) = (first()?, inputs[1]);
            expect_8bit(x, "x")?;
            expect_8bit(w, "w")?;
            input_zero_point_fits(x_zero_point, inputs.get(2).copied(), x, "x")?;
            zero_point_fits(w_zero_point, w, "w")?;
            let x_per_channel = x_zero_point.constant().is_some_and(|zp| zp.axis.is_some());
            if x_per_channel || w_zero_point.axis.is_some_and(|a| a != 0) {
                return Err(
                    "x's zero point must be per tensor, w's per tensor or per output channel"
                        .into(),
                );
            }
            one(TensorType::new(
                DType::I32,
                conv_output_dims(conv, x, w, None)?,
            ))
        }
        Op::DynamicQuantizeLinear => {
            let x = first()?;
            if x.dtype != DType::F32 {
                return Err(format!("x must be f32, is {}", x.dtype));
            }
            Ok(vec![
                TensorType::new(DType::U8, x.dims().to_vec()),
                TensorType::new(DType::F32, vec![]),
                TensorType::new(DType::U8, vec![]),
            ])
        }
        Op::DynamicQuantizedConv {
            conv,
            w: qw,
            residual,
            ..
        } => {
            let (x, w) = (first()?, inputs[3]);
            dynamic_operands(&inputs[..3], qw, w, "w", 0)?;
            let out = TensorType::new(DType::F32, conv_output_dims(conv, x, w, None)?);
            expect_f32_bias(inputs[4], w.dims()[0])?;
            if *residual && *inputs[5] != out {
                return Err(format!(
                    "residual is {}, the conv produces {out}",
                    inputs[5]
                ));
            }
            one(out)
        }
        Op::DynamicQuantizedMatMul { b: qb, .. } => {
            let (a, b) = (first()?, inputs[3]);
            if a.rank() < 2 || b.rank() != 2 {
                return Err(format!(
                    "a must have rank >= 2 and b rank 2, are {} and {}",
                    a.shape, b.shape
                ));
            }
            dynamic_operands(&inputs[..3], qb, b, "b", 1)?;
            expect_f32_bias(inputs[4], b.dims()[1])?;
            one(TensorType::new(
                DType::F32,
                matmul_dims(a.dims(), b.dims())?,
            ))
        }
    }
}

/// Numpy broadcasting of two shapes.
pub fn broadcast(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        };
    }
    Ok(out)
}

/// Numpy matmul: 1-D operands are promoted and the promoted dim dropped; batch dims broadcast.
pub fn matmul_dims(a: &[usize], b: &[usize]) -> R<Vec<usize>> {
    if a.is_empty() || b.is_empty() {
        return Err("matmul operands must have rank >= 1".into());
    }
    let a2: Vec<usize> = if a.len() == 1 {
        vec![1, a[0]]
    } else {
        a.to_vec()
    };
    let b2: Vec<usize> = if b.len() == 1 {
        vec![b[0], 1]
    } else {
        b.to_vec()
    };
    let (m, ka) = (a2[a2.len() - 2], a2[a2.len() - 1]);
    let (kb, n) = (b2[b2.len() - 2], b2[b2.len() - 1]);
    if ka != kb {
        return Err(format!("inner dimensions differ: {a:?} x {b:?}"));
    }
    let mut out = broadcast(&a2[..a2.len() - 2], &b2[..b2.len() - 2])?;
    if a.len() > 1 {
        out.push(m);
    }
    if b.len() > 1 {
        out.push(n);
    }
    Ok(out)
}

/// Explicit (begins, ends) pads of a window op for a given input.
pub fn resolve_pads(
    padding: &Padding,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
) -> R<(Vec<usize>, Vec<usize>)> {
    let n = input.len();
    match padding {
        Padding::Explicit(p) => {
            if p.len() != 2 * n {
                return Err(format!("{} pads for {n} spatial dims", p.len()));
            }
            Ok((p[..n].to_vec(), p[n..].to_vec()))
        }
        Padding::SameUpper | Padding::SameLower => {
            let (mut b, mut e) = (vec![0; n], vec![0; n]);
            for i in 0..n {
                let out = input[i].div_ceil(strides[i]);
                let span = (kernel[i] - 1) * dilations[i] + 1;
                let total = (out.saturating_sub(1) * strides[i] + span).saturating_sub(input[i]);
                let small = total / 2;
                (b[i], e[i]) = if matches!(padding, Padding::SameUpper) {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
            }
            Ok((b, e))
        }
    }
}

fn window_lens(kernel: &[usize], strides: &[usize], dilations: &[usize], spatial: usize) -> R<()> {
    if kernel.len() != spatial || strides.len() != spatial || dilations.len() != spatial {
        return Err(format!("kernel {kernel:?}, strides {strides:?} and dilations {dilations:?} must each have {spatial} entries"));
    }
    if kernel.contains(&0) || strides.contains(&0) || dilations.contains(&0) {
        return Err("kernel, strides and dilations must be positive".into());
    }
    Ok(())
}

/// Output spatial size of a window op, given padded input, effective span and stride.
fn window_out(padded: usize, span: usize, stride: usize, ceil: bool) -> R<usize> {
    if padded < span {
        return Err(format!(
            "window of span {span} is larger than the padded input {padded}"
        ));
    }
    let q = padded - span;
    Ok(if ceil { q.div_ceil(stride) } else { q / stride } + 1)
}

fn conv_output_dims(
    c: &ConvAttrs,
    x: &TensorType,
    w: &TensorType,
    bias: Option<&TensorType>,
) -> R<Vec<usize>> {
    let spatial = x
        .rank()
        .checked_sub(2)
        .filter(|&s| s >= 1)
        .ok_or_else(|| format!("X must have rank >= 3, has {}", x.rank()))?;
    if w.rank() != x.rank() {
        return Err(format!("W has rank {}, X has {}", w.rank(), x.rank()));
    }
    window_lens(&c.kernel, &c.strides, &c.dilations, spatial)?;
    if w.dims()[2..] != c.kernel[..] {
        return Err(format!(
            "kernel {:?} differs from weight shape {}",
            c.kernel, w.shape
        ));
    }
    let (cin, cout) = (x.dims()[1], w.dims()[0]);
    if c.group == 0 || cin % c.group != 0 || cout % c.group != 0 || w.dims()[1] * c.group != cin {
        return Err(format!(
            "group {} does not fit {cin} input channels, weight {}",
            c.group, w.shape
        ));
    }
    if let Some(b) = bias {
        if b.dims() != [cout] {
            return Err(format!("bias must have shape [{cout}], has {}", b.shape));
        }
    }
    let input = &x.dims()[2..];
    let (pb, pe) = resolve_pads(&c.padding, input, &c.kernel, &c.strides, &c.dilations)?;
    let mut out = vec![x.dims()[0], cout];
    for i in 0..spatial {
        let span = (c.kernel[i] - 1) * c.dilations[i] + 1;
        out.push(window_out(
            input[i] + pb[i] + pe[i],
            span,
            c.strides[i],
            false,
        )?);
    }
    Ok(out)
}

/// Output dims of a pooling op. With `ceil_mode`, a last window that would start entirely in
/// the end padding is dropped (as ONNX shape inference and PyTorch do; onnxruntime 1.20 keeps
/// it, with a warning).
pub fn pool_output_dims(p: &PoolAttrs, x: &TensorType) -> R<Vec<usize>> {
    let spatial = x
        .rank()
        .checked_sub(2)
        .filter(|&s| s >= 1)
        .ok_or_else(|| format!("X must have rank >= 3, has {}", x.rank()))?;
    window_lens(&p.kernel, &p.strides, &p.dilations, spatial)?;
    let input = &x.dims()[2..];
    let (pb, pe) = resolve_pads(&p.padding, input, &p.kernel, &p.strides, &p.dilations)?;
    let mut out = x.dims()[..2].to_vec();
    for i in 0..spatial {
        let span = (p.kernel[i] - 1) * p.dilations[i] + 1;
        let mut o = window_out(input[i] + pb[i] + pe[i], span, p.strides[i], p.ceil_mode)?;
        if p.ceil_mode && (o - 1) * p.strides[i] >= input[i] + pb[i] {
            o -= 1;
        }
        out.push(o);
    }
    Ok(out)
}

/// ONNX Reshape: 0 copies the input dim (unless `allow_zero`), one -1 is inferred.
pub fn reshape_dims(input: &[usize], shape: &[i64], allow_zero: bool) -> R<Vec<usize>> {
    let numel: usize = input.iter().product();
    let mut out = Vec::with_capacity(shape.len());
    let mut infer_at = None;
    for (i, &s) in shape.iter().enumerate() {
        match s {
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                out.push(1);
            }
            0 if !allow_zero => out.push(*input.get(i).ok_or_else(|| {
                format!("shape {shape:?}: 0 at {i} copies a dim the input lacks")
            })?),
            s if s >= 0 => out.push(s as usize),
            _ => return Err(format!("invalid target shape {shape:?}")),
        }
    }
    let known: usize = out.iter().product();
    if let Some(i) = infer_at {
        if known == 0 || !numel.is_multiple_of(known) {
            return Err(format!(
                "cannot reshape {input:?} ({numel} elements) to {shape:?}"
            ));
        }
        out[i] = numel / known;
    } else if known != numel {
        return Err(format!(
            "cannot reshape {input:?} ({numel} elements) to {shape:?}"
        ));
    }
    Ok(out)
}

/// One axis of a resolved slice: elements `start, start + step, ...`, `len` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceRange {
    pub axis: usize,
    pub start: i64,
    pub step: i64,
    pub len: usize,
}

/// Clamps ONNX slice bounds to the input as the spec describes.
pub fn slice_ranges(
    dims: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: &[usize],
    steps: &[i64],
) -> R<Vec<SliceRange>> {
    if starts.len() != ends.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err("starts, ends, axes and steps must have equal lengths".into());
    }
    let mut out = Vec::with_capacity(axes.len());
    for i in 0..axes.len() {
        let axis = axes[i];
        check_axis(axis, dims.len())?;
        if out.iter().any(|r: &SliceRange| r.axis == axis) {
            return Err(format!("axis {axis} repeated"));
        }
        let n = dims[axis] as i64;
        let step = steps[i];
        if step == 0 {
            return Err("slice step must not be 0".into());
        }
        let norm = |v: i64| if v < 0 { v.saturating_add(n) } else { v };
        let (start, end) = if step > 0 {
            (norm(starts[i]).clamp(0, n), norm(ends[i]).clamp(0, n))
        } else {
            (
                norm(starts[i]).clamp(0, n - 1),
                norm(ends[i]).clamp(-1, n - 1),
            )
        };
        let len = if step > 0 {
            if end > start {
                (end - start + step - 1) / step
            } else {
                0
            }
        } else if start > end {
            (start - end + (-step) - 1) / (-step)
        } else {
            0
        };
        out.push(SliceRange {
            axis,
            start,
            step,
            len: len as usize,
        });
    }
    Ok(out)
}

mod quant_checks;
pub use quant_checks::MAX_POOL_WINDOW;
use quant_checks::*;

#[cfg(test)]
mod tests;
