//! Lowering of qcc graphs to native code through Cranelift (JIT and object files).
//!
//! So far this crate holds:
//! - the compilation targets ([`Target`]): names like `x86_64-fp32` or `aarch64-int8+i8mm`
//!   and the Cranelift ISA they stand for;
//! - the memory plan ([`plan`]): weights blob and one scratch arena assigned by liveness;
//! - the kernel interface ([`lower::kernel`]) and the element-wise fp32 kernels
//!   ([`lower::elementwise`]);
//! - emission of kernels into any `cranelift_module::Module` ([`emit`]): JIT and ELF objects.
//!
//! Not yet: the other kernel families, lowering a whole graph, the model entry point and
//! the C header (the rest of the fp32 back-end issue). The driver does not use this crate
//! for execution yet.

pub mod emit;
pub mod lower;
pub mod model;
pub mod plan;
pub mod target;

pub use target::{
    Arch, Emission, Feature, FeatureSet, IsaOptions, OptLevel, Precision, Target, TargetError,
    TargetInfo,
};
