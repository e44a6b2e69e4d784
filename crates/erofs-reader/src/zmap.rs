//! Compressed files (§12): mapping a logical offset to its extent and pcluster, as Linux
//! 6.12's `zmap.c` does, and reading decoded bytes through a bounded cache of pclusters.
//!
//! Every index is decoded by `erofs_format::compress`; this module only walks them. Walks
//! are bounded: a lookback strictly decreases the lcluster number and a lookahead strictly
//! increases it, and the index area is checked to lie inside the image before any walk.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use erofs_format::compress::{
    self, Algorithm, CompactLayout, ComprCfg, EXTENT_PLEN_FMT_BIT, EXTENT_PLEN_MASK,
    EXTENT_PLEN_PARTIAL, ExtentRecord, Lcluster, LclusterIndex, LclusterType, MAX_PCLUSTER_SIZE,
    MapHeader, advise,
};
use erofs_format::{DataLayout, Incompat, SUPERBLOCK_OFFSET};
use zerocopy::FromBytes;

use crate::decompress::{self, Request};
use crate::error::{Corruption, Error, Result};
use crate::image::Image;
use crate::inode::Inode;

/// How a compressed extent's bytes are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase", tag = "type"))]
pub enum ZStorage {
    /// A compressed pcluster.
    Compressed {
        /// The algorithm.
        #[cfg_attr(feature = "serde", serde(serialize_with = "ser_alg"))]
        algorithm: Algorithm,
    },
    /// A raw (PLAIN) pcluster; `interlaced` rotates it by the extent's in-block offset.
    Raw {
        /// `INTERLACED_PCLUSTER`.
        interlaced: bool,
    },
    /// Uncompressed bytes in the packed inode, starting at `offset`.
    Fragment {
        /// Byte offset in the packed inode of the extent's first byte.
        offset: u64,
    },
}

#[cfg(feature = "serde")]
fn ser_alg<S: serde::Serializer>(a: &Algorithm, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(a.name())
}

/// One extent of a compressed file: a decoded range and the pcluster it decodes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ZExtent {
    /// First logical byte.
    pub logical: u64,
    /// Decoded length.
    pub length: u64,
    /// Storage kind.
    pub storage: ZStorage,
    /// Image byte offset of the pcluster (0 for fragments).
    pub physical: u64,
    /// Pcluster size in bytes (0 for fragments).
    pub plen: u64,
    /// Type of the HEAD lcluster (`PLAIN`, `HEAD1`, `HEAD2`).
    #[cfg_attr(feature = "serde", serde(serialize_with = "ser_type"))]
    pub lcluster_type: LclusterType,
    /// The pcluster is inline after the indexes (ztailpacking).
    pub inline: bool,
    /// Only a prefix of the pcluster's output belongs here (dedupe's `PARTIAL_REF`).
    pub partial: bool,
}

#[cfg(feature = "serde")]
fn ser_type<S: serde::Serializer>(t: &LclusterType, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(t.name())
}

impl ZExtent {
    /// One past the last logical byte.
    pub fn end(&self) -> u64 {
        self.logical + self.length
    }

    /// The algorithm name, `plain` for raw extents, `fragment` for fragments.
    pub fn kind_name(&self) -> &'static str {
        match self.storage {
            ZStorage::Compressed { algorithm } => algorithm.name(),
            ZStorage::Raw { .. } => "plain",
            ZStorage::Fragment { .. } => "fragment",
        }
    }
}

/// The decoded map header of one inode, with the tail facts found by the first lookup.
#[derive(Clone, Debug)]
pub(crate) struct ZInfo {
    nid: u64,
    size: u64,
    advise: u16,
    algorithms: [u8; 2],
    lclusterbits: u8,
    header: u64,
    total: u64,
    compact: Option<CompactLayout>,
    whole_fragment: Option<u64>,
    fragment_offset: u64,
    tail_head_lcn: Option<u64>,
    idata: Option<(u64, u64)>,
    extents: Option<(u64, u64)>,
    /// One past the last byte of the map header and its indexes (or extent records).
    index_end: u64,
}

/// What the index says about the lcluster holding one offset, after the lookback.
struct Head {
    lcn: u64,
    kind: LclusterType,
    logical: u64,
    blkaddr: u32,
    partial: bool,
    /// `nextpackoff` of the lcluster first loaded (the inline tail follows it).
    next_pack: u64,
}

impl ZInfo {
    fn corrupt(&self, at: Option<u64>, lcn: u64, reason: impl Into<String>) -> Error {
        Error::corrupt(
            Some(self.nid),
            at,
            Corruption::CompressedIndex {
                lcn,
                reason: reason.into(),
            },
        )
    }

    fn big(&self, kind: LclusterType) -> bool {
        match kind {
            LclusterType::Head1 => self.advise & advise::BIG_PCLUSTER_1 != 0,
            LclusterType::Head2 => self.advise & advise::BIG_PCLUSTER_2 != 0,
            _ => false,
        }
    }
}

/// Decoded pclusters by (physical, plen, decoded length, rotation, algorithm, partial),
/// bounded in bytes and evicted oldest first.
///
/// Only extents that a read covers in part go through it: a read that covers a whole
/// extent decodes it straight into the caller's buffer, so the cache holds just the
/// extents that straddle the edges of reads, which the next sequential read then finds.
#[derive(Debug, Default)]
pub(crate) struct PclusterCache {
    inner: Mutex<CacheInner>,
    /// Pclusters decoded by reads and by [`Image::z_for_each_decoded`], for the tests that
    /// check each one is decoded once.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) decodes: std::sync::atomic::AtomicU64,
}

#[derive(Debug, Default)]
struct CacheInner {
    map: HashMap<CacheKey, Arc<Vec<u8>>>,
    order: VecDeque<CacheKey>,
    bytes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CacheKey {
    physical: u64,
    plen: u64,
    length: u64,
    rotate: u64,
    storage: ZStorage,
    partial: bool,
}

/// Bytes of decoded pclusters kept per image: enough for two of the largest extents
/// ([`compress::MAX_EXTENT_DECODED`]), so that sequential reads through small buffers decode
/// each pcluster once, even from two threads.
pub const PCLUSTER_CACHE_BYTES: usize = 32 << 20;
const _: () = assert!(PCLUSTER_CACHE_BYTES as u64 >= 2 * compress::MAX_EXTENT_DECODED);

impl PclusterCache {
    fn get(&self, k: &CacheKey) -> Option<Arc<Vec<u8>>> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.map.get(k).cloned()
    }

    fn put(&self, k: CacheKey, v: Arc<Vec<u8>>) {
        if v.len() as u64 > compress::MAX_EXTENT_DECODED {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.map.contains_key(&k) {
            return;
        }
        g.bytes += v.len();
        g.map.insert(k, v);
        g.order.push_back(k);
        while g.bytes > PCLUSTER_CACHE_BYTES {
            let Some(old) = g.order.pop_front() else {
                break;
            };
            if let Some(b) = g.map.remove(&old) {
                g.bytes -= b.len();
            }
        }
    }

    fn count_decode(&self) {
        #[cfg(any(test, feature = "fuzzing"))]
        self.decodes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

thread_local! {
    /// Each thread's buffer for the pclusters being decoded (at most 1 MiB), so that reading
    /// a pcluster from a file allocates and zeroes nothing once the buffer has grown.
    static PCLUSTER_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Each thread's buffer for the extent [`Image::z_for_each_decoded`] decodes (at most
    /// [`compress::MAX_EXTENT_DECODED`]).
    static OUT_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Most pcluster bytes read at once ahead of a sequential decode.
const READ_AHEAD: u64 = 256 << 10;

/// Extents mapped ahead of the one decoded by [`Image::z_for_each_decoded`].
const MAP_AHEAD: usize = 64;

/// Pcluster bytes read ahead of a sequential decode: mkfs lays a file's pclusters out one
/// after another, so one read serves the next ones too, instead of one system call each.
/// It lives for one operation on one image (its bytes are never trusted across images).
struct ReadAhead {
    start: u64,
    len: usize,
    buf: Vec<u8>,
}

impl ReadAhead {
    /// An empty window over this thread's buffer.
    fn from_thread() -> Self {
        let buf = PCLUSTER_BUF.with(|c| c.try_borrow_mut().map(|mut b| std::mem::take(&mut *b)));
        ReadAhead {
            start: 0,
            len: 0,
            buf: buf.unwrap_or_default(),
        }
    }

    /// Returns the buffer to the thread for the next operation.
    fn give_back(self) {
        PCLUSTER_BUF.with(|c| {
            if let Ok(mut b) = c.try_borrow_mut()
                && b.capacity() < self.buf.capacity()
            {
                *b = self.buf;
            }
        });
    }
}

impl Image<'_> {
    /// The configuration record of `algorithm` (`COMPR_CFGS`), if the image has one.
    pub fn compression_config(&self, algorithm: Algorithm) -> Result<Option<ComprCfg>> {
        Ok(self
            .compression_configs()?
            .into_iter()
            .map(|(_, c)| c)
            .find(|c| c.algorithm() == algorithm))
    }

    /// Every `COMPR_CFGS` record after the superblock, with its byte offset in the image;
    /// empty without the feature. Decoded once per image.
    pub fn compression_configs(&self) -> Result<Vec<(u64, ComprCfg)>> {
        if let Some(c) = self.zcfgs().get() {
            return Ok(c.clone());
        }
        let c = self.read_compression_configs()?;
        Ok(self.zcfgs().get_or_init(|| c).clone())
    }

    fn read_compression_configs(&self) -> Result<Vec<(u64, ComprCfg)>> {
        let sb = self.superblock();
        if !sb.incompat().contains(Incompat::COMPR_CFGS) {
            return Ok(Vec::new());
        }
        let start = (SUPERBLOCK_OFFSET + sb.on_disk_size()) as u64;
        let end = self.block_size().max(4096).min(self.len());
        let bytes = self.read_vec(start, end.saturating_sub(start))?;
        let recs =
            compress::decode_compr_cfgs(sb.available_compr_algs.get(), &bytes).map_err(|e| {
                Error::corrupt(None, Some(start), Corruption::Superblock(e.to_string()))
            })?;
        Ok(recs
            .into_iter()
            .map(|(pos, c)| (start + pos as u64, c))
            .collect())
    }

    /// Algorithms the superblock allows (`available_compr_algs`, or LZ4 alone without
    /// `COMPR_CFGS`).
    fn available_algorithms(&self) -> u16 {
        let sb = self.superblock();
        if sb.incompat().contains(Incompat::COMPR_CFGS) {
            sb.available_compr_algs.get()
        } else {
            Algorithm::Lz4.bit()
        }
    }

    pub(crate) fn zinfo(&self, inode: &Inode) -> Result<ZInfo> {
        let nid = inode.nid;
        let header = compress::map_header_offset(inode.meta_end())
            .ok_or_else(|| Error::corrupt(Some(nid), None, Corruption::Overflow))?;
        let mut raw = [0u8; 8];
        self.read_meta(header, &mut raw)
            .map_err(|e| e.with_nid(nid))?;
        let h = MapHeader::read_from_bytes(&raw[..]).unwrap_or_default();
        let bits = self.block_bits();
        let mut zi = ZInfo {
            nid,
            size: inode.size,
            advise: 0,
            algorithms: [0, 0],
            lclusterbits: bits,
            header,
            total: 0,
            compact: None,
            whole_fragment: None,
            fragment_offset: 0,
            tail_head_lcn: None,
            idata: None,
            extents: None,
            index_end: header.saturating_add(compress::MAP_HEADER_SIZE),
        };
        let bad = |reason: String| {
            Error::corrupt(
                Some(nid),
                Some(header),
                Corruption::CompressedIndex { lcn: 0, reason },
            )
        };
        if let Some(off) = h.whole_fragment_offset() {
            if !self.superblock().incompat().contains(Incompat::FRAGMENTS) {
                return Err(bad(
                    "whole-file fragment without the fragments feature".into()
                ));
            }
            zi.advise = advise::FRAGMENT_PCLUSTER;
            zi.whole_fragment = Some(off);
            zi.fragment_offset = off;
            zi.tail_head_lcn = Some(0);
            return Ok(zi);
        }
        zi.advise = h.advise();
        zi.algorithms = [h.algorithm_raw(false), h.algorithm_raw(true)];
        let is48 = self.superblock().incompat().contains(Incompat::BIT48);
        if is48 && inode.layout == DataLayout::CompressedFull && zi.advise & advise::EXTENTS != 0 {
            zi.lclusterbits = bits + h.lclusterbits_delta();
            zi.extents = Some((h.extent_count(), h.extent_record_size()));
            zi.index_end = h
                .extent_count()
                .saturating_mul(h.extent_record_size())
                .saturating_add(zi.index_end);
            return Ok(zi);
        }
        for a in zi.algorithms {
            if Algorithm::from_raw(a).is_none() {
                return Err(Error::Compressed {
                    nid,
                    algorithm: format!("unknown({a})"),
                });
            }
        }
        zi.lclusterbits = bits + h.lclusterbits_delta();
        if zi.lclusterbits > 20 {
            return Err(bad(format!("lclusterbits {} too large", zi.lclusterbits)));
        }
        let big = zi.advise & (advise::BIG_PCLUSTER_1 | advise::BIG_PCLUSTER_2);
        if big != 0
            && !self
                .superblock()
                .incompat()
                .contains(Incompat::BIG_PCLUSTER)
        {
            return Err(bad(
                "big pcluster advise without the superblock feature".into()
            ));
        }
        let lsize = 1u64 << zi.lclusterbits;
        zi.total = inode.size.div_ceil(lsize);
        let ebase = header + compress::MAP_HEADER_SIZE;
        let index_bytes = match inode.layout {
            DataLayout::CompressedCompact => {
                if big != 0 && big != advise::BIG_PCLUSTER_1 | advise::BIG_PCLUSTER_2 {
                    return Err(bad(
                        "compact indexes with only one of BIG_PCLUSTER_1/2".into()
                    ));
                }
                // Linux counts compact items per block, not per lcluster.
                let total = inode.size.div_ceil(self.block_size());
                if zi.lclusterbits > 14 {
                    return Err(bad(format!(
                        "lclusterbits {} too large for compact indexes",
                        zi.lclusterbits
                    )));
                }
                let l = CompactLayout::new(ebase, total, zi.advise & advise::COMPACTED_2B != 0);
                zi.compact = Some(l);
                zi.total = total.min(zi.total);
                l.size()
            }
            _ => zi
                .total
                .checked_mul(compress::FULL_INDEX_SIZE)
                .and_then(|n| n.checked_add(compress::FULL_INDEX_RESERVED))
                .ok_or_else(|| bad("index count overflows".into()))?,
        };
        self.check_range(ebase, index_bytes)
            .map_err(|e| e.with_nid(nid))?;
        zi.index_end = ebase + index_bytes;
        if inode.size == 0 {
            // Nothing to map, so no tail to find.
            return Ok(zi);
        }
        if zi.advise & advise::INLINE_PCLUSTER != 0 {
            let head = self.z_head(&zi, inode.size - 1)?;
            let size = u64::from(h.idata_size());
            let at = head.next_pack;
            if size == 0 || at % self.block_size() + size > self.block_size() {
                return Err(Error::corrupt(
                    Some(nid),
                    Some(at),
                    Corruption::CompressedIndex {
                        lcn: head.lcn,
                        reason: format!("invalid tail-packing pcluster of {size} bytes"),
                    },
                ));
            }
            self.check_range(at, size).map_err(|e| e.with_nid(nid))?;
            zi.tail_head_lcn = Some(head.lcn);
            zi.idata = Some((at, size));
        }
        if zi.advise & advise::FRAGMENT_PCLUSTER != 0 {
            if !self.superblock().incompat().contains(Incompat::FRAGMENTS) {
                return Err(bad("fragment advise without the fragments feature".into()));
            }
            let head = self.z_head(&zi, inode.size - 1)?;
            zi.fragment_offset = u64::from(h.fragment_offset());
            if inode.layout == DataLayout::CompressedFull {
                zi.fragment_offset |= u64::from(head.blkaddr) << 32;
            }
            zi.tail_head_lcn = Some(head.lcn);
        }
        Ok(zi)
    }

    /// Loads lcluster `lcn`: the decoded index and the offset right after its record or pack.
    fn z_load(&self, zi: &ZInfo, lcn: u64) -> Result<(Lcluster, u64)> {
        let (lc, next, at) = match zi.compact {
            Some(layout) => {
                let slot = layout
                    .slot(lcn)
                    .ok_or_else(|| zi.corrupt(None, lcn, "lcluster past the last index"))?;
                let mut pack = [0u8; 32];
                let pack = &mut pack[..slot.pack_size as usize];
                self.read_meta(slot.pack_offset, pack)
                    .map_err(|e| e.with_nid(zi.nid))?;
                let lc = compress::decode_compact(
                    pack,
                    slot.items,
                    slot.index,
                    zi.lclusterbits,
                    zi.advise & advise::BIG_PCLUSTER_1 != 0,
                )
                .map_err(|e| zi.corrupt(Some(slot.pack_offset), lcn, e.to_string()))?;
                (lc, slot.pack_offset + slot.pack_size, slot.pack_offset)
            }
            None => {
                if lcn >= zi.total {
                    return Err(zi.corrupt(None, lcn, "lcluster past the last index"));
                }
                let at = compress::full_index_offset(zi.header, lcn)
                    .ok_or_else(|| zi.corrupt(None, lcn, "index offset overflows"))?;
                let mut raw = [0u8; 8];
                self.read_meta(at, &mut raw)
                    .map_err(|e| e.with_nid(zi.nid))?;
                let idx = LclusterIndex::read_from_bytes(&raw[..]).unwrap_or_default();
                let lc = idx.decode();
                if let Lcluster::NonHead {
                    cblkcnt: Some(_), ..
                } = lc
                    && zi.advise & (advise::BIG_PCLUSTER_1 | advise::BIG_PCLUSTER_2) == 0
                {
                    return Err(zi.corrupt(Some(at), lcn, "CBLKCNT without big pcluster advise"));
                }
                (lc, at + compress::FULL_INDEX_SIZE, at)
            }
        };
        if let Lcluster::Head { clusterofs, .. } = lc
            && u64::from(clusterofs) >= 1u64 << zi.lclusterbits
        {
            return Err(zi.corrupt(
                Some(at),
                lcn,
                format!("clusterofs {clusterofs} past the lcluster"),
            ));
        }
        Ok((lc, next))
    }

    /// Finds the HEAD of the extent holding `ofs` (`z_erofs_do_map_blocks` + lookback).
    fn z_head(&self, zi: &ZInfo, ofs: u64) -> Result<Head> {
        let bits = zi.lclusterbits;
        let initial = ofs >> bits;
        let endoff = ofs & ((1u64 << bits) - 1);
        let (lc, next_pack) = self.z_load(zi, initial)?;
        let mut distance = match lc {
            Lcluster::Head {
                kind,
                clusterofs,
                blkaddr,
                partial_ref,
            } if endoff >= u64::from(clusterofs) => {
                return Ok(Head {
                    lcn: initial,
                    kind,
                    logical: initial << bits | u64::from(clusterofs),
                    blkaddr,
                    partial: partial_ref,
                    next_pack,
                });
            }
            Lcluster::Head { .. } if initial == 0 => {
                return Err(zi.corrupt(None, 0, "invalid logical cluster 0"));
            }
            Lcluster::Head { .. } => 1,
            Lcluster::NonHead { delta0, .. } => u64::from(delta0),
        };
        let mut lcn = initial;
        loop {
            if distance == 0 || lcn < distance {
                return Err(zi.corrupt(None, lcn, format!("bogus lookback distance {distance}")));
            }
            lcn -= distance;
            match self.z_load(zi, lcn)?.0 {
                Lcluster::NonHead { delta0, .. } => distance = u64::from(delta0),
                Lcluster::Head {
                    kind,
                    clusterofs,
                    blkaddr,
                    partial_ref,
                } => {
                    return Ok(Head {
                        lcn,
                        kind,
                        logical: lcn << bits | u64::from(clusterofs),
                        blkaddr,
                        partial: partial_ref,
                        next_pack,
                    });
                }
            }
        }
    }

    /// Where the extent starting at `head` ends: the next HEAD, or the end of the file.
    fn z_extent_end(&self, zi: &ZInfo, head: &Head) -> Result<u64> {
        let bits = zi.lclusterbits;
        let mut lcn = head.lcn + 1;
        loop {
            if lcn >= zi.total || lcn << bits >= zi.size {
                return Ok(zi.size);
            }
            match self.z_load(zi, lcn)?.0 {
                Lcluster::NonHead { delta1, .. } => {
                    lcn = lcn.saturating_add(u64::from(delta1.unwrap_or(1).max(1)));
                }
                Lcluster::Head { clusterofs, .. } => {
                    return Ok((lcn << bits | u64::from(clusterofs)).min(zi.size));
                }
            }
        }
    }

    /// The pcluster size of a HEAD (`z_erofs_get_extent_compressedlen`).
    fn z_plen(&self, zi: &ZInfo, head: &Head) -> Result<u64> {
        let lsize = 1u64 << zi.lclusterbits;
        if head.kind == LclusterType::Plain || !zi.big(head.kind) {
            return Ok(lsize);
        }
        let lcn = head.lcn + 1;
        if lcn >= zi.total {
            return Ok(self.block_size());
        }
        let blocks = match self.z_load(zi, lcn)?.0 {
            Lcluster::Head { .. } => 1,
            Lcluster::NonHead {
                cblkcnt: Some(n), ..
            } if n > 0 => u64::from(n),
            Lcluster::NonHead { delta0, .. } if delta0 != 1 => {
                return Err(zi.corrupt(None, lcn, "bogus CBLKCNT"));
            }
            Lcluster::NonHead { .. } => {
                return Err(zi.corrupt(None, lcn, "cannot find CBLKCNT"));
            }
        };
        Ok(blocks << self.block_bits())
    }

    /// The extent of compressed inode `inode` holding logical byte `logical`.
    pub fn z_map(&self, inode: &Inode, logical: u64) -> Result<ZExtent> {
        let zi = self.zinfo(inode)?;
        self.z_map_with(&zi, logical)
    }

    /// [`Image::z_map`] with the map header decoded; the extent returned always contains
    /// `logical` (indexes whose lookback and lookahead disagree are corrupt).
    pub(crate) fn z_map_with(&self, zi: &ZInfo, logical: u64) -> Result<ZExtent> {
        let e = self.z_map_inner(zi, logical)?;
        if e.logical > logical || e.end() <= logical || e.end() > zi.size {
            return Err(zi.corrupt(
                None,
                logical >> zi.lclusterbits,
                format!(
                    "extent {}..{} does not contain logical offset {logical}",
                    e.logical,
                    e.end()
                ),
            ));
        }
        Ok(e)
    }

    fn z_map_inner(&self, zi: &ZInfo, logical: u64) -> Result<ZExtent> {
        if logical >= zi.size {
            return Err(Error::corrupt(Some(zi.nid), None, Corruption::Overflow));
        }
        if let Some(offset) = zi.whole_fragment {
            return Ok(ZExtent {
                logical: 0,
                length: zi.size,
                storage: ZStorage::Fragment { offset },
                physical: 0,
                plen: 0,
                lcluster_type: LclusterType::Plain,
                inline: false,
                partial: false,
            });
        }
        if zi.extents.is_some() {
            return self.z_map_extents(zi, logical);
        }
        let head = self.z_head(zi, logical)?;
        let end = self.z_extent_end(zi, &head)?;
        if end <= head.logical || head.logical > logical {
            return Err(zi.corrupt(
                None,
                head.lcn,
                format!("extent ends at {end} before it starts at {}", head.logical),
            ));
        }
        let tail = zi.tail_head_lcn == Some(head.lcn);
        let mut ext = ZExtent {
            logical: head.logical,
            length: end - head.logical,
            storage: ZStorage::Raw { interlaced: false },
            physical: 0,
            plen: 0,
            lcluster_type: head.kind,
            inline: false,
            partial: head.partial,
        };
        if tail && let Some((at, size)) = zi.idata {
            ext.physical = at;
            ext.plen = size;
            ext.inline = true;
        } else if tail && zi.advise & advise::FRAGMENT_PCLUSTER != 0 {
            ext.storage = ZStorage::Fragment {
                offset: zi.fragment_offset,
            };
            return Ok(ext);
        } else {
            ext.physical = u64::from(head.blkaddr) << self.block_bits();
            ext.plen = self.z_plen(zi, &head)?;
        }
        self.z_finish(zi, head.lcn, ext)
    }

    /// Sets the storage kind from the HEAD type and checks the pcluster's bounds.
    fn z_finish(&self, zi: &ZInfo, lcn: u64, mut ext: ZExtent) -> Result<ZExtent> {
        if ext.lcluster_type == LclusterType::Plain {
            if ext.length > ext.plen && !ext.partial {
                return Err(zi.corrupt(
                    Some(ext.physical),
                    lcn,
                    format!(
                        "raw extent of {} bytes in a pcluster of {}",
                        ext.length, ext.plen
                    ),
                ));
            }
            ext.storage = ZStorage::Raw {
                interlaced: zi.advise & advise::INTERLACED_PCLUSTER != 0,
            };
        } else if !matches!(ext.storage, ZStorage::Compressed { .. }) {
            let raw = zi.algorithms[usize::from(ext.lcluster_type == LclusterType::Head2)];
            let algorithm = Algorithm::from_raw(raw)
                .filter(|a| self.available_algorithms() & a.bit() != 0)
                .ok_or_else(|| {
                    zi.corrupt(
                        None,
                        lcn,
                        format!("algorithm {raw} is not in the superblock's algorithms"),
                    )
                })?;
            ext.storage = ZStorage::Compressed { algorithm };
        }
        if ext.plen > MAX_PCLUSTER_SIZE {
            return Err(zi.corrupt(
                Some(ext.physical),
                lcn,
                format!("pcluster of {} bytes exceeds 1 MiB", ext.plen),
            ));
        }
        self.check_range(ext.physical, ext.plen)
            .map_err(|e| e.with_nid(zi.nid))?;
        Ok(ext)
    }

    /// 48-bit extent records (§12.7), as Linux's `z_erofs_map_blocks_ext`.
    fn z_map_extents(&self, zi: &ZInfo, logical: u64) -> Result<ZExtent> {
        let (count, recsz) = zi.extents.unwrap_or((0, 32));
        let bad = |reason: String| zi.corrupt(None, logical >> zi.lclusterbits, reason);
        // 4-byte records hold only lengths (mkfs 1.9.3 -E48bit writes them): finding one
        // sums the records before it, as Linux does, so mapping every extent of such a file
        // is quadratic in its record count (bounded by the image size).
        if !matches!(recsz, 4 | 8 | 16 | 32) {
            return Err(bad(format!("extent record size {recsz}")));
        }
        let base = erofs_format::round_up(zi.header + compress::MAP_HEADER_SIZE, recsz)
            .ok_or_else(|| bad("offset overflows".into()))?;
        let read = |at: u64| -> Result<ExtentRecord> {
            let mut raw = [0u8; 32];
            self.read_meta(at, &mut raw[..recsz as usize])
                .map_err(|e| e.with_nid(zi.nid))?;
            Ok(ExtentRecord::read_from_bytes(&raw[..]).unwrap_or_default())
        };
        let lsize = 1u64 << zi.lclusterbits;
        let (lstart, lend, plen, pa, last) = if recsz <= 8 {
            // One record per lcluster; 4-byte records follow a le64 start address.
            let mut pos = base;
            let mut lstart;
            let mut pa = None;
            if recsz == 4 {
                let mut b = [0u8; 8];
                self.read_meta(pos, &mut b)
                    .map_err(|e| e.with_nid(zi.nid))?;
                pa = Some(compress::ExtentsStart::decode(b));
                pos += 8;
                lstart = 0;
            } else {
                lstart = logical / lsize * lsize;
                pos += (lstart / lsize) * recsz;
            }
            let total = zi.size.div_ceil(lsize);
            self.check_range(pos, recsz * total.saturating_sub(lstart / lsize))
                .map_err(|e| e.with_nid(zi.nid))?;
            let (mut plen, mut m_pa) = (0u32, 0u64);
            while lstart <= logical {
                let r = read(pos)?;
                plen = r.plen.get();
                match pa.as_mut() {
                    Some(p) => {
                        m_pa = *p;
                        *p = p.saturating_add(u64::from(plen & EXTENT_PLEN_MASK));
                    }
                    None => m_pa = u64::from(r.pstart_lo.get()),
                }
                pos += recsz;
                lstart += lsize;
            }
            let last = lstart >= zi.size.div_ceil(lsize) * lsize;
            (lstart - lsize, lstart.min(zi.size), plen, m_pa, last)
        } else {
            self.check_range(base, count.saturating_mul(recsz))
                .map_err(|e| e.with_nid(zi.nid))?;
            let (mut l, mut r) = (0u64, count);
            let (mut lstart, mut lend, mut plen, mut pa) = (zi.size, zi.size, 0u32, 0u64);
            while l < r {
                let mid = l + (r - l) / 2;
                let e = read(base + mid * recsz)?;
                let mut la = u64::from(e.lstart_lo.get());
                if recsz > 16 {
                    la |= u64::from(e.lstart_hi.get()) << 32;
                }
                let epa = u64::from(e.pstart_lo.get()) | u64::from(e.pstart_hi.get()) << 32;
                if la > logical {
                    r = mid;
                    if la > lend {
                        return Err(bad("extent records out of order".into()));
                    }
                    lend = la;
                } else {
                    l = mid + 1;
                    if logical == la {
                        r = r.min(l + 1);
                    }
                    lstart = la;
                    plen = e.plen.get();
                    pa = epa;
                }
            }
            (lstart, lend, plen, pa, l >= count)
        };
        if lstart >= lend || lstart > logical {
            return Err(bad(format!(
                "no extent record maps logical offset {logical}"
            )));
        }
        let mut ext = ZExtent {
            logical: lstart,
            length: lend - lstart,
            storage: ZStorage::Raw { interlaced: false },
            physical: pa,
            plen: u64::from(plen & EXTENT_PLEN_MASK),
            lcluster_type: LclusterType::Plain,
            inline: false,
            partial: plen & EXTENT_PLEN_PARTIAL != 0,
        };
        if last && zi.advise & advise::FRAGMENT_PCLUSTER != 0 {
            let mut offset = u64::from(plen);
            if recsz > 4 {
                offset |= pa << 32;
            }
            ext.storage = ZStorage::Fragment { offset };
            ext.physical = 0;
            ext.plen = 0;
            ext.partial = false;
            return Ok(ext);
        }
        if ext.plen == 0 {
            // No data: a hole that reads as zeroes, modelled as a zero-length raw pcluster.
            return Err(bad(format!("extent at {lstart} has no pcluster")));
        }
        let fmt = plen >> EXTENT_PLEN_FMT_BIT;
        if fmt != 0 {
            let algorithm = Algorithm::from_raw((fmt - 1) as u8)
                .filter(|a| self.available_algorithms() & a.bit() != 0)
                .ok_or_else(|| bad(format!("extent format {fmt} unknown")))?;
            ext.storage = ZStorage::Compressed { algorithm };
            ext.lcluster_type = LclusterType::Head1;
        } else {
            let bmask = self.block_size() - 1;
            let interlaced = zi.advise & advise::INTERLACED_PCLUSTER != 0
                && (ext.physical | ext.plen) & bmask == 0;
            ext.storage = ZStorage::Raw { interlaced };
        }
        if ext.plen > MAX_PCLUSTER_SIZE {
            return Err(bad(format!("pcluster of {} bytes exceeds 1 MiB", ext.plen)));
        }
        self.check_range(ext.physical, ext.plen)
            .map_err(|e| e.with_nid(zi.nid))?;
        Ok(ext)
    }

    /// The byte range of a compressed inode's map header and indexes (or extent records).
    pub fn compression_index_range(&self, inode: &Inode) -> Result<std::ops::Range<u64>> {
        let zi = self.zinfo(inode)?;
        Ok(zi.header..zi.index_end)
    }

    /// Every extent of a compressed inode, in logical order. The count is bounded by the
    /// index area, which lies inside the image.
    pub fn z_extents(&self, inode: &Inode) -> Result<Vec<ZExtent>> {
        let mut out = Vec::new();
        self.z_for_each_extent(inode, &mut |e| {
            out.push(*e);
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `f` with every extent of a compressed inode in logical order, without
    /// collecting them (a huge file's extent list is never held in memory).
    pub fn z_for_each_extent(
        &self,
        inode: &Inode,
        f: &mut dyn FnMut(&ZExtent) -> Result<()>,
    ) -> Result<()> {
        let zi = self.zinfo(inode)?;
        let mut pos = 0;
        while pos < inode.size {
            let e = self.z_map_with(&zi, pos)?;
            if e.end() <= pos {
                return Err(zi.corrupt(None, pos >> zi.lclusterbits, "extents do not advance"));
            }
            pos = e.end();
            f(&e)?;
        }
        Ok(())
    }

    /// The decoded bytes of a non-fragment extent, through the pcluster cache.
    fn z_decoded(&self, zi: &ZInfo, ext: &ZExtent, ra: &mut ReadAhead) -> Result<Arc<Vec<u8>>> {
        let key = CacheKey {
            physical: ext.physical,
            plen: ext.plen,
            length: ext.length,
            rotate: ext.logical % self.block_size(),
            storage: ext.storage,
            partial: ext.partial,
        };
        if let Some(v) = self.zcache().get(&key) {
            return Ok(v);
        }
        let v = Arc::new(self.z_decode_vec(zi.nid, ext, ra)?);
        self.zcache().put(key, v.clone());
        Ok(v)
    }

    /// Decodes one extent without the cache into a new buffer of exactly `ext.length` bytes.
    fn z_decode_vec(&self, nid: u64, ext: &ZExtent, ra: &mut ReadAhead) -> Result<Vec<u8>> {
        let len = usize::try_from(ext.length)
            .ok()
            .filter(|&l| l as u64 <= compress::MAX_EXTENT_DECODED)
            .ok_or_else(|| {
                decode_error(
                    nid,
                    ext,
                    format!(
                        "decoded extent of {} bytes exceeds {}",
                        ext.length,
                        compress::MAX_EXTENT_DECODED
                    ),
                )
            })?;
        let mut out = vec![0u8; len];
        self.z_decode_ahead(nid, ext, ra, 0, &mut out)?;
        Ok(out)
    }

    /// Decodes one extent into `out` (exactly `ext.length` bytes), reading its pcluster
    /// straight from memory for an in-memory source, otherwise into this thread's buffer.
    pub(crate) fn z_decode_into(&self, nid: u64, ext: &ZExtent, out: &mut [u8]) -> Result<()> {
        let mut ra = ReadAhead::from_thread();
        let r = self.z_decode_ahead(nid, ext, &mut ra, 0, out);
        ra.give_back();
        r
    }

    /// Decodes one extent into `out` (exactly `ext.length` bytes). Its pcluster comes from
    /// memory for an in-memory source, else from `ra`, which on a miss reads up to `ahead`
    /// bytes (at most [`READ_AHEAD`]) from the pcluster's start.
    fn z_decode_ahead(
        &self,
        nid: u64,
        ext: &ZExtent,
        ra: &mut ReadAhead,
        ahead: u64,
        out: &mut [u8],
    ) -> Result<()> {
        self.zcache().count_decode();
        self.check_range(ext.physical, ext.plen)
            .map_err(|e| e.with_nid(nid))?;
        if let Some(bytes) = self.source().as_slice() {
            // check_range bounded the range by the source's length.
            let input = &bytes[ext.physical as usize..(ext.physical + ext.plen) as usize];
            return self.z_decode_input(nid, ext, input, out);
        }
        if ext.plen > MAX_PCLUSTER_SIZE {
            return Err(Error::corrupt(
                Some(nid),
                Some(ext.physical),
                Corruption::Decode {
                    logical: ext.logical,
                    algorithm: ext.kind_name(),
                    reason: format!("pcluster of {} bytes exceeds 1 MiB", ext.plen),
                },
            ));
        }
        let end = ext.physical + ext.plen;
        if ext.physical < ra.start || end > ra.start + ra.len as u64 {
            // Never past the image's end, which check_range showed to lie beyond `end`.
            let want = ahead
                .min(READ_AHEAD)
                .max(ext.plen)
                .min(self.len() - ext.physical) as usize;
            if ra.buf.len() < want {
                ra.buf.resize(want, 0);
            }
            ra.len = 0;
            self.read_exact(ext.physical, &mut ra.buf[..want])
                .map_err(|e| e.with_nid(nid))?;
            ra.start = ext.physical;
            ra.len = want;
        }
        let from = (ext.physical - ra.start) as usize;
        let input = &ra.buf[from..from + ext.plen as usize];
        self.z_decode_input(nid, ext, input, out)
    }

    /// Decodes `input` (the extent's pcluster) into `out`.
    fn z_decode_input(&self, nid: u64, ext: &ZExtent, input: &[u8], out: &mut [u8]) -> Result<()> {
        let located = |reason: String| decode_error(nid, ext, reason);
        let len = out.len();
        if len as u64 != ext.length {
            return Err(located(format!(
                "output buffer of {len} bytes for an extent of {}",
                ext.length
            )));
        }
        match ext.storage {
            ZStorage::Fragment { .. } => {
                Err(located("fragments are read from the packed inode".into()))
            }
            ZStorage::Raw { interlaced } => {
                if len > input.len() {
                    return Err(located(format!(
                        "raw extent of {len} bytes in {} bytes",
                        input.len()
                    )));
                }
                if !interlaced {
                    out.copy_from_slice(&input[..len]);
                    return Ok(());
                }
                // Bytes sit at their logical in-block offset: the first ones come from the
                // last block's tail, at that offset, even when the extent ends before it
                // (Linux's `z_erofs_transform_plain` takes them from `inputsize - (bs -
                // offset)`, before shortening the copy to the output).
                let bs = self.block_size();
                let right = ((bs - ext.logical % bs) as usize).min(input.len());
                let first = right.min(len);
                let from = input.len() - right;
                out[..first].copy_from_slice(&input[from..from + first]);
                out[first..].copy_from_slice(&input[..len - first]);
                Ok(())
            }
            ZStorage::Compressed { algorithm } => {
                let dict = if algorithm == Algorithm::Lzma {
                    match self.compression_config(algorithm)? {
                        Some(ComprCfg::Lzma { dict_size, .. }) => dict_size,
                        _ => return Err(located("no MicroLZMA configuration record".into())),
                    }
                } else {
                    0
                };
                let req = Request {
                    algorithm,
                    out_len: len,
                    partial: ext.partial,
                    zero_padding: algorithm != Algorithm::Lz4
                        || self
                            .superblock()
                            .incompat()
                            .contains(Incompat::LZ4_0PADDING),
                    physical: ext.physical,
                    lzma_dict_size: dict,
                };
                decompress::decode_into(&req, input, out).map_err(located)
            }
        }
    }

    /// Reads decoded bytes of a compressed inode at `offset` into `buf` (`depth` guards the
    /// packed inode against fragments of its own).
    pub(crate) fn z_read_at(
        &self,
        inode: &Inode,
        offset: u64,
        buf: &mut [u8],
        depth: u8,
    ) -> Result<usize> {
        if offset >= inode.size {
            return Ok(0);
        }
        let zi = self.zinfo(inode)?;
        let want = (buf.len() as u64).min(inode.size - offset) as usize;
        let mut ra = ReadAhead::from_thread();
        let r = self.z_read_with(&zi, offset, &mut buf[..want], depth, &mut ra);
        ra.give_back();
        r
    }

    fn z_read_with(
        &self,
        zi: &ZInfo,
        offset: u64,
        buf: &mut [u8],
        depth: u8,
        ra: &mut ReadAhead,
    ) -> Result<usize> {
        let want = buf.len();
        let mut done = 0usize;
        while done < want {
            let pos = offset + done as u64;
            let e = self.z_map_with(zi, pos)?;
            let n = ((e.end() - pos) as usize).min(want - done);
            let dst = &mut buf[done..done + n];
            match e.storage {
                ZStorage::Fragment { offset: frag } => {
                    let at = frag
                        .checked_add(pos - e.logical)
                        .ok_or_else(|| Error::corrupt(Some(zi.nid), None, Corruption::Overflow))?;
                    self.read_fragment(zi, at, dst, depth)?;
                }
                // The read covers the whole extent: decode it in place, no cache, no copy.
                // Not in the packed inode (depth > 0), whose pclusters hold the fragments
                // of many files: they stay cached for the next file's read.
                _ if depth == 0 && pos == e.logical && n as u64 == e.length => {
                    // The rest of the read likely compresses as this extent did: read ahead
                    // that share of it (a guess too short costs one more read, not bytes).
                    let rest = u128::from(offset + want as u64 - e.end());
                    let share = rest * u128::from(e.plen) / u128::from(e.length.max(1));
                    let ahead = e
                        .plen
                        .saturating_add(u64::try_from(share).unwrap_or(READ_AHEAD))
                        .min(READ_AHEAD)
                        .next_multiple_of(self.block_size());
                    self.z_decode_ahead(zi.nid, &e, ra, ahead, dst)?;
                }
                _ => {
                    let data = self.z_decoded(zi, &e, ra)?;
                    let from = (pos - e.logical) as usize;
                    dst.copy_from_slice(&data[from..from + n]);
                }
            }
            done += n;
        }
        Ok(done)
    }

    fn read_fragment(&self, zi: &ZInfo, at: u64, dst: &mut [u8], depth: u8) -> Result<()> {
        let bad = |reason: String| {
            Error::corrupt(
                Some(zi.nid),
                None,
                Corruption::Fragment { offset: at, reason },
            )
        };
        if depth > 0 {
            return Err(bad("the packed inode refers to fragments itself".into()));
        }
        let packed_nid = self.superblock().packed_nid.get();
        if packed_nid == 0 {
            return Err(bad("no packed inode".into()));
        }
        let packed = self.inode(packed_nid)?;
        let end = at
            .checked_add(dst.len() as u64)
            .ok_or_else(|| bad("offset overflows".into()))?;
        if end > packed.size {
            return Err(bad(format!(
                "{} bytes past the packed inode's end ({} bytes)",
                end - packed.size,
                packed.size
            )));
        }
        let n = self.read_at_depth(&packed, at, dst, depth + 1)?;
        if n != dst.len() {
            return Err(bad("short read from the packed inode".into()));
        }
        Ok(())
    }

    /// Decodes one extent of `inode` (as [`Image::z_extents`] returned it) without the cache:
    /// exactly `ext.length` bytes, at most [`compress::MAX_EXTENT_DECODED`]. Fragments are
    /// refused: read them with [`Image::z_read_extent`].
    pub fn z_decode_extent(&self, inode: &Inode, ext: &ZExtent) -> Result<Vec<u8>> {
        let mut ra = ReadAhead::from_thread();
        let r = self.z_decode_vec(inode.nid, ext, &mut ra);
        ra.give_back();
        r
    }

    /// [`Image::z_decode_extent`] into `out`, which must be exactly `ext.length` bytes: a
    /// caller that reuses one buffer decodes without allocating.
    pub fn z_decode_extent_into(&self, inode: &Inode, ext: &ZExtent, out: &mut [u8]) -> Result<()> {
        self.z_decode_into(inode.nid, ext, out)
    }

    /// Maps every extent of a compressed inode in logical order and decodes each one once
    /// (which checks that its decoder consumes exactly its pcluster and produces exactly its
    /// extent), calling `f` with the extent and its decoded bytes. A fragment comes from the
    /// packed inode in pieces of at most 1 MiB, `f` being called once per piece. One buffer,
    /// at most [`compress::MAX_EXTENT_DECODED`] bytes, is reused for every extent: no file
    /// is held whole in memory.
    pub fn z_for_each_decoded(
        &self,
        inode: &Inode,
        f: &mut dyn FnMut(&ZExtent, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let zi = self.zinfo(inode)?;
        // This thread's output buffer, kept across files: most are small, and a fresh one
        // per file would be allocated, zeroed and freed each time.
        let mut buf = OUT_BUF
            .with(|c| c.try_borrow_mut().map(|mut b| std::mem::take(&mut *b)))
            .unwrap_or_default();
        let mut ra = ReadAhead::from_thread();
        let r = self.z_each_decoded(&zi, inode.size, &mut buf, &mut ra, f);
        ra.give_back();
        OUT_BUF.with(|c| {
            if let Ok(mut b) = c.try_borrow_mut()
                && b.capacity() < buf.capacity()
            {
                *b = buf;
            }
        });
        r
    }

    fn z_each_decoded(
        &self,
        zi: &ZInfo,
        size: u64,
        buf: &mut Vec<u8>,
        ra: &mut ReadAhead,
        f: &mut dyn FnMut(&ZExtent, &[u8]) -> Result<()>,
    ) -> Result<()> {
        // Extents are mapped a few ahead of the one decoded, so that one read fetches the
        // pclusters that follow each other on disk, and no byte past them. A mapping error
        // waits until the extents before it are decoded: errors come in logical order.
        let mut queue: VecDeque<ZExtent> = VecDeque::new();
        let mut map_error = None;
        let mut pos = 0;
        loop {
            while map_error.is_none() && queue.len() < MAP_AHEAD && pos < size {
                match self.z_map_with(zi, pos) {
                    Ok(e) if e.end() <= pos => {
                        map_error = Some(zi.corrupt(
                            None,
                            pos >> zi.lclusterbits,
                            "extents do not advance",
                        ));
                    }
                    Ok(e) => {
                        pos = e.end();
                        queue.push_back(e);
                    }
                    Err(err) => map_error = Some(err),
                }
            }
            let Some(e) = queue.pop_front() else {
                return map_error.map_or(Ok(()), Err);
            };
            match e.storage {
                ZStorage::Fragment { offset } => {
                    let mut at = 0u64;
                    while at < e.length {
                        let n = (e.length - at).min(1 << 20) as usize;
                        if buf.len() < n {
                            buf.resize(n, 0);
                        }
                        let from = offset.checked_add(at).ok_or_else(|| {
                            Error::corrupt(Some(zi.nid), None, Corruption::Overflow)
                        })?;
                        self.read_fragment(zi, from, &mut buf[..n], 0)?;
                        f(&e, &buf[..n])?;
                        at += n as u64;
                    }
                }
                _ => {
                    let n = usize::try_from(e.length)
                        .ok()
                        .filter(|&n| n as u64 <= compress::MAX_EXTENT_DECODED)
                        .ok_or_else(|| {
                            zi.corrupt(
                                Some(e.physical),
                                e.logical >> zi.lclusterbits,
                                format!("extent of {} bytes is too long to decode", e.length),
                            )
                        })?;
                    // Grown, never shrunk: a buffer of the largest extent seen is zeroed once.
                    if buf.len() < n {
                        buf.resize(n, 0);
                    }
                    // The run of pclusters that follow this one on disk, mapped already.
                    let mut end = e.physical + e.plen;
                    for next in &queue {
                        if matches!(next.storage, ZStorage::Fragment { .. })
                            || next.physical != end
                            || end + next.plen - e.physical > READ_AHEAD
                        {
                            break;
                        }
                        end += next.plen;
                    }
                    self.z_decode_ahead(zi.nid, &e, ra, end - e.physical, &mut buf[..n])?;
                    f(&e, &buf[..n])?;
                }
            }
        }
    }

    /// Streams the decoded bytes of one extent to `sink` in pieces of at most 1 MiB (through
    /// the pcluster cache); returns the byte count.
    pub fn z_read_extent(
        &self,
        inode: &Inode,
        ext: &ZExtent,
        sink: &mut dyn FnMut(&[u8]),
    ) -> Result<u64> {
        let mut buf = vec![0u8; ext.length.min(1 << 20) as usize];
        let mut pos = ext.logical;
        while pos < ext.end() {
            let n = ((ext.end() - pos) as usize).min(buf.len());
            let got = self.read_at(inode, pos, &mut buf[..n])?;
            if got != n {
                return Err(Error::corrupt(Some(inode.nid), None, Corruption::Overflow));
            }
            sink(&buf[..n]);
            pos += n as u64;
        }
        Ok(ext.length)
    }

    /// Bytes of pclusters a compressed inode occupies (inline tails counted, fragments not).
    pub fn z_stored_bytes(&self, inode: &Inode) -> Result<u64> {
        Ok(self
            .z_extents(inode)?
            .iter()
            .filter(|e| !matches!(e.storage, ZStorage::Fragment { .. }))
            .map(|e| e.plen)
            .fold(0u64, u64::saturating_add))
    }
}

/// A decoding failure of extent `ext` of inode `nid`, located at its pcluster.
fn decode_error(nid: u64, ext: &ZExtent, reason: String) -> Error {
    Error::corrupt(
        Some(nid),
        Some(ext.physical),
        Corruption::Decode {
            logical: ext.logical,
            algorithm: ext.kind_name(),
            reason,
        },
    )
}
