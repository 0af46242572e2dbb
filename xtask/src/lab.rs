//! The local lab: N hosts on one machine, reachable over real SSH on loopback
//! addresses: host `podcNN` of lab L listens on `127.0.L.NN:22`. Only loopback
//! addresses are ever used. Two kinds:
//! - the default: real Debian 12 systems booted with systemd-nspawn from a shared base
//!   root, each with its own `/etc`, users, package database and systemd ([`system`],
//!   the base in [`base`]); see docs/lab.md;
//! - `--light`: an sshd in its own mount and UTS namespace per host, sharing almost
//!   everything with the controller but cheap enough for 500 hosts ([`light`]).
//!
//! Layout under [`LAB_ROOT`]:
//! ```text
//! octets                  lab name -> third octet, allocated once under .lock
//! .base/                  the cached Debian base roots (see `base`)
//! NAME/id_ed25519[.pub]   client key (root's authorized key on every host)
//! NAME/known_hosts        the hosts' real keys, bare `127.0.L.N` (port 22)
//! NAME/inventory.kdl      inventory for troupe
//! NAME/operator-password  the `operator` user's sudo password (real lab)
//! NAME/state              the lab's kind, one line per started host
//! NAME/podc01/            the host's files (its root and overlay layers, or the light
//!                         host's sshd_config and bind-mounted dirs)
//! ```
//! `down` stops exactly the lab's own hosts: the nspawn leaders it started (checked by
//! start time) or the light hosts' processes, and unmounts what it mounted.

pub mod base;
pub mod light;
pub mod system;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

pub use light::{LightHost, MOUNTS};
pub use system::Machine;

pub const LAB_ROOT: &str = "/var/tmp/troupe-lab";
pub const DEFAULT_NAME: &str = "default";
pub const DEFAULT_HOSTS: usize = 3;

/// What a lab's hosts are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Debian machines under systemd-nspawn.
    System,
    /// sshd in namespaces (`--light`).
    Light,
}

/// How one host runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRun {
    Light(LightHost),
    Machine(Machine),
}

/// One lab host as recorded in the state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabHost {
    /// The lab this host belongs to: with `name`, what makes its processes its own.
    pub lab: String,
    pub name: String,
    pub address: String,
    pub run: HostRun,
}

impl LabHost {
    /// The host's own directory `LAB_ROOT/<lab>/<name>`.
    pub fn dir(&self) -> PathBuf {
        lab_dir(&self.lab).join(&self.name)
    }

    /// Whether the host is up: its systemd-nspawn leader (same pid and start time) or
    /// its light sshd is alive.
    pub fn is_up(&self) -> bool {
        match &self.run {
            HostRun::Light(l) => l.alive(&self.lab, &self.name, l.sshd_pid),
            HostRun::Machine(m) => m.leader_alive(),
        }
    }

    /// The host's sshd (the listener), as a pid on the controller.
    pub fn sshd_pid(&self) -> Option<u32> {
        match &self.run {
            HostRun::Light(l) => Some(l.sshd_pid).filter(|_| self.is_up()),
            HostRun::Machine(m) => m.sshd_pid(&self.dir()),
        }
    }

    pub fn light(&self) -> Option<&LightHost> {
        match &self.run {
            HostRun::Light(l) => Some(l),
            HostRun::Machine(_) => None,
        }
    }

    pub fn machine(&self) -> Option<&Machine> {
        match &self.run {
            HostRun::Machine(m) => Some(m),
            HostRun::Light(_) => None,
        }
    }

    /// Where the host's `/` is seen from the controller (the machine's merged root);
    /// `None` for a light host, whose `/` is the controller's.
    pub fn root(&self) -> Option<PathBuf> {
        self.machine().map(|_| system::root_dir(&self.dir()))
    }
}

/// A lab as found on disk.
#[derive(Debug, Clone)]
pub struct LabInfo {
    pub name: String,
    pub dir: PathBuf,
    pub octet: u8,
    pub kind: Kind,
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
    /// The file holding the `operator` user's sudo password (real lab only).
    pub fn operator_password_path(&self) -> PathBuf {
        self.dir.join("operator-password")
    }
    /// `ssh` arguments that log into a lab host as root with the lab's key, strictly
    /// checking the lab's known_hosts (append the address and the remote command).
    pub fn ssh_args(&self) -> Vec<String> {
        self.ssh_args_as("root")
    }
    /// [`LabInfo::ssh_args`] for another user (`deploy`, `operator` on the real lab).
    pub fn ssh_args_as(&self, user: &str) -> Vec<String> {
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
            user.into(),
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
    // State files written before the real lab existed have no `kind` line.
    let mut kind = Kind::Light;
    let mut hosts = Vec::new();
    for line in state.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f.as_slice() {
            ["octet", o] => octet = Some(o.parse()?),
            ["kind", "system"] => kind = Kind::System,
            ["kind", "light"] => kind = Kind::Light,
            ["host", host, address, sshd, runsvdir, mnt, uts] => hosts.push(LabHost {
                lab: name.to_string(),
                name: host.to_string(),
                address: address.to_string(),
                run: HostRun::Light(LightHost {
                    sshd_pid: sshd.parse()?,
                    runsvdir_pid: runsvdir.parse().ok(),
                    mnt_ns: mnt.to_string(),
                    uts_ns: uts.to_string(),
                }),
            }),
            ["machine", host, address, leader, start, machine] => hosts.push(LabHost {
                lab: name.to_string(),
                name: host.to_string(),
                address: address.to_string(),
                run: HostRun::Machine(Machine {
                    leader_pid: leader.parse()?,
                    start_time: start.parse()?,
                    machine: machine.to_string(),
                }),
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
        kind,
        hosts,
    }))
}

fn save_state(info: &LabInfo) -> Result<()> {
    let kind = match info.kind {
        Kind::System => "system",
        Kind::Light => "light",
    };
    let mut s = format!("octet {}\nkind {kind}\n", info.octet);
    for h in &info.hosts {
        match &h.run {
            HostRun::Light(l) => {
                let runsvdir = l.runsvdir_pid.map_or("-".to_string(), |p| p.to_string());
                writeln!(
                    s,
                    "host {} {} {} {} {} {}",
                    h.name, h.address, l.sshd_pid, runsvdir, l.mnt_ns, l.uts_ns
                )?;
            }
            HostRun::Machine(m) => writeln!(
                s,
                "machine {} {} {} {} {}",
                h.name, h.address, m.leader_pid, m.start_time, m.machine
            )?,
        }
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

/// Start the real lab `name` with `n` Debian machines, replacing whatever ran under
/// that name before. Returns once every machine has booted (`running`, or `degraded`
/// with its failed units named on stderr).
pub fn up(name: &str, n: usize) -> Result<LabInfo> {
    up_kind(name, n, Kind::System)
}

/// Start the light lab `name` (`--light`): `n` sshd hosts in namespaces.
pub fn up_light(name: &str, n: usize) -> Result<LabInfo> {
    up_kind(name, n, Kind::Light)
}

/// Machines booted at once: each boot is mostly waiting on the other's CPU on a small
/// machine, and more at once only makes every one of them slower.
const PARALLEL_BOOTS: usize = 8;

pub fn up_kind(name: &str, n: usize, kind: Kind) -> Result<LabInfo> {
    if n == 0 || n > 250 {
        bail!("a lab has 1 to 250 hosts, not {n}");
    }
    let octet = octet_for(name)?;
    if load(name)?.is_some() {
        eprintln!("lab {name}: stopping the previous instance first");
        down(name)?;
    }
    match kind {
        Kind::Light => light::check_tools()?,
        Kind::System => system::check_tools()?,
    }
    if let Some(l) = wildcard_port22_listener() {
        bail!(
            "something already listens on {l} (a system sshd?), so lab hosts cannot bind 127.0.{octet}.N:22; \
             stop it (`systemctl stop ssh`, `sv down ssh` or `service ssh stop`) and retry"
        );
    }
    let base = match kind {
        Kind::System => Some(base::ensure()?),
        Kind::Light => None,
    };
    let started = Instant::now();
    let dir = lab_dir(name);
    if dir.exists() {
        // Never delete through a mounted root (a lab whose state file was lost).
        unmount_under(&dir)?;
        fs::remove_dir_all(&dir).with_context(|| format!("remove the old {dir:?}"))?;
    }
    fs::create_dir_all(&dir).with_context(|| format!("create {dir:?}"))?;
    eprintln!(
        "lab {name}: {n} {} on 127.0.{octet}.1-{n}, files in {}",
        match kind {
            Kind::System => "Debian machines",
            Kind::Light => "light sshd hosts",
        },
        dir.display()
    );

    let key = dir.join("id_ed25519");
    keygen(&key, &format!("troupe-lab-{name}"))?;
    let mut info = LabInfo {
        name: name.to_string(),
        dir: dir.clone(),
        octet,
        kind,
        hosts: Vec::new(),
    };
    let names: Vec<(String, String)> = (1..=n).map(|i| (host_name(i), host_address(octet, i))).collect();
    let result = match &base {
        None => start_light(&mut info, &names),
        Some(base) => start_machines(&mut info, &names, base),
    };
    if let Err(e) = result {
        eprintln!("lab {name}: could not start ({e:#}): stopping what did start");
        if let Err(d) = down(name) {
            eprintln!("lab {name}: {d:#}");
        }
        return Err(e);
    }
    fs::write(dir.join("inventory.kdl"), inventory(&info))?;
    eprintln!(
        "lab {name}: up in {:.1?}: {}",
        started.elapsed(),
        info.hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(info)
}

/// One host's public key as a known_hosts line for its bare address.
fn known_hosts_line(address: &str, pubkey: &Path) -> Result<String> {
    let text = fs::read_to_string(pubkey)?;
    let mut parts = text.split_whitespace();
    let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
        bail!("unexpected public key format in {pubkey:?}");
    };
    Ok(format!("{address} {kind} {b64}\n"))
}

fn start_light(info: &mut LabInfo, names: &[(String, String)]) -> Result<()> {
    let mut known_hosts = String::new();
    for (host, address) in names {
        let hdir = info.host_dir(host);
        fs::create_dir_all(&hdir)?;
        let hostkey = hdir.join("ssh_host_ed25519_key");
        keygen(&hostkey, &format!("root@{host}"))?;
        known_hosts.push_str(&known_hosts_line(address, &hostkey.with_extension("pub"))?);
        fs::write(info.known_hosts_path(), &known_hosts)?;
        let started = light::start(&info.name, &info.dir, &hdir, host, address).with_context(|| {
            format!(
                "start {host} ({address}); see {}",
                hdir.join("sshd.log").display()
            )
        })?;
        info.hosts.push(LabHost {
            lab: info.name.clone(),
            name: host.clone(),
            address: address.clone(),
            run: HostRun::Light(started),
        });
        save_state(info)?;
    }
    Ok(())
}

/// Prepare every machine (overlay, identity), then boot them [`PARALLEL_BOOTS`] at a
/// time and wait until each has finished booting. The state file names each machine
/// as soon as it is booting, so `down` finds it whatever happens next.
fn start_machines(info: &mut LabInfo, names: &[(String, String)], base: &Path) -> Result<()> {
    let hosts_file = system::hosts_file(names);
    let plans: Vec<system::HostPlan> = names
        .iter()
        .map(|(host, address)| system::HostPlan {
            lab_dir: &info.dir,
            hdir: info.dir.join(host),
            host: host.clone(),
            address: address.clone(),
            hosts_file: &hosts_file,
            machine: format!("lab{}-{host}", info.octet),
        })
        .collect();
    let mut known_hosts = String::new();
    for plan in &plans {
        system::prepare(plan, base)?;
        known_hosts.push_str(&known_hosts_line(
            &plan.address,
            &plan.hdir.join("ssh_host_ed25519_key.pub"),
        )?);
    }
    fs::write(info.known_hosts_path(), &known_hosts)?;
    fs::write(
        info.operator_password_path(),
        format!("{}\n", base::OPERATOR_PASSWORD),
    )?;
    for chunk in plans.chunks(PARALLEL_BOOTS) {
        let mut booted = Vec::new();
        for plan in chunk {
            let m = system::boot(plan)?;
            info.hosts.push(LabHost {
                lab: info.name.clone(),
                name: plan.host.clone(),
                address: plan.address.clone(),
                run: HostRun::Machine(m.clone()),
            });
            save_state(info)?;
            booted.push((plan, m));
        }
        let snapshot = info.clone();
        let results: Vec<Result<String>> = std::thread::scope(|s| {
            let handles: Vec<_> = booted
                .iter()
                .map(|(plan, m)| {
                    let snapshot = &snapshot;
                    s.spawn(move || system::wait_booted(snapshot, &plan.host, &plan.address, m))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("boot waiter panicked")))
                })
                .collect()
        });
        for ((plan, _), r) in booted.iter().zip(results) {
            let state = r?;
            if state != "running" {
                eprintln!("lab {}: {} is {state}", info.name, plan.host);
            }
        }
    }
    Ok(())
}

pub(crate) fn keygen(path: &Path, comment: &str) -> Result<()> {
    crate::run_quiet(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path)
            .stdin(Stdio::null()),
    )?;
    Ok(())
}

/// Quote for `sh` (xtask builds a few scripts; troupe itself quotes in its shell.rs).
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub(crate) fn tail(path: &Path) -> String {
    let s = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    let t = lines[lines.len().saturating_sub(10)..].join("\n");
    if t.is_empty() {
        format!("({} is empty)", path.display())
    } else {
        t
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

/// Stop lab `name`'s hosts and forget its state. Idempotent.
pub fn down(name: &str) -> Result<()> {
    let Some(info) = load(name)? else {
        eprintln!("lab {name}: not running");
        return Ok(());
    };
    stop_hosts(&format!("lab {name}"), &info.hosts, false)?;
    // Whatever `up` mounted before it could record a machine.
    unmount_under(&info.dir)?;
    fs::remove_file(info.dir.join("state"))
        .with_context(|| format!("remove {:?}", info.dir.join("state")))?;
    eprintln!("lab {name}: down");
    Ok(())
}

/// Stop `hosts`: machines shut down in parallel (`hard`: killed at once), light hosts'
/// processes signalled.
fn stop_hosts(label: &str, hosts: &[LabHost], hard: bool) -> Result<()> {
    let light: Vec<(&str, &str, &LightHost)> = hosts
        .iter()
        .filter_map(|h| Some((h.lab.as_str(), h.name.as_str(), h.light()?)))
        .collect();
    if !light.is_empty() {
        light::stop(label, &light);
    }
    let machines: Vec<(&LabHost, &Machine)> = hosts.iter().filter_map(|h| Some((h, h.machine()?))).collect();
    if machines.is_empty() {
        return Ok(());
    }
    eprintln!("{label}: stopping {} machines", machines.len());
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = machines
            .iter()
            .map(|(h, m)| s.spawn(move || system::stop(&format!("{label}: {}", h.name), &h.dir(), m, hard)))
            .collect();
        handles
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("stopper panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Take one host of a running lab down, as if the machine had died (a machine is
/// killed, not shut down; a light host loses its sshd, services and every process
/// started on it): its address then refuses connections. The rest of the lab keeps
/// running; `up` starts the whole lab afresh.
pub fn stop_host(lab: &str, host: &str) -> Result<()> {
    let info = load(lab)?.with_context(|| format!("lab {lab} is not running"))?;
    let h = info
        .hosts
        .iter()
        .find(|h| h.name == host)
        .with_context(|| format!("lab {lab} has no host {host}"))?;
    stop_hosts(&format!("lab {lab}: {host}"), std::slice::from_ref(h), true)
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
        unmount_under(&dir)?;
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

pub(crate) fn signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let mut cmd = Command::new("kill");
    cmd.arg(format!("-{sig}")).args(pids.iter().map(u32::to_string));
    // Some may have exited in between: that is fine.
    let _ = cmd.stdout(Stdio::null()).stderr(Stdio::null()).status();
}

pub(crate) fn proc_ns(pid: u32, ns: &str) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .ok()
        .map(|p| p.display().to_string())
}

pub(crate) fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

pub(crate) fn all_pids() -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Every live process of host `h` (never this process): a machine's leader and every
/// process inside it, or a light host's processes.
pub fn processes_in(h: &LabHost) -> Vec<u32> {
    match &h.run {
        HostRun::Light(l) => l.processes(&h.lab, &h.name),
        HostRun::Machine(m) => m.processes(&h.dir()),
    }
}

/// `runsvdir` processes in our own mount namespace (so not a lab host's).
pub fn system_runsvdir_pids() -> Vec<u32> {
    light::system_runsvdir_pids()
}

/// Mount points in our mount namespace (mountinfo field 5, octal escapes decoded).
pub fn mount_points() -> Vec<PathBuf> {
    let table = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount(m)))
        .collect()
}

fn unescape_mount(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?') as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

pub fn is_mount_point(path: &Path) -> bool {
    mount_points().iter().any(|m| m == path)
}

/// Unmount everything mounted at or under `dir`, deepest first.
pub fn unmount_under(dir: &Path) -> Result<()> {
    let mut under: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(dir))
        .collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    under.dedup();
    for m in under {
        system::unmount(&m)?;
    }
    Ok(())
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

/// Print every known lab (or one) with its hosts, addresses, pids and state.
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
            "lab {name} ({}): {} (inventory {})",
            match info.kind {
                Kind::System => "Debian machines",
                Kind::Light => "light",
            },
            info.dir.display(),
            info.inventory_path().display()
        );
        match info.kind {
            Kind::System => println!(
                "  {:<8} {:<14} {:>8} {:>8}  state",
                "host", "address", "nspawn", "memory"
            ),
            Kind::Light => println!(
                "  {:<8} {:<14} {:>8} {:>9}  state",
                "host", "address", "sshd", "runsvdir"
            ),
        }
        for h in &info.hosts {
            match &h.run {
                HostRun::Machine(m) => {
                    let (memory, state) = if m.leader_alive() {
                        (
                            format!("{}M", m.memory_kib(&h.dir()) / 1024),
                            system::state(&info, &h.address),
                        )
                    } else {
                        (
                            "-".into(),
                            format!("DOWN ({} processes left)", processes_in(h).len()),
                        )
                    };
                    println!(
                        "  {:<8} {:<14} {:>8} {:>8}  {state}",
                        h.name, h.address, m.leader_pid, memory
                    );
                }
                HostRun::Light(l) => {
                    let alive = h.is_up();
                    let runsvdir_alive = l.runsvdir_pid.is_some_and(|p| l.alive(&h.lab, &h.name, p));
                    let state = match (alive, runsvdir_alive) {
                        (true, true) => "alive".to_string(),
                        (true, false) => "alive (runsvdir dead)".to_string(),
                        (false, _) => format!("DEAD ({} processes left)", processes_in(h).len()),
                    };
                    println!(
                        "  {:<8} {:<14} {:>8} {:>9}  {state}",
                        h.name,
                        h.address,
                        l.sshd_pid,
                        l.runsvdir_pid.map_or("-".into(), |p| p.to_string())
                    );
                }
            }
        }
    }
    Ok(())
}

/// `cargo xtask lab up [N] [--name NAME] [--light] | down [--name NAME | --all] | status [--name NAME]`
pub fn cli(args: &[String]) -> Result<()> {
    let mut name: Option<String> = None;
    let mut all = false;
    let mut light = false;
    let mut positional = Vec::new();
    let mut it = args.iter();
    let sub = it.next().map(String::as_str).unwrap_or("status");
    while let Some(a) = it.next() {
        match a.as_str() {
            "--name" => name = Some(it.next().context("--name needs a value")?.clone()),
            "--all" => all = true,
            "--light" => light = true,
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
            let info = up_kind(&name, n, if light { Kind::Light } else { Kind::System })?;
            println!("inventory: {}", info.inventory_path().display());
            if let Some(h) = info.hosts.first() {
                println!("log in:    ssh {} {}", info.ssh_args().join(" "), h.address);
            }
            if info.kind == Kind::System {
                println!(
                    "users:     root, deploy (passwordless sudo), operator (sudo password in {})",
                    info.operator_password_path().display()
                );
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

pub const LAB_USAGE: &str = "usage: cargo xtask lab up [N] [--name NAME] [--light]
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
            kind: Kind::System,
            hosts: (1..=2)
                .map(|i| LabHost {
                    lab: "x".into(),
                    name: host_name(i),
                    address: host_address(7, i),
                    run: HostRun::Machine(Machine {
                        leader_pid: 1,
                        start_time: 1,
                        machine: format!("lab7-{}", host_name(i)),
                    }),
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
