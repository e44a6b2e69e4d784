//! Removes the visible temporary image when SIGINT, SIGTERM or SIGHUP ends a build. Only
//! needed where `O_TMPFILE` is unavailable: an unnamed file vanishes with the process.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// The temporary file to remove if a signal arrives; set once it exists.
#[derive(Clone, Default)]
pub struct Cleanup(Arc<Mutex<Option<PathBuf>>>);

impl Cleanup {
    /// Watches for the signals on a thread, from now on (before the temporary file exists,
    /// so that no signal can slip in between): the first one removes the file, if any, and
    /// then ends the process as that signal would have.
    pub fn install() -> std::io::Result<Self> {
        let cleanup = Self::default();
        let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let pending = cleanup.0.clone();
        std::thread::Builder::new()
            .name("mkfs-signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    let path = pending.lock().unwrap_or_else(|e| e.into_inner()).take();
                    if let Some(path) = path {
                        let _ = std::fs::remove_file(path);
                    }
                    let _ = signal_hook::low_level::emulate_default_handler(sig);
                    std::process::exit(128 + sig);
                }
            })?;
        Ok(cleanup)
    }

    /// The temporary file that now exists.
    pub fn remove_on_signal(&self, path: PathBuf) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(path);
    }
}
