//! The graph: nodes on a petgraph `StableDiGraph` (indices survive removals), values in a table.
//!
//! Every value is defined exactly once: as a graph input, a constant, or an output of a node.
//! Nodes are added only through [`Graph::add_node`], which infers the output types, so a graph
//! that was built is well-typed; [`Graph::verify`] re-checks that after passes mutate it.

use crate::dtype::{DType, Dim, TensorType};
use crate::op::Op;
use crate::tensor::Tensor;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef, IntoEdgeReferences};
use petgraph::Direction;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

pub type NodeId = NodeIndex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueId(pub u32);

impl ValueId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Where a value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueDef {
    Input,
    /// Shared, so that passes, which rebuild graphs, never copy weights.
    Constant(Arc<Tensor>),
    Node {
        node: NodeId,
        output: usize,
    },
}

#[derive(Clone, Debug)]
pub struct Value {
    pub name: String,
    pub ty: TensorType,
    pub def: ValueDef,
    /// The value, when it is small and computable from constants at build time (shape
    /// arithmetic such as PyTorch's Shape → Gather → Concat chains), so that the importer can
    /// turn such an input into a static attribute.
    known: Option<Tensor>,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
}

/// A graph input as the model declares it (its batch dim may be symbolic).
#[derive(Clone, Debug)]
pub struct GraphInput {
    pub value: ValueId,
    pub declared: Vec<Dim>,
}

/// Values computed at build time stay small: shape arithmetic, not weights.
const KNOWN_VALUE_MAX_ELEMENTS: usize = 4096;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GraphError {
    #[error("node '{node}' ({op}): {message} (inputs: {inputs})")]
    Node {
        node: String,
        op: &'static str,
        message: String,
        inputs: String,
    },
    #[error("value name '{0}' is defined twice")]
    DuplicateValue(String),
    #[error("graph input '{name}': {message}")]
    Input { name: String, message: String },
    #[error("graph has a cycle through node '{0}'")]
    Cycle(String),
    #[error("{0}")]
    Other(String),
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub name: String,
    nodes: StableDiGraph<Node, ValueId>,
    values: Vec<Value>,
    inputs: Vec<GraphInput>,
    outputs: Vec<ValueId>,
    by_name: HashMap<String, ValueId>,
}

impl Graph {
    pub fn new(name: impl Into<String>) -> Graph {
        Graph {
            name: name.into(),
            ..Graph::default()
        }
    }

    fn push_value(
        &mut self,
        name: String,
        ty: TensorType,
        def: ValueDef,
        known: Option<Tensor>,
    ) -> Result<ValueId, GraphError> {
        if self.by_name.contains_key(&name) {
            return Err(GraphError::DuplicateValue(name));
        }
        let id = ValueId(
            u32::try_from(self.values.len())
                .map_err(|_| GraphError::Other("too many values".into()))?,
        );
        self.by_name.insert(name.clone(), id);
        self.values.push(Value {
            name,
            ty,
            def,
            known,
        });
        Ok(id)
    }

    /// Adds a graph input with a concrete type.
    pub fn add_input(
        &mut self,
        name: impl Into<String>,
        ty: TensorType,
    ) -> Result<ValueId, GraphError> {
        let declared = ty.dims().iter().map(|&d| Dim::Fixed(d)).collect();
        self.add_input_declared(name, ty.dtype, declared, 1)
    }

    /// Adds a graph input as a model declares it; a symbolic dim is the batch and is bound to
    /// `batch`. Only the first dim may be symbolic: qcc compiles for fixed shapes.
    pub fn add_input_declared(
        &mut self,
        name: impl Into<String>,
        dtype: DType,
        declared: Vec<Dim>,
        batch: usize,
    ) -> Result<ValueId, GraphError> {
        let name = name.into();
        let mut dims = Vec::with_capacity(declared.len());
        for (i, d) in declared.iter().enumerate() {
            match d {
                Dim::Fixed(n) => dims.push(*n),
                Dim::Symbolic(_) if i == 0 => dims.push(batch),
                Dim::Symbolic(s) => {
                    return Err(GraphError::Input {
                        name,
                        message: format!("dimension {i} is symbolic ('{s}'); only the batch (first) dimension may be"),
                    })
                }
            }
        }
        let id = self.push_value(name, TensorType::new(dtype, dims), ValueDef::Input, None)?;
        self.inputs.push(GraphInput {
            value: id,
            declared,
        });
        Ok(id)
    }

    /// Adds a constant; passing an `Arc<Tensor>` taken from another graph shares the data.
    pub fn add_constant(
        &mut self,
        name: impl Into<String>,
        value: impl Into<Arc<Tensor>>,
    ) -> Result<ValueId, GraphError> {
        let value = value.into();
        let ty = value.ty();
        self.push_value(name.into(), ty, ValueDef::Constant(value), None)
    }

    /// Adds a node, inferring its output types. Fails, naming the node, when the op does not
    /// accept its inputs.
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        op: Op,
        inputs: Vec<ValueId>,
        output_names: Vec<String>,
    ) -> Result<NodeId, GraphError> {
        let name = name.into();
        let node_error = |g: &Graph, message: String| GraphError::Node {
            node: name.clone(),
            op: op.name(),
            message,
            inputs: g.describe_values(&inputs),
        };
        if let Some(bad) = inputs.iter().find(|v| v.index() >= self.values.len()) {
            return Err(node_error(
                self,
                format!("input value #{} does not exist", bad.0),
            ));
        }
        let (min, max) = op.arity();
        if inputs.len() < min || max.is_some_and(|m| inputs.len() > m) {
            let want = match max {
                Some(m) if m == min => format!("{min}"),
                Some(m) => format!("{min} to {m}"),
                None => format!("at least {min}"),
            };
            return Err(node_error(
                self,
                format!("takes {want} inputs, got {}", inputs.len()),
            ));
        }
        if output_names.len() != op.num_outputs() {
            return Err(node_error(
                self,
                format!(
                    "produces {} outputs, {} names given",
                    op.num_outputs(),
                    output_names.len()
                ),
            ));
        }
        let in_types: Vec<&TensorType> =
            inputs.iter().map(|v| &self.values[v.index()].ty).collect();
        let out_types =
            crate::infer::infer_types(&op, &in_types).map_err(|m| node_error(self, m))?;
        debug_assert_eq!(out_types.len(), output_names.len());
        let known = self.compute_known(&op, &inputs, &out_types);
        for n in &output_names {
            if self.by_name.contains_key(n) {
                return Err(node_error(
                    self,
                    format!("output name '{n}' is already defined"),
                ));
            }
        }

        let node = self.nodes.add_node(Node {
            name,
            op,
            inputs: inputs.clone(),
            outputs: Vec::new(),
        });
        let mut outputs = Vec::with_capacity(output_names.len());
        let mut known = known
            .map(|k| k.into_iter().map(Some).collect::<Vec<_>>())
            .unwrap_or_default();
        known.resize(output_names.len(), None);
        for (i, ((out_name, ty), k)) in output_names
            .into_iter()
            .zip(out_types)
            .zip(known)
            .enumerate()
        {
            outputs.push(self.push_value(out_name, ty, ValueDef::Node { node, output: i }, k)?);
        }
        self.nodes[node].outputs = outputs;
        for v in inputs {
            if let ValueDef::Node { node: producer, .. } = self.values[v.index()].def {
                self.nodes.add_edge(producer, node, v);
            }
        }
        Ok(node)
    }

    /// Evaluates a node at build time when all its inputs are known and its outputs are small.
    fn compute_known(
        &self,
        op: &Op,
        inputs: &[ValueId],
        out_types: &[TensorType],
    ) -> Option<Vec<Tensor>> {
        if out_types
            .iter()
            .any(|t| t.shape.numel() > KNOWN_VALUE_MAX_ELEMENTS)
        {
            return None;
        }
        if let Op::Shape { start, end } = op {
            let dims = &self.values[inputs[0].index()].ty.dims()[*start..*end];
            return Some(vec![Tensor::from_i64(
                &[dims.len()],
                dims.iter().map(|&d| d as i64).collect(),
            )]);
        }
        let args: Option<Vec<&Tensor>> = inputs.iter().map(|&v| self.known_value(v)).collect();
        crate::eval::eval_op(op, &args?).ok()
    }

    /// Gives a value a new, unused name.
    pub fn rename_value(&mut self, id: ValueId, name: &str) -> Result<(), GraphError> {
        if self.by_name.contains_key(name) {
            return Err(GraphError::DuplicateValue(name.to_string()));
        }
        let old = std::mem::replace(&mut self.values[id.index()].name, name.to_string());
        self.by_name.remove(&old);
        self.by_name.insert(name.to_string(), id);
        Ok(())
    }

    /// `base`, or `base.1`, `base.2`... whichever no value of the graph uses yet.
    pub fn fresh_name(&self, base: &str) -> String {
        if !self.by_name.contains_key(base) {
            return base.to_string();
        }
        (1..)
            .map(|i| format!("{base}.{i}"))
            .find(|n| !self.by_name.contains_key(n))
            .expect("some suffix is free")
    }

    pub fn set_outputs(&mut self, outputs: Vec<ValueId>) {
        self.outputs = outputs;
    }

    pub fn inputs(&self) -> &[GraphInput] {
        &self.inputs
    }
    pub fn input_values(&self) -> Vec<ValueId> {
        self.inputs.iter().map(|i| i.value).collect()
    }
    pub fn outputs(&self) -> &[ValueId] {
        &self.outputs
    }
    pub fn value(&self, id: ValueId) -> &Value {
        &self.values[id.index()]
    }
    pub fn values(&self) -> impl Iterator<Item = (ValueId, &Value)> {
        self.values
            .iter()
            .enumerate()
            .map(|(i, v)| (ValueId(i as u32), v))
    }
    pub fn value_by_name(&self, name: &str) -> Option<ValueId> {
        self.by_name.get(name).copied()
    }
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }
    pub fn node_count(&self) -> usize {
        self.nodes.node_count()
    }
    /// The underlying petgraph graph, for analyses; edges carry the value that flows.
    pub fn petgraph(&self) -> &StableDiGraph<Node, ValueId> {
        &self.nodes
    }

    /// The tensor a value always holds: a constant, or a small value computed at build time.
    pub fn known_value(&self, id: ValueId) -> Option<&Tensor> {
        let v = &self.values[id.index()];
        match &v.def {
            ValueDef::Constant(t) => Some(t),
            _ => v.known.as_ref(),
        }
    }

    pub fn constant(&self, id: ValueId) -> Option<&Tensor> {
        match &self.values[id.index()].def {
            ValueDef::Constant(t) => Some(t),
            _ => None,
        }
    }

    /// Nodes in an order where every producer comes before its consumers; ties keep insertion
    /// order so that printing and evaluation are deterministic.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, GraphError> {
        let mut indegree: HashMap<NodeId, usize> =
            self.nodes.node_indices().map(|n| (n, 0)).collect();
        for e in (&self.nodes).edge_references() {
            *indegree
                .get_mut(&e.target())
                .expect("edge target is a node") += 1;
        }
        let mut ready: std::collections::BTreeSet<NodeId> = indegree
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&n, _)| n)
            .collect();
        let mut order = Vec::with_capacity(self.nodes.node_count());
        while let Some(n) = ready.pop_first() {
            order.push(n);
            for e in self.nodes.edges_directed(n, Direction::Outgoing) {
                let d = indegree
                    .get_mut(&e.target())
                    .expect("edge target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.insert(e.target());
                }
            }
        }
        if order.len() != self.nodes.node_count() {
            let stuck = indegree
                .iter()
                .filter(|(_, &d)| d > 0)
                .map(|(n, _)| *n)
                .min()
                .expect("a node is left");
            return Err(GraphError::Cycle(self.nodes[stuck].name.clone()));
        }
        Ok(order)
    }

    /// Every (node, input slot) that reads `value`.
    pub fn consumers(&self, value: ValueId) -> Vec<(NodeId, usize)> {
        let mut out = Vec::new();
        for n in self.nodes.node_indices() {
            for (slot, &v) in self.nodes[n].inputs.iter().enumerate() {
                if v == value {
                    out.push((n, slot));
                }
            }
        }
        out
    }

    /// Checks the invariants: acyclic, every value defined once and consistently, every node's
    /// input count and types accepted by its op, stored types equal to inferred ones.
    pub fn verify(&self) -> Result<(), GraphError> {
        self.topo_order()?;
        let mut seen = std::collections::HashSet::new();
        for (id, v) in self.values() {
            if !seen.insert(&v.name) || self.by_name.get(&v.name) != Some(&id) {
                return Err(GraphError::DuplicateValue(v.name.clone()));
            }
            if let ValueDef::Node { node, output } = v.def {
                let ok = self.nodes.contains_node(node)
                    && self.nodes[node].outputs.get(output) == Some(&id);
                if !ok && !self.consumers(id).is_empty() {
                    return Err(GraphError::Other(format!(
                        "value '{}' is read but its producer is gone",
                        v.name
                    )));
                }
            }
        }
        for n in self.nodes.node_indices() {
            let node = &self.nodes[n];
            let err = |message: String| GraphError::Node {
                node: node.name.clone(),
                op: node.op.name(),
                message,
                inputs: self.describe_values(&node.inputs),
            };
            let in_types: Vec<&TensorType> = node
                .inputs
                .iter()
                .map(|v| &self.values[v.index()].ty)
                .collect();
            let out_types = crate::infer::infer_types(&node.op, &in_types).map_err(err)?;
            let stored: Vec<&TensorType> = node
                .outputs
                .iter()
                .map(|v| &self.values[v.index()].ty)
                .collect();
            if out_types.iter().collect::<Vec<_>>() != stored {
                return Err(err(format!(
                    "stored output types {stored:?} differ from inferred {out_types:?}"
                )));
            }
        }
        for &o in &self.outputs {
            if o.index() >= self.values.len() {
                return Err(GraphError::Other(format!(
                    "graph output #{} does not exist",
                    o.0
                )));
            }
        }
        Ok(())
    }

    /// `name: type` for each value, for error messages.
    pub fn describe_values(&self, ids: &[ValueId]) -> String {
        let parts: Vec<String> = ids
            .iter()
            .map(|v| match self.values.get(v.index()) {
                Some(val) => format!("{}: {}", val.name, val.ty),
                None => format!("#{}", v.0),
            })
            .collect();
        parts.join(", ")
    }
}

impl fmt::Display for ValueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "%{}", self.0)
    }
}
