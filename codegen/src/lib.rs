//! Lowering of qcc graphs to native code through Cranelift (JIT and object files).
//!
//! So far this crate holds the compilation targets ([`Target`]): the parsed form of names
//! like `x86_64-fp32` or `aarch64-int8+i8mm` and the Cranelift ISA they stand for. Kernels,
//! the memory plan and the emitters come with the rest of the fp32 back-end issue.

pub mod emit;
pub mod lower;
pub mod plan;
pub mod target;

pub use target::{
    Arch, Emission, Feature, FeatureSet, IsaOptions, OptLevel, Precision, Target, TargetError,
    TargetInfo,
};
