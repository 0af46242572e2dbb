//! `troupe doc modules` (hidden): print the module reference generated from the
//! registry. `cargo xtask codegen` runs it to write docs/modules.md, so xtask never has
//! to link the engine (and its protoc-built dependencies).

use std::process::ExitCode;

/// Print generated reference documentation.
#[derive(Debug, clap::Args)]
pub struct DocArgs {
    /// What to print: `modules` (the task module reference, Markdown).
    #[arg(value_parser = ["modules"])]
    pub what: String,
}

pub fn main(args: DocArgs) -> ExitCode {
    match args.what.as_str() {
        "modules" => {
            print!("{}", crate::modules::reference_markdown());
            ExitCode::SUCCESS
        }
        _ => ExitCode::from(2),
    }
}
