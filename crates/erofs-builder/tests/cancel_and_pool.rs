//! A caller can stop a build (the image path is then left as it was) and choose the pool it
//! runs on (the image does not depend on it).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;

use erofs_builder::{
    BuildError, CancelToken, Cancellable, NoProgress, Options, Phase, Progress, UuidChoice,
};

/// A temporary directory with a source tree in `src`: 200 small files and a 5 MiB one.
fn source() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    (tmp, src)
}

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("d")).unwrap();
    for i in 0..200u32 {
        let body: Vec<u8> = (0..i * 37).map(|b| (b ^ i) as u8).collect();
        std::fs::write(root.join(format!("d/f{i}")), body).unwrap();
    }
    std::fs::write(root.join("big"), vec![7u8; 5 << 20]).unwrap();
}

fn options() -> Options {
    let mut o = Options::default();
    o.timestamp = Some(1_700_000_000);
    o.uuid = UuidChoice::Clear;
    o
}

/// Cancels its token when the data stage starts, as a UI's "stop" button would.
struct CancelAtData(CancelToken);

impl Progress for CancelAtData {
    fn phase(&self, phase: Phase) {
        if phase == Phase::Data {
            self.0.cancel();
        }
    }
    fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
}

#[test]
fn a_build_cancelled_from_its_progress_callback_writes_no_image() {
    let (tmp, src) = source();
    let image = tmp.path().join("out.erofs");
    let progress = CancelAtData(CancelToken::new());
    let err = erofs_builder::build_dir_to_path(&src, &image, &options(), &progress).unwrap_err();
    assert!(matches!(err, BuildError::Cancelled(_)), "{err}");
    assert!(!image.exists(), "a cancelled build linked its image");
    // The temporary file was never named: the directory holds only the source.
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
}

/// Waits in the scan for another thread to cancel, so that the cancellation lands while
/// the build runs, whatever the scheduling.
struct WaitForCancel {
    ask: Mutex<Option<mpsc::Sender<()>>>,
    done: Mutex<mpsc::Receiver<()>>,
}

impl Progress for WaitForCancel {
    fn phase(&self, phase: Phase) {
        if phase == Phase::Scan
            && let Some(ask) = self.ask.lock().unwrap().take()
        {
            ask.send(()).unwrap();
            self.done.lock().unwrap().recv().unwrap();
        }
    }
}

#[test]
fn a_build_cancelled_from_another_thread_leaves_the_old_image() {
    let (tmp, src) = source();
    let image = tmp.path().join("out.erofs");
    std::fs::write(&image, b"the previous image").unwrap();
    let token = CancelToken::new();
    let (ask_tx, ask_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let canceller = {
        let token = token.clone();
        std::thread::spawn(move || {
            ask_rx.recv().unwrap();
            token.cancel();
            done_tx.send(()).unwrap();
        })
    };
    let inner = WaitForCancel {
        ask: Mutex::new(Some(ask_tx)),
        done: Mutex::new(done_rx),
    };
    let progress = Cancellable::new(&inner, token);
    let err = erofs_builder::build_dir_to_path(&src, &image, &options(), &progress).unwrap_err();
    canceller.join().unwrap();
    assert!(matches!(err, BuildError::Cancelled(_)), "{err}");
    assert_eq!(std::fs::read(&image).unwrap(), b"the previous image");
}

#[test]
fn a_cancelled_stream_build_stops_with_cancelled() {
    let (_tmp, src) = source();
    let progress = CancelAtData(CancelToken::new());
    let mut out = Vec::new();
    let err =
        erofs_builder::build_dir_to_writer(&src, &mut out, &options(), &progress).unwrap_err();
    assert!(matches!(err, BuildError::Cancelled(_)), "{err}");
}

/// Records the name of the thread each phase ran on.
#[derive(Default)]
struct ThreadNames(Mutex<Vec<String>>);

impl Progress for ThreadNames {
    fn phase(&self, _phase: Phase) {
        let name = std::thread::current().name().unwrap_or("").to_string();
        self.0.lock().unwrap().push(name);
    }
}

#[test]
fn a_callers_pool_runs_the_build_and_does_not_change_the_image() {
    let (_tmp, src) = source();
    let mut alone = Vec::new();
    let mut one_thread = options();
    one_thread.threads = 1;
    erofs_builder::build_dir_to_writer(&src, &mut alone, &one_thread, &NoProgress).unwrap();

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .stack_size(16 << 20)
        .thread_name(|i| format!("caller-{i}"))
        .build()
        .unwrap();
    let mut on_pool = options();
    on_pool.pool = Some(pool.into());
    let names = ThreadNames::default();
    let mut pooled = Vec::new();
    erofs_builder::build_dir_to_writer(&src, &mut pooled, &on_pool, &names).unwrap();
    assert!(alone == pooled, "the caller's pool changed the image");
    let names = names.0.into_inner().unwrap();
    assert!(!names.is_empty());
    assert!(
        names.iter().all(|n| n.starts_with("caller-")),
        "phases ran outside the caller's pool: {names:?}"
    );
}
