//! `cargo xtask test`: the one command that runs every test on a fresh machine. It
//! installs the packages the lab needs, runs the whole workspace's tests (the tidy and
//! codegen freshness checks are ordinary tests), and stops every lab afterwards: tests
//! share labs through statics, which are never dropped.

use std::process::{Command, ExitCode};

use xtask::{deps, lab};

pub fn run(args: &[String]) -> ExitCode {
    if let Err(e) = deps::ensure_packages() {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(xtask::workspace_root()).arg("test");
    // `cargo xtask test -p troupe-tests connection` narrows it down like cargo does.
    if !args
        .iter()
        .any(|a| a.starts_with("-p") || a.starts_with("--package"))
    {
        cmd.arg("--workspace");
    }
    cmd.args(args);
    eprintln!("test: $ {}", xtask::display_cmd(&cmd));
    let status = cmd.status();
    eprintln!("test: stopping every lab the tests started");
    if let Err(e) = lab::down_all() {
        eprintln!("warning: could not stop the labs: {e:#}");
    }
    match status {
        Ok(s) if s.success() => {
            eprintln!("test: all tests passed");
            ExitCode::SUCCESS
        }
        Ok(s) => {
            eprintln!("test: tests failed ({s})");
            ExitCode::from(
                s.code()
                    .and_then(|c| u8::try_from(c).ok())
                    .filter(|c| *c != 0)
                    .unwrap_or(1),
            )
        }
        Err(e) => {
            eprintln!("error: cannot run cargo: {e}");
            ExitCode::FAILURE
        }
    }
}
