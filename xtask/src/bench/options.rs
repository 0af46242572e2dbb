//! Options of `cargo xtask bench`: the fan-out bench's [`Options`] and the tools it
//! compares, and [`LabBenchOptions`] shared by the one-scenario benches (`--etcd`,
//! `--output-memory`).

use super::*;

#[derive(Debug, Clone)]
pub(super) struct Options {
    pub(super) hosts: Vec<usize>,
    pub(super) runs: usize,
    pub(super) peer_runs: usize,
    pub(super) peer_max_hosts: usize,
    pub(super) tools: Vec<Tool>,
    pub(super) troupe: Option<PathBuf>,
    pub(super) keep_lab: bool,
    pub(super) out: Option<PathBuf>,
    pub(super) micro: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Tool {
    Troupe,
    SshTask,
    SshHost,
    Ansible,
    Pyinfra,
}

impl Tool {
    pub(super) const ALL: [Tool; 5] = [
        Tool::Troupe,
        Tool::SshTask,
        Tool::SshHost,
        Tool::Ansible,
        Tool::Pyinfra,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Tool::Troupe => "troupe",
            Tool::SshTask => "ssh-task",
            Tool::SshHost => "ssh-host",
            Tool::Ansible => "ansible",
            Tool::Pyinfra => "pyinfra",
        }
    }

    pub(super) fn describe(self) -> &'static str {
        match self {
            Tool::Troupe => "troupe (release build)",
            Tool::SshTask => "OpenSSH, 1 mux'd round trip per task",
            Tool::SshHost => "OpenSSH, 1 round trip per host (floor)",
            Tool::Ansible => "Ansible (ansible-core)",
            Tool::Pyinfra => "pyinfra",
        }
    }

    pub(super) fn is_peer(self) -> bool {
        matches!(self, Tool::Ansible | Tool::Pyinfra)
    }
}

pub(super) fn parse_list(s: &str, what: &str) -> Result<Vec<usize>> {
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
pub(super) fn split_flag(arg: &str) -> (&str, Option<String>) {
    match arg.split_once('=') {
        Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
        _ => (arg, None),
    }
}

/// The value of `flag`: inline after `=`, else the next argument.
pub(super) fn flag_value(
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
pub(super) struct LabBenchOptions {
    pub(super) runs: usize,
    pub(super) troupe: Option<PathBuf>,
    pub(super) keep_lab: bool,
    pub(super) out: Option<PathBuf>,
}

/// Parse [`LabBenchOptions`] for `bench MODE_FLAG` (the flag itself is accepted and
/// ignored); `usage` is printed for `--help` and after an unknown option.
pub(super) fn parse_lab_bench_options(
    args: &[String],
    mode_flag: &str,
    usage: &str,
) -> Result<LabBenchOptions> {
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

pub(super) fn parse_options(args: &[String]) -> Result<Options> {
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
