//! `troupe run` end to end on the shared 3-host lab: the site playbook is idempotent,
//! `--check` touches nothing, `--diff` shows what changes (and hides no-log content),
//! `--output json` is one object per line, `troupe render` previews offline, and the
//! exit codes are the documented ones.

use troupe_tests::Lab;

use crate::run_util::{filtered, lab_inventory, playbook, run, stats, troupe};

#[test]
fn run_site_playbook_twice_second_run_changes_nothing() {
    let lab = Lab::shared();
    let dir = lab.scratch("run_site");
    let site = xtask::workspace_root().join("playbooks/site.kdl");
    let root = format!("site_root={dir}/site");
    let inv = lab_inventory(lab);

    let first = run(lab, &site, &inv, &["-e", &root, "--output", "json"]);
    assert_eq!(first.code, 0, "{}", first.show());
    let recap = first.recap();
    for h in lab.host_names() {
        let (_, changed, failed, unreachable, _) = stats(&recap, h);
        assert!(changed > 0, "{h} changed nothing on the first run: {recap}");
        assert_eq!((failed, unreachable), (0, 0), "{}", first.show());
    }

    let second = run(lab, &site, &inv, &["-e", &root, "--output", "json"]);
    assert_eq!(second.code, 0, "{}", second.show());
    let recap = second.recap();
    for h in lab.host_names() {
        let (ok, changed, failed, unreachable, _) = stats(&recap, h);
        assert_eq!(
            (changed, failed, unreachable),
            (0, 0, 0),
            "second run on {h}: {}",
            second.show()
        );
        assert!(ok >= 8, "{recap}");
    }
    assert!(
        second.results("restart heartbeat").is_empty(),
        "no handler runs when nothing changed"
    );

    // --check of a fresh site works (the read-only `uname` runs, nothing is written).
    let fresh = format!("site_root={dir}/fresh");
    let check = run(lab, &site, &inv, &["-e", &fresh, "--check", "--output", "json"]);
    assert_eq!(check.code, 0, "{}", check.show());
    for h in lab.host_names() {
        lab.ssh_ok(h, &format!("test ! -e {dir}/fresh"));
    }

    for h in lab.host_names() {
        let conf = lab.ssh_ok(h, &format!("cat {dir}/site/conf/site.conf"));
        assert!(conf.contains(&format!("name = {h}\n")), "{conf}");
        assert!(
            conf.contains(&format!("address = {}\n", lab.address(h))),
            "{conf}"
        );
        let status = lab.ssh_ok(h, "sv status /etc/service/site-heartbeat");
        assert!(status.starts_with("run:"), "{h}: {status}");
        lab.ssh_ok(h, &format!("test -s {dir}/site/data/heartbeat"));
    }
}

const CHECK_PLAYBOOK: &str = r#"
play "Check mode" hosts=all {
    task "Directory" { file "{{ dir }}/new" state="directory" mode=0o750 }
    task "File" { copy content="hello\n" dest="{{ dir }}/new/hello.txt" }
    task "Command" { command "touch {{ dir }}/touched" }
}
"#;

#[test]
fn run_check_mode_changes_nothing_on_disk() {
    let lab = Lab::shared();
    let dir = lab.scratch("run_check");
    let pb = playbook(CHECK_PLAYBOOK);
    let var = format!("dir={dir}");
    let inv = lab_inventory(lab);

    let out = run(lab, &pb.path, &inv, &["--check", "-e", &var, "--output", "json"]);
    assert_eq!(out.code, 0, "{}", out.show());
    let recap = out.recap();
    for h in lab.host_names() {
        assert_eq!(stats(&recap, h), (0, 3, 0, 0, 0), "{}", out.show());
        assert_eq!(lab.ssh_ok(h, &format!("ls -A {dir}")), "", "--check wrote on {h}");
    }
    for r in out.results("File") {
        assert_eq!(r["check_mode"], true, "{r}");
    }

    let human = run(lab, &pb.path, &inv, &["--check", "-e", &var, "--limit", "podc01"]);
    assert_eq!(human.code, 0, "{}", human.show());
    let text = filtered(&human.stdout, pb.dir.path()).replace(&dir, "[DIR]");
    insta::assert_snapshot!(text, @r#"
    CHECK MODE: nothing will be changed; changes are reported as `would change`

    PLAY [Check mode] podc01

    TASK [Directory] [TMP]/play.kdl:3:5
    changed: [podc01] would change: create directory [DIR]/new

    TASK [File] [TMP]/play.kdl:4:5
    changed: [podc01] would change: create [DIR]/new/hello.txt

    TASK [Command] [TMP]/play.kdl:5:5
    changed: [podc01] would change: run: touch [DIR]/touched

    RECAP
    podc01  ok=0   changed=3   failed=0   unreachable=0   skipped=0
    OK: 1 hosts, 0 ok, 3 changed, 0 failed, 0 unreachable, 0 skipped in [ELAPSED]
    "#);
    assert_eq!(lab.ssh_ok("podc01", &format!("ls -A {dir}")), "");
}

const DIFF_PLAYBOOK: &str = r#"
play "Diff" hosts=all {
    task "App config" { copy content="port = 2379\nname = new\n" dest="{{ dir }}/app.conf" }
    task "Secret" no-log=#true { copy content="password = hunter2\n" dest="{{ dir }}/secret.conf" }
}
"#;

#[test]
fn run_diff_shows_changes_and_masks_no_log() {
    let lab = Lab::shared();
    let dir = lab.scratch("run_diff");
    lab.ssh_ok(
        "podc01",
        &format!("printf 'port = 2379\\nname = old\\n' > {dir}/app.conf"),
    );
    lab.ssh_ok(
        "podc01",
        &format!("printf 'password = old-secret\\n' > {dir}/secret.conf"),
    );
    let pb = playbook(DIFF_PLAYBOOK);
    let var = format!("dir={dir}");
    let out = run(
        lab,
        &pb.path,
        &lab_inventory(lab),
        &["--diff", "-e", &var, "--limit", "podc01"],
    );
    assert_eq!(out.code, 0, "{}", out.show());
    assert!(
        !out.stdout.contains("hunter2") && !out.stdout.contains("old-secret"),
        "no-log leaked:\n{}",
        out.stdout
    );
    let text = filtered(&out.stdout, pb.dir.path()).replace(&dir, "[DIR]");
    insta::assert_snapshot!(text, @r#"
    PLAY [Diff] podc01

    TASK [App config] [TMP]/play.kdl:3:5
    changed: [podc01] update [DIR]/app.conf
        --- [DIR]/app.conf (before)
        +++ [DIR]/app.conf (after)
        @@ -1,2 +1,2 @@
         port = 2379
        -name = old
        +name = new

    TASK [Secret] [TMP]/play.kdl:4:5
    changed: [podc01] (output hidden by no-log)

    RECAP
    podc01  ok=0   changed=2   failed=0   unreachable=0   skipped=0
    OK: 1 hosts, 0 ok, 2 changed, 0 failed, 0 unreachable, 0 skipped in [ELAPSED]
    "#);
    assert_eq!(
        lab.ssh_ok("podc01", &format!("cat {dir}/secret.conf")),
        "password = hunter2\n"
    );

    // The JSON stream masks the same way.
    lab.ssh_ok("podc01", &format!("rm {dir}/secret.conf"));
    let json = run(
        lab,
        &pb.path,
        &lab_inventory(lab),
        &["--diff", "-e", &var, "--limit", "podc01", "--output", "json"],
    );
    assert_eq!(json.code, 0, "{}", json.show());
    assert!(!json.stdout.contains("hunter2"), "{}", json.stdout);
}

#[test]
fn run_json_output_is_one_object_per_line() {
    let lab = Lab::shared();
    let dir = lab.scratch("run_json");
    let pb = playbook(
        r#"play "Json" hosts=etcd {
    task "Touch" { file "{{ dir }}/t" state="touch" }
    task "Say" { debug msg="hello from {{ inventory_hostname }}" }
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
    let events = out.events();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(&kinds[..3], ["run_start", "play_start", "task_start"]);
    assert_eq!(kinds.iter().filter(|k| **k == "host_result").count(), 6);
    assert_eq!(kinds.last(), Some(&"recap"));
    let says = out.results("Say");
    assert!(
        says.iter()
            .any(|r| r["host"] == "podc02" && r["msg"] == "hello from podc02" && r["status"] == "ok"),
        "{says:?}"
    );
    let recap = out.recap();
    assert_eq!(
        recap["podc01"],
        serde_json::json!({"ok": 1, "changed": 1, "failed": 0, "unreachable": 0, "skipped": 0, "ignored": 0})
    );
}

#[test]
fn run_render_previews_templates_offline() {
    let lab = Lab::shared();
    let site = xtask::workspace_root().join("playbooks/site.kdl");
    let inv = lab_inventory(lab);
    let out = troupe(
        lab,
        &[
            "render",
            site.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "--host",
            "podc02",
            "--task",
            "Site configuration",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.show());
    assert!(
        out.stdout.starts_with(
            "==> /srv/site/conf/site.conf on podc02 [task \"Site configuration\", playbooks/site.kdl:"
        ),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("name = podc02\n"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "peers = {}, {}\n",
            lab.address("podc01"),
            lab.address("podc03")
        )),
        "{}",
        out.stdout
    );

    let missing = troupe(
        lab,
        &[
            "render",
            site.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "--host",
            "podc99",
        ],
    );
    assert_eq!(missing.code, 1, "{}", missing.show());
    assert!(missing.stderr.contains("no host `podc99`"), "{}", missing.stderr);
}

#[test]
fn run_exit_codes_for_invalid_input_and_usage() {
    let lab = Lab::shared();
    let inv = lab_inventory(lab);
    let bad = playbook(r#"play "Bad" hosts=all { task "Typo" { tmeplate src="x.j2" dest="/tmp/x" } }"#);
    let out = run(lab, &bad.path, &inv, &[]);
    assert_eq!(out.code, 1, "{}", out.show());
    assert!(
        out.stderr.contains("template"),
        "did-you-mean expected:\n{}",
        out.stderr
    );
    assert_eq!(out.stdout, "", "nothing runs before the playbook checks clean");

    let check = troupe(lab, &["check", bad.path_str(), "-i", inv.to_str().unwrap()]);
    assert_eq!(check.code, 1, "{}", check.show());
    let good = playbook(r#"play "Good" hosts=all { task "Hi" { debug "hi" } }"#);
    let check = troupe(lab, &["check", good.path_str(), "-i", inv.to_str().unwrap()]);
    assert_eq!(check.code, 0, "{}", check.show());

    let usage = troupe(lab, &["run", "--no-such-flag"]);
    assert_eq!(usage.code, 2, "{}", usage.show());

    let limit = run(lab, &good.path, &inv, &["--limit", "podc99"]);
    assert_eq!(limit.code, 1, "{}", limit.show());
    assert!(
        limit.stderr.contains("`podc99` matches no host or group"),
        "{}",
        limit.stderr
    );
    // `--limit` is parsed like a play's `hosts=`: a pattern a playbook would refuse is
    // refused here too, not quietly read as something else.
    for bad_pattern in ["etcd::podc01", "etcd:!", "pod c01"] {
        let limit = run(lab, &good.path, &inv, &["--limit", bad_pattern]);
        assert_eq!(limit.code, 1, "{bad_pattern}: {}", limit.show());
        assert!(
            limit.stderr.contains("invalid host pattern"),
            "{bad_pattern}: {}",
            limit.stderr
        );
    }
}
