//! Page-cache residency of two files with the same content, seen through mmap + mincore,
//! posix_fadvise(DONTNEED) and /proc/meminfo. On a stock kernel (or without `inode_share`)
//! each file has its own page cache; with sharing, dropping one empties the other.

use super::util::{mount, umount};
use crate::Ctx;
use anyhow::Context;
use erofs_guest::plan::PageCacheParams;
use erofs_guest::sys;
use std::io::Read;
use std::path::Path;

fn read_all(p: &str) -> Result<u64, String> {
    let mut f = std::fs::File::open(p).map_err(|e| format!("open {p}: {e}"))?;
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => n += k as u64,
            Err(e) => return Err(format!("read {p}: {e}")),
        }
    }
}

fn residency(p: &str) -> Result<(usize, usize), String> {
    sys::resident_pages(Path::new(p)).map_err(|e| format!("mmap+mincore {p}: {e}"))
}

fn cached_kb() -> Result<u64, String> {
    sys::meminfo_kb("Cached").map_err(|e| e.to_string())
}

pub fn run(ctx: &mut Ctx, params: &serde_json::Value) -> anyhow::Result<()> {
    let p: PageCacheParams = serde_json::from_value(params.clone()).context("page_cache params")?;
    for m in &p.mounts {
        let r = mount(m)
            .map(|()| format!("{} -o {:?}", m.source, m.data))
            .map_err(|e| format!("mount {}: {e}", m.source));
        if !ctx.check(&format!("mount {}", m.target), r) {
            return Ok(());
        }
    }
    let (a, b) = (&p.file_a, &p.file_b);
    ctx.check(
        "drop caches",
        sys::drop_caches()
            .map(|()| String::new())
            .map_err(|e| e.to_string()),
    );
    let c0 = cached_kb().map_err(anyhow::Error::msg)?;

    let size = read_all(a);
    let Some(size) = ctx.check_value("read a", size) else {
        return Ok(());
    };
    let c1 = cached_kb().map_err(anyhow::Error::msg)?;
    let ra = residency(a);
    ctx.check(
        "a resident after reading it",
        ra.clone().and_then(|(r, t)| {
            if r == t {
                Ok(format!("{r}/{t} pages"))
            } else {
                Err(format!("{r}/{t} pages"))
            }
        }),
    );

    let _ = ctx.check_value("read b", read_all(b));
    let c2 = cached_kb().map_err(anyhow::Error::msg)?;
    let kb = size / 1024;
    let (d1, d2) = (c1.saturating_sub(c0), c2.saturating_sub(c1));
    ctx.note(&format!(
        "Cached: +{d1} kB reading a, +{d2} kB reading b ({kb} kB each)"
    ));
    // Reading a adds about its size; reading b adds about its size again unless it shares a's.
    ctx.check(
        "Cached grew by a's size reading a",
        if d1 * 10 >= kb * 8 {
            Ok(format!("+{d1} kB"))
        } else {
            Err(format!("+{d1} kB for a {kb} kB file"))
        },
    );
    let b_cost = if p.expect_shared {
        if d2 * 10 <= kb {
            Ok(format!("+{d2} kB (shared)"))
        } else {
            Err(format!("+{d2} kB: b got its own page cache"))
        }
    } else if d2 * 10 >= kb * 8 {
        Ok(format!("+{d2} kB (not shared)"))
    } else {
        Err(format!("+{d2} kB: b did not get its own page cache"))
    };
    ctx.check("Cached growth reading b", b_cost);

    ctx.check(
        "fadvise DONTNEED b",
        sys::fadvise_dontneed(Path::new(b))
            .map(|()| String::new())
            .map_err(|e| e.to_string()),
    );
    let rb = residency(b);
    let ra = residency(a);
    ctx.check(
        "b not resident after DONTNEED",
        rb.and_then(|(r, t)| {
            if r == 0 {
                Ok(format!("0/{t} pages"))
            } else {
                Err(format!("{r}/{t} pages still resident"))
            }
        }),
    );
    let a_after = ra.and_then(|(r, t)| match (p.expect_shared, r) {
        (true, 0) => Ok(format!("0/{t} pages: dropping b dropped a (shared)")),
        (true, _) => Err(format!(
            "{r}/{t} pages: a kept its pages, so it is not shared with b"
        )),
        (false, r) if r == t => Ok(format!("{r}/{t} pages: a unaffected (not shared)")),
        (false, _) => Err(format!("{r}/{t} pages: a lost pages when b was dropped")),
    });
    ctx.check("a after DONTNEED on b", a_after);

    for m in p.mounts.iter().rev() {
        ctx.check(&format!("umount {}", m.target), umount(&m.target));
    }
    Ok(())
}
