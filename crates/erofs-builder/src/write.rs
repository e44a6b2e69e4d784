//! The ordered writer: streams the planned image front to back.
//!
//! Two stages, both parallel in batches and consumed strictly in image order:
//!
//! - **Data**: files with data blocks are read and hashed in parallel batches (rayon) and
//!   handed, in inode order, to one writer thread through a bounded channel. Large and sparse
//!   files stream in pieces from their own thread; the writer drains them in turn. Memory is
//!   bounded by the batch size, not by the amount of data; only the inline tails of these
//!   files (each under a block) wait for the metadata stage.
//! - **Metadata**: inode items (inode, xattr body with the fingerprint filled in, inline tail
//!   or chunk table) are encoded in parallel batches in `meta_order`; files that live entirely
//!   in their inode's block are read and hashed here, once.
//!
//! Per-file data encoding is the plain copy in `produce_small` / `stream_big`; a compressed
//! encoding would replace those two (producing pclusters and index bytes) and leave the
//! ordering, the tree and the planner's nid assignment as they are.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender};

use erofs_format::{DataLayout, InodeCompact, InodeExtended, InodeFormat, NULL_ADDR};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use zerocopy::IntoBytes;

use crate::layout::{InodePlan, Plan, dir_names};
use crate::tree::{DataSource, FileContent, Kind, Tree};
use crate::{BuildError, BuildReport, Options, Phase, Progress};

/// Bytes of file data gathered into one parallel batch.
const BATCH_BYTES: u64 = 4 << 20;
/// Files per batch at most.
const BATCH_FILES: usize = 2048;
/// Files at least this large are streamed in pieces instead of read whole.
const BIG_FILE: u64 = 4 << 20;
/// Piece size for streamed files.
const PIECE: usize = 1 << 20;

/// Plans and writes the image of `tree` to `out`. Returns the number of bytes written.
pub fn build_image<W: Write + Send>(
    tree: &Tree,
    options: &Options,
    out: &mut W,
    progress: &dyn Progress,
    report: &mut BuildReport,
) -> Result<u64, BuildError> {
    progress.phase(Phase::Plan);
    let plan = crate::layout::plan(tree, options)?;
    let mut w = BufWriter::with_capacity(1 << 20, out);
    write_head(&plan, &mut w).map_err(BuildError::Output)?;

    progress.phase(Phase::Data);
    let mut data = write_data(tree, &plan, &mut w, progress)?;
    progress.phase(Phase::Metadata);
    let ctx = DataCtx {
        tree,
        plan: &plan,
        hash: plan.xattrs.prefixes.fingerprint_id().is_some(),
    };
    let mut late = Vec::new();
    write_meta(ctx, &mut data, &mut w, progress, &mut late)?;
    for (i, d) in late {
        data.digests[i] = Some(d);
    }
    for (i, inode) in tree.inodes.iter().enumerate() {
        if let (Kind::Regular(c), Some(d)) = (&inode.kind, data.digests[i])
            && let Some(old) = &c.old_fingerprint
            && old.as_slice() != erofs_format::xattr::sha256_fingerprint(&d).as_slice()
        {
            let path = match &c.source {
                DataSource::Path(p) => p.display().to_string(),
                DataSource::Bytes(_) => format!("inode {i}"),
            };
            let msg =
                format!("{path}: existing fingerprint xattr differs from the content; replaced");
            progress.warning(&msg);
            report.warnings.push(msg);
        }
    }
    report.data_bytes = data.bytes;
    w.flush().map_err(BuildError::Output)?;
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
    Ok(plan.image_bytes())
}

/// Block 0 (superblock, prefix records, checksum) and the shared xattr area.
fn write_head<W: Write>(plan: &Plan, w: &mut W) -> std::io::Result<()> {
    let blksz = plan.blksz() as usize;
    let mut head = vec![0u8; plan.data_start as usize * blksz];
    let sb_off = erofs_format::SUPERBLOCK_OFFSET;
    head[sb_off..sb_off + erofs_format::SUPERBLOCK_SIZE]
        .copy_from_slice(plan.superblock.as_bytes());
    let rec = plan.xattrs.prefixes.records();
    let p = crate::layout::PREFIX_RECORDS_OFFSET as usize;
    head[p..p + rec.len()].copy_from_slice(&rec);
    if !plan.xattrs.shared_area.is_empty() {
        let x = plan.xattr_blkaddr as usize * blksz;
        head[x..x + plan.xattrs.shared_area.len()].copy_from_slice(&plan.xattrs.shared_area);
    }
    let range = erofs_format::superblock_checksum_range(plan.blkszbits);
    let crc = erofs_format::superblock_checksum(&head[range]);
    head[sb_off + 4..sb_off + 8].copy_from_slice(&crc.to_le_bytes());
    w.write_all(&head)
}

/// What the data stage leaves for the metadata stage.
struct DataOut {
    tails: Vec<Vec<u8>>,
    digests: Vec<Option<[u8; 32]>>,
    bytes: u64,
}

/// One unit of output from a batch worker.
struct Produced {
    blocks: Vec<u8>,
    tail: Vec<u8>,
    digest: Option<[u8; 32]>,
}

/// What the writer thread receives, in image order.
enum Msg {
    /// Data blocks of consecutive small inodes.
    Blocks(Vec<Vec<u8>>),
    /// A large file, streamed in pieces by its own thread; drained completely before the
    /// next message.
    Stream(Receiver<Vec<u8>>),
}

fn writer_thread<W: Write>(w: &mut W, rx: Receiver<Msg>) -> std::io::Result<()> {
    for msg in rx {
        match msg {
            Msg::Blocks(list) => {
                for b in list {
                    w.write_all(&b)?;
                }
            }
            Msg::Stream(pieces) => {
                for b in pieces {
                    w.write_all(&b)?;
                }
            }
        }
    }
    Ok(())
}

/// Settings of the data stage.
#[derive(Clone, Copy)]
struct DataCtx<'a> {
    tree: &'a Tree,
    plan: &'a Plan,
    /// Compute sha256 digests (only when fingerprints are on).
    hash: bool,
}

fn write_data<W: Write + Send>(
    tree: &Tree,
    plan: &Plan,
    w: &mut W,
    progress: &dyn Progress,
) -> Result<DataOut, BuildError> {
    let n = tree.inodes.len();
    let mut out = DataOut {
        tails: vec![Vec::new(); n],
        digests: vec![None; n],
        bytes: 0,
    };
    let (files, bytes) = tree
        .inodes
        .iter()
        .fold((0u64, 0u64), |(f, b), i| match &i.kind {
            Kind::Regular(c) if c.size > 0 => (f + 1, b + c.size),
            _ => (f, b),
        });
    progress.totals(files, bytes);
    let ctx = DataCtx {
        tree,
        plan,
        hash: plan.xattrs.prefixes.fingerprint_id().is_some(),
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<Msg>(3);
    std::thread::scope(|s| {
        let writer = s.spawn(move || writer_thread(w, rx));
        let produced = produce_all(ctx, s, &tx, &mut out, progress);
        drop(tx);
        let written = writer.join().expect("writer thread panicked");
        // A write error makes the producers fail on a closed channel; report the cause.
        written.map_err(BuildError::Output)?;
        produced
    })?;
    Ok(out)
}

/// Inodes handled by the data stage: those with blocks in the data area.
fn needs_data(inode: &crate::tree::Inode, p: &InodePlan) -> bool {
    match &inode.kind {
        Kind::Regular(c) => c.size > 0 && (p.data_blocks > 0 || p.chunk.is_some()),
        Kind::Directory { .. } | Kind::Symlink(_) => p.data_blocks > 0,
        _ => false,
    }
}

fn is_big(inode: &crate::tree::Inode, p: &InodePlan) -> bool {
    matches!(&inode.kind, Kind::Regular(c) if c.size >= BIG_FILE) || p.chunk.is_some()
}

fn closed() -> BuildError {
    BuildError::Output(std::io::Error::other("image writer stopped"))
}

type BigResult = Result<(Option<[u8; 32]>, Vec<u8>), BuildError>;

fn produce_all<'scope, 'env>(
    ctx: DataCtx<'env>,
    scope: &'scope std::thread::Scope<'scope, 'env>,
    tx: &SyncSender<Msg>,
    out: &mut DataOut,
    progress: &'env dyn Progress,
) -> Result<(), BuildError> {
    let mut batch: Vec<usize> = Vec::new();
    let mut batch_bytes = 0u64;
    let mut big: Vec<(usize, std::thread::ScopedJoinHandle<'scope, BigResult>)> = Vec::new();
    let flush = |batch: &mut Vec<usize>, out: &mut DataOut| -> Result<(), BuildError> {
        if batch.is_empty() {
            return Ok(());
        }
        let results: Vec<Result<Produced, BuildError>> =
            batch.par_iter().map(|&i| produce_small(ctx, i)).collect();
        let mut blocks = Vec::with_capacity(results.len());
        let (mut files, mut bytes) = (0u64, 0u64);
        for (&i, r) in batch.iter().zip(results) {
            let r = r?;
            if let Kind::Regular(c) = &ctx.tree.inodes[i].kind {
                files += 1;
                bytes += c.size;
            }
            if !r.blocks.is_empty() {
                blocks.push(r.blocks);
            }
            out.tails[i] = r.tail;
            out.digests[i] = r.digest;
        }
        out.bytes += bytes;
        tx.send(Msg::Blocks(blocks)).map_err(|_| closed())?;
        progress.advance(files, bytes);
        batch.clear();
        Ok(())
    };
    let mut result = Ok(());
    for (i, inode) in ctx.tree.inodes.iter().enumerate() {
        let p = &ctx.plan.inodes[i];
        if !needs_data(inode, p) {
            continue;
        }
        if is_big(inode, p) {
            if let Err(e) = flush(&mut batch, out) {
                result = Err(e);
                break;
            }
            batch_bytes = 0;
            let Kind::Regular(c) = &inode.kind else {
                unreachable!("only regular files are big")
            };
            // The file streams from its own thread while later batches are prepared; the
            // writer drains its pieces in order.
            let (ptx, prx) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
            if tx.send(Msg::Stream(prx)).is_err() {
                result = Err(closed());
                break;
            }
            let handle = scope.spawn(move || {
                let r = stream_big(ctx, c, p, &ptx);
                progress.advance(1, c.size);
                r
            });
            big.push((i, handle));
            continue;
        }
        batch.push(i);
        batch_bytes += p.size;
        if batch_bytes >= BATCH_BYTES || batch.len() >= BATCH_FILES {
            if let Err(e) = flush(&mut batch, out) {
                result = Err(e);
                break;
            }
            batch_bytes = 0;
        }
    }
    if result.is_ok() {
        result = flush(&mut batch, out);
    }
    // Join every streaming thread; the first error in image order wins, but an earlier
    // batch error takes precedence.
    for (i, handle) in big {
        let r = handle.join().expect("streaming thread panicked");
        match r {
            Ok((digest, tail)) => {
                out.digests[i] = digest;
                out.tails[i] = tail;
                if let Kind::Regular(c) = &ctx.tree.inodes[i].kind {
                    out.bytes += c.size;
                }
            }
            Err(e) => {
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
    }
    result
}

/// Reads a source exactly at `offset` into `buf`.
struct Source<'a> {
    file: Option<File>,
    /// The file position, to skip seeks for sequential reads.
    pos: std::cell::Cell<u64>,
    bytes: Option<&'a [u8]>,
    path: &'a Path,
}

impl<'a> Source<'a> {
    fn open(c: &'a FileContent) -> Result<Self, BuildError> {
        match &c.source {
            DataSource::Path(p) => Ok(Self {
                file: Some(File::open(p).map_err(|e| BuildError::io(p, e))?),
                pos: std::cell::Cell::new(0),
                bytes: None,
                path: p,
            }),
            DataSource::Bytes(b) => Ok(Self {
                file: None,
                pos: std::cell::Cell::new(0),
                bytes: Some(b),
                path: Path::new("<memory>"),
            }),
        }
    }

    fn changed(&self, expected: u64) -> BuildError {
        BuildError::ChangedSize {
            path: self.path.to_path_buf(),
            expected,
        }
    }

    /// Appends exactly `len` bytes read at `offset` to `out`. Reads go straight into the
    /// vector's spare capacity (no zero-filling first); sequential calls do not seek.
    fn append(
        &self,
        offset: u64,
        len: usize,
        out: &mut Vec<u8>,
        size: u64,
    ) -> Result<(), BuildError> {
        use std::io::{Read, Seek, SeekFrom};
        if let Some(mut f) = self.file.as_ref() {
            if self.pos.get() != offset {
                f.seek(SeekFrom::Start(offset))
                    .map_err(|e| BuildError::io(self.path, e))?;
            }
            out.reserve_exact(len);
            let n = f
                .take(len as u64)
                .read_to_end(out)
                .map_err(|e| BuildError::io(self.path, e))?;
            self.pos.set(offset + n as u64);
            if n != len {
                return Err(self.changed(size));
            }
            Ok(())
        } else {
            let b = self.bytes.unwrap_or_default();
            let src = b
                .get(offset as usize..offset as usize + len)
                .ok_or_else(|| self.changed(size))?;
            out.extend_from_slice(src);
            Ok(())
        }
    }

    /// Fails if the source holds more than `size` bytes.
    fn check_eof(&self, size: u64) -> Result<(), BuildError> {
        if let Some(f) = &self.file {
            let mut one = [0u8; 1];
            match f.read_at(&mut one, size) {
                Ok(0) => Ok(()),
                Ok(_) => Err(self.changed(size)),
                Err(e) => Err(BuildError::io(self.path, e)),
            }
        } else if self.bytes.map_or(0, |b| b.len() as u64) != size {
            Err(self.changed(size))
        } else {
            Ok(())
        }
    }
}

/// Splits generated content (directory or symlink) into data blocks and an inline tail.
fn split_content(mut content: Vec<u8>, p: &InodePlan, blksz: u64) -> Produced {
    let full = (p.data_blocks * blksz) as usize;
    let tail = if p.layout == DataLayout::FlatInline {
        content.split_off(full.min(content.len()))
    } else {
        Vec::new()
    };
    content.resize(full, 0);
    Produced {
        blocks: content,
        tail,
        digest: None,
    }
}

fn produce_small(ctx: DataCtx<'_>, i: usize) -> Result<Produced, BuildError> {
    let (tree, plan) = (ctx.tree, ctx.plan);
    let inode = &tree.inodes[i];
    let p = &plan.inodes[i];
    let blksz = plan.blksz();
    match &inode.kind {
        Kind::Directory { parent, entries } => {
            let content = encode_dir(tree, plan, i, *parent, entries);
            debug_assert_eq!(content.len() as u64, p.size);
            Ok(split_content(content, p, blksz))
        }
        Kind::Symlink(t) => Ok(split_content(t.clone(), p, blksz)),
        Kind::Regular(c) => {
            let src = Source::open(c)?;
            let full = (p.data_blocks * blksz) as usize;
            let size = c.size as usize;
            let (blocks, tail) = if p.layout == DataLayout::FlatInline {
                let mut buf = Vec::with_capacity(size);
                src.append(0, size, &mut buf, c.size)?;
                let tail = buf[full..].to_vec();
                buf.truncate(full);
                (buf, tail)
            } else {
                let mut buf = Vec::with_capacity(full);
                src.append(0, size, &mut buf, c.size)?;
                buf.resize(full, 0);
                (buf, Vec::new())
            };
            src.check_eof(c.size)?;
            let digest = ctx.hash.then(|| {
                let mut h = Sha256::new();
                h.update(&blocks[..blocks.len().min(size)]);
                h.update(&tail);
                h.finalize().into()
            });
            Ok(Produced {
                blocks,
                tail,
                digest,
            })
        }
        _ => Ok(Produced {
            blocks: Vec::new(),
            tail: Vec::new(),
            digest: None,
        }),
    }
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

/// Streams a large or sparse file in pieces: hashes every byte (holes as zeroes) when
/// fingerprints are on, and sends its data blocks. Returns the digest and the inline tail.
fn stream_big(
    ctx: DataCtx<'_>,
    c: &FileContent,
    p: &InodePlan,
    tx: &SyncSender<Vec<u8>>,
) -> BigResult {
    let blksz = ctx.plan.blksz();
    let src = Source::open(c)?;
    let mut hasher = ctx.hash.then(Sha256::new);
    let mut tail = Vec::new();
    let send_range =
        |hasher: &mut Option<Sha256>, start: u64, end: u64| -> Result<(), BuildError> {
            let mut off = start;
            while off < end {
                let len = ((end - off) as usize).min(PIECE);
                let padded = (len as u64).next_multiple_of(blksz) as usize;
                let mut buf = Vec::with_capacity(padded);
                src.append(off, len, &mut buf, c.size)?;
                buf.resize(padded, 0);
                if let Some(h) = hasher.as_mut() {
                    h.update(&buf[..len]);
                }
                tx.send(buf).map_err(|_| closed())?;
                off += len as u64;
            }
            Ok(())
        };
    if let Some(chunk) = &p.chunk {
        let zeros = vec![0u8; PIECE];
        let mut pos = 0u64;
        for r in &chunk.data_chunks {
            hash_zeros(hasher.as_mut(), &zeros, r.start - pos);
            send_range(&mut hasher, r.start, r.end)?;
            pos = r.end;
        }
        hash_zeros(hasher.as_mut(), &zeros, c.size - pos);
    } else {
        let full = p.data_blocks * blksz;
        if p.layout == DataLayout::FlatInline {
            send_range(&mut hasher, 0, full)?;
            let n = (c.size - full) as usize;
            tail = Vec::with_capacity(n);
            src.append(full, n, &mut tail, c.size)?;
            if let Some(h) = hasher.as_mut() {
                h.update(&tail);
            }
        } else {
            send_range(&mut hasher, 0, c.size)?;
        }
    }
    src.check_eof(c.size)?;
    Ok((hasher.map(|h| h.finalize().into()), tail))
}

fn hash_zeros(hasher: Option<&mut Sha256>, zeros: &[u8], mut n: u64) {
    let Some(hasher) = hasher else { return };
    while n > 0 {
        let k = (n as usize).min(zeros.len());
        hasher.update(&zeros[..k]);
        n -= k as u64;
    }
}

/// Files read in the metadata stage: regular files whose whole content is an inline tail.
fn tail_only_file(inode: &crate::tree::Inode, p: &InodePlan) -> bool {
    matches!(&inode.kind, Kind::Regular(c) if c.size > 0) && p.data_blocks == 0 && p.chunk.is_none()
}

/// An encoded metadata item and the digest computed while encoding it.
type Item = (Vec<u8>, Option<[u8; 32]>);

/// Inodes per parallel batch in the metadata stage.
const META_BATCH: usize = 4096;

/// The metadata area: inodes in `meta_order` with their xattr bodies, inline tails and chunk
/// tables. Items are encoded in parallel batches (files that live entirely in their inode's
/// block are read and hashed here, once) and written in order.
fn write_meta<W: Write>(
    ctx: DataCtx<'_>,
    data: &mut DataOut,
    w: &mut W,
    progress: &dyn Progress,
    fingerprinted: &mut Vec<(usize, [u8; 32])>,
) -> Result<(), BuildError> {
    const ZEROS: [u8; 4096] = [0; 4096];
    let plan = ctx.plan;
    let mut pos = 0u64;
    let pad = |w: &mut W, pos: &mut u64, to: u64| -> std::io::Result<()> {
        while *pos < to {
            let k = ((to - *pos) as usize).min(ZEROS.len());
            w.write_all(&ZEROS[..k])?;
            *pos += k as u64;
        }
        Ok(())
    };
    for batch in plan.meta_order.chunks(META_BATCH) {
        let data_ref = &*data;
        let items: Vec<Result<Item, BuildError>> = batch
            .par_iter()
            .map(|&i| encode_item(ctx, data_ref, i))
            .collect();
        let (mut files, mut bytes) = (0u64, 0u64);
        for (&i, item) in batch.iter().zip(items) {
            let (item, digest) = item?;
            let p = &plan.inodes[i];
            pad(w, &mut pos, p.meta_offset).map_err(BuildError::Output)?;
            w.write_all(&item).map_err(BuildError::Output)?;
            pos += item.len() as u64;
            if tail_only_file(&ctx.tree.inodes[i], p) {
                files += 1;
                bytes += p.size;
                if let Some(d) = digest {
                    fingerprinted.push((i, d));
                }
            }
            // Tails from the data stage are no longer needed.
            data.tails[i] = Vec::new();
        }
        data.bytes += bytes;
        if files > 0 {
            progress.advance(files, bytes);
        }
    }
    debug_assert_eq!(pos, plan.meta_size);
    let meta_bytes = (plan.total_blocks - plan.meta_start) * plan.blksz();
    pad(w, &mut pos, meta_bytes).map_err(BuildError::Output)
}

/// Encodes one metadata item: inode, xattr body (fingerprint filled in), then the inline
/// tail or the chunk table. Returns the bytes and the digest computed here, if any.
fn encode_item(ctx: DataCtx<'_>, data: &DataOut, i: usize) -> Result<Item, BuildError> {
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
        let src = Source::open(c)?;
        let mut buf = Vec::with_capacity(c.size as usize);
        src.append(0, c.size as usize, &mut buf, c.size)?;
        src.check_eof(c.size)?;
        if ctx.hash {
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
    let mut out = Vec::with_capacity(64 + body.bytes.len() + tail.len());
    let format = InodeFormat {
        extended: p.extended,
        layout: p.layout,
        bit4: false,
    }
    .encode();
    let i_u = match &inode.kind {
        Kind::CharDevice(ma, mi) | Kind::BlockDevice(ma, mi) => erofs_format::encode_rdev(*ma, *mi),
        Kind::Fifo | Kind::Socket => 0,
        _ => match &p.chunk {
            Some(ch) => u32::from(ch.chunkbits - plan.blkszbits),
            None => p.startblk,
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
    if let Some(ch) = &p.chunk {
        out.resize(out.len().next_multiple_of(4), 0);
        for &b in &ch.table {
            out.extend_from_slice(&b.to_le_bytes());
        }
    } else {
        out.extend_from_slice(tail);
    }
    debug_assert!(p.startblk != NULL_ADDR || p.layout == DataLayout::FlatInline);
    Ok((out, own_digest))
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

    #[test]
    fn a_file_that_changed_size_fails_the_build() {
        for (declared, actual) in [
            (10u64, &b"short"[..]),
            (3, b"longer"),
            (9000, &[1u8; 100][..]),
        ] {
            let tree = one_file(declared, actual);
            let err = crate::build_tree_to_writer(
                &tree,
                &mut Vec::new(),
                &Options::default(),
                &crate::NoProgress,
            )
            .unwrap_err();
            assert!(
                matches!(err, BuildError::ChangedSize { expected, .. } if expected == declared),
                "{err}"
            );
        }
    }
}
