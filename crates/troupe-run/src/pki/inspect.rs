//! Facts read back from a certificate, and the one decision idempotency rests on:
//! keep the certificate on the host, or reissue it — and why, in words an operator
//! reads in `--check` output ("SAN 10.1.1.204 missing", "expires in 12 days
//! (renew-before 30d)"). Never looks at private keys beyond "does it match".

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

use super::PkiError;
use super::issue::{CertRequest, ExtUsage, KeyUsage, San, Subject, Usages};
use super::keys::describe_spki;

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub cn: String,
    /// `C=US, ST=San Francisco, L=CA, CN=etcd0`, in certificate order.
    pub subject: String,
    pub subject_fields: Subject,
    pub issuer: String,
    pub sans: Vec<San>,
    /// Other SAN kinds (e-mail, URI, an empty DNS name as cfssl writes for `""`), shown.
    pub other_sans: Vec<String>,
    /// `rsa-2048`, `ecdsa-p256`, … or a description of another key type.
    pub key_type: String,
    pub usages: Usages,
    /// Extended key usage OIDs troupe has no name for.
    pub other_ext_usages: Vec<String>,
    pub is_ca: bool,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Lower-case hex, no separators.
    pub serial: String,
    pub ski: Option<Vec<u8>>,
    pub aki: Option<Vec<u8>>,
    /// DER SubjectPublicKeyInfo, to compare with a key.
    pub spki_der: Vec<u8>,
}

impl CertFacts {
    /// A short multi-line description for diffs and `--check`: no key material.
    pub fn describe(&self) -> String {
        let sans: Vec<String> = self
            .sans
            .iter()
            .map(|s| s.to_string())
            .chain(self.other_sans.iter().cloned())
            .collect();
        let mut out = format!(
            "subject: {}\nissuer: {}\nsans: {}\nkey: {}\nusages: {}\nnot after: {}\nserial: {}\n",
            self.subject,
            self.issuer,
            if sans.is_empty() {
                "(none)".to_string()
            } else {
                sans.join(", ")
            },
            self.key_type,
            self.usages,
            fmt_time(self.not_after),
            self.serial,
        );
        if self.is_ca {
            out.push_str("CA: true\n");
        }
        out
    }
}

pub(crate) fn fmt_time(t: OffsetDateTime) -> String {
    let f = time::format_description::well_known::Rfc3339;
    t.replace_nanosecond(0)
        .map(|t| t.format(&f).unwrap_or_default())
        .unwrap_or_default()
}

fn parse_pem_cert(cert_pem: &str, source_name: &str) -> Result<Vec<u8>, PkiError> {
    let bad = |detail: String| PkiError::BadCert {
        source_name: source_name.to_string(),
        detail,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| bad(format!("no PEM block ({e})")))?;
    if pem.label != "CERTIFICATE" {
        return Err(bad(format!("PEM block is `{}`, not CERTIFICATE", pem.label)));
    }
    Ok(pem.contents)
}

fn name_parts(name: &X509Name<'_>) -> (Vec<(String, String)>, Subject) {
    let mut parts = Vec::new();
    let mut subject = Subject::default();
    for attr in name.iter_attributes() {
        let oid = attr.attr_type().to_id_string();
        let value = attr
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|_| "(binary)".into());
        let key = match oid.as_str() {
            "2.5.4.6" => {
                subject.c = Some(value.clone());
                "C"
            }
            "2.5.4.8" => {
                subject.st = Some(value.clone());
                "ST"
            }
            "2.5.4.7" => {
                subject.l = Some(value.clone());
                "L"
            }
            "2.5.4.10" => {
                subject.o = Some(value.clone());
                "O"
            }
            "2.5.4.11" => {
                subject.ou = Some(value.clone());
                "OU"
            }
            "2.5.4.3" => {
                subject.cn = value.clone();
                "CN"
            }
            _ => {
                parts.push((oid.clone(), value));
                continue;
            }
        };
        parts.push((key.to_string(), value));
    }
    (parts, subject)
}

fn join_name(parts: &[(String, String)]) -> String {
    parts
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Read the facts of a PEM certificate; `source_name` names the file in errors.
pub fn inspect(cert_pem: &str, source_name: &str) -> Result<CertFacts, PkiError> {
    let der = parse_pem_cert(cert_pem, source_name)?;
    let bad = |detail: String| PkiError::BadCert {
        source_name: source_name.to_string(),
        detail,
    };
    let (_, cert) = X509Certificate::from_der(&der).map_err(|e| bad(e.to_string()))?;

    let (subject_parts, subject_fields) = name_parts(cert.subject());
    let (issuer_parts, _) = name_parts(cert.issuer());

    let mut sans = Vec::new();
    let mut other_sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for gn in &ext.value.general_names {
            match gn {
                GeneralName::DNSName(d) => match d.parse::<San>() {
                    Ok(s) => sans.push(s),
                    Err(_) => other_sans.push(format!("DNS:{d:?}")),
                },
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => sans.push(San::Ip(IpAddr::from(<[u8; 4]>::try_from(*bytes).unwrap()))),
                    16 => sans.push(San::Ip(IpAddr::from(<[u8; 16]>::try_from(*bytes).unwrap()))),
                    _ => other_sans.push(format!("IP:{}", hex::encode(bytes))),
                },
                other => other_sans.push(format!("{other:?}")),
            }
        }
    }

    let mut usages = Usages::default();
    if let Ok(Some(ku)) = cert.key_usage() {
        let ku = ku.value;
        for (on, u) in [
            (ku.digital_signature(), KeyUsage::DigitalSignature),
            (ku.non_repudiation(), KeyUsage::ContentCommitment),
            (ku.key_encipherment(), KeyUsage::KeyEncipherment),
            (ku.data_encipherment(), KeyUsage::DataEncipherment),
            (ku.key_agreement(), KeyUsage::KeyAgreement),
            (ku.key_cert_sign(), KeyUsage::CertSign),
            (ku.crl_sign(), KeyUsage::CrlSign),
        ] {
            if on {
                usages.key.insert(u);
            }
        }
    }
    let mut other_ext_usages = Vec::new();
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let eku = eku.value;
        for (on, u) in [
            (eku.server_auth, ExtUsage::ServerAuth),
            (eku.client_auth, ExtUsage::ClientAuth),
            (eku.code_signing, ExtUsage::CodeSigning),
            (eku.email_protection, ExtUsage::EmailProtection),
            (eku.time_stamping, ExtUsage::TimeStamping),
            (eku.ocsp_signing, ExtUsage::OcspSigning),
            (eku.any, ExtUsage::Any),
        ] {
            if on {
                usages.ext.insert(u);
            }
        }
        other_ext_usages = eku.other.iter().map(|o| o.to_id_string()).collect();
    }
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);

    let mut ski = None;
    let mut aki = None;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(k.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                aki = a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => {}
        }
    }

    let ts = |t: i64| OffsetDateTime::from_unix_timestamp(t).map_err(|e| bad(e.to_string()));
    let spki_der = cert.public_key().raw.to_vec();
    Ok(CertFacts {
        cn: subject_fields.cn.clone(),
        subject: join_name(&subject_parts),
        subject_fields,
        issuer: join_name(&issuer_parts),
        sans,
        other_sans,
        key_type: describe_spki(&spki_der),
        usages,
        other_ext_usages,
        is_ca,
        not_before: ts(cert.validity().not_before.timestamp())?,
        not_after: ts(cert.validity().not_after.timestamp())?,
        serial: hex::encode(cert.raw_serial()),
        ski,
        aki,
        spki_der,
    })
}

/// Whether `cert_pem` was issued by the CA in `ca_pem`: the issuer name is the CA's
/// subject, byte for byte, and the CA's key verifies the signature. Unparsable input
/// is simply "no".
pub fn signed_by(cert_pem: &str, ca_pem: &str) -> bool {
    let (Ok(cert_der), Ok(ca_der)) = (parse_pem_cert(cert_pem, "cert"), parse_pem_cert(ca_pem, "ca")) else {
        return false;
    };
    let (Ok((_, cert)), Ok((_, ca))) = (
        X509Certificate::from_der(&cert_der),
        X509Certificate::from_der(&ca_der),
    ) else {
        return false;
    };
    cert.issuer().as_raw() == ca.subject().as_raw() && cert.verify_signature(Some(ca.public_key())).is_ok()
}

/// Why a certificate must be (re)issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    CertMissing,
    KeyMissing,
    /// A key without its certificate: replaced by the new key.
    OrphanKey,
    KeyMismatch,
    ForeignCa {
        issuer: String,
    },
    SanMissing(San),
    SanExtra(String),
    CnDiffers {
        have: String,
        want: String,
    },
    SubjectDiffers {
        have: String,
        want: String,
    },
    KeyType {
        have: String,
        want: String,
    },
    UsageMissing(&'static str),
    UsageExtra(String),
    IsCa,
    NotYetValid {
        from: OffsetDateTime,
    },
    Expired {
        days_ago: i64,
    },
    ExpiresSoon {
        days: i64,
        renew_before: Duration,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::CertMissing => f.write_str("certificate missing"),
            Reason::KeyMissing => f.write_str("key missing"),
            Reason::OrphanKey => f.write_str("the key without a certificate is replaced"),
            Reason::KeyMismatch => f.write_str("key does not match cert"),
            Reason::ForeignCa { issuer } => write!(f, "signed by another CA ({issuer})"),
            Reason::SanMissing(s) => write!(f, "SAN {s} missing"),
            Reason::SanExtra(s) => write!(f, "SAN {s} not requested"),
            Reason::CnDiffers { have, want } => write!(f, "CN {have}, wanted {want}"),
            Reason::SubjectDiffers { have, want } => write!(f, "subject {have}, wanted {want}"),
            Reason::KeyType { have, want } => write!(f, "key type {have}, wanted {want}"),
            Reason::UsageMissing(u) => write!(f, "usage {u} missing"),
            Reason::UsageExtra(u) => write!(f, "usage {u} not requested"),
            Reason::IsCa => f.write_str("is a CA certificate, wanted a leaf"),
            Reason::NotYetValid { from } => write!(f, "not valid before {}", fmt_time(*from)),
            Reason::Expired { days_ago } => write!(f, "expired {days_ago} days ago"),
            Reason::ExpiresSoon { days, renew_before } => {
                write!(
                    f,
                    "expires in {days} days (renew-before {})",
                    super::fmt_days(*renew_before)
                )
            }
        }
    }
}

/// Compare an existing certificate with the request. `None`: keep it. `Some(reasons)`:
/// reissue, each reason one line for the operator.
pub fn needs_reissue(
    existing: &CertFacts,
    key_matches: bool,
    signed_by_ca: bool,
    req: &CertRequest,
    now: OffsetDateTime,
    renew_before: Duration,
) -> Option<Vec<Reason>> {
    let mut reasons = Vec::new();
    if !key_matches {
        reasons.push(Reason::KeyMismatch);
    }
    if !signed_by_ca {
        reasons.push(Reason::ForeignCa {
            issuer: existing.issuer.clone(),
        });
    }
    for san in &req.sans {
        if !existing.sans.contains(san) {
            reasons.push(Reason::SanMissing(san.clone()));
        }
    }
    for san in &existing.sans {
        if !req.sans.contains(san) {
            reasons.push(Reason::SanExtra(san.to_string()));
        }
    }
    for other in &existing.other_sans {
        reasons.push(Reason::SanExtra(other.clone()));
    }
    if existing.cn != req.subject.cn {
        reasons.push(Reason::CnDiffers {
            have: existing.cn.clone(),
            want: req.subject.cn.clone(),
        });
    } else if existing.subject_fields != req.subject {
        reasons.push(Reason::SubjectDiffers {
            have: existing.subject.clone(),
            want: req.subject.to_string(),
        });
    }
    if existing.key_type != req.key_type.as_str() {
        reasons.push(Reason::KeyType {
            have: existing.key_type.clone(),
            want: req.key_type.to_string(),
        });
    }
    for u in req.usages.names() {
        if !existing.usages.names().contains(&u) {
            reasons.push(Reason::UsageMissing(u));
        }
    }
    for u in existing.usages.names() {
        if !req.usages.names().contains(&u) {
            reasons.push(Reason::UsageExtra(u.to_string()));
        }
    }
    for oid in &existing.other_ext_usages {
        reasons.push(Reason::UsageExtra(oid.clone()));
    }
    if existing.is_ca {
        reasons.push(Reason::IsCa);
    }
    if existing.not_before > now {
        reasons.push(Reason::NotYetValid {
            from: existing.not_before,
        });
    }
    let left = existing.not_after - now;
    if left.is_negative() || left.is_zero() {
        reasons.push(Reason::Expired {
            days_ago: (-left).whole_days(),
        });
    } else if left < renew_before {
        reasons.push(Reason::ExpiresSoon {
            days: left.whole_days(),
            renew_before,
        });
    }
    if reasons.is_empty() { None } else { Some(reasons) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::issue::{CaRequest, DEFAULT_EXPIRY, Profile, create_ca, issue_with_new_key};
    use crate::pki::keys::{KeyType, key_matches};

    const DAY: Duration = Duration::from_secs(86_400);

    fn setup() -> (crate::pki::Ca, CertRequest, String, crate::pki::PrivateKey) {
        let ca = create_ca(
            &CaRequest {
                subject: Subject::cn("test CA"),
                key_type: KeyType::EcdsaP256,
                expiry: DEFAULT_EXPIRY,
            },
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        let req = CertRequest::new("etcd0", Profile::Server, vec!["127.0.0.1".parse().unwrap()]);
        let (pem, key) = issue_with_new_key(&ca, &req, OffsetDateTime::now_utc()).unwrap();
        (ca, req, pem, key)
    }

    fn reasons(
        ca: &crate::pki::Ca,
        req: &CertRequest,
        pem: &str,
        key: &crate::pki::PrivateKey,
        now: OffsetDateTime,
    ) -> Vec<String> {
        let facts = inspect(pem, "server.pem").unwrap();
        needs_reissue(
            &facts,
            key_matches(key, &facts.spki_der),
            signed_by(pem, ca.cert_pem()),
            req,
            now,
            30 * DAY,
        )
        .unwrap_or_default()
        .iter()
        .map(|r| r.to_string())
        .collect()
    }

    #[test]
    fn a_matching_cert_is_kept() {
        let (ca, req, pem, key) = setup();
        assert_eq!(
            reasons(&ca, &req, &pem, &key, OffsetDateTime::now_utc()),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_difference_is_named() {
        let (ca, mut req, pem, key) = setup();
        req.sans.push("10.1.1.204".parse().unwrap());
        req.key_type = KeyType::Rsa2048;
        req.usages = Profile::Peer.usages();
        req.subject.cn = "etcd1".into();
        let got = reasons(&ca, &req, &pem, &key, OffsetDateTime::now_utc());
        assert_eq!(
            got,
            [
                "SAN 10.1.1.204 missing",
                "CN etcd0, wanted etcd1",
                "key type ecdsa-p256, wanted rsa-2048",
                "usage client auth missing"
            ]
        );
    }

    #[test]
    fn renewal_window_expiry_foreign_ca_and_wrong_key() {
        let (ca, req, pem, key) = setup();
        let soon = OffsetDateTime::now_utc() + (DEFAULT_EXPIRY - 12 * DAY) - Duration::from_secs(3600);
        assert_eq!(
            reasons(&ca, &req, &pem, &key, soon),
            ["expires in 12 days (renew-before 30d)"]
        );
        let later = OffsetDateTime::now_utc() + DEFAULT_EXPIRY + 3 * DAY + Duration::from_secs(3600);
        assert_eq!(reasons(&ca, &req, &pem, &key, later), ["expired 3 days ago"]);

        let (other_ca, _, _, other_key) = setup();
        let got = reasons(&other_ca, &req, &pem, &other_key, OffsetDateTime::now_utc());
        assert_eq!(
            got,
            ["key does not match cert", "signed by another CA (CN=test CA)"]
        );
    }

    #[test]
    fn corrupt_pem_names_the_file() {
        let err = inspect(
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            "/etc/etcd/server.pem",
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/etc/etcd/server.pem: not a PEM certificate"),
            "{err}"
        );
    }
}
