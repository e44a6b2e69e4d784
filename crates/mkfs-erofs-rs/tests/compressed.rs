//! `-z`: compressed images read back by every available reader (ours, Debian's fsck.erofs
//! 1.5, the host kernel), byte-identical for every thread count, and refused options.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;

const FULL: Compare = Compare {
    owners: true,
    xattrs: true,
    mtime: true,
    nlink: true,
};

/// Text-like bytes (words over a small alphabet), which compress to about half.
fn text(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = erofs_testkit::Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let r = rng.next_u64();
        for k in 0..(2 + r % 7) {
            out.push(b'a' + ((r >> (8 + 4 * k)) % 10) as u8);
        }
        out.push(if r.is_multiple_of(13) { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

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
    for (z, bs, c) in [
        ("-zlz4", "4096", None),
        ("-zlz4hc", "4096", None),
        ("-zlz4hc,12", "1024", None),
        ("-zlz4", "512", None),
        ("-zlz4", "4096", Some("16384")),
        ("-zlz4hc", "4096", Some("1048576")),
        ("-zdeflate", "4096", None),
        ("-zdeflate,9", "4096", Some("65536")),
        ("-zlz4hc", "4096", Some("65536,legacy")),
        ("-zlz4", "1024", Some("legacy")),
    ] {
        let img = tmp.path().join(format!("img{z}-{bs}-{c:?}.erofs"));
        let mut extra = vec!["-b", bs];
        let (c, legacy) = match c.and_then(|c| c.strip_suffix("legacy")) {
            Some(rest) => (
                Some(rest.trim_end_matches(',')).filter(|c| !c.is_empty()),
                true,
            ),
            None => (c, false),
        };
        if let Some(c) = c {
            extra.extend(["-C", c]);
        }
        if legacy {
            extra.extend(["-E", "legacy-compress"]);
        }
        mkfs(&src, &img, &args(z, "2", &extra));
        // mkfs.erofs's choice: compact indexes unless -E legacy-compress.
        let want_layout = if legacy {
            erofs_format::DataLayout::CompressedFull
        } else {
            erofs_format::DataLayout::CompressedCompact
        };
        let layouts = compressed_layouts(&img);
        assert!(
            !layouts.is_empty() && layouts.iter().all(|l| *l == want_layout),
            "{z} -b {bs} -C {c:?} legacy {legacy}: {layouts:?}"
        );
        let bs = format!("{bs} -C {c:?} legacy {legacy}");
        let len = std::fs::metadata(&img).unwrap().len();
        assert!(
            len < plain_len,
            "{z} -b {bs}: {len} bytes, uncompressed {plain_len}"
        );
        let got = snap_image(&img, FULL);
        assert_same(&format!("reader, {z} -b {bs}"), &want, &got);
        if let Some(m) = Mount::new(&img) {
            let got = snap_dir(m.path(), FULL, &[]);
            assert_same(&format!("kernel mount, {z} -b {bs}"), &want, &got);
        }
    }
}

/// The data layouts of the image's compressed regular files.
fn compressed_layouts(image: &Path) -> Vec<erofs_format::DataLayout> {
    use erofs_format::DataLayout::{CompressedCompact, CompressedFull};
    let img = erofs_reader::image::Image::open(image).expect("open image");
    img.walk()
        .expect("walk")
        .map(|e| e.expect("walk entry").inode.layout)
        .filter(|l| matches!(l, CompressedCompact | CompressedFull))
        .collect()
}

#[test]
fn compressed_builds_are_byte_identical_for_every_thread_count() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_compressible_tree(&src, true);
    for (z, c) in [
        ("-zlz4", "4096"),
        ("-zlz4hc", "65536"),
        ("-zdeflate", "16384"),
    ] {
        let mut first: Option<Vec<u8>> = None;
        for j in ["1", "2", "8"] {
            let img = tmp.path().join(format!("r{z}-{j}.erofs"));
            mkfs(&src, &img, &args(z, j, &["--fingerprint=sha256", "-C", c]));
            let bytes = std::fs::read(&img).unwrap();
            match &first {
                None => first = Some(bytes),
                Some(f) => assert!(f == &bytes, "{z} -j{j} differs from -j1"),
            }
        }
    }
}

#[test]
fn fingerprints_of_compressed_files_are_sha256_of_the_decoded_content() {
    use sha2::{Digest, Sha256};
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_compressible_tree(&src, false);
    let img = tmp.path().join("fp.erofs");
    mkfs(&src, &img, &args("-zlz4hc", "2", &["--fingerprint=sha256"]));
    let got = snap_image(&img, FULL);
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
    for (z, extra) in [
        ("-zlz4", &[][..]),
        ("-zlz4hc", &[][..]),
        ("-zlz4hc", &["-C", "65536"][..]),
    ] {
        let img = tmp.path().join(format!("img{z}{}.erofs", extra.len()));
        mkfs(&src, &img, &args(z, "2", extra));
        run_ok(Command::new("fsck.erofs").arg(&img), "fsck.erofs");
        let dest = tmp.path().join(format!("extracted{z}{}", extra.len()));
        run_ok(
            Command::new("fsck.erofs")
                .arg(format!("--extract={}", dest.display()))
                .arg(&img),
            "fsck.erofs --extract",
        );
        let got = mask(snap_dir(&dest, cmp, &[]));
        assert_same(&format!("fsck.erofs 1.5 --extract {z}"), &want, &got);
    }
}

#[test]
fn bad_compression_options_fail_before_any_work() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let img = tmp.path().join("never.erofs");
    for (opts, says) in [
        (&["-zlz5"][..], "unknown algorithm"),
        (&["-zlz4hc,13"], "level \"13\" is not in 0..=12"),
        (&["-zlz4,3"], "lz4 takes no level"),
        (&["-zdeflate,10"], "level \"10\" is not in 0..=9"),
        (&["-zlz4", "-C", "5000"], "multiple of the block size"),
        (&["-zlz4", "-C", "2097152"], "at most 1048576"),
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
