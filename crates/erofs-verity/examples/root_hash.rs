//! The dm-verity root hash and the fs-verity digest of a file, hashed in blocks written out
//! of order (as the builder's threads write them):
//!
//! ```sh
//! cargo run -p erofs-verity --example root_hash -- example.erofs
//! ```

use erofs_verity::{DATA_BLOCK_SIZE, HashTree, LeafSet, fsverity_digest_of_bytes, to_hex};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(path) = std::env::args_os().nth(1) else {
        return Err("usage: root_hash FILE".into());
    };
    let bytes = std::fs::read(&path)?;
    let salt = [0x5a; 32];
    let leaves = LeafSet::new(&salt);
    // Back to front: the leaves do not depend on the order the blocks arrive in.
    let block = DATA_BLOCK_SIZE as usize;
    for (i, chunk) in bytes.chunks(block).enumerate().rev() {
        leaves.write_at((i * block) as u64, chunk);
    }
    let tree = HashTree::from_leaves(&salt, &leaves.finish(bytes.len() as u64));
    println!("dm-verity root hash  {}", to_hex(&tree.root_hash()));
    println!(
        "dm-verity data blocks {}, tree {} bytes",
        tree.data_blocks(),
        tree.tree_len()
    );
    println!(
        "fs-verity digest     {}",
        to_hex(&fsverity_digest_of_bytes(&bytes))
    );
    Ok(())
}
