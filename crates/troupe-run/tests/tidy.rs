//! Checks as tests: generated files must match what generates them.

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
