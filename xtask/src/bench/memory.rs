//! `cargo xtask bench --output-memory`: issue 11.5's case measured by a command. Each
//! of 3 lab hosts prints 50 MB on stdout in one registered `shell` task (the run that
//! once took 960 MB on the controller); troupe keeps the last 512 KiB of each stream
//! (`troupe_run::connection::OUTPUT_TAIL`), so the controller's peak RSS should stay
//! far below the issue's goal of 100 MiB. The peak RSS comes from the same measuring
//! process as the fan-out bench (`getrusage` of the reaped troupe process), and the
//! run's registered tail is checked (its length and the dropped-byte count must add up
//! to what was printed), so a run that did not print the 50 MB does not count.
//!
//! Results go to `bench/results/YYYY-MM-DD-HOST-output-memory.md`. Nothing here is a
//! test: the memory is reported beside the goal, never asserted.

use std::fmt::Write as _;
use std::fs;
use std::time::Duration;

use anyhow::{Result, bail};
use xtask::lab;

use super::{
    LabBenchOptions, Options, hostname, machine, measured, median, rel, secs, today, troupe_binary,
    troupe_rev, work_dir, write,
};

const LAB_NAME: &str = "bench-memory";
const HOSTS: usize = 3;
/// `seq 1 N` prints 51 MB.
const N: u64 = 6_500_000;
const GOAL_MIB: u64 = 100;

const USAGE: &str = "usage: cargo xtask bench --output-memory [OPTIONS]

Measures the controller's peak RSS while 3 lab hosts each print 50 MB on stdout in one
registered task; writes bench/results/DATE-HOST-output-memory.md.

options:
  --runs N          timed runs (default 3)
  --troupe PATH     use this troupe binary instead of building --release
  --keep-lab        leave the lab (\"bench-memory\") running afterwards
  --out FILE        write the results here instead of bench/results/DATE-HOST-output-memory.md";

fn parse_options(args: &[String]) -> Result<LabBenchOptions> {
    super::parse_lab_bench_options(args, "--output-memory", USAGE)
}

/// What `seq 1 N` prints, in bytes.
fn printed() -> u64 {
    (1..=N).map(|n| n.to_string().len() as u64 + 1).sum()
}

const PLAYBOOK: &str = r#"play "Loud" hosts=all {
    task "Print 50 MB" register="out" { shell "seq 1 SEQ_N" }
    task "Tail" { debug "tail {{ out.stdout | length }} dropped {{ out.stdout_dropped_bytes }}" }
}
"#;

pub fn run(args: &[String]) -> Result<()> {
    let opts = parse_options(args)?;
    let troupe = {
        let mut o: Options = super::parse_options(&[])?;
        o.troupe = opts.troupe.clone();
        troupe_binary(&o)?
    };
    let dir = work_dir().join("memory");
    fs::create_dir_all(&dir)?;
    let play = dir.join("play.kdl");
    write(&play, &PLAYBOOK.replace("SEQ_N", &N.to_string()))?;
    let lab = lab::up_light(LAB_NAME, HOSTS)?;
    let root = xtask::workspace_root();
    let want = printed();
    let mut samples = Vec::new();
    let outcome = (|| -> Result<()> {
        for i in 1..=opts.runs {
            let log = dir.join(format!("run-{i}.log"));
            let cmd: Vec<String> = [
                troupe.display().to_string(),
                "run".into(),
                play.display().to_string(),
                "-i".into(),
                lab.inventory_path().display().to_string(),
                "--output".into(),
                "json".into(),
            ]
            .into();
            let s = measured(&cmd, &root, &[], &log)?;
            let text = fs::read_to_string(&log).unwrap_or_default();
            // One "tail L dropped D" per host, adding up to what `seq` printed (the
            // registered stdout lacks its final newline).
            let tails = text
                .lines()
                .filter_map(|l| l.split("\"msg\":\"tail ").nth(1))
                .filter_map(|rest| {
                    let mut f = rest.split(['"', ' ']);
                    let len: u64 = f.next()?.parse().ok()?;
                    let dropped: u64 = f.nth(1)?.parse().ok()?;
                    Some(len + dropped + 1)
                })
                .filter(|total| *total == want)
                .count();
            if !s.ok || tails != HOSTS {
                bail!(
                    "run {i} did not print and register 50 MB on every host: see {}",
                    rel(&log)
                );
            }
            eprintln!(
                "bench: run {i}/{}: {:.1} MiB peak RSS, {:.2} s",
                opts.runs,
                s.max_rss_kib as f64 / 1024.0,
                s.wall.as_secs_f64()
            );
            samples.push(s);
        }
        Ok(())
    })();
    if opts.keep_lab {
        eprintln!("bench: lab {LAB_NAME:?} left running (`cargo xtask lab down --name {LAB_NAME}`)");
    } else if let Err(e) = lab::down(LAB_NAME) {
        eprintln!("warning: could not stop the lab {LAB_NAME:?}: {e:#}");
    }
    outcome?;

    let mut rss: Vec<u64> = samples.iter().map(|s| s.max_rss_kib).collect();
    rss.sort_unstable();
    let median_rss = rss[rss.len() / 2];
    let wall = median(samples.iter().map(|s| s.wall).collect::<Vec<Duration>>());
    let mut md = String::new();
    writeln!(
        md,
        "# Controller memory with 50 MB of output on each of {HOSTS} hosts (issue 11.5)\n"
    )?;
    writeln!(md, "- machine: {}, host `{}`", machine(), hostname())?;
    writeln!(md, "- troupe: `{}` ({})", rel(&troupe), troupe_rev())?;
    writeln!(
        md,
        "- workload: `seq 1 {N}` ({want} bytes) registered on each host, {} runs\n",
        opts.runs
    )?;
    writeln!(md, "| run | peak RSS (MiB) | wall (s) |")?;
    writeln!(md, "|-----|---------------:|---------:|")?;
    for (i, s) in samples.iter().enumerate() {
        writeln!(
            md,
            "| {} | {:.1} | {} |",
            i + 1,
            s.max_rss_kib as f64 / 1024.0,
            secs(Some(s.wall))
        )?;
    }
    writeln!(
        md,
        "\nMedian peak RSS {:.1} MiB (goal: under {GOAL_MIB} MiB), median wall {} s.",
        median_rss as f64 / 1024.0,
        secs(wall)
    )?;
    let path = match &opts.out {
        Some(p) => p.clone(),
        None => {
            root.join("bench")
                .join("results")
                .join(format!("{}-{}-output-memory.md", today()?, hostname()))
        }
    };
    write(&path, &md)?;
    println!("{md}");
    eprintln!("bench: results written to {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_and_workload() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let o = parse_options(&a(&["--output-memory", "--runs", "1", "--keep-lab"])).unwrap();
        assert_eq!((o.runs, o.keep_lab), (1, true));
        assert!(parse_options(&a(&["--runs", "0"])).is_err());
        assert!(parse_options(&a(&["--hosts", "3"])).is_err());
        assert!(printed() > 50_000_000, "the workload prints 50 MB");
    }
}
