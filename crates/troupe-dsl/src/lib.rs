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
pub use registry::{ArgKind, ArgSpec, ModuleSpec};

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
    decode::read(path).map_err(|message| {
        miette::Report::new(DslError::Io {
            what,
            path: path.display().to_string(),
            message,
            span: None,
        })
    })
}
