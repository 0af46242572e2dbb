//! The lab itself. The real lab (issue 14): every host a booted Debian system with its
//! own `/etc/passwd`, package database, systemd and sudo rules, and two labs up at once
//! never disturb each other; `down` leaves no process and no mount. The light lab
//! (`--light`, used by the benches): tests trust it to stop exactly its own hosts, so
//! that one lab's teardown never takes down another's (issue 11.13).

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::OnceLock;

use troupe_tests::Lab;
use xtask::lab;

fn light(h: &lab::LabHost) -> &lab::LightHost {
    h.light().expect("a light lab host")
}

/// Kill a lab's host processes behind the lab's back, as a crashed sshd or a test that
/// broke its host would: the host's mount namespace dies (its inode number is free
/// for the kernel to hand out again at once) while the lab's state file stays.
fn kill_behind_the_labs_back(info: &lab::LabInfo) {
    for h in &info.hosts {
        let mut pids = vec![light(h).sshd_pid.to_string()];
        pids.extend(light(h).runsvdir_pid.map(|p| p.to_string()));
        let _ = Command::new("kill").arg("-KILL").args(&pids).status();
    }
    for h in &info.hosts {
        for _ in 0..200 {
            if !h.is_up() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

fn sshd_pids(info: &lab::LabInfo) -> Vec<u32> {
    info.hosts.iter().map(|h| light(h).sshd_pid).collect()
}

/// Two labs cycle in parallel, each 20 times: up, its hosts die behind its back, `down`.
/// Every `down` then looks for processes of a dead namespace whose number the other
/// lab's newer hosts may carry by now. A third lab stays up throughout; neither its
/// processes nor those of the other cycling lab may ever be signalled.
#[test]
fn taking_a_lab_down_never_signals_another_labs_processes() {
    let me = std::process::id();
    let steady_name = lab::test_lab_name(me, "lab-steady");
    let steady = lab::up_light(&steady_name, 1).expect("start the steady lab");
    let cycling: Vec<String> = ["lab-cycle-a", "lab-cycle-b"]
        .iter()
        .map(|n| lab::test_lab_name(me, n))
        .collect();
    let threads: Vec<_> = cycling
        .iter()
        .cloned()
        .map(|name| {
            std::thread::spawn(move || -> Result<(), String> {
                for round in 0..20 {
                    let info = lab::up_light(&name, 2).map_err(|e| format!("{name} up: {e:#}"))?;
                    // Give the other lab's `down` time to run while these hosts live.
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    let now = lab::load(&name).unwrap().expect("state");
                    if sshd_pids(&now) != sshd_pids(&info) || !now.hosts.iter().all(lab::LabHost::is_up) {
                        return Err(format!(
                            "round {round}: a host of {name} was stopped by someone else"
                        ));
                    }
                    kill_behind_the_labs_back(&info);
                    lab::down(&name).map_err(|e| format!("{name} down: {e:#}"))?;
                }
                Ok(())
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let steady_alive = steady.hosts.iter().all(lab::LabHost::is_up);
    let _ = lab::forget(&steady_name);
    for name in &cycling {
        let _ = lab::forget(name);
    }
    for r in results {
        r.unwrap();
    }
    assert!(
        steady_alive,
        "the steady lab's sshd was stopped by another lab's `down`"
    );
}

/// The same, one step at a time: a dead host's namespace number is reused by the next
/// lab's host, and `down` of the dead lab must leave that host alone.
#[test]
fn down_of_a_dead_lab_leaves_the_lab_that_reused_its_namespace_numbers_alone() {
    let me = std::process::id();
    let (dead, live) = (
        lab::test_lab_name(me, "lab-dead"),
        lab::test_lab_name(me, "lab-live"),
    );
    let mut failures = Vec::new();
    for round in 0..10 {
        let d = lab::up_light(&dead, 1).unwrap();
        kill_behind_the_labs_back(&d);
        let l = lab::up_light(&live, 1).unwrap();
        lab::down(&dead).unwrap();
        if !l.hosts.iter().all(lab::LabHost::is_up) {
            failures.push(format!(
                "round {round}: {live}'s sshd died when {dead} went down (namespace {} was {})",
                light(&l.hosts[0]).mnt_ns,
                light(&d.hosts[0]).mnt_ns
            ));
        }
        lab::down(&live).unwrap();
    }
    let _ = lab::forget(&dead);
    let _ = lab::forget(&live);
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------------------------------------------------------------------------------
// The real lab: Debian machines under systemd-nspawn

/// The 3 machines the tests of the real lab share.
fn machines() -> &'static Lab {
    static LAB: OnceLock<Lab> = OnceLock::new();
    LAB.get_or_init(|| Lab::machines("lab-machines", 3))
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_host_has_booted_with_its_own_identity() {
    let lab = machines();
    let mut machine_ids = BTreeSet::new();
    for h in lab.host_names() {
        assert_eq!(lab.ssh_ok(h, "systemctl is-system-running"), "running\n", "{h}");
        assert_eq!(lab.ssh_ok(h, "hostname"), format!("{h}\n"));
        machine_ids.insert(lab.ssh_ok(h, "cat /etc/machine-id"));
        // sshd listens on the host's own address only (the network is shared: `ss`
        // would list every lab's listeners).
        let listening = lab.ssh_ok(h, "sshd -T | grep -i '^listenaddress'");
        assert_eq!(listening, format!("listenaddress {}:22\n", lab.address(h)), "{h}");
        assert!(lab.host(h).is_up());
    }
    assert_eq!(
        machine_ids.len(),
        lab.hosts().len(),
        "machine-ids are not distinct"
    );
}

#[test]
fn each_host_has_its_own_users() {
    let lab = machines();
    let user = format!("labprobe{}", std::process::id());
    lab.ssh_ok("podc01", &format!("useradd --no-create-home {user}"));
    let seen = |h: &str| lab.ssh(h, &format!("getent passwd {user}")).status.success();
    assert!(seen("podc01"));
    assert!(!seen("podc02"), "a user added on podc01 exists on podc02");
    let controller = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(
        !controller.lines().any(|l| l.starts_with(&format!("{user}:"))),
        "a user added on podc01 exists on the controller"
    );
    lab.ssh_ok("podc01", &format!("userdel {user}"));
}

#[test]
fn deploy_has_passwordless_sudo_and_operator_needs_the_password() {
    let lab = machines();
    let out = lab.ssh_as("deploy", "podc02", "id -un && sudo -n id -u");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout(&out), "deploy\n0\n");

    let out = lab.ssh_as("operator", "podc02", "sudo -n id -u");
    assert!(!out.status.success(), "operator's sudo -n must fail");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a password is required"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let password = lab.operator_password();
    let out = lab.ssh_as(
        "operator",
        "podc02",
        &format!("echo '{password}' | sudo -S -p '' id -u"),
    );
    assert_eq!(stdout(&out), "0\n", "{}", String::from_utf8_lossy(&out.stderr));
}

/// A package installed with apt-get on one host is in that host's package database
/// only (a .deb built here, so the test needs no mirror).
#[test]
fn a_package_installed_on_one_host_is_not_on_another() {
    let lab = machines();
    let name = format!("troupe-lab-probe-{}", std::process::id());
    let tmp = tempfile::tempdir().unwrap();
    let pkg = tmp.path().join("pkg");
    std::fs::create_dir_all(pkg.join("DEBIAN")).unwrap();
    std::fs::create_dir_all(pkg.join("usr/share/troupe-lab-probe")).unwrap();
    std::fs::write(
        pkg.join("DEBIAN/control"),
        format!(
            "Package: {name}\nVersion: 1.0\nArchitecture: all\nMaintainer: troupe tests <t@example.invalid>\nDescription: lab probe\n"
        ),
    )
    .unwrap();
    std::fs::write(pkg.join("usr/share/troupe-lab-probe").join(&name), "probe\n").unwrap();
    let deb = lab.host_path("podc01", "/root").join(format!("{name}.deb"));
    let ok = Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&pkg)
        .arg(&deb)
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    lab.ssh_ok(
        "podc01",
        &format!("DEBIAN_FRONTEND=noninteractive apt-get install -y -q /root/{name}.deb >/dev/null"),
    );
    let installed = |h: &str| {
        lab.ssh(h, &format!("dpkg -s {name} >/dev/null 2>&1"))
            .status
            .success()
    };
    assert!(installed("podc01"));
    assert!(!installed("podc03"), "installed on podc01, visible on podc03");
    let here = Command::new("dpkg").args(["-s", &name]).output().unwrap();
    assert!(
        !here.status.success(),
        "installed on podc01, visible on the controller"
    );
    assert!(
        !std::path::Path::new("/usr/share/troupe-lab-probe")
            .join(&name)
            .exists(),
        "the package's file landed on the controller"
    );
    lab.ssh_ok(
        "podc01",
        &format!("dpkg --purge {name} >/dev/null && rm /root/{name}.deb"),
    );
}

/// A unit written on one host runs under that host's systemd, and only there.
#[test]
fn systemd_runs_a_unit_on_its_own_host() {
    let lab = machines();
    let unit = format!("labprobe{}", std::process::id());
    lab.ssh_ok(
        "podc03",
        &format!(
            "printf '[Service]\\nExecStart=/bin/sleep 600\\n' > /etc/systemd/system/{unit}.service && \
             systemctl daemon-reload && systemctl start {unit} && systemctl is-active {unit}"
        ),
    );
    let active = |h: &str| stdout(&lab.ssh(h, &format!("systemctl is-active {unit}")));
    assert_eq!(active("podc03"), "active\n");
    assert_ne!(active("podc02"), "active\n");
    // Its process is the host's, not the controller's: the lab sees it as podc03's.
    let pid: u32 = lab
        .ssh_ok("podc03", &format!("systemctl show -P MainPID {unit}"))
        .trim()
        .parse()
        .unwrap();
    assert!(pid > 1);
    let on_controller: Vec<u32> = lab::processes_in(lab.host("podc03"))
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.starts_with("/bin/sleep\0600"))
        })
        .collect();
    assert_eq!(on_controller.len(), 1, "{on_controller:?}");
    lab.ssh_ok(
        "podc03",
        &format!("systemctl stop {unit} && rm /etc/systemd/system/{unit}.service && systemctl daemon-reload"),
    );
}

/// A second lab comes up while the shared one runs, on its own addresses, and `down`
/// of it stops exactly its machines: no process and no mount is left, and the shared
/// lab's machines run on.
#[test]
fn two_labs_at_once_and_down_leaves_nothing_behind() {
    let shared = machines();
    let before: Vec<lab::Machine> = shared
        .hosts()
        .iter()
        .map(|h| h.machine().unwrap().clone())
        .collect();
    let name = lab::test_lab_name(std::process::id(), "lab-second");
    let second = lab::up(&name, 2).expect("start a second lab");
    let second_addrs: BTreeSet<&str> = second.hosts.iter().map(|h| h.address.as_str()).collect();
    for h in shared.hosts() {
        assert!(!second_addrs.contains(h.address.as_str()));
    }
    let ssh = |info: &lab::LabInfo, addr: &str, cmd: &str| {
        Command::new("ssh")
            .args(info.ssh_args())
            .arg(addr)
            .arg(cmd)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    for h in &second.hosts {
        assert_eq!(
            stdout(&ssh(&second, &h.address, "hostname")),
            format!("{}\n", h.name)
        );
        assert_eq!(
            stdout(&ssh(&second, &h.address, "systemctl is-system-running")),
            "running\n"
        );
    }
    // The second lab's podc01 is its own machine: a file written there is not on the
    // shared lab's podc01.
    let marker = format!("/root/second-lab-{}", std::process::id());
    assert!(
        ssh(&second, &second.hosts[0].address, &format!("touch {marker}"))
            .status
            .success()
    );
    assert!(!shared.host_path("podc01", &marker).exists());

    let pids: Vec<u32> = second.hosts.iter().flat_map(lab::processes_in).collect();
    assert!(
        pids.len() > 2 * 3,
        "a booted machine has more processes: {pids:?}"
    );
    lab::down(&name).expect("down");
    let left: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .filter(|p| {
            // a pid reused since is someone else's
            !std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| s.contains(") Z"))
        })
        .collect();
    for h in &second.hosts {
        assert!(lab::processes_in(h).is_empty(), "{} left processes", h.name);
        assert!(!h.is_up());
        assert!(
            std::net::TcpStream::connect((h.address.as_str(), 22)).is_err(),
            "{} still accepts connections",
            h.address
        );
    }
    let dir = lab::lab_dir(&name);
    let mounts: Vec<_> = lab::mount_points()
        .into_iter()
        .filter(|m| m.starts_with(&dir))
        .collect();
    assert!(mounts.is_empty(), "mounts left behind: {mounts:?}");
    let still: Vec<u32> = left
        .into_iter()
        .filter(|p| {
            lab::Machine::owns(&dir.join("podc01"), *p) || lab::Machine::owns(&dir.join("podc02"), *p)
        })
        .collect();
    assert!(still.is_empty(), "processes of the second lab left: {still:?}");
    // The shared lab did not notice.
    let after: Vec<lab::Machine> = shared
        .hosts()
        .iter()
        .map(|h| h.machine().unwrap().clone())
        .collect();
    assert_eq!(before, after);
    for h in shared.hosts() {
        assert!(h.is_up(), "{} of the shared lab went down", h.name);
        assert_eq!(shared.ssh_ok(&h.name, "systemctl is-system-running"), "running\n");
    }
    lab::forget(&name).unwrap();
}
