//! Inodes (§4): reading compact and extended inodes into one [`Inode`] type.

use erofs_format::inode::mode::S_IFMT;
use erofs_format::xattr::ibody_size;
use erofs_format::{
    DataLayout, FileType, INODE_EXTENDED_SIZE, InodeCompact, InodeExtended, InodeFormat,
    decode_rdev,
};
use zerocopy::FromBytes;

use crate::error::{Corruption, Error, Result};
use crate::image::Image;

/// One inode, decoded from its compact or extended form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    /// The nid it was read from.
    pub nid: u64,
    /// Byte offset of the inode in the image.
    pub offset: u64,
    /// 64-byte extended rather than 32-byte compact.
    pub extended: bool,
    /// Data layout.
    pub layout: DataLayout,
    /// `i_mode`: type and permission bits.
    pub mode: u16,
    /// Link count.
    pub nlink: u32,
    /// Size in bytes.
    pub size: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: u32,
    /// The informational on-disk inode number.
    pub ino: u32,
    /// The raw `i_u` union: start block, rdev, chunk format or compressed block count.
    pub raw_u: u32,
    /// Bits 32..47 of the start block (48-bit layout: `i_nb`), else 0.
    pub startblk_hi: u16,
    /// `i_xattr_icount`.
    pub xattr_icount: u16,
}

impl Inode {
    pub(crate) fn read(img: &Image, nid: u64) -> Result<Inode> {
        let offset = img.nid_offset(nid)?;
        // Read up to 64 bytes at once; a compact inode at the very end needs only 32.
        let avail = img
            .len()
            .saturating_sub(offset)
            .min(INODE_EXTENDED_SIZE as u64);
        if avail < 32 {
            return Err(Error::corrupt(
                Some(nid),
                Some(offset),
                Corruption::OutOfImage {
                    len: 32,
                    image_size: img.len(),
                },
            ));
        }
        let mut buf = [0u8; INODE_EXTENDED_SIZE];
        img.read_meta(offset, &mut buf[..avail as usize])
            .map_err(|e| e.with_nid(nid))?;
        // Both inode kinds start with `i_format`; the compact view reads it.
        let raw_format =
            InodeCompact::read_from_prefix(&buf[..]).map_or(0, |(c, _)| c.format.get());
        let format = InodeFormat::decode(raw_format)
            .map_err(|raw| Error::corrupt(Some(nid), Some(offset), Corruption::InodeFormat(raw)))?;
        let sb = img.superblock();
        let is48 = sb.incompat().contains(erofs_format::Incompat::BIT48);
        if format.bit4 && (!is48 || format.extended) {
            // Bit 4 (nlink is 1, `i_nb` holds startblk_hi) exists only in compact inodes
            // of 48-bit images.
            return Err(Error::corrupt(
                Some(nid),
                Some(offset),
                Corruption::InodeFormat(raw_format),
            ));
        }
        let inode = if format.extended {
            if avail < INODE_EXTENDED_SIZE as u64 {
                return Err(Error::corrupt(
                    Some(nid),
                    Some(offset),
                    Corruption::OutOfImage {
                        len: INODE_EXTENDED_SIZE as u64,
                        image_size: img.len(),
                    },
                ));
            }
            let d = InodeExtended::read_from_bytes(&buf[..]).map_err(|_| {
                Error::corrupt(Some(nid), Some(offset), Corruption::InodeFormat(raw_format))
            })?;
            Inode {
                nid,
                offset,
                extended: true,
                layout: format.layout,
                mode: d.mode.get(),
                nlink: d.nlink.get(),
                size: d.size.get(),
                uid: d.uid.get(),
                gid: d.gid.get(),
                mtime: d.mtime.get() as i64,
                mtime_nsec: d.mtime_nsec.get(),
                ino: d.ino.get(),
                raw_u: d.i_u.get(),
                startblk_hi: if is48 { d.i_nb.get() } else { 0 },
                xattr_icount: d.xattr_icount.get(),
            }
        } else {
            let d = InodeCompact::read_from_bytes(&buf[..32]).map_err(|_| {
                Error::corrupt(Some(nid), Some(offset), Corruption::InodeFormat(raw_format))
            })?;
            Inode {
                nid,
                offset,
                extended: false,
                layout: format.layout,
                mode: d.mode.get(),
                nlink: if format.bit4 {
                    1
                } else {
                    u32::from(d.nlink.get())
                },
                size: u64::from(d.size.get()),
                uid: u32::from(d.uid.get()),
                gid: u32::from(d.gid.get()),
                mtime: (sb.epoch.get() as i64).wrapping_add(i64::from(d.mtime.get())),
                mtime_nsec: sb.fixed_nsec.get(),
                ino: d.ino.get(),
                raw_u: d.i_u.get(),
                startblk_hi: if format.bit4 { d.nlink.get() } else { 0 },
                xattr_icount: d.xattr_icount.get(),
            }
        };
        if FileType::from_mode(inode.mode).is_none() {
            return Err(Error::corrupt(
                Some(nid),
                Some(offset + 4),
                Corruption::InodeMode(inode.mode),
            ));
        }
        Ok(inode)
    }

    /// The file type `i_mode` gives.
    pub fn file_type(&self) -> FileType {
        FileType::from_mode(self.mode).unwrap_or(FileType::Unknown)
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    /// Whether this is a regular file.
    pub fn is_file(&self) -> bool {
        self.file_type() == FileType::Regular
    }

    /// Whether this is a symlink.
    pub fn is_symlink(&self) -> bool {
        self.file_type() == FileType::Symlink
    }

    /// Permission bits (`mode & 0o7777`).
    pub fn permissions(&self) -> u16 {
        self.mode & !S_IFMT
    }

    /// Size of the inode core: 32 or 64 bytes.
    pub fn inode_size(&self) -> u64 {
        if self.extended { 64 } else { 32 }
    }

    /// Size of the xattr body that follows the inode core (0 without xattrs).
    pub fn xattr_size(&self) -> u64 {
        ibody_size(self.xattr_icount) as u64
    }

    /// Byte offset right after inode core and xattr body: where inline data or the chunk
    /// table / compression map begins.
    pub fn meta_end(&self) -> u64 {
        self.offset + self.inode_size() + self.xattr_size()
    }

    /// The start block of flat data: `i_u`, with bits 32..47 from `i_nb` on 48-bit images.
    pub fn start_block(&self) -> u64 {
        u64::from(self.raw_u) | u64::from(self.startblk_hi) << 32
    }

    /// Whether the data is compressed.
    pub fn is_compressed(&self) -> bool {
        self.layout.is_compressed()
    }

    /// `(major, minor)` of a character or block device.
    pub fn rdev(&self) -> Option<(u32, u32)> {
        match self.file_type() {
            FileType::CharDevice | FileType::BlockDevice => Some(decode_rdev(self.raw_u)),
            _ => None,
        }
    }

    /// The raw encoded device number of a device inode (0 for others).
    pub fn rdev_raw(&self) -> u32 {
        if self.rdev().is_some() { self.raw_u } else { 0 }
    }

    /// Whether the inode type carries data (regular files, directories, symlinks).
    pub fn has_data(&self) -> bool {
        matches!(
            self.file_type(),
            FileType::Regular | FileType::Directory | FileType::Symlink
        )
    }
}
