//! The command line as users and callers type it: the drop-in name `dump.erofs` (installed
//! by `cargo xtask dist --drop-in`; erofs-utils' spellings such as `--nid=N`, `--path=X`,
//! `-s`, `-S`, `-e` work under both names), the exit-status table in `--help`, and the
//! one-image rule outside `--shared-report`.

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches};

use crate::Cli;

/// Invoked as dump.erofs.
const COMPATIBILITY: &str = "\\
Invoked as dump.erofs (cargo xtask dist --install PREFIX --drop-in), the tool answers to \\
erofs-utils' name; erofs-utils' option spellings work under both names.";

/// erofs-utils' name for this tool.
pub const DROP_IN_NAME: &str = "dump.erofs";

/// The clap command for the name this process was invoked as.
pub fn command(invoked_as: Option<&str>) -> clap::Command {
    let cmd = Cli::command().after_help(format!(
        "{}\n\n{}",
        erofs_cli::FINGERPRINT_HELP,
        erofs_cli::EXIT_STATUS_HELP
    ));
    if invoked_as == Some(DROP_IN_NAME) {
        cmd.name(DROP_IN_NAME).bin_name(DROP_IN_NAME)
    } else {
        cmd
    }
}

/// Parses the command line; a usage error exits with status 16.
pub fn parse() -> Cli {
    let name = erofs_cli::invoked_as();
    let mut cmd = command(name.as_deref());
    erofs_cli::generate_if_asked(&cmd, &[("erofs-utils compatibility", COMPATIBILITY)]);
    let args: Vec<OsString> = std::env::args_os().collect();
    let matches = erofs_cli::parse(cmd.clone(), args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| {
        let _ = e.print();
        std::process::exit(erofs_cli::Exit::Usage as i32)
    });
    if !cli.shared_report && cli.images.len() > 1 {
        let _ = cmd
            .error(
                clap::error::ErrorKind::TooManyValues,
                format!(
                    "{} images given: one IMAGE, or several with --shared-report",
                    cli.images.len()
                ),
            )
            .print();
        std::process::exit(erofs_cli::Exit::Usage as i32);
    }
    cli
}
