//! The controller itself as a host (`connection=local`, e.g. `localhost`): the same
//! semantics as SSH without a network hop. Commands go through `sh -c` with the very
//! line SSH would send, and stat/atomic write use the same [`super::shell`] snippets,
//! so a playbook behaves the same whichever transport runs it.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{Cmd, ConnError, Connection, Dropped, FileAttrs, FileStat, Output, Tail, Tunnel, shell};

#[derive(Debug, Clone)]
pub struct LocalConnection {
    host: String,
    command_timeout: Option<Duration>,
    /// Process groups of the commands running now (each command leads its own), for
    /// [`Connection::interrupt`].
    running: super::RunningPids,
    interrupted: Arc<AtomicBool>,
}

impl LocalConnection {
    /// `host` is the inventory name, for messages.
    pub fn new(host: impl Into<String>) -> LocalConnection {
        LocalConnection {
            host: host.into(),
            command_timeout: None,
            running: Arc::default(),
            interrupted: Arc::default(),
        }
    }

    /// Default timeout of commands that have none of their own.
    pub fn with_command_timeout(mut self, timeout: Option<Duration>) -> LocalConnection {
        self.command_timeout = timeout;
        self
    }

    fn io(&self, detail: String) -> ConnError {
        ConnError::Io {
            host: self.host.clone(),
            detail,
        }
    }

    /// Run `line` with `sh -c`; each output stream kept as its last `tail` bytes.
    async fn run(
        &self,
        line: &str,
        stdin: Option<Vec<u8>>,
        tail: Option<usize>,
    ) -> Result<Output, ConnError> {
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(ConnError::Interrupted {
                host: self.host.clone(),
                command: super::command_summary(line),
            });
        }
        // A process group of its own, so that an interrupt reaches what it starts.
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(line)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| self.io(format!("cannot start sh: {e}")))?;
        let _running = child
            .id()
            .map(|pid| super::RunningPid::register(&self.running, pid));
        let mut pipe = child.stdin.take();
        let feeder = tokio::spawn(async move {
            if let (Some(p), Some(data)) = (pipe.as_mut(), stdin) {
                let _ = p.write_all(&data).await;
            }
            drop(pipe);
        });
        // Both pipes at once (a full one would block the command), each kept as its
        // tail.
        async fn drain(
            pipe: Option<impl tokio::io::AsyncRead + Unpin>,
            mut tail: Tail,
        ) -> (Vec<u8>, Dropped) {
            if let Some(mut pipe) = pipe {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match pipe.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => tail.push(&buf[..n]),
                    }
                }
            }
            tail.finish()
        }
        let stream = || tail.map_or_else(Tail::unbounded, Tail::new);
        let ((stdout, stdout_dropped), (stderr, stderr_dropped), status) = tokio::join!(
            drain(child.stdout.take(), stream()),
            drain(child.stderr.take(), stream()),
            child.wait()
        );
        let status = status.map_err(|e| self.io(format!("waiting for `{line}`: {e}")))?;
        feeder.abort();
        use std::os::unix::process::ExitStatusExt as _;
        let exit_code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        Ok(Output {
            exit_code,
            stdout,
            stderr,
            stdout_dropped,
            stderr_dropped,
        })
    }
}

#[async_trait]
impl Connection for LocalConnection {
    fn host(&self) -> &str {
        &self.host
    }

    async fn exec(&self, cmd: &Cmd) -> Result<Output, ConnError> {
        let line = cmd.to_shell_line();
        let tail = (!cmd.internal).then_some(super::OUTPUT_TAIL);
        match cmd.timeout.or(self.command_timeout) {
            // The child is killed on drop, i.e. when the timeout drops the future.
            Some(after) => tokio::time::timeout(after, self.run(&line, cmd.shell_stdin(), tail))
                .await
                .map_err(|_| ConnError::Timeout {
                    host: self.host.clone(),
                    after,
                    command: line.clone(),
                })?,
            None => self.run(&line, cmd.shell_stdin(), tail).await,
        }
    }

    async fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, ConnError> {
        match tokio::fs::read(path).await {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(format!("cannot read {path}: {e}"))),
        }
    }

    async fn stat(&self, path: &str) -> Result<Option<FileStat>, ConnError> {
        let out = self.exec(&Cmd::script(shell::stat_script(path))).await?;
        if !out.success() {
            return Err(self.io(format!("cannot stat {path}: {}", out.stderr_str().trim())));
        }
        shell::parse_stat(&out.stdout_str()).map_err(|d| self.io(d))
    }

    async fn write_file(&self, path: &str, contents: &[u8], attrs: &FileAttrs) -> Result<(), ConnError> {
        let out = self
            .exec(
                &Cmd::script(shell::write_script(path, attrs, shell::Content::Stdin(contents)))
                    .stdin(contents.to_vec()),
            )
            .await?;
        if out.success() {
            Ok(())
        } else {
            Err(self.io(format!("cannot write {path}: {}", out.stderr_str().trim())))
        }
    }

    async fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        let groups: Vec<String> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|pid| format!("-{pid}"))
            .collect();
        if !groups.is_empty() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", "--"])
                .args(&groups)
                .stderr(Stdio::null())
                .status()
                .await;
        }
    }

    async fn tunnel(&self, host: &str, port: u16) -> Result<Box<dyn Tunnel>, ConnError> {
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| self.io(format!("cannot connect to {host}:{port}: {e}")))?;
        let _ = stream.set_nodelay(true);
        Ok(Box::new(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::{FileKind, OUTPUT_TAIL};

    fn temp_dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    #[tokio::test]
    async fn exec_passes_stdin_env_cwd_and_exit_code() {
        let dir = temp_dir();
        let conn = LocalConnection::new("localhost");
        let mut cmd = Cmd::script("cat; echo \" $GREETING\"; pwd; echo oops >&2; exit 3").stdin("hello");
        cmd.env = vec![("GREETING".into(), "hi there".into())];
        cmd.cwd = Some(dir.path().display().to_string());
        let out = conn.exec(&cmd).await.unwrap();
        assert_eq!(out.exit_code, 3);
        assert_eq!(
            out.stdout_str(),
            format!("hello hi there\n{}\n", dir.path().display())
        );
        assert_eq!(out.stderr_str(), "oops\n");
    }

    #[tokio::test]
    async fn exec_times_out() {
        let conn = LocalConnection::new("localhost");
        let mut cmd = Cmd::argv(["sleep", "10"]);
        cmd.timeout = Some(Duration::from_millis(100));
        let err = conn.exec(&cmd).await.unwrap_err();
        assert!(matches!(err, ConnError::Timeout { .. }), "{err:?}");
    }

    /// An interrupt TERMs the process group of a running command (the `sleep` too,
    /// not only its `sh`) and refuses new commands.
    #[tokio::test]
    async fn interrupt_stops_running_commands_and_refuses_new_ones() {
        let conn = LocalConnection::new("localhost");
        let running = tokio::spawn({
            let conn = conn.clone();
            async move { conn.exec(&Cmd::script("sleep 300; echo done")).await }
        });
        while conn.running.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        conn.interrupt().await;
        let out = running.await.unwrap().unwrap();
        assert_eq!(out.exit_code, 128 + 15, "{out:?}");
        assert_eq!(out.stdout_str(), "");
        let refused = conn.exec(&Cmd::argv(["true"])).await.unwrap_err();
        assert!(matches!(refused, ConnError::Interrupted { .. }), "{refused:?}");
    }

    /// Regression (issue 11.5): a users' command keeps only the tail of its output
    /// in memory, with counts of what was dropped; troupe's own commands keep it all.
    #[tokio::test]
    async fn long_output_is_kept_as_its_tail() {
        let conn = LocalConnection::new("localhost");
        // 3 MiB + of numbered lines on stdout, one long line on stderr.
        let script = "seq 1 400000; head -c 3000000 /dev/zero | tr '\\0' x >&2";
        let out = conn.exec(&Cmd::script(script)).await.unwrap();
        assert!(out.stdout.len() <= OUTPUT_TAIL && out.stdout.len() > OUTPUT_TAIL - 4096);
        assert!(out.stdout.ends_with(b"\n399999\n400000\n"));
        let first: u64 = out.stdout_str().lines().next().unwrap().parse().unwrap();
        assert_eq!(out.stdout_dropped.lines, first - 1, "whole lines dropped");
        let all: u64 = (1..=400_000u64).map(|n| n.to_string().len() as u64 + 1).sum();
        assert_eq!(out.stdout_dropped.bytes + out.stdout.len() as u64, all);
        assert_eq!(out.stderr.len(), OUTPUT_TAIL);
        assert_eq!(out.stderr_dropped.bytes, 3_000_000 - OUTPUT_TAIL as u64);
        let own = conn.exec(&Cmd::script(script).internal()).await.unwrap();
        assert_eq!(own.stdout.len() as u64, all);
        assert_eq!(own.stdout_dropped, Dropped::default());
    }

    #[tokio::test]
    async fn write_stat_read_roundtrip_keeps_mode_and_leaves_no_temp_file() {
        let dir = temp_dir();
        let path = dir.path().join("my file.conf").display().to_string();
        let conn = LocalConnection::new("localhost");
        assert_eq!(conn.stat(&path).await.unwrap(), None);
        assert_eq!(conn.read_file(&path).await.unwrap(), None);
        let attrs = FileAttrs {
            mode: Some(0o640),
            ..FileAttrs::default()
        };
        conn.write_file(&path, b"one\n", &attrs).await.unwrap();
        // No attrs: the mode of the replaced file is kept.
        conn.write_file(&path, b"two\n", &FileAttrs::default())
            .await
            .unwrap();
        let st = conn.stat(&path).await.unwrap().unwrap();
        assert_eq!((st.kind, st.mode, st.size), (FileKind::File, 0o640, 4));
        assert_eq!(
            st.sha256.as_deref(),
            Some("27dd8ed44a83ff94d557f9fd0412ed5a8cbca69ea04922d88c01184a07300a5a")
        );
        assert_eq!(
            conn.read_file(&path).await.unwrap().as_deref(),
            Some(&b"two\n"[..])
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("my file.conf")]);
    }

    /// Regression (issue 11.2): a stdin that ends early (troupe killed, connection
    /// lost) looked to `cat` like the end of the file, and the truncated temp file
    /// was renamed over the target.
    #[tokio::test]
    async fn a_transfer_cut_off_is_never_renamed_into_place() {
        let dir = temp_dir();
        let path = dir.path().join("big").display().to_string();
        std::fs::write(&path, b"old content\n").unwrap();
        let conn = LocalConnection::new("localhost");
        let new: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for arrived in [&new[..0], &new[..40_000], &new[..new.len() - 1]] {
            let script = shell::write_script(&path, &FileAttrs::default(), shell::Content::Stdin(&new));
            let out = conn
                .exec(&Cmd::script(script).stdin(arrived.to_vec()))
                .await
                .unwrap();
            assert_ne!(out.exit_code, 0, "{} bytes arrived", arrived.len());
            assert!(
                out.stderr_str()
                    .contains(&format!("{} of {} bytes arrived", arrived.len(), new.len())),
                "{}",
                out.stderr_str()
            );
            assert_eq!(std::fs::read(&path).unwrap(), b"old content\n");
            assert_eq!(
                std::fs::read_dir(dir.path()).unwrap().count(),
                1,
                "temp file left"
            );
        }
        // Same size, other bytes: the SHA-256 catches it.
        let mut other = new.clone();
        other[7] ^= 1;
        let script = shell::write_script(&path, &FileAttrs::default(), shell::Content::Stdin(&new));
        let out = conn.exec(&Cmd::script(script).stdin(other)).await.unwrap();
        assert!(out.stderr_str().contains("SHA-256"), "{}", out.stderr_str());
        assert_eq!(std::fs::read(&path).unwrap(), b"old content\n");
        conn.write_file(&path, &new, &FileAttrs::default()).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), new);
    }

    /// A temp file whose writer was killed before its trap ran is removed by the next
    /// write of the same path; a live writer's, and other files' temp files, are not.
    #[tokio::test]
    async fn the_next_write_removes_only_dead_writers_temp_files() {
        let dir = temp_dir();
        let at = |n: &str| dir.path().join(n);
        // Above the kernel's largest pid_max: no such process.
        let dead = format!(".f.troupe-tmp.{}.00ff", 4_194_304 + 1);
        let live = format!(".f.troupe-tmp.{}.00ee", std::process::id());
        let other = ".g.troupe-tmp.999999999.00dd";
        for n in [dead.as_str(), live.as_str(), other] {
            std::fs::write(at(n), b"partial").unwrap();
        }
        let conn = LocalConnection::new("localhost");
        let path = at("f").display().to_string();
        conn.write_file(&path, &[0xff; 10], &FileAttrs::default())
            .await
            .unwrap();
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec![live.clone(), other.to_string(), "f".to_string()]);
    }

    #[tokio::test]
    async fn write_onto_a_directory_fails_and_cleans_up() {
        let dir = temp_dir();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let conn = LocalConnection::new("localhost");
        let err = conn
            .write_file(
                &dir.path().join("d").display().to_string(),
                b"x",
                &FileAttrs::default(),
            )
            .await
            .unwrap_err();
        assert!(err.to_string().contains("is a directory"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
