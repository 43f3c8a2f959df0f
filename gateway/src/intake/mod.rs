//! Intake: a submission is validated and admitted before anything is stored.

pub mod validate;
