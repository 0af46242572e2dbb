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
    // the real lab: the Debian base root and its machines
    ("mmdebstrap", "mmdebstrap"),
    ("systemd-nspawn", "systemd-container"),
    ("dpkg-deb", "dpkg"),
];

/// Files the build needs that no command stands for, and the package that provides each.
/// `protobuf-compiler` installed with `--no-install-recommends` brings `protoc` but not
/// the well-known `.proto` files etcd-client's build script imports: without this check
/// a fresh machine passes the command check and then fails to build
/// (`google/protobuf/descriptor.proto: File not found`).
pub const NEEDED_FILES: &[(&str, &str)] = &[
    ("/usr/include/google/protobuf/descriptor.proto", "libprotobuf-dev"),
    ("/usr/include/google/protobuf/timestamp.proto", "libprotobuf-dev"),
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
    "libprotobuf-dev",
    "runit",
    "openssl",
    "iproute2",
    "util-linux",
    "mmdebstrap",
    "systemd-container",
    "dpkg",
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

/// What is missing of [`NEEDED`] (commands) and [`NEEDED_FILES`] (paths), each with
/// the package that provides it.
pub fn missing() -> Vec<(&'static str, &'static str)> {
    let commands = NEEDED
        .iter()
        .filter(|(cmd, _)| find_command(cmd).is_none())
        .copied();
    let files = NEEDED_FILES
        .iter()
        .filter(|(path, _)| !Path::new(path).is_file())
        .copied();
    commands.chain(files).collect()
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
    let missing = missing();
    if missing.is_empty() {
        eprintln!(
            "deps: all needed tools are installed ({} commands and {} files checked)",
            NEEDED.len(),
            NEEDED_FILES.len()
        );
        warn_about_system_services();
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|(what, _)| *what).collect();
    let mut pkgs: Vec<&str> = missing.iter().map(|(_, pkg)| *pkg).collect();
    pkgs.sort_unstable();
    pkgs.dedup();
    eprintln!(
        "deps: missing: {} (packages: {})",
        names.join(", "),
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
    let still: Vec<&str> = self::missing().iter().map(|(what, _)| *what).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `ensure_packages` installs [`PACKAGES`] when anything is missing: a package named
    /// for a command or file but left out of that list would never be installed.
    #[test]
    fn every_needed_package_is_installed() {
        for (what, pkg) in NEEDED.iter().chain(NEEDED_FILES) {
            assert!(
                PACKAGES.contains(pkg),
                "{what} needs {pkg}, which PACKAGES does not install"
            );
        }
    }
}
