//! The CPU backend's worker pool: `parallel_for(n_tasks, f)` runs `f(0..n_tasks)` on the
//! calling thread and the pool's workers, and returns when every task has run.
//!
//! Why not rayon: a decode step of a small model is ~150 parallel regions of 10–80 µs
//! each. Rayon's workers go to sleep a few microseconds after running out of work, and on
//! a virtual machine waking a halted vCPU costs tens of microseconds, as much as the
//! region itself. Here, as in llama.cpp's thread pool, a worker spins for a short while
//! ([`SPIN`]) after each region, so the regions of one step find it awake, and only then
//! parks, so an idle engine costs no CPU.
//!
//! Tasks are claimed one at a time from an atomic counter, so a worker that is slow to
//! wake (or descheduled) only delays the tasks it has already claimed: the caller takes
//! the rest itself.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock, TryLockError};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks.
const SPIN: Duration = Duration::from_micros(300);

/// A region's body, as a thin pointer to the caller's `&dyn Fn` (it lives on the caller's
/// stack until every claimed task of the region has finished).
type Job<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// Region epoch (high 32 bits) and the next unclaimed task (low 32 bits), in one word
    /// so a claim can only succeed for the region it read the job of.
    state: AtomicU64,
    job: AtomicPtr<Job<'static>>,
    n_tasks: AtomicUsize,
    /// Tasks of the current region that have finished.
    done: AtomicUsize,
    /// A task of the current region panicked.
    panicked: AtomicUsize,
    sleepers: AtomicUsize,
    park: Mutex<()>,
    wake: Condvar,
}

/// The process-wide pool. One region runs at a time; a second caller (another backend on
/// another thread, or a nested call) runs its region serially instead of waiting.
struct Pool {
    shared: &'static Shared,
    n_threads: usize,
    submit: Mutex<()>,
}

/// Threads asked for before the pool started ([`configure`]); 0: one per core.
static REQUESTED: AtomicUsize = AtomicUsize::new(0);

/// Ask for `threads` threads (the caller included; None: one per core) and start the
/// pool. The pool is process-wide and starts once, so the first request holds and later
/// ones share it. Returns the threads it runs.
pub fn configure(threads: Option<usize>) -> usize {
    if let Some(n) = threads.filter(|&n| n > 0) {
        REQUESTED.store(n, Ordering::Relaxed);
    }
    n_threads()
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let n_threads = match REQUESTED.load(Ordering::Relaxed) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            state: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            n_tasks: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            park: Mutex::new(()),
            wake: Condvar::new(),
        }));
        let mut n_spawned = 1; // the caller is the first thread
        for i in 1..n_threads {
            let spawned = std::thread::Builder::new()
                .name(format!("kiln-cpu-{i}"))
                .spawn(move || worker(shared));
            if spawned.is_ok() {
                n_spawned += 1;
            }
        }
        Pool {
            shared,
            n_threads: n_spawned,
            submit: Mutex::new(()),
        }
    })
}

/// Threads that run a region: the caller and the workers.
pub fn n_threads() -> usize {
    pool().n_threads
}

/// Run `f(i)` for every `i` in `0..n_tasks`, spread over the pool, and return when all
/// have run. A panic in a task is re-raised here after the region ends.
pub fn parallel_for(n_tasks: usize, f: impl Fn(usize) + Sync) {
    let pool = pool();
    let guard = if n_tasks > 1 && pool.n_threads > 1 {
        match pool.submit.try_lock() {
            Ok(guard) => Some(guard),
            // A task panicked in an earlier region; the pool itself is intact.
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    } else {
        None
    };
    let Some(_guard) = guard else {
        (0..n_tasks).for_each(f);
        return;
    };
    let shared = pool.shared;
    let job: Job<'_> = &f;
    let job_ptr = (&job as *const Job<'_>).cast::<Job<'static>>().cast_mut();
    let epoch = (shared.state.load(Ordering::Relaxed) >> 32) + 1;
    shared.job.store(job_ptr, Ordering::Relaxed);
    shared.n_tasks.store(n_tasks, Ordering::Relaxed);
    shared.done.store(0, Ordering::Relaxed);
    shared.panicked.store(0, Ordering::Relaxed);
    // Publishing the new epoch releases the job to the workers (SeqCst pairs with the
    // sleepers check in `worker` so a parking worker cannot miss it).
    shared
        .state
        .store((epoch & 0xffff_ffff) << 32, Ordering::SeqCst);
    if shared.sleepers.load(Ordering::SeqCst) > 0 {
        let _lock = shared.park.lock().unwrap_or_else(|e| e.into_inner());
        shared.wake.notify_all();
    }
    run_tasks(shared, epoch & 0xffff_ffff);
    // Wait for the tasks the workers claimed; `job` must outlive them.
    // Spin briefly (a worker finishing its last task); past that the worker was likely
    // preempted, so give the core away rather than burn its time slice.
    let mut spins = 0u32;
    while shared.done.load(Ordering::Acquire) < n_tasks {
        spins = spins.saturating_add(1);
        if spins < 4096 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    if shared.panicked.load(Ordering::Relaxed) != 0 {
        resume_unwind(Box::new("a kiln CPU kernel task panicked"));
    }
}

/// Run `f(i, &mut items[i])` for every item, spread over the pool.
pub fn for_each_mut<T: Send>(items: &mut [T], f: impl Fn(usize, &mut T) + Sync) {
    let base = SendPtr(items.as_mut_ptr());
    parallel_for(items.len(), |i| {
        let base = &base;
        // SAFETY: `parallel_for` runs each index in 0..items.len() exactly once, so every
        // task gets a distinct element, and `items` stays mutably borrowed until it returns.
        let item = unsafe { &mut *base.0.add(i) };
        f(i, item);
    });
}

/// A pointer that may cross threads: [`for_each_mut`] hands out disjoint elements.
struct SendPtr<T>(*mut T);
// SAFETY: only used by `for_each_mut`, whose tasks touch disjoint `T: Send` elements.
unsafe impl<T: Send> Sync for SendPtr<T> {}

/// Claim and run tasks of region `epoch` until none is left. Returns whether any ran.
fn run_tasks(shared: &Shared, epoch: u64) -> bool {
    let mut ran = 0;
    let mut state = shared.state.load(Ordering::Acquire);
    let job_ptr = shared.job.load(Ordering::Acquire);
    let n_tasks = shared.n_tasks.load(Ordering::Acquire) as u64;
    loop {
        if state >> 32 != epoch || state & 0xffff_ffff >= n_tasks {
            break;
        }
        match shared.state.compare_exchange_weak(
            state,
            state + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                let task = (state & 0xffff_ffff) as usize;
                // SAFETY: the claim succeeded for `epoch`, so that region has an unfinished
                // task (this one) and its caller is still waiting in `parallel_for` with
                // `job` alive on its stack; `job_ptr` was read after the epoch was published
                // and before the claim, and the caller only replaces it after `done` reaches
                // `n_tasks`, which needs this task.
                let job: Job<'_> = unsafe { *job_ptr };
                if catch_unwind(AssertUnwindSafe(|| job(task))).is_err() {
                    shared.panicked.store(1, Ordering::Relaxed);
                }
                ran += 1;
                shared.done.fetch_add(1, Ordering::Release);
                state = shared.state.load(Ordering::Acquire);
            }
            Err(now) => state = now,
        }
    }
    ran > 0
}

fn worker(shared: &'static Shared) {
    let mut seen = 0u64;
    loop {
        let epoch = wait_for_region(shared, seen);
        seen = epoch;
        run_tasks(shared, epoch);
    }
}

/// Spin for [`SPIN`], then park, until a region newer than `seen` is published.
fn wait_for_region(shared: &Shared, seen: u64) -> u64 {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let epoch = shared.state.load(Ordering::Acquire) >> 32;
        if epoch != seen {
            return epoch;
        }
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(256) || start.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        let mut lock = shared.park.lock().unwrap_or_else(|e| e.into_inner());
        shared.sleepers.fetch_add(1, Ordering::SeqCst);
        while shared.state.load(Ordering::SeqCst) >> 32 == seen {
            lock = shared.wake.wait(lock).unwrap_or_else(|e| e.into_inner());
        }
        shared.sleepers.fetch_sub(1, Ordering::SeqCst);
        drop(lock);
        return shared.state.load(Ordering::Acquire) >> 32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_task_runs_exactly_once() {
        for n in [0usize, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicU32> = (0..n).map(|_| AtomicU32::new(0)).collect();
            parallel_for(n, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
        }
    }

    #[test]
    fn for_each_mut_writes_every_element() {
        let mut v: Vec<usize> = vec![usize::MAX; 333];
        for_each_mut(&mut v, |i, x| *x = i * 2);
        assert!(v.iter().enumerate().all(|(i, &x)| x == i * 2));
    }

    #[test]
    fn many_regions_back_to_back_and_after_parking() {
        let total = AtomicUsize::new(0);
        for round in 0..2000 {
            parallel_for(7, |i| {
                total.fetch_add(i, Ordering::Relaxed);
            });
            if round % 500 == 0 {
                std::thread::sleep(SPIN * 3); // let the workers park
            }
        }
        assert_eq!(total.load(Ordering::Relaxed), 2000 * 21);
    }

    #[test]
    fn concurrent_and_nested_callers_fall_back_to_serial() {
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    let sum = AtomicUsize::new(0);
                    parallel_for(50, |i| {
                        parallel_for(3, |j| {
                            sum.fetch_add(i * 3 + j, Ordering::Relaxed);
                        });
                    });
                    assert_eq!(sum.load(Ordering::Relaxed), (0..150).sum::<usize>());
                });
            }
        });
    }

    #[test]
    fn a_panicking_task_is_reraised_and_the_pool_still_works() {
        let caught = catch_unwind(|| parallel_for(8, |i| assert!(i != 5, "task five")));
        assert!(caught.is_err());
        let count = AtomicUsize::new(0);
        parallel_for(8, |_| {
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 8);
    }
}
