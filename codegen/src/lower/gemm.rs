//! The f32 matrix-multiply micro-kernel and its weight packing.
