//! Ansible's tests on registered results (`r is changed`, `is failed`, `is skipped`,
//! `is succeeded`) and on version strings (`v is version('3.4', '>=')`).
//!
//! The result tests read the flags the executor registers for every task (a map with
//! `changed`, `failed`, `skipped`, and for a loop also `results`): one spelling for
//! the checks operators write in `when` and `failed-when`. Anything but a map is an
//! error naming the test, as in Ansible, so `when "r is changed"` on a variable that is
//! not a registered result fails loudly instead of reading as false.

use std::cmp::Ordering;

use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, State, Value};

use crate::filters::{defined, invalid};

pub(crate) fn register(env: &mut Environment<'static>) {
    for name in ["changed", "change"] {
        env.add_test(name, |state: &State, v: &Value| {
            flag(state, "changed", v, "changed")
        });
    }
    for name in ["failed", "failure"] {
        env.add_test(name, |state: &State, v: &Value| {
            flag(state, "failed", v, "failed")
        });
    }
    for name in ["skipped", "skip"] {
        env.add_test(name, |state: &State, v: &Value| {
            flag(state, "skipped", v, "skipped")
        });
    }
    for name in ["succeeded", "success", "successful"] {
        env.add_test(name, |state: &State, v: &Value| {
            flag(state, "succeeded", v, "failed").map(|failed| !failed)
        });
    }
    env.add_test("version", version);
    env.add_test("version_compare", version);
}

/// The truth of `key` in a registered result; a result without it is false.
fn flag(state: &State, test: &str, v: &Value, key: &str) -> Result<bool, Error> {
    defined(state, v)?;
    if v.kind() != ValueKind::Map {
        return Err(invalid(format!(
            "the `{test}` test expects a registered result (a map with `changed`, `failed`, `skipped`), got {}",
            v.kind()
        )));
    }
    let x = v.get_item(&Value::from(key))?;
    Ok(!x.is_undefined() && x.is_true())
}

/// `value is version(other, operator='eq', version_type='loose')`.
fn version(state: &State, v: &Value, other: &Value, op: Option<&str>, kwargs: Kwargs) -> Result<bool, Error> {
    defined(state, v)?;
    defined(state, other)?;
    let op_kw: Option<String> = kwargs.get("operator")?;
    let strict: Option<bool> = kwargs.get("strict")?;
    let version_type: Option<String> = kwargs.get("version_type")?;
    kwargs.assert_all_used()?;
    let op = op.map(str::to_string).or(op_kw).unwrap_or_else(|| "eq".into());
    let version_type = match (version_type, strict) {
        (None, Some(true)) => Some("strict".to_string()),
        (t, _) => t,
    };
    let kind = match version_type.as_deref() {
        Some("loose") | None => "loose",
        Some("semver" | "semantic") => "semver",
        Some(other) => {
            return Err(invalid(format!(
                "version: version_type `{other}` is not supported; troupe has loose (the default) and semver"
            )));
        }
    };
    let text = |x: &Value| x.as_str().map(str::to_string).unwrap_or_else(|| x.to_string());
    let (a, b) = (text(v), text(other));
    let ord = if kind == "semver" {
        let parse = |s: &str| {
            semver::Version::parse(s)
                .map_err(|e| invalid(format!("version: `{s}` is not a semantic version: {e}")))
        };
        parse(&a)?.cmp(&parse(&b)?)
    } else {
        loose_cmp(&a, &b)?
    };
    Ok(match op.as_str() {
        "==" | "=" | "eq" => ord == Ordering::Equal,
        "!=" | "<>" | "ne" => ord != Ordering::Equal,
        "<" | "lt" => ord == Ordering::Less,
        "<=" | "le" => ord != Ordering::Greater,
        ">" | "gt" => ord == Ordering::Greater,
        ">=" | "ge" => ord != Ordering::Less,
        other => {
            return Err(invalid(format!(
                "version: unknown operator `{other}`; use ==, !=, <, <=, >, >= (or eq, ne, lt, le, gt, ge)"
            )));
        }
    })
}

#[derive(Debug, PartialEq)]
enum Part {
    Num(u128),
    Text(String),
}

/// Python's LooseVersion parts: runs of digits (numbers) and of other characters
/// (text, lowercase letters split from the rest), dots dropped.
fn loose_parts(s: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        let class = |c: char| {
            if c.is_ascii_digit() {
                0
            } else if c.is_ascii_lowercase() {
                1
            } else if c == '.' {
                2
            } else {
                3
            }
        };
        let k = class(c);
        let mut run = String::new();
        while let Some(&d) = chars.peek() {
            if class(d) != k || (k == 2 && !run.is_empty()) {
                break;
            }
            run.push(d);
            chars.next();
        }
        match k {
            0 => parts.push(run.parse().map_or(Part::Text(run), Part::Num)),
            2 => {}
            _ => parts.push(Part::Text(run)),
        }
    }
    parts
}

fn loose_cmp(a: &str, b: &str) -> Result<Ordering, Error> {
    let (pa, pb) = (loose_parts(a), loose_parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let ord = match (x, y) {
            (Part::Num(x), Part::Num(y)) => x.cmp(y),
            (Part::Text(x), Part::Text(y)) => x.cmp(y),
            _ => {
                return Err(invalid(format!(
                    "version: cannot compare `{a}` with `{b}`: a number meets text at the same place; pass version_type='semver' or compare like-shaped versions"
                )));
            }
        };
        if ord != Ordering::Equal {
            return Ok(ord);
        }
    }
    Ok(pa.len().cmp(&pb.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loose_versions_compare_part_by_part() {
        assert_eq!(loose_cmp("3.10", "3.9").unwrap(), Ordering::Greater);
        assert_eq!(loose_cmp("3.4", "3.4.0").unwrap(), Ordering::Less);
        assert_eq!(loose_cmp("1.0rc1", "1.0rc2").unwrap(), Ordering::Less);
        assert_eq!(loose_cmp("v3.5.17", "v3.5.9").unwrap(), Ordering::Greater);
        assert!(loose_cmp("1.a", "1.1").is_err());
        assert_eq!(
            loose_parts("3.5.0-RC1"),
            [
                Part::Num(3),
                Part::Num(5),
                Part::Num(0),
                Part::Text("-RC".into()),
                Part::Num(1)
            ]
        );
    }
}
