//! Hand-built images for what Debian's mkfs.erofs 1.5 cannot write: 512- and 1024-byte
//! blocks, long xattr prefixes, the name filter and content fingerprints (§8.3, §8.5, §15).

use erofs_format::xattr::{LongPrefix, XATTR_FILTER_EMPTY, name_filter_bit, sha256_fingerprint};
use erofs_format::{
    Compat, DataLayout, Dirent, FileType, Incompat, InodeCompact, InodeFormat, SuperBlock,
};
use erofs_reader::check::{CheckOptions, check};
use erofs_reader::{Image, NoProgress};
use zerocopy::{FromZeros, IntoBytes};

const ROOT_NID: u64 = 37; // byte 1184, after the superblock and one 20-byte prefix record
const FILE_NID: u64 = 40; // byte 1280
const CONTENT: &[u8] = b"hello";

fn inode(mode: u16, size: u32, nlink: u16, icount: u16) -> InodeCompact {
    let mut i = InodeCompact::new_zeroed();
    i.format.set(
        InodeFormat {
            extended: false,
            layout: DataLayout::FlatInline,
            bit4: false,
        }
        .encode(),
    );
    i.mode.set(mode);
    i.size.set(size);
    i.nlink.set(nlink);
    i.xattr_icount.set(icount);
    i.i_u.set(erofs_format::NULL_ADDR);
    i
}

/// A 1536- or 2048-byte image: root directory with one file that carries a fingerprint
/// xattr stored through long prefix 0 (`trusted.erofs.fingerprint`).
fn build(blkszbits: u8, filter: u32) -> Vec<u8> {
    let blksz = 1usize << blkszbits;
    let len = (1024 + 1024).max(2 * blksz).div_ceil(blksz) * blksz;
    let mut img = vec![0u8; len];
    let prefix = LongPrefix::from_name(b"trusted.erofs.fingerprint");
    let rec = prefix.encode();
    assert_eq!(rec.len(), 20);
    img[1152..1172].copy_from_slice(&rec);

    // Root directory: ".", "..", "file", inline.
    let names: [&[u8]; 3] = [b".", b"..", b"file"];
    let nids = [ROOT_NID, ROOT_NID, FILE_NID];
    let types = [FileType::Directory, FileType::Directory, FileType::Regular];
    let mut dir = Vec::new();
    let mut nameoff = 12 * names.len();
    for k in 0..3 {
        let mut d = Dirent::new_zeroed();
        d.nid.set(nids[k]);
        d.nameoff.set(nameoff as u16);
        d.file_type = types[k].raw();
        dir.extend_from_slice(d.as_bytes());
        nameoff += names[k].len();
    }
    for n in names {
        dir.extend_from_slice(n);
    }
    let root = inode(0o040755, dir.len() as u32, 2, 0);
    let at = ROOT_NID as usize * 32;
    img[at..at + 32].copy_from_slice(root.as_bytes());
    img[at + 32..at + 32 + dir.len()].copy_from_slice(&dir);

    // File: 12-byte xattr header, one 44-byte entry (index 0x80|0, no suffix, 39-byte
    // value), then the inline tail.
    let digest = [0x5Au8; 32];
    let value = sha256_fingerprint(&digest);
    let mut body = Vec::new();
    body.extend_from_slice(&filter.to_le_bytes());
    body.extend_from_slice(&[0u8; 8]); // shared count 0 + reserved
    body.extend_from_slice(&[0, 0x80, 39, 0]);
    body.extend_from_slice(&value);
    body.resize(12 + 44, 0);
    let icount = erofs_format::xattr::icount_for(body.len()).unwrap();
    let file = inode(0o100644, CONTENT.len() as u32, 1, icount);
    let at = FILE_NID as usize * 32;
    img[at..at + 32].copy_from_slice(file.as_bytes());
    img[at + 32..at + 32 + body.len()].copy_from_slice(&body);
    img[at + 32 + body.len()..at + 32 + body.len() + CONTENT.len()].copy_from_slice(CONTENT);

    let mut sb = SuperBlock::new_zeroed();
    sb.magic.set(erofs_format::EROFS_MAGIC);
    sb.blkszbits = blkszbits;
    sb.root_nid.set(ROOT_NID as u16);
    sb.inos.set(2);
    sb.blocks_lo.set((len / blksz) as u32);
    sb.feature_compat.set(
        (Compat::SB_CHKSUM
            | Compat::MTIME
            | Compat::XATTR_FILTER
            | Compat::PLAIN_XATTR_PFX
            | Compat::ISHARE_XATTRS)
            .bits(),
    );
    sb.feature_incompat.set(Incompat::XATTR_PREFIXES.bits());
    sb.xattr_prefix_count = 1;
    sb.xattr_prefix_start.set(1152 / 4);
    sb.ishare_xattr_prefix_id = 0;
    img[1024..1152].copy_from_slice(sb.as_bytes());
    erofs_format::seal_checksum(&mut img, blkszbits);
    img
}

fn good_filter() -> u32 {
    // trusted.erofs.fingerprint: base index 4 (trusted.), rest "erofs.fingerprint" -> bit 30.
    let bit = name_filter_bit(4, b"erofs.fingerprint");
    assert_eq!(bit, 30);
    XATTR_FILTER_EMPTY & !(1 << bit)
}

#[test]
fn small_block_images_read_with_long_prefixes_and_fingerprints() {
    // `EROFS_FUZZ_SEEDS=DIR` also writes the images there, as fuzzer seeds.
    if let Some(dir) = std::env::var_os("EROFS_FUZZ_SEEDS") {
        for bits in [9u8, 10] {
            let p = std::path::Path::new(&dir).join(format!("fingerprint-{}.img", 1 << bits));
            std::fs::write(p, build(bits, good_filter())).unwrap();
        }
    }
    for bits in [9u8, 10, 12] {
        let img = Image::from_bytes(build(bits, good_filter())).expect("opens");
        assert_eq!(img.block_size(), 1 << bits);
        assert_eq!(img.root_nid(), ROOT_NID);
        assert_eq!(img.long_prefixes().len(), 1);
        assert_eq!(
            img.long_prefixes()[0].full_name(),
            b"trusted.erofs.fingerprint"
        );
        assert_eq!(
            img.fingerprint_name().unwrap().unwrap(),
            b"trusted.erofs.fingerprint"
        );
        let file = img.lookup(b"/file").unwrap();
        assert_eq!(file.nid, FILE_NID);
        assert_eq!(img.read_to_vec(&file, 100).unwrap(), CONTENT);
        let fp = img
            .fingerprint(&file)
            .unwrap()
            .expect("fingerprint present");
        assert_eq!(fp, sha256_fingerprint(&[0x5A; 32]));
        let x = img.xattrs(&file).unwrap();
        assert_eq!(x.len(), 1);
        assert_eq!(x[0].name, b"trusted.erofs.fingerprint");
        assert_eq!(x[0].name_index, 0x80);
        assert!(!x[0].shared);
        let root = img.inode(ROOT_NID).unwrap();
        assert_eq!(
            img.fingerprint(&root).unwrap(),
            None,
            "directories carry none"
        );
        let report = check(&img, CheckOptions::default(), &NoProgress).unwrap();
        assert!(report.is_clean(), "{bits}: {:?}", report.problems);
        assert_eq!(report.inodes, 2);
    }
}

#[test]
fn name_filter_bit_set_for_a_present_name_hides_it_and_fsck_reports_it() {
    let img = Image::from_bytes(build(10, XATTR_FILTER_EMPTY)).unwrap();
    let file = img.lookup(b"/file").unwrap();
    // The filter says "absent", so the fast lookup does not scan (like the kernel).
    assert_eq!(img.fingerprint(&file).unwrap(), None);
    assert_eq!(
        img.xattrs(&file).unwrap().len(),
        1,
        "a full listing still finds it"
    );
    let report = check(&img, CheckOptions::default(), &NoProgress).unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].kind, "xattr-filter");
    assert_eq!(report.problems[0].nid, Some(FILE_NID));
}

#[test]
fn an_ishare_prefix_id_beyond_the_prefix_count_is_corrupt() {
    let mut b = build(10, good_filter());
    b[1024 + 105] = 1; // ishare_xattr_prefix_id, with only one prefix registered
    erofs_format::seal_checksum(&mut b, 10);
    let img = Image::from_bytes(b).unwrap();
    let file = img.lookup(b"/file").unwrap();
    assert!(img.fingerprint(&file).is_err());
}

#[test]
fn the_checksum_of_a_1024_byte_block_image_covers_1024_bytes_from_byte_1024() {
    let mut b = build(10, good_filter());
    b[2047] ^= 1; // last byte of the covered range
    assert!(matches!(
        Image::from_bytes(b),
        Err(erofs_reader::Error::Checksum { .. })
    ));
}
