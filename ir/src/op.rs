//! The closed set of operations a qcc graph can hold, with typed attributes.
//!
//! Attributes that ONNX passes as inputs in newer opsets (Reshape's shape, Slice's bounds,
//! Clip's bounds, Q/DQ parameters...) are attributes here: the importer requires them to be
//! known at import time, so every later stage sees static, typed parameters. Axes are
//! normalised (non-negative) by the importer, which knows every input's rank.

use crate::dtype::DType;
use crate::quant::{InputZeroPoint, QParams, ZeroPoint};
use crate::requant::{AddMultipliers, FixedPoint, FixedPointError};
use crate::tensor::Tensor;

/// How a convolution or pooling window is padded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Explicit pads, ONNX order: all spatial begins, then all spatial ends.
    Explicit(Vec<usize>),
    /// Output size `ceil(in / stride)`; an odd total pad puts the extra element at the end.
    SameUpper,
    /// As `SameUpper`, the extra element at the beginning.
    SameLower,
}

/// Convolution window attributes (also used by QLinearConv and ConvInteger).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvAttrs {
    /// Spatial kernel size (taken from the weight shape when ONNX omits `kernel_shape`).
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub padding: Padding,
    pub group: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolAttrs {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub padding: Padding,
    /// Output size rounds up instead of down (windows may start in the end padding).
    pub ceil_mode: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmAttrs {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrnAttrs {
    pub alpha: f32,
    pub beta: f32,
    pub bias: f32,
    pub size: usize,
}

/// Element-wise activations. They are one family because the back end fuses any of them
/// into the epilogue of a convolution or matrix product.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu {
        alpha: f32,
    },
    /// Missing bounds are infinite (ONNX's defaults); ReLU6 is `Clip { 0, 6 }`.
    Clip {
        min: f32,
        max: f32,
    },
    Sigmoid,
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    HardSwish,
    Tanh,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// One operation. Matching on it exhaustively in inference, evaluation and lowering turns a
/// forgotten op into a compile error rather than a silent fallback.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// Inputs: X, W, optional B.
    Conv(ConvAttrs),
    /// Inputs: X, scale, B, mean, var (inference form).
    BatchNorm {
        epsilon: f32,
    },
    Activation(Activation),
    /// Numpy-broadcasting arithmetic on two inputs.
    Binary(BinaryOp),
    /// Broadcasting sum of one or more inputs.
    Sum,
    Concat {
        axis: usize,
    },
    /// One output per size along `axis`.
    Split {
        axis: usize,
        sizes: Vec<usize>,
    },
    MaxPool(PoolAttrs),
    AveragePool {
        pool: PoolAttrs,
        count_include_pad: bool,
    },
    GlobalAveragePool,
    GlobalMaxPool,
    /// Inputs: A, B, optional C.
    Gemm(GemmAttrs),
    MatMul,
    Flatten {
        axis: usize,
    },
    /// ONNX semantics: 0 copies the input dim (unless `allow_zero`), -1 is inferred.
    Reshape {
        shape: Vec<i64>,
        allow_zero: bool,
    },
    Transpose {
        perm: Vec<usize>,
    },
    /// Sorted, de-duplicated axes of the input to remove.
    Squeeze {
        axes: Vec<usize>,
    },
    /// Sorted axes of the output at which to insert 1s.
    Unsqueeze {
        axes: Vec<usize>,
    },
    /// `coerce_2d`: opsets before 13 flatten the input to 2-D at `axis` and normalise each row;
    /// from 13 on, the softmax runs along the single `axis`.
    Softmax {
        axis: usize,
        coerce_2d: bool,
    },
    Lrn(LrnAttrs),
    /// Inference-mode dropout: the identity; the optional mask output is all true.
    Dropout {
        mask_output: bool,
    },
    Identity,
    /// Constant-mode padding; pads in ONNX order (all begins then all ends), negative crops.
    Pad {
        pads: Vec<i64>,
        value: f32,
    },
    /// The input's shape as i64, dims `start..end` (already clamped to the rank).
    Shape {
        start: usize,
        end: usize,
    },
    /// Inputs: data, indices (negative indices count from the end).
    Gather {
        axis: usize,
    },
    /// Per-axis starts/ends/steps exactly as ONNX gives them; clamping happens in inference.
    Slice {
        starts: Vec<i64>,
        ends: Vec<i64>,
        axes: Vec<usize>,
        steps: Vec<i64>,
    },
    Cast {
        to: DType,
    },
    /// Empty `axes` reduces all axes (ONNX's default).
    ReduceMean {
        axes: Vec<usize>,
        keep_dims: bool,
    },
    /// A tensor of `shape` filled with `value` (a one-element tensor giving the type).
    ConstantOfShape {
        shape: Vec<usize>,
        value: Tensor,
    },
    /// Input: x (f32). Output: the quantized type of `params`.
    QuantizeLinear(QParams),
    /// Input: x (i8, u8 or i32). Output: f32.
    DequantizeLinear(QParams),
    /// Inputs: x, w, optional bias (i32).
    QLinearConv {
        conv: ConvAttrs,
        x: QParams,
        w: QParams,
        y: QParams,
    },
    /// Inputs: a, b.
    QLinearMatMul {
        a: QParams,
        b: QParams,
        y: QParams,
    },
    /// Inputs: x, w, and x's zero point when it is [`InputZeroPoint::RunTime`]. Output: i32.
    ConvInteger {
        conv: ConvAttrs,
        x_zero_point: InputZeroPoint,
        w_zero_point: ZeroPoint,
    },
    /// Inputs: a, b, and a's zero point when it is [`InputZeroPoint::RunTime`]. Output: i32.
    MatMulInteger {
        a_zero_point: InputZeroPoint,
        b_zero_point: ZeroPoint,
    },
    /// Input: x (f32). Outputs: y (u8), y_scale (f32 scalar), y_zero_point (u8 scalar).
    DynamicQuantizeLinear,
    /// A convolution with its epilogue, made by the fusion rewrites: `act(conv(X, W) + B + R)`.
    /// Inputs: X, W, B (always present: fusion materialises a zero bias), and R when
    /// `residual` (same shape as the output: a broadcasting add is never fused).
    FusedConv {
        conv: ConvAttrs,
        residual: bool,
        activation: Option<Activation>,
    },
    /// `act(Gemm(A, B, C))`. Inputs as Gemm.
    FusedGemm {
        gemm: GemmAttrs,
        activation: Option<Activation>,
    },
    /// qcc's realized int8 convolution: what the quantization pass produces and the int8
    /// kernels implement, with qcc's integer requantization ([`crate::requant`]), not ONNX's
    /// float one (that is [`Op::QLinearConv`]).
    ///
    /// Inputs: x (u8 or i8, quantized per tensor by `x`), w (i8, quantized by `w` per tensor
    /// or per output channel along axis 0; a constant the back end packs at compile time),
    /// bias (i32 `[C_out]`, scale `s_x·s_w[c]`, zero point 0; optional unless `residual`),
    /// and r (same shape as the output, u8 or i8 per tensor by `residual`) when `residual`.
    /// For output channel `c`, in this order:
    ///
    /// ```text
    /// acc = Σ (x − zp_x)(w − zp_w[c]) + bias[c]              i32, wrapping
    /// acc = sat_i32(acc + R[c].apply(r − zp_r))             only with a residual
    /// q   = sat_y(zp_y + M[c].apply(acc)), then clamp to [lo, hi] when `clamp`
    /// M[c] = FixedPoint::from_real(s_x·s_w[c] / s_y)        see [`requant_multipliers`]
    /// R[c] = FixedPoint::from_real(s_r / (s_x·s_w[c]))      see [`residual_multipliers`]
    /// ```
    ///
    /// Padding taps read the zero point, so they contribute nothing.
    QuantizedConv {
        conv: ConvAttrs,
        x: QParams,
        w: QParams,
        y: QParams,
        /// The residual input's parameters: the skip connection of a residual block added in
        /// i32 into the accumulator before requantization (the `tensorrt` profile's fusion).
        residual: Option<QParams>,
        /// Inclusive bounds in y's quantized domain, inside its type's range: a fused ReLU
        /// (`(zp_y, max)`) or ReLU6 (`(zp_y, zp_y + round(6 / s_y))`), already quantized.
        clamp: Option<(i32, i32)>,
    },
    /// qcc's realized int8 matrix product (fully connected layers), requantized as
    /// [`Op::QuantizedConv`] with the column `n` in place of the output channel.
    ///
    /// Inputs: a (u8 or i8 `[..., M, K]`, per tensor), b (i8 `[K, N]`, per tensor or per
    /// column along axis 1; a constant), optional bias (i32 `[N]`, scale `s_a·s_b[n]`).
    /// Output `[..., M, N]`:
    /// `q = clamp(sat_y(zp_y + M[n].apply(Σ_k (a − zp_a)(b − zp_b[n]) + bias[n])))`.
    QuantizedMatMul {
        a: QParams,
        b: QParams,
        y: QParams,
        /// As [`Op::QuantizedConv`]'s.
        clamp: Option<(i32, i32)>,
    },
    /// qcc's realized int8 addition (a residual Add whose two inputs are quantized, the
    /// `QuantizeBothInputs` profiles). Inputs a, b: u8 or i8 per tensor, **same shape** as the
    /// output (a broadcasting add is not realized). With
    /// `(a_m, b_m, n) = `[`add_multipliers`]`(a, b, y)`, element-wise:
    ///
    /// ```text
    /// q = sat_y(zp_y + ((a_m·(a − zp_a) + b_m·(b − zp_b) + 2^(n-1)) >> n))
    /// ```
    ///
    /// then clamp to `clamp` (a fused ReLU/ReLU6), as [`crate::requant::AddMultipliers`].
    QuantizedAdd {
        a: QParams,
        b: QParams,
        y: QParams,
        clamp: Option<(i32, i32)>,
    },
    /// qcc's realized int8 global average pool. Input x `[N, C, *spatial]` (u8 or i8 per
    /// tensor), output `[N, C, 1, ...]` of y's type:
    /// `q = sat_y(zp_y + M.apply(Σ_spatial (x − zp_x)))` with
    /// `M = FixedPoint::from_real(s_x / (s_y · spatial size))` ([`pool_multiplier`]).
    QuantizedGlobalAveragePool {
        x: QParams,
        y: QParams,
    },
    /// qcc's dynamically quantized convolution (`--mode dynamic`): weights quantized at
    /// compile time, the input quantized per tensor at run time by a
    /// [`Op::DynamicQuantizeLinear`], a float output: [`Op::FusedConv`] with an integer
    /// dot product.
    ///
    /// Inputs: x (u8), x_scale (f32 scalar) and x_zero_point (u8 scalar), the three outputs
    /// of one DynamicQuantizeLinear; w (i8 `[C_out, C_in/group, kH, kW]`, quantized by `w`
    /// per tensor or per output channel along axis 0, zero points `zw` any i8 (asymmetric
    /// weights, e.g. onnxruntime's u8 weights stored as s8 by `w − 128`, `zw − 128`); a
    /// constant the back end packs); bias (f32 `[C_out]`, always present); r (f32, the
    /// output's shape) when `residual`. For output channel `c`, in this order, each float
    /// step rounded once in f32 (no fused multiply-add):
    ///
    /// ```text
    /// acc = Σ (x − x_zero_point)·(w − zw[c])   i32, wrapping; padding taps read x_zero_point
    /// s   = x_scale · s_w[c]
    /// y   = f32(acc) · s + bias[c]               f32(acc) rounds to nearest even
    /// y   = y + r                                only with a residual
    /// y   = act(y)                               as Op::Activation
    /// ```
    DynamicQuantizedConv {
        conv: ConvAttrs,
        w: QParams,
        residual: bool,
        activation: Option<Activation>,
    },
    /// qcc's dynamically quantized matrix product (fully connected layers), as
    /// [`Op::DynamicQuantizedConv`] with the column `n` in place of the output channel.
    ///
    /// Inputs: a (u8 `[..., M, K]`), a_scale, a_zero_point (from one DynamicQuantizeLinear),
    /// b (i8 `[K, N]`, zero points `zb` any i8, per tensor or per column along axis 1; a
    /// constant), bias (f32 `[N]`). Output f32 `[..., M, N]`, `acc` i32 and wrapping:
    ///
    /// ```text
    /// acc = Σ_k (a − a_zero_point)·(b[k, n] − zb[n])
    /// y   = act(f32(acc) · (a_scale · s_b[n]) + bias[n])
    /// ```
    DynamicQuantizedMatMul {
        b: QParams,
        activation: Option<Activation>,
    },
}

/// The requantization multipliers of a realized int8 op ([`Op::QuantizedConv`],
/// [`Op::QuantizedMatMul`]): `M[c] = FixedPoint::from_real(s_x·s_w[c] / s_y)`, one per weight
/// scale (one for per-tensor weights), the real ratio computed in f64 (the product of two
/// f32 is exact there; the quotient rounds once). This is the one source of the multipliers:
/// the interpreter and every back end derive them from the op's `QParams` with this function.
pub fn requant_multipliers(
    x: &QParams,
    w: &QParams,
    y: &QParams,
) -> Result<Vec<FixedPoint>, FixedPointError> {
    let (s_x, s_y) = (x.scales()[0] as f64, y.scales()[0] as f64);
    w.scales()
        .iter()
        .map(|&s_w| FixedPoint::from_real(s_x * s_w as f64 / s_y))
        .collect()
}

/// The multipliers that bring a residual input into a conv's accumulator scale:
/// `R[c] = FixedPoint::from_real(s_r / (s_x·s_w[c]))`, in f64, one per weight scale.
pub fn residual_multipliers(
    x: &QParams,
    w: &QParams,
    residual: &QParams,
) -> Result<Vec<FixedPoint>, FixedPointError> {
    let (s_x, s_r) = (x.scales()[0] as f64, residual.scales()[0] as f64);
    w.scales()
        .iter()
        .map(|&s_w| FixedPoint::from_real(s_r / (s_x * s_w as f64)))
        .collect()
}

/// The multipliers of [`Op::QuantizedAdd`]: `s_a / s_y` and `s_b / s_y` in f64, over one
/// shift ([`AddMultipliers::from_ratios`]).
pub fn add_multipliers(
    a: &QParams,
    b: &QParams,
    y: &QParams,
) -> Result<AddMultipliers, FixedPointError> {
    let s_y = y.scales()[0] as f64;
    AddMultipliers::from_ratios(a.scales()[0] as f64 / s_y, b.scales()[0] as f64 / s_y)
}

/// The multiplier of [`Op::QuantizedGlobalAveragePool`] over `window` elements:
/// `FixedPoint::from_real(s_x / (s_y · window))`, in f64.
pub fn pool_multiplier(
    x: &QParams,
    y: &QParams,
    window: usize,
) -> Result<FixedPoint, FixedPointError> {
    let (s_x, s_y) = (x.scales()[0] as f64, y.scales()[0] as f64);
    FixedPoint::from_real(s_x / (s_y * window.max(1) as f64))
}

impl Op {
    /// The op's name as ONNX spells it (activations and binaries by their own names), for
    /// diagnostics, op counts and the `.qir` text.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv(_) => "Conv",
            Op::BatchNorm { .. } => "BatchNormalization",
            Op::Activation(a) => match a {
                Activation::Relu => "Relu",
                Activation::LeakyRelu { .. } => "LeakyRelu",
                Activation::Clip { .. } => "Clip",
                Activation::Sigmoid => "Sigmoid",
                Activation::HardSigmoid { .. } => "HardSigmoid",
                Activation::HardSwish => "HardSwish",
                Activation::Tanh => "Tanh",
            },
            Op::Binary(b) => match b {
                BinaryOp::Add => "Add",
                BinaryOp::Sub => "Sub",
                BinaryOp::Mul => "Mul",
                BinaryOp::Div => "Div",
            },
            Op::Sum => "Sum",
            Op::Concat { .. } => "Concat",
            Op::Split { .. } => "Split",
            Op::MaxPool(_) => "MaxPool",
            Op::AveragePool { .. } => "AveragePool",
            Op::GlobalAveragePool => "GlobalAveragePool",
            Op::GlobalMaxPool => "GlobalMaxPool",
            Op::Gemm(_) => "Gemm",
            Op::MatMul => "MatMul",
            Op::Flatten { .. } => "Flatten",
            Op::Reshape { .. } => "Reshape",
            Op::Transpose { .. } => "Transpose",
            Op::Squeeze { .. } => "Squeeze",
            Op::Unsqueeze { .. } => "Unsqueeze",
            Op::Softmax { .. } => "Softmax",
            Op::Lrn(_) => "LRN",
            Op::Dropout { .. } => "Dropout",
            Op::Identity => "Identity",
            Op::Pad { .. } => "Pad",
            Op::Shape { .. } => "Shape",
            Op::Gather { .. } => "Gather",
            Op::Slice { .. } => "Slice",
            Op::Cast { .. } => "Cast",
            Op::ReduceMean { .. } => "ReduceMean",
            Op::ConstantOfShape { .. } => "ConstantOfShape",
            Op::QuantizeLinear(_) => "QuantizeLinear",
            Op::DequantizeLinear(_) => "DequantizeLinear",
            Op::QLinearConv { .. } => "QLinearConv",
            Op::QLinearMatMul { .. } => "QLinearMatMul",
            Op::ConvInteger { .. } => "ConvInteger",
            Op::MatMulInteger { .. } => "MatMulInteger",
            Op::DynamicQuantizeLinear => "DynamicQuantizeLinear",
            Op::FusedConv { .. } => "FusedConv",
            Op::FusedGemm { .. } => "FusedGemm",
            Op::QuantizedConv { .. } => "QuantizedConv",
            Op::QuantizedMatMul { .. } => "QuantizedMatMul",
            Op::QuantizedAdd { .. } => "QuantizedAdd",
            Op::QuantizedGlobalAveragePool { .. } => "QuantizedGlobalAveragePool",
            Op::DynamicQuantizedConv { .. } => "DynamicQuantizedConv",
            Op::DynamicQuantizedMatMul { .. } => "DynamicQuantizedMatMul",
        }
    }

    /// The name for people: a fused op lists what it contains (`Conv+Add+Relu`); every other
    /// op is its [`Op::name`].
    pub fn display_name(&self) -> String {
        let mut parts = match self {
            Op::FusedConv { residual, .. } => {
                let mut p = vec!["Conv"];
                if *residual {
                    p.push("Add");
                }
                p
            }
            Op::FusedGemm { .. } => vec!["Gemm"],
            other => return other.name().to_string(),
        };
        if let Op::FusedConv {
            activation: Some(a),
            ..
        }
        | Op::FusedGemm {
            activation: Some(a),
            ..
        } = self
        {
            parts.push(Op::Activation(*a).name());
        }
        parts.join("+")
    }

    /// How many inputs the op takes: (required, maximum). `None` maximum means variadic.
    pub fn arity(&self) -> (usize, Option<usize>) {
        match self {
            Op::Conv(_) | Op::Gemm(_) => (2, Some(3)),
            Op::FusedConv { residual, .. } => {
                (3 + *residual as usize, Some(3 + *residual as usize))
            }
            Op::FusedGemm { .. } => (2, Some(3)),
            Op::DynamicQuantizedConv { residual, .. } => {
                (5 + *residual as usize, Some(5 + *residual as usize))
            }
            Op::DynamicQuantizedMatMul { .. } => (5, Some(5)),
            Op::QLinearConv { .. } | Op::QuantizedMatMul { .. } => (2, Some(3)),
            // The bias is optional only without a residual, so a third input is unambiguous.
            Op::QuantizedConv { residual, .. } => match residual {
                Some(_) => (4, Some(4)),
                None => (2, Some(3)),
            },
            Op::BatchNorm { .. } => (5, Some(5)),
            Op::Binary(_)
            | Op::MatMul
            | Op::Gather { .. }
            | Op::QLinearMatMul { .. }
            | Op::QuantizedAdd { .. } => (2, Some(2)),
            Op::ConvInteger {
                x_zero_point: zp, ..
            }
            | Op::MatMulInteger {
                a_zero_point: zp, ..
            } => (zp.node_inputs(), Some(zp.node_inputs())),
            Op::Sum | Op::Concat { .. } => (1, None),
            Op::ConstantOfShape { .. } => (0, Some(0)),
            _ => (1, Some(1)),
        }
    }

    /// How many outputs the op produces.
    pub fn num_outputs(&self) -> usize {
        match self {
            Op::Split { sizes, .. } => sizes.len(),
            Op::Dropout { mask_output } => 1 + *mask_output as usize,
            Op::DynamicQuantizeLinear => 3,
            _ => 1,
        }
    }
}
