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
//! The controller is the machine troupe runs on, so this uses the local filesystem
//! directly (streaming: a kube etcd snapshot can be hundreds of MB).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::EtcdError;
use super::client::Dialer;

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
    if let Some(dir) = dest.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| err(dest, format!("cannot create its folder: {e}")))?;
    }
    let part = dest.with_extension("db.part");
    let mut client = dialer.client(endpoint, None).await?;
    let mut stream = tokio::time::timeout(dialer.request_timeout, client.snapshot())
        .await
        .map_err(|_| err(dest, format!("{endpoint} did not start sending a snapshot")))?
        .map_err(|e| err(dest, format!("{endpoint}: {}", super::client::describe(&e))))?;
    let mut file = tokio::fs::File::create(&part)
        .await
        .map_err(|e| err(&part, e.to_string()))?;
    let idle = Duration::from_secs(60);
    loop {
        let msg = tokio::time::timeout(idle, stream.message())
            .await
            .map_err(|_| {
                err(
                    dest,
                    format!("{endpoint} stopped sending for {}s", idle.as_secs()),
                )
            })?
            .map_err(|e| err(dest, format!("{endpoint}: {}", super::client::describe(&e))))?;
        let Some(msg) = msg else { break };
        file.write_all(msg.blob())
            .await
            .map_err(|e| err(&part, e.to_string()))?;
    }
    file.sync_all().await.map_err(|e| err(&part, e.to_string()))?;
    drop(file);
    let (size, sha256) = match verify(&part).await {
        Ok(v) => v,
        Err(e) => {
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
    };
    tokio::fs::rename(&part, dest)
        .await
        .map_err(|e| err(dest, e.to_string()))?;
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

/// Snapshots named `PREFIX-*.db` in `dir`, oldest first (names sort by time).
pub fn list(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{prefix}-")) && n.ends_with(".db"))
        })
        .collect();
    found.sort();
    found
}

/// Delete all but the newest `keep` snapshots; returns what was deleted.
pub fn keep_last(dir: &Path, prefix: &str, keep: usize) -> Result<Vec<String>, EtcdError> {
    let all = list(dir, prefix);
    let mut removed = Vec::new();
    if all.len() > keep {
        for p in &all[..all.len() - keep] {
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
    fn keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for s in [
            "etcd-20240101T000000Z.db",
            "etcd-20250101T000000Z.db",
            "etcd-20260101T000000Z.db",
            "other.db",
        ] {
            std::fs::write(dir.path().join(s), b"x").unwrap();
        }
        let removed = keep_last(dir.path(), "etcd", 2).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(removed[0].ends_with("etcd-20240101T000000Z.db"));
        assert_eq!(list(dir.path(), "etcd").len(), 2);
        assert!(dir.path().join("other.db").exists());
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
