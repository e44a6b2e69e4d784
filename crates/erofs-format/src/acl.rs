//! POSIX ACLs as Linux stores them in the `system.posix_acl_access` and
//! `system.posix_acl_default` xattrs (EROFS keeps the value as is, under short prefix
//! indexes 2 and 3 with an empty name): a little-endian version word, 2, then one
//! 8-byte entry per ACL entry (tag, permissions, id), sorted by tag and then id, as the
//! kernel requires.

/// The version word of the xattr form.
pub const ACL_XATTR_VERSION: u32 = 2;
/// The id of entries that name no user or group.
pub const ACL_UNDEFINED_ID: u32 = u32::MAX;

/// An ACL entry's tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u16)]
pub enum AclTag {
    /// The file's owner (`user::`).
    UserObj = 0x01,
    /// A named user (`user:ID:`).
    User = 0x02,
    /// The file's group (`group::`).
    GroupObj = 0x04,
    /// A named group (`group:ID:`).
    Group = 0x08,
    /// The most the named entries and the group may grant (`mask::`).
    Mask = 0x10,
    /// Everyone else (`other::`).
    Other = 0x20,
}

/// One ACL entry: `perm` holds read (4), write (2) and execute (1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AclEntry {
    /// The tag.
    pub tag: AclTag,
    /// Permission bits, 0..=7.
    pub perm: u16,
    /// The user or group id for [`AclTag::User`] and [`AclTag::Group`]; otherwise
    /// [`ACL_UNDEFINED_ID`].
    pub id: u32,
}

/// The xattr value of an ACL. Entries are sorted (tag, then id) as the kernel requires.
pub fn encode_acl(entries: &[AclEntry]) -> Vec<u8> {
    let mut sorted = entries.to_vec();
    sorted.sort_by_key(|e| (e.tag, e.id));
    let mut out = Vec::with_capacity(4 + 8 * sorted.len());
    out.extend_from_slice(&ACL_XATTR_VERSION.to_le_bytes());
    for e in sorted {
        out.extend_from_slice(&(e.tag as u16).to_le_bytes());
        out.extend_from_slice(&e.perm.to_le_bytes());
        out.extend_from_slice(&e.id.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_sorted_by_tag_then_id_after_the_version_word() {
        let e = |tag, perm, id| AclEntry { tag, perm, id };
        let v = encode_acl(&[
            e(AclTag::Other, 4, ACL_UNDEFINED_ID),
            e(AclTag::User, 7, 1234),
            e(AclTag::User, 5, 7),
            e(AclTag::UserObj, 6, ACL_UNDEFINED_ID),
        ]);
        assert_eq!(&v[..4], &[2, 0, 0, 0]);
        assert_eq!(v.len(), 4 + 4 * 8);
        assert_eq!(&v[4..12], &[1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(&v[12..20], &[2, 0, 5, 0, 7, 0, 0, 0]);
        assert_eq!(&v[20..28], &[2, 0, 7, 0, 0xd2, 0x04, 0, 0]);
        assert_eq!(&v[28..36], &[0x20, 0, 4, 0, 0xff, 0xff, 0xff, 0xff]);
    }
}
