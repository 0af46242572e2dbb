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
//! The framing is in [`shell::control_request`]: each request ends by printing its own
//! tag (a per-connection random nonce, the request's sequence number and a random part
//! of its own) with the exit status on stdout, and the tag on stderr, so the answer is
//! exact even for output without a final newline. An answer is only ever taken for the
//! request whose tag it carries. A request whose caller gave up (its future was
//! dropped, e.g. by a caller's timeout) leaves its answer in the channel: the next
//! request first drains that answer, or, when it does not come soon or the request was
//! cut off while being written, the shell is replaced (see [`ControlShell::abandoned`]).

use std::time::Duration;

use russh::ChannelMsg;
use russh::client::Msg;

use super::session::Session;
use super::{Cmd, Output, shell};

/// What every tag starts with.
pub const TAG_PREFIX: &str = "troupe-ctl-";

/// Why a control shell could not answer; either way it is dropped, and the next
/// request starts a new one.
#[derive(Debug)]
pub enum ControlError {
    /// The shell ended or the channel failed.
    Broken(String),
    /// No answer within the request's timeout.
    Timeout,
}

/// A request that was started and whose answer has not been read (yet).
#[derive(Debug, Clone)]
struct Pending {
    tag: String,
    /// The whole request reached the channel. When not, the shell may hold half a
    /// command and only replacing it is safe.
    written: bool,
}

/// What a shell in which a request was abandoned needs before it can be used again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandoned {
    /// Its answer may still come: read and drop it first.
    Drain,
    /// It was cut off mid-write: the shell must be replaced.
    Replace,
}

/// A running control shell.
pub struct ControlShell {
    channel: russh::Channel<Msg>,
    /// The shell's session counted in the connection's `Slots` until it is dropped.
    _slot: super::session::Slot,
    nonce: String,
    seq: u64,
    /// The shell's pid on the host. sshd starts each session in a session of its own,
    /// so this is also the process group of everything a request starts: what to
    /// signal when a request hangs.
    pid: u32,
    /// What the shell printed that is not part of a finished answer yet. Kept here, not
    /// in the request's future, so that an answer is never lost or split when a caller
    /// drops that future halfway.
    frames: Frames,
    pending: Option<Pending>,
}

impl ControlShell {
    /// Start `sh` on a new session and prove it answers a first request.
    pub async fn start(session: &Session, timeout: Duration) -> Result<ControlShell, ControlError> {
        let (channel, slot) = tokio::time::timeout(timeout, async {
            let (channel, slot) = session
                .channel()
                .await
                .map_err(|e| ControlError::Broken(e.to_string()))?;
            channel
                .exec(true, "exec sh")
                .await
                .map_err(|e| ControlError::Broken(e.to_string()))?;
            Ok((channel, slot))
        })
        .await
        .map_err(|_| ControlError::Timeout)??;
        let mut shell = ControlShell {
            channel,
            _slot: slot,
            nonce: format!("{TAG_PREFIX}{:032x}", rand::random::<u128>()),
            seq: 0,
            pid: 0,
            frames: Frames::default(),
            pending: None,
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

    /// Whether a request was abandoned here, and what the shell needs before reuse.
    pub fn abandoned(&self) -> Option<Abandoned> {
        self.pending.as_ref().map(|p| {
            if p.written {
                Abandoned::Drain
            } else {
                Abandoned::Replace
            }
        })
    }

    /// Read and drop the answer of the abandoned request, for at most `wait`. `Err`
    /// when it did not come: the caller replaces the shell.
    pub async fn drain(&mut self, wait: Duration) -> Result<(), ControlError> {
        let Some(Pending { tag, written: true }) = self.pending.clone() else {
            return match self.pending {
                None => Ok(()),
                Some(_) => Err(ControlError::Broken(
                    "a request was cut off while being written".into(),
                )),
            };
        };
        tokio::time::timeout(wait, self.answer(&tag))
            .await
            .map_err(|_| ControlError::Timeout)??;
        self.pending = None;
        Ok(())
    }

    /// Run one command and wait for its framed answer.
    pub async fn run(&mut self, cmd: &Cmd, timeout: Option<Duration>) -> Result<Output, ControlError> {
        if self.pending.is_some() {
            // The caller drains or replaces an abandoned shell first; never guess.
            return Err(ControlError::Broken(
                "a previous request was abandoned here".into(),
            ));
        }
        if !self.frames.is_empty() {
            return Err(ControlError::Broken(format!(
                "the control shell printed outside any request: {:?}",
                String::from_utf8_lossy(&self.frames.stdout)
            )));
        }
        self.seq += 1;
        let tag = format!("{}-{}-{:016x}", self.nonce, self.seq, rand::random::<u64>());
        let request = shell::control_request(cmd, &tag);
        let exchange = async {
            self.pending = Some(Pending {
                tag: tag.clone(),
                written: false,
            });
            self.channel
                .data_bytes(request.into_bytes())
                .await
                .map_err(|e| ControlError::Broken(e.to_string()))?;
            if let Some(p) = &mut self.pending {
                p.written = true;
            }
            let out = self.answer(&tag).await?;
            self.pending = None;
            Ok(out)
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .map_err(|_| ControlError::Timeout)?,
            None => exchange.await,
        }
    }

    /// Read until the answer tagged `tag` is complete, and take it. Cancel-safe:
    /// what was read stays in `self.frames`.
    async fn answer(&mut self, tag: &str) -> Result<Output, ControlError> {
        loop {
            if let Some(out) = self.frames.take(tag) {
                return Ok(out);
            }
            match self.channel.wait().await {
                Some(ChannelMsg::Data { data }) => self.frames.stdout.extend_from_slice(&data),
                Some(ChannelMsg::ExtendedData { data, ext: 1 }) => {
                    self.frames.stderr.extend_from_slice(&data)
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
                        String::from_utf8_lossy(&self.frames.stderr).trim()
                    )));
                }
                Some(_) => {}
            }
        }
    }

    /// End the shell (best effort: the connection may be gone already).
    pub async fn close(self) {
        let _ = self.channel.eof().await;
        let _ = self.channel.close().await;
    }
}

/// The bytes a control shell printed, and the parser of its answers: pure, so the
/// framing can be tested against any output split at any point.
#[derive(Debug, Default, Clone)]
pub struct Frames {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Where the next search for a mark starts: a mark cannot begin earlier than
    /// this, so a large answer (a read of a big file) is never rescanned.
    out_scan: usize,
    err_scan: usize,
}

impl Frames {
    pub fn is_empty(&self) -> bool {
        self.stdout.is_empty() && self.stderr.is_empty()
    }

    /// The answer of the request tagged `tag`, once both its ends have arrived; it is
    /// removed with everything before it. Only the exact tag ends an answer: marks of
    /// other requests (or the nonce, or our prefix) in a command's output are output.
    pub fn take(&mut self, tag: &str) -> Option<Output> {
        // A mark not complete yet starts within its own length (plus a status code)
        // of the end.
        let reach = tag.len() + 24;
        let Some((at, code, end)) = status_mark(&self.stdout, self.out_scan, tag) else {
            self.out_scan = self.stdout.len().saturating_sub(reach);
            return None;
        };
        let err_mark = format!("\n{tag}\n");
        let Some(err_at) =
            find(&self.stderr[self.err_scan..], err_mark.as_bytes()).map(|i| i + self.err_scan)
        else {
            self.err_scan = self.stderr.len().saturating_sub(reach);
            return None;
        };
        self.out_scan = 0;
        self.err_scan = 0;
        let stdout = self.stdout[..at].to_vec();
        let stderr = self.stderr[..err_at].to_vec();
        self.stdout.drain(..end);
        self.stderr.drain(..err_at + err_mark.len());
        Some(Output {
            exit_code: code,
            stdout,
            stderr,
            ..Output::default()
        })
    }
}

/// `(start, exit code, end)` of the complete status line `\nTAG CODE\n` in `stdout`.
fn status_mark(stdout: &[u8], from: usize, tag: &str) -> Option<(usize, i32, usize)> {
    let mark = format!("\n{tag} ");
    let mut from = from;
    while let Some(rel) = find(&stdout[from..], mark.as_bytes()) {
        let at = from + rel;
        let rest = &stdout[at + mark.len()..];
        let eol = rest.iter().position(|b| *b == b'\n')?;
        if let Some(code) = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|c| c.parse().ok())
        {
            return Some((at, code, at + mark.len() + eol + 1));
        }
        from = at + 1;
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt as _, SeedableRng as _};

    use super::*;

    const NONCE: &str = "troupe-ctl-0123456789abcdef0123456789abcdef";

    fn tag(seq: u64, r: u64) -> String {
        format!("{NONCE}-{seq}-{r:016x}")
    }

    /// What the shell prints for one request (see `shell::control_request`).
    fn framed(tag: &str, out: &[u8], err: &[u8], code: i32) -> (Vec<u8>, Vec<u8>) {
        let mut o = out.to_vec();
        o.extend_from_slice(format!("\n{tag} {code}\n").as_bytes());
        let mut e = err.to_vec();
        e.extend_from_slice(format!("\n{tag}\n").as_bytes());
        (o, e)
    }

    #[test]
    fn takes_only_the_answer_with_its_own_tag() {
        let (a, b) = (tag(1, 7), tag(2, 9));
        let mut f = Frames::default();
        let (o, e) = framed(&a, b"stale", b"", 0);
        f.stdout.extend(o);
        f.stderr.extend(e);
        assert_eq!(f.take(&b), None, "another request's answer is not ours");
        let (o, e) = framed(&b, b"mine\n", b"warn", 3);
        f.stdout.extend(o);
        f.stderr.extend(e);
        assert_eq!(
            f.take(&b).map(|o| (o.stdout, o.stderr, o.exit_code)),
            Some((
                format!("stale\n{a} 0\nmine\n").into_bytes(),
                format!("\n{a}\nwarn").into_bytes(),
                3
            )),
            "taken alone, a stale answer shows up as output; the shell drains it first"
        );
        let mut f = Frames::default();
        f.stdout.extend(format!("\n{a} 0").as_bytes());
        f.stderr.extend(format!("\n{a}\n").as_bytes());
        assert_eq!(f.take(&a), None, "status line not complete");
        f.stdout.push(b'\n');
        assert_eq!(f.take(&a).unwrap().exit_code, 0);
        assert!(f.is_empty());
    }

    /// The framing against random output: bytes of every value, our prefix, the nonce,
    /// other requests' tags and marks, broken copies of this request's own mark, split
    /// into chunks at random points. The answer is always exactly what was printed.
    #[test]
    fn framing_recovers_any_output_split_anywhere() {
        let mut rng = StdRng::seed_from_u64(0x7e0_0e11);
        for case in 0..3000 {
            let seq = rng.random_range(1..50u64);
            let own = tag(seq, rng.random());
            let stale = tag(seq - 1, rng.random());
            let pieces = |rng: &mut StdRng| -> Vec<u8> {
                let mut v = Vec::new();
                for _ in 0..rng.random_range(0..12) {
                    match rng.random_range(0..9) {
                        0 => v.extend((0..rng.random_range(0..40)).map(|_| rng.random::<u8>())),
                        1 => v.extend(TAG_PREFIX.as_bytes()),
                        2 => v.extend(NONCE.as_bytes()),
                        3 => v.extend(format!("\n{stale} 0\n").as_bytes()),
                        4 => v.extend(format!("\n{stale}\n").as_bytes()),
                        // This request's own tag without the rest of its mark.
                        5 => v.extend(format!("\n{own}x").as_bytes()),
                        6 => v.extend(format!("\n{own} x\n").as_bytes()),
                        7 => v.extend(format!("\n{own}-{seq} 0\n").as_bytes()),
                        _ => v.extend(b"\n\n \n"),
                    }
                }
                v
            };
            let out = pieces(&mut rng);
            let err = pieces(&mut rng);
            let code = rng.random_range(-1..256);
            let (o, e) = framed(&own, &out, &err, code);
            let mut f = Frames::default();
            let (mut oi, mut ei) = (0, 0);
            let mut got = None;
            while oi < o.len() || ei < e.len() {
                assert!(got.is_none(), "case {case}: an answer before all of it arrived");
                let n = rng.random_range(1..64);
                if rng.random_bool(0.5) && oi < o.len() {
                    let to = (oi + n).min(o.len());
                    f.stdout.extend_from_slice(&o[oi..to]);
                    oi = to;
                } else if ei < e.len() {
                    let to = (ei + n).min(e.len());
                    f.stderr.extend_from_slice(&e[ei..to]);
                    ei = to;
                }
                got = f.take(&own);
            }
            let got = got.unwrap_or_else(|| panic!("case {case}: no answer"));
            assert_eq!(got.stdout, out, "case {case}");
            assert_eq!(got.stderr, err, "case {case}");
            assert_eq!(got.exit_code, code, "case {case}");
            assert!(f.is_empty(), "case {case}");
        }
    }
}
