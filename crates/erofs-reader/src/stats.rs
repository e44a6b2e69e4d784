//! Image statistics behind `dump.erofs-rs -S`, counted the way `dump.erofs -S` counts:
//! once per path (a file with three hard links counts three times).

use std::collections::BTreeMap;

use erofs_format::FileType;

use crate::error::Result;
use crate::image::Image;
use crate::progress::Progress;

/// Upper bounds (exclusive, in KiB) of the size histogram buckets, as in `dump.erofs`:
/// `[0,1) [1,2) [2,4) ... [16384,32768) [32768,∞)`.
pub const SIZE_BUCKETS_KIB: [u64; 16] = [
    1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768,
];

/// One histogram bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Bucket {
    /// Lower bound in KiB (inclusive).
    pub from_kib: u64,
    /// Upper bound in KiB (exclusive); `None` for the last bucket.
    pub to_kib: Option<u64>,
    /// Regular files in the bucket.
    pub count: u64,
}

/// Statistics of an image.
#[derive(Clone, Debug, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Stats {
    /// Paths reached (every type).
    pub files: u64,
    /// Distinct inodes reached.
    pub inodes: u64,
    /// Paths per type: `file`, `dir`, `chardev`, `blockdev`, `fifo`, `socket`, `symlink`.
    pub by_type: BTreeMap<String, u64>,
    /// Paths whose inode is compressed.
    pub compressed_files: u64,
    /// Paths whose inode is not compressed.
    pub uncompressed_files: u64,
    /// Sum of regular-file sizes (per path).
    pub original_size: u64,
    /// Sum of bytes regular files occupy in the image (per path).
    pub on_disk_size: u64,
    /// Histogram of regular-file sizes.
    pub original_size_histogram: Vec<Bucket>,
    /// Histogram of on-disk sizes.
    pub on_disk_size_histogram: Vec<Bucket>,
    /// Compressed regular files by how their extents are stored: the algorithm name,
    /// `plain` (raw pclusters) or `fragment` (in the packed inode). Distinct inodes.
    pub compression: BTreeMap<String, AlgorithmStats>,
    /// Regular files per file-name extension (`""` for none), most frequent first, top 20.
    pub extensions: Vec<(String, u64)>,
}

/// Per-algorithm counts of [`Stats::compression`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct AlgorithmStats {
    /// Files with at least one such extent.
    pub files: u64,
    /// Extents.
    pub extents: u64,
    /// Bytes of their pclusters (a pcluster shared by several extents of one file counted
    /// once; 0 for fragments).
    pub compressed_bytes: u64,
    /// Bytes they decode to.
    pub decoded_bytes: u64,
}

fn buckets() -> Vec<Bucket> {
    let mut v = Vec::new();
    let mut from = 0;
    for to in SIZE_BUCKETS_KIB {
        v.push(Bucket {
            from_kib: from,
            to_kib: Some(to),
            count: 0,
        });
        from = to;
    }
    v.push(Bucket {
        from_kib: from,
        to_kib: None,
        count: 0,
    });
    v
}

fn add(h: &mut [Bucket], size: u64) {
    let kib = size / 1024;
    let i = SIZE_BUCKETS_KIB
        .iter()
        .position(|&to| kib < to)
        .unwrap_or(SIZE_BUCKETS_KIB.len());
    h[i].count += 1;
}

fn count_extents(
    img: &Image,
    inode: &crate::Inode,
    by: &mut BTreeMap<String, AlgorithmStats>,
) -> Result<()> {
    let mut pclusters = std::collections::BTreeSet::new();
    let mut kinds = std::collections::BTreeSet::new();
    for x in img.z_extents(inode)? {
        let a = by.entry(x.kind_name().to_owned()).or_default();
        a.extents += 1;
        a.decoded_bytes = a.decoded_bytes.saturating_add(x.length);
        if x.plen > 0 && pclusters.insert((x.physical, x.plen)) {
            a.compressed_bytes = a.compressed_bytes.saturating_add(x.plen);
        }
        if kinds.insert(x.kind_name()) {
            a.files += 1;
        }
    }
    Ok(())
}

/// Walks the image and counts. Stops at the first error, or with [`Error::Cancelled`]
/// when `progress` says so (it is asked before each entry).
///
/// [`Error::Cancelled`]: crate::Error::Cancelled
pub fn stats(img: &Image, progress: &dyn Progress) -> Result<Stats> {
    let mut s = Stats {
        original_size_histogram: buckets(),
        on_disk_size_histogram: buckets(),
        ..Stats::default()
    };
    let mut seen = crate::nidmap::NidSet::default();
    let mut ext: BTreeMap<String, u64> = BTreeMap::new();
    progress.start(Some(img.superblock().inos.get()), None);
    let mut batch = crate::progress::Batched::new(progress);
    for e in img.walk()? {
        if let Err(cancelled) = progress.check_cancelled() {
            progress.finish();
            return Err(cancelled.into());
        }
        let e = e?;
        batch.step();
        s.files += 1;
        let first = seen.insert(e.nid);
        if first {
            s.inodes += 1;
        }
        let ft = e.inode.file_type();
        *s.by_type.entry(ft.name().to_owned()).or_default() += 1;
        if e.inode.is_compressed() {
            s.compressed_files += 1;
            if ft == FileType::Regular && first {
                count_extents(img, &e.inode, &mut s.compression)?;
            }
        } else {
            s.uncompressed_files += 1;
        }
        if ft == FileType::Regular {
            let on_disk = img.on_disk_size(&e.inode)?;
            s.original_size = s.original_size.saturating_add(e.inode.size);
            s.on_disk_size = s.on_disk_size.saturating_add(on_disk);
            add(&mut s.original_size_histogram, e.inode.size);
            add(&mut s.on_disk_size_histogram, on_disk);
            let name = e.path.rsplit(|&b| b == b'/').next().unwrap_or(&[]);
            let x = match name.iter().rposition(|&b| b == b'.') {
                Some(i) if i > 0 => crate::escape_bytes(&name[i..]),
                _ => String::new(),
            };
            *ext.entry(x).or_default() += 1;
        }
    }
    batch.flush();
    progress.finish();
    let mut v: Vec<(String, u64)> = ext.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(20);
    s.extensions = v;
    Ok(s)
}
