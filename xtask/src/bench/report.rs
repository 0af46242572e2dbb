//! The fan-out bench's Markdown report (`bench/results/DATE-HOST.md`) and the facts
//! about the machine and the revision that every bench report starts with.

use super::*;

pub(super) fn today() -> Result<String> {
    Ok(xtask::run_quiet(Command::new("date").args(["-u", "+%Y-%m-%d"]))?
        .trim()
        .to_string())
}

pub(super) fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

pub(super) fn machine() -> String {
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

pub(super) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub(super) fn troupe_rev() -> String {
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

pub(super) fn openssh_version() -> String {
    Command::new("ssh")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub(super) fn secs(d: Option<Duration>) -> String {
    d.map_or("–".into(), |d| format!("{:.2}", d.as_secs_f64()))
}

pub(super) fn ratio(a: Option<Duration>, b: Option<Duration>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if !b.is_zero() => format!("{:.2}×", a.as_secs_f64() / b.as_secs_f64()),
        _ => "–".into(),
    }
}

pub(super) fn report(
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
