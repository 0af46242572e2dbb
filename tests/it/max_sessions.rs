//! sshd's `MaxSessions` caps the session channels of one connection. troupe learns the
//! limit from a refused open and queues instead of failing; concurrent `delegate-to`
//! tasks (several hosts' tasks sharing one connection) used to fail as
//! "unreachable: Failed to open channel".

use troupe_tests::Lab;

/// Set podc01's `MaxSessions` to `n` and have sshd reread its configuration.
fn max_sessions(lab: &Lab, n: u32) {
    let path = lab.dir().join("podc01/sshd_config");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("MaxSessions") {
                format!("MaxSessions {n}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&path, text + "\n").unwrap();
    let pid = lab.sshd_pid("podc01");
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    // sshd re-execs itself on SIGHUP; a fresh connection sees the new limit.
    std::thread::sleep(std::time::Duration::from_millis(500));
}

fn run(lab: &Lab, dir: &str) -> (Option<i32>, String) {
    let play_dir = tempfile::tempdir().unwrap();
    let playbook = play_dir.path().join("play.kdl");
    std::fs::write(
        &playbook,
        format!(
            r#"play hosts=all {{
    task "one" delegate-to="podc01" {{ command "sh -c 'sleep 0.3; touch {dir}/one-$0' {{{{ inventory_hostname }}}}" }}
    task "two" delegate-to="podc01" {{ command "sh -c 'sleep 0.3; touch {dir}/two-$0' {{{{ inventory_hostname }}}}" }}
    task "loop" loop="[1, 2, 3]" {{ command "touch {dir}/loop-{{{{ item }}}}" }}
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
    (out.status.code(), all)
}

#[test]
fn delegated_tasks_queue_for_sshd_max_sessions() {
    let lab = Lab::start("maxsess", 2);
    let dir = lab.scratch("max_sessions");
    max_sessions(&lab, 2);
    let (code, all) = run(&lab, &dir);
    assert_eq!(code, Some(0), "{all}");
    let files = lab.ssh_ok("podc01", &format!("ls {dir}"));
    for f in [
        "one-podc01",
        "one-podc02",
        "two-podc01",
        "two-podc02",
        "loop-1",
        "loop-2",
        "loop-3",
    ] {
        assert!(files.lines().any(|l| l == f), "{f} missing: {files}\n{all}");
    }

    max_sessions(&lab, 1);
    let (code, all) = run(&lab, &dir);
    assert!(!all.contains("Failed to open channel"), "{all}");
    assert_eq!(code, Some(0), "{all}");
}
