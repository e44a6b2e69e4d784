//! Corrupt images give typed errors that name the nid or byte offset, never a panic.

mod common;

use common::image;
use erofs_reader::{Corruption, Error, Image};
use erofs_testkit::Rng;

fn pristine() -> Vec<u8> {
    std::fs::read(image("compact")).expect("compact.erofs")
}

/// Recomputes the superblock checksum so that a test reaches the check it is about.
fn fix_checksum(b: &mut [u8]) {
    erofs_format::seal_checksum(b, 12);
}

/// Opens, walks and reads everything; returns every error met.
fn read_everything(bytes: Vec<u8>) -> Vec<Error> {
    let img = match Image::from_bytes(bytes) {
        Ok(i) => i,
        Err(e) => return vec![e],
    };
    let mut errs = Vec::new();
    let walk = match img.walk() {
        Ok(w) => w,
        Err(e) => return vec![e],
    };
    for e in walk {
        let e = match e {
            Ok(e) => e,
            Err(err) => {
                errs.push(err);
                continue;
            }
        };
        if let Err(err) = img.xattrs(&e.inode) {
            errs.push(err);
        }
        if e.inode.is_symlink() {
            if let Err(err) = img.readlink(&e.inode) {
                errs.push(err);
            }
        } else if e.inode.is_file()
            && let Err(err) = img.read_to_vec(&e.inode, img.len())
        {
            errs.push(err);
        }
    }
    errs
}

#[test]
fn the_pristine_image_has_no_errors() {
    assert!(read_everything(pristine()).is_empty());
}

#[test]
fn truncated_images_give_errors_not_panics() {
    let full = pristine();
    for len in [
        0,
        100,
        1024,
        1100,
        1151,
        2000,
        4096,
        full.len() / 2,
        full.len() - 4096,
    ] {
        let errs = read_everything(full[..len].to_vec());
        assert!(!errs.is_empty(), "truncated to {len} bytes");
    }
    let errs = read_everything(full[..1100].to_vec());
    assert!(
        matches!(errs[0], Error::TooSmall { size: 1100 }),
        "{:?}",
        errs[0]
    );
    let errs = read_everything(full[..full.len() / 2].to_vec());
    assert!(
        errs.iter()
            .any(|e| e.to_string().contains("outside the image")),
        "{errs:?}"
    );
}

#[test]
fn bad_magic_at_byte_1024_is_refused() {
    let mut b = pristine();
    b[1024] ^= 0xFF;
    assert!(matches!(Image::from_bytes(b), Err(Error::BadMagic { .. })));
}

#[test]
fn a_flipped_byte_in_block_0_fails_the_checksum() {
    let mut b = pristine();
    b[1024 + 24] ^= 0x01; // epoch
    let err = Image::from_bytes(b).unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err:?}");
}

#[test]
fn blkszbits_outside_9_to_12_is_refused() {
    for bits in [0u8, 8, 13, 255] {
        let mut b = pristine();
        b[1024 + 12] = bits;
        fix_checksum(&mut b);
        assert!(
            matches!(Image::from_bytes(b), Err(Error::BlockSize { bits: x }) if x == bits),
            "{bits}"
        );
    }
}

#[test]
fn unknown_and_unsupported_incompat_bits_are_refused_by_name() {
    let mut b = pristine();
    // 48BIT (0x80) is read; METABOX (0x100) is not, nor is an unknown bit.
    b[1024 + 80..1024 + 84].copy_from_slice(&0x0000_0380u32.to_le_bytes());
    fix_checksum(&mut b);
    match Image::from_bytes(b) {
        Err(Error::UnsupportedFeatures { bits, names }) => {
            assert_eq!(bits, 0x300);
            assert_eq!(
                names,
                vec!["metabox".to_string(), "unknown(0x200)".to_string()]
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_bad_i_format_in_the_root_inode_names_its_nid_and_offset() {
    let img = Image::open(image("compact")).unwrap();
    let root = img.root_nid();
    let off = img.nid_offset(root).unwrap() as usize;
    let mut b = pristine();
    b[off] = 0xE0; // reserved i_format bits 5..7
    fix_checksum(&mut b);
    let err = Image::from_bytes(b).unwrap_err();
    match &err {
        Error::Corrupt {
            at,
            what: Corruption::InodeFormat(_),
        } => {
            assert_eq!(at.nid, Some(root));
            assert_eq!(at.offset, Some(off as u64));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains(&format!("nid {root}")), "{err}");
}

#[test]
fn a_bad_nameoff_in_a_directory_block_is_an_error_naming_the_directory() {
    let img = Image::open(image("compact")).unwrap();
    let dir = img.lookup(b"/dir/sub").unwrap();
    let block = img.read_dir_block(&dir, 0).unwrap();
    let first = block[0].dirent_offset.unwrap() as usize;
    for nameoff in [0u16, 5, 4096, 13] {
        let mut b = pristine();
        b[first + 8..first + 10].copy_from_slice(&nameoff.to_le_bytes());
        fix_checksum(&mut b);
        let img = Image::from_bytes(b).unwrap();
        let err = img.read_dir(&dir).unwrap_err();
        assert_eq!(err.nid(), Some(dir.nid), "{err}");
        assert!(matches!(
            err,
            Error::Corrupt {
                what: Corruption::DirBlock { .. },
                ..
            }
        ));
    }
}

#[test]
fn a_dirent_nid_pointing_outside_the_image_is_an_error() {
    let img = Image::open(image("compact")).unwrap();
    let dir = img.lookup(b"/dir/sub").unwrap();
    let entries = img.read_dir_block(&dir, 0).unwrap();
    let hello = entries.iter().find(|d| d.entry.name == b"hello").unwrap();
    let at = hello.dirent_offset.unwrap() as usize;
    for nid in [1u64 << 40, u64::MAX, (img.len() / 32) + 10] {
        let mut b = pristine();
        b[at..at + 8].copy_from_slice(&nid.to_le_bytes());
        fix_checksum(&mut b);
        let errs = read_everything(b);
        assert!(
            errs.iter().any(|e| e.nid() == Some(nid)),
            "nid {nid}: {errs:?}"
        );
    }
}

#[test]
fn a_directory_that_points_back_at_the_root_is_a_cycle_not_a_hang() {
    let img = Image::open(image("compact")).unwrap();
    let dir = img.lookup(b"/dir/sub").unwrap();
    let entries = img.read_dir_block(&dir, 0).unwrap();
    let deeper = entries.iter().find(|d| d.entry.name == b"deeper").unwrap();
    let at = deeper.dirent_offset.unwrap() as usize;
    let mut b = pristine();
    b[at..at + 8].copy_from_slice(&img.root_nid().to_le_bytes());
    fix_checksum(&mut b);
    let errs = read_everything(b);
    assert!(
        errs.iter().any(|e| matches!(
            e,
            Error::Corrupt {
                what: Corruption::DirectoryCycle { .. },
                ..
            }
        )),
        "{errs:?}"
    );
}

#[test]
fn a_shared_xattr_id_outside_the_image_names_the_inode() {
    let img = Image::open(image("compact")).unwrap();
    let f = img.lookup(b"/xattrs/f7").unwrap();
    let hdr = img.xattr_header(&f).unwrap();
    assert!(!hdr.shared_ids.is_empty(), "f7 uses shared xattrs");
    // The first shared id sits 12 bytes into the xattr body (§7).
    let at = (f.offset + f.inode_size() + 12) as usize;
    let mut b = pristine();
    b[at..at + 4].copy_from_slice(&0x4000_0000u32.to_le_bytes());
    fix_checksum(&mut b);
    let img2 = Image::from_bytes(b).unwrap();
    let err = img2.xattrs(&f).unwrap_err();
    assert!(
        matches!(&err, Error::Corrupt { at, what: Corruption::SharedXattrId { id: 0x4000_0000 } } if at.nid == Some(f.nid)),
        "{err:?}"
    );
}

#[test]
fn an_inline_xattr_overrunning_its_body_is_an_error() {
    let img = Image::open(image("compact")).unwrap();
    let f = img.lookup(b"/xattrs/f1").unwrap();
    let hdr = img.xattr_header(&f).unwrap();
    let first_entry = (f.offset + f.inode_size() + 12 + 4 * hdr.shared_ids.len() as u64) as usize;
    let mut b = pristine();
    b[first_entry + 2..first_entry + 4].copy_from_slice(&0xFFFFu16.to_le_bytes()); // e_value_size
    fix_checksum(&mut b);
    let img2 = Image::from_bytes(b).unwrap();
    let err = img2.xattrs(&f).unwrap_err();
    assert_eq!(err.nid(), Some(f.nid));
    assert!(err.to_string().contains("xattr"), "{err}");
}

#[test]
fn random_byte_flips_in_metadata_never_panic() {
    let full = pristine();
    // Flip bytes in block 0 (superblock and first inodes) and in the metadata that
    // follows; skip the checksum so most mutants get past open.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut opened = 0;
    for _ in 0..400 {
        let mut b = full.clone();
        for _ in 0..1 + rng.next_u64() % 4 {
            let at = (rng.next_u64() % (full.len() as u64 / 2)) as usize;
            b[at] ^= 1 << (rng.next_u64() % 8);
        }
        fix_checksum(&mut b);
        let errs = read_everything(b);
        if errs.len() != 1 || !matches!(errs[0], Error::BadMagic { .. } | Error::BlockSize { .. }) {
            opened += 1;
        }
    }
    assert!(opened > 100, "most mutants get past the superblock checks");
}

#[test]
fn the_fuzz_target_body_survives_the_pristine_and_mutated_images() {
    let full = pristine();
    erofs_reader::fuzzing::open_and_walk_everything(&full);
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    for _ in 0..25 {
        let mut b = full.clone();
        for _ in 0..1 + rng.next_u64() % 8 {
            let at = (rng.next_u64() % full.len() as u64) as usize;
            b[at] = rng.next_u64() as u8;
        }
        erofs_reader::fuzzing::open_and_walk_everything(&b);
    }
}

#[test]
fn mutated_images_opened_from_files_never_panic_through_the_metadata_cache() {
    let full = pristine();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    for i in 0..30 {
        let mut b = full.clone();
        for _ in 0..1 + rng.next_u64() % 6 {
            let at = (rng.next_u64() % full.len() as u64) as usize;
            b[at] ^= rng.next_u64() as u8 | 1;
        }
        fix_checksum(&mut b);
        if i % 3 == 0 {
            b.truncate((rng.next_u64() % full.len() as u64) as usize);
        }
        let p = dir.path().join(format!("m{i}.erofs"));
        std::fs::write(&p, &b).unwrap();
        let Ok(img) = Image::open(&p) else { continue };
        let report = erofs_reader::check::check(
            &img,
            erofs_reader::check::CheckOptions::default(),
            &erofs_reader::NoProgress,
        )
        .expect("nothing cancels the check");
        // The walk finished; any problem names where it is.
        for prob in &report.problems {
            assert!(
                prob.nid.is_some() || prob.offset.is_some() || prob.path.is_some(),
                "{prob:?}"
            );
        }
    }
}

#[test]
fn inputs_that_once_crashed_the_fuzzer_are_handled() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions");
    for bytes in erofs_testkit::files_in(&dir) {
        erofs_reader::fuzzing::open_and_walk_everything(&bytes);
    }
}
