//! The `mkdir`/`chmod`/`chown` shell-outs that modules make on a host (or on the
//! controller), written once: `file`, `copy`/`template`, `fetch` and `pki-cert` set
//! modes and owners and create folders with the same words, quoted by
//! `connection::shell`, and run them as one `sh -c` line (`a && b`) of troupe's own.

use std::sync::Arc;

use crate::connection::shell::quote_argv;
use crate::connection::{Cmd, Connection};
use crate::module::TaskError;

/// `user:group`, `user` or `:group`, as `chown` takes them; `None` when neither is given.
pub fn owner_group(owner: Option<&str>, group: Option<&str>) -> Option<String> {
    match (owner, group) {
        (None, None) => None,
        (Some(o), None) => Some(o.to_string()),
        (None, Some(g)) => Some(format!(":{g}")),
        (Some(o), Some(g)) => Some(format!("{o}:{g}")),
    }
}

/// `mkdir -p` of `path`, with the mode of the new folder when given.
pub fn mkdir(path: &str, mode: Option<u32>) -> String {
    match mode {
        Some(mode) => quote_argv(&["mkdir", "-p", "-m", &format!("{mode:04o}"), "--", path]),
        None => quote_argv(&["mkdir", "-p", "--", path]),
    }
}

pub fn chmod(path: &str, mode: u32) -> String {
    quote_argv(&["chmod", &format!("{mode:04o}"), "--", path])
}

/// `chown WHO` of `path` (see [`owner_group`]); of a symlink itself with `link`.
pub fn chown(path: &str, who: &str, link: bool) -> String {
    if link {
        quote_argv(&["chown", "-h", who, "--", path])
    } else {
        quote_argv(&["chown", who, "--", path])
    }
}

/// Run `steps` on `conn` as one line, each only after the one before succeeded. On
/// failure `fail` makes the error from the command's stderr (trimmed).
pub async fn run(
    conn: &Arc<dyn Connection>,
    steps: &[String],
    fail: impl FnOnce(&str) -> TaskError,
) -> Result<(), TaskError> {
    let out = conn.exec(&Cmd::script(steps.join(" && ")).internal()).await?;
    if out.success() {
        Ok(())
    } else {
        Err(fail(out.stderr_str().trim_end()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::FakeHost;

    #[test]
    fn owner_and_group_as_chown_takes_them() {
        assert_eq!(owner_group(None, None), None);
        assert_eq!(owner_group(Some("etcd"), None).as_deref(), Some("etcd"));
        assert_eq!(owner_group(None, Some("etcd")).as_deref(), Some(":etcd"));
        assert_eq!(
            owner_group(Some("root"), Some("etcd")).as_deref(),
            Some("root:etcd")
        );
    }

    #[tokio::test]
    async fn steps_run_as_one_quoted_line_and_failures_carry_stderr() {
        let host = FakeHost::new();
        let conn: Arc<dyn Connection> = Arc::new(host.clone());
        run(
            &conn,
            &[
                mkdir("/srv/a b", Some(0o700)),
                chmod("/srv/a b", 0o750),
                chown("/srv/l", "etcd", true),
            ],
            |e| TaskError::failed(e),
        )
        .await
        .unwrap();
        assert_eq!(
            host.commands(),
            [
                "sh -c 'mkdir -p -m 0700 -- '\\''/srv/a b'\\'' && chmod 0750 -- '\\''/srv/a b'\\'' && chown -h etcd -- /srv/l'"
            ]
        );
        host.answer("sh -c 'chmod", 1, "", "chmod: no such file\n");
        let err = run(&conn, &[chmod("/nope", 0o600)], |e| {
            TaskError::failed(format!("chmod /nope: {e}"))
        })
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "chmod /nope: chmod: no such file");
    }
}
