//! `troupe check`: load and validate a playbook against an inventory, touching no host.

use std::process::ExitCode;

use super::LoadArgs;

/// Check a playbook and inventory without connecting to any host.
///
/// Reports every problem found (unknown modules and arguments, wrong types, undefined
/// handlers, roles and groups, expressions that do not parse...) with file, line and
/// column. Exit code 0 when clean, 1 with diagnostics.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub load: LoadArgs,
}

pub fn main(args: CheckArgs) -> ExitCode {
    match args.load.load() {
        Ok((inv, pb)) => {
            let tasks: usize = pb.plays.iter().map(|p| p.tasks.len() + p.handlers.len()).sum();
            println!(
                "{}: ok ({} plays, {} tasks and handlers, {} hosts in {})",
                super::display(&args.load.playbook),
                pb.plays.len(),
                tasks,
                inv.hosts.len(),
                super::display(&args.load.inventory)
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
