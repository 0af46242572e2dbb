//! Control flow end to end on the shared lab: handlers (once, only where changed, and
//! `--force-handlers`), `serial` batches and `max-fail-percent`, `when`/`loop`/
//! `register`/`until`, `run-once`/`delegate-to`, and `--tags`.

use troupe_tests::Lab;

use crate::run_util::{lab_inventory, playbook, run, stats};

const HANDLERS: &str = r#"
play "Handlers" hosts=all {
    task "Config a" notify="reload" { copy content="a\n" dest="{{ dir }}/a" }
    task "Config b" notify="reload" { copy content="b\n" dest="{{ dir }}/b" }
    task "Unchanged" notify="never" { file "{{ dir }}" state="directory" }
    handler "never" { shell "echo x >> {{ dir }}/never" }
    handler "reload" { shell "echo reloaded >> {{ dir }}/reloads" }
}
"#;

#[test]
fn run_handlers_run_once_and_only_where_something_changed() {
    let lab = Lab::shared();
    let dir = lab.scratch("run_handlers");
    let pb = playbook(HANDLERS);
    let var = format!("dir={dir}");
    let inv = lab_inventory(lab);

    let first = run(lab, &pb.path, &inv, &["-e", &var, "--output", "json"]);
    assert_eq!(first.code, 0, "{}", first.show());
    for h in lab.host_names() {
        assert_eq!(
            lab.ssh_ok(h, &format!("cat {dir}/reloads")),
            "reloaded\n",
            "two notifications, one run on {h}"
        );
        assert_eq!(
            lab.ssh_ok(h, &format!("test -e {dir}/never && echo yes || echo no")),
            "no\n"
        );
    }

    let second = run(lab, &pb.path, &inv, &["-e", &var, "--output", "json"]);
    assert_eq!(second.code, 0, "{}", second.show());
    assert!(second.results("reload").is_empty(), "{}", second.show());

    lab.ssh_ok("podc02", &format!("echo changed-by-hand > {dir}/a"));
    let third = run(lab, &pb.path, &inv, &["-e", &var, "--output", "json"]);
    assert_eq!(third.code, 0, "{}", third.show());
    let hosts: Vec<String> = third
        .results("reload")
        .iter()
        .map(|r| r["host"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(hosts, ["podc02"]);
    assert_eq!(
        lab.ssh_ok("podc02", &format!("cat {dir}/reloads")),
        "reloaded\nreloaded\n"
    );
    assert_eq!(lab.ssh_ok("podc01", &format!("cat {dir}/reloads")), "reloaded\n");
}

const FORCE: &str = r#"
play "Force" hosts=podc01 {
    task "Change" notify="mark" { copy content="x\n" dest="{{ dir }}/x" }
    task "Fail" { command "false" }
    handler "mark" { shell "echo ran >> {{ dir }}/marked" }
}
"#;

#[test]
fn run_force_handlers_runs_them_after_a_failure() {
    let lab = Lab::shared();
    let dir = lab.scratch("run_force");
    let pb = playbook(FORCE);
    let var = format!("dir={dir}");
    let inv = lab_inventory(lab);

    let plain = run(lab, &pb.path, &inv, &["-e", &var]);
    assert_eq!(plain.code, 1, "{}", plain.show());
    assert_eq!(
        lab.ssh_ok("podc01", &format!("test -e {dir}/marked && echo yes || echo no")),
        "no\n"
    );

    lab.ssh_ok("podc01", &format!("rm {dir}/x"));
    let forced = run(lab, &pb.path, &inv, &["-e", &var, "--force-handlers"]);
    assert_eq!(forced.code, 1, "{}", forced.show());
    assert_eq!(lab.ssh_ok("podc01", &format!("cat {dir}/marked")), "ran\n");
}

#[test]
fn run_serial_batches_run_one_after_another() {
    let lab = Lab::shared();
    let dir = lab.scratch("run_serial");
    let pb = playbook(
        r#"play "Rolling" hosts=all serial=1 {
    task "Stamp" { shell "date +%s%N > {{ dir }}/stamp" }
    task "Check" { file "{{ dir }}/stamp" state="file" }
}"#,
    );
    let var = format!("dir={dir}");
    let out = run(
        lab,
        &pb.path,
        &lab_inventory(lab),
        &["-e", &var, "--output", "json"],
    );
    assert_eq!(out.code, 0, "{}", out.show());
    let seq: Vec<String> = out
        .events()
        .iter()
        .filter_map(|e| match e["event"].as_str()? {
            "batch_start" => Some(format!("batch {}", e["hosts"][0].as_str()?)),
            "host_result" => Some(format!("{} {}", e["task"].as_str()?, e["host"].as_str()?)),
            _ => None,
        })
        .collect();
    assert_eq!(
        seq,
        [
            "batch podc01",
            "Stamp podc01",
            "Check podc01",
            "batch podc02",
            "Stamp podc02",
            "Check podc02",
            "batch podc03",
            "Stamp podc03",
            "Check podc03",
        ]
    );
    let stamps: Vec<u128> = lab
        .host_names()
        .iter()
        .map(|h| lab.ssh_ok(h, &format!("cat {dir}/stamp")).trim().parse().unwrap())
        .collect();
    assert!(stamps[0] < stamps[1] && stamps[1] < stamps[2], "{stamps:?}");
}

#[test]
fn run_max_fail_percent_stops_the_rollout() {
    let lab = Lab::shared();
    let dir = lab.scratch("run_maxfail");
    let pb = playbook(
        r#"play "Careful" hosts=all serial=1 max-fail-percent=0 {
    task "Break the first" { shell "test $(uname -n) != podc01" }
    task "Mark" { file "{{ dir }}/marked" state="touch" }
}"#,
    );
    let var = format!("dir={dir}");
    let out = run(
        lab,
        &pb.path,
        &lab_inventory(lab),
        &["-e", &var, "--output", "json"],
    );
    assert_eq!(out.code, 1, "{}", out.show());
    let events = out.events();
    assert!(
        events.iter().any(|e| e["event"] == "play_abort"),
        "{}",
        out.show()
    );
    assert!(
        events
            .iter()
            .all(|e| e["host"] != "podc02" && e["host"] != "podc03"),
        "later batches must not run:\n{}",
        out.show()
    );
    for h in lab.host_names() {
        assert_eq!(lab.ssh_ok(h, &format!("ls -A {dir}")), "");
    }
}

const FLOW: &str = r#"
play "Flow" hosts=all {
    task "Who" register="who" changed-when="false" { command "uname -n" }
    task "Only on podc02" when="who.stdout == 'podc02'" {
        copy content="{{ who.stdout }}\n" dest="{{ dir }}/only"
    }
    task "Files" register="made" {
        loop { - "a"; - "b"; - "c"; }
        copy content="{{ item }}\n" dest="{{ dir }}/{{ item }}.txt"
    }
    task "Loop with when" {
        loop "['x', 'y']"
        when "item == 'y'"
        file "{{ dir }}/{{ item }}" state="touch"
    }
    task "Count" { copy content="{{ made.results | length }} {{ made.changed }}\n" dest="{{ dir }}/count" }
    task "Retry until" register="tries" retries=5 delay="50ms" until="tries.stdout == '3'" {
        shell "echo x >> {{ dir }}/tries; wc -l < {{ dir }}/tries"
    }
    task "Tagged" tags="extra" { file "{{ dir }}/tagged" state="touch" }
}
"#;

#[test]
fn run_when_loop_register_and_until() {
    let lab = Lab::shared();
    let dir = lab.scratch("run_flow");
    let pb = playbook(FLOW);
    let var = format!("dir={dir}");
    let out = run(
        lab,
        &pb.path,
        &lab_inventory(lab),
        &["-e", &var, "--output", "json", "--skip-tags", "extra"],
    );
    assert_eq!(out.code, 0, "{}", out.show());
    let recap = out.recap();
    assert_eq!(stats(&recap, "podc01").4, 1, "`when` skipped on podc01: {recap}");
    assert_eq!(stats(&recap, "podc02").4, 0, "{recap}");
    for h in lab.host_names() {
        let only = lab.ssh_ok(h, &format!("cat {dir}/only 2>/dev/null || true"));
        assert_eq!(only, if h == "podc02" { "podc02\n" } else { "" }, "{h}");
        assert_eq!(
            lab.ssh_ok(h, &format!("cat {dir}/a.txt {dir}/b.txt {dir}/c.txt")),
            "a\nb\nc\n"
        );
        assert_eq!(
            lab.ssh_ok(h, &format!("ls {dir} | grep -x -e x -e y")),
            "y\n",
            "loop items filtered by when"
        );
        assert_eq!(
            lab.ssh_ok(h, &format!("cat {dir}/count")),
            "3 True\n",
            "minijinja prints booleans like Python"
        );
        assert_eq!(lab.ssh_ok(h, &format!("wc -l < {dir}/tries")).trim(), "3");
        assert_eq!(
            lab.ssh_ok(h, &format!("test -e {dir}/tagged && echo yes || echo no")),
            "no\n",
            "--skip-tags"
        );
    }
    for r in out.results("Retry until") {
        assert_eq!(r["attempts"], 3, "{r}");
        assert_eq!(r["status"], "changed", "{r}");
    }

    let tagged = run(
        lab,
        &pb.path,
        &lab_inventory(lab),
        &["-e", &var, "--output", "json", "--tags", "extra"],
    );
    assert_eq!(tagged.code, 0, "{}", tagged.show());
    let tasks: std::collections::BTreeSet<String> = tagged
        .events()
        .iter()
        .filter_map(|e| Some(e["task"].as_str()?.to_string()))
        .collect();
    assert_eq!(tasks.into_iter().collect::<Vec<_>>(), ["Tagged"]);
}

#[test]
fn run_once_and_delegate_to() {
    let lab = Lab::shared();
    let dir = lab.scratch("run_once");
    let pb = playbook(
        r#"play "Once" hosts=all {
    task "Leader only" run-once=#true register="leader" { shell "uname -n > {{ dir }}/leader; uname -n" }
    task "Everyone knows" { copy content="{{ leader.stdout }}\n" dest="{{ dir }}/leader-seen" }
    task "Delegated" delegate-to="podc01" { shell "echo {{ inventory_hostname }} > {{ dir }}/delegated-{{ inventory_hostname }}" }
}"#,
    );
    let var = format!("dir={dir}");
    let out = run(
        lab,
        &pb.path,
        &lab_inventory(lab),
        &["-e", &var, "--output", "json"],
    );
    assert_eq!(out.code, 0, "{}", out.show());
    assert_eq!(out.results("Leader only").len(), 1);
    for h in lab.host_names() {
        assert_eq!(lab.ssh_ok(h, &format!("cat {dir}/leader-seen")), "podc01\n");
        let leader = lab.ssh_ok(h, &format!("test -e {dir}/leader && echo yes || echo no"));
        assert_eq!(leader, if h == "podc01" { "yes\n" } else { "no\n" });
        assert_eq!(
            lab.ssh_ok("podc01", &format!("cat {dir}/delegated-{h}")),
            format!("{h}\n")
        );
    }
    assert_eq!(
        lab.ssh_ok("podc02", &format!("ls {dir} | grep delegated || true")),
        ""
    );
}

#[test]
fn a_roles_when_and_tags_gate_every_task_it_brings() {
    let lab = Lab::shared();
    let dir = lab.scratch("role_gate");
    let pb = playbook(
        r#"play "Gated role" hosts=all {
    role marker when="inventory_hostname == 'podc02'" tags="marks"
    task "Always" { shell "touch {{ dir }}/always" }
}"#,
    );
    std::fs::create_dir_all(pb.dir.path().join("roles/marker")).unwrap();
    std::fs::write(
        pb.dir.path().join("roles/marker/tasks.kdl"),
        "task \"Mark\" { shell \"touch {{ dir }}/marked\" }\n\
         task \"Mark again\" when=\"dir != ''\" { shell \"touch {{ dir }}/again\" }\n",
    )
    .unwrap();
    let var = format!("dir={dir}");
    let inv = lab_inventory(lab);

    let tagged = run(lab, &pb.path, &inv, &["-e", &var, "--tags", "marks"]);
    assert_eq!(tagged.code, 0, "{}", tagged.show());
    for h in lab.host_names() {
        let files = lab.ssh_ok(h, &format!("ls {dir}"));
        let want = if h == "podc02" { "again\nmarked\n" } else { "" };
        assert_eq!(
            files, want,
            "{h}: only the role's tasks, only where its when holds"
        );
    }
    let all = run(lab, &pb.path, &inv, &["-e", &var]);
    assert_eq!(all.code, 0, "{}", all.show());
    assert_eq!(lab.ssh_ok("podc01", &format!("ls {dir}")), "always\n");
}
