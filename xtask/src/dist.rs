//! `cargo xtask dist`: release binaries under the names users type, with man pages and
//! shell completions.
//!
//! Cargo cannot name a binary `mkfs.erofs-rs` (a dot is invalid in a target name), so the
//! binaries are built under dashed names and the dotted names are added next to them as
//! symlinks. The man pages (section 8) and completion scripts come from the binaries' own
//! clap definitions (`EROFS_RS_GENERATE`, see erofs-cli) and are written to
//! `target/release/man/` and `target/release/completions/<shell>/`.
//!
//! `--install PREFIX` copies the binaries to `PREFIX/bin` (with the dotted names), the man
//! pages to `PREFIX/share/man/man8` and the bash, zsh and fish completions to their
//! directories under `PREFIX/share`. `--drop-in` also installs erofs-utils' names
//! (`mkfs.erofs`, `fsck.erofs`, `dump.erofs`), under which the tools take erofs-utils'
//! argument order; without it nothing named like erofs-utils is installed.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util;

/// The shipped tools: (cargo binary name, name users type, erofs-utils' name).
pub const TOOLS: [(&str, &str, &str); 3] = [
    ("mkfs-erofs-rs", "mkfs.erofs-rs", "mkfs.erofs"),
    ("dump-erofs-rs", "dump.erofs-rs", "dump.erofs"),
    ("fsck-erofs-rs", "fsck.erofs-rs", "fsck.erofs"),
];

/// Options of `cargo xtask dist`.
#[derive(clap::Args, Debug)]
pub struct DistArgs {
    /// Also install the binaries, man pages and completions under PREFIX.
    #[arg(long, value_name = "PREFIX")]
    pub install: Option<PathBuf>,
    /// With --install: also install erofs-utils' names (mkfs.erofs, fsck.erofs, dump.erofs),
    /// which take erofs-utils' argument order.
    #[arg(long, requires = "install")]
    pub drop_in: bool,
}

/// Builds the release binaries (cargo's progress shown) and returns the directory that
/// holds them.
pub fn build_release() -> Result<PathBuf> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(util::workspace_root())
        .args(["build", "--release"]);
    for (bin, _, _) in TOOLS {
        cmd.args(["-p", bin]);
    }
    eprintln!("dist: {}", util::show(&cmd));
    util::run(&mut cmd)?;
    let dir = util::target_dir().join("release");
    for (bin, dotted, _) in TOOLS {
        link(&dir, bin, dotted)?;
    }
    Ok(dir)
}

fn link(dir: &Path, bin: &str, name: &str) -> Result<()> {
    let path = dir.join(name);
    // A stale link or an old copy is replaced; the target is relative so the directory can move.
    let _ = std::fs::remove_file(&path);
    std::os::unix::fs::symlink(bin, &path)
        .with_context(|| format!("linking {} -> {bin}", path.display()))
}

/// One generated file: the tool it documents and where it goes.
struct Generated {
    /// `man` or a shell name.
    kind: &'static str,
    /// Path under `target/release/`.
    built: PathBuf,
    /// Path under PREFIX, if it is installed.
    installed: Option<PathBuf>,
}

/// Where each tool's man page and completion scripts are written and installed.
fn generated(dotted: &str) -> Vec<Generated> {
    let g = |kind, built: String, installed: Option<String>| Generated {
        kind,
        built: PathBuf::from(built),
        installed: installed.map(PathBuf::from),
    };
    vec![
        g(
            "man",
            format!("man/{dotted}.8"),
            Some(format!("share/man/man8/{dotted}.8")),
        ),
        g(
            "bash",
            format!("completions/bash/{dotted}"),
            Some(format!("share/bash-completion/completions/{dotted}")),
        ),
        g(
            "zsh",
            format!("completions/zsh/_{dotted}"),
            Some(format!("share/zsh/site-functions/_{dotted}")),
        ),
        g(
            "fish",
            format!("completions/fish/{dotted}.fish"),
            Some(format!("share/fish/vendor_completions.d/{dotted}.fish")),
        ),
        // No standard system-wide directory for these two: built only.
        g("elvish", format!("completions/elvish/{dotted}.elv"), None),
        g(
            "powershell",
            format!("completions/powershell/_{dotted}.ps1"),
            None,
        ),
    ]
}

/// Runs `bin` with `EROFS_RS_GENERATE=kind` and writes what it prints to `dest`.
fn generate(bin: &Path, kind: &str, dest: &Path) -> Result<()> {
    let out = Command::new(bin)
        .env("EROFS_RS_GENERATE", kind)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!(
            "{} could not generate {kind}: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(dest, &out.stdout).with_context(|| format!("writing {}", dest.display()))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    // Unlink first: copying over a running binary would fail with ETXTBSY.
    let _ = std::fs::remove_file(to);
    std::fs::copy(from, to).with_context(|| format!("installing {}", to.display()))?;
    Ok(())
}

/// Entry point: build, link, generate, and optionally install.
pub fn run(args: &DistArgs) -> Result<()> {
    let dir = build_release()?;
    for (bin, dotted, _) in TOOLS {
        for g in generated(dotted) {
            generate(&dir.join(bin), g.kind, &dir.join(&g.built))?;
        }
        println!("{}", dir.join(dotted).display());
    }
    println!(
        "man pages in {}, completions in {}",
        dir.join("man").display(),
        dir.join("completions").display()
    );
    let Some(prefix) = &args.install else {
        return Ok(());
    };
    let bin_dir = prefix.join("bin");
    for (bin, dotted, erofs_utils) in TOOLS {
        copy(&dir.join(bin), &bin_dir.join(bin))?;
        link(&bin_dir, bin, dotted)?;
        let mut names = vec![bin_dir.join(dotted)];
        if args.drop_in {
            link(&bin_dir, bin, erofs_utils)?;
            names.push(bin_dir.join(erofs_utils));
        }
        for g in generated(dotted) {
            if let Some(rel) = &g.installed {
                copy(&dir.join(&g.built), &prefix.join(rel))?;
            }
        }
        println!(
            "installed {} ({}), its man page and completions",
            bin_dir.join(bin).display(),
            names
                .iter()
                .map(|n| n.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_go_to_man8_and_completions_to_the_shells_directories() {
        let g = generated("mkfs.erofs-rs");
        let installed: Vec<String> = g
            .iter()
            .filter_map(|g| g.installed.as_ref())
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            installed,
            [
                "share/man/man8/mkfs.erofs-rs.8",
                "share/bash-completion/completions/mkfs.erofs-rs",
                "share/zsh/site-functions/_mkfs.erofs-rs",
                "share/fish/vendor_completions.d/mkfs.erofs-rs.fish",
            ]
        );
        assert_eq!(g.len(), 6, "man and the five shells clap_complete supports");
    }

    #[test]
    fn erofs_utils_names_are_only_the_drop_in_ones() {
        for (bin, dotted, erofs_utils) in TOOLS {
            assert!(dotted.ends_with("-rs") && bin.ends_with("-rs"));
            assert!(!erofs_utils.ends_with("-rs"));
        }
    }
}
