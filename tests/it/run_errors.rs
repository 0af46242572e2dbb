//! Failures a user must be able to act on, end to end: an unreachable host among
//! reachable ones, an unknown host key (refused, then accepted on request), and a
//! failing command reported with its exit code, stderr and playbook location, while
//! the other hosts go on.

use troupe_tests::Lab;

use crate::run_util::{filtered, lab_inventory, playbook, run, stats};

const SIMPLE: &str = r#"
play "Simple" hosts=all {
    task "Touch" { file "{{ dir }}/touched" state="touch" }
    task "Again" { file "{{ dir }}/touched" state="file" mode=0o600 }
}
"#;

/// The lab inventory with `edit` applied to its text, written beside `pb`.
fn edited_inventory(lab: &Lab, dir: &std::path::Path, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let text = std::fs::read_to_string(lab.inventory_path()).unwrap();
    let path = dir.join("inventory.kdl");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

#[test]
fn run_unreachable_host_among_reachable_ones() {
    let lab = Lab::shared();
    let dir = lab.scratch("run_unreachable");
    let pb = playbook(SIMPLE);
    let a1 = lab.address("podc01");
    let dead = format!("{}.99", a1.rsplit_once('.').unwrap().0);
    let inv = edited_inventory(lab, pb.dir.path(), |t| {
        t.replacen(
            "group etcd {\n",
            &format!("group etcd {{\n    host podc09 address=\"{dead}\"\n"),
            1,
        )
    });
    let var = format!("dir={dir}");
    let out = run(lab, &pb.path, &inv, &["-e", &var, "--output", "json"]);
    assert_eq!(out.code, 4, "exit 4 = some host unreachable:\n{}", out.show());
    let recap = out.recap();
    assert_eq!(stats(&recap, "podc09"), (0, 0, 0, 1, 0), "{recap}");
    for h in lab.host_names() {
        assert_eq!(
            stats(&recap, h).2 + stats(&recap, h).3,
            0,
            "{h} must not suffer: {recap}"
        );
        lab.ssh_ok(h, &format!("test -e {dir}/touched"));
    }
    let unreachable = out
        .results("Touch")
        .into_iter()
        .find(|r| r["host"] == "podc09")
        .unwrap();
    assert_eq!(unreachable["status"], "unreachable");
    assert_eq!(
        unreachable["error"]["code"], "troupe::conn::unreachable",
        "{unreachable}"
    );

    let human = run(lab, &pb.path, &inv, &["-e", &var, "--limit", "podc09"]);
    assert_eq!(human.code, 4, "{}", human.show());
    assert!(human.stdout.contains("unreachable: [podc09]"), "{}", human.stdout);
    assert!(
        human.stdout.contains(&format!("cannot connect to {dead}")),
        "{}",
        human.stdout
    );
    assert!(
        human.stdout.contains("is sshd running"),
        "the help is shown:\n{}",
        human.stdout
    );
}

#[test]
fn run_unknown_host_key_is_refused_until_accepted() {
    let lab = Lab::shared();
    let dir = lab.scratch("run_hostkey");
    let pb = playbook(SIMPLE);
    let empty = pb.dir.path().join("known_hosts");
    std::fs::write(&empty, "").unwrap();
    let real = lab.known_hosts_path().display().to_string();
    let inv = edited_inventory(lab, pb.dir.path(), |t| t.replace(&real, empty.to_str().unwrap()));
    let var = format!("dir={dir}");

    let refused = run(lab, &pb.path, &inv, &["-e", &var, "--limit", "podc01"]);
    assert_eq!(refused.code, 4, "{}", refused.show());
    assert!(
        refused.stdout.contains("host key is not in"),
        "{}",
        refused.stdout
    );
    assert!(
        refused.stdout.contains("SHA256:"),
        "fingerprint shown:\n{}",
        refused.stdout
    );
    assert!(
        refused.stdout.contains("--accept-new-host-keys"),
        "{}",
        refused.stdout
    );
    assert!(refused.stdout.contains("ssh-keyscan"), "{}", refused.stdout);
    assert_eq!(
        std::fs::read_to_string(&empty).unwrap(),
        "",
        "strict mode never writes known_hosts"
    );
    assert_eq!(lab.ssh_ok("podc01", &format!("ls -A {dir}")), "", "nothing ran");

    let accepted = run(
        lab,
        &pb.path,
        &inv,
        &["-e", &var, "--limit", "podc01", "--accept-new-host-keys"],
    );
    assert_eq!(accepted.code, 0, "{}", accepted.show());
    assert!(
        std::fs::read_to_string(&empty)
            .unwrap()
            .contains(lab.address("podc01"))
    );
    lab.ssh_ok("podc01", &format!("test -e {dir}/touched"));

    let strict_again = run(lab, &pb.path, &inv, &["-e", &var, "--limit", "podc01"]);
    assert_eq!(
        strict_again.code,
        0,
        "the recorded key is trusted now:\n{}",
        strict_again.show()
    );
}

const FAILING: &str = r#"
play "Fails" hosts=all {
    task "Break podc02" {
        shell "if [ $(uname -n) = podc02 ]; then echo 'disk on fire' >&2; exit 3; fi"
    }
    task "After" { copy content="ok\n" dest="{{ dir }}/after" }
}
"#;

#[test]
fn run_failing_command_is_reported_with_stderr_and_others_go_on() {
    let lab = Lab::shared();
    let dir = lab.scratch("run_failing");
    let pb = playbook(FAILING);
    let var = format!("dir={dir}");
    let out = run(
        lab,
        &pb.path,
        &lab_inventory(lab),
        &["-e", &var, "--output", "json"],
    );
    assert_eq!(out.code, 1, "{}", out.show());
    let recap = out.recap();
    assert_eq!(stats(&recap, "podc02"), (0, 0, 1, 0, 0), "{recap}");
    for h in ["podc01", "podc03"] {
        assert_eq!(stats(&recap, h), (0, 2, 0, 0, 0), "{recap}");
        assert_eq!(lab.ssh_ok(h, &format!("cat {dir}/after")), "ok\n");
    }
    assert_eq!(
        lab.ssh_ok("podc02", &format!("ls -A {dir}")),
        "",
        "a failed host stops"
    );

    let human = run(
        lab,
        &pb.path,
        &lab_inventory(lab),
        &["-e", &var, "--limit", "podc02"],
    );
    assert_eq!(human.code, 1, "{}", human.show());
    let text = filtered(&human.stdout, pb.dir.path());
    insta::assert_snapshot!(text, @r#"
    PLAY [Fails] podc02

    TASK [Break podc02] [TMP]/play.kdl:3:5
    failed: [podc02]
        command exited with code 3; stderr:
        disk on fire

    RECAP
    podc02  ok=0   changed=0   failed=1   unreachable=0   skipped=0
    FAILED (1 failed): 1 hosts, 0 ok, 0 changed, 1 failed, 0 unreachable, 0 skipped in [ELAPSED]
    "#);
}

/// A domain error (here pki's) reaches the JSON output with its own diagnostic code and
/// help, not flattened into `troupe::task::failed`: scripts can tell a corrupt CA from
/// any other failure.
#[test]
fn run_pki_error_keeps_its_code_in_json() {
    let lab = Lab::shared();
    let pb = playbook(
        r#"
play "Pki" hosts=podc01 {
    task "CA" { pki-ca dir="{{ ca_dir }}" }
}
"#,
    );
    let ca_dir = pb.dir.path().join("ca");
    std::fs::create_dir(&ca_dir).unwrap();
    std::fs::write(ca_dir.join("ca.pem"), "not a certificate\n").unwrap();
    std::fs::write(ca_dir.join("ca-key.pem"), "not a key\n").unwrap();
    let var = format!("ca_dir={}", ca_dir.display());
    let out = run(
        lab,
        &pb.path,
        &lab_inventory(lab),
        &["-e", &var, "--output", "json"],
    );
    assert_eq!(out.code, 1, "exit 1 = a task failed:\n{}", out.show());
    let result = &out.results("CA")[0];
    assert_eq!(result["status"], "failed", "{result}");
    assert_eq!(result["error"]["code"], "troupe::pki::bad_cert", "{result}");
    assert!(
        result["error"]["help"]
            .as_str()
            .unwrap()
            .contains("move it aside"),
        "{result}"
    );
}
