//! The command line as users and callers type it: the drop-in name `dump.erofs` (installed
//! by `cargo xtask dist --drop-in`; erofs-utils' spellings such as `--nid=N`, `--path=X`,
//! `-s`, `-S`, `-e` work under both names), the exit-status table in `--help`, and the
//! one-image rule outside `--shared-report`.

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches};

use crate::Cli;

/// erofs-utils' name for this tool.
pub const DROP_IN_NAME: &str = "dump.erofs";

/// The clap command for the name this process was invoked as.
pub fn command(invoked_as: Option<&str>) -> clap::Command {
    erofs_cli::command_for(Cli::command(), DROP_IN_NAME, invoked_as)
}

/// Parses the command line; a usage error exits with status 16.
pub fn parse() -> Cli {
    let name = erofs_cli::invoked_as();
    let mut cmd = command(name.as_deref());
    let compatibility = erofs_cli::compatibility_section(DROP_IN_NAME);
    erofs_cli::generate_if_asked(&cmd, &[("erofs-utils compatibility", &compatibility)]);
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
