//! The flags the templates render are flags the real etcd accepts: a three-member TLS
//! cluster on loopback where member 1 runs the static pod's command line, member 2 the
//! systemd unit's `ExecStart` with the environment file, and member 3 the runit `run`
//! script, all rendered from the same inventory. It must form one healthy cluster, and
//! the static pod's probe path must answer on the metrics URL.
//!
//! Certificates are made with `openssl` in the test (one CA; one server+peer cert with
//! SAN 127.0.0.1 shared by the members; one client cert).

use crate::common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use troupe_render::Context;

/// Kills every etcd it holds when the test ends, however it ends.
struct Members(Vec<(String, Child)>);

impl Drop for Members {
    fn drop(&mut self) {
        for (_, child) in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

/// CA, member cert (server + client auth, SAN 127.0.0.1) and client cert.
fn make_pki(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=troupe-test-ca",
        ],
    );
    std::fs::write(
        dir.join("member.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("client.ext"),
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    for (name, ext) in [("member", "member.ext"), ("client", "client.ext")] {
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.crt"),
                "-days",
                "2",
                "-extfile",
                ext,
            ],
        );
    }
    // kubeadm's file names, which the templates default to.
    for (from, to) in [
        ("member.crt", "server.crt"),
        ("member.key", "server.key"),
        ("member.crt", "peer.crt"),
        ("member.key", "peer.key"),
    ] {
        std::fs::copy(dir.join(from), dir.join(to)).unwrap();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Member {
    name: String,
    client: u16,
    metrics: u16,
}

fn spawn(members: &mut Members, name: &str, mut cmd: Command, log: PathBuf) {
    let log = std::fs::File::create(log).unwrap();
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    members.0.push((name.to_string(), child));
}

/// `KEY=value` lines of an environment file (values as the `quote` filter writes them).
fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=value");
            let v = match v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
                Some(inner) => inner.replace(r"'\''", "'"),
                None => v.to_string(),
            };
            (k.to_string(), v)
        })
        .collect()
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn etcd_accepts_the_rendered_flags_in_all_three_forms() {
    for tool in ["/usr/bin/etcd", "/usr/bin/etcdctl"] {
        assert!(
            Path::new(tool).exists(),
            "{tool} is required (apt-get install etcd-server etcd-client)"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    make_pki(&pki);

    let names = ["m1", "m2", "m3"];
    let members: Vec<Member> = names
        .iter()
        .map(|n| Member {
            name: n.to_string(),
            client: free_port(),
            metrics: free_port(),
        })
        .collect();
    let hosts: Vec<(&str, indexmap::IndexMap<String, serde_json::Value>)> = members
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                common::vars(&[
                    ("inventory_hostname", json!(m.name)),
                    ("address", json!("127.0.0.1")),
                    ("etcd_client_port", json!(m.client)),
                    ("etcd_peer_port", json!(free_port())),
                    ("etcd_metrics_port", json!(m.metrics)),
                    ("etcd_data_dir", json!(tmp.path().join(&m.name).join("data"))),
                    ("etcd_pki_dir", json!(pki)),
                    ("etcd_cluster_token", json!("troupe-render-test")),
                    ("etcd_snapshot_count", json!(5000)),
                    ("etcd_version", json!("3.4.23")),
                ]),
            )
        })
        .collect();
    let (groups, hostvars) = common::inventory(&hosts);
    let ctx = |i: usize| -> Context {
        Context::new(hosts[i].1.clone())
            .with_groups(groups.clone())
            .with_hostvars(hostvars.clone())
    };
    let r = common::renderer();
    let mut running = Members(Vec::new());

    // m1: the static pod's command, as kubelet would run it in the container.
    let pod_yaml = r.render_file("etcd.yaml.j2", &ctx(0)).unwrap();
    let pod: k8s_openapi::api::core::v1::Pod = serde_yaml::from_str(&pod_yaml).unwrap();
    let command = pod.spec.unwrap().containers[0].command.clone().unwrap();
    assert_eq!(command[0], "etcd");
    let mut cmd = Command::new("/usr/bin/etcd");
    cmd.args(&command[1..]).env_clear();
    spawn(&mut running, "m1", cmd, tmp.path().join("m1.log"));

    // m2: the systemd unit's ExecStart with its EnvironmentFile, as systemd would.
    let unit = r.render_file("etcd.service.j2", &ctx(1)).unwrap();
    let exec_start = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    assert!(unit.contains("\nEnvironmentFile="), "{unit}");
    let env = parse_env_file(&r.render_file("etcd.env.j2", &ctx(1)).unwrap());
    let mut cmd = Command::new(exec_start);
    cmd.env_clear().envs(env);
    spawn(&mut running, "m2", cmd, tmp.path().join("m2.log"));

    // m3: the runit run script itself.
    let script = tmp.path().join("m3.run");
    std::fs::write(&script, r.render_file("etcd.runit.j2", &ctx(2)).unwrap()).unwrap();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg(&script).env_clear();
    spawn(&mut running, "m3", cmd, tmp.path().join("m3.log"));

    let endpoints = members
        .iter()
        .map(|m| format!("https://127.0.0.1:{}", m.client))
        .collect::<Vec<_>>()
        .join(",");
    let etcdctl = |args: &[&str]| {
        let mut c = Command::new("/usr/bin/etcdctl");
        c.env_clear()
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg(format!("--cacert={}", pki.join("ca.crt").display()))
            .arg(format!("--cert={}", pki.join("client.crt").display()))
            .arg(format!("--key={}", pki.join("client.key").display()))
            .args(args);
        c.output().unwrap()
    };

    // Wait (bounded) until every member reports healthy.
    let mut healthy = false;
    for _ in 0..120 {
        for (name, child) in &mut running.0 {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(tmp.path().join(format!("{name}.log")));
                panic!("{name} exited with {status}:\n{}", log.unwrap_or_default());
            }
        }
        if etcdctl(&["endpoint", "health"]).status.success() {
            healthy = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if !healthy {
        let out = etcdctl(&["endpoint", "health"]);
        let logs: String = names
            .iter()
            .map(|n| {
                format!(
                    "--- {n}\n{}",
                    std::fs::read_to_string(tmp.path().join(format!("{n}.log"))).unwrap_or_default()
                )
            })
            .collect();
        panic!(
            "cluster never became healthy: {}{}\n{logs}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // One cluster of three started members with the inventory's names.
    let list = etcdctl(&["member", "list", "-w", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let mut listed: Vec<String> = list["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap_or("").to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, names);

    // Data written through one member reads back through the others.
    assert!(etcdctl(&["put", "troupe/render", "ok"]).status.success());
    for m in &members {
        let out = Command::new("/usr/bin/etcdctl")
            .env_clear()
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=https://127.0.0.1:{}", m.client))
            .arg(format!("--cacert={}", pki.join("ca.crt").display()))
            .arg(format!("--cert={}", pki.join("client.crt").display()))
            .arg(format!("--key={}", pki.join("client.key").display()))
            .args(["get", "troupe/render", "--print-value-only"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "ok",
            "via {}",
            m.name
        );
    }

    // The static pod's probes answer over plain HTTP on the metrics URL, without a
    // client certificate.
    let container = &serde_yaml::from_str::<k8s_openapi::api::core::v1::Pod>(&pod_yaml)
        .unwrap()
        .spec
        .unwrap()
        .containers[0];
    for probe in [&container.liveness_probe, &container.startup_probe] {
        let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
        let port = match &get.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(p) => *p as u16,
            other => panic!("port {other:?}"),
        };
        assert_eq!(port, members[0].metrics);
        let reply = http_get(port, get.path.as_deref().unwrap());
        assert!(
            reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"),
            "{reply}"
        );
        assert!(reply.contains(r#""health":"true""#), "{reply}");
    }
}
