//! The troupe-dsl test binary: data-driven ok/err files, behaviour (precedence,
//! patterns, roles), and a no-panic sweep, against a small hand-made module registry.
//! The docs' examples are checked against the real registry, in troupe-run's
//! `tests/docs.rs`.

mod api;
mod data;
mod no_panic;

mod registry;

use std::path::{Path, PathBuf};

use miette::{GraphicalReportHandler, GraphicalTheme};

/// The report exactly as a user sees it, without colour, at a fixed width.
pub fn render(report: &miette::Report) -> String {
    let mut out = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut out, report.as_ref())
        .expect("rendering into a String cannot fail");
    out
}

/// `tests/data`, as a relative path so diagnostics name files the same on every machine
/// (cargo runs tests from the package folder).
pub fn data_dir() -> PathBuf {
    PathBuf::from("tests/data")
}

pub fn opts() -> troupe_dsl::LoadOptions {
    troupe_dsl::LoadOptions {
        roles_path: vec![data_dir().join("shared-roles")],
    }
}

/// The `.kdl` files directly in a folder, sorted.
pub fn kdl_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "kdl"))
        .collect();
    files.sort();
    files
}
