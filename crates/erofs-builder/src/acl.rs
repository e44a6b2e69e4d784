//! The text form of POSIX ACLs that GNU tar (`--acls`) and star write in the PAX records
//! `SCHILY.acl.access` and `SCHILY.acl.default`, turned into the xattr values
//! (`system.posix_acl_access` / `_default`) that extraction would set.
//!
//! Entries are separated by newlines or commas: `TAG:QUALIFIER:PERMS[:ID]`, with TAG
//! `user`, `group`, `mask` or `other` (or their first letters), PERMS like `rw-`, and `#`
//! starting a comment. A qualifier is a numeric id, or a name, which (as when GNU tar
//! extracts) is looked up in the build host's user and group databases unless star's
//! fourth field gives the id.

use erofs_format::acl::{ACL_UNDEFINED_ID, AclEntry, AclTag, encode_acl};

/// Looks a user (`group == false`) or group name up: its id.
pub type NameLookup<'a> = &'a dyn Fn(&[u8], bool) -> Option<u32>;

/// The xattr value of the ACL `text`, or why it cannot be converted.
pub fn acl_xattr(text: &[u8], lookup: NameLookup<'_>) -> Result<Vec<u8>, String> {
    let mut entries = Vec::new();
    for raw in text.split(|&b| b == b'\n' || b == b',') {
        let raw = raw.split(|&b| b == b'#').next().unwrap_or_default();
        let e = raw.trim_ascii();
        if e.is_empty() {
            continue;
        }
        let e = e.strip_prefix(b"default:").unwrap_or(e);
        let f: Vec<&[u8]> = e.split(|&b| b == b':').map(<[u8]>::trim_ascii).collect();
        let show = || String::from_utf8_lossy(e).into_owned();
        if f.len() < 3 || f.len() > 4 {
            return Err(format!("ACL entry {:?} is not TAG:QUALIFIER:PERMS", show()));
        }
        let named = !f[1].is_empty();
        let tag = match (f[0], named) {
            (b"user" | b"u", false) => AclTag::UserObj,
            (b"user" | b"u", true) => AclTag::User,
            (b"group" | b"g", false) => AclTag::GroupObj,
            (b"group" | b"g", true) => AclTag::Group,
            (b"mask" | b"m", false) => AclTag::Mask,
            (b"other" | b"o", false) => AclTag::Other,
            _ => return Err(format!("ACL entry {:?}: unknown tag", show())),
        };
        let mut perm = 0u16;
        for &c in f[2] {
            perm |= match c {
                b'r' => 4,
                b'w' => 2,
                b'x' => 1,
                b'-' => 0,
                _ => return Err(format!("ACL entry {:?}: bad permissions", show())),
            };
        }
        let id = if !named {
            ACL_UNDEFINED_ID
        } else if let Some(id) = f.get(3).and_then(|s| decimal(s)) {
            id
        } else if let Some(id) = decimal(f[1]) {
            id
        } else {
            lookup(f[1], tag == AclTag::Group).ok_or_else(|| {
                format!(
                    "ACL entry {:?}: no {} named {}",
                    show(),
                    if tag == AclTag::Group {
                        "group"
                    } else {
                        "user"
                    },
                    String::from_utf8_lossy(f[1])
                )
            })?
        };
        entries.push(AclEntry { tag, perm, id });
    }
    let count = |t| entries.iter().filter(|e| e.tag == t).count();
    let named = count(AclTag::User) + count(AclTag::Group);
    if count(AclTag::UserObj) != 1
        || count(AclTag::GroupObj) != 1
        || count(AclTag::Other) != 1
        || count(AclTag::Mask) > 1
        || (named > 0 && count(AclTag::Mask) != 1)
    {
        return Err(
            "the ACL lacks a user::, group:: or other:: entry, or a mask:: its named entries need"
                .into(),
        );
    }
    let mut ids: Vec<(AclTag, u32)> = entries.iter().map(|e| (e.tag, e.id)).collect();
    ids.sort();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err("the ACL names one user or group twice".into());
    }
    Ok(encode_acl(&entries))
}

/// Whether an ACL xattr value holds only the owner, group and other entries: as an access
/// ACL it says no more than the mode bits, and the kernel (and so extraction) stores none.
pub fn is_minimal(value: &[u8]) -> bool {
    value.len() == 4 + 3 * 8
}

fn decimal(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// Looks names up in `/etc/passwd` and `/etc/group`, as the C library's files backend does.
pub fn host_lookup(name: &[u8], group: bool) -> Option<u32> {
    let db = std::fs::read(if group { "/etc/group" } else { "/etc/passwd" }).ok()?;
    db.split(|&b| b == b'\n').find_map(|line| {
        let mut f = line.split(|&b| b == b':');
        let n = f.next()?;
        let _password = f.next()?;
        let id = f.next()?;
        (n == name).then(|| decimal(id)).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &[u8], _: bool) -> Option<u32> {
        None
    }

    #[test]
    fn gnu_tar_text_becomes_the_sorted_binary_form() {
        let lp = |n: &[u8], g: bool| (g && n == b"lp").then_some(7);
        let v = acl_xattr(
            b"user::rwx\ngroup::r-x\ngroup:lp:rwx\nuser:1234:r-x\nmask::rwx\nother::r-x\n",
            &lp,
        )
        .unwrap();
        let want = encode_acl(&[
            AclEntry {
                tag: AclTag::UserObj,
                perm: 7,
                id: ACL_UNDEFINED_ID,
            },
            AclEntry {
                tag: AclTag::User,
                perm: 5,
                id: 1234,
            },
            AclEntry {
                tag: AclTag::GroupObj,
                perm: 5,
                id: ACL_UNDEFINED_ID,
            },
            AclEntry {
                tag: AclTag::Group,
                perm: 7,
                id: 7,
            },
            AclEntry {
                tag: AclTag::Mask,
                perm: 7,
                id: ACL_UNDEFINED_ID,
            },
            AclEntry {
                tag: AclTag::Other,
                perm: 5,
                id: ACL_UNDEFINED_ID,
            },
        ]);
        assert_eq!(v, want);
    }

    #[test]
    fn an_acl_of_owner_group_and_other_only_is_minimal() {
        let v = acl_xattr(b"user::rwx\ngroup::r-x\nother::r-x\n", &none).unwrap();
        assert!(is_minimal(&v));
        let v = acl_xattr(b"user::rwx\ngroup::r-x\nmask::r-x\nother::r-x\n", &none).unwrap();
        assert!(!is_minimal(&v));
    }

    #[test]
    fn star_commas_short_tags_comments_and_the_id_field() {
        let a = acl_xattr(b"u::rw-,u:bob:r--:1000 # bob,g::r--,m::r--,o::---", &none).unwrap();
        let b = acl_xattr(
            b"user::rw-\nuser:1000:r--\ngroup::r--\nmask::r--\nother::---",
            &none,
        )
        .unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn malformed_or_incomplete_acls_are_refused() {
        for bad in [
            &b"user::rw-\ngroup::r--"[..],
            b"user::rw-\nuser:5:r--\ngroup::r--\nother::r--",
            b"user::rwz\ngroup::r--\nother::r--",
            b"user::rw-\nuser:nobody-here:r--\ngroup::r--\nmask::r--\nother::r--",
            b"user::rw-\nuser:5:r--\nuser:5:rw-\ngroup::r--\nmask::r--\nother::r--",
            b"class::rw-\ngroup::r--\nother::r--",
        ] {
            assert!(
                acl_xattr(bad, &none).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
