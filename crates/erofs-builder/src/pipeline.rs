//! Parallel jobs, in two shapes:
//!
//! - [`run_unordered`]: each job does its whole work (read, hash, compress, positioned write)
//!   on the worker that runs it; nothing runs in order. This is the shape for a seekable
//!   output, where every byte's place is known before it is produced.
//! - [`run_ordered`]: workers run jobs in index order, and their results are consumed strictly
//!   in that order, one at a time. This is the shape for what must happen in order: writing
//!   a stream, or assigning addresses to data whose size is known only once it is produced
//!   (compressed pclusters). The consumer must stay cheap (a copy, an address), because it is
//!   the serial part of the build; [`Clock`] measures it.
//!
//! Ordered consumption:
//!
//! Why not a parallel collect per batch: a batch ends at a barrier, so one slow job (a large
//! file) idles every other thread until it is done. Here each worker takes the next job as
//! soon as it is free, up to `window` jobs ahead of the consumer, so a slow job delays only
//! its own result. The window is what bounds memory: at most `window` results wait.
//!
//! There is no consumer thread. Whichever worker finishes the job that is next in order
//! takes the consumer's role and consumes every result that is ready, in order, then goes
//! back to work. Consuming (writing the image) is a large share of the work, and a thread of
//! its own would compete with the workers for the same cores.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// CPU time of the calling thread.
pub(crate) fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Where the time of the parallel stages goes: the CPU time spent in order (the serial share
/// of the build) and the time workers spent waiting (for the window to move, or idle at the
/// end of a stage while others finish).
#[derive(Debug, Default)]
pub(crate) struct Clock {
    ordered_cpu_ns: AtomicU64,
    wait_ns: AtomicU64,
}

impl Clock {
    /// Adds in-order CPU time.
    pub(crate) fn ordered(&self, d: Duration) {
        self.ordered_cpu_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    fn waited(&self, d: Duration) {
        self.wait_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Runs `f` in order and counts its CPU time.
    pub(crate) fn in_order<T>(&self, f: impl FnOnce() -> T) -> T {
        let t = thread_cpu();
        let r = f();
        self.ordered(thread_cpu().saturating_sub(t));
        r
    }

    /// (in-order CPU time, worker wait time).
    pub(crate) fn totals(&self) -> (Duration, Duration) {
        (
            Duration::from_nanos(self.ordered_cpu_ns.load(Ordering::Relaxed)),
            Duration::from_nanos(self.wait_ns.load(Ordering::Relaxed)),
        )
    }

    /// Counts as waiting the time each worker spent idle between its own end and the last
    /// worker's end.
    fn idle_until_last(&self, ends: &[Instant]) {
        if let Some(last) = ends.iter().max() {
            for e in ends {
                self.waited(last.duration_since(*e));
            }
        }
    }
}

/// Runs `work(0..jobs)` on `threads` workers in any order and returns the results in job
/// order. Workers take the next job as soon as they are free; nothing waits for a turn. The
/// first error in job order among the jobs that ran is returned, and an error stops workers
/// from taking new jobs.
pub(crate) fn run_unordered<T: Send, E: Send>(
    jobs: usize,
    threads: usize,
    clock: &Clock,
    work: impl Fn(usize) -> Result<T, E> + Sync,
) -> Result<Vec<T>, E> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let run = || {
        let mut mine = Vec::new();
        loop {
            let k = next.fetch_add(1, Ordering::Relaxed);
            if k >= jobs || failed.load(Ordering::Relaxed) {
                break;
            }
            let r = work(k);
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            mine.push((k, r));
        }
        (mine, Instant::now())
    };
    let mut all = Vec::with_capacity(jobs);
    let mut ends = Vec::new();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, jobs.max(1)))
            .map(|_| s.spawn(run))
            .collect();
        for w in workers {
            match w.join() {
                Ok((mine, end)) => {
                    all.extend(mine);
                    ends.push(end);
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    clock.idle_until_last(&ends);
    all.sort_unstable_by_key(|(k, _)| *k);
    all.into_iter().map(|(_, r)| r).collect()
}

struct State<T, E> {
    /// The next job to start.
    next: usize,
    /// The next result to consume.
    next_out: usize,
    /// Finished jobs whose results wait for their turn.
    done: BTreeMap<usize, Result<T, E>>,
    /// A worker is consuming results.
    consuming: bool,
    /// The run ended early: the first error in job order, or a panic (`None`).
    stopped: Option<Option<E>>,
}

struct Shared<T, E> {
    state: Mutex<State<T, E>>,
    changed: Condvar,
}

impl<T, E> Shared<T, E> {
    fn lock(&self) -> MutexGuard<'_, State<T, E>> {
        // A poisoned lock means a worker panicked; `stopped` is set and the scope re-raises
        // the panic, so the state is still fine to read.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State<T, E>>) -> MutexGuard<'a, State<T, E>> {
        self.changed.wait(guard).unwrap_or_else(|e| e.into_inner())
    }
}

fn stop<T, E>(st: &mut State<T, E>, error: Option<E>) {
    if st.stopped.is_none() {
        st.stopped = Some(error);
    }
    st.done.clear();
}

/// Stops the run when a worker unwinds, so that nobody waits for its job.
struct PanicGuard<'a, T, E>(&'a Shared<T, E>);

impl<T, E> Drop for PanicGuard<'_, T, E> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            stop(&mut self.0.lock(), None);
            self.0.changed.notify_all();
        }
    }
}

/// Runs `work(0..jobs)` on `threads` workers and passes each result to `consume` in job
/// order. The first error in job order (from a job or from `consume`) stops the run and is
/// returned; jobs after it may or may not have run.
pub(crate) fn run_ordered<T: Send, E: Send>(
    jobs: usize,
    threads: usize,
    window: usize,
    clock: &Clock,
    work: impl Fn(usize) -> Result<T, E> + Sync,
    consume: impl FnMut(T) -> Result<(), E> + Send,
) -> Result<(), E> {
    run_ordered_then(jobs, threads, window, clock, work, consume, |()| Ok(()))
}

/// [`run_ordered`], where `consume` returns work that needs no turn (positioned writes at
/// the addresses it just assigned): the worker that consumed a result passes the turn on
/// first and then runs `after` on it, so that another worker may consume the next result
/// meanwhile. An error from `after` stops the run like any other.
pub(crate) fn run_ordered_then<T: Send, A, E: Send>(
    jobs: usize,
    threads: usize,
    window: usize,
    clock: &Clock,
    work: impl Fn(usize) -> Result<T, E> + Sync,
    consume: impl FnMut(T) -> Result<A, E> + Send,
    after: impl Fn(A) -> Result<(), E> + Sync,
) -> Result<(), E> {
    let shared = Shared {
        state: Mutex::new(State {
            next: 0,
            next_out: 0,
            done: BTreeMap::new(),
            consuming: false,
            stopped: None,
        }),
        changed: Condvar::new(),
    };
    let consume = Mutex::new(consume);
    let window = window.max(1);
    let mut ends = Vec::new();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, jobs.max(1)))
            .map(|_| {
                s.spawn(|| {
                    worker(&shared, jobs, window, clock, &work, &consume, &after);
                    Instant::now()
                })
            })
            .collect();
        for w in workers {
            // Re-raise a worker's panic with its own message.
            match w.join() {
                Ok(end) => ends.push(end),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    clock.idle_until_last(&ends);
    match shared.lock().stopped.take() {
        Some(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

fn worker<T, A, E>(
    shared: &Shared<T, E>,
    jobs: usize,
    window: usize,
    clock: &Clock,
    work: &(impl Fn(usize) -> Result<T, E> + Sync),
    consume: &Mutex<impl FnMut(T) -> Result<A, E>>,
    after: &(impl Fn(A) -> Result<(), E> + Sync),
) {
    let _guard = PanicGuard(shared);
    loop {
        let k = {
            let mut st = shared.lock();
            loop {
                if st.stopped.is_some() || st.next >= jobs {
                    return;
                }
                if st.next - st.next_out < window {
                    break;
                }
                let t = Instant::now();
                st = shared.wait(st);
                clock.waited(t.elapsed());
            }
            st.next += 1;
            st.next - 1
        };
        let r = work(k);
        let mut st = shared.lock();
        if st.stopped.is_some() {
            return;
        }
        st.done.insert(k, r);
        // Take the consumer's role for as long as results are ready in order, one result
        // at a time: the turn passes on before that result's `after` work.
        while !st.consuming {
            let turn = st.next_out;
            let Some(r) = st.done.remove(&turn) else {
                break;
            };
            st.consuming = true;
            drop(st);
            let outcome = {
                let mut consume = consume.lock().unwrap_or_else(|e| e.into_inner());
                clock.in_order(|| r.and_then(&mut *consume))
            };
            st = shared.lock();
            st.consuming = false;
            let outcome = match outcome {
                Ok(a) => {
                    st.next_out += 1;
                    shared.changed.notify_all();
                    drop(st);
                    let done = after(a);
                    st = shared.lock();
                    done
                }
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                stop(&mut st, Some(e));
                shared.changed.notify_all();
            }
            if st.stopped.is_some() {
                return;
            }
        }
    }
}

/// Recycled output buffers. A buffer's length is how much of it is initialised, so a reused
/// buffer is never zeroed again.
pub(crate) struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl BufPool {
    pub(crate) fn new(keep: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// A buffer of at least `len` initialised bytes (their values are arbitrary).
    pub(crate) fn get(&self, len: usize) -> Vec<u8> {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match reused {
            Some(mut b) => {
                if b.len() < len {
                    b.resize(len, 0);
                }
                b
            }
            // Zeroed memory straight from the allocator costs no pass over it.
            None => vec![0; len],
        }
    }

    pub(crate) fn put(&self, b: Vec<u8>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < self.keep {
            free.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn results_arrive_in_job_order_whatever_the_timing() {
        for threads in [1, 2, 4, 9] {
            let mut seen = Vec::new();
            run_ordered::<usize, ()>(
                200,
                threads,
                5,
                &Clock::default(),
                |k| {
                    // Early jobs are the slow ones, so later jobs finish first.
                    let us = ((200 - k) % 7) as u64 * 50;
                    std::thread::sleep(std::time::Duration::from_micros(us));
                    Ok(k)
                },
                |k| {
                    seen.push(k);
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(seen, (0..200).collect::<Vec<_>>(), "{threads} threads");
        }
    }

    #[test]
    fn the_turn_passes_on_before_the_after_work_of_a_result() {
        // after(0) waits for result 1 to be consumed: it can only finish if another worker
        // took the turn while it was running.
        let consumed = AtomicUsize::new(0);
        let afters = Mutex::new(Vec::new());
        run_ordered_then::<usize, usize, String>(
            4,
            2,
            4,
            &Clock::default(),
            Ok,
            |k| {
                consumed.fetch_max(k + 1, Ordering::SeqCst);
                Ok(k)
            },
            |k| {
                if k == 0 {
                    let t = Instant::now();
                    while consumed.load(Ordering::SeqCst) < 2 {
                        if t.elapsed() > Duration::from_secs(20) {
                            return Err("result 1 was not consumed during after(0)".into());
                        }
                        std::thread::yield_now();
                    }
                }
                afters.lock().unwrap().push(k);
                Ok(())
            },
        )
        .unwrap();
        let mut afters = afters.into_inner().unwrap();
        afters.sort_unstable();
        assert_eq!(afters, [0, 1, 2, 3]);
    }

    #[test]
    fn an_error_after_the_turn_stops_the_run() {
        let ran = AtomicUsize::new(0);
        let err = run_ordered_then::<usize, usize, &str>(
            100_000,
            2,
            4,
            &Clock::default(),
            |k| {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(k)
            },
            Ok,
            |k| if k == 3 { Err("disk full") } else { Ok(()) },
        )
        .unwrap_err();
        assert_eq!(err, "disk full");
        assert!(ran.load(Ordering::SeqCst) < 100);
    }

    #[test]
    fn workers_never_run_more_than_the_window_ahead() {
        let started = AtomicUsize::new(0);
        let mut consumed = 0usize;
        run_ordered::<(), ()>(
            100,
            4,
            3,
            &Clock::default(),
            |_| {
                started.fetch_add(1, Ordering::SeqCst);
                Ok(())
            },
            |()| {
                // While result j is consumed, jobs up to j + window may have started.
                assert!(started.load(Ordering::SeqCst) <= consumed + 3);
                consumed += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(consumed, 100);
    }

    #[test]
    fn the_first_error_in_job_order_wins_and_stops_the_run() {
        let mut consumed = Vec::new();
        let err = run_ordered::<usize, String>(
            1000,
            3,
            4,
            &Clock::default(),
            |k| {
                if k == 7 || k == 9 {
                    Err(format!("job {k}"))
                } else {
                    Ok(k)
                }
            },
            |k| {
                consumed.push(k);
                Ok(())
            },
        )
        .unwrap_err();
        assert_eq!(err, "job 7");
        assert_eq!(consumed, (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn a_consumer_error_stops_the_workers() {
        let ran = AtomicUsize::new(0);
        let err = run_ordered::<usize, &str>(
            100_000,
            2,
            4,
            &Clock::default(),
            |k| {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(k)
            },
            |k| if k == 3 { Err("disk full") } else { Ok(()) },
        )
        .unwrap_err();
        assert_eq!(err, "disk full");
        assert!(ran.load(Ordering::SeqCst) < 100);
    }

    #[test]
    #[should_panic(expected = "job 5 failed")]
    fn a_worker_panic_reaches_the_caller() {
        let _ = run_ordered::<usize, ()>(
            50,
            2,
            4,
            &Clock::default(),
            |k| {
                assert!(k != 5, "job 5 failed");
                Ok(k)
            },
            |_| Ok(()),
        );
    }

    #[test]
    fn unordered_results_come_back_in_job_order_and_the_first_error_wins() {
        for threads in [1, 2, 5] {
            let got = run_unordered::<usize, ()>(300, threads, &Clock::default(), |k| {
                std::thread::sleep(std::time::Duration::from_micros(
                    ((300 - k) % 5) as u64 * 40,
                ));
                Ok(k * 2)
            })
            .unwrap();
            assert_eq!(got, (0..300).map(|k| k * 2).collect::<Vec<_>>());
        }
        let err = run_unordered::<usize, String>(50, 3, &Clock::default(), |k| {
            if k == 4 || k == 6 {
                Err(format!("job {k}"))
            } else {
                Ok(k)
            }
        })
        .unwrap_err();
        // Job 6 may run before job 4 fails, but job 4 comes first in job order.
        assert_eq!(err, "job 4");
    }

    #[test]
    fn no_jobs_is_fine() {
        run_ordered::<(), ()>(
            0,
            4,
            4,
            &Clock::default(),
            |_| unreachable!(),
            |()| unreachable!(),
        )
        .unwrap();
        let none: Vec<()> =
            run_unordered::<(), ()>(0, 4, &Clock::default(), |_| unreachable!()).unwrap();
        assert!(none.is_empty());
    }
}
