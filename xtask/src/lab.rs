//! The local lab: N "hosts" on one machine, each a real OpenSSH sshd in its own mount
//! and UTS namespace. Tests and the demo need several hosts with their own
//! `/etc/kubernetes`, `/var/lib/etcd`, `/etc/etcd`, `/srv`, runit service directory and
//! hostname, reachable over real SSH, without VMs or containers. Linux gives that
//! cheaply: `unshare --mount --uts` plus bind mounts of per-host directories, and
//! every address in 127.0.0.0/8 is local, so host `podcNN` of lab L listens on
//! `127.0.L.NN:22`. Only loopback addresses are ever used.
//!
//! Layout under [`LAB_ROOT`]:
//! ```text
//! octets                  lab name -> third octet, allocated once under .lock
//! NAME/id_ed25519[.pub]   client key (root's authorized key on every host)
//! NAME/known_hosts        the hosts' real keys, bare `127.0.L.N` (port 22)
//! NAME/inventory.kdl      inventory for troupe
//! NAME/state              one line per started host: pids and namespace ids
//! NAME/podc01/            sshd_config, host key, sshd.log, and the bind-mounted dirs
//! ```
//! `down` stops exactly the processes of the lab's hosts (sshd, its runsvdir, runit
//! services, anything started over SSH, reparented or not); the bind mounts disappear
//! with the last of them. A process belongs to host H of lab L when its mount table
//! holds H's bind mount of `L/H/etc-kubernetes` (see [`LabHost::owns`]). Namespace
//! inode numbers alone cannot say that: the kernel reuses them at once, so a dead
//! host's recorded number soon names another lab's live host.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub const LAB_ROOT: &str = "/var/tmp/troupe-lab";
pub const DEFAULT_NAME: &str = "default";
pub const DEFAULT_HOSTS: usize = 3;

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

/// One lab host as recorded in the state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabHost {
    /// The lab this host belongs to: with `name`, what makes its processes its own.
    pub lab: String,
    pub name: String,
    pub address: String,
    pub sshd_pid: u32,
    pub runsvdir_pid: Option<u32>,
    /// `mnt:[4026532177]` at `up`: a cheap first filter only, since the number is
    /// reused as soon as the namespace dies ([`LabHost::owns`] decides).
    pub mnt_ns: String,
    pub uts_ns: String,
}

impl LabHost {
    pub fn sshd_alive(&self) -> bool {
        self.alive(self.sshd_pid)
    }

    /// Whether `pid` is alive and a process of this host (pids get reused too).
    pub fn alive(&self, pid: u32) -> bool {
        proc_ns(pid, "mnt").as_deref() == Some(self.mnt_ns.as_str()) && !is_zombie(pid) && self.owns(pid)
    }

    /// Whether process `pid` lives on this host: its mount table has this host's bind
    /// mount of `LAB_ROOT/<lab>/<host>/etc-kubernetes` on `/etc/kubernetes`. Lab and
    /// host names are part of that path and never shared, so unlike a namespace inode
    /// number this cannot name another lab's process, however the kernel reuses
    /// numbers, and it survives reparenting (a daemon started over SSH still has it).
    pub fn owns(&self, pid: u32) -> bool {
        let (sub, target) = MOUNTS[0];
        let suffix = format!("/{}/{}/{sub}", self.lab, self.name);
        fs::read_to_string(format!("/proc/{pid}/mountinfo")).is_ok_and(|table| {
            table.lines().any(|line| {
                let mut f = line.split(' ');
                let (root, mount_point) = (f.nth(3), f.next());
                mount_point == Some(target) && root.is_some_and(|r| r.ends_with(&suffix))
            })
        })
    }
}

/// A lab as found on disk.
#[derive(Debug, Clone)]
pub struct LabInfo {
    pub name: String,
    pub dir: PathBuf,
    pub octet: u8,
    pub hosts: Vec<LabHost>,
}

impl LabInfo {
    pub fn key_path(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }
    pub fn known_hosts_path(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
    pub fn inventory_path(&self) -> PathBuf {
        self.dir.join("inventory.kdl")
    }
    pub fn host_dir(&self, host: &str) -> PathBuf {
        self.dir.join(host)
    }
    /// `ssh` arguments that log into a lab host as root with the lab's key, strictly
    /// checking the lab's known_hosts (append the address and the remote command).
    pub fn ssh_args(&self) -> Vec<String> {
        vec![
            "-i".into(),
            self.key_path().display().to_string(),
            "-o".into(),
            format!("UserKnownHostsFile={}", self.known_hosts_path().display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
            "-o".into(),
            "ConnectTimeout=10".into(),
            "-l".into(),
            "root".into(),
        ]
    }
}

pub fn lab_dir(name: &str) -> PathBuf {
    Path::new(LAB_ROOT).join(name)
}

pub fn host_name(i: usize) -> String {
    format!("podc{i:02}")
}

pub fn host_address(octet: u8, i: usize) -> String {
    format!("127.0.{octet}.{i}")
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        bail!("lab name {name:?}: use letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

/// The third octet of a lab's addresses: 1 for `default` (the demo's 127.0.1.x),
/// otherwise allocated on first use and remembered in `LAB_ROOT/octets`.
pub fn octet_for(name: &str) -> Result<u8> {
    check_name(name)?;
    if name == DEFAULT_NAME {
        return Ok(1);
    }
    with_octet_table(|table| {
        if let Some(o) = table.get(name) {
            return Ok(*o);
        }
        let Some(octet) = (2..=254u8).find(|o| !table.values().any(|u| u == o)) else {
            bail!(
                "all 253 lab address ranges are allocated: `cargo xtask lab down --all` frees those of finished tests"
            );
        };
        table.insert(name.to_string(), octet);
        Ok(octet)
    })
}

/// Read-modify-write the name → octet table under an exclusive lock (labs are started
/// from several processes and threads at once).
fn with_octet_table<T>(f: impl FnOnce(&mut BTreeMap<String, u8>) -> Result<T>) -> Result<T> {
    fs::create_dir_all(LAB_ROOT).with_context(|| format!("create {LAB_ROOT}"))?;
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(Path::new(LAB_ROOT).join(".lock"))
        .context("open the lab lock file")?;
    lock.lock().context("lock the lab octet table")?;
    let path = Path::new(LAB_ROOT).join("octets");
    let mut table = BTreeMap::new();
    for line in fs::read_to_string(&path).unwrap_or_default().lines() {
        let mut it = line.split_whitespace();
        if let (Some(n), Some(o)) = (it.next(), it.next().and_then(|o| o.parse::<u8>().ok())) {
            table.insert(n.to_string(), o);
        }
    }
    let before = table.clone();
    let result = f(&mut table)?;
    if table != before {
        let text: String = table.iter().map(|(n, o)| format!("{n} {o}\n")).collect();
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text)?;
        fs::rename(&tmp, &path)?;
    }
    Ok(result)
}

/// Load a lab's state, `None` when it has never been started or was taken down.
pub fn load(name: &str) -> Result<Option<LabInfo>> {
    check_name(name)?;
    let dir = lab_dir(name);
    let state = match fs::read_to_string(dir.join("state")) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("read {:?}", dir.join("state"))),
    };
    let mut octet = None;
    let mut hosts = Vec::new();
    for line in state.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["octet", o] => octet = Some(o.parse()?),
            ["host", host, address, sshd, runsvdir, mnt, uts] => hosts.push(LabHost {
                lab: name.to_string(),
                name: host.to_string(),
                address: address.to_string(),
                sshd_pid: sshd.parse()?,
                runsvdir_pid: runsvdir.parse().ok(),
                mnt_ns: mnt.to_string(),
                uts_ns: uts.to_string(),
            }),
            [] => {}
            _ => bail!("{:?}: unexpected line {line:?}", dir.join("state")),
        }
    }
    let octet = match octet {
        Some(o) => o,
        None => octet_for(name)?,
    };
    Ok(Some(LabInfo {
        name: name.to_string(),
        dir,
        octet,
        hosts,
    }))
}

fn save_state(info: &LabInfo) -> Result<()> {
    let mut s = format!("octet {}\n", info.octet);
    for h in &info.hosts {
        let runsvdir = h.runsvdir_pid.map_or("-".to_string(), |p| p.to_string());
        writeln!(
            s,
            "host {} {} {} {} {} {}",
            h.name, h.address, h.sshd_pid, runsvdir, h.mnt_ns, h.uts_ns
        )?;
    }
    let tmp = info.dir.join("state.tmp");
    fs::write(&tmp, s)?;
    fs::rename(&tmp, info.dir.join("state"))?;
    Ok(())
}

/// Names of all labs that have a state file (i.e. may have running processes).
pub fn list() -> Result<Vec<String>> {
    let mut names = Vec::new();
    let Ok(rd) = fs::read_dir(LAB_ROOT) else {
        return Ok(names);
    };
    for e in rd {
        let e = e?;
        if e.path().join("state").is_file() {
            names.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Start lab `name` with `n` hosts, replacing whatever ran under that name before.
/// Returns once every sshd accepts TCP connections.
pub fn up(name: &str, n: usize) -> Result<LabInfo> {
    if n == 0 || n > 250 {
        bail!("a lab has 1 to 250 hosts, not {n}");
    }
    let octet = octet_for(name)?;
    if load(name)?.is_some() {
        eprintln!("lab {name}: stopping the previous instance first");
        down(name)?;
    }
    for tool in ["unshare", "sshd", "ssh-keygen", "runsvdir"] {
        if crate::deps::find_command(tool).is_none() {
            bail!(
                "`{tool}` is not installed: run `cargo xtask demo` or `cargo xtask test` as root once (they install it)"
            );
        }
    }
    if let Some(l) = wildcard_port22_listener() {
        bail!(
            "something already listens on {l} (a system sshd?), so lab hosts cannot bind 127.0.{octet}.N:22; \
             stop it (`systemctl stop ssh`, `sv down ssh` or `service ssh stop`) and retry"
        );
    }
    let dir = lab_dir(name);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("remove the old {dir:?}"))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("create {dir:?}"))?;
    eprintln!(
        "lab {name}: {n} hosts on 127.0.{octet}.1-{n}, files in {}",
        dir.display()
    );

    // Things that must exist in the real root for the namespaces to mount over / use.
    for (_, target) in MOUNTS {
        fs::create_dir_all(target).with_context(|| format!("create mount point {target}"))?;
    }
    fs::create_dir_all("/run/sshd").context("create /run/sshd (sshd's privilege separation dir)")?;

    let key = dir.join("id_ed25519");
    keygen(&key, &format!("troupe-lab-{name}"))?;
    fs::copy(key.with_extension("pub"), dir.join("authorized_keys"))?;

    let mut info = LabInfo {
        name: name.to_string(),
        dir: dir.clone(),
        octet,
        hosts: Vec::new(),
    };
    let mut known_hosts = String::new();
    for i in 1..=n {
        let host = host_name(i);
        let address = host_address(octet, i);
        let hdir = dir.join(&host);
        for (sub, _) in MOUNTS {
            fs::create_dir_all(hdir.join(sub))?;
        }
        let hostkey = hdir.join("ssh_host_ed25519_key");
        keygen(&hostkey, &format!("root@{host}"))?;
        let pubkey = fs::read_to_string(hostkey.with_extension("pub"))?;
        let mut parts = pubkey.split_whitespace();
        let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
            bail!("unexpected public key format in {hostkey:?}.pub");
        };
        writeln!(known_hosts, "{address} {kind} {b64}")?;
        fs::write(hdir.join("sshd_config"), sshd_config(&dir, &hdir, &address))?;

        let started = start_host(name, &hdir, &host).with_context(|| {
            format!(
                "start {host} ({address}); see {}",
                hdir.join("sshd.log").display()
            )
        })?;
        info.hosts.push(LabHost {
            name: host.clone(),
            address: address.clone(),
            ..started
        });
        save_state(&info)?;
    }
    fs::write(dir.join("known_hosts"), &known_hosts)?;
    fs::write(dir.join("inventory.kdl"), inventory(&info))?;

    for h in &info.hosts {
        wait_for_sshd(h, &dir.join(&h.name).join("sshd.log"))?;
    }
    eprintln!(
        "lab {name}: up: {}",
        info.hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(info)
}

fn keygen(path: &Path, comment: &str) -> Result<()> {
    crate::run_quiet(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path)
            .stdin(Stdio::null()),
    )?;
    Ok(())
}

fn sshd_config(lab: &Path, hdir: &Path, address: &str) -> String {
    format!(
        "# troupe lab host, written by `cargo xtask lab up`\n\
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

/// Quote for `sh` (xtask builds two scripts; troupe itself quotes in its shell.rs).
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Start one host: `sh` (in the background, so the host is not our child and never
/// becomes our zombie) runs `unshare`, which without `--fork` execs the inner script in
/// the new namespaces; the script bind-mounts the host's directories, sets the
/// hostname, starts the host's runsvdir and execs sshd, keeping the pid it wrote.
fn start_host(lab: &str, hdir: &Path, host: &str) -> Result<LabHost> {
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
                return Ok(LabHost {
                    lab: lab.to_string(),
                    name: host.to_string(),
                    address: String::new(),
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

fn tail(path: &Path) -> String {
    let s = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    let t = lines[lines.len().saturating_sub(10)..].join("\n");
    if t.is_empty() {
        format!("({} is empty)", path.display())
    } else {
        t
    }
}

fn wait_for_sshd(h: &LabHost, log: &Path) -> Result<()> {
    let addr: SocketAddr = format!("{}:22", h.address).parse()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        if !h.sshd_alive() {
            bail!("{}: sshd exited: {}", h.name, tail(log));
        }
        if Instant::now() > deadline {
            bail!(
                "{}: sshd does not accept connections on {addr} after 20s: {}",
                h.name,
                tail(log)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn inventory(info: &LabInfo) -> String {
    let mut s = format!(
        "// Lab \"{name}\", written by `cargo xtask lab up`: rewritten on every start.\n\
         defaults user=root port=22 identity=\"{key}\" known-hosts=\"{kh}\"\n\
         group etcd {{\n",
        name = info.name,
        key = info.key_path().display(),
        kh = info.known_hosts_path().display(),
    );
    for h in &info.hosts {
        let _ = writeln!(s, "    host {} address=\"{}\"", h.name, h.address);
    }
    s.push_str("}\n");
    if let Some(first) = info.hosts.first() {
        let _ = writeln!(s, "group control-plane {{\n    host {}\n}}", first.name);
    }
    s
}

/// Stop every process of lab `name` and forget its state. Idempotent.
pub fn down(name: &str) -> Result<()> {
    let Some(info) = load(name)? else {
        eprintln!("lab {name}: not running");
        return Ok(());
    };
    stop_processes(&format!("lab {name}"), &info.hosts);
    fs::remove_file(info.dir.join("state"))
        .with_context(|| format!("remove {:?}", info.dir.join("state")))?;
    eprintln!("lab {name}: down");
    Ok(())
}

/// Stop every process of `hosts` ([`processes_in`]): TERM (runsv stops its service on
/// TERM too; runsvdir gets KILL at once), then KILL what is left after 5 s. Returns how many there were.
fn stop_processes(label: &str, hosts: &[LabHost]) -> usize {
    let pids: Vec<u32> = hosts.iter().flat_map(processes_in).collect();
    if pids.is_empty() {
        eprintln!("{label}: no process left");
        return 0;
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
    signal(&others, "TERM");
    signal(&runsvdirs, "KILL");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = hosts.iter().flat_map(processes_in).collect();
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
            signal(&left, "KILL");
            std::thread::sleep(Duration::from_millis(200));
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pids.len()
}

/// Take one host of a running lab down (its sshd, runit services and every process
/// started on it), as if the machine had died: its address then refuses connections.
/// The rest of the lab keeps running; `up` starts the whole lab afresh.
pub fn stop_host(lab: &str, host: &str) -> Result<()> {
    let info = load(lab)?.with_context(|| format!("lab {lab} is not running"))?;
    let h = info
        .hosts
        .iter()
        .find(|h| h.name == host)
        .with_context(|| format!("lab {lab} has no host {host}"))?;
    stop_processes(&format!("lab {lab}: {host}"), std::slice::from_ref(h));
    Ok(())
}

/// Stop every lab, then forget the test labs whose test process has exited.
pub fn down_all() -> Result<()> {
    let names = list()?;
    if names.is_empty() {
        eprintln!("lab: no lab to stop");
    }
    for name in names {
        down(&name)?;
    }
    prune_test_labs()
}

/// Stop lab `name`, delete its directory and release its address range.
pub fn forget(name: &str) -> Result<()> {
    down(name)?;
    let dir = lab_dir(name);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("remove {dir:?}"))?;
    }
    with_octet_table(|table| {
        table.remove(name);
        Ok(())
    })
}

/// Name of a lab owned by test process `pid`: `t<pid>-<name>`. Such labs are
/// forgotten by [`prune_test_labs`] once that process is gone, so concurrent test
/// runs never share (and restart) each other's labs.
pub fn test_lab_name(pid: u32, name: &str) -> String {
    format!("t{pid}-{name}")
}

fn test_lab_owner(name: &str) -> Option<u32> {
    name.strip_prefix('t')?.split_once('-')?.0.parse().ok()
}

/// Forget every test lab whose owning process no longer exists.
pub fn prune_test_labs() -> Result<()> {
    let mut names: Vec<String> = match fs::read_dir(LAB_ROOT) {
        Ok(rd) => rd
            .filter_map(|e| Some(e.ok()?.file_name().to_str()?.to_string()))
            .collect(),
        Err(_) => return Ok(()),
    };
    names.extend(with_octet_table(|t| Ok(t.keys().cloned().collect::<Vec<_>>()))?);
    names.sort();
    names.dedup();
    for name in names {
        if let Some(pid) = test_lab_owner(&name)
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            forget(&name)?;
        }
    }
    Ok(())
}

fn signal(pids: &[u32], sig: &str) {
    let mut cmd = Command::new("kill");
    cmd.arg(format!("-{sig}")).args(pids.iter().map(u32::to_string));
    // Some may have exited in between: that is fine.
    let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
}

fn proc_ns(pid: u32, ns: &str) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .ok()
        .map(|p| p.display().to_string())
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

fn all_pids() -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Every live process of host `h` (never this process): those in the mount namespace
/// recorded at `up` that [`LabHost::owns`] (the number alone may be another lab's by
/// now).
pub fn processes_in(h: &LabHost) -> Vec<u32> {
    let me = std::process::id();
    all_pids()
        .into_iter()
        .filter(|&p| p != me)
        .filter(|&p| proc_ns(p, "mnt").as_deref() == Some(h.mnt_ns.as_str()) && !is_zombie(p) && h.owns(p))
        .collect()
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

/// A TCP listener on the wildcard address port 22 (IPv4 or IPv6), if any.
pub fn wildcard_port22_listener() -> Option<String> {
    for (file, wildcard, shown) in [
        ("/proc/net/tcp", "00000000:0016", "0.0.0.0:22"),
        (
            "/proc/net/tcp6",
            "00000000000000000000000000000000:0016",
            "[::]:22",
        ),
    ] {
        let Ok(table) = fs::read_to_string(file) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 3 && f[1] == wildcard && f[3] == "0A" {
                return Some(shown.to_string());
            }
        }
    }
    None
}

/// Print every known lab (or one) with its hosts, addresses, pids and liveness.
pub fn status(name: Option<&str>) -> Result<()> {
    let names = match name {
        Some(n) => vec![n.to_string()],
        None => list()?,
    };
    if names.is_empty() {
        println!("no lab is up (start one with `cargo xtask lab up`)");
    }
    for name in names {
        let Some(info) = load(&name)? else {
            println!("lab {name}: down");
            continue;
        };
        println!(
            "lab {name}: {} (inventory {})",
            info.dir.display(),
            info.inventory_path().display()
        );
        println!(
            "  {:<8} {:<14} {:>8} {:>9}  state",
            "host", "address", "sshd", "runsvdir"
        );
        for h in &info.hosts {
            let alive = h.sshd_alive();
            let runsvdir_alive = h.runsvdir_pid.is_some_and(|p| h.alive(p));
            let state = match (alive, runsvdir_alive) {
                (true, true) => "alive".to_string(),
                (true, false) => "alive (runsvdir dead)".to_string(),
                (false, _) => format!("DEAD ({} processes left)", processes_in(h).len()),
            };
            println!(
                "  {:<8} {:<14} {:>8} {:>9}  {state}",
                h.name,
                h.address,
                h.sshd_pid,
                h.runsvdir_pid.map_or("-".into(), |p| p.to_string())
            );
        }
    }
    Ok(())
}

/// `cargo xtask lab up [N] [--name NAME] | down [--name NAME | --all] | status [--name NAME]`
pub fn cli(args: &[String]) -> Result<()> {
    let mut name: Option<String> = None;
    let mut all = false;
    let mut positional = Vec::new();
    let mut it = args.iter();
    let sub = it.next().map(String::as_str).unwrap_or("status");
    while let Some(a) = it.next() {
        match a.as_str() {
            "--name" => name = Some(it.next().context("--name needs a value")?.clone()),
            "--all" => all = true,
            s if s.starts_with("--name=") => name = Some(s["--name=".len()..].to_string()),
            s if s.starts_with('-') => bail!("unknown option {s}\n{LAB_USAGE}"),
            s => positional.push(s.to_string()),
        }
    }
    match sub {
        "up" => {
            let n = match positional.as_slice() {
                [] => DEFAULT_HOSTS,
                [n] => n
                    .parse()
                    .with_context(|| format!("host count {n:?} is not a number"))?,
                _ => bail!("{LAB_USAGE}"),
            };
            let name = name.unwrap_or_else(|| DEFAULT_NAME.into());
            let info = up(&name, n)?;
            println!("inventory: {}", info.inventory_path().display());
            if let Some(h) = info.hosts.first() {
                println!("log in:    ssh {} {}", info.ssh_args().join(" "), h.address);
            }
            println!(
                "stop:      cargo xtask lab down{}",
                if name == DEFAULT_NAME {
                    String::new()
                } else {
                    format!(" --name {name}")
                }
            );
            Ok(())
        }
        "down" if all => down_all(),
        "down" => down(name.as_deref().unwrap_or(DEFAULT_NAME)),
        "status" => status(name.as_deref()),
        _ => bail!("{LAB_USAGE}"),
    }
}

pub const LAB_USAGE: &str = "usage: cargo xtask lab up [N] [--name NAME]
       cargo xtask lab down [--name NAME | --all]
       cargo xtask lab status [--name NAME]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_lab_names_carry_their_owner() {
        assert_eq!(test_lab_owner(&test_lab_name(4242, "shared")), Some(4242));
        assert_eq!(test_lab_owner("t17-etcd-grow"), Some(17));
        assert_eq!(test_lab_owner("default"), None);
        assert_eq!(test_lab_owner("tx-1"), None);
        assert_eq!(test_lab_owner("t12"), None);
    }

    #[test]
    fn inventory_lists_every_host_and_the_lab_files() {
        let info = LabInfo {
            name: "x".into(),
            dir: PathBuf::from("/var/tmp/troupe-lab/x"),
            octet: 7,
            hosts: (1..=2)
                .map(|i| LabHost {
                    lab: "x".into(),
                    name: host_name(i),
                    address: host_address(7, i),
                    sshd_pid: 1,
                    runsvdir_pid: None,
                    mnt_ns: String::new(),
                    uts_ns: String::new(),
                })
                .collect(),
        };
        let inv = inventory(&info);
        assert!(inv.contains(
            "defaults user=root port=22 identity=\"/var/tmp/troupe-lab/x/id_ed25519\" known-hosts=\"/var/tmp/troupe-lab/x/known_hosts\""
        ));
        assert!(inv.contains(
            "group etcd {\n    host podc01 address=\"127.0.7.1\"\n    host podc02 address=\"127.0.7.2\"\n}"
        ));
        assert!(inv.contains("group control-plane {\n    host podc01\n}"));
    }

    #[test]
    fn names_that_could_escape_the_lab_root_are_refused() {
        for bad in ["", "..", "../x", "a/b", ".hidden", "a b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("t1-etcd_grow.2").is_ok());
    }
}
