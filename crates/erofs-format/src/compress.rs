//! Compressed-file structures (§12). The reader recognises compressed inodes; the builder
//! will write them when compression lands.

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Compression algorithm ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// 0.
    Lz4,
    /// 1.
    Lzma,
    /// 2.
    Deflate,
    /// 3.
    Zstd,
}

impl Algorithm {
    /// Decodes an algorithm id.
    pub const fn from_raw(raw: u8) -> Option<Self> {
        Some(match raw {
            0 => Self::Lz4,
            1 => Self::Lzma,
            2 => Self::Deflate,
            3 => Self::Zstd,
            _ => return None,
        })
    }

    /// Name as the tools spell it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Lz4 => "lz4",
            Self::Lzma => "lzma",
            Self::Deflate => "deflate",
            Self::Zstd => "zstd",
        }
    }
}

/// The 8-byte map header of a compressed inode.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct MapHeader {
    /// Fragment offset, or reserved + inline tail size.
    pub h_fragmentoff: U32,
    /// Advise bits.
    pub h_advise: U16,
    /// Bits 0..3: HEAD1 algorithm; bits 4..7: HEAD2 algorithm.
    pub h_algorithmtype: u8,
    /// Bits 0..3: lclusterbits − blkszbits; bit 7: whole file is a fragment.
    pub h_clusterbits: u8,
}

const _: () = assert!(size_of::<MapHeader>() == 8);

impl MapHeader {
    /// Algorithm of HEAD1 lclusters.
    pub fn head1_algorithm(&self) -> Option<Algorithm> {
        Algorithm::from_raw(self.h_algorithmtype & 0xF)
    }
}

/// A full (8-byte) lcluster index record.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct LclusterIndex {
    /// Type in bits 0..1.
    pub di_advise: U16,
    /// Offset in the lcluster where the extent's decoded data begins.
    pub di_clusterofs: U16,
    /// Block address (HEAD/PLAIN) or two deltas (NONHEAD).
    pub di_u: U32,
}

const _: () = assert!(size_of::<LclusterIndex>() == 8);
