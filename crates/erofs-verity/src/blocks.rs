//! `sha256(salt || block)` over many 4096-byte blocks at once.
//!
//! Verity hashes every block of the image, one short message each, so its cost is the SHA-256
//! compression function's throughput. On x86-64 with the SHA extensions one message cannot
//! keep the unit busy (each round depends on the previous one), but two independent
//! messages hashed in lockstep can: [`hash_blocks`] hashes pairs of blocks that way (about
//! 1.5x the single-message speed on the bench machine) and falls back to the `sha2` crate
//! elsewhere. The results are identical; the tests compare both paths with `sha2`.

use sha2::{Digest as _, Sha256};

use crate::{DATA_BLOCK_SIZE, Digest};

const BLOCK: usize = DATA_BLOCK_SIZE as usize;

/// Hashes one block as dm-verity format 1 does: `sha256(salt || block)`. With an empty salt
/// this is fs-verity's block hash too.
pub fn hash_block(salt: &[u8], block: &[u8]) -> Digest {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// Appends `sha256(salt || block)` of each 4096-byte block of `blocks` to `out`, in order; a
/// shorter last block is hashed as it is (callers pad it first when the format says so).
pub fn hash_blocks(salt: &[u8], blocks: &[u8], out: &mut Vec<Digest>) {
    out.reserve(blocks.len().div_ceil(BLOCK));
    let mut rest = blocks;
    #[cfg(target_arch = "x86_64")]
    if shani::available() {
        while rest.len() >= 2 * BLOCK {
            let (a, b) = rest[..2 * BLOCK].split_at(BLOCK);
            let (da, db) = shani::hash_pair(salt, a, b);
            out.push(da);
            out.push(db);
            rest = &rest[2 * BLOCK..];
        }
    }
    out.extend(rest.chunks(BLOCK).map(|b| hash_block(salt, b)));
}

/// The padded SHA-256 message `salt || block`, cut into 64-byte chunks without copying the
/// block: chunks that lie inside the block are borrowed from it, the others (salt, padding)
/// are assembled in a buffer.
#[cfg(target_arch = "x86_64")]
struct Message<'a> {
    salt: &'a [u8],
    block: &'a [u8],
    /// Length of the message before padding, in bytes.
    len: usize,
    /// Number of 64-byte chunks after padding.
    chunks: usize,
}

#[cfg(target_arch = "x86_64")]
impl<'a> Message<'a> {
    fn new(salt: &'a [u8], block: &'a [u8]) -> Self {
        let len = salt.len() + block.len();
        Self {
            salt,
            block,
            len,
            chunks: (len + 9).div_ceil(64),
        }
    }

    fn chunk<'b>(&self, k: usize, buf: &'b mut [u8; 64]) -> &'b [u8; 64]
    where
        'a: 'b,
    {
        let start = 64 * k;
        let s = self.salt.len();
        if start >= s && start + 64 <= self.len {
            return self.block[start - s..start - s + 64]
                .try_into()
                .expect("64 bytes");
        }
        // Only the first chunk (the salt) and the last one or two (the padding) get here.
        let (end, total) = (start + 64, self.chunks * 64);
        buf.fill(0);
        if start < s {
            let n = s.min(end) - start;
            buf[..n].copy_from_slice(&self.salt[start..start + n]);
        }
        let (from, to) = (start.max(s), end.min(self.len));
        if from < to {
            buf[from - start..to - start].copy_from_slice(&self.block[from - s..to - s]);
        }
        if (start..end).contains(&self.len) {
            buf[self.len - start] = 0x80;
        }
        if end == total {
            buf[56..].copy_from_slice(&(self.len as u64 * 8).to_be_bytes());
        }
        buf
    }
}

/// Two-message SHA-256 with the x86 SHA extensions.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod shani {
    use std::arch::x86_64::*;

    use super::Message;
    use crate::Digest;

    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    const H0: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("sse4.1")
            && std::arch::is_x86_feature_detected!("ssse3")
    }

    /// `sha256(salt || a)` and `sha256(salt || b)`; `a` and `b` have the same length.
    pub(super) fn hash_pair(salt: &[u8], a: &[u8], b: &[u8]) -> (Digest, Digest) {
        assert!(available(), "hash_pair without the SHA extensions");
        let (ma, mb) = (Message::new(salt, a), Message::new(salt, b));
        debug_assert_eq!(ma.chunks, mb.chunks);
        let (mut sa, mut sb) = (H0, H0);
        let (mut ba, mut bb) = ([0u8; 64], [0u8; 64]);
        for k in 0..ma.chunks {
            let (ca, cb) = (ma.chunk(k, &mut ba), mb.chunk(k, &mut bb));
            // SAFETY: `available()` checked above that the CPU has every feature
            // `compress2` is compiled for; the arguments are plain references.
            unsafe { compress2(&mut sa, &mut sb, ca, cb) };
        }
        (digest(&sa), digest(&sb))
    }

    fn digest(state: &[u32; 8]) -> Digest {
        let mut d = [0u8; 32];
        for (out, word) in d.chunks_exact_mut(4).zip(state) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        d
    }

    /// Packs `a..h` into the (ABEF, CDGH) register pair the round instructions use.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn load_state(s: &[u32; 8]) -> (__m128i, __m128i) {
        // SAFETY: both loads read 16 bytes inside the 32-byte array; unaligned loads.
        let (lo, hi) = unsafe {
            (
                _mm_loadu_si128(s.as_ptr().cast()),
                _mm_loadu_si128(s.as_ptr().add(4).cast()),
            )
        };
        let cdab = _mm_shuffle_epi32(lo, 0xB1);
        let efgh = _mm_shuffle_epi32(hi, 0x1B);
        (
            _mm_alignr_epi8(cdab, efgh, 8),
            _mm_blend_epi16(efgh, cdab, 0xF0),
        )
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn store_state(s: &mut [u32; 8], abef: __m128i, cdgh: __m128i) {
        let feba = _mm_shuffle_epi32(abef, 0x1B);
        let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
        // SAFETY: both stores write 16 bytes inside the 32-byte array; unaligned stores.
        unsafe {
            _mm_storeu_si128(s.as_mut_ptr().cast(), _mm_blend_epi16(feba, dchg, 0xF0));
            _mm_storeu_si128(s.as_mut_ptr().add(4).cast(), _mm_alignr_epi8(dchg, feba, 8));
        }
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn load_words(chunk: &[u8; 64], i: usize) -> __m128i {
        let big_endian = _mm_set_epi64x(0x0c0d0e0f08090a0b, 0x0405060700010203);
        debug_assert!(i < 4);
        // SAFETY: bytes 16i..16i+16 of a 64-byte array, i < 4; unaligned load.
        let w = unsafe { _mm_loadu_si128(chunk.as_ptr().add(16 * i).cast()) };
        _mm_shuffle_epi8(w, big_endian)
    }

    /// One compression of each of two states, interleaved so that the two dependency
    /// chains overlap.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn compress2(sa: &mut [u32; 8], sb: &mut [u32; 8], ca: &[u8; 64], cb: &[u8; 64]) {
        let (mut a0, mut a1) = load_state(sa);
        let (mut b0, mut b1) = load_state(sb);
        let (a0s, a1s, b0s, b1s) = (a0, a1, b0, b1);
        let mut wa = [_mm_setzero_si128(); 4];
        let mut wb = [_mm_setzero_si128(); 4];
        for j in 0..16 {
            let i = j % 4;
            if j < 4 {
                wa[i] = load_words(ca, i);
                wb[i] = load_words(cb, i);
            } else {
                // W[t] = σ1(W[t-2]) + W[t-7] + σ0(W[t-15]) + W[t-16], four at a time.
                let (n1, n2, n3) = ((j + 1) % 4, (j + 2) % 4, (j + 3) % 4);
                let xa = _mm_add_epi32(
                    _mm_sha256msg1_epu32(wa[i], wa[n1]),
                    _mm_alignr_epi8(wa[n3], wa[n2], 4),
                );
                wa[i] = _mm_sha256msg2_epu32(xa, wa[n3]);
                let xb = _mm_add_epi32(
                    _mm_sha256msg1_epu32(wb[i], wb[n1]),
                    _mm_alignr_epi8(wb[n3], wb[n2], 4),
                );
                wb[i] = _mm_sha256msg2_epu32(xb, wb[n3]);
            }
            // SAFETY: K has 64 words and j < 16; unaligned load.
            let k = unsafe { _mm_loadu_si128(K.as_ptr().add(4 * j).cast()) };
            let ka = _mm_add_epi32(wa[i], k);
            let kb = _mm_add_epi32(wb[i], k);
            a1 = _mm_sha256rnds2_epu32(a1, a0, ka);
            b1 = _mm_sha256rnds2_epu32(b1, b0, kb);
            a0 = _mm_sha256rnds2_epu32(a0, a1, _mm_shuffle_epi32(ka, 0x0E));
            b0 = _mm_sha256rnds2_epu32(b0, b1, _mm_shuffle_epi32(kb, 0x0E));
        }
        store_state(sa, _mm_add_epi32(a0, a0s), _mm_add_epi32(a1, a1s));
        store_state(sb, _mm_add_epi32(b0, b0s), _mm_add_epi32(b1, b1s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic bytes that differ from block to block.
    fn bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn hash_blocks_equals_sha256_of_salt_and_block_for_every_salt_length() {
        // Salt lengths around the 64-byte chunk edges, up to dm-verity's 256-byte limit.
        for salt_len in [0, 1, 31, 32, 55, 56, 63, 64, 65, 100, 128, 255, 256] {
            let salt = bytes(salt_len, salt_len as u64 + 7);
            // An odd number of blocks and a short tail: pairs, a single one, a partial one.
            let data = bytes(5 * BLOCK + 1000, 99);
            let mut got = Vec::new();
            hash_blocks(&salt, &data, &mut got);
            let want: Vec<Digest> = data
                .chunks(BLOCK)
                .map(|b| {
                    Sha256::new()
                        .chain_update(&salt)
                        .chain_update(b)
                        .finalize()
                        .into()
                })
                .collect();
            assert_eq!(got, want, "salt of {salt_len} bytes");
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_paired_path_equals_the_portable_one() {
        if !shani::available() {
            eprintln!("no SHA extensions on this CPU: the paired path is not exercised");
            return;
        }
        for salt_len in [0, 32, 64, 256] {
            let salt = bytes(salt_len, 3);
            let data = bytes(2 * BLOCK, salt_len as u64 + 11);
            let (a, b) = shani::hash_pair(&salt, &data[..BLOCK], &data[BLOCK..]);
            assert_eq!(a, hash_block(&salt, &data[..BLOCK]));
            assert_eq!(b, hash_block(&salt, &data[BLOCK..]));
        }
    }
}
