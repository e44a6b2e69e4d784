//! A dm-verity device over an image with one damaged data block: that file reads as EIO,
//! and nothing else is affected.

use super::util::{mount, umount};
use crate::Ctx;
use anyhow::Context;
use erofs_guest::manifest::{Manifest, WalkOptions, diff, walk};
use erofs_guest::plan::VerityEioParams;
use std::path::Path;

pub fn run_eio(ctx: &mut Ctx, params: &serde_json::Value) -> anyhow::Result<()> {
    let p: VerityEioParams = serde_json::from_value(params.clone()).context("verity params")?;
    let expected: Manifest =
        serde_json::from_slice(&std::fs::read(&p.manifest).with_context(|| p.manifest.clone())?)
            .with_context(|| format!("parsing {}", p.manifest))?;
    if !ctx.check(
        "mount the damaged dm-verity device",
        mount(&p.mount)
            .map(|()| format!("{} on {}", p.mount.source, p.mount.target))
            .map_err(|e| format!("mount {}: {e}", p.mount.source)),
    ) {
        return Ok(());
    }
    let bad_path = Path::new(&p.mount.target).join(&p.bad);
    let r = match std::fs::read(&bad_path) {
        Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(format!("{}: {e}", p.bad)),
        Err(e) => Err(format!("{}: {e}, not EIO", p.bad)),
        Ok(b) => Err(format!("{}: read {} bytes, expected EIO", p.bad, b.len())),
    };
    ctx.check("the damaged file reads as EIO", r);

    let walked = walk(Path::new(&p.mount.target), &WalkOptions::default());
    let bad = p.bad.as_bytes();
    let mentions_bad = |line: &str| line.contains(&p.bad);
    let others: Vec<String> = walked
        .errors
        .iter()
        .filter(|e| !mentions_bad(e))
        .cloned()
        .chain(
            diff(&expected, &walked.manifest)
                .into_iter()
                .filter(|d| !mentions_bad(d)),
        )
        .collect();
    for l in others.iter().take(20) {
        ctx.note(&format!("verity: {l}"));
    }
    let r = if others.is_empty() && walked.errors.iter().any(|e| mentions_bad(e)) {
        Ok(format!(
            "{} other entries match; {} error(s), all on {}",
            expected.entries.iter().filter(|e| e.path != bad).count(),
            walked.errors.len(),
            p.bad
        ))
    } else if others.is_empty() {
        Err(format!("the walk read {} without an error", p.bad))
    } else {
        Err(format!(
            "{} problem(s) outside {}: {}",
            others.len(),
            p.bad,
            others[0]
        ))
    };
    ctx.check("only the damaged file is affected", r);
    ctx.check("umount", umount(&p.mount.target));
    Ok(())
}
