//! dump.erofs-rs, run as a binary over the reference images.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use erofs_testkit::skip_or_fail;

fn images_dir() -> PathBuf {
    match std::env::var_os("EROFS_TESTDATA_IMAGES") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/images"),
    }
}

fn images() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(images_dir())
        .expect("testdata/images")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "erofs"))
        .collect();
    v.sort();
    assert!(v.len() >= 5, "reference images present");
    v
}

fn dump(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dump-erofs-rs"))
        .args(args)
        .output()
        .expect("run dump-erofs-rs")
}

fn dump_ok(args: &[&str]) -> Vec<u8> {
    let out = dump(args);
    assert!(
        out.status.success(),
        "dump-erofs-rs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn dump_json(args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_slice(&dump_ok(&a)).expect("valid JSON")
}

/// `label: value` lines of a superblock listing.
fn facts(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Feature names with aliases folded (dump.erofs 1.5 says `big_pcluster` for compr_cfgs).
fn feature_set(s: &str) -> BTreeSet<String> {
    s.split_whitespace()
        .map(|f| match f {
            "big_pcluster" => "compr_cfgs".to_owned(),
            "compr_head2" => "device_table".to_owned(),
            "dedupe" => "fragments".to_owned(),
            "lz4_0padding" => "0padding".to_owned(),
            other => other.to_owned(),
        })
        .collect()
}

#[test]
fn superblock_facts_agree_with_dump_erofs() {
    let Ok(peer) = Command::new("dump.erofs").arg("-V").output() else {
        skip_or_fail("dump.erofs (erofs-utils) is not installed");
        return;
    };
    assert!(!peer.stdout.is_empty() || !peer.stderr.is_empty());
    for img in images() {
        let img = img.to_str().unwrap();
        let theirs = Command::new("dump.erofs")
            .arg(img)
            .env("TZ", "UTC")
            .output()
            .unwrap();
        assert!(theirs.status.success(), "dump.erofs {img}");
        let theirs = facts(&String::from_utf8_lossy(&theirs.stdout));
        let ours = facts(&String::from_utf8(dump_ok(&[img])).unwrap());
        let mut compared = 0;
        for (label, value) in &theirs {
            let Some(mine) = ours.get(label) else {
                continue;
            };
            if label == "Filesystem features" {
                assert_eq!(feature_set(mine), feature_set(value), "{img}: {label}");
            } else {
                assert_eq!(mine, value, "{img}: {label}");
            }
            compared += 1;
        }
        assert!(
            compared >= 9,
            "{img}: only {compared} common facts; dump.erofs printed {theirs:?}"
        );
    }
}

#[test]
fn statistics_agree_with_dump_erofs_s() {
    if Command::new("dump.erofs").arg("-V").output().is_err() {
        skip_or_fail("dump.erofs (erofs-utils) is not installed");
        return;
    }
    let common = [
        "Filesystem total file count",
        "Filesystem regular file count",
        "Filesystem directory count",
        "Filesystem char dev count",
        "Filesystem block dev count",
        "Filesystem FIFO file count",
        "Filesystem SOCK file count",
        "Filesystem symlink file count",
        "Filesystem total original file size",
    ];
    for img in images() {
        let img = img.to_str().unwrap();
        let theirs = Command::new("dump.erofs")
            .args(["-S", img])
            .output()
            .unwrap();
        let theirs = facts(&String::from_utf8_lossy(&theirs.stdout));
        let ours = facts(&String::from_utf8(dump_ok(&["-S", img])).unwrap());
        for label in common {
            assert_eq!(ours.get(label), theirs.get(label), "{img}: {label}");
        }
    }
}

#[test]
fn json_superblock_names_features_and_the_oldest_kernel() {
    let img = images_dir().join("chunk-indexes.erofs");
    let v = dump_json(&[img.to_str().unwrap()]);
    let sb = &v["superblock"];
    assert_eq!(sb["magic"], 0xE0F5_E1E2u32);
    assert_eq!(sb["block_size"], 4096);
    assert_eq!(sb["uuid"], "c0ffee00-1234-4321-8765-0123456789ab");
    assert_eq!(sb["incompat_features"], serde_json::json!(["chunked_file"]));
    assert_eq!(sb["oldest_linux"], "5.15", "CHUNKED_FILE needs Linux 5.15");
    assert_eq!(sb["checksum_ok"], true);
    let plain = dump_json(&[images_dir().join("compact.erofs").to_str().unwrap()]);
    assert_eq!(plain["superblock"]["oldest_linux"], "5.4");
    assert_eq!(
        plain["superblock"]["compat_features"],
        serde_json::json!(["sb_csum", "mtime"])
    );
}

#[test]
fn inode_view_by_path_and_by_nid_show_the_same_inode() {
    let img = images_dir().join("compact.erofs");
    let img = img.to_str().unwrap();
    let by_path = dump_json(&[img, "--path", "/dir/numbers.txt"]);
    let nid = by_path["inode"]["nid"].as_u64().unwrap();
    let by_nid = dump_json(&[img, "--nid", &nid.to_string()]);
    let (a, b) = (&by_path["inode"], &by_nid["inode"]);
    for key in [
        "nid", "size", "layout", "mode", "uid", "gid", "nlink", "extents", "xattrs",
    ] {
        assert_eq!(a[key], b[key], "{key}");
    }
    assert_eq!(a["size"], 13893, "seq 1 3000 is 13893 bytes");
    assert_eq!(a["file_type"], "file");
    let extents = a["extents"].as_array().unwrap();
    let total: u64 = extents.iter().map(|e| e["length"].as_u64().unwrap()).sum();
    assert_eq!(total, 13893, "extents cover the file");
}

#[test]
fn ls_lists_dot_dotdot_and_children_in_on_disk_order() {
    let img = images_dir().join("compact.erofs");
    let v = dump_json(&[img.to_str().unwrap(), "--path", "/names", "--ls"]);
    let names: Vec<&str> = v["ls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    // Bytewise order: " space" (0x20), "#hash" (0x23), "-dash" (0x2d) sort before ".".
    assert_eq!(&names[..5], [" space", "#hash", "-dash", ".", ".."]);
    assert!(
        names.contains(&"bad-\\xff\\xfe-utf8"),
        "non-UTF-8 bytes escaped: {names:?}"
    );
    let text = String::from_utf8(dump_ok(&[
        img.to_str().unwrap(),
        "--path",
        "/names",
        "--ls",
    ]))
    .unwrap();
    assert!(text.contains("-dash"));
}

#[test]
fn cat_writes_the_exact_bytes_of_a_file() {
    let img = images_dir().join("chunk-blockmap.erofs");
    let out = dump_ok(&[img.to_str().unwrap(), "--path", "/dir/numbers.txt", "--cat"]);
    let expected: String = (1..=3000).map(|i| format!("{i}\n")).collect();
    assert_eq!(out, expected.as_bytes());
    let sparse = dump_ok(&[img.to_str().unwrap(), "--path", "/sparse-mixed", "--cat"]);
    assert_eq!(sparse.len(), 16388);
    assert!(sparse[..5000].iter().all(|&b| b == b'x'));
    assert!(sparse[5000..16384].iter().all(|&b| b == 0));
    assert_eq!(&sparse[16384..], b"tail");
}

#[test]
fn xattrs_view_marks_shared_entries() {
    let img = images_dir().join("compact.erofs");
    let v = dump_json(&[img.to_str().unwrap(), "--path", "/xattrs/f9", "--xattrs"]);
    let x: BTreeMap<String, (String, bool)> = v["xattrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["name"].as_str().unwrap().to_owned(),
                (
                    x["value"].as_str().unwrap().to_owned(),
                    x["shared"].as_bool().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(x["user.shared-a"], ("common-value-a".to_owned(), true));
    assert_eq!(x["user.unique-9"], ("value-9".to_owned(), false));
}

#[test]
fn a_missing_path_is_an_error_with_the_path_named() {
    let img = images_dir().join("compact.erofs");
    let out = dump(&[img.to_str().unwrap(), "--path", "/no/such"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such"));
    let out = dump(&["/nonexistent.erofs"]);
    assert!(!out.status.success());
}

#[test]
fn compressed_file_shows_its_extents_and_cats_decoded() {
    let img = images_dir().join("lz4.erofs");
    let v = dump_json(&[img.to_str().unwrap(), "--path", "/dir/numbers.txt"]);
    assert_eq!(v["inode"]["compression"], "lz4");
    let ext = v["inode"]["compressed_extents"].as_array().unwrap();
    assert!(!ext.is_empty());
    assert_eq!(ext[0]["logical"], 0);
    assert_eq!(ext[0]["lcluster_type"], "HEAD1");
    assert_eq!(ext[0]["storage"]["type"], "compressed");
    assert_eq!(ext[0]["storage"]["algorithm"], "lz4");
    let last = ext.last().unwrap();
    let end = last["logical"].as_u64().unwrap() + last["length"].as_u64().unwrap();
    assert_eq!(end, 13893, "extents cover the file");
    let out = dump(&[img.to_str().unwrap(), "--path", "/dir/numbers.txt", "--cat"]);
    assert!(out.status.success());
    let want: String = (1..=3000).map(|i| format!("{i}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want, "`seq 1 3000`");
    let text = String::from_utf8_lossy(
        &dump(&[img.to_str().unwrap(), "--path", "/dir/numbers.txt"]).stdout,
    )
    .into_owned();
    assert!(text.contains("| HEAD1    | lz4"), "{text}");
}

/// `Key: value` pairs of a `dump.erofs --path` listing (pairs are separated by two or
/// more spaces; the file type is the last chunk of the "Size" line).
fn inode_facts(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines().take(6) {
        for chunk in line.split("  ").map(str::trim).filter(|c| !c.is_empty()) {
            match chunk.split_once(": ") {
                Some((k, v)) => {
                    // Ours adds the layout name: "2 (flat_inline)".
                    let v = v.split(" (").next().unwrap_or(v);
                    out.insert(k.trim().to_owned(), v.trim().to_owned());
                }
                None => {
                    out.insert("type".to_owned(), chunk.to_owned());
                }
            }
        }
    }
    out
}

/// `"1777/rwxrwxrwt"` -> `"0777/rwxrwxrwx"`: the access string without set-id and sticky.
fn low_permissions(access: &str) -> String {
    let (octal, rwx) = access.split_once('/').unwrap();
    let mode = u32::from_str_radix(octal, 8).unwrap() & 0o777;
    let rwx: String = rwx
        .chars()
        .map(|c| match c {
            's' | 't' => 'x',
            'S' | 'T' => '-',
            c => c,
        })
        .collect();
    format!("{mode:04o}/{rwx}")
}

#[test]
fn inode_facts_agree_with_dump_erofs_path() {
    if Command::new("dump.erofs").arg("-V").output().is_err() {
        skip_or_fail("dump.erofs (erofs-utils) is not installed");
        return;
    }
    let paths = [
        "/",
        "/dir/numbers.txt",
        "/file-4095",
        "/file-4096",
        "/xattrs/f2",
        "/special/chr",
        "/special/blk",
        "/special/fifo",
        "/links/long-symlink",
        "/links/a",
        "/empty-dir",
        "/many",
    ];
    for variant in ["compact", "mtime", "noinline", "chunk-indexes"] {
        let img = images_dir().join(format!("{variant}.erofs"));
        let img = img.to_str().unwrap();
        for p in paths {
            let theirs = Command::new("dump.erofs")
                .args(["--path", p, img])
                .env("TZ", "UTC")
                .output()
                .unwrap();
            assert!(theirs.status.success(), "dump.erofs --path {p} {img}");
            let theirs = inode_facts(&String::from_utf8_lossy(&theirs.stdout));
            let ours = inode_facts(&String::from_utf8(dump_ok(&[img, "--path", p])).unwrap());
            for key in [
                "File",
                "Size",
                "type",
                "NID",
                "Links",
                "Layout",
                "Inode size",
                "Xattr size",
                "Uid",
                "Gid",
                "Access",
                "Timestamp",
            ] {
                assert!(
                    theirs.contains_key(key),
                    "dump.erofs printed {key}: {theirs:?}"
                );
                if key == "File" && theirs["type"] != "directory" && theirs["Links"] != "1" {
                    // dump.erofs names a hard-linked file by the first path it finds.
                    continue;
                }
                if key == "Access" {
                    // dump.erofs 1.5 prints only `mode & 0777`; ours keeps the set-id and
                    // sticky bits, which must agree with the source tree (manifest).
                    assert_eq!(
                        low_permissions(&ours[key]),
                        theirs[key],
                        "{variant} {p}: {key}"
                    );
                    continue;
                }
                assert_eq!(ours.get(key), theirs.get(key), "{variant} {p}: {key}");
            }
        }
    }
}

#[test]
fn ls_agrees_with_dump_erofs_ls() {
    if Command::new("dump.erofs").arg("-V").output().is_err() {
        skip_or_fail("dump.erofs (erofs-utils) is not installed");
        return;
    }
    for variant in ["compact", "extended", "chunk-blockmap"] {
        let img = images_dir().join(format!("{variant}.erofs"));
        let img = img.to_str().unwrap();
        for dir in ["/", "/dir", "/special", "/many", "/links"] {
            let theirs = Command::new("dump.erofs")
                .args(["--ls", "--path", dir, img])
                .output()
                .unwrap();
            assert!(theirs.status.success());
            let theirs = String::from_utf8(theirs.stdout).unwrap();
            // dump.erofs prints the inode first, then a blank line and the listing.
            let listing: Vec<&str> = theirs
                .lines()
                .skip_while(|l| !l.trim_start().starts_with("NID TYPE"))
                .skip(1)
                .collect();
            let ours = String::from_utf8(dump_ok(&[img, "--ls", "--path", dir])).unwrap();
            let ours: Vec<&str> = ours.lines().skip(1).collect();
            assert!(listing.len() >= 3, "{variant} {dir}: {theirs}");
            assert_eq!(ours, listing, "{variant} {dir}");
        }
    }
}
