//! Line-level edits of Kubernetes static-pod manifests.
//!
//! Repointing kube-apiserver at a new etcd cluster (the seed's step 7) means changing
//! four flags in `/etc/kubernetes/manifests/kube-apiserver.yaml`, a file kubeadm wrote
//! and operators may have annotated. Re-serialising the YAML would reorder keys, drop
//! comments and reformat strings, and kubelet restarts the apiserver on any byte
//! change, so [`set_container_flags`] edits only the lines of one container's `command`
//! list and leaves every other byte alone. After editing it parses both versions and
//! checks that the command list is the only difference; if not, it refuses.

use serde_yaml::Value as Yaml;

/// Why a manifest could not be edited.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum ManifestError {
    #[error("the manifest is not valid YAML")]
    #[diagnostic(
        code(troupe::manifest::not_yaml),
        help("fix the file by hand first: kubelet cannot read it either")
    )]
    NotYaml {
        #[source]
        source: serde_yaml::Error,
    },

    #[error("the manifest has no `spec.containers` list")]
    #[diagnostic(
        code(troupe::manifest::no_containers),
        help("this edits static-pod manifests such as kube-apiserver.yaml; check the path")
    )]
    NoContainers,

    #[error("no container named `{container}` in the manifest (found: {found})")]
    #[diagnostic(
        code(troupe::manifest::container_not_found),
        help("set the container name to one of those listed")
    )]
    ContainerNotFound { container: String, found: String },

    #[error("container `{container}` has no `command` list")]
    #[diagnostic(
        code(troupe::manifest::no_command),
        help("kubeadm puts the flags in `command`; flags in `args` are not edited")
    )]
    NoCommand { container: String },

    #[error("line {line}: {what}")]
    #[diagnostic(
        code(troupe::manifest::unsupported),
        help("write the command list in block style, one `- --flag=value` per line, as kubeadm does")
    )]
    Unsupported { line: usize, what: String },

    #[error("`{flag}` is not a flag name")]
    #[diagnostic(
        code(troupe::manifest::bad_flag),
        help("give names like `etcd-servers` (with or without the leading `--`), without `=`")
    )]
    BadFlag { flag: String },

    #[error("the edit would change more than the command list: {detail}")]
    #[diagnostic(
        code(troupe::manifest::verify),
        help("the file has a layout this editor does not understand; edit it by hand and report it")
    )]
    Verify { detail: String },
}

/// Sets `--flag=value` for each of `flags` in the `command` list of the container named
/// `container` in `spec.containers`: existing entries of a flag are rewritten in place
/// (keeping their indentation and trailing comment), missing flags are appended after
/// the last entry. Everything else in the file is returned byte for byte.
///
/// Flag names may be given with or without the leading `--`.
pub fn set_container_flags(
    manifest_yaml: &str,
    container: &str,
    flags: &[(String, String)],
) -> Result<String, ManifestError> {
    let original: Yaml =
        serde_yaml::from_str(manifest_yaml).map_err(|source| ManifestError::NotYaml { source })?;
    let flags = flags
        .iter()
        .map(|(name, value)| {
            let bare = name.strip_prefix("--").unwrap_or(name);
            if bare.is_empty() || bare.starts_with('-') || bare.contains(['=', ' ', '\n']) {
                return Err(ManifestError::BadFlag { flag: name.clone() });
            }
            Ok((bare.to_string(), value.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;

    let lines: Vec<Line<'_>> = manifest_yaml.split_inclusive('\n').map(Line::new).collect();
    let command = find_command(&lines, container)?;

    // Parse each entry of the command list.
    let mut entries = Vec::new();
    for &i in &command.entries {
        entries.push(Entry::parse(&lines[i], i)?);
    }

    let mut replaced: Vec<Option<String>> = vec![None; lines.len()];
    let mut appended = Vec::new();
    for (name, value) in &flags {
        let text = yaml_scalar(&format!("--{name}={value}"));
        let mut found = false;
        for e in &entries {
            if e.flag_name() == Some(name.as_str()) {
                replaced[e.index] = Some(format!("{}{}{}", e.prefix, text, e.comment));
                found = true;
            }
        }
        if !found {
            appended.push(text);
        }
    }

    let last = *command
        .entries
        .last()
        .expect("find_command returns a non-empty list");
    let mut out = String::with_capacity(manifest_yaml.len() + 64 * appended.len());
    for (i, line) in lines.iter().enumerate() {
        let eol = if i == last && !appended.is_empty() && line.eol.is_empty() {
            "\n"
        } else {
            line.eol
        };
        match &replaced[i] {
            Some(text) => {
                out.push_str(text);
                out.push_str(eol);
            }
            None => {
                out.push_str(line.text);
                out.push_str(eol);
            }
        }
        if i == last {
            let prefix = entries.last().map(|e| e.prefix.as_str()).unwrap_or("- ");
            let nl = if line.eol.is_empty() { "\n" } else { line.eol };
            for (n, text) in appended.iter().enumerate() {
                out.push_str(prefix);
                out.push_str(text);
                // Keep "no newline at end of file" if that is how the file ended here.
                if n + 1 < appended.len() || !line.eol.is_empty() {
                    out.push_str(nl);
                }
            }
        }
    }

    verify(&original, &out, container, &flags)?;
    Ok(out)
}

/// A line without its line ending, and the ending (`\n`, `\r\n` or nothing).
struct Line<'a> {
    text: &'a str,
    eol: &'a str,
}

impl<'a> Line<'a> {
    fn new(raw: &'a str) -> Line<'a> {
        let text = raw.trim_end_matches(['\n', '\r']);
        Line {
            text,
            eol: &raw[text.len()..],
        }
    }
    fn indent(&self) -> usize {
        self.text.len() - self.text.trim_start_matches(' ').len()
    }
    /// Blank or comment-only lines do not take part in YAML's block structure.
    fn is_filler(&self) -> bool {
        let t = self.text.trim_start();
        t.is_empty() || t.starts_with('#')
    }
    fn body(&self) -> &'a str {
        self.text.trim_start_matches(' ')
    }
    fn is_dash(&self) -> bool {
        let b = self.body();
        b == "-" || b.starts_with("- ")
    }
}

/// `key: rest` → (`key`, `rest` without a trailing comment), for block mapping keys.
fn split_key(body: &str) -> Option<(&str, &str)> {
    let (key, rest) = body.split_once(':')?;
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return None;
    }
    let key = key.trim();
    let key = key
        .strip_prefix('"')
        .and_then(|k| k.strip_suffix('"'))
        .or_else(|| key.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')))
        .unwrap_or(key);
    let rest = rest.trim();
    let rest = if rest.starts_with('#') { "" } else { rest };
    Some((key, rest))
}

fn unsupported(line: usize, what: impl Into<String>) -> ManifestError {
    ManifestError::Unsupported {
        line: line + 1,
        what: what.into(),
    }
}

/// Lines `from..` that belong to the block whose children are indented more than
/// `parent_indent` (filler lines included); returns the end index.
fn block_end(lines: &[Line<'_>], from: usize, parent_indent: usize, allow_dash_at_parent: bool) -> usize {
    let mut end = from;
    for (i, l) in lines.iter().enumerate().skip(from) {
        if l.is_filler() {
            continue;
        }
        let ind = l.indent();
        if ind > parent_indent || (allow_dash_at_parent && ind == parent_indent && l.is_dash()) {
            end = i + 1;
        } else {
            break;
        }
    }
    end
}

struct Command {
    /// Indexes of the lines holding the command's entries.
    entries: Vec<usize>,
}

fn find_command(lines: &[Line<'_>], container: &str) -> Result<Command, ManifestError> {
    // The top-level `spec:` key.
    let spec = lines
        .iter()
        .position(|l| !l.is_filler() && l.indent() == 0 && split_key(l.body()) == Some(("spec", "")))
        .ok_or(ManifestError::NoContainers)?;
    let spec_end = block_end(lines, spec + 1, 0, false);
    // `containers:` among spec's direct children.
    let child_indent = lines[spec + 1..spec_end]
        .iter()
        .find(|l| !l.is_filler())
        .map(Line::indent)
        .ok_or(ManifestError::NoContainers)?;
    let containers = (spec + 1..spec_end)
        .find(|&i| {
            let l = &lines[i];
            !l.is_filler()
                && l.indent() == child_indent
                && split_key(l.body()).is_some_and(|(k, _)| k == "containers")
        })
        .ok_or(ManifestError::NoContainers)?;
    if let Some((_, rest)) = split_key(lines[containers].body())
        && !rest.is_empty()
    {
        return Err(unsupported(containers, "`containers` is not a block list"));
    }
    let list_end = block_end(lines, containers + 1, child_indent, true);
    let first = (containers + 1..list_end)
        .find(|&i| !lines[i].is_filler())
        .ok_or(ManifestError::NoContainers)?;
    if !lines[first].is_dash() {
        return Err(unsupported(first, "`containers` is not a block list"));
    }
    let item_indent = lines[first].indent();

    // Split the list into items.
    let mut items: Vec<(usize, usize)> = Vec::new();
    for (i, l) in lines.iter().enumerate().take(list_end).skip(first) {
        if !l.is_filler() && l.indent() == item_indent && l.is_dash() {
            if let Some(last) = items.last_mut() {
                last.1 = i;
            }
            items.push((i, list_end));
        }
    }

    let mut names = Vec::new();
    for &(start, end) in &items {
        let dash = &lines[start];
        let after_dash = &dash.body()[1..];
        let key_col = item_indent + 1 + (after_dash.len() - after_dash.trim_start_matches(' ').len());
        // Keys of this item: the rest of the dash line, then lines at key_col.
        let mut keys: Vec<(usize, &str, &str)> = Vec::new();
        if let Some((k, v)) = split_key(after_dash.trim_start()) {
            keys.push((start, k, v));
        }
        for (i, l) in lines.iter().enumerate().take(end).skip(start + 1) {
            if !l.is_filler()
                && l.indent() == key_col
                && !l.is_dash()
                && let Some((k, v)) = split_key(l.body())
            {
                keys.push((i, k, v));
            }
        }
        let name = keys
            .iter()
            .find(|(_, k, _)| *k == "name")
            .map(|(_, _, v)| unquote(v));
        let Some(name) = name else { continue };
        if name != container {
            names.push(name);
            continue;
        }
        let Some(&(cmd, _, rest)) = keys.iter().find(|(_, k, _)| *k == "command") else {
            return Err(ManifestError::NoCommand {
                container: container.to_string(),
            });
        };
        if !rest.is_empty() {
            return Err(unsupported(cmd, "`command` is not a block list"));
        }
        // The next key of this item (or the item's end) bounds the command list.
        let cmd_end = keys
            .iter()
            .map(|(i, _, _)| *i)
            .filter(|&i| i > cmd)
            .min()
            .unwrap_or(end);
        let mut entries = Vec::new();
        let mut seq_indent = None;
        for (i, l) in lines.iter().enumerate().take(cmd_end).skip(cmd + 1) {
            if l.is_filler() {
                continue;
            }
            let ind = *seq_indent.get_or_insert(l.indent());
            if l.indent() == ind && l.is_dash() {
                entries.push(i);
            } else if l.indent() > ind {
                return Err(unsupported(i, "a command entry spans several lines"));
            } else {
                break;
            }
        }
        if entries.is_empty() {
            return Err(ManifestError::NoCommand {
                container: container.to_string(),
            });
        }
        return Ok(Command { entries });
    }
    Err(ManifestError::ContainerNotFound {
        container: container.to_string(),
        found: if names.is_empty() {
            "none".into()
        } else {
            names.join(", ")
        },
    })
}

fn unquote(v: &str) -> String {
    serde_yaml::from_str::<String>(v).unwrap_or_else(|_| v.to_string())
}

/// One `- value  # comment` line of the command list.
struct Entry {
    index: usize,
    /// Indentation, dash and spaces before the value.
    prefix: String,
    value: Option<String>,
    /// A trailing comment with the spaces before it, or empty.
    comment: String,
}

impl Entry {
    fn parse(line: &Line<'_>, index: usize) -> Result<Entry, ManifestError> {
        let body = line.body();
        let after = &body[1..];
        let value_text = after.trim_start_matches(' ');
        let prefix = line.text[..line.text.len() - value_text.len()].to_string();
        if value_text.starts_with(['|', '>']) {
            return Err(unsupported(index, "a command entry is a block scalar"));
        }
        // Split a trailing comment off: the longest prefix before ` #` that is itself a
        // complete scalar.
        let mut scalar = value_text;
        let mut comment = "";
        for (pos, _) in value_text.match_indices(" #") {
            let head = value_text[..pos].trim_end();
            if serde_yaml::from_str::<Yaml>(head).is_ok() {
                scalar = head;
                comment = &value_text[head.len()..];
                break;
            }
        }
        let value = match serde_yaml::from_str::<Yaml>(scalar) {
            Ok(Yaml::String(s)) => Some(s),
            Ok(_) | Err(_) => None,
        };
        Ok(Entry {
            index,
            prefix,
            value,
            comment: comment.to_string(),
        })
    }

    fn flag_name(&self) -> Option<&str> {
        let v = self.value.as_deref()?.strip_prefix("--")?;
        Some(v.split_once('=').map_or(v, |(n, _)| n))
    }
}

fn yaml_scalar(s: &str) -> String {
    crate::filters::yaml_scalar(s)
}

/// Parses the edited text and checks that it differs from the original only in the
/// container's command list, and that the list holds what was asked.
fn verify(
    original: &Yaml,
    edited: &str,
    container: &str,
    flags: &[(String, String)],
) -> Result<(), ManifestError> {
    let edited: Yaml = serde_yaml::from_str(edited).map_err(|e| ManifestError::Verify {
        detail: format!("the result does not parse: {e}"),
    })?;
    let mut expected = original.clone();
    let command = command_mut(&mut expected, container).ok_or_else(|| ManifestError::Verify {
        detail: "the container was not found by the YAML parser".into(),
    })?;
    for (name, value) in flags {
        let entry = Yaml::String(format!("--{name}={value}"));
        let mut found = false;
        for item in command.iter_mut() {
            if let Yaml::String(s) = item
                && let Some(rest) = s.strip_prefix("--")
                && rest.split_once('=').map_or(rest, |(n, _)| n) == name
            {
                *item = entry.clone();
                found = true;
            }
        }
        if !found {
            command.push(entry);
        }
    }
    if expected != edited {
        return Err(ManifestError::Verify {
            detail: "the parsed result is not the original with the new flags".into(),
        });
    }
    Ok(())
}

fn command_mut<'a>(pod: &'a mut Yaml, container: &str) -> Option<&'a mut Vec<Yaml>> {
    let containers = pod.get_mut("spec")?.get_mut("containers")?.as_sequence_mut()?;
    let c = containers
        .iter_mut()
        .find(|c| c.get("name").and_then(Yaml::as_str) == Some(container))?;
    c.get_mut("command")?.as_sequence_mut()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    const SMALL: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: kube-apiserver # keep me
spec:
  containers:
  - command:
    - kube-apiserver
    - --etcd-servers=https://127.0.0.1:2379   # old single etcd
    - \"--secure-port=6443\"
    image: registry.k8s.io/kube-apiserver:v1.31.0
    name: kube-apiserver
  hostNetwork: true
";

    #[test]
    fn replaces_in_place_keeping_comment_and_appends_missing() {
        let out = set_container_flags(
            SMALL,
            "kube-apiserver",
            &flags(&[
                ("etcd-servers", "https://10.1.1.201:2379,https://10.1.1.202:2379"),
                ("--etcd-cafile", "/etc/kubernetes/pki/etcd/ca.crt"),
            ]),
        )
        .unwrap();
        let expected = SMALL
            .replace(
                "--etcd-servers=https://127.0.0.1:2379   # old",
                "--etcd-servers=https://10.1.1.201:2379,https://10.1.1.202:2379   # old",
            )
            .replace(
                "    - \"--secure-port=6443\"\n",
                "    - \"--secure-port=6443\"\n    - --etcd-cafile=/etc/kubernetes/pki/etcd/ca.crt\n",
            );
        assert_eq!(out, expected);
    }

    #[test]
    fn setting_the_same_values_again_changes_nothing() {
        let f = flags(&[
            ("etcd-servers", "https://127.0.0.1:2379"),
            ("secure-port", "6443"),
        ]);
        let out = set_container_flags(SMALL, "kube-apiserver", &f).unwrap();
        // The quoted entry is rewritten plain: same value, different bytes. Run it twice
        // to show the edit is a fixed point.
        let again = set_container_flags(&out, "kube-apiserver", &f).unwrap();
        assert_eq!(out, again);
    }

    #[test]
    fn crlf_and_missing_final_newline_are_kept() {
        let src = SMALL.trim_end().replace('\n', "\r\n");
        let src = src.replace("  hostNetwork: true", "").trim_end().to_string();
        let out = set_container_flags(&src, "kube-apiserver", &flags(&[("etcd-keyfile", "/k")])).unwrap();
        assert!(out.ends_with("    name: kube-apiserver"), "{out:?}");
        assert!(out.contains("\"--secure-port=6443\"\r\n    - --etcd-keyfile=/k\r\n    image:"));
    }

    #[test]
    fn unknown_container_lists_the_ones_found() {
        let err = set_container_flags(SMALL, "etcd", &flags(&[("a", "b")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no container named `etcd` in the manifest (found: kube-apiserver)"
        );
    }

    #[test]
    fn flow_style_command_is_refused() {
        let src = "spec:\n  containers:\n  - name: a\n    command: [a, --x=1]\n";
        let err = set_container_flags(src, "a", &flags(&[("x", "2")])).unwrap_err();
        assert!(
            matches!(err, ManifestError::Unsupported { line: 4, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn bad_flag_names_are_refused() {
        let err = set_container_flags(SMALL, "kube-apiserver", &flags(&[("a=b", "c")])).unwrap_err();
        assert!(matches!(err, ManifestError::BadFlag { .. }));
    }
}
