//! Private material stays private (issue 12.8–12.10): a fetched key keeps its mode on
//! the controller, a CA key is not copied to a host unless the task says so, no diff
//! or output shows a private key, the CA folder is 0700 whatever the umask, and a temp
//! key left by a crashed `pki-cert` is cleaned by the next run.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use troupe_tests::Lab;

use crate::run_util::{Run, lab_inventory, playbook};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// `troupe ARGS` started by a shell with umask 000, the worst an operator can have.
fn troupe_umask_000(lab: &Lab, args: &[&str]) -> Run {
    let cmd = lab.troupe_cmd();
    let program = cmd.get_program().to_owned();
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(program)
        .args(args);
    sh.current_dir(xtask::workspace_root()).env_clear();
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            sh.env(k, v);
        }
    }
    let out = sh.output().expect("run troupe");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn private_key_pem() -> String {
    let out = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .output()
        .expect("openssl");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The base64 body of a PEM block, as lines: none of them may ever be printed.
fn body_lines(pem: &str) -> Vec<&str> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect()
}

const PLAYBOOK: &str = r#"
play "Private material" hosts=podc01 {
    task "CA" { pki-ca dir="{{ local }}/deep/pki" cn="private-material" key-type="ecdsa-p256" }
    task "A node key, 0600" { copy content="{{ node_key }}" dest="{{ dir }}/node.key" mode=0o600 }
    task "Fetch it" { fetch "{{ dir }}/node.key" dest="{{ local }}/fetched" flat=#true }
    task "The CA key, by mistake" ignore-errors=#true { copy "{{ local }}/deep/pki/ca-key.pem" dest="{{ dir }}/ca-key.pem" }
    task "The CA key, on purpose" { copy "{{ local }}/deep/pki/ca-key.pem" dest="{{ dir }}/ca-key-meant.pem" mode=0o600 ca-key=#true }
    task "A certificate, key made on the host" { pki-cert "srv" ca-dir="{{ local }}/deep/pki" dest="{{ dir }}/pki" profile="server" { (list)sans "127.0.0.1"; } }
}
"#;

#[test]
fn keys_keep_their_mode_ca_keys_stay_home_and_no_output_shows_a_private_key() {
    let lab = Lab::shared();
    let dir = lab.scratch("private_material");
    let host_dir = lab.host_path("podc01", "/srv").join("tests/private_material");
    let local = tempfile::tempdir().unwrap();
    let node_key = private_key_pem();
    let pb = playbook(PLAYBOOK);
    // Leftovers of a `pki-cert` that died between `genpkey` and `mv`: one of a pid that
    // is gone, one in the older name without a pid; and one of a live writer (pid 1).
    std::fs::create_dir_all(host_dir.join("pki")).unwrap();
    for stale in [".srv-key.troupe-999999999.AbC123", ".srv-key.troupe-XyZ789"] {
        std::fs::write(host_dir.join("pki").join(stale), "half a key").unwrap();
    }
    std::fs::write(host_dir.join("pki/.srv-key.troupe-1.LiVe12"), "a live writer's").unwrap();

    let args = |json: bool| {
        let mut v = vec![
            "run".to_string(),
            pb.path_str().to_string(),
            "-i".into(),
            lab_inventory(lab).display().to_string(),
            "--diff".into(),
            "-e".into(),
            format!("dir={dir}"),
            "-e".into(),
            format!("local={}", local.path().display()),
            "-e".into(),
            format!("node_key={node_key}"),
        ];
        if json {
            v.extend(["--output".into(), "json".into()]);
        }
        v
    };
    let human_args = args(false);
    let out = troupe_umask_000(lab, &human_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.code, 0, "{}", out.show());

    // 12.8: the fetched key is 0600 like the host's.
    assert_eq!(
        mode(&local.path().join("fetched/node.key")),
        0o600,
        "{}",
        out.show()
    );
    // 12.10: the CA folder and the parents troupe made are 0700 under umask 000.
    for d in ["deep", "deep/pki"] {
        assert_eq!(mode(&local.path().join(d)), 0o700, "{d}");
    }
    // 12.9: the CA key was refused without `ca-key=#true`, copied with it.
    assert!(
        !host_dir.join("ca-key.pem").exists(),
        "the CA key went to the host:\n{}",
        out.show()
    );
    assert!(
        out.stdout.contains("is the private key of the CA"),
        "{}",
        out.show()
    );
    assert!(host_dir.join("ca-key-meant.pem").is_file());
    let ca_key = std::fs::read_to_string(local.path().join("deep/pki/ca-key.pem")).unwrap();
    for line in body_lines(&node_key).into_iter().chain(body_lines(&ca_key)) {
        assert!(
            !out.stdout.contains(line) && !out.stderr.contains(line),
            "a private key was shown:\n{}",
            out.show()
        );
    }
    assert!(
        out.stdout.contains("private key not shown"),
        "the diff says what it hides:\n{}",
        out.show()
    );
    // 12.10: the dead writers' temp keys are gone, the live one's is not.
    let left: Vec<String> = std::fs::read_dir(host_dir.join("pki"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert_eq!(left, vec![".srv-key.troupe-1.LiVe12".to_string()]);

    // JSON output, on a second run that rewrites the node key (a diff again).
    std::fs::write(host_dir.join("node.key"), "old\n").unwrap();
    let json_args = args(true);
    let out = troupe_umask_000(lab, &json_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.code, 0, "{}", out.show());
    for line in body_lines(&node_key).into_iter().chain(body_lines(&ca_key)) {
        assert!(
            !out.stdout.contains(line),
            "a private key was shown in JSON:\n{}",
            out.show()
        );
    }
    assert!(out.stdout.contains("private key not shown"), "{}", out.show());
}
