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

/// A [`Progress`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
