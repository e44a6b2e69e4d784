//! `fsck.erofs-rs --verity=ROOTHASH`: the tree and every data block are checked, and a bad
//! block is named with the file that owns it.

use std::path::Path;
use std::process::{Command, Output};

use erofs_testkit::{build_verity_image, write_file};
use erofs_verity::to_hex;

fn fsck(args: &[&str], image: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fsck-erofs-rs"))
        .args(args)
        .arg(image)
        .output()
        .expect("run fsck-erofs-rs")
}

fn flip(path: &Path, at: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[at as usize] ^= 1;
    std::fs::write(path, b).unwrap();
}

/// A 4096-byte-block image whose first data block holds `first.bin`.
fn image(dir: &Path) -> (std::path::PathBuf, erofs_builder::VerityReport) {
    let src = dir.join("src");
    write_file(&src, "first.bin", &[0x5a; 3 * 4096]);
    write_file(&src, "d/second.bin", &[0xa5; 2 * 4096 + 10]);
    let img = dir.join("v.erofs");
    let report = build_verity_image(&src, &img);
    (img, report)
}

#[test]
fn a_good_image_passes_and_says_how_much_it_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (img, r) = image(dir.path());
    let arg = format!("--verity={}", to_hex(&r.root_hash));
    let out = fsck(&[&arg], &img);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "root hash matches, {} data blocks verified",
            r.data_blocks
        )),
        "{stdout}"
    );
}

#[test]
fn a_flipped_data_byte_names_the_block_and_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let (img, r) = image(dir.path());
    let arg = format!("--verity={}", to_hex(&r.root_hash));
    // Find where first.bin's bytes are: the first block filled with 0x5a.
    let bytes = std::fs::read(&img).unwrap();
    let at = bytes
        .chunks(4096)
        .position(|b| b.iter().all(|&c| c == 0x5a))
        .expect("first.bin's data") as u64;
    flip(&img, at * 4096 + 7);
    let out = fsck(&[&arg], &img);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains(&format!("data block {at} ")) && err.contains("/first.bin"),
        "{err}"
    );
}

#[test]
fn a_wrong_root_a_damaged_tree_and_a_missing_tree_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (img, r) = image(dir.path());
    let out = fsck(&[&format!("--verity={}", "00".repeat(32))], &img);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("root hash does not match"));

    let arg = format!("--verity={}", to_hex(&r.root_hash));
    // The tree's one hash block follows the superblock's block.
    flip(&img, r.hash_offset + 4096 + 3);
    let out = fsck(&[&arg], &img);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("root hash does not match"));

    let plain = dir.path().join("plain.erofs");
    erofs_testkit::build_image(&dir.path().join("src"), &plain, false);
    let out = fsck(&[&arg], &plain);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("was the image built with --verity"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = fsck(&["--verity=xyz"], &plain);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex digits"));
}
