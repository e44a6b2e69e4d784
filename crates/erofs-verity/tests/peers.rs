//! The trees and digests this crate computes are the ones `veritysetup` (cryptsetup) and
//! `fsverity` (fsverity-utils) compute and accept.

use std::path::Path;
use std::process::Command;

use erofs_testkit::{have, skip_or_fail};
use erofs_verity::{
    HASH_BLOCK_SIZE, HashTree, LeafSet, VeritySuperblock, fsverity_digest,
    fsverity_digest_of_bytes, hash_block, to_hex,
};

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Image + superblock + tree, as `mkfs.erofs-rs --verity` appends them.
fn with_tree(data: &[u8], salt: &[u8]) -> (Vec<u8>, HashTree, u64) {
    let set = LeafSet::new(salt);
    // Written in two unaligned halves, the second first.
    let cut = data.len() / 2 + 17;
    set.write_at(cut as u64, &data[cut..]);
    set.write_at(0, &data[..cut]);
    let tree = HashTree::from_leaves(salt, &set.finish(data.len() as u64));
    let mut img = data.to_vec();
    img.resize(data.len().div_ceil(4096) * 4096, 0);
    let hash_offset = img.len() as u64;
    let sb = VeritySuperblock {
        uuid: [0x42; 16],
        data_blocks: tree.data_blocks(),
        salt: salt.to_vec(),
    };
    img.extend_from_slice(&sb.encode());
    img.resize(img.len() + HASH_BLOCK_SIZE as usize - 512, 0);
    img.extend_from_slice(&tree.tree_bytes());
    (img, tree, hash_offset)
}

fn veritysetup_verify(img: &Path, root: &str, hash_offset: u64) -> std::process::Output {
    Command::new("veritysetup")
        .arg("verify")
        .arg(img)
        .arg(img)
        .arg(root)
        .arg(format!("--hash-offset={hash_offset}"))
        .output()
        .expect("run veritysetup")
}

#[test]
fn veritysetup_accepts_our_tree_and_rejects_a_flipped_byte() {
    if !have("veritysetup") && skip_or_fail("veritysetup (Debian cryptsetup-bin) is not installed")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 1 block (no hash level), 128 (one level), 300 blocks + a partial one (two levels).
    for (len, salt) in [
        (4096usize, &b""[..]),
        (128 * 4096, &b"\xab\xcd"[..]),
        (300 * 4096 + 1000, &[7u8; 32][..]),
    ] {
        let data = pseudo_random(len, len as u64);
        let (img, tree, hash_offset) = with_tree(&data, salt);
        let path = dir.path().join(format!("img-{len}"));
        std::fs::write(&path, &img).unwrap();
        let root = to_hex(&tree.root_hash());
        let out = veritysetup_verify(&path, &root, hash_offset);
        assert!(
            out.status.success(),
            "veritysetup verify ({len} bytes): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut bad = img.clone();
        bad[len / 2] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        let out = veritysetup_verify(&path, &root, hash_offset);
        assert!(!out.status.success(), "a flipped byte passed ({len} bytes)");
    }
}

#[test]
fn fsverity_digest_matches_the_fsverity_tool() {
    if !have("fsverity") && skip_or_fail("fsverity (Debian fsverity) is not installed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for len in [
        0usize,
        1,
        4096,
        4097,
        129 * 4096 + 5,
        128 * 128 * 4096 + 4096,
    ] {
        let data = pseudo_random(len, 3 + len as u64);
        let path = dir.path().join("f");
        std::fs::write(&path, &data).unwrap();
        let out = Command::new("fsverity")
            .args(["digest", "--compact"])
            .arg(&path)
            .output()
            .expect("run fsverity");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let want = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            to_hex(&fsverity_digest_of_bytes(&data)),
            want.trim(),
            "{len} bytes"
        );
        // The same from leaf hashes gathered out of order.
        let set = LeafSet::new(b"");
        set.write_at(0, &data);
        assert_eq!(
            fsverity_digest(len as u64, &set.finish(len as u64)),
            fsverity_digest_of_bytes(&data)
        );
    }
    assert_eq!(hash_block(b"", b"").len(), 32);
}
