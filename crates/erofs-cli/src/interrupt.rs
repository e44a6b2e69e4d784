//! Ctrl-C for the tools that only read an image (`fsck.erofs-rs`, `dump.erofs-rs`): while a
//! cancellable operation runs (a check, an extraction, statistics, a verification), the
//! first SIGINT, SIGTERM or SIGHUP cancels it through its [`CancelToken`], so that it stops
//! at its next file or job and removes what it had half written; a second one ends the
//! process at once. Outside such an operation the signals end the process as they always
//! did. (`mkfs.erofs-rs` has its own handler: a build's only leftover is its temporary image.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use erofs_task::CancelToken;

use crate::Exit;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::flag;

/// The signals that cancel the current operation; see the module docs.
pub struct Interrupt {
    token: CancelToken,
    /// No cancellable operation runs: a signal ends the process.
    idle: Arc<AtomicBool>,
}

impl Interrupt {
    /// Installs the handlers. Until [`Interrupt::arm`] the signals keep their usual effect.
    pub fn install() -> std::io::Result<Self> {
        let token = CancelToken::new();
        let idle = Arc::new(AtomicBool::new(true));
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            // The actions run in this order: the process ends if nothing listens or if the
            // operation was already asked to stop (a second Ctrl-C); else the operation is
            // asked to stop.
            flag::register_conditional_default(sig, Arc::clone(&idle))?;
            flag::register_conditional_default(sig, token.flag())?;
            flag::register(sig, token.flag())?;
        }
        Ok(Self { token, idle })
    }

    /// The token the signals cancel, to pass to the operations (through
    /// [`erofs_task::Cancellable`]).
    pub fn token(&self) -> &CancelToken {
        &self.token
    }

    /// From now until the guard drops, a signal cancels [`Interrupt::token`] instead of
    /// ending the process.
    pub fn arm(&self) -> Armed<'_> {
        self.idle.store(false, Ordering::SeqCst);
        Armed(self)
    }

    /// Whether a signal cancelled the operation.
    pub fn interrupted(&self) -> bool {
        self.token.is_cancelled()
    }
}

/// Signals cancel instead of ending the process while this lives; see [`Interrupt::arm`].
pub struct Armed<'a>(&'a Interrupt);

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.0.idle.store(true, Ordering::SeqCst);
    }
}

/// The `main` of a tool that only reads: installs [`Interrupt`], runs `run` with it and turns
/// the outcome into the exit status, printing the error as `tool: error: ...` ([`Exit::Ok`]
/// for a closed standard output, [`Exit::Cancelled`] with `tool: interrupted (...)` when a
/// signal cancelled the operation, else [`Exit::Operational`]).
pub fn run_interruptible(
    tool: &str,
    run: impl FnOnce(&Interrupt) -> anyhow::Result<Exit>,
) -> std::process::ExitCode {
    let interrupt = match Interrupt::install() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{tool}: error: installing signal handlers: {e}");
            return Exit::Operational.code();
        }
    };
    match run(&interrupt) {
        Ok(code) => code.code(),
        Err(e) if crate::is_broken_pipe(&e) => Exit::Ok.code(),
        Err(e) if interrupt.interrupted() => {
            eprintln!("{tool}: interrupted ({e:#})");
            Exit::Cancelled.code()
        }
        Err(e) => {
            eprintln!("{tool}: error: {e:#}");
            Exit::Operational.code()
        }
    }
}
