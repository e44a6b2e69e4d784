//! The image file mapped into memory: the one `unsafe` call of fsck.erofs-rs.
//!
//! Reading every byte of an image through `pread` copies each one from the page cache
//! into a buffer first; on an lz4 image that copy and the system calls around it cost as
//! much CPU time as a third of the decoding. Through a map the decoders read the page
//! cache in place. The file descriptor stays open beside the map, so that extraction
//! still copies uncompressed data in the kernel (`copy_file_range`).
//!
//! The hazard of a map: if the file shrinks while it is mapped (another process truncates
//! it), or the disk fails under it, touching a page past the new end raises SIGBUS and
//! ends the process, where `pread` would have returned an error that fsck reports with
//! its location. Only regular files are mapped (a block device is read with `pread`, as
//! its I/O errors are the ones a fsck exists to report), and a file that cannot be mapped
//! is read with `pread` too.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use erofs_reader::ReadAt;

/// A regular file and its read-only map, which spans the whole file.
#[derive(Debug)]
pub struct MappedFile {
    map: memmap2::Mmap,
    file: File,
}

impl MappedFile {
    /// Maps `path` when it is a non-empty regular file; `None` when it is not, or when
    /// opening or mapping it fails (the caller then opens it the usual way, which reports
    /// the error).
    pub fn open(path: &Path) -> Option<MappedFile> {
        let file = File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        if !meta.is_file() || meta.len() == 0 {
            return None;
        }
        // SAFETY: the map is read-only and lives as long as the slices taken from it
        // (they borrow `self`). Rust also assumes that the bytes behind a shared slice do
        // not change: another process writing the image while it is checked breaks that,
        // as it does for every program that maps a file (memmap2's documented contract);
        // fsck.erofs-rs accepts it, as it checks an image, not a file being written.
        // Shrinking the file raises SIGBUS, as the module docs say.
        let map = unsafe { memmap2::MmapOptions::new().map(&file) }.ok()?;
        Some(MappedFile { map, file })
    }
}

impl ReadAt for MappedFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| self.map.get(start..start.checked_add(buf.len())?))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.map.len() as u64)
    }

    fn as_slice(&self) -> Option<&[u8]> {
        Some(&self.map)
    }

    fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(AsFd::as_fd(&self.file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_file_reads_the_bytes_of_the_file_and_keeps_its_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &bytes).unwrap();
        let m = MappedFile::open(&p).expect("a regular file is mapped");
        assert_eq!(m.size().unwrap(), bytes.len() as u64);
        assert_eq!(m.as_slice().unwrap(), &bytes[..]);
        let mut buf = [0u8; 7];
        m.read_exact_at(&mut buf, 4093).unwrap();
        assert_eq!(buf, bytes[4093..4100]);
        assert!(
            m.as_fd().is_some(),
            "extraction copies through the descriptor"
        );
    }

    #[test]
    fn a_read_past_the_end_of_the_map_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, [1u8, 2, 3]).unwrap();
        let m = MappedFile::open(&p).unwrap();
        let mut buf = [0u8; 2];
        assert!(m.read_exact_at(&mut buf, 2).is_err());
        assert!(m.read_exact_at(&mut buf, u64::MAX).is_err());
    }

    #[test]
    fn what_is_not_a_non_empty_regular_file_is_left_to_pread() {
        let dir = tempfile::tempdir().unwrap();
        assert!(MappedFile::open(dir.path()).is_none(), "a directory");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, []).unwrap();
        assert!(MappedFile::open(&empty).is_none(), "an empty file");
        assert!(MappedFile::open(&dir.path().join("missing")).is_none());
        assert!(
            MappedFile::open(Path::new("/dev/null")).is_none(),
            "a device"
        );
    }
}
