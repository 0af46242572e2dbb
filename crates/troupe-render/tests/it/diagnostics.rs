//! The exact reports a user sees for the two commonest template mistakes (and an
//! undefined name in a `when`-style expression): rendered as the terminal shows them,
//! without colour, 100 columns wide.

use crate::common;

use miette::{GraphicalReportHandler, GraphicalTheme};
use troupe_render::{RenderError, Renderer};

fn report(err: &RenderError) -> String {
    let mut out = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(100)
        .render_report(&mut out, err)
        .unwrap();
    out
}

/// Template paths are absolute; show them relative to the repository.
fn settings() -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap();
    s.add_filter(
        &regex_escape(&common::templates_dir().display().to_string()),
        "[repo]/templates",
    );
    s.add_filter(
        &regex_escape(&format!("{}/", env!("CARGO_MANIFEST_DIR"))),
        "[crate]/",
    );
    s.add_filter(&regex_escape(&root.display().to_string()), "[repo]");
    s
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[test]
fn undefined_variable_in_a_template() {
    let r = common::renderer();
    let (_, mut ctx) = common::seed_contexts().remove(0);
    // The operator forgot to set the etcd version.
    let mut vars = ctx.vars().clone();
    vars.shift_remove("etcd_version");
    ctx = troupe_render::Context::new(vars)
        .with_groups(ctx.groups().clone())
        .with_hostvars(ctx.hostvars().clone());
    let err = r.render_file("etcd.yaml.j2", &ctx).unwrap_err();
    settings().bind(|| insta::assert_snapshot!(report(&err)));
}

#[test]
fn undefined_variable_in_an_imported_template() {
    let r = common::renderer();
    let (_, ctx) = common::seed_contexts().remove(0);
    let mut vars = ctx.vars().clone();
    vars.shift_remove("address");
    let ctx = troupe_render::Context::new(vars)
        .with_groups(ctx.groups().clone())
        .with_hostvars(ctx.hostvars().clone());
    let err = r.render_file("etcd.runit.j2", &ctx).unwrap_err();
    settings().bind(|| insta::assert_snapshot!(report(&err)));
}

#[test]
fn syntax_error_in_a_template() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/templates");
    let r = Renderer::new(vec![fixtures, common::templates_dir()]);
    let (_, ctx) = common::seed_contexts().remove(0);
    let err = r.render_file("etcd-peers.conf.j2", &ctx).unwrap_err();
    settings().bind(|| insta::assert_snapshot!(report(&err)));
}

#[test]
fn undefined_variable_in_an_expression() {
    let r = common::renderer();
    let (_, ctx) = common::seed_contexts().remove(0);
    let err = r
        .is_true("groups.etcd | length >= etcd_min_members", &ctx)
        .unwrap_err();
    settings().bind(|| insta::assert_snapshot!(report(&err)));
}

#[test]
fn missing_template() {
    // Relative dirs keep the message (and so its line wrapping) independent of where
    // the repository is checked out.
    let r = Renderer::new(vec!["playbooks/templates".into(), "templates".into()]);
    let err = r
        .render_file("etcd.yml.j2", &troupe_render::Context::default())
        .unwrap_err();
    insta::assert_snapshot!(report(&err));
}

/// Issue 11.11: nested `range(100000)` loops never ended. The fuel limit stops them with
/// an error that names the template and the line of the loop.
#[test]
fn a_template_that_never_ends_runs_out_of_fuel() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("forever.j2"),
        "header\n{% for i in range(100000) %}\n{% for j in range(100000) %}{{ i }}{{ j }}{% endfor %}\n{% endfor %}\n",
    )
    .unwrap();
    let r = Renderer::new(vec![dir.path().to_path_buf()]);
    let ctx = troupe_render::Context::new(Default::default());
    let err = r.render_file("forever.j2", &ctx).unwrap_err();
    let text = report(&err);
    assert!(matches!(err, RenderError::OutOfFuel { .. }), "{text}");
    assert_eq!(err.template(), Some("forever.j2"), "{text}");
    assert!(matches!(err.line(), Some(2 | 3)), "the line of a loop: {text}");
    assert!(text.contains("troupe::render::out_of_fuel"), "{text}");
    assert!(text.contains("forever.j2 does too much work at line"), "{text}");
    // the same budget applies to inline strings and expressions
    let err = r
        .render_str(
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            &ctx,
        )
        .unwrap_err();
    assert!(matches!(err, RenderError::OutOfFuel { .. }), "{}", report(&err));
    let err = r
        .eval("range(100000) | map('string') | join(',') * 100000", &ctx)
        .unwrap_err();
    assert!(matches!(err, RenderError::OutOfFuel { .. }), "{}", report(&err));
}

/// Real templates stay far inside the budget: a 2000-host loop renders.
#[test]
fn a_large_but_finite_template_is_not_stopped() {
    let r = Renderer::new(vec![]);
    let ctx = troupe_render::Context::new(Default::default());
    let out = r
        .render_str(
            "{% for i in range(2000) %}host-{{ i }}.example:2380,{% endfor %}",
            &ctx,
        )
        .unwrap();
    assert_eq!(out.matches(',').count(), 2000);
}
