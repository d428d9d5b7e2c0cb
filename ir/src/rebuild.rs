//! Rewriting a graph by rebuilding it.
//!
//! Passes do not edit a graph in place: they build a new one, node by node, through
//! [`Graph::rebuild`]. A graph therefore never holds dead values or stale edges, every node in
//! it went through shape inference, and a rewrite that breaks types fails where it happens.

use crate::graph::{Graph, GraphError, Node, ValueDef, ValueId};
use crate::op::Op;
use std::collections::{HashMap, HashSet};

/// Maps values of the graph being rebuilt to values of the new graph.
pub struct Rebuilder<'a> {
    old: &'a Graph,
    /// The graph under construction.
    pub new: Graph,
    map: HashMap<ValueId, ValueId>,
}

impl<'a> Rebuilder<'a> {
    /// The new value for an old one; constants are copied on first use, so constants nothing
    /// reads any more disappear.
    pub fn map(&mut self, old: ValueId) -> Result<ValueId, GraphError> {
        if let Some(&v) = self.map.get(&old) {
            return Ok(v);
        }
        let value = self.old.value(old);
        match &value.def {
            ValueDef::Constant(t) => {
                let v = self.new.add_constant(value.name.clone(), t.clone())?;
                self.map.insert(old, v);
                Ok(v)
            }
            _ => Err(GraphError::Other(format!(
                "value '{}' is used before it is defined in the rebuilt graph",
                value.name
            ))),
        }
    }

    /// The graph being rebuilt.
    pub fn old(&self) -> &'a Graph {
        self.old
    }

    /// Adds `node` unchanged (same name, op and output names) with its inputs mapped.
    pub fn copy_node(&mut self, node: &Node) -> Result<Vec<ValueId>, GraphError> {
        let inputs = node
            .inputs
            .iter()
            .map(|&v| self.map(v))
            .collect::<Result<Vec<_>, _>>()?;
        let names = node
            .outputs
            .iter()
            .map(|&v| self.old.value(v).name.clone())
            .collect();
        let n = self
            .new
            .add_node(node.name.clone(), node.op.clone(), inputs, names)?;
        Ok(self.new.node(n).outputs.clone())
    }
}

impl Graph {
    /// Nodes whose outputs the graph outputs depend on, in topological order.
    pub fn live_nodes(&self) -> Result<Vec<crate::NodeId>, GraphError> {
        let mut live_values: HashSet<ValueId> = self.outputs().iter().copied().collect();
        let order = self.topo_order()?;
        let mut live = HashSet::new();
        for &n in order.iter().rev() {
            let node = self.node(n);
            if node.outputs.iter().any(|o| live_values.contains(o)) {
                live.insert(n);
                live_values.extend(node.inputs.iter().copied());
            }
        }
        Ok(order.into_iter().filter(|n| live.contains(n)).collect())
    }

    /// Builds a new graph with the same inputs and outputs. `rewrite` is called, in
    /// topological order, for every node the outputs depend on (dead nodes are dropped) and
    /// returns the values of the new graph that stand for the node's outputs: usually
    /// [`Rebuilder::copy_node`], or new nodes, or an input forwarded. Graph outputs keep their
    /// names (an Identity node is added where a rewrite forwarded a graph output to a value
    /// that cannot take its name).
    pub fn rebuild(
        &self,
        rewrite: impl FnMut(&mut Rebuilder, &Node) -> Result<Vec<ValueId>, GraphError>,
    ) -> Result<Graph, GraphError> {
        self.rebuild_with_input_types(&HashMap::new(), rewrite)
    }

    /// As [`Graph::rebuild`], the inputs in `retyped` (old value → new element type) taking
    /// their new type (same dims): the graph takes, say, quantized bytes where it took
    /// floats, and `rewrite` makes the readers of those inputs fit.
    pub fn rebuild_with_input_types(
        &self,
        retyped: &HashMap<ValueId, crate::DType>,
        mut rewrite: impl FnMut(&mut Rebuilder, &Node) -> Result<Vec<ValueId>, GraphError>,
    ) -> Result<Graph, GraphError> {
        let mut r = Rebuilder {
            old: self,
            new: Graph::new(self.name.clone()),
            map: HashMap::new(),
        };
        for input in self.inputs() {
            let v = self.value(input.value);
            let dtype = retyped.get(&input.value).copied().unwrap_or(v.ty.dtype);
            let new = r.new.add_input_declared(
                v.name.clone(),
                dtype,
                input.declared.clone(),
                v.ty.dims().first().copied().unwrap_or(1),
            )?;
            // Rebinding keeps the batch the graph had; a non-batch symbolic dim cannot exist here.
            if r.new.value(new).ty.dims() != v.ty.dims() {
                return Err(GraphError::Input {
                    name: v.name.clone(),
                    message: format!("rebuilt as {}, was {}", r.new.value(new).ty, v.ty),
                });
            }
            r.map.insert(input.value, new);
        }
        for n in self.live_nodes()? {
            let node = self.node(n);
            let outs = rewrite(&mut r, node)?;
            if outs.len() != node.outputs.len() {
                return Err(GraphError::Node {
                    node: node.name.clone(),
                    op: node.op.name(),
                    message: format!(
                        "rewrite returned {} values for {} outputs",
                        outs.len(),
                        node.outputs.len()
                    ),
                    inputs: self.describe_values(&node.inputs),
                });
            }
            for (&old, new) in node.outputs.iter().zip(outs) {
                if r.new.value(new).ty != self.value(old).ty {
                    return Err(GraphError::Node {
                        node: node.name.clone(),
                        op: node.op.name(),
                        message: format!(
                            "rewrite changed output '{}' from {} to {}",
                            self.value(old).name,
                            self.value(old).ty,
                            r.new.value(new).ty
                        ),
                        inputs: self.describe_values(&node.inputs),
                    });
                }
                r.map.insert(old, new);
            }
        }
        let mut outputs = Vec::new();
        for &o in self.outputs() {
            let want = self.value(o).name.clone();
            let mut v = r.map(o)?;
            if r.new.value(v).name != want {
                let renamed = matches!(r.new.value(v).def, ValueDef::Node { .. })
                    && !outputs.contains(&v)
                    && r.new.value_by_name(&want).is_none()
                    && r.new.rename_value(v, &want).is_ok();
                if !renamed {
                    let name = r.new.fresh_name(&format!("{want}.identity"));
                    let id = r.new.add_node(name, Op::Identity, vec![v], vec![want])?;
                    v = r.new.node(id).outputs[0];
                }
            }
            outputs.push(v);
        }
        r.new.set_outputs(outputs);
        Ok(r.new)
    }
}
