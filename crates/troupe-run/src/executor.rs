//! The one state machine that runs a task on a host: `when` → loop items → render the
//! arguments → `module.check` → (unless `--check`) `module.apply` → `changed-when` /
//! `failed-when` → `until`/`retries` → a result to register and report. Modules never
//! see check or diff mode; they are decided here, so `--check` cannot drift from a
//! real run. `no-log` is applied here too, before anything reaches a reporter.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indexmap::IndexSet;
use serde_json::{Map, Value, json};
use tokio::sync::{OnceCell, Semaphore};
use troupe_dsl::model::{ConnKind, ConnSettings, Host, Inventory, Loop, Play, Task, Vars};
use troupe_render::{Context, Renderer};

use crate::connection::{ConnError, Connection};
use crate::interrupt::Interrupt;
use crate::module::{DynCheck, DynModule, TaskCx, TaskError, Touches};
use crate::report::mask::Masker;
use crate::report::{DiffInfo, ErrorInfo, HostResult, Status, unified_diff};
use crate::statcache::CachedConn;
use crate::vars::{self, Shared};

/// Opens a connection to a host; the real one speaks SSH or runs locally, tests fake it.
#[async_trait::async_trait]
pub trait Connector: Send + Sync + 'static {
    async fn connect(&self, host: &Host) -> Result<Arc<dyn Connection>, ConnError>;
    /// The controller itself (for `fetch`, CA keys...).
    fn controller(&self) -> Arc<dyn Connection>;
}

type ConnCell = Arc<OnceCell<Result<Arc<dyn Connection>, Arc<ConnError>>>>;

/// One connection per host for the whole run, opened on first use (the scheduler asks
/// for every host of a play up front, so they open in parallel), at most `forks` at once.
pub struct Pool {
    connector: Arc<dyn Connector>,
    inventory: Arc<Inventory>,
    cells: Mutex<HashMap<String, ConnCell>>,
    connecting: Semaphore,
}

impl Pool {
    pub fn new(connector: Arc<dyn Connector>, inventory: Arc<Inventory>, forks: usize) -> Pool {
        Pool {
            connector,
            inventory,
            cells: Mutex::new(HashMap::new()),
            connecting: Semaphore::new(forks.max(1)),
        }
    }

    pub async fn get(&self, name: &str) -> Result<Arc<dyn Connection>, Arc<ConnError>> {
        let cell = self
            .cells
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .clone();
        cell.get_or_init(|| async {
            let host = lookup_host(&self.inventory, name).ok_or_else(|| {
                Arc::new(ConnError::Unreachable {
                    host: name.to_string(),
                    address: name.to_string(),
                    detail: "not in the inventory".into(),
                })
            })?;
            let _permit = self.connecting.acquire().await.expect("never closed");
            self.connector.connect(&host).await.map_err(Arc::new)
        })
        .await
        .clone()
    }

    pub fn controller(&self) -> Arc<dyn Connection> {
        self.connector.controller()
    }

    /// Tell every open connection that the run was interrupted (it TERMs the commands
    /// it runs on its host), all at once.
    pub async fn interrupt_all(&self) {
        let cells: Vec<ConnCell> = self.cells.lock().unwrap().values().cloned().collect();
        let mut set = tokio::task::JoinSet::new();
        for cell in cells {
            if let Some(Ok(conn)) = cell.get() {
                let conn = conn.clone();
                set.spawn(async move { conn.interrupt().await });
            }
        }
        let controller = self.connector.controller();
        set.spawn(async move { controller.interrupt().await });
        while set.join_next().await.is_some() {}
    }

    /// Close every open connection politely.
    pub async fn close_all(&self) {
        let cells: Vec<ConnCell> = self.cells.lock().unwrap().values().cloned().collect();
        for cell in cells {
            if let Some(Ok(conn)) = cell.get() {
                let _ = conn.close().await;
            }
        }
    }
}

/// An inventory host, or the implicit `localhost` (a local connection) when the
/// inventory does not define one.
pub fn lookup_host(inv: &Inventory, name: &str) -> Option<Host> {
    if let Some(h) = inv.host(name) {
        return Some(h.clone());
    }
    (name == "localhost").then(|| Host {
        name: "localhost".into(),
        address: Some("127.0.0.1".into()),
        conn: ConnSettings {
            connection: Some(ConnKind::Local),
            ..ConnSettings::default()
        },
        vars: Vars::new(),
        groups: Vec::new(),
        loc: troupe_dsl::model::Loc {
            file: Arc::new(inv.path.clone()),
            line: 0,
            column: 0,
            span: (0, 0).into(),
        },
    })
}

/// Everything a task needs that is the same for every host of the run.
pub struct Env {
    pub shared: Shared,
    pub pool: Pool,
    pub check: bool,
    pub diff: bool,
    renderers: Mutex<HashMap<Vec<PathBuf>, Arc<Renderer>>>,
    /// Where the values of secret vars (and `no-log` registered results) go, so that
    /// the masking reporter hides them from every output.
    pub masker: Arc<Masker>,
    /// Names of the vars marked `(secret)` (inventory, playbook, `-e` files).
    pub secret_names: IndexSet<String>,
    /// Set on Ctrl-C / SIGTERM: no change is applied from then on.
    pub interrupt: Interrupt,
}

impl Env {
    pub fn new(shared: Shared, pool: Pool, check: bool, diff: bool) -> Env {
        Env {
            shared,
            pool,
            check,
            diff,
            renderers: Mutex::new(HashMap::new()),
            masker: Arc::new(Masker::new()),
            secret_names: IndexSet::new(),
            interrupt: Interrupt::default(),
        }
    }

    /// The renderer for a set of search dirs (each dir's `templates/` is searched),
    /// built once and reused: it caches compiled templates.
    pub fn renderer(&self, search_dirs: &[PathBuf]) -> Arc<Renderer> {
        let mut cache = self.renderers.lock().unwrap();
        cache
            .entry(search_dirs.to_vec())
            .or_insert_with(|| {
                let r = Renderer::new(search_dirs.iter().map(|d| d.join("templates")).collect());
                // lookup('file') searches the task's folders; lookup('password')
                // values are secrets from the moment they are read.
                r.set_lookup_dirs(search_dirs.to_vec());
                let masker = self.masker.clone();
                r.on_secret(Arc::new(move |s: &str| masker.add(s)));
                Arc::new(r)
            })
            .clone()
    }
}

/// Base folders of a task, most specific first, each holding `templates/` and
/// `files/`: its role's folder, the play's (the playbook's folder), then the shared
/// top-level one (the playbook folder's parent, e.g. the repository root holding
/// `playbooks/` and `templates/`) when it has a `templates/` or `files/` folder.
pub fn search_dirs(play: &Play, task: &Task) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::with_capacity(play.search_dirs.len() + 2);
    let mut push = |d: PathBuf| {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    };
    if let Some(role) = &task.role {
        push(role.dir.clone());
    }
    for d in &play.search_dirs {
        // The checker lists `DIR/templates`, `DIR/files` and `DIR`: keep `DIR`.
        let base = match d.file_name().and_then(|n| n.to_str()) {
            Some("templates" | "files") => d.parent().map(|p| p.to_path_buf()).unwrap_or_else(|| d.clone()),
            _ => d.clone(),
        };
        push(base);
    }
    let top = play
        .search_dirs
        .last()
        .and_then(|d| d.parent())
        .map(|p| p.to_path_buf());
    if let Some(top) = top {
        let top = if top.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            top
        };
        if top.join("templates").is_dir() || top.join("files").is_dir() {
            push(top);
        }
    }
    dirs
}

/// The inputs of one task on one host.
pub struct TaskInput<'a> {
    pub play: &'a Play,
    pub task: &'a Task,
    pub host: &'a Host,
    pub registered: &'a Vars,
    pub play_hosts: &'a [String],
    /// The host's batched-stat cache and the task's index in the play, when the
    /// scheduler prefetched (see [`crate::statcache`]).
    pub cache: Option<(&'a Arc<CachedConn>, usize)>,
}

/// What the scheduler needs back.
pub struct TaskOutput {
    pub result: HostResult,
    /// Value for `register` (set even when skipped, like Ansible).
    pub register: Option<(String, Value)>,
    /// A change happened (or would, in `--check`): notify handlers.
    pub changed: bool,
    /// The host must stop (failed and not ignored).
    pub failed: bool,
    pub unreachable: bool,
}

/// The result of one item (or of the task, without a loop).
struct ItemResult {
    status: Status,
    msg: Option<String>,
    diffs: Vec<DiffInfo>,
    error: Option<ErrorInfo>,
    data: Value,
    check_mode: bool,
    attempts: u32,
}

impl ItemResult {
    fn skipped(reason: &str) -> ItemResult {
        ItemResult {
            status: Status::Skipped,
            msg: None,
            diffs: Vec::new(),
            error: None,
            data: json!({"changed": false, "skipped": true, "skip_reason": reason}),
            check_mode: false,
            attempts: 0,
        }
    }

    fn failed(error: ErrorInfo) -> ItemResult {
        ItemResult {
            status: Status::Failed,
            msg: None,
            diffs: Vec::new(),
            data: json!({"changed": false, "failed": true, "msg": error.message}),
            error: Some(error),
            check_mode: false,
            attempts: 1,
        }
    }

    /// The run was interrupted before this item could do `what`.
    fn interrupted(signal: &str, what: &str) -> ItemResult {
        let message = format!("interrupted ({signal}): {what}");
        let help = "run the playbook again to finish what was not done";
        ItemResult::failed(ErrorInfo {
            rendered: format!("{message}\n  help: {help}"),
            message,
            code: Some("troupe::run::interrupted".into()),
            help: Some(help.into()),
        })
    }

    fn from_task_error(env: &Env, err: &TaskError) -> ItemResult {
        let mut r = ItemResult::failed(ErrorInfo::from_diagnostic(err, &env.masker));
        if let TaskError::Conn(c) = err {
            if c.is_unreachable() {
                r.status = Status::Unreachable;
                r.data["unreachable"] = Value::Bool(true);
            }
        }
        r
    }
}

/// Run `task` on one host and say what happened. Never panics on bad input and never
/// returns an error: every problem becomes a failed (or unreachable) result.
pub async fn execute(env: &Env, inp: TaskInput<'_>) -> TaskOutput {
    let started = Instant::now();
    let task = inp.task;
    let (items, delegated_to) = run_items(env, &inp).await;
    let status = aggregate_status(&items);
    let looped = task.loop_.is_some();
    let mut result = HostResult {
        play: inp.play.name.clone(),
        task: task.name.clone(),
        host: inp.host.name.clone(),
        status,
        item: None,
        msg: None,
        diffs: Vec::new(),
        error: None,
        check_mode: items.iter().any(|i| i.check_mode && i.status == Status::Changed),
        ignored: status == Status::Failed && task.ignore_errors,
        delegated_to,
        attempts: items
            .iter()
            .map(|i| i.attempts)
            .max()
            .filter(|_| task.retries > 0),
        duration: Duration::ZERO,
    };
    let msgs: Vec<String> = items.iter().filter_map(|i| i.msg.clone()).collect();
    if !msgs.is_empty() {
        result.msg = Some(msgs.join("; "));
    }
    result.error = items.iter().find_map(|i| i.error.clone());
    result.diffs = items.iter().flat_map(|i| i.diffs.iter().cloned()).collect();
    let register_value = if looped {
        let results: Vec<Value> = items.iter().map(|i| i.data.clone()).collect();
        json!({
            "results": results,
            "changed": status == Status::Changed,
            "failed": status == Status::Failed,
            "skipped": status == Status::Skipped,
        })
    } else {
        items.into_iter().next().map(|i| i.data).unwrap_or(Value::Null)
    };
    if task.no_log {
        mask(&mut result);
        // What a `no-log` task registers is secret wherever a later task shows it.
        env.masker.add_value(&register_value);
    }
    result.duration = started.elapsed();
    TaskOutput {
        register: task.register.clone().map(|name| (name, register_value)),
        changed: status == Status::Changed,
        failed: status == Status::Failed && !task.ignore_errors,
        unreachable: status == Status::Unreachable,
        result,
    }
}

impl TaskOutput {
    /// What a task that panicked on `host` amounts to: a failure of that host, counted
    /// in the recap and stopping the host like any other failure (never `ignored`: a
    /// panic is a bug in troupe, not an outcome the playbook can expect).
    pub fn panicked(play: &Play, task: &Task, host: &str, detail: &str) -> TaskOutput {
        let message = format!("internal error: the task panicked on {host}: {detail}");
        let help =
            "this is a bug in troupe, not in the playbook; please report it with the task and this message";
        let error = ErrorInfo {
            rendered: format!("{message}\n  help: {help}"),
            message: message.clone(),
            code: Some("troupe::internal::panic".into()),
            help: Some(help.into()),
        };
        TaskOutput::failure(play, task, host, error)
    }

    /// A task still running [`crate::interrupt::GRACE`] after the run was interrupted,
    /// and abandoned: a failure of that host (what it did on the host is not known).
    pub fn abandoned(play: &Play, task: &Task, host: &str, signal: &str) -> TaskOutput {
        let grace = crate::interrupt::GRACE.as_secs();
        let r = ItemResult::interrupted(
            signal,
            &format!("still running {grace} s after the interrupt: abandoned (its commands were sent TERM)"),
        );
        TaskOutput::failure(play, task, host, r.error.expect("a failed item has an error"))
    }

    fn failure(play: &Play, task: &Task, host: &str, error: ErrorInfo) -> TaskOutput {
        let message = error.message.clone();
        TaskOutput {
            result: HostResult {
                play: play.name.clone(),
                task: task.name.clone(),
                host: host.to_string(),
                status: Status::Failed,
                item: None,
                msg: None,
                diffs: Vec::new(),
                error: Some(error),
                check_mode: false,
                ignored: false,
                delegated_to: None,
                attempts: None,
                duration: Duration::ZERO,
            },
            register: task
                .register
                .clone()
                .map(|name| (name, json!({"changed": false, "failed": true, "msg": message}))),
            changed: false,
            failed: true,
            unreachable: false,
        }
    }
}

fn mask(result: &mut HostResult) {
    if result.msg.is_some() {
        result.msg = Some("(output hidden by no-log)".into());
    }
    if result.item.is_some() {
        result.item = Some("(hidden)".into());
    }
    result.diffs.clear();
    if result.error.is_some() {
        result.error = Some(ErrorInfo::masked());
    }
}

fn aggregate_status(items: &[ItemResult]) -> Status {
    if items.iter().any(|i| i.status == Status::Unreachable) {
        Status::Unreachable
    } else if items.iter().any(|i| i.status == Status::Failed) {
        Status::Failed
    } else if items.iter().any(|i| i.status == Status::Changed) {
        Status::Changed
    } else if !items.is_empty() && items.iter().all(|i| i.status == Status::Skipped) {
        Status::Skipped
    } else {
        Status::Ok
    }
}

fn render_err(env: &Env, e: troupe_render::RenderError) -> ItemResult {
    ItemResult::failed(ErrorInfo::from_diagnostic(&e, &env.masker))
}

/// Everything up to the per-item loop: vars, `when`, the loop items, the connection.
async fn run_items(env: &Env, inp: &TaskInput<'_>) -> (Vec<ItemResult>, Option<String>) {
    let task = inp.task;
    let dirs = search_dirs(inp.play, task);
    let renderer = env.renderer(&dirs);
    let vars = vars::task_vars(
        &env.shared,
        inp.host,
        inp.play,
        task,
        inp.registered,
        inp.play_hosts,
    );
    let vars = match vars::resolve(&env.shared, &renderer, vars, inp.registered) {
        Ok(v) => v,
        Err(e) => return (vec![render_err(env, e)], None),
    };
    // The rendered values of this host's secret vars, before anything can print them.
    for name in &env.secret_names {
        if let Some(v) = vars.get(name) {
            env.masker.add_value(v);
        }
    }
    let ctx = env.shared.context(vars);

    // Without a loop, `when` decides before anything else (no connection needed).
    if task.loop_.is_none() {
        if let Some(when) = &task.when {
            match renderer.is_true(&when.src, &ctx) {
                Ok(true) => {}
                Ok(false) => return (vec![ItemResult::skipped("`when` is false")], None),
                Err(e) => return (vec![render_err(env, e)], None),
            }
        }
    }

    let items: Vec<Option<Value>> = match &task.loop_ {
        None => vec![None],
        Some(Loop::Items(list)) => {
            let mut out = Vec::with_capacity(list.len());
            for item in list {
                match renderer.render_value(item, &ctx) {
                    Ok(v) => out.push(Some(v)),
                    Err(e) => return (vec![render_err(env, e)], None),
                }
            }
            out
        }
        Some(Loop::Expr(expr)) => match renderer.eval(&expr.src, &ctx) {
            Ok(Value::Array(list)) => list.into_iter().map(Some).collect(),
            Ok(Value::Null) => Vec::new(),
            Ok(other) => {
                return (
                    vec![ItemResult::failed(ErrorInfo::plain(format!(
                        "`loop` expression `{}` gave {other}, not a list ({})",
                        expr.src, expr.loc
                    )))],
                    None,
                );
            }
            Err(e) => return (vec![render_err(env, e)], None),
        },
    };
    if items.is_empty() {
        return (vec![ItemResult::skipped("the loop has no items")], None);
    }

    let delegate = match &task.delegate_to {
        Some(d) => match renderer.render_str(d, &ctx) {
            Ok(name) => Some(name.trim().to_string()),
            Err(e) => return (vec![render_err(env, e)], None),
        },
        None => None,
    };
    let target = delegate.clone().unwrap_or_else(|| inp.host.name.clone());
    let cache = match (&delegate, inp.cache) {
        (None, Some((cache, step))) => {
            cache.set_step(step);
            Some(cache)
        }
        _ => None,
    };
    let conn = match env.pool.get(&target).await {
        Ok(c) => {
            let conn = match cache {
                Some(cache) => cache.clone() as Arc<dyn Connection>,
                None => c,
            };
            match task.timeout {
                Some(t) => Arc::new(crate::connection::WithTimeout::new(conn, t)) as Arc<dyn Connection>,
                None => conn,
            }
        }
        Err(e) => {
            let mut r = ItemResult::failed(ErrorInfo::from_diagnostic(&*e, &env.masker));
            if e.is_unreachable() && delegate.is_none() {
                r.status = Status::Unreachable;
            }
            return (vec![r], delegate);
        }
    };
    let Some(module) = crate::modules::find(&task.module) else {
        return (
            vec![ItemResult::failed(ErrorInfo::plain(format!(
                "unknown module `{}` ({})",
                task.module, task.loc
            )))],
            delegate,
        );
    };
    let controller = env.pool.controller();

    let mut results = Vec::with_capacity(items.len());
    for item in items {
        if let Some(signal) = env.interrupt.signal() {
            results.push(ItemResult::interrupted(
                signal,
                "the remaining loop items were not run",
            ));
            break;
        }
        let mut ctx_item = ctx.clone();
        if let Some(item) = &item {
            ctx_item.insert(task.loop_var.clone(), item.clone());
            if let Some(when) = &task.when {
                match renderer.is_true(&when.src, &ctx_item) {
                    Ok(true) => {}
                    Ok(false) => {
                        let mut r = ItemResult::skipped("`when` is false");
                        r.data["item"] = item.clone();
                        results.push(r);
                        continue;
                    }
                    Err(e) => {
                        results.push(render_err(env, e));
                        break;
                    }
                }
            }
        }
        let mut r = run_item(
            env,
            task,
            module,
            &renderer,
            &ctx_item,
            &conn,
            &controller,
            &dirs,
            inp.host,
            cache.map(|c| c.as_ref()),
        )
        .await;
        if let Some(item) = item {
            if let Value::Object(map) = &mut r.data {
                map.insert("item".into(), item.clone());
            }
            let shown = show_item(&item);
            if let Some(msg) = &mut r.msg {
                if !msg.contains(&shown) {
                    *msg = format!("{shown}: {msg}");
                }
            } else if r.status == Status::Changed {
                r.msg = Some(shown);
            }
        }
        let stop = matches!(r.status, Status::Failed | Status::Unreachable);
        results.push(r);
        if stop {
            break;
        }
    }
    (results, delegate)
}

fn show_item(item: &Value) -> String {
    let text = match item {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    crate::modules::command::one_line(&text, 60)
}

/// One item: render the arguments, then check → apply with retries.
#[allow(clippy::too_many_arguments)]
async fn run_item(
    env: &Env,
    task: &Task,
    module: &'static dyn DynModule,
    renderer: &Renderer,
    ctx: &Context,
    conn: &Arc<dyn Connection>,
    controller: &Arc<dyn Connection>,
    dirs: &[PathBuf],
    host: &Host,
    cache: Option<&CachedConn>,
) -> ItemResult {
    let mut args = Map::with_capacity(task.args.len());
    for (name, arg) in &task.args {
        match renderer.render_value(&arg.value, ctx) {
            Ok(v) if troupe_dsl::holds_nul(&v) => {
                let e = TaskError::NulByte { arg: name.clone() };
                let mut info = ErrorInfo::from_diagnostic(&e, &env.masker);
                info.message = format!("{} ({})", info.message, arg.loc);
                return ItemResult::failed(info);
            }
            Ok(v) => {
                args.insert(name.clone(), v);
            }
            Err(e) => {
                let mut info = ErrorInfo::from_diagnostic(&e, &env.masker);
                info.message = format!("argument `{name}` ({}): {}", arg.loc, info.message);
                info.rendered = format!(
                    "in argument `{name}` ({}):\n{}",
                    crate::report::show_loc(&arg.loc),
                    info.rendered
                );
                return ItemResult::failed(info);
            }
        }
    }
    let render = |name: &str| renderer.render_file(name, ctx).map_err(TaskError::from);
    let eval = |expr: &str| renderer.eval(expr, ctx).map_err(TaskError::from);
    let cx = TaskCx {
        host: &host.name,
        conn,
        controller,
        search_dirs: dirs,
        render: &render,
        eval: &eval,
    };

    let attempts_allowed = 1 + task.retries;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut r = attempt_once(env, task, module, &args, &cx, renderer, ctx, cache).await;
        r.attempts = attempt;
        if (env.check && !read_only(task)) || matches!(r.status, Status::Unreachable) {
            return r;
        }
        let done = match &task.until {
            Some(until) => {
                let mut c = ctx.clone();
                insert_result(&mut c, task, &r.data);
                match renderer.is_true(&until.src, &c) {
                    Ok(v) => v,
                    Err(e) => return render_err(env, e),
                }
            }
            None => task.retries == 0 || r.status != Status::Failed,
        };
        if done {
            return r;
        }
        if attempt >= attempts_allowed {
            if let Some(until) = &task.until {
                let mut failed = ItemResult::failed(ErrorInfo {
                    message: format!(
                        "`until` condition `{}` still false after {attempt} attempts",
                        until.src
                    ),
                    code: Some("troupe::task::until".into()),
                    help: Some(
                        "raise `retries`/`delay`, or look at the registered result with a `debug` task"
                            .into(),
                    ),
                    rendered: String::new(),
                });
                failed.error.as_mut().unwrap().rendered = format!(
                    "{}\n  help: {}",
                    failed.error.as_ref().unwrap().message,
                    failed.error.as_ref().unwrap().help.as_deref().unwrap_or_default()
                );
                failed.data = r.data;
                failed.data["failed"] = Value::Bool(true);
                failed.attempts = attempt;
                return failed;
            }
            return r;
        }
        tokio::select! {
            _ = tokio::time::sleep(task.delay) => {}
            signal = env.interrupt.wait() => {
                return ItemResult::interrupted(signal, &format!("no attempt after the {attempt} made"));
            }
        }
    }
}

/// A task whose `changed-when` is the constant `false` is declared read-only by its
/// author (`command "uname -n" register=.. changed-when="false"`): it runs even under
/// `--check`, so the tasks after it can use what it registered.
pub fn read_only(task: &Task) -> bool {
    task.changed_when
        .as_ref()
        .is_some_and(|e| matches!(e.src.trim(), "false" | "False"))
}

fn insert_result(ctx: &mut Context, task: &Task, data: &Value) {
    if let Some(name) = &task.register {
        ctx.insert(name.clone(), data.clone());
    }
    ctx.insert("result", data.clone());
}

/// check → apply once, then `changed-when` / `failed-when`.
#[allow(clippy::too_many_arguments)]
async fn attempt_once(
    env: &Env,
    task: &Task,
    module: &'static dyn DynModule,
    args: &crate::module::Args,
    cx: &TaskCx<'_>,
    renderer: &Renderer,
    ctx: &Context,
    cache: Option<&CachedConn>,
) -> ItemResult {
    let checked = match module.check(args, cx).await {
        Ok(c) => c,
        Err(e) => return ItemResult::from_task_error(env, &e),
    };
    let (outcome, summary, diffs) = match checked {
        DynCheck::Unchanged(outcome) => (outcome, None, Vec::new()),
        DynCheck::Change(change) => {
            let mut diffs: Vec<DiffInfo> = Vec::new();
            if env.diff {
                for d in &change.diffs {
                    let before = if d.before == crate::module::Diff::BEFORE_FROM_HOST {
                        match cx.conn.read_file(&d.path).await {
                            Ok(Some(bytes)) => crate::module::Diff::text(&bytes),
                            Ok(None) => String::new(),
                            Err(e) => format!("<cannot read the current content: {e}>\n"),
                        }
                    } else {
                        d.before.clone()
                    };
                    diffs.push(DiffInfo {
                        path: d.path.clone(),
                        diff: unified_diff(&d.path, &before, &d.after),
                    });
                }
            }
            if env.check && !read_only(task) {
                return ItemResult {
                    status: Status::Changed,
                    msg: Some(change.summary.clone()),
                    diffs,
                    error: None,
                    data: json!({"changed": true, "failed": false, "check_mode": true, "msg": change.summary}),
                    check_mode: true,
                    attempts: 1,
                };
            }
            if let Some(signal) = env.interrupt.signal() {
                return ItemResult::interrupted(signal, &format!("not applied: {}", change.summary));
            }
            let summary = change.summary.clone();
            // Batched answers the apply may make stale are forgotten; with no better
            // word from the module, all of them.
            if let Some(cache) = cache {
                match &change.touches {
                    Touches::Anything => cache.invalidate(),
                    Touches::Paths { paths, below } => cache.invalidate_paths(paths, *below),
                }
            }
            match module.apply(change, cx).await {
                Ok(o) => (o, Some(summary), diffs),
                Err(e) => return ItemResult::from_task_error(env, &e),
            }
        }
    };
    let mut changed = outcome.changed;
    let mut failed_msg = outcome.failed.clone();
    let mut data = match outcome.data {
        Value::Object(map) => Value::Object(map),
        Value::Null => json!({}),
        other => json!({ "value": other }),
    };
    data["changed"] = Value::Bool(changed);
    data["failed"] = Value::Bool(failed_msg.is_some());
    if let Some(m) = outcome.msg.as_ref().or(summary.as_ref()) {
        data["msg"] = Value::String(m.clone());
    }
    if task.changed_when.is_some() || task.failed_when.is_some() {
        let mut c = ctx.clone();
        insert_result(&mut c, task, &data);
        if let Some(cw) = &task.changed_when {
            match renderer.is_true(&cw.src, &c) {
                Ok(v) => changed = v,
                Err(e) => return render_err(env, e),
            }
        }
        if let Some(fw) = &task.failed_when {
            match renderer.is_true(&fw.src, &c) {
                Ok(true) => {
                    failed_msg = Some(
                        failed_msg.unwrap_or_else(|| format!("`failed-when` condition `{}` is true", fw.src)),
                    );
                }
                Ok(false) => failed_msg = None,
                Err(e) => return render_err(env, e),
            }
        }
        data["changed"] = Value::Bool(changed);
        data["failed"] = Value::Bool(failed_msg.is_some());
    }
    if let Some(msg) = failed_msg {
        let mut r = ItemResult::failed(ErrorInfo {
            rendered: msg.clone(),
            message: msg,
            code: Some("troupe::task::failed".into()),
            help: None,
        });
        r.data = data;
        r.diffs = diffs;
        return r;
    }
    ItemResult {
        status: if changed { Status::Changed } else { Status::Ok },
        msg: if changed {
            outcome.msg.or(summary)
        } else {
            outcome.msg
        },
        diffs,
        error: None,
        data,
        check_mode: false,
        attempts: 1,
    }
}
