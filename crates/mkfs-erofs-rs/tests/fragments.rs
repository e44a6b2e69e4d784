//! `-E fragments`, `-E all-fragments`, `-E fragdedupe`: file tails (or whole files) in the
//! packed inode, read back by our reader and the host kernel, fingerprinted from the
//! decoded content, byte-identical for every thread count, and deduplicated as asked.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::*;
use erofs_reader::{Image, ZStorage};

const EPOCH_ARG: &str = "1700000000";

/// Sizes around block and pcluster boundaries, small files, a file that turns
/// incompressible (its raw blocks are interlaced), one of several segments, and
/// duplicates: two identical small files (whole fragments) and two identical larger ones
/// (identical tails).
fn make_fragment_tree(root: &Path) {
    make_tree(
        root,
        Features {
            special: is_root(),
            sparse: true,
            big: false,
        },
    );
    let z = root.join("z");
    std::fs::create_dir_all(z.join("dup")).unwrap();
    for (i, size) in [1usize, 100, 1023, 4095, 4097, 8193, 40_000, 70_000, 150_000]
        .into_iter()
        .enumerate()
    {
        std::fs::write(z.join(format!("text-{size}")), text(i as u64, size)).unwrap();
    }
    let mut mixed = text(40, 30_000);
    mixed.extend_from_slice(&bytes(41, 30_000));
    mixed.extend_from_slice(&bytes(42, 1_234));
    std::fs::write(z.join("mixed"), &mixed).unwrap();
    std::fs::write(z.join("random-5000"), bytes(43, 5000)).unwrap();
    std::fs::write(z.join("text-6m"), text(44, (6 << 20) + 777)).unwrap();
    for (name, data) in [("small", text(50, 3000)), ("large", text(51, 50_000))] {
        std::fs::write(z.join(format!("{name}-1")), &data).unwrap();
        std::fs::write(z.join("dup").join(format!("{name}-2")), &data).unwrap();
    }
}

fn args<'a>(z: &'a str, j: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    assert_eq!(EPOCH_ARG, EPOCH.to_string());
    let mut a = vec!["-T", EPOCH_ARG, "-U", "clear", "-j", j, z];
    a.extend_from_slice(extra);
    a
}

/// What an image's fragments look like.
struct Frags {
    /// The packed inode's content (empty when the superblock names none).
    packed: Vec<u8>,
    /// Regular files wholly in the packed inode, and files with a tail there.
    whole: usize,
    tails: usize,
    /// Non-empty regular files.
    files: usize,
    /// The fragment extents of each file, by path: (offset in the packed inode, length).
    by_path: std::collections::BTreeMap<Vec<u8>, Vec<(u64, u64)>>,
    /// Each file's fragment by nid (hard links are one file): (offset, length, whole).
    by_nid: std::collections::BTreeMap<u64, (u64, u64, bool)>,
}

fn fragments_of(image: &Path) -> Frags {
    let img = Image::open(image).expect("open image");
    let sb = img.superblock();
    let has_bit = sb.incompat().contains(erofs_format::Incompat::FRAGMENTS);
    let packed_nid = sb.packed_nid.get();
    assert_eq!(
        has_bit,
        packed_nid != 0,
        "FRAGMENTS bit and packed_nid agree"
    );
    let packed = if packed_nid != 0 {
        let ino = img.inode(packed_nid).expect("packed inode");
        img.read_to_vec(&ino, u64::MAX)
            .expect("packed inode content")
    } else {
        Vec::new()
    };
    let packed_size = packed.len() as u64;
    let mut f = Frags {
        packed,
        whole: 0,
        tails: 0,
        files: 0,
        by_path: Default::default(),
        by_nid: Default::default(),
    };
    for e in img.walk().expect("walk") {
        let e = e.expect("walk entry");
        if !e.inode.is_file() || e.inode.size == 0 {
            continue;
        }
        f.files += 1;
        assert_ne!(e.nid, packed_nid, "the packed inode is in no directory");
        let Ok(ext) = img.z_extents(&e.inode) else {
            continue;
        };
        let frags: Vec<(u64, u64)> = ext
            .iter()
            .filter_map(|x| match x.storage {
                ZStorage::Fragment { offset } => Some((offset, x.length)),
                _ => None,
            })
            .collect();
        match frags.as_slice() {
            [] => {}
            [(_, len)] if *len == e.inode.size => f.whole += 1,
            [_] => f.tails += 1,
            more => panic!("{} fragments in one file: {more:?}", more.len()),
        }
        for &(off, len) in &frags {
            assert!(off + len <= packed_size, "fragment past the packed inode");
            f.by_nid.insert(e.nid, (off, len, len == e.inode.size));
        }
        f.by_path.insert(e.path.clone(), frags);
    }
    f
}

fn fingerprints_match(src: &Path, img: &Path) {
    use sha2::{Digest, Sha256};
    let got = snap_image(img, FULL);
    let mut checked = 0;
    for (rel, s) in &got {
        if s.kind != 'f' || s.content.starts_with("0 ") {
            continue;
        }
        let data = std::fs::read(src.join(std::ffi::OsStr::from_bytes(rel))).unwrap();
        let mut want = b"sha256:".to_vec();
        want.extend_from_slice(&Sha256::digest(&data));
        assert_eq!(
            s.xattrs.get(&b"trusted.erofs.fingerprint"[..]),
            Some(&want),
            "{}",
            String::from_utf8_lossy(rel)
        );
        checked += 1;
    }
    assert!(checked > 20, "{checked} files checked");
}

#[test]
fn fragment_images_round_trip_through_our_reader_and_the_kernel() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_fragment_tree(&src);
    let want = with_epoch(snap_dir(&src, FULL, &[]));
    let mut n_kernel = 0;
    for (k, (z, extra)) in [
        ("-zlz4", &["-E", "fragments"][..]),
        ("-zlz4hc", &["-C", "65536", "-E", "fragments"][..]),
        (
            "-zlzma",
            &["-C", "65536", "-E", "ztailpacking,fragments"][..],
        ),
        ("-zzstd", &["-E", "all-fragments"][..]),
        ("-zzstd,3", &["-C", "16384", "-E", "fragments"][..]),
        ("-zlz4", &["-b", "1024", "-E", "fragments"][..]),
        ("-zdeflate", &["-E", "fragments,^fragdedupe"][..]),
        ("-zlz4", &["-E", "all-fragments,fragdedupe=inode"][..]),
        (
            "-zlz4hc",
            &["-b", "512", "-E", "fragments,legacy-compress"][..],
        ),
        ("-zlzma,0", &["-E", "all-fragments,ztailpacking"][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let img = tmp.path().join(format!("frag{k}.erofs"));
        mkfs(
            &src,
            &img,
            &args(z, "2", &[extra, &["--fingerprint=sha256"]].concat()),
        );
        let what = format!("{z} {extra:?}");
        fingerprints_match(&src, &img);
        // The fingerprints checked, the rest of the tree must be the source's.
        let mut got = snap_image(&img, FULL);
        for v in got.values_mut() {
            v.xattrs.remove(&b"trusted.erofs.fingerprint"[..]);
        }
        assert_same(&format!("reader, {what}"), &want, &got);
        let f = fragments_of(&img);
        assert!(!f.packed.is_empty(), "{what}: no packed inode");
        if extra.iter().any(|e| e.contains("all-fragments")) {
            assert_eq!(
                (f.whole, f.tails),
                (f.files, 0),
                "{what}: every file wholly"
            );
        } else {
            // mkfs.erofs's cut: a file of at most one pcluster is a whole fragment, a
            // larger one keeps its pclusters and leaves a tail.
            assert!(
                f.whole > 5 && f.tails > 2,
                "{what}: {} whole, {} tails",
                f.whole,
                f.tails
            );
            let one = &f.by_path[&b"/z/text-100"[..]];
            assert_eq!(one, &[(one[0].0, 100)], "{what}");
            let big = &f.by_path[&b"/z/text-6m"[..]];
            assert!(big.len() == 1 && big[0].1 < 1 << 20, "{what}: {big:?}");
        }
        if let Some(m) = Mount::new(&img) {
            let mut got = snap_dir(m.path(), FULL, &[]);
            for v in got.values_mut() {
                v.xattrs.remove(&b"trusted.erofs.fingerprint"[..]);
            }
            assert_same(&format!("kernel mount, {what}"), &want, &got);
            n_kernel += 1;
        }
    }
    eprintln!("{n_kernel} fragment images checked by the host kernel");
}

#[test]
fn fragment_builds_are_byte_identical_for_every_thread_count() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_fragment_tree(&src);
    for (z, e) in [
        ("-zlz4", "fragments"),
        ("-zlzma", "ztailpacking,fragments"),
        ("-zzstd", "all-fragments"),
        ("-zlz4hc", "fragments,^fragdedupe"),
    ] {
        let mut first: Option<Vec<u8>> = None;
        for j in ["1", "2", "8"] {
            let img = tmp.path().join(format!("r{z}-{e}-{j}.erofs"));
            mkfs(
                &src,
                &img,
                &args(z, j, &["--fingerprint=sha256", "-C", "65536", "-E", e]),
            );
            let bytes = std::fs::read(&img).unwrap();
            match &first {
                None => first = Some(bytes),
                Some(f) => assert!(f == &bytes, "{z} -E{e} -j{j} differs from -j1"),
            }
        }
    }
}

#[test]
fn fragdedupe_stores_identical_fragments_once_as_asked() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_fragment_tree(&src);
    let build = |name: &str, e: &str| {
        let img = tmp.path().join(name);
        mkfs(&src, &img, &args("-zlz4hc", "2", &["-E", e]));
        assert_same(
            &format!("reader, -E{e}"),
            &with_epoch(snap_dir(&src, FULL, &[])),
            &snap_image(&img, FULL),
        );
        fragments_of(&img)
    };
    let full = build("full.erofs", "fragments");
    let inode = build("inode.erofs", "fragments,fragdedupe=inode");
    let off = build("off.erofs", "fragments,^fragdedupe");
    let frag = |f: &Frags, p: &str| f.by_path[p.as_bytes()].clone();
    // The small duplicates are whole fragments, the large ones share a tail.
    let (s1, s2) = (frag(&full, "/z/small-1"), frag(&full, "/z/dup/small-2"));
    let (l1, l2) = (frag(&full, "/z/large-1"), frag(&full, "/z/dup/large-2"));
    assert_eq!(s1, [(s1[0].0, 3000)]);
    assert_eq!(l1.len(), 1);
    let tail = l1[0].1;
    assert!(tail > 0 && tail < 50_000);
    // full: both pairs point at one copy.
    assert_eq!((s1.clone(), l1.clone()), (s2, l2));
    // inode: only whole files are shared; off: nothing is.
    assert_eq!(
        frag(&inode, "/z/small-1")[0].0,
        frag(&inode, "/z/dup/small-2")[0].0
    );
    assert_ne!(
        frag(&inode, "/z/large-1")[0].0,
        frag(&inode, "/z/dup/large-2")[0].0
    );
    assert_ne!(
        frag(&off, "/z/small-1")[0].0,
        frag(&off, "/z/dup/small-2")[0].0
    );
    // In every mode the packed inode holds exactly the fragments stored, back to back
    // (with fragdedupe, a fragment may lie at the start or the end of another), and the
    // mode says which of them may be equal.
    for (mode, f) in [("full", &full), ("inode", &inode), ("off", &off)] {
        let stored: std::collections::BTreeSet<(u64, u64, bool)> =
            f.by_nid.values().copied().collect();
        // By start, the longest first.
        let ranges: std::collections::BTreeSet<(u64, u64)> =
            stored.iter().map(|&(o, l, _)| (o, o + l)).collect();
        let mut ranges: Vec<(u64, u64)> = ranges.into_iter().collect();
        ranges.sort_by_key(|&(s, e)| (s, std::cmp::Reverse(e)));
        let mut covered = 0;
        for &(start, end) in &ranges {
            if end <= covered {
                let outer = ranges
                    .iter()
                    .find(|&&(s, e)| (s, e) != (start, end) && s <= start && end <= e);
                let outer = outer.expect("a fragment inside none but overlapping another");
                assert!(mode != "off", "off: {start}..{end} shared");
                assert!(
                    outer.0 == start || outer.1 == end,
                    "{mode}: {start}..{end} in {outer:?}"
                );
                continue;
            }
            assert_eq!(start, covered, "{mode}: fragments back to back");
            covered = end;
        }
        assert_eq!(covered, f.packed.len() as u64, "{mode}: packed inode size");
        let bytes = |&(o, l, _): &(u64, u64, bool)| &f.packed[o as usize..(o + l) as usize];
        let mut seen = std::collections::BTreeMap::new();
        for x in &stored {
            let shareable = match mode {
                "full" => true,
                "inode" => x.2,
                _ => false,
            };
            if shareable && let Some(prev) = seen.insert(bytes(x).to_vec(), *x) {
                panic!("{mode}: {prev:?} and {x:?} hold the same bytes, stored twice");
            }
        }
        if mode != "full" {
            // A tail (and, without dedupe, any fragment) is one file's alone.
            let mut offsets = std::collections::BTreeSet::new();
            for &(o, l, whole) in f.by_nid.values() {
                if mode == "off" || !whole {
                    assert!(offsets.insert((o, l)), "{mode}: fragment at {o} shared");
                }
            }
        }
    }
    assert!(full.packed.len() < inode.packed.len() && inode.packed.len() < off.packed.len());
}

#[test]
fn a_file_that_ends_or_starts_an_earlier_fragment_is_read_from_inside_it() {
    // mkfs.erofs matches each file's tail against the ends of the fragments packed before
    // it: a file of zeros shorter than another, or a file that is the end of another,
    // costs nothing in the packed inode. So does one that is the start of another (which
    // mkfs.erofs does not look for).
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let a = text(60, 20_000);
    std::fs::write(src.join("a"), &a).unwrap();
    std::fs::write(src.join("b-end-of-a"), &a[5000..]).unwrap();
    std::fs::write(src.join("c-last-64-bytes"), &a[20_000 - 64..]).unwrap();
    std::fs::write(src.join("d-zeros"), vec![0u8; 30_000]).unwrap();
    std::fs::write(src.join("e-fewer-zeros"), vec![0u8; 10_000]).unwrap();
    std::fs::write(src.join("f-start-of-a"), &a[..12_000]).unwrap();
    let want = with_epoch(snap_dir(&src, FULL, &[]));
    for (e, shared) in [("fragments", true), ("fragments,^fragdedupe", false)] {
        let img = tmp.path().join(format!("{e}.erofs"));
        mkfs(&src, &img, &args("-zlz4hc", "2", &["-C", "65536", "-E", e]));
        assert_same(&format!("reader, -E{e}"), &want, &snap_image(&img, FULL));
        let f = fragments_of(&img);
        let at = |p: &str| f.by_path[p.as_bytes()][0];
        assert_eq!(f.whole, 6, "-E{e}: every file is a whole fragment");
        let short_apart = at("/c-last-64-bytes").0 >= at("/a").0 + 20_000;
        assert!(short_apart, "-E{e}: 64 bytes are matched whole only");
        if shared {
            assert_eq!(at("/b-end-of-a"), (at("/a").0 + 5000, 15_000));
            assert_eq!(at("/e-fewer-zeros"), (at("/d-zeros").0 + 20_000, 10_000));
            assert_eq!(at("/f-start-of-a"), (at("/a").0, 12_000));
            assert_eq!(f.packed.len(), 20_000 + 64 + 30_000, "-E{e}");
        } else {
            assert_eq!(
                f.packed.len(),
                20_000 + 15_000 + 64 + 40_000 + 12_000,
                "-E{e}"
            );
        }
        if let Some(m) = Mount::new(&img) {
            assert_same(
                &format!("kernel mount, -E{e}"),
                &want,
                &snap_dir(m.path(), FULL, &[]),
            );
        }
    }
}

#[test]
fn long_xattr_prefixes_go_into_the_packed_inode_where_linux_6_12_reads_them() {
    // Linux 6.12 does not know PLAIN_XATTR_PFX: with a packed inode it reads the prefix
    // records from the packed inode's data (at xattr_prefix_start * 4), as mkfs.erofs
    // writes them. Plain records beside a packed inode made 6.12 refuse the mount.
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_fragment_tree(&src);
    for (z, e) in [("-zlz4", "fragments"), ("-zzstd", "all-fragments")] {
        let img = tmp.path().join(format!("{e}.erofs"));
        mkfs(
            &src,
            &img,
            &args(z, "2", &["-E", e, "--fingerprint=sha256"]),
        );
        fingerprints_match(&src, &img);
        let im = Image::open(&img).unwrap();
        let sb = im.superblock();
        assert!(
            !sb.compat().contains(erofs_format::Compat::PLAIN_XATTR_PFX),
            "-E{e}: plain prefixes beside a packed inode"
        );
        assert_eq!((sb.xattr_prefix_count, sb.xattr_prefix_start.get()), (1, 0));
        let f = fragments_of(&img);
        // The record: le16 length, base index 4 (trusted.), the infix.
        let infix = b"erofs.fingerprint";
        assert_eq!(
            f.packed[..2],
            (1 + infix.len() as u16).to_le_bytes(),
            "-E{e}"
        );
        assert_eq!(f.packed[2], 4, "-E{e}");
        assert_eq!(&f.packed[3..3 + infix.len()], infix, "-E{e}");
        // Fragments follow the records (4-byte aligned).
        let first = f.by_nid.values().map(|&(o, _, _)| o).min().unwrap();
        assert_eq!(first, (3 + infix.len() as u64).next_multiple_of(4), "-E{e}");
    }
}

#[test]
fn fragments_need_compression() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let out = std::process::Command::new(mkfs_bin())
        .args(["-q", "-E", "fragments"])
        .arg(&src)
        .arg(tmp.path().join("x.erofs"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("-z"), "{err}");
}

#[test]
fn json_reports_the_fragment_options_and_counts_the_packed_inode_as_stored_bytes() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("text"), text(7, 200_000)).unwrap();
    std::fs::write(src.join("small"), text(8, 3000)).unwrap();
    std::fs::write(src.join("small-copy"), text(8, 3000)).unwrap();
    for (e, frags, dedupe, packed_only) in [
        ("all-fragments,fragdedupe=inode", "all", "inode", true),
        ("fragments,^fragdedupe", "tails", "off", false),
    ] {
        let img = tmp.path().join(format!("{frags}.erofs"));
        let o = std::process::Command::new(mkfs_bin())
            .args(["--json", "-zlz4hc", "-E", e])
            .args(["-T", EPOCH_ARG, "-U", "clear"])
            .arg(&src)
            .arg(&img)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
        let opts = &v["options"];
        assert_eq!(
            (&opts["fragments"], &opts["fragdedupe"]),
            (&frags.into(), &dedupe.into())
        );
        // The three files, not the packed inode, are the input.
        let c = &v["compression"];
        assert_eq!(c["files"], 3, "{e}");
        assert_eq!(c["input_bytes"], 206_000, "{e}");
        // The packed inode's blocks hold the fragments: with every file wholly in it, its
        // compressed size is all that is stored.
        let f = fragments_of(&img);
        let img_r = Image::open(&img).unwrap();
        let packed = img_r.inode(img_r.superblock().packed_nid.get()).unwrap();
        let packed_blocks = u64::from(packed.raw_u) * 4096;
        let stored = c["stored_bytes"].as_u64().unwrap();
        if packed_only {
            assert_eq!(stored, packed_blocks, "{e}");
            // fragdedupe=inode stores the identical whole file once.
            assert_eq!(f.packed.len(), 203_000, "{e}");
        } else {
            assert!(stored > packed_blocks && stored < 206_000, "{e}: {stored}");
            assert_eq!(f.by_nid.len(), 3, "{e}");
        }
    }
}

/// A packed inode that ends with a raw block holding less than the rest of that block,
/// interlaced: each byte at its in-block offset, without wrapping around (Linux takes the
/// first bytes from `blksz - offset` before the block's end, whatever the extent's length).
/// Our reader and the kernel must read it where mkfs.erofs and Linux put it. The text
/// length that gives such an end is searched for (deterministically: same bytes, same
/// cut), since it depends on where the compressor stops.
#[test]
fn a_packed_inode_ending_in_a_short_interlaced_raw_block_reads_back() {
    let tmp = tempdir();
    let mut found = 0;
    for k in 0..40 {
        let src = tmp.path().join(format!("src{k}"));
        std::fs::create_dir(&src).unwrap();
        // Repeated text compresses to little, so the pcluster's room goes to the random
        // bytes after it, and what it leaves of them is the raw end.
        let mut a = text(60, 1000).repeat(30);
        a.extend_from_slice(&text(62, 97 * k));
        std::fs::write(src.join("a-text"), a).unwrap();
        std::fs::write(src.join("z-random"), bytes(61, 4000)).unwrap();
        let img = tmp.path().join(format!("p{k}.erofs"));
        mkfs(&src, &img, &args("-zlz4", "2", &["-E", "all-fragments"]));
        let image = Image::open(&img).unwrap();
        let packed = image
            .inode(image.superblock().packed_nid.get())
            .expect("packed inode");
        if !packed.is_compressed() {
            // Compression gained nothing: the packed inode is stored flat.
            continue;
        }
        let ext = image.z_extents(&packed).expect("packed inode extents");
        let last = ext.last().expect("extents");
        let ofs = last.logical % 4096;
        if !(matches!(last.storage, ZStorage::Raw { interlaced: true })
            && ofs != 0
            && last.length < 4096 - ofs)
        {
            continue;
        }
        found += 1;
        let want = with_epoch(snap_dir(&src, FULL, &[]));
        assert_same("reader", &want, &snap_image(&img, FULL));
        if let Some(m) = Mount::new(&img) {
            assert_same("kernel mount", &want, &snap_dir(m.path(), FULL, &[]));
        }
        if found == 3 {
            break;
        }
    }
    assert!(found > 0, "no text length gave a short interlaced raw end");
}

#[test]
fn fragments_share_the_pclusters_of_identical_extents_as_mkfs_erofs_does() {
    // mkfs.erofs reuses a pcluster whose bytes an extent would store again whenever
    // fragments are on, without -E dedupe: copies of a file cost their metadata only.
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let mut mixed = text(60, 70_000);
    mixed.extend_from_slice(&bytes(61, 40_000));
    mixed.extend_from_slice(&text(62, 30_000));
    std::fs::write(src.join("a"), &mixed).unwrap();
    std::fs::write(src.join("b"), &mixed).unwrap();
    // The same bytes 100 bytes further into the file: its raw blocks, interlaced, hold
    // them at another rotation and must not be shared.
    let mut shifted = text(63, 100);
    shifted.extend_from_slice(&mixed);
    std::fs::write(src.join("c"), &shifted).unwrap();
    for (z, e) in [
        ("-zlz4hc", "fragments"),
        ("-zlz4", "fragments,ztailpacking"),
        ("-zlzma", "fragments"),
        ("-zdeflate", "fragments"),
    ] {
        let img = tmp.path().join(format!("{}-{e}.erofs", &z[2..]));
        mkfs(&src, &img, &args(z, "2", &["-C16384", "-E", e]));
        assert_same(
            &format!("reader, {z} -E{e}"),
            &with_epoch(snap_dir(&src, FULL, &[])),
            &snap_image(&img, FULL),
        );
        let x = extents(&img);
        let data = |p: &str| -> Vec<(u64, u64, u64, bool)> {
            x[p.as_bytes()]
                .1
                .iter()
                .filter(|e| !matches!(e.storage, ZStorage::Fragment { .. }) && !e.inline)
                .map(|e| (e.logical, e.length, e.physical, e.partial))
                .collect()
        };
        let (a, b) = (data("a"), data("b"));
        assert!(a.len() >= 4, "{z} -E{e}: /a has pclusters: {a:?}");
        let raw = |p: &str| -> std::collections::BTreeSet<u64> {
            x[p.as_bytes()]
                .1
                .iter()
                .filter(|e| matches!(e.storage, ZStorage::Raw { .. }) && !e.inline)
                .map(|e| e.physical)
                .collect()
        };
        assert!(!raw("a").is_empty(), "{z} -E{e}: /a has raw blocks");
        assert_eq!(a, b, "{z} -E{e}: the copy points at the same pclusters");
        assert!(
            a.iter().all(|e| !e.3),
            "{z} -E{e}: no PARTIAL_REF without -E dedupe"
        );
        // /c's raw blocks are its own (a shared one would read back rotated, which the
        // comparison above would catch as well).
        assert!(raw("a").is_disjoint(&raw("c")), "{z} -E{e}");
    }
}

#[test]
fn fragments_bytes_sets_the_packed_inodes_pcluster_size_as_mkfs_erofs_does() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_fragment_tree(&src);
    let want = with_epoch(snap_dir(&src, FULL, &[]));
    // The packed inode's pclusters: at most 16 KiB where -E fragments=16384 says so, up to
    // -C's 64 KiB otherwise; files keep -C's size.
    for (e, packed_max) in [
        ("all-fragments", 65536),
        ("all-fragments=16384", 16384),
        ("all-fragments=0x2000", 8192),
        ("fragments=16384", 16384),
    ] {
        let img = tmp.path().join(format!("{e}.erofs"));
        mkfs(&src, &img, &args("-zlz4hc", "2", &["-C65536", "-E", e]));
        let image = Image::open(&img).unwrap();
        let packed = image
            .inode(image.superblock().packed_nid.get())
            .expect("packed inode");
        let largest = image
            .z_extents(&packed)
            .expect("packed inode extents")
            .iter()
            .filter(|x| !x.inline)
            .map(|x| x.plen)
            .max()
            .unwrap_or(0);
        if packed_max == 65536 {
            assert!(
                largest > 16384,
                "-E{e}: the default is -C's size ({largest})"
            );
        } else {
            assert!(largest <= packed_max, "-E{e}: a {largest}-byte pcluster");
        }
        assert_same(e, &want, &snap_image(&img, FULL));
        if let Some(m) = Mount::new(&img) {
            assert_same("kernel mount", &want, &snap_dir(m.path(), FULL, &[]));
        }
    }
    // Not a block multiple, or above -C: refused before any work, naming the option.
    for (e, c) in [
        ("fragments=5000", "-C65536"),
        ("fragments=131072", "-C65536"),
    ] {
        let out = std::process::Command::new(mkfs_bin())
            .args(["-q", "-zlz4hc", c, "-E", e])
            .arg(&src)
            .arg(tmp.path().join("bad.erofs"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(&format!("-E {e}")),
            "{err}"
        );
    }
}
