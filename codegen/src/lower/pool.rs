//! Pooling kernels (max, average, global).
