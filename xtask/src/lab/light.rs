//! The light lab (`lab up --light`): each host is an OpenSSH sshd in its own mount and
//! UTS namespace (`unshare --mount --uts`) with bind mounts of per-host directories over
//! `/etc/kubernetes`, `/var/lib/etcd`, `/etc/etcd`, `/srv`, `/etc/service`, `/etc/sv`,
//! and its own runsvdir. Everything else (`/etc/passwd`, packages, no systemd) is the
//! controller's. It costs a few MB per host and starts in milliseconds, which the 200-
//! and 500-host benches need; tests and the demo use the real machines of
//! [`super::system`].
//!
//! A process belongs to host H of lab L when its mount table holds H's bind mount of
//! `L/H/etc-kubernetes` (see [`LightHost::owns`]). Namespace inode numbers alone cannot
//! say that: the kernel reuses them at once, so a dead host's recorded number soon
//! names another lab's live host.

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::{all_pids, is_zombie, proc_ns, sh_quote, tail};

/// Host directories bind-mounted over the real paths inside each host's namespace:
/// (per-host subdirectory, mount point).
pub const MOUNTS: &[(&str, &str)] = &[
    ("etc-kubernetes", "/etc/kubernetes"),
    ("var-lib-etcd", "/var/lib/etcd"),
    ("etc-etcd", "/etc/etcd"),
    ("srv", "/srv"),
    ("etc-service", "/etc/service"),
    ("etc-sv", "/etc/sv"),
];

/// The processes `up` recorded for one light host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LightHost {
    pub sshd_pid: u32,
    pub runsvdir_pid: Option<u32>,
    /// `mnt:[4026532177]` at `up`: a cheap first filter only, since the number is
    /// reused as soon as the namespace dies ([`LightHost::owns`] decides).
    pub mnt_ns: String,
    pub uts_ns: String,
}

impl LightHost {
    /// Whether `pid` is alive and a process of host `host` of lab `lab`.
    pub fn alive(&self, lab: &str, host: &str, pid: u32) -> bool {
        proc_ns(pid, "mnt").as_deref() == Some(self.mnt_ns.as_str())
            && !is_zombie(pid)
            && Self::owns(lab, host, pid)
    }

    /// Whether process `pid` lives on host `host` of lab `lab`: its mount table has
    /// that host's bind mount of `LAB_ROOT/<lab>/<host>/etc-kubernetes` on
    /// `/etc/kubernetes`. Lab and host names are part of that path and never shared,
    /// so unlike a namespace inode number this cannot name another lab's process,
    /// however the kernel reuses numbers, and it survives reparenting (a daemon started
    /// over SSH still has it).
    pub fn owns(lab: &str, host: &str, pid: u32) -> bool {
        let (sub, target) = MOUNTS[0];
        let suffix = format!("/{lab}/{host}/{sub}");
        fs::read_to_string(format!("/proc/{pid}/mountinfo")).is_ok_and(|table| {
            table.lines().any(|line| {
                let mut f = line.split(' ');
                let (root, mount_point) = (f.nth(3), f.next());
                mount_point == Some(target) && root.is_some_and(|r| r.ends_with(&suffix))
            })
        })
    }

    /// Every live process of the host (never this process).
    pub fn processes(&self, lab: &str, host: &str) -> Vec<u32> {
        let me = std::process::id();
        all_pids()
            .into_iter()
            .filter(|&p| p != me)
            .filter(|&p| self.alive(lab, host, p))
            .collect()
    }
}

pub fn check_tools() -> Result<()> {
    for tool in ["unshare", "sshd", "ssh-keygen", "runsvdir"] {
        if crate::deps::find_command(tool).is_none() {
            bail!(
                "`{tool}` is not installed: run `cargo xtask demo` or `cargo xtask test` as root once (they install it)"
            );
        }
    }
    // Things that must exist in the real root for the namespaces to mount over / use.
    for (_, target) in MOUNTS {
        fs::create_dir_all(target)?;
    }
    fs::create_dir_all("/run/sshd")?;
    Ok(())
}

/// Write host `host`'s sshd config and directories under `hdir` and start it.
pub fn start(lab: &str, lab_dir: &Path, hdir: &Path, host: &str, address: &str) -> Result<LightHost> {
    for (sub, _) in MOUNTS {
        fs::create_dir_all(hdir.join(sub))?;
    }
    fs::copy(lab_dir.join("id_ed25519.pub"), lab_dir.join("authorized_keys"))?;
    fs::write(hdir.join("sshd_config"), sshd_config(lab_dir, hdir, address))?;
    let started = start_host(hdir, host)?;
    wait_for_sshd(lab, host, &started, address, &hdir.join("sshd.log"))?;
    Ok(started)
}

fn sshd_config(lab: &Path, hdir: &Path, address: &str) -> String {
    format!(
        "# troupe lab host, written by `cargo xtask lab up --light`\n\
         ListenAddress {address}:22\n\
         HostKey {hostkey}\n\
         PidFile none\n\
         Subsystem sftp /usr/lib/openssh/sftp-server\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         AuthorizedKeysFile {lab}/authorized_keys\n\
         StrictModes no\n\
         UsePAM no\n\
         UseDNS no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         X11Forwarding no\n\
         AllowTcpForwarding yes\n\
         PermitTunnel no\n\
         MaxSessions 64\n\
         MaxStartups 256\n\
         MaxAuthTries 10\n\
         LoginGraceTime 30\n\
         ClientAliveInterval 30\n\
         ClientAliveCountMax 4\n\
         LogLevel ERROR\n",
        hostkey = hdir.join("ssh_host_ed25519_key").display(),
        lab = lab.display(),
    )
}

/// Start one host: `sh` (in the background, so the host is not our child and never
/// becomes our zombie) runs `unshare`, which without `--fork` execs the inner script in
/// the new namespaces; the script bind-mounts the host's directories, sets the
/// hostname, starts the host's runsvdir and execs sshd, keeping the pid it wrote.
fn start_host(hdir: &Path, host: &str) -> Result<LightHost> {
    let q = |p: &Path| sh_quote(&p.display().to_string());
    let mut inner = String::from("set -e\n");
    for (sub, target) in MOUNTS {
        writeln!(inner, "mount --bind {} {target}", q(&hdir.join(sub)))?;
    }
    // bash reads ~/.bashrc even for `ssh host cmd`; the controller's (pyenv and the
    // like) costs ~300 ms per command and belongs to no lab host. Each host gets its
    // own, empty one.
    if Path::new("/root/.bashrc").is_file() {
        let rc = hdir.join("root-bashrc");
        fs::write(
            &rc,
            "# ~/.bashrc of this lab host (the controller's is hidden by `cargo xtask lab up`)\n",
        )?;
        writeln!(inner, "mount --bind {} /root/.bashrc", q(&rc))?;
    }
    writeln!(inner, "hostname {host}")?;
    writeln!(inner, "runsvdir -P /etc/service </dev/null >/dev/null 2>&1 &")?;
    writeln!(inner, "echo $! > {}", q(&hdir.join("runsvdir.pid")))?;
    writeln!(inner, "echo $$ > {}", q(&hdir.join("sshd.pid")))?;
    writeln!(
        inner,
        "exec /usr/sbin/sshd -D -f {} -E {}",
        q(&hdir.join("sshd_config")),
        q(&hdir.join("sshd.log"))
    )?;
    let outer = format!(
        "unshare --mount --uts --propagation private sh -c {} </dev/null >>{} 2>&1 &",
        sh_quote(&inner),
        q(&hdir.join("start.log"))
    );
    for f in ["sshd.pid", "runsvdir.pid"] {
        let _ = fs::remove_file(hdir.join(f));
    }
    crate::run_quiet(
        Command::new("sh")
            .arg("-c")
            .arg(&outer)
            .stdin(Stdio::null())
            .process_group(0),
    )?;

    let deadline = Instant::now() + Duration::from_secs(15);
    let read_pid = |f: &str| {
        fs::read_to_string(hdir.join(f))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
    };
    loop {
        if let (Some(sshd), Some(runsvdir)) = (read_pid("sshd.pid"), read_pid("runsvdir.pid")) {
            let mnt = fs::read_link(format!("/proc/{sshd}/ns/mnt"));
            let uts = fs::read_link(format!("/proc/{sshd}/ns/uts"));
            if let (Ok(mnt), Ok(uts)) = (mnt, uts) {
                return Ok(LightHost {
                    sshd_pid: sshd,
                    runsvdir_pid: Some(runsvdir),
                    mnt_ns: mnt.display().to_string(),
                    uts_ns: uts.display().to_string(),
                });
            }
            bail!(
                "{host}: sshd (pid {sshd}) exited at once: {}",
                tail(&hdir.join("sshd.log"))
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{host} did not start within 15s: {}",
                tail(&hdir.join("start.log"))
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_sshd(lab: &str, host: &str, h: &LightHost, address: &str, log: &Path) -> Result<()> {
    let addr: SocketAddr = format!("{address}:22").parse()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        if !h.alive(lab, host, h.sshd_pid) {
            bail!("{host}: sshd exited: {}", tail(log));
        }
        if Instant::now() > deadline {
            bail!(
                "{host}: sshd does not accept connections on {addr} after 20s: {}",
                tail(log)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Stop every process of the light hosts `hosts` (lab, host name, record): TERM (runsv
/// stops its service on TERM too; runsvdir gets KILL at once), then KILL what is left
/// after 5 s.
pub fn stop(label: &str, hosts: &[(&str, &str, &LightHost)]) {
    let all = || -> Vec<u32> {
        hosts
            .iter()
            .flat_map(|(lab, host, h)| h.processes(lab, host))
            .collect()
    };
    let pids = all();
    if pids.is_empty() {
        eprintln!("{label}: no process left");
        return;
    }
    eprintln!(
        "{label}: stopping {} processes in {} hosts",
        pids.len(),
        hosts.len()
    );
    // runsvdir acts on TERM only at its next scan, up to 5 s later, and has nothing to
    // flush: KILL it. The runsv processes (own sessions, `-P`) get TERM like everyone
    // else and stop their services themselves.
    let (runsvdirs, others): (Vec<u32>, Vec<u32>) = pids
        .iter()
        .partition(|&&p| fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "runsvdir"));
    super::signal(&others, "TERM");
    super::signal(&runsvdirs, "KILL");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = all();
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let names: Vec<String> = left
                .iter()
                .map(|p| {
                    let comm = fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                    format!("{p} {}", comm.trim())
                })
                .collect();
            eprintln!(
                "{label}: still running 5s after TERM, killing: {}",
                names.join(", ")
            );
            super::signal(&left, "KILL");
            std::thread::sleep(Duration::from_millis(200));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `runsvdir` processes in our own mount namespace (so not a lab host's).
pub fn system_runsvdir_pids() -> Vec<u32> {
    let Some(mine) = proc_ns(std::process::id(), "mnt") else {
        return Vec::new();
    };
    all_pids()
        .into_iter()
        .filter(|&p| fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "runsvdir"))
        .filter(|&p| proc_ns(p, "mnt").as_deref() == Some(mine.as_str()))
        .collect()
}
