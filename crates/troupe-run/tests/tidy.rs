//! Checks as tests: generated files must match what generates them, and every source
//! file says why it exists.

use std::path::PathBuf;

#[test]
fn module_reference_is_fresh() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/modules.md");
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = troupe_run::modules::reference_markdown();
    assert!(
        on_disk == generated,
        "docs/modules.md is stale or missing: run `cargo xtask codegen` and commit the result"
    );
}

#[test]
fn module_examples_name_their_module() {
    for spec in troupe_run::modules::specs() {
        assert!(
            spec.example.contains(spec.name),
            "{}: example does not use the module",
            spec.name
        );
    }
}

/// `.rs` files under `dir`, skipping build output.
fn rust_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
}

/// A reader opening any file first learns what it is for: the first line is a `//!`.
#[test]
fn every_source_file_starts_with_a_doc_comment() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(files.len() > 50, "found only {} source files", files.len());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap().starts_with("//!"))
        .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not start with a `//!` comment saying why they exist:\n{}",
        missing.join("\n")
    );
}
