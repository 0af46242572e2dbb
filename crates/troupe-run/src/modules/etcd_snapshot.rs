//! `etcd-snapshot`: save a verified snapshot of the cluster to the controller and keep
//! the last N — the seed post's first warning ("back up first"), made a task that runs
//! before every membership change.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde_json::json;
use troupe_dsl::registry::{ArgDefault, ArgKind, ArgSpec, ModuleSpec};

use super::args::Reader;
use super::etcd_args::{self, EtcdConn};
use crate::etcd::snapshot;
use crate::module::{Change, Check, Module, Outcome, TaskCx, TaskError};

pub struct EtcdSnapshot;

static SPEC: ModuleSpec = ModuleSpec {
    name: "etcd-snapshot",
    summary: "Save a verified etcd snapshot on the controller, keeping the last N",
    doc: "Streams a snapshot from the first endpoint that answers into `dest` on the controller \
as `PREFIX-YYYYMMDDTHHMMSSZ.db`, written to a `.part` file and renamed only once verified (size, \
etcd's SHA-256 trailer, bbolt magic; plus `etcdctl snapshot status` when etcdctl is installed). \
The file is created 0600 (a new `dest` folder 0700): it holds every key of the cluster. Then deletes \
all but the newest `keep` of the files named exactly `PREFIX-YYYYMMDDTHHMMSSZ.db` (never the one just \
written; other files in `dest` are left alone). With `fresh-for`, a snapshot younger than that counts as \
done (so a re-run right after a run reports `ok`). Registered result: `path`, `size`, `sha256`, \
`revision`, `total_keys`, `pruned`.",
    args: &[
        ArgSpec {
            required: true,
            ..ArgSpec::new(
                "dest",
                ArgKind::Path,
                "Folder on the controller for the snapshots.",
            )
        },
        ArgSpec {
            default: Some(ArgDefault::Str("etcd")),
            ..ArgSpec::new("prefix", ArgKind::String, "File name prefix.")
        },
        ArgSpec {
            default: Some(ArgDefault::Int(5)),
            ..ArgSpec::new("keep", ArgKind::Int, "How many snapshots to keep.")
        },
        ArgSpec::new(
            "fresh-for",
            ArgKind::Duration,
            "Skip when the newest snapshot in `dest` is younger than this.",
        ),
        etcd_args::ENDPOINTS,
        etcd_args::CA,
        etcd_args::CERT,
        etcd_args::KEY,
        etcd_args::TLS_FILES,
        etcd_args::VIA,
    ],
    one_of: &[],
    example: r#"task "back up etcd" {
    etcd-snapshot dest="backups" keep=5 ca="pki/ca.pem" cert="pki/client.pem" key="pki/client-key.pem" {
        endpoints "https://10.1.1.201:2379" "https://10.1.1.202:2379"
    }
}"#,
};

pub struct SnapshotSpec {
    conn: EtcdConn,
    dest: PathBuf,
    prefix: String,
    keep: usize,
    fresh_for: Option<Duration>,
}

#[async_trait]
impl Module for EtcdSnapshot {
    type Spec = SnapshotSpec;
    type Plan = ();

    fn spec(&self) -> &'static ModuleSpec {
        &SPEC
    }

    fn decode(&self, a: &Reader<'_>) -> Result<SnapshotSpec, TaskError> {
        let prefix = a.str("prefix")?;
        if prefix.is_empty() || prefix.contains('/') {
            return Err(TaskError::bad_arg(
                "prefix",
                "must be a non-empty file name prefix without `/`",
            ));
        }
        let keep = a.u64("keep")?;
        if keep == 0 {
            return Err(TaskError::bad_arg("keep", "must keep at least one snapshot"));
        }
        Ok(SnapshotSpec {
            conn: EtcdConn::decode(a)?,
            dest: PathBuf::from(a.str("dest")?),
            prefix,
            keep: keep as usize,
            fresh_for: a.opt_duration("fresh-for")?,
        })
    }

    async fn check(&self, spec: &SnapshotSpec, _cx: &TaskCx<'_>) -> Result<Check<()>, TaskError> {
        if let Some(fresh) = spec.fresh_for
            && let Some(newest) = snapshot::list(&spec.dest, &spec.prefix).pop()
        {
            let age = std::fs::metadata(&newest)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok());
            if age.is_some_and(|a| a < fresh) {
                let mut out = Outcome::ok(json!({"path": newest.display().to_string(), "fresh": true}));
                out.msg = Some(format!("{} is recent enough", newest.display()));
                return Ok(Check::Unchanged(out));
            }
        }
        let name = snapshot::file_name(&spec.prefix, SystemTime::now());
        Ok(Check::Change(Change::new(
            (),
            format!("save an etcd snapshot to {}", spec.dest.join(name).display()),
        )))
    }

    async fn apply(&self, spec: &SnapshotSpec, _plan: (), cx: &TaskCx<'_>) -> Result<Outcome, TaskError> {
        let etcd = spec.conn.connect(cx).await?;
        let path = spec
            .dest
            .join(snapshot::file_name(&spec.prefix, SystemTime::now()));
        let mut info = snapshot::save(&etcd.dialer, &etcd.endpoint, &path).await?;
        info.pruned = snapshot::keep_last(&spec.dest, &spec.prefix, spec.keep, &path)?;
        let mut out = Outcome::changed(serde_json::to_value(&info).unwrap_or_default());
        out.msg = Some(format!(
            "saved {} ({} bytes{}), verified",
            info.path,
            info.size,
            info.total_keys.map(|k| format!(", {k} keys")).unwrap_or_default()
        ));
        Ok(out)
    }
}
