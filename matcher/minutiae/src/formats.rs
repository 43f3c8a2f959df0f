//! Standard finger minutiae records: ISO/IEC 19794-2:2005 and ANSI INCITS 378-2004.
//!
//! Both are big-endian binary records, one record holding up to ten finger views:
//!
//! ```text
//! ISO/IEC 19794-2:2005 header (24 bytes)       ANSI INCITS 378-2004 header (26 or 30 bytes)
//!   "FMR\0"                 4                    "FMR\0"                        4
//!   " 20\0"                 4                    " 20\0"                        4
//!   record length           4 (u32)              record length                  2 (u16), or
//!                                                  0x0000 + u32 when > 0xFFFF   6
//!                                                CBEFF product id (owner, type) 4
//!   capture equipment       2 (4 bits cert,      capture equipment              2
//!                              12 bits id)
//!   image width, height     2 + 2                image width, height            2 + 2
//!   x, y resolution         2 + 2 (px/cm)        x, y resolution                2 + 2 (px/cm)
//!   finger views            1                    finger views                   1
//!   reserved                1                    reserved                       1
//!
//! Each finger view (both):
//!   finger position 1 | view number (4 bits), impression type (4 bits) 1 | finger quality 1 |
//!   minutiae count 1 | minutiae, 6 bytes each | extended data length 2 (u16) | extended data
//! Each minutia (both):
//!   type (2 bits: 01 ending, 10 bifurcation) + x (14 bits)   2
//!   reserved (2 bits) + y (14 bits)                          2
//!   angle                                                    1  ISO: 360/256° units (0..=255)
//!                                                               ANSI: 2° units (0..=179)
//!   quality                                                  1  0..=100
//! ```
//!
//! Our images are 500 ppi, written as 197 px/cm; a record at another resolution is refused,
//! as are "other" minutiae (type 00) and the undefined type 11, which our templates cannot
//! carry. Angles are quantised to the record's unit on writing (rounded to nearest, 360° wraps
//! to 0) and converted back to whole degrees on reading, so a round trip is exact for angles
//! already on the unit grid. Decoding checks every length before reading and never allocates
//! more than the declared, bounded record size.

use crate::template::{FingerTemplate, Minutia, MinutiaKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Iso19794_2,
    Ansi378,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Iso19794_2 => "ISO/IEC 19794-2:2005",
            Format::Ansi378 => "ANSI INCITS 378-2004",
        })
    }
}

/// 500 ppi in pixels per centimetre, as the records state resolution.
pub const PX_PER_CM: u16 = 197;
/// Largest record accepted (bounds what a decoder reads and allocates).
pub const MAX_RECORD: usize = 64 * 1024;
/// Coordinates are 14-bit fields.
const MAX_COORD: u16 = 0x3FFF;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("format identifier: expected \"FMR\\0\"")]
    BadMagic,
    #[error("version: expected \" 20\\0\" (2005/2004 editions)")]
    BadVersion,
    #[error("record is truncated: {needed} more bytes needed at offset {at}")]
    Truncated { needed: usize, at: usize },
    #[error("record length: the header declares {declared} bytes, the record has {actual}")]
    LengthMismatch { declared: usize, actual: usize },
    #[error("record length: {0} bytes is over the {MAX_RECORD}-byte limit")]
    TooLong(usize),
    #[error("finger views: {0}; must be 1 to 10")]
    BadViewCount(usize),
    #[error("finger view {view}: finger position {position} must be 1..=10")]
    BadFingerPosition { view: usize, position: u8 },
    #[error("finger view {view}: finger position {position} appears twice")]
    DuplicatePosition { view: usize, position: u8 },
    #[error("finger view {view}: {count} minutiae; a view holds at most 255")]
    TooManyMinutiae { view: usize, count: usize },
    #[error(
        "minutia {index} of finger view {view}: {axis}={value} outside the image {axis_name} {limit}"
    )]
    CoordinateOutside {
        view: usize,
        index: usize,
        axis: &'static str,
        axis_name: &'static str,
        value: u16,
        limit: u16,
    },
    #[error(
        "minutia {index} of finger view {view}: type {code:02b} is not an ending (01) or a bifurcation (10)"
    )]
    BadMinutiaType { view: usize, index: usize, code: u8 },
    #[error(
        "minutia {index} of finger view {view}: angle {value} is outside 0..={max} in this format's units"
    )]
    BadAngle {
        view: usize,
        index: usize,
        value: u8,
        max: u8,
    },
    #[error("minutia {index} of finger view {view}: quality {value} is outside 0..=100")]
    BadQuality {
        view: usize,
        index: usize,
        value: u8,
    },
    #[error("resolution: {x}x{y} px/cm; only 500 ppi ({PX_PER_CM} px/cm) is accepted")]
    UnsupportedResolution { x: u16, y: u16 },
    #[error("image size: {width}x{height} must be 1..=16383 pixels each way")]
    BadImageSize { width: u16, height: u16 },
    #[error("templates to write: all fingers of one record must share one image size")]
    MixedImageSizes,
}

fn angle_to_units(format: Format, deg: u16) -> u8 {
    let deg = u32::from(deg % 360);
    match format {
        // 256 units per turn.
        Format::Iso19794_2 => (((deg * 256 + 180) / 360) % 256) as u8,
        // 2° units, 180 per turn.
        Format::Ansi378 => (deg.div_ceil(2) % 180) as u8,
    }
}

fn units_to_angle(format: Format, units: u8) -> u16 {
    match format {
        Format::Iso19794_2 => ((u32::from(units) * 360 + 128) / 256 % 360) as u16,
        Format::Ansi378 => u16::from(units) * 2,
    }
}

/// Writes `fingers` as one record (one finger view each). All must share one image size.
pub fn encode(format: Format, fingers: &[FingerTemplate]) -> Result<Vec<u8>, FormatError> {
    if fingers.is_empty() || fingers.len() > 10 {
        return Err(FormatError::BadViewCount(fingers.len()));
    }
    let (width, height) = (fingers[0].width, fingers[0].height);
    if fingers
        .iter()
        .any(|f| (f.width, f.height) != (width, height))
    {
        return Err(FormatError::MixedImageSizes);
    }
    if !(1..=MAX_COORD).contains(&width) || !(1..=MAX_COORD).contains(&height) {
        return Err(FormatError::BadImageSize { width, height });
    }
    let mut seen = [false; 11];
    let mut body = Vec::new();
    for (view, f) in fingers.iter().enumerate() {
        if !(1..=10).contains(&f.position) {
            return Err(FormatError::BadFingerPosition {
                view,
                position: f.position,
            });
        }
        if std::mem::replace(&mut seen[f.position as usize], true) {
            return Err(FormatError::DuplicatePosition {
                view,
                position: f.position,
            });
        }
        if f.minutiae.len() > 255 {
            return Err(FormatError::TooManyMinutiae {
                view,
                count: f.minutiae.len(),
            });
        }
        body.push(f.position);
        body.push(0); // view 0, impression type 0 (live-scan plain)
        body.push(100); // finger quality
        body.push(f.minutiae.len() as u8);
        for (index, m) in f.minutiae.iter().enumerate() {
            if m.x >= width || m.y >= height {
                let (axis, axis_name, value, limit) = if m.x >= width {
                    ("x", "width", m.x, width)
                } else {
                    ("y", "height", m.y, height)
                };
                return Err(FormatError::CoordinateOutside {
                    view,
                    index,
                    axis,
                    axis_name,
                    value,
                    limit,
                });
            }
            if m.quality > 100 {
                return Err(FormatError::BadQuality {
                    view,
                    index,
                    value: m.quality,
                });
            }
            let kind: u16 = match m.kind {
                MinutiaKind::Ending => 0b01,
                MinutiaKind::Bifurcation => 0b10,
            };
            body.extend_from_slice(&((kind << 14) | m.x).to_be_bytes());
            body.extend_from_slice(&m.y.to_be_bytes());
            body.push(angle_to_units(format, m.angle_deg));
            body.push(m.quality);
        }
        body.extend_from_slice(&0u16.to_be_bytes()); // no extended data
    }
    let mut tail = Vec::with_capacity(14);
    tail.extend_from_slice(&0u16.to_be_bytes()); // capture equipment: unreported
    tail.extend_from_slice(&width.to_be_bytes());
    tail.extend_from_slice(&height.to_be_bytes());
    tail.extend_from_slice(&PX_PER_CM.to_be_bytes());
    tail.extend_from_slice(&PX_PER_CM.to_be_bytes());
    tail.push(fingers.len() as u8);
    tail.push(0);
    let mut out = Vec::with_capacity(32 + body.len());
    out.extend_from_slice(b"FMR\0 20\0");
    match format {
        Format::Iso19794_2 => {
            let len = 8 + 4 + tail.len() + body.len();
            out.extend_from_slice(&(len as u32).to_be_bytes());
            out.extend_from_slice(&tail);
        }
        Format::Ansi378 => {
            let short = 8 + 2 + 4 + tail.len() + body.len();
            if short <= 0xFFFF {
                out.extend_from_slice(&(short as u16).to_be_bytes());
            } else {
                out.extend_from_slice(&0u16.to_be_bytes());
                out.extend_from_slice(&((short + 4) as u32).to_be_bytes());
            }
            out.extend_from_slice(&[0, 0, 0, 0]); // CBEFF product id: unreported
            out.extend_from_slice(&tail);
        }
    }
    out.extend_from_slice(&body);
    Ok(out)
}

/// A bounds-checked reader over a record.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err(FormatError::Truncated {
                needed: n - (self.bytes.len() - self.at),
                at: self.at,
            }),
        }
    }
    fn u8(&mut self) -> Result<u8, FormatError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, FormatError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Guesses the format from the header: an ISO record's 4-byte length matches the record's
/// size; an ANSI record's 2-byte (or 0 + 4-byte) length does.
pub fn detect(bytes: &[u8]) -> Option<Format> {
    if bytes.len() < 14 || &bytes[..8] != b"FMR\0 20\0" {
        return None;
    }
    let be32 = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let be16 = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
    if be32(8) as usize == bytes.len() {
        Some(Format::Iso19794_2)
    } else if be16(8) as usize == bytes.len() || (be16(8) == 0 && be32(10) as usize == bytes.len())
    {
        Some(Format::Ansi378)
    } else {
        None
    }
}

/// Reads one record into finger templates (one per finger view).
pub fn decode(format: Format, bytes: &[u8]) -> Result<Vec<FingerTemplate>, FormatError> {
    if bytes.len() > MAX_RECORD {
        return Err(FormatError::TooLong(bytes.len()));
    }
    let mut r = Reader { bytes, at: 0 };
    if r.take(4)? != b"FMR\0" {
        return Err(FormatError::BadMagic);
    }
    if r.take(4)? != b" 20\0" {
        return Err(FormatError::BadVersion);
    }
    let declared = match format {
        Format::Iso19794_2 => r.u32()? as usize,
        Format::Ansi378 => match r.u16()? {
            0 => r.u32()? as usize,
            n => n as usize,
        },
    };
    if declared > MAX_RECORD {
        return Err(FormatError::TooLong(declared));
    }
    if declared != bytes.len() {
        return Err(FormatError::LengthMismatch {
            declared,
            actual: bytes.len(),
        });
    }
    if format == Format::Ansi378 {
        r.take(4)?; // CBEFF product identifier
    }
    r.take(2)?; // capture equipment
    let (width, height) = (r.u16()?, r.u16()?);
    let (xres, yres) = (r.u16()?, r.u16()?);
    let views = r.u8()? as usize;
    r.u8()?; // reserved
    if (xres, yres) != (PX_PER_CM, PX_PER_CM) {
        return Err(FormatError::UnsupportedResolution { x: xres, y: yres });
    }
    if !(1..=MAX_COORD).contains(&width) || !(1..=MAX_COORD).contains(&height) {
        return Err(FormatError::BadImageSize { width, height });
    }
    if !(1..=10).contains(&views) {
        return Err(FormatError::BadViewCount(views));
    }
    let max_angle = match format {
        Format::Iso19794_2 => 255,
        Format::Ansi378 => 179,
    };
    let mut seen = [false; 11];
    let mut out = Vec::with_capacity(views);
    for view in 0..views {
        let position = r.u8()?;
        if !(1..=10).contains(&position) {
            return Err(FormatError::BadFingerPosition { view, position });
        }
        if std::mem::replace(&mut seen[position as usize], true) {
            return Err(FormatError::DuplicatePosition { view, position });
        }
        r.u8()?; // view number, impression type
        r.u8()?; // finger quality
        let count = r.u8()? as usize;
        let mut minutiae = Vec::with_capacity(count);
        for index in 0..count {
            let xw = r.u16()?;
            let yw = r.u16()?;
            let angle = r.u8()?;
            let quality = r.u8()?;
            let code = (xw >> 14) as u8;
            let kind = match code {
                0b01 => MinutiaKind::Ending,
                0b10 => MinutiaKind::Bifurcation,
                _ => return Err(FormatError::BadMinutiaType { view, index, code }),
            };
            let (x, y) = (xw & MAX_COORD, yw & MAX_COORD);
            if x >= width || y >= height {
                let (axis, axis_name, value, limit) = if x >= width {
                    ("x", "width", x, width)
                } else {
                    ("y", "height", y, height)
                };
                return Err(FormatError::CoordinateOutside {
                    view,
                    index,
                    axis,
                    axis_name,
                    value,
                    limit,
                });
            }
            if angle > max_angle {
                return Err(FormatError::BadAngle {
                    view,
                    index,
                    value: angle,
                    max: max_angle,
                });
            }
            if quality > 100 {
                return Err(FormatError::BadQuality {
                    view,
                    index,
                    value: quality,
                });
            }
            minutiae.push(Minutia {
                x,
                y,
                angle_deg: units_to_angle(format, angle),
                kind,
                quality,
            });
        }
        let ext = r.u16()? as usize;
        r.take(ext)?;
        out.push(FingerTemplate {
            position,
            width,
            height,
            minutiae,
        });
    }
    if r.at != bytes.len() {
        return Err(FormatError::LengthMismatch {
            declared,
            actual: r.at,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FORMATS: [Format; 2] = [Format::Iso19794_2, Format::Ansi378];

    fn unit_angles(format: Format) -> impl Strategy<Value = u16> {
        match format {
            Format::Iso19794_2 => (0u8..=255)
                .prop_map(move |u| units_to_angle(format, u))
                .boxed(),
            Format::Ansi378 => (0u8..180)
                .prop_map(move |u| units_to_angle(format, u))
                .boxed(),
        }
    }

    fn templates(format: Format) -> impl Strategy<Value = Vec<FingerTemplate>> {
        (
            1u16..800,
            1u16..800,
            prop::sample::subsequence((1u8..=10).collect::<Vec<_>>(), 1..=10),
        )
            .prop_flat_map(move |(w, h, positions)| {
                let fingers: Vec<_> = positions
                    .into_iter()
                    .map(|position| {
                        prop::collection::vec(
                            (0..w, 0..h, unit_angles(format), prop::bool::ANY, 0u8..=100),
                            0..=255,
                        )
                        .prop_map(move |ms| FingerTemplate {
                            position,
                            width: w,
                            height: h,
                            minutiae: ms
                                .into_iter()
                                .map(|(x, y, angle_deg, b, quality)| Minutia {
                                    x,
                                    y,
                                    angle_deg,
                                    kind: if b {
                                        MinutiaKind::Bifurcation
                                    } else {
                                        MinutiaKind::Ending
                                    },
                                    quality,
                                })
                                .collect(),
                        })
                    })
                    .collect();
                fingers
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn iso_round_trips(t in templates(Format::Iso19794_2)) {
            let bytes = encode(Format::Iso19794_2, &t).unwrap();
            prop_assert_eq!(detect(&bytes), Some(Format::Iso19794_2));
            prop_assert_eq!(decode(Format::Iso19794_2, &bytes).unwrap(), t);
        }

        #[test]
        fn ansi_round_trips(t in templates(Format::Ansi378)) {
            let bytes = encode(Format::Ansi378, &t).unwrap();
            prop_assert_eq!(detect(&bytes), Some(Format::Ansi378));
            prop_assert_eq!(decode(Format::Ansi378, &bytes).unwrap(), t);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            for f in FORMATS {
                let _ = decode(f, &bytes);
            }
            let _ = detect(&bytes);
        }

        #[test]
        fn decoding_damaged_records_never_panics(
            t in templates(Format::Iso19794_2),
            cut in any::<prop::sample::Index>(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        ) {
            for f in FORMATS {
                let mut bytes = encode(f, &t).unwrap_or_default();
                for (i, b) in &flips {
                    if !bytes.is_empty() {
                        let k = i.index(bytes.len());
                        bytes[k] ^= b;
                    }
                }
                let _ = decode(f, &bytes);
                let n = bytes.len();
                if n > 0 {
                    let _ = decode(f, &bytes[..cut.index(n)]);
                }
            }
        }
    }

    fn one() -> Vec<FingerTemplate> {
        vec![FingerTemplate {
            position: 2,
            width: 500,
            height: 550,
            minutiae: vec![
                Minutia {
                    x: 100,
                    y: 200,
                    angle_deg: 90,
                    kind: MinutiaKind::Ending,
                    quality: 80,
                },
                Minutia {
                    x: 300,
                    y: 20,
                    angle_deg: 180,
                    kind: MinutiaKind::Bifurcation,
                    quality: 60,
                },
            ],
        }]
    }

    /// The layout pinned byte by byte, not only self-consistent.
    #[test]
    fn hand_built_iso_record_decodes() {
        #[rustfmt::skip]
        let bytes: Vec<u8> = vec![
            b'F', b'M', b'R', 0, b' ', b'2', b'0', 0, // identifier, version
            0, 0, 0, 42,                               // record length: 24 + 4 + 12 + 2
            0, 0,                                      // capture equipment
            0x01, 0xF4, 0x02, 0x26,                    // 500 x 550
            0, 197, 0, 197,                            // 197 px/cm
            1, 0,                                      // one view, reserved
            2, 0, 100, 2,                              // right index, view/impression, quality, 2 minutiae
            0x40, 100, 0, 200, 64, 80,                 // ending (01) x=100, y=200, 64 units = 90°, q 80
            0x81, 0x2C, 0, 20, 128, 60,                // bifurcation (10) x=300, y=20, 128 units = 180°, q 60
            0, 0,                                      // no extended data
        ];
        assert_eq!(bytes.len(), 42);
        assert_eq!(detect(&bytes), Some(Format::Iso19794_2));
        assert_eq!(decode(Format::Iso19794_2, &bytes).unwrap(), one());
        assert_eq!(encode(Format::Iso19794_2, &one()).unwrap(), bytes);
    }

    #[test]
    fn hand_built_ansi_record_decodes() {
        #[rustfmt::skip]
        let bytes: Vec<u8> = vec![
            b'F', b'M', b'R', 0, b' ', b'2', b'0', 0, // identifier, version
            0, 44,                                     // record length (2-byte form)
            0, 0, 0, 0,                                // CBEFF product identifier
            0, 0,                                      // capture equipment
            0x01, 0xF4, 0x02, 0x26,                    // 500 x 550
            0, 197, 0, 197,                            // 197 px/cm
            1, 0,                                      // one view, reserved
            2, 0, 100, 2,                              // right index, 2 minutiae
            0x40, 100, 0, 200, 45, 80,                 // ending x=100, y=200, 45 x 2° = 90°, q 80
            0x81, 0x2C, 0, 20, 90, 60,                 // bifurcation x=300, y=20, 90 x 2° = 180°, q 60
            0, 0,                                      // no extended data
        ];
        assert_eq!(bytes.len(), 44);
        assert_eq!(detect(&bytes), Some(Format::Ansi378));
        assert_eq!(decode(Format::Ansi378, &bytes).unwrap(), one());
        assert_eq!(encode(Format::Ansi378, &one()).unwrap(), bytes);
    }

    #[test]
    fn malformed_records_are_refused_with_the_specific_error() {
        let good = encode(Format::Iso19794_2, &one()).unwrap();
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            decode(Format::Iso19794_2, &b)
        };
        let fix_len = |b: &mut Vec<u8>| {
            let n = b.len() as u32;
            b[8..12].copy_from_slice(&n.to_be_bytes());
        };
        type Case<'a> = (
            &'a str,
            Result<Vec<FingerTemplate>, FormatError>,
            FormatError,
        );
        let cases: Vec<Case> = vec![
            ("magic", with(&|b| b[0] = b'X'), FormatError::BadMagic),
            ("version", with(&|b| b[5] = b'3'), FormatError::BadVersion),
            (
                "truncated header",
                decode(Format::Iso19794_2, &good[..10]),
                FormatError::Truncated { needed: 2, at: 8 },
            ),
            (
                "truncated minutia",
                with(&|b| {
                    b.truncate(33);
                    fix_len(b)
                }),
                FormatError::Truncated { needed: 1, at: 33 },
            ),
            (
                "declared length",
                with(&|b| b[11] += 1),
                FormatError::LengthMismatch {
                    declared: 43,
                    actual: 42,
                },
            ),
            (
                "zero views",
                with(&|b| b[22] = 0),
                FormatError::BadViewCount(0),
            ),
            (
                "eleven views",
                with(&|b| b[22] = 11),
                FormatError::BadViewCount(11),
            ),
            (
                "position 0",
                with(&|b| b[24] = 0),
                FormatError::BadFingerPosition {
                    view: 0,
                    position: 0,
                },
            ),
            (
                "position 11",
                with(&|b| b[24] = 11),
                FormatError::BadFingerPosition {
                    view: 0,
                    position: 11,
                },
            ),
            (
                "x outside",
                with(&|b| b[28] = 0x7F),
                FormatError::CoordinateOutside {
                    view: 0,
                    index: 0,
                    axis: "x",
                    axis_name: "width",
                    value: 0x3F64,
                    limit: 500,
                },
            ),
            (
                "type 00",
                with(&|b| b[28] &= 0x3F),
                FormatError::BadMinutiaType {
                    view: 0,
                    index: 0,
                    code: 0,
                },
            ),
            (
                "quality 101",
                with(&|b| b[33] = 101),
                FormatError::BadQuality {
                    view: 0,
                    index: 0,
                    value: 101,
                },
            ),
            (
                "250 ppi",
                with(&|b| b[21] = 98),
                FormatError::UnsupportedResolution { x: 197, y: 98 },
            ),
            (
                "extended data past the end",
                with(&|b| b[41] = 9),
                FormatError::Truncated { needed: 9, at: 42 },
            ),
        ];
        for (what, got, want) in cases {
            assert_eq!(got, Err(want), "{what}");
        }
        // Duplicate positions need two views.
        let mut two = one();
        two.push(two[0].clone());
        assert_eq!(
            encode(Format::Iso19794_2, &two),
            Err(FormatError::DuplicatePosition {
                view: 1,
                position: 2
            })
        );
        two[1].position = 3;
        let mut b = encode(Format::Iso19794_2, &two).unwrap();
        let second = 24 + 4 + 12 + 2;
        b[second] = 2;
        assert_eq!(
            decode(Format::Iso19794_2, &b),
            Err(FormatError::DuplicatePosition {
                view: 1,
                position: 2
            })
        );
        // Messages name the field and the rule.
        let e = with(&|b| b[28] = 0x7F).unwrap_err().to_string();
        assert!(
            e.contains("minutia 0 of finger view 0") && e.contains("width 500"),
            "{e}"
        );
        // A declared length over the cap is refused before anything is read.
        let mut big = good.clone();
        big[8..12].copy_from_slice(&(1u32 << 30).to_be_bytes());
        assert_eq!(
            decode(Format::Iso19794_2, &big),
            Err(FormatError::TooLong(1 << 30))
        );
    }
}
