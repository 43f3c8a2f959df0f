//! The program's rules.

pub mod detainer;
pub mod enforcement;
pub mod policy;
pub mod review;
pub mod statistics;
