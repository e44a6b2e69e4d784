//! Builds a reproducible, fingerprinted image of a directory, with a progress callback that
//! could cancel it:
//!
//! ```sh
//! cargo run -p erofs-builder --example build_image -- testdata/example-tree /tmp/example.erofs
//! ```
//!
//! Without arguments it builds a small tree of its own in a temporary directory.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use erofs_builder::{
    CancelToken, FingerprintOptions, Options, Phase, Progress, UuidChoice, build_dir_to_path,
};

/// Counts the files written; a UI would draw a bar and call `token.cancel()` on "stop".
struct Counter {
    files: AtomicU64,
    token: CancelToken,
}

impl Progress for Counter {
    fn phase(&self, phase: Phase) {
        eprintln!("phase: {phase:?}");
    }
    fn advance(&self, files: u64, _bytes: u64) {
        self.files.fetch_add(files, Ordering::Relaxed);
    }
    fn warning(&self, message: &str) {
        eprintln!("warning: {message}");
    }
    fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (source, image) = match (args.next(), args.next()) {
        (Some(source), Some(image)) => (source, image),
        (None, _) => {
            let source = tmp.path().join("tree");
            std::fs::create_dir_all(source.join("etc"))?;
            std::fs::write(source.join("etc/hostname"), "example\n")?;
            std::fs::write(source.join("data.bin"), vec![0x5a; 100_000])?;
            (source, tmp.path().join("example.erofs"))
        }
        _ => return Err("usage: build_image [SOURCE IMAGE]".into()),
    };
    let mut options = Options::default();
    // A fixed time and UUID: the same tree gives the same bytes.
    options.timestamp = Some(0);
    options.uuid = UuidChoice::Clear;
    options.fingerprint = Some(FingerprintOptions::new("trusted.erofs.fingerprint"));
    let progress = Counter {
        files: AtomicU64::new(0),
        token: CancelToken::new(),
    };
    let report = build_dir_to_path(&source, &image, &options, &progress)?;
    println!(
        "{}: {} inodes, {} bytes, {} fingerprinted files ({} files written)",
        image.display(),
        report.inodes,
        report.image_bytes,
        report.fingerprinted_files,
        progress.files.load(Ordering::Relaxed)
    );
    Ok(())
}
