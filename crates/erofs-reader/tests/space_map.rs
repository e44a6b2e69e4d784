//! The space map covers every byte of an image exactly once: plain, inline, chunk-based,
//! compressed (full and compact indexes, ztailpacking, fragments, dedupe) and 48-bit
//! images, made by this project's tests and by mkfs.erofs 1.9.3.

mod common;

use std::path::PathBuf;

use erofs_reader::Image;
use erofs_reader::space::{SpaceKind, space_map};

/// The mkfs.erofs 1.9.3 reference images (skipped loudly when `../shared/` is missing).
fn reference_1_9_3() -> Vec<PathBuf> {
    let Some(dir) = erofs_testkit::reference_images_1_9_3() else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "erofs"))
        .collect();
    v.sort();
    v
}

#[test]
fn ranges_are_sorted_disjoint_and_cover_the_image_and_totals_sum_to_its_size() {
    let mut images: Vec<PathBuf> = [
        "compact",
        "extended",
        "noinline",
        "chunk-blockmap",
        "chunk-indexes",
        "xattr-x1",
        "lz4",
    ]
    .iter()
    .map(|n| common::image(n))
    .collect();
    let made_by_1_9_3 = reference_1_9_3();
    images.extend(made_by_1_9_3.iter().cloned());
    let mut pclusters = 0;
    for path in &images {
        let img = Image::open(path).unwrap();
        let map = space_map(&img).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut at = 0;
        for r in &map.ranges {
            assert_eq!(r.start, at, "{}: {r:?}", path.display());
            assert!(r.end > r.start, "{}: {r:?}", path.display());
            at = r.end;
        }
        assert_eq!(at, img.len(), "{}", path.display());
        assert_eq!(map.totals.values().sum::<u64>(), img.len());
        assert_eq!(map.ranges[1].kind, SpaceKind::Superblock);
        assert_eq!(map.ranges[1].start, 1024);
        if made_by_1_9_3.contains(path) {
            // mkfs.erofs 1.9.3 leaves no block unreferenced (fragments live in the packed
            // inode, whose data the map claims too).
            assert_eq!(
                map.totals.get("unreferenced"),
                None,
                "{}: {:?}",
                path.display(),
                map.ranges
                    .iter()
                    .find(|r| r.kind == SpaceKind::Unreferenced)
            );
        }
        pclusters += map
            .ranges
            .iter()
            .filter(|r| r.kind == SpaceKind::Pcluster)
            .count();
    }
    assert!(pclusters > 0, "compressed images were mapped");
}

#[test]
fn a_chunk_based_file_owns_its_chunk_table_and_its_blocks() {
    let img = Image::open(common::image("chunk-indexes")).unwrap();
    let map = space_map(&img).unwrap();
    let table = map
        .ranges
        .iter()
        .find(|r| r.kind == SpaceKind::ChunkIndexes)
        .expect("a chunk table");
    let owner = &table.owners[0];
    assert!(
        map.ranges
            .iter()
            .any(|r| r.kind == SpaceKind::Data && r.owners.contains(owner)),
        "{owner} owns data blocks too"
    );
}
