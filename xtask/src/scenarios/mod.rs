//! Host side of the QEMU scenarios: each declares the images and disks it needs, the guest
//! runs (by guest scenario name, see `xtask/guest/src/scenarios`), and which kernel messages
//! it expects. Add a module and a line in [`all`] to add scenarios.

pub mod share;
pub mod stock;
pub mod verity;

use crate::corrupt;
use crate::kernel::Variant;
use crate::mkfs::{self, Mkfs};
use crate::trees;
use anyhow::{Context, Result};
use erofs_guest::manifest::{WalkOptions, walk};
use erofs_guest::plan::{MountSpec, Run};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A scenario as listed by `cargo xtask qemu-test --list`.
pub struct Scenario {
    /// Name used on the command line.
    pub name: &'static str,
    /// One line about it.
    pub about: &'static str,
    /// Builds what the boot needs.
    pub prepare: fn(&mut Env) -> Result<Prepared>,
}

/// Every scenario, in run order.
pub fn all() -> Vec<Scenario> {
    let mut v = Vec::new();
    v.extend(stock::scenarios());
    v.extend(share::scenarios());
    v.extend(verity::scenarios());
    v
}

/// What a scenario wants.
pub enum Prepared {
    /// Boot with this.
    Boot(Boot),
    /// Cannot run here (reason).
    Skip(String),
}

/// Kernel messages a scenario expects.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// Substrings of error-level (or lower) kernel log lines that are expected;
    /// `""` expects every error line.
    pub errors: Vec<String>,
    /// Substrings of crash lines (BUG, WARNING, Oops, panic) that are expected. Normally empty.
    pub crashes: Vec<String>,
}

/// One VM boot of a scenario.
#[derive(Debug)]
pub struct Boot {
    /// Disks attached read-only, in order: /dev/vda, /dev/vdb, ...
    pub disks: Vec<PathBuf>,
    /// Extra QEMU `-drive` options by disk index ([`Boot::slow_disk`]); missing: none.
    pub disk_options: Vec<String>,
    /// Extra initramfs files (absolute guest path, bytes).
    pub files: Vec<(String, Vec<u8>)>,
    /// Guest runs, in order.
    pub runs: Vec<Run>,
    /// Expected kernel messages.
    pub expected: Expected,
    /// Guest RAM.
    pub memory_mib: u32,
    /// Boot timeout in seconds (TCG speed).
    pub timeout_secs: u64,
    /// Extra kernel command-line parameters.
    pub append: Vec<String>,
}

impl Default for Boot {
    fn default() -> Self {
        Boot {
            disks: Vec::new(),
            disk_options: Vec::new(),
            files: Vec::new(),
            runs: Vec::new(),
            expected: Expected::default(),
            memory_mib: 512,
            timeout_secs: 300,
            append: Vec::new(),
        }
    }
}

/// Virtio disks one boot can attach: `-nodefaults` leaves slots 2-31 of the i440fx PCI bus
/// free, one per virtio-blk device.
pub const MAX_DISKS: usize = 30;

/// The guest path of the `n`th virtio disk, named as Linux names them (`vda`..`vdz`, then
/// `vdaa`, `vdab`, ...).
pub fn virtio_disk_name(n: usize) -> String {
    let mut letters = Vec::new();
    let mut i = n + 1;
    while i > 0 {
        i -= 1;
        letters.push(b'a' + (i % 26) as u8);
        i /= 26;
    }
    letters.reverse();
    format!(
        "/dev/vd{}",
        String::from_utf8(letters).expect("ASCII letters")
    )
}

impl Boot {
    /// Attaches a disk and returns its guest device path.
    pub fn disk(&mut self, image: &Path) -> String {
        let n = self.disks.len();
        assert!(
            n < MAX_DISKS,
            "a boot has PCI slots for {MAX_DISKS} virtio disks; split the scenario"
        );
        self.disks.push(image.to_path_buf());
        virtio_disk_name(n)
    }

    /// Attaches a disk whose reads QEMU throttles to `bytes_per_sec` (`throttling.bps-total`),
    /// so that an I/O request stays in flight for a known while, and returns its guest device
    /// path.
    pub fn slow_disk(&mut self, image: &Path, bytes_per_sec: u64) -> String {
        let dev = self.disk(image);
        let n = self.disks.len() - 1;
        self.disk_options.resize(n + 1, String::new());
        self.disk_options[n] = format!("throttling.bps-total={bytes_per_sec}");
        dev
    }

    /// Adds a file to the initramfs and returns its guest path.
    pub fn file(&mut self, guest_path: &str, bytes: Vec<u8>) -> String {
        self.files.push((guest_path.to_string(), bytes));
        guest_path.to_string()
    }

    /// Adds a guest run.
    pub fn run(
        &mut self,
        scenario: &str,
        label: &str,
        params: impl serde::Serialize,
    ) -> Result<()> {
        self.runs.push(Run {
            scenario: scenario.into(),
            label: label.into(),
            params: serde_json::to_value(params)?,
        });
        Ok(())
    }
}

/// Trees the host can generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tree {
    /// [`trees::full`].
    Full,
    /// [`trees::small`].
    Small,
    /// `testdata/example-tree` of the repository (if present).
    Example,
    /// [`trees::same_content`].
    SameContent,
    /// [`trees::duplicates`].
    Duplicates,
}

/// What scenarios get to work with.
pub struct Env {
    /// Scratch directory of this whole test run.
    pub work: PathBuf,
    /// The mkfs under test.
    pub mkfs: Mkfs,
    /// The kernel variant that will boot.
    pub variant: Variant,
    trees: BTreeMap<Tree, PathBuf>,
    manifests: BTreeMap<(PathBuf, Option<String>, bool), Vec<u8>>,
}

impl Env {
    /// A new environment in `work`.
    pub fn new(work: PathBuf, mkfs: Mkfs, variant: Variant) -> Env {
        Env {
            work,
            mkfs,
            variant,
            trees: BTreeMap::new(),
            manifests: BTreeMap::new(),
        }
    }

    /// The source tree, generated once per test run.
    pub fn tree(&mut self, t: Tree) -> Result<PathBuf> {
        if let Some(p) = self.trees.get(&t) {
            return Ok(p.clone());
        }
        let p = match t {
            Tree::Full => {
                let p = self.work.join("trees/full");
                let max_name = if matches!(self.mkfs, Mkfs::Debian) {
                    254
                } else {
                    255
                };
                trees::full(&p, max_name).context("generating the full tree")?;
                p
            }
            Tree::Small => {
                let p = self.work.join("trees/small");
                trees::small(&p).context("generating the small tree")?;
                p
            }
            Tree::Example => crate::util::workspace_root().join("testdata/example-tree"),
            Tree::SameContent => {
                let p = self.work.join("trees/same-content");
                trees::same_content(&p).context("generating the same-content tree")?;
                p
            }
            Tree::Duplicates => {
                let p = self.work.join("trees/duplicates");
                trees::duplicates(&p).context("generating the duplicates tree")?;
                p
            }
        };
        self.trees.insert(t, p.clone());
        Ok(p)
    }

    /// Builds an image with the mkfs under test into the work directory.
    pub fn image(&self, tree: &Path, name: &str, opts: &mkfs::Options) -> Result<PathBuf> {
        let dir = self.work.join("images");
        std::fs::create_dir_all(&dir)?;
        let img = dir.join(format!("{name}.erofs"));
        self.mkfs
            .build(tree, &img, opts)
            .with_context(|| format!("building image {name}"))?;
        Ok(img)
    }

    /// The manifest (JSON) the image of `tree` built with `opts` must match, from walking the
    /// source tree on the host.
    pub fn manifest(&mut self, tree: &Path, opts: &mkfs::Options) -> Result<Vec<u8>> {
        let key = (tree.to_path_buf(), opts.fingerprint.clone(), opts.all_root);
        if let Some(m) = self.manifests.get(&key) {
            return Ok(m.clone());
        }
        let w = walk(
            tree,
            &WalkOptions {
                fingerprint: opts.fingerprint.clone(),
                all_root: opts.all_root,
                nlink_from_tree: true,
                also_mmap: false,
                max_file_bytes: None,
            },
        );
        if !w.errors.is_empty() {
            anyhow::bail!("walking {}: {}", tree.display(), w.errors.join("; "));
        }
        let json = serde_json::to_vec(&w.manifest)?;
        self.manifests.insert(key, json.clone());
        Ok(json)
    }

    /// An EROFS image (4 KiB blocks, built by the mkfs under test) holding `files` so the guest
    /// can mount them file-backed (tmpfs has no read_folio, so the initramfs cannot serve).
    pub fn carrier(&self, name: &str, files: &[(&str, &Path)]) -> Result<PathBuf> {
        let dir = self.work.join("carriers").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        for (n, p) in files {
            std::fs::hard_link(p, dir.join(n))
                .or_else(|_| std::fs::copy(p, dir.join(n)).map(|_| ()))?;
        }
        self.image(
            &dir,
            &format!("carrier-{name}"),
            &mkfs::Options {
                shared_xattrs: None,
                ..Default::default()
            },
        )
    }

    /// Damaged variants of a clean image.
    pub fn damaged(&self, clean: &Path) -> Result<Vec<corrupt::Damaged>> {
        corrupt::variants(&std::fs::read(clean)?)
    }
}

/// A read-only erofs mount of `source` at `target` with `data` options.
pub fn erofs_mount(source: &str, target: &str, data: &str) -> MountSpec {
    MountSpec {
        source: source.into(),
        target: target.into(),
        fstype: "erofs".into(),
        data: data.into(),
    }
}

#[cfg(test)]
mod disk_name_tests {
    use super::virtio_disk_name;

    #[test]
    fn virtio_disks_are_named_as_linux_names_them() {
        assert_eq!(virtio_disk_name(0), "/dev/vda");
        assert_eq!(virtio_disk_name(25), "/dev/vdz");
        assert_eq!(virtio_disk_name(26), "/dev/vdaa");
        assert_eq!(virtio_disk_name(29), "/dev/vdad");
        assert_eq!(virtio_disk_name(51), "/dev/vdaz");
        assert_eq!(virtio_disk_name(52), "/dev/vdba");
        assert_eq!(virtio_disk_name(701), "/dev/vdzz");
        assert_eq!(virtio_disk_name(702), "/dev/vdaaa");
    }
}
