//! Unit tests of the e-graph passes: one small hand-written graph per behaviour, checked for
//! the ops left and for unchanged semantics (interpreter before vs after).

use super::*;
use qcc_ir::{DType, TensorType};

pub(super) use crate::testing::{parse, text, Rng};

/// Runs the pass called `pass` (default options); returns the new graph and its stats.
pub(super) fn run(pass: &str, g: &Graph) -> (Graph, EgraphStats) {
    run_with(pass, g, &EgraphOptions::default())
}

pub(super) fn run_with(pass: &str, g: &Graph, opts: &EgraphOptions) -> (Graph, EgraphStats) {
    let (name, families) = pass_families(pass).unwrap_or_else(|| panic!("no pass {pass}"));
    let (new, stats) = optimize(name, g, &families, opts).unwrap_or_else(|e| panic!("{e}"));
    let after = new.unwrap_or_else(|| g.clone());
    if let Err(e) = after.verify() {
        panic!("{pass} produced an invalid graph: {e}\n{}", text(&after));
    }
    (after, stats)
}

/// The op display names of the graph (fused ops as `Conv+Relu`), sorted.
pub(super) fn ops(g: &Graph) -> Vec<String> {
    let mut out: Vec<String> = g
        .topo_order()
        .unwrap_or_else(|e| panic!("cycle: {e}"))
        .into_iter()
        .map(|n| g.node(n).op.display_name())
        .collect();
    out.sort();
    out
}

/// E-graph rewrites reassociate float arithmetic (folded weights): outputs agree to 1e-5.
pub(super) fn assert_same_semantics(before: &Graph, after: &Graph) {
    crate::testing::assert_same_semantics_within(before, after, 1e-5);
}

/// Runs `pass` on `src`, checks semantics, and returns the sorted op names left.
fn check(pass: &str, src: &str) -> Vec<String> {
    let g = parse(src);
    let (after, _) = run(pass, &g);
    assert_same_semantics(&g, &after);
    ops(&after)
}

const CONV_BN: &str = r#"
graph t(%x: f32[1,3,6,6]) -> (%y) {
  %w = const f32[4,3,3,3] splat<0.2>
  %b = const f32[4] dense<0.1,0.2,-0.3,0.4>
  %s = const f32[4] dense<1.5,0.5,2.0,-1.0>
  %o = const f32[4] dense<0.1,-0.1,0.2,0.0>
  %m = const f32[4] dense<0.3,0.2,-0.1,0.5>
  %v = const f32[4] dense<1.0,0.5,2.0,0.25>
  %c = Conv(%x, %w, %b) {kernel=[3,3], pads=[1,1,1,1]}
  %y = BatchNormalization(%c, %s, %o, %m, %v) {epsilon=0.001}
}
"#;

#[test]
fn conv_then_batchnorm_folds_into_one_conv() {
    assert_eq!(check("fold-batchnorm", CONV_BN), vec!["Conv"]);
}

#[test]
fn conv_batchnorm_relu_becomes_one_fused_conv() {
    let src = CONV_BN
        .replace("-> (%y)", "-> (%r)")
        .replace("{epsilon=0.001}\n", "{epsilon=0.001}\n  %r = Relu(%y)\n");
    assert_eq!(check("fuse", &src), vec!["Conv+Relu"]);
}

#[test]
fn batchnorm_is_not_folded_into_a_conv_read_by_another_node() {
    // The conv's output is also a graph output: folding would compute the conv twice.
    let src = CONV_BN
        .replace("-> (%y)", "-> (%y, %c)")
        .replace("f32[1,3,6,6]", "f32[1,3,32,32]");
    let got = check("fuse", &src);
    assert_eq!(
        got.iter().filter(|o| o.starts_with("Conv")).count(),
        1,
        "{got:?}"
    );
    assert!(!got.contains(&"BatchNormalization".to_string()), "{got:?}");
}

#[test]
fn standalone_batchnorm_becomes_mul_and_add() {
    let src = r#"
graph t(%x: f32[2,3,4,4]) -> (%y) {
  %s = const f32[3] dense<1.5,0.5,2.0>
  %o = const f32[3] dense<0.1,-0.1,0.2>
  %m = const f32[3] dense<0.3,0.2,-0.1>
  %v = const f32[3] dense<1.0,0.5,2.0>
  %y = BatchNormalization(%x, %s, %o, %m, %v)
}
"#;
    assert_eq!(check("fuse", src), vec!["Add", "Mul"]);
}

#[test]
fn gemm_and_matmul_then_batchnorm_fold() {
    let src = r#"
graph t(%x: f32[2,3]) -> (%y, %z) {
  %w = const f32[3,4] dense<0.1,-0.2,0.3,0.4,-0.5,0.6,0.7,-0.8,0.9,1.0,-1.1,1.2>
  %c = const f32[4] dense<0.1,0.2,-0.3,0.4>
  %s = const f32[4] dense<1.5,0.5,2.0,-1.0>
  %o = const f32[4] dense<0.1,-0.1,0.2,0.0>
  %m = const f32[4] dense<0.3,0.2,-0.1,0.5>
  %v = const f32[4] dense<1.0,0.5,2.0,0.25>
  %g = Gemm(%x, %w, %c) {alpha=0.5, beta=2.0}
  %y = BatchNormalization(%g, %s, %o, %m, %v)
  %mm = MatMul(%x, %w)
  %z = BatchNormalization(%mm, %s, %o, %m, %v)
}
"#;
    assert_eq!(check("fold-batchnorm", src), vec!["Gemm", "Gemm"]);
}

#[test]
fn every_fusable_activation_fuses_into_a_conv() {
    for act in [
        "Relu(%c)",
        "Clip(%c) {min=0.0, max=6.0}",
        "LeakyRelu(%c) {alpha=0.1}",
        "HardSwish(%c)",
        "HardSigmoid(%c)",
        "Sigmoid(%c)",
        "Tanh(%c)",
    ] {
        let src = format!(
            r#"
graph t(%x: f32[1,2,5,5]) -> (%y) {{
  %w = const f32[3,2,1,1] dense<0.5,-1.0,2.0,0.25,-0.5,1.5>
  %c = Conv(%x, %w) {{kernel=[1,1]}}
  %y = {act}
}}
"#
        );
        let got = check("fuse", &src);
        assert_eq!(got.len(), 1, "{act}: {got:?}");
        assert!(got[0].starts_with("Conv+"), "{act}: {got:?}");
    }
}

#[test]
fn gemm_activation_fuses() {
    let src = r#"
graph t(%x: f32[2,3]) -> (%y) {
  %w = const f32[4,3] dense<0.1,-0.2,0.3,0.4,-0.5,0.6,0.7,-0.8,0.9,1.0,-1.1,1.2>
  %g = Gemm(%x, %w) {trans_b=true}
  %y = Sigmoid(%g)
}
"#;
    assert_eq!(check("fuse", src), vec!["Gemm+Sigmoid"]);
}

const RESIDUAL: &str = r#"
graph t(%x: f32[1,2,4,4], %r: f32[1,3,4,4]) -> (%y) {
  %w = const f32[3,2,3,3] splat<0.125>
  %b = const f32[3] dense<0.5,-0.5,0.25>
  %c = Conv(%x, %w, %b) {kernel=[3,3], pads=[1,1,1,1]}
  %a = Add(%c, %r)
  %y = Relu(%a)
}
"#;

#[test]
fn residual_add_and_relu_fuse_into_the_conv_in_both_operand_orders() {
    assert_eq!(check("fuse", RESIDUAL), vec!["Conv+Add+Relu"]);
    let swapped = RESIDUAL.replace("Add(%c, %r)", "Add(%r, %c)");
    assert_eq!(check("fuse", &swapped), vec!["Conv+Add+Relu"]);
}

#[test]
fn a_broadcasting_residual_is_not_fused() {
    let src = RESIDUAL.replace("%r: f32[1,3,4,4]", "%r: f32[1,3,1,1]");
    let got = check("fuse", &src);
    assert!(got.contains(&"Add".to_string()), "{got:?}");
}

#[test]
fn per_channel_mul_and_add_after_a_conv_fold() {
    let src = r#"
graph t(%x: f32[1,2,4,4]) -> (%y) {
  %w = const f32[3,2,1,1] dense<0.5,-1.0,2.0,0.25,-0.5,1.5>
  %k = const f32[3,1,1] dense<2.0,-1.0,0.5>
  %t = const f32[1,3,1,1] dense<0.1,0.2,0.3>
  %c = Conv(%x, %w) {kernel=[1,1]}
  %m = Mul(%k, %c)
  %y = Add(%m, %t)
}
"#;
    assert_eq!(check("fold-batchnorm", src), vec!["Conv"]);
}

#[test]
fn div_by_a_constant_becomes_a_mul() {
    let src = r#"
graph t(%x: f32[2,3]) -> (%y) {
  %k = const f32[3] dense<2.0,-4.0,0.5>
  %y = Div(%x, %k)
}
"#;
    assert_eq!(check("egraph-simplify", src), vec!["Mul"]);
}

#[test]
fn batchnorm_before_an_unpadded_conv_folds_into_it() {
    let src = r#"
graph t(%x: f32[1,4,3,3]) -> (%y) {
  %s = const f32[4] dense<1.5,0.5,2.0,-1.0>
  %o = const f32[4] dense<0.1,-0.1,0.2,0.0>
  %m = const f32[4] dense<0.3,0.2,-0.1,0.5>
  %v = const f32[4] dense<1.0,0.5,2.0,0.25>
  %w = const f32[4,2,2,2] splat<0.25>
  %n = BatchNormalization(%x, %s, %o, %m, %v)
  %y = Conv(%n, %w) {kernel=[2,2], group=2}
}
"#;
    assert_eq!(check("fold-batchnorm", src), vec!["Conv"]);
}

#[test]
fn zero_pad_folds_into_the_conv_and_a_nonzero_pad_does_not() {
    let src = r#"
graph t(%x: f32[1,2,4,4]) -> (%y) {
  %w = const f32[3,2,3,3] splat<0.125>
  %p = Pad(%x) {pads=[0,0,1,2,0,0,1,0]}
  %y = Conv(%p, %w) {kernel=[3,3]}
}
"#;
    assert_eq!(check("egraph-simplify", src), vec!["Conv"]);
    let nonzero = src.replace(
        "pads=[0,0,1,2,0,0,1,0]}",
        "pads=[0,0,1,2,0,0,1,0], value=1.0}",
    );
    assert_eq!(check("egraph-simplify", &nonzero), vec!["Conv", "Pad"]);
}

#[test]
fn transpose_and_reshape_chains_collapse() {
    let src = r#"
graph t(%x: f32[2,3,4]) -> (%y, %z) {
  %a = Transpose(%x) {perm=[1,2,0]}
  %y = Transpose(%a) {perm=[2,0,1]}
  %r = Reshape(%x) {shape=[6,4]}
  %f = Flatten(%r) {axis=1}
  %z = Reshape(%f) {shape=[4,6]}
}
"#;
    let g = parse(src);
    let (after, _) = run("egraph-simplify", &g);
    assert_same_semantics(&g, &after);
    // y is x itself (kept as an Identity for its name), z one Reshape.
    assert_eq!(ops(&after), vec!["Identity", "Reshape"], "{}", text(&after));
}

#[test]
fn sibling_pointwise_convs_merge_when_the_model_says_so() {
    // Three 1x1 convs on a wide input with narrow outputs: one read of x instead of three.
    let src = r#"
graph t(%x: f32[1,64,8,8]) -> (%a, %b, %c) {
  %w1 = const f32[4,64,1,1] splat<0.01>
  %w2 = const f32[4,64,1,1] splat<0.02>
  %w3 = const f32[4,64,1,1] splat<-0.03>
  %a = Conv(%x, %w1) {kernel=[1,1]}
  %b = Conv(%x, %w2) {kernel=[1,1]}
  %c = Conv(%x, %w3) {kernel=[1,1]}
}
"#;
    assert_eq!(check("horizontal-fusion", src), vec!["Conv", "Split"]);
}

#[test]
fn a_tight_node_limit_stops_the_run_and_says_so() {
    let opts = EgraphOptions {
        node_limit: 5,
        ..EgraphOptions::default()
    };
    let g = parse(RESIDUAL);
    let (after, stats) = run_with("fuse", &g, &opts);
    assert!(stats.hit_limit, "{stats:?}");
    assert!(stats.stop_reason.contains("limit"), "{stats:?}");
    assert_same_semantics(&g, &after);

    // Through the pass manager, the limit reaches the report as a warning.
    let mut pm = crate::PassManager::new();
    assert!(super::add_pass_by_name(&mut pm, "fuse", &opts));
    let mut graph = g.clone();
    let reports = pm.run(&mut graph, None, None).expect("pipeline");
    assert_eq!(reports[0].notes.len(), 1, "{:?}", reports[0].notes);
    assert!(
        reports[0].notes[0].contains("before saturation"),
        "{:?}",
        reports[0].notes
    );
}

#[test]
fn names_survive_fusion() {
    let g = parse(RESIDUAL);
    let (after, _) = run("fuse", &g);
    let t = text(&after);
    // The fused node is named after the conv, the output keeps its name.
    assert!(t.contains("@c") || t.contains("%y = FusedConv"), "{t}");
    assert_eq!(after.value(after.outputs()[0]).name, "y");
}

#[test]
fn pass_names_are_known_and_unknown_ones_are_not() {
    let mut pm = PassManager::new();
    add_egraph_passes(&mut pm, &EgraphOptions::default());
    assert_eq!(pm.pass_names(), vec!["fold-batchnorm", "fuse"]);
    for name in ["egraph", "egraph-simplify", "horizontal-fusion"] {
        assert!(add_pass_by_name(&mut pm, name, &EgraphOptions::default()));
    }
    assert!(!add_pass_by_name(
        &mut pm,
        "fold-everything",
        &EgraphOptions::default()
    ));
    let _ = TensorType::new(DType::F32, vec![1]);
}
