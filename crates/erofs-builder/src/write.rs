//! The writer: puts the planned image on disk.
//!
//! Both stages cut their work into jobs of about a megabyte and run them on a pool of worker
//! threads (the `pipeline` module). Where the bytes go never depends on thread timing,
//! because the plan fixed every offset before the first byte was read:
//!
//! - **Data**: a job reads consecutive files with data blocks into one block-aligned buffer,
//!   hashing each file as it is read, or reads one piece of a large file. Each byte is read
//!   once. Only the inline tails of files with data blocks (each under a block) wait for the
//!   metadata stage.
//! - **Metadata**: a job encodes consecutive inode items (inode, xattr body with the
//!   fingerprint filled in, inline tail or chunk table) into one buffer, padding included;
//!   files that live entirely in their inode's block are read and hashed here, once.
//!
//! Two ways out:
//!
//! - **A seekable file** (the normal case): every job writes its buffer at its planned offset
//!   itself (positioned writes), so nothing runs in order and the image write is as parallel
//!   as the reads. A large file is hashed by the one job that owns it, reading it front to
//!   back; different large files hash in parallel, and they are started first so that the
//!   longest jobs do not end the stage alone. Without fingerprints a large file is cut into
//!   pieces that run in parallel.
//! - **A stream** (a pipe or any other writer): buffers are written strictly in job order by
//!   whichever worker holds the writer's turn; the pieces of a large file are read in
//!   parallel and hashed at that turn, in order.
//!
//! A stage whose output size is known only once it is produced (compressed data) fits the
//! same shape: its jobs compress in parallel, and only the assignment of addresses runs in
//! order (`pipeline::run_ordered`), with the copy or positioned write after it.
//!
//! Memory is bounded by the jobs in flight, not by the amount of data. Buffers go back to a
//! pool after they are written, so their pages are faulted in once.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use erofs_format::{DataLayout, InodeCompact, InodeExtended, InodeFormat, NULL_ADDR};
use sha2::{Digest, Sha256};
use zerocopy::IntoBytes;

use crate::layout::{InodePlan, Plan, ZStored, dir_names};
use crate::pipeline::{Clock, run_ordered, run_unordered};
use crate::tree::{DataSource, FileContent, Kind, Tree, ValidTree};
use crate::{BuildError, BuildReport, Options, Phase, Progress};

/// Bytes of file data gathered into one job.
const JOB_BYTES: u64 = 1 << 20;
/// Files per job at most.
const JOB_FILES: usize = 256;
/// Files at least this large are read in pieces, by several jobs, or (when hashed into a
/// seekable output) by one job of their own.
const BIG_FILE: u64 = 4 << 20;
/// Piece size for large files (a multiple of every block size).
const PIECE: u64 = 1 << 20;
/// Jobs in flight per worker thread; this bounds memory (about a megabyte each).
const WINDOW_PER_THREAD: usize = 4;
/// Inode items per metadata job.
const META_JOB: usize = 1024;

mod zdata;
use zdata::{ZCtx, write_compressed};

/// An image that takes positioned writes from any thread: a file, or a file whose bytes are
/// also hashed as they are written (the integrity stage).
pub trait WriteAt: Sync {
    /// Writes all of `bytes` at byte `at` of the image.
    fn put_at(&self, bytes: &[u8], at: u64) -> std::io::Result<()>;
}

impl WriteAt for File {
    fn put_at(&self, bytes: &[u8], at: u64) -> std::io::Result<()> {
        self.write_all_at(bytes, at)
    }
}

/// Where the image goes.
enum Out<'a> {
    /// A seekable file: jobs write at their planned offsets.
    At(&'a dyn WriteAt),
    /// A stream: bytes go out in image order.
    Stream(&'a mut (dyn Write + Send)),
}

impl Out<'_> {
    fn write(&mut self, at: u64, bytes: &[u8]) -> Result<(), BuildError> {
        match self {
            Self::At(f) => f.put_at(bytes, at),
            Self::Stream(w) => w.write_all(bytes),
        }
        .map_err(BuildError::Output)
    }
}

/// Plans the image of `tree` and writes it to the stream `out`, front to back. Returns the
/// number of bytes written.
pub fn build_image<W: Write + Send>(
    tree: &ValidTree,
    options: &Options,
    out: &mut W,
    progress: &dyn Progress,
    report: &mut BuildReport,
) -> Result<u64, BuildError> {
    let mut w = BufWriter::with_capacity(1 << 20, out);
    let n = build(tree, options, Out::Stream(&mut w), progress, report)?;
    w.flush().map_err(BuildError::Output)?;
    Ok(n)
}

/// Plans the image of `tree` and writes it into `out` from offset 0 with positioned writes,
/// in parallel. Returns the number of bytes written (the file is not truncated).
pub fn build_image_at(
    tree: &ValidTree,
    options: &Options,
    out: &dyn WriteAt,
    progress: &dyn Progress,
    report: &mut BuildReport,
) -> Result<u64, BuildError> {
    build(tree, options, Out::At(out), progress, report)
}

fn build(
    tree: &Tree,
    options: &Options,
    mut out: Out<'_>,
    progress: &dyn Progress,
    report: &mut BuildReport,
) -> Result<u64, BuildError> {
    if options.compression.is_some()
        && let Out::Stream(w) = &mut out
    {
        // Compressed sizes are known only once the data is compressed, and the superblock
        // and metadata come after: build into a spool file, then stream it.
        let spool = tempfile::tempfile().map_err(BuildError::Output)?;
        let n = build(tree, options, Out::At(&spool), progress, report)?;
        let mut r = std::io::BufReader::new(&spool);
        std::io::copy(&mut r, w).map_err(BuildError::Output)?;
        return Ok(n);
    }
    progress.phase(Phase::Plan);
    let clock = Clock::default();
    let threads = rayon::current_num_threads();
    let buffers = BufPool::new(WINDOW_PER_THREAD * threads.max(1) + 2);
    let pre = crate::layout::prelude(tree, options)?;
    let hash = pre.xattrs.prefixes.fingerprint_id().is_some();
    let (files, bytes) = tree
        .inodes
        .iter()
        .fold((0u64, 0u64), |(f, b), i| match &i.kind {
            Kind::Regular(c) if c.size > 0 => (f + 1, b + c.size),
            _ => (f, b),
        });
    progress.start(Some(files), Some(bytes));
    // Compressed files come first in the data area: their size is known only once they are
    // compressed, and everything after them is planned then.
    let z = match (&options.compression, &out) {
        (Some(z), Out::At(file)) => {
            progress.phase(Phase::Data);
            let zc = ZCtx {
                tree,
                options,
                pre: &pre,
                hash,
                threads,
                clock: &clock,
            };
            Some(write_compressed(zc, z, &buffers, *file, progress)?)
        }
        _ => None,
    };
    let plan = crate::layout::plan_with(tree, options, pre, z.as_ref().map(|z| &z.area))?;
    out.write(0, &head(&plan))?;
    let ctx = DataCtx {
        tree,
        plan: &plan,
        hash,
        threads,
        clock: &clock,
    };
    progress.phase(Phase::Data);
    let mut data = write_data(ctx, &buffers, &mut out, progress)?;
    if let Some(z) = z {
        data.bytes += z.bytes;
        for (i, d) in z.digests {
            data.digests[i] = Some(d);
        }
        for (i, f) in z.area.files.into_iter().enumerate() {
            if let Some(ZStored::Flat { tail, .. }) = &f {
                data.tails[i] = tail.clone();
            }
            data.zfiles.push(f);
        }
    }
    // Content its source hashed as it streamed (a tar spool region, a blob on an extra
    // device) is not hashed again: the data stage skipped it.
    for (i, inode) in tree.inodes.iter().enumerate() {
        if let Kind::Regular(c) = &inode.kind
            && let Some(d) = c.known_digest()
        {
            data.digests[i] = Some(d);
        }
    }
    progress.phase(Phase::Metadata);
    let mut late = Vec::new();
    write_meta(ctx, &buffers, &mut data, &mut out, progress, &mut late)?;
    for (i, d) in late {
        data.digests[i] = Some(d);
    }
    if plan.region_blocks > 0 {
        // The reserved region ends the image; a file gets it as a hole.
        let at = plan.total_blocks * plan.blksz();
        let len = plan.region_blocks * plan.blksz();
        match &mut out {
            Out::At(f) => f.put_at(&[0], at + len - 1).map_err(BuildError::Output)?,
            Out::Stream(w) => {
                let zeros = vec![0u8; 1 << 20];
                let mut left = len;
                while left > 0 {
                    let n = left.min(zeros.len() as u64) as usize;
                    w.write_all(&zeros[..n]).map_err(BuildError::Output)?;
                    left -= n as u64;
                }
            }
        }
        report.region_map = plan.region_map.clone();
    }
    for (i, inode) in tree.inodes.iter().enumerate() {
        if let (Kind::Regular(c), Some(d)) = (&inode.kind, data.digests[i])
            && let Some(old) = &c.old_fingerprint
            && old.as_slice() != erofs_format::xattr::sha256_fingerprint(&d).as_slice()
        {
            let path = match &c.source {
                DataSource::Path(p) => p.display().to_string(),
                DataSource::Bytes(_) => format!("inode {i}"),
                DataSource::At(d) => d.name.to_string(),
                DataSource::Blob(_) => format!("inode {i}"),
            };
            let msg =
                format!("{path}: existing fingerprint xattr differs from the content; replaced");
            progress.warning(&msg);
            report.warnings.push(msg);
        }
    }
    report.data_bytes = data.bytes;
    report.inodes = tree.inodes.len() as u64;
    report.fingerprinted_files = if options.fingerprint.is_some() {
        plan.xattrs
            .bodies
            .iter()
            .filter(|b| b.digest_offset.is_some())
            .count() as u64
    } else {
        0
    };
    let (ordered_cpu, worker_wait) = clock.totals();
    report.timings = crate::Timings {
        ordered_cpu,
        worker_wait,
    };
    Ok(plan.image_bytes())
}

/// Block 0 (superblock, prefix records, checksum) and the shared xattr area.
fn head(plan: &Plan) -> Vec<u8> {
    let blksz = plan.blksz() as usize;
    let mut head = vec![0u8; plan.data_start as usize * blksz];
    let sb_off = erofs_format::SUPERBLOCK_OFFSET;
    head[sb_off..sb_off + erofs_format::SUPERBLOCK_SIZE]
        .copy_from_slice(plan.superblock.as_bytes());
    let cfgs = &plan.compr_cfgs;
    let c = crate::layout::PREFIX_RECORDS_OFFSET as usize;
    head[c..c + cfgs.len()].copy_from_slice(cfgs);
    let rec = plan.xattrs.prefixes.records();
    let p = c + cfgs.len();
    head[p..p + rec.len()].copy_from_slice(&rec);
    for (k, slot) in plan.devices.iter().enumerate() {
        let at = plan.devt_offset as usize + k * 128;
        head[at..at + 128].copy_from_slice(slot.as_bytes());
    }
    if !plan.xattrs.shared_area.is_empty() {
        let x = plan.xattr_blkaddr as usize * blksz;
        head[x..x + plan.xattrs.shared_area.len()].copy_from_slice(&plan.xattrs.shared_area);
    }
    erofs_format::seal_checksum(&mut head, plan.blkszbits);
    head
}

/// What the data stage leaves for the metadata stage.
struct DataOut {
    tails: Vec<Vec<u8>>,
    digests: Vec<Option<[u8; 32]>>,
    bytes: u64,
    /// How each file of the compressed area was stored.
    zfiles: Vec<Option<ZStored>>,
}

/// Settings shared by every job.
#[derive(Clone, Copy)]
struct DataCtx<'a> {
    tree: &'a Tree,
    plan: &'a Plan,
    /// Compute sha256 digests (only when fingerprints are on).
    hash: bool,
    /// Worker threads.
    threads: usize,
    /// Accounts for the in-order and waiting time.
    clock: &'a Clock,
}

impl DataCtx<'_> {
    fn window(&self) -> usize {
        WINDOW_PER_THREAD * self.threads.max(1)
    }
}

/// Recycled output buffers. A buffer's length is how much of it is initialised, so a reused
/// buffer is never zeroed again.
struct BufPool {
    free: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl BufPool {
    fn new(keep: usize) -> Self {
        Self {
            free: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// A buffer of at least `len` initialised bytes (their values are arbitrary).
    fn get(&self, len: usize) -> Vec<u8> {
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match reused {
            Some(mut b) => {
                if b.len() < len {
                    b.resize(len, 0);
                }
                b
            }
            // Zeroed memory straight from the allocator costs no pass over it.
            None => vec![0; len],
        }
    }

    fn put(&self, b: Vec<u8>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < self.keep {
            free.push(b);
        }
    }
}

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

/// One open file shared by the pieces of a large file. Opening it again per piece could
/// read two different files, if it were replaced (same size, new inode) mid-build. The last
/// piece to take it lets go, so at most the files in flight are open.
struct OpenOnce {
    slot: Mutex<(Option<Arc<File>>, usize)>,
}

impl OpenOnce {
    fn new(pieces: usize) -> Self {
        Self {
            slot: Mutex::new((None, pieces)),
        }
    }

    fn take<'a>(&self, c: &'a FileContent) -> Result<Source<'a>, BuildError> {
        let DataSource::Path(path) = &c.source else {
            return Source::open(c, &mut DirCache::default());
        };
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let file = match &slot.0 {
            Some(f) => Arc::clone(f),
            None => match Source::open(c, &mut DirCache::default())? {
                Source::File(f, _) => {
                    slot.0 = Some(Arc::clone(&f));
                    f
                }
                Source::Bytes(_) | Source::Staged(_) => unreachable!("a path opens as a file"),
            },
        };
        slot.1 = slot.1.saturating_sub(1);
        if slot.1 == 0 {
            slot.0 = None;
        }
        Ok(Source::File(file, path))
    }
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

fn write_data(
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
    let mut out = DataOut {
        tails: vec![Vec::new(); n],
        digests: vec![None; n],
        bytes: 0,
        zfiles: Vec::new(),
    };
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
    let mut out = DataOut {
        tails: vec![Vec::new(); n],
        digests: vec![None; n],
        bytes: 0,
        zfiles: Vec::new(),
    };
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

fn hash_zeros(h: &mut Sha256, mut n: u64) {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// The directory of the last file a job opened. Files of one directory sit next to each
/// other in inode order, so opening them relative to it saves walking the whole path again
/// for each one.
#[derive(Default)]
struct DirCache<'a> {
    dir: Option<(&'a Path, rustix::fd::OwnedFd)>,
}

impl<'a> DirCache<'a> {
    /// Opens the regular file `path` for reading. `O_NOFOLLOW`: the scan saw a regular file
    /// there, and a symlink put in its place must not pull another file into the image.
    fn open(&mut self, path: &'a Path) -> std::io::Result<File> {
        use rustix::fs::{Mode, OFlags, open, openat};
        // NONBLOCK: a fifo put in place of a file must fail the size check, not hang the
        // open; regular files ignore the flag.
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(File::from(open(path, flags, Mode::empty())?));
        };
        if self.dir.as_ref().is_none_or(|(d, _)| *d != parent) {
            let base = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            let fd = open(
                base,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            self.dir = Some((parent, fd));
        }
        let (_, dir) = self.dir.as_ref().expect("just set");
        Ok(File::from(openat(dir, name, flags, Mode::empty())?))
    }
}

/// Reads a file's bytes from the source tree, from memory, or from a source's staging file.
enum Source<'a> {
    File(Arc<File>, &'a Path),
    Bytes(&'a [u8]),
    /// Staged content does not change under us: no size probes.
    Staged(&'a crate::tree::StagedData),
}

impl<'a> Source<'a> {
    /// Opens `c`, relative to its directory when `dirs` has that directory open.
    fn open(c: &'a FileContent, dirs: &mut DirCache<'a>) -> Result<Self, BuildError> {
        match &c.source {
            DataSource::Path(p) => {
                let file = dirs.open(p).map_err(|e| {
                    if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                        // O_NOFOLLOW met a symlink where the scan saw a regular file.
                        let e = std::io::Error::other(
                            "changed during the build: it is a symbolic link now",
                        );
                        BuildError::io(p, e)
                    } else {
                        BuildError::io(p, e)
                    }
                })?;
                if let Some((dev, ino)) = c.source_id {
                    let st = rustix::fs::fstat(&file).map_err(|e| BuildError::io(p, e.into()))?;
                    #[allow(clippy::unnecessary_cast)]
                    // the field types differ between architectures
                    if (st.st_dev as u64, st.st_ino as u64) != (dev, ino) {
                        let e = std::io::Error::other(
                            "replaced during the build: another file is at this path now",
                        );
                        return Err(BuildError::io(p, e));
                    }
                }
                Ok(Self::File(Arc::new(file), p))
            }
            DataSource::Bytes(b) => Ok(Self::Bytes(b)),
            DataSource::At(d) => Ok(Self::Staged(d)),
            DataSource::Blob(_) => Err(BuildError::Output(std::io::Error::other(
                "content on an extra device is not copied into the image",
            ))),
        }
    }

    fn changed(&self, expected: u64) -> BuildError {
        let path = match self {
            Self::File(_, p) => p,
            Self::Bytes(_) => Path::new("<memory>"),
            Self::Staged(d) => Path::new(&*d.name),
        };
        BuildError::ChangedSize {
            path: path.to_path_buf(),
            expected,
        }
    }

    fn io(&self, e: std::io::Error) -> BuildError {
        match self {
            Self::File(_, p) => BuildError::io(p, e),
            Self::Bytes(_) => BuildError::Output(e),
            Self::Staged(d) => BuildError::io(Path::new(&*d.name), e),
        }
    }

    /// Reads the whole file into `dst`, which is one byte longer than the file should be:
    /// the spare byte tells a file that grew from one that did not, in the same read.
    fn read_whole(&mut self, dst: &mut [u8]) -> Result<(), BuildError> {
        let size = dst.len() - 1;
        match self {
            Self::Bytes(b) => {
                if b.len() != size {
                    return Err(self.changed(size as u64));
                }
                dst[..size].copy_from_slice(b);
                Ok(())
            }
            Self::Staged(d) => d
                .file
                .read_exact_at(&mut dst[..size], d.offset)
                .map_err(|e| self.io(e)),
            Self::File(f, _) => {
                let mut got = 0;
                loop {
                    let asked = dst.len() - got;
                    let n = match (&**f).read(&mut dst[got..]) {
                        Ok(n) => n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(self.io(e)),
                    };
                    got += n;
                    // A short read of a regular file stops at its end.
                    if n == 0 || (n < asked && got == size) || got > size {
                        break;
                    }
                }
                if got == size {
                    Ok(())
                } else {
                    Err(self.changed(size as u64))
                }
            }
        }
    }

    /// Fills `dst` from file offset `at`; a file that ends early changed size.
    fn read_exact_at(&self, dst: &mut [u8], at: u64, size: u64) -> Result<(), BuildError> {
        match self {
            Self::Bytes(b) => {
                let src = usize::try_from(at)
                    .ok()
                    .and_then(|a| b.get(a..a.checked_add(dst.len())?))
                    .ok_or_else(|| self.changed(size))?;
                dst.copy_from_slice(src);
                Ok(())
            }
            Self::Staged(d) => d
                .file
                .read_exact_at(dst, d.offset + at)
                .map_err(|e| self.io(e)),
            Self::File(f, _) => f.read_exact_at(dst, at).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    self.changed(size)
                } else {
                    self.io(e)
                }
            }),
        }
    }

    /// Reads the last `size - at` bytes of the file (its inline tail, or nothing) and checks
    /// that the file ends exactly at `size`. With no tail to read, the probe starts one byte
    /// early: a file that shrank into a trailing hole reads nothing there, while an intact
    /// one reads a byte (a zero, in a hole).
    fn read_end(&self, at: u64, size: u64) -> Result<Vec<u8>, BuildError> {
        let n = (size - at) as usize;
        let from = if n == 0 { size.saturating_sub(1) } else { at };
        let want = (size - from) as usize;
        let mut probe = vec![0u8; want + 1];
        let got = match self {
            Self::Bytes(b) => {
                if b.len() as u64 != size {
                    return Err(self.changed(size));
                }
                let rest = &b[from as usize..];
                probe[..rest.len()].copy_from_slice(rest);
                rest.len()
            }
            Self::Staged(d) => {
                // Staged data cannot change: read the tail, no probe.
                let mut tail = vec![0u8; n];
                d.file
                    .read_exact_at(&mut tail, d.offset + at)
                    .map_err(|e| self.io(e))?;
                return Ok(tail);
            }
            Self::File(f, _) => {
                let mut got = 0;
                loop {
                    match f.read_at(&mut probe[got..], from + got as u64) {
                        Ok(0) => break,
                        Ok(k) => {
                            got += k;
                            if got == probe.len() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(self.io(e)),
                    }
                }
                got
            }
        };
        if got != want {
            return Err(self.changed(size));
        }
        probe.truncate(want);
        Ok(if n == 0 { Vec::new() } else { probe })
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
                debug_assert_eq!(content.len() as u64, p.size);
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

fn encode_dir(
    tree: &Tree,
    plan: &Plan,
    me: usize,
    parent: usize,
    entries: &[crate::tree::DirEntry],
) -> Vec<u8> {
    let dir_type = erofs_format::FileType::Directory.raw();
    let mut list: Vec<crate::dir::Entry> = Vec::with_capacity(entries.len() + 2);
    list.push(crate::dir::Entry {
        name: b".",
        nid: plan.inodes[me].nid,
        file_type: dir_type,
    });
    list.push(crate::dir::Entry {
        name: b"..",
        nid: plan.inodes[parent].nid,
        file_type: dir_type,
    });
    for e in entries {
        list.push(crate::dir::Entry {
            name: &e.name,
            nid: plan.inodes[e.inode].nid,
            file_type: tree.inodes[e.inode].file_type().raw(),
        });
    }
    list.sort_unstable_by(|a, b| a.name.cmp(b.name));
    debug_assert_eq!(
        list.iter().map(|e| e.name).collect::<Vec<_>>(),
        dir_names(entries)
    );
    crate::dir::encode(&list, plan.blksz() as usize)
}

/// Files read in the metadata stage: regular files whose whole content is an inline tail.
fn tail_only_file(inode: &crate::tree::Inode, p: &InodePlan) -> bool {
    matches!(&inode.kind, Kind::Regular(c) if c.size > 0)
        && p.data_blocks == 0
        && p.chunk.is_none()
        && !p.compressed
}

/// What a metadata job hands to the writing thread.
struct MetaDone {
    buf: Vec<u8>,
    /// Digests of the files read by this job.
    digests: Vec<(usize, [u8; 32])>,
    files: u64,
    bytes: u64,
}

/// The metadata area: inode items in `meta_order` with their xattr bodies, inline tails and
/// chunk tables, then zeroes to the end of the image.
fn write_meta(
    ctx: DataCtx<'_>,
    buffers: &BufPool,
    data: &mut DataOut,
    out: &mut Out<'_>,
    progress: &dyn Progress,
    fingerprinted: &mut Vec<(usize, [u8; 32])>,
) -> Result<(), BuildError> {
    let plan = ctx.plan;
    let order = &plan.meta_order;
    // The root is always an item, so there is a last job, and it pads to the image end.
    let jobs = order.len().div_ceil(META_JOB);
    let meta_base = plan.meta_start * plan.blksz();
    let meta_bytes = (plan.total_blocks - plan.meta_start) * plan.blksz();
    // Job k covers the area from its first item to the next job's first item, so padding
    // between items is part of the job before it.
    let start_of = |k: usize| -> u64 {
        if k == 0 {
            0
        } else if k >= jobs {
            meta_bytes
        } else {
            plan.inodes[order[k * META_JOB]].meta_offset
        }
    };
    let shared: &DataOut = data;
    let encode = |k: usize| -> Result<MetaDone, BuildError> {
        progress.check_cancelled()?;
        let (from, to) = (start_of(k), start_of(k + 1));
        let mut buf = buffers.get(0);
        buf.clear();
        let mut out = MetaDone {
            buf: Vec::new(),
            digests: Vec::new(),
            files: 0,
            bytes: 0,
        };
        let mut dirs = DirCache::default();
        for &i in &order[k * META_JOB..((k + 1) * META_JOB).min(order.len())] {
            let p = &plan.inodes[i];
            buf.resize((p.meta_offset - from) as usize, 0);
            let digest = encode_item(ctx, shared, i, &mut buf, &mut dirs)?;
            if tail_only_file(&ctx.tree.inodes[i], p) {
                out.files += 1;
                out.bytes += p.size;
                if let Some(d) = digest {
                    out.digests.push((i, d));
                }
            }
        }
        debug_assert!(buf.len() as u64 <= to - from);
        buf.resize((to - from) as usize, 0);
        out.buf = buf;
        Ok(out)
    };
    let mut done_digests = Vec::new();
    let mut bytes = 0u64;
    // Frees the buffer of a written job and reports its files.
    let finish = |mut done: MetaDone| {
        buffers.put(std::mem::take(&mut done.buf));
        if done.files > 0 {
            progress.advance(done.files, done.bytes);
        }
        done
    };
    match out {
        Out::At(file) => {
            let results = run_unordered(jobs, ctx.threads, ctx.clock, |k| {
                let done = encode(k)?;
                file.put_at(&done.buf, meta_base + start_of(k))
                    .map_err(BuildError::Output)?;
                Ok::<_, BuildError>(finish(done))
            })?;
            ctx.clock.in_order(|| {
                for done in results {
                    done_digests.extend(done.digests);
                    bytes += done.bytes;
                }
            });
        }
        Out::Stream(w) => {
            run_ordered(jobs, ctx.threads, ctx.window(), ctx.clock, encode, |done| {
                w.write_all(&done.buf).map_err(BuildError::Output)?;
                let done = finish(done);
                done_digests.extend(done.digests);
                bytes += done.bytes;
                Ok(())
            })?
        }
    }
    data.bytes += bytes;
    fingerprinted.extend(done_digests);
    // The data stage's tails are written now.
    data.tails = Vec::new();
    Ok(())
}

/// Appends one metadata item to `out`: inode, xattr body (fingerprint filled in), then the
/// inline tail or the chunk table. Returns the digest computed here, if any.
fn encode_item<'a>(
    ctx: DataCtx<'a>,
    data: &DataOut,
    i: usize,
    out: &mut Vec<u8>,
    dirs: &mut DirCache<'a>,
) -> Result<Option<[u8; 32]>, BuildError> {
    let (tree, plan) = (ctx.tree, ctx.plan);
    let inode = &tree.inodes[i];
    let p = &plan.inodes[i];
    let body = &plan.xattrs.bodies[i];
    // The inline tail and the digest: from the data stage, or produced here.
    let mut digest = data.digests[i];
    let mut own_digest = None;
    let generated;
    let tail: &[u8] = if p.tail_len == 0 {
        &[]
    } else if tail_only_file(inode, p) {
        let Kind::Regular(c) = &inode.kind else {
            unreachable!()
        };
        let mut buf = vec![0u8; c.size as usize + 1];
        Source::open(c, dirs)?.read_whole(&mut buf)?;
        buf.truncate(c.size as usize);
        if ctx.hash && c.known_digest().is_none() {
            own_digest = Some(Sha256::digest(&buf).into());
            digest = own_digest;
        }
        generated = buf;
        &generated
    } else if p.data_blocks == 0 && !matches!(inode.kind, Kind::Regular(_)) {
        generated = match &inode.kind {
            Kind::Directory { parent, entries } => encode_dir(tree, plan, i, *parent, entries),
            Kind::Symlink(t) => t.clone(),
            _ => Vec::new(),
        };
        &generated
    } else {
        &data.tails[i]
    };
    if tail.len() != p.tail_len as usize {
        return Err(BuildError::Output(std::io::Error::other(format!(
            "inode {i}: inline tail of {} bytes, {} planned",
            tail.len(),
            p.tail_len
        ))));
    }
    let item_start = out.len();
    let z = data.zfiles.get(i).and_then(|z| z.as_ref());
    let layout = p.layout;
    let format = InodeFormat {
        extended: p.extended,
        layout,
        bit4: false,
    }
    .encode();
    let i_u = match &inode.kind {
        Kind::CharDevice(ma, mi) | Kind::BlockDevice(ma, mi) => erofs_format::encode_rdev(*ma, *mi),
        Kind::Fifo | Kind::Socket => 0,
        _ => match (&p.chunk, z) {
            (Some(ch), _) if ch.device.is_some() => {
                u32::from(ch.chunkbits - plan.blkszbits)
                    | u32::from(erofs_format::CHUNK_FORMAT_INDEXES)
            }
            (Some(ch), _) => u32::from(ch.chunkbits - plan.blkszbits),
            // `compressed_blocks`: the blocks of the file's pclusters.
            (None, Some(ZStored::Compressed(zf))) => zf.stored_blocks(),
            (None, _) => p.startblk,
        },
    };
    let ino = (i + 1) as u32;
    if p.extended {
        let mut x = InodeExtended::default();
        x.format.set(format);
        x.xattr_icount.set(body.icount());
        x.mode.set(inode.mode());
        x.size.set(p.size);
        x.i_u.set(i_u);
        x.ino.set(ino);
        x.uid.set(inode.uid);
        x.gid.set(inode.gid);
        x.mtime.set(inode.mtime as u64);
        x.mtime_nsec.set(inode.mtime_nsec);
        x.nlink.set(inode.nlink);
        out.extend_from_slice(x.as_bytes());
    } else {
        let mut x = InodeCompact::default();
        x.format.set(format);
        x.xattr_icount.set(body.icount());
        x.mode.set(inode.mode());
        x.nlink.set(inode.nlink as u16);
        x.size.set(p.size as u32);
        x.i_u.set(i_u);
        x.ino.set(ino);
        x.uid.set(inode.uid as u16);
        x.gid.set(inode.gid as u16);
        // The plan chose a compact inode only where this exists.
        x.mtime.set(
            crate::layout::TimeBase::of(&plan.superblock)
                .compact_mtime(inode.mtime, inode.mtime_nsec)
                .unwrap_or(0),
        );
        out.extend_from_slice(x.as_bytes());
    }
    if !body.bytes.is_empty() {
        let start = out.len();
        out.extend_from_slice(&body.bytes);
        if let Some(off) = body.digest_offset {
            let d = digest.ok_or_else(|| {
                BuildError::Output(std::io::Error::other(format!(
                    "inode {i}: fingerprint missing"
                )))
            })?;
            out[start + off..start + off + 32].copy_from_slice(&d);
        }
    }
    if let Some(ch) = &p.chunk
        && let Some(device) = ch.device
    {
        // Chunk indexes are 8-byte aligned (items start 32-byte aligned).
        let aligned = item_start + (out.len() - item_start).next_multiple_of(8);
        out.resize(aligned, 0);
        for &b in &ch.table {
            let mut e = erofs_format::ChunkIndex::default();
            e.device_id.set(device);
            e.startblk_lo.set(b);
            out.extend_from_slice(e.as_bytes());
        }
    } else if let Some(ch) = &p.chunk {
        // The chunk table is 4-byte aligned within the item.
        let aligned = item_start + (out.len() - item_start).next_multiple_of(4);
        out.resize(aligned, 0);
        for &b in &ch.table {
            out.extend_from_slice(&b.to_le_bytes());
        }
    } else if let Some(ZStored::Compressed(zf)) = z {
        zdata::encode_zmeta(
            zf,
            p.size,
            plan.blkszbits,
            plan.big_pclusters,
            zf.algorithm,
            layout == DataLayout::CompressedCompact,
            item_start,
            out,
        )?;
    } else {
        out.extend_from_slice(tail);
    }
    debug_assert!(p.startblk != NULL_ADDR || layout == DataLayout::FlatInline);
    Ok(own_digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::Inode;
    use std::sync::Arc;

    fn one_file(declared: u64, actual: &[u8]) -> Tree {
        let file = Inode {
            kind: Kind::Regular(FileContent {
                size: declared,
                source: DataSource::Bytes(Arc::from(actual)),
                data_ranges: None,
                old_fingerprint: None,
                source_id: None,
            }),
            permissions: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            mtime_nsec: 0,
            nlink: 1,
            xattrs: Vec::new(),
        };
        let root = Inode {
            kind: Kind::Directory {
                parent: 0,
                entries: vec![crate::tree::DirEntry {
                    name: b"f".to_vec(),
                    inode: 1,
                }],
            },
            nlink: 2,
            permissions: 0o755,
            ..file.clone()
        };
        Tree {
            inodes: vec![root, file],
        }
    }

    /// Builds `tree` with the default options and returns the error it must fail with.
    fn build_error(tree: &Tree) -> BuildError {
        crate::build_tree_to_writer(
            &ValidTree::new(tree.clone()).expect("a valid tree"),
            &mut Vec::new(),
            &Options::default(),
            &crate::NoProgress,
        )
        .unwrap_err()
    }

    /// [`one_file`] whose file is read from `path`.
    fn file_at(path: &std::path::Path, size: u64) -> Tree {
        let mut tree = one_file(size, b"");
        if let Kind::Regular(c) = &mut tree.inodes[1].kind {
            c.source = DataSource::Path(path.to_path_buf());
        }
        tree
    }

    /// [`one_file`] whose content is a staged region of `spool` that its source hashed.
    fn staged(spool: &std::path::Path, size: u64, digest: [u8; 32]) -> Tree {
        let mut tree = one_file(size, b"");
        if let Kind::Regular(c) = &mut tree.inodes[1].kind {
            c.source = DataSource::At(crate::tree::StagedData {
                file: Arc::new(File::open(spool).unwrap()),
                offset: 0,
                name: "f (tar offset 0)".into(),
                digest: Some(digest),
            });
        }
        tree
    }

    #[test]
    fn a_digest_the_source_took_while_staging_is_the_fingerprint_without_a_second_read() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        // Small (one job reads several files), large (one job hashes it whole) and
        // inline-only sizes, into a file and into a stream.
        for size in [100usize, 5000, (5 << 20) + 7] {
            std::fs::write(&spool, vec![3u8; size]).unwrap();
            // Not the content's sha256: only a writer that trusts the source writes it.
            let given = [0xa5u8; 32];
            let options = Options {
                fingerprint: Some(crate::FingerprintOptions {
                    xattr_name: b"trusted.fp".to_vec(),
                }),
                ..Options::default()
            };
            let tree = crate::tree::ValidTree::new(staged(&spool, size as u64, given)).unwrap();
            let mut stream = Vec::new();
            crate::build_tree_to_writer(&tree, &mut stream, &options, &crate::NoProgress).unwrap();
            let want = erofs_format::xattr::sha256_fingerprint(&given);
            let found = stream.windows(want.len()).any(|w| w == want.as_slice());
            assert!(found, "size {size}: the given digest is not in the image");
            let own =
                erofs_format::xattr::sha256_fingerprint(&Sha256::digest(vec![3u8; size]).into());
            let rehashed = stream.windows(own.len()).any(|w| w == own.as_slice());
            assert!(
                !rehashed,
                "size {size}: the writer hashed the content again"
            );
        }
    }

    #[test]
    fn a_staged_region_shorter_than_its_size_fails_even_with_a_digest() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        std::fs::write(&spool, vec![3u8; 100]).unwrap();
        let err = build_error(&staged(&spool, 5000, [0; 32]));
        assert!(
            matches!(err, BuildError::ChangedSize { .. } | BuildError::Io { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_sparse_file_that_shrank_into_its_trailing_hole_fails_the_build() {
        let first_page: Vec<Range<u64>> = std::iter::once(0..4096).collect();
        for (ranges, actual) in [(first_page, 4096usize), (Vec::new(), 0)] {
            let mut tree = one_file(1 << 20, &vec![7u8; actual]);
            if let Kind::Regular(c) = &mut tree.inodes[1].kind {
                c.data_ranges = Some(ranges.clone());
            }
            let err = build_error(&tree);
            assert!(
                matches!(err, BuildError::ChangedSize { expected, .. } if expected == 1 << 20),
                "data ranges {ranges:?}: {err}"
            );
        }
    }

    #[test]
    fn every_piece_of_a_file_reads_the_file_first_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, b"old!").unwrap();
        let content = FileContent {
            size: 4,
            source: DataSource::Path(path.clone()),
            data_ranges: None,
            old_fingerprint: None,
            source_id: None,
        };
        let once = OpenOnce::new(3);
        let read = |src: &Source<'_>| {
            let mut b = [0u8; 4];
            src.read_exact_at(&mut b, 0, 4).unwrap();
            b
        };
        assert_eq!(&read(&once.take(&content).unwrap()), b"old!");
        // Replaced by a file of the same size, as an editor's atomic save does.
        std::fs::write(dir.path().join("new"), b"new!").unwrap();
        std::fs::rename(dir.path().join("new"), &path).unwrap();
        assert_eq!(&read(&once.take(&content).unwrap()), b"old!");
        assert_eq!(&read(&once.take(&content).unwrap()), b"old!");
        assert!(
            once.slot.lock().unwrap().0.is_none(),
            "the last piece lets the file go"
        );
    }

    #[test]
    fn a_file_replaced_by_a_fifo_fails_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let err = build_error(&file_at(&fifo, 20));
        assert!(matches!(err, BuildError::ChangedSize { .. }), "{err}");
    }

    #[test]
    fn a_file_replaced_at_its_path_after_the_scan_fails_the_build() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"scanned content!").unwrap();
        let scanned = std::fs::metadata(&path).unwrap();
        // An atomic save: same size, new inode.
        std::fs::write(dir.path().join("new"), b"replaced content").unwrap();
        std::fs::rename(dir.path().join("new"), &path).unwrap();
        let mut tree = file_at(&path, 16);
        if let Kind::Regular(c) = &mut tree.inodes[1].kind {
            c.source_id = Some((scanned.dev(), scanned.ino()));
        }
        let err = build_error(&tree);
        let msg = err.to_string();
        assert!(msg.contains("replaced during the build"), "{msg}");
        assert!(msg.contains(&*path.to_string_lossy()), "{msg}");
    }

    #[test]
    fn a_file_replaced_by_a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("other"), b"not this file's data").unwrap();
        let link = dir.path().join("f");
        std::os::unix::fs::symlink("other", &link).unwrap();
        let err = build_error(&file_at(&link, 20));
        let msg = err.to_string();
        assert!(
            msg.contains(&*link.to_string_lossy()) && msg.contains("symbolic link now"),
            "{msg}"
        );
    }

    #[test]
    fn a_file_that_changed_size_fails_the_build() {
        for (declared, actual) in [
            (10u64, &b"short"[..]),
            (3, b"longer"),
            (9000, &[1u8; 100][..]),
        ] {
            let tree = one_file(declared, actual);
            let err = build_error(&tree);
            assert!(
                matches!(err, BuildError::ChangedSize { expected, .. } if expected == declared),
                "{err}"
            );
        }
    }
}
