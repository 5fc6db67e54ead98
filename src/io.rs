//! Crash-safe file output shared by the examples and the command-line program: re-exported from
//! the sketch crate, where every crate of the workspace can reach it.

pub use polysketch_core::io::write_atomic;
