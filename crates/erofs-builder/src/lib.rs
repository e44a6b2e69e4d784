//! Builds uncompressed EROFS images.
//!
//! The build runs in three stages, each with one job:
//!
//! 1. **Source → tree.** A source (today: a directory walk, [`scan`]; later: a tar stream)
//!    produces a validated in-memory [`tree::Tree`]: one entry per inode, hard links merged,
//!    directory entries sorted bytewise, xattrs sorted, ownership and times already rewritten.
//! 2. **Tree → plan.** [`layout`] decides every on-disk fact before a byte is written: inode
//!    kinds (compact or extended), xattr bodies and the shared xattr area, data layouts
//!    (plain, inline tail, chunk-based for sparse files), nids and block addresses.
//! 3. **Plan → image.** [`mod@write`] streams the image front to back through one buffered
//!    writer. File data comes first (read and hashed in parallel, consumed in order, so the
//!    output never depends on thread timing), metadata last, because inodes carry the
//!    fingerprints computed while the data was copied.
//!
//! The per-file data encoding is a separate step in the writer (plain today), so that
//! compressed files can plug in later without touching the scan or the tree.
//!
//! Libraries do not print: progress and warnings go through the [`Progress`] trait.

pub mod dir;
pub mod layout;
mod pipeline;
pub mod scan;
pub mod tree;
pub mod verity;
pub mod write;
pub mod xattr;

use std::path::{Path, PathBuf};

pub use layout::Plan;
pub use tree::Tree;
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
}

/// How ownership is rewritten while scanning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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

/// Content fingerprints (`--fingerprint`, `--xattr-inode-digest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FingerprintOptions {
    /// The full xattr name that carries the fingerprint, e.g. `trusted.erofs.fingerprint`.
    pub xattr_name: Vec<u8>,
}

/// Everything that shapes an image. Two builds of the same tree with equal options and a
/// fixed timestamp and UUID are byte-identical.
#[derive(Clone, Debug)]
pub struct Options {
    /// log2 of the block size, 9..=12.
    pub blkszbits: u8,
    /// `-T` / `SOURCE_DATE_EPOCH`: one timestamp for the superblock and (see [`Self::mtime`])
    /// every file. The directory scan applies it to files; for a ready [`Tree`] it sets the
    /// epoch only. `None`: the epoch is the build time.
    pub timestamp: Option<i64>,
    /// Which files take the timestamp.
    pub mtime: MtimePolicy,
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
    /// Ownership rewriting.
    pub ownership: Ownership,
    /// `--exclude-path`: paths relative to the source root, without a leading `/`.
    pub exclude_paths: Vec<Vec<u8>>,
    /// `--exclude-regex`: patterns matched against paths relative to the source root.
    pub exclude_regexes: Vec<String>,
    /// `--keep-going`: skip unreadable files (reported in [`BuildReport::skipped`]).
    pub keep_going: bool,
    /// Worker threads for scanning and hashing; 0 = one per CPU.
    pub threads: usize,
    /// `--verity`: a dm-verity hash tree over the image.
    pub verity: Option<VerityOptions>,
    /// `--fsverity-digest`: compute the fs-verity digest of the finished image file.
    pub fsverity_digest: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            blkszbits: DEFAULT_BLOCK_SIZE_BITS,
            timestamp: None,
            mtime: MtimePolicy::default(),
            uuid: UuidChoice::Random,
            label: Vec::new(),
            xattr_tolerance: 2,
            xattr_prefixes: Vec::new(),
            xattr_name_filter: true,
            noinline_data: false,
            fingerprint: None,
            ownership: Ownership::default(),
            exclude_paths: Vec::new(),
            exclude_regexes: Vec::new(),
            keep_going: false,
            threads: 0,
            verity: None,
            fsverity_digest: false,
        }
    }
}

impl Options {
    /// Fixes the build time now when files are to take it, so that the scan and the layout
    /// agree on it.
    fn resolve_time(&self) -> Self {
        let mut o = self.clone();
        if o.mtime == MtimePolicy::IgnoreMtime && o.timestamp.is_none() {
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

/// Stages reported to [`Progress::phase`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Walking the source.
    Scan,
    /// Planning the layout.
    Plan,
    /// Copying and hashing file data.
    Data,
    /// Writing inodes and directories.
    Metadata,
    /// Done.
    Done,
}

/// Receives progress and warnings. Every method has an empty default; implementations must
/// be cheap, because [`Progress::advance`] runs once per file.
pub trait Progress: Sync {
    /// A new stage starts.
    fn phase(&self, _phase: Phase) {}
    /// The scan has examined `entries` source entries so far (called every few thousand).
    fn scanned(&self, _entries: u64) {}
    /// The data stage will copy `files` files with `bytes` bytes in total.
    fn totals(&self, _files: u64, _bytes: u64) {}
    /// `files` more files and `bytes` more bytes were copied.
    fn advance(&self, _files: u64, _bytes: u64) {}
    /// A non-fatal problem, already worded for the user.
    fn warning(&self, _message: &str) {}
}

/// A [`Progress`] that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}

/// A file left out of the image because of `--keep-going`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The source path.
    pub path: PathBuf,
    /// Why it was skipped.
    pub reason: String,
}

/// What a build produced.
#[derive(Clone, Debug, Default)]
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
    /// The dm-verity tree, with `--verity`.
    pub verity: Option<VerityReport>,
    /// The fs-verity digest of the image file, with `--fsverity-digest`.
    pub fsverity_digest: Option<[u8; 32]>,
}

/// Errors of a build. Each names the path or the option at fault.
#[derive(Debug, thiserror::Error)]
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
}

impl BuildError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            error: source,
        }
    }
}

/// Builds an image of the directory `source` and writes it to `image`.
///
/// The image is written to a temporary file next to `image` and renamed over it only when
/// everything succeeded, so a failed build leaves an existing `image` untouched. An `image`
/// inside `source` is not part of the image. A block device is written in place.
pub fn build_dir_to_path(
    source: &Path,
    image: &Path,
    options: &Options,
    progress: &dyn Progress,
) -> Result<BuildReport, BuildError> {
    options.validate()?;
    if let Ok(meta) = std::fs::metadata(image)
        && std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type())
    {
        // A block device is written in place: renaming over it would replace the node.
        let mut dev = std::fs::OpenOptions::new()
            .write(true)
            .open(image)
            .map_err(|e| BuildError::io(image, e))?;
        return build_dir_to_writer(source, &mut dev, options, progress);
    }
    let image_parent = match image.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut options = options.resolve_time();
    if let Some(rel) = image_inside_source(source, image, &image_parent) {
        options.exclude_paths.push(rel);
    }
    let mut report = BuildReport::default();
    let (tmp, written) = in_pool(&options, || {
        progress.phase(Phase::Scan);
        let tree = scan::scan_dir(source, &options, &mut report, progress)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".mkfs-erofs-rs.")
            .tempfile_in(&image_parent)
            .map_err(|e| BuildError::io(&image_parent, e))?;
        let written = write_image(&tree, &options, tmp.as_file_mut(), progress, &mut report)?;
        Ok((tmp, written))
    })?;
    // No fsync, like mkfs.erofs: the rename makes the new image visible only once it is
    // complete, and filesystems order a replacing rename after the data (ext4
    // auto_da_alloc, XFS, btrfs).
    tmp.persist(image)
        .map_err(|e| BuildError::io(image, e.error))?;
    // The temporary file is created 0600; give the image the usual mode.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(image, std::fs::Permissions::from_mode(0o644));
    }
    report.image_bytes = written;
    progress.phase(Phase::Done);
    Ok(report)
}

/// Builds an image of `source` into any writer (no temporary file). Used by tests and tools.
pub fn build_dir_to_writer<W: std::io::Write + Send>(
    source: &Path,
    out: &mut W,
    options: &Options,
    progress: &dyn Progress,
) -> Result<BuildReport, BuildError> {
    options.validate()?;
    let options = &options.resolve_time();
    let mut report = BuildReport::default();
    in_pool(options, || {
        progress.phase(Phase::Scan);
        let tree = scan::scan_dir(source, options, &mut report, progress)?;
        report.image_bytes = write_image(&tree, options, out, progress, &mut report)?;
        Ok(())
    })?;
    progress.phase(Phase::Done);
    Ok(report)
}

/// Writes the image of an already built tree (any source) into `out`.
pub fn build_tree_to_writer<W: std::io::Write + Send>(
    tree: &Tree,
    out: &mut W,
    options: &Options,
    progress: &dyn Progress,
) -> Result<BuildReport, BuildError> {
    options.validate()?;
    tree.validate()
        .map_err(|e| BuildError::InvalidOption(e.to_string()))?;
    let mut report = BuildReport::default();
    in_pool(options, || {
        report.image_bytes = write_image(tree, options, out, progress, &mut report)?;
        Ok(())
    })?;
    Ok(report)
}

/// Writes the image of `tree`, then the integrity data the options ask for (a dm-verity tree
/// appended or in its own file, the fs-verity digest of the whole file). Returns the size of
/// the filesystem image, without what follows it.
fn write_image<W: std::io::Write + Send>(
    tree: &Tree,
    options: &Options,
    out: &mut W,
    progress: &dyn Progress,
    report: &mut BuildReport,
) -> Result<u64, BuildError> {
    if options.verity.is_none() && !options.fsverity_digest {
        return write::build_image(tree, options, out, progress, report);
    }
    // The salt may derive from the UUID, so a random one is drawn before anything is hashed.
    let uuid = verity::fixed_uuid(&options.uuid);
    let fixed = Options {
        uuid: UuidChoice::Value(uuid),
        ..options.clone()
    };
    let options = &fixed;
    let dm_salt = options
        .verity
        .as_ref()
        .map(|v| verity::choose_salt(v, &uuid, options.timestamp.is_some()));
    // With no salt the dm-verity leaves are fs-verity's; hash once.
    let mut salts: Vec<&[u8]> = dm_salt.iter().map(Vec::as_slice).collect();
    let fs_set = match &dm_salt {
        _ if !options.fsverity_digest => None,
        Some(s) if s.is_empty() => Some(0),
        _ => {
            salts.push(&[]);
            Some(salts.len() - 1)
        }
    };
    let mut tap = verity::Tap::new(&mut *out, &salts);
    let written = write::build_image(tree, options, &mut tap, progress, report)?;
    if let (Some(v), Some(salt)) = (&options.verity, &dm_salt) {
        let leaves = tap.leaves(0).map_err(BuildError::Output)?;
        let (r, _) = verity::write_tree(&mut tap, written, &leaves, salt, uuid, v)?;
        report.verity = Some(r);
    }
    if let Some(i) = fs_set {
        let len = tap.position();
        let leaves = tap.leaves(i).map_err(BuildError::Output)?;
        report.fsverity_digest = Some(erofs_verity::fsverity_digest(len, &leaves));
    }
    Ok(written)
}

/// Runs `f` on a dedicated rayon pool with `options.threads` workers and large stacks
/// (deep trees recurse once per level).
fn in_pool<T: Send>(
    options: &Options,
    f: impl FnOnce() -> Result<T, BuildError> + Send,
) -> Result<T, BuildError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads)
        .stack_size(64 << 20)
        .thread_name(|i| format!("erofs-builder-{i}"))
        .build()
        .map_err(|e| BuildError::InvalidOption(format!("thread pool: {e}")))?;
    pool.install(f)
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
