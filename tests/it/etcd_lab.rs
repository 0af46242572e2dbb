//! Issue 6 end to end: the real `troupe` binary runs the etcd playbooks on a lab of
//! real sshd hosts with real etcd under runit. A kubeadm-style single member is staged
//! by playbooks/etcd-lab-seed.kdl, then etcd-expand grows it (1 → 3, 3 → 5) with the
//! seed's keys read back from every member; re-runs change nothing; `--check` plans
//! without changing; a run killed right after `member add` converges when re-run; an
//! unreachable node stops the change before any member is added; members are removed
//! and replaced. The cluster is inspected with etcdctl over ssh, independently of
//! troupe's own etcd code.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Output, Stdio};

use serde_json::Value;
use troupe_tests::Lab;

/// An inventory for `lab` like playbooks/inventories/lab.kdl: `etcd` are the etcd
/// hosts (the first is the control plane), every other lab host is a spare.
fn inventory(lab: &Lab, etcd: &[&str], name: &str) -> PathBuf {
    let mut s = format!(
        "defaults user=root port=22 identity=\"{}\" known-hosts=\"{}\"\n\
         vars {{\n\
         \x20   etcd_runtime \"runit\"\n\
         \x20   etcd_listen_localhost #false\n\
         \x20   etcd_metrics_address \"{{{{ address }}}}\"\n\
         \x20   etcd_peer_extra_sans \"127.0.0.1\" \"localhost\"\n\
         \x20   etcd_ca_dir \"{dir}/etcd/pki\"\n\
         \x20   etcd_backup_dir \"{dir}/etcd/backups\"\n\
         \x20   etcd_verify_keys \"/demo/greeting\" \"/demo/owner\" \"/registry/namespaces/default\"\n\
         }}\n\
         group etcd {{\n",
        lab.key_path().display(),
        lab.known_hosts_path().display(),
        dir = lab.dir().display(),
    );
    for h in etcd {
        s.push_str(&format!("    host {h} address=\"{}\"\n", lab.address(h)));
    }
    s.push_str("}\ngroup spare {\n");
    for h in lab.host_names() {
        if !etcd.contains(&h) {
            s.push_str(&format!("    host {h} address=\"{}\"\n", lab.address(h)));
        }
    }
    s.push_str(&format!("}}\ngroup control-plane {{\n    host {}\n}}\n", etcd[0]));
    let path = lab.dir().join(format!("{name}.kdl"));
    std::fs::write(&path, s).unwrap();
    path
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn troupe(lab: &Lab, playbook: &str, inv: &PathBuf, extra: &[&str]) -> Output {
    let mut args = vec!["run", playbook, "-i", inv.to_str().unwrap()];
    args.extend_from_slice(extra);
    lab.troupe(&args)
}

fn troupe_ok(lab: &Lab, playbook: &str, inv: &PathBuf, extra: &[&str]) -> String {
    let out = troupe(lab, playbook, inv, extra);
    let t = text(&out);
    assert!(
        out.status.success(),
        "troupe run {playbook} failed ({}):\n{t}",
        out.status
    );
    t
}

/// `etcdctl member list` on `host`, as (name, is_learner) sorted by name; unstarted
/// members have an empty name.
fn members(lab: &Lab, host: &str) -> Vec<(String, bool)> {
    let cmd = format!(
        "ETCDCTL_API=3 etcdctl --endpoints=https://{}:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt \
         --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt --key=/etc/kubernetes/pki/etcd/healthcheck-client.key \
         member list -w json",
        lab.address(host)
    );
    let json: Value = serde_json::from_str(&lab.ssh_ok(host, &cmd)).expect("etcdctl json");
    let mut list: Vec<(String, bool)> = json["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_string(),
                m["isLearner"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    list.sort();
    list
}

fn voters(names: &[&str]) -> Vec<(String, bool)> {
    names.iter().map(|n| (n.to_string(), false)).collect()
}

/// Every "changed=N" in the recap is 0.
fn nothing_changed(out: &str) -> bool {
    let recap: Vec<&str> = out.lines().filter(|l| l.contains(" changed=")).collect();
    !recap.is_empty() && recap.iter().all(|l| l.contains(" changed=0 "))
}

#[test]
fn lab_grows_one_to_three_to_five_then_removes_and_replaces() {
    let lab = &Lab::start("etcd-grow", 5);
    let three = inventory(lab, &["podc01", "podc02", "podc03"], "three");
    troupe_ok(lab, "playbooks/etcd-lab-seed.kdl", &three, &[]);
    assert_eq!(members(lab, "podc01"), voters(&["podc01"]));

    // --check plans the membership changes and changes nothing.
    let planned = troupe_ok(lab, "playbooks/etcd-expand.kdl", &three, &["--check"]);
    assert!(
        planned.contains(&format!(
            "add podc02 (https://{}:2380) as a learner",
            lab.address("podc02")
        )),
        "{planned}"
    );
    assert!(
        planned.contains("promote podc03 once it has been added and started"),
        "{planned}"
    );
    assert_eq!(members(lab, "podc01"), voters(&["podc01"]));

    // 1 → 3, the seed's keys on every member.
    let out = troupe_ok(lab, "playbooks/etcd-expand.kdl", &three, &[]);
    assert_eq!(members(lab, "podc01"), voters(&["podc01", "podc02", "podc03"]));
    for host in ["podc01", "podc02", "podc03"] {
        assert!(
            out.contains(&format!("{host}: /demo/greeting=written by the seed")),
            "{host}:\n{out}"
        );
    }
    assert!(
        out.contains("saved "),
        "a snapshot is taken before the change:\n{out}"
    );

    // Re-run: nothing changes (no new snapshot either).
    let again = troupe_ok(lab, "playbooks/etcd-expand.kdl", &three, &[]);
    assert!(nothing_changed(&again), "{again}");

    // 3 → 5.
    let five = inventory(lab, &["podc01", "podc02", "podc03", "podc04", "podc05"], "five");
    let out = troupe_ok(lab, "playbooks/etcd-expand.kdl", &five, &[]);
    assert_eq!(
        members(lab, "podc02"),
        voters(&["podc01", "podc02", "podc03", "podc04", "podc05"])
    );
    assert!(
        out.contains("podc05: /demo/greeting=written by the seed"),
        "{out}"
    );

    // Remove podc05: it leaves the member list, its etcd stops, its data is moved aside.
    let out = troupe_ok(
        lab,
        "playbooks/etcd-remove-member.kdl",
        &five,
        &["-e", "etcd_remove=podc05"],
    );
    assert!(out.contains("removed podc05"), "{out}");
    assert_eq!(
        members(lab, "podc01"),
        voters(&["podc01", "podc02", "podc03", "podc04"])
    );
    let data = lab.ssh_ok("podc05", "ls -A /var/lib/etcd; ls /etc/service");
    assert!(
        !data.lines().any(|l| l == "member"),
        "podc05's data is moved aside: {data}"
    );
    assert!(
        !data.lines().any(|l| l == "etcd"),
        "podc05's etcd service is disabled: {data}"
    );

    // podc04 dies; podc05 (wiped) replaces it.
    lab.ssh_ok("podc04", "sv down /etc/service/etcd");
    let replaced = inventory(lab, &["podc01", "podc02", "podc03", "podc05"], "replaced");
    let out = troupe_ok(
        lab,
        "playbooks/etcd-replace-member.kdl",
        &replaced,
        &["-e", "etcd_remove=podc04"],
    );
    assert!(out.contains("removed podc04"), "{out}");
    assert_eq!(
        members(lab, "podc01"),
        voters(&["podc01", "podc02", "podc03", "podc05"])
    );
    assert!(
        out.contains("podc05: /demo/greeting=written by the seed"),
        "{out}"
    );
}

#[test]
fn lab_run_killed_after_member_add_converges_and_unreachable_node_stops_the_change() {
    let lab = &Lab::start("etcd-kill", 4);
    let three = inventory(lab, &["podc01", "podc02", "podc03"], "three");
    troupe_ok(lab, "playbooks/etcd-lab-seed.kdl", &three, &[]);

    // Kill the run the moment podc02 has been added.
    let mut child = lab
        .troupe_cmd()
        .args(["run", "playbooks/etcd-expand.kdl", "-i", three.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        let added = line.contains("added podc02");
        seen.push(line);
        if added {
            child.kill().unwrap();
            break;
        }
    }
    let _ = child.wait();
    assert!(
        seen.iter().any(|l| l.contains("added podc02")),
        "never saw the add:\n{}",
        seen.join("\n")
    );
    let after_kill = members(lab, "podc01");
    assert_eq!(after_kill.len(), 2, "{after_kill:?}");
    assert!(after_kill.contains(&("podc01".to_string(), false)));

    // The re-run continues from there.
    let out = troupe_ok(lab, "playbooks/etcd-expand.kdl", &three, &[]);
    assert!(!out.contains("already exists"), "{out}");
    assert_eq!(members(lab, "podc01"), voters(&["podc01", "podc02", "podc03"]));

    // podc04's sshd is down: the run stops before any member is added.
    let pid = lab.sshd_pid("podc04");
    assert!(
        std::process::Command::new("kill")
            .arg(pid.to_string())
            .status()
            .unwrap()
            .success()
    );
    let four = inventory(lab, &["podc01", "podc02", "podc03", "podc04"], "four");
    let out = troupe(lab, "playbooks/etcd-expand.kdl", &four, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("added podc04"), "{}", text(&out));
    assert_eq!(members(lab, "podc01"), voters(&["podc01", "podc02", "podc03"]));
}
