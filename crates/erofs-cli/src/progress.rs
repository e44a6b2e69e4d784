//! The one progress bar of the three tools: an [`erofs_task::Progress`] drawn with indicatif
//! on stderr, only when stderr is a terminal.
//!
//! The bar takes its shape from what the operation announces: a spinner with a running
//! count until a total is known, then a count of items (`start(Some(n), None)`: inodes,
//! images) or of bytes with rate and ETA (`start(_, Some(bytes))`: a build's data, hashed
//! fingerprints).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use erofs_task::{Phase, Progress};
use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar on stderr that also prints warnings (unless disabled). Hidden when
/// disabled (`--quiet`, `--json`) or when stderr is not a terminal.
pub struct Bar {
    bar: ProgressBar,
    /// Warnings and phase timings are printed only when enabled.
    enabled: bool,
    /// With [`Bar::print_phases`]: when the run started.
    phases_since: Option<Instant>,
    state: Mutex<State>,
}

struct State {
    /// What is being done ("checking", "scanning"...).
    what: &'static str,
    /// What is counted ("inodes", "entries", "files"...).
    unit: &'static str,
    /// Items done and the total, when the bar counts bytes and names items in its message.
    items: u64,
    items_total: Option<u64>,
    by_bytes: bool,
}

impl Bar {
    /// A bar for `what` that counts `unit`s (inodes, images...), drawn only when `enabled`
    /// and stderr is a terminal.
    pub fn new(enabled: bool, what: &'static str, unit: &'static str) -> Self {
        let bar = if enabled && std::io::stderr().is_terminal() {
            let b = ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(120));
            b
        } else {
            ProgressBar::hidden()
        };
        let this = Self {
            bar,
            enabled,
            phases_since: None,
            state: Mutex::new(State {
                what,
                unit,
                items: 0,
                items_total: None,
                by_bytes: false,
            }),
        };
        this.restyle(&this.lock(), "{spinner} {msg} [{elapsed}]");
        this
    }

    /// Also prints, on stderr, when each phase of a build starts and the CPU time used so
    /// far (`MKFS_EROFS_RS_TIMINGS`), so that the serial share of a build can be read.
    pub fn print_phases(mut self, since: Instant) -> Self {
        self.phases_since = Some(since);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn restyle(&self, s: &State, template: &str) {
        let template = template.replace("{unit}", s.unit);
        self.bar.set_style(
            ProgressStyle::with_template(&template)
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        self.set_message(s);
    }

    fn set_message(&self, s: &State) {
        let msg = match (s.by_bytes, s.items_total) {
            (true, Some(total)) => format!("{} {}/{total} {}", s.what, s.items, s.unit),
            (false, None) if s.items > 0 => format!("{}: {} {}", s.what, s.items, s.unit),
            _ => s.what.to_string(),
        };
        self.bar.set_message(msg);
    }
}

impl Progress for Bar {
    fn phase(&self, phase: Phase) {
        if let Some(t) = self.phases_since {
            eprintln!(
                "{:8.3}s {:>7} cpu {phase:?}",
                t.elapsed().as_secs_f64(),
                cpu_seconds().map_or("?".into(), |c| format!("{c:.2}s"))
            );
        }
        let mut s = self.lock();
        match phase {
            Phase::Scan => (s.what, s.unit) = ("scanning", "entries"),
            Phase::Plan => s.what = "planning",
            Phase::Data => s.what = "writing",
            _ => return,
        }
        self.set_message(&s);
    }

    fn start(&self, items: Option<u64>, bytes: Option<u64>) {
        let mut s = self.lock();
        s.items = 0;
        s.items_total = items;
        self.bar.set_position(0);
        if let Some(b) = bytes {
            s.by_bytes = true;
            if s.unit == "entries" {
                s.unit = "files";
            }
            self.bar.set_length(b);
            self.restyle(
                &s,
                "{spinner} {msg} {bar:30} {bytes}/{total_bytes} [{binary_bytes_per_sec}, ETA {eta}]",
            );
        } else if let Some(n) = items {
            s.by_bytes = false;
            self.bar.set_length(n);
            self.restyle(&s, "{spinner} {msg} {pos}/{len} {unit} [{elapsed}]");
        }
    }

    fn advance(&self, items: u64, bytes: u64) {
        let mut s = self.lock();
        s.items += items;
        if s.by_bytes {
            self.bar.inc(bytes);
        } else {
            self.bar.inc(items);
        }
        if items > 0 {
            self.set_message(&s);
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }

    fn warning(&self, message: &str) {
        if !self.enabled {
            return;
        }
        if self.bar.is_hidden() {
            eprintln!("warning: {message}");
        } else {
            self.bar.println(format!("warning: {message}"));
        }
    }
}

/// User plus system CPU time of this process so far, from /proc (for timings only).
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_whitespace().skip(11);
    let user: f64 = f.next()?.parse().ok()?;
    let sys: f64 = f.next()?.parse().ok()?;
    Some((user + sys) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hidden_bar_counts_items_then_bytes() {
        let bar = Bar::new(false, "checking", "inodes");
        bar.start(Some(10), None);
        bar.advance(4, 0);
        assert_eq!(bar.bar.position(), 4);
        assert_eq!(bar.bar.length(), Some(10));
        bar.phase(Phase::Data);
        bar.start(Some(2), Some(1000));
        bar.advance(1, 600);
        assert_eq!(bar.bar.position(), 600);
        assert_eq!(bar.lock().items, 1);
        assert_eq!(bar.bar.message(), "writing 1/2 inodes");
        bar.finish();
    }

    #[test]
    fn a_scan_counts_entries_and_its_data_files() {
        let bar = Bar::new(false, "building", "files");
        bar.phase(Phase::Scan);
        bar.advance(4096, 0);
        assert_eq!(bar.bar.message(), "scanning: 4096 entries");
        bar.phase(Phase::Plan);
        bar.start(Some(3), Some(30));
        bar.phase(Phase::Data);
        bar.advance(3, 30);
        assert_eq!(bar.bar.message(), "writing 3/3 files");
        assert_eq!(bar.bar.position(), 30);
    }
}
