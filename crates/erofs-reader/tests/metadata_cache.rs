//! Metadata reads through the shared block cache return the image's bytes, whatever the
//! number of threads reading at once and however often units are evicted.

mod common;

use erofs_reader::Image;
use erofs_testkit::Rng;

#[test]
fn concurrent_metadata_reads_through_a_full_cache_return_the_image_bytes() {
    // A valid image followed by 12 MiB of patterned bytes: three times what the cache
    // holds, so units are evicted and read again while other threads use them.
    let mut bytes = std::fs::read(common::image("compact")).expect("compact.erofs");
    let pad = 12 << 20;
    bytes.extend((0..pad).map(|i: usize| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    bytes.push(0x5A); // a partial last unit
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("padded.erofs");
    std::fs::write(&path, &bytes).unwrap();
    let img = Image::open(&path).unwrap();
    assert_eq!(img.len(), bytes.len() as u64);

    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (img, bytes) = (&img, &bytes);
            s.spawn(move || {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t + 1));
                let mut buf = vec![0u8; 10_000];
                for _ in 0..20_000 {
                    let len = (rng.next_u64() % 10_000) as usize;
                    let at = rng.next_u64() % (bytes.len() - len + 1) as u64;
                    erofs_reader::fuzzing::read_meta(img, at, &mut buf[..len]).unwrap();
                    assert_eq!(
                        &buf[..len],
                        &bytes[at as usize..at as usize + len],
                        "{at}+{len}"
                    );
                }
                // Reads past the end are refused, not clamped.
                assert!(
                    erofs_reader::fuzzing::read_meta(img, bytes.len() as u64 - 1, &mut buf[..2])
                        .is_err()
                );
            });
        }
    });
}
