//! Importer tests for the quantization ops: parameters per tensor and per channel, default
//! zero points, and the integer ops.

use super::tests::*;
use super::tests_ops::single;
use super::*;
use crate::onnx::proto::{DataType, TensorProto};
use qcc_ir::{InputZeroPoint, Op, QParams, ZeroPoint};

#[test]
fn quantize_and_dequantize_parameters() {
    let scale = init_f32("s", &[], &[0.5]);
    let zp = init_i8("z", &[], &[-3]);
    let g = single(
        13,
        node("QuantizeLinear", &["x", "s", "z"], &["y"], vec![]),
        &[2, 3],
        vec![scale.clone(), zp],
    )
    .unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::QuantizeLinear(QParams::per_tensor(DType::I8, 0.5, -3).unwrap())
    );
    // No zero point: u8, or opset 21's output_dtype.
    let g = single(
        13,
        node("QuantizeLinear", &["x", "s"], &["y"], vec![]),
        &[2, 3],
        vec![scale.clone()],
    )
    .unwrap();
    assert_eq!(output_type(&g, 0).dtype, DType::U8);
    let n = node(
        "QuantizeLinear",
        &["x", "s"],
        &["y"],
        vec![attr_i("output_dtype", DataType::Int8 as i64)],
    );
    assert_eq!(
        output_type(&single(21, n, &[2, 3], vec![scale.clone()]).unwrap(), 0).dtype,
        DType::I8
    );
    // Per axis.
    let scales = init_f32("s3", &[3], &[0.1, 0.2, 0.4]);
    let zps = init_u8("z3", &[3], &[1, 2, 3]);
    let n = node(
        "QuantizeLinear",
        &["x", "s3", "z3"],
        &["y"],
        vec![attr_i("axis", -1)],
    );
    let g = single(13, n, &[2, 3], vec![scales, zps]).unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::QuantizeLinear(
            QParams::per_channel(DType::U8, 1, vec![0.1, 0.2, 0.4], vec![1, 2, 3]).unwrap()
        )
    );
    let n = node(
        "QuantizeLinear",
        &["x", "s"],
        &["y"],
        vec![attr_i("block_size", 2)],
    );
    assert!(matches!(
        single(21, n, &[2, 3], vec![scale.clone()]),
        Err(ImportError::Unsupported(_))
    ));

    // DequantizeLinear: the zero point defaults to the input's type; i32 input has zp 0.
    for (dtype, want) in [(DataType::Int8, DType::I8), (DataType::Int32, DType::I32)] {
        let m = model(
            13,
            vec![node("DequantizeLinear", &["q", "s"], &["y"], vec![])],
            vec![info("q", dtype, &[4])],
            vec![out("y")],
            vec![scale.clone()],
        );
        let g = import(&m).unwrap();
        assert_eq!(
            output_op(&g, 0),
            Op::DequantizeLinear(QParams::per_tensor(want, 0.5, 0).unwrap())
        );
    }
}

#[test]
fn qlinear_and_integer_ops() {
    let m = model(
        10,
        vec![node(
            "QLinearConv",
            &["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"],
            &["y"],
            vec![attr_ints("pads", &[1, 1, 1, 1])],
        )],
        vec![info("x", DataType::Uint8, &[1, 2, 4, 4])],
        vec![info("y", DataType::Uint8, &[1, 3, 4, 4])],
        vec![
            init_f32("xs", &[], &[0.1]),
            init_u8("xz", &[], &[128]),
            init_i8("w", &[3, 2, 3, 3], &[1; 54]),
            init_f32("ws", &[3], &[0.1, 0.2, 0.3]),
            init_i8("wz", &[3], &[0, 0, 0]),
            init_f32("ys", &[], &[0.2]),
            init_u8("yz", &[], &[10]),
            TensorProto {
                int32_data: vec![1, 2, 3],
                ..tensor("b", DataType::Int32, &[3])
            },
        ],
    );
    let g = import(&m).unwrap();
    let Op::QLinearConv { w, y, .. } = output_op(&g, 0) else {
        panic!()
    };
    assert_eq!((w.axis(), y.zero_points()), (Some(0), &[10][..]));

    let m = model(
        10,
        vec![node(
            "MatMulInteger",
            &["a", "b", "az", "bz"],
            &["y"],
            vec![],
        )],
        vec![info("a", DataType::Uint8, &[2, 3])],
        vec![info("y", DataType::Int32, &[2, 4])],
        vec![
            init_u8("b", &[3, 4], &[1; 12]),
            init_u8("az", &[], &[3]),
            init_u8("bz", &[4], &[1, 2, 3, 4]),
        ],
    );
    let g = import(&m).unwrap();
    let Op::MatMulInteger {
        a_zero_point,
        b_zero_point,
    } = output_op(&g, 0)
    else {
        panic!()
    };
    assert_eq!(
        a_zero_point,
        InputZeroPoint::Constant(ZeroPoint {
            axis: None,
            values: vec![3]
        })
    );
    assert_eq!(
        b_zero_point,
        ZeroPoint {
            axis: Some(1),
            values: vec![1, 2, 3, 4]
        }
    );

    let m = model(
        10,
        vec![node("ConvInteger", &["x", "w", "", "wz"], &["y"], vec![])],
        vec![info("x", DataType::Uint8, &[1, 2, 3, 3])],
        vec![info("y", DataType::Int32, &[1, 2, 1, 1])],
        vec![
            init_u8("w", &[2, 2, 3, 3], &[1; 36]),
            init_u8("wz", &[2], &[5, 6]),
        ],
    );
    let Op::ConvInteger {
        x_zero_point,
        w_zero_point,
        ..
    } = output_op(&import(&m).unwrap(), 0)
    else {
        panic!()
    };
    assert_eq!(
        (x_zero_point, w_zero_point.axis),
        (InputZeroPoint::Constant(ZeroPoint::zero()), Some(0))
    );

    let m = model(
        11,
        vec![node(
            "DynamicQuantizeLinear",
            &["x"],
            &["y", "ys", "yz"],
            vec![],
        )],
        vec![info("x", DataType::Float, &[4])],
        vec![out("y"), out("ys"), out("yz")],
        vec![],
    );
    let g = import(&m).unwrap();
    assert_eq!(output_type(&g, 2), TensorType::new(DType::U8, vec![]));
}

/// onnxruntime's `quantize_dynamic` form: the input's zero point comes from a
/// DynamicQuantizeLinear, so ConvInteger reads it at run time as its third input; the
/// weight's zero point must still be a constant.
#[test]
fn conv_integer_with_the_zero_point_of_a_dynamic_quantize_linear() {
    let conv_model = |w_zero_point: &str| {
        model(
            11,
            vec![
                node("DynamicQuantizeLinear", &["x"], &["xq", "xs", "xz"], vec![]),
                node(
                    "ConvInteger",
                    &["xq", "w", "xz", w_zero_point],
                    &["y"],
                    vec![],
                ),
            ],
            vec![info("x", DataType::Float, &[1, 2, 3, 3])],
            vec![info("y", DataType::Int32, &[1, 2, 1, 1])],
            vec![
                init_u8("w", &[2, 2, 3, 3], &[1; 36]),
                init_u8("wz", &[], &[7]),
            ],
        )
    };
    let g = import(&conv_model("wz")).unwrap();
    let Op::ConvInteger {
        x_zero_point,
        w_zero_point,
        ..
    } = output_op(&g, 0)
    else {
        panic!()
    };
    assert_eq!(x_zero_point, InputZeroPoint::RunTime);
    assert_eq!(w_zero_point.values, [7]);
    let node_inputs = |g: &qcc_ir::Graph| match g.value(g.outputs()[0]).def {
        qcc_ir::ValueDef::Node { node, .. } => g.node(node).inputs.len(),
        _ => 0,
    };
    assert_eq!(node_inputs(&g), 3);
    // A run-time weight zero point is refused, naming the node and the input.
    let err = import(&conv_model("xz")).unwrap_err().to_string();
    assert!(
        err.contains("ConvInteger") && err.contains("w_zero_point"),
        "{err}"
    );
}
