//! The host's control shell: one long-lived `sh` per SSH connection that runs troupe's
//! own short file operations ([`Cmd::internal`]: stat, read, write, mkdir, chmod...).
//!
//! Why: every SSH session costs the host a fork of sshd, the user's login shell (with
//! its rc files) and the `sh` troupe asks for, before the one program that does the
//! work. On a cold run of the fan-out bench that was most of what the hosts did
//! (`bench/results/NOTES.md`). A request written to a shell that is already running
//! costs a subshell fork instead. Users' commands keep sessions of their own: their
//! stdin, their login shell, and whatever they leave running are theirs.
//!
//! The framing is in [`shell::control_request`]: each request ends by printing a
//! per-connection random nonce with the exit status on stdout and an end mark on
//! stderr, so the answer is exact even for output without a final newline.

use std::time::Duration;

use async_ssh2_tokio::client::Client;
use russh::ChannelMsg;
use russh::client::Msg;

use super::{Cmd, Output, shell};

/// Why a control shell could not answer; either way it is dropped, and the next
/// request starts a new one.
#[derive(Debug)]
pub enum ControlError {
    /// The shell ended or the channel failed.
    Broken(String),
    /// No answer within the request's timeout.
    Timeout,
}

/// A running control shell.
pub struct ControlShell {
    channel: russh::Channel<Msg>,
    nonce: String,
    /// The shell's pid on the host. sshd starts each session in a session of its own,
    /// so this is also the process group of everything a request starts: what to
    /// signal when a request hangs.
    pid: u32,
}

impl ControlShell {
    /// Start `sh` on a new session and prove it answers a first, empty request.
    pub async fn start(client: &Client, timeout: Duration) -> Result<ControlShell, ControlError> {
        let channel = tokio::time::timeout(timeout, async {
            let channel = client
                .get_channel()
                .await
                .map_err(|e| ControlError::Broken(e.to_string()))?;
            channel
                .exec(true, "exec sh")
                .await
                .map_err(|e| ControlError::Broken(e.to_string()))?;
            Ok(channel)
        })
        .await
        .map_err(|_| ControlError::Timeout)??;
        let mut shell = ControlShell {
            channel,
            nonce: format!("troupe-ctl-{:032x}", rand::random::<u128>()),
            pid: 0,
        };
        // In the request's subshell `$$` is still the shell's own pid.
        let out = shell.run(&Cmd::script("echo $$"), Some(timeout)).await?;
        match out.stdout_str().trim().parse() {
            Ok(pid) if out.success() => shell.pid = pid,
            _ => {
                return Err(ControlError::Broken(format!(
                    "the control shell's first answer was not its pid: {:?} {}",
                    out.stdout_str(),
                    out.stderr_str().trim()
                )));
            }
        }
        Ok(shell)
    }

    /// The shell's pid (and process group) on the host.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Run one command and wait for its framed answer.
    pub async fn run(&mut self, cmd: &Cmd, timeout: Option<Duration>) -> Result<Output, ControlError> {
        let request = shell::control_request(cmd, &self.nonce);
        let exchange = async {
            self.channel
                .data_bytes(request.into_bytes())
                .await
                .map_err(|e| ControlError::Broken(e.to_string()))?;
            let mut out = Output::default();
            let mut status = None;
            let mut err_end = None;
            // Only the tail can hold a mark not seen yet: never rescan the whole buffer.
            let reach = self.nonce.len() + 24;
            loop {
                match self.channel.wait().await {
                    Some(ChannelMsg::Data { data }) => {
                        let from = out.stdout.len().saturating_sub(reach);
                        out.stdout.extend_from_slice(&data);
                        if status.is_none() {
                            status = shell::control_status(&out.stdout[from..], &self.nonce)
                                .map(|(at, code)| (from + at, code));
                        }
                    }
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                        let from = out.stderr.len().saturating_sub(reach);
                        out.stderr.extend_from_slice(&data);
                        if err_end.is_none() {
                            err_end = shell::control_stderr_end(&out.stderr[from..], &self.nonce)
                                .map(|at| from + at);
                        }
                    }
                    Some(
                        ChannelMsg::Eof
                        | ChannelMsg::Close
                        | ChannelMsg::ExitStatus { .. }
                        | ChannelMsg::ExitSignal { .. }
                        | ChannelMsg::Failure,
                    )
                    | None => {
                        return Err(ControlError::Broken(format!(
                            "the control shell ended: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        )));
                    }
                    Some(_) => {}
                }
                if let (Some((at, code)), Some(end)) = (status, err_end) {
                    out.stdout.truncate(at);
                    out.stderr.truncate(end);
                    out.exit_code = code;
                    return Ok(out);
                }
            }
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .map_err(|_| ControlError::Timeout)?,
            None => exchange.await,
        }
    }

    /// End the shell (best effort: the connection may be gone already).
    pub async fn close(self) {
        let _ = self.channel.eof().await;
        let _ = self.channel.close().await;
    }
}
