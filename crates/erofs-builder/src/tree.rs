//! The validated in-memory tree every source produces and the layout consumes.
//!
//! A source builds a [`Tree`]; the builder accepts it only as a [`ValidTree`], which can be
//! made only by checking it, so the layout and the writer never see a tree that breaks these
//! invariants (checked by [`Tree::validate`]): inode 0 is the root directory; every
//! directory lists its children sorted bytewise with names of 1..=255 bytes that contain no
//! `/` or NUL; every non-root inode is reachable; link counts match the tree; xattrs of an
//! inode are sorted by name then value, with unique names.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a regular file's bytes come from.
#[derive(Clone, Debug)]
pub enum DataSource {
    /// A file on the local filesystem, read at write time.
    Path(PathBuf),
    /// Bytes already in memory (tests, small generated files).
    Bytes(Arc<[u8]>),
    /// The bytes at an offset of a file the source staged (a tar stream's spool): file byte
    /// `k` is at `offset + k`. Holes of sparse files are never read.
    At(StagedData),
    /// The bytes lie on an extra device of the image (a tar file kept beside it, in index
    /// mode): the image refers to them with chunk indexes instead of holding them.
    Blob(BlobData),
}

/// Where a file's content lies on an extra device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobData {
    /// The device id (1 = the first extra device). 0: the content is not on a device but
    /// goes to a region the image reserves after its metadata (`--tar=i,MAPFILE`).
    pub device: u16,
    /// Byte offset of the content on that device, a multiple of the block size; for
    /// device 0, its offset in the source.
    pub offset: u64,
    /// Its sha256, when the source computed it (the writer reads no blob data).
    pub digest: Option<[u8; 32]>,
}

/// A region of a staging file that holds one file's content.
#[derive(Clone, Debug)]
pub struct StagedData {
    /// The staging file, shared by every file of the source.
    pub file: Arc<std::fs::File>,
    /// Where the content's first byte is.
    pub offset: u64,
    /// What errors name: the entry in the source (e.g. a path in the tar stream).
    pub name: Arc<str>,
    /// The content's sha256, when the source hashed the bytes as they streamed past: the
    /// writer then copies the region without hashing it again.
    pub digest: Option<[u8; 32]>,
}

/// A regular file's content.
#[derive(Clone, Debug)]
pub struct FileContent {
    /// Size in bytes.
    pub size: u64,
    /// Where to read it.
    pub source: DataSource,
    /// For sparse files: the byte ranges that hold data, sorted and disjoint. Everything
    /// else reads as zeroes. `None` means the whole file is data.
    pub data_ranges: Option<Vec<Range<u64>>>,
    /// A fingerprint xattr value the source already carried; replaced by the computed one.
    pub old_fingerprint: Option<Vec<u8>>,
    /// For a file in the source tree: the device and inode number the scan saw, so that a
    /// file replaced at the same path before its data is read is caught, not mixed with
    /// the original's metadata.
    pub source_id: Option<(u64, u64)>,
}

impl FileContent {
    /// The content's sha256 as the source computed it, if it did (the writer need not read
    /// the bytes to fingerprint them).
    pub fn known_digest(&self) -> Option<[u8; 32]> {
        match &self.source {
            DataSource::At(d) => d.digest,
            DataSource::Blob(b) => b.digest,
            DataSource::Path(_) | DataSource::Bytes(_) => None,
        }
    }
}

/// A directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The name: raw bytes.
    pub name: Vec<u8>,
    /// Index of the child inode in [`Tree::inodes`].
    pub inode: usize,
}

/// The type-specific part of an inode.
#[derive(Clone, Debug)]
pub enum Kind {
    /// A regular file.
    Regular(FileContent),
    /// A directory: its parent (itself for the root) and its children, sorted bytewise.
    Directory {
        /// Index of the parent directory.
        parent: usize,
        /// Children, without `.` and `..`.
        entries: Vec<DirEntry>,
    },
    /// A symbolic link and its target.
    Symlink(Vec<u8>),
    /// A character device, `(major, minor)`.
    CharDevice(u32, u32),
    /// A block device, `(major, minor)`.
    BlockDevice(u32, u32),
    /// A FIFO.
    Fifo,
    /// A socket.
    Socket,
}

/// One inode of the tree.
#[derive(Clone, Debug)]
pub struct Inode {
    /// The type and its data.
    pub kind: Kind,
    /// Permission bits (`mode & 0o7777`).
    pub permissions: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: u32,
    /// Link count in the image: the number of entries naming a non-directory, or
    /// `2 + subdirectories` for a directory.
    pub nlink: u32,
    /// Extended attributes as (full name, value), sorted.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Inode {
    /// The `S_IFMT` bits for this kind.
    pub fn type_bits(&self) -> u16 {
        use erofs_format::inode::mode::*;
        match self.kind {
            Kind::Regular(_) => S_IFREG,
            Kind::Directory { .. } => S_IFDIR,
            Kind::Symlink(_) => S_IFLNK,
            Kind::CharDevice(..) => S_IFCHR,
            Kind::BlockDevice(..) => S_IFBLK,
            Kind::Fifo => S_IFIFO,
            Kind::Socket => S_IFSOCK,
        }
    }

    /// The full `i_mode`.
    pub fn mode(&self) -> u16 {
        self.type_bits() | (self.permissions & 0o7777)
    }

    /// The dirent file type.
    pub fn file_type(&self) -> erofs_format::FileType {
        erofs_format::FileType::from_mode(self.mode()).unwrap_or(erofs_format::FileType::Unknown)
    }
}

/// The tree a source produces. Inode order is the order the image stores inodes and data
/// in. The builder takes it as a [`ValidTree`].
#[derive(Clone, Debug)]
pub struct Tree {
    /// All inodes; index 0 is the root directory.
    pub inodes: Vec<Inode>,
}

/// A [`Tree`] that passed [`Tree::validate`]; read-only from then on (it dereferences to
/// the tree). The only input the layout and the writer accept.
#[derive(Clone, Debug)]
pub struct ValidTree(Tree);

impl ValidTree {
    /// Checks `tree` and keeps it.
    pub fn new(tree: Tree) -> Result<Self, TreeError> {
        tree.validate()?;
        Ok(Self(tree))
    }

    /// The tree back, to change it (and check it again).
    pub fn into_inner(self) -> Tree {
        self.0
    }
}

impl TryFrom<Tree> for ValidTree {
    type Error = TreeError;
    fn try_from(tree: Tree) -> Result<Self, TreeError> {
        Self::new(tree)
    }
}

impl std::ops::Deref for ValidTree {
    type Target = Tree;
    fn deref(&self) -> &Tree {
        &self.0
    }
}

/// Why a tree is not valid.
#[derive(Debug, thiserror::Error)]
#[error("invalid tree: {0}")]
#[non_exhaustive]
pub struct TreeError(pub String);

impl Tree {
    /// Checks the invariants listed in the module documentation.
    pub fn validate(&self) -> Result<(), TreeError> {
        let err = |m: String| Err(TreeError(m));
        let Some(root) = self.inodes.first() else {
            return err("no root".into());
        };
        if !matches!(root.kind, Kind::Directory { parent: 0, .. }) {
            return err("inode 0 is not a root directory".into());
        }
        let mut refs = vec![0u32; self.inodes.len()];
        let mut subdirs = vec![0u32; self.inodes.len()];
        for (i, inode) in self.inodes.iter().enumerate() {
            if let Kind::Directory { entries, .. } = &inode.kind {
                for w in entries.windows(2) {
                    if w[0].name >= w[1].name {
                        return err(format!("inode {i}: entries not sorted or duplicated"));
                    }
                }
                for e in entries {
                    if e.name.is_empty()
                        || e.name.len() > erofs_format::MAX_NAME_LEN
                        || e.name.contains(&b'/')
                        || e.name.contains(&0)
                        || e.name == b"."
                        || e.name == b".."
                    {
                        return err(format!("inode {i}: bad name {:?}", e.name));
                    }
                    let Some(child) = self.inodes.get(e.inode) else {
                        return err(format!("inode {i}: entry points past the table"));
                    };
                    if e.inode == 0 {
                        return err(format!("inode {i}: entry points at the root"));
                    }
                    refs[e.inode] += 1;
                    if let Kind::Directory { parent, .. } = child.kind {
                        if parent != i {
                            return err(format!("inode {}: wrong parent", e.inode));
                        }
                        subdirs[i] += 1;
                    }
                }
            }
            for w in inode.xattrs.windows(2) {
                if w[0].0 >= w[1].0 {
                    return err(format!("inode {i}: xattrs not sorted or duplicated"));
                }
            }
        }
        for (i, inode) in self.inodes.iter().enumerate() {
            let expected = match inode.kind {
                Kind::Directory { .. } => {
                    if i != 0 && refs[i] != 1 {
                        return err(format!("directory {i} is linked {} times", refs[i]));
                    }
                    2 + subdirs[i]
                }
                _ => refs[i],
            };
            if i != 0 && refs[i] == 0 {
                return err(format!("inode {i} is unreachable"));
            }
            if inode.nlink != expected {
                return err(format!(
                    "inode {i}: nlink {} but {expected} expected",
                    inode.nlink
                ));
            }
        }
        Ok(())
    }
}
