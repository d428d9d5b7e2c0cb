//! Round trips of the `.qir` printer and parser.

use super::{parse_graph, print_graph, PrintOptions};
use crate::dtype::{DType, Dim, TensorType};
use crate::graph::{Graph, ValueDef, ValueId};
use crate::op::{Activation, BinaryOp, ConvAttrs, GemmAttrs, LrnAttrs, Op, Padding, PoolAttrs};
use crate::quant::{InputZeroPoint, QParams, ZeroPoint};
use crate::tensor::Tensor;
use half::f16;
use ndarray::{ArrayD, IxDyn};

/// A comparable summary of everything a graph holds, in print order. Floats go through
/// `{:?}`, so `-0.0` differs from `0.0` and every NaN reads the same.
pub(super) fn fingerprint(g: &Graph) -> Vec<String> {
    let mut out = vec![format!("graph {:?}", g.name)];
    for gi in g.inputs() {
        let v = g.value(gi.value);
        out.push(format!(
            "input {:?}: {} declared {:?}",
            v.name, v.ty, gi.declared
        ));
    }
    for (_, v) in g.values() {
        if let ValueDef::Constant(t) = &v.def {
            out.push(format!(
                "const {:?}: {} = {:?}",
                v.name,
                v.ty,
                tensor_elements(t)
            ));
        }
    }
    for n in g.topo_order().unwrap() {
        let node = g.node(n);
        let names = |ids: &[ValueId]| {
            ids.iter()
                .map(|&i| g.value(i).name.clone())
                .collect::<Vec<_>>()
        };
        let types: Vec<String> = node
            .outputs
            .iter()
            .map(|&o| g.value(o).ty.to_string())
            .collect();
        out.push(format!(
            "node {:?} {:?} in {:?} out {:?} {types:?}",
            node.name,
            node.op,
            names(&node.inputs),
            names(&node.outputs)
        ));
    }
    out.push(format!(
        "outputs {:?}",
        g.outputs()
            .iter()
            .map(|&o| g.value(o).name.clone())
            .collect::<Vec<_>>()
    ));
    out
}

pub(super) fn tensor_elements(t: &Tensor) -> Vec<String> {
    match t.to_i64_vec() {
        Some(ints) => ints.iter().map(|v| v.to_string()).collect(),
        None => t.to_f64_vec().iter().map(|v| format!("{v:?}")).collect(),
    }
}

/// print → parse → print gives the same text, and the parsed graph the same structure.
pub(super) fn assert_round_trip(g: &Graph) -> String {
    let text = print_graph(g, &PrintOptions::default());
    let parsed = parse_graph(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(print_graph(&parsed, &PrintOptions::default()), text);
    assert_eq!(fingerprint(&parsed), fingerprint(g), "\n{text}");
    parsed.verify().unwrap();
    text
}

pub(super) fn f32s(dims: &[usize], seed: u32) -> Tensor {
    let n: usize = dims.iter().product();
    let data = (0..n)
        .map(|i| ((((i as u32).wrapping_mul(2654435761) ^ seed) % 17) as f32 - 8.0) * 0.125)
        .collect();
    Tensor::from_f32(dims, data)
}

fn qp(dtype: DType, scale: f32, zp: i32) -> QParams {
    QParams::per_tensor(dtype, scale, zp).unwrap()
}

pub(super) fn conv(kernel: &[usize], padding: Padding) -> ConvAttrs {
    let n = kernel.len();
    ConvAttrs {
        kernel: kernel.to_vec(),
        strides: vec![1; n],
        dilations: vec![1; n],
        padding,
        group: 1,
    }
}

/// Every `Op` variant once (activations and binaries each once), on consistent shapes.
fn every_op_graph() -> Graph {
    let mut g = Graph::new("every op");
    let x = g
        .add_input_declared(
            "x",
            DType::F32,
            vec![
                Dim::Symbolic("N".into()),
                Dim::Fixed(3),
                Dim::Fixed(8),
                Dim::Fixed(8),
            ],
            1,
        )
        .unwrap();
    let data0 = g
        .add_input("gpu_0/data_0", TensorType::new(DType::F32, vec![1, 4]))
        .unwrap();
    let xq = g
        .add_input("495", TensorType::new(DType::U8, vec![1, 3, 8, 8]))
        .unwrap();
    let ids = g
        .add_input("onnx::Gather_12", TensorType::new(DType::I64, vec![2]))
        .unwrap();

    let k = |g: &mut Graph, name: &str, t: Tensor| g.add_constant(name, t).unwrap();
    let w = k(&mut g, "w", f32s(&[4, 3, 3, 3], 1));
    let b = k(
        &mut g,
        "b",
        Tensor::from_f32(&[4], vec![-0.0, 1e-7, f32::MAX, -1.5e-42]),
    );
    let bn: Vec<ValueId> = (0..4)
        .map(|i| k(&mut g, &format!("bn.{i}"), f32s(&[4], 10 + i)))
        .collect();
    let gemm_b = k(&mut g, "gemm_b", f32s(&[4, 5], 2));
    let gemm_c = k(
        &mut g,
        "gemm_c",
        Tensor::F32(ArrayD::from_elem(IxDyn(&[5]), 0.25)),
    );
    let gemm_bt = k(&mut g, "gemm_bt", f32s(&[5, 4], 3));
    let mm_b = k(&mut g, "mm_b", f32s(&[5, 2], 4));
    let half = k(
        &mut g,
        "half",
        Tensor::F16(
            ArrayD::from_shape_vec(
                IxDyn(&[3]),
                vec![f16::from_f32(0.1), f16::MAX, f16::MIN_POSITIVE_SUBNORMAL],
            )
            .unwrap(),
        ),
    );
    let wq = k(
        &mut g,
        "wq",
        Tensor::I8(ArrayD::from_shape_fn(IxDyn(&[4, 3, 3, 3]), |d| {
            (d[0] * 31 + d[1] * 7 + d[2] * 3 + d[3]) as i8 - 60
        })),
    );
    let bq = k(
        &mut g,
        "bq",
        Tensor::I32(ArrayD::from_shape_vec(IxDyn(&[4]), vec![i32::MIN, -1, 0, i32::MAX]).unwrap()),
    );
    let qa = k(
        &mut g,
        "qa",
        Tensor::U8(ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![0, 1, 2, 128, 254, 255]).unwrap()),
    );
    let qb = k(
        &mut g,
        "qb",
        Tensor::I8(ArrayD::from_shape_vec(IxDyn(&[3, 2]), vec![-128, -1, 0, 1, 127, 5]).unwrap()),
    );
    let mask = k(
        &mut g,
        "mask",
        Tensor::Bool(
            ArrayD::from_shape_vec(IxDyn(&[2, 2]), vec![true, false, false, true]).unwrap(),
        ),
    );
    let big = k(
        &mut g,
        "big",
        Tensor::from_i64(&[2], vec![i64::MIN, i64::MAX]),
    );
    let _ = (half, mask, big);

    let node =
        |g: &mut Graph, name: &str, op: Op, inputs: Vec<ValueId>, outs: &[&str]| -> Vec<ValueId> {
            let n = g
                .add_node(
                    name,
                    op,
                    inputs,
                    outs.iter().map(|s| s.to_string()).collect(),
                )
                .unwrap();
            g.node(n).outputs.clone()
        };
    let one = |v: Vec<ValueId>| v[0];
    let c1 = one(node(
        &mut g,
        "conv/1",
        Op::Conv(conv(&[3, 3], Padding::Explicit(vec![1, 1, 1, 1]))),
        vec![x, w, b],
        &["c1"],
    ));
    let bnv = one(node(
        &mut g,
        "bn",
        Op::BatchNorm { epsilon: 1e-5 },
        vec![c1, bn[0], bn[1], bn[2], bn[3]],
        &["bn"],
    ));
    let mut a = bnv;
    for (i, act) in [
        Activation::Relu,
        Activation::LeakyRelu { alpha: 0.01 },
        Activation::Clip {
            min: f32::NEG_INFINITY,
            max: 6.0,
        },
        Activation::Clip {
            min: f32::NAN,
            max: f32::INFINITY,
        },
        Activation::Sigmoid,
        Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        Activation::HardSwish,
        Activation::Tanh,
    ]
    .into_iter()
    .enumerate()
    {
        a = one(node(
            &mut g,
            &format!("act{i}"),
            Op::Activation(act),
            vec![a],
            &[&format!("act{i}")],
        ));
    }
    let mut bins = Vec::new();
    for (i, op) in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div]
        .into_iter()
        .enumerate()
    {
        let name = format!("bin{i}");
        bins.push(one(node(&mut g, "", Op::Binary(op), vec![a, c1], &[&name])));
    }
    let sum = one(node(&mut g, "sum", Op::Sum, bins.clone(), &["sum"]));
    let cat = one(node(
        &mut g,
        "cat",
        Op::Concat { axis: 1 },
        vec![sum, c1],
        &["cat"],
    ));
    let halves = node(
        &mut g,
        "split",
        Op::Split {
            axis: 1,
            sizes: vec![4, 4],
        },
        vec![cat],
        &["s0", "s1"],
    );
    let pool = |padding, ceil_mode| PoolAttrs {
        kernel: vec![2, 2],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        padding,
        ceil_mode,
    };
    let mp = one(node(
        &mut g,
        "mp",
        Op::MaxPool(pool(Padding::Explicit(vec![0, 0, 1, 1]), true)),
        vec![halves[0]],
        &["mp"],
    ));
    let ap_op = Op::AveragePool {
        pool: pool(Padding::SameLower, false),
        count_include_pad: true,
    };
    let ap = one(node(&mut g, "ap", ap_op, vec![halves[1]], &["ap"]));
    let gap = one(node(
        &mut g,
        "gap",
        Op::GlobalAveragePool,
        vec![mp],
        &["gap"],
    ));
    let gmp = one(node(&mut g, "gmp", Op::GlobalMaxPool, vec![ap], &["gmp"]));
    let flat = one(node(
        &mut g,
        "flat",
        Op::Flatten { axis: 1 },
        vec![gap],
        &["flat"],
    ));
    let gemm_attrs = GemmAttrs {
        alpha: 0.5,
        beta: 2.0,
        trans_a: false,
        trans_b: false,
    };
    let gemm = one(node(
        &mut g,
        "gemm",
        Op::Gemm(gemm_attrs),
        vec![flat, gemm_b, gemm_c],
        &["gemm"],
    ));
    let gemm_t = GemmAttrs {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: true,
    };
    node(
        &mut g,
        "gemm_t",
        Op::Gemm(gemm_t),
        vec![data0, gemm_bt],
        &["gemm_t"],
    );
    let mm = one(node(&mut g, "mm", Op::MatMul, vec![gemm, mm_b], &["mm"]));
    node(
        &mut g,
        "reshape",
        Op::Reshape {
            shape: vec![0, -1],
            allow_zero: false,
        },
        vec![gmp],
        &["reshape"],
    );
    node(
        &mut g,
        "tr",
        Op::Transpose {
            perm: vec![0, 2, 3, 1],
        },
        vec![c1],
        &["tr"],
    );
    let sq = one(node(
        &mut g,
        "sq",
        Op::Squeeze { axes: vec![2, 3] },
        vec![gmp],
        &["sq"],
    ));
    let unsq = one(node(
        &mut g,
        "unsq",
        Op::Unsqueeze { axes: vec![0] },
        vec![sq],
        &["unsq"],
    ));
    node(
        &mut g,
        "softmax",
        Op::Softmax {
            axis: 2,
            coerce_2d: true,
        },
        vec![unsq],
        &["softmax"],
    );
    let lrn = one(node(
        &mut g,
        "lrn",
        Op::Lrn(LrnAttrs {
            alpha: 1e-4,
            beta: 0.75,
            bias: 1.0,
            size: 3,
        }),
        vec![c1],
        &["lrn"],
    ));
    let drop = node(
        &mut g,
        "drop",
        Op::Dropout { mask_output: true },
        vec![lrn],
        &["drop", "drop_mask"],
    );
    node(
        &mut g,
        "drop2",
        Op::Dropout { mask_output: false },
        vec![drop[0]],
        &["drop2"],
    );
    let id = one(node(&mut g, "id", Op::Identity, vec![drop[0]], &["id"]));
    let pad = one(node(
        &mut g,
        "pad",
        Op::Pad {
            pads: vec![0, 0, 1, 1, 0, 0, -1, 1],
            value: -0.5,
        },
        vec![id],
        &["pad"],
    ));
    node(
        &mut g,
        "shape",
        Op::Shape { start: 1, end: 3 },
        vec![pad],
        &["shape"],
    );
    node(
        &mut g,
        "gather",
        Op::Gather { axis: 1 },
        vec![c1, ids],
        &["gather"],
    );
    let slice_op = Op::Slice {
        starts: vec![0, -1],
        ends: vec![i64::MAX, i64::MIN],
        axes: vec![1, 3],
        steps: vec![2, -1],
    };
    let slice = one(node(&mut g, "slice", slice_op, vec![c1], &["slice"]));
    node(
        &mut g,
        "cast",
        Op::Cast { to: DType::F16 },
        vec![slice],
        &["cast"],
    );
    node(
        &mut g,
        "mean",
        Op::ReduceMean {
            axes: vec![2, 3],
            keep_dims: false,
        },
        vec![c1],
        &["mean"],
    );
    node(
        &mut g,
        "cos",
        Op::ConstantOfShape {
            shape: vec![2, 3],
            value: Tensor::from_i64(&[1], vec![7]),
        },
        vec![],
        &["cos"],
    );
    let q = one(node(
        &mut g,
        "q",
        Op::QuantizeLinear(qp(DType::U8, 0.05, 128)),
        vec![c1],
        &["q"],
    ));
    let w_per_channel =
        QParams::per_channel(DType::I8, 0, vec![0.5, 0.25, 0.125, 1e-3], vec![0, 0, 0, 0]).unwrap();
    node(
        &mut g,
        "dq",
        Op::DequantizeLinear(w_per_channel.clone()),
        vec![wq],
        &["dq"],
    );
    node(
        &mut g,
        "dq_x",
        Op::DequantizeLinear(qp(DType::U8, 0.05, 128)),
        vec![q],
        &["dq_x"],
    );
    let qconv = Op::QLinearConv {
        conv: ConvAttrs {
            group: 1,
            ..conv(&[3, 3], Padding::Explicit(vec![1, 1, 1, 1]))
        },
        x: qp(DType::U8, 0.02, 128),
        w: w_per_channel,
        y: qp(DType::U8, 0.1, 3),
    };
    let qconv_y = one(node(&mut g, "qconv", qconv, vec![xq, wq, bq], &["qconv"]));
    let realized_conv = Op::QuantizedConv {
        conv: conv(&[3, 3], Padding::Explicit(vec![1, 1, 1, 1])),
        x: qp(DType::U8, 0.02, 128),
        w: QParams::per_channel(DType::I8, 0, vec![0.5, 0.25, 0.125, 1e-3], vec![0; 4]).unwrap(),
        y: qp(DType::I8, 0.1, -5),
        residual: Some(qp(DType::U8, 0.1, 3)),
        clamp: Some((-5, 127)),
    };
    let rconv_y = one(node(
        &mut g,
        "rconv",
        realized_conv,
        vec![xq, wq, bq, qconv_y],
        &["rconv"],
    ));
    let realized_conv_plain = Op::QuantizedConv {
        conv: conv(&[3, 3], Padding::SameUpper),
        x: qp(DType::U8, 0.02, 128),
        w: qp(DType::I8, 0.01, 0),
        y: qp(DType::U8, 0.1, 0),
        residual: None,
        clamp: None,
    };
    let rconv_plain_y = one(node(
        &mut g,
        "rconv_plain",
        realized_conv_plain,
        vec![xq, wq],
        &["rconv_plain"],
    ));
    let realized_add = Op::QuantizedAdd {
        a: qp(DType::U8, 0.1, 3),
        b: qp(DType::U8, 0.1, 0),
        y: qp(DType::I8, 0.2, -128),
        clamp: Some((-128, -98)),
    };
    node(
        &mut g,
        "radd",
        realized_add,
        vec![qconv_y, rconv_plain_y],
        &["radd"],
    );
    let realized_add_plain = Op::QuantizedAdd {
        a: qp(DType::U8, 0.1, 0),
        b: qp(DType::U8, 0.1, 3),
        y: qp(DType::U8, 0.15, 7),
        clamp: None,
    };
    node(
        &mut g,
        "radd_plain",
        realized_add_plain,
        vec![rconv_plain_y, qconv_y],
        &["radd_plain"],
    );
    let realized_pool = Op::QuantizedGlobalAveragePool {
        x: qp(DType::I8, 0.1, -5),
        y: qp(DType::U8, 0.05, 128),
    };
    node(&mut g, "rgap", realized_pool, vec![rconv_y], &["rgap"]);
    let realized_mm = Op::QuantizedMatMul {
        a: qp(DType::U8, 0.5, 1),
        b: QParams::per_channel(DType::I8, 1, vec![0.25, 0.5], vec![0, 0]).unwrap(),
        y: qp(DType::U8, 1.0, 10),
        clamp: Some((10, 16)),
    };
    node(&mut g, "rmm", realized_mm, vec![qa, qb], &["rmm"]);
    let qmm = Op::QLinearMatMul {
        a: qp(DType::U8, 0.5, 1),
        b: qp(DType::I8, 0.25, -3),
        y: qp(DType::I8, 1.0, 0),
    };
    node(&mut g, "qmm", qmm, vec![qa, qb], &["qmm"]);
    let convi = Op::ConvInteger {
        conv: conv(&[3, 3], Padding::SameUpper),
        x_zero_point: InputZeroPoint::Constant(ZeroPoint {
            axis: None,
            values: vec![128],
        }),
        w_zero_point: ZeroPoint {
            axis: Some(0),
            values: vec![0, 1, 2, 3],
        },
    };
    node(&mut g, "convi", convi, vec![xq, wq], &["convi"]);
    let mmi = Op::MatMulInteger {
        a_zero_point: InputZeroPoint::Constant(ZeroPoint::zero()),
        b_zero_point: ZeroPoint {
            axis: Some(1),
            values: vec![-2, 4],
        },
    };
    node(&mut g, "mmi", mmi, vec![qa, qb], &["mmi"]);
    let dql = node(
        &mut g,
        "dql",
        Op::DynamicQuantizeLinear,
        vec![mm],
        &["dql_y", "dql_scale", "dql_zp"],
    );
    let dql_x = node(
        &mut g,
        "dql_x",
        Op::DynamicQuantizeLinear,
        vec![x],
        &["dql_x_y", "dql_x_scale", "dql_x_zp"],
    );
    let dyn_conv = Op::DynamicQuantizedConv {
        conv: conv(&[3, 3], Padding::Explicit(vec![1, 1, 1, 1])),
        w: QParams::per_channel(DType::I8, 0, vec![0.5, 0.25, 1.0, 2.0], vec![0; 4]).unwrap(),
        residual: false,
        activation: Some(Activation::Relu),
    };
    let mut dyn_inputs = dql_x.clone();
    dyn_inputs.extend([wq, b]);
    node(&mut g, "dconv", dyn_conv, dyn_inputs, &["dconv"]);
    let act_f32 = k(&mut g, "act_f32", f32s(&[2, 3], 5));
    let dql_a = node(
        &mut g,
        "dql_a",
        Op::DynamicQuantizeLinear,
        vec![act_f32],
        &["dql_a_y", "dql_a_scale", "dql_a_zp"],
    );
    // onnxruntime's dynamic form: the zero point read at run time is the third input.
    let mmi_run_time = Op::MatMulInteger {
        a_zero_point: InputZeroPoint::RunTime,
        b_zero_point: ZeroPoint::zero(),
    };
    node(
        &mut g,
        "mmi_rt",
        mmi_run_time,
        vec![dql_a[0], qb, dql_a[2]],
        &["mmi_rt"],
    );
    let dyn_bias = k(&mut g, "dyn_bias", f32s(&[2], 6));
    let dyn_mm = Op::DynamicQuantizedMatMul {
        b: QParams::per_tensor(DType::I8, 0.125, 0).unwrap(),
        activation: None,
    };
    let mut dyn_inputs = dql_a.clone();
    dyn_inputs.extend([qb, dyn_bias]);
    node(&mut g, "dmm", dyn_mm, dyn_inputs, &["dmm"]);
    let fused_relu6 = Op::FusedConv {
        conv: conv(&[3, 3], Padding::Explicit(vec![1, 1, 1, 1])),
        residual: true,
        activation: Some(Activation::Clip { min: 0.0, max: 6.0 }),
    };
    node(&mut g, "fconv", fused_relu6, vec![x, w, b, c1], &["fconv"]);
    let fused_plain = Op::FusedConv {
        conv: conv(&[3, 3], Padding::SameLower),
        residual: false,
        activation: None,
    };
    node(
        &mut g,
        "fconv_plain",
        fused_plain,
        vec![x, w, b],
        &["fconv_plain"],
    );
    // Every activation once inside a fused op, and none.
    let fused_activations = [
        None,
        Some(Activation::Relu),
        Some(Activation::LeakyRelu { alpha: 0.1 }),
        Some(Activation::Clip {
            min: f32::NEG_INFINITY,
            max: 0.5,
        }),
        Some(Activation::Sigmoid),
        Some(Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        }),
        Some(Activation::HardSwish),
        Some(Activation::Tanh),
    ];
    for (i, activation) in fused_activations.into_iter().enumerate() {
        let name = format!("fgemm{i}");
        let op = Op::FusedGemm {
            gemm: gemm_t,
            activation,
        };
        node(&mut g, &name, op, vec![data0, gemm_bt, gemm_c], &[&name]);
    }
    g.set_outputs(vec![dql[0], drop[1], x, b]);
    g
}

/// Every variant's position in `Op`; the exhaustive match fails to compile when a variant
/// is added, so the coverage test below cannot silently miss it.
fn variant_index(op: &Op) -> usize {
    match op {
        Op::Conv(_) => 0,
        Op::BatchNorm { .. } => 1,
        Op::Activation(_) => 2,
        Op::Binary(_) => 3,
        Op::Sum => 4,
        Op::Concat { .. } => 5,
        Op::Split { .. } => 6,
        Op::MaxPool(_) => 7,
        Op::AveragePool { .. } => 8,
        Op::GlobalAveragePool => 9,
        Op::GlobalMaxPool => 10,
        Op::Gemm(_) => 11,
        Op::MatMul => 12,
        Op::Flatten { .. } => 13,
        Op::Reshape { .. } => 14,
        Op::Transpose { .. } => 15,
        Op::Squeeze { .. } => 16,
        Op::Unsqueeze { .. } => 17,
        Op::Softmax { .. } => 18,
        Op::Lrn(_) => 19,
        Op::Dropout { .. } => 20,
        Op::Identity => 21,
        Op::Pad { .. } => 22,
        Op::Shape { .. } => 23,
        Op::Gather { .. } => 24,
        Op::Slice { .. } => 25,
        Op::Cast { .. } => 26,
        Op::ReduceMean { .. } => 27,
        Op::ConstantOfShape { .. } => 28,
        Op::QuantizeLinear(_) => 29,
        Op::DequantizeLinear(_) => 30,
        Op::QLinearConv { .. } => 31,
        Op::QLinearMatMul { .. } => 32,
        Op::ConvInteger { .. } => 33,
        Op::MatMulInteger { .. } => 34,
        Op::DynamicQuantizeLinear => 35,
        Op::FusedConv { .. } => 36,
        Op::FusedGemm { .. } => 37,
        Op::QuantizedConv { .. } => 38,
        Op::QuantizedMatMul { .. } => 39,
        Op::QuantizedAdd { .. } => 40,
        Op::QuantizedGlobalAveragePool { .. } => 41,
        Op::DynamicQuantizedConv { .. } => 42,
        Op::DynamicQuantizedMatMul { .. } => 43,
    }
}
const OP_VARIANTS: usize = 44;

#[test]
fn every_op_round_trips() {
    let g = every_op_graph();
    let mut covered: Vec<usize> = g
        .petgraph()
        .node_weights()
        .map(|n| variant_index(&n.op))
        .collect();
    covered.sort_unstable();
    covered.dedup();
    assert_eq!(
        covered,
        (0..OP_VARIANTS).collect::<Vec<_>>(),
        "the test graph must use every Op variant"
    );
    let mut names: Vec<&str> = g.petgraph().node_weights().map(|n| n.op.name()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names.len(),
        OP_VARIANTS + 6 + 3,
        "every activation and binary op too"
    );
    let text = assert_round_trip(&g);
    // Spot checks of forms the grammar promises.
    for needle in [
        "graph \"every op\"(%x: f32[N=1,3,8,8], %\"gpu_0/data_0\": f32[1,4], %495: u8[1,3,8,8]",
        "%b = const f32[4] dense<-0.0, 1e-7, 3.4028235e38, -1.5e-42>",
        "%gemm_c = const f32[5] splat<0.25>",
        "{min=-inf, max=6.0}",
        "{min=NaN, max=inf}",
        "pads=same_upper",
        "pads=same_lower",
        "w=i8(axis=0, scale=[0.5, 0.25, 0.125, 0.001], zp=[0,0,0,0])",
        "{q=u8(scale=0.05, zp=128)}",
        "group=1, x_zp=128, w_zp=(axis=0, zp=[0,1,2,3])}",
        "{a_zp=0, b_zp=(axis=1, zp=[-2,4])}",
        "value=i64[1] dense<7>",
        "{to=f16}",
        "ends=[9223372036854775807,-9223372036854775808]",
        "= Add(%act7, %c1) : f32[1,4,8,8] @\"\"",
        "%c1 = Conv(%x, %w, %b)",
        "@\"conv/1\"",
        "-> (%dql_y, %drop_mask, %x, %b)",
        "%fconv = FusedConv(%x, %w, %b, %c1) {kernel=[3,3], strides=[1,1], dilations=[1,1], \
         pads=[1,1,1,1], group=1, residual=true, activation=clip(min=0.0, max=6.0)} : f32[1,4,8,8]",
        "pads=same_lower, group=1, residual=false} : f32[1,4,8,8]",
        "%fgemm0 = FusedGemm(%\"gpu_0/data_0\", %gemm_bt, %gemm_c) {alpha=1.0, beta=1.0, \
         trans_a=false, trans_b=true} : f32[1,5]",
        "trans_b=true, activation=relu} : f32[1,5]",
        "activation=leaky_relu(alpha=0.1)}",
        "activation=clip(min=-inf, max=0.5)}",
        "activation=sigmoid}",
        "activation=hard_sigmoid(alpha=0.2, beta=0.5)}",
        "activation=hard_swish}",
        "activation=tanh}",
        "%rconv = QuantizedConv(%495, %wq, %bq, %qconv) {kernel=[3,3], strides=[1,1], \
         dilations=[1,1], pads=[1,1,1,1], group=1, x=u8(scale=0.02, zp=128), \
         w=i8(axis=0, scale=[0.5, 0.25, 0.125, 0.001], zp=[0,0,0,0]), y=i8(scale=0.1, zp=-5), \
         residual=u8(scale=0.1, zp=3), clamp=[-5,127]} : i8[1,4,8,8]",
        "y=u8(scale=0.1, zp=0)} : u8[1,4,8,8]",
        "%rmm = QuantizedMatMul(%qa, %qb) {a=u8(scale=0.5, zp=1), \
         b=i8(axis=1, scale=[0.25, 0.5], zp=[0,0]), y=u8(scale=1.0, zp=10), clamp=[10,16]} \
         : u8[2,2]",
        "%radd = QuantizedAdd(%qconv, %rconv_plain) {a=u8(scale=0.1, zp=3), \
         b=u8(scale=0.1, zp=0), y=i8(scale=0.2, zp=-128), clamp=[-128,-98]} : i8[1,4,8,8]",
        "%radd_plain = QuantizedAdd(%rconv_plain, %qconv) {a=u8(scale=0.1, zp=0), \
         b=u8(scale=0.1, zp=3), y=u8(scale=0.15, zp=7)} : u8[1,4,8,8]",
        "%rgap = QuantizedGlobalAveragePool(%rconv) {x=i8(scale=0.1, zp=-5), \
         y=u8(scale=0.05, zp=128)} : u8[1,4,1,1]",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}

/// What the round trip above cannot show: the new realized ops' attribute and inference
/// errors, as a writer of `.qir` sees them.
#[test]
fn realized_add_and_pool_errors_name_the_attribute() {
    let error = |body: &str| {
        let src = format!("graph g(%a: u8[1,2,3,3], %b: i8[1,2,3,3]) -> () {{\n{body}\n}}\n");
        parse_graph(&src).unwrap_err().to_string()
    };
    let missing_y =
        error("  %y = QuantizedAdd(%a, %b) {a=u8(scale=0.1, zp=0), b=i8(scale=1, zp=1)}");
    assert!(
        missing_y.contains("QuantizedAdd needs attribute 'y'"),
        "{missing_y}"
    );
    let broadcast = error(
        "  %c = const u8[1,2,1,1] splat<3>\n  %y = QuantizedAdd(%a, %c) {a=u8(scale=0.1, zp=0), \
         b=u8(scale=0.2, zp=1), y=u8(scale=0.3, zp=2)}",
    );
    assert!(broadcast.contains("does not broadcast"), "{broadcast}");
    let clamp = error(
        "  %p = QuantizedGlobalAveragePool(%b) {x=i8(scale=0.2, zp=1), y=i8(scale=0.1, zp=0), \
         clamp=[0,1]}",
    );
    let no_clamp = "QuantizedGlobalAveragePool has no attribute 'clamp' (it takes: x, y)";
    assert!(clamp.contains(no_clamp), "{clamp}");
}
