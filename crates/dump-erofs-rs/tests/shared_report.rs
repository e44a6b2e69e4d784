//! `dump.erofs-rs --shared-report`: which files would share page cache across images
//! mounted with `inode_share` in one domain (page-cache-share.md §5 and §8).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use erofs_reader::Image;
use erofs_testkit::{build_image as build, fingerprint_of, write_file as write};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn dump(args: &[&Path], extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dump-erofs-rs"))
        .args(extra)
        .arg("--shared-report")
        .args(args)
        .output()
        .expect("run dump.erofs-rs")
}

fn report(images: &[&Path], extra: &[&str]) -> Value {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let o = dump(images, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON report")
}

/// Two images: v1 has `/lib` twice (two paths) and a unique file; v2 has `/lib` once and
/// another unique file. 10,000 bytes = 3 pages.
fn two_versions(dir: &Path) -> (PathBuf, PathBuf) {
    let lib = vec![7u8; 10_000];
    let (a, b) = (dir.join("v1"), dir.join("v2"));
    write(&a, "usr/lib/libfoo.so", &lib);
    write(&a, "opt/copy-of-libfoo.so", &lib);
    write(&a, "etc/only-in-v1", b"v1\n");
    write(&a, "empty", b"");
    write(&b, "usr/lib/libfoo.so", &lib);
    write(&b, "etc/only-in-v2", b"v2\n");
    let (ia, ib) = (dir.join("v1.erofs"), dir.join("v2.erofs"));
    build(&a, &ia, true);
    build(&b, &ib, true);
    (ia, ib)
}

#[test]
fn identical_files_share_within_one_image_and_across_images() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = two_versions(d.path());
    let r = report(&[&a, &b], &[]);
    let t = &r["totals"];
    assert_eq!(t["shared_groups"], 1);
    assert_eq!(t["cross_image_groups"], 1);
    assert_eq!(
        t["saved_pages"],
        2 * 3,
        "three copies of a 3-page file save two copies"
    );
    let g = &r["groups"][0];
    assert_eq!(g["members"].as_array().unwrap().len(), 3);
    assert_eq!(g["size"], 10_000);
    assert_eq!(r["images"][0]["files"], 4);
    assert_eq!(
        r["images"][0]["fingerprinted"], 3,
        "empty files carry no fingerprint"
    );
    assert!(
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "empty_files")
    );
}

#[test]
fn human_report_lists_paths_per_image_and_the_saving() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = two_versions(d.path());
    let o = dump(&[&a, &b], &[]);
    let t = String::from_utf8_lossy(&o.stdout);
    assert!(
        t.contains(&format!("{}: /usr/lib/libfoo.so", b.display())),
        "{t}"
    );
    assert!(
        t.contains(&format!("{}: /opt/copy-of-libfoo.so", a.display())),
        "{t}"
    );
    assert!(
        t.contains("saved:                   6 pages (24.0 KiB"),
        "{t}"
    );
    assert!(
        t.contains("one common domain_id"),
        "the report states its domain assumption: {t}"
    );
}

#[test]
fn a_forged_fingerprint_on_a_file_of_another_size_is_a_size_conflict() {
    let d = tempfile::tempdir().unwrap();
    let (a, _) = two_versions(d.path());
    let src = d.path().join("forged");
    write(&src, "usr/lib/libfoo.so", &[9u8; 12_345]);
    let image = d.path().join("forged.erofs");
    build(&src, &image, true);
    // Give the 12,345-byte file the fingerprint of the 10,000-byte library.
    let mut bytes = std::fs::read(&image).unwrap();
    let from = fingerprint_of(&[9u8; 12_345]);
    let at = bytes
        .windows(39)
        .position(|w| w == from.as_slice())
        .expect("fingerprint stored");
    bytes[at..at + 39].copy_from_slice(&fingerprint_of(&[7u8; 10_000]));
    std::fs::write(&image, bytes).unwrap();

    let r = report(&[&a, &image], &[]);
    let conflict = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "size_conflict")
        .expect("size conflict");
    let sizes: Vec<u64> = conflict["variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, vec![10_000, 12_345]);
    assert_eq!(
        r["totals"]["saved_pages"], 3,
        "only the two 10,000-byte copies share"
    );
}

#[test]
fn tampered_data_is_found_only_by_hashing_and_flagged_as_a_content_conflict() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = two_versions(d.path());
    let img = Image::open(&b).unwrap();
    let lib = img.lookup(b"/usr/lib/libfoo.so").unwrap();
    let at = img
        .data_extents(&lib)
        .unwrap()
        .into_iter()
        .find_map(|e| e.physical)
        .unwrap();
    drop(img);
    let mut bytes = std::fs::read(&b).unwrap();
    bytes[at as usize + 17] ^= 0x55;
    std::fs::write(&b, bytes).unwrap();

    let plain = report(&[&a, &b], &[]);
    assert!(
        !plain["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "content_mismatch")
    );
    let hashed = report(&[&a, &b], &["--verify-content"]);
    let f = hashed["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "content_mismatch")
        .expect("content conflict");
    assert_eq!(f["image"], 1);
    assert_eq!(f["member"]["paths"][0], "/usr/lib/libfoo.so");
}

#[test]
fn an_image_without_fingerprints_blocks_its_files() {
    let d = tempfile::tempdir().unwrap();
    let (a, _) = two_versions(d.path());
    let plain = d.path().join("plain.erofs");
    build(&d.path().join("v2"), &plain, false);
    let r = report(&[&a, &plain], &[]);
    assert!(
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["kind"] == "image"
                && f["image"] == 1
                && f["problem"]["kind"] == "no_ishare_feature")
    );
    assert_eq!(r["totals"]["cross_image_groups"], 0);
}

#[test]
fn a_missing_image_is_named_in_the_error() {
    let o = dump(&[Path::new("/nonexistent/x.erofs")], &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/x.erofs"));
}

#[test]
fn json_report_is_stable() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = two_versions(d.path());
    let mut r = report(&[&a, &b], &[]);
    // Image paths live in a temporary directory; everything else is deterministic.
    for i in r["images"].as_array_mut().unwrap() {
        let name = Path::new(i["path"].as_str().unwrap())
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        i["path"] = name.into();
    }
    insta::assert_json_snapshot!("shared_report_two_versions", r);
}

/// Regular files of `root` with their SHA-256 and size, read from the source tree.
fn source_files(root: &Path) -> Vec<([u8; 32], u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let data = std::fs::read(e.path()).unwrap();
                if !data.is_empty() {
                    out.push((Sha256::digest(&data).into(), data.len() as u64));
                }
            }
        }
    }
    out
}

/// Copies regular files of /usr/share, in sorted order, until `budget` bytes.
fn copy_usr_share(dest: &Path, budget: u64) -> usize {
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::from("/usr/share")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries.into_iter().rev() {
            match e.file_type() {
                Ok(ft) if ft.is_dir() => stack.push(e.path()),
                Ok(ft) if ft.is_file() => files.push(e.path()),
                _ => {}
            }
        }
    }
    let mut used = 0;
    let mut n = 0;
    for f in files {
        let Ok(m) = std::fs::metadata(&f) else {
            continue;
        };
        if used + m.len() > budget {
            continue;
        }
        let rel = f.strip_prefix("/usr/share").unwrap();
        let to = dest.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        if std::fs::copy(&f, &to).is_ok() {
            used += m.len();
            n += 1;
        }
    }
    n
}

#[test]
fn saving_over_two_real_trees_matches_what_the_source_trees_imply() {
    let d = tempfile::tempdir().unwrap();
    let (t1, t2) = (d.path().join("share-1"), d.path().join("share-2"));
    let n = copy_usr_share(&t1, 24 << 20);
    if n < 200 {
        let msg = format!("/usr/share has only {n} readable files; the real-tree test needs 200");
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{msg}");
        eprintln!("SKIPPED: {msg}");
        return;
    }
    copy_usr_share(&t2, 24 << 20);
    // The second version changes a few files, drops one and adds one.
    let mut changed = 0;
    let mut stack = vec![t2.clone()];
    let mut victims = Vec::new();
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
            } else if p.is_file() && victims.len() < 8 {
                victims.push(p);
            }
        }
    }
    for p in &victims[..6] {
        let mut data = std::fs::read(p).unwrap();
        data.extend_from_slice(b"\nchanged in version 2\n");
        std::fs::write(p, data).unwrap();
        changed += 1;
    }
    std::fs::remove_file(&victims[6]).unwrap();
    write(&t2, "new-in-v2/readme", b"new file\n");
    assert_eq!(changed, 6);

    let (i1, i2) = (
        d.path().join("share-1.erofs"),
        d.path().join("share-2.erofs"),
    );
    build(&t1, &i1, true);
    build(&t2, &i2, true);

    // The expectation, from the source trees alone: group non-empty files by content.
    let mut groups: HashMap<([u8; 32], u64), u64> = HashMap::new();
    for f in source_files(&t1).into_iter().chain(source_files(&t2)) {
        *groups.entry(f).or_default() += 1;
    }
    let expected: u64 = groups
        .iter()
        .map(|((_, size), n)| (n - 1) * size.div_ceil(4096))
        .sum();
    let shared = groups.values().filter(|&&n| n > 1).count() as u64;

    let r = report(&[&i1, &i2], &[]);
    assert_eq!(r["totals"]["saved_pages"], expected);
    assert_eq!(r["totals"]["shared_groups"], shared);
    assert!(
        expected > 1000,
        "two near-identical trees of 24 MiB save most pages ({expected})"
    );
}

/// Compressed images (mkfs.erofs 1.9.3, lz4 and zstd): the shared page cache holds decoded
/// pages, so a group's size is the decoded size, and `--verify-content` decodes every
/// fingerprinted file and finds it matching.
#[test]
fn compressed_reference_images_share_decoded_pages_and_verify() {
    let Some(dir) = erofs_testkit::reference_images_1_9_3() else {
        return;
    };
    let (a, b) = (
        dir.join("lz4-default.erofs"),
        dir.join("zstd-default.erofs"),
    );
    let r = report(&[&a, &b], &["--verify-content", "--top", "1000"]);
    let mixed = Image::open(&a).unwrap().lookup(b"/big/mixed.bin").unwrap();
    assert!(mixed.is_compressed());
    let g = r["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["members"].as_array().unwrap().len() == 4 && g["size"] == mixed.size)
        .expect("mixed.bin and its copy in both images form one group");
    assert_eq!(g["read_path"], "compressed");
    assert_eq!(g["saved_pages"], 3 * mixed.size.div_ceil(4096));
    let findings = r["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .all(|f| f["kind"] == "name_mismatch" || f["kind"] == "empty_files"),
        "no content problem: {findings:?}"
    );
    assert_eq!(r["totals"]["files"], 708);
}
