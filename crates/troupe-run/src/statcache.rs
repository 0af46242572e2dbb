//! Batched checks: most modules' `check` is one `stat` (file, copy, template, command's
//! `creates`...), and on a warm run those stats are nearly the whole cost, one round
//! trip per task per host. Before a batch runs, the scheduler works out the paths each
//! task will stat on a host (rendering the arguments with what is known then) and
//! [`CachedConn`] fetches them all in ONE round trip, which starts at most one `stat`
//! and one `sha256sum` on the host however many paths it asks about. A cached answer is only used
//! until something may have changed the host: the executor invalidates the cache
//! before every `apply`, and the next stat miss refills it, in one round trip again,
//! with the paths of the tasks still to come. So a run costs about one round trip per
//! host plus one per change, and a path that was not predicted just falls through to
//! a normal `stat`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::connection::shell::{kind_of, quote};
use crate::connection::{Cmd, ConnError, Connection, FileAttrs, FileKind, FileStat, Output, Tunnel};

/// The arguments of module `module` that name a path its `check` stats (declared
/// with `stat: true` in the module's spec).
pub fn stat_args(module: &str) -> Vec<&'static str> {
    crate::modules::find(module)
        .map(|m| m.spec().args.iter().filter(|a| a.stat).map(|a| a.name).collect())
        .unwrap_or_default()
}

const ABSENT: &str = "@@troupe-absent@@";
const STATS: &str = "@@troupe-stat@@";
const LINKS: &str = "@@troupe-link@@";
const SHAS: &str = "@@troupe-sha@@";
const END: &str = "@@troupe-end@@";
/// Paths per round trip, to keep command lines reasonable.
const MAX_BATCH: usize = 256;

/// One script answering for every (absolute) path with at most ONE `stat` and ONE
/// `sha256sum` whatever the number of paths (and neither when nothing is there, as on
/// a first run): the shell's own tests find the absent paths, the links and the
/// regular files. Every record ends with a NUL (which no path holds),
/// in sections opened by marker records; [`parse_batch`] reads it. A path the
/// sections do not account for (its `stat` failed) gets no batched answer: the real
/// `stat` then reports why.
pub fn batch_script(paths: &[String]) -> String {
    let list: Vec<String> = paths.iter().map(|p| quote(p)).collect();
    format!(
        "set -- {list}\n\
         printf '%s\\0' '{ABSENT}'\n\
         for p do shift; if [ -e \"$p\" ] || [ -L \"$p\" ]; then set -- \"$@\" \"$p\"; else printf '%s\\0' \"$p\"; fi; done\n\
         printf '%s\\0' '{STATS}'\n\
         if [ $# -gt 0 ]; then stat --printf '%f\\001%U\\001%G\\001%s\\001%n\\000' -- \"$@\" 2>/dev/null; fi\n\
         printf '%s\\0' '{LINKS}'\n\
         for p do if [ -L \"$p\" ]; then printf '%s\\001' \"$p\"; readlink -- \"$p\"; printf '\\0'; fi; done\n\
         printf '%s\\0' '{SHAS}'\n\
         for p do shift; if [ -f \"$p\" ] && [ ! -L \"$p\" ] && [ -r \"$p\" ]; then set -- \"$@\" \"$p\"; fi; done\n\
         if [ $# -gt 0 ]; then sha256sum -z -- \"$@\" 2>/dev/null; fi\n\
         printf '%s\\0' '{END}'\n",
        list = list.join(" "),
    )
}

/// Parse [`batch_script`]'s output, one answer per path in order: `Some(None)` absent,
/// `Some(Some(stat))` present, `None` when the batch cannot tell (its stat failed).
pub fn parse_batch(out: &[u8], paths: &[String]) -> Result<Vec<Option<Option<FileStat>>>, String> {
    let text = std::str::from_utf8(out).map_err(|_| "batch stat output is not UTF-8".to_string())?;
    let mut records = text.split('\0');
    if !until(&mut records, ABSENT)?.is_empty() {
        return Err("batch stat output does not start with its marker".into());
    }
    let absent = until(&mut records, STATS)?;
    let stats = until(&mut records, LINKS)?;
    let links = until(&mut records, SHAS)?;
    let shas = until(&mut records, END)?;

    let mut answers: HashMap<&str, Option<FileStat>> = HashMap::new();
    for p in absent {
        answers.insert(p, None);
    }
    for r in stats {
        let f: Vec<&str> = r.splitn(5, '\u{1}').collect();
        let [raw, owner, group, size, name] = f.as_slice() else {
            return Err(format!("unexpected batch stat record {r:?}"));
        };
        let raw = u32::from_str_radix(raw, 16).map_err(|_| format!("bad raw mode {raw:?} in batch stat"))?;
        let size = size
            .parse::<u64>()
            .map_err(|_| format!("bad size {size:?} in batch stat"))?;
        answers.insert(
            name,
            Some(FileStat {
                kind: kind_of(raw),
                mode: raw & 0o7777,
                owner: owner.to_string(),
                group: group.to_string(),
                size,
                sha256: None,
                link_target: None,
            }),
        );
    }
    let mut unusable: Vec<&str> = Vec::new();
    for p in paths {
        let Some(Some(st)) = answers.get_mut(p.as_str()) else {
            continue;
        };
        match st.kind {
            FileKind::Symlink => {
                let prefix = format!("{p}\u{1}");
                match links.iter().find_map(|r| r.strip_prefix(prefix.as_str())) {
                    Some(target) => {
                        st.link_target = Some(target.strip_suffix('\n').unwrap_or(target).to_string())
                    }
                    None => unusable.push(p),
                }
            }
            FileKind::File => {
                // `HEX  NAME`; an unreadable file has no hash, as with a single stat.
                st.sha256 = shas.iter().find_map(|r| {
                    let (hex, name) = r.split_at_checked(64)?;
                    (name.strip_prefix("  ") == Some(p.as_str())
                        && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| hex.to_string())
                });
            }
            _ => {}
        }
    }
    Ok(paths
        .iter()
        .map(|p| {
            if unusable.contains(&p.as_str()) {
                None
            } else {
                answers.get(p.as_str()).cloned()
            }
        })
        .collect())
}

/// The records up to the marker `close` (which is consumed).
fn until<'a>(records: &mut std::str::Split<'a, char>, close: &str) -> Result<Vec<&'a str>, String> {
    let mut got = Vec::new();
    loop {
        match records.next() {
            Some(r) if r == close => return Ok(got),
            Some(r) => got.push(r),
            None => return Err(format!("batch stat output ends before {close}")),
        }
    }
}

/// Stat many paths in one round trip per [`MAX_BATCH`]. Only absolute paths are
/// batched (a relative one has no batched answer).
pub async fn stat_many(
    conn: &dyn Connection,
    paths: &[String],
) -> Result<Vec<Option<Option<FileStat>>>, ConnError> {
    let absolute: Vec<String> = paths.iter().filter(|p| p.starts_with('/')).cloned().collect();
    let mut known: HashMap<String, Option<FileStat>> = HashMap::new();
    for chunk in absolute.chunks(MAX_BATCH) {
        let out = conn.exec(&Cmd::script(batch_script(chunk)).internal()).await?;
        let answers = parse_batch(&out.stdout, chunk).map_err(|detail| ConnError::Io {
            host: conn.host().to_string(),
            detail,
        })?;
        for (p, a) in chunk.iter().zip(answers) {
            if let Some(a) = a {
                known.insert(p.clone(), a);
            }
        }
    }
    Ok(paths.iter().map(|p| known.get(p).cloned()).collect())
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
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(format!("{d}/file"), "hello\n").unwrap();
        std::fs::create_dir(format!("{d}/dir with space")).unwrap();
        std::os::unix::fs::symlink("file", format!("{d}/link")).unwrap();
        std::os::unix::fs::symlink("/no/where\nreally", format!("{d}/dangling")).unwrap();
        std::fs::write(format!("{d}/line\nbreak  two"), "x").unwrap();
        std::fs::write(format!("{d}/@@troupe-end@@"), "").unwrap();
        std::fs::write(format!("{d}/setuid"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(format!("{d}/setuid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        assert!(
            std::process::Command::new("mkfifo")
                .arg(format!("{d}/fifo"))
                .status()
                .unwrap()
                .success()
        );
        let names = [
            "file",
            "dir with space",
            "link",
            "missing",
            "it's",
            "dangling",
            "line\nbreak  two",
            "@@troupe-end@@",
            "setuid",
            "fifo",
            "missing/below",
        ];
        let paths: Vec<String> = names.iter().map(|p| format!("{d}/{p}")).collect();
        let conn = LocalConnection::new("localhost");
        let batch = stat_many(&conn, &paths).await.unwrap();
        for (p, answer) in paths.iter().zip(&batch) {
            let single = conn.stat(p).await.unwrap();
            assert_eq!(answer.as_ref(), Some(&single), "{p:?}");
        }
        let kind = |i: usize| batch[i].as_ref().unwrap().as_ref().unwrap().kind;
        assert_eq!(kind(0), FileKind::File);
        assert!(batch[0].as_ref().unwrap().as_ref().unwrap().sha256.is_some());
        assert_eq!(batch[3], Some(None));
        assert_eq!(kind(9), FileKind::Other);
        // A relative path is not batched: it falls through to a real stat.
        let rel = stat_many(&conn, &["file".to_string(), paths[0].clone()])
            .await
            .unwrap();
        assert_eq!(rel[0], None);
        assert_eq!(rel[1], batch[0]);
    }

    #[test]
    fn a_batch_that_lost_a_path_gives_no_answer_for_it() {
        let paths = vec!["/a".to_string(), "/l".to_string(), "/gone".to_string()];
        // /a stats fine; /l is a link whose readlink record is missing; /gone is
        // neither absent nor stat'ed (its stat failed): no answer, not "absent".
        let out = "@@troupe-absent@@\0@@troupe-stat@@\0\
                   81a4\u{1}root\u{1}root\u{1}3\u{1}/a\0\
                   a1ff\u{1}root\u{1}root\u{1}1\u{1}/l\0\
                   @@troupe-link@@\0@@troupe-sha@@\0@@troupe-end@@\0";
        let got = parse_batch(out.as_bytes(), &paths).unwrap();
        assert_eq!(got[0].as_ref().unwrap().as_ref().unwrap().size, 3);
        assert_eq!(got[1], None);
        assert_eq!(got[2], None);
        assert!(
            parse_batch(b"@@troupe-absent@@\0@@troupe-stat@@\0", &paths).is_err(),
            "cut short"
        );
        assert!(parse_batch(b"garbage", &paths).is_err());
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
        assert_eq!(stat_args("copy"), ["dest"]);
        assert_eq!(stat_args("file"), ["path"]);
        assert_eq!(stat_args("wait-for"), ["path"]);
        assert_eq!(stat_args("command"), ["creates", "removes"]);
        assert_eq!(stat_args("shell"), ["creates", "removes"]);
        assert_eq!(stat_args("fetch"), ["src"]);
        assert!(stat_args("service").is_empty());
        assert!(stat_args("no-such-module").is_empty());
    }
}
