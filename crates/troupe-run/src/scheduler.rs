//! Fans plays out over hosts: selects each play's hosts (`--limit` applied), splits
//! them into `serial` batches, runs each task on every live host of the batch in
//! parallel (at most `--forks` at once), then the notified handlers. A failed or
//! unreachable host stops only itself; `max-fail-percent` (or a batch where every host
//! failed) aborts the run. Hosts are never serialized behind one another and each
//! keeps one connection for the whole run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use indexmap::{IndexMap, IndexSet};
use tokio::sync::Semaphore;
use troupe_dsl::model::{ConnKind, Host, Inventory, Loop, Play, Playbook, Serial, Task, Vars};

use crate::connection::local::LocalConnection;
use crate::connection::ssh::{HostKeyPolicy, SshConnection};
use crate::connection::{ConnError, Connection};
use crate::executor::{self, Connector, Env, Pool, TaskInput};
use crate::interrupt::Interrupt;
use crate::report::mask::{Masker, Masking};
use crate::report::{Event, Reporter, Stats, Status};
use crate::statcache::CachedConn;
use crate::vars::Shared;

/// What the command line decided.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub check: bool,
    pub diff: bool,
    /// Hosts at once; 0 means all of them.
    pub forks: usize,
    pub force_handlers: bool,
    /// Host names allowed by `--limit` (already resolved against the inventory).
    pub limit: Option<HashSet<String>>,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    pub extra_vars: Vars,
    /// Fetch the stats a batch's checks will need in one round trip per host
    /// ([`crate::statcache`]); `troupe run` turns it on.
    pub prefetch: bool,
    /// Names of extra vars marked `(secret)` (in `-e @file.kdl` files).
    pub secret_vars: IndexSet<String>,
    /// Ctrl-C / SIGTERM (`troupe run` listens for them): see [`crate::interrupt`].
    pub interrupt: Interrupt,
}

/// How the run ended, for the exit code.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub stats: IndexMap<String, Stats>,
    /// A play was aborted (max-fail-percent, or a whole batch failed).
    pub aborted: bool,
    /// The signal that stopped the run, if one did.
    pub interrupted: Option<&'static str>,
}

/// Exit codes of `troupe run` (documented in `--help` and docs/cli.md).
pub mod exit {
    pub const OK: i32 = 0;
    /// A task failed, a play was aborted, or the playbook/inventory is invalid.
    pub const FAILED: i32 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: i32 = 2;
    /// Nothing failed, but at least one host could not be reached.
    pub const UNREACHABLE: i32 = 4;
    /// Interrupted by SIGINT or SIGTERM (whatever had failed before).
    pub const INTERRUPTED: i32 = crate::interrupt::EXIT_CODE;
}

impl RunSummary {
    pub fn exit_code(&self) -> i32 {
        if self.interrupted.is_some() {
            exit::INTERRUPTED
        } else if self.aborted || self.stats.values().any(|s| s.failed > 0) {
            exit::FAILED
        } else if self.stats.values().any(|s| s.unreachable > 0) {
            exit::UNREACHABLE
        } else {
            exit::OK
        }
    }
}

/// The real connector: SSH, or a local process for `connection=local` hosts.
pub struct RealConnector {
    pub host_keys: HostKeyPolicy,
    controller: Arc<dyn Connection>,
}

impl RealConnector {
    pub fn new(host_keys: HostKeyPolicy) -> RealConnector {
        RealConnector {
            host_keys,
            controller: Arc::new(LocalConnection::new("localhost")),
        }
    }
}

#[async_trait::async_trait]
impl Connector for RealConnector {
    async fn connect(&self, host: &Host) -> Result<Arc<dyn Connection>, ConnError> {
        match host.conn.connection {
            Some(ConnKind::Local) => Ok(Arc::new(LocalConnection::new(&host.name))),
            _ => Ok(Arc::new(SshConnection::connect_host(host, self.host_keys).await?)),
        }
    }

    fn controller(&self) -> Arc<dyn Connection> {
        self.controller.clone()
    }
}

#[derive(Default, Clone)]
struct HostState {
    registered: Arc<Vars>,
    stats: Stats,
    failed: bool,
    unreachable: bool,
    notified: HashSet<String>,
}

impl HostState {
    fn live(&self) -> bool {
        !self.failed && !self.unreachable
    }
}

/// Whether `--tags`/`--skip-tags` let `task` run. `always` runs unless skipped by
/// name; `never` runs only when asked for by name.
pub fn tags_allow(task: &Task, tags: &[String], skip: &[String]) -> bool {
    let has = |t: &str| task.tags.iter().any(|x| x == t);
    if task.tags.iter().any(|t| skip.contains(t)) {
        return false;
    }
    if tags.is_empty() {
        return !has("never");
    }
    has("always") || task.tags.iter().any(|t| tags.contains(t))
}

struct Scheduler {
    env: Arc<Env>,
    inventory: Arc<Inventory>,
    playbook: Arc<Playbook>,
    opts: RunOptions,
    reporter: Arc<dyn Reporter>,
    hosts: IndexMap<String, HostState>,
    running: Arc<Semaphore>,
    /// Batched-stat caches of the current batch's hosts.
    caches: HashMap<String, Arc<CachedConn>>,
}

/// Run the whole playbook. Everything must already be loaded and checked.
pub async fn run(
    inventory: Arc<Inventory>,
    playbook: Arc<Playbook>,
    opts: RunOptions,
    connector: Arc<dyn Connector>,
    reporter: Arc<dyn Reporter>,
) -> RunSummary {
    let started = Instant::now();
    // 0 = every host of the inventory at once (the default).
    let forks = if opts.forks == 0 {
        inventory.hosts.len().max(1)
    } else {
        opts.forks
    };
    let shared = Shared::new(&inventory, opts.extra_vars.clone(), opts.check);
    let pool = Pool::new(connector, inventory.clone(), forks);
    // Secret values are masked in every event, whatever reporter is behind.
    let secret_names: IndexSet<String> = inventory
        .secret_vars
        .iter()
        .chain(&playbook.secret_vars)
        .chain(&opts.secret_vars)
        .cloned()
        .collect();
    let masker = Arc::new(Masker::new());
    seed_secrets(&masker, &secret_names, &shared, &playbook);
    let reporter: Arc<dyn Reporter> = Arc::new(Masking::new(reporter, masker.clone()));
    let mut env = Env::new(shared, pool, opts.check, opts.diff);
    env.masker = masker;
    env.secret_names = secret_names;
    env.interrupt = opts.interrupt.clone();
    let env = Arc::new(env);
    // On an interrupt, every connection TERMs what it runs on its host at once, while
    // the tasks that ran those commands end (or are abandoned after the grace time).
    let mut stopper = {
        let env = env.clone();
        tokio::spawn(async move {
            env.interrupt.wait().await;
            env.pool.interrupt_all().await;
        })
    };
    let mut s = Scheduler {
        env,
        inventory,
        playbook,
        opts,
        reporter,
        hosts: IndexMap::new(),
        running: Arc::new(Semaphore::new(forks)),
        caches: HashMap::new(),
    };
    s.reporter.event(&Event::RunStart {
        playbook: s.playbook.path.display().to_string(),
        check: s.opts.check,
    });
    let mut aborted = false;
    for play_idx in 0..s.playbook.plays.len() {
        if s.env.interrupt.is_set() {
            break;
        }
        if !s.run_play(play_idx).await {
            aborted = !s.env.interrupt.is_set();
            break;
        }
    }
    let interrupted = s.env.interrupt.signal();
    if interrupted.is_some() {
        // The TERMs must reach the hosts before the connections close.
        let _ = tokio::time::timeout(crate::interrupt::GRACE, &mut stopper).await;
    }
    stopper.abort();
    s.env.pool.close_all().await;
    let stats: IndexMap<String, Stats> = s.hosts.iter().map(|(h, st)| (h.clone(), st.stats)).collect();
    s.reporter.event(&Event::Recap {
        hosts: stats.clone(),
        elapsed: started.elapsed(),
        interrupted: interrupted.is_some(),
        signal: interrupted.map(str::to_string),
    });
    RunSummary {
        stats,
        aborted,
        interrupted,
    }
}

/// Secret values known before any task runs: every host's inventory vars, play and
/// task vars, role defaults and params, extra vars. Templated values are added once
/// rendered, when a task resolves its vars ([`executor`]).
pub(crate) fn seed_secrets(masker: &Masker, names: &IndexSet<String>, shared: &Shared, playbook: &Playbook) {
    if names.is_empty() {
        return;
    }
    let mut sources: Vec<&Vars> = vec![&shared.extra];
    sources.extend(shared.hostvars.values());
    for play in &playbook.plays {
        sources.push(&play.vars);
        for task in play.tasks.iter().chain(&play.handlers) {
            sources.push(&task.vars);
            if let Some(role) = &task.role {
                sources.push(&role.defaults);
                sources.push(&role.vars);
            }
        }
    }
    for vars in sources {
        for name in names {
            if let Some(v) = vars.get(name) {
                masker.add_value(v);
            }
        }
    }
}

/// Split hosts into `serial` batches.
pub fn batches(hosts: &[String], serial: Option<Serial>) -> Vec<Vec<String>> {
    let size = match serial {
        None => hosts.len(),
        Some(Serial::Count(n)) => n,
        Some(Serial::Percent(p)) => (hosts.len() * p as usize).div_ceil(100),
    }
    .max(1);
    hosts.chunks(size).map(|c| c.to_vec()).collect()
}

impl Scheduler {
    fn play(&self, idx: usize) -> &Play {
        &self.playbook.plays[idx]
    }

    /// Hosts of a play: the pattern, `--limit`, and not failed earlier in the run.
    fn play_hosts(&self, play: &Play) -> Vec<String> {
        self.inventory
            .select(&play.hosts)
            .into_iter()
            .map(|h| h.name.clone())
            .filter(|h| self.opts.limit.as_ref().is_none_or(|l| l.contains(h)))
            .filter(|h| self.hosts.get(h).is_none_or(HostState::live))
            .collect()
    }

    /// Returns false when the run must stop.
    async fn run_play(&mut self, play_idx: usize) -> bool {
        let play = self.play(play_idx).clone();
        let hosts = self.play_hosts(&play);
        for h in &hosts {
            self.hosts.entry(h.clone()).or_default();
        }
        self.reporter.event(&Event::PlayStart {
            play: play.name.clone(),
            hosts: hosts.clone(),
        });
        if hosts.is_empty() {
            return true;
        }
        // Open every connection of the play now, in parallel; tasks wait for their own.
        for h in &hosts {
            let env = self.env.clone();
            let h = h.clone();
            tokio::spawn(async move {
                let _ = env.pool.get(&h).await;
            });
        }
        let play_hosts = Arc::new(hosts.clone());
        let batches = batches(&hosts, play.serial);
        let batch_count = batches.len();
        for (n, batch) in batches.into_iter().enumerate() {
            if self.env.interrupt.is_set() {
                return false;
            }
            if play.serial.is_some() {
                self.reporter.event(&Event::BatchStart {
                    play: play.name.clone(),
                    batch: n + 1,
                    hosts: batch.clone(),
                });
            }
            for h in &batch {
                if let Some(st) = self.hosts.get_mut(h) {
                    st.notified.clear();
                }
            }
            self.caches.clear();
            if self.opts.prefetch {
                self.prefetch(play_idx, &batch, &play_hosts).await;
            }
            let mut abort: Option<String> = None;
            for task_idx in 0..play.tasks.len() {
                if self.env.interrupt.is_set() {
                    break;
                }
                let task = &play.tasks[task_idx];
                if !tags_allow(task, &self.opts.tags, &self.opts.skip_tags) {
                    continue;
                }
                let live: Vec<String> = batch.iter().filter(|h| self.hosts[*h].live()).cloned().collect();
                if live.is_empty() {
                    break;
                }
                self.run_step(play_idx, task_idx, false, live, &play_hosts).await;
                if task.delegate_to.is_some() {
                    // It may have changed another host of the batch behind its cache.
                    self.caches.values().for_each(|c| c.invalidate());
                }
                if let Some(reason) = self.over_fail_limit(&play, &batch) {
                    abort = Some(reason);
                    break;
                }
            }
            // Interrupted: handlers are new work too.
            if self.env.interrupt.is_set() {
                return false;
            }
            self.run_handlers(play_idx, &batch, &play_hosts).await;
            let all_failed = batch.iter().all(|h| !self.hosts[h].live());
            if abort.is_none() && all_failed && (n + 1 < batch_count || play.max_fail_percent.is_some()) {
                abort = Some(format!("every host of batch {} failed", n + 1));
            }
            if let Some(reason) = abort {
                self.reporter.event(&Event::PlayAbort {
                    play: play.name.clone(),
                    reason,
                });
                return false;
            }
        }
        true
    }

    /// Work out, per live host of the batch, the paths its tasks will stat, and wrap its
    /// connection in a cache that fetches them in one round trip. Arguments that cannot
    /// be rendered yet (they need a registered result) are simply not predicted.
    async fn prefetch(&mut self, play_idx: usize, batch: &[String], play_hosts: &Arc<Vec<String>>) {
        let play = &self.playbook.plays[play_idx];
        for host_name in batch {
            let Some(state) = self.hosts.get(host_name).filter(|s| s.live()) else {
                continue;
            };
            let Some(host) = executor::lookup_host(&self.inventory, host_name) else {
                continue;
            };
            let Ok(conn) = self.env.pool.get(host_name).await else {
                continue;
            };
            let mut plan = Vec::new();
            for (idx, task) in play.tasks.iter().enumerate() {
                let names = crate::statcache::stat_args(&task.module);
                if names.is_empty()
                    || task.delegate_to.is_some()
                    || !tags_allow(task, &self.opts.tags, &self.opts.skip_tags)
                {
                    continue;
                }
                let renderer = self.env.renderer(&executor::search_dirs(play, task));
                let vars = crate::vars::task_vars(
                    &self.env.shared,
                    &host,
                    play,
                    task,
                    &state.registered,
                    play_hosts,
                );
                let Ok(vars) = crate::vars::resolve(&self.env.shared, &renderer, vars, &state.registered)
                else {
                    continue;
                };
                let ctx = self.env.shared.context(vars);
                let items: Vec<Option<serde_json::Value>> = match &task.loop_ {
                    None => vec![None],
                    Some(Loop::Items(list)) => list
                        .iter()
                        .filter_map(|i| renderer.render_value(i, &ctx).ok())
                        .map(Some)
                        .collect(),
                    Some(Loop::Expr(e)) => match renderer.eval(&e.src, &ctx) {
                        Ok(serde_json::Value::Array(list)) => list.into_iter().map(Some).collect(),
                        _ => continue,
                    },
                };
                for item in items {
                    let mut c = ctx.clone();
                    if let Some(item) = item {
                        c.insert(task.loop_var.clone(), item);
                    }
                    for name in &names {
                        if let Some(arg) = task.args.get(*name) {
                            if let Ok(serde_json::Value::String(path)) = renderer.render_value(&arg.value, &c)
                            {
                                plan.push((idx, path));
                            }
                        }
                    }
                }
            }
            if !plan.is_empty() {
                self.caches
                    .insert(host_name.clone(), Arc::new(CachedConn::new(conn, plan)));
            }
        }
    }

    fn over_fail_limit(&self, play: &Play, batch: &[String]) -> Option<String> {
        let max = play.max_fail_percent?;
        let failed = batch.iter().filter(|h| !self.hosts[*h].live()).count();
        let percent = failed * 100 / batch.len().max(1);
        (percent > max as usize).then(|| {
            format!(
                "{failed} of {} hosts failed ({percent}%), more than max-fail-percent={max}",
                batch.len()
            )
        })
    }

    async fn run_handlers(&mut self, play_idx: usize, batch: &[String], play_hosts: &Arc<Vec<String>>) {
        let handler_count = self.play(play_idx).handlers.len();
        for idx in 0..handler_count {
            if self.env.interrupt.is_set() {
                return;
            }
            let name = self.play(play_idx).handlers[idx].name.clone();
            let targets: Vec<String> = batch
                .iter()
                .filter(|h| {
                    let st = &self.hosts[*h];
                    st.notified.contains(&name) && !st.unreachable && (!st.failed || self.opts.force_handlers)
                })
                .cloned()
                .collect();
            if !targets.is_empty() {
                self.run_step(play_idx, idx, true, targets, play_hosts).await;
            }
        }
    }

    /// One task (or handler) on `hosts`, in parallel; results are applied after all
    /// hosts finished, so every host of a step sees the same state.
    async fn run_step(
        &mut self,
        play_idx: usize,
        task_idx: usize,
        handler: bool,
        hosts: Vec<String>,
        play_hosts: &Arc<Vec<String>>,
    ) {
        let play = &self.playbook.plays[play_idx];
        let task = if handler {
            &play.handlers[task_idx]
        } else {
            &play.tasks[task_idx]
        };
        let run_once = task.run_once;
        let reporting: Vec<String> = if run_once {
            hosts[..1].to_vec()
        } else {
            hosts.clone()
        };
        self.reporter.event(&Event::TaskStart {
            play: play.name.clone(),
            task: task.name.clone(),
            loc: crate::report::show_loc(&task.loc),
            handler,
            hosts: reporting.clone(),
        });
        let mut set = tokio::task::JoinSet::new();
        // Which host each task runs for: a task that panics loses its output, not its
        // host.
        let mut task_hosts: HashMap<tokio::task::Id, String> = HashMap::new();
        for host_name in reporting {
            let Some(host) = executor::lookup_host(&self.inventory, &host_name) else {
                continue;
            };
            let registered = self.hosts[&host_name].registered.clone();
            let env = self.env.clone();
            let playbook = self.playbook.clone();
            let reporter = self.reporter.clone();
            let running = self.running.clone();
            let play_hosts = play_hosts.clone();
            let cache = if handler {
                None
            } else {
                self.caches.get(&host_name).cloned()
            };
            let name = host_name.clone();
            let handle = set.spawn(async move {
                let _permit = running.acquire_owned().await.expect("never closed");
                let play = &playbook.plays[play_idx];
                let task = if handler {
                    &play.handlers[task_idx]
                } else {
                    &play.tasks[task_idx]
                };
                // A task running when the run is interrupted gets the grace time to
                // end (its commands were sent TERM), then it is abandoned.
                let abandon = async {
                    let signal = env.interrupt.wait().await;
                    tokio::time::sleep(crate::interrupt::GRACE).await;
                    signal
                };
                let mut out = tokio::select! {
                    out = executor::execute(
                        &env,
                        TaskInput {
                            play,
                            task,
                            host: &host,
                            registered: &registered,
                            play_hosts: &play_hosts,
                            cache: cache.as_ref().map(|c| (c, task_idx)),
                        },
                    ) => out,
                    signal = abandon => executor::TaskOutput::abandoned(play, task, &host.name, signal),
                };
                if let Some(signal) = env.interrupt.signal()
                    && out.result.status == Status::Failed
                {
                    let note = format!("interrupted by {signal}");
                    out.result.msg = Some(match out.result.msg.take() {
                        Some(m) if !m.contains(&note) => format!("{m}; {note}"),
                        Some(m) => m,
                        None => note,
                    });
                }
                reporter.event(&Event::HostResult(out.result.clone()));
                (host.name.clone(), out)
            });
            task_hosts.insert(handle.id(), name);
        }
        let mut outputs = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(out) => outputs.push(out),
                Err(e) => {
                    // A panic is a bug in troupe: the run goes on, but the host counts
                    // as failed there, so the recap and the exit code tell the truth.
                    let Some(host_name) = task_hosts.get(&e.id()).cloned() else {
                        continue;
                    };
                    let detail = panic_detail(e);
                    let out = executor::TaskOutput::panicked(play, task, &host_name, &detail);
                    self.reporter.event(&Event::HostResult(out.result.clone()));
                    outputs.push((host_name, out));
                }
            }
        }
        let notify = task.notify.clone();
        for (host_name, out) in outputs {
            let targets: Vec<String> = if run_once {
                hosts.clone()
            } else {
                vec![host_name.clone()]
            };
            for (i, target) in targets.iter().enumerate() {
                let st = self.hosts.entry(target.clone()).or_default();
                if i == 0 {
                    st.stats.count(out.result.status, out.result.ignored);
                    if out.unreachable {
                        st.unreachable = true;
                    } else if out.failed {
                        st.failed = true;
                    }
                }
                if let Some((name, value)) = &out.register {
                    Arc::make_mut(&mut st.registered).insert(name.clone(), value.clone());
                }
                if out.changed && out.result.status == Status::Changed {
                    st.notified.extend(notify.iter().cloned());
                }
            }
        }
    }
}

/// The message a task panicked with (or why it ended without an output).
fn panic_detail(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::modules::testing::FakeHost;
    use crate::report::Recorder;

    struct Fakes {
        hosts: HashMap<String, FakeHost>,
        down: HashSet<String>,
        controller: FakeHost,
    }

    #[async_trait::async_trait]
    impl Connector for Fakes {
        async fn connect(&self, host: &Host) -> Result<Arc<dyn Connection>, ConnError> {
            if self.down.contains(&host.name) {
                return Err(ConnError::Unreachable {
                    host: host.name.clone(),
                    address: "127.0.9.9".into(),
                    detail: "connection refused".into(),
                });
            }
            Ok(self.hosts[&host.name].conn())
        }
        fn controller(&self) -> Arc<dyn Connection> {
            self.controller.conn()
        }
    }

    const INVENTORY: &str = r#"
group etcd {
    host podc01 address="127.0.9.1"
    host podc02 address="127.0.9.2"
    host podc03 address="127.0.9.3"
}
"#;

    struct Harness {
        fakes: Arc<Fakes>,
        inventory: Arc<Inventory>,
        playbook: Arc<Playbook>,
    }

    impl Harness {
        fn new(playbook: &str) -> Harness {
            let inventory = troupe_dsl::parse_inventory_str(INVENTORY, "/t/inventory.kdl").unwrap();
            let specs = crate::modules::specs();
            let playbook = troupe_dsl::parse_playbook_str(
                playbook,
                "/t/play.kdl",
                &specs,
                &troupe_dsl::LoadOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{e:?}"));
            let hosts = inventory
                .hosts
                .keys()
                .map(|h| (h.clone(), FakeHost::named(h)))
                .collect();
            Harness {
                fakes: Arc::new(Fakes {
                    hosts,
                    down: HashSet::new(),
                    controller: FakeHost::named("localhost"),
                }),
                inventory: Arc::new(inventory),
                playbook: Arc::new(playbook),
            }
        }

        fn host(&self, name: &str) -> &FakeHost {
            &self.fakes.hosts[name]
        }

        fn down(&mut self, name: &str) {
            Arc::get_mut(&mut self.fakes).unwrap().down.insert(name.into());
        }

        async fn run(&self, opts: RunOptions) -> (RunSummary, Arc<Recorder>) {
            let rec = Arc::new(Recorder::default());
            let opts = RunOptions {
                forks: if opts.forks == 0 { 8 } else { opts.forks },
                ..opts
            };
            let summary = run(
                self.inventory.clone(),
                self.playbook.clone(),
                opts,
                self.fakes.clone(),
                rec.clone(),
            )
            .await;
            (summary, rec)
        }
    }

    fn statuses(rec: &Recorder, task: &str) -> Vec<(String, Status)> {
        let mut v: Vec<(String, Status)> = rec
            .results()
            .into_iter()
            .filter(|r| r.task == task)
            .map(|r| (r.host, r.status))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[tokio::test]
    async fn second_run_changes_nothing_and_handlers_follow_changes() {
        let h = Harness::new(
            r#"play "p" hosts=all {
    task "conf" notify="reload" { copy content="x={{ inventory_hostname }}\n" dest="/etc/app.conf" }
    task "again" notify="reload" { copy content="y\n" dest="/etc/app2.conf" }
    handler "reload" { command "app reload" }
}"#,
        );
        let (summary, rec) = h.run(RunOptions::default()).await;
        assert_eq!(summary.exit_code(), 0);
        assert_eq!(
            h.host("podc02").file("/etc/app.conf").unwrap().content,
            b"x=podc02\n"
        );
        assert_eq!(statuses(&rec, "reload").len(), 3);
        assert_eq!(
            h.host("podc01").commands(),
            ["app reload"],
            "one handler run for two notifications"
        );

        h.host("podc03").put_file("/etc/app.conf", b"drifted\n");
        let (summary, rec) = h.run(RunOptions::default()).await;
        assert_eq!(summary.stats["podc01"].changed, 0);
        assert_eq!(summary.stats["podc03"].changed, 2, "conf + handler");
        assert_eq!(
            statuses(&rec, "reload"),
            [("podc03".to_string(), Status::Changed)]
        );
    }

    /// Interrupted before the first task: nothing runs, the recap says so, exit 130.
    #[tokio::test]
    async fn an_interrupted_run_starts_no_task_and_ends_with_an_interrupted_recap() {
        let h = Harness::new(
            r#"play "p" hosts=all {
    task "conf" { copy content="x\n" dest="/etc/app.conf" }
}"#,
        );
        let interrupt = Interrupt::default();
        interrupt.trigger("SIGINT");
        let (summary, rec) = h
            .run(RunOptions {
                interrupt,
                ..RunOptions::default()
            })
            .await;
        assert_eq!(summary.exit_code(), 130);
        assert_eq!(summary.interrupted, Some("SIGINT"));
        assert!(rec.results().is_empty());
        assert!(h.host("podc01").file("/etc/app.conf").is_none());
        let events = rec.0.lock().unwrap();
        assert!(matches!(
            events.last(),
            Some(Event::Recap { interrupted: true, signal: Some(s), .. }) if s == "SIGINT"
        ));
    }

    #[tokio::test]
    async fn check_mode_writes_nothing_and_says_would_change() {
        let h = Harness::new(
            r#"play "p" hosts=all {
    task "dir" { file "/srv/x" state="directory" }
    task "conf" { copy content="x\n" dest="/srv/x/app.conf" }
}"#,
        );
        let (summary, rec) = h
            .run(RunOptions {
                check: true,
                diff: true,
                ..RunOptions::default()
            })
            .await;
        assert_eq!(summary.exit_code(), 0);
        for host in ["podc01", "podc02", "podc03"] {
            assert!(
                h.host(host).commands().is_empty(),
                "{host} ran commands in --check"
            );
            assert!(h.host(host).file("/srv/x/app.conf").is_none());
        }
        let conf = rec.results().into_iter().find(|r| r.task == "conf").unwrap();
        assert!(conf.check_mode);
        assert_eq!(conf.diffs.len(), 1);
        assert!(conf.diffs[0].diff.contains("+x"), "{}", conf.diffs[0].diff);
    }

    #[tokio::test]
    async fn read_only_commands_run_in_check_mode() {
        let h = Harness::new(
            r#"play "p" hosts=podc01 {
    task "probe" register="who" changed-when="false" { command "uname -n" }
    task "use" { copy content="{{ who.stdout }}" dest="/t/who" }
    task "change" { command "reboot" }
}"#,
        );
        h.host("podc01").answer("uname", 0, "podc01\n", "");
        let (summary, rec) = h
            .run(RunOptions {
                check: true,
                ..RunOptions::default()
            })
            .await;
        assert_eq!(summary.exit_code(), 0, "{:?}", rec.results());
        assert_eq!(
            h.host("podc01").commands(),
            ["uname -n"],
            "only the read-only command ran"
        );
        assert!(h.host("podc01").file("/t/who").is_none());
    }

    #[tokio::test]
    async fn a_failed_host_stops_alone_and_reports_stderr() {
        let h = Harness::new(
            r#"play "p" hosts=all {
    task "probe" { command "probe" }
    task "after" { command "after" }
}"#,
        );
        h.host("podc02").answer("probe", 2, "", "no such device\n");
        let (summary, rec) = h.run(RunOptions::default()).await;
        assert_eq!(summary.exit_code(), exit::FAILED);
        assert_eq!(h.host("podc02").commands(), ["probe"]);
        assert_eq!(h.host("podc01").commands(), ["probe", "after"]);
        let failed = rec
            .results()
            .into_iter()
            .find(|r| r.status == Status::Failed)
            .unwrap();
        let err = failed.error.unwrap();
        assert!(
            err.message.contains("exited with code 2") && err.message.contains("no such device"),
            "{err:?}"
        );
    }

    /// Regression (issue 11.6): a task that panicked was dropped from the stats, so
    /// the run could exit 0 although the task never ran to the end on that host.
    #[tokio::test]
    async fn a_panicking_task_fails_its_host_and_the_run() {
        let h = Harness::new(
            r#"play "p" hosts=all {
    task "probe" register="probed" { command "probe" }
    task "after" { command "after" }
}"#,
        );
        h.host("podc02").panic_on("probe");
        let (summary, rec) = h.run(RunOptions::default()).await;
        assert_eq!(summary.exit_code(), exit::FAILED, "{:?}", summary.stats);
        assert_eq!(
            summary.stats["podc02"],
            Stats {
                failed: 1,
                ..Stats::default()
            }
        );
        assert_eq!(summary.stats["podc01"].changed, 2);
        assert_eq!(h.host("podc02").commands(), ["probe"], "the failed host stops");
        assert_eq!(h.host("podc03").commands(), ["probe", "after"]);
        let failed = rec
            .results()
            .into_iter()
            .find(|r| r.host == "podc02")
            .expect("the panicked task is reported");
        assert_eq!((failed.task.as_str(), failed.status), ("probe", Status::Failed));
        let err = failed.error.unwrap();
        assert_eq!(err.code.as_deref(), Some("troupe::internal::panic"));
        assert!(
            err.message.contains("panicked on podc02") && err.message.contains("fake panic on `probe`"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn unreachable_host_is_counted_apart_and_exits_4() {
        let mut h = Harness::new(r#"play "p" hosts=all { task "t" { command "true" } }"#);
        h.down("podc03");
        let (summary, rec) = h.run(RunOptions::default()).await;
        assert_eq!(summary.exit_code(), exit::UNREACHABLE);
        assert_eq!(summary.stats["podc03"].unreachable, 1);
        assert_eq!(summary.stats["podc01"].changed, 1);
        let r = rec.results().into_iter().find(|r| r.host == "podc03").unwrap();
        assert_eq!(
            r.error.unwrap().code.as_deref(),
            Some("troupe::conn::unreachable")
        );
    }

    #[tokio::test]
    async fn retries_until_and_registered_loops() {
        let h = Harness::new(
            r#"play "p" hosts=podc01 {
    task "poll" register="poll" retries=2 delay="1ms" until="poll.rc == 0" { command "poll" }
}
play "q" hosts=podc02 {
    task "items" register="made" { loop { - "a"; - "b"; } ; copy content="{{ item }}" dest="/t/{{ item }}" }
    task "count" { copy content="{{ made.results | length }}:{{ made.results[1].item }}" dest="/t/count" }
}"#,
        );
        h.host("podc01").answer("poll", 1, "", "not yet\n");
        let (summary, rec) = h.run(RunOptions::default()).await;
        assert_eq!(h.host("podc01").commands().len(), 3, "1 try + 2 retries");
        let poll = rec.results().into_iter().find(|r| r.task == "poll").unwrap();
        assert_eq!(poll.status, Status::Failed);
        assert_eq!(poll.attempts, Some(3));
        assert!(poll.error.unwrap().message.contains("`until`"));
        assert_eq!(summary.stats["podc02"].changed, 2);
        assert_eq!(h.host("podc02").file("/t/count").unwrap().content, b"2:b");
    }

    #[tokio::test]
    async fn no_log_masks_every_output() {
        let h = Harness::new(
            r#"play "p" hosts=podc01 {
    task "secret" no-log=#true { copy content="token=s3cr3t\n" dest="/etc/token" }
    task "fails" no-log=#true { command "login --password s3cr3t" }
}"#,
        );
        h.host("podc01").answer("login", 1, "", "bad password s3cr3t\n");
        let (_, rec) = h
            .run(RunOptions {
                diff: true,
                ..RunOptions::default()
            })
            .await;
        let all = serde_json::to_string(&*rec.0.lock().unwrap()).unwrap();
        assert!(!all.contains("s3cr3t"), "{all}");
        assert_eq!(rec.results().len(), 2);
    }

    #[tokio::test]
    async fn secret_vars_and_no_log_registers_are_masked_in_every_event() {
        let h = Harness::new(
            r#"play "p" hosts=podc01 {
    vars { (secret)token "s3cr3t-{{ inventory_hostname }}"; plain "visible" }
    task "conf" { copy content="token={{ token }} {{ plain }}\n" dest="/etc/token" }
    task "read" no-log=#true register="pw" { command "cat /etc/pw" }
    task "show" { debug msg="pw is {{ pw.stdout }}, extra is {{ api_key }}" }
    task "fails" { command "login --password {{ token }}" }
}"#,
        );
        h.host("podc01").answer("cat /etc/pw", 0, "hunter2-pw\n", "");
        h.host("podc01")
            .answer("login", 1, "", "bad password s3cr3t-podc01\n");
        let mut extra = Vars::new();
        extra.insert("api_key".into(), serde_json::json!("key-from-e-file"));
        let (_, rec) = h
            .run(RunOptions {
                diff: true,
                extra_vars: extra,
                secret_vars: ["api_key".to_string()].into_iter().collect(),
                ..RunOptions::default()
            })
            .await;
        let all = serde_json::to_string(&*rec.0.lock().unwrap()).unwrap();
        for secret in ["s3cr3t", "hunter2-pw", "key-from-e-file"] {
            assert!(!all.contains(secret), "{secret} leaked: {all}");
        }
        // what is not secret still shows, and the host got the real value
        assert!(all.contains("visible"), "{all}");
        assert!(all.contains("pw is ********, extra is ********"), "{all}");
        assert_eq!(
            h.host("podc01").file("/etc/token").unwrap().content,
            b"token=s3cr3t-podc01 visible\n"
        );
        let results = rec.results();
        assert!(
            results[0].diffs[0].diff.contains("+token=******** visible"),
            "{results:?}"
        );
        assert!(
            results[3].error.as_ref().unwrap().rendered.contains("********"),
            "{results:?}"
        );
    }

    #[tokio::test]
    async fn run_once_shares_its_result_and_limit_and_tags_filter() {
        let h = Harness::new(
            r#"play "p" hosts=all {
    task "leader" run-once=#true register="leader" { command "elect" }
    task "follow" tags="follow" { copy content="{{ leader.stdout }}" dest="/t/leader" }
    task "skipped by tag" tags="other" { command "other" }
}"#,
        );
        h.host("podc01").answer("elect", 0, "podc01\n", "");
        let limit: HashSet<String> = ["podc01".to_string(), "podc02".to_string()].into();
        let (summary, rec) = h
            .run(RunOptions {
                limit: Some(limit),
                skip_tags: vec!["other".into()],
                ..RunOptions::default()
            })
            .await;
        assert_eq!(summary.exit_code(), 0);
        assert_eq!(statuses(&rec, "leader").len(), 1);
        assert!(h.host("podc02").commands().is_empty());
        assert_eq!(h.host("podc02").file("/t/leader").unwrap().content, b"podc01");
        assert!(h.host("podc03").file("/t/leader").is_none(), "--limit");
        assert!(!summary.stats.contains_key("podc03"));
    }

    #[tokio::test]
    async fn roles_find_their_files_and_templates_and_layer_vars() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let w = |rel: &str, text: &str| {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("templates/shared.j2", "shared {{ port }}\n");
        w("playbooks/templates/local.j2", "local {{ port }}\n");
        w("playbooks/roles/app/defaults.kdl", "port 1\nname \"default\"\n");
        w("playbooks/roles/app/files/app.bin", "binary-ish\n");
        w("playbooks/roles/app/templates/app.j2", "{{ name }}:{{ port }}\n");
        w(
            "playbooks/roles/app/tasks.kdl",
            r#"task "role file" { copy "app.bin" dest="/t/app.bin" }
task "role template" { template "app.j2" dest="/t/app.conf" }
"#,
        );
        w(
            "playbooks/play.kdl",
            r#"play "p" hosts=podc01 {
    vars { port 2 }
    role app { vars { name "param" } }
    task "playbook template" { template "local.j2" dest="/t/local" }
    task "shared template" { template "shared.j2" dest="/t/shared" }
}"#,
        );
        let mut h = Harness::new(r#"play "unused" hosts=podc01 { task "t" { debug "x" } }"#);
        let specs = crate::modules::specs();
        h.playbook = Arc::new(
            troupe_dsl::load_playbook(
                &root.join("playbooks/play.kdl"),
                &specs,
                &troupe_dsl::LoadOptions::default(),
            )
            .unwrap_or_else(|e| panic!("{e:?}")),
        );
        let (summary, rec) = h.run(RunOptions::default()).await;
        let errors: Vec<_> = rec.results().into_iter().filter_map(|r| r.error).collect();
        assert_eq!(summary.exit_code(), 0, "{errors:?}");
        let host = h.host("podc01");
        assert_eq!(host.file("/t/app.bin").unwrap().content, b"binary-ish\n");
        assert_eq!(
            host.file("/t/app.conf").unwrap().content,
            b"param:2\n",
            "play vars beat role defaults"
        );
        assert_eq!(host.file("/t/local").unwrap().content, b"local 2\n");
        assert_eq!(
            host.file("/t/shared").unwrap().content,
            b"shared 2\n",
            "top-level templates/"
        );
    }

    #[test]
    fn serial_batches_and_tags() {
        let hosts: Vec<String> = (1..=5).map(|i| format!("h{i}")).collect();
        assert_eq!(batches(&hosts, Some(Serial::Count(2))).len(), 3);
        assert_eq!(
            batches(&hosts, Some(Serial::Percent(40)))
                .iter()
                .map(Vec::len)
                .collect::<Vec<_>>(),
            [2, 2, 1]
        );
        assert_eq!(batches(&hosts, None).len(), 1);
    }
}
