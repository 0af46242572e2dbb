//! Project automation shared by the `cargo xtask` binary and the integration tests: the
//! local lab of sshd "hosts" (`lab`) and the Debian packages it needs (`deps`). Kept as
//! a library so `tests/lib.rs` drives the very same lab the demo uses, and kept light
//! (anyhow + std) so it builds on a fresh machine before protoc is installed.

pub mod deps;
pub mod lab;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Run a command to completion, failing with its stderr when it exits non-zero.
pub fn run_quiet(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Print a command the user can relate to, then run it with inherited output.
pub fn run_loud(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", display_cmd(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {}", display_cmd(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display_cmd(cmd));
    }
    Ok(())
}

pub fn display_cmd(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$;&|<>".contains(c)) {
            s.push_str(&format!(" '{}'", a.replace('\'', r"'\''")));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}
