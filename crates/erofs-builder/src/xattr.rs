//! Xattr planning (§7, §8, §15): long name prefixes, the shared area, and each inode's body.

use std::collections::HashMap;

use erofs_format::xattr::{
    LongPrefix, MAX_LONG_PREFIXES, MAX_SHARED_PER_INODE, XATTR_FILTER_EMPTY, XATTR_LONG_PREFIX,
    XattrEntry, XattrIbodyHeader, entry_size, name_filter_bit, split_short_prefix,
};
use erofs_format::{FINGERPRINT_VALUE_LEN, XATTR_IBODY_HEADER_SIZE};
use zerocopy::IntoBytes;

use crate::BuildError;
use crate::tree::{Kind, Tree};

/// The registered long xattr name prefixes, in registration order.
#[derive(Clone, Debug, Default)]
pub struct Prefixes {
    list: Vec<(LongPrefix, Vec<u8>)>,
    fingerprint: Option<u8>,
}

impl Prefixes {
    /// Registers `user` prefixes in order, then the fingerprint name (reusing an equal one).
    pub fn new(user: &[Vec<u8>], fingerprint: Option<&[u8]>) -> Result<Self, BuildError> {
        let mut p = Self::default();
        for name in user {
            if !p.list.iter().any(|(_, full)| full == name) {
                p.push(name)?;
            }
        }
        if let Some(name) = fingerprint {
            let id = match p.list.iter().position(|(_, full)| full == name) {
                Some(i) => i,
                None => p.push(name)?,
            };
            p.fingerprint = Some(id as u8);
        }
        Ok(p)
    }

    fn push(&mut self, name: &[u8]) -> Result<usize, BuildError> {
        if self.list.len() >= MAX_LONG_PREFIXES {
            return Err(BuildError::InvalidOption(format!(
                "more than {MAX_LONG_PREFIXES} long xattr prefixes"
            )));
        }
        let prefix = LongPrefix::from_name(name);
        if prefix.infix.len() > 255 {
            return Err(BuildError::InvalidOption(format!(
                "xattr prefix {} is too long",
                String::from_utf8_lossy(name)
            )));
        }
        self.list.push((prefix, name.to_vec()));
        Ok(self.list.len() - 1)
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether no prefix is registered.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The fingerprint prefix index, if fingerprints are on.
    pub fn fingerprint_id(&self) -> Option<u8> {
        self.fingerprint
    }

    /// The plain on-disk records, each padded to 4 bytes.
    pub fn records(&self) -> Vec<u8> {
        self.list.iter().flat_map(|(p, _)| p.encode()).collect()
    }

    /// `e_name_index` and name suffix for a full xattr name: the first registered long
    /// prefix with the same base index that the name starts with, else the short prefix.
    /// `None` for names with neither.
    pub fn encode_name<'a>(&self, full: &'a [u8]) -> Option<(u8, &'a [u8])> {
        let short = split_short_prefix(full);
        let base = short.map_or(0, |(i, _)| i);
        for (k, (prefix, pfull)) in self.list.iter().enumerate() {
            if prefix.base_index == base && full.starts_with(pfull) {
                return Some((XATTR_LONG_PREFIX | k as u8, &full[pfull.len()..]));
            }
        }
        short
    }
}

/// The filter bit of a full xattr name (§8.3).
pub fn filter_bit(full: &[u8]) -> u32 {
    let (base, rest) = split_short_prefix(full).unwrap_or((0, full));
    name_filter_bit(base, rest)
}

/// One inode's planned xattr body.
#[derive(Clone, Debug, Default)]
pub struct Body {
    /// The encoded body (empty: no xattrs). The fingerprint value bytes are zero here.
    pub bytes: Vec<u8>,
    /// Where the 32 digest bytes of the fingerprint value go inside `bytes`.
    pub digest_offset: Option<usize>,
}

impl Body {
    /// `i_xattr_icount`.
    pub fn icount(&self) -> u16 {
        erofs_format::xattr::icount_for(self.bytes.len()).unwrap_or(0)
    }
}

/// The xattr side of the plan.
#[derive(Clone, Debug, Default)]
pub struct XattrPlan {
    /// Long prefixes.
    pub prefixes: Prefixes,
    /// The shared area's records, to be placed at the start of a block.
    pub shared_area: Vec<u8>,
    /// One body per inode.
    pub bodies: Vec<Body>,
    /// Whether any inode has a non-trivial name filter.
    pub any_filter: bool,
}

fn encode_entry(out: &mut Vec<u8>, index: u8, suffix: &[u8], value: &[u8]) {
    let e = XattrEntry {
        name_len: suffix.len() as u8,
        name_index: index,
        value_size: (value.len() as u16).into(),
    };
    let start = out.len();
    out.extend_from_slice(e.as_bytes());
    out.extend_from_slice(suffix);
    out.extend_from_slice(value);
    out.resize(start + entry_size(suffix.len(), value.len()), 0);
}

/// Plans xattrs for the whole tree. `tolerance` is `-x`; `fingerprint` the fingerprint
/// xattr name when fingerprints are on.
pub fn plan(
    tree: &Tree,
    tolerance: i32,
    user_prefixes: &[Vec<u8>],
    fingerprint: Option<&[u8]>,
    name_filter: bool,
) -> Result<XattrPlan, BuildError> {
    let prefixes = Prefixes::new(user_prefixes, fingerprint)?;
    // Shared candidates: (name, value) pairs used by more than `tolerance` inodes.
    // A negative tolerance drops the source xattrs (mkfs.erofs `-x -1`).
    fn source_xattrs(inode: &crate::tree::Inode, tolerance: i32) -> &[(Vec<u8>, Vec<u8>)] {
        if tolerance < 0 { &[] } else { &inode.xattrs }
    }
    let mut counts: HashMap<(&[u8], &[u8]), u32> = HashMap::new();
    for inode in &tree.inodes {
        for (n, v) in source_xattrs(inode, tolerance) {
            *counts.entry((n, v)).or_default() += 1;
        }
    }
    let mut shared: Vec<(&[u8], &[u8])> = if tolerance >= 0 {
        counts
            .iter()
            .filter(|&(_, &c)| i64::from(c) > i64::from(tolerance))
            .map(|(k, _)| *k)
            .collect()
    } else {
        Vec::new()
    };
    shared.sort();
    let mut shared_area = Vec::new();
    let mut shared_ids: HashMap<(&[u8], &[u8]), u32> = HashMap::new();
    for &(n, v) in &shared {
        let (index, suffix) = prefixes
            .encode_name(n)
            .expect("source xattrs always have a prefix");
        let id = (shared_area.len() / 4) as u32;
        encode_entry(&mut shared_area, index, suffix, v);
        shared_ids.insert((n, v), id);
    }

    let fp = fingerprint.zip(prefixes.fingerprint_id());
    let mut bodies = Vec::with_capacity(tree.inodes.len());
    let mut any_filter = false;
    for inode in &tree.inodes {
        let has_fp = fp.is_some() && matches!(&inode.kind, Kind::Regular(c) if c.size > 0);
        let xattrs = source_xattrs(inode, tolerance);
        if xattrs.is_empty() && !has_fp {
            bodies.push(Body::default());
            continue;
        }
        let mut filter = XATTR_FILTER_EMPTY;
        let mut ids = Vec::new();
        let mut inline: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
        for (n, v) in xattrs {
            filter &= !(1u32 << filter_bit(n));
            match shared_ids.get(&(n.as_slice(), v.as_slice())) {
                Some(&id) if ids.len() < MAX_SHARED_PER_INODE => ids.push(id),
                _ => inline.push((n, Some(v))),
            }
        }
        if let (true, Some((name, _))) = (has_fp, fp) {
            filter &= !(1u32 << filter_bit(name));
            let pos = inline.partition_point(|(n, _)| *n < name);
            inline.insert(pos, (name, None));
        }
        any_filter |= filter != XATTR_FILTER_EMPTY;
        let mut header = XattrIbodyHeader::default();
        header.name_filter.set(if name_filter { filter } else { 0 });
        header.shared_count = ids.len() as u8;
        let mut bytes = Vec::with_capacity(XATTR_IBODY_HEADER_SIZE + 4 * ids.len() + 64);
        bytes.extend_from_slice(header.as_bytes());
        for id in ids {
            bytes.extend_from_slice(&id.to_le_bytes());
        }
        let mut digest_offset = None;
        for (n, v) in inline {
            match v {
                Some(v) => {
                    let (index, suffix) = prefixes
                        .encode_name(n)
                        .expect("source xattrs always have a prefix");
                    encode_entry(&mut bytes, index, suffix, v);
                }
                None => {
                    let id = fp.expect("fingerprint entry without fingerprint").1;
                    let start = bytes.len();
                    let mut value = [0u8; FINGERPRINT_VALUE_LEN];
                    value[..7].copy_from_slice(erofs_format::FINGERPRINT_ALGORITHM_SHA256);
                    encode_entry(&mut bytes, XATTR_LONG_PREFIX | id, b"", &value);
                    digest_offset = Some(start + 4 + 7);
                }
            }
        }
        if erofs_format::xattr::icount_for(bytes.len()).is_none() {
            return Err(BuildError::TooLarge(
                "xattrs of one inode exceed 256 KiB".into(),
            ));
        }
        bodies.push(Body {
            bytes,
            digest_offset,
        });
    }
    Ok(XattrPlan {
        prefixes,
        shared_area,
        bodies,
        any_filter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_prefix_follows_user_prefixes_and_reuses_equal_names() {
        let p = Prefixes::new(
            &[b"trusted.overlay.".to_vec()],
            Some(b"trusted.erofs.fingerprint"),
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p.fingerprint_id(), Some(1));
        assert_eq!(
            p.encode_name(b"trusted.overlay.opaque"),
            Some((0x80, &b"opaque"[..]))
        );
        assert_eq!(
            p.encode_name(b"trusted.erofs.fingerprint"),
            Some((0x81, &b""[..]))
        );
        assert_eq!(p.encode_name(b"user.x"), Some((1, &b"x"[..])));
        let q = Prefixes::new(&[b"user.fp".to_vec()], Some(b"user.fp")).unwrap();
        assert_eq!((q.len(), q.fingerprint_id()), (1, Some(0)));
    }

    #[test]
    fn a_lone_fingerprint_body_is_56_bytes_with_icount_12() {
        let mut bytes = Vec::new();
        encode_entry(&mut bytes, 0x80, b"", &[0; 39]);
        assert_eq!(bytes.len(), 44);
        let body = Body {
            bytes: vec![0; 56],
            digest_offset: None,
        };
        assert_eq!(body.icount(), 12);
    }

    #[test]
    fn filter_bits_of_default_names() {
        assert_eq!(filter_bit(b"erofs.fingerprint.v1"), 8);
        assert_eq!(filter_bit(b"trusted.erofs.fingerprint"), 30);
    }
}
