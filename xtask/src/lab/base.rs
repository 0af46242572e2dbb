//! The root file system every lab machine boots from: a minimal Debian 12 built once by
//! `mmdebstrap` and shared read-only (the lower layer of each host's overlayfs). It is
//! cached under [`BASE_ROOT`] in a directory named by a hash of everything that goes
//! into it (suite, package list, setup script), so changing [`PACKAGES`] or [`SETUP`]
//! builds a new one; it is built into a temporary directory and renamed into place, so
//! an interrupted build never leaves a half base behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// Where bases live (a dot name, which no lab can have).
pub const BASE_ROOT: &str = "/var/tmp/troupe-lab/.base";

pub const SUITE: &str = "bookworm";

/// What every host has besides Debian's `minbase`: systemd as init, sshd, sudo, the
/// tools tests and roles run on hosts (etcd, runit, openssl, pgrep, ss, curl).
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "sudo",
    "python3",
    "iproute2",
    "procps",
    "openssl",
    "curl",
    "etcd-server",
    "etcd-client",
    "runit",
];

/// The password of the `operator` user on every lab host (its sudo asks for it). A lab
/// is local and throwaway; the password is documented in docs/lab.md and written to
/// `LAB/operator-password` for tests.
pub const OPERATOR_PASSWORD: &str = "troupe-lab-operator";

/// uid and primary gid of the lab users, fixed so `up` can own their files before boot.
pub const DEPLOY_ID: (u32, u32) = (1000, 1000);
pub const OPERATOR_ID: (u32, u32) = (1001, 100);

/// The `--customize-hook` script (`$1` is the new root), run once per base:
/// - `etcd.service` masked: Debian's etcd-server would start a default etcd on
///   127.0.0.1:2379 in every host, and the hosts share the network; apt/dpkg/e2scrub
///   timers masked (nothing a lab host needs, and they would run in every host at once);
/// - the SSH host keys, machine-id and hostname removed: `up` writes its own per host;
/// - `/etc/service` a plain directory supervised by `runsvdir.service` (the runit
///   runtime of the roles; Debian's points into /etc/runit for runit as init);
/// - users `deploy` (passwordless sudo) and `operator` (sudo with [`OPERATOR_PASSWORD`]).
pub const SETUP: &str = r#"set -eu
R="$1"
chroot "$R" systemctl mask etcd.service e2scrub_reap.service apt-daily.timer apt-daily-upgrade.timer \
    dpkg-db-backup.timer e2scrub_all.timer fstrim.timer
rm -f "$R"/etc/ssh/ssh_host_*
: > "$R/etc/machine-id"
rm -f "$R/etc/hostname"
rm -rf "$R/etc/service"
mkdir -p "$R/etc/service" "$R/etc/sv" "$R/etc/kubernetes" "$R/etc/etcd" "$R/srv"
cat > "$R/etc/systemd/system/runsvdir.service" <<'EOF'
[Unit]
Description=runit supervision of /etc/service (troupe lab)

[Service]
ExecStart=/usr/bin/runsvdir -P /etc/service
# runsvdir passes HUP on as TERM to every runsv, which stop their services
KillSignal=SIGHUP
Restart=always

[Install]
WantedBy=multi-user.target
EOF
chroot "$R" systemctl enable runsvdir.service
chroot "$R" useradd --uid 1000 --user-group --create-home --shell /bin/bash deploy
# Debian has a group `operator` (gid 37) but no such user
chroot "$R" useradd --uid 1001 --gid users --create-home --shell /bin/bash operator
echo 'deploy ALL=(ALL:ALL) NOPASSWD: ALL' > "$R/etc/sudoers.d/deploy"
echo 'operator ALL=(ALL:ALL) ALL' > "$R/etc/sudoers.d/operator"
chmod 0440 "$R/etc/sudoers.d/deploy" "$R/etc/sudoers.d/operator"
echo "operator:$TROUPE_OPERATOR_PASSWORD" | chroot "$R" chpasswd
"#;

/// Bump to force a rebuild when something outside the hashed inputs changes.
const FORMAT: u32 = 1;

/// FNV-1a, 64 bit: a stable hash without a dependency (std's hasher may change
/// between Rust releases, which would rebuild the base for nothing).
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The cache key of the base this code builds.
pub fn key() -> String {
    let inputs = format!(
        "format {FORMAT}\nsuite {SUITE}\nvariant minbase\npackages {}\npassword {OPERATOR_PASSWORD}\nsetup\n{SETUP}",
        PACKAGES.join(",")
    );
    format!("{:016x}", fnv1a(inputs.as_bytes()))
}

/// The directory of the current base (whether or not it is built yet).
pub fn path() -> PathBuf {
    Path::new(BASE_ROOT).join(format!("{SUITE}-{}", key()))
}

/// The base root, built first if it does not exist yet. Several processes may ask at
/// once: one builds (under a lock), the others wait for it.
pub fn ensure() -> Result<PathBuf> {
    let dir = path();
    if dir.join("etc/os-release").is_file() {
        return Ok(dir);
    }
    fs::create_dir_all(BASE_ROOT).with_context(|| format!("create {BASE_ROOT}"))?;
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(Path::new(BASE_ROOT).join(".lock"))
        .context("open the base build lock")?;
    lock.lock().context("lock the base build")?;
    if dir.join("etc/os-release").is_file() {
        return Ok(dir);
    }
    // Under the lock nobody else builds: every temporary directory is a dead build's.
    remove_unused(None)?;
    let tmp = Path::new(BASE_ROOT).join(format!(".{}.tmp-{}", key(), std::process::id()));
    let log = Path::new(BASE_ROOT).join(format!("build-{}.log", key()));
    eprintln!(
        "lab: building the Debian 12 base root (once; about a minute): mmdebstrap {SUITE} into {}, log {}",
        dir.display(),
        log.display()
    );
    let started = Instant::now();
    let log_file = fs::File::create(&log).with_context(|| format!("create {log:?}"))?;
    let status = Command::new("mmdebstrap")
        .args(["--variant=minbase", "--mode=root"])
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(format!("--customize-hook={SETUP}"))
        .env("TROUPE_OPERATOR_PASSWORD", OPERATOR_PASSWORD)
        .arg(SUITE)
        .arg(&tmp)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .context("cannot run mmdebstrap")?;
    if !status.success() {
        let _ = super::unmount_under(&tmp);
        let _ = fs::remove_dir_all(&tmp);
        bail!("mmdebstrap failed ({status}): {}", super::tail(&log));
    }
    fs::rename(&tmp, &dir).with_context(|| format!("rename {tmp:?} to {dir:?}"))?;
    eprintln!(
        "lab: base root built in {:.0?} ({})",
        started.elapsed(),
        dir.display()
    );
    remove_unused(Some(&dir))?;
    Ok(dir)
}

/// Remove dead builds' temporary directories and bases other than `keep` that no
/// mounted overlay uses as its lower layer. Call with the build lock held.
fn remove_unused(keep: Option<&Path>) -> Result<()> {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for e in fs::read_dir(BASE_ROOT)? {
        let e = e?;
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let is_tmp = name.starts_with('.') && name.contains(".tmp-");
        let is_base = name.starts_with(&format!("{SUITE}-")) && e.file_type()?.is_dir();
        if !(is_tmp || is_base) || keep == Some(p.as_path()) {
            continue;
        }
        if is_base && mounts.contains(&format!("lowerdir={},", p.display())) {
            continue;
        }
        eprintln!("lab: removing the unused base {}", p.display());
        super::unmount_under(&p)?;
        fs::remove_dir_all(&p).with_context(|| format!("remove {p:?}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_key_changes_with_its_package_list() {
        let a = key();
        assert_eq!(a.len(), 16);
        assert_eq!(a, key(), "stable");
        assert_ne!(fnv1a(b"a,b"), fnv1a(b"a,c"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
