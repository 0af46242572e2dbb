//! Key types and private keys: generate them, read any unencrypted PEM key a cfssl or
//! openssl set-up leaves behind, and name a public key's type the way a request does
//! (`ecdsa-p256`), so "key type ecdsa-p256, wanted rsa-2048" is a plain comparison.
//!
//! RSA: rcgen signs with `ring`, which cannot *generate* RSA keys (rcgen 0.14's
//! `KeyPair::generate_for` returns `KeyGenerationUnavailable` for RSA unless built on
//! aws-lc-rs, whose C build we avoid). We generate RSA keys with the pure-Rust `rsa`
//! crate — already in the dependency graph through russh — and hand rcgen the PKCS#8
//! DER. That keeps the library free of subprocesses and testable anywhere; the
//! `pki-cert` module still uses `openssl genpkey` *on the target host* when the key must
//! never leave it (see [`KeyType::openssl_genpkey_args`]).

use std::fmt;
use std::str::FromStr;

use rcgen::{KeyPair, PublicKeyData, SignatureAlgorithm};
use sha1::{Digest, Sha1};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey as ParsedPublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::PkiError;

/// The key types troupe issues; etcd (Go's crypto/tls) accepts all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    Rsa2048,
    Rsa4096,
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl KeyType {
    pub const ALL: [KeyType; 5] = [
        KeyType::Rsa2048,
        KeyType::Rsa4096,
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Ed25519,
    ];
    /// The names accepted by `key-type=` (for `ArgKind::Enum`).
    pub const NAMES: &'static [&'static str] =
        &["rsa-2048", "rsa-4096", "ecdsa-p256", "ecdsa-p384", "ed25519"];

    pub const fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa4096 => "rsa-4096",
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::EcdsaP384 => "ecdsa-p384",
            KeyType::Ed25519 => "ed25519",
        }
    }

    /// The signature algorithm a key of this type signs with (SHA-256 for RSA and P-256,
    /// SHA-384 for P-384, as cfssl does).
    pub fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::Rsa2048 | KeyType::Rsa4096 => &rcgen::PKCS_RSA_SHA256,
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    /// `openssl genpkey` arguments (after `genpkey`) that make a PKCS#8 key of this
    /// type; used to generate a key on the host that keeps it.
    pub fn openssl_genpkey_args(self) -> Vec<&'static str> {
        match self {
            KeyType::Rsa2048 => vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            KeyType::Rsa4096 => vec!["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:4096"],
            KeyType::EcdsaP256 => vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            KeyType::EcdsaP384 => vec!["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            KeyType::Ed25519 => vec!["-algorithm", "ED25519"],
        }
    }

    /// The key type of a DER SubjectPublicKeyInfo, `None` for anything troupe does not
    /// issue (RSA-3072, P-521, DSA...).
    pub fn from_spki(spki_der: &[u8]) -> Option<KeyType> {
        describe_spki(spki_der).parse().ok()
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = PkiError;
    fn from_str(s: &str) -> Result<Self, PkiError> {
        KeyType::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| PkiError::UnknownKeyType { value: s.to_string() })
    }
}

const OID_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
const OID_EC_PUBLIC_KEY: &[u64] = &[1, 2, 840, 10045, 2, 1];
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_P521: &str = "1.3.132.0.35";
const OID_ED25519: &str = "1.3.101.112";

/// A public key's type as text: `rsa-2048`, `ecdsa-p256`, `ed25519`, or a description
/// of something else (`rsa-3072`, `ecdsa-p521`, `unknown (OID …)`).
pub fn describe_spki(spki_der: &[u8]) -> String {
    let Ok((_, spki)) = SubjectPublicKeyInfo::from_der(spki_der) else {
        return "unparsable public key".into();
    };
    let alg = spki.algorithm.algorithm.to_id_string();
    match alg.as_str() {
        "1.2.840.113549.1.1.1" => match spki.parsed() {
            Ok(ParsedPublicKey::RSA(rsa)) => format!("rsa-{}", rsa.key_size()),
            _ => "rsa (unparsable)".into(),
        },
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some(OID_P256) => "ecdsa-p256".into(),
                Some(OID_P384) => "ecdsa-p384".into(),
                Some(OID_P521) => "ecdsa-p521".into(),
                Some(other) => format!("ecdsa (curve {other})"),
                None => "ecdsa (no curve)".into(),
            }
        }
        OID_ED25519 => "ed25519".into(),
        other => format!("unknown key algorithm {other}"),
    }
}

/// The bits of a SubjectPublicKeyInfo's `subjectPublicKey`, i.e. what cfssl (and RFC
/// 5280 method 1) hashes with SHA-1 for the subject key identifier.
pub fn spki_key_bits(spki_der: &[u8]) -> Option<Vec<u8>> {
    let (_, spki) = SubjectPublicKeyInfo::from_der(spki_der).ok()?;
    Some(spki.subject_public_key.data.to_vec())
}

/// cfssl's subject key identifier: SHA-1 over the public key bits.
pub fn key_id(spki_der: &[u8]) -> Vec<u8> {
    let bits = spki_key_bits(spki_der).unwrap_or_default();
    Sha1::digest(&bits).to_vec()
}

/// A private key troupe can sign with. Its `Debug` never prints the key.
pub struct PrivateKey {
    pair: KeyPair,
    key_type: KeyType,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({}, [elided])", self.key_type)
    }
}

impl PrivateKey {
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), what troupe writes to `*-key.pem`.
    pub fn to_pem(&self) -> String {
        self.pair.serialize_pem()
    }

    /// DER SubjectPublicKeyInfo of the public half.
    pub fn spki_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    pub(crate) fn pair(&self) -> &KeyPair {
        &self.pair
    }
}

/// Generate a fresh key of `key_type`.
pub fn generate_key(key_type: KeyType) -> Result<PrivateKey, PkiError> {
    let pair = match key_type {
        KeyType::Rsa2048 | KeyType::Rsa4096 => {
            use rsa::pkcs8::EncodePrivateKey;
            let bits = if key_type == KeyType::Rsa2048 { 2048 } else { 4096 };
            let key = rsa::RsaPrivateKey::new(&mut rand::rng(), bits).map_err(|e| PkiError::Sign {
                detail: format!("RSA key generation: {e}"),
            })?;
            let der = key.to_pkcs8_der().map_err(|e| PkiError::Sign {
                detail: format!("RSA key encoding: {e}"),
            })?;
            KeyPair::from_pkcs8_der_and_sign_algo(&der.as_bytes().into(), &rcgen::PKCS_RSA_SHA256).map_err(
                |e| PkiError::Sign {
                    detail: format!("RSA key: {e}"),
                },
            )?
        }
        other => KeyPair::generate_for(other.signature_algorithm()).map_err(|e| PkiError::Sign {
            detail: format!("{other} key generation: {e}"),
        })?,
    };
    Ok(PrivateKey { pair, key_type })
}

/// Read an unencrypted PEM private key: PKCS#8 (`PRIVATE KEY`, troupe and openssl),
/// PKCS#1 (`RSA PRIVATE KEY`, cfssl's RSA keys) or SEC1 (`EC PRIVATE KEY`, cfssl's ECDSA
/// keys). `source_name` names the file in errors.
pub fn load_key(pem_text: &str, source_name: &str) -> Result<PrivateKey, PkiError> {
    let bad = |detail: String| PkiError::BadKey {
        source_name: source_name.to_string(),
        detail,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes())
        .map_err(|e| bad(format!("no PEM block ({e})")))?;
    let pkcs8 = match pem.label.as_str() {
        "PRIVATE KEY" => pem.contents.clone(),
        "RSA PRIVATE KEY" => wrap_pkcs8(OID_RSA, None, &pem.contents),
        "EC PRIVATE KEY" => {
            let curve =
                sec1_curve(&pem.contents).ok_or_else(|| bad("EC key without a named curve".into()))?;
            wrap_pkcs8(OID_EC_PUBLIC_KEY, Some(&curve), &pem.contents)
        }
        "ENCRYPTED PRIVATE KEY" => {
            return Err(bad("the key is encrypted; troupe needs it unencrypted".into()));
        }
        other => return Err(bad(format!("PEM block is `{other}`, not a private key"))),
    };
    let pair = KeyPair::try_from(pkcs8.as_slice()).map_err(|e| bad(format!("{e}")))?;
    let spki = pair.subject_public_key_info();
    let key_type = KeyType::from_spki(&spki).ok_or_else(|| {
        bad(format!(
            "key type {} is not one troupe uses",
            describe_spki(&spki)
        ))
    })?;
    // rcgen guesses SHA-256 for any EC key it can read; re-read P-384 with SHA-384.
    let pair = if key_type == KeyType::EcdsaP384 && pair.algorithm() != &rcgen::PKCS_ECDSA_P384_SHA384 {
        KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.as_slice().into(), &rcgen::PKCS_ECDSA_P384_SHA384)
            .map_err(|e| bad(format!("{e}")))?
    } else {
        pair
    };
    Ok(PrivateKey { pair, key_type })
}

/// The named curve OID inside a SEC1 `ECPrivateKey` (`parameters [0]`).
fn sec1_curve(der: &[u8]) -> Option<Vec<u64>> {
    yasna::parse_der(der, |r| {
        r.read_sequence(|r| {
            let _version = r.next().read_u8()?;
            let _key = r.next().read_bytes()?;
            let curve = r.read_optional(|r| r.read_tagged(yasna::Tag::context(0), |r| r.read_oid()))?;
            let _public =
                r.read_optional(|r| r.read_tagged(yasna::Tag::context(1), |r| r.read_bitvec_bytes()))?;
            Ok(curve)
        })
    })
    .ok()
    .flatten()
    .map(|oid| oid.components().clone())
}

/// PKCS#8 `PrivateKeyInfo` around a PKCS#1 or SEC1 key (what ring wants).
fn wrap_pkcs8(alg: &[u64], curve: Option<&[u64]>, inner: &[u8]) -> Vec<u8> {
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_u8(0);
            w.next().write_sequence(|w| {
                w.next()
                    .write_oid(&yasna::models::ObjectIdentifier::from_slice(alg));
                match curve {
                    Some(c) => w
                        .next()
                        .write_oid(&yasna::models::ObjectIdentifier::from_slice(c)),
                    None => w.next().write_null(),
                }
            });
            w.next().write_bytes(inner);
        })
    })
}

/// Whether a private key is the one a certificate (or CSR) carries, by comparing
/// public keys.
pub fn key_matches(key: &PrivateKey, cert_spki_der: &[u8]) -> bool {
    spki_key_bits(&key.spki_der()) == spki_key_bits(cert_spki_der)
}

/// Public key bits from a SPKI that openssl printed (`openssl pkey -pubout`, PEM).
pub fn spki_from_pem(pem_text: &str) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem_text.as_bytes()).ok()?;
    (pem.label == "PUBLIC KEY").then_some(pem.contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_type_generates_and_reads_back() {
        for kt in KeyType::ALL {
            let key = generate_key(kt).unwrap();
            assert_eq!(key.key_type(), kt);
            assert_eq!(describe_spki(&key.spki_der()), kt.as_str());
            let again = load_key(&key.to_pem(), "k.pem").unwrap();
            assert_eq!(again.key_type(), kt);
            assert!(key_matches(&again, &key.spki_der()));
        }
    }

    #[test]
    fn key_type_names_round_trip() {
        for name in KeyType::NAMES {
            assert_eq!(name.parse::<KeyType>().unwrap().as_str(), *name);
        }
        let err = "rsa-1024".parse::<KeyType>().unwrap_err();
        assert_eq!(err.to_string(), "unknown key type `rsa-1024`");
    }

    #[test]
    fn garbage_key_names_the_file() {
        let err = load_key("not a key", "/etc/etcd/server-key.pem").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/etc/etcd/server-key.pem: not a usable private key"),
            "{err}"
        );
        let cert_pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = load_key(cert_pem, "x.pem").unwrap_err();
        assert!(
            err.to_string().contains("`CERTIFICATE`, not a private key"),
            "{err}"
        );
    }
}
