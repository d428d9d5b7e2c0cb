//! fp32 NCHW convolution (general, grouped, strided, dilated; 1×1 as a plain GEMM) with fused
//! bias, residual and activation epilogues. STUB: being written.

use qcc_ir::Op;

use super::kernel::KernelError;
use super::node::{ConvGeometry, Epilogue, NodeLowering};
use crate::target::Arch;

/// Lowers a convolution whose input 0 is X (NCHW), output 0 is Y; `weight` is the ONNX
/// weight `[C_out, C_in/group, kH, kW]` row-major, `bias` has `C_out` entries.
pub fn lower_conv(
    arch: Arch,
    geometry: &ConvGeometry,
    weight: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
) -> Result<NodeLowering, KernelError> {
    let _ = (arch, weight, bias, epilogue);
    Err(KernelError::Unsupported {
        kernel: Op::Conv(qcc_ir::ConvAttrs {
            kernel: vec![geometry.kernel_h, geometry.kernel_w],
            strides: vec![1, 1],
            dilations: vec![1, 1],
            padding: qcc_ir::Padding::Explicit(vec![0; 4]),
            group: 1,
        })
        .name()
        .to_string(),
        reason: "not implemented yet".to_string(),
    })
}
