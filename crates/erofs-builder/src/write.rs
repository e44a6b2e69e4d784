//! The writer: puts the planned image on disk, in stages.
//!
//! 1. The compressed stage (`zdata`, with `-z`): compressed files first in the data area.
//! 2. The plan (`crate::layout`) of everything else, then the head (`crate::encode::Head`).
//! 3. The data stage (`data`): file contents and directory blocks.
//! 4. The metadata stage (`meta`): inodes with their xattrs, inline tails and maps.
//! 5. The reserved region (`--tar=i,MAPFILE`), then the report.
//!
//! Each stage cuts its work into jobs of about a megabyte and runs them on a pool of worker
//! threads (`crate::pipeline`). Where the bytes go never depends on thread timing, because
//! the plan fixed every offset before the first byte was read. Two ways out:
//!
//! - **A seekable file** (the normal case): every job writes its buffer at its planned offset
//!   itself (positioned writes), so nothing runs in order and the image write is as parallel
//!   as the reads.
//! - **A stream** (a pipe or any other writer): buffers are written strictly in job order by
//!   whichever worker holds the writer's turn.
//!
//! A stage whose output size is known only once it is produced (compressed data) fits the
//! same shape: its jobs compress in parallel, and only the assignment of addresses runs in
//! order (`pipeline::run_ordered`), with the copy or positioned write after it.
//!
//! Memory is bounded by the jobs in flight, not by the amount of data. Buffers go back to a
//! pool after they are written, so their pages are faulted in once.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;

use crate::layout::{Plan, ZStored};
use crate::pipeline::{BufPool, Clock};
// The compressed stage reads through these too.
use crate::read::{DirCache, OpenOnce, Source};
use crate::tree::{DataSource, Kind, Tree, ValidTree};
use crate::{BuildError, BuildReport, Options, Phase, Progress};

/// Jobs in flight per worker thread; this bounds memory (about a megabyte each).
const WINDOW_PER_THREAD: usize = 4;

mod data;
mod dedupe;
mod fragments;
mod meta;
mod zdata;
use data::write_data;
use meta::write_meta;
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
    let mut pre = crate::layout::prelude(tree, options)?;
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
    let mut z = match (&options.compression, &out) {
        (Some(z), Out::At(file)) => {
            progress.phase(Phase::Data);
            let zc = ZCtx {
                tree,
                options,
                pre: &pre,
                hash,
                threads,
                clock: &clock,
                packed: None,
                start: pre.data_start,
            };
            Some(write_compressed(zc, z, &buffers, *file, progress)?)
        }
        _ => None,
    };
    // `-E fragments`: the packed inode joins the tree, and is compressed after the files.
    let mut with_packed = None;
    if let (Some(zo), Some(zopts), Out::At(file)) = (&mut z, &options.compression, &out)
        && let Some((spill, size)) = zo.packed.take()
    {
        let (t, i) = fragments::with_packed_inode(tree, spill, size, pre.epoch);
        pre.xattrs.bodies.push(Default::default());
        let zc = ZCtx {
            tree: &t,
            options,
            pre: &pre,
            hash: false,
            threads,
            clock: &clock,
            packed: Some(i),
            start: pre.data_start + zo.area.blocks,
        };
        let mut second = write_compressed(zc, zopts, &buffers, *file, progress)?;
        zo.area.blocks += second.area.blocks;
        zo.area.files.push(second.area.files[i].take());
        zo.area.packed = Some(i);
        with_packed = Some(t);
    }
    let tree: &Tree = with_packed.as_ref().unwrap_or(tree);
    let plan = crate::layout::plan_with(tree, options, pre, z.as_ref().map(|z| &z.area))?;
    let packed = z.as_ref().and_then(|z| z.area.packed);
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
        data.add_compressed(z);
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
        write_region(&plan, &mut out)?;
        report.region_map = plan.region_map.clone();
    }
    warn_replaced_fingerprints(tree, &data.digests, progress, report);
    if options.compression.is_some() {
        report.compression = Some(compression_report(tree, &data.zfiles, plan.blksz(), packed));
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

/// What `-z` did: the files it tried and the bytes they take in the image (pclusters and
/// inline tail pclusters; for a file stored raw because compression gained nothing, its
/// blocks and inline tail). The packed inode (`packed`) holds the files' fragments: its
/// bytes count as stored, its content not as input (the files' sizes already do). A
/// pcluster several extents share (`-E dedupe`) is counted once, and the other references
/// in `shared_bytes`.
fn compression_report(
    tree: &Tree,
    zfiles: &[Option<ZStored>],
    blksz: u64,
    packed: Option<usize>,
) -> crate::CompressionReport {
    let mut r = crate::CompressionReport::default();
    let mut seen = std::collections::HashSet::new();
    for (i, (inode, stored)) in tree.inodes.iter().zip(zfiles).enumerate() {
        let (Kind::Regular(c), Some(stored)) = (&inode.kind, stored) else {
            continue;
        };
        if Some(i) != packed {
            r.files += 1;
            r.input_bytes += c.size;
        }
        r.stored_bytes += match stored {
            ZStored::Compressed(z) => {
                r.compressed_files += u64::from(Some(i) != packed);
                let mut bytes = z.inline.as_ref().map_or(0, |t| t.len() as u64);
                for e in z.data_extents() {
                    let b = u64::from(e.blocks) * blksz;
                    if seen.insert(e.blk) {
                        bytes += b;
                    } else {
                        r.shared_bytes += b;
                    }
                }
                bytes
            }
            ZStored::Flat { .. } => c.size,
        };
    }
    r
}

/// Block 0 (superblock, records, device table, checksum) and the shared xattr area.
fn head(plan: &Plan) -> Vec<u8> {
    // With fragments the prefixes are in the packed inode (`layout::prefixes_in_packed`).
    let prefixes = if plan
        .superblock
        .compat()
        .contains(erofs_format::Compat::PLAIN_XATTR_PFX)
    {
        plan.xattrs.prefixes.records()
    } else {
        Vec::new()
    };
    crate::encode::Head {
        blkszbits: plan.blkszbits,
        blocks: plan.data_start,
        superblock: &plan.superblock,
        records: [&plan.compr_cfgs, &prefixes],
        records_offset: crate::layout::PREFIX_RECORDS_OFFSET as usize,
        devices: &plan.devices,
        devt_offset: plan.devt_offset as usize,
        shared_xattrs: &plan.xattrs.shared_area,
        xattr_blkaddr: u64::from(plan.xattr_blkaddr),
    }
    .encode()
}

/// What the data stage leaves for the metadata stage.
struct DataOut {
    tails: Vec<Vec<u8>>,
    digests: Vec<Option<[u8; 32]>>,
    bytes: u64,
    /// How each file of the compressed area was stored.
    zfiles: Vec<Option<ZStored>>,
}

impl DataOut {
    /// Nothing yet, for a tree of `n` inodes.
    fn new(n: usize) -> Self {
        Self {
            tails: vec![Vec::new(); n],
            digests: vec![None; n],
            bytes: 0,
            zfiles: Vec::new(),
        }
    }

    /// Adds what the compressed stage produced: its digests, the tails of the files it
    /// stored flat, and how it stored each file.
    fn add_compressed(&mut self, z: zdata::ZOut) {
        self.bytes += z.bytes;
        for (i, d) in z.digests {
            self.digests[i] = Some(d);
        }
        for (i, f) in z.area.files.into_iter().enumerate() {
            if let Some(ZStored::Flat { tail, .. }) = &f {
                self.tails[i] = tail.clone();
            }
            self.zfiles.push(f);
        }
    }
}

/// The reserved region (`--tar=i,MAPFILE`) ends the image: a file gets it as a hole, a
/// stream as zeroes.
fn write_region(plan: &Plan, out: &mut Out<'_>) -> Result<(), BuildError> {
    let at = plan.total_blocks * plan.blksz();
    let len = plan.region_blocks * plan.blksz();
    match out {
        Out::At(f) => f.put_at(&[0], at + len - 1).map_err(BuildError::Output),
        Out::Stream(w) => {
            let zeros = vec![0u8; 1 << 20];
            let mut left = len;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                w.write_all(&zeros[..n]).map_err(BuildError::Output)?;
                left -= n as u64;
            }
            Ok(())
        }
    }
}

/// Warns about every file whose fingerprint xattr in the source differs from its content's
/// (the image gets the right one).
fn warn_replaced_fingerprints(
    tree: &Tree,
    digests: &[Option<[u8; 32]>],
    progress: &dyn Progress,
    report: &mut BuildReport,
) {
    for (i, inode) in tree.inodes.iter().enumerate() {
        if let (Kind::Regular(c), Some(d)) = (&inode.kind, digests[i])
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

/// A directory's blocks: its entries with their nids, encoded.
fn encode_dir(
    tree: &Tree,
    plan: &Plan,
    me: usize,
    parent: usize,
    entries: &[crate::tree::DirEntry],
) -> Vec<u8> {
    let list = crate::dir::entries(tree, me, parent, entries, |i| plan.inodes[i].nid);
    let mut out = Vec::new();
    crate::dir::encode(&list, plan.blksz() as usize, &mut out);
    out
}
