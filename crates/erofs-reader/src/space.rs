//! Where every byte of an image goes (`dump.erofs-rs --map`): a sorted list of ranges that
//! covers the image exactly once, each with what it holds and who owns it, and totals per
//! kind that add up to the image size.
//!
//! The map is built from what the reader reaches: the head of the image (superblock,
//! compression configs, long prefixes, device table), every inode reachable from the root
//! and the packed inode (core, inline xattrs, chunk or compression indexes, inline data),
//! the shared xattrs they name, and the blocks their data maps to. Bytes that nothing
//! claims are either padding (they share a block with claimed bytes) or unreferenced (a
//! whole block nothing points at); bytes past the filesystem's end are appended data (a
//! dm-verity tree, for instance). Bytes claimed more than once (blocks shared by chunk
//! deduplication, one pcluster decoded by several extents) are one range with every owner.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use erofs_format::xattr::LongPrefixRecordHeader;
use erofs_format::{Compat, Incompat, SUPERBLOCK_OFFSET};

use crate::data::{Extent, ExtentKind};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::inode::Inode;
use crate::zmap::ZStorage;

/// What a range of the image holds. When several claims overlap, the range takes the kind
/// that comes first here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
#[non_exhaustive]
pub enum SpaceKind {
    /// The bytes before the superblock (boot sector space), unused by EROFS.
    Reserved,
    /// The superblock with its extension slots.
    Superblock,
    /// `COMPR_CFGS` records after the superblock.
    CompressionConfigs,
    /// Long xattr name prefix records stored in the metadata area.
    LongPrefixes,
    /// The device table.
    DeviceTable,
    /// An inode core (32 or 64 bytes).
    Inode,
    /// An inode's xattr body: header, shared ids and inline xattrs.
    InlineXattrs,
    /// One shared xattr record.
    SharedXattr,
    /// A chunk-based file's chunk table.
    ChunkIndexes,
    /// A compressed file's map header and lcluster indexes (or extent records).
    CompressionIndexes,
    /// Directory entries (a directory block or an inline directory tail).
    Directory,
    /// The inline tail of a file or a symlink target.
    InlineData,
    /// Uncompressed file data in data blocks.
    Data,
    /// A compressed (or raw) pcluster, inline ones included.
    Pcluster,
    /// Bytes nothing claims in a block that holds claimed bytes.
    Padding,
    /// Whole blocks nothing claims.
    Unreferenced,
    /// Bytes past the filesystem's end (`SuperBlock::filesystem_bytes`).
    Appended,
}

impl SpaceKind {
    /// The kebab-case name used in text and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Superblock => "superblock",
            Self::CompressionConfigs => "compression-configs",
            Self::LongPrefixes => "long-prefixes",
            Self::DeviceTable => "device-table",
            Self::Inode => "inode",
            Self::InlineXattrs => "inline-xattrs",
            Self::SharedXattr => "shared-xattr",
            Self::ChunkIndexes => "chunk-indexes",
            Self::CompressionIndexes => "compression-indexes",
            Self::Directory => "directory",
            Self::InlineData => "inline-data",
            Self::Data => "data",
            Self::Pcluster => "pcluster",
            Self::Padding => "padding",
            Self::Unreferenced => "unreferenced",
            Self::Appended => "appended",
        }
    }
}

/// One range of the map.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SpaceRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// What the bytes hold.
    pub kind: SpaceKind,
    /// Who claims them, sorted (`/path (nid N)`, `shared xattr 3`, ...); empty for
    /// unreferenced bytes, and for padding the owners of the range before it.
    pub owners: Vec<String>,
}

impl SpaceRange {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range is empty (never true in a map).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Every byte of an image, accounted for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SpaceMap {
    /// The image size; the ranges cover `0..image_size` without gaps or overlaps.
    pub image_size: u64,
    /// The ranges, sorted by start.
    pub ranges: Vec<SpaceRange>,
    /// Bytes per kind name; they sum to `image_size`.
    pub totals: BTreeMap<&'static str, u64>,
}

/// One claim before overlaps are resolved.
struct Claim {
    start: u64,
    end: u64,
    kind: SpaceKind,
    owner: u32,
}

/// Claims and their owner names, interned so that a file's many ranges share one string.
#[derive(Default)]
struct Claims {
    claims: Vec<Claim>,
    owners: Vec<String>,
    owner_ids: BTreeMap<String, u32>,
    image_size: u64,
}

impl Claims {
    fn add(&mut self, start: u64, len: u64, kind: SpaceKind, owner: &str) {
        // The reader checked every range it returned; clipping keeps a map of an image it
        // did not fully check from claiming bytes it does not have.
        let end = start.saturating_add(len).min(self.image_size);
        if start >= end {
            return;
        }
        let owner = match self.owner_ids.get(owner) {
            Some(&id) => id,
            None => {
                let id = self.owners.len() as u32;
                self.owners.push(owner.to_string());
                self.owner_ids.insert(owner.to_string(), id);
                id
            }
        };
        self.claims.push(Claim {
            start,
            end,
            kind,
            owner,
        });
    }
}

/// Builds the space map of `image`. Fails on the first structure the reader cannot read:
/// a damaged image goes through `fsck` first.
pub fn space_map(image: &Image<'_>) -> Result<SpaceMap> {
    let mut c = Claims {
        image_size: image.len(),
        ..Claims::default()
    };
    head(image, &mut c)?;
    let mut seen = HashSet::new();
    let mut shared = HashSet::new();
    let packed = image.superblock().packed_nid.get();
    if packed != 0 {
        let inode = image.inode(packed)?;
        seen.insert(packed);
        inode_claims(image, &inode, "packed inode", &mut shared, &mut c)?;
    }
    for entry in image.walk()? {
        let entry = entry?;
        if !seen.insert(entry.nid) {
            continue;
        }
        let owner = format!("{} (nid {})", entry.path.escape_ascii(), entry.nid);
        inode_claims(image, &entry.inode, &owner, &mut shared, &mut c)?;
    }
    let fs_end = image.superblock().filesystem_bytes();
    if fs_end < image.len() {
        c.add(
            fs_end,
            image.len() - fs_end,
            SpaceKind::Appended,
            "past the filesystem",
        );
    }
    Ok(resolve(c, image.block_size()))
}

/// The structures at the head of the image, found through the superblock.
fn head(image: &Image<'_>, c: &mut Claims) -> Result<()> {
    let sb = image.superblock();
    let sb_start = SUPERBLOCK_OFFSET as u64;
    c.add(0, sb_start, SpaceKind::Reserved, "boot area");
    let sb_len = image.superblock_bytes().len() as u64;
    c.add(sb_start, sb_len, SpaceKind::Superblock, "superblock");
    // Errors here are reported by the compressed files that need the records.
    for (at, cfg) in image.compression_configs().unwrap_or_default() {
        let owner = format!("{} config", cfg.algorithm().name());
        let len = cfg.encode().len() as u64;
        c.add(at, len, SpaceKind::CompressionConfigs, &owner);
    }
    let packed = sb.packed_nid.get();
    if sb.incompat().contains(Incompat::XATTR_PREFIXES)
        && (sb.compat().contains(Compat::PLAIN_XATTR_PFX) || packed == 0)
    {
        let mut at = u64::from(sb.xattr_prefix_start.get()) * 4;
        for (i, p) in image.long_prefixes().iter().enumerate() {
            let header = LongPrefixRecordHeader {
                len: (1 + p.infix.len() as u16).into(),
            };
            let owner = format!("long prefix {i}");
            c.add(at, header.stride(), SpaceKind::LongPrefixes, &owner);
            at += header.stride();
        }
    }
    let devices = u64::from(sb.extra_devices.get());
    if devices > 0 {
        let slot = size_of::<erofs_format::DeviceSlot>() as u64;
        let start = u64::from(sb.devt_slotoff.get()) * slot;
        c.add(
            start,
            devices * slot,
            SpaceKind::DeviceTable,
            "device table",
        );
    }
    Ok(())
}

/// Everything one inode owns: its core, xattr body, the shared xattrs it names (each
/// claimed once, by id), its indexes, and its data.
fn inode_claims(
    image: &Image<'_>,
    inode: &Inode,
    owner: &str,
    shared: &mut HashSet<u32>,
    c: &mut Claims,
) -> Result<()> {
    c.add(inode.offset, inode.inode_size(), SpaceKind::Inode, owner);
    let xattr_start = inode.offset + inode.inode_size();
    c.add(
        xattr_start,
        inode.xattr_size(),
        SpaceKind::InlineXattrs,
        owner,
    );
    for id in image.xattr_header(inode)?.shared_ids {
        if !shared.insert(id) {
            continue;
        }
        let range = image.shared_xattr_range(id)?;
        c.add(
            range.start,
            range.end - range.start,
            SpaceKind::SharedXattr,
            &format!("shared xattr {id}"),
        );
    }
    if !inode.has_data() || inode.size == 0 {
        return Ok(());
    }
    if inode.is_compressed() {
        let index = image.compression_index_range(inode)?;
        c.add(
            index.start,
            index.end - index.start,
            SpaceKind::CompressionIndexes,
            owner,
        );
        for e in image.z_extents(inode)? {
            if !matches!(e.storage, ZStorage::Fragment { .. }) {
                c.add(e.physical, e.plen, SpaceKind::Pcluster, owner);
            }
        }
        return Ok(());
    }
    let kind_of = |e: &Extent| match (e.kind, inode.is_dir()) {
        (_, true) => SpaceKind::Directory,
        (ExtentKind::Inline, false) => SpaceKind::InlineData,
        _ => SpaceKind::Data,
    };
    if inode.layout == erofs_format::DataLayout::ChunkBased {
        let table = image.chunk_table_range(inode)?;
        c.add(
            table.start,
            table.end - table.start,
            SpaceKind::ChunkIndexes,
            owner,
        );
        // Chunk by chunk: chunks on an extra device (a tar indexed with `--tar=i`, a blob)
        // hold no bytes of this image. The count is bounded by the table, inside the image.
        let chunk = image.chunk_size(inode)?;
        let mut pos = 0;
        while pos < inode.size {
            match image.map(inode, pos) {
                Ok(e) => {
                    if let Some(at) = e.physical {
                        c.add(at, e.length, kind_of(&e), owner);
                    }
                }
                Err(Error::ExtraDevice { .. }) => {}
                Err(e) => return Err(e),
            }
            pos = pos.saturating_add(chunk);
        }
        return Ok(());
    }
    for e in image.data_extents(inode)? {
        if let Some(at) = e.physical {
            c.add(at, e.length, kind_of(&e), owner);
        }
    }
    Ok(())
}

/// Splits the claims into disjoint ranges, fills the gaps, merges neighbours that agree,
/// and totals the kinds.
fn resolve(c: Claims, block_size: u64) -> SpaceMap {
    let size = c.image_size;
    let mut bounds: BTreeSet<u64> = BTreeSet::from([0, size]);
    // Start and end events per boundary: which claims begin and which end there.
    let mut starts: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    let mut ends: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
    for (i, cl) in c.claims.iter().enumerate() {
        bounds.insert(cl.start);
        bounds.insert(cl.end);
        starts.entry(cl.start).or_default().push(i);
        ends.entry(cl.end).or_default().push(i);
    }
    let mut active: BTreeSet<usize> = BTreeSet::new();
    let mut ranges: Vec<SpaceRange> = Vec::new();
    let bounds: Vec<u64> = bounds.into_iter().collect();
    for w in bounds.windows(2) {
        let (start, end) = (w[0], w[1]);
        for i in ends.get(&start).into_iter().flatten() {
            active.remove(i);
        }
        active.extend(starts.get(&start).into_iter().flatten());
        if active.is_empty() {
            gap(&mut ranges, start, end, block_size);
            continue;
        }
        let kind = active
            .iter()
            .map(|&i| c.claims[i].kind)
            .min()
            .unwrap_or(SpaceKind::Unreferenced);
        let owners: BTreeSet<&str> = active
            .iter()
            .map(|&i| c.owners[c.claims[i].owner as usize].as_str())
            .collect();
        push(
            &mut ranges,
            SpaceRange {
                start,
                end,
                kind,
                owners: owners.into_iter().map(str::to_string).collect(),
            },
        );
    }
    let mut totals = BTreeMap::new();
    for r in &ranges {
        *totals.entry(r.kind.name()).or_insert(0) += r.len();
    }
    SpaceMap {
        image_size: size,
        ranges,
        totals,
    }
}

/// Fills `start..end`, which nothing claims: whole blocks are unreferenced, the part of a
/// block that holds claimed bytes is padding, named after the range before it.
fn gap(ranges: &mut Vec<SpaceRange>, start: u64, end: u64, block_size: u64) {
    let mut at = start;
    while at < end {
        let block_end = (at / block_size + 1) * block_size;
        let piece_end = block_end.min(end);
        let whole = at.is_multiple_of(block_size) && piece_end == block_end;
        let (kind, owners) = if whole {
            (SpaceKind::Unreferenced, Vec::new())
        } else {
            let before = ranges
                .last()
                .filter(|r| r.kind != SpaceKind::Unreferenced)
                .map(|r| r.owners.clone())
                .unwrap_or_default();
            (SpaceKind::Padding, before)
        };
        push(
            ranges,
            SpaceRange {
                start: at,
                end: piece_end,
                kind,
                owners,
            },
        );
        at = piece_end;
    }
}

/// Appends `r`, merged into the last range when they touch and agree.
fn push(ranges: &mut Vec<SpaceRange>, r: SpaceRange) {
    if let Some(last) = ranges.last_mut()
        && last.end == r.start
        && last.kind == r.kind
        && (last.owners == r.owners || r.kind == SpaceKind::Unreferenced)
    {
        last.end = r.end;
        return;
    }
    ranges.push(r);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(size: u64, list: &[(u64, u64, SpaceKind, &str)]) -> Claims {
        let mut c = Claims {
            image_size: size,
            ..Claims::default()
        };
        for &(start, len, kind, owner) in list {
            c.add(start, len, kind, owner);
        }
        c
    }

    #[test]
    fn ranges_cover_the_image_once_and_totals_sum_to_its_size() {
        let m = resolve(
            claims(
                4096 * 4,
                &[
                    (0, 1024, SpaceKind::Reserved, "boot"),
                    (1024, 128, SpaceKind::Superblock, "sb"),
                    (4096, 5000, SpaceKind::Data, "/a"),
                    // The same block claimed twice: one range, both owners.
                    (4096, 4096, SpaceKind::Data, "/b"),
                ],
            ),
            4096,
        );
        let mut at = 0;
        for r in &m.ranges {
            assert_eq!(r.start, at, "{m:?}");
            at = r.end;
        }
        assert_eq!(at, 4096 * 4);
        assert_eq!(m.totals.values().sum::<u64>(), 4096 * 4);
        let kinds: Vec<_> = m.ranges.iter().map(|r| (r.start, r.kind)).collect();
        assert_eq!(
            kinds,
            [
                (0, SpaceKind::Reserved),
                (1024, SpaceKind::Superblock),
                (1152, SpaceKind::Padding),
                (4096, SpaceKind::Data),
                (8192, SpaceKind::Data),
                (9096, SpaceKind::Padding),
                (12288, SpaceKind::Unreferenced),
            ]
        );
        assert_eq!(m.ranges[3].owners, ["/a", "/b"]);
        assert_eq!(m.ranges[5].owners, ["/a"], "padding names what it follows");
    }

    #[test]
    fn an_overlap_takes_the_first_kind_in_the_enum_order() {
        let m = resolve(
            claims(
                64,
                &[
                    (0, 64, SpaceKind::Data, "file"),
                    (0, 32, SpaceKind::Inode, "inode"),
                ],
            ),
            64,
        );
        assert_eq!(m.ranges[0].kind, SpaceKind::Inode);
        assert_eq!(m.ranges[0].owners, ["file", "inode"]);
        assert_eq!(m.ranges[1].kind, SpaceKind::Data);
    }
}
