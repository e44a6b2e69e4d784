//! Small helpers shared by the xtask subcommands: paths, processes, packages, timing.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in a workspace")
        .to_path_buf()
}

/// `${EROFS_RS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/erofs-rs}`: outside the clone, so that
/// later runs and CI reuse the unpacked kernel source and its build.
pub fn cache_dir() -> Result<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let dir = if let Some(d) = env("EROFS_RS_CACHE") {
        PathBuf::from(d)
    } else if let Some(x) = env("XDG_CACHE_HOME") {
        PathBuf::from(x).join("erofs-rs")
    } else if let Some(h) = env("HOME") {
        PathBuf::from(h).join(".cache/erofs-rs")
    } else {
        bail!("cannot find a cache directory: set EROFS_RS_CACHE or HOME");
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The cargo target directory (respects `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(d) => {
            let p = PathBuf::from(d);
            if p.is_absolute() {
                p
            } else {
                std::env::current_dir().map(|c| c.join(&p)).unwrap_or(p)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// Runs a command to completion and fails with the command line if it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", show(cmd)))?;
    if !status.success() {
        bail!("{} failed: {status}", show(cmd));
    }
    Ok(())
}

/// A command line for messages.
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Whether a program is on PATH.
pub fn have_program(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            let f = d.join(name);
            f.is_file()
                && std::fs::metadata(&f).is_ok_and(|m| {
                    use std::os::unix::fs::PermissionsExt;
                    m.permissions().mode() & 0o111 != 0
                })
        })
    })
}

/// Whether we run as root (effective uid 0), read from /proc so no unsafe is needed.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Something the harness needs from the host, and the Debian package that provides it.
pub struct Need {
    /// Debian package name.
    pub package: &'static str,
    /// A program on PATH or an absolute path whose presence proves the package is there.
    pub probe: &'static str,
}

impl Need {
    fn present(&self) -> bool {
        if self.probe.starts_with('/') {
            Path::new(self.probe).exists()
        } else {
            have_program(self.probe)
        }
    }
}

/// Makes sure every need is met: installs the missing packages with apt-get when running as
/// root, otherwise fails and says exactly what to install.
pub fn ensure_packages(what: &str, needs: &[Need]) -> Result<()> {
    let mut missing: Vec<&str> = needs
        .iter()
        .filter(|n| !n.present())
        .map(|n| n.package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() || !have_program("apt-get") {
        bail!(
            "{what} needs packages that are missing: {list}\n\
             install them with: sudo apt-get install --no-install-recommends {list}"
        );
    }
    eprintln!("xtask: {what}: installing {list} with apt-get");
    apt_install(&missing)?;
    let still: Vec<&str> = needs
        .iter()
        .filter(|n| !n.present())
        .map(|n| n.probe)
        .collect();
    if !still.is_empty() {
        bail!(
            "after installing {list}, still missing: {}",
            still.join(" ")
        );
    }
    Ok(())
}

/// `apt-get install -y --no-install-recommends PACKAGES`, with one `apt-get update` and retry
/// if the first attempt fails (stale package lists on a fresh machine).
pub fn apt_install(missing: &[&str]) -> Result<()> {
    let list = missing.join(" ");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    if !install().is_ok_and(|s| s.success()) {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        let status = install().context("running apt-get install")?;
        if !status.success() {
            bail!("apt-get install {list} failed: {status}");
        }
    }
    Ok(())
}

/// `12.3 s` or `4 min 05 s`.
pub fn fmt_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{} min {:02} s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

/// Hex encoding of a digest.
pub use erofs_verity::to_hex as hex;

/// Number of CPUs to build with.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Prints `label: still running, ELAPSED[, detail]` every 30 s until dropped, so that a long
/// step (a kernel build, a TCG boot) never looks hung.
pub struct Heartbeat {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often [`Heartbeat`] speaks.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

impl Heartbeat {
    /// Starts the heartbeat; `detail` adds a progress figure when it has one.
    pub fn start(label: String, detail: impl Fn() -> Option<String> + Send + 'static) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t0 = std::time::Instant::now();
        let thread = std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(HEARTBEAT) {
                match detail() {
                    Some(d) => eprintln!(
                        "{label}: still running, {} elapsed, {d}",
                        fmt_duration(t0.elapsed())
                    ),
                    None => eprintln!(
                        "{label}: still running, {} elapsed",
                        fmt_duration(t0.elapsed())
                    ),
                }
            }
        });
        Self {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Files under `dir` whose name ends with `suffix` (bounded walk, for progress figures).
pub fn count_files(dir: &Path, suffix: &str) -> u64 {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() && e.file_name().to_string_lossy().ends_with(suffix) => n += 1,
                _ => {}
            }
        }
    }
    n
}
