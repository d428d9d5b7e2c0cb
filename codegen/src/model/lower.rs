//! A whole graph lowered into a [`Program`]: the memory plan says where every tensor lives,
//! each node becomes the kernel calls of its family, and the symbolic arguments of those
//! calls are resolved to places.
//!
//! Only what the node needs goes into the weight blob: constants a kernel reads as they are
//! (e.g. a per-channel scale of an `Add`), and the blobs a family packed (convolution and
//! matrix weights in the micro-kernel's layout). A constant that only feeds packing is not
//! stored twice.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use qcc_ir::{DType, Graph, NodeId, Op, ValueId};

use super::program::{Base, Place, Program, Step, WeightBlob};
use crate::lower::{
    conv, depthwise, gemm, layout, lrn, pool, softmax, ActivationKernel, Arg, BinaryKernel,
    BroadcastKind, BroadcastPlan, ConvGeometry, Epilogue, Kernel as _, KernelCall, KernelError,
    NodeLowering,
};
use crate::plan::{self, MemoryPlan, PlanError, Region, ALIGNMENT};
use crate::target::{Arch, Target};

/// Why a graph cannot be compiled.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("node '{node}' ({op}): {reason}")]
    Node {
        node: String,
        op: String,
        reason: String,
    },
    #[error("graph '{graph}': {reason}")]
    Graph { graph: String, reason: String },
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// How one layer was compiled, for `--report`.
#[derive(Clone, Debug)]
pub struct LayerChoice {
    pub node: String,
    /// The op for people (`Conv+Add+Relu`).
    pub op: String,
    /// The kernel choice, e.g. `im2col 3x3 + gemm 3x12`; `view` when no code runs.
    pub kernel: String,
    /// Multiply-accumulates (convolution and matrix products; 0 for the rest).
    pub macs: usize,
    /// Set when the layer runs slower or less precisely than the target promises.
    pub fallback: Option<String>,
}

/// An input or output of the compiled model, in the graph's order.
#[derive(Clone, Debug, PartialEq)]
pub struct IoTensor {
    pub name: String,
    pub dims: Vec<usize>,
    pub dtype: DType,
    /// For a u8 tensor of a model compiled with quantized I/O (`--io int8`): its scale and
    /// zero point, `real = (q − zero_point)·scale`.
    pub quantization: Option<(f32, i32)>,
}

impl IoTensor {
    pub fn bytes(&self) -> usize {
        self.dims.iter().product::<usize>() * self.dtype.size_bytes()
    }
}

/// A graph ready to be emitted.
pub struct LoweredModel {
    pub program: Program,
    pub layers: Vec<LayerChoice>,
    pub inputs: Vec<IoTensor>,
    pub outputs: Vec<IoTensor>,
    pub plan: MemoryPlan,
    /// Bytes of the weight blob (constants as read plus packed weights).
    pub weights_bytes: usize,
    /// The largest scratch any node needs (above the arena in the workspace).
    pub scratch_bytes: usize,
}

impl LoweredModel {
    /// Notes about layers that run in a slower or less precise way than asked.
    pub fn fallbacks(&self) -> Vec<String> {
        self.layers
            .iter()
            .filter_map(|l| {
                l.fallback
                    .as_ref()
                    .map(|f| format!("node '{}' ({}): {f}", l.node, l.op))
            })
            .collect()
    }
}

/// Lowers `graph` (after the pass pipeline, every dim bound) for `target`. `name` prefixes
/// the exported symbols.
pub fn lower_graph(graph: &Graph, target: &Target, name: &str) -> Result<LoweredModel, LowerError> {
    let graph_error = |reason: String| LowerError::Graph {
        graph: graph.name.clone(),
        reason,
    };
    let arch = target.arch();
    let int8_build = target.precision() == crate::target::Precision::Int8;
    let plan = plan::plan(graph)?;
    let io = |values: &[ValueId]| -> Result<Vec<IoTensor>, LowerError> {
        values
            .iter()
            .map(|&v| {
                let value = graph.value(v);
                // u8 inputs and outputs are the quantized I/O of an int8 build, described by
                // the Q/DQ next to them (`qcc_ir::quant::io_qparams`).
                let quantization = qcc_ir::quant::io_qparams(graph, v)
                    .filter(|_| int8_build)
                    .map(|p| p.channel(0));
                if value.ty.dtype != DType::F32 && quantization.is_none() {
                    return Err(graph_error(format!(
                        "input/output '{}' is {}; compiled models take and return f32 tensors \
                         (u8 only for the quantized I/O of an int8 build, --io int8)",
                        value.name,
                        value.ty.dtype.name()
                    )));
                }
                Ok(IoTensor {
                    name: value.name.clone(),
                    dims: value.ty.dims().to_vec(),
                    dtype: value.ty.dtype,
                    quantization,
                })
            })
            .collect()
    };
    let inputs = io(&graph.input_values())?;
    let outputs = io(graph.outputs())?;

    let scratch_base = plan.arena_bytes.next_multiple_of(ALIGNMENT);
    let mut context = Lowering {
        graph,
        plan: &plan,
        weights: WeightBlob::default(),
        constants: HashMap::new(),
        // Both targets (x86-64, aarch64) have 64-bit pointers.
        pointer_bytes: 8,
        scratch_base,
    };
    let mut steps = Vec::new();
    let mut layers = Vec::new();
    let mut scratch_bytes = 0;
    for &id in &plan.order {
        let node = graph.node(id);
        let node_error = |reason: String| LowerError::Node {
            node: node.name.clone(),
            op: node.op.display_name(),
            reason,
        };
        let mut lowering = lower_node(graph, &plan, id, target).map_err(node_error)?;
        if int8_build
            && lowering.fallback.is_none()
            && is_float_compute(&node.op)
            && !super::lower_int8::is_int8_node(graph, id)
        {
            lowering.fallback = Some(
                "runs in fp32 in an int8 build (the profile, the mode, --exclude or its operands \
                 kept it out of int8: see the notes of the `quantize` or `quantize-dynamic` \
                 pass)"
                    .to_string(),
            );
        }
        scratch_bytes = scratch_bytes.max(lowering.scratch_bytes);
        let step = context
            .step(&lowering, &node.inputs, &node.outputs)
            .map_err(node_error)?;
        layers.push(LayerChoice {
            node: node.name.clone(),
            op: node.op.display_name(),
            kernel: if lowering.calls.is_empty() {
                "view (no code)".to_string()
            } else {
                lowering.description.clone()
            },
            macs: macs(graph, id),
            fallback: lowering.fallback.clone(),
        });
        steps.push(step);
    }
    for copy in &plan.output_copies {
        let from = graph.value(copy.from);
        let lowering = layout::lower_copy(arch, 0, 0, from.ty.byte_size())
            .map_err(|e| graph_error(format!("output {}: {e}", copy.output)))?;
        let mut step = context
            .step(&lowering, &[copy.from], &[])
            .map_err(|e| graph_error(format!("output {}: {e}", copy.output)))?;
        step.outputs = vec![Place::new(Base::Output(copy.output), 0)];
        steps.push(step);
    }
    let weights_bytes = context.weights.bytes.len();
    let program = Program {
        name: name.to_string(),
        num_inputs: inputs.len(),
        num_outputs: outputs.len(),
        steps,
        weights: context.weights.bytes,
        workspace_bytes: scratch_base + scratch_bytes,
    };
    Ok(LoweredModel {
        program,
        layers,
        inputs,
        outputs,
        plan,
        weights_bytes,
        scratch_bytes,
    })
}

/// State shared by the steps: the weight blob being filled.
struct Lowering<'g> {
    graph: &'g Graph,
    plan: &'g MemoryPlan,
    weights: WeightBlob,
    /// Constants already in the blob, by value.
    constants: HashMap<ValueId, usize>,
    pointer_bytes: usize,
    scratch_base: usize,
}

impl Lowering<'_> {
    /// Resolves a node's lowering: places for its inputs and outputs, its packed blobs and
    /// tables appended to the weight blob.
    fn step(
        &mut self,
        lowering: &NodeLowering,
        inputs: &[ValueId],
        outputs: &[ValueId],
    ) -> Result<Step, String> {
        let read: Vec<bool> = (0..inputs.len())
            .map(|i| {
                lowering.calls.iter().any(|c| {
                    c.args
                        .iter()
                        .any(|a| matches!(a, Arg::Input { index, .. } if *index == i))
                })
            })
            .collect();
        let mut input_places = Vec::with_capacity(inputs.len());
        for (i, &v) in inputs.iter().enumerate() {
            input_places.push(if read[i] {
                self.place(v)?
            } else {
                // Not read by any call (packed at compile time): no place needed.
                Place::new(Base::Weights, 0)
            });
        }
        let output_places = outputs
            .iter()
            .map(|&v| self.place(v))
            .collect::<Result<Vec<_>, _>>()?;
        let packed = lowering
            .packed
            .iter()
            .map(|blob| Place::new(Base::Weights, self.weights.push_f32(blob)))
            .collect();
        let bytes = lowering
            .bytes
            .iter()
            .map(|blob| Place::new(Base::Weights, self.weights.push_bytes(blob)))
            .collect();
        let tables = lowering
            .tables
            .iter()
            .map(|t| {
                Place::new(
                    Base::Weights,
                    self.weights.push_sizes(t, self.pointer_bytes),
                )
            })
            .collect();
        Ok(Step {
            calls: lowering.calls.clone(),
            inputs: input_places,
            outputs: output_places,
            packed,
            bytes,
            tables,
            scratch: Place::new(Base::Workspace, self.scratch_base),
        })
    }

    /// Where value `v` lives at run time; constants go into the weight blob on first use.
    fn place(&mut self, v: ValueId) -> Result<Place, String> {
        if let Some(tensor) = self.graph.constant(v) {
            if let Some(&offset) = self.constants.get(&v) {
                return Ok(Place::new(Base::Weights, offset));
            }
            let offset = self.weights.push_bytes(&tensor.to_le_bytes());
            self.constants.insert(v, offset);
            return Ok(Place::new(Base::Weights, offset));
        }
        let address = self.plan.address(v).ok_or_else(|| {
            format!(
                "value '{}' has no place in the memory plan",
                self.graph.value(v).name
            )
        })?;
        let base = match address.region {
            Region::Input(i) => Base::Input(i),
            Region::Output(i) => Base::Output(i),
            Region::Arena => Base::Workspace,
            Region::Weights => {
                return Err(format!(
                    "value '{}' is planned in the weights but is not a constant",
                    self.graph.value(v).name
                ))
            }
        };
        Ok(Place::new(base, address.offset))
    }
}

fn kernel_error(e: KernelError) -> String {
    e.to_string()
}

/// The f32 data of a constant input, or why there is none.
fn constant_f32<'g>(graph: &'g Graph, v: ValueId, role: &str) -> Result<Cow<'g, [f32]>, String> {
    let value = graph.value(v);
    let tensor = graph.constant(v).ok_or_else(|| {
        format!(
            "{role} '{}' must be a constant: weights computed at run time are not compiled",
            value.name
        )
    })?;
    let array = tensor.as_f32().map_err(|_| {
        format!(
            "{role} '{}' is {}, not f32",
            value.name,
            tensor.dtype().name()
        )
    })?;
    Ok(match array.as_slice() {
        Some(slice) => Cow::Borrowed(slice),
        None => Cow::Owned(array.iter().copied().collect()),
    })
}

fn dims(graph: &Graph, v: ValueId) -> &[usize] {
    graph.value(v).ty.dims()
}

/// Multiply-accumulates of a node (convolutions and matrix products).
fn macs(graph: &Graph, id: NodeId) -> usize {
    let node = graph.node(id);
    match &node.op {
        Op::Conv(attrs) | Op::FusedConv { conv: attrs, .. } => ConvGeometry::new(
            attrs,
            dims(graph, node.inputs[0]),
            dims(graph, node.inputs[1]),
        )
        .map_or(0, |g| g.macs()),
        Op::QuantizedConv { conv: attrs, .. } => ConvGeometry::new(
            attrs,
            dims(graph, node.inputs[0]),
            dims(graph, node.inputs[1]),
        )
        .map_or(0, |g| g.macs()),
        // Dynamic quantization's weights are input 3 (after the input's scale and zero point).
        Op::DynamicQuantizedConv { conv: attrs, .. } => ConvGeometry::new(
            attrs,
            dims(graph, node.inputs[0]),
            dims(graph, node.inputs[3]),
        )
        .map_or(0, |g| g.macs()),
        Op::QuantizedMatMul { .. } | Op::DynamicQuantizedMatMul { .. } => {
            let out: usize = dims(graph, node.outputs[0]).iter().product();
            out * dims(graph, node.inputs[0]).last().copied().unwrap_or(0)
        }
        Op::Gemm(_) | Op::FusedGemm { .. } | Op::MatMul => {
            let out: usize = dims(graph, node.outputs[0]).iter().product();
            // Each output element is a dot product over A's reduction axis.
            let a = dims(graph, node.inputs[0]);
            let k = match &node.op {
                Op::Gemm(g) | Op::FusedGemm { gemm: g, .. } if g.trans_a => {
                    a.first().copied().unwrap_or(0)
                }
                _ => a.last().copied().unwrap_or(0),
            };
            out * k
        }
        _ => 0,
    }
}

/// Ops that compute in f32 (not layout, not quantization): in an int8 build each one is a
/// layer that runs less quickly than asked, and says so.
fn is_float_compute(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv(_)
            | Op::FusedConv { .. }
            | Op::Gemm(_)
            | Op::FusedGemm { .. }
            | Op::MatMul
            | Op::Binary(_)
            | Op::Sum
            | Op::Activation(_)
            | Op::MaxPool(_)
            | Op::AveragePool { .. }
            | Op::GlobalAveragePool
            | Op::GlobalMaxPool
            | Op::Softmax { .. }
            | Op::Lrn(_)
    )
}

/// One node's kernel calls.
fn lower_node(
    graph: &Graph,
    plan: &MemoryPlan,
    id: NodeId,
    target: &Target,
) -> Result<NodeLowering, String> {
    let arch = target.arch();
    if let Some(lowering) = super::lower_int8::lower_int8_node(graph, plan, id, target) {
        return lowering;
    }
    let node = graph.node(id);
    for &v in node.inputs.iter().chain(&node.outputs) {
        let value = graph.value(v);
        if value.ty.dtype != DType::F32 {
            return Err(format!(
                "value '{}' is {}; the fp32 back end compiles f32 tensors only",
                value.name,
                value.ty.dtype.name()
            ));
        }
    }
    let input = |i: usize| dims(graph, node.inputs[i]);
    let output_bytes = graph.value(node.outputs[0]).ty.byte_size();
    let conv = |attrs, residual: Option<usize>, activation| -> Result<NodeLowering, String> {
        let geometry = ConvGeometry::new(attrs, input(0), input(1)).map_err(kernel_error)?;
        let weight = constant_f32(graph, node.inputs[1], "weight W")?;
        let bias = match node.inputs.get(2) {
            Some(&b) => Some(constant_f32(graph, b, "bias B")?),
            None => None,
        };
        let epilogue = Epilogue {
            residual_input: residual,
            activation,
        };
        let lowered = if geometry.is_depthwise() {
            depthwise::lower_depthwise(arch, &geometry, &weight, bias.as_deref(), epilogue)
        } else {
            conv::lower_conv(arch, &geometry, &weight, bias.as_deref(), epilogue)
        };
        lowered.map_err(kernel_error)
    };
    let gemm = |attrs: &qcc_ir::GemmAttrs, activation| -> Result<NodeLowering, String> {
        let b = constant_f32(graph, node.inputs[1], "B")?;
        let c = match node.inputs.get(2) {
            Some(&c) => Some((constant_f32(graph, c, "C")?, dims(graph, c))),
            None => None,
        };
        let c = c.as_ref().map(|(data, d)| (&data[..], *d));
        gemm::lower_gemm(arch, attrs, input(0), &b, input(1), c, activation).map_err(kernel_error)
    };
    match &node.op {
        Op::Conv(attrs) => conv(attrs, None, None),
        Op::FusedConv {
            conv: attrs,
            residual,
            activation,
        } => conv(attrs, residual.then_some(3), *activation),
        Op::Gemm(attrs) => gemm(attrs, None),
        Op::FusedGemm {
            gemm: attrs,
            activation,
        } => gemm(attrs, *activation),
        Op::MatMul => {
            let attrs = qcc_ir::GemmAttrs {
                alpha: 1.0,
                beta: 1.0,
                trans_a: false,
                trans_b: false,
            };
            if input(1).len() != 2 {
                return Err(format!(
                    "MatMul with a rank-{} B is not compiled (B must be a 2-D constant)",
                    input(1).len()
                ));
            }
            gemm(&attrs, None)
        }
        Op::MaxPool(_) | Op::AveragePool { .. } | Op::GlobalAveragePool | Op::GlobalMaxPool => {
            let lowered = pool::lower_pool(arch, &node.op, input(0)).map_err(kernel_error)?;
            let mut args = vec![Arg::input(0), Arg::output(0)];
            args.extend(lowered.sizes.iter().map(|&n| Arg::Size(n)));
            let description = lowered.kernel.spec().name.clone();
            let kernel = lowered.kernel.clone();
            Ok(NodeLowering {
                calls: vec![KernelCall::new(kernel, args).map_err(kernel_error)?],
                description,
                ..NodeLowering::default()
            })
        }
        Op::Binary(op) => binary(arch, *op, input(0), input(1), 0, Arg::input(1)),
        Op::Sum => {
            if node.inputs.len() == 1 {
                return layout::lower_copy(arch, 0, 0, output_bytes).map_err(kernel_error);
            }
            // out = x0 + x1, then out += x2, ... (each broadcasting into the output).
            let mut lowering = binary(
                arch,
                qcc_ir::BinaryOp::Add,
                input(0),
                input(1),
                0,
                Arg::input(1),
            )?;
            for i in 2..node.inputs.len() {
                let out = dims(graph, node.outputs[0]);
                let next = binary_onto_output(arch, out, input(i), i)?;
                // Renumber the next call's descriptor table after the ones already there.
                let offset = lowering.tables.len();
                lowering.tables.extend(next.tables);
                for mut call in next.calls {
                    for arg in &mut call.args {
                        if let Arg::Table { index } = arg {
                            *index += offset;
                        }
                    }
                    lowering.calls.push(call);
                }
            }
            lowering.description = format!("{} adds", node.inputs.len() - 1);
            Ok(lowering)
        }
        Op::Activation(activation) => {
            let kernel = ActivationKernel::new(arch, *activation);
            let description = kernel.spec().name.clone();
            let n = output_bytes / 4;
            Ok(NodeLowering {
                calls: vec![KernelCall::new(
                    Arc::new(kernel),
                    vec![Arg::input(0), Arg::output(0), Arg::Size(n)],
                )
                .map_err(kernel_error)?],
                description,
                ..NodeLowering::default()
            })
        }
        Op::Concat { axis } => {
            let input_dims: Vec<Vec<usize>> = node
                .inputs
                .iter()
                .map(|&v| dims(graph, v).to_vec())
                .collect();
            let copy = concat_copies(graph, plan, id, *axis);
            layout::lower_concat(arch, *axis, &input_dims, &copy).map_err(kernel_error)
        }
        Op::Flatten { .. }
        | Op::Reshape { .. }
        | Op::Squeeze { .. }
        | Op::Unsqueeze { .. }
        | Op::Identity
        | Op::Dropout { mask_output: false } => {
            if plan.address(node.inputs[0]) == plan.address(node.outputs[0])
                && graph.constant(node.inputs[0]).is_none()
            {
                Ok(NodeLowering {
                    description: "view (no code)".to_string(),
                    ..NodeLowering::default()
                })
            } else {
                layout::lower_copy(arch, 0, 0, output_bytes).map_err(kernel_error)
            }
        }
        Op::Split { .. } => {
            // The plan makes each output a slice of the input when the split axis allows.
            let base = plan.address(node.inputs[0]);
            let mut offset = 0;
            let mut aliased = graph.constant(node.inputs[0]).is_none();
            for &o in &node.outputs {
                aliased &= match (base, plan.address(o)) {
                    (Some(b), Some(a)) => a.region == b.region && a.offset == b.offset + offset,
                    _ => false,
                };
                offset += graph.value(o).ty.byte_size();
            }
            if aliased {
                Ok(NodeLowering {
                    description: "view (no code)".to_string(),
                    ..NodeLowering::default()
                })
            } else {
                Err("Split whose outputs are not slices of its input is not compiled".to_string())
            }
        }
        Op::Transpose { perm } => {
            layout::lower_transpose(arch, perm, input(0)).map_err(kernel_error)
        }
        Op::Softmax { axis, coerce_2d } => {
            softmax::lower_softmax(arch, *axis, *coerce_2d, input(0)).map_err(kernel_error)
        }
        Op::Lrn(attrs) => lrn::lower_lrn(arch, attrs, input(0)).map_err(kernel_error),
        other => Err(format!(
            "{} is not compiled by the fp32 back end (the pass pipeline should have removed or \
             folded it; `qcc run --reference` runs it in the interpreter)",
            other.name()
        )),
    }
}

/// Which inputs of a Concat must be copied: an input already written into its slice of the
/// output by its producer (the memory plan placed it there) needs no copy.
pub(super) fn concat_copies(
    graph: &Graph,
    plan: &MemoryPlan,
    id: NodeId,
    axis: usize,
) -> Vec<bool> {
    let node = graph.node(id);
    let out = plan.address(node.outputs[0]);
    let outer: usize = dims(graph, node.inputs[0])[..axis].iter().product();
    let mut slice_offset = 0;
    let mut copy = Vec::with_capacity(node.inputs.len());
    for &v in &node.inputs {
        let in_place = outer == 1
            && graph.constant(v).is_none()
            && match (plan.address(v), out) {
                (Some(a), Some(o)) => a.region == o.region && a.offset == o.offset + slice_offset,
                _ => false,
            };
        copy.push(!in_place);
        slice_offset += graph.value(v).ty.byte_size();
    }
    copy
}

/// `out = a op b` with broadcasting; `b_arg` is where `b` is read from.
fn binary(
    arch: Arch,
    op: qcc_ir::BinaryOp,
    a: &[usize],
    b: &[usize],
    a_index: usize,
    b_arg: Arg,
) -> Result<NodeLowering, String> {
    let plan = BroadcastPlan::new(a, b).map_err(kernel_error)?;
    let kernel = BinaryKernel::new(arch, op, plan.kind, None);
    let description = kernel.spec().name.clone();
    let mut args = vec![Arg::input(a_index), b_arg, Arg::output(0)];
    let mut tables = Vec::new();
    if let BroadcastKind::Strided { .. } = plan.kind {
        args.push(Arg::Table { index: 0 });
        tables.push(plan.descriptor.clone());
    } else {
        args.extend(plan.sizes.iter().map(|&n| Arg::Size(n)));
    }
    Ok(NodeLowering {
        calls: vec![KernelCall::new(Arc::new(kernel), args).map_err(kernel_error)?],
        tables,
        description,
        ..NodeLowering::default()
    })
}

/// `out = out + x_i` (a further input of Sum), reading the output in place.
fn binary_onto_output(
    arch: Arch,
    out: &[usize],
    x: &[usize],
    index: usize,
) -> Result<NodeLowering, String> {
    let mut lowering = binary(arch, qcc_ir::BinaryOp::Add, out, x, 0, Arg::input(index))?;
    for call in &mut lowering.calls {
        call.args[0] = Arg::output(0);
    }
    Ok(lowering)
}
