//! Keeping private keys private in the two places a general module meets them: a
//! `copy` whose source is a CA's key (the invariant is that a CA key stays on the
//! controller) and a diff or output that would print a PEM private key.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use super::issue::Ca;

const BEGIN: &str = "-----BEGIN ";
const PRIVATE_KEY_END: &str = "PRIVATE KEY-----";

/// Whether `text` holds a PEM private key block (`-----BEGIN … PRIVATE KEY-----`).
pub fn has_private_key(text: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    text.match_indices(BEGIN).any(|(i, _)| {
        text[i..]
            .lines()
            .next()
            .is_some_and(|l| l.trim_end().ends_with(PRIVATE_KEY_END))
    })
}

/// Where the certificate of key file `key_path` would be: cfssl's `NAME-key.pem` next
/// to `NAME.pem`, kubeadm's `NAME.key` next to `NAME.crt`.
pub fn cert_beside_key(key_path: &Path) -> Option<PathBuf> {
    let name = key_path.file_name()?.to_str()?;
    let cert_name = if let Some(base) = name.strip_suffix("-key.pem") {
        format!("{base}.pem")
    } else if let Some(base) = name.strip_suffix(".key") {
        format!("{base}.crt")
    } else {
        return None;
    };
    Some(key_path.with_file_name(cert_name))
}

/// Whether `key` is the private key of the CA certificate `cert_pem`.
pub fn is_ca_key(cert_pem: &str, key: &[u8]) -> bool {
    has_private_key(key)
        && std::str::from_utf8(key).is_ok_and(|key_pem| Ca::load(cert_pem, key_pem, "cert", "key").is_ok())
}

/// `text` with the body of every PEM private key block replaced by one line naming
/// its size and a short SHA-256 (so a diff still shows whether the key changed), the
/// BEGIN and END lines kept.
pub fn redact_private_keys(text: &str) -> Cow<'_, str> {
    if !text.contains(PRIVATE_KEY_END) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let line_end = rest[start..].find('\n').map_or(rest.len(), |i| start + i + 1);
        let header = &rest[start..line_end];
        if !header.trim_end().ends_with(PRIVATE_KEY_END) {
            out.push_str(&rest[..line_end]);
            rest = &rest[line_end..];
            continue;
        }
        out.push_str(&rest[..line_end]);
        let label = header.trim_end().trim_start_matches(BEGIN);
        let footer = format!("-----END {label}");
        let body_and_after = &rest[line_end..];
        // Without its END line the key runs to the end of the text: hide all of it.
        let body_len = body_and_after.find(&footer).unwrap_or(body_and_after.len());
        let body = &body_and_after[..body_len];
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(body.as_bytes()));
        out.push_str(&format!(
            "(private key not shown: {} bytes, sha256 {}…)\n",
            body.len(),
            &sha[..12]
        ));
        rest = &body_and_after[body_len..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\nsecretsecret\n-----END PRIVATE KEY-----\n";

    #[test]
    fn a_private_key_body_is_never_shown_and_the_rest_is_kept() {
        for key in [
            KEY.to_string(),
            KEY.replace("PRIVATE KEY", "RSA PRIVATE KEY"),
            KEY.replace("PRIVATE KEY", "EC PRIVATE KEY"),
            KEY.replace("PRIVATE KEY", "ENCRYPTED PRIVATE KEY"),
        ] {
            let text =
                format!("before\n-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n{key}after\n");
            let shown = redact_private_keys(&text);
            assert!(
                !shown.contains("MIGHAgEA") && !shown.contains("secretsecret"),
                "{shown}"
            );
            assert!(shown.contains("MIIB"), "certificates are public: {shown}");
            assert!(
                shown.starts_with("before\n") && shown.ends_with("after\n"),
                "{shown}"
            );
            assert!(shown.contains("(private key not shown: "), "{shown}");
        }
    }

    #[test]
    fn a_key_without_its_end_line_is_hidden_to_the_end() {
        let cut = &KEY[..60];
        let shown = redact_private_keys(cut);
        assert!(!shown.contains("MIGHAgEA"), "{shown}");
    }

    #[test]
    fn a_changed_key_shows_a_different_line() {
        let a = redact_private_keys(KEY).into_owned();
        let b = redact_private_keys(&KEY.replace("secretsecret", "othersecret!")).into_owned();
        assert_ne!(a, b);
    }

    #[test]
    fn only_private_keys_count() {
        assert!(has_private_key(KEY.as_bytes()));
        assert!(!has_private_key(
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
        ));
        assert!(!has_private_key(b"-----BEGIN PUBLIC KEY-----\nMIIB\n"));
    }
}
