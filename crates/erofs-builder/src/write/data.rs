//! The data stage: the data area, file contents and directory and symlink blocks, read,
//! hashed and written in parallel jobs at the offsets the plan fixed.
//!
//! A job reads consecutive files with data blocks into one block-aligned buffer, hashing
//! each file as it is read, or reads one piece of a large file. Each byte is read once.
//! Only the inline tails of files with data blocks (each under a block) wait for the
//! metadata stage.
//!
//! Into a seekable file every job writes its buffer at its planned offset itself, so nothing
//! runs in order. A large file is hashed by the one job that owns it, reading it front to
//! back; different large files hash in parallel, and they are started first so that the
//! longest jobs do not end the stage alone. Without fingerprints a large file is cut into
//! pieces that run in parallel. Into a stream, buffers are written strictly in job order by
//! whichever worker holds the writer's turn; the pieces of a large file are read in parallel
//! and hashed at that turn, in order.

use std::io::Write;
use std::ops::Range;

use erofs_format::DataLayout;
use sha2::{Digest, Sha256};

use super::{DataCtx, DataOut, Out, WriteAt, encode_dir};
use crate::BuildError;
use crate::Progress;
use crate::layout::{InodePlan, Plan};
use crate::pipeline::{BufPool, run_ordered, run_unordered};
use crate::read::{DirCache, OpenOnce, Source, hash_zeros};
use crate::tree::{DataSource, Kind, Tree};

/// Bytes of file data gathered into one job.
const JOB_BYTES: u64 = 1 << 20;
/// Files per job at most.
const JOB_FILES: usize = 256;
/// Files at least this large are read in pieces, by several jobs, or (when hashed into a
/// seekable output) by one job of their own.
const BIG_FILE: u64 = 4 << 20;
/// Piece size for large files (a multiple of every block size).
const PIECE: u64 = 1 << 20;

/// One unit of work of the data stage.
enum DataJob {
    /// Consecutive inodes, in image order, each with data blocks and smaller than
    /// [`BIG_FILE`]: read whole into one buffer.
    Files(Vec<usize>),
    /// The file bytes `range` of regular file `inode`, a piece of a large or sparse file.
    /// The last piece of a file also reads its inline tail and checks its size. `file`
    /// indexes the file's [`OpenOnce`], so that every piece reads the same open file.
    Piece {
        inode: usize,
        range: Range<u64>,
        last: bool,
        file: usize,
    },
    /// All of large or sparse file `inode`, read front to back and hashed by one job that
    /// writes each piece at its place.
    Whole(usize),
}

/// What a data job hands to the writing thread.
struct DataDone {
    /// `buf[..len]` is written to the image; the buffer then goes back to the pool.
    buf: Vec<u8>,
    len: usize,
    /// Per-file results of a [`DataJob::Files`] job: inode, inline tail, digest.
    files: Vec<(usize, Vec<u8>, Option<[u8; 32]>)>,
    /// For a piece: where it belongs in its file, for the digest.
    piece: Option<PieceDone>,
}

struct PieceDone {
    inode: usize,
    /// File offset of the piece's first byte.
    start: u64,
    /// Data bytes in the piece (the rest of `len` is block padding).
    data: usize,
    /// The last piece carries the inline tail (empty if none).
    last: Option<Vec<u8>>,
}

/// Whether the writer must hash this inode's content for its fingerprint (with
/// fingerprints on): not when its source already did.
fn needs_hash(inode: &crate::tree::Inode) -> bool {
    matches!(&inode.kind, Kind::Regular(c) if c.known_digest().is_none())
}

/// Inodes handled by the data stage: those with blocks in the data area.
fn needs_data(inode: &crate::tree::Inode, p: &InodePlan) -> bool {
    match &inode.kind {
        Kind::Regular(c) => {
            c.size > 0
                && !matches!(c.source, DataSource::Blob(_))
                && (p.data_blocks > 0 || p.chunk.as_ref().is_some_and(|ch| ch.device.is_none()))
        }
        Kind::Directory { .. } | Kind::Symlink(_) => p.data_blocks > 0,
        _ => false,
    }
}

/// The data stage's jobs, in image order, and the shared handles of the files read in pieces.
/// With `whole`, a large file is one [`DataJob::Whole`] job instead of pieces.
fn data_jobs(tree: &Tree, plan: &Plan, whole: bool) -> (Vec<DataJob>, Vec<OpenOnce>) {
    let blksz = plan.blksz();
    let mut jobs = Vec::new();
    let mut opened = Vec::new();
    let mut files = Vec::new();
    let mut bytes = 0u64;
    for (i, inode) in tree.inodes.iter().enumerate() {
        let p = &plan.inodes[i];
        if !needs_data(inode, p) {
            continue;
        }
        let big = match &inode.kind {
            Kind::Regular(c) => c.size >= BIG_FILE || p.chunk.is_some(),
            _ => false,
        };
        if !big {
            let size = p.data_blocks * blksz;
            // A job stays near JOB_BYTES (a single file may exceed it, up to BIG_FILE), so
            // that the window bounds memory.
            if !files.is_empty() && (bytes + size > JOB_BYTES || files.len() >= JOB_FILES) {
                jobs.push(DataJob::Files(std::mem::take(&mut files)));
                bytes = 0;
            }
            files.push(i);
            bytes += size;
            continue;
        }
        if !files.is_empty() {
            jobs.push(DataJob::Files(std::mem::take(&mut files)));
            bytes = 0;
        }
        if whole && needs_hash(inode) {
            jobs.push(DataJob::Whole(i));
            continue;
        }
        let first = jobs.len();
        let file = opened.len();
        for range in pieces(plan, i) {
            jobs.push(DataJob::Piece {
                inode: i,
                range,
                last: false,
                file,
            });
        }
        if jobs.len() == first {
            // All holes: one empty piece still checks the size and finishes the digest.
            jobs.push(DataJob::Piece {
                inode: i,
                range: 0..0,
                last: true,
                file,
            });
        } else if let Some(DataJob::Piece { last, .. }) = jobs.last_mut() {
            *last = true;
        }
        opened.push(OpenOnce::new(jobs.len() - first));
    }
    if !files.is_empty() {
        jobs.push(DataJob::Files(files));
    }
    (jobs, opened)
}

/// The file ranges of large file `i` stored in data blocks, cut into pieces of at most
/// [`PIECE`] bytes, in file order. A piece never spans two chunks.
fn pieces(plan: &Plan, i: usize) -> impl Iterator<Item = Range<u64>> + '_ {
    let p = &plan.inodes[i];
    let whole = if p.layout == DataLayout::FlatInline {
        0..p.data_blocks * plan.blksz()
    } else {
        0..p.size
    };
    let ranges = match &p.chunk {
        Some(ch) => ch.data_chunks.clone(),
        None => vec![whole],
    };
    ranges.into_iter().flat_map(|r| {
        (r.start..r.end)
            .step_by(PIECE as usize)
            .map(move |at| at..(at + PIECE).min(r.end))
    })
}

/// The image offset of byte `at` of file `i`, which lies in a data block.
fn data_offset(plan: &Plan, i: usize, at: u64) -> u64 {
    let p = &plan.inodes[i];
    let blk = match &p.chunk {
        Some(ch) => {
            let ci = (at >> ch.chunkbits) as usize;
            return (u64::from(ch.table[ci]) << plan.blkszbits)
                + (at - ((ci as u64) << ch.chunkbits));
        }
        None => u64::from(p.startblk),
    };
    (blk << plan.blkszbits) + at
}

/// The image offset where a data job's buffer goes.
fn job_offset(plan: &Plan, job: &DataJob) -> u64 {
    match job {
        DataJob::Files(list) => u64::from(plan.inodes[list[0]].startblk) << plan.blkszbits,
        DataJob::Piece { inode, range, .. } => data_offset(plan, *inode, range.start),
        DataJob::Whole(inode) => data_offset(plan, *inode, 0),
    }
}

pub(super) fn write_data(
    ctx: DataCtx<'_>,
    buffers: &BufPool,
    out: &mut Out<'_>,
    progress: &dyn Progress,
) -> Result<DataOut, BuildError> {
    match out {
        Out::At(file) => write_data_at(ctx, buffers, *file, progress),
        Out::Stream(w) => write_data_stream(ctx, buffers, *w, progress),
    }
}

/// Small per-job results of the positioned data stage.
#[derive(Default)]
struct JobResult {
    /// Inline tails and digests: (inode, tail, digest).
    files: Vec<(usize, Vec<u8>, Option<[u8; 32]>)>,
    /// Regular-file bytes read.
    bytes: u64,
}

/// The data stage into a seekable file: every job writes its own bytes; nothing is ordered.
fn write_data_at(
    ctx: DataCtx<'_>,
    buffers: &BufPool,
    file: &dyn WriteAt,
    progress: &dyn Progress,
) -> Result<DataOut, BuildError> {
    let (tree, plan) = (ctx.tree, ctx.plan);
    let (jobs, opened) = data_jobs(tree, plan, ctx.hash);
    // The longest jobs (whole large files) first, largest first, so that they overlap with
    // everything else instead of running alone at the end.
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&k| match &jobs[k] {
        DataJob::Whole(i) => (0, std::cmp::Reverse(plan.inodes[*i].size), k),
        _ => (1, std::cmp::Reverse(0), k),
    });
    let results = run_unordered(jobs.len(), ctx.threads, ctx.clock, |k| {
        progress.check_cancelled()?;
        let job = &jobs[order[k]];
        let at = job_offset(plan, job);
        let done = match job {
            DataJob::Files(list) => run_files(ctx, list, buffers)?,
            DataJob::Piece {
                inode,
                range,
                last,
                file: f,
            } => run_piece(ctx, *inode, range.clone(), *last, &opened[*f], buffers)?,
            DataJob::Whole(inode) => return run_whole(ctx, *inode, buffers, file, progress),
        };
        file.put_at(&done.buf[..done.len], at)
            .map_err(BuildError::Output)?;
        let mut r = JobResult::default();
        let (mut nfiles, mut holes) = (0u64, 0u64);
        for (i, tail, digest) in done.files {
            if let Kind::Regular(c) = &tree.inodes[i].kind {
                nfiles += 1;
                r.bytes += c.size;
            }
            r.files.push((i, tail, digest));
        }
        if let Some(piece) = done.piece {
            r.bytes += piece.data as u64;
            if let Some(tail) = piece.last {
                nfiles += 1;
                r.bytes += tail.len() as u64;
                holes = hole_bytes(ctx, piece.inode);
                r.files.push((piece.inode, tail, None));
            }
        }
        buffers.put(done.buf);
        progress.advance(nfiles, r.bytes + holes);
        Ok(r)
    })?;
    let n = tree.inodes.len();
    let mut out = DataOut::new(n);
    ctx.clock.in_order(|| {
        for r in results {
            out.bytes += r.bytes;
            for (i, tail, digest) in r.files {
                out.tails[i] = tail;
                out.digests[i] = digest;
            }
        }
    });
    Ok(out)
}

/// Bytes of sparse file `i` that are holes (never read, but counted as done).
fn hole_bytes(ctx: DataCtx<'_>, i: usize) -> u64 {
    match (&ctx.tree.inodes[i].kind, &ctx.plan.inodes[i].chunk) {
        (Kind::Regular(c), Some(ch)) => {
            c.size - ch.data_chunks.iter().map(|r| r.end - r.start).sum::<u64>()
        }
        _ => 0,
    }
}

/// A [`DataJob::Whole`] job: reads large file `i` front to back one piece at a time, hashes
/// it and writes each piece at its place.
fn run_whole(
    ctx: DataCtx<'_>,
    i: usize,
    buffers: &BufPool,
    file: &dyn WriteAt,
    progress: &dyn Progress,
) -> Result<JobResult, BuildError> {
    let Kind::Regular(c) = &ctx.tree.inodes[i].kind else {
        unreachable!("only regular files are read whole")
    };
    let p = &ctx.plan.inodes[i];
    let blksz = ctx.plan.blksz() as usize;
    let src = Source::open(c, &mut DirCache::default())?;
    let mut hasher = (ctx.hash && c.known_digest().is_none()).then(Sha256::new);
    let mut buf = buffers.get(PIECE as usize);
    let mut pos = 0u64;
    let mut bytes = 0u64;
    for range in pieces(ctx.plan, i) {
        progress.check_cancelled()?;
        let data = (range.end - range.start) as usize;
        let len = data.next_multiple_of(blksz);
        src.read_exact_at(&mut buf[..data], range.start, c.size)?;
        buf[data..len].fill(0);
        if let Some(h) = &mut hasher {
            hash_zeros(h, range.start - pos);
            h.update(&buf[..data]);
        }
        pos = range.end;
        file.put_at(&buf[..len], data_offset(ctx.plan, i, range.start))
            .map_err(BuildError::Output)?;
        bytes += data as u64;
        progress.advance(0, data as u64);
    }
    buffers.put(buf);
    let tail_from = if p.layout == DataLayout::FlatInline {
        p.data_blocks * ctx.plan.blksz()
    } else {
        c.size
    };
    let tail = src.read_end(tail_from, c.size)?;
    let digest = hasher.map(|mut h| {
        h.update(&tail);
        hash_zeros(&mut h, c.size - pos - tail.len() as u64);
        h.finalize().into()
    });
    bytes += tail.len() as u64;
    progress.advance(1, tail.len() as u64 + hole_bytes(ctx, i));
    Ok(JobResult {
        files: vec![(i, tail, digest)],
        bytes,
    })
}

/// The data stage into a stream: buffers are written in image order.
fn write_data_stream(
    ctx: DataCtx<'_>,
    buffers: &BufPool,
    w: &mut (dyn Write + Send),
    progress: &dyn Progress,
) -> Result<DataOut, BuildError> {
    let (tree, plan) = (ctx.tree, ctx.plan);
    let n = tree.inodes.len();
    let mut out = DataOut::new(n);
    let (jobs, opened) = data_jobs(tree, plan, false);
    let mut written = 0u64;
    let mut hasher = PieceHasher::default();
    run_ordered(
        jobs.len(),
        ctx.threads,
        ctx.window(),
        ctx.clock,
        |k| {
            progress.check_cancelled()?;
            match &jobs[k] {
                DataJob::Files(list) => run_files(ctx, list, buffers),
                DataJob::Piece {
                    inode,
                    range,
                    last,
                    file,
                } => run_piece(ctx, *inode, range.clone(), *last, &opened[*file], buffers),
                DataJob::Whole(_) => unreachable!("a stream reads large files in pieces"),
            }
        },
        |done| {
            w.write_all(&done.buf[..done.len])
                .map_err(BuildError::Output)?;
            written += done.len as u64;
            let (mut nfiles, mut nbytes, mut holes) = (0u64, 0u64, 0u64);
            for (i, tail, digest) in done.files {
                if let Kind::Regular(c) = &tree.inodes[i].kind {
                    nfiles += 1;
                    nbytes += c.size;
                }
                out.tails[i] = tail;
                out.digests[i] = digest;
            }
            match done.piece {
                Some(piece) => {
                    let Kind::Regular(c) = &tree.inodes[piece.inode].kind else {
                        unreachable!("only regular files are read in pieces")
                    };
                    nbytes += piece.data as u64;
                    if let Some(tail) = &piece.last {
                        nfiles += 1;
                        nbytes += tail.len() as u64;
                        out.tails[piece.inode] = tail.clone();
                        // Holes are never read, but the bar counts them as done.
                        holes = hole_bytes(ctx, piece.inode);
                    }
                    if ctx.hash && c.known_digest().is_none() {
                        hasher.feed(&done.buf[..piece.data], &piece, c.size);
                    }
                    buffers.put(done.buf);
                }
                None => buffers.put(done.buf),
            }
            out.bytes += nbytes;
            progress.advance(nfiles, nbytes + holes);
            Ok(())
        },
    )?;
    for (i, d) in hasher.digests {
        out.digests[i] = Some(d);
    }
    debug_assert_eq!(written, (plan.meta_start - plan.data_start) * plan.blksz());
    Ok(out)
}

/// Digests of files read in pieces, fed in image order. Holes (the parts of sparse files
/// between pieces) hash as zeroes.
#[derive(Default)]
struct PieceHasher {
    current: Option<(usize, Sha256, u64)>,
    digests: Vec<(usize, [u8; 32])>,
}

impl PieceHasher {
    fn feed(&mut self, data: &[u8], piece: &PieceDone, size: u64) {
        let (inode, h, pos) = self
            .current
            .get_or_insert_with(|| (piece.inode, Sha256::new(), 0));
        debug_assert_eq!(*inode, piece.inode, "pieces of one file arrive together");
        hash_zeros(h, piece.start - *pos);
        h.update(data);
        *pos = piece.start + data.len() as u64;
        if let Some(tail) = &piece.last {
            h.update(tail);
            *pos += tail.len() as u64;
            hash_zeros(h, size - *pos);
            if let Some((inode, h, _)) = self.current.take() {
                self.digests.push((inode, h.finalize().into()));
            }
        }
    }
}
/// A [`DataJob::Files`] job: every file's data blocks, back to back, in one buffer.
fn run_files(ctx: DataCtx<'_>, list: &[usize], buffers: &BufPool) -> Result<DataDone, BuildError> {
    let (tree, plan) = (ctx.tree, ctx.plan);
    let blksz = plan.blksz() as usize;
    let total: usize = list
        .iter()
        .map(|&i| plan.inodes[i].data_blocks as usize * blksz)
        .sum();
    // Room for one more block: each file is read whole (tail included, plus a spare byte)
    // at its place, and the next file then overwrites the part past its blocks.
    let mut buf = buffers.get(total + blksz + 1);
    let mut files = Vec::with_capacity(list.len());
    let mut dirs = DirCache::default();
    let mut at = 0usize;
    for &i in list {
        let inode = &tree.inodes[i];
        let p = &plan.inodes[i];
        let full = p.data_blocks as usize * blksz;
        let inline = p.layout == DataLayout::FlatInline;
        let (tail, digest) = match &inode.kind {
            Kind::Regular(c) => {
                let size = c.size as usize;
                Source::open(c, &mut dirs)?.read_whole(&mut buf[at..at + size + 1])?;
                let digest = (ctx.hash && c.known_digest().is_none())
                    .then(|| Sha256::digest(&buf[at..at + size]).into());
                (place(&mut buf[at..], size, full, inline), digest)
            }
            Kind::Directory { parent, entries } => {
                let content = encode_dir(tree, plan, i, *parent, entries);
                buf[at..at + content.len()].copy_from_slice(&content);
                (place(&mut buf[at..], content.len(), full, inline), None)
            }
            Kind::Symlink(t) => {
                buf[at..at + t.len()].copy_from_slice(t);
                (place(&mut buf[at..], t.len(), full, inline), None)
            }
            _ => unreachable!("only files, directories and symlinks have data blocks"),
        };
        files.push((i, tail, digest));
        at += full;
    }
    debug_assert_eq!(at, total);
    Ok(DataDone {
        buf,
        len: total,
        files,
        piece: None,
    })
}

/// Content of `len` bytes sits at the start of `buf` and gets `full` bytes of data blocks:
/// an inline layout takes the rest out as the tail, a plain one pads the last block with
/// zeroes.
fn place(buf: &mut [u8], len: usize, full: usize, inline: bool) -> Vec<u8> {
    if inline {
        buf[full..len].to_vec()
    } else {
        buf[len..full].fill(0);
        Vec::new()
    }
}

/// A [`DataJob::Piece`] job.
fn run_piece(
    ctx: DataCtx<'_>,
    inode: usize,
    range: Range<u64>,
    last: bool,
    opened: &OpenOnce,
    buffers: &BufPool,
) -> Result<DataDone, BuildError> {
    let Kind::Regular(c) = &ctx.tree.inodes[inode].kind else {
        unreachable!("only regular files are read in pieces")
    };
    let p = &ctx.plan.inodes[inode];
    let data = (range.end - range.start) as usize;
    let len = data.next_multiple_of(ctx.plan.blksz() as usize);
    let mut buf = buffers.get(len);
    let src = opened.take(c)?;
    src.read_exact_at(&mut buf[..data], range.start, c.size)?;
    buf[data..len].fill(0);
    let last = if last {
        let tail_from = if p.layout == DataLayout::FlatInline {
            p.data_blocks * ctx.plan.blksz()
        } else {
            c.size
        };
        Some(src.read_end(tail_from, c.size)?)
    } else {
        None
    };
    Ok(DataDone {
        buf,
        len,
        files: Vec::new(),
        piece: Some(PieceDone {
            inode,
            start: range.start,
            data,
            last,
        }),
    })
}
