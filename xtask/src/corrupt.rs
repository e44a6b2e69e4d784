//! Deliberately damaged images, derived from a clean image by editing bytes at known offsets.
//! The superblock checksum is recomputed after the damage (unless the damage *is* the
//! checksum), so the kernel gets past it and meets the broken structure itself.

use anyhow::{Context, Result, bail};
use erofs_guest::plan::CorruptExpect;

const SB: usize = 1024;
const MAGIC: u32 = 0xE0F5_E1E2;
const COMPAT_SB_CHKSUM: u32 = 1;

/// One damaged image.
pub struct Damaged {
    /// Name of the damage.
    pub label: String,
    /// The damaged bytes.
    pub bytes: Vec<u8>,
    /// What the kernel must do with it on a block device.
    pub expect: CorruptExpect,
    /// What it must do when mounted file-backed, if different.
    pub file_expect: Option<CorruptExpect>,
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn put16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the superblock checksum of an image with `1 << blkszbits`-byte blocks, if the
/// image has one. Damage that should reach the kernel's deeper checks is resealed with this,
/// so that the mount does not stop at the checksum.
pub fn reseal(img: &mut [u8], blkszbits: u8) {
    if u32_at(img, SB + 8) & COMPAT_SB_CHKSUM == 0 {
        return;
    }
    erofs_format::seal_checksum(img, blkszbits);
}

/// A directory entry found in a block: (name, nid, byte offset of the dirent in the image).
type Dirent = (Vec<u8>, u64, usize);

/// What we need to know about the clean image.
struct Layout {
    bs: usize,
    meta: usize,
}

impl Layout {
    fn inode_off(&self, nid: u64) -> usize {
        self.meta * self.bs + nid as usize * 32
    }

    /// (offset of the first directory block, dirents in it as (name, nid, dirent offset)).
    fn dir_block(&self, img: &[u8], nid: u64) -> Result<(usize, Vec<Dirent>)> {
        let io = self.inode_off(nid);
        let fmt = u16_at(img, io);
        let extended = fmt & 1 != 0;
        let layout = (fmt >> 1) & 7;
        let icount = u16_at(img, io + 2) as usize;
        let size = if extended {
            u64::from_le_bytes(img[io + 8..io + 16].try_into()?) as usize
        } else {
            u32_at(img, io + 8) as usize
        };
        let isize = if extended { 64 } else { 32 };
        let xsize = if icount == 0 {
            0
        } else {
            12 + 4 * (icount - 1)
        };
        let start = match layout {
            2 if size < self.bs => io + isize + xsize,
            0 | 2 => u32_at(img, io + 16) as usize * self.bs,
            l => bail!("root directory has layout {l}, cannot locate its dirents"),
        };
        let blen = size.min(self.bs);
        let blk = &img[start..start + blen];
        let n = u16_at(blk, 8) as usize / 12;
        let mut out = Vec::new();
        for i in 0..n {
            let off = u16_at(blk, i * 12 + 8) as usize;
            let end = if i + 1 < n {
                u16_at(blk, (i + 1) * 12 + 8) as usize
            } else {
                blk[off..]
                    .iter()
                    .position(|&c| c == 0)
                    .map_or(blen, |p| off + p)
            };
            let nid = u64::from_le_bytes(blk[i * 12..i * 12 + 8].try_into()?);
            out.push((blk[off..end].to_vec(), nid, start + i * 12));
        }
        Ok((start, out))
    }
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// All damaged variants of `clean` (built from [`crate::trees::small`]: root holds `a` (10
/// bytes, an xattr), `b` (5000 bytes), `c` (8192 bytes), `d/`, `s`).
pub fn variants(clean: &[u8]) -> Result<Vec<Damaged>> {
    if clean.len() < SB + 128 || u32_at(clean, SB) != MAGIC {
        bail!("not an EROFS image");
    }
    let bs = 1usize << clean[SB + 12];
    let l = Layout {
        bs,
        meta: u32_at(clean, SB + 40) as usize,
    };
    let root = u16_at(clean, SB + 14) as u64;
    let (_, dirents) = l
        .dir_block(clean, root)
        .context("reading the root directory")?;
    let nid_of = |name: &[u8]| {
        dirents
            .iter()
            .find(|d| d.0 == name)
            .map(|d| d.1)
            .with_context(|| format!("no {} in root", String::from_utf8_lossy(name)))
    };
    let (a, b, c) = (nid_of(b"a")?, nid_of(b"b")?, nid_of(b"c")?);
    let first_dirent = dirents[0].2;
    let nameoff0 = u16_at(clean, first_dirent + 8);

    let mut out = Vec::new();
    let mut add =
        |label: &str, expect: CorruptExpect, reseal_it: bool, f: &dyn Fn(&mut Vec<u8>)| {
            let mut img = clean.to_vec();
            f(&mut img);
            if reseal_it {
                reseal(&mut img, bs.trailing_zeros() as u8);
            }
            out.push(Damaged {
                label: label.into(),
                bytes: img,
                expect,
                file_expect: None,
            });
        };
    use CorruptExpect::*;
    add("bad magic", MountFails, true, &|i| i[SB] ^= 0xff);
    if u32_at(clean, SB + 8) & COMPAT_SB_CHKSUM != 0 {
        add("bad superblock checksum", MountFails, false, &|i| {
            i[SB + 64 + 15] ^= 0x5a
        });
    }
    add("blkszbits 8", MountFails, true, &|i| i[SB + 12] = 8);
    add("blkszbits 16", MountFails, true, &|i| i[SB + 12] = 16);
    add("unknown incompat feature", MountFails, true, &|i| {
        let v = u32_at(i, SB + 80) | 0x8000_0000;
        put32(i, SB + 80, v)
    });
    add("dirblkbits 1", MountFails, true, &|i| i[SB + 90] = 1);
    add("volume name without NUL", MountFails, true, &|i| {
        i[SB + 64..SB + 80].fill(b'L')
    });
    add("root nid is a regular file", MountFails, true, &|i| {
        put16(i, SB + 14, a as u16)
    });
    add("root nid beyond the image", SomeError, true, &|i| {
        put16(i, SB + 14, 0xffff)
    });
    add("dirent nameoff 0", SomeError, true, &|i| {
        put16(i, first_dirent + 8, 0)
    });
    add("dirent nameoff beyond the block", SomeError, true, &|i| {
        put16(i, first_dirent + 8, bs as u16 + 12)
    });
    add(
        "dirent nameoff not a multiple of 12",
        SomeError,
        true,
        &|i| put16(i, first_dirent + 8, nameoff0 + 1),
    );
    add("dirent nameoff names overlap", SomeError, true, &|i| {
        // second name starts before the first
        let second = first_dirent + 12 + 8;
        put16(i, second, nameoff0 - 1)
    });
    add("inode with unknown data layout", SomeError, true, &|i| {
        let o = l.inode_off(b);
        let f = u16_at(i, o) | (7 << 1);
        put16(i, o, f)
    });
    add("inode with unknown i_format bits", SomeError, true, &|i| {
        let o = l.inode_off(b);
        let f = u16_at(i, o) | 0x8000;
        put16(i, o, f)
    });
    add(
        "data block address beyond the image",
        SomeError,
        true,
        &|i| put32(i, l.inode_off(c) + 16, 0x00ff_ff00),
    );
    // The xattr body (and the inline tail of `a`) now run past the end of the image; with
    // buffer heads the block device and the file-backed path both read zeros there, so the
    // kernel may see nothing wrong. Only "no crash" can be asked.
    add("huge xattr count", NoCrash, true, &|i| {
        put16(i, l.inode_off(a) + 2, 0xffff)
    });
    add("file type in mode is zero", SomeError, true, &|i| {
        let o = l.inode_off(b) + 4;
        let m = u16_at(i, o) & 0o7777;
        put16(i, o, m)
    });
    let half = clean.len() / 2;
    add("truncated to half", SomeError, false, &|i| {
        i.truncate(half.max(SB + 128 + 1))
    });
    // Random damage to the metadata area: anything but a crash is fine.
    let meta_end = clean.len().min(8 * bs).max(SB + 256);
    for seed in 0..8u64 {
        add(&format!("random flips seed {seed}"), NoCrash, true, &|i| {
            let mut s = seed.wrapping_mul(0x1234_5678_9abc_def1);
            for _ in 0..24 {
                let off = SB + 128 + (splitmix(&mut s) as usize % (meta_end - SB - 128));
                i[off] ^= 1 << (splitmix(&mut s) % 8);
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reseal_restores_the_checksum_mkfs_erofs_wrote() {
        let path = crate::util::workspace_root().join("testdata/images/compact.erofs");
        let clean = std::fs::read(&path).expect("reference image");
        let mut img = clean.clone();
        put32(&mut img, SB + 4, 0);
        reseal(&mut img, clean[SB + 12]);
        assert_eq!(img, clean);
    }
}
