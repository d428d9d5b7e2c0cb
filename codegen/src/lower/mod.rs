//! Lowering of graph nodes to Cranelift IR, one module per kernel family.
//!
//! [`kernel`] holds the interface every kernel implements; [`node`] what lowering one node
//! yields (kernel calls with symbolic arguments); the families build on both.

pub mod conv;
pub mod depthwise;
pub mod elementwise;
pub mod gemm;
pub mod int8;
pub mod kernel;
pub mod layout;
pub mod lrn;
pub mod microkernel;
pub mod node;
pub mod pool;
pub mod softmax;
pub mod vmath;

#[cfg(test)]
mod elementwise_tests;
#[cfg(test)]
pub(crate) mod test_support;

pub use elementwise::{ActivationKernel, BinaryKernel, BroadcastKind, BroadcastPlan, Side};
pub use kernel::{
    Accumulator, Kernel, KernelContext, KernelError, KernelParam, KernelSpec, ParamKind, Tile,
};
pub use node::{Arg, ConvGeometry, Epilogue, KernelCall, NodeLowering};
