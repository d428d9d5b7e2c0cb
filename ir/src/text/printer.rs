//! Graph → `.qir` text.

use super::{quote_name, quote_word, PrintOptions};
use crate::dtype::{Dim, TensorType};
use crate::graph::{Graph, ValueDef, ValueId};
use crate::op::{Activation, ConvAttrs, GemmAttrs, Op, Padding, PoolAttrs};
use crate::quant::{QParams, ZeroPoint};
use crate::tensor::Tensor;
use std::fmt::{Display, Write};

pub fn print_graph(g: &Graph, opts: &PrintOptions) -> String {
    let mut out = String::new();
    let inputs: Vec<String> = g
        .inputs()
        .iter()
        .map(|gi| {
            let v = g.value(gi.value);
            format!(
                "{}: {}",
                value_ref(g, gi.value),
                declared_type(&v.ty, &gi.declared)
            )
        })
        .collect();
    let outputs: Vec<String> = g.outputs().iter().map(|&o| value_ref(g, o)).collect();
    let _ = writeln!(
        out,
        "graph {}({}) -> ({}) {{",
        quote_word(&g.name),
        inputs.join(", "),
        outputs.join(", ")
    );

    for (id, v) in g.values() {
        if let ValueDef::Constant(t) = &v.def {
            let _ = writeln!(
                out,
                "  {} = const {}",
                value_ref(g, id),
                tensor_literal(t, opts.elide_constants_over)
            );
        }
    }

    // A cyclic graph cannot be reparsed, but a dump of it should still show every node.
    let order = match g.topo_order() {
        Ok(order) => order,
        Err(e) => {
            let _ = writeln!(out, "  ; not a DAG ({e}); nodes in index order");
            g.petgraph().node_indices().collect()
        }
    };
    for n in order {
        let node = g.node(n);
        let outs: Vec<String> = node.outputs.iter().map(|&o| value_ref(g, o)).collect();
        let args: Vec<String> = node.inputs.iter().map(|&i| value_ref(g, i)).collect();
        let _ = write!(
            out,
            "  {} = {}({})",
            outs.join(", "),
            node.op.name(),
            args.join(", ")
        );
        let attrs = op_attrs(&node.op);
        if !attrs.is_empty() {
            let kv: Vec<String> = attrs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = write!(out, " {{{}}}", kv.join(", "));
        }
        let types: Vec<String> = node
            .outputs
            .iter()
            .map(|&o| g.value(o).ty.to_string())
            .collect();
        let _ = write!(out, " : {}", types.join(", "));
        let first_output = node.outputs.first().map(|&o| g.value(o).name.as_str());
        if first_output != Some(node.name.as_str()) {
            let _ = write!(out, " @{}", quote_name(&node.name));
        }
        out.push('\n');
    }
    out.push_str("}\n");
    out
}

fn value_ref(g: &Graph, id: ValueId) -> String {
    format!("%{}", quote_name(&g.value(id).name))
}

/// `f32[N=1,3,224,224]`: a symbolic dim shows its name and the size it is bound to.
fn declared_type(ty: &TensorType, declared: &[Dim]) -> String {
    let dims: Vec<String> = declared
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Symbolic(s) => {
                let bound = ty
                    .dims()
                    .get(i)
                    .map_or_else(|| "?".to_string(), |n| n.to_string());
                format!("{}={bound}", quote_word(s))
            }
        })
        .collect();
    format!("{}[{}]", ty.dtype, dims.join(","))
}

/// Shortest text that parses back to the same f32 (Rust's `{:?}` always has a '.' or an
/// exponent, so a float never reads as an integer).
pub fn fmt_f32(v: f32) -> String {
    format!("{v:?}")
}

/// Writes the first `count` elements of a tensor, row-major, separated by ", ". Streams
/// into `out`: the weights of a real model are millions of elements.
fn write_elements(out: &mut String, t: &Tensor, count: usize) {
    fn each<T: Copy>(
        out: &mut String,
        a: &ndarray::ArrayD<T>,
        count: usize,
        f: impl Fn(&mut String, T),
    ) {
        for (i, &v) in a.iter().take(count).enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            f(out, v);
        }
    }
    match t {
        Tensor::F32(a) => each(out, a, count, write_f32),
        Tensor::F16(a) => each(out, a, count, |o, v| write_f32(o, v.to_f32())),
        Tensor::I8(a) => each(out, a, count, write_display),
        Tensor::U8(a) => each(out, a, count, write_display),
        Tensor::I32(a) => each(out, a, count, write_display),
        Tensor::I64(a) => each(out, a, count, write_display),
        Tensor::Bool(a) => each(out, a, count, write_display),
    }
}

fn write_f32(out: &mut String, v: f32) {
    let _ = write!(out, "{v:?}");
}

fn write_display(out: &mut String, v: impl Display) {
    let _ = write!(out, "{v}");
}

/// Whether there are two or more elements and all are bitwise equal (so `-0.0` and `0.0`
/// differ, and one NaN bit pattern repeated counts as equal).
fn is_splat(t: &Tensor) -> bool {
    fn same<T: Copy, K: PartialEq>(a: &ndarray::ArrayD<T>, key: impl Fn(T) -> K) -> bool {
        let mut it = a.iter();
        match it.next() {
            Some(&first) => a.len() >= 2 && it.all(|&v| key(v) == key(first)),
            None => false,
        }
    }
    match t {
        Tensor::F32(a) => same(a, f32::to_bits),
        Tensor::F16(a) => same(a, half::f16::to_bits),
        Tensor::I8(a) => same(a, |v| v),
        Tensor::U8(a) => same(a, |v| v),
        Tensor::I32(a) => same(a, |v| v),
        Tensor::I64(a) => same(a, |v| v),
        Tensor::Bool(a) => same(a, |v| v),
    }
}

/// `f32[2,2] dense<1.0, 2.0, 3.0, 4.0>`, `f32[64] splat<0.0>` or an elided form.
pub fn tensor_literal(t: &Tensor, elide_over: Option<usize>) -> String {
    let ty = t.ty();
    let mut out = ty.to_string();
    if is_splat(t) {
        out.push_str(" splat<");
        write_elements(&mut out, t, 1);
    } else if elide_over.is_some_and(|limit| t.numel() > limit) {
        let _ = write!(out, " dense<elided {} elements", t.numel());
    } else {
        out.push_str(" dense<");
        write_elements(&mut out, t, t.numel());
    }
    out.push('>');
    out
}

fn list<T: Display>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(|v| v.to_string()).collect();
    format!("[{}]", parts.join(","))
}

fn padding(p: &Padding) -> String {
    match p {
        Padding::Explicit(pads) => list(pads),
        Padding::SameUpper => "same_upper".into(),
        Padding::SameLower => "same_lower".into(),
    }
}

/// `u8(scale=0.1, zp=128)` per tensor, `i8(axis=0, scale=[0.1, 0.2], zp=[0, 0])` per channel.
pub fn qparams(q: &QParams) -> String {
    match q.axis() {
        None => format!(
            "{}(scale={}, zp={})",
            q.dtype(),
            fmt_f32(q.scales()[0]),
            q.zero_points()[0]
        ),
        Some(axis) => {
            let scales: Vec<String> = q.scales().iter().map(|&s| fmt_f32(s)).collect();
            format!(
                "{}(axis={axis}, scale=[{}], zp={})",
                q.dtype(),
                scales.join(", "),
                list(q.zero_points())
            )
        }
    }
}

/// `128` for one zero point per tensor, `(axis=1, zp=[1,2])` per channel.
fn zero_point(z: &ZeroPoint) -> String {
    match (z.axis, z.values.as_slice()) {
        (None, [v]) => v.to_string(),
        (None, values) => format!("(zp={})", list(values)),
        (Some(axis), values) => format!("(axis={axis}, zp={})", list(values)),
    }
}

fn window_attrs(
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pads: &Padding,
) -> Vec<(&'static str, String)> {
    vec![
        ("kernel", list(kernel)),
        ("strides", list(strides)),
        ("dilations", list(dilations)),
        ("pads", padding(pads)),
    ]
}

fn conv_attrs(c: &ConvAttrs) -> Vec<(&'static str, String)> {
    let mut a = window_attrs(&c.kernel, &c.strides, &c.dilations, &c.padding);
    a.push(("group", c.group.to_string()));
    a
}

fn pool_attrs(p: &PoolAttrs) -> Vec<(&'static str, String)> {
    let mut a = window_attrs(&p.kernel, &p.strides, &p.dilations, &p.padding);
    a.push(("ceil_mode", p.ceil_mode.to_string()));
    a
}

/// Every attribute of an op, in a fixed order, as `key=value` parts.
pub fn op_attrs(op: &Op) -> Vec<(&'static str, String)> {
    let s = |v: &dyn Display| v.to_string();
    match op {
        Op::Conv(c) => conv_attrs(c),
        Op::BatchNorm { epsilon } => vec![("epsilon", fmt_f32(*epsilon))],
        Op::Activation(a) => activation_params(a),
        Op::Binary(_)
        | Op::Sum
        | Op::GlobalAveragePool
        | Op::GlobalMaxPool
        | Op::MatMul
        | Op::Identity
        | Op::DynamicQuantizeLinear => vec![],
        Op::Concat { axis } | Op::Flatten { axis } | Op::Gather { axis } => vec![("axis", s(axis))],
        Op::Split { axis, sizes } => vec![("axis", s(axis)), ("sizes", list(sizes))],
        Op::MaxPool(p) => pool_attrs(p),
        Op::AveragePool {
            pool,
            count_include_pad,
        } => {
            let mut a = pool_attrs(pool);
            a.push(("count_include_pad", s(count_include_pad)));
            a
        }
        Op::Gemm(g) => gemm_attrs(g),
        Op::Reshape { shape, allow_zero } => {
            vec![("shape", list(shape)), ("allow_zero", s(allow_zero))]
        }
        Op::Transpose { perm } => vec![("perm", list(perm))],
        Op::Squeeze { axes } | Op::Unsqueeze { axes } => vec![("axes", list(axes))],
        Op::Softmax { axis, coerce_2d } => vec![("axis", s(axis)), ("coerce_2d", s(coerce_2d))],
        Op::Lrn(l) => vec![
            ("alpha", fmt_f32(l.alpha)),
            ("beta", fmt_f32(l.beta)),
            ("bias", fmt_f32(l.bias)),
            ("size", s(&l.size)),
        ],
        Op::Dropout { mask_output } => vec![("mask_output", s(mask_output))],
        Op::Pad { pads, value } => vec![("pads", list(pads)), ("value", fmt_f32(*value))],
        Op::Shape { start, end } => vec![("start", s(start)), ("end", s(end))],
        Op::Slice {
            starts,
            ends,
            axes,
            steps,
        } => vec![
            ("starts", list(starts)),
            ("ends", list(ends)),
            ("axes", list(axes)),
            ("steps", list(steps)),
        ],
        Op::Cast { to } => vec![("to", s(to))],
        Op::ReduceMean { axes, keep_dims } => {
            vec![("axes", list(axes)), ("keep_dims", s(keep_dims))]
        }
        Op::ConstantOfShape { shape, value } => vec![
            ("shape", list(shape)),
            ("value", tensor_literal(value, None)),
        ],
        Op::QuantizeLinear(q) | Op::DequantizeLinear(q) => vec![("q", qparams(q))],
        Op::QLinearConv { conv, x, w, y } => {
            let mut a = conv_attrs(conv);
            a.extend([("x", qparams(x)), ("w", qparams(w)), ("y", qparams(y))]);
            a
        }
        Op::QuantizedConv {
            conv,
            x,
            w,
            y,
            residual,
            clamp,
        } => {
            let mut a = conv_attrs(conv);
            a.extend([("x", qparams(x)), ("w", qparams(w)), ("y", qparams(y))]);
            a.extend(residual.as_ref().map(|r| ("residual", qparams(r))));
            a.extend(clamp.map(|(lo, hi)| ("clamp", list(&[lo, hi]))));
            a
        }
        Op::QuantizedMatMul { a, b, y, clamp } => {
            let mut attrs = vec![("a", qparams(a)), ("b", qparams(b)), ("y", qparams(y))];
            attrs.extend(clamp.map(|(lo, hi)| ("clamp", list(&[lo, hi]))));
            attrs
        }
        Op::QLinearMatMul { a, b, y } => {
            vec![("a", qparams(a)), ("b", qparams(b)), ("y", qparams(y))]
        }
        Op::QuantizedAdd { a, b, y, clamp } => {
            let mut attrs = vec![("a", qparams(a)), ("b", qparams(b)), ("y", qparams(y))];
            attrs.extend(clamp.map(|(lo, hi)| ("clamp", list(&[lo, hi]))));
            attrs
        }
        Op::QuantizedGlobalAveragePool { x, y } => vec![("x", qparams(x)), ("y", qparams(y))],
        Op::ConvInteger {
            conv,
            x_zero_point,
            w_zero_point,
        } => {
            let mut a = conv_attrs(conv);
            // A run-time zero point is the node's third input: no attribute.
            a.extend(x_zero_point.constant().map(|zp| ("x_zp", zero_point(zp))));
            a.push(("w_zp", zero_point(w_zero_point)));
            a
        }
        Op::MatMulInteger {
            a_zero_point,
            b_zero_point,
        } => {
            let mut a: Vec<_> = a_zero_point
                .constant()
                .map(|zp| ("a_zp", zero_point(zp)))
                .into_iter()
                .collect();
            a.push(("b_zp", zero_point(b_zero_point)));
            a
        }
        Op::FusedConv {
            conv,
            residual,
            activation,
        } => {
            let mut a = conv_attrs(conv);
            a.push(("residual", s(residual)));
            a.extend(
                activation
                    .as_ref()
                    .map(|act| ("activation", fused_activation(act))),
            );
            a
        }
        Op::DynamicQuantizedConv {
            conv,
            w,
            residual,
            activation,
        } => {
            let mut a = conv_attrs(conv);
            a.push(("w", qparams(w)));
            a.push(("residual", s(residual)));
            a.extend(
                activation
                    .as_ref()
                    .map(|act| ("activation", fused_activation(act))),
            );
            a
        }
        Op::DynamicQuantizedMatMul { b, activation } => {
            let mut a = vec![("b", qparams(b))];
            a.extend(
                activation
                    .as_ref()
                    .map(|act| ("activation", fused_activation(act))),
            );
            a
        }
        Op::FusedGemm { gemm, activation } => {
            let mut a = gemm_attrs(gemm);
            a.extend(
                activation
                    .as_ref()
                    .map(|act| ("activation", fused_activation(act))),
            );
            a
        }
    }
}

fn gemm_attrs(g: &GemmAttrs) -> Vec<(&'static str, String)> {
    vec![
        ("alpha", fmt_f32(g.alpha)),
        ("beta", fmt_f32(g.beta)),
        ("trans_a", g.trans_a.to_string()),
        ("trans_b", g.trans_b.to_string()),
    ]
}

/// An activation's parameters, keyed as the standalone op's attributes.
fn activation_params(a: &Activation) -> Vec<(&'static str, String)> {
    match a {
        Activation::LeakyRelu { alpha } => vec![("alpha", fmt_f32(*alpha))],
        Activation::Clip { min, max } => vec![("min", fmt_f32(*min)), ("max", fmt_f32(*max))],
        Activation::HardSigmoid { alpha, beta } => {
            vec![("alpha", fmt_f32(*alpha)), ("beta", fmt_f32(*beta))]
        }
        Activation::Relu | Activation::Sigmoid | Activation::HardSwish | Activation::Tanh => {
            vec![]
        }
    }
}

/// The keyword of an activation inside a fused op's `activation=` attribute. Lower case, so
/// it never reads as the name of a standalone op.
pub fn activation_keyword(a: &Activation) -> &'static str {
    match a {
        Activation::Relu => "relu",
        Activation::LeakyRelu { .. } => "leaky_relu",
        Activation::Clip { .. } => "clip",
        Activation::Sigmoid => "sigmoid",
        Activation::HardSigmoid { .. } => "hard_sigmoid",
        Activation::HardSwish => "hard_swish",
        Activation::Tanh => "tanh",
    }
}

/// `relu`, `leaky_relu(alpha=0.1)`, `clip(min=0.0, max=6.0)`: the keyword, then the same
/// parameters the standalone op prints, when it has any.
fn fused_activation(a: &Activation) -> String {
    let params = activation_params(a);
    let keyword = activation_keyword(a);
    if params.is_empty() {
        return keyword.to_string();
    }
    let kv: Vec<String> = params
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!("{keyword}({})", kv.join(", "))
}
