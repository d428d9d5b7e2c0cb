//! From an op name and its parsed `{key=value}` attributes to a typed [`Op`].
//!
//! Omitted attributes take ONNX's defaults where ONNX has one, so hand-written graphs stay
//! short; attributes without a default are required. Unknown keys are errors, so a typo
//! never silently becomes a default.

use super::lexer::Pos;
use super::parser::parse_f32;
use super::ParseError;
use crate::dtype::{DType, TensorType};
use crate::op::{Activation, BinaryOp, ConvAttrs, GemmAttrs, LrnAttrs, Op, Padding, PoolAttrs};
use crate::quant::{InputZeroPoint, QParams, ZeroPoint};
use crate::tensor::Tensor;

/// An attribute value as written, before it is given a type.
#[derive(Clone, Debug)]
pub enum AttrValue {
    Num(String),
    Word(String),
    List(Vec<Spanned>),
    Tensor(Tensor),
    /// `tag(key=value, ...)`: quantization parameters (tag = dtype), zero points (no tag) or a
    /// fused activation with parameters (tag = its keyword).
    Record {
        tag: Option<String>,
        fields: Vec<(String, Pos, Spanned)>,
    },
}

#[derive(Clone, Debug)]
pub struct Spanned {
    pub pos: Pos,
    pub v: AttrValue,
}

impl AttrValue {
    fn describe(&self) -> String {
        match self {
            AttrValue::Num(n) => format!("number {n}"),
            AttrValue::Word(w) => format!("'{w}'"),
            AttrValue::List(_) => "a list".into(),
            AttrValue::Tensor(t) => format!("a {} tensor", t.ty()),
            AttrValue::Record { tag: Some(t), .. } => format!("'{t}(...)'"),
            AttrValue::Record { tag: None, .. } => "'(...)'".into(),
        }
    }
}

/// Why an attribute value did not convert: a message about the whole value (positioned at
/// it by [`Attrs`]), or an error already positioned inside it (a field of a record).
pub enum AttrError {
    Msg(String),
    At(ParseError),
}

impl From<String> for AttrError {
    fn from(m: String) -> AttrError {
        AttrError::Msg(m)
    }
}

impl From<ParseError> for AttrError {
    fn from(e: ParseError) -> AttrError {
        AttrError::At(e)
    }
}

type CR<T> = Result<T, AttrError>;
type Conv<T> = fn(&Spanned) -> CR<T>;

fn usize_of(s: &Spanned) -> CR<usize> {
    match &s.v {
        AttrValue::Num(n) => n
            .parse()
            .map_err(|_| AttrError::Msg(format!("expected a non-negative integer, found {n}"))),
        other => Err(AttrError::Msg(format!(
            "expected a non-negative integer, found {}",
            other.describe()
        ))),
    }
}

fn i64_of(s: &Spanned) -> CR<i64> {
    match &s.v {
        AttrValue::Num(n) => n
            .parse()
            .map_err(|_| AttrError::Msg(format!("expected an integer, found {n}"))),
        other => Err(AttrError::Msg(format!(
            "expected an integer, found {}",
            other.describe()
        ))),
    }
}

fn i32_of(s: &Spanned) -> CR<i32> {
    let v = i64_of(s)?;
    i32::try_from(v).map_err(|_| AttrError::Msg(format!("{v} does not fit in i32")))
}

fn f32_of(s: &Spanned) -> CR<f32> {
    match &s.v {
        AttrValue::Num(n) => parse_f32(n).map_err(AttrError::Msg),
        other => Err(AttrError::Msg(format!(
            "expected a float, found {}",
            other.describe()
        ))),
    }
}

fn bool_of(s: &Spanned) -> CR<bool> {
    match &s.v {
        AttrValue::Word(w) if w == "true" => Ok(true),
        AttrValue::Word(w) if w == "false" => Ok(false),
        other => Err(AttrError::Msg(format!(
            "expected true or false, found {}",
            other.describe()
        ))),
    }
}

fn dtype_of(s: &Spanned) -> CR<DType> {
    match &s.v {
        AttrValue::Word(w) => {
            DType::from_name(w).ok_or_else(|| AttrError::Msg(format!("unknown element type '{w}'")))
        }
        other => Err(AttrError::Msg(format!(
            "expected an element type, found {}",
            other.describe()
        ))),
    }
}

fn list_of<T>(s: &Spanned, item: Conv<T>) -> CR<Vec<T>> {
    match &s.v {
        AttrValue::List(items) => items.iter().map(item).collect(),
        other => Err(AttrError::Msg(format!(
            "expected a list [...], found {}",
            other.describe()
        ))),
    }
}

/// A scalar or a list of scalars (scales and zero points).
fn one_or_list<T>(s: &Spanned, item: Conv<T>) -> CR<Vec<T>> {
    match &s.v {
        AttrValue::List(_) => list_of(s, item),
        _ => Ok(vec![item(s)?]),
    }
}

fn usize_list(s: &Spanned) -> CR<Vec<usize>> {
    list_of(s, usize_of)
}

fn i64_list(s: &Spanned) -> CR<Vec<i64>> {
    list_of(s, i64_of)
}

/// `[lo, hi]`: a realized int8 op's clamp in its output's quantized domain.
fn quantized_bounds(s: &Spanned) -> CR<(i32, i32)> {
    match list_of(s, i32_of)?[..] {
        [lo, hi] => Ok((lo, hi)),
        ref other => Err(AttrError::Msg(format!(
            "expected [lo, hi], found {} values",
            other.len()
        ))),
    }
}

fn padding_of(s: &Spanned) -> CR<Padding> {
    match &s.v {
        AttrValue::Word(w) if w == "same_upper" => Ok(Padding::SameUpper),
        AttrValue::Word(w) if w == "same_lower" => Ok(Padding::SameLower),
        AttrValue::List(_) => Ok(Padding::Explicit(usize_list(s)?)),
        other => Err(AttrError::Msg(format!(
            "expected [pads...], same_upper or same_lower, found {}",
            other.describe()
        ))),
    }
}

fn tensor_of(s: &Spanned) -> CR<Tensor> {
    match &s.v {
        AttrValue::Tensor(t) => Ok(t.clone()),
        other => Err(AttrError::Msg(format!(
            "expected a tensor (f32[1] dense<0.0>), found {}",
            other.describe()
        ))),
    }
}

/// The fields of a record; errors inside it keep their own positions.
fn record_fields<'a>(s: &'a Spanned, label: &str, want_tag: bool) -> CR<(Option<&'a str>, Attrs)> {
    match &s.v {
        AttrValue::Record { tag, fields } if tag.is_some() == want_tag => {
            Ok((tag.as_deref(), Attrs::new(label, s.pos, fields.clone())))
        }
        other => {
            let want = if want_tag {
                "quantization parameters like u8(scale=0.1, zp=128)"
            } else {
                "a zero point"
            };
            Err(format!("expected {want}, found {}", other.describe()).into())
        }
    }
}

fn qparams_of(s: &Spanned) -> CR<QParams> {
    let (tag, mut f) = record_fields(s, "quantization parameters", true)?;
    let tag = tag.unwrap_or_default();
    let dtype = DType::from_name(tag).ok_or_else(|| format!("unknown element type '{tag}'"))?;
    let axis = f.opt("axis", usize_of)?;
    let scales = f.req("scale", |s| one_or_list(s, f32_of))?;
    let zps = f.req("zp", |s| one_or_list(s, i32_of))?;
    f.finish()?;
    Ok(QParams::new(dtype, axis, scales, zps).map_err(|e| e.to_string())?)
}

fn zero_point_of(s: &Spanned) -> CR<ZeroPoint> {
    if let AttrValue::Num(_) = s.v {
        return Ok(ZeroPoint {
            axis: None,
            values: vec![i32_of(s)?],
        });
    }
    let (_, mut f) = record_fields(s, "zero point", false)?;
    let axis = f.opt("axis", usize_of)?;
    let values = f.req("zp", |s| one_or_list(s, i32_of))?;
    f.finish()?;
    Ok(ZeroPoint { axis, values })
}

/// ConvInteger's/MatMulInteger's input zero point: a third input is the zero point read at
/// run time (as in ONNX), and then the attribute `key` must be absent.
fn input_zero_point(
    a: &mut Attrs,
    ctx: &OpContext,
    key: &'static str,
) -> Result<InputZeroPoint, ParseError> {
    let attribute = a.opt(key, zero_point_of)?;
    match (attribute, ctx.input_types.len() == 3) {
        (None, true) => Ok(InputZeroPoint::RunTime),
        (Some(_), true) => Err(ParseError::at(
            a.at,
            format!(
                "{} has both attribute '{key}' and a third input (the zero point read at run \
                 time): keep one",
                a.op
            ),
        )),
        (zp, false) => Ok(InputZeroPoint::Constant(zp.unwrap_or_else(ZeroPoint::zero))),
    }
}

/// The keywords `activation=` accepts, for error messages.
const ACTIVATION_KEYWORDS: &str = "relu, leaky_relu, clip, sigmoid, hard_sigmoid, hard_swish, tanh";

/// A fused op's `activation`: a keyword (`relu`), or a keyword with parameters
/// (`clip(min=0.0, max=6.0)`). Omitted parameters take the standalone op's ONNX defaults.
fn activation_of(s: &Spanned) -> CR<Activation> {
    let (keyword, fields) = match &s.v {
        AttrValue::Word(w) => (w.as_str(), Vec::new()),
        AttrValue::Record {
            tag: Some(t),
            fields,
        } => (t.as_str(), fields.clone()),
        other => {
            return Err(format!(
                "expected an activation ({ACTIVATION_KEYWORDS}), found {}",
                other.describe()
            )
            .into())
        }
    };
    let mut f = Attrs::new(&format!("activation {keyword}"), s.pos, fields);
    let act = match keyword {
        "relu" => Activation::Relu,
        "leaky_relu" => Activation::LeakyRelu {
            alpha: f.or("alpha", 0.01, f32_of)?,
        },
        "clip" => Activation::Clip {
            min: f.or("min", f32::NEG_INFINITY, f32_of)?,
            max: f.or("max", f32::INFINITY, f32_of)?,
        },
        "sigmoid" => Activation::Sigmoid,
        "hard_sigmoid" => Activation::HardSigmoid {
            alpha: f.or("alpha", 0.2, f32_of)?,
            beta: f.or("beta", 0.5, f32_of)?,
        },
        "hard_swish" => Activation::HardSwish,
        "tanh" => Activation::Tanh,
        other => {
            return Err(format!(
                "unknown activation '{other}' (expected one of: {ACTIVATION_KEYWORDS})"
            )
            .into())
        }
    };
    f.finish()?;
    Ok(act)
}

/// The attributes of one op, handed out by key; [`Attrs::finish`] rejects leftovers.
pub struct Attrs {
    op: String,
    at: Pos,
    fields: Vec<(String, Pos, Spanned, bool)>,
    known: Vec<&'static str>,
}

impl Attrs {
    pub fn new(op: &str, at: Pos, fields: Vec<(String, Pos, Spanned)>) -> Attrs {
        let fields = fields
            .into_iter()
            .map(|(k, p, v)| (k, p, v, false))
            .collect();
        Attrs {
            op: op.to_string(),
            at,
            fields,
            known: Vec::new(),
        }
    }

    fn opt<T>(
        &mut self,
        key: &'static str,
        conv: impl Fn(&Spanned) -> CR<T>,
    ) -> Result<Option<T>, ParseError> {
        self.known.push(key);
        let Some(field) = self.fields.iter_mut().find(|f| f.0 == key) else {
            return Ok(None);
        };
        field.3 = true;
        let value = &field.2;
        conv(value).map(Some).map_err(|e| match e {
            AttrError::Msg(m) => {
                ParseError::at(value.pos, format!("{} attribute '{key}': {m}", self.op))
            }
            AttrError::At(inner) => inner,
        })
    }

    fn req<T>(
        &mut self,
        key: &'static str,
        conv: impl Fn(&Spanned) -> CR<T>,
    ) -> Result<T, ParseError> {
        match self.opt(key, conv)? {
            Some(v) => Ok(v),
            None => Err(ParseError::at(
                self.at,
                format!("{} needs attribute '{key}'", self.op),
            )),
        }
    }

    fn or<T>(
        &mut self,
        key: &'static str,
        default: T,
        conv: impl Fn(&Spanned) -> CR<T>,
    ) -> Result<T, ParseError> {
        Ok(self.opt(key, conv)?.unwrap_or(default))
    }

    pub fn finish(self) -> Result<(), ParseError> {
        match self.fields.iter().find(|f| !f.3) {
            None => Ok(()),
            Some((key, pos, _, _)) => {
                let expected = if self.known.is_empty() {
                    "none".to_string()
                } else {
                    self.known.join(", ")
                };
                Err(ParseError::at(
                    *pos,
                    format!(
                        "{} has no attribute '{key}' (it takes: {expected})",
                        self.op
                    ),
                ))
            }
        }
    }
}

/// What the parser knows about a node before building its op, for defaults that depend on
/// the inputs (a Conv's kernel from its weight, a Transpose's default perm).
pub struct OpContext {
    pub input_types: Vec<TensorType>,
    pub num_outputs: usize,
}

impl OpContext {
    fn rank(&self, input: usize) -> Option<usize> {
        self.input_types.get(input).map(|t| t.rank())
    }
}

/// kernel, strides, dilations and pads (as a `PoolAttrs` without ceil mode); the kernel
/// defaults to the weight's spatial dims.
fn window(a: &mut Attrs, weight: Option<&TensorType>) -> Result<PoolAttrs, ParseError> {
    let kernel = match weight.filter(|w| w.rank() >= 2) {
        Some(w) => a.or("kernel", w.dims()[2..].to_vec(), usize_list)?,
        None => a.req("kernel", usize_list)?,
    };
    let n = kernel.len();
    let strides = a.or("strides", vec![1; n], usize_list)?;
    let dilations = a.or("dilations", vec![1; n], usize_list)?;
    let padding = a.or("pads", Padding::Explicit(vec![0; 2 * n]), padding_of)?;
    Ok(PoolAttrs {
        kernel,
        strides,
        dilations,
        padding,
        ceil_mode: false,
    })
}

fn conv_attrs(a: &mut Attrs, ctx: &OpContext) -> Result<ConvAttrs, ParseError> {
    let PoolAttrs {
        kernel,
        strides,
        dilations,
        padding,
        ..
    } = window(a, ctx.input_types.get(1))?;
    let group = a.or("group", 1, usize_of)?;
    Ok(ConvAttrs {
        kernel,
        strides,
        dilations,
        padding,
        group,
    })
}

fn gemm_attrs(a: &mut Attrs) -> Result<GemmAttrs, ParseError> {
    Ok(GemmAttrs {
        alpha: a.or("alpha", 1.0, f32_of)?,
        beta: a.or("beta", 1.0, f32_of)?,
        trans_a: a.or("trans_a", false, bool_of)?,
        trans_b: a.or("trans_b", false, bool_of)?,
    })
}

fn pool_attrs(a: &mut Attrs) -> Result<PoolAttrs, ParseError> {
    let window = window(a, None)?;
    Ok(PoolAttrs {
        ceil_mode: a.or("ceil_mode", false, bool_of)?,
        ..window
    })
}

/// Builds the op `name` from its attributes; every `Op` variant has a name here.
pub fn build_op(name: &str, at: Pos, mut a: Attrs, ctx: &OpContext) -> Result<Op, ParseError> {
    let act = |x: Activation| Op::Activation(x);
    let op = match name {
        "Conv" => Op::Conv(conv_attrs(&mut a, ctx)?),
        "BatchNormalization" => Op::BatchNorm {
            epsilon: a.or("epsilon", 1e-5, f32_of)?,
        },
        "Relu" => act(Activation::Relu),
        "LeakyRelu" => act(Activation::LeakyRelu {
            alpha: a.or("alpha", 0.01, f32_of)?,
        }),
        "Clip" => act(Activation::Clip {
            min: a.or("min", f32::NEG_INFINITY, f32_of)?,
            max: a.or("max", f32::INFINITY, f32_of)?,
        }),
        "Sigmoid" => act(Activation::Sigmoid),
        "HardSigmoid" => act(Activation::HardSigmoid {
            alpha: a.or("alpha", 0.2, f32_of)?,
            beta: a.or("beta", 0.5, f32_of)?,
        }),
        "HardSwish" => act(Activation::HardSwish),
        "Tanh" => act(Activation::Tanh),
        "Add" => Op::Binary(BinaryOp::Add),
        "Sub" => Op::Binary(BinaryOp::Sub),
        "Mul" => Op::Binary(BinaryOp::Mul),
        "Div" => Op::Binary(BinaryOp::Div),
        "Sum" => Op::Sum,
        "Concat" => Op::Concat {
            axis: a.req("axis", usize_of)?,
        },
        "Split" => {
            let axis = a.or("axis", 0, usize_of)?;
            Op::Split {
                axis,
                sizes: a.req("sizes", usize_list)?,
            }
        }
        "MaxPool" => Op::MaxPool(pool_attrs(&mut a)?),
        "AveragePool" => {
            let pool = pool_attrs(&mut a)?;
            Op::AveragePool {
                pool,
                count_include_pad: a.or("count_include_pad", false, bool_of)?,
            }
        }
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "GlobalMaxPool" => Op::GlobalMaxPool,
        "Gemm" => Op::Gemm(gemm_attrs(&mut a)?),
        "MatMul" => Op::MatMul,
        "Flatten" => Op::Flatten {
            axis: a.or("axis", 1, usize_of)?,
        },
        "Reshape" => {
            let shape = a.req("shape", i64_list)?;
            Op::Reshape {
                shape,
                allow_zero: a.or("allow_zero", false, bool_of)?,
            }
        }
        "Transpose" => {
            let reversed: Vec<usize> = (0..ctx.rank(0).unwrap_or(0)).rev().collect();
            Op::Transpose {
                perm: a.or("perm", reversed, usize_list)?,
            }
        }
        "Squeeze" => Op::Squeeze {
            axes: a.or("axes", Vec::new(), usize_list)?,
        },
        "Unsqueeze" => Op::Unsqueeze {
            axes: a.req("axes", usize_list)?,
        },
        "Softmax" => {
            let axis = a.req("axis", usize_of)?;
            Op::Softmax {
                axis,
                coerce_2d: a.or("coerce_2d", false, bool_of)?,
            }
        }
        "LRN" => Op::Lrn(LrnAttrs {
            alpha: a.or("alpha", 1e-4, f32_of)?,
            beta: a.or("beta", 0.75, f32_of)?,
            bias: a.or("bias", 1.0, f32_of)?,
            size: a.req("size", usize_of)?,
        }),
        "Dropout" => {
            let two_outputs = ctx.num_outputs == 2;
            Op::Dropout {
                mask_output: a.or("mask_output", two_outputs, bool_of)?,
            }
        }
        "Identity" => Op::Identity,
        "Pad" => {
            let pads = a.req("pads", i64_list)?;
            Op::Pad {
                pads,
                value: a.or("value", 0.0, f32_of)?,
            }
        }
        "Shape" => {
            let start = a.or("start", 0, usize_of)?;
            Op::Shape {
                start,
                end: a.or("end", ctx.rank(0).unwrap_or(0), usize_of)?,
            }
        }
        "Gather" => Op::Gather {
            axis: a.or("axis", 0, usize_of)?,
        },
        "Slice" => {
            let starts = a.req("starts", i64_list)?;
            let ends = a.req("ends", i64_list)?;
            let axes = a.or("axes", (0..starts.len()).collect(), usize_list)?;
            let steps = a.or("steps", vec![1; starts.len()], i64_list)?;
            Op::Slice {
                starts,
                ends,
                axes,
                steps,
            }
        }
        "Cast" => Op::Cast {
            to: a.req("to", dtype_of)?,
        },
        "ReduceMean" => {
            let axes = a.or("axes", Vec::new(), usize_list)?;
            Op::ReduceMean {
                axes,
                keep_dims: a.or("keep_dims", true, bool_of)?,
            }
        }
        "ConstantOfShape" => {
            let shape = a.req("shape", usize_list)?;
            let value = a.or("value", Tensor::from_f32(&[1], vec![0.0]), tensor_of)?;
            Op::ConstantOfShape { shape, value }
        }
        "QuantizeLinear" => Op::QuantizeLinear(a.req("q", qparams_of)?),
        "DequantizeLinear" => Op::DequantizeLinear(a.req("q", qparams_of)?),
        "QLinearConv" => {
            let conv = conv_attrs(&mut a, ctx)?;
            let x = a.req("x", qparams_of)?;
            let w = a.req("w", qparams_of)?;
            Op::QLinearConv {
                conv,
                x,
                w,
                y: a.req("y", qparams_of)?,
            }
        }
        "QLinearMatMul" => {
            let qa = a.req("a", qparams_of)?;
            let qb = a.req("b", qparams_of)?;
            Op::QLinearMatMul {
                a: qa,
                b: qb,
                y: a.req("y", qparams_of)?,
            }
        }
        "QuantizedConv" => {
            let conv = conv_attrs(&mut a, ctx)?;
            let x = a.req("x", qparams_of)?;
            let w = a.req("w", qparams_of)?;
            let y = a.req("y", qparams_of)?;
            Op::QuantizedConv {
                conv,
                x,
                w,
                y,
                residual: a.opt("residual", qparams_of)?,
                clamp: a.opt("clamp", quantized_bounds)?,
            }
        }
        "QuantizedMatMul" => {
            let qa = a.req("a", qparams_of)?;
            let qb = a.req("b", qparams_of)?;
            Op::QuantizedMatMul {
                a: qa,
                b: qb,
                y: a.req("y", qparams_of)?,
                clamp: a.opt("clamp", quantized_bounds)?,
            }
        }
        "QuantizedAdd" => {
            let qa = a.req("a", qparams_of)?;
            let qb = a.req("b", qparams_of)?;
            Op::QuantizedAdd {
                a: qa,
                b: qb,
                y: a.req("y", qparams_of)?,
                clamp: a.opt("clamp", quantized_bounds)?,
            }
        }
        "QuantizedGlobalAveragePool" => {
            let x = a.req("x", qparams_of)?;
            Op::QuantizedGlobalAveragePool {
                x,
                y: a.req("y", qparams_of)?,
            }
        }
        "ConvInteger" => {
            let conv = conv_attrs(&mut a, ctx)?;
            let x_zero_point = input_zero_point(&mut a, ctx, "x_zp")?;
            let w_zero_point = a.or("w_zp", ZeroPoint::zero(), zero_point_of)?;
            Op::ConvInteger {
                conv,
                x_zero_point,
                w_zero_point,
            }
        }
        "MatMulInteger" => {
            let a_zero_point = input_zero_point(&mut a, ctx, "a_zp")?;
            let b_zero_point = a.or("b_zp", ZeroPoint::zero(), zero_point_of)?;
            Op::MatMulInteger {
                a_zero_point,
                b_zero_point,
            }
        }
        "DynamicQuantizeLinear" => Op::DynamicQuantizeLinear,
        "FusedConv" => {
            let conv = conv_attrs(&mut a, ctx)?;
            // A fourth input can only be the residual, so its presence is the default.
            let has_fourth_input = ctx.input_types.len() == 4;
            let residual = a.or("residual", has_fourth_input, bool_of)?;
            Op::FusedConv {
                conv,
                residual,
                activation: a.opt("activation", activation_of)?,
            }
        }
        "DynamicQuantizedConv" => {
            let conv = conv_attrs(&mut a, ctx)?;
            let w = a.req("w", qparams_of)?;
            let residual = a.or("residual", ctx.input_types.len() == 6, bool_of)?;
            Op::DynamicQuantizedConv {
                conv,
                w,
                residual,
                activation: a.opt("activation", activation_of)?,
            }
        }
        "DynamicQuantizedMatMul" => {
            let b = a.req("b", qparams_of)?;
            Op::DynamicQuantizedMatMul {
                b,
                activation: a.opt("activation", activation_of)?,
            }
        }
        "FusedGemm" => {
            let gemm = gemm_attrs(&mut a)?;
            Op::FusedGemm {
                gemm,
                activation: a.opt("activation", activation_of)?,
            }
        }
        other => {
            let hint = "ops are spelled as ONNX spells them, e.g. Conv, BatchNormalization, LRN";
            return Err(ParseError::at(at, format!("unknown op '{other}' ({hint})")));
        }
    };
    a.finish()?;
    Ok(op)
}
