//! Stage 1's inverted index: per shard, the posting lists of every `(slot, word)` key (see
//! [`super::words`]), each naming the entries (ascending) whose finger in that slot has the
//! word.
//!
//! The lists are what makes the word code cheap in memory and time, so they are compressed:
//! delta-encoded and bit-packed in blocks ([`encode_list`]) in one contiguous array, with an
//! offset and a count per key. Enrolment appends to a small uncompressed tail, folded in once
//! it grows to a fraction of the array; a bulk load merges sorted batches directly
//! ([`Postings::merge`], which re-encodes only the last block of each list it extends). The
//! walk of stage 1 ([`Postings::walk`]) prefetches lists some keys ahead, since a probe's keys
//! are scattered over the array and each list is likely a cache miss.

use super::memory::vec_bytes;
use super::simd::prefetch;
use super::words::{KEYS, has_bit};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The posting lists of one shard's index: `(slot, word)` → the entries (ascending) whose
/// finger in that slot has the word.
///
/// Lists are delta-encoded and bit-packed in blocks (see [`encode_list`]) in one contiguous
/// array with an offset and a count per key (a compressed-sparse-row layout: no allocation,
/// header or spare capacity per list).
/// Enrolments go to a small uncompressed tail first, folded into the array once it grows to a
/// fraction of it (or by [`IndexedMatcher::compact`](super::IndexedMatcher::compact)), so
/// enrolling stays amortised O(1).
#[derive(Default)]
pub(super) struct Postings {
    /// `offsets[k]..offsets[k + 1]` are key `k`'s bytes in `bytes` (empty before the first
    /// fold).
    pub(super) offsets: Vec<u32>,
    /// `counts[k]`: how many entries key `k`'s list in `bytes` names.
    pub(super) counts: Vec<u32>,
    /// `last[k]`: the last entry key `k`'s list in `bytes` names (0 if none): a fold
    /// appends to a list from it without decoding the list.
    pub(super) last: Vec<u32>,
    pub(super) bytes: Vec<u8>,
    /// Later entries, per key, ascending.
    tail: HashMap<u32, Vec<u32>, BuildHasherDefault<KeyHasher>>,
    pub(super) tail_len: usize,
}

/// with one multiplication instead of SipHash, which was most of an enrolment's index cost.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(*b as u64);
        }
    }
    fn write_u32(&mut self, x: u32) {
        self.write_u64(x as u64);
    }
    fn write_u64(&mut self, x: u64) {
        let h = (self.0 ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }
}

/// The most postings a bulk load stages per shard before merging them into the index: 16M,
/// about 15,000 prints' worth and 60 MB staged per shard. A merge copies the index, so a
/// batch is not made smaller than a quarter of it below this (see [`Postings::batch_postings`]).
const BATCH_MAX_POSTINGS: usize = 1 << 24;

/// Sorts postings `key << 32 | entry` by key, stably: a key's entries stay in the order given
/// (ascending, as a batch appends them), so the result is the ascending order. Two counting
/// passes over 10 bits of the key each (keys are under 2^20), each a sequential read and
/// 1,024 sequential write streams: less CPU over a bulk load than the standard unstable sort.
pub(super) fn sort_by_key(v: &mut Vec<u64>) {
    const BITS: u32 = 10;
    const MASK: usize = (1 << BITS) - 1;
    const _: () = assert!(KEYS <= 1 << (2 * BITS));
    let mut out = vec![0u64; v.len()];
    for pass in 0..2 {
        let shift = 32 + pass * BITS;
        let mut starts = [0usize; 1 << BITS];
        for x in v.iter() {
            starts[(x >> shift) as usize & MASK] += 1;
        }
        let mut sum = 0;
        for c in starts.iter_mut() {
            (*c, sum) = (sum, sum + *c);
        }
        for &x in v.iter() {
            let b = (x >> shift) as usize & MASK;
            out[starts[b]] = x;
            starts[b] += 1;
        }
        std::mem::swap(v, &mut out);
    }
}

/// Gaps per block of a posting list (see [`encode_list`]).
const BLOCK: usize = 32;

/// Appends the ascending `entries` to `out` as blocks of up to [`BLOCK`] gaps (an entry's
/// distance past the one before it, less one; the first's from 0): a byte with the block's
/// bit width `w` (the widest gap's significant bits, 0..=32), then every gap in `w` bits,
/// little-endian, padded to a whole byte. Any gap is decoded from its own position, with no
/// dependence on the one before it (a varint's start depends on every earlier varint), and a
/// block of gaps all under 2^w takes `w` bits each, against a varint's 8 or 16: the walk
/// decodes faster than it did varints, and the index is smaller (BENCHMARKS.md).
fn encode_list(out: &mut Vec<u8>, entries: &[u32]) {
    encode_from(out, 0, entries)
}

/// [`encode_list`] continuing a list whose next entry is at least `next` (the last entry
/// before, plus one): what a fold appends to a list's last block.
fn encode_from(out: &mut Vec<u8>, mut next: u32, entries: &[u32]) {
    for block in entries.chunks(BLOCK) {
        let mut gaps = [0u32; BLOCK];
        for (g, &e) in gaps.iter_mut().zip(block) {
            *g = e - next;
            next = e + 1;
        }
        let w = 32 - gaps.iter().fold(0, |a, g| a | g).leading_zeros();
        out.push(w as u8);
        let (mut acc, mut bits) = (0u64, 0u32);
        for &g in &gaps[..block.len()] {
            acc |= (g as u64) << bits;
            bits += w;
            while bits >= 8 {
                out.push(acc as u8);
                acc >>= 8;
                bits -= 8;
            }
        }
        if bits > 0 {
            out.push(acc as u8);
        }
    }
}

/// Calls `f` with the `count` entries of the list at `bytes[lo..]` (see [`encode_list`];
/// `bytes` ends with [`PAD`] spare bytes), ascending.
#[inline]
fn decode(bytes: &[u8], lo: usize, count: usize, mut f: impl FnMut(usize)) {
    let (mut i, mut left, mut next) = (lo, count, 0usize);
    while left > 0 {
        let w = bytes[i] as usize;
        let n = left.min(BLOCK);
        let data = i + 1;
        let mask = (1u64 << w) - 1;
        for j in 0..n {
            let bit = j * w;
            let at = data + bit / 8;
            let word = u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
            let e = next + ((word >> (bit % 8)) & mask) as usize;
            f(e);
            next = e + 1;
        }
        i = data + (n * w).div_ceil(8);
        left -= n;
    }
}

impl Postings {
    /// An index from its folded arrays (an index snapshot's, see [`super::snapshot`]), with an
    /// empty tail.
    pub(super) fn from_parts(
        offsets: Vec<u32>,
        counts: Vec<u32>,
        last: Vec<u32>,
        bytes: Vec<u8>,
    ) -> Postings {
        Postings {
            offsets,
            counts,
            last,
            bytes,
            ..Postings::default()
        }
    }

    /// Adds `entry` to `key`'s list, unless the matcher has dropped the key (`dropped`, see
    /// [`Vocabulary`](super::words::Vocabulary)).
    pub(super) fn push(&mut self, key: u32, entry: u32, dropped: &[u64]) {
        if has_bit(dropped, key) {
            return;
        }
        self.tail.entry(key).or_default().push(entry);
        self.tail_len += 1;
    }

    /// Folds the tail into the array when it has grown to a quarter of it (at least 64k
    /// postings), so each posting is re-encoded a bounded number of times.
    pub(super) fn maybe_fold(&mut self, dropped: &[u64]) {
        if self.tail_len >= (self.bytes.len() / 4).max(1 << 16) {
            self.fold(dropped);
        }
    }

    /// How many postings a bulk load stages for this shard before merging them (see
    /// [`IndexedMatcher::enroll_many`](super::IndexedMatcher::enroll_many)): as many as the
    /// tail takes before a fold, at most [`BATCH_MAX_POSTINGS`].
    pub(super) fn batch_postings(&self) -> usize {
        (self.bytes.len() / 4).clamp(1 << 16, BATCH_MAX_POSTINGS)
    }

    /// Moves every tail posting into the array, dropping the lists of the keys in `dropped`
    /// (see [`Vocabulary`](super::words::Vocabulary)).
    pub(super) fn fold(&mut self, dropped: &[u64]) {
        if self.tail_len == 0 {
            return;
        }
        // The tail in key order, taken in one sequential pass over the table (a lookup per
        // key missed the cache).
        let mut tail: Vec<(u32, Vec<u32>)> = std::mem::take(&mut self.tail).into_iter().collect();
        tail.sort_unstable_by_key(|(k, _)| *k);
        let added = std::mem::take(&mut self.tail_len);
        self.merge(
            added,
            tail.iter().map(|(k, list)| (*k, list.as_slice())),
            dropped,
        );
    }

    /// Adds `postings`, each `key << 32 | entry`, ascending, every entry after those the index
    /// holds (the tail folded first): a bulk load's batch.
    pub(super) fn extend_sorted(&mut self, postings: &[u64], dropped: &[u64]) {
        debug_assert!(self.tail_len == 0 && postings.is_sorted());
        if postings.is_empty() {
            return;
        }
        let flat: Vec<u32> = postings.iter().map(|p| *p as u32).collect();
        let mut at = 0;
        let runs = postings.chunk_by(|a, b| a >> 32 == b >> 32).map(|run| {
            let list = &flat[at..at + run.len()];
            at += run.len();
            ((run[0] >> 32) as u32, list)
        });
        self.merge(postings.len(), runs, dropped);
    }

    /// Appends to each key's list the entries `runs` gives it (keys ascending, each key once,
    /// entries ascending and after any the list has), and drops the lists of the keys in
    /// `dropped` (see [`Vocabulary`](super::words::Vocabulary)).
    ///
    /// Only lists that grow are re-encoded, and of those only the last block: every block
    /// before it is full and stays as it is (see [`encode_list`]), and the last block's
    /// entries are recovered from its gaps and the list's last entry. The bytes of every other
    /// list are copied as they are, in runs. So a merge costs a copy of the array plus work in
    /// proportion to what is added, where decoding and re-encoding every list had made folds
    /// a third of a bulk load's time. The bytes are exactly a fresh encoding of every list (a
    /// test checks it).
    fn merge<'a>(
        &mut self,
        added: usize,
        runs: impl Iterator<Item = (u32, &'a [u32])>,
        dropped: &[u64],
    ) {
        if self.offsets.is_empty() {
            self.offsets = vec![0; KEYS + 1];
            self.counts = vec![0; KEYS];
            self.last = vec![0; KEYS];
            self.bytes = vec![0; PAD];
        }
        if self.last.is_empty() {
            // Given back by `release_spare` after a bulk load: read off the lists once.
            self.last = (0..KEYS)
                .map(|k| {
                    let mut last = 0;
                    let (lo, n) = (self.offsets[k] as usize, self.counts[k] as usize);
                    decode(&self.bytes, lo, n, |e| last = e as u32);
                    last
                })
                .collect();
        }
        let mut runs = runs.peekable();
        let old = std::mem::take(&mut self.bytes);
        let old_end = self.offsets[KEYS] as usize;
        let mut bytes = Vec::with_capacity(old.len() + added * 2);
        // `old[run..]` is not copied yet; it goes across as it is up to the next list that
        // changes.
        let mut run = 0usize;
        let mut list: Vec<u32> = Vec::new();
        for k in 0..KEYS {
            // `offsets[k]` is rewritten here; `offsets[k + 1]` is still the old one.
            let (lo, hi) = (self.offsets[k] as usize, self.offsets[k + 1] as usize);
            let tail = runs
                .next_if(|(key, _)| *key == k as u32)
                .map(|(_, list)| list)
                .filter(|_| !has_bit(dropped, k as u32));
            let n = self.counts[k] as usize;
            let total = n + tail.map_or(0, <[u32]>::len);
            // A dropped key's list goes at the first merge that has it; it stays empty.
            let drop = has_bit(dropped, k as u32) && n > 0;
            if tail.is_none() && !drop {
                self.offsets[k] =
                    u32::try_from(bytes.len() + (lo - run)).expect("a shard's index under 4 GiB");
                continue;
            }
            bytes.extend_from_slice(&old[run..lo]);
            run = hi;
            self.offsets[k] = u32::try_from(bytes.len()).expect("a shard's index under 4 GiB");
            if drop {
                (self.counts[k], self.last[k]) = (0, 0);
                continue;
            }
            let tail = tail.expect("a changed list that is not dropped has a tail");
            let last_before = self.last[k];
            (self.counts[k], self.last[k]) = (
                u32::try_from(total).expect("a list under 4G entries"),
                *tail.last().expect("a run is not empty"),
            );
            if n == 0 {
                encode_list(&mut bytes, tail);
                continue;
            }
            // The last block: `rem` gaps at `at`, after full blocks kept as they are.
            let (mut at, mut rem) = (lo, n);
            while rem > BLOCK {
                at += 1 + (BLOCK * old[at] as usize).div_ceil(8);
                rem -= BLOCK;
            }
            bytes.extend_from_slice(&old[lo..at]);
            list.clear();
            decode(&old, at, rem, |e| list.push(e as u32));
            // Decoded from 0; the block starts where its last entry says.
            let next = list.last().map_or(0, |&e| last_before - e);
            for e in &mut list {
                *e += next;
            }
            list.extend_from_slice(tail);
            encode_from(&mut bytes, next, &list);
        }
        bytes.extend_from_slice(&old[run..old_end]);
        self.offsets[KEYS] = u32::try_from(bytes.len()).expect("a shard's index under 4 GiB");
        bytes.extend_from_slice(&[0; PAD]);
        bytes.shrink_to_fit();
        self.bytes = bytes;
    }

    /// Rewrites every list with entry `e` as `renumber[e]`, leaving out those mapped to
    /// `u32::MAX` (the map keeps the order of those it keeps). The tail must be empty.
    pub(super) fn renumber(&mut self, renumber: &[u32]) {
        if self.offsets.is_empty() {
            return;
        }
        let mut bytes = Vec::with_capacity(self.bytes.len());
        let mut list = Vec::new();
        for k in 0..KEYS {
            let (lo, n) = (self.offsets[k] as usize, self.counts[k] as usize);
            list.clear();
            decode(&self.bytes, lo, n, |e| {
                if renumber[e] != u32::MAX {
                    list.push(renumber[e]);
                }
            });
            self.offsets[k] = u32::try_from(bytes.len()).expect("a shard's index under 4 GiB");
            encode_list(&mut bytes, &list);
            self.counts[k] = list.len() as u32;
            if !self.last.is_empty() {
                self.last[k] = list.last().copied().unwrap_or(0);
            }
        }
        self.offsets[KEYS] = u32::try_from(bytes.len()).expect("a shard's index under 4 GiB");
        bytes.extend_from_slice(&[0; PAD]);
        bytes.shrink_to_fit();
        self.bytes = bytes;
    }

    /// Gives back what only enrolment uses: each list's last entry (4 bytes per key,
    /// 2.3 MB a shard), read off the lists again at the next fold.
    pub(super) fn release_spare(&mut self) {
        self.last = Vec::new();
    }

    /// How many entries `key` lists, folded and in the tail.
    #[cfg(test)]
    pub(super) fn len_hint(&self, key: u32) -> usize {
        let k = key as usize;
        let folded = self.counts.get(k).map_or(0, |c| *c as usize);
        let tail = if self.tail_len == 0 {
            0
        } else {
            self.tail.get(&key).map_or(0, Vec::len)
        };
        folded + tail
    }

    /// Asks the cache for `key`'s offset (`list == false`) or for the start of its list: the
    /// walk calls this some keys ahead, so that the lists of a probe's scattered keys, each
    /// likely a cache miss, load while the walk decodes earlier ones. Does nothing where there
    /// is no prefetch instruction.
    #[inline]
    fn prefetch(&self, key: u32, list: bool) {
        let k = key as usize;
        if k + 1 < self.offsets.len() {
            if list {
                prefetch(&self.bytes, self.offsets[k] as usize);
            } else {
                prefetch(&self.offsets, k);
            }
        }
    }

    /// Heap bytes the lists hold: the array, its offsets, counts and last entries, and the
    /// uncompressed tail (see [`super::GalleryBytes`]).
    pub(super) fn heap_bytes(&self) -> usize {
        vec_bytes(&self.offsets)
            + vec_bytes(&self.counts)
            + vec_bytes(&self.last)
            + vec_bytes(&self.bytes)
            + self.tail.capacity() * (std::mem::size_of::<(u32, Vec<u32>)>() + 1)
            + self.tail.values().map(vec_bytes).sum::<usize>()
    }

    /// Adds each key's weight to `row[e]` (saturating) for every entry `e` it lists: the walk
    /// of stage 1. Lists further ahead are prefetched (see [`Postings::prefetch`]).
    pub(super) fn walk(&self, keys: &[(u32, u16)], row: &mut [u16]) {
        for (i, &(k, w)) in keys.iter().enumerate() {
            if let Some(&(ahead, _)) = keys.get(i + PREFETCH_AHEAD) {
                self.prefetch(ahead, true);
            }
            if let Some(&(ahead, _)) = keys.get(i + 2 * PREFETCH_AHEAD) {
                self.prefetch(ahead, false);
            }
            self.for_each(k, |e| row[e] = row[e].saturating_add(w));
        }
    }

    /// Calls `f` with every entry listed under `key`, ascending.
    #[inline]
    pub(super) fn for_each(&self, key: u32, mut f: impl FnMut(usize)) {
        let k = key as usize;
        if k + 1 < self.offsets.len() {
            decode(
                &self.bytes,
                self.offsets[k] as usize,
                self.counts[k] as usize,
                &mut f,
            );
        }
        if self.tail_len == 0 {
            return;
        }
        if let Some(list) = self.tail.get(&key) {
            for &e in list {
                f(e as usize);
            }
        }
    }
}

/// How many keys ahead of the walk a list's start is prefetched (its offset twice as far).
pub(super) const PREFETCH_AHEAD: usize = 8;

/// Zero bytes after the last list: the decoder always reads eight bytes at once.
const PAD: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A merge drops the lists of the keys it is given as dropped, for good (later postings
    /// under them are not kept either), and keeps the rest whole.
    #[test]
    fn merges_drop_the_lists_of_dropped_keys_for_good() {
        let fill = |postings: &mut Postings, entries: std::ops::Range<u32>, dropped: &[u64]| {
            for e in entries {
                if e % 5 == 0 {
                    postings.push(7, e, dropped);
                }
                if e % 50 == 0 {
                    postings.push(8, e, dropped);
                }
            }
        };
        let listed = |postings: &Postings, k: u32| {
            let mut v = vec![];
            postings.for_each(k, |e| v.push(e as u32));
            v
        };
        let mut dropped = vec![0u64; KEYS.div_ceil(64)];
        let mut p = Postings::default();
        fill(&mut p, 0..1000, &dropped);
        p.fold(&dropped);
        assert_eq!(listed(&p, 7).len(), 200);
        dropped[0] |= 1 << 7;
        fill(&mut p, 1000..1100, &dropped);
        // Postings under a dropped key are not kept; the others are.
        assert_eq!((p.len_hint(7), p.len_hint(8)), (200, 22));
        p.fold(&dropped);
        assert_eq!(listed(&p, 7), Vec::<u32>::new());
        assert_eq!(p.len_hint(7), 0);
        assert_eq!(
            listed(&p, 8),
            (0..1100).filter(|e| e % 50 == 0).collect::<Vec<u32>>()
        );
        fill(&mut p, 1100..1300, &dropped);
        p.fold(&dropped);
        assert_eq!(listed(&p, 7), Vec::<u32>::new());
        assert_eq!(
            listed(&p, 8),
            (0..1300).filter(|e| e % 50 == 0).collect::<Vec<u32>>()
        );
    }

    proptest! {
        /// A posting list decodes to the entries encoded, whatever its gaps (0 to 31 bits:
        /// blocks of every width) and length (whole and partial blocks), between other lists
        /// in one array with the padding after it.
        #[test]
        fn posting_lists_decode_as_encoded(gaps in proptest::collection::vec(prop_oneof![0u32..2, 0u32..300, 0u32..70_000, 0u32..u32::MAX / 256], 0..150)) {
            let mut entries = vec![];
            let mut next = 0u32;
            for g in &gaps {
                let e = next.saturating_add(*g).min(u32::MAX - 1);
                entries.push(e);
                next = e + 1;
                if next == u32::MAX {
                    break;
                }
            }
            let mut bytes = vec![];
            encode_list(&mut bytes, &[3, 9, 4_000_000]); // a list before
            let lo = bytes.len();
            encode_list(&mut bytes, &entries);
            encode_list(&mut bytes, &[0]); // and after
            bytes.extend_from_slice(&[0; PAD]);
            let mut got = vec![];
            decode(&bytes, lo, entries.len(), |e| got.push(e as u32));
            prop_assert_eq!(got, entries);
        }

        /// Folding the tail in as it grows (each fold re-encoding only the last block of the
        /// lists it extends, some after the last entries were given back and read off the
        /// lists again), or merging sorted batches as a bulk load does, gives the same
        /// index, byte for byte, as one fold at the end: every list encoded afresh. Lists run
        /// to hundreds of entries, so most folds append to a partial block, some to a full one.
        #[test]
        fn folds_extend_lists_as_a_fresh_encoding_would(
            postings in proptest::collection::vec(proptest::collection::vec(0u32..40, 0..12), 1..400),
            folds in proptest::collection::vec(0usize..400, 0..12),
        ) {
            let (mut stepwise, mut batched, mut once) =
                (Postings::default(), Postings::default(), Postings::default());
            let mut batch = vec![];
            for (entry, keys) in postings.iter().enumerate() {
                let mut keys = keys.clone();
                keys.sort_unstable();
                keys.dedup();
                let e = entry as u32 * 7;
                for k in keys {
                    // Keys spread over the key space, some in the last slot.
                    let key = k * (KEYS as u32 / 40) + k % 3;
                    stepwise.push(key, e, &[]);
                    once.push(key, e, &[]);
                    batch.push((key as u64) << 32 | e as u64);
                }
                if folds.contains(&entry) {
                    stepwise.fold(&[]);
                    if entry % 2 == 0 {
                        // As `compact` does: the next fold reads the last entries off the lists.
                        stepwise.release_spare();
                    }
                    batch.sort_unstable();
                    batched.extend_sorted(&batch, &[]);
                    batch.clear();
                }
            }
            stepwise.fold(&[]);
            batch.sort_unstable();
            batched.extend_sorted(&batch, &[]);
            once.fold(&[]);
            for p in [&stepwise, &batched] {
                prop_assert!(p.offsets == once.offsets);
                prop_assert!(p.counts == once.counts);
                prop_assert!(p.last.is_empty() || p.last == once.last);
                prop_assert!(p.bytes == once.bytes);
            }
        }

        /// The radix sort of a batch's postings is the ascending order when each key's entries
        /// come in ascending (as a batch appends them).
        #[test]
        fn batch_sort_is_the_ascending_order(keys in proptest::collection::vec(0u32..KEYS as u32, 0..3000)) {
            let mut v: Vec<u64> = keys
                .iter()
                .enumerate()
                .map(|(e, k)| (*k as u64) << 32 | e as u64)
                .collect();
            let mut want = v.clone();
            want.sort_unstable();
            sort_by_key(&mut v);
            prop_assert_eq!(v, want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(8))]
        /// Delta-encoded posting lists give back exactly the entries pushed, in order.
        #[test]
        fn posting_lists_round_trip(gaps in proptest::collection::vec(0u32..100_000, 0..200), fold_after in 0usize..200) {
            let mut postings = Postings::default();
            let mut e = 0u32;
            let mut want = vec![];
            for (i, g) in gaps.iter().enumerate() {
                e += g;
                postings.push(7, e, &[]);
                want.push(e as usize);
                e += 1;
                if i == fold_after {
                    postings.fold(&[]);
                }
            }
            let mut got = vec![];
            postings.for_each(7, |x| got.push(x));
            prop_assert_eq!(&got, &want);
            postings.fold(&[]);
            got.clear();
            postings.for_each(7, |x| got.push(x));
            prop_assert_eq!(got, want);
        }
    }
}
