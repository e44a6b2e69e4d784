//! Extraction and statistics stop with their `Cancelled` error once their caller cancels,
//! and a cancelled extraction leaves no file cut short under its final name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use erofs_builder::{CompressOptions, Options, UuidChoice, build_dir_to_path};
use erofs_reader::extract::{ExtractError, ExtractOptions, extract};
use erofs_reader::stats::stats;
use erofs_reader::{Error, Image, NoProgress, Progress};
use erofs_testkit::{EPOCH, write_file};

/// Says "stop" from its `at`-th question on, and counts the questions.
struct CancelAt {
    asked: AtomicU64,
    at: u64,
}

impl CancelAt {
    fn new(at: u64) -> Self {
        Self {
            asked: AtomicU64::new(0),
            at,
        }
    }
}

impl Progress for CancelAt {
    fn is_cancelled(&self) -> bool {
        self.asked.fetch_add(1, Ordering::Relaxed) + 1 >= self.at
    }
}

/// Ten small files, `m.bin` (3.5 MiB, compressed in several pieces) and ten more files,
/// in this walk order.
fn content(name: &str) -> Vec<u8> {
    match name {
        "m.bin" => (0..7u32 << 19).map(|i| (i / 3 + i / 4099) as u8).collect(),
        _ => name.repeat(100).into_bytes(),
    }
}

fn names() -> Vec<String> {
    let mut n: Vec<String> = (0..10).map(|i| format!("a{i}")).collect();
    n.push("m.bin".into());
    n.extend((0..10).map(|i| format!("z{i}")));
    n
}

fn image(dir: &Path) -> Image<'static> {
    for n in names() {
        write_file(&dir.join("src"), &n, &content(&n));
    }
    let mut opts = Options::default();
    opts.timestamp = Some(EPOCH);
    opts.uuid = UuidChoice::Clear;
    opts.compression = Some(CompressOptions::parse("lz4").unwrap());
    let path = dir.join("img.erofs");
    build_dir_to_path(&dir.join("src"), &path, &opts, &NoProgress).unwrap();
    let img = Image::open(&path).unwrap();
    assert!(img.lookup(b"/m.bin").unwrap().is_compressed());
    img
}

/// The files under `dest`, each checked to hold its whole content.
fn whole_files(dest: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for e in std::fs::read_dir(dest).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let data = std::fs::read(e.path()).unwrap();
        assert!(data == content(&name), "{name} is not whole after a cancel");
        found.insert(name);
    }
    found
}

#[test]
fn a_cancelled_extraction_stops_and_leaves_only_whole_files() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path());
    let all: BTreeSet<String> = names().into_iter().collect();
    let counting = CancelAt::new(u64::MAX);
    let dest = tmp.path().join("all");
    extract(
        &img,
        img.root_nid(),
        &dest,
        ExtractOptions::default(),
        &counting,
    )
    .unwrap();
    assert_eq!(whole_files(&dest), all);
    let questions = counting.asked.load(Ordering::Relaxed);

    // Cancel at each question in turn: the extraction stops, and what it leaves is the
    // files before the stop, whole.
    let mut stops_inside_m = 0;
    for at in 1..=questions {
        let dest: PathBuf = tmp.path().join(format!("at{at}"));
        let err = extract(
            &img,
            img.root_nid(),
            &dest,
            ExtractOptions::default(),
            &CancelAt::new(at),
        )
        .unwrap_err();
        assert!(matches!(err, ExtractError::Cancelled(_)), "at {at}: {err}");
        let left = if dest.exists() {
            whole_files(&dest)
        } else {
            BTreeSet::new()
        };
        let expected: BTreeSet<String> = names().into_iter().take(left.len()).collect();
        assert_eq!(left, expected, "at {at}: not the files before the stop");
        assert!(left.len() < all.len(), "at {at}: nothing stopped");
        if left.len() == 10 {
            stops_inside_m += 1;
        }
    }
    // Once before m.bin and at least once while writing it (the removed file).
    assert!(stops_inside_m >= 2, "{stops_inside_m}");
}

#[test]
fn cancelled_statistics_return_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path());
    assert_eq!(stats(&img, &NoProgress).unwrap().files, 22);
    let err = stats(&img, &CancelAt::new(5)).unwrap_err();
    assert!(matches!(err, Error::Cancelled(_)), "{err}");
}
