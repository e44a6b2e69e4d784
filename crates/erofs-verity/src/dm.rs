//! dm-verity format 1: the hash tree, its superblock, and verification.

use rayon::prelude::*;

use erofs_task::{Cancelled, Progress};

use crate::blocks::{hash_block, hash_blocks};
use crate::{DIGEST_SIZE, Digest};

/// Data block size: the kernel's dm-verity needs at most the page size, and EROFS images of
/// every block size are padded to it.
pub const DATA_BLOCK_SIZE: u32 = 4096;
/// Hash block size.
pub const HASH_BLOCK_SIZE: u32 = 4096;
/// Size of the superblock `veritysetup format` writes before the tree (padded to a hash
/// block on disk).
pub const SUPERBLOCK_SIZE: usize = 512;
/// Digests per hash block.
const PER_BLOCK: usize = HASH_BLOCK_SIZE as usize / DIGEST_SIZE;
const SIGNATURE: &[u8; 8] = b"verity\0\0";

/// A complete dm-verity hash tree over `data_blocks` blocks.
#[derive(Debug, Clone)]
pub struct HashTree {
    salt: Vec<u8>,
    data_blocks: u64,
    /// Level 0 holds the leaf hashes; the last level is one block. Each level is whole,
    /// zero-padded hash blocks.
    levels: Vec<Vec<u8>>,
    root: Digest,
}

impl HashTree {
    /// Builds the tree from the leaf hashes (`sha256(salt || data block)`), as
    /// `veritysetup format` lays it out.
    pub fn from_leaves(salt: &[u8], leaves: &[Digest]) -> Self {
        let data_blocks = leaves.len() as u64;
        let mut levels = Vec::new();
        let mut hashes: Vec<Digest> = leaves.to_vec();
        // veritysetup adds levels until the top one fits in one hash block; a single data
        // block needs none, and its hash is the root.
        while hashes.len() > 1 {
            let level = pack(&hashes);
            hashes = level
                .par_chunks(HASH_BLOCK_SIZE as usize)
                .map(|b| hash_block(salt, b))
                .collect();
            levels.push(level);
        }
        let root = hashes.first().copied().unwrap_or([0; DIGEST_SIZE]);
        Self {
            salt: salt.to_vec(),
            data_blocks,
            levels,
            root,
        }
    }

    /// The root hash.
    pub fn root_hash(&self) -> Digest {
        self.root
    }

    /// The salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// How many data blocks the tree covers.
    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    /// The tree as it lies on disk: the top level first, the leaf hashes last.
    pub fn tree_bytes(&self) -> Vec<u8> {
        self.levels.iter().rev().flatten().copied().collect()
    }

    /// Size of [`HashTree::tree_bytes`].
    pub fn tree_len(&self) -> u64 {
        self.levels.iter().map(|l| l.len() as u64).sum()
    }
}

/// Packs digests into whole hash blocks, zero-padded.
fn pack(hashes: &[Digest]) -> Vec<u8> {
    let blocks = hashes.len().div_ceil(PER_BLOCK);
    let mut out = vec![0u8; blocks * HASH_BLOCK_SIZE as usize];
    for (i, h) in hashes.iter().enumerate() {
        out[i * DIGEST_SIZE..(i + 1) * DIGEST_SIZE].copy_from_slice(h);
    }
    out
}

/// How many hash blocks a tree over `data_blocks` blocks has, level by level from the leaves.
fn level_blocks(data_blocks: u64) -> Vec<u64> {
    let mut v = Vec::new();
    let mut n = data_blocks;
    while n > 1 {
        n = n.div_ceil(PER_BLOCK as u64);
        v.push(n);
    }
    v
}

/// The superblock `veritysetup format` writes at the hash offset (`struct verity_sb`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VeritySuperblock {
    /// UUID of the hash device.
    pub uuid: [u8; 16],
    /// Number of data blocks.
    pub data_blocks: u64,
    /// The salt.
    pub salt: Vec<u8>,
}

impl VeritySuperblock {
    /// Encodes the 512-byte superblock (version 1, hash type 1, sha256, 4096-byte blocks).
    pub fn encode(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        b[0..8].copy_from_slice(SIGNATURE);
        b[8..12].copy_from_slice(&1u32.to_le_bytes());
        b[12..16].copy_from_slice(&1u32.to_le_bytes());
        b[16..32].copy_from_slice(&self.uuid);
        b[32..38].copy_from_slice(b"sha256");
        b[64..68].copy_from_slice(&DATA_BLOCK_SIZE.to_le_bytes());
        b[68..72].copy_from_slice(&HASH_BLOCK_SIZE.to_le_bytes());
        b[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        let n = self.salt.len().min(256);
        b[80..82].copy_from_slice(&(n as u16).to_le_bytes());
        b[88..88 + n].copy_from_slice(&self.salt[..n]);
        b
    }

    /// Decodes a superblock; `None` unless it is a version 1, sha256, 4096/4096 one that this
    /// crate can verify.
    pub fn decode(b: &[u8]) -> Option<Self> {
        let b = b.get(..SUPERBLOCK_SIZE)?;
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        if &b[0..8] != SIGNATURE || u32_at(8) != 1 || u32_at(12) != 1 {
            return None;
        }
        let alg = &b[32..64];
        let alg = &alg[..alg.iter().position(|&c| c == 0).unwrap_or(32)];
        if alg != b"sha256" || u32_at(64) != DATA_BLOCK_SIZE || u32_at(68) != HASH_BLOCK_SIZE {
            return None;
        }
        let salt_len = u16::from_le_bytes([b[80], b[81]]) as usize;
        if salt_len > 256 {
            return None;
        }
        Some(Self {
            uuid: b[16..32].try_into().unwrap(),
            data_blocks: u64::from_le_bytes(b[72..80].try_into().unwrap()),
            salt: b[88..88 + salt_len].to_vec(),
        })
    }
}

/// What verification found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The tree is shorter than `data_blocks` needs.
    #[error(
        "the hash tree is truncated: {have} bytes, {need} needed for {data_blocks} data blocks"
    )]
    Truncated {
        /// Bytes present.
        have: u64,
        /// Bytes needed.
        need: u64,
        /// Data blocks covered.
        data_blocks: u64,
    },
    /// The top of the tree does not hash to the root hash given.
    #[error("the root hash does not match the hash tree")]
    RootMismatch,
    /// A hash block does not match its parent.
    #[error("hash block {block} of level {level} (0 = leaf hashes) does not match its parent")]
    TreeBlock {
        /// Level, 0 for the leaf hashes.
        level: usize,
        /// Block index within the level.
        block: u64,
    },
    /// A data block does not match its leaf hash.
    #[error("data block {0} (bytes {start}..{end}) does not match the hash tree", start = *.0 * DATA_BLOCK_SIZE as u64, end = (*.0 + 1) * DATA_BLOCK_SIZE as u64)]
    DataBlock(u64),
    /// The caller cancelled the verification (through its [`Progress`]).
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
}

/// Checks `tree` (the bytes after the superblock) against `root`, from the top level down,
/// in parallel, and returns the leaf hashes it vouches for: one per data block. A tree over
/// a single block has no levels; its root is that block's hash, returned as the only leaf.
pub fn check_tree(
    data_blocks: u64,
    tree: &[u8],
    salt: &[u8],
    root: &Digest,
) -> Result<Vec<Digest>, VerifyError> {
    let counts = level_blocks(data_blocks);
    let need: u64 = counts.iter().sum::<u64>() * HASH_BLOCK_SIZE as u64;
    if (tree.len() as u64) < need {
        return Err(VerifyError::Truncated {
            have: tree.len() as u64,
            need,
            data_blocks,
        });
    }
    let Some(&top_blocks) = counts.last() else {
        return Ok(vec![*root]);
    };
    debug_assert_eq!(top_blocks, 1);
    // Slice the levels out of the on-disk order (top first).
    let mut levels: Vec<&[u8]> = vec![&[]; counts.len()];
    let mut at = 0usize;
    for (i, &c) in counts.iter().enumerate().rev() {
        let len = c as usize * HASH_BLOCK_SIZE as usize;
        levels[i] = &tree[at..at + len];
        at += len;
    }
    if hash_block(salt, levels[counts.len() - 1]) != *root {
        return Err(VerifyError::RootMismatch);
    }
    for level in (0..levels.len() - 1).rev() {
        let parent = levels[level + 1];
        let bad = levels[level]
            .par_chunks(HASH_BLOCK_SIZE as usize)
            .enumerate()
            .find_first(|(i, b)| hash_block(salt, b) != digest_at(parent, *i as u64));
        if let Some((i, _)) = bad {
            return Err(VerifyError::TreeBlock {
                level,
                block: i as u64,
            });
        }
    }
    Ok((0..data_blocks).map(|i| digest_at(levels[0], i)).collect())
}

fn digest_at(level: &[u8], i: u64) -> Digest {
    let o = i as usize * DIGEST_SIZE;
    level[o..o + DIGEST_SIZE]
        .try_into()
        .expect("a whole digest")
}

/// The first data block of `bytes` (blocks `first_block` on; a short last block read
/// zero-padded) whose hash is not its leaf in `leaves`.
pub fn first_bad_block(
    salt: &[u8],
    leaves: &[Digest],
    first_block: u64,
    bytes: &[u8],
) -> Option<u64> {
    let bs = DATA_BLOCK_SIZE as usize;
    let full = bytes.len() / bs * bs;
    let mut hashes = Vec::new();
    hash_blocks(salt, &bytes[..full], &mut hashes);
    if full < bytes.len() {
        let mut padded = bytes[full..].to_vec();
        padded.resize(bs, 0);
        hashes.push(hash_block(salt, &padded));
    }
    hashes
        .iter()
        .zip(first_block..)
        .find(|(h, i)| leaves.get(*i as usize) != Some(h))
        .map(|(_, i)| i)
}

/// Data blocks hashed per parallel job.
const JOB_BLOCKS: u64 = 256;

/// Verifies `data` (the image; bytes past its end read as zeros) against `tree` (the bytes
/// after the superblock) and `root`, in parallel. Reports the first bad block: the tree from
/// the top down, then the data blocks in order. `progress` counts jobs and bytes, and is
/// asked before each job whether to stop.
pub fn verify_image(
    data: &[u8],
    data_blocks: u64,
    tree: &[u8],
    salt: &[u8],
    root: &Digest,
    progress: &dyn Progress,
) -> Result<(), VerifyError> {
    let leaves = check_tree(data_blocks, tree, salt, root)?;
    let bs = DATA_BLOCK_SIZE as u64;
    let jobs = data_blocks.div_ceil(JOB_BLOCKS);
    progress.start(Some(jobs), Some(data_blocks.saturating_mul(bs)));
    let bad = (0..jobs).into_par_iter().find_map_first(|job| {
        if progress.is_cancelled() {
            return Some(Err(Cancelled));
        }
        let first = job * JOB_BLOCKS;
        let last = (first + JOB_BLOCKS).min(data_blocks);
        let at = |b: u64| (b.saturating_mul(bs)).min(data.len() as u64) as usize;
        let mut bytes = std::borrow::Cow::Borrowed(&data[at(first)..at(last)]);
        let want = ((last - first) * bs) as usize;
        if bytes.len() < want {
            bytes.to_mut().resize(want, 0);
        }
        progress.advance(1, want as u64);
        first_bad_block(salt, &leaves, first, &bytes).map(Ok)
    });
    progress.finish();
    match bad {
        Some(Ok(i)) => Err(VerifyError::DataBlock(i)),
        Some(Err(c)) => Err(c.into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(salt: &[u8], img: &[u8]) -> Vec<Digest> {
        img.chunks(4096).map(|c| hash_block(salt, c)).collect()
    }

    #[test]
    fn levels_are_those_veritysetup_computes() {
        // 128 digests per block: 1 block needs no level, 129 blocks need two.
        assert_eq!(level_blocks(1), Vec::<u64>::new());
        assert_eq!(level_blocks(2), vec![1]);
        assert_eq!(level_blocks(128), vec![1]);
        assert_eq!(level_blocks(129), vec![2, 1]);
        assert_eq!(level_blocks(128 * 128 + 1), vec![129, 2, 1]);
    }

    #[test]
    fn a_flipped_data_byte_names_its_block_and_a_flipped_tree_byte_its_level() {
        use erofs_task::NoProgress;
        let img: Vec<u8> = (0..300 * 4096).map(|i| (i % 251) as u8).collect();
        let salt = b"\x01\x02";
        let t = HashTree::from_leaves(salt, &leaves(salt, &img));
        let tree = t.tree_bytes();
        assert_eq!(tree.len(), (3 + 1) * 4096);
        let root = t.root_hash();
        verify_image(&img, 300, &tree, salt, &root, &NoProgress).unwrap();

        let mut bad = img.clone();
        bad[217 * 4096 + 5] ^= 1;
        assert_eq!(
            verify_image(&bad, 300, &tree, salt, &root, &NoProgress),
            Err(VerifyError::DataBlock(217))
        );
        let mut bad_tree = tree.clone();
        bad_tree[4096 + 100] ^= 1; // first leaf-hash block
        assert_eq!(
            verify_image(&img, 300, &bad_tree, salt, &root, &NoProgress),
            Err(VerifyError::TreeBlock { level: 0, block: 0 })
        );
        assert_eq!(
            verify_image(&img, 300, &tree[..8192], salt, &root, &NoProgress),
            Err(VerifyError::Truncated {
                have: 8192,
                need: 4 * 4096,
                data_blocks: 300
            })
        );
        assert_eq!(
            verify_image(&img, 300, &tree, salt, &[0; 32], &NoProgress),
            Err(VerifyError::RootMismatch)
        );
    }

    #[test]
    fn a_cancelled_verification_stops_with_cancelled() {
        let img: Vec<u8> = (0..300 * 4096).map(|i| (i % 251) as u8).collect();
        let t = HashTree::from_leaves(b"", &leaves(b"", &img));
        let token = erofs_task::CancelToken::new();
        token.cancel();
        assert_eq!(
            verify_image(&img, 300, &t.tree_bytes(), b"", &t.root_hash(), &token),
            Err(VerifyError::Cancelled(Cancelled))
        );
    }

    #[test]
    fn superblock_round_trips() {
        let sb = VeritySuperblock {
            uuid: [7; 16],
            data_blocks: 12345,
            salt: vec![1, 2, 3],
        };
        let b = sb.encode();
        assert_eq!(&b[0..8], b"verity\0\0");
        assert_eq!(VeritySuperblock::decode(&b), Some(sb));
        let mut other = b;
        other[32] = b'x';
        assert_eq!(VeritySuperblock::decode(&other), None);
    }
}
