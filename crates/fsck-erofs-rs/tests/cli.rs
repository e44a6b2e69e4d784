//! fsck.erofs-rs, run as a binary: checks of the reference images, corrupt images, and
//! extraction compared with the source tree.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use erofs_reader::Image;
use erofs_testkit::{have, hex, is_root, read_xattrs, skip_or_fail};
use sha2::{Digest, Sha256};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn images_dir() -> PathBuf {
    match std::env::var_os("EROFS_TESTDATA_IMAGES") {
        Some(d) => PathBuf::from(d),
        None => repo().join("testdata/images"),
    }
}

fn image(name: &str) -> PathBuf {
    images_dir().join(format!("{name}.erofs"))
}

fn fsck(args: &[&OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsck-erofs-rs"))
        .args(args)
        .output()
        .expect("run fsck-erofs-rs")
}

fn fsck_s(args: &[&str]) -> Output {
    let a: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    fsck(&a)
}

// ---------------------------------------------------------------- tree snapshots

#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    ty: char,
    perm: u32,
    uid: u32,
    gid: u32,
    size: u64,
    sha256: Option<String>,
    target: Option<Vec<u8>>,
    rdev: Option<(u32, u32)>,
    mtime: i64,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// Path -> node.
type Nodes = BTreeMap<Vec<u8>, Node>;
/// Sets of paths sharing an inode.
type LinkGroups = BTreeSet<BTreeSet<Vec<u8>>>;

/// Path -> node, plus the hard-link groups (sets of paths sharing an inode).
fn snapshot(root: &Path) -> (Nodes, LinkGroups) {
    let mut nodes = BTreeMap::new();
    let mut by_ino: BTreeMap<u64, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), b"/".to_vec())];
    while let Some((p, rel)) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).expect("lstat");
        let ft = m.file_type();
        let ty = if ft.is_dir() {
            'd'
        } else if ft.is_file() {
            'f'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else if ft.is_fifo() {
            'p'
        } else {
            's'
        };
        let node = Node {
            ty,
            perm: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: if ty == 'f' { m.len() } else { 0 },
            sha256: (ty == 'f').then(|| hex(&Sha256::digest(std::fs::read(&p).unwrap()))),
            target: (ty == 'l').then(|| {
                std::fs::read_link(&p)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            }),
            rdev: matches!(ty, 'c' | 'b').then(|| {
                let d = m.rdev();
                (rustix::fs::major(d), rustix::fs::minor(d))
            }),
            mtime: m.mtime(),
            xattrs: read_xattrs(&p),
        };
        if ty != 'd' {
            by_ino.entry(m.ino()).or_default().insert(rel.clone());
        }
        nodes.insert(rel.clone(), node);
        if ty == 'd' {
            for e in std::fs::read_dir(&p).unwrap() {
                let e = e.unwrap();
                let mut r = rel.clone();
                if r != b"/" {
                    r.push(b'/');
                }
                r.extend_from_slice(e.file_name().as_bytes());
                stack.push((e.path(), r));
            }
        }
    }
    (nodes, by_ino.into_values().collect())
}

fn assert_same_tree(got: &Path, want: &Path) {
    let (g, gl) = snapshot(got);
    let (w, wl) = snapshot(want);
    let gk: BTreeSet<_> = g.keys().collect();
    let wk: BTreeSet<_> = w.keys().collect();
    assert_eq!(gk, wk, "same set of paths");
    for (path, want) in &w {
        // The extraction root is the image root; compare everything but its own owner,
        // which belongs to the test's temporary directory.
        assert_eq!(&g[path], want, "{}", path.escape_ascii());
    }
    assert_eq!(gl, wl, "hard-link groups");
    assert!(w.len() > 2500, "the reference tree is big");
    assert!(
        wl.iter().any(|g| g.len() >= 3),
        "a hard-link group of three exists"
    );
}

// ---------------------------------------------------------------- checks

#[test]
fn every_reference_image_is_clean() {
    let mut n = 0;
    for e in std::fs::read_dir(images_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "erofs") {
            continue;
        }
        let out = fsck(&[p.as_os_str(), OsStr::new("--json")]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["clean"], true, "{}: {v}", p.display());
        assert_eq!(out.status.code(), Some(0), "{}", p.display());
        assert!(v["check"]["inodes"].as_u64().unwrap() > 50);
        assert_eq!(v["check"]["problems"], serde_json::json!([]));
        n += 1;
    }
    assert!(n >= 5);
}

fn fix_checksum(b: &mut [u8]) {
    erofs_format::seal_checksum(b, 12);
}

/// Writes `bytes` to a temporary image, runs fsck with `--json`, returns (exit, json).
fn fsck_bytes(bytes: &[u8], extra: &[&str]) -> (Option<i32>, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("img.erofs");
    std::fs::write(&p, bytes).unwrap();
    let mut args = vec![p.as_os_str(), OsStr::new("--json")];
    args.extend(extra.iter().map(OsStr::new));
    let out = fsck(&args);
    (
        out.status.code(),
        serde_json::from_slice(&out.stdout).expect("json even for corrupt images"),
    )
}

fn kinds(v: &serde_json::Value) -> Vec<(String, Option<u64>)> {
    v["check"]["problems"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| (p["kind"].as_str().unwrap().to_owned(), p["nid"].as_u64()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_checksum_mismatch_is_a_problem_unless_no_sbcrc() {
    let mut b = std::fs::read(image("compact")).unwrap();
    b[1024 + 120] ^= 0x55; // reserved superblock byte, covered by the checksum
    let (code, v) = fsck_bytes(&b, &[]);
    assert_eq!(code, Some(4));
    assert_eq!(kinds(&v), vec![("checksum".to_owned(), None)]);
    let (code, _) = fsck_bytes(&b, &["--no-sbcrc"]);
    assert_eq!(code, Some(0));
}

#[test]
fn a_wrong_nlink_is_reported_against_the_directory_tree() {
    let img = Image::open(image("compact")).unwrap();
    let hello = img.lookup(b"/dir/sub/hello").unwrap();
    assert!(!hello.extended);
    let mut b = std::fs::read(image("compact")).unwrap();
    // i_nlink of a compact inode is the le16 at offset 6.
    let at = hello.offset as usize + 6;
    b[at..at + 2].copy_from_slice(&5u16.to_le_bytes());
    fix_checksum(&mut b);
    let (code, v) = fsck_bytes(&b, &[]);
    assert_eq!(code, Some(4));
    assert_eq!(kinds(&v), vec![("nlink".to_owned(), Some(hello.nid))]);
}

#[test]
fn directory_order_dot_and_dirent_type_errors_are_listed() {
    let img = Image::open(image("compact")).unwrap();
    let dir = img.lookup(b"/dir").unwrap();
    let block = img.read_dir_block(&dir, 0).unwrap();
    let base = block[0].dirent_offset.unwrap() as usize;
    let find = |n: &[u8]| block.iter().find(|d| d.entry.name == n).unwrap();
    let mut b = std::fs::read(image("compact")).unwrap();
    // "a-link" -> "z-link": now sorts after "numbers.txt".
    b[base + find(b"a-link").nameoff as usize] = b'z';
    // "." points at the root instead of /dir.
    let dot = find(b".").dirent_offset.unwrap() as usize;
    b[dot..dot + 8].copy_from_slice(&img.root_nid().to_le_bytes());
    // numbers.txt's dirent claims a symlink (file_type 7 at offset 10 of the dirent).
    let num = find(b"numbers.txt").dirent_offset.unwrap() as usize;
    b[num + 10] = 7;
    fix_checksum(&mut b);
    let (code, v) = fsck_bytes(&b, &[]);
    assert_eq!(code, Some(4));
    let k: BTreeSet<String> = kinds(&v).into_iter().map(|(k, _)| k).collect();
    for want in ["dir-order", "dot", "dirent-type"] {
        assert!(k.contains(want), "{want} in {k:?}");
    }
    // The text output lists the problems on stderr with nids.
    let dir2 = tempfile::tempdir().unwrap();
    let p = dir2.path().join("img.erofs");
    std::fs::write(&p, &b).unwrap();
    let out = fsck(&[p.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("problem [dot] nid {}", dir.nid)),
        "{err}"
    );
}

#[test]
fn a_truncated_image_or_a_dirent_outside_it_exits_non_zero() {
    let full = std::fs::read(image("compact")).unwrap();
    let (code, v) = fsck_bytes(&full[..full.len() / 2], &[]);
    assert_eq!(code, Some(4), "{v}");
    let text = v.to_string();
    assert!(text.contains("outside the image"), "{text}");
    let (code, v) = fsck_bytes(&full[..1000], &[]);
    assert_eq!(code, Some(8), "cannot read: operational error");
    assert!(v["error"].as_str().unwrap().contains("too small"));
}

// ---------------------------------------------------------------- extraction

#[test]
fn extract_of_a_shipped_image_matches_the_manifest() {
    if !is_root() {
        skip_or_fail("extraction test needs root (device nodes, owners, trusted xattrs)");
        return;
    }
    let manifest = std::fs::read_to_string(images_dir().join("manifest.txt")).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let dest = out_dir.path().join("x");
    let out = fsck(&[
        image("mtime").as_os_str(),
        OsStr::new(&format!("--extract={}", dest.display())),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (nodes, links) = snapshot(&dest);
    let unhex = |s: &str| -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    };
    let mut groups: BTreeMap<u64, BTreeSet<Vec<u8>>> = BTreeMap::new();
    let mut xattrs: BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>> = BTreeMap::new();
    let mut count = 0;
    for line in manifest.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f[0] == "x" {
            xattrs
                .entry(unhex(f[1]))
                .or_default()
                .insert(unhex(f[2]), unhex(f.get(3).copied().unwrap_or("")));
            continue;
        }
        count += 1;
        let path = unhex(f[1]);
        let n = nodes
            .get(&path)
            .unwrap_or_else(|| panic!("{} extracted", path.escape_ascii()));
        let p = path.escape_ascii();
        assert_eq!(n.ty.to_string(), f[2], "{p}: type");
        assert_eq!(format!("{:o}", n.perm), f[3], "{p}: mode");
        assert_eq!(
            (n.uid.to_string(), n.gid.to_string()),
            (f[4].into(), f[5].into()),
            "{p}: owner"
        );
        assert_eq!(n.mtime.to_string(), f[8], "{p}: mtime");
        match f[2] {
            "f" => {
                assert_eq!(n.size.to_string(), f[6], "{p}: size");
                if f[10] != "-" {
                    assert_eq!(n.sha256.as_deref(), Some(f[10]), "{p}: content");
                }
                groups
                    .entry(f[11].parse().unwrap())
                    .or_default()
                    .insert(path.clone());
            }
            "l" => assert_eq!(
                n.target.as_ref().map(|t| hex(t)),
                Some(f[9].to_owned()),
                "{p}: target"
            ),
            "c" | "b" => assert_eq!(
                n.rdev.map(|(a, b)| format!("{a}:{b}")),
                Some(f[9].to_owned()),
                "{p}: rdev"
            ),
            _ => {}
        }
        if f[2] != "d" && f[2] != "f" {
            groups
                .entry(f[11].parse().unwrap())
                .or_default()
                .insert(path.clone());
        }
    }
    assert_eq!(count, nodes.len(), "nothing extra extracted");
    for (path, n) in &nodes {
        assert_eq!(
            &n.xattrs,
            xattrs.get(path).unwrap_or(&BTreeMap::new()),
            "{}: xattrs",
            path.escape_ascii()
        );
    }
    let want: LinkGroups = groups.into_values().collect();
    assert_eq!(links, want, "hard-link groups");
}

#[test]
fn extract_gives_a_tree_identical_to_the_source() {
    if !is_root() {
        skip_or_fail("extraction test needs root (device nodes, owners, trusted xattrs)");
        return;
    }
    if !have("mkfs.erofs") || !have("setfattr") {
        skip_or_fail(
            "mkfs.erofs (erofs-utils) and setfattr (attr) are needed to rebuild the source tree",
        );
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    let st = Command::new("bash")
        .arg(repo().join("testdata/make-images.sh"))
        .arg("tree")
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "make-images.sh tree");
    for (name, opts) in [
        ("plain", &[][..]),
        ("chunk", &["--chunksize=4096"][..]),
        ("noinline", &["-Enoinline_data"][..]),
    ] {
        let img = work.path().join(format!("{name}.erofs"));
        let st = Command::new("mkfs.erofs")
            .args(opts)
            .arg(&img)
            .arg(&src)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "mkfs.erofs {opts:?}: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let dest = work.path().join(format!("out-{name}"));
        let out = fsck(&[
            img.as_os_str(),
            OsStr::new(&format!("--extract={}", dest.display())),
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The source root's owner is the test's; make the comparison about the tree.
        assert_same_tree(&dest, &src);
    }
}

#[test]
fn extract_refuses_to_overwrite_without_the_flag() {
    let work = tempfile::tempdir().unwrap();
    let dest = work.path().join("x");
    let arg = format!("--extract={}", dest.display());
    let img = image("compact");
    let extra: &[&str] = if is_root() {
        &[]
    } else {
        &["--no-xattrs", "--no-preserve-owner"]
    };
    let run = |more: &[&str]| {
        let mut a = vec![img.to_str().unwrap(), arg.as_str()];
        a.extend_from_slice(extra);
        a.extend_from_slice(more);
        fsck_s(&a)
    };
    if !is_root() {
        // Device nodes need root; without it the first extraction fails at /special.
        skip_or_fail("extraction test needs root (device nodes)");
        return;
    }
    let first = run(&[]);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let hello = dest.join("dir/sub/hello");
    std::fs::write(&hello, b"changed").unwrap();
    let second = run(&[]);
    assert_eq!(second.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&second.stderr).contains("--overwrite"));
    assert_eq!(
        std::fs::read(&hello).unwrap(),
        b"changed",
        "nothing was overwritten"
    );
    let third = run(&["--overwrite"]);
    assert_eq!(
        third.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );
    assert_eq!(std::fs::read(&hello).unwrap(), b"hello\n");
}

#[test]
fn path_limits_the_check_to_a_subtree() {
    let img = Image::open(image("compact")).unwrap();
    let hello = img.lookup(b"/dir/sub/hello").unwrap();
    let mut b = std::fs::read(image("compact")).unwrap();
    let at = hello.offset as usize + 6; // i_nlink of a compact inode
    b[at..at + 2].copy_from_slice(&5u16.to_le_bytes());
    fix_checksum(&mut b);
    let (code, _) = fsck_bytes(&b, &["--path", "/links"]);
    assert_eq!(code, Some(0), "the damage is outside /links");
    let (code, v) = fsck_bytes(&b, &["--path", "/"]);
    assert_eq!(code, Some(4));
    assert_eq!(kinds(&v), vec![("nlink".to_owned(), Some(hello.nid))]);
    // Inside the subtree, directory checks still apply.
    let dir = img.lookup(b"/dir/sub").unwrap();
    let block = img.read_dir_block(&dir, 0).unwrap();
    let dot = block.iter().find(|d| d.entry.name == b".").unwrap();
    let off = dot.dirent_offset.unwrap() as usize;
    let mut b = std::fs::read(image("compact")).unwrap();
    b[off..off + 8].copy_from_slice(&img.root_nid().to_le_bytes());
    fix_checksum(&mut b);
    let (code, v) = fsck_bytes(&b, &["--path", "/dir"]);
    assert_eq!(code, Some(4));
    assert_eq!(kinds(&v), vec![("dot".to_owned(), Some(dir.nid))]);
    let (code, v) = fsck_bytes(&b, &["--path", "/links"]);
    assert_eq!(code, Some(0), "{v}");
}
