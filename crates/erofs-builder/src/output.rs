//! Where an image goes: what kind of thing the IMAGE path names decides how it is written.
//!
//! `mkfs` runs in pipelines and on devices, so the path is classified before a byte is
//! written:
//!
//! - a **block device** is written in place, after checking that it can hold the image
//!   ([`Output::capacity`]); renaming over it would replace the device node;
//! - a **character device**, a **fifo** or `-` (standard output) receives the image as a
//!   stream and is never replaced;
//! - anything else is a **regular file**. It is created unnamed (`O_TMPFILE`) in the target's
//!   directory and gets its name only in [`Output::commit`], so that no kill, not even
//!   `SIGKILL`, leaves a partial image behind. Where the filesystem lacks `O_TMPFILE`, a
//!   hidden temporary name is used instead; [`Output::temp_path`] names it so that the caller
//!   can remove it when a signal ends the process.
//!
//! A symlink is followed: the file it points to is the one replaced.
//!
//! Regular files and block devices are seekable ([`Output::is_seekable`]); streams are not.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, Mode, OFlags};

use crate::BuildError;

/// What the IMAGE path turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// A regular file, replaced atomically when the image is complete.
    Regular,
    /// A block device, written in place from offset 0.
    BlockDevice,
    /// A character device, a fifo or standard output: written front to back, never seeked.
    Stream,
}

/// How a regular file gets its name at commit.
#[derive(Debug)]
enum Pending {
    /// Devices and streams: nothing to rename.
    Nothing,
    /// An `O_TMPFILE` file in this directory, linked at commit.
    Unnamed { dir: File },
    /// The fallback: a hidden temporary name, renamed at commit and removed when dropped.
    Named(tempfile::TempPath),
}

/// An opened image output. Dropping it without [`Output::commit`] leaves the target as it
/// was (a device or stream keeps whatever was already written to it).
#[derive(Debug)]
pub struct Output {
    target: PathBuf,
    kind: OutputKind,
    file: File,
    pending: Pending,
}

/// Symlinks followed at most, as the kernel's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;

impl Output {
    /// Opens `path` for an image: `-` is standard output; a symlink is followed (also a
    /// dangling one: its target is created).
    pub fn create(path: &Path) -> Result<Self, BuildError> {
        Self::create_with(path, true)
    }

    /// As [`Output::create`]; with `unnamed` false a regular file is written under a
    /// visible temporary name even where `O_TMPFILE` works (to test that fallback).
    pub fn create_with(path: &Path, unnamed: bool) -> Result<Self, BuildError> {
        if path.as_os_str() == "-" {
            let fd = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| create_error(path, e))?;
            return Ok(Self {
                target: path.to_path_buf(),
                kind: OutputKind::Stream,
                file: File::from(fd),
                pending: Pending::Nothing,
            });
        }
        let target = resolve_symlinks(path)?;
        match std::fs::metadata(&target) {
            Ok(meta) => {
                let ft = meta.file_type();
                // Devices and fifos are written in place, never replaced: a block device
                // with positioned writes, the others as a stream.
                if ft.is_block_device() || ft.is_char_device() || ft.is_fifo() {
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&target)
                        .map_err(|e| create_error(path, e))?;
                    let kind = if ft.is_block_device() {
                        OutputKind::BlockDevice
                    } else {
                        OutputKind::Stream
                    };
                    return Ok(Self {
                        target,
                        kind,
                        file,
                        pending: Pending::Nothing,
                    });
                }
                if ft.is_dir() {
                    return Err(create_error(
                        path,
                        std::io::Error::from(std::io::ErrorKind::IsADirectory),
                    ));
                }
                if ft.is_socket() {
                    return Err(BuildError::InvalidOption(format!(
                        "{}: cannot write an image to a socket",
                        path.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(create_error(path, e)),
        }
        Self::regular(path, target, unnamed)
    }

    fn regular(path: &Path, target: PathBuf, unnamed: bool) -> Result<Self, BuildError> {
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if target.file_name().is_none() {
            return Err(create_error(
                path,
                std::io::Error::from(std::io::ErrorKind::IsADirectory),
            ));
        }
        let dir = rustix::fs::open(
            &parent,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(|e| create_error(path, e.into()))?;
        let tmpfile = || {
            rustix::fs::openat(
                &dir,
                ".",
                OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o644),
            )
        };
        match unnamed.then(tmpfile) {
            Some(Ok(fd)) if proc_fd_links() => {
                return Ok(Self {
                    target,
                    kind: OutputKind::Regular,
                    file: File::from(fd),
                    pending: Pending::Unnamed { dir },
                });
            }
            // Without /proc the unnamed file could not be linked at the end. Filesystems
            // without O_TMPFILE answer EOPNOTSUPP; older kernels EISDIR or EINVAL.
            _ => {}
        }
        let tmp = tempfile::Builder::new()
            .prefix(".mkfs-erofs-rs.")
            .tempfile_in(&parent)
            .map_err(|e| create_error(path, e))?;
        let (file, temp) = tmp.into_parts();
        // The temporary file is created 0600; give the image the usual mode.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = file.set_permissions(std::fs::Permissions::from_mode(0o644));
        }
        Ok(Self {
            target,
            kind: OutputKind::Regular,
            file,
            pending: Pending::Named(temp),
        })
    }

    /// What the path turned out to be.
    pub fn kind(&self) -> OutputKind {
        self.kind
    }

    /// Whether the image may be written out of order (positioned writes): regular files and
    /// block devices.
    pub fn is_seekable(&self) -> bool {
        self.kind != OutputKind::Stream
    }

    /// The path written, after following symlinks (`-` for standard output).
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The bytes a block device can hold; `None` for files and streams, which grow.
    pub fn capacity(&mut self) -> Result<Option<u64>, BuildError> {
        if self.kind != OutputKind::BlockDevice {
            return Ok(None);
        }
        let end = self
            .file
            .seek(SeekFrom::End(0))
            .and_then(|n| self.file.seek(SeekFrom::Start(0)).map(|_| n))
            .map_err(|e| create_error(&self.target, e))?;
        Ok(Some(end))
    }

    /// The file to write the image to.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// The visible temporary name of a regular file being written, where `O_TMPFILE` was
    /// unavailable: the caller removes it if a signal ends the process before the commit.
    pub fn temp_path(&self) -> Option<&Path> {
        match &self.pending {
            Pending::Named(p) => Some(p),
            _ => None,
        }
    }

    /// Gives a complete regular file its name, replacing the target atomically. Devices and
    /// streams were written in place and have nothing left to do.
    ///
    /// No fsync, like mkfs.erofs: the rename makes the new image visible only once it is
    /// complete, and filesystems order a replacing rename after the data (ext4
    /// auto_da_alloc, XFS, btrfs).
    pub fn commit(self) -> Result<(), BuildError> {
        let name = self.target.file_name().map(Path::new);
        match (self.pending, name) {
            (Pending::Nothing, _) => Ok(()),
            (Pending::Named(temp), _) => temp
                .persist(&self.target)
                .map(|_| ())
                .map_err(|e| create_error(&self.target, e.error)),
            (Pending::Unnamed { dir }, Some(name)) => {
                let fd = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                match rustix::fs::linkat(CWD, &fd, &dir, name, AtFlags::SYMLINK_FOLLOW) {
                    Ok(()) => Ok(()),
                    // An existing image is replaced by a rename, which is atomic; linkat
                    // cannot replace. The temporary name lives only between these two calls.
                    Err(rustix::io::Errno::EXIST) => {
                        let temp = temp_name(name);
                        rustix::fs::linkat(CWD, &fd, &dir, &temp, AtFlags::SYMLINK_FOLLOW)
                            .and_then(|()| {
                                rustix::fs::renameat(&dir, &temp, &dir, name).inspect_err(|_| {
                                    let _ = rustix::fs::unlinkat(&dir, &temp, AtFlags::empty());
                                })
                            })
                            .map_err(|e| create_error(&self.target, e.into()))
                    }
                    Err(e) => Err(create_error(&self.target, e.into())),
                }
            }
            (Pending::Unnamed { .. }, None) => Err(create_error(
                &self.target,
                std::io::Error::from(std::io::ErrorKind::IsADirectory),
            )),
        }
    }
}

fn create_error(path: &Path, error: std::io::Error) -> BuildError {
    BuildError::CreateOutput {
        path: path.to_path_buf(),
        error,
    }
}

/// Whether an `O_TMPFILE` file can be linked through `/proc/self/fd` (procfs mounted).
fn proc_fd_links() -> bool {
    Path::new("/proc/self/fd").is_dir()
}

/// A hidden name beside `name` for the instant between link and rename.
fn temp_name(name: &Path) -> PathBuf {
    let mut s = std::ffi::OsString::from(".");
    s.push(name.as_os_str());
    s.push(format!(".erofs-rs-{}", std::process::id()));
    PathBuf::from(s)
}

/// Follows `path` through symlinks (also a dangling last one) to the path to write.
fn resolve_symlinks(path: &Path) -> Result<PathBuf, BuildError> {
    let mut p = path.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                let link = std::fs::read_link(&p).map_err(|e| create_error(path, e))?;
                p = match p.parent() {
                    Some(parent) if link.is_relative() => parent.join(link),
                    _ => link,
                };
            }
            _ => return Ok(p),
        }
    }
    Err(create_error(
        path,
        std::io::Error::from_raw_os_error(rustix::io::Errno::LOOP.raw_os_error()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn an_uncommitted_regular_output_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let mut out = Output::create(&path).unwrap();
        assert_eq!(out.kind(), OutputKind::Regular);
        out.file().write_all(b"partial").unwrap();
        drop(out);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_commit_replaces_an_existing_file_and_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::write(&real, b"old").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("real", &link).unwrap();
        let mut out = Output::create(&link).unwrap();
        assert_eq!(out.target(), real);
        out.file().write_all(b"new").unwrap();
        out.commit().unwrap();
        assert_eq!(std::fs::read(&real).unwrap(), b"new");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["link", "real"]);
    }

    #[test]
    fn a_directory_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let err = Output::create(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(err.contains("directory"), "{err}");
    }
}
