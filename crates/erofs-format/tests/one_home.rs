//! erofs-format is the one home of the on-disk format: no other crate of the workspace (nor
//! xtask) decodes little-endian integers from bytes itself. Code that decodes formats other
//! than EROFS's is listed below with the format it reads; test modules are exempt.

use std::path::{Path, PathBuf};

/// Files that decode other formats, and which.
const OTHER_FORMATS: &[(&str, &str)] = &[
    (
        "xtask/src/qemu.rs",
        "ELF program headers of the guest binary",
    ),
    (
        "crates/erofs-reader/src/decompress.rs",
        "Zstandard frame headers (LZ4 streams go to liblz4)",
    ),
    ("crates/erofs-verity/", "dm-verity's superblock"),
    (
        "crates/erofs-reader/src/fuzzing.rs",
        "fuzz inputs' own framing",
    ),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_crate_but_erofs_format_decodes_on_disk_integers() {
    let root = workspace();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        if entry.file_name() != "erofs-format" {
            rust_files(&entry.path().join("src"), &mut files);
        }
    }
    rust_files(&root.join("xtask/src"), &mut files);
    assert!(
        files.len() > 20,
        "the scan found only {} files",
        files.len()
    );
    let mut found = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if OTHER_FORMATS.iter().any(|(p, _)| rel.starts_with(p)) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            // Test modules come last in a file, by this project's convention.
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            if line.contains("from_le_bytes(") {
                found.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "on-disk integers decoded outside erofs-format (add a decoder there):\n{}",
        found.join("\n")
    );
}
