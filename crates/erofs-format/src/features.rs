//! Feature bits (§3): names, what this project understands, and the oldest kernel per bit.

macro_rules! feature_set {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $flag:ident = $bit:expr, $str:expr;)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
        pub struct $name(u32);

        impl $name {
            $($(#[$fmeta])* pub const $flag: Self = Self($bit);)*
            /// Every bit with a name, lowest first.
            pub const NAMED: &'static [(Self, &'static str)] = &[$((Self::$flag, $str)),*];

            /// Wraps raw bits, keeping unknown ones.
            pub const fn from_bits(bits: u32) -> Self { Self(bits) }
            /// The raw bits.
            pub const fn bits(self) -> u32 { self.0 }
            /// The empty set.
            pub const fn empty() -> Self { Self(0) }
            /// Whether every bit of `other` is set.
            pub const fn contains(self, other: Self) -> bool { self.0 & other.0 == other.0 }
            /// Union.
            pub const fn union(self, other: Self) -> Self { Self(self.0 | other.0) }
            /// Sets the bits of `other`.
            pub fn insert(&mut self, other: Self) { self.0 |= other.0 }
            /// Clears the bits of `other`.
            pub fn remove(&mut self, other: Self) { self.0 &= !other.0 }
            /// Names of the known bits that are set, lowest bit first. Aliases share a bit;
            /// only the first name of a bit is listed.
            pub fn names(self) -> Vec<&'static str> {
                let mut seen = 0u32;
                let mut out = Vec::new();
                for (flag, name) in Self::NAMED {
                    if self.0 & flag.0 != 0 && seen & flag.0 == 0 {
                        seen |= flag.0;
                        out.push(*name);
                    }
                }
                out
            }
            /// [`Self::names`], then `unknown(0x...)` for each bit without a name, lowest
            /// first, so that nothing set goes unreported.
            pub fn names_with_unknown(self) -> Vec<String> {
                let mut out: Vec<String> = self.names().into_iter().map(str::to_owned).collect();
                let unknown = self.unknown();
                for bit in 0..32 {
                    if unknown & (1 << bit) != 0 {
                        out.push(format!("unknown({:#x})", 1u32 << bit));
                    }
                }
                out
            }
            /// Bits that have no name here.
            pub fn unknown(self) -> u32 {
                let mut known = 0u32;
                for (flag, _) in Self::NAMED { known |= flag.0; }
                self.0 & !known
            }
        }

        impl std::ops::BitOr for $name {
            type Output = Self;
            fn bitor(self, rhs: Self) -> Self { self.union(rhs) }
        }
    };
}

feature_set! {
    /// Compat feature bits: readers ignore bits they do not know.
    Compat {
        /// The superblock checksum is valid.
        SB_CHKSUM = 0x01, "sb_csum";
        /// Stored timestamps are mtime, not ctime.
        MTIME = 0x02, "mtime";
        /// Inode xattr headers carry a name Bloom filter.
        XATTR_FILTER = 0x04, "xattr_filter";
        /// The shared xattr area is inside the metabox inode.
        SHARED_EA_IN_METABOX = 0x08, "shared_ea_in_metabox";
        /// Long prefix records are plain on-disk bytes.
        PLAIN_XATTR_PFX = 0x10, "plain_xattr_pfx";
        /// Regular files carry content-fingerprint xattrs (§15).
        ISHARE_XATTRS = 0x20, "ishare_xattrs";
    }
}

feature_set! {
    /// Incompat feature bits: a reader must refuse bits it does not know.
    Incompat {
        /// LZ4 pclusters are zero-padded at the front (kernel: `ZERO_PADDING`).
        LZ4_0PADDING = 0x001, "0padding";
        /// Compression configurations follow the superblock.
        COMPR_CFGS = 0x002, "compr_cfgs";
        /// Alias of `COMPR_CFGS`.
        BIG_PCLUSTER = 0x002, "big_pcluster";
        /// Chunk-based files.
        CHUNKED_FILE = 0x004, "chunked_file";
        /// A device table.
        DEVICE_TABLE = 0x008, "device_table";
        /// Alias of `DEVICE_TABLE`.
        COMPR_HEAD2 = 0x008, "compr_head2";
        /// Inline compressed tails.
        ZTAILPACKING = 0x010, "ztailpacking";
        /// Fragments in the packed inode.
        FRAGMENTS = 0x020, "fragments";
        /// Alias of `FRAGMENTS`.
        DEDUPE = 0x020, "dedupe";
        /// Long xattr name prefixes.
        XATTR_PREFIXES = 0x040, "xattr_prefixes";
        /// 48-bit block addresses.
        BIT48 = 0x080, "48bit";
        /// Metadata in a metabox inode.
        METABOX = 0x100, "metabox";
    }
}

impl Incompat {
    /// Bits this project's reader reads: all but `METABOX`.
    pub const READ_SUPPORTED: Self = Self(0x0FF);

    /// Bits this project's builder writes: 0padding and compression configs (compressed
    /// files), chunk-based files and the device table (`--tar=i` indexes), long xattr name
    /// prefixes, inline compressed tails (`-E ztailpacking`) and the 48-bit layout
    /// (`-E 48bit`). A subset of [`Incompat::READ_SUPPORTED`]: whatever is written can be read.
    pub const WRITE_SUPPORTED: Self = Self(
        Self::LZ4_0PADDING.0
            | Self::COMPR_CFGS.0
            | Self::CHUNKED_FILE.0
            | Self::DEVICE_TABLE.0
            | Self::XATTR_PREFIXES.0
            | Self::ZTAILPACKING.0
            // Also DEDUPE: `-E dedupe` extents that take a prefix of a pcluster (PARTIAL_REF).
            | Self::FRAGMENTS.0
            | Self::BIT48.0,
    );

    /// Bits erofs-utils 1.5 (Debian 12) knows; it refuses anything else.
    pub const KNOWN_TO_EROFS_UTILS_1_5: Self = Self(0x1F);

    /// Bits Linux 6.12 knows.
    pub const KNOWN_TO_LINUX_6_12: Self = Self(0x7F);

    /// The oldest Linux release that can mount an image with these bits, as
    /// `(major, minor)`. Compat bits do not raise it.
    pub fn oldest_linux(self) -> (u32, u32) {
        const TABLE: [(u32, (u32, u32)); 9] = [
            (0x001, (5, 4)),
            (0x002, (5, 13)),
            (0x004, (5, 15)),
            (0x008, (5, 16)),
            (0x010, (5, 17)),
            (0x020, (6, 1)),
            (0x040, (6, 4)),
            (0x080, (6, 15)),
            (0x100, (6, 17)),
        ];
        let mut oldest = (5, 4);
        for (bit, version) in TABLE {
            if self.0 & bit != 0 && version > oldest {
                oldest = version;
            }
        }
        oldest
    }
}

const _: () = assert!(
    Incompat::READ_SUPPORTED.contains(Incompat::WRITE_SUPPORTED),
    "the reader reads every bit the builder writes"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprinted_uncompressed_image_needs_linux_6_4() {
        assert_eq!(Incompat::XATTR_PREFIXES.oldest_linux(), (6, 4));
        assert_eq!(Incompat::empty().oldest_linux(), (5, 4));
        assert_eq!(
            (Incompat::LZ4_0PADDING | Incompat::BIT48).oldest_linux(),
            (6, 15)
        );
    }

    #[test]
    fn aliases_are_named_once_and_unknown_bits_are_kept() {
        let f = Incompat::from_bits(0x22 | 0x400);
        assert_eq!(f.names(), vec!["compr_cfgs", "fragments"]);
        assert_eq!(f.unknown(), 0x400);
        assert_eq!(
            f.names_with_unknown(),
            vec!["compr_cfgs", "fragments", "unknown(0x400)"]
        );
        assert_eq!(
            Compat::from_bits(0x37).names(),
            vec![
                "sb_csum",
                "mtime",
                "xattr_filter",
                "plain_xattr_pfx",
                "ishare_xattrs"
            ]
        );
    }
}
