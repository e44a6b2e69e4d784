//! Builds EROFS images (plain or compressed) from a directory, a tar stream or any
//! [`source::Source`].
//!
//! ```no_run
//! use erofs_builder::{NoProgress, Options, build_dir_to_path};
//!
//! let mut options = Options::default();
//! options.timestamp = Some(0); // reproducible: with a fixed UUID, same tree, same bytes
//! let report = build_dir_to_path("rootfs".as_ref(), "rootfs.erofs".as_ref(), &options, &NoProgress)?;
//! println!("{} inodes, {} bytes", report.inodes, report.image_bytes);
//! # Ok::<(), erofs_builder::BuildError>(())
//! ```
//!
//! The build runs in three stages, each with one job:
//!
//! 1. **Source → tree.** A [`source::Source`] (a directory walk, or a tar stream,
//!    [`tar_source`]) produces an in-memory [`tree::Tree`]: one entry per inode, hard links
//!    merged, directory entries sorted bytewise, xattrs sorted, ownership and times already
//!    rewritten. The builder checks it into a [`ValidTree`], the only tree the next stages
//!    accept.
//! 2. **Tree → plan.** The layout decides every on-disk fact before a byte is written: inode
//!    kinds (compact or extended), xattr bodies and the shared xattr area, data layouts
//!    (plain, inline tail, chunk-based for sparse files), nids and block addresses.
//! 3. **Plan → image.** The writer writes the image: into a file with positioned writes at
//!    the planned offsets, from every worker at once, or into a stream front to back. File
//!    data comes first (read and hashed in parallel), metadata last, because inodes carry the
//!    fingerprints computed while the data was copied. The output never depends on thread
//!    timing.
//!
//! The per-file data encoding is a separate step in the writer (plain today), so that
//! compressed files can plug in later without touching the scan or the tree.
//!
//! Libraries do not print: progress and warnings go through the [`Progress`] trait, which
//! also cancels a build ([`CancelToken`]). A build runs on its own rayon pool of
//! [`Options::threads`] workers or on the caller's ([`Options::pool`]); the image never
//! depends on either.

pub mod acl;
pub mod compress;
pub(crate) mod dir;
pub(crate) mod encode;
pub(crate) mod layout;
pub mod output;
mod pipeline;
mod read;
pub(crate) mod scan;
pub mod source;
pub mod tar;
pub mod tar_source;
pub mod tree;
pub mod verity;
pub(crate) mod write;
pub(crate) mod xattr;

use std::path::{Path, PathBuf};

pub use compress::CompressOptions;
pub use output::{Output, OutputKind};
pub use tree::{Tree, TreeError, ValidTree};
pub use verity::{VerityOptions, VerityReport};

/// Block size used when none is given: the x86-64 page size.
pub const DEFAULT_BLOCK_SIZE_BITS: u8 = 12;

/// How the volume UUID is chosen (`-U`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UuidChoice {
    /// A random version-4 UUID (the default).
    #[default]
    Random,
    /// All zeroes (`-U clear`).
    Clear,
    /// A given value.
    Value([u8; 16]),
}

impl UuidChoice {
    /// The UUID an image gets: a new random one, zeros, or the value.
    pub fn resolve(&self) -> [u8; 16] {
        match self {
            Self::Random => layout::random_uuid(),
            Self::Clear => [0; 16],
            Self::Value(v) => *v,
        }
    }

    /// Parses `random`, `clear` or a UUID with or without dashes.
    pub fn parse(s: &str) -> Result<Self, BuildError> {
        match s {
            "random" => return Ok(Self::Random),
            "clear" => return Ok(Self::Clear),
            _ => {}
        }
        let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
        let bad = || BuildError::InvalidOption(format!("invalid UUID {s:?}"));
        if hex.len() != 32 {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        for (i, pair) in hex.chunks(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(text, 16).map_err(|_| bad())?;
        }
        Ok(Self::Value(out))
    }
}

/// Which modification times files keep (mkfs.erofs `--all-time`, `--mkfs-time`,
/// `--ignore-mtime`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MtimePolicy {
    /// With a timestamp, every file gets it; without, files keep their own (the default).
    #[default]
    AllTime,
    /// The timestamp is only the image's build time; files keep their own.
    MkfsTime,
    /// Every file gets the image's time (the timestamp, or the build time), so that inodes
    /// can be compact.
    IgnoreMtime,
    /// `SOURCE_DATE_EPOCH`, as reproducible-builds.org defines it: mtimes newer than the
    /// timestamp become the timestamp, older ones stay.
    Clamp,
}

/// How ownership is rewritten while scanning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ownership {
    /// `--all-root`: every file is owned by 0:0.
    pub all_root: bool,
    /// `--force-uid`.
    pub force_uid: Option<u32>,
    /// `--force-gid`.
    pub force_gid: Option<u32>,
    /// `--uid-offset`, added to the source uid.
    pub uid_offset: u32,
    /// `--gid-offset`, added to the source gid.
    pub gid_offset: u32,
}

impl Ownership {
    /// The uid and gid stored for a source file owned by `uid:gid`.
    pub fn apply(&self, uid: u32, gid: u32) -> (u32, u32) {
        if self.all_root {
            return (0, 0);
        }
        let uid = self
            .force_uid
            .unwrap_or_else(|| uid.wrapping_add(self.uid_offset));
        let gid = self
            .force_gid
            .unwrap_or_else(|| gid.wrapping_add(self.gid_offset));
        (uid, gid)
    }
}

/// How compressed files are laid out (`-E` options of mkfs.erofs); the defaults are
/// mkfs.erofs's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZLayoutOptions {
    /// `-E ztailpacking`: a file's last pcluster, when it compresses below one block, is
    /// stored inline after the indexes, in the inode's metadata block (incompat
    /// `ZTAILPACKING`, Linux 5.17+).
    pub ztailpacking: bool,
    /// `-E legacy-compress`: full (8-byte) lcluster indexes for every compressed file,
    /// instead of compact ones wherever Linux reads them.
    pub full_indexes: bool,
    /// `-E fragments` / `-E all-fragments`: file tails (or whole files) go, uncompressed, into
    /// the packed inode, itself compressed (incompat `FRAGMENTS`, Linux 6.1+).
    pub fragments: Fragments,
    /// `-E [^]fragdedupe[=inode|full]`: which identical fragments are stored once.
    pub fragdedupe: FragDedupe,
    /// `-E dedupe`: an extent whose decoded bytes equal an already written pcluster's
    /// reuses that pcluster (`write/dedupe.rs`); files that do get full indexes.
    pub dedupe: bool,
}

impl ZLayoutOptions {
    /// Whether an extent may reuse an earlier pcluster that decodes to the same bytes: with
    /// `-E dedupe`, and with fragments, as mkfs.erofs shares identical extents whenever
    /// fragments are on. Only `-E dedupe` also shares prefixes (`PARTIAL_REF`) and cuts
    /// extents to share inside a segment.
    pub fn shares_pclusters(&self) -> bool {
        self.dedupe || self.fragments != Fragments::Off
    }
}

/// Which part of a compressed file becomes a fragment of the packed inode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fragments {
    /// None (the default).
    #[default]
    Off,
    /// `-E fragments`: the tail extent, as mkfs.erofs cuts it: the last piece of at most one
    /// pcluster, or a last extent that would compress below one pcluster (so small files
    /// wholly).
    Tails,
    /// `-E all-fragments`: every file wholly.
    All,
}

/// Fragment deduplication (`-E fragdedupe=`), mkfs.erofs's modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FragDedupe {
    /// `full` (the default): any fragment whose bytes equal an earlier one's, or its start
    /// or its end (a tail or a whole file), points into the earlier copy.
    #[default]
    Full,
    /// `inode`: only whole-file fragments are shared.
    Inode,
    /// `^fragdedupe`: every fragment is stored.
    Off,
}

/// Content fingerprints (`--fingerprint`, `--xattr-inode-digest`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FingerprintOptions {
    /// The full xattr name that carries the fingerprint, e.g. `trusted.erofs.fingerprint`.
    pub xattr_name: Vec<u8>,
}

impl FingerprintOptions {
    /// Fingerprints in the xattr `xattr_name` (checked by [`Options::validate`]).
    pub fn new(xattr_name: impl Into<Vec<u8>>) -> Self {
        Self {
            xattr_name: xattr_name.into(),
        }
    }
}

/// How a source reads its input into a tree: which files a directory scan takes, and the
/// owners and times every source (a directory, a tar stream) gives its files. None of these
/// changes how a given tree is encoded; [`Options`]' own fields do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScanOptions {
    /// `--exclude-path`: paths relative to the source root, without a leading `/`.
    pub exclude_paths: Vec<Vec<u8>>,
    /// `--exclude-regex`: patterns matched against paths relative to the source root.
    pub exclude_regexes: Vec<String>,
    /// `--keep-going`: skip unreadable files (reported in [`BuildReport::skipped`]).
    pub keep_going: bool,
    /// `--hard-dereference`: hard-linked source files become separate inodes, so that the
    /// image does not depend on how the host happened to link them.
    pub hard_dereference: bool,
    /// Which files take [`Options::timestamp`] as their modification time.
    pub mtime: MtimePolicy,
    /// Ownership rewriting.
    pub ownership: Ownership,
}

/// Everything that shapes an image: the format's choices (the fields), how a source is
/// read ([`Options::scan`]) and where the work runs ([`Options::threads`],
/// [`Options::pool`]). Two builds of the same tree with equal options and a fixed timestamp
/// and UUID are byte-identical, whatever the threads.
///
/// Start from [`Options::default`] and set fields: `let mut o = Options::default();
/// o.blkszbits = 12;`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Options {
    /// log2 of the block size, 9..=12.
    pub blkszbits: u8,
    /// `-T` / `SOURCE_DATE_EPOCH`: one timestamp for the superblock and (see
    /// [`ScanOptions::mtime`]) every file. A source applies it to files; for a ready [`Tree`]
    /// it sets the epoch only. `None`: the epoch is the build time.
    pub timestamp: Option<i64>,
    /// `-U`.
    pub uuid: UuidChoice,
    /// `-L`, at most 15 bytes.
    pub label: Vec<u8>,
    /// `-x`: xattrs used by more than this many inodes go to the shared area; negative
    /// values drop the source xattrs.
    pub xattr_tolerance: i32,
    /// Long xattr name prefixes (`--xattr-prefix`), in registration order.
    pub xattr_prefixes: Vec<Vec<u8>>,
    /// The per-inode xattr name filter (`-E [^]xattr-name-filter`), on by default.
    pub xattr_name_filter: bool,
    /// `-E noinline_data`: regular files never get an inline tail.
    pub noinline_data: bool,
    /// Fingerprints, if requested.
    pub fingerprint: Option<FingerprintOptions>,
    /// How a source is read.
    pub scan: ScanOptions,
    /// Worker threads for scanning, compressing and hashing; 0 = one per CPU. Ignored with
    /// [`Options::pool`]. The image does not depend on it.
    pub threads: usize,
    /// A rayon pool to build on instead of a new one of [`Options::threads`] workers, for
    /// callers that run several builds or share their own pool. The scan recurses once per
    /// directory level: give its threads large stacks (the builder's own have 64 MiB). The
    /// image does not depend on the pool's size.
    pub pool: Option<Pool>,
    /// `-z`/`-C`: compress regular files; `None` stores them uncompressed.
    pub compression: Option<compress::CompressOptions>,
    /// The layout of compressed files.
    pub zlayout: ZLayoutOptions,
    /// `-E 48bit`: the 48-bit layout (incompat `48BIT`, Linux 6.15+; Linux 6.12 refuses the
    /// image): the superblock's `epoch` is moved back so that compact inodes hold any mtime
    /// within 2³² − 1 seconds after it, and `build_time` records the image's time.
    pub bit48: bool,
    /// `--verity`: a dm-verity hash tree over the image.
    pub verity: Option<VerityOptions>,
    /// `--fsverity-digest`: compute the fs-verity digest of the finished image file.
    pub fsverity_digest: bool,
    /// Where the builder spills data it gathers while writing (the packed inode's content
    /// with `-E fragments`); `None`: the system's temporary directory. The image does not
    /// depend on it.
    pub staging_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            blkszbits: DEFAULT_BLOCK_SIZE_BITS,
            timestamp: None,
            uuid: UuidChoice::Random,
            label: Vec::new(),
            xattr_tolerance: 2,
            xattr_prefixes: Vec::new(),
            xattr_name_filter: true,
            noinline_data: false,
            fingerprint: None,
            scan: ScanOptions::default(),
            threads: 0,
            pool: None,
            compression: None,
            zlayout: ZLayoutOptions::default(),
            bit48: false,
            verity: None,
            fsverity_digest: false,
            staging_dir: None,
        }
    }
}

impl Options {
    /// The fragments a compressed image gets (`-E fragments` / `all-fragments` count only
    /// with `-z`): the one place the writer, the packed inode and the placement of long
    /// xattr prefixes (`layout::prefixes_in_packed`) learn it from.
    pub fn fragments(&self) -> Fragments {
        if self.compression.is_some() {
            self.zlayout.fragments
        } else {
            Fragments::Off
        }
    }

    /// Fixes the build time now when files are to take it, so that the scan and the layout
    /// agree on it; draws a random UUID now, so that the report can name it.
    fn resolve_time(&self) -> Self {
        let mut o = self.clone();
        if o.uuid == UuidChoice::Random {
            o.uuid = UuidChoice::Value(layout::random_uuid());
        }
        if o.scan.mtime == MtimePolicy::IgnoreMtime && o.timestamp.is_none() {
            o.timestamp = Some(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64),
            );
        }
        o
    }

    /// Checks option values that do not depend on the source.
    pub fn validate(&self) -> Result<(), BuildError> {
        if !(erofs_format::MIN_BLOCK_SIZE_BITS..=erofs_format::MAX_BLOCK_SIZE_BITS)
            .contains(&self.blkszbits)
        {
            return Err(BuildError::InvalidOption(format!(
                "block size {} is not supported (512 to 4096)",
                1u32 << self.blkszbits
            )));
        }
        if self.verity.is_some() && self.blkszbits != 12 {
            return Err(BuildError::InvalidOption(format!(
                "--verity: dm-verity's 4096-byte data blocks give a device on which Linux cannot \
                 mount an image of {}-byte blocks; build it with -b 4096",
                1u32 << self.blkszbits
            )));
        }
        if self.label.len() > 15 {
            return Err(BuildError::InvalidOption(
                "volume label is longer than 15 bytes".into(),
            ));
        }
        if self.label.contains(&0) {
            return Err(BuildError::InvalidOption(
                "volume label contains a NUL byte".into(),
            ));
        }
        if let Some(c) = &self.compression {
            c.validate(self.blkszbits)?;
        }
        if self.zlayout.fragments != Fragments::Off && self.compression.is_none() {
            return Err(BuildError::InvalidOption(
                "fragments live in the compressed packed inode: they need -z".into(),
            ));
        }
        if let Some(fp) = &self.fingerprint
            && (fp.xattr_name.is_empty() || fp.xattr_name.contains(&0))
        {
            return Err(BuildError::InvalidOption(
                "invalid fingerprint xattr name".into(),
            ));
        }
        for p in &self.xattr_prefixes {
            if p.is_empty() || p.contains(&0) {
                return Err(BuildError::InvalidOption(
                    "invalid xattr prefix (empty or with a NUL byte)".into(),
                ));
            }
            if erofs_format::xattr::LongPrefix::from_name(p).infix.len() > 255 {
                return Err(BuildError::InvalidOption(format!(
                    "xattr prefix {} is too long",
                    String::from_utf8_lossy(p)
                )));
            }
        }
        Ok(())
    }
}

/// Progress, warnings and cancellation: the trait shared with the reader and the binaries.
///
/// A build reports [`Phase::Scan`] (then `advance(n, 0)` every [`SCAN_BATCH`] source
/// entries), [`Phase::Plan`], `start(files, bytes)` for the data to copy, [`Phase::Data`]
/// and [`Phase::Metadata`] (with `advance(files, bytes)` as files are written), and
/// `finish()`. It asks [`Progress::is_cancelled`] before each source entry and each job,
/// and stops with [`BuildError::Cancelled`].
pub use erofs_task::{CancelToken, Cancellable, Cancelled, NoProgress, Phase, Progress};

/// A caller's rayon pool to build on ([`Options::pool`]); clones share it.
#[derive(Clone, Debug)]
pub struct Pool(std::sync::Arc<rayon::ThreadPool>);

impl From<rayon::ThreadPool> for Pool {
    fn from(pool: rayon::ThreadPool) -> Self {
        Self(std::sync::Arc::new(pool))
    }
}

impl From<std::sync::Arc<rayon::ThreadPool>> for Pool {
    fn from(pool: std::sync::Arc<rayon::ThreadPool>) -> Self {
        Self(pool)
    }
}

// A job that panics does not break the pool (rayon re-raises the panic in the caller and
// keeps its workers), so options that name a pool may cross `catch_unwind` as before.
impl std::panic::UnwindSafe for Pool {}
impl std::panic::RefUnwindSafe for Pool {}

/// How many source entries a scan reports per [`Progress::advance`] call.
pub const SCAN_BATCH: u64 = 4096;

/// A file left out of the image because of `--keep-going`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Skipped {
    /// The source path.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

/// Where the writer's time went (`MKFS_EROFS_RS_TIMINGS`), so that the serial share of a
/// build can be read on any machine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timings {
    /// CPU time spent on the in-order path: work that runs one result at a time, in image
    /// order, while other workers may wait for it.
    pub ordered_cpu: std::time::Duration,
    /// Wall time worker threads spent waiting: for the in-order path to catch up, or idle at
    /// the end of a stage while the last jobs finish.
    pub worker_wait: std::time::Duration,
}

/// What a build produced.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct BuildReport {
    /// Number of inodes in the image.
    pub inodes: u64,
    /// Image size in bytes.
    pub image_bytes: u64,
    /// Regular files that carry a fingerprint xattr.
    pub fingerprinted_files: u64,
    /// Bytes of regular-file data read from the source.
    pub data_bytes: u64,
    /// Files skipped with `--keep-going`.
    pub skipped: Vec<Skipped>,
    /// Warnings, in the order they were raised.
    pub warnings: Vec<String>,
    /// The writer's in-order and waiting time.
    pub timings: Timings,
    /// The volume UUID written (all zeroes for `-U clear`).
    pub uuid: [u8; 16],
    /// What compression did, with `-z`.
    pub compression: Option<CompressionReport>,
    /// The dm-verity tree, with `--verity`.
    pub verity: Option<VerityReport>,
    /// The fs-verity digest of the image file, with `--fsverity-digest`.
    pub fsverity_digest: Option<[u8; 32]>,
    /// Files whose content the image reserves room for but does not hold
    /// (`--tar=i,MAPFILE`): where each goes and where it lies in the source.
    pub region_map: Vec<layout::RegionExtent>,
}

/// What `-z` did to the files it tried (those larger than a block, or every non-empty one
/// with `-E ztailpacking`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompressionReport {
    /// Regular files the compressor was given.
    pub files: u64,
    /// Of those, the files stored compressed (the rest gained nothing and are stored raw).
    pub compressed_files: u64,
    /// Their content in bytes.
    pub input_bytes: u64,
    /// The bytes they take in the image: pclusters in whole blocks, inline tail pclusters,
    /// and the size of the files stored raw; a pcluster shared by several extents
    /// (`-E dedupe`) once.
    pub stored_bytes: u64,
    /// Pcluster bytes that extents reference but the image holds only once (`-E dedupe`):
    /// what the files would take more without sharing.
    pub shared_bytes: u64,
}

impl CompressionReport {
    /// `stored_bytes / input_bytes`, or `None` when no byte was compressed.
    pub fn ratio(&self) -> Option<f64> {
        (self.input_bytes > 0).then(|| self.stored_bytes as f64 / self.input_bytes as f64)
    }
}

/// Errors of a build. Each names the path or the option at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An I/O error on a source path.
    #[error("{}: {error}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error (part of the message, so not a separate `source`).
        error: std::io::Error,
    },
    /// The source is not a directory.
    #[error("{}: source is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// A file's size changed while it was being built into the image.
    #[error("{}: file changed size during the build (expected {expected} bytes)", path.display())]
    ChangedSize {
        /// The path.
        path: PathBuf,
        /// The size seen during the scan.
        expected: u64,
    },
    /// A source entry that cannot be represented.
    #[error("{}: {reason}", path.display())]
    Unsupported {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A bad option value.
    #[error("{0}")]
    InvalidOption(String),
    /// The image would exceed a format limit.
    #[error("image too large: {0}")]
    TooLarge(String),
    /// Writing the image failed.
    #[error("writing the image: {0}")]
    Output(std::io::Error),
    /// A tar stream that is malformed, or whose entries cannot be applied.
    #[error("tar stream: {0}")]
    Tar(tar::TarError),
    /// The image path cannot be opened or created, or the finished image not named.
    #[error("cannot write the image {}: {error}", path.display())]
    CreateOutput {
        /// The image path as given.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The tree a source produced breaks the tree's invariants.
    #[error(transparent)]
    InvalidTree(#[from] TreeError),
    /// The caller cancelled the build (through its [`Progress`]); no image was written.
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
    /// A block device too small for the image.
    #[error("{}: the image needs {needed} bytes, the device holds {capacity}", path.display())]
    DeviceTooSmall {
        /// The device.
        path: PathBuf,
        /// The image size.
        needed: u64,
        /// The device size.
        capacity: u64,
    },
}

impl BuildError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            error: source,
        }
    }
}

/// Builds an image of the directory `source` and writes it to `image` (see [`output`] for
/// how each kind of path is written: a regular file is replaced atomically, a block device
/// written in place, a character device, fifo or `-` receives a stream).
///
/// A failed build leaves an existing regular `image` untouched. An `image` inside `source`
/// is not part of the image.
pub fn build_dir_to_path(
    source: &Path,
    image: &Path,
    options: &Options,
    progress: &dyn Progress,
) -> Result<BuildReport, BuildError> {
    let mut source = source::DirSource {
        path: source.to_path_buf(),
    };
    build_to_path(&mut source, image, options, progress)
}

/// Builds an image of any [`source::Source`] and writes it to `image`, as
/// Builds an image of any [`source::Source`] and writes it to `image`, as
/// [`build_dir_to_path`] does. Sources stage data next to the image.
pub fn build_to_path(
    source: &mut (dyn source::Source + Send),
    image: &Path,
    options: &Options,
    progress: &dyn Progress,
) -> Result<BuildReport, BuildError> {
    options.validate()?;
    let mut out = Output::create(image)?;
    let report = build_to_output(source, &mut out, options, progress)?;
    out.commit()?;
    Ok(report)
}

/// Builds an image of the directory `source` into an opened [`Output`]; the caller commits
/// it. A block device is checked to hold the image before anything is written.
pub fn build_dir_to_output(
    source: &Path,
    out: &mut Output,
    options: &Options,
    progress: &dyn Progress,
) -> Result<BuildReport, BuildError> {
    let mut source = source::DirSource {
        path: source.to_path_buf(),
    };
    build_to_output(&mut source, out, options, progress)
}

/// Builds an image of any [`source::Source`] into an opened [`Output`]: positioned writes
/// in parallel where it is seekable, an ordered stream otherwise. The caller commits it.
pub fn build_to_output(
    source: &mut (dyn source::Source + Send),
    out: &mut Output,
    options: &Options,
    progress: &dyn Progress,
) -> Result<BuildReport, BuildError> {
    options.validate()?;
    let mut options = options.resolve_time();
    // Sources stage data beside the image (a stream's target has no directory to use).
    let staging_dir = match (out.kind(), out.target().parent()) {
        (OutputKind::Stream, _) => std::env::temp_dir(),
        (_, Some(p)) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if out.kind() == OutputKind::Regular {
        let target = out.target().to_path_buf();
        if let Some(rel) = source.contains(&target, &staging_dir) {
            options.scan.exclude_paths.push(rel);
        }
    }
    if options.staging_dir.is_none() {
        options.staging_dir = Some(staging_dir.clone());
    }
    let capacity = out.capacity()?;
    let mut report = BuildReport::default();
    let written = in_pool(&options, progress, || {
        progress.phase(Phase::Scan);
        let tree = ValidTree::new(source.read_tree(&mut source::SourceCtx {
            options: &options,
            report: &mut report,
            progress,
            staging_dir: &staging_dir,
        })?)?;
        if let Some(capacity) = capacity {
            // Planned twice for a device only: once here, so that a device too small is
            // refused before a byte of it is overwritten.
            let needed = layout::plan(&tree, &options)?.image_bytes();
            if needed > capacity {
                return Err(BuildError::DeviceTooSmall {
                    path: out.target().to_path_buf(),
                    needed,
                    capacity,
                });
            }
        }
        if out.is_seekable() {
            write_image_at(&tree, &options, out.file(), progress, &mut report)
        } else {
            write_image(&tree, &options, out.file(), progress, &mut report)
        }
    })?;
    report.image_bytes = written;
    if let UuidChoice::Value(u) = options.uuid {
        report.uuid = u;
    }
    Ok(report)
}

/// Builds an image of `source` into any writer (no temporary file). Used by tests and tools.
pub fn build_dir_to_writer<W: std::io::Write + Send>(
    source: &Path,
    out: &mut W,
    options: &Options,
    progress: &dyn Progress,
) -> Result<BuildReport, BuildError> {
    let mut source = source::DirSource {
        path: source.to_path_buf(),
    };
    build_to_writer(&mut source, out, options, progress)
}

/// Builds an image of any [`source::Source`] into any writer. Sources stage data in the
/// system's temporary directory.
pub fn build_to_writer<W: std::io::Write + Send>(
    source: &mut (dyn source::Source + Send),
    out: &mut W,
    options: &Options,
    progress: &dyn Progress,
) -> Result<BuildReport, BuildError> {
    options.validate()?;
    let options = &options.resolve_time();
    let mut report = BuildReport::default();
    in_pool(options, progress, || {
        progress.phase(Phase::Scan);
        let staging = std::env::temp_dir();
        let tree = ValidTree::new(source.read_tree(&mut source::SourceCtx {
            options,
            report: &mut report,
            progress,
            staging_dir: &staging,
        })?)?;
        report.image_bytes = write_image(&tree, options, out, progress, &mut report)?;
        Ok(())
    })?;
    Ok(report)
}

/// Writes the image of an already built and checked tree into `out`.
pub fn build_tree_to_writer<W: std::io::Write + Send>(
    tree: &ValidTree,
    out: &mut W,
    options: &Options,
    progress: &dyn Progress,
) -> Result<BuildReport, BuildError> {
    options.validate()?;
    let mut report = BuildReport::default();
    in_pool(options, progress, || {
        report.image_bytes = write_image(tree, options, out, progress, &mut report)?;
        Ok(())
    })?;
    Ok(report)
}

/// What the integrity stage hashes: the dm-verity salt (if any) and which of the salted
/// leaf sets gives the fs-verity digest. Fixes a random UUID first: the salt may derive
/// from it.
struct Integrity {
    options: Options,
    uuid: [u8; 16],
    dm_salt: Option<Vec<u8>>,
    fs_set: Option<usize>,
}

impl Integrity {
    fn new(options: &Options) -> Option<Self> {
        if options.verity.is_none() && !options.fsverity_digest {
            return None;
        }
        let uuid = options.uuid.resolve();
        let options = Options {
            uuid: UuidChoice::Value(uuid),
            ..options.clone()
        };
        let dm_salt = options
            .verity
            .as_ref()
            .map(|v| verity::choose_salt(v, &uuid, options.timestamp.is_some()));
        // With no salt the dm-verity leaves are fs-verity's: hash once.
        let fs_set = match &dm_salt {
            _ if !options.fsverity_digest => None,
            Some(s) if s.is_empty() => Some(0),
            Some(_) => Some(1),
            None => Some(0),
        };
        Some(Self {
            options,
            uuid,
            dm_salt,
            fs_set,
        })
    }

    fn salts(&self) -> Vec<&[u8]> {
        let mut v: Vec<&[u8]> = self.dm_salt.iter().map(Vec::as_slice).collect();
        if self.fs_set == Some(v.len()) {
            v.push(&[]);
        }
        v
    }

    /// The bytes to append after an image of `written` bytes, recording the tree.
    fn tail(
        &self,
        written: u64,
        leaves: impl FnOnce(usize) -> std::io::Result<Vec<erofs_verity::Digest>>,
        report: &mut BuildReport,
    ) -> Result<Vec<u8>, BuildError> {
        match (&self.options.verity, &self.dm_salt) {
            (Some(v), Some(salt)) => {
                let leaves = leaves(0).map_err(BuildError::Output)?;
                let (r, appended) = verity::tree_tail(written, &leaves, salt, self.uuid, v)?;
                report.verity = Some(r);
                Ok(appended)
            }
            _ => Ok(Vec::new()),
        }
    }
}

/// Writes the image of `tree` as a stream, then the integrity data the options ask for (a
/// dm-verity tree appended or in its own file, the fs-verity digest of the whole file).
/// Returns the size of the filesystem image, without what follows it.
fn write_image<W: std::io::Write + Send>(
    tree: &ValidTree,
    options: &Options,
    out: &mut W,
    progress: &dyn Progress,
    report: &mut BuildReport,
) -> Result<u64, BuildError> {
    let Some(integrity) = Integrity::new(options) else {
        return write::build_image(tree, options, out, progress, report);
    };
    let mut tap = verity::Tap::new(&mut *out, &integrity.salts());
    let written = write::build_image(tree, &integrity.options, &mut tap, progress, report)?;
    let appended = integrity.tail(written, |i| tap.leaves(i), report)?;
    std::io::Write::write_all(&mut tap, &appended).map_err(BuildError::Output)?;
    if let Some(i) = integrity.fs_set {
        let len = tap.position();
        let leaves = tap.leaves(i).map_err(BuildError::Output)?;
        report.fsverity_digest = Some(erofs_verity::fsverity_digest(len, &leaves));
    }
    Ok(written)
}

/// [`write_image`] with positioned writes: every worker hashes the bytes it writes.
fn write_image_at(
    tree: &ValidTree,
    options: &Options,
    file: &std::fs::File,
    progress: &dyn Progress,
    report: &mut BuildReport,
) -> Result<u64, BuildError> {
    let Some(integrity) = Integrity::new(options) else {
        return write::build_image_at(tree, options, file, progress, report);
    };
    let tapped = verity::TappedFile {
        file,
        sets: integrity
            .salts()
            .iter()
            .map(|s| erofs_verity::LeafSet::new(s))
            .collect(),
    };
    let written = write::build_image_at(tree, &integrity.options, &tapped, progress, report)?;
    let appended = integrity.tail(written, |i| Ok(tapped.sets[i].leaves(written)), report)?;
    write::WriteAt::put_at(&tapped, &appended, written).map_err(BuildError::Output)?;
    if let Some(i) = integrity.fs_set {
        let len = written + appended.len() as u64;
        report.fsverity_digest = Some(erofs_verity::fsverity_digest(
            len,
            &tapped.sets[i].leaves(len),
        ));
    }
    Ok(written)
}

/// Runs `f` on the caller's pool ([`Options::pool`]) or on a dedicated one with
/// `options.threads` workers and large stacks (deep trees recurse once per level), then
/// tells `progress` the build ended, whether it succeeded or not.
fn in_pool<T: Send>(
    options: &Options,
    progress: &dyn Progress,
    f: impl FnOnce() -> Result<T, BuildError> + Send,
) -> Result<T, BuildError> {
    let result = match &options.pool {
        Some(pool) => pool.0.install(f),
        None => rayon::ThreadPoolBuilder::new()
            .num_threads(options.threads)
            .stack_size(64 << 20)
            .thread_name(|i| format!("erofs-builder-{i}"))
            .build()
            .map_err(|e| BuildError::InvalidOption(format!("thread pool: {e}")))?
            .install(f),
    };
    progress.finish();
    result
}

/// The path of `image` relative to `source`, when the image lies inside the source tree.
fn image_inside_source(source: &Path, image: &Path, image_parent: &Path) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let src = std::fs::canonicalize(source).ok()?;
    let parent = std::fs::canonicalize(image_parent).ok()?;
    let full = parent.join(image.file_name()?);
    let rel = full.strip_prefix(&src).ok()?;
    let bytes = rel.as_os_str().as_bytes();
    (!bytes.is_empty()).then(|| bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_parses_random_clear_and_values() {
        assert_eq!(UuidChoice::parse("random").unwrap(), UuidChoice::Random);
        assert_eq!(UuidChoice::parse("clear").unwrap(), UuidChoice::Clear);
        let v = UuidChoice::parse("01234567-89ab-cdef-0123-456789abcdef").unwrap();
        assert_eq!(
            v,
            UuidChoice::Value([
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
                0xcd, 0xef
            ])
        );
        assert!(UuidChoice::parse("0123").is_err());
    }

    #[test]
    fn ownership_rewrites_in_mkfs_order() {
        let o = Ownership {
            uid_offset: 10,
            force_gid: Some(5),
            ..Default::default()
        };
        assert_eq!(o.apply(1, 2), (11, 5));
        let r = Ownership {
            all_root: true,
            force_uid: Some(3),
            ..Default::default()
        };
        assert_eq!(r.apply(1, 2), (0, 0));
    }

    #[test]
    fn labels_over_15_bytes_are_refused() {
        let o = Options {
            label: b"0123456789abcdef".to_vec(),
            ..Default::default()
        };
        assert!(o.validate().is_err());
    }
}
