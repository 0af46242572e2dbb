//! Typed readers for rendered module arguments. The checker already verified the
//! literal values against each module's `ArgSpec`; these run again after templates
//! were expanded, so a `{{ }}` that produced the wrong type is still caught, with the
//! argument's name in the message.

use std::time::Duration;

use serde_json::Value;

use crate::module::{Args, TaskError};

pub fn opt_str(args: &Args, name: &str) -> Result<Option<String>, TaskError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(other) => Err(TaskError::bad_arg(
            name,
            format!("expected a string, got {}", kind(other)),
        )),
    }
}

pub fn req_str(args: &Args, name: &str) -> Result<String, TaskError> {
    opt_str(args, name)?.ok_or_else(|| TaskError::bad_arg(name, "is required"))
}

pub fn opt_bool(args: &Args, name: &str) -> Result<Option<bool>, TaskError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(Some(true)),
            "false" | "no" | "off" | "0" | "" => Ok(Some(false)),
            _ => Err(TaskError::bad_arg(
                name,
                format!("expected #true or #false, got {s:?}"),
            )),
        },
        Some(other) => Err(TaskError::bad_arg(
            name,
            format!("expected #true or #false, got {}", kind(other)),
        )),
    }
}

pub fn bool_or(args: &Args, name: &str, default: bool) -> Result<bool, TaskError> {
    Ok(opt_bool(args, name)?.unwrap_or(default))
}

pub fn opt_u64(args: &Args, name: &str) -> Result<Option<u64>, TaskError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| TaskError::bad_arg(name, format!("expected a non-negative integer, got {n}"))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| TaskError::bad_arg(name, format!("expected an integer, got {s:?}"))),
        Some(other) => Err(TaskError::bad_arg(
            name,
            format!("expected an integer, got {}", kind(other)),
        )),
    }
}

/// A file mode: an integer as written in KDL (`0o644` arrives as 420) or an octal
/// string (`"0644"`, `"644"`).
pub fn opt_mode(args: &Args, name: &str) -> Result<Option<u32>, TaskError> {
    let mode = match args.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| TaskError::bad_arg(name, format!("bad mode {n}")))?,
        Some(Value::String(s)) => {
            let t = s.trim();
            let t = t.strip_prefix("0o").unwrap_or(t);
            u64::from_str_radix(t, 8).map_err(|_| {
                TaskError::bad_arg(name, format!("expected an octal mode like \"0644\", got {s:?}"))
            })?
        }
        Some(other) => {
            return Err(TaskError::bad_arg(
                name,
                format!("expected a mode, got {}", kind(other)),
            ));
        }
    };
    if mode > 0o7777 {
        return Err(TaskError::bad_arg(
            name,
            format!("mode {mode:o} is larger than 0o7777"),
        ));
    }
    Ok(Some(mode as u32))
}

pub fn opt_duration(args: &Args, name: &str) -> Result<Option<Duration>, TaskError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| *f >= 0.0)
            .map(|f| Some(Duration::from_secs_f64(f)))
            .ok_or_else(|| TaskError::bad_arg(name, format!("bad duration {n}"))),
        Some(Value::String(s)) => parse_duration(s).map(Some).ok_or_else(|| {
            TaskError::bad_arg(
                name,
                format!("expected a duration like \"2s\" or \"1m30s\", got {s:?}"),
            )
        }),
        Some(other) => Err(TaskError::bad_arg(
            name,
            format!("expected a duration, got {}", kind(other)),
        )),
    }
}

/// `"2s"`, `"500ms"`, `"1m30s"`, `"10"` (seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    humantime::parse_duration(s).ok()
}

/// A list of strings; a single string is a one-element list.
pub fn opt_str_list(args: &Args, name: &str) -> Result<Option<Vec<String>>, TaskError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                other => Err(TaskError::bad_arg(
                    name,
                    format!("list items must be strings, got {}", kind(other)),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(other) => Err(TaskError::bad_arg(
            name,
            format!("expected a list, got {}", kind(other)),
        )),
    }
}

/// A map of strings (`env { FOO "bar" }`), in the order written.
pub fn opt_str_map(args: &Args, name: &str) -> Result<Vec<(String, String)>, TaskError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => {
                        return Err(TaskError::bad_arg(
                            name,
                            format!("value of {k} must be a string, got {}", kind(other)),
                        ));
                    }
                };
                Ok((k.clone(), v))
            })
            .collect(),
        Some(other) => Err(TaskError::bad_arg(
            name,
            format!("expected a map, got {}", kind(other)),
        )),
    }
}

pub fn enum_or(args: &Args, name: &str, allowed: &[&str], default: &str) -> Result<String, TaskError> {
    let value = opt_str(args, name)?.unwrap_or_else(|| default.to_string());
    if allowed.contains(&value.as_str()) {
        Ok(value)
    } else {
        Err(TaskError::bad_arg(
            name,
            format!("expected one of {}, got {value:?}", allowed.join(", ")),
        ))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Split a command line into words the way a shell would for plain words and quotes
/// (`'single'`, `"double"`, backslash escapes), without expanding anything.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated single quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated double quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated double quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err("trailing backslash".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Args {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn modes_from_ints_and_octal_strings() {
        let a = args(json!({"a": 420, "b": "0644", "c": "0o600", "d": "9"}));
        assert_eq!(opt_mode(&a, "a").unwrap(), Some(0o644));
        assert_eq!(opt_mode(&a, "b").unwrap(), Some(0o644));
        assert_eq!(opt_mode(&a, "c").unwrap(), Some(0o600));
        assert!(opt_mode(&a, "d").is_err());
        assert_eq!(opt_mode(&a, "missing").unwrap(), None);
    }

    #[test]
    fn splits_words_like_a_shell() {
        assert_eq!(
            split_words("ls -l 'my dir' \"a\\\"b\" c\\ d").unwrap(),
            ["ls", "-l", "my dir", "a\"b", "c d"]
        );
        assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split_words("echo ''").unwrap(), ["echo", ""]);
        assert!(split_words("echo 'x").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("soon"), None);
    }
}
