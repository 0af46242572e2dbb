//! `bench --micro`: the criterion benches of troupe-dsl and troupe-render, with their
//! estimates written to `bench/results/DATE-HOST-micro.md`.

use super::*;

/// `--micro`: the criterion benches of the DSL (parse + check of 10 000 tasks) and of
/// rendering (the etcd templates for 3 hosts). Their output is shown as it comes, and
/// each benchmark's estimate goes to `bench/results/DATE-HOST-micro.md`.
pub(super) fn micro(opts: &Options) -> Result<()> {
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
