//! The two engines a submission is checked against.

pub mod gallery_log;
mod in_process;
pub mod remote;
pub mod shard;
/// The attribute the engine traits are declared with, for implementations elsewhere.
pub use async_trait::async_trait;
pub use in_process::*;
