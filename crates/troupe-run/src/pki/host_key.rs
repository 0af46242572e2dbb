//! A key made on the host that keeps it (`pki-cert key-location="host"`): the one
//! shell script that creates the folder, generates a private key with `openssl genpkey`
//! into a temporary file beside the final one and prints its CSR, and the reading of
//! what it printed. Only the CSR travels to the controller; the `pki-cert` module runs
//! the script, signs the CSR and moves the key into place. Text in, text out: the
//! script's words are quoted by `connection::shell`, the only place that quotes.

use crate::connection::shell::quote;

use super::{KeyType, Subject};

/// The script's exit code when the folder cannot be created.
pub const EXIT_MKDIR: i32 = 2;
/// The script's exit code when the host has no `openssl` (the shell's own 127).
pub const EXIT_NO_OPENSSL: i32 = 127;

/// The temporary key's name up to the writer's pid: `DEST/.NAME-key.troupe-`.
pub fn tmp_prefix(dest: &str, name: &str) -> String {
    format!("{}/.{name}-key.troupe-", dest.trim_end_matches('/'))
}

/// One round trip: the folder, a private temp key beside the final one (same
/// filesystem, so the final `mv` is atomic), and its CSR on stdout. The temp key's name
/// carries the writer's pid (`PREFIX<pid>.XXXXXX`): one whose pid no longer runs was
/// left by a crash between `genpkey` and `mv`, and is removed first (an older name
/// without a pid too). It prints mktemp's random suffix on the first line, then the
/// CSR: the folder may hold any byte but NUL, a newline too, so no path is printed.
pub fn script(dest: &str, tmp_prefix: &str, key_type: KeyType, subject: &Subject) -> String {
    let genpkey: Vec<String> = ["openssl", "genpkey"]
        .into_iter()
        .chain(key_type.openssl_genpkey_args())
        .map(quote)
        .collect();
    format!(
        "set -e\nmkdir -p -- {dest} || exit {EXIT_MKDIR}\n\
         command -v openssl >/dev/null 2>&1 || exit {EXIT_NO_OPENSSL}\numask 077\n\
         for o in {prefix}*; do [ -e \"$o\" ] || continue; q=${{o##*.troupe-}}; q=${{q%%.*}}; \
         kill -0 \"$q\" 2>/dev/null || [ -d \"/proc/$q\" ] || rm -f -- \"$o\" || :; done\n\
         tmp=$(mktemp {prefix}\"$$\".XXXXXX)\n\
         if ! {genpkey} -out \"$tmp\" 2>/dev/null; then rm -f \"$tmp\"; echo 'openssl genpkey failed' >&2; exit 1; fi\n\
         printf '%s\\n' \"${{tmp##*.troupe-}}\"\n\
         if ! openssl req -new -key \"$tmp\" -subj {subj} -outform PEM; then rm -f \"$tmp\"; exit 1; fi\n",
        dest = quote(dest),
        prefix = quote(tmp_prefix),
        genpkey = genpkey.join(" "),
        subj = quote(&openssl_subj(subject)),
    )
}

/// What a successful [`script`] printed: the temporary key's path and the CSR (PEM).
pub fn read_output<'a>(tmp_prefix: &str, stdout: &'a str) -> (String, &'a str) {
    let (suffix, csr) = stdout.split_once('\n').unwrap_or((stdout, ""));
    (format!("{tmp_prefix}{suffix}"), csr)
}

/// `/CN=…` for `openssl req -subj`, escaping what openssl treats specially. The CA
/// uses only the CSR's public key, so the CSR subject is informational.
pub fn openssl_subj(subject: &Subject) -> String {
    let esc = |v: &str| {
        let mut out = String::new();
        for ch in v.chars() {
            if matches!(ch, '/' | '\\' | '+' | '=') {
                out.push('\\');
            }
            out.push(ch);
        }
        out
    };
    let mut s = String::new();
    for (k, v) in [
        ("C", &subject.c),
        ("ST", &subject.st),
        ("L", &subject.l),
        ("O", &subject.o),
        ("OU", &subject.ou),
    ] {
        if let Some(v) = v {
            s.push_str(&format!("/{k}={}", esc(v)));
        }
    }
    s.push_str(&format!("/CN={}", esc(&subject.cn)));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_subject_is_escaped() {
        let s = Subject {
            cn: "a/b=c".into(),
            o: Some("x+y".into()),
            ..Subject::default()
        };
        assert_eq!(openssl_subj(&s), r"/O=x\+y/CN=a\/b\=c");
    }

    #[test]
    fn output_gives_the_temp_key_and_the_csr() {
        let prefix = tmp_prefix("/etc/etcd/", "server");
        assert_eq!(prefix, "/etc/etcd/.server-key.troupe-");
        let (tmp, csr) = read_output(&prefix, "4242.AbC123\n-----BEGIN CERTIFICATE REQUEST-----\n");
        assert_eq!(tmp, "/etc/etcd/.server-key.troupe-4242.AbC123");
        assert_eq!(csr, "-----BEGIN CERTIFICATE REQUEST-----\n");
    }

    /// The script runs under this machine's `sh` and `openssl`: the key lands beside
    /// the folder's final files with mode 0600, the CSR is printed, and a stale temp
    /// key of a writer that is gone is removed.
    #[test]
    fn script_makes_a_private_key_and_prints_its_csr() {
        if std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_err()
        {
            eprintln!("skipped: no openssl");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("new dir").display().to_string();
        let prefix = tmp_prefix(&dest, "server");
        std::fs::create_dir(&dest).unwrap();
        let stale = format!("{prefix}999999999.old");
        std::fs::write(&stale, "stale").unwrap();
        let subject = Subject {
            cn: "server".into(),
            ..Subject::default()
        };
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(script(&dest, &prefix, KeyType::EcdsaP256, &subject))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        let (tmp, csr) = read_output(&prefix, &stdout);
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"), "{csr}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&tmp).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!std::path::Path::new(&stale).exists(), "stale temp key left");
    }
}
