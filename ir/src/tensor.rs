//! Tensors with values: constants in a graph, and the interpreter's operands.

use crate::dtype::{DType, Shape, TensorType};
use half::f16;
use ndarray::{ArrayD, IxDyn};

/// A tensor of one of qcc's element types, stored as an ndarray in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    F32(ArrayD<f32>),
    F16(ArrayD<f16>),
    I8(ArrayD<i8>),
    U8(ArrayD<u8>),
    I32(ArrayD<i32>),
    I64(ArrayD<i64>),
    Bool(ArrayD<bool>),
}

/// Runs the same expression on whichever array a tensor holds.
#[macro_export]
macro_rules! dispatch_tensor {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::Tensor::F32($a) => $body,
            $crate::Tensor::F16($a) => $body,
            $crate::Tensor::I8($a) => $body,
            $crate::Tensor::U8($a) => $body,
            $crate::Tensor::I32($a) => $body,
            $crate::Tensor::I64($a) => $body,
            $crate::Tensor::Bool($a) => $body,
        }
    };
}

/// Same as [`dispatch_tensor!`], rebuilding a tensor of the same variant from the body's array.
#[macro_export]
macro_rules! map_tensor {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::Tensor::F32($a) => $crate::Tensor::F32($body),
            $crate::Tensor::F16($a) => $crate::Tensor::F16($body),
            $crate::Tensor::I8($a) => $crate::Tensor::I8($body),
            $crate::Tensor::U8($a) => $crate::Tensor::U8($body),
            $crate::Tensor::I32($a) => $crate::Tensor::I32($body),
            $crate::Tensor::I64($a) => $crate::Tensor::I64($body),
            $crate::Tensor::Bool($a) => $crate::Tensor::Bool($body),
        }
    };
}

/// A tensor held the wrong element type for what was asked of it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("expected a {expected} tensor, found {found}")]
pub struct DTypeMismatch {
    pub expected: DType,
    pub found: DType,
}

macro_rules! accessors {
    ($($as:ident, $into:ident, $var:ident, $t:ty;)*) => {
        $(
            pub fn $as(&self) -> Result<&ArrayD<$t>, DTypeMismatch> {
                match self {
                    Tensor::$var(a) => Ok(a),
                    other => Err(DTypeMismatch { expected: DType::$var, found: other.dtype() }),
                }
            }
            pub fn $into(self) -> Result<ArrayD<$t>, DTypeMismatch> {
                match self {
                    Tensor::$var(a) => Ok(a),
                    other => Err(DTypeMismatch { expected: DType::$var, found: other.dtype() }),
                }
            }
        )*
    };
}

impl Tensor {
    accessors! {
        as_f32, into_f32, F32, f32;
        as_f16, into_f16, F16, f16;
        as_i8, into_i8, I8, i8;
        as_u8, into_u8, U8, u8;
        as_i32, into_i32, I32, i32;
        as_i64, into_i64, I64, i64;
        as_bool, into_bool, Bool, bool;
    }

    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::F16(_) => DType::F16,
            Tensor::I8(_) => DType::I8,
            Tensor::U8(_) => DType::U8,
            Tensor::I32(_) => DType::I32,
            Tensor::I64(_) => DType::I64,
            Tensor::Bool(_) => DType::Bool,
        }
    }

    pub fn dims(&self) -> &[usize] {
        dispatch_tensor!(self, a => a.shape())
    }

    pub fn shape(&self) -> Shape {
        Shape(self.dims().to_vec())
    }

    pub fn ty(&self) -> TensorType {
        TensorType {
            dtype: self.dtype(),
            shape: self.shape(),
        }
    }

    pub fn numel(&self) -> usize {
        dispatch_tensor!(self, a => a.len())
    }

    /// A tensor of zeros (false for bool).
    pub fn zeros(ty: &TensorType) -> Tensor {
        let s = IxDyn(ty.dims());
        match ty.dtype {
            DType::F32 => Tensor::F32(ArrayD::zeros(s)),
            DType::F16 => Tensor::F16(ArrayD::from_elem(s, f16::ZERO)),
            DType::I8 => Tensor::I8(ArrayD::zeros(s)),
            DType::U8 => Tensor::U8(ArrayD::zeros(s)),
            DType::I32 => Tensor::I32(ArrayD::zeros(s)),
            DType::I64 => Tensor::I64(ArrayD::zeros(s)),
            DType::Bool => Tensor::Bool(ArrayD::from_elem(s, false)),
        }
    }

    pub fn scalar_f32(v: f32) -> Tensor {
        Tensor::F32(ArrayD::from_elem(IxDyn(&[]), v))
    }

    pub fn from_f32(dims: &[usize], data: Vec<f32>) -> Tensor {
        Tensor::F32(
            ArrayD::from_shape_vec(IxDyn(dims), data)
                .expect("from_f32: data length must match dims"),
        )
    }

    pub fn from_i64(dims: &[usize], data: Vec<i64>) -> Tensor {
        Tensor::I64(
            ArrayD::from_shape_vec(IxDyn(dims), data)
                .expect("from_i64: data length must match dims"),
        )
    }

    /// Every element widened to i64, in row-major order: for shape-like and index tensors.
    /// `None` for float tensors, which never hold indices.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        Some(match self {
            Tensor::I8(a) => a.iter().map(|&v| v as i64).collect(),
            Tensor::U8(a) => a.iter().map(|&v| v as i64).collect(),
            Tensor::I32(a) => a.iter().map(|&v| v as i64).collect(),
            Tensor::I64(a) => a.iter().copied().collect(),
            Tensor::Bool(a) => a.iter().map(|&v| v as i64).collect(),
            Tensor::F32(_) | Tensor::F16(_) => return None,
        })
    }

    /// Every element as f64, in row-major order (exact for every type qcc has).
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match self {
            Tensor::F32(a) => a.iter().map(|&v| v as f64).collect(),
            Tensor::F16(a) => a.iter().map(|&v| v.to_f64()).collect(),
            Tensor::I8(a) => a.iter().map(|&v| v as f64).collect(),
            Tensor::U8(a) => a.iter().map(|&v| v as f64).collect(),
            Tensor::I32(a) => a.iter().map(|&v| v as f64).collect(),
            Tensor::I64(a) => a.iter().map(|&v| v as f64).collect(),
            Tensor::Bool(a) => a.iter().map(|&v| v as u8 as f64).collect(),
        }
    }

    /// The raw little-endian bytes, row-major: the layout of ONNX `raw_data` and of compiled weights.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.numel() * self.dtype().size_bytes());
        match self {
            Tensor::F32(a) => a
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            Tensor::F16(a) => a
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            Tensor::I8(a) => a
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            Tensor::U8(a) => out.extend(a.iter()),
            Tensor::I32(a) => a
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            Tensor::I64(a) => a
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            Tensor::Bool(a) => out.extend(a.iter().map(|&b| b as u8)),
        }
        out
    }

    /// Builds a tensor from little-endian bytes; `None` when the byte count does not match.
    pub fn from_le_bytes(ty: &TensorType, bytes: &[u8]) -> Option<Tensor> {
        let n = ty.shape.numel();
        if bytes.len() != n * ty.dtype.size_bytes() {
            return None;
        }
        let s = IxDyn(ty.dims());
        fn collect<T, const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
            bytes
                .chunks_exact(N)
                .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
                .collect()
        }
        let t = match ty.dtype {
            DType::F32 => {
                Tensor::F32(ArrayD::from_shape_vec(s, collect(bytes, f32::from_le_bytes)).ok()?)
            }
            DType::F16 => {
                Tensor::F16(ArrayD::from_shape_vec(s, collect(bytes, f16::from_le_bytes)).ok()?)
            }
            DType::I8 => {
                Tensor::I8(ArrayD::from_shape_vec(s, collect(bytes, i8::from_le_bytes)).ok()?)
            }
            DType::U8 => Tensor::U8(ArrayD::from_shape_vec(s, bytes.to_vec()).ok()?),
            DType::I32 => {
                Tensor::I32(ArrayD::from_shape_vec(s, collect(bytes, i32::from_le_bytes)).ok()?)
            }
            DType::I64 => {
                Tensor::I64(ArrayD::from_shape_vec(s, collect(bytes, i64::from_le_bytes)).ok()?)
            }
            DType::Bool => Tensor::Bool(
                ArrayD::from_shape_vec(s, bytes.iter().map(|&b| b != 0).collect()).ok()?,
            ),
        };
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn le_bytes_round_trip_for_every_dtype() {
        for dtype in DType::ALL {
            let ty = TensorType::new(dtype, vec![2, 3]);
            let bytes: Vec<u8> = (0..ty.byte_size()).map(|i| (i * 37 % 251) as u8).collect();
            let bytes = if dtype == DType::Bool {
                bytes.iter().map(|b| b & 1).collect()
            } else {
                bytes
            };
            let t = Tensor::from_le_bytes(&ty, &bytes).unwrap();
            assert_eq!(t.ty(), ty);
            assert_eq!(t.to_le_bytes(), bytes, "{dtype}");
        }
    }

    #[test]
    fn from_le_bytes_refuses_a_wrong_length() {
        let ty = TensorType::new(DType::F32, vec![2]);
        assert!(Tensor::from_le_bytes(&ty, &[0u8; 7]).is_none());
    }
}
