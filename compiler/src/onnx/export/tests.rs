//! Tests of the ONNX writer: the forms each op takes per opset, initializer naming and
//! typing, and (ignored by default) a model with every special case for onnxruntime.
use super::*;
use crate::onnx::proto::tensor_shape_proto::dimension;
use qcc_ir::{GemmAttrs, InputZeroPoint, TensorType};

fn qp(dtype: DType, scale: f32, zp: i32) -> QParams {
    QParams::per_tensor(dtype, scale, zp).expect("valid parameters")
}

pub(super) fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
        })
        .collect()
}

fn int8(dims: &[usize], v: Vec<i8>) -> Tensor {
    Tensor::I8(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(dims), v).expect("dims"))
}

fn uint8(dims: &[usize], v: Vec<u8>) -> Tensor {
    Tensor::U8(ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(dims), v).expect("dims"))
}

/// One graph with every op whose ONNX form differs from the IR's: attributes that become
/// inputs, Q/DQ parameters, quantized ops, Softmax with the old semantics, fused ops. Weights are
/// quantized per channel, or per tensor for opsets before 13.
pub(super) fn op_coverage_graph(per_channel: bool) -> Result<Graph, qcc_ir::GraphError> {
    let mut g = Graph::new("ops");
    let x = g.add_input("x", TensorType::new(DType::F32, vec![1, 4, 6, 6]))?;
    let node = |g: &mut Graph,
                name: &str,
                op: Op,
                ins: Vec<ValueId>|
     -> Result<ValueId, qcc_ir::GraphError> {
        let n = g.add_node(name, op, ins, vec![name.to_string()])?;
        Ok(g.node(n).outputs[0])
    };
    let p = node(
        &mut g,
        "pad",
        Op::Pad {
            pads: vec![0, 0, 1, 1, 0, 0, 1, 1],
            value: 0.5,
        },
        vec![x],
    )?;
    let s = node(
        &mut g,
        "slice",
        Op::Slice {
            starts: vec![1],
            ends: vec![7],
            axes: vec![2],
            steps: vec![1],
        },
        vec![p],
    )?;
    let w = g.add_constant(
        "conv.weight",
        Tensor::from_f32(&[8, 4, 3, 3], pseudo_random(288, 1)),
    )?;
    let conv = ConvAttrs {
        kernel: vec![3, 3],
        strides: vec![2, 2],
        dilations: vec![1, 1],
        padding: Padding::SameUpper,
        group: 1,
    };
    let c = node(&mut g, "conv", Op::Conv(conv.clone()), vec![s, w])?;
    let cl = node(
        &mut g,
        "clip",
        Op::Activation(Activation::Clip {
            min: f32::NEG_INFINITY,
            max: 0.5,
        }),
        vec![c],
    )?;
    let split = g.add_node(
        "split",
        Op::Split {
            axis: 1,
            sizes: vec![3, 5],
        },
        vec![cl],
        vec!["split.0".into(), "split.1".into()],
    )?;
    let parts = g.node(split).outputs.clone();
    let cat = node(
        &mut g,
        "concat",
        Op::Concat { axis: 1 },
        vec![parts[1], parts[0]],
    )?;
    let hs = node(
        &mut g,
        "hard_sigmoid",
        Op::Activation(Activation::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        }),
        vec![cat],
    )?;
    let r = node(
        &mut g,
        "reshape",
        Op::Reshape {
            shape: vec![0, 8, -1],
            allow_zero: false,
        },
        vec![hs],
    )?;
    let t = node(
        &mut g,
        "transpose",
        Op::Transpose {
            perm: vec![0, 2, 1],
        },
        vec![r],
    )?;
    let u = node(
        &mut g,
        "unsqueeze",
        Op::Unsqueeze { axes: vec![1] },
        vec![t],
    )?;
    let sq = node(&mut g, "squeeze", Op::Squeeze { axes: vec![1] }, vec![u])?;
    let sm = node(
        &mut g,
        "softmax",
        Op::Softmax {
            axis: 1,
            coerce_2d: true,
        },
        vec![sq],
    )?;
    let rm = node(
        &mut g,
        "reduce_mean",
        Op::ReduceMean {
            axes: vec![2],
            keep_dims: false,
        },
        vec![sm],
    )?;
    let k = node(
        &mut g,
        "const",
        Op::ConstantOfShape {
            shape: vec![1, 12],
            value: Tensor::from_f32(&[1], vec![0.25]),
        },
        vec![],
    )?;
    let rm = node(
        &mut g,
        "add",
        Op::Binary(qcc_ir::BinaryOp::Add),
        vec![rm, k],
    )?;
    let act_q = qp(DType::U8, 0.002, 10);
    let q = node(
        &mut g,
        "quantize",
        Op::QuantizeLinear(act_q.clone()),
        vec![rm],
    )?;
    let dq = node(
        &mut g,
        "dequantize",
        Op::DequantizeLinear(act_q.clone()),
        vec![q],
    )?;
    let wq = g.add_constant(
        "fc.weight_q",
        int8(
            &[5, 12],
            (0..60).map(|i| (i * 7 % 255 - 127) as i8).collect(),
        ),
    )?;
    let w_q = if per_channel {
        QParams::per_channel(DType::I8, 0, vec![0.01, 0.02, 0.03, 0.04, 0.05], vec![0; 5])
            .expect("valid")
    } else {
        qp(DType::I8, 0.03, 0)
    };
    let wdq = node(&mut g, "fc.dequantize", Op::DequantizeLinear(w_q), vec![wq])?;
    let gemm = GemmAttrs {
        alpha: 1.0,
        beta: 1.0,
        trans_a: false,
        trans_b: true,
    };
    let fc = node(&mut g, "fc", Op::Gemm(gemm), vec![dq, wdq])?;
    let fc = node(
        &mut g,
        "leaky",
        Op::Activation(Activation::LeakyRelu { alpha: 0.1 }),
        vec![fc],
    )?;
    let bq = g.add_constant(
        "mm.b",
        uint8(&[12, 3], (0..36).map(|i| (i * 13 % 256) as u8).collect()),
    )?;
    let qmm = Op::QLinearMatMul {
        a: act_q.clone(),
        b: qp(DType::U8, 0.01, 128),
        y: qp(DType::U8, 0.05, 100),
    };
    let qmm = node(&mut g, "qlinear_matmul", qmm, vec![q, bq])?;
    let mmi = Op::MatMulInteger {
        a_zero_point: InputZeroPoint::Constant(ZeroPoint {
            axis: None,
            values: vec![10],
        }),
        b_zero_point: ZeroPoint::zero(),
    };
    let mmi = node(&mut g, "matmul_integer", mmi, vec![q, bq])?;
    let mmi = node(&mut g, "cast", Op::Cast { to: DType::F32 }, vec![mmi])?;
    let q4 = node(
        &mut g,
        "quantize4",
        Op::QuantizeLinear(qp(DType::U8, 0.05, 128)),
        vec![c],
    )?;
    let w4 = g.add_constant(
        "qconv.weight",
        int8(&[2, 8, 1, 1], (0..16).map(|i| (i * 9 - 70) as i8).collect()),
    )?;
    let conv1 = ConvAttrs {
        kernel: vec![1, 1],
        strides: vec![1, 1],
        dilations: vec![1, 1],
        padding: Padding::Explicit(vec![0; 4]),
        group: 1,
    };
    let qc = Op::QLinearConv {
        conv: conv1.clone(),
        x: qp(DType::U8, 0.05, 128),
        w: if per_channel {
            QParams::per_channel(DType::I8, 0, vec![0.01, 0.02], vec![0, 0]).expect("valid")
        } else {
            qp(DType::I8, 0.01, 0)
        },
        y: qp(DType::U8, 0.1, 120),
    };
    let qc = node(&mut g, "qlinear_conv", qc, vec![q4, w4])?;
    let wu = g.add_constant(
        "iconv.weight",
        uint8(&[2, 8, 1, 1], (0..16).map(|i| (i * 15) as u8).collect()),
    )?;
    // Per tensor: onnxruntime's ConvInteger refuses per-channel weight zero points.
    let ci = Op::ConvInteger {
        conv: conv1,
        x_zero_point: InputZeroPoint::Constant(ZeroPoint {
            axis: None,
            values: vec![128],
        }),
        w_zero_point: ZeroPoint {
            axis: None,
            values: vec![3],
        },
    };
    let ci = node(&mut g, "conv_integer", ci, vec![q4, wu])?;
    let dql = g.add_node(
        "dyn",
        Op::DynamicQuantizeLinear,
        vec![rm],
        vec!["dyn.y".into(), "dyn.scale".into(), "dyn.zp".into()],
    )?;
    let dyn_y = g.node(dql).outputs[0];
    // onnxruntime's dynamic form: A's zero point is DynamicQuantizeLinear's, read at run time.
    let mmi_run_time = Op::MatMulInteger {
        a_zero_point: InputZeroPoint::RunTime,
        b_zero_point: ZeroPoint::zero(),
    };
    let dyn_zp = g.node(dql).outputs[2];
    let mmi_rt = node(
        &mut g,
        "matmul_integer_run_time",
        mmi_run_time,
        vec![dyn_y, bq, dyn_zp],
    )?;
    let shape = node(&mut g, "shape", Op::Shape { start: 0, end: 4 }, vec![x])?;
    let idx = g.add_constant("gather.indices", Tensor::from_i64(&[2], vec![3, -1]))?;
    let gathered = node(&mut g, "gather", Op::Gather { axis: 1 }, vec![rm, idx])?;
    let fused = super::tests_fused::fused_ops(&mut g, x, dq)?;
    let mut outputs = vec![fc, qmm, mmi, qc, ci, dyn_y, mmi_rt, shape, gathered];
    outputs.extend(fused);
    g.set_outputs(outputs);
    g.verify()?;
    Ok(g)
}

pub(super) fn model(g: &Graph, opset: i64) -> GraphProto {
    let opts = ExportOptions {
        dynamic_batch: false,
        opset,
    };
    to_model_proto(g, &opts)
        .unwrap_or_else(|e| panic!("{e}"))
        .graph
        .expect("graph")
}

pub(super) fn find<'a>(gp: &'a GraphProto, name: &str) -> &'a NodeProto {
    gp.node
        .iter()
        .find(|n| n.name == name)
        .unwrap_or_else(|| panic!("no node {name}"))
}

fn init_i64(gp: &GraphProto, name: &str) -> Vec<i64> {
    let t = gp
        .initializer
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no initializer {name}"));
    assert_eq!(t.data_type, DataType::Int64 as i32, "{name}");
    t.raw_data
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

pub(super) fn attr_of<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

#[test]
fn attributes_that_onnx_passes_as_inputs_become_initializers() {
    let g = op_coverage_graph(true).expect("graph");
    let gp = model(&g, 13);
    let slice = find(&gp, "slice");
    assert_eq!(
        slice.input,
        [
            "pad",
            "slice.starts",
            "slice.ends",
            "slice.axes",
            "slice.steps"
        ]
    );
    assert_eq!(init_i64(&gp, "slice.ends"), [7]);
    assert_eq!(
        find(&gp, "pad").input,
        ["x", "pad.pads", "pad.constant_value"]
    );
    assert_eq!(init_i64(&gp, "split.split"), [3, 5]);
    assert_eq!(init_i64(&gp, "reshape.shape"), [0, 8, -1]);
    assert_eq!(init_i64(&gp, "unsqueeze.axes"), [1]);
    // Clip with only a max: the min input is skipped with an empty name.
    assert_eq!(find(&gp, "clip").input, ["conv", "", "clip.max"]);
    // ReduceMean keeps its axes attribute until opset 18.
    assert_eq!(
        attr_of(find(&gp, "reduce_mean"), "axes").map(|a| a.ints.clone()),
        Some(vec![2])
    );
    assert_eq!(find(&gp, "reduce_mean").input.len(), 1);
    let gp18 = model(&g, 18);
    assert_eq!(
        find(&gp18, "reduce_mean").input,
        ["softmax", "reduce_mean.axes"]
    );
    // Opset 11 takes Squeeze, Unsqueeze and Split parameters as attributes.
    let gp11 = model(&op_coverage_graph(false).expect("graph"), 11);
    assert_eq!(find(&gp11, "squeeze").input.len(), 1);
    assert_eq!(
        attr_of(find(&gp11, "squeeze"), "axes").map(|a| a.ints.clone()),
        Some(vec![1])
    );
    assert_eq!(
        attr_of(find(&gp11, "split"), "split").map(|a| a.ints.clone()),
        Some(vec![3, 5])
    );
}

#[test]
fn softmax_with_the_old_semantics_is_flatten_softmax_reshape_at_opset_13() {
    let g = op_coverage_graph(true).expect("graph");
    let gp = model(&g, 13);
    let ops: Vec<&str> = gp.node.iter().map(|n| n.op_type.as_str()).collect();
    let at = ops.iter().position(|&o| o == "Softmax").expect("a softmax");
    assert_eq!(
        &ops[at - 1..at + 3],
        ["Flatten", "Softmax", "Shape", "Reshape"]
    );
    assert_eq!(
        gp.node[at + 2].output[0],
        "softmax",
        "the reshape produces the IR's value"
    );
    assert_eq!(gp.node[at - 1].input[0], "squeeze");
    // At opset 11 the IR's semantics are ONNX's: one node.
    let gp11 = model(&op_coverage_graph(false).expect("graph"), 11);
    assert_eq!(
        gp11.node.iter().filter(|n| n.op_type == "Flatten").count(),
        0
    );
}

#[test]
fn quantization_parameters_are_typed_initializers() {
    let g = op_coverage_graph(true).expect("graph");
    let gp = model(&g, 13);
    let dq = find(&gp, "fc.dequantize");
    assert_eq!(
        dq.input,
        [
            "fc.weight_q",
            "fc.dequantize.scale",
            "fc.dequantize.zero_point"
        ]
    );
    assert_eq!(attr_of(dq, "axis").map(|a| a.i), Some(0));
    let zp = gp
        .initializer
        .iter()
        .find(|t| t.name == "fc.dequantize.zero_point")
        .expect("zp");
    assert_eq!(
        (zp.data_type, zp.dims.clone()),
        (DataType::Int8 as i32, vec![5])
    );
    let scale = gp
        .initializer
        .iter()
        .find(|t| t.name == "quantize.scale")
        .expect("scale");
    assert_eq!(
        (scale.dims.len(), scale.raw_data.clone()),
        (0, 0.002f32.to_le_bytes().to_vec())
    );
    let qc = find(&gp, "qlinear_conv");
    assert_eq!(qc.input.len(), 8);
    assert_eq!(qc.input[3], "qconv.weight");
    let ci = find(&gp, "conv_integer");
    let wzp = gp
        .initializer
        .iter()
        .find(|t| t.name == ci.input[3])
        .expect("w zero point");
    assert_eq!(
        (wzp.data_type, wzp.dims.len(), wzp.raw_data.clone()),
        (DataType::Uint8 as i32, 0, vec![3])
    );
    // Per-channel parameters do not exist before opset 13.
    let err = to_model_proto(
        &g,
        &ExportOptions {
            dynamic_batch: false,
            opset: 12,
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("per-channel"), "{err}");
}

#[test]
fn generated_names_never_collide_with_values() {
    let mut g = Graph::new("clash");
    let x = g
        .add_input("r.shape", TensorType::new(DType::F32, vec![2, 3]))
        .expect("input");
    let r = g
        .add_node(
            "r",
            Op::Reshape {
                shape: vec![3, 2],
                allow_zero: false,
            },
            vec![x],
            vec!["y".into()],
        )
        .expect("node");
    g.set_outputs(g.node(r).outputs.clone());
    let gp = model(&g, 13);
    assert_eq!(gp.node[0].input, ["r.shape", "r.shape_1"]);
    assert_eq!(init_i64(&gp, "r.shape_1"), [3, 2]);
}

#[test]
fn unsupported_opsets_and_ops_are_errors_naming_the_node() {
    let mut g = Graph::new("hs");
    let x = g
        .add_input("x", TensorType::new(DType::F32, vec![1, 4]))
        .expect("input");
    let n = g
        .add_node(
            "act",
            Op::Activation(Activation::HardSwish),
            vec![x],
            vec!["y".into()],
        )
        .expect("node");
    g.set_outputs(g.node(n).outputs.clone());
    let err = to_model_proto(&g, &ExportOptions::default()).unwrap_err();
    let ExportError::Unsupported {
        node, op, opset, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!((node.as_str(), *op, *opset), ("act", "HardSwish", 13));
    assert!(to_model_proto(
        &g,
        &ExportOptions {
            dynamic_batch: false,
            opset: 14
        }
    )
    .is_ok());
    assert!(matches!(
        to_model_proto(
            &g,
            &ExportOptions {
                dynamic_batch: false,
                opset: 10
            }
        ),
        Err(ExportError::Opset(10))
    ));
}

#[test]
fn graph_inputs_and_outputs_carry_types_and_the_batch_choice() {
    let g = op_coverage_graph(true).expect("graph");
    for dynamic_batch in [false, true] {
        let m = to_model_proto(
            &g,
            &ExportOptions {
                dynamic_batch,
                opset: 13,
            },
        )
        .expect("model");
        assert_eq!(
            (
                m.ir_version,
                m.opset_import[0].version,
                m.opset_import[0].domain.as_str()
            ),
            (8, 13, "")
        );
        let gp = m.graph.expect("graph");
        assert_eq!(gp.output.len(), g.outputs().len());
        let Some(type_proto::Value::TensorType(t)) =
            gp.input[0].r#type.clone().and_then(|t| t.value)
        else {
            panic!("input without a tensor type")
        };
        let first = t.shape.expect("shape").dim[0].value.clone();
        let want = if dynamic_batch {
            dimension::Value::DimParam("N".into())
        } else {
            dimension::Value::DimValue(1)
        };
        assert_eq!(first, Some(want));
        let Some(type_proto::Value::TensorType(t)) =
            gp.output[2].r#type.clone().and_then(|t| t.value)
        else {
            panic!("output without a tensor type")
        };
        assert_eq!(
            t.elem_type,
            DataType::Float as i32,
            "the cast of MatMulInteger's i32"
        );
    }
}

/// The op-coverage model, exported and run by onnxruntime (from the project's venv, which
/// `scripts/setup-venv.sh` makes), agrees with the interpreter on the original graph: integer
/// outputs exactly, float outputs to 1e-5 relative.
#[test]
fn op_coverage_model_matches_onnxruntime() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-venv.sh",
        python.display()
    );
    let dir = std::env::temp_dir().join(format!("qcc-export-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the directory");
    let g = op_coverage_graph(true).expect("graph");
    write_model(&g, &ExportOptions::default(), &dir.join("ops.onnx")).expect("write");
    let x = Tensor::from_f32(&[1, 4, 6, 6], pseudo_random(144, 5));
    crate::npy::write(&dir.join("x.npy"), &x).expect("write x");
    let status = std::process::Command::new(&python)
        .arg(root.join("scripts/ort_run.py"))
        .arg(dir.join("ops.onnx"))
        .args(["--input", &format!("x={}", dir.join("x.npy").display())])
        .arg("--output-dir")
        .arg(dir.join("ort"))
        .status()
        .expect("run python");
    assert!(
        status.success(),
        "onnxruntime failed on the op-coverage model"
    );
    let inputs = std::collections::HashMap::from([("x".to_string(), x)]);
    let outs = qcc_ir::eval::run(&g, &inputs).expect("interpreter");
    for (&id, ours) in g.outputs().iter().zip(&outs) {
        let name = &g.value(id).name;
        let theirs = crate::npy::read(&dir.join("ort").join(crate::npy::file_name_for(name)))
            .expect("onnxruntime output");
        assert_eq!(theirs.ty(), ours.ty(), "output {name}");
        let (a, b) = (ours.to_f64_vec(), theirs.to_f64_vec());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let tol = if ours.dtype().is_float() {
                1e-5 * y.abs().max(1.0)
            } else {
                0.0
            };
            assert!(
                (x - y).abs() <= tol,
                "output {name}[{i}]: qcc {x}, onnxruntime {y}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn realized_int8_ops_are_export_errors_naming_the_op() {
    let mut g = Graph::new("realized");
    let a = g
        .add_input("a", TensorType::new(DType::U8, vec![2, 3]))
        .expect("input");
    let b = g
        .add_constant("b", int8(&[3, 2], vec![1, -2, 3, -4, 5, -6]))
        .expect("constant");
    let op = Op::QuantizedMatMul {
        a: qp(DType::U8, 0.5, 128),
        b: qp(DType::I8, 0.25, 0),
        y: qp(DType::I8, 1.0, 0),
        clamp: None,
    };
    let n = g
        .add_node("fc", op, vec![a, b], vec!["y".into()])
        .expect("node");
    g.set_outputs(g.node(n).outputs.clone());
    let err = to_model_proto(&g, &ExportOptions::default()).unwrap_err();
    let ExportError::Unsupported { node, op, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!((node.as_str(), *op), ("fc", "QuantizedMatMul"));
    assert!(err.to_string().contains("QDQ"), "{err}");
}
