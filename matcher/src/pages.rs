//! Memory-page advice for the gallery's large arrays, and giving back what a bulk load freed.
//!
//! Stage 1 reads the histogram codes of ~4,096 subjects a search at random over the whole
//! gallery (320 MB at 1,000,000 identities): with 4 KiB pages nearly every one of those reads
//! misses the TLB, and under a hypervisor each miss is a two-level page walk. With 2 MiB pages
//! the whole array's translations fit the TLB. Linux backs anonymous memory with huge pages
//! where asked (`MADV_HUGEPAGE`; this kernel's default may not do so unasked) as it is first
//! written; memory already written can be turned into them too (`MADV_COLLAPSE`), but that took
//! 0.75 s for 320 MB, where a copy into fresh, advised memory takes 0.06–0.44 s (the kernel may
//! first have to gather free huge pages).
//!
//! A bulk load frees each print's staging buffers once its shard has copied them; glibc keeps
//! that memory, scattered between live allocations, resident (~620 bytes an identity at
//! 300,000) until asked to give it back (`malloc_trim`).

/// The huge page size on x86-64 and on 4 KiB-page AArch64 (the range advised is whole
/// multiples of it; a kernel with another size uses what lies within it).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const HUGE_PAGE: usize = 2 << 20;

/// Moves `v` into a fresh allocation of exactly its length, asking the kernel to back it with
/// huge pages as it is written (where the kernel has none, or is not Linux, it is a plain
/// `shrink_to_fit`). The contents are the same; only random reads of them take fewer page
/// walks. Returns how many bytes were advised.
pub(crate) fn onto_huge_pages<T: Copy>(v: &mut Vec<T>) -> usize {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::mem::size_of_val(&v[..]) >= 2 * HUGE_PAGE {
        let mut fresh: Vec<T> = Vec::with_capacity(v.len());
        let room = fresh.spare_capacity_mut();
        let start = room.as_ptr() as usize;
        let end = start + std::mem::size_of_val(room);
        let (lo, hi) = (
            start.next_multiple_of(HUGE_PAGE),
            end / HUGE_PAGE * HUGE_PAGE,
        );
        if lo < hi {
            // SAFETY: the range lies inside `fresh`'s allocation, which is alive and not yet
            // written; the advice changes how pages are supplied, never their contents (a
            // kernel without huge pages, or with none free, supplies small ones).
            unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE) };
        }
        fresh.extend_from_slice(v);
        *v = fresh;
        return hi.saturating_sub(lo);
    }
    v.shrink_to_fit();
    0
}

/// Gives the memory the allocator holds free back to the kernel (glibc keeps what a bulk
/// load's short-lived buffers freed, and it stays resident). Returns whether any was given
/// back; elsewhere than glibc, nothing is done. (A program whose global allocator is another,
/// as `state-bureau-sim`'s is mimalloc, which returns freed memory on its own, trims only
/// what glibc still holds: harmless.)
pub(crate) fn give_back_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` only releases memory the allocator holds free; no live
        // allocation moves or changes.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_onto_huge_pages_keeps_the_contents_and_gives_back_spare_room() {
        let mut v: Vec<u64> = Vec::with_capacity(3_500_000);
        v.extend((0..3_000_000u64).map(|i| i.wrapping_mul(0x9E37_79B9)));
        let before = v.clone();
        let advised = onto_huge_pages(&mut v);
        assert_eq!(v, before);
        assert_eq!(v.capacity(), v.len());
        assert!(advised <= std::mem::size_of_val(&v[..]));
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        assert!(
            advised >= 2 * HUGE_PAGE,
            "24 MB holds at least two whole huge pages"
        );
        let mut small: Vec<u32> = Vec::with_capacity(100);
        small.extend([1, 2, 3]);
        assert_eq!(onto_huge_pages(&mut small), 0);
        assert_eq!((small.as_slice(), small.capacity()), (&[1, 2, 3][..], 3));
    }

    /// Resident bytes of this process (Linux).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn resident() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * 4096
    }

    /// Freed memory between live allocations (what a bulk load's buffers leave: the
    /// allocator cannot shrink its heap past the live ones) stays resident until given back.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn freed_memory_between_live_allocations_is_given_back() {
        // 4,096 pairs of 32 KiB buffers (below glibc's mmap threshold, so on its heap),
        // every other one freed: 128 MiB of holes between live buffers.
        let mut bufs: Vec<Option<Vec<u8>>> = (0..8192).map(|_| Some(vec![1u8; 32 << 10])).collect();
        for b in bufs.iter_mut().step_by(2) {
            *b = None;
        }
        let before = resident();
        assert!(give_back_free_memory());
        let after = resident();
        assert!(
            before.saturating_sub(after) >= 32 << 20,
            "resident {before} -> {after} bytes: the holes were not given back"
        );
        assert!(bufs.iter().flatten().all(|b| b.iter().all(|&x| x == 1)));
    }
}
