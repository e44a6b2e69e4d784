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

/// Help text after the options: exit status and environment.
const AFTER_HELP: &str = "\
IMAGE may be a regular file (replaced atomically when the image is complete), a block \
device (written in place; it must be large enough), a character device, a fifo or - \
(standard output; the image is streamed). A symlink is followed.

Environment:
  SOURCE_DATE_EPOCH  without -T: the build time, and mtimes newer than it are lowered to it
                     (older ones stay), as reproducible-builds.org defines it

erofs-utils spellings accepted: --workers=N, -d N, --sort=path|none, --quiet, -E flags, \
-U, -T, --all-time, --mkfs-time, --tar=f, --aufs.";

/// The clap command for the name this process was invoked as.
pub fn command(invoked_as: Option<&str>) -> clap::Command {
    let cmd = Cli::command().after_help(format!("{AFTER_HELP}\n\n{}", erofs_cli::EXIT_STATUS_HELP));
    if invoked_as == Some(DROP_IN_NAME) {
        cmd.name(DROP_IN_NAME)
            .bin_name(DROP_IN_NAME)
            .mut_arg("image", |a| a.index(1))
            .mut_arg("source", |a| a.index(2))
    } else {
        cmd
    }
}
