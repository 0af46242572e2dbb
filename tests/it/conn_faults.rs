//! The connection layer under faults, on the lab's real sshd: requests abandoned by
//! their callers, transfers cut off by a killed troupe, hosts that stop answering, and
//! sshd refusing channels (`MaxSessions`). Each test guards one way a run could report
//! something untrue or leave a host worse than it found it.

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};
use sha2::{Digest as _, Sha256};
use troupe_run::connection::ssh::SshConnection;
use troupe_run::connection::{Cmd, Connection, FileAttrs, FileKind};
use troupe_tests::Lab;

async fn connect(lab: &Lab, host: &str) -> SshConnection {
    SshConnection::connect(host, lab.address(host), &lab.ssh_options())
        .await
        .unwrap_or_else(|e| panic!("connect to {host}: {e}"))
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// Regression (issue 11.1): a control-shell request whose caller stopped waiting left
/// its answer in the shell, and every later request read the previous one's answer: a
/// stat got another file's records, a failed write looked successful. Requests are
/// abandoned here again and again (answering soon, answering too late to be drained,
/// cut off while being written), and each of the 50 file operations in between must
/// see exactly what is on the host.
#[tokio::test]
async fn abandoned_control_requests_never_answer_later_ones() {
    let lab = Lab::shared();
    let dir = lab.scratch("conn_abandoned");
    let conn = connect(lab, "podc01").await;
    // The control shell is started by the first internal request.
    assert!(conn.stat(&dir).await.unwrap().is_some());

    let mut rng = StdRng::seed_from_u64(0x11_01);
    let mut model: HashMap<String, Vec<u8>> = HashMap::new();
    for i in 0..50 {
        if i % 5 == 0 {
            // An answer that looks like a stat of a 3-byte file, and would satisfy a
            // write or a `test -e`.
            let late = if i == 25 { 30 } else { 1 };
            let slow = Cmd::script(format!(
                "sleep {late}; printf 'present\\n81a4 root root 3\\nsha256:%064d\\n' 0; echo stale-{i} >&2"
            ))
            .internal();
            let gave_up = tokio::time::timeout(Duration::from_millis(100), conn.exec(&slow)).await;
            assert!(
                gave_up.is_err(),
                "op {i}: the slow request answered within 100 ms"
            );
        }
        if i == 42 {
            // A large write given up almost at once: maybe mid-write, maybe not.
            let big = "x".repeat(200 * 1024);
            let path = format!("{dir}/big");
            let _ = tokio::time::timeout(
                Duration::from_micros(200),
                conn.write_file(&path, big.as_bytes(), &FileAttrs::default()),
            )
            .await;
            // Whatever happened, say what is there now.
            match conn.read_file(&path).await.unwrap() {
                Some(got) => {
                    assert_eq!(got, big.as_bytes(), "op {i}: a write is whole or absent");
                    model.insert(path, got);
                }
                None => {
                    model.remove(&path);
                }
            }
        }
        let path = format!("{dir}/f{}", rng.random_range(0..5u32));
        let want = model.get(&path).cloned();
        match rng.random_range(0..5u32) {
            0 => {
                let len = rng.random_range(0..200usize);
                let text: String = (0..len).map(|_| rng.random_range(b'a'..=b'z') as char).collect();
                conn.write_file(&path, text.as_bytes(), &FileAttrs::default())
                    .await
                    .unwrap_or_else(|e| panic!("op {i}: write {path}: {e}"));
                model.insert(path.clone(), text.into_bytes());
            }
            1 => {
                let st = conn
                    .stat(&path)
                    .await
                    .unwrap_or_else(|e| panic!("op {i}: stat {path}: {e}"));
                match (&want, st) {
                    (None, None) => {}
                    (Some(w), Some(st)) => {
                        assert_eq!(st.kind, FileKind::File, "op {i}: {path}");
                        assert_eq!(st.size, w.len() as u64, "op {i}: size of {path}");
                        assert_eq!(
                            st.sha256.as_deref(),
                            Some(sha256_hex(w).as_str()),
                            "op {i}: {path}"
                        );
                    }
                    (w, st) => panic!("op {i}: stat {path}: expected {w:?}, got {st:?}"),
                }
            }
            2 => {
                let got = conn
                    .read_file(&path)
                    .await
                    .unwrap_or_else(|e| panic!("op {i}: read {path}: {e}"));
                assert_eq!(got, want, "op {i}: read {path}");
            }
            3 => {
                let out = conn
                    .exec(&Cmd::argv(["rm", "-f", "--", &path]).internal())
                    .await
                    .unwrap_or_else(|e| panic!("op {i}: rm {path}: {e}"));
                assert!(out.success(), "op {i}: rm {path}: {}", out.stderr_str());
                assert_eq!(out.stderr_str(), "", "op {i}: rm {path}");
                model.remove(&path);
            }
            _ => {
                let out = conn
                    .exec(&Cmd::argv(["test", "-e", &path]).internal())
                    .await
                    .unwrap_or_else(|e| panic!("op {i}: test -e {path}: {e}"));
                assert_eq!(
                    out.exit_code,
                    if want.is_some() { 0 } else { 1 },
                    "op {i}: test -e {path}"
                );
                assert_eq!(
                    (out.stdout_str(), out.stderr_str()),
                    (String::new(), String::new()),
                    "op {i}"
                );
            }
        }
    }
    // The host agrees with the model, seen through another client.
    for n in 0..5 {
        let path = format!("{dir}/f{n}");
        let out = lab.ssh("podc01", &format!("cat {path}"));
        match model.get(&path) {
            Some(w) => assert_eq!(&out.stdout, w, "{path}"),
            None => assert!(!out.status.success(), "{path} should not exist"),
        }
    }
}
