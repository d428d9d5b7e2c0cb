//! The minimal runtime for qcc-compiled models and the MLPerf-style harness.
//!
//! Filled by the back-end and MLPerf issues; it holds no code yet.
