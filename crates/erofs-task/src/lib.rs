//! What every long erofs-rs operation (building an image, checking it, verifying its
//! fingerprints or its dm-verity tree) shares with its caller: one [`Progress`] trait the
//! caller implements, and cancellation through it.
//!
//! Libraries never print: they report to a `&dyn Progress`, and binaries render it (the one
//! indicatif bar lives in `erofs-cli`). The same parameter carries cancellation: an operation
//! asks [`Progress::is_cancelled`] before each file or job and, once it is true, stops and
//! returns [`Cancelled`] (inside its own error type), leaving nothing behind. A
//! [`CancelToken`] is a flag that can be set from any thread; [`Cancellable`] attaches one to
//! any progress renderer.
//!
//! ```
//! use erofs_task::{CancelToken, Cancellable, NoProgress, Progress};
//!
//! let token = CancelToken::new();
//! let progress = Cancellable::new(&NoProgress, token.clone());
//! assert!(progress.check_cancelled().is_ok());
//! token.cancel(); // from a signal handler, a UI thread, a progress callback...
//! assert!(progress.check_cancelled().is_err());
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The stages of a build, reported to [`Progress::phase`]. Checks and verifications have one
/// stage and report only [`Progress::start`] and [`Progress::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Walking the source.
    Scan,
    /// Planning the layout.
    Plan,
    /// Copying, compressing and hashing file data.
    Data,
    /// Writing inodes and directories.
    Metadata,
}

/// Receives progress and warnings from a long operation, and tells it whether to stop.
///
/// Every method has an empty default. Operations call them from worker threads, so
/// implementations must be cheap: [`Progress::advance`] and [`Progress::is_cancelled`] run
/// about once per file or job.
pub trait Progress: Send + Sync {
    /// A new stage starts (builds only).
    fn phase(&self, _phase: Phase) {}
    /// The work ahead: `items` (files or inodes) and `bytes`, where known. A build calls it
    /// once per stage that counts (the scan counts entries with no total, the data stage
    /// files and bytes).
    fn start(&self, _items: Option<u64>, _bytes: Option<u64>) {}
    /// `items` more items and `bytes` more bytes are done.
    fn advance(&self, _items: u64, _bytes: u64) {}
    /// The operation ended (successfully or not).
    fn finish(&self) {}
    /// A non-fatal problem, already worded for the user.
    fn warning(&self, _message: &str) {}
    /// Whether the operation should stop now. Asked before each file or job.
    fn is_cancelled(&self) -> bool {
        false
    }
    /// [`Progress::is_cancelled`] as an error, for `?`.
    fn check_cancelled(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }
}

/// A [`Progress`] that ignores everything and never cancels.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// The operation stopped because its caller cancelled it. Whatever it was writing was
/// discarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

/// A cancellation flag shared by clones: cancelling one cancels them all. Cheap to check.
///
/// On its own it is a [`Progress`] that reports nothing; [`Cancellable`] pairs it with a
/// renderer.
#[derive(Clone, Debug, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not yet cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every operation watching this token to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`CancelToken::cancel`] was called on this token or a clone.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The shared flag itself (`true` once cancelled), for code that can only set an
    /// [`AtomicBool`]: a signal handler registered with signal-hook's `flag::register`.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }
}

impl Progress for CancelToken {
    fn is_cancelled(&self) -> bool {
        CancelToken::is_cancelled(self)
    }
}

/// A progress renderer with a [`CancelToken`]: forwards every event to `inner` and cancels
/// when the token (or `inner`) says so.
pub struct Cancellable<'a> {
    inner: &'a dyn Progress,
    token: CancelToken,
}

impl<'a> Cancellable<'a> {
    /// `inner` (a bar, or [`NoProgress`]) watched by `token`.
    pub fn new(inner: &'a dyn Progress, token: CancelToken) -> Self {
        Self { inner, token }
    }
}

impl Progress for Cancellable<'_> {
    fn phase(&self, phase: Phase) {
        self.inner.phase(phase);
    }
    fn start(&self, items: Option<u64>, bytes: Option<u64>) {
        self.inner.start(items, bytes);
    }
    fn advance(&self, items: u64, bytes: u64) {
        self.inner.advance(items, bytes);
    }
    fn finish(&self) {
        self.inner.finish();
    }
    fn warning(&self, message: &str) {
        self.inner.warning(message);
    }
    fn is_cancelled(&self) -> bool {
        self.token.is_cancelled() || self.inner.is_cancelled()
    }
}

/// Batches `advance(1, 0)` calls of a serial walk so that renderers are called once per
/// [`Batched::BATCH`] steps.
pub struct Batched<'a> {
    inner: &'a dyn Progress,
    pending: u64,
}

impl<'a> Batched<'a> {
    /// Steps per call to the renderer.
    pub const BATCH: u64 = 1024;

    /// Batches calls to `inner`.
    pub fn new(inner: &'a dyn Progress) -> Self {
        Self { inner, pending: 0 }
    }

    /// One more step.
    pub fn step(&mut self) {
        self.pending += 1;
        if self.pending >= Self::BATCH {
            self.flush();
        }
    }

    /// Reports the steps not yet reported.
    pub fn flush(&mut self) {
        if self.pending > 0 {
            self.inner.advance(self.pending, 0);
            self.pending = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[derive(Default)]
    struct Count(AtomicU64);

    impl Progress for Count {
        fn advance(&self, items: u64, _bytes: u64) {
            self.0.fetch_add(items, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_clone_of_a_token_cancels_the_original() {
        let token = CancelToken::new();
        let clone = token.clone();
        assert!(!token.is_cancelled());
        std::thread::spawn(move || clone.cancel()).join().unwrap();
        assert!(token.is_cancelled());
        assert_eq!(Progress::check_cancelled(&token), Err(Cancelled));
    }

    #[test]
    fn setting_the_flag_cancels_the_token() {
        let token = CancelToken::new();
        let flag = token.flag();
        assert!(!token.is_cancelled());
        flag.store(true, Ordering::SeqCst);
        assert!(token.is_cancelled());
    }

    #[test]
    fn cancellable_forwards_events_and_adds_the_token() {
        let count = Count::default();
        let token = CancelToken::new();
        let p = Cancellable::new(&count, token.clone());
        p.advance(3, 0);
        assert_eq!(count.0.load(Ordering::Relaxed), 3);
        assert!(!p.is_cancelled());
        token.cancel();
        assert!(p.is_cancelled());
        assert!(!NoProgress.is_cancelled());
    }

    #[test]
    fn batched_reports_every_step_once() {
        let count = Count::default();
        let mut b = Batched::new(&count);
        for _ in 0..Batched::BATCH + 5 {
            b.step();
        }
        assert_eq!(count.0.load(Ordering::Relaxed), Batched::BATCH);
        b.flush();
        assert_eq!(count.0.load(Ordering::Relaxed), Batched::BATCH + 5);
    }
}
