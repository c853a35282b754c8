//! A fork-join team for one forward pass: `n` threads run the same code (SPMD), split each step's
//! work by thread or by dynamically claimed chunks, and meet at spin barriers between steps.
//!
//! Why not rayon: a decode step of a 24-layer model is ~120 small parallel steps of 5–100 µs each.
//! rayon's fork-join puts idle workers to sleep between them and the wake-ups cost a measurable
//! share of the step; a team whose threads spin at a barrier for the few microseconds between
//! steps does not. The team lives for one forward pass (threads from `std::thread::scope`), so
//! nothing spins while the engine is idle.
//!
//! [`Shared`] is a slice that several team threads write in disjoint parts between barriers; its
//! accessors are `unsafe` and every caller states which part is whose.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::marker::PhantomData;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Spins before a waiting thread starts yielding its core (for oversubscribed machines).
const SPINS_BEFORE_YIELD: u32 = 1 << 12;

struct TeamState {
    n: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    /// One work counter per dynamic step, in program order (all threads take the same steps).
    counters: Vec<AtomicUsize>,
    /// Set when a team thread panicked: the others leave their barriers (by panicking too)
    /// instead of waiting for ever.
    poisoned: AtomicBool,
}

/// One thread's handle on the team.
pub struct Team<'a> {
    state: &'a TeamState,
    tid: usize,
    step: Cell<usize>,
}

impl Team<'_> {
    /// This thread's index (0 is the calling thread).
    pub fn tid(&self) -> usize {
        self.tid
    }

    /// Threads in the team.
    pub fn n(&self) -> usize {
        self.state.n
    }

    /// Waits until every thread of the team has arrived. Writes made before the barrier are
    /// visible to every thread after it (acquire/release on the generation counter).
    pub fn barrier(&self) {
        self.barrier_while(|| false);
    }

    /// [`Team::barrier`], calling `idle` while waiting for as long as it returns `true` (a
    /// thread that arrives early can prefetch what it will read next).
    pub fn barrier_while(&self, mut idle: impl FnMut() -> bool) {
        let s = self.state;
        if s.n == 1 {
            return;
        }
        let gen = s.generation.load(Ordering::Acquire);
        if s.arrived.fetch_add(1, Ordering::AcqRel) + 1 == s.n {
            s.arrived.store(0, Ordering::Relaxed);
            s.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        let mut busy = true;
        while s.generation.load(Ordering::Acquire) == gen {
            if s.poisoned.load(Ordering::Relaxed) {
                panic!("another inference thread panicked");
            }
            if busy {
                busy = idle();
            } else if spins < SPINS_BEFORE_YIELD {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// This thread's static share of `0..total` (contiguous; boundaries multiples of `align`).
    pub fn share(&self, total: usize, align: usize) -> Range<usize> {
        self.share_of(self.tid, total, align)
    }

    /// Static share of `0..total` of thread `tid`.
    fn share_of(&self, tid: usize, total: usize, align: usize) -> Range<usize> {
        let align = align.max(1);
        let per = total.div_ceil(align).div_ceil(self.state.n);
        ((tid * per * align).min(total))..(((tid + 1) * per * align).min(total))
    }

    /// Counters of the next dynamic step (one per thread), if any are left.
    fn next_counters(&self) -> Option<&[AtomicUsize]> {
        let step = self.step.get();
        self.step.set(step + 1);
        let n = self.state.n;
        self.state.counters.get(step * n..(step + 1) * n)
    }

    /// Calls `f` on `0..total` split into `per_thread` chunks per thread's static share
    /// (boundaries multiples of `align`): each thread first works through its own share in
    /// order (so it knows what it will read first and can prefetch it), then takes chunks left
    /// in the other threads' shares, so a thread that is descheduled or slow is helped. Every
    /// thread must call this at the same point of the program.
    pub fn owned_chunks(
        &self,
        total: usize,
        align: usize,
        per_thread: usize,
        mut f: impl FnMut(Range<usize>),
    ) {
        let n = self.state.n;
        let align = align.max(1);
        let Some(counters) = self.next_counters().filter(|_| n > 1) else {
            f(self.share(total, align));
            return;
        };
        for k in 0..n {
            let u = (self.tid + k) % n;
            let r = self.share_of(u, total, align);
            let size = r
                .len()
                .div_ceil(per_thread.max(1))
                .next_multiple_of(align)
                .max(align);
            loop {
                let i = counters[u].fetch_add(1, Ordering::Relaxed);
                let lo = i.saturating_mul(size).saturating_add(r.start);
                if lo >= r.end {
                    break;
                }
                f(lo..(lo + size).min(r.end));
            }
        }
    }

    /// Calls `f` on chunks of `0..total` of `chunk` items (the last may be shorter), claimed
    /// dynamically so a thread that runs ahead takes more. Every thread must call this at the
    /// same point of the program (the chunk counter is per call site in program order).
    pub fn chunks(&self, total: usize, chunk: usize, mut f: impl FnMut(Range<usize>)) {
        let chunk = chunk.max(1);
        match self.next_counters().and_then(<[AtomicUsize]>::first) {
            Some(counter) if self.state.n > 1 => loop {
                let i = counter.fetch_add(1, Ordering::Relaxed);
                let lo = i.saturating_mul(chunk);
                if lo >= total {
                    break;
                }
                f(lo..(lo + chunk).min(total));
            },
            // One thread, or more steps than counters: a static split (same results).
            _ => {
                let r = self.share(total.div_ceil(chunk), 1);
                for i in r {
                    f(i * chunk..((i + 1) * chunk).min(total));
                }
            }
        }
    }
}

/// Runs `f` on `n` threads (the caller is thread 0) and returns thread 0's result. `steps` is
/// the number of [`Team::chunks`] / [`Team::owned_chunks`] calls each thread makes (more fall
/// back to static splits). If the OS refuses a thread, nothing runs and the error is returned
/// (the threads already started leave without entering `f`, so no barrier waits forever).
pub fn run<R: Send>(n: usize, steps: usize, f: impl Fn(&Team) -> R + Sync) -> std::io::Result<R> {
    const WAIT: usize = 0;
    const GO: usize = 1;
    const ABORT: usize = 2;
    let n = n.max(1);
    let state = TeamState {
        n,
        arrived: AtomicUsize::new(0),
        generation: AtomicUsize::new(0),
        counters: (0..steps * n).map(|_| AtomicUsize::new(0)).collect(),
        poisoned: AtomicBool::new(false),
    };
    let team = |tid| Team {
        state: &state,
        tid,
        step: Cell::new(0),
    };
    if n == 1 {
        return Ok(f(&team(0)));
    }
    let start = AtomicUsize::new(WAIT);
    std::thread::scope(|scope| {
        for tid in 1..n {
            let (f, team, start, state) = (&f, &team, &start, &state);
            let spawned = std::thread::Builder::new()
                .name(format!("infer-{tid}"))
                .spawn_scoped(scope, move || loop {
                    match start.load(Ordering::Acquire) {
                        WAIT => std::thread::yield_now(),
                        GO => {
                            guarded(state, || f(&team(tid)));
                            return;
                        }
                        _ => return,
                    }
                });
            if let Err(e) = spawned {
                start.store(ABORT, Ordering::Release);
                return Err(e);
            }
        }
        start.store(GO, Ordering::Release);
        Ok(guarded(&state, || f(&team(0))))
    })
}

/// Runs `f`; if it panics, marks the team poisoned (so no one waits for this thread at a
/// barrier) and re-raises the panic.
fn guarded<R>(state: &TeamState, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            state.poisoned.store(true, Ordering::Relaxed);
            resume_unwind(p)
        }
    }
}

/// A mutable slice shared by a team: threads write disjoint ranges between barriers and read it
/// whole after one.
pub struct Shared<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: `Shared` is a `&mut [T]` split among threads by the callers' contract (below); sending
// or sharing it is as safe as sending `&mut [T]` pieces, which needs `T: Send`.
unsafe impl<T: Send> Send for Shared<'_, T> {}
// SAFETY: as above; all access goes through the `unsafe` methods whose contract rules out
// overlapping writes and reads racing with writes.
unsafe impl<T: Send + Sync> Sync for Shared<'_, T> {}

impl<'a, T> Shared<'a, T> {
    /// Wraps a slice for the duration of the borrow.
    pub fn new(s: &'a mut [T]) -> Self {
        Shared {
            ptr: s.as_mut_ptr(),
            len: s.len(),
            _borrow: PhantomData,
        }
    }

    /// Mutable access to `r` (panics when out of bounds).
    ///
    /// # Safety
    /// Until the next team barrier, no other thread may access any element of `r`, and this
    /// thread may not hold another reference into `r`.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn part(&self, r: Range<usize>) -> &mut [T] {
        assert!(
            r.start <= r.end && r.end <= self.len,
            "shared slice range out of bounds"
        );
        // SAFETY: in bounds (checked); exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r.start), r.end - r.start) }
    }

    /// Writes `v` at `i` (panics when out of bounds).
    ///
    /// # Safety
    /// Until the next team barrier, no other thread may access element `i`.
    pub unsafe fn set(&self, i: usize, v: T) {
        assert!(i < self.len, "shared slice index out of bounds");
        // SAFETY: in bounds (checked); exclusivity is the caller's contract.
        unsafe { *self.ptr.add(i) = v }
    }

    /// Shared access to `r` (panics when out of bounds).
    ///
    /// # Safety
    /// No thread may write any element of `r` until the next team barrier.
    pub unsafe fn get(&self, r: Range<usize>) -> &[T] {
        assert!(
            r.start <= r.end && r.end <= self.len,
            "shared slice range out of bounds"
        );
        // SAFETY: in bounds (checked); absence of writers is the caller's contract.
        unsafe { std::slice::from_raw_parts(self.ptr.add(r.start), r.end - r.start) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_everything_once_and_barriers_publish_writes() {
        for n in 1..=4 {
            let mut buf = vec![0u32; 1003];
            let mut total = vec![0u64; 1];
            {
                let shared = Shared::new(&mut buf);
                let out = Shared::new(&mut total);
                run(n, 2, |team| {
                    team.chunks(1003, 17, |r| {
                        // SAFETY: chunks are disjoint.
                        let p = unsafe { shared.part(r.clone()) };
                        for (i, v) in r.zip(p.iter_mut()) {
                            *v += i as u32 + 1;
                        }
                    });
                    team.barrier();
                    if team.tid() == 0 {
                        // SAFETY: nobody writes after the barrier.
                        let all = unsafe { shared.get(0..1003) };
                        let sum = all.iter().map(|&v| u64::from(v)).sum();
                        // SAFETY: only thread 0 touches `out`.
                        unsafe { out.set(0, sum) };
                    }
                    team.barrier();
                })
                .unwrap();
            }
            assert!(buf.iter().enumerate().all(|(i, &v)| v == i as u32 + 1));
            assert_eq!(total[0], 1003 * 1004 / 2);
        }
    }

    #[test]
    fn owned_chunks_cover_everything_once_even_when_a_thread_is_late() {
        for n in 1..=3 {
            let mut hits = vec![0u8; 1001];
            {
                let shared = Shared::new(&mut hits);
                run(n, 4, |team| {
                    if team.tid() == 1 {
                        // A late thread: the others take its chunks.
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    for _ in 0..2 {
                        team.owned_chunks(1001, 4, 3, |r| {
                            assert!(r.start.is_multiple_of(4));
                            // SAFETY: chunks are disjoint.
                            for v in unsafe { shared.part(r) } {
                                *v += 1;
                            }
                        });
                        team.barrier();
                    }
                })
                .unwrap();
            }
            assert!(hits.iter().all(|&h| h == 2), "{n} threads");
        }
    }

    #[test]
    fn a_panicking_thread_fails_the_pass_instead_of_hanging_it() {
        let r = std::panic::catch_unwind(|| {
            run(2, 0, |team| {
                if team.tid() == 1 {
                    panic!("boom");
                }
                team.barrier();
            })
        });
        assert!(r.is_err());
    }

    #[test]
    fn shares_are_aligned_and_partition_the_range() {
        let state = TeamState {
            n: 3,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            counters: vec![],
            poisoned: AtomicBool::new(false),
        };
        let mut next = 0;
        for tid in 0..3 {
            let t = Team {
                state: &state,
                tid,
                step: Cell::new(0),
            };
            let r = t.share(103, 4);
            assert_eq!(r.start, next);
            assert!(r.start.is_multiple_of(4) || r.start == 103);
            next = r.end;
        }
        assert_eq!(next, 103);
    }
}
