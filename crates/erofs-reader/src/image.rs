//! Opening an image: the source of bytes, superblock checks, bounded reads.

use std::collections::VecDeque;
use std::fs::File;
use std::path::Path;
use std::sync::Mutex;

use erofs_format::xattr::{LongPrefix, LongPrefixRecordHeader, MAX_LONG_PREFIXES};
use erofs_format::{
    Compat, EROFS_MAGIC, Incompat, MAX_BLOCK_SIZE_BITS, MIN_BLOCK_SIZE_BITS, SUPERBLOCK_OFFSET,
    SUPERBLOCK_SIZE, SuperBlock, superblock_checksum, superblock_checksum_range,
};
use zerocopy::FromBytes;

use crate::error::{Corruption, Error, Result};
use crate::inode::Inode;
use crate::source::ReadAt;

/// Incompat bits whose images this reader reads: everything but `METABOX`, which moves
/// inodes into a compressed inode.
pub const READABLE_INCOMPAT: u32 = erofs_format::Incompat::READ_SUPPORTED.bits();

/// Longest superblock (with extension slots) accepted: it must fit in a 4 KiB page after
/// byte 1024, like Linux requires.
const MAX_SB_SIZE: usize = 4096 - SUPERBLOCK_OFFSET;

/// Metadata (inodes, xattrs, directories, chunk tables) is cached in units of this many
/// bytes: small enough that a miss costs little when inodes sit one per block (inline
/// tails), large enough that densely packed inodes share a read.
const META_CACHE_UNIT_BITS: u8 = 12;
/// At most this many units are cached (4 MiB at 4 KiB units).
const META_CACHE_UNITS: usize = 1024;
/// Independently locked parts of the cache, so that threads walking one image at once
/// (directories read in parallel, xattr lookups while hashing) rarely wait for each other.
const META_CACHE_SHARDS: usize = 16;

/// A small FIFO cache of whole metadata blocks, so that walking 50,000 inodes costs a
/// few thousand reads instead of one per inode. File data never goes through it.
#[derive(Debug, Default)]
struct MetaCacheShard {
    blocks: crate::nidmap::NidMap<Vec<u8>>,
    order: VecDeque<u64>,
}

/// [`MetaCacheShard`]s by unit number modulo [`META_CACHE_SHARDS`]: consecutive units,
/// which a walk reads together, land in different shards.
#[derive(Debug, Default)]
struct MetaCache {
    shards: [Mutex<MetaCacheShard>; META_CACHE_SHARDS],
}

impl MetaCache {
    fn shard(&self, unit: u64) -> std::sync::MutexGuard<'_, MetaCacheShard> {
        // Nothing panics while a shard is held, and a shard is consistent after every
        // statement, so a poisoned lock is still usable.
        self.shards[(unit % META_CACHE_SHARDS as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

/// Options for [`Image::open_with`] and [`Image::from_source`]:
/// `OpenOptions::default().verify_checksum(false)`.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Verify the superblock checksum when compat `SB_CHKSUM` is set (default: true).
    pub verify_checksum: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            verify_checksum: true,
        }
    }
}

impl OpenOptions {
    /// Sets [`OpenOptions::verify_checksum`].
    pub fn verify_checksum(mut self, on: bool) -> Self {
        self.verify_checksum = on;
        self
    }
}

/// An open EROFS image. `Image` is `Send + Sync`: every read is a positioned read of its
/// [`ReadAt`] source, so many threads can read files from one image at once. The lifetime is
/// the source's: `'static` for a file or owned bytes, the borrow's for `&[u8]`.
#[derive(Debug)]
pub struct Image<'a> {
    src: Box<dyn ReadAt + 'a>,
    len: u64,
    sb: SuperBlock,
    sb_bytes: Vec<u8>,
    prefixes: Vec<LongPrefix>,
    prefixes_compressed: Option<String>,
    checksum: Option<(u32, u32)>,
    cache: MetaCache,
    zcache: crate::zmap::PclusterCache,
    /// The `COMPR_CFGS` records, decoded on first use.
    zcfgs: std::sync::OnceLock<Vec<(u64, erofs_format::compress::ComprCfg)>>,
}

impl<'a> Image<'a> {
    /// Opens the image at `path` and checks its superblock (magic, block size, checksum,
    /// incompat bits, long prefixes, root inode).
    pub fn open(path: impl AsRef<Path>) -> Result<Image<'static>> {
        Image::open_with(path, OpenOptions::default())
    }

    /// Like [`Image::open`], with options.
    pub fn open_with(path: impl AsRef<Path>, opts: OpenOptions) -> Result<Image<'static>> {
        let path = path.as_ref();
        let open_error = |source| Error::Open {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(open_error)?;
        let len = file.size().map_err(open_error)?;
        Image::open_source(file, len, opts)
    }

    /// Opens an image held in memory: `&[u8]`, `Vec<u8>`, `Arc<[u8]>`, a memory map (with
    /// the `mmap` feature), or any other [`ReadAt`].
    pub fn from_bytes(bytes: impl ReadAt + 'a) -> Result<Self> {
        Self::from_source(bytes, OpenOptions::default())
    }

    /// Opens an image read from `src`, with options.
    pub fn from_source(src: impl ReadAt + 'a, opts: OpenOptions) -> Result<Self> {
        let len = src.size().map_err(|source| Error::Io {
            offset: 0,
            len: 0,
            source,
        })?;
        Self::open_source(src, len, opts)
    }

    fn open_source(src: impl ReadAt + 'a, len: u64, opts: OpenOptions) -> Result<Self> {
        let src: Box<dyn ReadAt + 'a> = Box::new(src);
        if len < (SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE) as u64 {
            return Err(Error::TooSmall { size: len });
        }
        let mut image = Image {
            src,
            len,
            sb: SuperBlock::default(),
            sb_bytes: Vec::new(),
            prefixes: Vec::new(),
            prefixes_compressed: None,
            checksum: None,
            cache: MetaCache::default(),
            zcache: Default::default(),
            zcfgs: Default::default(),
        };
        let raw = image.read_vec(SUPERBLOCK_OFFSET as u64, SUPERBLOCK_SIZE as u64)?;
        let sb = SuperBlock::read_from_bytes(&raw).map_err(|_| {
            Error::corrupt(
                None,
                Some(SUPERBLOCK_OFFSET as u64),
                Corruption::Superblock("short read".into()),
            )
        })?;
        if sb.magic.get() != EROFS_MAGIC {
            return Err(Error::BadMagic {
                found: sb.magic.get(),
            });
        }
        let bits = sb.blkszbits;
        if !(MIN_BLOCK_SIZE_BITS..=MAX_BLOCK_SIZE_BITS).contains(&bits) {
            return Err(Error::BlockSize { bits });
        }
        let sb_size = sb.on_disk_size();
        if sb_size > MAX_SB_SIZE {
            return Err(Error::corrupt(
                None,
                Some(erofs_format::sb_field!(sb_extslots)),
                Corruption::Superblock(format!("superblock size {sb_size} too large")),
            ));
        }
        image.sb_bytes = image.read_vec(SUPERBLOCK_OFFSET as u64, sb_size as u64)?;
        image.sb = sb;
        let incompat = sb.feature_incompat.get();
        if incompat & !READABLE_INCOMPAT != 0 {
            let bad = incompat & !READABLE_INCOMPAT;
            return Err(Error::UnsupportedFeatures {
                bits: bad,
                names: incompat_names(bad),
            });
        }
        if sb.dirblkbits != 0 {
            return Err(Error::corrupt(
                None,
                Some(erofs_format::sb_field!(dirblkbits)),
                Corruption::Superblock(format!("dirblkbits {} is not 0", sb.dirblkbits)),
            ));
        }
        if sb.compat().contains(Compat::SB_CHKSUM) {
            let computed = image.compute_checksum()?;
            let stored = sb.checksum.get();
            image.checksum = Some((stored, computed));
            if opts.verify_checksum && stored != computed {
                return Err(Error::Checksum { stored, computed });
            }
        }
        image.load_long_prefixes()?;
        let root = image.inode(image.root_nid())?;
        if !root.is_dir() {
            return Err(Error::corrupt(
                Some(root.nid),
                Some(erofs_format::sb_field!(root_nid)),
                Corruption::Superblock(format!("root nid {} is not a directory", root.nid)),
            ));
        }
        Ok(image)
    }

    fn compute_checksum(&self) -> Result<u32> {
        let range = superblock_checksum_range(self.sb.blkszbits);
        let mut covered = self.read_vec(range.start as u64, (range.end - range.start) as u64)?;
        covered[erofs_format::checksum::CHECKSUM_FIELD].fill(0);
        Ok(superblock_checksum(&covered))
    }

    /// The checksum as `(stored, computed)` when compat `SB_CHKSUM` is set.
    pub fn checksum(&self) -> Option<(u32, u32)> {
        self.checksum
    }

    fn load_long_prefixes(&mut self) -> Result<()> {
        if !self.sb.incompat().contains(Incompat::XATTR_PREFIXES) {
            return Ok(());
        }
        let count = usize::from(self.sb.xattr_prefix_count);
        if count > MAX_LONG_PREFIXES {
            return Err(Error::corrupt(
                None,
                Some(erofs_format::sb_field!(xattr_prefix_count)),
                Corruption::LongPrefixes(format!("{count} prefixes, at most 128 allowed")),
            ));
        }
        let start = u64::from(self.sb.xattr_prefix_start.get()) * 4;
        let packed = self.sb.packed_nid.get();
        let plain = self.sb.compat().contains(Compat::PLAIN_XATTR_PFX) || packed == 0;
        // Each record is at most 2 + 256 bytes, padded to 4.
        let mut pos = start;
        let read = |img: &Image, at: u64, buf: &mut [u8]| -> Result<()> {
            if plain {
                img.read_exact(at, buf)
            } else {
                let inode = img.inode(packed)?;
                let n = img.read_at(&inode, at, buf)?;
                if n != buf.len() {
                    return Err(Error::corrupt(
                        Some(packed),
                        Some(at),
                        Corruption::LongPrefixes("record past the end of the packed inode".into()),
                    ));
                }
                Ok(())
            }
        };
        let mut prefixes = Vec::with_capacity(count);
        for i in 0..count {
            let mut len = [0u8; 2];
            match read(self, pos, &mut len) {
                Err(Error::Compressed { algorithm, .. }) => {
                    self.prefixes_compressed = Some(algorithm);
                    return Ok(());
                }
                r => r?,
            }
            let hdr = LongPrefixRecordHeader::decode(&len).unwrap_or_default();
            let len = usize::from(hdr.len.get());
            if len == 0 || len > 256 {
                return Err(Error::corrupt(
                    None,
                    Some(pos),
                    Corruption::LongPrefixes(format!("record {i} has length {len}")),
                ));
            }
            let mut body = vec![0u8; len];
            read(self, pos + 2, &mut body)?;
            prefixes.extend(LongPrefixRecordHeader::body(&body));
            pos += hdr.stride();
        }
        self.prefixes = prefixes;
        Ok(())
    }

    pub(crate) fn zcache(&self) -> &crate::zmap::PclusterCache {
        &self.zcache
    }

    pub(crate) fn zcfgs(
        &self,
    ) -> &std::sync::OnceLock<Vec<(u64, erofs_format::compress::ComprCfg)>> {
        &self.zcfgs
    }

    /// The superblock.
    pub fn superblock(&self) -> &SuperBlock {
        &self.sb
    }

    /// The superblock bytes as stored, including extension slots.
    pub fn superblock_bytes(&self) -> &[u8] {
        &self.sb_bytes
    }

    /// Image size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the image is empty (never true for an opened image).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        1u64 << self.sb.blkszbits
    }

    /// log2 of the block size.
    pub fn block_bits(&self) -> u8 {
        self.sb.blkszbits
    }

    /// The root directory's nid.
    pub fn root_nid(&self) -> u64 {
        self.sb.root_nid()
    }

    /// The long xattr name prefixes (§8.5), in registration order. Empty without
    /// `XATTR_PREFIXES`, or when they live in a compressed packed inode (see
    /// [`Image::long_prefixes_unavailable`]).
    pub fn long_prefixes(&self) -> &[LongPrefix] {
        &self.prefixes
    }

    /// The compression algorithm of the packed inode when the long prefixes are stored in
    /// it compressed and could therefore not be loaded.
    pub fn long_prefixes_unavailable(&self) -> Option<&str> {
        self.prefixes_compressed.as_deref()
    }

    /// The source the image is read from.
    pub fn source(&self) -> &(dyn ReadAt + 'a) {
        &*self.src
    }

    /// Reads exactly `buf.len()` bytes at `offset`, refusing reads past the image end.
    pub(crate) fn read_exact(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        self.src
            .read_exact_at(buf, offset)
            .map_err(|source| Error::Io {
                offset,
                len: buf.len() as u64,
                source,
            })
    }

    /// Reads metadata: like [`Image::read_exact`], through a small cache of whole blocks.
    pub(crate) fn read_meta(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        if self.src.as_slice().is_some() {
            return self.read_exact(offset, buf);
        }
        let bits = META_CACHE_UNIT_BITS;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let unit = pos >> bits;
            let start = unit << bits;
            // The last unit may be partial; check_range made sure the caller's bytes exist.
            let unit_len = (1u64 << bits).min(self.len - start) as usize;
            let in_unit = (pos - start) as usize;
            let n = (unit_len - in_unit).min(buf.len() - done);
            self.read_cached(unit, unit_len, in_unit, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// Copies `dst.len()` bytes at `in_unit` of cache unit `unit` (`unit_len` bytes long)
    /// into `dst`, reading the unit on a miss.
    ///
    /// The cache keeps at most [`META_CACHE_UNITS`] buffers and reuses the evicted one for
    /// the unit read in: once it is full, a miss allocates and frees nothing, so threads
    /// reading one image do not wait on each other's allocator arenas to free units that
    /// another thread allocated.
    fn read_cached(
        &self,
        unit: u64,
        unit_len: usize,
        in_unit: usize,
        dst: &mut [u8],
    ) -> Result<()> {
        let range = in_unit..in_unit + dst.len();
        if let Some(src) = self
            .cache
            .shard(unit)
            .blocks
            .get(&unit)
            .and_then(|b| b.get(range.clone()))
        {
            dst.copy_from_slice(src);
            return Ok(());
        }
        // Read with the shard unlocked: holding it across the system call would make
        // every other thread's lookup in the shard wait for this miss.
        let mut read = [0u8; 1 << META_CACHE_UNIT_BITS];
        let read = &mut read[..unit_len];
        self.read_exact(unit << META_CACHE_UNIT_BITS, read)?;
        dst.copy_from_slice(&read[range]);
        let mut shard = self.cache.shard(unit);
        // Another thread may have read the same unit meanwhile: keep one copy.
        if shard.blocks.contains_key(&unit) {
            return Ok(());
        }
        let mut slot = Vec::new();
        if shard.order.len() >= META_CACHE_UNITS / META_CACHE_SHARDS
            && let Some(old) = shard.order.pop_front()
        {
            slot = shard.blocks.remove(&old).unwrap_or_default();
        }
        slot.clear();
        slot.extend_from_slice(read);
        shard.order.push_back(unit);
        shard.blocks.insert(unit, slot);
        Ok(())
    }

    /// Like [`Image::read_vec`], through the metadata cache.
    pub(crate) fn read_meta_vec(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.check_range(offset, len)?;
        let mut v = vec![0u8; len as usize];
        self.read_meta(offset, &mut v)?;
        Ok(v)
    }

    /// Reads `len` bytes at `offset` into a new buffer. The length is checked against the
    /// image size before allocating.
    pub(crate) fn read_vec(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.check_range(offset, len)?;
        let mut v = vec![0u8; len as usize];
        self.read_exact(offset, &mut v)?;
        Ok(v)
    }

    /// Checks that `len` bytes at `offset` lie inside the image.
    pub fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            Some(_) => Err(Error::corrupt(
                None,
                Some(offset),
                Corruption::OutOfImage {
                    len,
                    image_size: self.len,
                },
            )),
            None => Err(Error::corrupt(None, Some(offset), Corruption::Overflow)),
        }
    }

    /// Byte offset of inode `nid` (§4.1), checked for overflow.
    pub fn nid_offset(&self, nid: u64) -> Result<u64> {
        erofs_format::nid_to_offset(self.sb.meta_blkaddr.get(), self.sb.blkszbits, nid)
            .ok_or_else(|| Error::corrupt(Some(nid), None, Corruption::Overflow))
    }

    /// Reads inode `nid`.
    pub fn inode(&self, nid: u64) -> Result<Inode> {
        Inode::read(self, nid)
    }
}

/// Names of incompat bits, with `unknown(0x...)` for bits without a name.
pub fn incompat_names(bits: u32) -> Vec<String> {
    Incompat::from_bits(bits).names_with_unknown()
}

/// Names of compat bits, with `unknown(0x...)` for bits without a name.
pub fn compat_names(bits: u32) -> Vec<String> {
    Compat::from_bits(bits).names_with_unknown()
}
