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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value_of_123456789_is_the_erofs_style_crc() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(superblock_checksum(b"123456789"), 0x1CF9_6D7C);
    }

    #[test]
    fn range_for_each_block_size() {
        assert_eq!(superblock_checksum_range(12), 1024..4096);
        assert_eq!(superblock_checksum_range(10), 1024..2048);
        assert_eq!(superblock_checksum_range(9), 1024..1536);
    }
}
