//! Data-driven checker tests: every `tests/data/ok/*.kdl` loads cleanly and its decoded
//! model matches the snapshot beside it; every `tests/data/err/*.kdl` fails and the
//! rendered report (what a user sees) matches the snapshot beside it.
//!
//! The file name says what it is: `inventory-*`, `playbook-*` (checked against
//! `tests/data/inventory.kdl` too) or `vars-*`. Refresh snapshots with
//! `INSTA_UPDATE=always INSTA_FORCE_PASS=1 cargo test -p troupe-dsl` and review the diff.

use std::fmt::Write;
use std::path::Path;

use troupe_dsl::{Inventory, Loop, Playbook, Task};

use crate::{data_dir, kdl_files, opts, registry::MODULES, render};

enum Kind {
    Inventory,
    Playbook,
    Vars,
}

fn kind(path: &Path) -> Kind {
    let name = path.file_name().unwrap().to_str().unwrap();
    if name.starts_with("inventory") {
        Kind::Inventory
    } else if name.starts_with("playbook") {
        Kind::Playbook
    } else if name.starts_with("vars") {
        Kind::Vars
    } else {
        panic!("{name}: data files are named inventory-*, playbook-* or vars-*")
    }
}

fn inventory() -> Inventory {
    troupe_dsl::load_inventory(&data_dir().join("inventory.kdl")).unwrap_or_else(|r| panic!("{}", render(&r)))
}

/// Loads a data file the way `troupe check` would; the text is the model summary or
/// the rendered report.
fn load(path: &Path) -> Result<String, String> {
    match kind(path) {
        Kind::Inventory => troupe_dsl::load_inventory(path).map(|i| inventory_summary(&i)),
        Kind::Vars => troupe_dsl::load_vars_file_with_secrets(path).map(|(v, secrets)| {
            let mut out = serde_json::to_string_pretty(&v).unwrap() + "\n";
            if !secrets.is_empty() {
                let _ = writeln!(out, "secret_vars: {secrets:?}");
            }
            out
        }),
        Kind::Playbook => troupe_dsl::load_playbook(path, MODULES, &opts()).and_then(|pb| {
            troupe_dsl::check_against_inventory(&pb, &inventory())?;
            Ok(playbook_summary(&pb))
        }),
    }
    .map_err(|r| render(&r))
}

fn snapshot(dir: &str, name: &str, text: &str) {
    insta::with_settings!({
        snapshot_path => format!("../data/{dir}"),
        prepend_module_to_snapshot => false,
        omit_expression => true,
    }, {
        insta::assert_snapshot!(name.to_string(), text);
    });
}

#[test]
fn ok_files_check_clean() {
    let files = kdl_files(&data_dir().join("ok"));
    assert!(files.len() >= 5, "expected the ok/ corpus");
    for path in files {
        let name = path.file_stem().unwrap().to_str().unwrap();
        match load(&path) {
            Ok(summary) => snapshot("ok", name, &summary),
            Err(report) => panic!("{} should check clean:\n{report}", path.display()),
        }
    }
}

#[test]
fn err_files_report_problems() {
    let files = kdl_files(&data_dir().join("err"));
    assert!(files.len() >= 10, "expected the err/ corpus");
    for path in files {
        let name = path.file_stem().unwrap().to_str().unwrap();
        match load(&path) {
            Ok(_) => panic!("{} should fail to check", path.display()),
            Err(report) => snapshot("err", name, &report),
        }
    }
}

pub fn inventory_summary(inv: &Inventory) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "defaults: {:?}", inv.defaults);
    let _ = writeln!(out, "vars: {}", json(&inv.vars));
    for g in inv.groups.values() {
        let _ = writeln!(
            out,
            "group {} hosts={:?} children={:?} vars={} (line {})",
            g.name,
            g.hosts,
            g.children,
            json(&g.vars),
            g.loc.line
        );
    }
    for h in inv.hosts.values() {
        let _ = writeln!(
            out,
            "host {} address={:?} groups={:?} (line {})",
            h.name, h.address, h.groups, h.loc.line
        );
        let _ = writeln!(out, "  conn: {:?}", h.conn);
        let _ = writeln!(out, "  host_vars: {}", json(&inv.host_vars(&h.name)));
    }
    match &inv.implicit_localhost {
        Some(h) => {
            let _ = writeln!(out, "implicit localhost: {:?}", h.conn);
        }
        None => out.push_str("localhost is defined\n"),
    }
    if !inv.secret_vars.is_empty() {
        let _ = writeln!(out, "secret_vars: {:?}", inv.secret_vars);
    }
    out
}

pub fn playbook_summary(pb: &Playbook) -> String {
    let mut out = String::new();
    for play in &pb.plays {
        let _ = writeln!(
            out,
            "play {:?} hosts={:?} serial={:?} max_fail_percent={:?} (line {})",
            play.name, play.hosts.terms, play.serial, play.max_fail_percent, play.loc.line
        );
        let _ = writeln!(out, "  vars: {}", json(&play.vars));
        let dirs: Vec<String> = play.search_dirs.iter().map(|d| d.display().to_string()).collect();
        let _ = writeln!(out, "  search_dirs: {dirs:?}");
        for t in &play.tasks {
            task_summary(&mut out, "task", t);
        }
        for t in &play.handlers {
            task_summary(&mut out, "handler", t);
        }
    }
    if !pb.secret_vars.is_empty() {
        let _ = writeln!(out, "secret_vars: {:?}", pb.secret_vars);
    }
    out
}

fn task_summary(out: &mut String, kind: &str, t: &Task) {
    let _ = writeln!(out, "  {kind} {:?} at {} module={}", t.name, t.loc, t.module);
    for (name, arg) in &t.args {
        if arg.loc.file == t.loc.file {
            let _ = writeln!(out, "    {name} = {} (col {})", arg.value, arg.loc.column);
        } else {
            // from a `module-defaults` block in another file
            let _ = writeln!(out, "    {name} = {} (at {})", arg.value, arg.loc);
        }
    }
    let mut keywords = Vec::new();
    if let Some(e) = &t.when {
        keywords.push(format!("when={:?}", e.src));
    }
    match &t.loop_ {
        Some(Loop::Items(items)) => {
            keywords.push(format!("loop={}", serde_json::Value::Array(items.clone())))
        }
        Some(Loop::Expr(e)) => keywords.push(format!("loop=expr {:?}", e.src)),
        None => {}
    }
    if t.loop_var != "item" {
        keywords.push(format!("loop_var={}", t.loop_var));
    }
    if let Some(r) = &t.register {
        keywords.push(format!("register={r}"));
    }
    if !t.notify.is_empty() {
        keywords.push(format!("notify={:?}", t.notify));
    }
    if !t.tags.is_empty() {
        keywords.push(format!("tags={:?}", t.tags));
    }
    if let Some(e) = &t.changed_when {
        keywords.push(format!("changed_when={:?}", e.src));
    }
    if let Some(e) = &t.failed_when {
        keywords.push(format!("failed_when={:?}", e.src));
    }
    if let Some(e) = &t.until {
        keywords.push(format!("until={:?}", e.src));
    }
    if t.retries != 0 {
        keywords.push(format!("retries={} delay={:?}", t.retries, t.delay));
    }
    for (flag, name) in [
        (t.ignore_errors, "ignore_errors"),
        (t.no_log, "no_log"),
        (t.run_once, "run_once"),
    ] {
        if flag {
            keywords.push(name.to_string());
        }
    }
    if let Some(d) = &t.delegate_to {
        keywords.push(format!("delegate_to={d}"));
    }
    if let Some(d) = &t.timeout {
        keywords.push(format!("timeout={d:?}"));
    }
    if !t.vars.is_empty() {
        keywords.push(format!("vars={}", json(&t.vars)));
    }
    if let Some(role) = &t.role {
        keywords.push(format!(
            "role={} dir={} defaults={} params={}",
            role.name,
            role.dir.display(),
            json(&role.defaults),
            json(&role.vars)
        ));
    }
    if !keywords.is_empty() {
        let _ = writeln!(out, "    {}", keywords.join(" "));
    }
}

fn json(v: &troupe_dsl::Vars) -> String {
    serde_json::to_string(v).unwrap()
}
