//! The global allocator: mimalloc, called the way its fast path expects.
//!
//! The `mimalloc` crate's `GlobalAlloc` passes every request to `mi_malloc_aligned`,
//! even when the alignment asked for is one that every mimalloc block has anyway. In
//! mimalloc 3 that call only takes the fast path for blocks up to 1 kB whose next free
//! block happens to be aligned; anything larger whose size class is not a power of two
//! goes to the generic path, which over-allocates by the alignment and marks the page as
//! holding interior pointers. A pooled transaction makes two such allocations (futures
//! of over 1 kB), and callgrind counted about 150 instructions for each.
//!
//! mimalloc guarantees what glibc's `malloc` does on x86-64 and aarch64: every block of
//! 16 bytes or more is 16-byte aligned and smaller ones are 8-byte aligned (its size
//! classes are multiples of two machine words). So, as Rust's own `System` allocator does
//! with glibc, a layout whose alignment is at most 16 and at most its size is served by
//! plain `mi_malloc` / `mi_zalloc` / `mi_realloc`; only larger alignments use the
//! aligned entry points.
//!
//! mimalloc also asks the kernel for transparent huge pages on its arenas
//! (`madvise(MADV_HUGEPAGE)`), so with THP available every shard's heap grows in 2 MiB
//! pages whether or not it fills them. [`avoid_transparent_huge_pages`] turns THP off for
//! the process at startup: with 10,000 idle plaintext clients on 2 shards, RSS per client
//! fell from 1.9 to 1.2 kB and the idle baseline from 43 to 33 MB, with no change in CPU
//! per transaction that this machine could tell from its noise.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;
use std::io;

use libmimalloc_sys as mi;

/// The alignment every mimalloc block of at least this many bytes has.
const MIN_ALIGN: usize = 16;

/// mimalloc as the process's allocator (install with `#[global_allocator]`).
pub struct Allocator;

/// Whether plain `mi_malloc` of `size` bytes already satisfies `align`.
#[inline]
fn plain_fits(size: usize, align: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

// SAFETY: every method hands the request to mimalloc, which returns memory of at least
// `layout.size()` bytes aligned as asked (see the module doc for the plain calls), or
// null; `dealloc` and `realloc` receive only pointers that these methods returned.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain_fits(layout.size(), layout.align()) {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain_fits(layout.size(), layout.align()) {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain_fits(new_size, layout.align()) {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

/// What [`avoid_transparent_huge_pages`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HugePages {
    /// Transparent huge pages are off for this process.
    Off,
    /// `MIMALLOC_ALLOW_THP` is set to something other than `0`: left as the operator
    /// asked (mimalloc reads the variable itself).
    LeftToMimalloc,
}

/// Turns transparent huge pages off for the whole process (`PR_SET_THP_DISABLE`, which
/// outranks mimalloc's `madvise`), unless `MIMALLOC_ALLOW_THP` asks for them. Call it
/// before the shards allocate.
pub fn avoid_transparent_huge_pages() -> io::Result<HugePages> {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some_and(|v| v != "0") {
        return Ok(HugePages::LeftToMimalloc);
    }
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(HugePages::Off)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transparent_huge_pages_end_up_off_for_the_process() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some_and(|v| v != "0") {
            assert_eq!(
                avoid_transparent_huge_pages().unwrap(),
                HugePages::LeftToMimalloc
            );
            return;
        }
        assert_eq!(avoid_transparent_huge_pages().unwrap(), HugePages::Off);
        // SAFETY: prctl(PR_GET_THP_DISABLE) takes integer arguments only.
        assert_eq!(
            unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) },
            1
        );
    }

    /// Allocates `size` bytes at `align` through every entry point and checks the
    /// alignment, that every byte can be written and that the bytes survive a reallocation.
    fn exercise(size: usize, align: usize) {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: `layout` has a non-zero size; every pointer is checked for null and
        // freed once, with the layout it was allocated with.
        unsafe {
            let p = Allocator.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "alloc({size}, {align})");
            for i in 0..size {
                *p.add(i) = i as u8;
            }
            let grown = size * 3 + 1;
            let q = Allocator.realloc(p, layout, grown);
            assert!(!q.is_null());
            assert_eq!(q as usize % align, 0, "realloc({size} -> {grown}, {align})");
            for i in 0..size {
                assert_eq!(*q.add(i), i as u8);
            }
            Allocator.dealloc(q, Layout::from_size_align(grown, align).unwrap());

            let z = Allocator.alloc_zeroed(layout);
            assert!(!z.is_null());
            assert_eq!(z as usize % align, 0, "alloc_zeroed({size}, {align})");
            assert!((0..size).all(|i| *z.add(i) == 0));
            Allocator.dealloc(z, layout);
        }
    }

    #[test]
    fn every_alignment_is_honoured_for_small_and_large_blocks() {
        let sizes = [
            1, 7, 8, 15, 16, 24, 40, 100, 1000, 1100, 1500, 4096, 8200, 70_000,
        ];
        for align in [1, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for &size in &sizes {
                exercise(size, align);
                // Several blocks live at once, so that not only a page's first is seen.
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; each block is freed once with its layout.
                unsafe {
                    let held: Vec<*mut u8> = (0..8).map(|_| Allocator.alloc(layout)).collect();
                    for &p in &held {
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "alloc({size}, {align}) held");
                    }
                    for p in held {
                        Allocator.dealloc(p, layout);
                    }
                }
            }
        }
    }

    #[test]
    fn plain_calls_are_used_only_where_mimalloc_aligns_by_itself() {
        assert!(plain_fits(1, 1));
        assert!(plain_fits(8, 8));
        assert!(plain_fits(1100, 8));
        assert!(plain_fits(16, 16));
        assert!(!plain_fits(8, 16));
        assert!(!plain_fits(1100, 32));
        assert!(!plain_fits(64, 64));
    }
}
