//! The real lab hosts: each a Debian 12 system booted with `systemd-nspawn` from an
//! overlayfs over the shared [`super::base`] root, so it has its own `/etc`, users,
//! package database and systemd, while sharing the controller's network (it listens on
//! its own loopback address only). Per host `LAB/podcNN/`:
//! ```text
//! upper/ work/   the overlay's writable layer and work directory
//! root/          the merged root the machine runs in (the host's `/`, seen from here)
//! ssh_host_ed25519_key[.pub]  its host key, copied into root/etc/ssh before boot
//! console.log    what systemd-nspawn and the machine's console printed
//! ```
//! Before boot `up` writes the host's identity into its root: hostname, machine-id,
//! host key, `/etc/ssh/sshd_config.d/troupe-lab.conf` (listen on 127.0.L.N only),
//! `/etc/hosts` naming every host of the lab, and the lab's key in the
//! `authorized_keys` of root, `deploy` and `operator`.
//!
//! A machine is recorded as its `systemd-nspawn` leader pid plus that process's start
//! time, so a reused pid is never taken for it. A process belongs to the machine when
//! its root mount is the overlay with this host's `upper/` directory
//! ([`Machine::owns`]): lab and host names are in that path, so unlike a namespace
//! inode number (which the kernel reuses at once) it never names another lab's process.

use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::base;
use super::{all_pids, is_zombie, proc_ns, sh_quote, tail};

/// One running machine as recorded in the state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// The `systemd-nspawn` process.
    pub leader_pid: u32,
    /// Field 22 of `/proc/PID/stat` when `up` started it: with the pid, what tells the
    /// leader from a later process that got the same pid.
    pub start_time: u64,
    /// systemd-nspawn's `--machine` name, `lab<octet>-<host>` (unique on the machine;
    /// nspawn keeps per-machine state under /run/systemd/nspawn by this name).
    pub machine: String,
}

/// Field 22 (start time in clock ticks since boot) of `/proc/PID/stat`.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub fn upper_dir(hdir: &Path) -> PathBuf {
    hdir.join("upper")
}

pub fn root_dir(hdir: &Path) -> PathBuf {
    hdir.join("root")
}

impl Machine {
    /// Whether the recorded leader is alive: the same pid *and* start time.
    pub fn leader_alive(&self) -> bool {
        start_time(self.leader_pid) == Some(self.start_time) && !is_zombie(self.leader_pid)
    }

    /// Whether process `pid` runs inside the machine of host dir `hdir`: its root mount
    /// is the overlay whose upper layer is `hdir/upper`.
    pub fn owns(hdir: &Path, pid: u32) -> bool {
        let needle = format!("upperdir={},", upper_dir(hdir).display());
        fs::read_to_string(format!("/proc/{pid}/mountinfo")).is_ok_and(|table| {
            table.lines().any(|line| {
                let mut f = line.split(' ');
                f.nth(4) == Some("/") && line.contains(&needle)
            })
        })
    }

    /// Every live process of the machine: the leader (when it is still ours) and every
    /// process inside (never this process).
    pub fn processes(&self, hdir: &Path) -> Vec<u32> {
        let me = std::process::id();
        let mine = proc_ns(me, "mnt");
        // Reading one mount table per mount namespace is enough: group by namespace.
        let mut verdicts: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
        let mut out = Vec::new();
        for p in all_pids() {
            if p == me || is_zombie(p) {
                continue;
            }
            if p == self.leader_pid {
                if self.leader_alive() {
                    out.push(p);
                }
                continue;
            }
            let Some(ns) = proc_ns(p, "mnt") else { continue };
            if Some(&ns) == mine.as_ref() {
                continue;
            }
            let owned = *verdicts.entry(ns).or_insert_with(|| Self::owns(hdir, p));
            // A namespace seen before may have died and its number been reused in
            // between: confirm a positive verdict for each process.
            if owned && Self::owns(hdir, p) {
                out.push(p);
            }
        }
        out
    }

    /// The machine's init (systemd, pid 1 inside): the leader's child that runs in it.
    pub fn init_pid(&self, hdir: &Path) -> Option<u32> {
        if !self.leader_alive() {
            return None;
        }
        let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.leader_pid)).ok()?;
        children
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .find(|&c| Self::owns(hdir, c))
    }

    /// The machine's sshd listener, as a controller pid.
    pub fn sshd_pid(&self, hdir: &Path) -> Option<u32> {
        self.processes(hdir).into_iter().find(|p| {
            fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.starts_with("sshd: /usr/sbin/sshd") && c.contains("[listener]")
            })
        })
    }

    /// Proportional memory (PSS) of every process of the machine, in KiB.
    pub fn memory_kib(&self, hdir: &Path) -> u64 {
        self.processes(hdir)
            .into_iter()
            .filter(|&p| p != self.leader_pid)
            .filter_map(|p| fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
            .filter_map(|s| {
                s.lines()
                    .find(|l| l.starts_with("Pss:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .sum()
    }
}

pub fn check_tools() -> Result<()> {
    if !crate::deps::is_root() {
        bail!("the lab boots machines with systemd-nspawn and mounts overlays: run it as root");
    }
    for (tool, pkg) in [
        ("mmdebstrap", "mmdebstrap"),
        ("systemd-nspawn", "systemd-container"),
        ("ssh-keygen", "openssh-client"),
        ("ssh", "openssh-client"),
    ] {
        if crate::deps::find_command(tool).is_none() {
            bail!("`{tool}` is not installed (Debian package {pkg}): run `cargo xtask deps` as root once");
        }
    }
    Ok(())
}

/// Everything host `i` needs before it boots, written into its (mounted) root.
pub struct HostPlan<'a> {
    pub lab_dir: &'a Path,
    pub hdir: PathBuf,
    pub host: String,
    pub address: String,
    /// `127.0.L.N name` lines for every host of the lab.
    pub hosts_file: &'a str,
    pub machine: String,
}

/// Mount the host's overlay over `base` and write its identity into it.
pub fn prepare(plan: &HostPlan, base: &Path) -> Result<()> {
    let hdir = &plan.hdir;
    let (upper, work, root) = (upper_dir(hdir), hdir.join("work"), root_dir(hdir));
    for d in [&upper, &work, &root] {
        fs::create_dir_all(d).with_context(|| format!("create {d:?}"))?;
    }
    crate::run_quiet(
        Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "lowerdir={},upperdir={},workdir={}",
                base.display(),
                upper.display(),
                work.display()
            ))
            .arg(&root),
    )
    .with_context(|| format!("mount the overlay of {}", plan.host))?;

    let write = |rel: &str, text: &str, mode: u32| -> Result<()> {
        let p = root.join(rel);
        fs::write(&p, text).with_context(|| format!("write {p:?}"))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    write("etc/hostname", &format!("{}\n", plan.host), 0o644)?;
    write("etc/machine-id", &format!("{}\n", random_id()?), 0o444)?;
    write(
        "etc/hosts",
        &format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}",
            plan.hosts_file
        ),
        0o644,
    )?;
    let key = hdir.join("ssh_host_ed25519_key");
    super::keygen(&key, &format!("root@{}", plan.host))?;
    fs::copy(&key, root.join("etc/ssh/ssh_host_ed25519_key"))?;
    fs::set_permissions(
        root.join("etc/ssh/ssh_host_ed25519_key"),
        fs::Permissions::from_mode(0o600),
    )?;
    fs::copy(
        key.with_extension("pub"),
        root.join("etc/ssh/ssh_host_ed25519_key.pub"),
    )?;
    write(
        "etc/ssh/sshd_config.d/troupe-lab.conf",
        &sshd_config(&plan.host, &plan.address),
        0o644,
    )?;

    let authorized = fs::read_to_string(plan.lab_dir.join("id_ed25519.pub"))?;
    for (home, (uid, gid)) in [
        ("root", (0, 0)),
        ("home/deploy", base::DEPLOY_ID),
        ("home/operator", base::OPERATOR_ID),
    ] {
        let ssh = root.join(home).join(".ssh");
        fs::create_dir_all(&ssh)?;
        fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700))?;
        let ak = ssh.join("authorized_keys");
        fs::write(&ak, &authorized)?;
        fs::set_permissions(&ak, fs::Permissions::from_mode(0o600))?;
        std::os::unix::fs::chown(&ssh, Some(uid), Some(gid))?;
        std::os::unix::fs::chown(&ak, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// The host's sshd settings. `sshd_config` includes `sshd_config.d/*.conf` first and
/// the first value of a keyword wins, so these override Debian's defaults.
pub fn sshd_config(host: &str, address: &str) -> String {
    format!(
        "# lab host {host}, written by `cargo xtask lab up`: listen on its own address only\n\
         ListenAddress {address}:22\n\
         HostKey /etc/ssh/ssh_host_ed25519_key\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         UseDNS no\n\
         MaxSessions 64\n\
         MaxStartups 256\n\
         MaxAuthTries 10\n\
         LoginGraceTime 30\n\
         ClientAliveInterval 30\n\
         ClientAliveCountMax 4\n"
    )
}

/// 128 random bits as 32 hex digits (a machine-id).
fn random_id() -> Result<String> {
    let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid").context("read a random uuid")?;
    Ok(uuid.trim().replace('-', ""))
}

/// Boot the prepared host. `sh` starts systemd-nspawn in the background and exits, so
/// the leader is not our child (it never becomes our zombie, and outlives a test
/// process, which `down` of a later process cleans up).
pub fn boot(plan: &HostPlan) -> Result<Machine> {
    let hdir = &plan.hdir;
    let q = |p: &Path| sh_quote(&p.display().to_string());
    let script = format!(
        "systemd-nspawn --quiet --directory={root} --boot --machine={machine} --hostname={host} \
         --register=no --keep-unit --console=read-only </dev/null >>{log} 2>&1 & echo $!",
        root = q(&root_dir(hdir)),
        machine = plan.machine,
        host = plan.host,
        log = q(&hdir.join("console.log")),
    );
    let out = crate::run_quiet(
        Command::new("sh")
            .arg("-c")
            .arg(&script)
            .stdin(Stdio::null())
            .process_group(0),
    )?;
    let pid: u32 = out
        .trim()
        .parse()
        .with_context(|| format!("systemd-nspawn's pid: {out:?}"))?;
    let Some(start_time) = start_time(pid) else {
        bail!(
            "{}: systemd-nspawn exited at once: {}",
            plan.host,
            tail(&hdir.join("console.log"))
        );
    };
    Ok(Machine {
        leader_pid: pid,
        start_time,
        machine: plan.machine.clone(),
    })
}

/// Wait until the machine's sshd accepts connections and systemd has finished booting.
/// Returns systemd's state: `running`, or `degraded (failed: units)`.
pub fn wait_booted(info: &super::LabInfo, host: &str, address: &str, m: &Machine) -> Result<String> {
    let hdir = info.host_dir(host);
    let log = hdir.join("console.log");
    let addr: SocketAddr = format!("{address}:22").parse()?;
    let deadline = Instant::now() + Duration::from_secs(90);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
        if !m.leader_alive() {
            bail!("{host}: the machine stopped while booting: {}", tail(&log));
        }
        if Instant::now() > deadline {
            bail!("{host}: no sshd on {addr} after 90s: {}", tail(&log));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = Command::new("ssh")
        .args(info.ssh_args())
        .arg(address)
        .arg("timeout 80 systemctl is-system-running --wait; systemctl --failed --plain --no-legend | cut -d' ' -f1")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{host}: cannot run ssh"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let state = lines.next().unwrap_or("").trim().to_string();
    let failed: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    match state.as_str() {
        "running" => Ok(state),
        "degraded" => Ok(format!("degraded (failed: {})", failed.join(", "))),
        _ => bail!(
            "{host}: systemd is {state:?} after boot (ssh: {}; failed units: {}): {}",
            String::from_utf8_lossy(&out.stderr).trim(),
            failed.join(", "),
            tail(&log)
        ),
    }
}

/// systemd's state on the machine (`running`, `degraded`, ...) over ssh, quickly.
pub fn state(info: &super::LabInfo, address: &str) -> String {
    let out = Command::new("ssh")
        .args(info.ssh_args())
        .args(["-o", "ConnectTimeout=3"])
        .arg(address)
        .arg("systemctl is-system-running")
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if !o.stdout.is_empty() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => format!("unreachable ({})", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => format!("unknown ({e})"),
    }
}

/// Stop the machine and unmount its root. `hard`: kill its init at once, as if the
/// machine lost power; otherwise TERM the leader, which shuts the machine down cleanly
/// (about 2 s), and kill it if it takes more than 20 s.
pub fn stop(label: &str, hdir: &Path, m: &Machine, hard: bool) -> Result<()> {
    if m.leader_alive() {
        if hard {
            match m.init_pid(hdir) {
                Some(init) => super::signal(&[init], "KILL"),
                None => super::signal(&[m.leader_pid], "KILL"),
            }
        } else {
            super::signal(&[m.leader_pid], "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(if hard { 5 } else { 20 });
        while m.leader_alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if m.leader_alive() {
            eprintln!("{label}: the machine did not stop in time: killing it");
            if let Some(init) = m.init_pid(hdir) {
                super::signal(&[init], "KILL");
            }
            super::signal(&[m.leader_pid], "KILL");
        }
    }
    // Anything left inside (nothing, normally: the machine's processes die with its
    // pid namespace).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = m.processes(hdir);
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            bail!("{label}: processes {left:?} are still running after KILL");
        }
        super::signal(&left, "KILL");
        std::thread::sleep(Duration::from_millis(100));
    }
    unmount(&root_dir(hdir))
}

/// Unmount `path` if it is a mount point, retrying while it is busy (the last
/// processes of a machine may take a moment to release it).
pub fn unmount(path: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while super::is_mount_point(path) {
        let out = Command::new("umount")
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .context("cannot run umount")?;
        if out.status.success() {
            continue;
        }
        if Instant::now() > deadline {
            bail!(
                "cannot unmount {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// `127.0.L.N name` for every host, for each host's `/etc/hosts`.
pub fn hosts_file(hosts: &[(String, String)]) -> String {
    let mut s = String::new();
    for (name, address) in hosts {
        let _ = writeln!(s, "{address}\t{name}");
    }
    s
}
