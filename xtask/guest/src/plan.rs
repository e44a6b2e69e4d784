//! The plan the host puts into the initramfs (`/plan.json`) and the lines the guest prints.
//!
//! Every line the host cares about starts with [`MARK`] followed by a tag:
//! - `@@EROFS ALIVE` once the guest runs;
//! - `@@EROFS RESULT {json}` one per check ([`CheckResult`]);
//! - `@@EROFS NOTE text` free-form detail (diffs, timings);
//! - `@@EROFS DMESG <level>text` the kernel log, collected at the end;
//! - `@@EROFS DONE {json}` ([`Done`]) right before power-off.

use serde::{Deserialize, Serialize};

/// Prefix of every protocol line.
pub const MARK: &str = "@@EROFS";
/// Where the plan is in the initramfs.
pub const PLAN_PATH: &str = "/plan.json";

/// What the guest does in one boot.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Plan {
    /// Guest scenarios to run, in order.
    pub runs: Vec<Run>,
}

/// One invocation of a guest scenario (registered by name in the guest program).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Name of the guest scenario function (the guest registry key).
    pub scenario: String,
    /// Label printed with every check of this run.
    pub label: String,
    /// Scenario-specific parameters.
    pub params: serde_json::Value,
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    /// The run's label.
    pub run: String,
    /// What was checked.
    pub check: String,
    /// Whether it passed.
    pub ok: bool,
    /// Human-readable detail (error text, counts).
    pub detail: String,
}

/// Summary printed before power-off.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Done {
    /// Checks passed.
    pub passed: u32,
    /// Checks failed.
    pub failed: u32,
}

/// Parameters of the `conformance` guest scenario: mount each image and compare it against its
/// manifest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConformanceParams {
    /// Disks to mount first that hold image files for file-backed mounts.
    #[serde(default)]
    pub carriers: Vec<MountSpec>,
    /// The images.
    pub images: Vec<ImageCheck>,
}

/// One image to mount and compare.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImageCheck {
    /// Label for the checks.
    pub label: String,
    /// Path of the manifest in the initramfs.
    pub manifest: String,
    /// Expected block size (statfs f_bsize).
    pub block_size: u64,
    /// Ways to mount it; each is compared in full.
    pub mounts: Vec<MountSpec>,
}

/// A mount(2) call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MountSpec {
    /// Mount source: a block device, or a regular file for a file-backed mount.
    pub source: String,
    /// Mount point (created if missing).
    pub target: String,
    /// Filesystem type.
    #[serde(default = "erofs")]
    pub fstype: String,
    /// The data (options) string.
    #[serde(default)]
    pub data: String,
}

fn erofs() -> String {
    "erofs".into()
}

/// Parameters of the `mount_options` guest scenario.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MountOptionsParams {
    /// Each case mounts `mount` and expects success or failure.
    pub cases: Vec<MountCase>,
}

/// A mount that must succeed or fail.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MountCase {
    /// Label of the check.
    pub label: String,
    /// The mount.
    pub mount: MountSpec,
    /// Whether mount(2) must succeed.
    pub expect_ok: bool,
}

/// Parameters of the `corrupt` guest scenario.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CorruptParams {
    /// Disks to mount first that hold image files for file-backed mounts.
    #[serde(default)]
    pub carriers: Vec<MountSpec>,
    /// The corrupted images.
    pub cases: Vec<CorruptCase>,
}

/// What a corrupted image must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CorruptExpect {
    /// mount(2) must fail.
    MountFails,
    /// mount fails, or reading the tree gives at least one error.
    SomeError,
    /// Anything but a crash (random damage that may be harmless).
    NoCrash,
}

/// One corrupted image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorruptCase {
    /// Label of the check.
    pub label: String,
    /// The mount.
    pub mount: MountSpec,
    /// What must happen.
    pub expect: CorruptExpect,
}

/// Parameters of the `page_cache` guest scenario: two files with the same content.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PageCacheParams {
    /// Mounts to make first (e.g. one image, or two images in one domain).
    pub mounts: Vec<MountSpec>,
    /// First file (absolute guest path).
    pub file_a: String,
    /// Second file with the same content.
    pub file_b: String,
    /// Whether the two must share one page cache.
    pub expect_shared: bool,
}

/// Parameters of the `verity_eio` guest scenario: a dm-verity device whose image has one
/// damaged file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerityEioParams {
    /// How to mount the dm-verity device.
    pub mount: MountSpec,
    /// The manifest of the undamaged tree.
    pub manifest: String,
    /// The damaged file, relative to the mount point: reading it must fail with EIO, and
    /// every other entry must match the manifest.
    pub bad: String,
}
