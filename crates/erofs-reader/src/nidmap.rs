//! Hash maps keyed by nid or block number: a multiplicative hash instead of SipHash.
//! The keys come from the image, so a hostile image could pick colliding keys; the
//! worst case is slower lookups, never unbounded memory (every map is bounded by the
//! number of inodes or blocks in the image).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// Fibonacci hashing of one `u64`.
#[derive(Clone, Copy, Debug, Default)]
pub struct NidHasher(u64);

impl Hasher for NidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 ^= self.0 >> 29;
    }
}

/// A `HashMap` keyed by nid.
pub type NidMap<V> = HashMap<u64, V, BuildHasherDefault<NidHasher>>;
/// A `HashSet` of nids.
pub type NidSet = HashSet<u64, BuildHasherDefault<NidHasher>>;
