//! Fragments (`-E fragments`, `-E all-fragments`): the packed inode's content.
//!
//! Workers cut each file's fragment (its tail, or the whole file) while they compress it
//! (`compress::compress_segment_ext`) and hand its bytes over with the segment. The ordered
//! step, in inode order, gives each fragment its offset in the packed inode, so the offsets
//! depend on the input only, never on timing or thread count; the bytes go to a spill file
//! beside the image at that offset after the turn has passed on ([`Packer::take_writes`]),
//! and memory stays bounded whatever the packed inode's size.
//! With `fragdedupe`, a fragment whose bytes equal an earlier one's (same length and
//! sha256, computed by the worker), or the end of an earlier one (as mkfs.erofs matches
//! a file's tail against the ends of the fragments packed before it), or its start (which
//! mkfs.erofs does not look for: a file that is the start of another), takes the earlier
//! offset instead.
//!
//! Once every file is placed, the spill file becomes a regular inode of its own, appended
//! to the tree and compressed by the same stage like any large file (in parallel segments,
//! but without fragments of its own); its nid is the superblock's `packed_nid`.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::tree::{DataSource, FileContent, Inode, Kind, StagedData, Tree};
use crate::{BuildError, FragDedupe, Options};

/// A fragment as a worker cut it.
pub(super) struct Piece {
    /// The bytes, uncompressed (shared with the spill write and the kept ends, not copied
    /// in the ordered step).
    pub bytes: Arc<Vec<u8>>,
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
        Self {
            bytes: Arc::new(bytes),
            whole,
            key,
        }
    }
}

/// The packed inode's content, gathered in the ordered step.
pub(super) struct Packer {
    spill: Arc<File>,
    len: u64,
    /// Fragments placed but not yet written: (bytes, offset).
    writes: Vec<(Arc<Vec<u8>>, u64)>,
    /// Offsets of the fragments that may be shared, by (length, sha256).
    seen: HashMap<(u64, [u8; 32]), u64>,
    /// Recent shareable fragments' starts and ends, for prefix and suffix matches.
    starts: Ends,
    ends: Ends,
}

/// A fragment's first or last bytes that key its prefix and suffix matches; a shorter
/// fragment is matched whole only (mkfs.erofs's rule for suffixes).
const END_KEY: usize = 64;
/// Bytes kept of each fragment's start and end: a longer fragment serves prefixes and
/// suffixes up to this length.
const END_KEPT: usize = 256 << 10;
/// Bytes kept in all, per side (a deterministic FIFO: what falls out depends on the input
/// alone).
const ENDS_BYTES: usize = 64 << 20;
/// Candidates compared per match at most (the newest), so that many fragments with one
/// ending (zeros) cost a bounded time each.
const ENDS_PER_KEY: usize = 32;

/// Where a fragment starts (or ends) in the packed inode, and its bytes at that end:
/// `range` of `bytes`, which a fragment of at most [`END_KEPT`] bytes shares with its
/// [`Piece`] (nothing is copied in the ordered step).
struct Kept {
    anchor: u64,
    bytes: Arc<Vec<u8>>,
    range: Range<usize>,
}

impl Kept {
    fn bytes(&self) -> &[u8] {
        &self.bytes[self.range.clone()]
    }
}

/// One end (first or last bytes) of recent fragments, by its [`END_KEY`] outermost bytes.
struct Ends {
    /// The fragments' last bytes (else their first).
    last: bool,
    /// Key -> (where the fragment starts, or ends, in the packed inode; its bytes at that
    /// end), oldest first.
    by_key: HashMap<[u8; END_KEY], VecDeque<Kept>>,
    /// The same, in the order they were added, for the FIFO.
    order: VecDeque<([u8; END_KEY], u64, usize)>,
    bytes: usize,
}

impl Ends {
    fn new(last: bool) -> Self {
        Self {
            last,
            by_key: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
        }
    }

    fn key(&self, bytes: &[u8]) -> Option<[u8; END_KEY]> {
        let at = bytes.len().checked_sub(END_KEY).filter(|&n| n > 0)?;
        let k = if self.last {
            &bytes[at..]
        } else {
            &bytes[..END_KEY]
        };
        k.try_into().ok()
    }

    /// Where an earlier fragment starts (or ends) with `bytes`: the offset they are at.
    fn find(&self, bytes: &[u8]) -> Option<u64> {
        let list = self.by_key.get(&self.key(bytes)?)?;
        let kept = list.iter().rev().take(ENDS_PER_KEY).find(|kept| {
            if self.last {
                kept.bytes().ends_with(bytes)
            } else {
                kept.bytes().starts_with(bytes)
            }
        })?;
        Some(if self.last {
            kept.anchor - bytes.len() as u64
        } else {
            kept.anchor
        })
    }

    /// Keeps an end of a fragment just packed at `at..at + bytes.len()`.
    fn add(&mut self, bytes: &Arc<Vec<u8>>, at: u64) {
        let Some(key) = self.key(bytes) else {
            return;
        };
        let len = bytes.len();
        let n = len.min(END_KEPT);
        let range = if self.last { len - n..len } else { 0..n };
        let anchor = if self.last { at + len as u64 } else { at };
        let kept = if n == len {
            Kept {
                anchor,
                bytes: Arc::clone(bytes),
                range,
            }
        } else {
            // Only the end of a long fragment: keeping it all would hold its whole size.
            Kept {
                anchor,
                bytes: Arc::new(bytes[range].to_vec()),
                range: 0..n,
            }
        };
        self.bytes += n;
        self.order.push_back((key, anchor, n));
        let list = self.by_key.entry(key).or_default();
        list.push_back(kept);
        if list.len() > ENDS_PER_KEY {
            // Never compared again; its bytes leave `self.bytes` when the FIFO reaches it.
            list.pop_front();
        }
        while self.bytes > ENDS_BYTES {
            let Some((key, anchor, n)) = self.order.pop_front() else {
                break;
            };
            self.bytes -= n;
            if let Some(list) = self.by_key.get_mut(&key) {
                list.retain(|k| k.anchor != anchor);
                if list.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
    }
}

impl Packer {
    /// A packed inode spilling into a temporary file in `options.staging_dir`, starting with
    /// the long xattr name prefix records `prefixes` (the superblock's `xattr_prefix_start`
    /// is 0 then: `layout::prefixes_in_packed`).
    pub fn new(options: &Options, prefixes: &[u8]) -> Result<Self, BuildError> {
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
        file.write_all_at(prefixes, 0).map_err(spill_error)?;
        Ok(Self {
            spill: Arc::new(file),
            len: prefixes.len() as u64,
            writes: Vec::new(),
            seen: HashMap::new(),
            starts: Ends::new(false),
            ends: Ends::new(true),
        })
    }

    /// Places `piece` and returns its offset in the packed inode; its bytes wait in
    /// [`Packer::take_writes`] when they are new.
    pub fn place(&mut self, piece: &Piece) -> Result<u64, BuildError> {
        let len = piece.bytes.len() as u64;
        if let Some(key) = piece.key
            && let Some(&at) = self.seen.get(&(len, key))
        {
            return Ok(at);
        }
        if piece.key.is_some()
            && let Some(at) =
                (self.ends.find(&piece.bytes)).or_else(|| self.starts.find(&piece.bytes))
        {
            return Ok(at);
        }
        let at = self.len;
        self.writes.push((Arc::clone(&piece.bytes), at));
        self.len += len;
        if let Some(key) = piece.key {
            self.seen.insert((len, key), at);
            self.starts.add(&piece.bytes, at);
            self.ends.add(&piece.bytes, at);
        }
        Ok(at)
    }

    /// The fragments placed since the last call, for [`SpillWrites::write`] outside the
    /// ordered step.
    pub fn take_writes(&mut self) -> SpillWrites {
        SpillWrites {
            file: Arc::clone(&self.spill),
            writes: std::mem::take(&mut self.writes),
        }
    }

    /// The spill file and the packed inode's size, `None` when no fragment was placed.
    /// Writes still pending are written first.
    pub fn finish(mut self) -> Result<Option<(Arc<File>, u64)>, BuildError> {
        self.take_writes().write()?;
        if self.len == 0 {
            return Ok(None);
        }
        Ok(Some((self.spill, self.len)))
    }
}

/// Fragments placed in the packed inode, to write into its spill file at their offsets.
pub(super) struct SpillWrites {
    file: Arc<File>,
    writes: Vec<(Arc<Vec<u8>>, u64)>,
}

impl SpillWrites {
    pub fn write(self) -> Result<(), BuildError> {
        for (bytes, at) in &self.writes {
            self.file.write_all_at(bytes, *at).map_err(spill_error)?;
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that repeat nowhere within 10 000 (so a suffix matches at one place only).
    fn distinct(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i * 7919 % 251) as u8 ^ (i >> 8) as u8)
            .collect()
    }

    fn whole(bytes: &[u8], dedupe: FragDedupe) -> Piece {
        Piece::new(bytes.to_vec(), true, true, dedupe)
    }

    #[test]
    fn a_fragment_that_ends_an_earlier_one_is_stored_inside_it() {
        let mut p = Packer::new(&Options::default(), &[]).unwrap();
        let long = distinct(10_000);
        assert_eq!(p.place(&whole(&long, FragDedupe::Full)).unwrap(), 0);
        // Its last 6000 bytes: where they already are.
        assert_eq!(
            p.place(&whole(&long[4000..], FragDedupe::Full)).unwrap(),
            4000
        );
        // So is a tail piece, and with fragdedupe=inode a whole file.
        let tail = Piece::new(long[9000..].to_vec(), false, true, FragDedupe::Full);
        assert_eq!(p.place(&tail).unwrap(), 9000);
        assert_eq!(p.place(&whole(&long[1..], FragDedupe::Inode)).unwrap(), 1);
        // 64 bytes or fewer are matched whole only (as mkfs.erofs does): stored again.
        assert_eq!(
            p.place(&whole(&long[10_000 - 64..], FragDedupe::Full))
                .unwrap(),
            10_000
        );
        // Its first 5000 bytes too.
        assert_eq!(p.place(&whole(&long[..5000], FragDedupe::Full)).unwrap(), 0);
        // The middle is neither; without fragdedupe nothing is shared.
        assert_eq!(
            p.place(&whole(&long[10..9990], FragDedupe::Full)).unwrap(),
            10_064
        );
        assert_eq!(
            p.place(&whole(&long[5000..], FragDedupe::Off)).unwrap(),
            20_044
        );
        let (_, len) = p.finish().unwrap().unwrap();
        assert_eq!(len, 25_044);
    }

    #[test]
    fn suffix_matches_forget_the_oldest_fragments_past_the_window() {
        let mut ends = Ends::new(true);
        let a = Arc::new(distinct(END_KEPT + 100));
        ends.add(&a, 1 << 40);
        let end = (1u64 << 40) + a.len() as u64;
        // Only the last END_KEPT bytes are kept: a longer suffix is not found.
        assert_eq!(ends.find(&a[100..]), Some(end - END_KEPT as u64));
        assert_eq!(ends.find(&a[99..]), None);
        // Filling the window pushes `a` out.
        let filler = distinct(END_KEPT);
        for k in 0..ENDS_BYTES / END_KEPT {
            let mut f = filler.clone();
            f.extend_from_slice(&(k as u64).to_le_bytes());
            ends.add(&Arc::new(f), 2 << 40);
        }
        assert!(ends.bytes <= ENDS_BYTES);
        assert_eq!(ends.find(&a[1000..]), None);
    }
}
