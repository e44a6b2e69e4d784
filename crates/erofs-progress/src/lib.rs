//! Renders `erofs-reader` progress with indicatif, on a terminal only. Shared by
//! `dump.erofs-rs` and `fsck.erofs-rs`, so both draw the same bars.

use std::io::IsTerminal;

use erofs_reader::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// An indicatif bar on stderr; hidden when stderr is not a terminal or with `--quiet`.
pub struct Bar(ProgressBar);

impl Bar {
    /// A bar that draws only when `enabled` and stderr is a terminal.
    pub fn new(enabled: bool, what: &'static str) -> Self {
        Self::with_template(
            enabled,
            what,
            "{spinner} {msg} {pos}/{len} inodes [{elapsed}]",
        )
    }

    /// A bar that counts bytes, with rate and ETA.
    pub fn bytes(enabled: bool, what: &'static str) -> Self {
        Self::with_template(
            enabled,
            what,
            "{spinner} {msg} {bytes}/{total_bytes} [{bytes_per_sec}, ETA {eta}]",
        )
    }

    fn with_template(enabled: bool, what: &'static str, template: &str) -> Self {
        let bar = if enabled && std::io::stderr().is_terminal() {
            ProgressBar::new(0)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_message(what);
        Bar(bar)
    }
}

impl Progress for Bar {
    fn start(&self, total: Option<u64>) {
        if let Some(t) = total {
            self.0.set_length(t);
        }
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}
