//! The command line: one file per subcommand, clap derive, the doc comments below are
//! the `--help` text. Everything (playbook, inventory, host patterns, extra vars) is
//! loaded and checked here before a single connection is opened.

mod check;
mod doc;
mod render;
mod run;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use troupe_dsl::model::{HostPattern, Inventory, PatternTerm, Playbook};

/// troupe: run KDL playbooks over SSH, idempotently.
///
/// Exit codes: 0 success; 1 a task failed, a play was aborted, or the playbook,
/// inventory or a pattern is invalid; 2 bad command line; 4 nothing failed but at least
/// one host was unreachable.
#[derive(Debug, Parser)]
#[command(name = "troupe", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Check(check::CheckArgs),
    Run(run::RunArgs),
    Render(render::RenderArgs),
    #[command(hide = true)]
    Doc(doc::DocArgs),
}

/// Options shared by every subcommand that loads a playbook.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// The playbook (a .kdl file).
    pub playbook: PathBuf,

    /// The inventory (a .kdl file).
    #[arg(short = 'i', long = "inventory", value_name = "INVENTORY")]
    pub inventory: PathBuf,

    /// Extra folder to look for roles in, after `roles/` next to the playbook
    /// (repeatable).
    #[arg(long = "roles-path", value_name = "DIR")]
    pub roles_path: Vec<PathBuf>,
}

impl LoadArgs {
    /// Load and check both files; diagnostics are printed to stderr.
    pub fn load(&self) -> Result<(Inventory, Playbook), ExitCode> {
        self.try_load().map_err(report)
    }

    /// Load and check both files against the real module registry, returning the first
    /// diagnostic instead of printing it (what `troupe check` runs, usable from tests).
    pub fn try_load(&self) -> miette::Result<(Inventory, Playbook)> {
        let inventory = troupe_dsl::load_inventory(&self.inventory)?;
        // `..Default::default()` keeps this compiling when the DSL adds options.
        #[allow(clippy::needless_update)]
        let opts = troupe_dsl::LoadOptions {
            roles_path: self.roles_path.clone(),
            ..Default::default()
        };
        let specs = crate::modules::specs();
        let playbook = troupe_dsl::load_playbook(&self.playbook, &specs, &opts)?;
        troupe_dsl::check_against_inventory(&playbook, &inventory)?;
        crate::preflight::check(&playbook)?;
        Ok((inventory, playbook))
    }
}

/// Print a diagnostic to stderr and give the "invalid" exit code.
pub fn report(err: miette::Report) -> ExitCode {
    eprintln!("{err:?}");
    ExitCode::from(crate::scheduler::exit::FAILED as u8)
}

/// Resolve `--limit` to host names, refusing names that match nothing (a typo in
/// `--limit` must not silently run on no host, or on the wrong ones).
/// The pattern is parsed by the DSL's own [`HostPattern::parse`], the parser of play
/// `hosts=`, so `--limit` accepts exactly what a playbook does.
pub fn resolve_limit(inv: &Inventory, raw: &str) -> Result<HashSet<String>, String> {
    let pattern = HostPattern::parse(raw).map_err(|e| format!("--limit: {e}"))?;
    for term in &pattern.terms {
        let name = match term {
            PatternTerm::Include(n) | PatternTerm::Intersect(n) | PatternTerm::Exclude(n) => n,
        };
        let single = HostPattern {
            raw: name.clone(),
            terms: vec![PatternTerm::Include(name.clone())],
        };
        if name != "all" && !inv.groups.contains_key(name) && inv.select(&single).is_empty() {
            return Err(format!(
                "--limit: `{name}` matches no host or group of {}",
                inv.path.display()
            ));
        }
    }
    Ok(inv.select(&pattern).into_iter().map(|h| h.name.clone()).collect())
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::main(args),
        Command::Run(args) => run::main(args),
        Command::Render(args) => render::main(args),
        Command::Doc(args) => doc::main(args),
    }
}

pub(crate) fn display(path: &Path) -> String {
    path.display().to_string()
}
