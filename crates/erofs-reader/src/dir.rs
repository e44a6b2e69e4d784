//! Directories (§6): iterating entries, binary-search lookup, path resolution.

use std::cmp::Ordering;

use erofs_format::{DIRENT_SIZE, DirBlock, DirBlockError, FileType};

use crate::error::{Corruption, Error, Result};
use crate::image::Image;
use crate::inode::Inode;

/// Most path components [`Image::lookup`] follows.
pub const MAX_PATH_COMPONENTS: usize = 4096;

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DirEntry {
    /// The name: raw bytes, not necessarily UTF-8.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::serde_bytes_lossy"))]
    pub name: Vec<u8>,
    /// Target nid.
    pub nid: u64,
    /// The `file_type` byte of the dirent, as stored (0..=7; other values are rejected).
    #[cfg_attr(feature = "serde", serde(serialize_with = "serialize_file_type"))]
    pub file_type: FileType,
}

#[cfg(feature = "serde")]
fn serialize_file_type<S: serde::Serializer>(t: &FileType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.name())
}

/// One parsed dirent with its position, as found in a directory block.
#[derive(Clone, Debug)]
pub struct RawDirent {
    /// The entry.
    pub entry: DirEntry,
    /// Byte offset of the 12-byte dirent in the image (`None` for holes, never returned).
    pub dirent_offset: Option<u64>,
    /// Offset of the name inside the block.
    pub nameoff: u16,
}

/// Parses one directory block. `valid` is how many bytes of `block` belong to the
/// directory (`min(blksz, i_size - block_start)`). Follows the Linux rules: the first
/// `nameoff` gives the dirent count and must be a non-zero multiple of 12 below `valid`;
/// names lie inside the valid bytes, are 1..=255 bytes long, and contain no `/` or NUL.
pub fn parse_dir_block(block: &[u8], valid: usize, block_index: u64) -> Result<Vec<RawDirent>> {
    let bad = |e: DirBlockError| {
        let c = match e {
            DirBlockError::BadName { index } => {
                let name = DirBlock::parse(block, valid)
                    .ok()
                    .and_then(|d| d.dirents().get(index).map(|r| usize::from(r.nameoff.get())))
                    .and_then(|o| block.get(o..valid.min(block.len())))
                    .unwrap_or(&[]);
                Corruption::BadName {
                    name: name.escape_ascii().to_string(),
                    reason: "contains '/' or NUL",
                }
            }
            other => Corruption::DirBlock {
                block: block_index,
                reason: other.to_string(),
            },
        };
        Error::corrupt(None, None, c)
    };
    let d = DirBlock::parse(block, valid).map_err(bad)?;
    d.entries()
        .map(|e| {
            let e = e.map_err(bad)?;
            Ok(RawDirent {
                entry: DirEntry {
                    name: e.name.to_vec(),
                    nid: e.nid,
                    file_type: e.file_type,
                },
                dirent_offset: None,
                nameoff: e.nameoff,
            })
        })
        .collect()
}

impl Image<'_> {
    fn check_dir(&self, dir: &Inode) -> Result<()> {
        if !dir.is_dir() {
            return Err(Error::NotADirectory { nid: dir.nid });
        }
        // No valid image has a directory larger than itself; this bounds the work and
        // memory spent on one directory even when chunks map many blocks to one.
        if dir.size > self.len() {
            return Err(Error::corrupt(
                Some(dir.nid),
                Some(dir.offset),
                Corruption::TooLarge {
                    what: "directory",
                    size: dir.size,
                    limit: self.len(),
                },
            ));
        }
        Ok(())
    }

    /// Number of directory blocks of `dir`.
    pub fn dir_block_count(&self, dir: &Inode) -> u64 {
        dir.size.div_ceil(self.block_size())
    }

    /// Reads and parses directory block `index` of `dir`.
    pub fn read_dir_block(&self, dir: &Inode, index: u64) -> Result<Vec<RawDirent>> {
        self.check_dir(dir)?;
        let blksz = self.block_size();
        let start = index
            .checked_mul(blksz)
            .filter(|s| *s < dir.size)
            .ok_or_else(|| {
                Error::corrupt(
                    Some(dir.nid),
                    None,
                    Corruption::DirBlock {
                        block: index,
                        reason: "past the end of the directory".into(),
                    },
                )
            })?;
        let valid = (dir.size - start).min(blksz) as usize;
        let mut buf = vec![0u8; valid];
        let n = self.read_at(dir, start, &mut buf)?;
        buf.truncate(n);
        let mut entries =
            parse_dir_block(&buf, n, index).map_err(|e| Self::locate(e, dir.nid, None))?;
        // Attach image offsets of the dirents when the block is stored contiguously.
        if let Ok(ext) = self.map(dir, start)
            && let Some(p) = ext.physical
        {
            let base = p + (start - ext.logical);
            for (i, d) in entries.iter_mut().enumerate() {
                d.dirent_offset = Some(base + (i * DIRENT_SIZE) as u64);
            }
        }
        Ok(entries)
    }

    fn locate(e: Error, nid: u64, offset: Option<u64>) -> Error {
        match e {
            Error::Corrupt { mut at, what } => {
                at.nid = at.nid.or(Some(nid));
                at.offset = at.offset.or(offset);
                Error::Corrupt { at, what }
            }
            e => e,
        }
    }

    /// All entries of directory `dir`, `.` and `..` included, in on-disk (sorted) order.
    pub fn read_dir(&self, dir: &Inode) -> Result<Vec<DirEntry>> {
        self.check_dir(dir)?;
        let mut out = Vec::new();
        for b in 0..self.dir_block_count(dir) {
            out.extend(self.read_dir_block(dir, b)?.into_iter().map(|d| d.entry));
        }
        Ok(out)
    }

    /// Looks up `name` in directory `dir` by binary search over blocks, then inside the
    /// block, like Linux does. Returns `None` when absent.
    pub fn lookup_name(&self, dir: &Inode, name: &[u8]) -> Result<Option<DirEntry>> {
        self.check_dir(dir)?;
        let nblocks = self.dir_block_count(dir);
        let (mut lo, mut hi) = (0u64, nblocks);
        // Each step halves [lo, hi): at most 64 iterations.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let entries = self.read_dir_block(dir, mid)?;
            let first = &entries[0].entry.name;
            match name.cmp(first.as_slice()) {
                Ordering::Less => hi = mid,
                Ordering::Equal => return Ok(Some(entries[0].entry.clone())),
                Ordering::Greater => {
                    let last = &entries[entries.len() - 1].entry.name;
                    if name > last.as_slice() {
                        lo = mid + 1;
                    } else {
                        return Ok(entries
                            .binary_search_by(|d| d.entry.name.as_slice().cmp(name))
                            .ok()
                            .map(|i| entries[i].entry.clone()));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Resolves an absolute or root-relative path (`/a/b`, `a/b`; `/` is the root) to its
    /// inode. `.` and `..` are looked up as the stored dirents; symlinks are not followed.
    pub fn lookup(&self, path: &[u8]) -> Result<Inode> {
        let mut cur = self.inode(self.root_nid())?;
        for (n, comp) in path
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .enumerate()
        {
            if n >= MAX_PATH_COMPONENTS {
                return Err(Error::NotFound {
                    path: path.to_vec(),
                });
            }
            if !cur.is_dir() {
                return Err(Error::NotFound {
                    path: path.to_vec(),
                });
            }
            match self.lookup_name(&cur, comp)? {
                Some(e) => cur = self.inode(e.nid)?,
                None => {
                    return Err(Error::NotFound {
                        path: path.to_vec(),
                    });
                }
            }
        }
        Ok(cur)
    }
}
