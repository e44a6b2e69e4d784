//! Mount every image each planned way and compare the whole tree with the host's manifest.

use super::util::{check_statfs, how, mount, umount};
use crate::Ctx;
use anyhow::Context;
use erofs_guest::manifest::{Manifest, WalkOptions, diff, walk};
use erofs_guest::plan::ConformanceParams;
use std::path::Path;
use std::time::Instant;

/// Most diff lines printed per comparison.
const MAX_DIFF_LINES: usize = 40;

pub fn run(ctx: &mut Ctx, params: &serde_json::Value) -> anyhow::Result<()> {
    let p: ConformanceParams =
        serde_json::from_value(params.clone()).context("conformance params")?;
    for c in &p.carriers {
        let r = mount(c)
            .map(|()| format!("{} on {}", c.source, c.target))
            .map_err(|e| format!("mount carrier {}: {e}", c.source));
        ctx.check(&format!("carrier {}", c.source), r);
    }
    for img in &p.images {
        let expected: Manifest = serde_json::from_slice(
            &std::fs::read(&img.manifest).with_context(|| img.manifest.clone())?,
        )
        .with_context(|| format!("parsing {}", img.manifest))?;
        for m in &img.mounts {
            let name = format!("{} {}", img.label, how(m));
            if !ctx.check(
                &format!("{name} mount"),
                mount(m)
                    .map(|()| format!("{} -o {:?}", m.source, m.data))
                    .map_err(|e| format!("mount {} on {}: {e}", m.source, m.target)),
            ) {
                continue;
            }
            if m.fstype == "erofs" {
                ctx.check(
                    &format!("{name} statfs"),
                    check_statfs(&m.target, img.block_size),
                );
            }
            let t = Instant::now();
            let walked = walk(
                Path::new(&m.target),
                &WalkOptions {
                    also_mmap: true,
                    ..Default::default()
                },
            );
            let secs = t.elapsed().as_secs_f64();
            let mut problems: Vec<String> = walked
                .errors
                .iter()
                .map(|e| format!("error: {e}"))
                .collect();
            problems.extend(diff(&expected, &walked.manifest));
            let r = if problems.is_empty() {
                Ok(format!(
                    "{} entries, {} bytes read twice (read+mmap) in {secs:.1} s",
                    walked.manifest.entries.len(),
                    walked.bytes_read
                ))
            } else {
                for l in problems.iter().take(MAX_DIFF_LINES) {
                    ctx.note(&format!("{name}: {l}"));
                }
                Err(format!(
                    "{} difference(s); first: {}",
                    problems.len(),
                    problems[0]
                ))
            };
            ctx.check(&format!("{name} compare"), r);
            ctx.check(&format!("{name} umount"), umount(&m.target));
        }
    }
    for c in p.carriers.iter().rev() {
        ctx.check(&format!("carrier {} umount", c.source), umount(&c.target));
    }
    Ok(())
}
