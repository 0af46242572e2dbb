//! Import of an existing cfssl set-up: `ca-config.json` (signing profiles with usages
//! and expiry) and CSR JSON (`ca-csr.json`, `server.json`, `peerN.json`…), so an
//! operator can switch to troupe without rewriting them. Where cfssl silently ignores
//! a mistake — a misspelt usage, an unknown profile, an unsupported key — troupe stops
//! with an error naming the file and pointing at the value.
//!
//! Like cfssl, a repeated key inside `names` (the seed's `"OU": "Org Unit 1", "OU":
//! "Org Unit 2"`) keeps the last value. Deliberate difference, documented in
//! docs/pki.md: an empty host (`"hosts": [""]`) adds no SAN, where cfssl writes an
//! empty DNS name.

use std::time::Duration;

use indexmap::IndexMap;
use miette::{NamedSource, SourceSpan};
use serde::Deserialize;
use serde::de::{MapAccess, Visitor};

use super::issue::{CaRequest, CertRequest, DEFAULT_EXPIRY, San, Subject, Usages};
use super::keys::KeyType;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CfsslError {
    #[error("{path}: invalid cfssl JSON: {detail}")]
    #[diagnostic(
        code(troupe::pki::cfssl::json),
        help("fix the JSON syntax; cfssl's own examples are in the seed post")
    )]
    Json {
        path: String,
        detail: String,
        #[source_code]
        src: NamedSource<String>,
        #[label("here")]
        span: Option<SourceSpan>,
    },

    #[error("{path}: {what} `{value}` is not supported")]
    #[diagnostic(code(troupe::pki::cfssl::unsupported), help("{help}"))]
    Unsupported {
        path: String,
        what: &'static str,
        value: String,
        help: String,
        #[source_code]
        src: NamedSource<String>,
        #[label("cfssl would silently ignore this; troupe refuses")]
        span: Option<SourceSpan>,
    },

    #[error("{path}: no profile `{profile}` in signing.profiles")]
    #[diagnostic(
        code(troupe::pki::cfssl::unknown_profile),
        help("profiles in this file: {known}")
    )]
    UnknownProfile {
        path: String,
        profile: String,
        known: String,
    },
}

fn find_span(src: &str, value: &str) -> Option<SourceSpan> {
    let quoted = format!("\"{value}\"");
    src.find(&quoted).map(|at| SourceSpan::from((at, quoted.len())))
}

fn json_err(path: &str, src: &str, e: serde_json::Error) -> CfsslError {
    // serde_json gives a 1-based line and column; turn it into a byte offset.
    let span = (e.line() > 0).then(|| {
        let line_start: usize = src.split_inclusive('\n').take(e.line() - 1).map(str::len).sum();
        SourceSpan::from((line_start + e.column().saturating_sub(1), 1))
    });
    CfsslError::Json {
        path: path.to_string(),
        detail: e.to_string(),
        src: NamedSource::new(path, src.to_string()),
        span,
    }
}

fn unsupported(
    path: &str,
    src: &str,
    what: &'static str,
    value: &str,
    help: impl Into<String>,
) -> CfsslError {
    CfsslError::Unsupported {
        path: path.to_string(),
        what,
        value: value.to_string(),
        help: help.into(),
        src: NamedSource::new(path, src.to_string()),
        span: find_span(src, value),
    }
}

/// One signing policy: `signing.default` or a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CfsslPolicy {
    pub usages: Usages,
    pub expiry: Duration,
}

/// A parsed `ca-config.json`.
#[derive(Debug, Clone)]
pub struct CfsslConfig {
    pub path: String,
    pub default: CfsslPolicy,
    pub profiles: IndexMap<String, CfsslPolicy>,
}

#[derive(Deserialize)]
struct RawConfig {
    signing: RawSigning,
}

#[derive(Deserialize)]
struct RawSigning {
    #[serde(default)]
    default: Option<RawPolicy>,
    #[serde(default)]
    profiles: IndexMap<String, RawPolicy>,
}

#[derive(Deserialize, Default)]
struct RawPolicy {
    #[serde(default)]
    usages: Vec<String>,
    #[serde(default)]
    expiry: Option<String>,
}

/// cfssl's defaults when a policy names no usages: signing, key encipherment, server
/// auth, client auth (`config.DefaultConfig`).
fn cfssl_default_usages() -> Vec<String> {
    ["signing", "key encipherment", "server auth", "client auth"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn policy(
    path: &str,
    src: &str,
    raw: &RawPolicy,
    fallback_expiry: Duration,
) -> Result<CfsslPolicy, CfsslError> {
    let names = if raw.usages.is_empty() {
        cfssl_default_usages()
    } else {
        raw.usages.clone()
    };
    let mut usages = Usages::default();
    for name in &names {
        usages.add(name).map_err(|_| {
            unsupported(
                path,
                src,
                "usage",
                name,
                "usages troupe knows: signing, digital signature, key encipherment, content commitment, data encipherment, key agreement, cert sign, crl sign, server auth, client auth, code signing, email protection, s/mime, timestamping, ocsp signing, any",
            )
        })?;
    }
    let expiry = match &raw.expiry {
        None => fallback_expiry,
        Some(text) => super::parse_duration(text).ok_or_else(|| {
            unsupported(
                path,
                src,
                "expiry",
                text,
                "write a Go-style duration such as \"43800h\" (5 years) or \"8760h\"",
            )
        })?,
    };
    Ok(CfsslPolicy { usages, expiry })
}

impl CfsslConfig {
    /// Parse a `ca-config.json`; `path` names it in errors.
    pub fn parse(src: &str, path: &str) -> Result<CfsslConfig, CfsslError> {
        let raw: RawConfig = serde_json::from_str(src).map_err(|e| json_err(path, src, e))?;
        let default_raw = raw.signing.default.unwrap_or_default();
        // cfssl's built-in default is one year (8760h) when the file names none.
        let default = policy(path, src, &default_raw, Duration::from_secs(8760 * 3600))?;
        let mut profiles = IndexMap::new();
        for (name, p) in &raw.signing.profiles {
            profiles.insert(name.clone(), policy(path, src, p, default.expiry)?);
        }
        Ok(CfsslConfig {
            path: path.to_string(),
            default,
            profiles,
        })
    }

    /// The named profile; an unknown name is an error (cfssl falls back to the default).
    pub fn profile(&self, name: &str) -> Result<&CfsslPolicy, CfsslError> {
        self.profiles.get(name).ok_or_else(|| CfsslError::UnknownProfile {
            path: self.path.clone(),
            profile: name.to_string(),
            known: self.profiles.keys().cloned().collect::<Vec<_>>().join(", "),
        })
    }
}

/// A parsed cfssl CSR JSON (`ca-csr.json`, `server.json`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CfsslCsr {
    pub subject: Subject,
    pub hosts: Vec<San>,
    pub key_type: KeyType,
    /// `ca.expiry` of a CA CSR (cfssl's `-initca` default is 5 years).
    pub ca_expiry: Option<Duration>,
}

#[derive(Deserialize)]
struct RawCsr {
    #[serde(rename = "CN", default)]
    cn: String,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    key: Option<RawKey>,
    #[serde(default)]
    names: Vec<RawName>,
    #[serde(default)]
    ca: Option<RawCaConfig>,
}

#[derive(Deserialize)]
struct RawKey {
    algo: String,
    size: u32,
}

#[derive(Deserialize)]
struct RawCaConfig {
    #[serde(default)]
    expiry: Option<String>,
}

/// One `names` object, entries in file order (a repeated key is seen twice; the last wins).
#[derive(Default)]
struct RawName(Vec<(String, String)>);

impl<'de> Deserialize<'de> for RawName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawName;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of C, ST, L, O, OU")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawName, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    out.push((k, v));
                }
                Ok(RawName(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl CfsslCsr {
    /// Parse a cfssl CSR JSON; `path` names it in errors.
    pub fn parse(src: &str, path: &str) -> Result<CfsslCsr, CfsslError> {
        let raw: RawCsr = serde_json::from_str(src).map_err(|e| json_err(path, src, e))?;
        let key_type = match &raw.key {
            // cfssl's default key request is ECDSA P-256.
            None => KeyType::EcdsaP256,
            Some(k) => match (k.algo.as_str(), k.size) {
                ("rsa", 2048) => KeyType::Rsa2048,
                ("rsa", 4096) => KeyType::Rsa4096,
                ("ecdsa", 256) => KeyType::EcdsaP256,
                ("ecdsa", 384) => KeyType::EcdsaP384,
                ("ed25519", _) => KeyType::Ed25519,
                ("rsa" | "ecdsa", size) => {
                    return Err(unsupported(
                        path,
                        src,
                        "key size",
                        &format!("{} {size}", k.algo),
                        "troupe issues rsa 2048/4096, ecdsa 256/384 and ed25519",
                    )
                    .with_span(find_number_span(src, size)));
                }
                (algo, _) => {
                    return Err(unsupported(
                        path,
                        src,
                        "key algorithm",
                        algo,
                        "use \"rsa\", \"ecdsa\" or \"ed25519\"",
                    ));
                }
            },
        };
        let mut subject = Subject {
            cn: raw.cn.clone(),
            ..Subject::default()
        };
        for name in &raw.names {
            for (k, v) in &name.0 {
                match k.as_str() {
                    "C" => subject.c = Some(v.clone()),
                    "ST" => subject.st = Some(v.clone()),
                    "L" => subject.l = Some(v.clone()),
                    "O" => subject.o = Some(v.clone()),
                    "OU" => subject.ou = Some(v.clone()),
                    other => {
                        return Err(unsupported(
                            path,
                            src,
                            "name field",
                            other,
                            "names objects hold C, ST, L, O and OU",
                        ));
                    }
                }
            }
        }
        let mut hosts = Vec::new();
        for h in &raw.hosts {
            if h.trim().is_empty() {
                continue; // cfssl would write an empty DNS SAN
            }
            let san = h
                .parse::<San>()
                .map_err(|_| unsupported(path, src, "host", h, "hosts are IP addresses or DNS names"))?;
            if !hosts.contains(&san) {
                hosts.push(san);
            }
        }
        let ca_expiry = match raw.ca.and_then(|c| c.expiry) {
            None => None,
            Some(text) => Some(super::parse_duration(&text).ok_or_else(|| {
                unsupported(
                    path,
                    src,
                    "ca.expiry",
                    &text,
                    "write a Go-style duration such as \"43800h\"",
                )
            })?),
        };
        Ok(CfsslCsr {
            subject,
            hosts,
            key_type,
            ca_expiry,
        })
    }

    /// Expiry of a CA made from this CSR: `ca.expiry`, else cfssl's five years.
    pub fn ca_expiry_or_default(&self) -> Duration {
        self.ca_expiry.unwrap_or(DEFAULT_EXPIRY)
    }

    /// What `cfssl gencert -initca THIS.json` makes.
    pub fn ca_request(&self) -> CaRequest {
        CaRequest {
            subject: self.subject.clone(),
            key_type: self.key_type,
            expiry: self.ca_expiry_or_default(),
        }
    }

    /// What `cfssl gencert -config … -profile P THIS.json` makes, `policy` being P.
    pub fn cert_request(&self, policy: &CfsslPolicy) -> CertRequest {
        CertRequest {
            subject: self.subject.clone(),
            sans: self.hosts.clone(),
            key_type: self.key_type,
            usages: policy.usages.clone(),
            expiry: policy.expiry,
        }
    }
}

fn find_number_span(src: &str, n: u32) -> Option<SourceSpan> {
    let at = src.find("\"size\"")?;
    let rest = &src[at..];
    let num = n.to_string();
    let off = rest.find(&num)?;
    Some(SourceSpan::from((at + off, num.len())))
}

impl CfsslError {
    fn with_span(mut self, new: Option<SourceSpan>) -> Self {
        if let CfsslError::Unsupported { span, .. } = &mut self
            && new.is_some()
        {
            *span = new;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::issue::Profile;

    const SEED_CONFIG: &str = include_str!("../../../../tests/fixtures/cfssl/ca-config.json");
    const SEED_CA_CSR: &str = include_str!("../../../../tests/fixtures/cfssl/ca-csr.json");
    const SEED_SERVER: &str = include_str!("../../../../tests/fixtures/cfssl/server.json");
    const SEED_CLIENT: &str = include_str!("../../../../tests/fixtures/cfssl/client.json");

    #[test]
    fn seed_ca_config_has_the_three_profiles() {
        let cfg = CfsslConfig::parse(SEED_CONFIG, "ca-config.json").unwrap();
        let five_years = Duration::from_secs(43_800 * 3600);
        assert_eq!(
            cfg.profile("server").unwrap(),
            &CfsslPolicy {
                usages: Profile::Server.usages(),
                expiry: five_years
            }
        );
        assert_eq!(cfg.profile("client").unwrap().usages, Profile::Client.usages());
        assert_eq!(cfg.profile("peer").unwrap().usages, Profile::Peer.usages());
        let err = cfg.profile("etcd").unwrap_err();
        assert_eq!(
            err.to_string(),
            "ca-config.json: no profile `etcd` in signing.profiles"
        );
        insta::assert_snapshot!("unknown_profile", render(&err));
    }

    #[test]
    fn seed_csrs_import() {
        let ca = CfsslCsr::parse(SEED_CA_CSR, "ca-csr.json").unwrap();
        assert_eq!(ca.key_type, KeyType::Rsa2048);
        assert_eq!(
            ca.subject.to_string(),
            "C=US, ST=San Francisco, L=CA, O=My Company Name, OU=Org Unit 2, CN=My own CA"
        );
        let server = CfsslCsr::parse(SEED_SERVER, "server.json").unwrap();
        assert_eq!(server.key_type, KeyType::EcdsaP256);
        assert_eq!(server.hosts.len(), 5);
        assert_eq!(server.subject.cn, "etcd0");
        let client = CfsslCsr::parse(SEED_CLIENT, "client.json").unwrap();
        assert!(client.hosts.is_empty(), "the empty host adds no SAN");
    }

    fn render(err: &dyn miette::Diagnostic) -> String {
        let mut out = String::new();
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .with_width(100)
            .render_report(&mut out, err)
            .unwrap();
        out
    }

    #[test]
    fn misspelt_usage_is_refused_with_the_file_and_value() {
        let src = SEED_CONFIG
            .replace("\"client auth\" ]", "\"clinet auth\" ]")
            .replacen("\"client auth\"", "\"clinet auth\"", 1);
        let err = CfsslConfig::parse(&src, "ca-config.json").unwrap_err();
        assert_eq!(
            err.to_string(),
            "ca-config.json: usage `clinet auth` is not supported"
        );
        insta::assert_snapshot!("misspelt_usage", render(&err));
    }

    #[test]
    fn unsupported_keys_are_refused() {
        let src = SEED_SERVER.replace("\"size\": 256", "\"size\": 521");
        let err = CfsslCsr::parse(&src, "server.json").unwrap_err();
        assert_eq!(
            err.to_string(),
            "server.json: key size `ecdsa 521` is not supported"
        );
        insta::assert_snapshot!("unsupported_key_size", render(&err));
        let src = SEED_SERVER.replace("\"ecdsa\"", "\"dsa\"");
        let err = CfsslCsr::parse(&src, "server.json").unwrap_err();
        assert_eq!(
            err.to_string(),
            "server.json: key algorithm `dsa` is not supported"
        );
    }
}
