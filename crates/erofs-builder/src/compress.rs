//! Compression: the `-z` options, fixed-output ("destSize") compression of one segment of a
//! file into pclusters, and the lcluster indexes of a file's extents.
//!
//! A segment is compressed the way mkfs.erofs cuts a file (see the shared
//! `erofs-compression.md`, section 1.2): the compressor is asked to fill one pcluster with as
//! much input as fits; if the pcluster, rounded up to blocks, would not be smaller than the
//! input it consumed, that input is stored raw in one-block PLAIN pclusters instead (the
//! gain check). Segments are independent, so the segments of a large file compress in
//! parallel; their boundaries are fixed by the file size alone, so the output does not
//! depend on timing.

use erofs_format::compress::{Algorithm, LI_D0_CBLKCNT, LI_D0_MAX, LclusterIndex, LclusterType};

use crate::BuildError;

/// A compressor and its level, as `-z` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compressor {
    /// `lz4`: LZ4's fast destSize compressor (no levels).
    Lz4,
    /// `lz4hc[,LEVEL]`: LZ4 HC, levels 0..=12 (default 9), the same on-disk format as lz4.
    Lz4Hc(u8),
    /// `deflate[,LEVEL]`: raw DEFLATE, levels 0..=9 (default 1, as mkfs.erofs).
    Deflate(u8),
}

impl Compressor {
    /// The on-disk algorithm.
    pub fn algorithm(self) -> Algorithm {
        match self {
            Self::Lz4 | Self::Lz4Hc(_) => Algorithm::Lz4,
            Self::Deflate(_) => Algorithm::Deflate,
        }
    }

    /// Parses one `ALG[,LEVEL]` item of `-z`. Every refusal names the item and what is
    /// accepted, so that the user learns it before any work starts.
    pub fn parse(item: &str) -> Result<Self, BuildError> {
        let (name, level) = match item.split_once(',') {
            Some((n, l)) => (n, Some(l)),
            None => (item, None),
        };
        let bad = |msg: String| BuildError::InvalidOption(format!("-z {item}: {msg}"));
        let level_in = |max: u8, default: u8| -> Result<u8, BuildError> {
            match level {
                None => Ok(default),
                Some(l) => match l.parse::<u8>() {
                    Ok(v) if v <= max => Ok(v),
                    _ => Err(bad(format!("level {l:?} is not in 0..={max}"))),
                },
            }
        };
        match name {
            "lz4" => {
                if level.is_some() {
                    return Err(bad("lz4 takes no level (use lz4hc for levels)".into()));
                }
                Ok(Self::Lz4)
            }
            "lz4hc" => Ok(Self::Lz4Hc(level_in(12, 9)?)),
            "deflate" => Ok(Self::Deflate(level_in(9, 1)?)),
            "lzma" | "zstd" | "libdeflate" => Err(bad(format!(
                "{name} is not implemented by this mkfs.erofs-rs yet (lz4, lz4hc and deflate are)"
            ))),
            _ => Err(bad(format!(
                "unknown algorithm {name:?} (known: lz4, lz4hc, lzma, deflate, zstd)"
            ))),
        }
    }

    /// Compresses a prefix of `src` into at most `dst.len()` bytes. Returns (bytes of `src`
    /// consumed, bytes written), or `None` when nothing useful fits.
    pub(crate) fn compress_fill(self, src: &[u8], dst: &mut [u8]) -> Option<(usize, usize)> {
        let r = match self {
            Self::Lz4 => lzzzz::lz4::compress_fill(src, dst),
            Self::Lz4Hc(level) => lzzzz::lz4_hc::compress_fill(src, dst, i32::from(level)),
            Self::Deflate(level) => return deflate_fill(src, dst, level),
        };
        match r {
            Ok((read, wrote)) if read > 0 && wrote > 0 => Some((read, wrote)),
            _ => None,
        }
    }
}

/// DEFLATE has no fixed-output mode, so search the longest prefix of `src` whose raw
/// DEFLATE stream fits `dst` (erofs-compression.md 4.3/4.4): start from a guess, grow it by
/// the achieved ratio while it fits, bisect once it does not. Deterministic: every step
/// depends on the input only.
fn deflate_fill(src: &[u8], dst: &mut [u8], level: u8) -> Option<(usize, usize)> {
    let cap = dst.len();
    let try_len = |n: usize| miniz_oxide::deflate::compress_to_vec(&src[..n], level);
    let mut best: Option<(usize, Vec<u8>)> = None;
    // `lo` fits (or is 0), `hi` does not (or is past the end).
    let (mut lo, mut hi) = (0usize, src.len() + 1);
    let mut n = src.len().min(4 * cap).max(1);
    for _ in 0..24 {
        let out = try_len(n);
        if out.len() <= cap {
            lo = n;
            let done = n == src.len() || out.len() + 16 >= cap;
            best = Some((n, out));
            if done {
                break;
            }
            // Grow by the achieved ratio, but stay below the first length that did not fit.
            let grown = (n as u128 * cap as u128 / best.as_ref()?.1.len().max(1) as u128) as usize;
            n = grown.clamp(n + 1, hi - 1).min(src.len());
        } else {
            hi = n;
            n = lo + (hi - lo) / 2;
        }
        if hi - lo <= 64 || n <= lo {
            break;
        }
    }
    let (read, out) = best?;
    // A stream that starts with a zero byte would be taken for padding by the reader.
    if out.first() == Some(&0) {
        return None;
    }
    dst[..out.len()].copy_from_slice(&out);
    Some((read, out.len()))
}

/// `-z` and `-C`: how regular files are compressed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompressOptions {
    /// The algorithms of `-z`, in order; the first compresses every file.
    pub compressors: Vec<Compressor>,
    /// The largest pcluster in bytes (`-C`), a multiple of the block size; 0 means one block.
    pub max_pcluster_bytes: u32,
}

impl CompressOptions {
    /// Parses `-z ALG[,LEVEL][:ALG2[,LEVEL]]...`.
    pub fn parse(z: &str) -> Result<Self, BuildError> {
        let compressors = z
            .split(':')
            .map(Compressor::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if compressors.len() > 1 {
            return Err(BuildError::InvalidOption(format!(
                "-z {z}: several algorithms in one image are not implemented yet"
            )));
        }
        Ok(Self {
            compressors,
            max_pcluster_bytes: 0,
        })
    }

    /// The first (default) compressor.
    pub fn primary(&self) -> Compressor {
        self.compressors.first().copied().unwrap_or(Compressor::Lz4)
    }

    /// Checks `-C` against the block size: a block multiple, at most 1 MiB (Linux 6.12
    /// refuses larger pclusters).
    pub fn validate(&self, blkszbits: u8) -> Result<(), BuildError> {
        let blksz = 1u32 << blkszbits;
        let c = self.max_pcluster_bytes;
        if c != 0
            && (!c.is_multiple_of(blksz)
                || u64::from(c) > erofs_format::compress::MAX_PCLUSTER_SIZE)
        {
            return Err(BuildError::InvalidOption(format!(
                "-C {c}: the pcluster size must be a multiple of the block size ({blksz}) \
                 and at most 1048576 (the largest pcluster Linux reads)"
            )));
        }
        if self.compressors.is_empty() {
            return Err(BuildError::InvalidOption("-z needs an algorithm".into()));
        }
        Ok(())
    }

    /// The pcluster size in bytes for block size `blksz`.
    pub fn pcluster_bytes(&self, blksz: u32) -> u32 {
        self.max_pcluster_bytes.max(blksz)
    }

    /// Whether pclusters may span several blocks (superblock `BIG_PCLUSTER`/`COMPR_CFGS`,
    /// CBLKCNT in the indexes): with `-C` above a block, and always for an algorithm other
    /// than LZ4, whose configuration record needs `COMPR_CFGS`, the same bit.
    pub fn big_pclusters(&self, blksz: u32) -> bool {
        self.pcluster_bytes(blksz) > blksz || self.primary().algorithm() != Algorithm::Lz4
    }
}

/// One extent of a compressed file: `len` decoded bytes from one pcluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Decoded bytes.
    pub len: u32,
    /// The pcluster's first block: relative to its segment's output until the writer places
    /// it, then absolute.
    pub blk: u32,
    /// The pcluster's length in blocks.
    pub blocks: u32,
    /// Stored uncompressed (PLAIN).
    pub raw: bool,
}

/// A compressed segment: whole pclusters back to back, and the extents they decode to.
#[derive(Debug, Default)]
pub struct Compressed {
    /// Block-aligned pcluster data.
    pub data: Vec<u8>,
    /// Extents in file order; `blk` relative to the start of `data`.
    pub extents: Vec<Extent>,
}

/// Compresses `src`, the bytes of one segment, into pclusters of at most `pcluster` bytes.
/// `at_end`: the segment ends the file, so that a last piece of at most one block is stored
/// raw without trying (mkfs.erofs does the same; it cannot gain a block).
pub fn compress_segment(
    c: Compressor,
    src: &[u8],
    blksz: usize,
    pcluster: usize,
    at_end: bool,
    out: &mut Compressed,
    scratch: &mut Vec<u8>,
) {
    out.data.clear();
    out.extents.clear();
    scratch.resize(pcluster, 0);
    let mut pos = 0;
    while pos < src.len() {
        let rest = &src[pos..];
        let fill = if at_end && rest.len() <= blksz {
            None
        } else {
            // An extent decodes to at most 12 MiB in Linux; also bounds very compressible
            // input per call.
            let max_in = rest
                .len()
                .min(erofs_format::compress::MAX_EXTENT_DECODED as usize);
            c.compress_fill(&rest[..max_in], scratch)
        };
        match fill {
            Some((read, wrote)) if wrote.next_multiple_of(blksz) < read => {
                let plen = wrote.next_multiple_of(blksz);
                let start = out.data.len();
                // 0padding: the stream ends at the pcluster's end, zeroes in front.
                out.data.resize(start + plen, 0);
                out.data[start + plen - wrote..].copy_from_slice(&scratch[..wrote]);
                out.extents.push(Extent {
                    len: read as u32,
                    blk: (start / blksz) as u32,
                    blocks: (plen / blksz) as u32,
                    raw: false,
                });
                pos += read;
            }
            fill => {
                // Incompressible: what the compressor took (at most a pcluster) goes raw,
                // one block per PLAIN pcluster. Every raw extent but the last of the
                // segment decodes a whole block, so that it reaches the next lcluster and
                // the extent after it starts in an lcluster of its own.
                let took = fill.map_or(rest.len(), |(read, _)| read);
                let n = if took >= rest.len() {
                    rest.len()
                } else {
                    (took.min(pcluster) / blksz * blksz).clamp(blksz, rest.len())
                };
                for chunk in rest[..n].chunks(blksz) {
                    let start = out.data.len();
                    out.data.resize(start + blksz, 0);
                    out.data[start..start + chunk.len()].copy_from_slice(chunk);
                    out.extents.push(Extent {
                        len: chunk.len() as u32,
                        blk: (start / blksz) as u32,
                        blocks: 1,
                        raw: true,
                    });
                }
                pos += n;
            }
        }
    }
}

/// The full lcluster indexes (one 8-byte record per lcluster, lcluster = block) of a file of
/// `size` bytes made of `extents` with absolute block addresses (`erofs-compression.md` 1.3).
/// `big`: the image has big pclusters, so the first NONHEAD after a HEAD carries the
/// pcluster's block count (CBLKCNT).
pub fn full_indexes(extents: &[Extent], size: u64, blkszbits: u8, big: bool) -> Vec<LclusterIndex> {
    let lcsize = 1u64 << blkszbits;
    let mut out = Vec::with_capacity(size.div_ceil(lcsize) as usize);
    let mut clusterofs = 0u64;
    for e in extents {
        let kind = if e.raw {
            LclusterType::Plain
        } else {
            LclusterType::Head1
        };
        let mut d1 = (clusterofs + u64::from(e.len)) >> blkszbits;
        out.push(LclusterIndex::head(kind, clusterofs as u16, e.blk, false));
        if d1 > 0 {
            let mut d0 = 1u64;
            while d1 > 1 {
                d1 -= 1;
                let delta0 = if d0 == 1 && big {
                    LI_D0_CBLKCNT | e.blocks as u16
                } else {
                    d0.min(u64::from(LI_D0_MAX)) as u16
                };
                out.push(LclusterIndex::nonhead(
                    delta0,
                    d1.min(u64::from(u16::MAX)) as u16,
                ));
                d0 += 1;
            }
            clusterofs = (clusterofs + u64::from(e.len)) & (lcsize - 1);
        } else {
            // Starts and ends in one lcluster: only the file's last extent does (the
            // writer cuts every other one to reach the next lcluster), so nothing follows.
            clusterofs = 0;
        }
    }
    debug_assert_eq!(
        out.len() as u64 + u64::from(clusterofs != 0),
        size.div_ceil(lcsize)
    );
    if clusterofs != 0 {
        // The terminator: where an extent would start, bounding the last one.
        out.push(LclusterIndex::head(
            LclusterType::Plain,
            clusterofs as u16,
            0,
            false,
        ));
    }
    out
}
