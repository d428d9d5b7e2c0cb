//! Graph-to-graph rewrites for qcc.
//!
//! This crate is filled by the graph-rewriting issue: the `Pass` trait and pass manager,
//! the canonical passes, the egg e-graph rules (batch-norm folding, fusion, Q/DQ placement)
//! and quantization. Until then it holds nothing, and nothing in the driver calls it.
