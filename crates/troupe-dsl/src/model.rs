//! The checked model: what a playbook and an inventory mean once the KDL has been
//! decoded and validated. Everything downstream (render, run) works on these types and
//! never sees KDL, so the language can change its surface without touching the engine.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use indexmap::{IndexMap, IndexSet};
use miette::SourceSpan;

/// Variables as the templates see them. JSON values keep the model independent of the
/// template engine while still converting losslessly into minijinja values.
pub type Vars = IndexMap<String, serde_json::Value>;

/// Where something was written, kept past checking so runtime errors (a template that
/// fails on one host, a task that fails) can still point at the line the user wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<PathBuf>,
    pub line: usize,
    pub column: usize,
    pub span: SourceSpan,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// How to reach a host. Every field is optional so that defaults, groups and the host
/// itself can each set some of them; [`Inventory`] resolves them per host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnSettings {
    pub connection: Option<ConnKind>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity: Option<String>,
    pub known_hosts: Option<String>,
    /// `user@host:port` of an SSH jump host (like OpenSSH's `ProxyJump`).
    pub jump: Option<String>,
    pub connect_timeout: Option<Duration>,
    pub command_timeout: Option<Duration>,
    /// Send a keepalive after this long without a word from the host...
    pub keepalive_interval: Option<Duration>,
    /// ...and give the host up after this many intervals without an answer.
    pub keepalive_count: Option<u32>,
}

impl ConnSettings {
    /// Fields set in `over` win; the others come from `self`.
    pub fn overlay(&self, over: &ConnSettings) -> ConnSettings {
        ConnSettings {
            connection: over.connection.or(self.connection),
            user: over.user.clone().or_else(|| self.user.clone()),
            port: over.port.or(self.port),
            identity: over.identity.clone().or_else(|| self.identity.clone()),
            known_hosts: over.known_hosts.clone().or_else(|| self.known_hosts.clone()),
            jump: over.jump.clone().or_else(|| self.jump.clone()),
            connect_timeout: over.connect_timeout.or(self.connect_timeout),
            command_timeout: over.command_timeout.or(self.command_timeout),
            keepalive_interval: over.keepalive_interval.or(self.keepalive_interval),
            keepalive_count: over.keepalive_count.or(self.keepalive_count),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    Ssh,
    Local,
}

#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub path: PathBuf,
    /// Inventory-wide vars (Ansible's `all` group vars).
    pub vars: Vars,
    pub defaults: ConnSettings,
    pub hosts: IndexMap<String, Host>,
    pub groups: IndexMap<String, Group>,
    /// `localhost` with `connection=local`, present when the file does not define a host
    /// named `localhost` (like Ansible's implicit localhost). It is not in `hosts`, so
    /// `all` and globs never select it; the pattern `localhost` does. See
    /// [`Inventory::localhost`] and [`Inventory::host`].
    pub implicit_localhost: Option<Host>,
    /// Names of variables marked `(secret)` anywhere in the inventory (inventory, group
    /// or host vars): the engine masks their values in every output.
    pub secret_vars: IndexSet<String>,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// Address to connect to; the name itself when absent.
    pub address: Option<String>,
    /// Fully resolved: defaults, then groups from outermost to innermost, then the host.
    pub conn: ConnSettings,
    /// The host's own vars (not merged with its groups': see [`Inventory::host_vars`]).
    pub vars: Vars,
    /// Every group the host belongs to, directly or through a child group, in the order
    /// the groups are defined in the file.
    pub groups: Vec<String>,
    pub loc: Loc,
}

#[derive(Debug, Clone)]
pub struct Group {
    pub name: String,
    /// Hosts listed directly in this group.
    pub hosts: Vec<String>,
    /// Groups nested in this one; their hosts are members of this group too.
    pub children: Vec<String>,
    pub vars: Vars,
    pub conn: ConnSettings,
    pub loc: Loc,
}

#[derive(Debug, Clone)]
pub struct Playbook {
    pub path: PathBuf,
    pub plays: Vec<Play>,
    /// The text of every file the playbook was read from (itself, includes, role files),
    /// so later stages can show a snippet for any [`Loc`] (see [`Sources::named`]).
    pub sources: Sources,
    /// Names of variables marked `(secret)` anywhere in the playbook, its includes and
    /// roles (play, role and task vars, role defaults): masked in every output.
    pub secret_vars: IndexSet<String>,
}

/// Source text by file, shared cheaply.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub files: IndexMap<Arc<PathBuf>, Arc<str>>,
}

impl Sources {
    pub fn get(&self, file: &std::path::Path) -> Option<&Arc<str>> {
        self.files.get(&file.to_path_buf())
    }

    /// The file's text as a `miette` source, named by its path, for attaching to a
    /// diagnostic whose span comes from a [`Loc`] in that file.
    pub fn named(&self, file: &std::path::Path) -> Option<miette::NamedSource<Arc<str>>> {
        self.get(file)
            .map(|text| miette::NamedSource::new(file.display().to_string(), text.clone()))
    }
}

#[derive(Debug, Clone)]
pub struct Play {
    pub name: String,
    pub hosts: HostPattern,
    pub serial: Option<Serial>,
    pub max_fail_percent: Option<u8>,
    pub vars: Vars,
    /// Tasks in run order, with role tasks already expanded in place.
    pub tasks: Vec<Task>,
    /// Handlers of the play and of its roles, by name.
    pub handlers: Vec<Task>,
    /// Where templates and files are looked up, most specific first, before any role's.
    pub search_dirs: Vec<PathBuf>,
    pub loc: Loc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serial {
    Count(usize),
    Percent(u8),
}

/// `etcd`, `all`, `etcd:!podc01`, `etcd:&control-plane`, `podc0*`, `etcd,web`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    pub raw: String,
    pub terms: Vec<PatternTerm>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternTerm {
    /// Add hosts matching the name, group or glob.
    Include(String),
    /// Keep only hosts also matching this.
    Intersect(String),
    /// Remove hosts matching this.
    Exclude(String),
}

#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    pub module: String,
    pub args: IndexMap<String, Arg>,
    pub when: Option<Expr>,
    pub loop_: Option<Loop>,
    /// Name of the loop variable (`item` by default).
    pub loop_var: String,
    pub register: Option<String>,
    pub notify: Vec<String>,
    pub tags: Vec<String>,
    pub changed_when: Option<Expr>,
    pub failed_when: Option<Expr>,
    pub ignore_errors: bool,
    /// Extra attempts after the first; 0 means the task runs once.
    pub retries: u32,
    pub delay: Duration,
    pub until: Option<Expr>,
    pub no_log: bool,
    pub run_once: bool,
    pub delegate_to: Option<String>,
    /// Timeout of each command the task runs on the host, over the inventory's
    /// `command-timeout`.
    pub timeout: Option<Duration>,
    pub vars: Vars,
    pub role: Option<Arc<RoleRef>>,
    pub loc: Loc,
}

/// One module argument as written. Strings may hold `{{ templates }}` rendered per host.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub value: serde_json::Value,
    pub loc: Loc,
}

/// A template expression (`when`, `until`, `changed-when`...), already known to parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    pub src: String,
    pub loc: Loc,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Loop {
    /// A literal list written in the playbook (items may hold templates).
    Items(Vec<serde_json::Value>),
    /// An expression evaluated per host that must yield a list.
    Expr(Expr),
}

/// The role a task came from: its defaults sit below every other var, its folder is
/// searched for templates and files.
#[derive(Debug, Clone)]
pub struct RoleRef {
    pub name: String,
    pub dir: PathBuf,
    pub defaults: Vars,
    /// Vars given where the role is applied (`role etcd-node { vars {..} }`).
    pub vars: Vars,
}
