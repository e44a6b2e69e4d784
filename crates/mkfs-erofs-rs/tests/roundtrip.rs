//! Round trips of a varied tree through mkfs.erofs-rs and every available peer: our reader,
//! Debian's fsck.erofs 1.5, and a host-kernel loop mount.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;
use sha2::{Digest, Sha256};

const FP: &str = "trusted.erofs.fingerprint";

const FULL: Compare = Compare {
    owners: true,
    xattrs: true,
    mtime: true,
    nlink: true,
};

/// Adds the fingerprint every non-empty regular file should carry.
fn add_fingerprints(
    mut snap: BTreeMap<Vec<u8>, Snap>,
    root: &Path,
    name: &str,
) -> BTreeMap<Vec<u8>, Snap> {
    for (rel, s) in snap.iter_mut() {
        if s.kind == 'f' && !s.content.starts_with("0 ") {
            let data = std::fs::read(root.join(std::ffi::OsStr::from_bytes(rel))).unwrap();
            let mut v = b"sha256:".to_vec();
            v.extend_from_slice(&Sha256::digest(&data));
            s.xattrs.insert(name.as_bytes().to_vec(), v);
        }
    }
    snap
}

use std::os::unix::ffi::OsStrExt;

fn features() -> Features {
    Features {
        special: is_root(),
        sparse: true,
        big: true,
    }
}

#[test]
fn every_block_size_round_trips_through_our_reader_and_the_kernel() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_tree(&src, features());
    let want = with_epoch(add_fingerprints(snap_dir(&src, FULL, &[]), &src, FP));
    for bs in ["512", "1024", "2048", "4096"] {
        let img = tmp.path().join(format!("img-{bs}.erofs"));
        mkfs(
            &src,
            &img,
            &[
                "-b",
                bs,
                "-T",
                &EPOCH.to_string(),
                "-U",
                "clear",
                "--fingerprint=sha256",
                "--xattr-prefix=user.many-",
            ],
        );
        let got = snap_image(&img, FULL);
        assert_same(&format!("reader, -b {bs}"), &want, &got);
        if let Some(m) = Mount::new(&img) {
            let got = snap_dir(m.path(), FULL, &[]);
            assert_same(&format!("kernel mount, -b {bs}"), &want, &got);
        }
    }
}

#[test]
fn files_over_4_gib_are_stored_with_holes_not_data() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let file = std::fs::File::create(src.join("sparse-5g")).unwrap();
    file.set_len(5 << 30).unwrap();
    use std::os::unix::fs::FileExt;
    file.write_all_at(b"past 4 GiB", (4 << 30) + 12345).unwrap();
    let img = tmp.path().join("img.erofs");
    mkfs(&src, &img, &["-T", "0"]);
    assert!(
        std::fs::metadata(&img).unwrap().len() < 1 << 20,
        "holes are not stored"
    );
    let image = erofs_reader::Image::open(&img).unwrap();
    let f = image.lookup(b"/sparse-5g").unwrap();
    assert_eq!(f.size, 5 << 30);
    assert!(f.extended, "a size over 4 GiB needs an extended inode");
    let mut buf = [0u8; 10];
    image.read_at(&f, (4 << 30) + 12345, &mut buf).unwrap();
    assert_eq!(&buf, b"past 4 GiB");
    image.read_at(&f, 3 << 30, &mut buf).unwrap();
    assert_eq!(buf, [0; 10]);
    if let Some(m) = Mount::new(&img) {
        let f = std::fs::File::open(m.path().join("sparse-5g")).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 5 << 30);
        f.read_exact_at(&mut buf, (4 << 30) + 12345).unwrap();
        assert_eq!(&buf, b"past 4 GiB");
    }
}

/// One MiB of file data whose first bytes name its index, so that a piece written at the
/// wrong offset cannot go unnoticed.
fn stamp_mib(mib: &mut [u8], index: u64) {
    mib[..8].copy_from_slice(&index.to_le_bytes());
}

#[test]
fn a_dense_file_over_4_gib_is_stored_flat_with_an_extended_inode() {
    const SIZE: u64 = (4 << 30) + 5000;
    let tmp = tempdir();
    // The source and the image take 8.6 GB; the page cache keeps most of it in memory.
    let free = rustix::fs::statvfs(tmp.path())
        .map(|v| v.f_bavail * v.f_frsize)
        .unwrap_or(0);
    if free < 12 << 30 {
        eprintln!(
            "SKIPPED: a 4 GiB file needs 12 GiB free under {}, {} MiB are",
            tmp.path().display(),
            free >> 20
        );
        return;
    }
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let mut hasher = Sha256::new();
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(src.join("dense")).unwrap());
        let mut left = SIZE;
        let mut mib = bytes(0x5eed, 1 << 20);
        for i in 0.. {
            if left == 0 {
                break;
            }
            stamp_mib(&mut mib, i);
            let n = left.min(mib.len() as u64) as usize;
            f.write_all(&mib[..n]).unwrap();
            hasher.update(&mib[..n]);
            left -= n as u64;
        }
        f.flush().unwrap();
    }
    let want_fp = [b"sha256:".as_slice(), &hasher.finalize()].concat();

    let img = tmp.path().join("img.erofs");
    mkfs(&src, &img, &["-T", "0", "--fingerprint=sha256"]);
    let image = erofs_reader::Image::open(&img).unwrap();
    let f = image.lookup(b"/dense").unwrap();
    assert_eq!(f.size, SIZE);
    assert!(f.extended, "a size over 4 GiB needs an extended inode");
    assert_eq!(
        f.layout,
        erofs_format::DataLayout::FlatInline,
        "whole blocks, then the 904-byte tail in the inode's block"
    );
    assert_eq!(
        image.get_xattr(&f, FP.as_bytes()).unwrap(),
        Some(want_fp.clone())
    );
    // Every byte, through our reader: the last MiBs sit past 4 GiB and the tail is inline.
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < SIZE {
        let n = image.read_at(&f, at, &mut buf).unwrap();
        assert!(n > 0, "short read at {at}");
        if at.is_multiple_of(1 << 20) {
            assert_eq!(
                buf[..8],
                (at >> 20).to_le_bytes(),
                "MiB {} misplaced",
                at >> 20
            );
        }
        h.update(&buf[..n]);
        at += n as u64;
    }
    assert_eq!([b"sha256:".as_slice(), &h.finalize()].concat(), want_fp);
    assert!(
        std::fs::metadata(&img).unwrap().len() > SIZE,
        "the data is stored"
    );

    if let Some(m) = Mount::new(&img) {
        use std::os::unix::fs::FileExt;
        let path = m.path().join("dense");
        let f = std::fs::File::open(&path).unwrap();
        assert_eq!(f.metadata().unwrap().len(), SIZE);
        let mut stamp = [0u8; 8];
        for i in [0u64, 4095, 4096] {
            f.read_exact_at(&mut stamp, i << 20).unwrap();
            assert_eq!(stamp, i.to_le_bytes(), "kernel: MiB {i}");
        }
        let mut tail = vec![0u8; 5000];
        f.read_exact_at(&mut tail, 4 << 30).unwrap();
        let mut want = bytes(0x5eed, 5000);
        stamp_mib(&mut want, 4096);
        assert_eq!(tail, want);
        assert_eq!(read_xattrs(&path).get(FP.as_bytes()), Some(&want_fp));
    }
}

#[test]
fn real_mtimes_are_kept_to_the_nanosecond() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_tree(
        &src,
        Features {
            special: false,
            sparse: false,
            big: false,
        },
    );
    let want = snap_dir(&src, FULL, &[]);
    let img = tmp.path().join("img.erofs");
    mkfs(&src, &img, &["-E", "noinline_data"]);
    assert_same("reader, real mtimes", &want, &snap_image(&img, FULL));
    if let Some(m) = Mount::new(&img) {
        assert_same(
            "kernel mount, real mtimes",
            &want,
            &snap_dir(m.path(), FULL, &[]),
        );
    }
}

#[test]
fn debian_fsck_erofs_1_5_checks_and_extracts_the_tree() {
    if !have("fsck.erofs") {
        skip_or_fail("fsck.erofs is not installed");
        return;
    }
    let tmp = tempdir();
    let src = tmp.path().join("src");
    // 1.5 extracts holes wrongly (it drops them), so no sparse file here.
    make_tree(
        &src,
        Features {
            special: is_root(),
            sparse: false,
            big: true,
        },
    );
    let img = tmp.path().join("img.erofs");
    mkfs(&src, &img, &["-T", &EPOCH.to_string()]);
    run_ok(Command::new("fsck.erofs").arg(&img), "fsck.erofs");
    let dest = tmp.path().join("extracted");
    run_ok(
        Command::new("fsck.erofs")
            .arg(format!("--extract={}", dest.display()))
            .arg(&img),
        "fsck.erofs --extract",
    );
    let cmp = Compare {
        owners: is_root(),
        xattrs: false,
        mtime: false,
        nlink: false,
    };
    // 1.5 does not recreate sockets; it leaves them out.
    // 1.5 restores the owner after the mode, which clears set-id bits: compare 0o777 only.
    let mask = |mut s: BTreeMap<Vec<u8>, Snap>| {
        s.values_mut().for_each(|v| v.perm &= 0o777);
        s
    };
    let mut want = mask(snap_dir(&src, cmp, &[]));
    let got = mask(snap_dir(&dest, cmp, &[]));
    if !got.contains_key(&b"socket"[..]) {
        want.remove(&b"socket"[..]);
    }
    assert_same("fsck.erofs 1.5 --extract", &want, &got);
}

#[test]
fn fingerprints_are_sha256_of_the_content_and_registered_in_the_superblock() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_tree(
        &src,
        Features {
            special: false,
            sparse: true,
            big: false,
        },
    );
    for (args, name, base, infix) in [
        (vec!["--fingerprint=sha256"], FP, 4u8, "erofs.fingerprint"),
        (
            vec!["--xattr-inode-digest"],
            "erofs.fingerprint.v1",
            0,
            "erofs.fingerprint.v1",
        ),
        (
            vec!["--fingerprint=sha256", "--fingerprint-xattr=user.fp"],
            "user.fp",
            1,
            "fp",
        ),
    ] {
        let img = tmp.path().join("fp.erofs");
        mkfs(&src, &img, &args);
        let bytes = std::fs::read(&img).unwrap();
        let sb = 1024;
        let compat = u32::from_le_bytes(bytes[sb + 8..sb + 12].try_into().unwrap());
        let incompat = u32::from_le_bytes(bytes[sb + 80..sb + 84].try_into().unwrap());
        assert_eq!(compat & 0x3F, 0x37, "{args:?}: compat");
        assert_eq!(incompat & 0x40, 0x40, "{args:?}: XATTR_PREFIXES");
        assert_eq!(bytes[sb + 91], 1, "{args:?}: one prefix");
        assert_eq!(bytes[0x469], 0, "{args:?}: ishare_xattr_prefix_id");
        let start = u32::from_le_bytes(bytes[sb + 92..sb + 96].try_into().unwrap()) as usize * 4;
        let len = u16::from_le_bytes([bytes[start], bytes[start + 1]]) as usize;
        assert_eq!(bytes[start + 2], base, "{args:?}: base index");
        assert_eq!(&bytes[start + 3..start + 2 + len], infix.as_bytes());

        let image = erofs_reader::Image::open(&img).unwrap();
        assert_eq!(
            image.fingerprint_name().unwrap().as_deref(),
            Some(name.as_bytes())
        );
        let mut seen = 0;
        for e in image.walk().unwrap() {
            let e = e.unwrap();
            let fp = image.fingerprint(&e.inode).unwrap();
            if e.inode.is_file() && e.inode.size > 0 {
                let data = image.read_to_vec(&e.inode, u64::MAX).unwrap();
                let mut want = b"sha256:".to_vec();
                want.extend_from_slice(&Sha256::digest(&data));
                assert_eq!(fp, Some(want), "{:?}", String::from_utf8_lossy(&e.path));
                seen += 1;
            } else {
                assert_eq!(
                    fp,
                    None,
                    "{:?} must carry none",
                    String::from_utf8_lossy(&e.path)
                );
            }
        }
        assert!(seen > 20);
    }
}

#[test]
fn builds_are_byte_identical_across_runs_and_thread_counts() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_tree(&src, features());
    let args = |j: &'static str| {
        vec![
            "-T",
            "1234567",
            "-U",
            "01234567-89ab-cdef-0123-456789abcdef",
            "--fingerprint=sha256",
            "-j",
            j,
        ]
    };
    let mut images = Vec::new();
    for (i, j) in ["1", "4", "4", "2"].into_iter().enumerate() {
        let img = tmp.path().join(format!("r{i}.erofs"));
        mkfs(&src, &img, &args(j));
        images.push(std::fs::read(&img).unwrap());
    }
    for (i, img) in images.iter().enumerate().skip(1) {
        assert!(img == &images[0], "build {i} differs from build 0");
    }
}

#[test]
fn a_failed_build_leaves_an_existing_image_untouched() {
    let tmp = tempdir();
    let img = tmp.path().join("img.erofs");
    std::fs::write(&img, b"previous image").unwrap();
    let file = tmp.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    for source in [file.clone(), tmp.path().join("missing")] {
        let out = Command::new(mkfs_bin())
            .arg(&source)
            .arg(&img)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&*source.to_string_lossy()),
            "error names the path: {err}"
        );
        assert_eq!(std::fs::read(&img).unwrap(), b"previous image");
    }
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".mkfs"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn an_image_inside_the_source_is_left_out_and_excludes_apply() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("keep/drop-me")).unwrap();
    std::fs::create_dir_all(src.join("logs")).unwrap();
    std::fs::write(src.join("keep/file"), b"kept").unwrap();
    std::fs::write(src.join("keep/drop-me/x"), b"gone").unwrap();
    std::fs::write(src.join("logs/a.log"), b"gone").unwrap();
    std::fs::write(src.join("logs/a.txt"), b"kept").unwrap();
    let img = src.join("out.erofs");
    std::fs::write(&img, b"old image inside the source").unwrap();
    mkfs(
        &src,
        &img,
        &["--exclude-path=/keep/drop-me", "--exclude-regex=\\.log$"],
    );
    let got = snap_image(&img, FULL);
    let paths: Vec<String> = got
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(paths, ["", "keep", "keep/file", "logs", "logs/a.txt"]);
}

#[test]
fn ownership_options_rewrite_uid_and_gid() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let own = |args: &[&str]| {
        let img = tmp.path().join("o.erofs");
        mkfs(&src, &img, args);
        let s = snap_image(&img, FULL);
        let f = &s[&b"f"[..]];
        (f.uid, f.gid)
    };
    let (uid, gid) = {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(src.join("f")).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(own(&["--all-root"]), (0, 0));
    assert_eq!(own(&["--force-uid=7", "--force-gid=8"]), (7, 8));
    assert_eq!(
        own(&["--uid-offset=100000", "--gid-offset=5"]),
        (uid + 100_000, gid + 5)
    );
}

#[test]
fn a_directory_with_100k_entries_round_trips() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("big")).unwrap();
    for i in 0..100_000 {
        std::fs::File::create(src.join(format!("big/file-{i:06}"))).unwrap();
    }
    let img = tmp.path().join("img.erofs");
    mkfs(&src, &img, &["-T", "0"]);
    let image = erofs_reader::Image::open(&img).unwrap();
    let dir = image.lookup(b"/big").unwrap();
    let entries = image.read_dir(&dir).unwrap();
    assert_eq!(entries.len(), 100_002);
    assert!(image.lookup(b"/big/file-099999").is_ok());
    if let Some(m) = Mount::new(&img) {
        assert_eq!(
            std::fs::read_dir(m.path().join("big")).unwrap().count(),
            100_000
        );
        assert!(m.path().join("big/file-054321").exists());
    }
}

#[test]
fn a_stale_fingerprint_in_the_source_is_replaced_with_a_warning() {
    if !is_root() {
        skip_or_fail("setting trusted.* xattrs needs root");
        return;
    }
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"content").unwrap();
    rustix::fs::lsetxattr(
        src.join("f"),
        FP,
        b"sha256:stale",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let img = tmp.path().join("img.erofs");
    let out = Command::new(mkfs_bin())
        .arg("--fingerprint=sha256")
        .arg(&src)
        .arg(&img)
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning") && err.contains("fingerprint"),
        "{err}"
    );
    let image = erofs_reader::Image::open(&img).unwrap();
    let f = image.lookup(b"/f").unwrap();
    let mut want = b"sha256:".to_vec();
    want.extend_from_slice(&Sha256::digest(b"content"));
    assert_eq!(image.fingerprint(&f).unwrap(), Some(want));
    assert_eq!(image.xattrs(&f).unwrap().len(), 1);
}

/// Our fsck, built beside this test (`cargo test --workspace` builds it).
fn our_fsck() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?.parent()?;
    let fsck = dir.join("fsck-erofs-rs");
    fsck.exists().then_some(fsck)
}

#[test]
fn our_fsck_verifies_fingerprints_and_extracts_the_tree() {
    let Some(fsck) = our_fsck() else {
        skip_or_fail("fsck-erofs-rs is not built (run cargo test --workspace)");
        return;
    };
    let tmp = tempdir();
    let src = tmp.path().join("src");
    make_tree(&src, features());
    let want = with_epoch(add_fingerprints(snap_dir(&src, FULL, &[]), &src, FP));
    for bs in ["512", "4096"] {
        let img = tmp.path().join(format!("img-{bs}.erofs"));
        mkfs(
            &src,
            &img,
            &["-b", bs, "-T", &EPOCH.to_string(), "--fingerprint=sha256"],
        );
        run_ok(
            Command::new(&fsck)
                .args(["-q", "--verify-fingerprints"])
                .arg(&img),
            &format!("fsck.erofs-rs --verify-fingerprints, -b {bs}"),
        );
        let dest = tmp.path().join(format!("extracted-{bs}"));
        run_ok(
            Command::new(&fsck)
                .arg("-q")
                .arg(format!("--extract={}", dest.display()))
                .arg(&img),
            &format!("fsck.erofs-rs --extract, -b {bs}"),
        );
        let cmp = Compare {
            owners: is_root(),
            xattrs: is_root(),
            mtime: true,
            nlink: true,
        };
        let want = if is_root() {
            want.clone()
        } else {
            with_epoch(snap_dir(&src, cmp, &[]))
        };
        assert_same(
            &format!("fsck.erofs-rs --extract, -b {bs}"),
            &want,
            &snap_dir(&dest, cmp, &[]),
        );
    }
}

#[test]
fn keep_going_skips_unreadable_files_and_lists_them() {
    use std::os::unix::fs::PermissionsExt;
    // Root reads everything, so as root the build runs as nobody through setpriv.
    let wrap: Vec<String> = if is_root() {
        if !have("setpriv") {
            skip_or_fail("setpriv is not installed");
            return;
        }
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ]
        .map(String::from)
        .to_vec()
    } else {
        Vec::new()
    };
    let tmp = tempdir();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("closed-dir")).unwrap();
    std::fs::write(src.join("ok"), b"readable").unwrap();
    std::fs::write(src.join("secret"), b"unreadable").unwrap();
    std::fs::write(src.join("closed-dir/inside"), b"x").unwrap();
    std::fs::set_permissions(src.join("secret"), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(
        src.join("closed-dir"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let img = tmp.path().join("img.erofs");
    let run = |extra: &[&str]| {
        let mut cmd = if wrap.is_empty() {
            Command::new(mkfs_bin())
        } else {
            let mut c = Command::new(&wrap[0]);
            c.args(&wrap[1..]).arg(mkfs_bin());
            c
        };
        cmd.args(extra).arg(&src).arg(&img).output().unwrap()
    };
    let out = run(&[]);
    assert!(!out.status.success(), "an unreadable file fails the build");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("secret") || err.contains("closed-dir"),
        "the error names the path: {err}"
    );
    assert!(
        err.contains("hint: --keep-going skips unreadable files"),
        "the error names the way out: {err}"
    );
    assert!(!img.exists());
    let out = run(&["--keep-going"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "--keep-going: {err}");
    assert!(
        err.contains("skipped 2 unreadable entries (--keep-going):"),
        "a directory is an entry, not a file: {err}"
    );
    assert!(
        err.contains("secret") && err.contains("closed-dir"),
        "{err}"
    );
    let got = snap_image(&img, FULL);
    let paths: Vec<String> = got
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert_eq!(paths, ["", "ok"]);
    // -q: no list, only the result.
    let out = run(&["--keep-going", "-q"]);
    assert!(out.status.success());
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn source_date_epoch_equals_dash_t_and_the_label_is_stored() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let a = tmp.path().join("a.erofs");
    let b = tmp.path().join("b.erofs");
    mkfs(&src, &a, &["-T", "86400", "-U", "clear", "-L", "my-label"]);
    let out = Command::new(mkfs_bin())
        .env("SOURCE_DATE_EPOCH", "86400")
        .args(["-q", "-U", "clear", "-L", "my-label"])
        .arg(&src)
        .arg(&b)
        .output()
        .unwrap();
    assert!(out.status.success());
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(bytes, std::fs::read(&b).unwrap());
    assert_eq!(&bytes[1024 + 64..1024 + 73], b"my-label\0");
    assert_eq!(
        u64::from_le_bytes(bytes[1024 + 24..1024 + 32].try_into().unwrap()),
        86400,
        "epoch"
    );
    let out = Command::new(mkfs_bin())
        .args(["-L", "sixteen-bytes-xx"])
        .arg(&src)
        .arg(tmp.path().join("c.erofs"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "labels over 15 bytes are refused");
}

#[test]
fn a_tree_1000_directories_deep_round_trips() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    let rel: String = "d/".repeat(1000);
    std::fs::create_dir_all(src.join(&rel)).unwrap();
    std::fs::write(src.join(&rel).join("bottom"), b"deep").unwrap();
    let img = tmp.path().join("img.erofs");
    mkfs(&src, &img, &["-T", "0", "-b", "1024"]);
    let image = erofs_reader::Image::open(&img).unwrap();
    let path = format!("/{rel}bottom");
    let f = image.lookup(path.as_bytes()).unwrap();
    assert_eq!(image.read_to_vec(&f, 100).unwrap(), b"deep");
    if let Some(m) = Mount::new(&img) {
        assert_eq!(
            std::fs::read(m.path().join(&rel).join("bottom")).unwrap(),
            b"deep"
        );
    }
}

#[test]
fn mtime_options_choose_which_files_take_the_timestamp() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let real = {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(src.join("f")).unwrap();
        (m.mtime(), m.mtime_nsec() as u32)
    };
    let view = |args: &[&str]| {
        let img = tmp.path().join("m.erofs");
        mkfs(&src, &img, args);
        let image = erofs_reader::Image::open(&img).unwrap();
        let f = image.lookup(b"/f").unwrap();
        let epoch = image.superblock().epoch.get() as i64;
        ((f.mtime, f.mtime_nsec), f.extended, epoch)
    };
    assert_eq!(view(&["-T", "1000"]), ((1000, 0), false, 1000));
    assert_eq!(
        view(&["-T", "1000", "--all-time"]),
        ((1000, 0), false, 1000)
    );
    assert_eq!(view(&["-T", "1000", "--mkfs-time"]), (real, true, 1000));
    let ((mtime, nsec), extended, epoch) = view(&["--ignore-mtime"]);
    assert_eq!((mtime, nsec, extended), (epoch, 0, false));
    let (m, extended, _) = view(&[]);
    assert_eq!((m, extended), (real, true));
}
