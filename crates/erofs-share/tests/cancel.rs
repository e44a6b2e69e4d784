//! A check and a fingerprint verification stop with `Cancelled` once their caller cancels.

use erofs_reader::check::{CheckOptions, check};
use erofs_reader::{CancelToken, Cancelled, Image, NoProgress, Progress};
use erofs_share::verify::verify_fingerprints;
use erofs_testkit::{build_image, write_file};

/// Cancels its token as soon as the operation announces its work.
struct CancelAtStart(CancelToken);

impl Progress for CancelAtStart {
    fn start(&self, _items: Option<u64>, _bytes: Option<u64>) {
        self.0.cancel();
    }
    fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
}

fn image(dir: &std::path::Path) -> Image<'static> {
    for i in 0..50 {
        write_file(dir, &format!("src/d/f{i}"), &vec![i as u8; 3000 + i]);
    }
    let path = dir.join("img.erofs");
    build_image(&dir.join("src"), &path, true);
    Image::open(&path).unwrap()
}

#[test]
fn a_check_cancelled_from_its_progress_returns_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path());
    assert!(
        check(&img, CheckOptions::default(), &NoProgress)
            .unwrap()
            .is_clean()
    );
    let progress = CancelAtStart(CancelToken::new());
    assert_eq!(
        check(&img, CheckOptions::default(), &progress).unwrap_err(),
        Cancelled
    );
}

#[test]
fn a_verification_cancelled_from_another_thread_returns_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let img = image(tmp.path());
    assert_eq!(verify_fingerprints(&img, &NoProgress).unwrap().matched, 50);
    let token = CancelToken::new();
    let other = token.clone();
    std::thread::spawn(move || other.cancel()).join().unwrap();
    let err = verify_fingerprints(&img, &token).unwrap_err();
    assert!(matches!(err, erofs_reader::Error::Cancelled(_)), "{err}");
    let err = verify_fingerprints(&img, &CancelAtStart(CancelToken::new())).unwrap_err();
    assert!(matches!(err, erofs_reader::Error::Cancelled(_)), "{err}");
}
