//! Round trips of particular forms: the pinned example, quoted names, declared inputs,
//! elided constants, attribute defaults, and property tests over random floats and tensors.

use super::tests::{assert_round_trip, conv, f32s, tensor_elements};
use super::{parse_graph, print_graph, PrintOptions};
use crate::dtype::{DType, Dim, TensorType};
use crate::graph::Graph;
use crate::op::{Activation, GemmAttrs, LrnAttrs, Op, Padding, PoolAttrs};
use crate::quant::QParams;
use crate::tensor::Tensor;
use proptest::prelude::*;

#[test]
fn the_format_is_pinned() {
    let mut g = Graph::new("tiny");
    let x = g
        .add_input_declared(
            "x",
            DType::F32,
            vec![
                Dim::Symbolic("N".into()),
                Dim::Fixed(3),
                Dim::Fixed(4),
                Dim::Fixed(4),
            ],
            1,
        )
        .unwrap();
    let w = g
        .add_constant(
            "w",
            Tensor::from_f32(&[2, 3, 1, 1], vec![0.1, -0.2, 0.3, 1.0, 2.5e-8, -0.0]),
        )
        .unwrap();
    let b = g
        .add_constant("b", Tensor::from_f32(&[2], vec![0.5, 0.5]))
        .unwrap();
    let c = g
        .add_node(
            "conv/0",
            Op::Conv(conv(&[1, 1], Padding::Explicit(vec![0, 0, 0, 0]))),
            vec![x, w, b],
            vec!["c".into()],
        )
        .unwrap();
    let c = g.node(c).outputs[0];
    let parts = g
        .add_node(
            "split",
            Op::Split {
                axis: 1,
                sizes: vec![1, 1],
            },
            vec![c],
            vec!["s0".into(), "s1".into()],
        )
        .unwrap();
    let s = g.node(parts).outputs.clone();
    let y = g
        .add_node(
            "y",
            Op::Activation(Activation::Clip { min: 0.0, max: 6.0 }),
            vec![s[0]],
            vec!["y".into()],
        )
        .unwrap();
    let y = g.node(y).outputs[0];
    g.set_outputs(vec![y, s[1]]);
    let expected = "\
graph tiny(%x: f32[N=1,3,4,4]) -> (%y, %s1) {
  %w = const f32[2,3,1,1] dense<0.1, -0.2, 0.3, 1.0, 2.5e-8, -0.0>
  %b = const f32[2] splat<0.5>
  %c = Conv(%x, %w, %b) {kernel=[1,1], strides=[1,1], dilations=[1,1], pads=[0,0,0,0], group=1} : f32[1,2,4,4] @\"conv/0\"
  %s0, %s1 = Split(%c) {axis=1, sizes=[1,1]} : f32[1,1,4,4], f32[1,1,4,4] @split
  %y = Clip(%s0) {min=0.0, max=6.0} : f32[1,1,4,4]
}
";
    assert_eq!(print_graph(&g, &PrintOptions::default()), expected);
    assert_round_trip(&g);
}

#[test]
fn fused_ops_have_a_pinned_form() {
    let mut g = Graph::new("fused");
    let x = g
        .add_input("x", TensorType::new(DType::F32, vec![1, 2, 4, 4]))
        .unwrap();
    let a = g
        .add_input("a", TensorType::new(DType::F32, vec![1, 3]))
        .unwrap();
    let w = g
        .add_constant("w", Tensor::from_f32(&[2, 2, 1, 1], vec![0.5; 4]))
        .unwrap();
    let b = g
        .add_constant("b", Tensor::from_f32(&[2], vec![0.0, 1.0]))
        .unwrap();
    let m = g
        .add_constant("m", Tensor::from_f32(&[3, 2], vec![0.25; 6]))
        .unwrap();
    let fused_conv = Op::FusedConv {
        conv: conv(&[1, 1], Padding::Explicit(vec![0; 4])),
        residual: true,
        activation: Some(Activation::Clip { min: 0.0, max: 6.0 }),
    };
    let y = g
        .add_node("y", fused_conv, vec![x, w, b, x], vec!["y".into()])
        .unwrap();
    let fused_gemm = Op::FusedGemm {
        gemm: GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false,
        },
        activation: Some(Activation::LeakyRelu { alpha: 0.1 }),
    };
    let z = g
        .add_node("gemm/0", fused_gemm, vec![a, m], vec!["z".into()])
        .unwrap();
    g.set_outputs(vec![g.node(y).outputs[0], g.node(z).outputs[0]]);
    let expected = "\
graph fused(%x: f32[1,2,4,4], %a: f32[1,3]) -> (%y, %z) {
  %w = const f32[2,2,1,1] splat<0.5>
  %b = const f32[2] dense<0.0, 1.0>
  %m = const f32[3,2] splat<0.25>
  %y = FusedConv(%x, %w, %b, %x) {kernel=[1,1], strides=[1,1], dilations=[1,1], pads=[0,0,0,0], group=1, residual=true, activation=clip(min=0.0, max=6.0)} : f32[1,2,4,4]
  %z = FusedGemm(%a, %m) {alpha=1.0, beta=1.0, trans_a=false, trans_b=false, activation=leaky_relu(alpha=0.1)} : f32[1,2] @\"gemm/0\"
}
";
    assert_eq!(print_graph(&g, &PrintOptions::default()), expected);
    assert_round_trip(&g);
}

#[test]
fn fused_ops_take_defaults_for_omitted_attributes() {
    let src = "
        graph g(%x: f32[1,2,4,4], %a: f32[1,3]) -> (%y, %p, %z, %h) {
          %w = const f32[2,2,3,3] splat<1.0>
          %b = const f32[2] splat<0.0>
          %m = const f32[3,2] splat<1.0>
          %r = const f32[1,2,2,2] splat<1.0>
          %y = FusedConv(%x, %w, %b, %r) {activation=leaky_relu}
          %p = FusedConv(%x, %w, %b) : f32[1,2,2,2]
          %z = FusedGemm(%a, %m) {activation=clip(max=6.0)}
          %h = FusedGemm(%a, %m) {activation=hard_sigmoid(beta=0.25)}
        }";
    let g = parse_graph(src).unwrap();
    let op = |name: &str| {
        let id = g.value_by_name(name).unwrap();
        let n = g
            .petgraph()
            .node_indices()
            .find(|&n| g.node(n).outputs[0] == id)
            .unwrap();
        g.node(n).op.clone()
    };
    let conv3 = conv(&[3, 3], Padding::Explicit(vec![0; 4]));
    assert_eq!(
        op("y"),
        Op::FusedConv {
            conv: conv3.clone(),
            residual: true,
            activation: Some(Activation::LeakyRelu { alpha: 0.01 }),
        }
    );
    assert_eq!(
        op("p"),
        Op::FusedConv {
            conv: conv3,
            residual: false,
            activation: None,
        }
    );
    let gemm = GemmAttrs {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: false,
    };
    let clip = Activation::Clip {
        min: f32::NEG_INFINITY,
        max: 6.0,
    };
    assert_eq!(
        op("z"),
        Op::FusedGemm {
            gemm,
            activation: Some(clip),
        }
    );
    let hard_sigmoid = Activation::HardSigmoid {
        alpha: 0.2,
        beta: 0.25,
    };
    assert_eq!(
        op("h"),
        Op::FusedGemm {
            gemm,
            activation: Some(hard_sigmoid),
        }
    );
}

#[test]
fn names_that_need_quotes_round_trip() {
    let awkward = [
        "gpu_0/data_0",
        "495",
        "onnx::Conv_12",
        "a \"b\" \\c",
        "",
        "tab\there\nnewline",
        "ünï",
        "x-y",
        "inf",
    ];
    let mut g = Graph::new("inf");
    let x = g
        .add_input_declared(
            "in put",
            DType::F32,
            vec![Dim::Symbolic("batch size".into()), Dim::Fixed(2)],
            3,
        )
        .unwrap();
    let mut prev = x;
    for (i, name) in awkward.iter().enumerate() {
        let node_name = format!("node \"{i}\"\u{1}");
        let n = g
            .add_node(
                node_name,
                Op::Activation(Activation::Relu),
                vec![prev],
                vec![name.to_string()],
            )
            .unwrap();
        prev = g.node(n).outputs[0];
    }
    g.set_outputs(vec![prev]);
    let text = assert_round_trip(&g);
    assert!(
        text.starts_with("graph \"inf\"(%\"in put\": f32[\"batch size\"=3,2]) -> (%inf) {"),
        "{text}"
    );
    assert!(text.contains("%495 = Relu(%\"gpu_0/data_0\")"), "{text}");
    assert!(text.contains("%\"tab\\there\\nnewline\""), "{text}");
    assert!(text.contains("@\"node \\\"0\\\"\\u{1}\""), "{text}");
}

#[test]
fn declared_inputs_keep_fixed_and_symbolic_dims() {
    let mut g = Graph::new("g");
    let a = g
        .add_input_declared(
            "a",
            DType::I64,
            vec![Dim::Symbolic("unk__7".into()), Dim::Fixed(5)],
            4,
        )
        .unwrap();
    let s = g
        .add_input("s", TensorType::new(DType::Bool, vec![]))
        .unwrap();
    g.set_outputs(vec![a, s]);
    let text = assert_round_trip(&g);
    assert!(
        text.starts_with("graph g(%a: i64[unk__7=4,5], %s: bool[]) -> (%a, %s) {"),
        "{text}"
    );
    let parsed = parse_graph(&text).unwrap();
    assert_eq!(
        parsed.inputs()[0].declared,
        vec![Dim::Symbolic("unk__7".into()), Dim::Fixed(5)]
    );
    assert_eq!(
        parsed.value(parsed.inputs()[0].value).ty,
        TensorType::new(DType::I64, vec![4, 5])
    );
}

#[test]
fn large_constants_can_be_elided() {
    let mut g = Graph::new("g");
    let w = g.add_constant("w", f32s(&[4, 5], 9)).unwrap();
    let z = g
        .add_constant("z", Tensor::zeros(&TensorType::new(DType::U8, vec![100])))
        .unwrap();
    let small = g
        .add_constant("small", Tensor::from_i64(&[3], vec![1, 2, 3]))
        .unwrap();
    g.set_outputs(vec![w, z, small]);
    let text = print_graph(
        &g,
        &PrintOptions {
            elide_constants_over: Some(3),
        },
    );
    assert!(
        text.contains("%w = const f32[4,5] dense<elided 20 elements>"),
        "{text}"
    );
    assert!(
        text.contains("%z = const u8[100] splat<0>"),
        "a splat is short: never elided\n{text}"
    );
    assert!(
        text.contains("%small = const i64[3] dense<1, 2, 3>"),
        "{text}"
    );
    let err = parse_graph(&text).unwrap_err();
    assert_eq!((err.line, err.col), (2, 29), "{err}");
    assert!(err.message.contains("elided"), "{err}");
}

#[test]
fn omitted_attributes_take_onnx_defaults() {
    let src = "
        graph g(%x: f32[1,2,5,5], %a: f32[3,4]) -> (%y) {
          %w = const f32[2,2,3,3] splat<1.0>
          %c = Conv(%x, %w) : f32[1,2,3,3]
          %p = MaxPool(%c) {kernel=[2,2]}
          %t = Transpose(%a) : f32[4,3]
          %d, %m = Dropout(%t)
          %g = Gemm(%d, %a)
          %s = Shape(%c) : i64[4]
          %y = LeakyRelu(%g)
        }";
    let g = parse_graph(src).unwrap();
    let op = |name: &str| {
        g.node(
            g.petgraph()
                .node_indices()
                .find(|&n| g.node(n).name == name)
                .unwrap(),
        )
        .op
        .clone()
    };
    assert_eq!(
        op("c"),
        Op::Conv(conv(&[3, 3], Padding::Explicit(vec![0; 4])))
    );
    assert_eq!(
        op("p"),
        Op::MaxPool(PoolAttrs {
            kernel: vec![2, 2],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            padding: Padding::Explicit(vec![0; 4]),
            ceil_mode: false
        })
    );
    assert_eq!(op("t"), Op::Transpose { perm: vec![1, 0] });
    assert_eq!(op("d"), Op::Dropout { mask_output: true });
    assert_eq!(
        op("g"),
        Op::Gemm(GemmAttrs {
            alpha: 1.0,
            beta: 1.0,
            trans_a: false,
            trans_b: false
        })
    );
    assert_eq!(op("s"), Op::Shape { start: 0, end: 4 });
    assert_eq!(
        op("y"),
        Op::Activation(Activation::LeakyRelu { alpha: 0.01 })
    );
    assert_eq!(
        g.value(g.value_by_name("y").unwrap()).ty,
        TensorType::new(DType::F32, vec![4, 4])
    );
}

/// f32 values from any bit pattern: NaNs, infinities, subnormals and -0.0 included.
fn any_f32() -> impl Strategy<Value = f32> {
    any::<u32>().prop_map(f32::from_bits)
}

fn positive_finite_f32() -> impl Strategy<Value = f32> {
    any::<u32>()
        .prop_map(|b| f32::from_bits(b & 0x7fff_ffff))
        .prop_filter("finite positive", |v| v.is_finite() && *v > 0.0)
}

/// A tensor of a random dtype and shape (rank 0 to 3, dims 0 to 3) from random bytes; with
/// `splat`, every element repeats the first.
fn small_tensor() -> impl Strategy<Value = Tensor> {
    (
        0..DType::ALL.len(),
        prop::collection::vec(0usize..4, 0..4),
        prop::collection::vec(any::<u8>(), 0..(27 * 8)),
        any::<bool>(),
    )
        .prop_map(|(d, dims, mut bytes, splat)| {
            let ty = TensorType::new(DType::ALL[d], dims);
            let width = ty.dtype.size_bytes();
            bytes.resize(ty.byte_size(), 0x5a);
            if splat && bytes.len() >= width {
                let first = bytes[..width].to_vec();
                bytes
                    .chunks_exact_mut(width)
                    .for_each(|c| c.copy_from_slice(&first));
            }
            if ty.dtype == DType::Bool {
                bytes.iter_mut().for_each(|b| *b &= 1);
            }
            Tensor::from_le_bytes(&ty, &bytes).unwrap()
        })
}

proptest! {
    #[test]
    fn float_attributes_round_trip(
        v in prop::collection::vec(any_f32(), 10),
        scale in positive_finite_f32(),
    ) {
        let mut g = Graph::new("floats");
        let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 2, 3, 3])).unwrap();
        let m = g.add_input("m", TensorType::new(DType::F32, vec![2, 2])).unwrap();
        let ops = [
            Op::Activation(Activation::LeakyRelu { alpha: v[0] }),
            Op::Activation(Activation::Clip { min: v[1], max: v[2] }),
            Op::Activation(Activation::HardSigmoid { alpha: v[3], beta: v[4] }),
            Op::Lrn(LrnAttrs { alpha: v[5], beta: v[6], bias: v[7], size: 1 }),
            Op::QuantizeLinear(QParams::per_tensor(DType::I8, scale, -7).unwrap()),
        ];
        let mut prev = x;
        for (i, op) in ops.into_iter().enumerate() {
            let n = g.add_node(format!("n{i}"), op, vec![prev], vec![format!("v{i}")]).unwrap();
            prev = g.node(n).outputs[0];
        }
        let gemm = GemmAttrs { alpha: v[8], beta: v[9], trans_a: true, trans_b: false };
        g.add_node("gemm", Op::Gemm(gemm), vec![m, m, m], vec!["gemm".into()]).unwrap();
        let pad = Op::Pad { pads: vec![0; 4], value: v[0] };
        g.add_node("pad", pad, vec![m], vec!["pad".into()]).unwrap();
        let c = g.add_constant("c", Tensor::from_f32(&[2], vec![v[2], v[3]])).unwrap();
        let bn = Op::BatchNorm { epsilon: v[1] };
        g.add_node("bn", bn, vec![x, c, c, c, c], vec!["bn".into()]).unwrap();
        let fused_activations = [
            Activation::LeakyRelu { alpha: v[4] },
            Activation::Clip { min: v[5], max: v[6] },
            Activation::HardSigmoid { alpha: v[7], beta: v[8] },
        ];
        for (i, act) in fused_activations.into_iter().enumerate() {
            let op = Op::FusedGemm { gemm, activation: Some(act) };
            g.add_node(format!("fgemm{i}"), op, vec![m, m, m], vec![format!("f{i}")]).unwrap();
        }
        assert_round_trip(&g);
    }

    #[test]
    fn small_constants_round_trip(tensors in prop::collection::vec(small_tensor(), 1..4)) {
        let mut g = Graph::new("consts");
        for (i, t) in tensors.iter().enumerate() {
            g.add_constant(format!("c{i}"), t.clone()).unwrap();
        }
        let text = assert_round_trip(&g);
        let parsed = parse_graph(&text).unwrap();
        for (i, t) in tensors.iter().enumerate() {
            let back = parsed.constant(parsed.value_by_name(&format!("c{i}")).unwrap()).unwrap();
            prop_assert_eq!(back.ty(), t.ty());
            prop_assert_eq!(tensor_elements(back), tensor_elements(t));
        }
    }

    #[test]
    fn constant_of_shape_values_round_trip(
        t in small_tensor().prop_filter("one element", |t| t.numel() == 1),
    ) {
        let mut g = Graph::new("cos");
        let op = Op::ConstantOfShape { shape: vec![2], value: t };
        let n = g.add_node("cos", op, vec![], vec!["cos".into()]).unwrap();
        let out = g.node(n).outputs[0];
        g.set_outputs(vec![out]);
        assert_round_trip(&g);
    }
}

/// The example at the top of `mod.rs` is real `.qir`: it parses and round-trips.
#[test]
fn the_documented_example_parses() {
    let doc = include_str!("mod.rs");
    let start = doc.find("//! ```text\n").unwrap() + "//! ```text\n".len();
    let len = doc[start..].find("//! ```").unwrap();
    let example: String = doc[start..start + len]
        .lines()
        .map(|l| {
            l.strip_prefix("//!")
                .unwrap_or(l)
                .strip_prefix(' ')
                .unwrap_or("")
        })
        .collect::<Vec<_>>()
        .join("\n");
    let g = parse_graph(&example).unwrap_or_else(|e| panic!("{e}\n{example}"));
    assert_eq!(g.node_count(), 4);
    let conv = g
        .petgraph()
        .node_indices()
        .map(|n| g.node(n))
        .find(|n| n.name == "conv/1")
        .unwrap();
    assert_eq!(g.value(conv.outputs[0]).name, "c");
    assert_round_trip(&g);
}

#[test]
fn splat_needs_bitwise_equal_elements() {
    let mut g = Graph::new("g");
    g.add_constant("zeros", Tensor::from_f32(&[2], vec![0.0, -0.0]))
        .unwrap();
    g.add_constant("nans", Tensor::from_f32(&[3], vec![f32::NAN; 3]))
        .unwrap();
    g.add_constant("one", Tensor::from_f32(&[1], vec![2.0]))
        .unwrap();
    g.add_constant("empty", Tensor::from_i64(&[0], vec![]))
        .unwrap();
    let text = assert_round_trip(&g);
    assert!(
        text.contains("%zeros = const f32[2] dense<0.0, -0.0>"),
        "{text}"
    );
    assert!(text.contains("%nans = const f32[3] splat<NaN>"), "{text}");
    assert!(text.contains("%one = const f32[1] dense<2.0>"), "{text}");
    assert!(text.contains("%empty = const i64[0] dense<>"), "{text}");
}

#[test]
fn zero_points_take_a_number_or_a_record() {
    let src = "graph g(%a: u8[2,3], %b: i8[3,2]) -> (%y) {
      %y = MatMulInteger(%a, %b) {a_zp=(zp=3), b_zp=(axis=1, zp=[-1,1])} : i32[2,2]
    }";
    let g = parse_graph(src).unwrap();
    let node = g.node(g.petgraph().node_indices().next().unwrap());
    let Op::MatMulInteger {
        a_zero_point,
        b_zero_point,
    } = &node.op
    else {
        panic!("{:?}", node.op)
    };
    let a_zero_point = a_zero_point.constant().expect("a constant zero point");
    assert_eq!(
        (a_zero_point.axis, a_zero_point.values.as_slice()),
        (None, &[3][..])
    );
    assert_eq!(
        (b_zero_point.axis, b_zero_point.values.as_slice()),
        (Some(1), &[-1, 1][..])
    );
    let text = assert_round_trip(&g);
    assert!(
        text.contains("{a_zp=3, b_zp=(axis=1, zp=[-1,1])}"),
        "{text}"
    );
}
