//! Page-cache sharing (`-o inode_share,domain_id=ID`) on the patched kernel.
//!
//! Sharing is measured the way erofs-utils' test 028 does: read both files fully, drop one with
//! `posix_fadvise(DONTNEED)`, then count the other's resident pages through mmap + mincore. If
//! the two share one page cache the other is now empty; if not it is still fully resident.
//!
//! One guest scenario with several modes (the `mode` parameter), each a separate run:
//! - `rules`: mount rules, domains, fingerprints, sizes, O_DIRECT, mmap, file-backed mounts,
//!   and the lifetime of the shared inode;
//! - `layouts`: two identical files in each of several images (one per data layout);
//! - `umount`: unmount and remount one member over and over while another is being read;
//! - `headline`: `Cached` growth reading the same files through 4 mounts, with and without
//!   sharing;
//! - `stress`: several processes reading and mapping the same files through 3 mounts;
//! - `domains`: fingerprint values and domain ids that collide when concatenated;
//! - `overlay`: shared EROFS members as the lower layers of an overlayfs;
//! - `mixed`: differently built images of the same files in one domain;
//! - `churn`: members come and go (unmount, loop detach and reattach to another image, a
//!   mount/unmount storm from several processes, `drop_caches=2`) while another member is read.
//! - `window`, `dio-window`, `last-put` (debug kernel only, test knob): a member is unmounted
//!   while a reader holds it, between mapping a miss and submitting its I/O.

// fork(2)/waitpid(2) for the stress and unmount runs: the guest is single-threaded.
#![allow(unsafe_code)]

use super::util::{mount, umount};
use crate::Ctx;
use anyhow::{Context, Result};
use erofs_guest::manifest::hex;
use erofs_guest::plan::MountSpec;
use erofs_guest::sys;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// Parameters, written by the host (`xtask/src/scenarios/share.rs`).
#[derive(Debug, Deserialize)]
struct Params {
    mode: String,
    /// Block devices by image name.
    #[serde(default)]
    disks: BTreeMap<String, String>,
    /// A disk holding image files for file-backed mounts, mounted first.
    #[serde(default)]
    carrier: Option<MountSpec>,
    /// Image files in the carrier by image name.
    #[serde(default)]
    files: BTreeMap<String, String>,
    /// Two files with identical content, present in every small image.
    #[serde(default)]
    same: Vec<String>,
    /// SHA-256 (hex) of each file by name.
    #[serde(default)]
    digests: BTreeMap<String, String>,
    /// Devices of the big image (headline and stress).
    #[serde(default)]
    big: Vec<String>,
    /// Run time of the stress run.
    #[serde(default)]
    secs: u64,
    /// `mixed`: (image name, device, group) of each member; members of one group must share.
    #[serde(default)]
    mixed: Vec<(String, String, String)>,
    /// `churn`: rebind the loop device to the image with other bytes (`share-rebind`)
    /// instead of to the same image.
    #[serde(default)]
    rebind_other: bool,
    /// `churn`: SHA-256 (first 8 bytes, hex) of every 4 KiB page of `same[0]` in the image
    /// and in the image with other bytes, to tell where wrong bytes came from.
    #[serde(default)]
    pages: BTreeMap<String, Vec<String>>,
    /// `mixed`: file (relative path) -> digest, by group.
    #[serde(default)]
    groups: BTreeMap<String, BTreeMap<String, String>>,
}

fn read_sha(p: &str) -> Result<(u64, String), String> {
    let mut f = std::fs::File::open(p).map_err(|e| format!("open {p}: {e}"))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        match f.read(&mut buf) {
            Ok(0) => return Ok((n, hex(&h.finalize()))),
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) => return Err(format!("read {p}: {e}")),
        }
    }
}

fn mmap_sha(p: &str) -> Result<String, String> {
    sys::mmap_sha256(Path::new(p))
        .map(|d| hex(&d))
        .map_err(|e| format!("mmap {p}: {e}"))
}

fn resident(p: &str) -> Result<(usize, usize), String> {
    sys::resident_pages(Path::new(p)).map_err(|e| format!("mmap+mincore {p}: {e}"))
}

fn dontneed(p: &str) -> Result<(), String> {
    sys::fadvise_dontneed(Path::new(p)).map_err(|e| format!("fadvise {p}: {e}"))
}

fn ok_or(cond: bool, detail: String) -> Result<String, String> {
    if cond { Ok(detail) } else { Err(detail) }
}

fn log_len() -> usize {
    sys::kernel_log().map(|l| l.len()).unwrap_or(0)
}

/// The /proc/mounts line of the mount at `target`.
fn mounts_line(target: &str) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let needle = format!(" {target} ");
    mounts
        .lines()
        .find(|l| l.contains(&needle))
        .unwrap_or("")
        .to_string()
}

fn log_since(mark: usize) -> String {
    let l = sys::kernel_log().unwrap_or_default();
    l.get(mark.min(l.len())..).unwrap_or("").to_string()
}

struct T<'a> {
    ctx: &'a mut Ctx,
    p: &'a Params,
}

impl T<'_> {
    fn dev(&self, image: &str) -> Result<String> {
        self.p
            .disks
            .get(image)
            .cloned()
            .with_context(|| format!("no disk for image {image}"))
    }

    fn file(&self, image: &str) -> Result<String> {
        self.p
            .files
            .get(image)
            .cloned()
            .with_context(|| format!("no carrier file for image {image}"))
    }

    /// Mounts and reports the failure as a check.
    fn mount(&mut self, source: &str, target: &str, data: &str) -> bool {
        let m = MountSpec {
            source: source.into(),
            target: target.into(),
            fstype: "erofs".into(),
            data: data.into(),
        };
        let r = mount(&m)
            .map(|()| format!("{source} -o {data:?}"))
            .map_err(|e| format!("mount {source} -o {data:?}: {e}"));
        if r.is_err() {
            self.ctx.check(&format!("mount {target}"), r);
            return false;
        }
        true
    }

    /// mount(2)'s errno, unmounting again on success.
    fn mount_errno(&self, source: &str, target: &str, data: &str) -> Option<i32> {
        let m = MountSpec {
            source: source.into(),
            target: target.into(),
            fstype: "erofs".into(),
            data: data.into(),
        };
        match mount(&m) {
            Ok(()) => {
                let _ = umount(target);
                None
            }
            Err(e) => Some(e.raw_os_error().unwrap_or(0)),
        }
    }

    fn umount(&mut self, target: &str) {
        let r = umount(target);
        if r.is_err() {
            self.ctx.check(&format!("umount {target}"), r);
        }
    }

    fn digest(&self, name: &str) -> String {
        self.p.digests.get(name).cloned().unwrap_or_default()
    }

    /// Mounts `(source, target, options)` in order, runs `body`, and unmounts in reverse.
    /// A mount that fails is reported as a check; the ones before it are unmounted again and
    /// `body` does not run.
    fn with_mounts(&mut self, mounts: &[(&str, &str, &str)], body: impl FnOnce(&mut Self)) {
        let mut done = 0;
        for (source, target, data) in mounts {
            if !self.mount(source, target, data) {
                break;
            }
            done += 1;
        }
        if done == mounts.len() {
            body(self);
        }
        for (_, target, _) in mounts[..done].iter().rev() {
            self.umount(target);
        }
    }

    /// Drops `dropped` from the page cache, then maps each of `paths`: every one must
    /// still show `digest`.
    fn mmap_check(&mut self, check: &str, dropped: &str, paths: &[&str], digest: &str) {
        let r = (|| {
            dontneed(dropped)?;
            let got = paths
                .iter()
                .map(|p| mmap_sha(p))
                .collect::<Result<Vec<_>, _>>()?;
            ok_or(
                got.iter().all(|d| d == digest),
                format!("mmap digests {got:?}"),
            )
        })();
        self.ctx.check(check, r);
    }

    /// O_DIRECT opens of a shared file must fail with EINVAL.
    fn o_direct_einval(&mut self, check: &str, path: &str) {
        let od = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .map(drop); // close at once, or the unmount after the check fails
        self.ctx.check(
            check,
            match od {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok("EINVAL".into()),
                Err(e) => Err(format!("{e}")),
                Ok(()) => Err("open succeeded".into()),
            },
        );
    }

    /// fcntl(F_SETFL, O_DIRECT) on an open shared file must fail with EINVAL, as open does,
    /// instead of succeeding and then reading through the page cache.
    fn setfl_direct_einval(&mut self, check: &str, path: &str) {
        use std::os::fd::AsRawFd;
        let r = std::fs::File::open(path)
            .map_err(|e| format!("open {path}: {e}"))
            .and_then(|f| {
                let fd = f.as_raw_fd();
                // SAFETY: fcntl on a descriptor this function owns.
                let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
                // SAFETY: as above.
                let r = unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_DIRECT) };
                let e = std::io::Error::last_os_error();
                match (r, e.raw_os_error()) {
                    (-1, Some(libc::EINVAL)) => Ok("EINVAL".into()),
                    (-1, _) => Err(format!("{e}")),
                    _ => Err("F_SETFL O_DIRECT succeeded".into()),
                }
            });
        self.ctx.check(check, r);
    }

    /// The test-028 check: read both, drop `b`, count `a`'s resident pages.
    fn pair(&mut self, check: &str, a: &str, b: &str, digest: &str, expect_shared: bool) {
        let r = (|| {
            let (na, da) = read_sha(a)?;
            let (_, db) = read_sha(b)?;
            if da != digest || db != digest {
                return Err(format!(
                    "content differs: {a} {da}, {b} {db}, want {digest}"
                ));
            }
            dontneed(b)?;
            let (res, total) = resident(a)?;
            let shared = res == 0 && na > 0;
            let what = if shared { "shared" } else { "not shared" };
            let detail = format!(
                "{a} vs {b}: {res}/{total} pages resident after DONTNEED on the other: {what}"
            );
            ok_or(shared == expect_shared && (shared || res == total), detail)
        })();
        self.ctx.check(check, r);
    }
}

pub fn run(ctx: &mut Ctx, params: &serde_json::Value) -> anyhow::Result<()> {
    let p: Params = serde_json::from_value(params.clone()).context("share params")?;
    let mut t = T { ctx, p: &p };
    match p.mode.as_str() {
        "rules" => rules(&mut t),
        "layouts" => layouts(&mut t),
        "umount" => umount_while_reading(&mut t),
        "compressed" => compressed(&mut t),
        "headline" => headline(&mut t),
        "stress" => stress(&mut t),
        "domains" => domains(&mut t),
        "churn" => churn(&mut t),
        "window" => window(&mut t),
        "dio-window" => dio_window(&mut t),
        "last-put" => last_put(&mut t),
        "mixed" => mixed(&mut t),
        "overlay" => overlay(&mut t),
        m => anyhow::bail!("unknown share mode {m:?}"),
    }
}

fn rules(t: &mut T) -> Result<()> {
    let (s1, s2) = (t.p.same[0].clone(), t.p.same[1].clone());
    let dg = t.digest(&s1);
    let share = t.dev("share")?;
    let share2 = t.dev("share2")?;
    let at = |m: &str, f: &str| format!("{m}/{f}");
    let (a1, a2, b1, b2) = (
        at("/mnt/a", &s1),
        at("/mnt/a", &s2),
        at("/mnt/b", &s1),
        at("/mnt/b", &s2),
    );

    t.with_mounts(&[(&share, "/mnt/a", "")], |t| {
        t.pair("no inode_share: not shared", &a1, &a2, &dg, false);
    });

    // Two identical files in one image.
    let mark = log_len();
    t.with_mounts(&[(&share, "/mnt/a", "inode_share,domain_id=d1")], |t| {
        let log = log_since(mark);
        t.ctx.check(
            "EXPERIMENTAL banner",
            ok_or(
                log.contains("EXPERIMENTAL EROFS page cache share support in use"),
                "banner".into(),
            ),
        );
        t.pair("one image: identical files shared", &a1, &a2, &dg, true);
        let line = mounts_line("/mnt/a");
        t.ctx.check(
            "/proc/mounts shows inode_share, never domain_id",
            ok_or(
                line.contains("inode_share") && !line.contains("domain_id") && !line.contains("d1"),
                line,
            ),
        );
        t.o_direct_einval("O_DIRECT open of a shared file gives EINVAL", &a1);
        t.setfl_direct_einval(
            "fcntl(F_SETFL, O_DIRECT) on a shared file gives EINVAL",
            &a1,
        );
        t.mmap_check(
            "mmap of shared files has the right content",
            &a2,
            &[&a1, &a2],
            &dg,
        );
    });

    t.with_mounts(
        &[
            (&share, "/mnt/a", "inode_share,domain_id=d2"),
            (&share2, "/mnt/b", "inode_share,domain_id=d2"),
        ],
        |t| {
            t.pair("two images, same domain: shared (1)", &a1, &b2, &dg, true);
            t.pair("two images, same domain: shared (2)", &b1, &a2, &dg, true);
        },
    );
    t.with_mounts(
        &[
            (&share, "/mnt/a", "inode_share,domain_id=d3"),
            (&share2, "/mnt/b", "inode_share,domain_id=d4"),
        ],
        |t| {
            let check = "two images, different domains: not shared";
            t.pair(check, &a1, &b1, &dg, false);
        },
    );

    let e = t.mount_errno(&share, "/mnt/a", "inode_share");
    t.ctx.check(
        "inode_share without domain_id fails with EINVAL",
        ok_or(e == Some(libc::EINVAL), format!("errno {e:?}")),
    );

    let nofp = t.dev("nofp")?;
    let mark = log_len();
    t.with_mounts(&[(&nofp, "/mnt/a", "inode_share,domain_id=d5")], |t| {
        let log = log_since(mark);
        t.ctx.check(
            "no fingerprints: mounts with the info message",
            ok_or(
                log.contains("on-disk ishare xattrs not found. Turning off inode_share."),
                "message".into(),
            ),
        );
        let line = mounts_line("/mnt/a");
        t.ctx.check(
            "no fingerprints: inode_share is off",
            ok_or(!line.contains("inode_share"), line),
        );
        t.pair("no fingerprints: not shared", &a1, &a2, &dg, false);
    });

    // The same fingerprint with different sizes.
    let sizemm = t.dev("sizemm")?;
    let mark = log_len();
    t.with_mounts(
        &[
            (&share, "/mnt/a", "inode_share,domain_id=d6"),
            (&sizemm, "/mnt/b", "inode_share,domain_id=d6"),
        ],
        |t| {
            let r = (|| {
                read_sha(&a1)?;
                read_sha(&b1)?;
                dontneed(&b1)?;
                let (res, total) = resident(&a1)?;
                // As upstream: the size of the inode being linked, then the shared inode's.
                let len = |p: &str| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
                let want = format!(
                    "size({}:{}) not matches for the same fingerprint",
                    len(&b1),
                    len(&a1)
                );
                let warned = log_since(mark).contains(&want);
                ok_or(
                    res == total && warned,
                    format!("{res}/{total} pages resident, warning {want:?} {warned}"),
                )
            })();
            t.ctx
                .check("same fingerprint, different size: not shared, warning", r);
        },
    );

    let badid = t.dev("badid")?;
    let e = t.mount_errno(&badid, "/mnt/a", "");
    t.ctx.check(
        "bad ishare prefix id fails the mount with EFSCORRUPTED",
        ok_or(e == Some(libc::EUCLEAN), format!("errno {e:?}")),
    );

    // File-backed mounts.
    if let Some(c) = t.p.carrier.clone() {
        let (f1, f2) = (t.file("share")?, t.file("share2")?);
        let (fa1, fa2, fb1, fb2, fc1) = (
            at("/mnt/fa", &s1),
            at("/mnt/fa", &s2),
            at("/mnt/fb", &s1),
            at("/mnt/fb", &s2),
            at("/mnt/fc", &s1),
        );
        t.with_mounts(
            &[
                (&c.source, &c.target, ""),
                (&f1, "/mnt/fa", "inode_share,domain_id=f1"),
                (&f2, "/mnt/fb", "inode_share,domain_id=f1"),
                (&share, "/mnt/fc", "inode_share,domain_id=f1"),
            ],
            |t| {
                t.pair("file-backed, one image: shared", &fa1, &fa2, &dg, true);
                t.pair("file-backed, two images: shared", &fa1, &fb2, &dg, true);
                t.pair(
                    "file-backed vs block device: not shared (other read path)",
                    &fa1,
                    &fc1,
                    &dg,
                    false,
                );
                t.mmap_check("file-backed: mmap content", &fb1, &[&fb1], &dg);
                t.o_direct_einval("file-backed: O_DIRECT gives EINVAL", &fa1);
            },
        );
    }

    // The shared inode lives while a member does, and goes away with the last one. The
    // members are unmounted one by one here, so no with_mounts.
    if t.mount(&share, "/mnt/a", "inode_share,domain_id=lt") {
        if t.mount(&share2, "/mnt/b", "inode_share,domain_id=lt") {
            let _ = std::fs::metadata(&b2); // b's inode joins now
            let _ = read_sha(&a1);
            t.umount("/mnt/a");
            let r =
                resident(&b2).and_then(|(r, n)| ok_or(r == n, format!("{r}/{n} pages resident")));
            t.ctx
                .check("lifetime: pages survive unmounting the first member", r);
            t.umount("/mnt/b");
            t.with_mounts(&[(&share2, "/mnt/b", "inode_share,domain_id=lt")], |t| {
                let r = resident(&b2)
                    .and_then(|(r, n)| ok_or(r == 0, format!("{r}/{n} pages resident")));
                t.ctx.check(
                    "lifetime: the shared inode went away with its last member",
                    r,
                );
                let r = read_sha(&b2).and_then(|(_, d)| ok_or(d == dg, d));
                t.ctx.check("lifetime: content read again", r);
            });
        } else {
            t.umount("/mnt/a");
        }
    }
    Ok(())
}

fn layouts(t: &mut T) -> Result<()> {
    let (s1, s2) = (t.p.same[0].clone(), t.p.same[1].clone());
    let dg = t.digest(&s1);
    let disks = t.p.disks.clone();
    for (name, dev) in &disks {
        let m = format!("/mnt/l-{name}");
        if !t.mount(dev, &m, "inode_share,domain_id=layouts") {
            continue;
        }
        let (a, b) = (format!("{m}/{s1}"), format!("{m}/{s2}"));
        t.pair(
            &format!("{name}: identical files shared"),
            &a,
            &b,
            &dg,
            true,
        );
        t.mmap_check(&format!("{name}: mmap content"), &b, &[&a], &dg);
        for (f, want) in t.p.digests.clone() {
            let r = read_sha(&format!("{m}/{f}")).and_then(|(_, d)| ok_or(d == want, d));
            t.ctx.check(&format!("{name}: {f} content"), r);
        }
        t.umount(&m);
    }
    Ok(())
}

/// Compressed files: shared within an image and across block-device and file-backed mounts
/// (one read path for both), never with an uncompressed copy.
fn compressed(t: &mut T) -> Result<()> {
    let (s1, s2) = (t.p.same[0].clone(), t.p.same[1].clone());
    let dg = t.digest(&s1);
    let (z, zplain) = (t.dev("z")?, t.dev("zplain")?);
    let z2 = t.file("z2")?;
    let Some(c) = t.p.carrier.clone() else {
        anyhow::bail!("no carrier");
    };
    let at = |m: &str, f: &str| format!("{m}/{f}");
    let (z1, z2s, zf1, zf2, zp1) = (
        at("/mnt/z", &s1),
        at("/mnt/z", &s2),
        at("/mnt/zf", &s1),
        at("/mnt/zf", &s2),
        at("/mnt/zp", &s1),
    );
    let carrier_and_z = [
        (c.source.as_str(), c.target.as_str(), ""),
        (z.as_str(), "/mnt/z", "inode_share,domain_id=z"),
    ];
    t.with_mounts(&carrier_and_z, |t| {
        t.pair("compressed, one image: shared", &z1, &z2s, &dg, true);
        t.with_mounts(&[(&z2, "/mnt/zf", "inode_share,domain_id=z")], |t| {
            let check = "compressed, block device vs file-backed: shared";
            t.pair(check, &z1, &zf2, &dg, true);
            let check = "compressed, file-backed vs block device: shared";
            t.pair(check, &zf1, &z2s, &dg, true);
            t.mmap_check("compressed: mmap content", &z1, &[&zf1, &z2s], &dg);
            for (f, want) in t.p.digests.clone() {
                let r = read_sha(&at("/mnt/zf", &f)).and_then(|(_, d)| ok_or(d == want, d));
                t.ctx.check(&format!("compressed: {f} content"), r);
            }
        });
        t.with_mounts(&[(&zplain, "/mnt/zp", "inode_share,domain_id=z")], |t| {
            let check = "compressed vs uncompressed copy: not shared";
            t.pair(check, &z1, &zp1, &dg, false);
        });
    });
    Ok(())
}

/// fork(2); the child runs `f` and exits with its status.
fn spawn(f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the guest program is single-threaded, so the child may run arbitrary Rust code.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let code = f();
        sys::drain_stdout();
        // SAFETY: leave the child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// waitpid(2): whether the child exited with 0.
fn reap(pid: i32) -> bool {
    let mut st = 0;
    // SAFETY: st is a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut st, 0) };
    r == pid && libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0
}

fn umount_while_reading(t: &mut T) -> Result<()> {
    let (s1, s2) = (t.p.same[0].clone(), t.p.same[1].clone());
    let dg = t.digest(&s1);
    let (d1, d2) = (t.dev("share")?, t.dev("share2")?);
    if !t.mount(&d1, "/mnt/u1", "inode_share,domain_id=um") {
        return Ok(());
    }
    if !t.mount(&d2, "/mnt/u2", "inode_share,domain_id=um") {
        t.umount("/mnt/u1");
        return Ok(());
    }
    // u1 is unmounted and mounted again below, so no with_mounts here.
    // u1's inode joins first, so page-cache misses go to u1 while it is mounted.
    let _ = read_sha(&format!("/mnt/u1/{s1}"));
    let (a, b) = (format!("/mnt/u2/{s1}"), format!("/mnt/u2/{s2}"));
    let want = dg.clone();
    let pid = spawn(move || {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            let ok = read_sha(&a).map(|(_, d)| d == want).unwrap_or(false)
                && mmap_sha(&b).map(|d| d == want).unwrap_or(false);
            if !ok || dontneed(&a).is_err() {
                return 1;
            }
        }
        0
    });
    let mut cycles = 0;
    let mut errors = Vec::new();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(300));
        if let Err(e) = umount("/mnt/u1") {
            errors.push(e);
        }
        std::thread::sleep(Duration::from_millis(300));
        if !t.mount(&d1, "/mnt/u1", "inode_share,domain_id=um") {
            break;
        }
        let _ = read_sha(&format!("/mnt/u1/{s1}"));
        cycles += 1;
    }
    let reader_ok = reap(pid);
    t.ctx.check(
        "unmount one member while another is read: data stays correct",
        ok_or(
            reader_ok && errors.is_empty() && cycles == 10,
            format!("{cycles} unmount/mount cycles, reader ok {reader_ok}, errors {errors:?}"),
        ),
    );
    t.umount("/mnt/u1");
    t.umount("/mnt/u2");
    Ok(())
}

fn big_files(m: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(m)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .map(|e| e.path().display().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn headline(t: &mut T) -> Result<()> {
    let big = t.p.big.clone();
    let mut growth = [0u64; 2];
    let mut total_kb = 0u64;
    for (i, opts) in ["", "inode_share,domain_id=big"].iter().enumerate() {
        let mounts: Vec<String> = (0..big.len()).map(|k| format!("/mnt/big{k}")).collect();
        for (dev, m) in big.iter().zip(&mounts) {
            if !t.mount(dev, m, opts) {
                return Ok(());
            }
        }
        sys::drop_caches().context("drop_caches")?;
        let c0 = sys::meminfo_kb("Cached")?;
        let mut bad = Vec::new();
        total_kb = 0;
        for m in &mounts {
            let mut bytes = 0;
            for f in big_files(m) {
                let name = f.rsplit('/').next().unwrap_or("").to_string();
                match read_sha(&f) {
                    Ok((n, d)) if d == t.digest(&name) => bytes += n,
                    Ok((_, d)) => bad.push(format!("{f}: {d}")),
                    Err(e) => bad.push(e),
                }
            }
            total_kb = bytes / 1024;
        }
        growth[i] = sys::meminfo_kb("Cached")?.saturating_sub(c0);
        t.ctx.check(
            &format!(
                "headline: content through 4 mounts {}",
                if i == 0 {
                    "without sharing"
                } else {
                    "with sharing"
                }
            ),
            ok_or(bad.is_empty(), format!("{bad:?}")),
        );
        for m in &mounts {
            t.umount(m);
        }
    }
    let (x0, x1) = (
        growth[0] as f64 / total_kb as f64,
        growth[1] as f64 / total_kb as f64,
    );
    let line = format!(
        "HEADLINE: reading the same {} MiB through {} mounts: Cached +{} kB without inode_share ({x0:.2}x), +{} kB with ({x1:.2}x)",
        total_kb / 1024,
        big.len(),
        growth[0],
        growth[1]
    );
    crate::emit("NOTE", &line);
    t.ctx.check(
        "headline: Cached grows ~1x with inode_share, ~4x without",
        ok_or(x1 < 1.3 && x0 > 3.5, line),
    );
    Ok(())
}

fn stress_worker(
    id: u64,
    mounts: &[String],
    reference: &BTreeMap<String, Vec<u8>>,
    secs: u64,
) -> i32 {
    let mut s = 0x9E37_79B9_7F4A_7C15u64 ^ (id + 1).wrapping_mul(0x1234_5678_9ABC_DEF1);
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let names: Vec<&String> = reference.keys().collect();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let name = names[(rnd() % names.len() as u64) as usize];
        let want = &reference[name];
        let path = format!("{}/{name}", mounts[(rnd() % mounts.len() as u64) as usize]);
        let ok = match rnd() % 4 {
            0 => std::fs::read(&path).map(|d| &d == want).unwrap_or(false),
            1 => std::fs::File::open(&path)
                .and_then(|f| sys::Mapping::new(&f, want.len()).map(|m| m.bytes() == &want[..]))
                .unwrap_or(false),
            2 => std::fs::File::open(&path)
                .map(|f| {
                    let mut buf = vec![0u8; 1 << 16];
                    (0..32).all(|_| {
                        let off = (rnd() % want.len() as u64) as usize;
                        let len = (rnd() % buf.len() as u64) as usize;
                        let len = len.min(want.len() - off);
                        f.read_exact_at(&mut buf[..len], off as u64).is_ok()
                            && buf[..len] == want[off..off + len]
                    })
                })
                .unwrap_or(false),
            _ => dontneed(&path).is_ok(),
        };
        if !ok {
            println!("stress worker {id}: wrong data or error on {path}");
            return 1;
        }
    }
    0
}

fn stress(t: &mut T) -> Result<()> {
    let big = t.p.big.clone();
    let mounts: Vec<String> = (0..big.len()).map(|k| format!("/mnt/s{k}")).collect();
    for (dev, m) in big.iter().zip(&mounts) {
        if !t.mount(dev, m, "inode_share,domain_id=stress") {
            return Ok(());
        }
    }
    // Reference contents, read once through the first mount and checked against the digests;
    // the forked workers share them copy-on-write.
    let mut reference: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (name, want) in &t.p.digests {
        let data = std::fs::read(format!("{}/{name}", mounts[0]))?;
        let got = hex(&Sha256::digest(&data));
        if got != *want {
            t.ctx
                .check("stress: reference content", Err(format!("{name}: {got}")));
            return Ok(());
        }
        reference.insert(name.clone(), data);
    }
    let workers = 4;
    let secs = t.p.secs;
    let pids: Vec<i32> = (0..workers)
        .map(|id| spawn(|| stress_worker(id, &mounts, &reference, secs)))
        .collect();
    let failed = pids.into_iter().filter(|&p| !reap(p)).count();
    t.ctx.check(
        "stress: processes reading and mapping through 3 mounts see the right bytes",
        ok_or(
            failed == 0,
            format!(
                "{workers} processes, {} s, {} mounts, {failed} failed",
                t.p.secs,
                mounts.len()
            ),
        ),
    );
    for m in &mounts {
        t.umount(m);
    }
    Ok(())
}

/// Reads `path` with read(2) and mmap as user and group 65534 in a child: 0 when both show
/// `want`, 2 when either shows `other`, 1 otherwise (an error or unknown bytes).
fn read_as_nobody(path: &str, want: &str, other: &str) -> i32 {
    let (path, want, other) = (path.to_string(), want.to_string(), other.to_string());
    let pid = spawn(move || {
        // SAFETY: plain syscalls on the calling (single-threaded) process.
        if unsafe { libc::setgid(65534) } != 0 || unsafe { libc::setuid(65534) } != 0 {
            return 1;
        }
        let got = [
            read_sha(&path).map(|(_, d)| d).unwrap_or_default(),
            mmap_sha(&path).unwrap_or_default(),
        ];
        if got.contains(&other) {
            2
        } else if got.iter().all(|d| *d == want) {
            0
        } else {
            1
        }
    });
    let mut st = 0;
    // SAFETY: st is a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut st, 0) };
    if r == pid && libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        1
    }
}

fn nobody_check(t: &mut T, check: &str, path: &str, want: &str, other: &str) {
    let code = read_as_nobody(path, want, other);
    let what = match code {
        0 => "its own data",
        2 => "the other domain's data",
        _ => "an error or unknown bytes",
    };
    t.ctx.check(
        check,
        ok_or(
            code == 0,
            format!("{path} read as uid 65534 (read and mmap): {what}"),
        ),
    );
}

/// The victim (domain `ab`, value X) and the attacker (domain `b`, value X||"a") would build
/// the same key if value and domain were concatenated: each must read its own data whichever
/// is read first, and only the victim's copy in its own domain shares with it.
fn domains(t: &mut T) -> Result<()> {
    let (victim, victim2, attacker) = (t.dev("victim")?, t.dev("victim2")?, t.dev("attacker")?);
    let (dv, da) = (t.digest("victim"), t.digest("attacker"));
    let (v, w, x) = ("/mnt/v/f", "/mnt/w/f", "/mnt/x/f");
    // The attacker's file is in the page cache first, then the victim reads.
    t.with_mounts(
        &[
            (&attacker, "/mnt/x", "inode_share,domain_id=b"),
            (&victim, "/mnt/v", "inode_share,domain_id=ab"),
        ],
        |t| {
            nobody_check(t, "attacker (domain b) reads its own data", x, &da, &dv);
            nobody_check(
                t,
                "victim (domain ab) read after the attacker's value||'a' (domain b): its own data",
                v,
                &dv,
                &da,
            );
        },
    );
    sys::sync();
    let _ = sys::drop_caches();
    // The victim's file first, then the attacker reads.
    t.with_mounts(
        &[
            (&victim, "/mnt/v", "inode_share,domain_id=ab"),
            (&attacker, "/mnt/x", "inode_share,domain_id=b"),
        ],
        |t| {
            nobody_check(t, "victim (domain ab) reads its own data", v, &dv, &da);
            nobody_check(
                t,
                "attacker (domain b, value||'a') read after the victim (domain ab): its own data",
                x,
                &da,
                &dv,
            );
            let r = (|| {
                read_sha(v)?;
                read_sha(x)?;
                dontneed(x)?;
                let (res, total) = resident(v)?;
                ok_or(
                    res == total && total > 0,
                    format!("{v}: {res}/{total} pages resident after DONTNEED on {x}"),
                )
            })();
            t.ctx.check("colliding domains do not share page cache", r);
        },
    );
    // Positive control: the same value in the same domain shares.
    t.with_mounts(
        &[
            (&victim, "/mnt/v", "inode_share,domain_id=ab"),
            (&victim2, "/mnt/w", "inode_share,domain_id=ab"),
        ],
        |t| {
            t.pair("same value, same domain ab: shared", v, w, &dv, true);
            nobody_check(t, "victim copy read by uid 65534", w, &dv, &da);
        },
    );
    Ok(())
}

/// A reader child: reads and maps `files` (name, digest) over and over for `secs`, dropping
/// them from the page cache each round, so that every round misses. Exits 0 when all reads
/// were right.
fn churn_reader(
    files: Vec<(String, String)>,
    secs: u64,
    pages: BTreeMap<String, Vec<String>>,
) -> i32 {
    spawn(move || {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut rounds = 0u32;
        while Instant::now() < end || rounds == 0 {
            for (p, want) in &files {
                let got = (read_sha(p).map(|(_, d)| d), mmap_sha(p));
                if got != (Ok(want.clone()), Ok(want.clone())) {
                    println!(
                        "{} NOTE churn reader: {p} in round {rounds}: (read, mmap) gave {got:?}; {}",
                        erofs_guest::plan::MARK,
                        page_origin(p, &pages)
                    );
                    return 1;
                }
                let _ = dontneed(p);
            }
            rounds += 1;
        }
        0
    })
}

/// Which 4 KiB pages of `p` hold the image's bytes, the other image's bytes, or neither.
fn page_origin(p: &str, pages: &BTreeMap<String, Vec<String>>) -> String {
    let (Some(good), Some(other)) = (pages.get("image"), pages.get("other")) else {
        return String::new();
    };
    let Ok(data) = std::fs::read(p) else {
        return "unreadable".into();
    };
    let (mut bad_other, mut bad_neither) = (Vec::new(), Vec::new());
    for (i, chunk) in data.chunks(4096).enumerate() {
        let d = hex(&Sha256::digest(chunk)[..8]);
        if good.get(i) == Some(&d) {
            continue;
        }
        if other.get(i) == Some(&d) {
            bad_other.push(i);
        } else {
            bad_neither.push(i);
        }
    }
    format!(
        "{} pages: wrong pages with the other image's bytes {bad_other:?}, with neither {bad_neither:?}",
        data.len().div_ceil(4096)
    )
}

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_SET_FD: libc::c_ulong = 0x4C00;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;

/// Binds a free loop device to `file` and returns its path.
fn loop_attach(file: &str) -> Result<String, String> {
    use std::os::fd::AsRawFd;
    let ctl = std::fs::File::open("/dev/loop-control").map_err(|e| format!("loop-control: {e}"))?;
    // SAFETY: ioctl without argument on an owned descriptor.
    let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
    if n < 0 {
        return Err(format!(
            "LOOP_CTL_GET_FREE: {}",
            std::io::Error::last_os_error()
        ));
    }
    let dev = format!("/dev/loop{n}");
    loop_set(&dev, file)?;
    Ok(dev)
}

/// LOOP_SET_FD, retried for up to 10 s while the device is still bound: a detach is deferred
/// until the last opener goes, so the device is opened anew for each try (an open descriptor
/// of our own would keep the deferred detach from ever happening).
fn loop_set(dev: &str, file: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(file).map_err(|e| format!("{file}: {e}"))?;
    for _ in 0..500 {
        let d = std::fs::File::open(dev).map_err(|e| format!("{dev}: {e}"))?;
        // SAFETY: ioctl with a descriptor argument, both owned here.
        if unsafe { libc::ioctl(d.as_raw_fd(), LOOP_SET_FD as _, f.as_raw_fd()) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(format!("LOOP_SET_FD {dev} {file}: {e}"));
        }
        drop(d);
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("LOOP_SET_FD {dev} {file}: still busy after 10 s"))
}

fn loop_clear(dev: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let d = std::fs::File::open(dev).map_err(|e| format!("{dev}: {e}"))?;
    // SAFETY: ioctl without argument on an owned descriptor.
    if unsafe { libc::ioctl(d.as_raw_fd(), LOOP_CLR_FD as _) } != 0 {
        return Err(format!(
            "LOOP_CLR_FD {dev}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Sectors read so far from block device `name` (/sys/block/NAME/stat, third field).
fn sectors_read(name: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/block/{name}/stat"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn churn(t: &mut T) -> Result<()> {
    let (s1, s2) = (t.p.same[0].clone(), t.p.same[1].clone());
    let dg = t.digest(&s1);
    let opts = "inode_share,domain_id=churn";
    let stable = t.dev("share")?;
    let storm: Vec<String> = ["storm1", "storm2", "storm3"]
        .iter()
        .map(|n| t.dev(n))
        .collect::<Result<_>>()?;
    if let Some(c) = t.p.carrier.clone()
        && let Err(e) = mount(&c)
    {
        t.ctx.check("mount the carrier", Err(format!("{e}")));
        return Ok(());
    }
    let (img, other) = (t.file("share2")?, t.file("other")?);
    if !t.mount(&stable, "/mnt/c0", opts) {
        return Ok(());
    }
    let files = vec![
        (format!("/mnt/c0/{s1}"), dg.clone()),
        (format!("/mnt/c0/{s2}"), dg.clone()),
    ];

    // 1. A loop member serves the misses (the newest member is asked first); it is unmounted,
    //    its loop device detached and bound to an image with other data, then back.
    let r = (|| {
        let lo = loop_attach(&img)?;
        let name = lo.trim_start_matches("/dev/").to_string();
        let reader = churn_reader(files.clone(), 12, t.p.pages.clone());
        let (mut cycles, mut served) = (0, 0u64);
        let mut errors = Vec::new();
        for _ in 0..8 {
            let m = MountSpec {
                source: lo.clone(),
                target: "/mnt/cl".into(),
                fstype: "erofs".into(),
                data: opts.into(),
            };
            if let Err(e) = mount(&m) {
                errors.push(format!("mount {lo}: {e}"));
                break;
            }
            let before = sectors_read(&name);
            let _ = read_sha(&format!("/mnt/cl/{s1}"));
            std::thread::sleep(Duration::from_millis(400));
            served += sectors_read(&name).saturating_sub(before);
            if let Err(e) = umount("/mnt/cl") {
                errors.push(e);
                break;
            }
            let rebind_to = if t.p.rebind_other { &other } else { &img };
            let step = loop_clear(&lo)
                .and_then(|()| loop_set(&lo, rebind_to))
                .and_then(|()| {
                    std::thread::sleep(Duration::from_millis(100));
                    loop_clear(&lo)
                })
                .and_then(|()| loop_set(&lo, &img));
            if let Err(e) = step {
                errors.push(e);
                break;
            }
            cycles += 1;
        }
        let ok = reap(reader);
        let _ = loop_clear(&lo);
        ok_or(
            ok && errors.is_empty() && cycles == 8 && served > 0,
            format!(
                "{cycles} unmount/detach/reattach cycles of {lo}, {served} sectors read from it while mounted, reader ok {ok}, errors {errors:?}"
            ),
        )
    })();
    t.ctx.check(
        if t.p.rebind_other {
            "loop member unmounted, detached, bound to other bytes and back while another member is read"
        } else {
            "loop member unmounted, detached and rebound while another member is read"
        },
        r,
    );

    // 2. Three processes mount and unmount their own members as fast as they can.
    let reader = churn_reader(files.clone(), 8, t.p.pages.clone());
    let stormers: Vec<i32> = storm
        .iter()
        .enumerate()
        .map(|(i, dev)| {
            let (dev, s1, want) = (dev.clone(), s1.clone(), dg.clone());
            spawn(move || {
                let m = MountSpec {
                    source: dev.clone(),
                    target: format!("/mnt/storm{i}"),
                    fstype: "erofs".into(),
                    data: opts.into(),
                };
                let end = Instant::now() + Duration::from_secs(8);
                while Instant::now() < end {
                    if mount(&m).is_err() {
                        return 1;
                    }
                    let ok = read_sha(&format!("/mnt/storm{i}/{s1}"))
                        .map(|(_, d)| d == want)
                        .unwrap_or(false);
                    if !ok || umount(&m.target).is_err() {
                        return 1;
                    }
                }
                0
            })
        })
        .collect();
    let storm_ok: Vec<bool> = stormers.into_iter().map(reap).collect();
    let reader_ok = reap(reader);
    t.ctx.check(
        "mount/unmount storm from 3 processes while another member is read",
        ok_or(
            reader_ok && storm_ok.iter().all(|&b| b),
            format!("reader ok {reader_ok}, stormers ok {storm_ok:?}"),
        ),
    );

    // 3. drop_caches=2 (inodes and dentries) over and over while reading: unused members
    //    are evicted and re-linked under the readers.
    let reader = churn_reader(files.clone(), 6, t.p.pages.clone());
    let mapper = churn_reader(files.clone(), 6, t.p.pages.clone());
    let mut drops = 0;
    let end = Instant::now() + Duration::from_secs(6);
    while Instant::now() < end {
        if std::fs::write("/proc/sys/vm/drop_caches", b"2").is_ok() {
            drops += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (r1, r2) = (reap(reader), reap(mapper));
    t.ctx.check(
        "drop_caches=2 while two processes read and map shared files",
        ok_or(
            r1 && r2 && drops > 0,
            format!("{drops} drops, readers ok {r1} {r2}"),
        ),
    );
    t.umount("/mnt/c0");
    if let Some(c) = t.p.carrier.clone() {
        t.umount(&c.target);
    }
    Ok(())
}

/// The debug kernel's test knob (xtask/kernel/debug-patches): a read of a shared inode sleeps
/// this many milliseconds between mapping an extent and submitting its bio.
const DELAY_KNOB: &str = "/sys/module/erofs/parameters/ishare_test_delay_ms";

/// `share-window` (debug kernel only): with the knob on, a reader of the stable member's file
/// is held between mapping an extent through the loop member (the newest member serves the
/// misses) and submitting its bio; meanwhile the loop member is unmounted and its loop device
/// bound to an image with other bytes at the same addresses. A series that holds the member
/// for the whole read makes the rebind wait for it; one that releases the member after
/// mapping submits the bio to the rebound device, and the reader gets the other image's bytes
/// (or EIO, if it lands while the device is unbound).
fn window(t: &mut T) -> Result<()> {
    let s1 = t.p.same[0].clone();
    let want = t.digest(&s1);
    let opts = "inode_share,domain_id=window";
    let stable = t.dev("share")?;
    if !Path::new(DELAY_KNOB).exists() {
        t.ctx.check(
            "test knob present",
            Err(format!(
                "{DELAY_KNOB} missing: not the debug kernel with xtask/kernel/debug-patches"
            )),
        );
        return Ok(());
    }
    if let Some(c) = t.p.carrier.clone()
        && let Err(e) = mount(&c)
    {
        t.ctx.check("mount the carrier", Err(format!("{e}")));
        return Ok(());
    }
    let (img, other) = (t.file("share2")?, t.file("other")?);
    if !t.mount(&stable, "/mnt/w0", opts) {
        return Ok(());
    }
    let file = format!("/mnt/w0/{s1}");
    let set_delay = |ms: u32| std::fs::write(DELAY_KNOB, ms.to_string());
    for round in 0..3 {
        let r = (|| {
            // The stable member's inode is linked before the loop member's, which is then the
            // newest member and serves the misses.
            dontneed(&file)?;
            let lo = loop_attach(&img)?;
            let m = MountSpec {
                source: lo.clone(),
                target: "/mnt/wl".into(),
                fstype: "erofs".into(),
                data: opts.into(),
            };
            mount(&m).map_err(|e| format!("mount {lo}: {e}"))?;
            // Looking the file up links the loop member's inode first in the member list.
            std::fs::metadata(format!("/mnt/wl/{s1}")).map_err(|e| format!("stat: {e}"))?;
            dontneed(&file)?;
            set_delay(2500).map_err(|e| format!("{DELAY_KNOB}: {e}"))?;
            let (f, w, pages) = (file.clone(), want.clone(), t.p.pages.clone());
            let reader = spawn(move || match read_sha(&f) {
                Ok((_, d)) if d == w => 0,
                got => {
                    println!(
                        "{} NOTE window reader: {f}: {got:?}; {}",
                        erofs_guest::plan::MARK,
                        page_origin(&f, &pages)
                    );
                    1
                }
            });
            // The reader is now asleep inside its first readahead, extent mapped (starting a
            // process takes a few hundred ms on the debug kernel under TCG).
            std::thread::sleep(Duration::from_millis(1200));
            let t0 = Instant::now();
            // Only the read already asleep is delayed: later ones would keep picking the
            // unmounted member while the reader holds it (the binding waits for all of them).
            let step = umount("/mnt/wl")
                .and_then(|_| loop_clear(&lo))
                .and_then(|()| set_delay(0).map_err(|e| format!("{DELAY_KNOB}: {e}")))
                .and_then(|()| loop_set(&lo, &other));
            let waited = t0.elapsed();
            let ok = reap(reader);
            let _ = loop_clear(&lo);
            step?;
            ok_or(
                ok,
                format!(
                    "round {round}: reader got the right bytes: {ok}; unmount + detach + bind to other bytes took {} ms",
                    waited.as_millis()
                ),
            )
        })();
        let _ = set_delay(0);
        t.ctx.check(
            "loop member unmounted and rebound to other bytes between mapping and submitting a read",
            r,
        );
    }
    t.umount("/mnt/w0");
    if let Some(c) = t.p.carrier.clone() {
        t.umount(&c.target);
    }
    Ok(())
}

/// The debug kernel's test knob, or a failed check saying it is missing.
fn knob_present(t: &mut T) -> bool {
    if Path::new(DELAY_KNOB).exists() {
        return true;
    }
    t.ctx.check(
        "test knob present",
        Err(format!(
            "{DELAY_KNOB} missing: not the debug kernel with xtask/kernel/debug-patches"
        )),
    );
    false
}

fn set_delay(ms: u32) -> Result<(), String> {
    std::fs::write(DELAY_KNOB, ms.to_string()).map_err(|e| format!("{DELAY_KNOB}: {e}"))
}

/// Reads in flight on a block device (`/sys/block/NAME/inflight`: reads, writes).
fn reads_in_flight(dev: &str) -> u64 {
    let name = dev.rsplit('/').next().unwrap_or(dev);
    std::fs::read_to_string(format!("/sys/block/{name}/inflight"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// Mounts the member `dev` at `at`, looks `file` up there (which links the member's inode
/// first in the shared inode's member list, so that it serves the next misses) and drops
/// the shared page cache through `reader_path`.
fn newest_member(m: &MountSpec, file: &str, reader_path: &str) -> Result<(), String> {
    // The reader's own member is linked first (its lookup), so that `m` comes after it.
    dontneed(reader_path)?;
    mount(m).map_err(|e| format!("mount {}: {e}", m.source))?;
    std::fs::metadata(format!("{}/{file}", m.target))
        .map_err(|e| format!("stat {}/{file}: {e}", m.target))?;
    dontneed(reader_path)
}

/// Waits until process `pid` sleeps in the knob's `msleep` (its `/proc/PID/wchan`; the debug
/// kernel has kallsyms), for at most 5 s, and says whether it did.
fn wait_in_knob(pid: i32) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if std::fs::read_to_string(format!("/proc/{pid}/wchan")).is_ok_and(|w| w == "msleep") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Forks a reader of `path` that exits 0 if it read `want` (SHA-256, hex).
fn spawn_reader(path: &str, want: &str) -> i32 {
    let (f, w) = (path.to_string(), want.to_string());
    spawn(move || match read_sha(&f) {
        Ok((_, d)) if d == w => 0,
        got => {
            println!("{} NOTE reader: {f}: {got:?}", erofs_guest::plan::MARK);
            1
        }
    })
}

/// `share-dio-window` (debug kernel only; fix 3 of issue 13): members A and B are file-backed
/// with `-o directio`, their image files on a carrier disk that QEMU throttles, so that a
/// direct read of an image file stays in flight for seconds. A reader of B's file is held
/// by the knob after A (the newest member) mapped the miss and before A's request is
/// submitted; A is unmounted meanwhile. The reader then submits the asynchronous direct read
/// and releases A, whose end puts its backing file; while that read is still in flight the
/// guest drops dentries and inodes (`drop_caches=2`), which frees the image file's dentry and
/// inode unless something still holds the file. A series that keeps the backing file until
/// completion passes cleanly; one that does not completes the read on a freed file and inode
/// (a KASAN report, which fails the scenario).
fn dio_window(t: &mut T) -> Result<()> {
    let f = t.p.same[0].clone();
    let want = t.digest(&f);
    let opts = "inode_share,domain_id=dio,directio";
    if !knob_present(t) {
        return Ok(());
    }
    let Some(c) = t.p.carrier.clone() else {
        anyhow::bail!("dio-window needs a carrier");
    };
    // QEMU's throttling lets a request through at once while its budget lasts and holds the
    // next ones: with requests of at most 4 KiB, a 128 KiB direct read is 32 requests that
    // take seconds in all at the carrier's rate.
    let dev_name = c.source.rsplit('/').next().unwrap_or(&c.source).to_string();
    let max_kb = format!("/sys/block/{dev_name}/queue/max_sectors_kb");
    if let Err(e) = std::fs::write(&max_kb, "4") {
        t.ctx.check(
            "4 KiB requests on the carrier",
            Err(format!("{max_kb}: {e}")),
        );
        return Ok(());
    }
    if let Err(e) = mount(&c) {
        t.ctx.check("mount the carrier", Err(format!("{e}")));
        return Ok(());
    }
    let (img_a, img_b) = (t.file("a")?, t.file("b")?);
    if !t.mount(&img_b, "/mnt/db", opts) {
        return Ok(());
    }
    let file = format!("/mnt/db/{f}");
    let a = MountSpec {
        source: img_a,
        target: "/mnt/da".into(),
        fstype: "erofs".into(),
        data: opts.into(),
    };
    // Round 0 runs the same steps, but its window is not checked: in the first round of a
    // boot the throttle held the direct read for a moment only (0-28 of its 32 requests seen
    // in flight, 0-1 drops), in every later round for seconds.
    for round in 0..4 {
        let r = (|| {
            newest_member(&a, &f, &file)?;
            set_delay(2000)?;
            let reader = spawn_reader(&file, &want);
            // The reader is now asleep with A's request built.
            let asleep = wait_in_knob(reader);
            let unmounted = umount(&a.target);
            let _ = set_delay(0);
            // The reader wakes, submits the direct read of A's image file and lets A go.
            let t0 = Instant::now();
            while reads_in_flight(&c.source) == 0 && t0.elapsed() < Duration::from_secs(4) {
                std::thread::sleep(Duration::from_millis(20));
            }
            // While it is in flight: A's end (from a worker) puts its backing file; drop the
            // unused dentries and inodes, among them the image file's unless still held.
            let (mut seen, mut drops) = (0, 0);
            loop {
                let n = reads_in_flight(&c.source);
                if n == 0 || t0.elapsed() > Duration::from_secs(15) {
                    break;
                }
                seen = seen.max(n);
                // Started while the read is in flight (it may end during the drop).
                if std::fs::write("/proc/sys/vm/drop_caches", b"2").is_ok() {
                    drops += 1;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let ok = reap(reader);
            unmounted?;
            let hit = asleep && seen > 0 && drops > 0;
            ok_or(
                ok && (hit || round == 0),
                format!(
                    "round {round}: reader got the right bytes: {ok}; unmounted while the reader slept in the knob: {asleep}; up to {seen} request(s) in flight on {} after it woke, {drops} drop_caches=2 started while they were ({} ms)",
                    c.source,
                    t0.elapsed().as_millis()
                ),
            )
        })();
        let _ = set_delay(0);
        let _ = umount(&a.target);
        t.ctx.check(
            if round == 0 {
                "first round (bytes only): file-backed directio member unmounted while a reader holds it"
            } else {
                "file-backed directio member unmounted, its image file's dentry and inode dropped while its direct read is in flight"
            },
            r,
        );
    }
    t.umount("/mnt/db");
    t.umount(&c.target);
    Ok(())
}

/// `share-last-put` (debug kernel only; fix 4 of issue 13): a reader of B's file holds member
/// A (the newest member; the knob keeps the reader between mapping and submitting) while A is
/// unmounted, so the unmount returns with A still alive and the reader's release is A's last
/// reference. That shutdown must not run in the reader's context (inside `->readahead`, under
/// the shared mapping's invalidate_lock): the debug kernel's test-only check in
/// `erofs_kill_sb()` warns if it does, which fails the scenario. The check here shows that the
/// window was hit: A's `/sys/fs/erofs/<dev>` is still there after the unmount returned, and
/// gone once the read ended.
fn last_put(t: &mut T) -> Result<()> {
    let f = t.p.same[0].clone();
    let want = t.digest(&f);
    let opts = "inode_share,domain_id=lastput";
    if !knob_present(t) {
        return Ok(());
    }
    let (stable, dev_a) = (t.dev("share")?, t.dev("share2")?);
    if !t.mount(&stable, "/mnt/l0", opts) {
        return Ok(());
    }
    let file = format!("/mnt/l0/{f}");
    let a = MountSpec {
        source: dev_a.clone(),
        target: "/mnt/la".into(),
        fstype: "erofs".into(),
        data: opts.into(),
    };
    let sysfs = format!(
        "/sys/fs/erofs/{}",
        dev_a.rsplit('/').next().unwrap_or(&dev_a)
    );
    for round in 0..3 {
        let r = (|| {
            newest_member(&a, &f, &file)?;
            set_delay(2000)?;
            let reader = spawn_reader(&file, &want);
            let asleep = wait_in_knob(reader);
            let unmounted = umount(&a.target);
            let held = Path::new(&sysfs).exists();
            let _ = set_delay(0);
            let ok = reap(reader);
            // The member ends when the reader lets it go (from a worker, in the series).
            let t0 = Instant::now();
            while Path::new(&sysfs).exists() && t0.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let gone = !Path::new(&sysfs).exists();
            unmounted?;
            ok_or(
                ok && asleep && held && gone,
                format!(
                    "round {round}: reader got the right bytes: {ok}; unmounted while the reader slept in the knob: {asleep}; {sysfs} present after the unmount returned (the reader held the member): {held}; gone after the read: {gone}"
                ),
            )
        })();
        let _ = set_delay(0);
        let _ = umount(&a.target);
        t.ctx.check(
            "member unmounted while a reader holds it; the reader drops its last reference",
            r,
        );
    }
    t.umount("/mnt/l0");
    Ok(())
}

/// Differently built images of the same files, all mounted in one domain: within a group
/// (same read path and block size) every file shares with the first member's copy, and every
/// copy reads right when its misses are served by another member; a 1 KiB-block group never
/// shares with the 4 KiB one (the series does not link members of different block sizes).
fn mixed(t: &mut T) -> Result<()> {
    let members = t.p.mixed.clone();
    let mut mounted = Vec::new();
    for (name, dev, group) in &members {
        let m = format!("/mnt/m-{name}");
        if t.mount(dev, &m, "inode_share,domain_id=mixed") {
            mounted.push((name.clone(), m, group.clone()));
        }
    }
    // 4 KiB groups first: the first member of a fingerprint fixes the shared inode's block
    // size, so a 1 KiB member read first would leave every 4 KiB copy unshared.
    let mut groups: Vec<(String, BTreeMap<String, String>)> =
        t.p.groups.clone().into_iter().collect();
    groups.sort_by_key(|(g, _)| (g.ends_with("-1k"), g.clone()));
    for (group, files) in groups {
        let in_group: Vec<&(String, String, String)> =
            mounted.iter().filter(|(_, _, g)| *g == group).collect();
        let Some((ref_name, ref_m, _)) = in_group.first().map(|x| (*x).clone()) else {
            continue;
        };
        for (f, want) in &files {
            for (name, m, _) in &in_group[1..] {
                t.pair(
                    &format!("{group}: {f} in {ref_name} and {name} shared"),
                    &format!("{ref_m}/{f}"),
                    &format!("{m}/{f}"),
                    want,
                    true,
                );
            }
            if let Some(other) = group.strip_suffix("-1k").map(|g| format!("{g}-4k"))
                && let Some((oname, om, _)) = mounted.iter().find(|(_, _, g)| *g == other)
            {
                t.pair(
                    &format!("{f}: 1 KiB-block {ref_name} and 4 KiB-block {oname} not shared"),
                    &format!("{ref_m}/{f}"),
                    &format!("{om}/{f}"),
                    want,
                    false,
                );
            }
            // Each copy dropped and read again: misses go to whichever member comes first.
            for (name, m, _) in &in_group {
                let p = format!("{m}/{f}");
                let r = (|| {
                    dontneed(&p)?;
                    let (_, d) = read_sha(&p)?;
                    dontneed(&p)?;
                    let md = mmap_sha(&p)?;
                    ok_or(d == *want && md == *want, format!("read {d}, mmap {md}"))
                })();
                t.ctx
                    .check(&format!("{group}: {f} through {name} after a drop"), r);
            }
        }
    }
    for (_, m, _) in mounted.iter().rev() {
        t.umount(m);
    }

    // The other order: a 1 KiB-block copy is looked up first. The 4 KiB copies must still
    // share among themselves (each block size has its own shared inode).
    let _ = sys::drop_caches();
    let mut mounted = Vec::new();
    for (name, dev, group) in &members {
        let m = format!("/mnt/m-{name}");
        if t.mount(dev, &m, "inode_share,domain_id=mixed") {
            mounted.push((name.clone(), m, group.clone()));
        }
    }
    for (group, files) in t.p.groups.clone() {
        let Some(big) = group.strip_suffix("-1k").map(|g| format!("{g}-4k")) else {
            continue;
        };
        let small: Vec<_> = mounted.iter().filter(|(_, _, g)| *g == group).collect();
        let four: Vec<_> = mounted.iter().filter(|(_, _, g)| *g == big).collect();
        if small.is_empty() || four.len() < 2 {
            continue;
        }
        for (f, want) in &files {
            let _ = read_sha(&format!("{}/{f}", small[0].1));
            t.pair(
                &format!(
                    "{f}: {} and {} shared although 1 KiB-block {} was read first",
                    four[0].0, four[1].0, small[0].0
                ),
                &format!("{}/{f}", four[0].1),
                &format!("{}/{f}", four[1].1),
                want,
                true,
            );
        }
    }
    for (_, m, _) in mounted.iter().rev() {
        t.umount(m);
    }
    Ok(())
}

/// Two members of one domain as the lower layers of a read-only overlayfs (no upper layer, as
/// containerd mounts image layers): files seen through the overlay come from the top layer's
/// EROFS file, so they share with the other layer's copies; reads, maps, fadvise and O_DIRECT
/// all pass through to the shared file.
fn overlay(t: &mut T) -> Result<()> {
    let (s1, s2) = (t.p.same[0].clone(), t.p.same[1].clone());
    let dg = t.digest(&s1);
    let (d1, d2) = (t.dev("share")?, t.dev("share2")?);
    let opts = "inode_share,domain_id=ovl";
    t.with_mounts(&[(&d1, "/mnt/o1", opts), (&d2, "/mnt/o2", opts)], |t| {
        let ovl = MountSpec {
            source: "overlay".into(),
            target: "/mnt/ovl".into(),
            fstype: "overlay".into(),
            data: "lowerdir=/mnt/o1:/mnt/o2".into(),
        };
        if let Err(e) = mount(&ovl) {
            t.ctx.check("mount overlay", Err(format!("{e}")));
            return;
        }
        let (v1, v2) = (format!("/mnt/ovl/{s1}"), format!("/mnt/ovl/{s2}"));
        let (l1, l2) = (format!("/mnt/o2/{s1}"), format!("/mnt/o2/{s2}"));
        t.pair(
            "overlay file shares with the other layer's copy (DONTNEED through overlay)",
            &l1,
            &v1,
            &dg,
            true,
        );
        t.pair(
            "overlay file shares with the other layer's copy (DONTNEED on the layer)",
            &v2,
            &l2,
            &dg,
            true,
        );
        t.pair(
            "two overlay files with the same content share",
            &v1,
            &v2,
            &dg,
            true,
        );
        t.mmap_check(
            "mmap through overlay after the layer's copy was dropped",
            &l1,
            &[&v1, &v2],
            &dg,
        );
        t.o_direct_einval("O_DIRECT open through overlay gives EINVAL", &v1);
        let r = (|| {
            let (_, d) = read_sha(&v1)?;
            nobody_ok(&v1, &dg)?;
            ok_or(
                d == dg,
                format!("root read {d}; uid 65534 read and mmap right"),
            )
        })();
        t.ctx.check("overlay content as root and as uid 65534", r);
        t.umount("/mnt/ovl");
    });
    Ok(())
}

fn nobody_ok(path: &str, want: &str) -> Result<(), String> {
    match read_as_nobody(path, want, "") {
        0 => Ok(()),
        c => Err(format!("{path} read as uid 65534: code {c}")),
    }
}
