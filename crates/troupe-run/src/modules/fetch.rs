//! `fetch`: copy a file from the host to the controller (a kubeadm CA, an admin
//! kubeconfig, a snapshot). Checksums on both sides decide whether anything moves; the
//! controller-side write goes through the controller connection, so it is atomic too.

use async_trait::async_trait;
use serde_json::json;
use troupe_dsl::registry::{ArgKind, ArgSpec, ModuleSpec};

use super::args;
use crate::connection::{Cmd, FileAttrs, FileKind};
use crate::module::{Args, Change, Check, Module, Outcome, TaskCx, TaskError};

pub struct Fetch;

static SPEC: ModuleSpec = ModuleSpec {
    name: "fetch",
    summary: "Copy a file from the host to the controller",
    doc: "Stores `src` from the host under the controller folder `dest`: as `DEST/HOST/SRC` \
(the host's inventory name, then the full source path) so files of several hosts never collide, \
or as `DEST/BASENAME` with `flat=#true`. Compared by SHA-256 on both sides; transferred only \
when different. A relative `dest` is relative to the directory troupe runs in. A missing `src` \
fails the task unless `fail-on-missing=#false`. Registered result: `dest`, `checksum`, `size`.",
    args: &[
        ArgSpec {
            required: true,
            positional: true,
            ..ArgSpec::new("src", ArgKind::Path, "File on the host.")
        },
        ArgSpec {
            required: true,
            ..ArgSpec::new("dest", ArgKind::Path, "Folder on the controller.")
        },
        ArgSpec {
            default: Some("#false"),
            ..ArgSpec::new(
                "flat",
                ArgKind::Bool,
                "Store as `DEST/BASENAME` instead of `DEST/HOST/SRC`.",
            )
        },
        ArgSpec {
            default: Some("#true"),
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

#[async_trait]
impl Module for Fetch {
    type Spec = FetchSpec;
    type Plan = String;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Args) -> Result<FetchSpec, TaskError> {
        let spec = FetchSpec {
            src: args::req_str(a, "src")?,
            dest: args::req_str(a, "dest")?,
            flat: args::bool_or(a, "flat", false)?,
            fail_on_missing: args::bool_or(a, "fail-on-missing", true)?,
        };
        if spec.src.is_empty() || spec.src.ends_with('/') {
            return Err(TaskError::bad_arg("src", "must be a file path"));
        }
        if spec.src.split('/').any(|c| c == "..") {
            return Err(TaskError::bad_arg("src", "must not contain `..`"));
        }
        Ok(spec)
    }

    async fn check(&self, spec: &FetchSpec, cx: &TaskCx<'_>) -> Result<Check<String>, TaskError> {
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
        let here = cx.controller.stat(&local).await?;
        if here.as_ref().and_then(|s| s.sha256.as_ref()) == remote.sha256.as_ref() && remote.sha256.is_some()
        {
            return Ok(Check::Unchanged(Outcome::ok(
                json!({"dest": local, "checksum": remote.sha256, "size": remote.size}),
            )));
        }
        Ok(Check::Change(Change::new(
            local.clone(),
            format!("fetch {} to {local}", spec.src),
        )))
    }

    async fn apply(&self, spec: &FetchSpec, local: String, cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
        let bytes = cx
            .conn
            .read_file(&spec.src)
            .await?
            .ok_or_else(|| TaskError::failed(format!("{} disappeared from the host", spec.src)))?;
        if let Some((parent, _)) = local.rsplit_once('/') {
            if !parent.is_empty() {
                let out = cx
                    .controller
                    .exec(&Cmd::argv(["mkdir", "-p", "--", parent]).internal())
                    .await?;
                if !out.success() {
                    return Err(TaskError::failed(format!(
                        "cannot create {parent} on the controller: {}",
                        out.stderr_str().trim_end()
                    )));
                }
            }
        }
        cx.controller
            .write_file(&local, &bytes, &FileAttrs::default())
            .await?;
        use sha2::Digest;
        let sha = hex::encode(sha2::Sha256::digest(&bytes));
        Ok(Outcome::changed(
            json!({"dest": local, "checksum": sha, "size": bytes.len()}),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{FakeHost, args};

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

    #[test]
    fn flat_uses_the_basename() {
        let spec = Fetch
            .decode(&args(r#"{"src": "/a/b/c.pem", "dest": "out/", "flat": true}"#))
            .unwrap();
        assert_eq!(spec.local_path("h"), "out/c.pem");
    }
}
