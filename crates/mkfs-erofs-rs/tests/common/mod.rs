//! Test trees, the mkfs binary, and snapshots of trees read from disk, from mounts and from
//! images (through erofs-reader), so that every peer is compared the same way.
#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

#[allow(unused_imports)]
pub use erofs_testkit::{have, is_root, read_xattrs, skip_or_fail};

/// The -T value the tests use.
pub const EPOCH: i64 = 1_700_000_000;

pub fn mkfs_bin() -> &'static str {
    env!("CARGO_BIN_EXE_mkfs-erofs-rs")
}

/// Runs `cmd` and panics with its output, labelled `what`, unless it succeeds.
pub fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs mkfs with `args` then `source image`; panics with its output on failure.
pub fn mkfs(source: &Path, image: &Path, args: &[&str]) {
    run_ok(
        Command::new(mkfs_bin())
            .args(args)
            .arg("-q")
            .arg(source)
            .arg(image),
        &format!("mkfs {args:?}"),
    );
}

/// Each compressed file's layout and extents, by path relative to the image root.
pub fn extents(
    image: &Path,
) -> BTreeMap<Vec<u8>, (erofs_format::DataLayout, Vec<erofs_reader::ZExtent>)> {
    let img = erofs_reader::Image::open(image).expect("open image");
    let mut out = BTreeMap::new();
    for e in img.walk().expect("walk") {
        let e = e.expect("walk entry");
        if let Ok(x) = img.z_extents(&e.inode) {
            let rel = e.path.strip_prefix(b"/").unwrap_or(&e.path).to_vec();
            out.insert(rel, (e.inode.layout, x));
        }
    }
    out
}

/// Compare everything: owners, xattrs, mtimes and link counts.
pub const FULL: Compare = Compare {
    owners: true,
    xattrs: true,
    mtime: true,
    nlink: true,
};

/// Text-like bytes (words over a small alphabet), which compress to about half.
pub fn text(seed: u64, len: usize) -> Vec<u8> {
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

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = erofs_testkit::Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    (0..len).map(|_| (rng.next_u64() >> 24) as u8).collect()
}

#[derive(Clone, Copy, Debug)]
pub struct Features {
    /// Device nodes, fifos, sockets, foreign owners, trusted./security. xattrs (needs root).
    pub special: bool,
    /// A sparse file (Debian's fsck.erofs 1.5 extracts holes wrongly).
    pub sparse: bool,
    /// Files large enough to be streamed in pieces.
    pub big: bool,
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty())
        .unwrap_or_else(|e| panic!("setxattr {name} on {}: {e}", path.display()));
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

/// A varied tree: every file type, hard links, xattrs (inline, shared, many, crossing blocks),
/// odd names, empty and big files, duplicates across directories, a deep path.
pub fn make_tree(root: &Path, f: Features) {
    let d = |p: &str| {
        let p = root.join(p);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    d("");
    d("empty-dir");
    d("sub/deeper");
    d("dup1");
    d("dup2");
    write(&root.join("a.txt"), b"hello\n");
    set_xattr(&root.join("a.txt"), "user.foo", b"bar");
    std::fs::hard_link(root.join("a.txt"), root.join("sub/hard-a")).unwrap();
    std::fs::hard_link(root.join("a.txt"), root.join("dup2/hard-a2")).unwrap();
    write(&root.join("empty"), b"");
    for (i, size) in [
        1usize,
        511,
        512,
        513,
        1000,
        4095,
        4096,
        4097,
        8292,
        100_000,
        1 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        write(
            &root.join(format!("sub/size-{size}")),
            &bytes(i as u64, size),
        );
    }
    // Same content in two directories.
    let dup = bytes(77, 12_345);
    write(&root.join("dup1/same"), &dup);
    write(&root.join("dup2/same"), &dup);
    write(&root.join("dup2/zeros"), &[0u8; 9000]);
    std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();
    std::os::unix::fs::symlink("x".repeat(2000), root.join("sub/long-link")).unwrap();
    std::os::unix::fs::symlink("../a.txt", root.join("sub/deeper/up")).unwrap();
    // Odd names.
    for name in [
        &b" space"[..],
        b"-dash",
        b"#hash",
        b"n\xffon-utf8",
        b"new\nline",
        b"\xe2\x82\xac-euro",
    ] {
        write(&root.join(OsStr::from_bytes(name)), name);
    }
    write(&root.join("L".repeat(255)), b"longest name");
    // A deep path.
    let mut deep = root.join("deep");
    for i in 0..40 {
        deep.push(format!("level{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    write(&deep.join("bottom"), b"bottom");
    // A directory that needs several blocks, and many hard links to one file.
    d("many");
    for i in 0..600 {
        write(
            &root.join(format!("many/entry-{i:04}-{}", "m".repeat(i % 40))),
            &[],
        );
    }
    // Xattrs: shared (used by > 2 inodes), many on one file, big values.
    for p in ["dup1/same", "dup2/same", "sub/size-1", "sub/size-512"] {
        set_xattr(&root.join(p), "user.shared", b"same value");
    }
    set_xattr(&root.join("sub"), "user.dir-attr", b"on a directory");
    for i in 0..30 {
        set_xattr(
            &root.join("sub/size-4097"),
            &format!("user.many-{i:02}"),
            &bytes(i, 40 + i as usize),
        );
    }
    set_xattr(&root.join("sub/size-1000"), "user.big", &bytes(5, 3000));
    std::fs::set_permissions(
        root.join("sub/size-1"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("sub/size-511"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    if f.big {
        write(&root.join("big-6m"), &bytes(9, 6 << 20));
        write(&root.join("big-5m-aligned"), &bytes(10, 5 << 20));
    }
    if f.sparse {
        let file = std::fs::File::create(root.join("sparse")).unwrap();
        file.set_len(3 << 20).unwrap();
        use std::os::unix::fs::FileExt;
        file.write_all_at(b"middle", 1 << 20).unwrap();
        file.write_all_at(b"end", (3 << 20) - 3).unwrap();
    }
    if f.special {
        use rustix::fs::{CWD, FileType, Mode, makedev, mknodat};
        let mode = Mode::from_raw_mode(0o640);
        mknodat(
            CWD,
            root.join("null"),
            FileType::CharacterDevice,
            mode,
            makedev(1, 3),
        )
        .unwrap();
        mknodat(
            CWD,
            root.join("sda1"),
            FileType::BlockDevice,
            mode,
            makedev(8, 1),
        )
        .unwrap();
        mknodat(
            CWD,
            root.join("bigminor"),
            FileType::CharacterDevice,
            mode,
            makedev(259, 0x12345),
        )
        .unwrap();
        mknodat(CWD, root.join("fifo"), FileType::Fifo, mode, 0).unwrap();
        drop(std::os::unix::net::UnixListener::bind(root.join("socket")).unwrap());
        set_xattr(&root.join("sub/size-513"), "trusted.t", b"trusted value");
        set_xattr(&root.join("sub/size-4095"), "security.s", b"security value");
        // A POSIX ACL (version 2): user::rw-, user:1234:r--, group::r--, mask::r--, other::r--.
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (1u16, 6u16, u32::MAX),
            (2, 4, 1234),
            (4, 4, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 4, u32::MAX),
        ] {
            acl.extend_from_slice(&tag.to_le_bytes());
            acl.extend_from_slice(&perm.to_le_bytes());
            acl.extend_from_slice(&id.to_le_bytes());
        }
        set_xattr(&root.join("sub/size-8292"), "system.posix_acl_access", &acl);
        std::os::unix::fs::lchown(root.join("sub/size-4096"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("sub/size-100000"), Some(70000), Some(80000)).unwrap();
        std::os::unix::fs::lchown(root.join("link"), Some(42), Some(43)).unwrap();
    }
}

/// What a peer must give back for one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snap {
    pub kind: char,
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Option<(i64, u32)>,
    pub nlink: u32,
    /// Regular files: size and sha256; symlinks: the target; devices: major/minor.
    pub content: String,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// What to compare.
#[derive(Clone, Copy, Debug)]
pub struct Compare {
    pub owners: bool,
    pub xattrs: bool,
    pub mtime: bool,
    pub nlink: bool,
}

fn kind_of(ft: std::fs::FileType) -> char {
    if ft.is_dir() {
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
    }
}

fn hash_content(data: &[u8]) -> String {
    format!("{} {:x}", data.len(), Sha256::digest(data))
}

/// Snapshot of a tree on disk (source, extraction or mount). Keys are paths relative to
/// `root` ("" for the root). Directory link counts are computed from the tree.
pub fn snap_dir(root: &Path, cmp: Compare, skip: &[&[u8]]) -> BTreeMap<Vec<u8>, Snap> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), Vec::<u8>::new())];
    while let Some((path, rel)) = stack.pop() {
        let m = std::fs::symlink_metadata(&path).unwrap();
        let kind = kind_of(m.file_type());
        let content = match kind {
            'f' => hash_content(&std::fs::read(&path).unwrap()),
            'l' => {
                String::from_utf8_lossy(std::fs::read_link(&path).unwrap().as_os_str().as_bytes())
                    .into_owned()
            }
            'c' | 'b' => {
                let (ma, mi) = (rustix::fs::major(m.rdev()), rustix::fs::minor(m.rdev()));
                format!("{ma}:{mi}")
            }
            _ => String::new(),
        };
        let mut nlink = m.nlink() as u32;
        if kind == 'd' {
            let mut subdirs = 0;
            let mut children: Vec<_> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap())
                .collect();
            children.sort_by_key(|e| e.file_name());
            for e in children {
                let name = e.file_name().as_bytes().to_vec();
                let mut crel = rel.clone();
                if !crel.is_empty() {
                    crel.push(b'/');
                }
                crel.extend_from_slice(&name);
                if skip.contains(&crel.as_slice()) {
                    continue;
                }
                if e.file_type().unwrap().is_dir() {
                    subdirs += 1;
                }
                stack.push((e.path(), crel));
            }
            nlink = 2 + subdirs;
        }
        out.insert(
            rel,
            Snap {
                kind,
                perm: (m.mode() & 0o7777) as u16,
                uid: if cmp.owners { m.uid() } else { 0 },
                gid: if cmp.owners { m.gid() } else { 0 },
                mtime: cmp.mtime.then(|| (m.mtime(), m.mtime_nsec() as u32)),
                nlink: if cmp.nlink { nlink } else { 0 },
                content,
                xattrs: if cmp.xattrs {
                    read_xattrs(&path)
                } else {
                    BTreeMap::new()
                },
            },
        );
    }
    out
}

/// Snapshot of an image through erofs-reader. Hidden (index 0) xattrs are not listed, as
/// through a mount.
pub fn snap_image(image: &Path, cmp: Compare) -> BTreeMap<Vec<u8>, Snap> {
    let img = erofs_reader::Image::open(image).expect("open image");
    let mut out = BTreeMap::new();
    for e in img.walk().expect("walk") {
        let e = e.expect("walk entry");
        let ino = &e.inode;
        let kind = match ino.file_type() {
            erofs_format::FileType::Directory => 'd',
            erofs_format::FileType::Regular => 'f',
            erofs_format::FileType::Symlink => 'l',
            erofs_format::FileType::CharDevice => 'c',
            erofs_format::FileType::BlockDevice => 'b',
            erofs_format::FileType::Fifo => 'p',
            _ => 's',
        };
        assert_eq!(
            e.dirent_type,
            ino.file_type(),
            "dirent type of {:?}",
            e.path
        );
        let content = match kind {
            'f' => hash_content(&img.read_to_vec(ino, u64::MAX).expect("read")),
            'l' => String::from_utf8_lossy(&img.readlink(ino).expect("readlink")).into_owned(),
            'c' | 'b' => {
                let (ma, mi) = ino.rdev().expect("rdev");
                format!("{ma}:{mi}")
            }
            _ => String::new(),
        };
        let xattrs = if cmp.xattrs {
            img.xattrs(ino)
                .expect("xattrs")
                .into_iter()
                .filter(|x| x.name_index != 0 && !hidden_long(&img, x.name_index))
                .map(|x| (x.name, x.value))
                .collect()
        } else {
            BTreeMap::new()
        };
        let rel = e.path.strip_prefix(b"/").unwrap_or(&e.path).to_vec();
        out.insert(
            rel,
            Snap {
                kind,
                perm: ino.permissions(),
                uid: if cmp.owners { ino.uid } else { 0 },
                gid: if cmp.owners { ino.gid } else { 0 },
                mtime: cmp.mtime.then_some((ino.mtime, ino.mtime_nsec)),
                nlink: if cmp.nlink { ino.nlink } else { 0 },
                content,
                xattrs,
            },
        );
    }
    out
}

fn hidden_long(img: &erofs_reader::Image, index: u8) -> bool {
    index & 0x80 != 0
        && img
            .long_prefixes()
            .get(usize::from(index & 0x7f))
            .is_some_and(|p| p.base_index == 0)
}

/// Asserts two snapshots are equal, reporting the first differing path.
pub fn assert_same(what: &str, want: &BTreeMap<Vec<u8>, Snap>, got: &BTreeMap<Vec<u8>, Snap>) {
    for (k, v) in want {
        match got.get(k) {
            None => panic!("{what}: {:?} missing", String::from_utf8_lossy(k)),
            Some(g) => assert_eq!(v, g, "{what}: {:?} differs", String::from_utf8_lossy(k)),
        }
    }
    for k in got.keys() {
        assert!(
            want.contains_key(k),
            "{what}: unexpected {:?}",
            String::from_utf8_lossy(k)
        );
    }
}

/// Loop-mounts `image` read-only at a new directory; `None` (after [`skip`]) when not root
/// or the mount fails outside CI.
pub struct Mount {
    pub dir: tempfile::TempDir,
}

impl Mount {
    pub fn new(image: &Path) -> Option<Self> {
        if !is_root() {
            skip_or_fail("host mount needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "erofs", "-o", "loop,ro"])
            .arg(image)
            .arg(dir.path())
            .output()
            .expect("run mount");
        if !out.status.success() {
            skip_or_fail(&format!(
                "mount -t erofs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
            return None;
        }
        Some(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// The sources' expected snapshot after `-T EPOCH`: every mtime is the epoch.
pub fn with_epoch(mut s: BTreeMap<Vec<u8>, Snap>) -> BTreeMap<Vec<u8>, Snap> {
    for v in s.values_mut() {
        if v.mtime.is_some() {
            v.mtime = Some((EPOCH, 0));
        }
    }
    s
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn path_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

pub fn image_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
