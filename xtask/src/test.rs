//! `cargo xtask test`: everything the project tests, with one honest summary.
//!
//! It installs the packages the tests need (as root; otherwise it fails at once with the
//! exact `apt-get install` line), runs `cargo test --workspace` and then `cargo xtask
//! qemu-test --debug-kernel` (the scenarios on the normal kernel, then the member-lifetime
//! ones on the debug kernel), and ends with passed / failed / skipped counts and the reason for every skip.
//! A test whose peer is missing is reported as skipped here, never as `ok`: the test calls
//! erofs-testkit's `skip_or_fail`, which records the skip in the file named by
//! `EROFS_RS_SKIP_LOG` (and fails the test instead under `CI=true`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::util::{self, Need, fmt_duration};

/// The packages the cargo tests use as peers (the QEMU suite installs its own).
const TEST_NEEDS: &[Need] = &[
    Need {
        package: "erofs-utils",
        probe: "mkfs.erofs",
    },
    Need {
        package: "attr",
        probe: "getfattr",
    },
    Need {
        package: "acl",
        probe: "setfacl",
    },
    Need {
        package: "man-db",
        probe: "man",
    },
    Need {
        package: "groff-base",
        probe: "groff",
    },
    Need {
        package: "zsh",
        probe: "zsh",
    },
    Need {
        package: "cryptsetup-bin",
        probe: "veritysetup",
    },
    Need {
        package: "fsverity",
        probe: "fsverity",
    },
    Need {
        package: "tar",
        probe: "tar",
    },
    Need {
        package: "zstd",
        probe: "zstd",
    },
];

/// Options of `cargo xtask test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Run only `cargo test --workspace`, not the QEMU suite.
    #[arg(long)]
    pub no_qemu: bool,
    /// Leave out the debug kernel (KASAN, lockdep, kmemleak) and the scenarios it runs
    /// (`qemu-test --debug-kernel`); CI never passes this.
    #[arg(long)]
    pub no_debug_kernel: bool,
}

/// Counts of one suite.
#[derive(Debug, Default, PartialEq, Eq)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
    /// `(test, reason)` for every skip.
    skipped: Vec<(String, String)>,
}

/// Adds one `test result: ok. 3 passed; 1 failed; 2 ignored; ...` line to `c`.
fn add_result_line(c: &mut Counts, line: &str) {
    let Some(rest) = line.trim().strip_prefix("test result: ") else {
        return;
    };
    for part in rest.split(';') {
        let words: Vec<&str> = part.split_whitespace().collect();
        // "ok. 3 passed" or "FAILED. 3 passed" or "1 failed".
        let (n, what) = match words.as_slice() {
            [_, n, what, ..] if words[0].ends_with('.') => (*n, *what),
            [n, what, ..] => (*n, *what),
            _ => continue,
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => c.passed += n,
            "failed" => c.failed += n,
            "ignored" => c.ignored += n,
            _ => {}
        }
    }
}

/// Runs `cmd`, echoing its standard output line by line (so progress shows) and handing
/// each line to `each`. Standard error goes straight to the terminal.
fn run_echoing(cmd: &mut Command, mut each: impl FnMut(&str)) -> Result<bool> {
    eprintln!("test: {}", util::show(cmd));
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", util::show(cmd)))?;
    let stdout = child.stdout.take().context("stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        each(&line);
    }
    Ok(child.wait()?.success())
}

/// Reads the skip log: `test<TAB>reason` lines.
fn read_skips(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut v: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(t, r)| (t.to_string(), r.to_string()))
        .collect();
    v.sort();
    v.dedup();
    v
}

/// `cargo xtask test`.
pub fn run(args: &TestArgs) -> Result<()> {
    let t0 = Instant::now();
    util::ensure_packages("the tests", TEST_NEEDS)?;
    let work = util::target_dir().join("xtask-test");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let skip_log = work.join("skipped.tsv");
    let _ = std::fs::remove_file(&skip_log);

    let mut cargo = Counts::default();
    let cargo_bin = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let cargo_ok = run_echoing(
        Command::new(&cargo_bin)
            .current_dir(util::workspace_root())
            .args(["test", "--workspace"])
            .env("EROFS_RS_SKIP_LOG", &skip_log),
        |l| add_result_line(&mut cargo, l),
    )?;
    cargo.skipped = read_skips(&skip_log);
    // A skipped test returned early and cargo counted it as passed.
    cargo.passed = cargo.passed.saturating_sub(cargo.skipped.len() as u64);
    let t_cargo = t0.elapsed();

    let mut qemu = None;
    let mut qemu_ok = true;
    if !args.no_qemu {
        let mut q = Counts::default();
        let exe = std::env::current_exe().context("finding the xtask binary")?;
        let mut cmd = Command::new(exe);
        cmd.arg("qemu-test");
        if !args.no_debug_kernel {
            cmd.arg("--debug-kernel");
        }
        qemu_ok = run_echoing(&mut cmd, |l| {
            let t = l.trim_start();
            if let Some(rest) = t.strip_prefix("SKIP ") {
                let mut words = rest.split_whitespace();
                let name = words.next().unwrap_or("?").to_string();
                // name, then the duration (`1.2 s` or `4 min 05 s`), then the reason.
                let reason = rest
                    .split_once("  ")
                    .map_or(rest, |(_, r)| r)
                    .trim()
                    .to_string();
                q.skipped.push((name, reason));
            } else if let Some(rest) = t.strip_prefix("qemu-test: ") {
                for part in rest.split(',') {
                    let w: Vec<&str> = part.split_whitespace().collect();
                    if let [n, what] = w.as_slice()
                        && let Ok(n) = n.parse::<u64>()
                    {
                        match *what {
                            "passed" => q.passed = n,
                            "failed" => q.failed = n,
                            _ => {}
                        }
                    }
                }
            }
        })?;
        qemu = Some(q);
    }

    println!();
    println!("test summary ({} in all):", fmt_duration(t0.elapsed()));
    let show = |what: &str, c: &Counts, took: Option<std::time::Duration>| {
        println!(
            "  {what}: {} passed, {} failed, {} skipped, {} ignored{}",
            c.passed,
            c.failed,
            c.skipped.len(),
            c.ignored,
            took.map_or(String::new(), |t| format!(" ({})", fmt_duration(t)))
        );
        for (test, why) in &c.skipped {
            println!("    SKIPPED {test}: {why}");
        }
    };
    show("cargo test --workspace", &cargo, Some(t_cargo));
    if let Some(q) = &qemu {
        show("cargo xtask qemu-test", q, None);
    }
    if !cargo_ok || !qemu_ok {
        bail!("tests failed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_add_up() {
        let mut c = Counts::default();
        add_result_line(
            &mut c,
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.21s",
        );
        add_result_line(
            &mut c,
            "test result: FAILED. 7 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        add_result_line(&mut c, "running 3 tests");
        assert_eq!((c.passed, c.failed, c.ignored), (19, 2, 1));
    }
}
