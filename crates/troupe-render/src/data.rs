//! Ansible's filters for reshaping data: merging maps (`combine`), turning maps into
//! lists and back (`dict2items`, `items2dict`), list arithmetic (`flatten`,
//! `difference`, `union`, `intersect`, `symmetric_difference`), `ternary`, and reading
//! and writing JSON and YAML text (`from_json`, `from_yaml`, `to_nice_yaml`).
//!
//! Why troupe has its own: playbooks written for Ansible reach for these every week,
//! and minijinja has none of them (its `unique` already matches Ansible's and is kept).
//! The semantics follow Ansible's documentation; where troupe is stricter (a wrong
//! type is an error naming the filter, never a silently empty result) docs/templates.md
//! says so. Values are handled as minijinja values, whose equality is Python's (`1 ==
//! 1.0`), and maps keep their key order as Python's dicts do.

use minijinja::value::{Kwargs, StringInput, ValueKind};
use minijinja::{Error, State, Value};

use crate::filters::{defined, invalid};

/// The items of a list (or other sequence), failing with the filter's name otherwise.
fn seq(filter: &str, what: &str, v: &Value) -> Result<Vec<Value>, Error> {
    match v.kind() {
        ValueKind::Seq | ValueKind::Iterable => Ok(v.try_iter()?.collect()),
        ValueKind::Undefined => Err(invalid(format!("{filter}: {what} is undefined"))),
        other => Err(invalid(format!("{filter} expects a list as {what}, got {other}"))),
    }
}

/// The entries of a map in order, failing with the filter's name otherwise.
fn entries(filter: &str, v: &Value) -> Result<Vec<(Value, Value)>, Error> {
    if v.kind() != ValueKind::Map {
        return Err(invalid(format!("{filter} expects a map, got {}", v.kind())));
    }
    v.try_iter()?
        .map(|k| {
            let item = v.get_item(&k)?;
            Ok((k, item))
        })
        .collect()
}

fn map_from(entries: Vec<(Value, Value)>) -> Value {
    Value::from_pairs(entries)
}

// ---------------------------------------------------------------------------------
// combine

#[derive(Clone, Copy, PartialEq)]
enum ListMerge {
    Replace,
    Keep,
    Append,
    Prepend,
    AppendRp,
    PrependRp,
}

/// `a | combine(b, c, recursive=false, list_merge='replace')`: later maps win; the
/// input and each argument may also be a list of maps.
pub(crate) fn combine(state: &State, base: &Value, rest: &[Value], kwargs: Kwargs) -> Result<Value, Error> {
    defined(state, base)?;
    let recursive: Option<bool> = kwargs.get("recursive")?;
    let list_merge: Option<String> = kwargs.get("list_merge")?;
    kwargs.assert_all_used()?;
    let recursive = recursive.unwrap_or(false);
    let list_merge = match list_merge.as_deref().unwrap_or("replace") {
        "replace" => ListMerge::Replace,
        "keep" => ListMerge::Keep,
        "append" => ListMerge::Append,
        "prepend" => ListMerge::Prepend,
        "append_rp" => ListMerge::AppendRp,
        "prepend_rp" => ListMerge::PrependRp,
        other => {
            return Err(invalid(format!(
                "combine: list_merge must be one of replace, keep, append, prepend, append_rp, prepend_rp; got `{other}`"
            )));
        }
    };
    let mut maps = Vec::new();
    for v in std::iter::once(base).chain(rest) {
        defined(state, v)?;
        match v.kind() {
            ValueKind::Seq => maps.extend(v.try_iter()?),
            _ => maps.push(v.clone()),
        }
    }
    let mut out: Vec<(Value, Value)> = Vec::new();
    for m in &maps {
        let m = entries("combine", m).map_err(|_| {
            invalid(format!(
                "combine expects maps (or lists of maps), got {}",
                m.kind()
            ))
        })?;
        out = merge(out, m, recursive, list_merge)?;
    }
    Ok(map_from(out))
}

fn merge(
    mut x: Vec<(Value, Value)>,
    y: Vec<(Value, Value)>,
    recursive: bool,
    list_merge: ListMerge,
) -> Result<Vec<(Value, Value)>, Error> {
    for (key, yv) in y {
        let Some(slot) = x.iter_mut().find(|(k, _)| *k == key) else {
            x.push((key, yv));
            continue;
        };
        let xv = &slot.1;
        let merged = match (xv.kind(), yv.kind()) {
            (ValueKind::Map, ValueKind::Map) if recursive => map_from(merge(
                entries("combine", xv)?,
                entries("combine", &yv)?,
                recursive,
                list_merge,
            )?),
            (ValueKind::Seq, ValueKind::Seq) if list_merge != ListMerge::Replace => {
                let old: Vec<Value> = xv.try_iter()?.collect();
                let new: Vec<Value> = yv.try_iter()?.collect();
                let old_only = || old.iter().filter(|v| !new.contains(v)).cloned();
                let list: Vec<Value> = match list_merge {
                    ListMerge::Keep => old.clone(),
                    ListMerge::Append => old.iter().chain(&new).cloned().collect(),
                    ListMerge::Prepend => new.iter().chain(&old).cloned().collect(),
                    ListMerge::AppendRp => old_only().chain(new.iter().cloned()).collect(),
                    ListMerge::PrependRp => new.iter().cloned().chain(old_only()).collect(),
                    ListMerge::Replace => unreachable!("handled by the guard"),
                };
                Value::from(list)
            }
            _ => yv,
        };
        slot.1 = merged;
    }
    Ok(x)
}

// ---------------------------------------------------------------------------------
// dict2items / items2dict

fn names(kwargs: &Kwargs) -> Result<(String, String), Error> {
    let key: Option<String> = kwargs.get("key_name")?;
    let value: Option<String> = kwargs.get("value_name")?;
    kwargs.assert_all_used()?;
    Ok((
        key.unwrap_or_else(|| "key".into()),
        value.unwrap_or_else(|| "value".into()),
    ))
}

/// `{"a": 1} | dict2items` → `[{"key": "a", "value": 1}]`.
pub(crate) fn dict2items(state: &State, v: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    defined(state, v)?;
    let (key_name, value_name) = names(&kwargs)?;
    let items: Vec<Value> = entries("dict2items", v)?
        .into_iter()
        .map(|(k, val)| {
            map_from(vec![
                (Value::from(key_name.as_str()), k),
                (Value::from(value_name.as_str()), val),
            ])
        })
        .collect();
    Ok(Value::from(items))
}

/// `[{"key": "a", "value": 1}] | items2dict` → `{"a": 1}`.
pub(crate) fn items2dict(state: &State, v: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    defined(state, v)?;
    let (key_name, value_name) = names(&kwargs)?;
    let mut out = Vec::new();
    for (i, item) in seq("items2dict", "its input", v)?.into_iter().enumerate() {
        let field = |name: &str| -> Result<Value, Error> {
            let found = if item.kind() == ValueKind::Map {
                item.get_item(&Value::from(name))
                    .ok()
                    .filter(|v| !v.is_undefined())
            } else {
                None
            };
            found.ok_or_else(|| {
                invalid(format!(
                    "items2dict: item {i} has no `{name}` (each item must be a map with `{key_name}` and `{value_name}`), got {item}"
                ))
            })
        };
        out.push((field(&key_name)?, field(&value_name)?));
    }
    Ok(map_from(out))
}

// ---------------------------------------------------------------------------------
// ternary

/// `cond | ternary(a, b, none_val)`: `a` when `cond` is true, else `b`; `none_val`
/// (when given) for a none `cond`.
pub(crate) fn ternary(
    state: &State,
    cond: &Value,
    if_true: Value,
    if_false: Value,
    if_none: Option<Value>,
) -> Result<Value, Error> {
    defined(state, cond)?;
    Ok(match if_none {
        Some(n) if cond.is_none() => n,
        _ if cond.is_true() => if_true,
        _ => if_false,
    })
}

// ---------------------------------------------------------------------------------
// lists

/// `flatten(levels=None, skip_nulls=true)`: nested lists spliced into one; like Ansible,
/// null items (and the strings `None` and `null`) are dropped unless `skip_nulls=false`.
pub(crate) fn flatten(state: &State, v: &Value, levels: Option<i64>, kwargs: Kwargs) -> Result<Value, Error> {
    defined(state, v)?;
    let levels_kw: Option<i64> = kwargs.get("levels")?;
    let skip_nulls: Option<bool> = kwargs.get("skip_nulls")?;
    kwargs.assert_all_used()?;
    let levels = levels.or(levels_kw);
    if levels.is_some_and(|l| l < 0) {
        return Err(invalid("flatten: levels must be 0 or more"));
    }
    let mut out = Vec::new();
    flatten_into(
        &seq("flatten", "its input", v)?,
        levels,
        skip_nulls.unwrap_or(true),
        &mut out,
    )?;
    Ok(Value::from(out))
}

fn flatten_into(
    items: &[Value],
    levels: Option<i64>,
    skip_nulls: bool,
    out: &mut Vec<Value>,
) -> Result<(), Error> {
    for item in items {
        if skip_nulls && (item.is_none() || matches!(item.as_str(), Some("None" | "null"))) {
            continue;
        }
        match (item.kind(), levels) {
            (ValueKind::Seq, None) => {
                flatten_into(&item.try_iter()?.collect::<Vec<_>>(), None, skip_nulls, out)?
            }
            (ValueKind::Seq, Some(l)) if l >= 1 => flatten_into(
                &item.try_iter()?.collect::<Vec<_>>(),
                Some(l - 1),
                skip_nulls,
                out,
            )?,
            _ => out.push(item.clone()),
        }
    }
    Ok(())
}

fn unique_push(out: &mut Vec<Value>, v: Value) {
    if !out.contains(&v) {
        out.push(v);
    }
}

fn two_lists(state: &State, filter: &str, a: &Value, b: &Value) -> Result<(Vec<Value>, Vec<Value>), Error> {
    defined(state, a)?;
    defined(state, b)?;
    Ok((seq(filter, "its input", a)?, seq(filter, "its argument", b)?))
}

/// `a | difference(b)`: the items of `a` not in `b`, each once, in `a`'s order.
pub(crate) fn difference(state: &State, a: &Value, b: &Value) -> Result<Value, Error> {
    let (a, b) = two_lists(state, "difference", a, b)?;
    let mut out = Vec::new();
    for v in a.into_iter().filter(|v| !b.contains(v)) {
        unique_push(&mut out, v);
    }
    Ok(Value::from(out))
}

/// `a | intersect(b)`: the items of `a` also in `b`, each once, in `a`'s order.
pub(crate) fn intersect(state: &State, a: &Value, b: &Value) -> Result<Value, Error> {
    let (a, b) = two_lists(state, "intersect", a, b)?;
    let mut out = Vec::new();
    for v in a.into_iter().filter(|v| b.contains(v)) {
        unique_push(&mut out, v);
    }
    Ok(Value::from(out))
}

/// `a | union(b)`: the items of `a` then of `b`, each once.
pub(crate) fn union(state: &State, a: &Value, b: &Value) -> Result<Value, Error> {
    let (a, b) = two_lists(state, "union", a, b)?;
    let mut out = Vec::new();
    for v in a.into_iter().chain(b) {
        unique_push(&mut out, v);
    }
    Ok(Value::from(out))
}

/// `a | symmetric_difference(b)`: the items in exactly one of the lists, each once.
pub(crate) fn symmetric_difference(state: &State, a: &Value, b: &Value) -> Result<Value, Error> {
    let (a, b) = two_lists(state, "symmetric_difference", a, b)?;
    let mut out = Vec::new();
    for v in a
        .iter()
        .filter(|v| !b.contains(v))
        .chain(b.iter().filter(|v| !a.contains(v)))
    {
        unique_push(&mut out, v.clone());
    }
    Ok(Value::from(out))
}

// ---------------------------------------------------------------------------------
// JSON and YAML text

/// Parses JSON text; anything but a string is returned as it is (as Ansible does).
pub(crate) fn from_json(state: &State, v: &Value) -> Result<Value, Error> {
    defined(state, v)?;
    let Some(text) = v.as_str() else {
        return Ok(v.clone());
    };
    let data: serde_json::Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("from_json: not valid JSON: {e}")))?;
    Ok(crate::context::json_to_value(&data))
}

/// Parses one YAML document; anything but a string is returned as it is.
pub(crate) fn from_yaml(state: &State, v: &Value) -> Result<Value, Error> {
    defined(state, v)?;
    let Some(text) = v.as_str() else {
        return Ok(v.clone());
    };
    let data: serde_json::Value =
        serde_yaml::from_str(text).map_err(|e| invalid(format!("from_yaml: not valid YAML: {e}")))?;
    Ok(crate::context::json_to_value(&data))
}

/// Parses every document of a YAML stream into a list.
pub(crate) fn from_yaml_all(v: StringInput<'_>) -> Result<Value, Error> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(v.as_str()) {
        let data: serde_json::Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| invalid(format!("from_yaml_all: not valid YAML: {e}")))?;
        docs.push(crate::context::json_to_value(&data));
    }
    Ok(Value::from(docs))
}

/// `to_nice_yaml(indent=4, sort_keys=true)`: block-style YAML laid out as Ansible's
/// (PyYAML's) is: `indent` spaces per level, lists inside maps not indented, keys
/// sorted unless `sort_keys=false`. Strings are quoted only when a YAML 1.1 or 1.2
/// reader would otherwise read something else.
pub(crate) fn to_nice_yaml(state: &State, v: &Value, kwargs: Kwargs) -> Result<String, Error> {
    defined(state, v)?;
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let indent = indent.unwrap_or(4);
    if !(2..=9).contains(&indent) {
        return Err(invalid("to_nice_yaml: indent must be between 2 and 9"));
    }
    let data: serde_json::Value =
        serde_json::to_value(v).map_err(|e| invalid(format!("cannot serialise to YAML: {e}")))?;
    let mut out = String::new();
    for line in yaml_lines(&data, indent, sort_keys.unwrap_or(true)) {
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

fn yaml_lines(v: &serde_json::Value, indent: usize, sort: bool) -> Vec<String> {
    use serde_json::Value as J;
    match v {
        J::Object(map) if !map.is_empty() => {
            let mut keys: Vec<&String> = map.keys().collect();
            if sort {
                keys.sort();
            }
            let mut out = Vec::new();
            for k in keys {
                let key = crate::filters::yaml_scalar(k);
                match &map[k] {
                    child @ J::Object(m) if !m.is_empty() => {
                        out.push(format!("{key}:"));
                        let pad = " ".repeat(indent);
                        out.extend(
                            yaml_lines(child, indent, sort)
                                .into_iter()
                                .map(|l| format!("{pad}{l}")),
                        );
                    }
                    child @ J::Array(a) if !a.is_empty() => {
                        out.push(format!("{key}:"));
                        out.extend(yaml_lines(child, indent, sort));
                    }
                    scalar => out.push(format!("{key}: {}", yaml_lines(scalar, indent, sort)[0])),
                }
            }
            out
        }
        J::Array(items) if !items.is_empty() => {
            let mut out = Vec::new();
            let dash = format!("-{}", " ".repeat(indent - 1));
            let pad = " ".repeat(indent);
            for item in items {
                match item {
                    J::Object(m) if !m.is_empty() => {
                        push_item(&mut out, yaml_lines(item, indent, sort), &dash, &pad)
                    }
                    J::Array(a) if !a.is_empty() => {
                        push_item(&mut out, yaml_lines(item, indent, sort), &dash, &pad)
                    }
                    scalar => out.push(format!("- {}", yaml_lines(scalar, indent, sort)[0])),
                }
            }
            out
        }
        J::Object(_) => vec!["{}".into()],
        J::Array(_) => vec!["[]".into()],
        J::String(s) => vec![crate::filters::yaml_scalar(s)],
        J::Null => vec!["null".into()],
        J::Bool(b) => vec![b.to_string()],
        J::Number(n) => vec![n.to_string()],
    }
}

fn push_item(out: &mut Vec<String>, lines: Vec<String>, dash: &str, pad: &str) {
    for (i, l) in lines.into_iter().enumerate() {
        out.push(if i == 0 {
            format!("{dash}{l}")
        } else {
            format!("{pad}{l}")
        });
    }
}
