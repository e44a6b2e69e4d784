//! Gathering [`ImageFacts`] and [`FileFacts`] from images.

use std::collections::BTreeMap;

use erofs_format::Compat;
use erofs_reader::{Image, Inode, Result, escape_bytes};
use rayon::prelude::*;

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
///
/// Directories are read in parallel on the current rayon pool by
/// [`Image::walk_parallel`], whose result (and first error) is the serial walk's whatever
/// the number of threads; the files are sorted by nid, each file's paths sorted.
pub fn regular_files(image: &Image) -> Result<Vec<RegularFile>> {
    let mut by_nid: BTreeMap<u64, RegularFile> = BTreeMap::new();
    for entry in image.walk_parallel()? {
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
    let facts: Vec<Result<FileFacts>> = files
        // Contiguous runs per thread keep the lookups in nid order, where neighbours share
        // cached metadata blocks.
        .par_iter()
        .map(|f| {
            let fingerprint = match &name {
                Some(n) => image.get_xattr(&f.inode, n)?,
                None => None,
            };
            Ok(FileFacts {
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
            })
        })
        .collect();
    // Serially, so that the error returned is the first in nid order, whatever the timing.
    facts.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// The reference images of erofs-reader's tests.
    fn reference(name: &str) -> PathBuf {
        let dir = match std::env::var_os("EROFS_TESTDATA_IMAGES") {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/images"),
        };
        dir.join(format!("{name}.erofs"))
    }

    const IMAGES: &[&str] = &[
        "compact",
        "extended",
        "noinline",
        "chunk-blockmap",
        "chunk-indexes",
        "mtime",
        "xattr-x1",
        "lz4",
    ];

    fn on_threads<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("thread pool")
            .install(f)
    }

    #[test]
    fn every_regular_file_of_the_reference_images_once_by_nid_on_every_thread_count() {
        for name in IMAGES {
            let img = Image::open(reference(name)).expect(name);
            let one = regular_files(&img).expect(name);
            assert!(one.len() > 3, "{name}");
            assert!(one.windows(2).all(|w| w[0].inode.nid < w[1].inode.nid));
            assert!(one.iter().all(|f| f.inode.is_file()));
            for threads in [2, 8] {
                let many = on_threads(threads, || regular_files(&img)).expect(name);
                let key = |v: &[RegularFile]| {
                    v.iter()
                        .map(|f| (f.inode.nid, f.paths.clone()))
                        .collect::<Vec<_>>()
                };
                assert_eq!(key(&many), key(&one), "{name}, {threads} threads");
            }
        }
    }

    #[test]
    fn hard_links_are_one_file_with_sorted_paths() {
        let img = Image::open(reference("compact")).unwrap();
        let files = on_threads(4, || regular_files(&img)).unwrap();
        assert!(files.windows(2).all(|w| w[0].inode.nid < w[1].inode.nid));
        let linked = files
            .iter()
            .find(|f| f.paths.len() == 3)
            .expect("a file with three links");
        assert_eq!(
            linked.paths,
            [&b"/dir/a-link"[..], b"/links/a", b"/links/b"]
        );
    }
}
