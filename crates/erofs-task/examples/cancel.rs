//! A long job on several threads, stopped from another thread through a `CancelToken`, the
//! way erofs-rs operations stop: each job asks the progress first.

use std::sync::atomic::{AtomicU64, Ordering};

use erofs_task::{CancelToken, Cancellable, Cancelled, NoProgress, Progress};

/// Runs up to `jobs` jobs, asking `progress` before each; fails with `Cancelled` once asked
/// to stop.
fn run(jobs: u64, progress: &dyn Progress) -> Result<u64, Cancelled> {
    let done = AtomicU64::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| -> Result<(), Cancelled> {
                    while done.fetch_add(1, Ordering::Relaxed) < jobs {
                        progress.check_cancelled()?;
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        progress.advance(1, 0);
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("a worker panicked"))
    })?;
    Ok(jobs)
}

fn main() {
    assert_eq!(run(100, &NoProgress), Ok(100));
    let token = CancelToken::new();
    let canceller = {
        let token = token.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            token.cancel();
        })
    };
    let result = run(1_000_000, &Cancellable::new(&NoProgress, token));
    canceller.join().expect("the canceller panicked");
    assert_eq!(result, Err(Cancelled));
    println!("stopped: {}", result.unwrap_err());
}
