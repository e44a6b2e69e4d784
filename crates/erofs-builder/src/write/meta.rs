//! The metadata stage: the metadata area, written once the data stage has produced the
//! fingerprints and inline tails.
//!
//! A job encodes consecutive inode items (inode, xattr body with the fingerprint filled in,
//! inline tail, chunk table or compressed map) into one buffer, padding included, through
//! the encoding layer (`crate::encode`), the same function the layout sized them with.
//! Files that live entirely in their inode's block are read and hashed here, once.

use std::io::Write;

use erofs_format::{DataLayout, NULL_ADDR};
use sha2::{Digest, Sha256};

use super::{DataCtx, DataOut, Out, encode_dir};
use crate::encode::{InodeFields, Item, Payload, ZMap};
use crate::layout::{InodePlan, ZStored};
use crate::pipeline::{BufPool, run_ordered, run_unordered};
use crate::read::{DirCache, Source};
use crate::tree::Kind;
use crate::{BuildError, Progress};

/// Inode items per metadata job.
const META_JOB: usize = 1024;

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
pub(super) fn write_meta(
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
/// inline tail, the block map or chunk indexes (`encode::Item`), or a compressed file's map
/// (`encode::ZMap`). Reads the files that live wholly inline. Returns the digest
/// computed here, if any.
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
    let fields = InodeFields {
        extended: p.extended,
        layout,
        xattr_icount: body.icount(),
        mode: inode.mode(),
        size: p.size,
        i_u,
        ino: (i + 1) as u32,
        uid: inode.uid,
        gid: inode.gid,
        nlink: inode.nlink,
        mtime: inode.mtime,
        mtime_nsec: inode.mtime_nsec,
        // The plan chose a compact inode only where this exists.
        compact_mtime: crate::layout::TimeBase::of(&plan.superblock)
            .compact_mtime(inode.mtime, inode.mtime_nsec)
            .unwrap_or(0),
    };
    let digest = match (body.digest_offset, &digest) {
        (Some(off), Some(d)) => Some((off, d)),
        (Some(_), None) => {
            return Err(BuildError::Output(std::io::Error::other(format!(
                "inode {i}: fingerprint missing"
            ))));
        }
        (None, _) => None,
    };
    let payload = match (&p.chunk, z) {
        (Some(ch), _) => match ch.device {
            Some(device) => Payload::ChunkIndexes {
                device,
                blocks: &ch.table,
            },
            None => Payload::BlockMap(&ch.table),
        },
        // The map (`ZMap`) follows.
        (None, Some(ZStored::Compressed(_))) => Payload::None,
        (None, _) => Payload::Inline(tail),
    };
    Item {
        inode: fields,
        xattrs: &body.bytes,
        digest,
        payload,
    }
    .encode(out);
    if let Some(ZStored::Compressed(zf)) = z {
        ZMap {
            file: zf,
            size: p.size,
            blkszbits: plan.blkszbits,
            big: plan.big_pclusters,
            compact: layout == DataLayout::CompressedCompact,
        }
        .encode(out, item_start)?;
    }
    debug_assert!(p.startblk != NULL_ADDR || layout == DataLayout::FlatInline);
    Ok(own_digest)
}
