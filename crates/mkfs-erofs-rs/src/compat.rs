//! The drop-in name: invoked as `mkfs.erofs` (installed by `cargo xtask dist --drop-in`),
//! the tool takes erofs-utils' argument order, `mkfs.erofs [OPTIONS] IMAGE SOURCE`, so that
//! callers written for erofs-utils (containerd, osbuild, dracut, systemd-repart, Android's
//! build tools) can run it unchanged. The option spellings (`--workers=N`, `-d N`,
//! `--sort=`, `--quiet`, `-E...`, `-U`, `-T`, `--mkfs-time`, `--all-time`) are accepted
//! under both names; only the order of the positional arguments differs.

use clap::CommandFactory;

use crate::Cli;

/// erofs-utils' name for this tool.
pub const DROP_IN_NAME: &str = "mkfs.erofs";

/// What IMAGE may be.
const IMAGE_TEXT: &str = "\
IMAGE may be a regular file (replaced atomically when the image is complete; a killed build \
leaves nothing behind), a block device (written in place; it must be large enough), a \
character device, a fifo or - (standard output; the image is streamed). A symlink is \
followed and its target replaced.";

/// The environment variables mkfs reads (`NAME<TAB>meaning`).
const ENVIRONMENT: &str = "\
SOURCE_DATE_EPOCH\twithout -T: the build time; mtimes newer than it are lowered to it, older ones stay (reproducible-builds.org)
MKFS_EROFS_RS_TIMINGS\tset: print when each build stage starts, for profiling
EROFS_RS_GENERATE\tman or a shell name: print the man page or completion script instead of running";

/// Invoked as mkfs.erofs.
const COMPATIBILITY: &str = "\
Invoked as mkfs.erofs (cargo xtask dist --install PREFIX --drop-in), the arguments take \
erofs-utils' order, mkfs.erofs [OPTIONS] IMAGE SOURCE. Under both names the erofs-utils \
spellings --workers=N, -d N, --sort=path|none, --quiet, -E flags, -U, -T, --all-time and \
--mkfs-time work; -E flags of mkfs.erofs 1.9.3 that are not implemented are refused by \
name. With --tar and no SOURCE the tar is read from standard input, as containerd runs it; \
--tar=f, --tar=i (also with the tar appended to the index), --tar=i,MAPFILE, \
--tar=headerball, --aufs, --ovlfs-strip, --ungzip and --unxz work as in mkfs.erofs 1.9.3.";

/// The man page's own sections.
pub const MAN_SECTIONS: [(&str, &str); 3] = [
    ("Image", IMAGE_TEXT),
    ("Environment", ENVIRONMENT),
    ("erofs-utils compatibility", COMPATIBILITY),
];

/// The usage line for the name this process was invoked as, for messages.
pub fn usage(invoked_as: Option<&str>) -> &'static str {
    if invoked_as == Some(DROP_IN_NAME) {
        "mkfs.erofs [OPTIONS] IMAGE SOURCE, erofs-utils' order under this name"
    } else {
        "mkfs.erofs-rs [OPTIONS] SOURCE IMAGE; erofs-utils' order IMAGE SOURCE is taken only \
         under the name mkfs.erofs"
    }
}

/// The clap command for the name this process was invoked as.
pub fn command(invoked_as: Option<&str>) -> clap::Command {
    let environment: String = ENVIRONMENT
        .lines()
        .map(|l| {
            let (name, text) = l.split_once('\t').unwrap_or((l, ""));
            format!("  {name:<22} {text}\n")
        })
        .collect();
    let cmd = Cli::command().after_help(format!(
        "{IMAGE_TEXT}\n\nEnvironment:\n{environment}\n{COMPATIBILITY}\n\n{}\n\n{}",
        erofs_cli::FINGERPRINT_HELP,
        erofs_cli::EXIT_STATUS_HELP
    ));
    if invoked_as == Some(DROP_IN_NAME) {
        cmd.name(DROP_IN_NAME)
            .bin_name(DROP_IN_NAME)
            .mut_arg("image", |a| a.index(1))
            // containerd passes only IMAGE with --tar and the layer on standard input.
            .mut_arg("source", |a| a.index(2).required(false).default_value("-"))
    } else {
        cmd
    }
}
