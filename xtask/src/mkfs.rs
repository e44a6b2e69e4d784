//! Which mkfs builds the test images: ours (`mkfs-erofs-rs`, the default) or Debian's
//! `mkfs.erofs` (for developing the harness while ours cannot build something).

use crate::util::{self, Need};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Fixed so images are reproducible.
pub const EPOCH: &str = "1700000000";
/// Fixed volume UUID.
pub const UUID: &str = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
/// Our default fingerprint xattr name.
pub const DEFAULT_FINGERPRINT_XATTR: &str = "trusted.erofs.fingerprint";

/// Selectable from the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// Our mkfs-erofs-rs, built with `cargo build --release -p mkfs-erofs-rs`.
    Ours,
    /// Debian's mkfs.erofs (erofs-utils): 4 KiB blocks only, no fingerprints or long prefixes.
    Debian,
}

/// A ready mkfs.
pub enum Mkfs {
    /// Path of our binary.
    Ours(PathBuf),
    /// Debian's mkfs.erofs.
    Debian,
}

/// Image options a scenario asks for.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `-b`: 512, 1024 or 4096 (0 = default 4096).
    pub block_size: u32,
    /// `-x N`: share an xattr when at least N inodes use it.
    pub shared_xattrs: Option<u32>,
    /// `-E noinline_data`.
    pub noinline: bool,
    /// `--fingerprint=sha256 --fingerprint-xattr=NAME`.
    pub fingerprint: Option<String>,
    /// `--xattr-prefix=PREFIX` (long xattr name prefixes).
    pub xattr_prefixes: Vec<String>,
    /// `--all-root`.
    pub all_root: bool,
    /// `-L`.
    pub label: Option<String>,
    /// Build through `--tar=f` from a GNU tar (POSIX format, xattrs, ACLs, sparse) of the
    /// source.
    pub tar: bool,
    /// Build through `--tar=i` from a GNU tar (no sparse entries: an index cannot point at
    /// condensed data) and append the tar to the index: containerd's single-file layer,
    /// mounted without `device=`. 512-byte blocks.
    pub tar_index: bool,
    /// `-z ALG[,LEVEL]`.
    pub compress: Option<String>,
    /// `-C BYTES` (with `compress`).
    pub pcluster: Option<u32>,
    /// `-E ztailpacking` (with `compress`): inline tail pclusters.
    pub ztailpacking: bool,
    /// `-E legacy-compress` (with `compress`): full lcluster indexes, not compact ones.
    pub legacy_compress: bool,
    /// `-E dedupe` (with `compress`): pclusters shared between extents.
    pub dedupe: bool,
    /// `-E fragments` or `-E all-fragments` (with `compress`): the `-E` flag's text.
    pub fragments: Option<&'static str>,
    /// `--compress-hints=FILE` (with `compress`): the file's text, written beside the image.
    pub compress_hints: Option<String>,
}

impl Options {
    /// The block size actually used.
    pub fn block_size(&self) -> u32 {
        if self.tar_index {
            512
        } else if self.block_size == 0 {
            4096
        } else {
            self.block_size
        }
    }
}

impl Mkfs {
    /// Prepares the chosen mkfs (builds ours, installs Debian's).
    pub fn prepare(flavour: Flavour) -> Result<Mkfs> {
        match flavour {
            Flavour::Debian => {
                util::ensure_packages(
                    "Debian's mkfs.erofs",
                    &[Need {
                        package: "erofs-utils",
                        probe: "mkfs.erofs",
                    }],
                )?;
                Ok(Mkfs::Debian)
            }
            Flavour::Ours => {
                eprintln!("qemu-test: cargo build --release -p mkfs-erofs-rs");
                util::run(
                    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                        .args(["build", "--release", "-p", "mkfs-erofs-rs"])
                        .current_dir(util::workspace_root()),
                )
                .context(
                    "building our mkfs (use --mkfs debian to test the harness with Debian's)",
                )?;
                let bin = util::target_dir().join("release/mkfs-erofs-rs");
                if !bin.exists() {
                    bail!("{} missing after the build", bin.display());
                }
                Ok(Mkfs::Ours(bin))
            }
        }
    }

    /// Why this mkfs cannot build such an image, if it cannot.
    pub fn unsupported(&self, o: &Options) -> Option<String> {
        match self {
            Mkfs::Ours(_) => None,
            Mkfs::Debian => {
                if o.block_size() != 4096 {
                    Some(format!(
                        "Debian's mkfs.erofs 1.5 has no -b {}",
                        o.block_size()
                    ))
                } else if o.fingerprint.is_some() {
                    Some("Debian's mkfs.erofs 1.5 writes no fingerprints".into())
                } else if !o.xattr_prefixes.is_empty() {
                    Some("Debian's mkfs.erofs 1.5 has no long xattr prefixes".into())
                } else if o.tar || o.tar_index {
                    Some("Debian's mkfs.erofs 1.5 has no --tar".into())
                } else if o.compress.as_deref().is_some_and(|z| !z.starts_with("lz4")) {
                    Some("Debian's mkfs.erofs 1.5 compresses with lz4 and lz4hc only".into())
                } else if o.legacy_compress {
                    Some("Debian's mkfs.erofs 1.5 has no -E legacy-compress".into())
                } else if o.dedupe {
                    Some("Debian's mkfs.erofs 1.5 has no -E dedupe".into())
                } else if o.fragments.is_some() {
                    Some("Debian's mkfs.erofs 1.5 cannot read fragments back".into())
                } else if o.compress.as_deref().is_some_and(|z| z.contains(':')) {
                    Some("Debian's mkfs.erofs 1.5 has one algorithm per image".into())
                } else {
                    None
                }
            }
        }
    }

    /// Short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Mkfs::Ours(_) => "mkfs-erofs-rs",
            Mkfs::Debian => "mkfs.erofs (Debian)",
        }
    }

    /// Builds `image` from `source`.
    pub fn build(&self, source: &Path, image: &Path, o: &Options) -> Result<()> {
        if let Some(why) = self.unsupported(o) {
            bail!("{why}");
        }
        // Debian's mkfs.erofs 1.5 opens the image without O_CREAT.
        std::fs::write(image, b"").with_context(|| image.display().to_string())?;
        let mut c;
        match self {
            Mkfs::Ours(bin) => {
                c = Command::new(bin);
                c.arg("--quiet")
                    .arg(format!("-T{EPOCH}"))
                    .arg(format!("-U{UUID}"));
                c.arg(format!("-b{}", o.block_size()));
                if let Some(l) = &o.label {
                    c.arg(format!("-L{l}"));
                }
                if let Some(fp) = &o.fingerprint {
                    c.arg("--fingerprint=sha256")
                        .arg(format!("--fingerprint-xattr={fp}"));
                }
            }
            Mkfs::Debian => {
                c = Command::new("mkfs.erofs");
                c.arg("--quiet")
                    .arg(format!("-T{EPOCH}"))
                    .arg(format!("-U{UUID}"));
            }
        }
        if let Some(x) = o.shared_xattrs {
            c.arg(format!("-x{x}"));
        }
        if o.noinline {
            c.arg("-Enoinline_data");
        }
        for p in &o.xattr_prefixes {
            c.arg(format!("--xattr-prefix={p}"));
        }
        if o.all_root {
            c.arg("--all-root");
        }
        if let Some(z) = &o.compress {
            c.arg(format!("-z{z}"));
        }
        if let Some(p) = o.pcluster {
            c.arg(format!("-C{p}"));
        }
        if o.ztailpacking {
            c.arg("-Eztailpacking");
        }
        if o.legacy_compress {
            c.arg("-Elegacy-compress");
        }
        if let Some(f) = o.fragments {
            c.arg(format!("-E{f}"));
        }
        if o.dedupe {
            c.arg("-Ededupe");
        }
        if let Some(hints) = &o.compress_hints {
            let path = image.with_extension("hints");
            std::fs::write(&path, hints).with_context(|| path.display().to_string())?;
            c.arg(format!("--compress-hints={}", path.display()));
        }
        match self {
            Mkfs::Ours(_) if o.tar => {
                let tar = image.with_extension("tar");
                util::run(
                    Command::new("tar")
                        .args([
                            "--xattrs",
                            "--xattrs-include=*",
                            "--acls",
                            "--format=posix",
                            "--sparse",
                            "--numeric-owner",
                            "-C",
                        ])
                        .arg(source)
                        .arg("-cf")
                        .arg(&tar)
                        .arg("."),
                )?;
                // The full tree carries trusted.overlay.opaque on purpose.
                c.args(["--tar=f", "--tar-keep-overlay-xattrs"])
                    .arg(tar)
                    .arg(image)
            }
            Mkfs::Ours(_) if o.tar_index => {
                let tar = image.with_extension("tar");
                util::run(
                    Command::new("tar")
                        .args([
                            "--xattrs",
                            "--xattrs-include=*",
                            "--acls",
                            "--format=posix",
                            "--numeric-owner",
                            "-C",
                        ])
                        .arg(source)
                        .arg("-cf")
                        .arg(&tar)
                        .arg("."),
                )?;
                c.args(["--tar=i", "--tar-keep-overlay-xattrs"])
                    .arg(tar)
                    .arg(image)
            }
            Mkfs::Ours(_) => c.arg(source).arg(image),
            Mkfs::Debian => c.arg(image).arg(source),
        };
        let out = c
            .output()
            .with_context(|| format!("starting {}", util::show(&c)))?;
        if !out.status.success() || std::fs::metadata(image).map_or(true, |m| m.len() == 0) {
            bail!(
                "{} failed ({}):\n{}{}",
                util::show(&c),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if o.tar_index {
            // The single-file form: the tar right after the index, where its device table
            // places device 1.
            let tar = image.with_extension("tar");
            let mut dst = std::fs::OpenOptions::new()
                .append(true)
                .open(image)
                .with_context(|| image.display().to_string())?;
            let mut src = std::fs::File::open(&tar).with_context(|| tar.display().to_string())?;
            std::io::copy(&mut src, &mut dst).with_context(|| image.display().to_string())?;
        }
        Ok(())
    }
}
