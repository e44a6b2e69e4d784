//! Text rendering of each view, and the JSON shape of the inode view.

use std::io::Write;

use anyhow::Result;
use erofs_reader::stats::Stats;
use erofs_reader::summary::{SuperblockInfo, ctime_utc, timestamp_utc};
use erofs_reader::{DirEntry, Extent, Image, Inode, Xattr, ZExtent, ZStorage, escape_bytes};
use serde::Serialize;

/// Prints the superblock summary with `dump.erofs -s` labels, plus our extra facts.
pub fn print_superblock(out: &mut impl Write, i: &SuperblockInfo) -> Result<()> {
    let row = |out: &mut dyn Write, label: &str, value: String| -> std::io::Result<()> {
        writeln!(out, "{:<46}{}", format!("{label}:"), value)
    };
    row(out, "Filesystem magic number", format!("0x{:08X}", i.magic))?;
    row(out, "Filesystem blocksize", i.block_size.to_string())?;
    row(out, "Filesystem blocks", i.blocks.to_string())?;
    row(
        out,
        "Filesystem inode metadata start block",
        i.meta_blkaddr.to_string(),
    )?;
    row(
        out,
        "Filesystem shared xattr metadata start block",
        i.xattr_blkaddr.to_string(),
    )?;
    row(out, "Filesystem root nid", i.root_nid.to_string())?;
    row(out, "Filesystem sb_size", i.sb_size.to_string())?;
    row(out, "Filesystem inode count", i.inodes.to_string())?;
    row(out, "Filesystem created", ctime_utc(i.build_time as i64))?;
    let mut features = i.compat_features.clone();
    features.extend(i.incompat_features.iter().cloned());
    row(out, "Filesystem features", features.join(" "))?;
    row(out, "Filesystem UUID", i.uuid.clone())?;
    if !i.label.is_empty() {
        row(out, "Filesystem label", i.label.clone())?;
    }
    match (i.checksum, i.checksum_ok) {
        (Some(c), Some(true)) => row(out, "Filesystem checksum", format!("0x{c:08X} (ok)"))?,
        (Some(c), _) => row(out, "Filesystem checksum", format!("0x{c:08X} (MISMATCH)"))?,
        _ => row(out, "Filesystem checksum", "none".into())?,
    }
    if i.xattr_prefix_count > 0 {
        row(
            out,
            "Filesystem long xattr prefixes",
            i.xattr_prefixes.join(" "),
        )?;
    }
    if let Some(f) = &i.fingerprint_xattr {
        row(out, "Filesystem fingerprint xattr", f.clone())?;
    }
    if let Some(p) = i.packed_nid {
        row(out, "Filesystem packed nid", p.to_string())?;
    }
    if i.extra_devices > 0 {
        row(out, "Filesystem extra devices", i.extra_devices.to_string())?;
    }
    row(
        out,
        "Filesystem oldest Linux to mount",
        i.oldest_linux.clone(),
    )?;
    Ok(())
}

fn histogram(out: &mut impl Write, title: &str, h: &[erofs_reader::stats::Bucket]) -> Result<()> {
    let total: u64 = h.iter().map(|b| b.count).sum();
    writeln!(out, "\n{title}:")?;
    writeln!(
        out,
        ">=(KB) .. <(KB)        count            ratio |distribution{:38}|",
        ""
    )?;
    for b in h {
        let ratio = if total == 0 {
            0.0
        } else {
            b.count as f64 * 100.0 / total as f64
        };
        let bar = "#".repeat((ratio / 2.0).round() as usize);
        let to = b.to_kib.map(|t| t.to_string()).unwrap_or_default();
        writeln!(
            out,
            "{:>6} .. {:<6}\t{:<10}\t{:>6.2}% |{:<50}|",
            b.from_kib, to, b.count, ratio, bar
        )?;
    }
    Ok(())
}

/// Prints statistics with `dump.erofs -S` labels.
pub fn print_stats(out: &mut impl Write, s: &Stats) -> Result<()> {
    let n = |k: &str| s.by_type.get(k).copied().unwrap_or(0);
    writeln!(out, "Filesystem total file count:\t\t{}", s.files)?;
    writeln!(out, "Filesystem distinct inode count:\t{}", s.inodes)?;
    writeln!(out, "Filesystem regular file count:\t\t{}", n("file"))?;
    writeln!(out, "Filesystem directory count:\t\t{}", n("dir"))?;
    writeln!(out, "Filesystem char dev count:\t\t{}", n("chardev"))?;
    writeln!(out, "Filesystem block dev count:\t\t{}", n("blockdev"))?;
    writeln!(out, "Filesystem FIFO file count:\t\t{}", n("fifo"))?;
    writeln!(out, "Filesystem SOCK file count:\t\t{}", n("socket"))?;
    writeln!(out, "Filesystem symlink file count:\t\t{}", n("symlink"))?;
    writeln!(
        out,
        "Filesystem compressed files:            {}",
        s.compressed_files
    )?;
    writeln!(
        out,
        "Filesystem uncompressed files:          {}",
        s.uncompressed_files
    )?;
    writeln!(
        out,
        "Filesystem total original file size:    {} Bytes",
        s.original_size
    )?;
    writeln!(
        out,
        "Filesystem total file size:             {} Bytes",
        s.on_disk_size
    )?;
    let rate = if s.original_size == 0 {
        100.0
    } else {
        s.on_disk_size as f64 * 100.0 / s.original_size as f64
    };
    writeln!(out, "Filesystem compress rate:               {rate:.2}%")?;
    if !s.compression.is_empty() {
        writeln!(out, "\nCompressed extents by storage:")?;
        writeln!(
            out,
            "{:<10} {:>8} {:>9} {:>14} {:>14} {:>8}",
            "kind", "files", "extents", "stored bytes", "decoded bytes", "ratio"
        )?;
        for (name, a) in &s.compression {
            let ratio = if a.decoded_bytes == 0 {
                0.0
            } else {
                a.compressed_bytes as f64 * 100.0 / a.decoded_bytes as f64
            };
            writeln!(
                out,
                "{name:<10} {:>8} {:>9} {:>14} {:>14} {ratio:>7.2}%",
                a.files, a.extents, a.compressed_bytes, a.decoded_bytes
            )?;
        }
    }
    histogram(
        out,
        "Original file size distribution",
        &s.original_size_histogram,
    )?;
    histogram(
        out,
        "On-disk file size distribution",
        &s.on_disk_size_histogram,
    )?;
    // Percentages are of all regular files, not of the top entries shown.
    let total = s.by_type.get("file").copied().unwrap_or(0);
    writeln!(
        out,
        "\nFile type distribution (top {} extensions, % of all {total} regular files):",
        s.extensions.len()
    )?;
    for (ext, count) in &s.extensions {
        let name = if ext.is_empty() {
            "(none)"
        } else {
            ext.as_str()
        };
        let ratio = if total == 0 {
            0.0
        } else {
            *count as f64 * 100.0 / total as f64
        };
        writeln!(out, "{name:<16}\t{count:<10}\t{ratio:>6.2}%")?;
    }
    let shown: u64 = s.extensions.iter().map(|e| e.1).sum();
    if shown < total {
        let rest = total - shown;
        let ratio = rest as f64 * 100.0 / total as f64;
        writeln!(out, "{:<16}\t{rest:<10}\t{ratio:>6.2}%", "(others)")?;
    }
    Ok(())
}

/// One inode, as `--nid`/`--path` show it.
#[derive(Debug, Serialize)]
pub struct InodeView {
    /// The path given with `--path` (none for `--nid`).
    pub path: Option<String>,
    /// The nid.
    pub nid: u64,
    /// Byte offset of the inode.
    pub offset: u64,
    /// `file`, `dir`, `chardev`, `blockdev`, `fifo`, `socket` or `symlink`.
    pub file_type: &'static str,
    /// `flat_plain`, `flat_inline`, `chunk_based`, `compressed_full`, `compressed_compact`.
    pub layout: &'static str,
    /// The raw layout number (0..4).
    pub layout_id: u16,
    /// Extended (64-byte) inode.
    pub extended: bool,
    /// 32 or 64.
    pub inode_size: u64,
    /// Xattr body size in bytes.
    pub xattr_size: u64,
    /// File size.
    pub size: u64,
    /// Bytes stored in the image (holes excluded).
    pub on_disk_size: Option<u64>,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Full `i_mode`.
    pub mode: u16,
    /// Permission bits in octal, e.g. `"0644"`.
    pub permissions: String,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Nanoseconds.
    pub mtime_nsec: u32,
    /// Device number of a device inode: `[major, minor]`.
    pub rdev: Option<(u32, u32)>,
    /// Symlink target.
    pub symlink_target: Option<String>,
    /// Compression algorithm of a compressed inode.
    pub compression: Option<String>,
    /// Xattrs.
    pub xattrs: Vec<Xattr>,
    /// Data extents (empty for compressed inodes).
    pub extents: Vec<Extent>,
    /// Extents of a compressed inode: decoded range, pcluster, storage (empty otherwise).
    pub compressed_extents: Vec<ZExtent>,
}

impl InodeView {
    /// Collects the view of `inode`.
    pub fn of(img: &Image, inode: &Inode, path: Option<&[u8]>) -> Result<Self> {
        let compression = if inode.is_compressed() {
            Some(img.compression_algorithm(inode)?)
        } else {
            None
        };
        let (extents, compressed_extents) = if inode.is_compressed() {
            (Vec::new(), img.z_extents(inode)?)
        } else {
            (img.data_extents(inode)?, Vec::new())
        };
        Ok(InodeView {
            path: path.map(escape_bytes),
            nid: inode.nid,
            offset: inode.offset,
            file_type: inode.file_type().name(),
            layout: inode.layout.name(),
            layout_id: inode.layout.raw(),
            extended: inode.extended,
            inode_size: inode.inode_size(),
            xattr_size: inode.xattr_size(),
            size: inode.size,
            on_disk_size: img.on_disk_size(inode).ok(),
            nlink: inode.nlink,
            uid: inode.uid,
            gid: inode.gid,
            mode: inode.mode,
            permissions: format!("{:04o}", inode.permissions()),
            mtime: inode.mtime,
            mtime_nsec: inode.mtime_nsec,
            rdev: inode.rdev(),
            symlink_target: if inode.is_symlink() {
                Some(escape_bytes(&img.readlink(inode)?))
            } else {
                None
            },
            compression,
            xattrs: img.xattrs(inode)?,
            extents,
            compressed_extents,
        })
    }
}

fn rwx(mode: u16) -> String {
    let mut s = String::new();
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if mode & (0o400 >> i) != 0 { c } else { '-' });
    }
    let mut b: Vec<char> = s.chars().collect();
    let special = [
        (0o4000, 2, 's', 'S'),
        (0o2000, 5, 's', 'S'),
        (0o1000, 8, 't', 'T'),
    ];
    for (bit, pos, lower, upper) in special {
        if mode & bit != 0 {
            b[pos] = if b[pos] == 'x' { lower } else { upper };
        }
    }
    b.into_iter().collect()
}

fn type_words(t: &str) -> &'static str {
    match t {
        // dump.erofs's words.
        "file" => "regular file",
        "dir" => "directory",
        "chardev" => "char dev",
        "blockdev" => "block dev",
        "fifo" => "FIFO file",
        "socket" => "SOCK file",
        "symlink" => "symlink file",
        _ => "unknown type",
    }
}

/// Prints one inode like `dump.erofs --nid`, plus xattrs and extents.
pub fn print_inode(out: &mut impl Write, v: &InodeView) -> Result<()> {
    writeln!(out, "File : {}", v.path.as_deref().unwrap_or("(by nid)"))?;
    let on_disk = v
        .on_disk_size
        .map(|s| s.to_string())
        .unwrap_or_else(|| "?".into());
    writeln!(
        out,
        "Size: {}  On-disk size: {}  {}",
        v.size,
        on_disk,
        type_words(v.file_type)
    )?;
    let ratio = match v.on_disk_size {
        Some(d) if v.size > 0 => format!("{:.2}%", d as f64 * 100.0 / v.size as f64),
        _ => "100.00%".into(),
    };
    writeln!(
        out,
        "NID: {}   Links: {}   Layout: {} ({})   Compression ratio: {}",
        v.nid, v.nlink, v.layout_id, v.layout, ratio
    )?;
    writeln!(
        out,
        "Inode size: {}   Extent size: 0   Xattr size: {}",
        v.inode_size, v.xattr_size
    )?;
    writeln!(
        out,
        "Uid: {}   Gid: {}  Access: {}/{}",
        v.uid,
        v.gid,
        v.permissions,
        rwx(v.mode)
    )?;
    writeln!(out, "Timestamp: {}", timestamp_utc(v.mtime, v.mtime_nsec))?;
    if let Some((ma, mi)) = v.rdev {
        writeln!(out, "Device: {ma}:{mi}")?;
    }
    if let Some(t) = &v.symlink_target {
        writeln!(out, "Symlink target: {t}")?;
    }
    if let Some(c) = &v.compression {
        writeln!(out, "Compression: {c}")?;
    }
    if !v.xattrs.is_empty() {
        writeln!(out, "\nXattrs ({}):", v.xattrs.len())?;
        print_xattrs(out, &v.xattrs)?;
    }
    if !v.extents.is_empty() {
        writeln!(
            out,
            "\n Ext:   logical offset   |  length :     physical offset    |  length  | kind"
        )?;
        for (i, e) in v.extents.iter().enumerate() {
            let (ps, pe) = match e.physical {
                Some(p) => (p.to_string(), (p + e.length).to_string()),
                None => ("-".into(), "-".into()),
            };
            writeln!(
                out,
                "{:>4}: {:>8}..{:>8} | {:>7} : {:>10}..{:>10} | {:>7}  | {:?}",
                i,
                e.logical,
                e.end(),
                e.length,
                ps,
                pe,
                e.length,
                e.kind
            )?;
        }
        writeln!(
            out,
            "{}: {} extents found",
            v.path.as_deref().unwrap_or("(by nid)"),
            v.extents.len()
        )?;
    }
    if !v.compressed_extents.is_empty() {
        print_compressed_extents(out, v)?;
    }
    Ok(())
}

/// The extent table of a compressed inode, like `dump.erofs -e` plus the pcluster's kind.
fn print_compressed_extents(out: &mut impl Write, v: &InodeView) -> Result<()> {
    writeln!(
        out,
        "\n Ext:   logical offset   |  length :     physical offset    |  length  | lcluster | storage"
    )?;
    for (i, e) in v.compressed_extents.iter().enumerate() {
        let (ps, pe) = match e.storage {
            ZStorage::Fragment { offset } => (format!("packed+{offset}"), String::new()),
            _ => (e.physical.to_string(), (e.physical + e.plen).to_string()),
        };
        let mut kind = e.kind_name().to_string();
        if let ZStorage::Raw { interlaced: true } = e.storage {
            kind.push_str(" interlaced");
        }
        if e.inline {
            kind.push_str(" inline");
        }
        if e.partial {
            kind.push_str(" partial");
        }
        writeln!(
            out,
            "{:>4}: {:>8}..{:>8} | {:>7} : {:>10}..{:>10} | {:>7}  | {:<8} | {}",
            i,
            e.logical,
            e.end(),
            e.length,
            ps,
            pe,
            e.plen,
            e.lcluster_type.name(),
            kind
        )?;
    }
    writeln!(
        out,
        "{}: {} extents found",
        v.path.as_deref().unwrap_or("(by nid)"),
        v.compressed_extents.len()
    )?;
    Ok(())
}

/// Prints a directory listing like `dump.erofs --ls`.
pub fn print_ls(out: &mut impl Write, entries: &[DirEntry]) -> Result<()> {
    writeln!(out, "{:>10} {:<8}  FILENAME", "NID", "TYPE")?;
    for e in entries {
        writeln!(
            out,
            "{:>10} {:<8}  {}",
            e.nid,
            e.file_type.name(),
            escape_bytes(&e.name)
        )?;
    }
    Ok(())
}

/// A value as text when it is printable UTF-8, else as `0x` + hex.
fn printable(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => format!(
            "0x{}",
            v.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

/// Prints xattrs, one per line: `name = value` (shared ones marked).
pub fn print_xattrs(out: &mut impl Write, xattrs: &[Xattr]) -> Result<()> {
    for x in xattrs {
        writeln!(
            out,
            "  {}{} = {}",
            escape_bytes(&x.name),
            if x.shared { " (shared)" } else { "" },
            printable(&x.value)
        )?;
    }
    Ok(())
}

/// The `--map` view: one line per range (hex offsets, length, kind, owners), then the
/// bytes per kind and their sum, which is the image size.
pub fn print_map(out: &mut impl Write, m: &erofs_reader::space::SpaceMap) -> Result<()> {
    writeln!(
        out,
        "{:>10} {:>10} {:>10}  {:<20} OWNERS",
        "START", "END", "BYTES", "KIND"
    )?;
    for r in &m.ranges {
        writeln!(
            out,
            "{:#010x} {:#010x} {:>10}  {:<20} {}",
            r.start,
            r.end,
            r.len(),
            r.kind.name(),
            r.owners.join(", ")
        )?;
    }
    writeln!(out)?;
    for (kind, bytes) in &m.totals {
        writeln!(out, "{kind:<20} {bytes:>12}")?;
    }
    let sum: u64 = m.totals.values().sum();
    writeln!(
        out,
        "{:<20} {:>12} (image size {})",
        "total", sum, m.image_size
    )?;
    Ok(())
}
