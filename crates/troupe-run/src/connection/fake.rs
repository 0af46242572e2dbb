//! A recording fake host for unit tests of modules and the executor: an in-memory
//! filesystem that `read_file`/`stat`/`write_file` operate on, a log of every
//! operation, and scripted answers for `exec`. A command without a scripted answer
//! fails with exit 127, so a test notices an unexpected command instead of passing
//! on a silent success.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{Cmd, ConnError, Connection, FileAttrs, FileKind, FileStat, Output, Tunnel};

/// One entry of the fake filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeFile {
    pub kind: FileKind,
    pub contents: Vec<u8>,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub link_target: Option<String>,
}

impl FakeFile {
    pub fn file(contents: impl Into<Vec<u8>>) -> FakeFile {
        FakeFile {
            kind: FileKind::File,
            contents: contents.into(),
            mode: 0o644,
            owner: "root".into(),
            group: "root".into(),
            link_target: None,
        }
    }
    pub fn dir() -> FakeFile {
        FakeFile {
            kind: FileKind::Directory,
            mode: 0o755,
            ..FakeFile::file("")
        }
    }
    pub fn symlink(target: impl Into<String>) -> FakeFile {
        FakeFile {
            kind: FileKind::Symlink,
            mode: 0o777,
            link_target: Some(target.into()),
            ..FakeFile::file("")
        }
    }
    pub fn mode(mut self, mode: u32) -> FakeFile {
        self.mode = mode;
        self
    }
    pub fn owned(mut self, owner: &str, group: &str) -> FakeFile {
        self.owner = owner.into();
        self.group = group.into();
        self
    }
}

/// What the code under test did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeOp {
    /// The shell line, exactly as SSH would send it.
    Exec(String),
    Read(String),
    Stat(String),
    Write {
        path: String,
        attrs: FileAttrs,
    },
    Tunnel(String, u16),
}

#[derive(Debug, Default)]
struct State {
    files: BTreeMap<String, FakeFile>,
    ops: Vec<FakeOp>,
    /// (substring of the shell line, answer); the first match wins.
    answers: Vec<(String, Output)>,
    unreachable: bool,
}

#[derive(Debug)]
pub struct FakeConnection {
    host: String,
    state: Mutex<State>,
}

impl FakeConnection {
    pub fn new(host: impl Into<String>) -> FakeConnection {
        FakeConnection {
            host: host.into(),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Put an entry into the fake filesystem (builder style).
    pub fn with(self, path: &str, entry: FakeFile) -> FakeConnection {
        self.put(path, entry);
        self
    }

    pub fn put(&self, path: &str, entry: FakeFile) {
        self.state().files.insert(path.to_string(), entry);
    }

    pub fn remove(&self, path: &str) -> Option<FakeFile> {
        self.state().files.remove(path)
    }

    /// Answer every command whose shell line contains `pattern` with `output`.
    pub fn answer(&self, pattern: &str, output: Output) {
        self.state().answers.push((pattern.to_string(), output));
    }

    /// Shorthand: answer with exit 0 and this stdout.
    pub fn answer_ok(&self, pattern: &str, stdout: &str) {
        self.answer(
            pattern,
            Output {
                exit_code: 0,
                stdout: stdout.into(),
                stderr: Vec::new(),
                ..Output::default()
            },
        );
    }

    /// Make every later operation fail as if the host were down.
    pub fn set_unreachable(&self, down: bool) {
        self.state().unreachable = down;
    }

    pub fn file(&self, path: &str) -> Option<FakeFile> {
        self.state().files.get(path).cloned()
    }

    pub fn files(&self) -> BTreeMap<String, FakeFile> {
        self.state().files.clone()
    }

    pub fn ops(&self) -> Vec<FakeOp> {
        self.state().ops.clone()
    }

    /// The shell lines run so far.
    pub fn commands(&self) -> Vec<String> {
        self.ops()
            .into_iter()
            .filter_map(|op| match op {
                FakeOp::Exec(line) => Some(line),
                _ => None,
            })
            .collect()
    }

    /// Whether `write_file` was called at all.
    pub fn wrote_anything(&self) -> bool {
        self.ops().iter().any(|op| matches!(op, FakeOp::Write { .. }))
    }

    fn record(&self, op: FakeOp) -> Result<(), ConnError> {
        let mut st = self.state();
        if st.unreachable {
            return Err(ConnError::Unreachable {
                host: self.host.clone(),
                address: self.host.clone(),
                detail: "fake host is down".into(),
            });
        }
        st.ops.push(op);
        Ok(())
    }
}

#[async_trait]
impl Connection for FakeConnection {
    fn host(&self) -> &str {
        &self.host
    }

    async fn exec(&self, cmd: &Cmd) -> Result<Output, ConnError> {
        let line = cmd.to_shell_line();
        self.record(FakeOp::Exec(line.clone()))?;
        let st = self.state();
        Ok(st
            .answers
            .iter()
            .find(|(pat, _)| line.contains(pat.as_str()))
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| Output {
                exit_code: 127,
                stdout: Vec::new(),
                stderr: format!("fake host {}: no scripted answer for: {line}", self.host).into_bytes(),
                ..Output::default()
            }))
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, ConnError> {
        self.record(FakeOp::Read(path.to_string()))?;
        match self.state().files.get(path) {
            None => Ok(None),
            Some(f) if f.kind == FileKind::File => Ok(Some(f.contents.clone())),
            Some(_) => Err(ConnError::Io {
                host: self.host.clone(),
                detail: format!("cannot read {path}: not a file"),
            }),
        }
    }

    async fn stat(&self, path: &str) -> Result<Option<FileStat>, ConnError> {
        self.record(FakeOp::Stat(path.to_string()))?;
        Ok(self.state().files.get(path).map(|f| FileStat {
            kind: f.kind,
            mode: f.mode,
            owner: f.owner.clone(),
            group: f.group.clone(),
            size: match f.kind {
                FileKind::Symlink => f.link_target.as_ref().map_or(0, |t| t.len() as u64),
                _ => f.contents.len() as u64,
            },
            sha256: (f.kind == FileKind::File).then(|| hex::encode(Sha256::digest(&f.contents))),
            link_target: f.link_target.clone(),
        }))
    }

    async fn write_file(&self, path: &str, contents: &[u8], attrs: &FileAttrs) -> Result<(), ConnError> {
        self.record(FakeOp::Write {
            path: path.to_string(),
            attrs: attrs.clone(),
        })?;
        let mut st = self.state();
        let old = st.files.get(path).cloned();
        if old.as_ref().is_some_and(|f| f.kind == FileKind::Directory) {
            return Err(ConnError::Io {
                host: self.host.clone(),
                detail: format!("cannot write {path}: is a directory"),
            });
        }
        let old = old.filter(|f| f.kind == FileKind::File);
        let entry = FakeFile {
            kind: FileKind::File,
            contents: contents.to_vec(),
            mode: attrs.mode.or(old.as_ref().map(|f| f.mode)).unwrap_or(0o644),
            owner: attrs
                .owner
                .clone()
                .or(old.as_ref().map(|f| f.owner.clone()))
                .unwrap_or_else(|| "root".into()),
            group: attrs
                .group
                .clone()
                .or(old.as_ref().map(|f| f.group.clone()))
                .unwrap_or_else(|| "root".into()),
            link_target: None,
        };
        st.files.insert(path.to_string(), entry);
        Ok(())
    }

    async fn tunnel(&self, host: &str, port: u16) -> Result<Box<dyn Tunnel>, ConnError> {
        self.record(FakeOp::Tunnel(host.to_string(), port))?;
        Err(ConnError::Io {
            host: self.host.clone(),
            detail: format!("fake host has no tunnel to {host}:{port}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn filesystem_and_log() {
        let fake = FakeConnection::new("podc01")
            .with("/etc/a", FakeFile::file("x").mode(0o600).owned("etcd", "etcd"));
        let st = fake.stat("/etc/a").await.unwrap().unwrap();
        assert_eq!((st.mode, st.owner.as_str(), st.size), (0o600, "etcd", 1));
        assert_eq!(
            st.sha256.as_deref(),
            Some("2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881")
        );
        fake.write_file("/etc/a", b"yy", &FileAttrs::default())
            .await
            .unwrap();
        let f = fake.file("/etc/a").unwrap();
        assert_eq!(
            (f.contents.as_slice(), f.mode, f.owner.as_str()),
            (&b"yy"[..], 0o600, "etcd")
        );
        assert_eq!(fake.read_file("/nope").await.unwrap(), None);
        assert_eq!(fake.ops()[0], FakeOp::Stat("/etc/a".into()));
    }

    #[tokio::test]
    async fn scripted_and_unscripted_exec() {
        let fake = FakeConnection::new("podc01");
        fake.answer_ok("sv status", "run: etcd");
        let out = fake.exec(&Cmd::argv(["sv", "status", "etcd"])).await.unwrap();
        assert_eq!(out.stdout_str(), "run: etcd");
        let out = fake.exec(&Cmd::argv(["rm", "-rf", "/x y"])).await.unwrap();
        assert_eq!(out.exit_code, 127);
        assert_eq!(
            fake.commands(),
            vec!["sv status etcd".to_string(), "rm -rf '/x y'".to_string()]
        );
        fake.set_unreachable(true);
        assert!(
            fake.exec(&Cmd::argv(["true"]))
                .await
                .unwrap_err()
                .is_unreachable()
        );
    }
}
