//! Page-cache sharing (`inode_share`): scenarios for the patched kernel only (the guest side is
//! `xtask/guest/src/scenarios/share.rs`). Images come from our mkfs with `--fingerprint`; the
//! few images that need a wrong fingerprint or a wrong superblock field are edited copies.

use super::{Boot, Env, Prepared, Scenario, Tree, erofs_mount};
use crate::kernel::Variant;
use crate::mkfs::{DEFAULT_FINGERPRINT_XATTR, Options};
use anyhow::{Context, Result, bail};
use erofs_format::xattr::LongPrefixRecordHeader;
use erofs_format::{Compat, Incompat, SuperBlock};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use zerocopy::{FromBytes, IntoBytes};

/// The sharing scenarios.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "share-rules",
            about: "inode_share: mount rules, domains, fingerprints, sizes, O_DIRECT, mmap, file-backed, lifetime",
            prepare: rules,
        },
        Scenario {
            name: "share-layouts",
            about: "inode_share: identical files share in inline, plain and 1 KiB-block images",
            prepare: layouts,
        },
        Scenario {
            name: "share-compressed",
            about: "inode_share on images from Debian's mkfs.erofs + a fingerprint prefix: lz4hc files across bdev and file-backed mounts, chunk-based files, unmount while reading",
            prepare: compressed,
        },
        Scenario {
            name: "share-domains",
            about: "inode_share: fingerprint values and domain ids that collide under concatenation (ab + X vs b + Xa) stay apart; same-domain control; non-root readers",
            prepare: domains,
        },
        Scenario {
            name: "share-umount",
            about: "inode_share: unmount one member over and over while another is being read",
            prepare: umount,
        },
        Scenario {
            name: "share-mixed",
            about: "inode_share: one domain of differently built images of the same files (inline/plain tails, chunk-based, other block addresses, 1 KiB blocks; lz4/lz4-C64k/ztailpacking/MicroLZMA/DEFLATE/zstd, 1 KiB-block lz4)",
            prepare: mixed,
        },
        Scenario {
            name: "share-overlay",
            about: "inode_share: two shared EROFS members as the lower layers of a read-only overlayfs, as containerd mounts them",
            prepare: overlay,
        },
        Scenario {
            name: "share-churn",
            about: "inode_share: unmount + loop detach/rebind to other data, a mount/unmount storm from 3 processes, drop_caches=2, all while another member is read and mapped",
            prepare: churn,
        },
        Scenario {
            name: "share-rebind",
            about: "inode_share: share-churn with the loop device bound to an image with other bytes between remounts (a read still in flight must not see them)",
            prepare: rebind,
        },
        Scenario {
            name: "share-window",
            about: "inode_share, debug kernel only (test knob): the loop member serving a read is unmounted and rebound to other bytes between mapping and submitting the bio",
            prepare: window,
        },
        Scenario {
            name: "share-dio-window",
            about: "inode_share, debug kernel only (test knob): file-backed -o directio members; the member serving an async direct read (on a throttled disk) is unmounted and its backing file's dentry and inode dropped before the read completes",
            prepare: dio_window,
        },
        Scenario {
            name: "share-last-put",
            about: "inode_share, debug kernel only (test knob + check): a member is unmounted while a reader holds it, so the reader drops its last reference; the member must not be shut down in the reader's context",
            prepare: last_put,
        },
        Scenario {
            name: "share-headline",
            about: "inode_share: Cached growth reading 64 MiB through 4 mounts, with and without sharing",
            prepare: headline,
        },
        Scenario {
            name: "share-stress",
            about: "inode_share: 4 processes read and mmap the same files through 3 mounts for 60 s",
            prepare: stress,
        },
    ]
}

const SAME: [&str; 2] = ["same-1", "same-2"];
/// The superblock of an image, for editing in place.
fn superblock(img: &mut [u8]) -> Result<&mut SuperBlock> {
    let at = erofs_format::SUPERBLOCK_OFFSET;
    img.get_mut(at..at + erofs_format::SUPERBLOCK_SIZE)
        .and_then(|b| SuperBlock::mut_from_bytes(b).ok())
        .context("image shorter than its superblock")
}

fn fp(block_size: u32) -> Options {
    Options {
        block_size,
        fingerprint: Some(DEFAULT_FINGERPRINT_XATTR.into()),
        ..Default::default()
    }
}

/// Skips on a stock kernel or with a mkfs that writes no fingerprints.
fn unsupported(env: &Env) -> Option<Prepared> {
    if env.variant == Variant::Stock {
        return Some(Prepared::Skip(
            "needs the patched kernel (inode_share)".into(),
        ));
    }
    env.mkfs.unsupported(&fp(4096)).map(Prepared::Skip)
}

fn sha_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// SHA-256 (hex) of every regular file directly in `dir`.
fn digests(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            let name = e.file_name().to_string_lossy().into_owned();
            m.insert(name, sha_hex(&std::fs::read(e.path())?));
        }
    }
    Ok(m)
}

/// The two small images with the same content (`share`, `share2`) and the tree's digests.
fn share_pair(env: &mut Env) -> Result<(PathBuf, PathBuf, BTreeMap<String, String>)> {
    let src = env.tree(Tree::SameContent)?;
    let a = env.image(&src, "share", &fp(4096))?;
    let b = env.image(&src, "share2", &fp(4096))?;
    Ok((a, b, digests(&src)?))
}

fn rules(env: &mut Env) -> Result<Prepared> {
    if let Some(p) = unsupported(env) {
        return Ok(p);
    }
    let (share, share2, dg) = share_pair(env)?;
    let src = env.tree(Tree::SameContent)?;
    let nofp = env.image(
        &src,
        "share-nofp",
        &Options {
            block_size: 4096,
            ..Default::default()
        },
    )?;

    // same-1 cut to 1 MiB, its fingerprint replaced by the full same-1's: same key, other size.
    let full = std::fs::read(src.join(SAME[0]))?;
    let cut = &full[..1 << 20];
    let dir = env.work.join("trees/share-sizemm");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(SAME[0]), cut)?;
    let sizemm = env.image(&dir, "share-sizemm", &fp(4096))?;
    let mut img = std::fs::read(&sizemm)?;
    let value = |d: &[u8]| [b"sha256:".as_slice(), Sha256::digest(d).as_slice()].concat();
    let (from, to) = (value(cut), value(&full));
    let at = img
        .windows(from.len())
        .position(|w| w == from.as_slice())
        .context("fingerprint value not found in share-sizemm")?;
    img[at..at + to.len()].copy_from_slice(&to);
    std::fs::write(&sizemm, &img)?;

    // ishare_xattr_prefix_id (superblock byte 105) past the prefix table.
    let mut img = std::fs::read(&share)?;
    let sb = superblock(&mut img)?;
    if !sb.compat().contains(Compat::ISHARE_XATTRS) {
        bail!(
            "our mkfs wrote no ISHARE_XATTRS compat bit into {}",
            share.display()
        );
    }
    sb.ishare_xattr_prefix_id = sb.xattr_prefix_count + 5;
    let blkszbits = sb.blkszbits;
    crate::corrupt::reseal(&mut img, blkszbits);
    let badid = env.work.join("images/share-badid.erofs");
    std::fs::write(&badid, &img)?;

    let mut boot = Boot::default();
    let mut disks = BTreeMap::new();
    for (name, p) in [
        ("share", &share),
        ("share2", &share2),
        ("nofp", &nofp),
        ("sizemm", &sizemm),
        ("badid", &badid),
    ] {
        disks.insert(name, boot.disk(p));
    }
    let carrier = env.carrier(
        "share",
        &[("share.erofs", &share), ("share2.erofs", &share2)],
    )?;
    let cdev = boot.disk(&carrier);
    boot.expected.errors = vec![
        "domain_id is needed when inode_ishare is on".into(),
        "invalid ishare xattr prefix id".into(),
    ];
    boot.run(
        "share",
        "share-rules",
        json!({
            "mode": "rules",
            "disks": disks,
            "carrier": erofs_mount(&cdev, "/carrier", ""),
            "files": { "share": "/carrier/share.erofs", "share2": "/carrier/share2.erofs" },
            "same": SAME,
            "digests": dg,
        }),
    )?;
    Ok(Prepared::Boot(boot))
}

fn layouts(env: &mut Env) -> Result<Prepared> {
    if let Some(p) = unsupported(env) {
        return Ok(p);
    }
    let src = env.tree(Tree::SameContent)?;
    let dg = digests(&src)?;
    let mut boot = Boot::default();
    let mut disks = BTreeMap::new();
    for (name, o) in [
        ("inline-4096", fp(4096)),
        (
            "plain-4096",
            Options {
                noinline: true,
                ..fp(4096)
            },
        ),
        ("inline-1024", fp(1024)),
        (
            "plain-512",
            Options {
                noinline: true,
                ..fp(512)
            },
        ),
    ] {
        if let Some(why) = env.mkfs.unsupported(&o) {
            eprintln!("qemu-test: note: share-layouts {name}: {why}");
            continue;
        }
        let img = env.image(&src, &format!("share-{name}"), &o)?;
        disks.insert(name, boot.disk(&img));
    }
    boot.run(
        "share",
        "share-layouts",
        json!({ "mode": "layouts", "disks": disks, "same": SAME, "digests": dg }),
    )?;
    Ok(Prepared::Boot(boot))
}

fn umount(env: &mut Env) -> Result<Prepared> {
    if let Some(p) = unsupported(env) {
        return Ok(p);
    }
    let (share, share2, dg) = share_pair(env)?;
    let mut boot = Boot::default();
    let disks = BTreeMap::from([("share", boot.disk(&share)), ("share2", boot.disk(&share2))]);
    boot.run(
        "share",
        "share-umount",
        json!({ "mode": "umount", "disks": disks, "same": SAME, "digests": dg }),
    )?;
    Ok(Prepared::Boot(boot))
}

/// Where CI puts the erofs-utils 1.9.3 reference images (beside the repository).
fn reference_images() -> PathBuf {
    crate::util::workspace_root().join("../shared/testdata/erofs-utils-1.9.3")
}

/// One mount of `share-mixed`: image name, device, and the group it must share with (the
/// series links files only within one read path and block size).
fn mixed(env: &mut Env) -> Result<Prepared> {
    if let Some(p) = debian_unsupported(env, "chunk-based images") {
        return Ok(p);
    }
    let src = env.tree(Tree::SameContent)?;
    let dg = digests(&src)?;
    let mut boot = Boot {
        timeout_secs: 400,
        ..Default::default()
    };
    let mut images: Vec<(String, String, String)> = Vec::new();
    let mut add = |boot: &mut Boot, name: &str, img: &Path, group: &str| {
        images.push((name.to_string(), boot.disk(img), group.to_string()));
    };
    for (name, o, group) in [
        ("inline-4096", fp(4096), "plain-4k"),
        (
            "plain-4096",
            Options {
                noinline: true,
                ..fp(4096)
            },
            "plain-4k",
        ),
        ("inline-1024", fp(1024), "plain-1k"),
    ] {
        let img = env.image(&src, &format!("share-mixed-{name}"), &o)?;
        add(&mut boot, name, &img, group);
    }
    // The same files behind 3 MiB of other data: other block addresses.
    let dir = env.work.join("trees/share-mixed-shifted");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for e in std::fs::read_dir(&src)? {
        let e = e?;
        std::fs::copy(e.path(), dir.join(e.file_name()))?;
    }
    std::fs::write(
        dir.join("0-pad"),
        crate::trees::random_bytes(0x3a_0000, 3 << 20),
    )?;
    let shifted = env.image(&dir, "share-mixed-shifted", &fp(4096))?;
    add(&mut boot, "shifted-4096", &shifted, "plain-4k");
    // Chunk-based, from Debian's mkfs.erofs (the value bytes are the same sha256: + digest).
    let dir = env.work.join("trees/share-mixed-chunk");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for e in std::fs::read_dir(&src)? {
        let e = e?;
        std::fs::copy(e.path(), dir.join(e.file_name()))?;
    }
    let chunk = env.work.join("images/share-mixed-chunk.erofs");
    debian_fingerprinted(&dir, &chunk, &["--chunksize=8192"])?;
    add(&mut boot, "chunk-8192", &chunk, "plain-4k");

    // Compressed: erofs-utils 1.9.3's reference images, all of one tree, each file carrying a
    // sha256 fingerprint (under two names: the kernel compares only the values).
    let refs = reference_images();
    let mut zfiles = BTreeMap::new();
    if refs.join("SHA256SUMS").exists() {
        for (name, group) in [
            ("lz4-default", "z-4k"),
            ("lz4-C64k", "z-4k"),
            ("lz4-ztailpacking", "z-4k"),
            ("lzma-default", "z-4k"),
            ("deflate9-default", "z-4k"),
            ("zstd-default", "z-4k"),
            ("lz4-b1024", "z-1k"),
        ] {
            add(&mut boot, name, &refs.join(format!("{name}.erofs")), group);
        }
        let sums = std::fs::read_to_string(refs.join("SHA256SUMS"))?;
        for want in ["./sizes/text-200000", "./big/mixed.bin"] {
            let digest = sums
                .lines()
                .find_map(|l| l.strip_suffix(want).map(|d| d.trim().to_string()))
                .with_context(|| format!("{want} not in SHA256SUMS"))?;
            zfiles.insert(want.trim_start_matches("./").to_string(), digest);
        }
    } else {
        eprintln!(
            "qemu-test: note: share-mixed: no reference images in {}, compressed part left out",
            refs.display()
        );
    }
    let files: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::from([
        (
            "plain-4k",
            BTreeMap::from([(SAME[0].to_string(), dg[SAME[0]].clone())]),
        ),
        (
            "plain-1k",
            BTreeMap::from([(SAME[0].to_string(), dg[SAME[0]].clone())]),
        ),
        ("z-4k", zfiles.clone()),
        ("z-1k", zfiles),
    ]);
    boot.run(
        "share",
        "share-mixed",
        json!({ "mode": "mixed", "mixed": images, "groups": files }),
    )?;
    Ok(Prepared::Boot(boot))
}

fn overlay(env: &mut Env) -> Result<Prepared> {
    if let Some(p) = unsupported(env) {
        return Ok(p);
    }
    let (share, share2, dg) = share_pair(env)?;
    let mut boot = Boot::default();
    let disks = BTreeMap::from([("share", boot.disk(&share)), ("share2", boot.disk(&share2))]);
    boot.run(
        "share",
        "share-overlay",
        json!({ "mode": "overlay", "disks": disks, "same": SAME, "digests": dg }),
    )?;
    Ok(Prepared::Boot(boot))
}

fn churn(env: &mut Env) -> Result<Prepared> {
    churn_boot(env, false)
}

/// The loop member is bound to an image with other bytes at the same addresses between its
/// remounts. A series that releases the member once its bios are submitted, not completed,
/// lets a request still in flight (or in the reader's plug) reach the loop device after it was
/// rebound, and that image's bytes land in the shared page cache for good (docs/kernel.md,
/// "Wrong bytes after a loop rebind").
fn rebind(env: &mut Env) -> Result<Prepared> {
    churn_boot(env, true)
}

/// Runs only on the debug kernel, whose test-only patch (xtask/kernel/debug-patches) adds the
/// delay knob; `qemu_test::DEBUG_ONLY` skips it on the normal kernel.
fn window(env: &mut Env) -> Result<Prepared> {
    let mut p = churn_boot(env, true)?;
    if let Prepared::Boot(b) = &mut p {
        for r in &mut b.runs {
            r.params["mode"] = json!("window");
            r.label = "share-window".into();
        }
    }
    Ok(p)
}

/// Reads of the carrier in `share-dio-window` go at this rate, so that the 128 KiB direct read
/// of the shared file stays in flight for seconds while the test frees what it reads through.
const DIO_CARRIER_BPS: u64 = 24 * 1024;

/// Fix 3 of issue 13 (debug kernel only): two file-backed members with `-o directio` whose
/// image files lie on a carrier disk that QEMU throttles. A reader of member B's file is held
/// (test knob) after member A, the newest member, mapped its miss and before A's request is
/// submitted; A is unmounted in that window. The reader then submits an asynchronous direct
/// read of A's image file and lets A go, which ends A (its backing file is put), and the
/// guest drops dentries and inodes while the read is still in flight on the slow carrier. A
/// series that does not keep the backing file until the read completes lets the read
/// complete on a freed file and inode (KASAN on the debug kernel).
fn dio_window(env: &mut Env) -> Result<Prepared> {
    if let Some(p) = unsupported(env) {
        return Ok(p);
    }
    let dir = env.work.join("trees/share-dio");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // One readahead window (128 KiB): a single direct read of the member's image file.
    std::fs::write(
        dir.join("dio"),
        crate::trees::random_bytes(0xd10, 128 * 1024),
    )?;
    let a = env.image(&dir, "share-dio-a", &fp(4096))?;
    let b = env.image(&dir, "share-dio-b", &fp(4096))?;
    let dg = digests(&dir)?;
    let carrier = env.carrier("share-dio", &[("a.erofs", &a), ("b.erofs", &b)])?;
    let mut boot = Boot {
        timeout_secs: 240,
        ..Default::default()
    };
    let cdev = boot.slow_disk(&carrier, DIO_CARRIER_BPS);
    boot.run(
        "share",
        "share-dio-window",
        json!({
            "mode": "dio-window",
            "carrier": erofs_mount(&cdev, "/carrier", ""),
            "files": { "a": "/carrier/a.erofs", "b": "/carrier/b.erofs" },
            "same": ["dio"],
            "digests": dg,
        }),
    )?;
    Ok(Prepared::Boot(boot))
}

/// Fix 4 of issue 13 (debug kernel only): a reader of member B's file holds member A (the
/// newest member serves the misses; the test knob keeps the reader between mapping and
/// submitting) while A is unmounted, so the reader's release is A's last reference. The debug
/// kernel's test-only check in `erofs_kill_sb()` warns if the member is then shut down in
/// the reader's context (inside `->readahead`, under the shared mapping's invalidate_lock);
/// the series hands that last reference to a worker.
fn last_put(env: &mut Env) -> Result<Prepared> {
    if let Some(p) = unsupported(env) {
        return Ok(p);
    }
    let (share, share2, dg) = share_pair(env)?;
    let mut boot = Boot {
        timeout_secs: 240,
        ..Default::default()
    };
    let disks = BTreeMap::from([("share", boot.disk(&share)), ("share2", boot.disk(&share2))]);
    boot.run(
        "share",
        "share-last-put",
        json!({
            "mode": "last-put",
            "disks": disks,
            "same": SAME,
            "digests": dg,
        }),
    )?;
    Ok(Prepared::Boot(boot))
}

/// SHA-256 (first 8 bytes, hex) of each 4 KiB page.
fn page_digests(data: &[u8]) -> Vec<String> {
    data.chunks(4096)
        .map(|c| {
            Sha256::digest(c)[..8]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .collect()
}

fn churn_boot(env: &mut Env, rebind_other: bool) -> Result<Prepared> {
    if let Some(p) = unsupported(env) {
        return Ok(p);
    }
    let (share, share2, dg) = share_pair(env)?;
    // Same names, sizes and options, other bytes: the same layout at the same block addresses,
    // so a member mapped with share2's metadata but reading this image's blocks shows up.
    let src = env.tree(Tree::SameContent)?;
    let dir = env.work.join("trees/share-churn-other");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for e in std::fs::read_dir(&src)? {
        let e = e?;
        let len = e.metadata()?.len() as usize;
        std::fs::write(
            dir.join(e.file_name()),
            crate::trees::random_bytes(0xc4_0000 + len as u64, len),
        )?;
    }
    let other = env.image(&dir, "share-churn-other", &fp(4096))?;
    let pages = BTreeMap::from([
        ("image", page_digests(&std::fs::read(src.join(SAME[0]))?)),
        ("other", page_digests(&std::fs::read(dir.join(SAME[0]))?)),
    ]);
    let mut boot = Boot {
        timeout_secs: 400,
        ..Default::default()
    };
    let mut disks = BTreeMap::from([("share", boot.disk(&share))]);
    for n in ["storm1", "storm2", "storm3"] {
        disks.insert(n, boot.disk(&share));
    }
    let carrier = env.carrier(
        "share-churn",
        &[("share2.erofs", &share2), ("other.erofs", &other)],
    )?;
    let cdev = boot.disk(&carrier);
    boot.run(
        "share",
        "share-churn",
        json!({
            "mode": "churn",
            "rebind_other": rebind_other,
            "pages": pages,
            "disks": disks,
            "carrier": erofs_mount(&cdev, "/carrier", ""),
            "files": { "share2": "/carrier/share2.erofs", "other": "/carrier/other.erofs" },
            "same": SAME,
            "digests": dg,
        }),
    )?;
    Ok(Prepared::Boot(boot))
}

/// 64 MiB in 16 files of 4 MiB, and its fingerprinted image.
fn big(env: &mut Env) -> Result<(PathBuf, BTreeMap<String, String>)> {
    let dir = env.work.join("trees/share-big");
    if !dir.join("f15").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        for k in 0..16u64 {
            let data = crate::trees::random_bytes(0xb16_0000 + k, 4 << 20);
            std::fs::write(dir.join(format!("f{k:02}")), data)?;
        }
    }
    let img = env.image(&dir, "share-big", &fp(4096))?;
    Ok((img, digests(&dir)?))
}

fn headline(env: &mut Env) -> Result<Prepared> {
    big_boot(env, "share-headline", 4, json!({ "mode": "headline" }))
}

fn stress(env: &mut Env) -> Result<Prepared> {
    big_boot(
        env,
        "share-stress",
        3,
        json!({ "mode": "stress", "secs": 60 }),
    )
}

/// A boot with the big fingerprinted image on `mounts` disks; `params` gets the disks as
/// `big` and the file digests as `digests`.
fn big_boot(
    env: &mut Env,
    name: &str,
    mounts: usize,
    mut params: serde_json::Value,
) -> Result<Prepared> {
    if let Some(p) = unsupported(env) {
        return Ok(p);
    }
    let (img, dg) = big(env)?;
    let mut boot = Boot {
        memory_mib: 1024,
        timeout_secs: 600,
        ..Default::default()
    };
    let devs: Vec<String> = (0..mounts).map(|_| boot.disk(&img)).collect();
    params["big"] = json!(devs);
    params["digests"] = json!(dg);
    boot.run("share", name, params)?;
    Ok(Prepared::Boot(boot))
}

/// Compressible content: runs of text with a counter, so lz4 really compresses it.
fn compressible(seed: u64, n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n + 64);
    let mut i = 0u64;
    while v.len() < n {
        v.extend_from_slice(format!("seed {seed} line {i}: the quick brown fox\n").as_bytes());
        i += 1;
    }
    v.truncate(n);
    v
}

/// Our mkfs writes no compressed images yet: build one with Debian's mkfs.erofs 1.5 from a tree
/// whose files carry `user.erofs.fingerprint` (sha256: + 32 raw bytes) as an ordinary xattr, then
/// register that name as long xattr prefix 0 in a block appended to the image and point
/// `ishare_xattr_prefix_id` at it. The kernel looks the fingerprint up by its full name, so it
/// finds the short-prefix entries mkfs.erofs wrote.
fn debian_fingerprinted(src: &Path, img: &Path, opts: &[&str]) -> Result<()> {
    debian_with_values(src, img, opts, |data| {
        [b"sha256:".as_slice(), Sha256::digest(data).as_slice()].concat()
    })
}

/// [`debian_fingerprinted`] with the fingerprint value of each file chosen by `value` (from the
/// file's content), so that a scenario can write values that are not digests.
fn debian_with_values(
    src: &Path,
    img: &Path,
    opts: &[&str],
    value: impl Fn(&[u8]) -> Vec<u8>,
) -> Result<()> {
    for e in std::fs::read_dir(src)? {
        let e = e?;
        if e.file_type()?.is_file() {
            let data = std::fs::read(e.path())?;
            erofs_guest::sys::set_xattr(&e.path(), b"user.erofs.fingerprint", &value(&data))
                .with_context(|| {
                    format!("setting user.erofs.fingerprint on {}", e.path().display())
                })?;
        }
    }
    std::fs::write(img, b"")?;
    let out = std::process::Command::new("mkfs.erofs")
        .arg("--quiet")
        .arg(format!("-T{}", crate::mkfs::EPOCH))
        .arg(format!("-U{}", crate::mkfs::UUID))
        .args(opts)
        .arg(img)
        .arg(src)
        .output()
        .context("running mkfs.erofs")?;
    if !out.status.success() {
        bail!(
            "mkfs.erofs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut b = std::fs::read(img)?;
    let sb = superblock(&mut b)?;
    if sb.blkszbits != 12 || sb.xattr_prefix_count != 0 {
        bail!("unexpected mkfs.erofs output in {}", img.display());
    }
    if b.len() % 4096 != 0 {
        bail!("unexpected mkfs.erofs output in {}", img.display());
    }
    // One long-prefix record ("user." + "erofs.fingerprint") in a block of its own at the
    // end, registered in the superblock.
    let at = b.len();
    let infix = b"erofs.fingerprint";
    let mut block = vec![0u8; 4096];
    let hdr = LongPrefixRecordHeader {
        len: (1 + infix.len() as u16).into(),
    };
    block[..2].copy_from_slice(hdr.as_bytes());
    block[2] = 1; // base index: "user."
    block[3..3 + infix.len()].copy_from_slice(infix);
    b.extend_from_slice(&block);
    let sb = superblock(&mut b)?;
    let mut compat = sb.compat();
    compat.insert(Compat::ISHARE_XATTRS);
    compat.insert(Compat::PLAIN_XATTR_PFX);
    sb.feature_compat.set(compat.bits());
    let incompat = sb.feature_incompat.get() | Incompat::XATTR_PREFIXES.bits();
    sb.feature_incompat.set(incompat);
    let blocks = sb.blocks_lo.get() + 1;
    sb.blocks_lo.set(blocks);
    sb.xattr_prefix_count = 1;
    sb.xattr_prefix_start.set((at / 4) as u32);
    sb.ishare_xattr_prefix_id = 0;
    let blkszbits = sb.blkszbits;
    crate::corrupt::reseal(&mut b, blkszbits);
    std::fs::write(img, &b)?;
    Ok(())
}

/// Skips on a stock kernel or without Debian's mkfs.erofs (for images with crafted values).
fn debian_unsupported(env: &Env, why: &str) -> Option<Prepared> {
    if env.variant == Variant::Stock {
        return Some(Prepared::Skip(
            "needs the patched kernel (inode_share)".into(),
        ));
    }
    let need = crate::util::Need {
        package: "erofs-utils",
        probe: "mkfs.erofs",
    };
    crate::util::ensure_packages("Debian's mkfs.erofs", &[need])
        .err()
        .map(|_| Prepared::Skip(format!("needs Debian's mkfs.erofs for {why}")))
}

/// A victim file X in domain `ab` and an attacker file in domain `b` whose fingerprint value is
/// the victim's followed by `a`: concatenated without a length, both keys read `X||"ab"`. The
/// two files have the same size and different data, so whichever is read second shows whether
/// the domains stayed apart. A copy of the victim image in domain `ab` is the positive control.
fn domains(env: &mut Env) -> Result<Prepared> {
    if let Some(p) = debian_unsupported(env, "crafted fingerprint values") {
        return Ok(p);
    }
    let size = 65536;
    let (victim_data, attacker_data) = (
        crate::trees::random_bytes(0xd0_0001, size),
        crate::trees::random_bytes(0xd0_0002, size),
    );
    let value = |d: &[u8]| [b"sha256:".as_slice(), Sha256::digest(d).as_slice()].concat();
    let victim_value = value(&victim_data);
    let images = env.work.join("images");
    std::fs::create_dir_all(&images)?;
    let mut made = BTreeMap::new();
    for (name, data) in [
        ("victim", &victim_data),
        ("victim2", &victim_data),
        ("attacker", &attacker_data),
    ] {
        let dir = env.work.join("trees/share-domains").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("f"), data)?;
        let img = images.join(format!("share-domains-{name}.erofs"));
        let v = if name == "attacker" {
            [victim_value.as_slice(), b"a"].concat()
        } else {
            victim_value.clone()
        };
        debian_with_values(&dir, &img, &[], |_| v.clone())?;
        made.insert(name, img);
    }
    let mut boot = Boot::default();
    let disks: BTreeMap<&str, String> = made.iter().map(|(n, p)| (*n, boot.disk(p))).collect();
    let digests = BTreeMap::from([
        ("victim", sha_hex(&victim_data)),
        ("attacker", sha_hex(&attacker_data)),
    ]);
    boot.run(
        "share",
        "share-domains",
        json!({ "mode": "domains", "disks": disks, "digests": digests }),
    )?;
    Ok(Prepared::Boot(boot))
}

fn compressed(env: &mut Env) -> Result<Prepared> {
    if env.variant == Variant::Stock {
        return Ok(Prepared::Skip(
            "needs the patched kernel (inode_share)".into(),
        ));
    }
    if crate::util::ensure_packages(
        "Debian's mkfs.erofs",
        &[crate::util::Need {
            package: "erofs-utils",
            probe: "mkfs.erofs",
        }],
    )
    .is_err()
    {
        return Ok(Prepared::Skip(
            "needs Debian's mkfs.erofs for compressed images".into(),
        ));
    }
    let dir = env.work.join("trees/share-compressed");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let same = compressible(1, (2 << 20) + 123);
    std::fs::write(dir.join(SAME[0]), &same)?;
    std::fs::write(dir.join(SAME[1]), &same)?;
    std::fs::write(dir.join("other"), compressible(2, 700_000))?;
    let images = env.work.join("images");
    std::fs::create_dir_all(&images)?;
    let (z1, z2, zp) = (
        images.join("share-lz4hc.erofs"),
        images.join("share-lz4hc-2.erofs"),
        images.join("share-z-plain.erofs"),
    );
    debian_fingerprinted(&dir, &z1, &["-zlz4hc", "-C16384"])?;
    debian_fingerprinted(&dir, &z2, &["-zlz4hc", "-C16384"])?;
    debian_fingerprinted(&dir, &zp, &[])?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    if size(&z1) * 4 > size(&zp) {
        bail!(
            "{} is not compressed ({} vs {} bytes)",
            z1.display(),
            size(&z1),
            size(&zp)
        );
    }
    let dg = digests(&dir)?;
    let mut boot = Boot::default();
    let disks = BTreeMap::from([
        ("z", boot.disk(&z1)),
        ("z2", boot.disk(&z2)),
        ("zplain", boot.disk(&zp)),
    ]);
    let carrier = env.carrier("share-compressed", &[("z2.erofs", &z2)])?;
    let cdev = boot.disk(&carrier);
    boot.run(
        "share",
        "share-compressed",
        json!({
            "mode": "compressed",
            "disks": disks,
            "carrier": erofs_mount(&cdev, "/carrier", ""),
            "files": { "z2": "/carrier/z2.erofs" },
            "same": SAME,
            "digests": dg,
        }),
    )?;
    // Chunk-based files, which our mkfs cannot write yet either: same trick, --chunksize.
    let zc = images.join("share-chunk.erofs");
    debian_fingerprinted(&dir, &zc, &["--chunksize=4096"])?;
    let chunk_disks = BTreeMap::from([("chunk-4096", boot.disk(&zc))]);
    boot.run(
        "share",
        "share-chunk",
        json!({ "mode": "layouts", "disks": chunk_disks, "same": SAME, "digests": dg }),
    )?;
    let umount_disks = BTreeMap::from([
        ("share", disks["z"].clone()),
        ("share2", disks["z2"].clone()),
    ]);
    boot.run(
        "share",
        "share-compressed-umount",
        json!({ "mode": "umount", "disks": umount_disks, "same": SAME, "digests": dg }),
    )?;
    Ok(Prepared::Boot(boot))
}
