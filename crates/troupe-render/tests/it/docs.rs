//! Every example in docs/templates.md renders to exactly the output shown beside it, so
//! the filter reference cannot drift from the code.

use crate::common;

/// Fenced blocks of a markdown file: (info string, content without trailing newline).
fn fenced_blocks(md: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in md.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_string(), Vec::new())),
            (Some(_), Some("")) => {
                let (info, lines) = current.take().unwrap();
                blocks.push((info, lines.join("\n")));
            }
            (Some((_, lines)), _) => lines.push(line),
            (None, None) => {}
        }
    }
    assert!(current.is_none(), "unclosed code block in docs/templates.md");
    blocks
}

#[test]
fn every_example_in_docs_templates_md_renders_as_shown() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/templates.md");
    let md = std::fs::read_to_string(&path).unwrap();
    let blocks = fenced_blocks(&md);
    let vars = blocks
        .iter()
        .find(|(info, _)| info == "json example-vars")
        .expect("a ```json example-vars block");
    let vars: indexmap::IndexMap<String, serde_json::Value> = serde_json::from_str(&vars.1).unwrap();
    let (_, mut ctx) = common::seed_contexts().remove(0);
    for (k, v) in vars {
        ctx.insert(k, v);
    }
    let r = common::renderer();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (i, (info, src)) in blocks.iter().enumerate() {
        if info != "jinja" {
            continue;
        }
        let (next_info, expected) = blocks
            .get(i + 1)
            .expect("a jinja block is followed by its output");
        assert_eq!(next_info, "text", "the block after\n{src}\nmust be ```text");
        match r.render_str(src, &ctx) {
            Ok(out) if out.trim_end_matches('\n') == expected.trim_end_matches('\n') => {}
            Ok(out) => failures.push(format!(
                "{src}\n--- renders as ---\n{out}\n--- docs say ---\n{expected}"
            )),
            Err(e) => failures.push(format!("{src}\n--- fails ---\n{e}")),
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n=====\n"));
    assert!(checked >= 18, "only {checked} examples found");
}
