//! `cargo xtask bench --etcd`: issue 6's speed goal ("the 1 → 3 expansion ... 9 s or
//! less, certs included") measured by a command instead of by hand, so the number in
//! `bench/results/etcd-expand.md` can be taken again by anyone, the same way, after
//! any change. It is the procedure that document describes, automated:
//!
//! for each run, a fresh lab `bench-etcd` of 3 hosts (127.0.X.1-3, X allocated by
//! `xtask::lab`; `lab up` wipes the hosts' folders and the lab's controller-side PKI),
//! `playbooks/inventories/lab.kdl` rewritten for that lab, the seed staged with
//! `playbooks/etcd-lab-seed.kdl`, 3 s for the restarted etcd to elect itself, then
//! `troupe run playbooks/etcd-expand.kdl` timed (wall, and controller CPU and peak RSS
//! through the same measuring process as the fan-out bench), then the re-run timed,
//! whose recap must say `changed=0` on every host (the bench fails otherwise: a fast
//! expansion that is not idempotent is not a result).
//!
//! Results go to `bench/results/YYYY-MM-DD-HOST-etcd-expand.md`. Nothing here is a
//! test: timings are reported, never asserted.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use xtask::lab::{self, LabInfo};

use super::{
    LabBenchOptions, Mode, Options, Sample, Tool, check_report_text, hostname, loadavg, machine, measured,
    median, openssh_version, rel, secs, today, troupe_binary, troupe_rev, work_dir, write,
};

const LAB_NAME: &str = "bench-etcd";
const HOSTS: usize = 3;
const SEED: &str = "playbooks/etcd-lab-seed.kdl";
const EXPAND: &str = "playbooks/etcd-expand.kdl";
const INVENTORY: &str = "playbooks/inventories/lab.kdl";
/// What `lab.kdl` is written for: the lab "default" on 127.0.1.x.
const DEMO_LAB_DIR: &str = "/var/tmp/troupe-lab/default/";
const DEMO_PREFIX: &str = "\"127.0.1.";
/// The seed restarts etcd: let it elect itself before the expansion (as done by hand).
const SETTLE: Duration = Duration::from_secs(3);
/// Issue 6's goal, reported beside the median (never asserted).
const GOAL: Duration = Duration::from_secs(9);

const USAGE: &str = "usage: cargo xtask bench --etcd [OPTIONS]

Times the etcd 1 -> 3 expansion (playbooks/etcd-expand.kdl, certificates included) on a
fresh 3-host lab per run, then its re-run (must report changed=0 on every host);
writes bench/results/DATE-HOST-etcd-expand.md.

options:
  --runs N          fresh labs to measure (default 3)
  --troupe PATH     use this troupe binary instead of building --release
  --keep-lab        leave the last lab (\"bench-etcd\") running afterwards
  --out FILE        write the results here instead of bench/results/DATE-HOST-etcd-expand.md";

fn parse_options(args: &[String]) -> Result<LabBenchOptions> {
    super::parse_lab_bench_options(args, "--etcd", USAGE)
}

/// `playbooks/inventories/lab.kdl`, pointed at `lab` instead of the demo's lab
/// "default": its key, known_hosts and controller-side etcd folders, and its addresses.
/// Fails rather than leave anything aimed at the demo's lab.
fn inventory_for(template: &str, lab_dir: &Path, octet: u8) -> Result<String> {
    let dir = format!("{}/", lab_dir.display());
    let prefix = format!("\"127.0.{octet}.");
    let text = template.replace(DEMO_LAB_DIR, &dir).replace(DEMO_PREFIX, &prefix);
    let addresses = text.matches(&format!("address={prefix}")).count();
    if addresses != HOSTS {
        bail!(
            "{INVENTORY}: expected {HOSTS} hosts with address=\"127.0.1.N\" to point at the bench lab, \
             found {addresses} after rewriting"
        );
    }
    if (lab_dir != Path::new(DEMO_LAB_DIR.trim_end_matches('/')) && text.contains(DEMO_LAB_DIR))
        || (octet != 1 && text.contains(DEMO_PREFIX))
    {
        bail!("{INVENTORY}: something still points at the demo lab after rewriting");
    }
    Ok(text)
}

/// One fresh lab's numbers.
#[derive(Debug, Clone, Copy)]
struct EtcdSample {
    expand: Sample,
    rerun: Sample,
    load_before: f64,
}

fn load1() -> f64 {
    loadavg()
        .split_whitespace()
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(f64::NAN)
}

fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Run a playbook under the measuring process; fail with the end of its log when it fails.
fn run_playbook(troupe: &Path, playbook: &str, inventory: &Path, log: &Path) -> Result<Sample> {
    let root = xtask::workspace_root();
    let cmd = vec![
        troupe.display().to_string(),
        "run".into(),
        playbook.into(),
        "-i".into(),
        inventory.display().to_string(),
        "--output".into(),
        "json".into(),
    ];
    eprintln!("bench: $ {}", cmd.join(" "));
    let s = measured(&cmd, &root, &[], log)?;
    if !s.ok {
        bail!(
            "`troupe run {playbook}` failed (log: {}):\n{}",
            log.display(),
            log_tail(log)
        );
    }
    Ok(s)
}

/// One sample on a lab that was just started.
fn one_run(i: usize, lab: &LabInfo, troupe: &Path, logs: &Path) -> Result<EtcdSample> {
    let root = xtask::workspace_root();
    let template = fs::read_to_string(root.join(INVENTORY)).with_context(|| format!("read {INVENTORY}"))?;
    let inventory = lab.dir.join("etcd-inventory.kdl");
    write(&inventory, &inventory_for(&template, &lab.dir, lab.octet)?)?;

    eprintln!("bench: run {i}: stage the seed ({SEED})");
    run_playbook(troupe, SEED, &inventory, &logs.join(format!("run{i}-seed.log")))?;
    std::thread::sleep(SETTLE);

    let load_before = load1();
    eprintln!("bench: run {i}: the expansion ({EXPAND}), timed");
    let expand_log = logs.join(format!("run{i}-expand.log"));
    let expand = run_playbook(troupe, EXPAND, &inventory, &expand_log)?;
    eprintln!("bench: run {i}: expansion {:.2} s", expand.wall.as_secs_f64());

    eprintln!("bench: run {i}: the re-run (nothing to do), timed");
    let rerun_log = logs.join(format!("run{i}-rerun.log"));
    let rerun = run_playbook(troupe, EXPAND, &inventory, &rerun_log)?;
    let text = fs::read_to_string(&rerun_log).unwrap_or_default();
    if let Some(problem) = check_report_text(Tool::Troupe, Mode::Warm, 0, HOSTS, &text) {
        bail!(
            "the re-run of {EXPAND} is not idempotent: {problem} (log: {})",
            rerun_log.display()
        );
    }
    eprintln!(
        "bench: run {i}: re-run {:.2} s, changed=0 on every host",
        rerun.wall.as_secs_f64()
    );
    Ok(EtcdSample {
        expand,
        rerun,
        load_before,
    })
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

fn report(
    opts: &LabBenchOptions,
    troupe: &Path,
    samples: &[EtcdSample],
    elapsed: Duration,
) -> Result<String> {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# etcd 1 → 3 expansion benchmark, {} on {}\n",
        today()?,
        hostname()
    );
    let _ = writeln!(
        md,
        "- machine: {}; {:.0} s in all",
        machine(),
        elapsed.as_secs_f64()
    );
    match &opts.troupe {
        Some(_) => {
            let _ = writeln!(
                md,
                "- troupe: the binary {} (given with --troupe; the tree is at git {})",
                troupe.display(),
                troupe_rev()
            );
        }
        None => {
            let _ = writeln!(md, "- troupe: git {}, release build", troupe_rev());
        }
    }
    let _ = writeln!(
        md,
        "- etcd: {}",
        first_line(Command::new("etcd").arg("--version"))
    );
    let _ = writeln!(
        md,
        "- runit: {}",
        first_line(Command::new("dpkg-query").args(["-W", "-f", "${Version}", "runit"]))
    );
    let _ = writeln!(md, "- OpenSSH: {}", openssh_version());
    let mut command = format!("cargo xtask bench --etcd --runs {}", opts.runs);
    if let Some(t) = &opts.troupe {
        let _ = write!(command, " --troupe {}", t.display());
    }
    let _ = writeln!(
        md,
        "- procedure (bench/results/etcd-expand.md, automated): per run a fresh 3-host lab \
         `{LAB_NAME}`, `{SEED}`, {} s pause, then `troupe run {EXPAND} --output json` timed, then \
         timed again (re-run: changed=0 checked on every host); command: `{command}`\n",
        SETTLE.as_secs()
    );
    let _ = writeln!(
        md,
        "| run | load (1 min) before | fresh 1 → 3, wall s | CPU s | peak RSS MiB | re-run, wall s | CPU s | peak RSS MiB |"
    );
    let _ = writeln!(md, "|----:|----:|----:|----:|----:|----:|----:|----:|");
    let mib = |kib: u64| format!("{:.1}", kib as f64 / 1024.0);
    for (i, s) in samples.iter().enumerate() {
        let _ = writeln!(
            md,
            "| {} | {:.2} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            s.load_before,
            ms(s.expand.wall),
            ms(s.expand.cpu),
            mib(s.expand.max_rss_kib),
            ms(s.rerun.wall),
            ms(s.rerun.cpu),
            mib(s.rerun.max_rss_kib),
        );
    }
    let med = |f: fn(&EtcdSample) -> Duration| median(samples.iter().map(f).collect());
    let expand = med(|s| s.expand.wall);
    let _ = writeln!(
        md,
        "| **median** | | **{}** | {} | {} | {} | {} | {} |",
        secs(expand),
        secs(med(|s| s.expand.cpu)),
        mib(samples.iter().map(|s| s.expand.max_rss_kib).max().unwrap_or(0)),
        secs(med(|s| s.rerun.wall)),
        secs(med(|s| s.rerun.cpu)),
        mib(samples.iter().map(|s| s.rerun.max_rss_kib).max().unwrap_or(0)),
    );
    let verdict = match expand {
        Some(e) if e <= GOAL => "within",
        Some(_) => "above",
        None => "–",
    };
    let _ = writeln!(
        md,
        "\nMedian of the fresh expansion: {} s, {verdict} issue 6's goal of {} s (certificates \
         included). In the median row, peak RSS is the largest of the runs. The re-run reported \
         changed=0 on every host in every run. Timings on a shared machine vary with its load: \
         compare runs taken minutes apart, not across the day.",
        secs(expand),
        GOAL.as_secs()
    );
    Ok(md)
}

/// `cargo xtask bench --etcd ...`
pub fn run(args: &[String]) -> Result<()> {
    let opts = parse_options(args)?;
    let root = xtask::workspace_root();
    for f in [SEED, EXPAND, INVENTORY] {
        if !root.join(f).is_file() {
            bail!("{f} is missing: the etcd benchmark needs it");
        }
    }
    xtask::deps::ensure_packages()?;
    for tool in ["ssh", "sshd", "etcd", "runsvdir", "nsenter"] {
        if xtask::deps::find_command(tool).is_none() {
            bail!("`{tool}` is not installed: run `cargo xtask deps` first");
        }
    }
    let troupe = {
        let mut o: Options = super::parse_options(&[])?;
        o.troupe = opts.troupe.clone();
        troupe_binary(&o)?
    };
    let logs = work_dir().join("etcd");
    if logs.exists() {
        fs::remove_dir_all(&logs).with_context(|| format!("clear {}", logs.display()))?;
    }
    fs::create_dir_all(&logs)?;

    let started = Instant::now();
    let mut samples = Vec::new();
    for i in 1..=opts.runs {
        eprintln!(
            "bench: run {i}/{}: fresh lab {LAB_NAME:?} with {HOSTS} hosts",
            opts.runs
        );
        let lab = lab::up_light(LAB_NAME, HOSTS)?;
        let outcome = one_run(i, &lab, &troupe, &logs);
        let last = i == opts.runs;
        if opts.keep_lab && (last || outcome.is_err()) {
            eprintln!("bench: lab {LAB_NAME:?} left running (`cargo xtask lab down --name {LAB_NAME}`)");
        } else if let Err(e) = lab::down(LAB_NAME) {
            eprintln!("warning: could not stop the lab {LAB_NAME:?}: {e:#}");
        }
        samples.push(outcome.with_context(|| format!("run {i} (logs in {})", rel(&logs)))?);
    }

    let md = report(&opts, &troupe, &samples, started.elapsed())?;
    let path = match &opts.out {
        Some(p) => p.clone(),
        None => {
            root.join("bench")
                .join("results")
                .join(format!("{}-{}-etcd-expand.md", today()?, hostname()))
        }
    };
    write(&path, &md)?;
    println!("{md}");
    eprintln!("bench: results written to {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Options and the inventory rewrite (no lab, no timing).
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options() {
        let o = parse_options(&args(&["--etcd", "--runs", "1", "--keep-lab"])).unwrap();
        assert_eq!(o.runs, 1);
        assert!(o.keep_lab);
        assert_eq!(parse_options(&args(&["--runs=5"])).unwrap().runs, 5);
        assert_eq!(parse_options(&[]).unwrap().runs, 3);
        assert!(parse_options(&args(&["--runs", "0"])).is_err());
        assert!(parse_options(&args(&["--hosts", "3"])).is_err());
    }

    #[test]
    fn the_lab_inventory_is_pointed_at_the_bench_lab_only() {
        let root = xtask::workspace_root();
        let template = fs::read_to_string(root.join(INVENTORY)).unwrap();
        let dir = Path::new("/var/tmp/troupe-lab/bench-etcd");
        let text = inventory_for(&template, dir, 9).unwrap();
        assert!(!text.contains("troupe-lab/default/"), "{text}");
        assert!(!text.contains("\"127.0.1."), "{text}");
        assert!(
            text.contains("identity=\"/var/tmp/troupe-lab/bench-etcd/id_ed25519\""),
            "{text}"
        );
        assert!(
            text.contains("etcd_ca_dir \"/var/tmp/troupe-lab/bench-etcd/etcd/pki\""),
            "{text}"
        );
        for n in 1..=3 {
            assert!(text.contains(&format!("address=\"127.0.9.{n}\"")), "{text}");
        }
        // An inventory the rewrite does not understand is refused, not used half-rewritten.
        assert!(inventory_for("group etcd { host a address=\"10.0.0.1\" }", dir, 9).is_err());
    }
}
