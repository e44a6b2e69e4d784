//! A tar writer for tests: every header field is set on purpose, and any byte can be
//! patched, so that malformed and unusual archives can be built byte for byte.

use crate::EPOCH;

/// One tar header; build it with [`h`] and the setters.
#[derive(Clone)]
#[allow(missing_docs)]
pub struct H {
    pub name: Vec<u8>,
    pub flag: u8,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub link: Vec<u8>,
    pub dev: (u32, u32),
    pub prefix: Vec<u8>,
    pub magic: &'static [u8; 8],
    /// Raw bytes written over the header before the checksum.
    pub patch: Vec<(usize, Vec<u8>)>,
    /// The size field; `None`: the data length.
    pub size: Option<u64>,
    pub signed_checksum: bool,
}

/// POSIX ustar magic and version.
pub const USTAR: &[u8; 8] = b"ustar\x0000";
/// GNU magic and version.
pub const GNU: &[u8; 8] = b"ustar  \0";
/// No magic: a V7 header.
pub const V7: &[u8; 8] = &[0; 8];

/// A header for `name` with typeflag `flag`: mode 0644 (0755 for directories), owner 0:0,
/// mtime [`crate::EPOCH`], ustar magic.
pub fn h(name: &str, flag: u8) -> H {
    assert!(name.len() <= 100, "{name}: use a prefix, L or PAX");
    H {
        name: name.as_bytes().to_vec(),
        flag,
        mode: if flag == b'5' { 0o755 } else { 0o644 },
        uid: 0,
        gid: 0,
        mtime: EPOCH,
        link: Vec::new(),
        dev: (0, 0),
        prefix: Vec::new(),
        magic: USTAR,
        patch: Vec::new(),
        size: None,
        signed_checksum: false,
    }
}

impl H {
    /// Permission bits.
    pub fn mode(mut self, m: u32) -> Self {
        self.mode = m;
        self
    }
    /// Owner.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    /// Link target.
    pub fn link(mut self, l: &str) -> Self {
        self.link = l.as_bytes().to_vec();
        self
    }
    /// Modification time (octal: not negative; patch base-256 for that).
    pub fn mtime(mut self, t: i64) -> Self {
        self.mtime = t;
        self
    }
    /// Raw bytes written at `at` before the checksum.
    pub fn patch(mut self, at: usize, bytes: &[u8]) -> Self {
        self.patch.push((at, bytes.to_vec()));
        self
    }
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0w$o}", v, w = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
}

/// A tar stream under construction.
#[derive(Default)]
pub struct Tar {
    /// The bytes so far.
    pub out: Vec<u8>,
}

impl Tar {
    /// Appends the header `h` for `size` data bytes.
    pub fn header(&mut self, h: &H, size: u64) {
        let mut b = [0u8; 512];
        b[..h.name.len()].copy_from_slice(&h.name);
        octal(&mut b[100..108], h.mode as u64);
        octal(&mut b[108..116], h.uid);
        octal(&mut b[116..124], h.gid);
        octal(&mut b[124..136], h.size.unwrap_or(size));
        octal(&mut b[136..148], h.mtime.max(0) as u64);
        b[156] = h.flag;
        b[157..157 + h.link.len()].copy_from_slice(&h.link);
        b[257..265].copy_from_slice(h.magic);
        if h.magic != V7 {
            octal(&mut b[329..337], h.dev.0 as u64);
            octal(&mut b[337..345], h.dev.1 as u64);
        }
        b[345..345 + h.prefix.len()].copy_from_slice(&h.prefix);
        for (at, bytes) in &h.patch {
            b[*at..at + bytes.len()].copy_from_slice(bytes);
        }
        b[148..156].fill(b' ');
        let sum: i64 = if h.signed_checksum {
            b.iter().map(|&x| x as i8 as i64).sum()
        } else {
            b.iter().map(|&x| x as i64).sum()
        };
        let s = format!("{:06o}\0 ", sum as u64 & 0o777777);
        b[148..156].copy_from_slice(s.as_bytes());
        self.out.extend_from_slice(&b);
    }

    /// Appends data and its padding.
    pub fn data(&mut self, data: &[u8]) {
        self.out.extend_from_slice(data);
        let pad = data.len().next_multiple_of(512) - data.len();
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    /// Appends an entry: header and data.
    pub fn entry(&mut self, h: H, data: &[u8]) -> &mut Self {
        self.header(&h, data.len() as u64);
        self.data(data);
        self
    }

    /// Appends a regular file.
    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.entry(h(name, b'0'), data)
    }

    /// Appends a directory.
    pub fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(h(name, b'5'), b"")
    }

    /// A PAX record block (`x`, or `g` for global) for the next entry.
    /// Appends PAX records (`x`, or `g` for global) for the next entry.
    pub fn pax(&mut self, flag: u8, recs: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in recs {
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while format!("{len}").len() + rest != len {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.entry(h("././@PaxHeader", flag), &body)
    }

    /// A GNU `L` or `K` record.
    /// Appends a GNU `L` or `K` record.
    pub fn gnu_long(&mut self, flag: u8, value: &str) -> &mut Self {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        let mut hd = h("././@LongLink", flag);
        hd.magic = GNU;
        self.entry(hd, &v)
    }

    /// The stream with its end-of-archive marker.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut v = std::mem::take(&mut self.out);
        v.extend_from_slice(&[0u8; 1024]);
        v
    }
}

/// `v` as a GNU base-256 field of `width` bytes.
pub fn base256(width: usize, v: i64) -> Vec<u8> {
    let mut f = vec![if v < 0 { 0xff } else { 0 }; width];
    let be = v.to_be_bytes();
    f[width - 8..].copy_from_slice(&be);
    if v >= 0 {
        f[0] = 0x80;
    }
    f
}
