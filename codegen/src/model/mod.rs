//! Whole models: a graph lowered node by node into one program (kernel calls over a memory
//! plan), compiled in process (JIT) or into an object file with its C header.

mod jit;
mod program;

pub use jit::{run_node, AlignedBuffer, JitProgram};
pub use program::{define_program, Base, Place, Program, ProgramIds, Step, WeightBlob};

#[cfg(test)]
mod tests;
