//! `troupe render`: print what each `template` task would write on one host, without
//! connecting to it, so an operator can read a node's manifest before touching it.
//! Values of `(secret)` variables are masked as in `troupe run`'s output: a preview
//! ends up in tickets and terminals' scrollback; `--show-secrets` is the deliberate
//! exception.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use indexmap::IndexSet;
use serde_json::Value;
use troupe_dsl::model::{Loop, Vars};

use super::LoadArgs;
use crate::executor::{lookup_host, search_dirs};
use crate::report::mask::Masker;
use crate::report::{ErrorInfo, show_loc};
use crate::scheduler::seed_secrets;
use crate::vars::{self, Shared};

/// Print what each template task would write on a host, without connecting.
///
/// Uses the host's variables as `troupe run` would (registered results are not
/// available offline: a `when` that needs one is reported and the template rendered
/// anyway). Exit code 0 when everything rendered, 1 on any error.
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub load: LoadArgs,

    /// The inventory host to render for.
    #[arg(long, value_name = "HOST")]
    pub host: String,

    /// Only the task with this name.
    #[arg(long, value_name = "NAME")]
    pub task: Option<String>,

    /// Extra variables, as for `troupe run`.
    #[arg(short = 'e', long = "extra-vars", value_name = "VARS")]
    pub extra_vars: Vec<String>,

    /// Print the values of `(secret)` variables instead of `********`.
    #[arg(long)]
    pub show_secrets: bool,
}

pub fn main(args: RenderArgs) -> ExitCode {
    let (inventory, playbook) = match args.load.load() {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let (extra, secret_vars) = match super::run::extra_vars_with_secrets(&args.extra_vars) {
        Ok(v) => v,
        Err(e) => return super::report(e),
    };
    let Some(host) = lookup_host(&inventory, &args.host) else {
        let known = inventory.hosts.keys().cloned().collect::<Vec<_>>().join(", ");
        return super::report(miette::miette!(
            code = "troupe::cli::unknown_host",
            help = format!("hosts of this inventory: {known}"),
            "no host `{}` in {}",
            args.host,
            inventory.path.display()
        ));
    };
    let shared = Shared::new(&inventory, extra, false);
    let secret_names: IndexSet<String> = inventory
        .secret_vars
        .iter()
        .chain(&playbook.secret_vars)
        .chain(&secret_vars)
        .cloned()
        .collect();
    let masker = Masker::new();
    if !args.show_secrets {
        seed_secrets(&masker, &secret_names, &shared, &playbook);
    }
    let mut masked = false;
    let mut stdout = std::io::stdout().lock();
    let mut rendered = 0;
    let mut errors = 0;
    let registered = Vars::new();
    for play in &playbook.plays {
        let play_hosts: Vec<String> = inventory
            .select(&play.hosts)
            .into_iter()
            .map(|h| h.name.clone())
            .collect();
        if !play_hosts.contains(&host.name) {
            continue;
        }
        for task in play.tasks.iter().chain(play.handlers.iter()) {
            if task.module != "template" || args.task.as_ref().is_some_and(|t| t != &task.name) {
                continue;
            }
            let dirs = search_dirs(play, task);
            let renderer = troupe_render::Renderer::new(dirs.iter().map(|d| d.join("templates")).collect());
            renderer.set_lookup_dirs(dirs.clone());
            // lookup('password') values, masked like secret vars below
            let looked_up: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
            if !args.show_secrets {
                let sink = looked_up.clone();
                renderer.on_secret(Arc::new(move |s: &str| {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(s.to_string())
                }));
            }
            let masker = &masker;
            let mut fail = |what: &dyn miette::Diagnostic| {
                errors += 1;
                eprintln!(
                    "error in task \"{}\" ({}):\n{}",
                    task.name,
                    show_loc(&task.loc),
                    ErrorInfo::from_diagnostic(what, masker).rendered
                );
            };
            let vars = vars::task_vars(&shared, &host, play, task, &registered, &play_hosts);
            let vars = match vars::resolve(&shared, &renderer, vars, &registered) {
                Ok(v) => v,
                Err(e) => {
                    fail(&e);
                    continue;
                }
            };
            if !args.show_secrets {
                // Templated secrets are known once rendered, as in `troupe run`.
                for name in &secret_names {
                    if let Some(v) = vars.get(name) {
                        masker.add_value(v);
                    }
                }
            }
            let ctx = shared.context(vars);
            let items: Vec<Option<Value>> = match &task.loop_ {
                None => vec![None],
                Some(Loop::Items(list)) => list
                    .iter()
                    .map(|i| renderer.render_value(i, &ctx).ok())
                    .map(Some)
                    .map(Option::flatten)
                    .collect(),
                Some(Loop::Expr(e)) => match renderer.eval(&e.src, &ctx) {
                    Ok(Value::Array(list)) => list.into_iter().map(Some).collect(),
                    Ok(_) => vec![],
                    Err(err) => {
                        fail(&err);
                        continue;
                    }
                },
            };
            for item in items {
                let mut c = ctx.clone();
                if let Some(item) = &item {
                    c.insert(task.loop_var.clone(), item.clone());
                }
                let mut note = String::new();
                if let Some(when) = &task.when {
                    match renderer.is_true(&when.src, &c) {
                        Ok(true) => {}
                        Ok(false) => note = format!(" (skipped on this host: `when` {} is false)", when.src),
                        Err(_) => {
                            note = format!(" (`when` {} needs run-time values; rendered anyway)", when.src)
                        }
                    }
                }
                let raw: serde_json::Map<String, Value> = task
                    .args
                    .iter()
                    .map(|(k, a)| (k.clone(), a.value.clone()))
                    .collect();
                let args_v = match renderer.render_value(&Value::Object(raw), &c) {
                    Ok(v) => v,
                    Err(e) => {
                        fail(&e);
                        continue;
                    }
                };
                let src = args_v
                    .get("src")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let dest = args_v
                    .get("dest")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                match renderer.render_file(&src, &c) {
                    Ok(text) => {
                        rendered += 1;
                        for secret in looked_up.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                            masker.add(&secret);
                        }
                        let header = format!(
                            "==> {dest} on {} [task \"{}\", {}]{note}",
                            host.name,
                            task.name,
                            show_loc(&task.loc)
                        );
                        let _ = writeln!(stdout, "{}", masker.mask(&header));
                        let shown = masker.mask(&text);
                        masked |= shown != text;
                        let text = shown;
                        let _ = stdout.write_all(text.as_bytes());
                        if !text.ends_with('\n') {
                            let _ = writeln!(stdout);
                        }
                    }
                    Err(e) => fail(&e),
                }
            }
        }
    }
    let _ = stdout.flush();
    if masked {
        eprintln!("note: values of (secret) variables are shown as ********; --show-secrets prints them");
    }
    if errors > 0 {
        return ExitCode::from(1);
    }
    if rendered == 0 {
        let which = args.task.map(|t| format!("named \"{t}\" ")).unwrap_or_default();
        eprintln!("error: no template task {which}runs on {}", host.name);
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
