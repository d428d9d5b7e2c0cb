//! Importer tests: model-level behaviour (storage forms, dtypes, external data, diagnostics,
//! robustness against corrupt files). Per-op tests live in `tests_ops`.

use super::*;
use crate::onnx::proto::tensor_shape_proto::{dimension, Dimension};
use crate::onnx::proto::{
    AttributeProto, AttributeType, DataLocation, DataType, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto,
};
use prost::Message;
use qcc_ir::{Op, ValueDef};

// ---- builders shared with tests_ops ----

pub(super) fn attr_i(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Int as i32,
        i,
        ..Default::default()
    }
}
pub(super) fn attr_f(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Float as i32,
        f,
        ..Default::default()
    }
}
pub(super) fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Ints as i32,
        ints: ints.to_vec(),
        ..Default::default()
    }
}
pub(super) fn attr_s(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::String as i32,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}
pub(super) fn attr_t(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: AttributeType::Tensor as i32,
        t: Some(t),
        ..Default::default()
    }
}

pub(super) fn node(
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    attribute: Vec<AttributeProto>,
) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: format!("{op}:{}", outputs.first().copied().unwrap_or("")),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute,
        ..Default::default()
    }
}

/// A tensor value declaration; a negative dim is the symbolic batch "N".
pub(super) fn info(name: &str, elem: DataType, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(if d < 0 {
                dimension::Value::DimParam("N".into())
            } else {
                dimension::Value::DimValue(d)
            }),
            denotation: String::new(),
        })
        .collect();
    let tensor = type_proto::Tensor {
        elem_type: elem as i32,
        shape: Some(TensorShapeProto { dim }),
    };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            denotation: String::new(),
        }),
        ..Default::default()
    }
}

/// An output declared by name only (no type to check).
pub(super) fn out(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        ..Default::default()
    }
}

pub(super) fn tensor(name: &str, dtype: DataType, dims: &[i64]) -> TensorProto {
    TensorProto {
        name: name.into(),
        data_type: dtype as i32,
        dims: dims.to_vec(),
        ..Default::default()
    }
}
pub(super) fn init_f32(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..tensor(name, DataType::Float, dims)
    }
}
pub(super) fn init_i64(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    TensorProto {
        int64_data: data.to_vec(),
        ..tensor(name, DataType::Int64, dims)
    }
}
pub(super) fn init_u8(name: &str, dims: &[i64], data: &[u8]) -> TensorProto {
    TensorProto {
        raw_data: data.to_vec(),
        ..tensor(name, DataType::Uint8, dims)
    }
}
pub(super) fn init_i8(name: &str, dims: &[i64], data: &[i8]) -> TensorProto {
    TensorProto {
        int32_data: data.iter().map(|&v| v as i32).collect(),
        ..tensor(name, DataType::Int8, dims)
    }
}

pub(super) fn model(
    opset: i64,
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
) -> ModelProto {
    let graph = GraphProto {
        name: "test".into(),
        node: nodes,
        input: inputs,
        output: outputs,
        initializer: inits,
        ..Default::default()
    };
    ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opset,
        }],
        graph: Some(graph),
        ..Default::default()
    }
}

pub(super) fn import(m: &ModelProto) -> Result<Graph, ImportError> {
    import_bytes(&m.encode_to_vec(), None, &ImportOptions::default())
}

pub(super) fn output_type(g: &Graph, i: usize) -> TensorType {
    g.value(g.outputs()[i]).ty.clone()
}

/// The op of the node producing graph output `i`.
pub(super) fn output_op(g: &Graph, i: usize) -> Op {
    match g.value(g.outputs()[i]).def {
        ValueDef::Node { node, .. } => g.node(node).op.clone(),
        ref other => panic!("output {i} is not a node output: {other:?}"),
    }
}

/// Relu of one f32 input: the smallest valid model.
fn relu_model() -> ModelProto {
    model(
        13,
        vec![node("Relu", &["x"], &["y"], vec![])],
        vec![info("x", DataType::Float, &[-1, 3])],
        vec![info("y", DataType::Float, &[-1, 3])],
        vec![],
    )
}

// ---- tensors ----

#[test]
fn every_storage_form_decodes() {
    let raw = init_f32("raw", &[2], &[1.5, -2.0]);
    let floats = TensorProto {
        float_data: vec![1.5, -2.0],
        ..tensor("floats", DataType::Float, &[2])
    };
    let int32 = TensorProto {
        int32_data: vec![7, -9],
        ..tensor("int32", DataType::Int32, &[2])
    };
    let int64 = init_i64("int64", &[2], &[1 << 40, -3]);
    let raw_i64 = TensorProto {
        raw_data: [5i64, -6].iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..tensor("r", DataType::Int64, &[2])
    };
    assert_eq!(
        tensor_from_proto(&raw, None).unwrap(),
        Tensor::from_f32(&[2], vec![1.5, -2.0])
    );
    assert_eq!(
        tensor_from_proto(&floats, None).unwrap(),
        Tensor::from_f32(&[2], vec![1.5, -2.0])
    );
    assert_eq!(
        tensor_from_proto(&int32, None).unwrap().to_i64_vec(),
        Some(vec![7, -9])
    );
    assert_eq!(
        tensor_from_proto(&int64, None).unwrap(),
        Tensor::from_i64(&[2], vec![1 << 40, -3])
    );
    assert_eq!(
        tensor_from_proto(&raw_i64, None).unwrap(),
        Tensor::from_i64(&[2], vec![5, -6])
    );
    // A scalar has no dims and one element; an empty tensor has no data at all.
    let scalar = TensorProto {
        float_data: vec![4.0],
        ..tensor("s", DataType::Float, &[])
    };
    assert_eq!(
        tensor_from_proto(&scalar, None).unwrap(),
        Tensor::scalar_f32(4.0)
    );
    let empty = tensor("e", DataType::Float, &[0, 3]);
    assert_eq!(tensor_from_proto(&empty, None).unwrap().dims(), &[0, 3]);
}

#[test]
fn every_dtype_decodes_from_raw_and_typed_fields() {
    use half::f16;
    let h = [f16::from_f32(1.5), f16::from_f32(-0.25)];
    let cases: Vec<(TensorProto, TensorProto, Tensor)> = vec![
        (
            TensorProto {
                raw_data: h.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ..tensor("h", DataType::Float16, &[2])
            },
            TensorProto {
                int32_data: h.iter().map(|v| v.to_bits() as i32).collect(),
                ..tensor("h", DataType::Float16, &[2])
            },
            Tensor::F16(ndarray::arr1(&h).into_dyn()),
        ),
        (
            TensorProto {
                raw_data: vec![0x80, 0x7f],
                ..tensor("i8", DataType::Int8, &[2])
            },
            init_i8("i8", &[2], &[-128, 127]),
            Tensor::I8(ndarray::arr1(&[-128i8, 127]).into_dyn()),
        ),
        (
            init_u8("u8", &[2], &[0, 255]),
            TensorProto {
                int32_data: vec![0, 255],
                ..tensor("u8", DataType::Uint8, &[2])
            },
            Tensor::U8(ndarray::arr1(&[0u8, 255]).into_dyn()),
        ),
        (
            TensorProto {
                raw_data: [3i32, -4].iter().flat_map(|v| v.to_le_bytes()).collect(),
                ..tensor("i32", DataType::Int32, &[2])
            },
            TensorProto {
                int32_data: vec![3, -4],
                ..tensor("i32", DataType::Int32, &[2])
            },
            Tensor::I32(ndarray::arr1(&[3, -4]).into_dyn()),
        ),
        (
            TensorProto {
                raw_data: vec![1, 0],
                ..tensor("b", DataType::Bool, &[2])
            },
            TensorProto {
                int32_data: vec![1, 0],
                ..tensor("b", DataType::Bool, &[2])
            },
            Tensor::Bool(ndarray::arr1(&[true, false]).into_dyn()),
        ),
    ];
    for (raw, typed, want) in cases {
        assert_eq!(
            tensor_from_proto(&raw, None).unwrap(),
            want,
            "raw {}",
            raw.name
        );
        assert_eq!(
            tensor_from_proto(&typed, None).unwrap(),
            want,
            "typed {}",
            typed.name
        );
    }
}

#[test]
fn bad_tensors_are_named_errors() {
    let cases = [
        TensorProto {
            double_data: vec![1.0],
            ..tensor("dbl", DataType::Double, &[1])
        },
        TensorProto {
            int32_data: vec![1],
            ..tensor("i16", DataType::Int16, &[1])
        },
        TensorProto {
            data_type: 99,
            ..tensor("weird", DataType::Float, &[1])
        },
        TensorProto {
            float_data: vec![1.0],
            ..tensor("short", DataType::Float, &[2])
        },
        TensorProto {
            raw_data: vec![0; 7],
            ..tensor("raw7", DataType::Float, &[2])
        },
        TensorProto {
            int32_data: vec![300],
            ..tensor("i8big", DataType::Int8, &[1])
        },
        TensorProto {
            float_data: vec![1.0],
            ..tensor("neg", DataType::Float, &[-1])
        },
        TensorProto {
            raw_data: vec![0; 4],
            ..tensor("huge", DataType::Float, &[1 << 30, 1 << 30, 4])
        },
    ];
    for t in cases {
        let e = tensor_from_proto(&t, None).expect_err(&t.name).to_string();
        assert!(e.contains(&format!("'{}'", t.name)), "{e}");
    }
    let e = tensor_from_proto(&cases_double(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("DOUBLE"), "{e}");
}

fn cases_double() -> TensorProto {
    TensorProto {
        double_data: vec![1.0],
        ..tensor("d", DataType::Double, &[1])
    }
}

/// A unique scratch directory under the system temp dir.
fn scratch_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("qcc-import-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
use std::path::PathBuf;

fn external(name: &str, location: &str, offset: Option<u64>, length: Option<u64>) -> TensorProto {
    let mut entries = vec![StringStringEntryProto {
        key: "location".into(),
        value: location.into(),
    }];
    if let Some(o) = offset {
        entries.push(StringStringEntryProto {
            key: "offset".into(),
            value: o.to_string(),
        });
    }
    if let Some(l) = length {
        entries.push(StringStringEntryProto {
            key: "length".into(),
            value: l.to_string(),
        });
    }
    TensorProto {
        external_data: entries,
        data_location: DataLocation::External as i32,
        ..tensor(name, DataType::Float, &[2])
    }
}

#[test]
fn external_data_is_read_inside_the_model_directory_only() {
    let dir = scratch_dir("ext");
    let model_dir = dir.join("model");
    std::fs::create_dir_all(&model_dir).unwrap();
    let mut bytes = vec![0xAAu8; 4];
    bytes.extend([1.0f32, 2.0].iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(model_dir.join("weights.bin"), &bytes).unwrap();
    std::fs::write(dir.join("outside.bin"), &bytes).unwrap();

    let ok = external("w", "weights.bin", Some(4), Some(8));
    assert_eq!(
        tensor_from_proto(&ok, Some(&model_dir)).unwrap(),
        Tensor::from_f32(&[2], vec![1.0, 2.0])
    );
    let no_length = external("w", "./weights.bin", Some(4), None);
    assert_eq!(
        tensor_from_proto(&no_length, Some(&model_dir)).unwrap(),
        Tensor::from_f32(&[2], vec![1.0, 2.0])
    );

    let refused = [
        external(
            "abs",
            &model_dir.join("weights.bin").display().to_string(),
            Some(4),
            Some(8),
        ),
        external("up", "../outside.bin", Some(4), Some(8)),
        external("deep", "sub/../../outside.bin", Some(4), Some(8)),
        external("past_end", "weights.bin", Some(8), Some(8)),
        external("wrong_len", "weights.bin", Some(0), Some(12)),
        external("missing", "nope.bin", None, None),
    ];
    for t in &refused {
        let e = tensor_from_proto(t, Some(&model_dir)).expect_err(&t.name);
        assert!(
            matches!(e, ImportError::ExternalData { ref tensor, .. } if tensor == &t.name),
            "{e}"
        );
    }
    // A symlink inside the directory that points outside it is refused too.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.join("outside.bin"), model_dir.join("link.bin")).unwrap();
        let e = tensor_from_proto(
            &external("link", "link.bin", Some(4), Some(8)),
            Some(&model_dir),
        )
        .unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
    }
    // Without a directory (a model from memory) external data cannot be found.
    let e = tensor_from_proto(&ok, None).unwrap_err();
    assert!(matches!(e, ImportError::ExternalData { .. }), "{e}");

    // Through import_file: the base directory is the model file's.
    let m = model(
        13,
        vec![node("Add", &["x", "w"], &["y"], vec![])],
        vec![info("x", DataType::Float, &[2])],
        vec![out("y")],
        vec![ok.clone()],
    );
    let path = model_dir.join("m.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();
    let g = import_file(&path, &ImportOptions::default()).unwrap();
    assert_eq!(
        g.known_value(g.value_by_name("w").unwrap()),
        Some(&Tensor::from_f32(&[2], vec![1.0, 2.0]))
    );
    assert!(matches!(import(&m), Err(ImportError::ExternalData { .. })));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- model level ----

#[test]
fn imports_a_small_model_binding_the_batch() {
    let opts = ImportOptions {
        batch: 4,
        ..Default::default()
    };
    let g = import_bytes(&relu_model().encode_to_vec(), None, &opts).unwrap();
    assert_eq!(g.inputs().len(), 1);
    assert_eq!(
        g.inputs()[0].declared,
        vec![Dim::Symbolic("N".into()), Dim::Fixed(3)]
    );
    assert_eq!(output_type(&g, 0), TensorType::new(DType::F32, vec![4, 3]));
    let zero = ImportOptions {
        batch: 0,
        ..Default::default()
    };
    assert!(matches!(
        import_bytes(&relu_model().encode_to_vec(), None, &zero),
        Err(ImportError::Model(_))
    ));
}

#[test]
fn unsupported_nodes_are_all_listed_at_once() {
    let mut custom = node("FusedGemm", &["x"], &["b"], vec![]);
    custom.domain = "com.microsoft".into();
    let mut unnamed = node("Tile", &["b", "r"], &["c"], vec![]);
    unnamed.name = String::new();
    let m = ModelProto {
        opset_import: vec![
            OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            },
            OperatorSetIdProto {
                domain: "com.microsoft".into(),
                version: 1,
            },
        ],
        ..model(
            17,
            vec![
                node("Relu", &["x"], &["a"], vec![]),
                custom,
                unnamed,
                node("Pad", &["c", "p"], &["d"], vec![attr_s("mode", "reflect")]),
                node("Einsum", &["d"], &["e"], vec![]),
            ],
            vec![info("x", DataType::Float, &[2])],
            vec![out("e")],
            vec![],
        )
    };
    let Err(ImportError::Unsupported(list)) = import(&m) else {
        panic!("expected the unsupported-node error")
    };
    let got: Vec<(&str, &str, &str, i64)> = list
        .iter()
        .map(|u| {
            (
                u.name.as_str(),
                u.op_type.as_str(),
                u.domain.as_str(),
                u.opset,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("FusedGemm:b", "FusedGemm", "com.microsoft", 1),
            ("Tile_2", "Tile", "", 17),
            ("Pad:d", "Pad", "", 17),
            ("Einsum:e", "Einsum", "", 17)
        ]
    );
    let text = ImportError::Unsupported(list).to_string();
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(
        text.contains("node 'FusedGemm:b': op FusedGemm (domain com.microsoft, opset 1)"),
        "{text}"
    );
    assert!(text.contains("'reflect'"), "{text}");
}

#[test]
fn initializers_shadow_inputs_and_supplied_values_fill_static_slots() {
    // "w" is both an input and an initializer (old IR): a constant. "shape" feeds Reshape's
    // static slot and gets its value from the options; "x" stays an input even if supplied.
    let m = model(
        13,
        vec![
            node("Add", &["x", "w"], &["s"], vec![]),
            node("Reshape", &["s", "shape"], &["y"], vec![]),
        ],
        vec![
            info("x", DataType::Float, &[2, 3]),
            info("w", DataType::Float, &[3]),
            info("shape", DataType::Int64, &[1]),
        ],
        vec![info("y", DataType::Float, &[6])],
        vec![init_f32("w", &[3], &[1.0, 2.0, 3.0])],
    );
    let e = import(&m).unwrap_err().to_string();
    assert!(e.contains("shape") && e.contains("constant"), "{e}");
    let mut opts = ImportOptions::default();
    opts.input_values
        .insert("shape".into(), Tensor::from_i64(&[1], vec![6]));
    opts.input_values
        .insert("x".into(), Tensor::from_f32(&[2, 3], vec![0.0; 6]));
    let g = import_bytes(&m.encode_to_vec(), None, &opts).unwrap();
    let inputs: Vec<&str> = g
        .inputs()
        .iter()
        .map(|i| g.value(i.value).name.as_str())
        .collect();
    assert_eq!(inputs, ["x"]);
    assert_eq!(output_type(&g, 0), TensorType::new(DType::F32, vec![6]));
    // A supplied value of the wrong type is refused by name.
    opts.input_values
        .insert("shape".into(), Tensor::from_f32(&[1], vec![6.0]));
    let e = import_bytes(&m.encode_to_vec(), None, &opts).unwrap_err();
    assert!(
        matches!(e, ImportError::Value { ref name, .. } if name == "shape"),
        "{e}"
    );
}

#[test]
fn declared_output_types_are_checked() {
    let mut m = relu_model();
    let graph = m.graph.as_mut().unwrap();
    graph.output = vec![info("y", DataType::Float, &[1, 4])];
    let e = import(&m).unwrap_err();
    assert!(
        matches!(e, ImportError::Value { ref name, .. } if name == "y"),
        "{e}"
    );
    graph_mut(&mut m).output = vec![info("y", DataType::Int64, &[1, 3])];
    assert!(import(&m).is_err());
    graph_mut(&mut m).output = vec![info("y", DataType::Float, &[1, 3])];
    assert!(import(&m).is_ok());
    graph_mut(&mut m).value_info = vec![info("y", DataType::Float, &[3])];
    assert!(import(&m).is_err());
}

fn graph_mut(m: &mut ModelProto) -> &mut GraphProto {
    m.graph.as_mut().unwrap()
}

#[test]
fn empty_and_repeated_node_names_become_unique() {
    let mut a = node("Relu", &["x"], &["a"], vec![]);
    a.name = String::new();
    let mut b = node("Relu", &["a"], &["b"], vec![]);
    b.name = "dup".into();
    let mut c = node("Relu", &["b"], &["c"], vec![]);
    c.name = "dup".into();
    let m = model(
        13,
        vec![a, b, c],
        vec![info("x", DataType::Float, &[2])],
        vec![out("c")],
        vec![],
    );
    let g = import(&m).unwrap();
    let mut names: Vec<String> = g
        .petgraph()
        .node_weights()
        .map(|n| n.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["Relu_0", "Relu_2", "dup"]);
}

#[test]
fn missing_and_misordered_values_are_errors() {
    let m = model(
        13,
        vec![node("Relu", &["nope"], &["y"], vec![])],
        vec![info("x", DataType::Float, &[2])],
        vec![out("y")],
        vec![],
    );
    let e = import(&m).unwrap_err().to_string();
    assert!(e.contains("'nope'"), "{e}");
    let m = model(
        13,
        vec![node("Relu", &["x"], &["y"], vec![])],
        vec![info("x", DataType::Float, &[2])],
        vec![out("z")],
        vec![],
    );
    assert!(matches!(import(&m), Err(ImportError::Value { .. })));
    let m = model(
        13,
        vec![node("Relu", &["x"], &["y"], vec![])],
        vec![info("x", DataType::Double, &[2])],
        vec![out("y")],
        vec![],
    );
    let e = import(&m).unwrap_err().to_string();
    assert!(e.contains("'x'") && e.contains("DOUBLE"), "{e}");
}

#[test]
fn attribute_errors_name_node_op_and_attribute() {
    let m = model(
        13,
        vec![node("Softmax", &["x"], &["y"], vec![attr_f("axis", 1.0)])],
        vec![info("x", DataType::Float, &[2, 3])],
        vec![out("y")],
        vec![],
    );
    let e = import(&m).unwrap_err();
    let ImportError::Attribute {
        node,
        op,
        attribute,
        ..
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!(
        (node.as_str(), op.as_str(), attribute.as_str()),
        ("Softmax:y", "Softmax", "axis")
    );
}

#[test]
fn graph_errors_are_wrapped() {
    let m = model(
        13,
        vec![node("Add", &["x", "z"], &["y"], vec![])],
        vec![
            info("x", DataType::Float, &[2, 3]),
            info("z", DataType::Float, &[4]),
        ],
        vec![out("y")],
        vec![],
    );
    let e = import(&m).unwrap_err();
    assert!(
        matches!(e, ImportError::Graph(GraphError::Node { .. })),
        "{e}"
    );
    assert!(e.to_string().contains("Add:y"), "{e}");
}
