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

/// Why a directory block is invalid, by the rules Linux applies when it reads one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirBlockError {
    /// Fewer valid bytes than one dirent.
    TooShort {
        /// Valid bytes in the block.
        valid: usize,
    },
    /// The first `nameoff` (which gives the dirent count) is not a non-zero multiple of 12
    /// below the valid bytes.
    FirstNameoff {
        /// The value found.
        nameoff: usize,
    },
    /// A name lies outside the block's name area, or is empty.
    NameOutside {
        /// Dirent index.
        index: usize,
        /// Name start.
        start: usize,
        /// Name end.
        end: usize,
        /// Start of the name area (the first `nameoff`).
        area_start: usize,
        /// End of the name area (the valid bytes).
        area_end: usize,
    },
    /// A name longer than [`MAX_NAME_LEN`].
    NameTooLong {
        /// Dirent index.
        index: usize,
        /// Its length.
        len: usize,
    },
    /// A name containing `/` or NUL.
    BadName {
        /// Dirent index.
        index: usize,
    },
    /// A `file_type` byte above 7.
    BadFileType {
        /// Dirent index.
        index: usize,
        /// The byte.
        raw: u8,
    },
}

impl core::fmt::Display for DirBlockError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::TooShort { valid } => write!(f, "only {valid} bytes, less than one dirent"),
            Self::FirstNameoff { nameoff } => write!(f, "first nameoff {nameoff} is invalid"),
            Self::NameOutside {
                index,
                start,
                end,
                area_start,
                area_end,
            } => write!(
                f,
                "dirent {index}: name at {start}..{end} outside the name area {area_start}..{area_end}"
            ),
            Self::NameTooLong { index, len } => write!(f, "dirent {index}: name of {len} bytes"),
            Self::BadName { index } => write!(f, "dirent {index}: name contains '/' or NUL"),
            Self::BadFileType { index, raw } => {
                write!(f, "dirent {index}: file_type {raw} is invalid")
            }
        }
    }
}

impl core::error::Error for DirBlockError {}

/// One entry of a directory block, decoded and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirEntryRef<'a> {
    /// Target inode.
    pub nid: u64,
    /// The name: raw bytes, 1..=255 of them, without `/` or NUL.
    pub name: &'a [u8],
    /// The entry's type.
    pub file_type: FileType,
    /// Offset of the name in the block.
    pub nameoff: u16,
    /// Byte offset of the 12-byte dirent in the block.
    pub dirent_offset: usize,
}

/// A directory block (§6): dirents from the start, then their names; the first dirent's
/// `nameoff` gives the count, and each name ends where the next begins (the last at the
/// first NUL or the end of the valid bytes).
#[derive(Clone, Copy, Debug)]
pub struct DirBlock<'a> {
    dirents: &'a [Dirent],
    /// The block's bytes that belong to the directory.
    valid: &'a [u8],
}

impl<'a> DirBlock<'a> {
    /// Decodes the header of a block of which `valid` bytes belong to the directory
    /// (`min(blksz, i_size - block_start)`).
    pub fn parse(block: &'a [u8], valid: usize) -> Result<Self, DirBlockError> {
        let valid = &block[..valid.min(block.len())];
        let Ok((first, _)) = Dirent::ref_from_prefix(valid) else {
            return Err(DirBlockError::TooShort { valid: valid.len() });
        };
        let nameoff = usize::from(first.nameoff.get());
        if nameoff < DIRENT_SIZE || nameoff >= valid.len() || nameoff % DIRENT_SIZE != 0 {
            return Err(DirBlockError::FirstNameoff { nameoff });
        }
        let dirents = <[Dirent]>::ref_from_bytes(&valid[..nameoff])
            .map_err(|_| DirBlockError::FirstNameoff { nameoff })?;
        Ok(Self { dirents, valid })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.dirents.len()
    }

    /// Whether there are none (never true for a parsed block).
    pub fn is_empty(&self) -> bool {
        self.dirents.is_empty()
    }

    /// The raw dirents.
    pub fn dirents(&self) -> &'a [Dirent] {
        self.dirents
    }

    /// Entry `index`, checked.
    pub fn entry(&self, index: usize) -> Result<DirEntryRef<'a>, DirBlockError> {
        let d = &self.dirents[index];
        let area_start = self.dirents.len() * DIRENT_SIZE;
        let start = usize::from(d.nameoff.get());
        let end = match self.dirents.get(index + 1) {
            Some(next) => usize::from(next.nameoff.get()),
            None => {
                let tail = self.valid.get(start..).unwrap_or(&[]);
                start + tail.iter().position(|&b| b == 0).unwrap_or(tail.len())
            }
        };
        if start < area_start || end > self.valid.len() || end <= start {
            return Err(DirBlockError::NameOutside {
                index,
                start,
                end,
                area_start,
                area_end: self.valid.len(),
            });
        }
        let name = &self.valid[start..end];
        if name.len() > MAX_NAME_LEN {
            return Err(DirBlockError::NameTooLong {
                index,
                len: name.len(),
            });
        }
        if name.contains(&b'/') || name.contains(&0) {
            return Err(DirBlockError::BadName { index });
        }
        let file_type = FileType::from_raw(d.file_type).ok_or(DirBlockError::BadFileType {
            index,
            raw: d.file_type,
        })?;
        Ok(DirEntryRef {
            nid: d.nid.get(),
            name,
            file_type,
            nameoff: d.nameoff.get(),
            dirent_offset: index * DIRENT_SIZE,
        })
    }

    /// Every entry in order, each checked.
    pub fn entries(&self) -> impl Iterator<Item = Result<DirEntryRef<'a>, DirBlockError>> + '_ {
        (0..self.len()).map(|i| self.entry(i))
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

    /// Two dirents ("a" and "bc") and the names after them.
    fn block(names: &[&[u8]], types: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        let mut off = names.len() * DIRENT_SIZE;
        for (i, n) in names.iter().enumerate() {
            let mut d = Dirent::new_zeroed();
            d.nid.set(100 + i as u64);
            d.nameoff.set(off as u16);
            d.file_type = types[i];
            b.extend_from_slice(d.as_bytes());
            off += n.len();
        }
        for n in names {
            b.extend_from_slice(n);
        }
        b
    }

    #[test]
    fn a_block_is_dirents_then_names_the_last_ending_at_nul_or_the_valid_end() {
        let mut b = block(&[b"a", b"bc"], &[1, 2]);
        let valid = b.len();
        b.extend_from_slice(&[0; 5]);
        let d = DirBlock::parse(&b, valid).unwrap();
        let e: Vec<_> = d.entries().collect::<Result<_, _>>().unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].nid, e[0].name, e[0].file_type),
            (100, &b"a"[..], FileType::Regular)
        );
        assert_eq!(
            (e[1].name, e[1].nameoff, e[1].dirent_offset),
            (&b"bc"[..], 25, 12)
        );
        // With the padding counted as valid, the last name still ends at the first NUL.
        let d = DirBlock::parse(&b, b.len()).unwrap();
        assert_eq!(d.entry(1).unwrap().name, b"bc");
    }

    #[test]
    fn blocks_that_linux_rejects_are_rejected() {
        let good = block(&[b"a", b"bc"], &[1, 2]);
        assert_eq!(
            DirBlock::parse(&good, 11).unwrap_err(),
            DirBlockError::TooShort { valid: 11 }
        );
        let mut b = good.clone();
        b[8] = 13; // first nameoff not a multiple of 12
        assert_eq!(
            DirBlock::parse(&b, b.len()).unwrap_err(),
            DirBlockError::FirstNameoff { nameoff: 13 }
        );
        let b = block(&[b"a", b"b/"], &[1, 2]);
        let d = DirBlock::parse(&b, b.len()).unwrap();
        assert_eq!(d.entry(1).unwrap_err(), DirBlockError::BadName { index: 1 });
        let b = block(&[b"a"], &[9]);
        let d = DirBlock::parse(&b, b.len()).unwrap();
        assert_eq!(
            d.entry(0).unwrap_err(),
            DirBlockError::BadFileType { index: 0, raw: 9 }
        );
        let mut b = block(&[b"a", b"bc"], &[1, 2]);
        b[12 + 8] = 200; // second name starts past the valid bytes
        let d = DirBlock::parse(&b, b.len()).unwrap();
        assert!(matches!(
            d.entry(0).unwrap_err(),
            DirBlockError::NameOutside { index: 0, .. }
        ));
    }

    #[test]
    fn file_type_follows_mode() {
        assert_eq!(FileType::from_mode(0o040755), Some(FileType::Directory));
        assert_eq!(FileType::from_mode(0o120777), Some(FileType::Symlink));
        assert_eq!(FileType::from_mode(0o000644), None);
    }
}
