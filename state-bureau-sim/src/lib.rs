//! `state-bureau-sim`: the synthetic world generator and the end-to-end driver.
//!
//! - [`generate`]: a world directory from a seed (states, jurisdictions, field offices,
//!   population, FBI and IDENT galleries, ground truth).
//! - [`bookings`]: planned bookings with fresh captures and their expected answers.
//! - [`demo`]: the main job — an in-process gateway over real mTLS, driven by every bureau and
//!   watched by every field office, with every answer verified ([`verify`]).

pub mod bookings;
pub mod demo;
pub mod generate;
pub mod geography;
pub mod verify;
