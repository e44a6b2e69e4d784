//! The space map of a `--tar=i` image: file data lives in the tar (extra device 1), so the
//! image's bytes are metadata, chunk tables and padding, and the map still covers them all.

use std::process::Command;

use erofs_reader::Image;
use erofs_reader::space::{SpaceKind, space_map};
use erofs_testkit::tar::Tar;

#[test]
fn an_indexed_tar_image_maps_its_chunk_tables_and_no_data() {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("in.tar");
    let mut t = Tar::default();
    t.dir("etc/")
        .file("etc/motd", &[b'm'; 3000])
        .file("big", &[7u8; 20_000]);
    std::fs::write(&tar, t.finish()).unwrap();
    let img_path = dir.path().join("out.img");
    let out = Command::new(env!("CARGO_BIN_EXE_mkfs-erofs-rs"))
        .args(["--tar=i", "-T", "0", "-U", "clear", "-q"])
        .arg(&tar)
        .arg(&img_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let img = Image::open(&img_path).unwrap();
    let map = space_map(&img).expect("chunks on the extra device are skipped, not errors");
    assert_eq!(map.totals.values().sum::<u64>(), img.len());
    assert_eq!(map.totals.get("data"), None, "no file data in the image");
    let tables: Vec<_> = map
        .ranges
        .iter()
        .filter(|r| r.kind == SpaceKind::ChunkIndexes)
        .collect();
    assert_eq!(tables.len(), 2, "{tables:?}");
    assert!(
        map.ranges.iter().any(|r| r.kind == SpaceKind::DeviceTable),
        "the tar is extra device 1"
    );
}
