//! `cargo xtask kernel`: builds Linux 6.12 from Debian's `linux-source-6.12` with our config
//! fragment and patch series, cached outside the clone.
//!
//! Cache layout (under [`crate::util::cache_dir`]`/kernel`):
//! - `linux-source-6.12-<debian version>/`: the unpacked, never modified source;
//! - `stock/build/`: out-of-tree (`O=`) build of the pristine source;
//! - `patched/src/`: a hard-link copy of the pristine source with the series applied (patched
//!   files are replaced, never written through the links), `patched/build/` its build;
//! - `<variant>/build-debug/`: the debug kernel (`--debug`: the same source plus
//!   `xtask/kernel/debug.config`: KASAN, lockdep, kmemleak, DEBUG_VM; the patched one also gets
//!   the test-only `xtask/kernel/debug-patches/*.patch` after the series), built beside the
//!   normal one (both share `patched/src`, so switching rewrites only the files those touch);
//! - `<variant>/build*/erofs-rs.key`: the cache key of the last successful build.

use crate::util::{self, Need, fmt_duration};
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Debian package with the source tarball.
const SOURCE_PACKAGE: &str = "linux-source-6.12";
/// Where that package puts the tarball.
const SOURCE_TARBALL: &str = "/usr/src/linux-source-6.12.tar.xz";
/// Bump when the way the kernel is configured or built changes, to invalidate old caches.
const RECIPE_VERSION: &str = "erofs-rs kernel recipe 1";

/// What the kernel build needs on the host.
const BUILD_NEEDS: &[Need] = &[
    Need {
        package: SOURCE_PACKAGE,
        probe: SOURCE_TARBALL,
    },
    Need {
        package: "make",
        probe: "make",
    },
    Need {
        package: "gcc",
        probe: "gcc",
    },
    Need {
        package: "libc6-dev",
        probe: "/usr/include/stdio.h",
    },
    Need {
        package: "bc",
        probe: "bc",
    },
    Need {
        package: "bison",
        probe: "bison",
    },
    Need {
        package: "flex",
        probe: "flex",
    },
    Need {
        package: "libelf-dev",
        probe: "/usr/include/gelf.h",
    },
    Need {
        package: "libssl-dev",
        probe: "/usr/include/openssl/ssl.h",
    },
    Need {
        package: "cpio",
        probe: "cpio",
    },
    Need {
        package: "xz-utils",
        probe: "xz",
    },
    Need {
        package: "git",
        probe: "git",
    },
];

/// Which kernel to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Debian's source as shipped.
    Stock,
    /// With `xtask/kernel/patches/series` applied.
    Patched,
}

/// Options of `cargo xtask kernel`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KernelArgs {
    /// Build without the patch series in xtask/kernel/patches.
    #[arg(long)]
    pub stock: bool,
    /// Parallel make jobs (default: all cores).
    #[arg(long, short)]
    pub jobs: Option<usize>,
    /// Run make even if the cache key says the kernel is up to date.
    #[arg(long)]
    pub force: bool,
    /// Build the debug kernel (adds xtask/kernel/debug.config) instead of the normal one.
    #[arg(long)]
    pub debug: bool,
}

/// A built kernel.
#[derive(Debug, Clone)]
pub struct Built {
    /// Path of `bzImage`.
    pub bzimage: PathBuf,
    /// Which variant it is (an empty series gives the stock kernel).
    pub variant: Variant,
    /// Names of the applied patches.
    pub patches: Vec<String>,
}

/// `cargo xtask kernel`.
pub fn run(args: &KernelArgs) -> Result<()> {
    let built = build(args)?;
    println!("kernel: {}", built.bzimage.display());
    Ok(())
}

fn kernel_dir() -> Result<PathBuf> {
    let d = util::cache_dir()?.join("kernel");
    fs::create_dir_all(&d)?;
    Ok(d)
}

fn xtask_kernel_dir() -> PathBuf {
    util::workspace_root().join("xtask/kernel")
}

/// Builds (or finds in the cache) the kernel and returns where it is.
pub fn build(args: &KernelArgs) -> Result<Built> {
    let t0 = Instant::now();
    util::ensure_packages("the kernel build", BUILD_NEEDS)?;
    // One kernel build at a time per cache (several checkouts may share it).
    let lock_path = kernel_dir()?.join("build.lock");
    let _lock = erofs_guest::sys::lock_exclusive(&lock_path, || {
        eprintln!(
            "kernel: waiting for another build using {}",
            lock_path.display()
        )
    })
    .with_context(|| format!("locking {}", lock_path.display()))?;
    let version = source_version()?;
    let pristine = unpack(&version)?;

    let base_fragment = fs::read(xtask_kernel_dir().join("erofs.config"))
        .context("reading xtask/kernel/erofs.config")?;
    let debug_fragment = if args.debug {
        Some(
            fs::read(xtask_kernel_dir().join("debug.config"))
                .context("reading xtask/kernel/debug.config")?,
        )
    } else {
        None
    };
    let mut series = if args.stock {
        Series::default()
    } else {
        Series::load()?
    };
    if args.debug && !series.patches.is_empty() {
        series.patches.extend(debug_patches()?);
    }
    let variant = if series.patches.is_empty() && series.config.is_none() {
        Variant::Stock
    } else {
        Variant::Patched
    };

    let mut h = Sha256::new();
    for part in [
        RECIPE_VERSION.as_bytes(),
        version.as_bytes(),
        &base_fragment,
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    for (name, bytes) in &series.patches {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    if let Some(c) = &series.config {
        h.update(b"config");
        h.update(c);
    }
    if let Some(d) = &debug_fragment {
        h.update(b"debug");
        h.update(d);
    }
    let key = util::hex(&h.finalize());

    let vdir = kernel_dir()?.join(match variant {
        Variant::Stock => "stock",
        Variant::Patched => "patched",
    });
    let build_dir = vdir.join(if args.debug { "build-debug" } else { "build" });
    fs::create_dir_all(&build_dir)?;
    let bzimage = build_dir.join("arch/x86/boot/bzImage");
    let key_file = build_dir.join("erofs-rs.key");
    let names: Vec<String> = series.patches.iter().map(|(n, _)| n.clone()).collect();
    let built = Built {
        bzimage: bzimage.clone(),
        variant,
        patches: names.clone(),
    };

    if !args.force
        && bzimage.exists()
        && fs::read_to_string(&key_file).ok().as_deref() == Some(&key)
    {
        eprintln!(
            "kernel: up to date ({:?}, {} patch(es), key {}), checked in {}",
            variant,
            names.len(),
            &key[..12],
            fmt_duration(t0.elapsed())
        );
        return Ok(built);
    }
    let _ = fs::remove_file(&key_file);

    let src = match variant {
        Variant::Stock => pristine.clone(),
        Variant::Patched => {
            let src = vdir.join("src");
            if !src.join("Makefile").exists() {
                let _ = fs::remove_dir_all(&src);
                eprintln!("kernel: making a hard-link copy of the source for the patched build");
                util::run(Command::new("cp").arg("-al").arg(&pristine).arg(&src))?;
            }
            sync_patches(
                &pristine,
                &src,
                &vdir,
                &xtask_kernel_dir().join("patches"),
                &series.patches,
            )?;
            src
        }
    };

    let extra: Vec<&[u8]> = [series.config.as_deref(), debug_fragment.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    configure(&src, &build_dir, &base_fragment, &extra)?;

    let jobs = args.jobs.unwrap_or_else(util::cpus);
    eprintln!("kernel: make -j{jobs} bzImage in {}", build_dir.display());
    let tb = Instant::now();
    {
        // make -s is silent for minutes: say how far it got (objects compiled so far).
        let objects = build_dir.clone();
        let _beat = util::Heartbeat::start("kernel: make bzImage".into(), move || {
            Some(format!(
                "{} object files built",
                util::count_files(&objects, ".o")
            ))
        });
        util::run(
            make(&src, &build_dir)
                .arg(format!("-j{jobs}"))
                .arg("bzImage"),
        )?;
    }
    let took = tb.elapsed();
    fs::write(&key_file, &key)?;
    eprintln!(
        "kernel: built {} ({:?}{}, {} patch(es)) : make took {}, total {}",
        bzimage.display(),
        variant,
        if args.debug { ", debug" } else { "" },
        names.len(),
        fmt_duration(took),
        fmt_duration(t0.elapsed())
    );
    Ok(built)
}

fn make(src: &Path, build: &Path) -> Command {
    let mut c = Command::new("make");
    c.arg("-C")
        .arg(src)
        .arg(format!("O={}", build.display()))
        .arg("ARCH=x86_64")
        .arg("-s");
    c
}

/// The Debian package version of the source (falls back to the tarball's size and mtime).
fn source_version() -> Result<String> {
    let v = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", SOURCE_PACKAGE])
        .output()
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    if let Some(v) = v {
        return Ok(v);
    }
    let m = fs::metadata(SOURCE_TARBALL).context(SOURCE_TARBALL)?;
    let mtime = m
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    Ok(format!("size{}-mtime{}", m.len(), mtime))
}

/// Unpacks the source tarball once into the cache and returns the directory.
fn unpack(version: &str) -> Result<PathBuf> {
    let safe: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = kernel_dir()?.join(format!("linux-source-6.12-{safe}"));
    let marker = dir.join(".erofs-rs-unpacked");
    if marker.exists() {
        return Ok(dir);
    }
    let t = Instant::now();
    let tmp = kernel_dir()?.join("unpack.tmp");
    let _ = fs::remove_dir_all(&tmp);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&tmp)?;
    eprintln!("kernel: unpacking {SOURCE_TARBALL} into {}", dir.display());
    util::run(
        Command::new("tar")
            .arg("-xf")
            .arg(SOURCE_TARBALL)
            .arg("-C")
            .arg(&tmp),
    )?;
    let inner = fs::read_dir(&tmp)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.join("Makefile").exists())
        .context("the tarball holds no kernel tree")?;
    fs::rename(&inner, &dir)?;
    fs::remove_dir_all(&tmp)?;
    fs::write(&marker, version)?;
    eprintln!("kernel: unpacked in {}", fmt_duration(t.elapsed()));
    Ok(dir)
}

/// The patch series in `xtask/kernel/patches`.
#[derive(Default)]
struct Series {
    /// (file name, bytes) in `series` order.
    patches: Vec<(String, Vec<u8>)>,
    /// `patches/config`, an extra config fragment for the patched kernel.
    config: Option<Vec<u8>>,
}

impl Series {
    fn load() -> Result<Series> {
        let dir = xtask_kernel_dir().join("patches");
        let mut s = Series::default();
        let list = match fs::read_to_string(dir.join("series")) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).context("reading xtask/kernel/patches/series"),
        };
        for line in list.lines() {
            let name = line.split('#').next().unwrap_or("").trim();
            if name.is_empty() {
                continue;
            }
            let bytes = fs::read(dir.join(name))
                .with_context(|| format!("patch {name} is listed in series but cannot be read"))?;
            s.patches.push((name.to_string(), bytes));
        }
        match fs::read(dir.join("config")) {
            Ok(c) => s.config = Some(c),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("reading xtask/kernel/patches/config"),
        }
        Ok(s)
    }
}

/// The test-only patches of the debug kernel (`xtask/kernel/debug-patches/*.patch`, in name
/// order), named relative to `xtask/kernel/patches`. They widen race windows behind knobs
/// that the debug-only scenarios turn on, and are never part of the series.
fn debug_patches() -> Result<Vec<(String, Vec<u8>)>> {
    let dir = xtask_kernel_dir().join("debug-patches");
    let mut names: Vec<String> = match fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".patch"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let bytes = fs::read(dir.join(&n)).with_context(|| format!("reading {n}"))?;
            Ok((format!("../debug-patches/{n}"), bytes))
        })
        .collect()
}

/// Paths a patch touches (both sides of each `diff --git` header).
fn patch_paths(patch: &[u8]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in patch.split(|&b| b == b'\n') {
        let Some(rest) = line.strip_prefix(b"diff --git ") else {
            continue;
        };
        let rest = String::from_utf8_lossy(rest);
        if let Some((a, b)) = rest.split_once(" b/") {
            if let Some(a) = a.strip_prefix("a/") {
                out.insert(a.to_string());
            }
            out.insert(b.trim_end().to_string());
        }
    }
    out
}

/// Brings `src` (a hard-link copy of `pristine`) to "pristine + patches", rewriting only the
/// files whose content changes, so that make rebuilds incrementally.
fn sync_patches(
    pristine: &Path,
    src: &Path,
    vdir: &Path,
    pdir: &Path,
    patches: &[(String, Vec<u8>)],
) -> Result<()> {
    let state = vdir.join("applied-files");
    let mut affected: BTreeSet<String> = fs::read_to_string(&state)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let mut now = BTreeSet::new();
    for (_, p) in patches {
        now.extend(patch_paths(p));
    }
    affected.extend(now.iter().cloned());

    // Apply the whole series to copies of the affected pristine files first, so a series that
    // does not apply leaves the tree untouched.
    let tmp = vdir.join("apply.tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    for rel in &affected {
        let from = pristine.join(rel);
        if from.is_file() {
            let to = tmp.join(rel);
            fs::create_dir_all(to.parent().unwrap())?;
            fs::copy(&from, &to)?;
        }
    }
    for (name, _) in patches {
        let out = Command::new("git")
            .arg("apply")
            .arg("--whitespace=nowarn")
            .arg(pdir.join(name))
            .current_dir(&tmp)
            .env("GIT_CEILING_DIRECTORIES", vdir)
            .output()
            .context("running git apply")?;
        if !out.status.success() {
            bail!(
                "patch {name} does not apply to linux-source-6.12:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        eprintln!("kernel: applies {name}");
    }

    let mut changed = 0;
    for rel in &affected {
        let want = fs::read(tmp.join(rel)).ok();
        let have = fs::read(src.join(rel)).ok();
        if want == have {
            continue;
        }
        changed += 1;
        let dst = src.join(rel);
        // Unlink first: the file may be a hard link into the pristine tree.
        let _ = fs::remove_file(&dst);
        if let Some(bytes) = want {
            fs::create_dir_all(dst.parent().unwrap())?;
            fs::write(&dst, bytes)?;
            let perm = fs::metadata(tmp.join(rel))?.permissions();
            fs::set_permissions(&dst, perm)?;
        }
    }
    fs::remove_dir_all(&tmp)?;
    let list: String = now.iter().map(|p| format!("{p}\n")).collect();
    fs::write(&state, list)?;
    eprintln!(
        "kernel: {} patch(es) over {} file(s), {changed} file(s) rewritten",
        patches.len(),
        now.len()
    );
    Ok(())
}

/// One line of a config fragment.
enum Setting {
    Yes(String),
    No(String),
    Value(String, String),
}

fn parse_fragment(bytes: &[u8]) -> Result<Vec<Setting>> {
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(bytes).lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# CONFIG_") {
            if let Some(name) = rest.strip_suffix(" is not set") {
                out.push(Setting::No(name.to_string()));
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            bail!("bad config line: {line}")
        };
        let Some(name) = k.strip_prefix("CONFIG_") else {
            bail!("bad config line: {line}")
        };
        out.push(match v {
            "y" => Setting::Yes(name.to_string()),
            "n" => Setting::No(name.to_string()),
            _ => Setting::Value(name.to_string(), v.to_string()),
        });
    }
    Ok(out)
}

/// `make tinyconfig`, then the fragments with `scripts/config`, then `olddefconfig`, then a
/// check that nothing we asked for was dropped.
fn configure(src: &Path, build: &Path, base: &[u8], extra: &[&[u8]]) -> Result<()> {
    let t = Instant::now();
    let mut settings = parse_fragment(base)?;
    for e in extra {
        settings.extend(parse_fragment(e)?);
    }
    let config = build.join(".config");
    let old = fs::read(&config).ok();
    util::run(make(src, build).arg("tinyconfig"))?;
    let mut sc = Command::new(src.join("scripts/config"));
    sc.arg("--file").arg(&config);
    for s in &settings {
        match s {
            Setting::Yes(n) => sc.args(["--enable", n]),
            Setting::No(n) => sc.args(["--disable", n]),
            Setting::Value(n, v) => sc.args(["--set-val", n, v]),
        };
    }
    util::run(&mut sc)?;
    util::run(make(src, build).arg("olddefconfig"))?;

    let text = fs::read_to_string(&config)?;
    let value = |n: &str| {
        let key = format!("CONFIG_{n}=");
        text.lines()
            .find_map(|l| l.strip_prefix(&key).map(str::to_string))
    };
    let mut bad = Vec::new();
    for s in &settings {
        match s {
            Setting::Yes(n) if value(n).as_deref() != Some("y") => bad.push(format!(
                "CONFIG_{n}=y asked, got {}",
                value(n).unwrap_or("n".into())
            )),
            Setting::No(n) if value(n).is_some_and(|v| v != "n") => bad.push(format!(
                "CONFIG_{n} asked off, got {}",
                value(n).unwrap_or_default()
            )),
            Setting::Value(n, v) if value(n).as_deref() != Some(v) => {
                bad.push(format!("CONFIG_{n}={v} asked, got {:?}", value(n)))
            }
            _ => {}
        }
    }
    if !bad.is_empty() {
        bail!(
            "make olddefconfig dropped options (missing dependencies?):\n  {}",
            bad.join("\n  ")
        );
    }
    if old.as_deref() == Some(text.as_bytes()) {
        eprintln!("kernel: config unchanged ({})", fmt_duration(t.elapsed()));
    } else {
        eprintln!(
            "kernel: configured {} options in {}",
            settings.len(),
            fmt_duration(t.elapsed())
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_paths_reads_git_headers() {
        let p = b"From x\n---\ndiff --git a/fs/erofs/super.c b/fs/erofs/super.c\nindex 1..2\n\
                  diff --git a/fs/erofs/ishare.c b/fs/erofs/ishare.c\nnew file mode 100644\n";
        let got: Vec<_> = patch_paths(p).into_iter().collect();
        assert_eq!(got, ["fs/erofs/ishare.c", "fs/erofs/super.c"]);
    }

    #[test]
    fn sync_patches_rewrites_only_patched_files_and_reverts() {
        let t = std::env::temp_dir().join(format!("xtask-sync-{}", std::process::id()));
        let _ = fs::remove_dir_all(&t);
        let (pristine, src, vdir, pdir) =
            (t.join("p"), t.join("s"), t.join("v"), t.join("patches"));
        for d in [&pristine, &vdir, &pdir] {
            fs::create_dir_all(d).unwrap();
        }
        fs::write(pristine.join("a.c"), "one\ntwo\n").unwrap();
        fs::write(pristine.join("b.c"), "b\n").unwrap();
        util::run(Command::new("cp").arg("-al").arg(&pristine).arg(&src)).unwrap();
        let patch = "diff --git a/a.c b/a.c\n--- a/a.c\n+++ b/a.c\n@@ -1,2 +1,2 @@\n one\n-two\n+TWO\n\
                     diff --git a/new.c b/new.c\nnew file mode 100644\n--- /dev/null\n+++ b/new.c\n@@ -0,0 +1 @@\n+new\n";
        fs::write(pdir.join("0001-x.patch"), patch).unwrap();
        let series = vec![("0001-x.patch".to_string(), patch.as_bytes().to_vec())];
        sync_patches(&pristine, &src, &vdir, &pdir, &series).unwrap();
        assert_eq!(fs::read_to_string(src.join("a.c")).unwrap(), "one\nTWO\n");
        assert_eq!(fs::read_to_string(src.join("new.c")).unwrap(), "new\n");
        assert_eq!(
            fs::read_to_string(pristine.join("a.c")).unwrap(),
            "one\ntwo\n"
        );
        // Same series again: nothing rewritten (mtime kept).
        let m1 = fs::metadata(src.join("a.c")).unwrap().modified().unwrap();
        sync_patches(&pristine, &src, &vdir, &pdir, &series).unwrap();
        assert_eq!(
            fs::metadata(src.join("a.c")).unwrap().modified().unwrap(),
            m1
        );
        // Empty series: back to pristine content, new file gone.
        sync_patches(&pristine, &src, &vdir, &pdir, &[]).unwrap();
        assert_eq!(fs::read_to_string(src.join("a.c")).unwrap(), "one\ntwo\n");
        assert!(!src.join("new.c").exists());
        assert_eq!(
            fs::read_to_string(pristine.join("a.c")).unwrap(),
            "one\ntwo\n"
        );
        // A broken patch fails and leaves the tree alone.
        let bad = "diff --git a/b.c b/b.c\n--- a/b.c\n+++ b/b.c\n@@ -1 +1 @@\n-nope\n+x\n";
        fs::write(pdir.join("0002-bad.patch"), bad).unwrap();
        let e = sync_patches(
            &pristine,
            &src,
            &vdir,
            &pdir,
            &[("0002-bad.patch".into(), bad.as_bytes().to_vec())],
        );
        assert!(e.is_err());
        assert_eq!(fs::read_to_string(src.join("b.c")).unwrap(), "b\n");
        fs::remove_dir_all(&t).unwrap();
    }

    #[test]
    fn fragment_parses_yes_no_and_values() {
        let f = b"# c\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x\"\n";
        let s = parse_fragment(f).unwrap();
        assert!(matches!(&s[0], Setting::Yes(n) if n == "A"));
        assert!(matches!(&s[1], Setting::No(n) if n == "B"));
        assert!(matches!(&s[2], Setting::Value(n, v) if n == "C" && v == "\"x\""));
    }
}
