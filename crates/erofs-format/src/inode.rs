//! Inodes (§4): the `i_format` word, the two inode kinds, and device numbers.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Inodes sit in 32-byte slots; nid × 32 is the byte offset inside the nid space.
pub const INODE_SLOT_SIZE: usize = 32;
/// Size of a compact inode.
pub const INODE_COMPACT_SIZE: usize = 32;
/// Size of an extended inode.
pub const INODE_EXTENDED_SIZE: usize = 64;

/// The data layout stored in bits 1..3 of `i_format` (§4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataLayout {
    /// Contiguous blocks from `startblk`.
    FlatPlain,
    /// Compressed, full 8-byte lcluster indexes.
    CompressedFull,
    /// Full blocks from `startblk`, then the tail right after inode and xattrs.
    FlatInline,
    /// Compressed, compact 2B/4B indexes.
    CompressedCompact,
    /// Chunk table after inode and xattrs.
    ChunkBased,
}

impl DataLayout {
    /// Decodes the 3-bit layout value; 5..7 are reserved and give `None`.
    pub const fn from_raw(raw: u16) -> Option<Self> {
        Some(match raw {
            0 => Self::FlatPlain,
            1 => Self::CompressedFull,
            2 => Self::FlatInline,
            3 => Self::CompressedCompact,
            4 => Self::ChunkBased,
            _ => return None,
        })
    }

    /// The 3-bit on-disk value.
    pub const fn raw(self) -> u16 {
        match self {
            Self::FlatPlain => 0,
            Self::CompressedFull => 1,
            Self::FlatInline => 2,
            Self::CompressedCompact => 3,
            Self::ChunkBased => 4,
        }
    }

    /// Whether data is compressed.
    pub const fn is_compressed(self) -> bool {
        matches!(self, Self::CompressedFull | Self::CompressedCompact)
    }

    /// Name as printed by the tools (erofs-utils spelling).
    pub const fn name(self) -> &'static str {
        match self {
            Self::FlatPlain => "flat_plain",
            Self::CompressedFull => "compressed_full",
            Self::FlatInline => "flat_inline",
            Self::CompressedCompact => "compressed_compact",
            Self::ChunkBased => "chunk_based",
        }
    }
}

/// The decoded `i_format` word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InodeFormat {
    /// Extended (64-byte) rather than compact (32-byte).
    pub extended: bool,
    /// The data layout.
    pub layout: DataLayout,
    /// Bit 4 (48-bit layout only: `NLINK_1` or `DOT_OMITTED`).
    pub bit4: bool,
}

impl InodeFormat {
    /// Decodes the `i_format` field at the start of an inode slot; `None` when the slot is
    /// shorter than the field.
    pub fn of_slot(slot: &[u8]) -> Option<Result<Self, u16>> {
        let (raw, _) = U16::read_from_prefix(slot).ok()?;
        Some(Self::decode(raw.get()))
    }

    /// Decodes `i_format`. Returns `Err(raw)` for reserved layouts or bits 5..15.
    pub const fn decode(raw: u16) -> Result<Self, u16> {
        if raw & !0x1F != 0 {
            return Err(raw);
        }
        match DataLayout::from_raw((raw >> 1) & 7) {
            Some(layout) => Ok(Self {
                extended: raw & 1 != 0,
                layout,
                bit4: raw & 0x10 != 0,
            }),
            None => Err(raw),
        }
    }

    /// Encodes `i_format`.
    pub const fn encode(self) -> u16 {
        (self.extended as u16) | (self.layout.raw() << 1) | ((self.bit4 as u16) << 4)
    }

    /// On-disk size of the inode core.
    pub const fn inode_size(self) -> usize {
        if self.extended {
            INODE_EXTENDED_SIZE
        } else {
            INODE_COMPACT_SIZE
        }
    }
}

/// A 32-byte compact inode (§4.3).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct InodeCompact {
    /// `i_format`.
    pub format: U16,
    /// 0 = no xattrs, else body = `12 + 4 * (icount - 1)` bytes.
    pub xattr_icount: U16,
    /// Type and permission bits.
    pub mode: U16,
    /// nlink.
    pub nlink: U16,
    /// 32-bit size.
    pub size: U32,
    /// Seconds after the superblock epoch (ignored by Linux 6.12).
    pub mtime: U32,
    /// Start block, rdev, chunk info or compressed block count (§4.5).
    pub i_u: U32,
    /// Informational inode number.
    pub ino: U32,
    /// Owner.
    pub uid: U16,
    /// Group.
    pub gid: U16,
    /// Reserved, 0.
    pub reserved: U32,
}

const _: () = assert!(size_of::<InodeCompact>() == INODE_COMPACT_SIZE);

/// A 64-byte extended inode (§4.4).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct InodeExtended {
    /// `i_format`.
    pub format: U16,
    /// 0 = no xattrs, else body = `12 + 4 * (icount - 1)` bytes.
    pub xattr_icount: U16,
    /// Type and permission bits.
    pub mode: U16,
    /// 48-bit layout high bits; otherwise 0.
    pub i_nb: U16,
    /// 64-bit size.
    pub size: U64,
    /// Start block, rdev, chunk info or compressed block count (§4.5).
    pub i_u: U32,
    /// Informational inode number.
    pub ino: U32,
    /// Owner.
    pub uid: U32,
    /// Group.
    pub gid: U32,
    /// Seconds since the Unix epoch.
    pub mtime: U64,
    /// Nanoseconds of mtime.
    pub mtime_nsec: U32,
    /// Link count.
    pub nlink: U32,
    /// Reserved, 0.
    pub reserved: [u8; 16],
}

const _: () = assert!(size_of::<InodeExtended>() == INODE_EXTENDED_SIZE);

/// File-type bits of `i_mode`.
pub mod mode {
    /// Type mask.
    pub const S_IFMT: u16 = 0o170000;
    /// Socket.
    pub const S_IFSOCK: u16 = 0o140000;
    /// Symbolic link.
    pub const S_IFLNK: u16 = 0o120000;
    /// Regular file.
    pub const S_IFREG: u16 = 0o100000;
    /// Block device.
    pub const S_IFBLK: u16 = 0o060000;
    /// Directory.
    pub const S_IFDIR: u16 = 0o040000;
    /// Character device.
    pub const S_IFCHR: u16 = 0o020000;
    /// FIFO.
    pub const S_IFIFO: u16 = 0o010000;
}

/// Encodes a device number the way `i_u` stores it (Linux "new" encoding, §4.5).
pub const fn encode_rdev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

/// Decodes `i_u` of a device inode into `(major, minor)`.
pub const fn decode_rdev(raw: u32) -> (u32, u32) {
    let major = (raw & 0xfff00) >> 8;
    let minor = (raw & 0xff) | ((raw >> 12) & 0xfff00);
    (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn i_format_bit0_is_version_and_bits1to3_are_layout() {
        let f = InodeFormat::decode(0x0005).expect("valid");
        assert!(f.extended);
        assert_eq!(f.layout, DataLayout::FlatInline);
        assert_eq!(f.encode(), 0x0005);
        assert_eq!(
            InodeFormat::decode(0x000A),
            Err(0x000A),
            "layout 5 is reserved"
        );
        assert_eq!(
            InodeFormat::decode(0x0020),
            Err(0x0020),
            "bits 5..15 must be 0"
        );
    }

    #[test]
    fn rdev_uses_the_linux_new_encoding() {
        assert_eq!(encode_rdev(8, 1), 0x0000_0801);
        assert_eq!(encode_rdev(259, 0x12345), 0x1230_0000 | (259 << 8) | 0x45);
        for (ma, mi) in [(0, 0), (1, 3), (4095, 0xFFFFF), (259, 0x12345)] {
            assert_eq!(decode_rdev(encode_rdev(ma, mi)), (ma, mi));
        }
    }

    #[test]
    fn compact_inode_offsets() {
        let mut i = InodeCompact::new_zeroed();
        i.size.set(0x11223344);
        i.uid.set(0xBEEF);
        let b = i.as_bytes();
        assert_eq!(&b[8..12], &[0x44, 0x33, 0x22, 0x11]);
        assert_eq!(&b[24..26], &[0xEF, 0xBE]);
    }

    #[test]
    fn extended_inode_offsets() {
        let mut i = InodeExtended::new_zeroed();
        i.mtime.set(0x0102030405060708);
        i.nlink.set(7);
        let b = i.as_bytes();
        assert_eq!(b[32], 0x08);
        assert_eq!(b[44], 7);
    }
}
