//! `expand-qlinear`: models that arrive quantized with ONNX's operator form
//! (QLinearConv, QLinearMatMul) become the QDQ form, so they go through the same
//! realization as models qcc quantizes itself and as QDQ models:
//!
//! ```text
//! QLinearConv(x, w, b)  →  Q_y(Conv(DQ_x(x), DQ_w(w), DQ_b(b)))     b: i32, scale s_x·s_w[c]
//! QLinearMatMul(a, b)   →  Q_y(MatMul(DQ_a(a), DQ_b(b)))
//! ```
//!
//! The QDQ graph computes in float what the QLinear op computes with its float
//! requantization; the realized integer op then requantizes with qcc's fixed-point policy,
//! which can differ from onnxruntime's float rounding by one step on near-ties (as for every
//! realized op). Both forms are exact in the interpreter.

use crate::{Pass, PassError};
use qcc_ir::{DType, Graph, GraphError, Op, QParams, ValueId};

pub struct ExpandQLinear;

impl Pass for ExpandQLinear {
    fn name(&self) -> &'static str {
        "expand-qlinear"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let any = graph.petgraph().node_indices().any(|n| {
            matches!(
                graph.node(n).op,
                Op::QLinearConv { .. } | Op::QLinearMatMul { .. }
            )
        });
        if !any {
            return Ok(false);
        }
        let err = |source| PassError::Graph {
            pass: "expand-qlinear",
            source,
        };
        let new = graph
            .rebuild(|r, node| {
                let dq = |r: &mut qcc_ir::Rebuilder,
                          v: ValueId,
                          p: &QParams,
                          what: &str|
                 -> Result<ValueId, GraphError> {
                    let x = r.map(v)?;
                    let name = r.new.fresh_name(&format!("{}.{what}.dq", node.name));
                    let n = r.new.add_node(
                        format!("{}.{what}.dequantize", node.name),
                        Op::DequantizeLinear(p.clone()),
                        vec![x],
                        vec![name],
                    )?;
                    Ok(r.new.node(n).outputs[0])
                };
                let (float_op, mut inputs, y) = match &node.op {
                    Op::QLinearConv { conv, x, w, y } => {
                        let mut inputs = vec![
                            dq(r, node.inputs[0], x, "x")?,
                            dq(r, node.inputs[1], w, "w")?,
                        ];
                        if let Some(&b) = node.inputs.get(2) {
                            let scales: Vec<f32> =
                                w.scales().iter().map(|&s| x.scales()[0] * s).collect();
                            let axis = (!w.is_per_tensor()).then_some(0);
                            let zero_points = vec![0; scales.len()];
                            let pb = QParams::new(DType::I32, axis, scales, zero_points)
                                .map_err(|e| GraphError::Other(e.to_string()))?;
                            inputs.push(dq(r, b, &pb, "bias")?);
                        }
                        (Op::Conv(conv.clone()), inputs, y.clone())
                    }
                    Op::QLinearMatMul { a, b, y } => (
                        Op::MatMul,
                        vec![
                            dq(r, node.inputs[0], a, "a")?,
                            dq(r, node.inputs[1], b, "b")?,
                        ],
                        y.clone(),
                    ),
                    _ => return r.copy_node(node),
                };
                let out_name = r.old().value(node.outputs[0]).name.clone();
                let float_name = r.new.fresh_name(&format!("{out_name}.float"));
                let f = r.new.add_node(
                    node.name.clone(),
                    float_op,
                    std::mem::take(&mut inputs),
                    vec![float_name],
                )?;
                let f = r.new.node(f).outputs[0];
                let q = r.new.add_node(
                    format!("{}.quantize", node.name),
                    Op::QuantizeLinear(y),
                    vec![f],
                    vec![out_name],
                )?;
                Ok(r.new.node(q).outputs.clone())
            })
            .map_err(err)?;
        *graph = new;
        Ok(true)
    }
}

/// Whether a graph arrived quantized (Q/DQ pairs, QLinear ops, or onnxruntime's dynamic form
/// with integer products): it is compiled for an int8 target as it is, without calibration
/// statistics.
pub fn is_prequantized(graph: &Graph) -> bool {
    graph.petgraph().node_indices().any(|n| {
        matches!(
            graph.node(n).op,
            Op::QuantizeLinear(_)
                | Op::DequantizeLinear(_)
                | Op::QLinearConv { .. }
                | Op::QLinearMatMul { .. }
                | Op::DynamicQuantizeLinear
                | Op::ConvInteger { .. }
                | Op::MatMulInteger { .. }
        )
    })
}

/// `fold-dequantized-weights`: a DequantizeLinear of a constant left after realization (the
/// weight of a layer that stays in fp32) becomes the f32 constant it computes, so the float
/// kernels read it as any weight. Runs last: before realization the rules need to see the
/// DequantizeLinear.
pub struct FoldDequantizedWeights;

impl Pass for FoldDequantizedWeights {
    fn name(&self) -> &'static str {
        "fold-dequantized-weights"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let is_folded = |g: &Graph, n: qcc_ir::NodeId| {
            let node = g.node(n);
            matches!(node.op, Op::DequantizeLinear(_)) && g.constant(node.inputs[0]).is_some()
        };
        if !graph.petgraph().node_indices().any(|n| is_folded(graph, n)) {
            return Ok(false);
        }
        let new = graph
            .rebuild(|r, node| {
                let Op::DequantizeLinear(p) = &node.op else {
                    return r.copy_node(node);
                };
                let Some(tensor) = r.old().constant(node.inputs[0]) else {
                    return r.copy_node(node);
                };
                let folded = qcc_ir::eval::eval_op(&Op::DequantizeLinear(p.clone()), &[tensor])
                    .map_err(|e| GraphError::Other(format!("node '{}': {e}", node.name)))?;
                let name = r.old().value(node.outputs[0]).name.clone();
                let t = folded.into_iter().next().ok_or_else(|| {
                    GraphError::Other(format!("node '{}' folded to nothing", node.name))
                })?;
                Ok(vec![r.new.add_constant(name, t)?])
            })
            .map_err(|source| PassError::Graph {
                pass: "fold-dequantized-weights",
                source,
            })?;
        *graph = new;
        Ok(true)
    }
}
