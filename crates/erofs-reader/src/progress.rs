//! Progress reporting for long operations. Libraries never print; binaries implement
//! [`Progress`] (e.g. with indicatif) and pass it in.

/// Receives progress events. Every method has a no-op default.
pub trait Progress: Send + Sync {
    /// The operation starts; `total` is the expected number of steps (inodes), if known.
    fn start(&self, _total: Option<u64>) {}
    /// `n` more steps are done.
    fn advance(&self, _n: u64) {}
    /// The operation ended.
    fn finish(&self) {}
}

/// Batches `advance(1)` calls so that renderers are called once per `BATCH` steps.
pub(crate) struct Batched<'a> {
    inner: &'a dyn Progress,
    pending: u64,
}

impl<'a> Batched<'a> {
    const BATCH: u64 = 1024;

    pub(crate) fn new(inner: &'a dyn Progress) -> Self {
        Self { inner, pending: 0 }
    }

    pub(crate) fn step(&mut self) {
        self.pending += 1;
        if self.pending >= Self::BATCH {
            self.inner.advance(self.pending);
            self.pending = 0;
        }
    }

    pub(crate) fn flush(&mut self) {
        if self.pending > 0 {
            self.inner.advance(self.pending);
            self.pending = 0;
        }
    }
}

/// A [`Progress`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
