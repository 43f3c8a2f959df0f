//! `state-bureau-sim`: the synthetic world generator and the end-to-end driver.
//!
//! - [`generate`]: a world directory from a seed (states, jurisdictions, field offices,
//!   population, FBI and IDENT galleries, ground truth).
//! - [`bookings`]: planned bookings with fresh captures and their expected answers, also
//!   written as JSON lines for `interop submit` (the `bookings` command).
//! - [`demo`]: the main job — an in-process gateway over real mTLS, driven by every bureau and
//!   watched by every field office, with every answer verified ([`verify`]).

pub mod activation;
pub mod background;
pub mod bench;
pub mod bookings;
pub mod calibration;
pub mod changes;
pub mod cluster;
pub mod cluster_bench;
pub mod cost;
pub mod criteria;
pub mod demo;
pub mod drive;
pub mod fairness;
pub mod generate;
pub mod geography;
pub mod html;
pub mod officers;
pub mod profiling;
pub mod soak;
pub mod startup;
pub mod timeline;
pub mod truth;
pub mod verify;
