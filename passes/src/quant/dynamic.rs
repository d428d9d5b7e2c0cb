//! Dynamic quantization (`--mode dynamic`): weights quantized to s8 at compile time,
//! activations quantized per tensor at run time, float outputs (what onnxruntime's
//! `quantize_dynamic` and PyTorch's dynamic quantization do). No calibration is needed: every
//! run quantizes each input with the range it actually has.
//!
//! The pass runs after fusion, on fused layers: each `FusedConv`/`Conv` and
//! `FusedGemm`/`Gemm`/`MatMul` whose weight is a constant becomes a
//! [`Op::DynamicQuantizedConv`]/[`Op::DynamicQuantizedMatMul`] that keeps the layer's name, its
//! bias, residual and activation, fed by one [`Op::DynamicQuantizeLinear`] per distinct input
//! tensor (two layers reading the same tensor share its quantization). Weights follow the
//! profile's weight scheme (granularity, symmetry, scale format): symmetric weights have
//! zero points 0 (`x86-vnni`, `arm`, `tensorrt`, `acl`, `tvm`), asymmetric ones get theirs
//! (`fbgemm` per channel, `snpe` per tensor), which the ops subtract exactly. Weights are
//! always stored as s8: a profile's u8 weights are quantized as u8, then stored as
//! `w − 128` with zero point `zp − 128` (exact: `w − zp` is unchanged).
//!
//! Left in fp32, each with a note: depthwise convolutions (one input channel per output: an
//! int8 dot product of length `kH·kW` does not pay for quantizing its input at run time; on
//! a 144-channel 56×56 3×3 layer the dynamic int8 kernel saves 0.07 ms over fp32, 0.19 vs
//! 0.26 ms, while quantizing its input takes a min/max and a quantize pass over 451K values,
//! about 0.4 ms; models that arrive with quantized depthwise convolutions still run them on
//! that kernel), layers whose weights are not constants, Gemms with `alpha ≠ 1` or a
//! transposed A, and `--exclude`d nodes.

use std::collections::HashMap;
use std::sync::Mutex;

use qcc_ir::{DType, GemmAttrs, Graph, Node, Op, QParams, Rebuilder, Tensor, TensorType, ValueId};

use super::insert::{floor_weight_scales, Exclusions};
use super::{weight_qparams, Profile, QuantType, RangeMethod};
use crate::{Pass, PassError};

const PASS: &str = "quantize-dynamic";

/// What `--mode dynamic` takes.
#[derive(Clone, Debug)]
pub struct DynamicOptions {
    /// Its weight scheme (granularity, symmetry, type, scale format) is used.
    pub profile: Profile,
    /// How the weights' clip ranges are chosen.
    pub weight_method: RangeMethod,
    /// Node-name patterns kept in fp32, as the static `quantize` pass takes them.
    pub exclude: Vec<String>,
}

/// The pass.
pub struct QuantizeDynamic {
    options: DynamicOptions,
    notes: Mutex<Vec<String>>,
}

impl QuantizeDynamic {
    pub fn new(options: DynamicOptions) -> QuantizeDynamic {
        QuantizeDynamic {
            options,
            notes: Mutex::new(Vec::new()),
        }
    }
}

impl Pass for QuantizeDynamic {
    fn name(&self) -> &'static str {
        PASS
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let (changed, notes) = quantize_dynamic(graph, &self.options)?;
        *self.notes.lock().unwrap_or_else(|e| e.into_inner()) = notes;
        Ok(changed)
    }

    fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn pass_err(message: String) -> PassError {
    PassError::Other {
        pass: PASS,
        message,
    }
}

/// A layer the pass rewrites: where its operands are in the old graph.
struct Layer {
    input: ValueId,
    /// The f32 weight in the kernel's layout: `[C_out, C_in/g, kH, kW]` or `[K, N]`.
    weight: Tensor,
    weight_name: String,
    /// f32 `[C_out]` or `[N]`.
    bias: Tensor,
    /// The node's bias input when `bias` is its value unchanged (it keeps its name).
    bias_input: Option<ValueId>,
    residual: Option<ValueId>,
    op: LayerOp,
}

enum LayerOp {
    Conv {
        conv: qcc_ir::ConvAttrs,
        activation: Option<qcc_ir::Activation>,
    },
    MatMul {
        activation: Option<qcc_ir::Activation>,
    },
}

/// Rewrites every eligible layer of `graph`; returns whether anything changed and the notes
/// for the report (layers kept in fp32 and why).
pub fn quantize_dynamic(
    graph: &mut Graph,
    options: &DynamicOptions,
) -> Result<(bool, Vec<String>), PassError> {
    let mut exclusions = Exclusions::new(&options.exclude);
    let mut kept_float = Vec::new();
    let mut excluded = Vec::new();
    // Keyed by the node's first output: unique, unlike node names from a model file.
    let mut layers: HashMap<ValueId, Layer> = HashMap::new();
    for id in graph
        .live_nodes()
        .map_err(|source| PassError::Graph { pass: PASS, source })?
    {
        let node = graph.node(id);
        let is_layer = matches!(
            node.op,
            Op::Conv(_) | Op::FusedConv { .. } | Op::Gemm(_) | Op::FusedGemm { .. } | Op::MatMul
        );
        if !is_layer {
            continue;
        }
        if exclusions.excludes(&node.name) {
            excluded.push(node.name.clone());
            continue;
        }
        match layer_of(graph, node) {
            Ok(layer) => {
                layers.insert(node.outputs[0], layer);
            }
            Err(reason) => kept_float.push(format!(
                "node '{}' ({}) stays fp32: {reason}",
                node.name,
                node.op.display_name()
            )),
        }
    }
    exclusions.check().map_err(pass_err)?;
    let mut notes = Vec::new();
    if !excluded.is_empty() {
        notes.push(format!(
            "kept in fp32 by --exclude: {}",
            excluded.join(", ")
        ));
    }
    notes.extend(kept_float);
    if layers.is_empty() {
        return Ok((false, notes));
    }
    // One DynamicQuantizeLinear per input tensor, shared by every layer that reads it.
    let mut quantized_inputs: HashMap<ValueId, Vec<ValueId>> = HashMap::new();
    let new = graph
        .rebuild(|r, node| {
            let Some(layer) = layers.get(&node.outputs[0]) else {
                return r.copy_node(node);
            };
            let xq = match quantized_inputs.get(&layer.input) {
                Some(values) => values.clone(),
                None => {
                    let values = quantize_input(r, layer.input)?;
                    quantized_inputs.insert(layer.input, values.clone());
                    values
                }
            };
            rewrite_layer(r, node, layer, xq, options)
        })
        .map_err(|source| PassError::Graph { pass: PASS, source })?;
    *graph = new;
    Ok((true, notes))
}

/// `DynamicQuantizeLinear(x)`: the u8 data, scale and zero point, named after `x`.
fn quantize_input(r: &mut Rebuilder, x: ValueId) -> Result<Vec<ValueId>, qcc_ir::GraphError> {
    let name = r.old().value(x).name.clone();
    let x = r.map(x)?;
    let names = ["", ".scale", ".zero_point"]
        .iter()
        .map(|suffix| r.new.fresh_name(&format!("{name}.dynq{suffix}")))
        .collect();
    let node_name = r.new.fresh_name(&format!("{name}.dynamic_quantize"));
    let n = r
        .new
        .add_node(node_name, Op::DynamicQuantizeLinear, vec![x], names)?;
    Ok(r.new.node(n).outputs.clone())
}

fn rewrite_layer(
    r: &mut Rebuilder,
    node: &Node,
    layer: &Layer,
    xq: Vec<ValueId>,
    options: &DynamicOptions,
) -> Result<Vec<ValueId>, qcc_ir::GraphError> {
    let fail = |message: String| qcc_ir::GraphError::Node {
        node: node.name.clone(),
        op: node.op.name(),
        message: format!("dynamic quantization of its weight: {message}"),
        inputs: String::new(),
    };
    let axis = match layer.op {
        LayerOp::Conv { .. } => 0,
        LayerOp::MatMul { .. } => 1,
    };
    let (qw, wq) = quantize_weight(&layer.weight, axis, options).map_err(fail)?;
    let wq_name = r.new.fresh_name(&format!("{}.dynq", layer.weight_name));
    let wq = r.new.add_constant(wq_name, wq)?;
    let bias = match layer.bias_input {
        Some(b) => r.map(b)?,
        None => {
            let name = r.new.fresh_name(&format!("{}.bias", node.name));
            r.new.add_constant(name, layer.bias.clone())?
        }
    };
    let mut inputs = xq;
    inputs.extend([wq, bias]);
    let op = match &layer.op {
        LayerOp::Conv { conv, activation } => {
            if let Some(res) = layer.residual {
                inputs.push(r.map(res)?);
            }
            Op::DynamicQuantizedConv {
                conv: conv.clone(),
                w: qw,
                residual: layer.residual.is_some(),
                activation: *activation,
            }
        }
        LayerOp::MatMul { activation } => Op::DynamicQuantizedMatMul {
            b: qw,
            activation: *activation,
        },
    };
    let names = node
        .outputs
        .iter()
        .map(|&v| r.old().value(v).name.clone())
        .collect();
    let n = r.new.add_node(node.name.clone(), op, inputs, names)?;
    Ok(r.new.node(n).outputs.clone())
}

/// The weight's parameters (the profile's scheme, channel `axis`) and its s8 values,
/// quantized by QuantizeLinear's definition (u8 weights then stored as s8, [`u8_as_s8`]).
fn quantize_weight(
    weight: &Tensor,
    axis: usize,
    options: &DynamicOptions,
) -> Result<(QParams, Tensor), String> {
    let data: Vec<f32> = weight
        .as_f32()
        .map_err(|e| e.to_string())?
        .iter()
        .copied()
        .collect();
    let params = weight_qparams(
        &data,
        weight.dims(),
        axis,
        options.weight_method,
        &options.profile,
    )
    .map_err(|e| e.to_string())?;
    // A dead channel (all zeros) must not get a zero scale.
    let params = floor_weight_scales(&params, None, None).map_err(|e| e.to_string())?;
    let q = qcc_ir::eval::eval_op(&Op::QuantizeLinear(params.clone()), &[weight])
        .map_err(|e| e.to_string())?
        .remove(0);
    match options.profile.weights.dtype {
        QuantType::I8 => Ok((params, q)),
        QuantType::U8 => u8_as_s8(&params, &q),
    }
}

/// u8 weights and their parameters as the s8 the dynamic ops take: `w − 128`, zero points
/// `zp − 128`, scales unchanged. Exact: every `w − zp` is the same.
fn u8_as_s8(params: &QParams, q: &Tensor) -> Result<(QParams, Tensor), String> {
    let zero_points = params.zero_points().iter().map(|&z| z - 128).collect();
    let params = QParams::new(
        DType::I8,
        params.axis(),
        params.scales().to_vec(),
        zero_points,
    )
    .map_err(|e| e.to_string())?;
    // A byte's u8 value minus 128 is its s8 value with the top bit flipped.
    let bytes: Vec<u8> = q.to_le_bytes().iter().map(|&b| b ^ 0x80).collect();
    let q = Tensor::from_le_bytes(&TensorType::new(DType::I8, q.dims().to_vec()), &bytes)
        .ok_or_else(|| format!("{} u8 weight bytes for dims {:?}", bytes.len(), q.dims()))?;
    Ok((params, q))
}

/// The layer a node is, or why it stays in fp32.
fn layer_of(graph: &Graph, node: &Node) -> Result<Layer, String> {
    let constant = |i: usize| node.inputs.get(i).and_then(|&v| graph.constant(v));
    let input = node.inputs[0];
    if graph.value(input).ty.dtype != qcc_ir::DType::F32 {
        return Err("its input is not f32".into());
    }
    let weight = constant(1).ok_or("its weight is not a constant")?;
    if weight.dtype() != qcc_ir::DType::F32 {
        return Err("its weight is not f32".into());
    }
    let weight_name = graph.value(node.inputs[1]).name.clone();
    let float_bias = |i: usize, len: usize| -> Result<Tensor, String> {
        match node.inputs.get(i) {
            None => Ok(Tensor::from_f32(&[len], vec![0.0; len])),
            Some(_) => {
                let b = constant(i).ok_or("its bias is not a constant")?;
                let values: Vec<f32> = b
                    .as_f32()
                    .map_err(|e| e.to_string())?
                    .iter()
                    .copied()
                    .collect();
                if values.len() != len {
                    return Err(format!(
                        "its bias has {} values for {len} outputs",
                        values.len()
                    ));
                }
                Ok(Tensor::from_f32(&[len], values))
            }
        }
    };
    // The bias input itself when it already is the 1-D f32 tensor the op takes.
    let unchanged_bias = |i: usize, bias: &Tensor| {
        node.inputs
            .get(i)
            .copied()
            .filter(|_| constant(i).is_some_and(|t| t.dims() == bias.dims()))
            .filter(|&v| graph.value(v).ty.dtype == qcc_ir::DType::F32)
    };
    match &node.op {
        Op::Conv(conv) | Op::FusedConv { conv, .. } => {
            let (residual, activation) = match &node.op {
                Op::FusedConv {
                    residual,
                    activation,
                    ..
                } => (residual.then(|| node.inputs[3]), *activation),
                _ => (None, None),
            };
            let dims = weight.dims();
            let (cout, cin_g) = (dims[0], dims.get(1).copied().unwrap_or(1));
            let cin = graph.value(input).ty.dims().get(1).copied().unwrap_or(0);
            if conv.group > 1 && cin_g == 1 && cout == cin {
                return Err(
                    "depthwise (quantizing its input at run time costs more than its int8 \
                     kernel saves)"
                        .into(),
                );
            }
            let bias = float_bias(2, cout)?;
            Ok(Layer {
                input,
                weight: weight.clone(),
                weight_name,
                bias_input: unchanged_bias(2, &bias),
                bias,
                residual,
                op: LayerOp::Conv {
                    conv: conv.clone(),
                    activation,
                },
            })
        }
        Op::Gemm(gemm) | Op::FusedGemm { gemm, .. } => {
            let activation = match &node.op {
                Op::FusedGemm { activation, .. } => *activation,
                _ => None,
            };
            let weight = gemm_weight(gemm, weight)?;
            let n = weight.dims()[1];
            let mut bias = float_bias(2, n)?;
            let mut bias_input = unchanged_bias(2, &bias);
            if gemm.beta != 1.0 {
                // β folds into the bias: one rounding, the quantized product rounds anyway.
                let scaled = bias
                    .as_f32()
                    .map_err(|e| e.to_string())?
                    .mapv(|b| gemm.beta * b);
                bias = Tensor::F32(scaled);
                bias_input = None;
            }
            Ok(Layer {
                input,
                weight,
                weight_name,
                bias,
                bias_input,
                residual: None,
                op: LayerOp::MatMul { activation },
            })
        }
        Op::MatMul => {
            if weight.dims().len() != 2 || graph.value(input).ty.dims().len() < 2 {
                return Err("only a rank ≥ 2 input times a rank-2 constant is quantized".into());
            }
            let n = weight.dims()[1];
            Ok(Layer {
                input,
                weight: weight.clone(),
                weight_name,
                bias: float_bias(usize::MAX, n)?,
                bias_input: None,
                residual: None,
                op: LayerOp::MatMul { activation: None },
            })
        }
        other => Err(format!("{} is not a layer", other.name())),
    }
}

/// A Gemm's B as `[K, N]` (transposed when `trans_b`), if the Gemm is `A·B + C`.
fn gemm_weight(gemm: &GemmAttrs, weight: &Tensor) -> Result<Tensor, String> {
    if gemm.alpha != 1.0 || gemm.trans_a {
        return Err("a Gemm with alpha ≠ 1 or a transposed A".into());
    }
    let dims = weight.dims();
    if dims.len() != 2 {
        return Err(format!("its weight has rank {}", dims.len()));
    }
    if !gemm.trans_b {
        return Ok(weight.clone());
    }
    let b = weight.as_f32().map_err(|e| e.to_string())?;
    let (n, k) = (dims[0], dims[1]);
    let values: Vec<f32> = (0..k)
        .flat_map(|kk| (0..n).map(move |nn| (nn, kk)))
        .map(|(nn, kk)| b[[nn, kk]])
        .collect();
    Ok(Tensor::from_f32(&[k, n], values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_same_semantics_within, ops, parse};

    fn options(exclude: &[&str]) -> DynamicOptions {
        DynamicOptions {
            profile: Profile::X86_VNNI,
            weight_method: RangeMethod::MinMax,
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// A depthwise conv, then a Gemm (transposed weight, varied values) over its flattening.
    fn gemm_and_depthwise() -> String {
        let w: Vec<String> = (0..96)
            .map(|i| format!("{}", ((i * 37) % 17) as f32 / 8.0 - 1.0))
            .collect();
        GEMM_AND_DEPTHWISE.replace("dense<0.5>", &format!("dense<{}>", w.join(", ")))
    }

    const GEMM_AND_DEPTHWISE: &str = "graph g(%x: f32[1,2,4,4]) -> (%y) {
  %dw = const f32[2,1,3,3] dense<0.5, -0.25, 0.125, 0.75, -0.5, 0.25, 0.375, -0.125, 0.625, 0.5, -0.75, 0.25, 0.125, -0.375, 0.5, 0.875, 0.25, -0.5>
  %db = const f32[2] dense<0.1, -0.2>
  %w = const f32[3,32] dense<0.5>
  %c = const f32[3] dense<0.1, 0.2, -0.3>
  %d = Conv(%x, %dw, %db) {kernel=[3,3], pads=[1,1,1,1], group=2}
  %f = Flatten(%d) {axis=1}
  %y = Gemm(%f, %w, %c) {trans_b=true}
}";

    #[test]
    fn gemm_runs_dynamically_with_its_bias_and_the_depthwise_conv_stays_fp32_with_a_note() {
        let mut g = parse(&gemm_and_depthwise());
        let before = g.clone();
        let (changed, notes) = quantize_dynamic(&mut g, &options(&[])).unwrap();
        assert!(changed);
        assert_eq!(
            ops(&g),
            [
                "Conv",
                "DynamicQuantizeLinear",
                "DynamicQuantizedMatMul",
                "Flatten"
            ]
        );
        assert!(
            notes
                .iter()
                .any(|n| n.contains("'d'") && n.contains("depthwise")),
            "{notes:?}"
        );
        // Measured 0.033 (three outputs whose terms partly cancel): a loose bound that still
        // catches a transposed weight or a lost bias (errors near 1).
        assert_same_semantics_within(&before, &g, 0.08);
    }

    #[test]
    fn excluded_layers_stay_fp32_and_an_unmatched_pattern_is_an_error() {
        let mut g = parse(&gemm_and_depthwise());
        let (changed, notes) = quantize_dynamic(&mut g, &options(&["y"])).unwrap();
        assert!(!changed, "nothing left to quantize");
        assert!(
            notes.iter().any(|n| n.contains("--exclude: y")),
            "{notes:?}"
        );
        let mut g = parse(&gemm_and_depthwise());
        let err = quantize_dynamic(&mut g, &options(&["nothing*"])).unwrap_err();
        assert!(err.to_string().contains("nothing*"), "{err}");
    }

    /// The asymmetric profiles: fbgemm (s8 per channel) and snpe (u8 per tensor, stored as
    /// s8 by `w − 128`, `zp − 128`) give their weights nonzero zero points and keep the
    /// layer's meaning.
    #[test]
    fn asymmetric_weight_profiles_quantize_with_zero_points_and_keep_the_semantics() {
        // The Gemm's weights are mostly ≥ −0.5 and up to 0.875: an asymmetric range.
        for profile in [Profile::FBGEMM, Profile::SNPE] {
            let mut g = parse(&gemm_and_depthwise());
            let before = g.clone();
            let mut o = options(&[]);
            o.profile = profile;
            let (changed, _) = quantize_dynamic(&mut g, &o).unwrap();
            assert!(changed, "{}", profile.name);
            let matmul = g
                .petgraph()
                .node_indices()
                .map(|n| g.node(n))
                .find(|n| matches!(n.op, Op::DynamicQuantizedMatMul { .. }))
                .expect("the Gemm is quantized");
            let Op::DynamicQuantizedMatMul { b, .. } = &matmul.op else {
                unreachable!("found by its op")
            };
            assert_eq!(b.dtype(), DType::I8, "{}", profile.name);
            assert!(
                b.zero_points().iter().any(|&z| z != 0),
                "{}: {b}",
                profile.name
            );
            let weight = g.constant(matmul.inputs[3]).expect("a constant weight");
            assert_eq!(weight.dtype(), DType::I8, "{}", profile.name);
            // As loose as the symmetric test's bound: a lost zero point (or a u8 weight read
            // as s8 without the shift) errs by far more.
            assert_same_semantics_within(&before, &g, 0.08);
        }
    }
}
