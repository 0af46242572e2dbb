//! A recording fake host for module and executor unit tests: an in-memory file table
//! answering `stat`/`read_file`/`write_file`, scripted answers for `exec`, and a log of
//! every command line sent, so tests can assert both results and round trips.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::connection::{Cmd, ConnError, Connection, FileAttrs, FileKind, FileStat, Output, Tunnel};
use crate::module::{Args, DynCheck, DynModule, Module, Outcome, TaskCx, TaskError};
use crate::modules::args::Reader;

#[derive(Clone, Debug)]
pub struct FakeFile {
    pub kind: FileKind,
    pub content: Vec<u8>,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub link_target: Option<String>,
}

#[derive(Default)]
struct State {
    files: BTreeMap<String, FakeFile>,
    answers: Vec<(String, Output)>,
    log: Vec<String>,
    open_ports: Vec<(String, u16)>,
    panics: Vec<String>,
}

/// One fake host; clones share state.
#[derive(Clone, Default)]
pub struct FakeHost {
    name: String,
    state: Arc<Mutex<State>>,
    pub search_dirs: Vec<PathBuf>,
}

impl FakeHost {
    pub fn new() -> Self {
        FakeHost {
            name: "fake01".into(),
            ..FakeHost::default()
        }
    }

    pub fn named(name: &str) -> Self {
        FakeHost {
            name: name.into(),
            ..FakeHost::default()
        }
    }

    /// Commands whose shell line starts with `prefix` exit with `code` and print these.
    pub fn answer(&self, prefix: &str, code: i32, stdout: &str, stderr: &str) {
        self.state.lock().unwrap().answers.push((
            prefix.to_string(),
            Output {
                exit_code: code,
                stdout: stdout.as_bytes().to_vec(),
                stderr: stderr.as_bytes().to_vec(),
                ..Output::default()
            },
        ));
    }

    /// Commands whose shell line starts with `prefix` panic (after being logged), as
    /// a bug in a module would: how the scheduler's handling of a panicking task is
    /// tested without a panicking module in the registry.
    pub fn panic_on(&self, prefix: &str) {
        self.state.lock().unwrap().panics.push(prefix.to_string());
    }

    pub fn put_file(&self, path: &str, content: &[u8]) {
        self.state.lock().unwrap().files.insert(
            path.into(),
            FakeFile {
                kind: FileKind::File,
                content: content.to_vec(),
                mode: 0o644,
                owner: "root".into(),
                group: "root".into(),
                link_target: None,
            },
        );
    }

    pub fn put_dir(&self, path: &str) {
        self.state.lock().unwrap().files.insert(
            path.into(),
            FakeFile {
                kind: FileKind::Directory,
                content: Vec::new(),
                mode: 0o755,
                owner: "root".into(),
                group: "root".into(),
                link_target: None,
            },
        );
    }

    pub fn open_port(&self, host: &str, port: u16) {
        self.state.lock().unwrap().open_ports.push((host.into(), port));
    }

    pub fn file(&self, path: &str) -> Option<FakeFile> {
        self.state.lock().unwrap().files.get(path).cloned()
    }

    pub fn set_mode(&self, path: &str, mode: u32) {
        if let Some(f) = self.state.lock().unwrap().files.get_mut(path) {
            f.mode = mode;
        }
    }

    /// Every exec'd command line, in order (stat/read/write are not commands here).
    pub fn commands(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn conn(&self) -> Arc<dyn Connection> {
        Arc::new(self.clone())
    }

    /// check, then apply when a change is planned: a real run of one task.
    pub async fn run(&self, module: &dyn DynModule, args: Args) -> Result<Outcome, TaskError> {
        let conn = self.conn();
        let render = |name: &str| -> Result<String, TaskError> { Ok(format!("rendered {name}\n")) };
        let eval =
            |expr: &str| -> Result<serde_json::Value, TaskError> { Ok(serde_json::json!({ "expr": expr })) };
        let cx = TaskCx {
            host: &self.name,
            conn: &conn,
            controller: &conn,
            search_dirs: &self.search_dirs,
            render: &render,
            eval: &eval,
        };
        match module.check(&args, &cx).await? {
            DynCheck::Unchanged(outcome) => Ok(outcome),
            DynCheck::Change(change) => module.apply(change, &cx).await,
        }
    }

    /// check only: `Ok(None)` when unchanged, else the summary and diffs.
    pub async fn check(
        &self,
        module: &dyn DynModule,
        args: Args,
    ) -> Result<Option<(String, usize)>, TaskError> {
        let conn = self.conn();
        let render = |name: &str| -> Result<String, TaskError> { Ok(format!("rendered {name}\n")) };
        let eval =
            |expr: &str| -> Result<serde_json::Value, TaskError> { Ok(serde_json::json!({ "expr": expr })) };
        let cx = TaskCx {
            host: &self.name,
            conn: &conn,
            controller: &conn,
            search_dirs: &self.search_dirs,
            render: &render,
            eval: &eval,
        };
        match module.check(&args, &cx).await? {
            DynCheck::Unchanged(_) => Ok(None),
            DynCheck::Change(change) => Ok(Some((change.summary, change.diffs.len()))),
        }
    }
}

pub fn args(json: &str) -> Args {
    serde_json::from_str::<serde_json::Value>(json)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

/// `module.decode` of these JSON arguments, read against the module's spec as the
/// executor does.
pub fn decode<M: Module>(module: &M, json: &str) -> Result<M::Spec, TaskError> {
    module.decode(&Reader::new(module.spec(), &args(json)))
}

#[async_trait]
impl Connection for FakeHost {
    fn host(&self) -> &str {
        &self.name
    }

    async fn exec(&self, cmd: &Cmd) -> Result<Output, ConnError> {
        let line = cmd.to_shell_line();
        let mut st = self.state.lock().unwrap();
        st.log.push(line.clone());
        if st.panics.iter().any(|p| line.starts_with(p.as_str())) {
            // Not while holding the lock: the fake must stay usable afterwards.
            drop(st);
            panic!("fake panic on `{line}`");
        }
        let answer = st
            .answers
            .iter()
            .rev()
            .find(|(p, _)| line.starts_with(p.as_str()))
            .map(|(_, o)| o.clone());
        Ok(answer.unwrap_or_default())
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, ConnError> {
        Ok(self
            .state
            .lock()
            .unwrap()
            .files
            .get(path)
            .map(|f| f.content.clone()))
    }

    async fn stat(&self, path: &str) -> Result<Option<FileStat>, ConnError> {
        Ok(self.state.lock().unwrap().files.get(path).map(|f| FileStat {
            kind: f.kind,
            mode: f.mode,
            owner: f.owner.clone(),
            group: f.group.clone(),
            size: f.content.len() as u64,
            sha256: (f.kind == FileKind::File).then(|| hex::encode(Sha256::digest(&f.content))),
            link_target: f.link_target.clone(),
        }))
    }

    async fn write_file(&self, path: &str, contents: &[u8], attrs: &FileAttrs) -> Result<(), ConnError> {
        let mut st = self.state.lock().unwrap();
        let old = st.files.get(path).cloned();
        st.files.insert(
            path.into(),
            FakeFile {
                kind: FileKind::File,
                content: contents.to_vec(),
                mode: attrs.mode.or(old.as_ref().map(|o| o.mode)).unwrap_or(0o644),
                owner: attrs
                    .owner
                    .clone()
                    .or(old.as_ref().map(|o| o.owner.clone()))
                    .unwrap_or("root".into()),
                group: attrs
                    .group
                    .clone()
                    .or(old.as_ref().map(|o| o.group.clone()))
                    .unwrap_or("root".into()),
                link_target: None,
            },
        );
        Ok(())
    }

    async fn tunnel(&self, host: &str, port: u16) -> Result<Box<dyn Tunnel>, ConnError> {
        let open = self
            .state
            .lock()
            .unwrap()
            .open_ports
            .iter()
            .any(|(h, p)| h == host && *p == port);
        if open {
            let (a, _b) = tokio::io::duplex(64);
            Ok(Box::new(a))
        } else {
            Err(ConnError::Io {
                host: self.name.clone(),
                detail: format!("connect to {host}:{port} refused"),
            })
        }
    }
}
