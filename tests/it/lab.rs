//! The lab itself: tests trust it to stop exactly its own hosts, so that one test's
//! teardown never takes down another test's hosts (issue 11.13).

use std::process::Command;

use xtask::lab;

/// Kill a lab's host processes behind the lab's back, as a crashed sshd or a test that
/// broke its host would: the host's mount namespace dies (its inode number is free
/// for the kernel to hand out again at once) while the lab's state file stays.
fn kill_behind_the_labs_back(info: &lab::LabInfo) {
    for h in &info.hosts {
        let mut pids = vec![h.sshd_pid.to_string()];
        pids.extend(h.runsvdir_pid.map(|p| p.to_string()));
        let _ = Command::new("kill").arg("-KILL").args(&pids).status();
    }
    for h in &info.hosts {
        for _ in 0..200 {
            if !h.sshd_alive() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

fn sshd_pids(info: &lab::LabInfo) -> Vec<u32> {
    info.hosts.iter().map(|h| h.sshd_pid).collect()
}

/// Two labs cycle in parallel, each 20 times: up, its hosts die behind its back, `down`.
/// Every `down` then looks for processes of a dead namespace whose number the other
/// lab's newer hosts may carry by now. A third lab stays up throughout; neither its
/// processes nor those of the other cycling lab may ever be signalled.
#[test]
fn taking_a_lab_down_never_signals_another_labs_processes() {
    let me = std::process::id();
    let steady_name = lab::test_lab_name(me, "lab-steady");
    let steady = lab::up(&steady_name, 1).expect("start the steady lab");
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
                    let info = lab::up(&name, 2).map_err(|e| format!("{name} up: {e:#}"))?;
                    // Give the other lab's `down` time to run while these hosts live.
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    let now = lab::load(&name).unwrap().expect("state");
                    if sshd_pids(&now) != sshd_pids(&info) || !now.hosts.iter().all(lab::LabHost::sshd_alive)
                    {
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
    let steady_alive = steady.hosts.iter().all(lab::LabHost::sshd_alive);
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
        let d = lab::up(&dead, 1).unwrap();
        kill_behind_the_labs_back(&d);
        let l = lab::up(&live, 1).unwrap();
        lab::down(&dead).unwrap();
        if !l.hosts.iter().all(lab::LabHost::sshd_alive) {
            failures.push(format!(
                "round {round}: {live}'s sshd died when {dead} went down (namespace {} was {})",
                l.hosts[0].mnt_ns, d.hosts[0].mnt_ns
            ));
        }
        lab::down(&live).unwrap();
    }
    let _ = lab::forget(&dead);
    let _ = lab::forget(&live);
    assert!(failures.is_empty(), "{failures:#?}");
}
