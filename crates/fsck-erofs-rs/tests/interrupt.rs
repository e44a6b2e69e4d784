//! Ctrl-C during `fsck.erofs-rs --extract` cancels the extraction: the tool says so, exits
//! with fsck(8)'s 32 ("canceled by user request") and leaves only whole files.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use erofs_testkit::{build_image, write_file};

const FILES: usize = 6000;

fn content(i: usize) -> Vec<u8> {
    format!("file {i}\n").repeat(1 + i % 50).into_bytes()
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}

#[test]
fn ctrl_c_stops_an_extraction_with_status_32_and_whole_files() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    for i in 0..FILES {
        write_file(&src, &format!("d/f{i:05}"), &content(i));
    }
    let image = tmp.path().join("img.erofs");
    build_image(&src, &image, false);
    let dest = tmp.path().join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_fsck-erofs-rs"))
        .arg(format!("--extract={}", dest.display()))
        .arg(&image)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the extraction has started writing files.
    let deadline = Instant::now() + Duration::from_secs(60);
    while entries(&dest.join("d")) == 0 {
        assert!(Instant::now() < deadline, "the extraction never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(32), "{err}");
    assert!(
        err.contains("fsck.erofs-rs: interrupted (extraction into")
            && err.contains("extraction cancelled"),
        "{err}"
    );
    let left = entries(&dest.join("d"));
    assert!(
        left < FILES,
        "all {FILES} files were extracted: the signal was too late"
    );
    for e in std::fs::read_dir(dest.join("d")).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let i: usize = name[1..].parse().unwrap();
        assert!(
            std::fs::read(e.path()).unwrap() == content(i),
            "{name} is not whole"
        );
    }
}
