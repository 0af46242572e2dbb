//! Host patterns: which hosts a play (or `--limit`) targets, with Ansible's semantics.
//!
//! A pattern is terms joined by `:` or `,`. A plain term adds hosts, `&term` keeps only
//! hosts also matched by it, `!term` removes hosts. A term is `all` (or `*`), a host
//! name, a group name (its hosts, including those of nested groups) or a glob
//! (`podc0*`, `web-?`, `db[12]`) matched against host and group names. As in Ansible the
//! order of terms does not matter (unions, then intersections, then exclusions), and a
//! pattern starting with `&` or `!` starts from `all`. Selected hosts come back in
//! inventory order, so runs are deterministic.

use std::fmt;
use std::str::FromStr;

use crate::model::{Host, HostPattern, Inventory, PatternTerm};

/// Why a pattern does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, miette::Diagnostic)]
#[error("invalid host pattern `{pattern}`: {message}")]
#[diagnostic(
    code(troupe::dsl::bad_pattern),
    help(
        "patterns are host or group names and globs joined by `:` or `,`; `&name` intersects, `!name` excludes: `etcd:!podc01`"
    )
)]
pub struct PatternError {
    pub pattern: String,
    pub message: String,
    /// Byte range of the offending term within the pattern.
    pub at: std::ops::Range<usize>,
}

impl HostPattern {
    /// Parses `etcd`, `all`, `etcd:!podc01`, `etcd:&control-plane`, `podc0*`, `a,b`.
    pub fn parse(raw: &str) -> Result<HostPattern, PatternError> {
        let err = |message: &str, at: std::ops::Range<usize>| PatternError {
            pattern: raw.to_string(),
            message: message.to_string(),
            at,
        };
        if raw.trim().is_empty() {
            return Err(err("the pattern is empty", 0..raw.len()));
        }
        let mut terms = Vec::new();
        let mut start = 0;
        for piece in raw.split([':', ',']) {
            let at = start..start + piece.len();
            start += piece.len() + 1;
            let t = piece.trim();
            if t.is_empty() {
                return Err(err("empty term (two separators in a row?)", at));
            }
            let (ctor, name): (fn(String) -> PatternTerm, &str) = if let Some(rest) = t.strip_prefix('&') {
                (PatternTerm::Intersect, rest)
            } else if let Some(rest) = t.strip_prefix('!') {
                (PatternTerm::Exclude, rest)
            } else {
                (PatternTerm::Include, t)
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(err("`&` or `!` must be followed by a name", at));
            }
            if name.contains(['&', '!']) || name.contains(char::is_whitespace) {
                return Err(err("names cannot contain `&`, `!` or spaces", at));
            }
            if !glob_is_valid(name) {
                return Err(err("unclosed `[` in glob", at));
            }
            terms.push(ctor(name.to_string()));
        }
        Ok(HostPattern {
            raw: raw.to_string(),
            terms,
        })
    }

    /// The pattern that selects every host.
    pub fn all() -> HostPattern {
        HostPattern {
            raw: "all".into(),
            terms: vec![PatternTerm::Include("all".into())],
        }
    }
}

impl FromStr for HostPattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostPattern::parse(s)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl PatternTerm {
    pub fn name(&self) -> &str {
        match self {
            PatternTerm::Include(n) | PatternTerm::Intersect(n) | PatternTerm::Exclude(n) => n,
        }
    }
}

/// Whether a term uses glob syntax.
pub fn is_glob(term: &str) -> bool {
    term.contains(['*', '?', '['])
}

impl Inventory {
    /// The hosts a pattern selects, in inventory order. The implicit `localhost` (see
    /// [`Inventory::localhost`]) is selected only by its name, never by `all` or a glob.
    pub fn select(&self, pattern: &HostPattern) -> Vec<&Host> {
        let mut includes: Vec<&str> = Vec::new();
        let mut intersects: Vec<&str> = Vec::new();
        let mut excludes: Vec<&str> = Vec::new();
        for term in &pattern.terms {
            match term {
                PatternTerm::Include(n) => includes.push(n),
                PatternTerm::Intersect(n) => intersects.push(n),
                PatternTerm::Exclude(n) => excludes.push(n),
            }
        }
        if includes.is_empty() {
            includes.push("all");
        }
        let keep = |host: &Host| {
            includes.iter().any(|t| term_matches(t, host))
                && intersects.iter().all(|t| term_matches(t, host))
                && !excludes.iter().any(|t| term_matches(t, host))
        };
        let mut out: Vec<&Host> = self.hosts.values().filter(|h| keep(h)).collect();
        if let Some(local) = &self.implicit_localhost {
            let named = |terms: &[&str]| terms.contains(&"localhost");
            if named(&includes) && intersects.iter().all(|t| *t == "localhost") && !named(&excludes) {
                out.push(local);
            }
        }
        out
    }

    /// Whether a pattern term names something in this inventory: `all`, a host, a
    /// group, `localhost`, or a glob matching at least one host or group.
    pub fn term_exists(&self, term: &str) -> bool {
        if term == "all" || term == "*" || term == "localhost" {
            return true;
        }
        if is_glob(term) {
            self.hosts
                .keys()
                .chain(self.groups.keys())
                .any(|n| glob_match(term, n))
        } else {
            self.hosts.contains_key(term) || self.groups.contains_key(term)
        }
    }
}

fn term_matches(term: &str, host: &Host) -> bool {
    if term == "all" || term == "*" {
        return true;
    }
    if is_glob(term) {
        glob_match(term, &host.name) || host.groups.iter().any(|g| glob_match(term, g))
    } else {
        host.name == term || host.groups.iter().any(|g| g == term)
    }
}

fn glob_is_valid(p: &str) -> bool {
    let mut open = false;
    for c in p.chars() {
        match c {
            '[' if !open => open = true,
            ']' if open => open = false,
            _ => {}
        }
    }
    !open
}

/// Shell-style glob: `*` any run, `?` one character, `[abc]` / `[a-z]` / `[!a]` a set.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // iterative matcher with backtracking to the last `*`: linear-ish, no recursion
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' => {
                    if let Some((matched, len)) = class_match(&p[pi..], n[ni]) {
                        if matched {
                            pi += len;
                            ni += 1;
                            continue;
                        }
                    } else if n[ni] == '[' {
                        pi += 1;
                        ni += 1;
                        continue;
                    }
                }
                c if c == n[ni] => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Matches `c` against the class starting at `p[0] == '['`; returns (matched, length of
/// the class in pattern chars), or `None` when the class is not closed.
fn class_match(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some('!' | '^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
            if p[i] <= c && c <= p[i + 2] {
                matched = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("podc0*", "podc01"));
        assert!(glob_match("podc0*", "podc0"));
        assert!(!glob_match("podc0*", "podc1"));
        assert!(glob_match("*", ""));
        assert!(glob_match("p?dc", "podc"));
        assert!(!glob_match("p?dc", "pdc"));
        assert!(glob_match("db[12]", "db1"));
        assert!(!glob_match("db[12]", "db3"));
        assert!(glob_match("db[1-3]", "db3"));
        assert!(glob_match("db[!1]", "db2"));
        assert!(!glob_match("db[!1]", "db1"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match("*a*b", "xxaxxbxx"));
        assert!(glob_match("a*", "a"));
    }

    #[test]
    fn parse_terms() {
        let p = HostPattern::parse("etcd:&control-plane:!podc01,web").unwrap();
        assert_eq!(
            p.terms,
            vec![
                PatternTerm::Include("etcd".into()),
                PatternTerm::Intersect("control-plane".into()),
                PatternTerm::Exclude("podc01".into()),
                PatternTerm::Include("web".into()),
            ]
        );
        for bad in ["", "a::b", "a:!", "a,&", "db[1", "a b"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad:?}");
        }
        let e = HostPattern::parse("etcd::x").unwrap_err();
        assert_eq!(e.at, 5..5);
    }
}
