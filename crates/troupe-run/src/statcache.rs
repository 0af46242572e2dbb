//! Batched checks: most modules' `check` is one `stat` (file, copy, template, command's
//! `creates`...), and on a warm run those stats are nearly the whole cost, one round
//! trip per task per host. Before a batch runs, the scheduler works out the paths each
//! task will stat on a host (rendering the arguments with what is known then) and
//! [`CachedConn`] fetches them all in ONE round trip. A cached answer is only used
//! until something may have changed the host: the executor invalidates the cache
//! before every `apply`, and the next stat miss refills it, in one round trip again,
//! with the paths of the tasks still to come. So a run costs about one round trip per
//! host plus one per change, and a path that was not predicted just falls through to
//! a normal `stat`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::connection::shell::{parse_stat, stat_script};
use crate::connection::{Cmd, ConnError, Connection, FileAttrs, FileStat, Output, Tunnel};

/// The arguments of the built-in modules that name a path their `check` stats.
pub fn stat_args(module: &str) -> &'static [&'static str] {
    match module {
        "file" | "wait-for" => &["path"],
        "copy" | "template" => &["dest"],
        "command" | "shell" => &["creates", "removes"],
        "fetch" => &["src"],
        _ => &[],
    }
}

const MARK: &str = "@@troupe-stat@@";
const FAILED: &str = "@@troupe-stat-failed@@";
/// Paths per round trip, to keep command lines reasonable.
const MAX_BATCH: usize = 256;

/// One `sh -c` script printing [`stat_script`]'s answer for every path, each after a
/// marker line; a path whose stat fails prints a failure marker instead of an answer.
pub fn batch_script(paths: &[String]) -> String {
    let mut s = String::new();
    for p in paths {
        s.push_str(&format!(
            "echo '{MARK}'\n( {} ) || echo '{FAILED}'\n",
            stat_script(p)
        ));
    }
    s
}

/// Parse [`batch_script`]'s output: `None` for a path whose answer is unusable (its
/// stat failed: the real `stat` will report why).
pub fn parse_batch(out: &str, n: usize) -> Result<Vec<Option<Option<FileStat>>>, String> {
    let sep = format!("{MARK}\n");
    let mut chunks = out.split(&sep);
    if chunks.next() != Some("") {
        return Err("batch stat output does not start with a marker".into());
    }
    let answers: Vec<Option<Option<FileStat>>> = chunks
        .map(|c| {
            if c.contains(FAILED) {
                None
            } else {
                parse_stat(c).ok()
            }
        })
        .collect();
    if answers.len() != n {
        return Err(format!("batch stat answered {} of {n} paths", answers.len()));
    }
    Ok(answers)
}

/// Stat many paths in one round trip.
pub async fn stat_many(
    conn: &dyn Connection,
    paths: &[String],
) -> Result<Vec<Option<Option<FileStat>>>, ConnError> {
    let mut all = Vec::with_capacity(paths.len());
    for chunk in paths.chunks(MAX_BATCH) {
        let out = conn.exec(&Cmd::script(batch_script(chunk)).internal()).await?;
        match parse_batch(&out.stdout_str(), chunk.len()) {
            Ok(answers) => all.extend(answers),
            Err(detail) => {
                return Err(ConnError::Io {
                    host: conn.host().to_string(),
                    detail,
                });
            }
        }
    }
    Ok(all)
}

struct State {
    /// Answers known valid now.
    known: HashMap<String, Option<FileStat>>,
    /// Whether `known` may be used (false after an invalidation until the next refill).
    valid: bool,
    /// Paths the coming tasks will stat: (task index, path).
    plan: Vec<(usize, String)>,
    /// Index of the task running now.
    step: usize,
    /// Batching failed once on this host (an exotic shell?): plain stats from now on.
    disabled: bool,
}

/// Whether a cached answer about `known` may be stale once `touched` changed: the same
/// path, one of its ancestors, or (with `below`) something under it.
fn paths_related(known: &str, touched: &str, below: bool) -> bool {
    let (k, t) = (known.trim_end_matches('/'), touched.trim_end_matches('/'));
    let (k, t) = (
        if k.is_empty() { "/" } else { k },
        if t.is_empty() { "/" } else { t },
    );
    let under = |child: &str, parent: &str| parent == "/" || child.starts_with(&format!("{parent}/"));
    k == t || under(t, k) || (below && under(k, t))
}

/// A connection that answers `stat` from a batch fetched ahead; everything else goes
/// straight through.
pub struct CachedConn {
    inner: Arc<dyn Connection>,
    state: Mutex<State>,
    refill: tokio::sync::Mutex<()>,
}

impl CachedConn {
    pub fn new(inner: Arc<dyn Connection>, plan: Vec<(usize, String)>) -> CachedConn {
        CachedConn {
            inner,
            state: Mutex::new(State {
                known: HashMap::new(),
                valid: false,
                plan,
                step: 0,
                disabled: false,
            }),
            refill: tokio::sync::Mutex::new(()),
        }
    }

    /// The task at `step` starts: the paths of earlier tasks are no longer needed.
    pub fn set_step(&self, step: usize) {
        self.state.lock().unwrap().step = step;
    }

    /// Only `touched` may change now: forget the answers about those paths, their parent
    /// directories (a write may create them, and changes their entries), and with
    /// `below` what lies under them; every other answer stays valid.
    pub fn invalidate_paths(&self, touched: &[String], below: bool) {
        let mut st = self.state.lock().unwrap();
        st.known
            .retain(|known, _| !touched.iter().any(|t| paths_related(known, t, below)));
    }

    /// Something may change the host now: forget every answer.
    pub fn invalidate(&self) {
        let mut st = self.state.lock().unwrap();
        st.valid = false;
        st.known.clear();
    }

    async fn refill(&self) {
        let _one = self.refill.lock().await;
        let paths: Vec<String> = {
            let st = self.state.lock().unwrap();
            if st.valid || st.disabled {
                return;
            }
            let mut seen = std::collections::HashSet::new();
            st.plan
                .iter()
                .filter(|(i, _)| *i >= st.step)
                .filter(|(_, p)| seen.insert(p.clone()))
                .map(|(_, p)| p.clone())
                .collect()
        };
        if paths.is_empty() {
            return;
        }
        match stat_many(self.inner.as_ref(), &paths).await {
            Ok(answers) => {
                let mut st = self.state.lock().unwrap();
                st.known.clear();
                for (p, a) in paths.into_iter().zip(answers) {
                    if let Some(a) = a {
                        st.known.insert(p, a);
                    }
                }
                st.valid = true;
            }
            Err(_) => self.state.lock().unwrap().disabled = true,
        }
    }
}

#[async_trait]
impl Connection for CachedConn {
    fn host(&self) -> &str {
        self.inner.host()
    }

    async fn exec(&self, cmd: &Cmd) -> Result<Output, ConnError> {
        self.inner.exec(cmd).await
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, ConnError> {
        self.inner.read_file(path).await
    }

    async fn stat(&self, path: &str) -> Result<Option<FileStat>, ConnError> {
        let predicted = {
            let st = self.state.lock().unwrap();
            if !st.disabled && st.valid {
                if let Some(answer) = st.known.get(path) {
                    return Ok(answer.clone());
                }
            }
            !st.disabled && !st.valid && st.plan.iter().any(|(i, p)| *i >= st.step && p == path)
        };
        if predicted {
            self.refill().await;
            let st = self.state.lock().unwrap();
            if st.valid {
                if let Some(answer) = st.known.get(path) {
                    return Ok(answer.clone());
                }
            }
        }
        self.inner.stat(path).await
    }

    async fn write_file(&self, path: &str, contents: &[u8], attrs: &FileAttrs) -> Result<(), ConnError> {
        self.invalidate_paths(&[path.to_string()], false);
        self.inner.write_file(path, contents, attrs).await
    }

    async fn tunnel(&self, host: &str, port: u16) -> Result<Box<dyn Tunnel>, ConnError> {
        self.inner.tunnel(host, port).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::FileKind;
    use crate::connection::local::LocalConnection;

    #[tokio::test]
    async fn batch_answers_match_single_stats_on_a_real_shell() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        std::fs::write(format!("{d}/file"), "hello\n").unwrap();
        std::fs::create_dir(format!("{d}/dir with space")).unwrap();
        std::os::unix::fs::symlink("file", format!("{d}/link")).unwrap();
        let paths: Vec<String> = ["file", "dir with space", "link", "missing", "it's"]
            .iter()
            .map(|p| format!("{d}/{p}"))
            .collect();
        let conn = LocalConnection::new("localhost");
        let batch = stat_many(&conn, &paths).await.unwrap();
        for (p, answer) in paths.iter().zip(&batch) {
            let single = conn.stat(p).await.unwrap();
            assert_eq!(answer.as_ref(), Some(&single), "{p}");
        }
        assert_eq!(batch[0].as_ref().unwrap().as_ref().unwrap().kind, FileKind::File);
        assert_eq!(batch[3], Some(None));
    }

    #[tokio::test]
    async fn cache_serves_predicted_paths_until_invalidated() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        std::fs::write(format!("{d}/a"), "a").unwrap();
        let inner: Arc<dyn Connection> = Arc::new(LocalConnection::new("localhost"));
        let cache = CachedConn::new(inner, vec![(0, format!("{d}/a")), (1, format!("{d}/b"))]);
        assert!(cache.stat(&format!("{d}/a")).await.unwrap().is_some());
        // Changed behind the cache's back: still the batch's answer while valid...
        std::fs::write(format!("{d}/b"), "b").unwrap();
        assert!(cache.stat(&format!("{d}/b")).await.unwrap().is_none());
        // ...and fresh after an invalidation (what the executor does before apply).
        cache.invalidate();
        cache.set_step(1);
        assert!(cache.stat(&format!("{d}/b")).await.unwrap().is_some());
        // Unpredicted paths fall through.
        assert!(cache.stat(&format!("{d}/zzz")).await.unwrap().is_none());
    }

    #[test]
    fn a_change_makes_stale_its_path_its_parents_and_with_below_its_children() {
        assert!(paths_related("/srv/a", "/srv/a", false));
        assert!(paths_related("/srv/a/", "/srv/a", false));
        assert!(
            paths_related("/srv", "/srv/a", false),
            "a write may create the parent"
        );
        assert!(paths_related("/", "/srv/a", false));
        assert!(
            !paths_related("/srv/ab", "/srv/a", false),
            "a sibling with a common prefix"
        );
        assert!(!paths_related("/srv/b", "/srv/a", false));
        assert!(!paths_related("/srv/a/x", "/srv/a", false));
        assert!(
            paths_related("/srv/a/x", "/srv/a", true),
            "a removal takes what is below"
        );
        assert!(!paths_related("/srv/ab/x", "/srv/a", true));
    }

    #[tokio::test]
    async fn scoped_invalidation_keeps_the_other_answers() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap().to_string();
        let (a, b) = (format!("{d}/a"), format!("{d}/b"));
        let inner: Arc<dyn Connection> = Arc::new(LocalConnection::new("localhost"));
        let cache = CachedConn::new(inner, vec![(0, a.clone()), (0, b.clone())]);
        assert!(cache.stat(&a).await.unwrap().is_none());
        // Both appear behind the cache's back; only `a` is declared as touched.
        std::fs::write(&a, "a").unwrap();
        std::fs::write(&b, "b").unwrap();
        cache.invalidate_paths(std::slice::from_ref(&a), false);
        assert!(
            cache.stat(&a).await.unwrap().is_some(),
            "a touched path is asked again"
        );
        assert!(
            cache.stat(&b).await.unwrap().is_none(),
            "an untouched path keeps its batched answer (no round trip)"
        );
        cache.invalidate();
        assert!(cache.stat(&b).await.unwrap().is_some());
    }

    #[test]
    fn stat_args_cover_the_path_modules() {
        assert_eq!(stat_args("template"), ["dest"]);
        assert!(stat_args("service").is_empty());
    }
}
