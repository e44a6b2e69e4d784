//! Each mistake a new user makes, run through the binary: the message names the right thing
//! once, says what to do, and the exit status follows fsck(8) (0 clean, 4 errors left,
//! 8 operational error, 16 usage error). Also the drop-in name `fsck.erofs`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fsck-erofs-rs")
}

fn fsck(args: &[&std::ffi::OsStr]) -> Output {
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

fn image(dir: &Path) -> PathBuf {
    let src = dir.join("src");
    erofs_testkit::write_file(&src, "a", b"hello\n");
    erofs_testkit::write_file(&src, "sub/b", &[3u8; 9000]);
    let img = dir.join("img.erofs");
    erofs_testkit::build_image(&src, &img, true);
    img
}

#[test]
fn a_directory_given_as_image_is_named_once() {
    let tmp = tempfile::tempdir().unwrap();
    let o = fsck(&[tmp.path().as_os_str()]);
    assert_eq!(o.status.code(), Some(8));
    let err = stderr(&o);
    assert!(err.contains("is a directory, not an EROFS image"), "{err}");
    assert_eq!(
        err.matches(&tmp.path().display().to_string()).count(),
        1,
        "{err}"
    );
    assert!(!err.contains("os error"), "{err}");
}

#[test]
fn a_missing_image_is_named_once_and_is_an_operational_error() {
    let o = fsck(&[os("/nonexistent/x.erofs")]);
    assert_eq!(
        o.status.code(),
        Some(8),
        "fsck(8): 8 is an operational error"
    );
    let err = stderr(&o);
    assert_eq!(err.matches("/nonexistent/x.erofs").count(), 1, "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn not_an_erofs_image_exits_8_as_in_dump() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk");
    std::fs::write(&junk, vec![0u8; 8192]).unwrap();
    let o = fsck(&[junk.as_os_str()]);
    // dump.erofs-rs gives the same status for the same mistake (its tests/messages.rs).
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
}

#[test]
fn a_truncated_image_is_called_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path());
    let bytes = std::fs::read(&img).unwrap();
    std::fs::write(&img, &bytes[..bytes.len() - 4096]).unwrap();
    // The metadata comes last: without it the image cannot even be opened.
    let o = fsck(&[img.as_os_str()]);
    assert_eq!(o.status.code(), Some(8), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the image is truncated"),
        "{}",
        stderr(&o)
    );
    assert!(!stdout(&o).contains("clean"), "{}", stdout(&o));
}

#[test]
fn extract_without_equals_gets_a_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path());
    let dest = tmp.path().join("out");
    let o = fsck(&[os("--extract"), dest.as_os_str(), img.as_os_str()]);
    assert_eq!(o.status.code(), Some(16));
    assert!(stderr(&o).contains("use --extract=DIR"), "{}", stderr(&o));
}

#[test]
fn a_non_empty_extraction_directory_is_refused_before_the_check() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path());
    let dest = tmp.path().join("out");
    erofs_testkit::write_file(&dest, "existing", b"x");
    let arg = format!("--extract={}", dest.display());
    let o = fsck(&[os(&arg), img.as_os_str()]);
    assert_eq!(o.status.code(), Some(8));
    let err = stderr(&o);
    assert!(
        err.starts_with("fsck.erofs-rs: error: --extract=")
            && err.contains("the directory is not empty (use --overwrite"),
        "{err}"
    );
    assert!(
        !stdout(&o).contains("clean"),
        "no clean line: {}",
        stdout(&o)
    );
}

#[test]
fn usage_errors_exit_16_and_help_lists_the_exit_statuses() {
    assert_eq!(fsck(&[os("--bogus")]).status.code(), Some(16));
    assert_eq!(fsck(&[]).status.code(), Some(16));
    let o = fsck(&[os("--help")]);
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&o);
    for line in [
        "0   success",
        "4   problems found",
        "8   operational error",
        "16  usage error",
    ] {
        assert!(help.contains(line), "{line}: {help}");
    }
}

#[test]
fn android_s_extract_check_runs_under_the_drop_in_name() {
    // Android's build runs `fsck.erofs --extract=DIR IMAGE` on the images it makes.
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path());
    let name = tmp.path().join("fsck.erofs");
    std::os::unix::fs::symlink(bin(), &name).unwrap();
    let dest = tmp.path().join("extracted");
    let o = Command::new(&name)
        .arg(format!("--extract={}", dest.display()))
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(std::fs::read(dest.join("a")).unwrap(), b"hello\n");
    assert_eq!(std::fs::read(dest.join("sub/b")).unwrap(), vec![3u8; 9000]);
    let help = Command::new(&name).arg("--help").output().unwrap();
    assert!(
        stdout(&help).contains("Usage: fsck.erofs [OPTIONS] <IMAGE>"),
        "{}",
        stdout(&help)
    );
}

#[test]
fn a_closed_pipe_ends_fsck_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path());
    let mut child = Command::new(bin())
        .arg(&img)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "{}", stderr(&o));
}
