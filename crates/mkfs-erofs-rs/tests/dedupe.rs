//! `-E dedupe` (pclusters shared between extents, within and across files) and
//! `--max-extent-bytes`: images read back by every available reader, sharing that really
//! happens, and byte-identical builds for every thread count.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;
use erofs_format::DataLayout;
use erofs_reader::{Image, ZExtent, ZStorage};

/// Words of a small vocabulary: text that LZ4 compresses too (to about a third).
fn words(seed: u64, len: usize) -> Vec<u8> {
    const VOCAB: [&[u8]; 16] = [
        b"erofs",
        b"pcluster",
        b"extent",
        b"block",
        b"inode",
        b"kernel",
        b"mount",
        b"index",
        b"the",
        b"of",
        b"and",
        b"compressed",
        b"data",
        b"file",
        b"read",
        b"write",
    ];
    let mut rng = erofs_testkit::Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let r = rng.next_u64();
        out.extend_from_slice(VOCAB[(r & 15) as usize]);
        out.push(if r >> 60 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// The file every duplicate is made from: text, an incompressible run (PLAIN pclusters),
/// zeroes, text again.
fn original() -> Vec<u8> {
    let mut a = text(1, 300_000);
    a.extend_from_slice(&bytes(2, 40_000));
    a.extend_from_slice(&vec![0u8; 100_000]);
    a.extend_from_slice(&text(3, 123_457));
    a
}

/// A tree with `a/original`, a whole copy `b/copy`, a file sharing its first 200,000
/// bytes `c/prefix`, three copies of a small file, unrelated files, and (`big`) a file of
/// several segments with its copy; (`repeats`) a file that repeats one run.
fn make_dup_tree(root: &Path, big: bool, repeats: bool) {
    make_tree(
        root,
        Features {
            special: false,
            sparse: false,
            big: false,
        },
    );
    let a = original();
    for (rel, data) in [
        ("a/original", &a[..]),
        ("b/copy", &a[..]),
        ("c/prefix", &a[..200_000]),
    ] {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let small = text(4, 20_000);
    for d in ["d1", "d2/x", "d3/y/z"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
        std::fs::write(root.join(d).join("NOTICE"), &small).unwrap();
    }
    std::fs::write(root.join("other"), text(5, 70_000)).unwrap();
    if repeats {
        // One run four times over (LZ4 matches reach back 64 KiB less a byte, so it
        // does not find the run again): shared inside the file, from anywhere in an
        // extent.
        let run = words(7, 65_536);
        let mut r = words(8, 10_000);
        for _ in 0..4 {
            r.extend_from_slice(&run);
        }
        std::fs::write(root.join("repeats"), &r).unwrap();
    }
    if big {
        let b = text(6, (4 << 20) + 300_000);
        std::fs::write(root.join("a/big"), &b).unwrap();
        std::fs::write(root.join("b/big-copy"), &b).unwrap();
    }
}

const EPOCH_ARG: &str = "1700000000";

fn args<'a>(z: &'a str, j: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    assert_eq!(EPOCH_ARG, EPOCH.to_string());
    let mut a = vec!["-T", EPOCH_ARG, "-U", "clear", "-j", j, z];
    a.extend_from_slice(extra);
    a
}

fn is_compressed(l: &DataLayout) -> bool {
    matches!(
        l,
        DataLayout::CompressedFull | DataLayout::CompressedCompact
    )
}

/// Bytes of pclusters in the data area (not inline) among `x`.
fn stored(x: &[ZExtent]) -> u64 {
    x.iter().filter(|e| !e.inline).map(|e| e.plen).sum()
}

#[test]
fn deduped_images_share_pclusters_and_read_back_everywhere() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_dup_tree(&src, false, true);
    let want = with_epoch(snap_dir(&src, FULL, &[]));
    for (k, (z, extra)) in [
        ("-zlz4", &[][..]),
        ("-zlz4hc", &["-C", "65536"][..]),
        ("-zlz4hc,12", &["-C", "65536", "-E", "ztailpacking"][..]),
        ("-zlz4", &["-b", "1024", "-E", "ztailpacking"][..]),
        ("-zlzma", &["-C", "65536"][..]),
        ("-zzstd", &["-E", "ztailpacking"][..]),
        ("-zdeflate", &["-C", "16384"][..]),
        ("-zlz4", &["-C", "16384", "-E", "legacy-compress"][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let what = format!("{z} {extra:?}");
        let plain = tmp.path().join(format!("plain{k}.erofs"));
        let deduped = tmp.path().join(format!("dedupe{k}.erofs"));
        let mut without = extra.to_vec();
        without.push("--fingerprint=sha256");
        mkfs(&src, &plain, &args(z, "2", &without));
        let mut with = without.clone();
        with.extend_from_slice(&["-E", "dedupe"]);
        mkfs(&src, &deduped, &args(z, "2", &with));

        // Every reader sees the source tree.
        let got = snap_image(&deduped, FULL);
        let mut want_fp = want.clone();
        for (rel, s) in want_fp.iter_mut() {
            if s.kind == 'f' && !s.content.starts_with("0 ") {
                use sha2::{Digest, Sha256};
                let data = std::fs::read(src.join(std::ffi::OsStr::from_bytes(rel))).unwrap();
                let mut v = b"sha256:".to_vec();
                v.extend_from_slice(&Sha256::digest(&data));
                s.xattrs.insert(b"trusted.erofs.fingerprint".to_vec(), v);
            }
        }
        assert_same(&format!("reader, {what}"), &want_fp, &got);
        if let Some(m) = Mount::new(&deduped) {
            let got = snap_dir(m.path(), FULL, &[]);
            assert_same(&format!("kernel mount, {what}"), &want_fp, &got);
        }

        // DEDUPE (the FRAGMENTS bit) exactly when an extent takes a prefix of a pcluster
        // (PARTIAL_REF); sharing whole pclusters needs no bit.
        let key = |s: &str| s.as_bytes().to_vec();
        let blk = if extra.contains(&"1024") { 1024 } else { 4096 };
        let p = extents(&plain);
        let d = extents(&deduped);
        let incompat = Image::open(&deduped).unwrap().superblock().incompat();
        let any_partial = extents(&deduped)
            .values()
            .any(|(_, x)| x.iter().any(|e| e.partial));
        assert_eq!(
            incompat.contains(erofs_format::Incompat::FRAGMENTS),
            any_partial,
            "{what}"
        );
        // The repeated run is stored about once, where pclusters are small enough for it
        // to span several (one 64 KiB pcluster takes in the whole file).
        if let Some((l, x)) = d.get(&key("repeats")).filter(|_| !extra.contains(&"65536")) {
            let mut seen = std::collections::HashSet::new();
            let own: u64 = x
                .iter()
                .filter(|e| !e.inline && seen.insert(e.physical))
                .map(|e| e.plen)
                .sum();
            let before = p.get(&key("repeats")).map_or(0, |(_, x)| stored(x));
            eprintln!("{what}: repeats {l:?} {own} of {before}, partial {any_partial}");
            // Small blocks leave less room to find a match (it must start within the
            // previous extent's last bytes past one block, as in mkfs.erofs).
            // DEFLATE at 16 KiB pclusters takes the run in in few pclusters: 53% of them.
            let most = if blk == 1024 {
                before * 4 / 5
            } else {
                before * 3 / 5
            };
            assert!(own < most, "{what}: repeats stores {own} of {before}");
        }

        let (orig_layout, orig) = &d[&key("a/original")];
        let (copy_layout, copy) = &d[&key("b/copy")];
        // The copy's extents are the original's, at the same physical blocks.
        assert_eq!(
            orig.iter()
                .filter(|e| !e.inline)
                .map(|e| (e.logical, e.length, e.physical, e.plen))
                .collect::<Vec<_>>(),
            copy.iter()
                .filter(|e| !e.inline)
                .map(|e| (e.logical, e.length, e.physical, e.plen))
                .collect::<Vec<_>>(),
            "{what}"
        );
        assert!(stored(orig) > 0, "{what}: the original has pclusters");
        // Compact indexes wherever the pclusters are in order (the first holder, a copy
        // of a whole file), full ones where sharing broke the order or an extent takes a
        // prefix of its pcluster (mkfs.erofs's rule).
        let legacy = extra.contains(&"legacy-compress");
        let mut broken = 0;
        for (path, (layout, x)) in &d {
            if !is_compressed(layout) {
                continue;
            }
            let data: Vec<_> = x.iter().filter(|e| !e.inline).collect();
            let in_order = data
                .windows(2)
                .all(|w| w[1].physical == w[0].physical + w[0].plen)
                && x.iter().all(|e| !e.partial);
            broken += usize::from(!in_order);
            let want = if legacy || !in_order {
                DataLayout::CompressedFull
            } else {
                DataLayout::CompressedCompact
            };
            assert_eq!(*layout, want, "{what}: {}", String::from_utf8_lossy(path));
        }
        let _ = (orig_layout, copy_layout, broken);
        // The prefix shares every extent it has in common with the original (same cut,
        // same bytes), unless it is stored flat (LZ4 with 1 KiB blocks gains nothing on
        // this text).
        let shared_with_original = |x: &[ZExtent]| -> Vec<ZExtent> {
            x.iter()
                .filter(|e| {
                    !e.inline
                        && orig
                            .iter()
                            .any(|o| (o.logical, o.length) == (e.logical, e.length))
                })
                .cloned()
                .collect()
        };
        if let Some((DataLayout::CompressedFull | DataLayout::CompressedCompact, prefix)) =
            d.get(&key("c/prefix"))
        {
            let common = shared_with_original(prefix);
            assert!(!common.is_empty(), "{what}: the prefix shares nothing");
            for e in &common {
                assert!(
                    orig.iter()
                        .any(|o| o.physical == e.physical && o.plen == e.plen),
                    "{what}: prefix extent at {} not shared",
                    e.logical
                );
            }
        }

        // The image shrinks by what the sharers stored in the image without dedupe:
        // block counts, up to the metadata that full indexes add.
        let mut expected = stored(&p[&key("b/copy")].1);
        // Stored flat where compression gains nothing: not shared then.
        let compressed = |n: &str| {
            p.get(&key(n)).filter(|(l, _)| {
                matches!(
                    l,
                    DataLayout::CompressedFull | DataLayout::CompressedCompact
                )
            })
        };
        if let Some((_, x)) = compressed("c/prefix") {
            expected += x
                .iter()
                .filter(|e| {
                    !e.inline
                        && p[&key("a/original")]
                            .1
                            .iter()
                            .any(|o| (o.logical, o.length) == (e.logical, e.length))
                })
                .map(|e| e.plen)
                .sum::<u64>();
        }
        for n in ["d2/x/NOTICE", "d3/y/z/NOTICE"] {
            expected += compressed(n).map_or(0, |(_, x)| stored(x));
        }
        let len = |f: &Path| std::fs::metadata(f).unwrap().len();
        let saved = len(&plain) as i64 - len(&deduped) as i64;
        // Full indexes cost the sharers metadata: up to a few blocks. Under dedupe a tail
        // goes inline only where it would fit beside full indexes: each one that no longer
        // does costs up to a block.
        let mut slack = 4 * blk as i64;
        for (k, (l, x)) in &d {
            if *l == DataLayout::CompressedFull
                && p.get(k)
                    .is_some_and(|(l, _)| *l == DataLayout::CompressedCompact)
            {
                // 8 bytes per lcluster instead of 2 or 4.
                let lclusters = x.last().map_or(0, |e| e.end()).div_ceil(blk) as i64;
                slack += 8 * lclusters + 16;
            }
        }
        let inline = |m: &BTreeMap<Vec<u8>, (DataLayout, Vec<ZExtent>)>| {
            m.values()
                .flat_map(|(_, x)| x.iter().filter(|e| e.inline))
                .count() as i64
        };
        let lost_tails = inline(&p) - inline(&d);
        assert!(lost_tails >= 0, "{what}");
        // Sharing inside the original (a run that repeats) cuts it differently: what that
        // changes of its own pclusters moves the bound.
        let distinct = |x: &[ZExtent]| -> i64 {
            let mut seen = std::collections::HashSet::new();
            x.iter()
                .filter(|e| !e.inline && seen.insert(e.physical))
                .map(|e| e.plen as i64)
                .sum()
        };
        let drift = (distinct(orig) - stored(&p[&key("a/original")].1) as i64).max(0);
        assert!(
            expected > 0 && saved >= expected as i64 - slack - lost_tails * blk as i64 - drift,
            "{what}: saved {saved} bytes, the duplicates stored {expected}"
        );
        // And what it saved is what the files no longer store: every pcluster of the
        // deduped image once, against the plain image's.
        let total = |m: &BTreeMap<Vec<u8>, (DataLayout, Vec<ZExtent>)>| -> u64 {
            let mut seen = std::collections::HashSet::new();
            m.values()
                .filter(|(l, _)| is_compressed(l))
                .flat_map(|(_, x)| x.iter().filter(|e| !e.inline))
                .filter(|e| seen.insert(e.physical))
                .map(|e| e.plen)
                .sum()
        };
        let by_pclusters = total(&p) as i64 - total(&d) as i64;
        assert!(
            (saved - by_pclusters).abs() <= slack,
            "{what}: saved {saved} bytes, pclusters {by_pclusters}"
        );
    }
}

use std::os::unix::ffi::OsStrExt;

#[test]
fn deduped_builds_are_byte_identical_for_every_thread_count() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_dup_tree(&src, true, true);
    for (z, extra) in [
        ("-zlz4", &["-E", "dedupe"][..]),
        ("-zlz4hc", &["-C", "65536", "-E", "dedupe,ztailpacking"][..]),
        ("-zzstd", &["-C", "16384", "-E", "dedupe"][..]),
    ] {
        let mut first: Option<Vec<u8>> = None;
        for j in ["1", "2", "8"] {
            let img = tmp.path().join(format!("r{z}-{j}.erofs"));
            mkfs(&src, &img, &args(z, j, extra));
            let bytes = std::fs::read(&img).unwrap();
            match &first {
                None => first = Some(bytes),
                Some(f) => assert!(f == &bytes, "{z} {extra:?} -j{j} differs from -j1"),
            }
        }
        // The copy of a file of several segments shares all its pclusters.
        let img = tmp.path().join(format!("r{z}-1.erofs"));
        let x = extents(&img);
        let at = |p: &str| {
            x[p.as_bytes()]
                .1
                .iter()
                .filter(|e| !e.inline)
                .map(|e| e.physical)
                .collect::<Vec<_>>()
        };
        assert_eq!(at("a/big"), at("b/big-copy"), "{z}");
        assert_same(
            &format!("reader, {z} {extra:?}"),
            &with_epoch(snap_dir(&src, FULL, &[])),
            &snap_image(&img, FULL),
        );
    }
}

#[test]
fn debian_fsck_erofs_1_5_extracts_deduped_images() {
    if !have("fsck.erofs") {
        skip_or_fail("fsck.erofs is not installed");
        return;
    }
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_dup_tree(&src, false, false);
    let cmp = Compare {
        owners: is_root(),
        xattrs: false,
        mtime: false,
        nlink: false,
    };
    let mask = |mut s: BTreeMap<Vec<u8>, Snap>| {
        s.values_mut().for_each(|v| v.perm &= 0o777);
        s
    };
    let want = mask(snap_dir(&src, cmp, &[]));
    for (k, (z, extra)) in [
        ("-zlz4", &["-E", "dedupe"][..]),
        ("-zlz4hc", &["-C", "65536", "-E", "dedupe,ztailpacking"][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let img = tmp.path().join(format!("img{k}.erofs"));
        mkfs(&src, &img, &args(z, "2", extra));
        run_ok(Command::new("fsck.erofs").arg(&img), "fsck.erofs");
        let dest = tmp.path().join(format!("extracted{k}"));
        run_ok(
            Command::new("fsck.erofs")
                .arg(format!("--extract={}", dest.display()))
                .arg(&img),
            "fsck.erofs --extract",
        );
        assert_same(
            &format!("fsck.erofs 1.5 --extract {z} {extra:?}"),
            &want,
            &mask(snap_dir(&dest, cmp, &[])),
        );
    }
    // A run shared from inside an extent needs PARTIAL_REF, which 1.5 cannot decode: the
    // DEDUPE bit makes it refuse the image instead of failing on that extent.
    let src2 = tmp.path().join("src2");
    make_dup_tree(&src2, false, true);
    let img = tmp.path().join("partial.erofs");
    mkfs(&src2, &img, &args("-zlz4hc", "2", &["-E", "dedupe"]));
    assert!(
        extents(&img)
            .values()
            .any(|(_, x)| x.iter().any(|e| e.partial)),
        "no PARTIAL_REF extent to test with"
    );
    let out = Command::new("fsck.erofs").arg(&img).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("incompatible feature 20"),
        "{err}"
    );
}

#[test]
fn max_extent_bytes_bounds_every_extent() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_dup_tree(&src, false, true);
    std::fs::write(src.join("zeros"), vec![0u8; 3 << 20]).unwrap();
    let want = with_epoch(snap_dir(&src, FULL, &[]));
    let longest = |img: &Path| {
        extents(img)
            .values()
            .flat_map(|(_, x)| x.iter().map(|e| e.length))
            .max()
            .unwrap()
    };
    let free = tmp.path().join("free.erofs");
    mkfs(&src, &free, &args("-zlz4hc", "2", &["-C", "65536"]));
    // Without a cap the zeroes make one long extent.
    assert!(longest(&free) > 1 << 20, "{}", longest(&free));
    for (k, (cap, extra)) in [
        ("16384", &["-C", "65536"][..]),
        ("0x3000", &["-C", "4096", "-E", "ztailpacking,dedupe"][..]),
        ("4096", &[][..]),
        ("100000", &["-C", "16384", "-E", "ztailpacking"][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let img = tmp.path().join(format!("cap{k}.erofs"));
        let flag = format!("--max-extent-bytes={cap}");
        let mut a = extra.to_vec();
        a.push(&flag);
        mkfs(&src, &img, &args("-zlz4hc", "2", &a));
        let n = match cap.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).unwrap(),
            None => cap.parse().unwrap(),
        };
        let x = extents(&img);
        let mut compressed = 0;
        for (path, (layout, ext)) in &x {
            if !is_compressed(layout) {
                continue;
            }
            for e in ext {
                assert!(
                    e.length <= n,
                    "{flag}: {} extent at {} decodes {} bytes",
                    String::from_utf8_lossy(path),
                    e.logical,
                    e.length
                );
                compressed += usize::from(matches!(e.storage, ZStorage::Compressed { .. }));
            }
        }
        // A cap of one block leaves nothing that compresses into fewer blocks.
        assert_eq!(compressed == 0, n <= 4096, "{flag}: {compressed}");
        assert_same(&format!("reader, {flag}"), &want, &snap_image(&img, FULL));
    }
    for (bad, why) in [
        ("--max-extent-bytes=0", "at least one block"),
        ("--max-extent-bytes=4095", "at least one block"),
        ("--max-extent-bytes=12k", "invalid maximum extent size"),
        ("--max-extent-bytes=", "invalid maximum extent size"),
    ] {
        let out = Command::new(mkfs_bin())
            .args(args("-zlz4", "1", &[bad]))
            .arg(&src)
            .arg(tmp.path().join("never.erofs"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{bad}: {err}");
        assert!(!tmp.path().join("never.erofs").exists(), "{bad}");
    }
    // Without -z there is no extent to bound; -E dedupe without -z is refused too.
    for bad in [&["--max-extent-bytes=8192"][..], &["-E", "dedupe"][..]] {
        let out = Command::new(mkfs_bin())
            .args(["-T", EPOCH_ARG])
            .args(bad)
            .arg(&src)
            .arg(tmp.path().join("never.erofs"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad:?}");
    }
}

#[test]
fn json_reports_what_dedupe_shared() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let a = original();
    std::fs::write(src.join("one"), &a).unwrap();
    std::fs::write(src.join("two"), &a).unwrap();
    let report = |name: &str, extra: &[&str]| {
        let img = tmp.path().join(name);
        let o = Command::new(mkfs_bin())
            .arg("--json")
            .args(args("-zlz4hc", "2", extra))
            .arg(&src)
            .arg(&img)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
        (v, extents(&img))
    };
    let (plain, px) = report("plain.erofs", &[]);
    let (dd, dx) = report(
        "dedupe.erofs",
        &["-E", "dedupe", "--max-extent-bytes=65536"],
    );
    let one = stored(&px[&b"one"[..]].1);
    assert!(one > 0);
    let (p, d) = (&plain["compression"], &dd["compression"]);
    assert_eq!(p["shared_bytes"], 0);
    assert_eq!(p["stored_bytes"].as_u64().unwrap(), 2 * one);
    // Every pcluster counts once in stored_bytes, every other reference to it in
    // shared_bytes; the second file shares all of the first's.
    let mut seen = std::collections::HashSet::new();
    let (mut distinct, mut refs) = (0, 0);
    for name in [&b"one"[..], b"two"] {
        for e in dx[name].1.iter().filter(|e| !e.inline) {
            refs += e.plen;
            if seen.insert(e.physical) {
                distinct += e.plen;
            }
        }
    }
    assert_eq!(d["stored_bytes"].as_u64().unwrap(), distinct);
    assert_eq!(d["shared_bytes"].as_u64().unwrap(), refs - distinct);
    assert!(refs - distinct >= distinct, "{refs} {distinct}");
    assert_eq!(dd["options"]["dedupe"], true);
    assert_eq!(dd["options"]["max_extent_bytes"], 65536);
    assert_eq!(plain["options"]["dedupe"], false);
    assert_eq!(plain["options"]["max_extent_bytes"], 12 << 20);
}

#[test]
fn with_fragments_a_tail_that_a_written_pcluster_decodes_is_not_packed_again() {
    // mkfs.erofs looks for a match before it cuts a file's tail into a fragment: a file
    // that is the start of an earlier one ends on that file's pcluster (PARTIAL_REF), not
    // in the packed inode. The packed inode, made of fragments already stored once,
    // shares nothing, as in mkfs.erofs.
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let a = original();
    std::fs::write(src.join("a-original"), &a).unwrap();
    std::fs::write(src.join("b-start-of-a"), &a[..420_000]).unwrap();
    std::fs::write(src.join("c-other"), text(9, 150_000)).unwrap();
    let want = with_epoch(snap_dir(&src, FULL, &[]));
    for z in ["-zlz4hc", "-zzstd"] {
        let img = tmp.path().join(format!("{z}.erofs"));
        let e = "ztailpacking,fragments,dedupe";
        mkfs(&src, &img, &args(z, "2", &["-C", "65536", "-E", e]));
        assert_same(&format!("reader, {z}"), &want, &snap_image(&img, FULL));
        let x = extents(&img);
        let pclusters = |p: &[u8]| -> Vec<(u64, bool)> {
            x[p].1
                .iter()
                .filter(|e| !matches!(e.storage, ZStorage::Fragment { .. }) && !e.inline)
                .map(|e| (e.physical, e.partial))
                .collect()
        };
        let (a_pc, b_pc) = (pclusters(b"a-original"), pclusters(b"b-start-of-a"));
        let b = &x[&b"b-start-of-a"[..]].1;
        assert!(
            b.iter()
                .all(|e| !matches!(e.storage, ZStorage::Fragment { .. })),
            "{z}: b's tail went to the packed inode: {b:?}"
        );
        assert!(
            b.last().unwrap().partial,
            "{z}: b ends on a prefix of a pcluster"
        );
        assert!(
            b_pc.iter().all(|(p, _)| a_pc.iter().any(|(q, _)| q == p)),
            "{z}: b stores a pcluster of its own"
        );
        // The other files do have fragments, and the packed inode shares nothing.
        assert!(
            x[&b"c-other"[..]]
                .1
                .iter()
                .any(|e| matches!(e.storage, ZStorage::Fragment { .. })),
            "{z}"
        );
        let im = Image::open(&img).unwrap();
        let packed = im.inode(im.superblock().packed_nid.get()).unwrap();
        let px = im.z_extents(&packed).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for e in px.iter().filter(|e| !e.inline) {
            assert!(
                !e.partial && seen.insert(e.physical),
                "{z}: packed inode {e:?}"
            );
        }
        if let Some(m) = Mount::new(&img) {
            assert_same(
                &format!("kernel mount, {z}"),
                &want,
                &snap_dir(m.path(), FULL, &[]),
            );
        }
    }
}

#[test]
fn files_read_wholly_from_earlier_pclusters_store_nothing() {
    // As mkfs.erofs's dedupe finds one match after another: files of zeroes longer than
    // one written before, and a file that compression alone would store flat (one block of
    // zeroes gains nothing by itself), point at the first file's pcluster.
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for (name, len) in [
        ("a-zeros", 16_383),
        ("b-more-zeros", 200_000),
        ("c-one-block", 4096),
        ("d-block-and-a-byte", 4097),
        ("e-zeros", 16_385),
    ] {
        std::fs::write(src.join(name), vec![0u8; len]).unwrap();
    }
    std::fs::write(src.join("f-text"), text(5, 30_000)).unwrap();
    let want = with_epoch(snap_dir(&src, FULL, &[]));
    for (z, c) in [("-zlz4", "65536"), ("-zlz4hc", "4096"), ("-zzstd", "16384")] {
        let img = tmp.path().join(format!("{z}-{c}.erofs"));
        mkfs(&src, &img, &args(z, "2", &["-C", c, "-E", "dedupe"]));
        let what = format!("{z} -C{c}");
        assert_same(&format!("reader, {what}"), &want, &snap_image(&img, FULL));
        let x = extents(&img);
        let (_, a) = &x[&b"a-zeros"[..]];
        assert_eq!(a.len(), 1, "{what}: {a:?}");
        for name in [
            "b-more-zeros",
            "c-one-block",
            "d-block-and-a-byte",
            "e-zeros",
        ] {
            let (layout, e) = x
                .get(name.as_bytes())
                .unwrap_or_else(|| panic!("{what}: {name} is not compressed"));
            assert!(is_compressed(layout), "{what}: {name}");
            assert!(
                e.iter().all(|e| e.physical == a[0].physical),
                "{what}: {name} has a pcluster of its own: {e:?}"
            );
        }
        if let Some(m) = Mount::new(&img) {
            assert_same(
                &format!("kernel mount, {what}"),
                &want,
                &snap_dir(m.path(), FULL, &[]),
            );
        }
    }
}
