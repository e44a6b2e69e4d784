//! What `mkfs.erofs-rs`, `fsck.erofs-rs` and `dump.erofs-rs` share on the command line:
//!
//! - one exit-code table ([`Exit`]), following fsck(8) so that `fsck.erofs-rs` can stand in
//!   for `fsck.erofs` under fsck(8) and every tool reports the same way;
//! - a quiet end when the reader of standard output goes away ([`is_broken_pipe`]);
//! - the erofs-utils drop-in names ([`invoked_as`]);
//! - man pages and shell completions from the clap definitions ([`generate_if_asked`]).

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;

/// The exit statuses of all three tools (fsck(8)'s values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Success; for fsck, the image is clean.
    Ok = 0,
    /// Problems were found in the image and left as they are (fsck problems, fingerprint
    /// mismatches, content conflicts).
    ErrorsLeft = 4,
    /// Operational error: a file could not be opened, read or written, the image is not
    /// EROFS, or the build failed.
    Operational = 8,
    /// Usage error: an unknown option or a bad argument.
    Usage = 16,
}

impl Exit {
    /// The status as a process exit code.
    pub fn code(self) -> std::process::ExitCode {
        std::process::ExitCode::from(self as u8)
    }
}

/// The exit-code table as the tools' `--help` and man pages show it.
pub const EXIT_STATUS_HELP: &str = "\
Exit status (the same for mkfs.erofs-rs, fsck.erofs-rs and dump.erofs-rs; fsck(8)'s values):
  0   success (fsck: the image is clean)
  4   problems found in the image and left as they are
  8   operational error: cannot open, read or write a file, not an EROFS image
  16  usage error: unknown option or bad argument
A closed standard output (as in `| head`) ends the tool quietly with status 0.";

/// Whether `e` (or anything it wraps) is a write to a closed pipe: the tool then stops
/// quietly, as `cmd | head` expects.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The file name this process was invoked as (`argv[0]` without its directory), e.g.
/// `mkfs.erofs` when installed under erofs-utils' names by `cargo xtask dist --drop-in`.
pub fn invoked_as() -> Option<String> {
    let argv0 = std::env::args_os().next()?;
    Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
}

/// Parses the command line with `cmd`; a usage error prints clap's message and exits with
/// [`Exit::Usage`], `--help` and `--version` exit 0.
pub fn parse(cmd: clap::Command, args: Vec<OsString>) -> clap::ArgMatches {
    match cmd.try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            let code = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            };
            std::process::exit(code as i32)
        }
    }
}

/// The environment variable that makes a tool print its man page or a completion script
/// instead of running: `man`, or a shell name clap_complete knows (`bash`, `zsh`, `fish`,
/// `elvish`, `powershell`). `cargo xtask dist` uses it.
pub const GENERATE_ENV: &str = "EROFS_RS_GENERATE";

/// The shells completions are generated for.
pub const SHELLS: [&str; 5] = ["bash", "zsh", "fish", "elvish", "powershell"];

/// With [`GENERATE_ENV`] set, writes the man page or completion script for `cmd` to
/// standard output and exits.
pub fn generate_if_asked(cmd: &clap::Command) {
    let Some(what) = std::env::var_os(GENERATE_ENV) else {
        return;
    };
    let mut cmd = cmd.clone();
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    let result = match what.to_str() {
        Some("man") => clap_mangen::Man::new(cmd.clone()).render(&mut out),
        Some(shell) => match shell.parse::<clap_complete::Shell>() {
            Ok(sh) => {
                clap_complete::generate(sh, &mut cmd, name.clone(), &mut out);
                Ok(())
            }
            Err(_) => {
                eprintln!("{GENERATE_ENV}={shell}: expected man or one of {SHELLS:?}");
                std::process::exit(Exit::Usage as i32);
            }
        },
        None => {
            eprintln!("{GENERATE_ENV} is not UTF-8");
            std::process::exit(Exit::Usage as i32);
        }
    };
    let status = match result.and_then(|()| std::io::stdout().write_all(&out)) {
        Ok(()) => Exit::Ok,
        Err(e) => {
            eprintln!("{name}: {e}");
            Exit::Operational
        }
    };
    std::process::exit(status as i32);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_fsck8s() {
        assert_eq!(Exit::Ok as i32, 0);
        assert_eq!(Exit::ErrorsLeft as i32, 4);
        assert_eq!(Exit::Operational as i32, 8);
        assert_eq!(Exit::Usage as i32, 16);
        for code in ["0 ", "4 ", "8 ", "16 "] {
            assert!(EXIT_STATUS_HELP.contains(code), "{code}");
        }
    }

    #[test]
    fn a_broken_pipe_is_found_under_context() {
        let e = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
