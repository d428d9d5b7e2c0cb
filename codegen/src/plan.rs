//! The memory plan: where every tensor of a compiled graph lives.
