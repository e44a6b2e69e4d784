//! Deliberately damaged images, derived from a clean image by editing bytes at known offsets.
//! The superblock checksum is recomputed after the damage (unless the damage *is* the
//! checksum), so the kernel gets past it and meets the broken structure itself.

use anyhow::{Context, Result, bail};
use erofs_format::{
    Compat, DataLayout, DirBlock, EROFS_MAGIC, InodeCompact, InodeExtended, InodeFormat,
    SUPERBLOCK_SIZE, SuperBlock,
};
use erofs_guest::plan::CorruptExpect;
use std::mem::offset_of;
use zerocopy::FromBytes;

const SB: usize = erofs_format::SUPERBLOCK_OFFSET;

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

/// The superblock of `img`, for editing in place.
fn sb(img: &mut [u8]) -> &mut SuperBlock {
    SuperBlock::mut_from_bytes(&mut img[SB..SB + SUPERBLOCK_SIZE]).expect("a whole superblock")
}

/// The compact or extended inode header at `o`, for editing in place (the first 32 bytes
/// have the same fields in both forms where the damage touches them).
fn inode(img: &mut [u8], o: usize) -> &mut InodeCompact {
    InodeCompact::mut_from_prefix(&mut img[o..])
        .expect("a whole inode")
        .0
}

/// Recomputes the superblock checksum of an image with `1 << blkszbits`-byte blocks, if the
/// image has one. Damage that should reach the kernel's deeper checks is resealed with this,
/// so that the mount does not stop at the checksum.
pub fn reseal(img: &mut [u8], blkszbits: u8) {
    if !sb(img).compat().contains(Compat::SB_CHKSUM) {
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
        let slot = &img[io..];
        let format = InodeFormat::of_slot(slot)
            .and_then(Result::ok)
            .context("the root inode's i_format")?;
        let (icount, size, startblk) = if format.extended {
            let (d, _) = InodeExtended::read_from_prefix(slot)
                .map_err(|_| anyhow::anyhow!("short inode"))?;
            (d.xattr_icount.get(), d.size.get() as usize, d.i_u.get())
        } else {
            let (d, _) =
                InodeCompact::read_from_prefix(slot).map_err(|_| anyhow::anyhow!("short inode"))?;
            (d.xattr_icount.get(), d.size.get() as usize, d.i_u.get())
        };
        let xsize = erofs_format::xattr::ibody_size(icount);
        let start = match format.layout {
            DataLayout::FlatInline if size < self.bs => io + format.inode_size() + xsize,
            DataLayout::FlatPlain | DataLayout::FlatInline => startblk as usize * self.bs,
            l => bail!("root directory has layout {l:?}, cannot locate its dirents"),
        };
        let blen = size.min(self.bs);
        let block = DirBlock::parse(&img[start..start + blen], blen)
            .map_err(|e| anyhow::anyhow!("root directory block: {e}"))?;
        block
            .entries()
            .map(|e| {
                let e = e.map_err(|e| anyhow::anyhow!("root directory block: {e}"))?;
                Ok((e.name.to_vec(), e.nid, start + e.dirent_offset))
            })
            .collect::<Result<Vec<_>>>()
            .map(|d| (start, d))
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
    let Some(super_block) = clean
        .get(SB..SB + SUPERBLOCK_SIZE)
        .and_then(|b| SuperBlock::read_from_bytes(b).ok())
        .filter(|s| s.magic.get() == EROFS_MAGIC)
    else {
        bail!("not an EROFS image");
    };
    let bs = 1usize << super_block.blkszbits;
    let l = Layout {
        bs,
        meta: super_block.meta_blkaddr.get() as usize,
    };
    let root = super_block.root_nid();
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
    let nameoff_at = offset_of!(erofs_format::Dirent, nameoff);
    let nameoff0 = erofs_format::Dirent::read_from_prefix(&clean[first_dirent..])
        .map_err(|_| anyhow::anyhow!("short dirent"))?
        .0
        .nameoff
        .get();

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
    if super_block.compat().contains(Compat::SB_CHKSUM) {
        add("bad superblock checksum", MountFails, false, &|i| {
            sb(i).volume_name[15] ^= 0x5a
        });
    }
    add("blkszbits 8", MountFails, true, &|i| sb(i).blkszbits = 8);
    add("blkszbits 16", MountFails, true, &|i| sb(i).blkszbits = 16);
    add("unknown incompat feature", MountFails, true, &|i| {
        let s = sb(i);
        let v = s.feature_incompat.get() | 0x8000_0000;
        s.feature_incompat.set(v)
    });
    add("dirblkbits 1", MountFails, true, &|i| sb(i).dirblkbits = 1);
    add("volume name without NUL", MountFails, true, &|i| {
        sb(i).volume_name.fill(b'L')
    });
    add("root nid is a regular file", MountFails, true, &|i| {
        sb(i).root_nid.set(a as u16)
    });
    add("root nid beyond the image", SomeError, true, &|i| {
        sb(i).root_nid.set(0xffff)
    });
    let set_nameoff = |i: &mut Vec<u8>, dirent: usize, v: u16| {
        i[dirent + nameoff_at..dirent + nameoff_at + 2].copy_from_slice(&v.to_le_bytes())
    };
    add("dirent nameoff 0", SomeError, true, &|i| {
        set_nameoff(i, first_dirent, 0)
    });
    add("dirent nameoff beyond the block", SomeError, true, &|i| {
        set_nameoff(i, first_dirent, bs as u16 + 12)
    });
    add(
        "dirent nameoff not a multiple of 12",
        SomeError,
        true,
        &|i| set_nameoff(i, first_dirent, nameoff0 + 1),
    );
    add("dirent nameoff names overlap", SomeError, true, &|i| {
        // second name starts before the first
        set_nameoff(i, first_dirent + erofs_format::DIRENT_SIZE, nameoff0 - 1)
    });
    add("inode with unknown data layout", SomeError, true, &|i| {
        let n = inode(i, l.inode_off(b));
        let f = n.format.get() | (7 << 1);
        n.format.set(f)
    });
    add("inode with unknown i_format bits", SomeError, true, &|i| {
        let n = inode(i, l.inode_off(b));
        let f = n.format.get() | 0x8000;
        n.format.set(f)
    });
    add(
        "data block address beyond the image",
        SomeError,
        true,
        &|i| inode(i, l.inode_off(c)).i_u.set(0x00ff_ff00),
    );
    // The xattr body (and the inline tail of `a`) now run past the end of the image; with
    // buffer heads the block device and the file-backed path both read zeros there, so the
    // kernel may see nothing wrong. Only "no crash" can be asked.
    add("huge xattr count", NoCrash, true, &|i| {
        inode(i, l.inode_off(a)).xattr_icount.set(0xffff)
    });
    add("file type in mode is zero", SomeError, true, &|i| {
        let n = inode(i, l.inode_off(b));
        let m = n.mode.get() & 0o7777;
        n.mode.set(m)
    });
    let half = clean.len() / 2;
    add("truncated to half", SomeError, false, &|i| {
        i.truncate(half.max(SB + SUPERBLOCK_SIZE + 1))
    });
    // Random damage to the metadata area: anything but a crash is fine.
    let meta_end = clean.len().min(8 * bs).max(SB + 2 * SUPERBLOCK_SIZE);
    for seed in 0..8u64 {
        add(&format!("random flips seed {seed}"), NoCrash, true, &|i| {
            let mut s = seed.wrapping_mul(0x1234_5678_9abc_def1);
            for _ in 0..24 {
                let first = SB + SUPERBLOCK_SIZE;
                let off = first + (splitmix(&mut s) as usize % (meta_end - first));
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
        sb(&mut img).checksum.set(0);
        let bits = sb(&mut img).blkszbits;
        reseal(&mut img, bits);
        assert_eq!(img, clean);
    }
}
