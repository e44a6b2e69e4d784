//! The integrity output stage: a dm-verity hash tree (appended to the image or written to a
//! file of its own) and the fs-verity digest of the finished image.
//!
//! The image's bytes are hashed as they are written, by a tap that hands whole 1 MiB
//! batches to the thread pool: the writer only copies, and no byte of the image is read back.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use erofs_verity::{DATA_BLOCK_SIZE, HASH_BLOCK_SIZE, HashTree, LeafSet, VeritySuperblock};
use sha2::{Digest as _, Sha256};

use crate::BuildError;

/// `--verity`: a dm-verity hash tree over the image.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerityOptions {
    /// The salt; `None` derives it from the image UUID when the build is reproducible (a
    /// fixed timestamp), and draws 32 random bytes otherwise.
    pub salt: Option<Vec<u8>>,
    /// Write the tree (with its superblock) to this file instead of appending it.
    pub tree_file: Option<PathBuf>,
}

impl VerityOptions {
    /// A tree appended to the image, with the default salt.
    pub fn appended() -> Self {
        Self::default()
    }
}

/// What `--verity` produced: the values `veritysetup open` and a `dm-verity` table need.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerityReport {
    /// The root hash.
    pub root_hash: [u8; 32],
    /// The salt.
    pub salt: Vec<u8>,
    /// Byte offset of the verity superblock (veritysetup's `--hash-offset`) in the image, or
    /// 0 in the tree file. The tree itself starts one hash block later.
    pub hash_offset: u64,
    /// Data blocks covered (4096 bytes each): the image padded to whole blocks.
    pub data_blocks: u64,
    /// The tree file, when the tree is not appended.
    pub tree_file: Option<PathBuf>,
    /// Bytes of superblock and tree written.
    pub tree_bytes: u64,
}

impl VerityReport {
    /// Data block size.
    pub const DATA_BLOCK_SIZE: u32 = DATA_BLOCK_SIZE;
    /// Hash block size.
    pub const HASH_BLOCK_SIZE: u32 = HASH_BLOCK_SIZE;
    /// Hash algorithm, as veritysetup names it.
    pub const HASH_ALGORITHM: &'static str = "sha256";
}

/// The salt a build uses: the one given, one derived from the UUID for reproducible builds,
/// or a random one.
pub(crate) fn choose_salt(opts: &VerityOptions, uuid: &[u8; 16], reproducible: bool) -> Vec<u8> {
    if let Some(s) = &opts.salt {
        return s.clone();
    }
    if reproducible {
        let mut h = Sha256::new();
        h.update(b"erofs-rs dm-verity salt\0");
        h.update(uuid);
        return h.finalize().to_vec();
    }
    [crate::layout::random_uuid(), crate::layout::random_uuid()].concat()
}

const BATCH: usize = 1 << 20;

/// Hashes what passes through it, in batches on the thread pool.
///
/// The writer may itself run on a pool thread (with `-j1`, the only one), so it never just
/// waits for hashing jobs: when too many batches are queued, or when it needs the leaves, it
/// hashes queued batches itself, and waits only for batches other threads are hashing.
pub(crate) struct Tap<W: Write> {
    inner: W,
    offset: u64,
    batch: Vec<u8>,
    batch_at: u64,
    shared: Arc<Shared>,
}

struct Shared {
    sets: Vec<LeafSet>,
    state: Mutex<Queue>,
    done: Condvar,
}

#[derive(Default)]
struct Queue {
    batches: std::collections::VecDeque<(u64, Vec<u8>)>,
    /// Batches taken off the queue and being hashed.
    busy: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hashes one queued batch, if there is one; false when the queue is empty.
    fn hash_one(&self) -> bool {
        let Some((at, batch)) = ({
            let mut q = self.lock();
            let b = q.batches.pop_front();
            if b.is_some() {
                q.busy += 1;
            }
            b
        }) else {
            return false;
        };
        for s in &self.sets {
            s.write_at(at, &batch);
        }
        self.lock().busy -= 1;
        self.done.notify_all();
        true
    }

    /// Hashes or waits until at most `limit` batches are queued or being hashed.
    fn drain_to(&self, limit: usize) {
        loop {
            {
                let q = self.lock();
                if q.batches.len() + q.busy <= limit {
                    return;
                }
                if q.batches.is_empty() {
                    // Only batches being hashed elsewhere remain: they finish on their own.
                    drop(self.done.wait(q).unwrap_or_else(|e| e.into_inner()));
                    continue;
                }
            }
            self.hash_one();
        }
    }
}

impl<W: Write> Tap<W> {
    /// Hashes with each salt given (dm-verity's, and an empty one for fs-verity).
    pub(crate) fn new(inner: W, salts: &[&[u8]]) -> Self {
        Self {
            inner,
            offset: 0,
            batch: Vec::with_capacity(BATCH),
            batch_at: 0,
            shared: Arc::new(Shared {
                sets: salts.iter().map(|s| LeafSet::new(s)).collect(),
                state: Mutex::new(Queue::default()),
                done: Condvar::new(),
            }),
        }
    }

    fn dispatch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        let at = self.batch_at;
        self.batch_at += batch.len() as u64;
        // A window of batches bounds memory when hashing falls behind.
        self.shared.drain_to(2 * rayon::current_num_threads() + 1);
        self.shared.lock().batches.push_back((at, batch));
        let shared = Arc::clone(&self.shared);
        rayon::spawn(move || {
            shared.hash_one();
        });
    }

    /// Bytes written so far.
    pub(crate) fn position(&self) -> u64 {
        self.offset
    }

    /// Waits for the hashing of everything written so far and returns the leaf hashes of
    /// salt number `set` over those bytes. Writing may go on afterwards.
    pub(crate) fn leaves(&mut self, set: usize) -> io::Result<Vec<erofs_verity::Digest>> {
        self.inner.flush()?;
        self.dispatch();
        self.shared.drain_to(0);
        Ok(self.shared.sets[set].leaves(self.offset))
    }
}

impl<W: Write> Write for Tap<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let mut rest = &buf[..n];
        self.offset += n as u64;
        while !rest.is_empty() {
            let take = rest.len().min(BATCH - self.batch.len());
            self.batch.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.batch.len() == BATCH {
                self.dispatch();
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Builds the tree from `dm_leaves` over an image of `image_len` bytes and returns its
/// report and the bytes to append to the image: zero padding to a whole data block, then
/// (unless the tree goes to its own file, written here) the verity superblock and the tree.
pub(crate) fn tree_tail(
    image_len: u64,
    dm_leaves: &[erofs_verity::Digest],
    salt: &[u8],
    uuid: [u8; 16],
    opts: &VerityOptions,
) -> Result<(VerityReport, Vec<u8>), BuildError> {
    let tree = HashTree::from_leaves(salt, dm_leaves);
    let padded = image_len.div_ceil(DATA_BLOCK_SIZE as u64) * DATA_BLOCK_SIZE as u64;
    let sb = VeritySuperblock {
        uuid,
        data_blocks: tree.data_blocks(),
        salt: salt.to_vec(),
    };
    let mut tail = Vec::with_capacity(HASH_BLOCK_SIZE as usize + tree.tree_len() as usize);
    tail.extend_from_slice(&sb.encode());
    tail.resize(HASH_BLOCK_SIZE as usize, 0);
    tail.extend_from_slice(&tree.tree_bytes());
    let mut report = VerityReport {
        root_hash: tree.root_hash(),
        salt: salt.to_vec(),
        hash_offset: padded,
        data_blocks: tree.data_blocks(),
        tree_file: opts.tree_file.clone(),
        tree_bytes: tail.len() as u64,
    };
    let mut appended = vec![0u8; (padded - image_len) as usize];
    match &opts.tree_file {
        Some(path) => {
            write_file_atomically(path, &tail)?;
            report.hash_offset = 0;
        }
        None => appended.extend_from_slice(&tail),
    }
    Ok((report, appended))
}

/// A positioned-write image whose bytes are hashed by the thread that writes them.
pub(crate) struct TappedFile<'a> {
    pub(crate) file: &'a std::fs::File,
    pub(crate) sets: Vec<LeafSet>,
}

impl crate::write::WriteAt for TappedFile<'_> {
    fn put_at(&self, bytes: &[u8], at: u64) -> io::Result<()> {
        crate::write::WriteAt::put_at(self.file, bytes, at)?;
        for s in &self.sets {
            s.write_at(at, bytes);
        }
        Ok(())
    }
}

fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".mkfs-erofs-rs-verity.")
        .tempfile_in(&parent)
        .map_err(|e| BuildError::io(&parent, e))?;
    tmp.write_all(bytes).map_err(|e| BuildError::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| BuildError::io(path, e.error))?;
    Ok(())
}
