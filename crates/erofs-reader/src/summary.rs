//! The superblock summary behind `dump.erofs-rs` (the facts `dump.erofs -s` prints, plus
//! feature names and the oldest kernel that can mount the image).

use crate::image::{Image, compat_names, incompat_names};

/// Superblock facts, decoded.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SuperblockInfo {
    /// `0xE0F5E1E2`.
    pub magic: u32,
    /// Block size in bytes.
    pub block_size: u64,
    /// Block count of the primary device (`blocks_lo`).
    pub blocks: u64,
    /// Image file size in bytes.
    pub image_size: u64,
    /// Start block of the nid space.
    pub meta_blkaddr: u32,
    /// Start block of the shared xattr area.
    pub xattr_blkaddr: u32,
    /// Root directory nid.
    pub root_nid: u64,
    /// On-disk superblock size (128 + 16 per extension slot).
    pub sb_size: usize,
    /// Inode count (`inos`).
    pub inodes: u64,
    /// Base time of compact inodes (`epoch`), seconds since the Unix epoch: what
    /// `dump.erofs` prints as "created".
    pub build_time: u64,
    /// Nanoseconds of compact inodes (`fixed_nsec`).
    pub build_time_nsec: u32,
    /// Raw compat bits.
    pub feature_compat: u32,
    /// Raw incompat bits.
    pub feature_incompat: u32,
    /// Names of the compat bits set.
    pub compat_features: Vec<String>,
    /// Names of the incompat bits set.
    pub incompat_features: Vec<String>,
    /// Oldest Linux release that can mount the image, e.g. `"5.4"`.
    pub oldest_linux: String,
    /// Volume UUID, `8-4-4-4-12` hex.
    pub uuid: String,
    /// Volume label (non-UTF-8 bytes escaped).
    pub label: String,
    /// Stored superblock checksum, when compat `SB_CHKSUM` is set.
    pub checksum: Option<u32>,
    /// Whether the stored checksum matches block 0 (`None` without `SB_CHKSUM`).
    pub checksum_ok: Option<bool>,
    /// Number of long xattr prefixes.
    pub xattr_prefix_count: u8,
    /// Full names of the long xattr prefixes (non-UTF-8 bytes escaped).
    pub xattr_prefixes: Vec<String>,
    /// Nid of the packed inode, if any.
    pub packed_nid: Option<u64>,
    /// Number of extra devices.
    pub extra_devices: u16,
    /// The full name of the fingerprint xattr when compat `ISHARE_XATTRS` is set.
    pub fingerprint_xattr: Option<String>,
}

/// Formats a UUID as `8-4-4-4-12` lowercase hex.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl SuperblockInfo {
    /// Collects the facts of `img`.
    pub fn of(img: &Image) -> Self {
        let sb = img.superblock();
        let (maj, min) = sb.incompat().oldest_linux();
        let packed = sb.packed_nid.get();
        SuperblockInfo {
            magic: sb.magic.get(),
            block_size: img.block_size(),
            blocks: u64::from(sb.blocks_lo.get()),
            image_size: img.len(),
            meta_blkaddr: sb.meta_blkaddr.get(),
            xattr_blkaddr: sb.xattr_blkaddr.get(),
            root_nid: img.root_nid(),
            sb_size: sb.on_disk_size(),
            inodes: sb.inos.get(),
            build_time: sb.epoch.get(),
            build_time_nsec: sb.fixed_nsec.get(),
            feature_compat: sb.feature_compat.get(),
            feature_incompat: sb.feature_incompat.get(),
            compat_features: compat_names(sb.feature_compat.get()),
            incompat_features: incompat_names(sb.feature_incompat.get()),
            oldest_linux: format!("{maj}.{min}"),
            uuid: format_uuid(&sb.uuid),
            label: crate::escape_bytes(sb.label()),
            checksum: img.checksum().map(|c| c.0),
            checksum_ok: img.checksum().map(|(s, c)| s == c),
            xattr_prefix_count: sb.xattr_prefix_count,
            xattr_prefixes: img
                .long_prefixes()
                .iter()
                .map(|p| crate::escape_bytes(&p.full_name()))
                .collect(),
            packed_nid: (packed != 0).then_some(packed),
            extra_devices: sb.extra_devices.get(),
            fingerprint_xattr: img
                .fingerprint_name()
                .ok()
                .flatten()
                .map(|n| crate::escape_bytes(&n)),
        }
    }
}

/// Formats seconds since the Unix epoch like C `ctime()` in UTC, without the newline:
/// `Thu Jan  1 00:00:00 1970`.
pub fn ctime_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        WD[days.rem_euclid(7) as usize],
        MO[(m - 1) as usize],
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        y
    )
}

/// Formats seconds and nanoseconds as `YYYY-MM-DD HH:MM:SS.nnnnnnnnn` (UTC).
pub fn timestamp_utc(secs: i64, nsec: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{nsec:09}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_matches_c_for_known_instants() {
        assert_eq!(ctime_utc(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(ctime_utc(1_700_000_000), "Tue Nov 14 22:13:20 2023");
        assert_eq!(ctime_utc(951_782_400), "Tue Feb 29 00:00:00 2000");
        assert_eq!(
            timestamp_utc(1_600_000_000, 5),
            "2020-09-13 12:26:40.000000005"
        );
    }
}
