//! `--verity=ROOTHASH`: checks a dm-verity hash tree made by `mkfs.erofs-rs --verity` (or
//! `veritysetup format` with the same layout) and every data block against it, in parallel.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use erofs_reader::{ExtentKind, Image, Progress};
use erofs_verity::{
    DATA_BLOCK_SIZE, Digest, HASH_BLOCK_SIZE, SUPERBLOCK_SIZE, VerifyError, VeritySuperblock,
    check_tree, first_bad_block,
};
use rayon::prelude::*;
use serde::Serialize;

/// What the verity check found.
#[derive(Debug, Serialize)]
pub struct VerityOutcome {
    /// Data blocks covered by the tree.
    pub data_blocks: u64,
    /// Where the verity superblock is: in the image, or at 0 in the tree file.
    pub hash_offset: u64,
    /// The tree file, when the tree is not appended.
    pub tree_file: Option<PathBuf>,
    /// `None` when everything matches.
    pub error: Option<String>,
    /// The first bad data block, if any.
    pub bad_block: Option<u64>,
    /// The file that owns the first bad block, if it holds file data.
    pub bad_block_owner: Option<String>,
}

impl VerityOutcome {
    /// Whether the tree and every block matched.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Bytes hashed per parallel job.
const CHUNK: u64 = 1 << 20;

/// Checks the image at `path` (opened as `img`) against `root_hex`. Asks `progress`
/// before each chunk whether to stop (the error is then [`erofs_reader::Cancelled`]).
pub fn verify(
    img: &Image,
    path: &Path,
    root_hex: &str,
    tree_file: Option<&Path>,
    progress: &dyn Progress,
) -> Result<VerityOutcome> {
    let root: Digest = erofs_verity::from_hex(root_hex)
        .and_then(|v| v.try_into().ok())
        .with_context(|| format!("--verity={root_hex}: a sha256 root hash is 64 hex digits"))?;
    let image = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let fs_bytes = img.superblock().filesystem_bytes();
    let data_blocks = fs_bytes.div_ceil(u64::from(DATA_BLOCK_SIZE));
    let (tree_src, tree_name, sb_offset) = match tree_file {
        Some(p) => (
            File::open(p).with_context(|| format!("opening the tree file {}", p.display()))?,
            p.display().to_string(),
            0,
        ),
        None => (
            image.try_clone()?,
            path.display().to_string(),
            data_blocks * u64::from(DATA_BLOCK_SIZE),
        ),
    };
    let mut sb_bytes = [0u8; SUPERBLOCK_SIZE];
    tree_src.read_exact_at(&mut sb_bytes, sb_offset).with_context(|| {
        format!(
            "{tree_name}: no dm-verity superblock at byte {sb_offset} (the end of the filesystem): \
             was the image built with --verity{}?",
            if tree_file.is_some() { " --verity-file" } else { "" }
        )
    })?;
    let Some(sb) = VeritySuperblock::decode(&sb_bytes) else {
        bail!(
            "{tree_name}: no dm-verity superblock (format 1, sha256, 4096-byte blocks) at byte \
             {sb_offset}: was the image built with --verity?"
        );
    };
    let mut outcome = VerityOutcome {
        data_blocks: sb.data_blocks,
        hash_offset: sb_offset,
        tree_file: tree_file.map(Path::to_path_buf),
        error: None,
        bad_block: None,
        bad_block_owner: None,
    };
    if sb.data_blocks != data_blocks {
        outcome.error = Some(format!(
            "the verity superblock covers {} data blocks, the filesystem needs {data_blocks}",
            sb.data_blocks
        ));
        return Ok(outcome);
    }
    // The tree is small (1/128 of the data, and less): read it whole, bounded by the file.
    let tree_start = sb_offset + u64::from(HASH_BLOCK_SIZE);
    let tree_len = tree_src.metadata()?.len().saturating_sub(tree_start);
    let mut tree =
        vec![0u8; tree_len.min(data_blocks * 64 + 2 * u64::from(HASH_BLOCK_SIZE)) as usize];
    tree_src
        .read_exact_at(&mut tree, tree_start)
        .with_context(|| format!("reading the hash tree of {tree_name}"))?;
    let leaves = match check_tree(data_blocks, &tree, &sb.salt, &root) {
        Ok(l) => l,
        Err(e) => {
            outcome.error = Some(e.to_string());
            return Ok(outcome);
        }
    };
    let image_len = image.metadata()?.len();
    let bs = u64::from(DATA_BLOCK_SIZE);
    let chunks = (data_blocks * bs).div_ceil(CHUNK);
    let first_bad = (0..chunks)
        .into_par_iter()
        .map(|c| -> Result<Option<u64>> {
            progress.check_cancelled()?;
            let start = c * CHUNK;
            let end = ((c + 1) * CHUNK).min(data_blocks * bs);
            let mut buf = vec![0u8; (end - start) as usize];
            let avail = image_len.saturating_sub(start).min(end - start) as usize;
            image
                .read_exact_at(&mut buf[..avail], start)
                .with_context(|| format!("reading {}", path.display()))?;
            Ok(first_bad_block(&sb.salt, &leaves, start / bs, &buf))
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .next();
    if let Some(b) = first_bad {
        outcome.error = Some(VerifyError::DataBlock(b).to_string());
        outcome.bad_block = Some(b);
        outcome.bad_block_owner = owner_of(img, b * bs, bs);
    }
    Ok(outcome)
}

/// The first file whose data lies in `[start, start + len)` of the image.
fn owner_of(img: &Image, start: u64, len: u64) -> Option<String> {
    let end = start + len;
    for entry in img.walk().ok()?.flatten() {
        if !entry.inode.has_data() || entry.inode.is_compressed() {
            continue;
        }
        let Ok(extents) = img.data_extents(&entry.inode) else {
            continue;
        };
        let hit = extents.iter().any(|e| match (e.kind, e.physical) {
            (ExtentKind::Mapped | ExtentKind::Inline, Some(p)) => p < end && start < p + e.length,
            _ => false,
        });
        if hit {
            return Some(erofs_reader::escape_bytes(&entry.path));
        }
    }
    None
}

/// The report's lines.
pub fn print(outcome: &VerityOutcome, image: &str) {
    match &outcome.error {
        None => println!(
            "fsck.erofs-rs: {image}: dm-verity: root hash matches, {} data blocks verified",
            outcome.data_blocks
        ),
        Some(e) => {
            let owner = match (&outcome.bad_block, &outcome.bad_block_owner) {
                (Some(_), Some(o)) => format!("; it holds data of {o}"),
                (Some(_), None) => "; it holds no file data (metadata or padding)".to_string(),
                _ => String::new(),
            };
            eprintln!("fsck.erofs-rs: {image}: dm-verity: {e}{owner}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use erofs_reader::{CancelToken, Cancelled, NoProgress};
    use erofs_testkit::{build_verity_image, write_file};

    #[test]
    fn a_cancelled_verity_check_stops_with_cancelled() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        write_file(&src, "data.bin", &vec![0x3c; 3 << 20]);
        let path = dir.path().join("v.erofs");
        let report = build_verity_image(&src, &path);
        let root = erofs_verity::to_hex(&report.root_hash);
        let img = Image::open(&path).unwrap();
        let outcome = verify(&img, &path, &root, None, &NoProgress).unwrap();
        assert!(outcome.ok(), "{:?}", outcome.error);

        let token = CancelToken::new();
        token.cancel();
        let err = verify(&img, &path, &root, None, &token).unwrap_err();
        assert_eq!(err.downcast_ref::<Cancelled>(), Some(&Cancelled), "{err:#}");
    }
}
