//! Each host's variables for one task, merged in the documented precedence (lowest
//! first, see docs/language.md):
//!
//! magic defaults (`address`) < role defaults < inventory vars < group vars < host vars
//! < play vars < role params < task vars < registered results < extra vars (`-e`)
//! < magic names that must not be shadowed (`inventory_hostname`, `group_names`, ...).
//!
//! The inventory part (`Inventory::host_vars`) is computed once per host per run; the
//! rest is layered per task. Values that are themselves templates (`pki_dir
//! "{{ base }}/pki"`) are rendered against the merged vars, like Ansible's lazy vars.

use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;
use troupe_dsl::model::{Host, Inventory, Play, Task, Vars};
use troupe_render::{Context, RenderError, Renderer};

/// The per-run shared parts of every context.
pub struct Shared {
    pub groups: Arc<IndexMap<String, Vec<String>>>,
    pub hostvars: Arc<IndexMap<String, IndexMap<String, Value>>>,
    pub extra: Vars,
    pub check_mode: bool,
}

impl Shared {
    pub fn new(inv: &Inventory, extra: Vars, check_mode: bool) -> Shared {
        let mut groups: IndexMap<String, Vec<String>> = IndexMap::new();
        groups.insert("all".into(), inv.hosts.keys().cloned().collect());
        for name in inv.groups.keys() {
            groups.insert(name.clone(), Vec::new());
        }
        for host in inv.hosts.values() {
            for g in &host.groups {
                groups.entry(g.clone()).or_default().push(host.name.clone());
            }
        }
        let hostvars = inv
            .hosts
            .values()
            .map(|h| (h.name.clone(), inventory_vars(inv, h)))
            .collect();
        Shared {
            groups: Arc::new(groups),
            hostvars: Arc::new(hostvars),
            extra,
            check_mode,
        }
    }

    pub fn context(&self, vars: Vars) -> Context {
        Context::new(vars)
            .with_groups(self.groups.clone())
            .with_hostvars(self.hostvars.clone())
    }
}

/// Inventory vars, group vars and host vars of `host`, with `address` and
/// `inventory_hostname` (what `hostvars[name]` shows).
pub fn inventory_vars(inv: &Inventory, host: &Host) -> Vars {
    let mut vars = Vars::new();
    vars.insert(
        "address".into(),
        Value::String(host.address.clone().unwrap_or_else(|| host.name.clone())),
    );
    vars.extend(inv.host_vars(&host.name));
    vars.insert("inventory_hostname".into(), Value::String(host.name.clone()));
    vars
}

/// All vars of `host` for `task` of `play`.
pub fn task_vars(
    shared: &Shared,
    host: &Host,
    play: &Play,
    task: &Task,
    registered: &Vars,
    play_hosts: &[String],
) -> Vars {
    let inv = shared.hostvars.get(&host.name);
    let mut vars = Vars::new();
    vars.insert(
        "address".into(),
        Value::String(host.address.clone().unwrap_or_else(|| host.name.clone())),
    );
    if let Some(role) = &task.role {
        extend(&mut vars, &role.defaults);
    }
    if let Some(inv) = inv {
        extend(&mut vars, inv);
    }
    extend(&mut vars, &play.vars);
    if let Some(role) = &task.role {
        extend(&mut vars, &role.vars);
    }
    extend(&mut vars, &task.vars);
    extend(&mut vars, registered);
    extend(&mut vars, &shared.extra);
    vars.insert("inventory_hostname".into(), Value::String(host.name.clone()));
    vars.insert(
        "inventory_hostname_short".into(),
        Value::String(host.name.split('.').next().unwrap_or(&host.name).to_string()),
    );
    vars.insert("group_names".into(), Value::from(host.groups.clone()));
    vars.insert("play_hosts".into(), Value::from(play_hosts.to_vec()));
    vars.insert("troupe_check_mode".into(), Value::Bool(shared.check_mode));
    vars
}

fn extend(into: &mut Vars, from: &Vars) {
    for (k, v) in from {
        into.insert(k.clone(), v.clone());
    }
}

fn is_templated(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("{{") || s.contains("{%"),
        Value::Array(items) => items.iter().any(is_templated),
        Value::Object(map) => map.values().any(is_templated),
        _ => false,
    }
}

/// Names troupe sets itself: data, never templates.
const MAGIC: &[&str] = &[
    "inventory_hostname",
    "inventory_hostname_short",
    "group_names",
    "play_hosts",
    "troupe_check_mode",
];

/// Every string inside a value.
fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Render the values that are templates *as written*, each exactly once, against the
/// merged vars, in the order their references need (`a` → `b` → `c` chains are fine,
/// circles are an error).
///
/// What rendering produces is data: a value that took `{{` from another variable (a
/// password that happens to contain it), a registered result (`registered`, a command's
/// output) and troupe's own names are never rendered, so they cannot fail as templates
/// or run as code. A value that fails is reported naming its variable.
pub fn resolve(
    shared: &Shared,
    renderer: &Renderer,
    mut vars: Vars,
    registered: &Vars,
) -> Result<Vars, RenderError> {
    let is_data =
        |k: &str| MAGIC.contains(&k) || (registered.contains_key(k) && !shared.extra.contains_key(k));
    let mut pending: IndexMap<String, Vec<String>> = IndexMap::new();
    for (k, v) in &vars {
        if is_data(k) || !is_templated(v) {
            continue;
        }
        let mut texts = Vec::new();
        strings(v, &mut texts);
        let mut refs: Vec<String> = Vec::new();
        for t in texts {
            // a text that does not parse fails below, naming the variable
            refs.extend(renderer.referenced_vars(t).unwrap_or_default());
        }
        // `path "{{ path }}/x"` reads the value as merged, not itself once rendered
        refs.retain(|r| r != k);
        pending.insert(k.clone(), refs);
    }
    while !pending.is_empty() {
        let ready: Vec<String> = pending
            .iter()
            .filter(|(_, refs)| !refs.iter().any(|r| pending.contains_key(r)))
            .map(|(k, _)| k.clone())
            .collect();
        if ready.is_empty() {
            let names: Vec<String> = pending.keys().map(|k| format!("`{k}`")).collect();
            return Err(RenderError::Cycle {
                names: names.join(", "),
            });
        }
        let ctx = shared.context(vars.clone());
        for key in ready {
            let rendered = renderer
                .render_value(&vars[&key], &ctx)
                .map_err(|e| RenderError::InVar {
                    name: key.clone(),
                    cause: Box::new(e),
                })?;
            vars.insert(key.clone(), rendered);
            pending.shift_remove(&key);
        }
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;
    use troupe_dsl::model::{ConnSettings, HostPattern, Loc, RoleRef};

    pub(crate) fn loc() -> Loc {
        Loc {
            file: Arc::new(PathBuf::from("site.kdl")),
            line: 1,
            column: 1,
            span: (0, 0).into(),
        }
    }

    fn vars(pairs: &[(&str, Value)]) -> Vars {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn precedence_from_role_defaults_to_extra_vars() {
        let host = Host {
            name: "podc01".into(),
            address: Some("127.0.1.1".into()),
            conn: ConnSettings::default(),
            vars: vars(&[("x", json!("host")), ("h", json!("host"))]),
            groups: vec!["etcd".into()],
            loc: loc(),
        };
        let mut inv = Inventory::default();
        inv.hosts.insert("podc01".into(), host.clone());
        inv.vars = vars(&[("x", json!("inventory")), ("i", json!("inventory"))]);
        let play = Play {
            name: "p".into(),
            hosts: HostPattern {
                raw: "all".into(),
                terms: vec![],
            },
            serial: None,
            max_fail_percent: None,
            vars: vars(&[("x", json!("play")), ("p", json!("play"))]),
            tasks: vec![],
            handlers: vec![],
            search_dirs: vec![],
            loc: loc(),
        };
        let role = Arc::new(RoleRef {
            name: "r".into(),
            dir: PathBuf::from("roles/r"),
            defaults: vars(&[
                ("x", json!("default")),
                ("d", json!("default")),
                ("i", json!("default")),
            ]),
            vars: vars(&[("x", json!("role param"))]),
        });
        let task = Task {
            name: "t".into(),
            module: "debug".into(),
            args: IndexMap::new(),
            when: None,
            loop_: None,
            loop_var: "item".into(),
            register: None,
            notify: vec![],
            tags: vec![],
            changed_when: None,
            failed_when: None,
            ignore_errors: false,
            retries: 0,
            delay: std::time::Duration::ZERO,
            until: None,
            no_log: false,
            run_once: false,
            delegate_to: None,
            timeout: None,
            vars: vars(&[("t", json!("task"))]),
            role: Some(role),
            loc: loc(),
        };
        let shared = Shared::new(&inv, vars(&[("e", json!("extra"))]), false);
        let v = task_vars(
            &shared,
            &host,
            &play,
            &task,
            &vars(&[("t", json!("registered"))]),
            &["podc01".into()],
        );
        assert_eq!(v["x"], "role param");
        assert_eq!(v["d"], "default");
        assert_eq!(v["p"], "play");
        assert_eq!(v["h"], "host");
        assert_eq!(v["t"], "registered");
        assert_eq!(v["e"], "extra");
        assert_eq!(v["address"], "127.0.1.1");
        assert_eq!(v["inventory_hostname"], "podc01");
        assert_eq!(shared.groups["etcd"], ["podc01"]);
        assert_eq!(shared.groups["all"], ["podc01"]);
    }

    fn shared() -> Shared {
        Shared {
            groups: Arc::new(IndexMap::new()),
            hostvars: Arc::new(IndexMap::new()),
            extra: Vars::new(),
            check_mode: false,
        }
    }

    #[test]
    fn values_are_rendered_once_as_written_and_what_they_take_is_data() {
        let r = Renderer::new(vec![]);
        let all = vars(&[
            ("password", json!("{% raw %}pa{{ss%}w{#rd{% endraw %}")),
            ("dsn", json!("db://u:{{ password }}@127.0.0.1")),
            ("token", json!("{{ gen.stdout }}")),
            ("a", json!("{{ b }}/a")),
            ("b", json!("{{ c }}/b")),
            ("c", json!("c")),
            ("out", json!({"stdout": "{{ 7 * 7 }}"})),
        ]);
        let mut all = all;
        let registered = vars(&[
            ("out", json!({"stdout": "{{ 7 * 7 }}"})),
            ("gen", json!({"stdout": "x{{y}}%}z"})),
        ]);
        all.extend(registered.clone());
        let got = resolve(&shared(), &r, all, &registered).unwrap();
        // What a value takes from another variable is data: the password's `{{` (written
        // raw) and a generated token's are text in every value that uses them.
        assert_eq!(got["password"], json!("pa{{ss%}w{#rd"));
        assert_eq!(got["dsn"], json!("db://u:pa{{ss%}w{#rd@127.0.0.1"));
        assert_eq!(got["token"], json!("x{{y}}%}z"));
        assert_eq!(got["a"], json!("c/b/a"));
        assert_eq!(
            got["out"],
            json!({"stdout": "{{ 7 * 7 }}"}),
            "registered output never runs"
        );
    }

    #[test]
    fn a_value_that_fails_names_its_variable_and_circles_are_errors() {
        let r = Renderer::new(vec![]);
        let err = resolve(
            &shared(),
            &r,
            vars(&[("broken", json!("x {{ nope"))]),
            &Vars::new(),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("in the value of variable `broken`: "),
            "{err}"
        );
        let err = resolve(
            &shared(),
            &r,
            vars(&[("x", json!("{{ y }}")), ("y", json!("{{ x }}"))]),
            &Vars::new(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "variables refer to each other in a circle: `x`, `y`"
        );
    }
}
