//! The program's rules.

pub mod detainer;
pub mod policy;
pub mod review;
pub mod statistics;
