//! Secrets end to end: a variable marked `(secret)` (in the playbook and in an
//! `-e @file.kdl`) is used in a template's content (shown with `--diff`), in a
//! command's argv and in a failing command's stderr; it must never appear in troupe's
//! stdout or stderr, human or JSON, while the host really gets it.

use troupe_tests::Lab;

use crate::run_util::{Playbook, Run, lab_inventory, playbook, run, troupe};

const PLAYBOOK: &str = r#"
play "Secrets" hosts=all {
    vars { (secret)etcd_token "tok-{{ inventory_hostname }}-s3cr3t"; shown "plainly-visible" }
    task "Config" { template "token.conf.j2" dest="{{ dir }}/token.conf" mode=0o600 }
    task "Use" { command "echo token {{ etcd_token }} {{ api_key }}" }
    task "Fail" { shell "echo denied for {{ etcd_token }} and {{ api_key }} >&2; exit 3" }
}
"#;

fn assert_hidden(out: &Run, what: &str) {
    for secret in ["s3cr3t", "key-from-a-file"] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "{what}: {secret} leaked:\n{}",
            out.show()
        );
    }
    assert!(
        out.stdout.contains("********"),
        "{what}: masked values are shown as ********:\n{}",
        out.show()
    );
}

/// [`PLAYBOOK`] with its template, and the `-e @file` argument of a vars file holding
/// one more secret.
fn secrets_playbook() -> (Playbook, String) {
    let pb = playbook(PLAYBOOK);
    std::fs::create_dir_all(pb.dir.path().join("templates")).unwrap();
    std::fs::write(
        pb.dir.path().join("templates/token.conf.j2"),
        "shown = {{ shown }}\ntoken = {{ etcd_token }}\napi = {{ api_key }}\n",
    )
    .unwrap();
    let extra = pb.dir.path().join("secrets.kdl");
    std::fs::write(&extra, "(secret)api_key \"key-from-a-file\"\n").unwrap();
    let extra_arg = format!("@{}", extra.display());
    (pb, extra_arg)
}

#[test]
fn run_secret_vars_never_appear_in_any_output() {
    let lab = Lab::shared();
    let (pb, extra_arg) = secrets_playbook();
    let inv = lab_inventory(lab);

    for (mode, args) in [("json", &["--output", "json"][..]), ("human", &[][..])] {
        let dir = lab.scratch(&format!("run_secrets_{mode}"));
        let dir_arg = format!("dir={dir}");
        let mut all = vec!["-e", &dir_arg, "-e", &extra_arg, "--diff"];
        all.extend_from_slice(args);
        let out = run(lab, &pb.path, &inv, &all);
        assert_eq!(
            out.code,
            1,
            "{mode}: the `Fail` task fails on every host:\n{}",
            out.show()
        );
        assert_hidden(&out, mode);
        // the diff is shown, with what is not secret in clear
        assert!(
            out.stdout.contains("shown = plainly-visible"),
            "{mode}: {}",
            out.show()
        );
        for h in lab.host_names() {
            let conf = lab.ssh_ok(h, &format!("cat {dir}/token.conf"));
            assert_eq!(
                conf,
                format!("shown = plainly-visible\ntoken = tok-{h}-s3cr3t\napi = key-from-a-file\n"),
                "{mode}: the host gets the real values"
            );
        }
        if mode == "json" {
            let fails = out.results("Fail");
            assert_eq!(fails.len(), lab.host_names().len(), "{}", out.show());
            for f in fails {
                assert_eq!(f["status"], "failed", "{f}");
                let message = f["error"]["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains("denied for ********"),
                    "stderr is quoted, masked: {f}"
                );
            }
            let config = out.results("Config");
            assert!(
                config.iter().all(|r| r["diffs"][0]["diff"]
                    .as_str()
                    .unwrap()
                    .contains("+token = ********")),
                "{}",
                out.show()
            );
        } else {
            assert!(out.stdout.contains("denied for ********"), "{}", out.show());
        }
    }
}

#[test]
fn render_masks_secret_vars_unless_asked_to_show_them() {
    let lab = Lab::shared();
    let (pb, extra_arg) = secrets_playbook();
    let inv = lab_inventory(lab);
    let render = |more: &[&str]| {
        let mut args = vec![
            "render",
            pb.path.to_str().unwrap(),
            "-i",
            inv.to_str().unwrap(),
            "--host",
            "podc01",
            "-e",
            "dir=/srv/x",
            "-e",
            &extra_arg,
        ];
        args.extend_from_slice(more);
        troupe(lab, &args)
    };

    let out = render(&[]);
    assert_eq!(out.code, 0, "{}", out.show());
    assert_hidden(&out, "render");
    assert!(
        out.stdout
            .contains("shown = plainly-visible\ntoken = ********\napi = ********\n"),
        "{}",
        out.show()
    );
    assert!(out.stderr.contains("--show-secrets"), "{}", out.show());

    let shown = render(&["--show-secrets"]);
    assert_eq!(shown.code, 0, "{}", shown.show());
    assert!(
        shown
            .stdout
            .contains("token = tok-podc01-s3cr3t\napi = key-from-a-file\n"),
        "{}",
        shown.show()
    );
}
