//! Every ```kdl example in the docs checks clean against the real module registry (not
//! a test double that can drift from it): the reference can only show what `troupe
//! check` accepts.
//!
//! docs/language.md: each block's first line names its file (`// tasks/x.kdl`);
//! the test writes task files, role files and vars files into a temporary folder, then
//! loads every inventory, vars file and playbook (playbooks also against the reference's
//! `inventory.kdl`), and finally checks that every task and role file was used by some
//! playbook, so none of them escapes checking. Every module's `example` (what
//! docs/modules.md shows) and the task snippets of the other docs are checked inside a
//! play of their own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use troupe_dsl::registry::ModuleSpec;

fn render(report: &miette::Report) -> String {
    format!("{report:?}")
}

fn specs() -> Vec<ModuleSpec> {
    troupe_run::modules::specs()
}

#[derive(PartialEq)]
enum Kind {
    Inventory,
    Vars,
    /// Task, handler and role files: checked through the playbooks that use them.
    Support,
    Playbook,
}

fn kind(path: &str) -> Kind {
    let name = Path::new(path).file_name().unwrap().to_str().unwrap();
    if path.starts_with("inventory") {
        Kind::Inventory
    } else if path.starts_with("vars") {
        Kind::Vars
    } else if path.starts_with("tasks/") || path.starts_with("roles/") || name == "tasks.kdl" {
        Kind::Support
    } else {
        Kind::Playbook
    }
}

fn blocks(markdown: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```kdl" {
            continue;
        }
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let first = body.first().copied().unwrap_or_default();
        let path = first
            .strip_prefix("// ")
            .filter(|p| p.ends_with(".kdl") && !p.contains(' '))
            .unwrap_or_else(|| panic!("a kdl block must start with `// FILE.kdl`, found {first:?}"));
        out.push((path.to_string(), body.join("\n") + "\n"));
    }
    out
}

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn language_reference_examples_check_clean() {
    let markdown = std::fs::read_to_string(docs().join("language.md")).expect("docs/language.md");
    let blocks = blocks(&markdown);
    assert!(
        blocks.len() >= 20,
        "expected the reference's examples, found {}",
        blocks.len()
    );
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    };

    let mut support: BTreeMap<&str, &str> = BTreeMap::new();
    for (path, text) in blocks.iter().filter(|(p, _)| kind(p) == Kind::Support) {
        if let Some(old) = support.insert(path, text) {
            assert_eq!(old, text, "{path} is shown twice with different content");
        }
        write(path, text);
    }

    let mut failures = Vec::new();
    let (_, inventory_text) = blocks
        .iter()
        .find(|(p, _)| p == "inventory.kdl")
        .expect("an inventory.kdl example");
    let inventory = troupe_dsl::load_inventory(&write("inventory.kdl", inventory_text))
        .unwrap_or_else(|r| panic!("inventory.kdl:\n{}", render(&r)));
    let specs = specs();
    let mut used = Vec::new();
    for (path, text) in &blocks {
        let file = write(path, text);
        let result = match kind(path) {
            Kind::Support => continue,
            Kind::Inventory => troupe_dsl::load_inventory(&file).map(|_| ()),
            Kind::Vars => troupe_dsl::load_vars_file(&file).map(|_| ()),
            Kind::Playbook => troupe_dsl::load_playbook(&file, &specs, &Default::default()).and_then(|pb| {
                used.extend(pb.sources.files.keys().map(|p| canonical(p)));
                troupe_dsl::check_against_inventory(&pb, &inventory)
            }),
        };
        if let Err(report) = result {
            failures.push(format!("{path}:\n{}", render(&report)));
        }
    }
    assert!(
        failures.is_empty(),
        "examples in docs/language.md fail to check:\n{}",
        failures.join("\n")
    );
    for path in support.keys() {
        let p = canonical(&dir.path().join(path));
        assert!(
            used.contains(&p),
            "{path} is not used by any playbook example, so it is never checked"
        );
    }
}

/// Check task snippets (`task`/`handler` nodes, as the module reference and the guides
/// show them) inside a play, against the real registry; `what` names each snippet.
fn check_snippets(snippets: &[(String, String)]) -> Vec<String> {
    let specs = specs();
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.kdl");
    std::fs::write(
        &inventory,
        "group etcd {\n    host podc01 address=\"127.0.0.1\"\n}\n",
    )
    .unwrap();
    let inventory = troupe_dsl::load_inventory(&inventory).unwrap_or_else(|r| panic!("{}", render(&r)));
    let mut failures = Vec::new();
    for (i, (what, snippet)) in snippets.iter().enumerate() {
        let file = dir.path().join(format!("snippet-{i}.kdl"));
        std::fs::write(&file, format!("play \"Example\" hosts=all {{\n{snippet}\n}}\n")).unwrap();
        let result = troupe_dsl::load_playbook(&file, &specs, &Default::default())
            .and_then(|pb| troupe_dsl::check_against_inventory(&pb, &inventory));
        if let Err(report) = result {
            failures.push(format!("{what}:\n{}", render(&report)));
        }
    }
    failures
}

/// The `example` of every module (rendered into docs/modules.md) is a task the checker
/// accepts, with the real module's arguments.
#[test]
fn module_examples_check_clean() {
    let snippets: Vec<(String, String)> = troupe_run::modules::specs()
        .iter()
        .map(|s| (format!("module `{}`", s.name), s.example.to_string()))
        .collect();
    assert!(snippets.len() >= 15, "found only {} modules", snippets.len());
    let failures = check_snippets(&snippets);
    assert!(
        failures.is_empty(),
        "module examples fail to check:\n{}",
        failures.join("\n")
    );
}

/// The ```kdl task snippets of the guides other than the language reference (which
/// shows whole files and is checked above) and the generated module reference.
#[test]
fn guide_examples_check_clean() {
    let mut snippets = Vec::new();
    for entry in std::fs::read_dir(docs()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !name.ends_with(".md") || name == "language.md" || name == "modules.md" {
            continue;
        }
        let markdown = std::fs::read_to_string(&path).unwrap();
        let mut lines = markdown.lines();
        while lines.by_ref().any(|l| l.trim() == "```kdl") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            snippets.push((format!("docs/{name}"), body.join("\n")));
        }
    }
    assert!(
        !snippets.is_empty(),
        "no ```kdl examples outside the language reference"
    );
    let failures = check_snippets(&snippets);
    assert!(
        failures.is_empty(),
        "examples in docs/ fail to check:\n{}",
        failures.join("\n")
    );
}
