//! What a tree holds, entry by entry, and how two such descriptions differ.
//!
//! The host walks the *source tree* to write the expected manifest; the guest walks the mounted
//! image with the same [`walk`] and compares with [`diff`]. Only the kernel and our mkfs stand
//! between the two.

use crate::sys;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// File type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Directory.
    Dir,
    /// Regular file.
    File,
    /// Symbolic link.
    Symlink,
    /// Character device.
    Chr,
    /// Block device.
    Blk,
    /// FIFO.
    Fifo,
    /// Unix socket.
    Sock,
}

impl Kind {
    fn from_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFCHR => Kind::Chr,
            libc::S_IFBLK => Kind::Blk,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Sock,
            _ => Kind::File,
        }
    }
}

/// One extended attribute.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Xattr {
    /// Full name, e.g. `user.foo`.
    #[serde(with = "hexbytes")]
    pub name: Vec<u8>,
    /// Value bytes.
    #[serde(with = "hexbytes")]
    pub value: Vec<u8>,
}

/// One entry of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path relative to the root, bytes; the root itself is empty.
    #[serde(with = "hexbytes")]
    pub path: Vec<u8>,
    /// File type.
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Regular file: content length; symlink: target length; otherwise 0.
    pub size: u64,
    /// Link count (for non-directories on the host: links inside the tree).
    pub nlink: u64,
    /// Hex SHA-256 of a regular file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Symlink target.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "opt_hexbytes"
    )]
    pub target: Option<Vec<u8>>,
    /// Device number (`st_rdev`) of a character or block device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<u64>,
    /// Extended attributes, sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// Hard-link group: entries with the same number are one inode. Numbered in path order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_group: Option<u32>,
}

/// A whole tree, sorted by path bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Entries; the root first.
    pub entries: Vec<Entry>,
}

/// The walk stops descending below this many directories.
const MAX_DEPTH: usize = 256;
/// The walk stops after this many entries (a damaged directory can claim many).
const MAX_ENTRIES: usize = 1_000_000;

/// How to walk.
#[derive(Debug, Clone, Default)]
pub struct WalkOptions {
    /// Add the fingerprint xattr with this name to every non-empty regular file, as mkfs
    /// `--fingerprint=sha256` does (value `sha256:` + 32 raw digest bytes).
    pub fingerprint: Option<String>,
    /// Record uid and gid 0 everywhere (mkfs `--all-root`).
    pub all_root: bool,
    /// Count links of non-directories inside the tree instead of trusting `st_nlink`
    /// (the host tree may have links elsewhere; an image only has what is inside it).
    pub nlink_from_tree: bool,
    /// Read contents with mmap as well as read(2) and check both agree.
    pub also_mmap: bool,
    /// Read at most this many bytes of a file (damaged images can claim huge sizes).
    pub max_file_bytes: Option<u64>,
}

/// The result of a walk: the manifest plus every error met on the way (the walk goes on).
#[derive(Debug, Default)]
pub struct Walked {
    /// What was found.
    pub manifest: Manifest,
    /// Errors (path: what failed: errno text).
    pub errors: Vec<String>,
    /// Bytes of regular-file content read.
    pub bytes_read: u64,
}

/// Walks `root` and describes everything under it.
pub fn walk(root: &Path, opts: &WalkOptions) -> Walked {
    let mut w = Walked::default();
    let mut inodes: Vec<(usize, (u64, u64))> = Vec::new();
    let mut stack = Vec::new();
    walk_one(root, Vec::new(), opts, &mut w, &mut inodes, &mut stack);
    // Hard-link groups: entries that are not directories and share (dev, ino).
    let mut by_ino: BTreeMap<(u64, u64), Vec<usize>> = BTreeMap::new();
    for (idx, key) in inodes {
        by_ino.entry(key).or_default().push(idx);
    }
    let mut groups: Vec<Vec<usize>> = by_ino.into_values().filter(|v| v.len() > 1).collect();
    groups.sort();
    for (g, members) in groups.iter().enumerate() {
        for &i in members {
            w.manifest.entries[i].link_group = Some(g as u32);
            if opts.nlink_from_tree {
                w.manifest.entries[i].nlink = members.len() as u64;
            }
        }
    }
    if opts.nlink_from_tree {
        for e in &mut w.manifest.entries {
            if e.kind != Kind::Dir && e.link_group.is_none() {
                e.nlink = 1;
            }
        }
    }
    w
}

fn walk_one(
    full: &Path,
    rel: Vec<u8>,
    opts: &WalkOptions,
    w: &mut Walked,
    inodes: &mut Vec<(usize, (u64, u64))>,
    stack: &mut Vec<(u64, u64)>,
) {
    if w.manifest.entries.len() >= MAX_ENTRIES {
        if w.manifest.entries.len() == MAX_ENTRIES {
            w.errors
                .push(format!("more than {MAX_ENTRIES} entries, walk cut short"));
        }
        return;
    }
    let md = match std::fs::symlink_metadata(full) {
        Ok(m) => m,
        Err(e) => {
            w.errors.push(format!("{}: lstat: {e}", show(&rel)));
            return;
        }
    };
    let kind = Kind::from_mode(md.mode());
    let mut e = Entry {
        path: rel.clone(),
        kind,
        mode: md.mode() & 0o7777,
        uid: if opts.all_root { 0 } else { md.uid() },
        gid: if opts.all_root { 0 } else { md.gid() },
        size: 0,
        nlink: md.nlink(),
        sha256: None,
        target: None,
        rdev: None,
        xattrs: Vec::new(),
        link_group: None,
    };
    match kind {
        Kind::File => {
            e.size = md.len();
            match hash_file(full, opts.max_file_bytes.unwrap_or(u64::MAX)) {
                Ok((digest, n)) => {
                    w.bytes_read += n;
                    if n != md.len() && n < opts.max_file_bytes.unwrap_or(u64::MAX) {
                        w.errors.push(format!(
                            "{}: read {n} bytes, st_size {}",
                            show(&rel),
                            md.len()
                        ));
                    }
                    if opts.also_mmap
                        && md.len() > 0
                        && md.len() <= opts.max_file_bytes.unwrap_or(u64::MAX)
                    {
                        match sys::mmap_sha256(full) {
                            Ok(m) if m == digest => {}
                            Ok(_) => w
                                .errors
                                .push(format!("{}: mmap content differs from read", show(&rel))),
                            Err(err) => w.errors.push(format!("{}: mmap read: {err}", show(&rel))),
                        }
                    }
                    if let Some(name) = &opts.fingerprint
                        && md.len() > 0
                    {
                        let mut value = b"sha256:".to_vec();
                        value.extend_from_slice(&digest);
                        e.xattrs.push(Xattr {
                            name: name.as_bytes().to_vec(),
                            value,
                        });
                    }
                    e.sha256 = Some(hex(&digest));
                }
                Err(err) => w.errors.push(format!("{}: read: {err}", show(&rel))),
            }
        }
        Kind::Symlink => match std::fs::read_link(full) {
            Ok(t) => {
                e.size = md.len();
                e.target = Some(t.as_os_str().as_bytes().to_vec());
            }
            Err(err) => w.errors.push(format!("{}: readlink: {err}", show(&rel))),
        },
        Kind::Chr | Kind::Blk => e.rdev = Some(md.rdev()),
        _ => {}
    }
    match sys::list_xattrs(full) {
        Ok(names) => {
            for name in names {
                match sys::get_xattr(full, &name) {
                    Ok(value) => e.xattrs.push(Xattr { name, value }),
                    Err(err) => {
                        w.errors
                            .push(format!("{}: getxattr {}: {err}", show(&rel), show(&name)))
                    }
                }
            }
        }
        Err(err) => w.errors.push(format!("{}: listxattr: {err}", show(&rel))),
    }
    e.xattrs.sort();
    e.xattrs.dedup();
    let idx = w.manifest.entries.len();
    if kind != Kind::Dir {
        inodes.push((idx, (md.dev(), md.ino())));
    }
    w.manifest.entries.push(e);

    if kind == Kind::Dir {
        // A damaged image can link a directory into itself: never descend into a directory
        // that is already on the current path.
        let key = (md.dev(), md.ino());
        if stack.contains(&key) {
            w.errors.push(format!("{}: directory cycle", show(&rel)));
            return;
        }
        if stack.len() >= MAX_DEPTH {
            w.errors.push(format!(
                "{}: deeper than {MAX_DEPTH} directories",
                show(&rel)
            ));
            return;
        }
        let rd = match std::fs::read_dir(full) {
            Ok(r) => r,
            Err(err) => {
                w.errors.push(format!("{}: opendir: {err}", show(&rel)));
                return;
            }
        };
        let mut names: Vec<Vec<u8>> = Vec::new();
        for ent in rd {
            match ent {
                Ok(ent) => names.push(ent.file_name().as_bytes().to_vec()),
                Err(err) => {
                    w.errors.push(format!("{}: readdir: {err}", show(&rel)));
                    break;
                }
            }
        }
        names.sort();
        for n in names {
            let mut child = rel.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(&n);
            stack.push(key);
            walk_one(
                &full.join(OsStr::from_bytes(&n)),
                child,
                opts,
                w,
                inodes,
                stack,
            );
            stack.pop();
        }
    }
}

fn hash_file(p: &Path, limit: u64) -> std::io::Result<([u8; 32], u64)> {
    let mut f = std::fs::File::open(p)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    while total < limit {
        let want = buf
            .len()
            .min((limit - total).min(usize::MAX as u64) as usize);
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        total += n as u64;
        h.update(&buf[..n]);
    }
    Ok((h.finalize().into(), total))
}

/// Differences between the expected and the actual tree, one line each (empty when equal).
pub fn diff(expected: &Manifest, actual: &Manifest) -> Vec<String> {
    let mut out = Vec::new();
    let exp: BTreeMap<&[u8], &Entry> = expected.entries.iter().map(|e| (&e.path[..], e)).collect();
    let act: BTreeMap<&[u8], &Entry> = actual.entries.iter().map(|e| (&e.path[..], e)).collect();
    for (p, e) in &exp {
        let Some(a) = act.get(p) else {
            out.push(format!("{}: missing", show(p)));
            continue;
        };
        let mut field = |name: &str, want: String, got: String| {
            if want != got {
                out.push(format!("{}: {name}: expected {want}, got {got}", show(p)));
            }
        };
        field("type", format!("{:?}", e.kind), format!("{:?}", a.kind));
        if e.kind != a.kind {
            continue;
        }
        field("mode", format!("{:o}", e.mode), format!("{:o}", a.mode));
        field("uid", e.uid.to_string(), a.uid.to_string());
        field("gid", e.gid.to_string(), a.gid.to_string());
        if e.kind != Kind::Dir {
            field("size", e.size.to_string(), a.size.to_string());
        }
        field("nlink", e.nlink.to_string(), a.nlink.to_string());
        field(
            "sha256",
            format!("{:?}", e.sha256),
            format!("{:?}", a.sha256),
        );
        field(
            "symlink target",
            e.target.as_deref().map(show).unwrap_or_default(),
            a.target.as_deref().map(show).unwrap_or_default(),
        );
        field("rdev", format!("{:?}", e.rdev), format!("{:?}", a.rdev));
        field("xattrs", show_xattrs(&e.xattrs), show_xattrs(&a.xattrs));
        field(
            "hard-link group",
            format!("{:?}", e.link_group),
            format!("{:?}", a.link_group),
        );
    }
    for p in act.keys() {
        if !exp.contains_key(p) {
            out.push(format!("{}: unexpected entry", show(p)));
        }
    }
    out
}

fn show_xattrs(x: &[Xattr]) -> String {
    let parts: Vec<String> = x
        .iter()
        .map(|x| {
            let v = if x.value.len() > 48 {
                format!(
                    "{}...({} bytes, sha256 {})",
                    show(&x.value[..32]),
                    x.value.len(),
                    &hex(&Sha256::digest(&x.value))[..16]
                )
            } else {
                show(&x.value)
            };
            format!("{}={}", show(&x.name), v)
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

/// Printable form of a byte path: ASCII as is, other bytes as `\xNN`.
pub fn show(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b {
        if (0x20..0x7f).contains(&c) && c != b'\\' {
            s.push(c as char);
        } else {
            s.push_str(&format!("\\x{c:02x}"));
        }
    }
    if s.is_empty() { "/".into() } else { s }
}

/// Lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|c| format!("{c:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("odd-length hex".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

mod hexbytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        super::unhex(&s).map_err(serde::de::Error::custom)
    }
}

mod opt_hexbytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&super::hex(v)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| super::unhex(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &[u8]) -> Entry {
        Entry {
            path: path.to_vec(),
            kind: Kind::File,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 1,
            nlink: 1,
            sha256: Some("ab".into()),
            target: None,
            rdev: None,
            xattrs: vec![],
            link_group: None,
        }
    }

    #[test]
    fn manifest_round_trips_non_utf8_paths() {
        let m = Manifest {
            entries: vec![entry(b"a\xff\nb")],
        };
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&j).unwrap(), m);
    }

    #[test]
    fn diff_reports_missing_extra_and_fields() {
        let exp = Manifest {
            entries: vec![entry(b"a"), entry(b"b")],
        };
        let mut c = entry(b"a");
        c.mode = 0o600;
        let act = Manifest {
            entries: vec![c, entry(b"c")],
        };
        let d = diff(&exp, &act);
        assert_eq!(d.len(), 3, "{d:?}");
        assert!(d[0].contains("mode"));
        assert!(d[1].contains("b: missing"));
        assert!(d[2].contains("c: unexpected"));
    }

    #[test]
    fn walk_finds_hard_links_and_fingerprints() {
        let t = std::env::temp_dir().join(format!("erofs-guest-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&t);
        std::fs::create_dir_all(t.join("d")).unwrap();
        std::fs::write(t.join("f"), b"x").unwrap();
        std::fs::hard_link(t.join("f"), t.join("d/g")).unwrap();
        std::fs::write(t.join("e"), b"").unwrap();
        let opts = WalkOptions {
            fingerprint: Some("user.fp".into()),
            nlink_from_tree: true,
            ..Default::default()
        };
        let w = walk(&t, &opts);
        std::fs::remove_dir_all(&t).unwrap();
        assert!(w.errors.is_empty(), "{:?}", w.errors);
        let m = &w.manifest.entries;
        let paths: Vec<_> = m.iter().map(|e| show(&e.path)).collect();
        assert_eq!(paths, ["/", "d", "d/g", "e", "f"]);
        assert_eq!(m[2].link_group, Some(0));
        assert_eq!(m[4].link_group, Some(0));
        assert_eq!(m[2].nlink, 2);
        assert_eq!(m[3].xattrs, vec![]);
        assert_eq!(m[4].xattrs[0].value.len(), 39);
    }
}
