//! `mkfs.erofs-rs --tar`: the test list of docs/tar-input.md §5.4. Archives are built here,
//! byte by byte (hand-made headers), or by GNU tar for sparse files. Every valid archive is
//! checked against what GNU tar extracts (as root), through our reader and the host kernel.
#![allow(missing_docs)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use erofs_testkit::tar::{Tar, base256, h};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------
// Running mkfs and reading the result.

const ALL: Compare = Compare {
    owners: true,
    xattrs: true,
    mtime: true,
    nlink: true,
};

struct Built {
    dir: tempfile::TempDir,
    img: PathBuf,
    out: Output,
}

impl Built {
    fn ok(&self) -> &Self {
        assert!(
            self.out.status.success(),
            "mkfs --tar failed: {}",
            String::from_utf8_lossy(&self.out.stderr)
        );
        self
    }
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
    fn snap(&self) -> BTreeMap<Vec<u8>, Snap> {
        self.ok();
        snap_image(&self.img, ALL)
    }
    fn tar(&self) -> PathBuf {
        self.dir.path().join("in.tar")
    }
}

fn run_mkfs(dir: tempfile::TempDir, tar: &Path, args: &[&str]) -> Built {
    let img = dir.path().join("out.img");
    let out = Command::new(mkfs_bin())
        .arg("--tar=f")
        .args(["-T", &EPOCH.to_string(), "--mkfs-time", "-U", "clear"])
        .args(args)
        .arg(tar)
        .arg(&img)
        .output()
        .unwrap();
    Built { dir, img, out }
}

fn mkfs_tar_file(tar: &Path, args: &[&str]) -> Built {
    run_mkfs(tempdir(), tar, args)
}

/// Builds an image of the tar bytes `bytes`.
fn build(bytes: &[u8], args: &[&str]) -> Built {
    let dir = tempdir();
    let tar = dir.path().join("in.tar");
    std::fs::write(&tar, bytes).unwrap();
    run_mkfs(dir, &tar, args)
}

/// The build fails, names `entry` and an offset, and leaves no image.
fn refused(bytes: &[u8], args: &[&str], entry: &str, offset: u64) -> String {
    let b = build(bytes, args);
    let err = b.stderr();
    assert!(!b.out.status.success(), "accepted; stderr: {err}");
    assert!(err.contains(entry), "{err:?} does not name {entry:?}");
    assert!(
        err.contains(&format!("offset {offset}")),
        "{err:?} does not name offset {offset}"
    );
    assert!(!b.img.exists(), "an image was left behind");
    assert_eq!(
        std::fs::read_dir(b.dir.path()).unwrap().count(),
        1,
        "temporary files were left behind"
    );
    err
}

fn get<'a>(s: &'a BTreeMap<Vec<u8>, Snap>, path: &str) -> &'a Snap {
    s.get(path.as_bytes()).unwrap_or_else(|| {
        panic!(
            "{path} missing; have {:?}",
            s.keys()
                .map(|k| String::from_utf8_lossy(k))
                .collect::<Vec<_>>()
        )
    })
}

fn content(data: &[u8]) -> String {
    format!("{} {:x}", data.len(), Sha256::digest(data))
}

/// What GNU tar extracts from `tar` (as root, owners and xattrs included) equals the
/// image, through our reader and through the host kernel. Implicit directories (created
/// by tar with its own modes and times) and the root are left out of the comparison.
fn same_as_gnu_tar(b: &Built, implicit: &[&str]) {
    let got = b.snap();
    if !is_root() {
        skip_or_fail("extracting with owners and xattrs needs root");
        return;
    }
    if !have("tar") {
        skip_or_fail("GNU tar is not installed");
        return;
    }
    let x = tempdir();
    run_ok(
        Command::new("tar")
            .args([
                "--xattrs",
                "--xattrs-include=*",
                "--same-owner",
                "--numeric-owner",
                "-xpf",
            ])
            .arg(b.tar())
            .arg("-C")
            .arg(x.path()),
        "tar -x",
    );
    let mut want = snap_dir(x.path(), ALL, &[]);
    let strip = |m: &mut BTreeMap<Vec<u8>, Snap>| {
        m.remove(&b""[..]);
        for p in implicit {
            if let Some(s) = m.get_mut(p.as_bytes()) {
                s.perm = 0;
                s.uid = 0;
                s.gid = 0;
                s.mtime = None;
            }
        }
    };
    strip(&mut want);
    let mut ours = got.clone();
    strip(&mut ours);
    assert_same("GNU tar extraction vs our reader", &want, &ours);
    if let Some(m) = Mount::new(&b.img) {
        let mut mounted = snap_dir(m.path(), ALL, &[]);
        strip(&mut mounted);
        assert_same("kernel mount vs our reader", &ours, &mounted);
    }
}

// ---------------------------------------------------------------------------------------
// Header and format (1-10)

#[test]
fn t01_ustar_prefix_and_name_make_a_long_path() {
    let dir = format!("{}/{}", "p".repeat(59), "q".repeat(60));
    let mut t = Tar::default();
    let mut d = h(&dir[60..], b'5');
    d.prefix = dir.as_bytes()[..59].to_vec();
    t.entry(d, b"");
    let mut e = h("file-after-prefix", b'0');
    e.prefix = dir.as_bytes().to_vec();
    t.entry(e, b"prefixed");
    let b = build(&t.finish(), &[]);
    let s = b.snap();
    assert_eq!(
        get(&s, &format!("{dir}/file-after-prefix")).content,
        content(b"prefixed")
    );
    same_as_gnu_tar(&b, &[&dir[..59]]);
}

#[test]
fn t02_pax_path_and_linkpath_over_100_bytes_and_an_empty_path_resets() {
    let long = format!("d/{}", "n".repeat(200));
    let target = "t".repeat(151);
    let mut t = Tar::default();
    t.dir("d");
    t.pax(b'x', &[("path", long.as_bytes())])
        .file("short-name", b"long");
    t.pax(b'x', &[("path", b"d/sym"), ("linkpath", target.as_bytes())])
        .entry(h("x", b'2'), b"");
    let b = build(&t.finish(), &[]);
    let s = b.snap();
    assert_eq!(get(&s, &long).content, content(b"long"));
    assert_eq!(get(&s, "d/sym").content, target);
    same_as_gnu_tar(&b, &[]);
    // A global path is undone by an empty local one: the header name applies again
    // (GNU tar reads an empty name instead, so this part is ours alone).
    let mut t = Tar::default();
    t.pax(b'g', &[("path", b"global-name")]);
    t.pax(b'x', &[("path", b"")]).file("header-name", b"h");
    let s = build(&t.finish(), &[]).snap();
    assert_eq!(get(&s, "header-name").content, content(b"h"));
    assert!(!s.contains_key(&b"global-name"[..]));
}

#[test]
fn t03_gnu_long_names_and_links_and_pax_path_wins_over_l() {
    let long = format!("g/{}/{}", "a".repeat(150), "b".repeat(117));
    let link = "k".repeat(200);
    let mut t = Tar::default();
    t.dir("g");
    t.gnu_long(b'L', &format!("g/{}", "a".repeat(150)));
    t.dir("long-dir");
    t.gnu_long(b'L', &long).file("trunc", b"L");
    // (Each directory's entries together: GNU tar sets a directory's time when it leaves it.)
    t.gnu_long(b'L', &format!("{long}.hard"));
    t.gnu_long(b'K', &long);
    t.entry(h("x", b'1'), b"");
    t.gnu_long(b'L', "g/sym").gnu_long(b'K', &link);
    t.entry(h("g/sym", b'2'), b"");
    t.gnu_long(b'L', "g/from-L")
        .pax(b'x', &[("path", b"g/from-pax")])
        .file("g/header", b"pax wins");
    let b = build(&t.finish(), &[]);
    let s = b.snap();
    assert_eq!(get(&s, &long).content, content(b"L"));
    assert_eq!(get(&s, &long).nlink, 2);
    assert_eq!(get(&s, "g/sym").content, link);
    assert_eq!(get(&s, "g/from-pax").content, content(b"pax wins"));
    assert!(!s.contains_key(&b"g/from-L"[..]));
    same_as_gnu_tar(&b, &[]);
}

#[test]
fn t04_base256_ids_size_and_a_negative_mtime() {
    let mut t = Tar::default();
    t.entry(
        h("big-ids", b'0')
            .patch(108, &base256(8, 16_777_215))
            .patch(116, &base256(8, 4_294_967_294))
            .patch(124, &base256(12, 5))
            .patch(136, &base256(12, -3_600)),
        b"12345",
    );
    // Past the octal range, within what the host filesystem stores for GNU tar.
    t.entry(h("future", b'0').patch(136, &base256(12, 1 << 33)), b"");
    let b = build(&t.finish(), &[]);
    let s = b.snap();
    let e = get(&s, "big-ids");
    assert_eq!((e.uid, e.gid), (16_777_215, 4_294_967_294));
    assert_eq!(e.content, content(b"12345"));
    assert_eq!(e.mtime, Some((-3_600, 0)));
    assert_eq!(get(&s, "future").mtime, Some((1 << 33, 0)));
    same_as_gnu_tar(&b, &[]);
}

#[test]
fn t05_pax_mtimes_with_long_fractions_negative_and_none() {
    let mut t = Tar::default();
    t.pax(b'x', &[("mtime", b"1700000000.1234567891")])
        .file("frac", b"");
    t.pax(b'x', &[("mtime", b"-1.5")]).file("negative", b"");
    t.pax(b'x', &[("mtime", b"42")]).file("whole", b"");
    let b = build(&t.finish(), &[]);
    let s = b.snap();
    assert_eq!(get(&s, "frac").mtime, Some((1_700_000_000, 123_456_789)));
    assert_eq!(get(&s, "negative").mtime, Some((-2, 500_000_000)));
    assert_eq!(get(&s, "whole").mtime, Some((42, 0)));
    same_as_gnu_tar(&b, &[]);
}

#[test]
fn t06_pax_ids_over_32_bits_are_refused() {
    let mut t = Tar::default();
    t.file("fine", b"");
    t.pax(b'x', &[("uid", b"4294967296")]).file("huge-uid", b"");
    // The header follows the fine entry (512 bytes) and its PAX record (1024 bytes).
    refused(&t.finish(), &[], "huge-uid", 1536);
}

#[test]
fn t07_global_headers_apply_from_the_next_entry_and_local_records_win() {
    let mut t = Tar::default();
    t.pax(
        b'g',
        &[
            ("uid", b"3000"),
            ("mtime", b"77"),
            ("SCHILY.xattr.user.g", b"global"),
        ],
    );
    t.file("first", b"1");
    t.pax(b'x', &[("uid", b"4000"), ("SCHILY.xattr.user.g", b"local")])
        .file("second", b"2");
    t.pax(b'g', &[("uid", b"")]).file("third", b"3");
    // GNU tar rejects a global "uid=" and mis-applies global xattrs: no comparison here.
    let b = build(&t.finish(), &[]);
    let s = b.snap();
    let first = get(&s, "first");
    assert_eq!((first.uid, first.mtime), (3000, Some((77, 0))));
    assert_eq!(first.xattrs[&b"user.g"[..]], b"global");
    let second = get(&s, "second");
    assert_eq!(second.uid, 4000);
    assert_eq!(second.xattrs[&b"user.g"[..]], b"local");
    assert_eq!(get(&s, "third").uid, 0);
}

#[test]
fn t08_typeflags_nul_7_unknown_and_volume_labels() {
    let mut t = Tar::default();
    t.entry(h("label", b'V'), b"");
    t.entry(h("old-regular", 0), b"nul typeflag");
    t.entry(h("contiguous", b'7'), b"seven");
    t.entry(h("solaris-thing", b'Q'), &[7u8; 700]);
    t.file("after", b"still read");
    let b = build(&t.finish(), &[]);
    let s = b.snap();
    assert_eq!(get(&s, "old-regular").content, content(b"nul typeflag"));
    assert_eq!(get(&s, "contiguous").content, content(b"seven"));
    assert_eq!(get(&s, "after").content, content(b"still read"));
    assert!(!s.contains_key(&b"label"[..]) && !s.contains_key(&b"solaris-thing"[..]));
    assert!(b.stderr().contains("unknown typeflag"), "{}", b.stderr());
}

#[test]
fn t09_signed_checksums_are_accepted_and_a_corrupt_one_is_refused() {
    let mut t = Tar::default();
    let mut e = h("caf\u{e9}-\u{fe}", b'0');
    e.signed_checksum = true;
    t.entry(e, b"signed");
    let s = build(&t.finish(), &[]).snap();
    assert_eq!(get(&s, "caf\u{e9}-\u{fe}").content, content(b"signed"));

    let mut t = Tar::default();
    t.file("good", b"x");
    t.file("bad", b"y");
    let mut bytes = t.finish();
    bytes[1024 + 100] ^= 1; // the second header's mode
    let err = refused(&bytes, &[], "bad", 1024);
    assert!(err.contains("checksum"), "{err}");
}

#[test]
fn t10_fields_without_terminators() {
    let name = "f".repeat(100);
    let mut t = Tar::default();
    t.entry(h(&name, b'0').patch(100, b"00000640"), b"full");
    let b = build(&t.finish(), &[]);
    let s = b.snap();
    let e = get(&s, &name);
    assert_eq!((e.perm, e.content.clone()), (0o640, content(b"full")));
    same_as_gnu_tar(&b, &[]);
}

// ---------------------------------------------------------------------------------------
// Xattrs (11-15)

#[test]
fn t11_to_13_binary_libarchive_empty_and_duplicate_xattrs() {
    let cap = b"\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
    let mut t = Tar::default();
    t.pax(b'g', &[("SCHILY.xattr.user.dup", b"global")]);
    t.pax(
        b'x',
        &[
            ("SCHILY.xattr.security.capability", cap),
            ("SCHILY.xattr.user.empty", b""),
            ("SCHILY.xattr.user.dup", b"local"),
            (
                "SCHILY.xattr.security.selinux",
                b"system_u:object_r:bin_t:s0\0",
            ),
        ],
    )
    .file("bin", b"#!");
    t.pax(
        b'x',
        &[
            ("LIBARCHIVE.xattr.user.with%3Dequals", b"aGVsbG8"),
            ("LIBARCHIVE.xattr.user.pad", b"aGk="),
        ],
    )
    .file("bsd", b"");
    let b = build(&t.finish(), &[]);
    let s = b.snap();
    let x = &get(&s, "bin").xattrs;
    assert_eq!(x[&b"security.capability"[..]], cap);
    assert_eq!(x[&b"user.empty"[..]], b"");
    assert_eq!(x[&b"user.dup"[..]], b"local");
    assert_eq!(x[&b"security.selinux"[..]], b"system_u:object_r:bin_t:s0\0");
    let y = &get(&s, "bsd").xattrs;
    assert_eq!(y[&b"user.with=equals"[..]], b"hello");
    assert_eq!(y[&b"user.pad"[..]], b"hi");
    if let Some(m) = Mount::new(&b.img) {
        let got = snap_dir(m.path(), ALL, &[]);
        assert_same("kernel mount vs our reader", &s, &got);
    }
}

#[test]
fn t14_xattr_names_past_erofs_limits_are_left_out_with_a_warning() {
    let long = format!("SCHILY.xattr.user.{}", "x".repeat(256));
    let mut t = Tar::default();
    t.pax(
        b'x',
        &[
            (long.as_str(), b"v"),
            ("SCHILY.xattr.nonamespace", b"v"),
            ("SCHILY.xattr.user.ok", b"v"),
        ],
    )
    .file("f", b"");
    let b = build(&t.finish(), &[]);
    let s = b.snap();
    let x = &get(&s, "f").xattrs;
    assert_eq!(x.keys().collect::<Vec<_>>(), vec![&b"user.ok".to_vec()]);
    assert!(b.stderr().contains("longer than 255"), "{}", b.stderr());
    assert!(
        b.stderr().contains("no EROFS name prefix"),
        "{}",
        b.stderr()
    );
}

#[test]
fn t15_overlay_xattrs_in_the_stream_are_dropped_unless_kept() {
    let mut t = Tar::default();
    t.pax(b'x', &[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
        .file("forged", b"");
    let bytes = t.finish();
    let b = build(&bytes, &[]);
    assert!(get(&b.snap(), "forged").xattrs.is_empty());
    assert!(b.stderr().contains("overlay xattrs"), "{}", b.stderr());
    let kept = build(&bytes, &["--tar-keep-overlay-xattrs"]);
    assert_eq!(
        get(&kept.snap(), "forged").xattrs[&b"trusted.overlay.opaque"[..]],
        b"y"
    );
}

// ---------------------------------------------------------------------------------------
// Tree semantics (16-20)

#[test]
fn t16_implicit_parents_are_0755_root_owned_with_the_image_time_until_given() {
    let mut t = Tar::default();
    t.entry(h("a/b/c", b'0').owner(5, 6), b"deep");
    t.entry(h("a/", b'5').mode(0o700).owner(7, 8).mtime(99), b"");
    let b = build(&t.finish(), &[]);
    let s = b.snap();
    for (p, perm, owner, mtime) in [
        ("", 0o755, (0, 0), EPOCH),
        ("a/b", 0o755, (0, 0), EPOCH),
        ("a", 0o700, (7, 8), 99),
    ] {
        let e = get(&s, p);
        assert_eq!(
            (e.perm, (e.uid, e.gid), e.mtime),
            (perm, owner, Some((mtime, 0))),
            "{p:?}"
        );
    }
    assert_eq!(get(&s, "a/b/c").content, content(b"deep"));
    same_as_gnu_tar(&b, &["a/b"]);
}

#[test]
fn t17_later_entries_win_as_when_extracting() {
    let mut t = Tar::default();
    t.file("f", b"first")
        .entry(h("f", b'0').mode(0o600), b"second");
    t.dir("d")
        .file("d/child", b"kept")
        .entry(h("d", b'5').mode(0o711), b"");
    t.file("x", b"file").dir("x");
    t.entry(h("s", b'2').link("t1"), b"")
        .entry(h("s", b'2').link("t2"), b"");
    let compared = t.out.clone();
    // GNU tar does not replace a non-empty directory by a file (without
    // --recursive-unlink, which would also empty "d" above): this part is not compared.
    t.dir("y").file("y/z", b"gone").file("y", b"now a file");
    let b = build(&t.finish(), &[]);
    let s = b.snap();
    let f = get(&s, "f");
    assert_eq!((f.perm, f.content.clone()), (0o600, content(b"second")));
    assert_eq!(get(&s, "d").perm, 0o711);
    assert_eq!(get(&s, "d/child").content, content(b"kept"));
    assert_eq!(get(&s, "x").kind, 'd');
    assert_eq!(get(&s, "y").content, content(b"now a file"));
    assert!(!s.contains_key(&b"y/z"[..]));
    assert_eq!(get(&s, "s").content, "t2");
    same_as_gnu_tar(&build(&Tar { out: compared }.finish(), &[]), &[]);
}

#[test]
fn t18_hard_links_backward_only() {
    let mut t = Tar::default();
    t.file("a", b"old");
    t.entry(h("b", b'1').link("a"), b"");
    t.file("a", b"new");
    t.entry(h("c", b'1').link("a"), b"");
    t.entry(h("d", b'1').link("c"), b"");
    t.entry(h("a", b'1').link("a"), b"");
    let b = build(&t.finish(), &[]);
    let s = b.snap();
    assert_eq!(
        (get(&s, "b").content.clone(), get(&s, "b").nlink),
        (content(b"old"), 1)
    );
    for p in ["a", "c", "d"] {
        assert_eq!(
            (get(&s, p).content.clone(), get(&s, p).nlink),
            (content(b"new"), 3),
            "{p}"
        );
    }
    same_as_gnu_tar(&b, &[]);
    // A hard link entry with data (GNU tar cannot read this one): the data is skipped.
    let mut t = Tar::default();
    t.file("a", b"x")
        .entry(h("e", b'1').link("a"), b"ignored data")
        .file("z", b"z");
    let s = build(&t.finish(), &[]).snap();
    assert_eq!(
        (get(&s, "e").nlink, get(&s, "z").content.clone()),
        (2, content(b"z"))
    );

    let mut t = Tar::default();
    t.entry(h("early", b'1').link("later"), b"")
        .file("later", b"");
    refused(&t.finish(), &[], "early", 0);
    let mut t = Tar::default();
    t.file("x", b"")
        .entry(h("nowhere", b'1').link("missing"), b"");
    refused(&t.finish(), &[], "nowhere", 512);
    let mut t = Tar::default();
    t.dir("dir").entry(h("dirlink", b'1').link("dir"), b"");
    refused(&t.finish(), &[], "dirlink", 512);
}

#[test]
fn t19_root_entries_dots_double_slashes_trailing_slashes_and_empty_names() {
    let mut t = Tar::default();
    t.entry(h("./", b'5').mode(0o700).mtime(42).owner(1, 2), b"");
    t.entry(h(".//a//b/./", b'5'), b"");
    t.file("./a/b//f", b"f");
    t.entry(h("trailing/", b'0'), b"typeflag decides");
    t.entry(h("", b'5').mode(0o750).mtime(42).owner(1, 2), b"");
    let b = build(&t.finish(), &[]);
    let s = b.snap();
    let root = get(&s, "");
    assert_eq!(
        (root.perm, root.uid, root.gid, root.mtime),
        (0o750, 1, 2, Some((42, 0)))
    );
    assert_eq!(get(&s, "a/b/f").content, content(b"f"));
    assert_eq!(get(&s, "trailing").kind, 'f');
    let mut t = Tar::default();
    t.file(".", b"not a dir");
    refused(&t.finish(), &[], ".", 0);
}

#[test]
fn t20_escapes_and_paths_through_symlinks_are_refused() {
    for (name, why) in [
        ("../evil", "'..'"),
        ("a/../../evil", "'..'"),
        ("/abs/evil", "absolute"),
    ] {
        let mut t = Tar::default();
        t.file("ok", b"").file(name, b"x");
        let err = refused(&t.finish(), &[], name, 512);
        assert!(err.contains(why), "{err}");
    }
    let mut t = Tar::default();
    t.entry(h("esc", b'2').link("/etc"), b"")
        .file("esc/passwd", b"x");
    let err = refused(&t.finish(), &[], "esc/passwd", 512);
    assert!(err.contains("symbolic link"), "{err}");

    // erofs-utils' clamping, as an opt-in.
    let mut t = Tar::default();
    t.file("../evil", b"1")
        .file("a/../../evil2", b"2")
        .file("/abs/evil", b"3");
    let s = build(&t.finish(), &["--tar-clamp-paths"]).snap();
    assert_eq!(get(&s, "evil").content, content(b"1"));
    assert_eq!(get(&s, "evil2").content, content(b"2"));
    assert_eq!(get(&s, "abs/evil").content, content(b"3"));
}

// ---------------------------------------------------------------------------------------
// OCI (21-25)

fn whiteout_layer() -> Vec<u8> {
    let mut t = Tar::default();
    t.entry(h(".wh..wh..opq", b'0'), b"");
    t.entry(h("o/.wh..wh..opq", b'0'), b"");
    t.entry(h("o/", b'5').mode(0o750), b"");
    t.file("o/new", b"new");
    t.dir("d").file("d/.wh.gone", b"");
    t.entry(h("d/.wh.gonedir", b'5'), b"");
    t.file("d/replaced", b"x").file("d/.wh.replaced", b"");
    t.file("d/.wh.back", b"").file("d/back", b"back");
    t.entry(h(".wh..wh.plnk", b'5'), b"");
    t.finish()
}

#[test]
fn t21_to_23_whiteouts_become_overlayfs_whiteouts_and_opaque_dirs() {
    let b = build(&whiteout_layer(), &[]);
    let s = b.snap();
    assert_eq!(get(&s, "").xattrs[&b"trusted.overlay.opaque"[..]], b"y");
    let o = get(&s, "o");
    assert_eq!(o.perm, 0o750);
    assert_eq!(o.xattrs[&b"trusted.overlay.opaque"[..]], b"y");
    for w in ["d/gone", "d/gonedir", "d/replaced"] {
        let e = get(&s, w);
        assert_eq!((e.kind, e.content.as_str()), ('c', "0:0"), "{w}");
    }
    assert_eq!(get(&s, "d").xattrs[&b"trusted.overlay.origin"[..]], b"");
    assert_eq!(get(&s, "d/back").content, content(b"back"));
    assert!(
        s.keys().all(|k| !k.windows(4).any(|w| w == b".wh.")),
        "{:?}",
        s.keys()
    );
    assert!(b.stderr().contains("aufs-internal"), "{}", b.stderr());
}

#[test]
fn t24_ovlfs_strip_drops_whiteouts_and_no_aufs_keeps_them_as_files() {
    let s = build(&whiteout_layer(), &["--ovlfs-strip"]).snap();
    assert!(get(&s, "").xattrs.is_empty());
    assert!(get(&s, "o").xattrs.is_empty());
    assert!(!s.contains_key(&b"d/gone"[..]));
    assert_eq!(get(&s, "d/replaced").content, content(b"x"));
    let s = build(&whiteout_layer(), &["--no-aufs"]).snap();
    assert_eq!(get(&s, "d/.wh.gone").kind, 'f');
    assert_eq!(get(&s, "o/.wh..wh..opq").kind, 'f');
}

#[test]
fn t25_a_layer_pair_mounts_as_overlayfs_lowers_with_deletions_and_opaque_dirs() {
    let mut base = Tar::default();
    base.file("keep", b"k").file("deleted", b"d");
    base.dir("dir")
        .file("dir/old", b"o")
        .dir("opaque")
        .file("opaque/hidden", b"h");
    let lower = build(&base.finish(), &[]);
    let mut upper = Tar::default();
    upper.file(".wh.deleted", b"");
    upper.file("dir/.wh.old", b"").file("dir/added", b"a");
    upper
        .file("opaque/.wh..wh..opq", b"")
        .file("opaque/fresh", b"f");
    let upper = build(&upper.finish(), &[]);
    lower.ok();
    upper.ok();
    let (Some(l), Some(u)) = (Mount::new(&lower.img), Mount::new(&upper.img)) else {
        return;
    };
    let merged = tempdir();
    let opts = format!("lowerdir={}:{}", u.path().display(), l.path().display());
    let out = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(merged.path())
        .output()
        .unwrap();
    if !out.status.success() {
        skip_or_fail(&format!(
            "overlay mount: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
        return;
    }
    let files = files_in(merged.path());
    let _ = Command::new("umount").arg(merged.path()).status();
    let names: Vec<String> = files
        .iter()
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    assert_eq!(
        names,
        ["dir", "dir/added", "keep", "opaque", "opaque/fresh"],
        "merged view"
    );
}

fn files_in(root: &Path) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = snap_dir(root, ALL, &[])
        .into_keys()
        .filter(|k| !k.is_empty())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// Streams (26-29)

#[test]
fn t26_end_markers_garbage_after_the_end_and_concatenated_archives() {
    let mut t = Tar::default();
    t.file("a", b"a");
    let one = t.finish();
    let body = &one[..one.len() - 1024];
    // No end marker at all, or a single zero block: accepted with a warning.
    for (bytes, warn) in [
        (body.to_vec(), "without an end-of-archive marker"),
        ([body, &[0u8; 512]].concat(), "only one zero block"),
    ] {
        let b = build(&bytes, &[]);
        assert_eq!(get(&b.snap(), "a").content, content(b"a"));
        assert!(b.stderr().contains(warn), "{}", b.stderr());
    }
    // Garbage after the end marker is never read as entries.
    let b = build(&[&one[..], b"garbage that is not a header"].concat(), &[]);
    assert_eq!(b.snap().len(), 2);
    // Concatenated archives: the second is read only with --tar-ignore-zeros.
    let mut t = Tar::default();
    t.file("b", b"b");
    let two = [&one[..], &t.finish()[..]].concat();
    assert!(!build(&two, &[]).snap().contains_key(&b"b"[..]));
    assert!(
        build(&two, &["--tar-ignore-zeros"])
            .snap()
            .contains_key(&b"b"[..])
    );
}

#[test]
fn t27_truncated_streams_are_refused() {
    let mut t = Tar::default();
    t.file("first", b"").file("victim", &[1u8; 1000]);
    let full = t.finish();
    // In the second header, in its data, in its padding.
    let err = refused(&full[..512 + 300], &[], "", 512);
    assert!(err.contains("truncated inside a header"), "{err}");
    refused(&full[..1024 + 700], &[], "victim", 1024 + 700);
    refused(&full[..1024 + 1010], &[], "victim", 1024 + 1010);
    let err = refused(&full[..300], &[], "", 0);
    assert!(err.contains("shorter than one tar block"), "{err}");
    let err = refused(b"", &[], "", 0);
    assert!(err.contains("empty input"), "{err}");
}

#[test]
fn t28_gzip_zstd_and_xz_give_the_same_image_and_the_diff_id() {
    let mut t = Tar::default();
    t.file("a", &bytes(1, 300_000)).file("b", b"b");
    let plain = t.finish();
    let dir = tempdir();
    let tar = dir.path().join("layer.tar");
    std::fs::write(&tar, &plain).unwrap();
    let diff_id = format!("sha256:{:x}\n", Sha256::digest(&plain));
    let reference = mkfs_tar_file(&tar, &["--print-diff-id", "-q"]);
    assert_eq!(String::from_utf8_lossy(&reference.ok().out.stdout), diff_id);
    let want = std::fs::read(&reference.img).unwrap();
    // Multi-member gzip: two halves compressed separately.
    let half = plain.len() / 2;
    let mut gz = Vec::new();
    for part in [&plain[..half], &plain[half..]] {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, part).unwrap();
        gz.extend(e.finish().unwrap());
    }
    let mut inputs = vec![("gz", gz, "--ungzip")];
    for (tool, ext, flag) in [("zstd", "zst", "--unzstd"), ("xz", "xz", "--unxz")] {
        if !have(tool) {
            skip_or_fail(&format!("{tool} is not installed"));
            continue;
        }
        // Two frames or streams, one per half.
        let mut data = Vec::new();
        for part in [
            format!("head -c {half} {}", tar.display()),
            format!("tail -c +{} {}", half + 1, tar.display()),
        ] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("{part} | {tool} -c -q"))
                .output()
                .unwrap();
            assert!(out.status.success());
            data.extend(out.stdout);
        }
        inputs.push((ext, data, flag));
    }
    for (ext, data, flag) in inputs {
        let p = dir.path().join(format!("layer.tar.{ext}"));
        std::fs::write(&p, &data).unwrap();
        for args in [
            vec!["--print-diff-id", "-q"],
            vec!["--print-diff-id", "-q", flag],
        ] {
            let b = mkfs_tar_file(&p, &args);
            assert_eq!(
                String::from_utf8_lossy(&b.ok().out.stdout),
                diff_id,
                "{ext} {args:?}"
            );
            assert_eq!(std::fs::read(&b.img).unwrap(), want, "{ext} {args:?}");
        }
        // --ungzip=FILE-style dumps equal the plain tar.
        let dump = dir.path().join(format!("dump.{ext}"));
        let arg = format!("{flag}={}", dump.display());
        mkfs_tar_file(&p, &[arg.as_str(), "-q"]).ok();
        assert_eq!(std::fs::read(&dump).unwrap(), plain, "{ext} dump");
    }
    // From standard input: the same bytes.
    let img = dir.path().join("stdin.img");
    let mut child = Command::new(mkfs_bin())
        .args([
            "--tar=f",
            "-T",
            &EPOCH.to_string(),
            "-U",
            "clear",
            "-q",
            "-",
        ])
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &plain).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    assert_eq!(std::fs::read(&img).unwrap(), want, "stdin");
    // A forced codec that does not match, and compressed garbage.
    let b = mkfs_tar_file(&tar, &["--unzstd"]);
    assert!(!b.out.status.success() && !b.img.exists());
    let bad = dir.path().join("bad.gz");
    std::fs::write(&bad, [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 1, 2, 3]).unwrap();
    let b = mkfs_tar_file(&bad, &[]);
    assert!(!b.out.status.success() && !b.img.exists(), "{}", b.stderr());
}

/// A 1 MiB + 4 KiB file with data at its head, in its middle, and at its end; more than
/// four segments, so that the old GNU format needs extension blocks.
fn sparse_source(dir: &Path) -> (PathBuf, Vec<u8>) {
    let src = dir.join("src");
    std::fs::create_dir(&src).unwrap();
    let mut want = vec![0u8; (1 << 20) + 4096];
    let f = std::fs::File::create(src.join("sparse")).unwrap();
    f.set_len(want.len() as u64).unwrap();
    for k in 0..6u64 {
        let at = k * 200_000;
        let data = bytes(k, 5000);
        std::os::unix::fs::FileExt::write_all_at(&f, &data, at).unwrap();
        want[at as usize..at as usize + 5000].copy_from_slice(&data);
    }
    let tail = b"tail";
    let end = want.len() - 4;
    std::os::unix::fs::FileExt::write_all_at(&f, tail, end as u64).unwrap();
    want[end..].copy_from_slice(tail);
    (src, want)
}

#[test]
fn t29_gnu_and_pax_sparse_files_are_expanded_with_their_holes_kept() {
    if !have("tar") {
        skip_or_fail("GNU tar is not installed");
        return;
    }
    let dir = tempdir();
    let (src, want) = sparse_source(dir.path());
    for (fmt, version) in [
        ("gnu", None),
        ("posix", Some("0.0")),
        ("posix", Some("0.1")),
        ("posix", Some("1.0")),
    ] {
        let tar = dir
            .path()
            .join(format!("{fmt}-{}.tar", version.unwrap_or("old")));
        let mut cmd = Command::new("tar");
        cmd.args(["--sparse", &format!("--format={fmt}"), "-cf"])
            .arg(&tar);
        if let Some(v) = version {
            cmd.arg(format!("--sparse-version={v}"));
        }
        run_ok(cmd.arg("-C").arg(&src).arg("sparse"), "tar --sparse");
        let b = mkfs_tar_file(&tar, &[]);
        let s = b.snap();
        assert_eq!(
            get(&s, "sparse").content,
            content(&want),
            "{fmt} {version:?}"
        );
        let img_len = std::fs::metadata(&b.img).unwrap().len();
        assert!(
            img_len < 200_000,
            "{fmt} {version:?}: holes were written ({img_len} bytes)"
        );
        if let Some(m) = Mount::new(&b.img) {
            assert_eq!(std::fs::read(m.path().join("sparse")).unwrap(), want);
        }
    }
    // An unknown PAX sparse version is refused.
    let mut t = Tar::default();
    t.pax(
        b'x',
        &[("GNU.sparse.major", b"2"), ("GNU.sparse.minor", b"0")],
    )
    .file("future-sparse", b"");
    let err = refused(&t.finish(), &[], "future-sparse", 1024);
    assert!(err.contains("unsupported sparse format"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Data, fingerprints, determinism (30, 33)

#[test]
fn t30_fingerprints_of_streamed_files() {
    let block = bytes(3, 4096);
    let big = bytes(4, (9 << 20) + 17);
    let mut t = Tar::default();
    t.file("empty", b"")
        .file("one", b"1")
        .file("block", &block)
        .file("big", &big);
    t.entry(h("linked", b'1').link("one"), b"");
    t.file("over", b"first").file("over", b"second");
    let b = build(&t.finish(), &["--fingerprint=sha256"]);
    b.ok();
    let img = erofs_reader::Image::open(&b.img).unwrap();
    let fp = |p: &str| {
        let ino = img.lookup(p.as_bytes()).unwrap();
        img.xattrs(&ino)
            .unwrap()
            .into_iter()
            .find(|x| x.name == b"trusted.erofs.fingerprint")
            .map(|x| x.value)
    };
    assert_eq!(fp("/empty"), None);
    for (p, data) in [
        ("/one", &b"1"[..]),
        ("/block", &block),
        ("/big", &big),
        ("/linked", b"1"),
        ("/over", b"second"),
    ] {
        assert_eq!(fp(p), Some(erofs_testkit::fingerprint_of(data)), "{p}");
    }
}

#[test]
fn t33_same_input_same_bytes_whatever_the_user_and_threads() {
    let mut t = Tar::default();
    t.dir("d")
        .file("d/a", &bytes(5, 100_000))
        .entry(h("d/s", b'2').link("a"), b"");
    let bytes_in = t.finish();
    let one = std::fs::read(&build(&bytes_in, &["-j1"]).ok().img).unwrap();
    let four = std::fs::read(&build(&bytes_in, &["-j4"]).ok().img).unwrap();
    assert_eq!(one, four);
    // Fingerprints are hashed inline with -j1 and on a thread of their own otherwise.
    let mut t = Tar::default();
    for k in 0..40u64 {
        t.file(&format!("f{k}"), &bytes(k, (k as usize * 7919) % 300_000));
    }
    t.entry(h("hl", b'1').link("f3"), b"");
    t.file("f3", b"replaced");
    let bytes_in = t.finish();
    let fp =
        |j: &str| std::fs::read(&build(&bytes_in, &[j, "--fingerprint=sha256"]).ok().img).unwrap();
    let one = fp("-j1");
    assert_eq!(one, fp("-j4"));
    let s = build(&bytes_in, &["-j4", "--fingerprint=sha256"]).snap();
    let old = bytes(3, 3 * 7919);
    let want = erofs_format::xattr::sha256_fingerprint(&Sha256::digest(&old).into());
    assert_eq!(
        get(&s, "hl").xattrs.get(&b"trusted.erofs.fingerprint"[..]),
        Some(&want.to_vec())
    );
}

#[test]
fn containerds_command_with_the_layer_on_stdin_makes_a_mountable_image() {
    let mut t = Tar::default();
    t.dir("etc")
        .file("etc/os-release", b"ID=test\n")
        .file(".wh.old", b"");
    let layer = t.finish();
    let dir = tempdir();
    let img = dir.path().join("layer.erofs");
    let mut child = Command::new(mkfs_bin())
        .args([
            "--tar=f",
            "--aufs",
            "--quiet",
            "-Enoinline_data",
            "-U",
            "6a4ac6d4-9e4d-4d9f-bb4c-1f5e3f0c2a11",
            "-",
        ])
        .arg(&img)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &layer).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let s = snap_image(&img, ALL);
    assert_eq!(get(&s, "etc/os-release").content, content(b"ID=test\n"));
    assert_eq!(get(&s, "old").kind, 'c');
    if let Some(m) = Mount::new(&img) {
        assert_eq!(
            std::fs::read(m.path().join("etc/os-release")).unwrap(),
            b"ID=test\n"
        );
    }
}

/// An archive with every extension the reader knows, for the mutation test.
fn varied_archive() -> Vec<u8> {
    let mut t = Tar::default();
    t.pax(b'g', &[("SCHILY.xattr.user.g", b"1")]);
    t.entry(h("./", b'5'), b"").dir("d");
    t.pax(
        b'x',
        &[
            ("path", b"d/pax-name"),
            ("mtime", b"-1.25"),
            ("LIBARCHIVE.xattr.user.a%3Db", b"aGk"),
        ],
    )
    .file("x", b"pax data");
    t.gnu_long(b'L', &format!("d/{}", "l".repeat(150)))
        .file("y", &[9u8; 1500]);
    t.entry(h("d/hard", b'1').link("d/pax-name"), b"");
    t.entry(h("d/sym", b'2').link("pax-name"), b"");
    // PAX sparse 0.1 and 1.0: 4 data bytes at 0 and 8 at 10000 of a 20000-byte file.
    t.pax(
        b'x',
        &[
            ("GNU.sparse.size", b"20000"),
            ("GNU.sparse.numblocks", b"2"),
            ("GNU.sparse.map", b"0,4,10000,8"),
        ],
    )
    .file("d/sparse01", b"headTAILTAIL");
    let mut data = b"2\n0\n4\n10000\n8\n".to_vec();
    data.resize(512, 0);
    data.extend_from_slice(b"headTAILTAIL");
    t.pax(
        b'x',
        &[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"d/sparse10"),
            ("GNU.sparse.realsize", b"20000"),
        ],
    )
    .entry(h("d/GNUSparseFile.0/sparse10", b'0'), &data);
    t.file("d/.wh.gone", b"").file(".wh..wh..opq", b"");
    t.finish()
}

#[test]
fn pax_sparse_maps_written_by_hand_expand_to_their_real_size() {
    let s = build(&varied_archive(), &[]).snap();
    let mut want = vec![0u8; 20000];
    want[..4].copy_from_slice(b"head");
    want[10000..10008].copy_from_slice(b"TAILTAIL");
    assert_eq!(get(&s, "d/sparse01").content, content(&want));
    assert_eq!(get(&s, "d/sparse10").content, content(&want));
    assert!(!s.keys().any(|k| k.starts_with(b"d/GNUSparseFile")));
}

#[test]
fn corrupt_streams_fail_cleanly_and_never_panic() {
    use erofs_builder::tar_source::{TarOptions, TarSource};
    let seed = varied_archive();
    let mut rng = erofs_testkit::Rng(0x5eed_7a12);
    let mut options = erofs_builder::Options::default();
    options.timestamp = Some(EPOCH);
    options.uuid = erofs_builder::UuidChoice::Clear;
    options.threads = 1;
    let (mut ok, mut refused) = (0, 0);
    for round in 0..2000 {
        let mut bytes = seed.clone();
        let kind = rng.next_u64() % 4;
        if kind == 0 {
            bytes.truncate((rng.next_u64() % seed.len() as u64) as usize);
        } else {
            for _ in 0..=kind {
                let at = (rng.next_u64() % bytes.len() as u64) as usize;
                bytes[at] = rng.next_u64() as u8;
            }
        }
        let result = std::panic::catch_unwind(|| {
            let mut src =
                TarSource::new(std::io::Cursor::new(bytes.clone()), TarOptions::default());
            let mut out = Vec::new();
            erofs_builder::build_to_writer(&mut src, &mut out, &options, &erofs_builder::NoProgress)
                .map(|_| out)
        });
        match result {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(_)) => refused += 1,
            Err(_) => panic!("round {round}: the build panicked"),
        }
    }
    // Both outcomes occur, so the mutations reach the parser's checks and past them.
    assert!(ok > 0 && refused > 0, "{ok} built, {refused} refused");
}

#[test]
fn help_mentions_tar_equals_as_containerd_probes_for_it() {
    let out = Command::new(mkfs_bin()).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--tar="));
}

#[test]
fn headerballs_keep_sizes_and_read_as_zeroes() {
    let mut t = Tar::default();
    // Headers only: the size field says 10000, no data follows.
    let mut e = h("f", b'0');
    e.size = Some(10_000);
    t.header(&e, 10_000);
    t.file("g", b"");
    let b = build(&t.finish(), &["--tar=headerball"]);
    let s = b.snap();
    assert_eq!(get(&s, "f").content, content(&[0u8; 10_000]));
    assert_eq!(get(&s, "g").content, content(b""));
}

#[test]
fn names_with_nul_bytes_are_refused() {
    let mut t = Tar::default();
    t.pax(b'x', &[("path", b"bad\0name")]).file("x", b"");
    let err = refused(&t.finish(), &[], "bad", 1024);
    assert!(err.contains("NUL"), "{err}");
}

/// Attaches `file` read-only to a loop device for as long as the value lives.
struct Loop(String);

impl Loop {
    fn new(file: &Path) -> Option<Self> {
        let out = Command::new("losetup")
            .args(["-f", "--show", "-r"])
            .arg(file)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| Self(String::from_utf8_lossy(&out.stdout).trim().to_string()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// The archive of the index-mode tests: small, multi-block, empty, hard-linked, replaced.
fn index_archive() -> Vec<u8> {
    let big = bytes(7, 300_000);
    let mut t = Tar::default();
    t.dir("d")
        .file("d/small", b"small")
        .file("d/big", &big)
        .file("empty", b"");
    t.entry(h("d/link", b'1').link("d/big"), b"");
    t.entry(h("d/sym", b'2').link("big"), b"");
    t.file("d/small", b"replaced");
    t.finish()
}

#[test]
fn t32_single_file_form_the_index_with_its_tar_appended_mounts_alone() {
    // containerd's tar-index layer: `--tar=i`, then the tar appended to the index; the
    // device table places device 1 right after the index, so no device= is needed.
    let b = build(&index_archive(), &["--tar=i"]);
    b.ok();
    let index = std::fs::read(&b.img).unwrap();
    let blocks = index.len() as u64 / 512;
    assert_eq!(index.len() % 512, 0);
    let sb = &index[1024..1024 + 128];
    let devt = u64::from(u16::from_le_bytes(sb[88..90].try_into().unwrap())) * 128;
    let slot = &index[devt as usize..devt as usize + 128];
    let uniaddr = u32::from_le_bytes(slot[68..72].try_into().unwrap());
    assert_eq!(
        u64::from(uniaddr),
        blocks,
        "device 1 starts where the index ends"
    );
    // Without the tar, the data is on a device the reader does not have (not damage).
    let alone = erofs_reader::Image::open(&b.img).unwrap();
    let big = alone.lookup(b"/d/big").unwrap();
    assert!(matches!(
        alone.read_to_vec(&big, 1 << 20),
        Err(erofs_reader::Error::ExtraDevice { device: 1, .. })
    ));
    let mut single = index;
    single.extend_from_slice(&std::fs::read(b.tar()).unwrap());
    std::fs::write(&b.img, &single).unwrap();
    // GNU tar leaves "d" with the time its replaced child was extracted.
    same_as_gnu_tar(&b, &["d"]);
}

/// Copies each file's bytes from the tar to its place in the image, as a consumer of
/// mkfs.erofs's map file does (lines: block, blocks, tar offset in hex, zero bytes at the
/// end of the last block in decimal).
fn apply_map(map: &str, tar: &[u8], img: &mut [u8], blksz: usize) -> usize {
    let mut lines = 0;
    for line in map.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(f.len() == 3 || f.len() == 4, "map line {line:?}");
        let blk = usize::from_str_radix(f[0], 16).unwrap();
        let n = usize::from_str_radix(f[1], 16).unwrap();
        let off = usize::from_str_radix(f[2], 16).unwrap();
        let zeroed: usize = f.get(3).map_or(0, |z| z.parse().unwrap());
        let len = n * blksz - zeroed;
        let at = blk * blksz;
        assert!(
            at + n * blksz <= img.len(),
            "map line {line:?} past the image end"
        );
        img[at..at + len].copy_from_slice(&tar[off..off + len]);
        lines += 1;
    }
    lines
}

#[test]
fn t32_map_file_form_reserves_the_data_region_and_lists_where_each_file_goes() {
    let archive = index_archive();
    let dir = tempdir();
    let tar = dir.path().join("in.tar");
    std::fs::write(&tar, &archive).unwrap();
    let map_path = dir.path().join("map.txt");
    let mode = format!("--tar=i,{}", map_path.display());
    let b = run_mkfs(dir, &tar, &[&mode]);
    b.ok();
    let map = std::fs::read_to_string(&map_path).unwrap();
    let mut img = std::fs::read(&b.img).unwrap();
    // The default block size, no device table, and the reserved region ends the image.
    let sb = &img[1024..1024 + 128];
    assert_eq!(sb[12], 12, "blkszbits");
    assert_eq!(u16::from_le_bytes(sb[86..88].try_into().unwrap()), 0);
    assert_eq!(
        u64::from(u32::from_le_bytes(sb[36..40].try_into().unwrap())) * 4096,
        img.len() as u64
    );
    // One line per non-empty file (the hard link shares its target's).
    assert_eq!(apply_map(&map, &archive, &mut img, 4096), 2, "{map}");
    assert!(
        map.lines().any(|l| l.split_whitespace().count() == 4),
        "{map}"
    );
    std::fs::write(&b.img, &img).unwrap();
    same_as_gnu_tar(&b, &["d"]);
    // A map file goes with index mode only.
    let err = build(&archive, &["--tar=f,map2.txt"]);
    assert!(!err.out.status.success());
    assert!(err.stderr().contains("--tar=i"), "{}", err.stderr());
}

#[test]
fn t32_index_mode_points_into_the_tar_and_mounts_with_it_as_device() {
    let big = bytes(7, 300_000);
    let mut t = Tar::default();
    t.dir("d")
        .file("d/small", b"small")
        .file("d/big", &big)
        .file("empty", b"");
    t.entry(h("d/link", b'1').link("d/big"), b"");
    t.entry(h("d/sym", b'2').link("big"), b"");
    t.file("d/small", b"replaced");
    let bytes_in = t.finish();
    // Fingerprints too: hashed while the stream goes past (erofs-utils has none here).
    let copied = build(&bytes_in, &["--fingerprint=sha256"]);
    let want = copied.snap();
    let b = build(&bytes_in, &["--tar=i", "--fingerprint=sha256"]);
    b.ok();
    let img_len = std::fs::metadata(&b.img).unwrap().len();
    assert!(img_len < 16 * 1024, "the index holds data: {img_len} bytes");
    // The superblock: 512-byte blocks, one extra device, and the device table feature.
    let sb = &std::fs::read(&b.img).unwrap()[1024..1024 + 128];
    assert_eq!(sb[12], 9, "blkszbits");
    assert_ne!(
        u32::from_le_bytes(sb[80..84].try_into().unwrap()) & 0x8,
        0,
        "device_table"
    );
    assert_eq!(u16::from_le_bytes(sb[86..88].try_into().unwrap()), 1);
    if !is_root() {
        skip_or_fail("mounting with a device needs root");
        return;
    }
    let Some(dev) = Loop::new(&b.tar()) else {
        skip_or_fail("losetup failed");
        return;
    };
    let mnt = tempdir();
    let out = Command::new("mount")
        .args(["-t", "erofs", "-o", &format!("ro,device={}", dev.0)])
        .arg(&b.img)
        .arg(mnt.path())
        .output()
        .unwrap();
    if !out.status.success() {
        skip_or_fail(&format!("mount: {}", String::from_utf8_lossy(&out.stderr)));
        return;
    }
    let got = snap_dir(mnt.path(), ALL, &[]);
    let _ = Command::new("umount").arg(mnt.path()).status();
    assert_same("--tar=i mounted with the tar vs --tar=f", &want, &got);

    assert!(
        got[&b"d/big"[..]]
            .xattrs
            .contains_key(&b"trusted.erofs.fingerprint"[..]),
        "{:?}",
        got[&b"d/big"[..]]
    );
    // No sparse entries: their stored data is condensed.
    let mut t = Tar::default();
    t.pax(
        b'x',
        &[("GNU.sparse.size", b"9000"), ("GNU.sparse.map", b"0,1")],
    )
    .file("sparse", b"x");
    refused(&t.finish(), &["--tar=i"], "sparse", 1024);
}

/// `getfacl -n` of every entry under `root` (sorted, relative paths).
fn acls(root: &Path, entries: &[&str]) -> String {
    let out = Command::new("getfacl")
        .args(["-n", "-p"])
        .args(entries)
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn posix_acls_from_gnu_tar_become_the_kernels_acl_xattrs() {
    if !is_root() {
        skip_or_fail("setting ACLs on files of other owners and mounting need root");
        return;
    }
    if !have("setfacl") || !have("getfacl") {
        skip_or_fail("setfacl/getfacl are missing (Debian package acl)");
        return;
    }
    let dir = tempdir();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("f"), b"acl\n").unwrap();
    std::fs::write(src.join("plain"), b"no acl\n").unwrap();
    // Only a default ACL: GNU tar still writes the (minimal) access ACL, which extraction
    // turns into mode bits, not an xattr.
    std::fs::create_dir(src.join("only-default")).unwrap();
    run_ok(
        Command::new("setfacl")
            .args(["-d", "-m", "u:77:r-x"])
            .arg(src.join("only-default")),
        "setfacl only-default",
    );
    // A named user and group (numeric: no such names here), a mask, and a directory with
    // a default ACL naming a group GNU tar writes by name (root's group 0).
    run_ok(
        Command::new("setfacl")
            .args(["-m", "u:1234:rwx,g:55:r-x,m::rwx"])
            .arg(src.join("f")),
        "setfacl f",
    );
    run_ok(
        Command::new("setfacl")
            .args(["-m", "u:4321:r-x", "-d", "-m", "g:0:rwx,u:99:r--"])
            .arg(src.join("d")),
        "setfacl d",
    );
    let tar = dir.path().join("in.tar");
    run_ok(
        Command::new("tar")
            .args(["--acls", "--format=posix", "-C"])
            .arg(&src)
            .args(["-cf"])
            .arg(&tar)
            .args(["f", "plain", "d", "only-default"]),
        "tar --acls",
    );
    let b = run_mkfs(dir, &tar, &[]);
    b.ok();
    assert!(!b.stderr().contains("acl"), "{}", b.stderr());
    let Some(m) = Mount::new(&b.img) else {
        return;
    };
    let entries = ["f", "plain", "d", "only-default"];
    let want = acls(&src, &entries);
    assert!(
        want.contains("user:1234:rwx") && want.contains("default:group::"),
        "{want}"
    );
    assert_eq!(acls(m.path(), &entries), want);
    // The xattrs too, byte for byte: no access ACL where the source has none.
    let xattrs = |root: &Path| {
        let s = snap_dir(root, ALL, &[]);
        entries.map(|e| s[e.as_bytes()].xattrs.clone())
    };
    assert_eq!(xattrs(m.path()), xattrs(&src));
}

#[test]
fn t31_same_tree_as_erofs_utils_tar_mode_when_one_is_given() {
    // Debian's mkfs.erofs 1.5 has no --tar: this comparison runs only against an
    // erofs-utils named by EROFS_UTILS_BIN (1.7 or later), as the bench's does.
    let Some(utils) = std::env::var_os("EROFS_UTILS_BIN") else {
        eprintln!("t31: EROFS_UTILS_BIN is not set; no erofs-utils --tar to compare with");
        return;
    };
    let help = Command::new(&utils).arg("--help").output().unwrap();
    if !String::from_utf8_lossy(&help.stdout).contains("--tar=")
        && !String::from_utf8_lossy(&help.stderr).contains("--tar=")
    {
        skip_or_fail("EROFS_UTILS_BIN has no --tar");
        return;
    }
    // Every directory explicit (erofs-utils makes implicit ones 0777), a root entry, and
    // a mix of types, ids, nanosecond times and xattrs.
    let mut t = Tar::default();
    t.entry(h("./", b'5').mode(0o755), b"");
    t.dir("d").file("d/f", &bytes(3, 9000)).file("empty", b"");
    t.entry(h("d/hl", b'1').link("d/f"), b"");
    t.entry(h("sym", b'2').link("d/f"), b"");
    t.entry(h("fifo", b'6'), b"");
    t.pax(
        b'x',
        &[
            ("mtime", b"1700000000.123456789"),
            ("uid", b"70000"),
            ("SCHILY.xattr.user.k", b"v\0w"),
        ],
    )
    .file("d/pax", b"pax");
    let b = build(&t.finish(), &[]);
    b.ok();
    let theirs = b.dir.path().join("theirs.img");
    run_ok(
        Command::new(&utils)
            .args([
                "--tar=f",
                "--quiet",
                "-T",
                &EPOCH.to_string(),
                "--mkfs-time",
            ])
            .args(["-U", "clear"])
            .arg(&theirs)
            .arg(b.tar()),
        "erofs-utils --tar=f",
    );
    if have("fsck.erofs") {
        run_ok(Command::new("fsck.erofs").arg(&b.img), "fsck.erofs of ours");
    }
    let (Some(ours), Some(them)) = (Mount::new(&b.img), Mount::new(&theirs)) else {
        return;
    };
    assert_same(
        "erofs-utils --tar=f vs ours, both mounted",
        &snap_dir(them.path(), ALL, &[]),
        &snap_dir(ours.path(), ALL, &[]),
    );
}

#[test]
fn t04_a_file_past_8_gib_through_pax_size_and_a_sparse_map() {
    // Sizes of 8 GiB and more do not fit the octal field; PAX (and a sparse map, so that
    // the test stores four bytes) carries them. The file keeps its holes (null chunks).
    let real: u64 = (9 << 30) + 3;
    let mut data = b"1\n8589934592\n4\n".to_vec();
    data.resize(512, 0);
    data.extend_from_slice(b"past");
    let mut t = Tar::default();
    let real_s = real.to_string();
    t.pax(
        b'x',
        &[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"huge"),
            ("GNU.sparse.realsize", real_s.as_bytes()),
            ("size", b"516"),
        ],
    )
    .entry(h("GNUSparseFile.0/huge", b'0'), &data);
    let b = build(&t.finish(), &[]);
    b.ok();
    let len = std::fs::metadata(&b.img).unwrap().len();
    assert!(len < 16 << 20, "the holes take room: {len} bytes");
    let img = erofs_reader::Image::open(&b.img).unwrap();
    let ino = img.lookup(b"/huge").unwrap();
    assert_eq!(ino.size, real);
    let mut buf = [9u8; 8];
    assert_eq!(img.read_at(&ino, 8 << 30, &mut buf).unwrap(), 8);
    assert_eq!(&buf, b"past\0\0\0\0");
    assert_eq!(img.read_at(&ino, 4 << 30, &mut buf).unwrap(), 8);
    assert_eq!(buf, [0; 8]);
    if let Some(m) = Mount::new(&b.img) {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(m.path().join("huge")).unwrap();
        assert_eq!(f.metadata().unwrap().len(), real);
        let mut buf = [9u8; 7];
        f.read_exact_at(&mut buf, (8 << 30) - 3).unwrap();
        assert_eq!(&buf, b"\0\0\0past");
    }
}
