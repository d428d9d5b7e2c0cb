//! The ONNX front end: protobuf messages, the importer into `qcc_ir::Graph`, and the exporter
//! that writes qcc graphs (and the model zoo) back as ONNX.

pub mod export;
pub mod import;
pub mod proto;

pub use import::{import_bytes, import_file, ImportError, ImportOptions};
