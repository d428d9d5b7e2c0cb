//! `quantize-float-bias`: a QDQ model's convolution or Gemm whose activation and weight
//! arrive dequantized but whose bias is a plain f32 constant (onnxruntime's quantizer leaves
//! it so after fusing a batch norm into the conv, as in open_nsfw) gets the int32 bias every
//! integer kernel takes: `DQ_b(round_half_even(b / (s_x·s_w[c])))`, scale `s_x·s_w[c]` in
//! f32, zero point 0, as onnxruntime's quantizer computes bias scales. The realization rules
//! then see the usual `Conv(DQ x, DQ w, DQ b) → Q` and make an integer op; without this the
//! layer stays in fp32. The change to the result is at most half a unit of the accumulator
//! (`s_x·s_w[c] / 2`) per output: far below one output quantization step.
//!
//! Only layers whose output goes straight to a QuantizeLinear (possibly through a Relu/Clip)
//! are touched: those are the ones realization turns into integer ops.

use std::sync::Mutex;

use qcc_ir::{DType, Graph, GraphError, Node, Op, QParams, ValueDef, ValueId};

use super::insert::quantize_bias;
use crate::{Pass, PassError};

const PASS: &str = "quantize-float-bias";

#[derive(Default)]
pub struct QuantizeFloatBias {
    notes: Mutex<Vec<String>>,
}

impl Pass for QuantizeFloatBias {
    fn name(&self) -> &'static str {
        PASS
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let targets: Vec<String> = graph
            .petgraph()
            .node_indices()
            .filter_map(|n| {
                let node = graph.node(n);
                bias_params(graph, node).map(|_| node.name.clone())
            })
            .collect();
        if targets.is_empty() {
            return Ok(false);
        }
        let new = graph
            .rebuild(|r, node| {
                let Some(params) = bias_params(r.old(), node) else {
                    return r.copy_node(node);
                };
                let old_bias = node.inputs[2];
                let bias = r.old().constant(old_bias).ok_or_else(|| {
                    GraphError::Other(format!("node '{}': bias is not a constant", node.name))
                })?;
                let quantized = quantize_bias(bias, &params)
                    .map_err(|e| GraphError::Other(format!("node '{}': bias: {e}", node.name)))?;
                let bias_name = r.old().value(old_bias).name.clone();
                let q = r.new.add_constant(
                    r.new.fresh_name(&format!("{bias_name}.quantized")),
                    quantized,
                )?;
                let dq_name = r.new.fresh_name(&format!("{bias_name}.dq"));
                let dq = r.new.add_node(
                    r.new.fresh_name(&format!("{}.bias.dequantize", node.name)),
                    Op::DequantizeLinear(params),
                    vec![q],
                    vec![dq_name],
                )?;
                let dq = r.new.node(dq).outputs[0];
                let mut inputs = node
                    .inputs
                    .iter()
                    .map(|&v| r.map(v))
                    .collect::<Result<Vec<_>, _>>()?;
                inputs[2] = dq;
                let names = node
                    .outputs
                    .iter()
                    .map(|&v| r.old().value(v).name.clone())
                    .collect();
                let n = r
                    .new
                    .add_node(node.name.clone(), node.op.clone(), inputs, names)?;
                Ok(r.new.node(n).outputs.clone())
            })
            .map_err(|source| PassError::Graph { pass: PASS, source })?;
        *graph = new;
        *self.notes.lock().unwrap_or_else(|e| e.into_inner()) = vec![format!(
            "f32 biases quantized to int32 at s_x·s_w so these layers run in int8 \
             (onnxruntime keeps them in fp32): {}",
            targets.join(", ")
        )];
        Ok(true)
    }

    fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The DequantizeLinear producing `v`, with its parameters.
fn dequantized_by(graph: &Graph, v: ValueId) -> Option<&QParams> {
    let ValueDef::Node { node, .. } = graph.value(v).def else {
        return None;
    };
    match &graph.node(node).op {
        Op::DequantizeLinear(p) => Some(p),
        _ => None,
    }
}

/// Whether every reader of `v` quantizes it, directly or after one Relu/Clip.
fn feeds_quantize(graph: &Graph, v: ValueId) -> bool {
    let readers = graph.consumers(v);
    !readers.is_empty()
        && readers.iter().all(|&(n, _)| {
            let reader = graph.node(n);
            match &reader.op {
                Op::QuantizeLinear(_) => true,
                Op::Activation(qcc_ir::Activation::Relu | qcc_ir::Activation::Clip { .. }) => {
                    let out = reader.outputs[0];
                    let next = graph.consumers(out);
                    !next.is_empty()
                        && next
                            .iter()
                            .all(|&(m, _)| matches!(graph.node(m).op, Op::QuantizeLinear(_)))
                }
                _ => false,
            }
        })
}

/// The int32 parameters of `node`'s f32 bias, when the node is a Conv or Gemm (`transA` 0,
/// `alpha` = `beta` = 1) over a per-tensor dequantized activation and a dequantized constant
/// weight, with an f32 constant bias of one value per output channel, feeding a quantize.
fn bias_params(graph: &Graph, node: &Node) -> Option<QParams> {
    let channel_axis = match &node.op {
        Op::Conv(_) => 0,
        Op::Gemm(g) if !g.trans_a && g.alpha == 1.0 && g.beta == 1.0 => {
            if g.trans_b {
                0
            } else {
                1
            }
        }
        _ => return None,
    };
    let &bias = node.inputs.get(2)?;
    let b = graph.constant(bias)?;
    let px = dequantized_by(graph, node.inputs[0])?;
    let pw = dequantized_by(graph, node.inputs[1])?;
    let w_source = match graph.value(node.inputs[1]).def {
        ValueDef::Node { node, .. } => graph.node(node).inputs[0],
        _ => return None,
    };
    let w_dims = graph.constant(w_source)?.dims().to_vec();
    let channels = *w_dims.get(channel_axis)?;
    if b.dtype() != DType::F32 || b.dims() != [channels] || !px.is_per_tensor() {
        return None;
    }
    if pw.axis().is_some_and(|a| a != channel_axis) || !feeds_quantize(graph, node.outputs[0]) {
        return None;
    }
    let s_x = px.scales()[0];
    let scales: Vec<f32> = if pw.is_per_tensor() {
        vec![s_x * pw.scales()[0]]
    } else {
        pw.scales().iter().map(|&s| s_x * s).collect()
    };
    if scales.iter().any(|&s| !(s.is_finite() && s > 0.0)) {
        return None;
    }
    let axis = (scales.len() > 1).then_some(0);
    let zero_points = vec![0; scales.len()];
    QParams::new(DType::I32, axis, scales, zero_points).ok()
}
