//! Shared by the host (`cargo xtask qemu-test`) and the guest test program:
//! - [`manifest`]: what a tree holds (written on the host from the source tree, rebuilt in the
//!   guest from the mounted image by the same walker, then compared);
//! - [`plan`]: what the guest runs, and the result-line protocol on the serial console;
//! - [`sys`]: small safe wrappers around the Linux calls the tests need.

// The guest program is PID 1 in a test VM and must call mount(2), umount(2), mmap/mincore,
// posix_fadvise, klogctl, reboot and an x86 port write, which std does not expose. Every unsafe
// block lives in `sys`, is small and says why it is sound.
#![allow(unsafe_code)]

pub mod manifest;
pub mod plan;
pub mod sys;
