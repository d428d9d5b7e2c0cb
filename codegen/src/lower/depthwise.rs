//! fp32 NCHW depthwise convolution (one channel per group) with fused epilogues.
//! STUB: being written.

use super::kernel::KernelError;
use super::node::{ConvGeometry, Epilogue, NodeLowering};
use crate::target::Arch;

/// Lowers a depthwise convolution (`geometry.is_depthwise()`): input 0 is X, output 0 is Y;
/// `weight` is `[C, 1, kH, kW]`, `bias` has `C` entries.
pub fn lower_depthwise(
    arch: Arch,
    geometry: &ConvGeometry,
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
) -> Result<NodeLowering, KernelError> {
    let _ = (arch, geometry, weight, bias, epilogue);
    Err(KernelError::Unsupported {
        kernel: "depthwise Conv".to_string(),
        reason: "not implemented yet".to_string(),
    })
}
