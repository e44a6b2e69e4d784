//! Progress reporting and cancellation for long operations: erofs-task's trait, shared with
//! the builder and the binaries. Libraries never print; binaries implement [`Progress`]
//! (e.g. with indicatif) and pass it in.

pub(crate) use erofs_task::Batched;
pub use erofs_task::{CancelToken, Cancellable, Cancelled, NoProgress, Progress};
