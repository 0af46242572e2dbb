//! `cargo xtask bench`: how fast troupe fans out, measured against what SSH itself
//! allows and against Ansible and pyinfra, on the same workload in the same run (issue
//! 7). Numbers only mean something side by side: the machine, its load and OpenSSH all
//! change from run to run, so every run measures every column again.
//!
//! For each host count N it brings up (once, for the largest N) a lab of sshd hosts on
//! 127.0.L.x (`xtask::lab`, lab name `bench`), writes one fixed workload of
//! [`workload`] tasks per host in five forms, and times each:
//! - `troupe`: the release binary, `troupe run --forks N --output json`;
//! - `ssh/task`: plain OpenSSH, one ControlMaster connection per host, all hosts in
//!   parallel, one `ssh` round trip per task (a generated shell script);
//! - `ssh/host`: one `ssh` round trip per host carrying the whole workload as one
//!   script: the floor for any tool that talks SSH;
//! - `ansible` (ansible-core, forks = N, pipelining on, facts off) and `pyinfra`, both
//!   from PyPI in a venv under `bench/work/`, installed on first use.
//!
//! "cold" wipes `/srv/bench` on every host first (everything changes), "warm" runs on
//! the result (nothing changes). Each timed run happens in a child of a small measuring
//! process (`bench __measure`, this same binary) that is a child subreaper, so the
//! `ssh` control masters that daemonize themselves are still counted: controller CPU
//! (user+sys) and peak RSS come from `getrusage(RUSAGE_CHILDREN)` once every
//! descendant is reaped. After each cold run the files of every host are compared with
//! troupe's (paths, kinds, modes, contents), so a faster column that did less work shows.
//!
//! Results go to `bench/results/YYYY-MM-DD-HOSTNAME.md`. `--micro` runs the criterion
//! benches of troupe-dsl and troupe-render instead. Nothing here is a test: timings are
//! reported, never asserted.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xtask::lab::{self, LabInfo};

/// `bench --etcd`: the etcd 1 → 3 expansion; a child module so it shares the measuring
/// process, the troupe build and the report helpers without widening their visibility.
#[path = "bench_etcd.rs"]
mod etcd;

/// `bench --output-memory`: controller peak RSS with 50 MB of output on each of 3
/// hosts (issue 11.5).
#[path = "bench_memory.rs"]
mod memory;

const LAB_NAME: &str = "bench";
/// Where the workload lives on every host (`/srv` is per host in the lab).
const REMOTE_DIR: &str = "/srv/bench";

const USAGE: &str = "usage: cargo xtask bench [OPTIONS]

Times troupe against plain OpenSSH (one round trip per task, and one per host: the
floor), Ansible and pyinfra on a lab of sshd hosts; writes bench/results/DATE-HOST.md.

options:
  --hosts 1,10,50        host counts to measure (default 1,10,50; up to 250)
  --runs N               timed runs per tool, mode and host count (default 3)
  --peer-runs N          timed runs of Ansible and pyinfra (default 1: they are slow)
  --peer-max-hosts N     skip Ansible/pyinfra above N hosts (default 10)
  --no-peers             skip Ansible and pyinfra (no PyPI access needed)
  --tools LIST           only these columns: troupe,ssh-task,ssh-host,ansible,pyinfra
  --troupe PATH          use this troupe binary instead of building --release
  --keep-lab             leave the bench lab running afterwards
  --out FILE             write the results here instead of bench/results/DATE-HOST.md
  --micro                run the criterion micro-benchmarks (parse+check, render) only
  --etcd                 time the etcd 1 -> 3 expansion on fresh labs instead (`bench --etcd --help`)
  --output-memory        controller peak RSS with 50 MB of output on each of 3 hosts instead";

// ---------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Options {
    hosts: Vec<usize>,
    runs: usize,
    peer_runs: usize,
    peer_max_hosts: usize,
    tools: Vec<Tool>,
    troupe: Option<PathBuf>,
    keep_lab: bool,
    out: Option<PathBuf>,
    micro: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tool {
    Troupe,
    SshTask,
    SshHost,
    Ansible,
    Pyinfra,
}

impl Tool {
    const ALL: [Tool; 5] = [
        Tool::Troupe,
        Tool::SshTask,
        Tool::SshHost,
        Tool::Ansible,
        Tool::Pyinfra,
    ];

    fn name(self) -> &'static str {
        match self {
            Tool::Troupe => "troupe",
            Tool::SshTask => "ssh-task",
            Tool::SshHost => "ssh-host",
            Tool::Ansible => "ansible",
            Tool::Pyinfra => "pyinfra",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Tool::Troupe => "troupe (release build)",
            Tool::SshTask => "OpenSSH, 1 mux'd round trip per task",
            Tool::SshHost => "OpenSSH, 1 round trip per host (floor)",
            Tool::Ansible => "Ansible (ansible-core)",
            Tool::Pyinfra => "pyinfra",
        }
    }

    fn is_peer(self) -> bool {
        matches!(self, Tool::Ansible | Tool::Pyinfra)
    }
}

fn parse_list(s: &str, what: &str) -> Result<Vec<usize>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .with_context(|| format!("{what}: {p:?} is not a number"))
        })
        .collect()
}

/// `--flag=value` or `--flag value`: the flag and its inline value, if any.
fn split_flag(arg: &str) -> (&str, Option<String>) {
    match arg.split_once('=') {
        Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
        _ => (arg, None),
    }
}

/// The value of `flag`: inline after `=`, else the next argument.
fn flag_value(
    flag: &str,
    inline: &Option<String>,
    rest: &mut std::slice::Iter<'_, String>,
) -> Result<String> {
    match inline {
        Some(v) => Ok(v.clone()),
        None => rest
            .next()
            .cloned()
            .with_context(|| format!("{flag} needs a value")),
    }
}

/// Options of the benchmarks that run one scenario on a lab of their own
/// (`--etcd`, `--output-memory`): how many runs, which troupe, keep the lab, where
/// the report goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LabBenchOptions {
    runs: usize,
    troupe: Option<PathBuf>,
    keep_lab: bool,
    out: Option<PathBuf>,
}

/// Parse [`LabBenchOptions`] for `bench MODE_FLAG` (the flag itself is accepted and
/// ignored); `usage` is printed for `--help` and after an unknown option.
fn parse_lab_bench_options(args: &[String], mode_flag: &str, usage: &str) -> Result<LabBenchOptions> {
    let mut o = LabBenchOptions {
        runs: 3,
        troupe: None,
        keep_lab: false,
        out: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = split_flag(a);
        let mut value = || flag_value(flag, &inline, &mut it);
        match flag {
            f if f == mode_flag => {}
            "--runs" => o.runs = value()?.parse().context("--runs: not a number")?,
            "--troupe" => o.troupe = Some(PathBuf::from(value()?)),
            "--keep-lab" => o.keep_lab = true,
            "--out" => o.out = Some(PathBuf::from(value()?)),
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            other => bail!("unknown option {other:?} for `bench {mode_flag}`\n\n{usage}"),
        }
    }
    if o.runs == 0 {
        bail!("--runs must be at least 1");
    }
    Ok(o)
}

fn parse_options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        hosts: vec![1, 10, 50],
        runs: 3,
        peer_runs: 1,
        peer_max_hosts: 10,
        tools: Tool::ALL.to_vec(),
        troupe: None,
        keep_lab: false,
        out: None,
        micro: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (flag, inline) = split_flag(a);
        let mut value = || flag_value(flag, &inline, &mut it);
        match flag {
            "--hosts" => o.hosts = parse_list(&value()?, "--hosts")?,
            "--runs" => o.runs = value()?.parse().context("--runs: not a number")?,
            "--peer-runs" => o.peer_runs = value()?.parse().context("--peer-runs: not a number")?,
            "--peer-max-hosts" => {
                o.peer_max_hosts = value()?.parse().context("--peer-max-hosts: not a number")?
            }
            "--no-peers" => o.tools.retain(|t| !t.is_peer()),
            "--tools" => {
                let v = value()?;
                let mut tools = Vec::new();
                for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let Some(t) = Tool::ALL.iter().find(|t| t.name() == name) else {
                        bail!(
                            "--tools: unknown tool {name:?} (troupe, ssh-task, ssh-host, ansible, pyinfra)"
                        );
                    };
                    tools.push(*t);
                }
                tools.sort();
                tools.dedup();
                o.tools = tools;
            }
            "--troupe" => o.troupe = Some(PathBuf::from(value()?)),
            "--keep-lab" => o.keep_lab = true,
            "--out" => o.out = Some(PathBuf::from(value()?)),
            "--micro" => o.micro = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    if o.hosts.is_empty() || o.hosts.iter().any(|&n| n == 0 || n > 250) {
        bail!("--hosts: give host counts from 1 to 250 (the lab's limit), e.g. --hosts 1,10,50");
    }
    o.hosts.sort_unstable();
    o.hosts.dedup();
    if o.runs == 0 || o.peer_runs == 0 {
        bail!("--runs and --peer-runs must be at least 1");
    }
    if o.tools.is_empty() {
        bail!("no tool left to measure");
    }
    Ok(o)
}

/// `cargo xtask bench ...`
pub fn run(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("__measure") {
        return measure_child(&args[1..]);
    }
    if args.iter().any(|a| a == "--etcd") {
        measure_exe()?;
        return etcd::run(args);
    }
    if args.iter().any(|a| a == "--output-memory") {
        measure_exe()?;
        return memory::run(args);
    }
    let opts = parse_options(args)?;
    measure_exe()?;
    if opts.micro {
        return micro(&opts);
    }
    fan_out(&opts)
}

// ---------------------------------------------------------------------------------
// The workload

/// One task of the workload, in a form every tool can express.
#[derive(Debug, Clone)]
enum Task {
    /// A directory with mode 0755.
    Dir { path: String },
    /// A file with fixed content and mode 0644.
    File { path: String, content: String },
    /// A file rendered from template `name` (in `templates/`) with mode 0644.
    Template { path: String, name: String },
    /// `argv` run unless `creates` exists.
    Guarded { argv: Vec<String>, creates: String },
}

impl Task {
    fn title(&self) -> String {
        match self {
            Task::Dir { path } => format!("directory {path}"),
            Task::File { path, .. } => format!("file {path}"),
            Task::Template { path, .. } => format!("template {path}"),
            Task::Guarded { creates, .. } => format!("guarded command creating {creates}"),
        }
    }
}

const TEMPLATES: usize = 6;

/// The text of template `i` (1-based). It uses two variables every tool provides and
/// ends without a newline, so Jinja2's and minijinja's trailing-newline rules agree.
fn template_source(i: usize) -> String {
    format!(
        "# template {i} of the troupe fan-out benchmark\n\
         host = {{{{ inventory_hostname }}}}\n\
         listen = {{{{ bench_address }}}}:{port}\n\
         data_dir = /srv/bench/data/{{{{ inventory_hostname }}}}-{i}\n\
         # end",
        port = 8000 + i
    )
}

/// Render a template the way every tool does for these two variables.
fn render_template(i: usize, host: &str, address: &str) -> String {
    template_source(i)
        .replace("{{ inventory_hostname }}", host)
        .replace("{{ bench_address }}", address)
}

/// 24 tasks per host: 5 directories, 8 files with fixed content, 6 templated files and
/// 5 guarded commands (3 `touch`, 2 `cp` of files written earlier).
fn workload() -> Vec<Task> {
    workload_in(REMOTE_DIR)
}

/// The workload under directory `d` (tests use a temporary one).
fn workload_in(d: &str) -> Vec<Task> {
    let mut tasks = vec![Task::Dir { path: d.to_string() }];
    for sub in ["etc", "lib", "run", "tpl"] {
        tasks.push(Task::Dir {
            path: format!("{d}/{sub}"),
        });
    }
    for i in 1..=8 {
        let mut content = format!("# file {i} of the troupe fan-out benchmark\n");
        for k in 1..=8 {
            let _ = writeln!(content, "key_{k} = value-{i}-{k}");
        }
        tasks.push(Task::File {
            path: format!("{d}/etc/file-{i:02}.conf"),
            content,
        });
    }
    for i in 1..=TEMPLATES {
        tasks.push(Task::Template {
            path: format!("{d}/tpl/tpl-{i:02}.conf"),
            name: format!("tpl-{i:02}.j2"),
        });
    }
    for i in 1..=3 {
        let m = format!("{d}/run/marker-{i:02}");
        tasks.push(Task::Guarded {
            argv: vec!["touch".into(), m.clone()],
            creates: m,
        });
    }
    for (i, src) in [
        (1, format!("{d}/etc/file-01.conf")),
        (2, format!("{d}/tpl/tpl-01.conf")),
    ] {
        let dst = format!("{d}/lib/copy-{i:02}.conf");
        tasks.push(Task::Guarded {
            argv: vec!["cp".into(), src, dst.clone()],
            creates: dst,
        });
    }
    tasks
}

/// Template number of a template task (`tpl-03.j2` → 3).
fn template_index(name: &str) -> usize {
    name.trim_start_matches("tpl-")
        .trim_end_matches(".j2")
        .parse()
        .unwrap_or(1)
}

// ---------------------------------------------------------------------------------
// Quoting for the generated files (each language's own rules)

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A JSON string (also a YAML and a Python string literal for our ASCII content).
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A KDL v2 quoted string.
fn kdl_str(s: &str) -> String {
    json_str(s)
}

// ---------------------------------------------------------------------------------
// One host count: generated files

/// The hosts of one measurement (the first N of the lab).
struct Hosts<'a> {
    lab: &'a LabInfo,
    n: usize,
}

impl Hosts<'_> {
    fn iter(&self) -> impl Iterator<Item = &lab::LabHost> {
        self.lab.hosts.iter().take(self.n)
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

fn write_templates(dir: &Path) -> Result<()> {
    for i in 1..=TEMPLATES {
        write(&dir.join(format!("tpl-{i:02}.j2")), &template_source(i))?;
    }
    Ok(())
}

/// troupe: inventory.kdl, playbook.kdl, templates/.
fn gen_troupe(dir: &Path, hosts: &Hosts, tasks: &[Task]) -> Result<()> {
    let mut inv = format!(
        "// fan-out benchmark inventory ({} hosts), written by `cargo xtask bench`\n\
         defaults user=root port=22 identity={} known-hosts={}\n\
         group bench {{\n",
        hosts.n,
        kdl_str(&hosts.lab.key_path().display().to_string()),
        kdl_str(&hosts.lab.known_hosts_path().display().to_string()),
    );
    for h in hosts.iter() {
        let _ = writeln!(
            inv,
            "    host {} address={} {{ vars {{ bench_address {} }} }}",
            h.name,
            kdl_str(&h.address),
            kdl_str(&h.address)
        );
    }
    inv.push_str("}\n");
    write(&dir.join("inventory.kdl"), &inv)?;

    let mut pb = String::from(
        "// fan-out benchmark workload, written by `cargo xtask bench`\nplay \"bench\" hosts=\"bench\" {\n",
    );
    for t in tasks {
        let body = match t {
            Task::Dir { path } => format!("file {} state=\"directory\" mode=0o755", kdl_str(path)),
            Task::File { path, content } => {
                format!(
                    "copy content={} dest={} mode=0o644",
                    kdl_str(content),
                    kdl_str(path)
                )
            }
            Task::Template { path, name } => {
                format!("template {} dest={} mode=0o644", kdl_str(name), kdl_str(path))
            }
            Task::Guarded { argv, creates } => {
                format!(
                    "command {} creates={}",
                    kdl_str(&argv.join(" ")),
                    kdl_str(creates)
                )
            }
        };
        let _ = writeln!(pb, "    task {} {{\n        {body}\n    }}", kdl_str(&t.title()));
    }
    pb.push_str("}\n");
    write(&dir.join("playbook.kdl"), &pb)?;
    write_templates(&dir.join("templates"))
}

/// The shell code of one task: check, and change only what differs, in one go. Same
/// semantics as troupe's modules: directories get mode 0755; files are compared by
/// content and mode, then written atomically (temp file, fsync, rename, fsync of the
/// directory) with mode 0644; guarded commands run unless their path exists.
fn task_shell(t: &Task, host: &str, address: &str) -> String {
    let put = |path: &str, content: &str| {
        let dir = &path[..path.rfind('/').unwrap_or(0).max(1)];
        format!(
            "p={p}; c={c}; if [ -f \"$p\" ] && printf '%s' \"$c\" | cmp -s - \"$p\" && [ \"$(stat -c %a \"$p\")\" = 644 ]; then :; \
             else t=$(mktemp {d}/.bench.XXXXXX) && printf '%s' \"$c\" > \"$t\" && chmod 644 \"$t\" && sync \"$t\" && mv -f \"$t\" \"$p\" && sync {d}; fi",
            p = sh_quote(path),
            c = sh_quote(content),
            d = sh_quote(dir),
        )
    };
    match t {
        Task::Dir { path } => {
            let p = sh_quote(path);
            format!(
                "if [ -d {p} ] && [ \"$(stat -c %a {p})\" = 755 ]; then :; else mkdir -p {p} && chmod 755 {p}; fi"
            )
        }
        Task::File { path, content } => put(path, content),
        Task::Template { path, name } => put(path, &render_template(template_index(name), host, address)),
        Task::Guarded { argv, creates } => {
            let cmd: Vec<String> = argv.iter().map(|a| sh_quote(a)).collect();
            format!("[ -e {} ] || {}", sh_quote(creates), cmd.join(" "))
        }
    }
}

/// The ssh command prefix both OpenSSH baselines use: the lab's key and known_hosts,
/// strict host-key checking, like troupe.
fn ssh_prefix(lab: &LabInfo) -> String {
    let mut s = String::from("ssh");
    for a in lab.ssh_args() {
        s.push(' ');
        s.push_str(&sh_quote(&a));
    }
    s
}

/// ssh-task/run.sh: per host, a ControlMaster (`-fN`), then one `ssh` per task over it,
/// then `-O exit`; all hosts in parallel; non-zero if any task failed anywhere.
fn gen_ssh_task(dir: &Path, hosts: &Hosts, tasks: &[Task]) -> Result<()> {
    let ssh = ssh_prefix(hosts.lab);
    let mut s = format!(
        "#!/bin/sh\n# One multiplexed OpenSSH round trip per task, all hosts in parallel.\n# Written by `cargo xtask bench`.\nbssh() {{ {} \"$@\"; }}\ncd {}\n",
        ssh,
        sh_quote(&dir.display().to_string())
    );
    for (i, h) in hosts.iter().enumerate() {
        let _ = writeln!(s, "host_{i}() {{\n  S=cm-{i}; rc=0");
        let _ = writeln!(
            s,
            "  bssh -o ControlMaster=yes -o ControlPath=$S -o ControlPersist=yes -fN {a} || return 1",
            a = h.address
        );
        for (k, t) in tasks.iter().enumerate() {
            let remote = task_shell(t, &h.name, &h.address);
            let _ = writeln!(
                s,
                "  bssh -o ControlPath=$S {a} {r} || {{ echo \"{n}: task {k} failed\" >&2; rc=1; }}",
                a = h.address,
                r = sh_quote(&remote),
                n = h.name,
                k = k + 1
            );
        }
        let _ = writeln!(
            s,
            "  bssh -o ControlPath=$S -O exit {a} 2>/dev/null\n  return $rc\n}}",
            a = h.address
        );
    }
    s.push_str("pids=\"\"\n");
    for i in 0..hosts.n {
        let _ = writeln!(s, "host_{i} & pids=\"$pids $!\"");
    }
    s.push_str("fail=0\nfor p in $pids; do wait $p || fail=1; done\nexit $fail\n");
    write(&dir.join("run.sh"), &s)
}

/// ssh-host/run.sh plus host-NAME.sh: the whole workload of a host as one script sent
/// over one fresh connection (`ssh host sh -s < host-NAME.sh`), all hosts in parallel.
fn gen_ssh_host(dir: &Path, hosts: &Hosts, tasks: &[Task]) -> Result<()> {
    let ssh = ssh_prefix(hosts.lab);
    let mut run = format!(
        "#!/bin/sh\n# One OpenSSH round trip per host (the floor), all hosts in parallel.\n# Written by `cargo xtask bench`.\ncd {}\npids=\"\"\n",
        sh_quote(&dir.display().to_string())
    );
    for h in hosts.iter() {
        let mut script = String::from("# the whole workload of one host\n");
        for (k, t) in tasks.iter().enumerate() {
            let _ = writeln!(
                script,
                "{{ {}; }} || {{ echo \"{}: task {} failed\" >&2; exit 1; }}",
                task_shell(t, &h.name, &h.address),
                h.name,
                k + 1
            );
        }
        let file = format!("host-{}.sh", h.name);
        write(&dir.join(&file), &script)?;
        let _ = writeln!(run, "{ssh} {} sh -s < {file} & pids=\"$pids $!\"", h.address);
    }
    run.push_str("fail=0\nfor p in $pids; do wait $p || fail=1; done\nexit $fail\n");
    write(&dir.join("run.sh"), &run)
}

/// ansible/: ansible.cfg, inventory.ini, playbook.yml (JSON is YAML), templates/.
fn gen_ansible(dir: &Path, hosts: &Hosts, tasks: &[Task], python: &str) -> Result<()> {
    let cfg = format!(
        "# written by `cargo xtask bench`\n\
         [defaults]\n\
         inventory = inventory.ini\n\
         forks = {forks}\n\
         gathering = explicit\n\
         host_key_checking = True\n\
         retry_files_enabled = False\n\
         interpreter_python = {python}\n\
         [ssh_connection]\n\
         pipelining = True\n\
         ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={kh} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes\n",
        forks = hosts.n.max(5),
        kh = hosts.lab.known_hosts_path().display(),
    );
    write(&dir.join("ansible.cfg"), &cfg)?;
    let mut inv = String::from("[bench]\n");
    for h in hosts.iter() {
        let _ = writeln!(
            inv,
            "{} ansible_host={} bench_address={}",
            h.name, h.address, h.address
        );
    }
    let _ = write!(
        inv,
        "[bench:vars]\nansible_user=root\nansible_ssh_private_key_file={}\n",
        hosts.lab.key_path().display()
    );
    write(&dir.join("inventory.ini"), &inv)?;
    let mut items = Vec::new();
    for t in tasks {
        let body = match t {
            Task::Dir { path } => {
                format!(
                    "\"ansible.builtin.file\": {{\"path\": {}, \"state\": \"directory\", \"mode\": \"0755\"}}",
                    json_str(path)
                )
            }
            Task::File { path, content } => format!(
                "\"ansible.builtin.copy\": {{\"dest\": {}, \"content\": {}, \"mode\": \"0644\"}}",
                json_str(path),
                json_str(content)
            ),
            Task::Template { path, name } => format!(
                "\"ansible.builtin.template\": {{\"src\": {}, \"dest\": {}, \"mode\": \"0644\"}}",
                json_str(&format!("templates/{name}")),
                json_str(path)
            ),
            Task::Guarded { argv, creates } => format!(
                "\"ansible.builtin.command\": {{\"argv\": [{}], \"creates\": {}}}",
                argv.iter().map(|a| json_str(a)).collect::<Vec<_>>().join(", "),
                json_str(creates)
            ),
        };
        items.push(format!("      {{\"name\": {}, {body}}}", json_str(&t.title())));
    }
    let pb = format!(
        "[\n  {{\n    \"name\": \"bench\",\n    \"hosts\": \"bench\",\n    \"gather_facts\": false,\n    \"tasks\": [\n{}\n    ]\n  }}\n]\n",
        items.join(",\n")
    );
    write(&dir.join("playbook.yml"), &pb)?;
    write_templates(&dir.join("templates"))
}

/// pyinfra/: inventory.py, deploy.py, templates/.
fn gen_pyinfra(dir: &Path, hosts: &Hosts, tasks: &[Task], python: &str) -> Result<()> {
    let mut inv = String::from("# written by `cargo xtask bench`\nbench = [\n");
    for h in hosts.iter() {
        let _ = writeln!(
            inv,
            "    ({}, {{\"ssh_hostname\": {}, \"ssh_user\": \"root\", \"ssh_key\": {}, \"ssh_known_hosts_file\": {}, \
             \"ssh_strict_host_key_checking\": \"yes\", \"bench_address\": {}, \"python\": {}}}),",
            json_str(&h.name),
            json_str(&h.address),
            json_str(&hosts.lab.key_path().display().to_string()),
            json_str(&hosts.lab.known_hosts_path().display().to_string()),
            json_str(&h.address),
            json_str(python),
        );
    }
    inv.push_str("]\n");
    write(&dir.join("inventory.py"), &inv)?;
    let mut d = String::from(
        "# written by `cargo xtask bench`\n\
         from io import StringIO\n\
         from pyinfra import host\n\
         from pyinfra.facts.files import File\n\
         from pyinfra.operations import files, server\n\n",
    );
    for t in tasks {
        let name = json_str(&t.title());
        let _ = match t {
            Task::Dir { path } => writeln!(
                d,
                "files.directory(name={name}, path={}, mode=\"755\")",
                json_str(path)
            ),
            Task::File { path, content } => writeln!(
                d,
                "files.put(name={name}, src=StringIO({}), dest={}, mode=\"644\")",
                json_str(content),
                json_str(path)
            ),
            Task::Template { path, name: tpl } => writeln!(
                d,
                "files.template(name={name}, src={}, dest={}, mode=\"644\", inventory_hostname=host.name, bench_address=host.data.bench_address)",
                json_str(&format!("templates/{tpl}")),
                json_str(path)
            ),
            Task::Guarded { argv, creates } => writeln!(
                d,
                "if not host.get_fact(File, path={}):\n    server.shell(name={name}, commands=[{}])",
                json_str(creates),
                json_str(&argv.join(" "))
            ),
        };
    }
    write(&dir.join("deploy.py"), &d)?;
    write_templates(&dir.join("templates"))
}

// ---------------------------------------------------------------------------------
// Measuring a child

/// What one timed run cost.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    wall: Duration,
    /// Controller CPU: user + system time of the whole process tree.
    cpu: Duration,
    /// Largest resident set of any process of the tree, KiB.
    max_rss_kib: u64,
    ok: bool,
}

/// The measuring process: `bench __measure RESULT LOG -- PROGRAM ARGS...`. A child
/// subreaper, so daemonized descendants (ssh control masters) come back to it: once the
/// direct child exits, leftovers get SIGTERM (then SIGKILL after 10 s), every one is
/// reaped, and `getrusage(RUSAGE_CHILDREN)` covers them all.
fn measure_child(args: &[String]) -> Result<()> {
    use nix::sys::resource::{UsageWho, getrusage};
    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::Pid;

    let [result, log, dashdash, program, rest @ ..] = args else {
        bail!("usage: bench __measure RESULT LOG -- PROGRAM ARGS...");
    };
    if dashdash != "--" {
        bail!("bench __measure: expected `--` before the program");
    }
    nix::sys::prctl::set_child_subreaper(true).context("become a child subreaper")?;
    let log = fs::File::create(log).with_context(|| format!("create {log}"))?;
    let started = Instant::now();
    let child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {program}"))?;
    let main = Pid::from_raw(child.id() as i32);
    let mut wall = None;
    let mut code = -1;
    let mut termed_at: Option<Instant> = None;
    let me = std::process::id();
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, c)) if pid == main => {
                wall = Some(started.elapsed());
                code = c;
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == main => {
                wall = Some(started.elapsed());
                code = 128 + sig as i32;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::ECHILD) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => bail!("waitpid: {e}"),
        }
        if wall.is_some() {
            // The main child is gone: stop what it left behind (control masters).
            let left = children_of(me);
            if left.is_empty() {
                continue; // the next waitpid reports ECHILD
            }
            let sig = match termed_at {
                None => {
                    termed_at = Some(Instant::now());
                    Signal::SIGTERM
                }
                Some(t) if t.elapsed() > Duration::from_secs(10) => Signal::SIGKILL,
                Some(_) => {
                    // Wait a little for the ones already told to go.
                    std::thread::sleep(Duration::from_millis(20));
                    match waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                        Err(nix::errno::Errno::ECHILD) => break,
                        _ => continue,
                    }
                }
            };
            for p in left {
                let _ = kill(Pid::from_raw(p as i32), sig);
            }
        }
    }
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage")?;
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    let cpu_us = tv(usage.user_time()) + tv(usage.system_time());
    let wall = wall.unwrap_or_else(|| started.elapsed());
    fs::write(
        result,
        format!("{} {} {} {}\n", wall.as_micros(), cpu_us, usage.max_rss(), code),
    )
    .with_context(|| format!("write {result}"))?;
    Ok(())
}

/// Live children of `pid` (read from /proc; used to find adopted orphans).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/stat")).ok().and_then(|s| {
                let rest = s.rsplit_once(')')?.1;
                let mut f = rest.split_whitespace();
                let state = f.next()?;
                let ppid: u32 = f.next()?.parse().ok()?;
                Some(ppid == pid && state != "Z")
            }) == Some(true)
        })
        .collect()
}

/// A private copy of this binary for the measuring processes: teammates rebuild
/// `target/debug/xtask` while a bench runs, which would pull it from under us.
fn measure_exe() -> Result<PathBuf> {
    static EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(p) = EXE.get() {
        return Ok(p.clone());
    }
    // /proc/self/exe still reads when the file was replaced or deleted meanwhile.
    let me = PathBuf::from("/proc/self/exe");
    let copy = work_dir().join("bin").join("xtask-measure");
    fs::create_dir_all(copy.parent().expect("has a parent"))?;
    let tmp = copy.with_extension("tmp");
    fs::copy(&me, &tmp).with_context(|| format!("copy {} to {}", me.display(), tmp.display()))?;
    fs::rename(&tmp, &copy)?;
    Ok(EXE.get_or_init(|| copy).clone())
}

/// Run `cmd` under the measuring process; its output goes to `log`.
fn measured(cmd: &[String], cwd: &Path, env: &[(&str, String)], log: &Path) -> Result<Sample> {
    let exe = measure_exe()?;
    let result = log.with_extension("result");
    let _ = fs::remove_file(&result);
    let status = Command::new(exe)
        .arg("bench")
        .arg("__measure")
        .arg(&result)
        .arg(log)
        .arg("--")
        .args(cmd)
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .status()
        .context("start the measuring process")?;
    if !status.success() {
        bail!("the measuring process failed ({status}) for {cmd:?}");
    }
    let text = fs::read_to_string(&result).with_context(|| format!("read {}", result.display()))?;
    let f: Vec<u64> = text
        .split_whitespace()
        .filter_map(|x| x.parse::<i64>().ok())
        .map(|x| x.max(0) as u64)
        .collect();
    let code_raw: i64 = text
        .split_whitespace()
        .nth(3)
        .and_then(|x| x.parse().ok())
        .unwrap_or(-1);
    let [wall_us, cpu_us, rss, ..] = f.as_slice() else {
        bail!("unexpected measurement {text:?}");
    };
    Ok(Sample {
        wall: Duration::from_micros(*wall_us),
        cpu: Duration::from_micros(*cpu_us),
        max_rss_kib: *rss,
        ok: code_raw == 0,
    })
}

// ---------------------------------------------------------------------------------
// Hosts' files, seen from the controller (the lab bind-mounts them from LAB_ROOT)

fn host_bench_dir(lab: &LabInfo, host: &str) -> PathBuf {
    lab.host_dir(host)
        .join("srv")
        .join(REMOTE_DIR.trim_start_matches("/srv/"))
}

/// Whether every sshd of the lab still runs.
fn lab_alive(hosts: &Hosts) -> Result<bool> {
    let Some(now) = lab::load(LAB_NAME)? else {
        return Ok(false);
    };
    Ok(now.hosts.len() >= hosts.n && now.hosts.iter().take(hosts.n).all(lab::LabHost::sshd_alive))
}

/// Shell start-up files of root that the hosts' login shell reads for every SSH
/// command (Debian's bash reads ~/.bashrc when started by sshd).
const RC_FILES: &[&str] = &["/root/.bashrc"];

/// Hide root's ~/.bashrc inside the lab hosts (an empty file bind-mounted over it in
/// each host's mount namespace, which the host's sshd sessions inherit). A developer's
/// bashrc (here: `pyenv init`, ~300 ms) would otherwise be paid by every SSH command of
/// every tool and hide the differences the bench is about; a server's root shell starts
/// in about a millisecond. Returns what was hidden, for the report.
fn quiet_rc_files(lab: &LabInfo) -> Result<Vec<String>> {
    let present: Vec<&str> = RC_FILES
        .iter()
        .copied()
        .filter(|f| Path::new(f).is_file())
        .collect();
    if present.is_empty() {
        return Ok(Vec::new());
    }
    let empty = lab.dir.join("empty-rc");
    fs::write(&empty, "")?;
    let Some(now) = lab::load(&lab.name)? else {
        bail!("lab {} is not running", lab.name)
    };
    for h in &now.hosts {
        for f in &present {
            xtask::run_quiet(
                Command::new("nsenter")
                    .arg("--target")
                    .arg(h.sshd_pid.to_string())
                    .args(["--mount", "--", "mount", "--bind"])
                    .arg(&empty)
                    .arg(f),
            )
            .with_context(|| format!("hide {f} in lab host {}", h.name))?;
        }
    }
    Ok(present.iter().map(|f| f.to_string()).collect())
}

/// Bring the lab back when it is gone (same names, addresses and file paths; new keys,
/// which every tool reads from the same files).
fn ensure_lab(hosts: &Hosts) -> Result<()> {
    if !lab_alive(hosts)? {
        eprintln!("bench: lab {LAB_NAME:?} is not (fully) running: starting it again");
        let info = lab::up(LAB_NAME, hosts.lab.hosts.len())?;
        quiet_rc_files(&info)?;
    }
    Ok(())
}

/// Cold start: remove the workload's directory on every host.
fn wipe(hosts: &Hosts) -> Result<()> {
    for h in hosts.iter() {
        let d = host_bench_dir(hosts.lab, &h.name);
        match fs::remove_dir_all(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("wipe {}", d.display())),
        }
    }
    Ok(())
}

/// What a host's workload directory holds: per path, kind, mode and content.
fn fingerprint(dir: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        let Ok(meta) = fs::symlink_metadata(&abs) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        let what = if meta.is_dir() {
            if let Ok(rd) = fs::read_dir(&abs) {
                for e in rd.flatten() {
                    let name = e.file_name();
                    // temp files of an interrupted write would show up as a difference
                    stack.push(rel.join(name));
                }
            }
            format!("dir {mode:o}")
        } else if meta.is_file() {
            let content = fs::read(&abs).unwrap_or_default();
            format!("file {mode:o} {}", String::from_utf8_lossy(&content))
        } else {
            format!("other {mode:o}")
        };
        out.insert(rel.display().to_string(), what);
    }
    out
}

fn fingerprints(hosts: &Hosts) -> Vec<BTreeMap<String, String>> {
    hosts
        .iter()
        .map(|h| fingerprint(&host_bench_dir(hosts.lab, &h.name)))
        .collect()
}

/// Describe how `got` differs from `want` (first difference), `None` when equal.
fn compare(
    hosts: &Hosts,
    want: &[BTreeMap<String, String>],
    got: &[BTreeMap<String, String>],
) -> Option<String> {
    for ((h, w), g) in hosts.iter().zip(want).zip(got) {
        if w == g {
            continue;
        }
        for (path, wv) in w {
            match g.get(path) {
                None => return Some(format!("{}: {path} missing", h.name)),
                Some(gv) if gv != wv => {
                    let short = |s: &str| s.chars().take(60).collect::<String>().replace('\n', "⏎");
                    return Some(format!("{}: {path}: {} vs {}", h.name, short(gv), short(wv)));
                }
                _ => {}
            }
        }
        if let Some(extra) = g.keys().find(|k| !w.contains_key(*k)) {
            return Some(format!("{}: extra {extra}", h.name));
        }
    }
    None
}

// ---------------------------------------------------------------------------------
// Tool setup: troupe binary, peers' venv

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The release troupe binary, built into target/bench so the build does not hold the
/// lock of the shared target dir (others build there) longer than needed.
fn troupe_binary(opts: &Options) -> Result<PathBuf> {
    if let Some(p) = &opts.troupe {
        if !p.is_file() {
            bail!("--troupe {}: no such file", p.display());
        }
        // The runs start in the workload's folder: make a relative path absolute.
        return p
            .canonicalize()
            .with_context(|| format!("--troupe {}", p.display()));
    }
    let root = xtask::workspace_root();
    let target = root.join("target").join("bench");
    eprintln!("bench: building troupe --release (into {})", target.display());
    xtask::run_loud(
        Command::new(cargo())
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target)
            .args(["build", "--release", "-p", "troupe-run", "--bin", "troupe"]),
    )?;
    Ok(target.join("release").join("troupe"))
}

struct Peers {
    bin: PathBuf,
    ansible_version: String,
    pyinfra_version: String,
}

fn work_dir() -> PathBuf {
    xtask::workspace_root().join("bench").join("work")
}

/// A venv under bench/work/venv with ansible-core and pyinfra, created on first use.
fn peers() -> Result<Peers> {
    let venv = work_dir().join("venv");
    let bin = venv.join("bin");
    let installed = bin.join("ansible-playbook").is_file() && bin.join("pyinfra").is_file();
    if !installed {
        if find_python().is_none() && xtask::deps::is_root() && xtask::deps::find_command("apt-get").is_some()
        {
            // Debian's python3 has no venv/ensurepip without this package.
            eprintln!("bench: installing python3-venv (for the Ansible and pyinfra venv)");
            let install = || {
                xtask::run_loud(
                    Command::new("apt-get")
                        .env("DEBIAN_FRONTEND", "noninteractive")
                        .args(["install", "-y", "--no-install-recommends", "python3-venv"]),
                )
            };
            if install().is_err() {
                xtask::run_loud(Command::new("apt-get").arg("update"))?;
                install()?;
            }
        }
        let python = find_python().context(
            "Ansible and pyinfra need python3 with the venv module (Debian: `apt-get install python3-venv`); \
             or skip them with --no-peers",
        )?;
        eprintln!(
            "bench: installing ansible-core and pyinfra from PyPI into {}",
            venv.display()
        );
        xtask::run_loud(Command::new(&python).args(["-m", "venv"]).arg(&venv))?;
        xtask::run_loud(Command::new(bin.join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "ansible-core",
            "pyinfra",
        ]))
        .context(
            "pip could not install ansible-core and pyinfra (is PyPI reachable?); skip them with --no-peers",
        )?;
    }
    let version = |prog: &str, arg: &str| -> String {
        Command::new(bin.join(prog))
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                let text =
                    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
                text.lines().next().unwrap_or("").trim().to_string()
            })
            .unwrap_or_else(|| "unknown".into())
    };
    Ok(Peers {
        ansible_version: version("ansible", "--version"),
        pyinfra_version: version("pyinfra", "--version"),
        bin,
    })
}

fn find_python() -> Option<String> {
    for p in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(p)
            .args(["-c", "import venv, ensurepip"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(p.to_string());
        }
    }
    None
}

/// The Python the lab hosts run Ansible's modules with (the system one: the hosts share
/// this machine's /usr).
fn host_python() -> String {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or("/usr/bin/python3")
        .to_string()
}

// ---------------------------------------------------------------------------------
// Running one tool

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Cold,
    Warm,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Cold => "cold",
            Mode::Warm => "warm",
        }
    }
}

struct Ctx<'a> {
    hosts: Hosts<'a>,
    dir: PathBuf,
    troupe: Option<PathBuf>,
    peers: Option<&'a Peers>,
    tasks: usize,
}

/// A command line, its working directory and environment.
type Invocation = (Vec<String>, PathBuf, Vec<(&'static str, String)>);

/// The command line of one tool, its working directory and environment.
fn command_for(tool: Tool, cx: &Ctx, run_id: &str) -> Result<Invocation> {
    let n = cx.hosts.n;
    Ok(match tool {
        Tool::Troupe => {
            let d = cx.dir.join("troupe");
            let bin = cx.troupe.as_ref().context("troupe binary")?;
            (
                vec![
                    bin.display().to_string(),
                    "run".into(),
                    "playbook.kdl".into(),
                    "-i".into(),
                    "inventory.kdl".into(),
                    "--forks".into(),
                    n.to_string(),
                    "--output".into(),
                    "json".into(),
                ],
                d,
                vec![],
            )
        }
        Tool::SshTask => (
            vec!["sh".into(), "run.sh".into()],
            cx.dir.join("ssh-task"),
            vec![],
        ),
        Tool::SshHost => (
            vec!["sh".into(), "run.sh".into()],
            cx.dir.join("ssh-host"),
            vec![],
        ),
        Tool::Ansible => {
            let p = cx.peers.context("peers")?;
            let d = cx.dir.join("ansible");
            // A fresh control socket dir per run: no run reuses another's connections.
            let cp = d.join("cp").join(run_id);
            fs::create_dir_all(&cp)?;
            (
                vec![
                    p.bin.join("ansible-playbook").display().to_string(),
                    "playbook.yml".into(),
                ],
                d.clone(),
                vec![
                    ("ANSIBLE_CONFIG", d.join("ansible.cfg").display().to_string()),
                    ("ANSIBLE_SSH_CONTROL_PATH_DIR", cp.display().to_string()),
                    ("ANSIBLE_LOCAL_TEMP", d.join("tmp").display().to_string()),
                    ("ANSIBLE_NOCOLOR", "1".into()),
                    (
                        "PATH",
                        format!(
                            "{}:{}",
                            p.bin.display(),
                            std::env::var("PATH").unwrap_or_default()
                        ),
                    ),
                ],
            )
        }
        Tool::Pyinfra => {
            let p = cx.peers.context("peers")?;
            (
                vec![
                    p.bin.join("pyinfra").display().to_string(),
                    "-y".into(),
                    "--parallel".into(),
                    n.to_string(),
                    "inventory.py".into(),
                    "deploy.py".into(),
                ],
                cx.dir.join("pyinfra"),
                vec![(
                    "PATH",
                    format!(
                        "{}:{}",
                        p.bin.display(),
                        std::env::var("PATH").unwrap_or_default()
                    ),
                )],
            )
        }
    })
}

/// Check what a tool said it did, where it says so in a form we can read: troupe's JSON
/// recap and Ansible's PLAY RECAP must show every host with `changed` = all tasks
/// (cold) or 0 (warm) and nothing failed or unreachable.
fn check_report(tool: Tool, mode: Mode, cx: &Ctx, log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).unwrap_or_default();
    check_report_text(tool, mode, cx.tasks, cx.hosts.n, &text)
}

/// [`check_report`] on a tool's output text.
fn check_report_text(tool: Tool, mode: Mode, tasks: usize, hosts: usize, text: &str) -> Option<String> {
    let want = match mode {
        Mode::Cold => tasks,
        Mode::Warm => 0,
    };
    let counts: Vec<(String, usize, usize)> = match tool {
        Tool::Troupe => {
            let Some(line) = text.lines().find(|l| l.contains("\"event\":\"recap\"")) else {
                return Some("no recap in troupe's output".into());
            };
            // {"event":"recap","hosts":{"podc01":{"ok":1,"changed":24,...},...}}
            let hosts = line.split_once("\"hosts\":{").map(|(_, r)| r).unwrap_or("");
            hosts
                .split("},")
                .filter_map(|chunk| {
                    let (name, stats) = chunk.split_once(":{")?;
                    let num = |k: &str| -> usize {
                        stats
                            .split_once(&format!("\"{k}\":"))
                            .and_then(|(_, r)| r.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
                            .unwrap_or(0)
                    };
                    Some((
                        name.trim_matches(|c| c == '"' || c == '{').to_string(),
                        num("changed"),
                        num("failed") + num("unreachable"),
                    ))
                })
                .collect()
        }
        Tool::Ansible => text
            .lines()
            .skip_while(|l| !l.starts_with("PLAY RECAP"))
            .skip(1)
            .filter_map(|l| {
                let (name, rest) = l.split_once(':')?;
                let num = |k: &str| -> usize {
                    rest.split_whitespace()
                        .find_map(|f| f.strip_prefix(&format!("{k}=")))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
                };
                Some((
                    name.trim().to_string(),
                    num("changed"),
                    num("failed") + num("unreachable"),
                ))
            })
            .collect(),
        _ => return None,
    };
    if counts.len() != hosts {
        return Some(format!("recap lists {} hosts, not {hosts}", counts.len()));
    }
    counts
        .iter()
        .find(|(_, changed, bad)| *changed != want || *bad != 0)
        .map(|(h, changed, bad)| {
            format!("{h}: changed={changed} (expected {want}), failed+unreachable={bad}")
        })
}

#[derive(Debug, Clone, Default)]
struct Cell {
    samples: Vec<Sample>,
    /// Problems seen: a failed run, a wrong recap, different files.
    notes: Vec<String>,
}

impl Cell {
    fn median_wall(&self) -> Option<Duration> {
        median(self.samples.iter().map(|s| s.wall).collect())
    }
    fn median_cpu(&self) -> Option<Duration> {
        median(self.samples.iter().map(|s| s.cpu).collect())
    }
    fn max_rss(&self) -> u64 {
        self.samples.iter().map(|s| s.max_rss_kib).max().unwrap_or(0)
    }
}

fn median(mut v: Vec<Duration>) -> Option<Duration> {
    if v.is_empty() {
        return None;
    }
    v.sort();
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2
    })
}

type Results = BTreeMap<(usize, Mode, Tool), Cell>;

/// Measure one tool at one host count: `runs` cold runs (each after a wipe), then
/// `runs` warm ones. The files after the first cold run are compared with `reference`
/// (troupe's), or become the reference.
fn measure_tool(
    tool: Tool,
    cx: &Ctx,
    runs: usize,
    reference: &mut Option<Vec<BTreeMap<String, String>>>,
    results: &mut Results,
) -> Result<()> {
    let n = cx.hosts.n;
    let logs = cx.dir.join("logs");
    fs::create_dir_all(&logs)?;
    for mode in [Mode::Cold, Mode::Warm] {
        let mut cell = Cell::default();
        for r in 1..=runs {
            if mode == Mode::Cold {
                wipe(&cx.hosts)?;
            }
            let run_id = format!("{}-{}-{r}", tool.name(), mode.name());
            let (cmd, cwd, env) = command_for(tool, cx, &run_id)?;
            let log = logs.join(format!("{run_id}.log"));
            ensure_lab(&cx.hosts)?;
            let mut s = measured(&cmd, &cwd, &env, &log)?;
            if !s.ok && !lab_alive(&cx.hosts)? {
                // Someone stopped the lab under us (`cargo xtask test` stops every lab
                // when it ends): not the tool's fault, so run it again on a new lab.
                eprintln!("bench: the lab died during the run; restarting it and running again");
                cell.notes
                    .push(format!("run {r} repeated: the lab was stopped during it"));
                ensure_lab(&cx.hosts)?;
                if mode == Mode::Cold {
                    wipe(&cx.hosts)?;
                }
                s = measured(&cmd, &cwd, &env, &log)?;
            }
            eprintln!(
                "bench: {n:>3} hosts {:<4} {:<8} run {r}/{runs}: {:>8.2} s wall, {:>7.2} s cpu, {:>6.1} MiB{}",
                mode.name(),
                tool.name(),
                s.wall.as_secs_f64(),
                s.cpu.as_secs_f64(),
                s.max_rss_kib as f64 / 1024.0,
                if s.ok {
                    String::new()
                } else {
                    format!("  FAILED, see {}", log.display())
                }
            );
            if !s.ok {
                cell.notes.push(format!("run {r} failed (log: {})", rel(&log)));
            } else if let Some(problem) = check_report(tool, mode, cx, &log) {
                cell.notes.push(format!("run {r}: {problem}"));
            }
            if mode == Mode::Cold && r == 1 {
                let got = fingerprints(&cx.hosts);
                match reference {
                    Some(want) => {
                        if let Some(diff) = compare(&cx.hosts, want, &got) {
                            cell.notes.push(format!("files differ from troupe's: {diff}"));
                        }
                    }
                    None => *reference = Some(got),
                }
            }
            cell.samples.push(s);
        }
        results.insert((n, mode, tool), cell);
    }
    Ok(())
}

fn rel(p: &Path) -> String {
    let root = xtask::workspace_root();
    p.strip_prefix(&root).unwrap_or(p).display().to_string()
}

// ---------------------------------------------------------------------------------
// The fan-out benchmark

fn fan_out(opts: &Options) -> Result<()> {
    let root = xtask::workspace_root();
    let wants_peers = opts.tools.iter().any(|t| t.is_peer());
    // The lab's packages (openssh-server, util-linux's unshare/nsenter...), as the demo.
    xtask::deps::ensure_packages()?;
    for tool in ["ssh", "sshd", "sh", "cmp", "mktemp", "nsenter"] {
        if xtask::deps::find_command(tool).is_none() {
            bail!("`{tool}` is not installed: run `cargo xtask deps` first");
        }
    }
    let troupe = if opts.tools.contains(&Tool::Troupe) {
        Some(troupe_binary(opts)?)
    } else {
        None
    };
    let peers = if wants_peers { Some(peers()?) } else { None };
    let max_n = *opts.hosts.iter().max().expect("checked non-empty");
    eprintln!("bench: starting lab {LAB_NAME:?} with {max_n} hosts");
    let lab = lab::up(LAB_NAME, max_n)?;
    let hidden = quiet_rc_files(&lab)?;
    let load_before = loadavg();
    let started = Instant::now();
    let outcome = measure_all(opts, &lab, troupe.as_deref(), peers.as_ref());
    let load = format!(
        "load average {load_before} before, {} after; {:.0} s in all",
        loadavg(),
        started.elapsed().as_secs_f64()
    );
    if opts.keep_lab {
        eprintln!("bench: lab {LAB_NAME:?} left running (`cargo xtask lab down --name {LAB_NAME}`)");
    } else if let Err(e) = lab::down(LAB_NAME) {
        eprintln!("warning: could not stop the bench lab: {e:#}");
    }
    let results = outcome?;
    let mut md = report(opts, &results, troupe.as_deref(), peers.as_ref(), &load)?;
    if !hidden.is_empty() {
        let _ = writeln!(
            md,
            "\nIn the lab hosts, {} was hidden (an empty file mounted over it): it is read by the \
             login shell of every SSH command, and a developer's one (e.g. `pyenv init`) costs \
             far more than the tools being compared.",
            hidden.join(", ")
        );
    }
    let path = match &opts.out {
        Some(p) => p.clone(),
        None => root
            .join("bench")
            .join("results")
            .join(format!("{}-{}.md", today()?, hostname())),
    };
    write(&path, &md)?;
    println!("{md}");
    eprintln!("bench: results written to {}", path.display());
    Ok(())
}

fn measure_all(
    opts: &Options,
    lab: &LabInfo,
    troupe: Option<&Path>,
    peers: Option<&Peers>,
) -> Result<Results> {
    let tasks = workload();
    let mut results = Results::new();
    for &n in &opts.hosts {
        let hosts = Hosts { lab, n };
        let dir = work_dir().join(format!("n{n}"));
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("clear {}", dir.display()))?;
        }
        let python = host_python();
        gen_troupe(&dir.join("troupe"), &hosts, &tasks)?;
        gen_ssh_task(&dir.join("ssh-task"), &hosts, &tasks)?;
        gen_ssh_host(&dir.join("ssh-host"), &hosts, &tasks)?;
        gen_ansible(&dir.join("ansible"), &hosts, &tasks, &python)?;
        gen_pyinfra(&dir.join("pyinfra"), &hosts, &tasks, &python)?;
        let cx = Ctx {
            hosts,
            dir,
            troupe: troupe.map(Path::to_path_buf),
            peers,
            tasks: tasks.len(),
        };
        let mut reference = None;
        for &tool in &opts.tools {
            if tool.is_peer() && n > opts.peer_max_hosts {
                eprintln!(
                    "bench: {n} hosts: skipping {} (above --peer-max-hosts {})",
                    tool.name(),
                    opts.peer_max_hosts
                );
                continue;
            }
            let runs = if tool.is_peer() { opts.peer_runs } else { opts.runs };
            measure_tool(tool, &cx, runs, &mut reference, &mut results)?;
        }
        wipe(&cx.hosts)?;
    }
    Ok(results)
}

// ---------------------------------------------------------------------------------
// The report

fn today() -> Result<String> {
    Ok(xtask::run_quiet(Command::new("date").args(["-u", "+%Y-%m-%d"]))?
        .trim()
        .to_string())
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

fn machine() -> String {
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem_kib: u64 = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0);
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split_once(':').map_or("", |x| x.1).trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    format!(
        "{nproc} CPUs ({cpu}), {:.1} GiB memory, Linux {kernel}",
        mem_kib as f64 / 1024.0 / 1024.0
    )
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn troupe_rev() -> String {
    let root = xtask::workspace_root();
    let rev = xtask::run_quiet(
        Command::new("git")
            .current_dir(&root)
            .args(["rev-parse", "--short", "HEAD"]),
    )
    .map(|s| s.trim().to_string())
    .unwrap_or_else(|_| "unknown".into());
    let dirty = Command::new("git")
        .current_dir(&root)
        .args(["status", "--porcelain", "--untracked-files=no", "--", "crates"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if dirty {
        format!("{rev} + uncommitted changes in crates/")
    } else {
        rev
    }
}

fn openssh_version() -> String {
    Command::new("ssh")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("–".into(), |d| format!("{:.2}", d.as_secs_f64()))
}

fn ratio(a: Option<Duration>, b: Option<Duration>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if !b.is_zero() => format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64()),
        _ => "–".into(),
    }
}

fn report(
    opts: &Options,
    results: &Results,
    troupe: Option<&Path>,
    peers: Option<&Peers>,
    load: &str,
) -> Result<String> {
    let tasks = workload().len();
    let mut md = String::new();
    let _ = writeln!(md, "# Fan-out benchmark, {} on {}\n", today()?, hostname());
    let _ = writeln!(md, "- machine: {}; {load}", machine());
    match (troupe, &opts.troupe) {
        (Some(bin), Some(_)) => {
            let _ = writeln!(
                md,
                "- troupe: the binary {} (given with --troupe; the tree is at git {})",
                bin.display(),
                troupe_rev()
            );
        }
        (Some(_), None) => {
            let _ = writeln!(md, "- troupe: git {}, release build", troupe_rev());
        }
        (None, _) => {}
    }
    let _ = writeln!(md, "- OpenSSH: {}", openssh_version());
    if let Some(p) = peers {
        let _ = writeln!(
            md,
            "- Ansible: {}; pyinfra: {}",
            p.ansible_version, p.pyinfra_version
        );
    }
    let _ = writeln!(
        md,
        "- workload: {tasks} tasks per host (5 directories, 8 files with fixed content, 6 templated files, \
         5 guarded commands); cold = `/srv/bench` wiped on every host first, warm = nothing to change"
    );
    let _ = writeln!(
        md,
        "- runs: median of {} (troupe, OpenSSH), {} (Ansible, pyinfra; only up to {} hosts); command: `cargo xtask bench {}`\n",
        opts.runs,
        opts.peer_runs,
        opts.peer_max_hosts,
        std::env::args()
            .skip(2)
            .filter(|a| a != "bench")
            .collect::<Vec<_>>()
            .join(" ")
    );
    let _ = writeln!(
        md,
        "Wall time is the median; host-tasks/s = hosts × {tasks} / wall; CPU is the controller's user+system \
         time of the whole process tree (ssh clients and control masters included); RSS is the largest single \
         process. `vs ssh-task` and `vs floor` divide by the two OpenSSH baselines' medians.\n"
    );
    let _ = writeln!(
        md,
        "| hosts | mode | tool | wall s | host-tasks/s | CPU s | peak RSS MiB | vs ssh-task | vs floor |\n|---:|---|---|---:|---:|---:|---:|---:|---:|"
    );
    let mut notes = Vec::new();
    for &n in &opts.hosts {
        for mode in [Mode::Cold, Mode::Warm] {
            let base = |t: Tool| results.get(&(n, mode, t)).and_then(Cell::median_wall);
            for tool in Tool::ALL {
                let Some(cell) = results.get(&(n, mode, tool)) else {
                    continue;
                };
                let wall = cell.median_wall();
                let rate = wall.filter(|w| !w.is_zero()).map_or("–".into(), |w| {
                    format!("{:.0}", (n * tasks) as f64 / w.as_secs_f64())
                });
                let flag = if cell.notes.is_empty() { "" } else { " ⚠" };
                let _ = writeln!(
                    md,
                    "| {n} | {} | {}{flag} | {} | {rate} | {} | {:.1} | {} | {} |",
                    mode.name(),
                    tool.name(),
                    secs(wall),
                    secs(cell.median_cpu()),
                    cell.max_rss() as f64 / 1024.0,
                    ratio(wall, base(Tool::SshTask)),
                    ratio(wall, base(Tool::SshHost)),
                );
                for note in &cell.notes {
                    notes.push(format!("{n} hosts, {}, {}: {note}", mode.name(), tool.name()));
                }
            }
        }
    }
    if !notes.is_empty() {
        md.push_str("\n⚠ Problems seen (the row's numbers may not compare):\n\n");
        for n in notes {
            let _ = writeln!(md, "- {n}");
        }
    }
    md.push_str("\nTools: ");
    md.push_str(
        &opts
            .tools
            .iter()
            .map(|t| format!("`{}` = {}", t.name(), t.describe()))
            .collect::<Vec<_>>()
            .join("; "),
    );
    md.push_str(".\n");
    // troupe's own RSS growth per host, from the cold runs at the extreme host counts.
    let rss = |n: usize| results.get(&(n, Mode::Cold, Tool::Troupe)).map(Cell::max_rss);
    let (lo, hi) = (opts.hosts[0], opts.hosts[opts.hosts.len() - 1]);
    if let (Some(a), Some(b), true) = (rss(lo), rss(hi), hi > lo) {
        let _ = writeln!(
            md,
            "\ntroupe's peak RSS grows by {:.0} KiB per host ({lo} → {hi} hosts: {:.1} → {:.1} MiB).",
            (b as f64 - a as f64) / (hi - lo) as f64,
            a as f64 / 1024.0,
            b as f64 / 1024.0
        );
    }
    Ok(md)
}

// ---------------------------------------------------------------------------------
// Micro-benchmarks

/// `--micro`: the criterion benches of the DSL (parse + check of 10 000 tasks) and of
/// rendering (the etcd templates for 3 hosts). Their output is shown as it comes, and
/// each benchmark's estimate goes to `bench/results/DATE-HOST-micro.md`.
fn micro(opts: &Options) -> Result<()> {
    use std::io::BufRead as _;
    let root = xtask::workspace_root();
    let target = root.join("target").join("bench");
    let mut rows = Vec::new();
    for (pkg, bench) in [("troupe-dsl", "parse"), ("troupe-render", "render")] {
        let mut cmd = Command::new(cargo());
        cmd.current_dir(&root)
            .env("CARGO_TARGET_DIR", &target)
            .args(["bench", "-p", pkg, "--bench", bench])
            .stdout(Stdio::piped());
        eprintln!("$ {}", xtask::display_cmd(&cmd));
        let mut child = cmd.spawn().context("start cargo bench")?;
        let out = child.stdout.take().expect("piped");
        // criterion prints the name on one line (or before `time:` on the same line
        // when it is short), then `time:   [low estimate high]`.
        let mut name = String::new();
        for line in std::io::BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            let (head, time) = match line.split_once("time:") {
                Some((h, t)) => (h.trim(), Some(t.trim())),
                None => (line.trim(), None),
            };
            if !head.is_empty() && !line.starts_with(' ') {
                name = head.to_string();
            }
            if let Some(t) = time {
                let est: Vec<&str> = t
                    .trim_matches(|c| c == '[' || c == ']')
                    .split_whitespace()
                    .collect();
                if est.len() == 6 {
                    rows.push(format!(
                        "| {pkg} | {name} | {} {} | {} {} – {} {} |",
                        est[2], est[3], est[0], est[1], est[4], est[5]
                    ));
                }
            }
        }
        let status = child.wait()?;
        if !status.success() {
            bail!("`cargo bench -p {pkg} --bench {bench}` failed ({status})");
        }
    }
    let mut md = format!(
        "# Micro-benchmarks, {} on {}\n\n- machine: {}; load average {}\n- troupe: git {}\n- command: `cargo xtask bench --micro` (criterion, release profile)\n\n\
         | crate | benchmark | estimate | 95% interval |\n|---|---|---:|---:|\n",
        today()?,
        hostname(),
        machine(),
        loadavg(),
        troupe_rev()
    );
    for r in &rows {
        md.push_str(r);
        md.push('\n');
    }
    let path = match &opts.out {
        Some(p) => p.clone(),
        None => root
            .join("bench")
            .join("results")
            .join(format!("{}-{}-micro.md", today()?, hostname())),
    };
    write(&path, &md)?;
    println!("\n{md}");
    eprintln!("bench: results written to {}", path.display());
    let _ = std::io::stdout().flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The generators and parsers, on this machine's `sh` (no lab, no timing).
    use super::*;

    #[test]
    fn workload_has_every_kind_and_at_least_20_tasks() {
        let w = workload();
        assert!(w.len() >= 20, "{} tasks", w.len());
        let kinds = |f: fn(&Task) -> bool| w.iter().filter(|t| f(t)).count();
        assert!(kinds(|t| matches!(t, Task::Dir { .. })) > 0);
        assert!(kinds(|t| matches!(t, Task::File { .. })) > 0);
        assert!(kinds(|t| matches!(t, Task::Template { .. })) > 0);
        assert!(kinds(|t| matches!(t, Task::Guarded { .. })) > 0);
    }

    #[test]
    fn string_literals_escape_what_they_must() {
        assert_eq!(json_str("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(
            render_template(2, "podc01", "127.0.9.1").lines().nth(2),
            Some("listen = 127.0.9.1:8002")
        );
    }

    /// The per-host script (the floor) does the whole workload in a scratch directory,
    /// and a second run finds nothing to change.
    #[test]
    fn per_host_script_does_the_work_and_is_idempotent() {
        let base = std::env::temp_dir().join(format!("troupe-bench-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let root = base.join("bench");
        let tasks = workload_in(&root.display().to_string());
        let script: String = tasks
            .iter()
            .map(|t| format!("{} || exit 1\n", task_shell(t, "podc01", "127.0.9.1")))
            .collect();
        let run = || {
            let out = Command::new("sh")
                .arg("-c")
                .arg(&script)
                .output()
                .expect("sh runs");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        run();
        let first = fingerprint(&root);
        assert_eq!(first.len(), 1 + 4 + 8 + 6 + 5, "{first:#?}"); // root dir, 4 subdirs, files
        assert_eq!(
            first
                .get("etc/file-01.conf")
                .map(|v| v.starts_with("file 644 # file 1")),
            Some(true)
        );
        assert_eq!(first.get("tpl").map(String::as_str), Some("dir 755"));
        let tpl = first.get("tpl/tpl-03.conf").expect("template written");
        assert!(
            tpl.contains("host = podc01") && tpl.contains("listen = 127.0.9.1:8003"),
            "{tpl}"
        );
        let mtime = |p: &str| {
            fs::metadata(root.join(p))
                .and_then(|m| m.modified())
                .expect("exists")
        };
        let before = mtime("etc/file-02.conf");
        std::thread::sleep(Duration::from_millis(20));
        run();
        assert_eq!(fingerprint(&root), first);
        assert_eq!(
            mtime("etc/file-02.conf"),
            before,
            "an unchanged file was rewritten"
        );
        fs::remove_dir_all(&base).expect("clean up");
    }

    #[test]
    fn reads_troupe_and_ansible_recaps() {
        let troupe = r#"{"event":"recap","hosts":{"podc01":{"ok":0,"changed":24,"failed":0,"unreachable":0,"skipped":0},"podc02":{"ok":24,"changed":0,"failed":0,"unreachable":0,"skipped":0}}}"#;
        assert_eq!(
            check_report_text(Tool::Troupe, Mode::Cold, 24, 2, troupe),
            Some("podc02: changed=0 (expected 24), failed+unreachable=0".into())
        );
        assert!(check_report_text(Tool::Troupe, Mode::Cold, 24, 3, troupe).is_some());
        assert_eq!(
            check_report_text(Tool::Troupe, Mode::Cold, 24, 1, "no recap"),
            Some("no recap in troupe's output".into())
        );
        let ansible = "PLAY RECAP *****\npodc01                     : ok=24   changed=0    unreachable=0    failed=0    skipped=0\n";
        assert_eq!(check_report_text(Tool::Ansible, Mode::Warm, 24, 1, ansible), None);
        assert!(check_report_text(Tool::Ansible, Mode::Cold, 24, 1, ansible).is_some());
    }

    #[test]
    fn medians() {
        let ms = Duration::from_millis;
        assert_eq!(median(vec![ms(3), ms(1), ms(2)]), Some(ms(2)));
        assert_eq!(
            median(vec![ms(4), ms(1), ms(2), ms(3)]),
            Some(Duration::from_micros(2500))
        );
        assert_eq!(median(Vec::new()), None);
    }
}
