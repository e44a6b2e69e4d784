//! `-E dedupe`: an extent whose decoded bytes equal those of a pcluster already written
//! (decoded the same way) points at that pcluster instead of storing its own. With
//! fragments the same whole-pcluster sharing is on without `-E dedupe` (as mkfs.erofs
//! shares identical extents whenever fragments are on); prefixes and the sharing inside a
//! segment are `-E dedupe`'s alone.
//!
//! Deterministic and parallel: the workers compress as without dedupe and add the SHA-256
//! of each extent's decoded bytes (from the buffer they compressed); only the ordered step,
//! which meets segments in inode and file order, decides. The first extent with given
//! content keeps its pcluster, every later one reuses it, whatever the thread count.
//!
//! Only whole extents are shared: a reused pcluster decodes to exactly the extent, so the
//! index is an ordinary HEAD (no `PARTIAL_REF`) and no incompat bit is needed; Linux and
//! erofs-utils 1.5 read several HEADs naming one block as they read any other. A file
//! with a shared pcluster is no longer in increasing contiguous block order, which compact
//! indexes cannot express: the layout gives it full indexes ([`crate::layout`]).
//!
//! Memory: one entry per pcluster written, bounded by the image's block count.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use erofs_format::compress::Algorithm;
use sha2::{Digest, Sha256};

use crate::BuildError;
use crate::compress::{Compressed, Compressor, Extent, SegmentEnd, compress_step};

/// A pcluster's decoded length and the SHA-256 of its decoded bytes.
pub(super) type PclusterDigest = (u32, [u8; 32]);

/// What a worker hands the ordered step about a segment whose pclusters may be shared.
pub(super) struct SegmentFacts {
    /// [`extent_digests`] of its extents.
    pub digests: Vec<Option<PclusterDigest>>,
    /// Its bytes, kept a while for prefix matches: with `-E dedupe` only (sharing under
    /// fragments compares digests alone, and the buffer goes back to the pool).
    pub src: Option<Arc<Vec<u8>>>,
}

/// For each of `extents` (consecutive pieces of `src`, from its start) but an inline
/// tail (`skip_last`): how many bytes its pcluster decodes to and their SHA-256, for the
/// first extent on each pcluster (the one it was compressed for; `fulls` gives the length
/// of those that were shortened, [`compress_segment_sharing`]); `None` for the extents
/// that share a pcluster of the segment.
pub(super) fn extent_digests(
    src: &[u8],
    extents: &[Extent],
    fulls: &[u32],
    skip_last: bool,
) -> Vec<Option<PclusterDigest>> {
    let n = extents.len() - usize::from(skip_last && !extents.is_empty());
    let mut at = 0usize;
    let mut owners = std::collections::HashSet::new();
    extents[..n]
        .iter()
        .enumerate()
        .map(|(k, e)| {
            let start = at;
            at += e.len as usize;
            owners.insert(e.blk).then(|| {
                let full = if e.partial { fulls[k] } else { e.len };
                (
                    full,
                    Sha256::digest(&src[start..start + full as usize]).into(),
                )
            })
        })
        .collect()
}

/// What makes two pclusters interchangeable: the same decoded bytes, decoded the same way
/// (stored raw, or by the same algorithm), and for an interlaced raw pcluster the same
/// rotation (its bytes sit at their file offset within the block).
#[derive(Hash, PartialEq, Eq)]
struct Key {
    algorithm: Option<Algorithm>,
    len: u32,
    digest: [u8; 32],
    rotation: u32,
}

/// The pclusters written so far, by content.
pub(super) struct Dedupe {
    /// First block and block count.
    seen: HashMap<Key, (u32, u32)>,
    blkszbits: u8,
    /// The image has big pclusters: a pcluster of several blocks needs its CBLKCNT index.
    big: bool,
    /// `-E dedupe`: also prefixes of recent pclusters (`PARTIAL_REF`); without it (sharing
    /// under fragments) only whole pclusters.
    prefixes: bool,
    /// Raw pclusters are interlaced (`INTERLACED_PCLUSTER`).
    interlaced: bool,
    /// Recently written compressed pclusters by a hash of their first block of output,
    /// with that output: a later extent whose bytes are a prefix of one takes it with
    /// `PARTIAL_REF` (a file that is the start of another).
    heads: HashMap<u64, Head>,
    /// The segments `heads` points into, oldest first, and the keys each one holds.
    recent: VecDeque<(Arc<Vec<u8>>, Vec<u64>)>,
    /// Bytes of the segments in `recent`.
    recent_bytes: usize,
}

/// A recently written pcluster, for prefix matches.
struct Head {
    src: Arc<Vec<u8>>,
    /// Its decoded bytes in `src`.
    at: usize,
    full: usize,
    algorithm: Algorithm,
    blk: u32,
    blocks: u32,
}

/// Segment bytes kept for prefix matches: a bound on memory (the window of a deterministic
/// FIFO: what falls out depends on the input alone).
const RECENT_BYTES: usize = 64 << 20;

fn head_key(first_block: &[u8], algorithm: Algorithm) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    algorithm.hash(&mut h);
    first_block.hash(&mut h);
    h.finish()
}

impl Dedupe {
    pub(super) fn new(blkszbits: u8, big: bool, prefixes: bool, interlaced: bool) -> Self {
        Self {
            seen: HashMap::new(),
            blkszbits,
            big,
            prefixes,
            interlaced,
            heads: HashMap::new(),
            recent: VecDeque::new(),
            recent_bytes: 0,
        }
    }

    /// Places the pclusters of segment `z` (relative addresses) from block `next` on,
    /// writing through `put` (range of `z.data`, block) only those whose content is new,
    /// and returns the segment's extents at absolute addresses and the blocks written.
    /// `digests` are the extents' ([`extent_digests`]); an extent past them (an inline
    /// tail) is given the block where a pcluster after the one before it would start. `src`: the
    /// segment's bytes, for prefix matches (`None` without them); `pos`: the file offset
    /// where it starts.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn place(
        &mut self,
        z: &Compressed,
        digests: &[Option<PclusterDigest>],
        src: Option<Arc<Vec<u8>>>,
        algorithm: Algorithm,
        mut pos: u64,
        next: u64,
        mut put: impl FnMut(std::ops::Range<usize>, u64) -> Result<(), BuildError>,
    ) -> Result<(Vec<Extent>, u64), BuildError> {
        let blksz = 1usize << self.blkszbits;
        let lcmask = (1u64 << self.blkszbits) - 1;
        let seg_start = pos;
        let mut new_heads = Vec::new();
        let mut out = Vec::with_capacity(z.extents.len());
        let mut written = 0u64;
        // New pclusters not yet written, contiguous in `z`: (first relative block, blocks,
        // where they go).
        let mut run: Option<(u32, u32, u64)> = None;
        let mut flush = |run: &mut Option<(u32, u32, u64)>| -> Result<(), BuildError> {
            match run.take() {
                Some((from, n, at)) => put(from as usize * blksz..(from + n) as usize * blksz, at),
                None => Ok(()),
            }
        };
        // Where each of the segment's own pclusters went (relative block -> absolute
        // block and block count), for the later extents that share them.
        let mut placed: HashMap<u32, (u32, u32)> = HashMap::new();
        let mut uses: HashMap<u32, u32> = HashMap::new();
        for e in &z.extents[..digests.len()] {
            *uses.entry(e.blk).or_default() += 1;
        }
        for (k, e) in z.extents.iter().enumerate() {
            let Some(digest) = digests.get(k) else {
                // Right after the pcluster before it, shared or not, so that a file whose
                // pclusters are in order keeps compact indexes.
                let blk = out
                    .last()
                    .map_or((next + written) as u32, |p: &Extent| p.blk + p.blocks);
                out.push(Extent { blk, ..*e });
                pos += u64::from(e.len);
                continue;
            };
            let (full, digest) = match (placed.get(&e.blk), digest) {
                (Some(&(blk, blocks)), _) => {
                    out.push(Extent { blk, blocks, ..*e });
                    pos += u64::from(e.len);
                    continue;
                }
                (None, Some(d)) => *d,
                (None, None) => unreachable!("the first extent on a pcluster has a digest"),
            };
            let key = Key {
                algorithm: (!e.raw).then_some(algorithm),
                len: full,
                digest,
                rotation: if e.raw && self.interlaced {
                    (pos & lcmask) as u32
                } else {
                    0
                },
            };
            // A pcluster of another block count must suit the one extent on it: with several
            // blocks, the NONHEAD after its HEAD carries the count (CBLKCNT), so the extent
            // must reach two lclusters past the one it starts in.
            let fits = |blocks: u32| {
                blocks == e.blocks
                    || (uses[&e.blk] == 1 && self.cblkcnt_fits(pos, u64::from(e.len), blocks))
            };
            let at = (pos - seg_start) as usize;
            let bytes = src.as_deref().map(|s| &s[at..at + e.len as usize]);
            // Else a prefix of a recent pcluster's output, for the one extent on a pcluster
            // of its own.
            let prefix_of = || -> Option<(u32, u32)> {
                let bytes = bytes.filter(|_| self.prefixes)?;
                if e.raw
                    || e.partial
                    || uses[&e.blk] > 1
                    || bytes.len() < blksz
                    || !partial_ok(algorithm)
                {
                    return None;
                }
                let (h, take) = self.head_match(bytes, algorithm)?;
                (take == bytes.len() && take < h.full && fits(h.blocks))
                    .then_some((h.blk, h.blocks))
            };
            let reuse = match self.seen.get(&key) {
                Some(&(blk, blocks)) if fits(blocks) => Some((blk, blocks, false)),
                _ => prefix_of().map(|(blk, blocks)| (blk, blocks, true)),
            };
            // Else, read wholly from several earlier pclusters.
            let pieces = match (&reuse, bytes) {
                (None, Some(b)) if !e.raw && !e.partial && uses[&e.blk] == 1 => {
                    self.cover(b, algorithm, pos)
                }
                _ => None,
            };
            if let Some(pieces) = pieces {
                out.extend(pieces);
                pos += u64::from(e.len);
                continue;
            }
            match reuse {
                Some((blk, blocks, partial)) => {
                    placed.insert(e.blk, (blk, blocks));
                    out.push(Extent {
                        blk,
                        blocks,
                        partial: e.partial || partial,
                        ..*e
                    });
                }
                None => {
                    if self.prefixes && !e.raw && full as usize >= blksz {
                        new_heads.push((at, full as usize, blk_of(next, written), e.blocks));
                    }
                    let blk = next + written;
                    run = match run {
                        Some((from, n, at)) if from + n == e.blk => Some((from, n + e.blocks, at)),
                        _ => {
                            flush(&mut run)?;
                            Some((e.blk, e.blocks, blk))
                        }
                    };
                    self.seen.entry(key).or_insert((blk as u32, e.blocks));
                    placed.insert(e.blk, (blk as u32, e.blocks));
                    out.push(Extent {
                        blk: blk as u32,
                        ..*e
                    });
                    written += u64::from(e.blocks);
                }
            }
            pos += u64::from(e.len);
        }
        flush(&mut run)?;
        if let Some(src) = src {
            self.remember(src, algorithm, new_heads);
        }
        Ok((out, written))
    }

    /// Whether an extent of `len` bytes from file offset `pos` on a pcluster of `blocks`
    /// blocks leaves room for the block count: with big pclusters, the NONHEAD after the
    /// HEAD of a pcluster of several blocks carries it (CBLKCNT), so the extent must reach
    /// two lclusters past the one it starts in.
    fn cblkcnt_fits(&self, pos: u64, len: u64, blocks: u32) -> bool {
        let lcmask = (1u64 << self.blkszbits) - 1;
        blocks <= 1 || !self.big || ((pos & lcmask) + len) >> self.blkszbits >= 2
    }

    /// The recent pcluster of `algorithm` whose output starts with the first block of
    /// `bytes` (found by that block), and how many bytes from the start of `bytes` it
    /// decodes: all of them, or its whole output when `bytes` is longer. `None` when they
    /// differ.
    fn head_match(&self, bytes: &[u8], algorithm: Algorithm) -> Option<(&Head, usize)> {
        let blksz = 1usize << self.blkszbits;
        let h = self.heads.get(&head_key(bytes.get(..blksz)?, algorithm))?;
        let take = bytes.len().min(h.full);
        (h.algorithm == algorithm && h.src[h.at..h.at + take] == bytes[..take]).then_some((h, take))
    }

    /// A file's tail, cut as a fragment (`bytes`, from file offset `pos`), that a pcluster
    /// already written decodes to (or starts with, `PARTIAL_REF`): its extent on that
    /// pcluster, so that the tail is not packed again. mkfs.erofs looks for such a match
    /// before it cuts the fragment; here the tail was cut by a worker, and only the ordered
    /// step knows what is written. With `-E dedupe` only.
    pub(super) fn tail_extent(
        &self,
        bytes: &[u8],
        algorithm: Algorithm,
        pos: u64,
    ) -> Option<Extent> {
        let blksz = 1usize << self.blkszbits;
        if !self.prefixes || bytes.len() < blksz {
            return None;
        }
        let key = Key {
            algorithm: Some(algorithm),
            len: u32::try_from(bytes.len()).ok()?,
            digest: Sha256::digest(bytes).into(),
            rotation: 0,
        };
        let (blk, blocks, partial) = match self.seen.get(&key) {
            Some(&(blk, blocks)) => (blk, blocks, false),
            None if partial_ok(algorithm) => {
                let (h, take) = self.head_match(bytes, algorithm)?;
                (take == bytes.len() && take < h.full).then_some((h.blk, h.blocks, true))?
            }
            None => return None,
        };
        // The tail is the file's last extent: a pcluster of several blocks still needs the
        // NONHEAD after its HEAD for the block count.
        self.cblkcnt_fits(pos, bytes.len() as u64, blocks)
            .then_some(Extent {
                len: key.len,
                blk,
                blocks,
                raw: false,
                partial,
            })
    }

    /// `bytes` (from file offset `pos`) read wholly from pclusters already written: a run
    /// of extents, each on the start of a recent pcluster's output (mkfs.erofs's dedupe
    /// finds such matches one after another: a file of zeroes longer than one written
    /// before). A last piece shorter than a block moves the cut back so that it is one
    /// block. `None` unless every piece is found and reaches the lclusters its indexes
    /// need. With `-E dedupe` only.
    pub(super) fn cover(
        &self,
        bytes: &[u8],
        algorithm: Algorithm,
        pos: u64,
    ) -> Option<Vec<Extent>> {
        let blksz = 1usize << self.blkszbits;
        let lcmask = (1u64 << self.blkszbits) - 1;
        if !self.prefixes || !partial_ok(algorithm) || bytes.len() < blksz {
            return None;
        }
        let mut out: Vec<Extent> = Vec::new();
        let mut at = 0usize;
        while at < bytes.len() {
            let mut start = at;
            let left = bytes.len() - at;
            if left < blksz {
                let back = blksz - left;
                let prev = out.last_mut()?;
                if prev.len as usize <= back {
                    return None;
                }
                prev.len -= back as u32;
                prev.partial = true;
                start = bytes.len() - blksz;
            }
            let (h, take) = self.head_match(&bytes[start..], algorithm)?;
            out.push(Extent {
                len: take as u32,
                blk: h.blk,
                blocks: h.blocks,
                raw: false,
                partial: take < h.full,
            });
            // Each step covers a block at least (a pcluster's output is a block or more).
            at = start + take;
        }
        let mut p = pos;
        for e in &out {
            let crossed = ((p & lcmask) + u64::from(e.len)) >> self.blkszbits;
            if crossed < 1 || !self.cblkcnt_fits(p, u64::from(e.len), e.blocks) {
                return None;
            }
            p += u64::from(e.len);
        }
        Some(out)
    }

    /// A whole file stored flat (compression gained nothing) that pclusters already
    /// written decode: its extents on them, as mkfs.erofs's dedupe finds them before it
    /// judges the gain.
    pub(super) fn flat_file(&self, bytes: &[u8], algorithm: Algorithm) -> Option<Vec<Extent>> {
        match self.tail_extent(bytes, algorithm, 0) {
            Some(e) => Some(vec![e]),
            None => self.cover(bytes, algorithm, 0),
        }
    }

    /// Keeps the pclusters just written for prefix matches, and forgets the oldest
    /// segments past [`RECENT_BYTES`].
    fn remember(
        &mut self,
        src: Arc<Vec<u8>>,
        algorithm: Algorithm,
        heads: Vec<(usize, usize, u32, u32)>,
    ) {
        let blksz = 1usize << self.blkszbits;
        let mut keys = Vec::new();
        for (at, full, blk, blocks) in heads {
            let key = head_key(&src[at..at + blksz], algorithm);
            // The longest output with this start serves the most prefixes.
            if self.heads.get(&key).is_none_or(|h| h.full < full) {
                self.heads.insert(
                    key,
                    Head {
                        src: src.clone(),
                        at,
                        full,
                        algorithm,
                        blk,
                        blocks,
                    },
                );
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return;
        }
        self.recent_bytes += src.len();
        self.recent.push_back((src, keys));
        while self.recent_bytes > RECENT_BYTES {
            let Some((old, keys)) = self.recent.pop_front() else {
                break;
            };
            self.recent_bytes -= old.len();
            for k in keys {
                // Unless a later segment's pcluster took the key over.
                if self
                    .heads
                    .get(&k)
                    .is_some_and(|h| Arc::ptr_eq(&h.src, &old))
                {
                    self.heads.remove(&k);
                }
            }
        }
    }
}

/// [`crate::compress::compress_segment`] that also shares pclusters inside the segment,
/// as mkfs.erofs's dedupe does: before each new pcluster it looks for a pcluster of the
/// segment whose decoded bytes start with the bytes ahead, starting anywhere from here
/// back into the previous extent (which is then shortened). A match becomes an extent
/// pointing at that pcluster (`partial` when it takes only a prefix of it); nothing new
/// is stored. Deterministic: it depends on the segment's bytes only.
///
/// Candidates are found by a rolling hash of one block at each pcluster's start, then
/// compared byte for byte. With `end.fragment`, the file's tail is cut as
/// [`crate::compress::compress_segment_ext`] cuts it (sharing first, as mkfs.erofs looks
/// for a match before each pcluster). Returns, per extent, how many bytes its pcluster
/// decodes to, and the fragment's length (the last bytes of `src`, not in `out`).
#[allow(clippy::too_many_arguments)]
pub(super) fn compress_segment_sharing(
    c: Compressor,
    src: &[u8],
    blksz: usize,
    pcluster: usize,
    max_extent: usize,
    end: SegmentEnd,
    out: &mut Compressed,
    scratch: &mut Vec<u8>,
) -> (Vec<u32>, usize) {
    let at_end = end.last;
    out.data.clear();
    out.extents.clear();
    scratch.resize(pcluster, 0);
    let mut seg = Segment {
        src,
        blksz,
        max_extent,
        at_end,
        starts: Vec::new(),
        full: Vec::new(),
        heads: HashMap::new(),
        filter: vec![0u64; FILTER_WORDS],
        partial_ok: partial_ok(c.algorithm()),
    };
    let mut pos = 0;
    while pos < src.len() {
        if let Some(end) = seg.share(pos, out) {
            pos = end;
            continue;
        }
        let first = out.extents.len();
        let Some(n) = compress_step(c, src, pos, blksz, pcluster, max_extent, end, out, scratch)
        else {
            return (
                seg.full.into_iter().map(|f| f as u32).collect(),
                src.len() - pos,
            );
        };
        let mut at = pos;
        for e in &out.extents[first..] {
            seg.record(at, e);
            at += e.len as usize;
        }
        pos += n;
    }
    (seg.full.into_iter().map(|f| f as u32).collect(), 0)
}

/// Bits of the prefilter in front of the hash table (1 MiB of hashes would fill it
/// little: a segment holds a few thousand pclusters).
const FILTER_WORDS: usize = 1 << 12;
/// The rolling hash's base (odd).
const BASE: u64 = 0x100_0000_01b3;

/// What [`compress_segment_sharing`] knows of the segment so far.
struct Segment<'a> {
    src: &'a [u8],
    blksz: usize,
    max_extent: usize,
    at_end: bool,
    /// Per extent of `out`: where its decoded bytes start in `src`.
    starts: Vec<usize>,
    /// Per extent: how many bytes its pcluster decodes to (more than the extent's length
    /// when partial).
    full: Vec<usize>,
    /// Rolling hash of the first block of each compressed pcluster's output -> the first
    /// extent that owns it.
    heads: HashMap<u64, usize>,
    filter: Vec<u64>,
    /// Extents may take a prefix of a pcluster ([`partial_ok`]).
    partial_ok: bool,
}

/// Whether extents of `algorithm` may take a prefix of a pcluster's output (PARTIAL_REF).
/// Linux decodes a prefix of every algorithm; erofs-reader decodes MicroLZMA only whole,
/// and an image it cannot check is not written.
fn partial_ok(algorithm: Algorithm) -> bool {
    algorithm != Algorithm::Lzma
}

impl Segment<'_> {
    /// Rolling hash of `w` bytes: sum of `b[i] * BASE^i`.
    fn hash(b: &[u8]) -> u64 {
        b.iter().rev().fold(0u64, |h, &x| {
            h.wrapping_mul(BASE).wrapping_add(u64::from(x))
        })
    }

    fn filter_bit(h: u64) -> (usize, u64) {
        let k = (h >> 20) as usize % (FILTER_WORDS * 64);
        (k / 64, 1 << (k % 64))
    }

    /// Notes extent `e`, just compressed, decoding `src[at..]`.
    fn record(&mut self, at: usize, e: &Extent) {
        self.starts.push(at);
        self.full.push(e.len as usize);
        if !e.raw && e.len as usize >= self.blksz {
            let h = Self::hash(&self.src[at..at + self.blksz]);
            let k = self.starts.len() - 1;
            if let std::collections::hash_map::Entry::Vacant(v) = self.heads.entry(h) {
                v.insert(k);
                let (w, bit) = Self::filter_bit(h);
                self.filter[w] |= bit;
            }
        }
    }

    /// Tries to continue at `pos` (or before it, shortening the previous extent) with a
    /// pcluster already in `out`; returns where the shared extent ends.
    fn share(&mut self, pos: usize, out: &mut Compressed) -> Option<usize> {
        let (src, w) = (self.src, self.blksz);
        let mask = w - 1;
        let prev = *out.extents.last()?;
        if self.heads.is_empty() || src.len() < w {
            return None;
        }
        let prev_start = *self.starts.last()?;
        // How far back into the previous extent (which ends at `pos`) a match may start:
        // a compressed one keeps a block at least, and what its indexes need (to reach
        // the next lcluster; two with several blocks, for the CBLKCNT).
        let lo = if prev.raw {
            pos
        } else {
            let need = if prev.blocks > 1 { 2 } else { 1 };
            let min_len = w.max(need * w - (prev_start & mask));
            (prev_start + min_len).min(pos)
        };
        let mut cur = pos.min(src.len() - w);
        if cur < lo {
            return None;
        }
        // BASE^(w-1), to take the last byte out when stepping back.
        let top = (1..w).fold(1u64, |p, _| p.wrapping_mul(BASE));
        let mut h = Self::hash(&src[cur..cur + w]);
        loop {
            let (wi, bit) = Self::filter_bit(h);
            if self.filter[wi] & bit != 0
                && let Some(&k) = self.heads.get(&h)
                && let Some(end) = self.try_at(cur, k, pos, out)
            {
                return Some(end);
            }
            if cur == lo {
                return None;
            }
            // Step back one byte: drop src[cur + w - 1], add src[cur - 1] in front.
            h = h.wrapping_sub(u64::from(src[cur + w - 1]).wrapping_mul(top));
            h = h.wrapping_mul(BASE).wrapping_add(u64::from(src[cur - 1]));
            cur -= 1;
        }
    }

    /// Whether the bytes at `cur` start with the output of extent `k`'s pcluster; if so
    /// (and the indexes can say it), adds the shared extent and returns its end.
    fn try_at(&mut self, cur: usize, k: usize, pos: usize, out: &mut Compressed) -> Option<usize> {
        let (src, w) = (self.src, self.blksz);
        let bits = w.trailing_zeros();
        let mask = w - 1;
        let (ostart, ofull) = (self.starts[k], self.full[k]);
        let old = &src[ostart..ostart + ofull];
        let limit = (src.len() - cur).min(ofull).min(self.max_extent);
        let m = old[..limit]
            .iter()
            .zip(&src[cur..cur + limit])
            .position(|(a, b)| a != b)
            .unwrap_or(limit);
        if m < w {
            return None;
        }
        let owner = out.extents[k];
        let ends_file = self.at_end && cur + m == src.len();
        let crossed = ((cur & mask) + m) >> bits;
        // A non-final extent reaches the next lcluster; a pcluster of several blocks needs
        // the NONHEAD after its HEAD for its block count.
        if (crossed < 1 && !ends_file) || (owner.blocks > 1 && crossed < 2) {
            return None;
        }
        let delta = pos - cur;
        // A match must reach past `pos`: taking bytes back from the previous extent
        // without covering more than them only moves the cut (mkfs.erofs's rule too).
        if m <= delta || (!self.partial_ok && (delta > 0 || m < ofull)) {
            return None;
        }
        let last = out.extents.len() - 1;
        if delta > 0 {
            // The previous extent gives up its last `delta` bytes (checked by `share`).
            let p = &mut out.extents[last];
            p.len -= delta as u32;
            p.partial = true;
        }
        let e = Extent {
            len: m as u32,
            blk: owner.blk,
            blocks: owner.blocks,
            raw: false,
            partial: m < ofull,
        };
        out.extents.push(e);
        self.starts.push(cur);
        self.full.push(ofull);
        Some(cur + m)
    }
}

/// The absolute block a pcluster gets when written next.
fn blk_of(next: u64, written: u64) -> u32 {
    (next + written) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end of a file's last segment cut with `-E dedupe` and no fragment.
    fn sharing_end() -> SegmentEnd {
        SegmentEnd {
            last: true,
            raw_by_block: true,
            ..SegmentEnd::default()
        }
    }

    /// A xorshift64 stream: deterministic test data.
    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// Letters of a 16-letter alphabet, at random: half of each byte compresses away.
    fn letters(seed: u64, len: usize) -> Vec<u8> {
        let mut next = xorshift(seed);
        (0..len).map(|_| b'a' + (next() >> 60) as u8).collect()
    }

    /// Words of a small vocabulary (LZ4 compresses them to about a third).
    fn words(seed: u64, len: usize) -> Vec<u8> {
        const VOCAB: [&[u8]; 8] = [
            b"erofs",
            b"pcluster",
            b"extent",
            b"block",
            b"the",
            b"of",
            b"data",
            b"file",
        ];
        let mut next = xorshift(seed);
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            out.extend_from_slice(VOCAB[(next() >> 20) as usize % VOCAB.len()]);
            out.push(b' ');
        }
        out.truncate(len);
        out
    }

    /// Cuts `src` with sharing and checks what the indexes will need: extents cover the
    /// segment in order; each pcluster is stored once; an extent on an earlier pcluster
    /// decodes a prefix of that pcluster's output (`partial` exactly when shorter); every
    /// extent but the last reaches the next lcluster, two when its pcluster has several
    /// blocks. Returns the extents on earlier pclusters and the bytes stored.
    fn check(src: &[u8], blksz: usize, pcluster: usize) -> (usize, usize) {
        let c = Compressor::Lz4;
        let mut out = Compressed::default();
        let fulls = compress_segment_sharing(
            c,
            src,
            blksz,
            pcluster,
            12 << 20,
            sharing_end(),
            &mut out,
            &mut Vec::new(),
        )
        .0;
        assert_eq!(fulls.len(), out.extents.len());
        let mut at = 0usize;
        let mut owner: HashMap<u32, (usize, usize)> = HashMap::new();
        let mut shared = 0;
        for (k, e) in out.extents.iter().enumerate() {
            let len = e.len as usize;
            match owner.get(&e.blk) {
                None => {
                    owner.insert(e.blk, (at, fulls[k] as usize));
                    assert_eq!(e.partial, len < fulls[k] as usize, "extent {k}");
                }
                Some(&(start, full)) => {
                    shared += 1;
                    assert!(len <= full, "extent {k}");
                    assert_eq!(src[at..at + len], src[start..start + len], "extent {k}");
                    assert_eq!(e.partial, len < full, "extent {k}");
                }
            }
            let crossed = ((at % blksz) + len) / blksz;
            if k + 1 < out.extents.len() {
                assert!(crossed >= 1, "extent {k} stays in one lcluster");
                if e.blocks > 1 {
                    assert!(crossed >= 2, "extent {k}: no room for its CBLKCNT");
                }
            }
            at += len;
        }
        assert_eq!(at, src.len());
        // Each pcluster is stored once.
        let blocks: u32 = owner
            .keys()
            .map(|b| out.extents.iter().find(|e| e.blk == *b).unwrap().blocks)
            .sum();
        assert_eq!(blocks as usize * blksz, out.data.len());
        (shared, out.data.len())
    }

    #[test]
    fn a_repeated_run_is_stored_about_once() {
        let run = words(7, 65_536);
        let mut src = words(8, 10_000);
        for _ in 0..4 {
            src.extend_from_slice(&run);
        }
        src.extend_from_slice(&words(9, 5_000));
        for (blksz, pcluster) in [(4096, 4096), (4096, 16384), (1024, 1024), (512, 4096)] {
            let (shared, stored) = check(&src, blksz, pcluster);
            let mut plain = Compressed::default();
            crate::compress::compress_segment(
                Compressor::Lz4,
                &src,
                blksz,
                pcluster,
                12 << 20,
                true,
                &mut plain,
                &mut vec![0; pcluster],
            );
            assert!(shared > 0, "{blksz}/{pcluster}");
            // Three of the four copies cost (almost) nothing.
            assert!(
                stored < plain.data.len() * 3 / 5,
                "{blksz}/{pcluster}: {stored} of {}",
                plain.data.len()
            );
        }
    }

    #[test]
    fn a_match_inside_the_pcluster_just_cut_is_taken_only_if_it_reaches_past_it() {
        // LZ4HC keeps a run repeated eight times, and what follows, in one pcluster.
        // Cutting that pcluster back to point its last copies at its own start would
        // store the same bytes again after the cut and waste the pcluster's tail: sharing
        // must not cost more than cutting plainly.
        let run = letters(7, 20_000);
        let mut src = Vec::new();
        for _ in 0..8 {
            src.extend_from_slice(&run);
        }
        src.extend_from_slice(&letters(11, 200_000));
        let c = Compressor::parse("lz4hc,12").unwrap().resolved(4096);
        let mut plain = Compressed::default();
        crate::compress::compress_segment(
            c,
            &src,
            4096,
            65_536,
            12 << 20,
            true,
            &mut plain,
            &mut vec![0; 65_536],
        );
        let mut shared = Compressed::default();
        compress_segment_sharing(
            c,
            &src,
            4096,
            65_536,
            12 << 20,
            sharing_end(),
            &mut shared,
            &mut Vec::new(),
        );
        assert!(
            shared.data.len() <= plain.data.len(),
            "{} bytes stored with sharing, {} without",
            shared.data.len(),
            plain.data.len()
        );
    }

    #[test]
    fn microlzma_shares_only_whole_pclusters() {
        // erofs-reader decodes MicroLZMA only whole: no extent takes a prefix.
        let run = words(7, 65_536);
        let mut src = words(8, 10_000);
        for _ in 0..4 {
            src.extend_from_slice(&run);
        }
        let c = Compressor::parse("lzma,0").unwrap().resolved(4096);
        let mut out = Compressed::default();
        let (fulls, _) = compress_segment_sharing(
            c,
            &src,
            4096,
            4096,
            6267,
            sharing_end(),
            &mut out,
            &mut Vec::new(),
        );
        assert!(out.extents.iter().all(|e| !e.partial));
        assert!(
            out.extents.iter().zip(&fulls).all(|(e, &f)| e.len == f),
            "an extent shorter than its pcluster's output"
        );
    }

    #[test]
    fn data_without_repeats_is_cut_as_without_dedupe() {
        let src = words(3, 300_000);
        let mut plain = Compressed::default();
        crate::compress::compress_segment(
            Compressor::Lz4,
            &src,
            4096,
            16384,
            12 << 20,
            true,
            &mut plain,
            &mut vec![0; 16384],
        );
        let mut shared = Compressed::default();
        compress_segment_sharing(
            Compressor::Lz4,
            &src,
            4096,
            16384,
            12 << 20,
            sharing_end(),
            &mut shared,
            &mut Vec::new(),
        );
        assert_eq!(plain.extents, shared.extents);
        assert_eq!(plain.data, shared.data);
    }
}
