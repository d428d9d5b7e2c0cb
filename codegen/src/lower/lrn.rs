//! fp32 LRN across channels (NCHW). STUB: being written.

use qcc_ir::LrnAttrs;

use super::kernel::KernelError;
use super::node::NodeLowering;
use crate::target::Arch;

/// Lowers LRN on an NCHW input of `dims` (input 0 → output 0).
pub fn lower_lrn(
    arch: Arch,
    attrs: &LrnAttrs,
    dims: &[usize],
) -> Result<NodeLowering, KernelError> {
    let _ = (arch, attrs, dims);
    Err(KernelError::Unsupported {
        kernel: "LRN".to_string(),
        reason: "not implemented yet".to_string(),
    })
}
