//! Recomputes every content fingerprint of an image and says whether they all match:
//!
//! ```sh
//! cargo run -p erofs-share --example verify_fingerprints -- example.erofs
//! ```

use erofs_reader::{Image, NoProgress};
use erofs_share::verify::verify_fingerprints;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = std::env::args_os().nth(1) else {
        return Err("usage: verify_fingerprints IMAGE".into());
    };
    let img = Image::open(&path)?;
    let report = verify_fingerprints(&img, &NoProgress)?;
    println!(
        "{} of {} fingerprints match, {} error(s)",
        report.matched,
        report.verified,
        report.errors()
    );
    if report.errors() > 0 {
        std::process::exit(4);
    }
    Ok(())
}
