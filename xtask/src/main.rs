//! Developer tasks for erofs-rs: `cargo xtask <command>`.

mod bench;
mod corrupt;
mod dist;
mod initramfs;
mod kernel;
mod mkfs;
mod qemu;
mod qemu_test;
mod scenarios;
mod test;
mod trees;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Developer tasks for erofs-rs")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build Linux 6.12 (Debian's linux-source-6.12 + xtask/kernel) into the cache.
    Kernel(kernel::KernelArgs),
    /// Build images, initramfs and kernel, boot QEMU and run the conformance scenarios.
    QemuTest(qemu_test::QemuTestArgs),
    /// Build the release binaries, add the dotted names (mkfs.erofs-rs, ...), man pages and
    /// completions beside them; optionally install them.
    Dist(dist::DistArgs),
    /// Run every test (cargo test --workspace, then the QEMU suite) and print passed,
    /// failed and skipped counts with the reason for every skip.
    Test(test::TestArgs),
    /// Benchmark mkfs/fsck against erofs-utils and the read-and-hash floor.
    Bench(bench::BenchArgs),
}

fn main() {
    if let Err(e) = dispatch() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch() -> Result<()> {
    match Cli::parse().command {
        Cmd::Kernel(a) => kernel::run(&a),
        Cmd::QemuTest(a) => qemu_test::run(&a),
        Cmd::Dist(a) => dist::run(&a),
        Cmd::Bench(a) => bench::run(&a),
        Cmd::Test(a) => test::run(&a),
    }
}
