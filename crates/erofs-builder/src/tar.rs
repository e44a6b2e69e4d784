//! A strict, streaming tar reader: ustar, GNU (long names and links, base-256 numbers, old
//! sparse files), PAX (local and global records, extended attributes, sparse 0.0, 0.1 and
//! 1.0) and V7 headers.
//!
//! The stream is read once, front to back, in 512-byte blocks. Each [`Entry`] carries the
//! stream offset of its header, which every error names. Extension records (`x`, `g`, `L`,
//! `K`) are folded into the entry they apply to and never surface.

use std::io::Read;

/// Tar block size.
pub const BLOCK: usize = 512;
/// Bounds on what an extension record may hold in memory.
const MAX_LONG_NAME: u64 = 64 << 10;
const MAX_PAX: u64 = 16 << 20;
/// Bound on a file's size (64 PiB), so that staging offsets never overflow.
const MAX_FILE_SIZE: u64 = 1 << 56;
/// Bound on the number of segments of one sparse map.
const MAX_SPARSE_SEGMENTS: u64 = 1 << 20;

/// A malformed or unsupported stream. `offset` is the stream offset of the header at fault
/// (or of the read that failed); `entry` its path when it is known.
#[derive(Debug, thiserror::Error)]
#[error("{}offset {offset}: {reason}", entry.as_ref().map(|e| format!("{}: ", String::from_utf8_lossy(e))).unwrap_or_default())]
#[non_exhaustive]
pub struct TarError {
    /// Stream offset of the header (or block) at fault.
    pub offset: u64,
    /// The entry's path, when known.
    pub entry: Option<Vec<u8>>,
    /// What is wrong.
    pub reason: String,
}

/// The type of an entry, from its typeflag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// `0`, NUL, `7` and GNU sparse `S`.
    Regular,
    /// `1`: a hard link to the entry's link name.
    HardLink,
    /// `2`.
    Symlink,
    /// `3`.
    CharDevice,
    /// `4`.
    BlockDevice,
    /// `5`.
    Directory,
    /// `6`.
    Fifo,
}

/// One file entry, with every extension applied.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Stream offset of the entry's own header (after any extension records).
    pub offset: u64,
    /// Stream offset of the entry's data (after a PAX 1.0 sparse map).
    pub data_offset: u64,
    /// The raw path, as stored (not normalised).
    pub path: Vec<u8>,
    /// Link target (symlinks and hard links).
    pub link: Vec<u8>,
    /// The type.
    pub kind: EntryKind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nsec: u32,
    /// Device numbers.
    pub dev: (u32, u32),
    /// Logical size of a regular file (holes included).
    pub size: u64,
    /// Bytes of data stored in the stream for this entry.
    pub stored: u64,
    /// For sparse files: `(offset, length)` of each data segment, in order; the stored data
    /// is these segments back to back.
    pub sparse: Option<Vec<(u64, u64)>>,
    /// Extended attributes from PAX records, in record order, global ones first.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Things worth a warning (ignored keys, mode type bits).
    pub notes: Vec<String>,
}

/// Reads entries from a tar stream.
pub struct TarReader<R> {
    r: R,
    pos: u64,
    /// Data bytes of the current entry not yet consumed, and its padding.
    left: u64,
    pad: u64,
    globals: Vec<(Vec<u8>, Vec<u8>)>,
    ignore_zeros: bool,
    done: bool,
    /// `--tar=headerball`: entries have no data areas.
    pub headerball: bool,
    /// Warnings about the stream itself (missing end marker).
    pub warnings: Vec<String>,
}

fn err(offset: u64, entry: Option<&[u8]>, reason: impl Into<String>) -> TarError {
    TarError {
        offset,
        entry: entry.map(<[u8]>::to_vec),
        reason: reason.into(),
    }
}

impl<R: Read> TarReader<R> {
    /// A reader over `r`. With `ignore_zeros`, zero blocks are skipped instead of ending
    /// the archive, so concatenated archives are read whole (`tar --ignore-zeros`).
    pub fn new(r: R, ignore_zeros: bool) -> Self {
        Self {
            r,
            pos: 0,
            left: 0,
            pad: 0,
            globals: Vec::new(),
            ignore_zeros,
            done: false,
            headerball: false,
            warnings: Vec::new(),
        }
    }

    /// Stream offset of the next byte to read.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Reads up to `buf.len()` bytes; returns fewer only at the end of the stream.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, TarError> {
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(err(
                        self.pos + got as u64,
                        None,
                        format!("reading the stream: {e}"),
                    ));
                }
            }
        }
        self.pos += got as u64;
        Ok(got)
    }

    fn skip(&mut self, mut n: u64, entry: Option<&[u8]>) -> Result<(), TarError> {
        let mut buf = [0u8; 8192];
        while n > 0 {
            let k = n.min(buf.len() as u64) as usize;
            let got = self.fill(&mut buf[..k])?;
            if got < k {
                return Err(err(self.pos, entry, "stream truncated inside entry data"));
            }
            n -= k as u64;
        }
        Ok(())
    }

    /// Reads a whole extension payload of `size` bytes (and its padding).
    fn payload(&mut self, size: u64, max: u64, at: u64, what: &str) -> Result<Vec<u8>, TarError> {
        if size > max {
            return Err(err(
                at,
                None,
                format!("{what} record of {size} bytes is larger than {max}"),
            ));
        }
        let mut v = vec![0u8; size as usize];
        if self.fill(&mut v)? < v.len() {
            return Err(err(
                at,
                None,
                format!("stream truncated inside a {what} record"),
            ));
        }
        self.skip(pad_of(size), None)
            .map_err(|_| err(at, None, format!("stream truncated inside a {what} record")))?;
        Ok(v)
    }

    /// Reads the current entry's data, calling `f(logical offset, bytes)` for each stretch
    /// in order (sparse entries skip their holes). Then consumes the padding.
    pub fn read_data(
        &mut self,
        entry: &Entry,
        mut f: impl FnMut(u64, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), TarError> {
        let whole = [(0, self.left)];
        let segments: &[(u64, u64)] = entry.sparse.as_deref().unwrap_or(&whole);
        let mut buf = vec![0u8; 256 << 10];
        for &(start, len) in segments {
            let mut done = 0u64;
            while done < len {
                let k = (len - done).min(buf.len() as u64) as usize;
                if (k as u64) > self.left {
                    return Err(err(
                        entry.offset,
                        Some(&entry.path),
                        "sparse map describes more data than the entry stores",
                    ));
                }
                let got = self.fill(&mut buf[..k])?;
                self.left -= got as u64;
                if got < k {
                    return Err(err(
                        self.pos,
                        Some(&entry.path),
                        "stream truncated inside entry data",
                    ));
                }
                f(start + done, &buf[..k]).map_err(|e| {
                    err(
                        entry.offset,
                        Some(&entry.path),
                        format!("staging data: {e}"),
                    )
                })?;
                done += k as u64;
            }
        }
        self.finish_data(Some(&entry.path))
    }

    fn finish_data(&mut self, entry: Option<&[u8]>) -> Result<(), TarError> {
        let n = self.left + self.pad;
        self.left = 0;
        self.pad = 0;
        self.skip(n, entry)
    }

    /// Reads one header block. `Ok(None)` at a clean end of the stream.
    fn block(&mut self) -> Result<Option<[u8; BLOCK]>, TarError> {
        let at = self.pos;
        let mut b = [0u8; BLOCK];
        let got = self.fill(&mut b)?;
        if got == 0 {
            return Ok(None);
        }
        if got < BLOCK {
            return Err(err(
                at,
                None,
                if at == 0 {
                    format!("input of {got} bytes is shorter than one tar block")
                } else {
                    format!("stream truncated inside a header ({got} of 512 bytes)")
                },
            ));
        }
        Ok(Some(b))
    }

    /// The next file entry, or `None` at the end of the archive. Unread data of the
    /// previous entry is skipped.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, TarError> {
        self.finish_data(None)?;
        if self.done {
            return Ok(None);
        }
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut local: Option<Vec<(Vec<u8>, Vec<u8>)>> = None;
        loop {
            let at = self.pos;
            let Some(h) = self.block()? else {
                if at == 0 {
                    return Err(err(0, None, "empty input: not a tar stream"));
                }
                if long_name.is_some() || long_link.is_some() || local.is_some() {
                    return Err(err(at, None, "stream ends after an extension record"));
                }
                self.warnings.push(format!(
                    "offset {at}: the stream ends without an end-of-archive marker"
                ));
                self.done = true;
                return Ok(None);
            };
            if h.iter().all(|&b| b == 0) {
                if self.ignore_zeros {
                    continue;
                }
                let second = self.pos;
                match self.block() {
                    Ok(Some(b)) if b.iter().all(|&x| x == 0) => {}
                    Ok(None) | Err(_) => self.warnings.push(format!(
                        "offset {second}: only one zero block ends the archive"
                    )),
                    Ok(Some(_)) => self.warnings.push(format!(
                        "offset {second}: a data block follows a single zero block; \
                         the archive ends at offset {at}"
                    )),
                }
                self.done = true;
                // Drain the rest, so that a writer on a pipe is not cut off.
                let mut sink = [0u8; 8192];
                while self.fill(&mut sink)? > 0 {}
                return Ok(None);
            }
            check_checksum(&h, at)?;
            let flag = h[156];
            let size = number(&h[124..136], at, "size")?;
            if size < 0 {
                return Err(err(at, None, "negative size"));
            }
            let size = size as u64;
            match flag {
                b'L' => {
                    let mut v = self.payload(size, MAX_LONG_NAME, at, "GNU long name")?;
                    truncate_nul(&mut v);
                    long_name = Some(v);
                    continue;
                }
                b'K' => {
                    let mut v = self.payload(size, MAX_LONG_NAME, at, "GNU long link")?;
                    truncate_nul(&mut v);
                    long_link = Some(v);
                    continue;
                }
                b'x' | b'X' if flag == b'x' || is_ustar(&h) => {
                    let v = self.payload(size, MAX_PAX, at, "PAX")?;
                    let recs = pax_records(&v, at)?;
                    local.get_or_insert_with(Vec::new).extend(recs);
                    continue;
                }
                b'g' => {
                    let v = self.payload(size, MAX_PAX, at, "PAX global")?;
                    for (k, val) in pax_records(&v, at)? {
                        self.globals.retain(|(gk, _)| *gk != k);
                        if !val.is_empty() {
                            self.globals.push((k, val));
                        }
                    }
                    continue;
                }
                _ => {}
            }
            let entry = self.entry(
                &h,
                at,
                size,
                long_name,
                long_link,
                local.unwrap_or_default(),
            )?;
            match entry {
                Some(e) => return Ok(Some(e)),
                None => {
                    long_name = None;
                    long_link = None;
                    local = None;
                }
            }
        }
    }

    /// Builds the entry of header `h`. `Ok(None)` for entries that are skipped (volume
    /// labels, unknown types), whose data is consumed here.
    fn entry(
        &mut self,
        h: &[u8; BLOCK],
        at: u64,
        header_size: u64,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
        local: Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<Option<Entry>, TarError> {
        let ustar = is_ustar(h);
        let gnu = &h[257..265] == b"ustar  \0";
        let mut notes = Vec::new();
        // The header's own path.
        let mut path = match long_name {
            Some(n) => n,
            None => {
                let name = cstr(&h[0..100]);
                let prefix = cstr(&h[345..500]);
                if ustar && !prefix.is_empty() {
                    let mut p = prefix.to_vec();
                    p.push(b'/');
                    p.extend_from_slice(name);
                    p
                } else {
                    name.to_vec()
                }
            }
        };
        let mut link = long_link.unwrap_or_else(|| cstr(&h[157..257]).to_vec());
        let mode_raw = number(&h[100..108], at, "mode")?;
        let mut uid = number(&h[108..116], at, "uid")?;
        let mut gid = number(&h[116..124], at, "gid")?;
        let mut mtime = number(&h[136..148], at, "mtime")?;
        let mut mtime_nsec = 0u32;
        let (major, minor) = if ustar || gnu {
            (
                number(&h[329..337], at, "devmajor")?,
                number(&h[337..345], at, "devminor")?,
            )
        } else {
            (0, 0)
        };
        let mut stored = header_size;
        let mut xattrs = Vec::new();
        // Sparse keys, in record order (0.0 repeats offset/numbytes pairs).
        let mut sparse_keys: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        // Globals first, then the local records: later records win.
        let records: Vec<(Vec<u8>, Vec<u8>)> = self
            .globals
            .iter()
            .cloned()
            .chain(local.iter().cloned())
            .collect();
        // An empty local value undoes a global or header override: recompute per key.
        for (k, v) in &records {
            let key = k.as_slice();
            let name = path.clone();
            let bad = |what: &str| err(at, Some(&name), format!("bad PAX {what} {:?}", lossy(v)));
            match key {
                b"path" => {
                    if v.is_empty() {
                        // Reset to the header's name.
                        continue;
                    }
                    path = v.clone();
                }
                b"linkpath" => {
                    if !v.is_empty() {
                        link = v.clone();
                    }
                }
                b"size" => {
                    if !v.is_empty() {
                        stored = dec_u64(v).ok_or_else(|| bad("size"))?;
                    }
                }
                b"uid" | b"gid" => {
                    if v.is_empty() {
                        continue;
                    }
                    let n = dec_u64(v).ok_or_else(|| bad("id"))?;
                    if n > u32::MAX as u64 {
                        return Err(err(
                            at,
                            Some(&path),
                            format!("{} {n} does not fit in 32 bits", lossy(key)),
                        ));
                    }
                    if key == b"uid" {
                        uid = n as i64;
                    } else {
                        gid = n as i64;
                    }
                }
                b"mtime" => {
                    if v.is_empty() {
                        continue;
                    }
                    (mtime, mtime_nsec) = pax_time(v).ok_or_else(|| bad("mtime"))?;
                }
                _ if key.starts_with(b"SCHILY.xattr.") => {
                    xattrs.push((key[13..].to_vec(), v.clone()));
                }
                _ if key.starts_with(b"LIBARCHIVE.xattr.") => {
                    let n = percent_decode(&key[17..]).ok_or_else(|| bad("xattr name"))?;
                    let val = base64_decode(v).ok_or_else(|| bad("xattr value"))?;
                    xattrs.push((n, val));
                }
                b"RHT.security.selinux" => xattrs.push((b"security.selinux".to_vec(), v.clone())),
                b"SCHILY.acl.access" | b"SCHILY.acl.default" => {
                    let name: &[u8] = if key == b"SCHILY.acl.access" {
                        b"system.posix_acl_access"
                    } else {
                        b"system.posix_acl_default"
                    };
                    if v.is_empty() {
                        // An empty value undoes a global record: no ACL.
                        xattrs.retain(|(n, _)| n.as_slice() != name);
                        continue;
                    }
                    match crate::acl::acl_xattr(v, &crate::acl::host_lookup) {
                        // The mode bits say it all; extraction leaves no xattr either.
                        Ok(value)
                            if key == b"SCHILY.acl.access" && crate::acl::is_minimal(&value) => {}
                        Ok(value) => xattrs.push((name.to_vec(), value)),
                        Err(why) => notes.push(format!("{}: {why}; left out", lossy(key))),
                    }
                }
                _ if key.starts_with(b"GNU.sparse.") => sparse_keys.push((k.clone(), v.clone())),
                b"atime"
                | b"ctime"
                | b"uname"
                | b"gname"
                | b"comment"
                | b"charset"
                | b"hdrcharset"
                | b"SCHILY.fflags"
                | b"SCHILY.dev"
                | b"SCHILY.ino"
                | b"SCHILY.nlink"
                | b"LIBARCHIVE.creationtime" => {}
                _ => notes.push(format!("PAX record {} ignored", lossy(key))),
            }
        }
        // A local "path=" resets a global path: honour the last word on each key.
        for key in [&b"path"[..], b"linkpath"] {
            if let Some((_, v)) = records.iter().rev().find(|(k, _)| k == key)
                && v.is_empty()
            {
                if key == b"path" {
                    path = cstr(&h[0..100]).to_vec();
                    let prefix = cstr(&h[345..500]);
                    if ustar && !prefix.is_empty() {
                        let mut p = prefix.to_vec();
                        p.push(b'/');
                        p.extend_from_slice(&path);
                        path = p;
                    }
                } else {
                    link = cstr(&h[157..257]).to_vec();
                }
            }
        }
        let id = |n: i64, what: &str, path: &[u8]| {
            u32::try_from(n).map_err(|_| err(at, Some(path), format!("{what} {n} out of range")))
        };
        let uid = id(uid, "uid", &path)?;
        let gid = id(gid, "gid", &path)?;
        let dev = (id(major, "devmajor", &path)?, id(minor, "devminor", &path)?);
        if mode_raw < 0 {
            return Err(err(at, Some(&path), "negative mode"));
        }
        let mode_raw = mode_raw as u64;
        let flag = h[156];
        let kind = match flag {
            b'0' | b'7' => EntryKind::Regular,
            // Pre-POSIX archives mark directories by a trailing slash only.
            0 if path.ends_with(b"/") => EntryKind::Directory,
            0 => EntryKind::Regular,
            b'S' if gnu => EntryKind::Regular,
            b'1' => EntryKind::HardLink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            other => {
                if other != b'V' {
                    self.warnings.push(format!(
                        "{}: offset {at}: unknown typeflag {:?}; entry skipped",
                        lossy(&path),
                        other as char
                    ));
                }
                self.left = stored;
                self.pad = pad_of(stored);
                self.finish_data(Some(&path))?;
                return Ok(None);
            }
        };
        let type_bits = mode_raw & 0o170000;
        if type_bits != 0 && type_bits != kind_type_bits(kind) {
            notes.push(format!(
                "mode {mode_raw:o} has file type bits that disagree with the typeflag; ignored"
            ));
        }
        let mut size = if kind == EntryKind::Regular {
            stored
        } else {
            0
        };
        let mut sparse = None;
        self.left = stored;
        self.pad = pad_of(stored);
        if self.headerball {
            self.left = 0;
            self.pad = 0;
        }
        if flag == b'S' {
            let (map, real) = self.old_gnu_sparse(h, at, &path)?;
            size = real;
            sparse = Some(map);
        } else if !sparse_keys.is_empty() {
            let (map, real, name) = self.pax_sparse(&sparse_keys, at, &path)?;
            size = real;
            sparse = Some(map);
            if let Some(n) = name {
                path = n;
            }
        }
        if size > MAX_FILE_SIZE || self.left > MAX_FILE_SIZE {
            return Err(err(at, Some(&path), format!("size {size} is too large")));
        }
        let data_offset = self.pos;
        if let Some(map) = &sparse {
            check_sparse(map, size, self.left, at, &path)?;
        }
        Ok(Some(Entry {
            offset: at,
            data_offset,
            path,
            link,
            kind,
            mode: (mode_raw & 0o7777) as u32,
            uid,
            gid,
            mtime,
            mtime_nsec,
            dev,
            size,
            stored: self.left,
            sparse,
            xattrs,
            notes,
        }))
    }

    /// The old GNU sparse map: four slots in the header, more in extension blocks.
    fn old_gnu_sparse(
        &mut self,
        h: &[u8; BLOCK],
        at: u64,
        path: &[u8],
    ) -> Result<(Vec<(u64, u64)>, u64), TarError> {
        let mut map = Vec::new();
        let slots = |b: &[u8], n: usize, map: &mut Vec<(u64, u64)>| -> Result<(), TarError> {
            for i in 0..n {
                let s = &b[i * 24..i * 24 + 24];
                if s[0] == 0 {
                    break;
                }
                let off = number(&s[0..12], at, "sparse offset")?;
                let len = number(&s[12..24], at, "sparse length")?;
                if off < 0 || len < 0 {
                    return Err(err(at, Some(path), "negative sparse map entry"));
                }
                map.push((off as u64, len as u64));
            }
            Ok(())
        };
        slots(&h[386..482], 4, &mut map)?;
        let real = number(&h[483..495], at, "sparse real size")?;
        if real < 0 {
            return Err(err(at, Some(path), "negative sparse real size"));
        }
        let mut extended = h[482] != 0;
        while extended {
            let b = self
                .block()?
                .ok_or_else(|| err(at, Some(path), "stream truncated in a sparse map"))?;
            slots(&b[..504], 21, &mut map)?;
            if map.len() as u64 > MAX_SPARSE_SEGMENTS {
                return Err(err(at, Some(path), "sparse map too long"));
            }
            extended = b[504] != 0;
        }
        Ok((map, real as u64))
    }

    /// PAX sparse formats 0.0 (offset/numbytes pairs), 0.1 (`GNU.sparse.map`) and 1.0 (a
    /// map at the start of the data).
    #[allow(clippy::type_complexity)]
    fn pax_sparse(
        &mut self,
        keys: &[(Vec<u8>, Vec<u8>)],
        at: u64,
        path: &[u8],
    ) -> Result<(Vec<(u64, u64)>, u64, Option<Vec<u8>>), TarError> {
        let get = |k: &str| {
            keys.iter()
                .rev()
                .find(|(key, _)| key == k.as_bytes())
                .map(|(_, v)| v.as_slice())
        };
        let num = |k: &str| -> Result<Option<u64>, TarError> {
            get(k)
                .map(|v| dec_u64(v).ok_or_else(|| err(at, Some(path), format!("bad PAX {k}"))))
                .transpose()
        };
        let name = get("GNU.sparse.name").map(<[u8]>::to_vec);
        let major = num("GNU.sparse.major")?;
        let minor = num("GNU.sparse.minor")?;
        let unsupported =
            |what: String| err(at, Some(path), format!("unsupported sparse format {what}"));
        match (major, minor) {
            (Some(1), Some(0)) => {
                let real = num("GNU.sparse.realsize")?
                    .ok_or_else(|| err(at, Some(path), "PAX sparse 1.0 without realsize"))?;
                let map = self.sparse_1_0_map(at, path)?;
                Ok((map, real, name))
            }
            (Some(ma), mi) if ma != 0 => Err(unsupported(format!("{ma}.{}", mi.unwrap_or(0)))),
            _ => {
                let real = num("GNU.sparse.size")?
                    .or(num("GNU.sparse.realsize")?)
                    .ok_or_else(|| err(at, Some(path), "PAX sparse entry without a size"))?;
                let mut map = Vec::new();
                if let Some(m) = get("GNU.sparse.map") {
                    let nums = m
                        .split(|&b| b == b',')
                        .map(dec_u64)
                        .collect::<Option<Vec<_>>>()
                        .filter(|v| v.len() % 2 == 0)
                        .ok_or_else(|| err(at, Some(path), "bad GNU.sparse.map"))?;
                    map.extend(nums.chunks(2).map(|c| (c[0], c[1])));
                } else {
                    let mut off = None;
                    for (k, v) in keys {
                        let n = dec_u64(v)
                            .ok_or_else(|| err(at, Some(path), format!("bad PAX {}", lossy(k))))?;
                        match k.as_slice() {
                            b"GNU.sparse.offset" => off = Some(n),
                            b"GNU.sparse.numbytes" => {
                                let o = off.take().ok_or_else(|| {
                                    err(at, Some(path), "GNU.sparse.numbytes without an offset")
                                })?;
                                map.push((o, n));
                            }
                            _ => {}
                        }
                    }
                }
                if let Some(n) = num("GNU.sparse.numblocks")?
                    && n != map.len() as u64
                {
                    return Err(err(
                        at,
                        Some(path),
                        "GNU.sparse.numblocks disagrees with the map",
                    ));
                }
                Ok((map, real, name))
            }
        }
    }

    /// Reads the decimal map that starts a PAX 1.0 sparse entry's data, and its padding.
    fn sparse_1_0_map(&mut self, at: u64, path: &[u8]) -> Result<Vec<(u64, u64)>, TarError> {
        let mut text = Vec::new();
        let mut lines = Vec::new();
        let mut want = None;
        let mut consumed = 0u64;
        let bad = |r: &str| err(at, Some(path), format!("PAX sparse 1.0 map: {r}"));
        while want.is_none_or(|n| (lines.len() as u64) < 1 + 2 * n) {
            if self.left < BLOCK as u64 {
                return Err(bad("runs past the entry's data"));
            }
            let mut b = [0u8; BLOCK];
            if self.fill(&mut b)? < BLOCK {
                return Err(err(
                    self.pos,
                    Some(path),
                    "stream truncated in a sparse map",
                ));
            }
            self.left -= BLOCK as u64;
            consumed += BLOCK as u64;
            text.extend_from_slice(&b);
            while let Some(nl) = text.iter().position(|&c| c == b'\n') {
                let line: Vec<u8> = text.drain(..=nl).collect();
                let n = dec_u64(&line[..line.len() - 1]).ok_or_else(|| bad("not a number"))?;
                lines.push(n);
                if want.is_none() {
                    if n > MAX_SPARSE_SEGMENTS {
                        return Err(bad("too many segments"));
                    }
                    want = Some(n);
                }
                if want.is_some_and(|w| lines.len() as u64 == 1 + 2 * w) {
                    break;
                }
            }
            if consumed > MAX_SPARSE_SEGMENTS * 48 {
                return Err(bad("too long"));
            }
        }
        Ok(lines[1..].chunks(2).map(|c| (c[0], c[1])).collect())
    }
}

fn check_sparse(
    map: &[(u64, u64)],
    size: u64,
    stored: u64,
    at: u64,
    path: &[u8],
) -> Result<(), TarError> {
    let mut end = 0u64;
    let mut total = 0u64;
    for &(off, len) in map {
        let e = off
            .checked_add(len)
            .filter(|&e| off >= end && e <= size)
            .ok_or_else(|| {
                err(
                    at,
                    Some(path),
                    "sparse map segments overlap, go backwards or pass the size",
                )
            })?;
        end = e;
        total += len;
    }
    if total != stored {
        return Err(err(
            at,
            Some(path),
            format!("sparse map holds {total} bytes but the entry stores {stored}"),
        ));
    }
    Ok(())
}

fn kind_type_bits(kind: EntryKind) -> u64 {
    match kind {
        EntryKind::Regular | EntryKind::HardLink => 0o100000,
        EntryKind::Symlink => 0o120000,
        EntryKind::CharDevice => 0o020000,
        EntryKind::BlockDevice => 0o060000,
        EntryKind::Directory => 0o040000,
        EntryKind::Fifo => 0o010000,
    }
}

fn is_ustar(h: &[u8; BLOCK]) -> bool {
    &h[257..263] == b"ustar\0"
}

fn pad_of(size: u64) -> u64 {
    size.next_multiple_of(BLOCK as u64) - size
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A NUL-terminated field that may fill its whole width.
fn cstr(b: &[u8]) -> &[u8] {
    b.iter().position(|&c| c == 0).map_or(b, |n| &b[..n])
}

fn truncate_nul(v: &mut Vec<u8>) {
    if let Some(n) = v.iter().position(|&c| c == 0) {
        v.truncate(n);
    }
}

/// The checksum: accepted as the unsigned or (historic) signed byte sum.
fn check_checksum(h: &[u8; BLOCK], at: u64) -> Result<(), TarError> {
    let stored = number(&h[148..156], at, "checksum")?;
    let mut unsigned = 0i64;
    let mut signed = 0i64;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += b as i64;
        signed += b as i8 as i64;
    }
    if stored != unsigned && stored != signed {
        return Err(err(
            at,
            Some(cstr(&h[0..100])),
            format!("header checksum mismatch (stored {stored}, computed {unsigned})"),
        ));
    }
    Ok(())
}

/// A numeric header field: octal text, or GNU base-256 (high bit of the first byte set;
/// `0xff` starts a negative two's-complement value).
pub fn number(b: &[u8], at: u64, what: &str) -> Result<i64, TarError> {
    let bad = || err(at, None, format!("bad {what} field {:?}", lossy(b)));
    if b[0] & 0x80 != 0 {
        let negative = b[0] == 0xff;
        let mut v: i128 = if negative { -1 } else { (b[0] & 0x7f) as i128 };
        for &x in &b[1..] {
            v = (v << 8) | x as i128;
            if v > i64::MAX as i128 || v < i64::MIN as i128 {
                return Err(bad());
            }
        }
        return Ok(v as i64);
    }
    let mut i = 0;
    while i < b.len() && (b[i] == b' ' || b[i] == 0) && b[i..].iter().any(|&c| c != b' ' && c != 0)
    {
        i += 1;
    }
    let mut v: i64 = 0;
    while i < b.len() && (b'0'..=b'7').contains(&b[i]) {
        v = v
            .checked_mul(8)
            .and_then(|v| v.checked_add((b[i] - b'0') as i64))
            .ok_or_else(bad)?;
        i += 1;
    }
    if b[i..].iter().any(|&c| c != 0 && c != b' ') {
        return Err(bad());
    }
    Ok(v)
}

fn dec_u64(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A PAX time: decimal seconds with an optional fraction, possibly negative. The result
/// is floored seconds and non-negative nanoseconds.
pub fn pax_time(v: &[u8]) -> Option<(i64, u32)> {
    let (neg, digits) = match v.first() {
        Some(b'-') => (true, &v[1..]),
        _ => (false, v),
    };
    let (int, frac) = match digits.iter().position(|&c| c == b'.') {
        Some(p) => (&digits[..p], &digits[p + 1..]),
        None => (digits, &b""[..]),
    };
    if int.is_empty() || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let secs = dec_u64(int)? as i64;
    let mut nsec = 0u32;
    for i in 0..9 {
        nsec = nsec * 10 + frac.get(i).map_or(0, |d| (d - b'0') as u32);
    }
    Some(if !neg {
        (secs, nsec)
    } else if nsec == 0 {
        (-secs, 0)
    } else {
        (-secs - 1, 1_000_000_000 - nsec)
    })
}

/// Parses `"%d %s=%s\n"` records.
/// A PAX key and its value.
type Record = (Vec<u8>, Vec<u8>);

fn pax_records(data: &[u8], at: u64) -> Result<Vec<Record>, TarError> {
    let mut out = Vec::new();
    let mut rest = data;
    let bad = |r: &str| err(at, None, format!("malformed PAX record: {r}"));
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&c| c == b' ')
            .ok_or_else(|| bad("no length"))?;
        let len = dec_u64(&rest[..sp]).ok_or_else(|| bad("bad length"))? as usize;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad("length does not match"));
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&c| c == b'=')
            .ok_or_else(|| bad("no '='"))?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        rest = &rest[len..];
    }
    Ok(out)
}

fn percent_decode(s: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' {
            let hex = std::str::from_utf8(s.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Standard base64, with or without `=` padding.
fn base64_decode(s: &[u8]) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let s: Vec<u8> = s
        .iter()
        .copied()
        .filter(|&c| c != b'=' && c != b'\n')
        .collect();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_fields_take_spaces_nuls_and_full_width() {
        assert_eq!(number(b"0000644\0", 0, "m").unwrap(), 0o644);
        assert_eq!(number(b"  644 \0\0", 0, "m").unwrap(), 0o644);
        assert_eq!(number(b"00000644", 0, "m").unwrap(), 0o644);
        assert_eq!(number(b"\0\0\0\0\0\0\0\0", 0, "m").unwrap(), 0);
        assert!(number(b"0006x4\0\0", 0, "m").is_err());
    }

    #[test]
    fn base256_fields_are_big_endian_and_may_be_negative() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[8..].copy_from_slice(&(1u32 << 31).to_be_bytes());
        assert_eq!(number(&f, 0, "n").unwrap(), 1 << 31);
        let mut neg = [0xffu8; 12];
        neg[11] = 0xfe;
        assert_eq!(number(&neg, 0, "n").unwrap(), -2);
    }

    #[test]
    fn pax_times_floor_negative_fractions() {
        assert_eq!(
            pax_time(b"1700000000.1234567"),
            Some((1_700_000_000, 123_456_700))
        );
        assert_eq!(pax_time(b"-1.5"), Some((-2, 500_000_000)));
        assert_eq!(pax_time(b"5.1234567891"), Some((5, 123_456_789)));
        assert_eq!(pax_time(b"-7"), Some((-7, 0)));
        assert_eq!(pax_time(b"x"), None);
    }

    #[test]
    fn libarchive_names_and_values_decode() {
        assert_eq!(
            percent_decode(b"user.with%3Dequals").unwrap(),
            b"user.with=equals"
        );
        assert_eq!(base64_decode(b"aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode(b"aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode(b"AAEC").unwrap(), [0, 1, 2]);
    }

    #[test]
    fn pax_records_are_length_prefixed_and_binary_safe() {
        // A length past the data, or not ending at a newline.
        assert!(pax_records(b"12 a=b\n", 0).is_err());
        assert!(pax_records(b"6 a=bc\n", 0).is_err());
        // The value may hold newlines: the length decides.
        let r = pax_records(b"11 a=b\0c\nX\n", 0).unwrap();
        assert_eq!(r, vec![(b"a".to_vec(), b"b\0c\nX".to_vec())]);
        let r = pax_records(b"10 a=b\0cd\n", 0).unwrap();
        assert_eq!(r, vec![(b"a".to_vec(), b"b\0cd".to_vec())]);
    }
}
