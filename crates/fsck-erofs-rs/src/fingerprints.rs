//! `--verify-fingerprints` (alias `--xattr-inode-digest`): recompute every content
//! fingerprint in parallel and compare it with the stored value.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Result;
use erofs_reader::{CancelToken, Cancellable, Image};
use erofs_share::verify::{Issue, VerifyReport, verify_fingerprints};

/// A finished verification and how long it took.
pub struct Verified {
    report: VerifyReport,
    took: Duration,
}

/// Verifies `img`, printing nothing (see [`print()`]) so that it can run alongside the check.
/// Stops with [`erofs_reader::Error::Cancelled`] once `token` is cancelled.
pub fn verify(
    img: &Image,
    show_progress: bool,
    token: &CancelToken,
) -> erofs_reader::Result<Verified> {
    let bar = erofs_cli::Bar::new(show_progress, "verifying fingerprints", "files");
    let started = Instant::now();
    let report = verify_fingerprints(img, &Cancellable::new(&bar, token.clone()))?;
    Ok(Verified {
        report,
        took: started.elapsed(),
    })
}

/// Prints the human report of `verified` unless `json`. Returns the report.
pub fn print(verified: Verified, image_name: &str, json: bool) -> Result<VerifyReport> {
    let Verified { report, took } = verified;
    if json {
        return Ok(report);
    }
    let mut err = std::io::stderr().lock();
    for p in &report.superblock_problems {
        writeln!(err, "fingerprint problem [superblock]: {p}")?;
    }
    for i in &report.issues {
        let path = i.paths.first().map_or("<unlinked>", String::as_str);
        let what = match &i.issue {
            Issue::Mismatch { stored, computed } => {
                format!("fingerprint MISMATCH: stored sha256:{stored}, content sha256:{computed}")
            }
            Issue::Unidentified { value_len } => {
                format!(
                    "unidentified fingerprint: {value_len}-byte value is not `sha256:` + 32 bytes"
                )
            }
            Issue::ReadError { error } => format!("cannot read the data: {error}"),
            Issue::Missing => {
                "warning: non-empty regular file without a fingerprint (it will not share)".into()
            }
            Issue::OnEmptyFile => "warning: empty file carries a fingerprint".into(),
            other => format!("{other:?}"),
        };
        writeln!(err, "nid {} {path} ({} bytes): {what}", i.nid, i.size)?;
    }
    let mut out = std::io::stdout().lock();
    if report.has_no_fingerprints() {
        writeln!(
            out,
            "fsck.erofs-rs: {image_name} has no fingerprint xattrs (compat ishare_xattrs is not set): nothing to verify"
        )?;
        return Ok(report);
    }
    let secs = took.as_secs_f64();
    let mismatched = report
        .issues
        .iter()
        .filter(|i| matches!(i.issue, Issue::Mismatch { .. }))
        .count();
    writeln!(
        out,
        "fsck.erofs-rs: {image_name}: {} of {} fingerprints match ({} MiB hashed in {secs:.2} s, {:.0} MiB/s); \
         {mismatched} mismatched, {} error(s), {} warning(s); name {}",
        report.matched,
        report.verified,
        report.bytes_hashed >> 20,
        report.bytes_hashed as f64 / 1048576.0 / secs.max(1e-6),
        report.errors(),
        report.warnings(),
        report.fingerprint_name.as_deref().unwrap_or("?"),
    )?;
    Ok(report)
}

/// Whether the report makes fsck fail: any error, or no fingerprints at all.
pub fn failed(report: &VerifyReport) -> bool {
    report.errors() > 0 || report.has_no_fingerprints()
}
