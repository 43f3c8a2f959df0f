//! One shard of the gallery: entry-indexed flat arrays holding only what a search reads (the
//! packed minutiae, each finger's word count, the histogram codes, the pattern classes, and
//! the posting lists), rather than a structure per subject, since memory is what limits the
//! gallery's size. This file holds the storage and what changes it: appending an entry (one
//! print, or a bulk load's batch), removal, and the compaction that drops removed entries.
//! What each stage reads of a shard is beside that stage's code (`impl Shard` in
//! [`super::words`], [`super::histogram`], [`super::patterns`] and
//! [`super::stage1`](mod@super::stage1)).

use super::edges::{Prepared, Scratch, prepare_edges};
use super::enrol::Enrolled;
use super::geometry::{POSITIONS, unpack, unpack_minutia};
use super::histogram::{Code, HIST};
use super::patterns::{PatternCounts, pack_patterns};
use super::postings::{Postings, sort_by_key};
use super::words::{key, words};
use crate::template::FingerTemplate;
use crate::{SubjectId, Tenprint};

/// One shard of the gallery, entry-indexed flat arrays (see the module comment).
#[derive(Default)]
pub(super) struct Shard {
    pub(super) subjects: Vec<SubjectId>,
    /// Per entry: where its minutiae start in `minutiae`; its fingers follow slot by slot.
    pub(super) starts: Vec<u32>,
    /// Per entry and slot: minutiae of that finger (0: no finger there).
    pub(super) counts: Vec<[u16; POSITIONS]>,
    pub(super) minutiae: Vec<u32>,
    /// Per slot, then entry: how many distinct edge words the finger has (slot-major: stage 1
    /// reads one slot's column per probe finger, contiguously).
    pub(super) word_counts: [Vec<u16>; POSITIONS],
    /// Per entry and slot: the histogram code (zero where there is no finger).
    pub(super) hists: Vec<[Code; POSITIONS]>,
    /// Per entry: its fingers' pattern classes, three bits a slot (see [`pack_patterns`]).
    pub(super) patterns: Vec<u32>,
    /// How many entries have each code at each slot and each pair of codes at each pair of
    /// slots: the pattern scores' moments without a pass over the entries.
    pub(super) pattern_counts: PatternCounts,
    pub(super) postings: Postings,
    /// Entries removed from the gallery (a bit per entry; empty until the first removal):
    /// searches never keep them. See [`Matcher::remove`](crate::Matcher::remove).
    pub(super) removed: Vec<u64>,
    pub(super) removed_count: usize,
}

impl Shard {
    /// Enrols one print: its postings go to the index's tail (see [`Postings`]).
    /// `dropped`: the matcher's dropped keys (see [`Vocabulary`](super::words::Vocabulary)).
    pub(super) fn push(&mut self, subject: SubjectId, print: Enrolled, dropped: &[u64]) {
        self.append(subject, print, |postings, key, idx| {
            postings.push(key, idx, dropped)
        });
        self.postings.maybe_fold(dropped);
    }

    /// Enrols a batch of prints at once (the bulk load's step, see
    /// [`IndexedMatcher::enroll_many`](super::IndexedMatcher::enroll_many)): their postings
    /// are sorted and merged into the index directly, with no stop at the tail.
    /// `postings`: how many words the items' fingers have (the staging counted them).
    pub(super) fn push_batch(
        &mut self,
        items: Vec<(SubjectId, Enrolled)>,
        postings: usize,
        dropped: &[u64],
    ) {
        if items.is_empty() {
            return;
        }
        // Earlier enrolments in the tail come first in every list.
        self.postings.fold(dropped);
        let mut batch: Vec<u64> = Vec::with_capacity(postings);
        for (subject, print) in items {
            self.append(subject, print, |_, key, idx| {
                batch.push((key as u64) << 32 | idx as u64)
            });
        }
        sort_by_key(&mut batch);
        self.postings.extend_sorted(&batch, dropped);
    }

    /// Appends an entry's arrays and hands each of its postings `(key, entry)` to `posting`;
    /// returns the entry's index.
    fn append(
        &mut self,
        subject: SubjectId,
        print: Enrolled,
        mut posting: impl FnMut(&mut Postings, u32, u32),
    ) -> u32 {
        let idx = self.subjects.len() as u32;
        self.subjects.push(subject);
        self.starts
            .push(u32::try_from(self.minutiae.len()).expect("a shard under 4G minutiae"));
        self.minutiae.extend_from_slice(&print.minutiae);
        let mut words = print.words.iter();
        for (s, &n) in print.word_counts.iter().enumerate() {
            for &w in words.by_ref().take(n as usize) {
                posting(&mut self.postings, key(s, w), idx);
            }
        }
        self.counts.push(print.counts);
        for (column, wc) in self.word_counts.iter_mut().zip(print.word_counts) {
            column.push(wc);
        }
        self.hists.push(print.hists);
        self.patterns.push(print.patterns);
        self.pattern_counts.add(print.patterns, 1);
        idx
    }

    pub(super) fn len(&self) -> usize {
        self.subjects.len()
    }

    /// Entry `e`'s enrolled print as the matcher keeps it, for searching with (quality and
    /// image size are not kept: 0).
    pub(super) fn print(&self, e: usize) -> Tenprint {
        let mut at = self.starts[e] as usize;
        let mut fingers = Vec::new();
        for (s, &count) in self.counts[e].iter().enumerate() {
            let count = count as usize;
            if count > 0 {
                fingers.push(FingerTemplate {
                    position: s as u8 + 1,
                    width: 0,
                    height: 0,
                    minutiae: self.minutiae[at..at + count]
                        .iter()
                        .map(|&p| unpack_minutia(p))
                        .collect(),
                });
            }
            at += count;
        }
        Tenprint { fingers }
    }

    /// Entries not removed: the subjects this shard holds.
    pub(super) fn live(&self) -> usize {
        self.len() - self.removed_count
    }

    pub(super) fn is_removed(&self, e: usize) -> bool {
        self.removed
            .get(e / 64)
            .is_some_and(|b| b >> (e % 64) & 1 == 1)
    }

    /// The entry holding `subject`, if this shard holds it.
    pub(super) fn find(&self, subject: SubjectId) -> Option<usize> {
        (0..self.len()).find(|&e| self.subjects[e] == subject && !self.is_removed(e))
    }

    /// The words entry `e`'s fingers were enrolled with, by slot: recomputed from its minutiae
    /// (see [`Shard::finger`]; a finger's words do not depend on the order of its edges), as
    /// enrolment computed them from the same packed minutiae.
    pub(super) fn entry_words(&self, e: usize) -> Vec<(usize, Vec<u16>)> {
        (0..POSITIONS)
            .filter(|&s| self.counts[e][s] > 0)
            .map(|s| (s, words(&self.finger(e, s).edges)))
            .collect()
    }

    /// Removes entry `e` from the gallery: searches no longer keep it, and its minutiae,
    /// histogram codes and pattern classes are overwritten (the template is gone; its
    /// postings stay in the index, a word's list naming an entry no search keeps, until
    /// [`Shard::purge`]).
    pub(super) fn remove(&mut self, e: usize) {
        if self.removed.len() <= e / 64 {
            self.removed.resize(e / 64 + 1, 0);
        }
        self.removed[e / 64] |= 1 << (e % 64);
        self.removed_count += 1;
        let start = self.starts[e] as usize;
        let n: usize = self.counts[e].iter().map(|c| *c as usize).sum();
        self.minutiae[start..start + n].fill(0);
        self.hists[e] = [[0; HIST]; POSITIONS];
        self.pattern_counts.add(self.patterns[e], -1);
        self.patterns[e] = pack_patterns(&[None; POSITIONS]);
        self.pattern_counts.add(self.patterns[e], 1);
    }

    /// Drops the removed entries: the others are renumbered in order and every array and
    /// posting list is rewritten without them (each list decoded and encoded afresh: a pass
    /// over the index, as a fold once was). Call with the tail folded.
    pub(super) fn purge(&mut self) {
        if self.removed_count == 0 {
            return;
        }
        debug_assert_eq!(self.postings.tail_len, 0);
        // New index of each entry; u32::MAX for a removed one.
        let mut renumber = vec![u32::MAX; self.len()];
        let mut next = 0u32;
        for (e, new) in renumber.iter_mut().enumerate() {
            if !self.is_removed(e) {
                *new = next;
                next += 1;
            }
        }
        let keep = |e: &usize| renumber[*e] != u32::MAX;
        let old_starts = std::mem::take(&mut self.starts);
        let old_minutiae = std::mem::take(&mut self.minutiae);
        for e in (0..renumber.len()).filter(keep) {
            let start = old_starts[e] as usize;
            let n: usize = self.counts[e].iter().map(|c| *c as usize).sum();
            self.starts
                .push(u32::try_from(self.minutiae.len()).expect("a shard under 4G minutiae"));
            self.minutiae
                .extend_from_slice(&old_minutiae[start..start + n]);
        }
        fn filter<T>(v: &mut Vec<T>, renumber: &[u32]) {
            let mut e = 0;
            v.retain(|_| {
                e += 1;
                renumber[e - 1] != u32::MAX
            });
            v.shrink_to_fit();
        }
        filter(&mut self.subjects, &renumber);
        filter(&mut self.counts, &renumber);
        filter(&mut self.hists, &renumber);
        filter(&mut self.patterns, &renumber);
        self.pattern_counts = PatternCounts::of(&self.patterns);
        for column in &mut self.word_counts {
            filter(column, &renumber);
        }
        self.postings.renumber(&renumber);
        self.removed = Vec::new();
        self.removed_count = 0;
    }

    /// Entry `e`'s finger in slot `s`, prepared for pairing (empty if it has none).
    pub(super) fn finger(&self, e: usize, s: usize) -> Prepared {
        let mut out = Prepared::default();
        self.finger_into(e, s, &mut out, &mut Scratch::default(), &mut Vec::new());
        out
    }

    /// [`Shard::finger`] into `out`, in working memory kept by the caller, inlined where it
    /// is called (see [`super::pairing`]).
    #[inline(always)]
    pub(super) fn finger_into(
        &self,
        e: usize,
        s: usize,
        out: &mut Prepared,
        scratch: &mut Scratch,
        keys: &mut Vec<u64>,
    ) {
        let start = self.starts[e] as usize
            + self.counts[e][..s]
                .iter()
                .map(|c| *c as usize)
                .sum::<usize>();
        let n = self.counts[e][s] as usize;
        out.points.clear();
        out.points
            .extend(self.minutiae[start..start + n].iter().map(|p| unpack(*p)));
        prepare_edges(out, scratch, keys);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::edges::prepare;
    use crate::search::enrol::enrolled_fingers;
    use crate::search::geometry::{slot, used_points};
    use crate::search::reference::enrol_capture;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]
        /// Stage 2 pairs exactly the finger enrolment saw: unpacking a gallery finger and
        /// recomputing its edges gives the template's own points and edges.
        #[test]
        fn packed_gallery_fingers_prepare_as_the_template(p in 1u64..10_000, f in 0usize..10) {
            let t = enrol_capture(p);
            let mut shard = Shard::default();
            shard.push(p, enrolled_fingers(&t).unwrap(), &[]);
            // (An amputee's print has fewer than ten fingers.)
            let finger = &t.fingers[f % t.fingers.len()];
            let s = slot(finger.position).unwrap();
            prop_assert_eq!(shard.finger(0, s), prepare(used_points(finger)));
        }
    }
}
