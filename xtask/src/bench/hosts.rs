//! The lab hosts' side of the bench, seen from the controller: whether the lab still
//! runs, hiding root's shell rc files, wiping the workload, and fingerprints of what
//! each host's workload directory holds (to compare the tools' results).

use super::*;

pub(super) fn host_bench_dir(lab: &LabInfo, host: &str) -> PathBuf {
    lab.host_dir(host)
        .join("srv")
        .join(REMOTE_DIR.trim_start_matches("/srv/"))
}

/// Whether every sshd of the lab still runs.
pub(super) fn lab_alive(hosts: &Hosts) -> Result<bool> {
    let Some(now) = lab::load(LAB_NAME)? else {
        return Ok(false);
    };
    Ok(now.hosts.len() >= hosts.n && now.hosts.iter().take(hosts.n).all(lab::LabHost::is_up))
}

/// Shell start-up files of root that the hosts' login shell reads for every SSH
/// command (Debian's bash reads ~/.bashrc when started by sshd).
pub(super) const RC_FILES: &[&str] = &["/root/.bashrc"];

/// Hide root's ~/.bashrc inside the lab hosts (an empty file bind-mounted over it in
/// each host's mount namespace, which the host's sshd sessions inherit). A developer's
/// bashrc (here: `pyenv init`, ~300 ms) would otherwise be paid by every SSH command of
/// every tool and hide the differences the bench is about; a server's root shell starts
/// in about a millisecond. Returns what was hidden, for the report.
pub(super) fn quiet_rc_files(lab: &LabInfo) -> Result<Vec<String>> {
    let present: Vec<&str> = RC_FILES
        .iter()
        .copied()
        .filter(|f| Path::new(f).is_file())
        .collect();
    if present.is_empty() {
        return Ok(Vec::new());
    }
    let empty = lab.dir.join("empty-rc");
    fs::write(&empty, "")?;
    let Some(now) = lab::load(&lab.name)? else {
        bail!("lab {} is not running", lab.name)
    };
    for h in &now.hosts {
        for f in &present {
            xtask::run_quiet(
                Command::new("nsenter")
                    .arg("--target")
                    .arg(h.light().context("the bench lab is light")?.sshd_pid.to_string())
                    .args(["--mount", "--", "mount", "--bind"])
                    .arg(&empty)
                    .arg(f),
            )
            .with_context(|| format!("hide {f} in lab host {}", h.name))?;
        }
    }
    Ok(present.iter().map(|f| f.to_string()).collect())
}

/// Bring the lab back when it is gone (same names, addresses and file paths; new keys,
/// which every tool reads from the same files).
pub(super) fn ensure_lab(hosts: &Hosts) -> Result<()> {
    if !lab_alive(hosts)? {
        eprintln!("bench: lab {LAB_NAME:?} is not (fully) running: starting it again");
        let info = lab::up_light(LAB_NAME, hosts.lab.hosts.len())?;
        quiet_rc_files(&info)?;
    }
    Ok(())
}

/// Cold start: remove the workload's directory on every host.
pub(super) fn wipe(hosts: &Hosts) -> Result<()> {
    for h in hosts.iter() {
        let d = host_bench_dir(hosts.lab, &h.name);
        match fs::remove_dir_all(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("wipe {}", d.display())),
        }
    }
    Ok(())
}

/// What a host's workload directory holds: per path, kind, mode and content.
pub(super) fn fingerprint(dir: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        let Ok(meta) = fs::symlink_metadata(&abs) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        let what = if meta.is_dir() {
            if let Ok(rd) = fs::read_dir(&abs) {
                for e in rd.flatten() {
                    let name = e.file_name();
                    // temp files of an interrupted write would show up as a difference
                    stack.push(rel.join(name));
                }
            }
            format!("dir {mode:o}")
        } else if meta.is_file() {
            let content = fs::read(&abs).unwrap_or_default();
            format!("file {mode:o} {}", String::from_utf8_lossy(&content))
        } else {
            format!("other {mode:o}")
        };
        out.insert(rel.display().to_string(), what);
    }
    out
}

pub(super) fn fingerprints(hosts: &Hosts) -> Vec<BTreeMap<String, String>> {
    hosts
        .iter()
        .map(|h| fingerprint(&host_bench_dir(hosts.lab, &h.name)))
        .collect()
}

/// Describe how `got` differs from `want` (first difference), `None` when equal.
pub(super) fn compare(
    hosts: &Hosts,
    want: &[BTreeMap<String, String>],
    got: &[BTreeMap<String, String>],
) -> Option<String> {
    for ((h, w), g) in hosts.iter().zip(want).zip(got) {
        if w == g {
            continue;
        }
        for (path, wv) in w {
            match g.get(path) {
                None => return Some(format!("{}: {path} missing", h.name)),
                Some(gv) if gv != wv => {
                    let short = |s: &str| s.chars().take(60).collect::<String>().replace('\n', "⏎");
                    return Some(format!("{}: {path}: {} vs {}", h.name, short(gv), short(wv)));
                }
                _ => {}
            }
        }
        if let Some(extra) = g.keys().find(|k| !w.contains_key(*k)) {
            return Some(format!("{}: extra {extra}", h.name));
        }
    }
    None
}
