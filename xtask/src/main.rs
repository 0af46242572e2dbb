//! `cargo xtask`: project automation in Rust (see the matklad/cargo-xtask pattern).
//! One file per task; the lab and the package check live in the library so the
//! integration tests share them.

mod bench;
mod codegen;
mod demo;
mod test;

use std::process::ExitCode;

use xtask::{deps, lab};

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  demo                  install what is missing, start a 3-host lab, run the best playbook twice
  test [ARGS...]        install what is missing, run `cargo test --workspace ARGS`, stop all labs
  lab up [N] [--name NAME]        start N (default 3) sshd hosts podc01.. on 127.0.X.1..N
  lab down [--name NAME | --all]  stop a lab (default \"default\") or all of them
  lab status [--name NAME]        show labs, hosts, pids, liveness
  deps                  only check/install the Debian packages
  codegen               regenerate docs/modules.md from the module registry
  bench [OPTIONS]       fan-out speed vs plain OpenSSH, Ansible, pyinfra (`bench --help`);
                        `bench --micro` runs the criterion micro-benchmarks,
                        `bench --etcd [--runs N]` times the etcd 1 -> 3 expansion";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::run(&args[1..]),
        Some("test") => return test::run(&args[1..]),
        Some("lab") => lab::cli(&args[1..]),
        Some("deps") => deps::ensure_packages(),
        Some("bench") => bench::run(&args[1..]),
        Some("codegen") => codegen::run(&args[1..]),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
