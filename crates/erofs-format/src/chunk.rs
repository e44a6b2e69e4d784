//! Chunk-based files (§9).

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The all-ones block address: a hole in a chunk table, or "no full block" for FLAT_INLINE.
pub const NULL_ADDR: u32 = 0xFFFF_FFFF;
/// Chunk format bits 0..4: chunkbits − blkszbits.
pub const CHUNK_FORMAT_BLKBITS_MASK: u16 = 0x1F;
/// Chunk format bit: 8-byte chunk indexes instead of a 4-byte block map.
pub const CHUNK_FORMAT_INDEXES: u16 = 0x20;
/// Chunk format bit: 48-bit addresses (rejected by Linux 6.12).
pub const CHUNK_FORMAT_48BIT: u16 = 0x40;

/// An 8-byte chunk index entry.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct ChunkIndex {
    /// 48-bit layout: high 16 bits of the start block (Linux 6.12: `advise`, ignored).
    pub startblk_hi: U16,
    /// Device id, 0 = primary.
    pub device_id: U16,
    /// Start block (low 32 bits); [`NULL_ADDR`] = hole.
    pub startblk_lo: U32,
}

const _: () = assert!(size_of::<ChunkIndex>() == 8);
