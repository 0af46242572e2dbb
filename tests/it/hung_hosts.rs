//! Hosts that stop answering without closing anything: sshd and everything it started
//! are SIGSTOPped, so TCP stays up and only SSH keepalives can tell. Each test runs on
//! a lab of its own and resumes the host before the lab is taken down.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use troupe_tests::Lab;

/// `pid` and every process descended from it.
fn tree(pid: u32) -> BTreeSet<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        if let Some(ppid) = rest.split(' ').nth(1).and_then(|s| s.parse().ok()) {
            parents.push((p, ppid));
        }
    }
    let mut found = BTreeSet::from([pid]);
    loop {
        let before = found.len();
        for (p, ppid) in &parents {
            if found.contains(ppid) {
                found.insert(*p);
            }
        }
        if found.len() == before {
            return found;
        }
    }
}

fn kill(sig: &str, pids: &BTreeSet<u32>) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// Freeze a host: its sshd listener, its sessions and what they run, until no new
/// process appears in the tree. Returns what was stopped, to resume it.
fn freeze(lab: &Lab, host: &str) -> BTreeSet<u32> {
    let mut stopped = BTreeSet::new();
    loop {
        let now = tree(lab.sshd_pid(host));
        let new: BTreeSet<u32> = now.difference(&stopped).copied().collect();
        if new.is_empty() {
            return stopped;
        }
        kill("STOP", &new);
        stopped.extend(new);
    }
}

/// The lab's inventory with short keepalives, so that a frozen host is given up soon.
fn inventory_with(lab: &Lab, extra: &str, name: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(lab.inventory_path()).unwrap();
    let text = text.replacen("defaults ", &format!("defaults {extra} "), 1);
    let path = lab.dir().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn wait_for_file(path: &Path) {
    while !path.exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Regression (issue 11.4): with one host's sshd stopped mid-play, the other hosts
/// waited at the next task for 78 s, and the host was then "connection lost". Now the
/// keepalive bound of the inventory (1 s × 3 here) gives the frozen host up: the
/// others run every task, the frozen one is unreachable and the error says why.
#[test]
fn a_frozen_host_is_given_up_by_keepalive_and_the_others_finish() {
    let lab = Lab::start("hang", 3);
    let dir = "/srv/tests/hang";
    for h in lab.host_names() {
        lab.ssh_ok(h, &format!("rm -rf {dir} && mkdir -p {dir}"));
    }
    let inventory = inventory_with(&lab, "keepalive-interval=\"1s\" keepalive-count=3", "hang.kdl");
    let play_dir = tempfile::tempdir().unwrap();
    let playbook = play_dir.path().join("play.kdl");
    std::fs::write(
        &playbook,
        format!(
            r#"play hosts=etcd {{
    task "first" {{ command "true" }}
    task "mark, then wait" {{ shell "touch {dir}/started; sleep 2" }}
    task "after" {{ file path="{dir}/after" state=touch }}
    task "last" {{ command "touch {dir}/last" }}
}}
"#
        ),
    )
    .unwrap();
    let child = lab
        .troupe_cmd()
        .args([
            "run",
            playbook.to_str().unwrap(),
            "-i",
            inventory.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // podc02 is frozen while its second task runs.
    wait_for_file(&lab.host_path("podc02", "/srv").join("tests/hang/started"));
    let stopped = freeze(&lab, "podc02");
    let out = child.wait_with_output().unwrap();
    kill("CONT", &stopped);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{stdout}\n{stderr}");

    for h in ["podc01", "podc03"] {
        assert_eq!(
            lab.ssh_ok(h, &format!("ls {dir}")),
            "after\nlast\nstarted\n",
            "{h} ran every task:\n{all}"
        );
    }
    assert!(
        all.contains("podc02: no answer from the host for 3s (keepalive)"),
        "the frozen host's error says why:\n{all}"
    );
    assert_eq!(out.status.code(), Some(4), "unreachable, nothing failed:\n{all}");
    let recap = stdout
        .lines()
        .find(|l| l.contains("podc02") && l.contains("unreachable="));
    assert!(
        recap.is_some_and(|l| l.contains("unreachable=1")),
        "podc02 counted unreachable in the recap:\n{all}"
    );
    assert_eq!(
        lab.ssh_ok("podc02", &format!("ls {dir}")),
        "started\n",
        "the frozen host ran nothing after it was given up"
    );
}

/// Issue 11.4: a task's `timeout` bounds the commands it runs, over the inventory's
/// `command-timeout` (1 h by default): the command fails as timed out, its process is
/// stopped on the host, and the host runs nothing more.
#[test]
fn a_task_timeout_ends_a_hung_command_and_its_process() {
    let lab = Lab::shared();
    let dir = lab.scratch("task_timeout");
    let play_dir = tempfile::tempdir().unwrap();
    let playbook = play_dir.path().join("play.kdl");
    // An odd duration, to find the process among everything else on the machine.
    std::fs::write(
        &playbook,
        format!(
            r#"play hosts=podc01 {{
    task "hangs" timeout="1s" {{ command "sleep 317" }}
    task "never" {{ command "touch {dir}/never" }}
}}
"#
        ),
    )
    .unwrap();
    let out = lab.troupe(&[
        "run",
        playbook.to_str().unwrap(),
        "-i",
        lab.inventory_path().to_str().unwrap(),
    ]);
    let all = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("command timed out after 1s"), "{all}");
    assert_eq!(lab.ssh_ok("podc01", &format!("ls {dir}")), "", "{all}");
    let left = || {
        lab.ssh_ok("podc01", "ps -eo args")
            .lines()
            .any(|l| l.trim() == "sleep 317")
    };
    for _ in 0..100 {
        if !left() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("`sleep 317` still runs after its task timed out:\n{all}");
}
