//! ONNX `ModelProto` to `qcc_ir::Graph`.
//!
//! The importer reads the model, refuses in one diagnostic every node it cannot translate,
//! turns initializers and `Constant` nodes into IR constants, declares the graph inputs
//! (binding a symbolic batch dim), then translates node by node, each op in its own small
//! function. Inputs that ONNX passes as tensors but the IR needs as static attributes (Reshape
//! shapes, Slice bounds, Q/DQ parameters...) must be known at import time: constants, or small
//! values the IR computes while the graph is built (PyTorch's Shape → Gather → Concat chains).

mod node;
mod ops;
mod quant;
mod shape_ops;
mod support;
mod tensor;
#[cfg(test)]
mod tests;
#[cfg(test)]
#[cfg(test)]
mod tests_ops;
#[cfg(test)]
mod tests_quant;

pub use support::{UnsupportedNode, SUPPORTED_OPS};
pub use tensor::tensor_from_proto;

use crate::onnx::proto::{type_proto, GraphProto, ModelProto, TypeProto, ValueInfoProto};
use node::{Lowered, NodeCtx};
use qcc_ir::{DType, Dim, Graph, GraphError, Tensor, TensorType};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use tensor::{dtype_from_onnx, onnx_type_name, MAX_DIM, MAX_NUMEL};

#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The value bound to a symbolic batch dimension. Must be at least 1.
    pub batch: usize,
    /// Values for graph inputs that feed slots which must be static (Reshape's shape, Slice's
    /// bounds, quantization parameters...). Such inputs become constants; the importer ignores
    /// values for every other input.
    pub input_values: HashMap<String, Tensor>,
}

impl Default for ImportOptions {
    fn default() -> ImportOptions {
        ImportOptions {
            batch: 1,
            input_values: HashMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{path}: not a valid ONNX model: {message}")]
    Decode { path: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", UnsupportedList(.0))]
    Unsupported(Vec<UnsupportedNode>),
    #[error("tensor '{name}': {message}")]
    Tensor { name: String, message: String },
    #[error("node '{node}' ({op}): attribute '{attribute}': {message}")]
    Attribute {
        node: String,
        op: String,
        attribute: String,
        message: String,
    },
    #[error("node '{node}' ({op}): {message}")]
    Node {
        node: String,
        op: String,
        message: String,
    },
    /// A graph input, output or annotated value.
    #[error("value '{name}': {message}")]
    Value { name: String, message: String },
    #[error("tensor '{tensor}': external data '{path}': {message}")]
    ExternalData {
        tensor: String,
        path: String,
        message: String,
    },
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("{0}")]
    Model(String),
}

/// Prints one unsupported node per line under a count.
struct UnsupportedList<'a>(&'a [UnsupportedNode]);

impl fmt::Display for UnsupportedList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} unsupported node(s):", self.0.len())?;
        for n in self.0 {
            write!(f, "\n  {n}")?;
        }
        Ok(())
    }
}

pub fn import_file(path: &Path, opts: &ImportOptions) -> Result<Graph, ImportError> {
    let label = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| ImportError::Io {
        path: label.clone(),
        source,
    })?;
    // External data is relative to the model's directory; a bare file name lives in ".".
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    import_model(&bytes, Some(base), &label, opts)
}

/// Imports a model held in memory. `base_dir` is where external data files live; without it,
/// tensors stored externally are refused.
pub fn import_bytes(
    bytes: &[u8],
    base_dir: Option<&Path>,
    opts: &ImportOptions,
) -> Result<Graph, ImportError> {
    import_model(bytes, base_dir, "<in-memory model>", opts)
}

fn import_model(
    bytes: &[u8],
    base_dir: Option<&Path>,
    label: &str,
    opts: &ImportOptions,
) -> Result<Graph, ImportError> {
    if opts.batch == 0 || opts.batch as u64 > MAX_DIM {
        return Err(ImportError::Model(format!(
            "batch size {} is out of range",
            opts.batch
        )));
    }
    let model = ModelProto::decode_bytes(bytes).map_err(|e| ImportError::Decode {
        path: label.to_string(),
        message: e.to_string(),
    })?;
    let proto = model
        .graph
        .as_ref()
        .ok_or_else(|| ImportError::Model(format!("{label}: the model has no graph")))?;
    let opsets = opset_versions(&model);
    Importer::new(proto, opsets, base_dir, opts).run(label)
}

/// Opset version per domain; the default domain is keyed "" (also when spelled "ai.onnx").
fn opset_versions(model: &ModelProto) -> HashMap<String, i64> {
    let mut opsets = HashMap::new();
    for o in &model.opset_import {
        opsets.insert(support::canonical_domain(&o.domain).to_string(), o.version);
    }
    // IR versions before 3 had no opset imports and meant opset 1. Later models that import
    // no default opset may only use other domains (their nodes are reported as unsupported).
    if !opsets.contains_key("") && model.ir_version < 3 {
        opsets.insert(String::new(), 1);
    }
    opsets
}

struct Importer<'a> {
    proto: &'a GraphProto,
    opsets: HashMap<String, i64>,
    base_dir: Option<&'a Path>,
    opts: &'a ImportOptions,
    graph: Graph,
    /// Unique node names, index-aligned with `proto.node`.
    node_names: Vec<String>,
    used: HashSet<String>,
    taken: HashSet<String>,
}

impl<'a> Importer<'a> {
    fn new(
        proto: &'a GraphProto,
        opsets: HashMap<String, i64>,
        base_dir: Option<&'a Path>,
        opts: &'a ImportOptions,
    ) -> Self {
        let node_names = unique_node_names(proto);
        let mut used: HashSet<String> = proto
            .node
            .iter()
            .flat_map(|n| n.input.iter().cloned())
            .collect();
        used.extend(proto.output.iter().map(|o| o.name.clone()));
        let mut taken: HashSet<String> = proto
            .node
            .iter()
            .flat_map(|n| n.output.iter().cloned())
            .collect();
        taken.extend(proto.input.iter().map(|i| i.name.clone()));
        taken.extend(proto.initializer.iter().map(|i| i.name.clone()));
        let graph = Graph::new(proto.name.clone());
        Importer {
            proto,
            opsets,
            base_dir,
            opts,
            graph,
            node_names,
            used,
            taken,
        }
    }

    fn run(mut self, label: &str) -> Result<Graph, ImportError> {
        let unsupported =
            support::unsupported_nodes(self.proto, &self.node_names, &self.opsets, &self.used);
        if !unsupported.is_empty() {
            return Err(ImportError::Unsupported(unsupported));
        }
        if !self.opsets.contains_key("") && !self.proto.node.is_empty() {
            return Err(ImportError::Model(format!(
                "{label}: the model imports no version of the default ONNX opset"
            )));
        }
        if let Some(s) = self.proto.sparse_initializer.first() {
            let name = s
                .values
                .as_ref()
                .map_or("", |v| v.name.as_str())
                .to_string();
            return Err(ImportError::Tensor {
                name,
                message: "sparse initializers are not supported".into(),
            });
        }
        for init in &self.proto.initializer {
            let t = tensor_from_proto(init, self.base_dir)?;
            self.graph.add_constant(init.name.clone(), t)?;
        }
        self.add_inputs()?;
        for (index, node) in self.proto.node.iter().enumerate() {
            self.add_node(index, node)?;
        }
        let mut outputs = Vec::with_capacity(self.proto.output.len());
        for o in &self.proto.output {
            let id = self
                .graph
                .value_by_name(&o.name)
                .ok_or_else(|| ImportError::Value {
                    name: o.name.clone(),
                    message: "graph output is not produced by any node, input or initializer"
                        .into(),
                })?;
            outputs.push(id);
        }
        if outputs.is_empty() {
            return Err(ImportError::Model(format!(
                "{label}: the graph has no outputs"
            )));
        }
        self.graph.set_outputs(outputs);
        for vi in self.proto.output.iter().chain(&self.proto.value_info) {
            self.check_declared_type(vi)?;
        }
        Ok(self.graph)
    }

    /// Declares every graph input that is not an initializer; inputs whose value the caller
    /// supplies and that feed a static slot become constants instead.
    fn add_inputs(&mut self) -> Result<(), ImportError> {
        let initializers: HashSet<&str> = self
            .proto
            .initializer
            .iter()
            .map(|i| i.name.as_str())
            .collect();
        let static_inputs = support::static_input_names(self.proto);
        for input in &self.proto.input {
            if initializers.contains(input.name.as_str()) {
                continue;
            }
            let (dtype, declared) = declared_input(input, self.opts.batch)?;
            let supplied = self.opts.input_values.get(&input.name);
            match supplied {
                Some(t) if static_inputs.contains(input.name.as_str()) => {
                    check_supplied(&input.name, t, dtype, &declared, self.opts.batch)?;
                    self.graph.add_constant(input.name.clone(), t.clone())?;
                }
                _ => {
                    self.graph.add_input_declared(
                        input.name.clone(),
                        dtype,
                        declared,
                        self.opts.batch,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn add_node(
        &mut self,
        index: usize,
        proto: &crate::onnx::proto::NodeProto,
    ) -> Result<(), ImportError> {
        let name = self.node_names[index].clone();
        let domain = support::canonical_domain(&proto.domain);
        let opset = self.opsets.get(domain).copied().unwrap_or(0);
        let mut inputs = Vec::with_capacity(proto.input.len());
        for i in &proto.input {
            if i.is_empty() {
                inputs.push(None);
                continue;
            }
            let id = self
                .graph
                .value_by_name(i)
                .ok_or_else(|| ImportError::Node {
                    node: name.clone(),
                    op: proto.op_type.clone(),
                    message: format!(
                        "input '{i}' is not defined before this node \
                     (nodes must be in topological order)"
                    ),
                })?;
            inputs.push(Some(id));
        }
        let ctx = NodeCtx {
            proto,
            name: name.clone(),
            opset,
            graph: &self.graph,
            inputs,
            used: &self.used,
            taken: &self.taken,
            base_dir: self.base_dir,
        };
        let lowered = ops::lower(&ctx)?;
        let produced = match &lowered {
            Lowered::Node { outputs, .. } => outputs.len(),
            Lowered::Constant(_) => 1,
        };
        // Outputs past what the IR op produces are optional ones (MaxPool's Indices, Dropout's
        // mask...). Dropping them is fine only while nothing reads them.
        if let Some(i) = (produced..proto.output.len()).find(|&i| ctx.output_used(i)) {
            return Err(ctx.err(format!(
                "output {i} ('{}') is not supported",
                proto.output[i]
            )));
        }
        match lowered {
            Lowered::Node {
                op,
                inputs,
                outputs,
            } => {
                self.graph.add_node(name, op, inputs, outputs)?;
            }
            Lowered::Constant(t) => {
                let out = ctx
                    .output(0)
                    .ok_or_else(|| ctx.err("a Constant needs an output name"))?
                    .to_string();
                self.graph.add_constant(out, t)?;
            }
        }
        Ok(())
    }

    /// Compares a declared type with the inferred one where the declaration is fully static.
    fn check_declared_type(&self, vi: &ValueInfoProto) -> Result<(), ImportError> {
        let Some(id) = self.graph.value_by_name(&vi.name) else {
            return Ok(());
        };
        let Some((elem, dims)) = static_tensor_type(vi.r#type.as_ref()) else {
            return Ok(());
        };
        let actual = &self.graph.value(id).ty;
        let declared = match dtype_from_onnx(elem) {
            Some(d) => TensorType::new(d, dims),
            None => {
                return Err(ImportError::Value {
                    name: vi.name.clone(),
                    message: format!(
                        "declared as {}, but qcc computes {actual}",
                        onnx_type_name(elem)
                    ),
                })
            }
        };
        if &declared != actual {
            return Err(ImportError::Value {
                name: vi.name.clone(),
                message: format!("declared as {declared}, but qcc infers {actual}"),
            });
        }
        Ok(())
    }
}

/// Node names as given, except that empty and repeated names become `{op_type}_{index}`.
fn unique_node_names(proto: &GraphProto) -> Vec<String> {
    let given: HashSet<&str> = proto.node.iter().map(|n| n.name.as_str()).collect();
    let mut seen = HashSet::new();
    let mut names = Vec::with_capacity(proto.node.len());
    for (i, n) in proto.node.iter().enumerate() {
        let mut name = n.name.clone();
        if name.is_empty() || seen.contains(&name) {
            let base = format!("{}_{i}", n.op_type);
            name = base.clone();
            let mut k = 1;
            while given.contains(name.as_str()) || seen.contains(&name) {
                name = format!("{base}_{k}");
                k += 1;
            }
        }
        seen.insert(name.clone());
        names.push(name);
    }
    names
}

/// Element type and declared dims of a graph input.
fn declared_input(input: &ValueInfoProto, batch: usize) -> Result<(DType, Vec<Dim>), ImportError> {
    let err = |message: String| ImportError::Value {
        name: input.name.clone(),
        message,
    };
    let tensor = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t,
        Some(_) => {
            return Err(err(
                "only tensor inputs are supported (not sequences, maps or optionals)".into(),
            ))
        }
        None => return Err(err("the input has no type".into())),
    };
    let dtype = dtype_from_onnx(tensor.elem_type).ok_or_else(|| {
        err(format!(
            "element type {} is not supported",
            onnx_type_name(tensor.elem_type)
        ))
    })?;
    let shape = tensor
        .shape
        .as_ref()
        .ok_or_else(|| err("the input's rank is unknown".into()))?;
    let mut declared = Vec::with_capacity(shape.dim.len());
    let mut numel: u64 = 1;
    for (i, d) in shape.dim.iter().enumerate() {
        use crate::onnx::proto::tensor_shape_proto::dimension::Value;
        let dim = match &d.value {
            Some(Value::DimValue(v)) if (0..=MAX_DIM as i64).contains(v) => Dim::Fixed(*v as usize),
            Some(Value::DimValue(v)) => return Err(err(format!("dimension {i} is {v}"))),
            Some(Value::DimParam(p)) if !p.is_empty() => Dim::Symbolic(p.clone()),
            _ => Dim::Symbolic("?".into()),
        };
        numel = numel.saturating_mul(match dim {
            Dim::Fixed(n) => n as u64,
            Dim::Symbolic(_) => batch as u64,
        });
        declared.push(dim);
    }
    if numel > MAX_NUMEL {
        return Err(err("the input has too many elements".into()));
    }
    Ok((dtype, declared))
}

/// A value supplied for an input must match its declaration.
fn check_supplied(
    name: &str,
    t: &Tensor,
    dtype: DType,
    declared: &[Dim],
    batch: usize,
) -> Result<(), ImportError> {
    let fits = t.dims().len() == declared.len()
        && t.dims()
            .iter()
            .zip(declared)
            .enumerate()
            .all(|(i, (&n, d))| match d {
                Dim::Fixed(m) => n == *m,
                Dim::Symbolic(_) => i > 0 || n == batch,
            });
    if t.dtype() != dtype || !fits {
        let dims: Vec<String> = declared.iter().map(|d| d.to_string()).collect();
        return Err(ImportError::Value {
            name: name.to_string(),
            message: format!(
                "supplied value {} does not match the declared {dtype}[{}]",
                t.ty(),
                dims.join(",")
            ),
        });
    }
    Ok(())
}

/// `(elem_type, dims)` of a tensor type whose every dim is a known number.
fn static_tensor_type(t: Option<&TypeProto>) -> Option<(i32, Vec<usize>)> {
    let Some(type_proto::Value::TensorType(t)) = t?.value.as_ref() else {
        return None;
    };
    if t.elem_type == 0 {
        return None;
    }
    let mut dims = Vec::new();
    for d in &t.shape.as_ref()?.dim {
        match d.value {
            Some(crate::onnx::proto::tensor_shape_proto::dimension::Value::DimValue(v))
                if v >= 0 =>
            {
                dims.push(v as usize)
            }
            _ => return None,
        }
    }
    Some((t.elem_type, dims))
}
