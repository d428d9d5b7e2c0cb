//! The `.qir` text form of a graph: a printer and a parser that round-trip.
