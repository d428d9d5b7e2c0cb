//! Graphviz DOT output for `qcc inspect --dot FILE`: look at a graph, before or after passes.
//!
//! - Every op node is a box `n<index>` labelled with its name and [`Op::display_name`] (a
//!   fused op lists what it contains: `Conv+Add+Relu`), filled by [`OpKind`].
//! - Graph inputs and outputs are ellipses (`in<k>`, `out<k>`).
//! - Constants (weights, folded values) are hidden: drawing every weight would bury the
//!   structure; a node's label says how many constant inputs it has.
//! - Every edge carries the type of the tensor that flows (`f32[1,64,56,56]`).
//!
//! Names are quoted and escaped, so any value or node name gives valid DOT.

use qcc_ir::{Graph, Op, ValueDef, ValueId};
use std::collections::HashMap;
use std::fmt::Write;

/// What a node does, for its colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// Convolutions and matrix products, integer ones included.
    ConvGemm,
    /// A convolution or matrix product with its epilogue fused in.
    Fused,
    Activation,
    Pooling,
    /// Arithmetic and normalisation on elements (Add, BatchNorm, Softmax...).
    Elementwise,
    /// Data movement and shape computation (Reshape, Concat, Shape...).
    Layout,
    Quantization,
}

impl OpKind {
    pub fn of(op: &Op) -> OpKind {
        match op {
            Op::Conv(_)
            | Op::Gemm(_)
            | Op::MatMul
            | Op::QLinearConv { .. }
            | Op::QLinearMatMul { .. }
            | Op::ConvInteger { .. }
            | Op::MatMulInteger { .. } => OpKind::ConvGemm,
            Op::FusedConv { .. } | Op::FusedGemm { .. } => OpKind::Fused,
            Op::Activation(_) => OpKind::Activation,
            Op::MaxPool(_) | Op::AveragePool { .. } | Op::GlobalAveragePool | Op::GlobalMaxPool => {
                OpKind::Pooling
            }
            Op::BatchNorm { .. }
            | Op::Binary(_)
            | Op::Sum
            | Op::Softmax { .. }
            | Op::Lrn(_)
            | Op::ReduceMean { .. }
            | Op::Cast { .. } => OpKind::Elementwise,
            Op::Concat { .. }
            | Op::Split { .. }
            | Op::Flatten { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Squeeze { .. }
            | Op::Unsqueeze { .. }
            | Op::Dropout { .. }
            | Op::Identity
            | Op::Pad { .. }
            | Op::Shape { .. }
            | Op::Gather { .. }
            | Op::Slice { .. }
            | Op::ConstantOfShape { .. } => OpKind::Layout,
            // qcc's realized int8 ops are what quantization produced: coloured as such, so
            // a graph shows at a glance which convolutions run in int8.
            Op::QuantizeLinear(_)
            | Op::DequantizeLinear(_)
            | Op::DynamicQuantizeLinear
            | Op::QuantizedConv { .. }
            | Op::QuantizedMatMul { .. }
            | Op::QuantizedAdd { .. }
            | Op::QuantizedGlobalAveragePool { .. }
            | Op::DynamicQuantizedConv { .. }
            | Op::DynamicQuantizedMatMul { .. } => OpKind::Quantization,
        }
    }

    /// Fill colour (X11 colour names, which every Graphviz knows).
    pub fn color(self) -> &'static str {
        match self {
            OpKind::ConvGemm => "lightskyblue",
            OpKind::Fused => "gold",
            OpKind::Activation => "palegreen",
            OpKind::Pooling => "plum",
            OpKind::Elementwise => "khaki1",
            OpKind::Layout => "gray88",
            OpKind::Quantization => "salmon",
        }
    }
}

/// A DOT string literal: `"` and `\` escaped, newlines as `\n` (Graphviz's centred line
/// break).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The graph as a DOT `digraph`.
pub fn to_dot(g: &Graph) -> Result<String, qcc_ir::GraphError> {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(&g.name));
    let _ = writeln!(out, "  rankdir=TB;");
    let _ = writeln!(
        out,
        "  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=10];"
    );
    let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=8];");

    // Where each value comes from, as a DOT node id.
    let mut source: HashMap<ValueId, String> = HashMap::new();
    for (k, &v) in g.input_values().iter().enumerate() {
        let id = format!("in{k}");
        let label = format!("{}\n{}", g.value(v).name, g.value(v).ty);
        let _ = writeln!(
            out,
            "  {id} [shape=ellipse, fillcolor=white, label={}];",
            quote(&label)
        );
        source.insert(v, id);
    }
    let order = g.topo_order()?;
    for &n in &order {
        let node = g.node(n);
        let id = format!("n{}", n.index());
        let constants = node
            .inputs
            .iter()
            .filter(|&&v| matches!(g.value(v).def, ValueDef::Constant(_)))
            .count();
        let mut label = format!("{}\n{}", node.name, node.op.display_name());
        if constants > 0 {
            let _ = write!(
                label,
                "\n({constants} constant input{})",
                if constants == 1 { "" } else { "s" }
            );
        }
        let _ = writeln!(
            out,
            "  {id} [fillcolor={}, label={}];",
            OpKind::of(&node.op).color(),
            quote(&label)
        );
        for &o in &node.outputs {
            source.insert(o, id.clone());
        }
    }
    for &n in &order {
        let node = g.node(n);
        for &v in &node.inputs {
            if let Some(from) = source.get(&v) {
                let _ = writeln!(
                    out,
                    "  {from} -> n{} [label={}];",
                    n.index(),
                    quote(&g.value(v).ty.to_string())
                );
            }
        }
    }
    for (k, &v) in g.outputs().iter().enumerate() {
        let id = format!("out{k}");
        let _ = writeln!(
            out,
            "  {id} [shape=ellipse, fillcolor=white, label={}];",
            quote(&g.value(v).name)
        );
        // A constant output has no node to come from.
        if let Some(from) = source.get(&v) {
            let _ = writeln!(
                out,
                "  {from} -> {id} [label={}];",
                quote(&g.value(v).ty.to_string())
            );
        }
    }
    out.push_str("}\n");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_quotes_and_backslashes_are_escaped() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("x\ny"), r#""x\ny""#);
    }

    #[test]
    fn every_node_and_edge_appears_with_its_colour_and_type() {
        let g = match qcc_ir::text::parse_graph(
            "graph \"my \\\"net\\\"\"(%x: f32[1,2,4,4]) -> (%y) {
               %w = const f32[2,2,1,1] splat<1.0>
               %b = const f32[2] splat<0.0>
               %c = FusedConv(%x, %w, %b) {kernel=[1,1], activation=relu} : f32[1,2,4,4]
               %y = MaxPool(%c) {kernel=[2,2], strides=[2,2]} : f32[1,2,2,2]
             }",
        ) {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        };
        let dot = match to_dot(&g) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        assert!(dot.starts_with("digraph \"my \\\"net\\\"\" {"), "{dot}");
        assert!(dot.contains("fillcolor=gold, label=\"c\\nConv+Relu\\n(2 constant inputs)\""));
        assert!(dot.contains("fillcolor=plum"));
        assert!(dot.contains("in0 -> n"), "{dot}");
        assert!(dot.contains("[label=\"f32[1,2,4,4]\"]"), "{dot}");
        assert!(dot.contains(" -> out0 [label=\"f32[1,2,2,2]\"]"), "{dot}");
        assert_eq!(dot.matches("label=").count(), 2 + 1 + 1 + 1 + 2, "{dot}");
    }
}
