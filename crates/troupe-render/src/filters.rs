//! Filters, functions and tests that troupe adds to minijinja's built-ins.
//!
//! They exist for the jobs troupe's templates do: etcd member URLs built from the
//! inventory (so no IP is ever typed twice), quoting for the three places a value ends
//! up (YAML, POSIX shell, systemd environment files), and the Ansible filters operators
//! reach for (`to_yaml`, `b64encode`, `mandatory`, ...). Every one is documented with an
//! example in `docs/templates.md`, and that document's examples are run as a test.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use base64::Engine as _;
use minijinja::value::{Kwargs, Rest, StringInput, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, Value};
use sha2::Digest as _;

pub(crate) fn register(env: &mut Environment<'static>) {
    env.add_filter("initial_cluster", initial_cluster);
    env.add_filter("etcd_endpoints", etcd_endpoints);
    env.add_filter("etcd_peer_urls", etcd_peer_urls);
    env.add_filter("to_json", to_json);
    env.add_filter("to_nice_json", to_nice_json);
    env.add_filter("to_yaml", to_yaml);
    env.add_filter("to_yaml_string", to_yaml_string);
    env.add_filter("yaml_quote", yaml_quote);
    env.add_filter("b64encode", b64encode);
    env.add_filter("b64decode", b64decode);
    env.add_filter("quote", quote);
    env.add_filter("sha256", sha256);
    env.add_filter("basename", basename);
    env.add_filter("dirname", dirname);
    env.add_filter("mandatory", mandatory);
    env.add_filter("regex_replace", regex_replace);
    env.add_filter("regex_search", regex_search);
    env.add_filter("regex_findall", regex_findall);
    env.add_filter("combine", crate::data::combine);
    env.add_filter("dict2items", crate::data::dict2items);
    env.add_filter("items2dict", crate::data::items2dict);
    env.add_filter("ternary", crate::data::ternary);
    env.add_filter("flatten", crate::data::flatten);
    env.add_filter("difference", crate::data::difference);
    env.add_filter("intersect", crate::data::intersect);
    env.add_filter("union", crate::data::union);
    env.add_filter("symmetric_difference", crate::data::symmetric_difference);
    env.add_filter("from_json", crate::data::from_json);
    env.add_filter("from_yaml", crate::data::from_yaml);
    env.add_filter("from_yaml_all", crate::data::from_yaml_all);
    env.add_filter("to_nice_yaml", crate::data::to_nice_yaml);
    env.add_filter("hash", crate::digest::hash);
    env.add_filter("password_hash", crate::digest::password_hash);
    env.add_filter("ipaddr", crate::ipaddr::ipaddr);
    env.add_filter("ipv4", crate::ipaddr::ipv4);
    env.add_filter("ipv6", crate::ipaddr::ipv6);
    crate::checks::register(env);
    env.add_filter("ipwrap", ipwrap);
    env.add_function("fail", fail);
}

/// Strict undefined for filters that take any value: fails the way minijinja's own
/// filters do, naming the undefined expression.
pub(crate) fn defined(state: &State, value: &Value) -> Result<(), Error> {
    if value.is_undefined() {
        StringInput::new(state, value)?;
    }
    Ok(())
}

pub(crate) fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

// ---------------------------------------------------------------------------------
// etcd member URLs

/// One etcd member as the URL filters see it.
struct Member {
    name: String,
    /// Host (IP or DNS name) for building URLs, when no full URL was given.
    address: Option<String>,
    /// Per-host port override from hostvars (`etcd_peer_port` / `etcd_client_port`).
    port: Option<u16>,
    /// A complete URL given by a member map (`peer_url`, `peer_urls[0]`, ...).
    url: Option<String>,
}

#[derive(Clone, Copy)]
enum Which {
    Peer,
    Client,
}

impl Which {
    fn default_port(self) -> u16 {
        match self {
            Which::Peer => 2380,
            Which::Client => 2379,
        }
    }
    fn port_var(self) -> &'static str {
        match self {
            Which::Peer => "etcd_peer_port",
            Which::Client => "etcd_client_port",
        }
    }
    fn url_keys(self) -> (&'static str, &'static str) {
        match self {
            Which::Peer => ("peer_url", "peer_urls"),
            Which::Client => ("client_url", "client_urls"),
        }
    }
}

fn attr(v: &Value, key: &str) -> Option<Value> {
    let item = v.get_item(&Value::from(key)).ok()?;
    (!item.is_undefined() && !item.is_none()).then_some(item)
}

fn attr_str(v: &Value, key: &str) -> Result<Option<String>, Error> {
    match attr(v, key) {
        None => Ok(None),
        Some(x) if x.kind() == ValueKind::String => Ok(Some(x.as_str().unwrap_or("").to_string())),
        Some(x) if x.kind() == ValueKind::Number => Ok(Some(x.to_string())),
        Some(x) => Err(invalid(format!("`{key}` must be a string, got {}", x.kind()))),
    }
}

fn attr_port(v: &Value, key: &str) -> Result<Option<u16>, Error> {
    match attr(v, key) {
        None => Ok(None),
        Some(x) => {
            let port = x
                .as_i64()
                .or_else(|| x.as_str().and_then(|s| s.trim().parse().ok()))
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| invalid(format!("`{key}` must be a port number, got {x}")))?;
            Ok(Some(port))
        }
    }
}

/// Resolves the list given to the etcd URL filters into members: host names looked up
/// in hostvars, or maps with `name` and an address or URL.
fn members(
    state: &State,
    hosts: &Value,
    hostvars: Option<Value>,
    which: Which,
) -> Result<Vec<Member>, Error> {
    let iter = hosts.try_iter().map_err(|_| {
        invalid(format!(
            "expected a list of host names or member maps, got {}",
            hosts.kind()
        ))
    })?;
    let hostvars = match hostvars {
        Some(hv) => Some(hv),
        None => state.lookup("hostvars"),
    };
    let mut out = Vec::new();
    for item in iter {
        if let Some(host) = item.as_str() {
            let hv = hostvars
                .as_ref()
                .ok_or_else(|| invalid("`hostvars` is not available to resolve host names"))?;
            let vars = hv.get_item(&item).unwrap_or_default();
            if vars.is_undefined() {
                return Err(invalid(format!(
                    "host `{host}` is not in hostvars (is it in the inventory?)"
                )));
            }
            let address = match attr_str(&vars, "etcd_address")? {
                Some(a) => a,
                None => attr_str(&vars, "address")?.ok_or_else(|| {
                    invalid(format!(
                        "host `{host}` has neither `etcd_address` nor `address` set"
                    ))
                })?,
            };
            out.push(Member {
                name: attr_str(&vars, "etcd_name")?.unwrap_or_else(|| host.to_string()),
                address: Some(address),
                port: attr_port(&vars, which.port_var())?,
                url: None,
            });
        } else if item.kind() == ValueKind::Map {
            let name =
                attr_str(&item, "name")?.ok_or_else(|| invalid(format!("member {item} has no `name`")))?;
            let (one, many) = which.url_keys();
            let url = match attr_str(&item, one)? {
                Some(u) => Some(u),
                None => match attr(&item, many) {
                    Some(list) => list
                        .try_iter()
                        .ok()
                        .and_then(|mut i| i.next())
                        .and_then(|u| u.as_str().map(str::to_string)),
                    None => None,
                },
            };
            let address = match attr_str(&item, "etcd_address")? {
                Some(a) => Some(a),
                None => attr_str(&item, "address")?,
            };
            if url.is_none() && address.is_none() {
                return Err(invalid(format!(
                    "member `{name}` has none of `{one}`, `{many}`, `etcd_address`, `address`"
                )));
            }
            out.push(Member {
                name,
                address,
                port: attr_port(&item, which.port_var())?,
                url,
            });
        } else {
            return Err(invalid(format!(
                "expected a host name or a member map, got {} ({item})",
                item.kind()
            )));
        }
    }
    Ok(out)
}

fn member_url(m: &Member, which: Which, kwargs: &UrlArgs) -> String {
    if let Some(url) = &m.url {
        return url.clone();
    }
    let port = kwargs.port.or(m.port).unwrap_or(which.default_port());
    let address = m.address.as_deref().unwrap_or_default();
    format!("{}://{}:{port}", kwargs.scheme, wrap_ipv6(address))
}

struct UrlArgs {
    scheme: String,
    port: Option<u16>,
}

fn url_args(kwargs: &Kwargs) -> Result<UrlArgs, Error> {
    let scheme: Option<String> = kwargs.get("scheme")?;
    let port: Option<u16> = kwargs.get("port")?;
    kwargs.assert_all_used()?;
    Ok(UrlArgs {
        scheme: scheme.unwrap_or_else(|| "https".into()),
        port,
    })
}

/// `groups.etcd | initial_cluster(hostvars)` → `podc01=https://10.1.1.201:2380,...`
fn initial_cluster(
    state: &State,
    hosts: Value,
    hostvars: Option<Value>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let args = url_args(&kwargs)?;
    let members = members(state, &hosts, hostvars, Which::Peer)?;
    if members.is_empty() {
        return Err(invalid("initial_cluster needs at least one member"));
    }
    Ok(members
        .iter()
        .map(|m| format!("{}={}", m.name, member_url(m, Which::Peer, &args)))
        .collect::<Vec<_>>()
        .join(","))
}

/// `groups.etcd | etcd_endpoints(hostvars)` → `https://10.1.1.201:2379,...`
fn etcd_endpoints(
    state: &State,
    hosts: Value,
    hostvars: Option<Value>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let args = url_args(&kwargs)?;
    let members = members(state, &hosts, hostvars, Which::Client)?;
    Ok(members
        .iter()
        .map(|m| member_url(m, Which::Client, &args))
        .collect::<Vec<_>>()
        .join(","))
}

/// `groups.etcd | etcd_peer_urls(hostvars)` → `https://10.1.1.201:2380,...`
fn etcd_peer_urls(
    state: &State,
    hosts: Value,
    hostvars: Option<Value>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let args = url_args(&kwargs)?;
    let members = members(state, &hosts, hostvars, Which::Peer)?;
    Ok(members
        .iter()
        .map(|m| member_url(m, Which::Peer, &args))
        .collect::<Vec<_>>()
        .join(","))
}

fn wrap_ipv6(address: &str) -> String {
    if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]")
    } else {
        address.to_string()
    }
}

/// `"::1" | ipwrap` → `[::1]`; IPv4 addresses and names are unchanged.
fn ipwrap(address: StringInput<'_>) -> String {
    wrap_ipv6(address.as_str())
}

// ---------------------------------------------------------------------------------
// serialisation

fn to_json(state: &State, value: &Value) -> Result<String, Error> {
    defined(state, value)?;
    serde_json::to_string(value).map_err(|e| invalid(format!("cannot serialise to JSON: {e}")))
}

fn to_nice_json(state: &State, value: &Value, kwargs: Kwargs) -> Result<String, Error> {
    defined(state, value)?;
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let indent = " ".repeat(indent.unwrap_or(4));
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(value, &mut ser)
        .map_err(|e| invalid(format!("cannot serialise to JSON: {e}")))?;
    Ok(String::from_utf8(out).expect("serde_json writes UTF-8"))
}

fn to_yaml(state: &State, value: &Value) -> Result<String, Error> {
    defined(state, value)?;
    serde_yaml::to_string(value).map_err(|e| invalid(format!("cannot serialise to YAML: {e}")))
}

/// One YAML scalar, quoted only when YAML would otherwise read it as something else.
fn to_yaml_string(state: &State, value: &Value) -> Result<String, Error> {
    defined(state, value)?;
    match value.kind() {
        ValueKind::Map | ValueKind::Seq => Err(invalid(
            "to_yaml_string takes a scalar; use to_yaml for lists and maps",
        )),
        ValueKind::String => Ok(yaml_scalar(value.as_str().unwrap_or_default())),
        _ => {
            let out = serde_yaml::to_string(value)
                .map_err(|e| invalid(format!("cannot serialise to YAML: {e}")))?;
            Ok(out.trim_end().to_string())
        }
    }
}

/// What YAML 1.1 or 1.2 would resolve as a number (int, float, base 60, inf/nan), so a
/// string spelt like one must be quoted. An IPv4 address is not one (go-yaml, like
/// kubeadm's output, keeps `127.0.0.1` a string).
fn yaml_number() -> &'static regex::Regex {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(concat!(
            r"^(?:[-+]?(?:0b[01_]+|0x[0-9a-fA-F_]+|0o?[0-7_]+|[0-9][0-9_]*)",
            r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?",
            r"|[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+]?[0-9]+)?",
            r"|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+",
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        ))
        .expect("valid regex")
    })
}

/// A string as one YAML scalar: plain when every YAML reader (1.2 like serde_yaml, and
/// 1.1 like the go-yaml inside Kubernetes, where `yes`, `on` and `1:20` are not
/// strings) reads it back as the same string; double-quoted otherwise.
pub(crate) fn yaml_scalar(s: &str) -> String {
    let yaml11_special = ["y", "yes", "n", "no", "true", "false", "on", "off", "null", "~"]
        .contains(&s.to_ascii_lowercase().as_str());
    let numeric_looking =
        s.starts_with(|c: char| c.is_ascii_digit() || "+-.".contains(c)) && yaml_number().is_match(s);
    // Fast path for the usual flag or path: only characters that are plain in a block
    // scalar anywhere but at the start, and a start that is no YAML indicator (`-` only
    // as in `--flag`).
    let safe_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._=,:+-".contains(c));
    let safe_start = s.starts_with(|c: char| c.is_ascii_alphanumeric() || "/._".contains(c))
        || (s.starts_with('-') && s.len() > 1 && !s.starts_with("---"));
    let simple = safe_chars && safe_start;
    if simple && !s.ends_with(':') && !yaml11_special && !numeric_looking {
        return s.to_string();
    }
    let plain_by_serde = serde_yaml::to_string(s).is_ok_and(|out| out.trim_end() == s && !s.contains('\n'));
    if plain_by_serde && !yaml11_special && !numeric_looking {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("a string always serialises")
    }
}

/// A YAML double-quoted scalar, always quoted (JSON string syntax is valid YAML).
fn yaml_quote(state: &State, value: &Value) -> Result<String, Error> {
    defined(state, value)?;
    let s = match value.as_str() {
        Some(s) => s.to_string(),
        None => value.to_string(),
    };
    Ok(serde_json::to_string(&s).expect("a string always serialises"))
}

// ---------------------------------------------------------------------------------
// strings

fn b64encode(value: StringInput<'_>) -> String {
    base64::engine::general_purpose::STANDARD.encode(value.as_str().as_bytes())
}

fn b64decode(value: StringInput<'_>) -> Result<String, Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.as_str().trim())
        .map_err(|e| invalid(format!("not valid base64: {e}")))?;
    String::from_utf8(bytes).map_err(|_| invalid("the decoded bytes are not UTF-8 text"))
}

/// POSIX shell quoting, like Python's `shlex.quote` (Ansible's `quote`): safe words are
/// left alone, everything else is single-quoted with `'\''` for embedded quotes. The
/// result is also valid in a systemd `EnvironmentFile=`.
pub(crate) fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn quote(value: StringInput<'_>) -> String {
    shell_quote(value.as_str())
}

fn sha256(value: StringInput<'_>) -> String {
    hex::encode(sha2::Sha256::digest(value.as_str().as_bytes()))
}

/// Python's `os.path.basename`: the part after the last `/` (empty for `a/`).
fn basename(path: StringInput<'_>) -> String {
    basename_str(path.as_str())
}

fn basename_str(path: &str) -> String {
    path.rsplit_once('/').map_or(path, |(_, b)| b).to_string()
}

/// Python's `os.path.dirname`: the part before the last `/`, trailing slashes removed
/// unless it is all slashes.
fn dirname(path: StringInput<'_>) -> String {
    dirname_str(path.as_str())
}

fn dirname_str(path: &str) -> String {
    match path.rfind('/') {
        None => String::new(),
        Some(i) => {
            let head = &path[..=i];
            let trimmed = head.trim_end_matches('/');
            if trimmed.is_empty() {
                head.to_string()
            } else {
                trimmed.to_string()
            }
        }
    }
}

/// Fails with `msg` (or a standard message) when the value is undefined.
fn mandatory(value: &Value, msg: Option<String>) -> Result<Value, Error> {
    if value.is_undefined() {
        return Err(invalid(
            msg.unwrap_or_else(|| "a mandatory value is undefined".into()),
        ));
    }
    Ok(value.clone())
}

/// `fail("message")`: stops rendering with the message (for template-side checks).
fn fail(msg: String) -> Result<Value, Error> {
    Err(invalid(msg))
}

/// Compiled patterns by (pattern, ignorecase, multiline).
type RegexCache = Mutex<HashMap<(String, bool, bool), regex::Regex>>;

fn regex_cache() -> &'static RegexCache {
    static CACHE: OnceLock<RegexCache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The flags Ansible's regex filters take as keyword arguments.
fn regex_flags(kwargs: &Kwargs) -> Result<(bool, bool), Error> {
    let ignorecase: Option<bool> = kwargs.get("ignorecase")?;
    let multiline: Option<bool> = kwargs.get("multiline")?;
    kwargs.assert_all_used()?;
    Ok((ignorecase.unwrap_or(false), multiline.unwrap_or(false)))
}

/// A compiled regular expression, cached (the engine renders per host per task).
fn compiled(pattern: &str, ignorecase: bool, multiline: bool) -> Result<regex::Regex, Error> {
    let key = (pattern.to_string(), ignorecase, multiline);
    let mut cache = regex_cache().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(re) = cache.get(&key) {
        return Ok(re.clone());
    }
    let re = regex::RegexBuilder::new(pattern)
        .case_insensitive(ignorecase)
        .multi_line(multiline)
        .build()
        .map_err(|e| invalid(format!("invalid regular expression: {e}")))?;
    if cache.len() < 256 {
        cache.insert(key, re.clone());
    }
    Ok(re)
}

/// Ansible's `regex_replace(pattern, replacement, ignorecase=false, multiline=false)`,
/// with Python's `\1` / `\g<name>` back-references in the replacement.
fn regex_replace(
    value: StringInput<'_>,
    pattern: &str,
    replacement: Option<&str>,
    kwargs: Kwargs,
) -> Result<String, Error> {
    let (ignorecase, multiline) = regex_flags(&kwargs)?;
    let re = compiled(pattern, ignorecase, multiline)?;
    let replacement = python_replacement(replacement.unwrap_or(""));
    Ok(re.replace_all(value.as_str(), replacement.as_str()).into_owned())
}

/// Ansible's `regex_search(pattern, '\\1', '\\g<name>', ..., ignorecase, multiline)`:
/// the first match as a string, or with group arguments the list of those groups;
/// none when nothing matches.
fn regex_search(
    value: StringInput<'_>,
    pattern: &str,
    groups: Rest<String>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let (ignorecase, multiline) = regex_flags(&kwargs)?;
    let re = compiled(pattern, ignorecase, multiline)?;
    let Some(caps) = re.captures(value.as_str()) else {
        return Ok(Value::from(()));
    };
    if groups.is_empty() {
        return Ok(Value::from(caps.get(0).map_or("", |m| m.as_str())));
    }
    let mut out = Vec::with_capacity(groups.len());
    for g in groups.iter() {
        let m = if let Some(n) = g.strip_prefix('\\').and_then(|n| n.parse::<usize>().ok()) {
            if n >= caps.len() {
                return Err(invalid(format!("regex_search: the pattern has no group {n}")));
            }
            caps.get(n)
        } else if let Some(name) = g.strip_prefix("\\g<").and_then(|n| n.strip_suffix('>')) {
            if !re.capture_names().any(|c| c == Some(name)) {
                return Err(invalid(format!(
                    "regex_search: the pattern has no group named `{name}`"
                )));
            }
            caps.name(name)
        } else {
            return Err(invalid(format!(
                "regex_search: a group argument is written `\\\\1` or `\\\\g<name>`, got `{g}`"
            )));
        };
        out.push(m.map_or(Value::from(()), |m| Value::from(m.as_str())));
    }
    Ok(Value::from(out))
}

/// Ansible's `regex_findall(pattern, ignorecase, multiline)`, Python's `re.findall`:
/// every match; with one group, that group of every match; with several, a list of
/// the groups for each match.
fn regex_findall(value: StringInput<'_>, pattern: &str, kwargs: Kwargs) -> Result<Value, Error> {
    let (ignorecase, multiline) = regex_flags(&kwargs)?;
    let re = compiled(pattern, ignorecase, multiline)?;
    let groups = re.captures_len() - 1;
    let text = |m: Option<regex::Match<'_>>| Value::from(m.map_or("", |m| m.as_str()));
    let out: Vec<Value> = re
        .captures_iter(value.as_str())
        .map(|c| match groups {
            0 => text(c.get(0)),
            1 => text(c.get(1)),
            n => Value::from((1..=n).map(|i| text(c.get(i))).collect::<Vec<_>>()),
        })
        .collect();
    Ok(Value::from(out))
}

/// `\1` → `${1}`, `\g<name>` → `${name}`, `$` → `$$`, `\\` → `\`.
fn python_replacement(r: &str) -> String {
    let mut out = String::with_capacity(r.len());
    let mut chars = r.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    let mut n = String::new();
                    while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                        n.push(d);
                        chars.next();
                    }
                    out.push_str(&format!("${{{n}}}"));
                }
                Some('g') => {
                    chars.next();
                    if chars.peek() == Some(&'<') {
                        chars.next();
                        let name: String = chars.by_ref().take_while(|c| *c != '>').collect();
                        out.push_str(&format!("${{{name}}}"));
                    } else {
                        out.push_str("\\g");
                    }
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                Some('n') => {
                    chars.next();
                    out.push('\n');
                }
                Some('t') => {
                    chars.next();
                    out.push('\t');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quote_leaves_safe_words_and_quotes_the_rest() {
        assert_eq!(
            shell_quote("--initial-cluster-state=new"),
            "--initial-cluster-state=new"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$HOME"), "'$HOME'");
    }

    #[test]
    fn dirname_and_basename_follow_python() {
        assert_eq!(basename_str("/etc/kubernetes/pki/etcd/ca.crt"), "ca.crt");
        assert_eq!(basename_str("dir/"), "");
        assert_eq!(basename_str("file"), "file");
        assert_eq!(
            dirname_str("/etc/kubernetes/pki/etcd/ca.crt"),
            "/etc/kubernetes/pki/etcd"
        );
        assert_eq!(dirname_str("/ca.crt"), "/");
        assert_eq!(dirname_str("ca.crt"), "");
        assert_eq!(dirname_str("a//b"), "a");
    }

    #[test]
    fn python_replacements_become_regex_crate_syntax() {
        assert_eq!(python_replacement(r"\1-\2"), "${1}-${2}");
        assert_eq!(python_replacement(r"\g<port>"), "${port}");
        assert_eq!(python_replacement("cost $5"), "cost $$5");
    }

    #[test]
    fn yaml_scalars_are_plain_only_when_every_reader_agrees() {
        assert_eq!(
            yaml_scalar("--initial-cluster-state=new"),
            "--initial-cluster-state=new"
        );
        assert_eq!(
            yaml_scalar("--initial-cluster=a=https://10.1.1.201:2380,b=https://[::1]:2380"),
            "--initial-cluster=a=https://10.1.1.201:2380,b=https://[::1]:2380"
        );
        assert_eq!(yaml_scalar("/var/lib/etcd"), "/var/lib/etcd");
        for quoted in [
            "yes",
            "On",
            "null",
            "~",
            "123",
            "1:20",
            "0x1F",
            "1e3",
            "",
            "a: b",
            "#x",
            "- a",
            "line\nbreak",
        ] {
            assert!(
                yaml_scalar(quoted).starts_with('"'),
                "{quoted:?} -> {}",
                yaml_scalar(quoted)
            );
            let back: String = serde_yaml::from_str(&yaml_scalar(quoted)).unwrap();
            assert_eq!(back, quoted);
        }
    }

    #[test]
    fn ipv6_addresses_are_bracketed() {
        assert_eq!(wrap_ipv6("::1"), "[::1]");
        assert_eq!(wrap_ipv6("[::1]"), "[::1]");
        assert_eq!(wrap_ipv6("10.1.1.201"), "10.1.1.201");
    }
}
