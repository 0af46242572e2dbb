//! When troupe added which member. etcd's member list has no timestamps, but "etcd03
//! was added 2 min ago and never started" tells an operator far more than "etcd03 is
//! not started". The journal is a small JSON map on the controller, keyed by cluster
//! and member ID; losing it only loses the "2 min ago".
//!
//! Location: `$TROUPE_STATE_DIR`, else `$XDG_STATE_HOME/troupe`, else
//! `~/.local/state/troupe`; file `etcd-joins.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

fn path() -> Option<PathBuf> {
    let dir = if let Some(d) = std::env::var_os("TROUPE_STATE_DIR") {
        PathBuf::from(d)
    } else if let Some(d) = std::env::var_os("XDG_STATE_HOME") {
        PathBuf::from(d).join("troupe")
    } else {
        PathBuf::from(std::env::var_os("HOME")?).join(".local/state/troupe")
    };
    Some(dir.join("etcd-joins.json"))
}

fn key(cluster_id: &str, member_id: u64) -> String {
    format!("{cluster_id}/{member_id:x}")
}

/// One join: when, and under which name (an unstarted member has none in etcd's list).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub at: u64,
    pub name: String,
}

fn load() -> BTreeMap<String, Entry> {
    path()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Note that troupe added `member_id` (to be called `name`) to `cluster_id` now. Best effort.
pub fn record(cluster_id: &str, member_id: u64, name: &str) {
    let Some(p) = path() else { return };
    let mut map = load();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    map.insert(
        key(cluster_id, member_id),
        Entry {
            at: now,
            name: name.to_string(),
        },
    );
    if let Some(dir) = p.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = p.with_extension("json.tmp");
    if let Ok(bytes) = serde_json::to_vec_pretty(&map)
        && std::fs::write(&tmp, bytes).is_ok()
    {
        let _ = std::fs::rename(&tmp, &p);
    }
}

/// When troupe added this member and under which name, if it did.
pub fn lookup(cluster_id: &str, member_id: u64) -> Option<(SystemTime, String)> {
    load()
        .get(&key(cluster_id, member_id))
        .map(|e| (SystemTime::UNIX_EPOCH + Duration::from_secs(e.at), e.name.clone()))
}
