//! Compressed images: the mkfs.erofs 1.9.3 reference images extract to exactly the tree
//! `make-tree.py` builds and verify every fingerprint; Debian's fsck.erofs agrees with our
//! extraction of images its own mkfs.erofs 1.5 builds; a flipped byte in a pcluster fails
//! `--verify-fingerprints` naming the file.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use erofs_testkit::{have, is_root, read_xattrs, reference_images_1_9_3, skip_or_fail};

fn fsck(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsck-erofs-rs"))
        .args(args)
        .output()
        .expect("run fsck.erofs-rs")
}

fn images(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "erofs"))
        .collect();
    v.sort();
    v
}

/// Everything a faithful extraction preserves, per relative path: type and mode, content
/// digest or link target, xattrs other than the fingerprint, and the hard-link group.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inos: BTreeMap<u64, String> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let mode = md.permissions().mode() & 0o7777;
            let what = if md.file_type().is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if md.is_dir() {
                stack.push(p.clone());
                format!("dir {mode:o}")
            } else {
                use sha2::Digest;
                let data = std::fs::read(&p).unwrap();
                let link = if md.nlink() > 1 {
                    let first = inos.entry(md.ino()).or_insert_with(|| rel.clone());
                    format!(" linked-with {first}")
                } else {
                    String::new()
                };
                format!(
                    "file {mode:o} {}{link}",
                    erofs_testkit::hex(&sha2::Sha256::digest(&data))
                )
            };
            let xattrs: Vec<String> = read_xattrs(&p)
                .into_iter()
                .filter(|(k, _)| !k.windows(11).any(|w| w == b"fingerprint"))
                .map(|(k, v)| format!("{}={}", String::from_utf8_lossy(&k), erofs_testkit::hex(&v)))
                .collect();
            out.insert(rel, format!("{what} {xattrs:?}"));
        }
    }
    out
}

#[test]
fn every_reference_image_extracts_to_the_source_tree_and_verifies() {
    let Some(dir) = reference_images_1_9_3() else {
        return;
    };
    if !is_root() || !have("python3") {
        skip_or_fail("needs root (trusted.* xattrs) and python3 to rebuild the source tree");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    let st = Command::new("python3")
        .arg(dir.join("make-tree.py"))
        .arg(&tree)
        .status()
        .unwrap();
    assert!(st.success(), "make-tree.py");
    let want = describe(&tree);
    assert!(want.len() > 350, "the tree has {} entries", want.len());
    for img in images(&dir) {
        let name = img.file_name().unwrap().to_string_lossy().into_owned();
        let out = work.path().join(&name);
        let mut arg = std::ffi::OsString::from("--extract=");
        arg.push(&out);
        let o = fsck(&[
            arg.as_os_str(),
            "-q".as_ref(),
            "--verify-fingerprints".as_ref(),
            img.as_os_str(),
        ]);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{name}: {stdout}\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            stdout.contains("353 of 353 fingerprints match"),
            "{name}: {stdout}"
        );
        let got = describe(&out);
        for (k, v) in &want {
            assert_eq!(got.get(k), Some(v), "{name}: {k}");
        }
        assert_eq!(got.len(), want.len(), "{name}: entry count");
        std::fs::remove_dir_all(&out).unwrap();
    }
}

#[test]
fn a_flipped_byte_in_a_pcluster_fails_fingerprint_verification_naming_the_file() {
    let Some(dir) = reference_images_1_9_3() else {
        return;
    };
    let src = dir.join("lz4-default.erofs");
    let img = erofs_reader::Image::open(&src).unwrap();
    let f = img.lookup(b"/ladder/vocab-10.txt").unwrap();
    let ext = img.z_extents(&f).unwrap();
    let e = ext
        .iter()
        .find(|e| e.kind_name() == "lz4" && e.plen >= 4096)
        .expect("an lz4 pcluster");
    let mut bytes = std::fs::read(&src).unwrap();
    // The last byte of the pcluster: always inside the 0padded stream.
    let at = (e.physical + e.plen - 1) as usize;
    bytes[at] ^= 0x55;
    let work = tempfile::tempdir().unwrap();
    let bad = work.path().join("bad.erofs");
    std::fs::write(&bad, &bytes).unwrap();
    let o = fsck(&[
        "-q".as_ref(),
        "--verify-fingerprints".as_ref(),
        bad.as_os_str(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("/ladder/vocab-10.txt"), "{stderr}");
    // The check names the inode and the pcluster's offset as well.
    assert!(stderr.contains(&format!("nid {}", f.nid)), "{stderr}");
}

/// Debian's mkfs.erofs 1.5 builds lz4 and lz4hc images (4 KiB and 64 KiB pclusters, with
/// and without ztailpacking); our extraction equals Debian fsck.erofs's.
#[test]
fn debian_mkfs_images_extract_like_debian_fsck() {
    if !have("mkfs.erofs") || !have("fsck.erofs") {
        skip_or_fail("Debian's mkfs.erofs / fsck.erofs (erofs-utils) not installed");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_small_tree(&src);
    let variants: &[&[&str]] = &[
        &["-zlz4"],
        &["-zlz4hc"],
        &["-zlz4", "-C65536"],
        &["-zlz4hc,12", "-C65536"],
        &["-zlz4", "-Eztailpacking"],
        &["-zlz4hc", "-C16384", "-Eztailpacking"],
    ];
    for (i, v) in variants.iter().enumerate() {
        let img = work.path().join(format!("{i}.erofs"));
        let st = Command::new("mkfs.erofs")
            .args(["--quiet", "-T0"])
            .args(*v)
            .arg(&img)
            .arg(&src)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "mkfs.erofs {v:?}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let theirs = work.path().join(format!("theirs-{i}"));
        let st = Command::new("fsck.erofs")
            .arg(format!("--extract={}", theirs.display()))
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "fsck.erofs {v:?}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let ours = work.path().join(format!("ours-{i}"));
        let mut arg = std::ffi::OsString::from("--extract=");
        arg.push(&ours);
        let o = fsck(&[arg.as_os_str(), "-q".as_ref(), img.as_os_str()]);
        assert!(
            o.status.success(),
            "{v:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (a, b) = (describe(&theirs), describe(&ours));
        assert_eq!(a, b, "{v:?}");
        assert_eq!(describe(&src), b, "{v:?}: source tree");
        // -p: the same compression ratio as fsck.erofs prints (at message level 3).
        let ratio = |text: &str| {
            text.lines().find_map(|l| {
                l.split_once("Compression ratio: ")
                    .map(|(_, r)| r.trim().to_owned())
            })
        };
        let theirs = Command::new("fsck.erofs")
            .args(["-d3", "-p", "--extract"])
            .arg(&img)
            .output()
            .unwrap();
        let theirs = ratio(&String::from_utf8_lossy(&theirs.stdout))
            .or_else(|| ratio(&String::from_utf8_lossy(&theirs.stderr)));
        let o = fsck(&["-q".as_ref(), "-p".as_ref(), img.as_os_str()]);
        let ours = ratio(&String::from_utf8_lossy(&o.stdout));
        assert!(ours.is_some(), "{v:?}: no ratio printed");
        assert_eq!(ours, theirs, "{v:?}: -p");
    }
}

/// Text of several compressibilities, random bytes, zeros and sizes on block boundaries.
fn make_small_tree(root: &Path) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    std::fs::create_dir_all(root.join("d")).unwrap();
    let words: Vec<Vec<u8>> = (0..300)
        .map(|_| {
            (0..(2 + next() % 7))
                .map(|_| b'a' + (next() % 10) as u8)
                .collect()
        })
        .collect();
    for (k, n) in [1usize, 100, 4095, 4096, 4097, 65536, 65537, 300_000]
        .into_iter()
        .enumerate()
    {
        let mut text = Vec::new();
        while text.len() < n {
            text.extend_from_slice(&words[(next() % 300) as usize]);
            text.push(b' ');
        }
        text.truncate(n);
        std::fs::write(root.join(format!("d/text-{k}")), &text).unwrap();
        let rand: Vec<u8> = (0..n.min(20000)).map(|_| next() as u8).collect();
        std::fs::write(root.join(format!("rand-{k}")), rand).unwrap();
        std::fs::write(root.join(format!("d/zero-{k}")), vec![0u8; n]).unwrap();
    }
    std::os::unix::fs::symlink("d/text-3", root.join("link")).unwrap();
}

/// Images our builder writes with every index and tail layout (compact 2B/4B packs, full
/// indexes, inline tails, big pclusters, 1 KiB blocks, the 48-bit layout) check clean,
/// extract to the source tree and verify every fingerprint.
#[test]
fn our_compressed_layouts_check_extract_and_verify() {
    use erofs_builder::{CompressOptions, FingerprintOptions, Options};
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_small_tree(&src);
    let want = describe(&src);
    for (i, (z, blkszbits, pcluster, ztail, legacy, bit48)) in [
        ("lz4", 12, 0, false, false, false),
        ("lz4hc", 12, 16384, true, false, false),
        ("deflate", 12, 0, true, false, false),
        ("lz4", 10, 0, true, true, false),
        ("lz4hc,12", 9, 4096, true, false, true),
        ("deflate,9", 12, 65536, false, true, true),
    ]
    .into_iter()
    .enumerate()
    {
        let mut o = Options::default();
        o.blkszbits = blkszbits;
        o.timestamp = Some(0);
        let mut c = CompressOptions::parse(z).unwrap();
        c.max_pcluster_bytes = pcluster;
        o.compression = Some(c);
        o.zlayout.ztailpacking = ztail;
        o.zlayout.full_indexes = legacy;
        o.bit48 = bit48;
        o.fingerprint = Some(FingerprintOptions::new(b"trusted.erofs.fingerprint"));
        let img = work.path().join(format!("ours-{i}.erofs"));
        erofs_builder::build_dir_to_path(&src, &img, &o, &erofs_builder::NoProgress).unwrap();
        let what = format!(
            "{z} blkszbits {blkszbits} -C {pcluster} ztail {ztail} legacy {legacy} 48bit {bit48}"
        );
        let out = work.path().join(format!("x-{i}"));
        let mut arg = std::ffi::OsString::from("--extract=");
        arg.push(&out);
        let o = fsck(&[
            arg.as_os_str(),
            "-q".as_ref(),
            "--verify-fingerprints".as_ref(),
            img.as_os_str(),
        ]);
        assert!(
            o.status.success(),
            "{what}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(describe(&out), want, "{what}");
    }
}

/// Extraction into a directory decodes every compressed file, so the check before it only
/// maps them; when the extraction stops at a file that does not decode, the check decodes
/// them all, and names every bad file, not only the one the extraction stopped at.
#[test]
fn extraction_decodes_once_and_a_failed_one_still_names_every_bad_file() {
    use erofs_builder::{CompressOptions, Options};
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    make_small_tree(&src);
    let mut o = Options::default();
    o.timestamp = Some(0);
    o.compression = Some(CompressOptions::parse("lz4").unwrap());
    let good = work.path().join("good.erofs");
    erofs_builder::build_dir_to_path(&src, &good, &o, &erofs_builder::NoProgress).unwrap();
    let extract_arg = |name: &str| {
        let mut arg = std::ffi::OsString::from("--extract=");
        arg.push(work.path().join(name));
        arg
    };
    // The same summary (decoded bytes included) with and without a directory.
    let read = fsck(&["-q".as_ref(), "--extract".as_ref(), good.as_os_str()]);
    let x = fsck(&[
        "-q".as_ref(),
        extract_arg("x").as_os_str(),
        good.as_os_str(),
    ]);
    assert!(read.status.success() && x.status.success());
    let summary = |o: &Output| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.starts_with("extracted "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(summary(&x).contains("bytes of pclusters decoded to"));
    assert_eq!(summary(&x), summary(&read));
    assert_eq!(describe(&work.path().join("x")), describe(&src));

    // Two files whose first pcluster no longer decodes (0xff everywhere: a literal run
    // longer than its input).
    let img = erofs_reader::Image::open(&good).unwrap();
    let mut bytes = std::fs::read(&good).unwrap();
    let mut nids = Vec::new();
    for path in ["/d/text-6", "/d/text-7"] {
        let f = img.lookup(path.as_bytes()).unwrap();
        let e = img
            .z_extents(&f)
            .unwrap()
            .into_iter()
            .find(|e| e.kind_name() == "lz4" && !e.inline)
            .expect("an lz4 pcluster");
        bytes[e.physical as usize..(e.physical + e.plen) as usize].fill(0xff);
        nids.push(f.nid);
    }
    let bad = work.path().join("bad.erofs");
    std::fs::write(&bad, &bytes).unwrap();
    let o = fsck(&["-q".as_ref(), extract_arg("y").as_os_str(), bad.as_os_str()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(8), "{stderr}");
    assert!(stderr.contains("extraction failed"), "{stderr}");
    for (path, nid) in ["/d/text-6", "/d/text-7"].iter().zip(&nids) {
        assert!(
            stderr.lines().any(|l| l.starts_with("problem [corrupt]")
                && l.contains(path)
                && l.contains(&format!("nid {nid}"))),
            "{path}: {stderr}"
        );
    }
}
