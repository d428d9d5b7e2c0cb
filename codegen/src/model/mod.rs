//! Whole models: a graph lowered node by node into one program (kernel calls over a memory
//! plan), compiled in process (JIT) or into an object file with its C header.

mod header;
mod jit;
mod lower;
mod lower_int8;
mod object;
mod program;

pub use header::{c_header, c_identifier, is_c_identifier, HeaderInfo, MAX_RANK};
pub use jit::{compile_node, run_node, run_node_bytes, AlignedBuffer, JitProgram};
pub use lower::{lower_graph, IoTensor, LayerChoice, LowerError, LoweredModel};
pub use object::object_program;
pub use program::{
    define_program, Base, Place, Program, ProgramIds, ProgramOptions, Step, WeightBlob,
};

#[cfg(test)]
mod tests;
