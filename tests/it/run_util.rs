//! Helpers for the `run_*` end-to-end tests: write a playbook to a temp dir, run the
//! real `troupe` binary on the shared lab, read its JSON events, and filter what varies
//! between runs (durations, temp paths) out of snapshots.

use std::path::{Path, PathBuf};

use serde_json::Value;
use troupe_tests::Lab;

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The JSON events (with `--output json`).
    pub fn events(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{}", self.stderr))
            })
            .collect()
    }

    /// The final recap's hosts map (with `--output json`).
    pub fn recap(&self) -> Value {
        let events = self.events();
        let last = events
            .last()
            .unwrap_or_else(|| panic!("no events; stderr:\n{}", self.stderr));
        assert_eq!(last["event"], "recap", "last event is the recap");
        last["hosts"].clone()
    }

    pub fn results(&self, task: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "host_result" && e["task"] == task)
            .collect()
    }

    pub fn show(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A playbook in its own temp dir (kept alive by the returned guard).
pub struct Playbook {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn playbook(text: &str) -> Playbook {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("play.kdl");
    std::fs::write(&path, text).unwrap();
    Playbook { dir, path }
}

impl Playbook {
    pub fn path_str(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

/// Run `troupe run PLAYBOOK -i <lab inventory> ARGS...`.
pub fn run(lab: &Lab, playbook: &Path, inventory: &Path, args: &[&str]) -> Run {
    let mut all = vec![
        "run",
        playbook.to_str().unwrap(),
        "-i",
        inventory.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    troupe(lab, &all)
}

pub fn troupe(lab: &Lab, args: &[&str]) -> Run {
    let out = lab.troupe(args);
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn lab_inventory(lab: &Lab) -> PathBuf {
    lab.inventory_path()
}

/// Stats of one host from a recap, as (ok, changed, failed, unreachable, skipped).
pub fn stats(recap: &Value, host: &str) -> (u64, u64, u64, u64, u64) {
    let s = &recap[host];
    let n = |k: &str| {
        s[k].as_u64()
            .unwrap_or_else(|| panic!("recap of {host} has no {k}: {recap}"))
    };
    (n("ok"), n("changed"), n("failed"), n("unreachable"), n("skipped"))
}

/// Replace what changes from run to run in human output.
pub fn filtered(text: &str, tmp: &Path) -> String {
    let text = text.replace(tmp.to_str().unwrap(), "[TMP]");
    regex_lite_replace(text.trim_start_matches('\n'))
}

/// ` in 1.2s` at the end of the summary line → ` in [ELAPSED]` (no regex crate needed).
fn regex_lite_replace(text: &str) -> String {
    text.lines()
        .map(|l| match l.rfind(" in ") {
            Some(i) if l.ends_with('s') && l[i + 4..l.len() - 1].parse::<f64>().is_ok() => {
                format!("{} in [ELAPSED]", &l[..i])
            }
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}
