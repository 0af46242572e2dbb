//! `pki-cert`: a certificate signed by the controller's CA, in place on the host, kept
//! as long as it is still right and reissued — with the reasons spelled out — when it
//! is not. The key is generated on the host by default (`openssl genpkey`; only a CSR
//! travels to the controller and the certificate back), or on the controller and
//! uploaded, as the seed did with cfssl. A file troupe cannot read is an error naming
//! it; nothing is overwritten behind the operator's back.

use async_trait::async_trait;
use serde_json::json;
use std::time::Duration;
use time::OffsetDateTime;
use troupe_dsl::registry::{ArgDefault, ArgKind, ArgSpec, ModuleSpec};

use super::args::{Choice, Reader, choice};
use super::attrs;
use super::pki_ca::read_input;
use crate::connection::{Cmd, FileAttrs, FileKind, FileStat};
use crate::module::{Change, Check, Diff, Module, Outcome, TaskCx, TaskError};
use crate::pki::cfssl::{CfsslConfig, CfsslCsr};
use crate::pki::host_key;
use crate::pki::inspect::fmt_time;
use crate::pki::issue::{DEFAULT_EXPIRY, csr_for_key};
use crate::pki::keys::{key_matches, load_key, spki_from_pem};
use crate::pki::{
    Ca, CertFacts, CertRequest, ExtUsage, KeyType, Naming, PkiPaths, Profile, Reason, San, Subject, Usages,
    inspect, needs_reissue, signed_by,
};

pub struct PkiCert;

/// The key type of a new certificate unless `key-type` or a cfssl CSR says otherwise.
const DEFAULT_KEY_TYPE: KeyType = KeyType::EcdsaP256;
/// `renew-before` when not given.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

static SPEC: ModuleSpec = ModuleSpec {
    name: "pki-cert",
    summary: "Issue a certificate signed by the controller's CA onto the host, reissuing only when needed",
    doc: "Keeps `DEST/NAME.pem` + `DEST/NAME-key.pem` (or `NAME.crt`/`NAME.key` with `naming=\"kubeadm\"`) \
on the host signed by the CA that `pki-ca` made in `ca-dir` on the controller. An existing certificate is \
kept only when it is signed by that CA, its key matches, its SANs, usages, subject and key type are the \
requested ones, and it does not expire within `renew-before`; otherwise it is reissued with a new key and \
the task reports each reason (`SAN 10.1.1.204 missing`, `expires in 12 days (renew-before 30d)`, \
`signed by another CA`, `key does not match cert`) in its summary and diff — never key material. \
Usages come from `profile` (`server`: digital signature, key encipherment, server auth; `client`: … client \
auth; `peer`: both), from `usages`, or from a cfssl `ca-config.json` profile; `client-auth=#true` adds client \
auth (etcd's gRPC gateway dials its own client port with the server certificate, see docs/pki.md). \
`key-location=\"host\"` (default) generates the key on the host with `openssl` so it never crosses the network; \
`controller` generates it on the controller and uploads it. Keys are written 0600, certificates 0644, \
atomically. An unreadable certificate or key is an error naming the file, and nothing is overwritten. \
Registered result: `cert`, `key`, `sans`, `not_after`, `serial`, `subject`, `reasons`.",
    args: &[
        ArgSpec {
            required: true,
            ..ArgSpec::new(
                "ca-dir",
                ArgKind::Path,
                "Folder of the CA on the controller (`pki-ca dir`).",
            )
        },
        ArgSpec {
            default: Some(ArgDefault::Str("ca")),
            ..ArgSpec::new("ca-name", ArgKind::String, "Base name of the CA files.")
        },
        ArgSpec {
            default: Some(ArgDefault::Str("cfssl")),
            ..ArgSpec::new(
                "ca-naming",
                ArgKind::Enum(Naming::NAMES),
                "Naming of the CA files.",
            )
        },
        ArgSpec {
            required: true,
            positional: true,
            ..ArgSpec::new(
                "name",
                ArgKind::String,
                "Base name of the certificate files (`server`, `peer1`).",
            )
        },
        ArgSpec {
            required: true,
            ..ArgSpec::new("dest", ArgKind::Path, "Folder on the host.")
        },
        ArgSpec {
            default: Some(ArgDefault::Str("cfssl")),
            ..ArgSpec::new(
                "naming",
                ArgKind::Enum(Naming::NAMES),
                "`cfssl`: NAME.pem + NAME-key.pem (+ NAME.csr); `kubeadm`: NAME.crt + NAME.key.",
            )
        },
        ArgSpec {
            default: Some(ArgDefault::Bool(false)),
            ..ArgSpec::new(
                "csr",
                ArgKind::Bool,
                "Also keep the CSR as NAME.csr, as `cfssljson -bare` does.",
            )
        },
        ArgSpec::new(
            "profile",
            ArgKind::Enum(Profile::NAMES),
            "`server`, `client` or `peer` usages.",
        ),
        ArgSpec::new(
            "usages",
            ArgKind::List,
            "Custom usages in cfssl's words (`signing`, `key encipherment`, `server auth`, …).",
        ),
        ArgSpec {
            default: Some(ArgDefault::Bool(false)),
            ..ArgSpec::new(
                "client-auth",
                ArgKind::Bool,
                "Add client auth to the usages (for etcd's server certificate).",
            )
        },
        ArgSpec::new(
            "sans",
            ArgKind::List,
            "Subject alternative names; IP addresses and DNS names are told apart.",
        ),
        ArgSpec::new("cn", ArgKind::String, "Subject common name (default: `name`)."),
        ArgSpec::new("o", ArgKind::String, "Subject organization."),
        ArgSpec::new("ou", ArgKind::String, "Subject organizational unit."),
        ArgSpec::new("l", ArgKind::String, "Subject locality."),
        ArgSpec::new("st", ArgKind::String, "Subject state or province."),
        ArgSpec::new("c", ArgKind::String, "Subject country."),
        ArgSpec {
            default: Some(ArgDefault::Str(DEFAULT_KEY_TYPE.as_str())),
            ..ArgSpec::new("key-type", ArgKind::Enum(KeyType::NAMES), "Key type.")
        },
        ArgSpec {
            default: Some(ArgDefault::Duration(DEFAULT_EXPIRY)),
            ..ArgSpec::new("expiry", ArgKind::Duration, "Validity of a new certificate.")
        },
        ArgSpec {
            default: Some(ArgDefault::Duration(RENEW_BEFORE)),
            ..ArgSpec::new(
                "renew-before",
                ArgKind::Duration,
                "Reissue when the certificate expires sooner than this.",
            )
        },
        ArgSpec {
            default: Some(ArgDefault::Str(KeyLocation::Host.name())),
            ..ArgSpec::new(
                "key-location",
                ArgKind::Enum(KeyLocation::NAMES),
                "Where the key is generated: on the `host` (openssl) or the `controller`.",
            )
        },
        ArgSpec::new("owner", ArgKind::String, "Owner of the written files."),
        ArgSpec::new("group", ArgKind::String, "Group of the written files."),
        ArgSpec::new(
            "cfssl-config",
            ArgKind::Path,
            "A cfssl `ca-config.json` on the controller; with `cfssl-profile`.",
        ),
        ArgSpec::new(
            "cfssl-profile",
            ArgKind::String,
            "Profile of `cfssl-config` giving usages and expiry.",
        ),
        ArgSpec::new(
            "cfssl-csr",
            ArgKind::Path,
            "A cfssl CSR JSON (`server.json`) giving CN, hosts, key and names.",
        ),
    ],
    one_of: &[&["profile", "usages", "cfssl-profile"]],
    example: r#"task "etcd server certificate" {
    pki-cert "server" ca-dir="pki" dest="/etc/kubernetes/pki/etcd-certs" profile="server" client-auth=#true {
        sans "127.0.0.1" "{{ address }}" "localhost"
    }
}"#,
};

choice! {
    /// Where a new key is generated (`key-location`).
    pub enum KeyLocation {
        Host = "host",
        Controller = "controller",
    }
}

#[derive(Debug, Clone)]
pub struct PkiCertSpec {
    pub ca: PkiPaths,
    pub name: String,
    pub paths: PkiPaths,
    pub dest: String,
    pub csr: bool,
    pub profile: Option<Profile>,
    pub usages: Option<Vec<String>>,
    pub client_auth: bool,
    pub sans: Option<Vec<San>>,
    pub subject: Subject,
    pub key_type: Option<KeyType>,
    pub expiry: Option<Duration>,
    pub renew_before: Duration,
    pub key_location: KeyLocation,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub cfssl_config: Option<String>,
    pub cfssl_profile: Option<String>,
    pub cfssl_csr: Option<String>,
}

/// What `apply` does.
#[derive(Debug)]
pub enum CertPlan {
    /// A new key and certificate, for these reasons (never empty).
    Issue {
        request: CertRequest,
        reasons: Vec<Reason>,
    },
    /// The certificate stays; the modes/owners of its files are corrected.
    FixAttrs { fixes: Vec<AttrFix>, kept: CertFacts },
}

/// One file whose mode or ownership drifted (a key left 0644 by hand).
#[derive(Debug, Clone)]
pub struct AttrFix {
    path: String,
    mode: u32,
    owner: Option<String>,
    group: Option<String>,
    why: Vec<String>,
}

fn attr_fix(path: &str, st: &FileStat, mode: u32, spec: &PkiCertSpec) -> Option<AttrFix> {
    let mut why = Vec::new();
    let have = st.mode & 0o7777;
    if have != mode {
        why.push(format!("mode {have:04o}, wanted {mode:04o}"));
    }
    if let Some(o) = &spec.owner
        && &st.owner != o
    {
        why.push(format!("owner {}, wanted {o}", st.owner));
    }
    if let Some(g) = &spec.group
        && &st.group != g
    {
        why.push(format!("group {}, wanted {g}", st.group));
    }
    (!why.is_empty()).then(|| AttrFix {
        path: path.to_string(),
        mode,
        owner: spec.owner.clone(),
        group: spec.group.clone(),
        why,
    })
}

fn duration_arg(a: &Reader<'_>, name: &str) -> Result<Option<Duration>, TaskError> {
    match a.opt_str(name)? {
        None => Ok(None),
        Some(t) => crate::pki::parse_duration(&t).map(Some).ok_or_else(|| {
            TaskError::bad_arg(
                name,
                format!("expected a duration like \"43800h\", \"30d\" or \"720h\", got {t:?}"),
            )
        }),
    }
}

fn utf8(bytes: Vec<u8>, path: &str) -> Result<String, TaskError> {
    String::from_utf8(bytes).map_err(|_| {
        TaskError::failed_help(
            format!("{path}: not a PEM file (binary content)"),
            "move the corrupt file aside (troupe never overwrites it silently) and run again to issue a new one",
        )
    })
}

/// The request, from cfssl files and arguments (arguments win).
fn request(spec: &PkiCertSpec, cx: &TaskCx<'_>) -> Result<CertRequest, TaskError> {
    let mut subject = Subject::default();
    let mut sans = Vec::new();
    let mut key_type = DEFAULT_KEY_TYPE;
    let mut expiry = DEFAULT_EXPIRY;
    let mut usages: Option<Usages> = None;
    if let Some(rel) = &spec.cfssl_csr {
        let (path, text) = read_input(cx, "cfssl-csr", rel)?;
        let csr = CfsslCsr::parse(&text, &path).map_err(crate::pki::PkiError::from)?;
        subject = csr.subject;
        sans = csr.hosts;
        key_type = csr.key_type;
    }
    match (&spec.cfssl_config, &spec.cfssl_profile) {
        (Some(rel), Some(profile)) => {
            let (path, text) = read_input(cx, "cfssl-config", rel)?;
            let cfg = CfsslConfig::parse(&text, &path).map_err(crate::pki::PkiError::from)?;
            let policy = cfg.profile(profile).map_err(crate::pki::PkiError::from)?;
            usages = Some(policy.usages.clone());
            expiry = policy.expiry;
        }
        (Some(_), None) => {
            return Err(TaskError::bad_arg(
                "cfssl-profile",
                "is required with `cfssl-config`",
            ));
        }
        (None, Some(_)) => {
            return Err(TaskError::bad_arg(
                "cfssl-config",
                "is required with `cfssl-profile`",
            ));
        }
        (None, None) => {}
    }
    if let Some(p) = spec.profile {
        usages = Some(p.usages());
    }
    if let Some(list) = &spec.usages {
        usages = Some(Usages::parse(list).map_err(|e| TaskError::bad_arg("usages", e.to_string()))?);
    }
    let mut usages = usages.ok_or_else(|| {
        TaskError::bad_arg(
            "profile",
            "say what the certificate is for: `profile`, `usages`, or `cfssl-config` + `cfssl-profile`",
        )
    })?;
    if spec.client_auth {
        usages.ext.insert(ExtUsage::ClientAuth);
    }
    if let Some(s) = &spec.sans {
        sans = s.clone();
    }
    let s = &spec.subject;
    if !s.cn.is_empty() {
        subject.cn = s.cn.clone();
    }
    for (dst, src) in [
        (&mut subject.c, &s.c),
        (&mut subject.st, &s.st),
        (&mut subject.l, &s.l),
        (&mut subject.o, &s.o),
        (&mut subject.ou, &s.ou),
    ] {
        if src.is_some() {
            *dst = src.clone();
        }
    }
    if subject.cn.is_empty() {
        subject.cn = spec.name.clone();
    }
    if let Some(k) = spec.key_type {
        key_type = k;
    }
    if let Some(e) = spec.expiry {
        expiry = e;
    }
    Ok(CertRequest {
        subject,
        sans,
        key_type,
        usages,
        expiry,
    })
}

async fn load_ca(spec: &PkiCertSpec, cx: &TaskCx<'_>) -> Result<Ca, TaskError> {
    let missing = |p: &str| {
        TaskError::failed_help(
            format!("CA file {p} not found on the controller"),
            "create the CA first with a `pki-ca` task (same dir and name as `ca-dir`/`ca-name`)",
        )
    };
    let cert = cx
        .controller
        .read_file(&spec.ca.cert)
        .await?
        .ok_or_else(|| missing(&spec.ca.cert))?;
    let key = cx
        .controller
        .read_file(&spec.ca.key)
        .await?
        .ok_or_else(|| missing(&spec.ca.key))?;
    Ca::load(
        &utf8(cert, &spec.ca.cert)?,
        &utf8(key, &spec.ca.key)?,
        &spec.ca.cert,
        &spec.ca.key,
    )
    .map_err(TaskError::from)
}

/// Whether the key at `path` on the host matches `facts`; `None` when it is missing.
/// With the key on the host only its public half is read (`openssl pkey -pubout`).
async fn host_key_matches(
    spec: &PkiCertSpec,
    cx: &TaskCx<'_>,
    facts: &CertFacts,
    key_stat: Option<&FileStat>,
) -> Result<Option<bool>, TaskError> {
    let path = &spec.paths.key;
    match key_stat {
        None => return Ok(None),
        Some(st) if st.kind != FileKind::File => {
            return Err(TaskError::failed(format!(
                "{path} on {} is not a regular file",
                cx.conn.host()
            )));
        }
        Some(_) => {}
    }
    let corrupt = |detail: String| {
        TaskError::failed_help(
            format!("{path}: not a usable private key: {detail}"),
            "move the corrupt key aside (troupe never overwrites it silently) and run again to issue a new key and certificate",
        )
    };
    match spec.key_location {
        KeyLocation::Host => {
            let out = cx
                .conn
                .exec(&Cmd::argv(["openssl", "pkey", "-in", path.as_str(), "-pubout"]).internal())
                .await?;
            if out.exit_code == 127 {
                return Err(no_openssl(cx.conn.host()));
            }
            if !out.success() {
                let err = out.stderr_str();
                return Err(corrupt(
                    err.lines().next().unwrap_or("openssl pkey failed").to_string(),
                ));
            }
            let spki = spki_from_pem(&out.stdout_str())
                .ok_or_else(|| corrupt("openssl printed no public key".into()))?;
            Ok(Some(
                crate::pki::keys::spki_key_bits(&spki) == crate::pki::keys::spki_key_bits(&facts.spki_der),
            ))
        }
        KeyLocation::Controller => {
            let bytes = cx
                .conn
                .read_file(path)
                .await?
                .ok_or_else(|| corrupt("disappeared while reading".into()))?;
            let key = load_key(&utf8(bytes, path)?, path).map_err(TaskError::from)?;
            Ok(Some(key_matches(&key, &facts.spki_der)))
        }
    }
}

fn no_openssl(host: &str) -> TaskError {
    TaskError::failed_help(
        format!("`openssl` is not installed on {host}"),
        "key-location=\"host\" makes and reads keys with openssl on the host: install it, or use key-location=\"controller\"",
    )
}

fn describe_request(req: &CertRequest) -> String {
    let sans: Vec<String> = req.sans.iter().map(|s| s.to_string()).collect();
    format!(
        "subject: {}\nsans: {}\nkey: {} (new)\nusages: {}\nexpiry: {}\n",
        req.subject,
        if sans.is_empty() {
            "(none)".into()
        } else {
            sans.join(", ")
        },
        req.key_type,
        req.usages,
        crate::pki::fmt_days(req.expiry),
    )
}

fn facts_json(spec: &PkiCertSpec, facts: &CertFacts, reasons: &[Reason]) -> serde_json::Value {
    let mut v = json!({
        "cert": spec.paths.cert,
        "key": spec.paths.key,
        "subject": facts.subject,
        "sans": facts.sans.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "not_after": fmt_time(facts.not_after),
        "serial": facts.serial,
        "key_type": facts.key_type,
        "reasons": reasons.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
    });
    if spec.csr {
        v["csr"] = json!(spec.paths.csr);
    }
    v
}

#[async_trait]
impl Module for PkiCert {
    type Spec = PkiCertSpec;
    type Plan = CertPlan;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Reader<'_>) -> Result<PkiCertSpec, TaskError> {
        let name = a.str("name")?;
        if name.is_empty() || name.contains('/') {
            return Err(TaskError::bad_arg(
                "name",
                "must be a plain file name without `/`",
            ));
        }
        let dest = a.str("dest")?;
        let naming: Naming = a.choice("naming")?;
        let ca_naming: Naming = a.choice("ca-naming")?;
        let ca_name = a.str("ca-name")?;
        let profile = match a.opt_str("profile")? {
            None => None,
            Some(p) => Some(
                p.parse::<Profile>()
                    .map_err(|e| TaskError::bad_arg("profile", e))?,
            ),
        };
        let usages = a.opt_str_list("usages")?;
        if let Some(list) = &usages {
            Usages::parse(list).map_err(|e| TaskError::bad_arg("usages", e.to_string()))?;
        }
        let given = usize::from(profile.is_some())
            + usize::from(usages.is_some())
            + usize::from(a.opt_str("cfssl-profile")?.is_some());
        if given != 1 {
            return Err(TaskError::bad_arg(
                "profile",
                "say what the certificate is for with exactly one of `profile`, `usages`, or `cfssl-profile` (with `cfssl-config`)",
            ));
        }
        let sans = match a.opt_str_list("sans")? {
            None => None,
            Some(list) => {
                let mut out: Vec<San> = Vec::new();
                for s in list.iter().filter(|s| !s.trim().is_empty()) {
                    let san = s
                        .parse::<San>()
                        .map_err(|e| TaskError::bad_arg("sans", e.to_string()))?;
                    if !out.contains(&san) {
                        out.push(san);
                    }
                }
                Some(out)
            }
        };
        let key_type = match a.opt_str("key-type")? {
            None => None,
            Some(k) => Some(
                k.parse::<KeyType>()
                    .map_err(|e| TaskError::bad_arg("key-type", e.to_string()))?,
            ),
        };
        let key_location = a.choice("key-location")?;
        Ok(PkiCertSpec {
            ca: ca_naming.paths(&a.str("ca-dir")?, &ca_name),
            paths: naming.paths(&dest, &name),
            name,
            dest,
            csr: a.bool("csr")?,
            profile,
            usages,
            client_auth: a.bool("client-auth")?,
            sans,
            subject: Subject {
                cn: a.opt_str("cn")?.unwrap_or_default(),
                c: a.opt_str("c")?,
                st: a.opt_str("st")?,
                l: a.opt_str("l")?,
                o: a.opt_str("o")?,
                ou: a.opt_str("ou")?,
            },
            key_type,
            expiry: duration_arg(a, "expiry")?,
            renew_before: duration_arg(a, "renew-before")?.unwrap_or(RENEW_BEFORE),
            key_location,
            owner: a.opt_str("owner")?,
            group: a.opt_str("group")?,
            cfssl_config: a.opt_str("cfssl-config")?,
            cfssl_profile: a.opt_str("cfssl-profile")?,
            cfssl_csr: a.opt_str("cfssl-csr")?,
        })
    }

    async fn check(&self, spec: &PkiCertSpec, cx: &TaskCx<'_>) -> Result<Check<CertPlan>, TaskError> {
        let req = request(spec, cx)?;
        let ca = load_ca(spec, cx).await?;
        let now = OffsetDateTime::now_utc();
        let cert_path = &spec.paths.cert;

        let cert_pem = match cx.conn.read_file(cert_path).await? {
            None => None,
            Some(bytes) => Some(utf8(bytes, cert_path)?),
        };
        let existing = match &cert_pem {
            None => None,
            Some(pem) => Some(inspect(pem, cert_path).map_err(TaskError::from)?),
        };
        let key_stat = cx.conn.stat(&spec.paths.key).await?;
        let (reasons, before) = match &existing {
            None => {
                let mut r = vec![Reason::CertMissing];
                if key_stat.is_none() {
                    r.push(Reason::KeyMissing);
                } else {
                    r.push(Reason::OrphanKey);
                }
                (r, String::new())
            }
            Some(facts) => {
                let key = host_key_matches(spec, cx, facts, key_stat.as_ref()).await?;
                let signed = signed_by(cert_pem.as_deref().unwrap_or_default(), ca.cert_pem());
                let mut reasons =
                    needs_reissue(facts, key.unwrap_or(true), signed, &req, now, spec.renew_before)
                        .unwrap_or_default();
                if key.is_none() {
                    reasons.insert(0, Reason::KeyMissing);
                }
                if reasons.is_empty() {
                    // The certificate stays; its files' modes and owners must be right too.
                    let mut fixes = Vec::new();
                    if let Some(st) = &key_stat {
                        fixes.extend(attr_fix(&spec.paths.key, st, 0o600, spec));
                    }
                    let mut others = vec![(cert_path.clone(), 0o644)];
                    if spec.csr {
                        others.push((spec.paths.csr.clone(), 0o644));
                    }
                    for (path, mode) in others {
                        if let Some(st) = cx.conn.stat(&path).await? {
                            fixes.extend(attr_fix(&path, &st, mode, spec));
                        }
                    }
                    if fixes.is_empty() {
                        return Ok(Check::Unchanged(Outcome::ok(facts_json(spec, facts, &[]))));
                    }
                    let summary = fixes
                        .iter()
                        .map(|f| format!("fix {}: {}", f.path, f.why.join(", ")))
                        .collect::<Vec<_>>()
                        .join("; ");
                    let plan = CertPlan::FixAttrs {
                        fixes,
                        kept: facts.clone(),
                    };
                    return Ok(Check::Change(Change::new(plan, summary)));
                }
                (reasons, facts.describe())
            }
        };
        let verb = if existing.is_some() { "reissue" } else { "issue" };
        let why: Vec<String> = reasons.iter().map(|r| r.to_string()).collect();
        let summary = format!("{verb} {cert_path}: {}", why.join("; "));
        let mut after = String::from("reasons:\n");
        for w in &why {
            after.push_str(&format!("- {w}\n"));
        }
        after.push_str(&describe_request(&req));
        after.push_str(&format!("issuer: {}\n", ca.facts().subject));
        let diff = Diff {
            path: cert_path.clone(),
            before,
            after,
        };
        Ok(Check::Change(
            Change::new(
                CertPlan::Issue {
                    request: req,
                    reasons,
                },
                summary,
            )
            .with_diff(diff),
        ))
    }

    async fn apply(&self, spec: &PkiCertSpec, plan: CertPlan, cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
        let (req, reasons) = match plan {
            CertPlan::FixAttrs { fixes, kept } => return fix_attrs(spec, &fixes, &kept, cx).await,
            CertPlan::Issue { request, reasons } => (request, reasons),
        };
        let req = &req;
        let ca = load_ca(spec, cx).await?;
        let now = OffsetDateTime::now_utc();
        let host = cx.conn.host().to_string();
        let cert_attrs = FileAttrs {
            mode: Some(0o644),
            owner: spec.owner.clone(),
            group: spec.group.clone(),
        };
        let key_attrs = FileAttrs {
            mode: Some(0o600),
            owner: spec.owner.clone(),
            group: spec.group.clone(),
        };
        let (cert_pem, csr_pem) = match spec.key_location {
            KeyLocation::Host => {
                // One round trip makes the key on the host and prints its CSR.
                let tmp_prefix = host_key::tmp_prefix(&spec.dest, &spec.name);
                let script = host_key::script(&spec.dest, &tmp_prefix, req.key_type, &req.subject);
                let out = cx.conn.exec(&Cmd::script(script).internal()).await?;
                if out.exit_code == host_key::EXIT_NO_OPENSSL {
                    return Err(no_openssl(&host));
                }
                if out.exit_code == host_key::EXIT_MKDIR {
                    return Err(TaskError::failed(format!(
                        "cannot create {} on {host}: {}",
                        spec.dest,
                        out.stderr_str().trim_end()
                    )));
                }
                if !out.success() {
                    return Err(TaskError::failed_help(
                        format!(
                            "generating the key for {} on {host} failed: {}",
                            spec.paths.key,
                            out.stderr_str().trim_end()
                        ),
                        "key-location=\"host\" needs `openssl` on the host; install it or use key-location=\"controller\"",
                    ));
                }
                let stdout = out.stdout_str();
                let (tmp, csr) = host_key::read_output(&tmp_prefix, &stdout);
                let signed = crate::pki::issue_from_csr(&ca, req, csr, &format!("CSR from {host}"), now);
                let cert = match signed {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = cx
                            .conn
                            .exec(&Cmd::argv(["rm", "-f", "--", tmp.as_str()]).internal())
                            .await;
                        return Err(e.into());
                    }
                };
                if let Some(who) = attrs::owner_group(spec.owner.as_deref(), spec.group.as_deref()) {
                    let chown = attrs::run(cx.conn, &[attrs::chown(&tmp, &who, false)], |stderr| {
                        TaskError::failed(format!("chown {who} {} on {host}: {stderr}", spec.paths.key))
                    })
                    .await;
                    if let Err(e) = chown {
                        let _ = cx
                            .conn
                            .exec(&Cmd::argv(["rm", "-f", "--", tmp.as_str()]).internal())
                            .await;
                        return Err(e);
                    }
                }
                // Key first, then the certificate: if the certificate write fails the
                // next run sees "key does not match cert" and reissues.
                let mv = cx
                    .conn
                    .exec(&Cmd::argv([
                        "mv",
                        "-f",
                        "--",
                        tmp.as_str(),
                        spec.paths.key.as_str(),
                    ]))
                    .await?;
                if !mv.success() {
                    let _ = cx
                        .conn
                        .exec(&Cmd::argv(["rm", "-f", "--", tmp.as_str()]).internal())
                        .await;
                    return Err(TaskError::failed(format!(
                        "installing {} on {host}: {}",
                        spec.paths.key,
                        mv.stderr_str().trim_end()
                    )));
                }
                (cert, csr.to_string())
            }
            KeyLocation::Controller => {
                attrs::run(cx.conn, &[attrs::mkdir(&spec.dest, None)], |stderr| {
                    TaskError::failed(format!("cannot create {} on {host}: {stderr}", spec.dest))
                })
                .await?;
                let (cert, key) = crate::pki::issue_with_new_key(&ca, req, now).map_err(TaskError::from)?;
                let csr = if spec.csr {
                    csr_for_key(req, &key).map_err(TaskError::from)?
                } else {
                    String::new()
                };
                cx.conn
                    .write_file(&spec.paths.key, key.to_pem().as_bytes(), &key_attrs)
                    .await?;
                (cert, csr)
            }
        };
        cx.conn
            .write_file(&spec.paths.cert, cert_pem.as_bytes(), &cert_attrs)
            .await?;
        if spec.csr && !csr_pem.is_empty() {
            cx.conn
                .write_file(&spec.paths.csr, csr_pem.as_bytes(), &cert_attrs)
                .await?;
        }
        let facts = inspect(&cert_pem, &spec.paths.cert).map_err(TaskError::from)?;
        let mut outcome = Outcome::changed(facts_json(spec, &facts, &reasons));
        outcome.msg = Some(format!(
            "issued {} ({})",
            spec.paths.cert,
            reasons
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ));
        Ok(outcome)
    }
}

/// chmod/chown the files of a kept certificate.
async fn fix_attrs(
    spec: &PkiCertSpec,
    fixes: &[AttrFix],
    kept: &CertFacts,
    cx: &TaskCx<'_>,
) -> Result<Outcome, TaskError> {
    for fix in fixes {
        let mut steps = vec![attrs::chmod(&fix.path, fix.mode)];
        if let Some(who) = attrs::owner_group(fix.owner.as_deref(), fix.group.as_deref()) {
            steps.push(attrs::chown(&fix.path, &who, false));
        }
        attrs::run(cx.conn, &steps, |stderr| {
            TaskError::failed(format!("could not fix mode/owner of {}: {stderr}", fix.path))
        })
        .await?;
    }
    let mut outcome = Outcome::changed(facts_json(spec, kept, &[]));
    outcome.msg = Some(
        fixes
            .iter()
            .map(|f| format!("fixed {}: {}", f.path, f.why.join(", ")))
            .collect::<Vec<_>>()
            .join("; "),
    );
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::pki_ca::PkiCa;
    use crate::modules::testing::{FakeHost, args};

    async fn host_with_ca() -> FakeHost {
        let host = FakeHost::new();
        host.run(
            &PkiCa,
            args(r#"{"dir": "pki", "cn": "etcd CA", "key-type": "ecdsa-p256"}"#),
        )
        .await
        .unwrap();
        host
    }

    fn cert_args(extra: &str) -> crate::module::Args {
        args(&format!(
            r#"{{"name": "server", "ca-dir": "pki", "dest": "/etc/etcd", "profile": "server", "key-location": "controller", "sans": ["127.0.0.1", "localhost"]{extra}}}"#
        ))
    }

    #[tokio::test]
    async fn issues_then_keeps_then_reissues_on_a_new_san() {
        let host = host_with_ca().await;
        let out = host.run(&PkiCert, cert_args("")).await.unwrap();
        assert!(out.changed);
        assert_eq!(out.data["reasons"], json!(["certificate missing", "key missing"]));
        assert_eq!(host.file("/etc/etcd/server-key.pem").unwrap().mode, 0o600);
        assert_eq!(host.file("/etc/etcd/server.pem").unwrap().mode, 0o644);

        let again = host.run(&PkiCert, cert_args("")).await.unwrap();
        assert!(!again.changed, "{:?}", again.data);
        assert_eq!(again.data["serial"], out.data["serial"]);

        let a = args(
            r#"{"name": "server", "ca-dir": "pki", "dest": "/etc/etcd", "profile": "server", "key-location": "controller", "sans": ["127.0.0.1", "localhost", "10.1.1.204"]}"#,
        );
        let (summary, diffs) = host.check(&PkiCert, a.clone()).await.unwrap().unwrap();
        assert_eq!(summary, "reissue /etc/etcd/server.pem: SAN 10.1.1.204 missing");
        assert_eq!(diffs, 1);
        let out = host.run(&PkiCert, a).await.unwrap();
        assert!(out.changed);
        assert_eq!(out.data["sans"], json!(["127.0.0.1", "localhost", "10.1.1.204"]));
    }

    #[tokio::test]
    async fn diff_lists_reasons_and_never_key_material() {
        let host = host_with_ca().await;
        host.run(&PkiCert, cert_args("")).await.unwrap();
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
        let spec = PkiCert
            .decode(&Reader::new(&SPEC, &cert_args(r#", "client-auth": true"#)))
            .unwrap();
        let Check::Change(change) = PkiCert.check(&spec, &cx).await.unwrap() else {
            panic!("expected a change")
        };
        assert_eq!(
            change.summary,
            "reissue /etc/etcd/server.pem: usage client auth missing"
        );
        let diff = &change.diffs[0];
        assert!(
            diff.before
                .contains("usages: digital signature, key encipherment, server auth"),
            "{}",
            diff.before
        );
        assert!(
            diff.after.starts_with("reasons:\n- usage client auth missing\n"),
            "{}",
            diff.after
        );
        for text in [&diff.before, &diff.after] {
            assert!(!text.contains("PRIVATE KEY"));
        }
    }

    #[tokio::test]
    async fn a_loosened_key_mode_is_fixed_without_reissuing() {
        let host = host_with_ca().await;
        let first = host.run(&PkiCert, cert_args("")).await.unwrap();
        host.set_mode("/etc/etcd/server-key.pem", 0o644);
        let (summary, _) = host.check(&PkiCert, cert_args("")).await.unwrap().unwrap();
        assert_eq!(summary, "fix /etc/etcd/server-key.pem: mode 0644, wanted 0600");
        let out = host.run(&PkiCert, cert_args("")).await.unwrap();
        assert!(out.changed);
        assert_eq!(
            out.data["serial"], first.data["serial"],
            "the certificate is kept"
        );
        assert!(
            host.commands()
                .iter()
                .any(|c| c == "sh -c 'chmod 0600 -- /etc/etcd/server-key.pem'"),
            "{:?}",
            host.commands()
        );
    }

    #[tokio::test]
    async fn an_orphan_key_is_named_and_a_missing_openssl_is_clear() {
        let host = host_with_ca().await;
        host.put_file("/etc/etcd/server-key.pem", b"old key");
        let (summary, _) = host.check(&PkiCert, cert_args("")).await.unwrap().unwrap();
        assert_eq!(
            summary,
            "issue /etc/etcd/server.pem: certificate missing; the key without a certificate is replaced"
        );
        // key-location=host on a host without openssl: the script exits 127.
        host.answer("sh -c", 127, "", "");
        let a = args(r#"{"name": "peer", "ca-dir": "pki", "dest": "/etc/etcd", "profile": "peer"}"#);
        let err = host.run(&PkiCert, a).await.unwrap_err();
        assert_eq!(err.to_string(), "`openssl` is not installed on fake01");
        assert!(host.file("/etc/etcd/peer.pem").is_none());
    }

    #[tokio::test]
    async fn corrupt_certificate_is_an_error_and_left_alone() {
        let host = host_with_ca().await;
        host.put_file(
            "/etc/etcd/server.pem",
            b"-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
        );
        let err = host.run(&PkiCert, cert_args("")).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/etc/etcd/server.pem: not a PEM certificate"),
            "{err}"
        );
        assert!(host.file("/etc/etcd/server-key.pem").is_none());
        assert!(
            host.file("/etc/etcd/server.pem")
                .unwrap()
                .content
                .starts_with(b"-----BEGIN CERTIFICATE-----\ngarbage")
        );
    }

    #[tokio::test]
    async fn missing_ca_and_missing_usages_are_clear() {
        let host = FakeHost::new();
        let err = host.run(&PkiCert, cert_args("")).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("CA file pki/ca.pem not found on the controller"),
            "{err}"
        );
        let a = args(r#"{"name": "x", "ca-dir": "pki", "dest": "/d"}"#);
        let err = host.run(&PkiCert, a).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("say what the certificate is for with exactly one of"),
            "{err}"
        );
    }
}
