//! An image reads the same through every kind of byte source: a file, borrowed bytes, owned
//! bytes, shared bytes, and a source of the caller's own.

mod common;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use erofs_reader::{Image, ReadAt};

/// What a walk found: one line per entry with the first bytes of each file.
fn listing(img: &Image<'_>) -> Vec<String> {
    img.walk()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let head = if e.inode.is_file() {
                img.read_to_vec(&e.inode, 1 << 20).unwrap()
            } else {
                Vec::new()
            };
            format!("{} {} {:?}", e.path.escape_ascii(), e.nid, head)
        })
        .collect()
}

/// A source of the caller's own (a stand-in for a FUSE or blob backend) that counts its reads.
#[derive(Debug)]
struct Counting {
    bytes: Vec<u8>,
    reads: AtomicU64,
}

impl ReadAt for Counting {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.bytes.read_exact_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.bytes.len() as u64)
    }
}

#[test]
fn every_source_gives_the_same_tree() {
    let path = common::image("compact");
    let bytes = std::fs::read(&path).unwrap();
    let expected = listing(&Image::open(&path).unwrap());
    assert!(expected.len() > 5);

    assert_eq!(listing(&Image::from_bytes(&bytes[..]).unwrap()), expected);
    assert_eq!(
        listing(&Image::from_bytes(bytes.clone()).unwrap()),
        expected
    );
    let shared: Arc<[u8]> = bytes.clone().into();
    assert_eq!(listing(&Image::from_bytes(shared).unwrap()), expected);
    let file = std::fs::File::open(&path).unwrap();
    assert_eq!(listing(&Image::from_bytes(&file).unwrap()), expected);

    let own = Counting {
        bytes: bytes.clone(),
        reads: AtomicU64::new(0),
    };
    let img = Image::from_bytes(&own).unwrap();
    assert_eq!(listing(&img), expected);
    assert!(own.reads.load(Ordering::Relaxed) > 0);
}

#[test]
fn a_source_shorter_than_a_superblock_is_refused() {
    let bytes = vec![0u8; 1100];
    assert!(matches!(
        Image::from_bytes(&bytes[..]),
        Err(erofs_reader::Error::TooSmall { size: 1100 })
    ));
}
