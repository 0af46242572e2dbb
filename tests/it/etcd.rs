//! etcd membership against REAL etcd processes on loopback (Debian's 3.4), with TLS
//! certificates made by openssl: growth 1 → 3 with data read back from every member,
//! re-runs that change nothing, a join interrupted right after `member add`, removal,
//! and the refusals that protect quorum. The modules are driven through the same
//! `DynModule` check → apply calls the executor makes, on a local connection.
//!
//! Every etcd started here is killed by [`EtcdProc`]'s `Drop`, even when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use troupe_run::connection::Connection;
use troupe_run::connection::local::LocalConnection;
use troupe_run::etcd::membership::{Decision, Goal, Want};
use troupe_run::etcd::{Dialer, Etcd, Route, TlsPem, decide, snapshot};
use troupe_run::module::{Args, DynCheck, DynModule, Outcome, TaskCx, TaskError};
use troupe_run::modules;

/// CA, one certificate for every member (server + peer, SAN 127.0.0.1) and a client.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn generate(dir: &Path) -> Certs {
        let script = r#"
set -e
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca-key.pem 2>/dev/null
openssl req -x509 -new -key ca-key.pem -out ca.pem -days 2 -subj "/CN=troupe test etcd CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
for n in member client; do
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $n-key.pem 2>/dev/null
  openssl req -new -key $n-key.pem -out $n.csr -subj "/CN=$n" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n' > $n.ext
  openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out $n.pem -days 2 -extfile $n.ext 2>/dev/null
done
"#;
        let status = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .status()
            .expect("run openssl");
        assert!(status.success(), "openssl failed to make test certificates");
        Certs {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn pem(&self) -> TlsPem {
        let read = |n: &str| std::fs::read(self.dir.join(n)).unwrap();
        TlsPem {
            ca: read("ca.pem"),
            cert: read("client.pem"),
            key: read("client-key.pem"),
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A member-to-be: its name, URLs and data dir.
#[derive(Clone)]
struct Node {
    name: String,
    client_url: String,
    peer_url: String,
    data_dir: PathBuf,
}

impl Node {
    fn new(root: &Path, name: &str) -> Node {
        Node {
            name: name.to_string(),
            client_url: format!("https://127.0.0.1:{}", free_port()),
            peer_url: format!("https://127.0.0.1:{}", free_port()),
            data_dir: root.join(name),
        }
    }
}

/// A running etcd, killed on drop.
struct EtcdProc {
    child: Child,
    log: PathBuf,
}

impl Drop for EtcdProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EtcdProc {
    fn start(node: &Node, certs: &Certs, initial_cluster: &str, state: &str) -> EtcdProc {
        let log = node.data_dir.with_extension("log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("etcd")
            .args(["--name", &node.name])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args([
                "--listen-client-urls",
                &node.client_url,
                "--advertise-client-urls",
                &node.client_url,
            ])
            .args([
                "--listen-peer-urls",
                &node.peer_url,
                "--initial-advertise-peer-urls",
                &node.peer_url,
            ])
            .args([
                "--initial-cluster",
                initial_cluster,
                "--initial-cluster-state",
                state,
            ])
            .args(["--initial-cluster-token", "troupe-test"])
            .args([
                "--cert-file",
                &certs.path("member.pem"),
                "--key-file",
                &certs.path("member-key.pem"),
            ])
            .args(["--trusted-ca-file", &certs.path("ca.pem"), "--client-cert-auth"])
            .args([
                "--peer-cert-file",
                &certs.path("member.pem"),
                "--peer-key-file",
                &certs.path("member-key.pem"),
            ])
            .args([
                "--peer-trusted-ca-file",
                &certs.path("ca.pem"),
                "--peer-client-cert-auth",
            ])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start etcd");
        EtcdProc { child, log }
    }

    /// Block until the client port accepts connections (or the process died).
    fn wait_listening(&mut self, node: &Node) {
        let addr = node.client_url.trim_start_matches("https://").to_string();
        for _ in 0..200 {
            if std::net::TcpStream::connect(&addr).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("etcd {} exited with {status}:\n{}", node.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd {} does not listen on {addr}:\n{}", node.name, self.log());
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Temp dir, certs, and a way to run modules against the cluster from the controller.
struct Lab {
    tmp: tempfile::TempDir,
    certs: Certs,
    conn: Arc<dyn Connection>,
}

impl Lab {
    fn new() -> Lab {
        let tmp = tempfile::tempdir().unwrap();
        let certs = Certs::generate(tmp.path());
        Lab {
            tmp,
            certs,
            conn: Arc::new(LocalConnection::new("localhost")),
        }
    }

    fn node(&self, name: &str) -> Node {
        Node::new(self.tmp.path(), name)
    }

    async fn etcd(&self, endpoints: &[&Node]) -> Etcd {
        let eps: Vec<String> = endpoints.iter().map(|n| n.client_url.clone()).collect();
        let dialer = Dialer::new(Some(self.certs.pem()), Route::Direct).unwrap();
        Etcd::connect(&eps, dialer).await.expect("connect to etcd")
    }

    /// Arguments every etcd module takes, plus `extra`.
    fn args(&self, endpoints: &[&Node], extra: Value) -> Args {
        let mut a = json!({
            "endpoints": endpoints.iter().map(|n| n.client_url.clone()).collect::<Vec<_>>(),
            "ca": self.certs.path("ca.pem"),
            "cert": self.certs.path("client.pem"),
            "key": self.certs.path("client-key.pem"),
            "timeout": "30s",
        });
        for (k, v) in extra.as_object().unwrap() {
            a[k] = v.clone();
        }
        a.as_object().unwrap().clone()
    }

    /// check, then apply when a change is planned — what the executor does.
    async fn run(&self, module: &str, args: Args) -> Result<Outcome, TaskError> {
        let m: &dyn DynModule =
            modules::find(module).unwrap_or_else(|| panic!("module {module} is registered"));
        let render = |_: &str| -> Result<String, TaskError> { Err(TaskError::failed("no templates here")) };
        let eval = |_: &str| -> Result<Value, TaskError> { Ok(Value::Null) };
        let cx = TaskCx {
            host: "localhost",
            conn: &self.conn,
            controller: &self.conn,
            search_dirs: &[],
            render: &render,
            eval: &eval,
        };
        match m.check(&args, &cx).await? {
            DynCheck::Unchanged(out) => Ok(out),
            DynCheck::Change(change) => m.apply(change, &cx).await,
        }
    }

    /// Only the check: what `--check` would show.
    async fn plan(&self, module: &str, args: Args) -> Result<Option<String>, TaskError> {
        let m: &dyn DynModule = modules::find(module).unwrap();
        let render = |_: &str| -> Result<String, TaskError> { Err(TaskError::failed("no templates here")) };
        let eval = |_: &str| -> Result<Value, TaskError> { Ok(Value::Null) };
        let cx = TaskCx {
            host: "localhost",
            conn: &self.conn,
            controller: &self.conn,
            search_dirs: &[],
            render: &render,
            eval: &eval,
        };
        Ok(match m.check(&args, &cx).await? {
            DynCheck::Unchanged(_) => None,
            DynCheck::Change(change) => Some(change.summary),
        })
    }

    fn first(&self, node: &Node) -> EtcdProc {
        let mut p = EtcdProc::start(
            node,
            &self.certs,
            &format!("{}={}", node.name, node.peer_url),
            "new",
        );
        p.wait_listening(node);
        p
    }

    /// Start a joining member with the registered initial cluster, never `new`.
    fn join(&self, node: &Node, registered: &Outcome) -> EtcdProc {
        let initial = registered.data["initial_cluster"]
            .as_str()
            .expect("initial_cluster registered");
        assert_eq!(registered.data["initial_cluster_state"], "existing");
        EtcdProc::start(node, &self.certs, initial, "existing")
    }
}

fn member_args(node: &Node, state: &str) -> Value {
    json!({"name": node.name, "peer-url": node.peer_url, "state": state})
}

fn voting_names(out: &Outcome) -> Vec<String> {
    let mut names: Vec<String> = out.data["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["is_learner"] == false && m["started"] == true)
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grows_one_to_three_keeping_data_then_reruns_unchanged() {
    let lab = Lab::new();
    let n1 = lab.node("etcd01");
    let n2 = lab.node("etcd02");
    let n3 = lab.node("etcd03");
    let _p1 = lab.first(&n1);
    let seed = [&n1];

    // Data written before the expansion.
    let mut etcd = {
        let out = lab
            .run("etcd-health", lab.args(&seed, json!({})))
            .await
            .expect("single member healthy");
        assert_eq!(voting_names(&out), ["etcd01"]);
        lab.etcd(&seed).await
    };
    for i in 0..5 {
        etcd.put(&format!("/seed/key{i}"), &format!("value{i}"))
            .await
            .unwrap();
    }

    // Back up first, verified, keep the last 2.
    let backups = lab.tmp.path().join("backups");
    let snap_args = lab.args(&seed, json!({"dest": backups.display().to_string(), "keep": 2}));
    let out = lab
        .run("etcd-snapshot", snap_args.clone())
        .await
        .expect("snapshot saved");
    assert!(out.changed);
    assert!(out.data["size"].as_u64().unwrap() > 0);
    if let Some(keys) = out.data["total_keys"].as_i64() {
        assert!(keys >= 5, "etcdctl sees {keys} keys in the snapshot");
    }
    snapshot::verify(Path::new(out.data["path"].as_str().unwrap()))
        .await
        .expect("snapshot verifies");

    let mut procs = Vec::new();
    for node in [&n2, &n3] {
        // --check shows the planned change and changes nothing.
        let planned = lab
            .plan("etcd-member", lab.args(&seed, member_args(node, "present")))
            .await
            .unwrap();
        assert_eq!(
            planned.as_deref(),
            Some(format!("add {} ({}) as a learner", node.name, node.peer_url).as_str())
        );
        let (_, before) = etcd.members().await.unwrap();

        let added = lab
            .run("etcd-member", lab.args(&seed, member_args(node, "present")))
            .await
            .expect("added");
        assert!(added.changed);
        assert_eq!(added.data["member"]["is_learner"], true);
        assert!(
            added.data["initial_cluster"]
                .as_str()
                .unwrap()
                .contains(&format!("{}={}", node.name, node.peer_url))
        );
        let (_, after) = etcd.members().await.unwrap();
        assert_eq!(after.len(), before.len() + 1);

        procs.push(lab.join(node, &added));
        let promoted = lab
            .run("etcd-member", lab.args(&seed, member_args(node, "promoted")))
            .await
            .expect("promoted");
        assert!(promoted.changed);
    }

    // Healthy, three voters, and the old keys read back from every member's own copy.
    let keys: Vec<String> = (0..5).map(|i| format!("/seed/key{i}")).collect();
    let health = lab
        .run(
            "etcd-health",
            lab.args(&seed, json!({"voting": 3, "read-keys": keys})),
        )
        .await
        .expect("three healthy members");
    assert_eq!(voting_names(&health), ["etcd01", "etcd02", "etcd03"]);
    for name in ["etcd01", "etcd02", "etcd03"] {
        assert_eq!(
            health.data["reads"][name]["/seed/key3"], "value3",
            "{name} lacks the data"
        );
    }
    let leaders = health.data["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["is_leader"] == true)
        .count();
    assert_eq!(leaders, 1);

    // Re-run: every step reports unchanged.
    for node in [&n1, &n2, &n3] {
        for state in ["present", "promoted"] {
            let out = lab
                .run("etcd-member", lab.args(&seed, member_args(node, state)))
                .await
                .unwrap();
            assert!(
                !out.changed,
                "{} {state} changed on re-run: {:?}",
                node.name, out.msg
            );
        }
    }

    // Through the host's connection (forwarded channels) the view is the same.
    let via_ssh = lab
        .run("etcd-status", lab.args(&[&n2], json!({"via": "ssh"})))
        .await
        .expect("status via tunnel");
    assert_eq!(voting_names(&via_ssh), ["etcd01", "etcd02", "etcd03"]);

    // keep=2 prunes.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        lab.run("etcd-snapshot", snap_args.clone()).await.unwrap();
    }
    assert_eq!(snapshot::list(&backups, "etcd").len(), 2);
    drop(procs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_interrupted_after_member_add_converges_on_rerun() {
    let lab = Lab::new();
    let n1 = lab.node("etcd01");
    let n2 = lab.node("etcd02");
    let n3 = lab.node("etcd03");
    let _p1 = lab.first(&n1);
    let seed = [&n1];
    lab.run("etcd-health", lab.args(&seed, json!({})))
        .await
        .expect("healthy");

    // The run that was killed right after `member add`.
    let added = lab
        .run("etcd-member", lab.args(&seed, member_args(&n2, "present")))
        .await
        .unwrap();
    assert!(added.changed);

    // Nothing else may change meanwhile, and the refusal tells the story.
    let err = lab
        .run("etcd-member", lab.args(&seed, member_args(&n3, "present")))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("a previous change is unfinished: etcd02 ("),
        "{msg}"
    );
    assert!(msg.contains("s ago and never started"), "{msg}");
    assert!(
        msg.contains(&format!("its peer URL {} is not answering", n2.peer_url)),
        "{msg}"
    );

    // Re-running the add does not add again (no "Peer URLs already exists").
    let again = lab
        .run("etcd-member", lab.args(&seed, member_args(&n2, "present")))
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(again.data["initial_cluster"], added.data["initial_cluster"]);

    // Promotion before the member is started waits, then says why it cannot.
    let mut short = lab.args(&seed, member_args(&n2, "promoted"));
    short.insert("timeout".into(), json!("2s"));
    let err = lab.run("etcd-member", short).await.unwrap_err();
    assert!(
        err.to_string().contains("was added") && err.to_string().contains("never started"),
        "{err}"
    );

    // Start it as the registered data says, and the re-run finishes the job.
    let p2 = lab.join(&n2, &again);
    let promoted = lab
        .run("etcd-member", lab.args(&seed, member_args(&n2, "promoted")))
        .await;
    let promoted = promoted.unwrap_or_else(|e| panic!("{e}\n--- etcd02 log ---\n{}", p2.log()));
    assert!(promoted.changed);
    let health = lab
        .run("etcd-health", lab.args(&seed, json!({"voting": 2})))
        .await
        .expect("healthy");
    assert_eq!(voting_names(&health), ["etcd01", "etcd02"]);

    // The next member can now join.
    let out = lab
        .run("etcd-member", lab.args(&seed, member_args(&n3, "present")))
        .await
        .unwrap();
    assert!(out.changed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_keeps_quorum_and_an_unhealthy_member_blocks_changes() {
    let lab = Lab::new();
    let nodes: Vec<Node> = ["etcd01", "etcd02", "etcd03"]
        .iter()
        .map(|n| lab.node(n))
        .collect();
    let initial = nodes
        .iter()
        .map(|n| format!("{}={}", n.name, n.peer_url))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs: Vec<Option<EtcdProc>> = nodes
        .iter()
        .map(|n| Some(EtcdProc::start(n, &lab.certs, &initial, "new")))
        .collect();
    let seed = [&nodes[0], &nodes[1]];
    let health = lab
        .run("etcd-health", lab.args(&seed, json!({"voting": 3})))
        .await
        .expect("3 healthy");
    assert_eq!(voting_names(&health), ["etcd01", "etcd02", "etcd03"]);

    // etcd03 dies.
    procs[2].take().unwrap().kill();
    let status = lab.run("etcd-status", lab.args(&seed, json!({}))).await.unwrap();
    assert_eq!(status.data["healthy"], false);

    // No new member while a voter is down.
    let n4 = lab.node("etcd04");
    let err = lab
        .run("etcd-member", lab.args(&seed, member_args(&n4, "present")))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("refusing to change membership: voting member etcd03 is unhealthy"),
        "{err}"
    );

    // Removing a healthy member now would leave 1 healthy of 2 voters: refused.
    let err = lab
        .run("etcd-member", lab.args(&seed, member_args(&nodes[1], "absent")))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("1 healthy voting members would remain, 2 are needed"),
        "{err}"
    );

    // Removing the dead one is what repairs the cluster.
    let out = lab
        .run("etcd-member", lab.args(&seed, member_args(&nodes[2], "absent")))
        .await
        .expect("removed");
    assert!(out.changed);
    assert_eq!(voting_names(&out), ["etcd01", "etcd02"]);
    let again = lab
        .run("etcd-member", lab.args(&seed, member_args(&nodes[2], "absent")))
        .await
        .unwrap();
    assert!(!again.changed);
    lab.run("etcd-health", lab.args(&seed, json!({"voting": 2})))
        .await
        .expect("2 healthy");

    // Its old data dir must not be started again as is.
    let dir_args = |extra: Value| {
        let mut a = lab.args(&seed, member_args(&nodes[2], "present"));
        a.remove("state");
        a.insert("data-dir".into(), json!(nodes[2].data_dir.display().to_string()));
        for (k, v) in extra.as_object().unwrap() {
            a.insert(k.clone(), v.clone());
        }
        a
    };
    let err = lab
        .run("etcd-data-dir-check", dir_args(json!({})))
        .await
        .unwrap_err();
    // The fix is in the diagnostic's help, whatever shape the error has.
    let help = miette::Diagnostic::help(&err)
        .map(|h| h.to_string())
        .unwrap_or_default();
    assert!(
        err.to_string()
            .contains("is not a started member of this cluster"),
        "{err}"
    );
    assert!(help.contains(".removed-"), "the fix is offered: {help} ({err:?})");
    assert!(
        err.to_string().contains("of this cluster, removed since"),
        "whose data it is, from its WAL: {err}"
    );
    let moved = lab
        .run("etcd-data-dir-check", dir_args(json!({"move-aside": true})))
        .await
        .unwrap();
    assert!(moved.changed);
    assert!(!nodes[2].data_dir.exists());
    assert!(Path::new(moved.data["moved_to"].as_str().unwrap()).exists());

    // A current member's own data dir is fine.
    let mut own = lab.args(&seed, member_args(&nodes[0], "present"));
    own.remove("state");
    own.insert("data-dir".into(), json!(nodes[0].data_dir.display().to_string()));
    let ok = lab.run("etcd-data-dir-check", own.clone()).await.unwrap();
    assert_eq!(ok.data["state"], "member");
    assert_eq!(
        ok.data["member_id"].as_str().map(str::len),
        Some(16),
        "{}",
        ok.data
    );
    // ...but another member's data under its name is not: the WAL tells them apart.
    own.insert("data-dir".into(), json!(nodes[1].data_dir.display().to_string()));
    let err = lab.run("etcd-data-dir-check", own).await.unwrap_err();
    assert!(
        err.to_string().contains("(its WAL: member ")
            && err
                .to_string()
                .contains(", etcd02, of this cluster), but etcd01 is member "),
        "{err}"
    );
    assert!(nodes[1].data_dir.exists(), "refused, nothing moved");

    // The last member is never removed.
    let mut etcd = lab.etcd(&seed).await;
    let h = etcd.health().await.unwrap();
    let view = h.view(|_| None);
    let one = troupe_run::etcd::membership::View {
        members: view.members.into_iter().take(1).collect(),
        learner_support: true,
    };
    let want = Want {
        name: "etcd01".into(),
        peer_url: nodes[0].peer_url.clone(),
        goal: Goal::Absent,
        learner: true,
    };
    assert!(decide(&one, &want, std::time::SystemTime::now()).is_err());
    let want = Want {
        goal: Goal::Promoted,
        ..want
    };
    assert!(matches!(
        decide(&h.view(|_| None), &want, std::time::SystemTime::now()),
        Ok(Decision::Unchanged(_))
    ));
    drop(procs);
}

// ---------------------------------------------------------------- snapshots

/// A single member with `n` keys of 1 KiB, so a snapshot is several hundred KiB.
async fn member_with_data(lab: &Lab, n: usize) -> (Node, EtcdProc) {
    let node = lab.node("etcd01");
    let p = lab.first(&node);
    let mut etcd = lab.etcd(&[&node]).await;
    let value = "v".repeat(1024);
    for i in 0..n {
        etcd.put(&format!("/secrets/key{i}"), &value).await.unwrap();
    }
    (node, p)
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Regression (issue 12.6): snapshots were created with the umask (0644: every
/// Kubernetes Secret readable by every local user) and through whatever sat at the
/// `.part` name, a symlink included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_are_private_and_never_written_through_a_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new();
    let (node, _p) = member_with_data(&lab, 20).await;
    let dialer = Dialer::new(Some(lab.certs.pem()), Route::Direct).unwrap();
    let dir = lab.tmp.path().join("new-backups");
    let dest = dir.join("etcd-20260101T000000Z.db");

    let info = snapshot::save(&dialer, &node.client_url, &dest)
        .await
        .expect("snapshot saved");
    assert_eq!(info.path, dest.display().to_string());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dest), 0o600, "the snapshot file");
    assert_eq!(mode(&dir), 0o700, "the folder the snapshot created");

    // Something planted at the `.part` name is never written through.
    let victim = lab.tmp.path().join("victim.txt");
    std::fs::write(&victim, b"not a snapshot\n").unwrap();
    let second = dir.join("etcd-20260101T000001Z.db");
    std::os::unix::fs::symlink(&victim, second.with_extension("db.part")).unwrap();
    let err = snapshot::save(&dialer, &node.client_url, &second)
        .await
        .expect_err("a symlink at the .part name is refused");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&victim).unwrap(), b"not a snapshot\n");
    assert!(!second.exists());
}

/// A TCP relay to `target` that hangs up on both sides once `limit` bytes came back
/// from it: a real etcd whose snapshot stream breaks in the middle.
async fn cutting_relay(target: String, limit: usize) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut sent = 0;
                let mut buf = vec![0u8; 16 * 1024];
                while sent < limit {
                    match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let n = n.min(limit - sent);
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                            sent += n;
                        }
                    }
                }
                up.abort();
            });
        }
    });
    port
}

/// Regression (issue 12.6): a stream that failed midway left `NAME.db.part` behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_stream_that_breaks_leaves_no_part_file() {
    let lab = Lab::new();
    let (node, _p) = member_with_data(&lab, 300).await;
    let target = node.client_url.trim_start_matches("https://").to_string();
    let port = cutting_relay(target, 128 * 1024).await;
    let dialer = Dialer::new(Some(lab.certs.pem()), Route::Direct).unwrap();
    let dir = lab.tmp.path().join("backups");
    let dest = dir.join("etcd-20260101T000000Z.db");
    let err = snapshot::save(&dialer, &format!("https://127.0.0.1:{port}"), &dest)
        .await
        .expect_err("the stream was cut");
    assert!(err.to_string().contains(&dest.display().to_string()), "{err}");
    assert_eq!(names_in(&dir), Vec::<String>::new(), "nothing left behind");

    // The same member straight, for contrast: the save itself works.
    snapshot::save(&dialer, &node.client_url, &dest)
        .await
        .expect("direct snapshot");
    assert_eq!(names_in(&dir), ["etcd-20260101T000000Z.db"]);
}

/// Regression (issue 12.7): with other files sharing the prefix in the folder, `keep`
/// pruned this cluster's snapshots, the new one included, and reported success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_only_troupes_own_snapshots() {
    let lab = Lab::new();
    let (node, _p) = member_with_data(&lab, 5).await;
    let dir = lab.tmp.path().join("backups");
    std::fs::create_dir(&dir).unwrap();
    let foreign = [
        "etcd-prod-20260101T000000Z.db",
        "etcd-prod-20260102T000000Z.db",
        "etcd-prod-20260103T000000Z.db",
        "etcd-manual.db",
        "etcd-20200101T000000Z.db.bak",
    ];
    let ours_old = ["etcd-20200101T000000Z.db", "etcd-20210101T000000Z.db"];
    for f in foreign.iter().chain(&ours_old) {
        std::fs::write(dir.join(f), b"keep me\n").unwrap();
    }
    let out = lab
        .run(
            "etcd-snapshot",
            lab.args(&[&node], json!({"dest": dir.display().to_string(), "keep": 2})),
        )
        .await
        .expect("snapshot saved");
    let new = PathBuf::from(out.data["path"].as_str().unwrap());
    assert!(new.exists(), "the snapshot just taken is kept");
    snapshot::verify(&new).await.expect("and it verifies");
    assert_eq!(
        out.data["pruned"],
        json!([dir.join("etcd-20200101T000000Z.db").display().to_string()])
    );
    for f in foreign {
        assert_eq!(std::fs::read(dir.join(f)).unwrap(), b"keep me\n", "{f}");
    }
    assert!(dir.join("etcd-20210101T000000Z.db").exists());
}
