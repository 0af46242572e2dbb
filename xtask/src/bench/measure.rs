//! The measuring process (`bench __measure`): a child subreaper that runs one timed
//! command and reports wall time, controller CPU and peak RSS of every descendant,
//! including the `ssh` control masters that daemonize themselves.

use super::*;

/// What one timed run cost.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Sample {
    pub(super) wall: Duration,
    /// Controller CPU: user + system time of the whole process tree.
    pub(super) cpu: Duration,
    /// Largest resident set of any process of the tree, KiB.
    pub(super) max_rss_kib: u64,
    pub(super) ok: bool,
}

/// The measuring process: `bench __measure RESULT LOG -- PROGRAM ARGS...`. A child
/// subreaper, so daemonized descendants (ssh control masters) come back to it: once the
/// direct child exits, leftovers get SIGTERM (then SIGKILL after 10 s), every one is
/// reaped, and `getrusage(RUSAGE_CHILDREN)` covers them all.
pub(super) fn measure_child(args: &[String]) -> Result<()> {
    use nix::sys::resource::{UsageWho, getrusage};
    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitStatus, waitpid};
    use nix::unistd::Pid;

    let [result, log, dashdash, program, rest @ ..] = args else {
        bail!("usage: bench __measure RESULT LOG -- PROGRAM ARGS...");
    };
    if dashdash != "--" {
        bail!("bench __measure: expected `--` before the program");
    }
    nix::sys::prctl::set_child_subreaper(true).context("become a child subreaper")?;
    let log = fs::File::create(log).with_context(|| format!("create {log}"))?;
    let started = Instant::now();
    let child = Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {program}"))?;
    let main = Pid::from_raw(child.id() as i32);
    let mut wall = None;
    let mut code = -1;
    let mut termed_at: Option<Instant> = None;
    let me = std::process::id();
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, c)) if pid == main => {
                wall = Some(started.elapsed());
                code = c;
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == main => {
                wall = Some(started.elapsed());
                code = 128 + sig as i32;
            }
            Ok(_) => {}
            Err(nix::errno::Errno::ECHILD) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => bail!("waitpid: {e}"),
        }
        if wall.is_some() {
            // The main child is gone: stop what it left behind (control masters).
            let left = children_of(me);
            if left.is_empty() {
                continue; // the next waitpid reports ECHILD
            }
            let sig = match termed_at {
                None => {
                    termed_at = Some(Instant::now());
                    Signal::SIGTERM
                }
                Some(t) if t.elapsed() > Duration::from_secs(10) => Signal::SIGKILL,
                Some(_) => {
                    // Wait a little for the ones already told to go.
                    std::thread::sleep(Duration::from_millis(20));
                    match waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                        Err(nix::errno::Errno::ECHILD) => break,
                        _ => continue,
                    }
                }
            };
            for p in left {
                let _ = kill(Pid::from_raw(p as i32), sig);
            }
        }
    }
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).context("getrusage")?;
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    let cpu_us = tv(usage.user_time()) + tv(usage.system_time());
    let wall = wall.unwrap_or_else(|| started.elapsed());
    fs::write(
        result,
        format!("{} {} {} {}\n", wall.as_micros(), cpu_us, usage.max_rss(), code),
    )
    .with_context(|| format!("write {result}"))?;
    Ok(())
}

/// Live children of `pid` (read from /proc; used to find adopted orphans).
pub(super) fn children_of(pid: u32) -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            fs::read_to_string(format!("/proc/{p}/stat")).ok().and_then(|s| {
                let rest = s.rsplit_once(')')?.1;
                let mut f = rest.split_whitespace();
                let state = f.next()?;
                let ppid: u32 = f.next()?.parse().ok()?;
                Some(ppid == pid && state != "Z")
            }) == Some(true)
        })
        .collect()
}

/// A private copy of this binary for the measuring processes: teammates rebuild
/// `target/debug/xtask` while a bench runs, which would pull it from under us.
pub(super) fn measure_exe() -> Result<PathBuf> {
    static EXE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    if let Some(p) = EXE.get() {
        return Ok(p.clone());
    }
    // /proc/self/exe still reads when the file was replaced or deleted meanwhile.
    let me = PathBuf::from("/proc/self/exe");
    let copy = work_dir().join("bin").join("xtask-measure");
    fs::create_dir_all(copy.parent().expect("has a parent"))?;
    let tmp = copy.with_extension("tmp");
    fs::copy(&me, &tmp).with_context(|| format!("copy {} to {}", me.display(), tmp.display()))?;
    fs::rename(&tmp, &copy)?;
    Ok(EXE.get_or_init(|| copy).clone())
}

/// Run `cmd` under the measuring process; its output goes to `log`.
pub(super) fn measured(cmd: &[String], cwd: &Path, env: &[(&str, String)], log: &Path) -> Result<Sample> {
    let exe = measure_exe()?;
    let result = log.with_extension("result");
    let _ = fs::remove_file(&result);
    let status = Command::new(exe)
        .arg("bench")
        .arg("__measure")
        .arg(&result)
        .arg(log)
        .arg("--")
        .args(cmd)
        .current_dir(cwd)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .status()
        .context("start the measuring process")?;
    if !status.success() {
        bail!("the measuring process failed ({status}) for {cmd:?}");
    }
    let text = fs::read_to_string(&result).with_context(|| format!("read {}", result.display()))?;
    let f: Vec<u64> = text
        .split_whitespace()
        .filter_map(|x| x.parse::<i64>().ok())
        .map(|x| x.max(0) as u64)
        .collect();
    let code_raw: i64 = text
        .split_whitespace()
        .nth(3)
        .and_then(|x| x.parse().ok())
        .unwrap_or(-1);
    let [wall_us, cpu_us, rss, ..] = f.as_slice() else {
        bail!("unexpected measurement {text:?}");
    };
    Ok(Sample {
        wall: Duration::from_micros(*wall_us),
        cpu: Duration::from_micros(*cpu_us),
        max_rss_kib: *rss,
        ok: code_raw == 0,
    })
}
