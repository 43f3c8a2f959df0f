//! The program's rules.

pub mod assessment;
pub mod complaints;
pub mod detainer;
pub mod enforcement;
pub mod lesc;
pub mod policy;
pub mod review;
pub mod statistics;
