//! Damaged images: mount and read everything; there must be errors (as planned) and no crash.
//! The host checks the kernel log for oopses, BUGs and warnings.

use super::util::{mount, umount};
use crate::Ctx;
use anyhow::Context;
use erofs_guest::manifest::{WalkOptions, walk};
use erofs_guest::plan::{CorruptExpect, CorruptParams};
use std::path::Path;

pub fn run(ctx: &mut Ctx, params: &serde_json::Value) -> anyhow::Result<()> {
    let p: CorruptParams = serde_json::from_value(params.clone()).context("corrupt params")?;
    for c in &p.carriers {
        let r = mount(c)
            .map(|()| format!("{} on {}", c.source, c.target))
            .map_err(|e| format!("mount carrier {}: {e}", c.source));
        ctx.check(&format!("carrier {}", c.source), r);
    }
    for c in &p.cases {
        let r = match mount(&c.mount) {
            Err(e) => match c.expect {
                CorruptExpect::MountFails | CorruptExpect::SomeError | CorruptExpect::NoCrash => {
                    Ok(format!("mount failed: {e}"))
                }
            },
            Ok(()) => {
                let w = walk(
                    Path::new(&c.mount.target),
                    &WalkOptions {
                        also_mmap: true,
                        max_file_bytes: Some(64 << 20),
                        ..Default::default()
                    },
                );
                let um = umount(&c.mount.target);
                let summary = format!(
                    "mounted; walk: {} entries, {} error(s){}",
                    w.manifest.entries.len(),
                    w.errors.len(),
                    w.errors
                        .first()
                        .map(|e| format!(", first: {e}"))
                        .unwrap_or_default()
                );
                match (c.expect, um) {
                    (_, Err(e)) => Err(format!("{summary}; {e}")),
                    (CorruptExpect::MountFails, _) => {
                        Err(format!("expected the mount to fail; {summary}"))
                    }
                    (CorruptExpect::SomeError, _) if w.errors.is_empty() => {
                        Err(format!("expected errors; {summary}"))
                    }
                    _ => Ok(summary),
                }
            }
        };
        ctx.check(&c.label, r);
    }
    for c in p.carriers.iter().rev() {
        ctx.check(&format!("carrier {} umount", c.source), umount(&c.target));
    }
    Ok(())
}
