//! `fsck.erofs-rs`: checks an EROFS image and optionally extracts it.
//!
//! Exit status (fsck(8)'s values, the same for all three tools): 0 when the image is
//! consistent (and extraction, if asked, succeeded), 4 when problems were found and left,
//! 8 when the image cannot be opened or read or extraction failed, 16 for a usage error,
//! 32 when Ctrl-C (SIGINT), SIGTERM or SIGHUP cancelled the check, a verification or the
//! extraction (a second signal ends the process at once).

mod compat;
mod fingerprints;
mod mapped;
mod verity;

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Parser;
use erofs_cli::Exit;
use erofs_reader::check::{CheckOptions, CheckReport, check_from};
use erofs_reader::extract::{ExtractOptions, ExtractReport, extract};
use erofs_reader::{CancelToken, Cancellable, Image, OpenOptions, escape_bytes};
use serde::Serialize;

/// Command-line interface.
#[derive(Parser, Debug)]
#[command(
    name = "fsck.erofs-rs",
    version,
    about = "Check an EROFS image and extract it"
)]
pub struct Cli {
    /// The image file.
    pub image: PathBuf,

    /// Do not check the superblock checksum.
    #[arg(long = "no-sbcrc")]
    pub no_sbcrc: bool,

    /// Read all file data; with a directory, extract the tree into it.
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = "", require_equals = true)]
    pub extract: Option<OsString>,

    /// Replace existing files when extracting.
    #[arg(long)]
    pub overwrite: bool,

    /// Check and extract only the subtree at this nid.
    #[arg(long, value_name = "NID")]
    pub nid: Option<u64>,

    /// Check and extract only the subtree at this path (wins over --nid).
    #[arg(long, value_name = "PATH")]
    pub path: Option<OsString>,

    /// Do not restore xattrs when extracting.
    #[arg(long = "no-xattrs")]
    pub no_xattrs: bool,

    /// Do not restore owners when extracting (the default when not root).
    #[arg(long = "no-preserve-owner")]
    pub no_preserve_owner: bool,

    /// Print a JSON summary (see docs/json.md).
    #[arg(long)]
    pub json: bool,

    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Accepted for compatibility with fsck.erofs; no effect.
    #[arg(short = 'a', short_alias = 'A', hide = true)]
    pub auto: bool,

    /// Accepted for compatibility with fsck.erofs; no effect.
    #[arg(short = 'y', hide = true)]
    pub yes: bool,

    /// Print the compression ratio of all regular files (stored blocks / decoded blocks),
    /// like fsck.erofs -p.
    #[arg(short = 'p')]
    pub print_ratio: bool,

    /// erofs-utils' message level; accepted for compatibility, no effect.
    #[arg(
        short = 'd',
        value_name = "LEVEL",
        allow_hyphen_values = true,
        hide = true
    )]
    pub debug_level: Option<i32>,

    /// Recompute the SHA-256 of every fingerprinted file (in parallel) and compare it with
    /// its fingerprint xattr; also check the superblock's fingerprint fields.
    #[arg(long, alias = "xattr-inode-digest")]
    pub verify_fingerprints: bool,

    /// Check the dm-verity hash tree that `mkfs.erofs-rs --verity` appended, and every data
    /// block, against this root hash (hex).
    #[arg(long, value_name = "ROOTHASH", require_equals = true)]
    pub verity: Option<String>,

    /// With --verity: the tree is in this file (`mkfs.erofs-rs --verity-file`).
    #[arg(long, value_name = "FILE", requires = "verity")]
    pub verity_file: Option<PathBuf>,
}

/// The `--json` output.
#[derive(Serialize)]
struct JsonOut<'a> {
    image: String,
    clean: bool,
    check: Option<&'a CheckReport>,
    extract: Option<&'a ExtractReport>,
    fingerprints: Option<&'a erofs_share::verify::VerifyReport>,
    verity: Option<&'a verity::VerityOutcome>,
    error: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = compat::parse();
    erofs_cli::run_interruptible("fsck.erofs-rs", |interrupt| run(&cli, interrupt))
}

fn run(cli: &Cli, interrupt: &erofs_cli::Interrupt) -> Result<Exit> {
    if let Some(dir) = cli.extract.as_ref().filter(|d| !d.is_empty()) {
        check_extract_dir(cli, Path::new(dir))?;
    }
    let opts = OpenOptions::default().verify_checksum(false);
    // Mapped when it is a regular file (see the module docs); else read with pread, which
    // also reports why a path cannot be opened.
    let opened = match mapped::MappedFile::open(&cli.image) {
        Some(m) => Image::from_source(m, opts),
        None => Image::open_with(&cli.image, opts),
    };
    let img = match opened {
        Ok(img) => img,
        Err(e) => {
            let msg = if cli.image.is_dir() {
                format!("{} is a directory, not an EROFS image", cli.image.display())
            } else if matches!(e, erofs_reader::Error::Open { .. }) {
                // Already names the path.
                e.to_string()
            } else {
                format!("cannot read {}: {e}", cli.image.display())
            };
            if cli.json {
                print_json(cli, None, None, None, None, Some(msg))?;
                return Ok(Exit::Operational);
            }
            bail!(msg);
        }
    };
    // From here on Ctrl-C cancels the check, the verifications and the extraction.
    let _armed = interrupt.arm();
    let token = interrupt.token();
    // With --verify-fingerprints the check runs alongside the verification, whose bar is
    // the one shown: two bars redrawing one line would garble it.
    let bar = erofs_cli::Bar::new(
        !cli.quiet && !cli.json && !cli.verify_fingerprints,
        "checking",
        "inodes",
    );
    let (start_nid, start_path) = match subtree(cli, &img) {
        Ok(s) => s,
        Err(e) => {
            if cli.json {
                print_json(cli, None, None, None, None, Some(format!("{e:#}")))?;
                return Ok(Exit::Operational);
            }
            return Err(e);
        }
    };
    let extract_dir = cli.extract.as_ref().filter(|d| !d.is_empty());
    let check_with = |decode_for_extraction: bool| {
        check_from(
            &img,
            CheckOptions::default()
                .verify_checksum(!cli.no_sbcrc)
                // Extraction to a directory reads every byte itself; read here only without one.
                .read_data(cli.extract.as_ref().is_some_and(|d| d.is_empty()))
                // The verification decodes every fingerprinted file: not twice.
                .fingerprints_verified(cli.verify_fingerprints)
                // Nor the extraction, which decodes every compressed file.
                .data_read_elsewhere(extract_dir.is_some() && !decode_for_extraction),
            start_nid,
            &start_path,
            &Cancellable::new(&bar, token.clone()),
        )
    };
    let check = || check_with(false);
    // The check and the verification only read the image: the check (a serial walk) runs
    // on one pool thread while the others walk and hash, instead of before them. Both
    // reports are printed afterwards, in the usual order.
    let (report, verified) = if cli.verify_fingerprints {
        let (report, verified) = rayon::join(check, || {
            fingerprints::verify(&img, !cli.quiet && !cli.json, token)
        });
        (report, Some(verified))
    } else {
        (check(), None)
    };
    let mut report = report.context("checking")?;

    let mut extract_report = None;
    let mut extract_error = None;
    if let Some(dir) = extract_dir {
        match do_extract(cli, &img, Path::new(dir), token) {
            Ok(r) => extract_report = Some(r),
            Err(e) if interrupt.interrupted() => {
                return Err(e.context(format!(
                    "extraction into {} stopped; the files extracted so far are whole",
                    Path::new(dir).display()
                )));
            }
            Err(e) => {
                extract_error = Some(format!("{e:#}"));
                // The extraction stopped at its first error, maybe a file that does not
                // decode: the check decodes every compressed file, to name each bad one.
                report = check_with(true).context("checking")?;
            }
        }
    }

    let image_name = cli.image.display().to_string();
    let verity = match &cli.verity {
        Some(root) => Some(
            verity::verify(&img, &cli.image, root, cli.verity_file.as_deref(), token)
                .context("dm-verity check")?,
        ),
        None => None,
    };
    let fingerprints = match verified {
        Some(v) => Some(fingerprints::print(v?, &image_name, cli.json)?),
        None => None,
    };
    let extract_failed = extract_error.is_some();
    let clean = report.is_clean()
        && extract_error.is_none()
        && verity.as_ref().is_none_or(verity::VerityOutcome::ok)
        && !fingerprints.as_ref().is_some_and(fingerprints::failed);
    if cli.json {
        print_json(
            cli,
            Some(&report),
            extract_report.as_ref(),
            fingerprints.as_ref(),
            verity.as_ref(),
            extract_error,
        )?;
    } else {
        let mut err = std::io::stderr().lock();
        for p in &report.problems {
            let mut at = Vec::new();
            if let Some(n) = p.nid {
                at.push(format!("nid {n}"));
            }
            if let Some(o) = p.offset {
                at.push(format!("offset {o}"));
            }
            if let Some(path) = &p.path {
                at.push(path.clone());
            }
            writeln!(err, "problem [{}] {}: {}", p.kind, at.join(", "), p.message)?;
        }
        if let Some(e) = &extract_error {
            writeln!(err, "fsck.erofs-rs: error: extraction failed: {e}")?;
        }
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "fsck.erofs-rs: {}: {} inodes ({} dirs, {} files, {} symlinks, {} special), {} data bytes: {}",
            cli.image.display(),
            report.inodes,
            report.directories,
            report.regular_files,
            report.symlinks,
            report.special_files,
            report.data_bytes,
            verdict(
                &report,
                fingerprints.as_ref(),
                verity.as_ref(),
                extract_error.is_some()
            )
        )?;
        if report.compressed_files > 0 {
            writeln!(
                out,
                "{} compressed file(s): {} bytes of pclusters decoded to {} bytes",
                report.compressed_files, report.compressed_bytes, report.decoded_bytes
            )?;
        }
        if cli.print_ratio {
            writeln!(out, "Compression ratio: {}", ratio_text(&report))?;
        }
        drop(out);
        if let Some(v) = &verity {
            verity::print(v, &image_name);
        }
        let mut out = std::io::stdout().lock();
        if let Some(r) = &extract_report {
            writeln!(
                out,
                "extracted {} dirs, {} files, {} symlinks, {} special files, {} hard links, {} bytes",
                r.directories, r.files, r.symlinks, r.special_files, r.hard_links, r.bytes_written
            )?;
        }
    }
    Ok(if clean {
        Exit::Ok
    } else if extract_failed {
        Exit::Operational
    } else {
        Exit::ErrorsLeft
    })
}

/// The last word of the summary line: `clean` exactly when the exit status is 0.
fn verdict(
    report: &CheckReport,
    fingerprints: Option<&erofs_share::verify::VerifyReport>,
    verity: Option<&verity::VerityOutcome>,
    extract_failed: bool,
) -> String {
    let mut bad = Vec::new();
    if !report.is_clean() {
        bad.push(format!("{} problem(s)", report.problems.len()));
    }
    if let Some(f) = fingerprints.filter(|f| fingerprints::failed(f)) {
        bad.push(if f.has_no_fingerprints() {
            "no fingerprints to verify".to_string()
        } else {
            format!("{} fingerprint error(s)", f.errors())
        });
    }
    if verity.is_some_and(|v| !v.ok()) {
        bad.push("dm-verity mismatch".into());
    }
    if extract_failed {
        bad.push("extraction failed".into());
    }
    if bad.is_empty() {
        "clean".into()
    } else {
        bad.join(", ")
    }
}

/// Refuses a non-empty extraction directory before the check, not after it.
fn check_extract_dir(cli: &Cli, dest: &Path) -> Result<()> {
    if !cli.overwrite
        && let Ok(mut rd) = std::fs::read_dir(dest)
        && rd.next().is_some()
    {
        bail!(
            "--extract={}: the directory is not empty (use --overwrite to extract over existing files)",
            dest.display()
        );
    }
    Ok(())
}

/// `stored blocks * 100 / decoded blocks`, as fsck.erofs -p prints it.
fn ratio_text(r: &CheckReport) -> String {
    if r.logical_blocks == 0 {
        return "n/a (no file data)".into();
    }
    format!(
        "{:.2}(%)",
        r.physical_blocks as f64 * 100.0 / r.logical_blocks as f64
    )
}

fn print_json(
    cli: &Cli,
    check: Option<&CheckReport>,
    extract: Option<&ExtractReport>,
    fingerprints: Option<&erofs_share::verify::VerifyReport>,
    verity: Option<&verity::VerityOutcome>,
    error: Option<String>,
) -> Result<()> {
    let out = JsonOut {
        image: escape_bytes(cli.image.as_os_str().as_bytes()),
        clean: check.is_some_and(|c| c.is_clean())
            && error.is_none()
            && !fingerprints.is_some_and(fingerprints::failed)
            && verity.is_none_or(verity::VerityOutcome::ok),
        check,
        extract,
        fingerprints,
        verity,
        error,
    };
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, &out)?;
    writeln!(stdout)?;
    Ok(())
}

/// The nid and path selected by `--path` / `--nid` (the root by default).
fn subtree(cli: &Cli, img: &Image) -> Result<(u64, Vec<u8>)> {
    Ok(match (&cli.path, cli.nid) {
        (Some(p), _) => {
            let bytes = p.as_bytes();
            let nid = img
                .lookup(bytes)
                .map_err(|e| match e {
                    erofs_reader::Error::NotFound { .. } => anyhow::anyhow!(
                        "--path {}: no such file or directory in {}",
                        p.to_string_lossy(),
                        cli.image.display()
                    ),
                    e => anyhow::Error::from(e).context(format!("--path {}", p.to_string_lossy())),
                })?
                .nid;
            (nid, bytes.to_vec())
        }
        (None, Some(n)) => (n, format!("(nid {n})").into_bytes()),
        (None, None) => (img.root_nid(), b"/".to_vec()),
    })
}

fn do_extract(cli: &Cli, img: &Image, dest: &Path, token: &CancelToken) -> Result<ExtractReport> {
    let (nid, _) = subtree(cli, img)?;
    let mut opts = ExtractOptions::default()
        .overwrite(cli.overwrite)
        .xattrs(!cli.no_xattrs);
    if cli.no_preserve_owner {
        opts.preserve_owner = false;
    }
    let bar = erofs_cli::Bar::new(!cli.quiet && !cli.json, "extracting", "inodes");
    Ok(extract(
        img,
        nid,
        dest,
        opts,
        &Cancellable::new(&bar, token.clone()),
    )?)
}
