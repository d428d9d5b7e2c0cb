//! Data movement: strided copies (Concat slots, output copies, views that must copy) and
//! Transpose. STUB: being written.

use super::kernel::KernelError;
use super::node::NodeLowering;
use crate::target::Arch;

/// Lowers Transpose of an input of `dims` by `perm` (input 0 → output 0).
pub fn lower_transpose(
    arch: Arch,
    perm: &[usize],
    dims: &[usize],
) -> Result<NodeLowering, KernelError> {
    let _ = (arch, perm, dims);
    Err(KernelError::Unsupported {
        kernel: "Transpose".to_string(),
        reason: "not implemented yet".to_string(),
    })
}

/// Lowers Concat along `axis` of inputs with `input_dims` into output 0, copying only the
/// inputs `i` with `copy[i]` (the others were written in place by their producers).
pub fn lower_concat(
    arch: Arch,
    axis: usize,
    input_dims: &[Vec<usize>],
    copy: &[bool],
) -> Result<NodeLowering, KernelError> {
    let _ = (arch, axis, input_dims, copy);
    Err(KernelError::Unsupported {
        kernel: "Concat".to_string(),
        reason: "not implemented yet".to_string(),
    })
}

/// Lowers a plain copy of `bytes` bytes from input `input` to output `output` (a view that
/// cannot alias, or a graph output that is another value).
pub fn lower_copy(
    arch: Arch,
    input: usize,
    output: usize,
    bytes: usize,
) -> Result<NodeLowering, KernelError> {
    let _ = (arch, input, output, bytes);
    Err(KernelError::Unsupported {
        kernel: "copy".to_string(),
        reason: "not implemented yet".to_string(),
    })
}
