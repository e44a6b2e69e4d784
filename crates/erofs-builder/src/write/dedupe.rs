//! `-E dedupe`: an extent whose decoded bytes equal those of a pcluster already written
//! (decoded the same way) points at that pcluster instead of storing its own.
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

use std::collections::HashMap;

use erofs_format::compress::Algorithm;
use sha2::{Digest, Sha256};

use crate::BuildError;
use crate::compress::{Compressed, Extent};

/// The SHA-256 of the decoded bytes of each of `extents` (consecutive pieces of `src`,
/// from its start), but the last `skip_last` ones (an inline tail, never shared).
pub(super) fn extent_digests(src: &[u8], extents: &[Extent], skip_last: bool) -> Vec<[u8; 32]> {
    let n = extents.len() - usize::from(skip_last && !extents.is_empty());
    let mut at = 0usize;
    extents[..n]
        .iter()
        .map(|e| {
            let d = Sha256::digest(&src[at..at + e.len as usize]).into();
            at += e.len as usize;
            d
        })
        .collect()
}

/// What makes two pclusters interchangeable for an extent: the same decoded bytes, decoded
/// the same way (stored raw, or by the same algorithm).
#[derive(Hash, PartialEq, Eq)]
struct Key {
    algorithm: Option<Algorithm>,
    len: u32,
    digest: [u8; 32],
}

/// The pclusters written so far, by content.
pub(super) struct Dedupe {
    seen: HashMap<Key, (u32, u32)>,
    blkszbits: u8,
    /// The image has big pclusters: a pcluster of several blocks needs its CBLKCNT index.
    big: bool,
    /// Blocks not written because an earlier pcluster was reused.
    pub saved_blocks: u64,
}

impl Dedupe {
    pub(super) fn new(blkszbits: u8, big: bool) -> Self {
        Self {
            seen: HashMap::new(),
            blkszbits,
            big,
            saved_blocks: 0,
        }
    }

    /// Places the pclusters of segment `z` (relative addresses) from block `next` on,
    /// writing through `put` (bytes, block) only those whose content is new, and returns
    /// the segment's extents at absolute addresses and the blocks written. `digests` are
    /// the extents' ([`extent_digests`]); an extent past them (an inline tail) is given
    /// the block where a pcluster after the one before it would start. `pos`: the
    /// file offset where the segment starts.
    pub(super) fn place(
        &mut self,
        z: &Compressed,
        digests: &[[u8; 32]],
        algorithm: Algorithm,
        mut pos: u64,
        next: u64,
        mut put: impl FnMut(&[u8], u64) -> Result<(), BuildError>,
    ) -> Result<(Vec<Extent>, u64), BuildError> {
        let blksz = 1usize << self.blkszbits;
        let lcmask = (1u64 << self.blkszbits) - 1;
        let mut out = Vec::with_capacity(z.extents.len());
        let mut written = 0u64;
        // New pclusters not yet written, contiguous in `z`: (first relative block, blocks,
        // where they go).
        let mut run: Option<(u32, u32, u64)> = None;
        let mut flush = |run: &mut Option<(u32, u32, u64)>| -> Result<(), BuildError> {
            match run.take() {
                Some((from, n, at)) => put(
                    &z.data[from as usize * blksz..(from + n) as usize * blksz],
                    at,
                ),
                None => Ok(()),
            }
        };
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
            let key = Key {
                algorithm: (!e.raw).then_some(algorithm),
                len: e.len,
                digest: *digest,
            };
            // A pcluster of several blocks needs the NONHEAD after its HEAD for its CBLKCNT:
            // the extent must reach two lclusters past the one it starts in.
            let cblkcnt_fits = |blocks: u32| {
                blocks <= 1
                    || !self.big
                    || ((pos & lcmask) + u64::from(e.len)) >> self.blkszbits >= 2
            };
            match self.seen.get(&key) {
                Some(&(blk, blocks)) if cblkcnt_fits(blocks) => {
                    self.saved_blocks += u64::from(e.blocks);
                    out.push(Extent { blk, blocks, ..*e });
                }
                _ => {
                    let blk = next + written;
                    run = match run {
                        Some((from, n, at)) if from + n == e.blk => Some((from, n + e.blocks, at)),
                        _ => {
                            flush(&mut run)?;
                            Some((e.blk, e.blocks, blk))
                        }
                    };
                    self.seen.entry(key).or_insert((blk as u32, e.blocks));
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
        Ok((out, written))
    }
}
