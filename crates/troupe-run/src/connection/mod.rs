//! Transport to a host, behind one trait so modules never know whether they talk to a
//! remote sshd, the controller itself, or a recording fake in a unit test. Every
//! remote operation is a command line built by [`shell`]: the one place that quotes.

pub mod control;
pub mod known_hosts;
pub mod local;
pub mod session;
pub mod shell;
pub mod ssh;

use std::time::Duration;

use async_trait::async_trait;

/// A command to run on a host. `argv` is quoted by [`shell::quote_argv`]; `script` is
/// passed to `sh -c` as written (the `shell` module's choice, made explicit).
#[derive(Debug, Clone, Default)]
pub struct Cmd {
    pub program: CmdProgram,
    pub stdin: Option<Vec<u8>>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    pub timeout: Option<Duration>,
    /// One of troupe's own short operations on files (stat, read, write, mkdir,
    /// chmod...): it needs no stdin and starts nothing that outlives it, so a
    /// connection may run it in the host's long-lived control shell instead of
    /// starting a session (and a login shell) for it. Users' commands never are.
    pub internal: bool,
}

#[derive(Debug, Clone)]
pub enum CmdProgram {
    Argv(Vec<String>),
    Script(String),
}

impl Default for CmdProgram {
    fn default() -> Self {
        CmdProgram::Script(String::new())
    }
}

impl Cmd {
    pub fn argv<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd {
            program: CmdProgram::Argv(args.into_iter().map(Into::into).collect()),
            ..Cmd::default()
        }
    }

    pub fn script(script: impl Into<String>) -> Self {
        Cmd {
            program: CmdProgram::Script(script.into()),
            ..Cmd::default()
        }
    }

    /// Mark as [`Cmd::internal`].
    pub fn internal(mut self) -> Self {
        self.internal = true;
        self
    }

    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// The single line handed to the remote shell, with cwd and env applied (env
    /// values travel on stdin: see [`shell::command_line`]).
    pub fn to_shell_line(&self) -> String {
        shell::command_line(self)
    }

    /// What to feed the line of [`Cmd::to_shell_line`] on stdin.
    pub fn shell_stdin(&self) -> Option<Vec<u8>> {
        shell::session_stdin(self)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub exit_code: i32,
    /// All of it for troupe's own commands; for users' commands at most the last
    /// [`OUTPUT_TAIL`] bytes, the rest counted in `stdout_dropped`.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_dropped: Dropped,
    pub stderr_dropped: Dropped,
}

/// How much of a users' command's output stream is kept in memory on the controller:
/// its last 512 KiB (from a line start when one is near), per stream, per command. A
/// command printing 50 MB costs the controller about twice this while it runs, not
/// 50 MB, and what a task registers or reports is bounded the same way. troupe's own
/// commands (reads of files) are not bounded: their output is the file.
pub const OUTPUT_TAIL: usize = 512 * 1024;

/// What was left out of a stream kept as its tail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    pub bytes: u64,
    /// Newlines in what was dropped: the number of whole lines dropped.
    pub lines: u64,
}

/// The last `limit` bytes of a stream, and counts of the rest. Memory stays under
/// twice the limit whatever the stream's length.
#[derive(Debug, Clone)]
pub struct Tail {
    buf: Vec<u8>,
    limit: usize,
    dropped: Dropped,
}

impl Tail {
    pub fn new(limit: usize) -> Tail {
        Tail {
            buf: Vec::new(),
            limit,
            dropped: Dropped::default(),
        }
    }

    /// Keep everything (troupe's own commands).
    pub fn unbounded() -> Tail {
        Tail::new(usize::MAX)
    }

    pub fn push(&mut self, data: &[u8]) {
        // Cut down to the limit when twice the limit would be passed, so each byte is
        // moved at most once, and the buffer never grows past that (a growing `Vec`
        // would double its capacity).
        let most = self.limit.saturating_mul(2);
        if self.buf.len() + data.len() > most {
            self.cut();
            if self.buf.capacity() < most {
                self.buf.reserve_exact(most - self.buf.len());
            }
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() > most {
            // One chunk longer than the limit.
            self.cut();
        }
    }

    fn cut(&mut self) {
        if self.buf.len() <= self.limit {
            return;
        }
        let mut at = self.buf.len() - self.limit;
        // Start at a line when one starts soon, else at a UTF-8 character.
        let near = self.buf[at..].iter().take(4096).position(|b| *b == b'\n');
        match near {
            Some(i) => at += i + 1,
            None => {
                while at < self.buf.len() && (self.buf[at] & 0xc0) == 0x80 {
                    at += 1;
                }
            }
        }
        self.dropped.bytes += at as u64;
        self.dropped.lines += self.buf[..at].iter().filter(|b| **b == b'\n').count() as u64;
        self.buf.drain(..at);
    }

    /// The kept tail and what was dropped.
    pub fn finish(mut self) -> (Vec<u8>, Dropped) {
        self.cut();
        (self.buf, self.dropped)
    }
}

impl Output {
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// Errors of the transport itself, as opposed to a command that ran and failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ConnError {
    #[error("{host}: host key is not in {known_hosts} (fingerprint {fingerprint})")]
    #[diagnostic(
        code(troupe::conn::unknown_host_key),
        help(
            "check the fingerprint out of band, then either add it with `ssh-keyscan -H {address} >> {known_hosts}` or run once with --accept-new-host-keys"
        )
    )]
    UnknownHostKey {
        host: String,
        address: String,
        known_hosts: String,
        fingerprint: String,
    },

    #[error("{host}: host key CHANGED for {address}: expected the one in {known_hosts}, got {fingerprint}")]
    #[diagnostic(
        code(troupe::conn::host_key_mismatch),
        help(
            "this may be a man-in-the-middle attack or a reinstalled host; verify and fix known_hosts by hand"
        )
    )]
    HostKeyMismatch {
        host: String,
        address: String,
        known_hosts: String,
        fingerprint: String,
    },

    #[error("{host}: the host key {fingerprint} is revoked ({known_hosts}:{line})")]
    #[diagnostic(
        code(troupe::conn::host_key_revoked),
        help(
            "OpenSSH refuses this key too: the host needs a new host key, and known_hosts its new public key"
        )
    )]
    HostKeyRevoked {
        host: String,
        known_hosts: String,
        line: usize,
        fingerprint: String,
    },

    #[error("{host}: {known_hosts}:{line}: {detail}")]
    #[diagnostic(
        code(troupe::conn::known_hosts_invalid),
        help("fix or delete that line (`ssh-keygen -R HOST -f FILE` removes a host's lines)")
    )]
    KnownHostsInvalid {
        host: String,
        known_hosts: String,
        line: usize,
        detail: String,
    },

    #[error("{host}: the host certificate of {address} is refused: {reason}")]
    #[diagnostic(
        code(troupe::conn::host_certificate_refused),
        help(
            "known_hosts trusts a certificate authority for this host ({known_hosts}); check the certificate with `ssh-keygen -L -f` on the host, or add the host's own key"
        )
    )]
    HostCertificateRejected {
        host: String,
        address: String,
        known_hosts: String,
        reason: String,
    },

    #[error("{host}: authentication as {user} failed ({detail})")]
    #[diagnostic(
        code(troupe::conn::auth),
        help("check `identity`/`user` in the inventory, or load the key into ssh-agent")
    )]
    Auth {
        host: String,
        user: String,
        detail: String,
    },

    #[error("{host}: cannot connect to {address}: {detail}")]
    #[diagnostic(
        code(troupe::conn::unreachable),
        help("is sshd running and the address/port right? try `ssh -p PORT USER@ADDRESS`")
    )]
    Unreachable {
        host: String,
        address: String,
        detail: String,
    },

    #[error("{host}: command timed out after {after:?}: {command}")]
    #[diagnostic(code(troupe::conn::timeout))]
    Timeout {
        host: String,
        after: Duration,
        command: String,
    },

    #[error("{host}: no answer from the host for {after:?} (keepalive)")]
    #[diagnostic(
        code(troupe::conn::no_answer),
        help(
            "the host or its sshd stopped answering (frozen, overloaded or cut off); if it is only slow, raise `keepalive-interval` or `keepalive-count` for it in the inventory"
        )
    )]
    NoAnswer { host: String, after: Duration },

    #[error("{host}: sshd allows this connection no session (its MaxSessions)")]
    #[diagnostic(
        code(troupe::conn::max_sessions),
        help(
            "sshd refused even a first session: set `MaxSessions` in the host's sshd_config to at least 1 (2 or more lets troupe keep its control shell and run commands at once), then reload sshd"
        )
    )]
    MaxSessions { host: String },

    #[error("{host}: connection lost: {detail}")]
    #[diagnostic(code(troupe::conn::lost))]
    Lost { host: String, detail: String },

    #[error("{host}: {detail}")]
    #[diagnostic(code(troupe::conn::io))]
    Io { host: String, detail: String },

    #[error("{host}: not started, the run was interrupted: {command}")]
    #[diagnostic(
        code(troupe::conn::interrupted),
        help("run the playbook again to finish what was not done")
    )]
    Interrupted { host: String, command: String },
}

impl ConnError {
    /// Unreachable hosts are counted apart from failed ones in the recap.
    pub fn is_unreachable(&self) -> bool {
        !matches!(
            self,
            ConnError::Timeout { .. } | ConnError::Io { .. } | ConnError::Interrupted { .. }
        )
    }
}

/// What [`Connection::stat`] learns about a path in one round trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStat {
    pub kind: FileKind,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub size: u64,
    /// Hex SHA-256 of a regular file's content; `None` for other kinds.
    pub sha256: Option<String>,
    /// Target of a symlink.
    pub link_target: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    File,
    Directory,
    Symlink,
    Other,
}

/// Mode and ownership to give a file that is written; `None` keeps what is there
/// (or the umask/owner defaults for a new file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileAttrs {
    pub mode: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
}

/// A duplex byte stream to a TCP port as seen from the host (SSH `direct-tcpip`), used
/// to reach services such as etcd that only listen where SSH can get.
pub trait Tunnel: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Tunnel for T {}

#[async_trait]
pub trait Connection: Send + Sync {
    /// Inventory name of the host, for messages.
    fn host(&self) -> &str;

    /// Run a command; a non-zero exit is an `Ok` output, only transport trouble errs.
    async fn exec(&self, cmd: &Cmd) -> Result<Output, ConnError>;

    /// Read a whole file; `Ok(None)` when it does not exist.
    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, ConnError>;

    /// Facts about a path (no follow of a final symlink); `Ok(None)` when absent.
    async fn stat(&self, path: &str) -> Result<Option<FileStat>, ConnError>;

    /// Replace `path` atomically: temp file in the same directory, fsync, rename.
    /// Mode/owner come from `attrs`, else from the file being replaced.
    async fn write_file(&self, path: &str, contents: &[u8], attrs: &FileAttrs) -> Result<(), ConnError>;

    /// Open a TCP stream to `host:port` as the remote host sees it.
    async fn tunnel(&self, host: &str, port: u16) -> Result<Box<dyn Tunnel>, ConnError>;

    /// The run was interrupted (Ctrl-C, SIGTERM): send TERM to the process groups of
    /// the commands running on the host now, and refuse to start new ones. What is
    /// in the control shell finishes (troupe's own short operations). Best effort and
    /// bounded; the default has nothing to stop.
    async fn interrupt(&self) {}

    /// Close politely; dropping also works.
    async fn close(&self) -> Result<(), ConnError> {
        Ok(())
    }
}

/// A task's own `timeout`: every command it runs without a timeout of its own gets this
/// one, over the host's `command-timeout`. troupe's own file operations (read, stat,
/// write) keep the host's: a task's bound is about the commands it asked for.
pub struct WithTimeout {
    inner: std::sync::Arc<dyn Connection>,
    timeout: Duration,
}

impl WithTimeout {
    pub fn new(inner: std::sync::Arc<dyn Connection>, timeout: Duration) -> WithTimeout {
        WithTimeout { inner, timeout }
    }
}

#[async_trait]
impl Connection for WithTimeout {
    fn host(&self) -> &str {
        self.inner.host()
    }

    async fn exec(&self, cmd: &Cmd) -> Result<Output, ConnError> {
        if cmd.timeout.is_some() {
            return self.inner.exec(cmd).await;
        }
        let mut cmd = cmd.clone();
        cmd.timeout = Some(self.timeout);
        self.inner.exec(&cmd).await
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, ConnError> {
        self.inner.read_file(path).await
    }

    async fn stat(&self, path: &str) -> Result<Option<FileStat>, ConnError> {
        self.inner.stat(path).await
    }

    async fn write_file(&self, path: &str, contents: &[u8], attrs: &FileAttrs) -> Result<(), ConnError> {
        self.inner.write_file(path, contents, attrs).await
    }

    async fn tunnel(&self, host: &str, port: u16) -> Result<Box<dyn Tunnel>, ConnError> {
        self.inner.tunnel(host, port).await
    }

    async fn interrupt(&self) {
        self.inner.interrupt().await
    }

    async fn close(&self) -> Result<(), ConnError> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the stream and however it is split: the kept part is its end, at most
    /// the limit long, and the counts add up to the stream.
    #[test]
    fn a_tail_keeps_the_end_and_counts_the_rest() {
        let stream: Vec<u8> = (0..500_000u32)
            .flat_map(|i| format!("line {i} {}\n", "é".repeat((i % 7) as usize)).into_bytes())
            .collect();
        for (limit, chunk) in [(1000, 1), (1000, 4096), (64 * 1024, 777), (10_000_000, 65536)] {
            let mut t = Tail::new(limit);
            for c in stream.chunks(chunk) {
                t.push(c);
            }
            let (kept, dropped) = t.finish();
            assert!(kept.len() <= limit, "{limit} {chunk}");
            assert!(stream.ends_with(&kept), "{limit} {chunk}");
            assert_eq!(dropped.bytes as usize + kept.len(), stream.len());
            let cut = &stream[..dropped.bytes as usize];
            assert_eq!(
                dropped.lines as usize,
                cut.iter().filter(|b| **b == b'\n').count()
            );
            if dropped.bytes > 0 {
                assert_eq!(cut.last(), Some(&b'\n'), "the tail starts at a line");
            }
        }
        let (all, none) = Tail::unbounded().finish();
        assert!(all.is_empty() && none == Dropped::default());
    }
}

/// The running commands' pids (process groups) of a connection, for an interrupt to
/// signal: [`RunningPid::register`] adds one for as long as the guard lives.
pub(crate) type RunningPids = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<u32>>>;

/// A running command's pid in its connection's [`RunningPids`], removed when the
/// command's future ends or is dropped.
pub(crate) struct RunningPid {
    pids: RunningPids,
    pid: u32,
}

impl RunningPid {
    pub(crate) fn register(pids: &RunningPids, pid: u32) -> RunningPid {
        pids.lock().unwrap_or_else(|p| p.into_inner()).insert(pid);
        RunningPid {
            pids: pids.clone(),
            pid,
        }
    }
}

impl Drop for RunningPid {
    fn drop(&mut self) {
        self.pids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.pid);
    }
}

/// A command line as errors name it: its first line, at most 160 characters.
pub(crate) fn command_summary(line: &str) -> String {
    line.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(160)
        .collect()
}
