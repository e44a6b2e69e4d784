//! Compressed-file structures (§12 of `erofs-format.md`, and `erofs-compression.md`): the
//! map header, full and compact lcluster indexes, 48-bit extent records and the per-algorithm
//! configuration records that follow the superblock. Every type here both encodes (for the
//! writer) and decodes (for the reader); nothing does I/O.

use core::fmt;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Compression algorithm ids (`h_algorithmtype` nibbles, bits of `available_compr_algs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// 0: LZ4 block format (lz4 and lz4hc).
    Lz4,
    /// 1: MicroLZMA.
    Lzma,
    /// 2: raw DEFLATE.
    Deflate,
    /// 3: Zstandard frames.
    Zstd,
}

impl Algorithm {
    /// Every algorithm, by increasing id (the order of the configuration records).
    pub const ALL: [Algorithm; 4] = [Self::Lz4, Self::Lzma, Self::Deflate, Self::Zstd];

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

    /// The on-disk id.
    pub const fn id(self) -> u8 {
        self as u8
    }

    /// The algorithm's bit in the superblock's `available_compr_algs`.
    pub const fn bit(self) -> u16 {
        1 << self.id()
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

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every bit of `available_compr_algs` this project knows.
pub const KNOWN_ALGORITHM_BITS: u16 = 0x000F;

/// `h_advise` bits of the map header (§12.1).
pub mod advise {
    /// Compact layout: 2-byte packs are used after the 4-byte head run.
    pub const COMPACTED_2B: u16 = 0x0001;
    /// Full layout on 48-bit images: extent records instead of lcluster indexes.
    pub const EXTENTS: u16 = 0x0001;
    /// HEAD1 pclusters may span several blocks (CBLKCNT records their size).
    pub const BIG_PCLUSTER_1: u16 = 0x0002;
    /// HEAD2 pclusters may span several blocks.
    pub const BIG_PCLUSTER_2: u16 = 0x0004;
    /// The last pcluster is inline after the indexes (ztailpacking).
    pub const INLINE_PCLUSTER: u16 = 0x0008;
    /// Raw (PLAIN) pclusters are stored rotated by the extent's in-block offset.
    pub const INTERLACED_PCLUSTER: u16 = 0x0010;
    /// The tail extent lives in the packed inode.
    pub const FRAGMENT_PCLUSTER: u16 = 0x0020;
}

/// Bit 7 of `h_clusterbits`: the whole file is one fragment in the packed inode.
pub const CLUSTERBITS_WHOLE_FRAGMENT: u8 = 0x80;
/// Bits of `h_clusterbits` holding `lclusterbits − blkszbits`.
pub const CLUSTERBITS_MASK: u8 = 0x0F;

/// Largest encoded pcluster Linux maps (`Z_EROFS_PCLUSTER_MAX_SIZE`).
pub const MAX_PCLUSTER_SIZE: u64 = 1 << 20;
/// Largest decoded extent Linux maps (`Z_EROFS_PCLUSTER_MAX_DSIZE`).
pub const MAX_EXTENT_DECODED: u64 = 12 << 20;

/// Size of the map header.
pub const MAP_HEADER_SIZE: u64 = 8;
/// Bytes between the map header's end and the first full index (reserved).
pub const FULL_INDEX_RESERVED: u64 = 8;
/// Size of a full lcluster index.
pub const FULL_INDEX_SIZE: u64 = 8;

/// Where the map header sits: `inode_offset + inode_size + xattr_size`, 8-byte aligned.
pub const fn map_header_offset(meta_end: u64) -> Option<u64> {
    crate::round_up(meta_end, 8)
}

/// Offset of the full index of lcluster `lcn`, given the map header's offset (§12.3).
pub const fn full_index_offset(header: u64, lcn: u64) -> Option<u64> {
    match lcn.checked_mul(FULL_INDEX_SIZE) {
        Some(rel) => match (header + MAP_HEADER_SIZE + FULL_INDEX_RESERVED).checked_add(rel) {
            Some(v) => Some(v),
            None => None,
        },
        None => None,
    }
}

/// The 8-byte map header of a compressed inode.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct MapHeader {
    /// Union: fragment offset; or `h_reserved1` u16 + `h_idata_size` u16; or `h_extents_lo`.
    pub h_fragmentoff: U32,
    /// Advise bits ([`advise`]).
    pub h_advise: U16,
    /// Bits 0..3: HEAD1 algorithm; bits 4..7: HEAD2 algorithm.
    pub h_algorithmtype: u8,
    /// Bits 0..3: lclusterbits − blkszbits; bit 7: whole file is a fragment.
    pub h_clusterbits: u8,
}

const _: () = assert!(size_of::<MapHeader>() == 8);

impl MapHeader {
    /// A header for an indexed file. `tail` is `h_fragmentoff` with `FRAGMENT_PCLUSTER`, or
    /// `h_idata_size << 16` with `INLINE_PCLUSTER` (see [`MapHeader::with_idata_size`]).
    pub fn new(advise: u16, head1: Algorithm, head2: Algorithm, lclusterbits_delta: u8) -> Self {
        Self {
            h_fragmentoff: U32::new(0),
            h_advise: U16::new(advise),
            h_algorithmtype: head1.id() | (head2.id() << 4),
            h_clusterbits: lclusterbits_delta & CLUSTERBITS_MASK,
        }
    }

    /// A whole-file fragment header: the file is `offset` bytes into the packed inode.
    /// Returns `None` when the offset needs bit 63.
    pub fn whole_fragment(offset: u64) -> Option<Self> {
        if offset >> 63 != 0 {
            return None;
        }
        Some(Self::from_le64(offset | 1 << 63))
    }

    /// Sets `h_idata_size` (the inline pcluster's size), keeping `h_reserved1` zero.
    pub fn with_idata_size(mut self, size: u16) -> Self {
        self.h_fragmentoff = U32::new(u32::from(size) << 16);
        self
    }

    /// Sets `h_fragmentoff` (the tail fragment's offset in the packed inode, low 32 bits).
    pub fn with_fragment_offset(mut self, offset: u32) -> Self {
        self.h_fragmentoff = U32::new(offset);
        self
    }

    /// The header read as one little-endian u64.
    pub fn to_le64(&self) -> u64 {
        u64::from_le_bytes(self.as_bytes().try_into().unwrap_or([0; 8]))
    }

    /// The header from a little-endian u64.
    pub fn from_le64(v: u64) -> Self {
        Self::read_from_bytes(&v.to_le_bytes()[..]).unwrap_or_default()
    }

    /// Whether bit 63 marks the whole file as a fragment of the packed inode.
    pub fn is_whole_fragment(&self) -> bool {
        self.h_clusterbits & CLUSTERBITS_WHOLE_FRAGMENT != 0
    }

    /// The whole-file fragment's offset in the packed inode (the other 63 bits).
    pub fn whole_fragment_offset(&self) -> Option<u64> {
        self.is_whole_fragment()
            .then(|| self.to_le64() & !(1u64 << 63))
    }

    /// The advise bits.
    pub fn advise(&self) -> u16 {
        self.h_advise.get()
    }

    /// `h_idata_size`: the inline pcluster's size (with `INLINE_PCLUSTER`).
    pub fn idata_size(&self) -> u16 {
        (self.h_fragmentoff.get() >> 16) as u16
    }

    /// `h_fragmentoff`: the tail fragment's offset, low 32 bits (with `FRAGMENT_PCLUSTER`).
    pub fn fragment_offset(&self) -> u32 {
        self.h_fragmentoff.get()
    }

    /// Raw algorithm id of HEAD1 (`head2 = false`) or HEAD2 lclusters.
    pub fn algorithm_raw(&self, head2: bool) -> u8 {
        if head2 {
            self.h_algorithmtype >> 4
        } else {
            self.h_algorithmtype & 0xF
        }
    }

    /// Algorithm of HEAD1 lclusters.
    pub fn head1_algorithm(&self) -> Option<Algorithm> {
        Algorithm::from_raw(self.algorithm_raw(false))
    }

    /// Algorithm of HEAD2 lclusters.
    pub fn head2_algorithm(&self) -> Option<Algorithm> {
        Algorithm::from_raw(self.algorithm_raw(true))
    }

    /// `lclusterbits − blkszbits`.
    pub fn lclusterbits_delta(&self) -> u8 {
        self.h_clusterbits & CLUSTERBITS_MASK
    }

    /// Number of 48-bit extent records (with `EXTENTS` on a full-layout inode): bytes 0..4
    /// are the low 32 bits and bytes 6..8 the high 16.
    pub fn extent_count(&self) -> u64 {
        u64::from(self.h_fragmentoff.get())
            | u64::from(u16::from_le_bytes([
                self.h_algorithmtype,
                self.h_clusterbits,
            ])) << 32
    }

    /// Size of one 48-bit extent record: `4 << ((advise >> 1) & 3)` bytes.
    pub fn extent_record_size(&self) -> u64 {
        4 << ((self.advise() >> 1) & 3)
    }
}

/// The 2-bit lcluster type (§12.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LclusterType {
    /// 0: a raw (uncompressed) pcluster starts here.
    Plain,
    /// 1: a pcluster of the HEAD1 algorithm starts here.
    Head1,
    /// 2: no extent starts in this lcluster.
    NonHead,
    /// 3: a pcluster of the HEAD2 algorithm starts here.
    Head2,
}

impl LclusterType {
    /// Decodes the low two bits of `raw`.
    pub const fn from_bits(raw: u16) -> Self {
        match raw & LCLUSTER_TYPE_MASK {
            0 => Self::Plain,
            1 => Self::Head1,
            2 => Self::NonHead,
            _ => Self::Head2,
        }
    }

    /// The 2-bit value.
    pub const fn bits(self) -> u16 {
        match self {
            Self::Plain => 0,
            Self::Head1 => 1,
            Self::NonHead => 2,
            Self::Head2 => 3,
        }
    }

    /// Whether an extent starts in this lcluster (PLAIN, HEAD1 or HEAD2).
    pub const fn is_head(self) -> bool {
        !matches!(self, Self::NonHead)
    }

    /// Name as dump tools print it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::Head1 => "HEAD1",
            Self::NonHead => "NONHEAD",
            Self::Head2 => "HEAD2",
        }
    }
}

/// Bits 0..1 of `di_advise` and of every compact item: the lcluster type.
pub const LCLUSTER_TYPE_MASK: u16 = 0x3;
/// `di_advise` bit 15 on a HEAD: the extent decodes only a prefix of its pcluster (dedupe).
pub const LI_PARTIAL_REF: u16 = 0x8000;
/// `delta[0]` bit on the first NONHEAD after a big-pcluster HEAD: the low bits are the
/// pcluster's block count (CBLKCNT).
pub const LI_D0_CBLKCNT: u16 = 0x0800;
/// Largest `delta[0]` a plain NONHEAD stores (a larger distance is capped, never CBLKCNT).
pub const LI_D0_MAX: u16 = LI_D0_CBLKCNT - 1;

/// One lcluster's index, decoded from the full or the compact layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lcluster {
    /// An extent starts in this lcluster.
    Head {
        /// PLAIN, HEAD1 or HEAD2.
        kind: LclusterType,
        /// Offset in the lcluster where the extent's decoded data begins.
        clusterofs: u16,
        /// First block of the pcluster (for full indexes with fragments, the high 32 bits of
        /// the fragment offset instead).
        blkaddr: u32,
        /// `PARTIAL_REF`: only a prefix of the pcluster's output belongs to the extent.
        partial_ref: bool,
    },
    /// No extent starts here.
    NonHead {
        /// Distance back to the HEAD lcluster (1 for a CBLKCNT record).
        delta0: u16,
        /// Distance forward to the lcluster where the next extent starts (`None` when the
        /// compact layout does not record it for this item).
        delta1: Option<u16>,
        /// The pcluster's block count, when this is the CBLKCNT record after a HEAD.
        cblkcnt: Option<u16>,
    },
}

impl Lcluster {
    /// The type of this lcluster.
    pub fn kind(&self) -> LclusterType {
        match self {
            Self::Head { kind, .. } => *kind,
            Self::NonHead { .. } => LclusterType::NonHead,
        }
    }
}

/// A full (8-byte) lcluster index record (§12.3).
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct LclusterIndex {
    /// Type in bits 0..1; [`LI_PARTIAL_REF`] in bit 15.
    pub di_advise: U16,
    /// Offset in the lcluster where the extent's decoded data begins.
    pub di_clusterofs: U16,
    /// Block address (HEAD/PLAIN) or `delta[0]`, `delta[1]` as two le16 (NONHEAD).
    pub di_u: U32,
}

const _: () = assert!(size_of::<LclusterIndex>() == 8);

impl LclusterIndex {
    /// A HEAD or PLAIN record. `kind` must not be NONHEAD.
    pub fn head(kind: LclusterType, clusterofs: u16, blkaddr: u32, partial_ref: bool) -> Self {
        let partial = if partial_ref { LI_PARTIAL_REF } else { 0 };
        Self {
            di_advise: U16::new(kind.bits() | partial),
            di_clusterofs: U16::new(clusterofs),
            di_u: U32::new(blkaddr),
        }
    }

    /// A NONHEAD record; `delta0` may carry [`LI_D0_CBLKCNT`].
    pub fn nonhead(delta0: u16, delta1: u16) -> Self {
        Self {
            di_advise: U16::new(LclusterType::NonHead.bits()),
            di_clusterofs: U16::new(0),
            di_u: U32::new(u32::from(delta0) | u32::from(delta1) << 16),
        }
    }

    /// The record as an [`Lcluster`].
    pub fn decode(&self) -> Lcluster {
        let advise = self.di_advise.get();
        let kind = LclusterType::from_bits(advise);
        let u = self.di_u.get();
        if kind.is_head() {
            return Lcluster::Head {
                kind,
                clusterofs: self.di_clusterofs.get(),
                blkaddr: u,
                partial_ref: advise & LI_PARTIAL_REF != 0,
            };
        }
        let d0 = u as u16;
        let d1 = (u >> 16) as u16;
        if d0 & LI_D0_CBLKCNT != 0 {
            Lcluster::NonHead {
                delta0: 1,
                delta1: Some(d1),
                cblkcnt: Some(d0 & !LI_D0_CBLKCNT),
            }
        } else {
            Lcluster::NonHead {
                delta0: d0,
                delta1: Some(d1),
                cblkcnt: None,
            }
        }
    }
}

/// Why an index could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexError {
    /// The lcluster size does not fit the compact layout (≤ 14 bits for 4-byte packs, ≤ 12
    /// for 2-byte packs).
    ClusterBits(u8),
    /// The pack is shorter than its layout says.
    ShortPack,
    /// A CBLKCNT item in an inode without big pclusters.
    UnexpectedCblkcnt,
    /// A plain NONHEAD `delta[0]` ≤ 1 in a big-pcluster pack.
    BadLookback,
}

impl fmt::Display for IndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClusterBits(b) => write!(f, "lclusterbits {b} too large for compact indexes"),
            Self::ShortPack => f.write_str("compact pack truncated"),
            Self::UnexpectedCblkcnt => f.write_str("CBLKCNT without big pcluster advise"),
            Self::BadLookback => f.write_str("NONHEAD delta[0] <= 1 in a big-pcluster pack"),
        }
    }
}

impl std::error::Error for IndexError {}

/// Where each lcluster's compact item lies (§12.4): an initial run of 4-byte-per-lcluster
/// packs up to 32-byte alignment, then 2-byte-per-lcluster packs, then 4-byte ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactLayout {
    /// Offset of the first pack (the map header's end).
    pub ebase: u64,
    /// Number of lclusters (items).
    pub total: u64,
    /// Items in the initial 4-byte run.
    pub initial_4b: u64,
    /// Items in the 2-byte run.
    pub count_2b: u64,
}

/// Where one compact item is: its pack and its position in the pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactSlot {
    /// Byte offset of the pack.
    pub pack_offset: u64,
    /// Pack size in bytes: 8 (two 16-bit items) or 32 (sixteen 14-bit items).
    pub pack_size: u64,
    /// Items per pack: 2 or 16.
    pub items: usize,
    /// This item's position in the pack.
    pub index: usize,
}

impl CompactLayout {
    /// The layout for `total` lclusters after a map header ending at `ebase`; `compacted_2b`
    /// is the `COMPACTED_2B` advise bit.
    pub fn new(ebase: u64, total: u64, compacted_2b: bool) -> Self {
        let initial_4b = ((32 - ebase % 32) / 4) & 7;
        let count_2b = if compacted_2b && initial_4b < total {
            (total - initial_4b) / 16 * 16
        } else {
            0
        };
        Self {
            ebase,
            total,
            initial_4b,
            count_2b,
        }
    }

    /// Bytes of all packs (a trailing odd 4-byte item takes a whole 8-byte pack).
    pub fn size(&self) -> u64 {
        let rest = self.total.saturating_sub(self.initial_4b + self.count_2b);
        let head = self.initial_4b.min(self.total).div_ceil(2) * 8;
        head + self.count_2b * 2 + rest.div_ceil(2) * 8
    }

    /// The pack of lcluster `lcn` (`None` past the end or on overflow).
    pub fn slot(&self, lcn: u64) -> Option<CompactSlot> {
        if lcn >= self.total {
            return None;
        }
        let (pos, amortized) = if lcn < self.initial_4b {
            (self.ebase.checked_add(lcn * 4)?, 4)
        } else if lcn - self.initial_4b < self.count_2b {
            let rel = lcn - self.initial_4b;
            (self.ebase.checked_add(self.initial_4b * 4 + rel * 2)?, 2)
        } else {
            let rel = lcn - self.initial_4b - self.count_2b;
            (
                self.ebase
                    .checked_add(self.initial_4b * 4 + self.count_2b * 2)?
                    .checked_add(rel.checked_mul(4)?)?,
                4,
            )
        };
        let items: u64 = if amortized == 4 { 2 } else { 16 };
        let pack_size = items * amortized;
        let pack_offset = pos / pack_size * pack_size;
        Some(CompactSlot {
            pack_offset,
            pack_size,
            items: items as usize,
            index: ((pos - pack_offset) / amortized) as usize,
        })
    }
}

/// Value bits of a compact item: `max(lclusterbits, 12)`.
pub fn compact_lobits(lclusterbits: u8) -> u32 {
    u32::from(lclusterbits).max(12)
}

/// Bits per item in a pack of `items` items and `pack_size` bytes (16 or 14).
pub fn compact_item_bits(pack_size: usize, items: usize) -> u32 {
    ((pack_size - 4) * 8 / items) as u32
}

fn compact_item(
    pack: &[u8],
    lobits: u32,
    width: u32,
    i: usize,
) -> Result<(u16, LclusterType), IndexError> {
    let bit = width as usize * i;
    let byte = bit / 8;
    let mut raw = [0u8; 4];
    let avail = pack.len().saturating_sub(byte).min(4);
    if avail == 0 {
        return Err(IndexError::ShortPack);
    }
    raw[..avail].copy_from_slice(&pack[byte..byte + avail]);
    let v = u32::from_le_bytes(raw) >> (bit % 8);
    let lo = (v & ((1 << lobits) - 1)) as u16;
    Ok((lo, LclusterType::from_bits((v >> lobits) as u16)))
}

/// Decodes item `index` of one compact pack (`pack` is the whole pack: items, then the le32
/// base), as Linux 6.12's `unpack_compacted_index` does: a HEAD's block address is derived
/// from the base and the items before it; a NONHEAD's `delta[1]` from the items after it.
pub fn decode_compact(
    pack: &[u8],
    items: usize,
    index: usize,
    lclusterbits: u8,
    big_pcluster: bool,
) -> Result<Lcluster, IndexError> {
    let max_bits = if items == 2 { 14 } else { 12 };
    if lclusterbits > max_bits {
        return Err(IndexError::ClusterBits(lclusterbits));
    }
    if pack.len() < 8 || index >= items {
        return Err(IndexError::ShortPack);
    }
    let lobits = compact_lobits(lclusterbits);
    let width = compact_item_bits(pack.len(), items);
    let (lo, kind) = compact_item(pack, lobits, width, index)?;
    if kind == LclusterType::NonHead {
        let delta1 = compact_lookahead(pack, lobits, width, items, index)?;
        if lo & LI_D0_CBLKCNT != 0 {
            if !big_pcluster {
                return Err(IndexError::UnexpectedCblkcnt);
            }
            return Ok(Lcluster::NonHead {
                delta0: 1,
                delta1: Some(delta1),
                cblkcnt: Some(lo & !LI_D0_CBLKCNT),
            });
        }
        if index + 1 != items {
            return Ok(Lcluster::NonHead {
                delta0: lo,
                delta1: Some(delta1),
                cblkcnt: None,
            });
        }
        // The last item stores delta[1]; delta[0] follows from the item before it.
        let prev = if index == 0 {
            0
        } else {
            match compact_item(pack, lobits, width, index - 1)? {
                (_, k) if k.is_head() => 0,
                (v, _) if v & LI_D0_CBLKCNT != 0 => 1,
                (v, _) => v,
            }
        };
        return Ok(Lcluster::NonHead {
            delta0: prev.saturating_add(1),
            delta1: Some(delta1),
            cblkcnt: None,
        });
    }
    let mut nblk: u32 = 0;
    let mut i = index as i64;
    if !big_pcluster {
        nblk = 1;
        while i > 0 {
            i -= 1;
            let (v, k) = compact_item(pack, lobits, width, i as usize)?;
            if k == LclusterType::NonHead {
                i -= i64::from(v);
            }
            if i >= 0 {
                nblk += 1;
            }
        }
    } else {
        while i > 0 {
            i -= 1;
            let (v, k) = compact_item(pack, lobits, width, i as usize)?;
            if k == LclusterType::NonHead {
                if v & LI_D0_CBLKCNT != 0 {
                    i -= 1;
                    nblk = nblk.saturating_add(u32::from(v & !LI_D0_CBLKCNT));
                    continue;
                }
                if v <= 1 {
                    return Err(IndexError::BadLookback);
                }
                i -= i64::from(v) - 2;
                continue;
            }
            nblk += 1;
        }
    }
    let base_at = pack.len() - 4;
    let base = u32::from_le_bytes([
        pack[base_at],
        pack[base_at + 1],
        pack[base_at + 2],
        pack[base_at + 3],
    ]);
    Ok(Lcluster::Head {
        kind,
        clusterofs: lo,
        blkaddr: base.wrapping_add(nblk),
        partial_ref: false,
    })
}

/// `delta[1]` of the NONHEAD item `index`: the NONHEAD items from it to the pack's end, plus
/// what the last item stores when the run reaches it.
fn compact_lookahead(
    pack: &[u8],
    lobits: u32,
    width: u32,
    items: usize,
    index: usize,
) -> Result<u16, IndexError> {
    let mut d1: u16 = 0;
    let mut lo = 0;
    for i in index..items {
        let (v, k) = compact_item(pack, lobits, width, i)?;
        if k != LclusterType::NonHead {
            return Ok(d1);
        }
        lo = v;
        d1 += 1;
    }
    if lo & LI_D0_CBLKCNT == 0 {
        d1 = d1.saturating_add(lo.saturating_sub(1));
    }
    Ok(d1)
}

/// One item to encode into a compact pack: the type and the stored value (`clusterofs` for
/// HEAD/PLAIN; `delta[0]`, or `delta[1]` for a pack's last NONHEAD item, or
/// `LI_D0_CBLKCNT | blocks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompactItem {
    /// The lcluster type.
    pub kind: LclusterType,
    /// The value bits.
    pub value: u16,
}

/// Encodes one compact pack: `items.len()` must be 2 (8-byte pack) or 16 (32-byte pack);
/// unused trailing items are passed as zero items. `base` is the pack's le32 base block.
pub fn encode_compact_pack(items: &[CompactItem], base: u32, lclusterbits: u8) -> Vec<u8> {
    let pack_size = if items.len() == 2 { 8 } else { 32 };
    let lobits = compact_lobits(lclusterbits);
    let width = compact_item_bits(pack_size, items.len()) as usize;
    let mut out = vec![0u8; pack_size];
    for (i, item) in items.iter().enumerate() {
        let v =
            (u32::from(item.value) & ((1 << lobits) - 1)) | u32::from(item.kind.bits()) << lobits;
        let bit = width * i;
        for b in 0..width {
            if v >> b & 1 != 0 {
                let at = bit + b;
                out[at / 8] |= 1 << (at % 8);
            }
        }
    }
    out[pack_size - 4..].copy_from_slice(&base.to_le_bytes());
    out
}

/// Largest lclusterbits of 4-byte compact packs (16-bit items).
pub const COMPACT_4B_MAX_LCLUSTERBITS: u8 = 14;
/// Largest lclusterbits of 2-byte compact packs (14-bit items).
pub const COMPACT_2B_MAX_LCLUSTERBITS: u8 = 12;
/// Largest value a compact NONHEAD item stores as a distance: above it the item would read
/// as CBLKCNT.
const COMPACT_DISTANCE_MAX: u16 = LI_D0_MAX;

/// Why a file's lcluster indexes cannot be written in the compact layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CompactEncodeError {
    /// The lcluster size is too large for the packs the layout needs.
    ClusterBits(u8),
    /// Lcluster `lcn` holds a value an item cannot store: a `clusterofs` past the lcluster, a
    /// CBLKCNT of 0x800 blocks or more, a CBLKCNT without big pclusters, or a plain NONHEAD
    /// distance of 0 or (with big pclusters) 1, which readers take for corruption.
    Value {
        /// The lcluster.
        lcn: u64,
    },
    /// The pcluster of the HEAD at `lcn` does not start where the pack's base and the
    /// pclusters before it in the pack put it: compact packs derive addresses, so the
    /// pclusters a pack names must be contiguous.
    Address {
        /// The lcluster.
        lcn: u64,
        /// The block the pack's earlier HEADs imply.
        implied: u32,
        /// The block the HEAD names.
        actual: u32,
    },
}

impl fmt::Display for CompactEncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ClusterBits(b) => write!(f, "lclusterbits {b} too large for compact indexes"),
            Self::Value { lcn } => write!(f, "lcluster {lcn}: value does not fit a compact item"),
            Self::Address {
                lcn,
                implied,
                actual,
            } => write!(
                f,
                "lcluster {lcn}: pcluster at block {actual}, but its pack implies block {implied}"
            ),
        }
    }
}

impl std::error::Error for CompactEncodeError {}

/// Encodes the full lcluster indexes `indexes` (one per lcluster, as
/// [`LclusterIndex::head`] and [`LclusterIndex::nonhead`] make them) in the compact layout
/// that follows a map header ending at `ebase` (§12.4); `compacted_2b` is the advise bit
/// and `big_pcluster` the `BIG_PCLUSTER_1|2` bits. Returns [`CompactLayout::size`] bytes.
///
/// A HEAD's block address is not stored but derived by readers from its pack's base and the
/// items before it (see [`decode_compact`]), so each pack's base is chosen here to make the
/// derivation give every HEAD its address, and a pack whose HEADs cannot all be right is an
/// error. HEADs at lclusters `addressless..` have addresses nobody reads (an inline tail
/// pcluster, the terminator after the last extent) and are not checked.
///
/// Items store `clusterofs` for HEADs, `delta[0]` (or CBLKCNT) for NONHEADs, and, in the
/// last item of a pack, a plain NONHEAD's `delta[1]` instead, capped at 0x7FF so that it
/// never reads as CBLKCNT (a reader whose look-ahead falls short walks on).
pub fn encode_compact_indexes(
    indexes: &[LclusterIndex],
    ebase: u64,
    lclusterbits: u8,
    big_pcluster: bool,
    compacted_2b: bool,
    addressless: u64,
) -> Result<Vec<u8>, CompactEncodeError> {
    let layout = CompactLayout::new(ebase, indexes.len() as u64, compacted_2b);
    if lclusterbits > COMPACT_4B_MAX_LCLUSTERBITS
        || (layout.count_2b > 0 && lclusterbits > COMPACT_2B_MAX_LCLUSTERBITS)
    {
        return Err(CompactEncodeError::ClusterBits(lclusterbits));
    }
    let lcsize = 1u32 << lclusterbits;
    let mut out = Vec::with_capacity(layout.size() as usize);
    let mut base;
    // The last addressed HEAD's block and the block after its pcluster.
    let (mut head_blk, mut next_blk) = (0u32, 0u32);
    let mut lcn = 0u64;
    while lcn < layout.total {
        let Some(slot) = layout.slot(lcn) else {
            break;
        };
        let vcnt = slot.items;
        let mut items = vec![
            CompactItem {
                kind: LclusterType::Plain,
                value: 0,
            };
            vcnt
        ];
        let real = (layout.total - lcn).min(vcnt as u64) as usize;
        for (j, item) in items.iter_mut().enumerate().take(real) {
            let at = lcn + j as u64;
            let bad = CompactEncodeError::Value { lcn: at };
            *item = match indexes[at as usize].decode() {
                Lcluster::Head {
                    kind, clusterofs, ..
                } => {
                    if u32::from(clusterofs) >= lcsize {
                        return Err(bad);
                    }
                    CompactItem {
                        kind,
                        value: clusterofs,
                    }
                }
                Lcluster::NonHead {
                    cblkcnt: Some(n), ..
                } => {
                    if !big_pcluster || n >= LI_D0_CBLKCNT {
                        return Err(bad);
                    }
                    CompactItem {
                        kind: LclusterType::NonHead,
                        value: LI_D0_CBLKCNT | n,
                    }
                }
                Lcluster::NonHead { delta0, delta1, .. } => {
                    let value = if j + 1 == vcnt {
                        delta1.unwrap_or(0).min(COMPACT_DISTANCE_MAX)
                    } else {
                        delta0.min(COMPACT_DISTANCE_MAX)
                    };
                    if value == 0 || (big_pcluster && j + 1 != vcnt && value == 1) {
                        return Err(bad);
                    }
                    CompactItem {
                        kind: LclusterType::NonHead,
                        value,
                    }
                }
            };
        }
        // Derive each HEAD's address from base 0; the base is what makes them right.
        let mut pack = encode_compact_pack(&items, 0, lclusterbits);
        let mut chosen: Option<u32> = None;
        for j in 0..real {
            let at = lcn + j as u64;
            if at >= addressless {
                break;
            }
            let Lcluster::Head { blkaddr, .. } = indexes[at as usize].decode() else {
                continue;
            };
            let Ok(Lcluster::Head {
                blkaddr: offset, ..
            }) = decode_compact(&pack, vcnt, j, lclusterbits, big_pcluster)
            else {
                return Err(CompactEncodeError::Value { lcn: at });
            };
            let want = blkaddr.wrapping_sub(offset);
            match chosen {
                None => chosen = Some(want),
                Some(b) if b != want => {
                    return Err(CompactEncodeError::Address {
                        lcn: at,
                        implied: b.wrapping_add(offset),
                        actual: blkaddr,
                    });
                }
                Some(_) => {}
            }
        }
        // Readers ignore the base of a pack without (addressed) HEADs; write where the next
        // pcluster would start, as mkfs.erofs does.
        base = chosen.unwrap_or(if big_pcluster {
            next_blk
        } else {
            next_blk.wrapping_sub(1)
        });
        for j in 0..real {
            let at = lcn + j as u64;
            match indexes[at as usize].decode() {
                Lcluster::Head { blkaddr, .. } if at < addressless => {
                    head_blk = blkaddr;
                    next_blk = blkaddr.wrapping_add(1);
                }
                Lcluster::NonHead {
                    cblkcnt: Some(n), ..
                } => next_blk = head_blk.wrapping_add(u32::from(n)),
                _ => {}
            }
        }
        let n = pack.len();
        pack[n - 4..].copy_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&pack);
        lcn += vcnt as u64 - slot.index as u64;
    }
    debug_assert_eq!(out.len() as u64, layout.size());
    Ok(out)
}

/// A 48-bit extent record (§12.7), up to 32 bytes; shorter records are prefixes of it.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    FromBytes,
    IntoBytes,
    Immutable,
    KnownLayout,
    Unaligned,
)]
#[repr(C)]
pub struct ExtentRecord {
    /// Encoded length in bytes, [`EXTENT_PLEN_PARTIAL`], format (algorithm + 1) in bits ≥ 28.
    pub plen: U32,
    /// Start byte of the pcluster, low 32 bits.
    pub pstart_lo: U32,
    /// Start byte of the pcluster, high 32 bits.
    pub pstart_hi: U32,
    /// First logical byte of the extent, low 32 bits.
    pub lstart_lo: U32,
    /// First logical byte, high 32 bits.
    pub lstart_hi: U32,
    /// Reserved.
    pub reserved: [u8; 12],
}

const _: () = assert!(size_of::<ExtentRecord>() == 32);

/// With 4-byte extent records (length only), the start byte of the first pcluster comes
/// first, as a little-endian 64-bit value; the records follow it.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct ExtentsStart {
    /// Start byte of the first pcluster.
    pub pstart: U64,
}

impl ExtentsStart {
    /// Decodes the 8 bytes.
    pub fn decode(raw: [u8; 8]) -> u64 {
        Self::read_from_bytes(&raw).map_or(0, |s| s.pstart.get())
    }
}

/// `plen` bit: the extent decodes only a prefix of its pcluster.
pub const EXTENT_PLEN_PARTIAL: u32 = 1 << 27;
/// First bit of `plen`'s format field (0 = raw, n = algorithm n − 1).
pub const EXTENT_PLEN_FMT_BIT: u32 = 28;
/// The length bits of `plen`.
pub const EXTENT_PLEN_MASK: u32 = ((MAX_PCLUSTER_SIZE as u32) << 1) - 1;

/// A per-algorithm configuration record (`COMPR_CFGS`, §2 of `erofs-format.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComprCfg {
    /// LZ4: 14-byte payload.
    Lz4 {
        /// Largest match distance.
        max_distance: u16,
        /// Largest pcluster in blocks (0 means 1).
        max_pclusterblks: u16,
    },
    /// MicroLZMA: 14-byte payload.
    Lzma {
        /// Dictionary size in bytes (4 KiB..8 MiB).
        dict_size: u32,
        /// Must be 0.
        format: u16,
    },
    /// DEFLATE: 6-byte payload.
    Deflate {
        /// Window bits (8..15).
        windowbits: u8,
    },
    /// Zstandard: 6-byte payload.
    Zstd {
        /// Must be 0.
        format: u8,
        /// windowLog − 10.
        windowlog: u8,
    },
}

/// Why a configuration record is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComprCfgError {
    /// The algorithm of the record.
    pub algorithm: Algorithm,
    /// What is wrong.
    pub reason: &'static str,
}

impl fmt::Display for ComprCfgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} configuration: {}", self.algorithm, self.reason)
    }
}

impl std::error::Error for ComprCfgError {}

/// Largest LZMA dictionary Linux accepts.
pub const LZMA_MAX_DICT_SIZE: u32 = 8 << 20;
/// Smallest LZMA dictionary Linux accepts.
pub const LZMA_MIN_DICT_SIZE: u32 = 4 << 10;
/// Largest zstd `windowlog` field (window 2^(10+10) = 1 MiB).
pub const ZSTD_MAX_WINDOWLOG: u8 = 10;

impl ComprCfg {
    /// The algorithm this record configures.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Lz4 { .. } => Algorithm::Lz4,
            Self::Lzma { .. } => Algorithm::Lzma,
            Self::Deflate { .. } => Algorithm::Deflate,
            Self::Zstd { .. } => Algorithm::Zstd,
        }
    }

    /// The payload length written in the record's le16 prefix.
    pub fn payload_len(algorithm: Algorithm) -> usize {
        match algorithm {
            Algorithm::Lz4 | Algorithm::Lzma => 14,
            Algorithm::Deflate | Algorithm::Zstd => 6,
        }
    }

    /// The whole record: le16 payload length, then the payload.
    pub fn encode(&self) -> Vec<u8> {
        let len = Self::payload_len(self.algorithm());
        let mut out = vec![0u8; 2 + len];
        out[..2].copy_from_slice(&(len as u16).to_le_bytes());
        let p = &mut out[2..];
        match *self {
            Self::Lz4 {
                max_distance,
                max_pclusterblks,
            } => {
                p[0..2].copy_from_slice(&max_distance.to_le_bytes());
                p[2..4].copy_from_slice(&max_pclusterblks.to_le_bytes());
            }
            Self::Lzma { dict_size, format } => {
                p[0..4].copy_from_slice(&dict_size.to_le_bytes());
                p[4..6].copy_from_slice(&format.to_le_bytes());
            }
            Self::Deflate { windowbits } => p[0] = windowbits,
            Self::Zstd { format, windowlog } => {
                p[0] = format;
                p[1] = windowlog;
            }
        }
        out
    }

    /// Decodes a payload of `algorithm` (the bytes after the le16 length) and applies the
    /// limits Linux 6.12 enforces at mount.
    pub fn decode(algorithm: Algorithm, payload: &[u8]) -> Result<Self, ComprCfgError> {
        let err = |reason| ComprCfgError { algorithm, reason };
        let need = match algorithm {
            Algorithm::Lz4 => 4,
            Algorithm::Lzma => 6,
            Algorithm::Deflate => 1,
            Algorithm::Zstd => 2,
        };
        if payload.len() < need {
            return Err(err("payload too short"));
        }
        let u16_at = |i: usize| u16::from_le_bytes([payload[i], payload[i + 1]]);
        Ok(match algorithm {
            Algorithm::Lz4 => Self::Lz4 {
                max_distance: u16_at(0),
                max_pclusterblks: u16_at(2),
            },
            Algorithm::Lzma => {
                let dict_size =
                    u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]);
                let format = u16_at(4);
                if format != 0 {
                    return Err(err("unknown MicroLZMA format"));
                }
                if !(LZMA_MIN_DICT_SIZE..=LZMA_MAX_DICT_SIZE).contains(&dict_size) {
                    return Err(err("dictionary size outside 4 KiB..8 MiB"));
                }
                Self::Lzma { dict_size, format }
            }
            Algorithm::Deflate => {
                let windowbits = payload[0];
                if windowbits > 15 {
                    return Err(err("window bits above 15"));
                }
                Self::Deflate { windowbits }
            }
            Algorithm::Zstd => {
                let (format, windowlog) = (payload[0], payload[1]);
                if format != 0 {
                    return Err(err("unknown zstd format"));
                }
                if windowlog > ZSTD_MAX_WINDOWLOG {
                    return Err(err("window log above 20"));
                }
                Self::Zstd { format, windowlog }
            }
        })
    }
}

/// Encodes the configuration records of `cfgs` (ascending algorithm id, one per bit of
/// `available_compr_algs`), each starting 4-byte aligned, as they follow the superblock.
pub fn encode_compr_cfgs(cfgs: &[ComprCfg]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in cfgs {
        out.extend_from_slice(&c.encode());
        out.resize(out.len().next_multiple_of(4), 0);
    }
    out
}

/// Decodes the records for the algorithms in `available` from `bytes` (which start right
/// after the superblock). Returns each record with its offset relative to `bytes`.
pub fn decode_compr_cfgs(
    available: u16,
    bytes: &[u8],
) -> Result<Vec<(usize, ComprCfg)>, ComprCfgError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    for alg in Algorithm::ALL {
        if available & alg.bit() == 0 {
            continue;
        }
        let err = |reason| ComprCfgError {
            algorithm: alg,
            reason,
        };
        let len = bytes
            .get(pos..pos + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
            .ok_or(err("record past the end of block 0"))?;
        if alg == Algorithm::Lz4 && len < ComprCfg::payload_len(alg) {
            return Err(err("payload shorter than 14 bytes"));
        }
        let payload = bytes
            .get(pos + 2..pos + 2 + len)
            .ok_or(err("record past the end of block 0"))?;
        out.push((pos, ComprCfg::decode(alg, payload)?));
        pos = (pos + 2 + len).next_multiple_of(4);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_header_examples_from_mkfs_1_9_3() {
        // -zlz4hc -Ezt ailpacking `text`: idata 0x0F33, advise INLINE | COMPACTED_2B.
        let h = MapHeader::read_from_bytes(&[0, 0, 0x33, 0x0f, 0x09, 0, 0, 0][..]).unwrap();
        assert_eq!(h.idata_size(), 3891);
        assert_eq!(h.advise(), advise::INLINE_PCLUSTER | advise::COMPACTED_2B);
        assert_eq!(h.head1_algorithm(), Some(Algorithm::Lz4));
        assert!(!h.is_whole_fragment());
        assert_eq!(
            MapHeader::new(
                advise::INLINE_PCLUSTER | advise::COMPACTED_2B,
                Algorithm::Lz4,
                Algorithm::Lz4,
                0
            )
            .with_idata_size(3891),
            h
        );
        // -Efragments `small`: the whole file at packed offset 1808.
        let w = MapHeader::read_from_bytes(&[0x10, 0x07, 0, 0, 0, 0, 0, 0x80][..]).unwrap();
        assert_eq!(w.whole_fragment_offset(), Some(1808));
        assert_eq!(MapHeader::whole_fragment(1808), Some(w));
        let f = MapHeader::read_from_bytes(&[0x40, 0x09, 0, 0, 0x31, 0, 0, 0][..]).unwrap();
        assert_eq!(f.fragment_offset(), 2368);
        assert_eq!(
            f.advise() & advise::FRAGMENT_PCLUSTER,
            advise::FRAGMENT_PCLUSTER
        );
    }

    #[test]
    fn full_index_round_trips() {
        let h = LclusterIndex::head(LclusterType::Head2, 77, 1234, true);
        assert_eq!(
            h.decode(),
            Lcluster::Head {
                kind: LclusterType::Head2,
                clusterofs: 77,
                blkaddr: 1234,
                partial_ref: true
            }
        );
        let n = LclusterIndex::nonhead(LI_D0_CBLKCNT | 4, 8);
        assert_eq!(n.as_bytes(), &[2, 0, 0, 0, 0x04, 0x08, 8, 0]);
        assert_eq!(
            n.decode(),
            Lcluster::NonHead {
                delta0: 1,
                delta1: Some(8),
                cblkcnt: Some(4)
            }
        );
    }

    /// Example A of erofs-compression.md §2: five 4B packs of `text`.
    #[test]
    fn compact_4b_packs_resolve_block_addresses() {
        let layout = CompactLayout::new(0xEC8, 10, true);
        assert_eq!((layout.initial_4b, layout.count_2b), (6, 0));
        let packs: [[u8; 8]; 5] = [
            [0x00, 0x10, 0xc6, 0x1d, 2, 0, 0, 0],
            [0x01, 0x20, 0x50, 0x1b, 4, 0, 0, 0],
            [0x01, 0x20, 0xcb, 0x18, 5, 0, 0, 0],
            [0x01, 0x20, 0x07, 0x16, 6, 0, 0, 0],
            [0x01, 0x20, 0xc5, 0x03, 7, 0, 0, 0],
        ];
        let at = |lcn: u64| {
            let s = layout.slot(lcn).unwrap();
            let p = &packs[((s.pack_offset - 0xEC8) / 8) as usize];
            decode_compact(p, s.items, s.index, 12, false).unwrap()
        };
        assert_eq!(
            at(1),
            Lcluster::Head {
                kind: LclusterType::Head1,
                clusterofs: 0xdc6,
                blkaddr: 4,
                partial_ref: false
            }
        );
        assert_eq!(
            at(0),
            Lcluster::Head {
                kind: LclusterType::Head1,
                clusterofs: 0,
                blkaddr: 3,
                partial_ref: false
            }
        );
        assert_eq!(
            at(2),
            Lcluster::NonHead {
                delta0: 1,
                delta1: Some(1),
                cblkcnt: None
            }
        );
        assert_eq!(
            at(9),
            Lcluster::Head {
                kind: LclusterType::Plain,
                clusterofs: 0x3c5,
                blkaddr: 8,
                partial_ref: false
            }
        );
        assert_eq!(layout.slot(10), None);
        assert_eq!(layout.size(), 40);
        for (i, p) in packs.iter().enumerate() {
            let items: Vec<CompactItem> = (0..2)
                .map(|j| {
                    let v = u16::from_le_bytes([p[2 * j], p[2 * j + 1]]);
                    CompactItem {
                        kind: LclusterType::from_bits(v >> 12),
                        value: v & 0xfff,
                    }
                })
                .collect();
            let base = u32::from_le_bytes([p[4], p[5], p[6], p[7]]);
            assert_eq!(
                encode_compact_pack(&items, base, 12),
                p.to_vec(),
                "pack {i}"
            );
        }
    }

    /// Example B: a 2B pack of sixteen HEAD1 items, base 6.
    #[test]
    fn compact_2b_pack_decodes_14_bit_items() {
        let pack = [
            0x82, 0xd4, 0x4e, 0x95, 0x62, 0xed, 0x5b, 0x61, 0xd7, 0xf4, 0x15, 0x8d, 0x45, 0x65,
            0xec, 0xd9, 0x88, 0x26, 0xaf, 0x21, 0x6e, 0xff, 0xdb, 0x10, 0xe7, 0xcc, 0xf5, 0x77, 6,
            0, 0, 0,
        ];
        let layout = CompactLayout::new(0x508, 37, true);
        assert_eq!((layout.initial_4b, layout.count_2b), (6, 16));
        let s = layout.slot(6).unwrap();
        assert_eq!((s.pack_offset, s.items, s.index), (0x520, 16, 0));
        assert_eq!(
            decode_compact(&pack, 16, 0, 12, false).unwrap(),
            Lcluster::Head {
                kind: LclusterType::Head1,
                clusterofs: 0x482,
                blkaddr: 7,
                partial_ref: false
            }
        );
        assert_eq!(
            decode_compact(&pack, 16, 1, 12, false).unwrap(),
            Lcluster::Head {
                kind: LclusterType::Head1,
                clusterofs: 0x153b & 0xfff,
                blkaddr: 8,
                partial_ref: false
            }
        );
        assert_eq!(layout.slot(22).unwrap().pack_offset, 0x540);
        let items: Vec<CompactItem> = (0..16)
            .map(|i| match decode_compact(&pack, 16, i, 12, false).unwrap() {
                Lcluster::Head {
                    kind, clusterofs, ..
                } => CompactItem {
                    kind,
                    value: clusterofs,
                },
                Lcluster::NonHead { .. } => unreachable!(),
            })
            .collect();
        assert_eq!(encode_compact_pack(&items, 6, 12), pack.to_vec());
    }

    /// Example C: big pclusters, a 4-block pcluster with CBLKCNT.
    #[test]
    fn compact_big_pcluster_cblkcnt() {
        let p0 = [0x00, 0x10, 0x04, 0x28, 3, 0, 0, 0];
        assert_eq!(
            decode_compact(&p0, 2, 1, 12, true).unwrap(),
            Lcluster::NonHead {
                delta0: 1,
                delta1: Some(1),
                cblkcnt: Some(4)
            }
        );
        let p1 = [0x02, 0x20, 0x06, 0x20, 7, 0, 0, 0];
        assert_eq!(
            decode_compact(&p1, 2, 1, 12, true).unwrap(),
            Lcluster::NonHead {
                delta0: 3,
                delta1: Some(6),
                cblkcnt: None
            }
        );
        assert_eq!(
            decode_compact(&p0, 2, 1, 12, false),
            Err(IndexError::UnexpectedCblkcnt)
        );
        assert!(decode_compact(&p0, 2, 0, 13, false).is_ok());
        assert_eq!(
            decode_compact(&p0, 16, 0, 13, false),
            Err(IndexError::ClusterBits(13))
        );
    }

    fn head(kind: LclusterType, co: u16, blk: u32) -> LclusterIndex {
        LclusterIndex::head(kind, co, blk, false)
    }

    /// Example A again, from the other side: the full indexes of `text` (extents at blocks
    /// 3..8, the last one raw) encode to exactly mkfs.erofs's five 4B packs.
    #[test]
    fn compact_encoding_of_example_a_matches_mkfs_bytes() {
        use LclusterType::{Head1, Plain};
        let nh = LclusterIndex::nonhead(1, 1);
        let full = [
            head(Head1, 0, 3),
            head(Head1, 0xdc6, 4),
            nh,
            head(Head1, 0xb50, 5),
            nh,
            head(Head1, 0x8cb, 6),
            nh,
            head(Head1, 0x607, 7),
            nh,
            head(Plain, 0x3c5, 8),
        ];
        let got = encode_compact_indexes(&full, 0xEC8, 12, false, true, 10).unwrap();
        let want: Vec<u8> = [
            [0x00, 0x10, 0xc6, 0x1d, 2, 0, 0, 0],
            [0x01, 0x20, 0x50, 0x1b, 4, 0, 0, 0],
            [0x01, 0x20, 0xcb, 0x18, 5, 0, 0, 0],
            [0x01, 0x20, 0x07, 0x16, 6, 0, 0, 0],
            [0x01, 0x20, 0xc5, 0x03, 7, 0, 0, 0],
        ]
        .concat();
        assert_eq!(got, want);
    }

    /// Example C: one 4-block pcluster, CBLKCNT, and the terminator (whose address nobody
    /// reads); packs without HEADs carry the block after the pcluster as their base.
    #[test]
    fn compact_encoding_of_example_c_matches_mkfs_bytes() {
        let mut full = vec![
            head(LclusterType::Head1, 0, 3),
            LclusterIndex::nonhead(LI_D0_CBLKCNT | 4, 8),
        ];
        for d0 in 2..=8 {
            full.push(LclusterIndex::nonhead(d0, 9 - d0));
        }
        full.push(head(LclusterType::Plain, 0xc40, 0));
        let got = encode_compact_indexes(&full, 0x48, 12, true, true, 9).unwrap();
        let want: Vec<u8> = [
            [0x00, 0x10, 0x04, 0x28, 3, 0, 0, 0],
            [0x02, 0x20, 0x06, 0x20, 7, 0, 0, 0],
            [0x04, 0x20, 0x04, 0x20, 7, 0, 0, 0],
            [0x06, 0x20, 0x02, 0x20, 7, 0, 0, 0],
            [0x08, 0x20, 0x40, 0x0c, 7, 0, 0, 0],
        ]
        .concat();
        assert_eq!(got, want);
        assert_eq!(
            encode_compact_indexes(&full, 0x48, 12, false, true, 9),
            Err(CompactEncodeError::Value { lcn: 1 }),
            "CBLKCNT needs big pclusters"
        );
    }

    #[test]
    fn compact_encoding_refuses_pclusters_a_pack_cannot_address() {
        use LclusterType::Head1;
        // Two one-lcluster extents whose pclusters are not adjacent: the second HEAD's
        // address would be derived as base + 2.
        let full = [head(Head1, 0, 10), head(Head1, 0, 12)];
        assert_eq!(
            encode_compact_indexes(&full, 0x48, 12, false, true, 2),
            Err(CompactEncodeError::Address {
                lcn: 1,
                implied: 11,
                actual: 12
            })
        );
        assert!(encode_compact_indexes(&full, 0x48, 12, false, true, 1).is_ok());
        assert_eq!(
            encode_compact_indexes(&full, 0x48, 15, false, true, 2),
            Err(CompactEncodeError::ClusterBits(15))
        );
    }

    /// The full indexes of extents `(decoded length, blocks, raw)` laid out back to back
    /// from block `first` (erofs-compression.md 1.3): what every writer derives compact
    /// packs from.
    fn full_of(extents: &[(u32, u16, bool)], first: u32, big: bool) -> Vec<LclusterIndex> {
        let mut out = Vec::new();
        let (mut co, mut blk) = (0u32, first);
        for &(len, blocks, raw) in extents {
            let kind = if raw {
                LclusterType::Plain
            } else {
                LclusterType::Head1
            };
            out.push(head(kind, co as u16, blk));
            let mut d1 = (co + len) >> 12;
            let mut d0 = 1u16;
            while d1 > 1 {
                d1 -= 1;
                let delta0 = if d0 == 1 && big {
                    LI_D0_CBLKCNT | blocks
                } else {
                    d0.min(LI_D0_MAX)
                };
                out.push(LclusterIndex::nonhead(delta0, d1 as u16));
                d0 += 1;
            }
            co = if (co + len) >> 12 == 0 {
                0
            } else {
                (co + len) & 0xfff
            };
            blk += u32::from(blocks);
        }
        if co != 0 {
            out.push(head(LclusterType::Plain, co as u16, 0));
        }
        out
    }

    /// Random files: every lcluster of the compact encoding decodes (as Linux 6.12 reads
    /// packs) to the type, `clusterofs` and block address of its full index, a lookback
    /// from any NONHEAD reaches its HEAD, and a look-ahead never passes the next HEAD.
    #[test]
    fn compact_encoding_decodes_to_the_full_indexes() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..400 {
            let big = round % 2 == 0;
            let mut extents = Vec::new();
            for _ in 0..1 + next(40) {
                let raw = next(4) == 0;
                let (len, blocks) = if raw {
                    (4096, 1)
                } else if big {
                    // A pcluster decodes to more than it occupies (the gain check).
                    let blocks = 1 + next(16) as u16;
                    let min = u32::from(blocks) * 4096 + 1;
                    (min + next(u64::from(min) * 3) as u32, blocks)
                } else {
                    (4097 + next(4096 * 6) as u32, 1)
                };
                extents.push((len, blocks, raw));
            }
            // The last extent may end anywhere, even inside the lcluster it starts in.
            let last = extents.len() - 1;
            extents[last].0 = 1 + next(u64::from(extents[last].0)) as u32;
            extents[last].2 = extents[last].0 <= 4096 || extents[last].2;
            if extents[last].2 {
                extents[last].1 = 1;
            }
            let full = full_of(&extents, 100 + next(1000) as u32, big);
            let total = full.len() as u64;
            let terminator = matches!(
                full.last().map(|i| i.decode()),
                Some(Lcluster::Head { blkaddr: 0, .. })
            );
            let addressless = total - u64::from(terminator);
            let ebase = 8 * (1 + next(64));
            let packs = encode_compact_indexes(&full, ebase, 12, big, true, addressless)
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            let layout = CompactLayout::new(ebase, total, true);
            assert_eq!(packs.len() as u64, layout.size());
            let at = |lcn: u64| {
                let s = layout.slot(lcn).unwrap();
                let off = (s.pack_offset - ebase) as usize;
                decode_compact(
                    &packs[off..off + s.pack_size as usize],
                    s.items,
                    s.index,
                    12,
                    big,
                )
                .unwrap()
            };
            let heads: Vec<u64> = (0..total)
                .filter(|&l| full[l as usize].decode().kind().is_head())
                .collect();
            for lcn in 0..total {
                let want = full[lcn as usize].decode();
                let got = at(lcn);
                assert_eq!(got.kind(), want.kind(), "round {round} lcn {lcn}");
                match (got, want) {
                    (
                        Lcluster::Head {
                            clusterofs: a,
                            blkaddr: x,
                            ..
                        },
                        Lcluster::Head {
                            clusterofs: b,
                            blkaddr: y,
                            ..
                        },
                    ) => {
                        assert_eq!(a, b, "round {round} lcn {lcn}");
                        if lcn < addressless {
                            assert_eq!(x, y, "round {round} lcn {lcn}");
                        }
                    }
                    (
                        Lcluster::NonHead {
                            delta0,
                            delta1,
                            cblkcnt,
                        },
                        Lcluster::NonHead { cblkcnt: c, .. },
                    ) => {
                        assert_eq!(cblkcnt, c, "round {round} lcn {lcn}");
                        let own = *heads.iter().rev().find(|&&h| h < lcn).unwrap();
                        let mut back = lcn;
                        let mut step = u64::from(delta0);
                        loop {
                            assert!(step > 0 && step <= back, "round {round} lcn {lcn}");
                            back -= step;
                            match at(back) {
                                Lcluster::NonHead { delta0, .. } => step = u64::from(delta0),
                                Lcluster::Head { .. } => break,
                            }
                        }
                        assert_eq!(back, own, "round {round}: lookback from {lcn}");
                        let ahead = lcn + u64::from(delta1.unwrap());
                        let next_head = heads.iter().find(|&&h| h > lcn).copied().unwrap_or(total);
                        assert!(ahead > lcn && ahead <= next_head, "round {round} lcn {lcn}");
                    }
                    _ => unreachable!(),
                }
            }
        }
    }

    #[test]
    fn compr_cfgs_match_mkfs_bytes() {
        let lz4 = ComprCfg::Lz4 {
            max_distance: 65535,
            max_pclusterblks: 4,
        };
        let mut want = vec![0x0e, 0, 0xff, 0xff, 4, 0];
        want.resize(16, 0);
        assert_eq!(lz4.encode(), want);
        let zstd = ComprCfg::Zstd {
            format: 0,
            windowlog: 5,
        };
        assert_eq!(zstd.encode(), [6, 0, 0, 5, 0, 0, 0, 0]);
        let lzma = ComprCfg::Lzma {
            dict_size: 32768,
            format: 0,
        };
        let deflate = ComprCfg::Deflate { windowbits: 15 };
        let all = encode_compr_cfgs(&[lz4, lzma, deflate, zstd]);
        let back = decode_compr_cfgs(0xF, &all).unwrap();
        assert_eq!(
            back.iter().map(|r| r.1).collect::<Vec<_>>(),
            [lz4, lzma, deflate, zstd]
        );
        assert_eq!(
            back.iter().map(|r| r.0).collect::<Vec<_>>(),
            [0, 16, 32, 40]
        );
        assert!(ComprCfg::decode(Algorithm::Zstd, &[0, 11]).is_err());
        assert!(ComprCfg::decode(Algorithm::Lzma, &[0, 0, 0, 1, 0, 0]).is_err());
        assert!(decode_compr_cfgs(0x1, &[6, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
