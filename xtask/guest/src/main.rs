//! The guest test program: PID 1 of the QEMU test VM.
//!
//! It mounts the pseudo filesystems, reads the plan from the initramfs, runs each planned guest
//! scenario (see [`scenarios::REGISTRY`]), prints one `@@EROFS RESULT` line per check on the
//! console, dumps the kernel log, and powers the VM off (telling QEMU, through isa-debug-exit,
//! whether every check passed).

// Needed only for the x86 port write and reboot in `sys`, re-exported here; see lib.rs.
#![allow(unsafe_code)]

mod scenarios;

use erofs_guest::plan::{self, CheckResult, Done, MARK, Plan};
use erofs_guest::sys;
use std::io::Write;
use std::time::Instant;

/// Where checks are reported. One per run of a scenario.
pub struct Ctx {
    label: String,
    passed: u32,
    failed: u32,
}

impl Ctx {
    /// Records and prints one check.
    pub fn check(&mut self, check: &str, outcome: Result<String, String>) -> bool {
        let (ok, detail) = match outcome {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        if ok {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        let r = CheckResult {
            run: self.label.clone(),
            check: check.into(),
            ok,
            detail,
        };
        emit("RESULT", &serde_json::to_string(&r).unwrap_or_default());
        ok
    }

    /// Records a check from a result carrying a value; returns the value if it passed.
    pub fn check_value<T: std::fmt::Debug>(
        &mut self,
        check: &str,
        r: Result<T, String>,
    ) -> Option<T> {
        match r {
            Ok(v) => {
                self.check(check, Ok(format!("{v:?}")));
                Some(v)
            }
            Err(e) => {
                self.check(check, Err(e));
                None
            }
        }
    }

    /// Prints a free-form note (shown by the host on failure).
    pub fn note(&self, text: &str) {
        for l in text.lines() {
            emit("NOTE", &format!("[{}] {l}", self.label));
        }
    }
}

/// Prints one protocol line with a single write(2), so console output stays line-atomic.
pub fn emit(tag: &str, text: &str) {
    let line = format!("{MARK} {tag} {text}\n");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

fn setup() {
    for (src, dir, fs) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("tmpfs", "/tmp", "tmpfs"),
    ] {
        let _ = std::fs::create_dir_all(dir);
        if let Err(e) = sys::mount(src, dir, fs, 0, "") {
            emit("NOTE", &format!("mount {fs} on {dir}: {e}"));
        }
    }
}

/// On a kernel with kmemleak (the debug kernel): scan, and fail on unreferenced objects whose
/// allocation backtrace passes through EROFS. Others are only noted: kmemleak has false
/// positives outside our code, and the debug kernel must not fail on them.
fn kmemleak(total: &mut Done) {
    let path = "/sys/kernel/debug/kmemleak";
    let _ = std::fs::create_dir_all("/sys/kernel/debug");
    let _ = sys::mount("debugfs", "/sys/kernel/debug", "debugfs", 0, "");
    if !std::path::Path::new(path).exists() {
        return;
    }
    // An object is reported once a scan finds it unreferenced and older than 5 s; two scans,
    // as the kmemleak documentation advises against transient false positives.
    std::thread::sleep(std::time::Duration::from_secs(5));
    for _ in 0..2 {
        let _ = std::fs::write(path, b"scan");
    }
    let report = std::fs::read_to_string(path).unwrap_or_default();
    let leaks: Vec<&str> = report.split("unreferenced object").skip(1).collect();
    let ours: Vec<&&str> = leaks.iter().filter(|l| l.contains("erofs")).collect();
    let mut ctx = Ctx {
        label: "kmemleak".into(),
        passed: 0,
        failed: 0,
    };
    if !leaks.is_empty() {
        ctx.note(&format!("kmemleak report:\n{report}"));
    }
    ctx.check(
        "no kmemleak report through erofs",
        if ours.is_empty() {
            Ok(format!(
                "{} unreferenced object(s), none allocated through erofs",
                leaks.len()
            ))
        } else {
            Err(format!(
                "{} unreferenced object(s) allocated through erofs",
                ours.len()
            ))
        },
    );
    total.passed += ctx.passed;
    total.failed += ctx.failed;
}

fn main() {
    let t0 = Instant::now();
    let pid1 = std::process::id() == 1;
    if pid1 {
        setup();
    }
    emit(
        "ALIVE",
        &format!("erofs-guest {}", env!("CARGO_PKG_VERSION")),
    );
    let mut total = Done::default();
    match std::fs::read(plan::PLAN_PATH)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice::<Plan>(&b).map_err(|e| e.to_string()))
    {
        Ok(p) => {
            for run in &p.runs {
                let mut ctx = Ctx {
                    label: run.label.clone(),
                    passed: 0,
                    failed: 0,
                };
                let t = Instant::now();
                match scenarios::find(&run.scenario) {
                    Some(f) => {
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            f(&mut ctx, &run.params)
                        }));
                        match r {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => {
                                ctx.check("scenario", Err(format!("{e:#}")));
                            }
                            Err(_) => {
                                ctx.check("scenario", Err("guest scenario panicked".into()));
                            }
                        }
                    }
                    None => {
                        ctx.check(
                            "scenario",
                            Err(format!("no guest scenario named {:?}", run.scenario)),
                        );
                    }
                }
                ctx.note(&format!("run took {:.1} s", t.elapsed().as_secs_f64()));
                total.passed += ctx.passed;
                total.failed += ctx.failed;
            }
        }
        Err(e) => {
            let mut ctx = Ctx {
                label: "guest".into(),
                passed: 0,
                failed: 0,
            };
            ctx.check("plan", Err(format!("cannot read {}: {e}", plan::PLAN_PATH)));
            total.failed += 1;
        }
    }
    if pid1 {
        kmemleak(&mut total);
    }
    match sys::kernel_log() {
        Ok(log) => {
            for l in log.lines() {
                emit("DMESG", l);
            }
        }
        Err(e) => emit("NOTE", &format!("klogctl: {e}")),
    }
    emit(
        "NOTE",
        &format!("guest ran {:.1} s", t0.elapsed().as_secs_f64()),
    );
    emit("DONE", &serde_json::to_string(&total).unwrap_or_default());
    if pid1 {
        sys::sync();
        sys::drain_stdout();
        sys::qemu_debug_exit(if total.failed == 0 { 0 } else { 1 });
        sys::power_off();
        // PID 1 must not exit.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    std::process::exit(if total.failed == 0 { 0 } else { 1 });
}
