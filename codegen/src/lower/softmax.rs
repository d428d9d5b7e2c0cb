//! fp32 Softmax along one axis. STUB: being written.

use super::kernel::KernelError;
use super::node::NodeLowering;
use crate::target::Arch;

/// Lowers Softmax on an input of `dims` (input 0 → output 0).
pub fn lower_softmax(
    arch: Arch,
    axis: usize,
    coerce_2d: bool,
    dims: &[usize],
) -> Result<NodeLowering, KernelError> {
    let _ = (arch, axis, coerce_2d, dims);
    Err(KernelError::Unsupported {
        kernel: "Softmax".to_string(),
        reason: "not implemented yet".to_string(),
    })
}
