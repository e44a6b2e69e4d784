//! Fragments (`-E fragments`, `-E all-fragments`): the packed inode's content.
//!
//! Workers cut each file's fragment (its tail, or the whole file) while they compress it
//! (`compress::compress_segment_ext`) and hand its bytes over with the segment. The ordered
//! step, in inode order, gives each fragment its offset in the packed inode and appends its
//! bytes to a spill file beside the image, so the offsets depend on the input only, never
//! on timing or thread count, and memory stays bounded whatever the packed inode's size.
//! With `fragdedupe`, a fragment whose bytes equal an earlier one's (same length and
//! sha256, computed by the worker) takes the earlier offset instead.
//!
//! Once every file is placed, the spill file becomes a regular inode of its own, appended
//! to the tree and compressed by the same stage like any large file (in parallel segments,
//! but without fragments of its own); its nid is the superblock's `packed_nid`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::tree::{DataSource, FileContent, Inode, Kind, StagedData, Tree};
use crate::{BuildError, FragDedupe, Fragments, Options};

/// A fragment as a worker cut it.
pub(super) struct Piece {
    /// The bytes, uncompressed.
    pub bytes: Vec<u8>,
    /// The fragment is the whole file.
    pub whole: bool,
    /// Its sha256, when it may be shared (`fragdedupe`).
    pub key: Option<[u8; 32]>,
}

impl Piece {
    /// The piece of `bytes`, keyed for sharing when `dedupe` allows it. `single`: the piece
    /// is all of the file's fragment (not one segment of a larger whole file).
    pub fn new(bytes: Vec<u8>, whole: bool, single: bool, dedupe: FragDedupe) -> Self {
        let shared = single
            && match dedupe {
                FragDedupe::Full => true,
                FragDedupe::Inode => whole,
                FragDedupe::Off => false,
            };
        let key = shared.then(|| Sha256::digest(&bytes).into());
        Self { bytes, whole, key }
    }
}

/// What fragments a file of this tree gets.
pub(super) fn mode(options: &Options) -> Fragments {
    if options.compression.is_some() {
        options.zlayout.fragments
    } else {
        Fragments::Off
    }
}

/// The packed inode's content, gathered in the ordered step.
pub(super) struct Packer {
    out: BufWriter<File>,
    len: u64,
    /// Offsets of the fragments that may be shared, by (length, sha256).
    seen: HashMap<(u64, [u8; 32]), u64>,
}

impl Packer {
    /// An empty packed inode spilling into a temporary file in `options.staging_dir`.
    pub fn new(options: &Options) -> Result<Self, BuildError> {
        let file = match &options.staging_dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        }
        .map_err(|e| {
            BuildError::Output(std::io::Error::new(
                e.kind(),
                format!("the packed inode's spill file: {e}"),
            ))
        })?;
        Ok(Self {
            out: BufWriter::with_capacity(1 << 20, file),
            len: 0,
            seen: HashMap::new(),
        })
    }

    /// Places `piece` and returns its offset in the packed inode.
    pub fn place(&mut self, piece: &Piece) -> Result<u64, BuildError> {
        let len = piece.bytes.len() as u64;
        if let Some(key) = piece.key
            && let Some(&at) = self.seen.get(&(len, key))
        {
            return Ok(at);
        }
        let at = self.len;
        self.out.write_all(&piece.bytes).map_err(spill_error)?;
        self.len += len;
        if let Some(key) = piece.key {
            self.seen.insert((len, key), at);
        }
        Ok(at)
    }

    /// The spill file and the packed inode's size, `None` when no fragment was placed.
    pub fn finish(self) -> Result<Option<(Arc<File>, u64)>, BuildError> {
        if self.len == 0 {
            return Ok(None);
        }
        let file = self
            .out
            .into_inner()
            .map_err(|e| spill_error(e.into_error()))?;
        Ok(Some((Arc::new(file), self.len)))
    }
}

fn spill_error(e: std::io::Error) -> BuildError {
    BuildError::Output(std::io::Error::new(
        e.kind(),
        format!("the packed inode's spill file: {e}"),
    ))
}

/// `tree` with the packed inode appended (in no directory): a regular file of `size`
/// bytes read from `file`, owned by root, mode 0644, with the image's time `epoch`, as
/// mkfs.erofs writes it. Returns the new tree and the inode's index.
pub(super) fn with_packed_inode(
    tree: &Tree,
    file: Arc<File>,
    size: u64,
    epoch: u64,
) -> (Tree, usize) {
    let mut t = tree.clone();
    t.inodes.push(Inode {
        kind: Kind::Regular(FileContent {
            size,
            source: DataSource::At(StagedData {
                file,
                offset: 0,
                name: Arc::from("the packed inode"),
                digest: None,
            }),
            data_ranges: None,
            old_fingerprint: None,
            source_id: None,
        }),
        permissions: 0o644,
        uid: 0,
        gid: 0,
        mtime: i64::try_from(epoch).unwrap_or(0),
        mtime_nsec: 0,
        nlink: 1,
        xattrs: Vec::new(),
    });
    let i = t.inodes.len() - 1;
    (t, i)
}
