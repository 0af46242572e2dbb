//! No string reaches a shell unquoted (issue 12.11): hostile strings (quotes, `$()`,
//! backticks, `;`, a newline, `$HOME`, a glob, the control shell's framing marker) in
//! every module argument that reaches a host. Nothing may run; each value lands
//! byte-exact or the task is refused with an error. The payloads `cd; touch
//! pwned-…` would leave a file in root's home (or the working directory) if any part
//! of them ever ran.

use std::path::Path;

use troupe_tests::Lab;

use crate::run_util::{lab_inventory, playbook, run};

/// Hostile, but valid file names: no `/`, no NUL, no `{{`. One of each kind, since a
/// string with every kind at once tends to stop at a syntax error before anything
/// runs, and then all in one.
fn hostiles(tag: &str) -> Vec<String> {
    vec![
        format!("x$(cd;touch pwned-{tag}-a)"),
        format!("x`cd;touch pwned-{tag}-b`"),
        format!("x;cd;touch pwned-{tag}-c"),
        format!("x\ncd;touch pwned-{tag}-d"),
        format!("it's \"$(cd;touch pwned-{tag}-e)\""),
        "-x $HOME *?[a] \\ |&<> troupe-ctl-0123456789abcdef done 0".to_string(),
        format!(
            "h'q\"d$(cd;touch pwned-{tag}-a)`cd;touch pwned-{tag}-b`;cd;touch pwned-{tag}-c\n\
             cd;touch pwned-{tag}-d|x&y $HOME *?[a] \\ troupe-ctl-0123456789abcdef done 0\n\
             troupe-ctl-"
        ),
    ]
}

/// A KDL string literal for `s`.
fn kdl_str(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const PLAYBOOK: &str = r##"
play "Hostile strings" hosts=all {
    vars {
        h HOSTILE
    }
    task "dir" { file "{{ dir }}/f/{{ h }}" state="directory" }
    task "parents" loop="{{ ['t', 'l', 'c', 'tp', 'pki'] }}" { file "{{ dir }}/{{ item }}" state="directory" }
    task "touch" { file "{{ dir }}/t/{{ h }}" state="touch" }
    task "link" { file "{{ dir }}/l/{{ h }}" state="link" src="{{ h }}" }
    task "owner" ignore-errors=#true { file "{{ dir }}/t/{{ h }}" owner="{{ h }}" }
    task "copy" { copy content="{{ h }}" dest="{{ dir }}/c/{{ h }}" mode=0o640 }
    task "template" { template "hostile.j2" dest="{{ dir }}/tp/{{ h }}" }
    task "argv" { command { argv "sh" "-c" "printf %s \"$1\" > \"$2\"" "sh" "{{ h }}" "{{ dir }}/argv.out"; } }
    task "chdir" { command chdir="{{ dir }}/f/{{ h }}" { argv "sh" "-c" "pwd > ../../chdir.out"; } }
    task "creates" { command creates="{{ dir }}/nothing/{{ h }}" { argv "touch" "{{ dir }}/creates.ran"; } }
    task "removes" { command removes="{{ dir }}/t/{{ h }}" { argv "touch" "{{ dir }}/removes.ran"; } }
    task "env" { command { argv "sh" "-c" "printf %s \"$V\" > \"$0\"" "{{ dir }}/env.out"; env { V "{{ h }}"; }; } }
    task "stdin" { command stdin="{{ h }}" { argv "sh" "-c" "cat > \"$0\"" "{{ dir }}/stdin.out"; } }
    task "shell env" { shell "printf %s \"$V\" > ../../shell-env.out" chdir="{{ dir }}/f/{{ h }}" { env { V "{{ h }}"; }; } }
    task "wait" { wait-for path="{{ dir }}/t/{{ h }}" timeout="5s" }
    task "fetch" { fetch "{{ dir }}/c/{{ h }}" dest="{{ local }}" flat=#true }
    task "sv def" { file "{{ dir }}/sv/{{ h }}" state="directory" }
    task "sv run" { copy content="#!/bin/sh\nexec sleep 1000\n" dest="{{ dir }}/sv/{{ h }}/run" mode=0o755 }
    task "sv dir" { file "{{ dir }}/service" state="directory" }
    task "service" ignore-errors=#true { service "{{ h }}" manager="runit" enabled=#true state="started" sv-dir="{{ dir }}/sv" service-dir="{{ dir }}/service" timeout="1s" }
    task "service dirs" ignore-errors=#true { service "x" manager="runit" enabled=#true sv-dir="{{ dir }}/sv/{{ h }}" service-dir="{{ dir }}/f/{{ h }}" timeout="1s" }
    task "apiserver" ignore-errors=#true { kube-apiserver-etcd path="{{ dir }}/t/{{ h }}" container="{{ h }}" { (list)servers "https://127.0.0.1:2379"; } }
    task "ca" { pki-ca dir="{{ local }}/ca" cn="quoting" key-type="ecdsa-p256" }
    task "pki dir" { file "{{ dir }}/pki/{{ h }}" state="directory" }
    task "cert" { pki-cert "srv" ca-dir="{{ local }}/ca" dest="{{ dir }}/pki/{{ h }}" profile="server" { (list)sans "127.0.0.1"; } }
    task "absent" { file "{{ dir }}/t/{{ h }}" state="absent" }
}
"##;

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn hostile_strings_in_every_argument_land_exactly_and_never_run() {
    let lab = Lab::shared();
    let tag = format!("q{}", std::process::id());
    for (i, h) in hostiles(&tag).iter().enumerate() {
        sweep(lab, &tag, i, h);
    }
}

fn sweep(lab: &Lab, tag: &str, i: usize, h: &str) {
    let dir = lab.scratch(&format!("quoting_sweep_{i}"));
    let local = tempfile::tempdir().unwrap();
    let pb = playbook(&PLAYBOOK.replace("HOSTILE", &kdl_str(h)));
    std::fs::create_dir_all(pb.dir.path().join("templates")).unwrap();
    std::fs::write(pb.dir.path().join("templates/hostile.j2"), "[{{ h }}]").unwrap();
    let inv = lab_inventory(lab);
    let out = run(
        lab,
        &pb.path,
        &inv,
        &[
            "--limit",
            "podc01",
            "-e",
            &format!("dir={dir}"),
            "-e",
            &format!("local={}", local.path().display()),
        ],
    );
    let what = format!("hostile string {h:?}");

    // Nothing ran: no payload left a file, in root's home, / or the scratch tree.
    let found = lab.ssh_ok(
        "podc01",
        &format!("find /root / /tmp {dir} -maxdepth 3 -xdev -name 'pwned-{tag}-*' 2>/dev/null; true"),
    );
    assert_eq!(found, "", "{what} ran on the host:\n{found}\n{}", out.show());
    assert_eq!(
        out.code,
        0,
        "{what}: every task but the refused ones succeeds:\n{}",
        out.show()
    );
    // A refused task fails for what the value means, never because it broke a script.
    for broken in ["Syntax error", "unexpected", "unterminated", "not found"] {
        assert!(
            !out.stdout.contains(broken),
            "{what} broke a script ({broken}):\n{}",
            out.show()
        );
    }

    let host = lab
        .host_path("podc01", "/srv")
        .join(dir.trim_start_matches("/srv/"));
    let hb = h.as_bytes();
    assert!(host.join("f").join(h).is_dir(), "{what}: directory named exactly");
    assert_eq!(
        std::fs::read_link(host.join("l").join(h)).unwrap().as_os_str(),
        h,
        "{what}: link"
    );
    assert_eq!(
        read(&host.join("c").join(h)),
        hb,
        "{what}: copy: content and name exact"
    );
    assert_eq!(
        read(&host.join("tp").join(h)),
        format!("[{h}]").as_bytes(),
        "{what}: template"
    );
    assert_eq!(read(&host.join("argv.out")), hb, "{what}: argv");
    assert_eq!(
        read(&host.join("chdir.out")),
        format!("{dir}/f/{h}\n").as_bytes(),
        "{what}: chdir"
    );
    assert!(
        host.join("creates.ran").is_file(),
        "{what}: creates: the hostile path does not exist"
    );
    assert!(
        host.join("removes.ran").is_file(),
        "{what}: removes: the hostile path exists"
    );
    assert_eq!(read(&host.join("env.out")), hb, "{what}: env");
    assert_eq!(read(&host.join("stdin.out")), hb, "{what}: stdin");
    assert_eq!(
        read(&host.join("shell-env.out")),
        hb,
        "{what}: shell env and chdir"
    );
    assert_eq!(
        read(&local.path().join(h)),
        hb,
        "{what}: fetch: the controller's copy"
    );
    for f in ["srv.pem", "srv-key.pem"] {
        assert!(
            host.join("pki").join(h).join(f).is_file(),
            "{what}: pki-cert wrote {f}"
        );
    }
    assert!(
        !host.join("t").join(h).exists(),
        "{what}: absent removed exactly that path"
    );
    let ignored = out.stdout.matches("(failure ignored)").count();
    assert_eq!(
        ignored,
        4,
        "{what}: owner, both services and the manifest are refused:\n{}",
        out.show()
    );
}
