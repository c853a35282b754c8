//! Weight buffers backed by transparent huge pages where the kernel allows it.
//!
//! Decode streams every weight once per token. On 4 KiB pages that is ~50k page walks per token
//! for a 700M model, and hardware prefetchers stop at every page boundary; on 2 MiB pages both
//! mostly disappear. Linux set to `transparent_hugepage=madvise` (a common default) only gives
//! huge pages to ranges marked with `madvise(MADV_HUGEPAGE)` before they are first touched, so
//! large buffers are reserved, marked, then filled. Elsewhere this is a plain `Vec`.
#![allow(unsafe_code)]

/// Below this size a buffer is left on normal pages.
const MIN_BYTES: usize = 4 << 20;

/// `n` copies of `v` in a vector whose pages are marked for huge pages (if large).
pub fn huge_vec<T: Copy>(n: usize, v: T) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(n);
    advise_huge(out.as_mut_ptr().cast(), n.saturating_mul(std::mem::size_of::<T>()));
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
}
