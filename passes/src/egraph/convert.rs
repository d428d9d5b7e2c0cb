//! Conversion between a qcc graph and the e-graph.
//!
//! Graph → e-graph: inputs and constants become leaves, every node an `Op` e-node (plus
//! `Proj` nodes for each output of a multi-output node). Each class remembers the name of the
//! value it stood for and each e-node the name of its node, so the rebuilt graph keeps them.
//!
//! Extraction → graph: the chosen node of each needed class is added, children first, through
//! `Graph::add_node` (so shape inference re-checks every rewrite). Graph outputs keep their
//! names; a node made by a rule takes the name its rule gave it (a fused conv keeps the conv's
//! name), de-duplicated.

use super::extract::Extraction;
use super::lang::{add_op, InputEntry, OutputIndex, TGraph, TensorAnalysis, TensorLang};
use egg::{Id, Language};
use qcc_ir::{Graph, GraphError, Op, ValueDef, ValueId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The e-graph of a graph, and the classes of the graph's outputs.
pub fn graph_to_egraph(g: &Graph) -> Result<(TGraph, Vec<Id>), GraphError> {
    let mut eg = TGraph::new(TensorAnalysis::default());
    let mut class_of: HashMap<ValueId, Id> = HashMap::new();
    for (i, input) in g.inputs().iter().enumerate() {
        let v = g.value(input.value);
        eg.analysis.inputs.push(InputEntry {
            name: v.name.clone(),
            ty: v.ty.clone(),
        });
        let id = eg.add(TensorLang::Input(super::lang::InputKey(i as u32)));
        class_of.insert(input.value, id);
    }
    for (vid, v) in g.values() {
        if let ValueDef::Constant(t) = &v.def {
            let k = eg.analysis.push_const(v.name.clone(), Arc::clone(t));
            class_of.insert(vid, eg.add(TensorLang::Const(k)));
        }
    }
    for n in g.topo_order()? {
        let node = g.node(n);
        let children = node
            .inputs
            .iter()
            .map(|v| {
                class_of.get(v).copied().ok_or_else(|| {
                    GraphError::Other(format!(
                        "node '{}' reads '{}', which has no producer",
                        node.name,
                        g.value(*v).name
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let id = add_op(&mut eg, node.op.clone(), children, &node.name).ok_or_else(|| {
            GraphError::Node {
                node: node.name.clone(),
                op: node.op.name(),
                message: "does not type-check in the e-graph".into(),
                inputs: g.describe_values(&node.inputs),
            }
        })?;
        if node.outputs.len() == 1 {
            name_class(&mut eg, id, &g.value(node.outputs[0]).name);
            class_of.insert(node.outputs[0], id);
        } else {
            for (i, &out) in node.outputs.iter().enumerate() {
                let p = eg.add(TensorLang::Proj(OutputIndex(i as u32), [id]));
                name_class(&mut eg, p, &g.value(out).name);
                class_of.insert(out, p);
            }
        }
    }
    let roots = g
        .outputs()
        .iter()
        .map(|o| {
            class_of.get(o).copied().ok_or_else(|| {
                GraphError::Other(format!("graph output '{}' is undefined", g.value(*o).name))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    eg.rebuild();
    Ok((eg, roots))
}

fn name_class(eg: &mut TGraph, id: Id, name: &str) {
    if eg[id].data.name.is_none() {
        eg[id].data.name = Some(Arc::from(name));
    }
}

/// Builds the graph that `ex` chose for `roots`, with the inputs and output names of `old`.
/// Consumes the e-graph so that each constant moves into the new graph without a copy
/// (weights are most of a model's bytes).
pub fn extraction_to_graph(
    mut eg: TGraph,
    roots: &[Id],
    ex: &Extraction,
    old: &Graph,
) -> Result<Graph, GraphError> {
    for class in eg.classes_mut() {
        class.data.constant = None;
    }
    let consts = std::mem::take(&mut eg.analysis.consts)
        .into_iter()
        .map(|c| Some((c.name, c.tensor)))
        .collect();
    let eg = &eg;
    let mut b = Builder {
        consts,
        eg,
        ex,
        new: Graph::new(old.name.clone()),
        built: HashMap::new(),
        node_names: eg
            .analysis
            .node_names
            .iter()
            .rev()
            .map(|(n, name)| (n.clone().map_children(|c| eg.find(c)), name.clone()))
            .collect(),
        used_node_names: HashSet::new(),
        root_names: HashMap::new(),
        reserved: old
            .outputs()
            .iter()
            .map(|&o| old.value(o).name.clone())
            .collect(),
    };
    for (&r, &o) in roots.iter().zip(old.outputs()) {
        b.root_names
            .entry(eg.find(r))
            .or_insert_with(|| old.value(o).name.clone());
    }
    for (i, input) in old.inputs().iter().enumerate() {
        let v = old.value(input.value);
        let new = b.new.add_input_declared(
            v.name.clone(),
            v.ty.dtype,
            input.declared.clone(),
            v.ty.dims().first().copied().unwrap_or(1),
        )?;
        let id = eg
            .lookup(TensorLang::Input(super::lang::InputKey(i as u32)))
            .map(|id| eg.find(id));
        if let Some(id) = id {
            b.built.insert(id, vec![new]);
        }
    }
    let mut outputs = Vec::new();
    for (&r, &o) in roots.iter().zip(old.outputs()) {
        let want = old.value(o).name.clone();
        let mut v = b.value(r)?;
        if b.new.value(v).name != want {
            let name = b.new.fresh_name(&format!("{want}.identity"));
            let id = b.new.add_node(name, Op::Identity, vec![v], vec![want])?;
            v = b.new.node(id).outputs[0];
        }
        outputs.push(v);
    }
    b.new.set_outputs(outputs);
    Ok(b.new)
}

struct Builder<'a> {
    /// The e-graph's constants, each taken (moved) when its class is built.
    consts: Vec<Option<(String, Arc<qcc_ir::Tensor>)>>,
    eg: &'a TGraph,
    ex: &'a Extraction,
    new: Graph,
    /// Values of the new graph for each built class (several for a tuple).
    built: HashMap<Id, Vec<ValueId>>,
    node_names: HashMap<TensorLang, Arc<str>>,
    used_node_names: HashSet<String>,
    root_names: HashMap<Id, String>,
    reserved: HashSet<String>,
}

impl Builder<'_> {
    /// The value of class `id` (a single-output class), building what it needs first.
    fn value(&mut self, id: Id) -> Result<ValueId, GraphError> {
        let id = self.eg.find(id);
        // Post-order without recursion: deep networks make deep expressions.
        let mut stack = vec![(id, false)];
        while let Some((c, expanded)) = stack.pop() {
            if self.built.contains_key(&c) {
                continue;
            }
            let node = self.ex.node(self.eg, c);
            let kids: Vec<Id> = egg::Language::children(node)
                .iter()
                .map(|&k| self.eg.find(k))
                .collect();
            if !expanded {
                stack.push((c, true));
                for &k in kids.iter().rev() {
                    if !self.built.contains_key(&k) {
                        stack.push((k, false));
                    }
                }
                continue;
            }
            let values = self.build_node(c, node, &kids)?;
            self.built.insert(c, values);
        }
        match self.built.get(&id).map(Vec::as_slice) {
            Some([v]) => Ok(*v),
            _ => Err(GraphError::Other(format!(
                "e-class {id} is not a single value"
            ))),
        }
    }

    fn single(&self, k: Id) -> Result<ValueId, GraphError> {
        match self.built.get(&k).map(Vec::as_slice) {
            Some([v]) => Ok(*v),
            _ => Err(GraphError::Other(format!(
                "e-class {k} was used as a value before it was built (a cycle?)"
            ))),
        }
    }

    fn build_node(
        &mut self,
        c: Id,
        node: &TensorLang,
        kids: &[Id],
    ) -> Result<Vec<ValueId>, GraphError> {
        match node {
            TensorLang::Input(_) => Err(GraphError::Other(format!(
                "graph input class {c} was not bound"
            ))),
            TensorLang::Const(k) => {
                let (name, tensor) = self
                    .consts
                    .get_mut(k.index())
                    .and_then(Option::take)
                    .ok_or_else(|| GraphError::Other(format!("constant {k} built twice")))?;
                let tensor = Arc::try_unwrap(tensor).unwrap_or_else(|shared| (*shared).clone());
                let name = self.value_name(c, &name);
                let v = self.new.add_constant(name, tensor)?;
                Ok(vec![v])
            }
            TensorLang::Proj(i, _) => {
                let tuple = self.built.get(&kids[0]).ok_or_else(|| {
                    GraphError::Other(format!("tuple class {} was not built", kids[0]))
                })?;
                let v = tuple.get(i.index()).copied().ok_or_else(|| {
                    GraphError::Other(format!("tuple class {} has no output {i}", kids[0]))
                })?;
                Ok(vec![v])
            }
            TensorLang::Op(k, _) => {
                let op = self.eg.analysis.op(*k).clone();
                let inputs = kids
                    .iter()
                    .map(|&kid| self.single(kid))
                    .collect::<Result<Vec<_>, _>>()?;
                let base = self
                    .node_names
                    .get(node)
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| op.name().to_string());
                let node_name = self.node_name(&base);
                let outputs = if op.num_outputs() == 1 {
                    vec![self.value_name(c, &node_name)]
                } else {
                    (0..op.num_outputs())
                        .map(|i| {
                            let proj = TensorLang::Proj(OutputIndex(i as u32), [c]);
                            let fallback = format!("{node_name}:{i}");
                            match self.eg.lookup(proj) {
                                Some(p) => self.value_name(p, &fallback),
                                None => self.unique_value_name(&fallback),
                            }
                        })
                        .collect()
                };
                let n = self.new.add_node(node_name, op, inputs, outputs)?;
                Ok(self.new.node(n).outputs.clone())
            }
        }
    }

    fn node_name(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut i = 1;
        while self.used_node_names.contains(&name) {
            name = format!("{base}.{i}");
            i += 1;
        }
        self.used_node_names.insert(name.clone());
        name
    }

    /// The class's own name: the graph output name it must carry, else its original value
    /// name, else `fallback`.
    fn class_name(&self, c: Id, fallback: &str) -> String {
        let c = self.eg.find(c);
        if let Some(n) = self.root_names.get(&c) {
            return n.clone();
        }
        match &self.eg[c].data.name {
            Some(n) => n.to_string(),
            None => fallback.to_string(),
        }
    }

    fn value_name(&self, c: Id, fallback: &str) -> String {
        let c = self.eg.find(c);
        if let Some(n) = self.root_names.get(&c) {
            if self.new.value_by_name(n).is_none() {
                return n.clone();
            }
        }
        let base = self.class_name(c, fallback);
        self.unique_value_name(&base)
    }

    /// `base`, or `base.1`... whichever is free and not a graph output's name.
    fn unique_value_name(&self, base: &str) -> String {
        let mut name = self.new.fresh_name(base);
        let mut i = 1;
        while self.reserved.contains(&name) {
            name = self.new.fresh_name(&format!("{base}.{i}"));
            i += 1;
        }
        name
    }
}
