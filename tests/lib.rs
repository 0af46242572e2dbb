//! The lab fixture for end-to-end tests: real Debian machines from `xtask::lab` (systemd,
//! own `/etc`, users `root`, `deploy`, `operator`), the real `troupe` binary, and an
//! OpenSSH client to look at the hosts afterwards.
//!
//! ```no_run
//! let lab = troupe_tests::Lab::shared();            // 3 hosts, shared by the test binary
//! let dir = lab.scratch("my_test");                 // fresh /srv/tests/my_test on every host
//! let out = lab.troupe(&["run", "play.kdl", "-i", lab.inventory_path().to_str().unwrap()]);
//! assert_eq!(lab.ssh_ok("podc01", &format!("cat {dir}/x")), "hello\n");
//! ```
//!
//! Labs: [`Lab::shared`] boots one 3-host lab the first time a test asks and keeps it
//! for the whole test process; tests share it by working under their own
//! [`Lab::scratch`] directory. A test that needs hosts of its own (stopping a sshd,
//! changing keys) takes [`Lab::start`] with a distinct name, which gives it a distinct
//! 127.0.X subnet, and the lab is stopped and forgotten when the `Lab` drops. Lab
//! names carry the test process's pid, so concurrent `cargo test` runs never meet.
//! Statics are never dropped, so the shared lab outlives its test process: the next
//! test process forgets it on its first start, and `cargo xtask test` runs `lab down
//! --all` at the end.
//!
//! The binary: tests of this package cannot use `CARGO_BIN_EXE_troupe` (that exists
//! only for troupe-run's own tests), so [`troupe_bin`] runs `cargo build -p troupe-run
//! --bin troupe` once per test process, into the same target directory and profile as
//! the test executable, and uses the result. Cargo is incremental: when the binary is
//! fresh this costs a fraction of a second.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use troupe_run::connection::ssh::SshOptions;
pub use xtask::lab::{LabHost, LabInfo};

/// A running lab; stopped on drop unless it is the shared one.
#[derive(Debug)]
pub struct Lab {
    info: LabInfo,
    owned: bool,
}

pub const SHARED_NAME: &str = "shared";

impl Lab {
    /// Start (or restart) lab `name` with `n` hosts `podc01..`. Panics with the lab's
    /// log when it cannot start: a test cannot go on without it.
    /// The lab is really named `t<pid>-<name>` (see [`xtask::lab::test_lab_name`]), so
    /// test processes running at the same time never touch each other's labs; labs
    /// of test processes that have exited are forgotten first.
    pub fn start(name: &str, n: usize) -> Lab {
        Self::start_kind(name, n, xtask::lab::Kind::Light)
    }

    /// [`Lab::start`] with real Debian machines (systemd-nspawn).
    pub fn machines(name: &str, n: usize) -> Lab {
        Self::start_kind(name, n, xtask::lab::Kind::System)
    }

    fn start_kind(name: &str, n: usize, kind: xtask::lab::Kind) -> Lab {
        static PRUNED: std::sync::Once = std::sync::Once::new();
        PRUNED.call_once(|| {
            if let Err(e) = xtask::lab::prune_test_labs() {
                eprintln!("warning: cannot clean up the labs of finished tests: {e:#}");
            }
        });
        let full = xtask::lab::test_lab_name(std::process::id(), name);
        match xtask::lab::up_kind(&full, n, kind) {
            Ok(info) => Lab { info, owned: true },
            Err(e) => panic!("cannot start lab {full}: {e:#}"),
        }
    }

    /// The 3-host lab shared by every test of this test binary.
    pub fn shared() -> &'static Lab {
        static SHARED: OnceLock<Lab> = OnceLock::new();
        SHARED.get_or_init(|| {
            let mut lab = Lab::start(SHARED_NAME, 3);
            lab.owned = false;
            lab
        })
    }

    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn info(&self) -> &LabInfo {
        &self.info
    }

    pub fn hosts(&self) -> &[LabHost] {
        &self.info.hosts
    }

    pub fn host_names(&self) -> Vec<&str> {
        self.info.hosts.iter().map(|h| h.name.as_str()).collect()
    }

    /// The record of host `name` (`podc01`...). Panics on an unknown name.
    pub fn host(&self, name: &str) -> &LabHost {
        self.info
            .hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("lab has no host {name}"))
    }

    pub fn address(&self, host: &str) -> &str {
        &self.host(host).address
    }

    /// The lab's own directory (keys, known_hosts, inventory, per-host dirs).
    pub fn dir(&self) -> &Path {
        &self.info.dir
    }

    /// Path `path` (absolute, e.g. "/etc/kubernetes") of `host`'s own file system, as
    /// seen from the controller: under the machine's root (its overlay's merged
    /// directory), or for a light lab the directory bind-mounted there.
    pub fn host_path(&self, host: &str, path: &str) -> PathBuf {
        let h = self.host(host);
        if let Some(root) = h.root() {
            return root.join(path.trim_start_matches('/'));
        }
        let (sub, _) = xtask::lab::MOUNTS
            .iter()
            .find(|(_, m)| *m == path)
            .unwrap_or_else(|| panic!("{path} is not a per-host directory of the light lab"));
        self.info.host_dir(host).join(sub)
    }

    /// The controller pid of `host`'s sshd listener (to signal or freeze it).
    pub fn sshd_pid(&self, host: &str) -> u32 {
        self.host(host)
            .sshd_pid()
            .unwrap_or_else(|| panic!("{host} has no running sshd"))
    }

    /// The sudo password of the `operator` user on every host.
    pub fn operator_password(&self) -> String {
        std::fs::read_to_string(self.info.operator_password_path())
            .expect("the lab's operator-password file")
            .trim()
            .to_string()
    }

    pub fn inventory_path(&self) -> PathBuf {
        self.info.inventory_path()
    }

    pub fn key_path(&self) -> PathBuf {
        self.info.key_path()
    }

    pub fn known_hosts_path(&self) -> PathBuf {
        self.info.known_hosts_path()
    }

    /// Connection options for `troupe_run::connection::ssh::SshConnection` as root
    /// with the lab key, strict host keys against the lab's known_hosts.
    pub fn ssh_options(&self) -> SshOptions {
        SshOptions::with_key("root", self.key_path(), self.known_hosts_path())
    }

    /// Run `cmd` on `host` as root through the OpenSSH client (a fresh connection,
    /// strict host key checking against the lab's known_hosts), for assertions.
    pub fn ssh(&self, host: &str, cmd: &str) -> Output {
        self.ssh_as("root", host, cmd)
    }

    /// [`Lab::ssh`] as `user` (`deploy`, `operator`: they have the lab's key too).
    pub fn ssh_as(&self, user: &str, host: &str, cmd: &str) -> Output {
        Command::new("ssh")
            .args(self.info.ssh_args_as(user))
            .arg(self.address(host))
            .arg(cmd)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run ssh")
    }

    /// Take `host` down (sshd, services, everything started on it) while the rest of
    /// the lab runs on: its address refuses connections afterwards. Only for labs of
    /// your own ([`Lab::start`]), never the shared one.
    pub fn stop_host(&self, host: &str) {
        assert!(
            self.owned,
            "stop_host on the shared lab would break other tests: use Lab::start"
        );
        xtask::lab::stop_host(&self.info.name, host).unwrap_or_else(|e| panic!("stop {host}: {e:#}"));
    }

    /// [`Lab::ssh`] that must succeed; returns stdout.
    pub fn ssh_ok(&self, host: &str, cmd: &str) -> String {
        let out = self.ssh(host, cmd);
        assert!(
            out.status.success(),
            "ssh {host} {cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A fresh, empty directory `/srv/tests/<test>` on every host: the convention for
    /// tests sharing a lab. Returns its path (the same on every host).
    pub fn scratch(&self, test: &str) -> String {
        assert!(
            !test.is_empty()
                && test
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "scratch name {test:?}: use letters, digits, '_' and '-'"
        );
        let dir = format!("/srv/tests/{test}");
        for h in self.hosts() {
            let local = self.host_path(&h.name, "/srv").join("tests").join(test);
            let _ = std::fs::remove_dir_all(&local);
            std::fs::create_dir_all(&local).unwrap_or_else(|e| panic!("create {}: {e}", local.display()));
        }
        dir
    }

    /// A `troupe` command ready to run in the workspace root with a cleared
    /// environment (PATH, HOME, NO_COLOR=1, COLUMNS=100 kept/set).
    pub fn troupe_cmd(&self) -> Command {
        let mut cmd = Command::new(troupe_bin());
        cmd.current_dir(xtask::workspace_root())
            .env_clear()
            .stdin(Stdio::null());
        for var in ["PATH", "HOME"] {
            if let Some(v) = std::env::var_os(var) {
                cmd.env(var, v);
            }
        }
        cmd.env("NO_COLOR", "1").env("COLUMNS", "100");
        cmd
    }

    /// Run the real `troupe` binary with `args` (see [`Lab::troupe_cmd`]).
    pub fn troupe(&self, args: &[&str]) -> Output {
        self.troupe_cmd().args(args).output().expect("cannot run troupe")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.owned
            && let Err(e) = xtask::lab::forget(&self.info.name)
        {
            eprintln!("warning: cannot stop lab {}: {e:#}", self.info.name);
        }
    }
}

/// The `troupe` binary, built once per test process into the test's own target
/// directory and profile.
pub fn troupe_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        // target/<profile>/deps/it-HASH
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test exe lives in target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target dir");
        let profile = profile_dir
            .file_name()
            .and_then(|p| p.to_str())
            .unwrap_or("debug");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        // Cargo runs this test with variables of its own (`CARGO_PKG_*`,
        // `CARGO_MANIFEST_DIR`, a longer `LD_LIBRARY_PATH`, ...). Build scripts that
        // watch the environment (ring's, through cc) would see a different one than
        // under `cargo test` and rebuild, and the next `cargo test` rebuild again:
        // minutes per test run. Build with the environment the user ran cargo in.
        for (var, _) in std::env::vars_os() {
            let name = var.to_string_lossy();
            let set_by_cargo = (name.starts_with("CARGO_")
                && !matches!(name.as_ref(), "CARGO_HOME" | "CARGO_TARGET_DIR")
                && !name.starts_with("CARGO_BUILD_")
                && !name.starts_with("CARGO_PROFILE_")
                && !name.starts_with("CARGO_REGISTRIES_")
                && !name.starts_with("CARGO_NET_")
                && !name.starts_with("CARGO_TERM_"))
                || matches!(name.as_ref(), "OUT_DIR" | "LD_LIBRARY_PATH" | "RUST_TEST_THREADS");
            if set_by_cargo {
                cmd.env_remove(&var);
            }
        }
        cmd.current_dir(xtask::workspace_root())
            .args([
                "build",
                "--quiet",
                "-p",
                "troupe-run",
                "--bin",
                "troupe",
                "--target-dir",
            ])
            .arg(target_dir);
        match profile {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let status = cmd
            .status()
            .expect("cannot run cargo build for the troupe binary");
        assert!(
            status.success(),
            "`cargo build -p troupe-run --bin troupe` failed"
        );
        let bin = profile_dir.join("troupe");
        assert!(bin.is_file(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}
