//! Host keys judged like OpenSSH judges them (issue 12.12), each case against a real
//! sshd and, for parity, the OpenSSH client on the same known_hosts: `@revoked` keys
//! are refused, a host known only by its RSA key is reached (troupe offers the key
//! types known_hosts has for the host), hashed names match, a host certificate signed
//! by `ssh-keygen -s` is accepted from a trusted `@cert-authority` and refused from an
//! untrusted or revoked one, and a malformed line is an error naming file and line.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use troupe_run::connection::ssh::{SshConnection, SshOptions};
use troupe_run::connection::{Cmd, ConnError, Connection};
use troupe_tests::Lab;

/// A lab of its own whose host also has an RSA host key and a host certificate of its
/// ed25519 key, signed by [`ca_public`]'s CA for its address (sshd re-reads its config
/// on HUP), shared by the tests of this file.
fn lab() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| {
        let lab = Lab::start("host-keys", 1);
        let hdir = lab.dir().join("podc01");
        let rsa = hdir.join("ssh_host_rsa_key");
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
            .arg(&rsa)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ssh-keygen rsa");
        let ca = lab.dir().join("host-ca");
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "lab host CA", "-f"])
            .arg(&ca)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ssh-keygen CA");
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-s"])
            .arg(&ca)
            .args(["-I", "podc01", "-h", "-n", lab.address("podc01"), "-V", "-5m:+1d"])
            .arg(hdir.join("ssh_host_ed25519_key.pub"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "ssh-keygen -s (host certificate)");
        let config = hdir.join("sshd_config");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text = text.replacen("HostKey ", &format!("HostKey {}\nHostKey ", rsa.display()), 1);
        text.push_str(&format!(
            "HostCertificate {}\n",
            hdir.join("ssh_host_ed25519_key-cert.pub").display()
        ));
        std::fs::write(&config, text).unwrap();
        let pid = lab.sshd_pid("podc01").to_string();
        assert!(
            Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
        // sshd re-executes itself on HUP: wait until it offers the RSA key.
        for _ in 0..100 {
            if !public_key(&lab, "rsa").is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        lab
    })
}

/// `TYPE BASE64` of the host's key of `kind` as `ssh-keyscan` sees it ("" if none).
fn public_key(lab: &Lab, kind: &str) -> String {
    let out = Command::new("ssh-keyscan")
        .args(["-t", kind, lab.address("podc01")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().skip(1).take(2).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn write_known_hosts(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("known_hosts");
    std::fs::write(&path, text).unwrap();
    path
}

async fn connect(lab: &Lab, known_hosts: &Path) -> Result<SshConnection, ConnError> {
    let opts = SshOptions {
        known_hosts: known_hosts.to_path_buf(),
        ..lab.ssh_options()
    };
    SshConnection::connect("podc01", lab.address("podc01"), &opts).await
}

/// Whether OpenSSH's client connects with this known_hosts.
fn openssh_connects(lab: &Lab, known_hosts: &Path) -> bool {
    Command::new("ssh")
        .args(["-i"])
        .arg(lab.key_path())
        .args(["-o", &format!("UserKnownHostsFile={}", known_hosts.display())])
        .args([
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
        ])
        .args([
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-l",
            "root",
            lab.address("podc01"),
            "true",
        ])
        .status()
        .unwrap()
        .success()
}

#[tokio::test]
async fn a_host_known_only_by_its_rsa_key_is_reached() {
    let lab = lab();
    let tmp = tempfile::tempdir().unwrap();
    let rsa = public_key(lab, "rsa");
    assert!(rsa.starts_with("ssh-rsa "), "the host has an RSA key: {rsa:?}");
    let kh = write_known_hosts(tmp.path(), &format!("{} {rsa}\n", lab.address("podc01")));
    assert!(openssh_connects(lab, &kh), "OpenSSH connects");
    let conn = connect(lab, &kh)
        .await
        .unwrap_or_else(|e| panic!("troupe does not: {e}"));
    assert!(conn.exec(&Cmd::argv(["true"])).await.unwrap().success());
}

#[tokio::test]
async fn a_revoked_key_is_refused_even_when_also_listed() {
    let lab = lab();
    let tmp = tempfile::tempdir().unwrap();
    let ed = public_key(lab, "ed25519");
    let addr = lab.address("podc01");
    let kh = write_known_hosts(tmp.path(), &format!("{addr} {ed}\n@revoked * {ed}\n"));
    assert!(!openssh_connects(lab, &kh), "OpenSSH refuses a revoked key");
    match connect(lab, &kh).await {
        Err(e @ ConnError::HostKeyRevoked { .. }) => {
            let text = e.to_string();
            assert!(text.contains("revoked") && text.contains(":2"), "{text}");
        }
        other => panic!("expected HostKeyRevoked, got {other:?}"),
    }
    // Revoked while known_hosts lists no other key for the host: refused too, never
    // "unknown" (which accept-new would then record).
    let kh = write_known_hosts(tmp.path(), &format!("@revoked {addr} {ed}\n"));
    assert!(matches!(
        connect(lab, &kh).await,
        Err(ConnError::HostKeyRevoked { .. })
    ));
}

#[tokio::test]
async fn hashed_names_are_matched() {
    let lab = lab();
    let tmp = tempfile::tempdir().unwrap();
    let ed = public_key(lab, "ed25519");
    let kh = write_known_hosts(tmp.path(), &format!("{} {ed}\n", lab.address("podc01")));
    let ok = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&kh)
        .output()
        .unwrap();
    assert!(ok.status.success());
    let text = std::fs::read_to_string(&kh).unwrap();
    assert!(text.starts_with("|1|"), "hashed: {text}");
    assert!(openssh_connects(lab, &kh));
    connect(lab, &kh)
        .await
        .unwrap_or_else(|e| panic!("hashed known_hosts: {e}"));
}

#[tokio::test]
async fn a_malformed_line_is_an_error_naming_file_and_line() {
    let lab = lab();
    let tmp = tempfile::tempdir().unwrap();
    let ed = public_key(lab, "ed25519");
    let kh = write_known_hosts(
        tmp.path(),
        &format!(
            "# lab\n{} {ed}\n127.0.0.9 ssh-ed25519 AAAA-not-base64\n",
            lab.address("podc01")
        ),
    );
    match connect(lab, &kh).await {
        Err(e @ ConnError::KnownHostsInvalid { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&format!("{}:3", kh.display())), "{text}");
        }
        other => panic!("expected KnownHostsInvalid, got {other:?}"),
    }
}

/// `TYPE BASE64` of a CA made by [`lab`]: `host-ca` signed the lab host's
/// certificate, `other-ca` (made here) signed nothing.
fn ca_public(lab: &Lab, name: &str) -> String {
    let path = lab.dir().join(name);
    if !path.exists() {
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&path)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    let text = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    text.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

#[tokio::test]
async fn a_host_certificate_from_a_trusted_authority_is_accepted() {
    let lab = lab();
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca_public(lab, "host-ca");
    let kh = write_known_hosts(tmp.path(), &format!("@cert-authority 127.0.* {ca}\n"));
    assert!(openssh_connects(lab, &kh), "OpenSSH accepts the certificate");
    let conn = connect(lab, &kh)
        .await
        .unwrap_or_else(|e| panic!("troupe does not: {e}"));
    assert!(conn.exec(&Cmd::argv(["true"])).await.unwrap().success());
}

#[tokio::test]
async fn a_host_certificate_is_refused_from_an_untrusted_or_revoked_authority() {
    let lab = lab();
    let tmp = tempfile::tempdir().unwrap();
    let ca = ca_public(lab, "host-ca");
    let other = ca_public(lab, "other-ca");
    for (text, why) in [
        (
            format!("@cert-authority * {other}\n"),
            "no @cert-authority line trusts",
        ),
        (format!("@cert-authority * {ca}\n@revoked * {ca}\n"), "@revoked"),
        (format!("@cert-authority 127.0.* {ca}\n"), ""),
    ] {
        let kh = write_known_hosts(tmp.path(), &text);
        if why.is_empty() {
            // The control case: the same file minus the reason connects.
            connect(lab, &kh).await.unwrap();
            continue;
        }
        assert!(!openssh_connects(lab, &kh), "OpenSSH refuses: {text}");
        match connect(lab, &kh).await {
            Err(e @ ConnError::HostCertificateRejected { .. }) => {
                assert!(e.to_string().contains(why), "{text}: {e}");
            }
            other => panic!("{text}: expected HostCertificateRejected, got {other:?}"),
        }
    }
}
