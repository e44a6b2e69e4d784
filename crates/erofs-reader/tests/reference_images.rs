//! Images built by Debian's mkfs.erofs 1.5 (testdata/make-images.sh) read like the tree
//! they were made from, as recorded in testdata/images/manifest.txt.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use std::path::Path;

use common::{Expect, Manifest, image, manifest, manifest_in};
use erofs_reader::{DataLayout, Error, FileType, Image, Inode};
use erofs_verity::to_hex as hex;
use sha2::{Digest, Sha256};

const UNCOMPRESSED: &[&str] = &[
    "compact",
    "extended",
    "mtime",
    "xattr-x1",
    "noinline",
    "chunk-blockmap",
    "chunk-indexes",
];

fn type_char(t: FileType) -> char {
    match t {
        FileType::Regular => 'f',
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::CharDevice => 'c',
        FileType::BlockDevice => 'b',
        FileType::Fifo => 'p',
        FileType::Socket => 's',
        FileType::Unknown => '?',
    }
}

fn walk_all(img: &Image) -> BTreeMap<Vec<u8>, Inode> {
    let mut out = BTreeMap::new();
    for e in img.walk().expect("walk") {
        let e = e.expect("walk entry");
        assert!(out.insert(e.path.clone(), e.inode).is_none(), "path twice");
    }
    out
}

fn check_inode(variant: &str, img: &Image, path: &[u8], inode: &Inode, exp: &Expect) {
    let p = path.escape_ascii().to_string();
    assert_eq!(type_char(inode.file_type()), exp.ty, "{variant} {p}: type");
    assert_eq!(inode.permissions(), exp.mode, "{variant} {p}: mode");
    assert_eq!(
        (inode.uid, inode.gid),
        (exp.uid, exp.gid),
        "{variant} {p}: owner"
    );
    assert_eq!(inode.nlink, exp.nlink, "{variant} {p}: nlink");
    let want_mtime = if variant == "mtime" { exp.mtime } else { 0 };
    assert_eq!(inode.mtime, want_mtime, "{variant} {p}: mtime");
    match exp.ty {
        'f' => {
            assert_eq!(inode.size, exp.size, "{variant} {p}: size");
            let data = img.read_to_vec(inode, 1 << 30).expect("read file");
            assert_eq!(data.len() as u64, exp.size, "{variant} {p}: bytes read");
            let sum = (!data.is_empty()).then(|| hex(&Sha256::digest(&data)));
            assert_eq!(sum, exp.sha256, "{variant} {p}: content");
        }
        'l' => {
            let target = img.readlink(inode).expect("readlink");
            assert_eq!(hex(&target), exp.extra, "{variant} {p}: symlink target");
        }
        'c' | 'b' => {
            let (ma, mi) = inode.rdev().expect("device number");
            assert_eq!(format!("{ma}:{mi}"), exp.extra, "{variant} {p}: rdev");
        }
        _ => {}
    }
}

#[test]
fn every_reference_image_reads_like_its_source_tree() {
    check_images(&common::images_dir(), &manifest());
}

#[test]
fn images_regenerated_with_the_installed_mkfs_erofs_read_like_their_source_tree() {
    let Some(dir) = common::regenerate() else {
        return;
    };
    check_images(dir.path(), &manifest_in(dir.path()));
}

/// Names of the images in `dir`, without `.erofs`.
fn variants_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            (p.extension()? == "erofs")
                .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    v.sort();
    v
}

fn check_images(dir: &Path, m: &Manifest) {
    let variants = variants_in(dir);
    for must in UNCOMPRESSED.iter().chain(&["lz4"]) {
        assert!(
            variants.iter().any(|v| v == must),
            "{must}.erofs in {}",
            dir.display()
        );
    }
    let mut compressed_seen = 0;
    for variant in &variants {
        let variant = variant.as_str();
        let img = Image::open(dir.join(format!("{variant}.erofs"))).expect(variant);
        let tree = walk_all(&img);
        let walked: BTreeSet<_> = tree.keys().cloned().collect();
        let expected: BTreeSet<_> = m.inodes.keys().cloned().collect();
        assert_eq!(walked, expected, "{variant}: set of paths");
        let mut groups: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
        for (path, inode) in &tree {
            let exp = &m.inodes[path];
            check_inode(variant, &img, path, inode, exp);
            groups.entry(exp.ino).or_default().insert(inode.nid);
            let got: BTreeMap<Vec<u8>, Vec<u8>> = img
                .xattrs(inode)
                .expect("xattrs")
                .into_iter()
                .map(|x| (x.name, x.value))
                .collect();
            compressed_seen += usize::from(inode.is_compressed());
            // -x-1 disables xattrs.
            let want = if variant == "xattr-off" {
                BTreeMap::new()
            } else {
                m.xattrs.get(path).cloned().unwrap_or_default()
            };
            assert_eq!(got, want, "{variant} {}: xattrs", path.escape_ascii());
            for (name, value) in &want {
                assert_eq!(
                    img.get_xattr(inode, name).expect("get_xattr").as_ref(),
                    Some(value),
                    "{variant}: get_xattr {}",
                    name.escape_ascii()
                );
            }
            assert_eq!(
                img.get_xattr(inode, b"user.definitely-absent")
                    .expect("get_xattr"),
                None
            );
        }
        // Hard-link groups: same source inode <=> same nid.
        let mut nids = BTreeSet::new();
        for (ino, g) in &groups {
            assert_eq!(g.len(), 1, "{variant}: source inode {ino} became {g:?}");
            assert!(
                nids.insert(*g.iter().next().unwrap()),
                "{variant}: nid shared"
            );
        }
    }
    assert!(compressed_seen > 0, "the lz4 variants compress some files");
}

#[test]
fn lookup_by_binary_search_finds_every_path() {
    let m = manifest();
    for variant in ["compact", "extended", "chunk-indexes"] {
        let img = Image::open(image(variant)).expect(variant);
        let tree = walk_all(&img);
        for (path, inode) in &tree {
            assert_eq!(img.lookup(path).expect("lookup").nid, inode.nid);
        }
        assert_eq!(tree.len(), m.inodes.len());
        for missing in [
            &b"/many/entry-99999"[..],
            b"/a",
            b"/zzz",
            b"/dir/sub/nope",
            b"/ ",
        ] {
            assert!(
                matches!(img.lookup(missing), Err(Error::NotFound { .. })),
                "{}",
                missing.escape_ascii()
            );
        }
        // "." and ".." are real dirents.
        let sub = img.lookup(b"/dir/sub/..").expect("..");
        assert_eq!(sub.nid, img.lookup(b"/dir").unwrap().nid);
    }
}

#[test]
fn directory_with_thousands_of_entries_spans_many_blocks_in_sorted_order() {
    let img = Image::open(image("compact")).unwrap();
    let many = img.lookup(b"/many").unwrap();
    assert!(img.dir_block_count(&many) > 10, "several directory blocks");
    let names: Vec<Vec<u8>> = img
        .read_dir(&many)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names.len(), 2501 + 2);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "dirents sorted bytewise across blocks");
}

#[test]
fn inode_kind_follows_the_mkfs_options() {
    let compact = Image::open(image("compact")).unwrap();
    for (path, inode) in walk_all(&compact) {
        // -T0 allows compact inodes except where ids exceed 16 bits.
        let needs_extended = inode.uid > 0xFFFF || inode.gid > 0xFFFF;
        assert_eq!(inode.extended, needs_extended, "{}", path.escape_ascii());
    }
    let extended = Image::open(image("extended")).unwrap();
    assert!(walk_all(&extended).values().all(|i| i.extended));
    let noinline = Image::open(image("noinline")).unwrap();
    for (path, inode) in walk_all(&noinline) {
        if inode.is_file() {
            assert_eq!(
                inode.layout,
                DataLayout::FlatPlain,
                "{}",
                path.escape_ascii()
            );
        }
    }
    for v in ["chunk-blockmap", "chunk-indexes"] {
        let img = Image::open(image(v)).unwrap();
        let f = img.lookup(b"/dir/numbers.txt").unwrap();
        assert_eq!(f.layout, DataLayout::ChunkBased, "{v}");
        let indexes = f.raw_u & 0x20 != 0;
        assert_eq!(indexes, v == "chunk-indexes", "{v}: chunk format bit 0x20");
    }
}

#[test]
fn a_4095_byte_file_has_an_inline_tail_and_a_4096_byte_file_is_flat_plain() {
    let img = Image::open(image("compact")).unwrap();
    let f4096 = img.lookup(b"/file-4096").unwrap();
    assert_eq!(f4096.layout, DataLayout::FlatPlain);
    let ext = img.data_extents(&f4096).unwrap();
    assert_eq!(ext.len(), 1);
    assert_eq!(ext[0].physical.unwrap() % 4096, 0, "block aligned");
    let f4097 = img.lookup(b"/file-4097").unwrap();
    let ext = img.data_extents(&f4097).unwrap();
    assert_eq!(ext.iter().map(|e| e.length).sum::<u64>(), 4097);
}

#[test]
fn compressed_inode_decodes_through_its_extents() {
    let img = Image::open(image("lz4")).unwrap();
    let f = img.lookup(b"/dir/numbers.txt").unwrap();
    assert!(
        f.is_compressed(),
        "numbers.txt compresses well, so mkfs -zlz4 compressed it"
    );
    let data = img.read_to_vec(&f, 1 << 20).unwrap();
    assert_eq!(data.len() as u64, f.size);
    let extents = img.z_extents(&f).unwrap();
    assert!(
        extents.iter().any(|e| e.kind_name() == "lz4"),
        "{extents:?}"
    );
    assert_eq!(extents.last().unwrap().end(), f.size);
    // Metadata of compressed images is still fully readable.
    assert!(walk_all(&img).len() > 2500);
}

/// Debian's mkfs.erofs 1.5 stores zero chunks as shared blocks, not holes, so holes are
/// made here: every chunk entry of `/sparse` (20000 zero bytes) becomes the all-ones
/// address (§9), in both the 4-byte block map and the 8-byte index format.
#[test]
fn chunk_holes_read_as_zeroes_in_block_maps_and_chunk_indexes() {
    for (variant, entry) in [("chunk-blockmap", 4u64), ("chunk-indexes", 8u64)] {
        let mut bytes = std::fs::read(image(variant)).unwrap();
        let img = Image::open(image(variant)).unwrap();
        let f = img.lookup(b"/sparse").unwrap();
        assert_eq!(f.layout, DataLayout::ChunkBased);
        let chunkbits = 12 + (f.raw_u & 0x1F);
        let table = (f.meta_end()).div_ceil(entry) * entry;
        let count = f.size.div_ceil(1 << chunkbits);
        for i in 0..count {
            let at = (table + i * entry) as usize;
            // Block map: the u32 is the address. Index: startblk_lo is at offset 4.
            let addr = if entry == 4 { at } else { at + 4 };
            bytes[addr..addr + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        }
        erofs_format::seal_checksum(&mut bytes, 12);

        let holed = Image::from_bytes(bytes).unwrap();
        let f = holed.lookup(b"/sparse").unwrap();
        let ext = holed.data_extents(&f).unwrap();
        assert_eq!(ext.len(), 1, "{variant}: one merged hole: {ext:?}");
        assert_eq!(ext[0].kind, erofs_reader::ExtentKind::Hole);
        assert_eq!(ext[0].length, 20000);
        assert_eq!(holed.on_disk_size(&f).unwrap(), 0);
        let data = holed.read_to_vec(&f, 1 << 20).unwrap();
        assert_eq!(data, vec![0u8; 20000], "{variant}: holes read as zeroes");
        let report = erofs_reader::check::check(
            &holed,
            erofs_reader::check::CheckOptions::default().read_data(true),
            &erofs_reader::NoProgress,
        )
        .expect("nothing cancels the check");
        assert!(report.is_clean(), "{variant}: {:?}", report.problems);
    }
}
