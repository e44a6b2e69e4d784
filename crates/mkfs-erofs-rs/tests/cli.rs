//! The command line: erofs-utils' drop-in name and real callers' command lines, exit
//! statuses, messages for common mistakes, SOURCE_DATE_EPOCH, --hard-dereference, --json,
//! and a closed pipe.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::mkfs_bin;
use erofs_reader::Image;

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tree(root: &Path) -> PathBuf {
    let src = root.join("src");
    erofs_testkit::write_file(&src, "a", b"hello\n");
    erofs_testkit::write_file(&src, "dir/b", &[7u8; 5000]);
    src
}

/// The binary under erofs-utils' name, as `cargo xtask dist --drop-in` installs it.
fn drop_in(dir: &Path) -> PathBuf {
    let p = dir.join("mkfs.erofs");
    std::os::unix::fs::symlink(mkfs_bin(), &p).unwrap();
    p
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn mtime_of(img: &Path, path: &[u8]) -> i64 {
    let img = Image::open(img).unwrap();
    img.lookup(path).unwrap().mtime
}

fn set_mtime(path: &Path, secs: i64) {
    let st = Command::new("touch")
        .arg("-h")
        .arg("-d")
        .arg(format!("@{secs}"))
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn containerd_s_feature_check_finds_tar_in_the_help() {
    // containerd's EROFS snapshotter runs `mkfs.erofs --help` and looks for `--tar=`.
    let tmp = tempfile::tempdir().unwrap();
    let o = run(Command::new(drop_in(tmp.path())).arg("--help"));
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(help.contains("--tar="), "{help}");
    assert!(
        help.contains("Usage: mkfs.erofs [OPTIONS] <IMAGE> [SOURCE]"),
        "{help}"
    );
    assert!(help.contains("16  usage error"), "{help}");
}

#[test]
fn the_reproducible_form_t0_mkfs_time_takes_image_before_source() {
    // `mkfs.erofs -T0 --mkfs-time IMAGE SOURCE`: the build time is 0, files keep theirs.
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    set_mtime(&src.join("a"), 1_000_000);
    let img = tmp.path().join("out.erofs");
    let o = run(Command::new(drop_in(tmp.path()))
        .args(["-T0", "--mkfs-time"])
        .arg(&img)
        .arg(&src));
    assert!(o.status.success(), "{}", text(&o));
    let image = Image::open(&img).unwrap();
    assert_eq!(image.superblock().epoch.get(), 0);
    assert_eq!(mtime_of(&img, b"/a"), 1_000_000);
}

#[test]
fn erofs_utils_spellings_work_under_the_drop_in_name() {
    // The options osbuild, systemd-repart and containerd's differ pass (without --tar).
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let img = tmp.path().join("layer.erofs");
    let o = run(Command::new(drop_in(tmp.path()))
        .args([
            "--workers=2",
            "-d2",
            "--sort=none",
            "--quiet",
            "-Enoinline_data",
            "-U",
            "01234567-89ab-cdef-0123-456789abcdef",
            "-T",
            "0",
            "--all-time",
        ])
        .arg(&img)
        .arg(&src));
    assert!(o.status.success(), "{}", text(&o));
    assert!(o.stderr.is_empty(), "--quiet: {}", text(&o));
    let image = Image::open(&img).unwrap();
    assert_eq!(
        image.superblock().uuid,
        [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef
        ]
    );
    assert_eq!(mtime_of(&img, b"/a"), 0);
}

#[test]
fn containerd_s_differ_line_builds_the_layer_from_standard_input() {
    // containerd's differ: `mkfs.erofs --tar=f --aufs --quiet -Enoinline_data -U <uuid>
    // layer.erofs`, the layer on standard input and no SOURCE.
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("layer.erofs");
    let mut t = erofs_testkit::tar::Tar::default();
    t.dir("etc")
        .file("etc/os-release", b"ID=layer\n")
        .file("etc/.wh.motd", b"");
    let layer = t.finish();
    let mut child = Command::new(drop_in(tmp.path()))
        .args(["--tar=f", "--aufs", "--quiet", "-Enoinline_data", "-U"])
        .arg("01234567-89ab-cdef-0123-456789abcdef")
        .arg(&img)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &layer).unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        o.stdout.is_empty() && o.stderr.is_empty(),
        "--quiet: {}",
        text(&o)
    );
    let image = Image::open(&img).unwrap();
    let f = image.lookup(b"/etc/os-release").unwrap();
    assert_eq!(image.read_to_vec(&f, 1 << 20).unwrap(), b"ID=layer\n");
    // The whiteout became the 0/0 character device overlayfs reads as "deleted".
    let w = image.lookup(b"/etc/motd").unwrap();
    assert_eq!(w.rdev(), Some((0, 0)));
    assert_eq!(
        image.superblock().uuid,
        [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef
        ]
    );
}

#[test]
fn containerd_s_tar_index_layer_is_the_index_with_the_tar_appended() {
    // containerd's tar-index mode: `mkfs.erofs --tar=i --aufs --quiet layer.erofs` with the
    // layer on standard input, then the same tar appended to layer.erofs; mounted as one
    // file, without device=.
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("layer.erofs");
    let mut t = erofs_testkit::tar::Tar::default();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    t.dir("etc")
        .file("etc/os-release", b"ID=layer\n")
        .file("etc/big", &big)
        .file("etc/.wh.motd", b"");
    let layer = t.finish();
    let mut child = Command::new(drop_in(tmp.path()))
        .args(["--tar=i", "--aufs", "--quiet"])
        .arg(&img)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), &layer).unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let mut f = std::fs::OpenOptions::new().append(true).open(&img).unwrap();
    std::io::Write::write_all(&mut f, &layer).unwrap();
    drop(f);
    let image = Image::open(&img).unwrap();
    for (path, want) in [
        (&b"/etc/os-release"[..], &b"ID=layer\n"[..]),
        (b"/etc/big", &big),
    ] {
        let ino = image.lookup(path).unwrap();
        assert_eq!(image.read_to_vec(&ino, 1 << 20).unwrap(), want);
    }
    assert_eq!(image.lookup(b"/etc/motd").unwrap().rdev(), Some((0, 0)));
    if let Some(m) = common::Mount::new(&img) {
        assert_eq!(std::fs::read(m.path().join("etc/big")).unwrap(), big);
        assert_eq!(
            std::fs::read(m.path().join("etc/os-release")).unwrap(),
            b"ID=layer\n"
        );
    }
}

#[test]
fn stdin_without_tar_is_refused_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("x.erofs");
    let o = run(Command::new(drop_in(tmp.path()))
        .arg(&img)
        .stdin(Stdio::null()));
    assert_eq!(o.status.code(), Some(16), "{}", text(&o));
    assert!(stderr(&o).contains("add --tar=f"), "{}", text(&o));
    assert!(!img.exists());
}

#[test]
fn unimplemented_extended_options_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let img = tmp.path().join("x.erofs");
    let o = run(Command::new(drop_in(tmp.path()))
        .args(["-E", "nosbcrc"])
        .arg(&img)
        .arg(&src));
    assert_eq!(o.status.code(), Some(16), "{}", text(&o));
    assert!(
        stderr(&o).contains("-E nosbcrc: mkfs.erofs's extended option nosbcrc is not implemented"),
        "{}",
        text(&o)
    );
}

#[test]
fn dracuts_fragments_with_compression_build_under_the_drop_in_name() {
    // dracut passes `-E fragments` with compression.
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let img = tmp.path().join("x.erofs");
    let o = run(Command::new(drop_in(tmp.path()))
        .args(["-zlz4hc", "-E", "fragments"])
        .arg(&img)
        .arg(&src));
    assert!(o.status.success(), "{}", text(&o));
    let image = erofs_reader::Image::open(&img).unwrap();
    assert!(
        image
            .superblock()
            .incompat()
            .contains(erofs_format::Incompat::FRAGMENTS)
    );
}

#[test]
fn our_own_name_keeps_source_before_image_and_says_so_when_swapped() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let o = run(Command::new(mkfs_bin()).arg("out.erofs").arg(&src));
    assert_eq!(o.status.code(), Some(16), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("SOURCE out.erofs does not exist")
            && err.contains("did you swap SOURCE and IMAGE?"),
        "{err}"
    );
    assert!(!Path::new("out.erofs").exists());
}

#[test]
fn usage_errors_exit_16() {
    let o = run(Command::new(mkfs_bin()).arg("--no-such-option"));
    assert_eq!(o.status.code(), Some(16), "{}", text(&o));
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let o = run(Command::new(mkfs_bin())
        .args(["-b", "3000"])
        .arg(&src)
        .arg(tmp.path().join("x")));
    assert_eq!(o.status.code(), Some(16), "{}", text(&o));
    assert!(stderr(&o).contains("block size must be 512, 1024, 2048 or 4096"));
}

#[test]
fn thread_help_says_one_default() {
    let o = run(Command::new(mkfs_bin()).arg("--help"));
    let help = String::from_utf8_lossy(&o.stdout);
    let line = help
        .lines()
        .find(|l| l.contains("--threads"))
        .expect("a -j line")
        .to_string();
    assert!(line.contains("--workers"), "{line}");
    let rest: String = help
        .lines()
        .skip_while(|l| !l.contains("--threads"))
        .take(2)
        .collect();
    assert!(rest.contains("[default: one per CPU]"), "{rest}");
    assert!(!rest.contains("[default: 0]"), "{rest}");
}

#[test]
fn source_date_epoch_clamps_newer_mtimes_and_keeps_older_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    set_mtime(&src.join("a"), 1_000);
    set_mtime(&src.join("dir/b"), 5_000_000);
    let img = tmp.path().join("x.erofs");
    let o = run(Command::new(mkfs_bin())
        .env("SOURCE_DATE_EPOCH", "2000000")
        .arg("-q")
        .arg(&src)
        .arg(&img));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(mtime_of(&img, b"/a"), 1_000, "older: kept");
    assert_eq!(
        mtime_of(&img, b"/dir/b"),
        2_000_000,
        "newer: lowered to the epoch"
    );
    assert_eq!(
        Image::open(&img).unwrap().superblock().epoch.get(),
        2_000_000
    );
    // -T still sets every time, over SOURCE_DATE_EPOCH.
    let o = run(Command::new(mkfs_bin())
        .env("SOURCE_DATE_EPOCH", "2000000")
        .args(["-q", "-T", "3000000"])
        .arg(&src)
        .arg(&img));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(mtime_of(&img, b"/a"), 3_000_000);
    assert_eq!(mtime_of(&img, b"/dir/b"), 3_000_000);
}

#[test]
fn hard_dereference_stores_hard_links_as_separate_inodes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    std::fs::hard_link(src.join("a"), src.join("a2")).unwrap();
    let linked = tmp.path().join("linked.erofs");
    let separate = tmp.path().join("separate.erofs");
    common::mkfs(&src, &linked, &["-T", "0"]);
    common::mkfs(&src, &separate, &["-T", "0", "--hard-dereference"]);
    let img = Image::open(&linked).unwrap();
    assert_eq!(
        img.lookup(b"/a").unwrap().nid,
        img.lookup(b"/a2").unwrap().nid
    );
    assert_eq!(img.lookup(b"/a").unwrap().nlink, 2);
    let img = Image::open(&separate).unwrap();
    let (a, a2) = (img.lookup(b"/a").unwrap(), img.lookup(b"/a2").unwrap());
    assert_ne!(a.nid, a2.nid);
    assert_eq!((a.nlink, a2.nlink), (1, 1));
    assert_eq!(img.read_to_vec(&a2, 1 << 20).unwrap(), b"hello\n");
    // The image no longer depends on whether the host linked the files.
    std::fs::remove_file(src.join("a2")).unwrap();
    std::fs::write(src.join("a2"), b"hello\n").unwrap();
    set_mtime(&src.join("a2"), 0);
    set_mtime(&src.join("a"), 0);
    let copied = tmp.path().join("copied.erofs");
    common::mkfs(
        &src,
        &copied,
        &["-T", "0", "--hard-dereference", "-U", "clear"],
    );
    common::mkfs(
        &src,
        &separate,
        &["-T", "0", "--hard-dereference", "-U", "clear"],
    );
    assert_eq!(
        std::fs::read(&copied).unwrap(),
        std::fs::read(&separate).unwrap()
    );
}

#[test]
fn json_prints_one_build_report() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tree(tmp.path());
    let img = tmp.path().join("x.erofs");
    let o = run(Command::new(mkfs_bin())
        .args(["--json", "--fingerprint=sha256", "-T", "0", "-U", "clear"])
        .arg(&src)
        .arg(&img));
    assert!(o.status.success(), "{}", text(&o));
    assert!(o.stderr.is_empty(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let bytes = std::fs::metadata(&img).unwrap().len();
    assert_eq!(v["bytes"], bytes);
    assert_eq!(v["blocks"], bytes / 4096);
    assert_eq!(v["block_size"], 4096);
    assert_eq!(v["inodes"], 4);
    assert_eq!(v["files_fingerprinted"], 2);
    assert_eq!(v["data_bytes"], 5006);
    assert_eq!(v["uuid"], "00000000-0000-0000-0000-000000000000");
    assert!(v["compression_ratio"].is_null());
    assert_eq!(
        v["options"]["fingerprint_xattr"],
        "trusted.erofs.fingerprint"
    );
    assert!(v["seconds"].as_f64().unwrap() >= 0.0);
}

#[test]
fn a_closed_pipe_ends_mkfs_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    erofs_testkit::write_file(&src, "big", &vec![1u8; 4 << 20]);
    let mut child = Command::new(mkfs_bin())
        .arg("-q")
        .arg(&src)
        .arg("-")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(o.stderr.is_empty(), "{}", text(&o));
}
