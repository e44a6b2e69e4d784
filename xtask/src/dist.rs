//! `cargo xtask dist`: release binaries under the names users type.
//!
//! Cargo cannot name a binary `mkfs.erofs-rs` (a dot is invalid in a target name), so the
//! binaries are built under dashed names and the dotted names are added next to them as
//! symlinks. `cargo xtask dist --install PREFIX` also copies them into `PREFIX/bin`.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util;

/// The shipped tools: (cargo binary name, name users type).
pub const TOOLS: [(&str, &str); 3] = [
    ("mkfs-erofs-rs", "mkfs.erofs-rs"),
    ("dump-erofs-rs", "dump.erofs-rs"),
    ("fsck-erofs-rs", "fsck.erofs-rs"),
];

/// Builds the release binaries and returns the directory that holds them.
pub fn build_release() -> Result<PathBuf> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(util::workspace_root())
        .args(["build", "--release", "--quiet"]);
    for (bin, _) in TOOLS {
        cmd.args(["-p", bin]);
    }
    util::run(&mut cmd)?;
    let dir = util::target_dir().join("release");
    for (bin, dotted) in TOOLS {
        link(&dir, bin, dotted)?;
    }
    Ok(dir)
}

fn link(dir: &Path, bin: &str, dotted: &str) -> Result<()> {
    let path = dir.join(dotted);
    // A stale link or an old copy is replaced; the target is relative so the directory can move.
    let _ = std::fs::remove_file(&path);
    std::os::unix::fs::symlink(bin, &path)
        .with_context(|| format!("linking {} -> {bin}", path.display()))
}

/// Entry point: build, link, and optionally install into `prefix/bin`.
pub fn run(install: Option<PathBuf>) -> Result<()> {
    let dir = build_release()?;
    for (_, dotted) in TOOLS {
        println!("{}", dir.join(dotted).display());
    }
    if let Some(prefix) = install {
        let bin = prefix.join("bin");
        std::fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
        for (name, dotted) in TOOLS {
            let dest = bin.join(name);
            std::fs::copy(dir.join(name), &dest)
                .with_context(|| format!("installing {}", dest.display()))?;
            link(&bin, name, dotted)?;
            println!(
                "installed {} and {}",
                dest.display(),
                bin.join(dotted).display()
            );
        }
    }
    Ok(())
}
