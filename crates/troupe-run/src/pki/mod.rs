//! The cluster's private PKI, without cfssl: create a CA, issue server/peer/client
//! certificates signed by it, and tell — from the certificate alone — whether an
//! existing one still matches what was asked for. The seed issued etcd's certificates
//! by hand with cfssl (`ca-config.json` profiles, `*-csr.json` requests); this library
//! produces the same kind of certificates (same extensions, key usages, key identifiers)
//! so a playbook can re-run the issuance safely, and it reads those same JSON files.
//!
//! Everything here is pure: no host, no I/O. The `pki-ca` and `pki-cert` task modules
//! move the files; tests and other engineers call this library directly.
//!
//! Layout: [`keys`] (key types, generation, loading any PEM private key),
//! [`issue`] (requests, CA creation, signing), [`inspect`] (facts from a certificate,
//! the reissue decision), [`cfssl`] (importing cfssl JSON), [`naming`] (file names),
//! [`guard`] (telling a CA's key, hiding private keys in diffs), [`host_key`] (the
//! script that makes a key on the host and prints its CSR).

pub mod cfssl;
pub mod guard;
pub mod host_key;
pub mod inspect;
pub mod issue;
pub mod keys;
pub mod naming;

pub use cfssl::{CfsslConfig, CfsslCsr, CfsslPolicy};
pub use inspect::{CertFacts, Reason, inspect, needs_reissue, signed_by};
pub use issue::{
    Ca, CaRequest, CertRequest, DEFAULT_EXPIRY, ExtUsage, KeyUsage, Profile, San, Subject, Usages, create_ca,
    create_ca_with_key, csr_for_key, csr_public_key, issue_for_key, issue_for_spki, issue_from_csr,
    issue_with_new_key,
};
pub use keys::{KeyType, PrivateKey, generate_key, key_matches, load_key};
pub use naming::{Naming, PkiPaths};

use std::time::Duration;

/// Everything that can go wrong while making or reading certificates.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum PkiError {
    #[error("{source_name}: not a PEM certificate: {detail}")]
    #[diagnostic(
        code(troupe::pki::bad_cert),
        help(
            "the file is corrupt or not a certificate; move it aside (troupe never overwrites it silently) and run again to issue a new one"
        )
    )]
    BadCert { source_name: String, detail: String },

    #[error("{source_name}: not a usable private key: {detail}")]
    #[diagnostic(
        code(troupe::pki::bad_key),
        help(
            "troupe reads unencrypted PEM keys (PRIVATE KEY, RSA PRIVATE KEY, EC PRIVATE KEY); move the file aside to have a new key generated"
        )
    )]
    BadKey { source_name: String, detail: String },

    #[error("{source_name}: not a valid certificate signing request: {detail}")]
    #[diagnostic(
        code(troupe::pki::bad_csr),
        help("the CSR must be PEM, self-signed by the key it names")
    )]
    BadCsr { source_name: String, detail: String },

    #[error("unknown key type `{value}`")]
    #[diagnostic(
        code(troupe::pki::unknown_key_type),
        help("use one of rsa-2048, rsa-4096, ecdsa-p256, ecdsa-p384, ed25519")
    )]
    UnknownKeyType { value: String },

    #[error("unknown usage `{value}`")]
    #[diagnostic(
        code(troupe::pki::unknown_usage),
        help(
            "key usages: signing, digital signature, content commitment, key encipherment, data encipherment, key agreement, cert sign, crl sign; extended: server auth, client auth, code signing, email protection, timestamping, ocsp signing, any"
        )
    )]
    UnknownUsage { value: String },

    #[error("`{value}` is neither an IP address nor a DNS name")]
    #[diagnostic(
        code(troupe::pki::bad_san),
        help("SANs are IPv4/IPv6 addresses or DNS names such as etcd.example.com")
    )]
    BadSan { value: String },

    #[error("CA certificate and key do not belong together: {cert} does not match {key}")]
    #[diagnostic(
        code(troupe::pki::ca_key_mismatch),
        help(
            "one of the two files was replaced; restore the matching pair from backup — troupe never overwrites a CA key"
        )
    )]
    CaKeyMismatch { cert: String, key: String },

    #[error("{cert} is not a CA certificate (basic constraints CA:FALSE or missing)")]
    #[diagnostic(
        code(troupe::pki::not_a_ca),
        help("point ca-dir/ca-name at the CA's certificate, e.g. ca.pem")
    )]
    NotACa { cert: String },

    #[error("signing failed: {detail}")]
    #[diagnostic(code(troupe::pki::sign))]
    Sign { detail: String },

    #[error(transparent)]
    #[diagnostic(transparent)]
    Cfssl(#[from] cfssl::CfsslError),
}

/// `"43800h"`, `"30d"`, `"1y"` → duration (humantime syntax, as cfssl's Go durations
/// plus days).
pub fn parse_duration(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim()).ok()
}

/// Human form of a validity length: `43800h (5y)`-style output would be noise, so days.
pub fn fmt_days(d: Duration) -> String {
    let days = d.as_secs() / 86_400;
    let hours = (d.as_secs() % 86_400) / 3600;
    if hours == 0 {
        format!("{days}d")
    } else {
        format!("{days}d{hours}h")
    }
}
