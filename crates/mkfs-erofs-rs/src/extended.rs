//! `-E opt[,opt...]`: mkfs.erofs 1.9.3's extended options. Those implemented here take
//! effect; every other one of its flags is refused by name, never ignored silently, and an
//! unknown one is refused as unknown.

use anyhow::{Result, bail};

/// What the implemented `-E` flags set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extended {
    /// `noinline_data` / `^inline_data`.
    pub noinline_data: bool,
    /// `[^]xattr-name-filter` (on by default, as in 1.9.3).
    pub xattr_name_filter: bool,
    /// `ztailpacking`: inline tail pclusters of compressed files.
    pub ztailpacking: bool,
    /// `legacy-compress`: full lcluster indexes instead of compact ones.
    pub legacy_compress: bool,
    /// `48bit`: the 48-bit layout (Linux 6.15+).
    pub bit48: bool,
    /// `fragments` / `all-fragments` (the later wins, as in mkfs.erofs).
    pub fragments: erofs_builder::Fragments,
    /// `fragments=BYTES` / `all-fragments=BYTES`: the packed inode's pcluster size (0: -C's).
    pub packed_pcluster: u32,
    /// `[^]fragdedupe[=inode|full]`.
    pub fragdedupe: erofs_builder::FragDedupe,
    /// `dedupe`: pclusters shared between extents with the same decoded bytes.
    pub dedupe: bool,
}

impl Default for Extended {
    fn default() -> Self {
        Self {
            noinline_data: false,
            xattr_name_filter: true,
            ztailpacking: false,
            legacy_compress: false,
            bit48: false,
            fragments: erofs_builder::Fragments::Off,
            packed_pcluster: 0,
            fragdedupe: erofs_builder::FragDedupe::Full,
            dedupe: false,
        }
    }
}

/// mkfs.erofs 1.9.3's `-E` flags that mkfs.erofs-rs does not implement (yet).
pub const NOT_IMPLEMENTED: [&str; 7] = [
    "dot-omitted",
    "force-inode-compact",
    "force-inode-extended",
    "force-inode-blockmap",
    "force-chunk-indexes",
    "nosbcrc",
    "plain-xattr-prefixes",
];

/// Parses every `-E` value in order; a later flag wins over an earlier one.
pub fn parse(values: &[String]) -> Result<Extended> {
    let mut e = Extended::default();
    for opt in values.iter().flat_map(|v| v.split(',')) {
        let (negated, rest) = match opt.strip_prefix('^') {
            Some(r) => (true, r),
            None => (false, opt),
        };
        let (name, value) = rest
            .split_once('=')
            .map_or((rest, None), |(n, v)| (n, Some(v)));
        match (negated, name) {
            (false, "fragments" | "all-fragments") => {
                if let Some(v) = value {
                    // mkfs.erofs reads it with strtoull(base 0): decimal, 0x hex or 0 octal.
                    let parsed = match v {
                        _ if v.starts_with("0x") || v.starts_with("0X") => {
                            u32::from_str_radix(&v[2..], 16).ok()
                        }
                        _ if v.len() > 1 && v.starts_with('0') => {
                            u32::from_str_radix(&v[1..], 8).ok()
                        }
                        _ => v.parse::<u32>().ok(),
                    };
                    e.packed_pcluster = match parsed {
                        Some(n) if n > 0 => n,
                        _ => bail!(
                            "-E {opt}: {v:?} is not a pcluster size in bytes for the packed inode"
                        ),
                    };
                }
                e.fragments = if name == "fragments" {
                    erofs_builder::Fragments::Tails
                } else {
                    erofs_builder::Fragments::All
                };
            }
            (true, "fragdedupe") if value.is_none() => {
                e.fragdedupe = erofs_builder::FragDedupe::Off
            }
            (false, "fragdedupe") => {
                e.fragdedupe = match value {
                    None | Some("full") => erofs_builder::FragDedupe::Full,
                    Some("inode") => erofs_builder::FragDedupe::Inode,
                    Some(v) => bail!("-E {opt}: unknown fragdedupe mode {v} (known: inode, full)"),
                }
            }
            (_, "") => {}
            (false, "noinline_data") | (true, "inline_data") => e.noinline_data = true,
            (false, "inline_data") => e.noinline_data = false,
            (false, "xattr-name-filter") => e.xattr_name_filter = true,
            (true, "xattr-name-filter") => e.xattr_name_filter = false,
            (false, "ztailpacking") => e.ztailpacking = true,
            (true, "ztailpacking") => e.ztailpacking = false,
            (false, "legacy-compress") => e.legacy_compress = true,
            (true, "legacy-compress") => e.legacy_compress = false,
            (false, "48bit") => e.bit48 = true,
            (true, "48bit") => e.bit48 = false,
            (false, "dedupe") => e.dedupe = true,
            (true, "dedupe") => e.dedupe = false,
            (_, n) if NOT_IMPLEMENTED.contains(&n) => {
                bail!(
                    "-E {opt}: mkfs.erofs's extended option {n} is not implemented by mkfs.erofs-rs"
                )
            }
            _ => bail!(
                "-E {opt}: unknown extended option (known: noinline_data, [^]inline_data, [^]xattr-name-filter, [^]ztailpacking, [^]legacy-compress, [^]48bit, [^]dedupe, fragments[=BYTES], all-fragments[=BYTES], [^]fragdedupe[=inode|full])"
            ),
        }
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Result<Extended> {
        parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn implemented_flags_take_effect_in_order() {
        let e = p(&["noinline_data,^xattr-name-filter"]).unwrap();
        assert!(e.noinline_data && !e.xattr_name_filter);
        assert!(!p(&["^inline_data", "inline_data"]).unwrap().noinline_data);
        let z = p(&["ztailpacking", "legacy-compress"]).unwrap();
        assert!(z.ztailpacking && z.legacy_compress && !z.bit48);
        assert!(p(&["48bit"]).unwrap().bit48);
        assert!(!p(&["ztailpacking,^ztailpacking"]).unwrap().ztailpacking);
    }

    #[test]
    fn fragment_flags_parse_as_mkfs_spells_them() {
        use erofs_builder::{FragDedupe, Fragments};
        let d = p(&[]).unwrap();
        assert_eq!(
            (d.fragments, d.fragdedupe),
            (Fragments::Off, FragDedupe::Full)
        );
        assert_eq!(p(&["fragments"]).unwrap().fragments, Fragments::Tails);
        assert_eq!(
            p(&["fragments,all-fragments"]).unwrap().fragments,
            Fragments::All
        );
        assert_eq!(
            p(&["all-fragments", "fragments"]).unwrap().fragments,
            Fragments::Tails
        );
        assert_eq!(p(&["^fragdedupe"]).unwrap().fragdedupe, FragDedupe::Off);
        assert_eq!(
            p(&["fragdedupe=inode"]).unwrap().fragdedupe,
            FragDedupe::Inode
        );
        assert_eq!(
            p(&["^fragdedupe,fragdedupe=full"]).unwrap().fragdedupe,
            FragDedupe::Full
        );
        assert!(p(&["fragdedupe=some"]).is_err());
        // The packed inode's pcluster size, spelled as strtoull(base 0) reads it.
        for (v, n) in [("65536", 65536), ("0x10000", 65536), ("0200000", 65536)] {
            let e = p(&[&format!("fragments={v}")]).unwrap();
            assert_eq!(
                (e.fragments, e.packed_pcluster),
                (Fragments::Tails, n),
                "{v}"
            );
        }
        assert_eq!(p(&["all-fragments=8192"]).unwrap().packed_pcluster, 8192);
        for bad in [
            "fragments=",
            "fragments=0",
            "fragments=64k",
            "fragments=-4096",
        ] {
            assert!(p(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_other_1_9_3_flag_is_refused_by_name() {
        for n in NOT_IMPLEMENTED {
            let err = p(&[&format!("{n}=4096")]).unwrap_err().to_string();
            assert!(err.contains(n) && err.contains("not implemented"), "{err}");
        }
        let err = p(&["bogus"]).unwrap_err().to_string();
        assert!(err.contains("unknown extended option"), "{err}");
    }
}
