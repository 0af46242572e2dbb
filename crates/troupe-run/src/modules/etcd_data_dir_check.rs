//! `etcd-data-dir-check`: refuse to start a member whose data dir belongs to another
//! cluster or to a removed member. etcd ignores `--initial-*` flags when its data dir
//! is not empty, so stale data would make it rejoin as a member that no longer exists
//! (or start a cluster of its own). The check, run before starting the service:
//! a non-empty data dir (`member/`) is fine only on a node that is a current, started
//! member with this name and peer URL, and only when its WAL was written by that member
//! of this cluster ([`crate::etcd::wal`]); anywhere else it is refused, with the fix
//! (move it aside), which `move-aside=#true` performs.

use async_trait::async_trait;
use serde_json::json;
use troupe_dsl::registry::{ArgDefault, ArgKind, ArgSpec, ModuleSpec};

use super::args::Reader;
use super::etcd_args::{self, EtcdConn};
use crate::connection::Cmd;
use crate::connection::shell::quote;
use crate::etcd::views::same_url;
use crate::etcd::wal::{self, WalIdentity};
use crate::etcd::{EtcdError, MemberInfo};
use crate::module::{Change, Check, Module, Outcome, TaskCx, TaskError};

pub struct EtcdDataDirCheck;

static SPEC: ModuleSpec = ModuleSpec {
    name: "etcd-data-dir-check",
    summary: "Refuse (or move aside) an etcd data dir that belongs to no current member",
    doc: "On the task's host, looks at `data-dir`/member. Empty or missing: `ok`. Non-empty and the \
cluster (asked through `endpoints`) has a started member with this `name` and `peer-url`: `ok`, it \
is that member's data, unless its WAL says it was written by another member or cluster (a copy, \
a restore, the wrong `data-dir`). Otherwise the data belongs to another cluster or a removed \
member: fails with the fix (and whose data it is, from the WAL), or with `move-aside=#true` \
renames it to `DATA-DIR.removed-YYYYMMDDTHHMMSSZ`. Registered result: `state` (`empty`, `member`, \
`moved`), `member_id` (for `member`), `moved_to`.",
    args: &[
        ArgSpec {
            default: Some(ArgDefault::Str("/var/lib/etcd")),
            ..ArgSpec::new("data-dir", ArgKind::Path, "etcd's `--data-dir` on the host.")
        },
        ArgSpec {
            required: true,
            ..ArgSpec::new("name", ArgKind::String, "The member name this node runs.")
        },
        ArgSpec {
            required: true,
            ..ArgSpec::new("peer-url", ArgKind::String, "This node's peer URL.")
        },
        ArgSpec {
            default: Some(ArgDefault::Bool(false)),
            ..ArgSpec::new(
                "move-aside",
                ArgKind::Bool,
                "Rename a foreign data dir instead of failing.",
            )
        },
        etcd_args::ENDPOINTS,
        etcd_args::CA,
        etcd_args::CERT,
        etcd_args::KEY,
        etcd_args::TLS_FILES,
        etcd_args::VIA,
    ],
    one_of: &[],
    example: r#"task "no stale etcd data" {
    etcd-data-dir-check name="etcd03" peer-url="https://10.1.1.203:2380" ca="pki/ca.pem" cert="pki/client.pem" key="pki/client-key.pem" {
        endpoints "https://10.1.1.201:2379" "https://10.1.1.202:2379"
    }
}"#,
};

pub struct DirSpec {
    conn: EtcdConn,
    dir: String,
    name: String,
    peer_url: String,
    move_aside: bool,
}

/// Member and cluster of the data in `dir`, from its first WAL file; `None` when it
/// has no WAL yet or the file is not one troupe can read (the check then goes by
/// membership alone, as before etcd wrote anything).
async fn wal_identity(cx: &TaskCx<'_>, dir: &str) -> Result<Option<WalIdentity>, TaskError> {
    let script = format!(
        "set -- {}/member/wal/*.wal\n[ -f \"$1\" ] || exit 3\nexec head -c 4096 -- \"$1\"",
        quote(dir)
    );
    let out = cx.conn.exec(&Cmd::script(script).internal()).await?;
    if !out.success() {
        return Ok(None);
    }
    match wal::identity(&out.stdout) {
        Ok(id) => Ok(Some(id)),
        Err(e) => {
            tracing::debug!("{}: cannot read the WAL in {dir}: {e}", cx.host);
            Ok(None)
        }
    }
}

/// `(its WAL: member … of …)` for the messages.
fn whose(w: WalIdentity, cluster: u64, members: &[MemberInfo]) -> String {
    let m = w.member_id;
    if cluster != 0 && w.cluster_id != cluster {
        return format!(
            " (its WAL: member {m:016x} of another cluster, {:016x}; this one is {cluster:016x})",
            w.cluster_id
        );
    }
    match members.iter().find(|x| x.id == m) {
        Some(x) if !x.name.is_empty() => format!(" (its WAL: member {m:016x}, {}, of this cluster)", x.name),
        Some(_) => format!(" (its WAL: member {m:016x} of this cluster)"),
        None => format!(" (its WAL: member {m:016x} of this cluster, removed since)"),
    }
}

fn stamp() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace(['-', ':'], "")
}

#[async_trait]
impl Module for EtcdDataDirCheck {
    type Spec = DirSpec;
    type Plan = String;

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Reader<'_>) -> Result<DirSpec, TaskError> {
        let dir = a.str("data-dir")?;
        let dir = dir.trim_end_matches('/').to_string();
        if dir.is_empty() {
            return Err(TaskError::bad_arg("data-dir", "must not be `/`"));
        }
        Ok(DirSpec {
            conn: EtcdConn::decode(a)?,
            dir,
            name: a.str("name")?,
            peer_url: a.str("peer-url")?,
            move_aside: a.bool("move-aside")?,
        })
    }

    async fn check(&self, spec: &DirSpec, cx: &TaskCx<'_>) -> Result<Check<String>, TaskError> {
        let member_dir = format!("{}/member", spec.dir);
        if cx.conn.stat(&member_dir).await?.is_none() {
            return Ok(Check::Unchanged(Outcome::ok(json!({"state": "empty"}))));
        }
        let wal = wal_identity(cx, &spec.dir).await?;
        let mut etcd = spec.conn.connect(cx).await?;
        let (cluster, members) = etcd.members().await?;
        let mine = members
            .iter()
            .find(|m| m.peer_urls.iter().any(|p| same_url(p, &spec.peer_url)));
        let whose = wal.map(|w| whose(w, cluster, &members)).unwrap_or_default();
        let not_member = format!("but {} is not a started member of this cluster", spec.name);
        let detail = match mine {
            Some(m) if m.started && m.name == spec.name => match wal {
                // The member runs, but this is not its data (a copy, a restore, the
                // wrong `data-dir`): starting etcd on it would be someone else.
                Some(w) if w.member_id != m.id || (cluster != 0 && w.cluster_id != cluster) => format!(
                    "etcd data{whose}, but {} is member {:016x} of cluster {cluster:016x}",
                    spec.name, m.id
                ),
                _ => {
                    return Ok(Check::Unchanged(Outcome::ok(json!({
                        "state": "member",
                        "member_id": format!("{:016x}", m.id),
                    }))));
                }
            },
            Some(m) if m.started => format!(
                "etcd data{whose}, and peer URL {} belongs to member {}: {not_member}",
                spec.peer_url, m.name
            ),
            Some(_) => format!(
                "etcd data from an earlier start{whose}, while the member was added anew and has not joined: {not_member}"
            ),
            None => format!(
                "etcd data of a member the cluster does not list (removed, or of another cluster){whose}: {not_member}"
            ),
        };
        let date = stamp();
        let target = format!("{}.removed-{date}", spec.dir);
        if !spec.move_aside {
            return Err(EtcdError::ForeignDataDir {
                host: cx.host.to_string(),
                dir: spec.dir.clone(),
                detail,
                name: spec.name.clone(),
                date,
            }
            .into());
        }
        let summary = format!("move foreign etcd data {} aside to {target} ({detail})", spec.dir);
        Ok(Check::Change(Change::new(target, summary)))
    }

    async fn apply(&self, spec: &DirSpec, target: String, cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
        let out = cx
            .conn
            .exec(&Cmd::argv(["mv", "--", spec.dir.as_str(), target.as_str()]).internal())
            .await?;
        let moved_to = if out.success() {
            target
        } else {
            // A data dir that is a mount point (its own disk, or a bind mount) cannot be
            // renamed: move its `member` folder aside inside it instead. etcd only looks
            // at `member`, so the dir then counts as empty.
            let inner = format!(
                "{}/member.removed-{}",
                spec.dir,
                target.rsplit("removed-").next().unwrap_or("old")
            );
            let member = format!("{}/member", spec.dir);
            let second = cx
                .conn
                .exec(&Cmd::argv(["mv", "--", member.as_str(), inner.as_str()]).internal())
                .await?;
            if !second.success() {
                return Err(TaskError::failed(format!(
                    "cannot move the foreign etcd data aside: mv {} {target}: {}; mv {member} {inner}: {}",
                    spec.dir,
                    out.stderr_str().trim(),
                    second.stderr_str().trim()
                )));
            }
            inner
        };
        let mut outcome = Outcome::changed(json!({"state": "moved", "moved_to": moved_to}));
        outcome.msg = Some(format!(
            "moved the foreign etcd data in {} to {moved_to}",
            spec.dir
        ));
        Ok(outcome)
    }
}
