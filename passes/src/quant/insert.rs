//! `quantize`: puts QuantizeLinear/DequantizeLinear pairs into an fp32 graph as a hardware
//! profile asks, from calibration statistics. The result is a QDQ graph, the form ONNX uses
//! for quantized models: it still computes in f32, every quantized tensor passing through
//! `Q → DQ` (so it runs in the interpreter and exports to ONNX as it is), and the e-graph's
//! `Quant` rules then realize integer ops where a computation sits between DQ inputs and a Q
//! output.
//!
//! The pass runs after batch-norm folding and before fusion: every tensor the statistics were
//! collected on (calibration runs the same passes first) still exists, and the choices below
//! are made on plain Conv/Gemm/Add/Relu nodes.
//!
//! # Where Q/DQ go
//!
//! A node runs in int8 when the profile's op set admits it, it is not `--exclude`d, and it
//! has the operands an int8 kernel needs (constant weights, same-shape Add operands...).
//! For such a node:
//!
//! - each activation input is quantized (one Q/DQ pair per tensor, shared by all readers);
//! - constant weights become an integer constant and a DQ (per channel or per tensor, as the
//!   profile says); a bias becomes an i32 constant of scale `s_x·s_w[c]` and a DQ;
//! - the output is quantized after its activation when its only reader is a Relu or Clip
//!   (those become the integer op's clamp), else directly.
//!
//! Max pooling and layout ops (Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Identity)
//! give their output the parameters of their input, and a Concat's inputs all take the
//! Concat output's parameters, so DQ moves through them and the pairs between cancel.
//! A residual Add is quantized as the profile says ([`ResidualAdd`]): both inputs
//! quantized, one input accumulated in i32 into the conv that produces the other (its output
//! then stays unquantized), or left in fp32.
//!
//! Value names: a quantized tensor `t` keeps its name on the DQ output (what every reader
//! and the graph outputs see), its producer's f32 result becomes `t.float` and the integer
//! tensor `t.q`; a quantized graph input `x` is read through `x.q` and `x.dq`.

use super::params::{activation_qparams, bias_qparams, weight_qparams};
use super::profile::{Profile, QuantizedOps, ResidualAdd};
use super::range::RangeMethods;
use super::stats::CalibrationStats;
use super::QuantError;
use crate::{Pass, PassError};
use qcc_ir::{
    Activation, BinaryOp, DType, Graph, GraphError, Node, NodeId, Op, QParams, Tensor, ValueDef,
    ValueId,
};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// What the `quantize` pass needs: the profile, the statistics, the range methods and the
/// nodes to keep in fp32.
#[derive(Clone, Debug)]
pub struct QuantizeOptions {
    pub profile: Profile,
    pub stats: Arc<CalibrationStats>,
    pub methods: RangeMethods,
    /// Node-name patterns (`*` matches any run of characters) of nodes kept in fp32. A
    /// pattern that matches no node is an error.
    pub exclude: Vec<String>,
    /// `--io int8`: after realization the `quantized-io` pass exposes the quantized inputs
    /// and outputs (u8) instead of f32 ones.
    pub quantized_io: bool,
}

/// The pass.
pub struct InsertQdq {
    options: QuantizeOptions,
    notes: Mutex<Vec<String>>,
}

impl InsertQdq {
    pub fn new(options: QuantizeOptions) -> InsertQdq {
        InsertQdq {
            options,
            notes: Mutex::new(Vec::new()),
        }
    }
}

impl Pass for InsertQdq {
    fn name(&self) -> &'static str {
        "quantize"
    }

    fn run(&self, graph: &mut Graph) -> Result<bool, PassError> {
        let (new, summary) = insert_qdq(graph, &self.options)?;
        *self.notes.lock().unwrap_or_else(|e| e.into_inner()) = summary.notes();
        let changed = summary.quantized_nodes > 0;
        if changed {
            *graph = new;
        }
        Ok(changed)
    }

    fn take_notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// What the insertion did, for the report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InsertSummary {
    pub quantized_nodes: usize,
    pub quantized_tensors: usize,
    /// Nodes kept in fp32 by `--exclude`.
    pub excluded: Vec<String>,
    /// Compute nodes the profile or the operands keep in fp32, with the reason.
    pub kept_float: Vec<(String, String)>,
}

impl InsertSummary {
    /// Notes for the user: only what runs in fp32 although an int8 build was asked for.
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if !self.excluded.is_empty() {
            notes.push(format!(
                "kept in fp32 by --exclude: {}",
                self.excluded.join(", ")
            ));
        }
        for (node, reason) in &self.kept_float {
            notes.push(format!("node '{node}' stays fp32: {reason}"));
        }
        notes
    }
}

fn pass_err(message: String) -> PassError {
    PassError::Other {
        pass: "quantize",
        message,
    }
}

fn graph_err(source: GraphError) -> PassError {
    PassError::Graph {
        pass: "quantize",
        source,
    }
}

/// The `--exclude` patterns and how many nodes each matched: a pattern that matches no node
/// is a user's typo, reported rather than ignored.
pub(crate) struct Exclusions<'a> {
    patterns: &'a [String],
    hits: Vec<usize>,
}

impl<'a> Exclusions<'a> {
    pub(crate) fn new(patterns: &'a [String]) -> Exclusions<'a> {
        Exclusions {
            patterns,
            hits: vec![0; patterns.len()],
        }
    }

    /// Whether some pattern matches the node `name` (counting every match).
    pub(crate) fn excludes(&mut self, name: &str) -> bool {
        let mut excluded = false;
        for (hits, p) in self.hits.iter_mut().zip(self.patterns) {
            if pattern_matches(p, name) {
                *hits += 1;
                excluded = true;
            }
        }
        excluded
    }

    /// An error naming the first pattern that matched nothing.
    pub(crate) fn check(&self) -> Result<(), String> {
        match self.hits.iter().position(|&h| h == 0) {
            Some(i) => Err(format!(
                "--exclude '{}' matches no node (patterns match node names as `qcc inspect \
                 --after-passes` lists them; `*` matches any run of characters)",
                self.patterns[i]
            )),
            None => Ok(()),
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn pattern_matches(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    if !name.ends_with(last) {
        return false;
    }
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// The int8 role of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Conv: activation input 0, weight 1 (channel axis 0), bias 2.
    Conv,
    /// Gemm/MatMul: activation input 0, weight 1 (channel axis given), bias 2.
    Matrix {
        weight_axis: usize,
    },
    /// Add of two same-shape activations.
    Add,
    /// MaxPool / GlobalAveragePool: activation input 0.
    Pool,
    Concat,
}

impl Role {
    fn is_accumulating(self) -> bool {
        matches!(self, Role::Conv | Role::Matrix { .. } | Role::Add)
    }
}

/// The node that computes `v`, if a node does.
fn producer(graph: &Graph, v: ValueId) -> Option<NodeId> {
    match graph.value(v).def {
        ValueDef::Node { node, .. } => Some(node),
        _ => None,
    }
}

fn is_layout(op: &Op) -> bool {
    matches!(
        op,
        Op::Reshape { .. }
            | Op::Flatten { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Identity
    )
}

/// Whether a node has an int8 form, or why not.
fn role_of(graph: &Graph, id: NodeId, ops: QuantizedOps) -> Result<Role, String> {
    let node = graph.node(id);
    let is_const = |i: usize| node.inputs.get(i).and_then(|&v| graph.constant(v));
    let f32_const = |i: usize| is_const(i).is_some_and(|t| t.as_f32().is_ok());
    let activation = |i: usize| {
        node.inputs
            .get(i)
            .is_some_and(|&v| graph.constant(v).is_none() && graph.value(v).ty.dtype == DType::F32)
    };
    let rank = |i: usize| graph.value(node.inputs[i]).ty.rank();
    let role = match &node.op {
        Op::Conv(_) => {
            if !activation(0) || !f32_const(1) {
                return Err(
                    "an int8 Conv needs an f32 activation input and constant f32 weights".into(),
                );
            }
            if node.inputs.len() > 2 && !f32_const(2) {
                return Err("the bias is not a constant".into());
            }
            Role::Conv
        }
        Op::Gemm(g) => {
            if g.alpha != 1.0 || g.beta != 1.0 || g.trans_a {
                return Err(
                    "Gemm with alpha or beta other than 1 or a transposed A has no int8 form"
                        .into(),
                );
            }
            if !activation(0) || !f32_const(1) || rank(1) != 2 {
                return Err("an int8 Gemm needs an f32 activation A and a constant 2-D B".into());
            }
            if node.inputs.len() > 2 {
                let n = graph.value(node.inputs[1]).ty.dims()[if g.trans_b { 0 } else { 1 }];
                if !f32_const(2) || graph.value(node.inputs[2]).ty.dims() != [n] {
                    return Err("Gemm's C is not a constant vector of one value per column".into());
                }
            }
            Role::Matrix {
                weight_axis: if g.trans_b { 0 } else { 1 },
            }
        }
        Op::MatMul => {
            if !activation(0) || rank(0) < 2 || !f32_const(1) || rank(1) != 2 {
                return Err("an int8 MatMul needs an f32 activation A and a constant 2-D B".into());
            }
            Role::Matrix { weight_axis: 1 }
        }
        Op::Binary(BinaryOp::Add) => {
            let out = &graph.value(node.outputs[0]).ty;
            let same = node.inputs.iter().all(|&v| &graph.value(v).ty == out);
            if !activation(0) || !activation(1) || !same {
                return Err("only an Add of two same-shape activations has an int8 kernel".into());
            }
            Role::Add
        }
        Op::MaxPool(_) | Op::GlobalAveragePool => {
            if !activation(0) {
                return Err("the pooled input is not an f32 activation".into());
            }
            Role::Pool
        }
        Op::Concat { .. } => {
            if !(0..node.inputs.len()).all(activation) {
                return Err("a Concat of constants has no int8 form".into());
            }
            Role::Concat
        }
        _ => return Err("no int8 kernel".into()),
    };
    let admitted = match ops {
        QuantizedOps::EveryOpWithInt8Kernel => true,
        QuantizedOps::ConvAndGemmOnly => matches!(role, Role::Conv | Role::Matrix { .. }),
    };
    if admitted {
        Ok(role)
    } else {
        Err("the profile runs only Conv and Gemm in int8".into())
    }
}

/// Ops with a cost worth telling about when they stay fp32 (layout and Q/DQ ops are not).
fn is_compute(op: &Op) -> bool {
    !is_layout(op)
        && !matches!(
            op,
            Op::QuantizeLinear(_)
                | Op::DequantizeLinear(_)
                | Op::Dropout { .. }
                | Op::Shape { .. }
                | Op::Split { .. }
                | Op::Slice { .. }
                | Op::Cast { .. }
                | Op::Gather { .. }
        )
}

/// The plan: which nodes run in int8 and which tensors are quantized with what.
struct Plan {
    roles: HashMap<NodeId, Role>,
    /// Quantized tensors, with their parameters.
    params: HashMap<ValueId, QParams>,
    summary: InsertSummary,
}

fn plan(graph: &Graph, options: &QuantizeOptions) -> Result<Plan, PassError> {
    let order = graph.topo_order().map_err(graph_err)?;
    let profile = &options.profile;
    let outputs: HashSet<ValueId> = graph.outputs().iter().copied().collect();
    let mut summary = InsertSummary::default();

    let mut exclusions = Exclusions::new(&options.exclude);
    let mut roles = HashMap::new();
    for &id in &order {
        let node = graph.node(id);
        let excluded = exclusions.excludes(&node.name);
        match role_of(graph, id, profile.quantized_ops) {
            Ok(_) if excluded => summary.excluded.push(node.name.clone()),
            Ok(role) => {
                roles.insert(id, role);
            }
            Err(reason) if is_compute(&node.op) => summary
                .kept_float
                .push((node.name.clone(), format!("{} ({reason})", node.op.name()))),
            Err(_) => {}
        }
    }
    exclusions.check().map_err(pass_err)?;

    let single_reader = |v: ValueId| -> Option<NodeId> {
        let readers = graph.consumers(v);
        match readers.as_slice() {
            [(n, _)] if !outputs.contains(&v) => Some(*n),
            _ => None,
        }
    };
    // TensorRT's residual fusion: the conv feeding an int8 Add keeps its output in i32.
    let mut accumulated_into_add: HashSet<NodeId> = HashSet::new();
    let mut quantized_inputs: HashMap<NodeId, Vec<usize>> = HashMap::new();
    for &id in &order {
        let Some(&role) = roles.get(&id) else {
            continue;
        };
        let node = graph.node(id);
        let inputs: Vec<usize> = match role {
            Role::Conv | Role::Matrix { .. } | Role::Pool => vec![0],
            Role::Concat => (0..node.inputs.len()).collect(),
            Role::Add => match profile.residual_add {
                ResidualAdd::AccumulateIntoConv => {
                    let fused = (0..2).find(|&i| {
                        let v = node.inputs[i];
                        let producer = producer(graph, v);
                        producer.is_some_and(|p| {
                            roles.get(&p) == Some(&Role::Conv)
                                && single_reader(v) == Some(id)
                                && !accumulated_into_add.contains(&p)
                        })
                    });
                    match fused {
                        Some(i) => {
                            if let Some(p) = producer(graph, node.inputs[i]) {
                                accumulated_into_add.insert(p);
                            }
                            vec![1 - i]
                        }
                        None => vec![0, 1],
                    }
                }
                ResidualAdd::QuantizeBothInputs | ResidualAdd::KeepFloat => vec![0, 1],
            },
        };
        quantized_inputs.insert(id, inputs);
    }

    // Relu/Clip nodes that become the clamp of the int8 node before them.
    let mut clamped: HashSet<String> = HashSet::new();
    // The quantized tensors, and whose parameters each one inherits.
    let mut quantized: Vec<ValueId> = Vec::new();
    let mut seen = HashSet::new();
    let add = |v: ValueId, quantized: &mut Vec<ValueId>, seen: &mut HashSet<ValueId>| {
        if seen.insert(v) {
            quantized.push(v);
        }
    };
    for &id in &order {
        let Some(&role) = roles.get(&id) else {
            continue;
        };
        let node = graph.node(id);
        for &i in &quantized_inputs[&id] {
            add(node.inputs[i], &mut quantized, &mut seen);
        }
        if accumulated_into_add.contains(&id) {
            continue;
        }
        let mut out = node.outputs[0];
        if role.is_accumulating() {
            if let Some(reader) = single_reader(out) {
                if matches!(
                    graph.node(reader).op,
                    Op::Activation(Activation::Relu | Activation::Clip { .. })
                ) {
                    out = graph.node(reader).outputs[0];
                    clamped.insert(graph.node(reader).name.clone());
                }
            }
        }
        add(out, &mut quantized, &mut seen);
    }
    // Layout ops between two quantized tensors pass parameters through, as does MaxPool.
    for &id in &order {
        let node = graph.node(id);
        let passes_through = is_layout(&node.op) || matches!(node.op, Op::MaxPool(_));
        if passes_through && seen.contains(&node.inputs[0]) {
            add(node.outputs[0], &mut quantized, &mut seen);
        }
    }

    let activation_params = |v: ValueId| -> Result<QParams, PassError> {
        let name = &graph.value(v).name;
        let stats = options
            .stats
            .tensor(name)
            .filter(|s| s.count() > 0)
            .ok_or_else(|| {
                pass_err(format!(
                    "no calibration statistics for tensor '{name}': the stats file was made for \
                 another model (or by another qcc version); run `qcc calibrate` on this model"
                ))
            })?;
        activation_qparams(stats, options.methods.activations, profile)
            .map_err(|e| pass_err(e.for_tensor(name).to_string()))
    };
    // Concat inputs take the Concat's output parameters (first Concat wins).
    let mut forced: HashMap<ValueId, QParams> = HashMap::new();
    for &id in &order {
        if roles.get(&id) == Some(&Role::Concat) {
            let node = graph.node(id);
            let p = activation_params(node.outputs[0])?;
            for &v in &node.inputs {
                forced.entry(v).or_insert_with(|| p.clone());
            }
            forced.entry(node.outputs[0]).or_insert(p);
        }
    }
    let quantized_set: HashSet<ValueId> = quantized.iter().copied().collect();
    let mut params: HashMap<ValueId, QParams> = HashMap::new();
    // Inputs first, then node outputs in topological order, so inheritance sees its source.
    let mut ordered: Vec<ValueId> = graph
        .input_values()
        .into_iter()
        .filter(|v| quantized_set.contains(v))
        .collect();
    for &id in &order {
        ordered.extend(
            graph
                .node(id)
                .outputs
                .iter()
                .filter(|v| quantized_set.contains(v)),
        );
    }
    for v in ordered {
        let inherited = producer(graph, v).and_then(|p| {
            let node = graph.node(p);
            let passes_through = is_layout(&node.op) || matches!(node.op, Op::MaxPool(_));
            if passes_through {
                params.get(&node.inputs[0]).cloned()
            } else {
                None
            }
        });
        let p = match (forced.get(&v), inherited) {
            (Some(p), _) => p.clone(),
            (None, Some(p)) => p,
            (None, None) => activation_params(v)?,
        };
        params.insert(v, p);
    }
    summary
        .kept_float
        .retain(|(node, _)| !clamped.contains(node));
    summary.quantized_nodes = roles.len();
    summary.quantized_tensors = params.len();
    Ok(Plan {
        roles,
        params,
        summary,
    })
}

/// Inserts Q/DQ pairs into `graph` as `options` say; returns the new graph and a summary.
pub fn insert_qdq(
    graph: &Graph,
    options: &QuantizeOptions,
) -> Result<(Graph, InsertSummary), PassError> {
    let plan = plan(graph, options)?;
    if plan.roles.is_empty() {
        return Ok((graph.clone(), plan.summary));
    }
    // Graph inputs that are quantized: their DQ value, made on first use.
    let mut input_dq: HashMap<ValueId, ValueId> = HashMap::new();
    let input_values: HashSet<ValueId> = graph.input_values().into_iter().collect();
    let mut failure: Option<PassError> = None;
    let ids: HashMap<*const Node, NodeId> = graph
        .petgraph()
        .node_indices()
        .map(|n| (graph.node(n) as *const Node, n))
        .collect();
    let new = graph
        .rebuild(|r, node| {
            let id = ids.get(&(node as *const Node)).copied();
            let role = id.and_then(|n| plan.roles.get(&n).copied());
            let weight_params = match role {
                Some(Role::Conv) => Some(weight_params(graph, node, 0, options)),
                Some(Role::Matrix { weight_axis }) => {
                    Some(weight_params(graph, node, weight_axis, options))
                }
                _ => None,
            };
            let weight_params = match weight_params.transpose().and_then(|pw| {
                pw.map(|pw| {
                    let px = plan.params.get(&node.inputs[0]);
                    let bias = node.inputs.get(2).and_then(|&b| graph.constant(b));
                    floor_weight_scales(&pw, px, bias)
                })
                .transpose()
            }) {
                Ok(p) => p,
                Err(e) => {
                    failure = Some(e);
                    return Err(GraphError::Other("weight quantization failed".into()));
                }
            };
            let mut inputs = Vec::with_capacity(node.inputs.len());
            for (i, &v) in node.inputs.iter().enumerate() {
                if input_values.contains(&v) && plan.params.contains_key(&v) {
                    let dq = match input_dq.get(&v) {
                        Some(&dq) => dq,
                        None => {
                            let x = r.map(v)?;
                            let name = graph.value(v).name.clone();
                            let dq = add_pair(r, x, &name, &plan.params[&v], false)?;
                            input_dq.insert(v, dq);
                            dq
                        }
                    };
                    inputs.push(dq);
                    continue;
                }
                if let (1, Some(pw)) = (i, &weight_params) {
                    match quantized_weight(r, graph, node, pw) {
                        Ok(dq) => inputs.push(dq),
                        Err(e) => {
                            failure = Some(e);
                            return Err(GraphError::Other("weight quantization failed".into()));
                        }
                    }
                    continue;
                }
                if let (2, Some(pw)) = (i, &weight_params) {
                    match quantized_bias(r, graph, node, &plan.params, pw) {
                        Ok(dq) => inputs.push(dq),
                        Err(e) => {
                            failure = Some(e);
                            return Err(GraphError::Other("bias quantization failed".into()));
                        }
                    }
                    continue;
                }
                inputs.push(r.map(v)?);
            }
            let names: Vec<String> = node
                .outputs
                .iter()
                .map(|&o| {
                    let name = &graph.value(o).name;
                    if plan.params.contains_key(&o) {
                        r.new.fresh_name(&format!("{name}.float"))
                    } else {
                        name.clone()
                    }
                })
                .collect();
            let n = r
                .new
                .add_node(node.name.clone(), node.op.clone(), inputs, names)?;
            let mut outs = r.new.node(n).outputs.clone();
            for (k, &o) in node.outputs.iter().enumerate() {
                if let Some(p) = plan.params.get(&o) {
                    let name = graph.value(o).name.clone();
                    outs[k] = add_pair(r, outs[k], &name, p, true)?;
                }
            }
            Ok(outs)
        })
        .map_err(|e| failure.take().unwrap_or_else(|| graph_err(e)))?;
    Ok((new, plan.summary))
}

/// The smallest weight scale kept, relative to the largest channel's: a channel that
/// batch-norm folding has all but zeroed (|w| ~ 1e-13 next to 1e-1) would otherwise get a
/// scale so small that its requantization multiplier needs a shift past 62 bits and its bias
/// overflows i32. At this floor such a channel's weights quantize to 0, which they are.
const MIN_RELATIVE_WEIGHT_SCALE: f32 = 1.0 / (1 << 20) as f32;

/// Raises tiny per-channel weight scales so that every channel's requantization is
/// representable and its bias `b / (s_x·s_w)` fits in i32 with room (2^30), as onnxruntime
/// adjusts weight scales for int32 biases. Zero points are kept.
pub(crate) fn floor_weight_scales(
    pw: &QParams,
    px: Option<&QParams>,
    bias: Option<&Tensor>,
) -> Result<QParams, PassError> {
    let largest = pw.scales().iter().copied().fold(0.0f32, f32::max);
    let bias: Option<Vec<f32>> =
        bias.and_then(|b| b.as_f32().ok().map(|a| a.iter().copied().collect()));
    let s_x = px.map(|p| p.scales()[0]);
    let scales: Vec<f32> = pw
        .scales()
        .iter()
        .enumerate()
        .map(|(c, &s)| {
            let mut floor = largest * MIN_RELATIVE_WEIGHT_SCALE;
            if let (Some(b), Some(s_x)) = (&bias, s_x) {
                let needed = if pw.is_per_tensor() {
                    b.iter().fold(0.0f32, |m, v| m.max(v.abs()))
                } else {
                    b.get(c).map_or(0.0, |v| v.abs())
                } / (s_x * (1u32 << 30) as f32);
                floor = floor.max(needed);
            }
            s.max(floor)
        })
        .collect();
    if scales == pw.scales() {
        return Ok(pw.clone());
    }
    QParams::new(pw.dtype(), pw.axis(), scales, pw.zero_points().to_vec())
        .map_err(|e| pass_err(format!("adjusting weight scales: {e}")))
}

/// An f32 bias as int32 at the bias parameters `pb` (per channel along axis 0, or per
/// tensor), as onnxruntime quantizes a bias: `round_half_even(b / (s_x·s_w))` with the scale
/// an f32 product, saturated to i32 (NaN to 0).
pub(crate) fn quantize_bias(tensor: &Tensor, pb: &QParams) -> Result<Tensor, String> {
    let values = tensor.as_f32().map_err(|e| e.to_string())?;
    let quantized: Vec<i32> = values
        .iter()
        .enumerate()
        .map(|(c, &v)| {
            let (scale, _) = pb.channel(if pb.is_per_tensor() { 0 } else { c });
            let q = (v / scale).round_ties_even();
            if q.is_nan() {
                0
            } else {
                q.clamp(i32::MIN as f32, i32::MAX as f32) as i32
            }
        })
        .collect();
    ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(values.shape()), quantized)
        .map(Tensor::I32)
        .map_err(|e| e.to_string())
}

/// `Q(x) → DQ`: returns the DQ value. With `takes_name`, the DQ output is called `name`
/// (the tensor it stands for); otherwise `name.dq`.
fn add_pair(
    r: &mut qcc_ir::Rebuilder,
    x: ValueId,
    name: &str,
    p: &QParams,
    takes_name: bool,
) -> Result<ValueId, GraphError> {
    let q_name = r.new.fresh_name(&format!("{name}.q"));
    let q = r.new.add_node(
        format!("{name}.quantize"),
        Op::QuantizeLinear(p.clone()),
        vec![x],
        vec![q_name],
    )?;
    let q = r.new.node(q).outputs[0];
    let dq_name = if takes_name {
        name.to_string()
    } else {
        r.new.fresh_name(&format!("{name}.dq"))
    };
    let dq = r.new.add_node(
        format!("{name}.dequantize"),
        Op::DequantizeLinear(p.clone()),
        vec![q],
        vec![dq_name],
    )?;
    Ok(r.new.node(dq).outputs[0])
}

/// A constant quantized by the interpreter's QuantizeLinear (the one definition of the
/// rounding), then a DQ; returns the DQ value.
fn quantized_constant(
    r: &mut qcc_ir::Rebuilder,
    name: &str,
    tensor: &Tensor,
    p: &QParams,
) -> Result<ValueId, PassError> {
    let q = qcc_ir::eval::eval_op(&Op::QuantizeLinear(p.clone()), &[tensor])
        .map_err(|e| pass_err(format!("quantizing '{name}': {e}")))?
        .into_iter()
        .next()
        .ok_or_else(|| pass_err(format!("quantizing '{name}' gave no tensor")))?;
    let const_name = r.new.fresh_name(&format!("{name}.quantized"));
    let c = r.new.add_constant(const_name, q).map_err(graph_err)?;
    let dq_name = r.new.fresh_name(&format!("{name}.dequantized"));
    let dq = r
        .new
        .add_node(
            format!("{name}.dequantize"),
            Op::DequantizeLinear(p.clone()),
            vec![c],
            vec![dq_name],
        )
        .map_err(graph_err)?;
    Ok(r.new.node(dq).outputs[0])
}

fn weight_params(
    graph: &Graph,
    node: &Node,
    axis: usize,
    options: &QuantizeOptions,
) -> Result<QParams, PassError> {
    let w = node.inputs[1];
    let name = &graph.value(w).name;
    let tensor = graph.constant(w).ok_or_else(|| {
        pass_err(format!(
            "weight '{name}' of node '{}' is not a constant",
            node.name
        ))
    })?;
    let data: Vec<f32> = tensor
        .as_f32()
        .map_err(|e| pass_err(format!("weight '{name}': {e}")))?
        .iter()
        .copied()
        .collect();
    weight_qparams(
        &data,
        tensor.dims(),
        axis,
        options.methods.weights,
        &options.profile,
    )
    .map_err(|e: QuantError| pass_err(e.for_tensor(name).to_string()))
}

fn quantized_weight(
    r: &mut qcc_ir::Rebuilder,
    graph: &Graph,
    node: &Node,
    p: &QParams,
) -> Result<ValueId, PassError> {
    let w = node.inputs[1];
    let tensor = graph
        .constant(w)
        .ok_or_else(|| pass_err("weight vanished".into()))?;
    quantized_constant(r, &graph.value(w).name, tensor, p)
}

fn quantized_bias(
    r: &mut qcc_ir::Rebuilder,
    graph: &Graph,
    node: &Node,
    params: &HashMap<ValueId, QParams>,
    pw: &QParams,
) -> Result<ValueId, PassError> {
    let px = params.get(&node.inputs[0]).ok_or_else(|| {
        pass_err(format!(
            "node '{}': the input of an int8 node is not quantized",
            node.name
        ))
    })?;
    let b = node.inputs[2];
    let name = graph.value(b).name.clone();
    let pb = bias_qparams(px, pw).map_err(|e| pass_err(e.for_tensor(&name).to_string()))?;
    let tensor = graph
        .constant(b)
        .ok_or_else(|| pass_err(format!("bias '{name}' is not a constant")))?;
    let q = quantize_bias(tensor, &pb).map_err(|e| pass_err(format!("bias '{name}': {e}")))?;
    let const_name = r.new.fresh_name(&format!("{name}.quantized"));
    let c = r.new.add_constant(const_name, q).map_err(graph_err)?;
    let dq_name = r.new.fresh_name(&format!("{name}.dequantized"));
    let dq = r
        .new
        .add_node(
            format!("{name}.dequantize"),
            Op::DequantizeLinear(pb),
            vec![c],
            vec![dq_name],
        )
        .map_err(graph_err)?;
    Ok(r.new.node(dq).outputs[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_names_with_star_wildcards() {
        assert!(pattern_matches("conv1", "conv1"));
        assert!(!pattern_matches("conv1", "conv10"));
        assert!(pattern_matches("layer1.*", "layer1.0.conv1"));
        assert!(pattern_matches("*.conv2", "layer4.1.conv2"));
        assert!(!pattern_matches("*.conv2", "layer4.1.conv1"));
        assert!(pattern_matches("layer*conv*", "layer2.0.conv1"));
        assert!(!pattern_matches("layer*conv*x", "layer2.0.conv1"));
        assert!(pattern_matches("*", "anything"));
    }

    #[test]
    fn dead_weight_channels_get_a_representable_scale_and_biases_fit_in_i32() {
        let pw = QParams::per_channel(DType::I8, 0, vec![0.1, 1e-15, 0.05], vec![0, 0, 0])
            .expect("params");
        let px = QParams::per_tensor(DType::U8, 0.02, 0).expect("params");
        // Without a bias only the relative floor applies.
        let floored = floor_weight_scales(&pw, Some(&px), None).expect("floors");
        assert_eq!(floored.scales()[0], 0.1);
        assert_eq!(floored.scales()[1], 0.1 * MIN_RELATIVE_WEIGHT_SCALE);
        assert_eq!(floored.scales()[2], 0.05);
        let m = qcc_ir::op::requant_multipliers(
            &px,
            &floored,
            &QParams::per_tensor(DType::U8, 0.05, 0).expect("params"),
        );
        assert!(m.is_ok(), "{m:?}");
        // A large bias on the dead channel raises its scale until b / (s_x·s_w) <= 2^30.
        let bias = Tensor::from_f32(&[3], vec![0.5, 3.0e4, -0.25]);
        let floored = floor_weight_scales(&pw, Some(&px), Some(&bias)).expect("floors");
        let q = 3.0e4 / (0.02 * floored.scales()[1]);
        assert!(q <= (1u32 << 30) as f32 * 1.0001, "{q}");
        assert_eq!(
            floored.scales()[0],
            0.1,
            "healthy channels keep their scale"
        );
    }
}
