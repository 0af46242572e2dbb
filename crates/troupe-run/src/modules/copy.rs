//! `copy`: put a file from the controller (or inline `content`) on the host. The host's
//! copy is compared by the SHA-256 that `Connection::stat` computes remotely, so an
//! unchanged file costs one round trip and no transfer. Writes are atomic and carry
//! mode and owner. `template` renders first and then uses the same code.

use async_trait::async_trait;
use serde_json::json;
use sha2::{Digest, Sha256};
use troupe_dsl::registry::{ArgDefault, ArgKind, ArgSpec, ModuleSpec};

use super::args::Reader;
use super::attrs;
use crate::connection::shell::quote_argv;
use crate::connection::{FileAttrs, FileKind, FileStat};
use crate::module::{Change, Check, Diff, Module, Outcome, TaskCx, TaskError};

pub struct Copy;

/// Arguments shared by `copy` and `template` after the source.
pub(crate) const DEST_ARGS: [ArgSpec; 4] = [
    ArgSpec {
        required: true,
        stat: true,
        ..ArgSpec::new("dest", ArgKind::Path, "Path of the file on the host.")
    },
    ArgSpec::new(
        "mode",
        ArgKind::Mode,
        "Permission bits, e.g. 0o644; an existing file keeps its mode when absent.",
    ),
    ArgSpec::new("owner", ArgKind::String, "Owning user name."),
    ArgSpec::new("group", ArgKind::String, "Owning group name."),
];

pub(crate) const BACKUP_ARG: ArgSpec = ArgSpec {
    default: Some(ArgDefault::Bool(false)),
    ..ArgSpec::new(
        "backup",
        ArgKind::Bool,
        "Keep the previous content as `DEST.YYYYMMDDTHHMMSS~` before replacing it.",
    )
};

static SPEC: ModuleSpec = ModuleSpec {
    name: "copy",
    summary: "Put a file from the controller, or inline content, on the host",
    doc: "`src` is looked up in the `files/` folder of the task's role, then of the playbook \
(an absolute path is used as is); `content` gives the text inline. The host's file is compared by \
SHA-256 computed on the host, so nothing is transferred when it is already right. The write is \
atomic (temporary file in the same directory, fsync, rename). With `--diff`, text files under \
64 KiB show a unified diff. Registered result: `dest`, `checksum`, `size`.",
    args: &[
        ArgSpec {
            positional: true,
            ..ArgSpec::new(
                "src",
                ArgKind::Path,
                "File on the controller, under a `files/` folder.",
            )
        },
        ArgSpec::new("content", ArgKind::String, "The file's content, inline."),
        DEST_ARGS[0],
        DEST_ARGS[1],
        DEST_ARGS[2],
        DEST_ARGS[3],
        BACKUP_ARG,
        ArgSpec {
            default: Some(ArgDefault::Bool(false)),
            ..ArgSpec::new(
                "ca-key",
                ArgKind::Bool,
                "Allow `src` to be the private key of a CA (the key beside its CA certificate, \
                 `NAME-key.pem`/`NAME.pem` or `NAME.key`/`NAME.crt`). Without it such a copy is \
                 refused: a CA key stays on the controller unless a task says otherwise \
                 (kubeadm control-plane nodes do need theirs).",
            )
        },
    ],
    one_of: &[&["src", "content"]],
    example: r#"task "motd" {
    copy content="Managed by troupe\n" dest="/etc/motd" mode=0o644
}"#,
};

#[derive(Debug, Clone)]
pub struct DestSpec {
    pub dest: String,
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub backup: bool,
}

impl DestSpec {
    pub(crate) fn decode(a: &Reader<'_>) -> Result<Self, TaskError> {
        let dest = a.str("dest")?;
        if dest.is_empty() || dest.ends_with('/') {
            return Err(TaskError::bad_arg("dest", "must be a file path, not a directory"));
        }
        Ok(DestSpec {
            dest,
            mode: a.opt_mode("mode")?,
            owner: a.opt_str("owner")?,
            group: a.opt_str("group")?,
            backup: a.bool("backup")?,
        })
    }
}

#[derive(Debug, Clone)]
pub enum Source {
    File(String),
    Content(String),
}

#[derive(Debug, Clone)]
pub struct CopySpec {
    pub source: Source,
    pub dest: DestSpec,
    /// `ca-key=#true`: the task says it means to copy a CA's private key.
    pub ca_key: bool,
}

/// What to do to the destination.
pub enum PutPlan {
    /// Write the content (new file or different content), with these attributes.
    Write { content: Vec<u8>, existed: bool },
    /// Content is right; only mode/owner differ.
    Attrs,
}

/// Files larger than this, or not UTF-8, get a placeholder instead of a text diff.
const DIFF_LIMIT: u64 = 64 * 1024;

/// The shared check of `copy` and `template`: compare `content` with `dest` on the host.
pub(crate) async fn check_put(
    dest: &DestSpec,
    content: Vec<u8>,
    cx: &TaskCx<'_>,
) -> Result<Check<PutPlan>, TaskError> {
    let sha = hex::encode(Sha256::digest(&content));
    let stat = cx.conn.stat(&dest.dest).await?;
    match &stat {
        Some(st) if st.kind == FileKind::Directory => {
            return Err(TaskError::failed_help(
                format!("{} is a directory", dest.dest),
                "give the full path of the file to write as `dest`",
            ));
        }
        _ => {}
    }
    let same_content = stat
        .as_ref()
        .is_some_and(|st| st.kind == FileKind::File && st.sha256.as_deref() == Some(sha.as_str()));
    let attrs_differ = stat.as_ref().is_some_and(|st| attrs_differ(dest, st));
    let data = json!({"dest": dest.dest, "checksum": sha, "size": content.len()});
    if same_content && !attrs_differ {
        return Ok(Check::Unchanged(Outcome::ok(data)));
    }
    if same_content {
        return Ok(Check::Change(
            Change::new(PutPlan::Attrs, format!("set mode/owner of {}", dest.dest))
                .touching(dest.dest.clone(), false),
        ));
    }
    let existed = stat.is_some();
    let summary = if existed {
        format!("update {}", dest.dest)
    } else {
        format!("create {}", dest.dest)
    };
    let diff = Diff {
        path: dest.dest.clone(),
        before: match &stat {
            None => String::new(),
            // Read only if `--diff` asks (the executor does it): no round trip otherwise.
            Some(st) if st.kind == FileKind::File && st.size <= DIFF_LIMIT => {
                Diff::BEFORE_FROM_HOST.to_string()
            }
            Some(st) => format!("<{} bytes not shown>\n", st.size),
        },
        after: if content.len() as u64 <= DIFF_LIMIT {
            Diff::text(&content)
        } else {
            format!("<{} bytes not shown>\n", content.len())
        },
    };
    let change = Change::new(PutPlan::Write { content, existed }, summary).with_diff(diff);
    // A backup adds a file next to `dest` too: leave that to the general rule.
    Ok(Check::Change(if dest.backup {
        change
    } else {
        change.touching(dest.dest.clone(), false)
    }))
}

fn attrs_differ(dest: &DestSpec, st: &FileStat) -> bool {
    dest.mode.is_some_and(|m| st.mode & 0o7777 != m)
        || dest.owner.as_ref().is_some_and(|o| &st.owner != o)
        || dest.group.as_ref().is_some_and(|g| &st.group != g)
}

pub(crate) async fn apply_put(dest: &DestSpec, plan: PutPlan, cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
    match plan {
        PutPlan::Write { content, existed } => {
            if dest.backup && existed {
                let stamp = time::OffsetDateTime::now_utc();
                let suffix = format!(
                    "{:04}{:02}{:02}T{:02}{:02}{:02}~",
                    stamp.year(),
                    u8::from(stamp.month()),
                    stamp.day(),
                    stamp.hour(),
                    stamp.minute(),
                    stamp.second()
                );
                let backup = format!("{}.{suffix}", dest.dest);
                run_ok(
                    cx,
                    &[quote_argv(&["cp", "-p", "--", &dest.dest, &backup])],
                    "back up",
                )
                .await?;
            }
            let attrs = FileAttrs {
                mode: dest.mode,
                owner: dest.owner.clone(),
                group: dest.group.clone(),
            };
            cx.conn.write_file(&dest.dest, &content, &attrs).await?;
            let sha = hex::encode(Sha256::digest(&content));
            Ok(Outcome::changed(
                json!({"dest": dest.dest, "checksum": sha, "size": content.len()}),
            ))
        }
        PutPlan::Attrs => {
            let mut steps = Vec::new();
            if let Some(mode) = dest.mode {
                steps.push(attrs::chmod(&dest.dest, mode));
            }
            if let Some(who) = attrs::owner_group(dest.owner.as_deref(), dest.group.as_deref()) {
                steps.push(attrs::chown(&dest.dest, &who, false));
            }
            run_ok(cx, &steps, "set attributes of").await?;
            Ok(Outcome::changed(json!({"dest": dest.dest})))
        }
    }
}

async fn run_ok(cx: &TaskCx<'_>, steps: &[String], what: &str) -> Result<(), TaskError> {
    attrs::run(cx.conn, steps, |stderr| {
        TaskError::failed(format!("could not {what} the file: {stderr}"))
    })
    .await
}

#[async_trait]
impl Module for Copy {
    type Spec = CopySpec;
    type Plan = PutPlan;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Reader<'_>) -> Result<CopySpec, TaskError> {
        let source = match (a.opt_str("src")?, a.opt_str("content")?) {
            (Some(src), None) => Source::File(src),
            (None, Some(content)) => Source::Content(content),
            _ => {
                return Err(TaskError::bad_arg(
                    "src",
                    "give exactly one of `src` or `content`",
                ));
            }
        };
        Ok(CopySpec {
            source,
            dest: DestSpec::decode(a)?,
            ca_key: a.bool("ca-key")?,
        })
    }

    async fn check(&self, spec: &CopySpec, cx: &TaskCx<'_>) -> Result<Check<PutPlan>, TaskError> {
        let content = match &spec.source {
            Source::Content(c) => c.clone().into_bytes(),
            Source::File(src) => {
                let path = cx.find_file("files", src)?;
                let content = tokio::fs::read(&path).await.map_err(|e| {
                    TaskError::failed(format!("cannot read {} on the controller: {e}", path.display()))
                })?;
                if !spec.ca_key
                    && let Some(cert) = crate::pki::guard::cert_beside_key(&path)
                    && let Ok(cert_pem) = tokio::fs::read_to_string(&cert).await
                    && crate::pki::guard::is_ca_key(&cert_pem, &content)
                {
                    return Err(TaskError::failed_help(
                        format!(
                            "{} is the private key of the CA {}: not copying it to {}",
                            path.display(),
                            cert.display(),
                            cx.host
                        ),
                        "a CA key stays on the controller; copy the certificate instead, or add \
                         `ca-key=#true` to the task if this host really needs the CA's key",
                    ));
                }
                content
            }
        };
        check_put(&spec.dest, content, cx).await
    }

    async fn apply(&self, spec: &CopySpec, plan: PutPlan, cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
        apply_put(&spec.dest, plan, cx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::testing::{FakeHost, args};

    #[tokio::test]
    async fn writes_then_is_unchanged() {
        let host = FakeHost::new();
        let a = args(r#"{"content": "hello\n", "dest": "/etc/motd", "mode": "0600"}"#);
        let out = host.run(&Copy, a.clone()).await.unwrap();
        assert!(out.changed);
        let f = host.file("/etc/motd").unwrap();
        assert_eq!(f.content, b"hello\n");
        assert_eq!(f.mode, 0o600);
        assert_eq!(host.check(&Copy, a).await.unwrap(), None);
    }

    #[tokio::test]
    async fn mode_only_change_does_not_rewrite() {
        let host = FakeHost::new();
        host.put_file("/etc/motd", b"hello\n");
        let out = host
            .run(
                &Copy,
                args(r#"{"content": "hello\n", "dest": "/etc/motd", "mode": 384}"#),
            )
            .await
            .unwrap();
        assert!(out.changed);
        assert_eq!(host.commands(), ["sh -c 'chmod 0600 -- /etc/motd'"]);
    }

    #[tokio::test]
    async fn changed_content_has_a_diff() {
        let host = FakeHost::new();
        host.put_file("/etc/motd", b"old\n");
        let (summary, diffs) = host
            .check(&Copy, args(r#"{"content": "new\n", "dest": "/etc/motd"}"#))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(summary, "update /etc/motd");
        assert_eq!(diffs, 1);
    }

    #[tokio::test]
    async fn src_is_found_under_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        std::fs::write(dir.path().join("files/app.conf"), "x=1\n").unwrap();
        let mut host = FakeHost::new();
        host.search_dirs = vec![dir.path().to_path_buf()];
        host.run(&Copy, args(r#"{"src": "app.conf", "dest": "/etc/app.conf"}"#))
            .await
            .unwrap();
        assert_eq!(host.file("/etc/app.conf").unwrap().content, b"x=1\n");
        let err = host
            .run(&Copy, args(r#"{"src": "missing.conf", "dest": "/etc/x"}"#))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not found"), "{err}");
    }
}
