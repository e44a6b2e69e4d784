//! Walking the whole tree with cycle detection and a work budget.

use erofs_format::FileType;

use crate::dir::DirEntry;
use crate::error::{Corruption, Error, Result};
use crate::image::Image;
use crate::inode::Inode;

/// One inode reached by [`Image::walk`].
#[derive(Clone, Debug)]
pub struct WalkEntry {
    /// Path from the root, `/` for the root itself; raw bytes.
    pub path: Vec<u8>,
    /// The nid.
    pub nid: u64,
    /// The inode.
    pub inode: Inode,
    /// Nid of the directory holding the entry (the root's parent is the root).
    pub parent: u64,
    /// The `file_type` stored in the dirent (the root has none: its own type).
    pub dirent_type: FileType,
}

struct Frame {
    path: Vec<u8>,
    nid: u64,
    entries: std::vec::IntoIter<DirEntry>,
}

/// Depth-first iterator over every inode reachable from a directory. Yields each
/// directory before its children, children in on-disk order; `.` and `..` are skipped.
///
/// Guarantees termination: a directory reached twice (a cycle, or a hard-linked directory)
/// yields a [`Corruption::DirectoryCycle`] error instead of being entered again, and the
/// directories entered may together hold at most as many bytes as the image. Errors are
/// yielded and the walk goes on with the next entry.
pub struct Walk<'a> {
    image: &'a Image<'a>,
    stack: Vec<Frame>,
    visited: crate::nidmap::NidSet,
    pending: Option<WalkEntry>,
    descend: Option<(Vec<u8>, Inode)>,
    dir_bytes: u64,
    error_path: Option<Vec<u8>>,
}

impl<'a> Walk<'a> {
    /// The path the last error yielded concerns: the entry whose inode could not be read,
    /// or the directory that could not be entered.
    pub fn error_path(&self) -> Option<&[u8]> {
        self.error_path.as_deref()
    }

    fn new(image: &'a Image<'a>, nid: u64, path: Vec<u8>) -> Result<Self> {
        let inode = image.inode(nid)?;
        let mut w = Walk {
            image,
            stack: Vec::new(),
            visited: crate::nidmap::NidSet::default(),
            pending: None,
            descend: None,
            dir_bytes: 0,
            error_path: None,
        };
        let dirent_type = inode.file_type();
        if inode.is_dir() {
            w.visited.insert(nid);
            w.descend = Some((path.clone(), inode.clone()));
        }
        w.pending = Some(WalkEntry {
            path,
            nid,
            inode,
            parent: nid,
            dirent_type,
        });
        Ok(w)
    }

    fn enter(&mut self, path: Vec<u8>, dir: Inode) -> Result<()> {
        self.dir_bytes = self.dir_bytes.saturating_add(dir.size);
        if self.dir_bytes > self.image.len() {
            return Err(Error::corrupt(
                Some(dir.nid),
                None,
                Corruption::DirectoryBudget {
                    total: self.dir_bytes,
                    image_size: self.image.len(),
                },
            ));
        }
        let entries = self.image.read_dir(&dir)?;
        self.stack.push(Frame {
            path,
            nid: dir.nid,
            entries: entries.into_iter(),
        });
        Ok(())
    }
}

/// `parent/name`, the way [`Image::walk`](crate::Image::walk) builds the paths it reports,
/// for callers that walk directories their own way and must report the same paths.
pub fn join_path(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

impl Iterator for Walk<'_> {
    type Item = Result<WalkEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.pending.take() {
            return Some(Ok(e));
        }
        if let Some((path, dir)) = self.descend.take()
            && let Err(e) = self.enter(path.clone(), dir)
        {
            self.error_path = Some(path);
            return Some(Err(e));
        }
        loop {
            let frame = self.stack.last_mut()?;
            let Some(d) = frame.entries.next() else {
                self.stack.pop();
                continue;
            };
            if d.name == b"." || d.name == b".." {
                continue;
            }
            let path = join_path(&frame.path, &d.name);
            let parent = frame.nid;
            let inode = match self.image.inode(d.nid) {
                Ok(i) => i,
                Err(e) => {
                    self.error_path = Some(path);
                    return Some(Err(e));
                }
            };
            if inode.is_dir() {
                if !self.visited.insert(d.nid) {
                    self.error_path = Some(path.clone());
                    return Some(Err(Error::corrupt(
                        Some(d.nid),
                        None,
                        Corruption::DirectoryCycle {
                            path: path.escape_ascii().to_string(),
                        },
                    )));
                }
                self.descend = Some((path.clone(), inode.clone()));
            }
            return Some(Ok(WalkEntry {
                path,
                nid: d.nid,
                inode,
                parent,
                dirent_type: d.file_type,
            }));
        }
    }
}

impl Image<'_> {
    /// Walks every inode reachable from the root; see [`Walk`].
    pub fn walk(&self) -> Result<Walk<'_>> {
        Walk::new(self, self.root_nid(), b"/".to_vec())
    }

    /// Walks the subtree at `nid`, whose path is `path`.
    pub fn walk_from(&self, nid: u64, path: Vec<u8>) -> Result<Walk<'_>> {
        Walk::new(self, nid, path)
    }
}
