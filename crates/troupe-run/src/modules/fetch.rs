//! `fetch`: copy a file from the host to the controller (a kubeadm CA, an admin
//! kubeconfig, a snapshot). Checksums on both sides decide whether anything moves; the
//! controller-side write goes through the controller connection, so it is atomic too.
//! The copy gets the remote file's permission bits (never more): a node's 0600 key must
//! not become world-readable on the controller.

use async_trait::async_trait;
use serde_json::json;
use troupe_dsl::registry::{ArgDefault, ArgKind, ArgSpec, ModuleSpec};

use super::args::Reader;
use super::attrs;
use crate::connection::{FileAttrs, FileKind};
use crate::module::{Change, Check, Module, Outcome, TaskCx, TaskError};

pub struct Fetch;

static SPEC: ModuleSpec = ModuleSpec {
    name: "fetch",
    summary: "Copy a file from the host to the controller",
    doc: "Stores `src` from the host under the controller folder `dest`: as `DEST/HOST/SRC` \
(the host's inventory name, then the full source path) so files of several hosts never collide, \
or as `DEST/BASENAME` with `flat=#true`. Compared by SHA-256 on both sides; transferred only \
when different. The controller's copy has the remote file's permission bits (setuid, setgid and sticky dropped), from the moment it is created; a copy whose bits differ is corrected. A relative `dest` is relative to the directory troupe runs in. A missing `src` \
fails the task unless `fail-on-missing=#false`. Registered result: `dest`, `checksum`, `size`, `mode`.",
    args: &[
        ArgSpec {
            required: true,
            positional: true,
            stat: true,
            ..ArgSpec::new("src", ArgKind::Path, "File on the host.")
        },
        ArgSpec {
            required: true,
            ..ArgSpec::new("dest", ArgKind::Path, "Folder on the controller.")
        },
        ArgSpec {
            default: Some(ArgDefault::Bool(false)),
            ..ArgSpec::new(
                "flat",
                ArgKind::Bool,
                "Store as `DEST/BASENAME` instead of `DEST/HOST/SRC`.",
            )
        },
        ArgSpec {
            default: Some(ArgDefault::Bool(true)),
            ..ArgSpec::new(
                "fail-on-missing",
                ArgKind::Bool,
                "Fail when `src` does not exist.",
            )
        },
    ],
    one_of: &[],
    example: r#"task "Fetch the kubeadm etcd CA" {
    fetch "/etc/kubernetes/pki/etcd/ca.crt" dest="fetched"
}"#,
};

#[derive(Debug, Clone)]
pub struct FetchSpec {
    pub src: String,
    pub dest: String,
    pub flat: bool,
    pub fail_on_missing: bool,
}

impl FetchSpec {
    fn local_path(&self, host: &str) -> String {
        let dest = self.dest.trim_end_matches('/');
        let dest = if dest.is_empty() { "." } else { dest };
        if self.flat {
            let base = self.src.rsplit('/').next().unwrap_or(&self.src);
            format!("{dest}/{base}")
        } else {
            format!("{dest}/{host}/{}", self.src.trim_start_matches('/'))
        }
    }
}

/// Where the controller's copy goes and the permission bits it gets.
#[derive(Debug)]
pub struct FetchPlan {
    local: String,
    mode: u32,
}

#[async_trait]
impl Module for Fetch {
    type Spec = FetchSpec;
    type Plan = FetchPlan;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Reader<'_>) -> Result<FetchSpec, TaskError> {
        let spec = FetchSpec {
            src: a.str("src")?,
            dest: a.str("dest")?,
            flat: a.bool("flat")?,
            fail_on_missing: a.bool("fail-on-missing")?,
        };
        if spec.src.is_empty() || spec.src.ends_with('/') {
            return Err(TaskError::bad_arg("src", "must be a file path"));
        }
        if spec.src.split('/').any(|c| c == "..") {
            return Err(TaskError::bad_arg("src", "must not contain `..`"));
        }
        Ok(spec)
    }

    async fn check(&self, spec: &FetchSpec, cx: &TaskCx<'_>) -> Result<Check<FetchPlan>, TaskError> {
        let local = spec.local_path(cx.host);
        let remote = cx.conn.stat(&spec.src).await?;
        let remote = match remote {
            Some(st) if st.kind == FileKind::File => st,
            Some(_) => {
                return Err(TaskError::failed(format!(
                    "{} on the host is not a regular file",
                    spec.src
                )));
            }
            None if spec.fail_on_missing => {
                return Err(TaskError::failed_help(
                    format!("{} does not exist on the host", spec.src),
                    "set `fail-on-missing=#false` if that is expected",
                ));
            }
            None => {
                let mut outcome = Outcome::ok(json!({"dest": local, "missing": true}));
                outcome.msg = Some(format!("{} is missing on the host", spec.src));
                return Ok(Check::Unchanged(outcome));
            }
        };
        let mode = remote.mode & 0o777;
        let here = cx.controller.stat(&local).await?;
        let same_content = here.as_ref().and_then(|s| s.sha256.as_ref()) == remote.sha256.as_ref()
            && remote.sha256.is_some();
        let same_mode = here.as_ref().is_some_and(|s| s.mode & 0o7777 == mode);
        if same_content && same_mode {
            return Ok(Check::Unchanged(Outcome::ok(
                json!({"dest": local, "checksum": remote.sha256, "size": remote.size, "mode": format!("{mode:04o}")}),
            )));
        }
        let summary = if same_content {
            format!("mode of {local} to {mode:04o} (as {} on the host)", spec.src)
        } else {
            format!("fetch {} to {local}", spec.src)
        };
        Ok(Check::Change(Change::new(FetchPlan { local, mode }, summary)))
    }

    async fn apply(&self, spec: &FetchSpec, plan: FetchPlan, cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
        let FetchPlan { local, mode } = plan;
        let bytes = cx
            .conn
            .read_file(&spec.src)
            .await?
            .ok_or_else(|| TaskError::failed(format!("{} disappeared from the host", spec.src)))?;
        if let Some((parent, _)) = local.rsplit_once('/') {
            if !parent.is_empty() {
                attrs::run(cx.controller, &[attrs::mkdir(parent, None)], |stderr| {
                    TaskError::failed(format!("cannot create {parent} on the controller: {stderr}"))
                })
                .await?;
            }
        }
        cx.controller
            .write_file(
                &local,
                &bytes,
                &FileAttrs {
                    mode: Some(mode),
                    ..FileAttrs::default()
                },
            )
            .await?;
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        Ok(Outcome::changed(
            json!({"dest": local, "checksum": sha, "size": bytes.len(), "mode": format!("{mode:04o}")}),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{FakeHost, args, decode};

    #[tokio::test]
    async fn fetches_per_host_then_unchanged() {
        let host = FakeHost::named("podc01");
        host.put_file("/etc/kubernetes/pki/ca.crt", b"CERT");
        let a = args(r#"{"src": "/etc/kubernetes/pki/ca.crt", "dest": "out"}"#);
        let out = host.run(&Fetch, a.clone()).await.unwrap();
        assert!(out.changed);
        // The fake's controller is the same in-memory host.
        assert_eq!(
            host.file("out/podc01/etc/kubernetes/pki/ca.crt").unwrap().content,
            b"CERT"
        );
        assert!(!host.run(&Fetch, a).await.unwrap().changed);
    }

    #[tokio::test]
    async fn the_copy_keeps_the_remote_mode_and_a_wrong_one_is_corrected() {
        let host = FakeHost::named("podc01");
        host.put_file("/etc/kubernetes/pki/etcd/peer.key", b"KEY");
        host.set_mode("/etc/kubernetes/pki/etcd/peer.key", 0o4600);
        let a = args(r#"{"src": "/etc/kubernetes/pki/etcd/peer.key", "dest": "out", "flat": true}"#);
        assert!(host.run(&Fetch, a.clone()).await.unwrap().changed);
        assert_eq!(
            host.file("out/peer.key").unwrap().mode,
            0o600,
            "setuid dropped, 0600 kept"
        );
        assert!(!host.run(&Fetch, a.clone()).await.unwrap().changed);
        host.set_mode("out/peer.key", 0o644);
        let out = host.run(&Fetch, a).await.unwrap();
        assert!(out.changed, "a copy left readable by an older fetch is corrected");
        assert_eq!(host.file("out/peer.key").unwrap().mode, 0o600);
    }

    #[test]
    fn flat_uses_the_basename() {
        let spec = decode(&Fetch, r#"{"src": "/a/b/c.pem", "dest": "out/", "flat": true}"#).unwrap();
        assert_eq!(spec.local_path("h"), "out/c.pem");
    }
}
