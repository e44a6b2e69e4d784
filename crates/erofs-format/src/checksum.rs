//! The superblock checksum (§14).

use crate::SUPERBLOCK_OFFSET;

/// The byte range of block 0 that the checksum covers: from byte 1024 to the end of block 0,
/// or `blksz` bytes from byte 1024 when blocks are 1 KiB or smaller.
pub fn superblock_checksum_range(blkszbits: u8) -> std::ops::Range<usize> {
    let blksz = 1usize << blkszbits;
    let len = if blksz > SUPERBLOCK_OFFSET {
        blksz - SUPERBLOCK_OFFSET
    } else {
        blksz
    };
    SUPERBLOCK_OFFSET..SUPERBLOCK_OFFSET + len
}

/// The EROFS superblock checksum of `covered`, the bytes of
/// [`superblock_checksum_range`] with the checksum field (its first 4 bytes) zeroed.
///
/// Linux computes `crc32c(~0, buf, len)` without the final inversion, which is the bitwise
/// NOT of the standard CRC-32C.
pub fn superblock_checksum(covered: &[u8]) -> u32 {
    !crc32c::crc32c(covered)
}

/// Where the checksum field lies within the covered bytes (the superblock's `checksum`).
pub const CHECKSUM_FIELD: std::ops::Range<usize> = {
    let at = core::mem::offset_of!(crate::SuperBlock, checksum);
    at..at + 4
};

/// The checksum of an image whose first bytes are `head` (at least up to the end of the
/// covered range, or as much of it as exists), computed with the stored field read as zero.
pub fn checksum_of_head(head: &[u8], blkszbits: u8) -> u32 {
    let range = superblock_checksum_range(blkszbits);
    let covered = head
        .get(range.start..range.end.min(head.len()))
        .unwrap_or(&[]);
    let mut copy = covered.to_vec();
    if let Some(field) = copy.get_mut(CHECKSUM_FIELD) {
        field.fill(0);
    }
    superblock_checksum(&copy)
}

/// Computes the checksum of an image whose first bytes are `head` and stores it in the
/// superblock. Returns it.
pub fn seal_checksum(head: &mut [u8], blkszbits: u8) -> u32 {
    let sum = checksum_of_head(head, blkszbits);
    let at = SUPERBLOCK_OFFSET + CHECKSUM_FIELD.start;
    if let Some(field) = head.get_mut(at..at + 4) {
        field.copy_from_slice(&sum.to_le_bytes());
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_of_123456789_is_the_erofs_style_crc() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(superblock_checksum(b"123456789"), 0x1CF9_6D7C);
    }

    #[test]
    fn sealing_stores_the_checksum_of_the_block_with_the_field_zeroed() {
        let mut head = vec![0u8; 4096];
        head[1024 + 4..1024 + 8].copy_from_slice(&[9, 9, 9, 9]);
        head[2000] = 7;
        let sum = seal_checksum(&mut head, 12);
        assert_eq!(&head[1028..1032], &sum.to_le_bytes());
        let mut zeroed = head[1024..4096].to_vec();
        zeroed[4..8].fill(0);
        assert_eq!(sum, superblock_checksum(&zeroed));
        assert_eq!(checksum_of_head(&head, 12), sum, "sealing is idempotent");
    }

    #[test]
    fn range_for_each_block_size() {
        assert_eq!(superblock_checksum_range(12), 1024..4096);
        assert_eq!(superblock_checksum_range(10), 1024..2048);
        assert_eq!(superblock_checksum_range(9), 1024..1536);
    }
}
