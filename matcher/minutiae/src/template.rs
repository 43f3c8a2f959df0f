//! Minutiae templates: the content of an ISO/IEC 19794-2 / ANSI INCITS 378 finger record.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MinutiaKind {
    Ending,
    Bifurcation,
}

/// One minutia: position in pixels at 500 ppi, ridge direction in whole degrees
/// counter-clockwise from the x axis (0..360), kind, quality 0..=100.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Minutia {
    pub x: u16,
    pub y: u16,
    pub angle_deg: u16,
    pub kind: MinutiaKind,
    pub quality: u8,
}

/// The template of one finger impression.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FingerTemplate {
    /// 1..=10, ANSI/NIST-ITL finger position.
    pub position: u8,
    pub width: u16,
    pub height: u16,
    pub minutiae: Vec<Minutia>,
}

/// Up to ten finger templates of one capture (a tenprint card or live scan).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenprint {
    pub fingers: Vec<FingerTemplate>,
}
