//! Weight buffers backed by transparent huge pages where the kernel allows it.
//!
//! Decode streams every weight once per token. On 4 KiB pages that is ~50k page walks per token
//! for a 700M model, and hardware prefetchers stop at every page boundary; on 2 MiB pages both
//! mostly disappear. Linux set to `transparent_hugepage=madvise` (a common default) only gives
//! huge pages to ranges marked with `madvise(MADV_HUGEPAGE)` before they are first touched, so
//! large buffers are reserved, marked, then filled. Elsewhere this is a plain `Vec`.
#![allow(unsafe_code)]

use std::ops::{Deref, Range};
use std::sync::Arc;

/// Byte storage of a weight matrix: its own vector while it is being built, then (for models
/// that are loaded) a range of one shared arena on huge pages ([`into_arena`]).
#[derive(Clone, Debug)]
pub enum Bytes {
    /// Owned bytes.
    Own(Vec<u8>),
    /// A range of a shared arena.
    Arena(Arc<Vec<u8>>, Range<usize>),
}

impl Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Own(v) => v,
            Bytes::Arena(a, r) => &a[r.clone()],
        }
    }
}

impl Bytes {
    /// Mutable bytes (an arena range is copied out first).
    pub fn to_mut(&mut self) -> &mut Vec<u8> {
        if let Bytes::Arena(a, r) = self {
            *self = Bytes::Own(a[r.clone()].to_vec());
        }
        match self {
            Bytes::Own(v) => v,
            Bytes::Arena(..) => unreachable!("converted to owned just above"),
        }
    }
}

/// Huge page size the arena is aligned to.
const HUGE_PAGE: usize = 2 << 20;

/// Moves every buffer of `parts` into one arena on huge pages, in order, each at a 64-byte
/// boundary and the first at a 2 MiB boundary. Weights of a decoder are many 1–20 MiB
/// matrices; as separate allocations most of each would sit on 4 KiB pages.
pub fn into_arena<'a>(parts: impl IntoIterator<Item = &'a mut Bytes>) {
    let parts: Vec<&mut Bytes> = parts.into_iter().collect();
    let total: usize = parts.iter().map(|p| p.len().next_multiple_of(64)).sum();
    if total < MIN_BYTES {
        return;
    }
    let mut arena = huge_vec(total + HUGE_PAGE, 0u8);
    let mut off = (arena.as_ptr() as usize).next_multiple_of(HUGE_PAGE) - arena.as_ptr() as usize;
    let mut ranges = Vec::with_capacity(parts.len());
    for p in &parts {
        arena[off..off + p.len()].copy_from_slice(p);
        ranges.push(off..off + p.len());
        off += p.len().next_multiple_of(64);
    }
    let arena = Arc::new(arena);
    for (p, r) in parts.into_iter().zip(ranges) {
        *p = Bytes::Arena(Arc::clone(&arena), r);
    }
}

/// Below this size a buffer is left on normal pages.
const MIN_BYTES: usize = 4 << 20;

/// `n` copies of `v` in a vector whose pages are marked for huge pages (if large).
pub fn huge_vec<T: Copy>(n: usize, v: T) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(n);
    advise_huge(
        out.as_mut_ptr().cast(),
        n.saturating_mul(std::mem::size_of::<T>()),
    );
    out.resize(n, v);
    out
}

/// A copy of `src` on huge pages (if large).
pub fn huge_copy<T: Copy>(src: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(src.len());
    advise_huge(out.as_mut_ptr().cast(), std::mem::size_of_val(src));
    out.extend_from_slice(src);
    out
}

#[cfg(target_os = "linux")]
fn advise_huge(ptr: *mut u8, len: usize) {
    const PAGE: usize = 4096;
    if len < MIN_BYTES {
        return;
    }
    let start = (ptr as usize).next_multiple_of(PAGE);
    let end = (ptr as usize + len) / PAGE * PAGE;
    if end > start {
        // SAFETY: [start, end) lies inside the allocation just reserved by `Vec::with_capacity`
        // and is page-aligned; MADV_HUGEPAGE only changes how the kernel backs those pages
        // (never their contents), and a failure (e.g. THP disabled) is harmless and ignored.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_ptr: *mut u8, _len: usize) {}

#[cfg(test)]
mod tests {
    #[test]
    fn huge_buffers_hold_what_was_asked() {
        let v = super::huge_vec(5 << 20, 7u8);
        assert_eq!(v.len(), 5 << 20);
        assert!(v.iter().all(|&b| b == 7));
        let w = super::huge_copy(&v[..4097]);
        assert_eq!(w, v[..4097]);
        assert!(super::huge_vec::<u32>(0, 1).is_empty());
    }

    #[test]
    fn arena_keeps_every_buffer_and_copies_on_write() {
        use super::Bytes;
        let mut a = Bytes::Own((0..3_000_000u32).map(|i| (i % 251) as u8).collect());
        let mut b = Bytes::Own(vec![9u8; 2_000_001]);
        let (wa, wb) = (a.to_vec(), b.to_vec());
        super::into_arena([&mut a, &mut b]);
        assert!(matches!(a, Bytes::Arena(..)) && matches!(b, Bytes::Arena(..)));
        assert_eq!(&a[..], &wa[..]);
        assert_eq!(&b[..], &wb[..]);
        assert_eq!(
            a.as_ptr() as usize % (2 << 20),
            0,
            "first buffer on a 2 MiB boundary"
        );
        b.to_mut()[0] = 1;
        assert_eq!(b[0], 1);
        assert_eq!(&a[..], &wa[..], "writing one buffer leaves the others");
    }
}
