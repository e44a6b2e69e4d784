//! Removes the visible temporary image when SIGINT, SIGTERM or SIGHUP ends a build. Only
//! needed where `O_TMPFILE` is unavailable: an unnamed file vanishes with the process.

use std::path::PathBuf;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Watches for the signals on a thread: the first one removes `path` and then ends the
/// process as that signal would have.
pub fn remove_on_signal(path: PathBuf) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("mkfs-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let _ = std::fs::remove_file(&path);
                let _ = signal_hook::low_level::emulate_default_handler(sig);
                std::process::exit(128 + sig);
            }
        })?;
    Ok(())
}
