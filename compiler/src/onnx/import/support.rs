//! Which ONNX nodes qcc can translate, checked for the whole graph before translation starts so
//! that one diagnostic lists every node that stands in the way.

use crate::onnx::proto::{GraphProto, NodeProto};
use std::collections::{HashMap, HashSet};
use std::fmt;

/// The default-domain ops the importer translates (one function each in `ops`, `shape_ops`
/// and `quant`).
pub const SUPPORTED_OPS: &[&str] = &[
    "Conv",
    "BatchNormalization",
    "Relu",
    "LeakyRelu",
    "Clip",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Tanh",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Sum",
    "Concat",
    "Split",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Gemm",
    "MatMul",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Softmax",
    "LRN",
    "Dropout",
    "Identity",
    "Pad",
    "Shape",
    "Gather",
    "Slice",
    "Cast",
    "ReduceMean",
    "ConstantOfShape",
    "Constant",
    "QuantizeLinear",
    "DequantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "ConvInteger",
    "MatMulInteger",
    "DynamicQuantizeLinear",
];

/// A node the importer cannot translate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsupportedNode {
    pub name: String,
    pub op_type: String,
    /// As the model spells it; empty for the default ONNX domain.
    pub domain: String,
    /// The model's opset version for the node's domain (0 when the model imports none).
    pub opset: i64,
    /// Why, when the op itself is supported but this use of it is not.
    pub reason: Option<String>,
}

impl fmt::Display for UnsupportedNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let domain = if self.domain.is_empty() {
            "ai.onnx"
        } else {
            &self.domain
        };
        write!(
            f,
            "node '{}': op {} (domain {domain}, opset {})",
            self.name, self.op_type, self.opset
        )?;
        match &self.reason {
            Some(r) => write!(f, ": {r}"),
            None => f.write_str(": op not supported"),
        }
    }
}

/// "" and "ai.onnx" both name the default domain.
pub(crate) fn canonical_domain(domain: &str) -> &str {
    if domain == "ai.onnx" {
        ""
    } else {
        domain
    }
}

/// Every node that is not translatable, in graph order.
pub(crate) fn unsupported_nodes(
    graph: &GraphProto,
    names: &[String],
    opsets: &HashMap<String, i64>,
    used: &HashSet<String>,
) -> Vec<UnsupportedNode> {
    let mut out = Vec::new();
    for (node, name) in graph.node.iter().zip(names) {
        let domain = canonical_domain(&node.domain);
        let opset = opsets.get(domain).copied().unwrap_or(0);
        let reason = if !domain.is_empty() || !SUPPORTED_OPS.contains(&node.op_type.as_str()) {
            Some(None)
        } else {
            unsupported_form(node, used).map(Some)
        };
        if let Some(reason) = reason {
            out.push(UnsupportedNode {
                name: name.clone(),
                op_type: node.op_type.clone(),
                domain: node.domain.clone(),
                opset,
                reason,
            });
        }
    }
    out
}

fn attr_int(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn has_attr(node: &NodeProto, name: &str) -> bool {
    node.attribute.iter().any(|a| a.name == name)
}

fn output_used(node: &NodeProto, i: usize, used: &HashSet<String>) -> bool {
    node.output
        .get(i)
        .is_some_and(|o| !o.is_empty() && used.contains(o))
}

/// Uses of supported ops that qcc does not implement, described for the diagnostic.
fn unsupported_form(node: &NodeProto, used: &HashSet<String>) -> Option<String> {
    match node.op_type.as_str() {
        "Pad" => {
            let mode = node
                .attribute
                .iter()
                .find(|a| a.name == "mode")
                .map(|a| String::from_utf8_lossy(&a.s).into_owned());
            match mode.as_deref() {
                None | Some("constant") => None,
                Some(m) => Some(format!("pad mode '{m}' is not supported (only 'constant')")),
            }
        }
        "MaxPool" if output_used(node, 1, used) => {
            Some("the Indices output is not supported".into())
        }
        "QuantizeLinear" | "DequantizeLinear"
            if attr_int(node, "block_size").is_some_and(|b| b > 0) =>
        {
            Some("blocked quantization (block_size > 0) is not supported".into())
        }
        "BatchNormalization" if attr_int(node, "training_mode") == Some(1) => {
            Some("training mode is not supported".into())
        }
        "BatchNormalization" if (1..node.output.len()).any(|i| output_used(node, i, used)) => {
            Some("the training outputs (running mean and variance) are not supported".into())
        }
        "Constant" if has_attr(node, "sparse_value") => {
            Some("sparse constants are not supported".into())
        }
        "Constant" if has_attr(node, "value_string") || has_attr(node, "value_strings") => {
            Some("string constants are not supported".into())
        }
        _ => None,
    }
}

/// Input slots that the IR needs as static attributes, per op type.
fn static_slots(op_type: &str) -> &'static [usize] {
    match op_type {
        "Reshape" | "Squeeze" | "Unsqueeze" | "Split" | "ReduceMean" => &[1],
        "Slice" => &[1, 2, 3, 4],
        "Clip" | "Dropout" => &[1, 2],
        "QuantizeLinear" | "DequantizeLinear" => &[1, 2],
        "QLinearConv" | "QLinearMatMul" => &[1, 2, 4, 5, 6, 7],
        "ConvInteger" | "MatMulInteger" => &[2, 3],
        "Pad" => &[1, 2, 3],
        "ConstantOfShape" => &[0],
        _ => &[],
    }
}

/// Names of values that feed a static slot of some default-domain node.
pub(crate) fn static_input_names(graph: &GraphProto) -> HashSet<&str> {
    let mut out = HashSet::new();
    for node in graph
        .node
        .iter()
        .filter(|n| canonical_domain(&n.domain).is_empty())
    {
        for &slot in static_slots(&node.op_type) {
            if let Some(name) = node.input.get(slot).filter(|s| !s.is_empty()) {
                out.insert(name.as_str());
            }
        }
    }
    out
}
