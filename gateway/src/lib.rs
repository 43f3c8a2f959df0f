//! The interoperability gateway as a library.

pub mod api;
pub mod auth;
pub mod convert;
pub mod delivery;
pub mod engines;
pub mod error;
pub mod intake;
pub mod metrics;
pub mod pipeline;
pub mod rules;
pub mod server;
pub mod store;
pub mod world;
