//! The encoding layer: planned items to bytes, with no I/O and no planning of its own.
//!
//! Every function writes into a [`Sink`]. The layout sizes an item by encoding it into a
//! [`Count`], which keeps only the length; the writer encodes the same item into its buffer.
//! Sizes and bytes therefore come from one function, and cannot drift apart. Content the
//! layout has not read yet (an inline tail, a chunk table before its blocks are assigned) is
//! stood in for by zeroes of the same length, which a `Count` never looks at.
//!
//! What is encoded here: a metadata item (inode, xattr body with its fingerprint, then an
//! inline tail, a block map or chunk indexes), a compressed file's map after its inode
//! ([`ZMap`]: map header, lcluster indexes, inline tail pcluster), directory blocks
//! (`dir.rs`), and the head of the image (superblock, records after it, device table,
//! shared xattr area).

use erofs_format::{ChunkIndex, DataLayout, DeviceSlot, InodeCompact, InodeExtended, InodeFormat};
use zerocopy::IntoBytes;

use crate::BuildError;
use crate::compress::full_indexes;
use crate::layout::ZFile;

/// Where encoded bytes go.
pub(crate) trait Sink {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
    /// Appends `n` zero bytes.
    fn zeros(&mut self, n: usize);
    /// Bytes appended so far.
    fn len(&self) -> usize;
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn zeros(&mut self, n: usize) {
        self.resize(self.len() + n, 0);
    }

    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// A sink that only counts: the size an encoding would have.
#[derive(Debug, Default)]
pub(crate) struct Count(pub usize);

impl Sink for Count {
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }

    fn zeros(&mut self, n: usize) {
        self.0 += n;
    }

    fn len(&self) -> usize {
        self.0
    }
}

/// Zeroes standing in for content not known yet, when an item is only sized. Longer than
/// any inline tail can be (a tail is shorter than a block, 64 KiB at most).
pub(crate) static PLACEHOLDER: [u8; 1 << 16] = [0; 1 << 16];

/// Pads `s` with zeroes until the item that started at `start` is `align`-byte aligned
/// (items start on 32-byte slots, so this is the alignment in the image too).
fn align_item(s: &mut impl Sink, start: usize, align: usize) {
    let used = s.len() - start;
    s.zeros(used.next_multiple_of(align) - used);
}

/// An inode's fields, for either of its two on-disk forms.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InodeFields {
    /// The 64-byte form (else the 32-byte one).
    pub extended: bool,
    /// How its data is stored.
    pub layout: DataLayout,
    /// `i_xattr_icount` of its xattr body.
    pub xattr_icount: u16,
    /// `i_mode`.
    pub mode: u16,
    /// `i_size`.
    pub size: u64,
    /// `i_u`: start block, device number, chunk format or compressed block count.
    pub i_u: u32,
    /// `i_ino`.
    pub ino: u32,
    /// Owner and group.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Links.
    pub nlink: u32,
    /// Seconds and nanoseconds (extended form).
    pub mtime: i64,
    /// Nanoseconds (extended form).
    pub mtime_nsec: u32,
    /// The compact form's time, relative to the superblock's epoch.
    pub compact_mtime: u32,
}

impl InodeFields {
    /// An inode of the given form with every field zero: enough to size an item.
    pub(crate) fn sized(extended: bool) -> Self {
        Self {
            extended,
            layout: DataLayout::FlatPlain,
            xattr_icount: 0,
            mode: 0,
            size: 0,
            i_u: 0,
            ino: 0,
            uid: 0,
            gid: 0,
            nlink: 0,
            mtime: 0,
            mtime_nsec: 0,
            compact_mtime: 0,
        }
    }

    /// Encodes the inode. The caller chose the compact form only where its fields fit.
    pub(crate) fn encode(&self, s: &mut impl Sink) {
        let format = InodeFormat {
            extended: self.extended,
            layout: self.layout,
            bit4: false,
        }
        .encode();
        if self.extended {
            let mut x = InodeExtended::default();
            x.format.set(format);
            x.xattr_icount.set(self.xattr_icount);
            x.mode.set(self.mode);
            x.size.set(self.size);
            x.i_u.set(self.i_u);
            x.ino.set(self.ino);
            x.uid.set(self.uid);
            x.gid.set(self.gid);
            x.mtime.set(self.mtime as u64);
            x.mtime_nsec.set(self.mtime_nsec);
            x.nlink.set(self.nlink);
            s.put(x.as_bytes());
        } else {
            let mut x = InodeCompact::default();
            x.format.set(format);
            x.xattr_icount.set(self.xattr_icount);
            x.mode.set(self.mode);
            x.nlink.set(self.nlink as u16);
            x.size.set(self.size as u32);
            x.i_u.set(self.i_u);
            x.ino.set(self.ino);
            x.uid.set(self.uid as u16);
            x.gid.set(self.gid as u16);
            x.mtime.set(self.compact_mtime);
            s.put(x.as_bytes());
        }
    }
}

/// What follows an inode and its xattr body in its metadata item.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Payload<'a> {
    /// Nothing (or, for a compressed file, its [`ZMap`], encoded next).
    None,
    /// An inline tail: the end of a file, a directory's last block, a symlink's target.
    Inline(&'a [u8]),
    /// A block map (4-byte entries, 4-byte aligned): one start block per chunk, or
    /// `NULL_ADDR` for a hole.
    BlockMap(&'a [u32]),
    /// Chunk indexes (8-byte entries, 8-byte aligned) into extra device `device`.
    ChunkIndexes {
        /// The device id.
        device: u16,
        /// One start block per chunk.
        blocks: &'a [u32],
    },
}

/// One metadata item: an inode, its xattr body, then its payload.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Item<'a> {
    /// The inode.
    pub inode: InodeFields,
    /// The xattr body (empty when it has none).
    pub xattrs: &'a [u8],
    /// The fingerprint digest and its offset in `xattrs`, which holds zeroes there.
    pub digest: Option<(usize, &'a [u8; 32])>,
    /// What follows.
    pub payload: Payload<'a>,
}

impl Item<'_> {
    /// Encodes the item; it starts at `s.len()`, on a 32-byte slot.
    pub(crate) fn encode(&self, s: &mut impl Sink) {
        let start = s.len();
        self.inode.encode(s);
        match self.digest {
            Some((at, d)) => {
                s.put(&self.xattrs[..at]);
                s.put(d);
                s.put(&self.xattrs[at + d.len()..]);
            }
            None => s.put(self.xattrs),
        }
        match self.payload {
            Payload::None => {}
            Payload::Inline(tail) => s.put(tail),
            Payload::BlockMap(blocks) => {
                align_item(s, start, 4);
                for &b in blocks {
                    s.put(&b.to_le_bytes());
                }
            }
            Payload::ChunkIndexes { device, blocks } => {
                align_item(s, start, 8);
                for &b in blocks {
                    let mut e = ChunkIndex::default();
                    e.device_id.set(device);
                    e.startblk_lo.set(b);
                    s.put(e.as_bytes());
                }
            }
        }
    }

    /// The item's size in bytes: its encoding into a [`Count`].
    pub(crate) fn size(&self) -> u64 {
        let mut c = Count::default();
        self.encode(&mut c);
        c.0 as u64
    }
}

/// The map of a compressed file, after its inode and xattr body: the map header, the
/// indexes (compact, or full after 8 reserved bytes) and any inline tail pcluster.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ZMap<'a> {
    /// The file as the compressed stage stored it.
    pub file: &'a ZFile,
    /// The file's size in bytes.
    pub size: u64,
    /// log2 of the block size (= the lcluster size).
    pub blkszbits: u8,
    /// The image has big pclusters (the map header says so, NONHEADs carry CBLKCNT).
    pub big: bool,
    /// Compact indexes (else full ones).
    pub compact: bool,
}

impl ZMap<'_> {
    /// Encodes the map after the inode and xattr body of the item that started at `start`
    /// (32-byte aligned in the image, which compact packs rely on).
    pub(crate) fn encode(&self, s: &mut impl Sink, start: usize) -> Result<(), BuildError> {
        use erofs_format::compress::{
            FULL_INDEX_RESERVED, MAP_HEADER_SIZE, MapHeader, advise, encode_compact_indexes,
        };
        let (zf, size, blkszbits, big) = (self.file, self.size, self.blkszbits, self.big);
        align_item(s, start, 8);
        let header = s.len() - start;
        if let Some(f) = zf.fragment.filter(|f| f.whole) {
            // The whole file is in the packed inode: the header alone says where.
            let h = MapHeader::whole_fragment(f.offset).ok_or_else(|| {
                BuildError::TooLarge(format!("a fragment offset of {} bytes", f.offset))
            })?;
            s.put(h.as_bytes());
            return Ok(());
        }
        let compacted_2b = self.compact && crate::layout::compacted_2b(blkszbits);
        let mut flags = if big {
            advise::BIG_PCLUSTER_1 | advise::BIG_PCLUSTER_2
        } else {
            0
        };
        if compacted_2b {
            flags |= advise::COMPACTED_2B;
        }
        if zf.inline.is_some() {
            flags |= advise::INLINE_PCLUSTER;
        }
        if zf.interlaced {
            flags |= advise::INTERLACED_PCLUSTER;
        }
        if zf.fragment.is_some() {
            flags |= advise::FRAGMENT_PCLUSTER;
        }
        let mut h = MapHeader::new(flags, zf.algorithm, zf.algorithm, 0);
        if let Some(tail) = &zf.inline {
            // ztail_fits kept the tail below one block.
            h = h.with_idata_size(tail.len() as u16);
        }
        if let Some(f) = zf.fragment {
            h = h.with_fragment_offset(f.offset as u32);
        }
        s.put(h.as_bytes());
        let mut indexes = full_indexes(&zf.extents, size, blkszbits, big);
        if let Some(f) = zf.fragment
            && !self.compact
        {
            // Full indexes: the tail extent's HEAD carries the offset's high 32 bits.
            let tail_start = size - zf.extents.last().map_or(0, |e| u64::from(e.len));
            if let Some(head) = indexes.get_mut((tail_start >> blkszbits) as usize) {
                head.di_u.set((f.offset >> 32) as u32);
            }
        } else if zf.fragment.is_some_and(|f| f.offset > u64::from(u32::MAX)) {
            return Err(BuildError::Output(std::io::Error::other(format!(
                "a fragment at offset {} needs full indexes",
                zf.fragment.map_or(0, |f| f.offset)
            ))));
        }
        if self.compact {
            // The terminator (an extent "would start" at the end of the file) names no
            // pcluster; every other HEAD's address must come out of its pack.
            let last_start = size - zf.extents.last().map_or(0, |e| u64::from(e.len));
            let lcn_total = indexes.len() as u64;
            let addressless = if lcn_total > 0 && last_start >> blkszbits < lcn_total - 1 {
                lcn_total - 1
            } else {
                lcn_total
            };
            let packs = encode_compact_indexes(
                &indexes,
                header as u64 + MAP_HEADER_SIZE,
                blkszbits,
                big,
                compacted_2b,
                addressless,
            )
            .map_err(|e| {
                BuildError::Output(std::io::Error::other(format!(
                    "compact indexes of a {size}-byte file: {e}"
                )))
            })?;
            s.put(&packs);
        } else {
            s.zeros(FULL_INDEX_RESERVED as usize);
            for idx in &indexes {
                s.put(idx.as_bytes());
            }
        }
        if let Some(tail) = &zf.inline {
            s.put(tail);
        }
        Ok(())
    }
}

/// The head of the image: block 0 and up to the end of the shared xattr area.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Head<'a> {
    /// log2 of the block size.
    pub blkszbits: u8,
    /// Blocks the head spans (the first data block).
    pub blocks: u64,
    /// The superblock (its checksum is computed here).
    pub superblock: &'a erofs_format::SuperBlock,
    /// The records after the superblock, from byte `records_offset`: compression
    /// configurations, then long xattr name prefixes.
    pub records: [&'a [u8]; 2],
    /// Where the records start.
    pub records_offset: usize,
    /// The device table, at byte `devt_offset`.
    pub devices: &'a [DeviceSlot],
    /// Where the device table starts.
    pub devt_offset: usize,
    /// The shared xattr area, at block `xattr_blkaddr`.
    pub shared_xattrs: &'a [u8],
    /// Its first block.
    pub xattr_blkaddr: u64,
}

impl Head<'_> {
    /// The head's bytes, the superblock checksum sealed.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let blksz = 1usize << self.blkszbits;
        let mut head = vec![0u8; self.blocks as usize * blksz];
        let mut place = |at: usize, bytes: &[u8]| head[at..at + bytes.len()].copy_from_slice(bytes);
        place(erofs_format::SUPERBLOCK_OFFSET, self.superblock.as_bytes());
        let mut at = self.records_offset;
        for r in self.records {
            place(at, r);
            at += r.len();
        }
        for (k, slot) in self.devices.iter().enumerate() {
            place(
                self.devt_offset + k * size_of::<DeviceSlot>(),
                slot.as_bytes(),
            );
        }
        if !self.shared_xattrs.is_empty() {
            place(self.xattr_blkaddr as usize * blksz, self.shared_xattrs);
        }
        erofs_format::seal_checksum(&mut head, self.blkszbits);
        head
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Extent;
    use erofs_format::{ChunkEntry, NULL_ADDR, SuperBlock, XattrIbodyHeader};
    use zerocopy::FromBytes;

    fn fields(extended: bool) -> InodeFields {
        InodeFields {
            extended,
            layout: DataLayout::FlatInline,
            xattr_icount: 12,
            mode: 0o100644,
            size: 5000,
            i_u: 77,
            ino: 3,
            uid: 1000,
            gid: 100,
            nlink: 2,
            mtime: 1_700_000_000,
            mtime_nsec: 5,
            compact_mtime: 9,
        }
    }

    #[test]
    fn a_compact_inode_decodes_to_its_fields() {
        let mut b = Vec::new();
        fields(false).encode(&mut b);
        assert_eq!(b.len(), erofs_format::INODE_COMPACT_SIZE);
        let f = InodeFormat::of_slot(&b).unwrap().unwrap();
        assert!(!f.extended);
        assert_eq!(f.layout, DataLayout::FlatInline);
        let x = InodeCompact::read_from_bytes(&b).unwrap();
        assert_eq!(x.xattr_icount.get(), 12);
        assert_eq!(x.mode.get(), 0o100644);
        assert_eq!(x.size.get(), 5000);
        assert_eq!(x.i_u.get(), 77);
        assert_eq!(x.ino.get(), 3);
        assert_eq!((x.uid.get(), x.gid.get(), x.nlink.get()), (1000, 100, 2));
        assert_eq!(
            x.mtime.get(),
            9,
            "the compact form stores the time after the epoch"
        );
    }

    #[test]
    fn an_extended_inode_decodes_to_its_fields() {
        let mut b = Vec::new();
        fields(true).encode(&mut b);
        assert_eq!(b.len(), erofs_format::INODE_EXTENDED_SIZE);
        assert!(InodeFormat::of_slot(&b).unwrap().unwrap().extended);
        let x = InodeExtended::read_from_bytes(&b).unwrap();
        assert_eq!(x.size.get(), 5000);
        assert_eq!(x.mtime.get(), 1_700_000_000);
        assert_eq!(x.mtime_nsec.get(), 5);
        assert_eq!((x.uid.get(), x.gid.get(), x.nlink.get()), (1000, 100, 2));
    }

    /// An xattr body of one shared id and 32 zero bytes where a digest goes.
    fn body() -> Vec<u8> {
        let h = XattrIbodyHeader {
            shared_count: 1,
            ..Default::default()
        };
        let mut b = h.as_bytes().to_vec();
        b.extend_from_slice(&7u32.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&[0; 32]);
        b
    }

    #[test]
    fn the_digest_lands_at_its_offset_in_the_xattr_body_and_the_tail_follows() {
        let xattrs = body();
        let digest = [0xAB; 32];
        let item = Item {
            inode: fields(false),
            xattrs: &xattrs,
            digest: Some((20, &digest)),
            payload: Payload::Inline(b"tail"),
        };
        let mut b = Vec::new();
        item.encode(&mut b);
        assert_eq!(b.len() as u64, item.size());
        let x = &b[32..32 + xattrs.len()];
        let (h, ids) = XattrIbodyHeader::decode(x).unwrap();
        assert_eq!((h.shared_count, ids), (1, vec![7]));
        assert_eq!(&x[20..52], &digest);
        assert_eq!(&b[32 + xattrs.len()..], b"tail");
    }

    #[test]
    fn a_block_map_is_4_byte_aligned_and_chunk_indexes_8_byte_aligned() {
        let xattrs = [0u8; 12];
        let blocks = [5, NULL_ADDR, 9];
        for (payload, width) in [
            (Payload::BlockMap(&blocks), 4),
            (
                Payload::ChunkIndexes {
                    device: 2,
                    blocks: &blocks,
                },
                8,
            ),
        ] {
            let item = Item {
                inode: fields(false),
                xattrs: &xattrs,
                digest: None,
                payload,
            };
            let mut b = vec![0xFF; 32];
            item.encode(&mut b);
            // The item starts at 32; inode and xattr body take 44 bytes of it.
            let map = &b[32 + 44_usize.next_multiple_of(width)..];
            assert_eq!(map.len(), 3 * width);
            assert_eq!(item.size() as usize, b.len() - 32);
            let got: Vec<ChunkEntry> = map
                .chunks(width)
                .map(|e| ChunkEntry::decode(e).unwrap())
                .collect();
            assert_eq!(
                got.iter().map(|e| e.startblk_lo).collect::<Vec<_>>(),
                blocks
            );
            let device = if width == 8 { 2 } else { 0 };
            assert!(got.iter().all(|e| e.device_id == device));
        }
    }

    #[test]
    fn the_head_holds_the_superblock_records_devices_and_shared_xattrs_and_is_sealed() {
        let mut sb = SuperBlock::default();
        sb.magic.set(erofs_format::EROFS_MAGIC);
        sb.blkszbits = 12;
        let mut slot = <DeviceSlot as zerocopy::FromZeros>::new_zeroed();
        slot.blocks_lo.set(42);
        let head = Head {
            blkszbits: 12,
            blocks: 2,
            superblock: &sb,
            records: [b"cfg!", b"prefix"],
            records_offset: 1152,
            devices: &[slot],
            devt_offset: 1280,
            shared_xattrs: b"shared",
            xattr_blkaddr: 1,
        }
        .encode();
        assert_eq!(head.len(), 8192);
        let got = SuperBlock::read_from_bytes(&head[1024..1152]).unwrap();
        assert_eq!(got.magic.get(), erofs_format::EROFS_MAGIC);
        assert_eq!(
            got.checksum.get(),
            erofs_format::checksum_of_head(&head, 12),
            "sealed"
        );
        assert_eq!(&head[1152..1162], b"cfg!prefix");
        let d = DeviceSlot::read_from_bytes(&head[1280..1408]).unwrap();
        assert_eq!(d.blocks_lo.get(), 42);
        assert_eq!(&head[4096..4102], b"shared");
        assert!(head[4102..].iter().all(|&b| b == 0));
    }

    /// Extents a compressed file could have: back to back from `base`, each but the last
    /// reaching the next lcluster, a pcluster longer than a block only where a CBLKCNT
    /// can say so (big pclusters and a NONHEAD after the HEAD).
    fn extents(bits: u8, big: bool, base: u32, specs: &[(u32, u32, u32, bool)]) -> Vec<Extent> {
        let lcsize = 1u32 << bits;
        let (mut clusterofs, mut blk) = (0u32, base);
        let mut out = Vec::new();
        for (k, &(ofs, lclusters, blocks, raw)) in specs.iter().enumerate() {
            let len = if k + 1 == specs.len() {
                1 + ofs % (lclusters * lcsize + lcsize)
            } else {
                (lcsize - clusterofs) + lclusters * lcsize + ofs % lcsize
            };
            let d1 = (clusterofs + len) >> bits;
            let blocks = if big && d1 > 1 { 1 + blocks % d1 } else { 1 };
            out.push(Extent {
                len,
                blk,
                blocks,
                raw,
                partial: false,
            });
            blk += blocks;
            clusterofs = (clusterofs + len) & (lcsize - 1);
        }
        out
    }

    proptest::proptest! {
        /// The map's size, the only one the layout also computes without the encoder
        /// (`zmeta_size`, before the extents exist), equals the encoding's, whatever the
        /// extents; and the bytes written are as long as the count.
        #[test]
        fn the_map_is_as_long_as_zmeta_size_says_for_any_extents(
            bits in 9u8..=16,
            big: bool,
            compact: bool,
            extended: bool,
            xattr_words in 0usize..24,
            base in 0u32..1_000_000,
            specs in proptest::collection::vec(
                (proptest::prelude::any::<u32>(), 0u32..6, proptest::prelude::any::<u32>(),
                 proptest::prelude::any::<bool>()),
                1..40,
            ),
            inline in proptest::option::of(proptest::prelude::any::<u16>()),
        ) {
            // Compact indexes exist for lclusters of at most 4 KiB (`compact_indexes`).
            let compact = compact && bits <= 12;
            let file = ZFile {
                extents: extents(bits, big, base, &specs),
                inline: inline.map(|n| vec![0x5A; 1 + usize::from(n) % ((1 << bits) - 1)]),
                algorithm: erofs_format::compress::Algorithm::Lz4,
                fragment: None,
                interlaced: false,
            };
            let size = file.extents.iter().map(|e| u64::from(e.len)).sum();
            let xattrs = vec![0u8; 4 * xattr_words];
            let item = Item {
                inode: InodeFields::sized(extended),
                xattrs: &xattrs,
                digest: None,
                payload: Payload::None,
            };
            let map = ZMap { file: &file, size, blkszbits: bits, big, compact };
            let mut count = Count::default();
            item.encode(&mut count);
            map.encode(&mut count, 0).unwrap();
            let head = item.size();
            let tail = file.inline.as_ref().map_or(0, Vec::len);
            proptest::prop_assert_eq!(
                count.0 as u64,
                crate::layout::zmeta_size(head, size, bits, compact) + tail as u64
            );
            // The writer's items start on any 32-byte slot of its buffer.
            let mut bytes = vec![0xFF; 32];
            item.encode(&mut bytes);
            map.encode(&mut bytes, 32).unwrap();
            proptest::prop_assert_eq!(bytes.len() - 32, count.0);
            let header = 32 + (head as usize).next_multiple_of(8);
            let h = erofs_format::compress::MapHeader::read_from_bytes(
                &bytes[header..header + 8],
            )
            .unwrap();
            proptest::prop_assert_eq!(usize::from(h.idata_size()), tail);
            proptest::prop_assert_eq!(
                h.h_advise.get() & erofs_format::compress::advise::INLINE_PCLUSTER != 0,
                tail > 0
            );
            proptest::prop_assert_eq!(&bytes[bytes.len() - tail..], &vec![0x5A; tail][..]);
        }
    }

    /// A file of two pclusters and a 3000-byte tail in the packed inode at `offset`.
    fn tail_fragment_file(offset: u64) -> ZFile {
        ZFile {
            extents: vec![
                Extent {
                    len: 9000,
                    blk: 40,
                    blocks: 1,
                    raw: false,
                    partial: false,
                },
                Extent {
                    len: 4000,
                    blk: 41,
                    blocks: 1,
                    raw: true,
                    partial: false,
                },
                Extent {
                    len: 3000,
                    blk: 42,
                    blocks: 1,
                    raw: false,
                    partial: false,
                },
            ],
            inline: None,
            algorithm: erofs_format::compress::Algorithm::Lz4,
            fragment: Some(crate::layout::Fragment {
                offset,
                whole: false,
            }),
            interlaced: true,
        }
    }

    #[test]
    fn a_tail_fragment_sets_its_advise_and_offset_and_full_indexes_carry_the_high_bits() {
        use erofs_format::compress::{LclusterIndex, MapHeader, advise};
        let offset = (5u64 << 32) | 1234;
        let file = tail_fragment_file(offset);
        assert!(
            !file.compact_ok(),
            "an offset of 4 GiB or more needs full indexes"
        );
        assert_eq!(file.stored_blocks(), 2, "the fragment takes no block");
        let map = ZMap {
            file: &file,
            size: 16000,
            blkszbits: 12,
            big: false,
            compact: false,
        };
        let mut b = Vec::new();
        map.encode(&mut b, 0).unwrap();
        let h = MapHeader::read_from_bytes(&b[..8]).unwrap();
        let want = advise::FRAGMENT_PCLUSTER | advise::INTERLACED_PCLUSTER;
        assert_eq!(h.advise() & want, want);
        assert_eq!(h.advise() & advise::INLINE_PCLUSTER, 0);
        assert_eq!(h.fragment_offset(), 1234, "the low 32 bits");
        assert!(!h.is_whole_fragment());
        // 16000 bytes: 4 lclusters; the tail starts at 13000, in lcluster 3.
        let idx: Vec<LclusterIndex> = b[16..]
            .chunks(8)
            .map(|c| LclusterIndex::read_from_bytes(c).unwrap())
            .collect();
        assert_eq!(idx.len(), 4);
        assert_eq!(idx[3].di_u.get(), 5, "the tail HEAD holds the high 32 bits");
        assert_eq!(idx[0].di_u.get(), 40, "other HEADs keep their blocks");
        // Below 4 GiB compact indexes are fine and the offset fits the header.
        let low = tail_fragment_file(77);
        assert!(low.compact_ok());
        let mut b = Vec::new();
        ZMap {
            file: &low,
            size: 16000,
            blkszbits: 12,
            big: false,
            compact: true,
        }
        .encode(&mut b, 0)
        .unwrap();
        assert_eq!(
            MapHeader::read_from_bytes(&b[..8])
                .unwrap()
                .fragment_offset(),
            77
        );
        // ...and a compact map refuses an offset it cannot hold.
        let mut b = Vec::new();
        assert!(
            ZMap {
                file: &file,
                size: 16000,
                blkszbits: 12,
                big: false,
                compact: true,
            }
            .encode(&mut b, 0)
            .is_err()
        );
    }

    #[test]
    fn a_whole_file_fragment_is_the_map_header_alone() {
        use erofs_format::compress::MapHeader;
        let offset = (3u64 << 40) + 99;
        let file = ZFile {
            extents: Vec::new(),
            inline: None,
            algorithm: erofs_format::compress::Algorithm::Lzma,
            fragment: Some(crate::layout::Fragment {
                offset,
                whole: true,
            }),
            interlaced: true,
        };
        assert!(!file.compact_ok());
        assert_eq!(file.stored_blocks(), 0);
        // After a 44-byte inode and xattr body: the header at the next 8-byte boundary.
        let mut b = vec![0xEE; 44];
        ZMap {
            file: &file,
            size: 5000,
            blkszbits: 12,
            big: true,
            compact: false,
        }
        .encode(&mut b, 0)
        .unwrap();
        assert_eq!(b.len(), 48 + 8, "header alone");
        let h = MapHeader::read_from_bytes(&b[48..]).unwrap();
        assert_eq!(h.whole_fragment_offset(), Some(offset));
        assert_eq!(
            u64::from_le_bytes(b[48..].try_into().unwrap()),
            offset | 1 << 63
        );
    }

    #[test]
    fn counting_an_encoding_gives_its_length() {
        let mut v = Vec::new();
        let mut c = Count::default();
        v.put(b"abc");
        v.zeros(5);
        c.put(b"abc");
        c.zeros(5);
        assert_eq!((v.len(), c.len()), (8, 8));
    }
}
