//! Ansible's filters and tests (issue 16) through the real `troupe` binary on the lab:
//! the checker accepts them, `when` reads registered results with `is changed` /
//! `is succeeded`, and the filters' output is what lands on the hosts.

use troupe_tests::Lab;

use crate::run_util::{lab_inventory, playbook, run, stats};

const EXPRESSIONS: &str = r#"
play "Expressions" hosts=all {
    task "Make" register="made" { copy content="x\n" dest="{{ dir }}/x" }
    task "Who" register="who" changed-when="false" { command "uname -n" }
    task "After a change" when="made is changed and who is succeeded and who is not changed" {
        copy content="{{ made is changed }}\n" dest="{{ dir }}/after"
    }
    task "Never" when="who is changed or who is failed or who is skipped" {
        copy content="no\n" dest="{{ dir }}/never"
    }
    task "Write" {
        copy dest="{{ dir }}/out" content="{{ {'b': [2], 'a': 1} | combine({'c': {'d': 3}}) | to_nice_yaml(indent=2) }}{{ '10.0.0.5/24' | ipaddr('network') }} {{ '3.5.17' is version('3.4', '>=') }} {{ who.stdout | regex_findall('[0-9]+') | first }} {{ [1, [2, 3]] | flatten | difference([2]) | to_json }}\n"
    }
}
"#;

#[test]
fn filters_and_result_tests_work_end_to_end() {
    let lab = Lab::shared();
    let dir = lab.scratch("run_expressions");
    let pb = playbook(EXPRESSIONS);
    let var = format!("dir={dir}");
    let out = run(
        lab,
        &pb.path,
        &lab_inventory(lab),
        &["-e", &var, "--output", "json"],
    );
    assert_eq!(out.code, 0, "{}", out.show());
    let recap = out.recap();
    for h in lab.host_names() {
        assert_eq!(stats(&recap, h).4, 1, "{h}: only `Never` is skipped: {recap}");
        assert_eq!(lab.ssh_ok(h, &format!("cat {dir}/after")), "True\n", "{h}");
        assert_eq!(
            lab.ssh_ok(h, &format!("test -e {dir}/never && echo yes || echo no")),
            "no\n"
        );
        let digits = h.trim_start_matches(|c: char| !c.is_ascii_digit());
        assert_eq!(
            lab.ssh_ok(h, &format!("cat {dir}/out")),
            format!("a: 1\nb:\n- 2\nc:\n  d: 3\n10.0.0.0 True {digits} [1,3]\n"),
            "{h}"
        );
    }

    // A second run changes nothing, so `made is changed` is false and the task skips.
    let again = run(
        lab,
        &pb.path,
        &lab_inventory(lab),
        &["-e", &var, "--output", "json"],
    );
    assert_eq!(again.code, 0, "{}", again.show());
    let recap = again.recap();
    for h in lab.host_names() {
        assert_eq!(stats(&recap, h).4, 2, "{h}: `After a change` skips too: {recap}");
    }
}

const LOOKUPS: &str = r#"
play "Lookups" hosts=all {
    task "Looked up" {
        copy dest="{{ dir }}/lookups" content="{{ lookup('file', 'motd.txt') }} {{ lookup('pipe', 'echo piped') }} {{ lookup('env', 'HOME') }}\n"
    }
    task "Password" { copy dest="{{ dir }}/pw" content="{{ lookup('password', pwfile ~ ' length=24') }}\n" }
    task "Show" { debug msg="the password is {{ lookup('password', pwfile) }}" }
}
"#;

/// Lookups run on the controller, and a `lookup('password')` value is a secret: the
/// hosts get it, the output (diff and debug message included) shows `********`.
#[test]
fn lookups_run_on_the_controller_and_passwords_stay_masked() {
    let lab = Lab::shared();
    let dir = lab.scratch("run_lookups");
    let pb = playbook(LOOKUPS);
    std::fs::create_dir(pb.dir.path().join("files")).unwrap();
    std::fs::write(pb.dir.path().join("files/motd.txt"), "hello\n").unwrap();
    let pwfile = pb.dir.path().join("secrets/db");
    let vars = [format!("dir={dir}"), format!("pwfile={}", pwfile.display())];
    let args = ["-e", &vars[0], "-e", &vars[1], "--diff"];
    let out = run(lab, &pb.path, &lab_inventory(lab), &args);
    assert_eq!(out.code, 0, "{}", out.show());
    let pw = std::fs::read_to_string(&pwfile).unwrap().trim_end().to_string();
    assert_eq!(pw.len(), 24);
    let home = std::env::var("HOME").unwrap();
    for h in lab.host_names() {
        assert_eq!(
            lab.ssh_ok(h, &format!("cat {dir}/lookups")),
            format!("hello piped {home}\n")
        );
        assert_eq!(
            lab.ssh_ok(h, &format!("cat {dir}/pw")),
            format!("{pw}\n"),
            "one password for all"
        );
    }
    assert!(
        !out.stdout.contains(&pw) && !out.stderr.contains(&pw),
        "{}",
        out.show()
    );
    assert!(out.stdout.contains("the password is ********"), "{}", out.show());
}
