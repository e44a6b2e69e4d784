//! The fs-verity file digest (`fsverity digest`): SHA-256, 4096-byte blocks, no salt.

use crate::blocks::hash_block;
use crate::{DATA_BLOCK_SIZE, DIGEST_SIZE, Digest};
use sha2::{Digest as _, Sha256};

/// `struct fsverity_descriptor`, whose SHA-256 is the file digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsVerityDescriptor {
    /// Size of the file.
    pub data_size: u64,
    /// Root hash of the file's Merkle tree.
    pub root_hash: Digest,
}

impl FsVerityDescriptor {
    /// The 256-byte descriptor: version 1, SHA-256 (1), log2 block size 12, no salt.
    pub fn encode(&self) -> [u8; 256] {
        let mut b = [0u8; 256];
        b[0] = 1;
        b[1] = 1;
        b[2] = DATA_BLOCK_SIZE.trailing_zeros() as u8;
        b[8..16].copy_from_slice(&self.data_size.to_le_bytes());
        b[16..16 + DIGEST_SIZE].copy_from_slice(&self.root_hash);
        b
    }

    /// The file digest.
    pub fn digest(&self) -> Digest {
        Sha256::digest(self.encode()).into()
    }
}

/// The fs-verity digest of a file of `data_size` bytes whose unsalted block hashes are
/// `leaves` (the last block zero-padded).
pub fn fsverity_digest(data_size: u64, leaves: &[Digest]) -> Digest {
    let root_hash = if data_size == 0 {
        [0; DIGEST_SIZE]
    } else if leaves.len() == 1 {
        // A file of one block has no hash blocks: its root hash is that block's hash.
        leaves[0]
    } else {
        crate::HashTree::from_leaves(&[], leaves).root_hash()
    };
    FsVerityDescriptor {
        data_size,
        root_hash,
    }
    .digest()
}

/// The fs-verity digest of `bytes`.
pub fn fsverity_digest_of_bytes(bytes: &[u8]) -> Digest {
    let leaves: Vec<Digest> = bytes
        .chunks(DATA_BLOCK_SIZE as usize)
        .map(|c| {
            let mut b = c.to_vec();
            b.resize(DATA_BLOCK_SIZE as usize, 0);
            hash_block(&[], &b)
        })
        .collect();
    fsverity_digest(bytes.len() as u64, &leaves)
}
