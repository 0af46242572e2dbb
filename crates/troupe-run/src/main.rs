//! The `troupe` binary: all of it lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    troupe_run::cli::main()
}
