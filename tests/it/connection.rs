//! The transports against the lab's real sshd hosts: what SshConnection promises
//! (exec semantics, one-round-trip stat, atomic writes, host-key policy, auth and
//! reachability errors, tunnels, jump hosts), and that the lab itself gives each host
//! its own files and hostname.

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use troupe_run::connection::ssh::{HostKeyPolicy, JumpHost, SshAuth, SshConnection, SshOptions};
use troupe_run::connection::{Cmd, ConnError, Connection, FileAttrs, FileKind};
use troupe_tests::Lab;

async fn connect(lab: &Lab, host: &str) -> SshConnection {
    SshConnection::connect(host, lab.address(host), &lab.ssh_options())
        .await
        .unwrap_or_else(|e| panic!("connect to {host}: {e}"))
}

/// `SHA256:...` of a lab host's key, as OpenSSH's ssh-keygen computes it.
fn openssh_fingerprint(lab: &Lab, host: &str) -> String {
    let key = lab.dir().join(host).join("ssh_host_ed25519_key.pub");
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(&key)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string()
}

fn known_hosts_line(lab: &Lab, host: &str) -> String {
    let all = std::fs::read_to_string(lab.known_hosts_path()).unwrap();
    let prefix = format!("{} ", lab.address(host));
    all.lines()
        .find(|l| l.starts_with(&prefix))
        .expect("host in known_hosts")
        .to_string()
}

#[test]
fn lab_hosts_have_their_own_files_and_hostname() {
    let lab = Lab::shared();
    let marker = "/etc/kubernetes/lab-smoke-marker";
    for h in lab.host_names() {
        assert_eq!(lab.ssh_ok(h, "hostname"), format!("{h}\n"));
        lab.ssh_ok(h, &format!("echo {h} > {marker}"));
    }
    for h in lab.host_names() {
        assert_eq!(lab.ssh_ok(h, &format!("cat {marker}")), format!("{h}\n"));
        let on_controller = lab.host_path(h, "/etc/kubernetes").join("lab-smoke-marker");
        assert_eq!(std::fs::read_to_string(on_controller).unwrap(), format!("{h}\n"));
        lab.ssh_ok(h, &format!("rm {marker}"));
    }
    // Each host runs its own runsvdir on its own (empty) service directory.
    let out = lab.ssh_ok(
        "podc02",
        "pgrep -x runsvdir >/dev/null && ls -A /etc/service | wc -l",
    );
    assert_eq!(out.trim(), "0");
}

#[tokio::test]
async fn exec_with_stdin_env_cwd_and_exit_codes() {
    let lab = Lab::shared();
    let dir = lab.scratch("conn_exec");
    let conn = connect(lab, "podc01").await;

    let mut cmd = Cmd::script("tr a-z A-Z; echo \"[$MY_VAR]\"; pwd; echo to-stderr >&2").stdin("hello\n");
    cmd.env = vec![("MY_VAR".into(), "it's a value".into())];
    cmd.cwd = Some(dir.clone());
    let out = conn.exec(&cmd).await.unwrap();
    assert_eq!(out.exit_code, 0);
    assert_eq!(out.stdout_str(), format!("HELLO\n[it's a value]\n{dir}\n"));
    assert_eq!(out.stderr_str(), "to-stderr\n");

    let out = conn
        .exec(&Cmd::argv(["sh", "-c", "echo partial; exit 7"]))
        .await
        .unwrap();
    assert_eq!((out.exit_code, out.stdout_str().as_str()), (7, "partial\n"));

    // Without stdin the command sees EOF at once instead of hanging.
    let out = conn.exec(&Cmd::argv(["cat"])).await.unwrap();
    assert_eq!((out.exit_code, out.stdout.len()), (0, 0));

    let out = conn.exec(&Cmd::script("kill -TERM $$")).await.unwrap();
    assert_eq!(out.exit_code, 128 + 15, "{out:?}");

    // A large stdin echoed back: needs stdin and stdout to flow at the same time. A
    // users' command's output is kept as its tail (issue 11.5), all of it counted.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let out = conn.exec(&Cmd::argv(["cat"]).stdin(big.clone())).await.unwrap();
    assert!(
        big.ends_with(&out.stdout)
            && out.stdout.len() <= troupe_run::connection::OUTPUT_TAIL
            && out.stdout_dropped.bytes as usize + out.stdout.len() == big.len(),
        "echoed {} bytes of {}, {:?} dropped",
        out.stdout.len(),
        big.len(),
        out.stdout_dropped
    );
    // troupe's own commands keep all of it.
    let out = conn
        .exec(&Cmd::argv(["cat"]).stdin(big.clone()).internal())
        .await
        .unwrap();
    assert!(
        out.stdout == big,
        "echoed {} bytes of {}",
        out.stdout.len(),
        big.len()
    );
}

// Multi-threaded: the SSH session task must keep running while the test blocks in
// `lab.ssh` (it sends the signal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_time_out_and_the_connection_survives() {
    let lab = Lab::shared();
    let conn = connect(lab, "podc01").await;
    let mut cmd = Cmd::argv(["sleep", "31.5"]);
    cmd.timeout = Some(Duration::from_millis(300));
    match conn.exec(&cmd).await {
        Err(ConnError::Timeout { command, .. }) => assert_eq!(command, "sleep 31.5"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The timed-out command was signalled, not left running on the host.
    let gone =
        "for i in $(seq 100); do pgrep -f 'sleep 3[1].5' >/dev/null || exit 0; sleep 0.1; done; exit 1";
    assert!(
        lab.ssh("podc01", gone).status.success(),
        "`sleep 31.5` still runs on podc01"
    );
    assert_eq!(
        conn.exec(&Cmd::argv(["echo", "still here"]))
            .await
            .unwrap()
            .stdout_str(),
        "still here\n"
    );
    // A timed command that finishes in time shows exactly its own output.
    let mut cmd = Cmd::script("echo out; echo err >&2; exit 4");
    cmd.timeout = Some(Duration::from_secs(60));
    let out = conn.exec(&cmd).await.unwrap();
    assert_eq!(
        (
            out.exit_code,
            out.stdout_str().as_str(),
            out.stderr_str().as_str()
        ),
        (4, "out\n", "err\n")
    );
}

#[tokio::test]
async fn one_connection_runs_many_commands_at_once() {
    let lab = Lab::shared();
    let conn = std::sync::Arc::new(connect(lab, "podc03").await);
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let conn = conn.clone();
            tokio::spawn(async move { conn.exec(&Cmd::script(format!("sleep 0.2; echo {i}"))).await })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.unwrap().unwrap().stdout_str(), format!("{i}\n"));
    }
}

/// troupe's own operations run in one long-lived shell per connection (no session,
/// login shell and `sh` each), with the exact semantics of a session of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_commands_share_one_control_shell_and_keep_session_semantics() {
    let lab = Lab::shared();
    let conn = std::sync::Arc::new(connect(lab, "podc02").await);
    let pid = |out: troupe_run::connection::Output| out.stdout_str().trim().to_string();
    let internal = |s: &str| Cmd::script(s).internal();

    // In a subshell `$$` is the shell that started it: the same for every request.
    let first = pid(conn.exec(&internal("echo $$")).await.unwrap());
    assert_eq!(pid(conn.exec(&internal("echo $$")).await.unwrap()), first);
    assert_ne!(
        pid(conn.exec(&Cmd::script("echo $$")).await.unwrap()),
        first,
        "a user's command has a session of its own"
    );

    // Output is exact (no final newline, stderr apart), and exit codes come through.
    let out = conn
        .exec(&internal("printf 'no newline'; printf 'err' >&2; exit 3"))
        .await
        .unwrap();
    assert_eq!(
        (
            out.exit_code,
            out.stdout_str().as_str(),
            out.stderr_str().as_str()
        ),
        (3, "no newline", "err")
    );
    // Nothing a request does leaks into the next: not `cd`, not a variable, not an
    // `exit`, not a syntax error; and stdin is empty, not the control stream.
    let out = conn
        .exec(&internal("cd /tmp; X=1; read line; echo \"[$line]\""))
        .await
        .unwrap();
    assert_eq!(out.stdout_str(), "[]\n");
    let out = conn.exec(&internal("if then fi '")).await.unwrap();
    assert_ne!(out.exit_code, 0, "a syntax error fails its own request");
    let out = conn.exec(&internal("echo \"$(pwd) [$X] $$\"")).await.unwrap();
    assert_eq!(out.stdout_str(), format!("/root [] {first}\n"));
    let mut argv = Cmd::argv(["printf", "%s|", "a b", "it's", "$HOME"]).internal();
    argv.cwd = Some("/tmp".into());
    argv.env = vec![("K".into(), "v w".into())];
    assert_eq!(conn.exec(&argv).await.unwrap().stdout_str(), "a b|it's|$HOME|");

    // Many at once: the shell takes one, the others get sessions; all answer right.
    let handles: Vec<_> = (0..12)
        .map(|i| {
            let conn = conn.clone();
            tokio::spawn(async move {
                conn.exec(&Cmd::script(format!("sleep 0.1; echo {i}")).internal())
                    .await
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        assert_eq!(h.await.unwrap().unwrap().stdout_str(), format!("{i}\n"));
    }

    // A request that hangs times out; the shell is replaced and the next one works.
    let mut hang = internal("sleep 32.5");
    hang.timeout = Some(Duration::from_millis(300));
    match conn.exec(&hang).await {
        Err(ConnError::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The hung request was signalled, not left running on the host.
    let gone =
        "for i in $(seq 100); do pgrep -f 'sleep 3[2].5' >/dev/null || exit 0; sleep 0.1; done; exit 1";
    assert!(
        lab.ssh("podc02", gone).status.success(),
        "`sleep 32.5` still runs on podc02"
    );
    let next = pid(conn.exec(&internal("echo $$")).await.unwrap());
    assert!(
        !next.is_empty() && next != first,
        "a new control shell: {next} vs {first}"
    );
    assert_eq!(pid(conn.exec(&internal("echo $$")).await.unwrap()), next);
}

#[tokio::test]
async fn stat_of_file_dir_symlink_and_absent() {
    let lab = Lab::shared();
    let dir = lab.scratch("conn_stat");
    lab.ssh_ok(
        "podc02",
        &format!(
            "cd {dir} && printf 'hello\\n' > 'a file' && chown daemon:adm 'a file' && chmod 4750 'a file' \
             && mkdir d && chmod 1777 d && ln -s '/some where' link"
        ),
    );
    let conn = connect(lab, "podc02").await;

    let f = conn
        .stat(&format!("{dir}/a file"))
        .await
        .unwrap()
        .expect("file exists");
    assert_eq!(f.kind, FileKind::File);
    assert_eq!(
        (f.mode, f.owner.as_str(), f.group.as_str(), f.size),
        (0o4750, "daemon", "adm", 6)
    );
    // sha256 of "hello\n"
    assert_eq!(
        f.sha256.as_deref(),
        Some("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03")
    );

    let d = conn.stat(&format!("{dir}/d")).await.unwrap().expect("dir exists");
    assert_eq!((d.kind, d.mode, d.sha256), (FileKind::Directory, 0o1777, None));

    let l = conn
        .stat(&format!("{dir}/link"))
        .await
        .unwrap()
        .expect("link exists");
    assert_eq!(
        (l.kind, l.link_target.as_deref()),
        (FileKind::Symlink, Some("/some where"))
    );

    assert_eq!(conn.stat(&format!("{dir}/nothing")).await.unwrap(), None);
    assert_eq!(conn.read_file(&format!("{dir}/nothing")).await.unwrap(), None);
    assert!(
        conn.read_file(&format!("{dir}/d")).await.is_err(),
        "reading a directory is an error"
    );
}

#[tokio::test]
async fn atomic_write_sets_or_keeps_mode_and_owner_and_leaves_no_temp_files() {
    let lab = Lab::shared();
    let dir = lab.scratch("conn_write");
    let conn = connect(lab, "podc01").await;
    let path = format!("{dir}/conf.yaml");

    // New file, explicit attributes.
    let attrs = FileAttrs {
        mode: Some(0o640),
        owner: Some("daemon".into()),
        group: Some("adm".into()),
    };
    conn.write_file(&path, b"one\n", &attrs).await.unwrap();
    assert_eq!(
        lab.ssh_ok("podc01", &format!("stat -c '%a %U %G' {path}; cat {path}")),
        "640 daemon adm\none\n"
    );

    // Replacing without attributes keeps what the old file had.
    conn.write_file(&path, b"two\n", &FileAttrs::default())
        .await
        .unwrap();
    assert_eq!(
        lab.ssh_ok("podc01", &format!("stat -c '%a %U %G' {path}; cat {path}")),
        "640 daemon adm\ntwo\n"
    );

    // Binary content round-trips exactly.
    let binary: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    conn.write_file(
        &path,
        &binary,
        &FileAttrs {
            mode: Some(0o600),
            ..FileAttrs::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        conn.read_file(&path).await.unwrap().as_deref(),
        Some(binary.as_slice())
    );
    assert_eq!(
        lab.ssh_ok("podc01", &format!("stat -c '%a %U' {path}")),
        "600 daemon\n"
    );

    // A new file without attributes gets the umask default, owned by the user.
    conn.write_file(&format!("{dir}/plain"), b"x", &FileAttrs::default())
        .await
        .unwrap();
    assert_eq!(
        lab.ssh_ok("podc01", &format!("stat -c '%a %U' {dir}/plain")),
        "644 root\n"
    );

    // Failures: unknown owner, missing directory, a directory in the way.
    let bad_owner = FileAttrs {
        owner: Some("no-such-user".into()),
        ..FileAttrs::default()
    };
    let err = conn.write_file(&path, b"three\n", &bad_owner).await.unwrap_err();
    assert!(err.to_string().contains("no-such-user"), "{err}");
    assert!(
        conn.write_file(&format!("{dir}/missing/x"), b"x", &FileAttrs::default())
            .await
            .is_err()
    );
    lab.ssh_ok("podc01", &format!("mkdir {dir}/sub"));
    assert!(
        conn.write_file(&format!("{dir}/sub"), b"x", &FileAttrs::default())
            .await
            .is_err()
    );

    // The failed write left the old content, and no write left a temp file behind.
    assert_eq!(
        conn.read_file(&path).await.unwrap().as_deref(),
        Some(binary.as_slice())
    );
    assert_eq!(
        lab.ssh_ok("podc01", &format!("ls -A {dir}")),
        "conf.yaml\nplain\nsub\n"
    );
    assert_eq!(lab.ssh_ok("podc01", &format!("ls -A {dir}/sub")), "");
}

#[tokio::test]
async fn unknown_host_key_is_refused_with_its_fingerprint() {
    let lab = Lab::shared();
    let tmp = tempfile::tempdir().unwrap();
    let opts = SshOptions {
        known_hosts: tmp.path().join("known_hosts"),
        ..lab.ssh_options()
    };
    match SshConnection::connect("podc01", lab.address("podc01"), &opts).await {
        Err(ConnError::UnknownHostKey {
            host,
            address,
            fingerprint,
            ..
        }) => {
            assert_eq!(
                (host.as_str(), address.as_str()),
                ("podc01", lab.address("podc01"))
            );
            assert_eq!(fingerprint, openssh_fingerprint(lab, "podc01"));
        }
        other => panic!("expected UnknownHostKey, got {other:?}"),
    }
    assert!(
        !tmp.path().join("known_hosts").exists(),
        "strict checking must not write known_hosts"
    );
}

#[tokio::test]
async fn accept_new_records_the_key_then_strict_accepts_it() {
    let lab = Lab::shared();
    let tmp = tempfile::tempdir().unwrap();
    let kh = tmp.path().join("known_hosts");
    std::fs::write(&kh, "# existing comment without newline").unwrap();
    let opts = SshOptions {
        known_hosts: kh.clone(),
        host_keys: HostKeyPolicy::AcceptNew,
        ..lab.ssh_options()
    };
    let conn = SshConnection::connect("podc03", lab.address("podc03"), &opts)
        .await
        .unwrap();
    assert_eq!(
        conn.exec(&Cmd::argv(["hostname"])).await.unwrap().stdout_str(),
        "podc03\n"
    );
    let written = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(
        written,
        format!(
            "# existing comment without newline\n{}\n",
            known_hosts_line(lab, "podc03")
        )
    );

    // Now known: strict checking accepts it, and accept-new adds nothing twice.
    let strict = SshOptions {
        host_keys: HostKeyPolicy::Strict,
        ..opts.clone()
    };
    SshConnection::connect("podc03", lab.address("podc03"), &strict)
        .await
        .unwrap();
    SshConnection::connect("podc03", lab.address("podc03"), &opts)
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), written);

    // The OpenSSH client agrees with what was written.
    let out = Command::new("ssh")
        .args([
            "-i",
            lab.key_path().to_str().unwrap(),
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", kh.display()))
        .args([&format!("root@{}", lab.address("podc03")), "true"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn changed_host_key_is_refused_even_with_accept_new() {
    let lab = Lab::shared();
    let tmp = tempfile::tempdir().unwrap();
    let kh = tmp.path().join("known_hosts");
    // podc02's key recorded under podc01's address: podc01 now "presents a changed key".
    let podc02 = known_hosts_line(lab, "podc02");
    let forged = podc02.replacen(lab.address("podc02"), lab.address("podc01"), 1);
    std::fs::write(&kh, format!("{forged}\n")).unwrap();
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let opts = SshOptions {
            known_hosts: kh.clone(),
            host_keys: policy,
            ..lab.ssh_options()
        };
        match SshConnection::connect("podc01", lab.address("podc01"), &opts).await {
            Err(ConnError::HostKeyMismatch { fingerprint, .. }) => {
                assert_eq!(fingerprint, openssh_fingerprint(lab, "podc01"))
            }
            other => panic!("{policy:?}: expected HostKeyMismatch, got {other:?}"),
        }
    }
    assert_eq!(
        std::fs::read_to_string(&kh).unwrap(),
        format!("{forged}\n"),
        "known_hosts untouched"
    );
}

#[tokio::test]
async fn wrong_key_is_an_authentication_error() {
    let lab = Lab::shared();
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("id_other");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(st.success());
    let opts = SshOptions::with_key("root", &key, lab.known_hosts_path());
    match SshConnection::connect("podc01", lab.address("podc01"), &opts).await {
        Err(e @ ConnError::Auth { .. }) => {
            assert!(e.to_string().contains("authentication as root failed"), "{e}");
        }
        other => panic!("expected Auth, got {other:?}"),
    }
    let missing = SshOptions::with_key("root", tmp.path().join("nope"), lab.known_hosts_path());
    assert!(matches!(
        SshConnection::connect("podc01", lab.address("podc01"), &missing).await,
        Err(ConnError::Auth { .. })
    ));
}

#[tokio::test]
async fn nobody_listening_is_unreachable() {
    let lab = Lab::shared();
    // Same lab subnet, a host number the lab never uses.
    let address = lab
        .address("podc01")
        .rsplit_once('.')
        .map(|(net, _)| format!("{net}.250"))
        .unwrap();
    match SshConnection::connect("ghost", &address, &lab.ssh_options()).await {
        Err(e @ ConnError::Unreachable { .. }) => {
            assert!(e.is_unreachable());
            assert!(e.to_string().contains(&format!("{address}:22")), "{e}");
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn tunnel_reaches_a_port_as_the_host_sees_it() {
    let lab = Lab::shared();
    // The lab shares the controller's network namespace, so a listener here is a
    // service on 127.0.0.1 of every lab host; sshd opens the connection to it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(&[&buf[..], b" back"].concat()).unwrap();
        }
    });
    let conn = connect(lab, "podc02").await;
    for host in ["127.0.0.1", "localhost"] {
        let mut t = conn.tunnel(host, port).await.unwrap();
        t.write_all(b"hello").await.unwrap();
        let mut got = vec![0u8; 10];
        t.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"hello back");
    }
    server.join().unwrap();
    // Nothing listens there any more: opening the tunnel fails, the connection lives.
    assert!(conn.tunnel("127.0.0.1", port).await.is_err());
    assert!(conn.exec(&Cmd::argv(["true"])).await.unwrap().success());
}

#[tokio::test]
async fn jump_host_carries_the_session() {
    let lab = Lab::shared();
    let jump = JumpHost {
        user: "root".into(),
        address: lab.address("podc01").into(),
        port: 22,
    };
    let opts = SshOptions {
        jump: Some(jump),
        ..lab.ssh_options()
    };
    let conn = SshConnection::connect("podc02", lab.address("podc02"), &opts)
        .await
        .unwrap();
    assert_eq!(
        conn.exec(&Cmd::argv(["hostname"])).await.unwrap().stdout_str(),
        "podc02\n"
    );
    // The session really runs through podc01: the TCP connection to podc02's sshd
    // belongs to an sshd (podc01's), not to this test process.
    let ss = Command::new("ss")
        .args(["-Htnp", "state", "established", "dst"])
        .arg(format!("{}:22", lab.address("podc02")))
        .output()
        .unwrap();
    let ss = String::from_utf8_lossy(&ss.stdout);
    assert!(ss.contains("\"sshd"), "no sshd-owned connection to podc02: {ss}");
    assert_eq!(
        JumpHost::parse(&format!("admin@{}:2222", lab.address("podc01")), "root").unwrap(),
        JumpHost {
            user: "admin".into(),
            address: lab.address("podc01").into(),
            port: 2222
        }
    );
    // An unknown jump host key is refused like any other.
    let tmp = tempfile::tempdir().unwrap();
    let strict_empty = SshOptions {
        known_hosts: tmp.path().join("kh"),
        ..opts
    };
    assert!(matches!(
        SshConnection::connect("podc02", lab.address("podc02"), &strict_empty).await,
        Err(ConnError::UnknownHostKey { .. })
    ));
}

/// ssh-agent auth reads `SSH_AUTH_SOCK` from the environment, which a test cannot set
/// for itself (other tests run in the same process), so this test starts an agent
/// holding the lab key and reruns this test binary with the socket in the child's
/// environment, running only [`agent_auth_child`].
#[test]
fn agent_authentication() {
    let lab = Lab::shared();
    let tmp = tempfile::tempdir().unwrap();
    let sock = tmp.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut tries = 0;
    while !sock.exists() && tries < 500 {
        std::thread::sleep(Duration::from_millis(10));
        tries += 1;
    }
    let add = Command::new("ssh-add")
        .arg(lab.key_path())
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        add.status.success(),
        "ssh-add: {}",
        String::from_utf8_lossy(&add.stderr)
    );

    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "connection::agent_auth_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SSH_AUTH_SOCK", &sock)
        .env("TROUPE_AGENT_TEST_ADDRESS", lab.address("podc02"))
        .env("TROUPE_AGENT_TEST_KNOWN_HOSTS", lab.known_hosts_path())
        .output()
        .unwrap();
    let _ = agent.kill();
    let _ = agent.wait();
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "the child test did not run:\n{stdout}"
    );
}

#[tokio::test]
#[ignore = "run by agent_authentication with an ssh-agent in its environment"]
async fn agent_auth_child() {
    let address = std::env::var("TROUPE_AGENT_TEST_ADDRESS").expect("run through agent_authentication");
    let known_hosts = std::env::var("TROUPE_AGENT_TEST_KNOWN_HOSTS").unwrap();
    // Explicit agent auth.
    let opts = SshOptions {
        auth: SshAuth::Agent,
        ..SshOptions::with_key("root", "/unused", &known_hosts)
    };
    let conn = SshConnection::connect("podc02", &address, &opts).await.unwrap();
    assert_eq!(
        conn.exec(&Cmd::argv(["hostname"])).await.unwrap().stdout_str(),
        "podc02\n"
    );
    // No identity in the inventory + an agent in the environment: the agent is used.
    let settings = troupe_dsl::model::ConnSettings {
        known_hosts: Some(known_hosts),
        ..Default::default()
    };
    let opts = SshOptions::from_settings(&settings, HostKeyPolicy::Strict).unwrap();
    assert_eq!(opts.auth, SshAuth::Agent);
    SshConnection::connect("podc02", &address, &opts).await.unwrap();
}

#[tokio::test]
async fn the_lab_inventory_loads_and_connects_every_host() {
    let lab = Lab::shared();
    let inv = troupe_dsl::load_inventory(&lab.inventory_path()).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        inv.hosts.keys().map(String::as_str).collect::<Vec<_>>(),
        lab.host_names()
    );
    assert_eq!(
        inv.groups.keys().map(String::as_str).collect::<Vec<_>>(),
        ["etcd", "control-plane"]
    );
    for (name, host) in &inv.hosts {
        assert_eq!(host.address.as_deref(), Some(lab.address(name)));
        let conn = SshConnection::connect_host(host, HostKeyPolicy::Strict)
            .await
            .unwrap();
        assert_eq!(
            conn.exec(&Cmd::argv(["hostname"])).await.unwrap().stdout_str(),
            format!("{name}\n")
        );
    }

    // A jump host given in the inventory, as `user@address`.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("jump.kdl");
    std::fs::write(
        &path,
        format!(
            "defaults user=root identity=\"{}\" known-hosts=\"{}\" connect-timeout=\"5s\"\n\
             host podc03 address=\"{}\" jump=\"root@{}\"\n",
            lab.key_path().display(),
            lab.known_hosts_path().display(),
            lab.address("podc03"),
            lab.address("podc01"),
        ),
    )
    .unwrap();
    let inv = troupe_dsl::load_inventory(&path).unwrap_or_else(|e| panic!("{e:?}"));
    let host = &inv.hosts["podc03"];
    let opts = SshOptions::from_settings(&host.conn, HostKeyPolicy::Strict).unwrap();
    assert_eq!(opts.connect_timeout, Duration::from_secs(5));
    assert_eq!(
        opts.jump.as_ref().map(|j| j.address.as_str()),
        Some(lab.address("podc01"))
    );
    let conn = SshConnection::connect_host(host, HostKeyPolicy::Strict)
        .await
        .unwrap();
    assert_eq!(
        conn.exec(&Cmd::argv(["hostname"])).await.unwrap().stdout_str(),
        "podc03\n"
    );
}

#[test]
fn the_fixture_builds_and_runs_the_troupe_binary() {
    let lab = Lab::shared();
    let out = lab.troupe(&["--help"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("troupe"));
}

#[tokio::test]
async fn a_stopped_lab_host_is_unreachable_and_the_others_are_not() {
    let lab = Lab::start("conn-stop", 2);
    let conn = connect(&lab, "podc01").await;
    lab.ssh_ok("podc01", "mkdir -p /etc/sv/sleeper && printf '#!/bin/sh\\nexec sleep 1000\\n' > /etc/sv/sleeper/run && chmod +x /etc/sv/sleeper/run && ln -s /etc/sv/sleeper /etc/service/");
    let up = "for i in $(seq 100); do sv status /etc/service/sleeper 2>/dev/null | grep -q '^run:' && exit 0; sleep 0.1; done; exit 1";
    assert!(
        lab.ssh("podc01", up).status.success(),
        "runit did not start the sleeper"
    );
    lab.stop_host("podc01");
    assert!(
        xtask::lab::processes_in(lab.host("podc01")).is_empty(),
        "podc01 left processes behind"
    );
    match SshConnection::connect("podc01", lab.address("podc01"), &lab.ssh_options()).await {
        Err(e @ ConnError::Unreachable { .. }) => assert!(e.is_unreachable()),
        other => panic!("expected Unreachable, got {other:?}"),
    }
    // The open connection notices its host is gone.
    assert!(conn.exec(&Cmd::argv(["true"])).await.is_err());
    assert_eq!(lab.ssh_ok("podc02", "hostname"), "podc02\n");
}
