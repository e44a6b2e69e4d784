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

/// One chunk table entry, decoded from either format (§9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkEntry {
    /// Device id (0 = primary), unmasked; always 0 for a 4-byte block map.
    pub device_id: u16,
    /// Start block, low 32 bits; [`NULL_ADDR`] = hole.
    pub startblk_lo: u32,
    /// Bits 32..47 of the start block (8-byte indexes on 48-bit images).
    pub startblk_hi: u16,
}

impl ChunkEntry {
    /// Decodes an entry of `raw.len()` bytes: 8 for chunk indexes, 4 for a block map.
    pub fn decode(raw: &[u8]) -> Option<Self> {
        if raw.len() == 8 {
            let c = ChunkIndex::read_from_bytes(raw).ok()?;
            Some(Self {
                device_id: c.device_id.get(),
                startblk_lo: c.startblk_lo.get(),
                startblk_hi: c.startblk_hi.get(),
            })
        } else {
            let b = U32::read_from_bytes(raw).ok()?;
            Some(Self {
                device_id: 0,
                startblk_lo: b.get(),
                startblk_hi: 0,
            })
        }
    }
}
