//! Guest scenarios. Each is a function taking the run's JSON parameters; add a module and a
//! line in [`REGISTRY`] to add one.

mod conformance;
mod corrupt;
mod mount_options;
mod page_cache;
mod share;
pub mod util;
mod verity;

use crate::Ctx;

/// A guest scenario: reports checks through the context; an `Err` is reported as a failed
/// check named `scenario`.
pub type ScenarioFn = fn(&mut Ctx, &serde_json::Value) -> anyhow::Result<()>;

/// All guest scenarios by name (the `scenario` field of a planned run).
pub const REGISTRY: &[(&str, ScenarioFn)] = &[
    ("conformance", conformance::run),
    ("mount_options", mount_options::run),
    ("corrupt", corrupt::run),
    ("page_cache", page_cache::run),
    ("share", share::run),
    ("verity_eio", verity::run_eio),
];

/// Looks a scenario up by name.
pub fn find(name: &str) -> Option<ScenarioFn> {
    REGISTRY.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}
