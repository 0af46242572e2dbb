//! Snapshots saved to the controller before membership changes, because a change gone
//! wrong (or an operator wiping `/var/lib/etcd`, as the seed post warns) must never
//! cost the cluster's data.
//!
//! The file is streamed from a member's Maintenance/Snapshot RPC to `NAME.part`,
//! verified, then renamed into place, so a file with the final name is always whole.
//! Verification: the stream ends with a SHA-256 of everything before it (etcd appends
//! it), and the body is a bbolt database (magic number in the first meta page). When
//! `etcdctl` is installed on the controller, `etcdctl snapshot status` adds revision
//! and key count. Old snapshots beyond the last N are deleted.
//!
//! A snapshot holds every key of the cluster — with Kubernetes, every Secret — so it
//! is private from its first byte: the `.part` file is created 0600 with `O_EXCL`
//! (never through a symlink someone left at its name), a new folder is 0700, and a
//! stream that fails leaves no `.part` behind. Pruning touches only names troupe
//! itself writes (`PREFIX-YYYYMMDDTHHMMSSZ.db`, see [`is_snapshot_name`]) and never the
//! snapshot just taken, so foreign files sharing a prefix (`etcd-prod-….db`) are safe.
//!
//! The controller is the machine troupe runs on, so this uses the local filesystem
//! directly (streaming: a kube etcd snapshot can be hundreds of MB).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::EtcdError;
use super::dial::Dialer;

/// bbolt's magic number, at offset 16 of its first meta page.
const BOLT_MAGIC: u32 = 0xED0C_DAED;

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// From `etcdctl snapshot status`, when available.
    pub revision: Option<i64>,
    pub total_keys: Option<i64>,
    /// Older snapshots deleted to keep the last N.
    pub pruned: Vec<String>,
}

fn err(path: &Path, detail: impl Into<String>) -> EtcdError {
    EtcdError::Snapshot {
        path: path.display().to_string(),
        detail: detail.into(),
    }
}

/// `etcd-20261125T101152Z.db` for `prefix` = `etcd`.
pub fn file_name(prefix: &str, at: SystemTime) -> String {
    let stamp = humantime::format_rfc3339_seconds(at)
        .to_string()
        .replace(['-', ':'], "");
    format!("{prefix}-{stamp}.db")
}

/// Stream a snapshot from `endpoint` into `dest`, verify it, and return what was saved.
pub async fn save(dialer: &Dialer, endpoint: &str, dest: &Path) -> Result<SnapshotInfo, EtcdError> {
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Only folders made here get 0700; an existing one is the operator's.
        let mut builder = tokio::fs::DirBuilder::new();
        builder.recursive(true).mode(0o700);
        builder
            .create(dir)
            .await
            .map_err(|e| err(dest, format!("cannot create its folder: {e}")))?;
    }
    let part = dest.with_extension("db.part");
    let mut client = dialer.client(endpoint, None).await?;
    let mut stream = tokio::time::timeout(dialer.request_timeout, client.snapshot())
        .await
        .map_err(|_| err(dest, format!("{endpoint} did not start sending a snapshot")))?
        .map_err(|e| err(dest, format!("{endpoint}: {}", super::dial::describe(&e))))?;
    // `create_new` is O_CREAT|O_EXCL: it fails on anything already at the name, a
    // symlink included, instead of writing through it. The mode applies from creation.
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&part)
        .await
        .map_err(|e| {
            let detail = if e.kind() == std::io::ErrorKind::AlreadyExists {
                "already exists; not writing through it (a symlink or a concurrent run?): move it away"
                    .to_string()
            } else {
                e.to_string()
            };
            err(&part, detail)
        })?;
    let idle = Duration::from_secs(60);
    let streamed = async {
        loop {
            let msg = tokio::time::timeout(idle, stream.message())
                .await
                .map_err(|_| {
                    err(
                        dest,
                        format!("{endpoint} stopped sending for {}s", idle.as_secs()),
                    )
                })?
                .map_err(|e| err(dest, format!("{endpoint}: {}", super::dial::describe(&e))))?;
            let Some(msg) = msg else { break };
            file.write_all(msg.blob())
                .await
                .map_err(|e| err(&part, e.to_string()))?;
        }
        file.sync_all().await.map_err(|e| err(&part, e.to_string()))
    }
    .await;
    drop(file);
    let verified = match streamed {
        Ok(()) => verify(&part).await,
        Err(e) => Err(e),
    };
    let (size, sha256) = match verified {
        Ok(v) => v,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    if let Err(e) = tokio::fs::rename(&part, dest).await {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(err(dest, e.to_string()));
    }
    let (revision, total_keys) = etcdctl_status(dest).await;
    Ok(SnapshotInfo {
        path: dest.display().to_string(),
        size,
        sha256,
        revision,
        total_keys,
        pruned: Vec::new(),
    })
}

/// Check the SHA-256 trailer and the bbolt magic; return size and the trailer hash.
pub async fn verify(path: &Path) -> Result<(u64, String), EtcdError> {
    let mut f = tokio::fs::File::open(path)
        .await
        .map_err(|e| err(path, e.to_string()))?;
    let size = f.metadata().await.map_err(|e| err(path, e.to_string()))?.len();
    if size < 4096 + 32 {
        return Err(err(
            path,
            format!("only {size} bytes: too small to be an etcd snapshot"),
        ));
    }
    let body = size - 32;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut left = body;
    let mut head = [0u8; 24];
    let mut first = true;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = f
            .read(&mut buf[..want])
            .await
            .map_err(|e| err(path, e.to_string()))?;
        if n == 0 {
            return Err(err(path, "file shrank while being verified"));
        }
        if first {
            head.copy_from_slice(&buf[..24]);
            first = false;
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    let mut trailer = [0u8; 32];
    f.seek(std::io::SeekFrom::Start(body))
        .await
        .map_err(|e| err(path, e.to_string()))?;
    f.read_exact(&mut trailer)
        .await
        .map_err(|e| err(path, e.to_string()))?;
    let digest = hasher.finalize();
    if digest.as_slice() != trailer {
        return Err(err(
            path,
            "SHA-256 trailer does not match the content: the snapshot is corrupt or truncated",
        ));
    }
    let magic = u32::from_le_bytes([head[16], head[17], head[18], head[19]]);
    if magic != BOLT_MAGIC {
        return Err(err(path, format!("not a bbolt database (magic {magic:#x})")));
    }
    Ok((size, hex::encode(trailer)))
}

/// `etcdctl snapshot status FILE -w json` → (revision, totalKey), when etcdctl exists.
async fn etcdctl_status(path: &Path) -> (Option<i64>, Option<i64>) {
    let out = tokio::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .await;
    let Ok(out) = out else { return (None, None) };
    if !out.status.success() {
        return (None, None);
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return (None, None);
    };
    (
        v.get("revision").and_then(|x| x.as_i64()),
        v.get("totalKey").and_then(|x| x.as_i64()),
    )
}

/// Whether `name` is exactly what [`file_name`] makes for `prefix`:
/// `PREFIX-YYYYMMDDTHHMMSSZ.db`, digits where the stamp has them. Anything else in the
/// folder (`etcd-prod-20260101T000000Z.db`, `etcd-manual.db`) is not troupe's.
pub fn is_snapshot_name(name: &str, prefix: &str) -> bool {
    let Some(stamp) = name
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|r| r.strip_suffix(".db"))
    else {
        return false;
    };
    let b = stamp.as_bytes();
    b.len() == 16 && b[8] == b'T' && b[15] == b'Z' && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

/// troupe's snapshots of `prefix` in `dir` (see [`is_snapshot_name`]), oldest first:
/// their names sort by time.
pub fn list(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| is_snapshot_name(n, prefix))
        })
        .collect();
    found.sort();
    found
}

/// Delete troupe's snapshots of `prefix` in `dir` but the newest `keep`, counting
/// `just_written` among the kept whatever its name sorts as; returns what was deleted.
pub fn keep_last(
    dir: &Path,
    prefix: &str,
    keep: usize,
    just_written: &Path,
) -> Result<Vec<String>, EtcdError> {
    let others: Vec<PathBuf> = list(dir, prefix)
        .into_iter()
        .filter(|p| p.file_name() != just_written.file_name())
        .collect();
    let keep_others = keep.saturating_sub(1);
    let mut removed = Vec::new();
    if others.len() > keep_others {
        for p in &others[..others.len() - keep_others] {
            std::fs::remove_file(p).map_err(|e| err(p, format!("cannot prune: {e}")))?;
            removed.push(p.display().to_string());
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_by_time() {
        let a = file_name(
            "etcd",
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        let b = file_name(
            "etcd",
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_061),
        );
        assert_eq!(a, "etcd-20231114T221320Z.db");
        assert!(a < b);
    }

    #[test]
    fn only_troupes_own_names_are_snapshots() {
        assert!(is_snapshot_name("etcd-20260101T000000Z.db", "etcd"));
        for foreign in [
            "etcd-prod-20260101T000000Z.db",
            "etcd-20260101T000000Z.db.part",
            "etcd-20260101T000000.db",
            "etcd-20260101T00000xZ.db",
            "etcd-manual.db",
            "etcd.db",
            "xetcd-20260101T000000Z.db",
        ] {
            assert!(!is_snapshot_name(foreign, "etcd"), "{foreign}");
        }
        assert!(is_snapshot_name("etcd-prod-20260101T000000Z.db", "etcd-prod"));
    }

    #[test]
    fn keeps_the_newest_and_never_the_one_just_written() {
        let dir = tempfile::tempdir().unwrap();
        for s in [
            "etcd-20240101T000000Z.db",
            "etcd-20250101T000000Z.db",
            "etcd-20260101T000000Z.db",
            "etcd-29991231T235959Z.db",
            "etcd-prod-20260101T000000Z.db",
            "other.db",
        ] {
            std::fs::write(dir.path().join(s), b"x").unwrap();
        }
        let new = dir.path().join("etcd-20260101T000000Z.db");
        let removed = keep_last(dir.path(), "etcd", 2, &new).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(new.exists());
        assert!(dir.path().join("etcd-29991231T235959Z.db").exists());
        assert!(dir.path().join("etcd-prod-20260101T000000Z.db").exists());
        assert!(dir.path().join("other.db").exists());
        let removed = keep_last(dir.path(), "etcd", 1, &new).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(list(dir.path(), "etcd"), [new]);
    }

    #[tokio::test]
    async fn rejects_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("etcd-x.db");
        std::fs::write(&p, vec![7u8; 8192]).unwrap();
        let e = verify(&p).await.unwrap_err();
        assert!(e.to_string().contains("SHA-256 trailer"), "{e}");
        std::fs::write(&p, b"tiny").unwrap();
        assert!(verify(&p).await.unwrap_err().to_string().contains("too small"));
    }
}
