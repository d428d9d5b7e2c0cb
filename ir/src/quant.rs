//! Quantization parameters carried by quantized ops.

use crate::dtype::DType;
use std::fmt;

/// How a tensor maps to reals: `real = (q - zero_point) * scale`, per tensor or per channel.
///
/// The fields are private so that every `QParams` in a graph is consistent: as many scales as
/// zero points, one of each per tensor or one per channel along `axis`, finite positive scales
/// and zero points inside the quantized type's range.
#[derive(Clone, Debug, PartialEq)]
pub struct QParams {
    dtype: DType,
    axis: Option<usize>,
    scales: Vec<f32>,
    zero_points: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QParamsError {
    #[error("quantized type must be i8, u8 or i32, not {0}")]
    BadDType(DType),
    #[error("{scales} scales but {zero_points} zero points")]
    LengthMismatch { scales: usize, zero_points: usize },
    #[error("per-tensor parameters need exactly one scale, found {0}")]
    NotScalar(usize),
    #[error("no scales given")]
    Empty,
    #[error("scale {0} is not a finite positive number")]
    BadScale(f32),
    #[error("zero point {zero_point} is outside the range of {dtype}")]
    ZeroPointOutOfRange { zero_point: i32, dtype: DType },
}

impl QParams {
    pub fn per_tensor(dtype: DType, scale: f32, zero_point: i32) -> Result<QParams, QParamsError> {
        QParams::new(dtype, None, vec![scale], vec![zero_point])
    }

    pub fn per_channel(
        dtype: DType,
        axis: usize,
        scales: Vec<f32>,
        zero_points: Vec<i32>,
    ) -> Result<QParams, QParamsError> {
        QParams::new(dtype, Some(axis), scales, zero_points)
    }

    /// `axis` is `None` for per-tensor parameters; then exactly one scale and zero point.
    pub fn new(
        dtype: DType,
        axis: Option<usize>,
        scales: Vec<f32>,
        zero_points: Vec<i32>,
    ) -> Result<QParams, QParamsError> {
        let (lo, hi) = quant_range(dtype).ok_or(QParamsError::BadDType(dtype))?;
        if scales.is_empty() {
            return Err(QParamsError::Empty);
        }
        if scales.len() != zero_points.len() {
            return Err(QParamsError::LengthMismatch {
                scales: scales.len(),
                zero_points: zero_points.len(),
            });
        }
        if axis.is_none() && scales.len() != 1 {
            return Err(QParamsError::NotScalar(scales.len()));
        }
        // ONNX allows a zero scale only in degenerate test models; dividing by it is undefined.
        if let Some(&s) = scales.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(QParamsError::BadScale(s));
        }
        if let Some(&zp) = zero_points
            .iter()
            .find(|&&z| (z as i64) < lo || (z as i64) > hi)
        {
            return Err(QParamsError::ZeroPointOutOfRange {
                zero_point: zp,
                dtype,
            });
        }
        Ok(QParams {
            dtype,
            axis,
            scales,
            zero_points,
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The channel axis for per-channel parameters, `None` per tensor.
    pub fn axis(&self) -> Option<usize> {
        self.axis
    }
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }
    pub fn zero_points(&self) -> &[i32] {
        &self.zero_points
    }
    pub fn is_per_tensor(&self) -> bool {
        self.axis.is_none()
    }
    /// Scale and zero point for channel `c` (any `c` per tensor).
    pub fn channel(&self, c: usize) -> (f32, i32) {
        let i = if self.axis.is_some() { c } else { 0 };
        (self.scales[i], self.zero_points[i])
    }
}

impl fmt::Display for QParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dtype)?;
        if let Some(a) = self.axis {
            write!(f, " axis={a}")?;
        }
        write!(f, " scale={:?} zp={:?}", self.scales, self.zero_points)
    }
}

/// Zero points alone, for ConvInteger and MatMulInteger (which have no scales).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZeroPoint {
    /// `None`: one value for the whole tensor; `Some(axis)`: one per channel along `axis`.
    pub axis: Option<usize>,
    pub values: Vec<i32>,
}

impl ZeroPoint {
    pub fn zero() -> ZeroPoint {
        ZeroPoint {
            axis: None,
            values: vec![0],
        }
    }
    pub fn channel(&self, c: usize) -> i32 {
        if self.axis.is_some() {
            self.values[c]
        } else {
            self.values[0]
        }
    }
}

/// The zero point of ConvInteger's x or MatMulInteger's A: known when the graph is built, or
/// read at run time from the node's third input. onnxruntime's dynamic quantization writes the
/// second form: the zero point is an output of the DynamicQuantizeLinear that quantized x.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputZeroPoint {
    Constant(ZeroPoint),
    /// Node input 2: one value of the input's type, for the whole tensor.
    RunTime,
}

impl InputZeroPoint {
    /// The zero point when it is known before run time.
    pub fn constant(&self) -> Option<&ZeroPoint> {
        match self {
            InputZeroPoint::Constant(zp) => Some(zp),
            InputZeroPoint::RunTime => None,
        }
    }

    /// How many inputs the node has: x (or A), w (or B), and the zero point when it is read
    /// at run time.
    pub fn node_inputs(&self) -> usize {
        match self {
            InputZeroPoint::Constant(_) => 2,
            InputZeroPoint::RunTime => 3,
        }
    }
}

/// The inclusive integer range of a quantized type; `None` for types that are not.
pub fn quant_range(dtype: DType) -> Option<(i64, i64)> {
    match dtype {
        DType::I8 => Some((-128, 127)),
        DType::U8 => Some((0, 255)),
        DType::I32 => Some((i32::MIN as i64, i32::MAX as i64)),
        _ => None,
    }
}

/// The parameters of an 8-bit (u8) graph input or output `v` of a model compiled with
/// quantized I/O (the `quantized-io` pass): those of the QuantizeLinear that makes an output,
/// or of the one DequantizeLinear that reads an input.
pub fn io_qparams(graph: &crate::Graph, v: crate::ValueId) -> Option<QParams> {
    use crate::{Op, ValueDef};
    if graph.value(v).ty.dtype != DType::U8 {
        return None;
    }
    if let ValueDef::Node { node, .. } = graph.value(v).def {
        return match &graph.node(node).op {
            Op::QuantizeLinear(p) => Some(p.clone()),
            _ => None,
        };
    }
    let readers = graph.consumers(v);
    match readers.as_slice() {
        [(n, _)] => match &graph.node(*n).op {
            Op::DequantizeLinear(p) => Some(p.clone()),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_inconsistent_parameters() {
        assert!(QParams::per_tensor(DType::U8, 0.1, 256).is_err());
        assert!(QParams::per_tensor(DType::I8, 0.0, 0).is_err());
        assert!(QParams::per_tensor(DType::F32, 0.1, 0).is_err());
        assert!(QParams::new(DType::I8, None, vec![0.1, 0.2], vec![0, 0]).is_err());
        assert!(QParams::per_channel(DType::I8, 0, vec![0.1, 0.2], vec![0]).is_err());
        let q = QParams::per_channel(DType::I8, 1, vec![0.1, 0.2], vec![0, 1]).unwrap();
        assert_eq!(q.channel(1), (0.2, 1));
    }
}
