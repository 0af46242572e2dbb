//! `troupe run`: the engine's front door. Loads and checks everything, resolves
//! `--limit` and `-e`, then hands over to the scheduler and turns its summary into the
//! documented exit code.

use std::process::ExitCode;
use std::sync::Arc;

use indexmap::IndexSet;
use serde_json::Value;
use troupe_dsl::model::Vars;

use super::LoadArgs;
use crate::connection::ssh::HostKeyPolicy;
use crate::interrupt::Interrupt;
use crate::report::{OutputFormat, stdout_reporter};
use crate::scheduler::{self, RealConnector, RunOptions};

/// Run a playbook on the hosts of an inventory.
///
/// Every task checks the host first and changes only what differs; running the same
/// playbook twice reports nothing changed the second time. Hosts run in parallel
/// (`--forks` caps it), one SSH connection each for the whole run.
///
/// Exit codes: 0 success; 1 a task failed, a play was aborted (max-fail-percent) or the
/// playbook/inventory/--limit is invalid; 2 bad command line; 4 nothing failed but at
/// least one host was unreachable; 130 interrupted.
///
/// Ctrl-C or SIGTERM stops the run: no further task starts, commands running on the
/// hosts are sent TERM, running tasks get 10 s to end, and the recap is printed
/// (marked interrupted). A second signal exits at once.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub load: LoadArgs,

    /// Only report what would change; change nothing.
    #[arg(long)]
    pub check: bool,

    /// Show file changes as unified diffs (masked for no-log tasks).
    #[arg(long)]
    pub diff: bool,

    /// List hosts that skipped a task (by default only the recap counts them, and a
    /// task every host skipped prints nothing).
    #[arg(long)]
    pub show_skipped: bool,

    /// Only run on hosts matching this pattern (`podc01`, `etcd:!podc03`, `podc0*`).
    #[arg(long, value_name = "PATTERN")]
    pub limit: Option<String>,

    /// Only run tasks with one of these tags (comma separated; `always` tasks too).
    #[arg(long, value_delimiter = ',', value_name = "TAGS")]
    pub tags: Vec<String>,

    /// Skip tasks with one of these tags (comma separated).
    #[arg(long = "skip-tags", value_delimiter = ',', value_name = "TAGS")]
    pub skip_tags: Vec<String>,

    /// Extra variables, highest precedence: `-e key=value`, `-e @vars.kdl`, or
    /// `-e '{"key": [1, 2]}'` (repeatable).
    #[arg(short = 'e', long = "extra-vars", value_name = "VARS")]
    pub extra_vars: Vec<String>,

    /// Hosts worked on at the same time, and connections opened at once (default:
    /// every selected host).
    #[arg(short = 'f', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub forks: Option<u32>,

    /// Trust and record host keys that are not in known_hosts yet (a changed key is
    /// still refused).
    #[arg(long)]
    pub accept_new_host_keys: bool,

    /// Run notified handlers even on hosts where a later task failed.
    #[arg(long)]
    pub force_handlers: bool,

    /// Output format: human progress and recap, or one JSON object per line.
    #[arg(long, value_enum, default_value = "human")]
    pub output: OutputFormat,
}

/// Parse the `-e` values into one map, later ones winning, with the names marked
/// `(secret)` in `-e @file.kdl` files.
pub fn extra_vars_with_secrets(values: &[String]) -> Result<(Vars, IndexSet<String>), miette::Report> {
    let mut vars = Vars::new();
    let mut secrets = IndexSet::new();
    for raw in values {
        if let Some(path) = raw.strip_prefix('@') {
            let (file_vars, file_secrets) =
                troupe_dsl::load_vars_file_with_secrets(std::path::Path::new(path))?;
            vars.extend(file_vars);
            secrets.extend(file_secrets);
        } else if raw.trim_start().starts_with('{') {
            let value: Value = serde_json::from_str(raw).map_err(|e| {
                miette::miette!(code = "troupe::cli::extra_vars", "-e {raw}: not valid JSON: {e}")
            })?;
            let Value::Object(map) = value else {
                unreachable!("starts with a brace")
            };
            vars.extend(map);
        } else if let Some((k, v)) = raw.split_once('=') {
            let k = k.trim();
            if k.is_empty()
                || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || k.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(miette::miette!(
                    code = "troupe::cli::extra_vars",
                    help = "variable names are template identifiers: letters, digits and `_` (snake_case)",
                    "-e {raw}: `{k}` is not a valid variable name"
                ));
            }
            vars.insert(k.to_string(), Value::String(v.to_string()));
        } else {
            return Err(miette::miette!(
                code = "troupe::cli::extra_vars",
                help = "write `-e name=value`, `-e @file.kdl` or `-e '{{\"name\": \"value\"}}'`",
                "-e {raw}: expected key=value"
            ));
        }
    }
    Ok((vars, secrets))
}

pub fn main(args: RunArgs) -> ExitCode {
    let (inventory, playbook) = match args.load.load() {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let (extra, secret_vars) = match extra_vars_with_secrets(&args.extra_vars) {
        Ok(v) => v,
        Err(e) => return super::report(e),
    };
    let limit = match &args.limit {
        Some(raw) => match super::resolve_limit(&inventory, raw) {
            Ok(set) => Some(set),
            Err(msg) => {
                return super::report(miette::miette!(
                    code = "troupe::cli::limit",
                    help = "check the name against the inventory; globs like `podc0*` work",
                    "{msg}"
                ));
            }
        },
        None => None,
    };
    let opts = RunOptions {
        check: args.check,
        diff: args.diff,
        forks: args.forks.map_or(0, |n| n as usize),
        force_handlers: args.force_handlers,
        limit,
        tags: args.tags,
        skip_tags: args.skip_tags,
        extra_vars: extra,
        prefetch: true,
        secret_vars,
        interrupt: Interrupt::default(),
    };
    let host_keys = if args.accept_new_host_keys {
        HostKeyPolicy::AcceptNew
    } else {
        HostKeyPolicy::Strict
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let reporter: Arc<dyn crate::report::Reporter> =
        Arc::from(stdout_reporter(args.output, args.diff, args.show_skipped));
    let summary = runtime.block_on(async {
        if let Err(e) = opts.interrupt.listen() {
            eprintln!("warning: cannot listen for Ctrl-C and SIGTERM: {e}");
        }
        scheduler::run(
            Arc::new(inventory),
            Arc::new(playbook),
            opts,
            Arc::new(RealConnector::new(host_keys)),
            reporter,
        )
        .await
    });
    ExitCode::from(summary.exit_code() as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_vars_forms() {
        let (v, _) =
            extra_vars_with_secrets(&["a=1".into(), r#"{"b": [1, 2]}"#.into(), "a=2".into()]).unwrap();
        assert_eq!(v["a"], "2");
        assert_eq!(v["b"], serde_json::json!([1, 2]));
        assert!(extra_vars_with_secrets(&["no-equals".into()]).is_err());
        assert!(extra_vars_with_secrets(&["bad-name=1".into()]).is_err());
    }
}
