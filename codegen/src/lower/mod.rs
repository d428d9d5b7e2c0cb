//! Lowering of graph nodes to Cranelift IR, one module per kernel family.
