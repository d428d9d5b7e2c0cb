//! Tests of how the ONNX writer decomposes fused ops into standard nodes; the op-coverage
//! graph of `tests.rs` includes these ops, so onnxruntime checks their values too.
use super::tests::{attr_of, find, model, op_coverage_graph, pseudo_random};
use super::*;
use qcc_ir::TensorType;

/// The fused ops of the coverage graph, on its input `x` (f32[1,4,6,6]) and a [1,12] row:
/// a ReLU6 conv with a residual, a bare conv (the head alone), a conv whose Clip has only a
/// max, and a Gemm with Tanh. Returns their outputs.
pub(super) fn fused_ops(
    g: &mut Graph,
    x: ValueId,
    row: ValueId,
) -> Result<Vec<ValueId>, qcc_ir::GraphError> {
    let w = g.add_constant(
        "fused_conv.weight",
        Tensor::from_f32(&[4, 4, 3, 3], pseudo_random(144, 7)),
    )?;
    let b = g.add_constant(
        "fused_conv.bias",
        Tensor::from_f32(&[4], vec![0.5, -0.25, 3.0, 0.0]),
    )?;
    let same = ConvAttrs {
        kernel: vec![3, 3],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        padding: Padding::Explicit(vec![1, 1, 1, 1]),
        group: 1,
    };
    let strided = ConvAttrs {
        strides: vec![2, 2],
        padding: Padding::SameLower,
        ..same.clone()
    };
    let mut out = Vec::new();
    let mut add = |g: &mut Graph, name: &str, op: Op, ins: Vec<ValueId>| {
        let n = g.add_node(name, op, ins, vec![name.to_string()])?;
        out.push(g.node(n).outputs[0]);
        Ok::<(), qcc_ir::GraphError>(())
    };
    let relu6 = Activation::Clip { min: 0.0, max: 6.0 };
    let residual_relu6 = Op::FusedConv {
        conv: same.clone(),
        residual: true,
        activation: Some(relu6),
    };
    add(g, "fused_conv", residual_relu6, vec![x, w, b, x])?;
    let bare = Op::FusedConv {
        conv: strided,
        residual: false,
        activation: None,
    };
    add(g, "fused_conv_bare", bare, vec![x, w, b])?;
    let capped = Op::FusedConv {
        conv: same,
        residual: false,
        activation: Some(Activation::Clip {
            min: f32::NEG_INFINITY,
            max: 0.25,
        }),
    };
    add(g, "fused_conv_capped", capped, vec![x, w, b])?;
    let gw = g.add_constant(
        "fused_gemm.weight",
        Tensor::from_f32(&[5, 12], pseudo_random(60, 8)),
    )?;
    let gc = g.add_constant(
        "fused_gemm.bias",
        Tensor::from_f32(&[5], pseudo_random(5, 9)),
    )?;
    let gemm = Op::FusedGemm {
        gemm: GemmAttrs {
            alpha: 0.5,
            beta: 2.0,
            trans_a: false,
            trans_b: true,
        },
        activation: Some(Activation::Tanh),
    };
    add(g, "fused_gemm", gemm, vec![row, gw, gc])?;
    Ok(out)
}

#[test]
fn fused_ops_become_the_standard_nodes_they_stand_for() {
    let g = op_coverage_graph(true).expect("graph");
    let gp = model(&g, 13);
    let chain = |prefix: &str| -> Vec<(String, String, Vec<String>, Vec<String>)> {
        gp.node
            .iter()
            .filter(|n| n.name.starts_with(&format!("{prefix}.")))
            .map(|n| {
                (
                    n.name.clone(),
                    n.op_type.clone(),
                    n.input.clone(),
                    n.output.clone(),
                )
            })
            .collect()
    };
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let row = |name: &str, op: &str, ins: &[&str], outs: &[&str]| {
        (
            name.to_string(),
            op.to_string(),
            strings(ins),
            strings(outs),
        )
    };
    assert_eq!(
        chain("fused_conv"),
        [
            row(
                "fused_conv.conv",
                "Conv",
                &["x", "fused_conv.weight", "fused_conv.bias"],
                &["fused_conv.conv_out"]
            ),
            row(
                "fused_conv.add",
                "Add",
                &["fused_conv.conv_out", "x"],
                &["fused_conv.add_out"]
            ),
            row(
                "fused_conv.act",
                "Clip",
                &[
                    "fused_conv.add_out",
                    "fused_conv.act.min",
                    "fused_conv.act.max"
                ],
                &["fused_conv"]
            ),
        ]
    );
    assert_eq!(
        chain("fused_conv_bare"),
        [row(
            "fused_conv_bare.conv",
            "Conv",
            &["x", "fused_conv.weight", "fused_conv.bias"],
            &["fused_conv_bare"]
        )]
    );
    assert_eq!(
        find(&gp, "fused_conv_bare.conv")
            .attribute
            .iter()
            .map(|a| a.name.as_str())
            .collect::<Vec<_>>(),
        ["kernel_shape", "strides", "dilations", "group", "auto_pad"]
    );
    assert_eq!(
        find(&gp, "fused_conv_capped.act").input,
        [
            "fused_conv_capped.conv_out",
            "",
            "fused_conv_capped.act.max"
        ]
    );
    assert_eq!(
        chain("fused_gemm"),
        [
            row(
                "fused_gemm.gemm",
                "Gemm",
                &["dequantize", "fused_gemm.weight", "fused_gemm.bias"],
                &["fused_gemm.gemm_out"]
            ),
            row(
                "fused_gemm.act",
                "Tanh",
                &["fused_gemm.gemm_out"],
                &["fused_gemm"]
            ),
        ]
    );
    let gemm = find(&gp, "fused_gemm.gemm");
    assert_eq!(attr_of(gemm, "alpha").map(|a| a.f), Some(0.5));
    assert_eq!(attr_of(gemm, "beta").map(|a| a.f), Some(2.0));
    assert_eq!(attr_of(gemm, "transB").map(|a| a.i), Some(1));
}

#[test]
fn a_fused_hard_swish_needs_opset_14() {
    let mut g = Graph::new("fused_hs");
    let a = g
        .add_input("a", TensorType::new(DType::F32, vec![1, 3]))
        .expect("input");
    let b = g
        .add_constant("b", Tensor::from_f32(&[3, 2], pseudo_random(6, 1)))
        .expect("constant");
    let op = Op::FusedGemm {
        gemm: GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
        },
        activation: Some(Activation::HardSwish),
    };
    let n = g
        .add_node("fc", op, vec![a, b], vec!["y".into()])
        .expect("node");
    g.set_outputs(g.node(n).outputs.clone());
    let err = to_model_proto(&g, &ExportOptions::default()).unwrap_err();
    let ExportError::Unsupported { node, op, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!((node.as_str(), *op), ("fc", "FusedGemm"));
    assert!(
        err.to_string().contains("HardSwish needs opset 14"),
        "{err}"
    );
    let gp = model(&g, 14);
    let ops: Vec<&str> = gp.node.iter().map(|n| n.op_type.as_str()).collect();
    assert_eq!(ops, ["Gemm", "HardSwish"]);
    assert_eq!(gp.node[1].output, ["y"]);
}
