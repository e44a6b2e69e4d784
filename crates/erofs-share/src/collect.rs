//! Gathering [`ImageFacts`] and [`FileFacts`] from images.

use std::collections::BTreeMap;

use erofs_format::Compat;
use erofs_reader::{Image, Inode, Result, escape_bytes};

use crate::{FileFacts, ImageFacts, ReadPath};

/// The superblock facts of `image`, named `path` in the report.
pub fn image_facts(path: &str, image: &Image) -> ImageFacts {
    let sb = image.superblock();
    ImageFacts {
        path: path.to_string(),
        block_size: u32::try_from(image.block_size()).unwrap_or(u32::MAX),
        ishare_compat: sb.compat().contains(Compat::ISHARE_XATTRS),
        prefix_count: sb.xattr_prefix_count,
        ishare_prefix_id: sb.ishare_xattr_prefix_id,
        fingerprint_name: image.fingerprint_name().ok().flatten(),
    }
}

/// One regular-file inode with every path that reaches it.
#[derive(Clone, Debug)]
pub struct RegularFile {
    /// The inode.
    pub inode: Inode,
    /// Every path of the inode, sorted (several for hard links).
    pub paths: Vec<Vec<u8>>,
}

/// Every regular-file inode of `image`, by nid. Walk errors are returned; a corrupt image
/// should go through fsck first.
pub fn regular_files(image: &Image) -> Result<Vec<RegularFile>> {
    let mut by_nid: BTreeMap<u64, RegularFile> = BTreeMap::new();
    for entry in image.walk()? {
        let entry = entry?;
        if entry.inode.is_file() {
            by_nid
                .entry(entry.nid)
                .or_insert_with(|| RegularFile {
                    inode: entry.inode.clone(),
                    paths: Vec::new(),
                })
                .paths
                .push(entry.path);
        }
    }
    let mut files: Vec<RegularFile> = by_nid.into_values().collect();
    for f in &mut files {
        f.paths.sort();
    }
    Ok(files)
}

/// The facts of every regular file of `image`, which is image number `index` in the report.
pub fn file_facts(index: usize, image: &Image) -> Result<Vec<FileFacts>> {
    facts_of(index, image, &regular_files(image)?)
}

/// [`file_facts`] for `files`, the image's regular files as [`regular_files`] returns them.
pub fn facts_of(index: usize, image: &Image, files: &[RegularFile]) -> Result<Vec<FileFacts>> {
    // The name is resolved once, not per file.
    let name = image.fingerprint_name().ok().flatten();
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let fingerprint = match &name {
            Some(n) => image.get_xattr(&f.inode, n)?,
            None => None,
        };
        out.push(FileFacts {
            image: index,
            nid: f.inode.nid,
            paths: f.paths.iter().map(|p| escape_bytes(p)).collect(),
            size: f.inode.size,
            read_path: if f.inode.is_compressed() {
                ReadPath::Compressed
            } else {
                ReadPath::Uncompressed
            },
            fingerprint,
            content_mismatch: None,
        });
    }
    Ok(out)
}
