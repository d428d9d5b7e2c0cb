//! Per-op importer tests, especially the forms that differ between opsets.

use super::tests::*;
use super::*;
use crate::onnx::proto::{DataType, TensorProto};
use qcc_ir::{Activation, Op, Padding};

/// One node on one f32 input of `dims`, with extra initializers.
pub(super) fn single(
    opset: i64,
    n: crate::onnx::proto::NodeProto,
    dims: &[i64],
    inits: Vec<TensorProto>,
) -> Result<Graph, ImportError> {
    let outs: Vec<_> = n
        .output
        .iter()
        .filter(|o| !o.is_empty())
        .map(|o| out(o))
        .collect();
    import(&model(
        opset,
        vec![n],
        vec![info("x", DataType::Float, dims)],
        outs,
        inits,
    ))
}

#[test]
fn reshape_takes_its_shape_from_a_shape_gather_unsqueeze_concat_chain() {
    // PyTorch's x.view(x.size(0), -1).
    let m = model(
        11,
        vec![
            node("Shape", &["x"], &["s"], vec![]),
            node("Gather", &["s", "zero"], &["n"], vec![attr_i("axis", 0)]),
            node("Unsqueeze", &["n"], &["n1"], vec![attr_ints("axes", &[0])]),
            node(
                "Concat",
                &["n1", "minus_one"],
                &["shape"],
                vec![attr_i("axis", 0)],
            ),
            node("Reshape", &["x", "shape"], &["y"], vec![]),
        ],
        vec![info("x", DataType::Float, &[-1, 3, 2, 2])],
        vec![info("y", DataType::Float, &[2, 12])],
        vec![
            init_i64("zero", &[], &[0]),
            init_i64("minus_one", &[1], &[-1]),
        ],
    );
    let opts = ImportOptions {
        batch: 2,
        ..Default::default()
    };
    let g = import_bytes(&prost::Message::encode_to_vec(&m), None, &opts).unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::Reshape {
            shape: vec![2, -1],
            allow_zero: false
        }
    );
}

#[test]
fn softmax_axis_and_coercion_depend_on_the_opset() {
    let g = single(
        11,
        node("Softmax", &["x"], &["y"], vec![]),
        &[2, 3, 4],
        vec![],
    )
    .unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::Softmax {
            axis: 1,
            coerce_2d: true
        }
    );
    let g = single(
        13,
        node("Softmax", &["x"], &["y"], vec![]),
        &[2, 3, 4],
        vec![],
    )
    .unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::Softmax {
            axis: 2,
            coerce_2d: false
        }
    );
    let g = single(
        13,
        node("Softmax", &["x"], &["y"], vec![attr_i("axis", -2)]),
        &[2, 3, 4],
        vec![],
    )
    .unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::Softmax {
            axis: 1,
            coerce_2d: false
        }
    );
    assert!(single(
        13,
        node("Softmax", &["x"], &["y"], vec![attr_i("axis", 3)]),
        &[2, 3, 4],
        vec![]
    )
    .is_err());
}

#[test]
fn split_sizes_come_from_attribute_input_or_equal_parts() {
    let split = |opset, inputs: &[&str], attrs, inits| {
        let g = single(
            opset,
            node("Split", inputs, &["a", "b"], attrs),
            &[2, 6],
            inits,
        )
        .unwrap();
        output_op(&g, 0)
    };
    let want = Op::Split {
        axis: 1,
        sizes: vec![2, 4],
    };
    assert_eq!(
        split(
            11,
            &["x"],
            vec![attr_i("axis", 1), attr_ints("split", &[2, 4])],
            vec![]
        ),
        want
    );
    assert_eq!(
        split(
            13,
            &["x", "sp"],
            vec![attr_i("axis", -1)],
            vec![init_i64("sp", &[2], &[2, 4])]
        ),
        want
    );
    assert_eq!(
        split(13, &["x", ""], vec![attr_i("axis", 1)], vec![]),
        Op::Split {
            axis: 1,
            sizes: vec![3, 3]
        }
    );
    // Opset 18: num_outputs, the last part smaller when uneven.
    let n = node(
        "Split",
        &["x"],
        &["a", "b", "c", "d"],
        vec![attr_i("axis", 1), attr_i("num_outputs", 4)],
    );
    let g = single(18, n, &[2, 6], vec![]).unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::Split {
            axis: 1,
            sizes: vec![2, 2, 2, 0]
        }
    );
    let n = node(
        "Split",
        &["x"],
        &["a", "b", "c", "d"],
        vec![attr_i("axis", 1)],
    );
    assert!(
        single(13, n, &[2, 6], vec![]).is_err(),
        "6 does not split evenly in 4"
    );
    // An omitted output gets a generated name.
    let g = single(
        13,
        node("Split", &["x"], &["a", ""], vec![attr_i("axis", 1)]),
        &[2, 6],
        vec![],
    )
    .unwrap();
    assert_eq!(g.node_count(), 1);
}

#[test]
fn clip_bounds_come_from_attributes_or_known_inputs() {
    let g = single(
        6,
        node(
            "Clip",
            &["x"],
            &["y"],
            vec![attr_f("min", 0.0), attr_f("max", 6.0)],
        ),
        &[3],
        vec![],
    )
    .unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::Activation(Activation::Clip { min: 0.0, max: 6.0 })
    );
    let g = single(
        13,
        node("Clip", &["x", "lo", "hi"], &["y"], vec![]),
        &[3],
        vec![init_f32("lo", &[], &[-1.0]), init_f32("hi", &[], &[1.0])],
    )
    .unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::Activation(Activation::Clip {
            min: -1.0,
            max: 1.0
        })
    );
    let g = single(
        13,
        node("Clip", &["x", "", "hi"], &["y"], vec![]),
        &[3],
        vec![init_f32("hi", &[], &[1.0])],
    )
    .unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::Activation(Activation::Clip {
            min: f32::NEG_INFINITY,
            max: 1.0
        })
    );
    let g = single(13, node("Clip", &["x"], &["y"], vec![]), &[3], vec![]).unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::Activation(Activation::Clip {
            min: f32::NEG_INFINITY,
            max: f32::INFINITY
        })
    );
    // A bound that is a runtime input cannot become an attribute.
    let m = model(
        13,
        vec![node("Clip", &["x", "lo"], &["y"], vec![])],
        vec![
            info("x", DataType::Float, &[3]),
            info("lo", DataType::Float, &[]),
        ],
        vec![out("y")],
        vec![],
    );
    let e = import(&m).unwrap_err().to_string();
    assert!(e.contains("Clip") && e.contains("'lo'"), "{e}");
}

#[test]
fn squeeze_and_unsqueeze_normalise_axes_against_the_right_rank() {
    let g = single(
        11,
        node("Squeeze", &["x"], &["y"], vec![attr_ints("axes", &[-1, 0])]),
        &[1, 3, 1],
        vec![],
    )
    .unwrap();
    assert_eq!(output_op(&g, 0), Op::Squeeze { axes: vec![0, 2] });
    let g = single(
        13,
        node("Squeeze", &["x", "ax"], &["y"], vec![]),
        &[1, 3, 1],
        vec![init_i64("ax", &[1], &[-3])],
    )
    .unwrap();
    assert_eq!(output_op(&g, 0), Op::Squeeze { axes: vec![0] });
    // Unsqueeze axes index the output: rank 2 + 2 = 4, so -1 is 3.
    let g = single(
        13,
        node("Unsqueeze", &["x", "ax"], &["y"], vec![]),
        &[2, 3],
        vec![init_i64("ax", &[2], &[-1, 0])],
    )
    .unwrap();
    assert_eq!(output_op(&g, 0), Op::Unsqueeze { axes: vec![0, 3] });
    assert_eq!(output_type(&g, 0).dims(), &[1, 2, 3, 1]);
}

#[test]
fn conv_attributes_and_auto_pad() {
    let w = init_f32("w", &[4, 1, 3, 3], &[0.0; 36]);
    let conv = |attrs| {
        single(
            11,
            node("Conv", &["x", "w"], &["y"], attrs),
            &[1, 4, 8, 8],
            vec![w.clone()],
        )
    };
    let g = conv(vec![
        attr_i("group", 4),
        attr_s("auto_pad", "SAME_UPPER"),
        attr_ints("strides", &[2, 2]),
    ])
    .unwrap();
    let Op::Conv(c) = output_op(&g, 0) else {
        panic!()
    };
    assert_eq!(
        (c.kernel, c.group, c.padding),
        (vec![3, 3], 4, Padding::SameUpper)
    );
    assert_eq!(output_type(&g, 0).dims(), &[1, 4, 4, 4]);
    let g = conv(vec![
        attr_i("group", 4),
        attr_s("auto_pad", "VALID"),
        attr_ints("dilations", &[2, 2]),
    ])
    .unwrap();
    assert_eq!(output_type(&g, 0).dims(), &[1, 4, 4, 4]);
    let e = conv(vec![attr_i("group", 4), attr_ints("pads", &[1, 1])]).unwrap_err();
    assert!(
        matches!(e, ImportError::Attribute { ref attribute, .. } if attribute == "pads"),
        "{e}"
    );
    assert!(conv(vec![attr_i("group", 4), attr_s("auto_pad", "BOGUS")]).is_err());
}

#[test]
fn maxpool_indices_and_dropout_mask() {
    let pool = node(
        "MaxPool",
        &["x"],
        &["y", "idx"],
        vec![attr_ints("kernel_shape", &[2, 2])],
    );
    // Indices named but unread: fine. Read: refused.
    assert!(
        single(11, pool.clone(), &[1, 1, 4, 4], vec![]).is_err(),
        "graph output 'idx' reads the indices"
    );
    let m = model(
        11,
        vec![pool],
        vec![info("x", DataType::Float, &[1, 1, 4, 4])],
        vec![out("y")],
        vec![],
    );
    assert_eq!(output_type(&import(&m).unwrap(), 0).dims(), &[1, 1, 3, 3]);

    let m = model(
        9,
        vec![node(
            "Dropout",
            &["x"],
            &["y", "mask"],
            vec![attr_f("ratio", 0.3)],
        )],
        vec![info("x", DataType::Float, &[3])],
        vec![out("y")],
        vec![],
    );
    assert_eq!(
        output_op(&import(&m).unwrap(), 0),
        Op::Dropout { mask_output: false }
    );
    let m = model(
        12,
        vec![node("Dropout", &["x"], &["y", "mask"], vec![])],
        vec![info("x", DataType::Float, &[3])],
        vec![out("y"), out("mask")],
        vec![],
    );
    assert_eq!(
        output_op(&import(&m).unwrap(), 0),
        Op::Dropout { mask_output: true }
    );
    let train = TensorProto {
        int32_data: vec![1],
        ..tensor("t", DataType::Bool, &[])
    };
    let n = node("Dropout", &["x", "", "t"], &["y"], vec![]);
    assert!(single(12, n, &[3], vec![train]).is_err());
}

#[test]
fn batch_norm_training_is_refused() {
    let inits = ["s", "b", "m", "v"]
        .map(|n| init_f32(n, &[2], &[1.0, 1.0]))
        .to_vec();
    let bn = |attrs, outs: &[&str]| {
        node(
            "BatchNormalization",
            &["x", "s", "b", "m", "v"],
            outs,
            attrs,
        )
    };
    let g = single(
        9,
        bn(vec![attr_f("epsilon", 1e-3)], &["y"]),
        &[1, 2, 3, 3],
        inits.clone(),
    )
    .unwrap();
    assert_eq!(output_op(&g, 0), Op::BatchNorm { epsilon: 1e-3 });
    assert!(matches!(
        single(
            15,
            bn(vec![attr_i("training_mode", 1)], &["y"]),
            &[1, 2, 3, 3],
            inits.clone()
        ),
        Err(ImportError::Unsupported(_))
    ));
    assert!(matches!(
        single(9, bn(vec![], &["y", "mean"]), &[1, 2, 3, 3], inits),
        Err(ImportError::Unsupported(_))
    ));
}

#[test]
fn pad_forms_across_opsets() {
    let g = single(
        2,
        node(
            "Pad",
            &["x"],
            &["y"],
            vec![attr_ints("pads", &[0, 1, 0, 2]), attr_f("value", 1.5)],
        ),
        &[2, 3],
        vec![],
    )
    .unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::Pad {
            pads: vec![0, 1, 0, 2],
            value: 1.5
        }
    );
    let inits = vec![
        init_i64("p", &[4], &[1, 0, 1, 0]),
        init_f32("v", &[], &[2.0]),
    ];
    let g = single(
        13,
        node("Pad", &["x", "p", "v"], &["y"], vec![]),
        &[2, 3],
        inits,
    )
    .unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::Pad {
            pads: vec![1, 0, 1, 0],
            value: 2.0
        }
    );
    let inits = vec![init_i64("p", &[2], &[1, 3]), init_i64("ax", &[1], &[-1])];
    let g = single(
        18,
        node("Pad", &["x", "p", "", "ax"], &["y"], vec![]),
        &[2, 3],
        inits,
    )
    .unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::Pad {
            pads: vec![0, 1, 0, 3],
            value: 0.0
        }
    );
    let e = single(
        13,
        node("Pad", &["x", "p"], &["y"], vec![attr_s("mode", "edge")]),
        &[2, 3],
        vec![init_i64("p", &[4], &[0; 4])],
    )
    .unwrap_err();
    assert!(e.to_string().contains("'edge'"), "{e}");
}

#[test]
fn slice_attributes_and_inputs() {
    let g = single(
        9,
        node(
            "Slice",
            &["x"],
            &["y"],
            vec![
                attr_ints("starts", &[1]),
                attr_ints("ends", &[3]),
                attr_ints("axes", &[-1]),
            ],
        ),
        &[2, 4],
        vec![],
    )
    .unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::Slice {
            starts: vec![1],
            ends: vec![3],
            axes: vec![1],
            steps: vec![1]
        }
    );
    let inits = vec![
        init_i64("st", &[2], &[0, -1]),
        init_i64("en", &[2], &[1, i64::MIN]),
        init_i64("sp", &[2], &[1, -2]),
    ];
    let g = single(
        13,
        node("Slice", &["x", "st", "en", "", "sp"], &["y"], vec![]),
        &[2, 4],
        inits,
    )
    .unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::Slice {
            starts: vec![0, -1],
            ends: vec![1, i64::MIN],
            axes: vec![0, 1],
            steps: vec![1, -2]
        }
    );
    assert_eq!(output_type(&g, 0).dims(), &[1, 2]);
}

#[test]
fn shape_gather_cast_reduce_and_constants() {
    let g = single(
        15,
        node(
            "Shape",
            &["x"],
            &["y"],
            vec![attr_i("start", -2), attr_i("end", 100)],
        ),
        &[2, 3, 4],
        vec![],
    )
    .unwrap();
    assert_eq!(output_op(&g, 0), Op::Shape { start: 1, end: 3 });
    let g = single(
        13,
        node(
            "Cast",
            &["x"],
            &["y"],
            vec![attr_i("to", DataType::Float16 as i64)],
        ),
        &[2],
        vec![],
    )
    .unwrap();
    assert_eq!(output_type(&g, 0).dtype, DType::F16);
    let e = single(
        13,
        node(
            "Cast",
            &["x"],
            &["y"],
            vec![attr_i("to", DataType::Double as i64)],
        ),
        &[2],
        vec![],
    )
    .unwrap_err();
    assert!(e.to_string().contains("DOUBLE"), "{e}");
    let g = single(
        13,
        node(
            "ReduceMean",
            &["x"],
            &["y"],
            vec![attr_ints("axes", &[-1, 1]), attr_i("keepdims", 0)],
        ),
        &[2, 3, 4],
        vec![],
    )
    .unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::ReduceMean {
            axes: vec![1, 2],
            keep_dims: false
        }
    );
    let g = single(
        18,
        node(
            "ReduceMean",
            &["x"],
            &["y"],
            vec![attr_i("noop_with_empty_axes", 1)],
        ),
        &[2, 3],
        vec![],
    )
    .unwrap();
    assert_eq!(output_op(&g, 0), Op::Identity);
    let g = single(
        11,
        node("Gather", &["x", "i"], &["y"], vec![attr_i("axis", -1)]),
        &[2, 3],
        vec![init_i64("i", &[2], &[0, 2])],
    )
    .unwrap();
    assert_eq!(output_type(&g, 0).dims(), &[2, 2]);

    let value = TensorProto {
        int32_data: vec![7],
        ..tensor("v", DataType::Int32, &[1])
    };
    let m = model(
        13,
        vec![
            node(
                "Constant",
                &[],
                &["c"],
                vec![attr_ints("value_ints", &[2, 3])],
            ),
            node(
                "ConstantOfShape",
                &["c"],
                &["y"],
                vec![attr_t("value", value)],
            ),
            node("Constant", &[], &["f"], vec![attr_f("value_float", 0.5)]),
        ],
        vec![],
        vec![out("y"), out("f")],
        vec![],
    );
    let g = import(&m).unwrap();
    assert_eq!(output_type(&g, 0), TensorType::new(DType::I32, vec![2, 3]));
    assert_eq!(g.constant(g.outputs()[1]), Some(&Tensor::scalar_f32(0.5)));
    let mut sparse = node("Constant", &[], &["s"], vec![]);
    sparse.attribute.push(AttributeProto {
        name: "sparse_value".into(),
        r#type: AttributeType::SparseTensor as i32,
        ..Default::default()
    });
    assert!(matches!(
        import(&model(13, vec![sparse], vec![], vec![out("s")], vec![])),
        Err(ImportError::Unsupported(_))
    ));
}
use crate::onnx::proto::{AttributeProto, AttributeType};

#[test]
fn flatten_transpose_gemm() {
    let g = single(
        13,
        node("Flatten", &["x"], &["y"], vec![attr_i("axis", -1)]),
        &[2, 3, 4],
        vec![],
    )
    .unwrap();
    assert_eq!(output_type(&g, 0).dims(), &[6, 4]);
    let g = single(
        13,
        node("Transpose", &["x"], &["y"], vec![]),
        &[2, 3, 4],
        vec![],
    )
    .unwrap();
    assert_eq!(
        output_op(&g, 0),
        Op::Transpose {
            perm: vec![2, 1, 0]
        }
    );
    let inits = vec![init_f32("b", &[5, 3], &[0.0; 15])];
    let g = single(
        13,
        node(
            "Gemm",
            &["x", "b", ""],
            &["y"],
            vec![attr_i("transB", 1), attr_f("alpha", 2.0)],
        ),
        &[2, 3],
        inits,
    )
    .unwrap();
    assert_eq!(output_type(&g, 0).dims(), &[2, 5]);
}

#[test]
fn same_padding_of_an_empty_spatial_dim_is_an_error_not_a_panic() {
    let w = init_f32("w", &[1, 1, 3, 3], &[0.0; 9]);
    let n = node(
        "Conv",
        &["x", "w"],
        &["y"],
        vec![attr_s("auto_pad", "SAME_UPPER")],
    );
    assert!(single(11, n, &[1, 1, 0, 4], vec![w]).is_err());
}
