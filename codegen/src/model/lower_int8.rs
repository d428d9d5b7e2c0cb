//! The int8 part of a graph: QuantizeLinear/DequantizeLinear at the edges of the integer
//! regions, the realized integer ops ([`Op::QuantizedConv`], [`Op::QuantizedMatMul`],
//! [`Op::QuantizedAdd`], [`Op::QuantizedGlobalAveragePool`]), and the ops that move 8-bit
//! tensors unchanged (MaxPool, Concat, layout).
//!
//! # Storage of 8-bit tensors
//!
//! Every 8-bit activation is stored as u8: a u8 tensor as it is, an i8 tensor as `q + 128`
//! with zero point `zp + 128`. The map is exact for everything done with such a tensor:
//! `q − zp` is unchanged, the i8 saturation range `[-128, 127]` becomes the u8 one, and max
//! pooling is monotone. So the int8 kernels all take u8 activations (what `vpdpbusd` and
//! `usdot` multiply) whatever type the profile chose, and only the zero points and clamps
//! handed to them are shifted. The interpreter keeps i8 as i8; since the map is applied at
//! every Q (write) and DQ (read), outputs agree bit for bit.
//!
//! Weights are s8 (a realized op's weights always are: u8 weights are shifted at
//! realization).
//!
//! # Dynamic quantization
//!
//! [`Op::DynamicQuantizeLinear`] computes a u8 tensor, its f32 scale and its u8 zero point at
//! run time; [`Op::DynamicQuantizedConv`] and [`Op::DynamicQuantizedMatMul`] read all three
//! (node inputs 0-2) with compile-time symmetric s8 weights and an f32 bias, and write f32.

use qcc_ir::{DType, Graph, NodeId, Op, QParams, Tensor, ValueId};

use crate::lower::int8::{
    self, add, bytes, dynamic_quantize, pool, quantize, DynamicConvParams, DynamicGemmParams,
    OutputQuant, QConvParams, QGemmParams, ResidualQuant,
};
use crate::lower::{ConvGeometry, KernelError, NodeLowering};
use crate::plan::MemoryPlan;
use crate::target::Target;

fn kernel_error(e: KernelError) -> String {
    e.to_string()
}

/// Whether `dtype` is stored as an 8-bit activation.
fn is_8bit(dtype: DType) -> bool {
    matches!(dtype, DType::U8 | DType::I8)
}

/// What is added to an 8-bit value of type `dtype` to store it as u8.
fn storage_offset(dtype: DType) -> i32 {
    match dtype {
        DType::I8 => 128,
        _ => 0,
    }
}

/// The per-tensor zero point of `p` as stored.
fn storage_zero_point(p: &QParams, role: &str) -> Result<i32, String> {
    if !p.is_per_tensor() {
        return Err(format!(
            "the {role} is quantized per channel ({p}); activations must be quantized per tensor"
        ));
    }
    if !is_8bit(p.dtype()) {
        return Err(format!("the {role} is {}, not u8 or i8", p.dtype().name()));
    }
    Ok(p.zero_points()[0] + storage_offset(p.dtype()))
}

/// The output stage of a kernel writing `y` (stored as u8), with a clamp in y's domain.
fn output_quant(y: &QParams, clamp: Option<(i32, i32)>) -> Result<OutputQuant, String> {
    let zero_point = storage_zero_point(y, "output")?;
    let offset = storage_offset(y.dtype());
    Ok(OutputQuant {
        dtype: DType::U8,
        zero_point,
        clamp: clamp.map(|(lo, hi)| (lo + offset, hi + offset)),
    })
}

fn constant<'g>(graph: &'g Graph, v: ValueId, role: &str) -> Result<&'g Tensor, String> {
    graph.constant(v).ok_or_else(|| {
        format!(
            "{role} '{}' must be a constant: weights computed at run time are not compiled",
            graph.value(v).name
        )
    })
}

fn const_i8(graph: &Graph, v: ValueId, role: &str) -> Result<Vec<i8>, String> {
    match constant(graph, v, role)? {
        Tensor::I8(a) => Ok(a.iter().copied().collect()),
        other => Err(format!(
            "{role} '{}' is {}, not i8",
            graph.value(v).name,
            other.dtype().name()
        )),
    }
}

fn const_i32(graph: &Graph, v: ValueId, role: &str) -> Result<Vec<i32>, String> {
    match constant(graph, v, role)? {
        Tensor::I32(a) => Ok(a.iter().copied().collect()),
        other => Err(format!(
            "{role} '{}' is {}, not i32",
            graph.value(v).name,
            other.dtype().name()
        )),
    }
}

fn const_f32(graph: &Graph, v: ValueId, role: &str) -> Result<Vec<f32>, String> {
    match constant(graph, v, role)? {
        Tensor::F32(a) => Ok(a.iter().copied().collect()),
        other => Err(format!(
            "{role} '{}' is {}, not f32",
            graph.value(v).name,
            other.dtype().name()
        )),
    }
}

/// The weights of a dynamically quantized op.
struct DynamicWeights {
    values: Vec<i8>,
    /// Along the kernel's axis, or one for all.
    scales: Vec<f32>,
    zero_points: Vec<i32>,
}

/// The s8 weights of a dynamically quantized op (node input `v`), quantized along `axis`
/// or per tensor.
fn dynamic_weights(
    graph: &Graph,
    w: &QParams,
    v: ValueId,
    axis: usize,
) -> Result<DynamicWeights, String> {
    if w.dtype() != DType::I8 {
        return Err(format!("weights are {}, not i8", w.dtype().name()));
    }
    if let Some(a) = w.axis() {
        if a != axis {
            return Err(format!(
                "weights are quantized along axis {a}; the kernel takes axis {axis}"
            ));
        }
    }
    Ok(DynamicWeights {
        values: const_i8(graph, v, "weight")?,
        scales: w.scales().to_vec(),
        zero_points: w.zero_points().to_vec(),
    })
}

/// Weight zero points, or `None` when they are all zero (the plain kernels).
fn weight_zero_points(w: &QParams) -> Option<Vec<i32>> {
    w.zero_points()
        .iter()
        .any(|&z| z != 0)
        .then(|| w.zero_points().to_vec())
}

/// The node's lowering when it is part of the int8 program (an integer op, a Q/DQ, or an op
/// moving 8-bit tensors); `None` for every other node (the fp32 lowering's).
pub(super) fn lower_int8_node(
    graph: &Graph,
    plan: &MemoryPlan,
    id: NodeId,
    target: &Target,
) -> Option<Result<NodeLowering, String>> {
    is_int8_node(graph, id).then(|| lower(graph, plan, id, target))
}

/// Whether the node belongs to the int8 program: an integer op, a Q/DQ, or an op on 8-bit
/// tensors.
pub(super) fn is_int8_node(graph: &Graph, id: NodeId) -> bool {
    let node = graph.node(id);
    let eight_bit = node
        .inputs
        .iter()
        .chain(&node.outputs)
        .any(|&v| is_8bit(graph.value(v).ty.dtype));
    let integer_op = matches!(
        node.op,
        Op::QuantizeLinear(_)
            | Op::DequantizeLinear(_)
            | Op::DynamicQuantizeLinear
            | Op::DynamicQuantizedConv { .. }
            | Op::DynamicQuantizedMatMul { .. }
            | Op::QuantizedConv { .. }
            | Op::QuantizedMatMul { .. }
            | Op::QuantizedAdd { .. }
            | Op::QuantizedGlobalAveragePool { .. }
    );
    eight_bit || integer_op
}

fn lower(
    graph: &Graph,
    plan: &MemoryPlan,
    id: NodeId,
    target: &Target,
) -> Result<NodeLowering, String> {
    let node = graph.node(id);
    let arch = target.arch();
    let dims = |i: usize| graph.value(node.inputs[i]).ty.dims();
    let elements = graph.value(node.outputs[0]).ty.shape.numel();
    let per_tensor_scale = |p: &QParams, role: &str| -> Result<f32, String> {
        storage_zero_point(p, role)?;
        Ok(p.scales()[0])
    };
    match &node.op {
        Op::QuantizeLinear(p) => {
            let zp = storage_zero_point(p, "QuantizeLinear output")?;
            quantize::lower_quantize(arch, elements, per_tensor_scale(p, "output")?, zp)
                .map_err(kernel_error)
        }
        Op::DequantizeLinear(p) => {
            let zp = storage_zero_point(p, "DequantizeLinear input")?;
            quantize::lower_dequantize(arch, elements, per_tensor_scale(p, "input")?, zp)
                .map_err(kernel_error)
        }
        Op::QuantizedConv {
            conv,
            x,
            w,
            y,
            residual,
            clamp,
        } => {
            let geometry = ConvGeometry::new(conv, dims(0), dims(1)).map_err(kernel_error)?;
            let weight = const_i8(graph, node.inputs[1], "weight")?;
            let bias = match node.inputs.get(2) {
                Some(&b) => Some(const_i32(graph, b, "bias")?),
                None => None,
            };
            let requant = qcc_ir::op::requant_multipliers(x, w, y)
                .map_err(|e| format!("requantization: {e}"))?;
            let residual_multipliers = match residual {
                Some(r) => Some((
                    storage_zero_point(r, "residual")?,
                    qcc_ir::op::residual_multipliers(x, w, r)
                        .map_err(|e| format!("residual rescaling: {e}"))?,
                )),
                None => None,
            };
            let zero_points = weight_zero_points(w);
            let params = QConvParams {
                geometry,
                weight: &weight,
                bias: bias.as_deref(),
                requant: &requant,
                input_zero_point: storage_zero_point(x, "input")?,
                weight_zero_points: zero_points.as_deref(),
                residual: residual_multipliers
                    .as_ref()
                    .map(|(zero_point, m)| ResidualQuant {
                        zero_point: *zero_point,
                        multipliers: m,
                    }),
                output: output_quant(y, *clamp)?,
            };
            // The dedicated depthwise kernel takes plain depthwise layers (no residual, no
            // weight zero points); the rest run as a grouped implicit GEMM, which flags itself.
            if params.geometry.is_depthwise() {
                if let Ok(lowering) = int8::depthwise::lower_qdepthwise(target, &params) {
                    return Ok(lowering);
                }
            }
            int8::lower_qconv(target, &params).map_err(kernel_error)
        }
        Op::QuantizedMatMul { a, b, y, clamp } => {
            let (a_dims, b_dims) = (dims(0), dims(1));
            let (k, n) = (b_dims[0], b_dims[1]);
            let m = a_dims[..a_dims.len() - 1].iter().product();
            let weight = const_i8(graph, node.inputs[1], "B")?;
            let bias = match node.inputs.get(2) {
                Some(&c) => Some(const_i32(graph, c, "bias")?),
                None => None,
            };
            let requant = qcc_ir::op::requant_multipliers(a, b, y)
                .map_err(|e| format!("requantization: {e}"))?;
            let zero_points = weight_zero_points(b);
            int8::lower_qgemm(
                target,
                &QGemmParams {
                    m,
                    k,
                    n,
                    weight: &weight,
                    trans_b: false,
                    bias: bias.as_deref(),
                    requant: &requant,
                    input_zero_point: storage_zero_point(a, "input A")?,
                    weight_zero_points: zero_points.as_deref(),
                    output: output_quant(y, *clamp)?,
                },
            )
            .map_err(kernel_error)
        }
        Op::DynamicQuantizeLinear => {
            let count = graph.value(node.inputs[0]).ty.shape.numel();
            dynamic_quantize::lower_dynamic_quantize(arch, count).map_err(kernel_error)
        }
        Op::DynamicQuantizedConv {
            conv,
            w,
            residual,
            activation,
        } => {
            let geometry = ConvGeometry::new(conv, dims(0), dims(3)).map_err(kernel_error)?;
            let weights = dynamic_weights(graph, w, node.inputs[3], 0)?;
            let bias = const_f32(graph, node.inputs[4], "bias")?;
            let params = DynamicConvParams {
                geometry,
                weight: &weights.values,
                weight_scales: &weights.scales,
                weight_zero_points: &weights.zero_points,
                bias: &bias,
                residual: *residual,
                activation: *activation,
            };
            // The dedicated depthwise kernel takes every depthwise layer but those it refuses
            // (a channel whose weights and zero point differ by 255, strides above 5); they
            // run as a grouped implicit GEMM, which flags itself.
            if params.geometry.is_depthwise() {
                if let Ok(lowering) =
                    int8::dynamic_depthwise::lower_dynamic_qdepthwise(target, &params)
                {
                    return Ok(lowering);
                }
            }
            int8::lower_dynamic_qconv(target, &params).map_err(kernel_error)
        }
        Op::DynamicQuantizedMatMul { b, activation } => {
            let (a_dims, b_dims) = (dims(0), dims(3));
            let (Some(&k), [bk, n]) = (a_dims.last(), b_dims) else {
                return Err(format!(
                    "DynamicQuantizedMatMul takes A [..., M, K] and B [K, N]: A {a_dims:?}, B \
                     {b_dims:?}"
                ));
            };
            if k != *bk {
                return Err(format!("A {a_dims:?} and B {b_dims:?} disagree on K"));
            }
            let m = a_dims[..a_dims.len() - 1].iter().product();
            let weights = dynamic_weights(graph, b, node.inputs[3], 1)?;
            let bias = const_f32(graph, node.inputs[4], "bias")?;
            int8::lower_dynamic_qgemm(
                target,
                &DynamicGemmParams {
                    m,
                    k,
                    n: *n,
                    weight: &weights.values,
                    weight_scales: &weights.scales,
                    weight_zero_points: &weights.zero_points,
                    bias: &bias,
                    activation: *activation,
                },
            )
            .map_err(kernel_error)
        }
        Op::QuantizedAdd { a, b, y, clamp } => {
            let mult = qcc_ir::op::add_multipliers(a, b, y)
                .map_err(|e| format!("add multipliers: {e}"))?;
            let out = output_quant(y, *clamp)?;
            let bounds = out.clamp.unwrap_or((0, 255));
            add::lower_qadd(
                arch,
                elements,
                storage_zero_point(a, "input A")?,
                storage_zero_point(b, "input B")?,
                out.zero_point,
                mult,
                bounds,
            )
            .map_err(kernel_error)
        }
        Op::QuantizedGlobalAveragePool { x, y } => {
            let window = dims(0)[2..].iter().product();
            let multiplier = qcc_ir::op::pool_multiplier(x, y, window)
                .map_err(|e| format!("pool multiplier: {e}"))?;
            pool::lower_qglobal_avgpool(
                arch,
                dims(0),
                storage_zero_point(x, "input")?,
                storage_zero_point(y, "output")?,
                multiplier,
            )
            .map_err(kernel_error)
        }
        Op::MaxPool(attrs) => pool::lower_qmaxpool(arch, attrs, dims(0)).map_err(kernel_error),
        Op::Concat { axis } => {
            let input_dims: Vec<Vec<usize>> = node
                .inputs
                .iter()
                .map(|&v| graph.value(v).ty.dims().to_vec())
                .collect();
            let copy = super::lower::concat_copies(graph, plan, id, *axis);
            bytes::lower_byte_concat(arch, *axis, &input_dims, &copy).map_err(kernel_error)
        }
        Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Identity => {
            if plan.address(node.inputs[0]) == plan.address(node.outputs[0])
                && graph.constant(node.inputs[0]).is_none()
            {
                Ok(NodeLowering {
                    description: "view (no code)".to_string(),
                    ..NodeLowering::default()
                })
            } else {
                bytes::lower_byte_copy(arch, elements).map_err(kernel_error)
            }
        }
        Op::Transpose { perm } => {
            bytes::lower_byte_transpose(arch, perm, dims(0)).map_err(kernel_error)
        }
        Op::ConvInteger { .. } | Op::MatMulInteger { .. } => Err(format!(
            "{} is compiled only as part of a dynamically quantized layer: its u8 input, a \
             constant weight and its i32 result read only by a Cast to f32 (see the notes of \
             the realize-integer-products pass for why this one was not)",
            node.op.name()
        )),
        other => Err(format!(
            "{} on 8-bit tensors is not compiled (the quantize pass should leave it in fp32)",
            other.name()
        )),
    }
}
