//! Test support shared by the workspace's test suites, so that every suite skips a missing
//! peer the same way and builds its small images the same way.

pub mod tar;

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
    record_skip(why);
    false
}

/// Appends `test<TAB>why` to the file `EROFS_RS_SKIP_LOG` names, so that `cargo xtask test`
/// reports the skip (cargo itself shows a skipped test as `ok`). The test is named by its
/// binary (without cargo's hash) and its thread, which libtest names after the test.
fn record_skip(why: &str) {
    use std::io::Write;
    let Some(log) = std::env::var_os("EROFS_RS_SKIP_LOG") else {
        return;
    };
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| match s.rsplit_once('-') {
            Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
            _ => s,
        })
        .unwrap_or_default();
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    let line = format!("{binary}::{test}\t{}\n", why.replace(['\t', '\n'], " "));
    // One short O_APPEND write per skip: concurrent test processes do not interleave lines.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Whether `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Lower-case hex.
pub use erofs_verity::to_hex as hex;

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
    let mut opts = Options::default();
    opts.timestamp = Some(EPOCH);
    opts.uuid = UuidChoice::Clear;
    opts.fingerprint = fingerprints.then(|| FingerprintOptions::new(FINGERPRINT_XATTR));
    build_dir_to_path(src, image, &opts, &NoProgress).expect("build image");
}

/// Builds `src` into `image` with a dm-verity tree appended (`-T EPOCH -U clear --verity`)
/// and returns what the build reported about it.
pub fn build_verity_image(src: &Path, image: &Path) -> erofs_builder::VerityReport {
    let mut opts = Options::default();
    opts.timestamp = Some(EPOCH);
    opts.uuid = UuidChoice::Clear;
    opts.verity = Some(erofs_builder::VerityOptions::appended());
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

/// The mkfs.erofs 1.9.3 reference images and their tree (`SHA256SUMS`, `make-tree.py`):
/// `../shared/testdata/erofs-utils-1.9.3/` beside the repository, as CI lays it out. `None`
/// after [`skip_or_fail`] when it is missing.
pub fn reference_images_1_9_3() -> Option<std::path::PathBuf> {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/erofs-utils-1.9.3");
    if dir.join("SHA256SUMS").is_file() {
        return Some(dir);
    }
    skip_or_fail(&format!("reference images not found at {}", dir.display()));
    None
}

/// Checks the man page and completion scripts a tool generates (`EROFS_RS_GENERATE`, as
/// `cargo xtask dist` runs it): `man -l` renders the page with the exit statuses, bash and
/// zsh load the completion for `name`, the other shells get a script. A missing `man`,
/// `bash` or `zsh` is skipped (failure under `CI=true`).
pub fn check_man_and_completions(bin: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let generate = |kind: &str| {
        let out = Command::new(bin)
            .env("EROFS_RS_GENERATE", kind)
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: generating {kind}");
        assert!(!out.stdout.is_empty(), "{name}: {kind} is empty");
        let p = dir.path().join(kind);
        std::fs::write(&p, &out.stdout).unwrap();
        p
    };
    let page = generate("man");
    if have("man") {
        let out = Command::new("man")
            .args(["-P", "cat", "-l"])
            .arg(&page)
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "man -l {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(name), "{name}: {text}");
        assert!(
            text.contains("EXIT STATUS") && text.contains("usage error"),
            "{name} man page lists exit statuses: {text}"
        );
        assert!(
            text.contains("sha256:"),
            "{name} man page describes fingerprints: {text}"
        );
    } else {
        skip_or_fail("man (man-db) is not installed: man page not rendered");
    }
    let bash = generate("bash");
    if have("bash") {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("source '{}' && complete -p {name}", bash.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "bash completion for {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        skip_or_fail("bash is not installed");
    }
    let zsh = generate("zsh");
    if have("zsh") {
        let out = Command::new("zsh")
            .arg("-fc")
            .arg(format!(
                "autoload -Uz compinit && compinit -u -D && source '{}' && print -r -- $_comps[{name}]",
                zsh.display()
            ))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.trim() == format!("_{name}"),
            "zsh completion for {name}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        skip_or_fail("zsh is not installed: zsh completion not loaded");
    }
    for shell in ["fish", "elvish", "powershell"] {
        let script = std::fs::read_to_string(generate(shell)).unwrap();
        assert!(script.contains(name), "{shell} completion names {name}");
    }
}

/// The shipped example image: `testdata/example-tree` built like `mkfs.erofs-rs
/// --fingerprint=sha256 -T 1700000000 -U clear --all-root -x -1`, from a copy whose modes are
/// normalized (0755 for directories and executables, 0644 for other files), so that the bytes
/// depend on neither the checkout's umask and owner nor the temporary directory's xattrs.
/// Tests pin its digest and snapshot its space map.
pub fn build_example_image(image: &Path) {
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/example-tree");
    let copy = tempfile::tempdir().expect("temporary directory");
    copy_normalized(&tree, copy.path());
    let mut opts = Options::default();
    opts.timestamp = Some(EPOCH);
    opts.uuid = UuidChoice::Clear;
    opts.fingerprint = Some(FingerprintOptions::new(FINGERPRINT_XATTR));
    opts.scan.ownership.all_root = true;
    opts.xattr_tolerance = -1;
    build_dir_to_path(copy.path(), image, &opts, &NoProgress).expect("build the example image");
}

/// Copies the tree at `from` into the existing directory `to`: symlinks as symlinks, modes
/// normalized.
fn copy_normalized(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(from).expect("read the example tree") {
        let entry = entry.expect("read the example tree");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = std::fs::symlink_metadata(&src).expect("stat");
        if meta.is_symlink() {
            let target = std::fs::read_link(&src).expect("readlink");
            std::os::unix::fs::symlink(target, &dst).expect("symlink");
            continue;
        }
        let mode = if meta.is_dir() {
            std::fs::create_dir(&dst).expect("mkdir");
            copy_normalized(&src, &dst);
            0o755
        } else {
            std::fs::copy(&src, &dst).expect("copy");
            if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            }
        };
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }
}
