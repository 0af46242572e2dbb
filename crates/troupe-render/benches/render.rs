//! Rendering cost of the headline job's templates: the engine renders per host per
//! task, so a template render must stay far below an SSH round trip (~1 ms here vs
//! ~10-90 ms). Renders the repository's etcd templates (static pod, env file, systemd
//! unit, runit script) for the seed's three hosts, warm (the compiled template is
//! cached by the [`Renderer`], as in a run), plus a cold render through a new Renderer
//! to show what the cache saves, and one short `{{ }}` argument string.
//!
//! Run: `cargo bench -p troupe-render --bench render` (or `cargo xtask bench --micro`).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use indexmap::IndexMap;
use serde_json::{Value, json};
use troupe_render::{Context, Groups, HostVars, Renderer};

const NODES: [(&str, &str); 3] = [
    ("podc01", "10.1.1.201"),
    ("podc02", "10.1.1.202"),
    ("podc03", "10.1.1.203"),
];

const TEMPLATES: [&str; 4] = ["etcd.yaml.j2", "etcd.env.j2", "etcd.service.j2", "etcd.runit.j2"];

fn templates_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../templates")
}

/// One context per seed node, sharing `groups` and `hostvars` as the engine does.
fn contexts() -> Vec<Context> {
    let hostvars: HostVars = NODES
        .iter()
        .map(|(name, ip)| {
            let vars: IndexMap<String, Value> = [
                ("inventory_hostname", json!(name)),
                ("address", json!(ip)),
                ("etcd_version", json!("3.5.15")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
            (name.to_string(), vars)
        })
        .collect();
    let names: Vec<String> = NODES.iter().map(|(n, _)| n.to_string()).collect();
    let mut groups = Groups::new();
    groups.insert("etcd".into(), names.clone());
    groups.insert("all".into(), names);
    let groups = Arc::new(groups);
    let hostvars = Arc::new(hostvars);
    hostvars
        .values()
        .map(|vars| {
            Context::new(vars.clone())
                .with_groups(groups.clone())
                .with_hostvars(hostvars.clone())
        })
        .collect()
}

fn render(c: &mut Criterion) {
    let ctxs = contexts();
    let renderer = Renderer::new(vec![templates_dir()]);
    // Fail outside the timing loops if a template stops rendering.
    for t in TEMPLATES {
        for ctx in &ctxs {
            renderer
                .render_file(t, ctx)
                .unwrap_or_else(|e| panic!("{t}: {:?}", miette::Report::new(e)));
        }
    }

    let mut group = c.benchmark_group("render");
    for t in TEMPLATES {
        group.bench_function(format!("{t} x3 hosts (cached)"), |b| {
            b.iter(|| {
                for ctx in &ctxs {
                    black_box(renderer.render_file(black_box(t), ctx).expect("rendered above"));
                }
            })
        });
    }
    group.bench_function("etcd.yaml.j2 x3 hosts (new Renderer)", |b| {
        b.iter(|| {
            let fresh = Renderer::new(vec![templates_dir()]);
            for ctx in &ctxs {
                black_box(fresh.render_file("etcd.yaml.j2", ctx).expect("rendered above"));
            }
        })
    });
    group.bench_function("task argument string x3 hosts", |b| {
        b.iter(|| {
            for ctx in &ctxs {
                black_box(
                    renderer
                        .render_str(
                            black_box("/srv/bench/{{ inventory_hostname }}/{{ address }}.conf"),
                            ctx,
                        )
                        .expect("renders"),
                );
            }
        })
    });
    group.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
