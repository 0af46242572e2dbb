//! Typed readers for rendered module arguments. The checker already verified the
//! literal values against each module's `ArgSpec`; these run again after templates
//! were expanded, so a `{{ }}` that produced the wrong type is still caught, with the
//! argument's name in the message.
//!
//! A module's `decode` gets a [`Reader`]: the arguments together with the module's
//! spec, so an argument that is not given reads as the spec's typed default
//! (`ArgSpec::default`), which is also what `docs/modules.md` shows. A default is
//! written once, in the spec, never as a literal in `decode`.

use std::time::Duration;

use serde_json::Value;
use troupe_dsl::registry::{ArgDefault, ArgKind, ArgSpec, ModuleSpec};

use crate::module::{Args, TaskError};

/// A Rust enum standing for an `ArgKind::Enum` argument (`file`'s `state`). The spec
/// declares `ArgKind::Enum(T::NAMES)`, so the words are listed once.
pub trait Choice: Sized {
    /// The words, as the spec's `ArgKind::Enum` lists them.
    const NAMES: &'static [&'static str];
    /// The value for one of [`Self::NAMES`].
    fn from_name(name: &str) -> Option<Self>;
}

/// Declares a Rust enum for an `ArgKind::Enum` argument, each variant with its word,
/// and implements [`Choice`] and `name()` for it, so the words are written once:
///
/// ```ignore
/// choice! {
///     /// What `state=` asks the path to be.
///     pub enum State { Directory = "directory", File = "file" }
/// }
/// ```
macro_rules! choice {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident = $word:literal),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The word a playbook writes for this value.
            #[allow(dead_code, reason = "not every enum argument is shown back to the user")]
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl $crate::modules::args::Choice for $name {
            const NAMES: &'static [&'static str] = &[$($word),+];
            fn from_name(name: &str) -> Option<Self> {
                match name {
                    $($word => Some($name::$variant),)+
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use choice;

/// The rendered arguments of one task, read against the module's spec.
///
/// `opt_*` methods give `None` for an argument that is not given; the others
/// (`str`, `bool`, `u64`, `duration`, `word`, `choice`) fall back to the spec's
/// default, and `str` without a default is a required argument.
pub struct Reader<'a> {
    spec: &'static ModuleSpec,
    args: &'a Args,
}

impl<'a> Reader<'a> {
    pub fn new(spec: &'static ModuleSpec, args: &'a Args) -> Self {
        Reader { spec, args }
    }

    /// The raw arguments, for modules that pass some through untyped (`debug var=`).
    pub fn args(&self) -> &'a Args {
        self.args
    }

    /// The declaration of `name`; reading an argument the module does not declare is
    /// a bug in the module, caught by its first test.
    #[track_caller]
    fn decl(&self, name: &str) -> &'static ArgSpec {
        self.spec
            .arg(name)
            .unwrap_or_else(|| panic!("module `{}` reads undeclared argument `{name}`", self.spec.name))
    }

    /// The declared default of `name`; a reader that needs one where the spec has none
    /// is a bug in the module.
    #[track_caller]
    fn default(&self, name: &str) -> ArgDefault {
        self.decl(name)
            .default
            .unwrap_or_else(|| panic!("module `{}`: argument `{name}` has no default", self.spec.name))
    }

    #[track_caller]
    pub fn opt_str(&self, name: &str) -> Result<Option<String>, TaskError> {
        self.decl(name);
        opt_str(self.args, name)
    }

    /// The string given, else the default, else "is required".
    #[track_caller]
    pub fn str(&self, name: &str) -> Result<String, TaskError> {
        if let Some(s) = self.opt_str(name)? {
            return Ok(s);
        }
        match self.decl(name).default {
            Some(ArgDefault::Str(s)) => Ok(s.to_string()),
            None => Err(TaskError::bad_arg(name, "is required")),
            Some(other) => panic!(
                "module `{}`: `{name}` has a non-string default {other:?}",
                self.spec.name
            ),
        }
    }

    #[track_caller]
    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, TaskError> {
        self.decl(name);
        opt_bool(self.args, name)
    }

    #[track_caller]
    pub fn bool(&self, name: &str) -> Result<bool, TaskError> {
        match (self.opt_bool(name)?, self.default(name)) {
            (Some(b), _) | (None, ArgDefault::Bool(b)) => Ok(b),
            (None, other) => panic!(
                "module `{}`: `{name}` has a non-bool default {other:?}",
                self.spec.name
            ),
        }
    }

    #[track_caller]
    pub fn opt_u64(&self, name: &str) -> Result<Option<u64>, TaskError> {
        self.decl(name);
        opt_u64(self.args, name)
    }

    #[track_caller]
    pub fn u64(&self, name: &str) -> Result<u64, TaskError> {
        match (self.opt_u64(name)?, self.default(name)) {
            (Some(n), _) | (None, ArgDefault::Int(n)) => Ok(n),
            (None, other) => panic!(
                "module `{}`: `{name}` has a non-integer default {other:?}",
                self.spec.name
            ),
        }
    }

    #[track_caller]
    pub fn opt_mode(&self, name: &str) -> Result<Option<u32>, TaskError> {
        self.decl(name);
        opt_mode(self.args, name)
    }

    #[track_caller]
    pub fn opt_duration(&self, name: &str) -> Result<Option<Duration>, TaskError> {
        self.decl(name);
        opt_duration(self.args, name)
    }

    #[track_caller]
    pub fn duration(&self, name: &str) -> Result<Duration, TaskError> {
        match (self.opt_duration(name)?, self.default(name)) {
            (Some(d), _) | (None, ArgDefault::Duration(d)) => Ok(d),
            (None, other) => panic!(
                "module `{}`: `{name}` has a non-duration default {other:?}",
                self.spec.name
            ),
        }
    }

    #[track_caller]
    pub fn opt_str_list(&self, name: &str) -> Result<Option<Vec<String>>, TaskError> {
        self.decl(name);
        opt_str_list(self.args, name)
    }

    #[track_caller]
    pub fn str_map(&self, name: &str) -> Result<Vec<(String, String)>, TaskError> {
        self.decl(name);
        opt_str_map(self.args, name)
    }

    /// One of the words of an `ArgKind::Enum` argument, given or the default.
    #[track_caller]
    pub fn word(&self, name: &str) -> Result<&'static str, TaskError> {
        Ok(self.opt_word(name)?.unwrap_or_else(|| match self.default(name) {
            ArgDefault::Str(s) => s,
            other => panic!(
                "module `{}`: `{name}` has a non-string default {other:?}",
                self.spec.name
            ),
        }))
    }

    /// One of the words of an `ArgKind::Enum` argument, `None` when not given.
    #[track_caller]
    pub fn opt_word(&self, name: &str) -> Result<Option<&'static str>, TaskError> {
        let ArgKind::Enum(words) = self.decl(name).kind else {
            panic!("module `{}`: `{name}` is not an enum argument", self.spec.name)
        };
        match opt_str(self.args, name)? {
            None => Ok(None),
            Some(value) => words
                .iter()
                .copied()
                .find(|w| *w == value)
                .map(Some)
                .ok_or_else(|| {
                    TaskError::bad_arg(
                        name,
                        format!("expected one of {}, got {value:?}", words.join(", ")),
                    )
                }),
        }
    }

    /// An `ArgKind::Enum` argument as its Rust enum, given or the default.
    #[track_caller]
    pub fn choice<T: Choice>(&self, name: &str) -> Result<T, TaskError> {
        let word = self.word(name)?;
        Ok(T::from_name(word).unwrap_or_else(|| {
            panic!(
                "module `{}`: `{name}` word {word:?} is not in its enum",
                self.spec.name
            )
        }))
    }

    /// An `ArgKind::Enum` argument as its Rust enum, `None` when not given.
    #[track_caller]
    pub fn opt_choice<T: Choice>(&self, name: &str) -> Result<Option<T>, TaskError> {
        Ok(self.opt_word(name)?.map(|word| {
            T::from_name(word).unwrap_or_else(|| {
                panic!(
                    "module `{}`: `{name}` word {word:?} is not in its enum",
                    self.spec.name
                )
            })
        }))
    }
}

fn opt_str(args: &Args, name: &str) -> Result<Option<String>, TaskError> {
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

fn opt_bool(args: &Args, name: &str) -> Result<Option<bool>, TaskError> {
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

fn opt_u64(args: &Args, name: &str) -> Result<Option<u64>, TaskError> {
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
fn opt_mode(args: &Args, name: &str) -> Result<Option<u32>, TaskError> {
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

fn opt_duration(args: &Args, name: &str) -> Result<Option<Duration>, TaskError> {
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
fn opt_str_list(args: &Args, name: &str) -> Result<Option<Vec<String>>, TaskError> {
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
fn opt_str_map(args: &Args, name: &str) -> Result<Vec<(String, String)>, TaskError> {
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
