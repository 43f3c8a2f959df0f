//! The interoperability gateway as a library: the binary in `main.rs` only parses flags.

pub mod backends;
pub mod cli;
pub mod client;
pub mod convert;
pub mod detainer;
pub mod error;
pub mod gallery;
pub mod matcher_cli;
pub mod metrics;
pub mod pipeline;
pub mod pki;
pub mod policy;
pub mod principal;
pub mod remote;
pub mod review;
pub mod revocation;
pub mod server;
pub mod services;
pub mod statistics;
pub mod store;
pub mod streams;
pub mod tls;
pub mod validate;
pub mod world;
