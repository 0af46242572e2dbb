//! Values: how KDL nodes become the JSON values that variables and arguments hold.
//!
//! KDL has scalars (strings, numbers, `#true`, `#null`) but no lists or maps, so the
//! language gives nodes a shape rule, used everywhere a value is written (inside
//! `vars`, for module arguments written as children, for `loop` items):
//!
//! | written                              | value                         |
//! |--------------------------------------|-------------------------------|
//! | `name "x"`                           | the scalar `"x"`              |
//! | `name "a" "b" "c"`                   | the list `["a", "b", "c"]`    |
//! | `name a=1 b=2`                       | the map `{a: 1, b: 2}`        |
//! | `name { - "a"; - "b" }`              | the list `["a", "b"]`         |
//! | `name { k "v"; other { - 1 } }`      | the map `{k: "v", other: [1]}`|
//! | `(list)name "a"` / `(list)name`      | `["a"]` / `[]`                |
//! | `(map)name`                          | `{}`                          |
//!
//! Inside `vars`, `(secret)name ...` marks the variable as secret (its value is still
//! written by the rules above): the names end up in `secret_vars` of the model.
//!
//! Children named `-` are list items; any other children are map keys. Mixing the two,
//! or mixing positional values, properties and children, is an error: each value has
//! exactly one way to be written, so a reader never has to guess.

use kdl::{KdlDocument, KdlEntry, KdlNode, KdlValue};
use miette::SourceSpan;
use serde_json::{Map, Number, Value};

use super::Cx;
use crate::errors::DslError;
use crate::model::Vars;

/// A KDL scalar as JSON. Integers beyond 64 bits and non-finite floats are errors.
pub(crate) fn scalar(cx: &mut Cx, e: &KdlEntry) -> Option<Value> {
    Some(match e.value() {
        KdlValue::String(s) => Value::String(s.clone()),
        KdlValue::Integer(i) => {
            if let Ok(v) = i64::try_from(*i) {
                Value::Number(v.into())
            } else if let Ok(v) = u64::try_from(*i) {
                Value::Number(v.into())
            } else {
                cx.invalid("number", "integer does not fit in 64 bits", e.span(), None);
                return None;
            }
        }
        KdlValue::Float(f) => match Number::from_f64(*f) {
            Some(n) => Value::Number(n),
            None => {
                cx.invalid(
                    "number",
                    "infinity and NaN cannot be used as values",
                    e.span(),
                    None,
                );
                return None;
            }
        },
        KdlValue::Bool(b) => Value::Bool(*b),
        KdlValue::Null => Value::Null,
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Any,
    List,
    Map,
}

/// The value a node holds under the shape rule (see the module docs).
pub(crate) fn node_value(cx: &mut Cx, node: &KdlNode) -> Option<Value> {
    node_value_as(cx, node, node.ty().map(|t| t.value()))
}

/// [`node_value`] with the type annotation given by the caller (`vars` strips
/// `(secret)`, which marks the variable rather than shaping its value).
fn node_value_as(cx: &mut Cx, node: &KdlNode, ty: Option<&str>) -> Option<Value> {
    let name = node.name().value();
    let shape = match ty {
        None => Shape::Any,
        Some("list") => Shape::List,
        Some("map") => Shape::Map,
        Some(other) => {
            let span = node.ty().map_or(node.name().span(), |t| t.span());
            cx.invalid(
                "type annotation",
                format!("`({other})` is not a value shape"),
                span,
                Some(
                    "the only value annotations are `(list)` and `(map)`; `(secret)` marks a variable in a `vars` block"
                        .into(),
                ),
            );
            Shape::Any
        }
    };
    let args: Vec<&KdlEntry> = node.entries().iter().filter(|e| e.name().is_none()).collect();
    let props: Vec<&KdlEntry> = node.entries().iter().filter(|e| e.name().is_some()).collect();

    if let Some(children) = node.children() {
        if let Some(first) = args.first().or(props.first()) {
            cx.invalid(
                "value",
                format!("`{name}` has both values and a `{{ }}` block"),
                first.span(),
                Some(
                    "write the value either on the node (`name \"x\"`, `name a=1`) or as children, not both"
                        .into(),
                ),
            );
            return None;
        }
        return block_value(cx, node, children, shape);
    }
    if !props.is_empty() {
        if let Some(first) = args.first() {
            cx.invalid(
                "value",
                format!("`{name}` mixes positional values and properties"),
                first.span(),
                Some("a node holds a list (`name 1 2 3`) or a map (`name a=1 b=2`), not both".into()),
            );
            return None;
        }
        if shape == Shape::List {
            cx.invalid(
                "value",
                "`(list)` node has properties",
                node.name().span(),
                Some("write list items as positional values or `-` children".into()),
            );
            return None;
        }
        let mut map = Map::new();
        let mut ok = true;
        for p in props {
            let key = p.name().map(|n| n.value()).unwrap_or_default();
            if map.contains_key(key) {
                cx.error(DslError::Duplicate {
                    kind: "key",
                    name: key.into(),
                    span: p.span(),
                    first: None,
                    help: None,
                });
                ok = false;
                continue;
            }
            match scalar(cx, p) {
                Some(v) => {
                    map.insert(key.to_string(), v);
                }
                None => ok = false,
            }
        }
        return ok.then_some(Value::Object(map));
    }
    match (args.len(), shape) {
        (0, Shape::List) => Some(Value::Array(vec![])),
        (0, Shape::Map) => Some(Value::Object(Map::new())),
        (0, Shape::Any) => {
            cx.error(DslError::Missing {
                node: name.to_string(),
                what: "a value".into(),
                span: node.name().span(),
                help: Some(format!(
                    "write `{name} \"value\"`; for no value write `{name} #null`, for an empty list `(list){name}`"
                )),
            });
            None
        }
        (_, Shape::Map) => {
            cx.invalid(
                "value",
                "`(map)` node has positional values",
                args[0].span(),
                Some("write map entries as properties or children".into()),
            );
            None
        }
        (1, Shape::Any) => scalar(cx, args[0]),
        _ => {
            let items: Vec<Option<Value>> = args.iter().map(|e| scalar(cx, e)).collect();
            items.into_iter().collect::<Option<Vec<_>>>().map(Value::Array)
        }
    }
}

fn block_value(cx: &mut Cx, node: &KdlNode, children: &KdlDocument, shape: Shape) -> Option<Value> {
    let nodes = children.nodes();
    let items = nodes.iter().filter(|n| n.name().value() == "-").count();
    let is_list = match shape {
        Shape::List => true,
        Shape::Map => false,
        Shape::Any => items > 0,
    };
    if is_list {
        let mut out = Vec::with_capacity(nodes.len());
        let mut ok = true;
        for child in nodes {
            if child.name().value() != "-" {
                cx.invalid(
                    "list item",
                    format!("`{}` in a list", child.name().value()),
                    child.name().span(),
                    Some(format!(
                        "items of the list `{}` are written `- value`; a map needs every child to be a key",
                        node.name().value()
                    )),
                );
                ok = false;
                continue;
            }
            match node_value(cx, child) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        return ok.then_some(Value::Array(out));
    }
    let mut map = Map::new();
    let mut ok = true;
    let mut spans: std::collections::HashMap<&str, SourceSpan> = std::collections::HashMap::new();
    for child in nodes {
        let key = child.name().value();
        if key == "-" {
            cx.invalid(
                "map key",
                "`-` item in a map",
                child.name().span(),
                Some("a `(map)` node holds `key value` children only".into()),
            );
            ok = false;
            continue;
        }
        if map.contains_key(key) {
            cx.error(DslError::Duplicate {
                kind: "key",
                name: key.to_string(),
                span: child.name().span(),
                first: spans.get(key).copied(),
                help: Some("give each key once".into()),
            });
            ok = false;
            continue;
        }
        match node_value(cx, child) {
            Some(v) => {
                map.insert(key.to_string(), v);
                spans.insert(key, child.name().span());
            }
            None => ok = false,
        }
    }
    ok.then_some(Value::Object(map))
}

/// Whether `name` may be a variable: a snake_case template identifier.
pub(crate) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && !is_keyword(name)
}

/// Names the template language reserves.
fn is_keyword(name: &str) -> bool {
    matches!(
        name,
        "true" | "false" | "none" | "and" | "or" | "not" | "in" | "is" | "if" | "else" | "loop" | "self"
    )
}

/// Checks a variable (or `register`, `loop-var`) name, reporting what is wrong.
pub(crate) fn check_identifier(cx: &mut Cx, name: &str, span: SourceSpan, what: &'static str) -> bool {
    if is_identifier(name) {
        return true;
    }
    let fixed: String = name
        .chars()
        .map(|c| {
            if c == '-' || c == '.' || c == ' ' {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let help = if is_keyword(name) {
        format!("`{name}` is reserved by the template language; pick another name")
    } else if is_identifier(&fixed) && fixed != name {
        format!(
            "{what} names are snake_case identifiers that templates can use (`{{{{ {fixed} }}}}`): write `{fixed}`"
        )
    } else {
        format!(
            "{what} names are snake_case identifiers that templates can use: lowercase letters, digits and `_`, not starting with a digit"
        )
    };
    cx.error(DslError::BadIdentifier {
        name: name.to_string(),
        what,
        span,
        help,
    });
    false
}

/// Decodes the children of a `vars { .. }` block (or a whole vars file) into `into`.
///
/// A variable written `(secret)name value` is recorded in [`Cx::secrets`]: the engine
/// masks its value in every output. Its value follows the usual shape rule.
pub(crate) fn vars_block(cx: &mut Cx, doc: &KdlDocument, into: &mut Vars) {
    let mut spans: Vec<(usize, SourceSpan)> = Vec::new();
    for node in doc.nodes() {
        let name = node.name().value();
        let span = node.name().span();
        let ty = node.ty().map(|t| t.value());
        let secret = ty == Some("secret");
        if !check_identifier(cx, name, span, "variable") {
            continue;
        }
        if let Some(i) = into.get_index_of(name) {
            let first = spans.iter().find(|(j, _)| *j == i).map(|(_, s)| *s);
            cx.error(DslError::Duplicate {
                kind: "variable",
                name: name.to_string(),
                span,
                first,
                help: Some("give each variable once per block".into()),
            });
            continue;
        }
        if secret {
            cx.secrets.insert(name.to_string());
            // everything after the name is the value, in whatever shape it is written
            let start = span.offset() + span.len();
            let end = node.span().offset() + node.span().len();
            cx.hide(SourceSpan::from(start..end.max(start)));
        }
        if let Some(v) = node_value_as(cx, node, if secret { None } else { ty }) {
            let (i, _) = into.insert_full(name.to_string(), v);
            spans.push((i, span));
        }
    }
}

/// A `vars { .. }` node: no values of its own, a block of variables.
pub(crate) fn vars_node(cx: &mut Cx, node: &KdlNode, into: &mut Vars) {
    cx.extra_args(node, 0, "write variables as children: `vars { name \"value\" }`");
    for p in node.entries().iter().filter(|e| e.name().is_some()) {
        cx.invalid(
            "vars",
            "variables are written as children",
            p.span(),
            Some("write `vars { name \"value\" }`".into()),
        );
    }
    if let Some(children) = node.children() {
        vars_block(cx, children, into);
    }
}
