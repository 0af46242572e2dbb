//! Checks as tests: what the repository ships must pass `troupe check`, so a module
//! argument renamed or a role variable dropped breaks `cargo test`, not the next lab run.

use std::path::{Path, PathBuf};

use troupe_run::cli::LoadArgs;

fn kdl_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "kdl"))
        .collect();
    files.sort();
    files
}

/// Every shipped playbook against every shipped inventory, through the same loader,
/// module registry, inventory checks and preflight as `troupe check` (no host touched).
#[test]
fn shipped_playbooks_check_clean() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../playbooks");
    let playbooks = kdl_files(&root);
    let inventories = kdl_files(&root.join("inventories"));
    assert!(
        !playbooks.is_empty() && !inventories.is_empty(),
        "no playbooks found"
    );
    let mut failures = Vec::new();
    for playbook in &playbooks {
        for inventory in &inventories {
            let args = LoadArgs {
                playbook: playbook.clone(),
                inventory: inventory.clone(),
                roles_path: Vec::new(),
            };
            if let Err(report) = args.try_load() {
                failures.push(format!(
                    "{} -i {}:\n{report:?}",
                    playbook.display(),
                    inventory.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
