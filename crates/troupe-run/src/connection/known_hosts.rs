//! Reading OpenSSH's `known_hosts` the way `ssh` does, so troupe accepts and refuses
//! the same host keys: host patterns (`*`, `?`, `!negation`, `[host]:port`), hashed
//! names (`|1|salt|hash`, HMAC-SHA1), and the `@revoked` and `@cert-authority`
//! markers. A line troupe cannot read is an error naming the file and line, never
//! silently skipped: a skipped `@revoked` line would accept a key the operator banned.
//!
//! Pure: the caller reads the file; this only parses text.

use base64::Engine as _;
use russh::keys::PublicKey;

/// What known_hosts says about one host (`address`, `port`).
#[derive(Debug, Default, Clone)]
pub struct HostKeys {
    /// Keys the host may present, with their line numbers.
    pub keys: Vec<(usize, PublicKey)>,
    /// Keys that must never be accepted (`@revoked`).
    pub revoked: Vec<(usize, PublicKey)>,
    /// Certificate authorities trusted to sign the host's certificate
    /// (`@cert-authority`).
    pub cert_authorities: Vec<(usize, PublicKey)>,
}

impl HostKeys {
    /// The line of the `@revoked` entry for `key`, if it is revoked.
    pub fn revoked_at(&self, key: &PublicKey) -> Option<usize> {
        self.revoked
            .iter()
            .find(|(_, k)| same_key(k, key))
            .map(|(l, _)| *l)
    }

    /// The keys the host may present that are not revoked.
    pub fn accepted(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys
            .iter()
            .map(|(_, k)| k)
            .filter(|k| self.revoked_at(k).is_none())
    }

    /// Whether `key` is one of the host's keys and not revoked.
    pub fn accepts(&self, key: &PublicKey) -> bool {
        self.revoked_at(key).is_none() && self.keys.iter().any(|(_, k)| same_key(k, key))
    }
}

/// Keys compare by their key data (the comment is not part of a key).
fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

/// A line of known_hosts that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub detail: String,
}

/// The name OpenSSH looks up: `address` for port 22, `[address]:port` otherwise.
pub fn lookup_name(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_string()
    } else {
        format!("[{address}]:{port}")
    }
}

/// Every entry of `text` that applies to `address:port`. Any unreadable line, whether
/// or not it names this host, is an error: OpenSSH's `ssh-keygen -F` would report it,
/// and a file with a broken line is one the operator should look at.
pub fn for_host(text: &str, address: &str, port: u16) -> Result<HostKeys, ParseError> {
    let name = lookup_name(address, port);
    let mut found = HostKeys::default();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |detail: String| ParseError {
            line: line_no,
            detail,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let marker = if first.starts_with('@') {
            let m = match first {
                "@revoked" => Marker::Revoked,
                "@cert-authority" => Marker::CertAuthority,
                other => {
                    return Err(err(format!(
                        "unknown marker `{other}` (known: @revoked, @cert-authority)"
                    )));
                }
            };
            first = fields
                .next()
                .ok_or_else(|| err(format!("`{}` without host names", marker_name(m))))?;
            Some(m)
        } else {
            None
        };
        let patterns = first;
        let (Some(kind), Some(b64)) = (fields.next(), fields.next()) else {
            return Err(err("expected `HOSTS KEYTYPE BASE64-KEY [COMMENT]`".into()));
        };
        let key = russh::keys::parse_public_key_base64(b64)
            .map_err(|e| err(format!("cannot read the {kind} key: {e}")))?;
        if key.algorithm().as_str() != kind {
            return Err(err(format!(
                "the key is {} but the line says {kind}",
                key.algorithm().as_str()
            )));
        }
        if !hosts_match(patterns, &name).map_err(err)? {
            continue;
        }
        let list = match marker {
            None => &mut found.keys,
            Some(Marker::Revoked) => &mut found.revoked,
            Some(Marker::CertAuthority) => &mut found.cert_authorities,
        };
        list.push((line_no, key));
    }
    Ok(found)
}

#[derive(Debug, Clone, Copy)]
enum Marker {
    Revoked,
    CertAuthority,
}

fn marker_name(m: Marker) -> &'static str {
    match m {
        Marker::Revoked => "@revoked",
        Marker::CertAuthority => "@cert-authority",
    }
}

/// OpenSSH's rule for a comma-separated host list: a matching negated pattern means no
/// match whatever else matches; otherwise any matching pattern means a match.
fn hosts_match(patterns: &str, name: &str) -> Result<bool, String> {
    if let Some(hashed) = patterns.strip_prefix("|1|") {
        return hashed_match(hashed, name);
    }
    let mut matched = false;
    for p in patterns.split(',') {
        if let Some(neg) = p.strip_prefix('!') {
            if wildcard_match(neg, name) {
                return Ok(false);
            }
        } else if wildcard_match(p, name) {
            matched = true;
        }
    }
    Ok(matched)
}

/// `|1|SALT|HASH`: HASH is HMAC-SHA1 of the name keyed with SALT, both base64.
fn hashed_match(salt_and_hash: &str, name: &str) -> Result<bool, String> {
    use hmac::{KeyInit as _, Mac as _};
    let (salt, hash) = salt_and_hash
        .split_once('|')
        .ok_or_else(|| "a hashed host name is `|1|SALT|HASH`".to_string())?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let salt = b64
        .decode(salt)
        .map_err(|e| format!("hashed host name: bad salt ({e})"))?;
    let hash = b64
        .decode(hash)
        .map_err(|e| format!("hashed host name: bad hash ({e})"))?;
    let mut mac =
        hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).map_err(|e| format!("hashed host name: {e}"))?;
    mac.update(name.as_bytes());
    Ok(mac.verify_slice(&hash).is_ok())
}

/// `*` any run of characters, `?` any one; case-insensitive like host names.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let n: Vec<char> = name.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    const ED2: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIKn4Tf5bQ4Nd26BYDiK5UHNMTxQ4NJl7aqdDtN4pXgb";

    fn key(line: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(line.split_whitespace().nth(1).unwrap()).unwrap()
    }

    #[test]
    fn plain_port_and_wildcard_patterns() {
        let text = format!("127.0.1.1 {ED}\n[127.0.1.2]:2222 {ED2}\n127.0.9.* {ED2}\n");
        assert_eq!(for_host(&text, "127.0.1.1", 22).unwrap().keys.len(), 1);
        assert!(
            for_host(&text, "127.0.1.1", 2222).unwrap().keys.is_empty(),
            "port 2222 is another name"
        );
        assert_eq!(for_host(&text, "127.0.1.2", 2222).unwrap().keys[0].0, 2);
        assert_eq!(for_host(&text, "127.0.9.7", 22).unwrap().keys.len(), 1);
    }

    #[test]
    fn a_negated_pattern_wins() {
        let text = format!("127.0.9.*,!127.0.9.3 {ED}\n");
        assert_eq!(for_host(&text, "127.0.9.2", 22).unwrap().keys.len(), 1);
        assert!(for_host(&text, "127.0.9.3", 22).unwrap().keys.is_empty());
    }

    #[test]
    fn hashed_names_match_like_ssh_keygen_h() {
        // `ssh-keygen -H` of "127.0.1.1": HMAC-SHA1 keyed by a random salt.
        use hmac::{KeyInit as _, Mac as _};
        let salt = [7u8; 20];
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"127.0.1.1");
        let b64 = base64::engine::general_purpose::STANDARD;
        let hashed = format!(
            "|1|{}|{}",
            b64.encode(salt),
            b64.encode(mac.finalize().into_bytes())
        );
        let text = format!("{hashed} {ED}\n");
        assert_eq!(for_host(&text, "127.0.1.1", 22).unwrap().keys.len(), 1);
        assert!(for_host(&text, "127.0.1.2", 22).unwrap().keys.is_empty());
    }

    #[test]
    fn revoked_keys_are_never_accepted() {
        let text = format!("127.0.1.1 {ED}\n@revoked * {ED}\n127.0.1.1 {ED2}\n");
        let hk = for_host(&text, "127.0.1.1", 22).unwrap();
        assert_eq!(hk.revoked_at(&key(ED)), Some(2));
        assert!(!hk.accepts(&key(ED)));
        assert!(hk.accepts(&key(ED2)));
        assert_eq!(hk.accepted().count(), 1);
    }

    #[test]
    fn cert_authorities_are_kept_apart() {
        let text = format!("@cert-authority *.lab,127.0.1.* {ED}\n");
        let hk = for_host(&text, "127.0.1.5", 22).unwrap();
        assert!(hk.keys.is_empty());
        assert_eq!(hk.cert_authorities.len(), 1);
    }

    #[test]
    fn a_bad_line_is_an_error_with_its_number() {
        for (text, what) in [
            (
                format!("# ok\n127.0.1.1 {ED}\n127.0.1.2 ssh-ed25519\n"),
                "expected",
            ),
            (
                format!("\n\n127.0.1.2 ssh-ed25519 !!notbase64\n{ED}"),
                "cannot read",
            ),
            (format!("x {ED}\n\n@bogus * {ED}\n"), "unknown marker"),
            (
                "127.0.1.1 ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n"
                    .to_string(),
                "the key is",
            ),
        ] {
            let e = for_host(&text, "127.0.1.1", 22).unwrap_err();
            assert!(e.detail.contains(what), "{e:?}");
            let want = text
                .lines()
                .position(|l| {
                    !l.is_empty()
                        && !l.starts_with('#')
                        && !l.starts_with("x ")
                        && !l.starts_with("127.0.1.1 ssh-ed")
                })
                .unwrap()
                + 1;
            assert_eq!(e.line, want, "{text:?}: {e:?}");
        }
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "anything"));
        assert!(wildcard_match("podc0?", "PODC01"));
        assert!(!wildcard_match("podc0?", "podc011"));
        assert!(wildcard_match("[127.0.1.*]:22?2", "[127.0.1.4]:2202"));
        assert!(!wildcard_match("127.0.1.1", "127.0.1.10"));
    }
}
