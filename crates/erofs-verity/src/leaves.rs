//! Leaf hashes of a byte image, collected from writes that arrive in any order.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::blocks::{hash_block, hash_blocks};
use crate::{DATA_BLOCK_SIZE, Digest};

/// The leaf hashes of an image, filled by [`LeafSet::write_at`] from any thread.
///
/// Writes must not overlap (every byte of an image is written once). Whole aligned blocks are
/// hashed by the calling thread at once; the pieces of blocks that arrive in several writes
/// are assembled and hashed when complete, or at [`LeafSet::finish`]. Bytes never written read
/// as zeros, as in a sparse file.
#[derive(Debug)]
pub struct LeafSet {
    salt: Vec<u8>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    leaves: Vec<Option<Digest>>,
    /// Blocks seen only in part: their bytes so far and how many were written.
    partial: HashMap<u64, (Box<[u8]>, usize)>,
}

impl LeafSet {
    /// An empty set whose blocks are hashed with `salt` first.
    pub fn new(salt: &[u8]) -> Self {
        Self {
            salt: salt.to_vec(),
            state: Mutex::new(State::default()),
        }
    }

    /// Records that `bytes` were written at byte `offset` of the image.
    pub fn write_at(&self, offset: u64, bytes: &[u8]) {
        let bs = DATA_BLOCK_SIZE as u64;
        let end = offset + bytes.len() as u64;
        let first_full = offset.div_ceil(bs);
        let end_full = end / bs;
        // Hash the whole blocks outside the lock: this is the expensive part.
        let mut hashed = Vec::new();
        if first_full < end_full {
            let start = (first_full * bs - offset) as usize;
            let stop = (end_full * bs - offset) as usize;
            hash_blocks(&self.salt, &bytes[start..stop], &mut hashed);
        }
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (i, d) in hashed.into_iter().enumerate() {
            st.set(first_full + i as u64, d);
        }
        // The head and tail pieces that do not cover a whole block.
        let mut pieces = Vec::new();
        if first_full >= end_full {
            pieces.push((offset, bytes));
        } else {
            if offset < first_full * bs {
                pieces.push((offset, &bytes[..(first_full * bs - offset) as usize]));
            }
            if end > end_full * bs {
                pieces.push((end_full * bs, &bytes[(end_full * bs - offset) as usize..]));
            }
        }
        for (at, piece) in pieces {
            // A piece may still span two blocks when the write is shorter than a block.
            let mut at = at;
            let mut piece = piece;
            while !piece.is_empty() {
                let block = at / bs;
                let within = (at % bs) as usize;
                let n = piece.len().min(DATA_BLOCK_SIZE as usize - within);
                let entry = st
                    .partial
                    .entry(block)
                    .or_insert_with(|| (vec![0u8; DATA_BLOCK_SIZE as usize].into_boxed_slice(), 0));
                entry.0[within..within + n].copy_from_slice(&piece[..n]);
                entry.1 += n;
                if entry.1 >= DATA_BLOCK_SIZE as usize {
                    let (buf, _) = st.partial.remove(&block).expect("just inserted");
                    let d = hash_block(&self.salt, &buf);
                    st.set(block, d);
                }
                at += n as u64;
                piece = &piece[n..];
            }
        }
    }

    /// The leaf hashes of an image of `len` bytes (rounded up to whole blocks): blocks seen
    /// in part are hashed zero-padded, blocks never written as zeros.
    pub fn finish(self, len: u64) -> Vec<Digest> {
        self.leaves(len)
    }

    /// The leaf hashes of the first `len` bytes as written so far (see [`LeafSet::finish`]);
    /// writes may go on afterwards.
    pub fn leaves(&self, len: u64) -> Vec<Digest> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let blocks = len.div_ceil(DATA_BLOCK_SIZE as u64) as usize;
        let zero = hash_block(&self.salt, &[0u8; DATA_BLOCK_SIZE as usize]);
        let mut out: Vec<Digest> = (0..blocks)
            .map(|i| st.leaves.get(i).copied().flatten().unwrap_or(zero))
            .collect();
        for (&block, (buf, _)) in &st.partial {
            if let Some(slot) = out.get_mut(block as usize) {
                *slot = hash_block(&self.salt, buf);
            }
        }
        out
    }
}

impl State {
    fn set(&mut self, block: u64, d: Digest) {
        let i = block as usize;
        if self.leaves.len() <= i {
            self.leaves.resize(i + 1, None);
        }
        self.leaves[i] = Some(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    fn direct(salt: &[u8], img: &[u8]) -> Vec<Digest> {
        img.chunks(4096)
            .map(|c| {
                let mut b = c.to_vec();
                b.resize(4096, 0);
                hash_block(salt, &b)
            })
            .collect()
    }

    #[test]
    fn writes_in_any_order_and_size_give_the_block_hashes() {
        let img = image(5 * 4096 + 1000);
        let want = direct(b"salt", &img);
        // Odd-sized writes, shuffled: every block assembled from several pieces.
        let mut cuts: Vec<(usize, usize)> = Vec::new();
        let mut at = 0;
        let mut step = 1;
        while at < img.len() {
            let n = step.min(img.len() - at);
            cuts.push((at, n));
            at += n;
            step = (step * 3 + 5) % 9000 + 1;
        }
        cuts.reverse();
        let third = cuts.len() / 3;
        cuts.rotate_left(third);
        let set = LeafSet::new(b"salt");
        for (at, n) in cuts {
            set.write_at(at as u64, &img[at..at + n]);
        }
        assert_eq!(set.finish(img.len() as u64), want);
    }

    #[test]
    fn unwritten_blocks_are_zeros() {
        let mut img = vec![0u8; 3 * 4096];
        img[4096..8192].fill(9);
        let set = LeafSet::new(b"");
        set.write_at(4096, &img[4096..8192]);
        assert_eq!(set.finish(img.len() as u64), direct(b"", &img));
    }
}
