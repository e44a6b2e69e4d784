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
            dedupe: false,
        }
    }
}

/// mkfs.erofs 1.9.3's `-E` flags that mkfs.erofs-rs does not implement (yet).
pub const NOT_IMPLEMENTED: [&str; 10] = [
    "all-fragments",
    "fragments",
    "fragdedupe",
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
        let name = rest.split_once('=').map_or(rest, |(n, _)| n);
        match (negated, name) {
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
                "-E {opt}: unknown extended option (known: noinline_data, [^]inline_data, [^]xattr-name-filter, [^]ztailpacking, [^]legacy-compress, [^]48bit, [^]dedupe)"
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
    fn every_other_1_9_3_flag_is_refused_by_name() {
        for n in NOT_IMPLEMENTED {
            let err = p(&[&format!("{n}=4096")]).unwrap_err().to_string();
            assert!(err.contains(n) && err.contains("not implemented"), "{err}");
        }
        let err = p(&["bogus"]).unwrap_err().to_string();
        assert!(err.contains("unknown extended option"), "{err}");
    }
}
