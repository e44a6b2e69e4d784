//! Decodes the superblock of an image with erofs-format alone, and checks its checksum:
//!
//! ```sh
//! cargo run -p erofs-format --example superblock -- example.erofs
//! ```

use std::io::Read;

use erofs_format::{
    Compat, EROFS_MAGIC, SUPERBLOCK_OFFSET, SUPERBLOCK_SIZE, SuperBlock, checksum_of_head,
};
use zerocopy::FromBytes;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = std::env::args_os().nth(1) else {
        return Err("usage: superblock IMAGE".into());
    };
    // The checksum covers at most the first 4 KiB; erofs-format does no I/O, so the caller
    // reads the head of the image.
    let mut head = Vec::new();
    std::fs::File::open(&path)?
        .take(4096)
        .read_to_end(&mut head)?;
    let raw = head
        .get(SUPERBLOCK_OFFSET..SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE)
        .ok_or("too short for a superblock")?;
    let sb = SuperBlock::read_from_bytes(raw).map_err(|_| "too short for a superblock")?;
    if sb.magic.get() != EROFS_MAGIC {
        return Err(format!("bad magic {:#010x}", sb.magic.get()).into());
    }
    println!("block size   {}", sb.block_size());
    println!("root nid     {}", sb.root_nid());
    println!("inodes       {}", sb.inos.get());
    println!("filesystem   {} bytes", sb.filesystem_bytes());
    println!("compat       {:?}", sb.compat().names_with_unknown());
    println!("incompat     {:?}", sb.incompat().names_with_unknown());
    let (major, minor) = sb.incompat().oldest_linux();
    println!("mountable on Linux {major}.{minor} and later");
    if sb.compat().contains(Compat::SB_CHKSUM) {
        let computed = checksum_of_head(&head, sb.blkszbits);
        let stored = sb.checksum.get();
        let verdict = if computed == stored { "ok" } else { "MISMATCH" };
        println!("checksum     {stored:#010x} ({verdict})");
    }
    Ok(())
}
