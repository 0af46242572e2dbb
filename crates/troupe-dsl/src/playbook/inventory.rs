//! The checks only an inventory can answer: do the `hosts` patterns and the literal
//! `delegate-to` targets name hosts or groups that exist?

use super::*;

/// Checks what only an inventory can tell: that every `hosts` pattern term and every
/// literal `delegate-to` names a host or group that exists.
pub(crate) fn check_against_inventory(pb: &Playbook, inv: &Inventory) -> Result<(), miette::Report> {
    let mut problems = Problems::default();
    // each file is parsed again (only when it has a problem) to find the entry spans
    type Parsed = (usize, Arc<Option<kdl::KdlDocument>>);
    let mut files: HashMap<PathBuf, Parsed> = HashMap::new();
    let mut file_for = |problems: &mut Problems, path: &Path| -> Option<Parsed> {
        if let Some((i, doc)) = files.get(path) {
            return Some((*i, doc.clone()));
        }
        // a playbook built without its sources still gets its problems reported,
        // just without a snippet
        let text = pb.sources.get(path).cloned().unwrap_or_else(|| Arc::from(""));
        let file = Arc::new(SourceFile::new(path, &text));
        let idx = problems.add_file(&file);
        let doc = Arc::new(crate::decode::fast::parse(&text).or_else(|| kdl::KdlDocument::parse(&text).ok()));
        files.insert(path.to_path_buf(), (idx, doc.clone()));
        Some((idx, doc))
    };
    let hosts_known: Vec<&str> = inv
        .hosts
        .keys()
        .chain(inv.groups.keys())
        .map(String::as_str)
        .chain(["all", "localhost"])
        .collect();
    for play in &pb.plays {
        let missing: Vec<&str> = play
            .hosts
            .terms
            .iter()
            .map(|t| t.name())
            .filter(|t| !inv.term_exists(t))
            .collect();
        if !missing.is_empty() {
            let Some((idx, doc)) = file_for(&mut problems, &play.loc.file) else {
                continue;
            };
            let entry = doc
                .as_ref()
                .as_ref()
                .and_then(|d| find_node(d.nodes(), play.loc.span.offset()))
                .and_then(|n| n.entry("hosts").cloned());
            for name in missing {
                let span = entry
                    .as_ref()
                    .map(|e| term_span(e, &play.hosts.raw, name))
                    .unwrap_or(if doc.as_ref().is_some() {
                        play.loc.span
                    } else {
                        SourceSpan::from(0..0)
                    });
                let help = if crate::pattern::is_glob(name) {
                    Some("this glob matches no host or group".to_string())
                } else {
                    suggest(name, hosts_known.iter().copied())
                };
                problems.push(
                    idx,
                    DslError::UnknownHost {
                        name: name.to_string(),
                        span,
                        help,
                    },
                );
            }
        }
        for task in play.tasks.iter().chain(&play.handlers) {
            let Some(target) = &task.delegate_to else { continue };
            if is_template(target) || inv.host(target).is_some() {
                continue;
            }
            let Some((idx, doc)) = file_for(&mut problems, &task.loc.file) else {
                continue;
            };
            let span = doc
                .as_ref()
                .as_ref()
                .and_then(|d| find_node(d.nodes(), task.loc.span.offset()))
                .and_then(|n| {
                    n.entry("delegate-to").map(|e| e.span()).or_else(|| {
                        n.children()
                            .and_then(|c| c.nodes().iter().find(|c| c.name().value() == "delegate-to"))
                            .map(|c| c.span())
                    })
                })
                .unwrap_or(if doc.as_ref().is_some() {
                    task.loc.span
                } else {
                    SourceSpan::from(0..0)
                });
            let help = suggest(target, inv.hosts.keys().map(String::as_str).chain(["localhost"]));
            problems.push(
                idx,
                DslError::UnknownHost {
                    name: target.clone(),
                    span,
                    help,
                },
            );
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    problems.finish(&pb.path.display().to_string())
}

/// The node starting at `offset`, searching nested blocks.
pub(super) fn find_node(nodes: &[KdlNode], offset: usize) -> Option<&KdlNode> {
    for n in nodes {
        let s = n.span();
        if s.offset() == offset {
            return Some(n);
        }
        if s.offset() < offset && offset < s.offset() + s.len() {
            return n.children().and_then(|c| find_node(c.nodes(), offset));
        }
    }
    None
}

/// The span of one term inside a `hosts="..."` entry.
pub(super) fn term_span(e: &KdlEntry, raw: &str, name: &str) -> SourceSpan {
    let mut start = 0;
    for piece in raw.split([':', ',']) {
        let trimmed = piece.trim().trim_start_matches(['&', '!']).trim();
        if trimmed == name {
            let lead = piece.find(name).unwrap_or(0);
            return inner_span(e, raw, Some(start + lead..start + lead + name.len()));
        }
        start += piece.len() + 1;
    }
    e.span()
}
