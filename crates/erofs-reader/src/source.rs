//! Where an image's bytes come from: any type that answers positioned reads.
//!
//! [`Image`](crate::Image) reads its source only through [`ReadAt`], so a file, a block
//! device, bytes in memory (borrowed or owned), a memory map, or later a FUSE or blob backend
//! all plug in the same way. Reads are positioned and take `&self`, so one image can be read
//! by many threads at once (the parallel walk, fingerprint hashing); that is why the trait
//! requires `Send + Sync`.
//!
//! The reader checks every offset against [`ReadAt::size`] before it reads, so an
//! implementation only has to fill the buffer or fail.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// A source of image bytes read at positions.
pub trait ReadAt: Send + Sync + std::fmt::Debug {
    /// Fills `buf` with the bytes at `offset`, or fails; a short read is an error
    /// ([`io::ErrorKind::UnexpectedEof`]).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// The size of the source in bytes, read once when the image is opened.
    fn size(&self) -> io::Result<u64>;

    /// The whole source when it already sits in memory. The reader then reads from it
    /// directly and skips its metadata cache.
    fn as_slice(&self) -> Option<&[u8]> {
        None
    }

    /// The file descriptor behind the source, when there is one, so that extraction can
    /// copy data in the kernel (`copy_file_range`) instead of through a buffer.
    fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        None
    }
}

/// Copies from `bytes`, which must hold the whole range.
fn read_slice(bytes: &[u8], buf: &mut [u8], offset: u64) -> io::Result<()> {
    let src = usize::try_from(offset)
        .ok()
        .and_then(|start| bytes.get(start..start.checked_add(buf.len())?))
        .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
    buf.copy_from_slice(src);
    Ok(())
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        let meta = self.metadata()?;
        // A block device reports length 0 in its metadata; its size is where it ends.
        if std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
            std::io::Seek::seek(&mut &*self, std::io::SeekFrom::End(0))
        } else {
            Ok(meta.len())
        }
    }

    fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        Some(AsFd::as_fd(self))
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        read_slice(self, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn as_slice(&self) -> Option<&[u8]> {
        Some(self)
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        read_slice(self, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn as_slice(&self) -> Option<&[u8]> {
        Some(self)
    }
}

#[cfg(feature = "mmap")]
impl ReadAt for memmap2::Mmap {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        read_slice(self, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn as_slice(&self) -> Option<&[u8]> {
        Some(self)
    }
}

/// Forwards every method, so that a reference or a shared pointer to a source is a source.
macro_rules! forward {
    ($($ty:ty),*) => {$(
        impl<T: ReadAt + ?Sized> ReadAt for $ty {
            fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
                (**self).read_exact_at(buf, offset)
            }

            fn size(&self) -> io::Result<u64> {
                (**self).size()
            }

            fn as_slice(&self) -> Option<&[u8]> {
                (**self).as_slice()
            }

            fn as_fd(&self) -> Option<BorrowedFd<'_>> {
                (**self).as_fd()
            }
        }
    )*};
}

forward!(&T, Box<T>, Arc<T>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_past_the_end_of_memory_is_an_error_not_a_panic() {
        let bytes = [1u8, 2, 3];
        let mut buf = [0u8; 2];
        assert!(bytes[..].read_exact_at(&mut buf, 2).is_err());
        assert!(bytes[..].read_exact_at(&mut buf, u64::MAX).is_err());
        bytes[..].read_exact_at(&mut buf, 1).unwrap();
        assert_eq!(buf, [2, 3]);
    }
}
