//! Per-node facts about a graph (op, types, parameters, FLOPs) for `qcc inspect`.
//!
//! FLOP convention: a multiply-accumulate counts 2 (convolutions and matrix products,
//! integer ones included); element-wise ops count 1 per output element, with a small fixed
//! cost for the transcendental ones; layout ops (Reshape, Transpose, Concat...) count 0.

use qcc_ir::{Activation, Graph, NodeId, Op, ValueDef, ValueId};
use std::collections::BTreeMap;

pub struct NodeStats {
    pub name: String,
    /// [`Op::display_name`]: a fused op lists what it contains (`Conv+Add+Relu`).
    pub op: String,
    pub inputs: Vec<ValueId>,
    pub outputs: Vec<ValueId>,
    /// Elements of the node's weight inputs (constants, or tensors built by ConstantOfShape).
    pub params: u64,
    pub flops: u64,
}

pub struct GraphStats {
    pub nodes: Vec<NodeStats>,
    pub op_counts: BTreeMap<&'static str, usize>,
    pub params: u64,
    pub weight_bytes: u64,
    pub flops: u64,
}

/// True for values that are weights: constants, or tensors a ConstantOfShape builds (older
/// exports, such as ONNX's light models, make their weights that way).
fn is_weight(g: &Graph, v: ValueId) -> bool {
    match g.value(v).def {
        ValueDef::Constant(_) => true,
        ValueDef::Node { node, .. } => matches!(g.node(node).op, Op::ConstantOfShape { .. }),
        ValueDef::Input => false,
    }
}

fn numel(g: &Graph, v: ValueId) -> u64 {
    g.value(v).ty.shape.numel() as u64
}

/// FLOPs of one node, by the convention in the module docs.
pub fn node_flops(g: &Graph, n: NodeId) -> u64 {
    let node = g.node(n);
    let out = node.outputs.first().map(|&o| numel(g, o)).unwrap_or(0);
    let input = |i: usize| node.inputs.get(i).map(|&v| numel(g, v)).unwrap_or(0);
    let dims = |i: usize| g.value(node.inputs[i]).ty.dims().to_vec();
    match &node.op {
        Op::FusedConv {
            residual,
            activation,
            ..
        } => {
            let w = dims(1);
            let macs_per_output: u64 = w[1..].iter().map(|&d| d as u64).product();
            let epilogue = 1 + *residual as u64 + activation.map_or(0, activation_flops);
            out * (2 * macs_per_output + epilogue)
        }
        Op::FusedGemm { gemm, activation } => {
            let a = dims(0);
            let k = if gemm.trans_a { a[0] } else { a[1] } as u64;
            out * (2 * k + (node.inputs.len() > 2) as u64 + activation.map_or(0, activation_flops))
        }
        // Integer ops count as the float op they replace (a MAC is two operations), so int8
        // and fp32 graphs compare directly; the requantization epilogue is not counted.
        Op::Conv(_)
        | Op::QLinearConv { .. }
        | Op::ConvInteger { .. }
        | Op::QuantizedConv { residual: None, .. } => {
            let w = dims(1);
            let macs_per_output: u64 = w[1..].iter().map(|&d| d as u64).product();
            2 * out * macs_per_output + if node.inputs.len() > 2 { out } else { 0 }
        }
        Op::QuantizedConv {
            residual: Some(_), ..
        } => {
            // Bias and residual adds, as FusedConv's epilogue.
            let w = dims(1);
            let macs_per_output: u64 = w[1..].iter().map(|&d| d as u64).product();
            out * (2 * macs_per_output + 2)
        }
        // The float epilogue: scale, bias, residual.
        Op::DynamicQuantizedConv { residual, .. } => {
            let w = dims(3);
            let macs_per_output: u64 = w[1..].iter().map(|&d| d as u64).product();
            out * (2 * macs_per_output + 2 + *residual as u64)
        }
        Op::DynamicQuantizedMatMul { .. } => {
            let a = dims(0);
            out * (2 * *a.last().unwrap_or(&1) as u64 + 2)
        }
        // Two scaled inputs summed, one rounding.
        Op::QuantizedAdd { .. } => 3 * out,
        Op::QuantizedGlobalAveragePool { .. } => {
            let x = dims(0);
            x.iter().map(|&d| d as u64).product::<u64>() + out
        }
        Op::QuantizedMatMul { .. } => {
            let a = dims(0);
            let bias = (node.inputs.len() > 2) as u64;
            out * (2 * *a.last().unwrap_or(&1) as u64 + bias)
        }
        Op::Gemm(attrs) => {
            let a = dims(0);
            let k = if attrs.trans_a { a[0] } else { a[1] } as u64;
            2 * out * k + if node.inputs.len() > 2 { out } else { 0 }
        }
        Op::MatMul | Op::MatMulInteger { .. } | Op::QLinearMatMul { .. } => {
            let a = dims(0);
            2 * out * *a.last().unwrap_or(&1) as u64
        }
        Op::BatchNorm { .. } => 2 * out,
        Op::Activation(a) => out * activation_flops(*a),
        Op::Binary(_) => out,
        Op::Sum => out * (node.inputs.len() as u64).saturating_sub(1),
        Op::MaxPool(p) => out * p.kernel.iter().product::<usize>() as u64,
        Op::AveragePool { pool, .. } => out * pool.kernel.iter().product::<usize>() as u64,
        Op::GlobalAveragePool | Op::GlobalMaxPool | Op::ReduceMean { .. } => input(0),
        Op::Softmax { .. } => 5 * out,
        Op::Lrn(l) => out * (l.size as u64 + 3),
        Op::QuantizeLinear(_) | Op::DequantizeLinear(_) => 2 * out,
        Op::DynamicQuantizeLinear => 4 * input(0),
        Op::Cast { .. } => out,
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
        | Op::ConstantOfShape { .. } => 0,
    }
}

/// FLOPs per element of an activation.
fn activation_flops(a: Activation) -> u64 {
    match a {
        Activation::Sigmoid | Activation::Tanh => 4,
        Activation::HardSigmoid { .. } | Activation::HardSwish => 3,
        Activation::Relu | Activation::LeakyRelu { .. } | Activation::Clip { .. } => 1,
    }
}

pub fn graph_stats(g: &Graph) -> Result<GraphStats, qcc_ir::GraphError> {
    let mut nodes = Vec::new();
    let mut op_counts = BTreeMap::new();
    let (mut params, mut weight_bytes, mut flops) = (0u64, 0u64, 0u64);
    let mut counted = std::collections::HashSet::new();
    for n in g.topo_order()? {
        let node = g.node(n);
        // A weight shared by several nodes belongs to each of them, but counts once in the totals.
        let mut node_params = 0;
        for &v in node.inputs.iter().filter(|&&v| is_weight(g, v)) {
            node_params += numel(g, v);
            if counted.insert(v) {
                params += numel(g, v);
                weight_bytes += g.value(v).ty.byte_size() as u64;
            }
        }
        let f = node_flops(g, n);
        flops += f;
        *op_counts.entry(node.op.name()).or_insert(0) += 1;
        nodes.push(NodeStats {
            name: node.name.clone(),
            op: node.op.display_name(),
            inputs: node.inputs.clone(),
            outputs: node.outputs.clone(),
            params: node_params,
            flops: f,
        });
    }
    Ok(GraphStats {
        nodes,
        op_counts,
        params,
        weight_bytes,
        flops,
    })
}

/// 1234567 → "1.23M": three significant digits are what a person compares.
pub fn human(n: u64) -> String {
    let x = n as f64;
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1}K", x / 1e3),
        1_000_000..=999_999_999 => format!("{:.2}M", x / 1e6),
        _ => format!("{:.2}G", x / 1e9),
    }
}

fn types(g: &Graph, vs: &[ValueId]) -> String {
    vs.iter()
        .map(|&v| g.value(v).ty.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The human-readable table `qcc inspect` prints.
pub fn format_table(g: &Graph, s: &GraphStats) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let name_w = s
        .nodes
        .iter()
        .map(|n| n.name.len())
        .max()
        .unwrap_or(4)
        .clamp(4, 40);
    let op_w = s.nodes.iter().map(|n| n.op.len()).max().unwrap_or(2).max(2);
    let _ = writeln!(
        out,
        "{:name_w$}  {:op_w$}  {:>9}  {:>9}  inputs -> outputs",
        "node", "op", "params", "FLOPs"
    );
    for n in &s.nodes {
        let _ = writeln!(
            out,
            "{:name_w$}  {:op_w$}  {:>9}  {:>9}  {} -> {}",
            n.name,
            n.op,
            human(n.params),
            human(n.flops),
            types(g, &n.inputs),
            types(g, &n.outputs)
        );
    }
    let _ = writeln!(out);
    let counts: Vec<String> = s
        .op_counts
        .iter()
        .map(|(op, n)| format!("{op} {n}"))
        .collect();
    let _ = writeln!(out, "ops: {}", counts.join(", "));
    let _ = writeln!(
        out,
        "totals: {} nodes, {} parameters ({}B of weights), {} FLOPs",
        s.nodes.len(),
        human(s.params),
        human(s.weight_bytes),
        human(s.flops)
    );
    out
}

/// `Conv 53 → 0, FusedConv 0 → 53, ...`: every op present before or after the passes,
/// those whose count changed first (alphabetical within each group).
pub fn format_op_count_changes(
    before: &BTreeMap<&'static str, usize>,
    after: &BTreeMap<&'static str, usize>,
) -> String {
    let ops: std::collections::BTreeSet<&str> =
        before.keys().chain(after.keys()).copied().collect();
    let count = |m: &BTreeMap<&'static str, usize>, op: &str| m.get(op).copied().unwrap_or(0);
    let (changed, same): (Vec<&str>, Vec<&str>) = ops
        .into_iter()
        .partition(|op| count(before, op) != count(after, op));
    let fmt = |op: &str| format!("{op} {} → {}", count(before, op), count(after, op));
    let mut out = format!(
        "ops before → after: {}",
        changed
            .iter()
            .map(|op| fmt(op))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if changed.is_empty() {
        out.push_str("(no change)");
    }
    if !same.is_empty() {
        out.push_str(&format!(
            "\nunchanged: {}",
            same.iter()
                .map(|op| format!("{op} {}", count(before, op)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.push('\n');
    out
}

/// One line per pass run: name, time, nodes before → after, whether it changed the graph.
pub fn format_pass_report(reports: &[qcc_passes::PassReport]) -> String {
    use std::fmt::Write;
    let name_w = reports
        .iter()
        .map(|r| r.pass.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = String::from("passes:\n");
    let mut total = std::time::Duration::ZERO;
    for r in reports {
        total += r.duration;
        let _ = writeln!(
            out,
            "  {:name_w$}  {:>9.3} ms  {:>6} → {:<6} nodes{}",
            r.pass,
            r.duration.as_secs_f64() * 1e3,
            r.nodes_before,
            r.nodes_after,
            if r.changed { "" } else { "  (unchanged)" }
        );
        for note in &r.notes {
            let _ = writeln!(out, "  {:name_w$}  warning: {note}", "");
        }
    }
    let _ = writeln!(
        out,
        "  {:name_w$}  {:>9.3} ms",
        "total",
        total.as_secs_f64() * 1e3
    );
    out
}

/// The pass report as JSON: `[{"pass", "changed", "ms", "nodes_before", "nodes_after", "notes"}]`.
pub fn pass_report_json(reports: &[qcc_passes::PassReport]) -> serde_json::Value {
    reports
        .iter()
        .map(|r| {
            serde_json::json!({
                "pass": r.pass,
                "changed": r.changed,
                "ms": r.duration.as_secs_f64() * 1e3,
                "nodes_before": r.nodes_before,
                "nodes_after": r.nodes_after,
                "notes": r.notes,
            })
        })
        .collect()
}

/// The machine-readable form of the same facts.
pub fn to_json(g: &Graph, s: &GraphStats) -> serde_json::Value {
    let names = |vs: &[ValueId]| {
        vs.iter()
            .map(|&v| g.value(v).name.clone())
            .collect::<Vec<_>>()
    };
    let shapes = |vs: &[ValueId]| {
        vs.iter()
            .map(|&v| g.value(v).ty.dims().to_vec())
            .collect::<Vec<_>>()
    };
    let dtypes = |vs: &[ValueId]| {
        vs.iter()
            .map(|&v| g.value(v).ty.dtype.name())
            .collect::<Vec<_>>()
    };
    let nodes: Vec<serde_json::Value> = s
        .nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "name": n.name,
                "op": n.op,
                "inputs": names(&n.inputs),
                "outputs": names(&n.outputs),
                "shapes": { "inputs": shapes(&n.inputs), "outputs": shapes(&n.outputs) },
                "dtypes": { "inputs": dtypes(&n.inputs), "outputs": dtypes(&n.outputs) },
                "params": n.params,
                "flops": n.flops,
            })
        })
        .collect();
    let io = |vs: &[ValueId]| {
        vs.iter().map(|&v| serde_json::json!({"name": g.value(v).name, "dtype": g.value(v).ty.dtype.name(), "shape": g.value(v).ty.dims()})).collect::<Vec<_>>()
    };
    serde_json::json!({
        "graph": g.name,
        "inputs": io(&g.input_values()),
        "outputs": io(g.outputs()),
        "nodes": nodes,
        "op_counts": s.op_counts,
        "totals": { "nodes": s.nodes.len(), "params": s.params, "weight_bytes": s.weight_bytes, "flops": s.flops },
    })
}

#[cfg(test)]
mod tests {
    use super::{format_op_count_changes, human};
    use std::collections::BTreeMap;

    #[test]
    fn op_count_changes_list_changed_ops_first() {
        let before = BTreeMap::from([("BatchNormalization", 2), ("Conv", 2), ("Relu", 1)]);
        let after = BTreeMap::from([("FusedConv", 2), ("Relu", 1)]);
        assert_eq!(
            format_op_count_changes(&before, &after),
            "ops before → after: BatchNormalization 2 → 0, Conv 2 → 0, FusedConv 0 → 2\n\
             unchanged: Relu 1\n"
        );
    }

    #[test]
    fn human_numbers_keep_three_significant_digits() {
        assert_eq!(human(9_408), "9408");
        assert_eq!(human(1_605_632), "1.61M");
        assert_eq!(human(401_408), "401.4K");
        assert_eq!(human(8_217_630_000), "8.22G");
    }
}
