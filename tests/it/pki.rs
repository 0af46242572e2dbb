//! PKI against the real programs: troupe's certificates compared field by field with
//! what Debian's cfssl makes from the same seed JSON (as `openssl x509 -text` shows
//! them), verified by `openssl verify`, accepted by a real TLS etcd; and the `pki-ca`
//! / `pki-cert` modules driven over SSH against the lab for idempotency.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use troupe_run::connection::Connection;
use troupe_run::connection::local::LocalConnection;
use troupe_run::connection::ssh::SshConnection;
use troupe_run::module::{Args, DynCheck, DynModule, Outcome, TaskCx, TaskError};
use troupe_run::modules::pki_ca::PkiCa;
use troupe_run::modules::pki_cert::PkiCert;
use troupe_run::pki::{
    CaRequest, CertRequest, CfsslConfig, CfsslCsr, KeyType, Profile, San, Subject, create_ca,
    issue_with_new_key,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/cfssl")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The fields the issue asks to compare, as `openssl x509 -text -noout` prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OpensslFields {
    subject: String,
    issuer: String,
    key: String,
    signature: String,
    ext: BTreeMap<String, String>,
    validity_secs: i64,
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `Nov 25 10:08:00 2026 GMT` → seconds since the epoch.
fn openssl_time(s: &str) -> i64 {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| *x == parts[0]).unwrap() as i64 + 1;
    let d: i64 = parts[1].parse().unwrap();
    let hms: Vec<i64> = parts[2].split(':').map(|x| x.parse().unwrap()).collect();
    let y: i64 = parts[3].parse().unwrap();
    days_from_civil(y, m, d) * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2]
}

fn openssl_fields(cert: &Path) -> OpensslFields {
    let text = run(Command::new("openssl")
        .args(["x509", "-text", "-noout", "-in"])
        .arg(cert));
    let lines: Vec<&str> = text.lines().collect();
    let after = |prefix: &str| -> String {
        lines
            .iter()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let mut key = after("Public Key Algorithm:");
    key.push(' ');
    key.push_str(&after("Public-Key:"));
    let curve = after("ASN1 OID:");
    if !curve.is_empty() {
        key.push(' ');
        key.push_str(&curve);
    }
    let mut ext = BTreeMap::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim();
        let Some((name, crit)) = t.strip_prefix("X509v3 ").and_then(|rest| rest.split_once(':')) else {
            continue;
        };
        if name == "extensions" {
            continue; // the section header; extension order differs and does not matter
        }
        if name == "Subject Key Identifier" || name == "Authority Key Identifier" {
            ext.insert(name.to_string(), "present".to_string());
            continue;
        }
        let value = lines.get(i + 1).map(|v| v.trim()).unwrap_or("");
        let crit = if crit.contains("critical") {
            "critical "
        } else {
            ""
        };
        ext.insert(name.to_string(), format!("{crit}{value}"));
    }
    OpensslFields {
        subject: after("Subject:"),
        issuer: after("Issuer:"),
        key,
        signature: after("Signature Algorithm:"),
        ext,
        validity_secs: openssl_time(&after("Not After :")) - openssl_time(&after("Not Before:")),
    }
}

fn openssl_verify(ca: &Path, cert: &Path) -> bool {
    Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca)
        .arg(cert)
        .output()
        .unwrap()
        .status
        .success()
}

const SEED_SET: [(&str, &str); 5] = [
    ("server", "server"),
    ("peer1", "peer"),
    ("peer2", "peer"),
    ("peer3", "peer"),
    ("client", "client"),
];

/// The seed's certificates as troupe issues them from the seed JSON, into `dir`.
fn troupe_seed_set(dir: &Path) {
    let read = |f: &str| std::fs::read_to_string(fixtures().join(f)).unwrap();
    let cfg = CfsslConfig::parse(&read("ca-config.json"), "ca-config.json").unwrap();
    let ca_csr = CfsslCsr::parse(&read("ca-csr.json"), "ca-csr.json").unwrap();
    let now = time::OffsetDateTime::now_utc();
    let ca = create_ca(&ca_csr.ca_request(), now).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), ca.key_pem()).unwrap();
    for (name, profile) in SEED_SET {
        let csr = CfsslCsr::parse(&read(&format!("{name}.json")), name).unwrap();
        let req = csr.cert_request(cfg.profile(profile).unwrap());
        let (cert, key) = issue_with_new_key(&ca, &req, now).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert).unwrap();
        std::fs::write(dir.join(format!("{name}-key.pem")), key.to_pem()).unwrap();
    }
}

/// The same set made by `cfssl gencert` + `cfssljson -bare`, into `dir`.
fn cfssl_seed_set(dir: &Path) {
    for f in std::fs::read_dir(fixtures()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
    }
    let sh = |script: &str| run(Command::new("sh").arg("-c").arg(script).current_dir(dir));
    sh("cfssl gencert -initca ca-csr.json 2>/dev/null | cfssljson -bare ca");
    for (name, profile) in SEED_SET {
        sh(&format!(
            "cfssl gencert -ca=ca.pem -ca-key=ca-key.pem -config=ca-config.json -profile={profile} {name}.json 2>/dev/null | cfssljson -bare {name}"
        ));
    }
}

#[test]
fn seed_set_matches_cfssl_under_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let (ours, theirs) = (tmp.path().join("troupe"), tmp.path().join("cfssl"));
    std::fs::create_dir_all(&ours).unwrap();
    std::fs::create_dir_all(&theirs).unwrap();
    troupe_seed_set(&ours);
    cfssl_seed_set(&theirs);

    for name in ["ca", "server", "peer1", "peer2", "peer3", "client"] {
        let file = format!("{name}.pem");
        let mut a = openssl_fields(&ours.join(&file));
        let mut b = openssl_fields(&theirs.join(&file));
        if name == "client" {
            // Deliberate difference (docs/pki.md): `"hosts": [""]` makes cfssl write an
            // empty DNS SAN; troupe writes no SAN at all.
            assert_eq!(b.ext.remove("Subject Alternative Name").as_deref(), Some("DNS:"));
            assert_eq!(a.ext.remove("Subject Alternative Name"), None);
        }
        a.validity_secs -= b.validity_secs;
        b.validity_secs = 0;
        assert_eq!(a, b, "{name}: troupe (left) and cfssl (right) differ");
        assert!(
            openssl_verify(&ours.join("ca.pem"), &ours.join(&file)),
            "{name}: troupe cert does not verify"
        );
        assert!(
            openssl_verify(&theirs.join("ca.pem"), &theirs.join(&file)),
            "{name}: cfssl cert does not verify"
        );
        assert!(
            !openssl_verify(&theirs.join("ca.pem"), &ours.join(&file)),
            "{name}: verified by the wrong CA"
        );
    }
    // Spot-check that the comparison is about something.
    let server = openssl_fields(&ours.join("server.pem"));
    assert_eq!(server.key, "id-ecPublicKey (256 bit) prime256v1");
    assert_eq!(
        server.ext["Key Usage"],
        "critical Digital Signature, Key Encipherment"
    );
    assert_eq!(server.ext["Extended Key Usage"], "TLS Web Server Authentication");
    assert_eq!(server.ext["Basic Constraints"], "critical CA:FALSE");
    assert_eq!(
        server.ext["Subject Alternative Name"],
        "IP Address:127.0.0.1, IP Address:0.0.0.0, IP Address:10.1.1.201, IP Address:10.1.1.202, IP Address:10.1.1.203"
    );
    let ca = openssl_fields(&ours.join("ca.pem"));
    assert_eq!(ca.key, "rsaEncryption (2048 bit)");
    assert_eq!(ca.ext["Basic Constraints"], "critical CA:TRUE");
    assert_eq!(
        ca.subject,
        "C = US, ST = San Francisco, L = CA, O = My Company Name, OU = Org Unit 2, CN = My own CA"
    );
    assert_eq!(ca.validity_secs, 43_800 * 3600);
}

#[test]
fn troupe_adopts_a_cfssl_ca_and_issues_certificates_openssl_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    cfssl_seed_set(tmp.path());
    let cert = std::fs::read_to_string(tmp.path().join("ca.pem")).unwrap();
    let key = std::fs::read_to_string(tmp.path().join("ca-key.pem")).unwrap();
    assert!(
        key.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
        "cfssl writes PKCS#1"
    );
    let ca = troupe_run::pki::Ca::load(&cert, &key, "ca.pem", "ca-key.pem").unwrap();
    let req = CertRequest::new("etcd3", Profile::Peer, vec!["10.1.1.204".parse().unwrap()]);
    let (leaf, _) = issue_with_new_key(&ca, &req, time::OffsetDateTime::now_utc()).unwrap();
    std::fs::write(tmp.path().join("peer4.pem"), leaf).unwrap();
    assert!(openssl_verify(
        &tmp.path().join("ca.pem"),
        &tmp.path().join("peer4.pem")
    ));
    // And cfssl's own EC leaf keys (SEC1) load as well.
    let peer_key = std::fs::read_to_string(tmp.path().join("peer1-key.pem")).unwrap();
    assert!(peer_key.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    assert_eq!(
        troupe_run::pki::load_key(&peer_key, "peer1-key.pem")
            .unwrap()
            .key_type(),
        KeyType::EcdsaP256
    );
}

// ---------------------------------------------------------------- real etcd

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An etcd process, killed on drop.
struct Etcd {
    child: Child,
    client_url: String,
    _data: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TlsSet {
    dir: tempfile::TempDir,
}

impl TlsSet {
    fn path(&self, f: &str) -> String {
        self.dir.path().join(f).display().to_string()
    }
}

/// CA rsa-2048, server/peer/client ecdsa-p256 for 127.0.0.1, written cfssl-style.
fn loopback_set(server_client_auth: bool) -> TlsSet {
    loopback_set_of(server_client_auth, KeyType::Rsa2048, KeyType::EcdsaP256)
}

fn loopback_set_of(server_client_auth: bool, ca_key: KeyType, leaf_key: KeyType) -> TlsSet {
    let dir = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let ca = create_ca(
        &CaRequest {
            subject: Subject::cn("troupe test CA"),
            key_type: ca_key,
            expiry: Duration::from_secs(86_400),
        },
        now,
    )
    .unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
    let lo: Vec<San> = vec!["127.0.0.1".parse().unwrap(), "localhost".parse().unwrap()];
    let mut server = CertRequest::new("etcd0", Profile::Server, lo.clone());
    if server_client_auth {
        server.usages.add("client auth").unwrap();
    }
    let reqs = [
        ("server", server),
        ("peer1", CertRequest::new("etcd0", Profile::Peer, lo.clone())),
        ("client", CertRequest::new("client", Profile::Client, vec![])),
    ];
    let reqs = reqs.map(|(name, mut req)| {
        req.key_type = leaf_key;
        (name, req)
    });
    for (name, req) in reqs {
        let (cert, key) = issue_with_new_key(&ca, &req, now).unwrap();
        std::fs::write(dir.path().join(format!("{name}.pem")), cert).unwrap();
        std::fs::write(dir.path().join(format!("{name}-key.pem")), key.to_pem()).unwrap();
    }
    TlsSet { dir }
}

fn etcdctl(tls: &TlsSet, url: &str, args: &[&str]) -> std::process::Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            url,
            "--cacert",
            &tls.path("ca.pem"),
            "--cert",
            &tls.path("client.pem"),
        ])
        .args(["--key", &tls.path("client-key.pem"), "--command-timeout", "5s"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn start_etcd(tls: &TlsSet) -> Etcd {
    let data = tempfile::tempdir().unwrap();
    let (cport, pport) = (free_port(), free_port());
    let client_url = format!("https://127.0.0.1:{cport}");
    let peer_url = format!("https://127.0.0.1:{pport}");
    let log = std::fs::File::create(data.path().join("etcd.log")).unwrap();
    let child = Command::new("/usr/bin/etcd")
        .args(["--name", "etcd0", "--data-dir"])
        .arg(data.path().join("data"))
        .args([
            "--listen-client-urls",
            &client_url,
            "--advertise-client-urls",
            &client_url,
        ])
        .args([
            "--listen-peer-urls",
            &peer_url,
            "--initial-advertise-peer-urls",
            &peer_url,
        ])
        .args(["--initial-cluster", &format!("etcd0={peer_url}")])
        .args([
            "--cert-file",
            &tls.path("server.pem"),
            "--key-file",
            &tls.path("server-key.pem"),
        ])
        .args(["--trusted-ca-file", &tls.path("ca.pem"), "--client-cert-auth"])
        .args([
            "--peer-cert-file",
            &tls.path("peer1.pem"),
            "--peer-key-file",
            &tls.path("peer1-key.pem"),
        ])
        .args([
            "--peer-trusted-ca-file",
            &tls.path("ca.pem"),
            "--peer-client-cert-auth",
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("cannot start /usr/bin/etcd");
    let etcd = Etcd {
        child,
        client_url,
        _data: data,
    };
    // Wait until it answers (bounded by attempts, not by a timed assertion).
    for _ in 0..100 {
        if etcdctl(tls, &etcd.client_url, &["endpoint", "health"])
            .status
            .success()
        {
            return etcd;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(etcd._data.path().join("etcd.log")).unwrap_or_default();
    panic!("etcd never became healthy with troupe's certificates:\n{log}");
}

/// POST /v3/kv/range to etcd's HTTP/JSON gateway over TLS with the client certificate
/// (`openssl s_client`, so the tests need no HTTP client beyond what the lab installs).
fn gateway_range(tls: &TlsSet, url: &str) -> String {
    use std::io::Write as _;
    let authority = url.trim_start_matches("https://");
    let body = r#"{"key":"dHJvdXBl"}"#;
    let request = format!(
        "POST /v3/kv/range HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            authority,
            "-CAfile",
            &tls.path("ca.pem"),
        ])
        .args([
            "-cert",
            &tls.path("client.pem"),
            "-key",
            &tls.path("client-key.pem"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(request.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn real_etcd_accepts_troupe_certificates() {
    let tls = loopback_set(true);
    let etcd = start_etcd(&tls);
    let health = etcdctl(&tls, &etcd.client_url, &["endpoint", "health"]);
    assert!(
        health.status.success(),
        "{}",
        String::from_utf8_lossy(&health.stderr)
    );
    let put = etcdctl(&tls, &etcd.client_url, &["put", "troupe", "issued-by-rcgen"]);
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    let get = etcdctl(&tls, &etcd.client_url, &["get", "troupe", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "issued-by-rcgen");
    // The HTTP/JSON gateway works because the server certificate has client auth.
    assert!(
        gateway_range(&tls, &etcd.client_url).contains("\"kvs\""),
        "gateway should answer"
    );

    // Without the client certificate etcd refuses the connection.
    let anon = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            &etcd.client_url,
            "--cacert",
            &tls.path("ca.pem"),
            "--command-timeout",
            "3s",
            "get",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!anon.status.success());
}

/// "Key types where etcd accepts them": etcd 3.4 (Go crypto/tls) serves and verifies
/// every key type troupe issues, for the CA and the leaves alike.
#[test]
fn real_etcd_accepts_every_key_type() {
    for (ca_key, leaf_key) in [
        (KeyType::EcdsaP384, KeyType::EcdsaP384),
        (KeyType::Ed25519, KeyType::Ed25519),
        (KeyType::EcdsaP256, KeyType::Rsa2048),
    ] {
        let tls = loopback_set_of(true, ca_key, leaf_key);
        let etcd = start_etcd(&tls);
        let put = etcdctl(&tls, &etcd.client_url, &["put", "k", leaf_key.as_str()]);
        assert!(
            put.status.success(),
            "{ca_key}/{leaf_key}: {}",
            String::from_utf8_lossy(&put.stderr)
        );
    }
}

/// Regression guard for the note in docs/pki.md: etcd's gRPC gateway dials its own
/// client port with the *server* certificate, so a cfssl-style `server` profile
/// (no client auth) breaks the HTTP/JSON API while gRPC keeps working.
#[test]
fn server_cert_without_client_auth_breaks_only_the_gateway() {
    let tls = loopback_set(false);
    let etcd = start_etcd(&tls);
    let put = etcdctl(&tls, &etcd.client_url, &["put", "troupe", "x"]);
    assert!(
        put.status.success(),
        "gRPC works: {}",
        String::from_utf8_lossy(&put.stderr)
    );
    let body = gateway_range(&tls, &etcd.client_url);
    assert!(
        !body.contains("\"kvs\""),
        "the gateway unexpectedly worked: {body}"
    );
}

// ---------------------------------------------------------------- modules over SSH

struct Cx {
    host: String,
    conn: Arc<dyn Connection>,
    controller: Arc<dyn Connection>,
}

impl Cx {
    async fn run(&self, module: &dyn DynModule, a: &Args) -> Result<(Option<String>, Outcome), TaskError> {
        let render = |_: &str| -> Result<String, TaskError> { Ok(String::new()) };
        let eval = |_: &str| -> Result<serde_json::Value, TaskError> { Ok(serde_json::Value::Null) };
        let cx = TaskCx {
            host: &self.host,
            conn: &self.conn,
            controller: &self.controller,
            search_dirs: &[],
            render: &render,
            eval: &eval,
        };
        match module.check(a, &cx).await? {
            DynCheck::Unchanged(o) => Ok((None, o)),
            DynCheck::Change(change) => {
                let summary = change.summary.clone();
                let o = module.apply(change, &cx).await?;
                Ok((Some(summary), o))
            }
        }
    }
}

fn args(v: serde_json::Value) -> Args {
    v.as_object().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modules_over_ssh_issue_keep_and_reissue_only_what_changed() {
    // A lab of its own: these steps write under the hosts' /srv and must not race
    // another test binary restarting the shared lab.
    let lab = &troupe_tests::Lab::start("pki-modules", 1);
    let dir = lab.scratch("pki_modules");
    let conn = SshConnection::connect("podc01", lab.address("podc01"), &lab.ssh_options())
        .await
        .unwrap();
    let controller_dir = tempfile::tempdir().unwrap();
    let ca_dir = controller_dir.path().join("pki").display().to_string();
    let cx = Cx {
        host: "podc01".into(),
        conn: Arc::new(conn),
        controller: Arc::new(LocalConnection::new("localhost")),
    };
    let local = |file: &str| {
        lab.host_path("podc01", "/srv")
            .join("tests/pki_modules")
            .join(file)
    };

    // The CA, from the seed's ca-csr.json, on the controller.
    let ca_args =
        args(json!({"dir": ca_dir, "cfssl-csr": fixtures().join("ca-csr.json").display().to_string()}));
    let (summary, out) = cx.run(&PkiCa, &ca_args).await.unwrap();
    assert!(summary.unwrap().starts_with("create CA"));
    assert_eq!(out.data["key_type"], "rsa-2048");
    let (summary, _) = cx.run(&PkiCa, &ca_args).await.unwrap();
    assert_eq!(summary, None, "the CA is adopted, not recreated");

    let server = |sans: &[&str]| {
        args(
            json!({"name": "server", "ca-dir": ca_dir, "dest": dir, "profile": "server", "client-auth": true,
                    "sans": sans, "csr": true}),
        )
    };
    let peer = args(json!({
        "name": "peer1", "ca-dir": ca_dir, "dest": dir,
        "cfssl-config": fixtures().join("ca-config.json").display().to_string(), "cfssl-profile": "peer",
        "cfssl-csr": fixtures().join("peer1.json").display().to_string(), "key-location": "controller",
    }));

    // First run: both issued; the host key was generated on the host.
    let (s1, o1) = cx
        .run(&PkiCert, &server(&["127.0.0.1", "10.1.1.201"]))
        .await
        .unwrap();
    assert_eq!(
        s1.as_deref(),
        Some(format!("issue {dir}/server.pem: certificate missing; key missing").as_str())
    );
    let (s2, _) = cx.run(&PkiCert, &peer).await.unwrap();
    assert!(s2.is_some());
    let modes = lab.ssh_ok(
        "podc01",
        &format!("stat -c '%n %a' {dir}/server.pem {dir}/server-key.pem {dir}/server.csr"),
    );
    assert_eq!(
        modes,
        format!("{dir}/server.pem 644\n{dir}/server-key.pem 600\n{dir}/server.csr 644\n")
    );
    let ca_pem = controller_dir.path().join("pki/ca.pem");
    assert!(openssl_verify(&ca_pem, &local("server.pem")));
    assert!(openssl_verify(&ca_pem, &local("peer1.pem")));
    let no_temp = lab.ssh_ok("podc01", &format!("ls -A {dir}"));
    assert!(!no_temp.contains("troupe-"), "temp key left behind: {no_temp}");

    // Re-run: nothing changes.
    let (s, o) = cx
        .run(&PkiCert, &server(&["127.0.0.1", "10.1.1.201"]))
        .await
        .unwrap();
    assert_eq!(s, None);
    assert_eq!(o.data["serial"], o1.data["serial"]);
    assert_eq!(cx.run(&PkiCert, &peer).await.unwrap().0, None);

    // A SAN added to the server: only the server is reissued, and says why.
    let peer_before = std::fs::read(local("peer1.pem")).unwrap();
    let (s, o) = cx
        .run(&PkiCert, &server(&["127.0.0.1", "10.1.1.201", "10.1.1.204"]))
        .await
        .unwrap();
    assert_eq!(
        s.as_deref(),
        Some(format!("reissue {dir}/server.pem: SAN 10.1.1.204 missing").as_str())
    );
    assert_eq!(o.data["reasons"], json!(["SAN 10.1.1.204 missing"]));
    assert_eq!(cx.run(&PkiCert, &peer).await.unwrap().0, None);
    assert_eq!(std::fs::read(local("peer1.pem")).unwrap(), peer_before);
    let server3 = server(&["127.0.0.1", "10.1.1.201", "10.1.1.204"]);

    // Expired: a certificate from this CA that ran out three days ago.
    let ca = troupe_run::pki::Ca::load(
        &std::fs::read_to_string(&ca_pem).unwrap(),
        &std::fs::read_to_string(controller_dir.path().join("pki/ca-key.pem")).unwrap(),
        "ca.pem",
        "ca-key.pem",
    )
    .unwrap();
    let mut req = CertRequest::new("server", Profile::Server, vec![]);
    req.usages.add("client auth").unwrap();
    req.sans = ["127.0.0.1", "10.1.1.201", "10.1.1.204"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    req.expiry = Duration::from_secs(30 * 86_400);
    let past = time::OffsetDateTime::now_utc() - time::Duration::days(33);
    let (old, old_key) = issue_with_new_key(&ca, &req, past).unwrap();
    std::fs::write(local("server.pem"), old).unwrap();
    std::fs::write(local("server-key.pem"), old_key.to_pem()).unwrap();
    let (s, _) = cx.run(&PkiCert, &server3).await.unwrap();
    let s = s.expect("an expired certificate must be reissued");
    assert!(
        s.starts_with(&format!("reissue {dir}/server.pem: expired ")),
        "{s}"
    );
    assert_eq!(cx.run(&PkiCert, &server3).await.unwrap().0, None);

    // Foreign-signed: same request, another CA.
    let other = create_ca(
        &CaRequest {
            subject: Subject::cn("someone else's CA"),
            key_type: KeyType::EcdsaP256,
            expiry: Duration::from_secs(86_400 * 365),
        },
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    req.expiry = Duration::from_secs(86_400 * 365);
    let (foreign, foreign_key) = issue_with_new_key(&other, &req, time::OffsetDateTime::now_utc()).unwrap();
    std::fs::write(local("server.pem"), foreign).unwrap();
    std::fs::write(local("server-key.pem"), foreign_key.to_pem()).unwrap();
    let (s, _) = cx.run(&PkiCert, &server3).await.unwrap();
    assert_eq!(
        s.as_deref(),
        Some(format!("reissue {dir}/server.pem: signed by another CA (CN=someone else's CA)").as_str())
    );
    assert!(openssl_verify(&ca_pem, &local("server.pem")));

    // Every key type, generated on the host by openssl and signed through its CSR.
    for kt in KeyType::NAMES {
        let a = args(
            json!({"name": format!("k-{kt}"), "ca-dir": ca_dir, "dest": dir, "profile": "client",
                            "key-type": kt}),
        );
        let (s, o) = cx.run(&PkiCert, &a).await.unwrap();
        assert!(s.is_some(), "{kt}");
        assert_eq!(o.data["key_type"], *kt);
        assert_eq!(
            cx.run(&PkiCert, &a).await.unwrap().0,
            None,
            "{kt}: re-run must keep it"
        );
        assert!(openssl_verify(&ca_pem, &local(&format!("k-{kt}.pem"))), "{kt}");
    }

    // Corrupt PEM: a clear error naming the file, and the file is left as it was.
    let garbage = b"-----BEGIN CERTIFICATE-----\nMIIB...truncated\n-----END CERTIFICATE-----\n";
    std::fs::write(local("peer1.pem"), garbage).unwrap();
    let err = cx.run(&PkiCert, &peer).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{dir}/peer1.pem: not a PEM certificate")),
        "{err}"
    );
    assert_eq!(std::fs::read(local("peer1.pem")).unwrap(), garbage);

    // A corrupt key on the host is named too (read through openssl on the host).
    std::fs::write(local("server-key.pem"), b"not a key\n").unwrap();
    let err = cx.run(&PkiCert, &server3).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("{dir}/server-key.pem: not a usable private key")),
        "{err}"
    );
    assert_eq!(std::fs::read(local("server-key.pem")).unwrap(), b"not a key\n");
}

// ---------------------------------------------------------------- the real binary

fn pki_playbook(ca_dir: &Path, dest: &str, extra_san: Option<&str>) -> String {
    let extra = extra_san.map(|s| format!(" \"{s}\"")).unwrap_or_default();
    format!(
        r#"play "PKI" hosts=etcd {{
    vars {{
        ca_dir "{ca_dir}"
        pki_dest "{dest}"
    }}
    task "Cluster CA" {{
        pki-ca dir="{{{{ ca_dir }}}}" cfssl-csr="{ca_csr}"
        run-once #true
    }}
    task "etcd server certificate" {{
        pki-cert "server" ca-dir="{{{{ ca_dir }}}}" dest="{{{{ pki_dest }}}}" profile="server" client-auth=#true {{
            sans "127.0.0.1" "{{{{ address }}}}"{extra}
        }}
    }}
    task "etcd peer certificate" {{
        pki-cert "peer" ca-dir="{{{{ ca_dir }}}}" dest="{{{{ pki_dest }}}}" profile="peer" key-location="controller" {{
            sans "127.0.0.1" "{{{{ address }}}}"
        }}
    }}
}}
"#,
        ca_dir = ca_dir.display(),
        ca_csr = fixtures().join("ca-csr.json").display(),
    )
}

fn troupe_run(lab: &troupe_tests::Lab, play: &Path, extra: &[&str]) -> (i32, String) {
    let inventory = lab.inventory_path();
    let mut args = vec!["run", play.to_str().unwrap(), "-i", inventory.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = lab.troupe(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn playbook_issues_then_reports_unchanged_then_reissues_only_the_changed_cert() {
    let lab = &troupe_tests::Lab::start("pki-playbook", 3);
    let dest = lab.scratch("pki_playbook");
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("ca");
    let play = tmp.path().join("pki.kdl");

    std::fs::write(&play, pki_playbook(&ca_dir, &dest, None)).unwrap();
    let (code, out) = troupe_run(lab, &play, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("created CA"), "{out}");
    assert!(out.contains("OK: 3 hosts, 0 ok, 7 changed"), "{out}");
    for host in lab.host_names() {
        let ca = ca_dir.join("ca.pem");
        for f in ["server.pem", "peer.pem"] {
            let path = lab.host_path(host, "/srv").join("tests/pki_playbook").join(f);
            assert!(openssl_verify(&ca, &path), "{host}:{f}");
        }
    }

    let (code, out) = troupe_run(lab, &play, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("OK: 3 hosts, 7 ok, 0 changed"),
        "second run must change nothing:\n{out}"
    );

    // A SAN added to the server certificate: --check names it and writes nothing...
    std::fs::write(&play, pki_playbook(&ca_dir, &dest, Some("etcd.example.com"))).unwrap();
    let before = std::fs::read(
        lab.host_path("podc02", "/srv")
            .join("tests/pki_playbook/server.pem"),
    )
    .unwrap();
    let (code, out) = troupe_run(lab, &play, &["--check", "--diff", "--limit", "podc02"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!(
            "would change: reissue {dest}/server.pem: SAN etcd.example.com missing"
        )),
        "{out}"
    );
    assert!(
        !out.contains("peer.pem"),
        "the peer certificate must not be touched:\n{out}"
    );
    assert!(!out.contains("PRIVATE KEY"), "{out}");
    assert_eq!(
        std::fs::read(
            lab.host_path("podc02", "/srv")
                .join("tests/pki_playbook/server.pem")
        )
        .unwrap(),
        before
    );

    // ...and the real run reissues the server certificates only.
    let (code, out) = troupe_run(lab, &play, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("OK: 3 hosts, 4 ok, 3 changed"), "{out}");
    let (_, out) = troupe_run(lab, &play, &[]);
    assert!(out.contains("0 changed"), "{out}");
}

/// The switch the issue is about: an operator's existing cfssl set (CA on the
/// controller, certificates on the host) is adopted as it is — nothing reissued — when
/// troupe is pointed at the same cfssl JSON; only cfssl's invalid empty SAN is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_cfssl_set_is_adopted_unchanged() {
    let lab = &troupe_tests::Lab::start("pki-migrate", 1);
    let dir = lab.scratch("pki_migrate");
    let made = tempfile::tempdir().unwrap();
    cfssl_seed_set(made.path());
    let controller_dir = tempfile::tempdir().unwrap();
    for f in ["ca.pem", "ca-key.pem"] {
        std::fs::copy(made.path().join(f), controller_dir.path().join(f)).unwrap();
    }
    let on_host = lab.host_path("podc01", "/srv").join("tests/pki_migrate");
    for f in ["peer1.pem", "peer1-key.pem", "client.pem", "client-key.pem"] {
        std::fs::copy(made.path().join(f), on_host.join(f)).unwrap();
    }
    let conn = SshConnection::connect("podc01", lab.address("podc01"), &lab.ssh_options())
        .await
        .unwrap();
    let cx = Cx {
        host: "podc01".into(),
        conn: Arc::new(conn),
        controller: Arc::new(LocalConnection::new("localhost")),
    };
    let ca_dir = controller_dir.path().display().to_string();
    let fixture = |f: &str| fixtures().join(f).display().to_string();

    let (s, out) = cx
        .run(
            &PkiCa,
            &args(json!({"dir": ca_dir, "cfssl-csr": fixture("ca-csr.json")})),
        )
        .await
        .unwrap();
    assert_eq!(s, None, "cfssl's CA is adopted");
    assert_eq!(out.data["adopted"], true);

    let cert = |name: &str, profile: &str| {
        args(json!({
            "name": name, "ca-dir": ca_dir, "dest": dir,
            "cfssl-config": fixture("ca-config.json"), "cfssl-profile": profile,
            "cfssl-csr": fixture(&format!("{name}.json")),
        }))
    };
    let before = std::fs::read(on_host.join("peer1.pem")).unwrap();
    let (s, _) = cx.run(&PkiCert, &cert("peer1", "peer")).await.unwrap();
    assert_eq!(
        s, None,
        "cfssl's peer1 certificate (SEC1 key on the host) is kept"
    );
    assert_eq!(std::fs::read(on_host.join("peer1.pem")).unwrap(), before);

    let (s, _) = cx.run(&PkiCert, &cert("client", "client")).await.unwrap();
    assert_eq!(
        s.as_deref(),
        Some(format!("reissue {dir}/client.pem: SAN DNS:\"\" not requested").as_str())
    );
    assert!(openssl_verify(
        &controller_dir.path().join("ca.pem"),
        &on_host.join("client.pem")
    ));
    assert_eq!(cx.run(&PkiCert, &cert("client", "client")).await.unwrap().0, None);
}
