//! Ordered parallel jobs: workers run jobs in index order, and their results are consumed
//! strictly in that order, one at a time.
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
use std::sync::{Condvar, Mutex, MutexGuard};

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
    work: impl Fn(usize) -> Result<T, E> + Sync,
    consume: impl FnMut(T) -> Result<(), E> + Send,
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
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.clamp(1, jobs.max(1)))
            .map(|_| s.spawn(|| worker(&shared, jobs, window, &work, &consume)))
            .collect();
        for w in workers {
            // Re-raise a worker's panic with its own message.
            if let Err(panic) = w.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    match shared.lock().stopped.take() {
        Some(Some(e)) => Err(e),
        _ => Ok(()),
    }
}

fn worker<T, E>(
    shared: &Shared<T, E>,
    jobs: usize,
    window: usize,
    work: &(impl Fn(usize) -> Result<T, E> + Sync),
    consume: &Mutex<impl FnMut(T) -> Result<(), E>>,
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
                st = shared.wait(st);
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
        if st.consuming {
            continue;
        }
        // Take the consumer's role for as long as results are ready in order.
        st.consuming = true;
        let mut consume = consume.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let turn = st.next_out;
            let Some(r) = st.done.remove(&turn) else {
                break;
            };
            drop(st);
            let outcome = r.and_then(&mut *consume);
            st = shared.lock();
            match outcome {
                Ok(()) => st.next_out += 1,
                Err(e) => stop(&mut st, Some(e)),
            }
            shared.changed.notify_all();
            if st.stopped.is_some() {
                break;
            }
        }
        st.consuming = false;
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
    fn workers_never_run_more_than_the_window_ahead() {
        let started = AtomicUsize::new(0);
        let mut consumed = 0usize;
        run_ordered::<(), ()>(
            100,
            4,
            3,
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
            |k| {
                assert!(k != 5, "job 5 failed");
                Ok(k)
            },
            |_| Ok(()),
        );
    }

    #[test]
    fn no_jobs_is_fine() {
        run_ordered::<(), ()>(0, 4, 4, |_| unreachable!(), |()| unreachable!()).unwrap();
    }
}
