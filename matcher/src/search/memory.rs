//! Where a gallery's memory goes, by part: memory is what limits the gallery's size (issue 4
//! aims at 3 KB a tenprint identity), so the benchmark reports it beside the resident memory.

use super::IndexedMatcher;
use crate::SubjectId;

/// Where a gallery's memory goes: heap bytes (allocated capacity) by part, summed over shards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GalleryBytes {
    /// Packed minutiae and the per-entry offsets and counts that locate them.
    pub minutiae: usize,
    /// Stage 1's histogram codes and pattern classes (4 bytes an entry).
    pub histograms: usize,
    /// The word index: posting lists, their offsets, the uncompressed tail, each finger's
    /// word count, and the gallery's word counts that decide which words are dropped
    /// (`Vocabulary`: 2.3 MB in all, once it has a print).
    pub index: usize,
    /// Subject ids and the set of enrolled ids.
    pub subjects: usize,
}

impl GalleryBytes {
    pub fn total(&self) -> usize {
        self.minutiae + self.histograms + self.index + self.subjects
    }
}

/// Heap bytes a vector holds: its capacity, not its length.
pub(super) fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

impl IndexedMatcher {
    /// Heap bytes held by the gallery, by part (allocator overhead and the process's other
    /// memory not included: the benchmark reports resident memory beside it).
    pub fn heap_bytes(&self) -> GalleryBytes {
        let mut b = GalleryBytes {
            subjects: self.enrolled.lock().expect("enrolled set").capacity()
                * (std::mem::size_of::<SubjectId>() + 1),
            ..GalleryBytes::default()
        };
        for s in &self.shards {
            let s = s.read().expect("shard lock");
            b.minutiae += vec_bytes(&s.minutiae) + vec_bytes(&s.starts) + vec_bytes(&s.counts);
            b.histograms += vec_bytes(&s.hists) + vec_bytes(&s.patterns);
            b.index += s.word_counts.iter().map(vec_bytes).sum::<usize>() + s.postings.heap_bytes();
            b.subjects += vec_bytes(&s.subjects);
        }
        b.index += self
            .vocabulary
            .read()
            .expect("vocabulary lock")
            .heap_bytes();
        b
    }
}
