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
