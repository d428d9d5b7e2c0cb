//! Lowering of graph nodes to Cranelift IR, one module per kernel family.
//!
//! [`kernel`] holds the interface every kernel implements; the families build on it.

pub mod elementwise;
pub mod gemm;
pub mod kernel;
pub mod pool;
pub mod vmath;

#[cfg(test)]
mod elementwise_tests;

pub use elementwise::{ActivationKernel, BinaryKernel, BroadcastKind, BroadcastPlan, Side};
pub use kernel::{
    Accumulator, Kernel, KernelContext, KernelError, KernelParam, KernelSpec, ParamKind, Tile,
};
