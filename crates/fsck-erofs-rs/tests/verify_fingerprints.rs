//! `fsck.erofs-rs --verify-fingerprints`: every stored fingerprint must equal `sha256:` plus
//! the SHA-256 of the file's content (erofs-format.md §15, page-cache-share.md §8).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use erofs_reader::Image;
use erofs_testkit::{build_image as build, fingerprint_of};

fn fsck(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsck-erofs-rs"))
        .args(args)
        .output()
        .expect("run fsck.erofs-rs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A tree with duplicates, an empty file, a multi-block file and a tail-packed file.
fn tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("a/b")).unwrap();
    std::fs::write(dir.join("a/one"), b"one\n").unwrap();
    std::fs::write(dir.join("a/b/one-again"), b"one\n").unwrap();
    std::fs::write(dir.join("empty"), b"").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.join("big"), &big).unwrap();
    std::fs::write(dir.join("tail"), vec![b'x'; 5000]).unwrap();
}

fn fixture(fingerprints: bool) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    tree(&dir.path().join("src"));
    let image = dir.path().join("image.erofs");
    build(&dir.path().join("src"), &image, fingerprints);
    (dir, image)
}

/// Replaces the only occurrence of `from` in the image with `to` (same length).
fn patch_unique(image: &Path, from: &[u8], to: &[u8]) {
    let mut bytes = std::fs::read(image).unwrap();
    let hits: Vec<usize> = bytes
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "the patched bytes must occur exactly once");
    bytes[hits[0]..hits[0] + to.len()].copy_from_slice(to);
    std::fs::write(image, bytes).unwrap();
}

#[test]
fn an_untouched_image_verifies_and_exits_zero() {
    let (_d, image) = fixture(true);
    let o = fsck(&["--verify-fingerprints", image.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("4 of 4 fingerprints match"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_flipped_data_byte_is_reported_with_nid_and_path() {
    let (_d, image) = fixture(true);
    let img = Image::open(&image).unwrap();
    let big = img.lookup(b"/big").unwrap();
    let extent = img
        .data_extents(&big)
        .unwrap()
        .into_iter()
        .find_map(|e| e.physical)
        .expect("big has data blocks");
    drop(img);
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[(extent + 1234) as usize] ^= 0xFF;
    std::fs::write(&image, bytes).unwrap();

    let o = fsck(&["--verify-fingerprints", image.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains(&format!("nid {} /big", big.nid)) && t.contains("MISMATCH"),
        "{t}"
    );
    // The verdict, the last line, matches the exit status.
    let stdout = String::from_utf8_lossy(&o.stdout);
    let verdict = stdout.trim_end().lines().last().unwrap();
    assert!(
        verdict.ends_with(": 1 fingerprint error(s)") && !verdict.contains("clean"),
        "{verdict}"
    );
    assert!(
        !t.contains("/tail (") && !t.contains("/a/one ("),
        "only the damaged file is named: {t}"
    );
}

#[test]
fn a_wrong_fingerprint_value_is_a_mismatch() {
    let (_d, image) = fixture(true);
    let mut forged = fingerprint_of(&[b'x'; 5000]);
    forged[38] ^= 1;
    patch_unique(&image, &fingerprint_of(&[b'x'; 5000]), &forged);
    let o = fsck(&["--xattr-inode-digest", "--json", image.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let issues = v["fingerprints"]["issues"].as_array().unwrap();
    assert_eq!(issues.len(), 1, "{v:#}");
    assert_eq!(issues[0]["paths"][0], "/tail");
    assert_eq!(issues[0]["issue"]["kind"], "mismatch");
    assert_eq!(v["clean"], false);
}

#[test]
fn a_value_that_is_not_sha256_plus_32_bytes_is_unidentified() {
    let (_d, image) = fixture(true);
    let mut other = fingerprint_of(b"one\n");
    other[..7].copy_from_slice(b"sha512:");
    // "one\n" is stored twice (two files): patch both occurrences.
    let mut bytes = std::fs::read(&image).unwrap();
    let from = fingerprint_of(b"one\n");
    let mut n = 0;
    while let Some(i) = bytes.windows(from.len()).position(|w| w == from.as_slice()) {
        bytes[i..i + other.len()].copy_from_slice(&other);
        n += 1;
    }
    assert_eq!(n, 2);
    std::fs::write(&image, bytes).unwrap();
    let o = fsck(&["--verify-fingerprints", image.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(
        text(&o).matches("unidentified fingerprint").count(),
        2,
        "{}",
        text(&o)
    );
}

#[test]
fn an_image_without_fingerprints_says_so_and_fails() {
    let (_d, image) = fixture(false);
    let o = fsck(&["--verify-fingerprints", image.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        text(&o).contains("has no fingerprint xattrs"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_prefix_id_outside_the_prefix_table_is_a_superblock_problem() {
    let (_d, image) = fixture(true);
    let mut bytes = std::fs::read(&image).unwrap();
    // ishare_xattr_prefix_id is byte 105 of the superblock, i.e. image byte 1129.
    assert_eq!(bytes[1024 + 91], 1, "one long prefix");
    bytes[1024 + 105] = 1;
    std::fs::write(&image, bytes).unwrap();
    let o = fsck(&[
        "--verify-fingerprints",
        "--no-sbcrc",
        image.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert!(
        text(&o).contains("ishare_xattr_prefix_id 1 is not below xattr_prefix_count 1"),
        "{}",
        text(&o)
    );
}

#[test]
fn json_report_is_stable() {
    let (_d, image) = fixture(true);
    let o = fsck(&["--verify-fingerprints", "--json", image.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    insta::assert_json_snapshot!("verify_fingerprints_clean", v["fingerprints"]);
}

fn fsck_on_threads(threads: usize, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsck-erofs-rs"))
        .args(args)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .expect("run fsck.erofs-rs")
}

/// The directories are walked and the files hashed in parallel, and the check runs
/// alongside: none of that may show in the output, problems included.
#[test]
fn reports_are_identical_with_one_and_many_threads() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for d in 0..12u32 {
        let sub = src.join(format!("d{d:02}/inner{}", d % 3));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..(3 + d % 4) {
            let body: Vec<u8> = (0..(d * 7919 + f * 104_729) % 70_000)
                .map(|i| (i * (d + 3) + f) as u8)
                .collect();
            std::fs::write(sub.join(format!("f{f}")), &body).unwrap();
            std::fs::write(src.join(format!("d{d:02}/top{f}")), &body[..body.len() / 2]).unwrap();
        }
    }
    std::fs::hard_link(src.join("d01/inner1/f0"), src.join("d07/link-to-f0")).unwrap();
    std::fs::write(src.join("d03/empty"), b"").unwrap();
    let image = dir.path().join("image.erofs");
    build(&src, &image, true);
    // Two damaged files, so that the report has issues to order.
    let img = Image::open(&image).unwrap();
    let mut bytes = std::fs::read(&image).unwrap();
    for path in [&b"/d05/inner2/f1"[..], b"/d10/inner1/f2"] {
        let inode = img.lookup(path).unwrap();
        let at = img
            .data_extents(&inode)
            .unwrap()
            .into_iter()
            .find_map(|e| e.physical)
            .expect("data blocks");
        bytes[at as usize + 17] ^= 0x40;
    }
    drop(img);
    std::fs::write(&image, bytes).unwrap();
    let image = image.to_str().unwrap();

    let json = |threads| {
        let o = fsck_on_threads(threads, &["--verify-fingerprints", "--json", image]);
        assert_eq!(o.status.code(), Some(4), "{}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let one = json(1);
    let v: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert_eq!(
        v["fingerprints"]["issues"].as_array().unwrap().len(),
        2,
        "{v:#}"
    );
    assert!(
        v["fingerprints"]["verified"].as_u64().unwrap() > 60,
        "{v:#}"
    );
    // The text report names its hashing time and rate; everything else must match.
    let human = |threads| {
        let o = fsck_on_threads(threads, &["--verify-fingerprints", image]);
        let t = text(&o);
        let timing = t.find(" MiB hashed in ").expect("summary line");
        let rest = t[timing..].find(");").expect("end of the timing") + timing;
        format!("{}{}", &t[..timing], &t[rest..])
    };
    let one_text = human(1);
    for threads in [2, 3, 8] {
        assert_eq!(json(threads), one, "{threads} threads");
        assert_eq!(human(threads), one_text, "{threads} threads");
    }
}
