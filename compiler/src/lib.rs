//! qcc: the ONNX front end, the compiler driver and the pieces of the command-line interface.
//!
//! The path a model takes, from `main.rs` down: [`driver::load_model`] imports it with
//! [`onnx::import`] into a `qcc_ir::Graph`; `qcc run` evaluates it with the reference
//! interpreter (`qcc_ir::eval`); `qcc inspect` reports on it with [`inspect`] and draws it with [`dot`]; with
//! `--after-passes` both first run the `qcc_passes` pipeline ([`driver::optimize`]).

pub mod bench;
pub mod calibrate;
pub mod calibration_data;
pub mod compare;
pub mod compile;
pub mod dot;
pub mod driver;
pub mod inspect;
pub mod npy;
pub mod onnx;
pub mod quant_args;
pub mod quantize_export;
pub mod rng;
pub mod zoo;
