//! The directory source: a parallel walk that produces a validated [`Tree`].
//!
//! Each directory is read, its names sorted bytewise, and its entries examined in parallel
//! (lstat, xattrs, symlink targets, holes of sparse files). The result is flattened in a
//! fixed order afterwards, so the tree never depends on thread timing.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::tree::{DataSource, DirEntry, FileContent, Inode, Kind, Tree};
use crate::{BuildError, BuildReport, MtimePolicy, Options, Progress, SCAN_BATCH, Skipped};

/// Scans the directory `source` into a tree.
pub fn scan_dir(
    source: &Path,
    options: &Options,
    report: &mut BuildReport,
    progress: &dyn Progress,
) -> Result<Tree, BuildError> {
    let mut meta = std::fs::symlink_metadata(source).map_err(|e| BuildError::io(source, e))?;
    // A symlink to a directory is followed for the root only (its xattrs and owner are the
    // directory's, so scan the resolved path).
    let resolved;
    let source = if meta.is_symlink() {
        resolved = std::fs::canonicalize(source).map_err(|e| BuildError::io(source, e))?;
        meta = std::fs::symlink_metadata(&resolved).map_err(|e| BuildError::io(source, e))?;
        resolved.as_path()
    } else {
        source
    };
    if !meta.is_dir() {
        return Err(BuildError::NotADirectory(source.to_path_buf()));
    }
    let regexes = options
        .scan
        .exclude_regexes
        .iter()
        .map(|r| {
            regex::bytes::Regex::new(r)
                .map_err(|e| BuildError::InvalidOption(format!("--exclude-regex {r:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let ctx = Ctx {
        options,
        regexes,
        skipped: Mutex::new(Vec::new()),
        warnings: Mutex::new(Vec::new()),
        progress,
        entries: std::sync::atomic::AtomicU64::new(0),
    };
    let meta = Stat::of_metadata(&meta);
    let root = ctx.scan_entry(source.to_path_buf(), Vec::new(), Vec::new(), meta)?;
    let root = root.expect("the root is never skipped");
    let tree = flatten(root, options.scan.hard_dereference);
    let mut skipped = ctx.skipped.into_inner().unwrap_or_else(|e| e.into_inner());
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    report.skipped.extend(skipped);
    let mut warnings = ctx.warnings.into_inner().unwrap_or_else(|e| e.into_inner());
    warnings.sort();
    report.warnings.extend(warnings);
    debug_assert!(tree.validate().is_ok(), "{:?}", tree.validate());
    Ok(tree)
}

/// A full xattr name and its value.
type Xattr = (Vec<u8>, Vec<u8>);

/// What the scan keeps of an entry's `lstat`.
#[derive(Clone, Copy, Debug)]
struct Stat {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    blocks: u64,
    mtime: i64,
    mtime_nsec: i64,
    dev: u64,
    ino: u64,
    nlink: u64,
    rdev: u64,
}

impl Stat {
    fn of_metadata(m: &std::fs::Metadata) -> Self {
        Self {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.size(),
            blocks: m.blocks(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
            rdev: m.rdev(),
        }
    }

    /// `lstat` of `name` in the open directory `dir`: no walk of the whole path.
    fn at(dir: rustix::fd::BorrowedFd<'_>, name: &std::ffi::CStr) -> std::io::Result<Self> {
        let s = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)?;
        #[allow(clippy::unnecessary_cast)] // the field types differ between architectures
        Ok(Self {
            mode: s.st_mode as u32,
            uid: s.st_uid,
            gid: s.st_gid,
            size: s.st_size as u64,
            blocks: s.st_blocks as u64,
            mtime: s.st_mtime as i64,
            mtime_nsec: s.st_mtime_nsec as i64,
            dev: s.st_dev as u64,
            ino: s.st_ino as u64,
            nlink: s.st_nlink as u64,
            rdev: s.st_rdev as u64,
        })
    }

    fn file_type(&self) -> rustix::fs::FileType {
        rustix::fs::FileType::from_raw_mode(self.mode as rustix::fs::RawMode)
    }
}

struct Ctx<'a> {
    options: &'a Options,
    regexes: Vec<regex::bytes::Regex>,
    skipped: Mutex<Vec<Skipped>>,
    warnings: Mutex<Vec<String>>,
    progress: &'a dyn Progress,
    entries: std::sync::atomic::AtomicU64,
}

/// A scanned entry before flattening.
struct Node {
    name: Vec<u8>,
    dev: u64,
    ino: u64,
    st_nlink: u64,
    inode: Inode,
    children: Vec<Node>,
}

impl Ctx<'_> {
    fn warn(&self, message: String) {
        self.progress.warning(&message);
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message);
    }

    fn excluded(&self, rel: &[u8]) -> bool {
        self.options.scan.exclude_paths.iter().any(|p| {
            let p = trim_slashes(p);
            p == rel
        }) || self.regexes.iter().any(|r| r.is_match(rel))
    }

    /// Scans one entry. `Ok(None)` means it was skipped (`--keep-going`).
    fn scan_entry(
        &self,
        path: PathBuf,
        rel: Vec<u8>,
        name: Vec<u8>,
        meta: Stat,
    ) -> Result<Option<Node>, BuildError> {
        let is_root = rel.is_empty();
        let n = self
            .entries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if n.is_multiple_of(SCAN_BATCH) {
            self.progress.advance(SCAN_BATCH, 0);
        }
        // Before the match: a cancelled build is not a file to skip.
        self.progress.check_cancelled()?;
        match self.scan_entry_inner(&path, &rel, name, &meta) {
            Ok(node) => Ok(Some(node)),
            Err(e)
                if self.options.scan.keep_going
                    && !is_root
                    && !matches!(e, BuildError::InvalidOption(_)) =>
            {
                self.skipped
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Skipped {
                        path,
                        reason: skip_reason(&e),
                    });
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn scan_entry_inner(
        &self,
        path: &Path,
        rel: &[u8],
        name: Vec<u8>,
        meta: &Stat,
    ) -> Result<Node, BuildError> {
        use rustix::fs::FileType;
        let ft = meta.file_type();
        let mut old_fingerprint = None;
        let xattrs = self.read_xattrs(path, &mut old_fingerprint)?;
        let mut children = Vec::new();
        let kind = if ft == FileType::Directory {
            children = self.scan_children(path, rel)?;
            Kind::Directory {
                parent: 0,
                entries: Vec::new(),
            }
        } else if ft == FileType::RegularFile {
            let size = meta.size;
            let sparse = meta.blocks.saturating_mul(512) < size;
            let data_ranges = if sparse || self.options.scan.keep_going {
                let file = std::fs::File::open(path).map_err(|e| BuildError::io(path, e))?;
                if sparse {
                    data_ranges(&file, size).map_err(|e| BuildError::io(path, e))?
                } else {
                    None
                }
            } else {
                None
            };
            Kind::Regular(FileContent {
                size,
                source: DataSource::Path(path.to_path_buf()),
                data_ranges,
                old_fingerprint,
                source_id: Some((meta.dev, meta.ino)),
            })
        } else if ft == FileType::Symlink {
            let target = std::fs::read_link(path).map_err(|e| BuildError::io(path, e))?;
            let target = target.as_os_str().as_bytes().to_vec();
            if target.is_empty() || target.len() > 4095 {
                return Err(BuildError::Unsupported {
                    path: path.to_path_buf(),
                    reason: format!("symlink target of {} bytes", target.len()),
                });
            }
            Kind::Symlink(target)
        } else if ft == FileType::CharacterDevice {
            let (ma, mi) = split_dev(meta.rdev);
            Kind::CharDevice(ma, mi)
        } else if ft == FileType::BlockDevice {
            let (ma, mi) = split_dev(meta.rdev);
            Kind::BlockDevice(ma, mi)
        } else if ft == FileType::Fifo {
            Kind::Fifo
        } else if ft == FileType::Socket {
            Kind::Socket
        } else {
            return Err(BuildError::Unsupported {
                path: path.to_path_buf(),
                reason: "unknown file type".into(),
            });
        };
        let (uid, gid) = self.options.scan.ownership.apply(meta.uid, meta.gid);
        let (mtime, mtime_nsec) = match (self.options.timestamp, self.options.scan.mtime) {
            (Some(t), MtimePolicy::AllTime | MtimePolicy::IgnoreMtime) => (t, 0),
            (Some(t), MtimePolicy::Clamp) if meta.mtime >= t => (t, 0),
            _ => (meta.mtime, meta.mtime_nsec.clamp(0, 999_999_999) as u32),
        };
        Ok(Node {
            name,
            dev: meta.dev,
            ino: meta.ino,
            st_nlink: meta.nlink,
            inode: Inode {
                kind,
                permissions: (meta.mode & 0o7777) as u16,
                uid,
                gid,
                mtime,
                mtime_nsec,
                nlink: 1,
                xattrs,
            },
            children,
        })
    }

    /// Scans a directory's entries in two passes: first every `lstat`, relative to the open
    /// directory; then, with the directory closed again, each entry in full. Closing it
    /// before descending keeps the open descriptors to a few per thread, however deep the
    /// tree.
    fn scan_children(&self, dir: &Path, rel: &[u8]) -> Result<Vec<Node>, BuildError> {
        use rustix::fs::{Mode, OFlags};
        let io = |e: rustix::io::Errno| BuildError::io(dir, e.into());
        let dirfd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .map_err(io)?;
        // Dir::new reads through this descriptor; Dir::read_from would reopen "." through
        // it, which needs search permission that a readable directory may lack.
        let mut dir_stream = rustix::fs::Dir::new(dirfd).map_err(io)?;
        let mut names = Vec::new();
        for entry in &mut dir_stream {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let child_rel = join_rel(rel, name.to_bytes());
            if self.excluded(&child_rel) {
                continue;
            }
            names.push((name.to_owned(), child_rel));
        }
        names.sort_unstable();
        let dirfd = dir_stream.fd().map_err(io)?;
        let stats: Vec<_> = names
            .into_par_iter()
            .map(|(name, child_rel)| {
                let stat = Stat::at(dirfd, &name);
                (name.into_bytes(), child_rel, stat)
            })
            .collect();
        drop(dir_stream);
        let results: Vec<Result<Option<Node>, BuildError>> = stats
            .into_par_iter()
            .map(|(name, child_rel, stat)| {
                let path = dir.join(std::ffi::OsStr::from_bytes(&name));
                let meta = match stat {
                    Ok(m) => m,
                    Err(e) => {
                        let e = BuildError::io(&path, e);
                        if self.options.scan.keep_going {
                            self.skipped
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(Skipped {
                                    path,
                                    reason: skip_reason(&e),
                                });
                            return Ok(None);
                        }
                        return Err(e);
                    }
                };
                self.scan_entry(path, child_rel, name, meta)
            })
            .collect();
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            if let Some(node) = r? {
                out.push(node);
            }
        }
        Ok(out)
    }

    /// Reads the xattrs of `path` (not following symlinks), sorted by name. A fingerprint
    /// xattr of the name we are about to compute is taken out into `old_fingerprint`.
    fn read_xattrs(
        &self,
        path: &Path,
        old_fingerprint: &mut Option<Vec<u8>>,
    ) -> Result<Vec<Xattr>, BuildError> {
        if self.options.xattr_tolerance < 0 && self.options.fingerprint.is_none() {
            return Ok(Vec::new());
        }
        let names = list_xattrs(path).map_err(|e| BuildError::io(path, e))?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let is_fp = self
                .options
                .fingerprint
                .as_ref()
                .is_some_and(|fp| fp.xattr_name == name);
            if !is_fp && self.options.xattr_tolerance < 0 {
                continue;
            }
            if !is_fp && erofs_format::xattr::split_short_prefix(name).is_none() {
                self.warn(format!(
                    "{}: xattr {} has no EROFS name prefix; left out",
                    path.display(),
                    String::from_utf8_lossy(name)
                ));
                continue;
            }
            let value = match get_xattr(path, name) {
                Ok(v) => v,
                // Removed between list and get: treat as absent.
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NODATA.raw_os_error()) => {
                    continue;
                }
                Err(e) => return Err(BuildError::io(path, e)),
            };
            if is_fp {
                *old_fingerprint = Some(value);
                continue;
            }
            if value.len() > u16::MAX as usize {
                self.warn(format!(
                    "{}: xattr {} value of {} bytes is too large; left out",
                    path.display(),
                    String::from_utf8_lossy(name),
                    value.len()
                ));
                continue;
            }
            out.push((name.to_vec(), value));
        }
        out.sort();
        Ok(out)
    }
}

fn skip_reason(e: &BuildError) -> String {
    match e {
        BuildError::Io { error, .. } => error.to_string(),
        BuildError::Unsupported { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

fn trim_slashes(p: &[u8]) -> &[u8] {
    let mut p = p;
    while let [b'/', rest @ ..] = p {
        p = rest;
    }
    while let [rest @ .., b'/'] = p {
        p = rest;
    }
    p
}

fn join_rel(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(rel.len() + 1 + name.len());
    if !rel.is_empty() {
        v.extend_from_slice(rel);
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

/// Splits a Linux `dev_t` into major and minor (glibc encoding).
pub fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major as u32, minor as u32)
}

fn list_xattrs(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => {
                let n = rustix::fs::llistxattr_query(path)?;
                buf.resize(n.max(buf.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    }
}

fn get_xattr(path: &Path, name: &[u8]) -> std::io::Result<Vec<u8>> {
    let name = std::ffi::OsStr::from_bytes(name);
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => {
                let n = rustix::fs::lgetxattr_query(path, name)?;
                buf.resize(n.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The data ranges of a file with holes, via `SEEK_DATA` / `SEEK_HOLE`. `None` when the
/// whole file is data.
fn data_ranges(
    file: &std::fs::File,
    size: u64,
) -> std::io::Result<Option<Vec<std::ops::Range<u64>>>> {
    use rustix::fs::SeekFrom;
    let mut ranges = Vec::new();
    let mut pos = 0u64;
    while pos < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            // No SEEK_DATA support: treat the file as dense.
            Err(rustix::io::Errno::INVAL) if pos == 0 => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if start >= size {
            break;
        }
        let end = rustix::fs::seek(file, SeekFrom::Hole(start))?.min(size);
        if end <= start {
            break;
        }
        ranges.push(start..end);
        pos = end;
    }
    if ranges.len() == 1 && ranges[0] == (0..size) {
        return Ok(None);
    }
    Ok(Some(ranges))
}

/// Turns the scanned nodes into the inode table: a directory's children get consecutive
/// indices, then its subdirectories are placed in name order. Hard links (same device and
/// inode) become one inode, placed where the first link is met.
///
/// With `hard_dereference`, every link becomes an inode of its own.
fn flatten(root: Node, hard_dereference: bool) -> Tree {
    let mut inodes = vec![root.inode];
    let mut links = std::collections::HashMap::new();
    place(0, root.children, &mut inodes, &mut links, hard_dereference);
    Tree { inodes }
}

fn place(
    dir: usize,
    children: Vec<Node>,
    inodes: &mut Vec<Inode>,
    links: &mut std::collections::HashMap<(u64, u64), usize>,
    hard_dereference: bool,
) {
    let mut entries = Vec::with_capacity(children.len());
    let mut subdirs = Vec::new();
    for child in children {
        let is_dir = matches!(child.inode.kind, Kind::Directory { .. });
        let linked = (!is_dir && !hard_dereference && child.st_nlink > 1)
            .then(|| links.get(&(child.dev, child.ino)).copied())
            .flatten();
        if let Some(idx) = linked {
            inodes[idx].nlink += 1;
            entries.push(DirEntry {
                name: child.name,
                inode: idx,
            });
            continue;
        }
        let idx = inodes.len();
        let mut inode = child.inode;
        if is_dir {
            inode.kind = Kind::Directory {
                parent: dir,
                entries: Vec::new(),
            };
            subdirs.push((idx, child.children));
        } else if child.st_nlink > 1 && !hard_dereference {
            links.insert((child.dev, child.ino), idx);
        }
        inodes.push(inode);
        entries.push(DirEntry {
            name: child.name,
            inode: idx,
        });
    }
    let nlink = 2 + subdirs.len() as u32;
    if let Kind::Directory { entries: e, .. } = &mut inodes[dir].kind {
        *e = entries;
    }
    inodes[dir].nlink = nlink;
    for (idx, grandchildren) in subdirs {
        place(idx, grandchildren, inodes, links, hard_dereference);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_split_matches_glibc() {
        // makedev(8, 1) and makedev(259, 0x12345)
        assert_eq!(split_dev(0x801), (8, 1));
        let dev: u64 = 0x1231_0345;
        assert_eq!(split_dev(dev), (259, 0x12345));
    }

    #[test]
    fn exclude_paths_ignore_surrounding_slashes() {
        assert_eq!(trim_slashes(b"/a/b/"), b"a/b");
        assert_eq!(join_rel(b"", b"x"), b"x");
        assert_eq!(join_rel(b"a", b"x"), b"a/x");
    }
}
