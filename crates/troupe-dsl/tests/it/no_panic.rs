//! No input may panic the loaders. cargo-fuzz needs a nightly toolchain (see `fuzz/`),
//! so this sweep runs everywhere instead: every data file, truncated at every byte (at
//! character boundaries, since the loaders take `&str`), with each line deleted in
//! turn, and with each line duplicated, goes through its loader; failures are rendered
//! the way `troupe check` shows them, which must not panic either. Each input also
//! checks that the fast KDL path builds exactly what `kdl` builds, or declines.

use std::path::{Path, PathBuf};

use crate::{data_dir, kdl_files, opts, registry::MODULES, render};

fn load(path: &Path, text: &str) {
    if let Err(e) = troupe_dsl::__fast_path_agrees_with_kdl(text) {
        panic!("the fast KDL path disagrees with kdl on {text:?}:\n{e}");
    }
    let name = path.to_str().unwrap();
    let file = path.file_name().unwrap().to_str().unwrap();
    let result = if file.starts_with("inventory") {
        troupe_dsl::parse_inventory_str(text, name).map(|inv| {
            // exercise what the engine calls on a loaded inventory, too
            for h in inv.hosts.keys() {
                let _ = inv.host_vars(h);
            }
            let _ = inv.select(&troupe_dsl::HostPattern::all());
        })
    } else if file.starts_with("vars") {
        troupe_dsl::parse_vars_str(text, name).map(|_| ())
    } else {
        troupe_dsl::parse_playbook_str(text, name, MODULES, &opts()).map(|_| ())
    };
    if let Err(report) = result {
        let _ = render(&report);
    }
}

fn corpus() -> Vec<PathBuf> {
    let mut files = kdl_files(&data_dir().join("ok"));
    files.extend(kdl_files(&data_dir().join("err")));
    files.push(data_dir().join("inventory.kdl"));
    files
}

/// Spreads the work over the machine's cores; the sweep is thousands of loads.
fn sweep(variants: impl Fn(&str) -> Vec<String> + Sync) {
    let files = corpus();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(8);
    std::thread::scope(|s| {
        for w in 0..workers {
            let files = &files;
            let variants = &variants;
            s.spawn(move || {
                for path in files {
                    let text = std::fs::read_to_string(path).unwrap();
                    for (i, v) in variants(&text).iter().enumerate() {
                        if i % workers == w {
                            load(path, v);
                        }
                    }
                }
            });
        }
    });
}

#[test]
fn truncated_files_do_not_panic() {
    sweep(|text| {
        (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .map(|i| text[..i].to_string())
            .collect()
    });
}

#[test]
fn files_with_a_line_deleted_or_doubled_do_not_panic() {
    sweep(|text| {
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::new();
        for i in 0..lines.len() {
            let mut deleted = lines.clone();
            deleted.remove(i);
            out.push(deleted.join("\n"));
            let mut doubled = lines.clone();
            doubled.insert(i, lines[i]);
            out.push(doubled.join("\n"));
        }
        out
    });
}

#[test]
fn odd_inputs_do_not_panic() {
    let odd = [
        "",
        "\u{feff}",
        "play",
        "play hosts=\"\"",
        "play hosts=all { task }",
        "play hosts=all { task { - } }",
        "play hosts=all { task { debug { - { - { - 1 } } } } }",
        "play hosts=all { include \"\" }",
        "play hosts=all { include \"/\" }",
        "play hosts=all { role \"\" }",
        "play hosts=\"::\" serial=\"%\" max-fail-percent=-1",
        "play hosts=\"[\" { task when=\"\" { debug \"{{\" } }",
        "play hosts=all { task delay=\"99999999999999999999d\" { debug } }",
        "play hosts=all { task loop=#null { (list)debug } }",
        "(map)play (list)hosts=all",
        "group a { group a }",
        "group a { group b { group c { group a } } }",
        "group b { group a }\ngroup a { group b }",
        "host \"\"",
        "host h port=0 connect-timeout=-1",
        "vars { x 1e400 }",
        "vars { x #nan; y #inf }",
        "vars { x 0x7fffffffffffffffffffffffffffffff }",
        "x /- y",
        "/* unterminated",
        "a \"\\u{110000}\"",
        "a r#\"raw\"#",
    ];
    for text in odd {
        for name in [
            "tests/data/ok/playbook-odd.kdl",
            "tests/data/ok/inventory-odd.kdl",
            "vars-odd.kdl",
        ] {
            load(Path::new(name), text);
        }
    }
}
