//! Arbitrary bytes through the sharing side: the parallel regular-file walk, the facts the
//! shared report is built from, and fingerprint verification (which hashes file data).
//! The property: no panic, no hang, no unbounded allocation. (That the parallel walk finds
//! what the serial one does is a test in erofs-share.)
#![no_main]

use erofs_reader::image::{Image, OpenOptions};
use erofs_share::collect::{facts_of, regular_files};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(img) = Image::from_bytes_with(
        data.to_vec(),
        OpenOptions {
            verify_checksum: false,
        },
    ) else {
        return;
    };
    let Ok(files) = regular_files(&img) else {
        return;
    };
    let _ = facts_of(0, &img, &files);
    let _ = erofs_share::verify::verify_files(&img, files, &erofs_reader::NoProgress);
});
