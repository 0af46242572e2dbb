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

// The parts of the fan-out bench, along its steps; their items are `pub(super)`, for
// this module and the one-scenario benches below it.
mod hosts;
mod measure;
mod micro;
mod options;
mod peers;
mod report;
mod workload;

/// `bench --etcd`: the etcd 1 → 3 expansion; a child module so it shares the measuring
/// process, the troupe build and the report helpers without widening their visibility.
mod etcd;

/// `bench --output-memory`: controller peak RSS with 50 MB of output on each of 3
/// hosts (issue 11.5).
mod memory;

use hosts::*;
use measure::*;
use micro::*;
use options::*;
use peers::*;
use report::*;
use workload::*;

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
    let lab = lab::up_light(LAB_NAME, max_n)?;
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

#[cfg(test)]
mod tests {
    //! The parsers of the tools' reports and the statistics (no lab, no timing).
    use super::*;

    /// and a second run finds nothing to change.

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
