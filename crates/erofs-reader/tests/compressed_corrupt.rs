//! Damaged compressed images give located errors (nid, and the index or pcluster offset),
//! never a panic, an unbounded allocation or a hang.

use erofs_reader::{Corruption, Error, Image, OpenOptions, ZStorage};

fn reference(name: &str) -> Option<(Vec<u8>, Image<'static>)> {
    let dir = erofs_testkit::reference_images_1_9_3()?;
    let bytes = std::fs::read(dir.join(name)).unwrap();
    let img = Image::from_bytes(bytes.clone()).unwrap();
    Some((bytes, img))
}

fn reopen(bytes: Vec<u8>) -> Image<'static> {
    Image::from_source(bytes, OpenOptions::default().verify_checksum(false)).unwrap()
}

fn read_all(img: &Image, path: &[u8]) -> Result<Vec<u8>, Error> {
    let f = img.lookup(path)?;
    img.read_to_vec(&f, 1 << 26)
}

#[test]
fn a_garbled_compact_index_names_the_inode_and_lcluster() {
    let Some((mut bytes, img)) = reference("lz4-default.erofs") else {
        return;
    };
    let f = img.lookup(b"/ladder/vocab-10.txt").unwrap();
    let header = f.meta_end().div_ceil(8) * 8;
    // Every item of the first packs becomes NONHEAD with a lookback past lcluster 0.
    for b in &mut bytes[header as usize + 8..header as usize + 40] {
        *b = 0xEE;
    }
    let img = reopen(bytes);
    match read_all(&img, b"/ladder/vocab-10.txt") {
        Err(Error::Corrupt {
            at,
            what: Corruption::CompressedIndex { .. },
        }) => {
            assert_eq!(at.nid, Some(f.nid));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_inside_a_pcluster_is_a_decoder_error_at_the_pcluster() {
    for name in [
        "lz4-default.erofs",
        "lzma-default.erofs",
        "deflate9-default.erofs",
        "zstd-default.erofs",
    ] {
        let Some((mut bytes, img)) = reference(name) else {
            return;
        };
        let f = img.lookup(b"/ladder/vocab-100.txt").unwrap();
        let e = img
            .z_extents(&f)
            .unwrap()
            .into_iter()
            .find(|e| matches!(e.storage, ZStorage::Compressed { .. }))
            .unwrap();
        let mid = (e.physical + e.plen / 2) as usize;
        bytes[mid..mid + 64].fill(0xA5);
        let img = reopen(bytes);
        match read_all(&img, b"/ladder/vocab-100.txt") {
            Err(Error::Corrupt {
                at,
                what: Corruption::Decode { logical, .. },
            }) => {
                assert_eq!(
                    (at.nid, at.offset),
                    (Some(f.nid), Some(e.physical)),
                    "{name}"
                );
                assert_eq!(logical, e.logical, "{name}");
            }
            // A damaged stream may still decode; then its content differs.
            Ok(data) => assert_ne!(
                data,
                read_all(&reference(name).unwrap().1, b"/ladder/vocab-100.txt").unwrap(),
                "{name}"
            ),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn a_shorter_i_size_makes_the_last_extent_decode_to_the_wrong_length() {
    let Some((mut bytes, img)) = reference("lz4-default.erofs") else {
        return;
    };
    let f = img.lookup(b"/ladder/vocab-400.txt").unwrap();
    assert!(!f.extended);
    let last = *img.z_extents(&f).unwrap().last().unwrap();
    assert!(
        matches!(last.storage, ZStorage::Compressed { .. }),
        "{last:?}"
    );
    let at = f.offset as usize + 8;
    bytes[at..at + 4].copy_from_slice(&((f.size - 1) as u32).to_le_bytes());
    let img = reopen(bytes);
    match read_all(&img, b"/ladder/vocab-400.txt") {
        Err(Error::Corrupt {
            at,
            what: Corruption::Decode { reason, .. },
        }) => {
            assert_eq!((at.nid, at.offset), (Some(f.nid), Some(last.physical)));
            assert!(reason.contains("exceeds"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_pcluster_past_the_image_end_is_out_of_image() {
    let Some((bytes, img)) = reference("lz4-C64k.erofs") else {
        return;
    };
    let f = img.lookup(b"/big/mixed.bin").unwrap();
    let last = img
        .z_extents(&f)
        .unwrap()
        .into_iter()
        .max_by_key(|e| e.physical)
        .unwrap();
    let mut short = bytes;
    short.truncate((last.physical + 16) as usize);
    let img = reopen(short);
    let f2 = img.inode(f.nid).unwrap();
    let err = img.read_to_vec(&f2, 1 << 26).unwrap_err();
    match err {
        Error::Corrupt {
            at,
            what: Corruption::OutOfImage { .. },
        } => assert_eq!(at.nid, Some(f.nid)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_fragment_past_the_packed_inode_is_located() {
    let Some((mut bytes, img)) = reference("lz4-all-fragments.erofs") else {
        return;
    };
    let f = img.lookup(b"/sizes/text-4097").unwrap();
    let header = (f.meta_end().div_ceil(8) * 8) as usize;
    let packed = img.inode(img.superblock().packed_nid.get()).unwrap();
    let bogus = (packed.size - 10) | 1 << 63;
    bytes[header..header + 8].copy_from_slice(&bogus.to_le_bytes());
    let img = reopen(bytes);
    match read_all(&img, b"/sizes/text-4097") {
        Err(Error::Corrupt {
            at,
            what: Corruption::Fragment { offset, .. },
        }) => {
            assert_eq!(at.nid, Some(f.nid));
            assert_eq!(offset, packed.size - 10);
        }
        other => panic!("{other:?}"),
    }
}

/// Every seventh byte of a compressed file's inode, xattrs and indexes, flipped one at a time:
/// reading and checking never panics.
#[test]
fn flipping_any_metadata_byte_of_a_compressed_file_never_panics() {
    for name in [
        "lz4hc12-all.erofs",
        "lzma-C64k-tail-frag.erofs",
        "lz4-dedupe-C64k.erofs",
    ] {
        let Some((bytes, img)) = reference(name) else {
            return;
        };
        let f = img.lookup(b"/big/mixed.bin").unwrap();
        let start = f.offset as usize;
        let end = (f.meta_end() + 256) as usize;
        for at in (start..end).step_by(7) {
            let mut b = bytes.clone();
            b[at] ^= 0x5A;
            let Ok(img) = Image::from_source(b, OpenOptions::default().verify_checksum(false))
            else {
                continue;
            };
            if let Ok(inode) = img.inode(f.nid) {
                let _ = img.z_extents(&inode);
                let mut buf = vec![0u8; 65536];
                let _ = img.read_at(&inode, inode.size / 2, &mut buf);
            }
        }
    }
}

/// The check decodes files on the rayon pool: its report, problems and their order
/// included, is the same on one thread as on several, and lists problems in walk order.
#[test]
fn a_check_finds_the_same_problems_in_the_same_order_on_any_thread_count() {
    use erofs_reader::check::{CheckOptions, check};
    let Some((mut bytes, img)) = reference("lz4-default.erofs") else {
        return;
    };
    // Damage the first compressed pcluster of every tenth compressed file, walk order.
    let mut damaged = Vec::new();
    let mut files = 0;
    for e in img.walk().unwrap() {
        let e = e.unwrap();
        if !e.inode.is_file() || !e.inode.is_compressed() {
            continue;
        }
        files += 1;
        if files % 10 != 1 {
            continue;
        }
        if let Some(x) = img
            .z_extents(&e.inode)
            .unwrap()
            .into_iter()
            .find(|x| matches!(x.storage, ZStorage::Compressed { .. }) && !x.inline)
        {
            // The stream's first token (after 0padding's zeroes): its lengths go wrong.
            let pcl = &bytes[x.physical as usize..(x.physical + x.plen) as usize];
            let at = x.physical as usize + pcl.iter().position(|&b| b != 0).unwrap();
            bytes[at] ^= 0xF0;
            damaged.push(erofs_reader::escape_bytes(&e.path));
        }
    }
    assert!(damaged.len() >= 3, "files damaged: {damaged:?}");
    let img = reopen(bytes);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            check(
                &img,
                CheckOptions::default().read_data(true),
                &erofs_reader::NoProgress,
            )
            .unwrap()
        })
    };
    let one = run(1);
    let paths: Vec<String> = one.problems.iter().filter_map(|p| p.path.clone()).collect();
    // A flipped byte may still decode to the right length (the fingerprint check is
    // what catches that), so not every damaged file need show; those that do, in order.
    assert!(paths.len() >= 3, "problems: {:?}", one.problems);
    let mut walk_order = paths.clone();
    walk_order.sort_by_key(|p| damaged.iter().position(|d| d == p));
    assert_eq!(paths, walk_order, "problems in walk order");
    for threads in [2, 4] {
        assert_eq!(
            format!("{:?}", run(threads)),
            format!("{one:?}"),
            "{threads} threads"
        );
    }
}

/// `z_for_each_decoded` maps extents ahead of the one it decodes, yet a bad index late in a
/// file still comes after every extent before it has been decoded and handed over.
#[test]
fn a_bad_index_late_in_a_file_comes_after_the_extents_before_it() {
    let Some((mut bytes, img)) = reference("lz4-default.erofs") else {
        return;
    };
    let f = img.lookup(b"/big/mixed.bin").unwrap();
    assert!(f.is_compressed());
    let index = img.compression_index_range(&f).unwrap();
    // The last packs become NONHEAD lclusters with lookbacks past lcluster 0.
    for b in &mut bytes[index.end as usize - 16..index.end as usize] {
        *b = 0xEE;
    }
    let img = reopen(bytes);
    let f = img.lookup(b"/big/mixed.bin").unwrap();
    // What a plain walk of the index maps before the first bad lcluster.
    let mut good = 0;
    let mut pos = 0;
    while let Ok(e) = img.z_map(&f, pos) {
        good += 1;
        pos = e.end();
        if pos >= f.size {
            break;
        }
    }
    assert!(pos < f.size && good > 1, "the damage is late in the file");
    let mut seen = Vec::new();
    let r = img.z_for_each_decoded(&f, &mut |e, _| {
        if seen.last() != Some(&e.logical) {
            seen.push(e.logical);
        }
        Ok(())
    });
    match r {
        Err(Error::Corrupt {
            at,
            what: Corruption::CompressedIndex { .. },
        }) => assert_eq!(at.nid, Some(f.nid)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        seen.len(),
        good,
        "every extent before the bad index was decoded"
    );
}
