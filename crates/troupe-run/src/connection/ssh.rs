//! SSH transport on russh ([`super::session`]): one authenticated connection per host,
//! reused for every task, with several channels open at once. Host keys are checked
//! strictly against a known_hosts file unless the caller opts into accept-new; a
//! changed key is always refused, and a rejected key is shown with its fingerprint so
//! the user sees what to verify.
//!
//! A host that stops answering (a frozen sshd, a cut link) is found by keepalives and
//! given up after [`Keepalive::bound`], with an error that says so; every command has
//! a timeout ([`DEFAULT_COMMAND_TIMEOUT`] unless the inventory or the task sets one).
//! Together they bound how long one host can hold a task that every host must finish.
//!
//! Every remote operation is one `exec` channel running a line built by
//! [`super::shell`]; `tunnel` is a `direct-tcpip` channel; a jump host is an SSH
//! session carried inside such a channel (like OpenSSH's `ProxyJump`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use russh::ChannelMsg;
use russh::keys::{HashAlg, PublicKey};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::Semaphore;

use super::control::{Abandoned, ControlError, ControlShell};
use super::known_hosts::{self, HostKeys};
use super::session::{Ended, Keepalive, KeyCheck, OpenError, Session};
use super::{Cmd, ConnError, Connection, FileAttrs, FileStat, Output, Tail, Tunnel, shell};
use troupe_dsl::model::{ConnSettings, Host};

/// Channels open at once on one connection, besides the control shell's. OpenSSH's
/// default `MaxSessions` is 10; stay under it so a busy host never refuses a channel.
/// A host with a lower limit is learnt from its refusal (see `session::Slots`).
const MAX_CHANNELS: usize = 7;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A command's timeout when neither the task (`timeout=`) nor the inventory
/// (`command-timeout`) sets one: long enough for any sane package install, short
/// enough that a command hung on a live host does not stall the run for ever.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long a control shell's abandoned request may take to finish before the shell is
/// replaced (troupe's own operations take milliseconds).
const ABANDONED_DRAIN: Duration = Duration::from_secs(2);

/// How to authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshAuth {
    /// An unencrypted private key file (OpenSSH or PEM format).
    KeyFile(PathBuf),
    /// Every identity of the ssh-agent at `$SSH_AUTH_SOCK`.
    Agent,
}

/// What to do with a host whose key is not in known_hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostKeyPolicy {
    /// Refuse (the default, like OpenSSH's `StrictHostKeyChecking=yes`).
    #[default]
    Strict,
    /// Record the key and go on (OpenSSH's `accept-new`). A changed key is still refused.
    AcceptNew,
}

/// `user@address:port` of a jump host; it authenticates like the target (same auth,
/// same known_hosts and policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpHost {
    pub user: String,
    pub address: String,
    pub port: u16,
}

impl JumpHost {
    /// Parse `[user@]address[:port]` (`[v6addr]:port` for IPv6); missing parts come
    /// from the target's settings.
    pub fn parse(spec: &str, default_user: &str) -> Result<JumpHost, String> {
        let (user, rest) = match spec.rsplit_once('@') {
            Some((u, r)) => (u.to_string(), r),
            None => (default_user.to_string(), spec),
        };
        let (address, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (a, p) = v6
                .split_once(']')
                .ok_or_else(|| format!("jump host {spec:?}: missing `]`"))?;
            (a.to_string(), p.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((a, p)) => (a.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| format!("jump host {spec:?}: bad port {p:?}"))?,
            None => 22,
        };
        if address.is_empty() || user.is_empty() {
            return Err(format!("jump host {spec:?}: expected [user@]address[:port]"));
        }
        Ok(JumpHost { user, address, port })
    }
}

/// Everything needed to open an [`SshConnection`].
#[derive(Debug, Clone)]
pub struct SshOptions {
    pub user: String,
    pub port: u16,
    pub auth: SshAuth,
    pub known_hosts: PathBuf,
    pub host_keys: HostKeyPolicy,
    pub connect_timeout: Duration,
    /// Applied to every command that has no timeout of its own; `None` = wait forever.
    pub command_timeout: Option<Duration>,
    /// When to give up on a host that answers nothing.
    pub keepalive: Keepalive,
    pub jump: Option<JumpHost>,
}

impl SshOptions {
    /// Options for an inventory host's resolved [`ConnSettings`], with OpenSSH-like
    /// defaults: user `root`, port 22, `~/.ssh/known_hosts`, the key in `identity` or
    /// else the ssh-agent when `SSH_AUTH_SOCK` is set, else `~/.ssh/id_ed25519`,
    /// `id_ecdsa` or `id_rsa`. `identity="agent"` asks for the agent explicitly.
    pub fn from_settings(settings: &ConnSettings, host_keys: HostKeyPolicy) -> Result<SshOptions, String> {
        let user = settings.user.clone().unwrap_or_else(|| "root".into());
        let auth = match settings.identity.as_deref() {
            Some("agent") => SshAuth::Agent,
            Some(path) => SshAuth::KeyFile(expand_tilde(path)),
            None if std::env::var_os("SSH_AUTH_SOCK").is_some() => SshAuth::Agent,
            None => ["id_ed25519", "id_ecdsa", "id_rsa"]
                .iter()
                .map(|k| expand_tilde(&format!("~/.ssh/{k}")))
                .find(|p| p.is_file())
                .map(SshAuth::KeyFile)
                .ok_or("no `identity` set, no ssh-agent (SSH_AUTH_SOCK) and no ~/.ssh/id_* key")?,
        };
        let jump = settings
            .jump
            .as_deref()
            .map(|j| JumpHost::parse(j, &user))
            .transpose()?;
        Ok(SshOptions {
            port: settings.port.unwrap_or(22),
            auth,
            known_hosts: expand_tilde(settings.known_hosts.as_deref().unwrap_or("~/.ssh/known_hosts")),
            host_keys,
            connect_timeout: settings.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            command_timeout: Some(settings.command_timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT)),
            keepalive: Keepalive {
                interval: settings.keepalive_interval.unwrap_or(Keepalive::DEFAULT.interval),
                count: settings.keepalive_count.unwrap_or(Keepalive::DEFAULT.count),
            },
            jump,
            user,
        })
    }

    /// Key-file options with defaults, as the lab and tests use them.
    pub fn with_key(user: &str, key: impl Into<PathBuf>, known_hosts: impl Into<PathBuf>) -> SshOptions {
        SshOptions {
            user: user.to_string(),
            port: 22,
            auth: SshAuth::KeyFile(key.into()),
            known_hosts: known_hosts.into(),
            host_keys: HostKeyPolicy::Strict,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: None,
            keepalive: Keepalive::DEFAULT,
            jump: None,
        }
    }
}

/// `~/x` → `$HOME/x`; anything else unchanged.
pub fn expand_tilde(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// An open, authenticated SSH connection to one host.
pub struct SshConnection {
    host: String,
    address: String,
    session: Session,
    /// Keeps the jump host's session alive: the target's session runs inside it.
    _jump: Option<Session>,
    command_timeout: Option<Duration>,
    channels: Semaphore,
    control: tokio::sync::Mutex<Control>,
    /// Host pids (= process groups) of the session commands running now, for
    /// [`Connection::interrupt`].
    running: super::RunningPids,
    /// Set by [`Connection::interrupt`]: no new session command starts.
    interrupted: std::sync::atomic::AtomicBool,
}

/// The connection's control shell (see [`super::control`]), started on first use.
enum Control {
    NotStarted,
    Running(ControlShell),
    /// It could not start here (no POSIX `sh`?): sessions only from now on.
    Off,
}

impl std::fmt::Debug for SshConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshConnection")
            .field("host", &self.host)
            .field("address", &self.address)
            .finish()
    }
}

impl SshConnection {
    /// Connect to `address` (inventory host `host`, for messages), check its key,
    /// authenticate. Through `opts.jump` when set.
    pub async fn connect(host: &str, address: &str, opts: &SshOptions) -> Result<SshConnection, ConnError> {
        let jump = match &opts.jump {
            Some(j) => {
                let jopts = SshOptions {
                    user: j.user.clone(),
                    port: j.port,
                    jump: None,
                    ..opts.clone()
                };
                let label = format!("{host} (jump host {})", j.address);
                Some(open(&label, &j.address, &jopts, None).await?)
            }
            None => None,
        };
        let session = open(host, address, opts, jump.as_ref()).await?;
        Ok(SshConnection {
            host: host.to_string(),
            address: address.to_string(),
            session,
            _jump: jump,
            command_timeout: opts.command_timeout,
            channels: Semaphore::new(MAX_CHANNELS),
            control: tokio::sync::Mutex::new(Control::NotStarted),
            running: Arc::default(),
            interrupted: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Connect to an inventory host with its resolved connection settings.
    pub async fn connect_host(host: &Host, host_keys: HostKeyPolicy) -> Result<SshConnection, ConnError> {
        let address = host.address.clone().unwrap_or_else(|| host.name.clone());
        let opts = SshOptions::from_settings(&host.conn, host_keys).map_err(|detail| ConnError::Auth {
            host: host.name.clone(),
            user: host.conn.user.clone().unwrap_or_else(|| "root".into()),
            detail,
        })?;
        SshConnection::connect(&host.name, &address, &opts).await
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    fn lost(&self, e: impl std::fmt::Display) -> ConnError {
        ConnError::Lost {
            host: self.host.clone(),
            detail: e.to_string(),
        }
    }

    /// A lost connection said as what it is: when the keepalive check gave up on the
    /// host, the error says that the host stopped answering, and for how long.
    async fn explain<T>(&self, result: Result<T, ConnError>) -> Result<T, ConnError> {
        match result {
            Err(ConnError::Lost { host, detail }) => Err(match self.session.ended().await {
                Some(Ended::Keepalive(after)) => ConnError::NoAnswer { host, after },
                _ => ConnError::Lost { host, detail },
            }),
            other => other,
        }
    }

    /// Run one command on its own channel. The command first reports its pid on
    /// stderr (`troupe-pid:N`, stripped from the output) and then `exec`s the real
    /// line; on timeout, or when the run is interrupted, its process group gets TERM
    /// over a second channel (sshd refuses the protocol's `signal` request for root
    /// sessions, so that alone is not enough) and the channel is closed: a hung or
    /// interrupted command does not outlive its task.
    async fn run(
        &self,
        line: String,
        stdin: Option<Vec<u8>>,
        timeout: Option<Duration>,
        tail: Option<usize>,
    ) -> Result<Output, ConnError> {
        if self.is_interrupted() {
            return Err(ConnError::Interrupted {
                host: self.host.clone(),
                command: super::command_summary(&line),
            });
        }
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let timed_out = || ConnError::Timeout {
            host: self.host.clone(),
            after: timeout.unwrap_or_default(),
            command: line.clone(),
        };
        let _permit = until(deadline, async {
            self.channels.acquire().await.map_err(|e| self.lost(e))
        })
        .await
        .ok_or_else(timed_out)??;
        let sent = format!("echo {PID_MARK}$$ >&2 && exec sh -c {}", shell::quote(&line));
        let channel = until(deadline, async {
            let (channel, slot) = self.open_channel().await?;
            channel
                .exec(true, sent.into_bytes())
                .await
                .map_err(|e| self.lost(e))?;
            Ok::<_, ConnError>((channel, slot))
        })
        .await
        .ok_or_else(timed_out)??;
        let (mut channel, _slot) = channel;
        // Feed stdin from its own task while we read: a command echoing a large input
        // would otherwise block on a full window while we block on writing.
        let mut writer = channel.make_writer();
        let feeder = tokio::spawn(async move {
            if let Some(data) = stdin {
                // The command may exit without reading everything: not our error.
                let _ = writer.write_all(&data).await;
            }
            let _ = writer.shutdown().await;
        });
        let mut out = Output::default();
        let stream = || tail.map_or_else(Tail::unbounded, Tail::new);
        let (mut stdout, mut stderr) = (stream(), stream());
        // The start of stderr, until the pid line in it is known.
        let mut head: Vec<u8> = Vec::new();
        let mut exit = None;
        // The pid line comes first on stderr; `None` once it is known not to come.
        let mut pid: Option<u32> = None;
        let mut pid_pending = true;
        let mut _running = None;
        loop {
            let msg = match deadline {
                Some(d) => match tokio::time::timeout_at(d, channel.wait()).await {
                    Ok(msg) => msg,
                    Err(_) => {
                        feeder.abort();
                        let _ = channel.signal(russh::Sig::TERM).await;
                        let _ = channel.close().await;
                        if let Some(pid) = pid.or_else(|| take_pid(&mut head)) {
                            self.kill_remote(pid).await;
                        }
                        return Err(timed_out());
                    }
                },
                None => channel.wait().await,
            };
            let Some(msg) = msg else { break };
            match msg {
                ChannelMsg::Data { data } => stdout.push(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } if !pid_pending => stderr.push(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => {
                    head.extend_from_slice(&data);
                    {
                        match early_pid(&mut head) {
                            PidLine::NotYet => {}
                            PidLine::Absent => {
                                pid_pending = false;
                                stderr.push(&std::mem::take(&mut head));
                            }
                            PidLine::Pid(p) => {
                                pid_pending = false;
                                stderr.push(&std::mem::take(&mut head));
                                pid = Some(p);
                                _running = Some(super::RunningPid::register(&self.running, p));
                                // Interrupted while this command was starting.
                                if self.is_interrupted() {
                                    self.kill_remote(p).await;
                                }
                            }
                        }
                    }
                }
                ChannelMsg::ExitStatus { exit_status } => exit = Some(exit_status as i32),
                ChannelMsg::ExitSignal {
                    signal_name,
                    error_message,
                    ..
                } => {
                    stderr.push(
                        format!("killed by signal {signal_name:?} {error_message}")
                            .trim_end()
                            .as_bytes(),
                    );
                    exit = Some(128 + signal_number(&signal_name));
                }
                ChannelMsg::Failure => {
                    feeder.abort();
                    return Err(self.lost("the server refused to run the command"));
                }
                _ => {}
            }
        }
        feeder.abort();
        if pid_pending {
            take_pid(&mut head);
            stderr.push(&head);
        }
        (out.stdout, out.stdout_dropped) = stdout.finish();
        (out.stderr, out.stderr_dropped) = stderr.finish();
        match exit {
            Some(code) => {
                out.exit_code = code;
                Ok(out)
            }
            None => Err(self.lost("the channel closed without an exit status")),
        }
    }
}

const PID_MARK: &str = "troupe-pid:";

/// Remove the `troupe-pid:N` line a timed command starts its stderr with; its pid.
fn take_pid(stderr: &mut Vec<u8>) -> Option<u32> {
    let rest = stderr.strip_prefix(PID_MARK.as_bytes())?;
    let end = rest.iter().position(|b| *b == b'\n')?;
    let pid = std::str::from_utf8(&rest[..end]).ok()?.parse().ok();
    stderr.drain(..PID_MARK.len() + end + 1);
    pid
}

/// What the start of a command's stderr says about its pid line.
enum PidLine {
    /// Taken off stderr.
    Pid(u32),
    /// Not all of it has arrived yet.
    NotYet,
    /// stderr starts with something else (a login shell's noise?): no pid.
    Absent,
}

fn early_pid(stderr: &mut Vec<u8>) -> PidLine {
    let mark = PID_MARK.as_bytes();
    let n = stderr.len().min(mark.len());
    if stderr[..n] != mark[..n] {
        return PidLine::Absent;
    }
    if !stderr.contains(&b'\n') {
        return PidLine::NotYet;
    }
    take_pid(stderr).map_or(PidLine::Absent, PidLine::Pid)
}

/// `fut`'s output, or `None` when the deadline passes first.
async fn until<T>(
    deadline: Option<tokio::time::Instant>,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d, fut).await.ok(),
        None => Some(fut.await),
    }
}

impl SshConnection {
    /// Run `cmd` in the control shell when it is free; `None` when it is busy or
    /// this host has none.
    async fn try_control(&self, cmd: &Cmd) -> Option<Result<Output, ConnError>> {
        let mut control = self.control.try_lock().ok()?;
        self.run_in_control(&mut control, cmd).await
    }

    /// Run `cmd` in the control shell, starting it if needed; `None` when this host
    /// has none (the caller uses a session). A shell that failed or timed out is
    /// closed, and the next request starts a new one.
    async fn run_in_control(&self, control: &mut Control, cmd: &Cmd) -> Option<Result<Output, ConnError>> {
        let timeout = cmd.timeout.or(self.command_timeout);
        if matches!(control, Control::NotStarted) {
            let start = timeout.map_or(DEFAULT_CONNECT_TIMEOUT, |t| t.min(DEFAULT_CONNECT_TIMEOUT));
            *control = match ControlShell::start(&self.session, start).await {
                Ok(shell) => Control::Running(shell),
                Err(e) => {
                    tracing::debug!("{}: no control shell ({e:?}); one session per command", self.host);
                    Control::Off
                }
            };
        }
        // A request abandoned here (its caller dropped the future, e.g. on a timeout of
        // its own) may still answer: read that answer away, or replace the shell.
        if let Control::Running(shell) = control
            && let Some(abandoned) = shell.abandoned()
        {
            let drained = match abandoned {
                Abandoned::Drain => {
                    shell
                        .drain(timeout.unwrap_or(ABANDONED_DRAIN).min(ABANDONED_DRAIN))
                        .await
                }
                Abandoned::Replace => Err(ControlError::Timeout),
            };
            if drained.is_err() {
                if let Control::Running(old) = std::mem::replace(control, Control::NotStarted) {
                    tracing::debug!(
                        "{}: replacing a control shell with an abandoned request",
                        self.host
                    );
                    let pid = old.pid();
                    old.close().await;
                    self.kill_remote(pid).await;
                }
                return Box::pin(self.run_in_control(control, cmd)).await;
            }
        }
        let Control::Running(shell) = control else {
            return None;
        };
        let answer = shell.run(cmd, timeout).await;
        if let Err(e) = &answer {
            if let Control::Running(shell) = std::mem::replace(control, Control::NotStarted) {
                let pid = shell.pid();
                shell.close().await;
                // A hung request (and the shell) must not outlive its task.
                if matches!(e, ControlError::Timeout) {
                    self.kill_remote(pid).await;
                }
            }
        }
        Some(answer.map_err(|e| {
            match e {
                // The first line only: a write carries the file's content further down.
                ControlError::Timeout => ConnError::Timeout {
                    host: self.host.clone(),
                    after: timeout.unwrap_or_default(),
                    command: super::command_summary(&cmd.to_shell_line()),
                },
                ControlError::Broken(detail) => self.lost(detail),
            }
        }))
    }

    /// Open a session channel, waiting for a free one when sshd refuses another
    /// (its `MaxSessions`) while others of ours are open. When the control shell holds
    /// the only session sshd allows, it is closed for good: commands then take the
    /// single session in turn, troupe's own operations included.
    async fn open_channel(
        &self,
    ) -> Result<(russh::Channel<russh::client::Msg>, super::session::Slot), ConnError> {
        use super::session::{ChannelError, Refusal};
        /// Retries of a refusal with none of ours open (see below): 1.5 s in all.
        const NEVER_RETRIES: u32 = 5;
        let mut never = 0;
        loop {
            let mut freed = self.session.slots().subscribe();
            match self.session.channel().await {
                Ok(opened) => return Ok(opened),
                Err(ChannelError::Ssh(e)) => return Err(self.lost(e)),
                // sshd frees a closed channel's session only when it has processed
                // the close, after ours is counted free: a refusal just after one of
                // ours closed is retried a few times before it is believed.
                Err(ChannelError::Refused(Refusal::Never)) => {
                    never += 1;
                    if never > NEVER_RETRIES {
                        return Err(ConnError::MaxSessions {
                            host: self.host.clone(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100 * never as u64)).await;
                }
                Err(ChannelError::Refused(Refusal::Wait { .. })) => {
                    if self.session.slots().limit() == Some(1) {
                        let mut control = self.control.lock().await;
                        if let Control::Running(shell) = std::mem::replace(&mut *control, Control::Off) {
                            tracing::debug!(
                                "{}: sshd allows one session; closing the control shell",
                                self.host
                            );
                            shell.close().await;
                        }
                        *control = Control::Off;
                    }
                    self.session.slots().wait_freed(&mut freed).await;
                }
            }
        }
    }

    fn is_interrupted(&self) -> bool {
        self.interrupted.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// TERM a timed-out command's process group (best effort, bounded).
    async fn kill_remote(&self, pid: u32) {
        self.kill_remote_all(&[pid]).await;
    }

    /// TERM the process groups `pids` in one channel (best effort, bounded).
    async fn kill_remote_all(&self, pids: &[u32]) {
        let line = format!(
            "for p in {}; do kill -TERM -- -$p 2>/dev/null || kill -TERM $p 2>/dev/null; done; true",
            pids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
        );
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            let (mut channel, _slot) = self.session.channel().await.ok()?;
            channel.exec(true, line.into_bytes()).await.ok()?;
            channel.eof().await.ok()?;
            while channel.wait().await.is_some() {}
            Some(())
        })
        .await;
    }
}

fn signal_number(sig: &russh::Sig) -> i32 {
    use russh::Sig::*;
    match sig {
        HUP => 1,
        INT => 2,
        QUIT => 3,
        ILL => 4,
        ABRT => 6,
        FPE => 8,
        KILL => 9,
        USR1 => 10,
        SEGV => 11,
        PIPE => 13,
        ALRM => 14,
        TERM => 15,
        _ => 0,
    }
}

/// The host key algorithms to offer for a host with these known keys: those of their
/// types, in russh's order of preference (every RSA signature hash for an RSA key), so
/// the host shows a key known_hosts can vouch for, as OpenSSH does. No known key: all.
fn host_key_algorithms(known: &[&PublicKey]) -> Vec<russh::keys::Algorithm> {
    let all = russh::Preferred::DEFAULT.key.to_vec();
    if known.is_empty() {
        return all;
    }
    all.into_iter()
        .filter(|a| known.iter().any(|k| same_key_family(&k.algorithm(), a)))
        .collect::<Vec<_>>()
}

/// Whether a key of type `key` can sign with algorithm `algorithm` (an RSA key with
/// every RSA hash).
fn same_key_family(key: &russh::keys::Algorithm, algorithm: &russh::keys::Algorithm) -> bool {
    use russh::keys::Algorithm::Rsa;
    key == algorithm || (matches!(key, Rsa { .. }) && matches!(algorithm, Rsa { .. }))
}

/// What known_hosts says about `address:port`; a missing file says nothing.
fn read_known_hosts(host: &str, address: &str, port: u16, path: &Path) -> Result<HostKeys, ConnError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(ConnError::Io {
                host: host.to_string(),
                detail: format!("cannot read {}: {e}", path.display()),
            });
        }
    };
    known_hosts::for_host(&text, address, port).map_err(|e| ConnError::KnownHostsInvalid {
        host: host.to_string(),
        known_hosts: path.display().to_string(),
        line: e.line,
        detail: e.detail,
    })
}

/// Serialises appends to known_hosts files within this process (accept-new on many
/// hosts at once).
static KNOWN_HOSTS_LOCK: Mutex<()> = Mutex::new(());

/// Connect and authenticate one session, directly or through `via`.
async fn open(
    host: &str,
    address: &str,
    opts: &SshOptions,
    via: Option<&Session>,
) -> Result<Session, ConnError> {
    let kh = opts.known_hosts.display().to_string();
    let attempt = |check: KeyCheck, algorithms: Vec<russh::keys::Algorithm>| async move {
        tokio::time::timeout(
            opts.connect_timeout,
            Session::open(
                address,
                opts.port,
                via,
                check,
                &algorithms,
                opts.keepalive,
                &opts.user,
                &opts.auth,
            ),
        )
        .await
    };
    let unreachable = |detail: String| ConnError::Unreachable {
        host: host.to_string(),
        address: format!("{address}:{}", opts.port),
        detail,
    };
    let timed_out = || {
        unreachable(format!(
            "no SSH session within {:?} (connect timeout)",
            opts.connect_timeout
        ))
    };

    // known_hosts read as OpenSSH reads it: a broken line is an error, a revoked key
    // never accepted, and only the key types it knows for the host are offered.
    let known = read_known_hosts(host, address, opts.port, &opts.known_hosts)?;
    let accepted: Vec<&PublicKey> = known.accepted().collect();
    let algorithms = host_key_algorithms(&accepted);
    // The key the host will most likely show: the first known one of the most
    // preferred type. Another known key is found by the probe below.
    let likely = algorithms
        .iter()
        .find_map(|a| accepted.iter().find(|k| same_key_family(&k.algorithm(), a)));
    // Not the key we expected (or none known): the handler saw which key the host
    // offers, and it is judged below.
    // No key of the host's own, but a `@cert-authority` for it: ask for a host
    // certificate, as OpenSSH does. (With a known key, that key decides, as in OpenSSH
    // when the host shows a plain key.)
    let check = match likely {
        Some(key) => KeyCheck::Pinned((*key).clone()),
        None if !known.cert_authorities.is_empty() => KeyCheck::HostCertificate {
            authorities: known.cert_authorities.iter().map(|(_, k)| k.clone()).collect(),
            revoked: known.revoked.iter().map(|(_, k)| k.clone()).collect(),
            principal: address.to_string(),
        },
        None => KeyCheck::Reject,
    };
    let key = match attempt(check, algorithms.clone())
        .await
        .map_err(|_| timed_out())?
    {
        Ok(session) => return Ok(session),
        Err(OpenError::Ssh {
            error,
            certificate_refused: Some(reason),
            ..
        }) if matches!(*error, russh::Error::UnknownKey) => {
            return Err(ConnError::HostCertificateRejected {
                host: host.to_string(),
                address: address.to_string(),
                known_hosts: kh,
                reason,
            });
        }
        Err(OpenError::Ssh { error, offered, .. }) if matches!(*error, russh::Error::UnknownKey) => {
            match offered {
                Some(key) => key,
                None => {
                    return Err(unreachable(
                        "the host did not show its host key (the SSH handshake did not get that far)".into(),
                    ));
                }
            }
        }
        Err(e) => return Err(map_error(host, address, opts, e)),
    };
    let fingerprint = key.fingerprint(HashAlg::Sha256).to_string();
    if let Some(line) = known.revoked_at(&key) {
        return Err(ConnError::HostKeyRevoked {
            host: host.to_string(),
            known_hosts: kh,
            line,
            fingerprint,
        });
    }
    if known.accepts(&key) {
        // Known after all (another known key, or added meanwhile): pin exactly it.
    } else if !known.keys.is_empty() {
        return Err(ConnError::HostKeyMismatch {
            host: host.to_string(),
            address: address.to_string(),
            known_hosts: kh,
            fingerprint,
        });
    } else if opts.host_keys == HostKeyPolicy::Strict {
        return Err(ConnError::UnknownHostKey {
            host: host.to_string(),
            address: address.to_string(),
            known_hosts: kh,
            fingerprint,
        });
    } else {
        learn_host_key(address, opts.port, &key, &opts.known_hosts).map_err(|detail| ConnError::Io {
            host: host.to_string(),
            detail,
        })?;
        tracing::info!(host, %fingerprint, known_hosts = %kh, "accepted new host key");
    }
    // Pin the key we just checked: a host answering with another key now fails.
    let only = host_key_algorithms(&[&key]);
    match attempt(KeyCheck::Pinned(key), only)
        .await
        .map_err(|_| timed_out())?
    {
        Ok(session) => Ok(session),
        Err(OpenError::Ssh { error, .. }) if matches!(*error, russh::Error::UnknownKey) => {
            Err(ConnError::HostKeyMismatch {
                host: host.to_string(),
                address: address.to_string(),
                known_hosts: kh,
                fingerprint: format!("a key other than {fingerprint} (it changed during the connection)"),
            })
        }
        Err(e) => Err(map_error(host, address, opts, e)),
    }
}

/// Append `address key` to known_hosts, the way OpenSSH writes it (`[addr]:port` for
/// ports other than 22).
fn learn_host_key(address: &str, port: u16, key: &PublicKey, path: &Path) -> Result<(), String> {
    let _guard = KNOWN_HOSTS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    // Re-check under the lock: a concurrent connection may have written it already.
    if std::fs::read_to_string(path)
        .ok()
        .and_then(|text| known_hosts::for_host(&text, address, port).ok())
        .is_some_and(|known| known.accepts(key))
    {
        return Ok(());
    }
    let name = known_hosts::lookup_name(address, port);
    let line = key.to_openssh().map_err(|e| e.to_string())?;
    let mut parts = line.split_whitespace();
    let (Some(alg), Some(b64)) = (parts.next(), parts.next()) else {
        return Err(format!("cannot encode the host key of {address}"));
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let needs_newline = std::fs::read(path)
        .map(|b| b.last().is_some_and(|c| *c != b'\n'))
        .unwrap_or(false);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open {} to add the host key: {e}", path.display()))?;
    let text = format!("{}{name} {alg} {b64}\n", if needs_newline { "\n" } else { "" });
    f.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

fn map_error(host: &str, address: &str, opts: &SshOptions, e: OpenError) -> ConnError {
    let unreachable = |detail: String| ConnError::Unreachable {
        host: host.to_string(),
        address: format!("{address}:{}", opts.port),
        detail,
    };
    match e {
        OpenError::Auth(detail) => ConnError::Auth {
            host: host.to_string(),
            user: opts.user.clone(),
            detail,
        },
        OpenError::Address(detail) => unreachable(detail),
        OpenError::Ssh { error, .. } => match *error {
            russh::Error::IO(err) => unreachable(err.to_string()),
            russh::Error::KeepaliveTimeout => unreachable(format!(
                "no answer from the host for {:?} (keepalive)",
                opts.keepalive.bound()
            )),
            other => unreachable(other.to_string()),
        },
    }
}

#[async_trait]
impl Connection for SshConnection {
    fn host(&self) -> &str {
        &self.host
    }

    async fn exec(&self, cmd: &Cmd) -> Result<Output, ConnError> {
        let answer = self.exec_inner(cmd).await;
        self.explain(answer).await
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, ConnError> {
        let out = self
            .exec(&Cmd::script(shell::read_script(path)).internal())
            .await?;
        if out.success() {
            Ok(Some(out.stdout))
        } else if shell::read_was_absent(out.exit_code, &out.stderr) {
            Ok(None)
        } else {
            Err(ConnError::Io {
                host: self.host.clone(),
                detail: format!("cannot read {path}: {}", out.stderr_str().trim()),
            })
        }
    }

    async fn stat(&self, path: &str) -> Result<Option<FileStat>, ConnError> {
        let out = self
            .exec(&Cmd::script(shell::stat_script(path)).internal())
            .await?;
        if !out.success() {
            return Err(ConnError::Io {
                host: self.host.clone(),
                detail: format!("cannot stat {path}: {}", out.stderr_str().trim()),
            });
        }
        shell::parse_stat(&out.stdout_str()).map_err(|detail| ConnError::Io {
            host: self.host.clone(),
            detail,
        })
    }

    async fn write_file(&self, path: &str, contents: &[u8], attrs: &FileAttrs) -> Result<(), ConnError> {
        let done = self.write_inner(path, contents, attrs).await;
        self.explain(done).await
    }

    async fn tunnel(&self, host: &str, port: u16) -> Result<Box<dyn Tunnel>, ConnError> {
        let tunnel = self.tunnel_inner(host, port).await;
        self.explain(tunnel).await
    }

    async fn interrupt(&self) {
        self.interrupted.store(true, std::sync::atomic::Ordering::SeqCst);
        let pids: Vec<u32> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        if !pids.is_empty() {
            tracing::debug!("{}: interrupted: TERM to process groups {pids:?}", self.host);
            self.kill_remote_all(&pids).await;
        }
    }

    async fn close(&self) -> Result<(), ConnError> {
        // Bounded: a host that stopped answering must not hold the end of the run.
        match tokio::time::timeout(Duration::from_secs(2), self.session.disconnect()).await {
            Ok(done) => done.map_err(|e| self.lost(e)),
            Err(_) => Ok(()),
        }
    }
}

impl SshConnection {
    async fn exec_inner(&self, cmd: &Cmd) -> Result<Output, ConnError> {
        // troupe's own operations go to the control shell when it is free; a second
        // one at the same time takes a session rather than wait.
        if cmd.internal && cmd.stdin.is_none() && cmd.env.is_empty() {
            if let Some(answer) = self.try_control(cmd).await {
                return answer;
            }
        }
        self.run(
            cmd.to_shell_line(),
            cmd.shell_stdin(),
            cmd.timeout.or(self.command_timeout),
            (!cmd.internal).then_some(super::OUTPUT_TAIL),
        )
        .await
    }

    async fn write_inner(&self, path: &str, contents: &[u8], attrs: &FileAttrs) -> Result<(), ConnError> {
        // Text travels inside the script to the control shell, through its stdin. A
        // session gets it on its own stdin, never on a command line (which `ps` shows
        // every user of the host).
        let inline = match shell::inline_text(contents) {
            Some(text) => {
                let cmd =
                    Cmd::script(shell::write_script(path, attrs, shell::Content::Inline(text))).internal();
                self.try_control(&cmd).await
            }
            None => None,
        };
        let out = match inline {
            Some(answer) => answer?,
            None => {
                self.run(
                    Cmd::script(shell::write_script(path, attrs, shell::Content::Stdin(contents)))
                        .to_shell_line(),
                    Some(contents.to_vec()),
                    self.command_timeout,
                    None,
                )
                .await?
            }
        };
        if out.success() {
            Ok(())
        } else {
            Err(ConnError::Io {
                host: self.host.clone(),
                detail: format!("cannot write {path}: {}", out.stderr_str().trim()),
            })
        }
    }

    async fn tunnel_inner(&self, host: &str, port: u16) -> Result<Box<dyn Tunnel>, ConnError> {
        // A name must mean what it means on the remote host, so resolve names there.
        let ip: std::net::IpAddr = match host {
            "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
            h => match h.trim_start_matches('[').trim_end_matches(']').parse() {
                Ok(ip) => ip,
                Err(_) => {
                    let out = self.exec(&Cmd::argv(["getent", "ahosts", h]).internal()).await?;
                    out.stdout_str()
                        .split_whitespace()
                        .next()
                        .and_then(|a| a.parse().ok())
                        .ok_or_else(|| ConnError::Io {
                            host: self.host.clone(),
                            detail: format!("{h} does not resolve on {}", self.host),
                        })?
                }
            },
        };
        let channel = self
            .session
            .direct_tcpip(ip, port)
            .await
            .map_err(|e| ConnError::Io {
                host: self.host.clone(),
                detail: format!("cannot open a tunnel to {host}:{port}: {e}"),
            })?;
        Ok(Box::new(channel.into_stream()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_host_specs() {
        let j = |s| JumpHost::parse(s, "deploy");
        assert_eq!(
            j("bastion").unwrap(),
            JumpHost {
                user: "deploy".into(),
                address: "bastion".into(),
                port: 22
            }
        );
        assert_eq!(
            j("ops@10.0.0.1:2222").unwrap(),
            JumpHost {
                user: "ops".into(),
                address: "10.0.0.1".into(),
                port: 2222
            }
        );
        assert_eq!(
            j("[::1]:2200").unwrap(),
            JumpHost {
                user: "deploy".into(),
                address: "::1".into(),
                port: 2200
            }
        );
        assert!(j("ops@host:notaport").is_err());
        assert!(j("@host").is_err());
        assert!(j("[::1").is_err());
    }

    #[test]
    fn settings_map_to_options() {
        let settings = ConnSettings {
            user: Some("deploy".into()),
            port: Some(2222),
            identity: Some("/keys/id".into()),
            known_hosts: Some("/kh".into()),
            jump: Some("bastion:22".into()),
            connect_timeout: Some(Duration::from_secs(3)),
            ..ConnSettings::default()
        };
        let o = SshOptions::from_settings(&settings, HostKeyPolicy::AcceptNew).unwrap();
        assert_eq!((o.user.as_str(), o.port), ("deploy", 2222));
        assert_eq!(o.auth, SshAuth::KeyFile("/keys/id".into()));
        assert_eq!(o.known_hosts, PathBuf::from("/kh"));
        assert_eq!(o.host_keys, HostKeyPolicy::AcceptNew);
        assert_eq!(o.connect_timeout, Duration::from_secs(3));
        assert_eq!(
            o.jump.unwrap().user,
            "deploy",
            "the jump host's user defaults to the target's"
        );
        let agent = ConnSettings {
            identity: Some("agent".into()),
            ..ConnSettings::default()
        };
        assert_eq!(
            SshOptions::from_settings(&agent, HostKeyPolicy::Strict)
                .unwrap()
                .auth,
            SshAuth::Agent
        );
    }

    #[test]
    fn pid_line_is_taken_off_stderr() {
        let mut e = b"troupe-pid:4242\nreal error\n".to_vec();
        assert_eq!(take_pid(&mut e), Some(4242));
        assert_eq!(e, b"real error\n");
        let mut plain = b"no marker\n".to_vec();
        assert_eq!(take_pid(&mut plain), None);
        assert_eq!(plain, b"no marker\n");
    }
}
