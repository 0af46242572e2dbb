//! The seed's three nodes as a render context, shared by the template tests.

use std::path::PathBuf;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::{Value, json};
use troupe_render::{Context, Groups, HostVars, Renderer};

pub const NODES: [(&str, &str); 3] = [
    ("podc01", "10.1.1.201"),
    ("podc02", "10.1.1.202"),
    ("podc03", "10.1.1.203"),
];

/// The repository's top-level `templates/` directory.
pub fn templates_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../templates")
}

pub fn renderer() -> Renderer {
    Renderer::new(vec![templates_dir()])
}

pub fn vars(pairs: &[(&str, Value)]) -> IndexMap<String, Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// hostvars and groups for hosts given as (name, vars); every host is in group `etcd`.
pub fn inventory(hosts: &[(&str, IndexMap<String, Value>)]) -> (Arc<Groups>, Arc<HostVars>) {
    let mut groups = Groups::new();
    groups.insert("etcd".into(), hosts.iter().map(|(h, _)| h.to_string()).collect());
    groups.insert("all".into(), hosts.iter().map(|(h, _)| h.to_string()).collect());
    let hostvars = hosts
        .iter()
        .map(|(h, v)| (h.to_string(), v.clone()))
        .collect::<HostVars>();
    (Arc::new(groups), Arc::new(hostvars))
}

/// The seed's podc01..03 with the vars the engine would give each host.
pub fn seed_contexts() -> Vec<(String, Context)> {
    let hosts: Vec<(&str, IndexMap<String, Value>)> = NODES
        .iter()
        .map(|(name, ip)| {
            (
                *name,
                vars(&[
                    ("inventory_hostname", json!(name)),
                    ("address", json!(ip)),
                    ("etcd_version", json!("3.5.15")),
                ]),
            )
        })
        .collect();
    let (groups, hostvars) = inventory(&hosts);
    hosts
        .iter()
        .map(|(name, v)| {
            (
                name.to_string(),
                Context::new(v.clone())
                    .with_groups(groups.clone())
                    .with_hostvars(hostvars.clone()),
            )
        })
        .collect()
}
