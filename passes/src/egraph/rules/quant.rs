//! Realization of int8 ops from the QDQ form: the rules that turn `Q_y(op(DQ(x), DQ(w)...))`
//! into qcc's integer ops (`QuantizedConv`, `QuantizedMatMul`, `QuantizedAdd`,
//! `QuantizedGlobalAveragePool`), move `DequantizeLinear` past ops that commute with it, and
//! cancel `QuantizeLinear(DequantizeLinear(x))` pairs with identical parameters.
//!
//! The QDQ form is what the quantization pass inserts (and what ONNX QDQ models hold): an
//! activation `t` is read as `DQ_p(Q_p(t))` with `p` per tensor; a weight is
//! `DQ_w(const Wq)` (i8, or u8 for the snpe profile; per output channel allowed); a bias is
//! `DQ_b(const Bq)` in i32 with scale `s_x·s_w[c]` and zero point 0. The fp32 fusion rules run
//! in the same e-graph, so `Q_y` usually sees a `FusedConv`/`FusedGemm` carrying the activation.
//!
//! Every rule goes one way, towards integer ops, and checks every precondition it relies on;
//! anything else stays in float between its DQ and Q. The realized graph agrees with the QDQ
//! graph within one quantization step of the output (the float graph rounds its f32 sum
//! once in `Q_y`; the integer op rounds the exact sum once in its fixed-point requantization).
//! Exact transformations:
//!
//! - A fused ReLU/Clip becomes a clamp in y's quantized domain: `Q_y` is monotone, so
//!   `Q_y(clip(v, lo, hi)) = clamp(Q_y(v), Q_y(lo), Q_y(hi))`, and `Q_y(0) = zp_y` (ReLU).
//! - u8 weights become i8 by subtracting 128 from the values and the zero points:
//!   `w - zp_w` is unchanged.
//! - `DQ` commutes with views and with MaxPool (DQ is monotone with a positive scale) and
//!   with a Concat of inputs that share its parameters.
//! - `Q_p(DQ_p(q)) = q`: `(q - zp)·s / s` rounds back to `q - zp` (|q - zp| < 2^9).

use super::{as_op, constant, key_of, name_of, ty, Match, TensorRule};
use crate::egraph::lang::{add_op, derived_consts, TGraph, TensorLang};
use egg::Id;
use qcc_ir::quant::quant_range;
use qcc_ir::{
    Activation, ConvAttrs, DType, GemmAttrs, Op, Padding, PoolAttrs, QParams, Tensor, TensorType,
};
use std::sync::Arc;

pub fn rules() -> Vec<Arc<dyn TensorRule>> {
    vec![
        Arc::new(Realize(Kind::Conv)),
        Arc::new(Realize(Kind::MatMul)),
        Arc::new(Realize(Kind::Add)),
        Arc::new(Realize(Kind::GlobalAveragePool)),
        Arc::new(DequantizeMotion),
        Arc::new(ConcatDequantizeMotion),
        Arc::new(QuantizeDequantizeCancel),
    ]
}

/// Which realized op a [`Realize`] rule produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Conv,
    MatMul,
    Add,
    GlobalAveragePool,
}

/// `Q_y(op(DQ...))` → the realized int8 op (see [`realization`] for what each kind matches).
struct Realize(Kind);

/// An input of a realized op, as found by the (read-only) search and built by `apply`.
#[derive(Clone, Debug)]
enum Operand {
    /// An existing class (a quantized activation, or an i32 bias constant).
    Class(Id),
    /// A constant weight made i8 `[.., ..]`: `shift` added to every value (-128 for u8
    /// weights), transposed when `transpose` (a Gemm's `trans_b`).
    Weight {
        class: Id,
        shift: i32,
        transpose: bool,
    },
    /// A zero i32 bias of this many channels (a residual conv needs a bias input).
    ZeroBias(usize),
}

/// The realized op and its inputs.
struct Realization {
    op: Op,
    operands: Vec<Operand>,
}

impl TensorRule for Realize {
    fn name(&self) -> &'static str {
        match self.0 {
            Kind::Conv => "realize-quantized-conv",
            Kind::MatMul => "realize-quantized-matmul",
            Kind::Add => "realize-quantized-add",
            Kind::GlobalAveragePool => "realize-quantized-global-average-pool",
        }
    }

    fn search(&self, eg: &TGraph, class: Id, node: &TensorLang, out: &mut Vec<Match>) {
        let Some((Op::QuantizeLinear(py), ch)) = as_op(eg, node) else {
            return;
        };
        for (inner, act_node) in candidates(eg, ch[0]) {
            let act = act_node.as_ref().and_then(|n| activation_of(eg, n));
            if realization(eg, self.0, py, &inner, act).is_some() {
                let mut nodes = vec![node.clone(), inner];
                nodes.extend(act_node);
                out.push(Match {
                    nodes,
                    classes: vec![class],
                });
            }
        }
    }

    fn apply(&self, eg: &mut TGraph, m: &Match) -> Vec<(Id, Id)> {
        let Some((Op::QuantizeLinear(py), _)) = as_op(eg, &m.nodes[0]) else {
            return Vec::new();
        };
        let act = m.nodes.get(2).and_then(|n| activation_of(eg, n));
        let Some(r) = realization(eg, self.0, py, &m.nodes[1], act) else {
            return Vec::new();
        };
        let name = name_of(eg, &m.nodes[1]);
        let mut inputs = Vec::with_capacity(r.operands.len());
        for operand in &r.operands {
            match materialize(eg, operand, &name) {
                Some(id) => inputs.push(id),
                None => return Vec::new(),
            }
        }
        match add_op(eg, r.op, inputs, &name) {
            Some(new) => vec![(m.classes[0], new)],
            None => Vec::new(),
        }
    }
}

/// The nodes a `Q_y` may realize from its input class `id`: each node of the class, and each
/// node under a ReLU/Clip of the class (returned with that activation node, which becomes the
/// realized op's clamp).
fn candidates(eg: &TGraph, id: Id) -> Vec<(TensorLang, Option<TensorLang>)> {
    let mut out = Vec::new();
    for node in eg[id].iter() {
        out.push((node.clone(), None));
        if let Some((Op::Activation(Activation::Relu | Activation::Clip { .. }), ch)) =
            as_op(eg, node)
        {
            for inner in eg[ch[0]].iter() {
                out.push((inner.clone(), Some(node.clone())));
            }
        }
    }
    out
}

fn activation_of(eg: &TGraph, node: &TensorLang) -> Option<Activation> {
    match as_op(eg, node) {
        Some((Op::Activation(a), _)) => Some(*a),
        _ => None,
    }
}

/// What `Q_y(act(inner))` realizes into, for rule kind `kind` (`act` the separate activation
/// between them, if any); `None` when any precondition fails.
///
/// - Conv: `Conv(DQ x, DQ W, [DQ B])` or `FusedConv{act, residual?}(DQ x, DQ W, B, [DQ r])`,
///   activation none, ReLU or Clip; W constant per tensor or per output channel (axis 0);
///   B the bias-scale DQ of an i32 `[C]` constant or a zero f32 constant.
/// - MatMul: `Gemm`/`FusedGemm(DQ a, DQ B, [DQ C])` with alpha (and beta with C) 1, no
///   `trans_a`, or `MatMul(DQ a, DQ B)`; B a 2-D constant quantized per tensor or per output
///   column, C an i32 `[N]` at the bias scale.
/// - Add: `Add(DQ a, DQ b)`, a, b and the sum of the same dims, `add_multipliers` defined.
/// - GlobalAveragePool: `GlobalAveragePool(DQ x)`, no activation.
fn realization(
    eg: &TGraph,
    kind: Kind,
    py: &QParams,
    inner: &TensorLang,
    act: Option<Activation>,
) -> Option<Realization> {
    if !py.is_per_tensor() || !py.dtype().is_quantized() {
        return None;
    }
    let (op, ch) = as_op(eg, inner)?;
    match (kind, op) {
        (Kind::Conv, Op::Conv(conv)) => conv_realization(eg, conv, ch, false, act, py),
        (
            Kind::Conv,
            Op::FusedConv {
                conv,
                residual,
                activation,
            },
        ) => {
            let act = merge_activations(*activation, act)?;
            conv_realization(eg, conv, ch, *residual, act, py)
        }
        (Kind::MatMul, Op::Gemm(g)) => gemm_realization(eg, Some(g), ch, act, py),
        (
            Kind::MatMul,
            Op::FusedGemm {
                gemm: g,
                activation,
            },
        ) => {
            let act = merge_activations(*activation, act)?;
            gemm_realization(eg, Some(g), ch, act, py)
        }
        (Kind::MatMul, Op::MatMul) => gemm_realization(eg, None, ch, act, py),
        (Kind::Add, Op::Binary(qcc_ir::BinaryOp::Add)) => add_realization(eg, ch, act, py),
        (Kind::GlobalAveragePool, Op::GlobalAveragePool) if act.is_none() => {
            let (px, x) = dequantized_activation(eg, ch[0])?;
            Some(Realization {
                op: Op::QuantizedGlobalAveragePool {
                    x: px,
                    y: py.clone(),
                },
                operands: vec![Operand::Class(x)],
            })
        }
        _ => None,
    }
}

/// The one activation of a fused op and a separate one after it; `None` when both exist.
fn merge_activations(
    fused: Option<Activation>,
    after: Option<Activation>,
) -> Option<Option<Activation>> {
    match (fused, after) {
        (Some(_), Some(_)) => None,
        (a, b) => Some(a.or(b)),
    }
}

fn conv_realization(
    eg: &TGraph,
    conv: &ConvAttrs,
    ch: &[Id],
    residual: bool,
    act: Option<Activation>,
    py: &QParams,
) -> Option<Realization> {
    let clamp = clamp_for(act, py)?;
    let (px, x) = dequantized_activation(eg, ch[0])?;
    let (pw, w) = dequantized_weight(eg, ch[1])?;
    if pw.axis().is_some_and(|a| a != 0) {
        return None;
    }
    let channels = *ty(eg, w)?.dims().first()?;
    let (pw, weight) = int8_weight(&pw, w, false)?;
    let mut operands = vec![Operand::Class(x), weight];
    let bias = match ch.get(2) {
        Some(&b) => bias_operand(eg, b, &px, &pw, channels)?,
        None => None,
    };
    let residual = if residual {
        let (pr, r) = dequantized_activation(eg, *ch.get(3)?)?;
        operands.push(bias.unwrap_or(Operand::ZeroBias(channels)));
        operands.push(Operand::Class(r));
        Some(pr)
    } else {
        operands.extend(bias);
        None
    };
    Some(Realization {
        op: Op::QuantizedConv {
            conv: conv.clone(),
            x: px,
            w: pw,
            y: py.clone(),
            residual,
            clamp,
        },
        operands,
    })
}

/// Gemm/FusedGemm (`gemm` given) or MatMul (`gemm` None) → QuantizedMatMul.
fn gemm_realization(
    eg: &TGraph,
    gemm: Option<&GemmAttrs>,
    ch: &[Id],
    act: Option<Activation>,
    py: &QParams,
) -> Option<Realization> {
    if let Some(g) = gemm {
        let beta_ok = ch.len() < 3 || g.beta == 1.0;
        if g.alpha != 1.0 || !beta_ok || g.trans_a {
            return None;
        }
    }
    let clamp = clamp_for(act, py)?;
    let (pa, a) = dequantized_activation(eg, ch[0])?;
    let a_rank = ty(eg, a)?.rank();
    if a_rank < 2 || (gemm.is_some() && a_rank != 2) {
        return None;
    }
    let (pb, b) = dequantized_weight(eg, ch[1])?;
    let b_dims = ty(eg, b)?.dims().to_vec();
    if b_dims.len() != 2 {
        return None;
    }
    let transpose = gemm.is_some_and(|g| g.trans_b);
    // The output-feature axis of B as stored: 1 for [K, N], 0 for a transposed [N, K].
    let column_axis = if transpose { 0 } else { 1 };
    if pb.axis().is_some_and(|a| a != column_axis) {
        return None;
    }
    let (pb, weight) = int8_weight(&pb, b, transpose)?;
    let mut operands = vec![Operand::Class(a), weight];
    if let Some(&c) = ch.get(2) {
        operands.extend(bias_operand(eg, c, &pa, &pb, b_dims[column_axis])?);
    }
    Some(Realization {
        op: Op::QuantizedMatMul {
            a: pa,
            b: pb,
            y: py.clone(),
            clamp,
        },
        operands,
    })
}

fn add_realization(
    eg: &TGraph,
    ch: &[Id],
    act: Option<Activation>,
    py: &QParams,
) -> Option<Realization> {
    let clamp = clamp_for(act, py)?;
    let (pa, a) = dequantized_activation(eg, ch[0])?;
    let (pb, b) = dequantized_activation(eg, ch[1])?;
    // A broadcasting add is not realized: both operands must already have the sum's dims.
    if ty(eg, a)?.dims() != ty(eg, b)?.dims() {
        return None;
    }
    qcc_ir::op::add_multipliers(&pa, &pb, py).ok()?;
    Some(Realization {
        op: Op::QuantizedAdd {
            a: pa,
            b: pb,
            y: py.clone(),
            clamp,
        },
        operands: vec![Operand::Class(a), Operand::Class(b)],
    })
}

/// The clamp in y's quantized domain of a fused activation: none, ReLU → `[zp_y, max]`,
/// `Clip{lo, hi}` → `[Q_y(lo), Q_y(hi)]` inside y's range. `None` for any other activation
/// (it stays in float) and for an empty or NaN range.
fn clamp_for(act: Option<Activation>, py: &QParams) -> Option<Option<(i32, i32)>> {
    let (qmin, qmax) = quant_range(py.dtype())?;
    let zp = py.zero_points()[0];
    match act {
        None => Some(None),
        Some(Activation::Relu) => Some(Some((zp, qmax as i32))),
        Some(Activation::Clip { min, max }) => {
            if min.is_nan() || max.is_nan() {
                return None;
            }
            let lo = quantize_scalar(min, py).max(qmin as i32);
            let hi = quantize_scalar(max, py).min(qmax as i32);
            (lo <= hi).then_some(Some((lo, hi)))
        }
        Some(_) => None,
    }
}

/// QuantizeLinear of one value with per-tensor `p`, as the interpreter computes it: an f32
/// divide, round half to even, add the zero point, saturate (±inf saturate to the ends).
fn quantize_scalar(v: f32, p: &QParams) -> i32 {
    let (lo, hi) = quant_range(p.dtype()).unwrap_or((i32::MIN as i64, i32::MAX as i64));
    let r = (v / p.scales()[0]).round_ties_even();
    // `as` saturates at the i64 range (and the NaN case is excluded by the caller).
    (r as i64)
        .saturating_add(p.zero_points()[0] as i64)
        .clamp(lo, hi) as i32
}

/// A DequantizeLinear node of class `id` reading an 8-bit activation quantized per tensor:
/// its parameters and input class.
fn dequantized_activation(eg: &TGraph, id: Id) -> Option<(QParams, Id)> {
    eg[id].iter().find_map(|n| match as_op(eg, n) {
        Some((Op::DequantizeLinear(p), ch)) if p.is_per_tensor() && p.dtype().is_quantized() => {
            Some((p.clone(), ch[0]))
        }
        _ => None,
    })
}

/// A DequantizeLinear node of class `id` reading a constant 8-bit weight.
fn dequantized_weight(eg: &TGraph, id: Id) -> Option<(QParams, Id)> {
    eg[id].iter().find_map(|n| match as_op(eg, n) {
        Some((Op::DequantizeLinear(p), ch))
            if matches!(p.dtype(), DType::I8 | DType::U8) && constant(eg, ch[0]).is_some() =>
        {
            Some((p.clone(), ch[0]))
        }
        _ => None,
    })
}

/// The i8 weight operand and its parameters: u8 values and zero points shifted by -128, the
/// per-channel axis swapped when the matrix is transposed.
fn int8_weight(p: &QParams, class: Id, transpose: bool) -> Option<(QParams, Operand)> {
    let shift = if p.dtype() == DType::U8 { -128 } else { 0 };
    let axis = match (p.axis(), transpose) {
        (Some(a), true) => Some(1 - a.min(1)),
        (a, _) => a,
    };
    let zero_points = p.zero_points().iter().map(|&z| z + shift).collect();
    let params = QParams::new(DType::I8, axis, p.scales().to_vec(), zero_points).ok()?;
    let operand = if shift == 0 && !transpose {
        Operand::Class(class)
    } else {
        Operand::Weight {
            class,
            shift,
            transpose,
        }
    };
    Some((params, operand))
}

/// The bias operand of a realized conv/matmul from class `b`: the i32 constant under a DQ at
/// the bias scale (`s_x·s_w[c]` as an f32 product, zero point 0, `channels` values), or
/// nothing for an all-zero f32 constant (the zero bias fusion materialises). `None` (no
/// match) for anything else.
fn bias_operand(
    eg: &TGraph,
    b: Id,
    px: &QParams,
    pw: &QParams,
    channels: usize,
) -> Option<Option<Operand>> {
    if let Some(t) = constant(eg, b) {
        let zero = t.as_f32().ok()?.iter().all(|&v| v == 0.0);
        return zero.then_some(None);
    }
    eg[b].iter().find_map(|n| {
        let (Op::DequantizeLinear(pb), ch) = as_op(eg, n)? else {
            return None;
        };
        let bq = constant(eg, ch[0])?;
        if bq.dtype() != DType::I32 || bq.dims() != [channels] {
            return None;
        }
        let s_x = px.scales()[0];
        let at_bias_scale = pb.dtype() == DType::I32
            && pb.axis().is_none_or(|a| a == 0)
            && (0..channels).all(|c| pb.channel(c) == (s_x * pw.channel(c).0, 0));
        at_bias_scale.then_some(Some(Operand::Class(ch[0])))
    })
}

/// Adds the class an operand stands for (derived constants are computed once per source).
fn materialize(eg: &mut TGraph, operand: &Operand, name: &str) -> Option<Id> {
    match *operand {
        Operand::Class(id) => Some(id),
        Operand::ZeroBias(n) => {
            let ids = derived_consts(eg, format!("quant-zero-bias:{n}"), || {
                let ty = TensorType::new(DType::I32, vec![n]);
                Some(vec![(format!("{name}.bias.zero"), Tensor::zeros(&ty))])
            })?;
            ids.first().copied()
        }
        Operand::Weight {
            class,
            shift,
            transpose,
        } => {
            let source = constant(eg, class)?.clone();
            let cname = eg[class].data.name.as_deref().unwrap_or(name).to_string();
            let key = format!("int8-weight:{}:{shift}:{transpose}", key_of(eg, class));
            let ids = derived_consts(eg, key, || {
                let t = shifted_weight(&source, shift, transpose)?;
                Some(vec![(format!("{cname}.int8"), t)])
            })?;
            ids.first().copied()
        }
    }
}

/// `w + shift` as i8 (values outside i8 make it fail), transposed when asked (2-D only).
fn shifted_weight(w: &Tensor, shift: i32, transpose: bool) -> Option<Tensor> {
    let values = w.to_i64_vec()?;
    let mut dims = w.dims().to_vec();
    let shifted: Vec<i8> = values
        .iter()
        .map(|&v| i8::try_from(v + shift as i64).ok())
        .collect::<Option<_>>()?;
    let data = if transpose {
        let &[rows, cols] = dims.as_slice() else {
            return None;
        };
        dims = vec![cols, rows];
        (0..cols * rows)
            .map(|i| shifted[(i % rows) * cols + i / rows])
            .collect()
    } else {
        shifted
    };
    let bytes: Vec<u8> = data.iter().map(|&v| v as u8).collect();
    Tensor::from_le_bytes(&TensorType::new(DType::I8, dims), &bytes)
}

/// `L(DQ_p(x))` → `DQ_p(L(x))` for the views and MaxPool, `p` per tensor: these ops only move,
/// drop or (MaxPool) select elements, and DQ is monotone, so they commute with it exactly.
/// The moved op then runs on 8-bit data and a `Q_p` after it can cancel.
struct DequantizeMotion;

fn commutes_with_dequantize(op: &Op) -> bool {
    match op {
        Op::Reshape { .. }
        | Op::Flatten { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Transpose { .. }
        | Op::Identity => true,
        Op::MaxPool(p) => every_window_has_a_real_tap(p),
        _ => false,
    }
}

/// Whether no MaxPool window lies entirely in the padding: such a window is -inf in float but
/// the type's minimum in 8 bits, which DQ does not map to -inf. Holds without ceil mode when
/// there is no padding, or when windows are contiguous (dilation 1) and every pad is smaller
/// than the kernel (the `same_*` paddings always are).
fn every_window_has_a_real_tap(p: &PoolAttrs) -> bool {
    if p.ceil_mode {
        return false;
    }
    let pads_below_kernel = |pads: &[usize]| {
        let spatial = p.kernel.len();
        pads.iter()
            .enumerate()
            .all(|(i, &pad)| pad < p.kernel[i % spatial.max(1)])
    };
    match &p.padding {
        Padding::Explicit(pads) if pads.iter().all(|&x| x == 0) => true,
        Padding::Explicit(pads) => p.dilations.iter().all(|&d| d == 1) && pads_below_kernel(pads),
        Padding::SameUpper | Padding::SameLower => p.dilations.iter().all(|&d| d == 1),
    }
}

impl TensorRule for DequantizeMotion {
    fn name(&self) -> &'static str {
        "dequantize-motion"
    }

    fn search(&self, eg: &TGraph, class: Id, node: &TensorLang, out: &mut Vec<Match>) {
        let Some((op, ch)) = as_op(eg, node) else {
            return;
        };
        if ch.len() != 1 || !commutes_with_dequantize(op) {
            return;
        }
        for inner in eg[ch[0]].iter() {
            if let Some((Op::DequantizeLinear(p), _)) = as_op(eg, inner) {
                if p.is_per_tensor() && p.dtype().is_quantized() {
                    out.push(Match {
                        nodes: vec![node.clone(), inner.clone()],
                        classes: vec![class],
                    });
                }
            }
        }
    }

    fn apply(&self, eg: &mut TGraph, m: &Match) -> Vec<(Id, Id)> {
        let (Some((op, _)), Some((Op::DequantizeLinear(p), dq_ch))) =
            (as_op(eg, &m.nodes[0]), as_op(eg, &m.nodes[1]))
        else {
            return Vec::new();
        };
        let (op, p, x) = (op.clone(), p.clone(), dq_ch[0]);
        let name = name_of(eg, &m.nodes[0]);
        let Some(moved) = add_op(eg, op, vec![x], &name) else {
            return Vec::new();
        };
        let dq_name = format!("{name}.dequantize");
        match add_op(eg, Op::DequantizeLinear(p), vec![moved], &dq_name) {
            Some(new) => vec![(m.classes[0], new)],
            None => Vec::new(),
        }
    }
}

/// `Concat(DQ_p(x1), ..., DQ_p(xn))` with one per-tensor `p` → `DQ_p(Concat(x1, ..., xn))`.
struct ConcatDequantizeMotion;

impl ConcatDequantizeMotion {
    /// The shared parameters and the quantized inputs, when every input is a DQ with them.
    fn inputs(eg: &TGraph, ch: &[Id]) -> Option<(QParams, Vec<Id>)> {
        let (p, first) = dequantized_activation(eg, *ch.first()?)?;
        let mut xs = vec![first];
        for &c in &ch[1..] {
            let x = eg[c].iter().find_map(|n| match as_op(eg, n) {
                Some((Op::DequantizeLinear(q), k)) if *q == p => Some(k[0]),
                _ => None,
            })?;
            xs.push(x);
        }
        Some((p, xs))
    }
}

impl TensorRule for ConcatDequantizeMotion {
    fn name(&self) -> &'static str {
        "concat-dequantize-motion"
    }

    fn search(&self, eg: &TGraph, class: Id, node: &TensorLang, out: &mut Vec<Match>) {
        let Some((Op::Concat { .. }, ch)) = as_op(eg, node) else {
            return;
        };
        if Self::inputs(eg, ch).is_some() {
            out.push(Match {
                nodes: vec![node.clone()],
                classes: vec![class],
            });
        }
    }

    fn apply(&self, eg: &mut TGraph, m: &Match) -> Vec<(Id, Id)> {
        let Some((op @ Op::Concat { .. }, ch)) = as_op(eg, &m.nodes[0]) else {
            return Vec::new();
        };
        let op = op.clone();
        let Some((p, xs)) = Self::inputs(eg, ch) else {
            return Vec::new();
        };
        let name = name_of(eg, &m.nodes[0]);
        let Some(concat) = add_op(eg, op, xs, &name) else {
            return Vec::new();
        };
        let dq_name = format!("{name}.dequantize");
        match add_op(eg, Op::DequantizeLinear(p), vec![concat], &dq_name) {
            Some(new) => vec![(m.classes[0], new)],
            None => Vec::new(),
        }
    }
}

/// `Q_p(DQ_p(x))` → `x` when both carry identical parameters (and so x has p's type).
struct QuantizeDequantizeCancel;

impl TensorRule for QuantizeDequantizeCancel {
    fn name(&self) -> &'static str {
        "quantize-dequantize-cancel"
    }

    fn search(&self, eg: &TGraph, class: Id, node: &TensorLang, out: &mut Vec<Match>) {
        let Some((Op::QuantizeLinear(p), ch)) = as_op(eg, node) else {
            return;
        };
        for inner in eg[ch[0]].iter() {
            let Some((Op::DequantizeLinear(q), k)) = as_op(eg, inner) else {
                continue;
            };
            let same_type = ty(eg, k[0]).is_some() && ty(eg, k[0]) == ty(eg, class);
            if q == p && same_type && eg.find(k[0]) != eg.find(class) {
                out.push(Match {
                    nodes: vec![node.clone()],
                    classes: vec![class, k[0]],
                });
            }
        }
    }

    fn apply(&self, _eg: &mut TGraph, m: &Match) -> Vec<(Id, Id)> {
        vec![(m.classes[0], m.classes[1])]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(dtype: DType, scale: f32, zp: i32) -> QParams {
        QParams::per_tensor(dtype, scale, zp).unwrap()
    }

    #[test]
    fn clamps_are_the_quantized_bounds() {
        let y = p(DType::U8, 0.05, 10);
        assert_eq!(clamp_for(None, &y), Some(None));
        assert_eq!(clamp_for(Some(Activation::Relu), &y), Some(Some((10, 255))));
        // ReLU6: Q(0) = 10, Q(6) = 6 / 0.05 + 10 = 130.
        let relu6 = Activation::Clip { min: 0.0, max: 6.0 };
        assert_eq!(clamp_for(Some(relu6), &y), Some(Some((10, 130))));
        // Bounds beyond the range saturate; infinite bounds are the range.
        let wide = Activation::Clip {
            min: -100.0,
            max: f32::INFINITY,
        };
        assert_eq!(clamp_for(Some(wide), &y), Some(Some((0, 255))));
        let i8y = p(DType::I8, 0.1, -3);
        assert_eq!(
            clamp_for(Some(Activation::Relu), &i8y),
            Some(Some((-3, 127)))
        );
        // Other activations are not realized.
        assert_eq!(clamp_for(Some(Activation::Sigmoid), &y), None);
        let empty = Activation::Clip { min: 2.0, max: 1.0 };
        assert_eq!(clamp_for(Some(empty), &y), None);
    }

    #[test]
    fn quantize_scalar_rounds_half_to_even() {
        let y = p(DType::I8, 0.5, 0);
        assert_eq!(quantize_scalar(0.25, &y), 0);
        assert_eq!(quantize_scalar(0.75, &y), 2);
        assert_eq!(quantize_scalar(-1000.0, &y), -128);
        assert_eq!(quantize_scalar(f32::NEG_INFINITY, &y), -128);
    }

    #[test]
    fn u8_weights_shift_to_i8_and_transpose() {
        let w = Tensor::from_le_bytes(
            &TensorType::new(DType::U8, vec![2, 3]),
            &[0, 128, 255, 1, 2, 3],
        )
        .unwrap();
        let t = shifted_weight(&w, -128, true).unwrap();
        assert_eq!(t.dims(), &[3, 2]);
        assert_eq!(
            t.to_i64_vec().unwrap(),
            vec![-128, -127, 0, -126, 127, -125]
        );
        let pw = QParams::per_channel(DType::U8, 0, vec![0.1, 0.2], vec![128, 130]).unwrap();
        let (q, _) = int8_weight(&pw, Id::from(0), true).unwrap();
        assert_eq!(
            (q.dtype(), q.axis(), q.zero_points()),
            (DType::I8, Some(1), &[0, 2][..])
        );
        // An i8 weight that overflows after a shift cannot happen for u8 sources, but a
        // shifted i8 would: it is refused rather than wrapped.
        let i8w = Tensor::from_le_bytes(&TensorType::new(DType::I8, vec![1]), &[0x80]).unwrap();
        assert!(shifted_weight(&i8w, -128, false).is_none());
    }

    #[test]
    fn dequantize_moves_past_max_pools_without_all_padding_windows() {
        let pool = |pads: Vec<usize>, dilation: usize, ceil_mode: bool| PoolAttrs {
            kernel: vec![3, 3],
            strides: vec![2, 2],
            dilations: vec![dilation; 2],
            padding: Padding::Explicit(pads),
            ceil_mode,
        };
        // ResNet's stem pool: 3x3, stride 2, pad 1.
        assert!(every_window_has_a_real_tap(&pool(vec![1; 4], 1, false)));
        assert!(every_window_has_a_real_tap(&pool(vec![0; 4], 2, false)));
        assert!(!every_window_has_a_real_tap(&pool(
            vec![3, 0, 0, 0],
            1,
            false
        )));
        assert!(!every_window_has_a_real_tap(&pool(vec![1; 4], 2, false)));
        assert!(!every_window_has_a_real_tap(&pool(vec![0; 4], 1, true)));
    }
}
