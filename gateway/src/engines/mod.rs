//! The two engines a submission is checked against.

pub mod gallery_log;
mod in_process;
pub mod remote;
pub use in_process::*;
