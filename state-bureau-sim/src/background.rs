//! People enrolled but never booked: the galleries' background.
//!
//! The real galleries held far more people than local jails ever booked: IDENT held visa
//! applicants and border crossers, the FBI's criminal master file people arrested anywhere,
//! long before and far from the counties a world simulates. `generate --fbi-background N` and
//! `--ident-background N` enrol `N` such people after the world's own subjects: a template and
//! a record each, no person in `truth.json`, so no booking is ever of them. They are what a
//! search must not hit; they make the galleries the program's size.
//!
//! A world of a million people with a million of each is too big to hold in memory as it is
//! written, so the background is made in chunks, in parallel (each person's draws come from
//! their own seed, `(world seed, domain, k)`, so the chunking and the thread count change
//! nothing), and streamed in order into the gallery file ([`GalleryWriter`]) and the records
//! file ([`RecordsWriter`]). Memory stays at one batch of templates.
//!
//! Background people's fingers are drawn in their own seed domains ([`FBI_DOMAIN`],
//! [`IDENT_DOMAIN`]): no background person shares a finger with a world person, nor FBI
//! background with IDENT background.

use crate::bookings::mix;
use interop_gateway::world::{Biographics, ImmigrationRecord, ImmigrationStatus, Records};
use interop_matcher::gallery::GalleryWriter;
use interop_matcher::synth::{self, CaptureModel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Seed domain of the FBI background's fingers and records.
pub const FBI_DOMAIN: u64 = 0xBAC6_0F81;
/// Seed domain of the IDENT background's fingers and records.
pub const IDENT_DOMAIN: u64 = 0xBAC6_1DE7;

/// People made per parallel task; a batch of [`BATCH`] of them is held at once (small in tests,
/// so that they cross batch boundaries: nothing made depends on where they fall).
const CHUNK: u64 = if cfg!(test) { 16 } else { 1_024 };
const BATCH: u64 = 16 * CHUNK;

/// How many people each gallery holds beyond the world's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Background {
    pub fbi: u64,
    pub ident: u64,
}

/// A records file (`fbi-records.json`, `ident-records.json`) written entry by entry: the same
/// bytes as [`interop_gateway::world::write_json`] of the whole map, when the subjects come
/// in increasing order (checked).
pub struct RecordsWriter {
    path: PathBuf,
    out: BufWriter<File>,
    last: Option<u64>,
}

impl RecordsWriter {
    pub fn create(path: &Path) -> anyhow::Result<RecordsWriter> {
        let file = File::create(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(b"{")?;
        Ok(RecordsWriter {
            path: path.to_owned(),
            out,
            last: None,
        })
    }

    pub fn push<T: Serialize>(&mut self, subject: u64, record: &T) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.last.is_none_or(|l| subject > l),
            "{}: subject {subject} after {:?}: records must come in increasing order",
            self.path.display(),
            self.last
        );
        if self.last.is_some() {
            self.out.write_all(b",")?;
        }
        write!(self.out, "\"{subject}\":")?;
        serde_json::to_writer(&mut self.out, record)?;
        self.last = Some(subject);
        Ok(())
    }

    pub fn finish(mut self) -> anyhow::Result<()> {
        self.out.write_all(b"}")?;
        self.out
            .into_inner()
            .map_err(|e| anyhow::anyhow!("{}: {}", self.path.display(), e.error()))?
            .sync_all()?;
        Ok(())
    }
}

/// One background person: their enrolment template and their record.
type Made<T> = (u64, interop_matcher::Tenprint, T);

/// Appends `count` background people to a gallery and its records, numbered from
/// `first_subject`: person `k` (from 1) gets their record from `record` (given their own
/// random stream and their subject id) and is enrolled from their own fingers, both in seed domain `domain`. `progress` is told how many
/// have been written so far.
#[allow(clippy::too_many_arguments)]
pub fn append<T, F>(
    seed: u64,
    domain: u64,
    first_subject: u64,
    count: u64,
    gallery: &mut GalleryWriter,
    records: &mut RecordsWriter,
    record: F,
    progress: &dyn Fn(u64),
) -> anyhow::Result<()>
where
    T: Serialize + Send,
    F: Fn(&mut ChaCha8Rng, u64) -> T + Sync,
{
    let seed = seed ^ domain;
    let model = CaptureModel::default();
    let make = |k: u64| -> Made<T> {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, k, 0));
        let master = synth::master_tenprint(seed, k);
        let print = synth::capture(&master, &model, mix(seed, k, 1));
        let subject = first_subject + k - 1;
        (subject, print, record(&mut rng, subject))
    };
    let mut done = 0;
    while done < count {
        let batch = BATCH.min(count - done);
        let made: Vec<Vec<Made<T>>> = (0..batch.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let from = done + c * CHUNK + 1;
                let to = (done + (c + 1) * CHUNK).min(done + batch);
                (from..=to).map(make).collect()
            })
            .collect();
        for (subject, print, rec) in made.into_iter().flatten() {
            gallery.push(subject, &print)?;
            records.push(subject, &rec)?;
        }
        done += batch;
        progress(done);
    }
    Ok(())
}

/// Finishes a gallery and writes its records: the world's own, then `count` background people
/// numbered after them ([`append`]).
#[allow(clippy::too_many_arguments)]
pub fn write<T, F>(
    seed: u64,
    domain: u64,
    mut gallery: GalleryWriter,
    world: &Records<T>,
    records: &Path,
    count: u64,
    record: F,
    progress: &dyn Fn(u64),
) -> anyhow::Result<()>
where
    T: Serialize + Send,
    F: Fn(&mut ChaCha8Rng, u64) -> T + Sync,
{
    let mut writer = RecordsWriter::create(records)?;
    for (subject, r) in world {
        writer.push(*subject, r)?;
    }
    let first = world.keys().next_back().map_or(1, |last| last + 1);
    append(
        seed,
        domain,
        first,
        count,
        &mut gallery,
        &mut writer,
        record,
        progress,
    )?;
    writer.finish()?;
    gallery.finish()?;
    Ok(())
}

/// An IDENT background record: mostly people the program has no interest in. The mix is this
/// project's assumption (the documents give none): 55% in lawful status (visa holders and
/// visitors), 25% lawful permanent residents, 8% citizens (naturalised, still enrolled), 5%
/// visa overstays, 4% unlawful entries, 2.5% prior removals, 0.5% fugitives — against the
/// world's own IDENT subjects, who are there because they were encountered and are mostly
/// removable.
pub fn immigration_record(rng: &mut ChaCha8Rng, subject: u64) -> ImmigrationRecord {
    let x: f64 = rng.random();
    let status = match x {
        x if x < 0.55 => ImmigrationStatus::LawfulStatus,
        x if x < 0.80 => ImmigrationStatus::LawfulPermanentResident,
        x if x < 0.88 => ImmigrationStatus::UsCitizen,
        x if x < 0.93 => ImmigrationStatus::VisaOverstay,
        x if x < 0.97 => ImmigrationStatus::UnlawfulEntry,
        x if x < 0.995 => ImmigrationStatus::PriorRemoval,
        _ => ImmigrationStatus::Fugitive,
    };
    let (name, date_of_birth, female, place_of_birth) = crate::generate::biography(rng);
    crate::generate::immigration_record(
        rng,
        subject,
        status,
        Biographics {
            name,
            date_of_birth: Some(date_of_birth),
            sex: if female { "F" } else { "M" }.into(),
            place_of_birth,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{Shares, generate_with};
    use crate::truth::{TRUTH_FILE, Truth};
    use interop_gateway::world::{
        FBI_GALLERY_FILE, FBI_RECORDS_FILE, IDENT_GALLERY_FILE, IDENT_RECORDS_FILE, read_json,
        write_json,
    };
    use interop_matcher::gallery::{GalleryReader, read_gallery};
    use std::collections::BTreeMap;

    #[test]
    fn records_written_entry_by_entry_are_the_bytes_of_the_whole_map() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let map: BTreeMap<u64, ImmigrationRecord> = (1..=40)
            .map(|s| (s, immigration_record(&mut rng, s)))
            .collect();
        write_json(dir.path(), "whole.json", &map).unwrap();
        let mut w = RecordsWriter::create(&dir.path().join("streamed.json")).unwrap();
        for (s, r) in &map {
            w.push(*s, r).unwrap();
        }
        w.finish().unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("whole.json")).unwrap(),
            std::fs::read(dir.path().join("streamed.json")).unwrap()
        );
        // Empty, too.
        write_json(dir.path(), "e1.json", &BTreeMap::<u64, u64>::new()).unwrap();
        RecordsWriter::create(&dir.path().join("e2.json"))
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("e1.json")).unwrap(),
            std::fs::read(dir.path().join("e2.json")).unwrap()
        );
        // Out of order is refused.
        let mut w = RecordsWriter::create(&dir.path().join("bad.json")).unwrap();
        w.push(5, &1u8).unwrap();
        let e = w.push(5, &1u8).unwrap_err().to_string();
        assert!(e.contains("increasing order"), "{e}");
    }

    /// The background adds gallery subjects and records after the world's, changes nothing of
    /// the world, and is the same whatever the batch boundaries.
    #[test]
    fn a_background_is_enrolled_after_the_world_and_changes_nothing_else() {
        let (plain, with) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let n = 400;
        let background = Background {
            fbi: 2 * BATCH + 3 * CHUNK + 5, // batches, and a part of a chunk
            ident: CHUNK + 1,
        };
        let a =
            generate_with(7, n, Shares::default(), Background::default(), plain.path()).unwrap();
        let b = generate_with(7, n, Shares::default(), background, with.path()).unwrap();
        assert_eq!(b.background, background);
        assert_eq!(
            (a.fbi_records, a.ident_records),
            (b.fbi_records, b.ident_records)
        );
        for f in [interop_gateway::world::WORLD_FILE, TRUTH_FILE] {
            assert_eq!(
                std::fs::read(plain.path().join(f)).unwrap(),
                std::fs::read(with.path().join(f)).unwrap(),
                "{f}: the background is not part of the world"
            );
        }
        let truth: Truth = read_json(with.path(), TRUTH_FILE).unwrap();
        for (gallery, records, world, extra) in [
            (
                FBI_GALLERY_FILE,
                FBI_RECORDS_FILE,
                a.fbi_records,
                background.fbi,
            ),
            (
                IDENT_GALLERY_FILE,
                IDENT_RECORDS_FILE,
                a.ident_records,
                background.ident,
            ),
        ] {
            let (mut small, mut big) = (
                read_gallery(&plain.path().join(gallery)).unwrap(),
                read_gallery(&with.path().join(gallery)).unwrap(),
            );
            assert_eq!(small.len(), world);
            assert_eq!(big.len() as u64, world as u64 + extra);
            assert_eq!(
                GalleryReader::open(&with.path().join(gallery))
                    .unwrap()
                    .count(),
                big.len() as u64
            );
            let tail = big.split_off(world);
            assert_eq!(
                big,
                std::mem::take(&mut small),
                "{gallery}: the world's own first"
            );
            let ids: Vec<u64> = tail.iter().map(|(s, _)| *s).collect();
            assert_eq!(
                ids,
                (world as u64 + 1..=world as u64 + extra).collect::<Vec<_>>()
            );
            let recs: serde_json::Map<String, serde_json::Value> =
                read_json(with.path(), records).unwrap();
            assert_eq!(recs.len() as u64, world as u64 + extra, "{records}");
            assert!(ids.iter().all(|s| recs.contains_key(&s.to_string())));
            // Person k's template is made from their own seed alone, wherever the batch fell.
            let domain = if gallery == FBI_GALLERY_FILE {
                FBI_DOMAIN
            } else {
                IDENT_DOMAIN
            };
            for k in [1, CHUNK, CHUNK + 1, extra] {
                let s = 7 ^ domain;
                let own = synth::capture(
                    &synth::master_tenprint(s, k),
                    &CaptureModel::default(),
                    mix(s, k, 1),
                );
                assert_eq!(
                    tail[k as usize - 1].1,
                    own,
                    "{gallery}: background person {k}"
                );
            }
        }
        // No one in the truth is a background subject.
        assert!(truth.people.iter().all(|p| {
            p.fbi_subject.is_none_or(|s| s as usize <= a.fbi_records)
                && p.ident_subject
                    .is_none_or(|s| s as usize <= a.ident_records)
        }));
        // The same seed gives the same background.
        let again = tempfile::tempdir().unwrap();
        generate_with(7, n, Shares::default(), background, again.path()).unwrap();
        for f in [
            FBI_GALLERY_FILE,
            FBI_RECORDS_FILE,
            IDENT_GALLERY_FILE,
            IDENT_RECORDS_FILE,
        ] {
            assert_eq!(
                std::fs::read(with.path().join(f)).unwrap(),
                std::fs::read(again.path().join(f)).unwrap(),
                "{f}"
            );
        }
    }

    /// IDENT's background is mostly people in lawful status, and its fingers are nobody's in
    /// the world nor in the FBI's background.
    #[test]
    fn background_people_are_mostly_lawful_and_distinct_from_the_world() {
        let seed = 3;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let statuses: Vec<ImmigrationStatus> = (1..=2_000)
            .map(|s| immigration_record(&mut rng, s).status)
            .collect();
        let lawful = statuses
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    ImmigrationStatus::LawfulStatus
                        | ImmigrationStatus::LawfulPermanentResident
                        | ImmigrationStatus::UsCitizen
                )
            })
            .count();
        assert!(
            (1_660..1_860).contains(&lawful),
            "{lawful} of 2,000 (88% expected)"
        );
        let world = synth::master_tenprint(seed, 1);
        let fbi = synth::master_tenprint(seed ^ FBI_DOMAIN, 1);
        let ident = synth::master_tenprint(seed ^ IDENT_DOMAIN, 1);
        assert_ne!(format!("{world:?}"), format!("{fbi:?}"));
        assert_ne!(format!("{fbi:?}"), format!("{ident:?}"));
    }
}
