//! Typed errors. Every corruption names the nid and/or byte offset where it was found.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in the image a problem was found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Location {
    /// The inode being read, if any.
    pub nid: Option<u64>,
    /// The byte offset in the image, if known.
    pub offset: Option<u64>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.nid, self.offset) {
            (Some(n), Some(o)) => write!(f, "nid {n} (byte offset {o})"),
            (Some(n), None) => write!(f, "nid {n}"),
            (None, Some(o)) => write!(f, "byte offset {o}"),
            (None, None) => write!(f, "image"),
        }
    }
}

/// What is wrong with a corrupt image.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// A structure extends past the end of the image.
    #[error(
        "{len} bytes lie outside the image ({image_size} bytes): the image is truncated or an offset is corrupt"
    )]
    OutOfImage {
        /// Length of the read.
        len: u64,
        /// Image size in bytes.
        image_size: u64,
    },
    /// An offset computation overflowed 64 bits.
    #[error("offset arithmetic overflows")]
    Overflow,
    /// `i_format` has reserved bits or a reserved layout.
    #[error("unsupported i_format {0:#06x}")]
    InodeFormat(u16),
    /// `i_mode` has no valid file type.
    #[error("bogus i_mode {0:#o}")]
    InodeMode(u16),
    /// Inode and xattr body with an inline tail cross a block boundary.
    #[error("inline data across blocks: tail of {tail_len} bytes at in-block offset {in_block}")]
    InlineAcrossBlocks {
        /// Length of the inline tail.
        tail_len: u64,
        /// Offset of the tail inside its block.
        in_block: u64,
    },
    /// A chunk-based inode has a bad chunk format.
    #[error("unsupported chunk format {0:#06x}")]
    ChunkFormat(u16),
    /// A size is larger than this reader allows for that kind of inode.
    #[error("{what} of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// The size found.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A directory block is malformed.
    #[error("directory block {block}: {reason}")]
    DirBlock {
        /// Block index inside the directory.
        block: u64,
        /// What is wrong.
        reason: String,
    },
    /// A directory entry has an unusable name.
    #[error("bad name {name:?} in directory: {reason}")]
    BadName {
        /// The name, escaped.
        name: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A directory is reachable twice (a cycle or a hard-linked directory).
    #[error("directory reached twice (cycle or hard-linked directory) at {path}")]
    DirectoryCycle {
        /// Path of the second reference.
        path: String,
    },
    /// Directories together reference more bytes than the image holds.
    #[error("directories reference {total} bytes, more than the image holds ({image_size})")]
    DirectoryBudget {
        /// Directory bytes visited so far.
        total: u64,
        /// Image size.
        image_size: u64,
    },
    /// The xattr body or an xattr entry is malformed.
    #[error("xattr: {0}")]
    Xattr(String),
    /// A shared xattr id points outside the image.
    #[error("shared xattr id {id} is outside the image")]
    SharedXattrId {
        /// The id.
        id: u32,
    },
    /// An xattr uses a long prefix that is not registered.
    #[error("xattr uses long prefix {index}, but the image has {count}")]
    LongPrefixIndex {
        /// The prefix index.
        index: u8,
        /// Number of registered prefixes.
        count: usize,
    },
    /// The long prefix table is malformed.
    #[error("long xattr prefix table: {0}")]
    LongPrefixes(String),
    /// The superblock holds an inconsistent value.
    #[error("superblock: {0}")]
    Superblock(String),
    /// A compressed inode's map header or lcluster index is inconsistent.
    #[error("compressed index, lcluster {lcn}: {reason}")]
    CompressedIndex {
        /// The logical cluster number.
        lcn: u64,
        /// What is wrong.
        reason: String,
    },
    /// A pcluster did not decode to its extent (the location's offset is the pcluster's).
    #[error("extent at logical offset {logical} ({algorithm}): {reason}")]
    Decode {
        /// First logical byte of the extent.
        logical: u64,
        /// Algorithm name, `plain` or `fragment`.
        algorithm: &'static str,
        /// What the decoder reported.
        reason: String,
    },
    /// A fragment lies outside the packed inode.
    #[error("fragment at packed-inode offset {offset}: {reason}")]
    Fragment {
        /// Offset in the packed inode.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A symlink target is empty or too long.
    #[error("symlink target of {0} bytes is empty or too long")]
    Symlink(u64),
}

/// Every error the reader returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The image file could not be opened.
    #[error("cannot open image {path}: {source}")]
    Open {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A read from the image failed.
    #[error("I/O error reading {len} bytes at byte offset {offset}: {source}")]
    Io {
        /// Byte offset of the read.
        offset: u64,
        /// Length of the read.
        len: u64,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The image is shorter than a superblock.
    #[error("image is {size} bytes, too small for an EROFS superblock (needs 1152)")]
    TooSmall {
        /// Image size in bytes.
        size: u64,
    },
    /// The magic at byte 1024 is wrong.
    #[error("not an EROFS image: magic at byte 1024 is {found:#010x}, expected 0xe0f5e1e2")]
    BadMagic {
        /// The value found.
        found: u32,
    },
    /// `blkszbits` is outside 9..=12.
    #[error("unsupported block size: blkszbits {bits} at byte 1036 (supported: 9..=12)")]
    BlockSize {
        /// The value found.
        bits: u8,
    },
    /// The superblock checksum does not match.
    #[error(
        "superblock checksum mismatch at byte 1028: stored {stored:#010x}, computed {computed:#010x}"
    )]
    Checksum {
        /// The stored value.
        stored: u32,
        /// The value computed over block 0.
        computed: u32,
    },
    /// The image uses incompat features this reader cannot read.
    #[error("unsupported incompatible features: {}", names.join(", "))]
    UnsupportedFeatures {
        /// The offending raw bits.
        bits: u32,
        /// Their names (`unknown(0x...)` for unnamed bits).
        names: Vec<String>,
    },
    /// The image is corrupt at `at`.
    #[error("corrupt image at {at}: {what}")]
    Corrupt {
        /// Where.
        at: Location,
        /// What.
        what: Corruption,
    },
    /// The inode's data is compressed with an algorithm this reader does not know.
    #[error("nid {nid}: compressed data ({algorithm}), not supported")]
    Compressed {
        /// The inode.
        nid: u64,
        /// Algorithm name (`lz4`, `lzma`, `deflate`, `zstd`, or `unknown(N)`).
        algorithm: String,
    },
    /// The inode's data lives on an extra device, which this reader does not open.
    #[error("nid {nid}: data on extra device {device} is not supported")]
    ExtraDevice {
        /// The inode.
        nid: u64,
        /// Device id from the chunk index.
        device: u16,
    },
    /// A path component does not exist.
    #[error("no such file or directory: {}", path.escape_ascii())]
    NotFound {
        /// The path looked up.
        path: Vec<u8>,
    },
    /// A directory operation was given a non-directory.
    #[error("nid {nid} is not a directory")]
    NotADirectory {
        /// The inode.
        nid: u64,
    },
    /// `readlink` was given a non-symlink.
    #[error("nid {nid} is not a symlink")]
    NotASymlink {
        /// The inode.
        nid: u64,
    },
    /// The caller cancelled the operation (through its [`crate::Progress`]).
    #[error(transparent)]
    Cancelled(#[from] crate::Cancelled),
}

impl Error {
    /// Builds a corruption error.
    pub fn corrupt(nid: Option<u64>, offset: Option<u64>, what: Corruption) -> Self {
        Error::Corrupt {
            at: Location { nid, offset },
            what,
        }
    }

    /// The nid this error names, if any.
    pub fn nid(&self) -> Option<u64> {
        match self {
            Error::Corrupt { at, .. } => at.nid,
            Error::Compressed { nid, .. }
            | Error::ExtraDevice { nid, .. }
            | Error::NotADirectory { nid }
            | Error::NotASymlink { nid } => Some(*nid),
            _ => None,
        }
    }

    /// Sets the nid of a corruption error that has none yet.
    pub(crate) fn with_nid(mut self, nid: u64) -> Self {
        if let Error::Corrupt { at, .. } = &mut self
            && at.nid.is_none()
        {
            at.nid = Some(nid);
        }
        self
    }
}
