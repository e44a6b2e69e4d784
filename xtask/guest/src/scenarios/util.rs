//! Helpers for guest scenarios.

use erofs_guest::plan::MountSpec;
use erofs_guest::sys;
use std::path::Path;

/// Mounts read-only as specified, creating the mount point.
pub fn mount(m: &MountSpec) -> std::io::Result<()> {
    std::fs::create_dir_all(&m.target)?;
    sys::mount(&m.source, &m.target, &m.fstype, sys::MS_RDONLY, &m.data)
}

/// Unmounts, reporting the error as text.
pub fn umount(target: &str) -> Result<String, String> {
    sys::umount(target)
        .map(|()| String::new())
        .map_err(|e| format!("umount {target}: {e}"))
}

/// Whether `source` is a regular file (a file-backed mount) or a device.
pub fn how(m: &MountSpec) -> &'static str {
    match std::fs::metadata(&m.source) {
        Ok(md) if md.is_file() => "file",
        _ => "bdev",
    }
}

/// EROFS's statfs magic.
pub const EROFS_SUPER_MAGIC_V1: u64 = 0xE0F5_E1E2;

/// Checks statfs type and block size.
pub fn check_statfs(target: &str, block_size: u64) -> Result<String, String> {
    let (t, b) = sys::statfs(Path::new(target)).map_err(|e| format!("statfs: {e}"))?;
    if t != EROFS_SUPER_MAGIC_V1 {
        return Err(format!(
            "f_type {t:#x}, expected EROFS {EROFS_SUPER_MAGIC_V1:#x}"
        ));
    }
    if block_size != 0 && b != block_size {
        return Err(format!("f_bsize {b}, expected {block_size}"));
    }
    Ok(format!("erofs, f_bsize {b}"))
}
