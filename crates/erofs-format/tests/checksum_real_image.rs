//! The superblock checksum (§14) matches what mkfs.erofs 1.5 stored in a real image.

use erofs_format::{SuperBlock, superblock_checksum, superblock_checksum_range};
use zerocopy::FromBytes;

#[test]
fn checksum_of_block_0_from_byte_1024_matches_the_stored_value_in_a_mkfs_image() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/images/compact.erofs"
    );
    let image = std::fs::read(path).expect("testdata/images/compact.erofs");
    let sb = SuperBlock::read_from_bytes(&image[1024..1024 + 128]).expect("superblock");
    assert_eq!(sb.blkszbits, 12, "mkfs.erofs 1.5 writes 4 KiB blocks");
    assert!(
        sb.compat().contains(erofs_format::Compat::SB_CHKSUM),
        "SB_CHKSUM is set by default"
    );
    let range = superblock_checksum_range(sb.blkszbits);
    assert_eq!(range, 1024..4096);
    let mut covered = image[range].to_vec();
    // The checksum field (bytes 1028..1032 of the image) counts as zero.
    covered[4..8].fill(0);
    assert_eq!(superblock_checksum(&covered), sb.checksum.get());
    // Any other byte in the range changes the checksum.
    covered[200] ^= 1;
    assert_ne!(superblock_checksum(&covered), sb.checksum.get());
}
