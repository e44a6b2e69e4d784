//! Each mistake a new user makes, run through the binary: the message names the right thing
//! once and says what to do; the exit status is the one all three tools share (0 success,
//! 4 problems left in the image, 8 operational error, 16 usage error).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_dump-erofs-rs")
}

fn dump(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(bin()).args(args).output().unwrap()
}

fn os(s: &str) -> &std::ffi::OsStr {
    std::ffi::OsStr::new(s)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn image(dir: &Path, files: &[(&str, &[u8])]) -> PathBuf {
    let src = dir.join("src");
    for (name, data) in files {
        erofs_testkit::write_file(&src, name, data);
    }
    let img = dir.join("img.erofs");
    erofs_testkit::build_image(&src, &img, false);
    img
}

#[test]
fn a_directory_given_as_image_is_named_once() {
    let tmp = tempfile::tempdir().unwrap();
    let o = dump(&[tmp.path().as_os_str()]);
    assert_eq!(o.status.code(), Some(8));
    let err = stderr(&o);
    assert!(err.contains("is a directory, not an EROFS image"), "{err}");
    assert!(!err.contains("os error"), "{err}");
}

#[test]
fn not_an_erofs_image_exits_8_as_in_fsck() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk");
    std::fs::write(&junk, vec![0u8; 8192]).unwrap();
    let o = dump(&[junk.as_os_str()]);
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
}

#[test]
fn cat_of_a_directory_names_the_path_given() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), &[("dir/a", b"x")]);
    let o = dump(&[os("--cat"), os("--path"), os("/dir"), img.as_os_str()]);
    assert_eq!(o.status.code(), Some(8));
    let err = stderr(&o);
    assert!(
        err.contains("--cat: /dir is a directory, not a file (--ls lists it)"),
        "{err}"
    );
    assert!(!err.contains("nid"), "no nid the user never gave: {err}");
}

#[test]
fn a_missing_path_is_named_once() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), &[("a", b"x")]);
    let o = dump(&[os("--path"), os("/nope"), img.as_os_str()]);
    assert_eq!(o.status.code(), Some(8));
    let err = stderr(&o);
    assert!(
        err.contains("--path /nope: no such file or directory in"),
        "{err}"
    );
    assert_eq!(err.matches("/nope").count(), 1, "{err}");
}

#[test]
fn ls_names_the_file_types() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), &[("dir/a", b"x"), ("f", b"y")]);
    let src = tmp.path().join("src");
    std::os::unix::fs::symlink("f", src.join("l")).unwrap();
    erofs_testkit::build_image(&src, &img, false);
    let o = dump(&[os("--ls"), img.as_os_str()]);
    assert_eq!(o.status.code(), Some(0));
    let rows: Vec<Vec<String>> = stdout(&o)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    let types: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r[2].as_str(), r[1].as_str()))
        .collect();
    assert_eq!(
        types,
        [
            (".", "dir"),
            ("..", "dir"),
            ("dir", "dir"),
            ("f", "file"),
            ("l", "symlink")
        ]
    );
}

#[test]
fn stats_percentages_are_of_all_regular_files() {
    let tmp = tempfile::tempdir().unwrap();
    // 25 extensions, one file each, plus 5 more .a files: 30 regular files in all.
    let names: Vec<String> = (0..25u8)
        .map(|i| format!("f{i}.{}", (b'a' + i) as char))
        .chain((0..5).map(|i| format!("g{i}.a")))
        .collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), &b"x"[..])).collect();
    let img = image(tmp.path(), &files);
    let o = dump(&[os("-S"), img.as_os_str()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("File type distribution (top 20 extensions, % of all 30 regular files):"),
        "{out}"
    );
    let a = out.lines().find(|l| l.starts_with(".a")).expect(".a row");
    assert!(a.trim_end().ends_with("20.00%"), "6 of 30: {a}");
    let others = out
        .lines()
        .find(|l| l.starts_with("(others)"))
        .expect("others row");
    assert!(
        others.contains("5 ") && others.trim_end().ends_with("16.67%"),
        "{others}"
    );
}

#[test]
fn usage_names_image_the_same_way_as_the_error() {
    let o = dump(&[]);
    assert_eq!(o.status.code(), Some(16));
    let err = stderr(&o);
    assert!(err.contains("<IMAGE>"), "{err}");
    let help = stdout(&dump(&[os("--help")]));
    assert!(
        help.contains("<IMAGE>...") && !help.contains("[IMAGE]"),
        "{help}"
    );
    assert!(help.contains("16  usage error"), "{help}");
}

#[test]
fn a_closed_pipe_ends_dump_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), &[("big", &vec![5u8; 4 << 20])]);
    let mut child = Command::new(bin())
        .args([os("--cat"), os("--path"), os("/big"), img.as_os_str()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}

#[test]
fn the_drop_in_name_reads_erofs_utils_options() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path(), &[("a", b"hello")]);
    let name = tmp.path().join("dump.erofs");
    std::os::unix::fs::symlink(bin(), &name).unwrap();
    let o = Command::new(&name)
        .args([os("--cat"), os("--path=/a"), img.as_os_str()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(o.stdout, b"hello");
}
