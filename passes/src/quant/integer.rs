//! `realize-integer-products`: the integer products of models that arrive quantized in
//! onnxruntime's dynamic form (`quantize_dynamic`) become qcc's dynamically quantized layers,
//! so they run on the int8 kernels with their float epilogue:
//!
//! ```text
//! xq, xs, xz = DynamicQuantizeLinear(x)
//! acc = ConvInteger(xq, W, xz, zw)          or MatMulInteger(xq, W, xz, zw)
//! y   = Cast<f32>(acc) · Mul(xs, s_w)       the Mul of the scales, in either order
//! y   = y + bias                            optional
//! y   = y + r                               optional, convolutions only
//! y   = act(y)                              optional
//!   →  y = DynamicQuantizedConv(xq, xs, xz, W', bias) {w=(s_w, zw'), residual, activation}
//! ```
//!
//! Every step the chain spells is a step of the op's definition
//! ([`Op::DynamicQuantizedConv`]), in the same order and with the same f32 roundings, so the
//! rewrite is exact: `Cast` rounds the i32 to nearest even as `f32(acc)` does, `xs·s_w` is one
//! f32 product either way (multiplication commutes bit for bit), and so do the adds. A missing
//! bias is `-0.0`, the one f32 that leaves every value unchanged under addition (`+0.0` would
//! turn `-0.0` into `+0.0`). A missing scale stage is `xs = 1`, `s_w = 1` (exact), so the same
//! rewrite serves `Cast(ConvInteger(...))` with constant zero points.
//!
//! Weights are constants; u8 weights become the s8 values `w − 128` with zero points
//! `zw − 128` (the same differences `w − zw`), since the kernels multiply u8 by s8. The chain
//! stops at the first value with another reader or that is a graph output, so nothing the
//! rest of the graph reads disappears. Products this pass does not realize (s8 inputs, a
//! per-row input zero point, a non-constant weight, an i32 result read by something other than
//! a Cast to f32) stay as they are, with a note; the back end has no kernel for them and says so.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use qcc_ir::{
    Activation, BinaryOp, DType, Graph, GraphError, InputZeroPoint, Node, NodeId, Op, QParams,
    Tensor, ValueDef, ValueId, ZeroPoint,
};

use crate::{Pass, PassError};

const PASS: &str = "realize-integer-products";

/// The pass; its notes name the integer products it left alone and why.
#[derive(Default)]
pub struct RealizeIntegerProducts {
    notes: Mutex<Vec<String>>,
}

impl Pass for RealizeIntegerProducts {
    fn name(&self) -> &'static str {
        PASS
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let (changed, notes) = realize_integer_products(graph)?;
        *self.notes.lock().unwrap_or_else(|e| e.into_inner()) = notes;
        Ok(changed)
    }

    fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Which product a chain starts with.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Product {
    Conv,
    MatMul,
}

/// One matched chain: the operands of the op that replaces it, in the old graph.
struct Chain {
    /// The ConvInteger/MatMulInteger node (its name and attributes name the new layer).
    product: NodeId,
    kind: Product,
    input: ValueId,
    /// A run-time f32 scalar, or `None` for the constant 1.
    input_scale: Option<ValueId>,
    /// A run-time u8 scalar, or the constant zero point.
    input_zero_point: Result<ValueId, u8>,
    weight: Tensor,
    weight_name: String,
    weight_params: QParams,
    bias: Tensor,
    residual: Option<ValueId>,
    activation: Option<Activation>,
}

/// Rewrites every matching chain; returns whether anything changed and the notes.
pub fn realize_integer_products(graph: &mut Graph) -> Result<(bool, Vec<String>), PassError> {
    let graph_err = |source| PassError::Graph { pass: PASS, source };
    let mut notes = Vec::new();
    // Keyed by the chain's last value: the rewrite happens when the rebuild reaches it.
    let mut chains: HashMap<ValueId, Chain> = HashMap::new();
    // Nodes already in a chain: two chains can reach the same residual Add (a ResNet block's
    // main path and its downsampling conv); the first one in topological order takes it.
    let mut claimed: HashSet<NodeId> = HashSet::new();
    for id in graph.live_nodes().map_err(graph_err)? {
        let node = graph.node(id);
        let kind = match node.op {
            Op::ConvInteger { .. } => Product::Conv,
            Op::MatMulInteger { .. } => Product::MatMul,
            _ => continue,
        };
        match match_chain(graph, id, kind, &claimed) {
            Ok((last, chain, nodes)) => {
                claimed.extend(nodes);
                chains.insert(last, chain);
            }
            Err(reason) => notes.push(format!(
                "node '{}' ({}) is not realized: {reason}",
                node.name,
                node.op.name()
            )),
        }
    }
    if chains.is_empty() {
        return Ok((false, notes));
    }
    let rewritten = graph
        .rebuild(|r, node| match chains.get(&node.outputs[0]) {
            Some(chain) => emit(r, node, chain),
            // The chain's earlier nodes are copied too; nothing reads the copies, so the
            // second rebuild below drops them.
            None => r.copy_node(node),
        })
        .map_err(graph_err)?;
    *graph = rewritten
        .rebuild(|r, node| r.copy_node(node))
        .map_err(graph_err)?;
    Ok((true, notes))
}

/// The single reader of `value` (node and input index), if it has exactly one and is not a
/// graph output.
fn only_reader(graph: &Graph, value: ValueId) -> Option<(NodeId, usize)> {
    if graph.outputs().contains(&value) {
        return None;
    }
    match graph.consumers(value)[..] {
        [one] => Some(one),
        _ => None,
    }
}

/// The values of constant `t` (f32) when it broadcasts against an output of rank
/// `out_rank` along `axis` only (`channels` long there): one value, or `channels`.
fn channel_values(t: &Tensor, out_rank: usize, axis: usize, channels: usize) -> Option<Vec<f32>> {
    let values: Vec<f32> = t.as_f32().ok()?.iter().copied().collect();
    let dims = t.dims();
    if dims.len() > out_rank {
        return None;
    }
    let offset = out_rank - dims.len();
    for (i, &d) in dims.iter().enumerate() {
        let along_axis = i + offset == axis;
        if d != 1 && !(along_axis && d == channels) {
            return None;
        }
    }
    Some(values)
}

/// A run-time f32 scalar (one element, not a constant).
fn is_run_time_scalar(graph: &Graph, v: ValueId) -> bool {
    let ty = &graph.value(v).ty;
    ty.dtype == DType::F32
        && ty.dims().iter().product::<usize>() == 1
        && graph.constant(v).is_none()
}

/// The other operand of binary `node` whose operand `index` is the chain's value.
fn other_operand(node: &Node, index: usize) -> ValueId {
    node.inputs[1 - index]
}

/// The chain that starts at product `id`, avoiding `claimed` nodes: the value it ends with,
/// the rewrite, and the nodes it takes.
fn match_chain(
    graph: &Graph,
    id: NodeId,
    kind: Product,
    claimed: &HashSet<NodeId>,
) -> Result<(ValueId, Chain, Vec<NodeId>), String> {
    let node = graph.node(id);
    let input = node.inputs[0];
    if graph.value(input).ty.dtype != DType::U8 {
        return Err("its input is not u8 (the int8 kernels take u8 activations)".into());
    }
    let (input_zp, weight_zp) = match &node.op {
        Op::ConvInteger {
            x_zero_point,
            w_zero_point,
            ..
        } => (x_zero_point, w_zero_point),
        Op::MatMulInteger {
            a_zero_point,
            b_zero_point,
        } => (a_zero_point, b_zero_point),
        other => return Err(format!("{} is not an integer product", other.name())),
    };
    let input_zero_point = match input_zp {
        InputZeroPoint::RunTime => Ok(node.inputs[2]),
        InputZeroPoint::Constant(zp) => match (zp.axis, &zp.values[..]) {
            (None, &[v]) => Err(u8::try_from(v).map_err(|_| format!("zero point {v}"))?),
            _ => return Err("its input has one zero point per row".into()),
        },
    };
    let weight = graph
        .constant(node.inputs[1])
        .ok_or("its weight is not a constant")?;
    let out_ty = &graph.value(node.outputs[0]).ty;
    let out_rank = out_ty.rank();
    let (axis, weight_axis, channels) = match kind {
        Product::Conv => (1, 0, weight.dims()[0]),
        Product::MatMul => {
            if weight.dims().len() != 2 || graph.value(input).ty.rank() < 2 {
                return Err("only a rank ≥ 2 input times a rank-2 weight is realized".into());
            }
            (out_rank - 1, 1, weight.dims()[1])
        }
    };
    let (weight, weight_zero_points) = signed_weight(weight, weight_zp, weight_axis, channels)?;

    // Cast to f32: the i32 must be read by nothing else.
    let (cast_id, _) =
        only_reader(graph, node.outputs[0]).ok_or("its i32 result has other readers")?;
    let cast = graph.node(cast_id);
    if cast.op != (Op::Cast { to: DType::F32 }) {
        return Err(format!(
            "its i32 result is read by {}, not by a Cast to f32",
            cast.op.name()
        ));
    }
    let mut last = cast.outputs[0];
    let mut nodes = vec![id, cast_id];
    let float_ty = graph.value(last).ty.clone();
    // The next chain node, if `last` has one reader (not in another chain) whose output keeps
    // the type and which is `op` (any activation when `op` is `None`).
    let next = |last: ValueId, op: Option<&Op>| -> Option<(NodeId, &Node, usize)> {
        let (id, index) = only_reader(graph, last).filter(|(n, _)| !claimed.contains(n))?;
        let n = graph.node(id);
        let fits = match op {
            Some(op) => n.op == *op,
            None => matches!(n.op, Op::Activation(_)),
        };
        (fits && graph.value(n.outputs[0]).ty == float_ty).then_some((id, n, index))
    };

    // The scales: `Mul(·, S)` with S = xs·s_w, a constant s_w, or a run-time xs.
    let mut input_scale = None;
    let mut weight_scales = vec![1.0f32];
    if let Some((mul_id, mul, index)) = next(last, Some(&Op::Binary(BinaryOp::Mul))) {
        let s = other_operand(mul, index);
        let constant = |v: ValueId| {
            graph
                .constant(v)
                .and_then(|t| channel_values(t, out_rank, axis, channels))
        };
        // S = Mul(xs, s_w) with xs a run-time scalar: S has s_w's shape (xs has one element
        // and, since the Mul's output keeps the type, no rank beyond the output's).
        let product_of_scales = || match graph.value(s).def {
            ValueDef::Node { node: p, .. } if graph.node(p).op == Op::Binary(BinaryOp::Mul) => {
                let (a, b) = (graph.node(p).inputs[0], graph.node(p).inputs[1]);
                match (constant(a), constant(b)) {
                    (None, Some(values)) if is_run_time_scalar(graph, a) => Some((a, values)),
                    (Some(values), None) if is_run_time_scalar(graph, b) => Some((b, values)),
                    _ => None,
                }
            }
            _ => None,
        };
        let split = if let Some(values) = constant(s) {
            Some((None, values))
        } else if let Some((xs, values)) = product_of_scales() {
            Some((Some(xs), values))
        } else if is_run_time_scalar(graph, s) {
            Some((Some(s), vec![1.0]))
        } else {
            None
        };
        if let Some((scale, values)) = split {
            input_scale = scale;
            weight_scales = values;
            last = mul.outputs[0];
            nodes.push(mul_id);
        }
    }
    let weight_params = weight_qparams(&weight_scales, &weight_zero_points, weight_axis)?;

    // The bias: `Add(·, B)` with a constant per-channel B; else -0.0, which adds nothing.
    let mut bias = vec![-0.0f32; channels];
    if let Some((add_id, add, index)) = next(last, Some(&Op::Binary(BinaryOp::Add))) {
        let b = other_operand(add, index);
        if let Some(values) = graph
            .constant(b)
            .and_then(|t| channel_values(t, out_rank, axis, channels))
        {
            bias = (0..channels)
                .map(|c| values[if values.len() == 1 { 0 } else { c }])
                .collect();
            last = add.outputs[0];
            nodes.push(add_id);
        }
    }
    // A residual: `Add(·, r)` with r of the output's shape, computed at run time.
    let mut residual = None;
    if kind == Product::Conv {
        if let Some((add_id, add, index)) = next(last, Some(&Op::Binary(BinaryOp::Add))) {
            let r = other_operand(add, index);
            if graph.value(r).ty == float_ty && graph.constant(r).is_none() {
                residual = Some(r);
                last = add.outputs[0];
                nodes.push(add_id);
            }
        }
    }
    let mut activation = None;
    if let Some((act_id, n, _)) = next(last, None) {
        if let Op::Activation(a) = n.op {
            activation = Some(a);
            last = n.outputs[0];
            nodes.push(act_id);
        }
    }
    let chain = Chain {
        product: id,
        kind,
        input,
        input_scale,
        input_zero_point,
        weight_name: graph.value(node.inputs[1]).name.clone(),
        weight,
        weight_params,
        bias: Tensor::from_f32(&[channels], bias),
        residual,
        activation,
    };
    Ok((last, chain, nodes))
}

/// The weight as s8 with its zero points (one, or one per channel): u8 weights shift by 128.
fn signed_weight(
    weight: &Tensor,
    zp: &ZeroPoint,
    axis: usize,
    channels: usize,
) -> Result<(Tensor, Vec<i32>), String> {
    match zp.axis {
        None => {}
        Some(a) if a == axis && zp.values.len() == channels => {}
        Some(a) => return Err(format!("its weight's zero points run along axis {a}")),
    }
    match weight {
        Tensor::I8(_) => Ok((weight.clone(), zp.values.clone())),
        Tensor::U8(values) => {
            let shifted = values.mapv(|v| (i32::from(v) - 128) as i8);
            let zero_points = zp.values.iter().map(|&z| z - 128).collect();
            Ok((Tensor::I8(shifted), zero_points))
        }
        other => Err(format!("its weight is {}", other.dtype())),
    }
}

/// The s8 weight's parameters: per tensor when both scales and zero points are, else per
/// channel along `axis`.
fn weight_qparams(scales: &[f32], zero_points: &[i32], axis: usize) -> Result<QParams, String> {
    let channels = scales.len().max(zero_points.len());
    let params = if channels == 1 {
        QParams::new(DType::I8, None, scales.to_vec(), zero_points.to_vec())
    } else {
        let expand = |n: usize| if n == 1 { channels } else { 1 };
        let scales = scales.repeat(expand(scales.len()));
        let zero_points = zero_points.repeat(expand(zero_points.len()));
        QParams::new(DType::I8, Some(axis), scales, zero_points)
    };
    params.map_err(|e| format!("its weight scales: {e}"))
}

/// The new layer, standing for the chain's last value.
fn emit(r: &mut qcc_ir::Rebuilder, last: &Node, chain: &Chain) -> Result<Vec<ValueId>, GraphError> {
    let old = r.old();
    let product = old.node(chain.product);
    let x = r.map(chain.input)?;
    let scale = match chain.input_scale {
        Some(s) => r.map(s)?,
        None => {
            let name = r.new.fresh_name(&format!("{}.input_scale", product.name));
            r.new.add_constant(name, Tensor::from_f32(&[], vec![1.0]))?
        }
    };
    let zero_point = match chain.input_zero_point {
        Ok(v) => r.map(v)?,
        Err(zp) => {
            let name = r
                .new
                .fresh_name(&format!("{}.input_zero_point", product.name));
            let t = Tensor::from_le_bytes(&qcc_ir::TensorType::new(DType::U8, vec![]), &[zp])
                .ok_or_else(|| GraphError::Other("a u8 scalar from one byte".into()))?;
            r.new.add_constant(name, t)?
        }
    };
    let weight_name = r.new.fresh_name(&format!("{}.s8", chain.weight_name));
    let weight = r.new.add_constant(weight_name, chain.weight.clone())?;
    let bias_name = r.new.fresh_name(&format!("{}.bias", product.name));
    let bias = r.new.add_constant(bias_name, chain.bias.clone())?;
    let mut inputs = vec![x, scale, zero_point, weight, bias];
    let op = match (&product.op, chain.kind) {
        (Op::ConvInteger { conv, .. }, Product::Conv) => {
            if let Some(res) = chain.residual {
                inputs.push(r.map(res)?);
            }
            Op::DynamicQuantizedConv {
                conv: conv.clone(),
                w: chain.weight_params.clone(),
                residual: chain.residual.is_some(),
                activation: chain.activation,
            }
        }
        _ => Op::DynamicQuantizedMatMul {
            b: chain.weight_params.clone(),
            activation: chain.activation,
        },
    };
    let name = old.value(last.outputs[0]).name.clone();
    let n = r
        .new
        .add_node(product.name.clone(), op, inputs, vec![name])?;
    Ok(r.new.node(n).outputs.clone())
}

#[cfg(test)]
#[path = "integer_tests.rs"]
mod tests;
