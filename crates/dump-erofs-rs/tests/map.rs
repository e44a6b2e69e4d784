//! `dump.erofs-rs --map` accounts for every byte of the shipped example image, and the
//! example image's bytes are pinned, so that an unintended format change fails here.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};

/// SHA-256 of `erofs_testkit::build_example_image`'s output.
const EXAMPLE_IMAGE_SHA256: &str =
    "a34b3597e4590c8001b9ae287718c6520ed5db4d39008955c1809bd7d1178f6a";

fn dump(args: &[&str], image: &Path) -> Vec<u8> {
    let o = Command::new(env!("CARGO_BIN_EXE_dump-erofs-rs"))
        .args(args)
        .arg(image)
        .output()
        .expect("run dump.erofs-rs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

#[test]
fn the_example_image_bytes_are_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("example.erofs");
    erofs_testkit::build_example_image(&image);
    let digest = erofs_verity::to_hex(&Sha256::digest(std::fs::read(&image).unwrap()));
    assert_eq!(
        digest,
        EXAMPLE_IMAGE_SHA256,
        "the bytes of the example image changed. If the change is intended (a format or \
         layout change), set EXAMPLE_IMAGE_SHA256 in {} to {digest}, review the map \
         snapshot (`cargo insta review`, or INSTA_UPDATE=always cargo test -p dump-erofs-rs \
         --test map), and say why the bytes change in the commit message",
        file!()
    );
}

#[test]
fn the_map_of_the_example_image_accounts_for_every_byte() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("example.erofs");
    erofs_testkit::build_example_image(&image);
    let size = std::fs::metadata(&image).unwrap().len();

    let json: serde_json::Value =
        serde_json::from_slice(&dump(&["--map", "--json"], &image)).expect("JSON");
    let map = &json["map"];
    assert_eq!(map["image_size"], size);
    let mut at = 0;
    for r in map["ranges"].as_array().unwrap() {
        assert_eq!(r["start"], at, "ranges are sorted and leave no gap: {r}");
        assert!(r["end"].as_u64().unwrap() > at, "no empty range: {r}");
        at = r["end"].as_u64().unwrap();
    }
    assert_eq!(at, size, "the last range ends at the image end");
    let total: u64 = map["totals"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, size, "the totals sum to the image size");
    assert_eq!(
        map["totals"].get("unreferenced"),
        None,
        "every block is used"
    );
    for kind in ["superblock", "inode", "inline-xattrs", "directory", "data"] {
        assert!(map["totals"][kind].as_u64() > Some(0), "{kind}: {map}");
    }

    let text = String::from_utf8(dump(&["--map"], &image)).unwrap();
    insta::assert_snapshot!("example_image_map", text);
}
