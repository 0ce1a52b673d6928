//! Device time per kernel on the GPU devices, for `lossc bench-train --profile`: while a
//! profile is on, each launch waits for the work before it, runs, and is waited for, and the
//! time between the two waits is the kernel's (less the cost of a wait on an idle device, so
//! that a small kernel is not charged for the read-back that waits for it). Waiting after
//! every launch slows a step, so a profiled run measures shares, not throughput.

use crate::stacked::Launcher;
use std::cell::RefCell;
use std::time::Instant;

/// One kernel's launches and device time over the profiled span.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    pub name: &'static str,
    pub launches: usize,
    pub seconds: f64,
}

struct Profile {
    kernels: Vec<KernelTime>,
    /// What a wait on an idle device costs (the least of a few), measured on first use.
    idle_wait: Option<f64>,
}

thread_local! {
    /// This thread's profile: a training's launches come from the thread that trains.
    static PROFILE: RefCell<Option<Profile>> = const { RefCell::new(None) };
}

/// Starts a profile of this thread's launches (an earlier one is dropped): each launch on a
/// GPU device is timed until [`stop`].
pub fn start() {
    PROFILE.with(|p| *p.borrow_mut() = Some(Profile { kernels: Vec::new(), idle_wait: None }));
}

/// Ends the profile: each kernel's launches and time, in order of first launch.
pub fn stop() -> Vec<KernelTime> {
    PROFILE.with(|p| p.borrow_mut().take().map_or_else(Vec::new, |p| p.kernels))
}

/// Whether this thread's profile is on.
pub(crate) fn on() -> bool {
    PROFILE.with(|p| p.borrow().is_some())
}

/// Waits for all work `l` has queued ([`Launcher::read`] waits for the work before it).
fn wait<L: Launcher>(l: &L) {
    l.read(l.spare(), 0, 1);
}

/// Runs `launch` (work on `l` under `name`), timed when this thread's profile is on.
pub(crate) fn timed<L: Launcher, R>(l: &L, name: &'static str, launch: impl FnOnce() -> R) -> R {
    if !on() {
        return launch();
    }
    wait(l);
    let idle = PROFILE.with(|p| p.borrow().as_ref().and_then(|p| p.idle_wait));
    let idle = idle.unwrap_or_else(|| {
        let least = (0..5)
            .map(|_| {
                let t = Instant::now();
                wait(l);
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        PROFILE.with(|p| p.borrow_mut().as_mut().map(|p| p.idle_wait = Some(least)));
        least
    });
    // No borrow is held while `launch` runs: it may launch timed work of its own.
    let t = Instant::now();
    let r = launch();
    wait(l);
    let seconds = (t.elapsed().as_secs_f64() - idle).max(0.0);
    PROFILE.with(|p| {
        if let Some(p) = p.borrow_mut().as_mut() {
            match p.kernels.iter_mut().find(|k| k.name == name) {
                Some(k) => {
                    k.launches += 1;
                    k.seconds += seconds;
                }
                None => p.kernels.push(KernelTime { name, launches: 1, seconds }),
            }
        }
    });
    r
}
