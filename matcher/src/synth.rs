//! TODO(helper): realistic synthetic fingerprints.
use crate::template::Tenprint;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternClass {
    Arch,
    TentedArch,
    LeftLoop,
    RightLoop,
    Whorl,
}

/// The "true" ten fingers of one synthetic person.
#[derive(Clone, Debug)]
pub struct MasterTenprint {}

/// How a capture deviates from the master fingers.
#[derive(Clone, Debug)]
pub struct CaptureModel {}

impl Default for CaptureModel {
    fn default() -> Self {
        CaptureModel {}
    }
}

/// Deterministic master prints of `person` in the world seeded with `seed`.
pub fn master_tenprint(_seed: u64, _person: u64) -> MasterTenprint {
    todo!()
}

/// One capture (booking or enrollment) of a master tenprint; deterministic in `capture_seed`.
pub fn capture(_master: &MasterTenprint, _model: &CaptureModel, _capture_seed: u64) -> Tenprint {
    todo!()
}
