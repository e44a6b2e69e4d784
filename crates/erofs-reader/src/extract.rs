//! Extraction behind `fsck.erofs-rs --extract=DIR`: restores files, directories,
//! symlinks, devices, FIFOs, sockets and hard links with modes, owners, mtimes and xattrs.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use erofs_format::FileType;
use rustix::fs::{AtFlags, CWD, Mode, Timespec, Timestamps, XattrFlags};

use crate::error::Error;
use crate::image::Image;
use crate::inode::Inode;
use crate::progress::{Cancelled, Progress};

/// What to restore.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct ExtractOptions {
    /// Replace existing files (directories are reused). Without it an existing path is
    /// an error.
    pub overwrite: bool,
    /// Restore uid/gid (needs root).
    pub preserve_owner: bool,
    /// Restore xattrs (`trusted.*` and `security.*` need root).
    pub xattrs: bool,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        Self {
            overwrite: false,
            preserve_owner: rustix::process::geteuid().is_root(),
            xattrs: true,
        }
    }
}

impl ExtractOptions {
    /// Sets [`ExtractOptions::overwrite`].
    pub fn overwrite(mut self, on: bool) -> Self {
        self.overwrite = on;
        self
    }

    /// Sets [`ExtractOptions::preserve_owner`].
    pub fn preserve_owner(mut self, on: bool) -> Self {
        self.preserve_owner = on;
        self
    }

    /// Sets [`ExtractOptions::xattrs`].
    pub fn xattrs(mut self, on: bool) -> Self {
        self.xattrs = on;
        self
    }
}

/// Errors of an extraction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// Reading the image failed.
    #[error(transparent)]
    Image(#[from] Error),
    /// The destination already has this path and `overwrite` is off.
    #[error("{} already exists (use --overwrite to replace it)", path.display())]
    Exists {
        /// The existing path.
        path: PathBuf,
    },
    /// The caller cancelled the extraction (through its [`Progress`]). What was extracted
    /// before stays; the file being written was removed.
    #[error("extraction cancelled")]
    Cancelled(#[from] Cancelled),
    /// A filesystem operation on the destination failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was attempted.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Counts of what was restored.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ExtractReport {
    /// Directories created or reused.
    pub directories: u64,
    /// Regular files written.
    pub files: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Devices, FIFOs and sockets created.
    pub special_files: u64,
    /// Extra names of hard-linked inodes.
    pub hard_links: u64,
    /// Bytes of file data written (holes excluded).
    pub bytes_written: u64,
}

fn io<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> ExtractError + 'p {
    move |source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            ExtractError::Exists {
                path: path.to_owned(),
            }
        } else {
            ExtractError::Io {
                op,
                path: path.to_owned(),
                source,
            }
        }
    }
}

fn rio<'p>(
    op: &'static str,
    path: &'p Path,
) -> impl FnOnce(rustix::io::Errno) -> ExtractError + 'p {
    move |e| io(op, path)(e.into())
}

struct Extractor<'a> {
    img: &'a Image<'a>,
    opts: ExtractOptions,
    progress: &'a dyn Progress,
    report: ExtractReport,
    first_path: crate::nidmap::NidMap<PathBuf>,
    /// The buffer that file data goes through when it cannot go straight from the image
    /// (decoded data, or a source neither in memory nor copyable in the kernel): kept
    /// across files, so that each file does not allocate and zero one.
    buf: Vec<u8>,
    /// `copy_file_range` failed once (not between these filesystems, as from ext4 into
    /// tmpfs): not tried again for every file.
    no_copy_range: bool,
}

impl Extractor<'_> {
    /// Makes room for a new non-directory at `path`. Without `overwrite` nothing is
    /// checked here: creation fails with `EEXIST`, reported as [`ExtractError::Exists`].
    fn clear(&self, path: &Path) -> Result<(), ExtractError> {
        if !self.opts.overwrite {
            return Ok(());
        }
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("stat", path)(e)),
            Ok(_) if !self.opts.overwrite => Err(ExtractError::Exists {
                path: path.to_owned(),
            }),
            Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io("remove", path)),
            Ok(_) => fs::remove_file(path).map_err(io("remove", path)),
        }
    }

    fn make_dir(&self, path: &Path, is_root: bool) -> Result<(), ExtractError> {
        if !is_root && !self.opts.overwrite {
            return fs::create_dir(path).map_err(io("mkdir", path));
        }
        match fs::symlink_metadata(path) {
            // The destination itself may be several levels deep.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && is_root => {
                fs::create_dir_all(path).map_err(io("mkdir", path))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir(path).map_err(io("mkdir", path))
            }
            Err(e) => Err(io("stat", path)(e)),
            Ok(m) if m.is_dir() && (is_root || self.opts.overwrite) => Ok(()),
            Ok(_) if !self.opts.overwrite => Err(ExtractError::Exists {
                path: path.to_owned(),
            }),
            Ok(_) => {
                fs::remove_file(path).map_err(io("remove", path))?;
                fs::create_dir(path).map_err(io("mkdir", path))
            }
        }
    }

    fn write_file(&mut self, path: &Path, inode: &Inode) -> Result<fs::File, ExtractError> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io("create", path))?;
        // A file cut short (cancelled, or a read or write failed) must not stay under its
        // final name looking like a whole one.
        if let Err(e) = self.write_data(path, inode, &f) {
            let _ = fs::remove_file(path);
            return Err(e);
        }
        Ok(f)
    }

    /// The content of `inode` into `f`, just created at `path`.
    fn write_data(&mut self, path: &Path, inode: &Inode, f: &fs::File) -> Result<(), ExtractError> {
        // End of the last byte written; a trailing hole needs an explicit length.
        let mut end = 0;
        if inode.is_compressed() {
            // Decoded through the bounded pcluster cache, one piece at a time.
            let want = inode.size.min(128 << 10) as usize;
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
            let buf = &mut self.buf[..want];
            while end < inode.size {
                self.progress.check_cancelled()?;
                let n = self.img.read_at(inode, end, buf)?;
                if n == 0 {
                    break;
                }
                if buf[..n].iter().any(|&b| b != 0) {
                    f.write_all_at(&buf[..n], end).map_err(io("write", path))?;
                }
                end += n as u64;
                self.report.bytes_written = self.report.bytes_written.saturating_add(n as u64);
            }
            // Zero pieces were skipped: the length makes them (and a trailing run) holes.
            f.set_len(inode.size).map_err(io("truncate", path))?;
            return Ok(());
        }
        for ext in self.img.data_extents(inode)? {
            let Some(phys) = ext.physical else {
                continue; // a hole: left unwritten, so the file stays sparse
            };
            self.progress.check_cancelled()?;
            self.copy_to_file(phys, ext.length, f, ext.logical)
                .map_err(io("write", path))?;
            self.report.bytes_written = self.report.bytes_written.saturating_add(ext.length);
            end = ext.end();
        }
        if end < inode.size {
            f.set_len(inode.size).map_err(io("truncate", path))?;
        }
        Ok(())
    }

    /// Copies `len` image bytes at `offset` into `out` at `out_offset`: straight from an
    /// image in memory (a mapped file included), else in the kernel (`copy_file_range`)
    /// when the image is a file, else through a buffer. Used for extraction of uncompressed
    /// data.
    fn copy_to_file(
        &mut self,
        offset: u64,
        len: u64,
        out: &fs::File,
        out_offset: u64,
    ) -> std::io::Result<()> {
        let img = self.img;
        img.check_range(offset, len)
            .map_err(std::io::Error::other)?;
        if let Some(bytes) = img.source().as_slice() {
            // check_range bounded the range by the source's length.
            return out.write_all_at(&bytes[offset as usize..(offset + len) as usize], out_offset);
        }
        let (mut src_off, mut dst_off, mut left) = (offset, out_offset, len);
        if let Some(f) = img.source().as_fd().filter(|_| !self.no_copy_range) {
            while left > 0 {
                let chunk = left.min(1 << 30) as usize;
                match rustix::fs::copy_file_range(
                    f,
                    Some(&mut src_off),
                    out,
                    Some(&mut dst_off),
                    chunk,
                ) {
                    Ok(0) => break,
                    Ok(n) => left -= n as u64,
                    // Not supported between these filesystems: a buffer, from now on.
                    Err(_) => {
                        self.no_copy_range = true;
                        break;
                    }
                }
            }
        }
        let want = left.min(128 * 1024) as usize;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        while left > 0 {
            let n = left.min(want as u64) as usize;
            img.source().read_exact_at(&mut self.buf[..n], src_off)?;
            out.write_all_at(&self.buf[..n], dst_off)?;
            src_off += n as u64;
            dst_off += n as u64;
            left -= n as u64;
        }
        Ok(())
    }

    /// Owner, mode, xattrs, then mtime (in that order: chown clears set-id bits and
    /// file capabilities).
    /// With `fd` (a regular file just written) the calls go through the descriptor.
    fn set_meta(
        &self,
        path: &Path,
        inode: &Inode,
        fd: Option<&fs::File>,
    ) -> Result<(), ExtractError> {
        let symlink = inode.is_symlink();
        if self.opts.preserve_owner {
            match fd {
                Some(f) => std::os::unix::fs::fchown(f, Some(inode.uid), Some(inode.gid)),
                None => std::os::unix::fs::lchown(path, Some(inode.uid), Some(inode.gid)),
            }
            .map_err(io("chown", path))?;
        }
        if !symlink {
            let perm = fs::Permissions::from_mode(u32::from(inode.permissions()));
            match fd {
                Some(f) => f.set_permissions(perm),
                None => fs::set_permissions(path, perm),
            }
            .map_err(io("chmod", path))?;
        }
        if self.opts.xattrs && inode.xattr_icount != 0 {
            for x in self.img.xattrs(inode)? {
                if x.name_index == 0 || x.filter_key().0 == 0 {
                    // Hidden names (index 0, or a long prefix over index 0, such as
                    // erofs-utils' default fingerprint name) have no VFS handler.
                    continue;
                }
                let name = OsStr::from_bytes(&x.name);
                match fd {
                    Some(f) => rustix::fs::fsetxattr(f, name, &x.value, XattrFlags::empty()),
                    None => rustix::fs::lsetxattr(path, name, &x.value, XattrFlags::empty()),
                }
                .map_err(rio("setxattr", path))?;
            }
        }
        let t = Timespec {
            tv_sec: inode.mtime,
            tv_nsec: i64::from(inode.mtime_nsec.min(999_999_999)) as _,
        };
        let times = Timestamps {
            last_access: t,
            last_modification: t,
        };
        match fd {
            Some(f) => rustix::fs::futimens(f, &times),
            None => rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW),
        }
        .map_err(rio("utimensat", path))?;
        Ok(())
    }

    /// Creates the non-directory; `Ok(None)` for an extra hard link (no metadata to set),
    /// else `Ok(Some(fd))` with the open file for regular files.
    fn extract_one(
        &mut self,
        path: &Path,
        inode: &Inode,
    ) -> Result<Option<Option<fs::File>>, ExtractError> {
        if inode.nlink > 1
            && let Some(first) = self.first_path.get(&inode.nid)
        {
            self.clear(path)?;
            fs::hard_link(first, path).map_err(io("link", path))?;
            self.report.hard_links += 1;
            return Ok(None);
        }
        let mut fd = None;
        self.clear(path)?;
        let perm = Mode::from_raw_mode(0o600);
        match inode.file_type() {
            FileType::Regular => {
                fd = Some(self.write_file(path, inode)?);
                self.report.files += 1;
            }
            FileType::Symlink => {
                let target = self.img.readlink(inode)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), path)
                    .map_err(io("symlink", path))?;
                self.report.symlinks += 1;
            }
            FileType::CharDevice | FileType::BlockDevice => {
                let (ma, mi) = inode.rdev().unwrap_or((0, 0));
                let kind = if inode.file_type() == FileType::CharDevice {
                    rustix::fs::FileType::CharacterDevice
                } else {
                    rustix::fs::FileType::BlockDevice
                };
                rustix::fs::mknodat(CWD, path, kind, perm, rustix::fs::makedev(ma, mi))
                    .map_err(rio("mknod", path))?;
                self.report.special_files += 1;
            }
            FileType::Fifo => {
                rustix::fs::mknodat(CWD, path, rustix::fs::FileType::Fifo, perm, 0)
                    .map_err(rio("mkfifo", path))?;
                self.report.special_files += 1;
            }
            FileType::Socket => {
                rustix::fs::mknodat(CWD, path, rustix::fs::FileType::Socket, perm, 0)
                    .map_err(rio("mknod", path))?;
                self.report.special_files += 1;
            }
            FileType::Directory | FileType::Unknown => {}
        }
        if inode.nlink > 1 {
            self.first_path.insert(inode.nid, path.to_owned());
        }
        Ok(Some(fd))
    }
}

/// Extracts the subtree at `nid` (use [`Image::root_nid`] for everything) into `dest`,
/// which is created if missing. Stops at the first error, or with
/// [`ExtractError::Cancelled`] when `progress` says so (it is asked before each entry and
/// each piece of a file's data). A file cut short by either is removed; the directories
/// created so far keep the mode 0700 they have while being filled.
pub fn extract(
    img: &Image,
    nid: u64,
    dest: &Path,
    opts: ExtractOptions,
    progress: &dyn Progress,
) -> Result<ExtractReport, ExtractError> {
    let mut x = Extractor {
        img,
        opts,
        progress,
        report: ExtractReport::default(),
        first_path: crate::nidmap::NidMap::default(),
        buf: Vec::new(),
        no_copy_range: false,
    };
    let mut dirs: Vec<(PathBuf, Inode)> = Vec::new();
    progress.start(Some(img.superblock().inos.get()), None);
    let mut batch = crate::progress::Batched::new(progress);
    let root = img.inode(nid)?;
    if !root.is_dir() {
        return Err(Error::NotADirectory { nid }.into());
    }
    for entry in img.walk_from(nid, b"/".to_vec())? {
        if let Err(cancelled) = progress.check_cancelled() {
            progress.finish();
            return Err(cancelled.into());
        }
        let e = entry?;
        batch.step();
        let rel = e.path.strip_prefix(b"/").unwrap_or(&e.path);
        let path = dest.join(Path::new(OsStr::from_bytes(rel)));
        if e.inode.is_dir() {
            x.make_dir(&path, rel.is_empty())?;
            // Writable while children are added; the real mode comes afterwards.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                .map_err(io("chmod", &path))?;
            x.report.directories += 1;
            dirs.push((path, e.inode));
        } else if let Some(fd) = x.extract_one(&path, &e.inode)? {
            x.set_meta(&path, &e.inode, fd.as_ref())?;
        }
    }
    // Directory metadata last, deepest first, so that adding children does not change
    // their mtime and read-only directories do not block their children.
    for (path, inode) in dirs.iter().rev() {
        x.set_meta(path, inode, None)?;
    }
    batch.flush();
    progress.finish();
    Ok(x.report)
}
