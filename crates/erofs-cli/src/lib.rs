//! What `mkfs.erofs-rs`, `fsck.erofs-rs` and `dump.erofs-rs` share on the command line:
//!
//! - one exit-code table ([`Exit`]), following fsck(8) so that `fsck.erofs-rs` can stand in
//!   for `fsck.erofs` under fsck(8) and every tool reports the same way;
//! - a quiet end when the reader of standard output goes away ([`is_broken_pipe`]);
//! - the erofs-utils drop-in names ([`invoked_as`]);
//! - man pages and shell completions from the clap definitions ([`generate_if_asked`]);
//! - the one progress bar ([`Bar`]), which renders any long operation's
//!   [`erofs_task::Progress`] events;
//! - Ctrl-C that cancels a check, an extraction or a verification cleanly ([`Interrupt`]).

mod interrupt;
mod progress;

pub use interrupt::{Armed, Interrupt, run_interruptible};
pub use progress::{Bar, cpu_seconds};

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
    /// Interrupted: Ctrl-C (SIGINT), SIGTERM or SIGHUP cancelled a check, an extraction, a
    /// verification or statistics (fsck(8)'s "canceled by user request").
    Cancelled = 32,
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
  32  interrupted: Ctrl-C, SIGTERM or SIGHUP cancelled a check, an extraction or statistics
A closed standard output (as in `| head`) ends the tool quietly with status 0.";

/// The fingerprint format, for the help and man pages of the tools that write or check it.
pub const FINGERPRINT_HELP: &str = "\
Fingerprints: --fingerprint=sha256 stores on every non-empty regular file an xattr (default \
name trusted.erofs.fingerprint) whose value is the 7 bytes \"sha256:\" followed by the 32-byte \
SHA-256 of the file's content (39 bytes), and sets the superblock's ishare_xattrs feature with \
the xattr's prefix index, the format Linux 7.0 reads for page-cache sharing \
(mount -o inode_share). The xattr name is stored through a long xattr name prefix \
(incompat 0x40, xattr_prefixes, Linux 6.4+): erofs-utils 1.5 (Debian 12's) cannot read \
fingerprinted images, 1.9.3 can.";

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
/// The clap command of a tool for the name it was invoked as: erofs-utils' name
/// (`drop_in`) renames it; the fingerprint format and the exit statuses end its help.
pub fn command_for(
    cmd: clap::Command,
    drop_in: &'static str,
    invoked_as: Option<&str>,
) -> clap::Command {
    let cmd = cmd.after_help(format!("{FINGERPRINT_HELP}\n\n{EXIT_STATUS_HELP}"));
    if invoked_as == Some(drop_in) {
        cmd.name(drop_in).bin_name(drop_in)
    } else {
        cmd
    }
}

/// The man page section that says how the drop-in name behaves.
pub fn compatibility_section(drop_in: &str) -> String {
    format!(
        "Invoked as {drop_in} (cargo xtask dist --install PREFIX --drop-in), the tool answers \
         to erofs-utils' name; erofs-utils' option spellings work under both names."
    )
}

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

/// The man page's EXIT STATUS section: `term<TAB>text` lines become tagged paragraphs.
const EXIT_STATUS_MAN: &str = "\
The same for mkfs.erofs-rs, fsck.erofs-rs and dump.erofs-rs, with fsck(8)'s values:
0\tsuccess; for fsck, the image is clean
4\tproblems were found in the image and left as they are (fsck problems, fingerprint mismatches, content conflicts)
8\toperational error: a file cannot be opened, read or written, the image is not EROFS, or the build failed
16\tusage error: an unknown option or a bad argument
32\tinterrupted: Ctrl-C (SIGINT), SIGTERM or SIGHUP cancelled a check, an extraction, a verification or statistics
A closed standard output (as in | head) ends the tool quietly with status 0.";

/// Escapes text for roff: backslashes, hyphens that are not line breaks, and a leading
/// control character.
fn roff_escape(text: &str) -> String {
    let s = text.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// A man page section from plain text: `term<TAB>text` lines become tagged paragraphs,
/// other lines paragraphs.
fn roff_section(title: &str, body: &str) -> String {
    let mut out = format!(".SH \"{}\"\n", title.to_uppercase());
    for line in body.lines().filter(|l| !l.trim().is_empty()) {
        match line.split_once('\t') {
            Some((term, text)) => out.push_str(&format!(
                ".TP\n\\fB{}\\fR\n{}\n",
                roff_escape(term),
                roff_escape(text)
            )),
            None => out.push_str(&format!(".PP\n{}\n", roff_escape(line))),
        }
    }
    out
}

/// The man page of `cmd` in section 8: clap's name, synopsis, description and options,
/// then `sections` (title, body: `term<TAB>text` lines become tagged paragraphs, other lines
/// paragraphs), fingerprints, exit status and version.
pub fn man_page(cmd: &clap::Command, sections: &[(&str, &str)]) -> std::io::Result<Vec<u8>> {
    // Section 8, as erofs-utils' pages: system administration tools.
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    for (title, body) in sections {
        out.extend_from_slice(roff_section(title, body).as_bytes());
    }
    out.extend_from_slice(roff_section("Fingerprints", FINGERPRINT_HELP).as_bytes());
    out.extend_from_slice(roff_section("Exit status", EXIT_STATUS_MAN).as_bytes());
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// With [`GENERATE_ENV`] set, writes the man page (with `man_sections`, see [`man_page`])
/// or the completion script for `cmd` to standard output and exits.
pub fn generate_if_asked(cmd: &clap::Command, man_sections: &[(&str, &str)]) {
    let Some(what) = std::env::var_os(GENERATE_ENV) else {
        return;
    };
    let mut cmd = cmd.clone();
    let name = cmd.get_name().to_string();
    let result = match what.to_str() {
        Some("man") => man_page(&cmd, man_sections),
        Some(shell) => match shell.parse::<clap_complete::Shell>() {
            Ok(sh) => {
                let mut out = Vec::new();
                clap_complete::generate(sh, &mut cmd, name.clone(), &mut out);
                Ok(out)
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
    let status = match result.and_then(|out| std::io::stdout().write_all(&out)) {
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
        assert_eq!(Exit::Cancelled as i32, 32);
        for code in ["0 ", "4 ", "8 ", "16 ", "32 "] {
            assert!(EXIT_STATUS_HELP.contains(code), "{code}");
        }
    }

    #[test]
    fn roff_sections_escape_and_tag() {
        let s = roff_section("Exit status", "intro -x\n4\tleft\n.dot");
        assert_eq!(
            s,
            ".SH \"EXIT STATUS\"\n.PP\nintro \\-x\n.TP\n\\fB4\\fR\nleft\n.PP\n\\&.dot\n"
        );
    }

    #[test]
    fn a_broken_pipe_is_found_under_context() {
        let e = anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("writing");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
