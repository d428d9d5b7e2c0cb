//! The reference interpreter: the single executable definition of every op's meaning.
//!
//! Float ops compute in f32 (f16 inputs are widened, computed in f32 and rounded back);
//! integer ops are exact, following the ONNX specification. Speed is secondary to being
//! obviously right, but whole CNNs must still run in seconds, so convolutions and matrix
//! products use straightforward cache-friendly loops.

use crate::graph::{Graph, ValueDef, ValueId};
use crate::op::Op;
use crate::tensor::Tensor;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("node '{node}' ({op}): {message}")]
    Node { node: String, op: &'static str, message: String },
    #[error("graph input '{name}': {message}")]
    Input { name: String, message: String },
    #[error("{0}")]
    Op(String),
}

/// Applies one op to input tensors (whose types the op must accept).
pub fn eval_op(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, EvalError> {
    let _ = (op, inputs);
    Err(EvalError::Op("not implemented".into()))
}

/// Runs a graph on named inputs (one tensor per graph input, of its declared type) and
/// returns the graph outputs in order.
pub fn run(graph: &Graph, inputs: &HashMap<String, Tensor>) -> Result<Vec<Tensor>, EvalError> {
    let values = run_all(graph, inputs)?;
    Ok(graph.outputs().iter().map(|o| values[o].clone()).collect())
}

/// Runs a graph and returns every value it computed (inputs and constants included), for
/// debugging and calibration.
pub fn run_all(graph: &Graph, inputs: &HashMap<String, Tensor>) -> Result<HashMap<ValueId, Tensor>, EvalError> {
    let mut env: HashMap<ValueId, Tensor> = HashMap::new();
    for gi in graph.inputs() {
        let v = graph.value(gi.value);
        let t = inputs.get(&v.name).ok_or_else(|| EvalError::Input { name: v.name.clone(), message: "no tensor given".into() })?;
        if t.ty() != v.ty {
            return Err(EvalError::Input { name: v.name.clone(), message: format!("expected {}, got {}", v.ty, t.ty()) });
        }
        env.insert(gi.value, t.clone());
    }
    if let Some(extra) = inputs.keys().find(|k| graph.value_by_name(k).is_none_or(|id| !matches!(graph.value(id).def, ValueDef::Input))) {
        return Err(EvalError::Input { name: extra.clone(), message: "is not an input of the graph".into() });
    }
    for (id, v) in graph.values() {
        if let ValueDef::Constant(t) = &v.def {
            env.insert(id, t.clone());
        }
    }
    let order = graph.topo_order().map_err(|e| EvalError::Op(e.to_string()))?;
    for n in order {
        let node = graph.node(n);
        let args: Vec<&Tensor> = node.inputs.iter().map(|v| &env[v]).collect();
        let outs = eval_op(&node.op, &args).map_err(|e| EvalError::Node {
            node: node.name.clone(),
            op: node.op.name(),
            message: match e {
                EvalError::Op(m) => m,
                other => other.to_string(),
            },
        })?;
        for (&o, t) in node.outputs.iter().zip(outs) {
            env.insert(o, t);
        }
    }
    Ok(env)
}
