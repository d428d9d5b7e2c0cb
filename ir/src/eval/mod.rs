//! The reference interpreter: the single executable definition of every op's meaning.
//!
//! Float ops compute in f32 (f16 inputs are widened, computed in f32 and rounded back);
//! integer ops are exact, following the ONNX specification. Speed is secondary to being
//! obviously right, but whole CNNs must still run in seconds, so convolutions and matrix
//! products go through one blocked matrix-product kernel ([`kernel`]).
//!
//! [`eval_op`] first runs shape inference on the actual inputs, so every kernel may rely on
//! the checks it makes (ranks, matching dims, dtypes), and afterwards checks that the kernel
//! produced exactly the inferred types: inference and evaluation cannot drift apart silently.

mod conv;
mod dynamic;
#[cfg(test)]
mod eight_bit_tests;
mod elementwise;
mod kernel;
mod matmul;
mod pool;
mod quant;
mod realized;
mod reduce;
mod shape_ops;

use crate::dtype::{DType, TensorType};
use crate::graph::{Graph, ValueDef, ValueId};
use crate::op::Op;
use crate::tensor::Tensor;
use half::f16;
use ndarray::ArrayD;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("node '{node}' ({op}): {message}")]
    Node {
        node: String,
        op: &'static str,
        message: String,
    },
    #[error("graph input '{name}': {message}")]
    Input { name: String, message: String },
    #[error("{0}")]
    Op(String),
}

type R<T> = Result<T, EvalError>;

/// An op-level error with a message.
fn op_err(message: impl Into<String>) -> EvalError {
    EvalError::Op(message.into())
}

/// Applies one op to input tensors (whose types the op must accept).
pub fn eval_op(op: &Op, inputs: &[&Tensor]) -> Result<Vec<Tensor>, EvalError> {
    let (required, max) = op.arity();
    if inputs.len() < required || max.is_some_and(|m| inputs.len() > m) {
        return Err(op_err(format!(
            "{} takes {required}..{max:?} inputs, got {}",
            op.name(),
            inputs.len()
        )));
    }
    let types: Vec<TensorType> = inputs.iter().map(|t| t.ty()).collect();
    let type_refs: Vec<&TensorType> = types.iter().collect();
    let expected = crate::infer::infer_types(op, &type_refs).map_err(EvalError::Op)?;
    let outputs = dispatch(op, inputs)?;
    let produced: Vec<TensorType> = outputs.iter().map(Tensor::ty).collect();
    if produced != expected {
        return Err(op_err(format!(
            "internal error: {} produced {produced:?}, inference says {expected:?}",
            op.name()
        )));
    }
    Ok(outputs)
}

fn dispatch(op: &Op, inputs: &[&Tensor]) -> R<Vec<Tensor>> {
    let x = inputs.first().copied();
    let first = || x.ok_or_else(|| op_err("missing input"));
    let one = |t: Tensor| Ok(vec![t]);
    match op {
        Op::Conv(attrs) => one(conv::conv_float(
            attrs,
            first()?,
            inputs[1],
            inputs.get(2).copied(),
        )?),
        Op::FusedConv {
            conv: attrs,
            residual,
            activation,
        } => {
            let mut y = conv::conv_float(attrs, first()?, inputs[1], Some(inputs[2]))?;
            if *residual {
                y = elementwise::binary(crate::BinaryOp::Add, &y, inputs[3])?;
            }
            one(match activation {
                Some(a) => elementwise::activation(*a, &y)?,
                None => y,
            })
        }
        Op::FusedGemm { gemm, activation } => {
            let y = matmul::gemm(gemm, first()?, inputs[1], inputs.get(2).copied())?;
            one(match activation {
                Some(a) => elementwise::activation(*a, &y)?,
                None => y,
            })
        }
        Op::BatchNorm { epsilon } => one(elementwise::batch_norm(*epsilon, inputs)?),
        Op::Activation(a) => one(elementwise::activation(*a, first()?)?),
        Op::Binary(b) => one(elementwise::binary(*b, first()?, inputs[1])?),
        Op::Sum => one(elementwise::sum(inputs)?),
        Op::Concat { axis } => one(shape_ops::concat(*axis, inputs)?),
        Op::Split { axis, sizes } => shape_ops::split(*axis, sizes, first()?),
        Op::MaxPool(p) => one(pool::max_pool(p, first()?)?),
        Op::AveragePool {
            pool,
            count_include_pad,
        } => one(pool::average_pool(pool, *count_include_pad, first()?)?),
        Op::GlobalAveragePool => one(pool::global_pool(false, first()?)?),
        Op::GlobalMaxPool => one(pool::global_pool(true, first()?)?),
        Op::Gemm(g) => one(matmul::gemm(
            g,
            first()?,
            inputs[1],
            inputs.get(2).copied(),
        )?),
        Op::MatMul => one(matmul::matmul_float(first()?, inputs[1])?),
        Op::Flatten { axis } => {
            let x = first()?;
            let (outer, inner) = (
                x.dims()[..*axis].iter().product(),
                x.dims()[*axis..].iter().product(),
            );
            one(shape_ops::reshape_to(x, &[outer, inner])?)
        }
        Op::Reshape { shape, allow_zero } => {
            let x = first()?;
            let dims =
                crate::infer::reshape_dims(x.dims(), shape, *allow_zero).map_err(EvalError::Op)?;
            one(shape_ops::reshape_to(x, &dims)?)
        }
        Op::Transpose { perm } => one(shape_ops::transpose(perm, first()?)),
        Op::Squeeze { axes } => one(shape_ops::squeeze(axes, first()?)?),
        Op::Unsqueeze { axes } => one(shape_ops::unsqueeze(axes, first()?)?),
        Op::Softmax { axis, coerce_2d } => one(reduce::softmax(*axis, *coerce_2d, first()?)?),
        Op::Lrn(l) => one(reduce::lrn(l, first()?)?),
        Op::Dropout { mask_output } => {
            let x = first()?;
            let mut out = vec![x.clone()];
            if *mask_output {
                out.push(Tensor::Bool(ArrayD::from_elem(x.dims(), true)));
            }
            Ok(out)
        }
        Op::Identity => one(first()?.clone()),
        Op::Pad { pads, value } => one(shape_ops::pad(pads, *value, first()?)?),
        Op::Shape { start, end } => {
            let dims = &first()?.dims()[*start..*end];
            one(Tensor::from_i64(
                &[dims.len()],
                dims.iter().map(|&d| d as i64).collect(),
            ))
        }
        Op::Gather { axis } => one(shape_ops::gather(*axis, first()?, inputs[1])?),
        Op::Slice {
            starts,
            ends,
            axes,
            steps,
        } => one(shape_ops::slice(starts, ends, axes, steps, first()?)?),
        Op::Cast { to } => one(elementwise::cast(first()?, *to)),
        Op::ReduceMean { axes, keep_dims } => one(reduce::reduce_mean(axes, *keep_dims, first()?)?),
        Op::ConstantOfShape { shape, value } => one(shape_ops::constant_of_shape(shape, value)?),
        Op::QuantizeLinear(q) => one(quant::quantize_linear(q, first()?)?),
        Op::DequantizeLinear(q) => one(quant::dequantize_linear(q, first()?)?),
        Op::QLinearConv {
            conv,
            x: qx,
            w: qw,
            y: qy,
        } => one(conv::qlinear_conv(
            conv,
            qx,
            qw,
            qy,
            first()?,
            inputs[1],
            inputs.get(2).copied(),
        )?),
        Op::QLinearMatMul { a, b, y } => one(matmul::qlinear_matmul(a, b, y, first()?, inputs[1])?),
        Op::ConvInteger {
            conv,
            x_zero_point,
            w_zero_point,
        } => one(conv::conv_integer(
            conv,
            &quant::input_zero_point(x_zero_point, inputs.get(2).copied())?,
            w_zero_point,
            first()?,
            inputs[1],
        )?),
        Op::MatMulInteger {
            a_zero_point,
            b_zero_point,
        } => one(matmul::matmul_integer(
            &quant::input_zero_point(a_zero_point, inputs.get(2).copied())?,
            b_zero_point,
            first()?,
            inputs[1],
        )?),
        Op::DynamicQuantizeLinear => quant::dynamic_quantize_linear(first()?),
        Op::QuantizedConv {
            conv,
            x,
            w,
            y,
            residual,
            clamp,
        } => one(realized::quantized_conv(
            &realized::ConvQuant {
                conv,
                x,
                w,
                y,
                residual: residual.as_ref(),
                clamp: *clamp,
            },
            inputs,
        )?),
        Op::QuantizedMatMul { a, b, y, clamp } => one(realized::quantized_matmul(
            a,
            b,
            y,
            *clamp,
            first()?,
            inputs[1],
            inputs.get(2).copied(),
        )?),
        Op::QuantizedAdd { a, b, y, clamp } => one(realized::quantized_add(
            a,
            b,
            y,
            *clamp,
            first()?,
            inputs[1],
        )?),
        Op::QuantizedGlobalAveragePool { x, y } => {
            one(realized::quantized_global_average_pool(x, y, first()?)?)
        }
        Op::DynamicQuantizedConv {
            conv,
            w,
            residual,
            activation,
        } => one(dynamic::dynamic_quantized_conv(
            conv,
            w,
            *residual,
            *activation,
            inputs,
        )?),
        Op::DynamicQuantizedMatMul { b, activation } => {
            one(dynamic::dynamic_quantized_matmul(b, *activation, inputs)?)
        }
    }
}

/// A float tensor's values as f32 (borrowed for f32, widened for f16).
fn float_values(t: &Tensor) -> R<Cow<'_, ArrayD<f32>>> {
    match t {
        Tensor::F32(a) => Ok(Cow::Borrowed(a)),
        Tensor::F16(a) => Ok(Cow::Owned(a.mapv(f16::to_f32))),
        other => Err(op_err(format!(
            "expected a float tensor, found {}",
            other.dtype()
        ))),
    }
}

/// Wraps f32 results as a tensor of `dtype` (f16 results are rounded to nearest even).
fn float_tensor(a: ArrayD<f32>, dtype: DType) -> R<Tensor> {
    match dtype {
        DType::F32 => Ok(Tensor::F32(a)),
        DType::F16 => Ok(Tensor::F16(a.mapv(f16::from_f32))),
        other => Err(op_err(format!("expected a float type, found {other}"))),
    }
}

/// The elements of an array in row-major order, borrowed when the array already is.
fn row_major<T: Clone>(a: &ArrayD<T>) -> Cow<'_, [T]> {
    match a.as_slice() {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(a.iter().cloned().collect()),
    }
}

/// Builds an array from row-major data whose length the caller computed from `dims`.
fn array_from<T>(dims: &[usize], data: Vec<T>) -> R<ArrayD<T>> {
    let n = data.len();
    ArrayD::from_shape_vec(dims, data).map_err(|e| {
        op_err(format!(
            "internal error: {n} elements for dims {dims:?}: {e}"
        ))
    })
}

/// Runs a graph on named inputs (one tensor per graph input, of its declared type) and
/// returns the graph outputs in order.
pub fn run(graph: &Graph, inputs: &HashMap<String, Tensor>) -> Result<Vec<Tensor>, EvalError> {
    let values = run_all(graph, inputs)?;
    Ok(graph
        .outputs()
        .iter()
        .map(|o| Tensor::clone(&values[o]))
        .collect())
}

/// Runs a graph and returns every value it computed (inputs and constants included), for
/// debugging and calibration. Values are shared, so constants are never copied.
pub fn run_all(
    graph: &Graph,
    inputs: &HashMap<String, Tensor>,
) -> Result<HashMap<ValueId, Arc<Tensor>>, EvalError> {
    let mut env: HashMap<ValueId, Arc<Tensor>> = HashMap::new();
    for gi in graph.inputs() {
        let v = graph.value(gi.value);
        let t = inputs.get(&v.name).ok_or_else(|| EvalError::Input {
            name: v.name.clone(),
            message: "no tensor given".into(),
        })?;
        if t.ty() != v.ty {
            return Err(EvalError::Input {
                name: v.name.clone(),
                message: format!("expected {}, got {}", v.ty, t.ty()),
            });
        }
        env.insert(gi.value, Arc::new(t.clone()));
    }
    if let Some(extra) = inputs.keys().find(|k| {
        graph
            .value_by_name(k)
            .is_none_or(|id| !matches!(graph.value(id).def, ValueDef::Input))
    }) {
        return Err(EvalError::Input {
            name: extra.clone(),
            message: "is not an input of the graph".into(),
        });
    }
    for (id, v) in graph.values() {
        if let ValueDef::Constant(t) = &v.def {
            env.insert(id, t.clone());
        }
    }
    let order = graph
        .topo_order()
        .map_err(|e| EvalError::Op(e.to_string()))?;
    for n in order {
        let node = graph.node(n);
        let args: Vec<&Tensor> = node.inputs.iter().map(|v| &*env[v]).collect();
        let outs = eval_op(&node.op, &args).map_err(|e| EvalError::Node {
            node: node.name.clone(),
            op: node.op.name(),
            message: match e {
                EvalError::Op(m) => m,
                other => other.to_string(),
            },
        })?;
        for (&o, t) in node.outputs.iter().zip(outs) {
            env.insert(o, Arc::new(t));
        }
    }
    Ok(env)
}

/// Small constructors shared by the interpreter's unit tests.
#[cfg(test)]
pub(crate) mod test_util {
    use super::*;
    use ndarray::IxDyn;

    pub fn f32s(dims: &[usize], data: &[f32]) -> Tensor {
        Tensor::F32(ArrayD::from_shape_vec(IxDyn(dims), data.to_vec()).unwrap())
    }
    pub fn u8s(dims: &[usize], data: &[u8]) -> Tensor {
        Tensor::U8(ArrayD::from_shape_vec(IxDyn(dims), data.to_vec()).unwrap())
    }
    pub fn i8s(dims: &[usize], data: &[i8]) -> Tensor {
        Tensor::I8(ArrayD::from_shape_vec(IxDyn(dims), data.to_vec()).unwrap())
    }
    pub fn i32s(dims: &[usize], data: &[i32]) -> Tensor {
        Tensor::I32(ArrayD::from_shape_vec(IxDyn(dims), data.to_vec()).unwrap())
    }
    /// Runs a single-output op and returns its output.
    pub fn run1(op: &Op, inputs: &[&Tensor]) -> Tensor {
        let mut out = eval_op(op, inputs).unwrap_or_else(|e| panic!("{}: {e}", op.name()));
        assert_eq!(out.len(), 1);
        out.remove(0)
    }
    /// Every element as f64, for comparing with hand-computed values.
    pub fn values(t: &Tensor) -> Vec<f64> {
        t.to_f64_vec()
    }
    pub fn assert_close(t: &Tensor, want: &[f64]) {
        let got = values(t);
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-5 + 1e-5 * w.abs(),
                "{got:?} vs {want:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;
    use crate::op::{Activation, BinaryOp};
    use crate::TensorType;

    #[test]
    fn wrong_arity_and_wrong_types_are_errors_not_panics() {
        let x = f32s(&[2], &[1.0, 2.0]);
        assert!(eval_op(&Op::Binary(BinaryOp::Add), &[&x]).is_err());
        let i = i32s(&[2], &[1, 2]);
        assert!(eval_op(&Op::Binary(BinaryOp::Add), &[&x, &i]).is_err());
        assert!(eval_op(&Op::Activation(Activation::Sigmoid), &[&i]).is_err());
        assert!(eval_op(
            &Op::Gather { axis: 0 },
            &[&x, &Tensor::from_i64(&[1], vec![2])]
        )
        .is_err());
    }

    #[test]
    fn run_evaluates_a_graph_in_order() {
        let mut g = Graph::new("g");
        let x = g
            .add_input("x", TensorType::new(DType::F32, vec![3]))
            .unwrap();
        let c = g.add_constant("c", f32s(&[3], &[1.0, -5.0, 1.0])).unwrap();
        let add = g
            .add_node(
                "add",
                Op::Binary(BinaryOp::Add),
                vec![x, c],
                vec!["s".into()],
            )
            .unwrap();
        let s = g.node(add).outputs[0];
        let relu = g
            .add_node(
                "relu",
                Op::Activation(Activation::Relu),
                vec![s],
                vec!["y".into()],
            )
            .unwrap();
        let y = g.node(relu).outputs[0];
        g.set_outputs(vec![y]);
        let inputs = HashMap::from([("x".to_string(), f32s(&[3], &[1.0, 2.0, 3.0]))]);
        let out = run(&g, &inputs).unwrap();
        assert_close(&out[0], &[2.0, 0.0, 4.0]);
        let wrong = HashMap::from([("x".to_string(), f32s(&[2], &[1.0, 2.0]))]);
        assert!(matches!(run(&g, &wrong), Err(EvalError::Input { .. })));
    }
}
