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

/// One entry of a chunk table, whichever form the table has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkEntry {
    /// Device id (always 0 in a 4-byte block map).
    pub device_id: u16,
    /// Start block; [`NULL_ADDR`] = a hole.
    pub block: u32,
}

/// The chunk format of a chunk-based inode's `i_u` (§9).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkFormat {
    /// chunkbits − blkszbits.
    pub blkbits: u8,
    /// 8-byte [`ChunkIndex`] entries instead of a 4-byte block map.
    pub indexes: bool,
}

impl ChunkFormat {
    /// Decodes the low 16 bits of `i_u`; unknown bits (and 48-bit addresses, which this
    /// project does not read in chunk tables) are returned as the error.
    pub const fn decode(raw: u16) -> Result<Self, u16> {
        if raw & !(CHUNK_FORMAT_BLKBITS_MASK | CHUNK_FORMAT_INDEXES) != 0 {
            return Err(raw);
        }
        Ok(Self {
            blkbits: (raw & CHUNK_FORMAT_BLKBITS_MASK) as u8,
            indexes: raw & CHUNK_FORMAT_INDEXES != 0,
        })
    }

    /// Bytes per table entry.
    pub const fn entry_size(self) -> u64 {
        if self.indexes { 8 } else { 4 }
    }

    /// Decodes one table entry of [`Self::entry_size`] bytes.
    pub fn entry(self, raw: &[u8]) -> Option<ChunkEntry> {
        if self.indexes {
            let (i, _) = ChunkIndex::read_from_prefix(raw).ok()?;
            Some(ChunkEntry {
                device_id: i.device_id.get(),
                block: i.startblk_lo.get(),
            })
        } else {
            let (b, _) = U32::read_from_prefix(raw).ok()?;
            Some(ChunkEntry {
                device_id: 0,
                block: b.get(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_map_entry_is_an_address_and_an_index_has_the_device_then_the_address() {
        let map = ChunkFormat::decode(2).unwrap();
        assert_eq!((map.blkbits, map.indexes, map.entry_size()), (2, false, 4));
        assert_eq!(
            map.entry(&[1, 0, 0, 0]),
            Some(ChunkEntry {
                device_id: 0,
                block: 1
            })
        );
        let idx = ChunkFormat::decode(CHUNK_FORMAT_INDEXES | 3).unwrap();
        assert_eq!(
            idx.entry(&[0, 0, 2, 0, 0xff, 0xff, 0xff, 0xff]),
            Some(ChunkEntry {
                device_id: 2,
                block: NULL_ADDR
            })
        );
        assert_eq!(idx.entry(&[0; 7]), None);
        assert_eq!(
            ChunkFormat::decode(CHUNK_FORMAT_48BIT),
            Err(CHUNK_FORMAT_48BIT)
        );
    }
}
