//! Workspace root package: hosts the end-to-end suites (`tests/`) and benchmarks (`benches/`).
