//! `cargo xtask codegen`: regenerate `docs/modules.md` from the module registry.
//!
//! The registry lives in troupe-run, which xtask must not link (its etcd client needs
//! protoc, which xtask itself installs). So the `troupe` binary prints the reference
//! (`troupe doc modules`, a hidden subcommand) and this task writes it to the file. A
//! test in troupe-run (`tidy`) fails when the file is stale.

use std::fs;
use std::process::Command;

use anyhow::{Context, Result, bail};

pub const MODULES_MD: &str = "docs/modules.md";

pub fn run(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        bail!("usage: cargo xtask codegen");
    }
    let root = xtask::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    println!("codegen: building troupe and asking it for the module reference");
    let out = Command::new(cargo)
        .current_dir(&root)
        .args([
            "run",
            "--quiet",
            "-p",
            "troupe-run",
            "--bin",
            "troupe",
            "--",
            "doc",
            "modules",
        ])
        .output()
        .context("cannot run cargo")?;
    if !out.status.success() {
        bail!(
            "`troupe doc modules` failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout).context("the reference is not UTF-8")?;
    let path = root.join(MODULES_MD);
    let old = fs::read_to_string(&path).unwrap_or_default();
    if old == text {
        println!("codegen: {MODULES_MD} is up to date");
    } else {
        fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("codegen: wrote {MODULES_MD}");
    }
    Ok(())
}
