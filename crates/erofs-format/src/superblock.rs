//! The superblock (§2) and the device table slot (§10).

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The superblock magic, `0xE0F5E1E2`.
pub const EROFS_MAGIC: u32 = 0xE0F5_E1E2;
/// The superblock starts at this byte of the image; bytes before it are left alone.
pub const SUPERBLOCK_OFFSET: usize = 1024;
/// Size of the base superblock (without extension slots).
pub const SUPERBLOCK_SIZE: usize = 128;

/// The 128-byte base superblock at byte 1024.
///
/// Field names follow erofs-utils 1.9.3. Linux 6.12 calls `epoch` `build_time`, `fixed_nsec`
/// `build_time_nsec` and `blocks_lo` `blocks`; the meaning is the same.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct SuperBlock {
    /// Must equal [`EROFS_MAGIC`].
    pub magic: U32,
    /// CRC32C of block 0 from byte 1024, valid with compat `SB_CHKSUM` (§14).
    pub checksum: U32,
    /// Compat feature bits ([`crate::Compat`]).
    pub feature_compat: U32,
    /// log2 of the block size.
    pub blkszbits: u8,
    /// Number of 16-byte superblock extension slots.
    pub sb_extslots: u8,
    /// Root directory nid (16 bits) without the 48-bit layout.
    pub root_nid: U16,
    /// Number of inodes, for statfs.
    pub inos: U64,
    /// Base time in seconds for compact inodes.
    pub epoch: U64,
    /// Nanoseconds used for every compact inode.
    pub fixed_nsec: U32,
    /// Block count of the primary device (low 32 bits).
    pub blocks_lo: U32,
    /// Start block of the nid space.
    pub meta_blkaddr: U32,
    /// Start block of the shared xattr area.
    pub xattr_blkaddr: U32,
    /// Volume UUID.
    pub uuid: [u8; 16],
    /// Volume label; at most 15 bytes plus NUL for Linux 6.12.
    pub volume_name: [u8; 16],
    /// Incompat feature bits ([`crate::Incompat`]).
    pub feature_incompat: U32,
    /// With `COMPR_CFGS`: bitmap of the compression algorithms used; else the LZ4 window hint.
    pub available_compr_algs: U16,
    /// Number of devices besides the primary one.
    pub extra_devices: U16,
    /// The device table starts at byte `devt_slotoff * 128`.
    pub devt_slotoff: U16,
    /// Must be 0 (Linux 6.12 refuses anything else).
    pub dirblkbits: u8,
    /// Number of long xattr name prefixes.
    pub xattr_prefix_count: u8,
    /// Long prefix table position, in 4-byte units.
    pub xattr_prefix_start: U32,
    /// Nid of the packed inode, 0 if none.
    pub packed_nid: U64,
    /// Must be 0 for the xattr name filter to be used.
    pub xattr_filter_reserved: u8,
    /// Long-prefix index of the fingerprint xattr name, with compat `ISHARE_XATTRS` (§15).
    pub ishare_xattr_prefix_id: u8,
    /// Reserved, 0.
    pub reserved: [u8; 2],
    /// 48-bit layout: build time minus `epoch`.
    pub build_time: U32,
    /// 48-bit layout: 64-bit root nid, used when non-zero.
    pub rootnid_8b: U64,
    /// Reserved, 0.
    pub reserved2: [u8; 8],
}

const _: () = assert!(size_of::<SuperBlock>() == SUPERBLOCK_SIZE);

impl SuperBlock {
    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        1u64 << self.blkszbits
    }

    /// Bytes of the filesystem: `blocks_lo` blocks. What follows them in an image file
    /// (an appended dm-verity tree, say) is not part of it.
    pub fn filesystem_bytes(&self) -> u64 {
        u64::from(self.blocks_lo.get()) * self.block_size()
    }

    /// On-disk superblock size: 128 bytes plus 16 per extension slot.
    pub fn on_disk_size(&self) -> usize {
        SUPERBLOCK_SIZE + 16 * self.sb_extslots as usize
    }

    /// The volume label up to its first NUL.
    pub fn label(&self) -> &[u8] {
        let end = self.volume_name.iter().position(|&b| b == 0).unwrap_or(16);
        &self.volume_name[..end]
    }

    /// Compat feature bits, typed.
    pub fn compat(&self) -> crate::Compat {
        crate::Compat::from_bits(self.feature_compat.get())
    }

    /// Incompat feature bits, typed.
    pub fn incompat(&self) -> crate::Incompat {
        crate::Incompat::from_bits(self.feature_incompat.get())
    }

    /// The root nid: `rootnid_8b` under the 48-bit layout when non-zero, else the 16-bit field.
    pub fn root_nid(&self) -> u64 {
        if self.incompat().contains(crate::Incompat::BIT48) && self.rootnid_8b.get() != 0 {
            self.rootnid_8b.get()
        } else {
            u64::from(self.root_nid.get())
        }
    }
}

/// Image byte offset of a superblock field: `sb_field!(name)` gives `1024 + offset_of!`,
/// so that error locations come from the struct, not from hand-written numbers.
#[macro_export]
macro_rules! sb_field {
    ($field:ident) => {
        ($crate::SUPERBLOCK_OFFSET + core::mem::offset_of!($crate::SuperBlock, $field)) as u64
    };
}

/// One 128-byte device table slot (§10).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct DeviceSlot {
    /// Device tag, e.g. a digest or blob id.
    pub tag: [u8; 64],
    /// Block count (low 32 bits).
    pub blocks_lo: U32,
    /// Start block in the unified address space (low 32 bits).
    pub uniaddr_lo: U32,
    /// 48-bit layout: high bits of the block count.
    pub blocks_hi: U16,
    /// 48-bit layout: high bits of the unified address.
    pub uniaddr_hi: U16,
    /// Reserved, 0.
    pub reserved: [u8; 52],
}

const _: () = assert!(size_of::<DeviceSlot>() == 128);

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn field_offsets_match_the_spec_table() {
        let mut sb = SuperBlock::new_zeroed();
        sb.ishare_xattr_prefix_id = 0xAB;
        sb.xattr_prefix_count = 0xCD;
        sb.blkszbits = 12;
        sb.root_nid.set(0x1234);
        let bytes = sb.as_bytes();
        assert_eq!(bytes[105], 0xAB, "ishare_xattr_prefix_id is at offset 105");
        assert_eq!(bytes[91], 0xCD, "xattr_prefix_count is at offset 91");
        assert_eq!(bytes[12], 12, "blkszbits is at offset 12");
        assert_eq!(
            &bytes[14..16],
            &[0x34, 0x12],
            "root nid is a le16 at offset 14"
        );
    }
}

#[cfg(test)]
mod field_offset_tests {
    #[test]
    fn sb_field_gives_image_offsets_of_the_table_in_section_2() {
        assert_eq!(crate::sb_field!(sb_extslots), 1024 + 13);
        assert_eq!(crate::sb_field!(root_nid), 1024 + 14);
        assert_eq!(crate::sb_field!(dirblkbits), 1024 + 90);
        assert_eq!(crate::sb_field!(xattr_prefix_count), 1024 + 91);
        assert_eq!(crate::sb_field!(ishare_xattr_prefix_id), 1024 + 105);
    }
}
