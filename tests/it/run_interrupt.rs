//! Ctrl-C and SIGTERM in the middle of a run, on the lab's 3 hosts (issue 11.3): the
//! run used to die at once with no message and no recap, and the commands it had
//! started went on running on the hosts.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use troupe_tests::Lab;

/// Poll `done` every 100 ms, for at most `secs` seconds (a bound, not a measurement).
fn eventually(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..secs * 10 {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    done()
}

struct Interrupted {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    /// Host → pid of the long command there.
    pids: Vec<(String, String)>,
}

/// Start a run whose first task sleeps long on every host, wait until it runs on all
/// three, send `signal` to troupe and collect what happened.
fn interrupt_a_run(lab: &Lab, name: &str, signal: &str, json: bool) -> Interrupted {
    let dir = lab.scratch(name);
    let tmp = tempfile::tempdir().unwrap();
    let play = tmp.path().join("play.kdl");
    std::fs::write(
        &play,
        format!(
            r#"play "Long" hosts=all {{
    task "Sleep" {{ shell "echo $$ > {dir}/pid.tmp && mv {dir}/pid.tmp {dir}/pid && exec sleep 300" }}
    task "After" {{ shell "touch {dir}/after" }}
}}
play "Later" hosts=all {{
    task "Later play" {{ shell "touch {dir}/later" }}
}}
"#
        ),
    )
    .unwrap();
    let inventory = lab.inventory_path();
    let mut cmd = lab.troupe_cmd();
    cmd.args(["run", play.to_str().unwrap(), "-i", inventory.to_str().unwrap()]);
    if json {
        cmd.args(["--output", "json"]);
    }
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let pid_file = |h: &str| -> PathBuf { lab.host_path(h, "/srv").join("tests").join(name).join("pid") };
    let started = eventually(120, || lab.host_names().iter().all(|h| pid_file(h).exists()));
    assert!(started, "the long task did not start on every host");
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let pids = lab
        .host_names()
        .iter()
        .map(|h| {
            let pid = std::fs::read_to_string(pid_file(h)).unwrap().trim().to_string();
            (h.to_string(), pid)
        })
        .collect();
    let run = Interrupted {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        pids,
    };
    let show = format!("--- stdout\n{}--- stderr\n{}", run.stdout, run.stderr);
    assert_eq!(run.code, Some(130), "exit status {:?}\n{show}", out.status);
    for (h, pid) in &run.pids {
        assert!(
            eventually(60, || !lab.ssh(h, &format!("kill -0 {pid}")).status.success()),
            "{h}: the remote command (pid {pid}) still runs after the interrupt\n{show}"
        );
        for later in ["after", "later"] {
            let out = lab.ssh(h, &format!("test -e {dir}/{later}"));
            assert!(
                !out.status.success(),
                "{h}: a task after the interrupt ran ({later})\n{show}"
            );
        }
    }
    run
}

/// Regression (issue 11.3): SIGINT mid-run (human output), then SIGTERM (JSON output):
/// exit 130, the recap says interrupted, the remote commands are stopped, and no later
/// task or play starts.
#[test]
fn an_interrupted_run_stops_remote_commands_and_ends_with_the_recap() {
    let lab = Lab::shared();
    let human = interrupt_a_run(lab, "run_interrupt_int", "INT", false);
    let show = format!("--- stdout\n{}--- stderr\n{}", human.stdout, human.stderr);
    assert!(human.stdout.contains("interrupted by SIGINT"), "{show}");
    assert!(human.stdout.contains("\nRECAP\n"), "{show}");
    assert!(human.stdout.contains("INTERRUPTED"), "{show}");
    assert!(!human.stdout.contains("After"), "a later task started\n{show}");
    assert!(!human.stdout.contains("Later"), "a later play started\n{show}");

    let json = interrupt_a_run(lab, "run_interrupt_term", "TERM", true);
    let events: Vec<Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let recap = events.last().unwrap();
    assert_eq!(recap["event"], "recap", "{}", json.stdout);
    assert_eq!(recap["interrupted"], true, "{recap}");
    assert_eq!(recap["signal"], "SIGTERM", "{recap}");
    assert!(
        !events
            .iter()
            .any(|e| e["task"] == "After" || e["play"] == "Later"),
        "{}",
        json.stdout
    );
    for h in lab.host_names() {
        let sleep: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "host_result" && e["task"] == "Sleep" && e["host"] == h)
            .collect();
        assert_eq!(
            sleep.len(),
            1,
            "{h}: one result for the interrupted task\n{}",
            json.stdout
        );
        assert_eq!(sleep[0]["status"], "failed", "{}", json.stdout);
    }
}
