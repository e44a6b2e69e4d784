//! Directory blocks (§6): entries sorted bytewise, `.` and `..` included, packed in order
//! into blocks so that a dirent and its name never cross a block.

use erofs_format::{DIRENT_SIZE, Dirent};
use zerocopy::IntoBytes;

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

/// The directory's `i_size`: full blocks before the last one, plus the bytes used in the last.
pub fn dir_size<'a>(names: impl Iterator<Item = &'a [u8]> + Clone, blksz: usize) -> u64 {
    let counts = block_counts(names.clone(), blksz);
    let Some(&last) = counts.last() else {
        return 0;
    };
    let skip: usize = counts[..counts.len() - 1].iter().sum();
    let last_used: usize = names
        .skip(skip)
        .take(last)
        .map(|n| DIRENT_SIZE + n.len())
        .sum();
    (counts.len() as u64 - 1) * blksz as u64 + last_used as u64
}

/// Encodes sorted entries: every block but the last is `blksz` bytes, zero-filled after the
/// last name; the last block ends at its last name byte.
pub fn encode(entries: &[Entry<'_>], blksz: usize) -> Vec<u8> {
    let counts = block_counts(entries.iter().map(|e| e.name), blksz);
    let mut out = Vec::with_capacity(counts.len() * blksz);
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
            out.extend_from_slice(d.as_bytes());
            nameoff += e.name.len();
        }
        for e in block {
            out.extend_from_slice(e.name);
        }
        if bi + 1 < counts.len() {
            out.resize(base + blksz, 0);
        }
        start += count;
    }
    out
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
        assert_eq!(
            dir_size(long.iter().map(|n| n.as_slice()), 512),
            512 + 15 * 20
        );
        let entries: Vec<Entry> = long
            .iter()
            .map(|n| Entry {
                name: n,
                nid: 7,
                file_type: 1,
            })
            .collect();
        let bytes = encode(&entries, 512);
        assert_eq!(bytes.len(), 512 + 300);
        assert_eq!(u16::from_le_bytes([bytes[8], bytes[9]]), 25 * 12);
        assert_eq!(
            u16::from_le_bytes([bytes[512 + 8], bytes[512 + 9]]),
            15 * 12
        );
    }
}
