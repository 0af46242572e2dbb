//! `cargo xtask demo`: the main job on a local lab, for a new user's first command.
//! It installs what is missing, builds troupe, starts the 3-host lab "default"
//! (127.0.1.1-3), runs the best real playbook in `playbooks/` (the etcd expansion, after
//! staging a kubeadm-like single member, when those playbooks exist; else the site
//! playbook), runs it again to show that nothing changes the second time, and leaves
//! the lab up to look around.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};
use xtask::{deps, lab};

/// One way to run the demo: the playbooks, in order, and the inventory they use.
struct Scenario {
    title: &'static str,
    /// Run once to stage the starting point (not repeated).
    setup: Option<(&'static str, &'static str)>,
    /// The main playbook, run twice (the second run must change nothing).
    main: &'static str,
    /// `None`: the inventory the lab writes for itself.
    inventory: Option<&'static str>,
    /// What to show on podc01 at the end (run over ssh), and why.
    show: Option<(&'static str, &'static str)>,
}

/// etcdctl on podc01 with the kubeadm-named health-check client certificate.
const ETCDCTL: &str = "ETCDCTL_API=3 etcdctl --cacert /etc/kubernetes/pki/etcd/ca.crt \
    --cert /etc/kubernetes/pki/etcd/healthcheck-client.crt --key /etc/kubernetes/pki/etcd/healthcheck-client.key \
    --endpoints https://127.0.1.1:2379,https://127.0.1.2:2379,https://127.0.1.3:2379";

/// In order of preference: the headline job first, then the everyday site playbook.
const SCENARIOS: &[Scenario] = &[
    Scenario {
        title: "grow a kubeadm-style single etcd into a three-member TLS cluster",
        setup: Some((
            "playbooks/etcd-lab-seed.kdl",
            "stage the starting point: one etcd member on podc01, as kubeadm leaves it",
        )),
        main: "playbooks/etcd-expand.kdl",
        inventory: Some("playbooks/inventories/lab.kdl"),
        show: Some((
            "the cluster now: three voting members, every endpoint healthy",
            "{etcdctl} member list -w table && {etcdctl} endpoint health",
        )),
    },
    Scenario {
        title: "configure a small site on every host",
        setup: None,
        main: "playbooks/site.kdl",
        inventory: None,
        show: None,
    },
];

fn available(root: &Path, s: &Scenario) -> bool {
    let mut files = vec![s.main];
    files.extend(s.setup.map(|(p, _)| p));
    files.extend(s.inventory);
    files.iter().all(|f| root.join(f).is_file())
}

pub fn run(args: &[String]) -> Result<()> {
    if let Some(a) = args.first() {
        bail!("`cargo xtask demo` takes no arguments (got {a:?})");
    }
    let root = xtask::workspace_root();
    let Some(scenario) = SCENARIOS.iter().find(|s| available(&root, s)) else {
        bail!(
            "no playbook to demonstrate: none of {} exists",
            SCENARIOS.iter().map(|s| s.main).collect::<Vec<_>>().join(", ")
        );
    };
    eprintln!("demo: {} ({})", scenario.title, scenario.main);

    eprintln!("demo: step 1: check the tools the lab needs");
    deps::ensure_packages()?;

    eprintln!("demo: step 2: build troupe");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    xtask::run_loud(Command::new(cargo).current_dir(&root).args([
        "build",
        "-p",
        "troupe-run",
        "--bin",
        "troupe",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let troupe = target.join("debug").join("troupe");

    eprintln!(
        "demo: step 3: start the lab: 3 hosts podc01-03 on 127.0.1.1-3, each a real sshd in its own mount \
         and UTS namespaces (its own /etc/kubernetes, /var/lib/etcd, /etc/etcd, /srv, runit services, hostname)"
    );
    let info = lab::up(lab::DEFAULT_NAME, 3)?;
    let inventory = match scenario.inventory {
        Some(p) => root.join(p),
        None => info.inventory_path(),
    };
    eprintln!(
        "demo: inventory {}:\n{}",
        inventory.display(),
        std::fs::read_to_string(&inventory)?
    );

    let run_playbook = |playbook: &str| {
        xtask::run_loud(
            Command::new(&troupe)
                .current_dir(&root)
                .arg("run")
                .arg(playbook)
                .arg("-i")
                .arg(&inventory),
        )
    };
    let mut step = 4;
    if let Some((setup, why)) = scenario.setup {
        eprintln!("\ndemo: step {step}: {why}");
        run_playbook(setup)?;
        step += 1;
    }
    eprintln!("\ndemo: step {step}: run {} on the lab", scenario.main);
    run_playbook(scenario.main)?;
    step += 1;
    eprintln!("\ndemo: step {step}: run it again: every host must report changed=0");
    run_playbook(scenario.main)?;

    if let (Some((what, cmd)), Some(h)) = (scenario.show, info.hosts.first()) {
        step += 1;
        eprintln!("\ndemo: step {step}: {what} (on {} over ssh)", h.name);
        let cmd = cmd.replace("{etcdctl}", ETCDCTL);
        xtask::run_loud(Command::new("ssh").args(info.ssh_args()).arg(&h.address).arg(cmd))?;
    }

    let first = info.hosts.first().map(|h| h.address.clone()).unwrap_or_default();
    eprintln!(
        "\ndemo: done. The lab is still up:\n  log in:  ssh -i {} -o UserKnownHostsFile={} root@{first}\n  status:  cargo xtask lab status\n  stop:    cargo xtask lab down",
        info.key_path().display(),
        info.known_hosts_path().display()
    );
    Ok(())
}
