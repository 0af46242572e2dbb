//! The Debian packages the lab, the demo and the tests need. `cargo xtask demo` and
//! `cargo xtask test` must work on a fresh Debian machine, so they call
//! [`ensure_packages`] first: it installs what is missing when run as root, and prints
//! the exact command otherwise.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

/// Commands the lab and the tests run, and the Debian package that provides each.
pub const NEEDED: &[(&str, &str)] = &[
    ("sshd", "openssh-server"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("etcd", "etcd-server"),
    ("etcdctl", "etcd-client"),
    ("cfssl", "golang-cfssl"),
    ("cfssljson", "golang-cfssl"),
    ("protoc", "protobuf-compiler"),
    ("runsvdir", "runit"),
    ("sv", "runit"),
    ("openssl", "openssl"),
    ("unshare", "util-linux"),
    ("nsenter", "util-linux"),
    ("ss", "iproute2"),
];

/// Everything installed in one go (also what the message for non-root users shows).
/// `runit` only: `runit-run`/`runit-init` would try to become the init system.
pub const PACKAGES: &[&str] = &[
    "openssh-server",
    "openssh-client",
    "etcd-server",
    "etcd-client",
    "golang-cfssl",
    "protobuf-compiler",
    "runit",
    "openssl",
    "iproute2",
    "util-linux",
];

const SEARCH_PATH: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// Where a command lives, looking in `PATH` and the sbin directories (root's tools such
/// as sshd are often not on a normal user's `PATH`).
pub fn find_command(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .filter(|d| !d.is_empty())
        .chain(SEARCH_PATH.iter().copied())
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The commands from [`NEEDED`] that are not installed.
pub fn missing_commands() -> Vec<&'static str> {
    NEEDED
        .iter()
        .filter(|(cmd, _)| find_command(cmd).is_none())
        .map(|(cmd, _)| *cmd)
        .collect()
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

fn install_command() -> String {
    format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
        PACKAGES.join(" ")
    )
}

/// Make sure every needed command exists, installing the Debian packages when we are
/// root. Prints what it does; fails with the exact command to run otherwise.
pub fn ensure_packages() -> Result<()> {
    let missing = missing_commands();
    if missing.is_empty() {
        eprintln!(
            "deps: all needed tools are installed ({} commands checked)",
            NEEDED.len()
        );
        warn_about_system_services();
        return Ok(());
    }
    let pkgs: Vec<&str> = {
        let mut v: Vec<&str> = NEEDED
            .iter()
            .filter(|(c, _)| missing.contains(c))
            .map(|(_, p)| *p)
            .collect();
        v.dedup();
        v
    };
    eprintln!(
        "deps: missing commands: {} (packages: {})",
        missing.join(", "),
        pkgs.join(", ")
    );
    if !is_root() {
        bail!("run this as root first, then retry:\n    {}", install_command());
    }
    if find_command("apt-get").is_none() {
        bail!(
            "apt-get not found: this automation supports Debian/Ubuntu; install {} by hand",
            pkgs.join(", ")
        );
    }
    eprintln!("deps: installing the Debian packages the lab needs (as root, with apt-get)");
    crate::run_loud(Command::new("apt-get").arg("update"))?;
    crate::run_loud(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "--no-install-recommends"])
            .args(PACKAGES),
    )?;
    let still = missing_commands();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(", "));
    }
    eprintln!("deps: installed");
    warn_about_system_services();
    Ok(())
}

/// The lab's hosts listen on 127.0.X.Y:22. A system sshd listening on the wildcard
/// address (which a freshly installed openssh-server may start, or a system `runsvdir`
/// running the Debian runscript in /etc/service/ssh) would take port 22 on every
/// loopback address. Report it; never stop the machine's own services.
pub fn warn_about_system_services() {
    if let Some(listener) = crate::lab::wildcard_port22_listener() {
        eprintln!(
            "deps: WARNING: something listens on {listener} (a system sshd?), so lab hosts cannot bind \
             127.0.X.Y:22. Stop it (e.g. `systemctl stop ssh`, `sv down ssh` or `service ssh stop`) before `cargo xtask lab up`."
        );
    }
    let system_runsvdir = crate::lab::system_runsvdir_pids();
    if !system_runsvdir.is_empty() {
        eprintln!(
            "deps: note: a system runsvdir is running (pid {}); the lab does not use it (each lab host runs its own \
             runsvdir on a private /etc/service), but it may start services such as the system sshd.",
            system_runsvdir
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}
