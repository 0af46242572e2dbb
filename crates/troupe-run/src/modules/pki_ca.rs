//! `pki-ca`: create or adopt the cluster CA on the controller. The CA key is made and
//! kept on the controller (through `TaskCx::controller`) and never leaves it; an
//! existing CA — troupe's or one made by `cfssl gencert -initca` — is adopted as it is,
//! and no run ever overwrites a CA key: that would orphan every certificate issued.

use async_trait::async_trait;
use serde_json::json;
use time::OffsetDateTime;
use troupe_dsl::registry::{ArgDefault, ArgKind, ArgSpec, ModuleSpec};

use super::args::{Choice, Reader};
use crate::connection::{Cmd, FileAttrs};
use crate::module::{Change, Check, Diff, Module, Outcome, TaskCx, TaskError};
use crate::pki::cfssl::CfsslCsr;
use crate::pki::issue::{DEFAULT_EXPIRY, create_ca, create_ca_with_key};
use crate::pki::keys::load_key;
use crate::pki::{Ca, CaRequest, KeyType, Naming, PkiError, PkiPaths, Subject};

pub struct PkiCa;

/// The key type of a new CA unless `key-type` or a cfssl CSR says otherwise.
const DEFAULT_KEY_TYPE: KeyType = KeyType::Rsa2048;

/// `naming=` of `pki-ca` and `pki-cert`.
impl Choice for Naming {
    const NAMES: &'static [&'static str] = Naming::NAMES;
    fn from_name(name: &str) -> Option<Self> {
        Naming::parse(name)
    }
}

static SPEC: ModuleSpec = ModuleSpec {
    name: "pki-ca",
    summary: "Create or adopt a certificate authority on the controller",
    doc: "Makes sure `DIR/NAME.pem` and `DIR/NAME-key.pem` (or `NAME.crt`/`NAME.key` with \
`naming=\"kubeadm\"`) hold a CA **on the controller**: the CA key never travels to a host. \
When both files exist they are adopted as they are — a CA made by `cfssl gencert -initca` works — \
after checking that the certificate is a CA and the key is its key; the task then reports ok even \
if the subject arguments differ (the message says so). A CA key is never overwritten: a key without \
its certificate gets a new self-signed certificate for the same key; a certificate without its key \
is an error. The subject and key come from the arguments or from a cfssl `ca-csr.json` \
(`cfssl-csr`), whose unknown key algorithms are refused rather than ignored. \
Registered result: `cert`, `key`, `subject`, `key_type`, `not_after`, `serial`, `adopted`.",
    args: &[
        ArgSpec {
            required: true,
            ..ArgSpec::new("dir", ArgKind::Path, "Folder on the controller for the CA files.")
        },
        ArgSpec {
            default: Some(ArgDefault::Str("ca")),
            ..ArgSpec::new("name", ArgKind::String, "Base name of the files.")
        },
        ArgSpec {
            default: Some(ArgDefault::Str("cfssl")),
            ..ArgSpec::new(
                "naming",
                ArgKind::Enum(Naming::NAMES),
                "`cfssl`: NAME.pem + NAME-key.pem; `kubeadm`: NAME.crt + NAME.key.",
            )
        },
        ArgSpec {
            default: Some(ArgDefault::Str(DEFAULT_KEY_TYPE.as_str())),
            ..ArgSpec::new("key-type", ArgKind::Enum(KeyType::NAMES), "Key of a new CA.")
        },
        ArgSpec::new(
            "cn",
            ArgKind::String,
            "Subject common name of a new CA (required unless `cfssl-csr`).",
        ),
        ArgSpec::new("o", ArgKind::String, "Subject organization."),
        ArgSpec::new("ou", ArgKind::String, "Subject organizational unit."),
        ArgSpec::new("l", ArgKind::String, "Subject locality."),
        ArgSpec::new("st", ArgKind::String, "Subject state or province."),
        ArgSpec::new("c", ArgKind::String, "Subject country (two letters)."),
        ArgSpec {
            default: Some(ArgDefault::Duration(DEFAULT_EXPIRY)),
            ..ArgSpec::new(
                "expiry",
                ArgKind::Duration,
                "Validity of a new CA certificate (cfssl's five years).",
            )
        },
        ArgSpec::new(
            "cfssl-csr",
            ArgKind::Path,
            "A cfssl `ca-csr.json` giving CN, names, key and `ca.expiry`; explicit arguments override it.",
        ),
    ],
    one_of: &[],
    example: r#"task "Cluster CA" {
    pki-ca dir="pki" cn="etcd CA" o="troupe" key-type="rsa-2048"
    run-once #true
}"#,
};

#[derive(Debug, Clone)]
pub struct PkiCaSpec {
    pub dir: String,
    pub name: String,
    pub naming: Naming,
    pub key_type: Option<KeyType>,
    pub subject: Subject,
    pub expiry: Option<std::time::Duration>,
    pub cfssl_csr: Option<String>,
}

impl PkiCaSpec {
    pub fn paths(&self) -> PkiPaths {
        self.naming.paths(&self.dir, &self.name)
    }
}

/// What applying does.
#[derive(Debug, Clone)]
pub enum CaPlan {
    /// New key and certificate.
    Create(CaRequest),
    /// A key without its certificate: certify that key again.
    CertifyExistingKey(CaRequest),
}

/// Serializes CA creation within one troupe run (see `apply`).
static CA_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Read a controller-side input file (a cfssl JSON), found like `src` files.
pub(crate) fn read_input(cx: &TaskCx<'_>, arg: &str, rel: &str) -> Result<(String, String), TaskError> {
    let path = cx.find_file("files", rel)?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| TaskError::bad_arg(arg, format!("cannot read {}: {e}", path.display())))?;
    Ok((path.display().to_string(), text))
}

fn request(spec: &PkiCaSpec, cx: &TaskCx<'_>) -> Result<CaRequest, TaskError> {
    let mut req = CaRequest {
        subject: Subject::default(),
        key_type: DEFAULT_KEY_TYPE,
        expiry: DEFAULT_EXPIRY,
    };
    if let Some(rel) = &spec.cfssl_csr {
        let (path, text) = read_input(cx, "cfssl-csr", rel)?;
        let csr = CfsslCsr::parse(&text, &path).map_err(PkiError::from)?;
        req.expiry = csr.ca_expiry_or_default();
        req.key_type = csr.key_type;
        req.subject = csr.subject;
    }
    let s = &spec.subject;
    if !s.cn.is_empty() {
        req.subject.cn = s.cn.clone();
    }
    for (dst, src) in [
        (&mut req.subject.c, &s.c),
        (&mut req.subject.st, &s.st),
        (&mut req.subject.l, &s.l),
        (&mut req.subject.o, &s.o),
        (&mut req.subject.ou, &s.ou),
    ] {
        if src.is_some() {
            *dst = src.clone();
        }
    }
    if let Some(k) = spec.key_type {
        req.key_type = k;
    }
    if let Some(e) = spec.expiry {
        req.expiry = e;
    }
    if req.subject.cn.is_empty() {
        return Err(TaskError::bad_arg(
            "cn",
            "a new CA needs a common name: give `cn` or `cfssl-csr`",
        ));
    }
    Ok(req)
}

fn utf8(bytes: Vec<u8>, path: &str) -> Result<String, TaskError> {
    String::from_utf8(bytes).map_err(|_| {
        TaskError::failed_help(
            format!("{path} is not text (not PEM)"),
            "move the corrupt file aside and restore it from backup",
        )
    })
}

fn facts_json(ca: &Ca, paths: &PkiPaths, adopted: bool) -> serde_json::Value {
    let f = ca.facts();
    json!({
        "cert": paths.cert,
        "key": paths.key,
        "subject": f.subject,
        "key_type": f.key_type,
        "not_after": crate::pki::inspect::fmt_time(f.not_after),
        "serial": f.serial,
        "adopted": adopted,
    })
}

#[async_trait]
impl Module for PkiCa {
    type Spec = PkiCaSpec;
    type Plan = CaPlan;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Reader<'_>) -> Result<PkiCaSpec, TaskError> {
        let key_type = match a.opt_str("key-type")? {
            None => None,
            Some(k) => Some(
                k.parse::<KeyType>()
                    .map_err(|e| TaskError::bad_arg("key-type", e.to_string()))?,
            ),
        };
        let naming = a.choice("naming")?;
        let expiry = match a.opt_str("expiry")? {
            None => None,
            Some(t) => Some(crate::pki::parse_duration(&t).ok_or_else(|| {
                TaskError::bad_arg(
                    "expiry",
                    format!("expected a duration like \"43800h\" or \"365d\", got {t:?}"),
                )
            })?),
        };
        let name = a.str("name")?;
        if name.is_empty() || name.contains('/') {
            return Err(TaskError::bad_arg(
                "name",
                "must be a plain file name without `/`",
            ));
        }
        Ok(PkiCaSpec {
            dir: a.str("dir")?,
            name,
            naming,
            key_type,
            subject: Subject {
                cn: a.opt_str("cn")?.unwrap_or_default(),
                c: a.opt_str("c")?,
                st: a.opt_str("st")?,
                l: a.opt_str("l")?,
                o: a.opt_str("o")?,
                ou: a.opt_str("ou")?,
            },
            expiry,
            cfssl_csr: a.opt_str("cfssl-csr")?,
        })
    }

    async fn check(&self, spec: &PkiCaSpec, cx: &TaskCx<'_>) -> Result<Check<CaPlan>, TaskError> {
        let paths = spec.paths();
        let cert = cx.controller.read_file(&paths.cert).await?;
        let key = cx.controller.read_file(&paths.key).await?;
        match (cert, key) {
            (Some(cert), Some(key)) => {
                let cert = utf8(cert, &paths.cert)?;
                let key = utf8(key, &paths.key)?;
                let ca = Ca::load(&cert, &key, &paths.cert, &paths.key).map_err(TaskError::from)?;
                let now = OffsetDateTime::now_utc();
                if ca.facts().not_after <= now {
                    return Err(TaskError::failed_help(
                        format!(
                            "CA certificate {} expired on {}",
                            paths.cert,
                            crate::pki::inspect::fmt_time(ca.facts().not_after)
                        ),
                        "every certificate it signed fails too; renew the CA deliberately (new CA, reissue all certificates) — troupe will not replace a CA on its own",
                    ));
                }
                let mut outcome = Outcome::ok(facts_json(&ca, &paths, true));
                // Only when the caller asked for a subject: tell them the CA differs.
                if (spec.cfssl_csr.is_some() || !spec.subject.cn.is_empty())
                    && let Ok(req) = request(spec, cx)
                    && req.subject != ca.facts().subject_fields
                {
                    outcome.msg = Some(format!(
                        "adopted existing CA {} ({}); the requested subject {} is not applied to an existing CA",
                        paths.cert,
                        ca.facts().subject,
                        req.subject
                    ));
                }
                Ok(Check::Unchanged(outcome))
            }
            (Some(_), None) => Err(TaskError::failed_help(
                format!(
                    "CA certificate {} exists but its key {} does not",
                    paths.cert, paths.key
                ),
                "restore the CA key from backup; troupe will not create a new CA over an existing certificate",
            )),
            (None, Some(key)) => {
                let key_text = utf8(key, &paths.key)?;
                let key = load_key(&key_text, &paths.key).map_err(TaskError::from)?;
                let mut req = request(spec, cx)?;
                req.key_type = key.key_type();
                let summary = format!("create {} for the existing CA key {}", paths.cert, paths.key);
                let diff = Diff {
                    path: paths.cert.clone(),
                    before: String::new(),
                    after: format!(
                        "subject: {}\nkey: {} (existing)\nexpiry: {}\n",
                        req.subject,
                        req.key_type,
                        crate::pki::fmt_days(req.expiry)
                    ),
                };
                Ok(Check::Change(
                    Change::new(CaPlan::CertifyExistingKey(req), summary).with_diff(diff),
                ))
            }
            (None, None) => {
                let req = request(spec, cx)?;
                let summary = format!("create CA {} ({}, {})", paths.cert, req.key_type, req.subject);
                let diff = Diff {
                    path: paths.cert.clone(),
                    before: String::new(),
                    after: format!(
                        "subject: {}\nkey: {} (new, kept on the controller)\nexpiry: {}\nCA: true\n",
                        req.subject,
                        req.key_type,
                        crate::pki::fmt_days(req.expiry)
                    ),
                };
                Ok(Check::Change(
                    Change::new(CaPlan::Create(req), summary).with_diff(diff),
                ))
            }
        }
    }

    async fn apply(&self, spec: &PkiCaSpec, plan: CaPlan, cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
        let paths = spec.paths();
        // Hosts run in parallel and all share the controller: without `run-once`, each
        // host's task would create "the" CA at once. One creation at a time, and each
        // looks again under the lock, so the later ones adopt the CA the first made.
        let _guard = CA_LOCK.lock().await;
        let cert = cx.controller.read_file(&paths.cert).await?;
        let key = cx.controller.read_file(&paths.key).await?;
        if let (Some(cert), Some(key)) = (cert, key) {
            let ca = Ca::load(
                &utf8(cert, &paths.cert)?,
                &utf8(key, &paths.key)?,
                &paths.cert,
                &paths.key,
            )
            .map_err(TaskError::from)?;
            let mut outcome = Outcome::ok(facts_json(&ca, &paths, true));
            outcome.msg = Some(format!(
                "adopted {}, created meanwhile by another host's task",
                paths.cert
            ));
            return Ok(outcome);
        }
        let now = OffsetDateTime::now_utc();
        // 0700, parents included, whatever troupe's umask: the folder holds the CA key,
        // and a folder others may write lets them swap files under it.
        let out = cx
            .controller
            .exec(
                &Cmd::script(format!(
                    "umask 077; mkdir -p -m 0700 -- {}",
                    crate::connection::shell::quote(&spec.dir)
                ))
                .internal(),
            )
            .await?;
        if !out.success() {
            return Err(TaskError::failed(format!(
                "cannot create {} on the controller: {}",
                spec.dir,
                out.stderr_str().trim_end()
            )));
        }
        let key_attrs = FileAttrs {
            mode: Some(0o600),
            ..FileAttrs::default()
        };
        let cert_attrs = FileAttrs {
            mode: Some(0o644),
            ..FileAttrs::default()
        };
        let ca = match plan {
            CaPlan::Create(req) => {
                // Re-check right before writing: never replace a CA key, even one that
                // appeared since `check`.
                if cx.controller.stat(&paths.key).await?.is_some() {
                    return Err(TaskError::failed(format!(
                        "{} appeared since the check; not overwriting a CA key",
                        paths.key
                    )));
                }
                let ca = create_ca(&req, now).map_err(TaskError::from)?;
                // Key first: a crash in between leaves a key without certificate, which
                // the next run certifies; never a certificate without its key.
                cx.controller
                    .write_file(&paths.key, ca.key_pem().as_bytes(), &key_attrs)
                    .await?;
                ca
            }
            CaPlan::CertifyExistingKey(req) => {
                let key_text =
                    cx.controller.read_file(&paths.key).await?.ok_or_else(|| {
                        TaskError::failed(format!("{} disappeared since the check", paths.key))
                    })?;
                let key = load_key(&utf8(key_text, &paths.key)?, &paths.key).map_err(TaskError::from)?;
                create_ca_with_key(&req, key, now).map_err(TaskError::from)?
            }
        };
        cx.controller
            .write_file(&paths.cert, ca.cert_pem().as_bytes(), &cert_attrs)
            .await?;
        let mut outcome = Outcome::changed(facts_json(&ca, &paths, false));
        outcome.msg = Some(format!("created CA {} ({})", paths.cert, ca.facts().subject));
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{FakeHost, args};

    #[tokio::test]
    async fn creates_once_then_adopts() {
        let host = FakeHost::new();
        let a = args(r#"{"dir": "pki", "cn": "etcd CA", "o": "troupe", "key-type": "ecdsa-p256"}"#);
        let out = host.run(&PkiCa, a.clone()).await.unwrap();
        assert!(out.changed);
        assert_eq!(host.file("pki/ca-key.pem").unwrap().mode, 0o600);
        assert_eq!(host.file("pki/ca.pem").unwrap().mode, 0o644);
        assert_eq!(out.data["subject"], "O=troupe, CN=etcd CA");
        let key_before = host.file("pki/ca-key.pem").unwrap().content;

        let again = host.run(&PkiCa, a).await.unwrap();
        assert!(!again.changed);
        assert_eq!(again.data["serial"], out.data["serial"]);
        assert_eq!(host.file("pki/ca-key.pem").unwrap().content, key_before);

        // A different subject does not replace the CA; it is reported.
        let other = host
            .run(&PkiCa, args(r#"{"dir": "pki", "cn": "another CA"}"#))
            .await
            .unwrap();
        assert!(!other.changed);
        assert!(other.msg.unwrap().contains("is not applied to an existing CA"));
    }

    #[tokio::test]
    async fn parallel_hosts_create_one_ca() {
        // Three hosts' tasks check before any applies, as with forks=3 and no run-once.
        let host = FakeHost::new();
        let a = args(r#"{"dir": "pki", "cn": "etcd CA", "key-type": "ecdsa-p256"}"#);
        let conn = host.conn();
        let render = |_: &str| -> Result<String, TaskError> { Ok(String::new()) };
        let eval = |_: &str| -> Result<serde_json::Value, TaskError> { Ok(json!(null)) };
        let cx = TaskCx {
            host: "fake01",
            conn: &conn,
            controller: &conn,
            search_dirs: &[],
            render: &render,
            eval: &eval,
        };
        let mut plans = Vec::new();
        for _ in 0..3 {
            let spec = PkiCa.decode(&Reader::new(&SPEC, &a)).unwrap();
            let Check::Change(change) = PkiCa.check(&spec, &cx).await.unwrap() else {
                panic!("expected a change")
            };
            plans.push((spec, change.plan));
        }
        let mut changed = 0;
        let mut serials = Vec::new();
        for (spec, plan) in plans {
            let out = PkiCa.apply(&spec, plan, &cx).await.unwrap();
            changed += usize::from(out.changed);
            serials.push(out.data["serial"].clone());
        }
        assert_eq!(changed, 1);
        assert!(serials.iter().all(|s| *s == serials[0]), "{serials:?}");
    }

    #[tokio::test]
    async fn lost_certificate_is_recreated_for_the_same_key() {
        let host = FakeHost::new();
        let key = crate::pki::generate_key(KeyType::EcdsaP384).unwrap().to_pem();
        host.put_file("pki/ca.key", key.as_bytes());
        let a = args(r#"{"dir": "pki", "cn": "etcd CA", "naming": "kubeadm"}"#);
        let (summary, _) = host.check(&PkiCa, a.clone()).await.unwrap().unwrap();
        assert_eq!(summary, "create pki/ca.crt for the existing CA key pki/ca.key");
        assert!(host.run(&PkiCa, a).await.unwrap().changed);
        assert_eq!(host.file("pki/ca.key").unwrap().content, key.as_bytes());
        let cert = String::from_utf8(host.file("pki/ca.crt").unwrap().content).unwrap();
        let ca = Ca::load(&cert, &key, "ca.crt", "ca.key").unwrap();
        assert_eq!(ca.facts().key_type, "ecdsa-p384");
    }

    #[tokio::test]
    async fn certificate_without_key_and_corrupt_files_are_errors() {
        let host = FakeHost::new();
        host.put_file(
            "pki/ca.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let a = args(r#"{"dir": "pki", "cn": "etcd CA"}"#);
        let err = host.run(&PkiCa, a.clone()).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("exists but its key pki/ca-key.pem does not"),
            "{err}"
        );
        host.put_file("pki/ca-key.pem", b"garbage");
        let err = host.run(&PkiCa, a).await.unwrap_err();
        assert!(
            err.to_string().starts_with("pki/ca.pem: not a PEM certificate"),
            "{err}"
        );
        assert_eq!(host.file("pki/ca-key.pem").unwrap().content, b"garbage");
    }
}
