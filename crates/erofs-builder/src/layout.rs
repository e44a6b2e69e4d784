//! The layout pass: every on-disk decision, made before anything is written.
//!
//! Image order:
//!
//! ```text
//! block 0 (and up to the superblock's block for 512/1024-byte blocks)
//!     bytes 0..1024 zero, superblock at 1024, long prefix records at 1152
//! shared xattr area (block aligned; absent when empty)
//! data area: full blocks of files, directories and symlinks, in inode order
//! metadata area: inodes with their xattr bodies, inline tails and chunk tables
//! ```
//!
//! Data comes before metadata so that fingerprints, computed while the data is copied, are
//! known when the inodes are written. `meta_blkaddr` is the block before the metadata area,
//! so the root (first in the metadata area) has nid `blksz / 32`, never 0, and always fits
//! 16 bits.

use erofs_format::{Compat, DataLayout, INODE_SLOT_SIZE, Incompat, NULL_ADDR, SuperBlock};

use crate::encode::{Count, InodeFields, Item, PLACEHOLDER, Payload, ZMap};
use crate::tree::{FileContent, Inode, Kind, Tree};
use crate::xattr::XattrPlan;
use crate::{BuildError, Options};

/// Where the records after the 128-byte superblock start: the compression configuration
/// records (with `COMPR_CFGS`), then the long prefix records.
pub const PREFIX_RECORDS_OFFSET: u64 = 1152;

/// The compression configuration records of an image built with `options` (empty when the
/// superblock needs none: no compression, or LZ4 with one-block pclusters).
pub fn compr_cfgs(options: &Options) -> Vec<u8> {
    use erofs_format::compress::encode_compr_cfgs;
    let Some(z) = &options.compression else {
        return Vec::new();
    };
    let blksz = 1u32 << options.blkszbits;
    if !z.big_pclusters(blksz) {
        return Vec::new();
    }
    encode_compr_cfgs(&z.configs(blksz))
}

/// The chunk table of a sparse file (4-byte block map entries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkPlan {
    /// log2 of the chunk size.
    pub chunkbits: u8,
    /// Start block of each chunk, [`NULL_ADDR`] for holes.
    pub table: Vec<u32>,
    /// For each chunk with data: its byte range in the file (the last may be short).
    pub data_chunks: Vec<std::ops::Range<u64>>,
    /// The table is 8-byte chunk indexes into this extra device (the data is not in the
    /// image); `None`: a 4-byte block map into the image.
    pub device: Option<u16>,
}

/// The plan for one inode.
#[derive(Clone, Debug)]
pub struct InodePlan {
    /// 64-byte inode rather than 32.
    pub extended: bool,
    /// Data layout.
    pub layout: DataLayout,
    /// `i_size`.
    pub size: u64,
    /// The nid.
    pub nid: u64,
    /// Byte offset inside the metadata area.
    pub meta_offset: u64,
    /// First data block, `NULL_ADDR` (inline, no full block) or 0 (no data).
    pub startblk: u32,
    /// Blocks this inode occupies in the data area.
    pub data_blocks: u64,
    /// Bytes stored inline after the xattr body.
    pub tail_len: u32,
    /// Chunk table for sparse files.
    pub chunk: Option<ChunkPlan>,
    /// A file of the compressed area: its item holds the map header and full lcluster
    /// indexes, or (compression gained nothing) a flat inode whose blocks are there.
    pub compressed: bool,
}

/// The complete plan of an image.
#[derive(Clone, Debug)]
pub struct Plan {
    /// log2 of the block size.
    pub blkszbits: u8,
    /// One plan per tree inode, same order.
    pub inodes: Vec<InodePlan>,
    /// Xattr bodies, prefixes and the shared area.
    pub xattrs: XattrPlan,
    /// First block of the shared xattr area (0 if none).
    pub xattr_blkaddr: u32,
    /// First block of the data area.
    pub data_start: u64,
    /// First block of the metadata area.
    pub meta_start: u64,
    /// Inode indices in metadata-area order (by `meta_offset`).
    pub meta_order: Vec<usize>,
    /// Blocks in the image.
    pub total_blocks: u64,
    /// The superblock, checksum not yet computed.
    pub superblock: SuperBlock,
    /// The compression configuration records, right after the superblock.
    pub compr_cfgs: Vec<u8>,
    /// Compressed files may have pclusters of several blocks (CBLKCNT in their indexes).
    pub big_pclusters: bool,
    /// The device table (extra devices 1..), at byte `devt_offset` of block 0.
    pub devices: Vec<erofs_format::DeviceSlot>,
    /// Where the device table starts.
    pub devt_offset: u64,
    /// Blocks after `total_blocks` reserved for files whose content the image does not
    /// hold (`--tar=i,MAPFILE`): the image file ends after them, and they read as zeroes
    /// until a consumer of [`Plan::region_map`] copies the content in.
    pub region_blocks: u64,
    /// Where each such file's content goes in the reserved region, in inode order.
    pub region_map: Vec<RegionExtent>,
}

/// A file's place in the reserved region of a `--tar=i,MAPFILE` image and where its
/// content lies in the source (one line of mkfs.erofs's map file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegionExtent {
    /// First block in the image.
    pub blkaddr: u64,
    /// Blocks.
    pub blocks: u64,
    /// Byte offset of the content in the source (the tar stream).
    pub source_offset: u64,
    /// Bytes of the last block past the content (they stay zero).
    pub zeroed: u32,
}

impl Plan {
    /// The block size.
    pub fn blksz(&self) -> u64 {
        1 << self.blkszbits
    }

    /// Image size in bytes.
    pub fn image_bytes(&self) -> u64 {
        (self.total_blocks + self.region_blocks) << self.blkszbits
    }

    /// Whether compact inodes are possible for this inode (§4.6).
    fn wants_extended(inode: &Inode, size: u64, time: TimeBase) -> bool {
        size > u64::from(u32::MAX)
            || inode.uid > 0xFFFF
            || inode.gid > 0xFFFF
            || inode.nlink > 0xFFFF
            || time.compact_mtime(inode.mtime, inode.mtime_nsec).is_none()
    }
}

/// The size of a metadata item: an inode of the given form, `xattrs`, then `payload`
/// (placeholders standing in for content not read yet), encoded into a counter.
fn item_size(extended: bool, xattrs: &[u8], payload: Payload<'_>) -> u64 {
    Item {
        inode: InodeFields::sized(extended),
        xattrs,
        digest: None,
        payload,
    }
    .size()
}

/// The size of inode `i`'s metadata item with an inline tail of `tail` bytes, or `None`
/// when no tail that long fits any block.
fn inline_item_size(pre: &Prelude, tree: &Tree, i: usize, tail: u64) -> Option<u64> {
    let inode = &tree.inodes[i];
    let size = match &inode.kind {
        Kind::Regular(c) => c.size,
        _ => 0,
    };
    let tail = PLACEHOLDER.get(..usize::try_from(tail).ok()?)?;
    let extended = Plan::wants_extended(inode, size, pre.time);
    Some(item_size(
        extended,
        &pre.xattrs.bodies[i].bytes,
        Payload::Inline(tail),
    ))
}

/// What a compact inode's time is relative to: the superblock's `epoch` (with
/// `fixed_nsec` 0 for every compact inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeBase {
    /// The superblock's `epoch`.
    pub epoch: u64,
    /// The 48-bit layout, whose compact inodes store seconds after `epoch` (Linux 6.15+).
    /// Older readers (Linux 6.12) ignore that field and take `epoch` itself, so outside it
    /// only files whose mtime is `epoch` get compact inodes, storing 0.
    pub bit48: bool,
}

impl TimeBase {
    /// The time base of a superblock.
    pub fn of(sb: &SuperBlock) -> Self {
        Self {
            epoch: sb.epoch.get(),
            bit48: sb.incompat().contains(Incompat::BIT48),
        }
    }

    /// The `i_mtime` a compact inode stores for this mtime, or `None` when only an
    /// extended inode can keep it.
    pub fn compact_mtime(&self, mtime: i64, nsec: u32) -> Option<u32> {
        if nsec != 0 {
            return None;
        }
        let after = mtime.checked_sub(i64::try_from(self.epoch).ok()?)?;
        if self.bit48 {
            u32::try_from(after).ok()
        } else {
            (after == 0).then_some(0)
        }
    }
}

/// The superblock's `epoch` and `build_time` for an image built at `time` (seconds):
/// without 48-bit, the epoch is the time and `build_time` 0; with it, mkfs.erofs's choice,
/// the epoch as late as keeps the time within 32 bits of it (so that compact inodes of
/// files of that time or later fit), and `build_time` the rest.
pub fn epoch_and_build_time(time: u64, bit48: bool) -> (u64, u32) {
    if !bit48 {
        return (time, 0);
    }
    let epoch = time.saturating_sub(u64::from(u32::MAX));
    (epoch, (time - epoch) as u32)
}

/// Places metadata items (inode, xattr body, then inline tail or chunk table) in the
/// metadata area, the way mkfs.erofs fills its metadata blocks: an item that fits in a block
/// never crosses one; when the current block lacks room, the earlier block with the least
/// room that still fits is used, else a new block is started. Items start on 32-byte slots.
struct MetaAlloc {
    blksz: u64,
    /// End of the last block in use (where the next new item would go).
    end: u64,
    /// Partly used earlier blocks: (free bytes from the next slot to the block end, block).
    open: std::collections::BTreeSet<(u64, u64)>,
}

impl MetaAlloc {
    fn new(blksz: u64) -> Self {
        Self {
            blksz,
            end: 0,
            open: std::collections::BTreeSet::new(),
        }
    }

    /// Returns the offset of a new item of `size` bytes.
    fn place(&mut self, size: u64) -> u64 {
        let slot = INODE_SLOT_SIZE as u64;
        let blksz = self.blksz;
        let cur = self.end.next_multiple_of(slot);
        if size > blksz {
            self.end = cur + size;
            return cur;
        }
        let in_block = cur % blksz;
        if in_block == 0 || in_block + size <= blksz {
            self.end = cur + size;
            return cur;
        }
        if let Some(&(free, blk)) = self.open.range((size, 0)..).next() {
            self.open.remove(&(free, blk));
            let off = blk * blksz + (blksz - free);
            let used = (blksz - free + size).next_multiple_of(slot);
            if used < blksz {
                self.open.insert((blksz - used, blk));
            }
            return off;
        }
        let blk = cur / blksz;
        self.open.insert((blksz - in_block, blk));
        let off = (blk + 1) * blksz;
        self.end = off + size;
        off
    }
}

/// Returns the seconds since the Unix epoch now.
fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn random_uuid() -> [u8; 16] {
    use std::io::Read;
    let mut u = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut u))
        .is_ok();
    if !ok {
        // Fall back on the clock and the process id: unique enough for a label.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        u.copy_from_slice(&(t ^ (u128::from(std::process::id()) << 64)).to_le_bytes());
    }
    u[6] = (u[6] & 0x0F) | 0x40;
    u[8] = (u[8] & 0x3F) | 0x80;
    u
}

/// Chooses chunk size and table for a file with holes. Returns `None` when no chunk is a
/// hole (then the file is stored flat).
fn plan_chunks(
    size: u64,
    ranges: &[std::ops::Range<u64>],
    blkszbits: u8,
) -> Option<(u8, Vec<bool>)> {
    let mut bits = blkszbits;
    while size.div_ceil(1 << bits) > 65536 && bits < blkszbits + 31 {
        bits += 1;
    }
    let csz = 1u64 << bits;
    let n = size.div_ceil(csz) as usize;
    let mut has_data = vec![false; n];
    for r in ranges {
        // Ranges come from SEEK_DATA (clamped to the size) or from API callers: ignore
        // anything empty or past the end rather than index past the chunk map.
        if r.start >= r.end || r.start >= size {
            continue;
        }
        let first = (r.start / csz) as usize;
        let last = ((r.end - 1) / csz) as usize;
        for d in &mut has_data[first..=last.min(n - 1)] {
            *d = true;
        }
    }
    has_data.iter().any(|d| !d).then_some((bits, has_data))
}

/// What is decided before any data is written: the xattr plan, the epoch and the first
/// data block. The compressed stage needs it (compressed files go first in the data area),
/// and [`plan_with`] completes it.
pub struct Prelude {
    /// Xattr bodies, prefixes and the shared area.
    pub xattrs: XattrPlan,
    /// The superblock's `epoch`: the image's time (`-T`, or the build time), or with the
    /// 48-bit layout up to 2³² − 1 seconds earlier.
    pub epoch: u64,
    /// The superblock's `build_time`: the image's time after `epoch` (48-bit layout; 0
    /// otherwise).
    pub build_time: u32,
    /// How compact inodes store times.
    pub time: TimeBase,
    /// First block of the data area.
    pub data_start: u64,
    /// First block of the shared xattr area (0 if none).
    pub xattr_blkaddr: u64,
    /// The device table (extra devices 1..), at byte `devt_offset` of block 0.
    pub devices: Vec<erofs_format::DeviceSlot>,
    /// Where the device table starts.
    pub devt_offset: u64,
}

/// A compressed file as the compressed stage stored it.
#[derive(Clone, Debug)]
pub struct ZFile {
    /// Extents in file order, pclusters at absolute addresses. With an inline tail the last
    /// extent is the inline one: none of it is in the data area, and its `blk` is where a
    /// pcluster after the one before it would start (so that compact packs, which derive
    /// addresses, stay consistent; nobody reads it).
    pub extents: Vec<crate::compress::Extent>,
    /// The tail pcluster stored inline after the indexes (`-E ztailpacking`): compressed,
    /// or raw when the last extent is PLAIN.
    pub inline: Option<Vec<u8>>,
    /// The algorithm of its pclusters (the map header's HEAD1 algorithm).
    pub algorithm: erofs_format::compress::Algorithm,
    /// Its fragment in the packed inode (`-E fragments`): with a tail fragment the last
    /// extent is the fragment's, addressed like an inline tail's; a whole-file fragment
    /// has no extents.
    pub fragment: Option<Fragment>,
    /// Raw pclusters are interlaced (advise `INTERLACED_PCLUSTER`, set on every compressed
    /// file of an image with fragments, as mkfs.erofs does).
    pub interlaced: bool,
}

/// Where a compressed file's fragment lies in the packed inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// Byte offset in the packed inode.
    pub offset: u64,
    /// The fragment is the whole file (the map is then the 8-byte header alone).
    pub whole: bool,
}

impl ZFile {
    /// Whether each pcluster starts where the one before it ends, as compact indexes
    /// (which derive addresses from a pack's base) require; `-E dedupe` breaks the order
    /// where an extent reuses an earlier pcluster.
    pub fn contiguous(&self) -> bool {
        self.extents
            .windows(2)
            .all(|w| w[1].blk == w[0].blk + w[0].blocks)
    }

    /// Whether an extent takes only a prefix of its pcluster's output (`PARTIAL_REF`).
    pub fn partial(&self) -> bool {
        self.extents.iter().any(|e| e.partial)
    }

    /// The extents whose pclusters lie in the data area: all but an inline or fragment tail.
    pub fn data_extents(&self) -> &[crate::compress::Extent] {
        let tail = self.inline.is_some() || self.fragment.is_some_and(|f| !f.whole);
        let n = self.extents.len().saturating_sub(usize::from(tail));
        &self.extents[..n]
    }

    /// Blocks of pclusters in the data area (`i_u` of the inode).
    pub fn stored_blocks(&self) -> u32 {
        self.data_extents().iter().map(|e| e.blocks).sum()
    }

    /// Whether its indexes may be compact where the image's are: pclusters in order and no
    /// `PARTIAL_REF` (only full indexes carry it); not for a whole-file fragment (a
    /// full-layout header alone), nor for a tail fragment at 4 GiB or more (the tail HEAD
    /// of full indexes carries the offset's high 32 bits).
    pub fn compact_ok(&self) -> bool {
        self.contiguous()
            && !self.partial()
            && self
                .fragment
                .is_none_or(|f| !f.whole && f.offset <= u64::from(u32::MAX))
    }
}

/// Whether compressed files get compact indexes, as mkfs.erofs gives them by default: not
/// with `-E legacy-compress`, and only while every pcluster's block count fits a compact
/// CBLKCNT item (below 0x800 blocks: not 1 MiB pclusters of 512-byte blocks).
pub fn compact_indexes(options: &Options) -> bool {
    use erofs_format::compress::{COMPACT_4B_MAX_LCLUSTERBITS, LI_D0_CBLKCNT};
    let blksz = 1u32 << options.blkszbits;
    !options.zlayout.full_indexes
        && options.blkszbits <= COMPACT_4B_MAX_LCLUSTERBITS
        && options
            .compression
            .as_ref()
            .is_none_or(|z| z.max_pcluster(blksz) / blksz < u32::from(LI_D0_CBLKCNT))
}

/// Whether compact indexes use 2-byte packs (`COMPACTED_2B`): lclusters of at most 4 KiB,
/// and lclusters are blocks here.
pub fn compacted_2b(blkszbits: u8) -> bool {
    blkszbits <= erofs_format::compress::COMPACT_2B_MAX_LCLUSTERBITS
}

/// Bytes of a compressed file's metadata item before any inline tail: inode and xattr body
/// (`inode_and_xattrs` bytes, the item starting on a 32-byte slot), the 8-byte-aligned map
/// header, then the indexes of `size` bytes of lclusters (= blocks).
///
/// The one size not taken from the encoder ([`crate::encode::ZMap`]): the compressed stage
/// needs it to decide whether a tail pcluster goes inline, before the file's extents exist.
/// It depends only on the lcluster count, and must equal the encoding's size exactly: an
/// overestimate would inline fewer tails than mkfs.erofs (other bytes), an underestimate
/// would admit a tail the layout then rejects. `encode`'s tests hold it to that for random
/// extents. Once the extents exist, the layout sizes the map by encoding it.
pub fn zmeta_size(inode_and_xattrs: u64, size: u64, blkszbits: u8, compact: bool) -> u64 {
    use erofs_format::compress::{
        CompactLayout, FULL_INDEX_RESERVED, FULL_INDEX_SIZE, MAP_HEADER_SIZE,
    };
    let ebase = inode_and_xattrs.next_multiple_of(8) + MAP_HEADER_SIZE;
    let lclusters = size.div_ceil(1 << blkszbits);
    if compact {
        ebase + CompactLayout::new(ebase, lclusters, compacted_2b(blkszbits)).size()
    } else {
        ebase + FULL_INDEX_RESERVED + lclusters * FULL_INDEX_SIZE
    }
}

/// Whether a compressed tail pcluster of `tail` bytes fits inline after the indexes of
/// inode `i`: the whole metadata item in one block, as mkfs.erofs requires (Linux refuses
/// a tail that crosses a block).
pub fn ztail_fits(pre: &Prelude, tree: &Tree, i: usize, options: &Options, tail: u64) -> bool {
    let inode = &tree.inodes[i];
    let Kind::Regular(c) = &inode.kind else {
        return false;
    };
    let extended = Plan::wants_extended(inode, c.size, pre.time);
    let item = zmeta_size(
        item_size(extended, &pre.xattrs.bodies[i].bytes, Payload::None),
        c.size,
        options.blkszbits,
        // Where pclusters are shared a file learns whether it keeps compact indexes only
        // once its extents are placed: its tail must fit with full ones.
        compact_indexes(options) && !options.zlayout.shares_pclusters(),
    );
    tail > 0 && item + tail <= 1u64 << options.blkszbits
}

/// How a file of the compressed area was stored, as the compressed stage reports it.
#[derive(Clone, Debug)]
pub enum ZStored {
    /// Pclusters at absolute addresses.
    Compressed(ZFile),
    /// Compression gained nothing: plain blocks from `startblk`, and an inline tail (empty
    /// when the last block was written too).
    Flat {
        /// First block.
        startblk: u32,
        /// The inline tail.
        tail: Vec<u8>,
    },
}

/// The compressed area: first in the data area, `blocks` long.
#[derive(Clone, Debug, Default)]
pub struct ZArea {
    /// Blocks used.
    pub blocks: u64,
    /// Per inode: how its data was stored, for the files of the compressed area.
    pub files: Vec<Option<ZStored>>,
    /// The packed inode (`-E fragments`), when files have fragments.
    pub packed: Option<usize>,
}

/// Whether a regular file is compressed (`-z`), as mkfs.erofs tries every file: one that
/// fits a block gains nothing unless its compressed tail can go inline (`-E ztailpacking`),
/// so it is not even tried.
pub fn compressible(inode: &Inode, options: &Options) -> bool {
    // One block never gains by compression alone, but under dedupe it may be read from an
    // earlier pcluster (mkfs.erofs tries it then).
    let smallest = if options.zlayout.ztailpacking || options.fragments() != crate::Fragments::Off {
        1
    } else if options.zlayout.dedupe {
        1u64 << options.blkszbits
    } else {
        (1u64 << options.blkszbits) + 1
    };
    options.compression.is_some() && matches!(&inode.kind, Kind::Regular(c) if c.size >= smallest)
}

/// Whether an inline tail of `tail` bytes fits the block of inode `i`.
pub fn inline_fits(pre: &Prelude, tree: &Tree, i: usize, options: &Options, tail: u64) -> bool {
    tail > 0
        && !options.noinline_data
        && inline_item_size(pre, tree, i, tail).is_some_and(|n| n <= 1u64 << options.blkszbits)
}

/// Whether the long xattr name prefixes (if any) go at the start of the packed inode rather
/// than in block 0: whenever fragments may be used, as mkfs.erofs places them. Linux 6.12
/// does not know `PLAIN_XATTR_PFX` and reads the prefixes from the packed inode whenever
/// one exists, so plain prefixes beside a packed inode would be misread
/// (erofs-format.md 8.5).
pub fn prefixes_in_packed(options: &Options) -> bool {
    options.fragments() != crate::Fragments::Off
}

/// The first planning step: xattrs, epoch, the head's size.
pub fn prelude(tree: &Tree, options: &Options) -> Result<Prelude, BuildError> {
    let blksz = 1u64 << options.blkszbits;
    let time = options.timestamp.unwrap_or_else(|| now() as i64).max(0) as u64;
    let (epoch, build_time) = epoch_and_build_time(time, options.bit48);
    let fp_name = options
        .fingerprint
        .as_ref()
        .map(|f| f.xattr_name.as_slice());
    let xattrs = crate::xattr::plan(
        tree,
        options.xattr_tolerance,
        &options.xattr_prefixes,
        fp_name,
        options.xattr_name_filter,
    )?;
    // Block 0 (superblock, compression configs, long prefixes, device table) and the
    // shared xattr area. With fragments the prefixes are in the packed inode instead.
    let prefix_records = if prefixes_in_packed(options) {
        Vec::new()
    } else {
        xattrs.prefixes.records()
    };
    let records_end =
        PREFIX_RECORDS_OFFSET + compr_cfgs(options).len() as u64 + prefix_records.len() as u64;
    let devt_offset = records_end.next_multiple_of(128);
    let devices = device_table(tree, blksz)?;
    let head_end = if devices.is_empty() {
        records_end
    } else {
        devt_offset + 128 * devices.len() as u64
    };
    let mut next_block = head_end.div_ceil(blksz);
    let xattr_blkaddr = if xattrs.shared_area.is_empty() {
        0
    } else {
        let b = next_block;
        next_block += (xattrs.shared_area.len() as u64).div_ceil(blksz);
        b
    };
    Ok(Prelude {
        xattrs,
        epoch,
        build_time,
        time: TimeBase {
            epoch,
            bit48: options.bit48,
        },
        data_start: next_block,
        xattr_blkaddr,
        devices,
        devt_offset,
    })
}

/// One device slot per extra device that blob-backed files (`--tar=i`) point into, each as
/// long as the furthest block a file uses.
fn device_table(tree: &Tree, blksz: u64) -> Result<Vec<erofs_format::DeviceSlot>, BuildError> {
    let mut device_blocks: Vec<u64> = Vec::new();
    for inode in &tree.inodes {
        if let Kind::Regular(FileContent {
            size,
            source: crate::tree::DataSource::Blob(b),
            ..
        }) = &inode.kind
            && *size > 0
            && b.device > 0
        {
            let d = usize::from(b.device);
            if device_blocks.len() < d {
                device_blocks.resize(d, 0);
            }
            device_blocks[d - 1] = device_blocks[d - 1].max((b.offset + size).div_ceil(blksz));
        }
    }
    device_blocks
        .iter()
        .map(|blocks| {
            let mut slot = <erofs_format::DeviceSlot as zerocopy::FromZeros>::new_zeroed();
            slot.blocks_lo.set(u32::try_from(*blocks).map_err(|_| {
                BuildError::TooLarge("an extra device of more than 2^32 blocks".into())
            })?);
            Ok(slot)
        })
        .collect()
}

/// Plans the image for `tree` (no compressed files).
pub fn plan(tree: &Tree, options: &Options) -> Result<Plan, BuildError> {
    plan_with(tree, options, prelude(tree, options)?, None)
}

/// Plans the image for `tree` once the compressed area `z` (if any) is written.
pub fn plan_with(
    tree: &Tree,
    options: &Options,
    pre: Prelude,
    z: Option<&ZArea>,
) -> Result<Plan, BuildError> {
    let blkszbits = options.blkszbits;
    let blksz = 1u64 << blkszbits;
    let Prelude {
        xattrs,
        epoch,
        build_time,
        time,
        data_start,
        xattr_blkaddr,
        mut devices,
        devt_offset,
    } = pre;

    let big_pclusters = options
        .compression
        .as_ref()
        .is_some_and(|z| z.big_pclusters(blksz as u32));
    // Pass 1: sizes, kinds, data layouts, and each metadata item's size (kept in
    // `meta_offset` until the items are placed).
    let mut inodes = Vec::with_capacity(tree.inodes.len());
    let mut chunk_maps: Vec<Option<(u8, Vec<bool>)>> = Vec::new();
    let mut alloc = MetaAlloc::new(blksz);
    let mut any_chunked = false;
    let mut any_ztail = false;
    let mut any_fragment = false;
    let mut any_partial = false;
    // Files in the reserved region: (inode, first block in the region, source offset).
    let mut region: Vec<(usize, u64, u64)> = Vec::new();
    let mut region_blocks = 0u64;
    for (i, inode) in tree.inodes.iter().enumerate() {
        let xattr_body = &xattrs.bodies[i].bytes;
        let (size, inlinable) = match &inode.kind {
            Kind::Regular(c) => (c.size, !options.noinline_data),
            Kind::Directory { parent, entries } => {
                let list = crate::dir::entries(tree, i, *parent, entries, |_| 0);
                (crate::dir::size(&list, blksz as usize), true)
            }
            Kind::Symlink(t) => (t.len() as u64, true),
            _ => (0, false),
        };
        let extended = Plan::wants_extended(inode, size, time);
        // Every item is sized by encoding it, as the writer will.
        let sized = |payload| item_size(extended, xattr_body, payload);
        let mut chunk_map = None;
        let stored = z.and_then(|z| z.files.get(i)).and_then(|s| s.as_ref());
        let compressed = stored.is_some();
        if !compressed
            && let Kind::Regular(FileContent {
                size,
                data_ranges: Some(ranges),
                ..
            }) = &inode.kind
        {
            chunk_map = plan_chunks(*size, ranges, blkszbits);
        }
        let mut p = InodePlan {
            extended,
            layout: DataLayout::FlatPlain,
            size,
            nid: 0,
            meta_offset: 0,
            startblk: 0,
            data_blocks: 0,
            tail_len: 0,
            chunk: None,
            compressed,
        };
        let has_data = matches!(
            inode.kind,
            Kind::Regular(_) | Kind::Directory { .. } | Kind::Symlink(_)
        );
        let blob = match &inode.kind {
            Kind::Regular(FileContent {
                size,
                source: crate::tree::DataSource::Blob(b),
                ..
            }) if *size > 0 => Some(*b),
            _ => None,
        };
        if let Some(ZStored::Compressed(zf)) = stored {
            // Map header (8-byte aligned), the indexes, then any inline tail pcluster.
            let compact = compact_indexes(options) && zf.compact_ok();
            any_fragment |= zf.fragment.is_some();
            any_partial |= zf.partial();
            p.layout = if compact {
                DataLayout::CompressedCompact
            } else {
                DataLayout::CompressedFull
            };
            // The extents are known now: the map is sized by encoding it, as the writer
            // will (`zmeta_size` is what the compressed stage had before they existed).
            let mut item = Count::default();
            Item {
                inode: InodeFields::sized(extended),
                xattrs: xattr_body,
                digest: None,
                payload: Payload::None,
            }
            .encode(&mut item);
            ZMap {
                file: zf,
                size,
                blkszbits,
                big: big_pclusters,
                compact,
            }
            .encode(&mut item, 0)?;
            let item = item.0 as u64;
            if let Some(tail) = &zf.inline {
                any_ztail = true;
                if item > blksz {
                    return Err(BuildError::Output(std::io::Error::other(format!(
                        "inode {i}: inline tail pcluster of {} bytes does not fit \
                         its metadata block",
                        tail.len()
                    ))));
                }
            }
            p.meta_offset = item;
        } else if let Some(ZStored::Flat { startblk, tail }) = stored {
            // Its blocks are in the compressed area already.
            if !tail.is_empty() {
                p.layout = DataLayout::FlatInline;
                p.tail_len = tail.len() as u32;
            }
            // A file wholly inline (a small one tried under ztailpacking) has no block:
            // NULL_ADDR, as mkfs.erofs writes.
            p.startblk = if size == u64::from(p.tail_len) {
                NULL_ADDR
            } else {
                *startblk
            };
            p.meta_offset = sized(Payload::Inline(tail));
        } else if let Some(b) = blob
            && b.device == 0
        {
            // The reserved region (`--tar=i,MAPFILE`): one chunk covering the file, a
            // 4-byte block map entry; the addresses are final once the metadata is sized.
            let mut bits = blkszbits;
            while (1u64 << bits) < size && bits < blkszbits + 31 {
                bits += 1;
            }
            let n = size.div_ceil(1 << bits);
            let first = region_blocks;
            region_blocks += size.div_ceil(blksz);
            region.push((i, first, b.offset));
            any_chunked = true;
            p.layout = DataLayout::ChunkBased;
            let table: Vec<u32> = (0..n)
                .map(|k| (first + (k << (bits - blkszbits))) as u32)
                .collect();
            p.meta_offset = sized(Payload::BlockMap(&table));
            p.chunk = Some(ChunkPlan {
                chunkbits: bits,
                table,
                data_chunks: Vec::new(),
                device: None,
            });
        } else if let Some(b) = blob {
            // One chunk covering the file, pointing at its bytes on the extra device.
            if b.offset % blksz != 0 {
                return Err(BuildError::InvalidOption(format!(
                    "inode {i}: data at offset {} of device {} is not block-aligned",
                    b.offset, b.device
                )));
            }
            let mut bits = blkszbits;
            while (1u64 << bits) < size && bits < blkszbits + 31 {
                bits += 1;
            }
            let n = size.div_ceil(1 << bits);
            let table = (0..n)
                .map(|k| u32::try_from((b.offset >> blkszbits) + (k << (bits - blkszbits))))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| BuildError::TooLarge("device offset exceeds 32-bit blocks".into()))?;
            any_chunked = true;
            p.layout = DataLayout::ChunkBased;
            p.meta_offset = sized(Payload::ChunkIndexes {
                device: b.device,
                blocks: &table,
            });
            p.chunk = Some(ChunkPlan {
                chunkbits: bits,
                table,
                data_chunks: Vec::new(),
                device: Some(b.device),
            });
        } else if let Some((_, map)) = &chunk_map {
            any_chunked = true;
            p.layout = DataLayout::ChunkBased;
            // The blocks are assigned in pass 2.
            p.meta_offset = sized(Payload::BlockMap(&vec![NULL_ADDR; map.len()]));
        } else if has_data && size > 0 {
            let tail = size % blksz;
            let full = size / blksz;
            // A tail is shorter than a block, and blocks are at most the placeholder's size.
            let inline_tail = Payload::Inline(&PLACEHOLDER[..tail as usize]);
            let fits = tail > 0 && inlinable && sized(inline_tail) <= blksz;
            if fits {
                p.layout = DataLayout::FlatInline;
                p.tail_len = tail as u32;
                p.data_blocks = full;
            } else {
                p.data_blocks = size.div_ceil(blksz);
            }
            p.meta_offset = sized(Payload::Inline(&PLACEHOLDER[..p.tail_len as usize]));
        } else {
            p.meta_offset = sized(Payload::None);
        }
        chunk_maps.push(chunk_map);
        inodes.push(p);
    }
    // Place the items. With inline tail pclusters many items are nearly a block: placing
    // the largest first (the root still first, for its nid) lets the small ones fill the
    // gaps they leave, instead of padding each block they do not fit.
    let mut order: Vec<usize> = (0..inodes.len()).collect();
    if any_ztail && !order.is_empty() {
        order[1..].sort_by_key(|&i| std::cmp::Reverse(inodes[i].meta_offset));
    }
    for i in order {
        let p = &mut inodes[i];
        p.meta_offset = alloc.place(p.meta_offset);
        p.nid = p.meta_offset / INODE_SLOT_SIZE as u64 + blksz / INODE_SLOT_SIZE as u64;
    }
    let meta_size = alloc.end;
    let mut meta_order: Vec<usize> = (0..inodes.len()).collect();
    meta_order.sort_by_key(|&i| inodes[i].meta_offset);

    // Compressed files' pclusters come first in the data area, placed in file order as they
    // are produced.
    let mut next_block = data_start + z.map_or(0, |z| z.blocks);

    // Pass 2: data blocks, in inode order.
    for (i, p) in inodes.iter_mut().enumerate() {
        if p.compressed {
            continue;
        }
        if let Some((bits, map)) = chunk_maps[i].take() {
            let csz = 1u64 << bits;
            let mut table = Vec::with_capacity(map.len());
            let mut data_chunks = Vec::new();
            for (ci, has) in map.into_iter().enumerate() {
                if has {
                    let start = ci as u64 * csz;
                    let end = (start + csz).min(p.size);
                    table.push(next_block as u32);
                    next_block += (end - start).div_ceil(blksz);
                    data_chunks.push(start..end);
                } else {
                    table.push(NULL_ADDR);
                }
            }
            p.chunk = Some(ChunkPlan {
                chunkbits: bits,
                table,
                data_chunks,
                device: None,
            });
            p.data_blocks = 0;
        } else if p.data_blocks > 0 {
            p.startblk = next_block as u32;
            next_block += p.data_blocks;
        } else if p.layout == DataLayout::FlatInline {
            p.startblk = NULL_ADDR;
        }
        if next_block > u64::from(u32::MAX) {
            return Err(BuildError::TooLarge(
                "block addresses exceed 32 bits; use a larger block size".into(),
            ));
        }
    }
    let meta_start = next_block.max(1);
    let total_blocks = meta_start + meta_size.div_ceil(blksz).max(1);
    if total_blocks + region_blocks > u64::from(u32::MAX) {
        return Err(BuildError::TooLarge("more than 2^32 blocks".into()));
    }
    // The reserved region follows the metadata, as mkfs.erofs appends its blob data.
    let mut region_map = Vec::with_capacity(region.len());
    for &(i, first, source_offset) in &region {
        let p = &mut inodes[i];
        if let Some(ch) = &mut p.chunk {
            for blk in &mut ch.table {
                *blk += total_blocks as u32;
            }
        }
        let tail = (p.size % blksz) as u32;
        region_map.push(RegionExtent {
            blkaddr: total_blocks + first,
            blocks: p.size.div_ceil(blksz),
            source_offset,
            zeroed: if tail == 0 { 0 } else { blksz as u32 - tail },
        });
    }

    // The superblock.
    let mut sb = SuperBlock::default();
    sb.magic.set(erofs_format::EROFS_MAGIC);
    let mut compat = Compat::SB_CHKSUM | Compat::MTIME;
    let mut incompat = Incompat::empty();
    if xattrs.any_filter && options.xattr_name_filter {
        compat.insert(Compat::XATTR_FILTER);
    }
    let packed_prefixes = !xattrs.prefixes.is_empty() && prefixes_in_packed(options);
    if !xattrs.prefixes.is_empty() {
        incompat.insert(Incompat::XATTR_PREFIXES);
        sb.xattr_prefix_count = xattrs.prefixes.len() as u8;
        if packed_prefixes {
            // At the packed inode's start (`Packer::new`).
            sb.xattr_prefix_start.set(0);
        } else {
            compat.insert(Compat::PLAIN_XATTR_PFX);
            sb.xattr_prefix_start
                .set(((PREFIX_RECORDS_OFFSET + compr_cfgs(options).len() as u64) / 4) as u32);
        }
    }
    if let Some(id) = xattrs.prefixes.fingerprint_id() {
        compat.insert(Compat::ISHARE_XATTRS);
        sb.ishare_xattr_prefix_id = id;
    }
    if any_chunked {
        incompat.insert(Incompat::CHUNKED_FILE);
    }
    if any_ztail {
        incompat.insert(Incompat::ZTAILPACKING);
    }
    if any_partial {
        // DEDUPE (the bit FRAGMENTS also uses): Linux reads PARTIAL_REF without it, but a
        // reader that predates dedupe (erofs-utils 1.5) would decode such an extent as a
        // whole pcluster and fail; the bit makes it refuse the image instead.
        incompat.insert(Incompat::FRAGMENTS);
    }
    if options.bit48 {
        incompat.insert(Incompat::BIT48);
    }
    if let Some(packed) = z.and_then(|z| z.packed)
        && (any_fragment || packed_prefixes)
    {
        incompat.insert(Incompat::FRAGMENTS);
        sb.packed_nid.set(inodes[packed].nid);
    }
    if let Some(z) = &options.compression {
        // Pclusters are zero-padded in front. One-block pclusters need no config records,
        // and the field then holds LZ4's largest match distance; big ones need the records,
        // and the field is the bitmap of algorithms.
        incompat.insert(Incompat::LZ4_0PADDING);
        if z.big_pclusters(blksz as u32) {
            incompat.insert(Incompat::COMPR_CFGS);
            sb.available_compr_algs.set(z.algorithm_bits());
        } else {
            sb.available_compr_algs.set(u16::MAX);
        }
    }
    // Each extra device's place after the primary one, as mkfs.erofs writes it: mounted
    // without `device=`, the kernel reads a device's blocks there (flat addressing), which is
    // how an index with its tar appended (containerd's single-file layer) is read.
    let mut uniaddr = total_blocks;
    for slot in &mut devices {
        slot.uniaddr_lo.set(u32::try_from(uniaddr).map_err(|_| {
            BuildError::TooLarge("the devices' unified addresses exceed 2^32 blocks".into())
        })?);
        uniaddr += u64::from(slot.blocks_lo.get());
    }
    if !devices.is_empty() {
        incompat.insert(Incompat::DEVICE_TABLE);
        sb.extra_devices.set(devices.len() as u16);
        sb.devt_slotoff.set((devt_offset / 128) as u16);
    }
    sb.feature_compat.set(compat.bits());
    sb.feature_incompat.set(incompat.bits());
    sb.blkszbits = blkszbits;
    sb.root_nid.set(
        u16::try_from(inodes[0].nid)
            .map_err(|_| BuildError::TooLarge("root nid exceeds 16 bits".into()))?,
    );
    sb.inos.set(tree.inodes.len() as u64);
    sb.epoch.set(epoch);
    sb.build_time.set(build_time);
    sb.blocks_lo.set((total_blocks + region_blocks) as u32);
    sb.meta_blkaddr.set((meta_start - 1) as u32);
    sb.xattr_blkaddr.set(xattr_blkaddr as u32);
    sb.uuid = options.uuid.resolve();
    sb.volume_name[..options.label.len()].copy_from_slice(&options.label);

    Ok(Plan {
        blkszbits,
        inodes,
        xattrs,
        xattr_blkaddr: xattr_blkaddr as u32,
        data_start,
        meta_start,
        meta_order,
        total_blocks,
        superblock: sb,
        compr_cfgs: compr_cfgs(options),
        big_pclusters,
        devices,
        devt_offset,
        region_blocks,
        region_map,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_items_never_cross_a_block_and_fill_earlier_gaps() {
        let mut a = MetaAlloc::new(4096);
        assert_eq!(a.place(64), 0);
        assert_eq!(a.place(4000), 64, "fits after the root");
        assert_eq!(a.place(100), 4096, "no room left: a new block");
        assert_eq!(a.place(3900), 4096 + 128, "fits the current block");
        assert_eq!(a.place(96), 8192, "new block; the old ones are full");
        assert_eq!(a.place(10_000), 8192 + 96, "bigger than a block: may cross");
        let mut b = MetaAlloc::new(512);
        assert_eq!(b.place(300), 0);
        assert_eq!(b.place(400), 512);
        assert_eq!(b.place(150), 320, "best fit: back into block 0");
        assert_eq!(b.place(32), 928, "the current block still has room");
        assert_eq!(b.end, 960);
    }

    #[test]
    fn chunks_with_only_data_are_not_chunked() {
        assert!(plan_chunks(8192, std::slice::from_ref(&(0..8192)), 12).is_none());
        let (bits, map) = plan_chunks(3 * 4096 + 5, &[0..10, 2 * 4096..2 * 4096 + 1], 12).unwrap();
        assert_eq!(bits, 12);
        assert_eq!(map, vec![true, false, true, false]);
    }

    #[test]
    fn huge_sparse_files_get_bigger_chunks() {
        let (bits, map) = plan_chunks(1 << 40, std::slice::from_ref(&(0..1)), 12).unwrap();
        assert!(map.len() <= 65536);
        assert_eq!(bits, 24);
    }
}
