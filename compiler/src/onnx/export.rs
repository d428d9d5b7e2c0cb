//! IR graph to ONNX ModelProto.
//!
//! Every `qcc_ir::Op` maps to standard ONNX nodes at the chosen opset. The IR keeps as static
//! attributes what newer opsets pass as inputs (Clip bounds, Slice parameters, Squeeze axes,
//! Q/DQ parameters...); the writer turns them back into initializers named after the node
//! (`<node>.min`, `<node>.y_scale`, ...), or into attributes where the opset still wants those.
//! Constants become initializers with little-endian `raw_data`. Fused ops become the chain of
//! standard nodes they were fused from (`Conv` → `Add` → activation, `Gemm` → activation).
//! qcc's realized int8 ops (`QuantizedConv`, `QuantizedMatMul`) are an export error: ONNX's
//! QLinearConv rounds a float product half to even, qcc a fixed-point product half toward +∞.

use super::proto::attribute_proto::AttributeType;
use super::proto::tensor_shape_proto::{dimension, Dimension};
use super::proto::{
    type_proto, AttributeProto, DataType, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use qcc_ir::{
    Activation, ConvAttrs, DType, GemmAttrs, Graph, Node, Op, Padding, PoolAttrs, QParams, Tensor,
    ValueDef, ValueId, ZeroPoint,
};
use std::collections::HashSet;
use std::path::Path;

/// The opsets the writer knows how to target. Below 11, Clip/Pad/Slice took attributes that
/// the writer does not produce.
pub const SUPPORTED_OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportOptions {
    /// Write the first dim of every graph input and output as the symbolic `N`. Meant for
    /// graphs whose inputs and outputs all lead with the batch and whose nodes do not bake it
    /// in (a Reshape to a literal batch would still run at the built batch only).
    pub dynamic_batch: bool,
    /// The default-domain opset to target.
    pub opset: i64,
}

impl Default for ExportOptions {
    fn default() -> ExportOptions {
        ExportOptions {
            dynamic_batch: false,
            opset: 13,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("opset {0} is not supported by the ONNX writer (supported: 11 to 21)")]
    Opset(i64),
    #[error("node '{node}' ({op}): cannot be written at opset {opset}: {reason}")]
    Unsupported {
        node: String,
        op: &'static str,
        opset: i64,
        reason: String,
    },
    #[error("value '{0}': {1}")]
    Value(String, String),
    #[error(transparent)]
    Graph(#[from] qcc_ir::GraphError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// The ONNX IR version written for an opset: at least 8 (which every onnxruntime since 1.10
/// loads), and the version that introduced the opset where that is newer.
pub fn ir_version_for(opset: i64) -> i64 {
    match opset {
        ..=18 => 8,
        19..=20 => 9,
        _ => 10,
    }
}

/// Converts a graph to an ONNX model.
pub fn to_model_proto(g: &Graph, opts: &ExportOptions) -> Result<ModelProto, ExportError> {
    if !SUPPORTED_OPSETS.contains(&opts.opset) {
        return Err(ExportError::Opset(opts.opset));
    }
    let mut w = Writer {
        g,
        opset: opts.opset,
        graph: GraphProto::default(),
        names: HashSet::new(),
    };
    w.names.extend(g.values().map(|(_, v)| v.name.clone()));
    w.graph.name = if g.name.is_empty() {
        "qcc".into()
    } else {
        g.name.clone()
    };

    // Only constants that something reads become initializers: passes leave dead ones behind.
    let mut used: HashSet<ValueId> = g.outputs().iter().copied().collect();
    for n in g.topo_order()? {
        used.extend(g.node(n).inputs.iter().copied());
    }
    for (id, v) in g.values() {
        if let ValueDef::Constant(t) = &v.def {
            if used.contains(&id) {
                w.graph.initializer.push(tensor_proto(&v.name, t));
            }
        }
    }
    for gi in g.inputs() {
        w.graph
            .input
            .push(value_info(g, gi.value, opts.dynamic_batch)?);
    }
    for &o in g.outputs() {
        w.graph.output.push(value_info(g, o, opts.dynamic_batch)?);
    }
    for n in g.topo_order()? {
        w.node(g.node(n))?;
    }
    Ok(ModelProto {
        ir_version: ir_version_for(opts.opset),
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: opts.opset,
        }],
        producer_name: "qcc".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(w.graph),
        ..ModelProto::default()
    })
}

/// Converts a graph and writes the encoded model to `path`.
pub fn write_model(g: &Graph, opts: &ExportOptions, path: &Path) -> Result<(), ExportError> {
    let bytes = prost::Message::encode_to_vec(&to_model_proto(g, opts)?);
    std::fs::write(path, bytes).map_err(|source| ExportError::Io {
        path: path.display().to_string(),
        source,
    })
}

pub fn data_type(d: DType) -> DataType {
    match d {
        DType::F32 => DataType::Float,
        DType::F16 => DataType::Float16,
        DType::I8 => DataType::Int8,
        DType::U8 => DataType::Uint8,
        DType::I32 => DataType::Int32,
        DType::I64 => DataType::Int64,
        DType::Bool => DataType::Bool,
    }
}

/// A named initializer with its elements as little-endian `raw_data`.
pub fn tensor_proto(name: &str, t: &Tensor) -> TensorProto {
    TensorProto {
        name: name.into(),
        dims: t.dims().iter().map(|&d| d as i64).collect(),
        data_type: data_type(t.dtype()) as i32,
        raw_data: t.to_le_bytes(),
        ..TensorProto::default()
    }
}

fn value_info(g: &Graph, id: ValueId, dynamic_batch: bool) -> Result<ValueInfoProto, ExportError> {
    let v = g.value(id);
    let dim =
        v.ty.dims()
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                let value = if i == 0 && dynamic_batch {
                    dimension::Value::DimParam("N".into())
                } else {
                    let d = i64::try_from(d).map_err(|_| {
                        ExportError::Value(v.name.clone(), "dimension too large".into())
                    })?;
                    dimension::Value::DimValue(d)
                };
                Ok(Dimension {
                    value: Some(value),
                    denotation: String::new(),
                })
            })
            .collect::<Result<Vec<_>, ExportError>>()?;
    let tensor = type_proto::Tensor {
        elem_type: data_type(v.ty.dtype) as i32,
        shape: Some(TensorShapeProto { dim }),
    };
    Ok(ValueInfoProto {
        name: v.name.clone(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(tensor)),
            ..TypeProto::default()
        }),
        ..ValueInfoProto::default()
    })
}

fn attr(name: &str, kind: AttributeType) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: kind as i32,
        ..AttributeProto::default()
    }
}
fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        i,
        ..attr(name, AttributeType::Int)
    }
}
fn attr_ints(name: &str, ints: impl IntoIterator<Item = i64>) -> AttributeProto {
    AttributeProto {
        ints: ints.into_iter().collect(),
        ..attr(name, AttributeType::Ints)
    }
}
fn attr_usizes(name: &str, v: &[usize]) -> AttributeProto {
    attr_ints(name, v.iter().map(|&x| x as i64))
}
fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        f,
        ..attr(name, AttributeType::Float)
    }
}
fn attr_string(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        s: s.as_bytes().to_vec(),
        ..attr(name, AttributeType::String)
    }
}
fn attr_tensor(name: &str, t: &Tensor) -> AttributeProto {
    AttributeProto {
        t: Some(tensor_proto("", t)),
        ..attr(name, AttributeType::Tensor)
    }
}

fn i64_tensor(v: &[i64]) -> Tensor {
    Tensor::from_i64(&[v.len()], v.to_vec())
}

fn usize_tensor(v: &[usize]) -> Tensor {
    i64_tensor(&v.iter().map(|&x| x as i64).collect::<Vec<_>>())
}

/// A zero-point tensor of `dtype`: a scalar per tensor, 1-D per channel.
fn zero_point_tensor(dtype: DType, per_channel: bool, values: &[i32]) -> Result<Tensor, String> {
    let dims: Vec<usize> = if per_channel {
        vec![values.len()]
    } else {
        Vec::new()
    };
    let shape = ndarray::IxDyn(&dims);
    let bad = |v: &i32| format!("zero point {v} does not fit {dtype}");
    let t = match dtype {
        DType::I8 => {
            let v = values
                .iter()
                .map(|v| i8::try_from(*v).map_err(|_| bad(v)))
                .collect::<Result<_, _>>()?;
            ndarray::ArrayD::from_shape_vec(shape, v).map(Tensor::I8)
        }
        DType::U8 => {
            let v = values
                .iter()
                .map(|v| u8::try_from(*v).map_err(|_| bad(v)))
                .collect::<Result<_, _>>()?;
            ndarray::ArrayD::from_shape_vec(shape, v).map(Tensor::U8)
        }
        DType::I32 => ndarray::ArrayD::from_shape_vec(shape, values.to_vec()).map(Tensor::I32),
        other => return Err(format!("zero points of type {other} are not quantized")),
    };
    t.map_err(|e| e.to_string())
}

fn scale_tensor(q: &QParams) -> Tensor {
    let dims: Vec<usize> = if q.is_per_tensor() {
        Vec::new()
    } else {
        vec![q.scales().len()]
    };
    Tensor::from_f32(&dims, q.scales().to_vec())
}

/// The first node of a fused op: name suffix, ONNX op type, inputs and attributes.
type FusedHead = (&'static str, &'static str, Vec<String>, Vec<AttributeProto>);

/// Converts the nodes one by one, adding the initializers they need for attributes that ONNX
/// passes as inputs.
struct Writer<'a> {
    g: &'a Graph,
    opset: i64,
    graph: GraphProto,
    /// Every name in use, so generated initializer names never collide with a value.
    names: HashSet<String>,
}

impl Writer<'_> {
    fn fresh_name(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.names.contains(&name) {
            name = format!("{base}_{k}");
            k += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// Adds an initializer named after the node and returns its name.
    fn initializer(&mut self, node: &str, what: &str, t: &Tensor) -> String {
        let name = self.fresh_name(&format!("{node}.{what}"));
        self.graph.initializer.push(tensor_proto(&name, t));
        name
    }

    fn emit(
        &mut self,
        name: &str,
        op_type: &str,
        input: Vec<String>,
        output: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) {
        self.graph.node.push(NodeProto {
            name: name.into(),
            op_type: op_type.into(),
            input,
            output,
            attribute,
            ..NodeProto::default()
        });
    }

    fn value_name(&self, id: ValueId) -> String {
        self.g.value(id).name.clone()
    }

    fn node(&mut self, n: &Node) -> Result<(), ExportError> {
        let opset = self.opset;
        let unsupported = |reason: &str| ExportError::Unsupported {
            node: n.name.clone(),
            op: n.op.name(),
            opset,
            reason: reason.into(),
        };
        let mut ins: Vec<String> = n.inputs.iter().map(|&v| self.value_name(v)).collect();
        let outs: Vec<String> = n.outputs.iter().map(|&v| self.value_name(v)).collect();
        let name = n.name.as_str();
        let op_type = n.op.name();
        let mut attrs = Vec::new();
        match &n.op {
            Op::Conv(c) => attrs = conv_attrs(c),
            Op::BatchNorm { epsilon } => attrs.push(attr_float("epsilon", *epsilon)),
            Op::Activation(a) => {
                attrs = self
                    .activation(name, a, &mut ins)
                    .map_err(|m| unsupported(&m))?;
            }
            Op::FusedConv {
                conv,
                residual,
                activation,
            } => {
                let residual = residual.then(|| ins.get(3).cloned()).flatten();
                ins.truncate(3);
                let head = ("conv", "Conv", ins, conv_attrs(conv));
                return self
                    .fused(n, head, residual, activation.as_ref())
                    .map_err(|m| unsupported(&m));
            }
            Op::FusedGemm { gemm, activation } => {
                let head = ("gemm", "Gemm", ins, gemm_attrs(gemm));
                return self
                    .fused(n, head, None, activation.as_ref())
                    .map_err(|m| unsupported(&m));
            }
            Op::Binary(_) | Op::Sum | Op::MatMul | Op::Identity | Op::DynamicQuantizeLinear => {}
            Op::GlobalAveragePool | Op::GlobalMaxPool => {}
            Op::Concat { axis } => attrs.push(attr_int("axis", *axis as i64)),
            Op::Split { axis, sizes } => {
                attrs.push(attr_int("axis", *axis as i64));
                if opset >= 13 {
                    ins.push(self.initializer(name, "split", &usize_tensor(sizes)));
                } else {
                    attrs.push(attr_usizes("split", sizes));
                }
            }
            Op::MaxPool(p) => attrs = pool_attrs(p, true),
            Op::AveragePool {
                pool,
                count_include_pad,
            } => {
                if pool.dilations.iter().any(|&d| d != 1) && opset < 19 {
                    return Err(unsupported("AveragePool dilations need opset 19"));
                }
                attrs = pool_attrs(pool, opset >= 19);
                if *count_include_pad {
                    attrs.push(attr_int("count_include_pad", 1));
                }
            }
            Op::Gemm(gm) => attrs = gemm_attrs(gm),
            Op::Flatten { axis } => attrs.push(attr_int("axis", *axis as i64)),
            Op::Reshape { shape, allow_zero } => {
                if *allow_zero && shape.contains(&0) {
                    if opset < 14 {
                        return Err(unsupported(
                            "a literal 0 in the shape (allowzero) needs opset 14",
                        ));
                    }
                    attrs.push(attr_int("allowzero", 1));
                }
                ins.push(self.initializer(name, "shape", &i64_tensor(shape)));
            }
            Op::Transpose { perm } => attrs.push(attr_usizes("perm", perm)),
            Op::Squeeze { axes } | Op::Unsqueeze { axes } => {
                if opset >= 13 {
                    if !axes.is_empty() {
                        ins.push(self.initializer(name, "axes", &usize_tensor(axes)));
                    }
                } else if !axes.is_empty() {
                    attrs.push(attr_usizes("axes", axes));
                }
            }
            Op::Softmax { axis, coerce_2d } => {
                let rank = self.g.value(n.inputs[0]).ty.rank();
                // The two semantics agree when the axis is the last one.
                let same = *axis + 1 == rank;
                if *coerce_2d == (opset < 13) || same {
                    attrs.push(attr_int("axis", *axis as i64));
                } else if *coerce_2d {
                    return self.coerced_softmax(n, *axis);
                } else {
                    return Err(unsupported(
                        "a softmax along a single non-last axis needs opset 13",
                    ));
                }
            }
            Op::Lrn(l) => {
                attrs.push(attr_float("alpha", l.alpha));
                attrs.push(attr_float("beta", l.beta));
                attrs.push(attr_float("bias", l.bias));
                attrs.push(attr_int("size", l.size as i64));
            }
            // Without the ratio and training-mode inputs, Dropout is the inference identity.
            Op::Dropout { .. } => {}
            Op::Pad { pads, value } => {
                attrs.push(attr_string("mode", "constant"));
                ins.push(self.initializer(name, "pads", &i64_tensor(pads)));
                if *value != 0.0 {
                    let dtype = self.g.value(n.inputs[0]).ty.dtype;
                    let v = constant_of(dtype, *value).map_err(|m| unsupported(&m))?;
                    ins.push(self.initializer(name, "constant_value", &v));
                }
            }
            Op::Shape { start, end } => {
                let rank = self.g.value(n.inputs[0]).ty.rank();
                if *start != 0 || *end != rank {
                    if opset < 15 {
                        return Err(unsupported("Shape start/end need opset 15"));
                    }
                    attrs.push(attr_int("start", *start as i64));
                    attrs.push(attr_int("end", *end as i64));
                }
            }
            Op::Gather { axis } => attrs.push(attr_int("axis", *axis as i64)),
            Op::Slice {
                starts,
                ends,
                axes,
                steps,
            } => {
                ins.push(self.initializer(name, "starts", &i64_tensor(starts)));
                ins.push(self.initializer(name, "ends", &i64_tensor(ends)));
                ins.push(self.initializer(name, "axes", &usize_tensor(axes)));
                ins.push(self.initializer(name, "steps", &i64_tensor(steps)));
            }
            Op::Cast { to } => attrs.push(attr_int("to", data_type(*to) as i64)),
            Op::ReduceMean { axes, keep_dims } => {
                attrs.push(attr_int("keepdims", *keep_dims as i64));
                if !axes.is_empty() {
                    if opset >= 18 {
                        ins.push(self.initializer(name, "axes", &usize_tensor(axes)));
                    } else {
                        attrs.push(attr_usizes("axes", axes));
                    }
                }
            }
            Op::ConstantOfShape { shape, value } => {
                ins.push(self.initializer(name, "shape", &usize_tensor(shape)));
                let value = one_element_1d(value).map_err(|m| unsupported(&m))?;
                attrs.push(attr_tensor("value", &value));
            }
            Op::QuantizeLinear(q) | Op::DequantizeLinear(q) => {
                if !q.is_per_tensor() && opset < 13 {
                    return Err(unsupported("per-channel parameters need opset 13"));
                }
                let (s, z) = self.qparams(name, "", q).map_err(|m| unsupported(&m))?;
                ins.extend([s, z]);
                if let Some(axis) = q.axis() {
                    attrs.push(attr_int("axis", axis as i64));
                }
            }
            Op::QLinearConv { conv, x, w, y } => {
                attrs = conv_attrs(conv);
                let (xs, xz) = self.qparams(name, "x_", x).map_err(|m| unsupported(&m))?;
                let (ws, wz) = self.qparams(name, "w_", w).map_err(|m| unsupported(&m))?;
                let (ys, yz) = self.qparams(name, "y_", y).map_err(|m| unsupported(&m))?;
                let bias = ins.get(2).cloned();
                ins = vec![ins[0].clone(), xs, xz, ins[1].clone(), ws, wz, ys, yz];
                ins.extend(bias);
            }
            Op::QLinearMatMul { a, b, y } => {
                let (as_, az) = self.qparams(name, "a_", a).map_err(|m| unsupported(&m))?;
                let (bs, bz) = self.qparams(name, "b_", b).map_err(|m| unsupported(&m))?;
                let (ys, yz) = self.qparams(name, "y_", y).map_err(|m| unsupported(&m))?;
                ins = vec![ins[0].clone(), as_, az, ins[1].clone(), bs, bz, ys, yz];
            }
            Op::ConvInteger {
                conv,
                x_zero_point,
                w_zero_point,
            } => {
                attrs = conv_attrs(conv);
                // A run-time zero point is already the third input.
                if let Some(zp) = x_zero_point.constant() {
                    let zx = self
                        .zero_point(name, "x_zero_point", n.inputs[0], zp)
                        .map_err(|m| unsupported(&m))?;
                    ins.push(zx);
                }
                let zw = self
                    .zero_point(name, "w_zero_point", n.inputs[1], w_zero_point)
                    .map_err(|m| unsupported(&m))?;
                ins.push(zw);
            }
            // No ONNX op has these semantics: QLinearConv/QLinearMatMul requantize in float
            // with round half to even, qcc's realized ops with a fixed-point multiplier and
            // round half toward +inf, so an "equivalent" export would differ by one step on
            // ties and near-ties. Refuse rather than write a model that silently disagrees;
            // the QDQ form before realization is the one to export.
            Op::DynamicQuantizedConv { .. } | Op::DynamicQuantizedMatMul { .. } => {
                return Err(unsupported(
                    "qcc's dynamically quantized op (a fused integer product with a float \
                     epilogue) is not exported; export the float model and quantize it \
                     dynamically where it runs",
                ));
            }
            Op::QuantizedConv { .. }
            | Op::QuantizedMatMul { .. }
            | Op::QuantizedAdd { .. }
            | Op::QuantizedGlobalAveragePool { .. } => {
                return Err(unsupported(
                    "qcc's realized int8 op (fixed-point requantization, rounding half toward \
                     +inf) has no exact ONNX equivalent; export the quantized graph in QDQ \
                     form, before realization",
                ));
            }
            Op::MatMulInteger {
                a_zero_point,
                b_zero_point,
            } => {
                if let Some(zp) = a_zero_point.constant() {
                    let za = self
                        .zero_point(name, "a_zero_point", n.inputs[0], zp)
                        .map_err(|m| unsupported(&m))?;
                    ins.push(za);
                }
                let zb = self
                    .zero_point(name, "b_zero_point", n.inputs[1], b_zero_point)
                    .map_err(|m| unsupported(&m))?;
                ins.push(zb);
            }
        }
        self.emit(name, op_type, ins, outs, attrs);
        Ok(())
    }

    /// The attributes of activation node `name`, adding to `ins` (which holds its data input)
    /// the initializers of the parameters ONNX passes as inputs.
    fn activation(
        &mut self,
        name: &str,
        a: &Activation,
        ins: &mut Vec<String>,
    ) -> Result<Vec<AttributeProto>, String> {
        Ok(match a {
            Activation::Relu | Activation::Sigmoid | Activation::Tanh => vec![],
            Activation::LeakyRelu { alpha } => vec![attr_float("alpha", *alpha)],
            Activation::Clip { min, max } => {
                // ONNX's absent bound is the infinite one: write only finite bounds, an
                // empty name skipping the min input when only the max is given.
                if min.is_finite() {
                    ins.push(self.initializer(name, "min", &Tensor::scalar_f32(*min)));
                } else if max.is_finite() {
                    ins.push(String::new());
                }
                if max.is_finite() {
                    ins.push(self.initializer(name, "max", &Tensor::scalar_f32(*max)));
                }
                vec![]
            }
            Activation::HardSigmoid { alpha, beta } => {
                vec![attr_float("alpha", *alpha), attr_float("beta", *beta)]
            }
            Activation::HardSwish if self.opset < 14 => {
                return Err("HardSwish needs opset 14".into())
            }
            Activation::HardSwish => vec![],
        })
    }

    /// A fused op as the standard nodes it stands for: the head (Conv or Gemm, with the fused
    /// node's inputs), then the residual Add, then the activation. For a fused node `f` they
    /// are named `f.conv` (or `f.gemm`), `f.add` and `f.act`, the values between them
    /// `f.conv_out` and `f.add_out`; the last node writes the fused node's output, so the
    /// rest of the graph is unchanged.
    fn fused(
        &mut self,
        n: &Node,
        head: FusedHead,
        residual: Option<String>,
        activation: Option<&Activation>,
    ) -> Result<(), String> {
        let (head_suffix, head_op, head_ins, head_attrs) = head;
        let base = n.name.as_str();
        let y = self.value_name(n.outputs[0]);
        // Checked before anything is written: a node fails whole or is written whole.
        if matches!(activation, Some(Activation::HardSwish)) && self.opset < 14 {
            return Err("HardSwish needs opset 14".into());
        }
        let head_node = self.fresh_name(&format!("{base}.{head_suffix}"));
        let mut current = if residual.is_none() && activation.is_none() {
            y.clone()
        } else {
            self.fresh_name(&format!("{base}.{head_suffix}_out"))
        };
        self.emit(
            &head_node,
            head_op,
            head_ins,
            vec![current.clone()],
            head_attrs,
        );
        if let Some(r) = residual {
            let add_node = self.fresh_name(&format!("{base}.add"));
            let out = if activation.is_none() {
                y.clone()
            } else {
                self.fresh_name(&format!("{base}.add_out"))
            };
            self.emit(
                &add_node,
                "Add",
                vec![current, r],
                vec![out.clone()],
                vec![],
            );
            current = out;
        }
        if let Some(a) = activation {
            let act_node = self.fresh_name(&format!("{base}.act"));
            let mut ins = vec![current];
            let attrs = self.activation(&act_node, a, &mut ins)?;
            self.emit(&act_node, Op::Activation(*a).name(), ins, vec![y], attrs);
        }
        Ok(())
    }

    /// Scale and zero-point initializers for `q`, named `<node>.<prefix>scale` and
    /// `<node>.<prefix>zero_point`.
    fn qparams(
        &mut self,
        node: &str,
        prefix: &str,
        q: &QParams,
    ) -> Result<(String, String), String> {
        let zp = zero_point_tensor(q.dtype(), !q.is_per_tensor(), q.zero_points())?;
        let s = self.initializer(node, &format!("{prefix}scale"), &scale_tensor(q));
        let z = self.initializer(node, &format!("{prefix}zero_point"), &zp);
        Ok((s, z))
    }

    /// A ConvInteger/MatMulInteger zero point, typed like the operand it belongs to.
    fn zero_point(
        &mut self,
        node: &str,
        what: &str,
        operand: ValueId,
        zp: &ZeroPoint,
    ) -> Result<String, String> {
        let dtype = self.g.value(operand).ty.dtype;
        let t = zero_point_tensor(dtype, zp.axis.is_some(), &zp.values)?;
        Ok(self.initializer(node, what, &t))
    }

    /// Opset-13 Softmax normalises along one axis; the old semantics normalise the whole
    /// trailing block. Flatten at `axis`, normalise rows, then restore the input's shape
    /// (taken with Shape, so a dynamic batch still works).
    fn coerced_softmax(&mut self, n: &Node, axis: usize) -> Result<(), ExportError> {
        let x = self.value_name(n.inputs[0]);
        let y = self.value_name(n.outputs[0]);
        let base = n.name.as_str();
        let [flat, rows, shape, flatten_node, shape_node, reshape_node] =
            ["flat", "rows", "input_shape", "flatten", "shape", "reshape"]
                .map(|s| self.fresh_name(&format!("{base}.{s}")));
        let axis_attr = vec![attr_int("axis", axis as i64)];
        self.emit(
            &flatten_node,
            "Flatten",
            vec![x.clone()],
            vec![flat.clone()],
            axis_attr,
        );
        self.emit(
            base,
            "Softmax",
            vec![flat],
            vec![rows.clone()],
            vec![attr_int("axis", 1)],
        );
        self.emit(&shape_node, "Shape", vec![x], vec![shape.clone()], vec![]);
        self.emit(&reshape_node, "Reshape", vec![rows, shape], vec![y], vec![]);
        Ok(())
    }
}

fn padding_attrs(p: &Padding, out: &mut Vec<AttributeProto>) {
    match p {
        Padding::Explicit(pads) => out.push(attr_usizes("pads", pads)),
        Padding::SameUpper => out.push(attr_string("auto_pad", "SAME_UPPER")),
        Padding::SameLower => out.push(attr_string("auto_pad", "SAME_LOWER")),
    }
}

fn conv_attrs(c: &ConvAttrs) -> Vec<AttributeProto> {
    let mut a = vec![
        attr_usizes("kernel_shape", &c.kernel),
        attr_usizes("strides", &c.strides),
        attr_usizes("dilations", &c.dilations),
        attr_int("group", c.group as i64),
    ];
    padding_attrs(&c.padding, &mut a);
    a
}

fn gemm_attrs(g: &GemmAttrs) -> Vec<AttributeProto> {
    vec![
        attr_float("alpha", g.alpha),
        attr_float("beta", g.beta),
        attr_int("transA", g.trans_a as i64),
        attr_int("transB", g.trans_b as i64),
    ]
}

fn pool_attrs(p: &PoolAttrs, with_dilations: bool) -> Vec<AttributeProto> {
    let mut a = vec![
        attr_usizes("kernel_shape", &p.kernel),
        attr_usizes("strides", &p.strides),
    ];
    if with_dilations {
        a.push(attr_usizes("dilations", &p.dilations));
    }
    padding_attrs(&p.padding, &mut a);
    if p.ceil_mode {
        a.push(attr_int("ceil_mode", 1));
    }
    a
}

/// A one-element tensor of `dtype` holding `value` (Pad's constant_value).
fn constant_of(dtype: DType, value: f32) -> Result<Tensor, String> {
    let s = ndarray::IxDyn(&[]);
    Ok(match dtype {
        DType::F32 => Tensor::scalar_f32(value),
        DType::F16 => Tensor::F16(ndarray::ArrayD::from_elem(s, half::f16::from_f32(value))),
        DType::I8 => Tensor::I8(ndarray::ArrayD::from_elem(s, value as i8)),
        DType::U8 => Tensor::U8(ndarray::ArrayD::from_elem(s, value as u8)),
        DType::I32 => Tensor::I32(ndarray::ArrayD::from_elem(s, value as i32)),
        DType::I64 => Tensor::I64(ndarray::ArrayD::from_elem(s, value as i64)),
        DType::Bool => return Err("padding a bool tensor".into()),
    })
}

/// ConstantOfShape's `value` attribute must be a one-element 1-D tensor; the IR allows any
/// one-element shape.
fn one_element_1d(t: &Tensor) -> Result<Tensor, String> {
    if t.numel() != 1 {
        return Err(format!("value must have one element, has {}", t.numel()));
    }
    let ty = qcc_ir::TensorType::new(t.dtype(), vec![1]);
    Tensor::from_le_bytes(&ty, &t.to_le_bytes()).ok_or_else(|| "value has a wrong byte size".into())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fused;
