//! The 16 compressed (and 48-bit) reference images built by mkfs.erofs 1.9.3 decode to the
//! tree `make-tree.py` builds: every regular file's SHA-256 equals `SHA256SUMS`, read whole,
//! read in odd-sized pieces, and read backwards one extent at a time.

use std::collections::BTreeMap;
use std::path::PathBuf;

use erofs_reader::{Image, ZStorage};
use erofs_verity::to_hex as hex;
use sha2::{Digest, Sha256};

fn dir() -> PathBuf {
    erofs_testkit::reference_images_1_9_3().unwrap_or_default()
}

fn sums() -> BTreeMap<Vec<u8>, String> {
    let text = std::fs::read_to_string(dir().join("SHA256SUMS")).expect("SHA256SUMS");
    text.lines()
        .filter_map(|l| {
            let (h, p) = l.split_once("  ")?;
            Some((
                format!("/{}", p.trim_start_matches("./")).into_bytes(),
                h.to_owned(),
            ))
        })
        .collect()
}

fn images() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("reference image directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "erofs"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_reference_image_decodes_to_the_source_tree() {
    if erofs_testkit::reference_images_1_9_3().is_none() {
        return;
    }
    let sums = sums();
    let imgs = images();
    assert_eq!(imgs.len(), 16, "reference images");
    for path in imgs {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let img = Image::open(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut seen = 0;
        for e in img.walk().unwrap() {
            let e = e.unwrap_or_else(|err| panic!("{name}: {err}"));
            if !e.inode.is_file() {
                continue;
            }
            let p = e.path.escape_ascii().to_string();
            let want = sums
                .get(&e.path)
                .unwrap_or_else(|| panic!("{name} {p}: not in SHA256SUMS"));
            let data = img
                .read_to_vec(&e.inode, 1 << 26)
                .unwrap_or_else(|err| panic!("{name} {p}: {err}"));
            assert_eq!(&hex(&Sha256::digest(&data)), want, "{name} {p}");
            seen += 1;
        }
        assert_eq!(seen, sums.len(), "{name}: regular files");
    }
}

#[test]
fn random_access_reads_match_a_whole_read() {
    if erofs_testkit::reference_images_1_9_3().is_none() {
        return;
    }
    for path in images() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let img = Image::open(&path).unwrap();
        let mixed = img.lookup(b"/big/mixed.bin").unwrap();
        let whole = img.read_to_vec(&mixed, 1 << 26).unwrap();
        // Odd pieces that straddle every extent boundary.
        let mut pos = whole.len() as u64;
        let mut buf = vec![0u8; 7919];
        while pos > 0 {
            let start = pos.saturating_sub(buf.len() as u64);
            let n = img
                .read_at(&mixed, start, &mut buf[..(pos - start) as usize])
                .unwrap();
            assert_eq!(
                &buf[..n],
                &whole[start as usize..pos as usize],
                "{name} at {start}"
            );
            pos = start;
        }
        if mixed.is_compressed() {
            let ext = img.z_extents(&mixed).unwrap();
            assert_eq!(ext.first().unwrap().logical, 0, "{name}");
            assert_eq!(ext.last().unwrap().end(), mixed.size, "{name}");
            for w in ext.windows(2) {
                assert_eq!(w[0].end(), w[1].logical, "{name}: extents are contiguous");
            }
            assert!(
                ext.iter()
                    .all(|e| !matches!(e.storage, ZStorage::Fragment { .. }) || e.plen == 0),
                "{name}"
            );
        }
    }
}

/// A decoded pcluster as the cache knows it: extents with the same key (dedupe) decode to
/// the same bytes, so a read through the cache may decode them once.
type Key = (u64, u64, u64, u64, bool);

fn key(img: &Image, e: &erofs_reader::ZExtent) -> Key {
    (
        e.physical,
        e.plen,
        e.length,
        e.logical % img.block_size(),
        e.partial,
    )
}

/// The non-fragment extents of compressed inodes, every one and the distinct ones: what a
/// read of the whole files decodes from their own pclusters.
fn decodable_extents(img: &Image, inodes: &[erofs_reader::Inode]) -> (u64, u64) {
    let mut all = 0;
    let mut distinct = std::collections::HashSet::new();
    for i in inodes {
        for e in img.z_extents(i).unwrap() {
            if !matches!(e.storage, ZStorage::Fragment { .. }) {
                all += 1;
                distinct.insert(key(img, &e));
            }
        }
    }
    (all, distinct.len() as u64)
}

/// The packed inode's extents that hold some of the fragments of `inodes`, every one and
/// the distinct ones.
fn packed_extents_for(img: &Image, inodes: &[erofs_reader::Inode]) -> (u64, u64) {
    let packed_nid = img.superblock().packed_nid.get();
    if packed_nid == 0 {
        return (0, 0);
    }
    let packed = img.inode(packed_nid).unwrap();
    if !packed.is_compressed() {
        return (0, 0);
    }
    let ranges: Vec<(u64, u64)> = inodes
        .iter()
        .flat_map(|i| img.z_extents(i).unwrap())
        .filter_map(|e| match e.storage {
            ZStorage::Fragment { offset } => Some((offset, offset + e.length)),
            _ => None,
        })
        .collect();
    let used: Vec<_> = img
        .z_extents(&packed)
        .unwrap()
        .into_iter()
        .filter(|p| !matches!(p.storage, ZStorage::Fragment { .. }))
        .filter(|p| ranges.iter().any(|&(a, b)| a < p.end() && p.logical < b))
        .collect();
    let distinct: std::collections::HashSet<Key> = used.iter().map(|e| key(img, e)).collect();
    (used.len() as u64, distinct.len() as u64)
}

#[test]
fn a_sequential_read_decodes_each_pcluster_once_whatever_the_buffer_size() {
    use erofs_reader::fuzzing::pcluster_decodes;
    if erofs_testkit::reference_images_1_9_3().is_none() {
        return;
    }
    let mut checked = 0;
    for path in images() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // Sizes below an extent, straddling extents, and holding many at once.
        for size in [1000usize, 4096, 7919, 65536, 1 << 20] {
            // A fresh image each time: an empty pcluster cache and a zero counter.
            let img = Image::open(&path).unwrap();
            let mixed = img.lookup(b"/big/mixed.bin").unwrap();
            if !mixed.is_compressed() {
                continue;
            }
            // Its own pclusters, and those of the packed inode that hold its fragment: each
            // decoded once, or once per extent where dedupe shares one between extents.
            let own = decodable_extents(&img, std::slice::from_ref(&mixed));
            let packed = packed_extents_for(&img, std::slice::from_ref(&mixed));
            // The packed inode's pclusters may be cached already (opening the image reads
            // the long xattr prefixes from it): only the file's own are sure to decode.
            let (all, distinct) = (own.0 + packed.0, own.1);
            let before = pcluster_decodes(&img);
            let mut buf = vec![0u8; size];
            let mut hash = Sha256::new();
            let mut pos = 0u64;
            while pos < mixed.size {
                let n = img.read_at(&mixed, pos, &mut buf).unwrap();
                assert!(n > 0, "{name}: short read at {pos}");
                hash.update(&buf[..n]);
                pos += n as u64;
            }
            assert_eq!(
                &hex(&hash.finalize()),
                sums().get(&b"/big/mixed.bin"[..]).unwrap(),
                "{name}, {size}-byte reads"
            );
            let decodes = pcluster_decodes(&img) - before;
            assert!(
                (distinct..=all).contains(&decodes),
                "{name}, {size}-byte reads: {decodes} decodes for {all} extents \
                 ({distinct} distinct pclusters of its own)"
            );
            checked += 1;
        }
    }
    assert!(checked >= 5, "some image stores /big/mixed.bin compressed");
}

#[test]
fn the_check_decodes_each_extent_once_and_counts_what_it_decoded() {
    use erofs_reader::check::{CheckOptions, check};
    use erofs_reader::fuzzing::pcluster_decodes;
    if erofs_testkit::reference_images_1_9_3().is_none() {
        return;
    }
    for path in images() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let img = Image::open(&path).unwrap();
        let mut decoded = 0;
        let mut seen = std::collections::HashSet::new();
        let mut files = Vec::new();
        for e in img.walk().unwrap() {
            let e = e.unwrap();
            if e.inode.is_compressed() && seen.insert(e.nid) {
                decoded += e.inode.size;
                files.push(e.inode);
            }
        }
        // The check decodes every extent of every file straight into its buffer.
        let (want, _) = decodable_extents(&img, &files);
        let (packed_all, _) = packed_extents_for(&img, &files);
        let before = pcluster_decodes(&img);
        let report = check(
            &img,
            CheckOptions::default().read_data(true),
            &erofs_reader::NoProgress,
        )
        .unwrap();
        assert!(report.is_clean(), "{name}: {:?}", report.problems);
        // The pcluster cache keeps the packed inode's decoded pclusters for every file
        // whose fragment they hold (some may be cached since the image was opened); two
        // threads that miss it at once may both decode one.
        let decodes = pcluster_decodes(&img) - before;
        assert!(
            (want..=want + 2 * packed_all).contains(&decodes),
            "{name}: {decodes} decodes, {want} extents, {packed_all} packed extents"
        );
        assert_eq!(report.decoded_bytes, decoded, "{name}");
    }
}

#[test]
fn z_for_each_decoded_gives_the_file_s_bytes_in_order() {
    if erofs_testkit::reference_images_1_9_3().is_none() {
        return;
    }
    let sums = sums();
    for path in images() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let img = Image::open(&path).unwrap();
        for p in [&b"/big/mixed.bin"[..], b"/ladder/vocab-10.txt"] {
            let f = img.lookup(p).unwrap();
            if !f.is_compressed() {
                continue;
            }
            let mut hash = Sha256::new();
            let mut next = 0u64;
            img.z_for_each_decoded(&f, &mut |e, bytes| {
                // A fragment comes in pieces; anything else is its whole extent.
                assert!(e.logical <= next && next + bytes.len() as u64 <= e.end());
                hash.update(bytes);
                next += bytes.len() as u64;
                Ok(())
            })
            .unwrap();
            assert_eq!(next, f.size, "{name}");
            assert_eq!(&hex(&hash.finalize()), sums.get(p).unwrap(), "{name}");
        }
    }
}

#[test]
fn with_fingerprints_verified_elsewhere_the_check_maps_but_does_not_decode_them() {
    use erofs_reader::check::{CheckOptions, check};
    use erofs_reader::fuzzing::pcluster_decodes;
    if erofs_testkit::reference_images_1_9_3().is_none() {
        return;
    }
    // Every reference image fingerprints its files (--xattr-inode-digest).
    for name in ["lz4-default.erofs", "lz4-C64k.erofs", "zstd-default.erofs"] {
        let path = dir().join(name);
        let run = |verified: bool| {
            let img = Image::open(&path).unwrap();
            let before = pcluster_decodes(&img);
            let r = check(
                &img,
                CheckOptions::default().fingerprints_verified(verified),
                &erofs_reader::NoProgress,
            )
            .unwrap();
            (r, pcluster_decodes(&img) - before)
        };
        let (decoding, decodes) = run(false);
        let (mapping, none) = run(true);
        assert!(decodes > 0, "{name}");
        assert_eq!(none, 0, "{name}: the verification decodes them");
        assert!(mapping.is_clean() && decoding.is_clean(), "{name}");
        // The same counts either way: the extents say what they decode to.
        assert_eq!(format!("{mapping:?}"), format!("{decoding:?}"), "{name}");
    }
}

#[test]
fn with_the_data_read_elsewhere_the_check_maps_compressed_files_but_does_not_decode_them() {
    use erofs_reader::check::{CheckOptions, check};
    use erofs_reader::fuzzing::pcluster_decodes;
    if erofs_testkit::reference_images_1_9_3().is_none() {
        return;
    }
    for name in [
        "lz4-default.erofs",
        "lzma-default.erofs",
        "lz4-fragments.erofs",
    ] {
        let path = dir().join(name);
        let run = |elsewhere: bool| {
            let img = Image::open(&path).unwrap();
            let before = pcluster_decodes(&img);
            let r = check(
                &img,
                CheckOptions::default().data_read_elsewhere(elsewhere),
                &erofs_reader::NoProgress,
            )
            .unwrap();
            (r, pcluster_decodes(&img) - before)
        };
        let (decoding, decodes) = run(false);
        let (mapping, none) = run(true);
        assert!(decodes > 0, "{name}");
        assert_eq!(none, 0, "{name}: the extraction decodes them");
        assert!(mapping.is_clean() && decoding.is_clean(), "{name}");
        assert!(mapping.decoded_bytes > 0, "{name}");
        // The same counts either way: the extents say what they decode to.
        assert_eq!(format!("{mapping:?}"), format!("{decoding:?}"), "{name}");
    }
}
