//! Extended attributes (§7, §8) and content fingerprints (§15).

use zerocopy::little_endian::{U16, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Size of the inode xattr body header.
pub const XATTR_IBODY_HEADER_SIZE: usize = 12;
/// Size of an xattr entry header.
pub const XATTR_ENTRY_HEADER_SIZE: usize = 4;
/// Seed base of the name filter hash: the seed is this plus the short prefix index.
pub const XATTR_FILTER_SEED: u32 = 0x25BB_E08F;
/// The filter value of an inode with no filter bits cleared.
pub const XATTR_FILTER_EMPTY: u32 = 0xFFFF_FFFF;
/// `e_name_index` flag for a long prefix (low 7 bits are its index).
pub const XATTR_LONG_PREFIX: u8 = 0x80;
/// Most long prefixes an image may have.
pub const MAX_LONG_PREFIXES: usize = 128;
/// Most shared ids one inode may reference.
pub const MAX_SHARED_PER_INODE: usize = 255;

/// What a fingerprint value starts with.
pub const FINGERPRINT_ALGORITHM_SHA256: &[u8] = b"sha256:";
/// Length of a sha256 fingerprint value: `sha256:` plus 32 raw digest bytes.
pub const FINGERPRINT_VALUE_LEN: usize = 7 + 32;
/// Our default fingerprint xattr name.
pub const DEFAULT_FINGERPRINT_NAME: &str = "trusted.erofs.fingerprint";
/// erofs-utils' default for `--xattr-inode-digest` (hidden: base index 0).
pub const EROFS_UTILS_DIGEST_NAME: &str = "erofs.fingerprint.v1";

/// The 12-byte header of an inode's xattr body.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct XattrIbodyHeader {
    /// Name Bloom filter: bit set = no xattr name hashes there.
    pub name_filter: U32,
    /// Number of shared xattr ids that follow the header.
    pub shared_count: u8,
    /// Reserved, 0.
    pub reserved: [u8; 7],
}

const _: () = assert!(size_of::<XattrIbodyHeader>() == XATTR_IBODY_HEADER_SIZE);

impl XattrIbodyHeader {
    /// The header at the start of an inode's xattr body and the shared ids that follow it,
    /// or `None` when the body is too short for them.
    pub fn decode(body: &[u8]) -> Option<(XattrIbodyHeader, Vec<u32>)> {
        let (h, rest) = XattrIbodyHeader::read_from_prefix(body).ok()?;
        let (ids, _) =
            <[U32]>::ref_from_prefix_with_elems(rest, usize::from(h.shared_count)).ok()?;
        Some((h, ids.iter().map(|i| i.get()).collect()))
    }
}

impl XattrEntry {
    /// Bytes of the record: header, name suffix and value (without padding).
    pub fn record_len(&self) -> usize {
        XATTR_ENTRY_HEADER_SIZE + usize::from(self.name_len) + usize::from(self.value_size.get())
    }
}

/// The 4-byte header of an xattr record; name suffix and value follow, padded to 4.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct XattrEntry {
    /// Length of the name suffix.
    pub name_len: u8,
    /// Short prefix index, or `0x80 | k` for long prefix k.
    pub name_index: u8,
    /// Length of the value.
    pub value_size: U16,
}

const _: () = assert!(size_of::<XattrEntry>() == XATTR_ENTRY_HEADER_SIZE);

/// Size of the xattr body for `i_xattr_icount` (0 = no body).
pub const fn ibody_size(icount: u16) -> usize {
    if icount == 0 {
        0
    } else {
        XATTR_IBODY_HEADER_SIZE + 4 * (icount as usize - 1)
    }
}

/// `i_xattr_icount` for a body of `size` bytes (a multiple of 4, at least 12), or `None`
/// when it does not fit the 16-bit field.
pub const fn icount_for(size: usize) -> Option<u16> {
    if size == 0 {
        return Some(0);
    }
    let n = (size - XATTR_IBODY_HEADER_SIZE) / 4 + 1;
    if n > u16::MAX as usize {
        None
    } else {
        Some(n as u16)
    }
}

/// Size of one xattr record: header, suffix and value, padded to 4 bytes.
pub const fn entry_size(name_len: usize, value_len: usize) -> usize {
    (XATTR_ENTRY_HEADER_SIZE + name_len + value_len + 3) & !3
}

/// The short name prefixes (§8.1), by index.
pub const SHORT_PREFIXES: &[(u8, &str)] = &[
    (1, "user."),
    (2, "system.posix_acl_access"),
    (3, "system.posix_acl_default"),
    (4, "trusted."),
    (5, "lustre."),
    (6, "security."),
];

/// The short prefix string of index `index` (1..=6).
pub fn short_prefix(index: u8) -> Option<&'static str> {
    SHORT_PREFIXES
        .iter()
        .find(|(i, _)| *i == index)
        .map(|(_, p)| *p)
}

/// Splits a full xattr name into its short prefix index and the rest.
///
/// The ACL names match only as whole names. Names without a known prefix (`lustre.` is never
/// used by writers) give `None`.
pub fn split_short_prefix(name: &[u8]) -> Option<(u8, &[u8])> {
    for &(index, prefix) in SHORT_PREFIXES {
        if index == 5 {
            continue;
        }
        let p = prefix.as_bytes();
        let whole = index == 2 || index == 3;
        if (whole && name == p) || (!whole && name.len() > p.len() && name.starts_with(p)) {
            return Some((index, &name[p.len()..]));
        }
    }
    None
}

/// The filter bit (0..31) for an xattr whose short prefix index is `base_index` and whose
/// name after that short prefix is `rest` (§8.3).
pub fn name_filter_bit(base_index: u8, rest: &[u8]) -> u32 {
    xxhash_rust::xxh32::xxh32(rest, XATTR_FILTER_SEED.wrapping_add(u32::from(base_index))) & 31
}

/// A long xattr name prefix record (§8.5): base index and infix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LongPrefix {
    /// Short prefix index the infix extends (0 = hidden name).
    pub base_index: u8,
    /// Bytes after the short prefix.
    pub infix: Vec<u8>,
}

impl LongPrefix {
    /// Registers `name` as a long prefix: a short prefix it starts with becomes the base,
    /// otherwise the base is 0 and the whole name is the infix.
    pub fn from_name(name: &[u8]) -> Self {
        match split_short_prefix(name) {
            Some((base_index, rest)) => Self {
                base_index,
                infix: rest.to_vec(),
            },
            None => Self {
                base_index: 0,
                infix: name.to_vec(),
            },
        }
    }

    /// The full name this prefix stands for.
    pub fn full_name(&self) -> Vec<u8> {
        let mut v = short_prefix(self.base_index)
            .unwrap_or("")
            .as_bytes()
            .to_vec();
        v.extend_from_slice(&self.infix);
        v
    }

    /// The on-disk record: le16 length, base index, infix, padded to 4 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let len = 1 + self.infix.len();
        let mut v = Vec::with_capacity((2 + len + 3) & !3);
        v.extend_from_slice(&(len as u16).to_le_bytes());
        v.push(self.base_index);
        v.extend_from_slice(&self.infix);
        v.resize((v.len() + 3) & !3, 0);
        v
    }
}

/// The fingerprint value for a SHA-256 digest: `sha256:` followed by the 32 raw bytes.
pub fn sha256_fingerprint(digest: &[u8; 32]) -> [u8; FINGERPRINT_VALUE_LEN] {
    let mut v = [0u8; FINGERPRINT_VALUE_LEN];
    v[..7].copy_from_slice(FINGERPRINT_ALGORITHM_SHA256);
    v[7..].copy_from_slice(digest);
    v
}

/// The digest inside a well-formed SHA-256 fingerprint value.
pub fn parse_sha256_fingerprint(value: &[u8]) -> Option<&[u8; 32]> {
    if value.len() != FINGERPRINT_VALUE_LEN || !value.starts_with(FINGERPRINT_ALGORITHM_SHA256) {
        return None;
    }
    value[7..].try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh32_test_vectors() {
        assert_eq!(xxhash_rust::xxh32::xxh32(b"", 0), 0x02CC_5D05);
        assert_eq!(xxhash_rust::xxh32::xxh32(b"abc", 0), 0x32D1_53FF);
    }

    #[test]
    fn filter_bits_of_the_known_fingerprint_names() {
        assert_eq!(name_filter_bit(0, b"erofs.fingerprint.v1"), 8);
        assert_eq!(name_filter_bit(4, b"erofs.fingerprint"), 30);
        assert_eq!(name_filter_bit(0, b"system.erofs.fingerprint"), 20);
    }

    #[test]
    fn prefix_records_for_the_spec_table() {
        let cases: [(&str, u8, &str, usize); 4] = [
            ("erofs.fingerprint.v1", 0, "erofs.fingerprint.v1", 21),
            (
                "system.erofs.fingerprint",
                0,
                "system.erofs.fingerprint",
                25,
            ),
            ("trusted.erofs.fingerprint", 4, "erofs.fingerprint", 18),
            ("user.fp", 1, "fp", 3),
        ];
        for (name, base, infix, len) in cases {
            let p = LongPrefix::from_name(name.as_bytes());
            assert_eq!(p.base_index, base, "{name}");
            assert_eq!(p.infix, infix.as_bytes(), "{name}");
            let rec = p.encode();
            assert_eq!(u16::from_le_bytes([rec[0], rec[1]]) as usize, len, "{name}");
            assert_eq!(rec.len() % 4, 0);
            assert_eq!(p.full_name(), name.as_bytes());
        }
        assert_eq!(
            LongPrefix::from_name(b"erofs.fingerprint.v1").encode()[..3],
            [0x15, 0, 0]
        );
    }

    #[test]
    fn acl_names_match_only_whole() {
        assert_eq!(
            split_short_prefix(b"system.posix_acl_access"),
            Some((2, &b""[..]))
        );
        assert_eq!(split_short_prefix(b"system.posix_acl_accessX"), None);
        assert_eq!(
            split_short_prefix(b"user."),
            None,
            "an empty suffix is not a user xattr"
        );
        assert_eq!(
            split_short_prefix(b"security.selinux"),
            Some((6, &b"selinux"[..]))
        );
    }

    #[test]
    fn body_sizes() {
        assert_eq!(ibody_size(0), 0);
        assert_eq!(ibody_size(1), 12);
        assert_eq!(
            ibody_size(12),
            56,
            "a lone fingerprint: 12 + 4 + 39 rounded up"
        );
        assert_eq!(icount_for(56), Some(12));
        assert_eq!(entry_size(0, 39), 44);
    }

    #[test]
    fn fingerprint_value_is_39_raw_bytes() {
        let v = sha256_fingerprint(&[0xAB; 32]);
        assert_eq!(&v[..7], b"sha256:");
        assert_eq!(v.len(), 39);
        assert_eq!(parse_sha256_fingerprint(&v), Some(&[0xAB; 32]));
        assert_eq!(parse_sha256_fingerprint(&v[..38]), None);
    }
}
