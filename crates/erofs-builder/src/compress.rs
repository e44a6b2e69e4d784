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

use erofs_format::compress::{
    Algorithm, ComprCfg, LI_D0_CBLKCNT, LI_D0_MAX, LclusterIndex, LclusterType,
};

use crate::BuildError;

/// A compressor and its level, as `-z` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compressor {
    /// `lz4`: LZ4's fast destSize compressor (no levels).
    Lz4,
    /// `lz4hc[,LEVEL]`: LZ4 HC, levels 0..=12 (default 9), the same on-disk format as lz4.
    Lz4Hc(u8),
    /// `deflate[,LEVEL]`: raw DEFLATE, levels 0..=9 (default 1, as mkfs.erofs, whose own
    /// encoder these levels name), written by libdeflate at a level that fills pclusters
    /// about as well (`libdeflate_level`).
    Deflate(u8),
    /// `libdeflate[,LEVEL]`: raw DEFLATE by libdeflate, its levels 0..=12 (default 1, as
    /// mkfs.erofs's libdeflate backend); the same on-disk algorithm as `deflate`.
    Libdeflate(u8),
    /// `lzma[,LEVEL][,dictsize=BYTES]`: MicroLZMA, liblzma's presets 0..=9 and their
    /// "extreme" variants 100..=109 (default 6).
    Lzma {
        /// The preset, 0..=9 or 100..=109.
        level: u8,
        /// The dictionary (4 KiB..=8 MiB); `None` until [`CompressOptions::resolved`] picks
        /// the default from the largest pcluster.
        dict_size: Option<u32>,
    },
    /// `zstd[,LEVEL][,dictsize=BYTES]`: Zstandard frames, levels 0..=22 (default 3; 0 is
    /// libzstd's default level).
    Zstd {
        /// The level.
        level: u8,
        /// log2 of the window (10..=20); `None` until resolved.
        window_log: Option<u8>,
    },
}

/// The LZMA preset mkfs.erofs uses by default.
const LZMA_DEFAULT_LEVEL: u8 = 6;
/// libzstd's default level, which mkfs.erofs keeps.
const ZSTD_DEFAULT_LEVEL: u8 = 3;
/// libzstd's strongest level.
const ZSTD_MAX_LEVEL: u8 = 22;
/// Smallest zstd window the format has (`ZSTD_WINDOWLOG_ABSOLUTEMIN`), the base of the
/// configuration record's `windowlog` field.
const ZSTD_MIN_WINDOW_LOG: u8 = 10;
/// Room a zstd frame may take past the pcluster while searching (mkfs.erofs's slack): a
/// frame that does not fit is cheaper to detect than to bound.
const ZSTD_SLACK: usize = 32;

impl Compressor {
    /// The on-disk algorithm.
    pub fn algorithm(self) -> Algorithm {
        match self {
            Self::Lz4 | Self::Lz4Hc(_) => Algorithm::Lz4,
            Self::Deflate(_) | Self::Libdeflate(_) => Algorithm::Deflate,
            Self::Lzma { .. } => Algorithm::Lzma,
            Self::Zstd { .. } => Algorithm::Zstd,
        }
    }

    /// Parses one `ALG[,LEVEL][,level=N][,dictsize=BYTES]` item of `-z` (mkfs.erofs's
    /// spellings). Every refusal names the item and what is accepted, so that the user
    /// learns it before any work starts.
    pub fn parse(item: &str) -> Result<Self, BuildError> {
        let mut parts = item.split(',');
        let name = parts.next().unwrap_or_default();
        let bad = |msg: String| BuildError::InvalidOption(format!("-z {item}: {msg}"));
        let mut level: Option<&str> = None;
        let mut dict: Option<&str> = None;
        for p in parts {
            let slot = match p.split_once('=') {
                None | Some(("level", _)) => &mut level,
                Some(("dictsize", _)) => &mut dict,
                Some((key, _)) => {
                    return Err(bad(format!(
                        "unknown setting {key:?} (known: LEVEL, level=LEVEL, dictsize=BYTES)"
                    )));
                }
            };
            if slot.is_some() {
                return Err(bad(format!("{p:?} given twice")));
            }
            *slot = Some(p.split_once('=').map_or(p, |(_, v)| v));
        }
        let level_in = |ok: &dyn Fn(u8) -> bool, what: &str, default: u8| match level {
            None => Ok(default),
            Some(l) => match l.parse::<u8>() {
                Ok(v) if ok(v) => Ok(v),
                _ => Err(bad(format!("level {l:?} is not in {what}"))),
            },
        };
        let dict_in = |min: u32, max: u32| -> Result<Option<u32>, BuildError> {
            match dict {
                None => Ok(None),
                Some(d) => match d.parse::<u32>() {
                    Ok(v) if (min..=max).contains(&v) => Ok(Some(v)),
                    _ => Err(bad(format!(
                        "dictsize {d:?} is not in {min}..={max} (what Linux reads)"
                    ))),
                },
            }
        };
        let no_dict = |name: &str| -> Result<(), BuildError> {
            match dict {
                Some(_) => Err(bad(format!("{name} takes no dictsize (lzma and zstd do)"))),
                None => Ok(()),
            }
        };
        match name {
            "lz4" => {
                no_dict(name)?;
                if level.is_some() {
                    return Err(bad("lz4 takes no level (use lz4hc for levels)".into()));
                }
                Ok(Self::Lz4)
            }
            "lz4hc" => {
                no_dict(name)?;
                Ok(Self::Lz4Hc(level_in(&|v| v <= 12, "0..=12", 9)?))
            }
            "deflate" => {
                no_dict(name)?;
                Ok(Self::Deflate(level_in(&|v| v <= 9, "0..=9", 1)?))
            }
            "lzma" => Ok(Self::Lzma {
                level: level_in(
                    &|v| v <= 9 || (100..=109).contains(&v),
                    "0..=9 or 100..=109 (extreme)",
                    LZMA_DEFAULT_LEVEL,
                )?,
                dict_size: dict_in(
                    erofs_format::compress::LZMA_MIN_DICT_SIZE,
                    erofs_format::compress::LZMA_MAX_DICT_SIZE,
                )?,
            }),
            "zstd" => Ok(Self::Zstd {
                level: level_in(&|v| v <= ZSTD_MAX_LEVEL, "0..=22", ZSTD_DEFAULT_LEVEL)?,
                // The window is a power of two: a dictsize between two is rounded down.
                window_log: dict_in(
                    1 << ZSTD_MIN_WINDOW_LOG,
                    1 << (ZSTD_MIN_WINDOW_LOG + erofs_format::compress::ZSTD_MAX_WINDOWLOG),
                )?
                .map(|d| d.ilog2() as u8),
            }),
            "libdeflate" => {
                no_dict(name)?;
                Ok(Self::Libdeflate(level_in(&|v| v <= 12, "0..=12", 1)?))
            }
            _ => Err(bad(format!(
                "unknown algorithm {name:?} (known: lz4, lz4hc, lzma, deflate, zstd)"
            ))),
        }
    }

    /// The compressor with its defaults filled in for pclusters of at most `max_pcluster`
    /// bytes (erofs-compression.md 3.2): an LZMA dictionary of 4 pclusters within
    /// 32 KiB..=8 MiB, a zstd window of 8 pclusters rounded down to a power of two, at most
    /// 1 MiB.
    pub fn resolved(self, max_pcluster: u32) -> Self {
        match self {
            Self::Lzma {
                level,
                dict_size: None,
            } => Self::Lzma {
                level,
                dict_size: Some(
                    max_pcluster
                        .saturating_mul(4)
                        .clamp(32 << 10, erofs_format::compress::LZMA_MAX_DICT_SIZE),
                ),
            },
            Self::Zstd {
                level,
                window_log: None,
            } => {
                let max_log = ZSTD_MIN_WINDOW_LOG + erofs_format::compress::ZSTD_MAX_WINDOWLOG;
                let window = max_pcluster.saturating_mul(8).max(1 << ZSTD_MIN_WINDOW_LOG);
                Self::Zstd {
                    level,
                    window_log: Some((window.ilog2() as u8).min(max_log)),
                }
            }
            c => c,
        }
    }

    /// The superblock configuration record this compressor needs (resolved first).
    fn config(self, max_pcluster_blocks: u16) -> ComprCfg {
        match self {
            Self::Lz4 | Self::Lz4Hc(_) => ComprCfg::Lz4 {
                max_distance: u16::MAX,
                max_pclusterblks: max_pcluster_blocks,
            },
            Self::Deflate(_) | Self::Libdeflate(_) => ComprCfg::Deflate { windowbits: 15 },
            Self::Lzma { dict_size, .. } => ComprCfg::Lzma {
                dict_size: dict_size.unwrap_or(erofs_format::compress::LZMA_MAX_DICT_SIZE),
                format: 0,
            },
            Self::Zstd { window_log, .. } => ComprCfg::Zstd {
                format: 0,
                windowlog: window_log
                    .unwrap_or(ZSTD_MIN_WINDOW_LOG + erofs_format::compress::ZSTD_MAX_WINDOWLOG)
                    - ZSTD_MIN_WINDOW_LOG,
            },
        }
    }

    /// Compresses a prefix of `src` into at most `dst.len()` bytes. Returns (bytes of `src`
    /// consumed, bytes written), or `None` when nothing useful fits.
    ///
    /// `guess`: how much input the previous pcluster of the segment took, where the
    /// searching compressors (DEFLATE, zstd) start (mkfs.erofs starts at 15/16 of it too);
    /// a function of the segment alone, so the output does not depend on timing.
    pub(crate) fn compress_fill(
        self,
        src: &[u8],
        dst: &mut [u8],
        guess: Option<usize>,
    ) -> Option<(usize, usize)> {
        let r = match self {
            Self::Lz4 => lzzzz::lz4::compress_fill(src, dst),
            Self::Lz4Hc(level) => lzzzz::lz4_hc::compress_fill(src, dst, i32::from(level)),
            Self::Deflate(level) => return deflate_fill(src, dst, libdeflate_level(level), guess),
            Self::Libdeflate(level) => return deflate_fill(src, dst, level, guess),
            Self::Lzma { level, dict_size } => {
                return microlzma::compress_fill(src, dst, level, dict_size.unwrap_or(32 << 10));
            }
            Self::Zstd { level, window_log } => {
                let wlog = window_log.unwrap_or(15);
                let cap = dst.len();
                return search_fill(src, dst, guess, |n| zstd_frame(&src[..n], level, wlog, cap));
            }
        };
        match r {
            Ok((read, wrote)) if read > 0 && wrote > 0 => Some((read, wrote)),
            _ => None,
        }
    }
}

/// The libdeflate level for a `-zdeflate` level. mkfs.erofs's `deflate` levels name the
/// effort of its own encoder (kite), 1..=9; libdeflate at the same number fills pclusters
/// at least as full (the 1.9.3 reference tree: 0.978x of mkfs.erofs's image at level 9,
/// 0.88x at level 1 with fragments) in a third of the time miniz_oxide, this builder's
/// encoder before, took. Level 0, which kite refuses, is libdeflate's 1: its 0 stores
/// without compressing.
fn libdeflate_level(level: u8) -> u8 {
    level.max(1)
}

/// DEFLATE into a pcluster: libdeflate has no fixed-output mode, so [`search_fill`] looks
/// for the longest prefix whose stream fits. The compressor (its tables are hundreds of KiB
/// at high levels) is kept per thread and level.
fn deflate_fill(
    src: &[u8],
    dst: &mut [u8],
    level: u8,
    guess: Option<usize>,
) -> Option<(usize, usize)> {
    use std::cell::RefCell;
    thread_local! {
        static COMPRESSORS: RefCell<Vec<(u8, libdeflater::Compressor)>> =
            const { RefCell::new(Vec::new()) };
    }
    COMPRESSORS.with(|cs| {
        let mut cs = cs.borrow_mut();
        let i = match cs.iter().position(|(l, _)| *l == level) {
            Some(i) => i,
            None => {
                let lvl = libdeflater::CompressionLvl::new(i32::from(level)).ok()?;
                cs.push((level, libdeflater::Compressor::new(lvl)));
                cs.len() - 1
            }
        };
        let c = &mut cs[i].1;
        let cap = dst.len();
        search_fill(src, dst, guess, |n| {
            // Room past the pcluster, as mkfs.erofs gives it: a stream a little too long is
            // reported as such rather than as a failure to fit.
            let mut out = vec![0u8; cap + 9];
            let len = c.deflate_compress(&src[..n], &mut out).ok()?;
            out.truncate(len);
            Some(out)
        })
    })
}

/// One zstd frame of `src` at `level` with a window of `1 << wlog`, or `None` when it
/// would not fit `cap` bytes plus the search's slack. The context is kept per thread:
/// creating one per pcluster would cost more than compressing a 4 KiB pcluster.
fn zstd_frame(src: &[u8], level: u8, wlog: u8, cap: usize) -> Option<Vec<u8>> {
    use std::cell::RefCell;
    use zstd::zstd_safe::CParameter;
    type Cached = Option<((u8, u8), zstd::bulk::Compressor<'static>)>;
    thread_local! {
        static CCTX: RefCell<Cached> = const { RefCell::new(None) };
    }
    CCTX.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.as_ref().is_none_or(|(key, _)| *key != (level, wlog)) {
            let mut c = zstd::bulk::Compressor::new(i32::from(level)).ok()?;
            // The kernel sizes its decoder for the configured window: a frame must not
            // ask for more. Checksums cost bytes the kernel does not check.
            c.set_parameter(CParameter::WindowLog(u32::from(wlog)))
                .ok()?;
            c.set_parameter(CParameter::ChecksumFlag(false)).ok()?;
            *cached = Some(((level, wlog), c));
        }
        let (_, c) = cached.as_mut()?;
        let mut out = vec![0u8; cap + ZSTD_SLACK];
        let n = c.compress_to_buffer(src, &mut out[..]).ok()?;
        out.truncate(n);
        Some(out)
    })
}

/// MicroLZMA through liblzma's own encoder, which stops when the output is full and
/// reports how much input that output decodes to: a destSize compressor.
#[allow(unsafe_code)]
mod microlzma {
    use liblzma_sys as sys;

    /// Compresses a prefix of `src` into `dst` with preset `level` (100..=109: the extreme
    /// variant of 0..=9) and a `dict_size`-byte dictionary.
    pub(super) fn compress_fill(
        src: &[u8],
        dst: &mut [u8],
        level: u8,
        dict_size: u32,
    ) -> Option<(usize, usize)> {
        let preset = if level >= 100 {
            u32::from(level - 100) | sys::LZMA_PRESET_EXTREME
        } else {
            u32::from(level)
        };
        // SAFETY: an all-zero lzma_options_lzma is a valid (if meaningless) value of this
        // plain C struct; lzma_lzma_preset overwrites every field it uses.
        let mut opts: sys::lzma_options_lzma = unsafe { std::mem::zeroed() };
        // SAFETY: `opts` is a valid, exclusively borrowed struct.
        if unsafe { sys::lzma_lzma_preset(&mut opts, preset) } != 0 {
            return None;
        }
        opts.dict_size = dict_size;
        // SAFETY: all-zero is LZMA_STREAM_INIT, the documented initial state.
        let mut strm: sys::lzma_stream = unsafe { std::mem::zeroed() };
        // SAFETY: `strm` is initialised and `opts` outlives the call (liblzma copies it).
        let ret = unsafe { sys::lzma_microlzma_encoder(&mut strm, &opts) };
        let result = if ret == sys::LZMA_OK {
            strm.next_in = src.as_ptr();
            strm.avail_in = src.len();
            strm.next_out = dst.as_mut_ptr();
            strm.avail_out = dst.len();
            // SAFETY: next_in/avail_in and next_out/avail_out describe live slices that
            // are not touched elsewhere during the call; liblzma writes only inside `dst`.
            let ret = unsafe { sys::lzma_code(&mut strm, sys::LZMA_FINISH) };
            (ret == sys::LZMA_STREAM_END)
                .then_some((strm.total_in as usize, strm.total_out as usize))
        } else {
            None
        };
        // SAFETY: `strm` was initialised by lzma_microlzma_encoder (or is still all-zero,
        // which lzma_end accepts); it is not used afterwards.
        unsafe { sys::lzma_end(&mut strm) };
        result.filter(|&(read, wrote)| {
            read > 0 && wrote > 0 && read <= src.len() && wrote <= dst.len()
        })
    }
}

/// For compressors without a fixed-output mode (DEFLATE, zstd): search the longest prefix
/// of `src` whose stream fits `dst` (erofs-compression.md 4.3/4.4). `try_len(n)` compresses
/// the first `n` bytes, `None` meaning "too large". Start from a guess (15/16 of `guess`,
/// the previous pcluster's input, else four pclusters), grow it by the achieved ratio while
/// it fits, bisect once it does not. Deterministic: every step depends on the input only.
fn search_fill(
    src: &[u8],
    dst: &mut [u8],
    guess: Option<usize>,
    mut try_len: impl FnMut(usize) -> Option<Vec<u8>>,
) -> Option<(usize, usize)> {
    let cap = dst.len();
    let mut best: Option<(usize, Vec<u8>)> = None;
    // `lo` fits (or is 0), `hi` does not (or is past the end).
    let (mut lo, mut hi) = (0usize, src.len() + 1);
    let mut n = guess.map_or(4 * cap, |g| g / 16 * 15).min(src.len()).max(1);
    for _ in 0..24 {
        match try_len(n) {
            Some(out) if out.len() <= cap => {
                lo = n;
                let done = n == src.len() || out.len() + 16 >= cap;
                let got = out.len().max(1);
                best = Some((n, out));
                if done {
                    break;
                }
                // Grow by the achieved ratio, but stay below the first length that did
                // not fit. When that length is the next one, `n` stays at `lo` and the
                // search ends below (a clamp would panic on the empty range).
                let grown = (n as u128 * cap as u128 / got as u128) as usize;
                n = grown.max(n + 1).min(hi - 1).min(src.len());
            }
            _ => {
                hi = n;
                n = lo + (hi - lo) / 2;
            }
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
    /// The algorithms of `-z`, in order; the first compresses every file that no hint
    /// sends to another.
    pub compressors: Vec<Compressor>,
    /// The largest pcluster in bytes (`-C`), a multiple of the block size; 0 means one block.
    pub max_pcluster_bytes: u32,
    /// `--compress-hints`: per-path pcluster sizes and algorithms, first match wins.
    pub hints: Vec<CompressHint>,
    /// `--max-extent-bytes`: the most bytes one extent decodes to; 0 means only Linux's
    /// own limit (12 MiB), which also bounds a larger value.
    pub max_extent_bytes: u32,
    /// `-E fragments=BYTES`: the packed inode's pcluster size, a multiple of the block size
    /// up to the largest pcluster; 0 means the default (`-C`'s), as mkfs.erofs.
    pub packed_pcluster_bytes: u32,
}

/// One line of a `--compress-hints` file: `PCLUSTER-BYTES [ALGORITHM-INDEX] REGEX`.
#[derive(Clone, Debug)]
pub struct CompressHint {
    /// The pcluster size for matching files, in bytes.
    pub pcluster_bytes: u32,
    /// Which `-z` algorithm compresses them (0: the first).
    pub algorithm: usize,
    /// Matched anywhere in the path relative to the source root, without a leading `/`
    /// (POSIX `regexec` semantics, as mkfs.erofs).
    pub pattern: regex::Regex,
}

impl PartialEq for CompressHint {
    fn eq(&self, other: &Self) -> bool {
        self.pcluster_bytes == other.pcluster_bytes
            && self.algorithm == other.algorithm
            && self.pattern.as_str() == other.pattern.as_str()
    }
}

impl Eq for CompressHint {}

impl CompressHint {
    /// Parses a `--compress-hints` file (mkfs.erofs's format): one rule per line,
    /// `PCLUSTER-BYTES [ALGORITHM-INDEX] REGEX`; blank lines and lines starting with `#`
    /// are skipped. `source` names the file in messages.
    pub fn parse_file(text: &str, source: &str) -> Result<Vec<Self>, BuildError> {
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |msg: String| {
                BuildError::InvalidOption(format!(
                    "--compress-hints {source}, line {}: {msg}",
                    i + 1
                ))
            };
            let mut words = line.split_whitespace();
            let size = words.next().unwrap_or_default();
            let pcluster_bytes = size
                .parse::<u32>()
                .map_err(|_| bad(format!("{size:?} is not a pcluster size in bytes")))?;
            let rest: Vec<&str> = words.collect();
            let (algorithm, pattern) = match rest.as_slice() {
                [pattern] => (0, *pattern),
                [index, pattern] => (
                    index
                        .parse::<usize>()
                        .map_err(|_| bad(format!("{index:?} is not an algorithm index")))?,
                    *pattern,
                ),
                _ => {
                    return Err(bad(
                        "expected PCLUSTER-BYTES [ALGORITHM-INDEX] REGEX".to_string()
                    ));
                }
            };
            let pattern = regex::Regex::new(pattern)
                .map_err(|e| bad(format!("invalid regex {pattern:?}: {e}")))?;
            out.push(Self {
                pcluster_bytes,
                algorithm,
                pattern,
            });
        }
        Ok(out)
    }
}

impl CompressOptions {
    /// Parses `-z ALG[,LEVEL][:ALG2[,LEVEL]]...`.
    pub fn parse(z: &str) -> Result<Self, BuildError> {
        let compressors = z
            .split(':')
            .map(Compressor::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if compressors.len() > usize::from(u8::MAX) {
            return Err(BuildError::InvalidOption(format!(
                "-z {z}: too many algorithms"
            )));
        }
        Ok(Self {
            compressors,
            max_pcluster_bytes: 0,
            hints: Vec::new(),
            max_extent_bytes: 0,
            packed_pcluster_bytes: 0,
        })
    }

    /// The first (default) compressor.
    pub fn primary(&self) -> Compressor {
        self.compressors.first().copied().unwrap_or(Compressor::Lz4)
    }

    /// Checks `-C` and the hints against the block size: block multiples, at most 1 MiB
    /// (Linux 6.12 refuses larger pclusters), algorithm indexes that `-z` has.
    pub fn validate(&self, blkszbits: u8) -> Result<(), BuildError> {
        let blksz = 1u32 << blkszbits;
        let c = self.max_pcluster_bytes;
        let bad_size = |c: u32| {
            !c.is_multiple_of(blksz) || u64::from(c) > erofs_format::compress::MAX_PCLUSTER_SIZE
        };
        if c != 0 && bad_size(c) {
            return Err(BuildError::InvalidOption(format!(
                "-C {c}: the pcluster size must be a multiple of the block size ({blksz}) \
                 and at most 1048576 (the largest pcluster Linux reads)"
            )));
        }
        if self.compressors.is_empty() {
            return Err(BuildError::InvalidOption("-z needs an algorithm".into()));
        }
        let m = self.max_extent_bytes;
        if m != 0 && m < blksz {
            // An extent shorter than an lcluster would start and end inside one, which only
            // a file's last extent may do.
            return Err(BuildError::InvalidOption(format!(
                "--max-extent-bytes={m}: an extent must be allowed at least one block \
                 ({blksz} bytes)"
            )));
        }
        let p = self.packed_pcluster_bytes;
        if p != 0 && (bad_size(p) || p > self.max_pcluster(blksz)) {
            return Err(BuildError::InvalidOption(format!(
                "-E fragments={p}: the packed inode's pcluster size must be a multiple of the \
                 block size ({blksz}) and at most the largest pcluster ({}, -C or a hint)",
                self.max_pcluster(blksz)
            )));
        }
        for h in &self.hints {
            let rule = format!(
                "--compress-hints rule \"{} {} {}\"",
                h.pcluster_bytes,
                h.algorithm,
                h.pattern.as_str()
            );
            if h.pcluster_bytes == 0 || bad_size(h.pcluster_bytes) {
                return Err(BuildError::InvalidOption(format!(
                    "{rule}: the pcluster size must be a non-zero multiple of the block size \
                     ({blksz}) and at most 1048576 (the largest pcluster Linux reads)"
                )));
            }
            if h.algorithm >= self.compressors.len() {
                return Err(BuildError::InvalidOption(format!(
                    "{rule}: algorithm index {} but -z names {} algorithm(s) (indexes from 0)",
                    h.algorithm,
                    self.compressors.len()
                )));
            }
        }
        Ok(())
    }

    /// The most bytes an extent may decode to: `--max-extent-bytes`, within Linux's limit.
    pub fn max_extent(&self) -> usize {
        let linux = erofs_format::compress::MAX_EXTENT_DECODED as usize;
        match self.max_extent_bytes {
            0 => linux,
            m => (m as usize).min(linux),
        }
    }

    /// The default pcluster size in bytes for block size `blksz` (`-C`, at least a block).
    pub fn pcluster_bytes(&self, blksz: u32) -> u32 {
        self.max_pcluster_bytes.max(blksz)
    }

    /// The largest pcluster any file may have: `-C` or a larger hint (mkfs.erofs raises its
    /// maximum to the hints' the same way).
    pub fn max_pcluster(&self, blksz: u32) -> u32 {
        self.hints
            .iter()
            .map(|h| h.pcluster_bytes)
            .fold(self.pcluster_bytes(blksz), u32::max)
    }

    /// Compressor `i` of `-z` with its defaults filled in.
    pub fn resolved(&self, i: usize, blksz: u32) -> Compressor {
        self.compressors
            .get(i)
            .copied()
            .unwrap_or(Compressor::Lz4)
            .resolved(self.max_pcluster(blksz))
    }

    /// The compressor index and pcluster size of the file at `path` (relative to the source
    /// root, no leading `/`): the first hint whose regex matches, else the first algorithm
    /// and `-C`.
    pub fn choose(&self, path: &str, blksz: u32) -> (usize, u32) {
        self.hints
            .iter()
            .find(|h| h.pattern.is_match(path))
            .map_or((0, self.pcluster_bytes(blksz)), |h| {
                (h.algorithm, h.pcluster_bytes)
            })
    }

    /// Whether pclusters may span several blocks (superblock `BIG_PCLUSTER`/`COMPR_CFGS`,
    /// CBLKCNT in the indexes): with a pcluster above a block, and always when an algorithm
    /// other than LZ4 is named, whose configuration record needs `COMPR_CFGS`, the same bit.
    pub fn big_pclusters(&self, blksz: u32) -> bool {
        self.max_pcluster(blksz) > blksz
            || self
                .compressors
                .iter()
                .any(|c| c.algorithm() != Algorithm::Lz4)
    }

    /// The superblock's algorithm bitmap with `COMPR_CFGS`: every algorithm `-z` names,
    /// used by a file or not (as mkfs.erofs).
    pub fn algorithm_bits(&self) -> u16 {
        self.compressors
            .iter()
            .fold(0, |bits, c| bits | c.algorithm().bit())
    }

    /// The configuration records, one per algorithm in increasing id order; several `-z`
    /// items of one algorithm share the record, which takes the largest dictionary.
    pub fn configs(&self, blksz: u32) -> Vec<ComprCfg> {
        let max_blocks = (self.max_pcluster(blksz) / blksz) as u16;
        let mut out: Vec<ComprCfg> = Vec::new();
        for alg in Algorithm::ALL {
            let merged = (0..self.compressors.len())
                .map(|i| self.resolved(i, blksz))
                .filter(|c| c.algorithm() == alg)
                .map(|c| c.config(max_blocks))
                .reduce(|a, b| match (a, b) {
                    (
                        ComprCfg::Lzma {
                            dict_size: x,
                            format,
                        },
                        ComprCfg::Lzma { dict_size: y, .. },
                    ) => ComprCfg::Lzma {
                        dict_size: x.max(y),
                        format,
                    },
                    (
                        ComprCfg::Zstd {
                            windowlog: x,
                            format,
                        },
                        ComprCfg::Zstd { windowlog: y, .. },
                    ) => ComprCfg::Zstd {
                        windowlog: x.max(y),
                        format,
                    },
                    (a, _) => a,
                });
            out.extend(merged);
        }
        out
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
    /// The pcluster decodes to more than this extent: only its first `len` bytes belong
    /// here (`PARTIAL_REF`, `-E dedupe`).
    pub partial: bool,
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
/// raw without trying (mkfs.erofs does the same; it cannot gain a block). No extent decodes
/// to more than `max_extent` bytes ([`CompressOptions::max_extent`], at least a block).
#[allow(clippy::too_many_arguments)]
pub fn compress_segment(
    c: Compressor,
    src: &[u8],
    blksz: usize,
    pcluster: usize,
    max_extent: usize,
    at_end: bool,
    out: &mut Compressed,
    scratch: &mut Vec<u8>,
) {
    let end = SegmentEnd {
        last: at_end,
        fragment: false,
        interlaced: false,
        raw_by_block: false,
    };
    compress_segment_ext(c, src, blksz, pcluster, max_extent, end, out, scratch);
}

/// How a segment's end is cut, and how its raw blocks are laid out.
#[derive(Clone, Copy, Debug, Default)]
pub struct SegmentEnd {
    /// The segment ends the file.
    pub last: bool,
    /// `-E fragments` (with `last`): the file's tail becomes a fragment, as mkfs.erofs cuts
    /// it: what is left once at most one pcluster remains, or a last piece that compresses,
    /// whole, below one pcluster. It is left out of `out`.
    pub fragment: bool,
    /// Raw pclusters are interlaced (advise `INTERLACED_PCLUSTER`): each byte sits at the
    /// in-block offset of its file offset. The segment starts on a block boundary.
    pub interlaced: bool,
    /// Incompressible input goes raw one block at a time, compression being tried again
    /// after each, so that a pcluster starts as soon as the data compresses again, as
    /// mkfs.erofs does with `-E dedupe` (without it, it stores what one try consumed).
    pub raw_by_block: bool,
}

/// [`compress_segment`] with fragments and interlaced raw blocks. Returns the length of
/// the fragment (the last bytes of `src`, not in `out`), 0 when there is none.
#[allow(clippy::too_many_arguments)]
pub fn compress_segment_ext(
    c: Compressor,
    src: &[u8],
    blksz: usize,
    pcluster: usize,
    max_extent: usize,
    end: SegmentEnd,
    out: &mut Compressed,
    scratch: &mut Vec<u8>,
) -> usize {
    out.data.clear();
    out.extents.clear();
    scratch.resize(pcluster, 0);
    let mut pos = 0;
    while pos < src.len() {
        match compress_step(c, src, pos, blksz, pcluster, max_extent, end, out, scratch) {
            Some(n) => pos += n,
            None => return src.len() - pos,
        }
    }
    0
}

/// One step of [`compress_segment_ext`] at `pos` in `src` (the segment): one compressed
/// pcluster, or a run of raw blocks. Appends to `out` and returns the bytes consumed (at
/// least one), or `None` when the rest of the segment is the file's fragment.
#[allow(clippy::too_many_arguments)]
pub(crate) fn compress_step(
    c: Compressor,
    src: &[u8],
    pos: usize,
    blksz: usize,
    pcluster: usize,
    max_extent: usize,
    end: SegmentEnd,
    out: &mut Compressed,
    scratch: &mut [u8],
) -> Option<usize> {
    let rest = &src[pos..];
    let fragment = end.last && end.fragment;
    if fragment && rest.len() <= pcluster {
        return None;
    }
    let fill = if end.last && !fragment && rest.len() <= blksz {
        None
    } else {
        // An extent decodes to at most 12 MiB in Linux (or `--max-extent-bytes`); also
        // bounds very compressible input per call.
        let max_in = rest.len().min(max_extent);
        // The previous pcluster's input, when it was compressed.
        let guess = out
            .extents
            .last()
            .filter(|e| !e.raw)
            .map(|e| e.len as usize);
        c.compress_fill(&rest[..max_in], &mut scratch[..pcluster], guess)
    };
    match fill {
        // The whole rest compresses below one pcluster: mkfs.erofs keeps it as the
        // fragment instead (checked after the gain check, as it does).
        Some((read, wrote))
            if fragment
                && read == rest.len()
                && wrote < pcluster
                && wrote.next_multiple_of(blksz) < read =>
        {
            None
        }
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
                partial: false,
            });
            Some(read)
        }
        fill => {
            // Incompressible: what the compressor took (at most a pcluster) goes raw,
            // one block per PLAIN pcluster. Every raw extent but the last of the
            // segment decodes a whole block, so that it reaches the next lcluster and
            // the extent after it starts in an lcluster of its own.
            let took = fill.map_or(rest.len(), |(read, _)| read);
            // (A fragment takes what is left after the raw blocks, as in mkfs.erofs.) A
            // compressor that gave up (a DEFLATE stream that opens with a stored block,
            // which would read as padding) spends one pcluster raw, not the segment.
            let n = if took >= rest.len() && rest.len() <= pcluster.max(blksz) && !fragment {
                rest.len()
            } else if end.raw_by_block {
                blksz.min(rest.len())
            } else {
                (took.min(pcluster) / blksz * blksz).clamp(blksz, rest.len())
            };
            let mut at = pos;
            for chunk in rest[..n].chunks(blksz) {
                let start = out.data.len();
                out.data.resize(start + blksz, 0);
                let block = &mut out.data[start..start + blksz];
                block[..chunk.len()].copy_from_slice(chunk);
                if end.interlaced {
                    block.rotate_right(at % blksz);
                }
                out.extents.push(Extent {
                    len: chunk.len() as u32,
                    blk: (start / blksz) as u32,
                    blocks: 1,
                    raw: true,
                    partial: false,
                });
                at += chunk.len();
            }
            Some(n)
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
        out.push(LclusterIndex::head(
            kind,
            clusterofs as u16,
            e.blk,
            e.partial,
        ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_fill_stops_when_growth_reaches_the_first_length_that_did_not_fit() {
        // `-zzstd` over /usr/share panicked here: 4096 bytes did not fit, then 2048 fitted
        // so well that growth was clamped to 4095, which fitted too, leaving nothing
        // between the longest fit and the first misfit to search.
        let src = vec![7u8; 4096];
        let mut dst = vec![0u8; 1024];
        let got = search_fill(&src, &mut dst, None, |n| (n < 4096).then(|| vec![1u8; 10]));
        assert_eq!(got, Some((4095, 10)));
        assert_eq!(&dst[..10], &[1u8; 10]);
    }

    fn text(len: usize) -> Vec<u8> {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for k in 0..(2 + x % 6) {
                out.push(b'a' + ((x >> (8 + 4 * k)) % 10) as u8);
            }
            out.push(b' ');
        }
        out.truncate(len);
        out
    }

    /// Pseudo-random (incompressible) bytes.
    fn noise(len: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    const MAX_EXTENT: usize = erofs_format::compress::MAX_EXTENT_DECODED as usize;

    fn cut(src: &[u8], pcluster: usize, interlaced: bool) -> (Compressed, usize) {
        let c = Compressor::parse("lz4").unwrap();
        let mut out = Compressed::default();
        let end = SegmentEnd {
            last: true,
            fragment: true,
            interlaced,
            raw_by_block: false,
        };
        let n = compress_segment_ext(
            c,
            src,
            4096,
            pcluster,
            MAX_EXTENT,
            end,
            &mut out,
            &mut Vec::new(),
        );
        let decoded: usize = out.extents.iter().map(|e| e.len as usize).sum();
        assert_eq!(
            decoded + n,
            src.len(),
            "pclusters and fragment cover the input"
        );
        (out, n)
    }

    #[test]
    fn fragments_are_cut_as_mkfs_erofs_cuts_them() {
        // At most one pcluster: wholly a fragment, without trying to compress it.
        for len in [1, 100, 4096] {
            let (out, n) = cut(&text(len), 4096, false);
            assert_eq!((out.extents.len(), n), (0, len));
        }
        let (out, n) = cut(&text(60_000), 65536, false);
        assert_eq!((out.extents.len(), n), (0, 60_000));
        // Larger: full pclusters, then the last piece that compresses whole below one.
        let (out, n) = cut(&text(40_000), 4096, false);
        assert!(out.extents.len() >= 3 && out.extents.iter().all(|e| !e.raw));
        assert!(n > 0 && n < 40_000 - 4096, "tail {n}");
        // Larger than a pcluster, but compressing whole into less than one: a fragment.
        let (out, n) = cut(&text(1000).repeat(100), 65536, false);
        assert_eq!(
            (out.extents.len(), n),
            (0, 100_000),
            "below one pcluster compressed"
        );
        // Incompressible: raw blocks, then what is left once at most a pcluster remains.
        let (out, n) = cut(&noise(5000), 4096, false);
        assert_eq!(out.extents.len(), 1);
        assert!(out.extents[0].raw && out.extents[0].len == 4096);
        assert_eq!(n, 904);
    }

    #[test]
    fn interlaced_raw_blocks_put_each_byte_at_its_in_block_offset() {
        // Text, then noise: the raw blocks start mid-block.
        let mut src = text(9000);
        src.extend_from_slice(&noise(20_000));
        for interlaced in [false, true] {
            let (out, _) = cut(&src, 4096, interlaced);
            let mut at = 0usize;
            let mut checked = 0;
            for e in &out.extents {
                let len = e.len as usize;
                if e.raw {
                    let block = &out.data[e.blk as usize * 4096..][..4096];
                    let shift = if interlaced { at % 4096 } else { 0 };
                    for k in 0..len {
                        assert_eq!(block[(shift + k) % 4096], src[at + k]);
                    }
                    checked += usize::from(!at.is_multiple_of(4096));
                }
                at += len;
            }
            assert!(checked > 0, "a raw block starting mid-block was checked");
        }
    }

    #[test]
    fn deflate_and_libdeflate_are_one_algorithm_with_their_own_level_ranges() {
        let parse = |s| Compressor::parse(s).ok();
        assert_eq!(parse("deflate"), Some(Compressor::Deflate(1)));
        assert_eq!(parse("libdeflate"), Some(Compressor::Libdeflate(1)));
        assert_eq!(parse("libdeflate,12"), Some(Compressor::Libdeflate(12)));
        for bad in ["deflate,10", "libdeflate,13", "libdeflate,dictsize=4096"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(
            Compressor::Libdeflate(12).algorithm(),
            Compressor::Deflate(9).algorithm()
        );
        // Both fill a pcluster with a stream that opens with a nonzero byte, and more
        // input goes in at a higher level.
        let text: Vec<u8> = (0..40_000u32)
            .flat_map(|i| format!("line {} of {}\n", i % 977, i % 13).into_bytes())
            .collect();
        let mut read = Vec::new();
        for c in [
            Compressor::Deflate(0),
            Compressor::Libdeflate(1),
            Compressor::Libdeflate(12),
        ] {
            let mut dst = vec![0u8; 4096];
            let (r, w) = c.compress_fill(&text, &mut dst, None).expect("fits");
            assert!(w <= 4096 && w > 4000 && dst[0] != 0, "{c:?}: {w} bytes");
            let mut back = vec![0u8; r];
            let n = miniz_oxide::inflate::decompress_slice_iter_to_slice(
                &mut back,
                std::iter::once(&dst[..w]),
                false,
                true,
            )
            .expect("a valid raw DEFLATE stream");
            assert_eq!(&back[..n], &text[..r], "{c:?}");
            read.push(r);
        }
        assert!(
            read[2] > read[1],
            "level 12 packs more than level 1: {read:?}"
        );
    }

    #[test]
    fn lzma_and_zstd_take_the_levels_mkfs_erofs_takes() {
        let lzma = |s| Compressor::parse(s).ok();
        assert_eq!(
            lzma("lzma"),
            Some(Compressor::Lzma {
                level: 6,
                dict_size: None
            })
        );
        for ok in ["lzma,0", "lzma,9", "lzma,100", "lzma,109", "lzma,level=105"] {
            assert!(lzma(ok).is_some(), "{ok}");
        }
        assert_eq!(
            lzma("lzma,109,dictsize=65536"),
            Some(Compressor::Lzma {
                level: 109,
                dict_size: Some(65536)
            })
        );
        assert_eq!(
            lzma("zstd"),
            Some(Compressor::Zstd {
                level: 3,
                window_log: None
            })
        );
        // A dictsize between powers of two is rounded down to the window below it.
        assert_eq!(
            lzma("zstd,22,dictsize=100000"),
            Some(Compressor::Zstd {
                level: 22,
                window_log: Some(16)
            })
        );
        for (bad, says) in [
            ("lzma,10", "0..=9 or 100..=109"),
            ("lzma,99", "0..=9 or 100..=109"),
            ("lzma,110", "0..=9 or 100..=109"),
            ("lzma,-1", "0..=9 or 100..=109"),
            ("zstd,23", "0..=22"),
            ("lzma,dictsize=4095", "4096..=8388608"),
            ("lzma,dictsize=8388609", "4096..=8388608"),
            ("zstd,dictsize=2097152", "1024..=1048576"),
            ("lz4hc,dictsize=4096", "takes no dictsize"),
            ("zstd,3,5", "given twice"),
            ("zstd,lc=3", "unknown setting"),
            ("xz", "unknown algorithm"),
        ] {
            let err = Compressor::parse(bad).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn configuration_records_follow_the_largest_pcluster_one_per_algorithm() {
        // The defaults of erofs-compression.md 3.2 at one 4 KiB block: a 32 KiB LZMA
        // dictionary and a 32 KiB zstd window (windowlog field 5), no LZ4 record needed.
        let one = |z: &str| CompressOptions::parse(z).unwrap().configs(4096);
        assert_eq!(
            one("lzma"),
            [ComprCfg::Lzma {
                dict_size: 32 << 10,
                format: 0
            }]
        );
        assert_eq!(
            one("zstd"),
            [ComprCfg::Zstd {
                format: 0,
                windowlog: 5
            }]
        );
        // 64 KiB pclusters: dictionary 4x, window 8x; records in algorithm id order
        // whatever the -z order; two lzma items share one record with the larger dictionary.
        let mut z = CompressOptions::parse("zstd:lz4hc:lzma:lzma,dictsize=1048576").unwrap();
        z.max_pcluster_bytes = 65536;
        assert!(z.big_pclusters(4096));
        assert_eq!(
            z.algorithm_bits(),
            Algorithm::Lz4.bit() | Algorithm::Lzma.bit() | Algorithm::Zstd.bit()
        );
        assert_eq!(
            z.configs(4096),
            [
                ComprCfg::Lz4 {
                    max_distance: u16::MAX,
                    max_pclusterblks: 16
                },
                ComprCfg::Lzma {
                    dict_size: 1 << 20,
                    format: 0
                },
                ComprCfg::Zstd {
                    format: 0,
                    windowlog: 9
                },
            ]
        );
        // A hint larger than -C raises the largest pcluster (and the LZ4 record), and the
        // zstd window stops at 1 MiB.
        let mut z = CompressOptions::parse("lz4:zstd").unwrap();
        z.hints = CompressHint::parse_file("1048576 1 big/\n", "h").unwrap();
        assert_eq!(z.max_pcluster(4096), 1 << 20);
        assert_eq!(
            z.configs(4096),
            [
                ComprCfg::Lz4 {
                    max_distance: u16::MAX,
                    max_pclusterblks: 256
                },
                ComprCfg::Zstd {
                    format: 0,
                    windowlog: 10
                },
            ]
        );
    }

    #[test]
    fn microlzma_fills_the_pcluster_and_replaces_the_first_byte_by_the_inverted_props() {
        let src = text(200_000);
        for level in [0u8, 6, 109] {
            let c = Compressor::parse(&format!("lzma,{level}"))
                .unwrap()
                .resolved(4096);
            let mut dst = vec![0u8; 4096];
            let (read, wrote) = c.compress_fill(&src, &mut dst, None).expect("fits");
            // lc=3 lp=0 pb=2: props 0x5D, inverted 0xA2.
            assert_eq!(dst[0], 0xA2, "level {level}");
            assert!(
                wrote <= 4096 && wrote > 4000,
                "level {level}: {wrote} bytes"
            );
            assert!(read > 6144, "level {level}: only {read} bytes consumed");
        }
    }

    #[test]
    fn zstd_frames_fit_the_pcluster_and_carry_the_configured_window() {
        let src = text(300_000);
        let mut windows_seen = 0;
        for (z, pcluster) in [
            ("zstd", 4096usize),
            ("zstd,19", 65536),
            ("zstd,1", 16384),
            // A window smaller than the input: the frame must declare it.
            ("zstd,dictsize=1024", 4096),
            ("zstd,9,dictsize=8192", 65536),
        ] {
            let c = Compressor::parse(z).unwrap().resolved(pcluster as u32);
            let mut dst = vec![0u8; pcluster];
            let (read, wrote) = c.compress_fill(&src, &mut dst, None).expect("fits");
            assert!(wrote <= pcluster, "{z}: {wrote}");
            assert!(
                wrote + 64 > pcluster / 2 && read > 2 * pcluster,
                "{z}: {read} -> {wrote}"
            );
            assert_eq!(dst[..4], [0x28, 0xB5, 0x2F, 0xFD], "{z}: a zstd frame");
            // Frame header descriptor: no checksum (bit 2); a frame of more than one
            // window carries Window_Descriptor = (log - 10) << 3 with no mantissa.
            let fhd = dst[4];
            assert_eq!(fhd & 0x04, 0, "{z}: checksum flag");
            if fhd & 0x20 == 0 {
                let Compressor::Zstd {
                    window_log: Some(w),
                    ..
                } = c
                else {
                    unreachable!()
                };
                assert_eq!(dst[5], (w - 10) << 3, "{z}: window descriptor");
                windows_seen += 1;
            }
        }
        assert!(
            windows_seen >= 2,
            "only {windows_seen} frames declared a window"
        );
    }

    #[test]
    fn hints_files_read_as_mkfs_erofs_writes_them_and_the_first_match_wins() {
        let text = "# comment\n\n16384 big/.*\n  4096 1 \\.conf$\n65536 0 big/huge\n";
        let mut z = CompressOptions::parse("lz4hc:lzma").unwrap();
        z.hints = CompressHint::parse_file(text, "hints.txt").unwrap();
        assert_eq!(z.hints.len(), 3);
        z.validate(12).unwrap();
        assert_eq!(
            z.choose("big/huge", 4096),
            (0, 16384),
            "the first rule wins"
        );
        assert_eq!(z.choose("tiny/3.conf", 4096), (1, 4096));
        // Unanchored, as regexec: "big/" anywhere in the path.
        assert_eq!(z.choose("x/big/y", 4096), (0, 16384));
        assert_eq!(z.choose("other", 4096), (0, 4096));
        for (bad, says) in [
            ("x big/", "line 1: \"x\" is not a pcluster size"),
            ("4096 a b", "\"a\" is not an algorithm index"),
            ("4096 1 2 3", "expected PCLUSTER-BYTES"),
            ("4096 (", "invalid regex"),
        ] {
            let err = CompressHint::parse_file(bad, "h").unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        for (rule, says) in [
            ("4096 2 x", "algorithm index 2 but -z names 2"),
            ("5000 x", "multiple of the block size"),
            ("2097152 x", "at most 1048576"),
        ] {
            z.hints = CompressHint::parse_file(rule, "h").unwrap();
            let err = z.validate(12).unwrap_err().to_string();
            assert!(err.contains(says), "{rule}: {err}");
        }
    }

    #[test]
    fn compressible_data_after_incompressible_data_is_compressed() {
        // DEFLATE opens a stream over noise with a stored block, whose first byte (0) would
        // read as padding, so the compressor gives up there; only that pcluster goes raw.
        let mut src = noise(256 << 10);
        src.extend(text(256 << 10));
        for level in ["deflate", "deflate,9"] {
            let c = Compressor::parse(level).unwrap();
            let mut out = Compressed::default();
            compress_segment(
                c,
                &src,
                4096,
                65536,
                MAX_EXTENT,
                true,
                &mut out,
                &mut Vec::new(),
            );
            let raw: usize = out
                .extents
                .iter()
                .filter(|e| e.raw)
                .map(|e| e.len as usize)
                .sum();
            // The noise, and at most the pcluster where the text starts.
            assert!(raw <= (256 << 10) + 65536, "{level}: {raw} bytes raw");
            assert!(
                out.data.len() < src.len() * 7 / 8,
                "{level}: {} bytes for {}",
                out.data.len(),
                src.len()
            );
        }
    }

    #[test]
    fn raw_by_block_starts_a_pcluster_as_soon_as_the_data_compresses_again() {
        // Noise, then zeroes: storing what one try consumed raw overshoots into bytes that a
        // pcluster starting earlier would have taken in.
        let mut src = text(300_000);
        src.extend(noise(150_000));
        src.extend(vec![0u8; 300_000]);
        let c = Compressor::parse("lz4").unwrap();
        let raw_of = |raw_by_block: bool| {
            let mut out = Compressed::default();
            let end = SegmentEnd {
                last: true,
                raw_by_block,
                ..SegmentEnd::default()
            };
            compress_segment_ext(
                c,
                &src,
                4096,
                65536,
                MAX_EXTENT,
                end,
                &mut out,
                &mut Vec::new(),
            );
            let raw: u32 = out.extents.iter().filter(|e| e.raw).map(|e| e.len).sum();
            (raw, out.data.len())
        };
        let (by_block, at_once) = (raw_of(true), raw_of(false));
        assert!(
            by_block.0 < at_once.0,
            "raw bytes {by_block:?} against {at_once:?}"
        );
        assert!(by_block.0 as usize <= 150_000 + 4096, "{by_block:?}");
        assert!(by_block.1 <= at_once.1, "{by_block:?} against {at_once:?}");
    }
}
