//! The compressed stage: compressed files' data, after the plain data and before the
//! metadata.
//!
//! Every file is cut into segments at fixed offsets (a multiple of the block size, from the
//! pcluster size alone). Workers read, hash and compress segments in parallel; the ordered
//! step only gives each segment's pclusters their address (the next free block) and writes
//! them there. A file of several segments is hashed by its segments in file order: each
//! segment waits for the one before it to have fed the file's hash (a chain per file,
//! run on the workers, not on the ordered step). Segments are handed out in order, so the
//! segment a worker waits for is always already running: no deadlock.
//!
//! A file of one segment that compression does not shrink (mkfs.erofs's rule: pclusters
//! plus the legacy index size reach the file size) is stored flat instead; a file of
//! several segments keeps its PLAIN pclusters, because its first segments are already
//! written when the last is compressed.

use std::ops::Range;
use std::sync::{Condvar, Mutex};

use sha2::{Digest, Sha256};

use super::fragments::{self, Packer, Piece};
use super::{BufPool, DirCache, OpenOnce, Source, WINDOW_PER_THREAD, dedupe};
use crate::compress::{
    CompressOptions, Compressed, Compressor, Extent, SegmentEnd, compress_segment_ext,
};
use crate::layout::{Fragment, Prelude, ZArea, ZFile, ZStored, compressible, inline_fits};
use crate::pipeline::{Clock, run_ordered_then};
use crate::tree::{Kind, Tree};
use crate::{BuildError, Fragments, Options, Progress};

/// What the compressed stage works from.
#[derive(Clone, Copy)]
pub(super) struct ZCtx<'a> {
    pub tree: &'a Tree,
    pub options: &'a Options,
    pub pre: &'a Prelude,
    /// Compute sha256 digests.
    pub hash: bool,
    pub threads: usize,
    pub clock: &'a Clock,
    /// The second pass with `-E fragments`: compress only this inode, the packed inode
    /// (which has no fragments of its own).
    pub packed: Option<usize>,
    /// The first block the stage writes.
    pub start: u64,
}

/// What the compressed stage produced.
pub(super) struct ZOut {
    pub area: ZArea,
    /// Digests of the files read here.
    pub digests: Vec<(usize, [u8; 32])>,
    /// Source bytes read.
    pub bytes: u64,
    /// With `-E fragments`: the packed inode's content (spill file and size), if any file
    /// got a fragment.
    pub packed: Option<(std::sync::Arc<std::fs::File>, u64)>,
}

/// Input bytes of small files gathered into one job.
const JOB_BYTES: u64 = 1 << 20;
/// Files per job at most.
const JOB_FILES: usize = 256;

/// One segment of a compressed file.
struct Seg {
    inode: usize,
    range: Range<u64>,
    /// Index of the file's [`Chain`] and [`OpenOnce`] when it has several segments.
    multi: Option<usize>,
}

/// The hash of a file of several segments, fed in segment order.
struct Chain {
    /// Bytes hashed so far, the hash (taken at the end), and whether a segment failed.
    state: Mutex<(u64, Option<Sha256>, bool)>,
    turn: Condvar,
}

impl Chain {
    fn new() -> Self {
        Self {
            state: Mutex::new((0, Some(Sha256::new()), false)),
            turn: Condvar::new(),
        }
    }

    /// A segment of the file failed: nobody waits for it any longer.
    fn fail(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).2 = true;
        self.turn.notify_all();
    }

    /// Feeds the segment starting at file offset `at`, once the file's hash has reached it.
    /// Returns the digest after the last segment (`end`).
    fn feed(&self, at: u64, data: &[u8], end: bool) -> Option<[u8; 32]> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.0 != at {
            if st.2 {
                // The build fails with that segment's error; this digest is never used.
                return None;
            }
            st = self.turn.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if let Some(h) = &mut st.1 {
            h.update(data);
        }
        st.0 += data.len() as u64;
        let digest = if end {
            st.1.take().map(|h| h.finalize().into())
        } else {
            None
        };
        self.turn.notify_all();
        digest
    }
}

/// What a job hands to the ordered step for one segment.
struct SegOut {
    inode: usize,
    /// Compressed pclusters, or (`flat`) the file's raw blocks.
    z: Compressed,
    /// Compression gained nothing: `z.data` holds the raw blocks, and this the inline tail.
    flat: Option<Vec<u8>>,
    /// The file's tail pcluster, stored inline (`-E ztailpacking`); the last extent of `z`
    /// is its extent.
    inline: Option<Vec<u8>>,
    digest: Option<[u8; 32]>,
    /// Source bytes read.
    bytes: u64,
    /// The file's last segment.
    last: bool,
    /// The segment's fragment (`-E fragments`): the file's tail or all of it; with a tail,
    /// the last extent of `z` is the fragment's.
    fragment: Option<Piece>,
    /// Where the segment starts in the file.
    at: u64,
    /// With `-E dedupe`: the length and digest of each pcluster's decoded bytes, on the
    /// first extent that uses it (`dedupe::extent_digests`), and the segment's bytes.
    dedupe: Option<dedupe::SegmentFacts>,
}

/// Writes the compressed files' data from the first data block on, and reports how each
/// file was stored.
pub(super) fn write_compressed(
    ctx: ZCtx<'_>,
    z: &CompressOptions,
    buffers: &BufPool,
    file: &dyn super::WriteAt,
    progress: &dyn Progress,
) -> Result<ZOut, BuildError> {
    let tree = ctx.tree;
    let blksz = 1u64 << ctx.options.blkszbits;
    let mut choices = file_choices(tree, z, blksz as u32);
    if let Some(p) = ctx.packed
        && z.packed_pcluster_bytes != 0
    {
        choices.packed = Some((p, (0, z.packed_pcluster_bytes)));
    }
    let compressors: Vec<Compressor> = (0..z.compressors.len())
        .map(|i| z.resolved(i, blksz as u32))
        .collect();
    let mut jobs: Vec<Vec<Seg>> = Vec::new();
    let mut small: Vec<Seg> = Vec::new();
    let mut small_bytes = 0;
    let mut multis = 0;
    let frag_mode = match ctx.packed {
        Some(_) => Fragments::Off,
        None => ctx.options.fragments(),
    };
    // Raw blocks are interlaced with fragments, as mkfs.erofs does, but not with dedupe (as
    // mkfs.erofs): an interlaced raw pcluster holds its bytes at one file offset's rotation,
    // so only an extent at the same rotation can share it.
    let interlaced = ctx.options.fragments() != Fragments::Off && !ctx.options.zlayout.dedupe;
    let fragdedupe = ctx.options.zlayout.fragdedupe;
    // Whole pclusters are shared between identical extents (the ordered step decides), but
    // not inside the packed inode, which holds each fragment once already.
    let share = ctx.packed.is_none() && ctx.options.zlayout.shares_pclusters();
    let inodes = match ctx.packed {
        Some(p) => p..p + 1,
        None => 0..tree.inodes.len(),
    };
    for i in inodes {
        let inode = &tree.inodes[i];
        let Kind::Regular(c) = &inode.kind else {
            continue;
        };
        // With fragments, mkfs.erofs tries every non-empty file: a small one is a fragment.
        let frag_any = frag_mode != Fragments::Off || ctx.packed.is_some();
        if !(compressible(inode, ctx.options) || frag_any && c.size > 0) {
            continue;
        }
        // Segments large enough for several pclusters, so that cutting costs little ratio.
        let seg_len = (4 * u64::from(choices.get(i).1)).max(4 << 20);
        if c.size <= seg_len {
            if !small.is_empty() && (small_bytes + c.size > JOB_BYTES || small.len() >= JOB_FILES) {
                jobs.push(std::mem::take(&mut small));
                small_bytes = 0;
            }
            small_bytes += c.size;
            small.push(Seg {
                inode: i,
                range: 0..c.size,
                multi: None,
            });
            continue;
        }
        if !small.is_empty() {
            jobs.push(std::mem::take(&mut small));
            small_bytes = 0;
        }
        for at in (0..c.size).step_by(seg_len as usize) {
            jobs.push(vec![Seg {
                inode: i,
                range: at..(at + seg_len).min(c.size),
                multi: Some(multis),
            }]);
        }
        multis += 1;
    }
    if !small.is_empty() {
        jobs.push(small);
    }
    let chains: Vec<Chain> = (0..multis).map(|_| Chain::new()).collect();
    let opened: Vec<OpenOnce> = {
        let mut counts = vec![0usize; multis];
        for s in jobs.iter().flatten() {
            if let Some(m) = s.multi {
                counts[m] += 1;
            }
        }
        counts.into_iter().map(OpenOnce::new).collect()
    };

    let work = |k: usize| -> Result<Vec<SegOut>, BuildError> {
        progress.check_cancelled()?;
        let mut outs = Vec::with_capacity(jobs[k].len());
        let mut dirs = DirCache::default();
        let mut scratch = Vec::new();
        for seg in &jobs[k] {
            let Kind::Regular(c) = &tree.inodes[seg.inode].kind else {
                unreachable!("only regular files are compressed")
            };
            let len = (seg.range.end - seg.range.start) as usize;
            let last = seg.range.end == c.size;
            let mut buf = buffers.get(len + 1);
            let digest = match seg.multi {
                None => {
                    Source::open(c, &mut dirs)?.read_whole(&mut buf[..len + 1])?;
                    (ctx.hash && c.known_digest().is_none())
                        .then(|| Sha256::digest(&buf[..len]).into())
                }
                Some(m) => {
                    let read = opened[m].take(c).and_then(|src| {
                        src.read_exact_at(&mut buf[..len], seg.range.start, c.size)?;
                        if last {
                            src.read_end(c.size, c.size)?;
                        }
                        Ok(())
                    });
                    if let Err(e) = read {
                        chains[m].fail();
                        return Err(e);
                    }
                    if ctx.hash && c.known_digest().is_none() {
                        chains[m].feed(seg.range.start, &buf[..len], last)
                    } else {
                        None
                    }
                }
            };
            let (which, pcluster) = choices.get(seg.inode);
            let compressor = compressors[which];
            let mut out = Compressed::default();
            let (b, p, m) = (blksz as usize, pcluster as usize, z.max_extent());
            let mut fulls = Vec::new();
            let frag_len = if frag_mode == Fragments::All {
                len
            } else if ctx.options.zlayout.dedupe && ctx.packed.is_none() {
                // Sharing inside the segment as mkfs.erofs cuts with dedupe: before each
                // pcluster, and before the tail becomes a fragment.
                let end = SegmentEnd {
                    last,
                    fragment: frag_mode == Fragments::Tails,
                    interlaced,
                    // mkfs.erofs stores incompressible data block by block under dedupe.
                    raw_by_block: true,
                };
                let frag;
                (fulls, frag) = dedupe::compress_segment_sharing(
                    compressor,
                    &buf[..len],
                    b,
                    p,
                    m,
                    end,
                    &mut out,
                    &mut scratch,
                );
                frag
            } else {
                let end = SegmentEnd {
                    last,
                    fragment: frag_mode == Fragments::Tails,
                    interlaced,
                    // The packed inode too, under dedupe (mkfs.erofs's rule is global).
                    raw_by_block: ctx.options.zlayout.dedupe,
                };
                compress_segment_ext(
                    compressor,
                    &buf[..len],
                    b,
                    p,
                    m,
                    end,
                    &mut out,
                    &mut scratch,
                )
            };
            let fragment = (frag_len > 0).then(|| {
                // An all-fragments file cut in segments is whole, piece by piece.
                let whole = frag_mode == Fragments::All || frag_len as u64 == c.size;
                if !whole {
                    // The tail's extent: its HEAD names the block after the pclusters, as
                    // an inline tail's does (compact packs derive addresses; nobody reads
                    // this one).
                    out.extents.push(Extent {
                        len: frag_len as u32,
                        blk: (out.data.len() as u64 / blksz) as u32,
                        blocks: 1,
                        raw: false,
                        partial: false,
                    });
                }
                Piece::new(
                    buf[len - frag_len..len].to_vec(),
                    whole,
                    frag_mode == Fragments::Tails || seg.multi.is_none(),
                    fragdedupe,
                )
            });
            let inline = if last && ctx.options.zlayout.ztailpacking && frag_mode == Fragments::Off
            {
                pack_tail(
                    compressor,
                    &buf[..len],
                    blksz as usize,
                    &mut out,
                    &mut scratch,
                    !interlaced,
                    |n| crate::layout::ztail_fits(ctx.pre, tree, seg.inode, ctx.options, n),
                )
            } else {
                None
            };
            let inline_len = inline.as_ref().map_or(0, |t| t.len() as u64);
            // mkfs.erofs's file-level rule: no gain over the raw size, index included.
            let legacy_meta = 16 + 8 * c.size.div_ceil(blksz);
            let flat = if seg.multi.is_none()
                && fragment.is_none()
                && out.data.len() as u64 + inline_len + legacy_meta >= c.size
            {
                // Stored flat: full blocks here, the tail inline if it fits its inode's
                // block (the plan makes the same decision from the same facts).
                let tail = c.size % blksz;
                let keep = if inline_fits(ctx.pre, tree, seg.inode, ctx.options, tail) {
                    len - tail as usize
                } else {
                    len
                };
                out.extents.clear();
                out.data.clear();
                out.data.extend_from_slice(&buf[..keep]);
                out.data.resize(keep.next_multiple_of(blksz as usize), 0);
                Some(buf[keep..len].to_vec())
            } else {
                None
            };
            let inline = if flat.is_some() { None } else { inline };
            let dedupe = if share && flat.is_none() {
                // A tail that is not a pcluster of the data area (inline or a fragment) is
                // left out.
                let tail = inline.is_some() || fragment.as_ref().is_some_and(|f| !f.whole);
                let d = dedupe::extent_digests(&buf[..len], &out.extents, &fulls, tail);
                // The ordered step keeps recent segments for prefix matches.
                let src = if ctx.options.zlayout.dedupe {
                    buf.truncate(len);
                    Some(std::sync::Arc::new(buf))
                } else {
                    buffers.put(buf);
                    None
                };
                Some(dedupe::SegmentFacts { digests: d, src })
            } else {
                buffers.put(buf);
                None
            };
            outs.push(SegOut {
                inode: seg.inode,
                z: out,
                flat,
                inline,
                digest,
                bytes: len as u64,
                last,
                fragment,
                at: seg.range.start,
                dedupe,
            });
        }
        Ok(outs)
    };

    let start = ctx.start;
    let mut next = start;
    let mut packer = match frag_mode {
        Fragments::Off => None,
        _ => Some(Packer::new(
            ctx.options,
            &ctx.pre.xattrs.prefixes.records(),
        )?),
    };
    // Each file's fragment offset (the first piece's, for a whole file cut in segments).
    let mut frag_at: Vec<Option<u64>> = Vec::new();
    if packer.is_some() {
        frag_at.resize(tree.inodes.len(), None);
    }
    let mut extents: Vec<Option<Vec<Extent>>> = Vec::new();
    extents.resize_with(tree.inodes.len(), || None);
    let mut zfiles: Vec<Option<ZStored>> = Vec::new();
    zfiles.resize_with(tree.inodes.len(), || None);
    let mut digests = Vec::new();
    let mut bytes_in = 0u64;
    let mut dedupe = share.then(|| {
        dedupe::Dedupe::new(
            ctx.options.blkszbits,
            z.big_pclusters(blksz as u32),
            ctx.options.zlayout.dedupe,
            interlaced,
        )
    });
    run_ordered_then(
        jobs.len(),
        ctx.threads,
        WINDOW_PER_THREAD * ctx.threads.max(1),
        ctx.clock,
        work,
        |outs| {
            let mut files = 0;
            let mut bytes = 0;
            // The ordered step assigns addresses; the bytes are written at them once the
            // turn has passed on (the `after` step below).
            let mut writes = Writes::default();
            for mut o in outs {
                let blocks = o.z.data.len() as u64 / blksz;
                if next + blocks > u64::from(u32::MAX) {
                    return Err(BuildError::TooLarge(
                        "block addresses exceed 32 bits; use a larger block size".into(),
                    ));
                }
                let algorithm = compressors[choices.get(o.inode).0].algorithm();
                let mut puts = Vec::new();
                let mut put = |bytes: Range<usize>, blk: u64| {
                    puts.push((bytes, blk * blksz));
                    Ok(())
                };
                // A file stored flat that pclusters already written decode is read from
                // them instead (its blocks are not written).
                let flat_shared = match (&dedupe, &o.flat) {
                    (Some(d), Some(tail)) if ctx.options.zlayout.dedupe => {
                        let mut content = o.z.data[..o.bytes as usize - tail.len()].to_vec();
                        content.extend_from_slice(tail);
                        d.flat_file(&content, algorithm)
                    }
                    _ => None,
                };
                if let Some(list) = flat_shared {
                    zfiles[o.inode] = Some(ZStored::Compressed(ZFile {
                        extents: list,
                        inline: None,
                        algorithm,
                        fragment: None,
                        interlaced,
                    }));
                    files += 1;
                    if let Some(d) = o.digest {
                        digests.push((o.inode, d));
                    }
                    bytes += o.bytes;
                    continue;
                }
                let (placed, blocks) = match (&mut dedupe, o.dedupe) {
                    (Some(d), Some(f)) => {
                        let (list, written) =
                            d.place(&o.z, &f.digests, f.src, algorithm, o.at, next, put)?;
                        (Some(list), written)
                    }
                    _ => {
                        put(0..o.z.data.len(), next)?;
                        (None, blocks)
                    }
                };
                if let Some(tail) = o.flat {
                    zfiles[o.inode] = Some(ZStored::Flat {
                        startblk: next as u32,
                        tail,
                    });
                } else {
                    let list = extents[o.inode].get_or_insert_with(Vec::new);
                    match placed {
                        Some(placed) => list.extend(placed),
                        None => list.extend(o.z.extents.iter().map(|e| Extent {
                            blk: e.blk + next as u32,
                            ..*e
                        })),
                    }
                }
                next += blocks;
                if !puts.is_empty() {
                    writes.image.push((std::mem::take(&mut o.z.data), puts));
                }
                let mut whole = false;
                if let (Some(p), Some(piece)) = (&mut packer, &o.fragment) {
                    let tail_at = o.at + o.bytes - piece.bytes.len() as u64;
                    let list = extents[o.inode].get_or_insert_with(Vec::new);
                    // A tail that a pcluster already written decodes becomes an extent on it.
                    let on_pcluster = match &dedupe {
                        Some(d) if frag_mode == Fragments::Tails => {
                            d.tail_extent(&piece.bytes, algorithm, tail_at)
                        }
                        _ => None,
                    };
                    match on_pcluster {
                        // The tail's extent is the segment's last (a whole-file piece has
                        // none).
                        Some(e) if piece.whole => list.push(e),
                        Some(e) => *list.last_mut().expect("a tail fragment has its extent") = e,
                        None => {
                            let at = p.place(piece)?;
                            frag_at[o.inode].get_or_insert(at);
                            whole = piece.whole;
                        }
                    }
                }
                if o.last {
                    files += 1;
                    if let Some(list) = extents[o.inode].take() {
                        let fragment = frag_at
                            .get(o.inode)
                            .copied()
                            .flatten()
                            .map(|offset| Fragment { offset, whole });
                        zfiles[o.inode] = Some(ZStored::Compressed(ZFile {
                            extents: if whole { Vec::new() } else { list },
                            inline: o.inline,
                            algorithm,
                            fragment,
                            interlaced,
                        }));
                    }
                }
                if let Some(d) = o.digest {
                    digests.push((o.inode, d));
                }
                bytes += o.bytes;
            }
            bytes_in += bytes;
            // The packed inode's bytes are the files' again: the bar counted them already.
            if ctx.packed.is_none() {
                progress.advance(files, bytes);
            }
            writes.spill = packer.as_mut().map(|p| p.take_writes());
            Ok(writes)
        },
        |writes: Writes| {
            for (data, puts) in &writes.image {
                for (range, at) in puts {
                    file.put_at(&data[range.clone()], *at)
                        .map_err(BuildError::Output)?;
                }
            }
            match writes.spill {
                Some(s) => s.write(),
                None => Ok(()),
            }
        },
    )?;
    Ok(ZOut {
        area: ZArea {
            blocks: next - start,
            files: zfiles,
            packed: ctx.packed,
        },
        digests,
        bytes: bytes_in,
        packed: match packer {
            Some(p) => p.finish()?,
            None => None,
        },
    })
}

/// A range of a segment's compressed bytes and the image offset it goes to.
type Put = (Range<usize>, u64);

/// What one ordered step leaves to write: compressed data (a segment's pclusters, and the
/// ranges of them that go to the image at byte offsets) and fragments for the spill file.
#[derive(Default)]
struct Writes {
    image: Vec<(Vec<u8>, Vec<Put>)>,
    spill: Option<fragments::SpillWrites>,
}

/// Which `-z` compressor and pcluster size each regular file gets.
struct Choices {
    /// Per inode when `--compress-hints` is given; empty otherwise.
    per_inode: Vec<(u8, u32)>,
    default: (u8, u32),
    /// The packed inode and its own choice (`-E fragments=BYTES`: the first algorithm).
    packed: Option<(usize, (u8, u32))>,
}

impl Choices {
    fn get(&self, inode: usize) -> (usize, u32) {
        let (i, p) = match self.packed {
            Some((packed, choice)) if packed == inode => choice,
            _ => self.per_inode.get(inode).copied().unwrap_or(self.default),
        };
        (usize::from(i), p)
    }
}

/// Matches every regular file's path against the hints (a file with several links: the
/// first of its paths this walk meets, a fixed order). The paths are relative to the source root, without a
/// leading `/`, as mkfs.erofs matches them.
fn file_choices(tree: &Tree, z: &CompressOptions, blksz: u32) -> Choices {
    let default = (0, z.pcluster_bytes(blksz));
    let mut per_inode = Vec::new();
    if !z.hints.is_empty() && !tree.inodes.is_empty() {
        per_inode = vec![None; tree.inodes.len()];
        // Depth first; each directory is entered once (the tree has no directory cycles,
        // and a directory has one parent).
        let mut stack: Vec<(usize, Vec<u8>)> = vec![(0, Vec::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let Kind::Directory { entries, .. } = &tree.inodes[dir].kind else {
                continue;
            };
            for e in entries {
                let mut path = prefix.clone();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(&e.name);
                match &tree.inodes[e.inode].kind {
                    Kind::Regular(_) if per_inode[e.inode].is_none() => {
                        let (i, p) = z.choose(&String::from_utf8_lossy(&path), blksz);
                        per_inode[e.inode] = Some((i as u8, p));
                    }
                    Kind::Directory { .. } if e.inode != dir => stack.push((e.inode, path)),
                    _ => {}
                }
            }
        }
    }
    Choices {
        per_inode: per_inode
            .into_iter()
            .map(|c| c.unwrap_or((0, default.1)))
            .collect(),
        default: (0, default.1),
        packed: None,
    }
}

/// `-E ztailpacking`, as mkfs.erofs cuts a file's end: the last extent of a file's last
/// segment (`src`, compressed into `out`) becomes a tail pcluster of less than one block,
/// stored inline after the file's indexes, when `fits` says the metadata block has room:
///
/// - a compressed last extent that fits one block is moved inline as it is;
/// - a larger one whose stream does not end on a block boundary is compressed again into
///   one block fewer, when what it leaves over then compresses into an inline tail and the
///   two together take less room (mkfs.erofs's "recompress trailing");
/// - a raw last piece (at most a block) is compressed into the tail if that gains, else
///   stored inline raw (a PLAIN tail) when shorter than a block and `raw_ok` (not in a file
///   whose raw pclusters are interlaced: Linux would take an inline PLAIN tail for an
///   interlaced block and rotate it).
///
/// Returns the tail's bytes; its extent is then `out`'s last, addressed right after the
/// segment's pclusters. Deterministic: it depends on the input only.
fn pack_tail(
    c: crate::compress::Compressor,
    src: &[u8],
    blksz: usize,
    out: &mut Compressed,
    scratch: &mut Vec<u8>,
    raw_ok: bool,
    fits: impl Fn(u64) -> bool,
) -> Option<Vec<u8>> {
    let last = *out.extents.last()?;
    // A last extent that `-E dedupe` pointed at an earlier pcluster, or that decodes only
    // part of its own, stays as it is.
    if last.partial || (last.blk + last.blocks) as usize * blksz != out.data.len() {
        return None;
    }
    let len = last.len as usize;
    let input = &src[src.len() - len..];
    let pstart = last.blk as usize * blksz;
    // The last extent's stream, as the compressor wrote it (0padding put zeroes in front,
    // and no stream starts with a zero byte).
    let stream = |data: &[u8]| -> Vec<u8> {
        let p = &data[pstart..];
        p[p.iter().position(|&b| b != 0).unwrap_or(p.len())..].to_vec()
    };
    // (a recompressed extent to keep in a pcluster, with its stream; the tail: its decoded
    // length, its bytes, raw)
    type TailPlan = (Option<(usize, Vec<u8>)>, (usize, Vec<u8>, bool));
    let tail_of = |input: &[u8], scratch: &mut Vec<u8>| -> Option<(usize, Vec<u8>, bool)> {
        scratch.resize(blksz, 0);
        match c.compress_fill(input, &mut scratch[..blksz - 1], None) {
            Some((read, wrote)) if read == input.len() && wrote < read => {
                Some((read, scratch[..wrote].to_vec(), false))
            }
            _ if raw_ok && input.len() < blksz => Some((input.len(), input.to_vec(), true)),
            _ => None,
        }
    };
    let plan: TailPlan = if last.raw {
        (None, tail_of(input, scratch)?)
    } else if last.blocks == 1 {
        let st = stream(&out.data);
        if st.len() >= blksz {
            return None;
        }
        (None, (len, st, false))
    } else {
        let wrote = stream(&out.data).len();
        if wrote.is_multiple_of(blksz) {
            return None;
        }
        let room = wrote / blksz * blksz;
        scratch.resize(room, 0);
        let (read, wrote2) = c.compress_fill(input, &mut scratch[..room], None)?;
        if read >= len || wrote2 + (len - read) >= wrote.next_multiple_of(blksz) {
            return None;
        }
        // The shorter extent must still gain (the writer's rule for every pcluster).
        if wrote2.next_multiple_of(blksz) >= read {
            return None;
        }
        let kept = scratch[..wrote2].to_vec();
        let tail = tail_of(&input[read..], scratch)?;
        (Some((read, kept)), tail)
    };
    let (kept, (tail_len, tail, raw)) = plan;
    if !fits(tail.len() as u64) {
        return None;
    }
    out.extents.pop();
    out.data.truncate(pstart);
    if let Some((read, kept)) = kept {
        let plen = kept.len().next_multiple_of(blksz);
        out.data.resize(pstart + plen, 0);
        out.data[pstart + plen - kept.len()..].copy_from_slice(&kept);
        out.extents.push(Extent {
            len: read as u32,
            blk: last.blk,
            blocks: (plen / blksz) as u32,
            raw: false,
            partial: false,
        });
    }
    out.extents.push(Extent {
        len: tail_len as u32,
        blk: (out.data.len() / blksz) as u32,
        blocks: 1,
        raw,
        partial: false,
    });
    Some(tail)
}
