//! Reading file contents for the writer, with the checks that catch a source that changed
//! since the scan: a file replaced at its path (device and inode compared), a symlink or fifo
//! put in its place (opened `O_NOFOLLOW | O_NONBLOCK`), a file that grew or shrank (one
//! spare byte read, or a probe at the end). Every reader of the data and metadata stages and
//! the compressed stage goes through here.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::BuildError;
use crate::tree::{DataSource, FileContent};

/// One open file shared by the pieces of a large file. Opening it again per piece could
/// read two different files, if it were replaced (same size, new inode) mid-build. The last
/// piece to take it lets go, so at most the files in flight are open.
pub(crate) struct OpenOnce {
    slot: Mutex<(Option<Arc<File>>, usize)>,
}

impl OpenOnce {
    pub(crate) fn new(pieces: usize) -> Self {
        Self {
            slot: Mutex::new((None, pieces)),
        }
    }

    pub(crate) fn take<'a>(&self, c: &'a FileContent) -> Result<Source<'a>, BuildError> {
        let DataSource::Path(path) = &c.source else {
            return Source::open(c, &mut DirCache::default());
        };
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let file = match &slot.0 {
            Some(f) => Arc::clone(f),
            None => match Source::open(c, &mut DirCache::default())? {
                Source::File(f, _) => {
                    slot.0 = Some(Arc::clone(&f));
                    f
                }
                Source::Bytes(_) | Source::Staged(_) => unreachable!("a path opens as a file"),
            },
        };
        slot.1 = slot.1.saturating_sub(1);
        if slot.1 == 0 {
            slot.0 = None;
        }
        Ok(Source::File(file, path))
    }
}

/// The directory of the last file a job opened. Files of one directory sit next to each
/// other in inode order, so opening them relative to it saves walking the whole path again
/// for each one.
#[derive(Default)]
pub(crate) struct DirCache<'a> {
    dir: Option<(&'a Path, rustix::fd::OwnedFd)>,
}

impl<'a> DirCache<'a> {
    /// Opens the regular file `path` for reading. `O_NOFOLLOW`: the scan saw a regular file
    /// there, and a symlink put in its place must not pull another file into the image.
    pub(crate) fn open(&mut self, path: &'a Path) -> std::io::Result<File> {
        use rustix::fs::{Mode, OFlags, open, openat};
        // NONBLOCK: a fifo put in place of a file must fail the size check, not hang the
        // open; regular files ignore the flag.
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(File::from(open(path, flags, Mode::empty())?));
        };
        if self.dir.as_ref().is_none_or(|(d, _)| *d != parent) {
            let base = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            let fd = open(
                base,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            self.dir = Some((parent, fd));
        }
        let (_, dir) = self.dir.as_ref().expect("just set");
        Ok(File::from(openat(dir, name, flags, Mode::empty())?))
    }
}

/// Reads a file's bytes from the source tree, from memory, or from a source's staging file.
pub(crate) enum Source<'a> {
    File(Arc<File>, &'a Path),
    Bytes(&'a [u8]),
    /// Staged content does not change under us: no size probes.
    Staged(&'a crate::tree::StagedData),
}

impl<'a> Source<'a> {
    /// Opens `c`, relative to its directory when `dirs` has that directory open.
    pub(crate) fn open(c: &'a FileContent, dirs: &mut DirCache<'a>) -> Result<Self, BuildError> {
        match &c.source {
            DataSource::Path(p) => {
                let file = dirs.open(p).map_err(|e| {
                    if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                        // O_NOFOLLOW met a symlink where the scan saw a regular file.
                        let e = std::io::Error::other(
                            "changed during the build: it is a symbolic link now",
                        );
                        BuildError::io(p, e)
                    } else {
                        BuildError::io(p, e)
                    }
                })?;
                if let Some((dev, ino)) = c.source_id {
                    let st = rustix::fs::fstat(&file).map_err(|e| BuildError::io(p, e.into()))?;
                    #[allow(clippy::unnecessary_cast)]
                    // the field types differ between architectures
                    if (st.st_dev as u64, st.st_ino as u64) != (dev, ino) {
                        let e = std::io::Error::other(
                            "replaced during the build: another file is at this path now",
                        );
                        return Err(BuildError::io(p, e));
                    }
                }
                Ok(Self::File(Arc::new(file), p))
            }
            DataSource::Bytes(b) => Ok(Self::Bytes(b)),
            DataSource::At(d) => Ok(Self::Staged(d)),
            DataSource::Blob(_) => Err(BuildError::Output(std::io::Error::other(
                "content on an extra device is not copied into the image",
            ))),
        }
    }

    pub(crate) fn changed(&self, expected: u64) -> BuildError {
        let path = match self {
            Self::File(_, p) => p,
            Self::Bytes(_) => Path::new("<memory>"),
            Self::Staged(d) => Path::new(&*d.name),
        };
        BuildError::ChangedSize {
            path: path.to_path_buf(),
            expected,
        }
    }

    pub(crate) fn io(&self, e: std::io::Error) -> BuildError {
        match self {
            Self::File(_, p) => BuildError::io(p, e),
            Self::Bytes(_) => BuildError::Output(e),
            Self::Staged(d) => BuildError::io(Path::new(&*d.name), e),
        }
    }

    /// Reads the whole file into `dst`, which is one byte longer than the file should be:
    /// the spare byte tells a file that grew from one that did not, in the same read.
    pub(crate) fn read_whole(&mut self, dst: &mut [u8]) -> Result<(), BuildError> {
        let size = dst.len() - 1;
        match self {
            Self::Bytes(b) => {
                if b.len() != size {
                    return Err(self.changed(size as u64));
                }
                dst[..size].copy_from_slice(b);
                Ok(())
            }
            Self::Staged(d) => d
                .file
                .read_exact_at(&mut dst[..size], d.offset)
                .map_err(|e| self.io(e)),
            Self::File(f, _) => {
                let mut got = 0;
                loop {
                    let asked = dst.len() - got;
                    let n = match (&**f).read(&mut dst[got..]) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(self.io(e)),
                    };
                    got += n;
                    // A short read of a regular file stops at its end.
                    if n == 0 || (n < asked && got == size) || got > size {
                        break;
                    }
                }
                if got == size {
                    Ok(())
                } else {
                    Err(self.changed(size as u64))
                }
            }
        }
    }

    /// Fills `dst` from file offset `at`; a file that ends early changed size.
    pub(crate) fn read_exact_at(
        &self,
        dst: &mut [u8],
        at: u64,
        size: u64,
    ) -> Result<(), BuildError> {
        match self {
            Self::Bytes(b) => {
                let src = usize::try_from(at)
                    .ok()
                    .and_then(|a| b.get(a..a.checked_add(dst.len())?))
                    .ok_or_else(|| self.changed(size))?;
                dst.copy_from_slice(src);
                Ok(())
            }
            Self::Staged(d) => d
                .file
                .read_exact_at(dst, d.offset + at)
                .map_err(|e| self.io(e)),
            Self::File(f, _) => f.read_exact_at(dst, at).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    self.changed(size)
                } else {
                    self.io(e)
                }
            }),
        }
    }

    /// Reads the last `size - at` bytes of the file (its inline tail, or nothing) and checks
    /// that the file ends exactly at `size`. With no tail to read, the probe starts one byte
    /// early: a file that shrank into a trailing hole reads nothing there, while an intact
    /// one reads a byte (a zero, in a hole).
    pub(crate) fn read_end(&self, at: u64, size: u64) -> Result<Vec<u8>, BuildError> {
        let n = (size - at) as usize;
        let from = if n == 0 { size.saturating_sub(1) } else { at };
        let want = (size - from) as usize;
        let mut probe = vec![0u8; want + 1];
        let got = match self {
            Self::Bytes(b) => {
                if b.len() as u64 != size {
                    return Err(self.changed(size));
                }
                let rest = &b[from as usize..];
                probe[..rest.len()].copy_from_slice(rest);
                rest.len()
            }
            Self::Staged(d) => {
                // Staged data cannot change: read the tail, no probe.
                let mut tail = vec![0u8; n];
                d.file
                    .read_exact_at(&mut tail, d.offset + at)
                    .map_err(|e| self.io(e))?;
                return Ok(tail);
            }
            Self::File(f, _) => {
                let mut got = 0;
                loop {
                    match f.read_at(&mut probe[got..], from + got as u64) {
                        Ok(0) => break,
                        Ok(k) => {
                            got += k;
                            if got == probe.len() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(self.io(e)),
                    }
                }
                got
            }
        };
        if got != want {
            return Err(self.changed(size));
        }
        probe.truncate(want);
        Ok(if n == 0 { Vec::new() } else { probe })
    }
}

/// Feeds `n` zero bytes (a hole, or the unread end of a sparse file) to `h`.
pub(crate) fn hash_zeros(h: &mut sha2::Sha256, mut n: u64) {
    use sha2::Digest;
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Options;
    use crate::tree::Inode;
    use crate::tree::{Kind, Tree, ValidTree};
    use sha2::{Digest, Sha256};
    use std::ops::Range;

    fn one_file(declared: u64, actual: &[u8]) -> Tree {
        let file = Inode {
            kind: Kind::Regular(FileContent {
                size: declared,
                source: DataSource::Bytes(Arc::from(actual)),
                data_ranges: None,
                old_fingerprint: None,
                source_id: None,
            }),
            permissions: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            nlink: 1,
            xattrs: Vec::new(),
        };
        let root = Inode {
            kind: Kind::Directory {
                parent: 0,
                entries: vec![crate::tree::DirEntry {
                    name: b"f".to_vec(),
                    inode: 1,
                }],
            },
            nlink: 2,
            permissions: 0o755,
            ..file.clone()
        };
        Tree {
            inodes: vec![root, file],
        }
    }

    /// Builds `tree` with the default options and returns the error it must fail with.
    fn build_error(tree: &Tree) -> BuildError {
        crate::build_tree_to_writer(
            &ValidTree::new(tree.clone()).expect("a valid tree"),
            &mut Vec::new(),
            &Options::default(),
            &crate::NoProgress,
        )
        .unwrap_err()
    }

    /// [`one_file`] whose file is read from `path`.
    fn file_at(path: &std::path::Path, size: u64) -> Tree {
        let mut tree = one_file(size, b"");
        if let Kind::Regular(c) = &mut tree.inodes[1].kind {
            c.source = DataSource::Path(path.to_path_buf());
        }
        tree
    }

    /// [`one_file`] whose content is a staged region of `spool` that its source hashed.
    fn staged(spool: &std::path::Path, size: u64, digest: [u8; 32]) -> Tree {
        let mut tree = one_file(size, b"");
        if let Kind::Regular(c) = &mut tree.inodes[1].kind {
            c.source = DataSource::At(crate::tree::StagedData {
                file: Arc::new(File::open(spool).unwrap()),
                offset: 0,
                name: "f (tar offset 0)".into(),
                digest: Some(digest),
            });
        }
        tree
    }

    #[test]
    fn a_digest_the_source_took_while_staging_is_the_fingerprint_without_a_second_read() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        // Small (one job reads several files), large (one job hashes it whole) and
        // inline-only sizes, into a file and into a stream.
        for size in [100usize, 5000, (5 << 20) + 7] {
            std::fs::write(&spool, vec![3u8; size]).unwrap();
            // Not the content's sha256: only a writer that trusts the source writes it.
            let given = [0xa5u8; 32];
            let options = Options {
                fingerprint: Some(crate::FingerprintOptions {
                    xattr_name: b"trusted.fp".to_vec(),
                }),
                ..Options::default()
            };
            let tree = crate::tree::ValidTree::new(staged(&spool, size as u64, given)).unwrap();
            let mut stream = Vec::new();
            crate::build_tree_to_writer(&tree, &mut stream, &options, &crate::NoProgress).unwrap();
            let want = erofs_format::xattr::sha256_fingerprint(&given);
            let found = stream.windows(want.len()).any(|w| w == want.as_slice());
            assert!(found, "size {size}: the given digest is not in the image");
            let own =
                erofs_format::xattr::sha256_fingerprint(&Sha256::digest(vec![3u8; size]).into());
            let rehashed = stream.windows(own.len()).any(|w| w == own.as_slice());
            assert!(
                !rehashed,
                "size {size}: the writer hashed the content again"
            );
        }
    }

    #[test]
    fn a_staged_region_shorter_than_its_size_fails_even_with_a_digest() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::write(&spool, vec![3u8; 100]).unwrap();
        let err = build_error(&staged(&spool, 5000, [0; 32]));
        assert!(
            matches!(err, BuildError::ChangedSize { .. } | BuildError::Io { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_sparse_file_that_shrank_into_its_trailing_hole_fails_the_build() {
        let first_page: Vec<Range<u64>> = std::iter::once(0..4096).collect();
        for (ranges, actual) in [(first_page, 4096usize), (Vec::new(), 0)] {
            let mut tree = one_file(1 << 20, &vec![7u8; actual]);
            if let Kind::Regular(c) = &mut tree.inodes[1].kind {
                c.data_ranges = Some(ranges.clone());
            }
            let err = build_error(&tree);
            assert!(
                matches!(err, BuildError::ChangedSize { expected, .. } if expected == 1 << 20),
                "data ranges {ranges:?}: {err}"
            );
        }
    }

    #[test]
    fn every_piece_of_a_file_reads_the_file_first_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, b"old!").unwrap();
        let content = FileContent {
            size: 4,
            source: DataSource::Path(path.clone()),
            data_ranges: None,
            old_fingerprint: None,
            source_id: None,
        };
        let once = OpenOnce::new(3);
        let read = |src: &Source<'_>| {
            let mut b = [0u8; 4];
            src.read_exact_at(&mut b, 0, 4).unwrap();
            b
        };
        assert_eq!(&read(&once.take(&content).unwrap()), b"old!");
        // Replaced by a file of the same size, as an editor's atomic save does.
        std::fs::write(dir.path().join("new"), b"new!").unwrap();
        std::fs::rename(dir.path().join("new"), &path).unwrap();
        assert_eq!(&read(&once.take(&content).unwrap()), b"old!");
        assert_eq!(&read(&once.take(&content).unwrap()), b"old!");
        assert!(
            once.slot.lock().unwrap().0.is_none(),
            "the last piece lets the file go"
        );
    }

    #[test]
    fn a_file_replaced_by_a_fifo_fails_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let err = build_error(&file_at(&fifo, 20));
        assert!(matches!(err, BuildError::ChangedSize { .. }), "{err}");
    }

    #[test]
    fn a_file_replaced_at_its_path_after_the_scan_fails_the_build() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"scanned content!").unwrap();
        let scanned = std::fs::metadata(&path).unwrap();
        // An atomic save: same size, new inode.
        std::fs::write(dir.path().join("new"), b"replaced content").unwrap();
        std::fs::rename(dir.path().join("new"), &path).unwrap();
        let mut tree = file_at(&path, 16);
        if let Kind::Regular(c) = &mut tree.inodes[1].kind {
            c.source_id = Some((scanned.dev(), scanned.ino()));
        }
        let err = build_error(&tree);
        let msg = err.to_string();
        assert!(msg.contains("replaced during the build"), "{msg}");
        assert!(msg.contains(&*path.to_string_lossy()), "{msg}");
    }

    #[test]
    fn a_file_replaced_by_a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("other"), b"not this file's data").unwrap();
        let link = dir.path().join("f");
        std::os::unix::fs::symlink("other", &link).unwrap();
        let err = build_error(&file_at(&link, 20));
        let msg = err.to_string();
        assert!(
            msg.contains(&*link.to_string_lossy()) && msg.contains("symbolic link now"),
            "{msg}"
        );
    }

    #[test]
    fn a_file_that_changed_size_fails_the_build() {
        for (declared, actual) in [
            (10u64, &b"short"[..]),
            (3, b"longer"),
            (9000, &[1u8; 100][..]),
        ] {
            let tree = one_file(declared, actual);
            let err = build_error(&tree);
            assert!(
                matches!(err, BuildError::ChangedSize { expected, .. } if expected == declared),
                "{err}"
            );
        }
    }
}
