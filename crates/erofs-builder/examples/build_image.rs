//! Builds a reproducible, fingerprinted image of a directory:
//!
//! ```sh
//! cargo run -p erofs-builder --example build_image -- testdata/example-tree /tmp/example.erofs
//! ```

use std::path::PathBuf;

use erofs_builder::{FingerprintOptions, NoProgress, Options, UuidChoice, build_dir_to_path};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(source), Some(image)) = (args.next(), args.next()) else {
        return Err("usage: build_image SOURCE IMAGE".into());
    };
    let options = Options {
        // A fixed time and UUID: the same tree gives the same bytes.
        timestamp: Some(0),
        uuid: UuidChoice::Clear,
        fingerprint: Some(FingerprintOptions {
            xattr_name: b"trusted.erofs.fingerprint".to_vec(),
        }),
        ..Options::default()
    };
    let report = build_dir_to_path(&source, &image, &options, &NoProgress)?;
    println!(
        "{}: {} inodes, {} bytes, {} fingerprinted files",
        image.display(),
        report.inodes,
        report.image_bytes,
        report.fingerprinted_files
    );
    Ok(())
}
