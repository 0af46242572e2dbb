//! The variables a template sees for one host.
//!
//! The engine renders per host per task, so a [`Context`] must be cheap to build and to
//! clone: the host's own vars sit behind one `Arc`, and `groups` and `hostvars` (the
//! same for every host of a run) are shared `Arc`s that are never copied. Values are
//! handed to minijinja lazily, one looked-up variable at a time, through the
//! [`minijinja::value::Object`] implementations below, so a template that reads three
//! variables converts three values, not the whole inventory.

use std::fmt;
use std::sync::Arc;

use indexmap::IndexMap;
use minijinja::Value;
use minijinja::value::{Enumerator, Object, ObjectRepr};
use serde_json::Value as Json;

/// Host name → group names; exposed to templates as `groups`.
pub type Groups = IndexMap<String, Vec<String>>;
/// Host name → that host's vars; exposed to templates as `hostvars`.
pub type HostVars = IndexMap<String, IndexMap<String, Json>>;

/// The variables of one host for one render: its vars (including `inventory_hostname`,
/// registered results, loop items: whatever the engine puts in), plus the shared
/// `groups` and `hostvars` maps.
///
/// `groups` and `hostvars` are resolved before the host's vars, like Ansible's magic
/// variables: a var of that name cannot hide them.
#[derive(Clone, Default)]
pub struct Context {
    vars: Arc<IndexMap<String, Json>>,
    groups: Arc<Groups>,
    hostvars: Arc<HostVars>,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("vars", &self.vars)
            .field("groups", &self.groups.keys().collect::<Vec<_>>())
            .field("hostvars", &self.hostvars.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Context {
    /// A context holding `vars` and empty `groups`/`hostvars`.
    pub fn new(vars: IndexMap<String, Json>) -> Context {
        Context {
            vars: Arc::new(vars),
            ..Context::default()
        }
    }

    /// Sets `groups`. Pass an `Arc` to share one map between all hosts of a run.
    pub fn with_groups(mut self, groups: impl Into<Arc<Groups>>) -> Context {
        self.groups = groups.into();
        self
    }

    /// Sets `hostvars`. Pass an `Arc` to share one map between all hosts of a run.
    pub fn with_hostvars(mut self, hostvars: impl Into<Arc<HostVars>>) -> Context {
        self.hostvars = hostvars.into();
        self
    }

    /// Adds or replaces one var (builder style), e.g. `item` or a registered result.
    pub fn with_var(mut self, name: impl Into<String>, value: Json) -> Context {
        self.insert(name, value);
        self
    }

    /// Adds or replaces one var. Copies the vars map only if another clone shares it.
    pub fn insert(&mut self, name: impl Into<String>, value: Json) {
        Arc::make_mut(&mut self.vars).insert(name.into(), value);
    }

    /// The host's own vars (not `groups`/`hostvars`).
    pub fn vars(&self) -> &IndexMap<String, Json> {
        &self.vars
    }

    /// One var of the host, if set.
    pub fn get(&self, name: &str) -> Option<&Json> {
        self.vars.get(name)
    }

    pub fn groups(&self) -> &Arc<Groups> {
        &self.groups
    }

    pub fn hostvars(&self) -> &Arc<HostVars> {
        &self.hostvars
    }

    /// The root value handed to minijinja.
    pub(crate) fn to_value(&self) -> Value {
        Value::from_object(Root(self.clone()))
    }
}

pub(crate) fn json_to_value(v: &Json) -> Value {
    match v {
        // Fast paths for the common scalars; maps and lists go through serde.
        Json::String(s) => Value::from(s.as_str()),
        Json::Bool(b) => Value::from(*b),
        Json::Null => Value::from(()),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        _ => Value::from(minijinja::value::Serde(v)),
    }
}

#[derive(Debug)]
struct Root(Context);

impl Object for Root {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, key: &str) -> Option<Value> {
        match key {
            "groups" => Some(Value::from_object(GroupsObj(self.0.groups.clone()))),
            "hostvars" => Some(Value::from_object(HostVarsObj(self.0.hostvars.clone()))),
            _ => self.0.vars.get(key).map(json_to_value),
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let mut keys: Vec<Value> = vec![Value::from("groups"), Value::from("hostvars")];
        keys.extend(
            self.0
                .vars
                .keys()
                .filter(|k| *k != "groups" && *k != "hostvars")
                .map(|k| Value::from(k.as_str())),
        );
        Enumerator::Values(keys)
    }
}

#[derive(Debug)]
struct GroupsObj(Arc<Groups>);

impl Object for GroupsObj {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let hosts = self.0.get(key.as_str()?)?;
        Some(Value::from_iter(hosts.iter().map(|h| Value::from(h.as_str()))))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.keys().map(|k| Value::from(k.as_str())).collect())
    }
}

#[derive(Debug)]
pub(crate) struct HostVarsObj(pub Arc<HostVars>);

impl Object for HostVarsObj {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let index = self.0.get_index_of(key.as_str()?)?;
        Some(Value::from_object(HostObj {
            all: self.0.clone(),
            index,
        }))
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.keys().map(|k| Value::from(k.as_str())).collect())
    }
}

/// One host's vars inside `hostvars`, converted key by key on access.
#[derive(Debug)]
struct HostObj {
    all: Arc<HostVars>,
    index: usize,
}

impl HostObj {
    fn vars(&self) -> &IndexMap<String, Json> {
        &self.all[self.index]
    }
}

impl Object for HostObj {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.vars().get(key.as_str()?).map(json_to_value)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.vars().keys().map(|k| Value::from(k.as_str())).collect())
    }
}
