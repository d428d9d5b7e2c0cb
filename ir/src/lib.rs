//! qcc's intermediate representation: a typed dataflow graph of tensor operations, and the
//! reference interpreter that defines what each operation means.
//!
//! Every other layer of the compiler (rewrites, quantization, generated kernels) is tested
//! against [`eval`]: it is the one definition of each op's semantics.

pub mod dtype;
pub mod eval;
pub mod graph;
pub mod infer;
pub mod op;
pub mod quant;
pub mod rebuild;
pub mod requant;
pub mod tensor;
pub mod text;

pub use dtype::{DType, Dim, Shape, TensorType};
pub use graph::{Graph, GraphError, GraphInput, Node, NodeId, Value, ValueDef, ValueId};
pub use op::{Activation, BinaryOp, ConvAttrs, GemmAttrs, LrnAttrs, Op, Padding, PoolAttrs};
pub use quant::{InputZeroPoint, QParams, ZeroPoint};
pub use rebuild::Rebuilder;
pub use tensor::Tensor;
