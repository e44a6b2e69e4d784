//! What the `share_walk` fuzz target runs, kept here so that its regressions run as
//! ordinary tests too.

use erofs_reader::NoProgress;
use erofs_reader::fuzzing::open_unchecked;

use crate::collect::{facts_of, image_facts, regular_files};
use crate::verify::verify_files;
use crate::{analyze, render_text};

/// Opens arbitrary bytes as an image (without the checksum check) and runs everything the
/// shared report and fingerprint verification do on it. The property: no panic, no hang,
/// no unbounded allocation.
pub fn exercise(bytes: &[u8]) {
    let Some(img) = open_unchecked(bytes) else {
        return;
    };
    let Ok(files) = regular_files(&img) else {
        return;
    };
    if let Ok(facts) = facts_of(0, &img, &files) {
        let report = analyze(&[image_facts("fuzz", &img)], &facts);
        let _ = render_text(&report, 10);
    }
    let _ = verify_files(&img, files, &NoProgress);
}
