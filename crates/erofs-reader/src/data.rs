//! File data (§5, §9): mapping logical offsets to image bytes for `FLAT_PLAIN`,
//! `FLAT_INLINE` and `CHUNK_BASED` inodes, and reading it.

use std::io;

use erofs_format::chunk::ChunkEntry;
use erofs_format::compress::{Algorithm, MapHeader};
use erofs_format::{
    CHUNK_FORMAT_BLKBITS_MASK, CHUNK_FORMAT_INDEXES, DataLayout, Incompat, NULL_ADDR, round_up,
};
use zerocopy::FromBytes;

use crate::error::{Corruption, Error, Result};
use crate::image::Image;
use crate::inode::Inode;

/// The all-ones 48-bit block address.
const NULL_ADDR_48: u64 = (1 << 48) - 1;

/// Longest symlink target accepted (Linux `PATH_MAX`).
pub const MAX_SYMLINK_LEN: u64 = 4096;

/// How a range of a file's bytes is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum ExtentKind {
    /// In data blocks at `physical`.
    Mapped,
    /// Inline, right after the inode and its xattrs, at `physical`.
    Inline,
    /// A hole: reads as zeroes, nothing stored.
    Hole,
}

/// A range of a file's logical bytes and where they are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Extent {
    /// First logical byte.
    pub logical: u64,
    /// Length in bytes.
    pub length: u64,
    /// How the bytes are stored.
    pub kind: ExtentKind,
    /// Byte offset in the image (`None` for holes).
    pub physical: Option<u64>,
}

impl Extent {
    /// One past the last logical byte.
    pub fn end(&self) -> u64 {
        self.logical + self.length
    }
}

/// Where a chunk-based inode's chunk table lies and how it is laid out.
struct ChunkTable {
    start: u64,
    len: u64,
    /// 4 (block map) or 8 (chunk indexes) bytes per chunk.
    entry: u64,
    chunkbits: u32,
}

impl Image<'_> {
    /// Name of the compression algorithm of a compressed inode (`lz4`, `lzma`, ...), read
    /// from its map header (§12.1).
    pub fn compression_algorithm(&self, inode: &Inode) -> Result<String> {
        let sb = self.superblock();
        let at = round_up(inode.meta_end(), 8)
            .ok_or_else(|| Error::corrupt(Some(inode.nid), None, Corruption::Overflow))?;
        let mut raw = [0u8; 8];
        self.read_exact(at, &mut raw)
            .map_err(|e| e.with_nid(inode.nid))?;
        let h = MapHeader::read_from_bytes(&raw[..]).map_err(|_| {
            Error::corrupt(Some(inode.nid), Some(at), Corruption::Xattr("map".into()))
        })?;
        if h.h_clusterbits & 0x80 != 0 {
            return Ok("fragment in packed inode".into());
        }
        if !sb.incompat().contains(Incompat::COMPR_CFGS) {
            return Ok(Algorithm::Lz4.name().into());
        }
        Ok(match h.head1_algorithm() {
            Some(a) => a.name().into(),
            None => format!("unknown({})", h.h_algorithmtype & 0xF),
        })
    }

    fn compressed_error(&self, inode: &Inode) -> Error {
        match self.compression_algorithm(inode) {
            Ok(algorithm) => Error::Compressed {
                nid: inode.nid,
                algorithm,
            },
            Err(e) => e,
        }
    }

    /// The extent containing logical byte `logical` (which must be below `inode.size`).
    /// Checks that the bytes it maps lie inside the image. Compressed inodes are mapped by
    /// [`Image::z_map`] instead; here they give [`Error::Compressed`].
    pub fn map(&self, inode: &Inode, logical: u64) -> Result<Extent> {
        let nid = inode.nid;
        if logical >= inode.size {
            return Err(Error::corrupt(Some(nid), None, Corruption::Overflow));
        }
        if !inode.has_data() {
            return Ok(Extent {
                logical: 0,
                length: inode.size,
                kind: ExtentKind::Hole,
                physical: None,
            });
        }
        let bits = self.block_bits();
        let blksz = self.block_size();
        let ext = match inode.layout {
            DataLayout::CompressedFull | DataLayout::CompressedCompact => {
                return Err(self.compressed_error(inode));
            }
            // 48-bit images mark a file of zeroes by an all-ones 48-bit start block.
            DataLayout::FlatPlain
                if self.superblock().incompat().contains(Incompat::BIT48)
                    && inode.start_block() == NULL_ADDR_48 =>
            {
                Extent {
                    logical: 0,
                    length: inode.size,
                    kind: ExtentKind::Hole,
                    physical: None,
                }
            }
            DataLayout::FlatPlain => Extent {
                logical: 0,
                length: inode.size,
                kind: ExtentKind::Mapped,
                physical: Some(inode.start_block() << bits),
            },
            DataLayout::FlatInline => {
                let nblocks = inode.size.div_ceil(blksz);
                let full = (nblocks - 1) << bits;
                if logical < full {
                    Extent {
                        logical: 0,
                        length: full,
                        kind: ExtentKind::Mapped,
                        physical: Some(inode.start_block() << bits),
                    }
                } else {
                    let tail_len = inode.size - full;
                    let at = inode.meta_end();
                    let in_block = at % blksz;
                    if in_block + tail_len > blksz {
                        return Err(Error::corrupt(
                            Some(nid),
                            Some(at),
                            Corruption::InlineAcrossBlocks { tail_len, in_block },
                        ));
                    }
                    Extent {
                        logical: full,
                        length: tail_len,
                        kind: ExtentKind::Inline,
                        physical: Some(at),
                    }
                }
            }
            DataLayout::ChunkBased => self.map_chunk(inode, logical)?,
        };
        if let Some(p) = ext.physical {
            self.check_range(p, ext.length)
                .map_err(|e| e.with_nid(nid))?;
        }
        Ok(ext)
    }

    /// The chunk table of a chunk-based inode (§7), checked to lie inside the image.
    fn chunk_table(&self, inode: &Inode) -> Result<ChunkTable> {
        let nid = inode.nid;
        let format = (inode.raw_u & 0xFFFF) as u16;
        if format & !(CHUNK_FORMAT_BLKBITS_MASK | CHUNK_FORMAT_INDEXES) != 0 {
            return Err(Error::corrupt(
                Some(nid),
                Some(inode.offset + std::mem::offset_of!(erofs_format::InodeCompact, i_u) as u64),
                Corruption::ChunkFormat(format),
            ));
        }
        let bits = self.block_bits();
        let chunkbits = u32::from(bits) + u32::from(format & CHUNK_FORMAT_BLKBITS_MASK);
        let indexes = format & CHUNK_FORMAT_INDEXES != 0;
        let entry = if indexes { 8u64 } else { 4u64 };
        let start = round_up(inode.meta_end(), entry)
            .ok_or_else(|| Error::corrupt(Some(nid), None, Corruption::Overflow))?;
        let count = inode.size.div_ceil(1u64 << chunkbits);
        let len = count
            .checked_mul(entry)
            .ok_or_else(|| Error::corrupt(Some(nid), Some(start), Corruption::Overflow))?;
        self.check_range(start, len).map_err(|e| e.with_nid(nid))?;
        Ok(ChunkTable {
            start,
            len,
            entry,
            chunkbits,
        })
    }

    /// The chunk size of a chunk-based inode in bytes.
    pub fn chunk_size(&self, inode: &Inode) -> Result<u64> {
        Ok(1u64 << self.chunk_table(inode)?.chunkbits)
    }

    /// The byte range of a chunk-based inode's chunk table.
    pub fn chunk_table_range(&self, inode: &Inode) -> Result<std::ops::Range<u64>> {
        let t = self.chunk_table(inode)?;
        Ok(t.start..t.start + t.len)
    }

    fn map_chunk(&self, inode: &Inode, logical: u64) -> Result<Extent> {
        let nid = inode.nid;
        let bits = self.block_bits();
        let ChunkTable {
            start: table,
            entry,
            chunkbits,
            ..
        } = self.chunk_table(inode)?;
        let idx = logical >> chunkbits;
        let at = table + idx * entry;
        let mut raw = [0u8; 8];
        self.read_meta(at, &mut raw[..entry as usize])
            .map_err(|e| e.with_nid(nid))?;
        let c = ChunkEntry::decode(&raw[..entry as usize]).unwrap_or(ChunkEntry {
            device_id: 0,
            startblk_lo: NULL_ADDR,
            startblk_hi: 0,
        });
        let mask = (u32::from(self.superblock().extra_devices.get()) + 1).next_power_of_two() - 1;
        let (device, blk) = (c.device_id & mask as u16, c.startblk_lo);
        let start = idx << chunkbits;
        let length = (1u64 << chunkbits).min(inode.size - start);
        if blk == NULL_ADDR {
            return Ok(Extent {
                logical: start,
                length,
                kind: ExtentKind::Hole,
                physical: None,
            });
        }
        let blk = if device == 0 {
            u64::from(blk)
        } else {
            // Without the device itself, data on it is readable only where the device
            // table gives it a place in the primary device (the kernel's flat addressing):
            // the single-file form of a tar index, with the tar appended after the
            // metadata.
            let at = match self.device_uniaddr(device)? {
                Some(base) if base != 0 => base + u64::from(blk),
                _ => return Err(Error::ExtraDevice { nid, device }),
            };
            // An index whose tar was not appended: the device is elsewhere, not damaged.
            if self.check_range(at << bits, length).is_err() {
                return Err(Error::ExtraDevice { nid, device });
            }
            at
        };
        Ok(Extent {
            logical: start,
            length,
            kind: ExtentKind::Mapped,
            physical: Some(blk << bits),
        })
    }

    /// The unified start block of extra device `device` (1-based) from the device table,
    /// or `None` when the table has no such slot.
    fn device_uniaddr(&self, device: u16) -> Result<Option<u64>> {
        let sb = self.superblock();
        if device > sb.extra_devices.get() {
            return Ok(None);
        }
        let slot = 128u64;
        let at = u64::from(sb.devt_slotoff.get()) * slot + u64::from(device - 1) * slot;
        let mut raw = [0u8; 128];
        self.read_meta(at, &mut raw)?;
        let dis = erofs_format::DeviceSlot::read_from_bytes(&raw[..])
            .map_err(|_| Error::corrupt(None, Some(at), Corruption::Overflow))?;
        Ok(Some(u64::from(dis.uniaddr_lo.get())))
    }

    /// All extents of the inode, adjacent ones merged. The count is bounded by the chunk
    /// table, which must fit in the image.
    pub fn data_extents(&self, inode: &Inode) -> Result<Vec<Extent>> {
        let mut out: Vec<Extent> = Vec::new();
        if !inode.has_data() {
            return Ok(out);
        }
        let mut pos = 0;
        while pos < inode.size {
            let e = self.map(inode, pos)?;
            // Every extent advances: map() returns the extent containing `pos`.
            pos = e.end();
            if let Some(last) = out.last_mut()
                && last.kind == e.kind
                && last.end() == e.logical
                && match (last.physical, e.physical) {
                    (Some(a), Some(b)) => a + last.length == b,
                    (None, None) => true,
                    _ => false,
                }
            {
                last.length += e.length;
                continue;
            }
            out.push(e);
        }
        Ok(out)
    }

    /// Bytes the inode's data occupies in the image: mapped and inline bytes, not holes.
    /// For compressed inodes, the compressed block count times the block size.
    pub fn on_disk_size(&self, inode: &Inode) -> Result<u64> {
        if inode.is_compressed() {
            return Ok(u64::from(inode.raw_u) << self.block_bits());
        }
        if !inode.has_data() || inode.size == 0 {
            return Ok(0);
        }
        match inode.layout {
            // One or two extents: check they lie in the image, without allocating.
            DataLayout::FlatPlain => return Ok(self.map(inode, 0)?.length),
            DataLayout::FlatInline => {
                let tail = self.map(inode, inode.size - 1)?;
                if tail.logical > 0 {
                    self.map(inode, 0)?;
                }
                return Ok(inode.size);
            }
            _ => {}
        }
        Ok(self
            .data_extents(inode)?
            .iter()
            .filter(|e| e.kind != ExtentKind::Hole)
            .map(|e| e.length)
            .sum())
    }

    /// Reads file data at `offset` into `buf`. Returns the number of bytes read, less than
    /// `buf.len()` only at the end of the file. Holes read as zeroes.
    pub fn read_at(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.read_at_depth(inode, offset, buf, 0)
    }

    /// [`Image::read_at`]; `depth` counts reads of the packed inode on behalf of fragments.
    pub(crate) fn read_at_depth(
        &self,
        inode: &Inode,
        offset: u64,
        buf: &mut [u8],
        depth: u8,
    ) -> Result<usize> {
        if offset >= inode.size || !inode.has_data() {
            return Ok(0);
        }
        if inode.is_compressed() {
            return self.z_read_at(inode, offset, buf, depth);
        }
        let want = (buf.len() as u64).min(inode.size - offset) as usize;
        // Directories and symlinks are metadata: read them through the block cache.
        let meta = !inode.is_file();
        let mut done = 0usize;
        while done < want {
            let pos = offset + done as u64;
            let e = self.map(inode, pos)?;
            let n = ((e.end() - pos) as usize).min(want - done);
            let dst = &mut buf[done..done + n];
            match e.physical {
                None => dst.fill(0),
                Some(p) if meta => self
                    .read_meta(p + (pos - e.logical), dst)
                    .map_err(|err| err.with_nid(inode.nid))?,
                Some(p) => self
                    .read_exact(p + (pos - e.logical), dst)
                    .map_err(|err| err.with_nid(inode.nid))?,
            }
            done += n;
        }
        Ok(done)
    }

    /// Reads the whole file into memory. The size must be at most `limit` bytes.
    pub fn read_to_vec(&self, inode: &Inode, limit: u64) -> Result<Vec<u8>> {
        if inode.size > limit {
            return Err(Error::corrupt(
                Some(inode.nid),
                None,
                Corruption::TooLarge {
                    what: "file",
                    size: inode.size,
                    limit,
                },
            ));
        }
        let mut v = vec![0u8; inode.size as usize];
        let n = self.read_at(inode, 0, &mut v)?;
        v.truncate(n);
        Ok(v)
    }

    /// A streaming reader (`std::io::Read + Seek`) over the inode's data.
    pub fn reader<'a>(&'a self, inode: &Inode) -> FileReader<'a> {
        FileReader {
            image: self,
            inode: inode.clone(),
            pos: 0,
        }
    }

    /// The target of a symlink, as raw bytes.
    pub fn readlink(&self, inode: &Inode) -> Result<Vec<u8>> {
        if !inode.is_symlink() {
            return Err(Error::NotASymlink { nid: inode.nid });
        }
        if inode.size == 0 || inode.size > MAX_SYMLINK_LEN {
            return Err(Error::corrupt(
                Some(inode.nid),
                Some(inode.offset),
                Corruption::Symlink(inode.size),
            ));
        }
        self.read_to_vec(inode, MAX_SYMLINK_LEN)
    }
}

/// Streams one file's data; see [`Image::reader`].
#[derive(Debug)]
pub struct FileReader<'a> {
    image: &'a Image<'a>,
    inode: Inode,
    pos: u64,
}

impl io::Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self
            .image
            .read_at(&self.inode, self.pos, buf)
            .map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for FileReader<'_> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        let new = match pos {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::End(d) => self.inode.size.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before start",
            )),
        }
    }
}
