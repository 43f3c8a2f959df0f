//! Enrolment and what undoes it: a print becomes an [`Enrolled`] (its fingers' packed
//! minutiae, edge words, histogram codes and pattern classes, computed once), which the
//! vocabulary counts and a shard appends, one at a time ([`IndexedMatcher::enroll_one`]) or a
//! bulk load's batches at once ([`IndexedMatcher::enroll_many`]); removal marks an entry and
//! takes its words out of the vocabulary, and [`IndexedMatcher::compact`] drops removed
//! entries and gives memory back.
//!
//! Lock order: `enrolled`, then `vocabulary` (to write), never waited for while a shard lock
//! is wanted; a shard's holder may take the vocabulary to read.

use super::IndexedMatcher;
use super::edges::{NEIGHBOURS, Scratch, neighbour_edges_into};
use super::geometry::{MAX_COORD, POSITIONS, Point, pack, slot, unpack};
use super::histogram::Code;
use super::histogram::{histogram_of_loaded, quantise};
use super::patterns::{gallery_pattern, pack_patterns};
use super::simd::finger_codes;
use super::words::push_words;
use crate::template::FingerTemplate;
use crate::{MatchError, SubjectId, Tenprint};

/// A bulk load's prints staged per shard, with how many postings they have.
type Staged = Vec<(Vec<(SubjectId, Enrolled)>, usize)>;
use rayon::prelude::*;
use std::cell::RefCell;

/// What enrolment keeps of a print: its fingers' minutiae and words, slot after slot in one
/// array each, and per slot their counts and the histogram code. Two allocations a print: a
/// vector per finger for each (allocated, then freed once the shard copied them) made a bulk
/// load of a million identities a quarter slower.
#[derive(Default)]
pub(super) struct Enrolled {
    pub(super) minutiae: Vec<u32>,
    pub(super) words: Vec<u16>,
    /// Per slot: how many minutiae and distinct words the finger there has (0: no finger).
    pub(super) counts: [u16; POSITIONS],
    pub(super) word_counts: [u16; POSITIONS],
    pub(super) hists: [Code; POSITIONS],
    /// Its fingers' pattern classes (see [`pack_patterns`]).
    pub(super) patterns: u32,
}

impl Enrolled {
    /// The words of the finger at slot `s` (empty if there is none).
    pub(super) fn words_at(&self, s: usize) -> &[u16] {
        let at: usize = self.word_counts[..s].iter().map(|&c| c as usize).sum();
        &self.words[at..at + self.word_counts[s] as usize]
    }
}

/// The fingers of a gallery print by slot: the first finger listed at each position 1..=10.
pub(super) fn enrolled_fingers(print: &Tenprint) -> Result<Enrolled, MatchError> {
    thread_local! {
        static SCRATCH: RefCell<(Scratch, Vec<Point>)> = RefCell::default();
    }
    SCRATCH.with_borrow_mut(|(scratch, points)| enrolled_fingers_with(print, scratch, points))
}

fn enrolled_fingers_with(
    print: &Tenprint,
    scratch: &mut Scratch,
    points: &mut Vec<Point>,
) -> Result<Enrolled, MatchError> {
    // The finger taken at each slot, checked in the order listed.
    let mut at_slot: [Option<&FingerTemplate>; POSITIONS] = [None; POSITIONS];
    for (i, f) in print.fingers.iter().enumerate() {
        let Some(s) = slot(f.position) else { continue };
        if at_slot[s].is_some() {
            continue;
        }
        if f.minutiae.len() > u16::MAX as usize {
            return Err(MatchError::Unsupported(format!(
                "fingers[{i}].minutiae: {} exceeds the limit of {}",
                f.minutiae.len(),
                u16::MAX
            )));
        }
        if let Some((k, m)) = f
            .minutiae
            .iter()
            .enumerate()
            .find(|(_, m)| m.x > MAX_COORD || m.y > MAX_COORD)
        {
            return Err(MatchError::Unsupported(format!(
                "fingers[{i}].minutiae[{k}]: ({}, {}) is outside the matcher's {MAX_COORD} px",
                m.x, m.y
            )));
        }
        at_slot[s] = Some(f);
    }
    let n = at_slot.iter().flatten().map(|f| f.minutiae.len()).sum();
    let mut out = Enrolled {
        minutiae: Vec::with_capacity(n),
        // Three edges per minutia, at most a word each.
        words: Vec::with_capacity(NEIGHBOURS * n),
        patterns: pack_patterns(&at_slot.map(|f| f.and_then(gallery_pattern))),
        ..Enrolled::default()
    };
    for (s, f) in at_slot.into_iter().enumerate() {
        let Some(f) = f else { continue };
        let start = out.minutiae.len();
        out.minutiae
            .extend(f.minutiae.iter().filter(super::geometry::used(f)).map(pack));
        points.clear();
        points.extend(out.minutiae[start..].iter().map(|p| unpack(*p)));
        let words_before = out.words.len();
        out.hists[s] = finger_codes(points, scratch, &mut out.words);
        out.counts[s] = (out.minutiae.len() - start) as u16;
        // At most one per word: under 2^16.
        out.word_counts[s] = (out.words.len() - words_before) as u16;
    }
    Ok(out)
}

/// A gallery finger's stage-1 codes: appends its edge words to `words` and returns its
/// histogram code. Most of a bulk load's work, so it runs compiled for AVX2 where the CPU has
/// it (see [`finger_codes`]).
#[inline(always)]
pub(super) fn finger_codes_portable(
    points: &[Point],
    scratch: &mut Scratch,
    words: &mut Vec<u16>,
) -> Code {
    neighbour_edges_into(points, scratch);
    push_words(&scratch.edges, words);
    quantise(&histogram_of_loaded(scratch))
}

/// What enrolment keeps of a print, or why it refuses it.
fn admissible(print: &Tenprint) -> Result<Enrolled, MatchError> {
    let fingers = enrolled_fingers(print)?;
    if fingers.minutiae.is_empty() {
        return Err(MatchError::EmptyProbe);
    }
    Ok(fingers)
}

impl IndexedMatcher {
    /// Enrols one print (see [`Matcher::enroll`](crate::Matcher::enroll)): its postings go to
    /// its shard's uncompressed tail, folded into the index as the tail grows.
    pub(super) fn enroll_one(
        &self,
        subject: SubjectId,
        print: &Tenprint,
    ) -> Result<(), MatchError> {
        let fingers = admissible(print)?;
        if !self.enrolled.lock().expect("enrolled set").insert(subject) {
            return Err(MatchError::AlreadyEnrolled(subject));
        }
        self.vocabulary
            .write()
            .expect("vocabulary lock")
            .add(&fingers);
        let mut shard = self.shards[(subject as usize) % self.shards.len()]
            .write()
            .expect("shard lock");
        let v = self.vocabulary.read().expect("vocabulary lock");
        shard.push(subject, fingers, &v.dropped);
        Ok(())
    }

    /// Enrols the prints in order, exactly as [`Matcher::enroll`](crate::Matcher::enroll) one
    /// after another would (same gallery, same errors), but prepares them on all cores and
    /// fills the shards in parallel, in batches: the way to load a gallery. Stops at the first
    /// print refused and returns its error; those before it stay enrolled. Call
    /// [`IndexedMatcher::compact`] after a bulk load.
    ///
    /// Each shard takes its prints in batches, each batch's postings sorted and merged into
    /// the compressed index at once (see `Postings::merge`) rather than one by one into the
    /// tail, whose per-posting table lookups and list growth had been two thirds of a bulk
    /// load. A batch grows with the index, as the tail does before a fold, up to
    /// `BATCH_MAX_POSTINGS`. Searches running meanwhile see the gallery as of the last batch
    /// each shard took: a print becomes searchable with its batch, every one by the time this
    /// returns.
    pub fn enroll_many(&self, prints: &[(SubjectId, Tenprint)]) -> Result<(), MatchError> {
        self.enroll_stream(std::iter::once(Ok(prints)))
    }

    /// [`IndexedMatcher::enroll_many`] over prints that arrive in chunks (a gallery file read
    /// as it is enrolled, see [`crate::gallery::GalleryReader`]): the batches span chunks, so
    /// the index is built as from one slice, and only a chunk's prints are held at once. Stops
    /// at the first error, the stream's or a refused print's.
    pub fn enroll_stream<C: AsRef<[(SubjectId, Tenprint)]>>(
        &self,
        chunks: impl Iterator<Item = Result<C, MatchError>>,
    ) -> Result<(), MatchError> {
        let mut staged: Staged = (0..self.shards.len()).map(|_| (Vec::new(), 0)).collect();
        // Takes each shard's staged prints once they are `full` (or all, if not given).
        let commit = |staged: &mut Staged, full: bool| {
            self.shards.par_iter().zip(staged.par_iter_mut()).for_each(
                |(shard, (items, postings))| {
                    if items.is_empty() {
                        return;
                    }
                    if full {
                        let s = shard.read().expect("shard lock");
                        if *postings < s.postings.batch_postings() {
                            return;
                        }
                    }
                    let mut s = shard.write().expect("shard lock");
                    let v = self.vocabulary.read().expect("vocabulary lock");
                    s.push_batch(std::mem::take(items), *postings, &v.dropped);
                    *postings = 0;
                },
            );
        };
        for c in chunks {
            let c = match c {
                Ok(c) => c,
                Err(e) => {
                    commit(&mut staged, false);
                    return Err(e);
                }
            };
            self.enroll_chunk(c.as_ref(), &mut staged, &commit)?;
        }
        commit(&mut staged, false);
        Ok(())
    }

    fn enroll_chunk(
        &self,
        prints: &[(SubjectId, Tenprint)],
        staged: &mut Staged,
        commit: &impl Fn(&mut Staged, bool),
    ) -> Result<(), MatchError> {
        // Chunks bound the prepared fingers held at once.
        for chunk in prints.chunks(1024) {
            let prepared: Vec<_> = chunk.par_iter().map(|(_, t)| admissible(t)).collect();
            let mut refused = None;
            {
                let mut enrolled = self.enrolled.lock().expect("enrolled set");
                let (mut subjects, mut accepted) = (Vec::new(), Vec::new());
                for ((subject, _), fingers) in chunk.iter().zip(prepared) {
                    match fingers {
                        Err(e) => refused = Some(e),
                        Ok(_) if !enrolled.insert(*subject) => {
                            refused = Some(MatchError::AlreadyEnrolled(*subject))
                        }
                        Ok(f) => {
                            subjects.push(*subject);
                            accepted.push(f);
                        }
                    }
                    if refused.is_some() {
                        break;
                    }
                }
                let mut vocabulary = self.vocabulary.write().expect("vocabulary lock");
                vocabulary.add_many(&accepted);
                for (subject, f) in subjects.into_iter().zip(accepted) {
                    let (items, postings) = &mut staged[(subject as usize) % self.shards.len()];
                    *postings += f.words.len();
                    items.push((subject, f));
                }
            }
            if let Some(e) = refused {
                commit(staged, false);
                return Err(e);
            }
            commit(staged, true);
        }
        Ok(())
    }

    /// Folds every shard's recent enrolments into its compressed index (see `Postings`)
    /// and gives back the arrays' spare capacity: after a bulk load, this gives the smallest
    /// memory and the fastest searches. Searches give the same answers either way.
    ///
    /// Removed subjects' entries go too (see `Shard::purge`): their memory comes back, and
    /// the gallery is the one enrolling the others alone, in the same order, would give.
    ///
    /// On Linux the arrays stage 1 reads at random are then moved to huge pages where the
    /// kernel has them (see `crate::pages`: a copy, a fraction of a second for a million
    /// identities), and the memory the allocator holds free (a bulk load's staging buffers) is
    /// given back.
    pub fn compact(&self) {
        for s in &self.shards {
            let mut s = s.write().expect("shard lock");
            let v = self.vocabulary.read().expect("vocabulary lock");
            s.postings.fold(&v.dropped);
            s.purge();
            s.postings.release_spare();
            s.starts.shrink_to_fit();
            s.counts.shrink_to_fit();
            s.minutiae.shrink_to_fit();
            for column in &mut s.word_counts {
                column.shrink_to_fit();
            }
            s.patterns.shrink_to_fit();
            // What stage 1 reads at random over the whole shard, on huge pages (see
            // `crate::pages`): each of a search's ~4,096 kept subjects' histogram codes would
            // otherwise be a page walk. The ids its pattern pass gathers move too once a
            // shard's are large enough to hold two huge pages (over 524,288 entries; not at
            // 1,000,000 in 4 shards, where they span 2 MB a shard).
            crate::pages::onto_huge_pages(&mut s.hists);
            crate::pages::onto_huge_pages(&mut s.subjects);
        }
        crate::pages::give_back_free_memory();
    }

    /// [`Matcher::remove`](crate::Matcher::remove): marks the subject's entry removed in its
    /// shard (see [`Shard::remove`](super::shard::Shard::remove) for what is erased) and takes
    /// its words out of the vocabulary.
    pub(super) fn remove_subject(&self, subject: SubjectId) -> Result<(), MatchError> {
        let words = {
            let mut shard = self.shards[(subject as usize) % self.shards.len()]
                .write()
                .expect("shard lock");
            let e = shard
                .find(subject)
                .ok_or(MatchError::NotEnrolled(subject))?;
            let words = shard.entry_words(e);
            shard.remove(e);
            words
        };
        self.enrolled.lock().expect("enrolled set").remove(&subject);
        self.vocabulary
            .write()
            .expect("vocabulary lock")
            .forget(&words);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::reference::{enrol_capture, probe};
    use crate::{MatchError, Matcher};
    use std::collections::HashSet;
    use std::sync::Mutex;

    #[test]
    fn bulk_enrolment_is_sequential_enrolment() {
        let (one, many) = (IndexedMatcher::new(3), IndexedMatcher::new(3));
        // Enough prints for each shard to take several batches (see `Postings::batch_postings`).
        let mut prints: Vec<(SubjectId, Tenprint)> =
            (1..=1200).map(|p| (p, enrol_capture(p))).collect();
        prints.push((7, enrol_capture(8))); // a duplicate id: refused, in order
        prints.push((500, enrol_capture(500)));
        let mut first_error = None;
        for (p, t) in &prints {
            if let Err(e) = one.enroll(*p, t) {
                first_error = Some(e);
                break;
            }
        }
        assert_eq!(many.enroll_many(&prints).err(), first_error);
        assert_eq!(many.len(), 1200);
        for p in [1, 60, 1199] {
            let q = probe(p, 3);
            assert_eq!(one.search(&q, 5).unwrap(), many.search(&q, 5).unwrap());
            assert_eq!(
                one.shortlist_ranks(&q, p).unwrap(),
                many.shortlist_ranks(&q, p).unwrap()
            );
        }
    }

    #[test]
    fn refuses_duplicates_and_empty_prints() {
        let m = IndexedMatcher::new(2);
        m.enroll(1, &enrol_capture(1)).unwrap();
        assert_eq!(
            m.enroll(1, &enrol_capture(1)),
            Err(MatchError::AlreadyEnrolled(1))
        );
        assert_eq!(
            m.search(&Tenprint::default(), 1),
            Err(MatchError::EmptyProbe)
        );
        assert_eq!(
            m.enroll(2, &Tenprint::default()),
            Err(MatchError::EmptyProbe)
        );
    }

    #[test]
    fn refuses_minutiae_outside_the_packed_range() {
        let m = IndexedMatcher::new(1);
        let mut t = enrol_capture(1);
        t.fingers[2].minutiae[4].x = MAX_COORD + 1;
        let err = m.enroll(1, &t).unwrap_err().to_string();
        assert!(err.contains("fingers[2].minutiae[4]"), "{err}");
        assert_eq!(m.len(), 0);
        // Refused without being marked enrolled: the corrected print can be enrolled.
        m.enroll(1, &enrol_capture(1)).unwrap();
    }

    #[test]
    fn removed_subjects_are_not_found_and_can_be_enrolled_again() {
        let m = IndexedMatcher::new(3);
        let prints: Vec<(SubjectId, Tenprint)> = (1..=400).map(|p| (p, enrol_capture(p))).collect();
        m.enroll_many(&prints).unwrap();
        m.compact();
        let found = |p: u64, n: u64| m.search(&probe(p, n), 5).unwrap();
        assert_eq!(found(77, 1).hit.map(|c| c.subject), Some(77));

        m.remove(77).unwrap();
        assert_eq!(m.len(), 399);
        for n in 1..4 {
            let r = found(77, n);
            assert!(r.candidates.iter().all(|c| c.subject != 77), "{r:?}");
            assert_eq!(r.hit, None, "{r:?}");
        }
        // Nothing else changed: the others are found as before.
        for p in [1, 76, 78, 400] {
            assert_eq!(found(p, 1).hit.map(|c| c.subject), Some(p));
        }
        assert_eq!(m.shortlist_ranks(&probe(77, 1), 77).unwrap(), None);
        // Removing it twice, or someone never enrolled, is a clear error.
        assert_eq!(m.remove(77), Err(MatchError::NotEnrolled(77)));
        assert_eq!(m.remove(9_999), Err(MatchError::NotEnrolled(9_999)));

        // The id is free again; a new enrolment (another capture) is found, the old one not.
        m.enroll(77, &probe(77, 50)).unwrap();
        assert_eq!(m.len(), 400);
        assert_eq!(found(77, 2).hit.map(|c| c.subject), Some(77));
        assert_eq!(
            m.enroll(77, &enrol_capture(77)),
            Err(MatchError::AlreadyEnrolled(77))
        );
        m.remove(77).unwrap();
        assert_eq!(found(77, 3).hit, None);
    }

    /// Removals while other threads search: a search that starts after a removal returned
    /// never names that subject, and the subjects not removed are still found.
    #[test]
    fn removal_while_searching_is_seen_by_every_later_search() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let m = IndexedMatcher::new(4);
        let prints: Vec<(SubjectId, Tenprint)> = (1..=300).map(|p| (p, enrol_capture(p))).collect();
        m.enroll_many(&prints).unwrap();
        let gone: Mutex<HashSet<SubjectId>> = Mutex::new(HashSet::new());
        let done = AtomicBool::new(false);
        std::thread::scope(|scope| {
            for t in 0..2u64 {
                let (m, gone, done) = (&m, &gone, &done);
                scope.spawn(move || {
                    let mut i = 0u64;
                    while !done.load(Ordering::Acquire) && i < 400 {
                        let p = 1 + (i * 7 + t * 3) % 300;
                        let before = gone.lock().unwrap().clone();
                        let r = m.search(&probe(p, i % 5), 3).unwrap();
                        for c in &r.candidates {
                            assert!(
                                !before.contains(&c.subject),
                                "removed {} returned",
                                c.subject
                            );
                        }
                        if !before.contains(&p) && p % 2 == 1 {
                            // Odd subjects are never removed.
                            assert_eq!(r.hit.map(|c| c.subject), Some(p));
                        }
                        i += 1;
                    }
                });
            }
            for p in (2..=300).step_by(2) {
                m.remove(p).unwrap();
                gone.lock().unwrap().insert(p);
            }
            done.store(true, Ordering::Release);
        });
        assert_eq!(m.len(), 150);
        for p in [2, 100, 300] {
            let r = m.search(&probe(p, 0), 5).unwrap();
            assert!(r.candidates.iter().all(|c| c.subject % 2 == 1), "{r:?}");
        }
    }

    /// Compacting after removals drops the removed entries: the gallery is then the one the
    /// other prints alone would have given — arrays, index bytes and answers — with the
    /// memory back, and a removed id can be enrolled again.
    #[test]
    fn compact_drops_removed_subjects_as_if_never_enrolled() {
        let (purged, fresh) = (IndexedMatcher::new(3), IndexedMatcher::new(3));
        let prints: Vec<(SubjectId, Tenprint)> = (1..=600).map(|p| (p, enrol_capture(p))).collect();
        purged.enroll_many(&prints).unwrap();
        let gone = |p: u64| p.is_multiple_of(4);
        for p in (1..=600).filter(|p| gone(*p)) {
            purged.remove(p).unwrap();
        }
        let before = purged.heap_bytes();
        purged.compact();
        let after = purged.heap_bytes();
        assert!(after.minutiae < before.minutiae, "{before:?} {after:?}");
        assert!(after.index < before.index, "{before:?} {after:?}");
        let kept: Vec<(SubjectId, Tenprint)> =
            prints.iter().filter(|(p, _)| !gone(*p)).cloned().collect();
        fresh.enroll_many(&kept).unwrap();
        fresh.compact();
        for (a, b) in purged.shards.iter().zip(&fresh.shards) {
            let (a, b) = (a.read().unwrap(), b.read().unwrap());
            assert_eq!(a.subjects, b.subjects);
            assert_eq!(a.starts, b.starts);
            assert_eq!(a.minutiae, b.minutiae);
            assert_eq!(a.counts, b.counts);
            assert_eq!(a.hists, b.hists);
            assert_eq!(a.word_counts, b.word_counts);
            assert_eq!(a.removed_count, 0);
            let (pa, pb) = (&a.postings, &b.postings);
            assert!(pa.offsets == pb.offsets && pa.counts == pb.counts && pa.bytes == pb.bytes);
        }
        assert_eq!((purged.len(), fresh.len()), (450, 450));
        for p in [1, 4, 302, 599, 600] {
            assert_eq!(
                purged.search(&probe(p, 1), 5).unwrap(),
                fresh.search(&probe(p, 1), 5).unwrap()
            );
        }
        purged.enroll(4, &enrol_capture(4)).unwrap();
        assert_eq!(
            purged
                .search(&probe(4, 2), 1)
                .unwrap()
                .hit
                .map(|c| c.subject),
            Some(4)
        );
    }
}
