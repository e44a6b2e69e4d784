//! Directory entries (§6).

use zerocopy::little_endian::{U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of one dirent.
pub const DIRENT_SIZE: usize = 12;
/// Longest name a dirent may carry.
pub const MAX_NAME_LEN: usize = 255;

/// A 12-byte directory entry. Names follow the dirent array inside the same block.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct Dirent {
    /// Target inode.
    pub nid: U64,
    /// Offset of the name inside this block.
    pub nameoff: U16,
    /// [`FileType`] value.
    pub file_type: u8,
    /// Reserved, 0.
    pub reserved: u8,
}

const _: () = assert!(size_of::<Dirent>() == DIRENT_SIZE);

impl Dirent {
    /// The first dirent of a directory block, whose `nameoff` gives the dirent count.
    pub fn first(block: &[u8]) -> Option<Dirent> {
        Dirent::read_from_prefix(block).ok().map(|(d, _)| d)
    }

    /// The `count` dirents at the start of a directory block, as typed records.
    pub fn slice(block: &[u8], count: usize) -> Option<&[Dirent]> {
        <[Dirent]>::ref_from_prefix_with_elems(block, count)
            .ok()
            .map(|(d, _)| d)
    }
}

/// The `file_type` byte of a dirent (Linux `FT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileType {
    /// 0.
    Unknown,
    /// 1.
    Regular,
    /// 2.
    Directory,
    /// 3.
    CharDevice,
    /// 4.
    BlockDevice,
    /// 5.
    Fifo,
    /// 6.
    Socket,
    /// 7.
    Symlink,
}

impl FileType {
    /// Decodes the dirent byte; values above 7 give `None`.
    pub const fn from_raw(raw: u8) -> Option<Self> {
        Some(match raw {
            0 => Self::Unknown,
            1 => Self::Regular,
            2 => Self::Directory,
            3 => Self::CharDevice,
            4 => Self::BlockDevice,
            5 => Self::Fifo,
            6 => Self::Socket,
            7 => Self::Symlink,
            _ => return None,
        })
    }

    /// The on-disk byte.
    pub const fn raw(self) -> u8 {
        self as u8
    }

    /// The type that `i_mode` implies, or `None` for a bogus mode.
    pub const fn from_mode(mode: u16) -> Option<Self> {
        use crate::inode::mode::*;
        Some(match mode & S_IFMT {
            S_IFREG => Self::Regular,
            S_IFDIR => Self::Directory,
            S_IFCHR => Self::CharDevice,
            S_IFBLK => Self::BlockDevice,
            S_IFIFO => Self::Fifo,
            S_IFSOCK => Self::Socket,
            S_IFLNK => Self::Symlink,
            _ => return None,
        })
    }

    /// Short lowercase name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Regular => "file",
            Self::Directory => "dir",
            Self::CharDevice => "chardev",
            Self::BlockDevice => "blockdev",
            Self::Fifo => "fifo",
            Self::Socket => "socket",
            Self::Symlink => "symlink",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn dirent_is_nid_then_nameoff_then_type() {
        let mut d = Dirent::new_zeroed();
        d.nid.set(0x0102);
        d.nameoff.set(36);
        d.file_type = FileType::Symlink.raw();
        assert_eq!(d.as_bytes(), &[2, 1, 0, 0, 0, 0, 0, 0, 36, 0, 7, 0]);
    }

    #[test]
    fn file_type_follows_mode() {
        assert_eq!(FileType::from_mode(0o040755), Some(FileType::Directory));
        assert_eq!(FileType::from_mode(0o120777), Some(FileType::Symlink));
        assert_eq!(FileType::from_mode(0o000644), None);
    }
}
