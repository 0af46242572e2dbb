//! `cargo xtask demo`: the main job on a local lab, for a new user's first command.
//! It installs what is missing, builds troupe, starts the 3-host lab "default"
//! (127.0.1.1-3), runs the best real playbook in `playbooks/` (the etcd expansion when
//! it exists, else the site playbook), runs it again to show that nothing changes the
//! second time, and leaves the lab up to look around.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Result, bail};
use xtask::{deps, lab};

/// Playbooks in order of preference: the headline job first.
const PLAYBOOKS: &[&str] = &["playbooks/etcd-expand.kdl", "playbooks/site.kdl"];

pub fn run(args: &[String]) -> Result<()> {
    if let Some(a) = args.first() {
        bail!("`cargo xtask demo` takes no arguments (got {a:?})");
    }
    let root = xtask::workspace_root();
    let Some(playbook) = PLAYBOOKS.iter().map(|p| root.join(p)).find(|p| p.is_file()) else {
        bail!(
            "no playbook to demonstrate yet: none of {} exists",
            PLAYBOOKS.join(", ")
        );
    };

    eprintln!("demo: step 1/5: check the tools the lab needs");
    deps::ensure_packages()?;

    eprintln!("demo: step 2/5: build troupe");
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
        "demo: step 3/5: start the lab: 3 sshd hosts podc01-03 on 127.0.1.1-3, each in its own namespaces"
    );
    let info = lab::up(lab::DEFAULT_NAME, 3)?;
    let inventory = info.inventory_path();
    eprintln!(
        "demo: inventory {}:\n{}",
        inventory.display(),
        std::fs::read_to_string(&inventory)?
    );

    let rel = playbook
        .strip_prefix(&root)
        .unwrap_or(&playbook)
        .display()
        .to_string();
    eprintln!("demo: step 4/5: run {rel} on the lab");
    xtask::run_loud(
        Command::new(&troupe)
            .current_dir(&root)
            .arg("run")
            .arg(&playbook)
            .arg("-i")
            .arg(&inventory),
    )?;

    eprintln!("demo: step 5/5: run it again: every task should report ok, changed=0");
    xtask::run_loud(
        Command::new(&troupe)
            .current_dir(&root)
            .arg("run")
            .arg(&playbook)
            .arg("-i")
            .arg(&inventory),
    )?;

    let first = info.hosts.first().map(|h| h.address.clone()).unwrap_or_default();
    eprintln!(
        "\ndemo: done. The lab is still up:\n  log in:  ssh -i {} -o UserKnownHostsFile={} root@{first}\n  status:  cargo xtask lab status\n  stop:    cargo xtask lab down",
        info.key_path().display(),
        info.known_hosts_path().display()
    );
    Ok(())
}
