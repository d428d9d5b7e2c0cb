//! Reading and writing `.npy` files (NumPy's array format, version 1.0–3.0) as qcc tensors.
//!
//! Written here rather than taken from a crate because qcc needs every dtype it computes
//! with, f16 included, and exact control over the error messages.

use qcc_ir::{DType, Tensor, TensorType};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: not a valid .npy file: {message}")]
    Format { path: String, message: String },
}

const MAGIC: &[u8] = b"\x93NUMPY";

fn descr(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::Bool => "|b1",
    }
}

fn dtype_of(descr: &str) -> Option<DType> {
    Some(match descr {
        "<f4" => DType::F32,
        "<f2" => DType::F16,
        "|i1" | "<i1" => DType::I8,
        "|u1" | "<u1" => DType::U8,
        "<i4" => DType::I32,
        "<i8" => DType::I64,
        "|b1" => DType::Bool,
        _ => return None,
    })
}

/// Serialises a tensor as a version 1.0 `.npy` file image (C order).
pub fn to_bytes(t: &Tensor) -> Vec<u8> {
    let dims = t.dims();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        descr(t.dtype())
    );
    // The header, with magic, version and length, is padded to a multiple of 64 bytes.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out =
        Vec::with_capacity(MAGIC.len() + 4 + header.len() + t.numel() * t.dtype().size_bytes());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&t.to_le_bytes());
    out
}

/// Parses a `.npy` file image. `what` names the source in errors.
pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Tensor, NpyError> {
    let err = |message: String| NpyError::Format {
        path: what.to_string(),
        message,
    };
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(err("missing the NUMPY magic string".into()));
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(err(format!("unsupported format version {v}"))),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or_else(|| err("header is truncated".into()))?;
    let header = std::str::from_utf8(header).map_err(|_| err("header is not text".into()))?;
    let field = |key: &str| -> Result<&str, NpyError> {
        let at = header
            .find(&format!("'{key}'"))
            .ok_or_else(|| err(format!("header has no '{key}'")))?;
        let rest = header[at + key.len() + 2..].trim_start();
        rest.strip_prefix(':')
            .map(str::trim_start)
            .ok_or_else(|| err(format!("malformed '{key}' entry")))
    };
    let descr_text = field("descr")?;
    let descr_text = descr_text
        .get(1..)
        .and_then(|s| s.split('\'').next())
        .ok_or_else(|| err("malformed descr".into()))?;
    let dtype = dtype_of(descr_text).ok_or_else(|| err(format!("dtype '{descr_text}' is not one qcc supports (f32, f16, i8, u8, i32, i64, bool, little-endian)")))?;
    if field("fortran_order")?.starts_with("True") {
        return Err(err(
            "Fortran-ordered arrays are not supported; save with C order".into(),
        ));
    }
    let shape_text = field("shape")?;
    let close = shape_text
        .find(')')
        .ok_or_else(|| err("malformed shape".into()))?;
    let dims: Vec<usize> = shape_text[1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| err(format!("bad dimension '{s}'")))
        })
        .collect::<Result<_, _>>()?;
    let ty = TensorType::new(dtype, dims);
    let data = &bytes[start + header_len..];
    Tensor::from_le_bytes(&ty, data).ok_or_else(|| {
        err(format!(
            "expected {} bytes of data for {ty}, found {}",
            ty.byte_size(),
            data.len()
        ))
    })
}

pub fn read(path: &Path) -> Result<Tensor, NpyError> {
    let bytes = std::fs::read(path).map_err(|source| NpyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    from_bytes(&bytes, &path.display().to_string())
}

pub fn write(path: &Path, t: &Tensor) -> Result<(), NpyError> {
    std::fs::write(path, to_bytes(t)).map_err(|source| NpyError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The file name for a tensor name: characters outside `[A-Za-z0-9._-]` become `_`
/// (the same rule as `scripts/ort_run.py`, so both tools write the same names).
pub fn file_name_for(tensor_name: &str) -> String {
    let stem: String = tensor_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{stem}.npy")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_dtype() {
        for dtype in DType::ALL {
            for dims in [vec![], vec![3], vec![2, 3, 1]] {
                let ty = TensorType::new(dtype, dims);
                let bytes: Vec<u8> = (0..ty.byte_size())
                    .map(|i| {
                        if dtype == DType::Bool {
                            (i % 2) as u8
                        } else {
                            (i * 7) as u8
                        }
                    })
                    .collect();
                let t = Tensor::from_le_bytes(&ty, &bytes).unwrap();
                let image = to_bytes(&t);
                assert_eq!(
                    (image.len() - t.numel() * dtype.size_bytes()) % 64,
                    0,
                    "header must be 64-byte aligned"
                );
                assert_eq!(from_bytes(&image, "t").unwrap(), t);
            }
        }
    }

    #[test]
    fn f16_uses_numpy_descr() {
        let t = Tensor::F16(ndarray::ArrayD::from_elem(
            ndarray::IxDyn(&[2]),
            half::f16::from_f32(1.5),
        ));
        let image = to_bytes(&t);
        assert!(String::from_utf8_lossy(&image).contains("'<f2'"));
    }

    #[test]
    fn truncated_and_foreign_files_are_errors() {
        let image = to_bytes(&Tensor::from_f32(&[4], vec![1.0, 2.0, 3.0, 4.0]));
        for n in 0..image.len() {
            assert!(from_bytes(&image[..n], "t").is_err(), "prefix {n} accepted");
        }
        let mut f64_image = image.clone();
        let at = f64_image.windows(3).position(|w| w == b"<f4").unwrap();
        f64_image[at + 2] = b'8';
        assert!(from_bytes(&f64_image, "t")
            .unwrap_err()
            .to_string()
            .contains("<f8"));
    }

    #[test]
    fn file_names_replace_unsafe_characters() {
        assert_eq!(file_name_for("gpu_0/softmax_1"), "gpu_0_softmax_1.npy");
        assert_eq!(file_name_for("onnx::Conv 3"), "onnx__Conv_3.npy");
    }
}
