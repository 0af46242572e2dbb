//! The connection layer under faults, on the lab's real sshd: requests abandoned by
//! their callers, transfers cut off by a killed troupe, hosts that stop answering, and
//! sshd refusing channels (`MaxSessions`). Each test guards one way a run could report
//! something untrue or leave a host worse than it found it.

use std::collections::HashMap;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng as _, RngExt as _, SeedableRng as _};
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

/// Regression (issue 11.2): content too large (or not text) for the control shell goes
/// over a session's stdin to `cat > TEMP`, then `mv`. A troupe killed mid-transfer
/// closes that stdin, `cat` took the early end for the end of the file, and a 200 MB
/// target was replaced by its first 26 MB. Here troupe is killed (SIGKILL) at 5 random
/// points of a 200 MB copy, each time copying the file the target is not: the target
/// is always exactly one of the two, and after a run that completes no temp file
/// remains.
#[test]
fn a_copy_killed_midway_leaves_the_old_or_the_new_file() {
    const SIZE: usize = 200 * 1024 * 1024;
    let lab = Lab::shared();
    let dir = lab.scratch("conn_killed_copy");
    let on_controller = lab.host_path("podc01", "/srv").join("tests/conn_killed_copy");
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(0x11_02);
    // Two sources that differ everywhere: random bytes, no holes.
    let sources: Vec<(String, String)> = ["a", "b"]
        .iter()
        .map(|n| {
            let mut data = vec![0u8; SIZE];
            rng.fill_bytes(&mut data);
            let path = tmp.path().join(n);
            std::fs::write(&path, &data).unwrap();
            (path.display().to_string(), sha256_hex(&data))
        })
        .collect();
    let play = tmp.path().join("play.kdl");
    std::fs::write(
        &play,
        format!(
            r#"play "Big" hosts=podc01 {{
    task "big file" {{ copy src="{{{{ src }}}}" dest="{dir}/big" }}
}}"#
        ),
    )
    .unwrap();
    let inventory = lab.inventory_path();
    let troupe = |src: &str| {
        let mut cmd = lab.troupe_cmd();
        cmd.args(["run", play.to_str().unwrap(), "-i", inventory.to_str().unwrap()])
            .args(["-e", &format!("src={src}")])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let target_sha = || {
        let out = lab.ssh_ok("podc01", &format!("sha256sum < {dir}/big"));
        out.split_whitespace().next().unwrap_or_default().to_string()
    };
    let temp_files = || -> Vec<(String, u64)> {
        std::fs::read_dir(&on_controller)
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                let len = e.metadata().ok()?.len();
                name.starts_with(".big.troupe-tmp.").then_some((name, len))
            })
            .collect()
    };

    let first = troupe(&sources[0].0).output().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(target_sha(), sources[0].1);

    for round in 0..5 {
        let now = target_sha();
        let old = sources
            .iter()
            .position(|(_, sha)| *sha == now)
            .unwrap_or_else(|| panic!("round {round}: the target is neither file (sha256 {now})"));
        let (src, new_sha) = &sources[1 - old];
        // Somewhere between the first bytes and the last, or just after the last.
        let kill_at = (SIZE as f64 * rng.random_range(0.02..1.0)) as u64;
        let mut child = troupe(src).spawn().unwrap();
        loop {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            let arrived = temp_files().iter().map(|(_, len)| *len).max().unwrap_or(0);
            if arrived >= kill_at {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let after = target_sha();
        assert!(
            after == now || after == *new_sha,
            "round {round}: killed at {kill_at} of {SIZE} bytes, the target is neither the old nor the new file (sha256 {after})"
        );
    }

    let now = target_sha();
    let (src, new_sha) = sources.iter().find(|(_, sha)| *sha != now).unwrap();
    let last = troupe(src).output().unwrap();
    assert!(last.status.success(), "{}", String::from_utf8_lossy(&last.stderr));
    assert_eq!(target_sha(), *new_sha);
    // A shell of a killed run may still be finding out that its transfer was cut off;
    // it then removes its temp file, and the run above removed any left by a shell
    // that is gone. Wait for that, boundedly.
    let mut left = temp_files();
    for _ in 0..300 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = temp_files();
    }
    assert!(left.is_empty(), "temp files survived: {left:?}");
}
