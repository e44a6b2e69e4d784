//! `cargo xtask qemu-test`: builds the kernel (or takes one), the test images, the guest
//! program and an initramfs per scenario, boots QEMU and judges the results.

use crate::initramfs::Cpio;
use crate::kernel::{self, KernelArgs, Variant};
use crate::mkfs::{Flavour, Mkfs};
use crate::qemu::{self, Accel, AccelChoice, Machine};
use crate::scenarios::{self, Boot, Env, Expected, Prepared};
use crate::util::{self, fmt_duration};
use anyhow::{Context, Result, bail};
use erofs_guest::plan::{self, CheckResult, Done, MARK, Plan};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Options of `cargo xtask qemu-test`.
#[derive(clap::Args, Debug)]
pub struct QemuTestArgs {
    /// Boot this bzImage instead of building one (--stock then only labels the kernel).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Build and boot the kernel without the patch series.
    #[arg(long)]
    pub stock: bool,
    /// Which mkfs builds the images.
    #[arg(long, value_enum, default_value_t = Flavour::Ours)]
    pub mkfs: Flavour,
    /// Accelerator.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Per-boot timeout in seconds (default: the scenario's).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// List the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// After the selected scenarios, build the debug kernel (KASAN, lockdep, kmemleak, DEBUG_VM;
    /// `cargo xtask kernel --debug`) and run the selected `share-*` scenarios on it again,
    /// with 4 times the timeouts; with no scenario named, only the member-lifetime ones
    /// (`DEBUG_DEFAULT`). Any splat fails.
    #[arg(long)]
    pub debug_kernel: bool,
    /// Also print the guest log of passing scenarios.
    #[arg(long, short)]
    pub verbose: bool,
    /// Scenarios to run: names, or prefixes ending in '*' (default: all).
    pub scenarios: Vec<String>,
}

/// What `--debug-kernel` runs on the debug kernel when no scenario is named (as in `cargo
/// xtask test`): the scenarios that unmount, detach, rebind or churn members while others are
/// read, where KASAN and lockdep can see a member's lifetime end under a reader, plus the
/// domain and overlay paths. The other `share-*` scenarios check sharing rules and layouts
/// that the normal kernel already covers, and would double the debug kernel's time
/// (docs/kernel.md, "Measured").
pub const DEBUG_DEFAULT: &[&str] = &[
    "share-domains",
    "share-overlay",
    "share-umount",
    "share-churn",
    "share-rebind",
    "share-window",
    "share-dio-window",
    "share-last-put",
    "share-stress",
];

/// Scenarios that need the debug kernel's test-only knobs (`xtask/kernel/debug-patches`):
/// skipped on the normal kernel, run by `--debug-kernel`.
pub const DEBUG_ONLY: &[&str] = &["share-window", "share-dio-window", "share-last-put"];

/// The verdict on one scenario.
struct Verdict {
    name: String,
    passed: bool,
    skipped: Option<String>,
    checks: (u32, u32),
    took: Duration,
}

/// `cargo xtask qemu-test`.
pub fn run(args: &QemuTestArgs) -> Result<()> {
    let all = scenarios::all();
    if args.list {
        for s in &all {
            println!("{:<16} {}", s.name, s.about);
        }
        return Ok(());
    }
    let selected: Vec<&scenarios::Scenario> = if args.scenarios.is_empty() {
        all.iter().collect()
    } else {
        let mut v = Vec::new();
        for pat in &args.scenarios {
            let matched: Vec<_> = all
                .iter()
                .filter(|s| match pat.strip_suffix('*') {
                    Some(prefix) => s.name.starts_with(prefix),
                    None => s.name == pat,
                })
                .collect();
            if matched.is_empty() {
                bail!("no scenario {pat:?}; see cargo xtask qemu-test --list");
            }
            v.extend(matched);
        }
        v
    };

    let t0 = Instant::now();
    util::ensure_packages("qemu-test", qemu::QEMU_NEEDS)?;
    let (bzimage, variant, patches) = match &args.kernel {
        Some(k) => (
            k.clone(),
            if args.stock {
                Variant::Stock
            } else {
                Variant::Patched
            },
            Vec::new(),
        ),
        None => {
            let b = kernel::build(&KernelArgs {
                stock: args.stock,
                ..Default::default()
            })?;
            (b.bzimage, b.variant, b.patches)
        }
    };
    let t_kernel = t0.elapsed();
    let mkfs = Mkfs::prepare(args.mkfs)?;
    let guest = build_guest()?;
    let mut busybox = std::fs::read("/bin/busybox").context("reading /bin/busybox")?;
    if qemu::elf_is_dynamic(&busybox) {
        // Debian's plain `busybox` package also provides /bin/busybox, dynamically linked.
        if !util::is_root() {
            bail!(
                "/bin/busybox is dynamically linked; install busybox-static (sudo apt-get install busybox-static)"
            );
        }
        eprintln!("qemu-test: /bin/busybox is dynamically linked, installing busybox-static");
        util::apt_install(&["busybox-static"])?;
        busybox = std::fs::read("/bin/busybox").context("reading /bin/busybox")?;
        if qemu::elf_is_dynamic(&busybox) {
            bail!("/bin/busybox is still dynamically linked after installing busybox-static");
        }
    }
    let t_tools = t0.elapsed() - t_kernel;

    let work = util::cache_dir()?.join("qemu-test");
    // One run at a time per cache: the work directory is replaced by each run.
    let lock_path = util::cache_dir()?.join("qemu-test.lock");
    let _lock = erofs_guest::sys::lock_exclusive(&lock_path, || {
        eprintln!(
            "qemu-test: waiting for another qemu-test run using {}",
            work.display()
        )
    })
    .with_context(|| format!("locking {}", lock_path.display()))?;
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("cleaning {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    // Boot a copy, so a kernel rebuilt meanwhile (another checkout) cannot change under us.
    let kernel_copy = work.join("bzImage");
    std::fs::copy(&bzimage, &kernel_copy)
        .with_context(|| format!("copying {}", bzimage.display()))?;
    let shown_kernel = bzimage.clone();
    let bzimage = kernel_copy;
    let base = Base { guest, busybox };
    let probe = work.join("probe.cpio");
    std::fs::write(&probe, base.initramfs(&Plan::default(), &[]))?;
    let accel = qemu::choose_accel(args.accel, &bzimage, &probe, &work);
    eprintln!(
        "qemu-test: kernel {} ({variant:?}{}), mkfs {}, {accel:?}; kernel ready in {}, tools in {}",
        shown_kernel.display(),
        if patches.is_empty() {
            String::new()
        } else {
            format!(", {} patch(es)", patches.len())
        },
        mkfs.name(),
        fmt_duration(t_kernel),
        fmt_duration(t_tools)
    );

    let mut env = Env::new(work.clone(), mkfs, variant);
    let mut verdicts = Vec::new();
    // An explicit --kernel may be a debug kernel; otherwise the normal one lacks the knobs,
    // and a DEBUG_ONLY scenario is skipped there, or left to the debug kernel's runs.
    let knobs = args.kernel.is_some();
    let mut runs: Vec<(&scenarios::Scenario, PathBuf, &str, u64)> = selected
        .iter()
        .filter(|s| knobs || !args.debug_kernel || !DEBUG_ONLY.contains(&s.name))
        .map(|s| (*s, bzimage.clone(), "", 1))
        .collect();
    let mut t_debug_kernel = None;
    if args.debug_kernel {
        let td = Instant::now();
        let b = kernel::build(&KernelArgs {
            stock: args.stock,
            debug: true,
            ..Default::default()
        })?;
        let copy = work.join("bzImage-debug");
        std::fs::copy(&b.bzimage, &copy)
            .with_context(|| format!("copying {}", b.bzimage.display()))?;
        t_debug_kernel = Some(td.elapsed());
        eprintln!(
            "qemu-test: debug kernel {} ready in {}",
            b.bzimage.display(),
            fmt_duration(td.elapsed())
        );
        let named = !args.scenarios.is_empty();
        runs.extend(
            selected
                .iter()
                .filter(|s| {
                    s.name.starts_with("share-") && (named || DEBUG_DEFAULT.contains(&s.name))
                })
                .map(|s| (*s, copy.clone(), "@debug", 4)),
        );
    }
    for (s, kernel, suffix, slow) in runs {
        let t = Instant::now();
        let name = format!("{}{suffix}", s.name);
        let prepared = if suffix.is_empty() && !knobs && DEBUG_ONLY.contains(&s.name) {
            Ok(Prepared::Skip(
                "needs the debug kernel's test knob (runs with --debug-kernel)".into(),
            ))
        } else {
            (s.prepare)(&mut env)
        };
        let v = match prepared {
            Ok(Prepared::Skip(why)) => Verdict {
                name: name.clone(),
                passed: true,
                skipped: Some(why),
                checks: (0, 0),
                took: t.elapsed(),
            },
            Ok(Prepared::Boot(mut boot)) => {
                boot.timeout_secs *= slow;
                run_boot(&name, &boot, &base, &kernel, accel, args, &work, t)?
            }
            Err(e) => {
                println!("FAIL {name}: preparing the scenario: {e:#}");
                Verdict {
                    name: name.clone(),
                    passed: false,
                    skipped: None,
                    checks: (0, 1),
                    took: t.elapsed(),
                }
            }
        };
        verdicts.push(v);
    }

    println!();
    println!(
        "qemu-test summary ({accel:?}, {variant:?} kernel, {}):",
        env.mkfs.name()
    );
    let mut failed = 0;
    for v in &verdicts {
        let status = match (&v.skipped, v.passed) {
            (Some(_), _) => "SKIP",
            (None, true) => "PASS",
            (None, false) => "FAIL",
        };
        if !v.passed {
            failed += 1;
        }
        let extra = v
            .skipped
            .clone()
            .unwrap_or_else(|| format!("{} passed, {} failed checks", v.checks.0, v.checks.1));
        println!(
            "  {status} {:<24} {:>9}  {extra}",
            v.name,
            fmt_duration(v.took)
        );
    }
    match t_debug_kernel {
        Some(d) => println!(
            "total {} (kernel {}, debug kernel {})",
            fmt_duration(t0.elapsed()),
            fmt_duration(t_kernel),
            fmt_duration(d)
        ),
        None => println!(
            "total {} (kernel {})",
            fmt_duration(t0.elapsed()),
            fmt_duration(t_kernel)
        ),
    }
    // The plain closing line that CI runners recognise: scenarios, not individual checks.
    let skipped = verdicts.iter().filter(|v| v.skipped.is_some()).count();
    let line = format!(
        "qemu-test: {} passed, {failed} failed",
        verdicts.len() - failed - skipped
    );
    if skipped > 0 {
        println!("{line}, {skipped} skipped");
    } else {
        println!("{line}");
    }
    if failed > 0 {
        bail!("{failed} scenario(s) failed; logs in {}", work.display());
    }
    Ok(())
}

/// Builds the guest program statically (separate target dir, so the flags do not invalidate
/// the normal build).
fn build_guest() -> Result<Vec<u8>> {
    let target = "x86_64-unknown-linux-gnu";
    let dir = util::target_dir().join("guest-static");
    eprintln!("qemu-test: building the static guest program");
    util::run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "-p", "erofs-guest", "--bin", "erofs-guest", "--target", target])
            .env("CARGO_TARGET_DIR", &dir)
            .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
            .env_remove("RUSTFLAGS")
            .current_dir(util::workspace_root()),
    )
    .context("building the guest program (needs the x86_64-unknown-linux-gnu target and glibc's static libraries from libc6-dev)")?;
    let bin = dir.join(target).join("release/erofs-guest");
    let bytes = std::fs::read(&bin).with_context(|| bin.display().to_string())?;
    if qemu::elf_is_dynamic(&bytes) {
        bail!("{} is not statically linked", bin.display());
    }
    Ok(bytes)
}

/// What every initramfs holds.
struct Base {
    guest: Vec<u8>,
    busybox: Vec<u8>,
}

impl Base {
    fn initramfs(&self, plan: &Plan, files: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut c = Cpio::default();
        for d in [
            "dev", "proc", "sys", "tmp", "mnt", "bin", "sbin", "data", "carrier",
        ] {
            c.dir(d);
        }
        c.chr("dev/console", 5, 1);
        c.chr("dev/null", 1, 3);
        c.file("init", 0o755, &self.guest);
        c.file("bin/busybox", 0o755, &self.busybox);
        for tool in [
            "sh",
            "ls",
            "cat",
            "mount",
            "umount",
            "dmesg",
            "sha256sum",
            "stat",
            "getfattr",
        ] {
            c.symlink(&format!("bin/{tool}"), "busybox");
        }
        let plan_bytes = serde_json::to_vec_pretty(plan).unwrap_or_default();
        c.file(plan::PLAN_PATH.trim_start_matches('/'), 0o644, &plan_bytes);
        let mut dirs = std::collections::BTreeSet::new();
        for (p, _) in files {
            let rel = p.trim_start_matches('/');
            let mut acc = String::new();
            let parts: Vec<&str> = rel.split('/').collect();
            for part in &parts[..parts.len() - 1] {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(part);
                if dirs.insert(acc.clone())
                    && !["data", "carrier", "tmp", "mnt"].contains(&acc.as_str())
                {
                    c.dir(&acc);
                }
            }
        }
        for (p, b) in files {
            c.file(p.trim_start_matches('/'), 0o644, b);
        }
        c.finish()
    }
}

/// A parsed guest log.
#[derive(Default)]
struct GuestLog {
    alive: bool,
    results: Vec<CheckResult>,
    notes: Vec<String>,
    dmesg: Vec<String>,
    done: Option<Done>,
}

fn parse(serial: &str) -> GuestLog {
    let mut g = GuestLog::default();
    for line in serial.lines() {
        let Some(pos) = line.find(MARK) else { continue };
        let rest = &line[pos + MARK.len()..].trim_start();
        let (tag, payload) = rest.split_once(' ').unwrap_or((rest, ""));
        match tag {
            "ALIVE" => g.alive = true,
            "RESULT" => match serde_json::from_str::<CheckResult>(payload) {
                Ok(r) => g.results.push(r),
                Err(e) => g
                    .notes
                    .push(format!("unparsable result line ({e}): {payload}")),
            },
            "NOTE" => g.notes.push(payload.to_string()),
            "DMESG" => g.dmesg.push(payload.to_string()),
            "DONE" => g.done = serde_json::from_str(payload).ok(),
            _ => {}
        }
    }
    g
}

/// Kernel log lines that fail a scenario unless it expects them: crashes always, and any
/// error-level line.
fn bad_kernel_lines(g: &GuestLog, serial: &str, expected: &Expected) -> Vec<String> {
    const CRASH: &[&str] = &[
        "BUG",
        "WARNING:",
        "Oops",
        "Kernel panic",
        "general protection fault",
        "Call Trace",
        "UBSAN",
        "KASAN",
        "RIP:",
        "list_add corruption",
        "INFO: task",
    ];
    // Error-level lines a healthy TCG boot prints.
    const BOOT_NOISE: &[&str] = &["MP-BIOS bug: 8254 timer not connected to IO-APIC"];
    let is_crash = |l: &str| CRASH.iter().any(|c| l.contains(c));
    let mut bad = Vec::new();
    for l in &g.dmesg {
        let level = l
            .strip_prefix('<')
            .and_then(|r| r.split_once('>'))
            .and_then(|(n, _)| n.parse::<u32>().ok())
            .unwrap_or(6)
            & 7;
        if is_crash(l) {
            if !expected.crashes.iter().any(|e| l.contains(e.as_str())) {
                bad.push(format!("kernel crash line: {l}"));
            }
        } else if level <= 3
            && !expected.errors.iter().any(|e| l.contains(e.as_str()))
            && !BOOT_NOISE.iter().any(|n| l.contains(n))
        {
            bad.push(format!("unexpected kernel error: {l}"));
        }
    }
    // If the guest died before dumping the log, the console still shows the crash.
    if g.done.is_none() {
        for l in serial.lines() {
            if !l.contains(MARK)
                && is_crash(l)
                && !expected.crashes.iter().any(|e| l.contains(e.as_str()))
            {
                bad.push(format!("console: {l}"));
            }
        }
    }
    bad
}

#[allow(clippy::too_many_arguments)]
fn run_boot(
    name: &str,
    boot: &Boot,
    base: &Base,
    kernel: &Path,
    accel: Accel,
    args: &QemuTestArgs,
    work: &Path,
    t: Instant,
) -> Result<Verdict> {
    let plan = Plan {
        runs: boot.runs.clone(),
    };
    let dir = work.join("runs").join(name);
    std::fs::create_dir_all(&dir)?;
    let initrd = dir.join("initramfs.cpio");
    std::fs::write(&initrd, base.initramfs(&plan, &boot.files))?;
    let log = dir.join("serial.log");
    let timeout = Duration::from_secs(args.timeout.unwrap_or(boot.timeout_secs));
    let prep = t.elapsed();
    let m = Machine {
        kernel,
        initrd: &initrd,
        disks: &boot.disks,
        disk_options: &boot.disk_options,
        memory_mib: boot.memory_mib,
        timeout,
        accel,
        log: &log,
        append: &boot.append,
    };
    std::fs::write(dir.join("qemu-command"), util::show(&m.command()))?;
    let mut out = m.boot()?;
    if out.stalled {
        eprintln!("qemu: booting it again, once (the log of the hung boot is overwritten)");
        out = m.boot()?;
    }
    let g = parse(&out.serial);

    let mut problems = Vec::new();
    if out.timed_out {
        problems.push(format!("timed out after {}", fmt_duration(timeout)));
    }
    if !g.alive {
        problems.push("the guest program never started".into());
    }
    match &g.done {
        None => problems.push("the guest did not finish (crash, panic or timeout)".into()),
        Some(d) => {
            if d.failed > 0 {
                problems.push(format!("{} check(s) failed", d.failed));
            }
            if out.status != Some(if d.failed == 0 { 1 } else { 3 }) {
                problems.push(format!(
                    "QEMU exit status {:?} does not match the guest's verdict",
                    out.status
                ));
            }
        }
    }
    if g.results.is_empty() && g.done.is_some() {
        problems.push("no checks ran".into());
    }
    let bad = bad_kernel_lines(&g, &out.serial, &boot.expected);
    if !bad.is_empty() {
        problems.push(format!("{} unexpected kernel message(s)", bad.len()));
    }
    let passed = problems.is_empty();
    let failed_checks: Vec<&CheckResult> = g.results.iter().filter(|r| !r.ok).collect();
    let npass = g.results.len() - failed_checks.len();

    println!(
        "{} {name}: {} checks passed, {} failed; prepare {}, boot+run {} ({} disk(s))",
        if passed { "PASS" } else { "FAIL" },
        npass,
        failed_checks.len(),
        fmt_duration(prep),
        fmt_duration(out.took),
        boot.disks.len()
    );
    if !passed || args.verbose {
        for p in &problems {
            println!("  problem: {p}");
        }
        for r in &g.results {
            if !r.ok || args.verbose {
                println!(
                    "  {} [{}] {}: {}",
                    if r.ok { "ok  " } else { "FAIL" },
                    r.run,
                    r.check,
                    r.detail
                );
            }
        }
        for n in &g.notes {
            println!("  note: {n}");
        }
        for b in &bad {
            println!("  {b}");
        }
        if !passed {
            println!("  --- guest dmesg ---");
            for l in &g.dmesg {
                println!("  | {l}");
            }
            if g.done.is_none() {
                println!("  --- last console lines ---");
                let lines: Vec<&str> = out.serial.lines().collect();
                for l in &lines[lines.len().saturating_sub(60)..] {
                    println!("  | {l}");
                }
            }
            if !out.stderr.trim().is_empty() {
                println!("  --- qemu stderr ---\n{}", out.stderr.trim_end());
            }
            println!("  full console log: {}", log.display());
        }
    }
    Ok(Verdict {
        name: name.into(),
        passed,
        skipped: None,
        checks: (
            npass as u32,
            failed_checks.len() as u32 + u32::from(!passed && failed_checks.is_empty()),
        ),
        took: t.elapsed(),
    })
}
