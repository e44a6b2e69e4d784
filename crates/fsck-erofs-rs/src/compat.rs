//! The command line as users and callers type it: the drop-in name `fsck.erofs` (installed
//! by `cargo xtask dist --drop-in`; erofs-utils' spellings such as `--extract=DIR IMAGE`
//! and `-d N` work under both names), the exit-status table in `--help`, and a hint for
//! `--extract DIR` written without `=`.

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches};

use crate::Cli;

/// erofs-utils' name for this tool.
pub const DROP_IN_NAME: &str = "fsck.erofs";

/// The clap command for the name this process was invoked as.
pub fn command(invoked_as: Option<&str>) -> clap::Command {
    erofs_cli::command_for(Cli::command(), DROP_IN_NAME, invoked_as)
}

/// Parses the command line; a usage error exits with status 16.
pub fn parse() -> Cli {
    let name = erofs_cli::invoked_as();
    let cmd = command(name.as_deref());
    let compatibility = erofs_cli::compatibility_section(DROP_IN_NAME);
    erofs_cli::generate_if_asked(&cmd, &[("erofs-utils compatibility", &compatibility)]);
    let args: Vec<OsString> = std::env::args_os().collect();
    let matches = match cmd.try_get_matches_from(&args) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            if !e.use_stderr() {
                std::process::exit(0);
            }
            // `--extract DIR IMAGE`: clap takes DIR as the image and IMAGE as unexpected.
            if args.iter().any(|a| a == "--extract") {
                eprintln!("hint: --extract takes its directory with '=': use --extract=DIR");
            }
            std::process::exit(erofs_cli::Exit::Usage as i32);
        }
    };
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| {
        let _ = e.print();
        std::process::exit(erofs_cli::Exit::Usage as i32)
    })
}
