//! `--verity` and `--fsverity-digest`: the tree and digests that dm-verity's and fs-verity's
//! own tools accept, reproducible, and clear errors.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// A scratch directory holding the source tree at `src`.
fn source() -> (tempfile::TempDir, PathBuf) {
    let dir = tempdir();
    let root = dir.path().join("src");
    erofs_testkit::write_file(&root, "a/big.bin", &bytes(1, 3 * 1024 * 1024 + 77));
    erofs_testkit::write_file(&root, "a/small.txt", b"hello verity\n");
    erofs_testkit::write_file(&root, "b/c/mid.bin", &bytes(2, 70_000));
    (dir, root)
}

/// True (after saying so) when veritysetup is missing and the test cannot run.
fn without_veritysetup() -> bool {
    !have("veritysetup") && skip_or_fail("veritysetup (Debian cryptsetup-bin) is missing")
}

fn mkfs_out(source: &Path, image: &Path, args: &[&str]) -> Output {
    Command::new(mkfs_bin())
        .args(args)
        .arg("-q")
        .arg(source)
        .arg(image)
        .output()
        .expect("run mkfs")
}

/// The `name: value` lines mkfs prints on standard output.
fn values(out: &Output) -> BTreeMap<String, String> {
    assert!(
        out.status.success(),
        "mkfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn veritysetup_verify(data: &Path, hash: &Path, v: &BTreeMap<String, String>) -> bool {
    Command::new("veritysetup")
        .arg("verify")
        .arg(data)
        .arg(hash)
        .arg(&v["verity-root-hash"])
        .arg(format!("--hash-offset={}", v["verity-hash-offset"]))
        .status()
        .expect("run veritysetup")
        .success()
}

fn flip(path: &Path, at: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[at as usize] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

#[test]
fn an_appended_tree_is_accepted_by_veritysetup_and_a_flipped_byte_is_not() {
    if without_veritysetup() {
        return;
    }
    let (dir, src) = source();
    let img = dir.path().join("v.erofs");
    let v = values(&mkfs_out(&src, &img, &["--verity"]));
    let len = std::fs::metadata(&img).unwrap().len();
    let offset: u64 = v["verity-hash-offset"].parse().unwrap();
    let blocks: u64 = v["verity-data-blocks"].parse().unwrap();
    assert_eq!(offset % 4096, 0, "the tree starts on a data block boundary");
    assert_eq!(offset, blocks * 4096);
    assert!(len > offset, "the tree follows the filesystem");
    assert_eq!(v["verity-hash-algorithm"], "sha256");
    assert_eq!(v["verity-salt"].len(), 64, "32 random bytes by default");
    assert!(veritysetup_verify(&img, &img, &v));
    // Our reader and the kernel read the filesystem as if nothing followed it.
    let cmp = Compare {
        owners: true,
        xattrs: true,
        mtime: true,
        nlink: true,
    };
    let want = snap_dir(&src, cmp, &[]);
    assert_same(
        "our reader, image with a tree",
        &want,
        &snap_image(&img, cmp),
    );
    if let Some(m) = Mount::new(&img) {
        assert_same(
            "host mount, image with a tree",
            &want,
            &snap_dir(m.path(), cmp, &[]),
        );
    }
    flip(&img, 4096 + 100);
    assert!(!veritysetup_verify(&img, &img, &v), "a flipped byte passed");
}

#[test]
fn a_tree_file_holds_the_tree_apart_from_the_image() {
    if without_veritysetup() {
        return;
    }
    let (dir, src) = source();
    let img = dir.path().join("v.erofs");
    let tree_file = dir.path().join("v.verity");
    let args = ["-T0", "-U", "01234567-89ab-cdef-0123-456789abcdef"];
    let plain = dir.path().join("plain.erofs");
    mkfs(&src, &plain, &args);
    let mut with = args.to_vec();
    let tf = format!("--verity-file={}", tree_file.display());
    with.extend(["--verity", &tf]);
    let v = values(&mkfs_out(&src, &img, &with));
    assert_eq!(v["verity-hash-offset"], "0");
    assert_eq!(
        std::fs::read(&img).unwrap(),
        std::fs::read(&plain).unwrap(),
        "a 4096-byte-block image is left as it is"
    );
    assert!(veritysetup_verify(&img, &tree_file, &v));
}

#[test]
fn reproducible_builds_give_the_same_root_hash_and_salt() {
    let (dir, src) = source();
    let run = |name: &str, uuid: &str, jobs: &str| {
        let img = dir.path().join(name);
        let args = [
            "--verity",
            "--fsverity-digest",
            "-T",
            "1700000000",
            "-U",
            uuid,
            jobs,
        ];
        let v = values(&mkfs_out(&src, &img, &args));
        (v, std::fs::read(img).unwrap())
    };
    // One thread (the writer then hashes on the pool's only thread) and several.
    let (a, a_bytes) = run("a.erofs", "11111111-2222-3333-4444-555555555555", "-j1");
    let (b, b_bytes) = run("b.erofs", "11111111-2222-3333-4444-555555555555", "-j3");
    assert_eq!(a, b);
    assert_eq!(a_bytes, b_bytes);
    let (c, _) = run("c.erofs", "11111111-2222-3333-4444-666666666666", "-j2");
    assert_ne!(
        a["verity-salt"], c["verity-salt"],
        "the salt follows the UUID"
    );
    // An explicit salt wins; 'none' means no salt.
    let img = dir.path().join("d.erofs");
    let v = values(&mkfs_out(
        &src,
        &img,
        &["--verity", "--verity-salt=none", "-T0"],
    ));
    assert_eq!(v["verity-salt"], "-");
    let v = values(&mkfs_out(
        &src,
        &img,
        &["--verity", "--verity-salt=00ff", "-T0"],
    ));
    assert_eq!(v["verity-salt"], "00ff");
}

#[test]
fn the_fsverity_digest_is_the_one_fsverity_computes() {
    if !have("fsverity") && skip_or_fail("fsverity (Debian fsverity) is missing") {
        return;
    }
    let (dir, src) = source();
    for args in [
        &["--fsverity-digest"][..],
        &["--fsverity-digest", "--verity"][..],
        &["--fsverity-digest", "--verity", "--verity-salt=none"][..],
        &["--fsverity-digest", "-b", "1024"][..],
    ] {
        let img = dir.path().join("f.erofs");
        let v = values(&mkfs_out(&src, &img, args));
        let out = Command::new("fsverity")
            .args(["digest", "--compact"])
            .arg(&img)
            .output()
            .unwrap();
        let want = format!("sha256:{}", String::from_utf8_lossy(&out.stdout).trim());
        assert_eq!(v["fsverity-digest"], want, "{args:?}");
    }
}

#[test]
fn bad_integrity_options_fail_before_any_work() {
    let (dir, src) = source();
    let img = dir.path().join("x.erofs");
    for (args, says) in [
        (&["--verity", "--verity-salt=zz"][..], "not hex"),
        (&["--verity", "--verity-salt=abc"][..], "not hex"),
        (&["--verity-salt=00"][..], "need --verity"),
        (&["--verity", "-b", "1024"][..], "build it with -b 4096"),
    ] {
        let out = mkfs_out(&src, &img, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!img.exists(), "{args:?} left an image");
    }
}

#[test]
fn compressed_and_streamed_images_carry_the_same_tree() {
    if without_veritysetup() {
        return;
    }
    let (dir, src) = source();
    let args = ["--verity", "-T0", "-U", "clear", "-zlz4hc"];
    let img = dir.path().join("z.erofs");
    let v = values(&mkfs_out(&src, &img, &args));
    assert!(veritysetup_verify(&img, &img, &v));
    // The same build on standard output: hashed in batches as it streams, not at offsets.
    let out = Command::new(mkfs_bin())
        .args(args)
        .arg("-q")
        .arg(&src)
        .arg("-")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, std::fs::read(&img).unwrap());
    let streamed: BTreeMap<String, String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, x)| (k.to_string(), x.to_string()))
        .collect();
    assert_eq!(streamed["verity-root-hash"], v["verity-root-hash"]);
}
