//! Shared helpers: the reference images in testdata/ and their manifest.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use erofs_testkit::{have, is_root, skip_or_fail};

/// Directory of the reference images: `$EROFS_TESTDATA_IMAGES` (CI regenerates them with
/// the installed mkfs.erofs) or the shipped `testdata/images`.
pub fn images_dir() -> PathBuf {
    match std::env::var_os("EROFS_TESTDATA_IMAGES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/images"),
    }
}

pub fn image(name: &str) -> PathBuf {
    images_dir().join(format!("{name}.erofs"))
}

/// Regenerates the reference images with the installed mkfs.erofs into a temporary
/// directory (needs root and erofs-utils). `None` (after saying so, or failing under CI)
/// when that is not possible.
pub fn regenerate() -> Option<tempfile::TempDir> {
    if !have("mkfs.erofs") || !have("setfattr") || !have("getfattr") {
        skip_or_fail("mkfs.erofs (erofs-utils) and attr are needed to regenerate the images");
        return None;
    }
    if !is_root() {
        skip_or_fail("regenerating the images needs root (device nodes, owners, trusted xattrs)");
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/make-images.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .arg(dir.path())
        .env("ALL_VARIANTS", "1")
        .output()
        .expect("run make-images.sh");
    assert!(
        out.status.success(),
        "make-images.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(dir)
}

/// One `i` line of the manifest.
#[derive(Clone, Debug)]
pub struct Expect {
    pub ty: char,
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u32,
    pub mtime: i64,
    pub extra: String,
    pub sha256: Option<String>,
    pub ino: u64,
}

pub struct Manifest {
    pub inodes: BTreeMap<Vec<u8>, Expect>,
    pub xattrs: BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>,
}

pub fn unhex(s: &str) -> Vec<u8> {
    erofs_verity::from_hex(s).expect("hex")
}

pub fn manifest() -> Manifest {
    manifest_in(&images_dir())
}

pub fn manifest_in(dir: &std::path::Path) -> Manifest {
    let text = std::fs::read_to_string(dir.join("manifest.txt")).expect("manifest.txt");
    let mut m = Manifest {
        inodes: BTreeMap::new(),
        xattrs: BTreeMap::new(),
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f[0] {
            "i" => {
                m.inodes.insert(
                    unhex(f[1]),
                    Expect {
                        ty: f[2].chars().next().unwrap(),
                        mode: u16::from_str_radix(f[3], 8).unwrap(),
                        uid: f[4].parse().unwrap(),
                        gid: f[5].parse().unwrap(),
                        size: f[6].parse().unwrap(),
                        nlink: f[7].parse().unwrap(),
                        mtime: f[8].parse().unwrap(),
                        extra: f[9].to_owned(),
                        sha256: (f[10] != "-").then(|| f[10].to_owned()),
                        ino: f[11].parse().unwrap(),
                    },
                );
            }
            "x" => {
                m.xattrs
                    .entry(unhex(f[1]))
                    .or_default()
                    .insert(unhex(f[2]), unhex(f.get(3).copied().unwrap_or("")));
            }
            _ => panic!("bad manifest line {line}"),
        }
    }
    m
}
