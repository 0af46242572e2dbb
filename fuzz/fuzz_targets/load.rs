//! Feeds arbitrary text to every troupe-dsl loader: none may panic, whatever the input.
//! The first byte picks the loader, so one corpus covers inventories, playbooks and vars
//! files; seed it with `../crates/troupe-dsl/tests/data/{ok,err}/*.kdl`. Every input
//! also checks that the fast KDL path agrees with the `kdl` parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use troupe_dsl::registry::{ArgKind, ArgSpec, ModuleSpec};

static ARGS: &[ArgSpec] = &[
    ArgSpec {
        positional: true,
        required: true,
        ..ArgSpec::new("cmd", ArgKind::String, "")
    },
    ArgSpec::new("mode", ArgKind::Mode, ""),
    ArgSpec::new("delay", ArgKind::Duration, ""),
    ArgSpec::new("items", ArgKind::List, ""),
    ArgSpec::new("env", ArgKind::Map, ""),
    ArgSpec::new("count", ArgKind::Int, ""),
    ArgSpec::new("flag", ArgKind::Bool, ""),
    ArgSpec::new("state", ArgKind::Enum(&["a", "b"]), ""),
    ArgSpec::new("any", ArgKind::Any, ""),
    ArgSpec::new("path", ArgKind::Path, ""),
];

static DEBUG_ARGS: &[ArgSpec] = &[ArgSpec {
    positional: true,
    ..ArgSpec::new("msg", ArgKind::String, "")
}];

static MODULES: &[ModuleSpec] = &[
    ModuleSpec {
        name: "shell",
        summary: "",
        doc: "",
        args: ARGS,
        one_of: &[&["path", "any"]],
        example: "",
    },
    ModuleSpec {
        name: "debug",
        summary: "",
        doc: "",
        args: DEBUG_ARGS,
        one_of: &[],
        example: "",
    },
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    // the fast KDL path must build exactly what kdl builds, or decline
    if let Err(e) = troupe_dsl::__fast_path_agrees_with_kdl(&text) {
        panic!("fast path disagrees with kdl: {e}");
    }
    let opts = troupe_dsl::LoadOptions::default();
    match which % 3 {
        0 => {
            if let Ok(inv) = troupe_dsl::parse_inventory_str(&text, "fuzz/inventory.kdl") {
                let _ = inv.select(&troupe_dsl::HostPattern::all());
                for h in inv.hosts.keys() {
                    let _ = inv.host_vars(h);
                }
            }
        }
        1 => {
            let _ = troupe_dsl::parse_playbook_str(&text, "fuzz/playbook.kdl", MODULES, &opts);
        }
        _ => {
            let _ = troupe_dsl::parse_vars_str(&text, "fuzz/vars.kdl");
        }
    }
});
