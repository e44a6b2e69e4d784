//! Where the image goes: a regular file is replaced atomically and nothing is left behind
//! when a build is killed; a symlink is followed; a block device is written in place after a
//! size check; a character device, a fifo or `-` receives a stream and is never replaced.
//! Device nodes are made with mknod in a scratch directory, never in the system's /dev.

mod common;

use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{is_root, mkfs_bin, skip_or_fail};

/// A small source tree.
fn small_tree(root: &Path) -> PathBuf {
    let src = root.join("src");
    erofs_testkit::write_file(&src, "a", b"hello\n");
    erofs_testkit::write_file(&src, "dir/b", &[7u8; 5000]);
    src
}

/// mkfs with fixed time and UUID, so that two builds of the same tree are identical.
fn mkfs(src: &Path, image: &Path) -> Output {
    Command::new(mkfs_bin())
        .args(["-q", "-T", "86400", "-U", "clear"])
        .arg(src)
        .arg(image)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The image of `src` written as a regular file.
fn reference(src: &Path, dir: &Path) -> Vec<u8> {
    let p = dir.join("reference.erofs");
    let o = mkfs(src, &p);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::read(p).unwrap()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mknod(path: &Path, kind: &str, major: u32, minor: u32) {
    let st = Command::new("mknod")
        .arg(path)
        .arg(kind)
        .arg(major.to_string())
        .arg(minor.to_string())
        .status()
        .unwrap();
    assert!(st.success(), "mknod {}", path.display());
}

#[test]
fn a_dash_streams_the_image_to_stdout() {
    let tmp = tempfile::tempdir().unwrap();
    let src = small_tree(tmp.path());
    let o = mkfs(&src, Path::new("-"));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(o.stdout, reference(&src, tmp.path()));
    assert!(!tmp.path().join("-").exists(), "no file named -");
}

#[test]
fn a_symlink_is_followed_and_its_target_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let src = small_tree(tmp.path());
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("real.erofs"), b"old").unwrap();
    std::os::unix::fs::symlink("real.erofs", out.join("link.erofs")).unwrap();
    // A dangling link: its target is created.
    std::os::unix::fs::symlink("new.erofs", out.join("dangling.erofs")).unwrap();
    for link in ["link.erofs", "dangling.erofs"] {
        let o = mkfs(&src, &out.join(link));
        assert!(o.status.success(), "{}", text(&o));
        let meta = std::fs::symlink_metadata(out.join(link)).unwrap();
        assert!(meta.file_type().is_symlink(), "{link} is still a symlink");
    }
    let image = reference(&src, tmp.path());
    assert_eq!(std::fs::read(out.join("real.erofs")).unwrap(), image);
    assert_eq!(std::fs::read(out.join("new.erofs")).unwrap(), image);
    assert_eq!(
        names_in(&out),
        ["dangling.erofs", "link.erofs", "new.erofs", "real.erofs"]
    );
}

#[test]
fn a_fifo_receives_the_stream_and_stays_a_fifo() {
    let tmp = tempfile::tempdir().unwrap();
    let src = small_tree(tmp.path());
    let fifo = tmp.path().join("fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            std::fs::File::open(fifo)
                .unwrap()
                .read_to_end(&mut v)
                .unwrap();
            v
        })
    };
    let o = mkfs(&src, &fifo);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(reader.join().unwrap(), reference(&src, tmp.path()));
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
}

#[test]
fn character_devices_receive_a_stream_and_are_never_replaced() {
    if !is_root() {
        skip_or_fail("mknod of character devices needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = small_tree(tmp.path());
    let null = tmp.path().join("null");
    let full = tmp.path().join("full");
    mknod(&null, "c", 1, 3);
    mknod(&full, "c", 1, 7);
    let o = mkfs(&src, &null);
    assert!(o.status.success(), "{}", text(&o));
    // The full device answers ENOSPC: the build fails and names the problem.
    let o = mkfs(&src, &full);
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("No space left on device"),
        "{}",
        text(&o)
    );
    for node in [&null, &full] {
        let ft = std::fs::symlink_metadata(node).unwrap().file_type();
        assert!(ft.is_char_device(), "{} is still a device", node.display());
    }
    assert_eq!(names_in(tmp.path()), ["full", "null", "src"]);
}

/// Attaches `backing` to a loop device; returns the device path (detached on drop).
struct Loop(String);

impl Loop {
    fn attach(backing: &Path) -> Option<Self> {
        let o = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(backing)
            .output()
            .ok()?;
        o.status
            .success()
            .then(|| Self(String::from_utf8_lossy(&o.stdout).trim().to_string()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn a_block_device_is_checked_for_size_then_written_in_place() {
    if !is_root() || !common::have("losetup") {
        skip_or_fail("block device test needs root and losetup");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = small_tree(tmp.path());
    let image = reference(&src, tmp.path());
    for (size, fits) in [(4096u64, false), (1 << 20, true)] {
        let backing = tmp.path().join(format!("backing-{size}"));
        std::fs::write(&backing, vec![0xa5u8; size as usize]).unwrap();
        let Some(dev) = Loop::attach(&backing) else {
            skip_or_fail("losetup could not attach a loop device");
            return;
        };
        let rdev = std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata(&dev.0).unwrap());
        let node = tmp.path().join(format!("blk-{size}"));
        mknod(
            &node,
            "b",
            ((rdev >> 8) & 0xfff) as u32,
            ((rdev & 0xff) | ((rdev >> 12) & 0xfff00)) as u32,
        );
        let o = mkfs(&src, &node);
        let ft = std::fs::symlink_metadata(&node).unwrap().file_type();
        assert!(ft.is_block_device(), "the node stays a block device");
        drop(dev);
        let written = std::fs::read(&backing).unwrap();
        if fits {
            assert!(o.status.success(), "{}", text(&o));
            assert_eq!(&written[..image.len()], &image[..]);
        } else {
            assert_eq!(o.status.code(), Some(8), "{}", text(&o));
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains(&format!(
                    "the image needs {} bytes, the device holds {size}",
                    image.len()
                )),
                "{err}"
            );
            assert!(written.iter().all(|&b| b == 0xa5), "nothing was written");
        }
    }
}

#[test]
fn a_missing_output_directory_is_named_without_a_temporary_name() {
    let tmp = tempfile::tempdir().unwrap();
    let src = small_tree(tmp.path());
    let o = mkfs(&src, &tmp.path().join("missing/x.erofs"));
    assert_eq!(o.status.code(), Some(8), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot write the image") && err.contains("missing/x.erofs"),
        "{err}"
    );
    assert!(!err.contains(".mkfs-erofs-rs"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

/// A source large enough that a build is still writing when the test kills it.
fn big_tree(root: &Path) -> PathBuf {
    let src = root.join("big");
    std::fs::create_dir_all(&src).unwrap();
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + i / 4093) as u8).collect();
    let mut f = std::fs::File::create(src.join("large")).unwrap();
    for _ in 0..192 {
        std::io::Write::write_all(&mut f, &chunk).unwrap();
    }
    src
}

/// Starts mkfs into `out/image.erofs`, waits until it has written part of the image, sends
/// `signal` and waits for it to end.
fn kill_during_build(src: &Path, out: &Path, signal: &str, env: &[(&str, &str)]) {
    let mut child = Command::new(mkfs_bin())
        .args(["-q", "--fingerprint=sha256"])
        .envs(env.iter().copied())
        .arg(src)
        .arg(out.join("image.erofs"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let fds = PathBuf::from(format!("/proc/{}/fd", child.id()));
    let deadline = Instant::now() + Duration::from_secs(60);
    let writing = loop {
        assert!(Instant::now() < deadline, "mkfs never started writing");
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        let started = std::fs::read_dir(&fds).into_iter().flatten().any(|e| {
            let e = e.unwrap();
            // A file inside `out` (not `out` itself, which mkfs holds open too) that has
            // data: the image being written.
            std::fs::read_link(e.path()).is_ok_and(|t| t != out && t.starts_with(out))
                && std::fs::metadata(e.path()).is_ok_and(|m| m.is_file() && m.len() > 0)
        });
        if started {
            break true;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(writing, "mkfs finished before it could be killed");
    let st = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let status = child.wait().unwrap();
    assert!(!status.success(), "{signal} ended the build");
}

#[test]
fn a_killed_build_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let src = big_tree(tmp.path());
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    for signal in ["-TERM", "-KILL"] {
        kill_during_build(&src, &out, signal, &[]);
        assert!(
            names_in(&out).is_empty(),
            "after {signal}: {:?}",
            names_in(&out)
        );
    }
    // Where O_TMPFILE is unavailable, a visible temporary name is used: the catchable
    // signals remove it.
    for signal in ["-TERM", "-INT", "-HUP"] {
        kill_during_build(&src, &out, signal, &[("MKFS_EROFS_RS_NO_TMPFILE", "1")]);
        assert!(
            names_in(&out).is_empty(),
            "after {signal}: {:?}",
            names_in(&out)
        );
    }
}

#[test]
fn a_killed_build_leaves_an_existing_image_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let src = big_tree(tmp.path());
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("image.erofs"), b"previous image").unwrap();
    kill_during_build(&src, &out, "-KILL", &[]);
    assert_eq!(names_in(&out), ["image.erofs"]);
    assert_eq!(
        std::fs::read(out.join("image.erofs")).unwrap(),
        b"previous image"
    );
}
