//! Deterministic source trees for the conformance scenarios.
//!
//! [`full`] holds every file type, odd names, hard links, many kinds of xattrs, sizes around
//! every block size, a big file and a big directory. Device nodes and foreign owners need root
//! (CI runs as root); without root they are left out and the manifest simply does not list them.

use anyhow::{Context, Result};
use erofs_guest::sys;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Prefix that the long-prefix scenario registers with `--xattr-prefix`.
pub const LONG_PREFIX: &str = "user.erofs.long.prefix.";

/// A tree being generated.
struct Gen {
    root: PathBuf,
    root_user: bool,
}

/// splitmix64: deterministic content without a dependency.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` pseudo-random bytes determined by `seed`.
pub fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut s = seed;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        v.extend_from_slice(&splitmix(&mut s).to_le_bytes());
    }
    v.truncate(n);
    v
}

fn seed_of(name: &[u8]) -> u64 {
    name.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

impl Gen {
    fn p(&self, rel: &[u8]) -> PathBuf {
        self.root.join(OsStr::from_bytes(rel))
    }

    fn own(&self, rel: &[u8], uid: u32, gid: u32) -> Result<()> {
        if self.root_user {
            std::os::unix::fs::lchown(self.p(rel), Some(uid), Some(gid))
                .with_context(|| format!("chown {}", String::from_utf8_lossy(rel)))?;
        }
        Ok(())
    }

    fn dir(&self, rel: &[u8], mode: u32) -> Result<()> {
        std::fs::create_dir_all(self.p(rel))?;
        std::fs::set_permissions(self.p(rel), std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    fn write(&self, rel: &[u8], data: &[u8], mode: u32, owner: (u32, u32)) -> Result<()> {
        std::fs::write(self.p(rel), data)
            .with_context(|| format!("writing {}", String::from_utf8_lossy(rel)))?;
        // chown first: it clears setuid/setgid.
        self.own(rel, owner.0, owner.1)?;
        std::fs::set_permissions(self.p(rel), std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    /// A file of `size` pseudo-random bytes seeded by its path.
    fn file(&self, rel: &[u8], size: usize) -> Result<()> {
        self.write(rel, &random_bytes(seed_of(rel), size), 0o644, (0, 0))
    }

    fn symlink(&self, rel: &[u8], target: &[u8]) -> Result<()> {
        std::os::unix::fs::symlink(OsStr::from_bytes(target), self.p(rel))?;
        Ok(())
    }

    fn xattr(&self, rel: &[u8], name: &str, value: &[u8]) -> Result<()> {
        sys::set_xattr(&self.p(rel), name.as_bytes(), value)
            .with_context(|| format!("setxattr {name} on {}", String::from_utf8_lossy(rel)))
    }

    fn node(&self, rel: &[u8], kind: u32, mode: u32, dev: (u32, u32)) -> Result<()> {
        sys::mknod(&self.p(rel), kind | mode, dev.0, dev.1)
            .with_context(|| format!("mknod {}", String::from_utf8_lossy(rel)))?;
        std::fs::set_permissions(self.p(rel), std::fs::Permissions::from_mode(mode))?;
        Ok(())
    }

    fn link(&self, from: &[u8], to: &[u8]) -> Result<()> {
        std::fs::hard_link(self.p(from), self.p(to))?;
        Ok(())
    }
}

/// A POSIX ACL xattr value (`system.posix_acl_*`, version 2): (tag, perm, id) entries.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// Creates (replacing) the full conformance tree at `root`. Names go up to `max_name` bytes
/// (255, the Linux limit; Debian's mkfs.erofs 1.5 fails on 255).
pub fn full(root: &Path, max_name: usize) -> Result<()> {
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    let root_user = crate::util::is_root();
    let g = Gen {
        root: root.to_path_buf(),
        root_user,
    };
    g.dir(b"", 0o755)?;

    // Regular files: sizes around each block size, big, text, zeros, modes, owners.
    g.dir(b"regular", 0o755)?;
    g.write(b"regular/empty", b"", 0o644, (0, 0))?;
    for size in [
        1usize, 100, 511, 512, 513, 1023, 1024, 1025, 2048, 4095, 4096, 4097, 8191, 8192, 8193,
        12289, 65536, 100_000,
    ] {
        g.file(format!("regular/size-{size}").as_bytes(), size)?;
    }
    g.file(b"regular/big", 5 * 1024 * 1024 + 123)?;
    let text: Vec<u8> = b"The quick brown fox jumps over the lazy dog. 0123456789\n"
        .iter()
        .copied()
        .cycle()
        .take(100_000)
        .collect();
    g.write(b"regular/text", &text, 0o644, (0, 0))?;
    g.write(b"regular/zeros", &vec![0u8; 65536 + 7], 0o644, (0, 0))?;
    for (name, mode) in [
        ("m0000", 0o000),
        ("m0777", 0o777),
        ("m4755", 0o4755),
        ("m2711", 0o2711),
        ("m6755", 0o6755),
        ("m1644", 0o1644),
        ("m0400", 0o400),
    ] {
        g.write(
            format!("regular/{name}").as_bytes(),
            name.as_bytes(),
            mode,
            (0, 0),
        )?;
    }
    for (name, uid, gid) in [
        ("owner-1000", 1000, 1000),
        ("owner-65534", 65534, 65534),
        ("owner-big", 100_000, 200_000),
        ("owner-mixed", 0, 4242),
    ] {
        g.write(
            format!("regular/{name}").as_bytes(),
            name.as_bytes(),
            0o640,
            (uid, gid),
        )?;
    }
    g.write(b"regular/empty-owner-big", b"", 0o600, (70_000, 70_001))?;

    // Directory modes and owners.
    g.dir(b"dirs", 0o755)?;
    for (name, mode) in [
        ("d0700", 0o700),
        ("d1777", 0o1777),
        ("d2775", 0o2775),
        ("d0555", 0o555),
    ] {
        g.dir(format!("dirs/{name}").as_bytes(), mode)?;
        g.file(format!("dirs/{name}/inside").as_bytes(), 10)?;
        std::fs::set_permissions(
            g.p(format!("dirs/{name}").as_bytes()),
            std::fs::Permissions::from_mode(mode),
        )?;
    }
    g.dir(b"dirs/owned", 0o750)?;
    g.own(b"dirs/owned", 1234, 5678)?;
    g.dir(b"dirs/empty", 0o755)?;
    let mut deep = b"dirs/deep".to_vec();
    for i in 0..16 {
        deep.extend_from_slice(format!("/{i}").as_bytes());
        g.dir(&deep, 0o755)?;
    }
    deep.extend_from_slice(b"/leaf");
    g.file(&deep, 42)?;

    // Names: every length 1..=255, non-UTF-8, odd characters.
    g.dir(b"names", 0o755)?;
    g.dir(b"names/lengths", 0o755)?;
    for len in 1..=max_name.min(255) {
        let c = b'a' + (len % 26) as u8;
        let mut rel = b"names/lengths/".to_vec();
        rel.extend(std::iter::repeat_n(c, len));
        g.write(&rel, format!("{len}").as_bytes(), 0o644, (0, 0))?;
    }
    let odd: [&[u8]; 14] = [
        b"\xff\xfe",
        b"caf\xe9",
        b"\x80",
        "h\u{e9}llo w\u{f6}rld".as_bytes(),
        "\u{65e5}\u{672c}\u{8a9e}".as_bytes(),
        b"with space",
        b"new\nline",
        b"tab\tname",
        b"-dash",
        b" leading space",
        b".hidden",
        b"..dots",
        b"back\\slash",
        b"!bang",
    ];
    for n in odd {
        let mut rel = b"names/".to_vec();
        rel.extend_from_slice(n);
        g.write(&rel, n, 0o644, (0, 0))?;
    }

    // Hard links (also of an empty file, across directories and of a FIFO).
    g.dir(b"links", 0o755)?;
    g.dir(b"links/sub", 0o755)?;
    g.file(b"links/a", 3000)?;
    g.link(b"links/a", b"links/a-link")?;
    g.link(b"links/a", b"links/sub/a-link2")?;
    g.file(b"links/b", 5000)?;
    g.link(b"links/b", b"links/b-link")?;
    g.write(b"links/empty", b"", 0o644, (0, 0))?;
    g.link(b"links/empty", b"links/empty-link")?;
    g.file(b"links/single", 7)?;
    if root_user {
        g.node(b"links/fifo", libc::S_IFIFO, 0o644, (0, 0))?;
        g.link(b"links/fifo", b"links/fifo-link")?;
    }

    // Symlinks.
    g.dir(b"symlinks", 0o755)?;
    g.symlink(b"symlinks/short", b"target")?;
    g.symlink(b"symlinks/abs", b"/etc/passwd")?;
    g.symlink(b"symlinks/dangling", b"does/not/exist")?;
    g.symlink(b"symlinks/to-dir", b"../regular")?;
    g.symlink(b"symlinks/non-utf8", b"\xff\xfe/x")?;
    let long: Vec<u8> = b"0123456789/".iter().copied().cycle().take(1000).collect();
    g.symlink(b"symlinks/long-1000", &long)?;
    let longest: Vec<u8> = b"abcdefgh/".iter().copied().cycle().take(4095).collect();
    g.symlink(b"symlinks/long-4095", &longest)?;
    g.symlink(b"symlinks/owned", b"short")?;
    g.own(b"symlinks/owned", 1000, 1000)?;

    // Special files.
    g.dir(b"special", 0o755)?;
    if root_user {
        g.node(b"special/null", libc::S_IFCHR, 0o666, (1, 3))?;
        g.node(b"special/sda", libc::S_IFBLK, 0o660, (8, 0))?;
        g.node(b"special/chr-big", libc::S_IFCHR, 0o600, (259, 70_000))?;
        g.node(b"special/blk-max", libc::S_IFBLK, 0o600, (4095, 1_048_575))?;
        g.node(b"special/fifo", libc::S_IFIFO, 0o640, (0, 0))?;
    }
    {
        let sock = g.p(b"special/socket");
        let l = std::os::unix::net::UnixListener::bind(&sock).context("binding a socket")?;
        drop(l);
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o755))?;
    }

    // Xattrs.
    g.dir(b"xattrs", 0o755)?;
    g.file(b"xattrs/many", 10)?;
    for i in 0..30 {
        g.xattr(
            b"xattrs/many",
            &format!("user.attr.{i:02}"),
            format!("value {i}").as_bytes(),
        )?;
    }
    g.file(b"xattrs/large", 100)?;
    g.xattr(b"xattrs/large", "user.large", &random_bytes(7, 3000))?;
    g.write(b"xattrs/empty-value", b"", 0o644, (0, 0))?;
    g.xattr(b"xattrs/empty-value", "user.empty", b"")?;
    if root_user {
        g.file(b"xattrs/trusted", 20)?;
        g.xattr(b"xattrs/trusted", "trusted.overlay.opaque", b"y")?;
        g.xattr(b"xattrs/trusted", "trusted.big", &random_bytes(8, 1000))?;
        g.file(b"xattrs/security", 20)?;
        g.xattr(b"xattrs/security", "security.test", b"sec")?;
    }
    for i in 1..=5 {
        let rel = format!("xattrs/shared-{i}");
        g.file(rel.as_bytes(), 100 * i)?;
        g.xattr(
            rel.as_bytes(),
            "user.shared",
            b"the same value on five files",
        )?;
        g.xattr(rel.as_bytes(), "user.shared-big", &random_bytes(9, 600))?;
        g.xattr(rel.as_bytes(), "user.own", rel.as_bytes())?;
        if root_user {
            g.xattr(rel.as_bytes(), "trusted.shared", b"common trusted")?;
        }
    }
    g.dir(b"xattrs/dir", 0o755)?;
    g.xattr(b"xattrs/dir", "user.dir", b"on a directory")?;
    if root_user {
        g.symlink(b"xattrs/symlink", b"dir")?;
        g.xattr(b"xattrs/symlink", "trusted.link", b"on a symlink")?;
    }
    for (i, n) in ["alpha", "beta", "gamma"].iter().enumerate() {
        let rel = format!("xattrs/longprefix-{i}");
        g.file(rel.as_bytes(), 30)?;
        g.xattr(rel.as_bytes(), &format!("{LONG_PREFIX}{n}"), n.as_bytes())?;
        g.xattr(rel.as_bytes(), &format!("{LONG_PREFIX}common"), b"x")?;
    }
    // POSIX ACLs: USER_OBJ rw, USER 1000 r, GROUP_OBJ r, MASK r, OTHER r.
    g.file(b"xattrs/acl-file", 10)?;
    let a = acl(&[
        (1, 6, u32::MAX),
        (2, 4, 1000),
        (4, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ]);
    g.xattr(b"xattrs/acl-file", "system.posix_acl_access", &a)?;
    g.dir(b"xattrs/acl-dir", 0o755)?;
    g.xattr(b"xattrs/acl-dir", "system.posix_acl_default", &a)?;

    // A big directory: 3000 entries of varying name length, a few subdirectories.
    g.dir(b"bigdir", 0o755)?;
    for i in 0..3000usize {
        let name = format!("bigdir/entry-{i:05}-{}", "z".repeat(i % 40));
        if i % 100 == 0 {
            g.dir(name.as_bytes(), 0o755)?;
        } else {
            g.write(
                name.as_bytes(),
                if i % 7 == 0 { b"x" } else { b"" },
                0o644,
                (0, 0),
            )?;
        }
    }
    Ok(())
}

/// A small tree used as the base of corrupted images: a few files, a subdirectory, a symlink.
pub fn small(root: &Path) -> Result<()> {
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    let g = Gen {
        root: root.to_path_buf(),
        root_user: crate::util::is_root(),
    };
    g.dir(b"", 0o755)?;
    g.file(b"a", 10)?;
    g.file(b"b", 5000)?;
    g.file(b"c", 8192)?;
    g.dir(b"d", 0o755)?;
    g.file(b"d/e", 100)?;
    for i in 0..50 {
        g.file(format!("d/f{i:02}").as_bytes(), i * 37)?;
    }
    g.symlink(b"s", b"a")?;
    g.xattr(b"a", "user.x", b"y")?;
    Ok(())
}

/// Two regular files with the same 4 MiB + 123 content (not hard links) and one that differs:
/// the page-cache scenarios read them.
pub fn same_content(root: &Path) -> Result<()> {
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    let g = Gen {
        root: root.to_path_buf(),
        root_user: crate::util::is_root(),
    };
    g.dir(b"", 0o755)?;
    let data = random_bytes(0x5a5a, 4 * 1024 * 1024 + 123);
    g.write(b"same-1", &data, 0o644, (0, 0))?;
    g.write(b"same-2", &data, 0o644, (0, 0))?;
    g.file(b"other", 1024 * 1024)?;
    Ok(())
}

/// Words from a small vocabulary: text that every algorithm compresses, LZ4 included.
fn words(seed: u64, n: usize) -> Vec<u8> {
    const VOCAB: [&[u8]; 16] = [
        b"erofs",
        b"pcluster",
        b"extent",
        b"block",
        b"inode",
        b"kernel",
        b"mount",
        b"index",
        b"the",
        b"of",
        b"and",
        b"compressed",
        b"data",
        b"file",
        b"read",
        b"write",
    ];
    let mut s = seed;
    let mut v = Vec::with_capacity(n + 16);
    while v.len() < n {
        let r = splitmix(&mut s);
        v.extend_from_slice(VOCAB[(r & 15) as usize]);
        v.push(if r >> 60 == 0 { b'\n' } else { b' ' });
    }
    v.truncate(n);
    v
}

/// Content that `-E dedupe` shares: a file, its copy and a copy of its first part, a file
/// that repeats one run, three copies of a small file, and a file of several compression
/// segments (over 4 MiB) with its copy.
pub fn duplicates(root: &Path) -> Result<()> {
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    let g = Gen {
        root: root.to_path_buf(),
        root_user: crate::util::is_root(),
    };
    g.dir(b"", 0o755)?;
    g.dir(b"a", 0o755)?;
    g.dir(b"b", 0o755)?;
    let mut a = words(1, 300_000);
    a.extend_from_slice(&random_bytes(2, 40_000));
    a.extend_from_slice(&vec![0u8; 100_000]);
    a.extend_from_slice(&words(3, 123_457));
    g.write(b"a/original", &a, 0o644, (0, 0))?;
    g.write(b"b/copy", &a, 0o644, (0, 0))?;
    g.write(b"b/prefix", &a[..200_000], 0o644, (0, 0))?;
    let run = words(4, 65_536);
    let mut repeats = words(5, 10_000);
    for _ in 0..4 {
        repeats.extend_from_slice(&run);
    }
    g.write(b"a/repeats", &repeats, 0o644, (0, 0))?;
    let small = words(6, 20_000);
    for name in [&b"a/NOTICE"[..], b"b/NOTICE", b"NOTICE"] {
        g.write(name, &small, 0o644, (0, 0))?;
    }
    let big = words(7, (4 << 20) + 300_000);
    g.write(b"a/big", &big, 0o644, (0, 0))?;
    g.write(b"b/big-copy", &big, 0o644, (0, 0))?;
    Ok(())
}
