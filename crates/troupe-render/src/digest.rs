//! `hash` (a hex digest of a string) and `password_hash` (a crypt(3) string for
//! `/etc/shadow`, the `user` module's `password`).
//!
//! `password_hash` writes SHA-512-crypt by default, as Ansible does, in the form glibc's
//! `crypt(3)` and `openssl passwd -6` write: `$6$SALT$HASH`, with `rounds=N$` only when
//! the rounds are not the implicit 5000. The digest is RustCrypto's `sha-crypt`; this
//! file only chooses the salt and lays out the string. A random salt makes the result
//! differ on every render, so a task that must be idempotent passes `salt=`.

use base64ct::Encoding as _;
use minijinja::Error;
use minijinja::value::{Kwargs, StringInput};
use rand::RngExt as _;
use sha2::Digest as _;

use crate::filters::invalid;

/// `"text" | hash('sha1')`: the hex digest of the string's UTF-8 bytes.
pub(crate) fn hash(value: StringInput<'_>, algorithm: Option<&str>) -> Result<String, Error> {
    let bytes = value.as_str().as_bytes();
    Ok(match algorithm.unwrap_or("sha1") {
        "md5" => format!("{:x}", md5::compute(bytes)),
        "sha1" => {
            use sha1::Digest as _;
            hex::encode(sha1::Sha1::digest(bytes))
        }
        "sha224" => hex::encode(sha2::Sha224::digest(bytes)),
        "sha256" => hex::encode(sha2::Sha256::digest(bytes)),
        "sha384" => hex::encode(sha2::Sha384::digest(bytes)),
        "sha512" => hex::encode(sha2::Sha512::digest(bytes)),
        other => {
            return Err(invalid(format!(
                "hash: unknown algorithm `{other}`; troupe has md5, sha1, sha224, sha256, sha384, sha512"
            )));
        }
    })
}

/// The characters of a crypt(3) salt.
const SALT_CHARS: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// The longest salt SHA-crypt reads (longer ones are cut by crypt(3); troupe refuses).
const SALT_MAX: usize = 16;
/// Rounds SHA-crypt uses when the string names none.
const IMPLICIT_ROUNDS: u32 = 5000;

/// `password | password_hash('sha512', salt=None, rounds=None)`.
pub(crate) fn password_hash(
    password: StringInput<'_>,
    scheme: Option<&str>,
    salt: Option<String>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let salt_kw: Option<String> = kwargs.get("salt")?;
    let rounds: Option<u32> = kwargs.get("rounds")?;
    kwargs.assert_all_used()?;
    let sha512 = match scheme.unwrap_or("sha512") {
        "sha512" | "sha512_crypt" => true,
        "sha256" | "sha256_crypt" => false,
        other => {
            return Err(invalid(format!(
                "password_hash: unsupported scheme `{other}`; troupe writes sha512 (sha512_crypt, the default) and sha256 (sha256_crypt)"
            )));
        }
    };
    let salt = match salt.or(salt_kw) {
        Some(s) => {
            if s.is_empty() || s.len() > SALT_MAX || !s.bytes().all(|b| SALT_CHARS.contains(&b)) {
                return Err(invalid(format!(
                    "password_hash: a salt is 1 to {SALT_MAX} characters of `./0-9A-Za-z`, got {:?}",
                    s
                )));
            }
            s
        }
        None => {
            let mut rng = rand::rng();
            (0..SALT_MAX)
                .map(|_| SALT_CHARS[rng.random_range(0..SALT_CHARS.len())] as char)
                .collect()
        }
    };
    let rounds = rounds.unwrap_or(IMPLICIT_ROUNDS);
    let params = sha_crypt::Params::new(rounds).map_err(|_| {
        invalid(format!(
            "password_hash: rounds must be between {} and {}, got {rounds}",
            sha_crypt::Params::ROUNDS_MIN,
            sha_crypt::Params::ROUNDS_MAX
        ))
    })?;
    let pw = password.as_str().as_bytes();
    let (id, encoded) = if sha512 {
        let raw = sha_crypt::sha512_crypt(pw, salt.as_bytes(), params);
        (
            "6",
            base64ct::Base64ShaCrypt::encode_string(&transpose(&raw, &SHA512_ORDER)),
        )
    } else {
        let raw = sha_crypt::sha256_crypt(pw, salt.as_bytes(), params);
        (
            "5",
            base64ct::Base64ShaCrypt::encode_string(&transpose(&raw, &SHA256_ORDER)),
        )
    };
    let rounds = if rounds == IMPLICIT_ROUNDS {
        String::new()
    } else {
        format!("rounds={rounds}$")
    };
    Ok(format!("${id}${rounds}{salt}${encoded}"))
}

/// The byte order in which SHA-crypt encodes its digest (from the SHA-crypt
/// specification, "Unix crypt using SHA-256 and SHA-512").
const SHA512_ORDER: [usize; 64] = [
    42, 21, 0, 1, 43, 22, 23, 2, 44, 45, 24, 3, 4, 46, 25, 26, 5, 47, 48, 27, 6, 7, 49, 28, 29, 8, 50, 51,
    30, 9, 10, 52, 31, 32, 11, 53, 54, 33, 12, 13, 55, 34, 35, 14, 56, 57, 36, 15, 16, 58, 37, 38, 17, 59,
    60, 39, 18, 19, 61, 40, 41, 20, 62, 63,
];
const SHA256_ORDER: [usize; 32] = [
    20, 10, 0, 11, 1, 21, 2, 22, 12, 23, 13, 3, 14, 4, 24, 5, 25, 15, 26, 16, 6, 17, 7, 27, 8, 28, 18, 29,
    19, 9, 30, 31,
];

fn transpose(bytes: &[u8], order: &[usize]) -> Vec<u8> {
    order.iter().map(|&i| bytes[i]).collect()
}

#[cfg(test)]
mod tests {
    fn render(src: &str) -> String {
        crate::Renderer::new(vec![])
            .render_str(src, &crate::Context::default())
            .unwrap()
    }

    /// Vectors from `openssl passwd -6 -salt saltsalt secret` (and `-5`, and with
    /// `rounds=10000$abc`), the same strings glibc's crypt(3) writes.
    #[test]
    fn sha_crypt_strings_match_openssl() {
        assert_eq!(
            render("{{ 'secret' | password_hash('sha512', 'saltsalt') }}"),
            "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1"
        );
        assert_eq!(
            render("{{ 'secret' | password_hash('sha256', salt='saltsalt') }}"),
            "$5$saltsalt$0IyaXrmV7.sGNS6tirgqHLqX/G.FBvgkYA.lpPdS5sA"
        );
        assert_eq!(
            render("{{ 'secret' | password_hash(salt='abc', rounds=10000) }}"),
            "$6$rounds=10000$abc$3DDOWZMNRRKDT142bUtYQRY52ycK/xshRXOQgIyt2QRXzLDnoPq6v4lO9bA3f/JhGz1mHrAh.QUDGHmaE5RxP."
        );
    }
}
