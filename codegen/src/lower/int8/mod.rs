//! int8 kernels (u8 activations × s8 weights, i32 accumulators, fixed-point requantization).
//! STUB: being written.
