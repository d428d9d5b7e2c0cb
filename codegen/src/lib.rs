//! Lowering of qcc graphs to native code through Cranelift (JIT and object files).
//!
//! This crate is filled by the fp32 back-end issue. It holds no code yet: the driver does not
//! offer any compiled target, and `qcc run` uses the reference interpreter.
