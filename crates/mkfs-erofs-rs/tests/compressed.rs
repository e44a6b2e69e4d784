//! `-z`: compressed images read back by every available reader (ours, Debian's fsck.erofs
//! 1.5, the host kernel), byte-identical for every thread count, and refused options.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;

/// [`make_tree`] plus compressible files: around block and segment boundaries, runs of
/// zeroes, a file that turns incompressible halfway, and files of several segments.
fn make_compressible_tree(root: &Path, sparse: bool) {
    make_tree(
        root,
        Features {
            special: is_root(),
            sparse,
            big: true,
        },
    );
    let z = root.join("z");
    std::fs::create_dir(&z).unwrap();
    for (i, size) in [4097usize, 5000, 8191, 8192, 8193, 40_000, 150_000, 1 << 20]
        .into_iter()
        .enumerate()
    {
        std::fs::write(z.join(format!("text-{size}")), text(i as u64, size)).unwrap();
    }
    std::fs::write(z.join("zeros-3m"), vec![0u8; 3 << 20]).unwrap();
    let mut mixed = text(40, 300_000);
    mixed.extend_from_slice(&bytes(41, 300_000));
    mixed.extend_from_slice(&text(42, 12_345));
    std::fs::write(z.join("mixed"), &mixed).unwrap();
    std::fs::write(z.join("text-9m"), text(43, (9 << 20) + 777)).unwrap();
    let mut half = text(44, 4 << 20);
    half.extend_from_slice(&bytes(45, 1 << 20));
    std::fs::write(z.join("half-random-8m"), &half).unwrap();
}

const EPOCH_ARG: &str = "1700000000";

fn args<'a>(z: &'a str, j: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    assert_eq!(EPOCH_ARG, EPOCH.to_string());
    let mut a = vec!["-T", EPOCH_ARG, "-U", "clear", "-j", j];
    if !z.is_empty() {
        a.push(z);
    }
    a.extend_from_slice(extra);
    a
}

#[test]
fn lz4_lz4hc_and_deflate_images_round_trip_through_our_reader_and_the_kernel() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_compressible_tree(&src, true);
    let want = with_epoch(snap_dir(&src, FULL, &[]));
    let plain = tmp.path().join("plain.erofs");
    mkfs(&src, &plain, &args("", "2", &[]));
    let plain_len = std::fs::metadata(&plain).unwrap().len();
    for (k, (z, extra)) in [
        ("-zlz4", &["-b", "4096"][..]),
        ("-zlz4hc", &[][..]),
        ("-zlz4hc,12", &["-b", "1024"][..]),
        ("-zlz4", &["-b", "512"][..]),
        ("-zlz4", &["-C", "16384"][..]),
        ("-zlz4hc", &["-C", "1048576"][..]),
        ("-zdeflate", &[][..]),
        ("-zdeflate,9", &["-C", "65536"][..]),
        ("-zlz4hc", &["-C", "65536", "-E", "legacy-compress"][..]),
        ("-zlz4", &["-b", "1024", "-E", "legacy-compress"][..]),
        ("-zlz4", &["-E", "ztailpacking"][..]),
        ("-zlz4hc", &["-C", "65536", "-E", "ztailpacking"][..]),
        ("-zlz4hc,12", &["-b", "1024", "-E", "ztailpacking"][..]),
        ("-zdeflate", &["-C", "16384", "-E", "ztailpacking"][..]),
        (
            "-zlz4",
            &["-b", "512", "-E", "ztailpacking,legacy-compress"][..],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let img = tmp.path().join(format!("img{k}.erofs"));
        mkfs(&src, &img, &args(z, "2", extra));
        let what = format!("{z} {extra:?}");
        let len = std::fs::metadata(&img).unwrap().len();
        assert!(
            len < plain_len,
            "{what}: {len} bytes, uncompressed {plain_len}"
        );
        // mkfs.erofs's choice: compact indexes unless -E legacy-compress.
        let legacy = extra.iter().any(|e| e.contains("legacy-compress"));
        let ztail = extra.iter().any(|e| e.contains("ztailpacking"));
        let want_layout = if legacy {
            erofs_format::DataLayout::CompressedFull
        } else {
            erofs_format::DataLayout::CompressedCompact
        };
        let z = compressed_files(&img);
        assert!(
            !z.layouts.is_empty() && z.layouts.iter().all(|l| *l == want_layout),
            "{what}: {:?}",
            z.layouts
        );
        // With ztailpacking some tails are inline, and the superblock says so; without,
        // none is.
        assert_eq!(z.ztailpacking_bit, z.inline_tails > 0, "{what}");
        assert_eq!(
            ztail,
            z.inline_tails > 0,
            "{what}: {} inline tails",
            z.inline_tails
        );
        let got = snap_image(&img, FULL);
        assert_same(&format!("reader, {what}"), &want, &got);
        if let Some(m) = Mount::new(&img) {
            let got = snap_dir(m.path(), FULL, &[]);
            assert_same(&format!("kernel mount, {what}"), &want, &got);
        }
    }
}

#[test]
fn lzma_zstd_and_several_algorithms_round_trip_through_our_reader_and_the_kernel() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_compressible_tree(&src, true);
    let want = with_epoch(snap_dir(&src, FULL, &[]));
    // Hints: the 9 MiB file to the second algorithm in 64 KiB pclusters, the mixed file to
    // the third, the rest of z/ to the first in 16 KiB ones (mkfs.erofs 1.9.3 crashes on a
    // line that picks the second algorithm of -zlz4hc:lzma).
    let hints = tmp.path().join("hints.txt");
    std::fs::write(
        &hints,
        "# size [algorithm] regex\n65536 1 ^z/text-9m$\n4096 2 z/mixed\n16384 z/\n",
    )
    .unwrap();
    let hints_arg = format!("--compress-hints={}", hints.display());
    let mut n_kernel = 0;
    for (k, (z, extra)) in [
        ("-zlzma", &[][..]),
        ("-zlzma,0", &["-C", "65536", "-E", "ztailpacking"][..]),
        ("-zlzma,9", &["-b", "1024", "-E", "legacy-compress"][..]),
        ("-zzstd", &[][..]),
        ("-zzstd,12", &["-C", "65536", "-E", "ztailpacking"][..]),
        ("-zzstd,1", &["-b", "1024"][..]),
        (
            "-zlz4hc:lzma:zstd",
            &["-C", "32768", hints_arg.as_str()][..],
        ),
        (
            "-zlz4hc:lzma,109:zstd,15",
            &["-E", "ztailpacking", hints_arg.as_str()][..],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let img = tmp.path().join(format!("alg{k}.erofs"));
        mkfs(&src, &img, &args(z, "2", extra));
        let what = format!("{z} {extra:?}");
        let got = snap_image(&img, FULL);
        assert_same(&format!("reader, {what}"), &want, &got);
        let algs = file_algorithms(&img);
        let alg = |name: &str| algs.get(name.as_bytes()).cloned().unwrap_or_default();
        if z.contains(':') {
            use erofs_format::compress::Algorithm::{Lz4, Lzma, Zstd};
            assert_eq!(alg("/z/text-9m"), [Lzma], "{what}");
            assert_eq!(alg("/z/mixed"), [Zstd], "{what}");
            assert_eq!(alg("/z/text-40000"), [Lz4], "{what}");
            let img = erofs_reader::Image::open(&img).unwrap();
            let sb = img.superblock();
            assert_eq!(
                sb.available_compr_algs.get(),
                Lz4.bit() | Lzma.bit() | Zstd.bit(),
                "{what}"
            );
        } else {
            let want_alg = if z.starts_with("-zlzma") {
                erofs_format::compress::Algorithm::Lzma
            } else {
                erofs_format::compress::Algorithm::Zstd
            };
            let used: std::collections::BTreeSet<_> = algs.values().flatten().collect();
            assert_eq!(used.into_iter().collect::<Vec<_>>(), [&want_alg], "{what}");
        }
        if let Some(m) = Mount::new(&img) {
            let got = snap_dir(m.path(), FULL, &[]);
            assert_same(&format!("kernel mount, {what}"), &want, &got);
            n_kernel += 1;
        }
    }
    eprintln!("{n_kernel} images checked by the host kernel");
}

/// The algorithms of each compressed file's compressed extents, by path.
fn file_algorithms(image: &Path) -> BTreeMap<Vec<u8>, Vec<erofs_format::compress::Algorithm>> {
    use erofs_reader::ZStorage;
    let img = erofs_reader::Image::open(image).expect("open image");
    let mut out = BTreeMap::new();
    for e in img.walk().expect("walk") {
        let e = e.expect("walk entry");
        let ext = match img.z_extents(&e.inode) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let mut algs: Vec<_> = ext
            .iter()
            .filter_map(|x| match x.storage {
                ZStorage::Compressed { algorithm } => Some(algorithm),
                _ => None,
            })
            .collect();
        algs.dedup();
        if !algs.is_empty() {
            out.insert(e.path.clone(), algs);
        }
    }
    out
}

/// What an image's compressed files look like.
struct ZFiles {
    /// The data layout of each compressed regular file.
    layouts: Vec<erofs_format::DataLayout>,
    /// Extents whose pcluster is inline after the indexes.
    inline_tails: usize,
    /// Incompat `ZTAILPACKING`.
    ztailpacking_bit: bool,
}

fn compressed_files(image: &Path) -> ZFiles {
    use erofs_format::DataLayout::{CompressedCompact, CompressedFull};
    let img = erofs_reader::Image::open(image).expect("open image");
    let mut z = ZFiles {
        layouts: Vec::new(),
        inline_tails: 0,
        ztailpacking_bit: img
            .superblock()
            .incompat()
            .contains(erofs_format::Incompat::ZTAILPACKING),
    };
    for e in img.walk().expect("walk") {
        let ino = e.expect("walk entry").inode;
        if matches!(ino.layout, CompressedCompact | CompressedFull) {
            z.layouts.push(ino.layout);
            let ext = img.z_extents(&ino).expect("extents");
            z.inline_tails += ext.iter().filter(|x| x.inline).count();
        }
    }
    z
}

#[test]
fn compressed_builds_are_byte_identical_for_every_thread_count() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_compressible_tree(&src, true);
    for (z, c, e) in [
        ("-zlz4", "4096", "inline_data"),
        ("-zlz4hc", "65536", "inline_data"),
        ("-zdeflate", "16384", "inline_data"),
        ("-zlz4", "4096", "ztailpacking"),
        ("-zlz4hc", "65536", "ztailpacking"),
        ("-zlzma", "65536", "ztailpacking"),
        ("-zlzma,105", "4096", "inline_data"),
        ("-zzstd", "16384", "inline_data"),
        ("-zzstd,9", "4096", "ztailpacking"),
    ] {
        let mut first: Option<Vec<u8>> = None;
        for j in ["1", "2", "8"] {
            let img = tmp.path().join(format!("r{z}-{c}-{e}-{j}.erofs"));
            mkfs(
                &src,
                &img,
                &args(z, j, &["--fingerprint=sha256", "-C", c, "-E", e]),
            );
            let bytes = std::fs::read(&img).unwrap();
            match &first {
                None => first = Some(bytes),
                Some(f) => assert!(f == &bytes, "{z} -C{c} -E{e} -j{j} differs from -j1"),
            }
        }
    }
    // Several algorithms chosen per file by hints.
    let hints = tmp.path().join("hints.txt");
    std::fs::write(&hints, "65536 1 text-9m\n16384 2 half-random\n").unwrap();
    let hints_arg = format!("--compress-hints={}", hints.display());
    let mut first: Option<Vec<u8>> = None;
    for j in ["1", "2", "8"] {
        let img = tmp.path().join(format!("hints-{j}.erofs"));
        mkfs(
            &src,
            &img,
            &args("-zlz4:lzma:zstd", j, &["--fingerprint=sha256", &hints_arg]),
        );
        let bytes = std::fs::read(&img).unwrap();
        match &first {
            None => first = Some(bytes),
            Some(f) => assert!(
                f == &bytes,
                "-zlz4:lzma:zstd with hints -j{j} differs from -j1"
            ),
        }
    }
}

#[test]
fn fingerprints_of_compressed_files_are_sha256_of_the_decoded_content() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_compressible_tree(&src, false);
    for z in ["-zlz4hc", "-zlzma", "-zzstd"] {
        let img = tmp.path().join(format!("fp{z}.erofs"));
        mkfs(&src, &img, &args(z, "2", &["--fingerprint=sha256"]));
        fingerprints_match(&src, &img);
    }
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
    assert!(checked > 30, "{checked} files checked");
}

use std::os::unix::ffi::OsStrExt;

#[test]
fn debian_fsck_erofs_1_5_extracts_lz4_and_lz4hc_images() {
    if !have("fsck.erofs") {
        skip_or_fail("fsck.erofs is not installed");
        return;
    }
    let tmp = tempdir();
    let src = tmp.path().join("src");
    // 1.5 extracts holes wrongly (it drops them), so no sparse file here.
    make_compressible_tree(&src, false);
    let cmp = Compare {
        owners: is_root(),
        xattrs: false,
        mtime: false,
        nlink: false,
    };
    let mask = |mut s: BTreeMap<Vec<u8>, Snap>| {
        s.values_mut().for_each(|v| v.perm &= 0o777);
        s.remove(&b"socket"[..]);
        s
    };
    let want = mask(snap_dir(&src, cmp, &[]));
    for (k, (z, extra)) in [
        ("-zlz4", &[][..]),
        ("-zlz4hc", &[][..]),
        ("-zlz4hc", &["-C", "65536"][..]),
        ("-zlz4", &["-E", "ztailpacking"][..]),
        ("-zlz4hc", &["-C", "65536", "-E", "ztailpacking"][..]),
        (
            "-zlz4hc,12",
            &["-C", "16384", "-E", "ztailpacking,legacy-compress"][..],
        ),
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
        let got = mask(snap_dir(&dest, cmp, &[]));
        assert_same(
            &format!("fsck.erofs 1.5 --extract {z} {extra:?}"),
            &want,
            &got,
        );
    }
}

#[test]
fn bad_compression_options_fail_before_any_work() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let img = tmp.path().join("never.erofs");
    let hint = |name: &str, text: &str| {
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        format!("--compress-hints={}", p.display())
    };
    let hint_bad_index = hint("i.txt", "4096 2 big/\n");
    let hint_bad_size = hint("s.txt", "6000 big/\n");
    let hint_bad_regex = hint("r.txt", "# ok\n4096 0 a(\n");
    for (opts, says) in [
        (&["-zlz5"][..], "unknown algorithm"),
        (&["-zlz4hc,13"], "level \"13\" is not in 0..=12"),
        (&["-zlz4,3"], "lz4 takes no level"),
        (&["-zdeflate,10"], "level \"10\" is not in 0..=9"),
        (&["-zlz4", "-C", "5000"], "multiple of the block size"),
        (&["-zlz4", "-C", "2097152"], "at most 1048576"),
        (
            &["-zlzma,10"],
            "level \"10\" is not in 0..=9 or 100..=109 (extreme)",
        ),
        (&["-zlzma,110"], "is not in 0..=9 or 100..=109"),
        (&["-zzstd,23"], "level \"23\" is not in 0..=22"),
        (
            &["-zlzma,dictsize=16777216"],
            "dictsize \"16777216\" is not in 4096..=8388608",
        ),
        (&["-zzstd,dictsize=512"], "is not in 1024..=1048576"),
        (&["-zlz4:xz"], "unknown algorithm \"xz\""),
        (
            &["-zlz4hc:lzma", hint_bad_index.as_str()],
            "algorithm index 2 but -z names 2",
        ),
        (
            &["-zlz4hc", hint_bad_size.as_str()],
            "multiple of the block size",
        ),
        (
            &["-zlz4hc", hint_bad_regex.as_str()],
            "line 2: invalid regex",
        ),
        (
            &["-zlz4hc", "--compress-hints=/nonexistent/h.txt"],
            "--compress-hints /nonexistent/h.txt",
        ),
    ] {
        let out = Command::new(mkfs_bin())
            .args(opts)
            .arg(&src)
            .arg(&img)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{opts:?} succeeded");
        assert!(err.contains(says), "{opts:?}: {err}");
        assert!(!img.exists(), "{opts:?} left an image");
    }
}

/// Damage in the map header, the compact packs or the inline tail of a file this mkfs
/// wrote is reported as a corruption of that file's inode (or the content simply differs),
/// never a panic: every byte of the items of a few files, each set to three values.
#[test]
fn damaged_compact_indexes_and_inline_tails_give_located_errors() {
    use erofs_reader::{Error, Image, OpenOptions};
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), text(1, 150_000)).unwrap();
    std::fs::write(src.join("b"), text(2, 40_000)).unwrap();
    let mut c = text(3, 20_000);
    c.extend_from_slice(&bytes(4, 9_000));
    std::fs::write(src.join("c"), &c).unwrap();
    for (k, extra) in [
        &["-E", "ztailpacking"][..],
        &["-C", "16384", "-E", "ztailpacking"][..],
    ]
    .into_iter()
    .enumerate()
    {
        let img_path = tmp.path().join(format!("d{k}.erofs"));
        mkfs(&src, &img_path, &args("-zlz4hc", "1", extra));
        let bytes = std::fs::read(&img_path).unwrap();
        let img = Image::open(&img_path).unwrap();
        let mut damaged = 0;
        for name in ["a", "b", "c"] {
            let f = img.lookup(format!("/{name}").as_bytes()).unwrap();
            assert_eq!(f.layout, erofs_format::DataLayout::CompressedCompact);
            let want = std::fs::read(src.join(name)).unwrap();
            let ext = img.z_extents(&f).unwrap();
            let end = ext
                .iter()
                .filter(|e| e.inline)
                .map(|e| e.physical + e.plen)
                .max()
                .unwrap_or_else(|| img.compression_index_range(&f).unwrap().end);
            let header = f.meta_end().div_ceil(8) * 8;
            for at in header as usize..end as usize {
                for v in [0x00, 0xFF, bytes[at] ^ 0x55] {
                    if v == bytes[at] {
                        continue;
                    }
                    let mut b = bytes.clone();
                    b[at] = v;
                    let img = Image::from_source(b, OpenOptions::default().verify_checksum(false))
                        .unwrap();
                    let r = img.inode(f.nid).and_then(|i| img.read_to_vec(&i, 1 << 24));
                    match r {
                        Ok(data) if data == want => {}
                        Ok(_) => damaged += 1,
                        Err(e @ (Error::Corrupt { .. } | Error::Compressed { .. })) => {
                            assert_eq!(e.nid(), Some(f.nid), "{name} byte {at} = {v:#x}: {e}");
                            damaged += 1;
                        }
                        Err(e) => panic!("{name} byte {at} = {v:#x}: unlocated {e:?}"),
                    }
                }
            }
        }
        assert!(damaged > 100, "{extra:?}: only {damaged} damages noticed");
    }
}

/// `-E 48bit`: the superblock's epoch moves back so that compact inodes keep any whole-
/// second mtime of the last 2³² − 1 seconds; compressed and uncompressed images read back
/// with every time through our reader and the host kernel (Linux 6.15+ reads them), and
/// mkfs says before it starts that Linux 6.12 does not.
#[test]
fn the_48bit_layout_keeps_mtimes_in_compact_inodes_and_reads_back() {
    use erofs_reader::Image;
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_compressible_tree(&src, true);
    // Whole seconds far apart, and one file with nanoseconds (extended inode only).
    let mut names: Vec<_> = std::fs::read_dir(src.join("z"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for (k, p) in names.iter().enumerate() {
        let t = std::time::UNIX_EPOCH
            + std::time::Duration::new(1_000_000_000 + k as u64 * 77_777_777, 0);
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(t).unwrap();
    }
    let nsec = &names[0];
    std::fs::File::options()
        .write(true)
        .open(nsec)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::new(1_234_567_890, 5))
        .unwrap();
    let want = snap_dir(&src, FULL, &[]);
    for (k, extra) in [
        &["-E", "48bit"][..],
        &["-zlz4hc", "-E", "48bit,ztailpacking"][..],
        &["-zlz4", "-C", "16384", "-E", "48bit"][..],
        &["-zlz4"][..],
    ]
    .into_iter()
    .enumerate()
    {
        let bit48 = extra.iter().any(|e| e.contains("48bit"));
        let img_path = tmp.path().join(format!("t{k}.erofs"));
        let mut a = vec!["-U", "clear", "-j", "2"];
        a.extend_from_slice(extra);
        let out = Command::new(mkfs_bin())
            .args(&a)
            .arg(&src)
            .arg(&img_path)
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .unwrap();
        assert!(out.status.success(), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            bit48,
            err.contains("Linux 6.15 or later mounts the image; Linux 6.12 refuses it"),
            "{extra:?}: {err}"
        );
        let img = Image::open(&img_path).unwrap();
        let sb = img.superblock();
        assert_eq!(sb.incompat().contains(erofs_format::Incompat::BIT48), bit48);
        if bit48 {
            // Built now, before 2106: the epoch is 0 and build_time the build's time.
            assert_eq!(sb.epoch.get(), 0, "{extra:?}");
            assert!(sb.build_time.get() > 1_700_000_000, "{extra:?}");
        }
        let got = snap_image(&img_path, FULL);
        assert_same(&format!("reader, {extra:?}"), &want, &got);
        if bit48 && let Some(m) = Mount::new(&img_path) {
            let got = snap_dir(m.path(), FULL, &[]);
            assert_same(&format!("kernel mount, {extra:?}"), &want, &got);
        }
        // The z/ files have whole-second mtimes: compact inodes with 48-bit, extended ones
        // without; the one with nanoseconds is extended either way.
        for p in &names {
            let rel = p.strip_prefix(&src).unwrap();
            let f = img.lookup(path_bytes(&Path::new("/").join(rel))).unwrap();
            let compact_ok = bit48 && p != nsec;
            assert_eq!(f.extended, !compact_ok, "{extra:?} {}", rel.display());
        }
    }
}

/// `--json` with `-z` says what was compressed: a text file shrinks, random bytes gain
/// nothing and are stored raw, and the ratio is stored over input bytes of both.
#[test]
fn json_reports_the_compression_ratio_of_the_files_it_compressed() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("text"), text(7, 200_000)).unwrap();
    std::fs::write(src.join("random"), bytes(8, 100_000)).unwrap();
    std::fs::write(src.join("small"), [b'a'; 3000]).unwrap();
    let img = tmp.path().join("z.erofs");
    let o = Command::new(mkfs_bin())
        .args([
            "--json",
            "-zlz4hc,9",
            "-C16384",
            "-Eztailpacking,legacy-compress",
        ])
        .args(args("", "2", &[]))
        .arg(&src)
        .arg(&img)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let c = &v["compression"];
    // With -E ztailpacking even the small file is tried.
    assert_eq!(c["files"], 3);
    assert_eq!(c["input_bytes"], 200_000 + 100_000 + 3000);
    assert_eq!(c["compressed_files"], 2, "the random file is stored raw");
    let stored = c["stored_bytes"].as_u64().unwrap();
    assert!(stored > 100_000 && stored < 303_000, "stored {stored}");
    let ratio = v["compression_ratio"].as_f64().unwrap();
    assert!((ratio - stored as f64 / 303_000.0).abs() < 1e-9);
    assert!(stored < std::fs::metadata(&img).unwrap().len());
    let opts = &v["options"];
    assert_eq!(opts["compress"], "lz4hc,9");
    assert_eq!(opts["pcluster_bytes"], 16384);
    assert_eq!(opts["ztailpacking"], true);
    assert_eq!(opts["legacy_compress"], true);
    assert_eq!(opts["bit48"], false);
}
