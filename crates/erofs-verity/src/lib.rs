//! dm-verity hash trees and fs-verity digests for EROFS images.
//!
//! Both are Merkle trees of SHA-256 over 4096-byte blocks; they differ in how a block is
//! hashed (dm-verity format 1 puts the salt first, fs-verity has no salt here) and in what
//! the root is bound to (dm-verity: the top hash block; fs-verity: a descriptor holding the
//! file size and the root hash). The leaves can be computed by any thread in any order
//! ([`LeafSet`]), so the builder hashes image blocks where it produces them instead of
//! reading the finished image a second time.
//!
//! The layout follows what `veritysetup format` writes (and the kernel's dm-verity reads):
//! an optional 512-byte superblock padded to a hash block, then the levels of the tree from
//! the top (one block) down to the leaf hashes, each hash block zero-padded.
#![deny(missing_docs)]

mod blocks;
mod dm;
mod fsverity;
mod leaves;

pub use blocks::{hash_block, hash_blocks};
pub use dm::{
    DATA_BLOCK_SIZE, HASH_BLOCK_SIZE, HashTree, SUPERBLOCK_SIZE, VerifyError, VeritySuperblock,
    check_tree, first_bad_block, verify_image,
};
pub use fsverity::{FsVerityDescriptor, fsverity_digest, fsverity_digest_of_bytes};
pub use leaves::LeafSet;

/// Length of a SHA-256 digest.
pub const DIGEST_SIZE: usize = 32;

/// A SHA-256 digest.
pub type Digest = [u8; DIGEST_SIZE];

/// Errors in verity parameters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// The salt is longer than the 256 bytes dm-verity's superblock holds.
    #[error("the salt is {0} bytes; dm-verity takes at most 256")]
    SaltTooLong(usize),
    /// The salt is not an even number of hex digits.
    #[error("the salt {0:?} is not hex (an even number of 0-9a-f digits, or 'none')")]
    SaltNotHex(String),
}

/// Parses a salt given on a command line: hex digits, or `none` (or the empty string) for
/// no salt.
pub fn parse_salt(text: &str) -> Result<Vec<u8>, ParamError> {
    if text == "none" || text.is_empty() || text == "-" {
        return Ok(Vec::new());
    }
    let salt = from_hex(text).ok_or_else(|| ParamError::SaltNotHex(text.to_string()))?;
    if salt.len() > 256 {
        return Err(ParamError::SaltTooLong(salt.len()));
    }
    Ok(salt)
}

/// Decodes lowercase or uppercase hex; `None` if it is not an even number of hex digits.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let b = text.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    b.chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

/// Lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salts_are_hex_or_none() {
        assert_eq!(parse_salt("none").unwrap(), b"");
        assert_eq!(parse_salt("00ff10").unwrap(), [0, 0xff, 0x10]);
        assert_eq!(parse_salt("ABcd").unwrap(), [0xab, 0xcd]);
        assert!(matches!(parse_salt("abc"), Err(ParamError::SaltNotHex(_))));
        assert!(matches!(parse_salt("zz"), Err(ParamError::SaltNotHex(_))));
        assert!(matches!(
            parse_salt(&"00".repeat(257)),
            Err(ParamError::SaltTooLong(257))
        ));
        assert_eq!(to_hex(&[0, 0xab]), "00ab");
    }
}
