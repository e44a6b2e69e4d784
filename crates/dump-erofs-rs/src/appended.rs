//! What lies after the filesystem in an image file: a dm-verity hash tree appended by
//! `mkfs.erofs-rs --verity` (or `veritysetup format` at that offset), or unknown bytes.

use erofs_reader::Image;
use erofs_verity::{DATA_BLOCK_SIZE, SUPERBLOCK_SIZE, VeritySuperblock};
use serde::Serialize;

/// Bytes after the filesystem's last block.
#[derive(Debug, Serialize)]
pub struct Appended {
    /// Where the filesystem ends.
    pub offset: u64,
    /// How many bytes follow it.
    pub bytes: u64,
    /// The dm-verity tree found there, if any.
    pub verity: Option<AppendedVerity>,
}

/// A dm-verity superblock and tree after the filesystem.
#[derive(Debug, Serialize)]
pub struct AppendedVerity {
    /// Byte offset of the verity superblock (veritysetup's `--hash-offset`).
    pub hash_offset: u64,
    /// Superblock and tree bytes, to the end of the file.
    pub size: u64,
    /// Data blocks the tree covers.
    pub data_blocks: u64,
    /// The salt, in hex.
    pub salt: String,
    /// `sha256`.
    pub hash_algorithm: &'static str,
}

/// Looks past the filesystem; `None` when the file ends with it.
pub fn detect(img: &Image) -> Option<Appended> {
    let fs_end = img.superblock().filesystem_bytes();
    let len = img.len();
    if len <= fs_end {
        return None;
    }
    // The tree starts at the next data block boundary; the gap is zero padding.
    let hash_offset = fs_end.div_ceil(u64::from(DATA_BLOCK_SIZE)) * u64::from(DATA_BLOCK_SIZE);
    let mut sb = [0u8; SUPERBLOCK_SIZE];
    // The tree lies outside the filesystem, so it is read from the source itself; a short
    // read past the end of the file is an error, not a verity superblock.
    let verity = (hash_offset + SUPERBLOCK_SIZE as u64 <= len)
        .then(|| img.source().read_exact_at(&mut sb, hash_offset).ok())
        .flatten()
        .and_then(|()| VeritySuperblock::decode(&sb))
        .map(|sb| AppendedVerity {
            hash_offset,
            size: len - hash_offset,
            data_blocks: sb.data_blocks,
            salt: erofs_verity::to_hex(&sb.salt),
            hash_algorithm: "sha256",
        });
    Some(Appended {
        offset: fs_end,
        bytes: len - fs_end,
        verity,
    })
}

/// Rows in the superblock summary's style.
pub fn print(out: &mut impl std::io::Write, a: &Appended) -> std::io::Result<()> {
    let row = |out: &mut dyn std::io::Write, label: &str, value: String| {
        writeln!(out, "{:<46}{}", format!("{label}:"), value)
    };
    row(
        out,
        "Appended after the filesystem",
        format!("{} bytes at offset {}", a.bytes, a.offset),
    )?;
    match &a.verity {
        Some(v) => row(
            out,
            "Appended dm-verity hash tree",
            format!(
                "{} bytes at offset {} (--hash-offset), {} data blocks, {}, salt {}",
                v.size,
                v.hash_offset,
                v.data_blocks,
                v.hash_algorithm,
                if v.salt.is_empty() { "none" } else { &v.salt }
            ),
        ),
        None => row(out, "Appended data", "not a dm-verity tree".into()),
    }
}
