//! Parse + check of a large playbook: issue 7 wants 10 000 tasks under 100 ms, because
//! `troupe check` runs on every edit and `troupe run` loads before connecting to any
//! host. The playbook is generated (the same shape as the fan-out bench's workload:
//! directories, inline files, templates, guarded commands, with `when`, `loop`,
//! `register` and `{{ }}` arguments) and checked against a registry of the four modules
//! it uses, declared here because the DSL crate must not depend on troupe-run.
//!
//! Run: `cargo bench -p troupe-dsl --bench parse` (or `cargo xtask bench --micro`).

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use troupe_dsl::registry::{ArgKind, ArgSpec, ModuleSpec};
use troupe_dsl::{LoadOptions, parse_playbook_str};

const fn req(a: ArgSpec) -> ArgSpec {
    ArgSpec { required: true, ..a }
}
const fn pos(a: ArgSpec) -> ArgSpec {
    ArgSpec {
        positional: true,
        ..a
    }
}

static FILE_ARGS: &[ArgSpec] = &[
    req(pos(ArgSpec::new("path", ArgKind::Path, "Path."))),
    ArgSpec::new(
        "state",
        ArgKind::Enum(&["directory", "file", "absent", "link", "touch"]),
        "State.",
    ),
    ArgSpec::new("mode", ArgKind::Mode, "Mode."),
    ArgSpec::new("owner", ArgKind::String, "Owner."),
    ArgSpec::new("group", ArgKind::String, "Group."),
];
static COPY_ARGS: &[ArgSpec] = &[
    ArgSpec::new("content", ArgKind::String, "Content."),
    req(ArgSpec::new("dest", ArgKind::Path, "Destination.")),
    ArgSpec::new("mode", ArgKind::Mode, "Mode."),
];
static TEMPLATE_ARGS: &[ArgSpec] = &[
    req(pos(ArgSpec::new("src", ArgKind::Path, "Template."))),
    req(ArgSpec::new("dest", ArgKind::Path, "Destination.")),
    ArgSpec::new("mode", ArgKind::Mode, "Mode."),
];
static COMMAND_ARGS: &[ArgSpec] = &[
    req(pos(ArgSpec::new("cmd", ArgKind::String, "Command line."))),
    ArgSpec::new("creates", ArgKind::Path, "Guard."),
    ArgSpec::new("env", ArgKind::Map, "Environment."),
];

const fn module(name: &'static str, args: &'static [ArgSpec]) -> ModuleSpec {
    ModuleSpec {
        name,
        summary: "",
        doc: "",
        args,
        one_of: &[],
        example: "",
    }
}

static MODULES: &[ModuleSpec] = &[
    module("file", FILE_ARGS),
    module("copy", COPY_ARGS),
    module("template", TEMPLATE_ARGS),
    module("command", COMMAND_ARGS),
];

/// A playbook of `tasks` tasks in 10 plays, cycling through the four modules.
fn playbook(tasks: usize) -> String {
    let mut s = String::with_capacity(tasks * 120);
    let plays = 10;
    for p in 0..plays {
        writeln!(s, "play \"bench {p}\" hosts=all {{").unwrap();
        writeln!(s, "    vars {{ base \"/srv/bench/{p}\"; marker_count 3 }}").unwrap();
        for t in (p * tasks / plays)..((p + 1) * tasks / plays) {
            match t % 5 {
                0 => writeln!(
                    s,
                    "    task \"dir {t}\" {{\n        file \"{{{{ base }}}}/d{t}\" state=\"directory\" mode=0o755\n    }}"
                ),
                1 => writeln!(
                    s,
                    "    task \"file {t}\" tags=\"files\" {{\n        copy content=\"line {t}\\n\" dest=\"{{{{ base }}}}/f{t}.conf\" mode=0o644\n    }}"
                ),
                2 => writeln!(
                    s,
                    "    task \"template {t}\" when=\"inventory_hostname != 'none'\" {{\n        template \"bench.conf.j2\" dest=\"{{{{ base }}}}/t{t}.conf\"\n    }}"
                ),
                3 => writeln!(
                    s,
                    "    task \"guarded {t}\" register=\"r{t}\" {{\n        command \"touch {{{{ base }}}}/m{t}\" creates=\"{{{{ base }}}}/m{t}\" {{\n            env {{ LANG \"C\" }}\n        }}\n    }}"
                ),
                _ => writeln!(
                    s,
                    "    task \"loop {t}\" loop=\"{{{{ range(marker_count) | list }}}}\" {{\n        file \"{{{{ base }}}}/l{t}-{{{{ item }}}}\" state=\"touch\"\n    }}"
                ),
            }
            .unwrap();
        }
        writeln!(s, "}}").unwrap();
    }
    s
}

fn parse_and_check(c: &mut Criterion) {
    let text = playbook(10_000);
    // Fail loudly (not inside the timing loop) if the generated text stops being valid.
    let pb = parse_playbook_str(&text, "bench.kdl", MODULES, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("the generated playbook does not check: {e:?}"));
    let count: usize = pb.plays.iter().map(|p| p.tasks.len()).sum();
    assert_eq!(count, 10_000, "the generated playbook should hold 10 000 tasks");

    let mut group = c.benchmark_group("dsl");
    group.throughput(Throughput::Elements(10_000));
    group.sample_size(20);
    group.bench_function("parse+check 10000 tasks", |b| {
        b.iter(|| {
            parse_playbook_str(black_box(&text), "bench.kdl", MODULES, &LoadOptions::default())
                .expect("checked above")
        })
    });
    group.finish();
}

criterion_group!(benches, parse_and_check);
criterion_main!(benches);
