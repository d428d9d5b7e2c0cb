//! ONNX protobuf messages, declared by hand with `prost` derives.
//!
//! Field numbers follow `onnx/onnx-ml.proto` (IR version 10 and later; the
//! fields we read have been stable since IR 3). Writing the structs by hand
//! keeps `protoc` and a `build.rs` out of the build.
//!
//! Layout follows what `prost-build` would emit (nested messages live in
//! snake_case modules such as [`type_proto`]), and the enums people use
//! most are re-exported at the top level.
//!
//! Things left out on purpose: `TrainingInfoProto` (ModelProto field 20),
//! the device/sharding configuration messages (ModelProto 26, NodeProto 10)
//! and the `OperatorStatus`/`Version` enums. prost skips unknown field
//! numbers while decoding, so models that carry them still load. Those fields
//! are dropped if the model is encoded again.
//!
//! About presence: `onnx.proto` uses proto2 syntax, but scalars here use
//! proto3 rules (a zero or empty value means "unset" and is not written out).
//! For ONNX this loses nothing, because every kind-bearing field
//! (`AttributeProto.type`, `TensorProto.data_type`) is non-zero when it is
//! valid. Oneof members such as `Dimension::DimValue(0)` keep their presence.

pub use attribute_proto::AttributeType;
pub use tensor_proto::{DataLocation, DataType};

/// Declares a code enum together with the onnx.proto spelling of each name,
/// so the two lists cannot drift apart.
macro_rules! named_enum {
    ($(#[$meta:meta])* $enum:ident { $($variant:ident = $code:literal, $name:literal;)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(i32)]
        pub enum $enum { $($variant = $code,)* }

        impl $enum {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$enum] = &[$($enum::$variant,)*];

            /// The upper-case name used in onnx.proto, e.g. `"FLOAT16"`.
            pub fn name(self) -> &'static str {
                match self { $($enum::$variant => $name,)* }
            }
        }

        impl std::fmt::Display for $enum {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "4")]
    pub domain: String,
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
    /// Model-local functions (IR 8+).
    #[prost(message, repeated, tag = "25")]
    pub functions: Vec<FunctionProto>,
}

impl ModelProto {
    /// Decodes a `.onnx` file's bytes. Same as `prost::Message::decode`, but
    /// callers need not import the trait.
    pub fn decode_bytes(buf: &[u8]) -> Result<ModelProto, prost::DecodeError> {
        <ModelProto as prost::Message>::decode(buf)
    }
}

/// An imported opset. An empty `domain`, like `"ai.onnx"`, means standard ONNX.
#[derive(Clone, PartialEq, prost::Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorAnnotation {
    #[prost(string, tag = "1")]
    pub tensor_name: String,
    #[prost(message, repeated, tag = "2")]
    pub quant_parameter_tensor_names: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    /// Topologically sorted, as the spec requires.
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "15")]
    pub sparse_initializer: Vec<SparseTensorProto>,
    #[prost(string, tag = "10")]
    pub doc_string: String,
    /// May also name initializers (IR 3 and earlier required it). Such an
    /// input is optional, and the initializer is its default value.
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "14")]
    pub quantization_annotation: Vec<TensorAnnotation>,
    #[prost(message, repeated, tag = "16")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    /// An empty string is an omitted optional input.
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(string, tag = "7")]
    pub domain: String,
    /// Selects a model-local function overload (IR 10).
    #[prost(string, tag = "8")]
    pub overload: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, repeated, tag = "9")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

/// A node attribute. `type` says which of the value fields is meaningful.
/// The others are left at their defaults.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    /// Only inside a FunctionProto: take the value from the caller's attribute of this name.
    #[prost(string, tag = "21")]
    pub ref_attr_name: String,
    #[prost(string, tag = "13")]
    pub doc_string: String,
    #[prost(enumeration = "AttributeType", tag = "20")]
    pub r#type: i32,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    /// Declared `bytes` in onnx.proto; the spec says the contents are UTF-8.
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(message, optional, tag = "6")]
    pub g: Option<GraphProto>,
    #[prost(message, optional, tag = "22")]
    pub sparse_tensor: Option<SparseTensorProto>,
    #[prost(message, optional, tag = "14")]
    pub tp: Option<TypeProto>,
    // onnx.proto (proto2) leaves these unpacked. We write them the same way
    // as the reference implementation; prost reads both forms.
    #[prost(float, repeated, packed = "false", tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, packed = "false", tag = "8")]
    pub ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "10")]
    pub tensors: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub graphs: Vec<GraphProto>,
    #[prost(message, repeated, tag = "23")]
    pub sparse_tensors: Vec<SparseTensorProto>,
    #[prost(message, repeated, tag = "15")]
    pub type_protos: Vec<TypeProto>,
}

impl AttributeProto {
    /// Which value field is in use. Unknown codes read as `Undefined`.
    pub fn kind(&self) -> AttributeType {
        AttributeType::try_from(self.r#type).unwrap_or(AttributeType::Undefined)
    }
}

pub mod attribute_proto {
    named_enum! {
        /// Note the numbering: the single-value kinds added later (11, 13)
        /// come after the list kinds.
        #[derive(prost::Enumeration)]
        AttributeType {
            Undefined = 0, "UNDEFINED";
            Float = 1, "FLOAT";
            Int = 2, "INT";
            String = 3, "STRING";
            Tensor = 4, "TENSOR";
            Graph = 5, "GRAPH";
            SparseTensor = 11, "SPARSE_TENSOR";
            TypeProto = 13, "TYPE_PROTO";
            Floats = 6, "FLOATS";
            Ints = 7, "INTS";
            Strings = 8, "STRINGS";
            Tensors = 9, "TENSORS";
            Graphs = 10, "GRAPHS";
            SparseTensors = 12, "SPARSE_TENSORS";
            TypeProtos = 14, "TYPE_PROTOS";
        }
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    /// Unset for values whose type was never inferred.
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    #[prost(string, tag = "3")]
    pub doc_string: String,
    #[prost(message, repeated, tag = "4")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TypeProto {
    #[prost(oneof = "type_proto::Value", tags = "1, 4, 5, 9, 8, 7")]
    pub value: Option<type_proto::Value>,
    #[prost(string, tag = "6")]
    pub denotation: String,
}

pub mod type_proto {
    use super::{TensorShapeProto, TypeProto};

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(message, tag = "1")]
        TensorType(Tensor),
        #[prost(message, tag = "4")]
        SequenceType(Sequence),
        #[prost(message, tag = "5")]
        MapType(Map),
        #[prost(message, tag = "9")]
        OptionalType(Optional),
        #[prost(message, tag = "8")]
        SparseTensorType(SparseTensor),
        /// Only in the onnx-ml variant of the schema.
        #[prost(message, tag = "7")]
        OpaqueType(Opaque),
    }

    /// `elem_type` is a [`super::DataType`] code. No `shape` means the rank
    /// is unknown. A shape with no dims is a scalar.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Tensor {
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        #[prost(message, optional, tag = "2")]
        pub shape: Option<TensorShapeProto>,
    }

    // Sequence, Map and Optional contain a TypeProto, so they box it to keep the size finite.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sequence {
        #[prost(message, optional, boxed, tag = "1")]
        pub elem_type: Option<Box<TypeProto>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Map {
        #[prost(int32, tag = "1")]
        pub key_type: i32,
        #[prost(message, optional, boxed, tag = "2")]
        pub value_type: Option<Box<TypeProto>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Optional {
        #[prost(message, optional, boxed, tag = "1")]
        pub elem_type: Option<Box<TypeProto>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SparseTensor {
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        #[prost(message, optional, tag = "2")]
        pub shape: Option<TensorShapeProto>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Opaque {
        #[prost(string, tag = "1")]
        pub domain: String,
        #[prost(string, tag = "2")]
        pub name: String,
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<tensor_shape_proto::Dimension>,
}

pub mod tensor_shape_proto {
    /// A known size, a symbolic name, or `value == None` when the size is unknown.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        #[prost(oneof = "dimension::Value", tags = "1, 2")]
        pub value: Option<dimension::Value>,
        #[prost(string, tag = "3")]
        pub denotation: String,
    }

    pub mod dimension {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(int64, tag = "1")]
            DimValue(i64),
            #[prost(string, tag = "2")]
            DimParam(String),
        }
    }
}

/// A tensor value, row-major. Elements live in exactly one place: `raw_data`
/// (little-endian), the `*_data` field for `data_type`, or the external
/// file described by `external_data`. `int32_data` also holds every type
/// narrower than 32 bits, as bit patterns. 8- and 16-bit types take one
/// element per entry, 4-bit types two, 2-bit types four.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(int64, repeated, packed = "false", tag = "1")]
    pub dims: Vec<i64>,
    /// A [`DataType`] code. Declared int32 (not the enum) in onnx.proto.
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(message, optional, tag = "3")]
    pub segment: Option<tensor_proto::Segment>,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub string_data: Vec<Vec<u8>>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(string, tag = "12")]
    pub doc_string: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    /// Keys: "location" (a path relative to the model's directory), "offset", "length", "checksum".
    #[prost(message, repeated, tag = "13")]
    pub external_data: Vec<StringStringEntryProto>,
    #[prost(enumeration = "DataLocation", tag = "14")]
    pub data_location: i32,
    /// DOUBLE and COMPLEX128 elements.
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    /// UINT32 and UINT64 elements.
    #[prost(uint64, repeated, tag = "11")]
    pub uint64_data: Vec<u64>,
    #[prost(message, repeated, tag = "16")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

impl TensorProto {
    /// The element type, or `None` when `data_type` is not a known code.
    pub fn dtype(&self) -> Option<DataType> {
        DataType::from_i32(self.data_type)
    }
}

pub mod tensor_proto {
    named_enum! {
        /// Element type codes (`TensorProto.DataType`). The proto fields that
        /// carry them are plain `i32`. Use [`DataType::from_i32`] to convert.
        DataType {
            Undefined = 0, "UNDEFINED";
            Float = 1, "FLOAT";
            Uint8 = 2, "UINT8";
            Int8 = 3, "INT8";
            Uint16 = 4, "UINT16";
            Int16 = 5, "INT16";
            Int32 = 6, "INT32";
            Int64 = 7, "INT64";
            String = 8, "STRING";
            Bool = 9, "BOOL";
            Float16 = 10, "FLOAT16";
            Double = 11, "DOUBLE";
            Uint32 = 12, "UINT32";
            Uint64 = 13, "UINT64";
            Complex64 = 14, "COMPLEX64";
            Complex128 = 15, "COMPLEX128";
            Bfloat16 = 16, "BFLOAT16";
            Float8e4m3fn = 17, "FLOAT8E4M3FN";
            Float8e4m3fnuz = 18, "FLOAT8E4M3FNUZ";
            Float8e5m2 = 19, "FLOAT8E5M2";
            Float8e5m2fnuz = 20, "FLOAT8E5M2FNUZ";
            Uint4 = 21, "UINT4";
            Int4 = 22, "INT4";
            Float4e2m1 = 23, "FLOAT4E2M1";
            Float8e8m0 = 24, "FLOAT8E8M0";
            Uint2 = 25, "UINT2";
            Int2 = 26, "INT2";
            Float6e2m3 = 27, "FLOAT6E2M3";
            Float6e3m2 = 28, "FLOAT6E3M2";
        }
    }

    impl DataType {
        /// `None` for codes this file does not know.
        pub fn from_i32(code: i32) -> Option<DataType> {
            DataType::ALL.iter().copied().find(|d| *d as i32 == code)
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum DataLocation {
        Default = 0,
        External = 1,
    }

    /// This tensor is a chunk of a larger one. Rarely used.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Segment {
        #[prost(int64, tag = "1")]
        pub begin: i64,
        #[prost(int64, tag = "2")]
        pub end: i64,
    }
}

/// COO sparse tensor. `indices` is INT64, with shape `[NNZ, rank]` or a flat `[NNZ]`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SparseTensorProto {
    #[prost(message, optional, tag = "1")]
    pub values: Option<TensorProto>,
    #[prost(message, optional, tag = "2")]
    pub indices: Option<TensorProto>,
    #[prost(int64, repeated, packed = "false", tag = "3")]
    pub dims: Vec<i64>,
}

/// A model-local function. Field numbers 2 and 3 are retired in onnx.proto.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FunctionProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, repeated, tag = "4")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "5")]
    pub output: Vec<String>,
    /// Attribute names without defaults.
    #[prost(string, repeated, tag = "6")]
    pub attribute: Vec<String>,
    /// Attributes that have default values.
    #[prost(message, repeated, tag = "11")]
    pub attribute_proto: Vec<AttributeProto>,
    #[prost(message, repeated, tag = "7")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "8")]
    pub doc_string: String,
    #[prost(message, repeated, tag = "9")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(string, tag = "10")]
    pub domain: String,
    #[prost(string, tag = "13")]
    pub overload: String,
    #[prost(message, repeated, tag = "12")]
    pub value_info: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
}

#[cfg(test)]
mod tests {
    use super::tensor_shape_proto::{dimension::Value as Dim, Dimension};
    use super::*;
    use prost::Message;

    fn attr(name: &str, kind: AttributeType) -> AttributeProto {
        let (name, r#type) = (name.into(), kind as i32);
        AttributeProto {
            name,
            r#type,
            ..Default::default()
        }
    }

    fn conv_model() -> ModelProto {
        let (float, int64) = (DataType::Float as i32, DataType::Int64 as i32);
        let w: Vec<f32> = (0..8 * 3 * 3 * 3).map(|i| i as f32 * 0.5 - 3.0).collect();
        let mut weight = TensorProto::default();
        (weight.name, weight.dims, weight.data_type) = ("W".into(), vec![8, 3, 3, 3], float);
        weight.raw_data = w.iter().flat_map(|x| x.to_le_bytes()).collect();

        // Dim 2 is a zero size, which must survive because oneof members keep presence.
        let dims = [
            Some(Dim::DimParam("N".into())),
            Some(Dim::DimValue(3)),
            Some(Dim::DimValue(0)),
            None,
        ];
        let dim = dims
            .map(|value| Dimension {
                value,
                denotation: String::new(),
            })
            .to_vec();
        let tensor = type_proto::Tensor {
            elem_type: float,
            shape: Some(TensorShapeProto { dim }),
        };
        let mut x = ValueInfoProto {
            name: "X".into(),
            ..Default::default()
        };
        x.r#type = Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..Default::default()
        });

        let mut value = TensorProto::default();
        (value.dims, value.data_type, value.int64_data) = (vec![2], int64, vec![-1, 1 << 40]);
        let mut node = NodeProto {
            op_type: "Conv".into(),
            ..Default::default()
        };
        node.input = vec!["X".into(), "W".into(), String::new()];
        node.output = vec!["Y".into()];
        node.attribute = vec![
            AttributeProto {
                i: 1,
                ..attr("group", AttributeType::Int)
            },
            AttributeProto {
                ints: vec![3, 3],
                ..attr("kernel_shape", AttributeType::Ints)
            },
            AttributeProto {
                f: 0.25,
                ..attr("alpha", AttributeType::Float)
            },
            AttributeProto {
                s: b"SAME_UPPER".to_vec(),
                ..attr("auto_pad", AttributeType::String)
            },
            AttributeProto {
                t: Some(value),
                ..attr("value", AttributeType::Tensor)
            },
        ];

        let mut graph = GraphProto {
            node: vec![node],
            initializer: vec![weight],
            ..Default::default()
        };
        graph.input = vec![x];
        graph.output = vec![ValueInfoProto {
            name: "Y".into(),
            ..Default::default()
        }];
        let mut model = ModelProto {
            ir_version: 10,
            graph: Some(graph),
            ..Default::default()
        };
        model.opset_import = vec![OperatorSetIdProto {
            domain: String::new(),
            version: 21,
        }];
        model
    }

    #[test]
    fn model_round_trips() {
        let model = conv_model();
        let back = ModelProto::decode_bytes(&model.encode_to_vec()).expect("decode");
        assert_eq!(back, model);
        let graph = back.graph.unwrap();
        let kinds: Vec<_> = graph.node[0].attribute.iter().map(|a| a.kind()).collect();
        use AttributeType::*;
        assert_eq!(kinds, [Int, Ints, Float, String, Tensor]);
        assert_eq!(graph.initializer[0].dtype(), Some(DataType::Float));
        assert_eq!(graph.initializer[0].raw_data.len(), 8 * 27 * 4);
        let Some(type_proto::Value::TensorType(t)) = graph.input[0].r#type.clone().unwrap().value
        else {
            panic!("expected a tensor type")
        };
        let dims = t.shape.unwrap().dim;
        assert_eq!(
            (dims[2].value.clone(), dims[3].value.clone()),
            (Some(Dim::DimValue(0)), None)
        );
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let bytes = conv_model().encode_to_vec();
        // A prefix that ends on a field boundary decodes fine. None may panic.
        for n in 0..bytes.len() {
            let _ = ModelProto::decode_bytes(&bytes[..n]);
        }
        // The last field (opset_import) is length-prefixed, so one byte short is an error.
        assert!(ModelProto::decode_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(ModelProto::decode_bytes(&[0x3a, 0x05, 0x0a]).is_err()); // graph: 5 bytes promised, 1 given
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let mut buf = vec![0x08, 10]; // ir_version (1, varint) = 10
        buf.extend([0x98, 0x06, 0x01]); // field 99, varint
        buf.extend([0xa2, 0x01, 0x04, 0x0a, 0x02, 0x10, 0x01]); // field 20 (training_info), a nested message
        buf.extend([0xd5, 0x01, 1, 2, 3, 4]); // field 26, fixed32
        buf.extend([0xd9, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]); // field 27, fixed64
        buf.extend([0x12, 3, b'q', b'c', b'c']); // producer_name (2) = "qcc"
        let m = ModelProto::decode_bytes(&buf).expect("unknown fields must be skipped");
        assert_eq!(
            (m.ir_version, m.producer_name.as_str(), m.graph),
            (10, "qcc", None)
        );
    }

    #[test]
    fn repeated_scalars_accept_packed_and_unpacked() {
        // ints (8): a packed run [1, 2], then an unpacked 3. Writers differ.
        let buf = [0x42, 0x02, 0x01, 0x02, 0x40, 0x03];
        assert_eq!(AttributeProto::decode(&buf[..]).unwrap().ints, [1, 2, 3]);
        let a = AttributeProto {
            ints: vec![1, 2],
            ..Default::default()
        };
        assert_eq!(a.encode_to_vec(), [0x40, 0x01, 0x40, 0x02]); // unpacked, like onnx
        let t = TensorProto {
            float_data: vec![1.0],
            ..Default::default()
        };
        assert_eq!(t.encode_to_vec(), [0x22, 0x04, 0, 0, 0x80, 0x3f]); // declared packed
    }

    #[test]
    fn enum_codes_and_names() {
        for code in 0..=28 {
            assert_eq!(DataType::from_i32(code).map(|d| d as i32), Some(code));
        }
        assert_eq!(
            (DataType::from_i32(29), DataType::from_i32(-1)),
            (None, None)
        );
        assert_eq!(DataType::Bfloat16.to_string(), "BFLOAT16");
        assert_eq!(DataType::Float8e4m3fn.name(), "FLOAT8E4M3FN");
        assert_eq!(
            AttributeProto {
                r#type: 99,
                ..Default::default()
            }
            .kind(),
            AttributeType::Undefined
        );
        assert_eq!(AttributeType::SparseTensors.to_string(), "SPARSE_TENSORS");
    }
}
