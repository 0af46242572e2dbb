//! The tools being measured, set up: the release troupe binary (built into
//! target/bench) and a venv with ansible-core and pyinfra under bench/work/.

use super::*;

pub(super) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The release troupe binary, built into target/bench so the build does not hold the
/// lock of the shared target dir (others build there) longer than needed.
pub(super) fn troupe_binary(opts: &Options) -> Result<PathBuf> {
    if let Some(p) = &opts.troupe {
        if !p.is_file() {
            bail!("--troupe {}: no such file", p.display());
        }
        // The runs start in the workload's folder: make a relative path absolute.
        return p
            .canonicalize()
            .with_context(|| format!("--troupe {}", p.display()));
    }
    let root = xtask::workspace_root();
    let target = root.join("target").join("bench");
    eprintln!("bench: building troupe --release (into {})", target.display());
    xtask::run_loud(
        Command::new(cargo())
            .current_dir(&root)
            .env("CARGO_TARGET_DIR", &target)
            .args(["build", "--release", "-p", "troupe-run", "--bin", "troupe"]),
    )?;
    Ok(target.join("release").join("troupe"))
}

pub(super) struct Peers {
    pub(super) bin: PathBuf,
    pub(super) ansible_version: String,
    pub(super) pyinfra_version: String,
}

pub(super) fn work_dir() -> PathBuf {
    xtask::workspace_root().join("bench").join("work")
}

/// A venv under bench/work/venv with ansible-core and pyinfra, created on first use.
pub(super) fn peers() -> Result<Peers> {
    let venv = work_dir().join("venv");
    let bin = venv.join("bin");
    let installed = bin.join("ansible-playbook").is_file() && bin.join("pyinfra").is_file();
    if !installed {
        if find_python().is_none() && xtask::deps::is_root() && xtask::deps::find_command("apt-get").is_some()
        {
            // Debian's python3 has no venv/ensurepip without this package.
            eprintln!("bench: installing python3-venv (for the Ansible and pyinfra venv)");
            let install = || {
                xtask::run_loud(
                    Command::new("apt-get")
                        .env("DEBIAN_FRONTEND", "noninteractive")
                        .args(["install", "-y", "--no-install-recommends", "python3-venv"]),
                )
            };
            if install().is_err() {
                xtask::run_loud(Command::new("apt-get").arg("update"))?;
                install()?;
            }
        }
        let python = find_python().context(
            "Ansible and pyinfra need python3 with the venv module (Debian: `apt-get install python3-venv`); \
             or skip them with --no-peers",
        )?;
        eprintln!(
            "bench: installing ansible-core and pyinfra from PyPI into {}",
            venv.display()
        );
        xtask::run_loud(Command::new(&python).args(["-m", "venv"]).arg(&venv))?;
        xtask::run_loud(Command::new(bin.join("pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "ansible-core",
            "pyinfra",
        ]))
        .context(
            "pip could not install ansible-core and pyinfra (is PyPI reachable?); skip them with --no-peers",
        )?;
    }
    let version = |prog: &str, arg: &str| -> String {
        Command::new(bin.join(prog))
            .arg(arg)
            .output()
            .ok()
            .map(|o| {
                let text =
                    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
                text.lines().next().unwrap_or("").trim().to_string()
            })
            .unwrap_or_else(|| "unknown".into())
    };
    Ok(Peers {
        ansible_version: version("ansible", "--version"),
        pyinfra_version: version("pyinfra", "--version"),
        bin,
    })
}

pub(super) fn find_python() -> Option<String> {
    for p in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(p)
            .args(["-c", "import venv, ensurepip"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(p.to_string());
        }
    }
    None
}

/// The Python the lab hosts run Ansible's modules with (the system one: the hosts share
/// this machine's /usr).
pub(super) fn host_python() -> String {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .unwrap_or("/usr/bin/python3")
        .to_string()
}
