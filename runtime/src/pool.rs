//! Worker threads kept for the process, for the CPU device's parallel parts.
//!
//! A training step makes about 40 parallel calls (each convolution forward and backward, each
//! batch norm's passes); spawning and joining a thread for every one of them doubled a
//! two-thread training's system time. The workers sleep on a condition variable between calls.
//! One caller at a time uses them: a call made while they are busy (another thread's training,
//! or a call from inside a part) spawns scoped threads as before.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, TryLockError};

/// A part's work with its lifetime erased: valid until the call that posted it has seen every
/// part finish ([`run`] waits for that, also when its own part panics).
#[derive(Clone, Copy)]
struct Job(*const (dyn Fn(usize) + Sync));
// SAFETY: the pointee is `Sync`, and it outlives every use (see `Job`).
unsafe impl Send for Job {}

#[derive(Default)]
struct Round {
    /// Bumped for every posted call; a worker runs each generation at most once.
    generation: u64,
    job: Option<Job>,
    /// Parts `1..parts` go to workers `0..parts - 1`; part 0 is the caller's.
    parts: usize,
    /// Workers' parts not yet finished.
    pending: usize,
    panicked: bool,
    /// Workers spawned so far.
    workers: usize,
}

struct Pool {
    round: Mutex<Round>,
    start: Condvar,
    finish: Condvar,
    /// Held by the caller whose call the workers serve.
    busy: Mutex<()>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        round: Mutex::new(Round::default()),
        start: Condvar::new(),
        finish: Condvar::new(),
        busy: Mutex::new(()),
    })
}

fn lock(m: &Mutex<Round>) -> MutexGuard<'_, Round> {
    // A panic inside a part is caught before the lock is taken; the state stays consistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn worker(index: usize) {
    let pool = pool();
    let mut seen = 0;
    loop {
        let mut round = lock(&pool.round);
        while round.generation == seen {
            round = pool.start.wait(round).unwrap_or_else(|e| e.into_inner());
        }
        seen = round.generation;
        let part = index + 1;
        if part >= round.parts {
            continue;
        }
        let job = round.job.expect("a posted call has a job");
        drop(round);
        // SAFETY: the caller waits for `pending` to reach 0 before its closure goes away.
        let ok = catch_unwind(AssertUnwindSafe(|| unsafe { (*job.0)(part) })).is_ok();
        let mut round = lock(&pool.round);
        round.panicked |= !ok;
        round.pending -= 1;
        if round.pending == 0 {
            pool.finish.notify_all();
        }
    }
}

/// Runs `f(0)`, ..., `f(parts - 1)` at once, `f(0)` on the calling thread, and returns when all
/// have finished. Panics (after all have finished) if any of them panicked.
pub fn run(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    if parts <= 1 {
        return f(0);
    }
    let pool = pool();
    // A call whose part panicked leaves `busy` poisoned; the workers are as good as before.
    let _busy = match pool.busy.try_lock() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => return scoped(parts, f),
    };
    {
        let mut round = lock(&pool.round);
        while round.workers < parts - 1 {
            let index = round.workers;
            std::thread::Builder::new()
                .name(format!("lossc-cpu-{index}"))
                .spawn(move || worker(index))
                .expect("spawning a CPU device thread");
            round.workers += 1;
        }
        // SAFETY (of the erased lifetime): this function returns only once `pending` is 0.
        let f: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        round.job = Some(Job(f));
        round.parts = parts;
        round.pending = parts - 1;
        round.panicked = false;
        round.generation += 1;
        pool.start.notify_all();
    }
    let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
    let mut round = lock(&pool.round);
    while round.pending > 0 {
        round = pool.finish.wait(round).unwrap_or_else(|e| e.into_inner());
    }
    round.job = None;
    let theirs = round.panicked;
    drop(round);
    if let Err(e) = mine {
        std::panic::resume_unwind(e);
    }
    assert!(!theirs, "a CPU device thread panicked");
}

/// [`run`] on threads spawned for this call.
fn scoped(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    std::thread::scope(|s| {
        let rest: Vec<_> = (1..parts).map(|i| s.spawn(move || f(i))).collect();
        f(0);
        for h in rest {
            h.join().expect("a CPU device thread panicked");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_part_runs_once_per_call_also_from_several_callers() {
        let callers: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(|| {
                    for parts in [1, 2, 3, 5, 2] {
                        let hits: Vec<AtomicUsize> = (0..parts).map(|_| AtomicUsize::new(0)).collect();
                        run(parts, &|i| {
                            hits[i].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{hits:?}");
                    }
                })
            })
            .collect();
        callers.into_iter().for_each(|c| c.join().unwrap());
    }

    #[test]
    fn a_part_that_panics_fails_the_call_and_the_pool_goes_on() {
        for bad in [0, 1] {
            let r = catch_unwind(|| run(2, &|i| assert_ne!(i, bad, "part {i}")));
            assert!(r.is_err(), "part {bad} panicked");
        }
        let hits = AtomicUsize::new(0);
        run(2, &|_| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.into_inner(), 2);
        // Part 1 still runs on a kept worker, not on a thread spawned for the call (one call
        // may find the workers serving the other test's callers).
        let on_worker = (0..100).any(|_| {
            let name = Mutex::new(None);
            run(2, &|i| {
                if i == 1 {
                    *name.lock().unwrap() = std::thread::current().name().map(String::from);
                }
            });
            name.into_inner().unwrap().is_some_and(|n| n.starts_with("lossc-cpu-"))
        });
        assert!(on_worker, "after a panic, calls no longer reach the workers");
    }
}
