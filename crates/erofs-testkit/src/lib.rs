//! Test support shared by the workspace's test suites, so that every suite skips a missing
//! peer the same way and builds its small images the same way.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use erofs_builder::{FingerprintOptions, NoProgress, Options, UuidChoice, build_dir_to_path};
use sha2::{Digest, Sha256};

/// The `-T` value of the images built here.
pub const EPOCH: i64 = 1_700_000_000;

/// The default fingerprint xattr name.
pub const FINGERPRINT_XATTR: &str = "trusted.erofs.fingerprint";

/// Whether the tests run as root (loop mounts, device nodes, trusted.* xattrs).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Under `CI=true` a missing peer or a failed mount is an error, not a skip.
pub fn strict() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A peer cannot run: fails the test under `CI=true`, otherwise says so loudly. Returns
/// `false`, so that `return skip_or_fail(..)` reads as "nothing was checked".
pub fn skip_or_fail(why: &str) -> bool {
    if strict() {
        panic!("required peer missing under CI=true: {why}");
    }
    eprintln!("\n*** SKIPPED: {why} ***\n");
    false
}

/// Whether `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// All xattrs of `path`, not following symlinks; empty where xattrs are not supported.
pub fn read_xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut names = vec![0u8; 65536];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    let mut out = BTreeMap::new();
    for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut v = vec![0u8; 65536];
        if let Ok(len) = rustix::fs::lgetxattr(path, OsStr::from_bytes(name), &mut v[..]) {
            v.truncate(len);
            out.insert(name.to_vec(), v);
        }
    }
    out
}

/// Writes `data` to `root/rel`, creating the directories on the way.
pub fn write_file(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("a relative path under root")).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Builds `src` into `image` with erofs-builder: `-T EPOCH -U clear`, and fingerprints
/// under the default name when asked.
pub fn build_image(src: &Path, image: &Path, fingerprints: bool) {
    let opts = Options {
        timestamp: Some(EPOCH),
        uuid: UuidChoice::Clear,
        fingerprint: fingerprints.then(|| FingerprintOptions {
            xattr_name: FINGERPRINT_XATTR.as_bytes().to_vec(),
        }),
        ..Options::default()
    };
    build_dir_to_path(src, image, &opts, &NoProgress).expect("build image");
}

/// Builds `src` into `image` with a dm-verity tree appended (`-T EPOCH -U clear --verity`)
/// and returns what the build reported about it.
pub fn build_verity_image(src: &Path, image: &Path) -> erofs_builder::VerityReport {
    let opts = Options {
        timestamp: Some(EPOCH),
        uuid: UuidChoice::Clear,
        verity: Some(erofs_builder::VerityOptions::appended()),
        ..Options::default()
    };
    build_dir_to_path(src, image, &opts, &NoProgress)
        .expect("build image")
        .verity
        .expect("a verity report")
}

/// The fingerprint xattr value of `content`: `sha256:` and the raw digest.
pub fn fingerprint_of(content: &[u8]) -> Vec<u8> {
    erofs_format::xattr::sha256_fingerprint(&Sha256::digest(content).into()).to_vec()
}

/// A deterministic xorshift generator, so that randomised tests reproduce.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next value; the seed must not be 0.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The contents of every file in `dir` (the inputs that once crashed a fuzz target).
pub fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    let files: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!files.is_empty(), "no files in {}", dir.display());
    files
}
