//! ONNX `TensorProto` to `qcc_ir::Tensor`: every storage form (raw little-endian bytes, the
//! typed repeated fields, external files) for every element type qcc has.

use super::ImportError;
use crate::onnx::proto::{DataLocation, DataType, TensorProto};
use half::f16;
use qcc_ir::{DType, Tensor, TensorType};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

/// Largest dimension and element count the importer accepts. Real models are far below; the
/// bound keeps shape arithmetic downstream from overflowing on corrupt files.
pub(crate) const MAX_DIM: u64 = 1 << 31;
pub(crate) const MAX_NUMEL: u64 = 1 << 40;

/// The qcc element type of an ONNX type code, or `None` for types qcc does not compute with.
pub(crate) fn dtype_from_onnx(code: i32) -> Option<DType> {
    Some(match DataType::from_i32(code)? {
        DataType::Float => DType::F32,
        DataType::Float16 => DType::F16,
        DataType::Int8 => DType::I8,
        DataType::Uint8 => DType::U8,
        DataType::Int32 => DType::I32,
        DataType::Int64 => DType::I64,
        DataType::Bool => DType::Bool,
        _ => return None,
    })
}

/// The ONNX name of a type code, for diagnostics (`code 99` when unknown).
pub(crate) fn onnx_type_name(code: i32) -> String {
    match DataType::from_i32(code) {
        Some(d) => d.name().to_string(),
        None => format!("code {code}"),
    }
}

/// Checked product of dims, refusing negative dims and sizes beyond [`MAX_NUMEL`].
pub(crate) fn checked_dims(dims: &[i64]) -> Result<Vec<usize>, String> {
    let mut numel: u64 = 1;
    let mut out = Vec::with_capacity(dims.len());
    for &d in dims {
        if d < 0 || d as u64 > MAX_DIM {
            return Err(format!(
                "dimension {d} in {dims:?} is negative or too large"
            ));
        }
        numel = numel.saturating_mul(d as u64);
        out.push(d as usize);
    }
    if numel > MAX_NUMEL {
        return Err(format!("shape {dims:?} has too many elements"));
    }
    Ok(out)
}

/// Decodes a tensor. `base_dir` is the model file's directory, needed only for external data.
pub fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor, ImportError> {
    let bad = |message: String| ImportError::Tensor {
        name: t.name.clone(),
        message,
    };
    let dtype = dtype_from_onnx(t.data_type).ok_or_else(|| {
        bad(format!(
            "element type {} is not supported",
            onnx_type_name(t.data_type)
        ))
    })?;
    if t.segment.is_some() {
        return Err(bad("segmented tensors are not supported".into()));
    }
    let dims = checked_dims(&t.dims).map_err(bad)?;
    let ty = TensorType::new(dtype, dims);
    let numel = ty.shape.numel();
    if t.data_location == DataLocation::External as i32 {
        let bytes = read_external(t, base_dir, ty.byte_size())?;
        return from_bytes(&ty, &bytes).map_err(bad);
    }
    if t.data_location != DataLocation::Default as i32 {
        return Err(bad(format!("unknown data_location {}", t.data_location)));
    }
    if !t.raw_data.is_empty() {
        return from_bytes(&ty, &t.raw_data).map_err(bad);
    }
    let count_ok = |n: usize, field: &str| {
        if n == numel {
            Ok(())
        } else {
            Err(bad(format!(
                "{field} holds {n} elements, shape {} needs {numel}",
                ty.shape
            )))
        }
    };
    // Types narrower than 64 bits other than f32 live in int32_data, as values (i8, u8,
    // bool, i32) or as bit patterns (f16); their range is checked rather than truncated.
    let narrow = |lo: i64, hi: i64| -> Result<&[i32], ImportError> {
        count_ok(t.int32_data.len(), "int32_data")?;
        match t
            .int32_data
            .iter()
            .find(|&&v| (v as i64) < lo || (v as i64) > hi)
        {
            Some(v) => Err(bad(format!("int32_data value {v} does not fit {dtype}"))),
            None => Ok(&t.int32_data),
        }
    };
    let shape = ndarray::IxDyn(ty.dims());
    let tensor = match dtype {
        DType::F32 => {
            count_ok(t.float_data.len(), "float_data")?;
            ndarray::ArrayD::from_shape_vec(shape, t.float_data.clone()).map(Tensor::F32)
        }
        DType::I64 => {
            count_ok(t.int64_data.len(), "int64_data")?;
            ndarray::ArrayD::from_shape_vec(shape, t.int64_data.clone()).map(Tensor::I64)
        }
        DType::I32 => {
            let v = narrow(i32::MIN as i64, i32::MAX as i64)?.to_vec();
            ndarray::ArrayD::from_shape_vec(shape, v).map(Tensor::I32)
        }
        DType::I8 => {
            let v = narrow(-128, 127)?.iter().map(|&x| x as i8).collect();
            ndarray::ArrayD::from_shape_vec(shape, v).map(Tensor::I8)
        }
        DType::U8 => {
            let v = narrow(0, 255)?.iter().map(|&x| x as u8).collect();
            ndarray::ArrayD::from_shape_vec(shape, v).map(Tensor::U8)
        }
        DType::Bool => {
            let v = narrow(0, 1)?.iter().map(|&x| x != 0).collect();
            ndarray::ArrayD::from_shape_vec(shape, v).map(Tensor::Bool)
        }
        DType::F16 => {
            let v = narrow(0, 0xffff)?
                .iter()
                .map(|&x| f16::from_bits(x as u16))
                .collect();
            ndarray::ArrayD::from_shape_vec(shape, v).map(Tensor::F16)
        }
    };
    tensor.map_err(|e| bad(e.to_string()))
}

fn from_bytes(ty: &TensorType, bytes: &[u8]) -> Result<Tensor, String> {
    Tensor::from_le_bytes(ty, bytes).ok_or_else(|| {
        format!(
            "{} bytes of data, type {ty} needs {}",
            bytes.len(),
            ty.byte_size()
        )
    })
}

/// Reads a tensor's bytes from the file its `external_data` names, which must stay inside the
/// model's directory.
fn read_external(
    t: &TensorProto,
    base_dir: Option<&Path>,
    want: usize,
) -> Result<Vec<u8>, ImportError> {
    let entry = |key: &str| {
        t.external_data
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.value.as_str())
    };
    let location = entry("location").unwrap_or("");
    let err = |message: String| ImportError::ExternalData {
        tensor: t.name.clone(),
        path: location.to_string(),
        message,
    };
    if location.is_empty() {
        return Err(err("no 'location' entry".into()));
    }
    let number = |key: &str| -> Result<Option<u64>, ImportError> {
        match entry(key) {
            None => Ok(None),
            Some(s) => s
                .parse::<u64>()
                .map(Some)
                .map_err(|_| err(format!("bad {key} '{s}'"))),
        }
    };
    let offset = number("offset")?.unwrap_or(0);
    let length = number("length")?;
    let path = resolve_external_path(location, base_dir).map_err(err)?;
    let mut file = File::open(&path).map_err(|e| err(e.to_string()))?;
    let size = file.metadata().map_err(|e| err(e.to_string()))?.len();
    let length = length.unwrap_or(size.saturating_sub(offset));
    // Check the ranges before allocating, so a corrupt length cannot request a huge buffer.
    if length != want as u64 {
        return Err(err(format!(
            "length {length} but the tensor needs {want} bytes"
        )));
    }
    if offset.checked_add(length).is_none_or(|end| end > size) {
        return Err(err(format!(
            "offset {offset} + length {length} runs past the file ({size} bytes)"
        )));
    }
    let mut buf = vec![0u8; want];
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| err(e.to_string()))?;
    file.read_exact(&mut buf).map_err(|e| err(e.to_string()))?;
    Ok(buf)
}

/// Joins a relative external-data location to the model directory and makes sure the result,
/// with symlinks resolved, is still inside it.
fn resolve_external_path(location: &str, base_dir: Option<&Path>) -> Result<PathBuf, String> {
    let base = base_dir.ok_or(
        "the model was read from memory, so there is no directory to find external data in",
    )?;
    let rel = Path::new(location);
    let escapes = rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if rel.is_absolute() || location.starts_with('/') || location.starts_with('\\') || escapes {
        return Err(
            "external data locations must be relative paths inside the model's directory".into(),
        );
    }
    let base = base
        .canonicalize()
        .map_err(|e| format!("model directory {}: {e}", base.display()))?;
    let full = base.join(rel).canonicalize().map_err(|e| e.to_string())?;
    if !full.starts_with(&base) {
        return Err(format!(
            "resolves to {}, outside the model's directory",
            full.display()
        ));
    }
    Ok(full)
}
