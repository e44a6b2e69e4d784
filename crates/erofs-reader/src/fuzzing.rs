//! The bodies of the fuzz targets, public with the `fuzzing` feature so that fuzz/ and the
//! tests run them; not part of the API otherwise.

use crate::check::{CheckOptions, check};
use crate::data::ExtentKind;
use crate::image::{Image, OpenOptions};
use crate::progress::NoProgress;
use crate::source::ReadAt;

/// Most file bytes read per input, across all files, so one input stays fast even when
/// many files map the same blocks.
const READ_BUDGET: u64 = 64 << 20;

/// Opens `bytes` as an image without the checksum check, so that mutated bytes reach the
/// inodes instead of stopping at the superblock.
pub fn open_unchecked<'a>(bytes: impl ReadAt + 'a) -> Option<Image<'a>> {
    Image::from_source(bytes, OpenOptions::default().verify_checksum(false)).ok()
}

/// Opens `bytes` with [`open_unchecked`] and exercises every reader function on
/// everything reachable. Errors are expected and ignored; the property under test is the
/// absence of panics, hangs and unbounded allocation.
pub fn open_and_walk_everything(bytes: &[u8]) {
    let Some(img) = open_unchecked(bytes) else {
        return;
    };
    let _ = crate::summary::SuperblockInfo::of(&img);
    let _ = check(&img, CheckOptions::default(), &NoProgress);
    let _ = crate::stats::stats(&img, &NoProgress);
    let Ok(walk) = img.walk() else {
        return;
    };
    let mut budget = READ_BUDGET;
    let mut buf = vec![0u8; 64 * 1024];
    for entry in walk {
        let Ok(e) = entry else { continue };
        let _ = img.lookup(&e.path);
        let _ = img.xattrs(&e.inode);
        let _ = img.get_xattr(&e.inode, b"user.shared");
        let _ = img.get_xattr(&e.inode, b"trusted.erofs.fingerprint");
        let _ = img.fingerprint(&e.inode);
        if e.inode.is_symlink() {
            let _ = img.readlink(&e.inode);
        }
        if e.inode.is_dir() {
            let _ = img.lookup_name(&e.inode, b"x1");
        }
        if e.inode.is_compressed() {
            let _ = img.compression_algorithm(&e.inode);
            let Ok(extents) = img.z_extents(&e.inode) else {
                continue;
            };
            // Decode each extent (the middle of it, so that lookbacks run too) within budget.
            for ext in extents {
                if budget == 0 {
                    break;
                }
                let pos = ext.logical + ext.length / 2;
                let n = ((ext.end() - pos) as usize).min(buf.len());
                if let Ok(got) = img.read_at(&e.inode, pos, &mut buf[..n]) {
                    budget = budget.saturating_sub(ext.length.max(got as u64));
                }
            }
            continue;
        }
        let Ok(extents) = img.data_extents(&e.inode) else {
            continue;
        };
        for ext in extents {
            if ext.kind == ExtentKind::Hole {
                continue;
            }
            let mut pos = ext.logical;
            while pos < ext.end() && budget > 0 {
                let n = ((ext.end() - pos) as usize).min(buf.len());
                match img.read_at(&e.inode, pos, &mut buf[..n]) {
                    Ok(0) | Err(_) => break,
                    Ok(got) => {
                        pos += got as u64;
                        budget = budget.saturating_sub(got as u64);
                    }
                }
            }
        }
    }
}

/// The body of the `decoders` fuzz target: the first byte picks the algorithm and the mode,
/// the next two the decoded length; the rest is a pcluster. Exercises each decoder on
/// arbitrary streams (no panic, output never longer than asked).
pub fn decode_pcluster(data: &[u8]) {
    use erofs_format::compress::Algorithm;
    if data.len() < 3 {
        return;
    }
    let algorithm = match data[0] & 3 {
        0 => Algorithm::Lz4,
        1 => Algorithm::Lzma,
        2 => Algorithm::Deflate,
        _ => Algorithm::Zstd,
    };
    let out_len = usize::from(u16::from_le_bytes([data[1], data[2]]));
    let req = crate::decompress::Request {
        algorithm,
        out_len,
        partial: data[0] & 4 != 0,
        zero_padding: data[0] & 8 != 0,
        physical: 0,
        lzma_dict_size: 1 << 16,
    };
    if let Ok(out) = crate::decompress::decode(&req, &data[3..]) {
        assert_eq!(out.len(), out_len);
    }
}

/// A metadata read through the image's block cache, for the test that hammers the cache
/// from several threads (raw reads are not part of the API).
pub fn read_meta(image: &Image<'_>, offset: u64, buf: &mut [u8]) -> crate::Result<()> {
    image.read_meta(offset, buf)
}

/// Pclusters `image` has decoded so far (reads, checks, [`Image::z_for_each_decoded`]), for
/// the tests that check a sequential read decodes each one once.
pub fn pcluster_decodes(image: &Image<'_>) -> u64 {
    image
        .zcache()
        .decodes
        .load(std::sync::atomic::Ordering::Relaxed)
}
