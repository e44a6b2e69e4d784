//! Extended attributes (§7, §8): inline and shared entries, long prefixes, the name filter,
//! and content fingerprints (§15).

use erofs_format::xattr::{
    LongPrefix, XATTR_ENTRY_HEADER_SIZE, XATTR_IBODY_HEADER_SIZE, XATTR_LONG_PREFIX,
    name_filter_bit, short_prefix, split_short_prefix,
};
use erofs_format::{Compat, XattrEntry, XattrIbodyHeader};
use zerocopy::FromBytes;

use crate::error::{Corruption, Error, Result};
use crate::image::Image;
use crate::inode::Inode;

/// One extended attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Xattr {
    /// The full name (prefix + suffix) as raw bytes. Names with index 0 (hidden) are the
    /// bare suffix.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::serde_bytes_lossy"))]
    pub name: Vec<u8>,
    /// The value.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::serde_bytes_lossy"))]
    pub value: Vec<u8>,
    /// Stored in the shared area rather than inline.
    pub shared: bool,
    /// The raw `e_name_index` (1..=6 short prefix, 0x80|k long prefix k, 0 hidden).
    pub name_index: u8,
    /// Byte offset of the entry in the image.
    pub offset: u64,
}

impl Xattr {
    /// The short prefix index and the bytes after it, as hashed by the name filter (§8.3).
    pub fn filter_key(&self) -> (u8, &[u8]) {
        filter_key(&self.name)
    }
}

/// The `(base_index, rest)` pair the name filter hashes for a full xattr name.
pub fn filter_key(name: &[u8]) -> (u8, &[u8]) {
    split_short_prefix(name).unwrap_or((0, name))
}

/// The parsed xattr body header of an inode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XattrHeader {
    /// `h_name_filter`.
    pub name_filter: u32,
    /// Shared xattr ids.
    pub shared_ids: Vec<u32>,
}

impl Image<'_> {
    fn xattr_err(nid: u64, offset: u64, msg: String) -> Error {
        Error::corrupt(Some(nid), Some(offset), Corruption::Xattr(msg))
    }

    /// Reads the xattr body of `inode` (bounded: at most 12 + 4 × 65534 bytes).
    fn xattr_body(&self, inode: &Inode) -> Result<Vec<u8>> {
        let size = inode.xattr_size();
        let at = inode.offset + inode.inode_size();
        self.read_meta_vec(at, size)
            .map_err(|e| e.with_nid(inode.nid))
    }

    /// Parses the xattr body header: name filter and shared ids.
    pub fn xattr_header(&self, inode: &Inode) -> Result<XattrHeader> {
        if inode.xattr_icount == 0 {
            return Ok(XattrHeader {
                name_filter: u32::MAX,
                shared_ids: Vec::new(),
            });
        }
        let body = self.xattr_body(inode)?;
        self.parse_header(inode, &body)
    }

    fn parse_header(&self, inode: &Inode, body: &[u8]) -> Result<XattrHeader> {
        let at = inode.offset + inode.inode_size();
        let count = body.get(4).map_or(0, |&c| usize::from(c));
        let Some((header, shared_ids)) = XattrIbodyHeader::decode(body) else {
            return Err(Self::xattr_err(
                inode.nid,
                at + 4,
                format!(
                    "{count} shared ids do not fit in a body of {} bytes",
                    body.len()
                ),
            ));
        };
        Ok(XattrHeader {
            name_filter: header.name_filter.get(),
            shared_ids,
        })
    }

    fn prefix_of(&self, nid: u64, offset: u64, index: u8) -> Result<Vec<u8>> {
        if index & XATTR_LONG_PREFIX != 0 {
            let k = index & !XATTR_LONG_PREFIX;
            if let Some(alg) = self.long_prefixes_unavailable() {
                return Err(Error::Compressed {
                    nid: self.superblock().packed_nid.get(),
                    algorithm: alg.to_owned(),
                });
            }
            let p: &LongPrefix = self.long_prefixes().get(usize::from(k)).ok_or_else(|| {
                Error::corrupt(
                    Some(nid),
                    Some(offset),
                    Corruption::LongPrefixIndex {
                        index: k,
                        count: self.long_prefixes().len(),
                    },
                )
            })?;
            Ok(p.full_name())
        } else if index == 0 {
            Ok(Vec::new())
        } else {
            match short_prefix(index) {
                Some(p) => Ok(p.as_bytes().to_vec()),
                None => Err(Self::xattr_err(
                    nid,
                    offset,
                    format!("unknown name index {index}"),
                )),
            }
        }
    }

    /// Parses one entry from `buf` (which starts at image byte `offset`). Returns the xattr
    /// and the entry's padded size.
    fn parse_entry(
        &self,
        nid: u64,
        buf: &[u8],
        offset: u64,
        shared: bool,
    ) -> Result<(Xattr, usize)> {
        let hdr = buf
            .get(..XATTR_ENTRY_HEADER_SIZE)
            .and_then(|b| XattrEntry::read_from_bytes(b).ok())
            .ok_or_else(|| {
                Self::xattr_err(nid, offset, "entry header past the end of the body".into())
            })?;
        let nlen = usize::from(hdr.name_len);
        let vlen = usize::from(hdr.value_size.get());
        let size = erofs_format::xattr::entry_size(nlen, vlen);
        let raw_end = XATTR_ENTRY_HEADER_SIZE + nlen + vlen;
        if raw_end > buf.len() {
            return Err(Self::xattr_err(
                nid,
                offset,
                format!(
                    "entry of {raw_end} bytes overruns the {} bytes left",
                    buf.len()
                ),
            ));
        }
        let mut name = self.prefix_of(nid, offset, hdr.name_index)?;
        name.extend_from_slice(&buf[XATTR_ENTRY_HEADER_SIZE..XATTR_ENTRY_HEADER_SIZE + nlen]);
        if name.is_empty() {
            return Err(Self::xattr_err(nid, offset, "empty xattr name".into()));
        }
        let value = buf[XATTR_ENTRY_HEADER_SIZE + nlen..raw_end].to_vec();
        Ok((
            Xattr {
                name,
                value,
                shared,
                name_index: hdr.name_index,
                offset,
            },
            size,
        ))
    }

    /// Byte offset of shared xattr `id` (§8.4).
    pub fn shared_xattr_offset(&self, id: u32) -> Result<u64> {
        let sb = self.superblock();
        let base = u64::from(sb.xattr_blkaddr.get()) << sb.blkszbits;
        Ok(base + 4 * u64::from(id))
    }

    /// The byte range of shared xattr `id`'s record (header, name suffix and value, padded to
    /// 4 bytes), checked to lie inside the image.
    pub fn shared_xattr_range(&self, id: u32) -> Result<std::ops::Range<u64>> {
        let at = self.shared_xattr_offset(id)?;
        let mut raw = [0u8; erofs_format::xattr::XATTR_ENTRY_HEADER_SIZE];
        self.read_meta(at, &mut raw)?;
        let e = erofs_format::xattr::XattrEntry::read_from_bytes(&raw).unwrap_or_default();
        let len = erofs_format::xattr::entry_size(
            usize::from(e.name_len),
            usize::from(e.value_size.get()),
        ) as u64;
        self.check_range(at, len)?;
        Ok(at..at + len)
    }

    /// Reads shared xattr `id` on behalf of inode `nid`.
    pub fn shared_xattr(&self, nid: u64, id: u32) -> Result<Xattr> {
        if self
            .superblock()
            .compat()
            .contains(Compat::SHARED_EA_IN_METABOX)
        {
            return Err(Error::UnsupportedFeatures {
                bits: 0,
                names: vec!["shared_ea_in_metabox".into()],
            });
        }
        let at = self.shared_xattr_offset(id)?;
        if at
            .checked_add(XATTR_ENTRY_HEADER_SIZE as u64)
            .is_none_or(|e| e > self.len())
        {
            return Err(Error::corrupt(
                Some(nid),
                Some(at),
                Corruption::SharedXattrId { id },
            ));
        }
        let mut hdr = [0u8; XATTR_ENTRY_HEADER_SIZE];
        self.read_meta(at, &mut hdr).map_err(|e| e.with_nid(nid))?;
        let total = XattrEntry::read_from_bytes(&hdr[..]).map_or(0, |e| e.record_len());
        let buf = self
            .read_meta_vec(at, total as u64)
            .map_err(|_| Error::corrupt(Some(nid), Some(at), Corruption::SharedXattrId { id }))?;
        Ok(self.parse_entry(nid, &buf, at, true)?.0)
    }

    /// All xattrs of `inode`: inline entries first, then shared ones in id order.
    pub fn xattrs(&self, inode: &Inode) -> Result<Vec<Xattr>> {
        let mut out = Vec::new();
        if inode.xattr_icount == 0 {
            return Ok(out);
        }
        let body = self.xattr_body(inode)?;
        let hdr = self.parse_header(inode, &body)?;
        let base = inode.offset + inode.inode_size();
        let mut pos = XATTR_IBODY_HEADER_SIZE + 4 * hdr.shared_ids.len();
        // Each entry is at least 4 bytes, so this loop ends.
        while pos < body.len() {
            let (x, size) = self.parse_entry(inode.nid, &body[pos..], base + pos as u64, false)?;
            out.push(x);
            pos += size;
        }
        for id in hdr.shared_ids {
            out.push(self.shared_xattr(inode.nid, id)?);
        }
        Ok(out)
    }

    /// Whether the name filter may be used for lookups (§8.3).
    pub fn name_filter_enabled(&self) -> bool {
        let sb = self.superblock();
        sb.compat().contains(Compat::XATTR_FILTER) && sb.xattr_filter_reserved == 0
    }

    /// The value of xattr `name` (full name bytes), or `None`. Uses the name filter to
    /// answer "absent" without scanning when the image has one.
    pub fn get_xattr(&self, inode: &Inode, name: &[u8]) -> Result<Option<Vec<u8>>> {
        if inode.xattr_icount == 0 {
            return Ok(None);
        }
        let body = self.xattr_body(inode)?;
        let hdr = self.parse_header(inode, &body)?;
        if self.name_filter_enabled() {
            let (base, rest) = filter_key(name);
            if hdr.name_filter & (1 << name_filter_bit(base, rest)) != 0 {
                return Ok(None);
            }
        }
        let base = inode.offset + inode.inode_size();
        let mut pos = XATTR_IBODY_HEADER_SIZE + 4 * hdr.shared_ids.len();
        while pos < body.len() {
            let (x, size) = self.parse_entry(inode.nid, &body[pos..], base + pos as u64, false)?;
            if x.name == name {
                return Ok(Some(x.value));
            }
            pos += size;
        }
        for id in hdr.shared_ids {
            let x = self.shared_xattr(inode.nid, id)?;
            if x.name == name {
                return Ok(Some(x.value));
            }
        }
        Ok(None)
    }

    /// The full name of the fingerprint xattr (§15) when compat `ISHARE_XATTRS` is set.
    pub fn fingerprint_name(&self) -> Result<Option<Vec<u8>>> {
        let sb = self.superblock();
        if !sb.compat().contains(Compat::ISHARE_XATTRS) {
            return Ok(None);
        }
        let id = sb.ishare_xattr_prefix_id;
        if let Some(alg) = self.long_prefixes_unavailable() {
            return Err(Error::Compressed {
                nid: sb.packed_nid.get(),
                algorithm: alg.to_owned(),
            });
        }
        match self.long_prefixes().get(usize::from(id)) {
            Some(p) => Ok(Some(p.full_name())),
            None => Err(Error::corrupt(
                None,
                Some(erofs_format::sb_field!(ishare_xattr_prefix_id)),
                Corruption::LongPrefixIndex {
                    index: id,
                    count: self.long_prefixes().len(),
                },
            )),
        }
    }

    /// The content fingerprint value of `inode` (the raw xattr value, e.g. `sha256:` + 32
    /// bytes), or `None` when the image has no fingerprints or this inode has none.
    pub fn fingerprint(&self, inode: &Inode) -> Result<Option<Vec<u8>>> {
        match self.fingerprint_name()? {
            Some(name) => self.get_xattr(inode, &name),
            None => Ok(None),
        }
    }
}
