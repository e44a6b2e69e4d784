//! The EROFS on-disk format, with no I/O.
//!
//! Every structure here is a plain little-endian type whose size is checked at compile
//! time. Readers and writers share these definitions, so no other crate computes an
//! on-disk offset by hand. The reference is `erofs-format.md` in the project's shared docs;
//! section numbers in comments point there.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod acl;
pub mod checksum;
pub mod chunk;
pub mod compress;
pub mod dirent;
pub mod features;
pub mod inode;
pub mod superblock;
pub mod xattr;

pub use checksum::{
    checksum_of_head, seal_checksum, superblock_checksum, superblock_checksum_range,
};
pub use chunk::{
    CHUNK_FORMAT_48BIT, CHUNK_FORMAT_BLKBITS_MASK, CHUNK_FORMAT_INDEXES, ChunkEntry, ChunkIndex,
    NULL_ADDR,
};
pub use dirent::{
    DIRENT_SIZE, DirBlock, DirBlockError, DirEntryRef, Dirent, FileType, MAX_NAME_LEN,
};
pub use features::{Compat, Incompat};
pub use inode::{
    DataLayout, INODE_COMPACT_SIZE, INODE_EXTENDED_SIZE, INODE_SLOT_SIZE, InodeCompact,
    InodeExtended, InodeFormat, decode_rdev, encode_rdev,
};
pub use superblock::{DeviceSlot, EROFS_MAGIC, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, SuperBlock};
pub use xattr::{
    FINGERPRINT_ALGORITHM_SHA256, FINGERPRINT_VALUE_LEN, XATTR_ENTRY_HEADER_SIZE,
    XATTR_IBODY_HEADER_SIZE, XattrEntry, XattrIbodyHeader,
};

/// Smallest block size the kernel accepts (`blkszbits >= 9`).
pub const MIN_BLOCK_SIZE_BITS: u8 = 9;
/// Largest block size this project writes and reads (the x86-64 page size).
pub const MAX_BLOCK_SIZE_BITS: u8 = 12;

/// Rounds `value` up to a multiple of `align`, which must be a power of two.
///
/// Returns `None` on overflow, so callers that handle on-disk values never wrap.
pub const fn round_up(value: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    match value.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// Byte offset of inode `nid` in an image whose nid space starts at block `meta_blkaddr` (§4.1).
pub const fn nid_to_offset(meta_blkaddr: u32, blkszbits: u8, nid: u64) -> Option<u64> {
    let base = (meta_blkaddr as u64) << blkszbits;
    match nid.checked_mul(INODE_SLOT_SIZE as u64) {
        Some(rel) => base.checked_add(rel),
        None => None,
    }
}
