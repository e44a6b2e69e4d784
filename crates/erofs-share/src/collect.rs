//! Gathering [`ImageFacts`] and [`FileFacts`] from images.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

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
/// Directories are read in parallel on the current rayon pool. The result does not depend
/// on the number of threads: it is sorted by nid, each file's paths are sorted, and any
/// error (or a directory reached twice) sends the image through the serial
/// [`Image::walk`], so that the error returned is the one that walk meets first.
pub fn regular_files(image: &Image) -> Result<Vec<RegularFile>> {
    match parallel_regular_files(image) {
        Some(files) => Ok(files),
        None => serial_regular_files(image),
    }
}

/// The reference: one depth-first [`Image::walk`], stopping at its first error.
fn serial_regular_files(image: &Image) -> Result<Vec<RegularFile>> {
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

/// A regular file met in one directory.
struct Found {
    nid: u64,
    path: Vec<u8>,
    inode: Inode,
}

/// State shared by the directory jobs of [`parallel_regular_files`].
struct ParWalk<'a> {
    image: &'a Image<'a>,
    /// Directories claimed so far: each is read at most once, so the work is bounded by the
    /// image even when directories point at each other.
    visited: Mutex<HashSet<u64>>,
    /// Sizes of the directories read, bounded by the image size like in [`Image::walk`].
    dir_bytes: AtomicU64,
    /// Set on the first error or directory reached twice; every job then stops.
    failed: AtomicBool,
    /// One batch per directory, in no particular order.
    found: Mutex<Vec<Vec<Found>>>,
}

impl ParWalk<'_> {
    fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Claims directory `nid`; false when it was claimed before.
    fn claim(&self, nid: u64) -> bool {
        self.visited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(nid)
    }

    /// Reads directory `dir` (reached by `path`), keeps its regular files and spawns one job
    /// per subdirectory. Mirrors [`Image::walk`]'s checks, but only records that one failed:
    /// the serial walk then reports it.
    fn visit<'s>(&'s self, scope: &rayon::Scope<'s>, path: Vec<u8>, dir: Inode) {
        if self.stopped() {
            return;
        }
        let limit = self.image.len();
        // Saturating, so that a corrupt size near u64::MAX cannot wrap the sum below the
        // limit.
        let before = self
            .dir_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(dir.size))
            })
            .unwrap_or(u64::MAX);
        if before.saturating_add(dir.size) > limit {
            return self.fail();
        }
        let Ok(entries) = self.image.read_dir(&dir) else {
            return self.fail();
        };
        let mut files = Vec::new();
        for d in entries {
            if self.stopped() {
                return;
            }
            if d.name == b"." || d.name == b".." {
                continue;
            }
            let child = erofs_reader::walk::join_path(&path, &d.name);
            let Ok(inode) = self.image.inode(d.nid) else {
                return self.fail();
            };
            if inode.is_dir() {
                if !self.claim(d.nid) {
                    return self.fail();
                }
                scope.spawn(move |s| self.visit(s, child, inode));
            } else if inode.is_file() {
                files.push(Found {
                    nid: d.nid,
                    path: child,
                    inode,
                });
            }
        }
        if !files.is_empty() {
            self.found
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(files);
        }
    }
}

/// [`serial_regular_files`] with one rayon job per directory; `None` when the walk met an
/// error or a directory twice, which the serial walk then reports.
///
/// Without such a failure both walks read the same directories and inodes (each directory
/// once), so they find the same (nid, path) pairs; only their order differs, and sorting
/// removes it.
fn parallel_regular_files(image: &Image) -> Option<Vec<RegularFile>> {
    let root_nid = image.root_nid();
    let root = image.inode(root_nid).ok()?;
    let w = ParWalk {
        image,
        visited: Mutex::new(HashSet::from([root_nid])),
        dir_bytes: AtomicU64::new(0),
        failed: AtomicBool::new(false),
        found: Mutex::new(Vec::new()),
    };
    let mut found = if root.is_dir() {
        rayon::scope(|s| w.visit(s, b"/".to_vec(), root));
        if w.failed.into_inner() {
            return None;
        }
        w.found
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
    } else if root.is_file() {
        vec![Found {
            nid: root_nid,
            path: b"/".to_vec(),
            inode: root,
        }]
    } else {
        Vec::new()
    };
    // Equal keys are equal entries (same nid and path, so the same inode), so an unstable
    // sort still gives one order.
    found.par_sort_unstable_by(|a, b| a.nid.cmp(&b.nid).then_with(|| a.path.cmp(&b.path)));
    let mut files: Vec<RegularFile> = Vec::new();
    for f in found {
        match files.last_mut() {
            Some(last) if last.inode.nid == f.nid => last.paths.push(f.path),
            _ => files.push(RegularFile {
                inode: f.inode,
                paths: vec![f.path],
            }),
        }
    }
    Some(files)
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

    /// What a result says, comparable: (nid, inode, paths) per file, or the error text.
    fn outcome(r: &Result<Vec<RegularFile>>) -> std::result::Result<Vec<String>, String> {
        match r {
            Ok(files) => Ok(files
                .iter()
                .map(|f| format!("{} {:?} {:?}", f.inode.nid, f.inode, f.paths))
                .collect()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn on_threads<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("thread pool")
            .install(f)
    }

    #[test]
    fn the_parallel_walk_finds_what_the_serial_walk_finds_on_every_thread_count() {
        for name in IMAGES {
            let img = Image::open(reference(name)).expect(name);
            let serial = outcome(&serial_regular_files(&img));
            let files = serial.as_ref().expect("reference images are consistent");
            assert!(files.len() > 3, "{name}: {files:?}");
            for threads in [1, 2, 4, 8] {
                let parallel = on_threads(threads, || parallel_regular_files(&img));
                let parallel = parallel.unwrap_or_else(|| panic!("{name}: walk failed"));
                assert_eq!(outcome(&Ok(parallel)), serial, "{name}, {threads} threads");
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

    #[test]
    fn a_directory_pointing_back_at_the_root_gives_the_serial_walks_error() {
        let img = Image::open(reference("compact")).unwrap();
        let dir = img.lookup(b"/dir/sub").unwrap();
        let entries = img.read_dir_block(&dir, 0).unwrap();
        let deeper = entries.iter().find(|d| d.entry.name == b"deeper").unwrap();
        let at = deeper.dirent_offset.unwrap() as usize;
        let mut bytes = std::fs::read(reference("compact")).unwrap();
        bytes[at..at + 8].copy_from_slice(&img.root_nid().to_le_bytes());
        let img = Image::from_source(
            bytes,
            erofs_reader::OpenOptions::default().verify_checksum(false),
        )
        .unwrap();
        assert!(on_threads(4, || parallel_regular_files(&img)).is_none());
        let err = on_threads(4, || regular_files(&img)).unwrap_err();
        assert!(err.to_string().contains("/dir/sub/deeper"), "{err}");
        assert_eq!(Err(err.to_string()), outcome(&serial_regular_files(&img)));
    }

    /// Whatever the corruption, the parallel walk succeeds exactly when the serial walk
    /// does, with the same files.
    #[test]
    fn damaged_images_give_the_serial_walks_outcome() {
        let pristine = std::fs::read(reference("compact")).unwrap();
        let mut rng = erofs_testkit::Rng(0x2545_F491_4F6C_DD1D);
        let (mut ok, mut failed) = (0, 0);
        for _ in 0..300 {
            let mut b = pristine.clone();
            for _ in 0..1 + rng.next_u64() % 3 {
                let at = 1024 + (rng.next_u64() % (pristine.len() as u64 / 2 - 1024)) as usize;
                b[at] ^= 1 << (rng.next_u64() % 8);
            }
            let Ok(img) = Image::from_source(
                b,
                erofs_reader::OpenOptions::default().verify_checksum(false),
            ) else {
                continue;
            };
            let serial = outcome(&serial_regular_files(&img));
            let parallel = on_threads(4, || parallel_regular_files(&img));
            match (&serial, parallel) {
                (Ok(_), Some(p)) => {
                    ok += 1;
                    assert_eq!(outcome(&Ok(p)), serial);
                }
                (Err(_), None) => failed += 1,
                (s, p) => panic!("serial {s:?}, parallel {:?}", p.map(|p| p.len())),
            }
            assert_eq!(outcome(&on_threads(4, || regular_files(&img))), serial);
        }
        assert!(ok > 100 && failed > 50, "{ok} walked, {failed} failed");
    }
}
