//! The troupe language: KDL playbooks and inventories decoded into a checked model.
//!
//! This crate reads the files it is given (and the roles and includes they name) and
//! nothing else: no network, no hosts. Every problem becomes a `miette` diagnostic with
//! the file, line and a label on the exact span, and one run reports all of them.
//!
//! Data flow: text → `kdl::KdlDocument` (stage one, `kdl` crate: syntax) → [`decode`]
//! into the [`model`] (stage two: meaning, with [`errors`] collected as it goes) → for
//! playbooks, checks against the module [`registry`] and, once an inventory is loaded,
//! [`check_against_inventory`]. The language itself is documented in
//! `docs/language.md`.
//!
//! Public entry points:
//! - [`load_inventory`] / [`parse_inventory_str`] → [`model::Inventory`], with
//!   [`model::Inventory::select`] for host patterns and
//!   [`model::Inventory::host_vars`] for merged inventory variables;
//! - [`load_playbook`] / [`parse_playbook_str`] → [`model::Playbook`];
//! - [`check_against_inventory`];
//! - [`load_vars_file`] / [`parse_vars_str`] (for `-e @vars.kdl`);
//! - [`parse_duration`].

mod args;
mod decode;
pub use args::holds_nul;
mod duration;
pub mod errors;
mod inventory;
pub mod model;
pub mod pattern;
mod playbook;
pub mod registry;
mod source;

use std::path::{Path, PathBuf};

pub use duration::parse_duration;
pub use errors::{DslError, Invalid};
pub use model::*;
pub use pattern::PatternError;
pub use registry::{ArgDefault, ArgKind, ArgSpec, ModuleSpec};

/// How playbooks find what they refer to.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Extra folders holding roles, searched in order after `roles/` next to the
    /// playbook.
    pub roles_path: Vec<PathBuf>,
}

/// Reads and checks an inventory file.
pub fn load_inventory(path: &Path) -> Result<Inventory, miette::Report> {
    let text = read_top(path, "inventory")?;
    inventory::decode(path, &text)
}

/// Checks inventory text; `name` is the file name shown in diagnostics.
pub fn parse_inventory_str(text: &str, name: &str) -> Result<Inventory, miette::Report> {
    inventory::decode(Path::new(name), text)
}

/// Reads and checks a playbook, its includes and roles, against the module registry.
pub fn load_playbook(
    path: &Path,
    modules: &[ModuleSpec],
    opts: &LoadOptions,
) -> Result<Playbook, miette::Report> {
    let text = read_top(path, "playbook")?;
    playbook::decode(path, &text, modules, opts)
}

/// Checks playbook text; `name` is the file name shown in diagnostics, and includes and
/// roles are looked up relative to its folder.
pub fn parse_playbook_str(
    text: &str,
    name: &str,
    modules: &[ModuleSpec],
    opts: &LoadOptions,
) -> Result<Playbook, miette::Report> {
    playbook::decode(Path::new(name), text, modules, opts)
}

/// Checks the parts of a playbook that need the inventory: every `hosts` pattern term
/// and every literal `delegate-to` must name a host or group (or `all`, `localhost`).
pub fn check_against_inventory(pb: &Playbook, inv: &Inventory) -> Result<(), miette::Report> {
    playbook::check_against_inventory(pb, inv)
}

/// Reads a vars file: a document of `name value` nodes (the shape rule of `vars`).
pub fn load_vars_file(path: &Path) -> Result<Vars, miette::Report> {
    let text = read_top(path, "vars file")?;
    inventory::decode_vars(path, &text)
}

/// [`load_vars_file`], also returning the names of the variables marked `(secret)`.
pub fn load_vars_file_with_secrets(
    path: &Path,
) -> Result<(Vars, indexmap::IndexSet<String>), miette::Report> {
    let text = read_top(path, "vars file")?;
    inventory::decode_vars_with_secrets(path, &text)
}

/// Checks vars-file text; `name` is the file name shown in diagnostics.
pub fn parse_vars_str(text: &str, name: &str) -> Result<Vars, miette::Report> {
    inventory::decode_vars(Path::new(name), text)
}

/// For troupe-dsl's own tests: checks that the fast KDL path agrees with `kdl`.
#[doc(hidden)]
pub fn __fast_path_agrees_with_kdl(text: &str) -> Result<(), String> {
    decode::fast::agrees_with_kdl(text)
}

fn read_top(path: &Path, what: &'static str) -> Result<String, miette::Report> {
    decode::read(path).map_err(|e| match e {
        decode::ReadError::Io(message) => miette::Report::new(DslError::Io {
            what,
            path: path.display().to_string(),
            message,
            span: None,
        }),
        decode::ReadError::NotUtf8(bad) => {
            let (file, error) = bad.problem(path, what);
            let mut problems = errors::Problems::default();
            let idx = problems.add_file(&file);
            problems.push(idx, error);
            match problems.finish(&path.display().to_string()) {
                Err(report) => report,
                Ok(()) => unreachable!("a problem was pushed"),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(report: &miette::Report) -> String {
        let mut out = String::new();
        miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
            .with_width(100)
            .render_report(&mut out, report.as_ref())
            .unwrap();
        out
    }

    #[test]
    fn a_playbook_that_is_not_utf8_is_located_at_its_first_bad_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("play.kdl");
        std::fs::write(
            &path,
            b"play \"x\" hosts=all {\n    task \"caf\xe9\" { debug msg=\"a\" }\n}\n",
        )
        .unwrap();
        let report = load_playbook(&path, &[], &LoadOptions::default()).unwrap_err();
        let text = rendered(&report);
        assert!(text.contains("troupe::dsl::not_utf8"), "{text}");
        assert!(
            text.contains("is not UTF-8: byte 0xe9 at line 2, column 14"),
            "{text}"
        );
        assert!(text.contains("play.kdl:2:14"), "the snippet is located: {text}");
    }

    #[test]
    fn an_included_file_that_is_not_utf8_is_reported_against_itself() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("play.kdl");
        std::fs::write(&path, "play \"x\" hosts=all {\n    include \"more.kdl\"\n}\n").unwrap();
        std::fs::write(dir.path().join("more.kdl"), b"// ok\n\xff\xfe task\n").unwrap();
        let report = load_playbook(&path, &[], &LoadOptions::default()).unwrap_err();
        let text = rendered(&report);
        assert!(text.contains("byte 0xff at line 2, column 1"), "{text}");
        assert!(text.contains("more.kdl:2:1"), "{text}");
    }

    #[test]
    fn inventories_and_vars_files_that_are_not_utf8_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.kdl");
        std::fs::write(&path, b"host a address=\"127.0.0.1\" // \xc3(\n").unwrap();
        let text = rendered(&load_inventory(&path).unwrap_err());
        assert!(
            text.contains("inventory") && text.contains("line 1, column 31"),
            "{text}"
        );
        let text = rendered(&load_vars_file(&path).unwrap_err());
        assert!(text.contains("vars file") && text.contains("byte 0xc3"), "{text}");
    }
}
