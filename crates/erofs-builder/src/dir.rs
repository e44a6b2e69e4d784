//! Directory blocks (§6): entries sorted bytewise, `.` and `..` included, packed in order
//! into blocks so that a dirent and its name never cross a block.

use erofs_format::{DIRENT_SIZE, Dirent};
use zerocopy::IntoBytes;

use crate::encode::{Count, Sink};
use crate::tree::{DirEntry, Tree};

/// One entry to store: name, target nid and dirent file type.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    /// The name.
    pub name: &'a [u8],
    /// The target nid.
    pub nid: u64,
    /// The `file_type` byte.
    pub file_type: u8,
}

/// Splits sorted names into blocks: returns, for each block, how many entries it holds.
/// A name is charged a dirent plus its bytes; a new block starts when they do not fit.
pub fn block_counts<'a>(names: impl Iterator<Item = &'a [u8]>, blksz: usize) -> Vec<usize> {
    let mut counts = Vec::new();
    let mut used = 0usize;
    let mut n = 0usize;
    for name in names {
        let need = DIRENT_SIZE + name.len();
        if n > 0 && used + need > blksz {
            counts.push(n);
            used = 0;
            n = 0;
        }
        used += need;
        n += 1;
    }
    if n > 0 {
        counts.push(n);
    }
    counts
}

/// The entries of directory `me` (child of `parent`) with `.` and `..`, sorted bytewise:
/// what [`encode`] stores. `nid` gives each inode's nid; the layout, which sizes a directory
/// before nids exist, passes zeroes.
pub fn entries<'a>(
    tree: &'a Tree,
    me: usize,
    parent: usize,
    children: &'a [DirEntry],
    nid: impl Fn(usize) -> u64,
) -> Vec<Entry<'a>> {
    let dir_type = erofs_format::FileType::Directory.raw();
    let mut list = Vec::with_capacity(children.len() + 2);
    list.push(Entry {
        name: b".",
        nid: nid(me),
        file_type: dir_type,
    });
    list.push(Entry {
        name: b"..",
        nid: nid(parent),
        file_type: dir_type,
    });
    for e in children {
        list.push(Entry {
            name: &e.name,
            nid: nid(e.inode),
            file_type: tree.inodes[e.inode].file_type().raw(),
        });
    }
    list.sort_unstable_by(|a, b| a.name.cmp(b.name));
    list
}

/// The directory's `i_size`: its encoding, counted.
pub fn size(entries: &[Entry<'_>], blksz: usize) -> u64 {
    let mut c = Count::default();
    encode(entries, blksz, &mut c);
    c.0 as u64
}

/// Encodes sorted entries: every block but the last is `blksz` bytes, zero-filled after the
/// last name; the last block ends at its last name byte.
pub fn encode(entries: &[Entry<'_>], blksz: usize, out: &mut impl Sink) {
    let counts = block_counts(entries.iter().map(|e| e.name), blksz);
    let mut start = 0;
    for (bi, &count) in counts.iter().enumerate() {
        let block = &entries[start..start + count];
        let base = out.len();
        let mut nameoff = count * DIRENT_SIZE;
        for e in block {
            let mut d = Dirent::default();
            d.nid.set(e.nid);
            d.nameoff.set(nameoff as u16);
            d.file_type = e.file_type;
            out.put(d.as_bytes());
            nameoff += e.name.len();
        }
        for e in block {
            out.put(e.name);
        }
        if bi + 1 < counts.len() {
            out.zeros(base + blksz - out.len());
        }
        start += count;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_below_dot_sort_first_and_blocks_never_split_an_entry() {
        let names: Vec<&[u8]> = vec![b" space", b"-dash", b".", b"..", b"a.txt"];
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names, "bytewise order puts ' ' and '-' before '.'");
        // 512-byte blocks: 40 entries of 12 + 8 bytes fill 800 bytes → two blocks.
        let long: Vec<Vec<u8>> = (0..40)
            .map(|i| format!("name{i:04}").into_bytes())
            .collect();
        let counts = block_counts(long.iter().map(|n| n.as_slice()), 512);
        assert_eq!(counts, vec![25, 15]);
        let entries: Vec<Entry> = long
            .iter()
            .map(|n| Entry {
                name: n,
                nid: 7,
                file_type: 1,
            })
            .collect();
        let mut bytes = Vec::new();
        encode(&entries, 512, &mut bytes);
        assert_eq!(bytes.len(), 512 + 300);
        assert_eq!(
            size(&entries, 512),
            512 + 15 * 20,
            "full blocks, then the last one's bytes"
        );
        // erofs-format's decoder reads back every name, nid and type, block by block.
        let mut names = Vec::new();
        for (block, valid) in [(&bytes[..512], 512), (&bytes[512..], 300)] {
            let b = erofs_format::DirBlock::parse(block, valid).unwrap();
            for e in b.entries() {
                let e = e.unwrap();
                assert_eq!((e.nid, e.file_type.raw()), (7, 1));
                names.push(e.name.to_vec());
            }
        }
        assert_eq!(names, long);
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 25 * 12);
        assert_eq!(
            u16::from_le_bytes([bytes[512 + 8], bytes[512 + 9]]),
            15 * 12
        );
    }
}
