//! Inventories: which hosts exist, how to reach them, their groups and variables.
//!
//! ```kdl
//! defaults user=root port=22 identity="~/.ssh/id_ed25519"
//! vars { cluster_name "prod-a" }
//! group etcd {
//!     vars { etcd_data_dir "/var/lib/etcd" }
//!     host podc01 address="10.1.1.201" { vars { etcd_bootstrap #true } }
//!     host podc02 address="10.1.1.202"
//! }
//! group control-plane { host podc01 }
//! ```
//!
//! A host may appear in several groups: its first appearance defines it and later ones
//! refer to it (they may repeat, but not contradict, its address and settings). Groups
//! nest; a bare `group NAME` inside another group makes an existing (or later) group a
//! child. Decoding resolves each host's connection settings (defaults, then its groups
//! outermost first, then the host) and its group list once, so the engine never
//! re-derives them; [`Inventory::host_vars`] merges variables with the same ordering.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;

use crate::decode::Cx;
use crate::decode::value::vars_node;
use crate::errors::DslError;
use crate::model::{ConnKind, ConnSettings, Group, Host, Inventory, Loc, Vars};
use crate::source::SourceFile;

const TOP_NODES: &[&str] = &["defaults", "vars", "group", "host"];
const CONN_PROPS: &[&str] = &[
    "user",
    "port",
    "identity",
    "known-hosts",
    "jump",
    "connection",
    "connect-timeout",
    "command-timeout",
    "keepalive-interval",
    "keepalive-count",
];

/// Decodes inventory text; `path` names it in diagnostics.
pub(crate) fn decode(path: &Path, text: &str) -> Result<Inventory, miette::Report> {
    let file = Arc::new(SourceFile::new(path, text));
    let mut cx = Cx::new(file.clone());
    let inventory = cx.parse().map(|doc| Decoder::new(path).run(&mut cx, &doc));
    cx.problems.finish(&path.display().to_string())?;
    let mut inventory = inventory.expect("no problems means the document parsed");
    inventory.secret_vars = std::mem::take(&mut cx.secrets);
    Ok(inventory)
}

struct HostDraft {
    address: Option<String>,
    conn: ConnSettings,
    vars: Vars,
    /// First value and span of every property and variable, to spot contradictions.
    seen: HashMap<String, (KdlValue, SourceSpan)>,
    seen_vars: HashMap<String, SourceSpan>,
    loc: Loc,
    direct: Vec<usize>,
}

struct GroupDraft {
    group: Group,
    parents: Vec<usize>,
    /// Span of the appearance with properties or children; one is allowed.
    defined: Option<SourceSpan>,
}

struct Decoder {
    inv: Inventory,
    hosts: IndexMap<String, HostDraft>,
    groups: IndexMap<String, GroupDraft>,
    defaults_seen: Option<SourceSpan>,
    vars_seen: Option<SourceSpan>,
}

impl Decoder {
    fn new(path: &Path) -> Decoder {
        Decoder {
            inv: Inventory {
                path: path.to_path_buf(),
                ..Inventory::default()
            },
            hosts: IndexMap::new(),
            groups: IndexMap::new(),
            defaults_seen: None,
            vars_seen: None,
        }
    }

    fn run(mut self, cx: &mut Cx, doc: &KdlDocument) -> Inventory {
        for node in doc.nodes() {
            match node.name().value() {
                "defaults" => self.defaults(cx, node),
                "vars" => {
                    if once(cx, &mut self.vars_seen, node, "top-level `vars` block") {
                        let mut vars = Vars::new();
                        vars_node(cx, node, &mut vars);
                        self.inv.vars = vars;
                    }
                }
                "group" => self.group(cx, node, None),
                "host" => self.host(cx, node, None),
                _ => cx.unknown_node(node, "an inventory", TOP_NODES),
            }
        }
        self.finish(cx)
    }

    fn defaults(&mut self, cx: &mut Cx, node: &KdlNode) {
        if !once(cx, &mut self.defaults_seen, node, "`defaults` node") {
            return;
        }
        cx.extra_args(node, 0, "settings are properties: `defaults user=root port=22`");
        cx.no_children(node);
        let mut seen = Vec::new();
        for e in node.entries() {
            let Some(key) = e.name().map(|n| n.value()) else {
                continue;
            };
            if cx.repeated(&mut seen, key, e.span()) {
                continue;
            }
            if !conn_prop(cx, key, e, &mut self.inv.defaults) {
                cx.unknown_prop(
                    "defaults",
                    key,
                    e.name().map_or(e.span(), |n| n.span()),
                    CONN_PROPS,
                );
            }
        }
    }

    fn group(&mut self, cx: &mut Cx, node: &KdlNode, parent: Option<usize>) {
        cx.extra_args(node, 1, "settings are properties: `group etcd user=core { .. }`");
        let Some((name, name_span)) = cx.name_arg(node, "a group name", "`group etcd { host podc01 }`")
        else {
            return;
        };
        if !valid_name(cx, &name, name_span, "group") {
            return;
        }
        let bare = node.children().is_none() && node.entries().iter().all(|e| e.name().is_none());
        let idx = match self.groups.get_index_of(&name) {
            Some(i) => i,
            None => {
                let group = Group {
                    name: name.clone(),
                    hosts: vec![],
                    children: vec![],
                    vars: Vars::new(),
                    conn: ConnSettings::default(),
                    loc: cx.loc(node.span()),
                };
                self.groups
                    .insert_full(
                        name.clone(),
                        GroupDraft {
                            group,
                            parents: vec![],
                            defined: None,
                        },
                    )
                    .0
            }
        };
        if let Some(p) = parent {
            if self.is_ancestor_or_self(idx, p) {
                cx.error(DslError::GroupCycle {
                    name: name.clone(),
                    span: name_span,
                });
                return;
            }
            if !self.groups[idx].parents.contains(&p) {
                self.groups[idx].parents.push(p);
                self.groups[p].group.children.push(name.clone());
            }
        }
        if bare {
            return;
        }
        if let Some(first) = self.groups[idx].defined {
            cx.error(DslError::Duplicate {
                kind: "group",
                name,
                span: name_span,
                first: Some(first),
                help: Some("define a group once; elsewhere refer to it with a bare `group NAME`".into()),
            });
            return;
        }
        self.groups[idx].defined = Some(name_span);
        self.groups[idx].group.loc = cx.loc(node.span());

        let mut conn = ConnSettings::default();
        let mut seen = Vec::new();
        for e in node.entries() {
            let Some(key) = e.name().map(|n| n.value()) else {
                continue;
            };
            if cx.repeated(&mut seen, key, e.span()) {
                continue;
            }
            if !conn_prop(cx, key, e, &mut conn) {
                cx.unknown_prop("group", key, e.name().map_or(e.span(), |n| n.span()), CONN_PROPS);
            }
        }
        self.groups[idx].group.conn = conn;
        let mut vars_seen = None;
        for child in node.children().map(|c| c.nodes()).unwrap_or_default() {
            match child.name().value() {
                "vars" => {
                    if once(cx, &mut vars_seen, child, "`vars` block in a group") {
                        let mut vars = Vars::new();
                        vars_node(cx, child, &mut vars);
                        self.groups[idx].group.vars = vars;
                    }
                }
                "host" => self.host(cx, child, Some(idx)),
                "group" => self.group(cx, child, Some(idx)),
                _ => cx.unknown_node(child, "a group", &["vars", "host", "group"]),
            }
        }
    }

    fn is_ancestor_or_self(&self, candidate: usize, of: usize) -> bool {
        let mut stack = vec![of];
        let mut visited = vec![false; self.groups.len()];
        while let Some(g) = stack.pop() {
            if g == candidate {
                return true;
            }
            if std::mem::replace(&mut visited[g], true) {
                continue;
            }
            stack.extend(self.groups[g].parents.iter().copied());
        }
        false
    }

    fn host(&mut self, cx: &mut Cx, node: &KdlNode, group: Option<usize>) {
        cx.extra_args(
            node,
            1,
            "settings are properties: `host podc01 address=\"10.1.1.201\"`",
        );
        let Some((name, name_span)) =
            cx.name_arg(node, "a host name", "`host podc01 address=\"10.1.1.201\"`")
        else {
            return;
        };
        if !valid_name(cx, &name, name_span, "host") {
            return;
        }
        let idx = match self.hosts.get_index_of(&name) {
            Some(i) => i,
            None => {
                let draft = HostDraft {
                    address: None,
                    conn: ConnSettings::default(),
                    vars: Vars::new(),
                    seen: HashMap::new(),
                    seen_vars: HashMap::new(),
                    loc: cx.loc(node.span()),
                    direct: vec![],
                };
                self.hosts.insert_full(name.clone(), draft).0
            }
        };
        if let Some(g) = group
            && !self.hosts[idx].direct.contains(&g)
        {
            self.hosts[idx].direct.push(g);
            self.groups[g].group.hosts.push(name.clone());
        }
        let mut seen = Vec::new();
        for e in node.entries() {
            let Some(key_ident) = e.name() else { continue };
            let key = key_ident.value();
            if cx.repeated(&mut seen, key, e.span()) {
                continue;
            }
            if key != "address" && !CONN_PROPS.contains(&key) {
                let mut known = vec!["address"];
                known.extend_from_slice(CONN_PROPS);
                cx.unknown_prop("host", key, key_ident.span(), &known);
                continue;
            }
            let draft = &mut self.hosts[idx];
            if let Some((first, first_span)) = draft.seen.get(key) {
                if first != e.value() {
                    cx.error(DslError::HostConflict {
                        host: name.clone(),
                        field: format!("`{key}`"),
                        span: e.span(),
                        first: Some(*first_span),
                    });
                }
                continue;
            }
            draft.seen.insert(key.to_string(), (e.value().clone(), e.span()));
            if key == "address" {
                if let Some(a) = cx.string(e, "`address`") {
                    if a.trim().is_empty() {
                        cx.invalid("address", "the address is empty", e.span(), None);
                    } else {
                        draft.address = Some(a);
                    }
                }
            } else {
                conn_prop(cx, key, e, &mut draft.conn);
            }
        }
        let mut vars_seen = None;
        for child in node.children().map(|c| c.nodes()).unwrap_or_default() {
            if child.name().value() != "vars" {
                cx.unknown_node(child, "a host", &["vars"]);
                continue;
            }
            if !once(cx, &mut vars_seen, child, "`vars` block in a host") {
                continue;
            }
            let mut vars = Vars::new();
            vars_node(cx, child, &mut vars);
            let spans: HashMap<&str, SourceSpan> = child
                .children()
                .map(|c| {
                    c.nodes()
                        .iter()
                        .map(|n| (n.name().value(), n.name().span()))
                        .collect()
                })
                .unwrap_or_default();
            let draft = &mut self.hosts[idx];
            for (k, v) in vars {
                let span = spans.get(k.as_str()).copied().unwrap_or(child.span());
                match draft.vars.get(&k) {
                    Some(old) if *old != v => cx.error(DslError::HostConflict {
                        host: name.clone(),
                        field: format!("variable `{k}`"),
                        span,
                        first: draft.seen_vars.get(&k).copied(),
                    }),
                    Some(_) => {}
                    None => {
                        draft.seen_vars.insert(k.clone(), span);
                        draft.vars.insert(k, v);
                    }
                }
            }
        }
    }

    fn finish(mut self, cx: &mut Cx) -> Inventory {
        let order = order_groups(self.groups.values().map(|g| g.parents.as_slice()).collect());
        // rank of each group in (depth, file order): parents before children
        let mut rank = vec![0; order.len()];
        for (r, &g) in order.iter().enumerate() {
            rank[g] = r;
        }
        for (name, draft) in std::mem::take(&mut self.hosts) {
            let mut member = vec![false; self.groups.len()];
            let mut stack = draft.direct.clone();
            while let Some(g) = stack.pop() {
                if !std::mem::replace(&mut member[g], true) {
                    stack.extend(self.groups[g].parents.iter().copied());
                }
            }
            let mut by_rank: Vec<usize> = (0..member.len()).filter(|&g| member[g]).collect();
            by_rank.sort_by_key(|&g| rank[g]);
            let mut conn = self.inv.defaults.clone();
            for &g in &by_rank {
                conn = conn.overlay(&self.groups[g].group.conn);
            }
            conn = conn.overlay(&draft.conn);
            let groups = (0..member.len())
                .filter(|&g| member[g])
                .map(|g| self.groups[g].group.name.clone())
                .collect();
            let host = Host {
                name: name.clone(),
                address: draft.address,
                conn,
                vars: draft.vars,
                groups,
                loc: draft.loc,
            };
            self.inv.hosts.insert(name, host);
        }
        self.inv.groups = self.groups.into_iter().map(|(n, d)| (n, d.group)).collect();
        if !self.inv.hosts.contains_key("localhost") {
            let local = ConnSettings {
                connection: Some(ConnKind::Local),
                ..ConnSettings::default()
            };
            self.inv.implicit_localhost = Some(Host {
                name: "localhost".into(),
                address: None,
                conn: self.inv.defaults.overlay(&local),
                vars: Vars::new(),
                groups: vec![],
                loc: Loc {
                    line: 0,
                    column: 0,
                    ..cx.loc(SourceSpan::from(0..0))
                },
            });
        }
        self.inv
    }
}

/// Group indices sorted parents-before-children (by depth), ties in file order.
fn order_groups(parents: Vec<&[usize]>) -> Vec<usize> {
    let n = parents.len();
    let mut depth: Vec<Option<usize>> = vec![None; n];
    for start in 0..n {
        // iterative depth-first evaluation; the decoder rejects cycles, and the step
        // limit keeps a cycle (should one slip through) from looping forever
        let mut stack = vec![start];
        let mut steps = 0;
        while let Some(&g) = stack.last() {
            steps += 1;
            if depth[g].is_some() || steps > 4 * n * n + 8 {
                stack.pop();
                continue;
            }
            let pending: Vec<usize> = parents[g]
                .iter()
                .copied()
                .filter(|&p| depth[p].is_none())
                .collect();
            if pending.is_empty() || stack.len() > n {
                depth[g] = Some(
                    parents[g]
                        .iter()
                        .filter_map(|&p| depth[p])
                        .max()
                        .map_or(0, |d| d + 1),
                );
                stack.pop();
            } else {
                stack.extend(pending);
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&g| (depth[g].unwrap_or(0), g));
    order
}

/// Applies a connection property; false when `key` is not one.
fn conn_prop(cx: &mut Cx, key: &str, e: &KdlEntry, conn: &mut ConnSettings) -> bool {
    let what = format!("`{key}`");
    match key {
        "user" => conn.user = cx.string(e, &what),
        "identity" => conn.identity = cx.string(e, &what),
        "known-hosts" => conn.known_hosts = cx.string(e, &what),
        "jump" => conn.jump = cx.string(e, &what),
        "port" => {
            conn.port = match cx.uint(e, &what, 65_535) {
                Some(0) => {
                    cx.invalid("port", "port 0 cannot be connected to", e.span(), None);
                    None
                }
                p => p.map(|p| p as u16),
            }
        }
        "connection" => {
            conn.connection = match e.value() {
                KdlValue::String(s) if s == "ssh" => Some(ConnKind::Ssh),
                KdlValue::String(s) if s == "local" => Some(ConnKind::Local),
                _ => {
                    cx.wrong_type(&what, "one of \"ssh\", \"local\"", e);
                    None
                }
            }
        }
        "connect-timeout" => conn.connect_timeout = cx.duration(e, &what),
        "command-timeout" => conn.command_timeout = cx.duration(e, &what),
        "keepalive-interval" => {
            conn.keepalive_interval = match cx.duration(e, &what) {
                Some(d) if d < Duration::from_millis(100) => {
                    cx.invalid(&what, "must be at least 100ms", e.span(), None);
                    None
                }
                d => d,
            }
        }
        "keepalive-count" => {
            conn.keepalive_count = match cx.uint(e, &what, 1000) {
                Some(0) => {
                    cx.invalid(&what, "must be at least 1", e.span(), None);
                    None
                }
                n => n.map(|n| n as u32),
            }
        }
        _ => return false,
    }
    true
}

/// Host and group names end up in patterns, so they cannot hold pattern syntax.
fn valid_name(cx: &mut Cx, name: &str, span: SourceSpan, what: &str) -> bool {
    let problem = if name.is_empty() {
        Some("the name is empty".to_string())
    } else if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || ":,&!*?[]".contains(*c))
    {
        Some(format!(
            "`{c}` cannot be used in a {what} name: host patterns give it a meaning"
        ))
    } else if what == "group" && (name == "all" || name == "localhost") {
        Some(format!(
            "`{name}` is reserved: it always means {}",
            if name == "all" {
                "every host"
            } else {
                "this machine"
            }
        ))
    } else {
        None
    };
    match problem {
        Some(message) => {
            cx.invalid(
                &format!("{what} name"),
                message,
                span,
                Some("use letters, digits, `-`, `_` and `.`".into()),
            );
            false
        }
        None => true,
    }
}

/// Accepts the first node of a kind, reporting later ones as duplicates.
fn once(cx: &mut Cx, seen: &mut Option<SourceSpan>, node: &KdlNode, kind: &'static str) -> bool {
    match seen {
        Some(first) => {
            cx.error(DslError::Duplicate {
                kind,
                name: node.name().value().to_string(),
                span: node.name().span(),
                first: Some(*first),
                help: Some("merge the two into one".into()),
            });
            false
        }
        None => {
            *seen = Some(node.name().span());
            true
        }
    }
}

impl Inventory {
    /// A host by name, including the implicit `localhost`.
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts
            .get(name)
            .or_else(|| self.implicit_localhost.as_ref().filter(|_| name == "localhost"))
    }

    /// `localhost`: the inventory's own host of that name if it defines one, else the
    /// implicit one (`connection=local`, the inventory defaults, no groups or vars).
    pub fn localhost(&self) -> Cow<'_, Host> {
        if let Some(h) = self.host("localhost") {
            return Cow::Borrowed(h);
        }
        let local = ConnSettings {
            connection: Some(ConnKind::Local),
            ..ConnSettings::default()
        };
        Cow::Owned(Host {
            name: "localhost".into(),
            address: None,
            conn: self.defaults.overlay(&local),
            vars: Vars::new(),
            groups: vec![],
            loc: Loc {
                file: Arc::new(self.path.clone()),
                line: 0,
                column: 0,
                span: SourceSpan::from(0..0),
            },
        })
    }

    /// Groups ordered parents before children, ties in file order: the order in which
    /// group variables and connection settings are layered.
    pub fn groups_by_depth(&self) -> Vec<&Group> {
        let index: HashMap<&str, usize> = self
            .groups
            .keys()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut parents: Vec<Vec<usize>> = vec![vec![]; self.groups.len()];
        for (i, g) in self.groups.values().enumerate() {
            for c in &g.children {
                if let Some(&ci) = index.get(c.as_str()) {
                    parents[ci].push(i);
                }
            }
        }
        order_groups(parents.iter().map(Vec::as_slice).collect())
            .into_iter()
            .map(|i| &self.groups[i])
            .collect()
    }

    /// The inventory's variables for a host, merged: inventory `vars` < group vars
    /// (parents before children, then file order) < the host's own vars. Empty for an
    /// unknown host. Playbook-level precedence is layered on top by the engine.
    pub fn host_vars(&self, name: &str) -> Vars {
        let Some(host) = self.host(name) else {
            return Vars::new();
        };
        let mut vars = self.vars.clone();
        for g in self.groups_by_depth() {
            if host.groups.contains(&g.name) {
                vars.extend(g.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        vars.extend(host.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
        vars
    }
}

/// For `-e @file.kdl` and role `defaults.kdl`: a document of `name value` nodes.
pub(crate) fn decode_vars(path: &Path, text: &str) -> Result<Vars, miette::Report> {
    decode_vars_with_secrets(path, text).map(|(vars, _)| vars)
}

/// [`decode_vars`], also returning the names marked `(secret)`.
pub(crate) fn decode_vars_with_secrets(
    path: &Path,
    text: &str,
) -> Result<(Vars, indexmap::IndexSet<String>), miette::Report> {
    let file = Arc::new(SourceFile::new(path, text));
    let mut cx = Cx::new(file);
    let mut vars = Vars::new();
    if let Some(doc) = cx.parse() {
        crate::decode::value::vars_block(&mut cx, &doc, &mut vars);
    }
    cx.problems.finish(&path.display().to_string())?;
    Ok((vars, cx.secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_ordered_parents_first_then_by_file_order() {
        // 0 and 3 are roots; 1 is a child of 0; 2 a child of 1 and of 3
        let parents: Vec<&[usize]> = vec![&[], &[0], &[1, 3], &[]];
        assert_eq!(order_groups(parents), [0, 3, 1, 2]);
        // a child listed before its parent still comes after it
        let parents: Vec<&[usize]> = vec![&[1], &[]];
        assert_eq!(order_groups(parents), [1, 0]);
        // a cycle (which the decoder rejects) still terminates
        let parents: Vec<&[usize]> = vec![&[1], &[0]];
        assert_eq!(order_groups(parents).len(), 2);
    }

    #[test]
    fn host_vars_layer_inventory_groups_host() {
        let inv = decode(
            Path::new("i.kdl"),
            r#"
            vars { a "inventory"; b "inventory"; c "inventory" }
            group outer { vars { b "outer"; c "outer" }; group inner { vars { c "inner" }; host h { vars { d 1 } } } }
            "#,
        )
        .unwrap();
        let v = inv.host_vars("h");
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"a":"inventory","b":"outer","c":"inner","d":1}"#
        );
    }
}
