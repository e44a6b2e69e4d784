//! The positioned writer (a seekable image file, written by every worker at planned offsets)
//! and the ordered stream writer produce the same bytes, whatever the thread count.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use erofs_builder::source::{DirSource, Source, SourceCtx};
use erofs_builder::{BuildError, FingerprintOptions, NoProgress, Options, Tree, UuidChoice};

/// Deterministic bytes that do not repeat at block or piece boundaries.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Small files, files just around the large-file threshold, two large files (one with an
/// inline tail), and a sparse file with data after a hole.
fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("d/e")).unwrap();
    for i in 0..300u64 {
        let len = (i * 97 % 9000) as usize;
        std::fs::write(root.join(format!("d/f{i}")), pattern(len, i)).unwrap();
    }
    std::fs::write(root.join("edge"), pattern((4 << 20) - 1, 1000)).unwrap();
    std::fs::write(root.join("d/e/big1"), pattern((9 << 20) + 123, 1001)).unwrap();
    std::fs::write(root.join("big2"), pattern(6 << 20, 1002)).unwrap();
    let mut sparse = std::fs::File::create(root.join("sparse")).unwrap();
    sparse.write_all(&pattern(5000, 1003)).unwrap();
    sparse.seek(SeekFrom::Start(40 << 20)).unwrap();
    sparse.write_all(&pattern(70_000, 1004)).unwrap();
    std::os::unix::fs::symlink("d/f1", root.join("link")).unwrap();
}

fn options(threads: usize, fingerprint: bool) -> Options {
    let mut o = Options::default();
    o.threads = threads;
    o.timestamp = Some(1_700_000_000);
    o.uuid = UuidChoice::Clear;
    o.fingerprint = fingerprint.then(|| FingerprintOptions::new("trusted.erofs.fingerprint"));
    o
}

#[test]
fn positioned_writes_equal_the_ordered_stream_for_every_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    for fingerprint in [true, false] {
        let mut stream = Vec::new();
        erofs_builder::build_dir_to_writer(
            &src,
            &mut stream,
            &options(2, fingerprint),
            &NoProgress,
        )
        .unwrap();
        assert!(stream.len() > 20 << 20, "the large files are in the image");
        for threads in [1, 2, 8] {
            let image = tmp.path().join(format!("j{threads}.erofs"));
            let report = erofs_builder::build_dir_to_path(
                &src,
                &image,
                &options(threads, fingerprint),
                &NoProgress,
            )
            .unwrap();
            let positioned = std::fs::read(&image).unwrap();
            assert!(
                positioned == stream,
                "fingerprint {fingerprint}, -j{threads}: positioned image differs from the stream"
            );
            if fingerprint {
                // Every non-empty regular file: d/f0 is empty.
                assert_eq!(report.fingerprinted_files, 303);
            }
        }
    }
}

/// A directory whose file `big` shrinks to 5 MiB right after the scan saw 8 MiB.
struct ShrinksAfterScan(DirSource);

impl Source for ShrinksAfterScan {
    fn read_tree(&mut self, ctx: &mut SourceCtx<'_>) -> Result<Tree, BuildError> {
        let tree = self.0.read_tree(ctx)?;
        std::fs::write(self.0.path.join("big"), pattern(5 << 20, 7)).unwrap();
        Ok(tree)
    }
}

#[test]
fn a_large_file_that_shrank_fails_the_positioned_build() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("big"), pattern(8 << 20, 7)).unwrap();
    let mut source = ShrinksAfterScan(DirSource { path: src });
    let image = tmp.path().join("img");
    let err = erofs_builder::build_to_path(&mut source, &image, &options(2, true), &NoProgress)
        .unwrap_err();
    assert!(!image.exists());
    assert!(
        matches!(err, erofs_builder::BuildError::ChangedSize { expected, .. } if expected == 8 << 20),
        "{err}"
    );
}
