//! The walk on a rayon pool: [`Image::walk_parallel`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::error::Result;
use crate::image::Image;
use crate::inode::Inode;
use crate::nidmap::{NidMap, NidSet};
use crate::walk::{WalkEntry, join_path};

/// State shared by the directory jobs.
struct ParWalk<'i, 'a> {
    image: &'i Image<'a>,
    /// Directories claimed so far: each is read at most once, so the work is bounded by the
    /// image even when directories point at each other.
    visited: Mutex<NidSet>,
    /// Sizes of the directories read, bounded by the image size like in [`Image::walk`].
    dir_bytes: AtomicU64,
    /// Set on the first error or directory reached twice; every job then stops.
    failed: AtomicBool,
    /// The children of each directory read, in on-disk order, by the directory's nid.
    children: Mutex<NidMap<Vec<WalkEntry>>>,
}

impl ParWalk<'_, '_> {
    fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Claims directory `nid`; false when it was claimed before.
    fn claim(&self, nid: u64) -> bool {
        self.visited
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(nid)
    }

    /// Reads directory `dir` (reached by `path`) and spawns one job per subdirectory. Makes
    /// the serial walk's checks, but only records that one failed: the serial walk then
    /// reports it.
    fn visit<'s>(&'s self, scope: &rayon::Scope<'s>, path: Vec<u8>, dir: Inode) {
        if self.stopped() {
            return;
        }
        // Saturating, so that a corrupt size near u64::MAX cannot wrap the sum below the
        // limit.
        let before = self
            .dir_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(dir.size))
            })
            .unwrap_or(u64::MAX);
        if before.saturating_add(dir.size) > self.image.len() {
            return self.fail();
        }
        let Ok(entries) = self.image.read_dir(&dir) else {
            return self.fail();
        };
        let mut children = Vec::with_capacity(entries.len());
        for d in entries {
            if self.stopped() {
                return;
            }
            if d.name == b"." || d.name == b".." {
                continue;
            }
            let child = join_path(&path, &d.name);
            let Ok(inode) = self.image.inode(d.nid) else {
                return self.fail();
            };
            if inode.is_dir() {
                if !self.claim(d.nid) {
                    return self.fail();
                }
                let (p, i) = (child.clone(), inode.clone());
                scope.spawn(move |s| self.visit(s, p, i));
            }
            children.push(WalkEntry {
                path: child,
                nid: d.nid,
                inode,
                parent: dir.nid,
                dirent_type: d.file_type,
            });
        }
        self.children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(dir.nid, children);
    }
}

impl Image<'_> {
    /// Every entry [`Image::walk`] yields, in the same order, read with one job per
    /// directory on the current rayon pool; stops at the first error, which is the one the
    /// serial walk meets first.
    ///
    /// The result does not depend on the number of threads. Any failure (an unreadable
    /// directory or inode, a directory reached twice, the directory budget exceeded) sends
    /// the image through the serial walk, so that the error returned is the serial walk's.
    /// Without a failure both walks read the same directories and inodes, each directory
    /// once, so they find the same entries; the children are then put in depth-first order.
    pub fn walk_parallel(&self) -> Result<Vec<WalkEntry>> {
        match self.try_walk_parallel() {
            Some(entries) => Ok(entries),
            None => self.walk()?.collect(),
        }
    }

    /// [`Image::walk_parallel`] without the fallback: `None` on any failure.
    fn try_walk_parallel(&self) -> Option<Vec<WalkEntry>> {
        let root_nid = self.root_nid();
        let root = self.inode(root_nid).ok()?;
        let root_entry = WalkEntry {
            path: b"/".to_vec(),
            nid: root_nid,
            inode: root.clone(),
            parent: root_nid,
            dirent_type: root.file_type(),
        };
        if !root.is_dir() {
            return Some(vec![root_entry]);
        }
        let w = ParWalk {
            image: self,
            visited: Mutex::new(NidSet::from_iter([root_nid])),
            dir_bytes: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            children: Mutex::new(NidMap::default()),
        };
        rayon::scope(|s| w.visit(s, b"/".to_vec(), root));
        if w.failed.into_inner() {
            return None;
        }
        let mut children = w
            .children
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        // Depth-first, each directory before its children, like the serial walk. Every
        // directory was read once, so each list is taken once.
        let mut out = vec![root_entry];
        let mut stack = vec![children.remove(&root_nid).unwrap_or_default().into_iter()];
        while let Some(top) = stack.last_mut() {
            let Some(e) = top.next() else {
                stack.pop();
                continue;
            };
            let sub = e.inode.is_dir().then(|| children.remove(&e.nid)).flatten();
            out.push(e);
            if let Some(sub) = sub {
                stack.push(sub.into_iter());
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::{Image, OpenOptions, Result, WalkEntry};

    fn reference(name: &str) -> PathBuf {
        let dir = match std::env::var_os("EROFS_TESTDATA_IMAGES") {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/images"),
        };
        dir.join(format!("{name}.erofs"))
    }

    /// What a walk found, comparable: one line per entry, or the error text.
    fn outcome(r: &Result<Vec<WalkEntry>>) -> std::result::Result<Vec<String>, String> {
        match r {
            Ok(entries) => Ok(entries.iter().map(|e| format!("{e:?}")).collect()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn serial(img: &Image<'_>) -> Result<Vec<WalkEntry>> {
        img.walk()?.collect()
    }

    fn on_threads<T: Send>(n: usize, f: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .expect("thread pool")
            .install(f)
    }

    #[test]
    fn the_parallel_walk_yields_the_serial_walk_in_order_on_every_thread_count() {
        for name in [
            "compact",
            "extended",
            "noinline",
            "chunk-blockmap",
            "chunk-indexes",
            "mtime",
            "xattr-x1",
            "lz4",
        ] {
            let img = Image::open(reference(name)).expect(name);
            let serial = outcome(&serial(&img));
            assert!(serial.as_ref().expect(name).len() > 5, "{name}");
            for threads in [1, 2, 4, 8] {
                let parallel = on_threads(threads, || img.try_walk_parallel());
                let parallel = parallel.unwrap_or_else(|| panic!("{name}: walk failed"));
                assert_eq!(outcome(&Ok(parallel)), serial, "{name}, {threads} threads");
            }
        }
    }

    #[test]
    fn a_directory_pointing_back_at_the_root_gives_the_serial_walks_error() {
        let img = Image::open(reference("compact")).unwrap();
        let dir = img.lookup(b"/dir/sub").unwrap();
        let entries = img.read_dir_block(&dir, 0).unwrap();
        let deeper = entries.iter().find(|d| d.entry.name == b"deeper").unwrap();
        let at = deeper.dirent_offset.unwrap() as usize;
        let mut bytes = std::fs::read(reference("compact")).unwrap();
        bytes[at..at + 8].copy_from_slice(&img.root_nid().to_le_bytes());
        let img = Image::from_source(bytes, OpenOptions::default().verify_checksum(false)).unwrap();
        assert!(on_threads(4, || img.try_walk_parallel()).is_none());
        let err = on_threads(4, || img.walk_parallel()).unwrap_err();
        assert!(err.to_string().contains("/dir/sub/deeper"), "{err}");
        assert_eq!(Err(err.to_string()), outcome(&serial(&img)));
    }

    /// Whatever the corruption, the parallel walk succeeds exactly when the serial walk
    /// does, with the same entries, or fails with the same error.
    #[test]
    fn damaged_images_give_the_serial_walks_outcome() {
        let pristine = std::fs::read(reference("compact")).unwrap();
        let mut rng = erofs_testkit::Rng(0x2545_F491_4F6C_DD1D);
        let (mut ok, mut failed) = (0, 0);
        for _ in 0..300 {
            let mut b = pristine.clone();
            for _ in 0..1 + rng.next_u64() % 3 {
                let at = 1024 + (rng.next_u64() % (pristine.len() as u64 / 2 - 1024)) as usize;
                b[at] ^= 1 << (rng.next_u64() % 8);
            }
            let Ok(img) = Image::from_source(&b[..], OpenOptions::default().verify_checksum(false))
            else {
                continue;
            };
            let serial = outcome(&serial(&img));
            let parallel = on_threads(4, || img.try_walk_parallel());
            match (&serial, parallel) {
                (Ok(_), Some(p)) => {
                    ok += 1;
                    assert_eq!(outcome(&Ok(p)), serial);
                }
                (Err(_), None) => failed += 1,
                (s, p) => panic!("serial {s:?}, parallel {:?}", p.map(|p| p.len())),
            }
            assert_eq!(outcome(&on_threads(4, || img.walk_parallel())), serial);
        }
        assert!(ok > 100 && failed > 50, "{ok} walked, {failed} failed");
    }
}
