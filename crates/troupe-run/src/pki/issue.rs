//! What a certificate should be (requests, profiles, usages, SANs) and making it: the
//! CA itself and certificates signed by it. The output mirrors cfssl's so an etcd set
//! up by hand with cfssl and one set up by troupe look the same under `openssl x509`:
//! subject order C, ST, L, O, OU, CN; key usage critical; basic constraints critical
//! (CA:FALSE on leaves); subject key id = SHA-1 of the public key; authority key id =
//! the CA's subject key id; random 20-byte serials; `not_before` five minutes in the
//! past to absorb clock skew between hosts.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::prelude::FromDer;

use super::PkiError;
use super::inspect::{CertFacts, inspect};
use super::keys::{KeyType, PrivateKey, generate_key, key_id, key_matches};

/// Subject fields, as cfssl's CSR `names` carries them. One value per field: rcgen's
/// distinguished name holds one attribute of each type, and cfssl (Go's JSON decoder)
/// also keeps only the last of a repeated key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub cn: String,
    pub c: Option<String>,
    pub st: Option<String>,
    pub l: Option<String>,
    pub o: Option<String>,
    pub ou: Option<String>,
}

impl Subject {
    pub fn cn(cn: impl Into<String>) -> Self {
        Subject {
            cn: cn.into(),
            ..Subject::default()
        }
    }

    fn to_dn(&self) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        let fields: [(DnType, &Option<String>); 5] = [
            (DnType::CountryName, &self.c),
            (DnType::StateOrProvinceName, &self.st),
            (DnType::LocalityName, &self.l),
            (DnType::OrganizationName, &self.o),
            (DnType::OrganizationalUnitName, &self.ou),
        ];
        for (ty, value) in fields {
            if let Some(v) = value {
                dn.push(ty.clone(), dn_value(v));
            }
        }
        if !self.cn.is_empty() {
            dn.push(DnType::CommonName, dn_value(&self.cn));
        }
        dn
    }
}

/// PrintableString when the text allows it, like Go's encoder (cfssl); else UTF-8.
fn dn_value(s: &str) -> DnValue {
    match rcgen::string::PrintableString::try_from(s) {
        Ok(p) => DnValue::PrintableString(p),
        Err(_) => DnValue::Utf8String(s.to_string()),
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (k, v) in [
            ("C", &self.c),
            ("ST", &self.st),
            ("L", &self.l),
            ("O", &self.o),
            ("OU", &self.ou),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        }
        parts.push(format!("CN={}", self.cn));
        f.write_str(&parts.join(", "))
    }
}

/// A subject alternative name; IPs and DNS names are told apart by parsing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum San {
    Ip(IpAddr),
    Dns(String),
}

impl FromStr for San {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, PkiError> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(San::Ip(ip));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        let name = s.strip_prefix("*.").unwrap_or(s);
        if !s.is_empty() && s.len() <= 253 && name.split('.').all(label_ok) {
            Ok(San::Dns(s.to_ascii_lowercase()))
        } else {
            Err(PkiError::BadSan { value: s.to_string() })
        }
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Ip(ip) => write!(f, "{ip}"),
            San::Dns(d) => f.write_str(d),
        }
    }
}

/// X.509 key usage bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyUsage {
    DigitalSignature,
    ContentCommitment,
    KeyEncipherment,
    DataEncipherment,
    KeyAgreement,
    CertSign,
    CrlSign,
}

impl KeyUsage {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUsage::DigitalSignature => "digital signature",
            KeyUsage::ContentCommitment => "content commitment",
            KeyUsage::KeyEncipherment => "key encipherment",
            KeyUsage::DataEncipherment => "data encipherment",
            KeyUsage::KeyAgreement => "key agreement",
            KeyUsage::CertSign => "cert sign",
            KeyUsage::CrlSign => "crl sign",
        }
    }
    fn to_rcgen(self) -> KeyUsagePurpose {
        match self {
            KeyUsage::DigitalSignature => KeyUsagePurpose::DigitalSignature,
            KeyUsage::ContentCommitment => KeyUsagePurpose::ContentCommitment,
            KeyUsage::KeyEncipherment => KeyUsagePurpose::KeyEncipherment,
            KeyUsage::DataEncipherment => KeyUsagePurpose::DataEncipherment,
            KeyUsage::KeyAgreement => KeyUsagePurpose::KeyAgreement,
            KeyUsage::CertSign => KeyUsagePurpose::KeyCertSign,
            KeyUsage::CrlSign => KeyUsagePurpose::CrlSign,
        }
    }
}

/// Extended key usages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ExtUsage {
    ServerAuth,
    ClientAuth,
    CodeSigning,
    EmailProtection,
    TimeStamping,
    OcspSigning,
    Any,
}

impl ExtUsage {
    pub fn as_str(self) -> &'static str {
        match self {
            ExtUsage::ServerAuth => "server auth",
            ExtUsage::ClientAuth => "client auth",
            ExtUsage::CodeSigning => "code signing",
            ExtUsage::EmailProtection => "email protection",
            ExtUsage::TimeStamping => "timestamping",
            ExtUsage::OcspSigning => "ocsp signing",
            ExtUsage::Any => "any",
        }
    }
    fn to_rcgen(self) -> ExtendedKeyUsagePurpose {
        match self {
            ExtUsage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            ExtUsage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
            ExtUsage::CodeSigning => ExtendedKeyUsagePurpose::CodeSigning,
            ExtUsage::EmailProtection => ExtendedKeyUsagePurpose::EmailProtection,
            ExtUsage::TimeStamping => ExtendedKeyUsagePurpose::TimeStamping,
            ExtUsage::OcspSigning => ExtendedKeyUsagePurpose::OcspSigning,
            ExtUsage::Any => ExtendedKeyUsagePurpose::Any,
        }
    }
}

/// Key usages and extended key usages together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usages {
    pub key: BTreeSet<KeyUsage>,
    pub ext: BTreeSet<ExtUsage>,
}

impl Usages {
    /// Parse cfssl usage names (`signing`, `key encipherment`, `server auth`, …),
    /// rejecting anything unknown instead of dropping it as cfssl does.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Usages, PkiError> {
        let mut u = Usages::default();
        for name in names {
            u.add(name.as_ref())?;
        }
        Ok(u)
    }

    pub fn add(&mut self, name: &str) -> Result<(), PkiError> {
        let n = name.trim().to_ascii_lowercase();
        let key = match n.as_str() {
            "signing" | "digital signature" => Some(KeyUsage::DigitalSignature),
            "content commitment" => Some(KeyUsage::ContentCommitment),
            "key encipherment" => Some(KeyUsage::KeyEncipherment),
            "data encipherment" => Some(KeyUsage::DataEncipherment),
            "key agreement" => Some(KeyUsage::KeyAgreement),
            "cert sign" => Some(KeyUsage::CertSign),
            "crl sign" => Some(KeyUsage::CrlSign),
            _ => None,
        };
        if let Some(k) = key {
            self.key.insert(k);
            return Ok(());
        }
        let ext = match n.as_str() {
            "server auth" => ExtUsage::ServerAuth,
            "client auth" => ExtUsage::ClientAuth,
            "code signing" => ExtUsage::CodeSigning,
            "email protection" | "s/mime" => ExtUsage::EmailProtection,
            "timestamping" => ExtUsage::TimeStamping,
            "ocsp signing" => ExtUsage::OcspSigning,
            "any" => ExtUsage::Any,
            _ => {
                return Err(PkiError::UnknownUsage {
                    value: name.to_string(),
                });
            }
        };
        self.ext.insert(ext);
        Ok(())
    }

    /// All usage names, key usages first: `digital signature, key encipherment, server auth`.
    pub fn names(&self) -> Vec<&'static str> {
        self.key
            .iter()
            .map(|k| k.as_str())
            .chain(self.ext.iter().map(|e| e.as_str()))
            .collect()
    }
}

impl fmt::Display for Usages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(", "))
    }
}

/// The seed's three cfssl profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// digital signature, key encipherment, server auth
    Server,
    /// digital signature, key encipherment, client auth
    Client,
    /// digital signature, key encipherment, server auth, client auth
    Peer,
}

impl Profile {
    pub const NAMES: &'static [&'static str] = &["server", "client", "peer"];

    pub fn usages(self) -> Usages {
        let mut u = Usages::default();
        u.key.insert(KeyUsage::DigitalSignature);
        u.key.insert(KeyUsage::KeyEncipherment);
        match self {
            Profile::Server => {
                u.ext.insert(ExtUsage::ServerAuth);
            }
            Profile::Client => {
                u.ext.insert(ExtUsage::ClientAuth);
            }
            Profile::Peer => {
                u.ext.insert(ExtUsage::ServerAuth);
                u.ext.insert(ExtUsage::ClientAuth);
            }
        }
        u
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "server" => Ok(Profile::Server),
            "client" => Ok(Profile::Client),
            "peer" => Ok(Profile::Peer),
            other => Err(format!("unknown profile `{other}` (use server, client or peer)")),
        }
    }
}

/// Five years, cfssl's `43800h`.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(43_800 * 3600);
/// cfssl backdates `not_before` by five minutes for clock skew; so do we.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A CA to create.
#[derive(Debug, Clone)]
pub struct CaRequest {
    pub subject: Subject,
    pub key_type: KeyType,
    pub expiry: Duration,
}

/// A certificate to issue.
#[derive(Debug, Clone)]
pub struct CertRequest {
    pub subject: Subject,
    pub sans: Vec<San>,
    pub key_type: KeyType,
    pub usages: Usages,
    pub expiry: Duration,
}

impl CertRequest {
    /// A request with the profile's usages, 5-year expiry and an ECDSA P-256 key, as
    /// the seed's `server.json`/`peerN.json`/`client.json` asked.
    pub fn new(cn: impl Into<String>, profile: Profile, sans: Vec<San>) -> Self {
        CertRequest {
            subject: Subject::cn(cn),
            sans,
            key_type: KeyType::EcdsaP256,
            usages: profile.usages(),
            expiry: DEFAULT_EXPIRY,
        }
    }
}

/// A CA troupe can sign with: its certificate and key, loaded and checked to match.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    key: PrivateKey,
    facts: CertFacts,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("subject", &self.facts.subject)
            .field("key", &self.key)
            .finish()
    }
}

impl Ca {
    /// Adopt an existing CA (troupe's or cfssl's `ca.pem` + `ca-key.pem`), checking that
    /// the certificate is a CA and that the key is its key.
    pub fn load(cert_pem: &str, key_pem: &str, cert_name: &str, key_name: &str) -> Result<Ca, PkiError> {
        let facts = inspect(cert_pem, cert_name)?;
        let key = super::keys::load_key(key_pem, key_name)?;
        if !facts.is_ca {
            return Err(PkiError::NotACa {
                cert: cert_name.to_string(),
            });
        }
        if !key_matches(&key, &facts.spki_der) {
            return Err(PkiError::CaKeyMismatch {
                cert: cert_name.to_string(),
                key: key_name.to_string(),
            });
        }
        let cert_der = pem_der(cert_pem, cert_name)?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            cert_der,
            key,
            facts,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }
    pub fn key_pem(&self) -> String {
        self.key.to_pem()
    }
    pub fn key(&self) -> &PrivateKey {
        &self.key
    }
    pub fn facts(&self) -> &CertFacts {
        &self.facts
    }

    fn issuer(&self) -> Result<Issuer<'static, &rcgen::KeyPair>, PkiError> {
        // Built from the CA certificate itself so the issuer name is byte-for-byte the
        // CA's subject (Go's verifier matches raw bytes) and the authority key id is
        // exactly the CA's subject key id.
        Issuer::from_ca_cert_der(&self.cert_der.as_slice().into(), self.key.pair()).map_err(|e| {
            PkiError::Sign {
                detail: format!("CA certificate: {e}"),
            }
        })
    }
}

fn pem_der(pem_text: &str, name: &str) -> Result<Vec<u8>, PkiError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).map_err(|e| PkiError::BadCert {
        source_name: name.to_string(),
        detail: e.to_string(),
    })?;
    Ok(pem.contents)
}

fn random_serial() -> SerialNumber {
    use rand::RngExt;
    let mut bytes: [u8; 20] = rand::rng().random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and exactly 20 bytes long, never a shorter DER integer
    SerialNumber::from_slice(&bytes)
}

/// cfssl's validity: `not_before` is now rounded to the minute, minus five minutes;
/// `not_after` is `not_before` plus the expiry, so the lengths match cfssl's exactly.
fn validity(now: OffsetDateTime, expiry: Duration) -> (OffsetDateTime, OffsetDateTime) {
    let secs = now.unix_timestamp();
    let rounded = (secs + 30).div_euclid(60) * 60;
    let rounded = OffsetDateTime::from_unix_timestamp(rounded).unwrap_or(now);
    let not_before = rounded - BACKDATE;
    (not_before, not_before + expiry)
}

/// Create a self-signed CA with a fresh key. `now` is a parameter so tests can make
/// expired material.
pub fn create_ca(req: &CaRequest, now: OffsetDateTime) -> Result<Ca, PkiError> {
    let key = generate_key(req.key_type)?;
    create_ca_with_key(req, key, now)
}

/// Create a self-signed CA certificate for an existing key (a CA key whose certificate
/// was lost keeps its identity).
pub fn create_ca_with_key(req: &CaRequest, key: PrivateKey, now: OffsetDateTime) -> Result<Ca, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = req.subject.to_dn();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params.not_before, params.not_after) = validity(now, req.expiry);
    params.serial_number = Some(random_serial());
    params.key_identifier_method = KeyIdMethod::PreSpecified(key_id(&key.spki_der()));
    let cert = params.self_signed(key.pair()).map_err(|e| PkiError::Sign {
        detail: e.to_string(),
    })?;
    let pem = cert.pem();
    let facts = inspect(&pem, "new CA certificate")?;
    Ok(Ca {
        cert_pem: pem,
        cert_der: cert.der().to_vec(),
        key,
        facts,
    })
}

fn leaf_params(req: &CertRequest, spki_der: &[u8], now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = req.subject.to_dn();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = req.usages.key.iter().map(|k| k.to_rcgen()).collect();
    params.extended_key_usages = req.usages.ext.iter().map(|e| e.to_rcgen()).collect();
    params.subject_alt_names = req
        .sans
        .iter()
        .filter_map(|s| match s {
            San::Ip(ip) => Some(SanType::IpAddress(*ip)),
            San::Dns(d) => d.as_str().try_into().ok().map(SanType::DnsName),
        })
        .collect();
    (params.not_before, params.not_after) = validity(now, req.expiry);
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    params.key_identifier_method = KeyIdMethod::PreSpecified(key_id(spki_der));
    params
}

/// Issue a certificate for an existing private key (held by the controller).
pub fn issue_for_key(
    ca: &Ca,
    req: &CertRequest,
    key: &PrivateKey,
    now: OffsetDateTime,
) -> Result<String, PkiError> {
    issue_for_spki(ca, req, &key.spki_der(), now)
}

/// Issue a certificate for a public key given as DER SubjectPublicKeyInfo (from a CSR
/// or `openssl pkey -pubout`): the private key stays wherever it is.
pub fn issue_for_spki(
    ca: &Ca,
    req: &CertRequest,
    spki_der: &[u8],
    now: OffsetDateTime,
) -> Result<String, PkiError> {
    let public = rcgen::SubjectPublicKeyInfo::from_der(spki_der).map_err(|e| PkiError::Sign {
        detail: format!("public key: {e}"),
    })?;
    let params = leaf_params(req, spki_der, now);
    let issuer = ca.issuer()?;
    let cert = params.signed_by(&public, &issuer).map_err(|e| PkiError::Sign {
        detail: e.to_string(),
    })?;
    Ok(cert.pem())
}

/// Issue a certificate for the key in a PEM CSR, after checking the CSR's signature (the
/// requester holds the key). Only the CSR's public key is used: subject, SANs and
/// usages come from `req`, never from the CSR, as a CA should.
pub fn issue_from_csr(
    ca: &Ca,
    req: &CertRequest,
    csr_pem: &str,
    csr_name: &str,
    now: OffsetDateTime,
) -> Result<String, PkiError> {
    let spki = csr_public_key(csr_pem, csr_name)?;
    issue_for_spki(ca, req, &spki, now)
}

/// The verified SubjectPublicKeyInfo DER of a PEM CSR.
pub fn csr_public_key(csr_pem: &str, csr_name: &str) -> Result<Vec<u8>, PkiError> {
    let bad = |detail: String| PkiError::BadCsr {
        source_name: csr_name.to_string(),
        detail,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    if pem.label != "CERTIFICATE REQUEST" && pem.label != "NEW CERTIFICATE REQUEST" {
        return Err(bad(format!("PEM block is `{}`", pem.label)));
    }
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
        .map_err(|e| bad(e.to_string()))?;
    csr.verify_signature()
        .map_err(|e| bad(format!("signature does not verify: {e}")))?;
    Ok(csr.certification_request_info.subject_pki.raw.to_vec())
}

/// Generate a key on the controller and issue its certificate (cfssl's way).
pub fn issue_with_new_key(
    ca: &Ca,
    req: &CertRequest,
    now: OffsetDateTime,
) -> Result<(String, PrivateKey), PkiError> {
    let key = generate_key(req.key_type)?;
    let cert = issue_for_key(ca, req, &key, now)?;
    Ok((cert, key))
}

/// A PEM CSR for `key` naming `req`'s subject and SANs (cfssljson's `NAME.csr`).
pub fn csr_for_key(req: &CertRequest, key: &PrivateKey) -> Result<String, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = req.subject.to_dn();
    params.subject_alt_names = leaf_params(req, &key.spki_der(), OffsetDateTime::now_utc()).subject_alt_names;
    let csr = params.serialize_request(key.pair()).map_err(|e| PkiError::Sign {
        detail: e.to_string(),
    })?;
    csr.pem().map_err(|e| PkiError::Sign {
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::inspect::signed_by;

    fn ca() -> Ca {
        let req = CaRequest {
            subject: Subject {
                cn: "My own CA".into(),
                c: Some("US".into()),
                ou: Some("B".into()),
                ..Subject::default()
            },
            key_type: KeyType::EcdsaP256,
            expiry: DEFAULT_EXPIRY,
        };
        create_ca(&req, OffsetDateTime::now_utc()).unwrap()
    }

    #[test]
    fn sans_are_told_apart() {
        assert_eq!(
            "10.1.1.201".parse::<San>().unwrap(),
            San::Ip("10.1.1.201".parse().unwrap())
        );
        assert_eq!("::1".parse::<San>().unwrap(), San::Ip("::1".parse().unwrap()));
        assert_eq!(
            "Etcd.Example.com".parse::<San>().unwrap(),
            San::Dns("etcd.example.com".into())
        );
        assert!("".parse::<San>().is_err());
        assert!("a b".parse::<San>().is_err());
    }

    #[test]
    fn unknown_usage_is_an_error_not_ignored() {
        let err = Usages::parse(&["signing", "server auht"]).unwrap_err();
        assert_eq!(err.to_string(), "unknown usage `server auht`");
        assert_eq!(
            Usages::parse(&["signing", "key encipherment", "server auth"]).unwrap(),
            Profile::Server.usages()
        );
    }

    #[test]
    fn ca_and_leaf_look_like_cfssl() {
        let ca = ca();
        let f = ca.facts();
        assert!(f.is_ca);
        assert_eq!(
            f.usages.key,
            [KeyUsage::CertSign, KeyUsage::CrlSign].into_iter().collect()
        );
        assert_eq!(f.subject, "C=US, OU=B, CN=My own CA");
        assert_eq!(f.aki, None);

        let req = CertRequest::new(
            "etcd0",
            Profile::Peer,
            vec!["127.0.0.1".parse().unwrap(), "etcd0".parse().unwrap()],
        );
        let (pem, key) = issue_with_new_key(&ca, &req, OffsetDateTime::now_utc()).unwrap();
        let leaf = inspect(&pem, "peer.pem").unwrap();
        assert_eq!(leaf.cn, "etcd0");
        assert!(!leaf.is_ca);
        assert_eq!(leaf.usages, Profile::Peer.usages());
        assert_eq!(leaf.sans, req.sans);
        assert_eq!(leaf.key_type, "ecdsa-p256");
        assert_eq!(leaf.aki, f.ski);
        assert_eq!(leaf.ski, Some(key_id(&key.spki_der())));
        assert_eq!(leaf.issuer, f.subject);
        assert!(signed_by(&pem, ca.cert_pem()));
        assert!(key_matches(&key, &leaf.spki_der));
        assert_eq!(
            leaf.not_after - leaf.not_before,
            time::Duration::hours(43_800),
            "exactly 43800h, like cfssl"
        );
    }

    #[test]
    fn ca_reloads_and_refuses_a_foreign_key() {
        let ca = ca();
        let again = Ca::load(ca.cert_pem(), &ca.key_pem(), "ca.pem", "ca-key.pem").unwrap();
        assert_eq!(again.facts().serial, ca.facts().serial);
        let other = generate_key(KeyType::EcdsaP256).unwrap();
        let err = Ca::load(ca.cert_pem(), &other.to_pem(), "ca.pem", "ca-key.pem").unwrap_err();
        assert!(matches!(err, PkiError::CaKeyMismatch { .. }), "{err}");
    }

    #[test]
    fn csr_path_signs_only_the_public_key() {
        let ca = ca();
        let key = generate_key(KeyType::Ed25519).unwrap();
        let req = CertRequest::new("client", Profile::Client, vec![]);
        let csr = csr_for_key(&req, &key).unwrap();
        let pem = issue_from_csr(&ca, &req, &csr, "client.csr", OffsetDateTime::now_utc()).unwrap();
        let facts = inspect(&pem, "client.pem").unwrap();
        assert_eq!(facts.key_type, "ed25519");
        assert!(key_matches(&key, &facts.spki_der));
        let err = csr_public_key("garbage", "x.csr").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("x.csr: not a valid certificate signing request")
        );
    }
}
