//! Emission of lowered kernels through `cranelift_module::Module` (JIT or object file).
