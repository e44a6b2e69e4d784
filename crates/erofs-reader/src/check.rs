//! Consistency checks behind `fsck.erofs-rs`: a full walk that collects every problem
//! instead of stopping at the first.

use crate::nidmap::NidMap;

use erofs_format::FileType;
use erofs_format::xattr::name_filter_bit;

use crate::error::Error;
use crate::image::Image;
use crate::inode::Inode;
use crate::progress::{Cancelled, Progress};

/// What to check: `CheckOptions::default().read_data(true)`.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct CheckOptions {
    /// Report a superblock checksum mismatch (open the image with
    /// `verify_checksum: false` so that the walk still runs).
    pub verify_checksum: bool,
    /// Read every byte of every regular file and symlink (not only map its extents).
    pub read_data: bool,
    /// The caller verifies every content fingerprint alongside (`--verify-fingerprints`),
    /// which decodes each regular file that holds a well-formed `sha256:` fingerprint with
    /// the same exactness checks: the check then maps those files' extents (every index
    /// check) and leaves their decoding to the verification instead of doing it twice.
    pub fingerprints_verified: bool,
    /// The caller reads every file's data itself afterwards (extraction into a directory),
    /// which decodes each compressed extent through the same decoders and exactness checks:
    /// the check then maps compressed files' extents (every index check) and leaves their
    /// decoding to the caller instead of doing it twice. The read stops at its first error,
    /// so a caller whose read fails checks again without this, to name every bad file.
    pub data_read_elsewhere: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            verify_checksum: true,
            read_data: false,
            fingerprints_verified: false,
            data_read_elsewhere: false,
        }
    }
}

impl CheckOptions {
    /// Sets [`CheckOptions::verify_checksum`].
    pub fn verify_checksum(mut self, on: bool) -> Self {
        self.verify_checksum = on;
        self
    }

    /// Sets [`CheckOptions::read_data`].
    pub fn read_data(mut self, on: bool) -> Self {
        self.read_data = on;
        self
    }

    /// Sets [`CheckOptions::fingerprints_verified`].
    pub fn fingerprints_verified(mut self, on: bool) -> Self {
        self.fingerprints_verified = on;
        self
    }

    /// Sets [`CheckOptions::data_read_elsewhere`].
    pub fn data_read_elsewhere(mut self, on: bool) -> Self {
        self.data_read_elsewhere = on;
        self
    }
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Problem {
    /// The inode concerned, if any.
    pub nid: Option<u64>,
    /// The byte offset in the image, if known.
    pub offset: Option<u64>,
    /// A path that reaches the inode, if known (non-UTF-8 bytes escaped `\xNN`).
    pub path: Option<String>,
    /// A short stable code: `checksum`, `corrupt`, `dirent-type`, `dir-order`, `dot`,
    /// `dotdot`, `nlink`, `xattr-filter`, `inline-block`, `unsupported`.
    pub kind: &'static str,
    /// Human-readable description.
    pub message: String,
}

/// Summary of a check.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct CheckReport {
    /// Image size in bytes.
    pub image_size: u64,
    /// Block size in bytes.
    pub block_size: u64,
    /// Distinct inodes reached.
    pub inodes: u64,
    /// Directories reached.
    pub directories: u64,
    /// Regular files reached (distinct inodes).
    pub regular_files: u64,
    /// Symlinks reached.
    pub symlinks: u64,
    /// Devices, FIFOs and sockets reached.
    pub special_files: u64,
    /// Compressed regular files (every extent of each is decoded).
    pub compressed_files: u64,
    /// Bytes of pclusters that compressed files decode from (inline tails included,
    /// fragments and pclusters shared by dedupe counted once per extent).
    pub compressed_bytes: u64,
    /// Bytes the compressed files decode to.
    pub decoded_bytes: u64,
    /// Blocks holding the data of files, directories and symlinks, per inode the bytes of
    /// its pclusters (or flat data) rounded up, as fsck.erofs counts them; fragments 0.
    pub physical_blocks: u64,
    /// Blocks that data spans once decoded (`ceil(size / blksz)` per inode).
    pub logical_blocks: u64,
    /// Bytes of regular-file data mapped (and read, with `read_data`).
    pub data_bytes: u64,
    /// Every problem found; empty means the image is consistent.
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// Whether no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

struct Checker<'a> {
    img: &'a Image<'a>,
    opts: CheckOptions,
    report: CheckReport,
    /// nid -> (path, inode, references seen, subdirectories)
    seen: NidMap<Seen>,
    /// The walk position of the entry being checked, which orders the problems.
    seq: u64,
    /// `seq` of each problem in `report.problems`.
    problem_seq: Vec<u64>,
    /// Compressed inodes met since the last batch was handed out for decoding.
    zbatch: Vec<ZFile>,
    /// Their decoded size, which decides when the batch is handed out.
    zbatch_bytes: u64,
    /// The lz4 pcluster limit of the configuration record (`-C`), if the image has one.
    lz4_limit: Option<u64>,
    /// With [`CheckOptions::fingerprints_verified`], the fingerprint xattr's full name.
    fingerprint_name: Option<Vec<u8>>,
    /// The inode being checked holds a well-formed fingerprint that the caller verifies.
    verified_elsewhere: bool,
}

/// A file whose data is read apart from the walk: a compressed inode, whose extents are
/// all decoded, or (with `read_data`) an uncompressed file, read whole.
struct ZFile {
    seq: u64,
    path: Vec<u8>,
    inode: Inode,
    compressed: bool,
    /// Decode a compressed inode's extents, or read an uncompressed file (else only map).
    decode: bool,
}

/// What reading files off the walk found: the report's data counters, and the problems,
/// each with the walk position of its file.
#[derive(Default)]
struct Deferred {
    compressed_bytes: u64,
    decoded_bytes: u64,
    data_bytes: u64,
    physical_blocks: u64,
    logical_blocks: u64,
    problems: Vec<(u64, Problem)>,
}

impl Deferred {
    fn merge(&mut self, o: Deferred) {
        self.compressed_bytes = self.compressed_bytes.saturating_add(o.compressed_bytes);
        self.decoded_bytes = self.decoded_bytes.saturating_add(o.decoded_bytes);
        self.data_bytes = self.data_bytes.saturating_add(o.data_bytes);
        self.physical_blocks = self.physical_blocks.saturating_add(o.physical_blocks);
        self.logical_blocks = self.logical_blocks.saturating_add(o.logical_blocks);
        self.problems.extend(o.problems);
    }
}

/// Reads every byte of an uncompressed file through `buf` (grown to at most 128 KiB and
/// kept: most files are small, and zeroing a fresh buffer for each would cost more than
/// reading them).
fn read_whole(img: &Image, inode: &Inode, buf: &mut Vec<u8>) -> Result<(), Error> {
    if img.source().as_slice().is_some() && inode.is_file() {
        return touch_whole(img, inode);
    }
    let want = inode.size.min(128 * 1024) as usize;
    if buf.len() < want {
        buf.resize(want, 0);
    }
    let mut pos = 0;
    while pos < inode.size {
        match img.read_at(inode, pos, &mut buf[..want])? {
            0 => break,
            n => pos += n as u64,
        }
    }
    Ok(())
}

/// [`read_whole`] for an image in memory (a mapped file): every extent is mapped, which
/// checks it lies in the image, and one byte of each page is read, so that the kernel
/// reads a mapped file's pages as `pread` would, without the copy into a buffer that
/// nothing looks at (that copy was a sixth of `fsck --extract`'s CPU time on an lz4hc
/// image whose small files are stored plain).
fn touch_whole(img: &Image, inode: &Inode) -> Result<(), Error> {
    const PAGE: usize = 4096;
    let bytes = img.source().as_slice().unwrap_or_default();
    let mut pos = 0;
    let mut sum = 0u8;
    while pos < inode.size {
        let e = img.map(inode, pos)?;
        pos = e.end();
        if let Some(p) = e.physical {
            img.check_range(p, e.length)
                .map_err(|err| err.with_nid(inode.nid))?;
            // check_range bounded the range by the source's length.
            let data = &bytes[p as usize..(p + e.length) as usize];
            let first_page = PAGE - (p as usize % PAGE);
            sum ^= data.first().copied().unwrap_or(0);
            for b in data.iter().skip(first_page).step_by(PAGE) {
                sum ^= b;
            }
        }
    }
    std::hint::black_box(sum);
    Ok(())
}

/// A batch of files to read, on a pool thread when there is one.
type ZJob<'a> = Box<dyn FnOnce() + Send + 'a>;

/// Decoded bytes (or files) after which the walk hands its files out.
const ZBATCH_BYTES: u64 = 4 << 20;
const ZBATCH_FILES: usize = 256;

/// The problem an error makes: its location, and `unsupported` or `corrupt`.
fn error_problem(path: Option<&[u8]>, e: Error) -> Problem {
    let (nid, offset) = match &e {
        Error::Corrupt { at, .. } => (at.nid, at.offset),
        other => (other.nid(), None),
    };
    let kind = match e {
        Error::Compressed { .. }
        | Error::ExtraDevice { .. }
        | Error::UnsupportedFeatures { .. } => "unsupported",
        _ => "corrupt",
    };
    Problem {
        nid,
        offset,
        path: path.map(esc),
        kind,
        message: e.to_string(),
    }
}

/// Reads the data of one file off the walk into `d`. A compressed inode has every extent
/// mapped (which checks the indexes: bounds, lookback and lookahead, CBLKCNT, contiguous
/// extents from 0 to the size) and decoded once, which checks that the decoder consumes
/// its pcluster and produces exactly its extent; an uncompressed one is read whole.
fn read_file_data(
    img: &Image,
    f: ZFile,
    lz4_limit: Option<u64>,
    buf: &mut Vec<u8>,
    d: &mut Deferred,
) {
    use erofs_format::compress::Algorithm;
    let (seq, path, inode) = (f.seq, f.path, f.inode);
    if !f.compressed {
        if let Err(e) = read_whole(img, &inode, buf) {
            d.problems.push((seq, error_problem(Some(&path), e)));
        }
        return;
    }
    let (mut stored, mut decoded, mut compressed) = (0u64, 0u64, 0u64);
    let mut last_logical = None;
    let mut each = |e: &crate::ZExtent, bytes: u64| {
        decoded = decoded.saturating_add(bytes);
        // A fragment comes in pieces: count its extent once.
        if last_logical == Some(e.logical) {
            return Ok(());
        }
        last_logical = Some(e.logical);
        if let (Some(limit), crate::ZStorage::Compressed { algorithm }) = (lz4_limit, e.storage)
            && algorithm == Algorithm::Lz4
            && !e.inline
            && e.plen > limit
        {
            d.problems.push((
                seq,
                Problem {
                    nid: Some(inode.nid),
                    offset: Some(e.physical),
                    path: Some(esc(&path)),
                    kind: "pcluster-size",
                    message: format!(
                        "pcluster of {} bytes at logical {} exceeds the lz4 limit of {limit} bytes",
                        e.plen, e.logical
                    ),
                },
            ));
        }
        if !matches!(e.storage, crate::ZStorage::Fragment { .. }) {
            compressed = compressed.saturating_add(e.plen);
        }
        // As fsck.erofs counts: every extent's pcluster (inline ones too, shared ones
        // again), the sum rounded up to blocks.
        stored = stored.saturating_add(e.plen);
        Ok(())
    };
    let r = if f.decode {
        img.z_for_each_decoded(&inode, &mut |e, bytes| each(e, bytes.len() as u64))
    } else {
        // Verified or extracted elsewhere: mapped here, decoded by the caller; the extents
        // say what they decode to.
        img.z_for_each_extent(&inode, &mut |e| each(e, e.length))
    };
    d.compressed_bytes = d.compressed_bytes.saturating_add(compressed);
    d.decoded_bytes = d.decoded_bytes.saturating_add(decoded);
    if let Err(e) = r {
        d.problems.push((seq, error_problem(Some(&path), e)));
        return;
    }
    if inode.is_file() {
        d.data_bytes = d.data_bytes.saturating_add(inode.size);
    }
    d.physical_blocks = d
        .physical_blocks
        .saturating_add(stored.div_ceil(img.block_size()));
    d.logical_blocks = d
        .logical_blocks
        .saturating_add(inode.size.div_ceil(img.block_size()));
}

struct Seen {
    path: Vec<u8>,
    offset: u64,
    nlink: u32,
    is_dir: bool,
    refs: u32,
    subdirs: u64,
}

fn esc(p: &[u8]) -> String {
    crate::escape_bytes(p)
}

impl Checker<'_> {
    fn problem(
        &mut self,
        nid: Option<u64>,
        offset: Option<u64>,
        path: Option<&[u8]>,
        kind: &'static str,
        message: String,
    ) {
        self.report.problems.push(Problem {
            nid,
            offset,
            path: path.map(esc),
            kind,
            message,
        });
        self.problem_seq.push(self.seq);
    }

    fn error(&mut self, path: Option<&[u8]>, e: Error) {
        let p = error_problem(path, e);
        self.report.problems.push(p);
        self.problem_seq.push(self.seq);
    }

    fn check_inode(&mut self, path: &[u8], inode: &Inode) {
        let img = self.img;
        let nid = inode.nid;
        // Inode core and xattr body inside the image.
        if let Err(e) = img.check_range(inode.offset, inode.inode_size() + inode.xattr_size()) {
            self.error(Some(path), e.with_nid(nid));
            return;
        }
        let xattrs = img.xattrs(inode);
        // A file the caller's fingerprint verification will decode and hash whole.
        self.verified_elsewhere = inode.is_file()
            && match (&self.fingerprint_name, &xattrs) {
                (Some(name), Ok(xs)) => xs.iter().any(|x| {
                    &x.name == name
                        && erofs_format::xattr::parse_sha256_fingerprint(&x.value).is_some()
                }),
                _ => false,
            };
        // Xattrs: entries parse, shared ids in range, name filter consistent.
        match xattrs {
            Err(e) => self.error(Some(path), e),
            Ok(xattrs) if !xattrs.is_empty() && img.name_filter_enabled() => {
                match img.xattr_header(inode) {
                    Ok(h) => {
                        for x in &xattrs {
                            let (base, rest) = x.filter_key();
                            let bit = name_filter_bit(base, rest);
                            if h.name_filter & (1 << bit) != 0 {
                                self.problem(
                                    Some(nid),
                                    Some(inode.offset + inode.inode_size()),
                                    Some(path),
                                    "xattr-filter",
                                    format!(
                                        "name filter {:#010x} has bit {bit} set (absent), but xattr {} is present",
                                        h.name_filter,
                                        esc(&x.name)
                                    ),
                                );
                            }
                        }
                    }
                    Err(e) => self.error(Some(path), e),
                }
            }
            Ok(_) => {}
        }
        if inode.is_compressed() {
            self.check_compressed(path, inode);
            return;
        }
        if !inode.has_data() {
            return;
        }
        // Data: every extent inside the image; inline tails inside the inode's block.
        match img.data_extents(inode) {
            Err(e) => self.error(Some(path), e),
            Ok(extents) => {
                let blksz = img.block_size();
                for e in &extents {
                    if e.kind == crate::ExtentKind::Inline && e.length > 0 {
                        // Linux requires the tail itself in one block; the inode core may
                        // end a block and its xattrs and tail start the next (mkfs 1.9.3).
                        let start = e.physical.unwrap_or(0);
                        let end = start + e.length - 1;
                        if start / blksz != end / blksz {
                            self.problem(
                                Some(nid),
                                Some(inode.offset),
                                Some(path),
                                "inline-block",
                                format!(
                                    "inline tail ({} bytes) crosses a block boundary",
                                    e.length
                                ),
                            );
                        }
                    }
                }
                if inode.is_file() {
                    self.report.data_bytes = self.report.data_bytes.saturating_add(inode.size);
                }
                // As fsck.erofs counts: every inode with data, an inline tail as a block.
                let stored: u64 = extents
                    .iter()
                    .filter(|e| e.kind != crate::ExtentKind::Hole)
                    .map(|e| e.length)
                    .sum::<u64>()
                    .div_ceil(blksz);
                self.count_blocks(inode, stored);
            }
        }
        if inode.is_symlink() {
            if let Err(e) = img.readlink(inode) {
                self.error(Some(path), e);
            }
        } else if self.opts.read_data && inode.is_file() && !self.verified_elsewhere {
            // Read off the walk, with the compressed files.
            self.zbatch.push(ZFile {
                seq: self.seq,
                path: path.to_vec(),
                inode: inode.clone(),
                compressed: false,
                decode: true,
            });
            self.zbatch_bytes = self.zbatch_bytes.saturating_add(inode.size);
        }
    }

    /// Queues a compressed inode for [`decode_compressed`]; every `ZBATCH_BYTES` of them
    /// go to `spawn` as one job, so that decoding runs on the pool while the walk goes on.
    fn check_compressed(&mut self, path: &[u8], inode: &Inode) {
        if inode.is_file() {
            self.report.compressed_files += 1;
        }
        self.zbatch.push(ZFile {
            seq: self.seq,
            path: path.to_vec(),
            inode: inode.clone(),
            compressed: true,
            decode: !self.verified_elsewhere && !self.opts.data_read_elsewhere,
        });
        self.zbatch_bytes = self.zbatch_bytes.saturating_add(inode.size);
    }

    /// Whether the queued compressed inodes make a job worth handing out.
    fn zbatch_full(&self) -> bool {
        self.zbatch_bytes >= ZBATCH_BYTES || self.zbatch.len() >= ZBATCH_FILES
    }

    /// Adds an inode's blocks to the `-p` ratio: `stored` blocks hold what decodes to
    /// `ceil(size / blksz)` blocks.
    fn count_blocks(&mut self, inode: &Inode, stored: u64) {
        let r = &mut self.report;
        r.physical_blocks = r.physical_blocks.saturating_add(stored);
        r.logical_blocks = r
            .logical_blocks
            .saturating_add(inode.size.div_ceil(self.img.block_size()));
    }

    /// `parent` is `None` for the root of a subtree check, whose parent is not known.
    fn check_dir(&mut self, path: &[u8], dir: &Inode, parent: Option<u64>) {
        let img = self.img;
        let mut prev: Option<Vec<u8>> = None;
        let (mut dot, mut dotdot) = (None, None);
        for b in 0..img.dir_block_count(dir) {
            let entries = match img.read_dir_block(dir, b) {
                Ok(e) => e,
                Err(e) => {
                    self.error(Some(path), e);
                    return;
                }
            };
            for d in entries {
                if let Some(p) = &prev
                    && p.as_slice() >= d.entry.name.as_slice()
                {
                    self.problem(
                        Some(dir.nid),
                        d.dirent_offset,
                        Some(path),
                        "dir-order",
                        format!(
                            "dirent {} does not sort after {}",
                            esc(&d.entry.name),
                            esc(p)
                        ),
                    );
                }
                if d.entry.name == b"." {
                    dot = Some((d.entry.nid, d.dirent_offset));
                } else if d.entry.name == b".." {
                    dotdot = Some((d.entry.nid, d.dirent_offset));
                }
                prev = Some(d.entry.name);
            }
        }
        match dot {
            Some((n, _)) if n == dir.nid => {}
            Some((n, off)) => self.problem(
                Some(dir.nid),
                off,
                Some(path),
                "dot",
                format!("\".\" points to nid {n}, not to the directory itself"),
            ),
            None => self.problem(
                Some(dir.nid),
                None,
                Some(path),
                "dot",
                "no \".\" entry".into(),
            ),
        }
        match dotdot {
            Some((n, _)) if parent.is_none_or(|p| p == n) => {}
            Some((n, off)) => self.problem(
                Some(dir.nid),
                off,
                Some(path),
                "dotdot",
                format!(
                    "\"..\" points to nid {n}, not to the parent nid {}",
                    parent.unwrap_or(n)
                ),
            ),
            None => self.problem(
                Some(dir.nid),
                None,
                Some(path),
                "dotdot",
                "no \"..\" entry".into(),
            ),
        }
    }
}

/// Walks the whole image and checks it; see the module docs. `progress` advances once per
/// directory entry, and is asked before each whether to stop ([`Cancelled`]).
pub fn check(
    img: &Image,
    opts: CheckOptions,
    progress: &dyn Progress,
) -> Result<CheckReport, Cancelled> {
    check_from(img, opts, img.root_nid(), b"/", progress)
}

/// Checks only the subtree at `nid` (reached by `path`), like `fsck.erofs --nid/--path`.
/// Link counts of non-directories are checked only for the whole tree (`nid` = root),
/// since links from outside the subtree are not seen; the subtree root's `..` is only
/// required to exist.
///
/// With the `parallel` feature, compressed files are decoded on the rayon pool in batches
/// while the walk goes on; the report (problems in walk order included) is the same as a
/// serial check's.
pub fn check_from(
    img: &Image,
    opts: CheckOptions,
    nid: u64,
    path: &[u8],
    progress: &dyn Progress,
) -> Result<CheckReport, Cancelled> {
    let jobs = Jobs {
        progress,
        deferred: Default::default(),
        pending: Default::default(),
    };
    let walked = with_spawner(|spawn| walk_and_check(img, opts, nid, path, &jobs, spawn));
    let Some(mut c) = walked.filter(|_| !progress.is_cancelled()) else {
        progress.finish();
        return Err(Cancelled);
    };
    let d = jobs
        .deferred
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    let r = &mut c.report;
    r.compressed_bytes = r.compressed_bytes.saturating_add(d.compressed_bytes);
    r.decoded_bytes = r.decoded_bytes.saturating_add(d.decoded_bytes);
    r.data_bytes = r.data_bytes.saturating_add(d.data_bytes);
    r.physical_blocks = r.physical_blocks.saturating_add(d.physical_blocks);
    r.logical_blocks = r.logical_blocks.saturating_add(d.logical_blocks);
    for (seq, p) in d.problems {
        c.report.problems.push(p);
        c.problem_seq.push(seq);
    }
    // The deferred problems went last: put each after those its walk position found (a
    // stable sort keeps a file's own problems in the order they were found).
    let mut order: Vec<usize> = (0..c.report.problems.len()).collect();
    order.sort_by_key(|&i| c.problem_seq[i]);
    let mut problems: Vec<Option<Problem>> = std::mem::take(&mut c.report.problems)
        .into_iter()
        .map(Some)
        .collect();
    c.report.problems = order.iter().filter_map(|&i| problems[i].take()).collect();
    let whole = nid == img.root_nid();
    // Link counts against the tree.
    let mut nlink_problems = Vec::new();
    for (nid, s) in &c.seen {
        // In a subtree check, other names of a file may lie outside the subtree: only
        // more names than links is an error there.
        if !whole && !s.is_dir && u64::from(s.refs) <= u64::from(s.nlink) {
            continue;
        }
        let expected = if s.is_dir {
            2 + s.subdirs
        } else {
            u64::from(s.refs)
        };
        let stored = u64::from(s.nlink);
        // mkfs stores 1 for a compact directory whose count does not fit 16 bits.
        let overflow_ok = s.is_dir && stored == 1 && expected > 0xFFFF;
        if stored != expected && !overflow_ok {
            nlink_problems.push(Problem {
                nid: Some(*nid),
                offset: Some(s.offset),
                path: Some(esc(&s.path)),
                kind: "nlink",
                message: format!("nlink is {stored}, the directory tree gives {expected}"),
            });
        }
    }
    nlink_problems.sort_by_key(|p| p.nid);
    c.report.inodes = c.seen.len() as u64;
    c.report.problems.extend(nlink_problems);
    progress.finish();
    Ok(c.report)
}

/// Runs `f` with a way to start jobs: on the rayon pool, all finished when this returns.
#[cfg(feature = "parallel")]
fn with_spawner<'j, R: Send>(f: impl FnOnce(&dyn Fn(ZJob<'j>)) -> R + Send) -> R {
    rayon::scope(|s: &rayon::Scope<'j>| f(&|job: ZJob<'j>| s.spawn(move |_| job())))
}

/// Runs `f` with a way to start jobs: each runs at once, on this thread.
#[cfg(not(feature = "parallel"))]
fn with_spawner<'j, R>(f: impl FnOnce(&dyn Fn(ZJob<'j>)) -> R) -> R {
    f(&|job: ZJob<'j>| job())
}

/// Where the jobs that read files off the walk put what they found.
struct Jobs<'j> {
    progress: &'j dyn Progress,
    deferred: std::sync::Mutex<Deferred>,
    /// Jobs handed out and not finished.
    pending: std::sync::atomic::AtomicUsize,
}

/// Hands the queued files to `spawn` as one job; when the pool already has work for a
/// while, runs it on the walk's thread instead, so that the queue (and its memory) stays
/// bounded and the walk's thread does its share of the reading.
fn flush_zbatch<'i: 'j, 'j>(c: &mut Checker<'i>, jobs: &'j Jobs<'j>, spawn: &dyn Fn(ZJob<'j>)) {
    use std::sync::atomic::Ordering;
    if c.zbatch.is_empty() {
        return;
    }
    let batch = std::mem::take(&mut c.zbatch);
    c.zbatch_bytes = 0;
    let (img, limit) = (c.img, c.lz4_limit);
    let job = move || {
        let mut d = Deferred::default();
        let mut buf = Vec::new();
        for f in batch {
            if jobs.progress.is_cancelled() {
                break;
            }
            read_file_data(img, f, limit, &mut buf, &mut d);
        }
        jobs.deferred
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .merge(d);
        jobs.pending.fetch_sub(1, Ordering::Relaxed);
    };
    if jobs.pending.fetch_add(1, Ordering::Relaxed) >= max_pending() {
        job();
    } else {
        spawn(Box::new(job));
    }
}

/// Jobs allowed to wait for the pool: enough to keep every thread busy.
#[cfg(feature = "parallel")]
fn max_pending() -> usize {
    2 * rayon::current_num_threads()
}

/// Without a pool every job runs at once.
#[cfg(not(feature = "parallel"))]
fn max_pending() -> usize {
    0
}

/// The walk of [`check_from`]: every check but the decoding of compressed inodes, which
/// goes to `spawn`, and the link counts. `None` when cancelled.
fn walk_and_check<'i: 'j, 'j>(
    img: &'i Image<'i>,
    opts: CheckOptions,
    nid: u64,
    path: &[u8],
    jobs: &'j Jobs<'j>,
    spawn: &dyn Fn(ZJob<'j>),
) -> Option<Checker<'i>> {
    let progress = jobs.progress;
    let whole = nid == img.root_nid();
    let lz4_limit = match img.compression_config(erofs_format::compress::Algorithm::Lz4) {
        Ok(Some(erofs_format::compress::ComprCfg::Lz4 {
            max_pclusterblks, ..
        })) => Some(u64::from(max_pclusterblks.max(1)) << img.block_bits()),
        _ => None,
    };
    let mut c = Checker {
        img,
        opts,
        report: CheckReport {
            image_size: img.len(),
            block_size: img.block_size(),
            ..CheckReport::default()
        },
        // Sized for the inodes the superblock announces, so that the walk does not spend
        // its time rehashing: bounded by the inodes that fit in the image and by a
        // million (a corrupt count must not allocate much ahead of the walk).
        seen: NidMap::with_capacity_and_hasher(
            (img.superblock().inos.get())
                .min(img.len() / 32)
                .min(1 << 20) as usize,
            Default::default(),
        ),
        seq: 0,
        problem_seq: Vec::new(),
        zbatch: Vec::new(),
        zbatch_bytes: 0,
        lz4_limit,
        fingerprint_name: opts
            .fingerprints_verified
            .then(|| img.fingerprint_name().ok().flatten())
            .flatten(),
        verified_elsewhere: false,
    };
    if opts.verify_checksum
        && let Some((stored, computed)) = img.checksum()
        && stored != computed
    {
        c.problem(
            None,
            Some(erofs_format::sb_field!(checksum)),
            None,
            "checksum",
            format!(
                "superblock checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
        );
    }
    progress.start(Some(img.superblock().inos.get()), None);
    let mut batch = crate::progress::Batched::new(progress);
    let walk = match img.walk_from(nid, path.to_vec()) {
        Ok(w) => w,
        Err(e) => {
            c.error(Some(path), e);
            return Some(c);
        }
    };
    let mut walk = walk;
    while let Some(entry) = walk.next() {
        if progress.is_cancelled() {
            return None;
        }
        c.seq += 1;
        batch.step();
        let e = match entry {
            Ok(e) => e,
            Err(err) => {
                c.error(walk.error_path(), err);
                continue;
            }
        };
        let ft = e.inode.file_type();
        // The walk's first entry is the start of the check: it has no dirent of its own.
        let start = e.nid == nid && e.path == path;
        if !start && e.dirent_type != ft {
            c.problem(
                Some(e.nid),
                None,
                Some(&e.path),
                "dirent-type",
                format!(
                    "dirent says {}, inode says {}",
                    e.dirent_type.name(),
                    ft.name()
                ),
            );
        }
        if ft == FileType::Directory
            && !start
            && let Some(p) = c.seen.get_mut(&e.parent)
        {
            p.subdirs += 1;
        }
        if let Some(s) = c.seen.get_mut(&e.nid) {
            s.refs += 1;
            continue;
        }
        c.check_inode(&e.path, &e.inode);
        if c.zbatch_full() {
            flush_zbatch(&mut c, jobs, spawn);
        }
        if ft == FileType::Directory {
            c.check_dir(&e.path, &e.inode, (!start || whole).then_some(e.parent));
        }
        match ft {
            FileType::Directory => c.report.directories += 1,
            FileType::Regular => c.report.regular_files += 1,
            FileType::Symlink => c.report.symlinks += 1,
            _ => c.report.special_files += 1,
        }
        c.seen.insert(
            e.nid,
            Seen {
                path: e.path,
                offset: e.inode.offset,
                nlink: e.inode.nlink,
                is_dir: e.inode.is_dir(),
                refs: 1,
                subdirs: 0,
            },
        );
    }
    flush_zbatch(&mut c, jobs, spawn);
    batch.flush();
    Some(c)
}
